// bf16 GEMM with FP32 accumulation: C (M x N) = or += op(A) (M x K) * op(B) (K x N), where A and B
// are FP32 and are rounded to bf16 (round to nearest even, tensor/bf16.h, the rounding of the
// bf16 emulation) while they are packed. The products of conv (im2col) and fc layers:
//   forward          Y    = W    * cols     (no transpose)
//   weight gradient  dW   = dY   * cols^T   (transB)
//   input gradient   dcols = W^T * dY       (transA)
//
// Three paths, chosen at run time (like infer/isa.h for the integer engine):
//   "amx-bf16"    Intel AMX tiles, TDPBF16PS (Sapphire Rapids and later);
//   "avx512-bf16" AVX512_BF16 VDPBF16PS (Cooper Lake, Sapphire Rapids, AMD Zen 4);
//   "emulated"    round into FP32 copies and multiply with Eigen (what the emulation did).
// gemmBf16Ref is the plain-loop scalar twin every path is tested against.
//
// Results equal gemmBf16Ref up to the order of FP32 accumulation: the products of two bf16
// values are exact in FP32, only the summation order differs (and VDPBF16PS/TDPBF16PS treat
// subnormal inputs as zero and flush subnormal results, which moves a result by less than
// K * FLT_MIN). Sources: Intel SDM vol. 2 (VDPBF16PS), Intel AMX (Intel ISE reference, ch. 3).
//
// Own micro-kernels rather than oneDNN (Debian libdnnl 2.6.3, brgemm avx512_core_amx_bf16): on
// the per-image products of seed-cnn and resnet8 our amx-bf16 path starting from FP32 matched or
// beat oneDNN's f32->bf16 reorders + bf16 matmul on 21 of 24 shapes (the AMX kernel alone on
// packed inputs beat oneDNN's matmul on bf16 inputs on 22 of 24), it rounds exactly like the
// emulation (VCVTNEPS2BF16, which oneDNN's reorder uses, flushes subnormal inputs to zero), and
// it adds no dependency. Figures: tests/bench/bench_gemm_bf16 and the commit that added this note.
//
// Every call is single-threaded: the layers already run one GEMM per image / column block on
// their TBB threads. Packing buffers are per thread (grown once, then reused).
#pragma once

#include "tensor/bf16.h"
#include "tensor/conv_runs.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

enum class Bf16Path { Emulated, Avx512Bf16, AmxBf16 };

// "emulated", "avx512-bf16", "amx-bf16": what the training start event reports.
const char* bf16PathName(Bf16Path path);
// Whether this CPU (and OS: AMX needs the kernel's permission, requested once per process) runs it.
bool bf16PathSupported(Bf16Path path);
// "auto" -> bestBf16Path(); also accepts the short names "scalar" (= emulated), "avx512", "amx".
// Throws ConfigError for an unknown name or a path this CPU cannot run.
Bf16Path parseBf16Path(const std::string& name);
// The fastest supported path: AMX, else AVX512_BF16, else emulated. The environment variable
// QS_BF16_PATH (any name parseBf16Path accepts) overrides it. Read once per process.
Bf16Path bestBf16Path();

// op(A) is M x K: A[m * lda + k], or A[k * lda + m] when transA (A stored K x M).
// op(B) is K x N: B[k * ldb + n], or B[n * ldb + k] when transB (B stored N x K).
// C[m * ldc + n] = sum_k bf16(op(A)[m][k]) * bf16(op(B)[k][n])   (+ C[m * ldc + n] if accumulate)
// All matrices row-major FP32; C must not overlap A or B. Throws ConfigError when a leading
// dimension is smaller than its row length. M, N or K may be 0 (K == 0: C = 0 or unchanged).
struct GemmBf16Args {
    bool transA = false, transB = false;
    std::size_t M = 0, N = 0, K = 0;
    const float* A = nullptr;
    std::size_t lda = 0;
    const float* B = nullptr;
    std::size_t ldb = 0;
    float* C = nullptr;
    std::size_t ldc = 0;
    bool accumulate = false;
};

// op(A) rounded and packed once for several products that share it (a layer's weights W in
// W * cols_n and W^T * dY_n over the images n of a batch). Made (and remade in place, keeping
// its storage) by packBf16A; used by gemmBf16Packed on the path it was packed for.
class PackedBf16B;

