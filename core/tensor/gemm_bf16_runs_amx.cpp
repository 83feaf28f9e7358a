// AMX-BF16 path of a convolution's products on its runs (gemmBf16Runs, tensor/gemm_bf16.h):
// TDPBF16PS in the shared tile loop (amx_runs_kernel.h); the FP32 tiles leave through the bounce
// buffer. Headers before the target pragma except amx_runs_kernel.h (internal-linkage templates).
#include "tensor/conv_runs.h"
#include "tensor/gemm_bf16.h"
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")
#endif

#include "tensor/amx_runs_kernel.h"

namespace quantscope::bf16detail {

namespace {

struct DpBf16 {
    template <int C>
    static void dp()
    {
        if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
        else if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
        else if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
        else _tile_dpbf16ps(3, 5, 7);
    }
};

// out = C, clipped to M x L.
struct Store {
    float* out;
    std::size_t ldo, M, L;

    void operator()(const void* bounce, std::size_t m0, std::size_t l0) const
    {
        if (m0 >= M || l0 >= L) return;
        const auto* c = static_cast<const float*>(bounce);
        const std::size_t rows = M - m0 < 16 ? M - m0 : 16, cols = L - l0 < 16 ? L - l0 : 16;
        const __mmask16 k = cols == 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1u);
        for (std::size_t r = 0; r < rows; ++r) {
            QS_SANITIZER_ONLY(sanitizer::maskedWrite(out + (m0 + r) * ldo + l0, k, 4));
            _mm512_mask_storeu_ps(out + (m0 + r) * ldo + l0, k, _mm512_load_ps(c + 16 * r));
        }
    }
};

} // namespace

void gemmRunsAmx(const std::uint16_t* A, std::size_t M, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo)
{
    Store drain{out, ldo, M, L};
    amx_runs::gemm<DpBf16>(reinterpret_cast<const std::uint8_t*>(A), M, B, L, drain);
}

namespace {

// dW^T tiles: C tile (16 channels at one tap) x (16 output channels), reduced over all P pairs:
// A = 16 channels' x runs at the tap (32 positions a row), B = 16 pairs x 16 output channels.
template <int TM, int TN>
void gradBlock(const WeightGradRuns& a, std::size_t t, std::size_t c0, std::size_t o0, float* dW, float* bounce)
{
    _tile_zero(0);
    if constexpr (TN == 2) _tile_zero(1);
    if constexpr (TM == 2) _tile_zero(2);
    if constexpr (TM == 2 && TN == 2) _tile_zero(3);
    const long strideA = static_cast<long>(a.channelStride), strideB = static_cast<long>(4 * a.Op);
    const std::uint8_t* x = reinterpret_cast<const std::uint8_t*>(a.x) + c0 * a.channelStride + 2 * a.tapOffset[t];
    const std::uint8_t* d = reinterpret_cast<const std::uint8_t*>(a.dyPairs) + 4 * o0;
    for (std::size_t p0 = 0; p0 < a.P; p0 += 16) {
        amx_runs::tileRead(x + 4 * p0, strideA, 16, 64);
        _tile_loadd(4, x + 4 * p0, strideA);
        amx_runs::tileRead(d + 4 * p0 * a.Op, strideB, 16, 64);
        _tile_loadd(6, d + 4 * p0 * a.Op, strideB);
        _tile_dpbf16ps(0, 4, 6);
        if constexpr (TN == 2) {
            amx_runs::tileRead(d + 4 * p0 * a.Op + 64, strideB, 16, 64);
            _tile_loadd(7, d + 4 * p0 * a.Op + 64, strideB);
            _tile_dpbf16ps(1, 4, 7);
        }
        if constexpr (TM == 2) {
            amx_runs::tileRead(x + 16 * a.channelStride + 4 * p0, strideA, 16, 64);
            _tile_loadd(5, x + 16 * a.channelStride + 4 * p0, strideA);
            _tile_dpbf16ps(2, 5, 6);
            if constexpr (TN == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
    // C tile (r, q): channels c0 + 16 r.., output channels o0 + 16 q.. -> dW[(o C + c) taps + t].
    const auto drain = [&](std::size_t cb, std::size_t ob) {
        amx_runs::barrier();
        for (std::size_t i = 0; i < 16; ++i)
            for (std::size_t j = 0; j < 16 && ob + j < a.O; ++j) dW[((ob + j) * a.C + cb + i) * a.taps + t] += bounce[16 * i + j];
    };
    _tile_stored(0, bounce, 64);
    drain(c0, o0);
    if constexpr (TN == 2) {
        _tile_stored(1, bounce, 64);
        drain(c0, o0 + 16);
    }
    if constexpr (TM == 2) {
        _tile_stored(2, bounce, 64);
        drain(c0 + 16, o0);
    }
    if constexpr (TM == 2 && TN == 2) {
        _tile_stored(3, bounce, 64);
        drain(c0 + 16, o0 + 16);
    }
}

} // namespace

void weightGradRunsAmx(const WeightGradRuns& a, float* dW)
{
    amx_runs::TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    alignas(64) float bounce[16 * 16];
    const std::size_t cTiles = a.C / 16, oTiles = a.Op / 16;
    for (std::size_t t = 0; t < a.taps; ++t)
        for (std::size_t ct = 0; ct < cTiles; ct += 2)
            for (std::size_t ot = 0; ot < oTiles; ot += 2) {
                const bool twoC = cTiles - ct >= 2, twoO = oTiles - ot >= 2;
                if (twoC && twoO) gradBlock<2, 2>(a, t, 16 * ct, 16 * ot, dW, bounce);
                else if (twoC) gradBlock<2, 1>(a, t, 16 * ct, 16 * ot, dW, bounce);
                else if (twoO) gradBlock<1, 2>(a, t, 16 * ct, 16 * ot, dW, bounce);
                else gradBlock<1, 1>(a, t, 16 * ct, 16 * ot, dW, bounce);
            }
    _tile_release();
}

} // namespace quantscope::bf16detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
