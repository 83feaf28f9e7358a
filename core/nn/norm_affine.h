// The per-channel affine parameters of a normalisation layer (GroupNorm, LayerNorm2d): PyTorch's
// `weight` (gamma, init 1) and `bias` (beta, init 0), C each, which train, count and save and are
// never quantized (isWeight is false); none without affine parameters (affine=False,
// elementwise_affine=False). Shared so that both layers check, name and expose them alike.
#pragma once

#include "nn/layer.h"

#include <string>
#include <vector>

namespace quantscope {

class NormAffine {
public:
    // kind: the layer kind's name for errors ("GroupNorm"). Checks the channel count against
    // kMaxLayerWeights (ConfigError naming `layer`).
    NormAffine(const std::string& layer, const char* kind, std::size_t channels, bool affine);

    bool affine() const { return m_affine; }
    // The layer's output shape for an input of shape `in`: in itself, where `in` is (N, C, H, W) or
    // (N, C) with C = the layer's channels; ConfigError naming the layer and both shapes otherwise.
    Shape outputShape(const Shape& in) const;
    std::vector<Param*> params();
    // gamma and beta (affine only: ConfigError naming the layer otherwise)
    Param& weight();
    Param& bias();
    const float* weightData() const { return m_affine ? m_gamma.forwardValue().data() : nullptr; }
    const float* biasData() const { return m_affine ? m_beta.forwardValue().data() : nullptr; }

private:
    std::string m_layer, m_kind;
    std::size_t m_channels;
    bool m_affine;
    Param m_gamma, m_beta;
};

} // namespace quantscope
