#include "quant/float_cast.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

[[noreturn]] void throwNeedsScale(const NumberFormat& f)
{
    throw ConfigError("number format '" + f.name +
                      "' is an integer grid and needs a scale: quantize it with fakeQuantize (quant/quantize.h)");
}

float overflowValue(const NumberFormat& f, float signSource)
{
    if (f.saturating) return std::copysign(f.maxFinite, signSource);
    if (f.hasInf) return std::copysign(kInf, signSource);
    return kNaN;
}

// ---- scalar reference ------------------------------------------------------------------------

float roundElementRef(float x, const NumberFormat& f, Rounding r, std::uint64_t bits)
{
    if (std::isnan(x)) return x;
    const float a = std::fabs(x);
    if (std::isinf(a)) return f.hasInf ? x : overflowValue(f, x);
    float y;
    if (f.kind == FormatKind::MxInt) {
        // 1.(manBits) fixed point: k * 2^-manBits with |k| <= qmax.
        const float v = std::ldexp(a, f.manBits);
        const float k = std::min(r == Rounding::Stochastic ? roundStochastic(v, bits) : std::nearbyint(v),
                                 static_cast<float>(f.qmax));
        return std::copysign(std::ldexp(k, -f.manBits), x);
    }
    // Exponent of a, not below the smallest normal; the grid spacing there is 2^(e - manBits).
    const int e = a == 0.0f ? minNormalExponent(f) : std::max(std::ilogb(a), minNormalExponent(f));
    const float q = std::ldexp(1.0f, e - f.manBits);
    const float v = a / q; // exact: q is a power of two
    const float k = r == Rounding::Stochastic ? roundStochastic(v, bits) : std::nearbyint(v);
    y = k * q;
    if (y > f.maxFinite) return overflowValue(f, x);
    return std::copysign(y, x);
}

// ---- fast kernels ----------------------------------------------------------------------------

// Float formats whose grid spacing 2^(e - manBits) is a normal float for every e (all but bf16):
// scale by exact powers of two built from the exponent bits, round, scale back.
struct FloatGrid {
    int emin, emaxPlus1, m;
    float maxFinite, overflow; // overflow: magnitude that replaces values above maxFinite
};

FloatGrid floatGrid(const NumberFormat& f)
{
    return {minNormalExponent(f), maxExponent(f) + 1, f.manBits, f.maxFinite,
            f.saturating ? f.maxFinite : (f.hasInf ? kInf : kNaN)};
}

// y[i] = grid-rounded (x[i] * pre) * post; pre/post are 1 for plain casts, 1/X and X for MX.
template <bool Stochastic>
void roundGridSpan(float* x, std::size_t n, const FloatGrid& g, float pre, float post, std::uint64_t key,
                   std::size_t base)
{
    std::uint32_t rnd[kRandomBlock];
    for (std::size_t b = 0; b < n; b += kRandomBlock) {
        const std::size_t m = std::min(kRandomBlock, n - b);
        if constexpr (Stochastic) randomBits24(key, base + b, rnd, m);
        float* xb = x + b;
        for (std::size_t i = 0; i < m; ++i) {
            const float xs = xb[i] * pre;
            const std::uint32_t u = std::bit_cast<std::uint32_t>(xs);
            const std::uint32_t sign = u & 0x80000000u;
            const float a = std::bit_cast<float>(u ^ sign);
            int e = static_cast<int>(u >> 23 & 0xFFu) - 127;
            e = e < g.emin ? g.emin : (e > g.emaxPlus1 ? g.emaxPlus1 : e);
            const float q = std::bit_cast<float>(static_cast<std::uint32_t>(e - g.m + 127) << 23);
            const float invq = std::bit_cast<float>(static_cast<std::uint32_t>(g.m - e + 127) << 23);
            const float v = a * invq;
            float k;
            if constexpr (Stochastic)
                k = roundStochastic24(v, rnd[i]);
            else
                k = std::nearbyint(v);
            float y = k * q;
            y = y > g.maxFinite ? g.overflow : y;
            xb[i] = std::bit_cast<float>(std::bit_cast<std::uint32_t>(y) | sign) * post;
        }
    }
}

