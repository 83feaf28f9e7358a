#include "nn/maxpool2d.h"

#include "nn/avgpool2d.h" // padPlanes, cropPlanes
#include "nn/conv2d_shared.h" // the fused clamp's gradient rule
#include "nn/pool2x2_avx512.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

using conv_detail::boundedClamp;
using conv_detail::gradientPasses;
#if defined(__AVX512F__)
using conv_detail::gradientPassMask;
#endif

namespace {
#if defined(__AVX512F__)
// The 2x2/2 pool of n <= 16 outputs from input rows r0 and r1 (columns [0, 2n)), r0[0] at plane
// offset base and r1 a row (W) below it.
inline void pool2x2Row16(const float* r0, const float* r1, std::size_t n, std::uint32_t base, std::uint32_t W, float* out,
                         std::uint32_t* am)
{
    const std::uint32_t k32 = n == 16 ? 0xFFFFFFFFu : static_cast<std::uint32_t>((std::uint64_t{1} << (2 * n)) - 1);
    const __mmask16 kl = static_cast<__mmask16>(k32), kh = static_cast<__mmask16>(k32 >> 16);
    pool_detail::pool2x2(_mm512_maskz_loadu_ps(kl, r0), _mm512_maskz_loadu_ps(kh, r0 + 16), _mm512_maskz_loadu_ps(kl, r1),
                         _mm512_maskz_loadu_ps(kh, r1 + 16), n, base, W, out, am);
}

// dL/dx of rows 2 oy and 2 oy + 1 at columns [2 ox0, 2 ox0 + 2n) from the outputs [ox0, ox0 + n):
// dy where the window's argmax is, 0 elsewhere, as 0 + dy (the scalar path's accumulation).
// With y (the pooled outputs), dy only where the clamp's rule passes y (gradientPasses), else 0.
inline void unpool2x2Row(const float* dy, const std::uint32_t* am, std::size_t W, std::size_t oy, std::size_t ox0,
                         std::size_t n, float* d, const float* y = nullptr, float cap = 0.0f)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const std::uint32_t k32 = n == 16 ? 0xFFFFFFFFu : static_cast<std::uint32_t>((std::uint64_t{1} << (2 * n)) - 1);
    const __mmask16 kl = static_cast<__mmask16>(k32), kh = static_cast<__mmask16>(k32 >> 16);
    const __mmask16 k = static_cast<__mmask16>(n == 16 ? 0xFFFFu : (1u << n) - 1u);
    const __m512 zero = _mm512_setzero_ps();
    const __mmask16 pass = y ? gradientPassMask(_mm512_maskz_loadu_ps(k, y), k, cap, boundedClamp(cap)) : k;
    const __m512 g = _mm512_maskz_mov_ps(pass, _mm512_add_ps(zero, _mm512_maskz_loadu_ps(k, dy)));
    const __m512i at = _mm512_maskz_loadu_epi32(k, am);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i ia = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(2 * oy * W + 2 * ox0)), even);
    const __m512i iw = _mm512_set1_epi32(static_cast<int>(W)), one = _mm512_set1_epi32(1);
    const __m512 a = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, ia), g);
    const __m512 b = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_add_epi32(ia, one)), g);
    const __m512 c = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_add_epi32(ia, iw)), g);
    const __m512 e = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_add_epi32(ia, _mm512_add_epi32(iw, one))), g);
    float* d0 = d + 2 * oy * W + 2 * ox0;
    float* d1 = d0 + W;
    _mm512_mask_storeu_ps(d0, kl, _mm512_permutex2var_ps(a, lo, b));
    _mm512_mask_storeu_ps(d0 + 16, kh, _mm512_permutex2var_ps(a, hi, b));
    _mm512_mask_storeu_ps(d1, kl, _mm512_permutex2var_ps(c, lo, e));
    _mm512_mask_storeu_ps(d1 + 16, kh, _mm512_permutex2var_ps(c, hi, e));
}
#endif
} // namespace

void maxPool2x2Row(const float* r0, const float* r1, std::size_t n, std::uint32_t base, std::uint32_t W, float* out,
                   std::uint32_t* am)
{
#if defined(__AVX512F__)
    for (std::size_t ox = 0; ox < n; ox += 16)
        pool2x2Row16(r0 + 2 * ox, r1 + 2 * ox, std::min<std::size_t>(16, n - ox), base + static_cast<std::uint32_t>(2 * ox), W,
                     out + ox, am ? am + ox : nullptr);
#else
    // '>' keeps the first maximum; a NaN wins.
    for (std::size_t ox = 0; ox < n; ++ox) {
        const std::size_t c = 2 * ox;
        std::uint32_t best = base + static_cast<std::uint32_t>(c);
        float bv = r0[c];
        if (r0[c + 1] > bv || r0[c + 1] != r0[c + 1]) { bv = r0[c + 1]; best += 1; }
        if (r1[c] > bv || (r1[c] != r1[c] && bv == bv)) { bv = r1[c]; best = base + W + static_cast<std::uint32_t>(c); }
        if (r1[c + 1] > bv || (r1[c + 1] != r1[c + 1] && bv == bv)) { bv = r1[c + 1]; best = base + W + static_cast<std::uint32_t>(c + 1); }
        out[ox] = bv;
        if (am) am[ox] = best;
    }
#endif
}

