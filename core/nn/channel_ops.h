// Layers that move channels without computing on them, the data movement of ShuffleNet:
//   ChannelShuffle (torch.nn.ChannelShuffle; ShuffleNet, Zhang et al. 2018, "ShuffleNet: An
//   Extremely Efficient Convolutional Neural Network for Mobile Devices", section 3.1), which
//   PyTorch code writes as x.view(N, g, C / g, H, W).transpose(1, 2).reshape(N, C, H, W);
//   Slice, a range of channels (x[:, a:b], and each part of x.chunk(k, 1) or x.split(s, 1),
//   ShuffleNetV2's channel split: Ma et al. 2018, section 3).
// Both take [N, C] or [N, C, ...] inputs (rank 2 or more; the channels are axis 1) and move whole
// planes: every output value is an input value, so a quantized input's grid is the output's.
#pragma once

#include "nn/layer.h"

namespace quantscope {

// y[:, k g + j] = x[:, j (C / g) + k] for j < g, k < C / g: the channels read as a g x (C / g)
// matrix, transposed. groups must divide C (ConfigError naming the layer and the shape otherwise).
class ChannelShuffle final : public Layer {
public:
    // groups >= 1 (ConfigError otherwise); 1 is the identity.
    ChannelShuffle(std::string name, std::size_t groups);
    LayerKind kind() const override { return LayerKind::ChannelShuffle; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override { return std::to_string(m_groups) + " groups"; }
    std::size_t groups() const { return m_groups; }
    // The input channel output channel `c` of C holds.
    std::size_t sourceChannel(std::size_t c, std::size_t channels) const;

private:
    std::size_t m_groups;
};

// y = x[:, begin:end]: channels [begin, end) of the input. end <= C (ConfigError naming the layer
// and the shape otherwise); backward writes dy into those channels of dx and zeros elsewhere.
class Slice final : public Layer {
public:
    // begin < end (ConfigError otherwise).
    Slice(std::string name, std::size_t begin, std::size_t end);
    LayerKind kind() const override { return LayerKind::Slice; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t begin() const { return m_begin; }
    std::size_t end() const { return m_end; }

private:
    std::size_t m_begin, m_end;
};

} // namespace quantscope
