// AVX-512 VNNI kernel: register tiles of MR rows x NR panels of 16 output channels; per 4 values
// of K one broadcast of A (4 uint8) per row, one load of B (16 x 4 int8) per panel and MR x NR
// vpdpbusd. The epilogue requantizes in 64-bit lanes exactly like requantize() (int_gemm.h).
// All headers come before the target pragma and everything compiled under it has internal
// linkage, so no AVX-512 code can leak into callers on CPUs without it.
// GCC 12 warns about _mm512_undefined_* inside its own intrinsic headers (a known false positive).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "infer/int_gemm.h"
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

struct Tile {
    const std::uint8_t* rows[12];
    std::uint8_t* outs[12];
};

// The epilogue constants of one panel of 16 channels.
struct Epilogue {
    __m512i multE, multO, roundE, roundO, shiftE, shiftO;
};

inline Epilogue epilogueFor(const PackedGemm& b, std::size_t n0)
{
    Epilogue e;
    e.multE = _mm512_loadu_si512(b.mult.data() + n0);
    e.multO = _mm512_srli_epi64(e.multE, 32);
    e.roundE = _mm512_loadu_si512(b.roundEven.data() + n0 / 2);
    e.roundO = _mm512_loadu_si512(b.roundOdd.data() + n0 / 2);
    e.shiftE = _mm512_loadu_si512(b.shiftEven.data() + n0 / 2);
    e.shiftO = _mm512_loadu_si512(b.shiftOdd.data() + n0 / 2);
    return e;
}

// requantize() on 16 lanes: 64-bit products of the even and the odd lanes, rounded shift, clamp.
inline __m512i requant16(__m512i acc, const Epilogue& ep, __m512i lo64, __m512i hi64, __m512i zp)
{
    __m512i e = _mm512_mul_epi32(acc, ep.multE);
    __m512i o = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), ep.multO);
    e = _mm512_srav_epi64(_mm512_add_epi64(e, ep.roundE), ep.shiftE);
    o = _mm512_srav_epi64(_mm512_add_epi64(o, ep.roundO), ep.shiftO);
    e = _mm512_min_epi64(_mm512_max_epi64(e, lo64), hi64);
    o = _mm512_min_epi64(_mm512_max_epi64(o, lo64), hi64);
    const __m512i r = _mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32));
    return _mm512_add_epi32(r, zp);
}

template <int MR, int NR>
void tile(const PackedGemm& b, const GemmA& a, const Tile& t, std::size_t panel0)
{
    const std::size_t panelBytes = b.K * 16;
    const std::int8_t* w = b.w8.data() + panel0 * panelBytes;
    // Zero-started accumulators, the bias added after the products (the same int32 sums): started
    // from one bias register, GCC 12 copied every accumulator out and back in each K step.
    __m512i acc[MR][NR];
    for (int j = 0; j < NR; ++j)
        for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_setzero_si512();
    const std::size_t seg4 = a.segLen / 4;
    for (std::size_t s = 0; s < a.nseg; ++s) {
        const std::uint8_t* ap[MR];
        for (int i = 0; i < MR; ++i) ap[i] = t.rows[i] + s * a.segStride;
        for (std::size_t k = 0; k < seg4; ++k) {
            __m512i bv[NR];
            for (int j = 0; j < NR; ++j) bv[j] = _mm512_loadu_si512(w + j * panelBytes);
            for (int i = 0; i < MR; ++i) {
                std::int32_t a4;
                std::memcpy(&a4, ap[i] + 4 * k, 4);
                const __m512i av = _mm512_set1_epi32(a4);
                for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, bv[j]);
            }
            w += 64;
        }
    }
    const __m512i lo64 = _mm512_set1_epi64(static_cast<std::int64_t>(b.lo) - b.zp);
    const __m512i hi64 = _mm512_set1_epi64(static_cast<std::int64_t>(b.hi) - b.zp);
    const __m512i zp = _mm512_set1_epi32(b.zp);
    for (int j = 0; j < NR; ++j) {
        const std::size_t n0 = (panel0 + j) * 16;
        const std::size_t cols = b.N - n0 < 16 ? b.N - n0 : 16;
        const __mmask16 m = static_cast<__mmask16>((1u << cols) - 1);
        const Epilogue ep = epilogueFor(b, n0);
        const __m512i bias = _mm512_loadu_si512(b.bias.data() + n0);
        for (int i = 0; i < MR; ++i) {
            const __m512i r = requant16(_mm512_add_epi32(acc[i][j], bias), ep, lo64, hi64, zp);
            QS_SANITIZER_ONLY(sanitizer::maskedWrite(t.outs[i] + n0, m, 1));
            _mm512_mask_cvtepi32_storeu_epi8(t.outs[i] + n0, m, r);
        }
    }
}

using TileFn = void (*)(const PackedGemm&, const GemmA&, const Tile&, std::size_t);

// MR max per NR: about 24 accumulators.
constexpr int kMaxMr[5] = {0, 12, 12, 8, 6};

template <int NR, int MR>
TileFn pick(int mr)
{
    if constexpr (MR == 0) {
        return nullptr;
    } else {
        return mr == MR ? &tile<MR, NR> : pick<NR, MR - 1>(mr);
    }
}

TileFn tileFor(int mr, int nr)
{
    switch (nr) {
    case 1: return pick<1, 12>(mr);
    case 2: return pick<2, 12>(mr);
    case 3: return pick<3, 8>(mr);
    default: return pick<4, 6>(mr);
    }
}

} // namespace

void gemmRequantAvx512(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc)
{
    std::size_t p = 0;
    while (p < b.panels) {
        const int nr = static_cast<int>(b.panels - p >= 4 ? 4 : b.panels - p);
        const int mrMax = kMaxMr[nr];
        for (std::size_t r = 0; r < a.M; r += static_cast<std::size_t>(mrMax)) {
            const int mr = static_cast<int>(a.M - r < static_cast<std::size_t>(mrMax) ? a.M - r : mrMax);
            Tile t;
            for (int i = 0; i < mr; ++i) {
                t.rows[i] = a.base + a.rowOffset[r + i];
                t.outs[i] = out + (r + i) * ldc;
            }
            tileFor(mr, nr)(b, a, t, p);
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
