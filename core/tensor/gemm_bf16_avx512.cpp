// AVX512_BF16 path of the bf16 GEMM: the packers (FP32 -> bf16 pairs, rounded exactly like
// tensor/bf16.h, with integer ops: VCVTNEPS2BF16 would flush subnormals) and the VDPBF16PS
// micro-kernel: register tiles of MR = 8 rows x NR = 3 panels of 16 columns; per pair of k one
// load of B per panel, one broadcast of A per row and MR x NR VDPBF16PS (2 multiply-adds a lane).
// All headers come before the target pragma and everything compiled under it has internal
// linkage or is only called after the run-time check (gemm_bf16.cpp).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "tensor/gemm_bf16_kernels.h"
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#endif

namespace quantscope::bf16detail {

namespace {

inline __mmask16 tailMask(std::size_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// tensor/bf16.h's bf16Bits on 16 lanes; the bf16 is left in the upper half of each lane (the
// lower half is garbage). NaN lanes get the quiet bit instead of the rounding increment.
inline __m512i roundHigh(__m512 x)
{
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
    return _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), u, _mm512_set1_epi32(0x00400000));
}

// Lane i: (bf16(x0[i]), bf16(x1[i])) - two rows of k, the same column.
inline __m512i pairsAcross(__m512 x0, __m512 x1)
{
    return _mm512_mask_blend_epi16(__mmask32(0xAAAAAAAAu), _mm512_srli_epi32(roundHigh(x0), 16), roundHigh(x1));
}

// Lane i: (bf16(x[2i]), bf16(x[2i+1])) for 32 consecutive values x = lo:hi.
inline __m512i pairsAlong(__m512 lo, __m512 hi)
{
    // 16-bit word 2j+1 of lo:hi is the bf16 of x[j].
    alignas(64) static constexpr std::uint16_t odd[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21,
                                                          23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
                                                          45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    return _mm512_permutex2var_epi16(roundHigh(lo), _mm512_load_si512(odd), roundHigh(hi));
}

// 16 x 16 transpose of 32-bit lanes: r[i] lane j <- r[j] lane i.
inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // r[4i + q] now holds, in each 128-bit lane L, rows 4L'.. of the 4x4 block (i, L) column q.
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0xDD);
        t[8 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0xDD);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xDD);
        r[4 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0x88);
        r[12 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0xDD);
    }
}

// 16 pairs (2p, 2p+1) of k, p in [p0, p0+16), from row `row` of a matrix stored with k contiguous
// (32 floats from src = row start + 2 p0), zero past kEnd (count of valid k from src).
inline __m512i pairsRun(const float* src, std::size_t kValid)
{
    QS_SANITIZER_ONLY(sanitizer::maskedRead(src, kValid >= 32 ? 0xFFFFFFFFu : (std::uint64_t{1} << kValid) - 1, 4));
    const __m512 lo = _mm512_maskz_loadu_ps(tailMask(kValid), src);
    const __m512 hi = kValid > 16 ? _mm512_maskz_loadu_ps(tailMask(kValid - 16), src + 16) : _mm512_setzero_ps();
    return pairsAlong(lo, hi);
}

// The MR x NR register tile: C[0..mr) x [0..16 nr) (+)= A pairs [0..kp) x B panels.
template <int MR, int NR>
void tile(const std::uint32_t* a, std::size_t lda2, const std::uint32_t* b, std::size_t panelStride, std::size_t kp,
          float* c, std::size_t ldc, std::size_t ncols, bool load)
{
    __m512 acc[MR][NR];
    __mmask16 mk[NR];
    for (int j = 0; j < NR; ++j) mk[j] = tailMask(ncols > std::size_t(16 * j) ? ncols - 16 * j : 0);
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) {
            QS_SANITIZER_ONLY(if (load) sanitizer::maskedRead(c + i * ldc + 16 * j, mk[j], 4));
            acc[i][j] = load ? _mm512_maskz_loadu_ps(mk[j], c + i * ldc + 16 * j) : _mm512_setzero_ps();
        }
    for (std::size_t p = 0; p < kp; ++p) {
        __m512i bv[NR];
        for (int j = 0; j < NR; ++j) bv[j] = _mm512_loadu_si512(b + j * panelStride + p * 16);
        for (int i = 0; i < MR; ++i) {
            const __m512i av = _mm512_set1_epi32(static_cast<int>(a[i * lda2 + p]));
            for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)av, (__m512bh)bv[j]);
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) {
            QS_SANITIZER_ONLY(sanitizer::maskedWrite(c + i * ldc + 16 * j, mk[j], 4));
            _mm512_mask_storeu_ps(c + i * ldc + 16 * j, mk[j], acc[i][j]);
        }
}

