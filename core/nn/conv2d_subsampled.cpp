// Conv2d's strided 1x1 convolutions (ResNet's projection shortcuts) on the direct kernels
// (conv_direct.h): the sampled pixels gathered into runs. conv2d_direct.cpp has the other direct
// kernels and calls forwardSubsampled / backwardSubsampled.
#include "nn/conv2d.h"
#include "nn/conv2d_runs.h"
#include "nn/conv2d_shared.h"
#include "nn/conv_direct.h"

#include "tensor/parallel.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace quantscope {

using namespace conv_detail;

// --- Strided 1x1 convolutions (pad 0): the pixels (oy s, ox s) -------------------------------------
//
// A group of Ng images is gathered into one run per channel, (C, Ng HoWo) with images back to
// back, so the products are one gemmRows / gemmRowsTransAdd over L = count HoWo columns (no
// padding, no phases: the other s^2 - 1 phases are never read). dx is written once, every
// element: the products at the sampled pixels, zeros elsewhere.
namespace {

struct SubsampleGeometry {
    std::size_t H, W, s, Ho, Wo, HWo, Ng, S; // S: floats per channel run (Ng HoWo)
};

SubsampleGeometry subsampleGeometry(std::size_t H, std::size_t W, std::size_t s)
{
    const std::size_t Ho = (H - 1) / s + 1, Wo = (W - 1) / s + 1, HWo = Ho * Wo;
    std::size_t Ng = 1;
    while (Ng < 16 && 2 * Ng * HWo <= 2048) Ng *= 2;
    return {H, W, s, Ho, Wo, HWo, Ng, Ng * HWo};
}

// out[m] = in[2 m] for 2 m < n: a row's even pixels.
void takeEven(const float* __restrict in, std::size_t n, float* __restrict out)
{
#if defined(__AVX512F__)
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i, ne = std::min<std::size_t>(16, (left + 1) / 2);
        const auto k0 = static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
        const auto k1 = static_cast<__mmask16>(left >= 32 ? 0xFFFFu : left > 16 ? (1u << (left - 16)) - 1u : 0u);
        const __m512 a = _mm512_maskz_loadu_ps(k0, in + i), b = _mm512_maskz_loadu_ps(k1, in + i + 16);
        _mm512_mask_storeu_ps(out + i / 2, static_cast<__mmask16>((1u << ne) - 1u), _mm512_permutex2var_ps(a, ie, b));
    }
#else
    for (std::size_t m = 0; 2 * m < n; ++m) out[m] = in[2 * m];
#endif
}

// out[2 m] = src[m] and out[2 m + 1] = 0 for the indices below n; with add, out[2 m] += src[m]
// and the odd pixels are left as they are.
void spreadEven(const float* __restrict src, std::size_t n, float* __restrict out, bool add)
{
#if defined(__AVX512F__)
    const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    constexpr __mmask16 even = 0x5555;
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i, ne = std::min<std::size_t>(16, (left + 1) / 2);
        const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << ne) - 1u), src + i / 2);
        const auto k0 = static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
        const auto k1 = static_cast<__mmask16>(left >= 32 ? 0xFFFFu : left > 16 ? (1u << (left - 16)) - 1u : 0u);
        const __m512 a = _mm512_maskz_permutexvar_ps(even, lo, v), b = _mm512_maskz_permutexvar_ps(even, hi, v);
        if (add) {
            _mm512_mask_storeu_ps(out + i, k0 & even, _mm512_add_ps(_mm512_maskz_loadu_ps(k0 & even, out + i), a));
            if (k1) _mm512_mask_storeu_ps(out + i + 16, k1 & even, _mm512_add_ps(_mm512_maskz_loadu_ps(k1 & even, out + i + 16), b));
        } else {
            _mm512_mask_storeu_ps(out + i, k0, a);
            if (k1) _mm512_mask_storeu_ps(out + i + 16, k1, b);
        }
    }
#else
    for (std::size_t i = 0; i < n; ++i) {
        if (i % 2) {
            if (!add) out[i] = 0.0f;
        } else {
            out[i] = add ? out[i] + src[i / 2] : src[i / 2];
        }
    }
#endif
}

// x images [n0, n0 + count) of (N, C, H, W) -> runs (C, S): run c holds image i's sampled
// pixels at i HoWo + oy Wo + ox.
void gatherSubsampled(const float* x, std::size_t C, std::size_t n0, std::size_t count, const SubsampleGeometry& g,
                      float* runs)
{
    const std::size_t HW = g.H * g.W;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t i = 0; i < count; ++i) {
            const float* __restrict src = x + ((n0 + i) * C + c) * HW;
            // the plane read next (the next image's, or the next channel's first image's)
            const std::size_t p = nextPlaneOf(n0, count, C, c, i);
            const float* next = p != kNoPlane ? x + p * HW : nullptr;
            float* __restrict dst = runs + c * g.S + i * g.HWo;
            for (std::size_t oy = 0; oy < g.Ho; ++oy, dst += g.Wo) {
                const float* row = src + oy * g.s * g.W;
                if (next) prefetchSpan(next + oy * g.s * g.W, g.W);
                if (g.s == 2) takeEven(row, g.W, dst);
                else
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) dst[ox] = row[ox * g.s];
            }
        }
}

