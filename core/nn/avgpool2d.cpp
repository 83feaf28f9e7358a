#include "nn/avgpool2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>

namespace quantscope {

namespace {

// Sum of n floats in a fixed association order (16 interleaved partial sums, then added
// pairwise), so it vectorises and does not depend on where the data sits.
float planeSum(const float* v, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += v[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += v[i + j];
    for (std::size_t j = 0; j < 8; ++j) acc[j] += acc[j + 8];
    for (std::size_t j = 0; j < 4; ++j) acc[j] += acc[j + 4];
    for (std::size_t j = 0; j < 2; ++j) acc[j] += acc[j + 2];
    return acc[0] + acc[1];
}

// Planes per parallel chunk: about 16k elements each (as elementwiseGrain), at least one plane.
std::size_t planeGrain(std::size_t planeSize)
{
    return std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, planeSize));
}

} // namespace

void padPlanes(const Tensor& x, std::size_t pad, float fill, Tensor& xp)
{
    const std::size_t H = x.dim(2), W = x.dim(3), Hp = H + 2 * pad, Wp = W + 2 * pad;
    xp.resize({x.dim(0), x.dim(1), Hp, Wp});
    parallelChunks(x.dim(0) * x.dim(1), planeGrain(Hp * Wp), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            float* out = xp.data() + p * Hp * Wp;
            const float* in = x.data() + p * H * W;
            std::fill(out, out + pad * Wp, fill);
            for (std::size_t r = 0; r < H; ++r) {
                float* row = out + (pad + r) * Wp;
                std::fill(row, row + pad, fill);
                std::copy(in + r * W, in + (r + 1) * W, row + pad);
                std::fill(row + pad + W, row + Wp, fill);
            }
            std::fill(out + (pad + H) * Wp, out + Hp * Wp, fill);
        }
    });
}

void cropPlanes(const Tensor& dxp, std::size_t pad, Tensor& dx)
{
    const std::size_t Hp = dxp.dim(2), Wp = dxp.dim(3), H = Hp - 2 * pad, W = Wp - 2 * pad;
    dx.resize({dxp.dim(0), dxp.dim(1), H, W});
    parallelChunks(dxp.dim(0) * dxp.dim(1), planeGrain(Hp * Wp), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p)
            for (std::size_t r = 0; r < H; ++r) {
                const float* row = dxp.data() + p * Hp * Wp + (pad + r) * Wp + pad;
                std::copy(row, row + W, dx.data() + p * H * W + r * W);
            }
    });
}

AvgPool2d::AvgPool2d(std::string name, std::size_t kernel, std::size_t stride, std::size_t padding)
    : AvgPool2d(std::move(name), PoolGeometry::square(kernel, stride ? stride : kernel, padding))
{
}

AvgPool2d::AvgPool2d(std::string name, const PoolGeometry& g)
    : Layer(std::move(name)), m_k(g.kh), m_stride(g.sh), m_pad(g.padTop), m_g(g.normalized())
{
    if (!m_g.kh || !m_g.kw) throw ConfigError(this->name() + ": kernel must be positive (" + m_g.text() + ")");
    if (!m_g.sh || !m_g.sw) throw ConfigError(this->name() + ": stride must be positive (" + m_g.text() + ")");
    if (!m_g.padsWithinHalfKernel())
        throw ConfigError(this->name() + ": a pad is more than half its kernel (" + m_g.text() + "), which PyTorch's AvgPool2d refuses");
}

// Square windows as before ("2x2 s2", "3x3 s2 p1"); others in full ("3x2 stride 2x1 pad 1,0,1,0 ceil").
std::string AvgPool2d::describe() const
{
    if (!m_g.isSquare()) return m_g.text();
    return std::to_string(m_k) + "x" + std::to_string(m_k) + " s" + std::to_string(m_stride) + (m_pad ? " p" + std::to_string(m_pad) : "");
}

