// Evaluates precision plans by post-training quantization on a validation set: the shared step of
// sensitivity analysis and the mixed-bit search. The FP32 outputs are computed once.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"
#include "quant/precision_plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

class PlanEvaluator {
public:
    // `model` is FP32 and stays so between evaluations (weights restored after each). Runs in the
    // caller's task_arena; the integer engine (analysis/engine_eval.h) with `threads` threads
    // (0: as many as the caller's arena has).
    PlanEvaluator(Model& model, const Dataset& data, const LabeledImages& validation, std::size_t calibImages,
                  std::size_t batchSize, std::size_t threads = 0);

    struct Result {
        double accuracy = 0.0;      // top-1 on the validation images, [0, 1]
        std::vector<float> logits;  // images x classes, the model's outputs
    };
    // PTQ under `plan` (weights rounded to nearest, activation ranges min-max on the first
    // calibImages training images), then the validation set through the integer engine when it
    // can run the plan, else the fake-quant model (lastRunner() says which).
    // Throws ConfigError for a plan the model cannot take.
    Result run(const PrecisionPlan& plan);
    double accuracy(const PrecisionPlan& plan) { return run(plan).accuracy; }

    double fp32Accuracy() const { return m_fp32.accuracy; }
    const std::vector<float>& fp32Logits() const { return m_fp32.logits; }
    std::size_t classes() const { return m_classes; }
    const std::string& lastRunner() const { return m_lastRunner; }

private:
    Result runWith(LayerHooks* hooks);

    Model& m_model;
    const Dataset& m_data;
    const LabeledImages& m_set;
    std::size_t m_calibImages, m_batch, m_threads, m_classes = 0;
    std::string m_lastRunner;
    Result m_fp32;
};

} // namespace quantscope
