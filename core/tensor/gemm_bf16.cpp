// Dispatch, argument checks, the scalar twin and the emulated path of the bf16 GEMM.
#include "tensor/gemm_bf16.h"

#include "tensor/bf16.h"
#include "tensor/cpu_features.h"
#include "tensor/gemm_bf16_kernels.h"
#include "tensor/parallel.h"
#include "tensor/tensor.h"
#include "util/errors.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <vector>

namespace quantscope {

namespace {

bool avx512Bf16Cpu()
{
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    }();
    return has;
}

// aPacked: A was packed already (gemmBf16Packed), only B and C are checked.
void checkArgs(const GemmBf16Args& g, bool aPacked = false)
{
    const auto need = [](std::size_t ld, std::size_t row, const char* name) {
        if (ld < row)
            throw ConfigError(std::string("gemmBf16: leading dimension ") + name + " = " + std::to_string(ld) +
                              " is smaller than its rows (" + std::to_string(row) + ")");
    };
    if (!aPacked && g.M && g.K) need(g.lda, g.transA ? g.M : g.K, "lda");
    if (g.K && g.N) need(g.ldb, g.transB ? g.K : g.N, "ldb");
    if (g.M && g.N) need(g.ldc, g.N, "ldc");
    const bool product = g.M && g.N && g.K;
    if ((product && ((!aPacked && !g.A) || !g.B)) || (g.M && g.N && !g.C)) throw ConfigError("gemmBf16: null matrix");
}

inline float opA(const GemmBf16Args& g, std::size_t m, std::size_t k) { return g.transA ? g.A[k * g.lda + m] : g.A[m * g.lda + k]; }
inline float opB(const GemmBf16Args& g, std::size_t k, std::size_t n) { return g.transB ? g.B[n * g.ldb + k] : g.B[k * g.ldb + n]; }

// op(A) rounded, M x K row-major, into `out`.
void roundA(const GemmBf16Args& g, float* out)
{
    for (std::size_t m = 0; m < g.M; ++m)
        for (std::size_t k = 0; k < g.K; ++k) out[m * g.K + k] = roundBf16(opA(g, m, k));
}

// C (M x N) (+)= a (M x K) * b (K x N), both already rounded, in FP32 with Eigen.
void eigenProduct(const float* a, const float* b, std::size_t M, std::size_t N, std::size_t K, float* C, std::size_t ldc,
                  bool accumulate)
{
    using Idx = Eigen::Index;
    ConstMatrixMap Am(a, static_cast<Idx>(M), static_cast<Idx>(K));
    ConstMatrixMap Bm(b, static_cast<Idx>(K), static_cast<Idx>(N));
    Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> Cm(C, static_cast<Idx>(M), static_cast<Idx>(N),
                                                      Eigen::OuterStride<>(static_cast<Idx>(ldc)));
    if (accumulate)
        Cm.noalias() += Am * Bm;
    else
        Cm.noalias() = Am * Bm;
}

// The emulated path: op(B) rounded into an FP32 copy, then Eigen's FP32 GEMM with the rounded A.
void multiplyEmulated(const float* a, const GemmBf16Args& g)
{
    thread_local std::vector<float> b;
    b.resize(g.K * g.N);
    for (std::size_t k = 0; k < g.K; ++k)
        for (std::size_t n = 0; n < g.N; ++n) b[k * g.N + n] = roundBf16(opB(g, k, n));
    eigenProduct(a, b.data(), g.M, g.N, g.K, g.C, g.ldc, g.accumulate);
}

struct ConvGeometry {
    std::size_t C, H, W, k, stride, pad, Ho, Wo;
};

// The tables of bf16detail::packBIm2col for g, kept per thread while the geometry repeats (every
// image of a batch, every batch of a layer).
bf16detail::Im2colPlan im2colPlan(const ConvGeometry& g)
{
    struct Tables {
        std::size_t H = 0, W = 0, k = 0, stride = 0, pad = 0;
        std::vector<std::int32_t> pix, tapOffset;
        std::vector<std::uint16_t> valid;
    };
    thread_local Tables t;
    const std::size_t N = g.Ho * g.Wo, kk = g.k * g.k, panels = (N + 15) / 16;
    if (!(t.H == g.H && t.W == g.W && t.k == g.k && t.stride == g.stride && t.pad == g.pad && !t.tapOffset.empty())) {
        t.H = g.H, t.W = g.W, t.k = g.k, t.stride = g.stride, t.pad = g.pad;
        t.pix.assign((N + 31) / 32 * 32, 0); // packBIm2colT reads 32 pixels at a time
        t.valid.assign(kk * panels, 0);
        t.tapOffset.resize(kk);
        for (std::size_t tap = 0; tap < kk; ++tap)
            t.tapOffset[tap] = static_cast<std::int32_t>((static_cast<long>(tap / g.k) - static_cast<long>(g.pad)) * static_cast<long>(g.W) +
                                                         static_cast<long>(tap % g.k) - static_cast<long>(g.pad));
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t oy = n / g.Wo, ox = n % g.Wo;
            t.pix[n] = static_cast<std::int32_t>(oy * g.stride * g.W + ox * g.stride);
            for (std::size_t tap = 0; tap < kk; ++tap) {
                const long iy = static_cast<long>(oy * g.stride + tap / g.k) - static_cast<long>(g.pad);
                const long ix = static_cast<long>(ox * g.stride + tap % g.k) - static_cast<long>(g.pad);
                if (iy >= 0 && iy < static_cast<long>(g.H) && ix >= 0 && ix < static_cast<long>(g.W))
                    t.valid[tap * panels + n / 16] = static_cast<std::uint16_t>(t.valid[tap * panels + n / 16] | (1u << (n % 16)));
            }
        }
    }
    return {N, kk, g.H * g.W, g.stride == 1 && g.Wo == g.W, t.pix.data(), t.tapOffset.data(), t.valid.data()};
}

