#include "nn/conv_direct.h"

#if defined(__AVX512F__)
#if !defined(__clang__)
// GCC 12's _mm512_shuffle_f32x4 (and _mm512_reduce_add_ps) pass _mm512_undefined_ps() as the
// masked-off source, which -Wuninitialized reports inside its own header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "tensor/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace quantscope::conv_direct {

namespace {
constexpr std::size_t kMr = 8; // rows of C per register tile

std::atomic<TransAddKernel>& transAddChoice()
{
    static std::atomic<TransAddKernel> choice{defaultTransAddKernel()};
    return choice;
}
} // namespace

TransAddKernel defaultTransAddKernel()
{
    return cpuIsAmd() && !cpuSplitsAvx512() ? TransAddKernel::Pixels : TransAddKernel::Channels;
}
TransAddKernel transAddKernel() { return transAddChoice().load(std::memory_order_relaxed); }
void setTransAddKernel(TransAddKernel kernel) { transAddChoice().store(kernel, std::memory_order_relaxed); }

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

// An 8 x (16 NV) tile of C: NV vectors of 16 columns, the last ones masked at the end of a row.
// A row's last columns take the narrowest tile that holds them (NV = 1 or 2 for the last 16 or 32):
// a 48-wide tile there multiplied masked-off zeros, up to 41 of 48 columns of it (resnet8's 7x7
// layers: 1,015 run positions a group, 7 past the last whole tile).
// Full (left >= 16 NV): plain loads and stores. Masked loads, even with every lane set, ran the
// 8 x 48 tile at 157-168 GFLOP/s against 176-186 for plain ones on Sapphire Rapids (one core,
// resnet8's 16-channel layer in L2): most of these loads cross a cache line (the taps' rows
// start at every offset).
template <int NV, bool Full>
inline void tile8(const float* __restrict pa, std::size_t K, const float* const* rows, std::size_t j, std::size_t left,
                  float* C, std::size_t ldc, std::size_t mRows)
{
    __mmask16 m[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) m[v] = tailMask(left > 16 * static_cast<std::size_t>(v) ? left - 16 * v : 0);
    __m512 c[8][NV];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) c[i][v] = _mm512_setzero_ps();
    for (std::size_t k = 0; k < K; ++k) {
        const float* r = rows[k] + j;
        __m512 b[NV];
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) b[v] = Full ? _mm512_loadu_ps(r + 16 * v) : _mm512_maskz_loadu_ps(m[v], r + 16 * v);
        const float* a = pa + k * kMr;
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
            const __m512 s = _mm512_set1_ps(a[i]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; ++v) c[i][v] = _mm512_fmadd_ps(s, b[v], c[i][v]);
        }
    }
    // constant indices only (a loop to mRows made GCC keep c in memory, stored every k)
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        if (static_cast<std::size_t>(i) >= mRows) break;
        float* out = C + i * ldc + j;
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v)
            if (Full) _mm512_storeu_ps(out + 16 * v, c[i][v]);
            else if (m[v]) _mm512_mask_storeu_ps(out + 16 * v, m[v], c[i][v]);
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
        std::size_t j = 0;
        for (; j + 48 <= L; j += 48) tile8<3, true>(pa, K, rows, j, L - j, cb, ldc, mRows);
        if (j + 32 < L) tile8<3, false>(pa, K, rows, j, L - j, cb, ldc, mRows);
        else if (j + 16 < L) tile8<2, false>(pa, K, rows, j, L - j, cb, ldc, mRows);
        else if (j < L) tile8<1, false>(pa, K, rows, j, L - j, cb, ldc, mRows);
    }
}

