// Fake quantization of an average pool's output that lies on its input's grid, exactly as the
// integer engine computes it (infer/int_kernels.cpp avgPoolRequant: the window's sum of codes
// times the fixed-point multiplier of s_in / (n s_out), quant/fixed_point.h, rounded half to even).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace quantscope {

class Layer;
class Tensor;

// y: an average pool's float outputs, each the mean of n values on the grid (scale, zeroPoint)
// (a fake-quantized input), to be fake-quantized on that same grid (the output point's scale and
// zero point equal the input's, as after a saturating ReLU6, Tanh or Hardtanh). The engine's code
// is T times the fixed-point multiplier of 1 / n, rounded half to even, T the sum of the window's
// (code - zeroPoint); with n a power of two that is T / n exactly, whose halves a 2x2 window makes
// often and a float average lands a rounding off, which nearbyint then rounds either way (tester
// 8: 1-3 % of the codes one step from the engine's). Here T is recovered from y (y n / scale, an
// integer up to float rounding) and the code computed in integers; y becomes (code - zeroPoint)
// scale, and mask (when given) 1 where the code is within [qmin, qmax] before clamping, as
// fakeQuantize's STE mask. Returns false, y untouched, when some y n / scale is not within 1e-3
// of an integer (not such a mean, or a window so large that float sums blur T: use
// fakeQuantizeSameGridPool, which sums the input's codes).
bool fakeQuantizeSameGridAverage(std::span<float> y, float scale, std::int32_t zeroPoint, int qmin, int qmax, std::size_t n,
                                 std::vector<std::uint8_t>* mask);

// A square average pool (kernel kh x kw, stride, the same zero padding on every side, counted in
// the divisor n = kh kw; a global pool is kh = H, kw = W, stride 1, pad 0) whose output y
// (N, C, Ho, Wo) lies on the grid of its input x (N, C, H, W), fake-quantized as the engine
// computes it: each window's T summed exactly from x's codes (padding adds 0), then as
// fakeQuantizeSameGridAverage. Exact for any window size. Returns false, y untouched, when a
// value of x is not within 1e-3 of the grid, the sizes do not match, n is too large for the
// engine (n 255 >= 2^30), or some y is not its window's mean of x (within a quarter step: x is
// not y's input).
struct SquareAveragePool {
    std::size_t N, C, H, W, kh, kw, stride, pad, Ho, Wo;
};
bool fakeQuantizeSameGridPool(std::span<float> y, std::span<const float> x, const SquareAveragePool& p, float scale,
                              std::int32_t zeroPoint, int qmin, int qmax, std::vector<std::uint8_t>* mask);

// The pool layer l's output y on its input's grid, fake-quantized as the engine computes it: an
// AvgPool2d of a square geometry (nn/pool_geometry.h isSquare) or a GlobalAvgPool2d. x is l's input
// as the pass holds it (N, C, H, W), or empty where the pass did not materialise it: then an
// AvgPool2d takes fakeQuantizeSameGridAverage, and a global pool (whose plane size only x gives)
// nothing. False (y untouched) where neither applies; the caller fake-quantizes y as usual.
bool fakeQuantizeSameGridPoolLayer(const Layer& l, const Tensor& x, Tensor& y, float scale, std::int32_t zeroPoint, int qmin,
                                   int qmax, std::vector<std::uint8_t>* mask);

} // namespace quantscope
