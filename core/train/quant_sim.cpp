#include "train/quant_sim.h"

#include "data/dataset.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "quant/float_cast.h"
#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <cmath>

namespace quantscope {

namespace {
bool isCompute(LayerKind k)
{
    return k == LayerKind::Conv2d || k == LayerKind::Linear || k == LayerKind::BatchNorm2d || k == LayerKind::Add;
}
bool isRelu(LayerKind k) { return k == LayerKind::ReLU || k == LayerKind::ReLU6; }
} // namespace

// The quantized graph of Jacob et al. 2018 / PyTorch eager mode: every ReLU/ReLU6 and pooling
// average output is requantized; a conv/linear/BN/Add output is requantized unless its only
// reader is a BatchNorm (folded into it) or a ReLU (fused into its clamp). Max-pooling, flatten and
// dropout keep their input's grid.
std::vector<bool> activationQuantPoints(const Model& model)
{
    std::vector<bool> p(model.size(), false);
    for (std::size_t i = 0; i < model.size(); ++i) {
        const LayerKind k = model.layer(i).kind();
        if (isRelu(k) || k == LayerKind::AvgPool2d || k == LayerKind::GlobalAvgPool2d) {
            p[i] = true;
        } else if (isCompute(k)) {
            const long next = model.soleConsumer(i);
            const LayerKind nk = next >= 0 ? model.layer(static_cast<std::size_t>(next)).kind() : k;
            const bool fused = next >= 0 && (isRelu(nk) || (nk == LayerKind::BatchNorm2d && k == LayerKind::Conv2d));
            p[i] = !fused;
        }
    }
    return p;
}

Conv2d* foldableConv(Model& model, std::size_t bnLayer)
{
    const auto& in = model.inputsOf(bnLayer);
    if (in.size() != 1 || in[0] == 0) return nullptr;
    const std::size_t prev = in[0] - 1;
    if (model.soleConsumer(prev) != static_cast<long>(bnLayer)) return nullptr;
    return dynamic_cast<Conv2d*>(&model.layer(prev));
}

BatchNorm2d* foldedBatchNorm(Model& model, std::size_t convLayer)
{
    const long next = model.soleConsumer(convLayer);
    if (next < 0) return nullptr;
    auto* bn = dynamic_cast<BatchNorm2d*>(&model.layer(static_cast<std::size_t>(next)));
    return bn && dynamic_cast<Conv2d*>(&model.layer(convLayer)) ? bn : nullptr;
}

QuantSim::QuantSim(Model& model, const PrecisionConfig& cfg, const NumberFormat& weightFormat)
    : m_model(model), m_cfg(cfg), m_wfmt(weightFormat),
      m_afmt(needsScale(weightFormat) ? findFormat(cfg.activationFormat) : weightFormat),
      m_actCal(parseCalibration(cfg.activationCalibration))
{
    if (weightFormat.kind == FormatKind::Float32) throw ConfigError("quantization needs a format other than fp32");
    m_wq = std::make_unique<WeightQuantizer>(m_wfmt, parseGranularity(cfg.granularity), parseCalibration(cfg.calibration),
                                             parseRounding(cfg.rounding), cfg.percentile);
    // Targets: every Conv2d / Linear. A Conv2d followed by BatchNorm2d is quantized in folded form.
    for (std::size_t i = 0; i < model.size(); ++i) {
        Layer& l = model.layer(i);
        if (auto* c = dynamic_cast<Conv2d*>(&l)) {
            BatchNorm2d* bn = foldedBatchNorm(model, i);
            if (bn) {
                Fold f{c, bn, {}, {}, m_targets.size()};
                f.folded.name = "weight";
                f.folded.isWeight = true;
                f.folded.value = Tensor(c->weight().value.shape());
                f.folded.grad = Tensor(c->weight().value.shape());
                m_folds.push_back(std::move(f));
                m_targets.push_back({l.name(), nullptr, nullptr});
            } else {
                m_targets.push_back({l.name(), &c->weight(), c->hasBias() ? &c->bias() : nullptr});
            }
        } else if (auto* f = dynamic_cast<Linear*>(&l)) {
            m_targets.push_back({l.name(), &f->weight(), &f->bias()});
        }
    }
    for (Fold& f : m_folds) m_targets[f.target].weight = &f.folded; // stable addresses from here on
    m_points = activationQuantPoints(model);
    resetActivationObservers();
}

QuantSim::~QuantSim() { clearWeights(); }

void QuantSim::resetActivationObservers()
{
    m_act.clear();
    m_act.resize(m_model.size() + 1);
    m_actMask.assign(m_model.size() + 1, {});
    if (!needsScale(m_afmt)) return; // float activations: plain rounding, no observer
    m_act[0] = std::make_unique<ActivationQuantizer>(m_afmt, m_actCal);
    for (std::size_t i = 0; i < m_points.size(); ++i)
        if (m_points[i]) m_act[i + 1] = std::make_unique<ActivationQuantizer>(m_afmt, m_actCal);
}

void QuantSim::quantizeWeights(Rounding rounding, std::uint64_t rngKey)
{
    // Folded form: w_f = w * s, s = gamma / sqrt(running_var + eps), per output channel.
    for (Fold& f : m_folds) {
        const std::size_t C = f.conv->outChannels(), row = f.conv->weight().value.numel() / C;
        f.factor.resize(C);
        for (std::size_t c = 0; c < C; ++c) {
            f.factor[c] = f.bn->gamma().value[c] / std::sqrt(f.bn->runningVar()[c] + f.bn->eps());
            for (std::size_t j = 0; j < row; ++j)
                f.folded.value[c * row + j] = f.conv->weight().value[c * row + j] * f.factor[c];
        }
    }
    m_wq->setRounding(rounding);
    m_wq->apply(m_targets, rngKey);
    // Back to the unfolded parameter: conv(x, fq(w s)) / s == conv(x, fq(w s) / s).
    for (Fold& f : m_folds) {
        Param& w = f.conv->weight();
        const std::size_t C = f.conv->outChannels(), row = w.value.numel() / C;
        w.override.resize(w.value.shape());
        for (std::size_t c = 0; c < C; ++c) {
            const float s = f.factor[c];
            for (std::size_t j = 0; j < row; ++j)
                w.override[c * row + j] = s != 0.0f ? f.folded.override[c * row + j] / s : 0.0f;
        }
        w.hasOverride = true;
    }
}

void QuantSim::clearWeights()
{
    for (WeightTarget& t : m_targets) {
        if (t.weight) t.weight->clearOverride();
        if (t.bias) t.bias->clearOverride();
    }
    for (Fold& f : m_folds) f.conv->weight().clearOverride();
}

void QuantSim::maskWeightGradients()
{
    // d fq(w s)/s / dw = mask (the s cancels), so folded targets take the conv's gradient.
    for (Fold& f : m_folds) f.folded.grad.values() = f.conv->weight().grad.values();
    m_wq->maskGradients(m_targets);
    for (Fold& f : m_folds) f.conv->weight().grad.values() = f.folded.grad.values();
}

std::vector<LayerStats> QuantSim::stats(std::size_t epoch) { return m_wq->stats(epoch, m_targets); }

void QuantSim::quantizeActivation(std::size_t point, Tensor& y, bool training)
{
    if (!m_actsEnabled) return;
    if (!needsScale(m_afmt)) {
        roundToFormat(y.values(), m_afmt, Rounding::Nearest);
        return;
    }
    ActivationQuantizer& q = *m_act[point];
    if (m_observing) q.observe(y.values());
    if (m_observeOnly || !q.ready()) return;
    std::vector<std::uint8_t>& mask = m_actMask[point];
    q.fakeQuantize(y, mask);
    if (!training) mask.clear();
}

void QuantSim::onInput(Tensor& x, const RunContext& ctx) { quantizeActivation(0, x, ctx.training); }

void QuantSim::afterForward(std::size_t layer, Layer&, Tensor& y, const RunContext& ctx)
{
    if (m_points[layer]) quantizeActivation(layer + 1, y, ctx.training);
}

void QuantSim::beforeBackward(std::size_t layer, Layer&, Tensor& dy)
{
    if (!m_points[layer]) return;
    const std::vector<std::uint8_t>& mask = m_actMask[layer + 1];
    if (mask.size() != dy.numel()) return; // not quantized this step (observer not ready / float)
    const std::size_t n = dy.numel();
    float* g = dy.data();
    const std::uint8_t* m = mask.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
        float* __restrict gg = g;
        const std::uint8_t* __restrict mm = m;
        for (std::size_t i = b; i < e; ++i) {
            const float gi = gg[i];
            gg[i] = mm[i] ? gi : 0.0f;
        }
    });
}

void QuantSim::calibrate(const Dataset& data, const LabeledImages& set, std::size_t images, std::size_t batchSize)
{
    resetActivationObservers();
    const bool observing = m_observing;
    m_observing = true;
    m_observeOnly = true; // PTQ calibration observes the float activations
    Tensor x;
    std::vector<std::int32_t> y;
    RunContext ctx;
    ctx.training = false;
    const std::size_t n = std::min(images, set.size());
    for (std::size_t b = 0; b < n; b += batchSize) {
        data.makeBatch(set, b, std::min(n, b + batchSize), x, y);
        m_model.forward(x, ctx, this);
    }
    m_observing = observing;
    m_observeOnly = false;
}

} // namespace quantscope
