// Average pooling over (N, C, H, W): AvgPool2d (square kernel, no padding, floor output size, as
// PyTorch's nn.AvgPool2d(k, s)) and GlobalAvgPool2d (the mean of each plane, (N, C, 1, 1), as
// nn.AdaptiveAvgPool2d(1)).
#pragma once

#include "nn/layer.h"

namespace quantscope {

// y[n,c,oy,ox] = mean of x[n,c, oy*s .. oy*s+k-1, ox*s .. ox*s+k-1]; dx spreads dy / k^2 back.
class AvgPool2d final : public Layer {
public:
    // stride 0 = kernel. ConfigError for a zero kernel.
    AvgPool2d(std::string name, std::size_t kernel, std::size_t stride = 0);
    LayerKind kind() const override { return LayerKind::AvgPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }

private:
    std::size_t m_k, m_stride;
};

// y[n,c,0,0] = mean over H x W of x[n,c]; dx = dy / (H W) everywhere.
class GlobalAvgPool2d final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::GlobalAvgPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
};

} // namespace quantscope
