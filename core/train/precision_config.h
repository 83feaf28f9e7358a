// The precision options of a training run: strategy, number format, granularity, rounding,
// calibration. Names here are the ones the CLI and the GUI show. One table, keyed by option
// name, says which strategies use each option: the GUI disables the others (and says why), the
// CLI warns about them and lists them in its start event.
#pragma once

#include "quant/precision_plan.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quantscope {

enum class Strategy { Fp32, Ptq, Qat, Mixed, LowPrecision, Progressive };

// Which strategies use an option. `option` is the CLI flag without its "--" ("format",
// "calib-images"); the GUI asks by the same name. A new option that only some strategies use is
// one row here.
struct OptionUse {
    const char* option;
    std::vector<Strategy> usedBy;
};
// Every strategy-dependent option, in the order of `quantscope-cli train --help`. Options not in
// the table (data, model, optimizer...) are used by every strategy.
const std::vector<OptionUse>& optionUses();
// True when strategy s uses the option (true for options not in the table).
bool strategyUses(Strategy s, std::string_view option);
// The CLI names of the strategies that use the option, joined: "ptq, qat, mixed, lowp".
std::string strategiesUsing(std::string_view option);

struct StrategyInfo {
    Strategy id;
    const char* name;        // CLI value: fp32, ptq, qat, mixed, lowp, progressive
    const char* label;       // GUI label
    const char* description; // one sentence (tooltip)
    // optionUses() for this strategy, e.g. uses("format").
    bool uses(std::string_view option) const { return strategyUses(id, option); }
};

const std::vector<StrategyInfo>& strategies();
const StrategyInfo& strategyInfo(Strategy s);
// Throws ConfigError listing the known names.
Strategy parseStrategy(const std::string& name);

struct PrecisionConfig {
    Strategy strategy = Strategy::Fp32;
    std::string format = "int8";          // a row of numberFormats()
    std::string granularity = "channel";  // global | layer | tensor | channel | group:N
    std::string rounding = "nearest";     // nearest | stochastic | adaround (ptq only)
    std::string calibration = "minmax";   // weights: minmax | moving-average | percentile | mse
    std::string activationCalibration = "moving-average";
    std::string activationFormat = "uint8"; // activations are quantized per tensor
    std::size_t calibImages = 1000;       // ptq
    std::string schedule = "fp32:1,fp16:1,int8:1"; // progressive: format:epochs,...
    std::size_t bnFreezeEpoch = 0;        // qat: freeze BN statistics from this epoch (0 = never)
    // qat: before each quantized evaluation (and so before export), re-estimate every BatchNorm's
    // running statistics on this many batches of the training set (the first batches, in stored
    // order, at the training batch size) run through the quantized model: the average of the
    // batch statistics, replacing the exponential moving average that training kept (Nagel et
    // al., ICML 2022; AIMET's reestimate_bn_stats, 100 batches by default). 0 = off. Not after
    // an epoch trained with frozen statistics (bnFreezeEpoch): a freeze keeps the statistics the
    // evaluation before it re-estimated.
    std::size_t bnReestimateBatches = 0;
    std::size_t blendSteps = 100;         // progressive: steps over which formats are blended
    float percentile = 99.99f;            // percentile calibration
    // qat: observer (scales from ranges) | lsq (learned step sizes, quant/lsq.h); lsqPlus adds
    // LSQ+'s learned offset to affine activations. narrowRange: signed symmetric weights use
    // [-(2^(n-1) - 1), 2^(n-1) - 1] (int8: [-127, 127]), in every strategy with integer weights.
    std::string quantizer = "observer";
    bool lsqPlus = false;
    bool narrowRange = false;
    // firstLast8Bit: the first and last quantized Conv2d/Linear keep 8-bit weights (int8, same
    // granularity) and 8-bit activations at their inputs (the model input; what feeds the last
    // layer) and at the last layer's output (the logits), as LSQ (Esser et al. 2020, section 3)
    // and most low-bit papers do. Off by default: a uniform WbAb run quantizes every layer.
    bool firstLast8Bit = false;
    // lsq: initial steps (quant/lsq.h LsqInit): the MSE-optimal grid ("mse"), LSQ's rule
    // 2<|x|>/sqrt(Qp) ("lsq"), or the observers' ranges (weights: --calibration; activations:
    // the first batch's min-max) ("range").
    std::string lsqInit = "mse";
    // PTQ refinements (train/ptq_refine.h): AdaRound iterations per layer (rounding "adaround"),
    // cross-layer equalization, empirical bias correction.
    std::size_t adaroundIters = 500;
    bool crossLayerEqualization = false;  // --cle
    bool cleRelu6ToRelu = false;          // --cle-relu6-to-relu: ReLU6 -> ReLU first (changes the FP32 model)
    bool biasCorrection = false;          // --bias-correction
    // Per-layer precision (--plan, --layer, --keep-fp32, the GUI's plan table): entries over the
    // default that format/granularity/calibration/activationFormat above make. Empty = uniform.
    std::vector<LayerOverride> layers;
    std::string planSource;               // the plan file, for errors ("" = command line / GUI)
    std::string planNormalization;        // the plan file's input normalisation (PrecisionPlan::inputNormalization)

    // The plan in force: the options above as its default (with `weightFormat` instead of
    // `format` when given: progressive's last phase), `layers` over it.
    PrecisionPlan plan(const std::string& weightFormat = {}) const;
    // The plan the finished model's weights end in, for sizes: fp32 everywhere for the baseline
    // and for mixed precision (its FP32 master weights), progressive's last phase (with the
    // layers when that phase is an integer format), the format for pure low precision, plan()
    // for PTQ and QAT.
    PrecisionPlan storedPlan() const;

    // Throws ConfigError naming the bad option (a plan with a strategy that cannot use one).
    void validate() const;
    // What these settings deserve to be told before a run, or "": pure low precision on a float
    // format of at most 3 mantissa bits (fp8) rounding every update to nearest loses most updates
    // (smaller than half a step), so training may stall; stochastic rounding keeps them on average
    // (Gupta et al. 2015, "Deep Learning with Limited Numerical Precision").
    std::string stallWarning() const;
    // The same for learned step sizes on a model with BatchNorm: QAT with quantizer "lsq" and no
    // re-estimation (bnReestimateBatches 0) leaves the running statistics drifting from the
    // quantized network, which cost resnet8 W4A8 31 points of quantized accuracy after one epoch
    // (44 % against observer QAT's 75 %, 83 % with 50 re-estimation batches). "" otherwise, and
    // for a model without BatchNorm (modelHasBatchNorm false).
    std::string batchNormDriftWarning(bool modelHasBatchNorm) const;
};

// The activation calibration a run takes when none is given: PyTorch's moving average
// (MovingAverageMinMaxObserver) when the model starts trained (fine-tuning, PTQ's calibration of
// trained weights), min-max for QAT from a fresh initialisation, whose activation ranges grow while
// the weights learn and which the average lags (seed-cnn QAT int8, one epoch on 2,000 images:
// 64.2 % quantized against min-max's 74.8 %; on 6,400: 78.9 % against 81.9 %).
const char* defaultActivationCalibration(Strategy strategy, bool startsTrained);

} // namespace quantscope
