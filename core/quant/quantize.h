// Linear (integer-grid) quantization with PyTorch's arithmetic, so fake-quantized values match
// torch.fake_quantize_per_{tensor,channel}_affine bit for bit:
//   inv = 1/scale;  q = nearbyint(x * inv) + zp  (float);  mask = qmin <= q <= qmax;
//   x' = (clamp(q, qmin, qmax) - zp) * scale.
// The straight-through gradient is dL/dx = mask * dL/dx'. Scales live in slots: one per tensor,
// per output channel (row), or per group of consecutive weights within a row.
#pragma once

#include "quant/format.h"
#include "quant/rounding.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace quantscope {

// The smallest scale an observer returns (torch.finfo(torch.float32).eps, like PyTorch).
inline constexpr float kScaleEps = std::numeric_limits<float>::epsilon();

struct QuantParams {
    std::vector<float> scale;             // one per slot
    std::vector<std::int32_t> zeroPoint;  // one per slot (all 0 when symmetric)
    int qmin = 0, qmax = 0;
    // Layout of the slots over the flattened tensor (row-major, dim 0 = output channel):
    std::size_t slotLength = 0; // elements per slot within a row (per channel: = rowLength; group: N)
    std::size_t rowLength = 0;  // elements per output channel; unused when there is one slot
    // Binary grid (the "binary" format): q = +1 for x >= 0, -1 below (NaN -> zp, mask 0); the
    // straight-through mask passes |x| <= scale. qmin = -1, qmax = 1, zero points 0.
    bool signOnly = false;

    std::size_t numSlots() const { return scale.size(); }
    bool perTensor() const { return scale.size() == 1; }
    std::size_t groupsPerRow() const;
    // Slot of flattened element i: (i / rowLength) * groupsPerRow + (i % rowLength) / slotLength.
    std::size_t slotOf(std::size_t i) const;
    // Clip range of a slot: [(qmin - zp) * scale, (qmax - zp) * scale].
    float clipLow(std::size_t slot) const;
    float clipHigh(std::size_t slot) const;
    // Throws ConfigError unless the layout covers a tensor of n elements exactly.
    void validate(std::size_t n) const;
};

// Layouts. rowLength = numel / dim0 for weights; the last group of a row may be shorter.
QuantParams perTensorParams(float scale, std::int32_t zeroPoint, int qmin, int qmax);
QuantParams perRowParams(std::vector<float> scales, std::vector<std::int32_t> zeroPoints, int qmin, int qmax,
                         std::size_t rowLength);
QuantParams groupParams(std::vector<float> scales, std::vector<std::int32_t> zeroPoints, int qmin, int qmax,
                        std::size_t rowLength, std::size_t groupSize);
// Slots a tensor of n elements has with this layout (rowLength 0: one slot).
std::size_t slotCount(std::size_t n, std::size_t rowLength, std::size_t slotLength);

struct ScaleZeroPoint {
    float scale = 1.0f;
    std::int32_t zeroPoint = 0;
};
// PyTorch's MinMaxObserver._calculate_qparams in float32: min clamped to <= 0, max to >= 0;
// symmetric: scale = max(-min, max) / ((qmax - qmin) / 2), zp = 0 on a signed range, and on an
// unsigned one (qmin >= 0) the middle of the range, as PyTorch puts it for torch.quint8: 128 on
// [0, 255], floor((qmin + qmax) / 2) on any other (PyTorch's "customized" range; on reduce_range's
// [0, 127] PyTorch gives 128, outside the range, and this gives 63); affine: scale = (max - min) /
// (qmax - qmin), zp = clamp(qmin - round_half_even(min / scale)); scale >= kScaleEps. An empty
// range (min = +inf, max = -inf) gives scale 1, zp 0. The scale is always finite and > 0: a range
// with a NaN or infinite end, or one wider than float32 holds (max - min overflows, e.g.
// [-3.4e38, 3.4e38]), throws NumericError (callers add the tensor's name).
ScaleZeroPoint chooseQParams(float minVal, float maxVal, int qmin, int qmax, bool symmetric);
// Same, with the range and scheme of an Int format (throws ConfigError for other kinds).
ScaleZeroPoint chooseQParams(float minVal, float maxVal, const NumberFormat& f);

// Fast (vectorised, TBB over large spans). y may alias x. steMask may be empty; otherwise it
// receives 1 where the gradient passes (qmin <= round(x/scale) + zp <= qmax), else 0. NaN inputs
// give NaN and mask 0. Stochastic rounding draws element i's bits from elementBits(rngKey, i).
void fakeQuantize(std::span<const float> x, const QuantParams& p, std::span<float> y, std::span<std::uint8_t> steMask,
                  Rounding r = Rounding::Nearest, std::uint64_t rngKey = 0);
// Scalar twin of fakeQuantize (PyTorch's loop, one element at a time).
void fakeQuantizeRef(std::span<const float> x, const QuantParams& p, std::span<float> y,
                     std::span<std::uint8_t> steMask, Rounding r = Rounding::Nearest, std::uint64_t rngKey = 0);

// One element with one scale (the reference arithmetic); returns x' and sets passes = mask bit.
float fakeQuantizeValue(float x, float scale, std::int32_t zeroPoint, int qmin, int qmax, bool& passes,
                        Rounding r = Rounding::Nearest, std::uint64_t randomBits = 0);

// Binary grid: x' = scale * (x >= 0 ? 1 : -1); passes = |x| <= scale; NaN gives NaN, passes false.
float signQuantizeValue(float x, float scale, bool& passes);

// q = clamp(round(x / scale) + zp, qmin, qmax) as integers (NaN -> zp; binary grids: sign).
void quantizeToInt(std::span<const float> x, const QuantParams& p, std::span<std::int32_t> q,
                   Rounding r = Rounding::Nearest, std::uint64_t rngKey = 0);
// x = (q - zp) * scale.
void dequantize(std::span<const std::int32_t> q, const QuantParams& p, std::span<float> x);

} // namespace quantscope
