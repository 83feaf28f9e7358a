#include "nn/conv_direct.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <vector>

namespace quantscope::conv_direct {

namespace {
constexpr std::size_t kMr = 8; // rows of C per register tile
} // namespace

void packA(const float* A, std::size_t M, std::size_t K, std::size_t lda, std::vector<float>& packed)
{
    const std::size_t blocks = (M + kMr - 1) / kMr;
    packed.assign(blocks * K * kMr, 0.0f);
    for (std::size_t b = 0; b < blocks; ++b)
        for (std::size_t i = 0; i < kMr && b * kMr + i < M; ++i) {
            const float* row = A + (b * kMr + i) * lda;
            float* dst = packed.data() + b * K * kMr + i;
            for (std::size_t k = 0; k < K; ++k) dst[k * kMr] = row[k];
        }
}

#if defined(__AVX512F__)

namespace {

inline __mmask16 tailMask(std::size_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u); }

// An 8 x 48 tile of C: three vectors of 16 columns, the last ones masked at the end of a row.
inline void tile8x48(const float* __restrict pa, std::size_t K, const float* const* rows, std::size_t j,
                     std::size_t left, float* C, std::size_t ldc, std::size_t mRows)
{
    const __mmask16 m0 = tailMask(left), m1 = tailMask(left > 16 ? left - 16 : 0),
                    m2 = tailMask(left > 32 ? left - 32 : 0);
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00, c20 = c00, c21 = c00,
           c22 = c00, c30 = c00, c31 = c00, c32 = c00, c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00,
           c52 = c00, c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
    for (std::size_t k = 0; k < K; ++k) {
        const float* r = rows[k] + j;
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, r);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, r + 16);
        const __m512 b2 = _mm512_maskz_loadu_ps(m2, r + 32);
        const float* a = pa + k * kMr;
        __m512 s = _mm512_set1_ps(a[0]);
        c00 = _mm512_fmadd_ps(s, b0, c00), c01 = _mm512_fmadd_ps(s, b1, c01), c02 = _mm512_fmadd_ps(s, b2, c02);
        s = _mm512_set1_ps(a[1]);
        c10 = _mm512_fmadd_ps(s, b0, c10), c11 = _mm512_fmadd_ps(s, b1, c11), c12 = _mm512_fmadd_ps(s, b2, c12);
        s = _mm512_set1_ps(a[2]);
        c20 = _mm512_fmadd_ps(s, b0, c20), c21 = _mm512_fmadd_ps(s, b1, c21), c22 = _mm512_fmadd_ps(s, b2, c22);
        s = _mm512_set1_ps(a[3]);
        c30 = _mm512_fmadd_ps(s, b0, c30), c31 = _mm512_fmadd_ps(s, b1, c31), c32 = _mm512_fmadd_ps(s, b2, c32);
        s = _mm512_set1_ps(a[4]);
        c40 = _mm512_fmadd_ps(s, b0, c40), c41 = _mm512_fmadd_ps(s, b1, c41), c42 = _mm512_fmadd_ps(s, b2, c42);
        s = _mm512_set1_ps(a[5]);
        c50 = _mm512_fmadd_ps(s, b0, c50), c51 = _mm512_fmadd_ps(s, b1, c51), c52 = _mm512_fmadd_ps(s, b2, c52);
        s = _mm512_set1_ps(a[6]);
        c60 = _mm512_fmadd_ps(s, b0, c60), c61 = _mm512_fmadd_ps(s, b1, c61), c62 = _mm512_fmadd_ps(s, b2, c62);
        s = _mm512_set1_ps(a[7]);
        c70 = _mm512_fmadd_ps(s, b0, c70), c71 = _mm512_fmadd_ps(s, b1, c71), c72 = _mm512_fmadd_ps(s, b2, c72);
    }
    const __m512 out[8][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                              {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
    for (std::size_t i = 0; i < mRows; ++i) {
        float* c = C + i * ldc + j;
        _mm512_mask_storeu_ps(c, m0, out[i][0]);
        if (m1) _mm512_mask_storeu_ps(c + 16, m1, out[i][1]);
        if (m2) _mm512_mask_storeu_ps(c + 32, m2, out[i][2]);
    }
}

} // namespace

void gemmRows(const float* packedA, std::size_t M, std::size_t K, const float* const* rows, std::size_t L,
              float* C, std::size_t ldc)
{
    for (std::size_t b = 0; b * kMr < M; ++b) {
        const std::size_t mRows = std::min(kMr, M - b * kMr);
        const float* pa = packedA + b * K * kMr;
        float* cb = C + b * kMr * ldc;
        for (std::size_t j = 0; j < L; j += 48) tile8x48(pa, K, rows, j, L - j, cb, ldc, mRows);
    }
}

