#include "train/float_sim.h"

#include "nn/maxpool2d.h"
#include "quant/float_cast.h"
#include "tensor/parallel.h"
#include "util/rng.h"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace quantscope {

bool allFinite(const Tensor& t)
{
    std::atomic<bool> ok{true};
    const std::size_t n = t.numel();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        if (!allFiniteSpan(t.data() + b, e - b)) ok.store(false, std::memory_order_relaxed);
    });
    return ok;
}

namespace {
// Layers whose output holds only values of their input (selected, masked or moved), and whose
// input gradient holds only values of their output gradient or zeros.
bool keepsGrid(const Layer& l, bool backward)
{
    switch (l.kind()) {
    case LayerKind::ReLU:
    case LayerKind::ReLU6:
    case LayerKind::ChannelMax: // one input value per output, its gradient routed to one input
    case LayerKind::Flatten: return true;
    case LayerKind::MaxPool2d: { // overlapping windows add gradients; disjoint ones only route them
        const auto& pool = static_cast<const MaxPool2d&>(l);
        return !backward || (pool.geometry().sh >= pool.geometry().kh && pool.geometry().sw >= pool.geometry().kw);
    }
    default: return false;
    }
}
} // namespace

FloatSim::FloatSim(const NumberFormat& f, Rounding r) : m_fmt(f), m_rounding(r), m_keepsGrid(false)
{
    if (f.kind == FormatKind::Float) {
        float six = 6.0f;
        roundToFormat(std::span<float>(&six, 1), f, Rounding::Nearest);
        m_keepsGrid = six == 6.0f;
    }
}

void FloatSim::setModel(const Model& model)
{
    m_exactGrad.assign(model.size(), 0);
    m_clamped.assign(model.size(), 0);
    m_roundsClamp.assign(model.size(), 0);
    m_selfRounds.assign(model.size(), 0);
    m_flatten.assign(model.size(), 0);
    m_bf16 = false;
    if (!m_keepsGrid) return;
    for (std::size_t i = 0; i < model.size(); ++i) m_flatten[i] = model.layer(i).kind() == LayerKind::Flatten;
    const bool bf16 = m_fmt.kind == FormatKind::Float && m_fmt.expBits == 8 && m_fmt.manBits == 7;
    m_bf16 = bf16;
    if (bf16 && m_layerRounding)
        for (std::size_t i = 0; i < model.size(); ++i)
            m_selfRounds[i] = honoursRoundOutputBf16(model.layer(i).kind()); // MX: a block's rounding depends on its other values, ReLU changes them
    // The clamps: a ReLU or ReLU6 alone reading a convolution, BatchNorm or Add (the residual join).
    // The format holds 6 (m_keepsGrid), so ReLU6's mask on its rounded input, 0 < round(v) < 6, is
    // its mask on its rounded output (fusesReLU6).
    for (std::size_t i = 0; i + 1 < model.size(); ++i) {
        const std::vector<std::size_t>& readers = model.consumersOf(i + 1);
        const LayerKind k = model.layer(i).kind();
        if ((k != LayerKind::Conv2d && k != LayerKind::BatchNorm2d && k != LayerKind::Add) || readers.size() != 1) continue;
        const std::size_t r = readers[0];
        const LayerKind rk = model.layer(r).kind();
        if ((rk != LayerKind::ReLU && rk != LayerKind::ReLU6) || model.inputsOf(r).size() != 1) continue;
        m_clamped[i] = k == LayerKind::Conv2d ? 1 : 2;
        m_roundsClamp[r] = m_selfRounds[i] ? 0 : 1; // a self-rounding layer's ReLU gets grid values
    }
    // The gradient entering layer i is its readers' input gradient. With one reader it is on the
    // grid when that reader keeps the grid (a ReLU passes or masks its own), or is an Add of
    // different activations (each input takes the Add's own gradient as it is: a residual block's
    // last BatchNorm). With several readers it is their sum, which is rounded.
    // A broadcast Add's gate gradient is a sum over each plane: off the grid, so rounded.
    const std::vector<std::uint8_t> broadcast = model.broadcastAdds();
    const auto passesGrid = [&](std::size_t r) {
        const std::vector<std::size_t>& in = model.inputsOf(r);
        if (model.layer(r).kind() == LayerKind::Add && broadcast[r]) return false;
        if (model.layer(r).kind() == LayerKind::Add)
            return std::all_of(in.begin(), in.end(), [&](std::size_t a) { return std::count(in.begin(), in.end(), a) == 1; });
        return keepsGrid(model.layer(r), true) && in.size() == 1;
    };
    for (std::size_t i = 0; i + 1 < model.size(); ++i) {
        const std::vector<std::size_t>& readers = model.consumersOf(i + 1);
        m_exactGrad[i] = readers.size() == 1 && passesGrid(readers[0]) ? 1 : 0;
    }
}

