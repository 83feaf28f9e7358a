// AMX-BF16 path of a convolution's products on its runs (gemmBf16Runs, tensor/gemm_bf16.h):
// TDPBF16PS in the shared tile loop (amx_runs_kernel.h); the FP32 tiles leave through the bounce
// buffer. Headers before the target pragma except amx_runs_kernel.h (internal-linkage templates).
#include "tensor/conv_runs.h"

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
        for (std::size_t r = 0; r < rows; ++r) _mm512_mask_storeu_ps(out + (m0 + r) * ldo + l0, k, _mm512_load_ps(c + 16 * r));
    }
};

} // namespace

void gemmRunsAmx(const std::uint16_t* A, std::size_t M, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo)
{
    Store drain{out, ldo, M, L};
    amx_runs::gemm<DpBf16>(reinterpret_cast<const std::uint8_t*>(A), M, B, L, drain);
}

} // namespace quantscope::bf16detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
