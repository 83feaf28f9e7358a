// MaxPool2d, as PyTorch's nn.MaxPool2d(k, s, p): square kernel and stride, padding with -inf
// (p <= k / 2, so every window holds an input value), floor output size. Ties go to the first
// maximum in scan order, as in PyTorch.
#pragma once

#include "nn/layer.h"

#include <cstdint>

namespace quantscope {

class MaxPool2d final : public Layer {
public:
    // stride 0 = kernel. ConfigError for a zero kernel or padding > kernel / 2.
    MaxPool2d(std::string name, std::size_t kernel, std::size_t stride = 0, std::size_t padding = 0);
    LayerKind kind() const override { return LayerKind::MaxPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }
    std::size_t padding() const { return m_pad; }

private:
    // The pooling itself on an input that already carries its padding.
    void poolPadded(const Tensor& x, Tensor& y, bool train);

    std::size_t m_k, m_stride, m_pad;
    std::vector<std::uint32_t> m_argmax; // training cache: offset within the (n,c) plane of the padded input
    Tensor m_padded, m_paddedGrad;       // padding > 0: the padded input, and dL/d(padded input)
};

} // namespace quantscope
