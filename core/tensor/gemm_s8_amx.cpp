// AMX-INT8 path of the int8 products (tensor/gemm_s8.h): TDPBSUD (signed A x unsigned B, int32
// accumulation) in the shared tile loop over the runs (amx_runs_kernel.h); the int32 tiles leave
// through the bounce buffer into an AVX-512 epilogue (+ corr, x scale). Headers before the target
// pragma except amx_runs_kernel.h, whose templates have internal linkage.
#include "tensor/gemm_s8.h"
#include "tensor/sanitizer_access.h"

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")
#endif

#include "tensor/amx_runs_kernel.h"

namespace quantscope::s8detail {

namespace {

struct DpBsud {
    template <int C>
    static void dp()
    {
        if constexpr (C == 0) _tile_dpbsud(0, 4, 6);
        else if constexpr (C == 1) _tile_dpbsud(1, 4, 7);
        else if constexpr (C == 2) _tile_dpbsud(2, 5, 6);
        else _tile_dpbsud(3, 5, 7);
    }
};

// out = float(C + corr[m]) * scale[m], clipped to M x L.
struct Dequantize {
    const float* scale;
    const std::int32_t* corr;
    float* out;
    std::size_t ldo, M, L;

    void operator()(const void* bounce, std::size_t m0, std::size_t l0) const
    {
        if (m0 >= M || l0 >= L) return;
        const auto* c = static_cast<const std::int32_t*>(bounce);
        const std::size_t rows = M - m0 < 16 ? M - m0 : 16, cols = L - l0 < 16 ? L - l0 : 16;
        const __mmask16 k = cols == 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1u);
        for (std::size_t r = 0; r < rows; ++r) {
            const std::size_t m = m0 + r;
            const __m512i acc = _mm512_add_epi32(_mm512_load_si512(c + 16 * r), _mm512_set1_epi32(corr[m]));
            QS_SANITIZER_ONLY(sanitizer::maskedWrite(out + m * ldo + l0, k, 4));
            _mm512_mask_storeu_ps(out + m * ldo + l0, k, _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(scale[m])));
        }
    }
};

} // namespace

void gemmRunsAmx(const std::int8_t* A, std::size_t M, const ConvRuns& B, std::size_t L, const float* scale,
                 const std::int32_t* corr, float* out, std::size_t ldo)
{
    Dequantize drain{scale, corr, out, ldo, M, L};
    amx_runs::gemm<DpBsud>(reinterpret_cast<const std::uint8_t*>(A), M, B, L, drain);
}

} // namespace quantscope::s8detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