// Row (c, ky, kx) of im2col(x) into out (Ho Wo values), as nn's im2col writes it:
// out[(oy, ox)] = x[c, oy s + ky - pad, ox s + kx - pad], 0 outside the image.
void im2colRow(const float* x, const ConvGeometry& g, std::size_t row, float* out)
{
    const std::size_t c = row / (g.k * g.k), ky = row / g.k % g.k, kx = row % g.k;
    const long off = static_cast<long>(kx) - static_cast<long>(g.pad);
    // Output columns [lo, hi) read inside the image: 0 <= ox s + off < W.
    const long s = static_cast<long>(g.stride), Wo = static_cast<long>(g.Wo);
    const long lo = std::min(Wo, off < 0 ? (-off + s - 1) / s : 0L);
    const long hi = std::max(lo, std::min(Wo, (static_cast<long>(g.W) - off + s - 1) / s));
    for (std::size_t oy = 0; oy < g.Ho; ++oy) {
        float* __restrict o = out + oy * g.Wo;
        const long iy = static_cast<long>(oy * g.stride + ky) - static_cast<long>(g.pad);
        if (iy < 0 || iy >= static_cast<long>(g.H)) {
            for (long ox = 0; ox < Wo; ++ox) o[ox] = 0.0f;
            continue;
        }
        const float* __restrict in = x + (c * g.H + static_cast<std::size_t>(iy)) * g.W + off; // in[ox s] for ox in [lo, hi)
        for (long ox = 0; ox < lo; ++ox) o[ox] = 0.0f;
        if (s == 1)
            for (long ox = lo; ox < hi; ++ox) o[ox] = in[ox];
        else
            for (long ox = lo; ox < hi; ++ox) o[ox] = in[ox * s];
        for (long ox = hi; ox < Wo; ++ox) o[ox] = 0.0f;
    }
}

void requireSupported(Bf16Path path)
{
    if (!bf16PathSupported(path)) throw ConfigError("this CPU cannot run the " + std::string(bf16PathName(path)) + " bf16 GEMM");
}

// K == 0 or an empty C: nothing to multiply. Returns true when it handled the call.
bool trivial(const GemmBf16Args& g)
{
    if (g.M == 0 || g.N == 0) return true;
    if (g.K != 0) return false;
    if (!g.accumulate)
        for (std::size_t m = 0; m < g.M; ++m) std::memset(g.C + m * g.ldc, 0, g.N * sizeof(float));
    return true;
}

