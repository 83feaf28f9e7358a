// bfloat16 rounding of FP32 values: round to nearest even at bit 16 of the FP32 bit pattern.
// One definition shared by the bf16 emulation (quant/float_cast.cpp) and the bf16 GEMM packers
// (tensor/gemm_bf16*.cpp), so that both produce the same bf16 values bit for bit.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

// The bf16 bits (the upper half of the FP32 pattern) of x rounded to nearest, ties to even.
// The carry runs into the exponent, so subnormals, the normal range and overflow to inf all come
// out right; NaN stays NaN (quietened). Unlike VCVTNEPS2BF16 there is no flush of subnormals.
inline std::uint16_t bf16Bits(float x)
{
    const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t rounded = (u + 0x7FFFu + (u >> 16 & 1u)) >> 16;
    const std::uint32_t quietNan = (u | 0x00400000u) >> 16;
    return static_cast<std::uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? quietNan : rounded); // branchless: vectorises
}

// The FP32 value of bf16 bits.
inline float bf16ToFloat(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

// x rounded to bf16 (round to nearest even), as FP32.
inline float roundBf16(float x) { return bf16ToFloat(bf16Bits(x)); }


#if defined(__AVX512F__)
// bf16Bits of 16 lanes, each in the low half of its dword (upper half zero): the same bits.
inline __m512i bf16BitsX16(__m512 v)
{
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
    const __m512i quiet = _mm512_or_si512(u, _mm512_set1_epi32(0x00400000));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
    return _mm512_srli_epi32(_mm512_mask_mov_epi32(rounded, nan, quiet), 16);
}

// roundBf16 of 16 lanes.
inline __m512 roundBf16X16(__m512 v) { return _mm512_castsi512_ps(_mm512_slli_epi32(bf16BitsX16(v), 16)); }

// The first n lanes (n < 16: a masked tail).
inline __mmask16 bf16TailMask(std::size_t n) { return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }
#endif

// The spans below: 16 lanes at a time with a masked tail where AVX-512 is built. On rows of a few
// dozen values (a convolution's output rows, the planes of an 8 x 8 activation) the compiler's
// own vectorisation left most of them scalar (resnet8's x runs for the bf16 weight gradient were
// converted one value at a time; that pass is bound by reading x from memory, so the measured
// gain there was small: its self time -15 % under perf).

// dst[0, n) = bf16Bits(src[0, n)).
inline void bf16BitsSpan(const float* __restrict src, std::size_t n, std::uint16_t* __restrict dst)
{
#if defined(__AVX512F__)
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 k = bf16TailMask(n - i);
        _mm512_mask_cvtepi32_storeu_epi16(dst + i, k, bf16BitsX16(_mm512_maskz_loadu_ps(k, src + i)));
    }
#else
    for (std::size_t j = 0; j < n; ++j) dst[j] = bf16Bits(src[j]);
#endif
}

// dst[2 i + j] = bf16Bits(src[j][i]) for i < n, j < 2 (a null row: 0): two rows as the bf16 runs'
// channel pairs. Inline: the runs are made a row at a time (28 values for a 28 x 28 plane), and
// a call per row with its null-row branches cost as much as the conversion.
inline void roundInterleave2(const float* const src[2], std::size_t n, std::uint16_t* dst)
{
    // One branch per call, not per element, so that the loops vectorise.
    const float* __restrict a = src[0];
    const float* __restrict b = src[1];
    std::uint16_t* __restrict d = dst;
#if defined(__AVX512F__)
    // Dword i = bf16(a[i]) | bf16(b[i]) << 16, 16 at a time (the compiler's own vectorisation of the
    // loops below left the short rows' tails scalar: 4.6 % of a mixed seed-cnn step).
    const auto word = [&](std::size_t i, __mmask16 k) {
        return _mm512_or_si512(bf16BitsX16(_mm512_maskz_loadu_ps(k, a + i)),
                               _mm512_slli_epi32(bf16BitsX16(_mm512_maskz_loadu_ps(k, b + i)), 16));
    };
    if (a && b) { // the common case, without a branch on the rows in the loop
        std::size_t i = 0;
        for (; i + 16 <= n; i += 16) _mm512_storeu_si512(d + 2 * i, word(i, 0xFFFF));
        if (i < n) {
            const __mmask16 k = bf16TailMask(n - i);
            _mm512_mask_storeu_epi32(d + 2 * i, k, word(i, k));
        }
        return;
    }
    if (a || b) {
        const float* v = a ? a : b;
        const int shift = a ? 0 : 16;
        for (std::size_t i = 0; i < n; i += 16) {
            const __mmask16 k = bf16TailMask(n - i);
            const __m512i w = _mm512_sll_epi32(bf16BitsX16(_mm512_maskz_loadu_ps(k, v + i)), _mm_cvtsi32_si128(shift));
            _mm512_mask_storeu_epi32(d + 2 * i, k, w);
        }
        return;
    }
#endif
    if (a && b) {
        for (std::size_t i = 0; i < n; ++i) {
            d[2 * i] = bf16Bits(a[i]);
            d[2 * i + 1] = bf16Bits(b[i]);
        }
    } else if (a || b) {
        const float* __restrict v = a ? a : b;
        const std::size_t at = a ? 0 : 1;
        for (std::size_t i = 0; i < n; ++i) {
            d[2 * i + at] = bf16Bits(v[i]);
            d[2 * i + 1 - at] = 0;
        }
    } else {
        std::memset(d, 0, 4 * n);
    }
}

// y[0, n) rounded to bf16 in place (roundBf16); false when a result is inf or NaN, as
// roundToFormatAllFinite reports it for bf16 to nearest (quant/float_cast.h).
inline bool roundBf16AllFinite(float* __restrict y, std::size_t n)
{
#if defined(__AVX512F__)
    __mmask16 bad = 0;
    const __m512i exponent = _mm512_set1_epi32(0x7F800000);
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 k = bf16TailMask(n - i);
        const __m512 r = roundBf16X16(_mm512_maskz_loadu_ps(k, y + i));
        _mm512_mask_storeu_ps(y + i, k, r);
        bad |= _mm512_mask_cmpeq_epi32_mask(k, _mm512_and_si512(_mm512_castps_si512(r), exponent), exponent);
    }
    return bad == 0;
#else
    std::uint32_t bad = 0;
    for (std::size_t j = 0; j < n; ++j) {
        const float r = roundBf16(y[j]);
        y[j] = r;
        bad |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(r) & 0x7F800000u) == 0x7F800000u);
    }
    return bad == 0;
#endif
}

// y[0, n) rounded to bf16 in place (roundBf16), where nothing asks whether it stayed finite.
inline void roundBf16Span(float* __restrict y, std::size_t n) { static_cast<void>(roundBf16AllFinite(y, n)); }

} // namespace quantscope
