// Conv2d's depthwise kernel (groups = channels, kernels up to 7x7, strides up to 4): a direct
// convolution per channel plane over its s x s phase split; conv2d.cpp has the im2col path and
// dispatches here (directDepthwise), conv2d_direct.cpp the direct kernels of dense convolutions.
#include "nn/conv2d.h"
#include "nn/conv2d_shared.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

namespace conv_detail {

// --- Depthwise: a direct convolution per channel plane ------------------------------------------
//
// The zero-padded plane (Hp x Wp) is split into s x s phase planes of Hq x Wq: phase (py, px)
// holds the padded pixels (r s + py, c s + px). Tap (ky, kx) of output pixel (oy, ox) then reads
// phase (ky % s, kx % s) at (oy + ky / s, ox + kx / s). With the output laid out at the same
// row pitch Wq, each tap is one unit-stride run over j = oy Wq + ox < L = (Ho - 1) Wq + Wo
// (columns Wo..Wq-1 of each row are scratch), for any stride, and long even for 7x7 planes.
// For 3x3 the taps unroll inside the loop over j, so each output is summed in a register.
// Every output is summed in tap order whichever way, so the result never depends on threads.
// The runs are rounded up to whole blocks of kBlock floats (buffers carry that much zeroed slack),
// so no vectorised loop ends in a scalar tail (planes are short: about 10% faster here).
// Up to 7x7 and stride 4, so the geometry and the tap pointers live on the stack (no allocation
// per step); anything larger takes the im2col path.

std::size_t roundUpToBlock(std::size_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

bool directDepthwise(const Conv2d& c)
{
    return c.isDepthwise() && c.isSquare() && c.kernel() * c.kernel() <= kMaxDepthwiseTaps && c.stride() <= kMaxDepthwiseStride;
}


// Every division is here, once per call: the per-row loops below only add.
DepthwiseGeometry depthwiseGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t s, std::size_t p)
{
    DepthwiseGeometry g{H, W, s, p, outDim(H, k, s, p), outDim(W, k, s, p), (H + 2 * p + s - 1) / s,
                        (W + 2 * p + s - 1) / s, 0, 0, p % s, p / s, {}, 0, {}, {}, {}, 0};
    g.L = (g.Ho - 1) * g.Wq + g.Wo;
    g.Lr = roundUpToBlock(g.L);
    for (std::size_t px = 0; px < s; ++px) {
        const std::size_t ix0 = (px + s - p % s) % s; // first ix with (ix + p) % s == px
        if (ix0 < W) g.runs[g.numRuns++] = {px * g.phaseSize() + (ix0 + p) / s, ix0, (W - ix0 + s - 1) / s};
    }
    for (std::size_t ky = 0; ky < k; ++ky)
        for (std::size_t kx = 0; kx < k; ++kx) {
            const std::size_t within = (ky / s) * g.Wq + kx / s;
            g.taps[ky * k + kx] = ((ky % s) * s + kx % s) * g.phaseSize() + within;
            g.margin = std::max(g.margin, within);
        }
    std::size_t n = 0;
    for (std::size_t f = 0; f < s * s; ++f) {
        g.phaseBegin[f] = n;
        for (std::size_t t = 0; t < k * k; ++t)
            if (g.taps[t] / g.phaseSize() == f) g.phaseTaps[n++] = t;
    }
    g.phaseBegin[s * s] = n;
    return g;
}

#if defined(__AVX512F__)
// Stride 2: the even and odd elements of in[0, n) to ev[0, ceil(n / 2)) and od[0, floor(n / 2)).
void deinterleave2(const float* __restrict in, std::size_t n, float* __restrict ev, float* __restrict od)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i;
        const __mmask16 k0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
        const __mmask16 k1 = left >= 32 ? __mmask16(0xFFFF) : left > 16 ? __mmask16((1u << (left - 16)) - 1u) : __mmask16(0);
        const __m512 a = _mm512_maskz_loadu_ps(k0, in + i), b = _mm512_maskz_loadu_ps(k1, in + i + 16);
        const std::size_t ne = std::min<std::size_t>(16, (left + 1) / 2), no = std::min<std::size_t>(16, left / 2);
        _mm512_mask_storeu_ps(ev + i / 2, __mmask16((1u << ne) - 1u), _mm512_permutex2var_ps(a, ie, b));
        if (no) _mm512_mask_storeu_ps(od + i / 2, __mmask16((1u << no) - 1u), _mm512_permutex2var_ps(a, io, b));
    }
}

