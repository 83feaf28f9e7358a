// Mixed-bit search: per-layer weight formats chosen under an accuracy budget (the largest drop
// against FP32 on a validation split) or a size budget (bytes), in the manner of AIMET's AMP and
// HAWQ-style greedy allocation: every layer starts at the widest candidate; the candidate moves
// (one layer to a cheaper format/calibration) are ranked by the accuracy each costs alone
// (one-layer-at-a-time sensitivity) per byte it saves, and each move is verified by evaluating the
// whole plan. Every evaluated plan is kept with its size and accuracy; the size/accuracy Pareto
// front and the uniform plans (every layer at one format) come with the report.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"
#include "quant/precision_plan.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

struct MixedSearchOptions {
    std::vector<std::string> formats{"int8", "int4", "int3", "int2"}; // candidate weight formats
    std::vector<std::string> calibrations{"minmax"};                  // candidate weight calibrations
    std::string granularity = "channel";
    std::string activationFormat = "uint8";
    std::string activationCalibration = "minmax"; // recorded in the plans, as PlanEvaluator calibrates them
    std::size_t calibImages = 1000;
    std::size_t batchSize = 500;
    std::optional<double> maxDropPoints;    // accuracy budget: FP32 minus plan, in points
    std::optional<std::uint64_t> maxBytes;  // size budget (plan_size bytes)
    std::size_t maxEvaluations = 80;        // plans evaluated on the validation set, in all
};

// Whether `accuracy` is at most `budgetPoints` below `fp32Accuracy` (fractions in [0, 1], the
// budget in points): a drop of exactly the budget is within it, whatever the rounding of
// 100 (a - b) (80.80 % against 79.80 % gave 1.0000000000000009 and was refused at --max-drop 1).
inline bool withinDropBudget(double fp32Accuracy, double accuracy, double budgetPoints)
{
    return 100.0 * (fp32Accuracy - accuracy) <= budgetPoints + 1e-9;
}

struct EvaluatedPlan {
    PrecisionPlan plan;
    std::string label;          // "uniform int4 (mse)", "greedy step 3: fc1 int2 (minmax)"
    std::uint64_t bytes = 0;
    double bitsPerWeight = 0.0;
    double accuracy = 0.0;      // validation
    bool uniform = false;
    bool onFront = false;       // no other plan is at most as large and at least as accurate (one strictly)
    bool overBudget = false;    // under an accuracy budget (maxDropPoints): below it, whatever made the plan
                                // (a uniform plan, or a greedy move, which is then not taken and the next
                                // step starts again from the plan before it)
    bool overBytes = false;     // under a size budget (maxBytes): larger than it
};

struct MixedSearchReport {
    double fp32Accuracy = 0.0;
    std::size_t images = 0;
    std::vector<EvaluatedPlan> plans;
    long chosen = -1;           // index into plans: the smallest within the accuracy budget, or the most
                                // accurate within the size budget; -1 when none meets the budget
    std::size_t evaluations = 0;            // whole plans evaluated (bounded by maxEvaluations)
    std::size_t sensitivityEvaluations = 0; // one-layer plans behind the ranking: layers x candidates
    bool stopped = false;       // the progress callback asked to stop: the plans are those evaluated so far
    bool budgetExhausted = false; // maxEvaluations refused a plan the search went on to: it ended early
    double seconds = 0.0;
    // The smallest plan the candidates allow (each layer at its smallest option), bytes as
    // planSize counts them, and whether --max-bytes is below it: then nothing is evaluated (no
    // plan, chosen -1), since no plan could meet the budget.
    std::uint64_t smallestBytes = 0;
    bool budgetBelowSmallest = false;
};

// What the search is doing when it reports: the uniform plans and the greedy steps count whole
// plans against the evaluation budget (done = plans evaluated, total = maxEvaluations); the
// ranking counts one-layer evaluations (done of total = layers x candidates).
enum class SearchPhase { Uniform, Ranking, Greedy };
// Called before every evaluation (and once more at the end of a phase); returning false stops
// the search within one evaluation (the report then holds the plans evaluated so far, their
// front and the best of them, and stopped = true).
using SearchProgress = std::function<bool(SearchPhase phase, std::size_t done, std::size_t total)>;

// Throws ConfigError without a budget, with both, for unknown formats/calibrations or an empty
// validation set, before evaluating anything. A --max-bytes below the smallest plan the candidates
// allow returns at once (budgetBelowSmallest, no plan evaluated). `model` is FP32 and left so.
MixedSearchReport searchMixedPrecision(Model& model, const Dataset& data, const LabeledImages& validation,
                                       const MixedSearchOptions& opt, const SearchProgress& progress = {});

} // namespace quantscope
