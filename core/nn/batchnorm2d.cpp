#include "nn/batchnorm2d.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "tensor/prefetch.h"
#include "util/errors.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

BatchNorm2d::BatchNorm2d(std::string name, std::size_t channels, float eps, float momentum)
    : Layer(std::move(name)), m_c(channels), m_eps(eps), m_momentum(momentum)
{
    m_gamma.name = "gamma";
    m_gamma.value = Tensor({channels}, 1.0f);
    m_gamma.grad = Tensor({channels});
    m_beta.name = "beta";
    m_beta.value = Tensor({channels});
    m_beta.grad = Tensor({channels});
    m_runMean = Tensor({channels}, 0.0f);
    m_runVar = Tensor({channels}, 1.0f);
}

Shape BatchNorm2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[1] != m_c)
        throw ConfigError(name() + ": expected input (N," + std::to_string(m_c) + ",H,W), got " + shapeString(in));
    return in;
}

namespace {

// Per-plane sums in a fixed association order: 16 interleaved float lanes (lane j sums the
// elements i with i % 16 == j; the result depends neither on threads nor on alignment), then the
// lanes in double, in order.
double laneTotal(const float* acc)
{
    double s = 0.0;
    for (std::size_t j = 0; j < 16; ++j) s += acc[j];
    return s;
}

// Both builds' kernels (AVX-512 and scalar) take these.
enum class Clamp { None, Relu, Capped };

// Where the fused clamp's mask comes from: BN(x) recomputed; the activation's output r as the
// caller left it (see backwardClamped); or BN(x) recomputed and rounded to bf16, which is what r
// holds when the forward rounded it itself (RunContext::roundOutputBf16) and the caller asked for
// the mask from r: round(clamp(v)) = clamp(round(v)), as 0 and cap are bf16 values, so
// 0 < r < cap iff 0 < round(v) < cap. That reads x, which the pass reads anyway, not r (mixed
// bf16 mobilenet-tiny: one stream of every BatchNorm's output fewer in each of the two passes).
enum class MaskFrom { Recompute, Output, RoundedRecompute };

#if defined(__AVX512F__)
// Explicit vectors: inlined into the parallel loops, GCC 12 kept the lane arrays on the stack.
inline __mmask16 tailMask(std::size_t left) { return static_cast<__mmask16>((1u << left) - 1u); }

inline double laneTotal(__m512 v)
{
    alignas(64) float acc[16];
    _mm512_store_ps(acc, v);
    return laneTotal(acc);
}

// The least and greatest lane (_mm512_reduce_min_ps would do, but GCC 12 warns in its expansion).
inline float laneMin(__m512 v)
{
    alignas(64) float l[16];
    _mm512_store_ps(l, v);
    return *std::min_element(l, l + 16);
}

inline float laneMax(__m512 v)
{
    alignas(64) float l[16];
    _mm512_store_ps(l, v);
    return *std::max_element(l, l + 16);
}

double planeSum(const float* __restrict p, std::size_t n)
{
    __m512 acc = _mm512_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(p + i));
    if (i < n) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tailMask(n - i), p + i));
    return laneTotal(acc);
}

// sum (p - mean)^2
double planeSquaredDeviation(const float* __restrict p, std::size_t n, float mean)
{
    const __m512 m = _mm512_set1_ps(mean);
    __m512 acc = _mm512_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + i), m);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    if (i < n) {
        const __mmask16 k = tailMask(n - i);
        const __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, p + i), m);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    return laneTotal(acc);
}

// planeSum and planeSquaredDeviation of P planes at once (plane q at p + q n), bit for bit: each
// plane's lane sums are dependency chains of n / 16 additions, so one plane at a time left the
// statistics pass latency-bound; P independent chains overlap (bench_model_layers --model resnet8:
// bn1's forward 0.096 -> 0.084 ms, layer3.bn2's 0.065 -> 0.049; the same block in the backward's
// sums measured slower, 0.14 -> 0.16 ms).
// With Range, each plane's least and greatest value too (ranges[2 q], ranges[2 q + 1]; meaningful
// when the plane's sum is finite), in the sums' loop (an FP32 step measured 2 % slower with them
// always on, so they are taken only for a sink that asks).
template <int P, bool Range>
void planeStatsBlock(const float* __restrict p, std::size_t n, double* sums, double* squaredDeviations, float* ranges)
{
    __m512 acc[P], lo[P], hi[P];
#pragma GCC unroll 8
    for (int q = 0; q < P; ++q) {
        acc[q] = _mm512_setzero_ps();
        lo[q] = _mm512_set1_ps(INFINITY);
        hi[q] = _mm512_set1_ps(-INFINITY);
    }
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
#pragma GCC unroll 8
        for (int q = 0; q < P; ++q) {
            const __m512 v = _mm512_loadu_ps(p + q * n + i);
            acc[q] = _mm512_add_ps(acc[q], v);
            if constexpr (Range) {
                lo[q] = _mm512_min_ps(lo[q], v);
                hi[q] = _mm512_max_ps(hi[q], v);
            }
        }
    const __mmask16 k = i < n ? tailMask(n - i) : __mmask16(0);
    if (k)
#pragma GCC unroll 8
        for (int q = 0; q < P; ++q) {
            const __m512 v = _mm512_maskz_loadu_ps(k, p + q * n + i);
            acc[q] = _mm512_add_ps(acc[q], v);
            if constexpr (Range) {
                lo[q] = _mm512_mask_min_ps(lo[q], k, lo[q], v);
                hi[q] = _mm512_mask_max_ps(hi[q], k, hi[q], v);
            }
        }
    __m512 m[P], dev[P];
#pragma GCC unroll 8
    for (int q = 0; q < P; ++q) {
        if constexpr (Range) {
            ranges[2 * q] = laneMin(lo[q]);
            ranges[2 * q + 1] = laneMax(hi[q]);
        }
        sums[q] = laneTotal(acc[q]);
        m[q] = _mm512_set1_ps(static_cast<float>(sums[q] / static_cast<double>(n)));
        dev[q] = _mm512_setzero_ps();
    }
    for (i = 0; i + 16 <= n; i += 16)
#pragma GCC unroll 8
        for (int q = 0; q < P; ++q) {
            const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + q * n + i), m[q]);
            dev[q] = _mm512_fmadd_ps(d, d, dev[q]);
        }
    if (k)
