// What the analyze commands share (cli_analyze.cpp): the dataset and model they read, and the
// number formatting of their tables. runCompare lives in cli_analyze.cpp, runSensitivity and
// runSearch in cli_analyze_search.cpp; runAnalyze (cli_commands.h) picks one.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace quantscope::cli {

class Args;

struct AnalysisInput {
    Dataset data;
    std::unique_ptr<Model> model;
    std::string name; // the file's stem, or the preset's name
    bool statisticsNormalised = false; // a model file storing no normalisation: the training images' statistics
};

// v, or JSON null where it is not finite (an SQNR of +inf: the quantized output is exact).
nlohmann::json finite(double v);
// v in dB, 6 wide with one decimal ("   inf" for +inf).
std::string db(double v);
// The dataset flags every analysis shares. --train-limit N limits the training set first and
// holds the validation images out of those N (DatasetOptions::validationAfterLimit), as the GUI's
// Analysis tab holds them out of a run's limited training set, so its results can be repeated here.
DatasetOptions analysisDatasetOptions(const Args& args);
// Sensitivity's and search's held-out images (dopt.validation): --validation N, else 5000, or half
// of the training images when those are 5000 or fewer (DatasetOptions::validationHalvesFewImages).
void setAnalysisValidation(const Args& args, DatasetOptions& dopt);
// The dataset of `dopt` and the model `spec` for its images: an FP32 model file (whose stored
// normalisation the data takes, unless --normalize gives one) or a freshly initialised preset.
// Throws as Dataset::load and readModelFile do (IoError, FormatError, ConfigError), UsageError for
// a model file under a name that is not one. A file that stores no normalisation takes
// `planNormalization` (a --plan's "normalize", which the plan `planSource` was measured with) when
// --normalize is not given, as train --plan does; ConfigError naming the plan if it does not fit.
AnalysisInput loadAnalysisInput(const Args& args, const std::string& spec, const DatasetOptions& dopt, bool json,
                                const std::string& planNormalization = "", const std::string& planSource = "");

int runCompare(const Args& args);
int runSensitivity(const Args& args); // cli_analyze_search.cpp
int runSearch(const Args& args);      // cli_analyze_search.cpp

} // namespace quantscope::cli
