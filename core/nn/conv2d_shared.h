// Internal to core/nn's convolution (conv2d.cpp, conv2d_direct.cpp, conv2d_depthwise.cpp): the helpers they
// share. Not a public interface.
#pragma once

#include "tensor/bf16.h"
#include "tensor/prefetch.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope::conv_detail {

// dst[0, n) = src[0, n) for the short rows of a plane (a few dozen floats), inline: a library
// memcpy call per row cost more than the copy (6 % of resnet8's training step). Masked loads and
// stores even for whole blocks: GCC turns a loop of plain ones back into a memmove call.
inline void copyRow(float* __restrict dst, const float* __restrict src, std::size_t n)
{
#if defined(__AVX512F__)
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_mask_storeu_ps(dst + i, __mmask16(0xFFFF), _mm512_maskz_loadu_ps(__mmask16(0xFFFF), src + i));
    if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_maskz_loadu_ps(k, src + i));
    }
#else
    std::memcpy(dst, src, n * sizeof(float));
#endif
}

// y[0, n) rounded to bf16, nearest even (RunContext::roundOutputBf16): the convolution's epilogue
// rounds each row while it is in cache, instead of a pass over the whole activation afterwards.
inline void roundRowBf16(float* __restrict y, std::size_t n) { roundBf16Span(y, n); }

// The clamp activation fused into a convolution (Conv2d::forwardClamped): cap = +inf for ReLU,
// 6 for ReLU6, NaN for none. clampTo is ReLU's and ReLU6's own expression, and gradientPasses
// their backward rule on the output r: r > 0 (ReLU), 0 < r < 6 (ReLU6).
inline bool hasClamp(float cap) { return cap == cap; }
inline float clampTo(float v, float cap) { return std::min(std::max(v, 0.0f), cap); }
inline bool boundedClamp(float cap) { return cap < std::numeric_limits<float>::infinity(); }
inline float gradientPasses(float g, float r, float cap, bool bounded)
{
    return (r > 0.0f && (!bounded || r < cap)) ? g : 0.0f;
}

#if defined(__AVX512F__)
// gradientPasses' rule on 16 lanes of r (lanes outside k fail).
inline __mmask16 gradientPassMask(__m512 r, __mmask16 k, float cap, bool bounded)
{
    __mmask16 m = _mm512_mask_cmp_ps_mask(k, r, _mm512_setzero_ps(), _CMP_GT_OQ);
    if (bounded) m = _mm512_mask_cmp_ps_mask(m, r, _mm512_set1_ps(cap), _CMP_LT_OQ);
    return m;
}
#endif

// dst[0, n) = src[0, n) masked by the fused clamp's rule on r[0, n) (gradientPasses).
inline void copyRowMasked(float* __restrict dst, const float* __restrict src, const float* __restrict r, std::size_t n,
                          float cap)
{
    const bool bounded = boundedClamp(cap);
    std::size_t i = 0;
#if defined(__AVX512F__)
    const auto pass = [&](__m512 rv, __mmask16 k) { return gradientPassMask(rv, k, cap, bounded); };
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_maskz_loadu_ps(pass(_mm512_loadu_ps(r + i), 0xFFFF), src + i));
    if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_maskz_loadu_ps(pass(_mm512_maskz_loadu_ps(k, r + i), k), src + i));
    }
#else
    for (; i < n; ++i) dst[i] = gradientPasses(src[i], r[i], cap, bounded);
#endif
}

// dst = src where ste (a quantization point's straight-through mask, 0/1 bytes) is 1, 0 where it
// is 0: the rule of LayerHooks::beforeBackward's mask (QuantSim), applied while the values pass.
// dst may be src (each element is read before it is written).
inline void copyRowSteMasked(float* dst, const float* src, const std::uint8_t* ste, std::size_t n)
{
    std::size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __mmask16 pass = _mm_cmpneq_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ste + i)), _mm_setzero_si128());
        _mm512_storeu_ps(dst + i, _mm512_maskz_loadu_ps(pass, src + i));
    }
#endif
    for (; i < n; ++i) dst[i] = ste[i] ? src[i] : 0.0f;
}

// The plane that a pass over images [n0, n0 + count) of an (N, C, H, W) tensor reads after plane
// (channel c, image n0 + i), walking channel by channel (`step` channels at a time) and image by
// image within a channel, as the runs are laid out: its index n C + c, or kNoPlane after the last.
// The layout passes ask for it ahead (prefetchSpan, OutputPlaneSource::prefetchPlane).
inline constexpr std::size_t kNoPlane = ~std::size_t{0};
inline std::size_t nextPlaneOf(std::size_t n0, std::size_t count, std::size_t C, std::size_t c, std::size_t i,
                               std::size_t step = 1)
{
    if (i + 1 < count) return (n0 + i + 1) * C + c;
    return c + step < C ? n0 * C + c + step : kNoPlane;
}

