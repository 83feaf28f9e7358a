// Trainer: runs epochs of minibatch training on a Dataset inside a TBB task_arena capped at
// config.threads, reports to a TrainObserver, and honours a StopToken between batches.
// Deterministic for a given seed (the chunking of all parallel work is thread-count free).
#pragma once

#include "data/dataset.h"
#include "nn/model.h"
#include "nn/model_zoo.h"
#include "train/events.h"
#include "train/optimizer.h"
#include "train/precision_config.h"
#include "train/strategy.h"

#include <memory>
#include <string>

namespace quantscope {

struct TrainConfig {
    std::string model = "seed-cnn";
    std::size_t epochs = 1;
    std::size_t batchSize = 64;
    std::string optimizer = "adam"; // "adam" | "sgd"
    float lr = 1e-3f;
    // How the learning rate moves over the run, per optimizer step (train/lr_schedule.h):
    // "constant" (lr throughout) or "cosine" (from lr down to 0 over epochs * steps per epoch).
    std::string lrSchedule = "constant";
    float momentum = 0.0f;          // sgd
    bool nesterov = false;          // sgd
    bool amsgrad = false;           // adam (AdamOptions::amsgrad)
    float weightDecay = 0.0f;
    std::size_t threads = 2;
    std::uint64_t seed = 1;
    std::size_t evalBatchSize = 500;
    // Strategies with dynamic loss scaling skip a step whose gradients overflow. After this many
    // consecutive skipped steps the run stops with NumericError "training diverged: non-finite
    // gradients for N steps" (CLI exit 4). 0 = never stop.
    std::size_t maxSkippedSteps = 50;
    PrecisionConfig precision;
    // Builds the model instead of the preset `model` names (an imported ONNX model, a saved
    // .qsm, a preset with saved weights: io/model_source.h). `model` then names it in exports.
    ModelFactory modelFactory;
    // The factory's model starts trained: epochs may be 0 (evaluate and, for PTQ, calibrate only).
    bool pretrained = false;
    // Informative, for reports and saved runs: the model file the factory reads (--model FILE or
    // --init FILE), and whether its weights were re-initialised (--reinit). The CLI and the GUI
    // build modelFactory from them.
    std::string modelFile;
    bool reinitModel = false;
    // Runs the quantized evaluations (each epoch's, PTQ's calibrated model) on integer kernels
    // where it can (analysis/engine_eval.h); empty: the fake-quant float model.
    QuantizedEvaluator quantizedEvaluator;
    // Informative, for reports and saved runs, as modelFile: "engine" (the CLI and the GUI set
    // quantizedEvaluator to engineEvaluator) or "fake-quant" (they leave it empty); --quant-eval.
    std::string quantEval = "engine";

    // Throws ConfigError naming the first bad field.
    void validate() const;
    // Progressive: sets epochs to the schedule's total.
    void epochsFromSchedule();
};

struct EvalResult {
    double loss = 0.0;
    double accuracy = 0.0;
    std::size_t count = 0;
};

// Bytes a training run of `model` holds, roughly: 16 per parameter (value, gradient and two Adam
// moments in FP32) and 16 per activation value of a batch (the value, its gradient and the
// kernels' scratch: resnet8 on one 1x1024x1024 image peaked at 4.3 GB, against 4.2 GB estimated).
std::uint64_t trainingFootprintBytes(Model& model, std::size_t batchSize);
// Throws ConfigError naming the model, its input shape, the need and `physicalBytes` when the
// footprint exceeds 80 % of physicalBytes (0: unknown, no check). The Trainer checks it before
// allocating the optimizer, so an image far too large for a preset is an error, not an OOM kill.
void checkTrainingFootprint(Model& model, std::size_t batchSize, unsigned long long physicalBytes);

// Evaluates `model` (eval mode) on `set`; optional hooks (e.g. fake-quant) apply to every layer.
// When predictions is non-null it receives the argmax class of every image.
EvalResult evaluate(Model& model, const Dataset& data, const LabeledImages& set, std::size_t batchSize,
                    LayerHooks* hooks = nullptr, std::vector<std::int32_t>* predictions = nullptr);

// BatchNorm re-estimation (Nagel et al., "Overcoming Oscillations in Quantization-Aware
// Training", ICML 2022; AIMET's reestimate_bn_stats): runs the first `batches` batches of
// `batchSize` images of `set` (in stored order; fewer when the set is shorter) through `model`
// under `hooks` in evaluation mode, every BatchNorm2d normalising with its batch statistics, and
// replaces each BatchNorm2d's running mean and variance by the average over those batches of
// the batch mean and the unbiased batch variance (BatchNorm2d::beginReestimation). No parameter
// changes. Returns the number of BatchNorm2d layers re-estimated (0: the model has none, or
// `batches` or the set is empty, and nothing changes).
std::size_t reestimateBatchNorm(Model& model, const Dataset& data, const LabeledImages& set, std::size_t batches,
                                std::size_t batchSize, LayerHooks* hooks = nullptr);

std::unique_ptr<Optimizer> makeOptimizer(const TrainConfig& cfg);

class Trainer {
public:
    Trainer(TrainConfig cfg, const Dataset& data, TrainObserver* observer = nullptr, StopToken* stop = nullptr);
    ~Trainer();

    // Runs the whole schedule; returns what the finish event carries.
    FinishEvent run();
    Model& model() { return *m_model; }
    PrecisionStrategy& strategy() { return *m_strategy; }
    const Dataset& data() const { return m_data; }
    const TrainConfig& config() const { return m_cfg; }

private:
    FinishEvent runInArena();
    void endOfEpoch(EpochEvent& ee, FinishEvent& fin);
    bool waitWhilePaused();
    double m_pausedSeconds = 0.0; // time spent paused, left out of every reported duration

    TrainConfig m_cfg;
    const Dataset& m_data;
    TrainObserver* m_observer;
    StopToken* m_stop;
    std::unique_ptr<Model> m_model;
    std::unique_ptr<Optimizer> m_opt;
    std::unique_ptr<PrecisionStrategy> m_strategy;
};

} // namespace quantscope