constexpr int kMR = 8, kNR = 3;
using TileFn = void (*)(const std::uint32_t*, std::size_t, const std::uint32_t*, std::size_t, std::size_t, float*, std::size_t,
                        std::size_t, bool);

template <int MR, int... NRs>
constexpr auto rowOfTiles(std::integer_sequence<int, NRs...>)
{
    return std::array<TileFn, kNR>{&tile<MR, NRs + 1>...};
}
template <int... MRs>
constexpr auto tileTable(std::integer_sequence<int, MRs...>)
{
    return std::array<std::array<TileFn, kNR>, kMR>{rowOfTiles<MRs + 1>(std::make_integer_sequence<int, kNR>{})...};
}
constexpr auto kTiles = tileTable(std::make_integer_sequence<int, kMR>{});

} // namespace

void packA(bool transA, std::size_t M, std::size_t K, const float* A, std::size_t lda, std::uint32_t* dst, std::size_t Mp,
           std::size_t Kp2)
{
    if (!transA) {
        // Row m of A holds k contiguously: 32 values -> 16 pairs.
        for (std::size_t m = 0; m < M; ++m) {
            const float* row = A + m * lda;
            std::uint32_t* out = dst + m * Kp2;
            for (std::size_t p = 0; p < Kp2; p += 16) {
                const std::size_t k0 = 2 * p;
                const __m512i v = pairsRun(row + k0, k0 < K ? K - k0 : 0);
                QS_SANITIZER_ONLY(sanitizer::maskedWrite(out + p, tailMask(Kp2 - p), 4));
                _mm512_mask_storeu_epi32(out + p, tailMask(Kp2 - p), v);
            }
        }
    } else {
        // A stored K x M: rows 2p, 2p+1 give pairs for 16 m at once; a 16 x 16 transpose puts
        // them along rows of the packed A.
        for (std::size_t m0 = 0; m0 < M; m0 += 16) {
            const __mmask16 mm = tailMask(M - m0);
            const std::size_t rows = std::min<std::size_t>(16, M - m0);
            for (std::size_t p0 = 0; p0 < Kp2; p0 += 16) {
                __m512i r[16];
                for (std::size_t q = 0; q < 16; ++q) {
                    const std::size_t k = 2 * (p0 + q);
                    QS_SANITIZER_ONLY(if (k < K) sanitizer::maskedRead(A + k * lda + m0, mm, 4));
                    QS_SANITIZER_ONLY(if (k + 1 < K) sanitizer::maskedRead(A + (k + 1) * lda + m0, mm, 4));
                    const __m512 x0 = k < K ? _mm512_maskz_loadu_ps(mm, A + k * lda + m0) : _mm512_setzero_ps();
                    const __m512 x1 = k + 1 < K ? _mm512_maskz_loadu_ps(mm, A + (k + 1) * lda + m0) : _mm512_setzero_ps();
                    r[q] = pairsAcross(x0, x1);
                }
                transpose16(r);
                const __mmask16 pm = tailMask(Kp2 - p0);
                for (std::size_t i = 0; i < rows; ++i) {
                    QS_SANITIZER_ONLY(sanitizer::maskedWrite(dst + (m0 + i) * Kp2 + p0, pm, 4));
                    _mm512_mask_storeu_epi32(dst + (m0 + i) * Kp2 + p0, pm, r[i]);
                }
            }
        }
    }
    for (std::size_t m = M; m < Mp; ++m) std::memset(dst + m * Kp2, 0, Kp2 * sizeof(std::uint32_t));
}

void packBPairRow(const float* r0, const float* r1, std::size_t N, std::uint32_t* dst, std::size_t Kp2, std::size_t p)
{
    const std::size_t panels = (N + 15) / 16;
    for (std::size_t j = 0; j < panels; ++j) {
        const std::size_t n0 = 16 * j;
        const __mmask16 nm = tailMask(N - n0);
        QS_SANITIZER_ONLY(if (r0) sanitizer::maskedRead(r0 + n0, nm, 4));
        QS_SANITIZER_ONLY(if (r1) sanitizer::maskedRead(r1 + n0, nm, 4));
        const __m512 x0 = r0 ? _mm512_maskz_loadu_ps(nm, r0 + n0) : _mm512_setzero_ps();
        const __m512 x1 = r1 ? _mm512_maskz_loadu_ps(nm, r1 + n0) : _mm512_setzero_ps();
        _mm512_storeu_si512(dst + (j * Kp2 + p) * 16, pairsAcross(x0, x1));
    }
}