// The inverse: out[2 m] = ev[m], out[2 m + 1] = od[m] for 2 m (+ 1) < n.
void interleave2(const float* __restrict ev, const float* __restrict od, std::size_t n, float* __restrict out)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i;
        const std::size_t ne = std::min<std::size_t>(16, (left + 1) / 2), no = std::min<std::size_t>(16, left / 2);
        const __m512 e = _mm512_maskz_loadu_ps(__mmask16((1u << ne) - 1u), ev + i / 2);
        const __m512 o = _mm512_maskz_loadu_ps(__mmask16((1u << no) - 1u), od + i / 2);
        const __mmask16 k0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
        const __mmask16 k1 = left >= 32 ? __mmask16(0xFFFF) : left > 16 ? __mmask16((1u << (left - 16)) - 1u) : __mmask16(0);
        _mm512_mask_storeu_ps(out + i, k0, _mm512_permutex2var_ps(e, lo, o));
        if (k1) _mm512_mask_storeu_ps(out + i + 16, k1, _mm512_permutex2var_ps(e, hi, o));
    }
}
#endif

// x: (H, W) -> the phases of one plane, phaseStride floats apart (phase (py, px) row r at
// q + (py s + px) phaseStride + r Wq), without clearing the padding.
void scatterPhases(const float* __restrict x, const DepthwiseGeometry& g, float* __restrict q, std::size_t phaseStride)
{
    std::array<std::size_t, kMaxDepthwiseStride> at{};
    for (std::size_t r = 0; r < g.numRuns; ++r)
        at[r] = g.runs[r].at / g.phaseSize() * phaseStride + g.runs[r].at % g.phaseSize();
    std::size_t py = g.py0, qr = g.qr0;
    for (std::size_t iy = 0; iy < g.H; ++iy) {
        const float* __restrict in = x + iy * g.W;
        float* row = q + py * g.s * phaseStride + qr * g.Wq;
#if defined(__AVX512F__)
        if (g.s == 2 && g.numRuns == 2) { // the run whose first input column is 0 takes the even ones
            const std::size_t e = g.runs[0].ix0 == 0 ? 0 : 1;
            deinterleave2(in, g.W, row + at[e], row + at[1 - e]);
        } else
#endif
        for (std::size_t r = 0; r < g.numRuns; ++r) {
            const DepthwiseGeometry::Run& run = g.runs[r];
            float* __restrict out = row + at[r];
            if (g.s == 1)
                copyRow(out, in, run.n);
            else if (g.s == 2)
                for (std::size_t m = 0; m < run.n; ++m) out[m] = in[run.ix0 + 2 * m];
            else
                for (std::size_t m = 0; m < run.n; ++m) out[m] = in[run.ix0 + m * g.s];
        }
        if (++py == g.s) {
            py = 0;
            ++qr;
        }
    }
}

