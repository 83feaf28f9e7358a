// int8 x uint8 -> int32 products with a dequantizing epilogue, for QAT's forward pass (issue 12):
// the convolution whose weights and input are on integer grids (fake-quantized) computes its
// product on those integers, as the integer engine and PyTorch's quantized kernels do (Jacob et
// al., CVPR 2018, eq. 4), and dequantizes the int32 sums once per output:
//   out[m][l] = float(sum_k A[m][k] * B[k][l] + corr[m]) * scale[m]
// A: int8 codes (the weights), B: uint8 codes (the input), corr[m]: the zero point's term
// (-z sum_k A[m][k]), scale[m]: input scale x weight scale of row m. The int32 sums are exact, so
// the result is the exact product of the fake-quantized operands rounded twice (int32 -> float,
// the scale), where the float fake-quant product rounds at each of its K additions.
//
// B is a convolution's input laid out in runs of four interleaved channels (tensor/conv_runs.h):
// dword l of K-group g's row holds B[4g + j][l] at byte j, the operand layout of VPDPBUSD and
// TDPBSUD. No im2col copy.
//
// Paths, chosen at run time:
//   "amx-int8"     Intel AMX TDPBSUD on 16 x 16 int32 tiles (Sapphire Rapids and later);
//   "avx512-vnni"  VPDPBUSD, 64 multiply-adds an instruction, four times FP32's FMA per lane
//                  (Cascade Lake and later, AMD Zen 4);
//   none: the callers keep their FP32 kernels.
// gemmConvRunsRef is the scalar twin both are tested against (bit-identical: the same int32 sums and
// the same epilogue). Sources: Intel SDM vol. 2 (VPDPBUSD, TDPBSUD), Intel AMX ISE reference ch. 3.
#pragma once

#include "tensor/conv_runs.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace quantscope {

enum class S8Path { None, Avx512Vnni, AmxInt8 };
const char* s8PathName(S8Path path); // "none", "avx512-vnni", "amx-int8"
bool s8PathSupported(S8Path path);
// AMX where present, else VNNI, else none. QS_INT8_PRODUCTS in the environment overrides it:
// "0" (none), "vnni", "amx" (when supported). Read once per process.
S8Path bestS8Path();
inline bool s8ProductsAvailable() { return bestS8Path() != S8Path::None; }

// A: M x 4 K4 int8 codes, row m's k-group g at A[m * 4 K4 + 4 g], packed for one path (VNNI:
// blocks of 8 rows [K4][8][4]; AMX: rows padded to a multiple of 16; None: as given, for the twin).
struct PackedS8A {
    S8Path path = S8Path::None;
    std::size_t M = 0, K4 = 0;
    std::vector<std::int8_t> data;
};
void packS8A(S8Path path, const std::int8_t* A, std::size_t M, std::size_t K4, PackedS8A& out);

// out[m * ldo + l] = float(sum_{g < K4, j < 4} A[m][4g + j] * B[4g + j][l] + corr[m]) * scale[m]
// for m < M, l < L, on A.path (logic_error for None or a path this CPU cannot run). Single-threaded
// (callers run one call per image group on their TBB threads).
void gemmConvRuns(const PackedS8A& A, const ConvRuns& B, std::size_t L, const float* scale, const std::int32_t* corr,
                float* out, std::size_t ldo);
// The scalar twin (any CPU, any packing), same arguments.
void gemmConvRunsRef(const PackedS8A& A, const ConvRuns& B, std::size_t L, const float* scale, const std::int32_t* corr,
                   float* out, std::size_t ldo);

// The grid of a fake-quantized tensor: x = scale (u - zero) with integer codes u in [0, 255]
// (a format's q = u + qmin, zero = zp - qmin: uint8 as is, int8 shifted by 128).
struct U8Grid {
    float scale = 1.0f;
    std::int32_t zero = 0;
};

// dst[4 i + j] = u of src[j][i] (i < n, j < 4): four rows of x interleaved into dwords of codes,
// u = nearbyint(x / scale) + zero (x * (1 / scale), round half to even; a null src[j] gives
// `zero`, the code of 0.0). Returns false, with dst partly written, when a value is not on the
// grid: |x - scale (u - zero)| > 1e-4 scale, u outside [0, 255], or NaN. The fake-quantized values
// (q - zp) * scale are on it: their own rounding is below 255 * 2^-24 scale.
bool quantizeInterleave4(const float* const src[4], std::size_t n, const U8Grid& grid, std::uint8_t* dst);
// The scalar twin: same bytes, same verdict.
bool quantizeInterleave4Ref(const float* const src[4], std::size_t n, const U8Grid& grid, std::uint8_t* dst);

} // namespace quantscope
