// AVX-512 (VNNI) versions of the depthwise, Add and pooling kernels (int_kernels.h). The
// requantization is requantize()/roundShift() in 64-bit lanes: even and odd int32 lanes are
// multiplied separately (vpmuldq), shifted, clamped and blended back.
// Headers come before the target pragma and everything under it has internal linkage or is one
// of the declared kernel entry points, so no AVX-512 code leaks into callers.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "infer/int_kernels.h"
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")
#endif

namespace quantscope {

namespace {

// Rounded arithmetic shift of 8 int64 lanes by the lanes of sh.
inline __m512i roundShift8(__m512i p, __m512i sh, __m512i half, RoundMode mode)
{
    if (mode == RoundMode::HalfUp) return _mm512_srav_epi64(_mm512_add_epi64(p, half), sh);
    const __m512i odd = _mm512_and_si512(_mm512_srav_epi64(p, sh), _mm512_set1_epi64(1));
    return _mm512_srav_epi64(_mm512_add_epi64(_mm512_add_epi64(p, _mm512_sub_epi64(half, _mm512_set1_epi64(1))), odd), sh);
}

// 16 int32 accumulators -> requantized int32 in [lo, hi]: per-lane multipliers (even/odd shifts
// and rounding constants as the GEMM's epilogue lays them out).
inline __m512i requant16(__m512i acc, __m512i mult, __m512i shE, __m512i shO, __m512i rdE, __m512i rdO, __m512i lo64,
                         __m512i hi64, __m512i zp, RoundMode mode)
{
    __m512i e = _mm512_mul_epi32(acc, mult);
    __m512i o = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(mult, 32));
    e = roundShift8(e, shE, rdE, mode);
    o = roundShift8(o, shO, rdO, mode);
    e = _mm512_min_epi64(_mm512_max_epi64(e, lo64), hi64);
    o = _mm512_min_epi64(_mm512_max_epi64(o, lo64), hi64);
    return _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32)), zp);
}

} // namespace

