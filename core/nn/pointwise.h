// Elementwise activations with smooth or piecewise-linear shapes, as PyTorch defines them:
// Sigmoid, Tanh, SiLU, Hardsigmoid, Hardswish, LeakyReLU (alpha = negative_slope), ELU (alpha) and
// GELU (the exact erf form) and GELU's tanh approximation (GELUTanh, nn.GELU(approximate='tanh'):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))). One table row per kind (name, ONNX operator, whether it takes alpha);
// one scalar formula per kind, which the layer, the integer engine's lookup tables and the export
// all use, so the engine equals the fake-quant simulation bit for bit.
#pragma once

#include "nn/layer.h"

#include <optional>
#include <span>

namespace quantscope {

struct PointwiseInfo {
    LayerKind kind;
    const char* name;      // PyTorch's module name, e.g. "Hardswish"
    const char* onnxOp;    // the single ONNX operator (opset 13), or "" for a subgraph (SiLU, GELU, GELUTanh; Hardswish before opset 14)
    bool hasAlpha;         // LeakyReLU's negative_slope, ELU's alpha (stored in .qsm files)
    float defaultAlpha;    // PyTorch's default: 0.01 (LeakyReLU), 1 (ELU)
};

// The row of `k`, or nullptr when k is not a pointwise activation.
const PointwiseInfo* pointwiseInfo(LayerKind k);
inline bool isPointwise(LayerKind k) { return pointwiseInfo(k) != nullptr; }
std::span<const PointwiseInfo> pointwiseTable();

// y[i] = f(x[i]) for kind k (alpha: LeakyReLU's slope, ELU's alpha; ignored by the others). One
// compiled body for every caller (not inlined), so identical inputs give identical bits.
void pointwiseApply(LayerKind k, float alpha, const float* x, float* y, std::size_t n);
// dx[i] = dy[i] f'(x[i]) (y = f(x), as forward gave it).
void pointwiseGradient(LayerKind k, float alpha, const float* x, const float* y, const float* dy, float* dx, std::size_t n);

class Pointwise final : public Layer {
public:
    // Throws ConfigError when kind is not pointwise, or alpha is not finite (ELU: not > 0 is allowed, as PyTorch allows it).
    Pointwise(std::string name, LayerKind kind, std::optional<float> alpha = std::nullopt);
    LayerKind kind() const override { return m_kind; }
    float alpha() const { return m_alpha; }
    Shape outputShape(const Shape& in) const override { return in; }
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;

private:
    LayerKind m_kind;
    float m_alpha;
};

} // namespace quantscope