#pragma GCC unroll 8
        for (int q = 0; q < P; ++q) {
            const __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, p + q * n + i), m[q]);
            dev[q] = _mm512_fmadd_ps(d, d, dev[q]);
        }
#pragma GCC unroll 8
    for (int q = 0; q < P; ++q) squaredDeviations[q] = laneTotal(dev[q]);
}

// BN's output of one element, y = (x - mean) scale + bias, computed the same way (one FMA) in the
// forward pass and in the fused backward, which recomputes the activation's mask from x.
struct ChannelAffine {
    float mean, scale, bias, cap;
};

inline __m512 bnValue(__m512 x, const ChannelAffine& a)
{
    return _mm512_fmadd_ps(_mm512_sub_ps(x, _mm512_set1_ps(a.mean)), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.bias));
}

// min(max(y, 0), cap) with std::min/std::max's results, NaN included (the second operand of
// vmaxps/vminps is returned when one is NaN): what ReLU and ReLU6 compute.
inline __m512 clampValue(__m512 y, float cap)
{
    return _mm512_min_ps(_mm512_set1_ps(cap), _mm512_max_ps(_mm512_setzero_ps(), y));
}

// y = BN(x) over one plane, clamped to [0, cap] when Clamped, then rounded to bf16 when Round
// (roundBf16Span's roundBf16X16, in the same pass).
template <bool Clamped, bool Round = false>
void planeNormalize(const float* __restrict x, std::size_t n, const ChannelAffine& a, float* __restrict y)
{
    const auto out = [&](__m512 v) {
        if constexpr (Clamped) v = clampValue(v, a.cap);
        if constexpr (Round) v = roundBf16X16(v);
        return v;
    };
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, out(bnValue(_mm512_loadu_ps(x + i), a)));
    if (i < n) {
        const __mmask16 k = tailMask(n - i);
        _mm512_mask_storeu_ps(y + i, k, out(bnValue(_mm512_maskz_loadu_ps(k, x + i), a)));
    }
}

// The scalar twin of clampValue, with its results for zeros and NaN (vmaxps and vminps return
// their second operand when the two compare equal or one is NaN).
inline float clampScalar(float v, float cap)
{
    const float t = 0.0f > v ? 0.0f : v;
    return cap < t ? cap : t;
}

// BN's output of one plane (clamped when Clamped) fake-quantized onto grid g, with its
// straight-through mask: the operations of quantize.cpp's fakeQuantizeRun (round half to even),
// which QuantSim runs on the output when the pass is not fused (tst_fused_passes compares the two
// bit for bit).
template <bool Clamped>
void planeNormalizeFakeQuant(const float* __restrict x, std::size_t n, const ChannelAffine& a,
                             const OutputImageSink::FakeQuantGrid& g, float* __restrict y, std::uint8_t* __restrict mask)
{
    const __m512 inv = _mm512_set1_ps(1.0f / g.scale), scale = _mm512_set1_ps(g.scale);
    const __m512 zp = _mm512_set1_ps(static_cast<float>(g.zeroPoint));
    const __m512 qmin = _mm512_set1_ps(static_cast<float>(g.qmin)), qmax = _mm512_set1_ps(static_cast<float>(g.qmax));
    const __m512i one = _mm512_set1_epi32(1);
    const auto write = [&](__m512 xv, std::size_t i, __mmask16 k) {
        __m512 v = bnValue(xv, a);
        if constexpr (Clamped) v = clampValue(v, a.cap);
        const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 q = _mm512_add_ps(r, zp);
        const __mmask16 below = _mm512_cmp_ps_mask(q, qmin, _CMP_LT_OQ), above = _mm512_cmp_ps_mask(q, qmax, _CMP_GT_OQ);
        const __mmask16 inside = _mm512_cmp_ps_mask(q, qmin, _CMP_GE_OQ) & _mm512_cmp_ps_mask(q, qmax, _CMP_LE_OQ);
        _mm512_mask_cvtepi32_storeu_epi8(mask + i, k, _mm512_maskz_mov_epi32(inside, one));
        q = _mm512_mask_blend_ps(below, q, qmin);
        q = _mm512_mask_blend_ps(above, q, qmax);
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_sub_ps(q, zp), scale));
    };
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) write(_mm512_loadu_ps(x + i), i, __mmask16(0xFFFF));
    if (i < n) {
        const __mmask16 k = tailMask(n - i);
        write(_mm512_maskz_loadu_ps(k, x + i), i, k);
    }
}