void packBIm2col(const float* x, const Im2colPlan& t, std::size_t C, std::uint32_t* dst, std::size_t Kp2)
{
    const std::size_t N = t.N, panels = (N + 15) / 16, kk = t.kk, K = C * kk;
    const std::int32_t* pix = t.pix;
    const std::uint16_t* valid = t.valid;
    const auto rowOffset = [&](std::size_t r) { return static_cast<std::int32_t>(r / kk * t.HW) + t.tapOffset[r % kk]; };
    const bool contiguous = t.contiguous;
    for (std::size_t p = 0; p < Kp2; ++p) {
        const std::size_t r0 = 2 * p, r1 = 2 * p + 1;
        const bool has0 = r0 < K, has1 = r1 < K;
        const __m512i off0 = _mm512_set1_epi32(has0 ? rowOffset(r0) : 0), off1 = _mm512_set1_epi32(has1 ? rowOffset(r1) : 0);
        const std::uint16_t* m0 = valid + (has0 ? r0 % kk : 0) * panels;
        const std::uint16_t* m1 = valid + (has1 ? r1 % kk : 0) * panels;
        if (contiguous) {
            // pix[n] == n: column n of row r is x[rowOffset(r) + n], 16 columns one masked load.
            const float* x0 = x + (has0 ? rowOffset(r0) : 0);
            const float* x1 = x + (has1 ? rowOffset(r1) : 0);
            for (std::size_t j = 0; j < panels; ++j) {
                QS_SANITIZER_ONLY(if (has0) sanitizer::maskedRead(x0 + 16 * j, m0[j], 4));
                QS_SANITIZER_ONLY(if (has1) sanitizer::maskedRead(x1 + 16 * j, m1[j], 4));
                const __m512 v0 = has0 ? _mm512_maskz_loadu_ps(m0[j], x0 + 16 * j) : _mm512_setzero_ps();
                const __m512 v1 = has1 ? _mm512_maskz_loadu_ps(m1[j], x1 + 16 * j) : _mm512_setzero_ps();
                _mm512_storeu_si512(dst + (j * Kp2 + p) * 16, pairsAcross(v0, v1));
            }
            continue;
        }
        for (std::size_t j = 0; j < panels; ++j) {
            const __m512i idx = _mm512_loadu_si512(pix + 16 * j);
            QS_SANITIZER_ONLY(if (has0) sanitizer::gatherRead(x, pix + 16 * j, rowOffset(r0), m0[j], 4));
            QS_SANITIZER_ONLY(if (has1) sanitizer::gatherRead(x, pix + 16 * j, rowOffset(r1), m1[j], 4));
            const __m512 v0 = has0 ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0[j], _mm512_add_epi32(idx, off0), x, 4)
                                   : _mm512_setzero_ps();
            const __m512 v1 = has1 ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1[j], _mm512_add_epi32(idx, off1), x, 4)
                                   : _mm512_setzero_ps();
            _mm512_storeu_si512(dst + (j * Kp2 + p) * 16, pairsAcross(v0, v1));
        }
    }
}

void packBIm2colT(const float* x, const Im2colPlan& t, std::size_t C, std::uint32_t* dst, std::size_t Kp2)
{
    // B = im2col(x)^T: K = N_pix pixels (pairs of consecutive pixels), N = C k k columns (rows
    // of im2col). For each 16 columns and 16 pairs (32 pixels): one row of 32 pixels per column,
    // read like packBIm2col, rounded into 16 pairs, then a 16 x 16 transpose into the panel.
    const std::size_t pixels = t.N, pixPanels = (pixels + 15) / 16, kk = t.kk, cols = C * kk;
    const std::size_t panels = (cols + 15) / 16;
    const std::int32_t* pix = t.pix;
    const std::uint16_t* valid = t.valid;
    for (std::size_t j = 0; j < panels; ++j) {
        std::uint32_t* out = dst + j * Kp2 * 16;
        for (std::size_t p0 = 0; p0 < Kp2; p0 += 16) {
            const std::size_t q = p0 / 16; // pixels [32 q, 32 q + 32): pixel panels 2q and 2q + 1
            __m512i r[16];
            for (std::size_t c = 0; c < 16; ++c) {
                const std::size_t row = 16 * j + c;
                if (row >= cols || 2 * q >= pixPanels) {
                    r[c] = _mm512_setzero_si512();
                    continue;
                }
                const std::size_t tap = row % kk;
                const std::int32_t off = static_cast<std::int32_t>(row / kk * t.HW) + t.tapOffset[tap];
                const __mmask16 mLo = valid[tap * pixPanels + 2 * q];
                const __mmask16 mHi = 2 * q + 1 < pixPanels ? valid[tap * pixPanels + 2 * q + 1] : __mmask16(0);
                __m512 lo, hi;
                if (t.contiguous) {
                    QS_SANITIZER_ONLY(sanitizer::maskedRead(x + off + 32 * q, mLo | std::uint64_t{mHi} << 16, 4));
                    lo = _mm512_maskz_loadu_ps(mLo, x + off + 32 * q);
                    hi = _mm512_maskz_loadu_ps(mHi, x + off + 32 * q + 16);
                } else {
                    const __m512i o = _mm512_set1_epi32(off);
                    QS_SANITIZER_ONLY(sanitizer::gatherRead(x, pix + 32 * q, off, mLo, 4));
                    QS_SANITIZER_ONLY(if (mHi) sanitizer::gatherRead(x, pix + 32 * q + 16, off, mHi, 4));
                    lo = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mLo, _mm512_add_epi32(_mm512_loadu_si512(pix + 32 * q), o), x, 4);
                    hi = mHi ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mHi,
                                                        _mm512_add_epi32(_mm512_loadu_si512(pix + 32 * q + 16), o), x, 4)
                             : _mm512_setzero_ps();
                }
                r[c] = pairsAlong(lo, hi);
            }
            transpose16(r);
            const std::size_t rowsOut = std::min<std::size_t>(16, Kp2 - p0);
            for (std::size_t i = 0; i < rowsOut; ++i) _mm512_storeu_si512(out + (p0 + i) * 16, r[i]);
        }
    }
}

