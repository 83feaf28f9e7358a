#include "nn/avgpool2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"

namespace quantscope {

AvgPool2d::AvgPool2d(std::string name, std::size_t kernel, std::size_t stride)
    : Layer(std::move(name)), m_k(kernel), m_stride(stride ? stride : kernel)
{
    if (!m_k) throw ConfigError(this->name() + ": kernel must be positive");
}

std::string AvgPool2d::describe() const
{
    return std::to_string(m_k) + "x" + std::to_string(m_k) + " s" + std::to_string(m_stride);
}

Shape AvgPool2d::outputShape(const Shape& in) const
{
    if (in.size() != 4) throw ConfigError(name() + ": expected input (N,C,H,W), got " + shapeString(in));
    if (in[2] < m_k || in[3] < m_k)
        throw ConfigError(name() + ": input " + shapeString(in) + " is smaller than the kernel");
    return {in[0], in[1], (in[2] - m_k) / m_stride + 1, (in[3] - m_k) / m_stride + 1};
}

// y[n,c,oy,ox] = (1/k^2) sum_{ky,kx} x[n,c,oy s + ky, ox s + kx]
void AvgPool2d::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    const Shape os = outputShape(x.shape());
    y.resize(os);
    const std::size_t H = x.dim(2), W = x.dim(3), Ho = os[2], Wo = os[3];
    const float inv = 1.0f / static_cast<float>(m_k * m_k);
    parallelFor(os[0] * os[1], [&](std::size_t p) {
        const float* in = x.data() + p * H * W;
        float* out = y.data() + p * Ho * Wo;
        for (std::size_t oy = 0; oy < Ho; ++oy)
            for (std::size_t ox = 0; ox < Wo; ++ox) {
                float s = 0.0f;
                for (std::size_t ky = 0; ky < m_k; ++ky)
                    for (std::size_t kx = 0; kx < m_k; ++kx) s += in[(oy * m_stride + ky) * W + ox * m_stride + kx];
                out[oy * Wo + ox] = s * inv;
            }
    });
}

// dx[n,c,iy,ix] = (1/k^2) sum over the windows containing (iy, ix) of dy
void AvgPool2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    dx.resize(x.shape());
    dx.setZero();
    const std::size_t H = x.dim(2), W = x.dim(3), Ho = dy.dim(2), Wo = dy.dim(3);
    const float inv = 1.0f / static_cast<float>(m_k * m_k);
    parallelFor(x.dim(0) * x.dim(1), [&](std::size_t p) {
        const float* g = dy.data() + p * Ho * Wo;
        float* out = dx.data() + p * H * W;
        for (std::size_t oy = 0; oy < Ho; ++oy)
            for (std::size_t ox = 0; ox < Wo; ++ox) {
                const float v = g[oy * Wo + ox] * inv;
                for (std::size_t ky = 0; ky < m_k; ++ky)
                    for (std::size_t kx = 0; kx < m_k; ++kx) out[(oy * m_stride + ky) * W + ox * m_stride + kx] += v;
            }
    });
}

Shape GlobalAvgPool2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[2] == 0 || in[3] == 0)
        throw ConfigError(name() + ": expected input (N,C,H,W), got " + shapeString(in));
    return {in[0], in[1], 1, 1};
}

// y[n,c] = (1/HW) sum_{h,w} x[n,c,h,w]
void GlobalAvgPool2d::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShape(x.shape()));
    const std::size_t HW = x.dim(2) * x.dim(3);
    const float inv = 1.0f / static_cast<float>(HW);
    const std::size_t planes = x.dim(0) * x.dim(1);
    parallelChunks(planes, 64, [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            const float* in = x.data() + p * HW;
            float s = 0.0f;
            for (std::size_t i = 0; i < HW; ++i) s += in[i];
            y[p] = s * inv;
        }
    });
}

// dx[n,c,h,w] = dy[n,c] / HW
void GlobalAvgPool2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t HW = x.dim(2) * x.dim(3);
    const float inv = 1.0f / static_cast<float>(HW);
    const std::size_t planes = x.dim(0) * x.dim(1);
    parallelChunks(planes, 64, [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            float* out = dx.data() + p * HW;
            const float v = dy[p] * inv;
            for (std::size_t i = 0; i < HW; ++i) out[i] = v;
        }
    });
}

} // namespace quantscope
