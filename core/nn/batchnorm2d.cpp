#include "nn/batchnorm2d.h"

#include "nn/batchnorm2d_planes.h"

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

using namespace bn_planes;

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

} // namespace quantscope