void packB(bool transB, std::size_t K, std::size_t N, const float* B, std::size_t ldb, std::uint32_t* dst, std::size_t Kp2)
{
    const std::size_t panels = (N + 15) / 16;
    if (!transB) {
        // B stored K x N: rows 2p and 2p+1 are read once, left to right (streaming), and each 16
        // columns become one packed row (64 bytes) of their panel.
        for (std::size_t p = 0; p < Kp2; ++p) {
            const std::size_t k = 2 * p;
            packBPairRow(k < K ? B + k * ldb : nullptr, k + 1 < K ? B + (k + 1) * ldb : nullptr, N, dst, Kp2, p);
        }
        return;
    }
    // B stored N x K: row n holds k contiguously; 16 rows x 16 pairs, transposed.
    for (std::size_t j = 0; j < panels; ++j) {
        const std::size_t n0 = 16 * j;
        const std::size_t cols = std::min<std::size_t>(16, N - n0);
        std::uint32_t* out = dst + j * Kp2 * 16;
        for (std::size_t p0 = 0; p0 < Kp2; p0 += 16) {
            const std::size_t k0 = 2 * p0;
            __m512i r[16];
            for (std::size_t c = 0; c < 16; ++c)
                r[c] = c < cols ? pairsRun(B + (n0 + c) * ldb + k0, k0 < K ? K - k0 : 0) : _mm512_setzero_si512();
            transpose16(r);
            const std::size_t rowsOut = std::min<std::size_t>(16, Kp2 - p0);
            for (std::size_t q = 0; q < rowsOut; ++q) _mm512_storeu_si512(out + (p0 + q) * 16, r[q]);
        }
    }
}

void multiplyAvx512(const std::uint32_t* pa, std::size_t Kp2, const GemmBf16Args& g)
{
    const std::size_t panels = (g.N + 15) / 16;
    // The packed buffer is 64-byte aligned; panel rows are 64 bytes.
    std::uint32_t* pb = scratchB(panels * Kp2 * 16);
    packB(g.transB, g.K, g.N, g.B, g.ldb, pb, Kp2);
    kernelAvx512(pa, pb, Kp2, g.M, g.N, g.C, g.ldc, g.accumulate);
}

void kernelAvx512(const std::uint32_t* pa, const std::uint32_t* pb, std::size_t Kp2, std::size_t M, std::size_t N, float* C,
                  std::size_t ldc, bool accumulate)
{
    const std::size_t panels = (N + 15) / 16;

    // K blocks of at most ~192 pairs keep NR panels of B (3 x 12 KB) in L1 across the row tiles.
    const std::size_t kBlocks = (Kp2 + 191) / 192;
    const std::size_t kc = (Kp2 + kBlocks - 1) / kBlocks;
    const std::size_t panelStride = Kp2 * 16;
    for (std::size_t p0 = 0; p0 < Kp2; p0 += kc) {
        const std::size_t kp = std::min(kc, Kp2 - p0);
        const bool load = accumulate || p0 > 0;
        for (std::size_t j0 = 0; j0 < panels; j0 += kNR) {
            const std::size_t nr = std::min<std::size_t>(kNR, panels - j0);
            const std::size_t ncols = std::min<std::size_t>(N - 16 * j0, 16 * nr);
            for (std::size_t m0 = 0; m0 < M; m0 += kMR) {
                const std::size_t mr = std::min<std::size_t>(kMR, M - m0);
                kTiles[mr - 1][nr - 1](pa + m0 * Kp2 + p0, Kp2, pb + j0 * panelStride + p0 * 16, panelStride, kp,
                                       C + m0 * ldc + 16 * j0, ldc, ncols, load);
            }
        }
    }
}

} // namespace quantscope::bf16detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
