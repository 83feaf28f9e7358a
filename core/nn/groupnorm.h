// GroupNorm (torch.nn.GroupNorm; Wu & He 2018, "Group Normalization", ECCV): the C channels of
// each image are split into G groups of C / G consecutive channels, and each group of each image
// is normalised by its own mean and (biased) variance over its channels and pixels, then scaled
// and shifted per channel. nn.InstanceNorm2d is the case G = C (Ulyanov et al. 2016), and G = 1
// normalises each image over all of (C, H, W) with a per-channel affine. Unlike BatchNorm2d there
// are no running statistics: training and evaluation compute the same function, one image at a
// time, so the batch size never changes an image's output.
#pragma once

#include "nn/layer.h"
#include "nn/norm_affine.h"

#include <vector>

namespace quantscope {

// One image's GroupNorm, the single formula the layer, the integer engine's float step and the
// checks share (so their bits agree): x and y are (C, plane) floats, plane = H W (1 for (N, C)
// features), C = G Cg. For each group g: mean and biased variance over its Cg plane values,
// summed in double (two passes); rstd = 1 / sqrt(var + eps); then for channel c of the group
// y = x a_c + b_c with a_c = rstd gamma_c and b_c = beta_c - mean a_c (gamma = 1 and beta = 0
// when null, nn.GroupNorm(affine=False) and nn.InstanceNorm2d's default). mean and rstd (G
// floats each), when given, receive the group statistics. Not inlined, so every caller gets the
// same bits.
void groupNormImage(const float* x, std::size_t C, std::size_t plane, std::size_t G, float eps, const float* gamma,
                    const float* beta, float* y, float* mean = nullptr, float* rstd = nullptr);

// forward:  y[n, c, p] = (x[n, c, p] - mean[n, g]) rstd[n, g] gamma[c] + beta[c],  g = c / (C / G)
// backward (PyTorch 1.13's native_group_norm_backward, in closed form per group of M = Cg plane values):
//   dgamma[c] = sum_{n, p} dy xhat,  dbeta[c] = sum_{n, p} dy,  xhat = (x - mean) rstd
//   dx = rstd (gamma_c dy - A / M - xhat B / M),  A = sum_group gamma dy,  B = sum_group gamma dy xhat
// Parameter gradients are summed per image in double and then over the images in order, so they do
// not depend on the thread count.
class GroupNorm final : public Layer {
public:
    // groups must divide channels (ConfigError otherwise, naming both); eps > 0 and finite.
    // affine: a learned per-channel weight (gamma, init 1) and bias (beta, init 0), PyTorch's
    // names; they train, count and save, and are never quantized (isWeight is false).
    GroupNorm(std::string name, std::size_t groups, std::size_t channels, float eps = 1e-5f, bool affine = true);

    LayerKind kind() const override { return LayerKind::GroupNorm; }
    // (N, C, H, W) or (N, C) with C the channel count given at construction (ConfigError naming
    // both otherwise).
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override;
    std::string describe() const override;

    std::size_t groups() const { return m_groups; }
    std::size_t channels() const { return m_channels; }
    float eps() const { return m_eps; }
    bool affine() const { return m_params.affine(); }
    // gamma and beta (affine only: ConfigError otherwise)
    Param& weight() { return m_params.weight(); }
    Param& bias() { return m_params.bias(); }
    const Param& weight() const { return const_cast<GroupNorm*>(this)->weight(); }
    const Param& bias() const { return const_cast<GroupNorm*>(this)->bias(); }

private:
    std::size_t m_groups, m_channels;
    float m_eps;
    NormAffine m_params;
    std::vector<float> m_mean, m_rstd; // (N, G) of the last forward, for backward
    std::size_t m_statsImages = 0;
};

} // namespace quantscope