namespace {

// The 16 lanes of v added in a fixed order: 128-bit blocks (0 + 2) + (1 + 3), then within the block.
inline float laneSum(__m512 v)
{
    __m512 t = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128 x = _mm512_castps512_ps128(t);
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

// An MT x KT tile of C: acc[a][b] lane l sums D[m + a][j] R[k + b][j] over the j = l (mod 16),
// in order (the last j < L masked), then the 16 lanes are added by laneSum. Each 16 columns of j cost MT + KT vector loads for MT KT multiply-adds, and D is read in
// place (no transposed copy). Rows past the tile's mr x kr repeat its last row and are dropped.
template <int MT, int KT>
void dotTile(const float* const* D, std::size_t m, std::size_t mr, const float* const* R, std::size_t k, std::size_t kr,
             std::size_t L, float* C, std::size_t ldc)
{
    const float* d[MT];
    const float* r[KT];
#pragma GCC unroll 8
    for (int a = 0; a < MT; ++a) d[a] = D[m + std::min<std::size_t>(a, mr - 1)];
#pragma GCC unroll 8
    for (int b = 0; b < KT; ++b) r[b] = R[k + std::min<std::size_t>(b, kr - 1)];
    __m512 acc[MT][KT];
#pragma GCC unroll 8
    for (int a = 0; a < MT; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < KT; ++b) acc[a][b] = _mm512_setzero_ps();
    // One loop for whole and tail columns (a full mask costs what a plain load does), and the
    // accumulators only ever indexed by constants: GCC 12 then keeps them in registers.
    for (std::size_t j = 0; j < L; j += 16) {
        const __mmask16 mask = tailMask(L - j);
        __m512 dv[MT];
#pragma GCC unroll 8
        for (int a = 0; a < MT; ++a) dv[a] = _mm512_maskz_loadu_ps(mask, d[a] + j);
#pragma GCC unroll 8
        for (int b = 0; b < KT; ++b) {
            const __m512 rv = _mm512_maskz_loadu_ps(mask, r[b] + j);
#pragma GCC unroll 8
            for (int a = 0; a < MT; ++a) acc[a][b] = _mm512_fmadd_ps(dv[a], rv, acc[a][b]);
        }
    }
    float sums[MT][KT];
#pragma GCC unroll 8
    for (int a = 0; a < MT; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < KT; ++b) sums[a][b] = laneSum(acc[a][b]);
    for (std::size_t a = 0; a < mr; ++a)
        for (std::size_t b = 0; b < kr; ++b) C[(m + a) * ldc + k + b] += sums[a][b];
}

// KR x (16 MV) tile of the running sums P of one block of MV 16-channel vectors (P: rows of
// 16 MV floats, ldp apart): acc[i][v] lane l continues P[i ldp + 16 v + l] over j = j0..j1-1 in
// order, adding r[i][j] Dt[j][16 v + l]. Dt points at row 0 of the block's transposed output
// gradient (rows ldt apart), of which rows j0..j1-1 are held.
template <int KR, int MV>
void transTile(const float* Dt, std::size_t ldt, const float* const* r, std::size_t j0, std::size_t j1, float* P,
               std::size_t ldp)
{
    __m512 acc[KR][MV];
#pragma GCC unroll 32
    for (int i = 0; i < KR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) acc[i][v] = _mm512_load_ps(P + i * ldp + 16 * v);
    const float* d = Dt + j0 * ldt;
    for (std::size_t j = j0; j < j1; ++j, d += ldt) {
        __m512 dv[MV];
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) dv[v] = _mm512_load_ps(d + 16 * v);
#pragma GCC unroll 32
        for (int i = 0; i < KR; ++i) {
            const __m512 a = _mm512_set1_ps(r[i][j]);
#pragma GCC unroll 4
            for (int v = 0; v < MV; ++v) acc[i][v] = _mm512_fmadd_ps(a, dv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 32
    for (int i = 0; i < KR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) _mm512_store_ps(P + i * ldp + 16 * v, acc[i][v]);
}

// Rows [k0, k1) of the block's sums over columns [j0, j1), KR rows a tile (the most that fit the
// 32 registers with MV vectors). Rows past K repeat R's last row and land in P's padding rows.
template <int KR, int MV>
void transBlock(const float* Dt, std::size_t ld, const float* const* R, std::size_t K, std::size_t k0, std::size_t k1,
                std::size_t j0, std::size_t j1, float* P)
{
    for (std::size_t k = k0; k < k1; k += KR) {
        const float* r[KR];
#pragma GCC unroll 32
        for (int i = 0; i < KR; ++i) r[i] = R[std::min(k + i, K - 1)];
        transTile<KR, MV>(Dt, ld, r, j0, j1, P + k * ld, ld);
    }
}

// The 16 x 16 transpose in registers: in[i] lane l goes to out[l] lane i.
inline void transpose16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    const auto lo = [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); };
    const auto hi = [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); };
    __m512 u[16];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) { // rows 4q..4q+3
        u[4 * q] = lo(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = hi(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = lo(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = hi(t[4 * q + 1], t[4 * q + 3]);
    }
    // u[4q + c] holds, in 128-bit block b, column 4b + c of rows 4q..4q+3
    __m512 v[16];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
        v[c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);      // blocks 0, 2 of rows 0-3, 4-7
        v[4 + c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);  // blocks 1, 3
        v[8 + c] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        v[12 + c] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
        r[c] = _mm512_shuffle_f32x4(v[c], v[8 + c], 0x88);        // column c
        r[4 + c] = _mm512_shuffle_f32x4(v[4 + c], v[12 + c], 0x88); // column 4 + c
        r[8 + c] = _mm512_shuffle_f32x4(v[c], v[8 + c], 0xDD);    // column 8 + c
        r[12 + c] = _mm512_shuffle_f32x4(v[4 + c], v[12 + c], 0xDD);
    }
}

// out[jj ldo + i] = D[m + i][j0 + jj] for jj < jn and i < 16 (zero for rows m + i >= M).
inline void transposeBlock(const float* const* D, std::size_t m, std::size_t M, std::size_t j0, std::size_t jn, float* out,
                           std::size_t ldo)
{
    for (std::size_t jj = 0; jj < jn; jj += 16) {
        const std::size_t n = std::min<std::size_t>(16, jn - jj);
        const __mmask16 mask = tailMask(n);
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i)
            r[i] = m + i < M ? _mm512_maskz_loadu_ps(mask, D[m + i] + j0 + jj) : _mm512_setzero_ps();
        transpose16(r);
        float* o = out + jj * ldo;
        for (std::size_t c = 0; c < n; ++c) _mm512_store_ps(o + c * ldo, r[c]);
    }
}

// 64-byte aligned scratch of n floats, one per slot and thread.
float* alignedScratch(int slot, std::size_t n)
{
    static thread_local std::vector<float> buf[2];
    std::vector<float>& b = buf[slot];
    if (b.size() < n + 16) b.resize(n + 16);
    const auto at = reinterpret_cast<std::uintptr_t>(b.data());
    return b.data() + ((64 - at % 64) % 64) / sizeof(float);
}

// TransAddKernel::Pixels
void transAddPixels(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                    float* C, std::size_t ldc)
{
    // Vectorised over j (the long side: pixels of a group of images) with 4 x 6 tiles; M and K
    // (output channels, input channels x taps) are any size.
    constexpr std::size_t MT = 4, KT = 6;
    for (std::size_t m = 0; m < M; m += MT) {
        const std::size_t mr = std::min(MT, M - m);
        for (std::size_t k = 0; k < K; k += KT)
            dotTile<MT, KT>(D, m, mr, R, k, std::min(KT, K - k), L, C, ldc);
    }
}

// The tiles of rows [k0, k1) of P over columns [j0, j1), for a block of mb channels (16-64).
void transTiles(const float* Dt, std::size_t mb, const float* const* R, std::size_t K, std::size_t k0, std::size_t k1,
                std::size_t j0, std::size_t j1, float* P)
{
    switch (mb / 16) {
    case 4: transBlock<6, 4>(Dt, mb, R, K, k0, k1, j0, j1, P); break;
    case 3: transBlock<8, 3>(Dt, mb, R, K, k0, k1, j0, j1, P); break;
    case 2: transBlock<12, 2>(Dt, mb, R, K, k0, k1, j0, j1, P); break;
    // 12 rows, not 24: 24 row pointers do not fit the registers, and each broadcast reloaded one
    default: transBlock<12, 1>(Dt, mb, R, K, k0, k1, j0, j1, P); break;
    }
}

// TransAddKernel::Channels
void transAddChannels(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                      float* C, std::size_t ldc)
{
    // 64 output channels at a time (Mp = M rounded up to 16 lanes, zeros past M): their rows of D
    // transposed to (L, 64), so that each broadcast R[k][j] feeds 1-4 vectors of channels. Each
    // output is one sum over j in order from 0, kept in P (K x 64) between chunks of columns,
    // then added to C. Where P fits L2 (K <= 1,000 or so: every layer of seed-cnn and resnet8), the
    // columns go in chunks of 128 transposed as they come (32 KB, held in L1 while every row k
    // reads them). Larger P would be read and written back from memory for each chunk (a layer of
    // 512 channels fell to 59 GFLOP/s, half the Pixels kernel): the rows then go 96 at a time
    // (their sums, 24 KB, stay in L1) over chunks of 64 columns of the transposed D (16 KB).
    constexpr std::size_t kL2Sums = 256 * 1024, kChunk = 128, kRowBlock = 96, kBlockChunk = 64;
    const std::size_t Mp = (M + 15) / 16 * 16;
    for (std::size_t m0 = 0; m0 < Mp; m0 += 64) {
        const std::size_t mb = std::min<std::size_t>(64, Mp - m0);
        float* P = alignedScratch(1, (K + 24) * mb);
        std::fill(P, P + (K + 24) * mb, 0.0f);
        if ((K + 24) * mb * sizeof(float) <= kL2Sums) {
            float* dt = alignedScratch(0, kChunk * mb);
            for (std::size_t j0 = 0; j0 < L; j0 += kChunk) {
                const std::size_t j1 = std::min(L, j0 + kChunk);
                for (std::size_t m = 0; m < mb; m += 16) transposeBlock(D, m0 + m, M, j0, j1 - j0, dt + m, mb);
                transTiles(dt - j0 * mb, mb, R, K, 0, K, j0, j1, P); // row j of the chunk at dt + (j - j0) mb
            }
        } else {
            float* Dt = alignedScratch(0, L * mb);
            for (std::size_t m = 0; m < mb; m += 16) transposeBlock(D, m0 + m, M, 0, L, Dt + m, mb);
            for (std::size_t k0 = 0; k0 < K; k0 += kRowBlock)
                for (std::size_t j0 = 0; j0 < L; j0 += kBlockChunk)
                    transTiles(Dt, mb, R, K, k0, std::min(K, k0 + kRowBlock), j0, std::min(L, j0 + kBlockChunk), P);
        }
        for (std::size_t m = m0; m < std::min(M, m0 + mb); ++m)
            for (std::size_t k = 0; k < K; ++k) C[m * ldc + k] += P[k * mb + (m - m0)];
    }
}

} // namespace

