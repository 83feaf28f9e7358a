// quantscope-cli subcommands. Each returns the process exit code:
// 0 success, 2 usage error, 3 data or I/O error, 4 numeric failure, 5 no result, 1 internal error.
#pragma once

#include "util/errors.h"

#include <string>
#include <vector>

namespace quantscope {
struct ExportSummary;
struct PrecisionConfig;
}

namespace quantscope::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitData = 3;
inline constexpr int kExitNumeric = 4;
inline constexpr int kExitNoResult = 5; // the command ran, and nothing met its budget (analyze search)

// The command ran and nothing met its budget (analyze search): exit 5, reported as an error is
// (reportCurrentError, type "no_result"), after the command has printed what it measured.
class NoResultError : public quantscope::Error {
public:
    using Error::Error;
};

// An error that ends a command (or one of its outputs, as a failed `train --export` file), as
// the command reports it: its message on stderr ("quantscope-cli CMD: message") and, under
// --json, an {"event":"error","type","message","exit_code"} line on stdout. Call inside a catch
// block: the exception in flight gives the type and the exit code (UsageError and ConfigError 2,
// IoError and FormatError 3, NumericError 4, NoResultError 5, std::bad_alloc and anything else 1).
// Returns the exit code.
int reportCurrentError(const std::string& cmd, bool json);

int runTrain(const std::vector<std::string>& args);
extern const char* const kTrainHelp;

int runEval(const std::vector<std::string>& args);
extern const char* const kEvalHelp;

int runInfo(const std::vector<std::string>& args);

class Args;
// --plan, --layer, --keep-fp32 into pc.layers (cli_train.cpp); the plan file's default gives the
// whole-model options (--format, --granularity, --calibration, --act-format) not given explicitly.
void applyPlanFlags(const Args& args, PrecisionConfig& pc);
// A layer both given a format (--layer) and kept FP32 (--keep-fp32) is a contradiction, not an
// order of precedence (--keep-fp32 used to win in silence): throws UsageError naming it.
void checkLayerFlagsAgree(const Args& args);

int runAnalyze(const std::vector<std::string>& args);
extern const char* const kAnalyzeHelp;
extern const char* const kInfoHelp;
// What `train --export` wrote: a line of text, or {"event":"export",...} with --json.
void printExportSummary(const ExportSummary& s, bool json);

} // namespace quantscope::cli
