// Deterministic random numbers. Counter-based (splitmix64) so parallel code draws the same
// numbers whatever the thread count: element i of stream `key` is a pure function of (key, i).
#pragma once

#include <cstdint>

namespace quantscope {

__extension__ typedef unsigned __int128 Uint128;

inline std::uint64_t splitmix64(std::uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Mixes several ids (seed, epoch, step, layer...) into one stream key.
inline std::uint64_t streamKey(std::uint64_t a, std::uint64_t b, std::uint64_t c = 0, std::uint64_t d = 0)
{
    return splitmix64(splitmix64(splitmix64(a ^ 0x51ED2701u) ^ b) ^ (c * 0x9E37u)) ^ splitmix64(d + 17);
}

// FNV-1a of a string: a stable id for names (std::hash is not specified across libraries).
inline std::uint64_t stableHash(const char* s)
{
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 0x100000001b3ull;
    return h;
}

// Uniform float in [0, 1) from 24 random bits.
inline float uniformFromBits(std::uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

// A small sequential generator for shuffles and initialisation.
class Rng {
public:
    explicit Rng(std::uint64_t seed) : m_state(seed) {}
    std::uint64_t next() { return splitmix64(m_state++ * 0x2545F4914F6CDD1Dull + 0x1234567ull); }
    // Uniform integer in [0, n) (Lemire's method without the rare rejection; bias < 2^-32 for our n).
    std::uint64_t below(std::uint64_t n)
    {
        return static_cast<std::uint64_t>((static_cast<Uint128>(next()) * n) >> 64);
    }
    float uniform() { return uniformFromBits(next()); }
    float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

private:
    std::uint64_t m_state;
};

} // namespace quantscope
