// quantscope-cli: the headless entry point. Dispatches subcommands and maps errors to exit codes.
#include "cli_args.h"
#include "cli_commands.h"
#include "util/memory.h"

#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
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
    "130 stopped by Ctrl+C (train, analyze), 1 internal error\n";

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

// An error ends the command: its message on stderr and, under --json, an "error" event on stdout,
// so a JSON log does not end at its start event (a diverged run wrote nothing more).
int failed(const std::string& cmd, const std::vector<std::string>& args, const char* type, const std::string& message, int code)
{
    std::fprintf(stderr, "quantscope-cli %s: %s\n", cmd.c_str(), message.c_str());
    if (std::find(args.begin(), args.end(), "--json") != args.end()) {
        const nlohmann::json j = {{"event", "error"}, {"type", type}, {"message", message}, {"exit_code", code}};
        quantscope::cli::printJsonLine(j);
    }
    return code;
}

int runCommand(const std::string& cmd, std::vector<std::string>& args)
{
    using namespace quantscope;
    using namespace quantscope::cli;
    try {
        if (cmd == "train") return runTrain(args);
        if (cmd == "eval") return runEval(args);
        if (cmd == "info") return runInfo(args);
        if (cmd == "analyze") return runAnalyze(args);
        std::fprintf(stderr, "quantscope-cli: unknown command '%s' (see --help)\n", cmd.c_str());
        return kExitUsage;
    } catch (const UsageError& e) {
        return failed(cmd, args, "usage", e.what(), kExitUsage);
    } catch (const ConfigError& e) {
        return failed(cmd, args, "config", e.what(), kExitUsage);
    } catch (const IoError& e) {
        return failed(cmd, args, "io", e.what(), kExitData);
    } catch (const FormatError& e) {
        return failed(cmd, args, "format", e.what(), kExitData);
    } catch (const NumericError& e) {
        return failed(cmd, args, "numeric", e.what(), kExitNumeric);
    } catch (const std::bad_alloc&) {
        return failed(cmd, args, "memory", "out of memory", kExitInternal);
    } catch (const std::exception& e) {
        return failed(cmd, args, "internal", std::string("internal error: ") + e.what(), kExitInternal);
    }
}

} // namespace

int main(int argc, char** argv)
{
    using namespace quantscope::cli;
    quantscope::keepTrainingBuffersInHeap();
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        std::fputs(kHelp, args.empty() ? stderr : stdout);
        return checkedStdout("help", args.empty() ? kExitUsage : kExitOk);
    }
    if (args[0] == "--version") {
        std::puts("quantscope-cli " QS_VERSION);
        return checkedStdout("--version", kExitOk);
    }
    const std::string cmd = args[0];
    args.erase(args.begin());
    return checkedStdout(cmd, runCommand(cmd, args));
}
