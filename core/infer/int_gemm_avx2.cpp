// AVX2 kernel: A is first widened to int16 (vpmaddubsw would saturate 255 * -128 * 2), then
// register tiles of MR rows x NR panels of 8 channels do one broadcast of 2 A values per row,
// one load of B (8 x 2 int16) per panel and MR x NR vpmaddwd + vpaddd per 2 values of K. The
// epilogue is requantize() in 64-bit lanes, with the arithmetic shift that AVX2 lacks built
// from logical shifts. Headers before the target pragma; everything under it is internal.
#include "infer/int_gemm.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace quantscope {

namespace {

struct Tile {
    const std::int16_t* rows[8];
    std::uint8_t* outs[8];
};

inline __m256i sra64(__m256i x, __m256i sh)
{
    const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
    const __m256i back = _mm256_sub_epi64(_mm256_set1_epi64x(64), sh);
    return _mm256_or_si256(_mm256_srlv_epi64(x, sh), _mm256_sllv_epi64(sign, back));
}

inline __m256i clamp64(__m256i x, __m256i lo, __m256i hi)
{
    x = _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
    return _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
}

inline __m256i requant8(__m256i acc, const PackedGemm& b, std::size_t n0, __m256i lo64, __m256i hi64, __m256i zp)
{
    const __m256i multE = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.mult.data() + n0));
    const __m256i multO = _mm256_srli_epi64(multE, 32);
    __m256i e = _mm256_mul_epi32(acc, multE);
    __m256i o = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), multO);
    e = _mm256_add_epi64(e, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.roundEven.data() + n0 / 2)));
    o = _mm256_add_epi64(o, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.roundOdd.data() + n0 / 2)));
    e = sra64(e, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.shiftEven.data() + n0 / 2)));
    o = sra64(o, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.shiftOdd.data() + n0 / 2)));
    e = clamp64(e, lo64, hi64);
    o = clamp64(o, lo64, hi64);
    const __m256i r = _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA);
    return _mm256_add_epi32(r, zp);
}

template <int MR, int NR>
void tile(const PackedGemm& b, const GemmA& a, const Tile& t, std::size_t panel0)
{
    const std::size_t panelElems = b.K * 8;
    const std::int16_t* w = b.w16.data() + panel0 * panelElems;
    __m256i acc[MR][NR];
    for (int j = 0; j < NR; ++j) {
        const __m256i bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.bias.data() + (panel0 + j) * 8));
        for (int i = 0; i < MR; ++i) acc[i][j] = bias;
    }
    const std::size_t seg2 = a.segLen / 2;
    for (std::size_t s = 0; s < a.nseg; ++s) {
        const std::int16_t* ap[MR];
        for (int i = 0; i < MR; ++i) ap[i] = t.rows[i] + s * a.segStride;
        for (std::size_t k = 0; k < seg2; ++k) {
            __m256i bv[NR];
            for (int j = 0; j < NR; ++j) bv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * panelElems));
            for (int i = 0; i < MR; ++i) {
                std::int32_t a2;
                std::memcpy(&a2, ap[i] + 2 * k, 4);
                const __m256i av = _mm256_set1_epi32(a2);
                for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(av, bv[j]));
            }
            w += 16;
        }
    }
    const __m256i lo64 = _mm256_set1_epi64x(static_cast<std::int64_t>(b.lo) - b.zp);
    const __m256i hi64 = _mm256_set1_epi64x(static_cast<std::int64_t>(b.hi) - b.zp);
    const __m256i zp = _mm256_set1_epi32(b.zp);
    for (int j = 0; j < NR; ++j) {
        const std::size_t n0 = (panel0 + j) * 8;
        const std::size_t cols = b.N - n0 < 8 ? b.N - n0 : 8;
        for (int i = 0; i < MR; ++i) {
            const __m256i r = requant8(acc[i][j], b, n0, lo64, hi64, zp);
            const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
            const __m128i p8 = _mm_packus_epi16(p16, p16);
            if (cols == 8) {
                _mm_storel_epi64(reinterpret_cast<__m128i*>(t.outs[i] + n0), p8);
            } else {
                alignas(16) std::uint8_t tmp[16];
                _mm_store_si128(reinterpret_cast<__m128i*>(tmp), p8);
                std::memcpy(t.outs[i] + n0, tmp, cols);
            }
        }
    }
}

using TileFn = void (*)(const PackedGemm&, const GemmA&, const Tile&, std::size_t);

template <int NR, int MR>
TileFn pick(int mr)
{
    if constexpr (MR == 0) {
        return nullptr;
    } else {
        return mr == MR ? &tile<MR, NR> : pick<NR, MR - 1>(mr);
    }
}

void widen(const std::uint8_t* src, std::size_t n, std::int16_t* dst)
{
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                            _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) dst[i] = src[i];
}

} // namespace

void gemmRequantAvx2(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc, GemmScratch& scratch)
{
    widen(a.base, a.extent, scratch.wideA.data());
    const std::int16_t* wide = scratch.wideA.data();
    constexpr int kMr = 6;
    std::size_t p = 0;
    while (p < b.panels) {
        const int nr = b.panels - p >= 2 ? 2 : 1;
        for (std::size_t r = 0; r < a.M; r += kMr) {
            const int mr = static_cast<int>(a.M - r < kMr ? a.M - r : kMr);
            Tile t;
            for (int i = 0; i < mr; ++i) {
                t.rows[i] = wide + a.rowOffset[r + i];
                t.outs[i] = out + (r + i) * ldc;
            }
            (nr == 2 ? pick<2, kMr>(mr) : pick<1, kMr>(mr))(b, a, t, p);
        }
        p += static_cast<std::size_t>(nr);
    }
}

} // namespace quantscope

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