void FloatSim::round(Tensor& t, std::uint64_t salt) const
{
    roundToFormat(t.values(), m_fmt, m_rounding, streamKey(m_key, salt), mxRowLength(t.shape()));
}

void FloatSim::roundWeightsToOverride(const std::vector<Param*>& params) const
{
    for (std::size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        p.override.resize(p.value.shape());
        p.override.values() = p.value.values();
        roundToFormat(p.override.values(), m_fmt, Rounding::Nearest, 0, mxRowLength(p.override.shape()));
        p.hasOverride = true;
    }
}

// The forward pass rounds to nearest, as low-precision hardware does; the chosen rounding
// (possibly stochastic) applies to what accumulates over steps: gradients, updates, state.
void FloatSim::onInput(Tensor& x, const RunContext&) { roundToFormat(x.values(), m_fmt, Rounding::Nearest, 0, mxRowLength(x.shape())); }

void FloatSim::afterForward(std::size_t layer, Layer& l, Tensor& y, const RunContext& ctx)
{
    // Every activation is rounded, the input included: a grid-keeping layer's output is exact,
    // except a ReLU that rounds for its convolution (touchesOutput). A layer that rounded its
    // output itself (roundsOutputBf16) is done.
    if (ctx.roundOutputBf16) return;
    if (m_keepsGrid && keepsGrid(l, false) && !(layer < m_roundsClamp.size() && m_roundsClamp[layer])) return;
    roundToFormat(y.values(), m_fmt, Rounding::Nearest, 0, mxRowLength(y.shape()));
}

void FloatSim::beforeBackward(std::size_t layer, Layer&, Tensor& dy)
{
    if (layer < m_exactGrad.size() && m_exactGrad[layer]) return;
    if (!roundToFormatAllFinite(dy.values(), m_fmt, m_rounding, streamKey(m_key, 0x3000 + layer), 1.0f, mxRowLength(dy.shape())))
        m_overflow = true;
}

bool LossScaler::settle(bool overflow)
{
    if (overflow) {
        m_scale = std::max(m_scale * 0.5f, kMinLossScale);
        m_clean = 0;
        ++m_skipped;
        return false;
    }
    if (++m_clean >= m_interval) {
        m_scale = std::min(m_scale * 2.0f, kMaxLossScale);
        m_clean = 0;
    }
    return true;
}

bool LossScaler::unscaleOrSkip(const std::vector<Param*>& params, bool overflowSeen)
{
    bool overflow = overflowSeen;
    for (std::size_t k = 0; k < params.size() && !overflow; ++k) overflow = !allFinite(params[k]->grad);
    if (overflow) return settle(true);
    const float inv = 1.0f / m_scale;
    for (Param* p : params) {
        const std::size_t n = p->grad.numel();
        float* g = p->grad.data();
        parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) g[i] *= inv;
        });
    }
    return settle(false);
}

bool LossScaler::roundUnscaleOrSkip(const std::vector<Param*>& params, const NumberFormat& f, bool overflowSeen)
{
    if (overflowSeen) return settle(true);
    const float inv = 1.0f / m_scale;
    bool finite = true;
    for (Param* p : params) finite &= roundToFormatAllFinite(p->grad.values(), f, Rounding::Nearest, 0, inv, mxRowLength(p->grad.shape()));
    return settle(!finite);
}

} // namespace quantscope