// bf16: round the FP32 bit pattern at bit 16 (carry runs into the exponent, so subnormals,
// the normal range and overflow to inf all come out right). NaN is kept (quietened).
template <bool Stochastic>
void roundBf16Span(float* x, std::size_t n, std::uint64_t key, std::size_t base)
{
    if constexpr (!Stochastic) {
        for (std::size_t i = 0; i < n; ++i) x[i] = roundBf16(x[i]); // tensor/bf16.h, shared with the bf16 GEMM packers
    } else {
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint32_t u = std::bit_cast<std::uint32_t>(x[i]);
            const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
            const std::uint32_t add = static_cast<std::uint32_t>(elementBits(key, base + i) >> 48);
            const std::uint32_t rounded = (u + add) & 0xFFFF0000u;
            x[i] = std::bit_cast<float>(nan ? (u | 0x00400000u) : rounded);
        }
    }
}

// fp16 round to nearest even through the hardware conversion (F16C), which follows IEEE exactly.
void roundFp16NearestSpan(float* x, std::size_t n)
{
    std::size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(h));
    }
#endif
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
    }
#endif
    if (i < n) {
        static const FloatGrid g = floatGrid(findFormat("fp16"));
        roundGridSpan<false>(x + i, n - i, g, 1.0f, 1.0f, 0, 0);
    }
}

bool isBf16(const NumberFormat& f) { return f.kind == FormatKind::Float && f.expBits == 8 && f.manBits == 7; }
bool isFp16(const NumberFormat& f) { return f.kind == FormatKind::Float && f.expBits == 5 && f.manBits == 10; }

// Largest |x| as a bit pattern (monotone for non-negative floats; >= 0x7F800000 means inf/NaN).
std::uint32_t absMaxBits(const float* x, std::size_t n)
{
    std::uint32_t m = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t a = std::bit_cast<std::uint32_t>(x[i]) & 0x7FFFFFFFu;
        m = a > m ? a : m;
    }
    return m;
}

float mxScaleFromAbsMax(float amax, const NumberFormat& f)
{
    if (!(amax <= std::numeric_limits<float>::max())) return kNaN;
    if (amax == 0.0f) return 1.0f;
    const int e = std::clamp(std::ilogb(amax) - maxExponent(f), -127, 127);
    return std::ldexp(1.0f, e);
}

// One MX block in place.
template <bool Stochastic>
void roundMxBlock(float* x, std::size_t n, const NumberFormat& f, const FloatGrid& g, std::uint64_t key,
                  std::size_t base)
{
    const float X = mxScaleFromAbsMax(std::bit_cast<float>(absMaxBits(x, n)), f);
    if (std::isnan(X)) {
        std::fill(x, x + n, kNaN);
        return;
    }
    const float invX = 1.0f / X; // exact: a power of two within E8M0's range
    if (f.kind == FormatKind::MxFloat) {
        roundGridSpan<Stochastic>(x, n, g, invX, X, key, base);
        return;
    }
    // MxInt: k = round(x / X * 2^manBits) clamped to +-qmax, y = k * 2^-manBits * X. x / X and
    // then 2^manBits, two exact multiplies: invX * 2^manBits overflowed to inf for X <= 2^-122
    // (a block of values below 2^-121), which made zeros NaN and tiny values 127 / 64 X (tester 13).
    const float man = std::ldexp(1.0f, f.manBits);
    const float post = X * std::ldexp(1.0f, -f.manBits);
    const float kmax = static_cast<float>(f.qmax);
    std::uint32_t rnd[kRandomBlock];
    for (std::size_t b = 0; b < n; b += kRandomBlock) {
        const std::size_t m = std::min(kRandomBlock, n - b);
        if constexpr (Stochastic) randomBits24(key, base + b, rnd, m);
        float* xb = x + b;
        for (std::size_t i = 0; i < m; ++i) {
            // Like the reference: round the magnitude, then restore the sign (keeps -0).
            const std::uint32_t u = std::bit_cast<std::uint32_t>(xb[i] * invX * man);
            const std::uint32_t sign = u & 0x80000000u;
            const float a = std::bit_cast<float>(u ^ sign);
            float k;
            if constexpr (Stochastic)
                k = roundStochastic24(a, rnd[i]);
            else
                k = std::nearbyint(a);
            k = k > kmax ? kmax : k;
            xb[i] = std::bit_cast<float>(std::bit_cast<std::uint32_t>(k * post) | sign);
        }
    }
}

} // namespace

