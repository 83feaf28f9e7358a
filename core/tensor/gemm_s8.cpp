// Dispatch, packing and the scalar twins of the int8 products (tensor/gemm_s8.h). The VNNI kernel
// is in gemm_s8_avx512.cpp.
#include "tensor/gemm_s8.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace quantscope {

namespace s8detail {
// gemm_s8_avx512.cpp (call only when s8ProductsAvailable()).
void gemmRowsVnni(const std::int8_t* A, std::size_t M, std::size_t K4, const std::uint8_t* const* rows, std::size_t L,
                  const float* scale, const std::int32_t* corr, float* out, std::size_t ldo);
bool quantizeInterleave4Avx512(const float* const src[4], std::size_t n, float scale, float inv, std::int32_t zero,
                               std::uint8_t* dst);
} // namespace s8detail

namespace {

bool cpuHasVnni()
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

// The check both twins apply to one value: returns the code, or -1 when x is off the grid.
inline int codeOf(float x, float scale, float inv, std::int32_t zero)
{
    const float r = std::nearbyint(x * inv);
    if (!(std::fabs(r) <= 512.0f)) return -1; // NaN, or far outside any 8-bit grid
    const int u = static_cast<int>(r) + zero;
    if (u < 0 || u > 255) return -1;
    const float residual = std::fabs(std::fma(-r, scale, x));
    return residual <= 1e-4f * scale ? u : -1;
}

} // namespace

bool s8ProductsAvailable()
{
    static const bool ok = [] {
        const char* env = std::getenv("QS_INT8_PRODUCTS");
        if (env && std::strcmp(env, "0") == 0) return false;
        return cpuHasVnni();
    }();
    return ok;
}

void packS8A(const std::int8_t* A, std::size_t M, std::size_t K4, PackedS8A& out)
{
    const std::size_t blocks = (M + 7) / 8;
    out.M = M;
    out.K4 = K4;
    out.data.assign(blocks * K4 * 32, 0);
    for (std::size_t m = 0; m < M; ++m) {
        std::int8_t* block = out.data.data() + (m / 8) * K4 * 32 + (m % 8) * 4;
        for (std::size_t g = 0; g < K4; ++g) std::memcpy(block + g * 32, A + m * 4 * K4 + 4 * g, 4);
    }
}

void gemmS8Rows(const PackedS8A& A, const std::uint8_t* const* rows, std::size_t L, const float* scale,
                const std::int32_t* corr, float* out, std::size_t ldo)
{
    if (!s8ProductsAvailable()) throw std::logic_error("gemmS8Rows: this CPU has no AVX512_VNNI");
    s8detail::gemmRowsVnni(A.data.data(), A.M, A.K4, rows, L, scale, corr, out, ldo);
}

void gemmS8RowsRef(const PackedS8A& A, const std::uint8_t* const* rows, std::size_t L, const float* scale,
                   const std::int32_t* corr, float* out, std::size_t ldo)
{
    for (std::size_t m = 0; m < A.M; ++m) {
        const std::int8_t* a = A.data.data() + (m / 8) * A.K4 * 32 + (m % 8) * 4;
        for (std::size_t l = 0; l < L; ++l) {
            std::int32_t acc = 0;
            for (std::size_t g = 0; g < A.K4; ++g)
                for (std::size_t j = 0; j < 4; ++j) acc += std::int32_t{a[g * 32 + j]} * std::int32_t{rows[g][4 * l + j]};
            out[m * ldo + l] = static_cast<float>(acc + corr[m]) * scale[m];
        }
    }
}

bool quantizeInterleave4(const float* const src[4], std::size_t n, const U8Grid& grid, std::uint8_t* dst)
{
    if (grid.zero < 0 || grid.zero > 255 || !(grid.scale > 0.0f) || !std::isfinite(grid.scale)) return false;
    if (s8ProductsAvailable())
        return s8detail::quantizeInterleave4Avx512(src, n, grid.scale, 1.0f / grid.scale, grid.zero, dst);
    return quantizeInterleave4Ref(src, n, grid, dst);
}

bool quantizeInterleave4Ref(const float* const src[4], std::size_t n, const U8Grid& grid, std::uint8_t* dst)
{
    if (grid.zero < 0 || grid.zero > 255 || !(grid.scale > 0.0f) || !std::isfinite(grid.scale)) return false;
    const float inv = 1.0f / grid.scale;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < 4; ++j) {
            int u = grid.zero;
            if (src[j]) u = codeOf(src[j][i], grid.scale, inv, grid.zero);
            if (u < 0) return false;
            dst[4 * i + j] = static_cast<std::uint8_t>(u);
        }
    return true;
}

} // namespace quantscope