MaxPool2d::MaxPool2d(std::string name, std::size_t kernel, std::size_t stride, std::size_t padding)
    : MaxPool2d(std::move(name), PoolGeometry::square(kernel, stride ? stride : kernel, padding))
{
}

MaxPool2d::MaxPool2d(std::string name, const PoolGeometry& g)
    : Layer(std::move(name)), m_k(g.kh), m_stride(g.sh), m_pad(g.padTop), m_g(g)
{
    m_g.countIncludePad = true; // no divisor
    if (!m_g.kh || !m_g.kw) throw ConfigError(this->name() + ": kernel must be positive (" + m_g.text() + ")");
    if (!m_g.sh || !m_g.sw) throw ConfigError(this->name() + ": stride must be positive (" + m_g.text() + ")");
    if (!m_g.padsWithinHalfKernel())
        throw ConfigError(this->name() + ": a pad is more than half its kernel (" + m_g.text() + "), which PyTorch's MaxPool2d refuses");
}

// Square windows as before ("2x2 s2", "3x3 s2 p1"); others in full ("3x2 stride 2x1 pad 1,0,1,0 ceil").
std::string MaxPool2d::describe() const
{
    if (!m_g.isSquare()) return m_g.text();
    return std::to_string(m_k) + "x" + std::to_string(m_k) + " s" + std::to_string(m_stride) + (m_pad ? " p" + std::to_string(m_pad) : "");
}

Shape MaxPool2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || !m_g.fits(in[2], in[3]))
        throw ConfigError(name() + ": expected input (N,C,H,W) with H >= " + std::to_string(m_g.kh) + ", W >= " + std::to_string(m_g.kw) +
                          " with padding (" + m_g.text() + "), got " + shapeString(in));
    return {in[0], in[1], m_g.outH(in[2]), m_g.outW(in[3])};
}

