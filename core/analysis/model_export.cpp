#include "analysis/model_export.h"

#include "infer/model_runner.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "util/byte_size.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/pointwise.h"
#include "nn/prelu.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/atomic_file.h"
#include "util/errors.h"
#include "util/number_text.h"
#include "util/ascii_text.h"

#include <algorithm>
#include <optional>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <span>
#include <limits>

namespace quantscope {

namespace {

bool endsWith(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The plan an integer export would use (progressive: its last phase), or nullopt when the run
// exports as FP32 (every layer fp32, or a strategy that keeps FP32 masters).
std::optional<PrecisionPlan> exportPlan(const TrainConfig& cfg)
{
    const PrecisionConfig& p = cfg.precision;
    std::string name;
    if (p.strategy == Strategy::Ptq || p.strategy == Strategy::Qat) name = p.format;
    else if (p.strategy == Strategy::Progressive) name = parseSchedule(p.schedule).back().format;
    else return std::nullopt;
    PrecisionPlan plan = p.plan(name);
    if (p.strategy == Strategy::Progressive && !needsScale(findFormat(name))) plan.layers.clear();
    bool anyQuantized = !plan.defaults.keepFp32();
    for (const LayerOverride& o : plan.layers) anyQuantized = anyQuantized || (o.format && *o.format != "fp32");
    if (!anyQuantized) return std::nullopt;
    auto check = [&](const std::string& f, const std::string& who) {
        const NumberFormat& nf = findFormat(f);
        if (nf.kind != FormatKind::Float32 && !needsScale(nf))
            throw ConfigError("export writes integer or FP32 layers; " + who + " " + f +
                              " weights have no exported form (use an integer format such as int8 or int4, or fp32)");
    };
    check(plan.defaults.format, "the model's (--format)");
    for (const LayerOverride& o : plan.layers)
        if (o.format) check(*o.format, "layer '" + o.layer + "':");
    return plan;
}

// Every precision a plan gives a layer (the default's and each entry's).
std::vector<std::pair<std::string, LayerPrecision>> planPrecisions(const PrecisionPlan& plan)
{
    std::vector<std::pair<std::string, LayerPrecision>> v{{"the whole-model setting", plan.defaults}};
    for (const LayerOverride& o : plan.layers) v.emplace_back("layer '" + o.layer + "'", plan.forLayer(o.layer));
    return v;
}

ActivationQuant activationOf(const ActivationQuantizer* q, const NumberFormat& f, const std::string& where)
{
    if (!q || !needsScale(f)) throw ConfigError(where + ": integer export needs integer activations (e.g. --act-format uint8)");
    if (!q->ready() && q->observer().nonFinite() > 0)
        throw NumericError(where + ": every activation value observed was inf or NaN (" + std::to_string(q->observer().nonFinite()) +
                           "), so it has no range: the model's values overflow float32 (huge weights, or training diverged)");
    if (!q->ready()) throw ConfigError(where + ": the activation range has not been observed yet (train or calibrate first)");
    const QuantParams& p = q->params();
    ActivationQuant a;
    a.bits = f.bits;
    a.isSigned = f.isSigned;
    a.qmin = p.qmin;
    a.qmax = p.qmax;
    a.scale = p.scale.at(0);
    a.zeroPoint = p.zeroPoint.at(0);
    return a;
}

// A layer kept FP32 in an integer model: its float weights (folded when `factor` is given).
StoredTensor floatWeights(const Param& w, const std::vector<float>* factor)
{
    StoredTensor t;
    t.name = "weight";
    t.shape = w.value.shape();
    t.encoding = TensorEncoding::Float32;
    t.values = w.value.values();
    if (factor) {
        const std::size_t C = t.shape.at(0), row = t.values.size() / C;
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t j = 0; j < row; ++j) t.values[c * row + j] *= (*factor)[c];
    }
    return t;
}

// Export refuses non-finite parameters (they would become saturated integers or undefined casts).
void requireFinite(std::span<const float> v, const std::string& what)
{
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]))
            throw NumericError("cannot export: " + what + " holds a non-finite value (" + std::to_string(v[i]) +
                               " at element " + std::to_string(i) + "); the model diverged, retrain it");
}