// The gradient entering BN from a fused clamp activation: dy where the activation passes it
// (Clamp::None: no activation; Relu: BN(x) > 0; Capped (ReLU6): 0 < BN(x) < cap), 0 elsewhere.
// r > 0 iff BN(x) > 0 and r < cap iff BN(x) < cap, and BN(x) is recomputed exactly as the
// forward pass computed it, so the activation's output r need not be read (r unused here).

// ste: the straight-through mask of a quantization point on the activation's output, or on BN's own
// output when no activation is fused (0/1 bytes, backwardClamped), or nullptr.
template <Clamp K, MaskFrom F>
inline __m512 gradIn(const float* __restrict dy, const float* __restrict r, const std::uint8_t* __restrict ste, __m512 xv,
                     std::size_t i, __mmask16 k, const ChannelAffine& a)
{
    if constexpr (K == Clamp::None) {
        (void)r;
        (void)xv;
        (void)a;
        if (ste) return _mm512_maskz_loadu_ps(_mm_mask_cmpneq_epi8_mask(k, _mm_maskz_loadu_epi8(k, ste + i), _mm_setzero_si128()), dy + i);
        return _mm512_maskz_loadu_ps(k, dy + i);
    } else {
        const __m512 v = F == MaskFrom::Output             ? _mm512_maskz_loadu_ps(k, r + i)
                         : F == MaskFrom::RoundedRecompute ? roundBf16X16(bnValue(xv, a))
                                                           : bnValue(xv, a);
        __mmask16 pass = _mm512_mask_cmp_ps_mask(k, v, _mm512_setzero_ps(), _CMP_GT_OQ);
        if constexpr (K == Clamp::Capped) pass = _mm512_mask_cmp_ps_mask(pass, v, _mm512_set1_ps(a.cap), _CMP_LT_OQ);
        if (ste) pass = _mm_mask_cmpneq_epi8_mask(pass, _mm_maskz_loadu_epi8(k, ste + i), _mm_setzero_si128());
        return _mm512_maskz_loadu_ps(pass, dy + i);
    }
}

// sum g and sum g (x - mean) over one plane, g = gradIn<K>
template <Clamp K, MaskFrom F>
void planeGradSums(const float* __restrict dy, const float* __restrict r, const std::uint8_t* __restrict ste,
                   const float* __restrict x, const ChannelAffine& af, std::size_t n, double& sdy, double& sdyx)
{
    const __m512 m = _mm512_set1_ps(af.mean);
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x + i);
        const __m512 g = gradIn<K, F>(dy, r, ste, xv, i, 0xFFFF, af);
        a = _mm512_add_ps(a, g);
        b = _mm512_fmadd_ps(g, _mm512_sub_ps(xv, m), b);
    }
    if (i < n) {
        const __mmask16 k = tailMask(n - i);
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + i);
        const __m512 g = gradIn<K, F>(dy, r, ste, xv, i, k, af);
        a = _mm512_add_ps(a, g);
        b = _mm512_fmadd_ps(g, _mm512_maskz_sub_ps(k, xv, m), b);
    }
    sdy = laneTotal(a);
    sdyx = laneTotal(b);
}

// out = alpha g + beta (x - mean) + gamma over one plane, g = gradIn<K>
template <Clamp K, MaskFrom F>
void planeInputGrad(const float* __restrict dy, const float* __restrict r, const std::uint8_t* __restrict ste,
                    const float* __restrict x, const ChannelAffine& af, std::size_t n, float alpha, float beta, float gamma,
                    float* __restrict out)
{
    const __m512 m = _mm512_set1_ps(af.mean), va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta),
                 vg = _mm512_set1_ps(gamma);
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x + i);
        const __m512 t = _mm512_fmadd_ps(vb, _mm512_sub_ps(xv, m), vg);
        _mm512_storeu_ps(out + i, _mm512_fmadd_ps(va, gradIn<K, F>(dy, r, ste, xv, i, 0xFFFF, af), t));
    }
    if (i < n) {
        const __mmask16 k = tailMask(n - i);
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + i);
        const __m512 t = _mm512_fmadd_ps(vb, _mm512_sub_ps(xv, m), vg);
        _mm512_mask_storeu_ps(out + i, k, _mm512_fmadd_ps(va, gradIn<K, F>(dy, r, ste, xv, i, k, af), t));
    }
}
#else
double planeSum(const float* __restrict p, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += p[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += p[i + j];
    return laneTotal(acc);
}

// sum (p - mean)^2
double planeSquaredDeviation(const float* __restrict p, std::size_t n, float mean)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) {
            const float d = p[i + j] - mean;
            acc[j] += d * d;
        }
    for (std::size_t j = 0; i + j < n; ++j) {
        const float d = p[i + j] - mean;
        acc[j] += d * d;
    }
    return laneTotal(acc);
}