void gemmRowsTransAdd(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                      float* C, std::size_t ldc)
{
    if (transAddKernel() == TransAddKernel::Channels) transAddChannels(D, M, R, K, L, C, ldc);
    else transAddPixels(D, M, R, K, L, C, ldc);
}

#else // portable twins: the same sums (gemmRows in the same order; gemmRowsTransAdd's AVX-512 kernel adds 16 lanes)

// Without AVX-512 (the sanitizer presets, the x86-64-v3 package) these run every direct
// convolution, so they are register-blocked: gemmRows holds 4 x 8 outputs in SSE registers,
// gemmRowsTransAdd 8 x 4 (4 x 4 in named scalars at the edges, and without SSE2), so that each
// value read feeds four or more products, where an element-at-a-time loop read and
// wrote the output once per product. Each output is still summed from 0 over k (gemmRows) or
// j (gemmRowsTransAdd) in order.

namespace {

// The 16 accumulators of a 4 x 4 tile: s<row><column>.
#define QS_TILE_ZERO float s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0, s20 = 0, s21 = 0, \
                           s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0
#define QS_TILE_MAC(a0, a1, a2, a3, b0, b1, b2, b3)                                                          \
    s00 += (a0) * (b0), s01 += (a0) * (b1), s02 += (a0) * (b2), s03 += (a0) * (b3), s10 += (a1) * (b0),     \
        s11 += (a1) * (b1), s12 += (a1) * (b2), s13 += (a1) * (b3), s20 += (a2) * (b0), s21 += (a2) * (b1), \
        s22 += (a2) * (b2), s23 += (a2) * (b3), s30 += (a3) * (b0), s31 += (a3) * (b1), s32 += (a3) * (b2), \
        s33 += (a3) * (b3)

// out(r, c) for the tile's row r and column c; set(r, c, value) stores one output.
template <typename Set>
inline void storeTile(Set&& set, float s00, float s01, float s02, float s03, float s10, float s11, float s12, float s13,
                      float s20, float s21, float s22, float s23, float s30, float s31, float s32, float s33)
{
    set(0, 0, s00), set(0, 1, s01), set(0, 2, s02), set(0, 3, s03);
    set(1, 0, s10), set(1, 1, s11), set(1, 2, s12), set(1, 3, s13);
    set(2, 0, s20), set(2, 1, s21), set(2, 2, s22), set(2, 3, s23);
    set(3, 0, s30), set(3, 1, s31), set(3, 2, s32), set(3, 3, s33);
}

} // namespace

