// quantscope-cli train's reports (cli_train_report.cpp): what a run prints as it goes.
#pragma once

#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace quantscope {
class PtqRefiner;
}

namespace quantscope::cli {

// The observer of a `train` run: a progress bar on a terminal (progress), one line per epoch and a
// done line, or with `json` JSON Lines ({"event":"start"|"batch"|"epoch"|"layer_stats"|"done",...});
// the start event carries `plan` (PTQ/QAT's plan JSON), `ignored` (options the run does not use)
// and every field of `startExtra` (normalisation, data, test split, the model file's notes).
std::unique_ptr<TrainObserver> makeCliObserver(bool json, bool progress, nlohmann::json plan, std::vector<std::string> ignored,
                                               nlohmann::json startExtra);
// PTQ's refinements (AdaRound, CLE, bias correction): what each did, as text or one JSON line.
void printRefineReport(const PtqRefiner& r, bool json);

} // namespace quantscope::cli
