// LayerNorm2d: a LayerNorm over the channels of each pixel, the channels-first LayerNorm of
// ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s", CVPR; torchvision's
// models.convnext.LayerNorm2d and timm's LayerNorm2d: x.permute(0, 2, 3, 1), F.layer_norm over the
// last axis, permuted back). Each pixel (n, h, w) of (N, C, H, W) maps is normalised by the mean
// and (biased) variance of its C values, then scaled and shifted per channel; on (N, C) features
// it is nn.LayerNorm(C). Unlike GroupNorm(1, C), which normalises each image over all of
// (C, H, W), the statistics are per pixel. No running statistics: training and evaluation compute
// the same function.
#pragma once

#include "nn/layer.h"
#include "nn/norm_affine.h"

#include <vector>

namespace quantscope {

// One image's LayerNorm2d, the single formula the layer, the integer engine's float step and the
// checks share (so their bits agree): x and y are (C, plane) floats, plane = H W (1 for (N, C)
// features). For each pixel p: mean and biased variance of x[., p] over the C channels, summed in
// double (two passes); rstd = 1 / sqrt(var + eps); then y[c, p] = xhat gamma_c + beta_c with
// xhat = (x[c, p] - mean) rstd in float (gamma = 1 and beta = 0 when null,
// elementwise_affine=False). mean and rstd (plane floats each), when given, receive the pixel
// statistics. Not inlined, so every caller gets the same bits.
void layerNorm2dImage(const float* x, std::size_t C, std::size_t plane, float eps, const float* gamma, const float* beta,
                      float* y, float* mean = nullptr, float* rstd = nullptr);

// forward:  y[n, c, p] = (x[n, c, p] - mean[n, p]) rstd[n, p] gamma[c] + beta[c]
// backward (PyTorch's layer_norm backward over the C values of each pixel):
//   dgamma[c] = sum_{n, p} dy xhat,  dbeta[c] = sum_{n, p} dy
//   dx = rstd / C (C gamma_c dy - A - xhat B),  A = sum_c gamma dy,  B = sum_c gamma dy xhat
// Parameter gradients are summed per image in double and then over the images in order, so they
// do not depend on the thread count.
class LayerNorm2d final : public Layer {
public:
    // eps > 0 and finite (ConfigError otherwise). affine: a learned per-channel weight (gamma,
    // init 1) and bias (beta, init 0), PyTorch's names; they train, count and save, and are never
    // quantized (isWeight is false).
    LayerNorm2d(std::string name, std::size_t channels, float eps = 1e-6f, bool affine = true);

    LayerKind kind() const override { return LayerKind::LayerNorm2d; }
    // (N, C, H, W) or (N, C) with C the channel count given at construction (ConfigError naming
    // both otherwise).
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override;
    std::string describe() const override;

    std::size_t channels() const { return m_channels; }
    float eps() const { return m_eps; }
    bool affine() const { return m_params.affine(); }
    // gamma and beta (affine only: ConfigError otherwise)
    Param& weight() { return m_params.weight(); }
    Param& bias() { return m_params.bias(); }
    const Param& weight() const { return const_cast<LayerNorm2d*>(this)->weight(); }
    const Param& bias() const { return const_cast<LayerNorm2d*>(this)->bias(); }

private:
    std::size_t m_channels;
    float m_eps;
    NormAffine m_params;
    std::vector<float> m_mean, m_rstd; // (N, plane) of the last forward, for backward
    std::size_t m_statsImages = 0;
};

} // namespace quantscope
