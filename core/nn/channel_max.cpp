#include "nn/channel_max.h"

#include "tensor/parallel.h"
#include "util/errors.h"

namespace quantscope {

Shape ChannelMax::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[1] == 0)
        throw ConfigError(name() + ": ChannelMax takes (N, C, H, W) maps, got " + shapeString(in));
    return {in[0], 1, in[2], in[3]};
}

void ChannelMax::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    y.resize(outputShape(x.shape()));
    const std::size_t N = x.dim(0), C = x.dim(1), P = x.dim(2) * x.dim(3);
    const bool keep = ctx.training;
    if (keep) m_argmax.assign(N * P, 0);
    const float* in = x.data();
    float* out = y.data();
    std::uint32_t* arg = keep ? m_argmax.data() : nullptr;
    parallelChunks(N, std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, C * P)), [=](std::size_t b, std::size_t e) {
        for (std::size_t n = b; n < e; ++n) {
            const float* xn = in + n * C * P;
            float* yn = out + n * P;
            std::uint32_t* an = arg ? arg + n * P : nullptr;
            for (std::size_t p = 0; p < P; ++p) yn[p] = xn[p];
            if (an) std::fill(an, an + P, 0u);
            for (std::size_t c = 1; c < C; ++c) { // channel-major: strictly larger moves the maximum (ties keep the first)
                const float* xc = xn + c * P;
                for (std::size_t p = 0; p < P; ++p)
                    if (xc[p] > yn[p]) {
                        yn[p] = xc[p];
                        if (an) an[p] = static_cast<std::uint32_t>(c);
                    }
            }
            // A NaN anywhere in a pixel's channels makes its maximum NaN, as torch.amax does.
            for (std::size_t c = 0; c < C; ++c) {
                const float* xc = xn + c * P;
                for (std::size_t p = 0; p < P; ++p)
                    if (xc[p] != xc[p] && yn[p] == yn[p]) {
                        yn[p] = xc[p];
                        if (an) an[p] = static_cast<std::uint32_t>(c);
                    }
            }
        }
    });
}

void ChannelMax::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    const std::size_t N = x.dim(0), C = x.dim(1), P = x.dim(2) * x.dim(3);
    if (m_argmax.size() != N * P || y.shape() != outputShape(x.shape()))
        throw ConfigError(name() + ": backward without a matching training forward");
    dx.resize(x.shape());
    dx.fill(0.0f);
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t p = 0; p < P; ++p) dx.data()[(n * C + m_argmax[n * P + p]) * P + p] = dy.data()[n * P + p];
}

} // namespace quantscope
