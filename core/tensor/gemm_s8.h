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
// B is read in place as rows of dwords: rows[g] + 4 l holds B[4g + j][l] at byte j (four
// consecutive k of one column side by side, the operand layout of VPDPBUSD). A convolution lays
// its input out with four channels interleaved so that each kernel tap of four channels is such
// a row, without an im2col copy (nn/conv2d_direct.cpp).
//
// Paths, chosen at run time: AVX-512 VNNI (VPDPBUSD: 64 multiply-adds per instruction, four
// times FP32's FMA; Intel Cascade Lake and later, AMD Zen 4), or none: without VNNI the callers
// keep their FP32 kernels. gemmS8RowsRef is the scalar twin the VNNI kernel is tested against
// (bit-identical: same int32 sums, same epilogue). Source: Intel SDM vol. 2, VPDPBUSD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace quantscope {

// Whether this CPU runs the VNNI kernel (AVX512F/BW/VL + AVX512_VNNI). QS_INT8_PRODUCTS=0 in the
// environment turns the path off (A/B checks; read once per process).
bool s8ProductsAvailable();

// A (M x 4 K4 int8, row m's k-group g at A[m * 4 K4 + 4 g]) packed in blocks of 8 rows:
// block b holds [K4][8][4] bytes (rows past M are zero).
struct PackedS8A {
    std::size_t M = 0, K4 = 0;
    std::vector<std::int8_t> data;
};
void packS8A(const std::int8_t* A, std::size_t M, std::size_t K4, PackedS8A& out);

// out[m * ldo + l] = float(sum_{g < K4, j < 4} A[m][4g + j] * rows[g][4 l + j] + corr[m]) * scale[m]
// for m < M, l < L. Each rows[g] must be readable for 4 L bytes. Single-threaded (callers run one
// call per image group on their TBB threads). Requires s8ProductsAvailable() (else logic_error).
void gemmS8Rows(const PackedS8A& A, const std::uint8_t* const* rows, std::size_t L, const float* scale,
                const std::int32_t* corr, float* out, std::size_t ldo);
// The scalar twin (any CPU), same arguments.
void gemmS8RowsRef(const PackedS8A& A, const std::uint8_t* const* rows, std::size_t L, const float* scale,
                   const std::int32_t* corr, float* out, std::size_t ldo);

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
