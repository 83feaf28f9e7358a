// AVX2 versions of the depthwise, Add and pooling kernels (int_kernels.h). vpdpbusd is emulated
// as vpmaddubsw + vpmaddwd (exact here: at most one of each byte pair has a non-zero weight, so
// the int16 step cannot saturate); the 64-bit arithmetic shift AVX2 lacks is built from logical
// shifts. Headers before the target pragma; everything under it is internal or an entry point.
#include "infer/int_kernels.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace quantscope {

namespace {

inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline __m256i sra64(__m256i x, __m256i sh)
{
    const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
    const __m256i back = _mm256_sub_epi64(_mm256_set1_epi64x(64), sh);
    return _mm256_or_si256(_mm256_srlv_epi64(x, sh), _mm256_sllv_epi64(sign, back));
}

inline __m256i roundShift4(__m256i p, __m256i sh, __m256i half, RoundMode mode)
{
    if (mode == RoundMode::HalfUp) return sra64(_mm256_add_epi64(p, half), sh);
    const __m256i odd = _mm256_and_si256(sra64(p, sh), _mm256_set1_epi64x(1));
    return sra64(_mm256_add_epi64(_mm256_add_epi64(p, _mm256_sub_epi64(half, _mm256_set1_epi64x(1))), odd), sh);
}

inline __m256i clamp64(__m256i x, __m256i lo, __m256i hi)
{
    x = _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
    return _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
}

// 8 int32 lanes: even lanes are e's low halves, odd lanes o's (both already clamped), plus zp.
inline __m256i blendBack(__m256i e, __m256i o, __m256i zp)
{
    return _mm256_add_epi32(_mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA), zp);
}

inline void store8(std::uint8_t* dst, __m256i r, std::size_t count)
{
    const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    const __m128i p8 = _mm_packus_epi16(p16, p16);
    if (count >= 8) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), p8);
    } else {
        alignas(16) std::uint8_t tmp[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), p8);
        std::memcpy(dst, tmp, count);
    }
}

// 8 bytes (fewer at a tail, zero-filled) widened to int32.
inline __m256i load8(const std::uint8_t* src, std::size_t count)
{
    if (count >= 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    std::uint64_t v = 0;
    std::memcpy(&v, src, count);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(v)));
}

} // namespace

void depthwiseRequantAvx2(const PackedDepthwise& p, const std::uint8_t* /*in*/, std::uint8_t* out, std::uint8_t* padded)
{
    const DepthwiseGeometry& g = p.g;
    const std::size_t L = g.Wo * g.C, taps = g.k * g.k, tapStride = p.blocks * 4 * 32;
    const std::size_t rowStep = g.stride * g.stride * p.rowBytes;
    const __m256i lo64 = _mm256_set1_epi64x(static_cast<std::int64_t>(p.lo) - p.zp);
    const __m256i hi64 = _mm256_set1_epi64x(static_cast<std::int64_t>(p.hi) - p.zp);
    const __m256i zp = _mm256_set1_epi32(p.zp);
    const __m256i ones = _mm256_set1_epi16(1);
    const std::size_t* off = p.tapOffset.data();
    for (std::size_t oy = 0; oy < g.Ho; ++oy) {
        const std::uint8_t* base = padded + oy * rowStep;
        std::uint8_t* orow = out + oy * L;
        std::size_t v = 0;
        for (std::size_t b0 = 0; b0 < L; b0 += 32) {
            const std::size_t ep = v * 4 * 8;
            __m256i acc[4];
            for (int j = 0; j < 4; ++j) acc[j] = load(p.biasV.data() + ep + 8 * j);
            const std::int8_t* w = p.wv.data() + v * 4 * 32;
            for (std::size_t t = 0; t < taps; ++t, w += tapStride) {
                const __m256i x = load(base + off[t] + b0);
                for (int j = 0; j < 4; ++j)
                    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(x, load(w + 32 * j)), ones));
            }
            __m256i r[4];
            for (int j = 0; j < 4; ++j) {
                const std::size_t e = ep + static_cast<std::size_t>(j) * 8;
                const __m256i mult = load(p.multV.data() + e);
                __m256i ev = _mm256_mul_epi32(acc[j], mult);
                __m256i od = _mm256_mul_epi32(_mm256_srli_epi64(acc[j], 32), _mm256_srli_epi64(mult, 32));
                ev = clamp64(roundShift4(ev, load(p.shiftE.data() + e / 2), load(p.roundE.data() + e / 2), RoundMode::HalfUp), lo64, hi64);
                od = clamp64(roundShift4(od, load(p.shiftO.data() + e / 2), load(p.roundO.data() + e / 2), RoundMode::HalfUp), lo64, hi64);
                r[j] = blendBack(ev, od, zp);
            }
            const __m256i packed = _mm256_or_si256(_mm256_or_si256(r[0], _mm256_slli_epi32(r[1], 8)),
                                                   _mm256_or_si256(_mm256_slli_epi32(r[2], 16), _mm256_slli_epi32(r[3], 24)));
            if (L - b0 >= 32) {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(orow + b0), packed);
            } else {
                alignas(32) std::uint8_t tmp[32];
                _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), packed);
                std::memcpy(orow + b0, tmp, L - b0);
            }
            v = v + 1 == p.blocks ? 0 : v + 1;
        }
    }
}