// dx planes of images [n0, n0 + count) from out (C x L, image i at i HoWo): every element
// written, the sampled pixels from out and zeros between them; with add, out added into the
// sampled pixels only (the others' gradient is zero).
void scatterSubsampled(const float* out, std::size_t L, std::size_t C, std::size_t n0, std::size_t count,
                       const SubsampleGeometry& g, float* dx, bool add)
{
    const std::size_t HW = g.H * g.W;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t i = 0; i < count; ++i) {
            float* __restrict d = dx + ((n0 + i) * C + c) * HW;
            const float* __restrict src = out + c * L + i * g.HWo;
            if (g.s == 2) { // each row written once: the sampled ones spread, the others cleared
                for (std::size_t y = 0; y < g.H; ++y) {
                    if (y % 2 == 0) spreadEven(src + (y / 2) * g.Wo, g.W, d + y * g.W, add);
                    else if (!add) std::memset(d + y * g.W, 0, g.W * sizeof(float));
                }
                continue;
            }
            if (!add) std::memset(d, 0, HW * sizeof(float));
            for (std::size_t oy = 0; oy < g.Ho; ++oy, src += g.Wo) {
                float* row = d + oy * g.s * g.W;
                if (add)
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) row[ox * g.s] += src[ox];
                else
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) row[ox * g.s] = src[ox];
            }
        }
}

} // namespace

// y = W runs(x) + b, a group of images at a time (W packed in m_packed by forwardDirect).
void Conv2d::forwardSubsampled(const Tensor& x, Tensor& y, const float* bias, float cap)
{
    const SubsampleGeometry g = subsampleGeometry(x.dim(2), x.dim(3), m_stride);
    const std::size_t N = x.dim(0);
    parallelFor((N + g.Ng - 1) / g.Ng, [&](std::size_t grp) {
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = count * g.HWo;
        float* runs = threadBuffer(0, m_cin * g.S).data();
        float* out = threadBuffer(1, m_cout * L).data();
        const float** rows = threadRows(0, m_cin).data();
        gatherSubsampled(x.data(), m_cin, n0, count, g, runs);
        for (std::size_t c = 0; c < m_cin; ++c) rows[c] = runs + c * g.S;
        conv_direct::gemmRows(m_packed.data(), m_cout, m_cin, rows, L, out, L);
        for (std::size_t o = 0; o < m_cout; ++o)
            for (std::size_t i = 0; i < count; ++i) {
                float* dst = y.data() + ((n0 + i) * m_cout + o) * g.HWo;
                copyRow(dst, out + o * L + i * g.HWo, g.HWo);
                addBiasClamp(dst, g.HWo, bias ? bias + o : nullptr, cap, m_roundOut);
            }
        if (m_sink) m_sink->imagesWritten(y, n0, count);
    });
}

// dW = sum over groups of runs(dy) runs(x)^T, db = sum dy, dx = scatter(W^T runs(dy)).
void Conv2d::backwardSubsampled(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    const SubsampleGeometry g = subsampleGeometry(x.dim(2), x.dim(3), m_stride);
    const std::size_t N = x.dim(0);
    const std::size_t wSize = m_cout * m_cin, bSize = m_hasBias ? m_cout : 0, partSize = wSize + bSize;
    const std::size_t groups = (N + g.Ng - 1) / g.Ng;
    m_partials.assign(groups * partSize, 0.0f);
    if (needInputGrad) {
        if (!m_addDx) dx.resize(x.shape());
        const float* w = m_weight.forwardValue().data();
        std::vector<float> wt(m_cin * m_cout); // W^T (Cin x Cout)
        for (std::size_t o = 0; o < m_cout; ++o)
            for (std::size_t c = 0; c < m_cin; ++c) wt[c * m_cout + o] = w[o * m_cin + c];
        conv_direct::packA(wt.data(), m_cin, m_cout, m_cout, m_packed);
    }
    parallelFor(groups, [&](std::size_t grp) {
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = count * g.HWo;
        float* part = m_partials.data() + grp * partSize;
        float* xr = threadBuffer(0, m_cin * g.S).data();
        float* gr = threadBuffer(2, m_cout * g.S).data();
        const float** rows = threadRows(0, m_cin).data();
        const float** drows = threadRows(1, m_cout).data();
        gatherSubsampled(x.data(), m_cin, n0, count, g, xr);
        const float* dyg = nullptr; // the group's output gradient, from its first image on
        if (m_dySource) {           // written here by the source (setGradientSource)
            dyg = sourcedGradient(n0, count, m_cout * g.HWo);
        } else {
            dyg = dy.data() + n0 * m_cout * g.HWo;
        }
        for (std::size_t o = 0; o < m_cout; ++o) {
            drows[o] = gr + o * g.S;
            for (std::size_t i = 0; i < count; ++i) {
                const float* src = dyg + (i * m_cout + o) * g.HWo;
                copyRow(gr + o * g.S + i * g.HWo, src, g.HWo);
                if (bSize) part[wSize + o] += fixedOrderSum(src, g.HWo);
            }
        }
        for (std::size_t c = 0; c < m_cin; ++c) rows[c] = xr + c * g.S;
        conv_direct::gemmRowsTransAdd(drows, m_cout, rows, m_cin, L, part, m_cin);
        if (!needInputGrad) return;
        float* out = threadBuffer(1, m_cin * L).data();
        conv_direct::gemmRows(m_packed.data(), m_cin, m_cout, drows, L, out, L);
        scatterSubsampled(out, L, m_cin, n0, count, g, dx.data(), m_addDx);
    });
    reducePartials(m_partials, groups, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
}

} // namespace quantscope
