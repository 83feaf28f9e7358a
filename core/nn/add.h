// Add: the elementwise sum of two activations of the same shape (the residual join).
#pragma once

#include "nn/layer.h"

namespace quantscope {

// y = a + b; dL/da = dL/db = dy. A shape mismatch is a ConfigError naming the layer and both shapes.
class Add final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::Add; }
    std::size_t numInputs() const override { return 2; }
    Shape outputShape(const Shape& in) const override;
    Shape outputShapeMulti(const std::vector<Shape>& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    void forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx) override;
    void backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& y, const Tensor& dy,
                       const std::vector<Tensor*>& dxs) override;
};

} // namespace quantscope
