#include "train/lr_schedule.h"

#include "util/errors.h"

#include <cmath>
#include <numbers>

namespace quantscope {

LrSchedule parseLrSchedule(const std::string& name)
{
    if (name == "constant") return LrSchedule::Constant;
    if (name == "cosine") return LrSchedule::Cosine;
    throw ConfigError("unknown learning-rate schedule '" + name + "' (known: constant, cosine)");
}

const char* lrScheduleName(LrSchedule s) { return s == LrSchedule::Cosine ? "cosine" : "constant"; }

// cosine: lr (1 + cos(pi t / T)) / 2
float scheduledLearningRate(LrSchedule s, float baseLr, std::size_t step, std::size_t totalSteps)
{
    if (s == LrSchedule::Constant) return baseLr;
    if (totalSteps == 0 || step >= totalSteps) return 0.0f;
    const double phase = std::numbers::pi * static_cast<double>(step) / static_cast<double>(totalSteps);
    return static_cast<float>(static_cast<double>(baseLr) * 0.5 * (1.0 + std::cos(phase)));
}

} // namespace quantscope
