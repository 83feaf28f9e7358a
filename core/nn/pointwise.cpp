#include "nn/pointwise.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace quantscope {

namespace {

constexpr PointwiseInfo kTable[] = {
    {LayerKind::Sigmoid, "Sigmoid", "Sigmoid", false, 0.0f, false, 0.0f},
    {LayerKind::Tanh, "Tanh", "Tanh", false, 0.0f, false, 0.0f},
    {LayerKind::SiLU, "SiLU", "", false, 0.0f, false, 0.0f},
    {LayerKind::Hardsigmoid, "Hardsigmoid", "HardSigmoid", false, 0.0f, false, 0.0f},
    {LayerKind::Hardswish, "Hardswish", "", false, 0.0f, false, 0.0f},
    {LayerKind::LeakyReLU, "LeakyReLU", "LeakyRelu", true, 0.01f, false, 0.0f},
    {LayerKind::ELU, "ELU", "Elu", true, 1.0f, false, 0.0f},
    {LayerKind::GELU, "GELU", "", false, 0.0f, false, 0.0f},
    {LayerKind::GELUTanh, "GELUTanh", "", false, 0.0f, false, 0.0f},
    {LayerKind::Hardtanh, "Hardtanh", "Clip", true, -1.0f, true, 1.0f},
    {LayerKind::Softplus, "Softplus", "Softplus", false, 0.0f, false, 0.0f},
    {LayerKind::Mish, "Mish", "", false, 0.0f, false, 0.0f},
    {LayerKind::SELU, "SELU", "Selu", false, 0.0f, false, 0.0f},
    {LayerKind::CELU, "CELU", "Celu", true, 1.0f, false, 0.0f},
    {LayerKind::Softsign, "Softsign", "Softsign", false, 0.0f, false, 0.0f},
};
// nn.Softplus's default threshold: beyond it softplus(x) is x (log1p(exp(20)) - 20 is 2e-9).
constexpr float kSoftplusThreshold = 20.0f;
// SELU's constants (Klambauer et al. 2017, "Self-Normalizing Neural Networks"), as PyTorch's
// elu_kernel takes them: the negative branch's coefficient alpha * scale is formed in double and
// rounded once, like ONNX Selu's float attributes alpha = 1.67326319..., gamma = 1.05070102...
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScaleD = 1.0507009873554804934193349852946;
constexpr float kSeluScale = static_cast<float>(kSeluScaleD);
constexpr float kSeluNegative = static_cast<float>(kSeluAlpha * kSeluScaleD);
// CELU(alpha) = max(0, x) + min(0, alpha (exp(x / alpha) - 1)): PyTorch's elu_kernel with
// input_scale 1 / alpha (formed in double).
inline float celuInputScale(float alpha) { return static_cast<float>(1.0 / static_cast<double>(alpha)); }

constexpr float kSqrt1_2 = 0.70710678118654752440f; // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794; // 1 / sqrt(2 pi)
// GELU's tanh approximation, as PyTorch 1.13's GeluKernelImpl writes it: kBeta = sqrt(2) * (2 / sqrt(pi)) * 0.5.
constexpr float kGeluBeta = static_cast<float>(1.41421356237309504880 * 1.12837916709551257390 * 0.5); // sqrt(2 / pi)
constexpr float kGeluKappa = 0.044715f;

// The formulas of PyTorch's CPU kernels (aten/src/ATen/native/cpu/Activation.cpp,
// UnaryOpsKernel.cpp), in float. Only GELUTanh has a product followed by a sum (x + kappa x^3),
// which the compiler may contract to an FMA: it is computed in pointwiseApply alone, one compiled
// body, so every caller (layer, engine table) gets the same bits.
inline float sigmoidOf(float x) { return 1.0f / (1.0f + std::exp(-x)); }

template <LayerKind K>
void applyRun(float alpha, float beta, const float* __restrict x, float* __restrict y, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        const float v = x[i];
        if constexpr (K == LayerKind::Sigmoid) y[i] = sigmoidOf(v);
        else if constexpr (K == LayerKind::Tanh) y[i] = std::tanh(v);
        else if constexpr (K == LayerKind::SiLU) y[i] = v / (1.0f + std::exp(-v));
        else if constexpr (K == LayerKind::Hardsigmoid) y[i] = std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f;
        else if constexpr (K == LayerKind::Hardswish) y[i] = v * std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f;
        else if constexpr (K == LayerKind::LeakyReLU) y[i] = v > 0.0f ? v : v * alpha;
        else if constexpr (K == LayerKind::ELU) y[i] = v > 0.0f ? v : alpha * std::expm1(v);
        else if constexpr (K == LayerKind::GELU) y[i] = 0.5f * v * (1.0f + std::erf(v * kSqrt1_2));
        else if constexpr (K == LayerKind::GELUTanh) {
            const float inner = kGeluBeta * (v + kGeluKappa * (v * v * v));
            y[i] = 0.5f * v * (1.0f + std::tanh(inner));
        } else if constexpr (K == LayerKind::Hardtanh) {
            y[i] = std::min(std::max(v, alpha), beta); // max(NaN, a) and min(NaN, b) are NaN: at::clamp's NaN
        } else if constexpr (K == LayerKind::Softplus) {
            y[i] = v > kSoftplusThreshold ? v : std::log1p(std::exp(v));
        } else if constexpr (K == LayerKind::Mish) {
            y[i] = v * std::tanh(std::log1p(std::exp(v))); // exp's overflow gives tanh(inf) = 1: y = x
        } else if constexpr (K == LayerKind::SELU) {
            y[i] = v > 0.0f ? v * kSeluScale : kSeluNegative * std::expm1(v);
        } else if constexpr (K == LayerKind::CELU) {
            y[i] = v > 0.0f ? v : alpha * std::expm1(v * celuInputScale(alpha));
        } else if constexpr (K == LayerKind::Softsign) {
            y[i] = v / (std::abs(v) + 1.0f); // F.softsign: x / (|x| + 1)
        }
    }
}

} // namespace

