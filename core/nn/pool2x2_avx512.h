// Internal to core/nn (maxpool2d.cpp, conv2d_runs.h): the 2x2 stride-2 max pool of up to 16
// outputs on values already in registers, shared by MaxPool2d's kernel and the convolution
// epilogue that pools its clamped rows (Conv2d::forwardPooled). Not a public interface.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace quantscope::pool_detail {

// Input rows 0 and 1 of the windows as (lo, hi) pairs of registers holding columns [0, 16) and
// [16, 32); outputs j < n (n <= 16) of the windows at columns 2j, 2j + 1 go to out, and, when am
// is given, their plane offsets: base + column (row 0) or base + W + column (row 1). The rules of
// MaxPool2d's scalar loop lane by lane ('>' keeps the first maximum; a NaN wins), in its order.
inline void pool2x2(__m512 l0, __m512 h0, __m512 l1, __m512 h1, std::size_t n, std::uint32_t base, std::uint32_t W, float* out,
                    std::uint32_t* am)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __mmask16 k = static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
    const __m512 a = _mm512_permutex2var_ps(l0, even, h0), b = _mm512_permutex2var_ps(l0, odd, h0);
    const __m512 c = _mm512_permutex2var_ps(l1, even, h1), d = _mm512_permutex2var_ps(l1, odd, h1);
    __mmask16 m = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    __m512 bv = _mm512_mask_mov_ps(a, m, b);
    const __mmask16 mb = m;
    m = _mm512_cmp_ps_mask(c, bv, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(bv, bv, _CMP_ORD_Q));
    bv = _mm512_mask_mov_ps(bv, m, c);
    const __mmask16 mc = m;
    m = _mm512_cmp_ps_mask(d, bv, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(bv, bv, _CMP_ORD_Q));
    bv = _mm512_mask_mov_ps(bv, m, d);
    _mm512_mask_storeu_ps(out, k, bv);
    if (!am) return;
    const __m512i ia = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(base)), even);
    const __m512i iw = _mm512_set1_epi32(static_cast<int>(W)), one = _mm512_set1_epi32(1);
    __m512i best = _mm512_mask_add_epi32(ia, mb, ia, one);
    best = _mm512_mask_add_epi32(best, mc, ia, iw);
    best = _mm512_mask_add_epi32(best, m, ia, _mm512_add_epi32(iw, one));
    _mm512_mask_storeu_epi32(am, k, best);
}

} // namespace quantscope::pool_detail
#endif
