// Linear (fully connected): y = x W^T + b (or x W^T without a bias), TBB-parallel over row blocks.
// Under mixed bf16 its backward rounds dx block by block as it writes it (InputGradientRounding).
#pragma once

#include "nn/layer.h"
#include "tensor/gemm_bf16.h"

#include <atomic>

namespace quantscope {

class Linear final : public Layer, public InputGradientRounding {
public:
    // weight: (out, in), bias: (out) unless hasBias is false (PyTorch's nn.Linear(in, out,
    // bias=False): y = x W^T). Sizes must be positive (ConfigError otherwise).
    Linear(std::string name, std::size_t in, std::size_t out, bool hasBias = true);

    LayerKind kind() const override { return LayerKind::Linear; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override
    {
        if (m_hasBias) return {&m_weight, &m_bias};
        return {&m_weight};
    }
    std::string describe() const override;

    std::size_t inFeatures() const { return m_in; }
    std::size_t outFeatures() const { return m_out; }
    bool hasBias() const { return m_hasBias; }
    Param& weight() { return m_weight; }
    // Without a bias this Param is empty (shape (0)) and not among params().
    Param& bias() { return m_bias; }

    // bf16 products on `path` (see Conv2d::setBf16Products); Emulated keeps the FP32 GEMMs.
    void setBf16Products(Bf16Path path) { m_bf16 = path; }
    Bf16Path bf16Products() const { return m_bf16; }
    // True when every product that reads the weight packs it to bf16 (Conv2d::readsWeightAsBf16).
    bool readsWeightAsBf16() const { return m_bf16 != Bf16Path::Emulated; }

    // Mixed precision's weight-gradient pass (LossScaler::roundUnscaleOrSkip) for this layer's dW,
    // made by the bf16 backward on each block of dW right after its product wrote it, while in
    // cache: dW = roundBf16(dW) * scale, the same bits as the pass over the whole tensor
    // afterwards; `finite` (when set) is cleared when a rounded value is inf or NaN. Only on the
    // bf16 products (readsWeightAsBf16); the FP32 backward ignores it. weightGradientPassed() tells
    // whether the last backward made it. Off (scale 1, no flag) until set; the bias is left alone.
    struct WeightGradientPass {
        bool on = false;
        float scale = 1.0f;
        std::atomic<bool>* finite = nullptr;
    };
    void setWeightGradientPass(const WeightGradientPass& pass) { m_wgPass = pass; }
    bool weightGradientPassed() const { return m_wgPassed; }

private:
    void addBias(MatrixMap& Y) const;

    std::size_t m_in, m_out;
    bool m_hasBias;
    Bf16Path m_bf16 = Bf16Path::Emulated;
    PackedBf16A m_xPacked; // bf16 forward: the batch, packed once for every column block of y
    PackedBf16A m_dyPacked, m_dyPackedT; // bf16 backward: dy and dy^T, packed once for every column block of dx and dW
    WeightGradientPass m_wgPass;
    bool m_wgPassed = false;
    Param m_weight, m_bias;
};

} // namespace quantscope