// Two planes' phases at once as bf16 pair dwords, bf16Bits(a) | bf16Bits(b) << 16 (b null: zero),
// 32-bit elements phaseStride apart: what scatterPhases of each plane and roundInterleave2 of the
// two make, bit for bit, in one pass over x instead of three (resnet8's strided convolutions).
void scatterPhasesBf16Pair(const float* __restrict a, const float* __restrict b, const DepthwiseGeometry& g,
                           std::uint32_t* __restrict q, std::size_t phaseStride)
{
    std::array<std::size_t, kMaxDepthwiseStride> at{};
    for (std::size_t r = 0; r < g.numRuns; ++r)
        at[r] = g.runs[r].at / g.phaseSize() * phaseStride + g.runs[r].at % g.phaseSize();
    const auto pair = [&](std::size_t i) {
        return static_cast<std::uint32_t>(bf16Bits(a[i])) | (b ? static_cast<std::uint32_t>(bf16Bits(b[i])) << 16 : 0u);
    };
    std::size_t py = g.py0, qr = g.qr0;
    for (std::size_t iy = 0; iy < g.H; ++iy) {
        std::uint32_t* row = q + py * g.s * phaseStride + qr * g.Wq;
        const std::size_t r0 = iy * g.W;
#if defined(__AVX512F__)
        if (g.s == 2 && g.numRuns == 2) { // even input columns to the run whose first column is 0
            const std::size_t e = g.runs[0].ix0 == 0 ? 0 : 1;
            std::uint32_t* ev = row + at[e];
            std::uint32_t* od = row + at[1 - e];
            const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            for (std::size_t i = 0; i < g.W; i += 32) {
                const std::size_t left = g.W - i;
                const __mmask16 k0 = bf16TailMask(left), k1 = left > 16 ? bf16TailMask(left - 16) : __mmask16(0);
                const std::size_t ne = std::min<std::size_t>(16, (left + 1) / 2), no = std::min<std::size_t>(16, left / 2);
                const float* ra = a + r0 + i;
                const __m512 a0 = _mm512_maskz_loadu_ps(k0, ra), a1 = _mm512_maskz_loadu_ps(k1, ra + 16);
                __m512i we = bf16BitsX16(_mm512_permutex2var_ps(a0, ie, a1));
                __m512i wo = bf16BitsX16(_mm512_permutex2var_ps(a0, io, a1));
                if (b) {
                    const float* rb = b + r0 + i;
                    const __m512 b0 = _mm512_maskz_loadu_ps(k0, rb), b1 = _mm512_maskz_loadu_ps(k1, rb + 16);
                    we = _mm512_or_si512(we, _mm512_slli_epi32(bf16BitsX16(_mm512_permutex2var_ps(b0, ie, b1)), 16));
                    wo = _mm512_or_si512(wo, _mm512_slli_epi32(bf16BitsX16(_mm512_permutex2var_ps(b0, io, b1)), 16));
                }
                _mm512_mask_storeu_epi32(ev + i / 2, bf16TailMask(ne), we);
                if (no) _mm512_mask_storeu_epi32(od + i / 2, bf16TailMask(no), wo);
            }
        } else
#endif
        for (std::size_t r = 0; r < g.numRuns; ++r) {
            const DepthwiseGeometry::Run& run = g.runs[r];
            std::uint32_t* __restrict out = row + at[r];
            for (std::size_t m = 0; m < run.n; ++m) out[m] = pair(r0 + run.ix0 + m * g.s);
        }
        if (++py == g.s) {
            py = 0;
            ++qr;
        }
    }
}

// dq: (s, s, Hq, Wq) -> dx: (H, W), dropping the padding (the inverse of scatterPhases).
void fromPhases(const float* __restrict dq, const DepthwiseGeometry& g, float* __restrict dx)
{
    std::size_t py = g.py0, qr = g.qr0;
    for (std::size_t iy = 0; iy < g.H; ++iy) {
        float* __restrict out = dx + iy * g.W;
        const float* row = dq + py * g.s * g.phaseSize() + qr * g.Wq;
#if defined(__AVX512F__)
        if (g.s == 2 && g.numRuns == 2) {
            const std::size_t e = g.runs[0].ix0 == 0 ? 0 : 1;
            interleave2(row + g.runs[e].at, row + g.runs[1 - e].at, g.W, out);
        } else
#endif
        for (std::size_t r = 0; r < g.numRuns; ++r) {
            const DepthwiseGeometry::Run& run = g.runs[r];
            const float* __restrict in = row + run.at;
            if (g.s == 1)
                copyRow(out, in, run.n);
            else if (g.s == 2)
                for (std::size_t m = 0; m < run.n; ++m) out[run.ix0 + 2 * m] = in[m];
            else
                for (std::size_t m = 0; m < run.n; ++m) out[run.ix0 + m * g.s] = in[m];
        }
        if (++py == g.s) {
            py = 0;
            ++qr;
        }
    }
}

// y[j] = a x[j] and y[j] += a x[j]
void scaleTo(float* __restrict y, const float* __restrict x, float a, std::size_t n)
{
    for (std::size_t j = 0; j < n; ++j) y[j] = a * x[j];
}