struct ChannelAffine {
    float mean, scale, bias, cap;
};

template <bool Clamped, bool Round = false>
void planeNormalize(const float* __restrict x, std::size_t n, const ChannelAffine& a, float* __restrict y)
{
    for (std::size_t i = 0; i < n; ++i) {
        const float v = (x[i] - a.mean) * a.scale + a.bias;
        y[i] = Clamped ? std::min(std::max(v, 0.0f), a.cap) : v;
    }
    if constexpr (Round) roundBf16Span(y, n);
}

// Without AVX-512 the fused backward reads the activation's output r for its mask (the
// compiler may contract BN's multiply-add differently in two loops; r is what the forward wrote).

template <Clamp K>
inline float gradIn(const float* __restrict dy, const float* __restrict r, const std::uint8_t* __restrict ste, std::size_t i,
                    float cap)
{
    if constexpr (K == Clamp::None) {
        (void)r;
        (void)cap;
        return !ste || ste[i] ? dy[i] : 0.0f;
    } else if constexpr (K == Clamp::Relu) {
        (void)cap;
        return r[i] > 0.0f && (!ste || ste[i]) ? dy[i] : 0.0f;
    } else {
        return r[i] > 0.0f && r[i] < cap && (!ste || ste[i]) ? dy[i] : 0.0f;
    }
}

// sum g and sum g (x - mean) over one plane, g = gradIn<K>
template <Clamp K, MaskFrom /*the mask comes from r always here*/>
void planeGradSums(const float* __restrict dy, const float* __restrict r, const std::uint8_t* __restrict ste,
                   const float* __restrict x, const ChannelAffine& af, std::size_t n, double& sdy, double& sdyx)
{
    float a[16] = {}, b[16] = {};
    for (std::size_t i = 0; i < n; ++i) {
        const float g = gradIn<K>(dy, r, ste, i, af.cap);
        a[i % 16] += g;
        b[i % 16] += g * (x[i] - af.mean);
    }
    sdy = laneTotal(a);
    sdyx = laneTotal(b);
}

template <Clamp K, MaskFrom /*the mask comes from r always here*/>
void planeInputGrad(const float* __restrict dy, const float* __restrict r, const std::uint8_t* __restrict ste,
                    const float* __restrict x, const ChannelAffine& af, std::size_t n, float alpha, float beta, float gamma,
                    float* __restrict out)
{
    for (std::size_t i = 0; i < n; ++i) out[i] = alpha * gradIn<K>(dy, r, ste, i, af.cap) + beta * (x[i] - af.mean) + gamma;
}
#endif

} // namespace

// y = gamma (x - mean_c) / sqrt(var_c + eps) + beta, statistics over (N, H, W).
// Every pass walks the batch image by image (each image's (C, H, W) block is contiguous, so the
// passes stream through memory); per-plane partial sums are combined per channel in image order,
// so the statistics do not depend on the thread count. The variance combines each plane's sum
// of squared deviations about its own mean (Chan et al., "Updating formulae and a pairwise
// algorithm for computing sample variances", 1979): one pass over memory, no cancellation.
void BatchNorm2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx) { forwardImpl(x, &y, ctx, 0.0f, false); }

void BatchNorm2d::forwardDeferringOutput(const Tensor& x, const RunContext& ctx, float cap, bool clamp)
{
    forwardImpl(x, nullptr, ctx, cap, clamp);
    m_deferredOutputOf = &x;
    m_deferredCap = cap;
    m_deferredClamp = clamp;
}

void BatchNorm2d::deferredOutput(std::size_t p, std::size_t rows, std::size_t n, float* out, std::size_t pitch) const
{
    const Tensor* x = m_deferredOutputOf;
    if (!x || x->rank() != 4 || p >= x->dim(0) * m_c || rows * n != x->dim(2) * x->dim(3))
        throw ConfigError(name() + ": output planes asked for without a deferred forward over them");
    const std::size_t c = p % m_c;
    const float* g = m_gamma.forwardValue().data();
    const float* b = m_beta.forwardValue().data();
    const ChannelAffine a{m_mean[c], g[c] * m_invStd[c], b[c], m_deferredCap};
    const float* xp = x->data() + p * rows * n;
    for (std::size_t y = 0; y < rows; ++y) {
        float* __restrict yp = out + y * pitch;
        if (m_outputRoundedBf16) {
            if (m_deferredClamp) planeNormalize<true, true>(xp + y * n, n, a, yp);
            else planeNormalize<false, true>(xp + y * n, n, a, yp);
        } else {
            if (m_deferredClamp) planeNormalize<true>(xp + y * n, n, a, yp);
            else planeNormalize<false>(xp + y * n, n, a, yp);
        }
    }
}

