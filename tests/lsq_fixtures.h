// Shared by tst_lsq_steps, tst_lsq_training and tst_lsq_grids: random vectors, a train observer
// that records losses and step sizes, the QAT configuration of their runs, and the integer
// engine's argmax agreement with the fake-quant simulation.
#pragma once

#include "data/dataset.h"
#include "infer/int_engine.h"
#include "io/exported_model.h"
#include "nn/model.h"
#include "train/events.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/rng.h"

#include <cstdint>
#include <string>
#include <vector>

namespace fixtures {

using namespace quantscope;

// Exported integer models agree with the fake-quant simulation on at least this share of argmaxes
// (the rest: ties at a rounding edge, as in tst_infer).
inline constexpr double kMinArgmaxAgreement = 0.99;

inline std::vector<float> randomVector(std::size_t n, float scale, std::uint64_t seed)
{
    Rng rng(seed);
    std::vector<float> v(n);
    for (float& x : v) x = scale * (static_cast<float>(rng.uniform()) * 2.0f - 1.0f);
    return v;
}

// Records losses and step sizes.
class StepRecorder : public TrainObserver {
public:
    std::vector<double> losses;
    std::vector<StepSizeEvent> steps;
    std::vector<EpochEvent> epochs;
    void onBatch(const BatchEvent& e) override { losses.push_back(e.loss); }
    void onStepSizes(const StepSizeEvent& e) override { steps.push_back(e); }
    void onEpoch(const EpochEvent& e) override { epochs.push_back(e); }
};

// Argmax agreement of the integer engine with the simulation on the test set.
inline double engineAgreement(Model& model, QuantSim& sim, const ExportedModel& em, const Dataset& data, double* engineAcc = nullptr)
{
    std::vector<std::int32_t> simPred;
    evaluate(model, data, data.test, 500, &sim, &simPred);
    IntEngine engine(em);
    std::vector<std::int32_t> pred(data.test.size(), -1);
    engine.run(data.test.pixels.data(), data.test.size(), nullptr, pred.data());
    std::size_t same = 0, correct = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) {
        same += pred[i] == simPred[i];
        correct += pred[i] == data.test.labels[i];
    }
    if (engineAcc) *engineAcc = static_cast<double>(correct) / static_cast<double>(pred.size());
    return static_cast<double>(same) / static_cast<double>(pred.size());
}

inline TrainConfig qatConfig(const std::string& format, const std::string& quantizer, std::size_t epochs)
{
    TrainConfig cfg;
    cfg.model = "seed-cnn";
    cfg.epochs = epochs;
    cfg.threads = 2;
    cfg.batchSize = 32;
    cfg.precision.strategy = Strategy::Qat;
    cfg.precision.format = format;
    cfg.precision.granularity = "channel";
    cfg.precision.quantizer = quantizer;
    return cfg;
}

} // namespace fixtures