// Scales that are not positive finite numbers come from ranges that are not (a weight, bias or
// observed activation range overflowing float32: training diverged): a NumericError naming the
// layer, before validate() would call the model a malformed file.
void requireFiniteScales(const ExportedModel& m, const std::string& modelName)
{
    const auto check = [&](float scale, std::size_t index, const StoredLayer& l, const std::string& what) {
        if (std::isfinite(scale) && scale > 0.0f) return;
        throw NumericError("quantized model '" + modelName + "': " + storedKindName(l.kind) + " '" + l.name + "' " + what +
                           (index == std::size_t(-1) ? "" : " (channel or group " + std::to_string(index) + ")") + " has scale " +
                           numberText(scale) + ": its range is not finite or too wide for float32, so training diverged; "
                           "lower the learning rate or retrain");
    };
    for (const StoredLayer& l : m.layers) {
        for (const StoredTensor& t : l.tensors)
            if (t.encoding != TensorEncoding::Float32)
                for (std::size_t i = 0; i < t.scales.size(); ++i) check(t.scales[i], t.scales.size() > 1 ? i : std::size_t(-1), l, t.name);
        if (l.outputQuant) check(l.outputQuant->scale, std::size_t(-1), l, "output");
    }
}

StoredTensor intWeights(const Param& w, const QuantParams& qp, const NumberFormat& f, const std::string& layer)
{
    requireFinite(w.value.values(), "layer '" + layer + "' weight");
    StoredTensor t;
    t.name = "weight";
    t.shape = w.value.shape();
    t.encoding = TensorEncoding::Int;
    t.bits = std::max(f.bits, 2); // binary {-1, +1} is stored on a 2-bit signed grid
    t.isSigned = f.isSigned;
    t.qmin = qp.qmin;
    t.qmax = qp.qmax;
    t.scales = qp.scale;
    t.zeroPoints = qp.zeroPoint;
    if (qp.perTensor()) {
        t.layout = ScaleLayout::Tensor;
    } else if (qp.slotLength == 0 || qp.slotLength >= qp.rowLength) {
        t.layout = ScaleLayout::Channel;
    } else {
        t.layout = ScaleLayout::Group;
        t.groupSize = qp.slotLength;
    }
    t.q.resize(w.value.numel());
    quantizeToInt(w.value.values(), qp, t.q);
    // What is stored must be exactly what the simulation computed with.
    const std::vector<float> back = t.dequantized();
    const Tensor& used = w.forwardValue();
    for (std::size_t i = 0; i < back.size(); ++i)
        if (back[i] != used[i])
            throw Error("internal error: the integer weights of '" + layer + "' do not reproduce the fake-quantized weights");
    return t;
}

// The largest |int32 bias| an export stores: half the int32 range, so that the accumulated
// products still fit beside it (the integer engine checks |bias| + K * 255 * 128 < 2^31).
constexpr double kMaxBiasCode = 1073741824.0; // 2^30

// The start of intBias's note for a layer whose biases round to 0 (merged by mergeVanishedBiasNotes).
constexpr const char* kVanishedBias = "vanished bias: ";

