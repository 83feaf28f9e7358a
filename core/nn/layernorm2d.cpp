#include "nn/layernorm2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <cmath>
#include <cstdio>

namespace quantscope {

[[gnu::noinline]] void layerNorm2dImage(const float* __restrict x, std::size_t C, std::size_t plane, float eps,
                                        const float* gamma, const float* beta, float* __restrict y, float* mean, float* rstd)
{
    // Channel-major loops (the pixels of one channel are contiguous), one double per pixel.
    std::vector<double> s(plane, 0.0), q(plane, 0.0);
    for (std::size_t c = 0; c < C; ++c) {
        const float* xc = x + c * plane;
        for (std::size_t p = 0; p < plane; ++p) s[p] += xc[p];
    }
    const double invC = 1.0 / static_cast<double>(C);
    for (std::size_t p = 0; p < plane; ++p) s[p] *= invC;
    for (std::size_t c = 0; c < C; ++c) {
        const float* xc = x + c * plane;
        for (std::size_t p = 0; p < plane; ++p) {
            const double d = xc[p] - s[p];
            q[p] += d * d;
        }
    }
    std::vector<float> mu(plane), r(plane);
    for (std::size_t p = 0; p < plane; ++p) {
        mu[p] = static_cast<float>(s[p]);
        r[p] = static_cast<float>(1.0 / std::sqrt(q[p] * invC + static_cast<double>(eps)));
        if (mean) mean[p] = mu[p];
        if (rstd) rstd[p] = r[p];
    }
    for (std::size_t c = 0; c < C; ++c) {
        const float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
        const float* xc = x + c * plane;
        float* yc = y + c * plane;
        for (std::size_t p = 0; p < plane; ++p) yc[p] = std::fma((xc[p] - mu[p]) * r[p], g, b);
    }
}

LayerNorm2d::LayerNorm2d(std::string name, std::size_t channels, float eps, bool affine)
    : Layer(std::move(name)), m_channels(channels), m_eps(eps), m_params(this->name(), "LayerNorm2d", channels, affine)
{
    if (channels == 0) throw ConfigError(this->name() + ": LayerNorm2d of 0 channels");
    if (!(eps > 0.0f) || !std::isfinite(eps)) throw ConfigError(this->name() + ": LayerNorm2d eps must be a positive finite number");
}

std::vector<Param*> LayerNorm2d::params() { return m_params.params(); }

Shape LayerNorm2d::outputShape(const Shape& in) const { return m_params.outputShape(in); }

void LayerNorm2d::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    outputShape(x.shape());
    y.resize(x.shape());
    const std::size_t N = x.dim(0), C = m_channels, plane = x.numel() / std::max<std::size_t>(1, N * C);
    m_mean.resize(N * plane);
    m_rstd.resize(N * plane);
    m_statsImages = N;
    const float* gamma = m_params.weightData();
    const float* beta = m_params.biasData();
    const float* in = x.data();
    float* out = y.data();
    float *mean = m_mean.data(), *rstd = m_rstd.data();
    const float eps = m_eps;
    parallelChunks(N, std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, C * plane)), [=](std::size_t b, std::size_t e) {
        for (std::size_t n = b; n < e; ++n)
            layerNorm2dImage(in + n * C * plane, C, plane, eps, gamma, beta, out + n * C * plane, mean + n * plane, rstd + n * plane);
    });
}

void LayerNorm2d::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (y.shape() != x.shape()) throw ConfigError(name() + ": backward without a matching forward");
    const std::size_t N = x.dim(0), C = m_channels, plane = x.numel() / std::max<std::size_t>(1, N * C);
    if (m_statsImages != N || m_mean.size() != N * plane) { // statistics of this x (forward ran on another batch)
        std::vector<float> scratch(C * plane);
        m_mean.resize(N * plane);
        m_rstd.resize(N * plane);
        for (std::size_t n = 0; n < N; ++n)
            layerNorm2dImage(x.data() + n * C * plane, C, plane, m_eps, nullptr, nullptr, scratch.data(), &m_mean[n * plane],
                             &m_rstd[n * plane]);
        m_statsImages = N;
    }
    const float* gamma = m_params.weightData();
    const float *xv = x.data(), *g = dy.data(), *meanv = m_mean.data(), *rstdv = m_rstd.data();
    if (needInputGrad) dx.resize(x.shape());
    float* out = needInputGrad ? dx.data() : nullptr;
    // per image and channel: sum dy and sum dy xhat (double), for the parameter gradients
    std::vector<double> sdy(N * C), sdyx(N * C);
    double *sdyv = sdy.data(), *sdyxv = sdyx.data();
    const double invC = 1.0 / static_cast<double>(C);
    parallelChunks(N, std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, C * plane)), [=](std::size_t b, std::size_t e) {
        std::vector<double> A(plane), B(plane);
        for (std::size_t n = b; n < e; ++n) {
            const float *mu = meanv + n * plane, *r = rstdv + n * plane;
            std::fill(A.begin(), A.end(), 0.0);
            std::fill(B.begin(), B.end(), 0.0);
            for (std::size_t c = 0; c < C; ++c) {
                const float* xc = xv + (n * C + c) * plane;
                const float* gc = g + (n * C + c) * plane;
                const double gm = gamma ? gamma[c] : 1.0;
                double s = 0.0, sx = 0.0;
                for (std::size_t p = 0; p < plane; ++p) {
                    const double xhat = static_cast<double>((xc[p] - mu[p]) * r[p]);
                    s += gc[p];
                    sx += static_cast<double>(gc[p]) * xhat;
                    A[p] += gm * gc[p];
                    B[p] += gm * gc[p] * xhat;
                }
                sdyv[n * C + c] = s;
                sdyxv[n * C + c] = sx;
            }
            if (!out) continue;
            for (std::size_t c = 0; c < C; ++c) {
                const float* xc = xv + (n * C + c) * plane;
                const float* gc = g + (n * C + c) * plane;
                float* oc = out + (n * C + c) * plane;
                const double gm = gamma ? gamma[c] : 1.0;
                for (std::size_t p = 0; p < plane; ++p) {
                    const double xhat = static_cast<double>((xc[p] - mu[p]) * r[p]);
                    oc[p] = static_cast<float>(static_cast<double>(r[p]) * (gm * gc[p] - (A[p] + xhat * B[p]) * invC));
                }
            }
        }
    });
    if (!m_params.affine()) return;
    Param &weight = m_params.weight(), &bias = m_params.bias();
    weight.grad.resize({C});
    bias.grad.resize({C});
    for (std::size_t c = 0; c < C; ++c) {
        double dg = 0.0, db = 0.0;
        for (std::size_t n = 0; n < N; ++n) {
            dg += sdyx[n * C + c];
            db += sdy[n * C + c];
        }
        weight.grad[c] = static_cast<float>(dg);
        bias.grad[c] = static_cast<float>(db);
    }
}

std::string LayerNorm2d::describe() const
{
    char buf[96];
    std::snprintf(buf, sizeof buf, "over the %zu channels of each pixel, eps %g%s", m_channels, static_cast<double>(m_eps),
                  m_params.affine() ? "" : ", no affine");
    return buf;
}

} // namespace quantscope