float roundFloat(float x, const NumberFormat& f, Rounding r, std::uint64_t randomBits)
{
    switch (f.kind) {
    case FormatKind::Float32: return x;
    case FormatKind::Int: throwNeedsScale(f);
    case FormatKind::Float:
    case FormatKind::MxInt:
    case FormatKind::MxFloat: return roundElementRef(x, f, r, randomBits);
    }
    return x;
}

float mxBlockScale(std::span<const float> block, const NumberFormat& f)
{
    float amax = 0.0f;
    for (float v : block) {
        if (std::isnan(v)) return kNaN;
        amax = std::max(amax, std::fabs(v));
    }
    return mxScaleFromAbsMax(amax, f);
}

namespace {

// The MX blocks of n values in rows of rowLength (0 or more than n: one row): block k starts at
// start(k) and holds len(k) values; blocks run row by row, so they tile the values in order.
struct MxBlocks {
    std::size_t n, row, bs, perRow, count;
    MxBlocks(std::size_t n_, std::size_t rowLength, std::size_t blockSize)
        : n(n_), row(rowLength == 0 || rowLength > n_ ? n_ : rowLength), bs(blockSize), perRow(row ? (row + bs - 1) / bs : 0),
          count(row ? (n_ + row - 1) / row * perRow : 0)
    {
    }
    std::size_t start(std::size_t k) const { return k / perRow * row + k % perRow * bs; }
    std::size_t len(std::size_t k) const
    {
        const std::size_t s = start(k), rowEnd = std::min(n, (k / perRow + 1) * row);
        return s < rowEnd ? std::min(bs, rowEnd - s) : 0;
    }
};

} // namespace

std::vector<float> mxBlockScales(std::span<const float> x, const NumberFormat& f, std::size_t rowLength)
{
    const std::size_t bs = f.blockSize > 0 ? static_cast<std::size_t>(f.blockSize) : x.size();
    std::vector<float> s;
    if (x.empty()) return s;
    const MxBlocks blocks(x.size(), rowLength, bs);
    s.reserve(blocks.count);
    for (std::size_t k = 0; k < blocks.count; ++k)
        if (const std::size_t len = blocks.len(k)) s.push_back(mxBlockScale(x.subspan(blocks.start(k), len), f));
    return s;
}

void roundToFormatRef(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey, std::size_t rowLength)
{
    if (f.kind == FormatKind::Float32) return;
    if (f.kind == FormatKind::Int) throwNeedsScale(f);
    if (f.kind == FormatKind::Float) {
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = roundFloat(x[i], f, r, elementBits(rngKey, i));
        return;
    }
    const MxBlocks blocks(x.size(), rowLength, static_cast<std::size_t>(f.blockSize));
    for (std::size_t k = 0; k < blocks.count; ++k) {
        const std::size_t b = blocks.start(k), e = b + blocks.len(k);
        if (e == b) continue;
        const float X = mxBlockScale(std::span<const float>(x.data() + b, e - b), f);
        for (std::size_t i = b; i < e; ++i)
            x[i] = std::isnan(X) ? kNaN : roundFloat(x[i] / X, f, r, elementBits(rngKey, i)) * X;
    }
}

