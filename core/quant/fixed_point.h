// The fixed-point multiplier of integer requantization (Jacob et al., "Quantization and Training
// of Neural Networks for Efficient Integer-Arithmetic-Only Inference", 2018, section 2.2): a real
// multiplier m as mult / 2^shift. The integer engine (infer/) requantizes with it; the fake-quant
// simulation (quant/exact_pool.h) uses the same one where it reproduces the engine's codes.
#pragma once

#include <cstdint>

namespace quantscope {

// out = clamp(((acc * mult + 2^(shift-1)) >> shift) + zp, lo, hi), in int64 with an arithmetic
// shift (rounds halves up). mult in [2^30, 2^31) (or smaller when shift is 62), shift in [1, 62].
struct FixedPointMultiplier {
    std::int32_t mult = 0;
    int shift = 1;
};
// The multiplier closest to m > 0. Throws ConfigError when m is not finite, not positive or >= 2^30.
FixedPointMultiplier fixedPointMultiplier(double m);

// p / 2^shift rounded to the nearest integer, halves to even (shift >= 1): the engine's
// RoundMode::HalfEven, as nearbyint rounds a float product.
inline std::int64_t roundShiftHalfEven(std::int64_t p, int shift)
{
    const std::int64_t half = std::int64_t{1} << (shift - 1);
    return (p + half - 1 + ((p >> shift) & 1)) >> shift;
}

} // namespace quantscope
