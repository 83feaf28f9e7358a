#include "data/normalization.h"

#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace quantscope {

Normalization Normalization::identity(std::size_t channels) { return uniform(0.0f, 1.0f, channels); }

Normalization Normalization::uniform(float mean, float stddev, std::size_t channels)
{
    Normalization n;
    n.mean.assign(channels, mean);
    n.stddev.assign(channels, stddev);
    return n;
}

namespace {

std::vector<float> parseList(const std::string& text, const std::string& whole)
{
    std::vector<float> out;
    std::size_t pos = 0;
    for (;;) {
        const std::size_t end = text.find(':', pos);
        const std::string item = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        char* stop = nullptr;
        const float v = std::strtof(item.c_str(), &stop);
        if (item.empty() || stop != item.c_str() + item.size() || !std::isfinite(v))
            throw ConfigError("normalisation '" + whole + "': '" + item + "' is not a finite number");
        out.push_back(v);
        if (end == std::string::npos) break;
        pos = end + 1;
    }
    return out;
}

} // namespace

Normalization Normalization::parse(const std::string& text)
{
    if (text == "none") return identity(1);
    const std::size_t comma = text.find(',');
    if (comma == std::string::npos || text.find(',', comma + 1) != std::string::npos)
        throw ConfigError("normalisation '" + text + "': expected MEAN,STD (each a number or a ':'-separated list per channel) or 'none'");
    Normalization n;
    n.mean = parseList(text.substr(0, comma), text);
    n.stddev = parseList(text.substr(comma + 1), text);
    if (n.mean.size() != n.stddev.size())
        throw ConfigError("normalisation '" + text + "': " + std::to_string(n.mean.size()) + " means but " +
                          std::to_string(n.stddev.size()) + " standard deviations");
    n.check(n.mean.size(), "normalisation '" + text + "'");
    return n;
}

Normalization Normalization::broadcast(std::size_t channels) const
{
    if (mean.size() == channels) return *this;
    if (mean.size() == 1 && stddev.size() == 1) return uniform(mean[0], stddev[0], channels);
    throw ConfigError("normalisation " + describe() + " has " + std::to_string(mean.size()) + " channels; the input has " +
                      std::to_string(channels));
}

Normalization Normalization::after(const Normalization& outside) const
{
    const std::size_t channels = std::max(this->channels(), outside.channels());
    const Normalization in = broadcast(channels), out = outside.broadcast(channels);
    Normalization n = in;
    for (std::size_t c = 0; c < channels; ++c) {
        n.mean[c] = out.mean[c] + out.stddev[c] * in.mean[c];
        n.stddev[c] = out.stddev[c] * in.stddev[c];
    }
    return n;
}

bool Normalization::sameAs(const Normalization& other) const
{
    const std::size_t channels = std::max(this->channels(), other.channels());
    if ((this->channels() != channels && this->channels() != 1) || (other.channels() != channels && other.channels() != 1)) return false;
    const Normalization a = broadcast(channels), b = other.broadcast(channels);
    for (std::size_t c = 0; c < channels; ++c)
        if (!(std::abs(a.mean[c] - b.mean[c]) <= 5e-4f && std::abs(a.stddev[c] - b.stddev[c]) <= 5e-4f)) return false;
    return true;
}

void Normalization::check(std::size_t channels, const std::string& what) const
{
    if (mean.size() != channels || stddev.size() != channels)
        throw ConfigError(what + ": the input normalisation has " + std::to_string(mean.size()) + " means and " +
                          std::to_string(stddev.size()) + " standard deviations for " + std::to_string(channels) + " channels");
    for (std::size_t c = 0; c < channels; ++c)
        if (!std::isfinite(mean[c]) || !std::isfinite(stddev[c]) || !(stddev[c] > 0.0f))
            throw ConfigError(what + ": the input normalisation of channel " + std::to_string(c) +
                              " is not finite with a positive standard deviation");
}

std::vector<float> Normalization::table() const
{
    std::vector<float> t(channels() * 256);
    for (std::size_t c = 0; c < channels(); ++c)
        for (int v = 0; v < 256; ++v) t[c * 256 + v] = apply(static_cast<std::uint8_t>(v), c);
    return t;
}

namespace {

// fmt nullptr: each value in the fewest significant digits (6 to 9) that read back as the same
// float, so that 0.286 is written "0.286", not "0.286000013" (tester 10's --plan-out), and still
// parses to the very value.
std::string joined(const std::vector<float>& v, const char* sep, const char* fmt)
{
    std::string s;
    char buf[32];
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (fmt) {
            std::snprintf(buf, sizeof buf, fmt, static_cast<double>(v[i]));
        } else {
            for (int digits = 6; digits <= 9; ++digits) {
                std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v[i]));
                if (std::strtof(buf, nullptr) == v[i]) break;
            }
        }
        if (i) s += sep;
        s += buf;
    }
    return s;
}

} // namespace

std::string Normalization::describe() const
{
    if (channels() == 1) return "mean " + joined(mean, "", "%.4f") + ", std " + joined(stddev, "", "%.4f");
    return "mean (" + joined(mean, ", ", "%.4f") + "), std (" + joined(stddev, ", ", "%.4f") + ")";
}

std::string Normalization::str() const { return joined(mean, ":", nullptr) + "," + joined(stddev, ":", nullptr); }

} // namespace quantscope
