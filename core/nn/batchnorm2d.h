// BatchNorm2d over (N, C, H, W): per-channel batch statistics in training, running statistics
// in evaluation (PyTorch semantics: momentum 0.1, unbiased variance for the running estimate).
#pragma once

#include "nn/layer.h"

namespace quantscope {

class BatchNorm2d final : public Layer {
public:
    BatchNorm2d(std::string name, std::size_t channels, float eps = 1e-5f, float momentum = 0.1f);

    LayerKind kind() const override { return LayerKind::BatchNorm2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override { return {&m_gamma, &m_beta}; }
    std::string describe() const override { return std::to_string(m_c) + " channels"; }

    std::size_t channels() const { return m_c; }
    float eps() const { return m_eps; }
    Param& gamma() { return m_gamma; }
    Param& beta() { return m_beta; }
    Tensor& runningMean() { return m_runMean; }
    Tensor& runningVar() { return m_runVar; }
    // When frozen, training forward uses (and does not update) the running statistics.
    void setFrozen(bool frozen) { m_frozen = frozen; }
    bool frozen() const { return m_frozen; }

private:
    std::size_t m_c;
    float m_eps, m_momentum;
    bool m_frozen = false;
    Param m_gamma, m_beta;
    Tensor m_runMean, m_runVar;
    // The last forward's per-channel mean and 1/sqrt(var + eps) (batch or running statistics):
    // backward recomputes xhat from its input with them.
    std::vector<float> m_mean, m_invStd;
    std::vector<double> m_planeStats; // per (image, channel) partial sums of the current pass
};

} // namespace quantscope
