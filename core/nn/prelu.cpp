#include "nn/prelu.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <cmath>
#include <cstdio>

namespace quantscope {

[[gnu::noinline]] void preluApply(float a, const float* __restrict x, float* __restrict y, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : a * x[i];
}

PReLU::PReLU(std::string name, std::size_t slopes, float init) : Layer(std::move(name))
{
    if (slopes == 0) throw ConfigError(this->name() + ": PReLU needs 1 slope or one per channel, not 0");
    if (!std::isfinite(init)) throw ConfigError(this->name() + ": the PReLU slope must be a finite number");
    checkWeightCount(this->name(), "PReLU " + std::to_string(slopes), {slopes});
    m_weight.name = "weight";
    m_weight.value = Tensor({slopes}, init);
    m_weight.grad = Tensor({slopes});
}

Shape PReLU::outputShape(const Shape& in) const
{
    if (in.size() != 2 && in.size() != 4)
        throw ConfigError(name() + ": PReLU takes (N, C, H, W) or (N, C), got " + shapeString(in));
    if (slopes() != 1 && in[1] != slopes())
        throw ConfigError(name() + ": " + std::to_string(slopes()) + " slopes for an input of " + std::to_string(in[1]) +
                          " channels " + shapeString(in) + " (PReLU takes 1 slope or one per channel)");
    return in;
}

// x: (N, C, plane) with plane = H W (1 for features); runs of one (n, c) each.
void PReLU::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    outputShape(x.shape());
    y.resize(x.shape());
    const std::size_t N = x.dim(0), C = x.dim(1), plane = x.numel() / std::max<std::size_t>(1, N * C);
    const float* a = m_weight.forwardValue().data();
    const bool shared = slopes() == 1;
    const float* in = x.data();
    float* out = y.data();
    parallelChunks(N * C, std::max<std::size_t>(1, 16384 / plane), [=](std::size_t b, std::size_t e) {
        for (std::size_t r = b; r < e; ++r) preluApply(a[shared ? 0 : r % C], in + r * plane, out + r * plane, plane);
    });
}

void PReLU::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (y.shape() != x.shape()) throw ConfigError(name() + ": backward without a matching forward");
    const std::size_t N = x.dim(0), C = x.dim(1), plane = x.numel() / std::max<std::size_t>(1, N * C);
    const float* a = m_weight.forwardValue().data();
    const bool shared = slopes() == 1;
    const float *xv = x.data(), *g = dy.data();
    // da[c] = sum_{n, plane} (x > 0 ? 0 : x dy): per channel in double, images in order, so the
    // sum does not depend on the thread count; a shared slope adds the channels in order.
    std::vector<double> perChannel(C, 0.0);
    parallelChunks(C, 1, [&](std::size_t b, std::size_t e) {
        for (std::size_t c = b; c < e; ++c) {
            double s = 0.0;
            for (std::size_t n = 0; n < N; ++n) {
                const std::size_t o = (n * C + c) * plane;
                for (std::size_t p = 0; p < plane; ++p)
                    if (!(xv[o + p] > 0.0f)) s += static_cast<double>(xv[o + p]) * static_cast<double>(g[o + p]);
            }
            perChannel[c] = s;
        }
    });
    Tensor& da = m_weight.grad;
    da.resize(m_weight.value.shape());
    if (shared) {
        double s = 0.0;
        for (double v : perChannel) s += v;
        da[0] = static_cast<float>(s);
    } else {
        for (std::size_t c = 0; c < C; ++c) da[c] = static_cast<float>(perChannel[c]);
    }
    if (!needInputGrad) return;
    dx.resize(x.shape());
    float* out = dx.data();
    parallelChunks(N * C, std::max<std::size_t>(1, 16384 / plane), [=](std::size_t b, std::size_t e) {
        for (std::size_t r = b; r < e; ++r) {
            const float s = a[shared ? 0 : r % C];
            const std::size_t o = r * plane;
            for (std::size_t p = 0; p < plane; ++p) out[o + p] = xv[o + p] > 0.0f ? g[o + p] : s * g[o + p];
        }
    });
}

std::string PReLU::describe() const
{
    if (slopes() > 1) return std::to_string(slopes()) + " slopes";
    char buf[48];
    std::snprintf(buf, sizeof buf, "slope %g", static_cast<double>(m_weight.value[0]));
    return buf;
}

} // namespace quantscope
