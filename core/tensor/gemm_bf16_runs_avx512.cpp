// AVX512_BF16 path of a convolution's products on its runs (gemmBf16Runs and weightGradBf16Runs,
// tensor/gemm_bf16.h), for CPUs without AMX (AMD Zen 4 and 5): VDPBF16PS register tiles, the bf16
// twins of the FP32 direct kernels (nn/conv_direct.cpp tile8x48 and dotTile) on the same runs the
// AMX path reads. One VDPBF16PS is 32 multiply-adds a zmm against an FMA's 16, and Zen 4/5 issue
// it at the FMA's rate. All headers come before the target pragma; everything compiled under it has
// internal linkage or is only called after the run-time check (gemm_bf16.cpp).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "tensor/conv_runs.h"
#include "tensor/gemm_bf16_kernels.h"
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#endif

namespace quantscope::bf16detail {

namespace {

inline __mmask16 tailMask(std::size_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

inline __m512 dp(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

// out rows [0, rows) x columns [l0, l0 + 48) (clipped to `left` columns) = A rows x B's K-groups:
// per K-group three loads of 16 dwords of the runs, eight broadcasts of A's dword (two bf16 weights),
// 24 VDPBF16PS. A holds at least 8 rows (zero rows past M, packBf16RunsA pads to 16).
void runsTile(const std::uint32_t* a, std::size_t K2, const ConvRuns& B, std::size_t l0, std::size_t left, float* out,
              std::size_t ldo, std::size_t rows)
{
    const __mmask16 m0 = tailMask(left), m1 = tailMask(left > 16 ? left - 16 : 0), m2 = tailMask(left > 32 ? left - 32 : 0);
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
#pragma GCC unroll 3
        for (int j = 0; j < 3; ++j) acc[i][j] = _mm512_setzero_ps();
    std::size_t g = 0;
    for (std::size_t tap = 0; tap < B.taps; ++tap) {
        const std::uint8_t* r = B.base + B.tapOffset[tap] + 4 * l0;
        for (std::size_t cg = 0; cg < B.groups; ++cg, ++g, r += B.groupStride) {
            QS_SANITIZER_ONLY(sanitizer::maskedRead(r, m0 | std::uint64_t{m1} << 16 | std::uint64_t{m2} << 32, 4));
            const __m512i b0 = _mm512_maskz_loadu_epi32(m0, r);
            const __m512i b1 = _mm512_maskz_loadu_epi32(m1, r + 64);
            const __m512i b2 = _mm512_maskz_loadu_epi32(m2, r + 128);
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i) {
                const __m512i av = _mm512_set1_epi32(static_cast<int>(a[i * K2 + g]));
                acc[i][0] = dp(acc[i][0], av, b0);
                acc[i][1] = dp(acc[i][1], av, b1);
                acc[i][2] = dp(acc[i][2], av, b2);
            }
        }
    }
    // Constant indices only (an unrolled loop with a guard): indexing acc by a run-time row count
    // kept the accumulators on the stack, stored back on every K-group (0.5x the FP32 kernel).
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        if (static_cast<std::size_t>(i) >= rows) break;
        float* c = out + static_cast<std::size_t>(i) * ldo + l0;
        QS_SANITIZER_ONLY(sanitizer::maskedWrite(c, m0 | std::uint64_t{m1} << 16 | std::uint64_t{m2} << 32, 4));
        _mm512_mask_storeu_ps(c, m0, acc[i][0]);
        if (m1) _mm512_mask_storeu_ps(c + 16, m1, acc[i][1]);
        if (m2) _mm512_mask_storeu_ps(c + 32, m2, acc[i][2]);
    }
}

} // namespace

void gemmRunsAvx512(const std::uint16_t* A, std::size_t M, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo)
{
    const std::size_t K2 = B.taps * B.groups;
    const auto* a = reinterpret_cast<const std::uint32_t*>(A);
    // Column blocks outside: one block's K-groups of runs (a few KB: the taps read overlapping
    // windows) stay in L1 while every row block of A passes over them.
    for (std::size_t l0 = 0; l0 < L; l0 += 48)
        for (std::size_t m0 = 0; m0 < M; m0 += 8)
            runsTile(a + m0 * K2, K2, B, l0, L - l0, out + m0 * ldo, ldo, std::min<std::size_t>(8, M - m0));
}

namespace {

// Row r of x in the weight gradient's K: (tap r / C, channel r % C), its pair p at 4 p bytes on.
inline const std::uint8_t* xRow(const WeightGradRuns& a, std::size_t r)
{
    return reinterpret_cast<const std::uint8_t*>(a.x) + r % a.C * a.channelStride + 2 * a.tapOffset[r / a.C];
}

// T rows [r0, r0 + KR) x output channels [o0, o0 + 16 MV) (+)= sum over pairs p in [p0, p1) of
// x-row pair (2p, 2p + 1) x dy pair row p. Row r is (tap r / C, channel r % C); T is (taps C) x Op.
template <int KR, int MV>
void gradTile(const WeightGradRuns& a, std::size_t r0, std::size_t o0, std::size_t p0, std::size_t p1, float* T)
{
    const std::uint8_t* x[KR];
    for (int i = 0; i < KR; ++i) x[i] = xRow(a, r0 + static_cast<std::size_t>(i));
    __m512 acc[KR][MV];
#pragma GCC unroll 16
    for (int i = 0; i < KR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) acc[i][v] = _mm512_loadu_ps(T + (r0 + static_cast<std::size_t>(i)) * a.Op + o0 + 16 * v);
    const std::uint32_t* d = a.dyPairs + p0 * a.Op + o0;
    for (std::size_t p = p0; p < p1; ++p, d += a.Op) {
        __m512i dv[MV];
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) {
            QS_SANITIZER_ONLY(sanitizer::maskedRead(d + 16 * v, 0xFFFF, 4));
            dv[v] = _mm512_loadu_si512(d + 16 * v);
        }
#pragma GCC unroll 16
        for (int i = 0; i < KR; ++i) {
            std::int32_t xv;
            QS_SANITIZER_ONLY(sanitizer::maskedRead(x[i] + 4 * p, 0xF, 1));
            std::memcpy(&xv, x[i] + 4 * p, 4);
            const __m512i xb = _mm512_set1_epi32(xv);
#pragma GCC unroll 4
            for (int v = 0; v < MV; ++v) acc[i][v] = dp(acc[i][v], xb, dv[v]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < KR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) _mm512_storeu_ps(T + (r0 + static_cast<std::size_t>(i)) * a.Op + o0 + 16 * v, acc[i][v]);
}

// gradTile<KR, 1> with two pairs a VDPBF16PS: where 16 output channels fill a zmm, every pair of x
// a row's broadcast feeds one instruction only, and those broadcasts, not the multiply-adds, bound
// the tile (73 % of peak against 93 % for the 4-panel tile). Here one 64-bit broadcast carries x's
// pairs p and p + 1 (lanes 2k and 2k + 1), against dy's rows p and p + 1 interleaved for output
// channels 0-7 (lo) and 8-15 (hi): two instructions a broadcast. Lanes 2k and 2k + 1 are added
// at the end (the sums of even and odd pairs, then T + that: another order of the same FP32 sum).
template <int KR>
void gradTilePairs(const WeightGradRuns& a, std::size_t r0, std::size_t o0, std::size_t p0, std::size_t p1, float* T)
{
    const std::uint8_t* x[KR];
    for (int i = 0; i < KR; ++i) x[i] = xRow(a, r0 + static_cast<std::size_t>(i));
    __m512 lo[KR], hi[KR];
#pragma GCC unroll 16
    for (int i = 0; i < KR; ++i) lo[i] = hi[i] = _mm512_setzero_ps();
    // lane 2k: row p's channel k (+ 8 for hi), lane 2k + 1: row p + 1's
    const __m512i idxLo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i idxHi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const std::uint32_t* d = a.dyPairs + p0 * a.Op + o0;
    std::size_t p = p0;
    for (; p + 2 <= p1; p += 2, d += 2 * a.Op) {
        QS_SANITIZER_ONLY(sanitizer::maskedRead(d, 0xFFFF, 4));
        QS_SANITIZER_ONLY(sanitizer::maskedRead(d + a.Op, 0xFFFF, 4));
        const __m512i d0 = _mm512_loadu_si512(d), d1 = _mm512_loadu_si512(d + a.Op);
        const __m512i dl = _mm512_permutex2var_epi32(d0, idxLo, d1), dh = _mm512_permutex2var_epi32(d0, idxHi, d1);
#pragma GCC unroll 16
        for (int i = 0; i < KR; ++i) {
            long long xv;
            QS_SANITIZER_ONLY(sanitizer::maskedRead(x[i] + 4 * p, 0xFF, 1));
            std::memcpy(&xv, x[i] + 4 * p, 8);
            const __m512i xb = _mm512_set1_epi64(xv);
            lo[i] = dp(lo[i], xb, dl);
            hi[i] = dp(hi[i], xb, dh);
        }
    }
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
#pragma GCC unroll 16
    for (int i = 0; i < KR; ++i) {
        float* t = T + (r0 + static_cast<std::size_t>(i)) * a.Op + o0;
        const __m512 sum = _mm512_add_ps(_mm512_permutex2var_ps(lo[i], even, hi[i]), _mm512_permutex2var_ps(lo[i], odd, hi[i]));
        _mm512_storeu_ps(t, _mm512_add_ps(_mm512_loadu_ps(t), sum));
    }
    if (p < p1) gradTile<KR, 1>(a, r0, o0, p, p1, T); // an odd last pair
}

// Every row of T, rows in tiles of KR (the last rows one at a time), for output channels
// [o0, o0 + 16 MV) over pairs [p0, p1).
template <int KR, int MV>
void gradRows(const WeightGradRuns& a, std::size_t rowsTotal, std::size_t o0, std::size_t p0, std::size_t p1, float* T)
{
    std::size_t r = 0;
    for (; r + KR <= rowsTotal; r += KR) gradTile<KR, MV>(a, r, o0, p0, p1, T);
    for (; r < rowsTotal; ++r) gradTile<1, MV>(a, r, o0, p0, p1, T);
}

template <int KR>
void gradRowsPairs(const WeightGradRuns& a, std::size_t rowsTotal, std::size_t o0, std::size_t p0, std::size_t p1, float* T)
{
    std::size_t r = 0;
    for (; r + KR <= rowsTotal; r += KR) gradTilePairs<KR>(a, r, o0, p0, p1, T);
    for (; r < rowsTotal; ++r) gradTile<1, 1>(a, r, o0, p0, p1, T);
}

} // namespace

void weightGradRunsAvx512T(const WeightGradRuns& a, float* T)
{
    // T = dW^T laid out (tap, channel) x Op, summed over the pairs in blocks of 128 (with four
    // panels, 32 KB of dy pairs: they stay in L1 while every row tile passes).
    const std::size_t rowsTotal = a.taps * a.C;
    constexpr std::size_t kPairBlock = 128;
    for (std::size_t p0 = 0; p0 < a.P; p0 += kPairBlock) {
        const std::size_t p1 = std::min(a.P, p0 + kPairBlock);
        for (std::size_t o0 = 0; o0 < a.Op; o0 += 64) {
            switch (std::min<std::size_t>(4, (a.Op - o0) / 16)) {
            case 4: gradRows<6, 4>(a, rowsTotal, o0, p0, p1, T); break;
            case 3: gradRows<8, 3>(a, rowsTotal, o0, p0, p1, T); break;
            case 2: gradRows<12, 2>(a, rowsTotal, o0, p0, p1, T); break;
            default: gradRowsPairs<12>(a, rowsTotal, o0, p0, p1, T); break;
            }
        }
    }
}

void weightGradRunsAvx512(const WeightGradRuns& a, float* dW)
{
    // The sums in the per-thread packing buffer (gemm_bf16_kernels.h: no std::vector code under
    // the pragma), then added to dW.
    const std::size_t rowsTotal = a.taps * a.C;
    float* T = reinterpret_cast<float*>(scratchA(rowsTotal * a.Op));
    std::memset(T, 0, rowsTotal * a.Op * sizeof(float));
    weightGradRunsAvx512T(a, T);
    for (std::size_t o = 0; o < a.O; ++o)
        for (std::size_t c = 0; c < a.C; ++c)
            for (std::size_t t = 0; t < a.taps; ++t) dW[(o * a.C + c) * a.taps + t] += T[(t * a.C + c) * a.Op + o];
}

} // namespace quantscope::bf16detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
