#include "nn/maxpool2d.h"

#include "nn/avgpool2d.h" // padPlanes, cropPlanes
#include "tensor/parallel.h"
#include "util/errors.h"

#include <limits>

namespace quantscope {

MaxPool2d::MaxPool2d(std::string name, std::size_t kernel, std::size_t stride, std::size_t padding)
    : Layer(std::move(name)), m_k(kernel), m_stride(stride ? stride : kernel), m_pad(padding)
{
    if (!m_k) throw ConfigError("maxpool2d: kernel must be positive");
    if (2 * m_pad > m_k) throw ConfigError(this->name() + ": padding " + std::to_string(m_pad) + " is more than half the kernel " + std::to_string(m_k));
}

std::string MaxPool2d::describe() const
{
    return std::to_string(m_k) + "x" + std::to_string(m_k) + " s" + std::to_string(m_stride) + (m_pad ? " p" + std::to_string(m_pad) : "");
}

Shape MaxPool2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[2] + 2 * m_pad < m_k || in[3] + 2 * m_pad < m_k)
        throw ConfigError(name() + ": expected input (N,C,H,W) with H,W >= " + std::to_string(m_k) + " with padding, got " +
                          shapeString(in));
    return {in[0], in[1], (in[2] + 2 * m_pad - m_k) / m_stride + 1, (in[3] + 2 * m_pad - m_k) / m_stride + 1};
}

// y[n,c,oy,ox] = max over the k x k window of x padded with -inf
void MaxPool2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    if (m_pad == 0) return poolPadded(x, y, ctx.training);
    padPlanes(x, m_pad, -std::numeric_limits<float>::infinity(), m_padded);
    poolPadded(m_padded, y, ctx.training);
}

void MaxPool2d::poolPadded(const Tensor& x, Tensor& y, bool train)
{
    const Shape os{x.dim(0), x.dim(1), (x.dim(2) - m_k) / m_stride + 1, (x.dim(3) - m_k) / m_stride + 1};
    y.resize(os);
    const std::size_t planes = os[0] * os[1], H = x.dim(2), W = x.dim(3), Ho = os[2], Wo = os[3];
    if (train) m_argmax.resize(planes * Ho * Wo);
    parallelChunks(planes, 16, [&](std::size_t p0, std::size_t p1) {
        for (std::size_t p = p0; p < p1; ++p) {
            const float* in = x.data() + p * H * W;
            float* out = y.data() + p * Ho * Wo;
            std::uint32_t* am = train ? m_argmax.data() + p * Ho * Wo : nullptr;
            if (m_k == 2 && m_stride == 2) {
                // Fast path for the common 2x2/2 pool. '>' keeps the first maximum; a NaN wins.
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const float* r0 = in + 2 * oy * W;
                    const float* r1 = r0 + W;
                    for (std::size_t ox = 0; ox < Wo; ++ox) {
                        const std::size_t c = 2 * ox;
                        std::uint32_t best = static_cast<std::uint32_t>(2 * oy * W + c);
                        float bv = r0[c];
                        if (r0[c + 1] > bv || r0[c + 1] != r0[c + 1]) { bv = r0[c + 1]; best += 1; }
                        if (r1[c] > bv || (r1[c] != r1[c] && bv == bv)) { bv = r1[c]; best = static_cast<std::uint32_t>((2 * oy + 1) * W + c); }
                        if (r1[c + 1] > bv || (r1[c + 1] != r1[c + 1] && bv == bv)) { bv = r1[c + 1]; best = static_cast<std::uint32_t>((2 * oy + 1) * W + c + 1); }
                        out[oy * Wo + ox] = bv;
                        if (am) am[oy * Wo + ox] = best;
                    }
                }
                continue;
            }
            for (std::size_t oy = 0; oy < Ho; ++oy)
                for (std::size_t ox = 0; ox < Wo; ++ox) {
                    std::size_t best = oy * m_stride * W + ox * m_stride;
                    float bv = in[best];
                    for (std::size_t ky = 0; ky < m_k; ++ky)
                        for (std::size_t kx = 0; kx < m_k; ++kx) {
                            const std::size_t idx = (oy * m_stride + ky) * W + ox * m_stride + kx;
                            // NaN propagates, as in PyTorch
                            if (in[idx] > bv || (in[idx] != in[idx] && bv == bv)) {
                                bv = in[idx];
                                best = idx;
                            }
                        }
                    out[oy * Wo + ox] = bv;
                    if (am) am[oy * Wo + ox] = static_cast<std::uint32_t>(best);
                }
        }
    });
}

// dx[argmax] += dy (argmax in the padded plane; what lands on the padding is dropped)
void MaxPool2d::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    Tensor& dxp = m_pad ? m_paddedGrad : dx;
    dxp.resize({x.dim(0), x.dim(1), x.dim(2) + 2 * m_pad, x.dim(3) + 2 * m_pad});
    const std::size_t planes = y.dim(0) * y.dim(1), HW = dxp.dim(2) * dxp.dim(3), HWo = y.dim(2) * y.dim(3);
    parallelChunks(planes, 16, [&](std::size_t p0, std::size_t p1) {
        for (std::size_t p = p0; p < p1; ++p) {
            float* d = dxp.data() + p * HW;
            std::fill(d, d + HW, 0.0f);
            for (std::size_t o = 0; o < HWo; ++o) d[m_argmax[p * HWo + o]] += dy[p * HWo + o];
        }
    });
    if (m_pad) cropPlanes(m_paddedGrad, m_pad, dx);
}

} // namespace quantscope
