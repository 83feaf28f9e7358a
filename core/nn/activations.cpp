#include "nn/activations.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace quantscope {

namespace {
// y = min(max(x, 0), cap), elementwise in parallel chunks.
void clampForward(const Tensor& x, Tensor& y, float cap)
{
    y.resize(x.shape());
    const std::size_t n = x.numel();
    const float* __restrict in = x.data();
    float* __restrict out = y.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
        const float* __restrict src = in;
        float* __restrict dst = out;
        for (std::size_t i = b; i < e; ++i) dst[i] = std::min(std::max(src[i], 0.0f), cap);
    });
}
} // namespace

// y = max(x, 0)
void ReLU::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    clampForward(x, y, std::numeric_limits<float>::infinity());
}

// dx = dy * [y > 0]
void ReLU::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (y.shape() != x.shape()) throw ConfigError(name() + ": backward without a matching forward");
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t n = x.numel();
    const float* __restrict yv = y.data();
    const float* __restrict g = dy.data();
    float* __restrict out = dx.data();
    // Branch-free (ReLU outputs are sparse in no predictable pattern) and with unconditional
    // loads, so the loop vectorises.
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
        const float* __restrict yy = yv;
        const float* __restrict gg = g;
        float* __restrict dst = out;
        for (std::size_t i = b; i < e; ++i) {
            const float gi = gg[i];
            dst[i] = yy[i] > 0.0f ? gi : 0.0f;
        }
    });
}

namespace {
// LogSoftmax and Softmax: (N, K) class scores, row by row.
Shape classRows(const Layer& l, const Shape& in)
{
    if (in.size() != 2) throw ConfigError(l.name() + ": expected input (N,K), got " + shapeString(in));
    return in;
}

template <class Row>
void forwardRows(const Layer& l, const Tensor& x, Tensor& y, Row row)
{
    y.resize(classRows(l, x.shape()));
    const std::size_t N = x.dim(0), K = x.dim(1);
    for (std::size_t n = 0; n < N; ++n) row(x.data() + n * K, y.data() + n * K, K);
}

// row(dy, y, dx, K) for each row, after the checks (the caller's checkOutputGradient first).
template <class Row>
void backwardRows(const Layer& l, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad, Row row)
{
    if (y.shape() != x.shape()) throw ConfigError(l.name() + ": backward without a matching forward");
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t N = x.dim(0), K = x.dim(1);
    for (std::size_t n = 0; n < N; ++n) row(dy.data() + n * K, y.data() + n * K, dx.data() + n * K, K);
}
} // namespace

Shape LogSoftmax::outputShape(const Shape& in) const { return classRows(*this, in); }

void logSoftmaxRow(const float* x, float* y, std::size_t k)
{
    const float m = *std::max_element(x, x + k);
    double s = 0.0;
    for (std::size_t j = 0; j < k; ++j) s += std::exp(static_cast<double>(x[j] - m));
    const float lse = m + static_cast<float>(std::log(s));
    for (std::size_t j = 0; j < k; ++j) y[j] = x[j] - lse;
}

// y_j = x_j - log sum_i exp(x_i)
void LogSoftmax::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/) { forwardRows(*this, x, y, logSoftmaxRow); }

// dx_j = dy_j - exp(y_j) * sum_i dy_i
void LogSoftmax::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    backwardRows(*this, x, y, dy, dx, needInputGrad, [](const float* g, const float* yr, float* d, std::size_t K) {
        double s = 0.0;
        for (std::size_t j = 0; j < K; ++j) s += g[j];
        for (std::size_t j = 0; j < K; ++j) d[j] = g[j] - std::exp(yr[j]) * static_cast<float>(s);
    });
}

Shape Softmax::outputShape(const Shape& in) const { return classRows(*this, in); }

void softmaxRow(const float* x, float* y, std::size_t k)
{
    const float m = *std::max_element(x, x + k);
    double s = 0.0;
    for (std::size_t j = 0; j < k; ++j) s += std::exp(static_cast<double>(x[j] - m));
    const double inv = 1.0 / s;
    for (std::size_t j = 0; j < k; ++j) y[j] = static_cast<float>(std::exp(static_cast<double>(x[j] - m)) * inv);
}

void Softmax::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/) { forwardRows(*this, x, y, softmaxRow); }

// dx_j = y_j (dy_j - sum_i dy_i y_i)
void Softmax::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    backwardRows(*this, x, y, dy, dx, needInputGrad, [](const float* g, const float* yr, float* d, std::size_t K) {
        double s = 0.0;
        for (std::size_t j = 0; j < K; ++j) s += static_cast<double>(g[j]) * yr[j];
        for (std::size_t j = 0; j < K; ++j) d[j] = yr[j] * (g[j] - static_cast<float>(s));
    });
}

Shape Flatten::outputShape(const Shape& in) const
{
    if (in.empty()) throw ConfigError(name() + ": cannot flatten a scalar");
    std::size_t rest = 1;
    for (std::size_t i = 1; i < in.size(); ++i) rest *= in[i];
    return {in[0], rest};
}

void Flatten::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShape(x.shape()));
    std::memcpy(y.data(), x.data(), x.numel() * sizeof(float));
}

void Flatten::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    dx.resize(x.shape());
    std::memcpy(dx.data(), dy.data(), dy.numel() * sizeof(float));
}

// y = min(max(x, 0), 6)
void ReLU6::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/) { clampForward(x, y, 6.0f); }

// dx = dy * [0 < x < 6] (PyTorch's hardtanh_backward: the bounds themselves pass no gradient)
void ReLU6::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t n = x.numel();
    const float* __restrict xv = x.data();
    const float* __restrict g = dy.data();
    float* __restrict out = dx.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
        const float* __restrict xx = xv;
        const float* __restrict gg = g;
        float* __restrict dst = out;
        for (std::size_t i = b; i < e; ++i) {
            const float gi = gg[i];
            dst[i] = (xx[i] > 0.0f && xx[i] < 6.0f) ? gi : 0.0f;
        }
    });
}

} // namespace quantscope