void axpy(float* __restrict y, const float* __restrict x, float a, std::size_t n)
{
    for (std::size_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// out[j] = sum_t w[t] src[t][j] for j < n, the taps in order. kTaps > 0 fixes the tap count at
// compile time: the taps unroll inside the loop over j and each output is summed in a register.
// kTaps == 0: nTaps (at least 1) passes over out.
template <std::size_t kTaps>
void tapSum(const float* const* src, const float* w, std::size_t nTaps, std::size_t n, float* __restrict out)
{
    if constexpr (kTaps > 0) {
        for (std::size_t j = 0; j < n; ++j) {
            float a = w[0] * src[0][j];
#pragma GCC unroll 64
            for (std::size_t t = 1; t < kTaps; ++t) a += w[t] * src[t][j];
            out[j] = a;
        }
    } else {
        scaleTo(out, src[0], w[0], n);
        for (std::size_t t = 1; t < nTaps; ++t) axpy(out, src[t], w[t], n);
    }
}

// tapSum with the tap counts of 3x3 kernels unrolled: 9 taps at stride 1, phases of 4, 2, 2 and 1
// taps at stride 2.
void tapSumAny(const float* const* src, const float* w, std::size_t nTaps, std::size_t n, float* __restrict out)
{
    switch (nTaps) {
    case 9: tapSum<9>(src, w, nTaps, n, out); break;
    case 4: tapSum<4>(src, w, nTaps, n, out); break;
    case 2: tapSum<2>(src, w, nTaps, n, out); break;
    case 1: tapSum<1>(src, w, nTaps, n, out); break;
    default: tapSum<0>(src, w, nTaps, n, out);
    }
}

// Dot product of n floats in a fixed association order: 16 interleaved partial sums (as in
// fixedOrderSum), then added pairwise, halves first (a short dependency chain: the depthwise
// weight gradient takes k^2 of these per plane, and planes can be 7x7).
float fixedOrderDot(const float* a, const float* b, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += a[i + j] * b[i + j];
    for (std::size_t j = 0; j < 8; ++j) acc[j] += acc[j + 8];
    for (std::size_t j = 0; j < 4; ++j) acc[j] += acc[j + 4];
    for (std::size_t j = 0; j < 2; ++j) acc[j] += acc[j + 2];
    return acc[0] + acc[1];
}

} // namespace conv_detail

using namespace conv_detail;

// x: (N, C, H, W), W: (C, 1, k, k), y: (N, C, Ho, Wo), one plane at a time (see DepthwiseGeometry).
// y[n,c,oy,ox] = sum_{ky,kx} w[c,ky,kx] xpad[n,c, oy s + ky, ox s + kx] + b[c]
void Conv2d::forwardDepthwise(const Tensor& x, Tensor& y, bool roundOut) const
{
    const DepthwiseGeometry g = depthwiseGeometry(x.dim(2), x.dim(3), m_k, m_stride, m_pad);
    const std::size_t N = x.dim(0), C = m_cin, kk = m_k * m_k, HW = g.H * g.W, HWo = g.Ho * g.Wo;
    const float* wdata = m_weight.forwardValue().data();
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;
    parallelFor(N, [&](std::size_t n) {
        float* q = threadBuffer(0, g.planeBuffer()).data();
        float* acc = threadBuffer(1, g.Lr).data();
        const float* src[kMaxDepthwiseTaps];
        for (std::size_t t = 0; t < kk; ++t) src[t] = q + g.taps[t];
        // every plane fills the same cells: the padding and slack are zeroed once per image
        std::memset(q, 0, g.planeBuffer() * sizeof(float));
        for (std::size_t c = 0; c < C; ++c) {
            scatterPhases(x.data() + (n * C + c) * HW, g, q, g.phaseSize());
            tapSumAny(src, wdata + c * kk, kk, g.Lr, acc);
            float* out = y.data() + (n * C + c) * HWo;
            for (std::size_t oy = 0; oy < g.Ho; ++oy) {
                const float* row = acc + oy * g.Wq;
                float* o = out + oy * g.Wo;
                if (bias)
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) o[ox] = row[ox] + bias[c];
                else
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) o[ox] = row[ox];
            }
            if (roundOut) roundRowBf16(out, HWo); // the plane is still in cache
        }
    });
}

