#include "nn/dropout.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace quantscope {

Dropout::Dropout(std::string name, float p) : Layer(std::move(name)), m_p(p)
{
    if (!(p >= 0.0f && p < 1.0f)) throw ConfigError("dropout: p must be in [0, 1)");
}

namespace {
// mask = 0 where the element's 16 random bits are below thr, else keep; out = in * mask. A function
// of __restrict pointers so that it vectorises (as a loop in the lambda it stayed scalar).
void applyDropout(const std::uint16_t* __restrict bits, std::uint32_t thr, float keep, const float* __restrict in,
                  float* __restrict mask, float* __restrict out, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        const float m = bits[i] < thr ? 0.0f : keep;
        mask[i] = m;
        out[i] = in[i] * m;
    }
}
} // namespace

std::string Dropout::describe() const { return "p=" + std::to_string(m_p).substr(0, 4); }

void Dropout::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    y.resize(x.shape());
    const std::size_t n = x.numel();
    const bool round = ctx.roundOutputBf16;
    if (!ctx.training || m_p == 0.0f) {
        std::memcpy(y.data(), x.data(), n * sizeof(float));
        if (round) roundBf16AllFinite(y.data(), n);
        m_mask.assign(n, 1.0f);
        return;
    }
    m_mask.resize(n);
    const std::uint64_t key = streamKey(ctx.rngKey, stableHash(name().c_str()));
    const float keep = 1.0f / (1.0f - m_p);
    // 16 random bits per element, four elements per hash: dropped when bits < p * 2^16.
    // Written as two simple loops over fixed 4096-element chunks so the compiler vectorises them.
    const std::uint32_t thr = static_cast<std::uint32_t>(static_cast<double>(m_p) * 65536.0 + 0.5);
    constexpr std::size_t kChunk = 4096;
    parallelChunks(n, kChunk, [&](std::size_t b, std::size_t e) {
        // each hash's 8 bytes give 4 elements their 16 bits, in memory order (copied, not aliased)
        alignas(64) std::uint16_t bits[kChunk];
        const std::size_t q0 = b / 4, nq = (e - b + 3) / 4;
        for (std::size_t q = 0; q < nq; ++q) {
            const std::uint64_t h = splitmix64(key + q0 + q);
            std::memcpy(bits + 4 * q, &h, sizeof h);
        }
        applyDropout(bits, thr, keep, x.data() + b, m_mask.data() + b, y.data() + b, e - b);
        if (round) roundBf16AllFinite(y.data() + b, e - b); // while the chunk is in L1
    });
}

// dx = dy * mask (rounded to bf16 where setRoundInputGradientBf16 asks)
void Dropout::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    m_dxFinite = true; // also when no dx is asked for
    if (!needInputGrad) return;
    const std::size_t n = x.numel();
    if (m_mask.size() != n) throw ConfigError(name() + ": backward without a matching training forward");
    dx.resize(x.shape());
    const float* __restrict g = dy.data();
    const float* __restrict m = m_mask.data();
    float* __restrict out = dx.data();
    if (!m_roundDxBf16) {
        parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) out[i] = g[i] * m[i];
        });
        return;
    }
    std::atomic<bool> finite{true};
    constexpr std::size_t kChunk = 4096; // rounded while in L1
    parallelChunks(n, std::max(kChunk, elementwiseGrain(n)), [&](std::size_t b, std::size_t e) {
        for (std::size_t c = b; c < e; c += kChunk) {
            const std::size_t ce = std::min(e, c + kChunk);
            for (std::size_t i = c; i < ce; ++i) out[i] = g[i] * m[i];
            if (!roundBf16AllFinite(out + c, ce - c)) finite.store(false, std::memory_order_relaxed);
        }
    });
    m_dxFinite = finite.load();
}

} // namespace quantscope