struct AlignedFree {
    void operator()(std::uint32_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
};

std::uint32_t* scratch(std::unique_ptr<std::uint32_t[], AlignedFree>& buf, std::size_t& cap, std::size_t n)
{
    if (n > cap) {
        buf.reset(static_cast<std::uint32_t*>(::operator new[](n * sizeof(std::uint32_t), std::align_val_t{64})));
        cap = n;
    }
    return buf.get();
}

} // namespace

namespace bf16detail {
std::uint32_t* scratchA(std::size_t n)
{
    thread_local std::unique_ptr<std::uint32_t[], AlignedFree> buf;
    thread_local std::size_t cap = 0;
    return scratch(buf, cap, n);
}
std::uint32_t* scratchB(std::size_t n)
{
    thread_local std::unique_ptr<std::uint32_t[], AlignedFree> buf;
    thread_local std::size_t cap = 0;
    return scratch(buf, cap, n);
}
} // namespace bf16detail

const char* bf16PathName(Bf16Path path)
{
    switch (path) {
    case Bf16Path::Emulated: return "emulated";
    case Bf16Path::Avx512Bf16: return "avx512-bf16";
    case Bf16Path::AmxBf16: return "amx-bf16";
    }
    return "?";
}

bool bf16PathSupported(Bf16Path path)
{
    switch (path) {
    case Bf16Path::Emulated: return true;
    case Bf16Path::Avx512Bf16: return avx512Bf16Cpu();
    case Bf16Path::AmxBf16:
        // The AMX path packs with the AVX-512 packers, so it needs AVX512_BF16 as well.
        return avx512Bf16Cpu() && cpuHasAmxBf16() && amxTileDataPermitted();
    }
    return false;
}

Bf16Path parseBf16Path(const std::string& name)
{
    if (name == "auto") {
        for (Bf16Path p : {Bf16Path::AmxBf16, Bf16Path::Avx512Bf16})
            if (bf16PathSupported(p)) return p;
        return Bf16Path::Emulated;
    }
    Bf16Path p;
    if (name == "emulated" || name == "scalar")
        p = Bf16Path::Emulated;
    else if (name == "avx512-bf16" || name == "avx512")
        p = Bf16Path::Avx512Bf16;
    else if (name == "amx-bf16" || name == "amx")
        p = Bf16Path::AmxBf16;
    else
        throw ConfigError("unknown bf16 GEMM path '" + name + "' (known: auto, amx-bf16, avx512-bf16, emulated)");
    if (!bf16PathSupported(p)) throw ConfigError("this CPU cannot run the " + std::string(bf16PathName(p)) + " bf16 GEMM");
    return p;
}

Bf16Path bestBf16Path()
{
    static const Bf16Path best = [] {
        const char* env = std::getenv("QS_BF16_PATH");
        return parseBf16Path(env && *env ? env : "auto");
    }();
    return best;
}

void gemmBf16(const GemmBf16Args& g) { gemmBf16(bestBf16Path(), g); }

void gemmBf16(Bf16Path path, const GemmBf16Args& g)
{
    checkArgs(g);
    if (trivial(g)) return;
    requireSupported(path);
    if (path == Bf16Path::Emulated) {
        thread_local std::vector<float> a;
        a.resize(g.M * g.K);
        roundA(g, a.data());
        multiplyEmulated(a.data(), g);
        return;
    }
    const std::size_t Kp2 = bf16detail::pairsPerRow(path, g.K), Mp = bf16detail::paddedRows(path, g.M);
    std::uint32_t* pa = bf16detail::scratchA(Mp * Kp2);
    bf16detail::packA(g.transA, g.M, g.K, g.A, g.lda, pa, Mp, Kp2);
    if (path == Bf16Path::AmxBf16)
        bf16detail::multiplyAmx(pa, Kp2, g);
    else
        bf16detail::multiplyAvx512(pa, Kp2, g);
}

