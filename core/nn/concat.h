// Concat: two or more activations joined along the channel axis (torch.cat(xs, 1)), the join of
// DenseNet blocks and Inception branches. Every input has the same rank (at least 2: flat
// features [N, F] join too) and the same size on every axis but the channels.
#pragma once

#include "nn/layer.h"

namespace quantscope {

// y = cat(xs, dim 1); dxs[j] is dy's slice of input j's channels. Inputs that differ elsewhere
// than in their channels are a ConfigError naming the layer and the shapes.
class Concat final : public Layer {
public:
    // inputs: at least 2 (ConfigError otherwise).
    Concat(std::string name, std::size_t inputs);
    LayerKind kind() const override { return LayerKind::Concat; }
    std::size_t numInputs() const override { return m_inputs; }
    Shape outputShape(const Shape& in) const override;
    Shape outputShapeMulti(const std::vector<Shape>& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    void forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx) override;
    void backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& y, const Tensor& dy,
                       const std::vector<Tensor*>& dxs) override;
    std::string describe() const override { return std::to_string(m_inputs) + " inputs, axis 1"; }

    // The joined shape of `in` (per batch or per image: axis `axis` is the channels'), or a
    // ConfigError naming `layer` and every shape.
    static Shape joined(const std::string& layer, const std::vector<Shape>& in, std::size_t axis);

private:
    std::size_t m_inputs;
};

} // namespace quantscope
