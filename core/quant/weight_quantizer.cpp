#include "quant/weight_quantizer.h"

#include "quant/float_cast.h"
#include "quant/histogram.h"
#include "quant/metrics.h"
#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace quantscope {

namespace {

std::size_t rowLengthOf(const Shape& s)
{
    const std::size_t n = shapeNumel(s);
    return s.empty() || s[0] == 0 ? n : n / s[0];
}

std::uint64_t tensorKey(std::uint64_t rngKey, std::size_t target, std::size_t which)
{
    return streamKey(rngKey, target, which);
}

// Fraction of |x| beyond `limit(i)`.
template <typename Limit>
double fractionBeyond(std::span<const float> x, Limit&& limit)
{
    if (x.empty()) return 0.0;
    std::size_t c = 0;
    for (std::size_t i = 0; i < x.size(); ++i) c += std::fabs(x[i]) > limit(i) ? 1 : 0;
    return static_cast<double>(c) / static_cast<double>(x.size());
}

} // namespace

WeightQuantizer::WeightQuantizer(const NumberFormat& f, Granularity g, Calibration c, Rounding r, float percentile)
    : m_format(f), m_granularity(g), m_calibration(c), m_rounding(r), m_percentile(percentile)
{
    if (g.kind == GranularityKind::Group && g.groupSize == 0) throw ConfigError("group granularity needs a group size");
    if (!(percentile > 0.0f && percentile <= 100.0f)) throw ConfigError("percentile must be in (0, 100]");
}

void WeightQuantizer::reset()
{
    m_state.clear();
    m_globalObserver.reset();
}

void WeightQuantizer::prepare(const std::vector<WeightTarget>& targets)
{
    bool same = m_state.size() == targets.size();
    for (std::size_t i = 0; i < targets.size(); ++i) {
        const WeightTarget& t = targets[i];
        if (!t.weight) throw ConfigError("weight quantizer: layer '" + t.layer + "' has no weight tensor");
        if (t.weight->value.empty()) throw ConfigError("weight quantizer: layer '" + t.layer + "' has an empty weight");
        if (same)
            same = m_state[i].weightShape == t.weight->value.shape() &&
                   m_state[i].biasSize == (t.bias ? t.bias->value.numel() : 0);
    }
    if (same) return;
    m_state.assign(targets.size(), TargetState{});
    m_globalObserver.reset();
    for (std::size_t i = 0; i < targets.size(); ++i) {
        m_state[i].weightShape = targets[i].weight->value.shape();
        m_state[i].biasSize = targets[i].bias ? targets[i].bias->value.numel() : 0;
    }
}

void WeightQuantizer::computeIntParams(const std::vector<WeightTarget>& targets)
{
    const bool keep = m_calibration == Calibration::MovingAverage; // running ranges survive apply()
    auto fresh = [&](std::optional<RangeObserver>& o, std::size_t slots, std::size_t row, std::size_t len,
                     const std::string& name) {
        if (!o) {
            o.emplace(m_calibration, slots, row, len, m_percentile);
            o->setName(name);
        } else if (!keep) {
            o->reset();
        }
        return &*o;
    };
    auto biasSpan = [](const WeightTarget& t) {
        return t.bias ? std::span<const float>(t.bias->value.values()) : std::span<const float>();
    };

    // Biases never enter a shared range: on integer grids they stay float (int32 at scale
    // s_w * s_x in the export, as PyTorch), so a large bias would only coarsen the weights' grid
    // (a bias of 5.0 took a layer from 41.8 to 12.9 dB SQNR). Each bias keeps its own per-tensor
    // observer, for the statistics.
    auto observeBias = [&](const WeightTarget& t, TargetState& s) {
        if (!t.bias) return;
        RangeObserver* b = fresh(s.biasObserver, 1, 0, 0, "layer '" + t.layer + "' bias");
        b->observe(biasSpan(t));
        s.bias.params = b->params(m_format);
    };

    if (m_granularity.kind == GranularityKind::Global) {
        std::vector<std::span<const float>> parts;
        for (const WeightTarget& t : targets) parts.emplace_back(t.weight->value.values());
        RangeObserver* o = fresh(m_globalObserver, 1, 0, 0, "the model's weights (global range)");
        o->observe(std::span<const std::span<const float>>(parts));
        const QuantParams p = o->params(m_format);
        for (std::size_t i = 0; i < targets.size(); ++i) {
            m_state[i].weight.params = p;
            observeBias(targets[i], m_state[i]);
        }
        return;
    }

    for (std::size_t i = 0; i < targets.size(); ++i) {
        const WeightTarget& t = targets[i];
        TargetState& s = m_state[i];
        const std::span<const float> w(t.weight->value.values());
        if (m_granularity.kind == GranularityKind::Layer) {
            // One scale for the layer's weights (a layer here has one weight tensor, so this is
            // the tensor-wise scale; kept as its own name for plans that mix layer and global).
            RangeObserver* o = fresh(s.weightObserver, 1, 0, 0, "layer '" + t.layer + "' weights");
            o->observe(w);
            s.weight.params = o->params(m_format);
            observeBias(t, s);
            continue;
        }
        const std::size_t row = rowLengthOf(s.weightShape);
        RangeObserver* o = nullptr;
        const std::string name = "layer '" + t.layer + "' weight";
        switch (m_granularity.kind) {
        case GranularityKind::Tensor: o = fresh(s.weightObserver, 1, 0, 0, name); break;
        case GranularityKind::Channel: o = fresh(s.weightObserver, w.size() / row, row, row, name); break;
        default: {
            const std::size_t len = std::min(m_granularity.groupSize, row);
            o = fresh(s.weightObserver, slotCount(w.size(), row, len), row, len, name);
        }
        }
        o->observe(w);
        s.weight.params = o->params(m_format);
        observeBias(t, s);
    }
}

