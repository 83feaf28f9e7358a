// Mul: the elementwise product of two activations, of equal shapes or (squeeze-and-excitation)
// a feature map [N, C, H, W] times a per-channel gate [N, C, 1, 1] broadcast over H and W, in
// either order (PyTorch's broadcasting for these two cases only).
#pragma once

#include "nn/layer.h"

namespace quantscope {

// y = a * b. Equal shapes: da = dy * b, db = dy * a. Broadcast (b the gate, or a):
// dx = dy * g for the map x, dg[n, c] = sum_{h, w} dy * x. Any other pair of shapes is a
// ConfigError naming the layer and both shapes.
class Mul final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::Mul; }
    std::size_t numInputs() const override { return 2; }
    Shape outputShape(const Shape& in) const override;
    Shape outputShapeMulti(const std::vector<Shape>& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    void forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx) override;
    void backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& y, const Tensor& dy,
                       const std::vector<Tensor*>& dxs) override;

    // Which input is the [N, C, 1, 1] gate of a broadcast product: 0 or 1, or -1 for equal shapes.
    // Throws ConfigError (naming `layer`) when a and b are neither equal nor such a pair. Shapes
    // are per batch ([N, C, H, W]) or per image ([C, H, W]) alike.
    static int gateOf(const std::string& layer, const Shape& a, const Shape& b);
};

} // namespace quantscope