namespace {

struct DwConsts {
    __m512i lo64, hi64, zp;
};

// NB consecutive vectors of an output row from row byte b0 (vector block v of the period): 4 * NB
// accumulators hide vpdpbusd's latency. TAPS = 0: p.g.k^2 taps at run time.
template <int NB, int TAPS>
inline void dwVectors(const PackedDepthwise& p, const std::uint8_t* base, std::size_t b0, std::size_t v, std::uint8_t* orow,
                      std::size_t L, const DwConsts& k)
{
    const std::size_t tapStride = p.blocks * 4 * 64;
    const std::size_t taps = TAPS ? static_cast<std::size_t>(TAPS) : p.g.k * p.g.k;
    const std::size_t* off = p.tapOffset.data();
    __m512i acc[NB][4];
    const std::int8_t* w[NB];
    std::size_t ep[NB];
    for (int n = 0; n < NB; ++n) {
        const std::size_t vv = (v + static_cast<std::size_t>(n)) % p.blocks;
        ep[n] = vv * 64; // acc[n][j] lane i = channel of row byte b0 + 64 n + 4i + j
        for (int j = 0; j < 4; ++j) acc[n][j] = _mm512_loadu_si512(p.biasV.data() + ep[n] + 16 * j);
        w[n] = p.wv.data() + vv * 256;
    }
    for (std::size_t t = 0; t < taps; ++t) {
        const std::uint8_t* src = base + off[t] + b0;
        for (int n = 0; n < NB; ++n) {
            const __m512i x = _mm512_loadu_si512(src + 64 * n);
            const std::int8_t* wt = w[n] + t * tapStride;
            for (int j = 0; j < 4; ++j) acc[n][j] = _mm512_dpbusd_epi32(acc[n][j], x, _mm512_loadu_si512(wt + 64 * j));
        }
    }
    for (int n = 0; n < NB; ++n) {
        __m512i r[4];
        for (int j = 0; j < 4; ++j) {
            const std::size_t e = ep[n] + static_cast<std::size_t>(j) * 16;
            r[j] = requant16(acc[n][j], _mm512_loadu_si512(p.multV.data() + e), _mm512_loadu_si512(p.shiftE.data() + e / 2),
                             _mm512_loadu_si512(p.shiftO.data() + e / 2), _mm512_loadu_si512(p.roundE.data() + e / 2),
                             _mm512_loadu_si512(p.roundO.data() + e / 2), k.lo64, k.hi64, k.zp, RoundMode::HalfUp);
        }
        // bytes back in row order: byte 4i + j = r[j] lane i
        const __m512i packed = _mm512_or_si512(
            _mm512_ternarylogic_epi32(r[0], _mm512_slli_epi32(r[1], 8), _mm512_slli_epi32(r[2], 16), 0xFE), _mm512_slli_epi32(r[3], 24));
        const std::size_t at = b0 + 64 * static_cast<std::size_t>(n);
        if (L - at >= 64) {
            _mm512_storeu_si512(orow + at, packed);
        } else {
            QS_SANITIZER_ONLY(sanitizer::maskedWrite(orow + at, (~__mmask64{0}) >> (64 - (L - at)), 1));
            _mm512_mask_storeu_epi8(orow + at, (~__mmask64{0}) >> (64 - (L - at)), packed);
        }
    }
}

template <int TAPS>
void dwRows(const PackedDepthwise& p, std::uint8_t* out, const std::uint8_t* padded, const DwConsts& k)
{
    const DepthwiseGeometry& g = p.g;
    const std::size_t L = g.Wo * g.C, rowStep = g.stride * g.stride * p.rowBytes;
    for (std::size_t oy = 0; oy < g.Ho; ++oy) {
        const std::uint8_t* base = padded + oy * rowStep;
        std::uint8_t* orow = out + oy * L;
        std::size_t b0 = 0, v = 0;
        for (; b0 + 128 <= L + 63; b0 += 128) { // two vectors (the second may be partial)
            dwVectors<2, TAPS>(p, base, b0, v, orow, L, k);
            v = (v + 2) % p.blocks;
        }
        if (b0 < L) dwVectors<1, TAPS>(p, base, b0, v, orow, L, k);
    }
}

} // namespace

void depthwiseRequantAvx512(const PackedDepthwise& p, const std::uint8_t* /*in*/, std::uint8_t* out, std::uint8_t* padded)
{
    DwConsts k;
    k.lo64 = _mm512_set1_epi64(static_cast<std::int64_t>(p.lo) - p.zp);
    k.hi64 = _mm512_set1_epi64(static_cast<std::int64_t>(p.hi) - p.zp);
    k.zp = _mm512_set1_epi32(p.zp);
    if (p.g.k == 3) dwRows<9>(p, out, padded, k);
    else dwRows<0>(p, out, padded, k);
}

