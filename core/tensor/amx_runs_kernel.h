// Internal to the AMX paths that read a convolution's runs (gemm_s8_amx.cpp, gemm_bf16_runs_amx.cpp):
// the tile loop both share. Include it after the TU's target pragma (it holds only internal-linkage
// templates): C (M x L, 32-bit) = A (M x 4 K4 bytes: rows padded to 16, K-group g's four bytes at
// 4 g) x B (conv_runs.h). Tiles 0-3: a 2 x 2 block of 16 x 16 C tiles; 4-5: A tiles (16 rows x KC
// K-groups, read straight from A); 6-7: B tiles (KC K-groups of one tap x 16 columns, read
// straight from the runs). KC is the largest divisor of the channel groups up to 16, so every
// tile has one shape. Op::dp<C>() is the tile product (TDPBSUD, TDPBF16PS) into C tile C from
// A tile 4 + C / 2 and B tile 6 + C % 2 (spelt out: the intrinsics are macros of literal tiles); drain(bounce,
// m0, l0) takes each C tile's 16 x 16 values through a bounce buffer. The tile intrinsics are
// inline asm without memory operands, hence the compiler barrier before the bounce is read.
// For the same reason no sanitizer sees a tile load or store: tileRead / tileWrite state each one's
// rows to ASan and TSan before it runs (nothing otherwise).
#pragma once

#include "tensor/conv_runs.h"
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace quantscope {
namespace {
namespace amx_runs {

// A tile load (tileloadd) reads `rows` rows of `bytes` bytes, `stride` bytes apart, from p; a
// tile store (tilestored) writes them. GCC's intrinsics are inline asm without memory operands, so
// ASan and TSan see neither (a 16-row tile over 15 rows of a heap block read past it silently
// under ASan, 2026-11-30): under a sanitizer these state the rows to it first.
// Each of the `rows` rows stated as one span (sanitizer_access.h); nothing outside sanitizer builds.
inline void tileRows([[maybe_unused]] const void* p, [[maybe_unused]] long stride, [[maybe_unused]] std::size_t rows,
                     [[maybe_unused]] std::size_t bytes, [[maybe_unused]] bool write)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    auto* base = const_cast<std::uint8_t*>(static_cast<const std::uint8_t*>(p));
    for (std::size_t r = 0; r < rows; ++r) sanitizer::stateSpan(base + static_cast<long>(r) * stride, static_cast<long>(bytes), write);
#endif
}
inline void tileRead(const void* p, long stride, std::size_t rows, std::size_t bytes) { tileRows(p, stride, rows, bytes, false); }
inline void tileWrite(void* p, long stride, std::size_t rows, std::size_t bytes) { tileRows(p, stride, rows, bytes, true); }

struct alignas(64) TileConfig {
    std::uint8_t palette = 1;
    std::uint8_t startRow = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};

inline void barrier() { __asm__ volatile("" ::: "memory"); }

template <class Op, int TM, int TN, class Drain>
void block(const std::uint8_t* a, std::size_t rowBytes, const ConvRuns& B, std::size_t KC, std::size_t chunks,
           std::size_t m0, std::size_t l0, Drain& drain, void* bounce)
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
            tileRead(a + 4 * g0, strideA, 16, 4 * KC);
            _tile_loadd(4, a + 4 * g0, strideA);
            tileRead(b, strideB, KC, 64);
            _tile_loadd(6, b, strideB);
            Op::template dp<0>();
            if constexpr (TN == 2) {
                tileRead(b + 64, strideB, KC, 64);
                _tile_loadd(7, b + 64, strideB);
                Op::template dp<1>();
            }
            if constexpr (TM == 2) {
                tileRead(a + 16 * rowBytes + 4 * g0, strideA, 16, 4 * KC);
                _tile_loadd(5, a + 16 * rowBytes + 4 * g0, strideA);
                Op::template dp<2>();
                if constexpr (TN == 2) Op::template dp<3>();
            }
        }
    _tile_stored(0, bounce, 64);
    barrier();
    drain(bounce, m0, l0);
    if constexpr (TN == 2) {
        _tile_stored(1, bounce, 64);
        barrier();
        drain(bounce, m0, l0 + 16);
    }
    if constexpr (TM == 2) {
        _tile_stored(2, bounce, 64);
        barrier();
        drain(bounce, m0 + 16, l0);
    }
    if constexpr (TM == 2 && TN == 2) {
        _tile_stored(3, bounce, 64);
        barrier();
        drain(bounce, m0 + 16, l0 + 16);
    }
}

template <class Op, class Drain>
void gemm(const std::uint8_t* A, std::size_t M, const ConvRuns& B, std::size_t L, Drain& drain)
{
    if (M == 0 || L == 0) return;
    std::size_t KC = B.groups < 16 ? B.groups : 16;
    while (B.groups % KC) --KC;
    const std::size_t chunks = B.groups / KC, rowBytes = 4 * B.taps * B.groups;
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.rows[t] = static_cast<std::uint8_t>(t >= 6 ? KC : 16);
        cfg.colsb[t] = static_cast<std::uint16_t>(t == 4 || t == 5 ? 4 * KC : 64);
    }
    _tile_loadconfig(&cfg);
    alignas(64) std::uint32_t bounce[16 * 16];
    const std::size_t mTiles = (M + 15) / 16, lTiles = (L + 15) / 16;
    // Two column tiles of B (taps x KC x 128 bytes) stay in L1 while every row pair of A passes.
    for (std::size_t lt = 0; lt < lTiles; lt += 2) {
        const bool twoL = lTiles - lt >= 2;
        for (std::size_t mt = 0; mt < mTiles; mt += 2) {
            const bool twoM = mTiles - mt >= 2;
            const std::uint8_t* a = A + mt * 16 * rowBytes;
            const std::size_t m0 = mt * 16, l0 = lt * 16;
            if (twoM && twoL) block<Op, 2, 2>(a, rowBytes, B, KC, chunks, m0, l0, drain, bounce);
            else if (twoM) block<Op, 2, 1>(a, rowBytes, B, KC, chunks, m0, l0, drain, bounce);
            else if (twoL) block<Op, 1, 2>(a, rowBytes, B, KC, chunks, m0, l0, drain, bounce);
            else block<Op, 1, 1>(a, rowBytes, B, KC, chunks, m0, l0, drain, bounce);
        }
    }
    _tile_release();
}

} // namespace amx_runs
} // namespace
} // namespace quantscope
