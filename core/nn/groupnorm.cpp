#include "nn/groupnorm.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <cmath>
#include <cstdio>

namespace quantscope {

[[gnu::noinline]] void groupNormImage(const float* __restrict x, std::size_t C, std::size_t plane, std::size_t G, float eps,
                                      const float* gamma, const float* beta, float* __restrict y, float* mean, float* rstd)
{
    const std::size_t Cg = C / G, M = Cg * plane;
    for (std::size_t g = 0; g < G; ++g) {
        const float* xg = x + g * M;
        double s = 0.0;
        for (std::size_t i = 0; i < M; ++i) s += xg[i];
        const double mu = s / static_cast<double>(M);
        double q = 0.0;
        for (std::size_t i = 0; i < M; ++i) {
            const double d = xg[i] - mu;
            q += d * d;
        }
        const double r = 1.0 / std::sqrt(q / static_cast<double>(M) + static_cast<double>(eps));
        if (mean) mean[g] = static_cast<float>(mu);
        if (rstd) rstd[g] = static_cast<float>(r);
        for (std::size_t j = 0; j < Cg; ++j) {
            const std::size_t c = g * Cg + j;
            const double a = r * (gamma ? static_cast<double>(gamma[c]) : 1.0);
            const auto af = static_cast<float>(a);
            const auto bf = static_cast<float>((beta ? static_cast<double>(beta[c]) : 0.0) - mu * a);
            const float* xc = xg + j * plane;
            float* yc = y + c * plane;
            for (std::size_t p = 0; p < plane; ++p) yc[p] = std::fma(xc[p], af, bf);
        }
    }
}

GroupNorm::GroupNorm(std::string name, std::size_t groups, std::size_t channels, float eps, bool affine)
    : Layer(std::move(name)), m_groups(groups), m_channels(channels), m_eps(eps), m_params(this->name(), "GroupNorm", channels, affine)
{
    if (groups == 0 || channels == 0 || channels % groups != 0)
        throw ConfigError(this->name() + ": GroupNorm of " + std::to_string(channels) + " channels in " +
                          std::to_string(groups) + " groups (the group count must divide the channel count)");
    if (!(eps > 0.0f) || !std::isfinite(eps))
        throw ConfigError(this->name() + ": GroupNorm eps must be a positive finite number");
}

std::vector<Param*> GroupNorm::params() { return m_params.params(); }

Shape GroupNorm::outputShape(const Shape& in) const { return m_params.outputShape(in); }

void GroupNorm::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    outputShape(x.shape());
    y.resize(x.shape());
    const std::size_t N = x.dim(0), C = m_channels, G = m_groups, plane = x.numel() / std::max<std::size_t>(1, N * C);
    m_mean.resize(N * G);
    m_rstd.resize(N * G);
    m_statsImages = N;
    const float* gamma = m_params.weightData();
    const float* beta = m_params.biasData();
    const float* in = x.data();
    float* out = y.data();
    float *mean = m_mean.data(), *rstd = m_rstd.data();
    const float eps = m_eps;
    parallelChunks(N, std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, C * plane)), [=](std::size_t b, std::size_t e) {
        for (std::size_t n = b; n < e; ++n)
            groupNormImage(in + n * C * plane, C, plane, G, eps, gamma, beta, out + n * C * plane, mean + n * G, rstd + n * G);
    });
}

void GroupNorm::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (y.shape() != x.shape()) throw ConfigError(name() + ": backward without a matching forward");
    const std::size_t N = x.dim(0), C = m_channels, G = m_groups, Cg = C / G, plane = x.numel() / std::max<std::size_t>(1, N * C);
    const std::size_t M = Cg * plane;
    if (m_statsImages != N || m_mean.size() != N * G) { // statistics of this x (forward ran on another batch)
        std::vector<float> scratch(C * plane);
        m_mean.resize(N * G);
        m_rstd.resize(N * G);
        for (std::size_t n = 0; n < N; ++n)
            groupNormImage(x.data() + n * C * plane, C, plane, G, m_eps, nullptr, nullptr, scratch.data(), &m_mean[n * G], &m_rstd[n * G]);
        m_statsImages = N;
    }
    const float* gamma = m_params.weightData();
    const float *xv = x.data(), *g = dy.data(), *mean = m_mean.data(), *rstd = m_rstd.data();
    if (needInputGrad) dx.resize(x.shape());
    float* out = needInputGrad ? dx.data() : nullptr;
    // per image and channel: sum dy and sum dy x (double), for the parameter gradients and dx
    std::vector<double> sdy(N * C), sdyx(N * C);
    double *sdyv = sdy.data(), *sdyxv = sdyx.data();
    parallelChunks(N, std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, C * plane)), [=](std::size_t b, std::size_t e) {
        for (std::size_t n = b; n < e; ++n) {
            for (std::size_t c = 0; c < C; ++c) {
                const float* xc = xv + (n * C + c) * plane;
                const float* gc = g + (n * C + c) * plane;
                double s = 0.0, sx = 0.0;
                for (std::size_t p = 0; p < plane; ++p) {
                    s += gc[p];
                    sx += static_cast<double>(gc[p]) * static_cast<double>(xc[p]);
                }
                sdyv[n * C + c] = s;
                sdyxv[n * C + c] = sx;
            }
            if (!out) continue;
            for (std::size_t gi = 0; gi < G; ++gi) {
                const double mu = mean[n * G + gi], r = rstd[n * G + gi];
                double A = 0.0, Cx = 0.0;
                for (std::size_t j = 0; j < Cg; ++j) {
                    const std::size_t c = gi * Cg + j;
                    const double gm = gamma ? gamma[c] : 1.0;
                    A += gm * sdyv[n * C + c];
                    Cx += gm * sdyxv[n * C + c];
                }
                const double B = r * (Cx - mu * A), invM = 1.0 / static_cast<double>(M);
                const auto k1 = static_cast<float>(-r * r * B * invM);
                const auto k0 = static_cast<float>(r * r * B * mu * invM - r * A * invM);
                for (std::size_t j = 0; j < Cg; ++j) {
                    const std::size_t c = gi * Cg + j;
                    const auto a = static_cast<float>(r * (gamma ? gamma[c] : 1.0));
                    const float* xc = xv + (n * C + c) * plane;
                    const float* gc = g + (n * C + c) * plane;
                    float* oc = out + (n * C + c) * plane;
                    for (std::size_t p = 0; p < plane; ++p) oc[p] = std::fma(a, gc[p], std::fma(k1, xc[p], k0));
                }
            }
        }
    });
    if (!m_params.affine()) return;
    Param &weight = m_params.weight(), &bias = m_params.bias();
    // dgamma[c] = sum_n rstd (sum dy x - mean sum dy), dbeta[c] = sum_n sum dy: images in order
    weight.grad.resize({C});
    bias.grad.resize({C});
    for (std::size_t c = 0; c < C; ++c) {
        double dg = 0.0, db = 0.0;
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t s = n * G + c / Cg;
            dg += static_cast<double>(rstd[s]) * (sdy[n * C + c] * -static_cast<double>(mean[s]) + sdyx[n * C + c]);
            db += sdy[n * C + c];
        }
        weight.grad[c] = static_cast<float>(dg);
        bias.grad[c] = static_cast<float>(db);
    }
}

std::string GroupNorm::describe() const
{
    char buf[96];
    std::snprintf(buf, sizeof buf, "%zu groups of %zu channels, eps %g%s", m_groups, m_channels / m_groups,
                  static_cast<double>(m_eps), m_params.affine() ? "" : ", no affine");
    return buf;
}

} // namespace quantscope