// int32 at the accumulator scale s_in * s_w (per channel when the weights are), as in ONNX QDQ.
// A bias too large for that scale (tiny weights, so a tiny s_w, beside an O(1) bias) is not
// saturated: like onnxruntime's quantizer (_adjust_weight_scale_for_int32_bias), the weight scale
// of that channel (or tensor) is raised until the bias fits and the weights are quantized again
// with it; `notes` says which layer. `wSource` holds the float weights `w` was quantized from.
StoredTensor intBias(const std::vector<float>& b, StoredTensor& w, const Param& wSource, float inScale, const std::string& layer,
                     std::vector<std::string>& notes)
{
    requireFinite(b, "layer '" + layer + "' bias");
    StoredTensor t;
    t.name = "bias";
    t.shape = {b.size()};
    // Group scales, float weights or a float input (after a layer kept FP32): no single
    // accumulator scale, so the bias stays float.
    if (w.encoding != TensorEncoding::Int || w.layout == ScaleLayout::Group || !(inScale > 0.0f)) {
        t.encoding = TensorEncoding::Float32;
        t.values = b;
        return t;
    }
    const bool perTensor = w.layout == ScaleLayout::Tensor;
    const std::size_t row = w.q.size() / std::max<std::size_t>(1, b.size());
    std::size_t raised = 0;
    float maxRatio = 1.0f;
    for (std::size_t s = 0; s < w.scales.size(); ++s) {
        double maxAbs = 0.0;
        for (std::size_t c = 0; c < b.size(); ++c)
            if (perTensor || c == s) maxAbs = std::max(maxAbs, std::fabs(static_cast<double>(b[c])));
        auto fits = [&](float sc) { return maxAbs / static_cast<double>(inScale * sc) <= kMaxBiasCode; };
        float sw = w.scales[s];
        if (!fits(sw)) {
            sw = std::max(sw, static_cast<float>(maxAbs / (static_cast<double>(inScale) * kMaxBiasCode)));
            while (!fits(sw)) sw = std::nextafter(sw, INFINITY);
        }
        if (sw == w.scales[s]) continue;
        maxRatio = std::max(maxRatio, sw / w.scales[s]);
        ++raised;
        w.scales[s] = sw;
        const std::size_t b0 = perTensor ? 0 : s * row, e0 = perTensor ? w.q.size() : (s + 1) * row;
        const float* x = wSource.value.data();
        for (std::size_t i = b0; i < e0; ++i) {
            const double q = std::nearbyint(static_cast<double>(x[i]) / sw) + w.zeroPoints[s];
            w.q[i] = static_cast<std::int32_t>(std::clamp(q, static_cast<double>(w.qmin), static_cast<double>(w.qmax)));
        }
    }
    if (raised) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(maxRatio));
        notes.push_back("layer '" + layer + "': weight scale raised (up to " + buf + "x) on " + std::to_string(raised) +
                        " of " + std::to_string(w.scales.size()) + " scale(s) so that its int32 bias fits (tiny weights beside a large bias)");
    }
    t.encoding = TensorEncoding::Int;
    t.bits = 32;
    t.isSigned = true;
    t.qmin = std::numeric_limits<std::int32_t>::min();
    t.qmax = std::numeric_limits<std::int32_t>::max();
    t.layout = w.layout;
    for (std::size_t s = 0; s < w.scales.size(); ++s) t.scales.push_back(inScale * w.scales[s]);
    t.zeroPoints.assign(t.scales.size(), 0);
    t.q.resize(b.size());
    std::size_t vanished = 0;
    for (std::size_t c = 0; c < b.size(); ++c) {
        const double v = std::nearbyint(static_cast<double>(b[c]) / t.scales[perTensor ? 0 : c]);
        if (!(std::fabs(v) <= kMaxBiasCode)) // cannot happen after the raise above
            throw ConfigError("cannot export layer '" + layer + "': its bias " + std::to_string(b[c]) +
                              " does not fit an int32 at the accumulator scale");
        t.q[c] = static_cast<std::int32_t>(v);
        if (v == 0.0 && b[c] != 0.0f) ++vanished;
    }
    // The simulation adds float biases (PyTorch's fake-quant does too); a bias below half the
    // accumulator step s_in * s_w is 0 in the file. Only extreme scale spreads get there, and then
    // the file's accuracy can differ from the simulated one (tester 11 D8): said, not silent.
    if (vanished)
        notes.push_back(std::string(kVanishedBias) + "'" + layer + "' " + std::to_string(vanished) + " of " + std::to_string(b.size()));
    return t;
}