void addRequantAvx512(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n)
{
    // t = a * ma + b * mb + C with C = 2^(shift-1) - za * ma - zb * mb, so t >> shift is the sum
    // rounded half up; an exact tie (the low shift bits of t zero) rounds to even instead: clear
    // the low bit. addParams keeps every term in int64 and the result inside int32, so it is
    // narrowed before the zero point and the clamp.
    const std::int64_t c = (std::int64_t{1} << (p.shift - 1)) - static_cast<std::int64_t>(p.za) * p.ma - static_cast<std::int64_t>(p.zb) * p.mb;
    const __m512i C = _mm512_set1_epi64(c);
    const __m512i ma = _mm512_set1_epi64(p.ma), mb = _mm512_set1_epi64(p.mb);
    const __m128i sh = _mm_cvtsi32_si128(p.shift);
    const __m512i low = _mm512_set1_epi64((std::int64_t{1} << p.shift) - 1);
    const __m512i notOne = _mm512_set1_epi64(~std::int64_t{1});
    const __m512i zo = _mm512_set1_epi32(p.zo), lo = _mm512_set1_epi32(p.lo), hi = _mm512_set1_epi32(p.hi);
    auto round = [&](__m512i t) {
        const __m512i r = _mm512_sra_epi64(t, sh);
        return _mm512_mask_and_epi64(r, _mm512_testn_epi64_mask(t, low), r, notOne);
    };
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
        QS_SANITIZER_ONLY(sanitizer::maskedRead(a + i, m, 1));
        QS_SANITIZER_ONLY(sanitizer::maskedRead(b + i, m, 1));
        const __m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, a + i));
        const __m512i y = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, b + i));
        const __m512i e = _mm512_add_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, ma), _mm512_mul_epi32(y, mb)), C);
        const __m512i o = _mm512_add_epi64(
            _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), ma), _mm512_mul_epi32(_mm512_srli_epi64(y, 32), mb)), C);
        __m512i r = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, round(e), _mm512_slli_epi64(round(o), 32)), zo);
        r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
        QS_SANITIZER_ONLY(sanitizer::maskedWrite(out + i, m, 1));
        _mm512_mask_cvtepi32_storeu_epi8(out + i, m, r);
    }
}

void avgPoolRequantAvx512(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out)
{
    const std::size_t window = p.kh * p.kw;
    if (window > (std::size_t{1} << 22)) { // int32 lanes would overflow
        avgPoolRequantScalar(p, in, out);
        return;
    }
    const __m512i sub = _mm512_set1_epi32(static_cast<std::int32_t>(window) * p.zin);
    const __m512i mult = _mm512_set1_epi64(p.f.mult);
    const __m512i sh = _mm512_set1_epi64(p.f.shift), half = _mm512_set1_epi64(std::int64_t{1} << (p.f.shift - 1));
    const __m512i lo64 = _mm512_set1_epi64(static_cast<std::int64_t>(p.lo) - p.zp);
    const __m512i hi64 = _mm512_set1_epi64(static_cast<std::int64_t>(p.hi) - p.zp);
    const __m512i zp = _mm512_set1_epi32(p.zp);
    for (std::size_t oy = 0; oy < p.Ho; ++oy)
        for (std::size_t ox = 0; ox < p.Wo; ++ox) {
            const std::uint8_t* win = in + ((oy * p.stride) * p.W + ox * p.stride) * p.C;
            std::uint8_t* o8 = out + (oy * p.Wo + ox) * p.C;
            for (std::size_t c = 0; c < p.C; c += 16) {
                const __mmask16 m = p.C - c >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (p.C - c)) - 1);
                __m512i acc = _mm512_setzero_si512();
                for (std::size_t ky = 0; ky < p.kh; ++ky) {
                    const std::uint8_t* row = win + ky * p.W * p.C + c;
                    for (std::size_t kx = 0; kx < p.kw; ++kx) {
                        QS_SANITIZER_ONLY(sanitizer::maskedRead(row + kx * p.C, m, 1));
                        acc = _mm512_add_epi32(acc, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, row + kx * p.C)));
                    }
                }
                acc = _mm512_sub_epi32(acc, sub);
                __m512i e = _mm512_mul_epi32(acc, mult);
                __m512i o = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), mult);
                e = roundShift8(e, sh, half, p.round);
                o = roundShift8(o, sh, half, p.round);
                e = _mm512_min_epi64(_mm512_max_epi64(e, lo64), hi64);
                o = _mm512_min_epi64(_mm512_max_epi64(o, lo64), hi64);
                const __m512i r = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32)), zp);
                QS_SANITIZER_ONLY(sanitizer::maskedWrite(o8 + c, m, 1));
                _mm512_mask_cvtepi32_storeu_epi8(o8 + c, m, r);
            }
        }
}

} // namespace quantscope

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
