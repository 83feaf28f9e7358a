// ChannelMax: the largest of each pixel's channels, torch.amax(x, dim=1, keepdim=True) and the
// values of torch.max(x, dim=1, keepdim=True), as CBAM's spatial attention pools its input (Woo et
// al. 2018, "CBAM: Convolutional Block Attention Module", ECCV) before the 7x7 convolution of its
// gate; ONNX ReduceMax over axis 1 with keepdims. Like max pooling it computes no new values, so
// a quantized model keeps its input's grid.
#pragma once

#include "nn/layer.h"

#include <cstdint>
#include <vector>

namespace quantscope {

// forward:  y[n, 0, p] = max_c x[n, c, p]  (x (N, C, H, W) -> y (N, 1, H, W))
// backward: dx[n, c, p] = dy[n, 0, p] at the first channel c holding the maximum (PyTorch's
//           torch.max(dim) gradient goes to the index it returns), 0 elsewhere.
class ChannelMax final : public Layer {
public:
    explicit ChannelMax(std::string name) : Layer(std::move(name)) {}
    LayerKind kind() const override { return LayerKind::ChannelMax; }
    // (N, C, H, W) -> (N, 1, H, W); ConfigError naming the layer for any other rank.
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override { return "the largest of each pixel's channels"; }

private:
    std::vector<std::uint32_t> m_argmax; // (N, H W) of the last training forward
};

} // namespace quantscope
