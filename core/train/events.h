// Plain-struct payloads the Trainer reports to its observer, and the stop/pause token.
// No pointers into live tensors: an observer on another thread can keep them.
#pragma once

#include "quant/layer_stats.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace quantscope {

inline constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

struct StartEvent {
    std::string model;
    std::size_t parameters = 0;
    std::size_t epochs = 0;
    std::size_t stepsPerEpoch = 0;
    std::size_t trainImages = 0, testImages = 0;
    std::size_t threads = 0;
    std::string compute = "fp32"; // what computes the products (PrecisionStrategy::computePath)
    std::string optimizer;        // "adam" | "sgd"
    double lr = 0.0;              // the base learning rate
    std::string lrSchedule;       // "constant" | "cosine" (train/lr_schedule.h)
};

struct BatchEvent {
    std::size_t epoch = 0;          // 1-based
    std::size_t step = 0;           // 1-based within the epoch
    std::size_t stepsPerEpoch = 0;
    std::size_t globalStep = 0;     // 1-based over the run
    double loss = 0.0;              // this batch's mean loss
    double accuracy = 0.0;          // this batch's accuracy, 0..1
    double imagesPerSecond = 0.0;   // over the epoch so far
    double lossScale = kNoValue;    // mixed precision only
    bool skipped = false;           // the optimizer step was skipped (overflow)
    double elapsedSeconds = 0.0;    // since the run started
};

struct EpochEvent {
    std::size_t epoch = 0;          // 1-based
    std::size_t epochs = 0;
    double trainLoss = 0.0, trainAccuracy = 0.0;
    double testLoss = 0.0, testAccuracy = 0.0;
    double validationAccuracy = kNoValue;
    double quantTestAccuracy = kNoValue; // accuracy of the quantized model, where there is one
    double imagesPerSecond = 0.0;        // training images/s of this epoch's training loop
    double seconds = 0.0;                // this epoch's training loop
    std::string phase;                   // precision in force this epoch ("fp32", "int8"...)
    double lossScale = kNoValue;         // dynamic loss scale at the epoch's end (mixed precision)
    std::size_t skippedSteps = 0;        // optimizer steps skipped on overflow so far
    double peakRssMb = 0.0;              // the process's peak resident memory so far, MiB
    std::string quantRunner;             // what computed quantTestAccuracy ("integer engine (...)", "fake-quant")
    double lr = kNoValue;                // the learning rate of the epoch's last optimizer step
    // QAT with --bn-reestimate: the quantized accuracy before the BatchNorm statistics were
    // re-estimated (on the running averages training kept); quantTestAccuracy is after it.
    double quantTestAccuracyBeforeBnReestimation = kNoValue;
};

struct FinishEvent {
    bool stopped = false;          // stopped by the user before the end
    std::size_t epochsDone = 0;
    double testAccuracy = kNoValue;
    double quantTestAccuracy = kNoValue;
    double testLoss = kNoValue;
    double seconds = 0.0;
    double imagesPerSecond = 0.0;  // mean over epochs
    std::size_t skippedSteps = 0;  // optimizer steps skipped on overflow (loss scaling)
    double finalLossScale = kNoValue;
    double peakRssMb = 0.0;        // the process's peak resident memory, MiB (util/memory.h)
};

// LSQ (quant/lsq.h): one learned quantizer's step size at one moment of training.
struct StepSizeTrack {
    std::string layer;          // the Conv2d/Linear (weights) or the layer whose output is quantized
    std::string tensor;         // "weight" or "activation"
    double step = 0.0;          // per tensor: the step; per channel/group: the mean over slots
    double stepMin = 0.0, stepMax = 0.0; // over slots (= step per tensor)
    double offset = kNoValue;   // LSQ+ activations: the learned offset beta (= -zero point * step)
};
struct StepSizeEvent {
    std::size_t epoch = 0;      // 1-based
    std::size_t globalStep = 0; // 1-based over the run (after that optimizer step)
    std::vector<StepSizeTrack> steps;
};

// PTQ refinement progress (AdaRound, bias correction), between the epoch's evaluations.
struct PtqProgressEvent {
    std::string stage;              // "adaround", "bias-correction"
    std::string layer;              // the layer being refined
    std::size_t layerIndex = 0;     // 1-based among the refined layers
    std::size_t layers = 0;
    std::size_t iteration = 0;      // AdaRound: iterations done on this layer
    std::size_t iterations = 0;
    double loss = kNoValue;         // AdaRound: mean reconstruction loss over the last iterations
    double elapsedSeconds = 0.0;    // since the refinement started
};

class TrainObserver {
public:
    virtual ~TrainObserver() = default;
    virtual void onStart(const StartEvent&) {}
    virtual void onBatch(const BatchEvent&) {}
    virtual void onEpoch(const EpochEvent&) {}
    // After each epoch, for strategies that quantize weights: one entry per quantized tensor.
    virtual void onLayerStats(const std::vector<LayerStats>&) {}
    // Learned quantizers (QAT with --quantizer lsq): about 20 times per epoch and at its end.
    virtual void onStepSizes(const StepSizeEvent&) {}
    virtual void onPtqProgress(const PtqProgressEvent&) {}
    virtual void onFinish(const FinishEvent&) {}
};

// Checked by the Trainer between batches.
class StopToken {
public:
    void requestStop() { m_stop.store(true, std::memory_order_relaxed); }
    bool stopRequested() const { return m_stop.load(std::memory_order_relaxed); }
    void setPaused(bool p) { m_pause.store(p, std::memory_order_relaxed); }
    bool paused() const { return m_pause.load(std::memory_order_relaxed); }
    void reset()
    {
        m_stop = false;
        m_pause = false;
    }

private:
    std::atomic<bool> m_stop{false};
    std::atomic<bool> m_pause{false};
};

} // namespace quantscope
