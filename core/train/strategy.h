// Precision strategies: how a training step treats numbers. The Trainer calls these hooks in
// a fixed order each step:
//   beforeStep -> forward(hooks()) -> loss * lossScale() -> backward(hooks()) ->
//   afterBackward (false = skip the optimizer step) -> optimizer step -> afterStep
// and after each epoch: beforeFloatEval -> FP32 evaluation -> quantizedAccuracy ->
// layerStats -> afterEval.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"
#include "train/events.h"
#include "train/optimizer.h"
#include "train/precision_config.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

class QuantSim;

// Runs the quantized model (`model` under `sim`: weights quantized, observers frozen) on `set`
// and returns its top-1 accuracy in [0, 1], or nullopt when it cannot run this model (then the
// fake-quant float evaluation runs). `runner` receives what ran it, e.g. "integer engine
// (avx512-vnni)". The trainer's room cannot run integer kernels itself (infer/ is above it), so
// the CLI and the GUI pass analysis/engine_eval.h's engineEvaluator() in TrainConfig.
using QuantizedEvaluator = std::function<std::optional<double>(Model& model, const QuantSim& sim, const Dataset& data,
                                                               const LabeledImages& set, std::string* runner)>;

struct TrainConfig;
class QuantSim;
class PtqRefiner;

class PrecisionStrategy {
public:
    virtual ~PrecisionStrategy() = default;
    virtual LayerHooks* hooks() { return nullptr; }
    virtual void beginEpoch(std::size_t /*epoch*/) {}
    virtual void beforeStep(std::size_t /*epoch*/, std::size_t /*stepInEpoch*/, std::uint64_t /*key*/) {}
    virtual float lossScale() const { return 1.0f; }
    virtual bool afterBackward() { return true; }
    virtual void afterStep(bool /*stepped*/, std::uint64_t /*key*/) {}
    virtual void beforeFloatEval() {}
    // Test accuracy of the quantized / low-precision model; NaN when the strategy has none.
    virtual double quantizedAccuracy(const Dataset& /*data*/, std::size_t /*batch*/) { return kNoValue; }
    // QAT with BatchNorm re-estimation: the last quantizedAccuracy's figure before it re-estimated
    // the statistics; NaN otherwise.
    virtual double accuracyBeforeBnReestimation() const { return kNoValue; }
    virtual std::vector<LayerStats> layerStats(std::size_t /*epoch*/) { return {}; }
    virtual void afterEval() {}
    // The run is over (finished, stopped or diverged): layers go back to their plain FP32 kernels so
    // that whatever uses the model next (export, analysis, another run) sees no strategy state.
    virtual void endRun() {}
    // The precision in force in this epoch, e.g. "fp32", "fp16", "int8".
    virtual std::string phase(std::size_t /*epoch*/) const { return "fp32"; }
    // Dynamic loss scale in force (NaN when the strategy does not scale the loss).
    virtual double reportedLossScale() const { return kNoValue; }
    virtual std::size_t skippedSteps() const { return 0; }
    // What computes the training products, for the run's start event: "fp32", or for mixed and
    // low-precision bf16 the bf16 GEMM path ("amx-bf16", "avx512-bf16") or "emulated (why)".
    virtual std::string computePath() const { return "fp32"; }
    // The integer quantization simulation whose weights/activation params an exported integer
    // model uses (PTQ, QAT, progressive ending in an integer format); nullptr otherwise.
    // Call prepareExport first: it quantizes the weights (nearest) and, for PTQ, calibrates.
    virtual QuantSim* quantSim() { return nullptr; }
    // Parameters the strategy learns besides the model's (LSQ step sizes and offsets); the
    // Trainer hands them to the optimizer with the model's. Fixed from construction on.
    virtual std::vector<Param*> learnedParams() { return {}; }
    // The learned step sizes now (empty for strategies without learned quantizers).
    virtual std::vector<StepSizeTrack> learnedSteps() const { return {}; }
    virtual void prepareExport(const Dataset& /*data*/, std::size_t /*batch*/) {}
    // PTQ with --cle / --bias-correction / --rounding adaround: what the refinement did; else null.
    virtual const PtqRefiner* refiner() const { return nullptr; }
    // Where long work inside the hooks (AdaRound) reports progress and looks for a stop request.
    void attach(TrainObserver* observer, const StopToken* stop)
    {
        m_observer = observer;
        m_stop = stop;
    }

    void setQuantizedEvaluator(QuantizedEvaluator e) { m_evaluator = std::move(e); }
    // What ran the last quantizedAccuracy: "fake-quant" or the evaluator's runner; empty if none.
    const std::string& quantizedRunner() const { return m_runner; }

protected:
    TrainObserver* observer() const { return m_observer; }
    bool stopRequested() const { return m_stop && m_stop->stopRequested(); }
    // Test accuracy of `model` under the integer simulation `sim` (ready to run): on the
    // evaluator when it can, else the fake-quant float model.
    double evaluateQuantized(Model& model, QuantSim& sim, const Dataset& data, std::size_t batch);
    // The same through the fake-quant float model only (float formats under `hooks`).
    double evaluateFakeQuant(Model& model, LayerHooks* hooks, const Dataset& data, std::size_t batch);

private:
    TrainObserver* m_observer = nullptr;
    const StopToken* m_stop = nullptr;
    QuantizedEvaluator m_evaluator;
    std::string m_runner;
};

// Builds the strategy of cfg.precision for `model` trained by `opt`. Throws ConfigError when the
// options do not fit the strategy (e.g. mixed precision with an integer format).
std::unique_ptr<PrecisionStrategy> makeStrategy(const TrainConfig& cfg, Model& model, Optimizer& opt);

struct SchedulePhase {
    std::string format;
    std::size_t epochs;
};
// "fp32:1,fp16:1,int8:2" -> phases. Throws ConfigError naming the bad part.
std::vector<SchedulePhase> parseSchedule(const std::string& text);

// Quantization statistics of every Conv2d/Linear weight in `format` (used by strategies whose
// weights are not integer-quantized during training, to show what the format does to them).
std::vector<LayerStats> weightStatsFor(Model& model, const PrecisionConfig& cfg, const std::string& format,
                                       std::size_t epoch);

} // namespace quantscope