void BatchNorm2d::outputPlanes(std::size_t p0, std::size_t count, float* out) const
{
    const Tensor* x = m_deferredOutputOf;
    const std::size_t HW = x && x->rank() == 4 ? x->dim(2) * x->dim(3) : 0;
    for (std::size_t p = p0; p < p0 + count; ++p) deferredOutput(p, 1, HW, out + (p - p0) * HW, HW);
}

void BatchNorm2d::outputPlaneRows(std::size_t p, float* out, std::size_t pitch) const
{
    const Tensor* x = m_deferredOutputOf;
    if (x && x->rank() == 4 && pitch < x->dim(3)) throw ConfigError(name() + ": output rows asked for at a pitch below the width");
    deferredOutput(p, x && x->rank() == 4 ? x->dim(2) : 0, x && x->rank() == 4 ? x->dim(3) : 0, out, pitch);
}

void BatchNorm2d::prefetchPlane(std::size_t p) const
{
    const Tensor* x = m_deferredOutputOf;
    if (!x || x->rank() != 4) return;
    const std::size_t HW = x->dim(2) * x->dim(3);
    if (p < x->dim(0) * m_c) prefetchSpan(x->data() + p * HW, HW);
}

void BatchNorm2d::forwardClamped(const Tensor& x, Tensor& r, const RunContext& ctx, float cap)
{
    forwardImpl(x, &r, ctx, cap, true);
}

void BatchNorm2d::beginReestimation()
{
    if (m_reestimating) return;
    m_savedMean = m_runMean;
    m_savedVar = m_runVar;
    m_reestimating = true;
    m_reestimated = 0;
}

void BatchNorm2d::endReestimation()
{
    if (!m_reestimating) return;
    if (m_reestimated == 0) {
        m_runMean = m_savedMean;
        m_runVar = m_savedVar;
    }
    m_reestimating = false;
    m_reestimated = 0;
    m_savedMean = Tensor();
    m_savedVar = Tensor();
}

void BatchNorm2d::imageStats(const float* x, std::size_t n0, std::size_t count, std::size_t HW)
{
    const std::size_t C = m_c;
    for (std::size_t n = n0; n < n0 + count; ++n) {
        std::size_t c = 0;
#if defined(__AVX512F__)
        for (; c + 4 <= C; c += 4) {
            double sums[4], devs[4];
            if (m_tracksRange) planeStatsBlock<4, true>(x + (n * C + c) * HW, HW, sums, devs, m_planeRange.data() + 2 * (n * C + c));
            else planeStatsBlock<4, false>(x + (n * C + c) * HW, HW, sums, devs, nullptr);
            for (std::size_t q = 0; q < 4; ++q) {
                m_planeStats[2 * (n * C + c + q)] = sums[q];
                m_planeStats[2 * (n * C + c + q) + 1] = devs[q];
            }
        }
        for (std::size_t t = c; t < C && m_tracksRange; ++t) {
            const float* p = x + (n * C + t) * HW;
            float lo = INFINITY, hi = -INFINITY;
            for (std::size_t i = 0; i < HW; ++i) {
                lo = std::min(lo, p[i]);
                hi = std::max(hi, p[i]);
            }
            m_planeRange[2 * (n * C + t)] = lo;
            m_planeRange[2 * (n * C + t) + 1] = hi;
        }
#endif
        for (; c < C; ++c) {
            const float* p = x + (n * C + c) * HW;
            const double s = planeSum(p, HW);
            m_planeStats[2 * (n * C + c)] = s;
            m_planeStats[2 * (n * C + c) + 1] = planeSquaredDeviation(p, HW, static_cast<float>(s / HW));
        }
    }
}

bool BatchNorm2d::beginProducerStats(const RunContext& ctx, const Shape& xShape, bool planeRanges)
{
    m_tracksRange = planeRanges;
    m_producerImages.store(0);
    m_producerShape = Shape();
    if (!batchStatistics(ctx) || xShape.size() != 4 || xShape[1] != m_c) return false;
    m_producerShape = xShape;
    m_planeStats.resize(2 * xShape[0] * m_c);
    m_planeRange.resize(2 * xShape[0] * m_c);
    return true;
}

void BatchNorm2d::imagesWritten(const Tensor& y, std::size_t n0, std::size_t count)
{
    if (m_producerShape.empty() || y.shape() != m_producerShape || n0 + count > m_producerShape[0]) return;
    imageStats(y.data(), n0, count, y.dim(2) * y.dim(3));
    m_producerImages.fetch_add(count);
}