// intBias's notes, one per layer, as one sentence (tester 16: the sentence came once per layer).
void mergeVanishedBiasNotes(std::vector<std::string>& notes)
{
    std::string layers;
    std::size_t count = 0;
    for (auto it = notes.begin(); it != notes.end();) {
        if (it->rfind(kVanishedBias, 0) != 0) {
            ++it;
            continue;
        }
        layers += (count++ ? ", " : "") + it->substr(std::char_traits<char>::length(kVanishedBias));
        it = notes.erase(it);
    }
    if (count)
        notes.push_back("bias values below half the int32 step s_in * s_w are stored as 0 (layer" + std::string(count > 1 ? "s " : " ") +
                        layers + "); the simulation added them as float, so the file's accuracy may differ from the simulated one");
}

} // namespace

ExportFormat exportFormatFor(const std::string& path)
{
    const std::string l = asciiLower(path);
    if (endsWith(l, ".qsm")) return ExportFormat::Qsm;
    if (endsWith(l, ".onnx")) return ExportFormat::Onnx;
    throw ConfigError("cannot tell the export format of '" + path + "': use a .qsm or .onnx file name");
}

void checkExportable(const TrainConfig& cfg, const std::string& path)
{
    const ExportFormat fmt = exportFormatFor(path);
    const std::optional<PrecisionPlan> plan = exportPlan(cfg);
    if (!plan) return; // FP32 export
    for (const auto& [who, p] : planPrecisions(*plan)) {
        if (p.keepFp32()) continue;
        const NumberFormat& wf = findFormat(p.format);
        const NumberFormat& af = findFormat(p.activationFormat);
        if (!needsScale(af))
            throw ConfigError("integer export needs integer activations, not " + af.name + " (" + who +
                              "; use --act-format uint8 or int8)");
        if (fmt != ExportFormat::Onnx) continue;
        if (!wf.isSigned || !wf.symmetric || wf.bits > 8)
            throw ConfigError("ONNX QDQ export needs signed symmetric weights of at most 8 bits, not " + wf.name + " (" + who + ")");
        if (parseGranularity(p.granularity).kind == GranularityKind::Group)
            throw ConfigError("ONNX QuantizeLinear (opset 13) has no group-wise scales (" + who +
                              "); use --granularity channel or tensor, or export .qsm");
        if (af.bits != 8) throw ConfigError("ONNX QDQ export needs int8 or uint8 activations, not " + af.name + " (" + who + ")");
    }
}

namespace {
ConfigError floatBatchNormError(const std::string& layer)
{
    return ConfigError("BatchNorm2d '" + layer + "' follows no convolution and reads a float activation (a layer kept FP32), so "
                       "it cannot be exported as an integer layer; quantize the convolution or linear layer before it, or "
                       "export the FP32 model");
}
} // namespace

void checkExportableModel(Model& model, const QuantSim& sim)
{
    // exportQuantizedModel's walk with a flag for a scale: an activation is on an integer grid when
    // its point has an integer format, float when its point has none, and a layer without a point
    // passes its input's on. A convolution's folded BatchNorm carries the convolution's point.
    if (!sim.pointFormat(0)) return; // nothing quantized: an FP32 export
    const std::vector<bool>& points = sim.activationPoints();
    std::vector<char> integer(model.size() + 1, 0), folded(model.size(), 0);
    integer[0] = 1;
    for (std::size_t i = 0; i < model.size(); ++i) {
        if (folded[i] || model.inputsOf(i).empty()) continue;
        Layer& layer = model.layer(i);
        const bool in = integer[model.inputsOf(i)[0]] != 0;
        std::size_t pointLayer = i;
        if (dynamic_cast<Conv2d*>(&layer) && foldedBatchNorm(model, i)) {
            pointLayer = static_cast<std::size_t>(model.soleConsumer(i));
            folded[pointLayer] = 1;
        } else if (dynamic_cast<BatchNorm2d*>(&layer) && !in) {
            throw floatBatchNormError(layer.name());
        }
        integer[pointLayer + 1] = points.at(pointLayer) ? sim.pointFormat(pointLayer + 1) != nullptr : in;
    }
}

