// Fake quantization of an average pool's output that lies on its input's grid, exactly as the
// integer engine computes it (infer/int_kernels.cpp avgPoolRequant: the window's sum of codes
// times the multiplier s_in / (n s_out), rounded half to even).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace quantscope {

// y: an average pool's float outputs, each the mean of n values on the grid (scale, zeroPoint)
// (a fake-quantized input), to be fake-quantized on that same grid (the output point's scale and
// zero point equal the input's, as after a saturating ReLU6, Tanh or Hardtanh). With n a power of
// two the engine's multiplier 1 / n is exact, so its code is T / n rounded half to even, T the sum
// of the window's (code - zeroPoint); a float average lands a rounding off those halves, which a
// 2x2 window makes often, and nearbyint then rounds them either way (tester 8: 1-3 % of the codes
// one step from the engine's). Here T is recovered from y (y n / scale, an integer up to float
// rounding) and the code computed in integers; y becomes (code - zeroPoint) scale, and mask (when
// given) 1 where the code is within [qmin, qmax] before clamping, as fakeQuantize's STE mask.
// Returns false, y untouched, when n is not a power of two or some value is not such a mean.
bool fakeQuantizeSameGridAverage(std::span<float> y, float scale, std::int32_t zeroPoint, int qmin, int qmax, std::size_t n,
                                 std::vector<std::uint8_t>* mask);

} // namespace quantscope