void BatchNorm2d::forwardImpl(const Tensor& x, Tensor* y, const RunContext& ctx, float cap, bool clamp)
{
    const Shape shape = outputShape(x.shape());
    m_deferredOutputOf = nullptr;
    if (y) y->resize(shape);
    const std::size_t N = x.dim(0), C = m_c, HW = x.dim(2) * x.dim(3), M = N * HW;
    const bool batchStats = batchStatistics(ctx);
    m_forwardBatchStats = batchStats;
    // Re-estimation: the k-th pass enters the running average with weight 1/k.
    const float momentum = m_reestimating ? 1.0f / static_cast<float>(++m_reestimated) : m_momentum;
    m_mean.assign(C, 0.0f);
    m_invStd.assign(C, 0.0f);
    // The producer's sums (beginProducerStats) when every image of this x arrived
    const bool fromProducer = m_producerShape == x.shape() && m_producerImages.load() == N;
    m_producerShape = Shape();
    m_producerImages.store(0);
    if (batchStats) {
        if (!fromProducer) {
            m_tracksRange = m_outputSink != nullptr;
            m_planeStats.resize(2 * N * C);
            m_planeRange.resize(2 * N * C);
            parallelForStatic(N, [&](std::size_t n) { imageStats(x.data(), n, 1, HW); });
        }
        for (std::size_t c = 0; c < C; ++c) {
            double s = 0.0;
            for (std::size_t n = 0; n < N; ++n) s += m_planeStats[2 * (n * C + c)];
            const double mean = s / static_cast<double>(M);
            double m2 = 0.0;
            for (std::size_t n = 0; n < N; ++n) {
                const double d = m_planeStats[2 * (n * C + c)] / static_cast<double>(HW) - mean;
                m2 += m_planeStats[2 * (n * C + c) + 1] + static_cast<double>(HW) * d * d;
            }
            const float var = static_cast<float>(m2 / static_cast<double>(M));
            const float unbiased = M > 1 ? static_cast<float>(m2 / static_cast<double>(M - 1)) : var;
            m_runMean[c] = (1.0f - momentum) * m_runMean[c] + momentum * static_cast<float>(mean);
            m_runVar[c] = (1.0f - momentum) * m_runVar[c] + momentum * unbiased;
            m_mean[c] = static_cast<float>(mean);
            m_invStd[c] = 1.0f / std::sqrt(var + m_eps);
        }
    } else {
        for (std::size_t c = 0; c < C; ++c) {
            m_mean[c] = m_runMean[c];
            m_invStd[c] = 1.0f / std::sqrt(m_runVar[c] + m_eps);
        }
    }
    const float* g = m_gamma.forwardValue().data();
    const float* b = m_beta.forwardValue().data();
    m_outputRoundedBf16 = ctx.roundOutputBf16;
    if (!y) return;
    // The sink may take the output's range before the pass (OutputImageSink::outputRange) and have
    // it write the output fake-quantized, with its mask.
    OutputImageSink::FakeQuantGrid grid;
    bool rangeTaken = false;
    float lo = 0.0f, hi = 0.0f;
    if (m_outputSink && batchStats && !ctx.roundOutputBf16 && outputRangeFromInput(N, cap, clamp, lo, hi))
        rangeTaken = m_outputSink->outputRange(shape, lo, hi, grid);
    parallelForStatic(N, [&](std::size_t n) {
        for (std::size_t c = 0; c < C; ++c) {
            const std::size_t off = (n * C + c) * HW;
            const float* __restrict xp = x.data() + off;
            float* __restrict yp = y->data() + off;
            const ChannelAffine a{m_mean[c], g[c] * m_invStd[c], b[c], cap};
#if defined(__AVX512F__)
            if (grid.mask) {
                if (clamp) planeNormalizeFakeQuant<true>(xp, HW, a, grid, yp, grid.mask + off);
                else planeNormalizeFakeQuant<false>(xp, HW, a, grid, yp, grid.mask + off);
                continue;
            }
#endif
            if (ctx.roundOutputBf16) { // in the same pass (RunContext::roundOutputBf16)
                if (clamp) planeNormalize<true, true>(xp, HW, a, yp);
                else planeNormalize<false, true>(xp, HW, a, yp);
            } else {
                if (clamp) planeNormalize<true>(xp, HW, a, yp);
                else planeNormalize<false>(xp, HW, a, yp);
            }
        }
        if (m_outputSink && !rangeTaken) m_outputSink->imagesWritten(*y, n, 1);
    });
}