void packBf16A(PackedBf16A& out, Bf16Path path, bool transA, std::size_t M, std::size_t K, const float* A, std::size_t lda)
{
    GemmBf16Args g;
    g.transA = transA, g.M = M, g.K = K, g.A = A, g.lda = lda, g.N = 0;
    checkArgs(g);
    if (M && K && !A) throw ConfigError("packBf16A: null matrix");
    requireSupported(path);
    out.m_path = path;
    out.m_M = M;
    out.m_K = K;
    if (path == Bf16Path::Emulated) {
        out.m_rounded.resize(M * K);
        roundA(g, out.m_rounded.data());
        return;
    }
    out.m_Kp2 = bf16detail::pairsPerRow(path, K);
    const std::size_t Mp = bf16detail::paddedRows(path, M);
    out.m_pairs.resize(Mp * out.m_Kp2);
    if (!M || !K) return;
    // Blocks of 16 rows (an AMX tile's height) in parallel when A is large: seed-cnn's fc1 packs
    // its 64 x 9216 input here, a step's only pass over it before the products, and a serial pack
    // left the second core idle for it. Rows are independent, so the bits do not depend on the split.
    const std::size_t Kp2 = out.m_Kp2;
    std::uint32_t* dst = out.m_pairs.data();
    constexpr std::size_t kRowBlock = 16;
    if (M * K < (std::size_t{1} << 16) || M <= kRowBlock) {
        bf16detail::packA(transA, M, K, A, lda, dst, Mp, Kp2);
        return;
    }
    parallelChunks(M, kRowBlock, [&](std::size_t r0, std::size_t r1) {
        const float* a = transA ? A + r0 : A + r0 * lda;
        // The last block also zeroes the padding rows [M, Mp).
        const std::size_t padded = r1 == M ? Mp - r0 : r1 - r0;
        bf16detail::packA(transA, r1 - r0, K, a, lda, dst + r0 * Kp2, padded, Kp2);
    });
}

void gemmBf16Packed(const PackedBf16A& a, bool transB, std::size_t N, const float* B, std::size_t ldb, float* C, std::size_t ldc,
                    bool accumulate)
{
    GemmBf16Args g;
    g.transB = transB, g.M = a.m_M, g.N = N, g.K = a.m_K, g.B = B, g.ldb = ldb, g.C = C, g.ldc = ldc, g.accumulate = accumulate;
    checkArgs(g, true);
    if (trivial(g)) return;
    if (a.m_path == Bf16Path::Emulated)
        multiplyEmulated(a.m_rounded.data(), g);
    else if (a.m_path == Bf16Path::AmxBf16)
        bf16detail::multiplyAmx(a.m_pairs.data(), a.m_Kp2, g);
    else
        bf16detail::multiplyAvx512(a.m_pairs.data(), a.m_Kp2, g);
}

namespace {

void packIm2col(Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W, std::size_t k,
                std::size_t stride, std::size_t pad, bool transposed, Bf16Path& outPath, std::size_t& outK, std::size_t& outN,
                std::size_t& outKp2, std::vector<std::uint32_t>& pairs, std::vector<float>& rounded)
{
    if (k == 0 || stride == 0 || H + 2 * pad < k || W + 2 * pad < k)
        throw ConfigError("packBf16Im2col: a " + std::to_string(k) + "x" + std::to_string(k) + " kernel with stride " +
                          std::to_string(stride) + " and padding " + std::to_string(pad) + " does not fit a " +
                          std::to_string(H) + "x" + std::to_string(W) + " image");
    if (C && !x) throw ConfigError("packBf16Im2col: null image");
    if (C * H * W > 0x7FFFFFFFu) throw ConfigError("packBf16Im2col: an image of more than 2^31 values (32-bit offsets)");
    requireSupported(path);
    const ConvGeometry g{C, H, W, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1};
    const std::size_t rows = C * k * k, pixels = g.Ho * g.Wo; // im2col is rows x pixels
    outPath = path;
    outK = transposed ? pixels : rows;
    outN = transposed ? rows : pixels;
    if (path == Bf16Path::Emulated) {
        rounded.resize(rows * pixels);
        thread_local std::vector<float> row;
        row.resize(pixels);
        for (std::size_t r = 0; r < rows; ++r) {
            im2colRow(x, g, r, row.data());
            for (std::size_t n = 0; n < pixels; ++n) {
                const float v = roundBf16(row[n]);
                (transposed ? rounded[n * rows + r] : rounded[r * pixels + n]) = v;
            }
        }
        return;
    }
    outKp2 = bf16detail::pairsPerRow(path, outK);
    pairs.resize((outN + 15) / 16 * outKp2 * 16);
    // Straight from the image: masked loads for stride-1 "same" convolutions, masked gathers
    // otherwise.
    if (transposed)
        bf16detail::packBIm2colT(x, im2colPlan(g), C, pairs.data(), outKp2);
    else
        bf16detail::packBIm2col(x, im2colPlan(g), C, pairs.data(), outKp2);
}

} // namespace