namespace {

// KR x (16 MV) tile of C^T: acc[i][v] lane l = sum_j R[k + i][j] Dt[j][m + 16 v + l], j in order.
template <int KR, int MV>
void transTile(const float* Dt, std::size_t ldt, const float* const* r, std::size_t L, std::size_t kr,
               std::size_t m, std::size_t M, float* C, std::size_t ldc, std::size_t k)
{
    __m512 acc[KR][MV];
#pragma GCC unroll 32
    for (int i = 0; i < KR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) acc[i][v] = _mm512_setzero_ps();
    const float* d = Dt + m;
    for (std::size_t j = 0; j < L; ++j, d += ldt) {
        __m512 dv[MV];
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) dv[v] = _mm512_loadu_ps(d + 16 * v);
#pragma GCC unroll 32
        for (int i = 0; i < KR; ++i) {
            const __m512 a = _mm512_set1_ps(r[i][j]);
#pragma GCC unroll 4
            for (int v = 0; v < MV; ++v) acc[i][v] = _mm512_fmadd_ps(a, dv[v], acc[i][v]);
        }
    }
    alignas(64) float tmp[16];
    for (std::size_t i = 0; i < kr; ++i)
        for (int v = 0; v < MV; ++v) {
            _mm512_store_ps(tmp, acc[i][v]);
            for (std::size_t l = 0; l < 16 && m + 16 * v + l < M; ++l) C[(m + 16 * v + l) * ldc + k + i] += tmp[l];
        }
}

template <int KR, int MV>
void transBlock(const float* Dt, std::size_t ldt, const float* const* R, std::size_t K, std::size_t L, std::size_t m,
                std::size_t M, float* C, std::size_t ldc)
{
    std::size_t k = 0;
    for (; k + KR <= K; k += KR) transTile<KR, MV>(Dt, ldt, R + k, L, KR, m, M, C, ldc, k);
    // the last K % KR rows in tiles of 4 (the rows past K repeat the last one and are dropped)
    for (; k < K; k += 4) {
        const std::size_t kr = std::min<std::size_t>(4, K - k);
        const float* r[4];
        for (std::size_t i = 0; i < 4; ++i) r[i] = R[k + std::min(i, kr - 1)];
        transTile<4, MV>(Dt, ldt, r, L, kr, m, M, C, ldc, k);
    }
}

} // namespace

void gemmRowsTransAdd(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                      float* C, std::size_t ldc)
{
    // D transposed to (L, Mp), Mp = M rounded up to 16 lanes (zeros past M): the product is then
    // vectorised over output channels, each broadcast R[k][j] feeding 1-4 vectors, and every
    // output is a sum over j in order held in a register (no horizontal reductions).
    const std::size_t Mp = (M + 15) / 16 * 16;
    static thread_local std::vector<float> dt;
    if (dt.size() < L * Mp) dt.resize(L * Mp);
    for (std::size_t j = 0; j < L; ++j) {
        float* row = dt.data() + j * Mp;
        for (std::size_t m = 0; m < M; ++m) row[m] = D[m][j];
        for (std::size_t m = M; m < Mp; ++m) row[m] = 0.0f;
    }
    for (std::size_t m = 0; m < Mp;) {
        const std::size_t left = (Mp - m) / 16;
        if (left >= 4) {
            transBlock<6, 4>(dt.data(), Mp, R, K, L, m, M, C, ldc);
            m += 64;
        } else if (left == 3) {
            transBlock<8, 3>(dt.data(), Mp, R, K, L, m, M, C, ldc);
            m += 48;
        } else if (left == 2) {
            transBlock<12, 2>(dt.data(), Mp, R, K, L, m, M, C, ldc);
            m += 32;
        } else {
            transBlock<24, 1>(dt.data(), Mp, R, K, L, m, M, C, ldc);
            m += 16;
        }
    }
}

#else // portable twins: the same sums in the same order

void gemmRows(const float* packedA, std::size_t M, std::size_t K, const float* const* rows, std::size_t L,
              float* C, std::size_t ldc)
{
    for (std::size_t b = 0; b * kMr < M; ++b) {
        const std::size_t mRows = std::min(kMr, M - b * kMr);
        const float* pa = packedA + b * K * kMr;
        for (std::size_t i = 0; i < mRows; ++i) {
            float* c = C + (b * kMr + i) * ldc;
            std::fill(c, c + L, 0.0f);
            for (std::size_t k = 0; k < K; ++k) {
                const float a = pa[k * kMr + i];
                const float* __restrict r = rows[k];
                for (std::size_t j = 0; j < L; ++j) c[j] += a * r[j];
            }
        }
    }
}

void gemmRowsTransAdd(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                      float* C, std::size_t ldc)
{
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t k = 0; k < K; ++k) {
            float s = 0.0f;
            for (std::size_t j = 0; j < L; ++j) s += D[m][j] * R[k][j];
            C[m * ldc + k] += s;
        }
}

#endif

} // namespace quantscope::conv_direct
