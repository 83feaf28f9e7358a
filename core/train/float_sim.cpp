#include "train/float_sim.h"

#include "quant/float_cast.h"
#include "tensor/parallel.h"
#include "util/rng.h"

#include <atomic>
#include <cmath>

namespace quantscope {

bool allFinite(const Tensor& t)
{
    std::atomic<bool> ok{true};
    const std::size_t n = t.numel();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        bool local = true;
        for (std::size_t i = b; i < e; ++i) local &= std::isfinite(t[i]);
        if (!local) ok = false;
    });
    return ok;
}

void FloatSim::round(Tensor& t, std::uint64_t salt) const
{
    roundToFormat(t.values(), m_fmt, m_rounding, streamKey(m_key, salt));
}

void FloatSim::roundWeightsToOverride(const std::vector<Param*>& params) const
{
    for (std::size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        p.override.resize(p.value.shape());
        p.override.values() = p.value.values();
        roundToFormat(p.override.values(), m_fmt, Rounding::Nearest);
        p.hasOverride = true;
    }
}

// The forward pass rounds to nearest, as low-precision hardware does; the chosen rounding
// (possibly stochastic) applies to what accumulates over steps: gradients, updates, state.
void FloatSim::onInput(Tensor& x, const RunContext&) { roundToFormat(x.values(), m_fmt, Rounding::Nearest); }

void FloatSim::afterForward(std::size_t, Layer&, Tensor& y, const RunContext&)
{
    roundToFormat(y.values(), m_fmt, Rounding::Nearest);
}

void FloatSim::beforeBackward(std::size_t layer, Layer&, Tensor& dy)
{
    round(dy, 0x3000 + layer);
    if (!m_overflow && !allFinite(dy)) m_overflow = true;
}

bool LossScaler::unscaleOrSkip(const std::vector<Param*>& params, bool overflowSeen)
{
    bool overflow = overflowSeen;
    for (std::size_t k = 0; k < params.size() && !overflow; ++k) overflow = !allFinite(params[k]->grad);
    if (overflow) {
        m_scale = std::max(m_scale * 0.5f, kMinLossScale);
        m_clean = 0;
        ++m_skipped;
        return false;
    }
    const float inv = 1.0f / m_scale;
    for (Param* p : params) {
        const std::size_t n = p->grad.numel();
        float* g = p->grad.data();
        parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) g[i] *= inv;
        });
    }
    if (++m_clean >= m_interval) {
        m_scale = std::min(m_scale * 2.0f, kMaxLossScale);
        m_clean = 0;
    }
    return true;
}

} // namespace quantscope
