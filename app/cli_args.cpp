#include "cli_args.h"

#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <limits>

namespace quantscope::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& valueFlags,
           const std::set<std::string>& switches)
{
    for (std::size_t i = 0; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if (a.rfind("--", 0) != 0 || a == "--") {
            m_positional.push_back(a);
            continue;
        }
        std::string flag = a, value;
        bool inlineValue = false;
        if (const auto eq = a.find('='); eq != std::string::npos) {
            flag = a.substr(0, eq);
            value = a.substr(eq + 1);
            inlineValue = true;
        }
        if (switches.count(flag)) {
            if (inlineValue) throw UsageError(flag + " takes no value");
            m_switches.insert(flag);
        } else if (valueFlags.count(flag)) {
            if (!inlineValue) {
                if (i + 1 >= argv.size()) throw UsageError(flag + " needs a value");
                // "--epochs --threads 1": the value was left out and the next option taken for it,
                // which then failed as "unexpected argument '1'", naming neither flag.
                const std::string& next = argv[i + 1];
                const std::string nextFlag = next.substr(0, next.find('='));
                if (next.rfind("--", 0) == 0 && (valueFlags.count(nextFlag) || switches.count(nextFlag)))
                    throw UsageError(flag + " needs a value, but the next argument is the option " + nextFlag);
                value = argv[++i];
            }
            m_values[flag] = value;
            m_all[flag].push_back(value);
        } else {
            throw UsageError("unknown option " + flag + " (see --help)");
        }
    }
}

std::string Args::str(const std::string& flag, const std::string& def) const
{
    const auto it = m_values.find(flag);
    return it == m_values.end() ? def : it->second;
}

std::vector<std::string> Args::all(const std::string& flag) const
{
    const auto it = m_all.find(flag);
    return it == m_all.end() ? std::vector<std::string>{} : it->second;
}

std::size_t threadsOption(const Args& args, const char* command)
{
    const std::size_t asked = args.u64("--threads", 2, 1, 1024);
    const std::size_t hardware = std::thread::hardware_concurrency();
    if (hardware == 0 || asked <= hardware) return asked;
    if (args.has("--threads"))
        std::fprintf(stderr, "quantscope-cli %s: --threads %zu is more than this machine's %zu hardware threads: using %zu\n", command,
                     asked, hardware, hardware);
    return hardware;
}

std::uint64_t Args::u64(const std::string& flag, std::uint64_t def, std::uint64_t min, std::uint64_t max) const
{
    const auto it = m_values.find(flag);
    if (it == m_values.end()) return def;
    const std::string& s = it->second;
    errno = 0;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE)
        throw UsageError(flag + ": expected a whole number, got '" + s + "'");
    if (v < min || v > max)
        throw UsageError(flag + ": " + s + " is out of range " +
                         (max == std::numeric_limits<std::uint64_t>::max() ? "(at least " + std::to_string(min) + ")"
                                                                            : "[" + std::to_string(min) + ", " + std::to_string(max) + "]"));
    return v;
}

double Args::f64(const std::string& flag, double def, double min, double max) const
{
    const auto it = m_values.find(flag);
    if (it == m_values.end()) return def;
    const std::string& s = it->second;
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    // strtod also reads hexadecimal ("0x10" is 16): a decimal number is asked for
    if (s.empty() || *end != '\0' || !std::isfinite(v) || s.find_first_of("xX") != std::string::npos)
        throw UsageError(flag + ": expected a number, got '" + s + "'");
    if (v < min || v > max) {
        // %g: std::to_string's six decimals printed the --lr bound 1e-12 as 0.000000.
        char range[64];
        std::snprintf(range, sizeof range, "[%g, %g]", min, max);
        throw UsageError(flag + ": " + s + " is out of range " + range);
    }
    return v;
}

DatasetOptions datasetOptions(const Args& args)
{
    DatasetOptions o;
    o.dir = args.str("--data", kDefaultDataDir);
    try {
        if (args.has("--image-shape")) o.imageShape = parseImageShape(args.str("--image-shape", ""));
        if (args.has("--resize")) o.resize = parseResize(args.str("--resize", ""));
    } catch (const ConfigError& e) {
        throw UsageError(e.what());
    }
    o.testFraction = args.f64("--test-fraction", o.testFraction, 0.001, 0.999);
    return o;
}

std::vector<std::string> unusedDatasetFlags(const Args& args, const Dataset& data, const char* command, bool quiet)
{
    std::vector<std::string> unused;
    const auto note = [&](const char* flag, const std::string& why) {
        if (!args.has(flag)) return;
        unused.push_back(flag);
        if (!quiet) std::fprintf(stderr, "quantscope-cli %s: %s is ignored: %s\n", command, flag, why.c_str());
    };
    if (data.layout != DatasetLayout::Csv) note("--image-shape", std::string("it is for CSV files, and ") + data.dir + " is " + layoutName(data.layout));
    if (!data.splitByFraction) note("--test-fraction", data.dir + " gives its own test set");
    return unused;
}

void checkOutputIsNotAnInput(const std::string& flag, const std::string& output,
                             const std::vector<std::pair<std::string, std::string>>& inputs)
{
    namespace fs = std::filesystem;
    // '' (an empty shell variable) was an I/O error after the whole evaluation or search (tester 23)
    if (output.find_first_not_of(' ') == std::string::npos) throw UsageError(flag + ": no file name given (an empty shell variable?)");
    for (const auto& [what, input] : inputs) {
        std::error_code ec;
        if (input.empty()) continue;
        if (fs::is_directory(input, ec)) {
            // an existing file inside the folder, through any path: a new file there replaces nothing
            if (!fs::exists(output, ec)) continue;
            const fs::path folder = fs::canonical(input, ec);
            if (ec) continue;
            const fs::path file = fs::canonical(output, ec);
            if (ec) continue;
            const auto [f, d] = std::mismatch(folder.begin(), folder.end(), file.begin(), file.end());
            if (f == folder.end())
                throw UsageError(flag + " " + output + " is a file in the " + what + " folder " + input +
                                 " this command reads; writing it would replace it");
            continue;
        }
        if (!fs::is_regular_file(input, ec)) continue;
        if (fs::equivalent(output, input, ec) && !ec)
            throw UsageError(flag + " " + output + " is the " + what + " this command reads; writing it would replace it");
    }
}

void printJsonLine(const nlohmann::json& j, std::FILE* out)
{
    std::fputs((j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n").c_str(), out);
}

} // namespace quantscope::cli

namespace quantscope::cli {

void noteExtremeNormalization(const Normalization& n, const char* command, bool quiet)
{
    constexpr double kLargest = 1e4;
    if (quiet) return;
    for (std::size_t c = 0; c < n.channels(); ++c) {
        // the largest normalised value: a pixel of 0 or 255
        const double m = static_cast<double>(n.mean[c]), s = static_cast<double>(n.stddev[c]);
        const double largest = std::max(std::fabs(0.0 - m), std::fabs(1.0 - m)) / s;
        if (!(largest > kLargest)) continue;
        std::fprintf(stderr,
                     "quantscope-cli %s: note: --normalize %s maps channel %zu's pixels to values up to %.3g (its standard "
                     "deviation is %g); inputs this large make the outputs overflow or training diverge (torchvision's "
                     "Normalize takes the std of pixels scaled to [0, 1], e.g. 0.3530 for Fashion-MNIST)\n",
                     command, n.str().c_str(), c, largest, s);
        return;
    }
}

} // namespace quantscope::cli
