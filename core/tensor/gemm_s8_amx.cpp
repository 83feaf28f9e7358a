// AMX-INT8 path of the int8 products (tensor/gemm_s8.h): TDPBSUD (signed A x unsigned B, int32
// accumulation) on a 2 x 2 block of 16 x 16 C tiles (tiles 0-3: 32 output channels x 32 columns),
// A tiles 4-5 (16 rows x KC k-groups, read straight from the padded codes) and B tiles 6-7 (KC
// k-groups of one tap x 16 columns, read straight from the runs: the rows of one tap are
// groupStride apart). KC is the largest divisor of the channel groups up to 16, so every tile
// has one shape. The int32 tiles leave through a bounce buffer into the AVX-512 epilogue.
// The tile intrinsics are inline asm without memory operands, hence the compiler barriers.
#include "tensor/gemm_s8.h"

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")
#endif

namespace quantscope::s8detail {

namespace {

struct alignas(64) TileConfig {
    std::uint8_t palette = 1;
    std::uint8_t startRow = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};

inline void barrier() { __asm__ volatile("" ::: "memory"); }

struct Epilogue {
    const float* scale;
    const std::int32_t* corr;
    float* out;
    std::size_t ldo, M, L;
};

// C tile rows [m0, m0 + 16) x columns [l0, l0 + 16), from the bounce buffer, clipped to M x L.
inline void drain(const std::int32_t* bounce, std::size_t m0, std::size_t l0, const Epilogue& e)
{
    barrier();
    if (m0 >= e.M || l0 >= e.L) return;
    const std::size_t rows = e.M - m0 < 16 ? e.M - m0 : 16, cols = e.L - l0 < 16 ? e.L - l0 : 16;
    const __mmask16 k = cols == 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1u);
    for (std::size_t r = 0; r < rows; ++r) {
        const std::size_t m = m0 + r;
        const __m512i acc = _mm512_add_epi32(_mm512_load_si512(bounce + 16 * r), _mm512_set1_epi32(e.corr[m]));
        _mm512_mask_storeu_ps(e.out + m * e.ldo + l0, k, _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(e.scale[m])));
    }
}

template <int TM, int TN>
void block(const std::int8_t* a, std::size_t rowBytes, const S8Runs& B, std::size_t KC, std::size_t chunks, std::size_t m0,
           std::size_t l0, const Epilogue& e, std::int32_t* bounce)
{
    _tile_zero(0);
    if constexpr (TN == 2) _tile_zero(1);
    if constexpr (TM == 2) _tile_zero(2);
    if constexpr (TM == 2 && TN == 2) _tile_zero(3);
    const long strideA = static_cast<long>(rowBytes), strideB = static_cast<long>(B.groupStride);
    for (std::size_t tap = 0; tap < B.taps; ++tap)
        for (std::size_t ch = 0; ch < chunks; ++ch) {
            const std::size_t g0 = tap * B.groups + ch * KC;
            const std::uint8_t* b = B.base + ch * KC * B.groupStride + B.tapOffset[tap] + 4 * l0;
            _tile_loadd(4, a + 4 * g0, strideA);
            _tile_loadd(6, b, strideB);
            _tile_dpbsud(0, 4, 6);
            if constexpr (TN == 2) {
                _tile_loadd(7, b + 64, strideB);
                _tile_dpbsud(1, 4, 7);
            }
            if constexpr (TM == 2) {
                _tile_loadd(5, a + 16 * rowBytes + 4 * g0, strideA);
                _tile_dpbsud(2, 5, 6);
                if constexpr (TN == 2) _tile_dpbsud(3, 5, 7);
            }
        }
    _tile_stored(0, bounce, 64);
    drain(bounce, m0, l0, e);
    if constexpr (TN == 2) {
        _tile_stored(1, bounce, 64);
        drain(bounce, m0, l0 + 16, e);
    }
    if constexpr (TM == 2) {
        _tile_stored(2, bounce, 64);
        drain(bounce, m0 + 16, l0, e);
    }
    if constexpr (TM == 2 && TN == 2) {
        _tile_stored(3, bounce, 64);
        drain(bounce, m0 + 16, l0 + 16, e);
    }
}

} // namespace

void gemmRunsAmx(const std::int8_t* A, std::size_t M, const S8Runs& B, std::size_t L, const float* scale,
                 const std::int32_t* corr, float* out, std::size_t ldo)
{
    if (M == 0 || L == 0) return;
    std::size_t KC = B.groups < 16 ? B.groups : 16;
    while (B.groups % KC) --KC;
    const std::size_t chunks = B.groups / KC, rowBytes = 4 * B.taps * B.groups;
    TileConfig cfg;
    for (int t = 0; t < 4; ++t) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    for (int t = 4; t < 6; ++t) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = static_cast<std::uint16_t>(4 * KC);
    }
    for (int t = 6; t < 8; ++t) {
        cfg.rows[t] = static_cast<std::uint8_t>(KC);
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    alignas(64) std::int32_t bounce[16 * 16];
    const Epilogue e{scale, corr, out, ldo, M, L};
    const std::size_t mTiles = (M + 15) / 16, lTiles = (L + 15) / 16;
    // Two column tiles of B (taps x KC x 128 bytes) stay in L1 while every row pair of A passes.
    for (std::size_t lt = 0; lt < lTiles; lt += 2) {
        const bool twoL = lTiles - lt >= 2;
        for (std::size_t mt = 0; mt < mTiles; mt += 2) {
            const bool twoM = mTiles - mt >= 2;
            const std::int8_t* a = A + mt * 16 * rowBytes;
            if (twoM && twoL) block<2, 2>(a, rowBytes, B, KC, chunks, mt * 16, lt * 16, e, bounce);
            else if (twoM) block<2, 1>(a, rowBytes, B, KC, chunks, mt * 16, lt * 16, e, bounce);
            else if (twoL) block<1, 2>(a, rowBytes, B, KC, chunks, mt * 16, lt * 16, e, bounce);
            else block<1, 1>(a, rowBytes, B, KC, chunks, mt * 16, lt * 16, e, bounce);
        }
    }
    _tile_release();
}

} // namespace quantscope::s8detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