// Output size of a convolution or pooling window along one axis.
inline std::size_t outDim(std::size_t in, std::size_t k, std::size_t s, std::size_t p) { return (in + 2 * p - k) / s + 1; }

// Sum of n floats in a fixed association order (16 interleaved partial sums).
float fixedOrderSum(const float* v, std::size_t n);
// fixedOrderSum of v masked by the fused clamp's rule on r (gradientPasses): the same bits as
// fixedOrderSum of the masked copy.
float fixedOrderSumMasked(const float* v, const float* r, std::size_t n, float cap);
// y[0, n) += *bias (when bias is given), then clamped to [0, cap] (when hasClamp(cap)).
// With roundBf16, then rounded to bf16 (roundRowBf16).
void addBiasClamp(float* y, std::size_t n, const float* bias, float cap, bool roundBf16 = false);
// A per-thread scratch buffer (which: 0 to kThreadBuffers - 1) of at least `size` floats.
inline constexpr int kThreadBuffers = 7;
std::vector<float>& threadBuffer(int which, std::size_t size);
// A per-thread table (which: 0 or 1) of at least `size` row pointers (the direct kernels' tap rows).
std::vector<const float*>& threadRows(int which, std::size_t size);
// dW = sum_n partials[n][0, wSize), db = sum_n partials[n][wSize, wSize + bSize), in order.
void reducePartials(const std::vector<float>& partials, std::size_t N, std::size_t wSize, std::size_t bSize,
                    float* dW, float* dB);
// The same for parts whose weight gradient is kept transposed (weightGradBf16RunsTransposed): part
// n holds T_n, (k k C) x Op floats (row t C + c, column o < O used), then bSize bias sums. The
// same sums in the same order, then dW[(o C + c) k k + t] = (sum_n T_n)[(t C + c) Op + o].
void reducePartialsTransposed(const std::vector<float>& partials, std::size_t N, std::size_t O, std::size_t C, std::size_t kk,
                              std::size_t Op, std::size_t bSize, float* dW, float* dB);

// The s x s phase split of one zero-padded plane (see conv2d_depthwise.cpp).
constexpr std::size_t kMaxDepthwiseTaps = 49;
constexpr std::size_t kMaxDepthwiseStride = 4;
constexpr std::size_t kBlock = 16;

struct DepthwiseGeometry {
    std::size_t H, W, s, p, Ho, Wo, Hq, Wq, L, Lr; // Lr: L rounded up to whole blocks
    std::size_t py0, qr0; // phase row and row within it of input row 0 (padded row p)
    // Per phase column px: where input row pixels ix0, ix0 + s, ... (n of them) land in a phase row.
    struct Run {
        std::size_t at, ix0, n;
    };
    std::array<Run, kMaxDepthwiseStride> runs;
    std::size_t numRuns = 0;
    std::array<std::size_t, kMaxDepthwiseTaps> taps;      // where tap t = ky k + kx starts in the phase planes
    std::array<std::size_t, kMaxDepthwiseTaps> phaseTaps; // tap indices by phase, ascending within a phase
    // phase f's taps: phaseTaps[phaseBegin[f] .. phaseBegin[f + 1])
    std::array<std::size_t, kMaxDepthwiseStride * kMaxDepthwiseStride + 1> phaseBegin;
    std::size_t margin = 0; // largest offset of a tap within its phase plane
    std::size_t phaseSize() const { return Hq * Wq; }
    std::size_t planeSize() const { return s * s * Hq * Wq; }
    // Phase planes plus slack, and dy at pitch Wq behind `margin` zeros (how far back the dx
    // gather reaches) plus slack.
    std::size_t planeBuffer() const { return planeSize() + kBlock; }
    std::size_t gradBuffer() const { return margin + phaseSize() + kBlock; }
};

DepthwiseGeometry depthwiseGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t s, std::size_t p);
// x: (H, W) -> the phases of one plane, phaseStride floats apart, without clearing the padding.
void scatterPhases(const float* __restrict x, const DepthwiseGeometry& g, float* __restrict q, std::size_t phaseStride);
// Planes a and b (b may be null: zeros) at once, each element the bf16 pair bf16Bits(a) |
// bf16Bits(b) << 16 (tensor/bf16.h): scatterPhases of both, then roundInterleave2, bit for bit.
void scatterPhasesBf16Pair(const float* __restrict a, const float* __restrict b, const DepthwiseGeometry& g,
                           std::uint32_t* __restrict q, std::size_t phaseStride);

} // namespace quantscope::conv_detail

namespace quantscope {
class Conv2d;
namespace conv_detail {
// True when c runs the depthwise kernel (conv2d_depthwise.cpp): depthwise, up to 7x7, stride up to 4.
bool directDepthwise(const Conv2d& c);
} // namespace conv_detail
} // namespace quantscope
