#include "train/quant_sim.h"

#include "data/dataset.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/pointwise.h"
#include "quant/exact_pool.h"
#include "quant/float_cast.h"
#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace quantscope {

namespace {
bool isCompute(LayerKind k)
{
    return k == LayerKind::Conv2d || k == LayerKind::Linear || k == LayerKind::BatchNorm2d || k == LayerKind::Add ||
           k == LayerKind::Mul || k == LayerKind::Concat;
}
bool isRelu(LayerKind k) { return k == LayerKind::ReLU || k == LayerKind::ReLU6; }
} // namespace

// The quantized graph of Jacob et al. 2018 / PyTorch eager mode: every ReLU/ReLU6, pointwise
// activation (Sigmoid, GELU, ...: the engine's lookup table maps one grid to the next), PReLU (a
// table per channel), GroupNorm and LayerNorm2d (computed in float between the two grids) and pooling
// average output is requantized; a conv/linear/BN/Add/Mul/Concat output is requantized unless its only
// reader is a BatchNorm (folded into it) or a ReLU (fused into its clamp). Max-pooling, flatten and
// dropout keep their input's grid.
std::vector<bool> activationQuantPoints(const Model& model)
{
    std::vector<bool> p(model.size(), false);
    for (std::size_t i = 0; i < model.size(); ++i) {
        const LayerKind k = model.layer(i).kind();
        if (isRelu(k) || isPointwise(k) || k == LayerKind::PReLU || k == LayerKind::GroupNorm || k == LayerKind::LayerNorm2d ||
            k == LayerKind::AvgPool2d ||
            k == LayerKind::GlobalAvgPool2d) {
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

bool QuantSim::fusesReLU(std::size_t layer) const
{
    if (touchesOutput(layer) || layer >= m_model.size()) return false;
    const LayerKind k = m_model.layer(layer).kind();
    if (k != LayerKind::BatchNorm2d && k != LayerKind::Add) return false;
    const long next = m_model.soleConsumer(layer);
    return next >= 0 && m_model.layer(static_cast<std::size_t>(next)).kind() == LayerKind::ReLU;
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

namespace {
PrecisionPlan planFor(const PrecisionConfig& cfg, const NumberFormat& weightFormat, bool usePlan)
{
    PrecisionPlan p = cfg.plan(weightFormat.name);
    if (!usePlan) p.layers.clear();
    return p;
}
// Activations of a layer with weights in `w`: integer weights use the plan's activation format,
// float and MX weights keep their own format on activations (as before plans), fp32 stays float.
const NumberFormat* activationFormatFor(const LayerPrecision& p)
{
    const NumberFormat& w = findFormat(p.format);
    if (w.kind == FormatKind::Float32) return nullptr;
    return needsScale(w) ? &findFormat(p.activationFormat) : &w;
}
} // namespace

QuantSim::QuantSim(Model& model, const PrecisionConfig& cfg, const NumberFormat& weightFormat, bool usePlan)
    : m_model(model), m_cfg(cfg), m_plan(planFor(cfg, weightFormat, usePlan)), m_wfmt(weightFormat),
      m_afmt(needsScale(weightFormat) ? findFormat(cfg.activationFormat) : weightFormat),
      m_actCal(parseCalibration(cfg.activationCalibration))
{
    checkPlan(m_plan, model);
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
            m_targets.push_back({l.name(), &f->weight(), f->hasBias() ? &f->bias() : nullptr});
        }
    }
    for (Fold& f : m_folds) m_targets[f.target].weight = &f.folded; // stable addresses from here on

    // --first-last-8bit: the first and last targets with an integer format narrower than 8 bits
    // get int8 weights, unless the plan gives that layer a format of its own (--layer, a plan
    // file): the named layer is the more specific wish.
    long firstInt = -1, lastInt = -1;
    for (std::size_t t = 0; t < m_targets.size(); ++t)
        if (needsScale(findFormat(m_plan.forLayer(m_targets[t].layer).format))) {
            if (firstInt < 0) firstInt = static_cast<long>(t);
            lastInt = static_cast<long>(t);
        }
    if (cfg.firstLast8Bit) m_ends = {firstInt, lastInt};

    // Group the targets by their weight settings; fp32 targets join no group.
    const Rounding rounding = parseRounding(cfg.rounding);
    m_lsq = parseQuantizer(cfg.quantizer) == QuantizerKind::Lsq;
    for (std::size_t t = 0; t < m_targets.size(); ++t) {
        m_prec.push_back(m_plan.forLayer(m_targets[t].layer));
        const std::string& name = m_targets[t].layer;
        const bool named = std::any_of(m_plan.layers.begin(), m_plan.layers.end(),
                                       [&](const LayerOverride& o) { return o.layer == name && o.format; });
        if (cfg.firstLast8Bit && (static_cast<long>(t) == firstInt || static_cast<long>(t) == lastInt) && !named &&
            findFormat(m_prec.back().format).bits < 8)
            m_prec.back().format = "int8";
        const LayerPrecision& p = m_prec.back();
        m_tfmt.push_back(&findFormat(p.format));
        m_group.push_back(-1);
        m_slot.push_back(0);
        if (m_tfmt.back()->kind == FormatKind::Float32) continue;
        // Granularity and calibration only matter to integer formats.
        const bool integer = needsScale(*m_tfmt.back());
        long g = 0;
        for (; g < static_cast<long>(m_groups.size()); ++g) {
            const LayerPrecision& q = m_prec[m_groups[g].members.front()];
            if (q.format == p.format && (!integer || (q.granularity == p.granularity && q.calibration == p.calibration))) break;
        }
        if (g == static_cast<long>(m_groups.size())) {
            Group grp;
            grp.wq = std::make_unique<WeightQuantizer>(cfg.narrowRange ? narrowRangeFormat(*m_tfmt.back()) : *m_tfmt.back(),
                                                       parseGranularity(p.granularity),
                                                       parseCalibration(p.calibration), rounding, cfg.percentile);
            m_groups.push_back(std::move(grp));
        }
        m_group.back() = g;
        m_slot.back() = m_groups[g].members.size();
        m_groups[g].members.push_back(t);
        m_groups[g].targets.push_back(m_targets[t]);
    }
    if (m_groups.empty())
        throw ConfigError(m_targets.empty() ? "quantization needs a model with Conv2d or Linear layers"
                                            : (m_plan.source.empty() ? std::string() : "plan " + m_plan.source + ": ") +
                                                  "quantization needs a format other than fp32 for at least one layer");
    m_points = activationQuantPoints(model);
    assignActivationFormats();
    resetActivationObservers();
    if (m_lsq) {
        // Learned weight steps: one per slot of each integer target's layout.
        m_lsqW.resize(m_targets.size());
        m_lsqWInit.assign(m_targets.size(), true); // targets without a learned step count as done
        for (std::size_t t = 0; t < m_targets.size(); ++t) {
            if (m_group[t] < 0 || !needsScale(*m_tfmt[t])) continue;
            const Granularity g = parseGranularity(m_prec[t].granularity);
            if (g.kind == GranularityKind::Global || g.kind == GranularityKind::Layer)
                throw ConfigError("LSQ learns steps per tensor, per channel or per group; layer '" + m_targets[t].layer +
                                  "' has granularity '" + m_prec[t].granularity + "'");
            const Shape& sh = m_targets[t].weight->value.shape();
            const std::size_t n = shapeNumel(sh), row = n / sh.at(0);
            const std::size_t slots = g.kind == GranularityKind::Tensor    ? 1
                                      : g.kind == GranularityKind::Channel ? sh.at(0)
                                                                           : slotCount(n, row, std::min(g.groupSize, row));
            auto p = std::make_unique<Param>();
            p->name = "lsq_step";
            p->value = Tensor(Shape{slots}, 1.0f);
            p->grad = Tensor(Shape{slots}, 0.0f);
            m_lsqW[t] = std::move(p);
            m_lsqWInit[t] = false;
        }
        m_lsqAct.resize(m_pfmt.size());
        for (std::size_t q = 1; q < m_pfmt.size(); ++q) // point 0 (the input) keeps its observer
            if (m_pfmt[q] && needsScale(*m_pfmt[q]))
                m_lsqAct[q] = std::make_unique<LsqActivationQuantizer>(*m_pfmt[q], cfg.lsqPlus, m_model.layer(q - 1).name(),
                                                                     parseLsqInit(cfg.lsqInit));
    }
}

void QuantSim::assignActivationFormats()
{
    const LayerPrecision fallback = m_plan.defaults;
    const NumberFormat* defaultFmt = activationFormatFor(fallback);
    std::vector<long> targetOfLayer(m_model.size(), -1);
    std::vector<std::size_t> layerOfTarget;
    for (std::size_t t = 0, i = 0; i < m_model.size(); ++i) {
        const LayerKind k = m_model.layer(i).kind();
        if (k == LayerKind::Conv2d || k == LayerKind::Linear) {
            targetOfLayer[i] = static_cast<long>(t++);
            layerOfTarget.push_back(i);
        }
    }
    std::vector<long> ownerOfPoint(m_model.size() + 1, -1);
    m_pfmt.assign(m_model.size() + 1, nullptr);
    // Input: the first quantized layer's activation format.
    for (std::size_t t = 0; t < m_targets.size(); ++t)
        if (m_group[t] >= 0) {
            m_pfmt[0] = activationFormatFor(m_prec[t]);
            break;
        }
    for (std::size_t i = 0; i < m_model.size(); ++i) {
        if (!m_points[i]) continue;
        // Walk up through single-input layers to the Conv2d/Linear that owns this point.
        std::size_t j = i;
        long owner = -1;
        for (;;) {
            if (targetOfLayer[j] >= 0) {
                owner = targetOfLayer[j];
                break;
            }
            const LayerKind k = m_model.layer(j).kind();
            const auto& in = m_model.inputsOf(j);
            if (k == LayerKind::Add || k == LayerKind::Mul || k == LayerKind::Concat || in.size() != 1 || in[0] == 0) break;
            j = in[0] - 1;
        }
        ownerOfPoint[i + 1] = owner;
        if (owner < 0) {
            m_pfmt[i + 1] = defaultFmt;
            continue;
        }
        const LayerPrecision& p = m_prec[static_cast<std::size_t>(owner)];
        m_pfmt[i + 1] = activationFormatFor(p);
        // A layer kept FP32 hands an integer layer that reads its output a quantized tensor (the
        // boundary's Q, at its act_format); its output stays float where only float layers (or
        // nothing: the logits) read it.
        if (!m_pfmt[i + 1] && readByQuantizedLayer(i + 1)) {
            const NumberFormat& a = findFormat(p.activationFormat);
            m_pfmt[i + 1] = needsScale(a) ? &a : defaultFmt;
        }
    }
    if (m_ends.first >= 0) widenEndActivations(layerOfTarget, ownerOfPoint);
}

void QuantSim::widenEndActivations(const std::vector<std::size_t>& layerOfTarget, const std::vector<long>& ownerOfPoint)
{
    // 8 bits of the same signedness where an integer format narrower than that was chosen.
    auto widen = [&](std::size_t point) {
        const NumberFormat* f = m_pfmt.at(point);
        if (f && needsScale(*f) && f->bits < 8) m_pfmt[point] = &findFormat(f->isSigned ? "int8" : "uint8");
    };
    widen(0); // the first layer's input
    const std::size_t last = layerOfTarget.at(static_cast<std::size_t>(m_ends.second));
    for (std::size_t p = 1; p < ownerOfPoint.size(); ++p) // the last layer's output(s)
        if (ownerOfPoint[p] == m_ends.second) widen(p);
    // Its input: the nearest quantization point upstream, through single-input layers.
    const auto& in = m_model.inputsOf(last);
    if (in.size() != 1) return;
    std::size_t a = in[0]; // activation index: 0 = model input, j + 1 = output of layer j
    while (a > 0 && !m_points[a - 1]) {
        const auto& up = m_model.inputsOf(a - 1);
        if (up.size() != 1 || isCompute(m_model.layer(a - 1).kind())) return; // no point of its own: float
        a = up[0];
    }
    widen(a);
}

bool QuantSim::readByQuantizedLayer(std::size_t activation) const
{
    const NumberFormat* defaultFmt = activationFormatFor(m_plan.defaults);
    for (std::size_t j = 0; j < m_model.size(); ++j) {
        const auto& in = m_model.inputsOf(j);
        if (std::find(in.begin(), in.end(), activation) == in.end()) continue;
        const LayerKind k = m_model.layer(j).kind();
        if (k == LayerKind::Conv2d || k == LayerKind::Linear) {
            for (std::size_t t = 0; t < m_targets.size(); ++t)
                if (m_targets[t].layer == m_model.layer(j).name() && m_group[t] >= 0) return true;
        } else if (k == LayerKind::Add || k == LayerKind::Mul || k == LayerKind::Concat) {
            if (defaultFmt) return true; // the join is quantized at the default's format
        } else if (readByQuantizedLayer(j + 1)) { // BatchNorm, ReLU, pooling, Flatten, Dropout: look through
            return true;
        }
    }
    return false;
}

const QuantParams& QuantSim::weightParams(std::size_t target) const
{
    static const QuantParams none;
    const long g = m_group.at(target);
    return g < 0 ? none : m_groups[static_cast<std::size_t>(g)].wq->weightParams(m_slot[target]);
}

QuantSim::~QuantSim()
{
    clearWeights();
    for (std::size_t p = 0; p < m_intReaders.size(); ++p) setIntegerInputs(p, std::nullopt);
}

void QuantSim::resetActivationObservers()
{
    m_act.clear();
    m_act.resize(m_model.size() + 1);
    m_actMask.assign(m_model.size() + 1, {});
    for (std::size_t p = 0; p < m_pfmt.size(); ++p)
        if (m_pfmt[p] && needsScale(*m_pfmt[p])) {
            m_act[p] = std::make_unique<ActivationQuantizer>(*m_pfmt[p], m_actCal);
            m_act[p]->setName(p == 0 ? std::string("the model input") : "the output of '" + m_model.layer(p - 1).name() + "'");
        }
}

void QuantSim::quantizeWeights(Rounding rounding, std::uint64_t rngKey)
{
    restoreBetas(); // apply() below puts the float biases of unfolded targets back
    // Folded form: w_f = w * s, s = gamma / sqrt(running_var + eps), per output channel. The
    // folds in parallel (each writes its own; this runs before every QAT step).
    parallelFor(m_folds.size(), [&](std::size_t k) {
        Fold& f = m_folds[k];
        if (m_group[f.target] < 0) return;
        const std::size_t C = f.conv->outChannels(), row = f.conv->weight().value.numel() / C;
        f.factor.resize(C);
        const float* w = f.conv->weight().value.data();
        float* folded = f.folded.value.data();
        for (std::size_t c = 0; c < C; ++c) {
            const float s = f.bn->gamma().value[c] / std::sqrt(f.bn->runningVar()[c] + f.bn->eps());
            f.factor[c] = s;
            for (std::size_t j = 0; j < row; ++j) folded[c * row + j] = w[c * row + j] * s;
        }
    });
    // The first group keeps the run's key, so a uniform plan rounds exactly as before plans.
    auto applyAll = [&] {
        for (std::size_t g = 0; g < m_groups.size(); ++g) {
            m_groups[g].wq->setRounding(rounding);
            m_groups[g].wq->apply(m_groups[g].targets, g == 0 ? rngKey : streamKey(rngKey, 0x706c616eull, g));
        }
    };
    if (m_lsq && std::find(m_lsqWInit.begin(), m_lsqWInit.end(), false) != m_lsqWInit.end()) {
        applyAll(); // the observer's layout, then LSQ's initial steps on it
        initLearnedWeightSteps();
    }
    floorLearnedWeightSteps(); // with this step's weights (and folding factors)
    for (std::size_t t = 0; t < m_lsqW.size(); ++t)
        if (m_lsqW[t]) {
            // s = |f| u with this step's folding factors (1 for unfolded targets).
            const std::vector<float> units = stepUnits(t);
            std::vector<float> s(m_lsqW[t]->value.values().begin(), m_lsqW[t]->value.values().end());
            for (std::size_t k = 0; k < s.size(); ++k) s[k] = std::max(s[k] * units[k], kScaleEps);
            m_groups[static_cast<std::size_t>(m_group[t])].wq->setLearnedScales(m_slot[t], std::move(s));
        }
    applyAll();
    // Back to the unfolded parameter: conv(x, fq(w s)) / s == conv(x, fq(w s) / s).
    parallelFor(m_folds.size(), [&](std::size_t k) {
        Fold& f = m_folds[k];
        if (m_group[f.target] < 0) return;
        Param& w = f.conv->weight();
        const std::size_t C = f.conv->outChannels(), row = w.value.numel() / C;
        w.override.resize(w.value.shape());
        const float* q = f.folded.override.data();
        float* out = w.override.data();
        for (std::size_t c = 0; c < C; ++c) {
            const float s = f.factor[c];
            if (s == 0.0f) std::fill(out + c * row, out + (c + 1) * row, 0.0f);
            else
                for (std::size_t j = 0; j < row; ++j) out[c * row + j] = q[c * row + j] / s;
        }
        w.hasOverride = true;
    });
    setIntegerWeights(true);
}

void QuantSim::clearWeights()
{
    restoreBetas();
    for (WeightTarget& t : m_targets) {
        if (t.weight) t.weight->clearOverride();
        if (t.bias) t.bias->clearOverride();
    }
    for (Fold& f : m_folds) f.conv->weight().clearOverride();
    setIntegerWeights(false);
}

float QuantSim::inputScaleOf(std::size_t layer) const
{
    const auto& in = m_model.inputsOf(layer);
    if (in.empty()) return 0.0f;
    std::size_t a = in[0]; // 0 = model input, j + 1 = output of layer j
    while (a > 0 && !m_points[a - 1]) {
        const auto& up = m_model.inputsOf(a - 1);
        if (up.empty()) return 0.0f;
        a = up[0];
    }
    const NumberFormat* f = m_pfmt.at(a);
    const ActivationQuantizer* q = m_act.at(a).get();
    if (!f || !needsScale(*f) || !q || !q->ready() || q->params().scale.empty()) return 0.0f;
    return q->params().scale[0];
}

void QuantSim::restoreBetas()
{
    for (SavedBeta& s : m_savedBetas) {
        s.beta->override = std::move(s.override);
        s.beta->hasOverride = s.hadOverride;
    }
    m_savedBetas.clear();
}

void QuantSim::roundBiases()
{
    restoreBetas();
    constexpr double kMaxBiasCode = 1073741824.0; // model_export.cpp: beyond it the export raises s_w instead
    std::size_t t = 0;
    for (std::size_t i = 0; i < m_model.size(); ++i) {
        const LayerKind k = m_model.layer(i).kind();
        if (k != LayerKind::Conv2d && k != LayerKind::Linear) continue;
        const std::size_t target = t++;
        if (m_group.at(target) < 0 || !needsScale(*m_tfmt[target])) continue;
        const QuantParams& w = weightParams(target);
        if (w.scale.empty()) continue;
        const bool perTensor = w.perTensor();
        if (!perTensor && w.slotLength != 0 && w.slotLength < w.rowLength) continue; // group-wise: a float bias in the file
        const float sIn = inputScaleOf(i);
        if (!(sIn > 0.0f)) continue; // a float input: a float bias in the file
        const Fold* fold = nullptr;
        for (const Fold& f : m_folds)
            if (f.target == target) fold = &f;
        Param* convBias = nullptr;
        if (auto* c = dynamic_cast<Conv2d*>(&m_model.layer(i))) convBias = c->hasBias() ? &c->bias() : nullptr;
        else convBias = m_targets[target].bias;
        if (!fold && !convBias) continue; // no bias (a Conv2d's int32 zero stays zero)
        const std::size_t C = fold ? fold->conv->outChannels() : convBias->value.numel();
        // The bias the export rounds: the layer's forward bias, folded with the BatchNorm's
        // affine part (its values) as exportQuantizedModel folds it.
        std::vector<float> b(C, 0.0f), f(C, 1.0f);
        if (convBias)
            for (std::size_t c = 0; c < C; ++c) b[c] = convBias->forwardValue()[c];
        if (fold) {
            BatchNorm2d& bn = *fold->bn;
            for (std::size_t c = 0; c < C; ++c) {
                f[c] = bn.gamma().value[c] / std::sqrt(bn.runningVar()[c] + bn.eps());
                b[c] = bn.beta().value[c] + (b[c] - bn.runningMean()[c]) * f[c];
            }
        }
        std::vector<float> rounded(b);
        for (std::size_t c = 0; c < C; ++c) {
            const float step = sIn * w.scale[perTensor ? 0 : c]; // intBias: inScale * w.scales[s]
            const double q = std::nearbyint(static_cast<double>(b[c]) / step);
            if (!(std::fabs(q) <= kMaxBiasCode)) continue; // the export raises s_w here: left float
            rounded[c] = static_cast<float>(q) * step;      // StoredTensor::dequantized
        }
        if (!fold) {
            convBias->override = Tensor(convBias->value.shape());
            for (std::size_t c = 0; c < C; ++c) convBias->override[c] = rounded[c];
            convBias->hasOverride = true;
            continue;
        }
        // Folded: the simulation runs BN(conv(x, fq(w f) / f) + b) = f conv(..) + f (b - mean) + beta;
        // a beta of rounded - f (b - mean) makes its bias the rounded folded one.
        Param& beta = fold->bn->beta();
        m_savedBetas.push_back({&beta, beta.override, beta.hasOverride});
        Tensor nb(beta.value.shape());
        for (std::size_t c = 0; c < C; ++c) {
            const float bc = convBias ? convBias->forwardValue()[c] : 0.0f;
            nb[c] = rounded[c] - (bc - fold->bn->runningMean()[c]) * f[c];
        }
        beta.override = std::move(nb);
        beta.hasOverride = true;
    }
}

void QuantSim::maskWeightGradients()
{
    if (m_lsq) learnedWeightGradients(); // before the masks: the step sees clipped weights too
    // d fq(w s)/s / dw = mask (the s cancels), so folded targets take the conv's gradient.
    for (Fold& f : m_folds)
        if (m_group[f.target] >= 0) f.folded.grad.values() = f.conv->weight().grad.values();
    for (Group& g : m_groups) g.wq->maskGradients(g.targets);
    for (Fold& f : m_folds)
        if (m_group[f.target] >= 0) f.conv->weight().grad.values() = f.folded.grad.values();
}

std::vector<LayerStats> QuantSim::stats(std::size_t epoch)
{
    // In model order; layers kept FP32 have none.
    std::vector<std::vector<LayerStats>> per(m_groups.size());
    for (std::size_t g = 0; g < m_groups.size(); ++g) per[g] = m_groups[g].wq->stats(epoch, m_groups[g].targets);
    std::vector<LayerStats> out;
    for (std::size_t t = 0; t < m_targets.size(); ++t)
        if (m_group[t] >= 0) out.push_back(std::move(per[static_cast<std::size_t>(m_group[t])][m_slot[t]]));
    return out;
}

void QuantSim::quantizeActivation(std::size_t point, Tensor& y, bool training)
{
    // The readers' integer products follow what this point does in this forward.
    const bool integerReaders = point < m_intReaders.size() && !m_intReaders[point].empty();
    if (integerReaders) setIntegerInputs(point, std::nullopt);
    const auto gridOf = [](const QuantParams& p) {
        return U8Grid{p.scale.at(0), p.zeroPoint.at(0) - p.qmin};
    };
    if (!m_actsEnabled) return;
    const NumberFormat* f = m_pfmt[point];
    if (!f) return; // stays float
    if (!needsScale(*f)) {
        roundToFormat(y.values(), *f, Rounding::Nearest, 0, mxRowLength(y.shape()));
        return;
    }
    ActivationQuantizer& q = *m_act[point];
    if (m_lsq && m_lsqAct[point] && !m_observeOnly) {
        LsqActivationQuantizer& lq = *m_lsqAct[point];
        lq.forward(y.values(), training, y.shape().empty() ? 1 : y.dim(0));
        q.setFixedParams(lq.params()); // what export reads
        // LSQ's grid: s (clamp(round(x / s) + z) - z), z = 0 (LSQ+: its offset rounded to a zero point).
        if (integerReaders && lq.params().perTensor()) setIntegerInputs(point, gridOf(lq.params()));
        return;
    }
    if (m_observing) {
        // the producer's ranges (outputSink) when they cover y
        RangeSink& rs = m_rangeSink;
        const bool armed = m_rangeSinkArmed && rs.point == point && rs.shape == y.shape() && !y.shape().empty();
        const bool fromSink = armed && !rs.rangeTaken && rs.images.load() == y.dim(0) && q.takesBatchRange();
        m_rangeSinkArmed = false;
        if (armed && rs.fakeQuantized) { // observed, fake-quantized and masked in the producer's pass
            if (!training) m_actMask[point].clear();
            if (integerReaders && q.params().perTensor() && !q.params().signOnly) setIntegerInputs(point, gridOf(q.params()));
            return;
        }
        if (fromSink) {
            float mn = std::numeric_limits<float>::infinity(), mx = -mn;
            std::size_t bad = 0;
            for (std::size_t n = 0; n < rs.counts.size(); ++n)
                if (rs.counts[n]) {
                    mn = std::min(mn, rs.mins[n]);
                    mx = std::max(mx, rs.maxs[n]);
                    bad += rs.nonFinite[n];
                }
            q.observeBatchRange(mn, mx, bad);
        } else if (!(armed && rs.rangeTaken)) { // (a range outputRange took is observed already)
            q.observe(y.values());
        }
    }
    if (m_observeOnly || !q.ready()) return;
    std::vector<std::uint8_t>& mask = m_actMask[point];
    if (!fakeQuantizeExactPool(point, y, mask)) q.fakeQuantize(y, mask);
    if (!training) mask.clear();
    if (integerReaders && q.params().perTensor() && !q.params().signOnly) setIntegerInputs(point, gridOf(q.params()));
}

bool QuantSim::fakeQuantizeExactPool(std::size_t point, Tensor& y, std::vector<std::uint8_t>& mask) const
{
    if (point == 0 || point > m_model.size()) return false;
    const std::size_t layer = point - 1;
    const Layer& l = m_model.layer(layer);
    const std::vector<std::size_t>& in = m_model.inputsOf(layer);
    if ((l.kind() != LayerKind::AvgPool2d && l.kind() != LayerKind::GlobalAvgPool2d) || in.size() != 1) return false;
    const std::size_t a = in[0]; // the pooled activation: a point of its own (or the input)
    if ((a > 0 && !m_points[a - 1]) || a >= m_act.size() || !m_act[a] || !m_pfmt[a] || !needsScale(*m_pfmt[a]) || !m_act[a]->ready())
        return false;
    const QuantParams& pin = m_act[a]->params();
    const QuantParams& pout = m_act[point]->params();
    if (!pin.perTensor() || !pout.perTensor() || pin.signOnly || pout.signOnly || pin.scale.at(0) != pout.scale.at(0) ||
        pin.zeroPoint.at(0) != pout.zeroPoint.at(0))
        return false;
    // The pool's input, fake-quantized on that grid, as the model's pass holds it (y is then the
    // model's own output tensor): the windows' sums of its codes, exact for any window size.
    static const Tensor none;
    const Tensor& x = &y == &m_model.activation(point) ? m_model.activation(a) : none;
    return fakeQuantizeSameGridPoolLayer(l, x, y, pout.scale[0], pout.zeroPoint[0], pout.qmin, pout.qmax, &mask);
}

void QuantSim::onInput(Tensor& x, const RunContext& ctx) { quantizeActivation(0, x, ctx.training); }

void QuantSim::afterForward(std::size_t layer, Layer&, Tensor& y, const RunContext& ctx)
{
    if (m_points[layer]) quantizeActivation(layer + 1, y, ctx.training);
}

const std::uint8_t* QuantSim::gradientMask(std::size_t layer, std::size_t n) const
{
    if (layer >= m_points.size() || !m_points[layer]) return nullptr;
    if (m_lsq && m_lsqAct[layer + 1] && m_actsEnabled) return nullptr;
    const std::vector<std::uint8_t>& mask = m_actMask[layer + 1];
    return mask.size() == n && n > 0 ? mask.data() : nullptr;
}

void QuantSim::beforeBackward(std::size_t layer, Layer&, Tensor& dy)
{
    if (!m_points[layer]) return;
    if (m_lsq && m_lsqAct[layer + 1] && m_actsEnabled) {
        m_lsqAct[layer + 1]->backward(dy.values());
        return;
    }
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
    // ... of the float model, as PyTorch calibrates a prepared model (prepare, calibrate, then
    // convert): the quantized weights are set aside meanwhile (the ranges were those of the
    // weight-quantized model: int2's output scale was half PyTorch's).
    std::vector<std::pair<Param*, bool>> held;
    const auto hold = [&](Param* p) {
        if (!p) return;
        held.emplace_back(p, p->hasOverride);
        p->hasOverride = false;
    };
    for (WeightTarget& t : m_targets) {
        hold(t.weight);
        hold(t.bias);
    }
    for (Fold& f : m_folds) hold(&f.conv->weight());
    const bool integerWeights = std::any_of(held.begin(), held.end(), [](const auto& h) { return h.second; });
    setIntegerWeights(false);
    Tensor x;
    std::vector<std::int32_t> y;
    RunContext ctx;
    ctx.training = false;
    ctx.releaseActivations = true; // only the output is read
    const std::size_t n = std::min(images, set.size());
    for (std::size_t b = 0; b < n; b += batchSize) {
        data.makeBatch(set, b, std::min(n, b + batchSize), x, y);
        m_model.forward(x, ctx, this);
    }
    for (const auto& [p, had] : held) p->hasOverride = had;
    if (integerWeights) setIntegerWeights(true);
    m_observing = observing;
    m_observeOnly = false;
}

} // namespace quantscope
