// AMX-BF16 path of the bf16 GEMM: TDPBF16PS on 16 x 16 FP32 accumulator tiles. Tiles: 0-3 hold a
// 2 x 2 block of C (32 rows x 32 columns), 4-5 two A tiles (16 rows x 32 bf16), 6-7 two B tiles
// (16 pair rows x 16 columns, the panel layout of gemm_bf16_kernels.h). One TDPBF16PS is
// 16 x 16 x 32 multiply-adds. A and B are packed (and rounded) by the AVX-512 packers; K is
// padded to a multiple of 32 and M to a multiple of 16 with zeros.
// The tile intrinsics are inline asm without memory operands, hence the explicit compiler
// barriers around the C tiles' bounce buffer.
#include "tensor/gemm_bf16_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")
#endif

#include "tensor/amx_runs_kernel.h" // its TileConfig and barrier (internal-linkage templates and types)

namespace quantscope::bf16detail {

namespace {

using amx_runs::barrier;
using amx_runs::TileConfig;
using amx_runs::tileRead;
using amx_runs::tileWrite;

// A C tile at (m0, n0): whole when 16 rows and 16 columns lie inside C, else through `bounce`.
struct CTile {
    float* c;
    std::size_t ldc, rows, cols;
    bool whole() const { return rows == 16 && cols == 16; }
};

inline void fillBounce(const CTile& t, float* bounce, bool load)
{
    for (std::size_t r = 0; r < 16; ++r) {
        float* dst = bounce + r * 16;
        if (load && r < t.rows) {
            std::memcpy(dst, t.c + r * t.ldc, t.cols * sizeof(float));
            std::memset(dst + t.cols, 0, (16 - t.cols) * sizeof(float));
        } else {
            std::memset(dst, 0, 16 * sizeof(float));
        }
    }
    barrier();
}

inline void drainBounce(const CTile& t, const float* bounce)
{
    barrier();
    for (std::size_t r = 0; r < t.rows; ++r) std::memcpy(t.c + r * t.ldc, bounce + r * 16, t.cols * sizeof(float));
}

#define QS_LOAD_C(T, tile, bounce, load)                                                                               \
    do {                                                                                                               \
        if ((tile).whole() && (load)) {                                                                                \
            tileRead((tile).c, static_cast<long>((tile).ldc * sizeof(float)), 16, 64);                                 \
            _tile_loadd(T, (tile).c, static_cast<long>((tile).ldc * sizeof(float)));                                   \
        } else if ((tile).whole() || !(load)) {                                                                        \
            _tile_zero(T);                                                                                             \
        } else {                                                                                                       \
            fillBounce(tile, bounce, true);                                                                            \
            _tile_loadd(T, bounce, 64);                                                                                \
        }                                                                                                              \
    } while (0)

#define QS_STORE_C(T, tile, bounce)                                                                                    \
    do {                                                                                                               \
        if ((tile).whole()) {                                                                                          \
            tileWrite((tile).c, static_cast<long>((tile).ldc * sizeof(float)), 16, 64);                                \
            _tile_stored(T, (tile).c, static_cast<long>((tile).ldc * sizeof(float)));                                  \
        } else {                                                                                                       \
            _tile_stored(T, bounce, 64);                                                                               \
            drainBounce(tile, bounce);                                                                                 \
        }                                                                                                              \
    } while (0)

// A block of TM x TN C tiles (TM, TN in {1, 2}) over all of K.
template <int TM, int TN>
void block(const std::uint32_t* a, std::size_t Kp2, const std::uint32_t* b, std::size_t panelStride, std::size_t ksteps,
           const CTile (&ct)[2][2], bool load, float* bounce)
{
    barrier(); // C stores of the previous block are done before tileloadd reads C
    QS_LOAD_C(0, ct[0][0], bounce, load);
    if constexpr (TN == 2) QS_LOAD_C(1, ct[0][1], bounce, load);
    if constexpr (TM == 2) QS_LOAD_C(2, ct[1][0], bounce, load);
    if constexpr (TM == 2 && TN == 2) QS_LOAD_C(3, ct[1][1], bounce, load);
    const long strideA = static_cast<long>(Kp2 * sizeof(std::uint32_t));
    for (std::size_t s = 0; s < ksteps; ++s) {
        tileRead(a + 16 * s, strideA, 16, 64);
        _tile_loadd(4, a + 16 * s, strideA);
        tileRead(b + 256 * s, 64, 16, 64);
        _tile_loadd(6, b + 256 * s, 64);
        _tile_dpbf16ps(0, 4, 6);
        if constexpr (TN == 2) {
            tileRead(b + panelStride + 256 * s, 64, 16, 64);
            _tile_loadd(7, b + panelStride + 256 * s, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        if constexpr (TM == 2) {
            tileRead(a + 16 * Kp2 + 16 * s, strideA, 16, 64);
            _tile_loadd(5, a + 16 * Kp2 + 16 * s, strideA);
            _tile_dpbf16ps(2, 5, 6);
            if constexpr (TN == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
    QS_STORE_C(0, ct[0][0], bounce);
    if constexpr (TN == 2) QS_STORE_C(1, ct[0][1], bounce);
    if constexpr (TM == 2) QS_STORE_C(2, ct[1][0], bounce);
    if constexpr (TM == 2 && TN == 2) QS_STORE_C(3, ct[1][1], bounce);
}

#undef QS_LOAD_C
#undef QS_STORE_C

} // namespace

void multiplyAmx(const std::uint32_t* pa, std::size_t Kp2, const GemmBf16Args& g)
{
    const std::size_t panels = (g.N + 15) / 16;
    std::uint32_t* pb = scratchB(panels * Kp2 * 16);
    packB(g.transB, g.K, g.N, g.B, g.ldb, pb, Kp2);
    kernelAmx(pa, pb, Kp2, g.M, g.N, g.C, g.ldc, g.accumulate);
}

void kernelAmx(const std::uint32_t* pa, const std::uint32_t* pb, std::size_t Kp2, std::size_t M, std::size_t N, float* C,
               std::size_t ldc, bool accumulate)
{
    const std::size_t ksteps = Kp2 / 16;
    const std::size_t mTiles = (M + 15) / 16;
    const std::size_t panels = (N + 15) / 16;

    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    alignas(64) float bounce[16 * 16];
    const std::size_t panelStride = Kp2 * 16;
    // Two panels of B (2 x Kp2 x 64 bytes) stay in L1/L2 while all row tiles of A pass over them.
    for (std::size_t j = 0; j < panels; j += 2) {
        const int tn = panels - j >= 2 ? 2 : 1;
        for (std::size_t i = 0; i < mTiles; i += 2) {
            const int tm = mTiles - i >= 2 ? 2 : 1;
            CTile ct[2][2];
            for (int r = 0; r < 2; ++r)
                for (int c = 0; c < 2; ++c) {
                    const std::size_t m0 = (i + r) * 16, n0 = (j + c) * 16;
                    ct[r][c] = {C + m0 * ldc + n0, ldc, m0 < M ? std::min<std::size_t>(16, M - m0) : 0,
                                n0 < N ? std::min<std::size_t>(16, N - n0) : 0};
                }
            const std::uint32_t* a = pa + i * 16 * Kp2;
            const std::uint32_t* b = pb + j * panelStride;
            if (tm == 2 && tn == 2)
                block<2, 2>(a, Kp2, b, panelStride, ksteps, ct, accumulate, bounce);
            else if (tm == 2)
                block<2, 1>(a, Kp2, b, panelStride, ksteps, ct, accumulate, bounce);
            else if (tn == 2)
                block<1, 2>(a, Kp2, b, panelStride, ksteps, ct, accumulate, bounce);
            else
                block<1, 1>(a, Kp2, b, panelStride, ksteps, ct, accumulate, bounce);
        }
    }
    _tile_release();
}

} // namespace quantscope::bf16detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
