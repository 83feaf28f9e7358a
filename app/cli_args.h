// A small command-line parser for quantscope-cli: "--flag value", "--flag=value", boolean
// switches, and positional arguments. Bad input throws UsageError with a one-line message.
#pragma once

#include "data/normalization.h"

#include "data/dataset.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace quantscope::cli {

class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Args {
public:
    // valueFlags take a value; switches do not. Anything else starting with "--" is an error.
    Args(const std::vector<std::string>& argv, const std::set<std::string>& valueFlags,
         const std::set<std::string>& switches);

    bool has(const std::string& flag) const { return m_values.count(flag) || m_switches.count(flag); }
    std::string str(const std::string& flag, const std::string& def) const; // the last value given
    // Every value of a repeatable flag, in command-line order.
    std::vector<std::string> all(const std::string& flag) const;
    std::uint64_t u64(const std::string& flag, std::uint64_t def, std::uint64_t min = 0,
                      std::uint64_t max = UINT64_MAX) const;
    double f64(const std::string& flag, double def, double min, double max) const;
    const std::vector<std::string>& positional() const { return m_positional; }

private:
    std::map<std::string, std::string> m_values;
    std::map<std::string, std::vector<std::string>> m_all;
    std::set<std::string> m_switches;
    std::vector<std::string> m_positional;
};

// The dataset flags train and eval share: --data PATH (any layout), --image-shape CxHxW,
// --resize HxW, --test-fraction F. The caller adds limits and the seed.
inline const std::set<std::string> kDatasetFlags = {"--data", "--image-shape", "--resize", "--test-fraction"};
DatasetOptions datasetOptions(const Args& args);
// The dataset flags given that `data` did not use (--image-shape on anything but a CSV,
// --test-fraction where the files give the test set), each named on stderr as "<command>: ..."
// unless quiet.
std::vector<std::string> unusedDatasetFlags(const Args& args, const Dataset& data, const char* command, bool quiet);

// Throws UsageError when the output `flag` names the file of one of `inputs` ({flag or "MODEL",
// path}), an existing file read by the same command: eval --predictions M.qsm replaced the model
// with a CSV, analyze search --plan-out M.qsm with JSON. Paths are compared as files (links,
// "./", hard links), not as text. An input that is a folder (a dataset's) protects every existing
// file under it: eval --predictions DATA/t10k-labels-idx1-ubyte replaced the labels (tester 22).
// An empty `output` is a UsageError too ("--predictions: no file name given").
void checkOutputIsNotAnInput(const std::string& flag, const std::string& output,
                             const std::vector<std::pair<std::string, std::string>>& inputs);

// --threads (default 2, 1 to 1024), at most the machine's hardware threads: a larger value given
// is lowered to that count with a note on stderr ("<command>: --threads 1000 is more than ..."),
// as TBB would run no more workers anyway (its own warning said "limited to 1" on 2 cores).
// Results do not depend on the count (parallel chunks are fixed by the problem size).
std::size_t threadsOption(const Args& args, const char* command);

// A note on stderr (quantscope-cli COMMAND: note: ...) when --normalize maps pixels to values
// beyond 1e4 in magnitude (a standard deviation of 1e-30 typed for 0.3): such inputs make the
// model's outputs overflow or training diverge. Nothing when quiet.
void noteExtremeNormalization(const quantscope::Normalization& n, const char* command, bool quiet);

// Writes j as one line on stdout (the --json event stream). Bytes that are not UTF-8 (a Latin-1
// file name, a damaged ONNX name) become U+FFFD instead of aborting the dump.
// One JSON object on a line of its own, to `out` (standard output unless a command writes data there).
void printJsonLine(const nlohmann::json& j, std::FILE* out = stdout);

} // namespace quantscope::cli