bool BatchNorm2d::outputRangeFromInput(std::size_t N, float cap, bool clamp, float& lo, float& hi) const
{
#if defined(__AVX512F__)
    const std::size_t C = m_c;
    if (!m_tracksRange || m_planeRange.size() < 2 * N * C || m_planeStats.size() < 2 * N * C || m_mean.size() != C)
        return false;
    const float* g = m_gamma.forwardValue().data();
    const float* b = m_beta.forwardValue().data();
    lo = INFINITY;
    hi = -INFINITY;
    for (std::size_t c = 0; c < C; ++c) {
        float xlo = INFINITY, xhi = -INFINITY;
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t p = n * C + c;
            // a plane's sums are finite only when all of its values are
            if (!std::isfinite(m_planeStats[2 * p]) || !std::isfinite(m_planeStats[2 * p + 1])) return false;
            xlo = std::min(xlo, m_planeRange[2 * p]);
            xhi = std::max(xhi, m_planeRange[2 * p + 1]);
        }
        // bnValue's operations: x - mean, then one fused multiply-add (both monotone in x)
        const ChannelAffine a{m_mean[c], g[c] * m_invStd[c], b[c], cap};
        float v0 = std::fma(xlo - a.mean, a.scale, a.bias), v1 = std::fma(xhi - a.mean, a.scale, a.bias);
        if (!std::isfinite(v0) || !std::isfinite(v1)) return false;
        if (clamp) {
            v0 = clampScalar(v0, cap);
            v1 = clampScalar(v1, cap);
        }
        lo = std::min({lo, v0, v1});
        hi = std::max({hi, v0, v1});
    }
    return C > 0;
#else
    (void)N;
    (void)cap;
    (void)clamp;
    (void)lo;
    (void)hi;
    return false;
#endif
}

// With xhat = (x - mean) inv recomputed from x (nothing but the per-channel mean and inv is kept):
// batch statistics: dx = gamma inv / M (M dy - sum(dy) - xhat sum(dy xhat));
// frozen statistics: dx = gamma inv dy. dgamma = sum dy xhat, dbeta = sum dy.
// Two passes image by image (each image's (C, H, W) block is contiguous, so both stream through
// memory; walking a channel's planes across the batch measured 2-4x slower in training, where the
// planes are small and not in cache): per-plane sums, combined per channel in image order (so
// the result does not depend on the thread count), then dx.
void BatchNorm2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    backwardImpl(x, nullptr, dy, dx, needInputGrad, 0.0f, false, nullptr, false);
}

void BatchNorm2d::backwardDeferringInputGradient(const Tensor& x, const Tensor* r, const Tensor& dy, float cap,
                                                 bool maskFromOutput, const std::uint8_t* steMask)
{
    if (r && ((!r->empty() && r->shape() != x.shape()) || dy.shape() != x.shape()))
        throw ConfigError(name() + ": fused backward given " + shapeString(r->shape()) + " / " + shapeString(dy.shape()) +
                          " for input " + shapeString(x.shape()));
    Tensor unused;
    backwardImpl(x, r, dy, unused, true, r ? cap : 0.0f, r && maskFromOutput, steMask, true);
}

void BatchNorm2d::backwardClamped(const Tensor& x, const Tensor& r, const Tensor& dr, Tensor& dx, bool needInputGrad,
                                  float cap, bool maskFromOutput, const std::uint8_t* steMask)
{
    if ((!r.empty() && r.shape() != x.shape()) || dr.shape() != x.shape())
        throw ConfigError(name() + ": fused backward given " + shapeString(r.shape()) + " / " + shapeString(dr.shape()) +
                          " for input " + shapeString(x.shape()));
    backwardImpl(x, &r, dr, dx, needInputGrad, cap, maskFromOutput, steMask, false);
}

namespace {
// Calls f.operator()<K, M>() with the clamp kind and mask source as template arguments.
template <Clamp K, class F>
void withMaskFrom(MaskFrom from, F&& f)
{
    if (from == MaskFrom::Output) f.template operator()<K, MaskFrom::Output>();
    else if (from == MaskFrom::RoundedRecompute) f.template operator()<K, MaskFrom::RoundedRecompute>();
    else f.template operator()<K, MaskFrom::Recompute>();
}

template <class F>
void withClampKind(Clamp kind, MaskFrom from, F&& f)
{
    if (kind == Clamp::None) f.template operator()<Clamp::None, MaskFrom::Recompute>();
    else if (kind == Clamp::Relu) withMaskFrom<Clamp::Relu>(from, f);
    else withMaskFrom<Clamp::Capped>(from, f);
}
} // namespace

