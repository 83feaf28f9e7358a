// Parameter-free elementwise/row layers: ReLU, ReLU6, LogSoftmax and Softmax (over the last dim of
// (N, K)), Flatten.
#pragma once

#include "nn/layer.h"

namespace quantscope {

class ReLU final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::ReLU; }
    Shape outputShape(const Shape& in) const override { return in; }
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
};

// y = min(max(x, 0), 6); dx = dy where 0 < x < 6, else 0 (PyTorch's hardtanh gradient).
class ReLU6 final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::ReLU6; }
    Shape outputShape(const Shape& in) const override { return in; }
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
};

class LogSoftmax final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::LogSoftmax; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
};

// y_j = exp(x_j) / sum_i exp(x_i) over the classes of (N, K) (torch.nn.Softmax(dim=1), ONNX
// Softmax on axis 1): a classifier's probabilities, as a model imported from PyTorch may end.
// dx_j = y_j (dy_j - sum_i dy_i y_i). Training takes the NLL of its output (loss.h).
class Softmax final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::Softmax; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
};

class Flatten final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::Flatten; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
};

// Numerically stable log-softmax of one row of k values.
void logSoftmaxRow(const float* x, float* y, std::size_t k);
// Softmax of one row of k values: exp(x_j - max) / sum, the sum in double.
void softmaxRow(const float* x, float* y, std::size_t k);

} // namespace quantscope