ExportedModel exportQuantizedModel(Model& model, const QuantSim& sim, const std::string& modelName, const Dataset& data,
                                   const std::string& strategyName, const std::string& granularity)
{
    const NumberFormat& wf = sim.weightFormat();
    const NumberFormat& af = sim.activationFormat();
    const std::vector<WeightTarget>& targets = sim.weightTargets();
    for (std::size_t t = 0; t < targets.size(); ++t) {
        const NumberFormat& f = sim.targetFormat(t);
        if (f.kind != FormatKind::Float32 && !needsScale(f))
            throw ConfigError("integer export needs integer (or fp32) weights; layer '" + targets[t].layer + "' is " + f.name);
    }
    ExportedModel m;
    m.modelName = modelName;
    const Shape& in = model.inputShape();
    m.channels = in.at(0);
    m.height = in.at(1);
    m.width = in.at(2);
    m.classes = model.outputShape(1).back();
    m.normalization = data.normalization.broadcast(m.channels);
    m.classNames = data.classNames;
    m.strategy = strategyName;
    m.weightFormat = wf.name;
    m.activationFormat = af.name;
    m.granularity = granularity;
    bool perLayer = !sim.plan().uniform(); // a plan, or --first-last-8bit's int8 ends
    bool mixedGranularity = false;
    for (std::size_t t = 0; t < targets.size(); ++t) {
        const LayerPrecision& p = sim.targetPrecision(t);
        perLayer = perLayer || p.format != wf.name;
        mixedGranularity = mixedGranularity || (!p.keepFp32() && p.granularity != granularity);
    }
    if (perLayer) { // informative: the format of every layer, and its granularity where not the default's
        std::string per;
        for (std::size_t t = 0; t < targets.size(); ++t) {
            const LayerPrecision& p = sim.targetPrecision(t);
            per += (per.empty() ? "" : ", ") + targets[t].layer + " " + p.format +
                   (!p.keepFp32() && p.granularity != granularity ? ":" + p.granularity : "");
        }
        m.weightFormat = "per-layer (" + (per.size() > 200 ? per.substr(0, 197) + "..." : per) + ")";
    }
    if (mixedGranularity) m.granularity = granularity + " unless a layer says otherwise";
    m.quantized = true;
    if (!sim.pointFormat(0)) throw ConfigError("integer export needs the model input quantized (no layer is quantized)");
    m.inputQuant = activationOf(sim.activationQuantizer(0), *sim.pointFormat(0), "model input");
    const std::vector<bool>& points = sim.activationPoints();
    // Model activation -> stored activation (-1: a conv output folded away with its BatchNorm),
    // and the scale each activation is on (pass-through layers keep their input's).
    std::vector<long> actMap(model.size() + 1, -1);
    std::vector<float> actScale(model.size() + 1, 0.0f);
    std::vector<bool> skip(model.size(), false);
    actMap[0] = 0;
    actScale[0] = m.inputQuant->scale;
    std::size_t target = 0;
    for (std::size_t i = 0; i < model.size(); ++i) {
        if (skip[i]) continue; // a BatchNorm folded into its convolution
        Layer& layer = model.layer(i);
        StoredLayer l;
        l.kind = layer.kind();
        l.name = layer.name();
        for (std::size_t a : model.inputsOf(i)) {
            if (actMap[a] < 0) throw ConfigError("'" + l.name + "' reads a convolution output that is folded into its BatchNorm");
            l.inputs.push_back(static_cast<std::size_t>(actMap[a]));
        }
        const float inScale = actScale[model.inputsOf(i)[0]];
        std::size_t pointLayer = i; // the layer whose output point this stored layer carries
        if (auto* c = dynamic_cast<Conv2d*>(&layer)) {
            BatchNorm2d* bn = foldedBatchNorm(model, i);
            const WeightTarget& t = targets.at(target);
            if (t.layer != l.name) throw Error("internal error: weight targets out of order at '" + l.name + "'");
            l.inChannels = c->inChannels();
            l.outChannels = c->outChannels();
            l.setConvGeometry(c->geometry());
            l.groups = c->groups();
            const bool fp32 = sim.targetFormat(target).kind == FormatKind::Float32;
            std::vector<float> foldFactor;
            if (bn && fp32)
                for (std::size_t ch = 0; ch < c->outChannels(); ++ch)
                    foldFactor.push_back(bn->gamma().value[ch] / std::sqrt(bn->runningVar()[ch] + bn->eps()));
            StoredTensor w = fp32 ? floatWeights(c->weight(), bn ? &foldFactor : nullptr)
                                  : intWeights(*t.weight, sim.weightParams(target), sim.targetFormat(target), l.name);
            if (c->hasBias()) requireFinite(c->bias().value.values(), "layer '" + l.name + "' bias");
            std::vector<float> bias = c->hasBias() ? c->bias().forwardValue().values()
                                                   : std::vector<float>(c->outChannels(), 0.0f);
            if (bn) {
                // Folded: b' = beta + (b - running_mean) * gamma / sqrt(running_var + eps)
                l.bnFolded = true;
                for (std::size_t ch = 0; ch < bias.size(); ++ch) {
                    const float f = bn->gamma().value[ch] / std::sqrt(bn->runningVar()[ch] + bn->eps());
                    bias[ch] = bn->beta().value[ch] + (bias[ch] - bn->runningMean()[ch]) * f;
                }
                pointLayer = static_cast<std::size_t>(model.soleConsumer(i));
                skip[pointLayer] = true;
            } else if (t.bias) {
                bias = t.bias->forwardValue().values();
            }
            StoredTensor b = intBias(bias, w, *t.weight, inScale, l.name, m.notes);
            l.tensors = {std::move(w), std::move(b)};
            ++target;
        } else if (auto* f = dynamic_cast<Linear*>(&layer)) {
            const WeightTarget& t = targets.at(target);
            if (t.layer != l.name) throw Error("internal error: weight targets out of order at '" + l.name + "'");
            l.inFeatures = f->inFeatures();
            l.outFeatures = f->outFeatures();
            const bool fp32 = sim.targetFormat(target).kind == FormatKind::Float32;
            StoredTensor w = fp32 ? floatWeights(*t.weight, nullptr)
                                  : intWeights(*t.weight, sim.weightParams(target), sim.targetFormat(target), l.name);
            if (f->hasBias()) {
                requireFinite(f->bias().value.values(), "layer '" + l.name + "' bias"); // the master, not its saturated fake-quant
                const std::vector<float> bias = t.bias ? t.bias->forwardValue().values() : f->bias().value.values();
                StoredTensor b = intBias(bias, w, *t.weight, inScale, l.name, m.notes);
                l.tensors = {std::move(w), std::move(b)};
            } else { // bias=False: the weight alone; the engines add nothing (an int32 bias of zero)
                l.tensors = {std::move(w)};
            }
            ++target;
        } else if (auto* bn = dynamic_cast<BatchNorm2d*>(&layer)) {
            // A BatchNorm no convolution absorbs (a pre-activation ResNet's BN -> ReLU -> conv, a
            // BN on the input or after a ReLU; tester 11: no integer export was possible): its
            // inference form y = a x + b per channel is a depthwise 1x1 convolution (groups = C),
            // stored with one int8 weight per channel (+-127 at scale |a| / 127, so a itself) and an
            // int32 bias at s_in * s_w, which the engines and onnxruntime run as any depthwise conv.
            if (!(inScale > 0.0f))
                throw floatBatchNormError(l.name);
            const std::size_t C = bn->channels();
            l.kind = LayerKind::Conv2d;
            l.inChannels = l.outChannels = C;
            l.kernel = 1;
            l.stride = 1;
            l.padding = 0;
            l.groups = C;
            Param a;
            a.name = "weight";
            a.isWeight = true;
            a.value = Tensor({C, 1, 1, 1});
            std::vector<float> shift(C), scales(C);
            for (std::size_t ch = 0; ch < C; ++ch) {
                const float f = bn->gamma().value[ch] / std::sqrt(bn->runningVar()[ch] + bn->eps());
                a.value[ch] = f;
                shift[ch] = bn->beta().value[ch] - bn->runningMean()[ch] * f;
                scales[ch] = f != 0.0f ? std::abs(f) / 127.0f : 1.0f;
                // The grid's own value (127 s may differ from a by an ulp), which intWeights checks.
                if (f != 0.0f) a.value[ch] = static_cast<float>(f < 0.0f ? -127 : 127) * scales[ch];
            }
            requireFinite(a.value.values(), "BatchNorm2d '" + l.name + "' scale");
            requireFinite(shift, "BatchNorm2d '" + l.name + "' shift");
            const NumberFormat& i8 = findFormat("int8");
            StoredTensor w = intWeights(a, perRowParams(scales, std::vector<std::int32_t>(C, 0), i8.qmin, i8.qmax, 1), i8, l.name);
            StoredTensor b = intBias(shift, w, a, inScale, l.name, m.notes);
            l.tensors = {std::move(w), std::move(b)};
            m.notes.push_back("BatchNorm2d '" + l.name + "' follows no convolution: it is stored as a depthwise 1x1 convolution "
                              "(one int8 weight per channel, int32 bias)");
        } else if (auto* p = dynamic_cast<MaxPool2d*>(&layer)) {
            l.setPoolGeometry(p->geometry());
        } else if (auto* ap = dynamic_cast<AvgPool2d*>(&layer)) {
            l.setPoolGeometry(ap->geometry());
        } else if (auto* d = dynamic_cast<Dropout*>(&layer)) {
            l.dropout = d->p();
        } else if (storeChannelMove(layer, l) || storeNormLayer(layer, l)) {
        } else if (auto* pw = dynamic_cast<Pointwise*>(&layer)) {
            l.alpha = pw->alpha();
            l.beta = pw->beta();
        } else if (auto* pr = dynamic_cast<PReLU*>(&layer)) {
            // The slope stays float32 (docs/FORMAT.md): the engine makes a table per channel of it.
            requireFinite(pr->weight().value.values(), "PReLU '" + l.name + "' slope");
            StoredTensor t;
            t.name = "weight";
            t.shape = pr->weight().value.shape();
            t.values = pr->weight().value.values();
            l.tensors = {std::move(t)};
        }
        float outScale = inScale;
        if (points.at(pointLayer) && sim.pointFormat(pointLayer + 1)) {
            l.outputQuant = activationOf(sim.activationQuantizer(pointLayer + 1), *sim.pointFormat(pointLayer + 1),
                                         "output of '" + model.layer(pointLayer).name() + "'");
            outScale = l.outputQuant->scale;
        } else if (points.at(pointLayer)) {
            outScale = 0.0f; // float: the output of a layer kept FP32
        }
        m.layers.push_back(std::move(l));
        const long stored = static_cast<long>(m.layers.size());
        actMap[pointLayer + 1] = stored;
        actScale[pointLayer + 1] = outScale;
    }
    mergeVanishedBiasNotes(m.notes);
    requireFiniteScales(m, modelName);
    m.validate("quantized model '" + modelName + "'");
    return m;
}