Shape AvgPool2d::outputShape(const Shape& in) const
{
    if (in.size() != 4) throw ConfigError(name() + ": expected input (N,C,H,W), got " + shapeString(in));
    if (!m_g.fits(in[2], in[3]))
        throw ConfigError(name() + ": input " + shapeString(in) + " is smaller than the kernel (" + m_g.text() + ")");
    return {in[0], in[1], m_g.outH(in[2]), m_g.outW(in[3])};
}

void AvgPool2d::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    outputShape(x.shape()); // throws for an input it does not take
    if (!m_g.isSquare()) return poolGeneral(x, y);
    if (m_pad == 0) return poolPadded(x, y);
    padPlanes(x, m_pad, 0.0f, m_padded);
    poolPadded(m_padded, y);
}

// x: (N, C, H, W) (padding included) -> y: (N, C, Ho, Wo), one output row at a time, loops over ox innermost.
// y[n,c,oy,ox] = (1/k^2) sum_{ky,kx} x[n,c,oy s + ky, ox s + kx]   (taps in row-major order)
void AvgPool2d::poolPadded(const Tensor& x, Tensor& y) const
{
    const Shape os{x.dim(0), x.dim(1), (x.dim(2) - m_k) / m_stride + 1, (x.dim(3) - m_k) / m_stride + 1};
    y.resize(os);
    const std::size_t H = x.dim(2), W = x.dim(3), Ho = os[2], Wo = os[3], k = m_k, s = m_stride;
    const float inv = 1.0f / static_cast<float>(k * k);
    parallelChunks(os[0] * os[1], planeGrain(H * W), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            const float* in = x.data() + p * H * W;
            float* out = y.data() + p * Ho * Wo;
            for (std::size_t oy = 0; oy < Ho; ++oy) {
                const float* r = in + oy * s * W;
                float* __restrict o = out + oy * Wo;
                if (k == 2 && s == 2) { // the common case in one pass
                    const float* __restrict r0 = r;
                    const float* __restrict r1 = r + W;
                    for (std::size_t ox = 0; ox < Wo; ++ox)
                        o[ox] = (((r0[2 * ox] + r0[2 * ox + 1]) + r1[2 * ox]) + r1[2 * ox + 1]) * inv;
                    continue;
                }
                for (std::size_t ox = 0; ox < Wo; ++ox) o[ox] = r[ox * s];
                for (std::size_t ky = 0; ky < k; ++ky)
                    for (std::size_t kx = ky ? 0 : 1; kx < k; ++kx) {
                        const float* __restrict t = r + ky * W + kx;
                        for (std::size_t ox = 0; ox < Wo; ++ox) o[ox] += t[ox * s];
                    }
                for (std::size_t ox = 0; ox < Wo; ++ox) o[ox] *= inv;
            }
        }
    });
}

// y[n,c,oy,ox] = (sum of x over the window's part inside the input) / divisor, the divisor the
// size of the window's part inside input + padding (count_include_pad) or inside the input.
void AvgPool2d::poolGeneral(const Tensor& x, Tensor& y) const
{
    const std::size_t H = x.dim(2), W = x.dim(3);
    const Shape os{x.dim(0), x.dim(1), m_g.outH(H), m_g.outW(W)};
    y.resize(os);
    const std::size_t Ho = os[2], Wo = os[3];
    parallelChunks(os[0] * os[1], planeGrain(H * W), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            const float* in = x.data() + p * H * W;
            float* out = y.data() + p * Ho * Wo;
            m_g.forEachWindow(H, W, [&](std::size_t o, const PoolGeometry::Span& r, const PoolGeometry::Span& c) {
                float sum = 0.0f;
                for (std::size_t iy = r.begin; iy < r.end; ++iy)
                    for (std::size_t ix = c.begin; ix < c.end; ++ix) sum += in[iy * W + ix];
                out[o] = sum / static_cast<float>(m_g.divisor(r, c));
            });
        }
    });
}

