// Shared by the bf16 product tests (tst_gemm_bf16: the GEMM, its packers and its paths;
// tst_conv_runs_bf16: the products over a convolution's runs and the convolutions on them): the
// tolerance between two orders of summing the same exact bf16 products, and the guard value of
// the padding no path may write.
#pragma once

#include <cfloat>
#include <cstddef>

namespace bf16_fixtures {

// Tolerance. Every product of two bf16 values (8-bit significands) is exact in FP32, so every
// path sums the same K + 1 exact terms t (the K products and, when accumulating, C's old value)
// and differs only in the order of the FP32 additions. Any order of n - 1 rounded additions is
// within gamma_{n-1} * sum|t| of the exact sum (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., eq. 4.4), gamma_n = n u / (1 - n u), u = 2^-24; two results are then
// within 2 gamma_K sum|t| <= K eps_fp32 sum|t| (1 + O(K u)) of each other. The factor 1.01 takes
// the O(K u) and the hardware flushing of subnormal results (VDPBF16PS/TDPBF16PS, below
// K * FLT_MIN absolute) without loosening the bound in any way a wrong kernel could pass.
inline double tolerance(std::size_t K, double sumAbsTerms)
{
    return 1.01 * static_cast<double>(K) * FLT_EPSILON * sumAbsTerms + static_cast<double>(K) * FLT_MIN;
}

// The guard value in the padding columns of an output (C past N, out past L): no path may touch it.
constexpr float kGuard = 12345.0f;

} // namespace bf16_fixtures
