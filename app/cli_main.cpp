// quantscope-cli: the headless entry point. Dispatches subcommands and maps errors to exit codes.
#include "cli_args.h"
#include "cli_commands.h"
#include "infer/isa.h"
#include "util/memory.h"

#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

namespace {

const char* const kHelp =
    "QuantScope command line: low-precision training and quantization of neural networks.\n"
    "\n"
    "usage: quantscope-cli <command> [options]\n"
    "\n"
    "commands:\n"
    "  train    train a preset or a model file (.onnx, .qsm) on a dataset (IDX, CIFAR, CSV, image\n"
    "           folders) with a precision strategy, and export it (see 'quantscope-cli train --help')\n"
    "  eval     run an exported .qsm/.onnx model on the test set (see 'quantscope-cli eval --help')\n"
    "  info     layers, shapes, parameters, MACs and sizes of a model (see 'quantscope-cli info --help')\n"
    "  analyze  compare (where a quantized model's error comes from, layer by layer), sensitivity\n"
    "           (one layer quantized at a time) and search (mixed-bit plans under an accuracy or\n"
    "           size budget) (see 'quantscope-cli analyze --help')\n"
    "\n"
    "exit codes: 0 ok, 2 usage or configuration error (options, or a model or data that QuantScope\n"
    "does not take, such as an unsupported operator), 3 data or I/O error (missing, truncated or corrupt\n"
    "files), 4 training diverged, 5 no result (analyze search: no evaluated plan meets the budget),\n"
    "130 stopped by Ctrl+C, 143 by SIGTERM (train, analyze), 1 internal error\n";

// What main's command returned, unless standard output could not take what it printed (a full
// disk behind `> file`, /dev/full): a result the user never sees is an I/O error (exit 3).
int checkedStdout(const std::string& cmd, int rc)
{
    errno = 0;
    const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout);
    if (!failed) return rc;
    const int e = errno;
    std::fprintf(stderr, "quantscope-cli %s: write failed: standard output: %s\n", cmd.c_str(),
                 e == ENOSPC ? "the disk is full" : e ? std::strerror(e) : "an earlier write was lost");
    return rc == quantscope::cli::kExitOk ? quantscope::cli::kExitData : rc;
}

int runCommand(const std::string& cmd, std::vector<std::string>& args)
{
    using namespace quantscope::cli;
    try {
        if (cmd == "train") return runTrain(args);
        if (cmd == "eval") return runEval(args);
        if (cmd == "info") return runInfo(args);
        if (cmd == "analyze") return runAnalyze(args);
        std::fprintf(stderr, "quantscope-cli: unknown command '%s' (see --help)\n", cmd.c_str());
        return kExitUsage;
    } catch (...) {
        return reportCurrentError(cmd, std::find(args.begin(), args.end(), "--json") != args.end());
    }
}

} // namespace

namespace quantscope::cli {

// An error ends the command: its message on stderr and, under --json, an "error" event on stdout,
// so a JSON log does not end at its start event (a diverged run wrote nothing more).
int reportCurrentError(const std::string& cmd, bool json)
{
    const char* type = "internal";
    std::string message;
    int code = kExitInternal;
    try {
        throw;
    } catch (const UsageError& e) {
        type = "usage", message = e.what(), code = kExitUsage;
    } catch (const ConfigError& e) {
        type = "config", message = e.what(), code = kExitUsage;
    } catch (const IoError& e) {
        type = "io", message = e.what(), code = kExitData;
    } catch (const FormatError& e) {
        type = "format", message = e.what(), code = kExitData;
    } catch (const NumericError& e) {
        type = "numeric", message = e.what(), code = kExitNumeric;
    } catch (const NoResultError& e) {
        type = "no_result", message = e.what(), code = kExitNoResult;
    } catch (const std::bad_alloc&) {
        type = "memory", message = "out of memory", code = kExitInternal;
    } catch (const std::exception& e) {
        message = e.what(); // core's own internal errors say so already
        if (message.rfind("internal error", 0) != 0) message = "internal error: " + message;
    } catch (...) {
        message = "internal error: an unknown exception";
    }
    std::fprintf(stderr, "quantscope-cli %s: %s\n", cmd.c_str(), message.c_str());
    if (json) printJsonLine({{"event", "error"}, {"type", type}, {"message", message}, {"exit_code", code}});
    return code;
}

} // namespace quantscope::cli

int main(int argc, char** argv)
{
    using namespace quantscope::cli;
    quantscope::keepTrainingBuffersInHeap();
    // A file past the size limit (ulimit -f) fails its write with EFBIG, which every writer reports
    // and cleans up after, instead of SIGXFSZ killing the process silently with its temporary file.
    std::signal(SIGXFSZ, SIG_IGN);
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        std::fputs(kHelp, args.empty() ? stderr : stdout);
        return checkedStdout("help", args.empty() ? kExitUsage : kExitOk);
    }
    if (args[0] == "--version") {
        // The build's commit (when built from a git checkout) and the kernels this CPU runs: the
        // facts a bug report or a benchmark figure needs.
        const std::string commit = QS_COMMIT;
        std::printf("quantscope-cli %s%s\n", QS_VERSION, commit.empty() ? "" : (" (commit " + commit + ")").c_str());
        std::printf("kernels on this CPU: %s\n", quantscope::kernelSummary().c_str()); // an override it cannot run is named
        return checkedStdout("--version", kExitOk);
    }
    const std::string cmd = args[0];
    args.erase(args.begin());
    return checkedStdout(cmd, runCommand(cmd, args));
}