namespace {
// After the rounding and check of a chunk: x *= scale (nothing when scale is 1).
void scaleChunk(float* x, std::size_t n, float scale)
{
    if (scale == 1.0f) return;
    for (std::size_t i = 0; i < n; ++i) x[i] *= scale;
}

// roundToFormat; with `finite`, each chunk is checked after it is rounded and a non-finite value
// clears the flag; then the chunk is multiplied by scale.
void roundToFormatImpl(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey,
                       std::atomic<bool>* finite, float scale = 1.0f, std::size_t rowLength = 0)
{
    if (f.kind == FormatKind::Float32 || x.empty()) return;
    if (f.kind == FormatKind::Int) throwNeedsScale(f);
    const std::size_t n = x.size();
    float* data = x.data();
    const bool sto = r == Rounding::Stochastic;
    // elementwiseGrain is 16384 for large spans: a multiple of every MX block size (32).
    const std::size_t grain = elementwiseGrain(n);

    if (f.kind == FormatKind::Float) {
        const FloatGrid g = floatGrid(f);
        const bool bf16 = isBf16(f), fp16 = isFp16(f);
        // The grid kernel builds 2^(e - m) and 2^(m - e) as normal floats; a table row outside
        // that (none but bf16 today, which has its own kernel) takes the scalar reference.
        const bool gridOk = g.emin - g.m >= -126 && g.m - g.emin <= 127 && g.emaxPlus1 - g.m <= 127;
        parallelChunks(n, grain, [&](std::size_t b, std::size_t e) {
            if (!bf16 && !gridOk)
                for (std::size_t i = b; i < e; ++i) data[i] = roundFloat(data[i], f, r, elementBits(rngKey, i));
            else if (bf16)
                sto ? roundBf16Span<true>(data + b, e - b, rngKey, b) : roundBf16Span<false>(data + b, e - b, rngKey, b);
            else if (fp16 && !sto)
                roundFp16NearestSpan(data + b, e - b);
            else
                sto ? roundGridSpan<true>(data + b, e - b, g, 1.0f, 1.0f, rngKey, b)
                    : roundGridSpan<false>(data + b, e - b, g, 1.0f, 1.0f, rngKey, b);
            if (finite && !allFiniteSpan(data + b, e - b)) finite->store(false, std::memory_order_relaxed);
            scaleChunk(data + b, e - b, scale);
        });
        return;
    }

    const std::size_t bs = static_cast<std::size_t>(f.blockSize);
    const FloatGrid g = f.kind == FormatKind::MxFloat ? floatGrid(f) : FloatGrid{};
    // Chunks of whole blocks; the blocks tile the values in order, so a chunk's values are the
    // range from its first block's start to its last block's end.
    const MxBlocks blocks(n, rowLength, bs);
    parallelChunks(blocks.count, std::max<std::size_t>(1, grain / bs), [&](std::size_t k0, std::size_t k1) {
        for (std::size_t k = k0; k < k1; ++k) {
            const std::size_t s = blocks.start(k), len = blocks.len(k);
            if (len == 0) continue;
            sto ? roundMxBlock<true>(data + s, len, f, g, rngKey, s) : roundMxBlock<false>(data + s, len, f, g, rngKey, s);
        }
        const std::size_t b = std::min(n, blocks.start(k0)), e = std::min(n, blocks.start(k1 - 1) + blocks.len(k1 - 1));
        if (e <= b) return;
        if (finite && !allFiniteSpan(data + b, e - b)) finite->store(false, std::memory_order_relaxed);
        scaleChunk(data + b, e - b, scale);
    });
}
} // namespace

bool allFiniteSpan(const float* x, std::size_t n)
{
    // inf and NaN are the values whose exponent field is all ones
    std::uint32_t bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t u;
        std::memcpy(&u, x + i, sizeof u);
        bad |= static_cast<std::uint32_t>((u & 0x7F800000u) == 0x7F800000u);
    }
    return bad == 0;
}

void roundToFormat(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey, std::size_t rowLength)
{
    roundToFormatImpl(x, f, r, rngKey, nullptr, 1.0f, rowLength);
}

bool roundToFormatAllFinite(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey, float scale,
                            std::size_t rowLength)
{
    std::atomic<bool> finite{true};
    if (f.kind == FormatKind::Float32) {
        const std::size_t n = x.size();
        parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
            if (!allFiniteSpan(x.data() + b, e - b)) finite.store(false, std::memory_order_relaxed);
            scaleChunk(x.data() + b, e - b, scale);
        });
    } else {
        roundToFormatImpl(x, f, r, rngKey, &finite, scale, rowLength);
    }
    return finite.load();
}

} // namespace quantscope