namespace {
// Ternary (TWN) and binary (XNOR-Net) scale per slot of p, from the weights x.
void paperScales(std::span<const float> x, QuantParams& p, bool binary)
{
    const std::size_t slots = p.numSlots();
    std::vector<double> sum(slots, 0.0), above(slots, 0.0);
    std::vector<std::size_t> n(slots, 0), nAbove(slots, 0);
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (!std::isfinite(x[i])) continue;
        const std::size_t k = p.slotOf(i);
        sum[k] += std::fabs(x[i]);
        ++n[k];
    }
    for (std::size_t i = 0; i < x.size() && !binary; ++i) {
        if (!std::isfinite(x[i])) continue;
        const std::size_t k = p.slotOf(i);
        const double delta = n[k] ? 0.7 * sum[k] / static_cast<double>(n[k]) : 0.0;
        if (std::fabs(x[i]) > delta) {
            above[k] += std::fabs(x[i]);
            ++nAbove[k];
        }
    }
    for (std::size_t k = 0; k < slots; ++k) {
        const double v = binary ? (n[k] ? sum[k] / static_cast<double>(n[k]) : 0.0)
                                : (nAbove[k] ? above[k] / static_cast<double>(nAbove[k]) : 0.0);
        p.scale[k] = std::max(static_cast<float>(v), kScaleEps);
        p.zeroPoint[k] = 0;
    }
}
} // namespace

void WeightQuantizer::setLearnedScales(std::size_t i, std::vector<float> scales)
{
    if (i >= m_state.size()) throw ConfigError("weight quantizer: no target " + std::to_string(i) + " (apply() first)");
    m_state[i].learned = std::move(scales);
}

void WeightQuantizer::quantizeTensor(const Tensor& value, const QuantParams& params, std::uint64_t key, Tensor& out,
                                     std::vector<std::uint8_t>& mask, QuantParams* blockScalesOut) const
{
    const std::size_t n = value.numel();
    out.resize(value.shape());
    mask.resize(n);
    const float* x = value.data();
    if (m_format.kind == FormatKind::Int) {
        fakeQuantize(value.values(), params, out.values(), mask, m_rounding, key);
        return;
    }
    std::copy(x, x + n, out.data());
    const std::size_t row = mxRowLength(value.shape()); // MX blocks along each output channel's weights
    roundToFormat(out.values(), m_format, m_rounding, key, row);
    // Gradients pass where the value is representable (float) or not NaN (MX, fp32).
    const float limit = m_format.kind == FormatKind::Float ? m_format.maxFinite : std::numeric_limits<float>::infinity();
    std::uint8_t* m = mask.data();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) m[i] = static_cast<std::uint8_t>(std::fabs(x[i]) <= limit);
    });
    if (blockScalesOut && isMxFormat(m_format)) {
        QuantParams& p = *blockScalesOut;
        p.scale = mxBlockScales(value.values(), m_format, row);
        p.zeroPoint.assign(p.scale.size(), 0);
        p.qmin = m_format.qmin;
        p.qmax = m_format.qmax;
        p.slotLength = static_cast<std::size_t>(m_format.blockSize);
        p.rowLength = row ? row : n;
    }
}

