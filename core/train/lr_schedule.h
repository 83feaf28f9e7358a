// Learning-rate schedules over a training run, applied per optimizer step by the Trainer.
//   constant  lr_t = lr (the learning rate never changes)
//   cosine    lr_t = lr * (1 + cos(pi * t / T)) / 2, t = 0 .. T-1 the step index over the whole
//             run (T = epochs * steps per epoch): cosine annealing to 0 without restarts
//             (Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
//             ICLR 2017, eq. 5 with eta_min = 0 and one period T_i = T). The first step uses lr;
//             the value 0 would be reached at t = T, one step after the run. PyTorch's
//             CosineAnnealingLR(T_max = T, eta_min = 0) stepped after every optimizer step gives
//             the same values (the schedule the LSQ paper trains with).
#pragma once

#include <cstddef>
#include <string>

namespace quantscope {

enum class LrSchedule { Constant, Cosine };

// "constant" | "cosine"; throws ConfigError listing them.
LrSchedule parseLrSchedule(const std::string& name);
const char* lrScheduleName(LrSchedule s);

// The learning rate of step `step` (0-based) of a run of `totalSteps` optimizer steps, starting
// from `baseLr`. Steps at or past the end (step >= totalSteps) give the end value (0 for cosine).
// Computed in double, rounded once to float.
float scheduledLearningRate(LrSchedule s, float baseLr, std::size_t step, std::size_t totalSteps);

} // namespace quantscope