class PackedBf16A {
public:
    Bf16Path path() const { return m_path; }
    std::size_t rows() const { return m_M; }  // M
    std::size_t depth() const { return m_K; } // K

private:
    friend void packBf16A(PackedBf16A& out, Bf16Path path, bool transA, std::size_t M, std::size_t K, const float* A,
                          std::size_t lda);
    friend void gemmBf16Packed(const PackedBf16A& a, bool transB, std::size_t N, const float* B, std::size_t ldb, float* C,
                               std::size_t ldc, bool accumulate);
    friend void gemmBf16PackedAB(const PackedBf16A& a, const PackedBf16B& b, float* C, std::size_t ldc, bool accumulate);
    Bf16Path m_path = Bf16Path::Emulated;
    std::size_t m_M = 0, m_K = 0, m_Kp2 = 0;
    std::vector<std::uint32_t> m_pairs; // avx512-bf16 / amx-bf16: bf16 pairs (gemm_bf16_kernels.h)
    std::vector<float> m_rounded;       // emulated: op(A) rounded, M x K row-major
};

// Packs op(A) (M x K, as in GemmBf16Args) for `path`. Throws ConfigError like gemmBf16.
void packBf16A(PackedBf16A& out, Bf16Path path, bool transA, std::size_t M, std::size_t K, const float* A, std::size_t lda);
// C (M x N) (+)= a * op(B); the same result as gemmBf16 with the A that was packed.
void gemmBf16Packed(const PackedBf16A& a, bool transB, std::size_t N, const float* B, std::size_t ldb, float* C, std::size_t ldc,
                    bool accumulate);

// op(B) (K x N) rounded and packed, here straight from an image: B = im2col(x) for one image
// x (C, H, W), K = C k k rows (c, ky, kx), N = Ho Wo columns (oy, ox), the layout of nn's
// im2col (conv2d.h). No FP32 columns are written: each 16 columns of a row are one masked load
// from the image (stride-1 "same" convolutions) or one masked gather (the others), padding by
// mask. Made by packBf16Im2col, used by gemmBf16PackedAB.
class PackedBf16B {
public:
    Bf16Path path() const { return m_path; }
    std::size_t depth() const { return m_K; } // K
    std::size_t cols() const { return m_N; }  // N

private:
    friend void packBf16Im2col(PackedBf16B& out, Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W,
                               std::size_t k, std::size_t stride, std::size_t pad);
    friend void packBf16Im2colT(PackedBf16B& out, Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W,
                                std::size_t k, std::size_t stride, std::size_t pad);
    friend void gemmBf16PackedAB(const PackedBf16A& a, const PackedBf16B& b, float* C, std::size_t ldc, bool accumulate);
    Bf16Path m_path = Bf16Path::Emulated;
    std::size_t m_K = 0, m_N = 0, m_Kp2 = 0;
    std::vector<std::uint32_t> m_pairs; // panels of bf16 pairs (gemm_bf16_kernels.h)
    std::vector<float> m_rounded;       // emulated: B rounded, K x N row-major
};

// Measured (packing alone, thread CPU time): 1.5-3x faster than nn's im2col + packing on the
// seed-cnn and resnet8 layers (28 x 28 "same": 16 vs 41 us; 7 x 7: 7 vs 21 us), 1.1-1.3x on
// seed-cnn's conv2 (valid 3x3 on 26 x 26, gathers). The offsets and masks are cached per thread
// while the geometry repeats.
// B = im2col(x) for a k x k kernel with the given stride and zero padding, rounded and packed:
// the same bf16 values as im2col followed by packing. Ho = (H + 2 pad - k) / stride + 1, Wo
// likewise. Throws ConfigError for k or stride 0 or a kernel larger than the padded image.
void packBf16Im2col(PackedBf16B& out, Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W,
                    std::size_t k, std::size_t stride, std::size_t pad);
// B = im2col(x)^T (K = Ho Wo pixels, N = C k k), for the weight gradient dW = dY * cols^T
// (A = dY of the image, Cout x Ho Wo): the same bf16 values as im2col, transposed, packed.
void packBf16Im2colT(PackedBf16B& out, Bf16Path path, const float* x, std::size_t C, std::size_t H, std::size_t W,
                     std::size_t k, std::size_t stride, std::size_t pad);
// C (a.rows() x b.cols()) (+)= a * b: bit for bit gemmBf16 on the same operands. Throws
// ConfigError when a and b were packed for different paths or depths.
void gemmBf16PackedAB(const PackedBf16A& a, const PackedBf16B& b, float* C, std::size_t ldc, bool accumulate);

