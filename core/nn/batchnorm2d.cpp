#include "nn/batchnorm2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <cmath>

namespace quantscope {

BatchNorm2d::BatchNorm2d(std::string name, std::size_t channels, float eps, float momentum)
    : Layer(std::move(name)), m_c(channels), m_eps(eps), m_momentum(momentum)
{
    m_gamma.name = "gamma";
    m_gamma.value = Tensor({channels}, 1.0f);
    m_gamma.grad = Tensor({channels});
    m_beta.name = "beta";
    m_beta.value = Tensor({channels});
    m_beta.grad = Tensor({channels});
    m_runMean = Tensor({channels}, 0.0f);
    m_runVar = Tensor({channels}, 1.0f);
}

Shape BatchNorm2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[1] != m_c)
        throw ConfigError(name() + ": expected input (N," + std::to_string(m_c) + ",H,W), got " + shapeString(in));
    return in;
}

// y = gamma * (x - mean_c) / sqrt(var_c + eps) + beta, statistics over (N, H, W)
void BatchNorm2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    y.resize(outputShape(x.shape()));
    const std::size_t N = x.dim(0), HW = x.dim(2) * x.dim(3), M = N * HW;
    const bool batchStats = ctx.training && !m_frozen;
    if (ctx.training) {
        m_xhat.resize(x.shape());
        m_invStd.assign(m_c, 0.0f);
    }
    const float* g = m_gamma.forwardValue().data();
    const float* b = m_beta.forwardValue().data();
    parallelFor(m_c, [&](std::size_t c) {
        float mean, var;
        if (batchStats) {
            double s = 0.0, s2 = 0.0;
            for (std::size_t n = 0; n < N; ++n) {
                const float* p = x.data() + (n * m_c + c) * HW;
                for (std::size_t i = 0; i < HW; ++i) s += p[i];
            }
            mean = static_cast<float>(s / static_cast<double>(M));
            for (std::size_t n = 0; n < N; ++n) {
                const float* p = x.data() + (n * m_c + c) * HW;
                for (std::size_t i = 0; i < HW; ++i) {
                    const double d = p[i] - mean;
                    s2 += d * d;
                }
            }
            var = static_cast<float>(s2 / static_cast<double>(M));
            const float unbiased = M > 1 ? static_cast<float>(s2 / static_cast<double>(M - 1)) : var;
            m_runMean[c] = (1.0f - m_momentum) * m_runMean[c] + m_momentum * mean;
            m_runVar[c] = (1.0f - m_momentum) * m_runVar[c] + m_momentum * unbiased;
        } else {
            mean = m_runMean[c];
            var = m_runVar[c];
        }
        const float inv = 1.0f / std::sqrt(var + m_eps);
        if (ctx.training) m_invStd[c] = inv;
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t off = (n * m_c + c) * HW;
            for (std::size_t i = 0; i < HW; ++i) {
                const float xh = (x[off + i] - mean) * inv;
                if (ctx.training) m_xhat[off + i] = xh;
                y[off + i] = g[c] * xh + b[c];
            }
        }
    });
}

// Batch statistics: dx = gamma*inv/M * (M*dy - sum(dy) - xhat*sum(dy*xhat))
// Frozen statistics: dx = gamma*inv*dy
void BatchNorm2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    const std::size_t N = x.dim(0), HW = x.dim(2) * x.dim(3);
    const float M = static_cast<float>(N * HW);
    if (needInputGrad) dx.resize(x.shape());
    const float* g = m_gamma.forwardValue().data();
    parallelFor(m_c, [&](std::size_t c) {
        double sdy = 0.0, sdyx = 0.0;
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t off = (n * m_c + c) * HW;
            for (std::size_t i = 0; i < HW; ++i) {
                sdy += dy[off + i];
                sdyx += static_cast<double>(dy[off + i]) * m_xhat[off + i];
            }
        }
        m_gamma.grad[c] = static_cast<float>(sdyx);
        m_beta.grad[c] = static_cast<float>(sdy);
        if (!needInputGrad) return;
        const float inv = m_invStd[c];
        if (m_frozen) {
            for (std::size_t n = 0; n < N; ++n) {
                const std::size_t off = (n * m_c + c) * HW;
                for (std::size_t i = 0; i < HW; ++i) dx[off + i] = g[c] * inv * dy[off + i];
            }
            return;
        }
        const float k = g[c] * inv / M;
        const float a = static_cast<float>(sdy), bsum = static_cast<float>(sdyx);
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t off = (n * m_c + c) * HW;
            for (std::size_t i = 0; i < HW; ++i) dx[off + i] = k * (M * dy[off + i] - a - m_xhat[off + i] * bsum);
        }
    });
}

} // namespace quantscope
