// Average pooling over (N, C, H, W): AvgPool2d (square kernel, zero padding counted in the mean,
// floor output size, as PyTorch's nn.AvgPool2d(k, s, p) with its default count_include_pad=True) and GlobalAvgPool2d (the mean of each plane, (N, C, 1, 1), as
// nn.AdaptiveAvgPool2d(1)).
#pragma once

#include "nn/layer.h"

namespace quantscope {

// y[n,c,oy,ox] = mean of xp[n,c, oy*s .. oy*s+k-1, ox*s .. ox*s+k-1] with xp = x zero-padded by p on
// every side; dx spreads dy / k^2 back (and drops what falls on the padding).
class AvgPool2d final : public Layer {
public:
    // stride 0 = kernel. ConfigError for a zero kernel or padding > kernel / 2.
    AvgPool2d(std::string name, std::size_t kernel, std::size_t stride = 0, std::size_t padding = 0);
    LayerKind kind() const override { return LayerKind::AvgPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }
    std::size_t padding() const { return m_pad; }

private:
    void poolPadded(const Tensor& x, Tensor& y) const;
    void backwardPadded(const Shape& xs, const Tensor& dy, Tensor& dx) const;

    std::size_t m_k, m_stride, m_pad;
    Tensor m_padded, m_paddedGrad; // padding > 0: the padded input, and dL/d(padded input)
};

// Shared by the padded pools: x (N, C, H, W) -> xp (N, C, H + 2p, W + 2p) with `fill` around it,
// and the crop back, dx = the interior of dxp.
void padPlanes(const Tensor& x, std::size_t pad, float fill, Tensor& xp);
void cropPlanes(const Tensor& dxp, std::size_t pad, Tensor& dx);

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