std::span<const PointwiseInfo> pointwiseTable() { return kTable; }

const PointwiseInfo* pointwiseInfo(LayerKind k)
{
    for (const PointwiseInfo& r : kTable)
        if (r.kind == k) return &r;
    return nullptr;
}

[[gnu::noinline]] void pointwiseApply(LayerKind k, float alpha, float beta, const float* x, float* y, std::size_t n)
{
    switch (k) {
    case LayerKind::Sigmoid: return applyRun<LayerKind::Sigmoid>(alpha, beta, x, y, n);
    case LayerKind::Tanh: return applyRun<LayerKind::Tanh>(alpha, beta, x, y, n);
    case LayerKind::SiLU: return applyRun<LayerKind::SiLU>(alpha, beta, x, y, n);
    case LayerKind::Hardsigmoid: return applyRun<LayerKind::Hardsigmoid>(alpha, beta, x, y, n);
    case LayerKind::Hardswish: return applyRun<LayerKind::Hardswish>(alpha, beta, x, y, n);
    case LayerKind::LeakyReLU: return applyRun<LayerKind::LeakyReLU>(alpha, beta, x, y, n);
    case LayerKind::ELU: return applyRun<LayerKind::ELU>(alpha, beta, x, y, n);
    case LayerKind::GELU: return applyRun<LayerKind::GELU>(alpha, beta, x, y, n);
    case LayerKind::GELUTanh: return applyRun<LayerKind::GELUTanh>(alpha, beta, x, y, n);
    case LayerKind::Hardtanh: return applyRun<LayerKind::Hardtanh>(alpha, beta, x, y, n);
    case LayerKind::Softplus: return applyRun<LayerKind::Softplus>(alpha, beta, x, y, n);
    case LayerKind::Mish: return applyRun<LayerKind::Mish>(alpha, beta, x, y, n);
    case LayerKind::SELU: return applyRun<LayerKind::SELU>(alpha, beta, x, y, n);
    case LayerKind::CELU: return applyRun<LayerKind::CELU>(alpha, beta, x, y, n);
    case LayerKind::Softsign: return applyRun<LayerKind::Softsign>(alpha, beta, x, y, n);
    default: throw Error(std::string("internal error: ") + layerKindName(k) + " is not a pointwise activation");
    }
}

