// BatchNorm2d's per-plane kernels, for its forward (batchnorm2d.cpp) and backward
// (batchnorm2d_backward.cpp): AVX-512 where the build has it, scalar twins otherwise. Internal to
// those two files.
#pragma once

#include "tensor/bf16.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope::bn_planes {

// Per-plane sums in a fixed association order: 16 interleaved float lanes (lane j sums the
// elements i with i % 16 == j; the result depends neither on threads nor on alignment), then the
// lanes in double, in order.
inline double laneTotal(const float* acc)
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

inline double planeSum(const float* __restrict p, std::size_t n)
{
    __m512 acc = _mm512_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(p + i));
    if (i < n) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tailMask(n - i), p + i));
    return laneTotal(acc);
}

// sum (p - mean)^2
inline double planeSquaredDeviation(const float* __restrict p, std::size_t n, float mean)
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
inline double planeSum(const float* __restrict p, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += p[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += p[i + j];
    return laneTotal(acc);
}

// sum (p - mean)^2
inline double planeSquaredDeviation(const float* __restrict p, std::size_t n, float mean)
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

} // namespace quantscope::bn_planes
