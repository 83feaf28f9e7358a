// Internal to core/nn's convolution (conv2d_direct.cpp, conv2d_products.cpp): the direct kernels'
// run layout, shared by the FP32 kernels and the low-precision products. Not a public interface.
#pragma once

#include "nn/conv2d_shared.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace quantscope::conv_detail {

// A group of images laid out for the direct kernels, channel by channel: each channel is one run
// holding the group's images one after another at row pitch Wq = W + p, each image followed by p
// zero rows, behind a head of p rows and p columns of zeros. The zero columns at the end of a row
// are also the left padding of the next row, and an image's zero rows the top padding of the
// next image, so tap (ky, kx) of the output at run position j = i Rn + oy Wq + ox (image i of the
// group) reads position j + ky Wq + kx of the channel's run. Small planes are grouped so the
// runs are long (a few thousand floats) and still fit in L2 with the output.
// The output gradient laid out with padding p' = k - 1 - p has the same pitch and image stride
// (Wo + p' = W + p), so one run position j names the same output pixel in both layouts.
struct RunGeometry {
    std::size_t H, W, k, p, Ho, Wo, Wq, Rn, head, Ng, S; // S: floats per channel run
    // Length of the output run for a group of `images` images (scratch positions included).
    std::size_t length(std::size_t images) const { return (images - 1) * Rn + (Ho - 1) * Wq + Wo; }
};

// The group size depends on the geometry only (never on threads): it fixes the order in which
// the weight gradient's partial sums are added. Requires p <= k - 1.
inline RunGeometry runGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t p)
{
    const std::size_t Wq = W + p, Rn = (H + p) * Wq, head = p * Wq + p;
    std::size_t Ng = 1;
    while (Ng < 16 && 2 * Ng * Rn <= 2048) Ng *= 2;
    return {H, W, k, p, H + 2 * p + 1 - k, W + 2 * p + 1 - k, Wq, Rn, head, Ng, head + Ng * Rn};
}

// out (C, ld) at run positions of g's output -> images [n0, n0 + count) of y (N, C, Ho, Wo),
// plus bias[c], clamped to [0, cap] when hasClamp(cap) (the fused activation). Geometry:
// RunGeometry or PhaseGeometry (output pitch Wq, Rn floats per image). With roundBf16 each row is
// then rounded to bf16 (RunContext::roundOutputBf16).
template <typename Geometry>
void fromRuns(const float* out, std::size_t ld, std::size_t C, std::size_t n0, std::size_t count, const Geometry& g,
              const float* bias, float* y, float cap = std::numeric_limits<float>::quiet_NaN(), bool roundBf16 = false)
{
    const std::size_t HWo = g.Ho * g.Wo;
    const bool clamp = hasClamp(cap);
    for (std::size_t c = 0; c < C; ++c) {
        const float b = bias ? bias[c] : 0.0f;
        for (std::size_t i = 0; i < count; ++i) {
            float* __restrict dst = y + ((n0 + i) * C + c) * HWo;
            const float* __restrict src = out + c * ld + i * g.Rn;
            for (std::size_t r = 0; r < g.Ho; ++r) {
                if (!clamp && bias)
                    for (std::size_t j = 0; j < g.Wo; ++j) dst[r * g.Wo + j] = src[r * g.Wq + j] + b;
                else if (!clamp)
                    for (std::size_t j = 0; j < g.Wo; ++j) dst[r * g.Wo + j] = src[r * g.Wq + j];
                else if (bias)
                    for (std::size_t j = 0; j < g.Wo; ++j) dst[r * g.Wo + j] = clampTo(src[r * g.Wq + j] + b, cap);
                else
                    for (std::size_t j = 0; j < g.Wo; ++j) dst[r * g.Wo + j] = clampTo(src[r * g.Wq + j], cap);
                if (roundBf16) roundRowBf16(dst + r * g.Wo, g.Wo);
            }
        }
    }
}

// A (M x C k k, taps of each channel consecutive) in the bf16 runs' K order (conv2d_products.cpp).
std::vector<float> bf16RunsOrder(const float* A, std::size_t M, std::size_t C, std::size_t kk);
// The weight gradient on `path` (AMX-BF16 or AVX512_BF16) from the direct backward's float runs
// (conv2d_products.cpp).
void weightGradientBf16(Bf16Path path, const float* xr, const float* gr, const RunGeometry& g, const RunGeometry& gd,
                        std::size_t C, std::size_t O, std::size_t k, std::size_t L, const std::size_t* taps, float* part);

} // namespace quantscope::conv_detail
