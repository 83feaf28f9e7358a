// Rounding modes shared by the float casts and the integer quantizers.
//  - Nearest: round half to even (IEEE default; what PyTorch's nearbyint does).
//  - Stochastic: round up with probability equal to the fraction, using 24 random bits per
//    element from a counter-based hash of (rngKey, element index), so the result is a pure
//    function of the data and the key, whatever the thread count.
#pragma once

#include "util/rng.h"

#include <cmath>
#include <cstdint>
#include <string>

namespace quantscope {

enum class Rounding { Nearest, Stochastic };

// "nearest" | "stochastic"; throws ConfigError listing the known names.
Rounding parseRounding(const std::string& name);
const char* roundingName(Rounding r);

// The random bits of element i in stream rngKey (element i of a SplitMix64 stream seeded by rngKey).
inline std::uint64_t elementBits(std::uint64_t rngKey, std::uint64_t i)
{
    return splitmix64(rngKey + i * 0x9E3779B97F4A7C15ull);
}

// Stochastic rounding of v to an integer: floor(v) + 1 with probability frac(v), to 2^-24: with
// k = the top 24 bits of the element's random bits, round up when frac * 2^24 >= 2^24 - k. Exact
// in float: frac and frac * 2^24 are exact, 2^24 - k is an integer <= 2^24.
inline float roundStochastic24(float v, std::uint32_t k)
{
    const float n = std::nearbyint(v); // floor via nearbyint: GCC vectorises it, std::floor it does not
    const float r = n > v ? n - 1.0f : n;
    const float frac = v - r;
    // (k < 2^24: the signed conversion is exact and, unlike unsigned, vectorises)
    return (frac * 16777216.0f >= 16777216.0f - static_cast<float>(static_cast<std::int32_t>(k))) ? r + 1.0f : r;
}
inline float roundStochastic(float v, std::uint64_t bits)
{
    return roundStochastic24(v, static_cast<std::uint32_t>(bits >> 40));
}

// k[j] = top 24 bits of elementBits(rngKey, base + j), j < n. A separate integer loop, so both it
// and the float loop that consumes k vectorise.
inline void randomBits24(std::uint64_t rngKey, std::size_t base, std::uint32_t* k, std::size_t n)
{
    for (std::size_t j = 0; j < n; ++j) k[j] = static_cast<std::uint32_t>(elementBits(rngKey, base + j) >> 40);
}
inline constexpr std::size_t kRandomBlock = 256; // elements per randomBits24 buffer in the kernels

inline float roundNearestEven(float v) { return std::nearbyint(v); }

} // namespace quantscope
