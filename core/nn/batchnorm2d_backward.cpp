// BatchNorm2d's backward (batchnorm2d.h): the plain and the clamp-fused passes, and the input
// gradient deferred into the reading convolution. The forward is in batchnorm2d.cpp.
#include "nn/batchnorm2d.h"

#include "nn/batchnorm2d_planes.h"
#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "tensor/prefetch.h"
#include "util/errors.h"

#include <atomic>
#include <cstdint>
#include <cmath>
#include <vector>

namespace quantscope {

using namespace bn_planes;

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
