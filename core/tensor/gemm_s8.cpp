// Dispatch, packing and the scalar twins of the int8 products (tensor/gemm_s8.h). The kernels are
// in gemm_s8_avx512.cpp (VNNI, and the quantizer) and gemm_s8_amx.cpp (AMX-INT8).
#include "tensor/gemm_s8.h"

#include "tensor/cpu_features.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace quantscope {

namespace s8detail {
// Call only where the path is supported. rows: K4 row pointers (VNNI), or the runs (AMX).
void gemmRowsVnni(const std::int8_t* A, std::size_t M, std::size_t K4, const std::uint8_t* const* rows, std::size_t L,
                  const float* scale, const std::int32_t* corr, float* out, std::size_t ldo);
void gemmRunsAmx(const std::int8_t* A, std::size_t M, const ConvRuns& B, std::size_t L, const float* scale,
                 const std::int32_t* corr, float* out, std::size_t ldo);
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

// The check both quantizer twins apply to one value: the code, or -1 when x is off the grid.
inline int codeOf(float x, float scale, float inv, std::int32_t zero)
{
    const float r = std::nearbyint(x * inv);
    if (!(std::fabs(r) <= 512.0f)) return -1; // NaN, or far outside any 8-bit grid
    const int u = static_cast<int>(r) + zero;
    if (u < 0 || u > 255) return -1;
    const float residual = std::fabs(std::fma(-r, scale, x));
    return residual <= 1e-4f * scale ? u : -1;
}

bool validGrid(const U8Grid& g) { return g.zero >= 0 && g.zero <= 255 && g.scale > 0.0f && std::isfinite(g.scale); }

} // namespace

const char* s8PathName(S8Path path)
{
    switch (path) {
    case S8Path::Avx512Vnni: return "avx512-vnni";
    case S8Path::AmxInt8: return "amx-int8";
    case S8Path::None: break;
    }
    return "none";
}

bool s8PathSupported(S8Path path)
{
    static const bool vnni = cpuHasVnni();
    switch (path) {
    case S8Path::None: return true;
    case S8Path::Avx512Vnni: return vnni;
    // The AMX path's epilogue and the quantizer are AVX-512 code.
    case S8Path::AmxInt8: return vnni && cpuHasAmxInt8() && amxTileDataPermitted();
    }
    return false;
}

S8Path bestS8Path()
{
    static const S8Path best = [] {
        const char* env = std::getenv("QS_INT8_PRODUCTS");
        const std::string want = env ? env : "auto";
        if (want == "0" || want == "none") return S8Path::None;
        if (want == "vnni") return s8PathSupported(S8Path::Avx512Vnni) ? S8Path::Avx512Vnni : S8Path::None;
        if (s8PathSupported(S8Path::AmxInt8)) return S8Path::AmxInt8;
        return s8PathSupported(S8Path::Avx512Vnni) ? S8Path::Avx512Vnni : S8Path::None;
    }();
    return best;
}

void packS8A(S8Path path, const std::int8_t* A, std::size_t M, std::size_t K4, PackedS8A& out)
{
    out.path = path;
    out.M = M;
    out.K4 = K4;
    if (path == S8Path::Avx512Vnni) {
        const std::size_t blocks = (M + 7) / 8;
        out.data.assign(blocks * K4 * 32, 0);
        for (std::size_t m = 0; m < M; ++m) {
            std::int8_t* block = out.data.data() + (m / 8) * K4 * 32 + (m % 8) * 4;
            for (std::size_t g = 0; g < K4; ++g) std::memcpy(block + g * 32, A + m * 4 * K4 + 4 * g, 4);
        }
        return;
    }
    const std::size_t rows = path == S8Path::AmxInt8 ? (M + 15) / 16 * 16 : M;
    out.data.assign(rows * 4 * K4, 0);
    if (M) std::memcpy(out.data.data(), A, M * 4 * K4);
}

namespace {

// Code of A's row m, k-group g, byte j in any packing.
inline std::int32_t codeAt(const PackedS8A& A, std::size_t m, std::size_t g, std::size_t j)
{
    if (A.path == S8Path::Avx512Vnni) return A.data[(m / 8) * A.K4 * 32 + g * 32 + (m % 8) * 4 + j];
    return A.data[m * 4 * A.K4 + 4 * g + j];
}

} // namespace

void gemmConvRuns(const PackedS8A& A, const ConvRuns& B, std::size_t L, const float* scale, const std::int32_t* corr,
                float* out, std::size_t ldo)
{
    if (A.path == S8Path::None || !s8PathSupported(A.path))
        throw std::logic_error(std::string("gemmConvRuns: path ") + s8PathName(A.path) + " does not run on this CPU");
    if (A.K4 != B.taps * B.groups) throw std::logic_error("gemmConvRuns: A's depth is not B's taps x groups");
    if (A.path == S8Path::AmxInt8) {
        s8detail::gemmRunsAmx(A.data.data(), A.M, B, L, scale, corr, out, ldo);
        return;
    }
    static thread_local std::vector<const std::uint8_t*> rows;
    rows.resize(A.K4);
    for (std::size_t g = 0; g < A.K4; ++g) rows[g] = B.row(g);
    s8detail::gemmRowsVnni(A.data.data(), A.M, A.K4, rows.data(), L, scale, corr, out, ldo);
}

void gemmConvRunsRef(const PackedS8A& A, const ConvRuns& B, std::size_t L, const float* scale, const std::int32_t* corr,
                   float* out, std::size_t ldo)
{
    for (std::size_t m = 0; m < A.M; ++m)
        for (std::size_t l = 0; l < L; ++l) {
            std::int32_t acc = 0;
            for (std::size_t g = 0; g < A.K4; ++g) {
                const std::uint8_t* b = B.row(g) + 4 * l;
                for (std::size_t j = 0; j < 4; ++j) acc += codeAt(A, m, g, j) * std::int32_t{b[j]};
            }
            out[m * ldo + l] = static_cast<float>(acc + corr[m]) * scale[m];
        }
}

bool quantizeInterleave4(const float* const src[4], std::size_t n, const U8Grid& grid, std::uint8_t* dst)
{
    if (!validGrid(grid)) return false;
    if (s8PathSupported(S8Path::Avx512Vnni))
        return s8detail::quantizeInterleave4Avx512(src, n, grid.scale, 1.0f / grid.scale, grid.zero, dst);
    return quantizeInterleave4Ref(src, n, grid, dst);
}

bool quantizeInterleave4Ref(const float* const src[4], std::size_t n, const U8Grid& grid, std::uint8_t* dst)
{
    if (!validGrid(grid)) return false;
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
