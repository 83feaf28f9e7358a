#include "train/precision_config.h"

#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/lsq.h"
#include "train/strategy.h"
#include "util/errors.h"

#include <algorithm>

namespace quantscope {

const std::vector<StrategyInfo>& strategies()
{
    static const std::vector<StrategyInfo> rows = {
        {Strategy::Fp32, "fp32", "FP32 baseline", "Trains and evaluates in 32-bit floating point; the reference."},
        {Strategy::Ptq, "ptq", "Post-training quantization",
         "Trains in FP32, calibrates on a few images, then quantizes weights and activations."},
        {Strategy::Qat, "qat", "Quantization-aware training",
         "Trains with fake-quantized weights and activations (straight-through gradients)."},
        {Strategy::Mixed, "mixed", "Mixed precision",
         "Computes in FP16 or BF16 with FP32 master weights and dynamic loss scaling."},
        {Strategy::LowPrecision, "lowp", "Pure low precision",
         "Keeps weights, gradients and optimizer state in the low-precision format, with no FP32 copy."},
        {Strategy::Progressive, "progressive", "Progressive",
         "Moves through a schedule of formats over the epochs, e.g. FP32, then FP16, then INT8."},
    };
    return rows;
}

const std::vector<OptionUse>& optionUses()
{
    using enum Strategy;
    static const std::vector<OptionUse> rows = {
        {"format", {Ptq, Qat, Mixed, LowPrecision}}, // progressive takes its formats from --schedule
        {"granularity", {Ptq, Qat, Progressive}},
        {"rounding", {Ptq, Qat, LowPrecision, Progressive}},
        {"calibration", {Ptq, Qat, Progressive}},
        {"act-calibration", {Ptq, Qat, Progressive}},
        {"act-format", {Ptq, Qat, Progressive}},
        {"percentile", {Ptq, Qat, Progressive}},
        {"calib-images", {Ptq}},
        {"schedule", {Progressive}},
        {"blend-steps", {Progressive}},
        {"bn-freeze-epoch", {Qat}},
        {"bn-reestimate", {Qat}},
        {"plan", {Ptq, Qat, Progressive}},
        {"layer", {Ptq, Qat, Progressive}},
        {"keep-fp32", {Ptq, Qat, Progressive}},
        {"quant-eval", {Ptq, Qat, Progressive}}, // the strategies with a quantized evaluation
        {"max-skipped-steps", {Mixed, LowPrecision, Progressive}}, // the strategies with dynamic loss scaling
        {"quantizer", {Qat}},                                       // learned step sizes (LSQ)
        {"lsq-plus", {Qat}},
        {"lsq-init", {Qat}},
        {"narrow-range", {Ptq, Qat, Progressive}},                  // integer weights
        {"first-last-8bit", {Ptq, Qat, Progressive}},
        {"adaround-iters", {Ptq}},                                  // PTQ refinements (train/ptq_refine.h)
        {"cle", {Ptq}},
        {"cle-relu6-to-relu", {Ptq}},
        {"bias-correction", {Ptq}},
    };
    return rows;
}

bool strategyUses(Strategy s, std::string_view option)
{
    for (const OptionUse& r : optionUses())
        if (option == r.option) return std::find(r.usedBy.begin(), r.usedBy.end(), s) != r.usedBy.end();
    return true;
}

std::string strategiesUsing(std::string_view option)
{
    std::string out;
    for (const StrategyInfo& s : strategies())
        if (strategyUses(s.id, option)) out += (out.empty() ? "" : ", ") + std::string(s.name);
    return out;
}

const StrategyInfo& strategyInfo(Strategy s)
{
    for (const auto& r : strategies())
        if (r.id == s) return r;
    return strategies().front();
}

Strategy parseStrategy(const std::string& name)
{
    std::string known;
    for (const auto& r : strategies()) {
        if (name == r.name) return r.id;
        known += std::string(known.empty() ? "" : ", ") + r.name;
    }
    throw ConfigError("unknown strategy '" + name + "' (known: " + known + ")");
}

void PrecisionConfig::validate() const
{
    if (rounding != "nearest" && rounding != "stochastic" && rounding != "adaround")
        throw ConfigError("unknown rounding '" + rounding + "' (known: nearest, stochastic, adaround)");
    if (strategy != Strategy::Ptq && (rounding == "adaround" || crossLayerEqualization || biasCorrection))
        throw ConfigError(std::string(rounding == "adaround" ? "--rounding adaround"
                                                             : (crossLayerEqualization ? "--cle" : "--bias-correction")) +
                          " is a post-training method: it needs --strategy ptq, not " + strategyInfo(strategy).name);
    if (cleRelu6ToRelu && !crossLayerEqualization) throw ConfigError("--cle-relu6-to-relu needs --cle");
    if (adaroundIters == 0 || adaroundIters > 1000000) throw ConfigError("AdaRound iterations must be between 1 and 1000000");
    if (calibImages == 0) throw ConfigError("calibration needs at least one image");
    if (!(percentile > 50.0f && percentile <= 100.0f)) throw ConfigError("percentile must be in (50, 100]");
    const QuantizerKind q = parseQuantizer(quantizer);
    if (q == QuantizerKind::Lsq && strategy != Strategy::Qat)
        throw ConfigError(std::string("--quantizer lsq needs strategy qat, not ") + strategyInfo(strategy).name);
    if (lsqPlus && q != QuantizerKind::Lsq) throw ConfigError("--lsq-plus needs --quantizer lsq");
    parseLsqInit(lsqInit); // throws on an unknown name
    if (q == QuantizerKind::Lsq) {
        const GranularityKind g = parseGranularity(granularity).kind;
        if (g == GranularityKind::Global || g == GranularityKind::Layer)
            throw ConfigError("LSQ learns steps per tensor, per channel or per group, not with granularity '" + granularity + "'");
    }
    if (isTernaryOrBinary(findFormat(activationFormat)))
        throw ConfigError("'" + activationFormat + "' is a weight format; activations need an integer format such as uint8");
    if (!layers.empty() && strategy != Strategy::Ptq && strategy != Strategy::Qat && strategy != Strategy::Progressive)
        throw ConfigError(std::string("a per-layer plan (--plan, --layer, --keep-fp32) needs strategy ptq, qat or progressive, not ") +
                          strategyInfo(strategy).name);
}

PrecisionPlan PrecisionConfig::plan(const std::string& weightFormat) const
{
    PrecisionPlan p;
    p.defaults.format = weightFormat.empty() ? format : weightFormat;
    p.defaults.granularity = granularity;
    p.defaults.calibration = calibration;
    p.defaults.activationFormat = activationFormat;
    p.layers = layers;
    p.source = planSource;
    p.activationCalibration = activationCalibration;
    p.inputNormalization = planNormalization;
    return p;
}

PrecisionPlan PrecisionConfig::storedPlan() const
{
    switch (strategy) {
    case Strategy::Fp32:
    case Strategy::Mixed: { // FP32 master weights: the model that is exported
        PrecisionPlan p = plan("fp32");
        p.layers.clear();
        return p;
    }
    case Strategy::Progressive: {
        std::string name = format;
        try {
            name = parseSchedule(schedule).back().format;
        } catch (const ConfigError&) { // a schedule being typed: size the default format
        }
        PrecisionPlan p = plan(name);
        bool integer = false;
        for (const NumberFormat& f : numberFormats()) integer = integer || (f.name == name && needsScale(f));
        if (!integer) p.layers.clear();
        return p;
    }
    case Strategy::LowPrecision: {
        PrecisionPlan p = plan();
        p.layers.clear();
        return p;
    }
    default: return plan();
    }
}

std::string PrecisionConfig::stallWarning() const
{
    if (strategy != Strategy::LowPrecision || rounding != "nearest") return {};
    const NumberFormat& f = findFormat(format);
    if (f.kind != FormatKind::Float || f.manBits > 3) return {};
    return "pure low precision in " + format + " rounds every update to nearest; with " + std::to_string(f.manBits) +
           " mantissa bits most updates are smaller than half a step and are lost, so training may stall (stochastic "
           "rounding keeps them on average)";
}

std::string PrecisionConfig::batchNormDriftWarning(bool modelHasBatchNorm) const
{
    if (strategy != Strategy::Qat || quantizer != "lsq" || bnReestimateBatches != 0 || !modelHasBatchNorm) return {};
    return "learned step sizes (LSQ) on a model with BatchNorm: its running statistics drift from the quantized network, "
           "which can cost many points of quantized accuracy; re-estimating them on 100 batches before each quantized "
           "evaluation and the export fixes it (docs/LEARNED_QUANTIZATION.md)";
}

const char* defaultActivationCalibration(Strategy strategy, bool startsTrained)
{
    return strategy == Strategy::Qat && !startsTrained ? "minmax" : "moving-average";
}

} // namespace quantscope