void WeightQuantizer::apply(const std::vector<WeightTarget>& targets, std::uint64_t rngKey)
{
    prepare(targets);
    m_lastKey = rngKey;
    if (m_format.kind == FormatKind::Int) computeIntParams(targets);
    const bool fewLevels = isTernaryOrBinary(m_format);
    for (std::size_t i = 0; i < targets.size(); ++i) {
        const WeightTarget& t = targets[i];
        TargetState& s = m_state[i];
        if (m_format.kind != FormatKind::Int) s.weight.params = s.bias.params = QuantParams{};
        if (fewLevels && s.learned.empty()) paperScales(t.weight->value.values(), s.weight.params, m_format.signOnly);
        if (!s.learned.empty()) {
            if (s.learned.size() != s.weight.params.numSlots())
                throw ConfigError("weight quantizer: layer '" + t.layer + "' has " + std::to_string(s.weight.params.numSlots()) +
                                  " scale slots but " + std::to_string(s.learned.size()) + " learned steps");
            s.weight.params.scale = s.learned;
            s.weight.params.zeroPoint.assign(s.learned.size(), 0);
        }
        s.weight.params.signOnly = m_format.signOnly;
        quantizeTensor(t.weight->value, s.weight.params, tensorKey(rngKey, i, 0), t.weight->override, s.weight.mask,
                       &s.weight.params);
        t.weight->hasOverride = true;
        // Biases stay float on integer grids, as in PyTorch (the export stores them at int32 with
        // scale s_in * s_w); they were rounded onto the weight format's own grid (int2: -0.3 to -0.40).
        if (t.bias && (fewLevels || m_format.kind == FormatKind::Int)) {
            t.bias->override = t.bias->value;
            s.bias.mask.assign(t.bias->value.numel(), 1);
            t.bias->hasOverride = true;
        } else if (t.bias) {
            quantizeTensor(t.bias->value, s.bias.params, tensorKey(rngKey, i, 1), t.bias->override, s.bias.mask,
                           &s.bias.params);
            t.bias->hasOverride = true;
        }
    }
}

void WeightQuantizer::maskGradients(const std::vector<WeightTarget>& targets) const
{
    if (targets.size() != m_state.size())
        throw ConfigError("weight quantizer: maskGradients() for " + std::to_string(targets.size()) +
                          " layers after apply() for " + std::to_string(m_state.size()));
    auto maskOne = [](Param* p, const std::vector<std::uint8_t>& mask, const std::string& layer) {
        if (!p) return;
        if (p->grad.numel() != mask.size())
            throw ConfigError("weight quantizer: layer '" + layer + "' " + p->name + " gradient has " +
                              std::to_string(p->grad.numel()) + " values, its mask " + std::to_string(mask.size()));
        float* g = p->grad.data();
        const std::size_t n = mask.size();
        parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) g[i] = mask[i] ? g[i] : 0.0f;
        });
    };
    for (std::size_t i = 0; i < targets.size(); ++i) {
        maskOne(targets[i].weight, m_state[i].weight.mask, targets[i].layer);
        maskOne(targets[i].bias, m_state[i].bias.mask, targets[i].layer);
    }
}

const QuantParams& WeightQuantizer::weightParams(std::size_t i) const { return m_state.at(i).weight.params; }
const QuantParams& WeightQuantizer::biasParams(std::size_t i) const { return m_state.at(i).bias.params; }
const std::vector<std::uint8_t>& WeightQuantizer::weightMask(std::size_t i) const { return m_state.at(i).weight.mask; }

std::vector<LayerStats> WeightQuantizer::stats(std::size_t epoch, const std::vector<WeightTarget>& targets) const
{
    if (targets.size() != m_state.size())
        throw ConfigError("weight quantizer: stats() for " + std::to_string(targets.size()) + " layers after apply() for " +
                          std::to_string(m_state.size()) + " (call apply() first)");
    std::vector<LayerStats> out;
    out.reserve(targets.size());
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (targets[i].weight->value.shape() != m_state[i].weightShape)
            throw ConfigError("weight quantizer: layer '" + targets[i].layer + "' changed shape since apply()");
        out.push_back(tensorStats(epoch, targets[i], m_state[i]));
    }
    return out;
}

