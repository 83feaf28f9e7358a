#include "nn/norm_affine.h"

#include "util/errors.h"

namespace quantscope {

NormAffine::NormAffine(const std::string& layer, const char* kind, std::size_t channels, bool affine)
    : m_layer(layer), m_kind(kind), m_channels(channels), m_affine(affine)
{
    checkWeightCount(layer, m_kind + " " + std::to_string(channels), {channels});
    m_gamma.name = "weight";
    m_beta.name = "bias";
    if (!affine) return;
    m_gamma.value = Tensor({channels}, 1.0f);
    m_gamma.grad = Tensor({channels});
    m_beta.value = Tensor({channels}, 0.0f);
    m_beta.grad = Tensor({channels});
}

std::vector<Param*> NormAffine::params()
{
    if (!m_affine) return {};
    return {&m_gamma, &m_beta};
}

Param& NormAffine::weight()
{
    if (!m_affine) throw ConfigError(m_layer + ": " + m_kind + " without affine parameters has no weight");
    return m_gamma;
}

Param& NormAffine::bias()
{
    if (!m_affine) throw ConfigError(m_layer + ": " + m_kind + " without affine parameters has no bias");
    return m_beta;
}

Shape NormAffine::outputShape(const Shape& in) const
{
    if (in.size() != 2 && in.size() != 4)
        throw ConfigError(m_layer + ": " + m_kind + " takes (N, C, H, W) or (N, C), got " + shapeString(in));
    if (in[1] != m_channels)
        throw ConfigError(m_layer + ": " + m_kind + " of " + std::to_string(m_channels) + " channels given an input of " +
                          std::to_string(in[1]) + " channels " + shapeString(in));
    return in;
}

} // namespace quantscope