void pointwiseGradient(LayerKind k, float alpha, float beta, const float* x, const float* y, const float* dy, float* dx, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        const float v = x[i], g = dy[i];
        switch (k) {
        case LayerKind::Sigmoid: dx[i] = g * y[i] * (1.0f - y[i]); break; // s (1 - s)
        case LayerKind::Tanh: dx[i] = g * (1.0f - y[i] * y[i]); break;    // 1 - tanh^2
        case LayerKind::SiLU: {                                           // s (1 + x (1 - s))
            const float s = sigmoidOf(v);
            dx[i] = g * s * (1.0f + v * (1.0f - s));
            break;
        }
        // PyTorch's hardsigmoid_backward: g * (1/6) strictly inside (-3, 3), 0 at and beyond the bounds.
        case LayerKind::Hardsigmoid: dx[i] = v > -3.0f && v < 3.0f ? g * (1.0f / 6.0f) : 0.0f; break;
        // PyTorch's hardswish_backward (1.13, 033/034 golden): 0 below -3, x/3 + 1/2 on [-3, 3), 1 from 3 on.
        case LayerKind::Hardswish: dx[i] = v < -3.0f ? 0.0f : (v < 3.0f ? g * (v / 3.0f + 0.5f) : g); break;
        case LayerKind::LeakyReLU: dx[i] = v > 0.0f ? g : g * alpha; break;
        case LayerKind::ELU: dx[i] = v > 0.0f ? g : g * alpha * std::exp(v); break;
        case LayerKind::GELU: { // Phi(x) + x phi(x)
            const double xd = v;
            const double cdf = 0.5 * (1.0 + std::erf(xd * kSqrt1_2));
            const double pdf = kInvSqrt2Pi * std::exp(-0.5 * xd * xd);
            dx[i] = static_cast<float>(g * (cdf + xd * pdf));
            break;
        }
        case LayerKind::GELUTanh: { // PyTorch 1.13's GeluBackwardKernelImpl (tanh): d/dx of 0.5 x (1 + tanh(u))
            const float xsq = v * v;
            const float u = kGeluBeta * (v + kGeluKappa * (xsq * v));
            const float t = std::tanh(u);
            const float left = 0.5f * v, right = 1.0f + t;
            const float du = kGeluBeta * (1.0f + 3.0f * kGeluKappa * xsq);
            dx[i] = g * (0.5f * right + left * (1.0f - t * t) * du);
            break;
        }
        // PyTorch's hardtanh_backward: 0 where x <= min_val or x >= max_val.
        case LayerKind::Hardtanh: dx[i] = v > alpha && v < beta ? g : 0.0f; break;
        case LayerKind::Softplus: { // PyTorch's softplus_backward: g z / (z + 1), z = exp(x); g beyond the threshold
            const float z = std::exp(v);
            dx[i] = v > kSoftplusThreshold ? g : g * z / (z + 1.0f);
            break;
        }
        case LayerKind::Mish: { // PyTorch's mish_backward: g (t + x s (1 - t^2)), t = tanh(softplus(x)), s = sigmoid(x)
            const float s = sigmoidOf(v);
            const float t = std::tanh(std::log1p(std::exp(v)));
            dx[i] = g * (t + v * s * (1.0f - t * t));
            break;
        }
        // PyTorch's elu_backward (is_result false): g * input_scale * alpha * scale * exp(x * input_scale) at x <= 0.
        case LayerKind::SELU: dx[i] = v > 0.0f ? g * kSeluScale : g * kSeluNegative * std::exp(v); break;
        case LayerKind::CELU: {
            const float s = celuInputScale(alpha);
            dx[i] = v > 0.0f ? g : g * s * alpha * std::exp(v * s);
            break;
        }
        case LayerKind::Softsign: { // autograd through x / (|x| + 1): g / d - g ((x / d) / d) sgn(x), d = |x| + 1
            const float d = std::abs(v) + 1.0f;
            const float sgn = v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
            dx[i] = g / d + (-g * ((v / d) / d)) * sgn;
            break;
        }
        default: throw Error(std::string("internal error: ") + layerKindName(k) + " is not a pointwise activation");
        }
    }
}