LayerStats WeightQuantizer::tensorStats(std::size_t epoch, const WeightTarget& t, const TargetState& s) const
{
    const Tensor& w = t.weight->value;
    const std::size_t n = w.numel(), row = rowLengthOf(w.shape()), rows = n / row;
    const std::span<const float> x(w.values());
    const std::size_t index = static_cast<std::size_t>(&s - m_state.data());

    LayerStats st;
    st.epoch = epoch;
    st.layer = t.layer;
    st.tensor = t.weight->name.empty() ? "weight" : t.weight->name;
    st.format = m_format.name;
    switch (m_format.kind) {
    case FormatKind::Int: st.granularity = m_granularity.label(); break;
    case FormatKind::MxInt:
    case FormatKind::MxFloat: st.granularity = "block-wise (" + std::to_string(m_format.blockSize) + ")"; break;
    case FormatKind::Float: st.granularity = "element-wise"; break;
    case FormatKind::Float32: st.granularity = "none"; break;
    }

    st.channelMin.assign(rows, std::numeric_limits<float>::infinity());
    st.channelMax.assign(rows, -std::numeric_limits<float>::infinity());
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < row; ++j) {
            const float v = x[r * row + j];
            if (!std::isfinite(v)) { // skipped by the observers too; counted for the user
                ++st.nonFinite;
                continue;
            }
            st.channelMin[r] = std::min(st.channelMin[r], v);
            st.channelMax[r] = std::max(st.channelMax[r], v);
        }
    st.tensorMin = *std::min_element(st.channelMin.begin(), st.channelMin.end());
    st.tensorMax = *std::max_element(st.channelMax.begin(), st.channelMax.end());

    Tensor q;
    std::vector<std::uint8_t> mask;
    QuantParams p = s.weight.params;
    quantizeTensor(w, p, tensorKey(m_lastKey, index, 0), q, mask, &p);
    const std::span<const float> xq(q.values());

    float qlo = std::numeric_limits<float>::infinity(), qhi = -qlo;
    for (std::size_t i = 0; i < xq.size(); ++i) {
        const float v = xq[i];
        if (!std::isfinite(v)) {
            st.overflowed += std::isfinite(x[i]) ? 1 : 0;
            continue;
        }
        qlo = std::min(qlo, v);
        qhi = std::max(qhi, v);
    }
    double lo = std::min(st.tensorMin, qlo), hi = std::max(st.tensorMax, qhi);
    if (!std::isfinite(lo) || !std::isfinite(hi)) { // diverged weights: still draw something
        lo = -1.0;
        hi = 1.0;
    }

    if (m_format.kind == FormatKind::Int) {
        st.scales = p.scale;
        st.zeroPoints = p.zeroPoint;
        std::size_t widest = 0;
        st.clipLow = p.clipLow(0);
        st.clipHigh = p.clipHigh(0);
        for (std::size_t k = 0; k < p.numSlots(); ++k) {
            st.clipLow = std::min(st.clipLow, p.clipLow(k));
            st.clipHigh = std::max(st.clipHigh, p.clipHigh(k));
            if (p.scale[k] > p.scale[widest]) widest = k;
        }
        // Clipped = beyond the slot's range by more than rounding (half a step). The STE mask is
        // stricter: like PyTorch it also stops a max-abs value whose x / scale = 127.5 rounds to 128.
        std::size_t clipped = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t k = p.slotOf(i);
            const float half = 0.5f * p.scale[k] * 1.001f; // margin for the float division's rounding
            clipped += (x[i] < p.clipLow(k) - half || x[i] > p.clipHigh(k) + half) ? 1 : 0;
        }
        st.clippedFraction = static_cast<double>(clipped) / static_cast<double>(n);
        // Bins on the widest slot's grid: one level per bin. With a scale per channel or group the
        // other slots' levels fall between, and a coarse grid (int2: 4 levels) would leave the FP32
        // histogram a few bars wide; so the step is split into an odd number of bins (the widest
        // slot's levels stay at bin centres) until some 48 bins cover the range.
        double step = p.scale[widest];
        const double across = step > 0.0 ? (hi - lo) / step : 0.0;
        if (p.numSlots() > 1 && across > 0.0 && across < 32.0) {
            int split = std::max(1, static_cast<int>(std::lround(48.0 / across)));
            if (split % 2 == 0) ++split;
            step /= split;
        }
        st.binEdges = integerGridEdges(step, lo, hi);
    } else if (isMxFormat(m_format)) {
        st.scales = p.scale;
        st.zeroPoints = p.zeroPoint;
        const float maxScale = p.scale.empty() ? 1.0f : *std::max_element(p.scale.begin(), p.scale.end());
        st.clipLow = -m_format.maxFinite * maxScale;
        st.clipHigh = m_format.maxFinite * maxScale;
        st.clippedFraction = fractionBeyond(x, [&](std::size_t i) { return m_format.maxFinite * p.scale[p.slotOf(i)]; });
        st.binEdges = uniformEdges(lo, hi);
    } else {
        st.clipLow = -m_format.maxFinite;
        st.clipHigh = m_format.maxFinite;
        st.clippedFraction = fractionBeyond(x, [&](std::size_t) { return m_format.maxFinite; });
        st.binEdges = floatGridEdges(m_format, lo, hi);
    }
    st.fp32Hist = histogram(x, st.binEdges);
    st.quantHist = histogram(xq, st.binEdges);
    const ErrorMetrics em = errorMetrics(x, xq);
    st.mse = em.mse;
    st.maxAbsError = em.maxAbsError;
    st.sqnrDb = em.sqnrDb;
    return st;
}

} // namespace quantscope