void packBf16Im2col(PackedBf16B& out, Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W, std::size_t k,
                    std::size_t stride, std::size_t pad)
{
    packIm2col(path, x, C, H, W, k, stride, pad, false, out.m_path, out.m_K, out.m_N, out.m_Kp2, out.m_pairs, out.m_rounded);
}

void packBf16Im2colT(PackedBf16B& out, Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W, std::size_t k,
                     std::size_t stride, std::size_t pad)
{
    packIm2col(path, x, C, H, W, k, stride, pad, true, out.m_path, out.m_K, out.m_N, out.m_Kp2, out.m_pairs, out.m_rounded);
}

void gemmBf16PackedAB(const PackedBf16A& a, const PackedBf16B& b, float* C, std::size_t ldc, bool accumulate)
{
    if (a.m_path != b.m_path || a.m_K != b.m_K)
        throw ConfigError(std::string("gemmBf16PackedAB: A packed for ") + bf16PathName(a.m_path) + " with depth " +
                          std::to_string(a.m_K) + ", B for " + bf16PathName(b.m_path) + " with depth " + std::to_string(b.m_K));
    GemmBf16Args g;
    g.M = a.m_M, g.N = b.m_N, g.K = a.m_K, g.C = C, g.ldc = ldc, g.accumulate = accumulate;
    if (g.M && g.N) {
        if (ldc < g.N) throw ConfigError("gemmBf16PackedAB: ldc " + std::to_string(ldc) + " is smaller than N " + std::to_string(g.N));
        if (!C) throw ConfigError("gemmBf16PackedAB: null matrix");
    }
    if (trivial(g)) return;
    if (a.m_path == Bf16Path::Emulated)
        eigenProduct(a.m_rounded.data(), b.m_rounded.data(), g.M, g.N, g.K, C, ldc, accumulate);
    else if (a.m_path == Bf16Path::AmxBf16)
        bf16detail::kernelAmx(a.m_pairs.data(), b.m_pairs.data(), a.m_Kp2, g.M, g.N, C, ldc, accumulate);
    else
        bf16detail::kernelAvx512(a.m_pairs.data(), b.m_pairs.data(), a.m_Kp2, g.M, g.N, C, ldc, accumulate);
}

void gemmBf16Ref(const GemmBf16Args& g)
{
    checkArgs(g);
    for (std::size_t m = 0; m < g.M; ++m)
        for (std::size_t n = 0; n < g.N; ++n) {
            float s = 0.0f;
            for (std::size_t k = 0; k < g.K; ++k) s += roundBf16(opA(g, m, k)) * roundBf16(opB(g, k, n));
            float& c = g.C[m * g.ldc + n];
            c = g.accumulate ? c + s : s;
        }
}

} // namespace quantscope

