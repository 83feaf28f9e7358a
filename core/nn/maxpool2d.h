// MaxPool2d (no padding). Ties go to the first maximum in scan order, as in PyTorch.
#pragma once

#include "nn/layer.h"

#include <cstdint>

namespace quantscope {

class MaxPool2d final : public Layer {
public:
    MaxPool2d(std::string name, std::size_t kernel, std::size_t stride = 0);
    LayerKind kind() const override { return LayerKind::MaxPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }

private:
    std::size_t m_k, m_stride;
    std::vector<std::uint32_t> m_argmax; // training cache: input offset within the (n,c) plane
};

} // namespace quantscope