// dx[n,c,iy,ix] = sum over the windows holding (iy, ix) of dy / that window's divisor
void AvgPool2d::backwardGeneral(const Tensor& dy, Tensor& dx) const
{
    const std::size_t H = dx.dim(2), W = dx.dim(3), Ho = dy.dim(2), Wo = dy.dim(3);
    parallelChunks(dx.dim(0) * dx.dim(1), planeGrain(H * W), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            const float* g = dy.data() + p * Ho * Wo;
            float* out = dx.data() + p * H * W;
            std::fill(out, out + H * W, 0.0f);
            m_g.forEachWindow(H, W, [&](std::size_t o, const PoolGeometry::Span& r, const PoolGeometry::Span& c) {
                const float v = g[o] / static_cast<float>(m_g.divisor(r, c));
                for (std::size_t iy = r.begin; iy < r.end; ++iy)
                    for (std::size_t ix = c.begin; ix < c.end; ++ix) out[iy * W + ix] += v;
            });
        }
    });
}

void AvgPool2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    checkOutputGradient(x, dy);
    if (!m_g.isSquare()) {
        dx.resize(x.shape());
        return backwardGeneral(dy, dx);
    }
    if (m_pad == 0) return backwardPadded(x.shape(), dy, dx);
    backwardPadded({x.dim(0), x.dim(1), x.dim(2) + 2 * m_pad, x.dim(3) + 2 * m_pad}, dy, m_paddedGrad);
    cropPlanes(m_paddedGrad, m_pad, dx);
}

// dx[n,c,iy,ix] = (1/k^2) sum over the windows containing (iy, ix) of dy   (xs: the padded input's shape)
void AvgPool2d::backwardPadded(const Shape& xs, const Tensor& dy, Tensor& dx) const
{
    dx.resize(xs);
    const std::size_t H = xs[2], W = xs[3], Ho = dy.dim(2), Wo = dy.dim(3), k = m_k, s = m_stride;
    const float inv = 1.0f / static_cast<float>(k * k);
    parallelChunks(xs[0] * xs[1], planeGrain(H * W), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            const float* g = dy.data() + p * Ho * Wo;
            float* out = dx.data() + p * H * W;
            if (k == s) { // the windows tile the plane: one value per element, 0 where none reaches
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const float* __restrict gr = g + oy * Wo;
                    for (std::size_t ky = 0; ky < k; ++ky) {
                        float* __restrict row = out + (oy * k + ky) * W;
                        if (k == 2)
                            for (std::size_t ox = 0; ox < Wo; ++ox) row[2 * ox] = row[2 * ox + 1] = gr[ox] * inv;
                        else
                            for (std::size_t ox = 0; ox < Wo; ++ox)
                                for (std::size_t kx = 0; kx < k; ++kx) row[ox * k + kx] = gr[ox] * inv;
                        std::fill(row + Wo * k, row + W, 0.0f);
                    }
                }
                std::fill(out + Ho * k * W, out + H * W, 0.0f);
                continue;
            }
            std::fill(out, out + H * W, 0.0f); // overlapping windows add up
            for (std::size_t oy = 0; oy < Ho; ++oy) {
                const float* __restrict gr = g + oy * Wo;
                float* r = out + oy * s * W;
                for (std::size_t ky = 0; ky < k; ++ky)
                    for (std::size_t kx = 0; kx < k; ++kx) {
                        float* __restrict t = r + ky * W + kx;
                        for (std::size_t ox = 0; ox < Wo; ++ox) t[ox * s] += gr[ox] * inv;
                    }
            }
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
    parallelChunks(planes, planeGrain(HW), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) y[p] = planeSum(x.data() + p * HW, HW) * inv;
    });
}

// dx[n,c,h,w] = dy[n,c] / HW
void GlobalAvgPool2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    checkOutputGradient(x, dy);
    dx.resize(x.shape());
    const std::size_t HW = x.dim(2) * x.dim(3);
    const float inv = 1.0f / static_cast<float>(HW);
    const std::size_t planes = x.dim(0) * x.dim(1);
    parallelChunks(planes, planeGrain(HW), [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            float* out = dx.data() + p * HW;
            const float v = dy[p] * inv;
            for (std::size_t i = 0; i < HW; ++i) out[i] = v;
        }
    });
}

} // namespace quantscope
