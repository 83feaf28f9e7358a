// Average pooling over (N, C, H, W): AvgPool2d, as PyTorch's nn.AvgPool2d(kernel_size, stride,
// padding, ceil_mode, count_include_pad) and ONNX's AveragePool: kernel (kh, kw), stride (sh, sw),
// zero padding (top, left, bottom, right), floor or ceil output size (nn/pool_geometry.h), the
// padding counted in the mean or not; and GlobalAvgPool2d (the mean of each plane, (N, C, 1, 1),
// as nn.AdaptiveAvgPool2d(1)).
#pragma once

#include "nn/layer.h"
#include "nn/pool_geometry.h"

namespace quantscope {

// y[n,c,oy,ox] = mean of xp[n,c, oy*s .. oy*s+k-1, ox*s .. ox*s+k-1] with xp = x zero-padded by p on
// every side; dx spreads dy / k^2 back (and drops what falls on the padding). Any other window
// divides the sum of its part inside the input by, as PyTorch does, with count_include_pad the
// size of its part inside input + padding (a ceil_mode window running past both counts only
// that), else the size of its part inside the input.
class AvgPool2d final : public Layer {
public:
    // stride 0 = kernel. ConfigError for a zero kernel or padding > kernel / 2.
    AvgPool2d(std::string name, std::size_t kernel, std::size_t stride = 0, std::size_t padding = 0);
    // Any window: x (N, C, H, W) -> y (N, C, g.outH(H), g.outW(W)). ConfigError (naming the layer
    // and the window) for a zero kernel or stride, or a pad more than half its kernel.
    AvgPool2d(std::string name, const PoolGeometry& g);
    LayerKind kind() const override { return LayerKind::AvgPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }
    std::size_t padding() const { return m_pad; }
    // The whole window (square ones: PoolGeometry::square(kernel, stride, padding)).
    const PoolGeometry& geometry() const { return m_g; }

private:
    void poolPadded(const Tensor& x, Tensor& y) const;
    void backwardPadded(const Shape& xs, const Tensor& dy, Tensor& dx) const;
    // A window that is not square (scalar): sums over each window's part inside the input.
    void poolGeneral(const Tensor& x, Tensor& y) const;
    void backwardGeneral(const Tensor& dy, Tensor& dx) const;

    std::size_t m_k, m_stride, m_pad; // square windows: kh, sh, padTop
    PoolGeometry m_g;
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
