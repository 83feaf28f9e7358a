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

namespace {

// Sums over one plane in a fixed association order (16 interleaved float lanes, so the loop
// vectorises and the result does not depend on threads or alignment); planes are then summed
// in double, so the batch statistics stay accurate for large N*H*W.
double planeSum(const float* __restrict p, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += p[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += p[i + j];
    double s = 0.0;
    for (float a : acc) s += a;
    return s;
}

// sum (p - mean)^2
double planeSquaredDeviation(const float* __restrict p, std::size_t n, float mean)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) {
            const float d = p[i + j] - mean;
            acc[j] += d * d;
        }
    for (std::size_t j = 0; i + j < n; ++j) {
        const float d = p[i + j] - mean;
        acc[j] += d * d;
    }
    double s = 0.0;
    for (float a : acc) s += a;
    return s;
}

// sum dy, sum dy * xhat
void planeGradSums(const float* __restrict dy, const float* __restrict xh, std::size_t n, double& sdy, double& sdyx)
{
    float a[16] = {}, b[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) {
            a[j] += dy[i + j];
            b[j] += dy[i + j] * xh[i + j];
        }
    for (std::size_t j = 0; i + j < n; ++j) {
        a[j] += dy[i + j];
        b[j] += dy[i + j] * xh[i + j];
    }
    for (std::size_t j = 0; j < 16; ++j) {
        sdy += a[j];
        sdyx += b[j];
    }
}

} // namespace

// y = gamma * (x - mean_c) / sqrt(var_c + eps) + beta, statistics over (N, H, W)
void BatchNorm2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    y.resize(outputShape(x.shape()));
    const std::size_t N = x.dim(0), HW = x.dim(2) * x.dim(3), M = N * HW;
    const bool batchStats = ctx.training && !m_frozen;
    const bool training = ctx.training;
    if (training) {
        m_xhat.resize(x.shape());
        m_invStd.assign(m_c, 0.0f);
    }
    const float* g = m_gamma.forwardValue().data();
    const float* b = m_beta.forwardValue().data();
    parallelFor(m_c, [&](std::size_t c) {
        float mean, var;
        if (batchStats) {
            double s = 0.0, s2 = 0.0;
            for (std::size_t n = 0; n < N; ++n) s += planeSum(x.data() + (n * m_c + c) * HW, HW);
            mean = static_cast<float>(s / static_cast<double>(M));
            for (std::size_t n = 0; n < N; ++n) s2 += planeSquaredDeviation(x.data() + (n * m_c + c) * HW, HW, mean);
            var = static_cast<float>(s2 / static_cast<double>(M));
            const float unbiased = M > 1 ? static_cast<float>(s2 / static_cast<double>(M - 1)) : var;
            m_runMean[c] = (1.0f - m_momentum) * m_runMean[c] + m_momentum * mean;
            m_runVar[c] = (1.0f - m_momentum) * m_runVar[c] + m_momentum * unbiased;
        } else {
            mean = m_runMean[c];
            var = m_runVar[c];
        }
        const float inv = 1.0f / std::sqrt(var + m_eps);
        const float gc = g[c], bc = b[c];
        if (training) m_invStd[c] = inv;
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t off = (n * m_c + c) * HW;
            const float* __restrict xp = x.data() + off;
            float* __restrict yp = y.data() + off;
            if (training) {
                float* __restrict xh = m_xhat.data() + off;
                for (std::size_t i = 0; i < HW; ++i) {
                    const float v = (xp[i] - mean) * inv;
                    xh[i] = v;
                    yp[i] = gc * v + bc;
                }
            } else {
                const float scale = gc * inv, shift = bc - mean * gc * inv;
                for (std::size_t i = 0; i < HW; ++i) yp[i] = xp[i] * scale + shift;
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
            planeGradSums(dy.data() + off, m_xhat.data() + off, HW, sdy, sdyx);
        }
        m_gamma.grad[c] = static_cast<float>(sdyx);
        m_beta.grad[c] = static_cast<float>(sdy);
        if (!needInputGrad) return;
        const float inv = m_invStd[c];
        if (m_frozen) {
            const float k = g[c] * inv;
            for (std::size_t n = 0; n < N; ++n) {
                const std::size_t off = (n * m_c + c) * HW;
                const float* __restrict gp = dy.data() + off;
                float* __restrict out = dx.data() + off;
                for (std::size_t i = 0; i < HW; ++i) out[i] = k * gp[i];
            }
            return;
        }
        const float k = g[c] * inv / M;
        const float a = static_cast<float>(sdy), bsum = static_cast<float>(sdyx);
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t off = (n * m_c + c) * HW;
            const float* __restrict gp = dy.data() + off;
            const float* __restrict xh = m_xhat.data() + off;
            float* __restrict out = dx.data() + off;
            for (std::size_t i = 0; i < HW; ++i) out[i] = k * (M * gp[i] - a - xh[i] * bsum);
        }
    });
}

} // namespace quantscope