ExportedModel exportedModelOf(Trainer& trainer)
{
    const TrainConfig& cfg = trainer.config();
    const Dataset& data = trainer.data();
    PrecisionStrategy& st = trainer.strategy();
    QuantSim* sim = st.quantSim();
    if (exportPlan(cfg) && sim) {
        st.prepareExport(data, cfg.evalBatchSize);
        return exportQuantizedModel(trainer.model(), *sim, cfg.model, data, strategyInfo(cfg.precision.strategy).name,
                                    parseGranularity(cfg.precision.granularity).name());
    }
    ExportedModel m = exportFloatModel(trainer.model(), cfg.model, data.normalization, data.classNames);
    m.strategy = strategyInfo(cfg.precision.strategy).name;
    return m;
}

ExportSummary writeAndVerify(const ExportedModel& m, const ExportedModel& fp32, const Dataset& data, const std::string& path,
                             std::size_t threads)
{
    ExportSummary s;
    s.path = path;
    s.format = exportFormatFor(path);
    s.quantized = m.quantized;
    s.precision = m.precisionText();
    std::vector<std::uint8_t> bytes, fp32Bytes;
    if (s.format == ExportFormat::Qsm) {
        bytes = encodeQsm(m);
        fp32Bytes = m.quantized ? encodeQsm(fp32) : bytes;
    } else {
        bytes = encodeOnnx(m);
        fp32Bytes = m.quantized ? encodeOnnx(fp32) : bytes;
    }
    writeFileAtomic(path, bytes);
    s.fileBytes = bytes.size();
    s.fp32Bytes = fp32Bytes.size();
    s.sizeRatio = static_cast<double>(s.fileBytes) / static_cast<double>(std::max<std::uint64_t>(1, s.fp32Bytes));

    // Re-measure from the file itself.
    const ExportedModel back = s.format == ExportFormat::Qsm ? readQsm(path) : readOnnx(path);
    RunnerOptions ro;
    ro.threads = threads;
    ModelRunner runner(back, ro);
    const RunnerEval ev = evaluateRunner(runner, data.test);
    s.accuracy = ev.accuracy;
    s.testImages = ev.count;
    s.runner = runner.description();
    s.note = formatByteSize(s.fileBytes) + " (" + std::to_string(static_cast<int>(std::lround(100.0 * s.sizeRatio))) + "% of the same model as an FP32 " +
             (s.format == ExportFormat::Qsm ? ".qsm, " : ".onnx, ") + formatByteSize(s.fp32Bytes) + ")";
    // The FP32 ONNX form folds each BatchNorm into the convolution before it (a .qsm keeps them):
    // said, since a fine-tuning from the file then trains without them (tester 10).
    const auto batchNorms = [](const ExportedModel& x) {
        return static_cast<std::size_t>(std::count_if(x.layers.begin(), x.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::BatchNorm2d; }));
    };
    if (const std::size_t folded = batchNorms(m) - std::min(batchNorms(m), batchNorms(back)); folded > 0)
        s.note += "; " + std::to_string(folded) + (folded == 1 ? " BatchNorm is" : " BatchNorms are") +
                  " folded into the convolutions before them (a .qsm keeps them, to fine-tune with BatchNorm)";
    for (const std::string& n : m.notes) s.note += "; " + n;
    return s;
}

ExportSummary exportModel(Trainer& trainer, const std::string& path)
{
    checkExportable(trainer.config(), path);
    const ExportedModel m = exportedModelOf(trainer);
    const Dataset& data = trainer.data();
    const ExportedModel fp32 =
        m.quantized ? exportFloatModel(trainer.model(), trainer.config().model, data.normalization, data.classNames) : m;
    ExportSummary s = writeAndVerify(m, fp32, data, path, trainer.config().threads);
    const Strategy st = trainer.config().precision.strategy;
    if (!m.quantized && (st == Strategy::Mixed || st == Strategy::Progressive))
        s.note += "; trained with " + trainer.config().precision.format + " arithmetic, exported with its FP32 master weights";
    else if (!m.quantized && st == Strategy::LowPrecision) // no master copy: the weights are on the format's grid
        s.note += "; trained in " + trainer.config().precision.format + " (its weights are " + trainer.config().precision.format +
                  " values), stored as float32";
    return s;
}

} // namespace quantscope
