// Elementwise activations with smooth or piecewise-linear shapes, as PyTorch defines them:
// Sigmoid, Tanh, SiLU, Hardsigmoid, Hardswish, LeakyReLU (alpha = negative_slope), ELU (alpha),
// GELU (the exact erf form), GELU's tanh approximation (GELUTanh, nn.GELU(approximate='tanh'):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))) and Hardtanh (alpha = min_val, beta = max_val:
// clamp(x, min_val, max_val), what nn.Hardtanh, torch.clamp and ONNX Clip compute; either bound
// may be infinite, not both), Softplus (nn.Softplus() at its defaults beta 1 and threshold 20:
// log(1 + exp(x)), x beyond 20; ONNX's Softplus) and Mish (x tanh(softplus(x)), Misra 2019,
// "Mish: A Self Regularized Non-Monotonic Activation Function"; ONNX's Mish from opset 18, a
// Softplus, Tanh, Mul subgraph before), SELU (scale (max(0, x) + min(0, alpha (exp(x) - 1))) with
// Klambauer et al. 2017's constants; ONNX's Selu at its default attributes), CELU (alpha:
// max(0, x) + min(0, alpha (exp(x / alpha) - 1)), Barron 2017; ONNX's Celu, opset 12) and
// Softsign (x / (1 + |x|); ONNX's Softsign, torch's Abs, Add(1), Div subgraph). One table row per kind (name, ONNX operator, its parameters); one
// scalar formula per kind, which the layer, the integer engine's lookup tables and the export all
// use, so the engine equals the fake-quant simulation bit for bit.
#pragma once

#include "nn/layer.h"

#include <optional>
#include <span>

namespace quantscope {

struct PointwiseInfo {
    LayerKind kind;
    const char* name;      // PyTorch's module name, e.g. "Hardswish"
    const char* onnxOp;    // the single ONNX operator (opset 13), or "" for a subgraph (SiLU, GELU, GELUTanh, Mish; Hardswish before opset 14)
    bool hasAlpha;         // LeakyReLU's negative_slope, ELU's and CELU's alpha, Hardtanh's min_val (stored in .qsm files)
    float defaultAlpha;    // PyTorch's default: 0.01 (LeakyReLU), 1 (ELU, CELU), -1 (Hardtanh)
    bool hasBeta;          // Hardtanh's max_val
    float defaultBeta;     // PyTorch's default: 1 (Hardtanh)
};

// The case labels of every pointwise kind (one per row of pointwiseTable(); tst_pointwise checks
// the two agree), for the switches over LayerKind that treat them alike, so that a new kind is
// listed once and each such switch stays exhaustive (-Wswitch):
//     switch (kind) { QS_POINTWISE_KIND_CASES: ...; break; case LayerKind::Conv2d: ... }
#define QS_POINTWISE_KIND_CASES                                                                              \
    case LayerKind::Sigmoid:                                                                                 \
    case LayerKind::Tanh:                                                                                    \
    case LayerKind::SiLU:                                                                                    \
    case LayerKind::Hardsigmoid:                                                                             \
    case LayerKind::Hardswish:                                                                               \
    case LayerKind::LeakyReLU:                                                                               \
    case LayerKind::ELU:                                                                                     \
    case LayerKind::GELU:                                                                                    \
    case LayerKind::GELUTanh:                                                                                \
    case LayerKind::Softplus:                                                                                \
    case LayerKind::Mish:                                                                                    \
    case LayerKind::SELU:                                                                                    \
    case LayerKind::CELU:                                                                                    \
    case LayerKind::Softsign:                                                                                \
    case LayerKind::Hardtanh

// The row of `k`, or nullptr when k is not a pointwise activation.
const PointwiseInfo* pointwiseInfo(LayerKind k);
inline bool isPointwise(LayerKind k) { return pointwiseInfo(k) != nullptr; }
std::span<const PointwiseInfo> pointwiseTable();

// y[i] = f(x[i]) for kind k (alpha: LeakyReLU's slope, ELU's alpha, Hardtanh's min_val; beta:
// Hardtanh's max_val; ignored by the others). One compiled body for every caller (not inlined), so
// identical inputs give identical bits. NaN stays NaN.
void pointwiseApply(LayerKind k, float alpha, float beta, const float* x, float* y, std::size_t n);
// dx[i] = dy[i] f'(x[i]) (y = f(x), as forward gave it). Hardtanh: dy strictly inside
// (min_val, max_val), 0 at and beyond the bounds (PyTorch's hardtanh_backward).
void pointwiseGradient(LayerKind k, float alpha, float beta, const float* x, const float* y, const float* dy, float* dx, std::size_t n);

class Pointwise final : public Layer {
public:
    // Throws ConfigError when kind is not pointwise, or alpha is not finite (ELU: not > 0 is allowed,
    // as PyTorch allows it), or CELU's alpha is 0; Hardtanh: when min_val (alpha) is not below max_val (beta), either is
    // NaN, or both are infinite. Parameters a kind does not have are stored as 0.
    Pointwise(std::string name, LayerKind kind, std::optional<float> alpha = std::nullopt, std::optional<float> beta = std::nullopt);
    LayerKind kind() const override { return m_kind; }
    float alpha() const { return m_alpha; }
    float beta() const { return m_beta; }
    Shape outputShape(const Shape& in) const override { return in; }
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;

private:
    LayerKind m_kind;
    float m_alpha;
    float m_beta;
};

// Empty when (min_val, max_val) are bounds a Hardtanh can take, else why not ("min_val 2 is not
// below max_val 1"), for the callers' error messages.
std::string hardtanhBoundsProblem(float minVal, float maxVal);

} // namespace quantscope