// On bestBf16Path().
void gemmBf16(const GemmBf16Args& g);
// On a given path (ConfigError if this CPU cannot run it).
void gemmBf16(Bf16Path path, const GemmBf16Args& g);
// The scalar twin: for each (m, n) one FP32 sum over k in order, then added to C if accumulate.
void gemmBf16Ref(const GemmBf16Args& g);

// A convolution's products read in place from its runs (tensor/conv_runs.h) of two interleaved
// bf16 channels per dword:
//   out[m * ldo + l] = sum_{g, j < 2} bf16(A[m][2g + j]) * B[2g + j][l]     (FP32 accumulation)
// for m < M, l < L: the direct kernels' forward (A = W) and input gradient (A = rot180(W)^T, B =
// dy's runs) without im2col or col2im. K-group g = tap * groups + pair. Two hardware paths: AMX-BF16
// (TDPBF16PS, the shared tile loop of amx_runs_kernel.h) and AVX512_BF16 (VDPBF16PS register tiles
// of 8 rows x 48 columns, gemm_bf16_runs_avx512.cpp). Same rounding and the same tolerance as the
// other paths (the products of bf16 values are exact; only the order of the FP32 additions differs,
// and both instructions flush subnormals).
struct PackedBf16Runs {
    Bf16Path path = Bf16Path::AmxBf16;
    std::size_t M = 0, K2 = 0;        // K2 K-groups of two
    std::vector<std::uint16_t> data;  // M rounded up to 16 rows of 2 K2 bf16 (zero rows below M)
};
// A: M x 2 K2 FP32 row-major, rounded to bf16 here, for `path` (AmxBf16 or Avx512Bf16; logic_error
// for Emulated).
void packBf16RunsA(const float* A, std::size_t M, std::size_t K2, PackedBf16Runs& out, Bf16Path path);
// On A.path; requires bf16PathSupported(A.path) (logic_error otherwise). Rows readable for 4 L +
// kRunsRowSlack bytes. Single-threaded.
void gemmBf16Runs(const PackedBf16Runs& A, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo);
void gemmBf16RunsRef(const PackedBf16Runs& A, const ConvRuns& B, std::size_t L, float* out, std::size_t ldo);
// roundInterleave2 (two rows to the runs' bf16 pairs) is in tensor/bf16.h.

// The weight gradient of a convolution from its runs, on AMX-BF16 or AVX512_BF16: for every tap t, channel c < C
// and output channel o < O,
//   dW[(o C + c) taps + t] += sum_{l < 2 P} bf16(x_c[tapOffset[t] + l]) * bf16(dy_o[l])   (FP32)
// x: bf16 runs of one channel each (channelStride bytes apart, position l at 2 l bytes, readable for
// 4 P + kRunsRowSlack bytes past the largest tap offset); dyPairs: dy as P x Op dwords, dword (p, o)
// holding (dy_o[2p], dy_o[2p + 1]) (Op: O rounded up to 16, zero columns past O; zero past the run).
// P must be a multiple of 16, and on AMX C too (a tile's rows). Requires bf16PathSupported(path).
// The AVX512_BF16 kernel sums dW^T tiles of 6 (tap, channel) rows x 64 output channels over blocks
// of 128 pairs (the dy block stays in L1), then adds them to dW; a last panel of 16 channels takes
// two pairs per instruction (one 64-bit broadcast of x against dy's two rows interleaved), so its
// sums are of the even and the odd pairs, then added: FP32's order, not the twin's.
struct WeightGradRuns {
    Bf16Path path = Bf16Path::AmxBf16;
    const std::uint16_t* x = nullptr;
    std::size_t channelStride = 0;          // bytes
    const std::size_t* tapOffset = nullptr; // positions (bf16 elements)
    std::size_t taps = 0, C = 0;
    const std::uint32_t* dyPairs = nullptr;
    std::size_t O = 0, Op = 0, P = 0;
};
void weightGradBf16Runs(const WeightGradRuns& a, float* dW);
void weightGradBf16RunsRef(const WeightGradRuns& a, float* dW);
// The AVX512_BF16 kernel's sums added into the transpose instead, T ((taps C) x Op floats, row
// t C + c, column o; columns past O get zeros added), with no scratch buffer and no transposing
// pass: a convolution that sums many groups of images keeps its partial gradients in this layout
// and transposes their total once. From T = 0 the bits equal weightGradBf16Runs' from dW = 0.
// logic_error unless a.path is Avx512Bf16 on a CPU that runs it.
void weightGradBf16RunsTransposed(const WeightGradRuns& a, float* T);

} // namespace quantscope