std::string hardtanhBoundsProblem(float minVal, float maxVal)
{
    char buf[96];
    if (std::isnan(minVal) || std::isnan(maxVal)) std::snprintf(buf, sizeof buf, "a bound is NaN (min_val %g, max_val %g)", double(minVal), double(maxVal));
    else if (!(minVal < maxVal)) std::snprintf(buf, sizeof buf, "min_val %g is not below max_val %g", double(minVal), double(maxVal));
    else if (std::isinf(minVal) && std::isinf(maxVal)) return "both bounds are infinite (it clamps nothing)";
    else return {};
    return buf;
}

Pointwise::Pointwise(std::string name, LayerKind kind, std::optional<float> alpha, std::optional<float> beta)
    : Layer(std::move(name)), m_kind(kind)
{
    const PointwiseInfo* info = pointwiseInfo(kind);
    if (!info) throw ConfigError(this->name() + ": " + layerKindName(kind) + " is not a pointwise activation");
    m_alpha = info->hasAlpha ? alpha.value_or(info->defaultAlpha) : 0.0f;
    m_beta = info->hasBeta ? beta.value_or(info->defaultBeta) : 0.0f;
    if (kind == LayerKind::Hardtanh) {
        if (const std::string why = hardtanhBoundsProblem(m_alpha, m_beta); !why.empty())
            throw ConfigError(this->name() + ": Hardtanh " + why);
    } else if (!std::isfinite(m_alpha)) {
        throw ConfigError(this->name() + ": " + info->name + " alpha must be a finite number");
    } else if (kind == LayerKind::CELU && m_alpha == 0.0f) {
        throw ConfigError(this->name() + ": CELU alpha must not be 0 (it divides x)");
    }
}

void Pointwise::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(x.shape());
    const std::size_t n = x.numel();
    const float* in = x.data();
    float* out = y.data();
    const LayerKind k = m_kind;
    const float a = m_alpha, c = m_beta;
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) { pointwiseApply(k, a, c, in + b, out + b, e - b); });
}

void Pointwise::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (y.shape() != x.shape()) throw ConfigError(name() + ": backward without a matching forward");
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t n = x.numel();
    const float *xv = x.data(), *yv = y.data(), *g = dy.data();
    float* out = dx.data();
    const LayerKind k = m_kind;
    const float a = m_alpha, c = m_beta;
    parallelChunks(n, elementwiseGrain(n),
                   [=](std::size_t b, std::size_t e) { pointwiseGradient(k, a, c, xv + b, yv + b, g + b, out + b, e - b); });
}

std::string Pointwise::describe() const
{
    if (m_kind == LayerKind::GELUTanh) return "approximate tanh";
    char buf[64];
    if (m_kind == LayerKind::Hardtanh) {
        std::snprintf(buf, sizeof buf, "min_val %g, max_val %g", static_cast<double>(m_alpha), static_cast<double>(m_beta));
        return buf;
    }
    if (m_kind != LayerKind::LeakyReLU && m_kind != LayerKind::ELU) return {};
    std::snprintf(buf, sizeof buf, "%s %g", m_kind == LayerKind::LeakyReLU ? "negative_slope" : "alpha", static_cast<double>(m_alpha));
    return buf;
}

} // namespace quantscope