void gemmRows(const float* packedA, std::size_t M, std::size_t K, const float* const* rows, std::size_t L,
              float* C, std::size_t ldc)
{
    for (std::size_t b = 0; b * kMr < M; ++b) {
        const std::size_t mRows = std::min(kMr, M - b * kMr);
        const float* pa = packedA + b * K * kMr;
        float* cb = C + b * kMr * ldc;
        std::size_t i = 0;
        for (; i + 4 <= mRows; i += 4) {
            std::size_t j = 0;
#if defined(__SSE2__)
            // 4 x 8 tiles in eight SSE registers (x86-64's baseline): per k one load of the four
            // weights and two of the row, each lane its own output summed over k in order.
            for (; j + 8 <= L; j += 8) {
                __m128 c0l = _mm_setzero_ps(), c0h = c0l, c1l = c0l, c1h = c0l, c2l = c0l, c2h = c0l, c3l = c0l, c3h = c0l;
                for (std::size_t k = 0; k < K; ++k) {
                    const __m128 a = _mm_loadu_ps(pa + k * kMr + i);
                    const float* r = rows[k] + j;
                    const __m128 rl = _mm_loadu_ps(r), rh = _mm_loadu_ps(r + 4);
                    __m128 s = _mm_shuffle_ps(a, a, 0x00);
                    c0l = _mm_add_ps(c0l, _mm_mul_ps(s, rl)), c0h = _mm_add_ps(c0h, _mm_mul_ps(s, rh));
                    s = _mm_shuffle_ps(a, a, 0x55);
                    c1l = _mm_add_ps(c1l, _mm_mul_ps(s, rl)), c1h = _mm_add_ps(c1h, _mm_mul_ps(s, rh));
                    s = _mm_shuffle_ps(a, a, 0xAA);
                    c2l = _mm_add_ps(c2l, _mm_mul_ps(s, rl)), c2h = _mm_add_ps(c2h, _mm_mul_ps(s, rh));
                    s = _mm_shuffle_ps(a, a, 0xFF);
                    c3l = _mm_add_ps(c3l, _mm_mul_ps(s, rl)), c3h = _mm_add_ps(c3h, _mm_mul_ps(s, rh));
                }
                float* c = cb + i * ldc + j;
                _mm_storeu_ps(c, c0l), _mm_storeu_ps(c + 4, c0h);
                _mm_storeu_ps(c + ldc, c1l), _mm_storeu_ps(c + ldc + 4, c1h);
                _mm_storeu_ps(c + 2 * ldc, c2l), _mm_storeu_ps(c + 2 * ldc + 4, c2h);
                _mm_storeu_ps(c + 3 * ldc, c3l), _mm_storeu_ps(c + 3 * ldc + 4, c3h);
            }
#endif
            for (; j + 4 <= L; j += 4) {
                QS_TILE_ZERO;
                for (std::size_t k = 0; k < K; ++k) {
                    const float* a = pa + k * kMr + i;
                    const float* r = rows[k] + j;
                    QS_TILE_MAC(a[0], a[1], a[2], a[3], r[0], r[1], r[2], r[3]);
                }
                storeTile([&](std::size_t ii, std::size_t jj, float v) { cb[(i + ii) * ldc + j + jj] = v; }, s00, s01, s02,
                          s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33);
            }
            for (; j < L; ++j) { // the last L % 4 columns
                float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
                for (std::size_t k = 0; k < K; ++k) {
                    const float* a = pa + k * kMr + i;
                    const float r = rows[k][j];
                    t0 += a[0] * r, t1 += a[1] * r, t2 += a[2] * r, t3 += a[3] * r;
                }
                cb[i * ldc + j] = t0, cb[(i + 1) * ldc + j] = t1, cb[(i + 2) * ldc + j] = t2, cb[(i + 3) * ldc + j] = t3;
            }
        }
        for (; i < mRows; ++i) { // the last mRows % 4 rows
            float* c = cb + i * ldc;
            std::size_t j = 0;
            for (; j + 4 <= L; j += 4) {
                float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
                for (std::size_t k = 0; k < K; ++k) {
                    const float a = pa[k * kMr + i];
                    const float* r = rows[k] + j;
                    t0 += a * r[0], t1 += a * r[1], t2 += a * r[2], t3 += a * r[3];
                }
                c[j] = t0, c[j + 1] = t1, c[j + 2] = t2, c[j + 3] = t3;
            }
            for (; j < L; ++j) {
                float t = 0;
                for (std::size_t k = 0; k < K; ++k) t += pa[k * kMr + i] * rows[k][j];
                c[j] = t;
            }
        }
    }
}

