// AVX-512 VNNI path of the int8 products (tensor/gemm_s8.h): the VPDPBUSD micro-kernel, register
// tiles of 8 rows x up to 3 vectors of 16 columns (24 int32 accumulators; per group of four k one
// load of B per vector, one broadcast of A's four bytes per row, 8 x 3 VPDPBUSD of 64
// multiply-adds each), and the quantizer that lays B out. All headers come before the target
// pragma; everything compiled under it is internal or called only after the run-time check
// (gemm_s8.cpp).
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

namespace quantscope::s8detail {

namespace {

inline __mmask16 laneMask(std::size_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

inline std::int32_t load4(const std::int8_t* p)
{
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// Rows [0, rowsHere) of one block (packed [K4][8][4]) x columns [l0, l0 + 16 (NV - 1) + lanes of
// the last vector): lastMask selects the last vector's lanes.
template <int NV>
void tile(const std::int8_t* block, std::size_t K4, std::size_t rowsHere, const std::uint8_t* const* rows,
          std::size_t l0, __mmask16 lastMask, const float* scale, const std::int32_t* corr, float* out, std::size_t ldo)
{
    __m512i acc[8][NV];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
#pragma GCC unroll 3
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_si512();
    for (std::size_t g = 0; g < K4; ++g) {
        const std::uint8_t* r = rows[g] + 4 * l0;
        __m512i v[NV];
        QS_SANITIZER_ONLY(sanitizer::maskedRead(r + 64 * (NV - 1), lastMask, 4));
#pragma GCC unroll 3
        for (int j = 0; j < NV; ++j)
            v[j] = j + 1 < NV ? _mm512_loadu_si512(r + 64 * j) : _mm512_maskz_loadu_epi32(lastMask, r + 64 * j);
        const std::int8_t* a = block + g * 32;
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
            const __m512i w = _mm512_set1_epi32(load4(a + 4 * i));
#pragma GCC unroll 3
            for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], v[j], w);
        }
    }
    // Constant indices only (an unrolled loop with a guard): indexing acc by the run-time row count
    // kept the accumulators on the stack, copied through one register and stored back on every
    // k-group (GCC 12; the int8 forward ran at 1.1x the FP32 kernel on Zen 5).
#pragma GCC unroll 8
    for (int ii = 0; ii < 8; ++ii) {
        if (static_cast<std::size_t>(ii) >= rowsHere) break;
        const std::size_t i = static_cast<std::size_t>(ii);
        const __m512i c = _mm512_set1_epi32(corr[i]);
        const __m512 s = _mm512_set1_ps(scale[i]);
        float* o = out + i * ldo + l0;
#pragma GCC unroll 3
        for (int j = 0; j < NV; ++j) {
            const __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[ii][j], c)), s);
            if (j + 1 < NV) _mm512_storeu_ps(o + 16 * j, y);
            else {
                QS_SANITIZER_ONLY(sanitizer::maskedWrite(o + 16 * j, lastMask, 4));
                _mm512_mask_storeu_ps(o + 16 * j, lastMask, y);
            }
        }
    }
}

} // namespace

void gemmRowsVnni(const std::int8_t* A, std::size_t M, std::size_t K4, const std::uint8_t* const* rows, std::size_t L,
                  const float* scale, const std::int32_t* corr, float* out, std::size_t ldo)
{
    // Column tiles outside, row blocks inside: one tile of B (K4 x 192 bytes) stays in L1 while
    // every block of A passes over it.
    const std::size_t blocks = (M + 7) / 8;
    for (std::size_t l0 = 0; l0 < L; l0 += 48) {
        const std::size_t n = L - l0 < 48 ? L - l0 : 48;
        const std::size_t nv = (n + 15) / 16;
        const __mmask16 last = laneMask(n - 16 * (nv - 1));
        for (std::size_t b = 0; b < blocks; ++b) {
            const std::size_t m0 = 8 * b, here = M - m0 < 8 ? M - m0 : 8;
            const std::int8_t* block = A + b * K4 * 32;
            float* o = out + m0 * ldo;
            if (nv == 3) tile<3>(block, K4, here, rows, l0, last, scale + m0, corr + m0, o, ldo);
            else if (nv == 2) tile<2>(block, K4, here, rows, l0, last, scale + m0, corr + m0, o, ldo);
            else tile<1>(block, K4, here, rows, l0, last, scale + m0, corr + m0, o, ldo);
        }
    }
}

bool quantizeInterleave4Avx512(const float* const src[4], std::size_t n, float scale, float inv, std::int32_t zero,
                               std::uint8_t* dst)
{
    const __m512 vinv = _mm512_set1_ps(inv), vscale = _mm512_set1_ps(scale), tol = _mm512_set1_ps(1e-4f * scale);
    const __m512 lim = _mm512_set1_ps(512.0f);
    const __m512i vzero = _mm512_set1_epi32(zero), hi = _mm512_set1_epi32(255);
    const __m512i absMask = _mm512_set1_epi32(0x7FFFFFFF);
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 k = laneMask(n - i);
        __m512i word = _mm512_setzero_si512();
        __mmask16 ok = k;
        for (int j = 0; j < 4; ++j) {
            __m512i u = vzero;
            if (src[j]) {
                QS_SANITIZER_ONLY(sanitizer::maskedRead(src[j] + i, k, 4));
                const __m512 x = _mm512_maskz_loadu_ps(k, src[j] + i);
                const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                const __m512 ar = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r), absMask));
                ok = _mm512_mask_cmp_ps_mask(ok, ar, lim, _CMP_LE_OQ);
                const __m512 res = _mm512_fnmadd_ps(r, vscale, x);
                const __m512 ares = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(res), absMask));
                ok = _mm512_mask_cmp_ps_mask(ok, ares, tol, _CMP_LE_OQ);
                u = _mm512_add_epi32(_mm512_cvtps_epi32(r), vzero);
                ok = _mm512_mask_cmpge_epi32_mask(ok, u, _mm512_setzero_si512());
                ok = _mm512_mask_cmple_epi32_mask(ok, u, hi);
            }
            word = _mm512_or_si512(word, _mm512_sll_epi32(_mm512_and_si512(u, hi), _mm_cvtsi32_si128(8 * j)));
        }
        if (ok != k) return false;
        QS_SANITIZER_ONLY(sanitizer::maskedWrite(dst + 4 * i, k, 4));
        _mm512_mask_storeu_epi32(dst + 4 * i, k, word);
    }
    return true;
}

} // namespace quantscope::s8detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