// y[n,c,oy,ox] = max over the kh x kw window of x padded with -inf
void MaxPool2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    outputShape(x.shape()); // throws for an input it does not take
    if (!m_g.isSquare()) return poolGeneral(x, y, ctx.training);
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
    if (train && fusesAfterConvolution()) m_fusedIn = x.shape(); // backwardFusedPlanes may follow
    parallelChunks(planes, 16, [&](std::size_t p0, std::size_t p1) {
        for (std::size_t p = p0; p < p1; ++p) {
            const float* in = x.data() + p * H * W;
            float* out = y.data() + p * Ho * Wo;
            std::uint32_t* am = train ? m_argmax.data() + p * Ho * Wo : nullptr;
            if (m_k == 2 && m_stride == 2) {
                for (std::size_t oy = 0; oy < Ho; ++oy)
                    maxPool2x2Row(in + 2 * oy * W, in + (2 * oy + 1) * W, Wo, static_cast<std::uint32_t>(2 * oy * W),
                                  static_cast<std::uint32_t>(W), out + oy * Wo, am ? am + oy * Wo : nullptr);
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

void MaxPool2d::poolGeneral(const Tensor& x, Tensor& y, bool train)
{
    const std::size_t H = x.dim(2), W = x.dim(3);
    const Shape os{x.dim(0), x.dim(1), m_g.outH(H), m_g.outW(W)};
    y.resize(os);
    const std::size_t planes = os[0] * os[1], Ho = os[2], Wo = os[3];
    if (train) m_argmax.resize(planes * Ho * Wo);
    if (train && fusesAfterConvolution()) m_fusedIn = x.shape(); // backwardFusedPlanes may follow
    parallelChunks(planes, 16, [&](std::size_t p0, std::size_t p1) {
        for (std::size_t p = p0; p < p1; ++p) {
            const float* in = x.data() + p * H * W;
            float* out = y.data() + p * Ho * Wo;
            m_g.forEachWindow(H, W, [&](std::size_t o, const PoolGeometry::Span& r, const PoolGeometry::Span& c) {
                // every window holds an input pixel (pads <= k / 2; ceil_mode drops a window
                // starting in the padding); the -inf border never wins
                std::size_t best = r.begin * W + c.begin;
                float bv = in[best];
                for (std::size_t iy = r.begin; iy < r.end; ++iy)
                    for (std::size_t ix = c.begin; ix < c.end; ++ix) {
                        const std::size_t idx = iy * W + ix;
                        if (in[idx] > bv || (in[idx] != in[idx] && bv == bv)) { // NaN propagates, as in PyTorch
                            bv = in[idx];
                            best = idx;
                        }
                    }
                out[o] = bv;
                if (train) m_argmax[p * Ho * Wo + o] = static_cast<std::uint32_t>(best);
            });
        }
    });
}

// dx[argmax] += dy (argmax in the padded plane; what lands on the padding is dropped)
void MaxPool2d::backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    checkOutputGradient(x, dy);
    if (y.shape() != dy.shape() || m_argmax.size() != y.numel())
        throw ConfigError(name() + ": backward without a matching training forward");
    if (!m_g.isSquare()) { // argmax within the input's own plane
        dx.resize(x.shape());
        return unpool(y, dy, dx);
    }
    Tensor& dxp = m_pad ? m_paddedGrad : dx;
    dxp.resize({x.dim(0), x.dim(1), x.dim(2) + 2 * m_pad, x.dim(3) + 2 * m_pad});
    unpool(y, dy, dxp);
    if (m_pad) cropPlanes(m_paddedGrad, m_pad, dx);
}

std::uint32_t* MaxPool2d::beginFused(const Shape& in, Tensor& y, bool train)
{
    if (!fusesAfterConvolution() || in.size() != 4) throw std::logic_error(name() + ": not a pool that runs fused");
    y.resize(outputShape(in));
    m_fusedIn = in;
    if (!train) return nullptr;
    m_argmax.resize(y.numel());
    return m_argmax.data();
}

void MaxPool2d::backwardFusedPlanes(const Tensor& y, const Tensor& dy, std::size_t p0, std::size_t p1, float* dst,
                                    float cap) const
{
    if (m_fusedIn.size() != 4 || m_argmax.size() != y.numel() || dy.shape() != y.shape())
        throw ConfigError(name() + ": fused backward without a matching fused training forward");
    if (p0 > p1 || p1 > y.dim(0) * y.dim(1))
        throw ConfigError(name() + ": fused backward of planes past the batch's " + std::to_string(y.dim(0) * y.dim(1)));
    unpoolPlanes(y, dy, p0, p1, m_fusedIn[2], m_fusedIn[3], dst, &y, cap);
}

// dx (the padded input's gradient) from dy through the argmax
void MaxPool2d::unpool(const Tensor& y, const Tensor& dy, Tensor& dxp)
{
    const std::size_t planes = y.dim(0) * y.dim(1), HW = dxp.dim(2) * dxp.dim(3);
    parallelChunks(planes, 16, [&](std::size_t p0, std::size_t p1) {
        unpoolPlanes(y, dy, p0, p1, dxp.dim(2), dxp.dim(3), dxp.data() + p0 * HW, nullptr, 0.0f);
    });
}

void MaxPool2d::unpoolPlanes(const Tensor& y, const Tensor& dy, std::size_t p0, std::size_t p1, std::size_t dH,
                             std::size_t dW, float* dst, const Tensor* mask, float cap) const
{
    const std::size_t HW = dH * dW, HWo = y.dim(2) * y.dim(3);
    const bool bounded = boundedClamp(cap);
    for (std::size_t p = p0; p < p1; ++p) {
        float* d = dst + (p - p0) * HW;
#if defined(__AVX512F__)
        if (m_g.isSquare() && m_k == 2 && m_stride == 2) { // every window written whole, then what no window covers
            const std::size_t W = dW, Ho = y.dim(2), Wo = y.dim(3);
            for (std::size_t oy = 0; oy < Ho; ++oy) {
                for (std::size_t ox = 0; ox < Wo; ox += 16) {
                    const std::size_t at = p * HWo + oy * Wo + ox;
                    unpool2x2Row(dy.data() + at, m_argmax.data() + at, W, oy, ox, std::min<std::size_t>(16, Wo - ox), d,
                                 mask ? mask->data() + at : nullptr, cap);
                }
                if (W > 2 * Wo) d[2 * oy * W + W - 1] = d[(2 * oy + 1) * W + W - 1] = 0.0f;
            }
            std::fill(d + 2 * Ho * W, d + HW, 0.0f);
            continue;
        }
#endif
        std::fill(d, d + HW, 0.0f);
        for (std::size_t o = 0; o < HWo; ++o) {
            const float g = dy[p * HWo + o];
            d[m_argmax[p * HWo + o]] += mask ? gradientPasses(g, (*mask)[p * HWo + o], cap, bounded) : g;
        }
    }
}

} // namespace quantscope