void BatchNorm2d::backwardImpl(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad,
                               float cap, bool maskFromOutput, const std::uint8_t* ste, bool defer)
{
    checkOutputGradient(x, dy);
    const std::size_t N = x.dim(0), C = m_c, HW = x.dim(2) * x.dim(3);
    if (m_mean.size() != C) throw ConfigError(name() + ": backward without a training forward");
    const float M = static_cast<float>(N * HW);
    if (needInputGrad && !defer) dx.resize(x.shape());
    const float* g = m_gamma.forwardValue().data();
    const float* bet = m_beta.forwardValue().data();
    // BN's forward affine per channel, for the fused activation's mask (see gradIn)
    const auto affine = [&](std::size_t c) { return ChannelAffine{m_mean[c], g[c] * m_invStd[c], bet[c], cap}; };
    const Clamp kind = !r ? Clamp::None : std::isinf(cap) ? Clamp::Relu : Clamp::Capped;
    // an empty r: the clamp's output was never written (forwardDeferringOutput), so its mask is recomputed
    const float* rp = r && !r->empty() ? r->data() : nullptr;
    m_planeStats.resize(2 * N * C);
    MaskFrom from = MaskFrom::Recompute;
#if defined(__AVX512F__)
    if (maskFromOutput && r) from = m_outputRoundedBf16 ? MaskFrom::RoundedRecompute : MaskFrom::Output;
#else
    if (r) from = MaskFrom::Output; // the scalar kernels read their mask from r
#endif
    if (r && !rp && from == MaskFrom::Output)
        throw ConfigError(name() + ": fused backward without the activation's output, which this build must read");
    withClampKind(kind, from, [&]<Clamp K, MaskFrom R>() {
        parallelForStatic(N, [&](std::size_t n) {
            for (std::size_t c = 0; c < C; ++c) {
                const std::size_t off = (n * C + c) * HW;
                prefetchAhead(dy.data(), off, HW, N * C * HW);
                prefetchAhead(x.data(), off, HW, N * C * HW);
                if (rp && R == MaskFrom::Output) prefetchAhead(rp, off, HW, N * C * HW);
                const float* rr = rp ? rp + off : nullptr;
                const std::uint8_t* ss = ste ? ste + off : nullptr;
                planeGradSums<K, R>(dy.data() + off, rr, ss, x.data() + off, affine(c), HW, m_planeStats[2 * (n * C + c)],
                                    m_planeStats[2 * (n * C + c) + 1]);
            }
        });
    });
    // Per channel: dx = alpha g + beta (x - mean) + gamma
    std::vector<float> alpha(C), beta(C), gamma(C);
    for (std::size_t c = 0; c < C; ++c) {
        double sdy = 0.0, sdyx = 0.0;
        for (std::size_t n = 0; n < N; ++n) {
            sdy += m_planeStats[2 * (n * C + c)];
            sdyx += m_planeStats[2 * (n * C + c) + 1];
        }
        const float inv = m_invStd[c];
        sdyx *= inv; // sum dy xhat
        m_gamma.grad[c] = static_cast<float>(sdyx);
        m_beta.grad[c] = static_cast<float>(sdy);
        alpha[c] = g[c] * inv;
        beta[c] = m_forwardBatchStats ? -g[c] * inv * inv * static_cast<float>(sdyx) / M : 0.0f;
        gamma[c] = m_forwardBatchStats ? -g[c] * inv * static_cast<float>(sdy) / M : 0.0f;
    }
    m_dxFinite = true;
    m_deferred = Deferred{};
    if (!needInputGrad) return;
    Deferred d{&x, rp, dy.data(), ste, cap, static_cast<std::uint8_t>(kind), static_cast<std::uint8_t>(from),
               m_roundDxBf16, std::move(alpha), std::move(beta), std::move(gamma)};
    if (defer) { // gradientImages writes dx, image group by image group
        m_deferred = std::move(d);
        m_deferredFinite.store(true);
        return;
    }
    std::atomic<bool> finite{true};
    parallelForStatic(N, [&](std::size_t n) {
        if (!inputGradImages(d, n, 1, dx.data() + n * C * HW)) finite.store(false, std::memory_order_relaxed);
    });
    m_dxFinite = finite.load();
}

bool BatchNorm2d::inputGradImages(const Deferred& d, std::size_t n0, std::size_t count, float* out) const
{
    const Tensor& x = *d.x;
    const std::size_t C = m_c, HW = x.dim(2) * x.dim(3);
    const float* g = m_gamma.forwardValue().data();
    const float* bet = m_beta.forwardValue().data();
    bool ok = true;
    withClampKind(static_cast<Clamp>(d.kind), static_cast<MaskFrom>(d.from), [&]<Clamp K, MaskFrom R>() {
        for (std::size_t n = n0; n < n0 + count; ++n)
            for (std::size_t c = 0; c < C; ++c) {
                const std::size_t off = (n * C + c) * HW;
                prefetchAhead(d.dy, off, HW, x.numel());
                prefetchAhead(x.data(), off, HW, x.numel());
                if (d.r && R == MaskFrom::Output) prefetchAhead(d.r, off, HW, x.numel());
                float* o = out + ((n - n0) * C + c) * HW;
                const ChannelAffine af{m_mean[c], g[c] * m_invStd[c], bet[c], d.cap};
                planeInputGrad<K, R>(d.dy + off, d.r ? d.r + off : nullptr, d.ste ? d.ste + off : nullptr, x.data() + off, af, HW,
                                     d.alpha[c], d.beta[c], d.gamma[c], o);
                if (d.round) ok = roundBf16AllFinite(o, HW) && ok; // the plane is still in cache
            }
    });
    return ok;
}

void BatchNorm2d::gradientImages(std::size_t n0, std::size_t count, float* out)
{
    if (!m_deferred.x) throw std::logic_error(name() + ": no deferred input gradient to write");
    if (!inputGradImages(m_deferred, n0, count, out)) m_deferredFinite.store(false, std::memory_order_relaxed);
}

bool BatchNorm2d::deferredGradientFinite() const { return m_deferredFinite.load(); }

void BatchNorm2d::endDeferredGradient() { m_deferred = Deferred{}; }

} // namespace quantscope