void gemmRowsTransAdd(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                      float* C, std::size_t ldc)
{
    // one output: C[m ldc + k] += sum over j in order
    auto single = [&](std::size_t m, std::size_t k) {
        float s = 0.0f;
        for (std::size_t j = 0; j < L; ++j) s += D[m][j] * R[k][j];
        C[m * ldc + k] += s;
    };
    std::size_t m = 0;
#if defined(__SSE2__)
    // Blocks of 8 output channels: D's 8 rows transposed to (L, 8), then per j one broadcast of
    // R[k + i][j] feeds two SSE vectors over m, as the AVX-512 kernel does with 16 lanes; each
    // output is still its own sum over j in order.
    static thread_local std::vector<float> dt;
    if (dt.size() < L * 8) dt.resize(L * 8);
    for (; m + 8 <= M; m += 8) {
        for (std::size_t j = 0; j < L; ++j)
            for (std::size_t mm = 0; mm < 8; ++mm) dt[j * 8 + mm] = D[m + mm][j];
        const float* t = dt.data();
        std::size_t k = 0;
        for (; k + 4 <= K; k += 4) {
            const float *r0 = R[k], *r1 = R[k + 1], *r2 = R[k + 2], *r3 = R[k + 3];
            __m128 a0l = _mm_setzero_ps(), a0h = a0l, a1l = a0l, a1h = a0l, a2l = a0l, a2h = a0l, a3l = a0l, a3h = a0l;
            for (std::size_t j = 0; j < L; ++j) {
                const __m128 dl = _mm_loadu_ps(t + j * 8), dh = _mm_loadu_ps(t + j * 8 + 4);
                __m128 b = _mm_set1_ps(r0[j]);
                a0l = _mm_add_ps(a0l, _mm_mul_ps(dl, b)), a0h = _mm_add_ps(a0h, _mm_mul_ps(dh, b));
                b = _mm_set1_ps(r1[j]);
                a1l = _mm_add_ps(a1l, _mm_mul_ps(dl, b)), a1h = _mm_add_ps(a1h, _mm_mul_ps(dh, b));
                b = _mm_set1_ps(r2[j]);
                a2l = _mm_add_ps(a2l, _mm_mul_ps(dl, b)), a2h = _mm_add_ps(a2h, _mm_mul_ps(dh, b));
                b = _mm_set1_ps(r3[j]);
                a3l = _mm_add_ps(a3l, _mm_mul_ps(dl, b)), a3h = _mm_add_ps(a3h, _mm_mul_ps(dh, b));
            }
            float out[4][8];
            _mm_storeu_ps(out[0], a0l), _mm_storeu_ps(out[0] + 4, a0h), _mm_storeu_ps(out[1], a1l), _mm_storeu_ps(out[1] + 4, a1h);
            _mm_storeu_ps(out[2], a2l), _mm_storeu_ps(out[2] + 4, a2h), _mm_storeu_ps(out[3], a3l), _mm_storeu_ps(out[3] + 4, a3h);
            for (std::size_t mm = 0; mm < 8; ++mm)
                for (std::size_t i = 0; i < 4; ++i) C[(m + mm) * ldc + k + i] += out[i][mm];
        }
        for (; k < K; ++k)
            for (std::size_t mm = 0; mm < 8; ++mm) single(m + mm, k);
    }
#endif
    for (; m + 4 <= M; m += 4) {
        const float *d0 = D[m], *d1 = D[m + 1], *d2 = D[m + 2], *d3 = D[m + 3];
        std::size_t k = 0;
        for (; k + 4 <= K; k += 4) {
            const float *r0 = R[k], *r1 = R[k + 1], *r2 = R[k + 2], *r3 = R[k + 3];
            QS_TILE_ZERO;
            for (std::size_t j = 0; j < L; ++j) QS_TILE_MAC(d0[j], d1[j], d2[j], d3[j], r0[j], r1[j], r2[j], r3[j]);
            storeTile([&](std::size_t mm, std::size_t kk, float v) { C[(m + mm) * ldc + k + kk] += v; }, s00, s01, s02, s03,
                      s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33);
        }
        for (; k < K; ++k)
            for (std::size_t mm = 0; mm < 4; ++mm) single(m + mm, k);
    }
    for (; m < M; ++m)
        for (std::size_t k = 0; k < K; ++k) single(m, k);
}

#undef QS_TILE_ZERO
#undef QS_TILE_MAC

#endif

} // namespace quantscope::conv_direct