void addRequantAvx2(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n)
{
    const __m256i za = _mm256_set1_epi32(p.za), zb = _mm256_set1_epi32(p.zb), zo = _mm256_set1_epi32(p.zo);
    const __m256i ma = _mm256_set1_epi64x(p.ma), mb = _mm256_set1_epi64x(p.mb);
    const __m256i sh = _mm256_set1_epi64x(p.shift), half = _mm256_set1_epi64x(std::int64_t{1} << (p.shift - 1));
    const __m256i lo64 = _mm256_set1_epi64x(static_cast<std::int64_t>(p.lo) - p.zo);
    const __m256i hi64 = _mm256_set1_epi64x(static_cast<std::int64_t>(p.hi) - p.zo);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::size_t count = n - i;
        const __m256i x = _mm256_sub_epi32(load8(a + i, count), za);
        const __m256i y = _mm256_sub_epi32(load8(b + i, count), zb);
        __m256i e = _mm256_add_epi64(_mm256_mul_epi32(x, ma), _mm256_mul_epi32(y, mb));
        __m256i o = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), ma), _mm256_mul_epi32(_mm256_srli_epi64(y, 32), mb));
        e = clamp64(roundShift4(e, sh, half, RoundMode::HalfEven), lo64, hi64);
        o = clamp64(roundShift4(o, sh, half, RoundMode::HalfEven), lo64, hi64);
        store8(out + i, blendBack(e, o, zo), count);
    }
}

void avgPoolRequantAvx2(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out)
{
    const std::size_t window = p.kh * p.kw;
    if (window > (std::size_t{1} << 22)) { // int32 lanes would overflow
        avgPoolRequantScalar(p, in, out);
        return;
    }
    const __m256i sub = _mm256_set1_epi32(static_cast<std::int32_t>(window) * p.zin);
    const __m256i mult = _mm256_set1_epi64x(p.f.mult);
    const __m256i sh = _mm256_set1_epi64x(p.f.shift), half = _mm256_set1_epi64x(std::int64_t{1} << (p.f.shift - 1));
    const __m256i lo64 = _mm256_set1_epi64x(static_cast<std::int64_t>(p.lo) - p.zp);
    const __m256i hi64 = _mm256_set1_epi64x(static_cast<std::int64_t>(p.hi) - p.zp);
    const __m256i zp = _mm256_set1_epi32(p.zp);
    for (std::size_t oy = 0; oy < p.Ho; ++oy)
        for (std::size_t ox = 0; ox < p.Wo; ++ox) {
            const std::uint8_t* win = in + ((oy * p.stride) * p.W + ox * p.stride) * p.C;
            std::uint8_t* o8 = out + (oy * p.Wo + ox) * p.C;
            for (std::size_t c = 0; c < p.C; c += 8) {
                const std::size_t count = p.C - c;
                __m256i acc = _mm256_setzero_si256();
                for (std::size_t ky = 0; ky < p.kh; ++ky) {
                    const std::uint8_t* row = win + ky * p.W * p.C + c;
                    for (std::size_t kx = 0; kx < p.kw; ++kx) acc = _mm256_add_epi32(acc, load8(row + kx * p.C, count));
                }
                acc = _mm256_sub_epi32(acc, sub);
                __m256i e = _mm256_mul_epi32(acc, mult);
                __m256i o = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), mult);
                e = clamp64(roundShift4(e, sh, half, p.round), lo64, hi64);
                o = clamp64(roundShift4(o, sh, half, p.round), lo64, hi64);
                store8(o8 + c, blendBack(e, o, zp), count);
            }
        }
}

} // namespace quantscope

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