namespace quantscope {

namespace bf16detail {
void gemmRunsAmx(const std::uint16_t* A, std::size_t M, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo);
void gemmRunsAvx512(const std::uint16_t* A, std::size_t M, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo);
} // namespace bf16detail

void packBf16RunsA(const float* A, std::size_t M, std::size_t K2, PackedBf16Runs& out, Bf16Path path)
{
    if (path == Bf16Path::Emulated) throw std::logic_error("packBf16RunsA: the runs products need a hardware bf16 path");
    out.path = path;
    out.M = M;
    out.K2 = K2;
    out.data.assign((M + 15) / 16 * 16 * 2 * K2, 0);
    for (std::size_t i = 0; i < M * 2 * K2; ++i) out.data[i] = bf16Bits(A[i]);
}

void gemmBf16Runs(const PackedBf16Runs& A, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo)
{
    if (A.path == Bf16Path::Emulated || !bf16PathSupported(A.path))
        throw std::logic_error(std::string("gemmBf16Runs: this CPU cannot run the ") + bf16PathName(A.path) + " path");
    if (A.K2 != B.taps * B.groups) throw std::logic_error("gemmBf16Runs: A's depth is not B's taps x groups");
    if (A.path == Bf16Path::AmxBf16) bf16detail::gemmRunsAmx(A.data.data(), A.M, B, L, out, ldo);
    else bf16detail::gemmRunsAvx512(A.data.data(), A.M, B, L, out, ldo);
}

void gemmBf16RunsRef(const PackedBf16Runs& A, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo)
{
    for (std::size_t m = 0; m < A.M; ++m)
        for (std::size_t l = 0; l < L; ++l) {
            float acc = 0.0f;
            for (std::size_t g = 0; g < A.K2; ++g) {
                std::uint16_t b[2];
                std::memcpy(b, B.row(g) + 4 * l, 4);
                for (std::size_t j = 0; j < 2; ++j) acc += bf16ToFloat(A.data[m * 2 * A.K2 + 2 * g + j]) * bf16ToFloat(b[j]);
            }
            out[m * ldo + l] = acc;
        }
}


} // namespace quantscope

namespace quantscope {

namespace bf16detail {
void weightGradRunsAmx(const WeightGradRuns& a, float* dW);
void weightGradRunsAvx512(const WeightGradRuns& a, float* dW);
void weightGradRunsAvx512T(const WeightGradRuns& a, float* T);
} // namespace bf16detail

void weightGradBf16Runs(const WeightGradRuns& a, float* dW)
{
    if (a.path == Bf16Path::Emulated || !bf16PathSupported(a.path))
        throw std::logic_error(std::string("weightGradBf16Runs: this CPU cannot run the ") + bf16PathName(a.path) + " path");
    if (a.P % 16 || a.Op % 16 || a.Op < a.O) throw std::logic_error("weightGradBf16Runs: P and Op must be multiples of 16");
    if (a.path == Bf16Path::AmxBf16 && a.C % 16) throw std::logic_error("weightGradBf16Runs: AMX needs C a multiple of 16");
    if (a.path == Bf16Path::AmxBf16) bf16detail::weightGradRunsAmx(a, dW);
    else bf16detail::weightGradRunsAvx512(a, dW);
}

void weightGradBf16RunsTransposed(const WeightGradRuns& a, float* T)
{
    if (a.path != Bf16Path::Avx512Bf16 || !bf16PathSupported(a.path))
        throw std::logic_error("weightGradBf16RunsTransposed: the avx512-bf16 path only, on a CPU that runs it");
    if (a.P % 16 || a.Op % 16 || a.Op < a.O) throw std::logic_error("weightGradBf16RunsTransposed: P and Op must be multiples of 16");
    bf16detail::weightGradRunsAvx512T(a, T);
}

void weightGradBf16RunsRef(const WeightGradRuns& a, float* dW)
{
    for (std::size_t o = 0; o < a.O; ++o)
        for (std::size_t c = 0; c < a.C; ++c)
            for (std::size_t t = 0; t < a.taps; ++t) {
                const std::uint16_t* x = a.x + c * a.channelStride / 2 + a.tapOffset[t];
                float acc = 0.0f;
                for (std::size_t p = 0; p < a.P; ++p) {
                    const std::uint32_t d = a.dyPairs[p * a.Op + o];
                    acc += bf16ToFloat(x[2 * p]) * bf16ToFloat(static_cast<std::uint16_t>(d & 0xFFFFu));
                    acc += bf16ToFloat(x[2 * p + 1]) * bf16ToFloat(static_cast<std::uint16_t>(d >> 16));
                }
                dW[(o * a.C + c) * a.taps + t] += acc;
            }
}

} // namespace quantscope