// dW[c,ky,kx] = sum_n sum_{oy,ox} dy[n,c,oy,ox] xpad[n,c, oy s + ky, ox s + kx] ; db[c] = sum_n sum dy[n,c] ;
// dxpad[n,c,iy,ix] = sum_{ky,kx} w[c,ky,kx] dy[n,c, (iy - ky) / s, (ix - kx) / s] over the taps that divide
void Conv2d::backwardDepthwise(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    const DepthwiseGeometry g = depthwiseGeometry(x.dim(2), x.dim(3), m_k, m_stride, m_pad);
    const std::size_t N = x.dim(0), C = m_cin, kk = m_k * m_k, HW = g.H * g.W, HWo = g.Ho * g.Wo;
    const std::size_t P = g.phaseSize();
    const float* wdata = m_weight.forwardValue().data();
    // One partial gradient per image, reduced in image order, as in the im2col path.
    const std::size_t wSize = C * kk, bSize = m_hasBias ? C : 0, partSize = wSize + bSize;
    m_partials.resize(N * partSize);
    if (needInputGrad) dx.resize(x.shape()); // every element is written below
    const bool roundDx = roundsDx(needInputGrad); // each plane of dx while in cache
    std::atomic<bool> finite{true};
    parallelFor(N, [&](std::size_t n) {
        float* q = threadBuffer(0, g.planeBuffer()).data();
        float* G = threadBuffer(1, g.gradBuffer()).data();
        float* dq = threadBuffer(2, g.planeBuffer()).data();
        const float* gq = G + g.margin; // dy at row pitch Wq, zero before, after and in the scratch columns
        float* part = m_partials.data() + n * partSize;
        const float* src[kMaxDepthwiseTaps];
        for (std::size_t t = 0; t < kk; ++t) src[t] = q + g.taps[t];
        // dx of phase f gathers dy shifted back by each of its taps' offsets within the phase
        const float* back[kMaxDepthwiseTaps];
        float wf[kMaxDepthwiseTaps];
        for (std::size_t i = 0; i < kk; ++i) back[i] = gq - g.taps[g.phaseTaps[i]] % P;
        std::memset(G, 0, g.gradBuffer() * sizeof(float));
        std::memset(q, 0, g.planeBuffer() * sizeof(float)); // as in forwardDepthwise
        for (std::size_t c = 0; c < C; ++c) {
            const float* gy = dy.data() + (n * C + c) * HWo;
            for (std::size_t oy = 0; oy < g.Ho; ++oy) copyRow(G + g.margin + oy * g.Wq, gy + oy * g.Wo, g.Wo);
            scatterPhases(x.data() + (n * C + c) * HW, g, q, g.phaseSize());
            // gq is zero past L: the whole blocks add nothing
            for (std::size_t t = 0; t < kk; ++t) part[c * kk + t] = fixedOrderDot(gq, src[t], g.Lr);
            if (bSize) part[wSize + c] = fixedOrderSum(gy, HWo);
            if (!needInputGrad) continue;
            const float* w = wdata + c * kk;
            for (std::size_t f = 0; f < g.s * g.s; ++f) {
                const std::size_t b = g.phaseBegin[f], T = g.phaseBegin[f + 1] - b;
                float* out = dq + f * P; // the last block runs into phase f + 1 (written next) or the slack
                if (T == 0) {
                    std::fill(out, out + P, 0.0f);
                    continue;
                }
                for (std::size_t i = 0; i < T; ++i) wf[i] = w[g.phaseTaps[b + i]];
                tapSumAny(back + b, wf, T, roundUpToBlock(P), out);
            }
            fromPhases(dq, g, dx.data() + (n * C + c) * HW);
            if (roundDx && !roundBf16AllFinite(dx.data() + (n * C + c) * HW, HW)) finite.store(false, std::memory_order_relaxed);
        }
    });
    reducePartials(m_partials, N, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
    if (roundDx) {
        m_dxRoundedInPass = true;
        m_dxFinite = finite.load();
    }
}


} // namespace quantscope
