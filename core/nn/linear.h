// Linear (fully connected): y = x W^T + b, TBB-parallel over row blocks.
#pragma once

#include "nn/layer.h"
#include "tensor/gemm_bf16.h"

namespace quantscope {

class Linear final : public Layer {
public:
    // weight: (out, in), bias: (out)
    Linear(std::string name, std::size_t in, std::size_t out);

    LayerKind kind() const override { return LayerKind::Linear; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override { return {&m_weight, &m_bias}; }
    std::string describe() const override;

    std::size_t inFeatures() const { return m_in; }
    std::size_t outFeatures() const { return m_out; }
    Param& weight() { return m_weight; }
    Param& bias() { return m_bias; }

    // bf16 products on `path` (see Conv2d::setBf16Products); Emulated keeps the FP32 GEMMs.
    void setBf16Products(Bf16Path path) { m_bf16 = path; }
    Bf16Path bf16Products() const { return m_bf16; }
    // True when every product that reads the weight packs it to bf16 (Conv2d::readsWeightAsBf16).
    bool readsWeightAsBf16() const { return m_bf16 != Bf16Path::Emulated; }

private:
    std::size_t m_in, m_out;
    Bf16Path m_bf16 = Bf16Path::Emulated;
    PackedBf16A m_xPacked; // bf16 forward: the batch, packed once for every column block of y
    Param m_weight, m_bias;
};

} // namespace quantscope
