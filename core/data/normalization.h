// Input normalisation, per channel: x = (pixel / 255 - mean[c]) / stddev[c], as torchvision's
// ToTensor() followed by Normalize(mean, std). A Dataset computes it from its train pixels; a model
// stores it (.qsm, ONNX Sub/Div in front of the graph) so a file knows how its input was scaled.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

struct Normalization {
    std::vector<float> mean{0.0f};   // one per channel, of pixels scaled to [0, 1]
    std::vector<float> stddev{1.0f}; // one per channel, > 0

    std::size_t channels() const { return mean.size(); }
    // The identity on [0, 1] pixels (mean 0, stddev 1) for `channels` channels.
    static Normalization identity(std::size_t channels);
    // The same mean and stddev on every one of `channels` channels.
    static Normalization uniform(float mean, float stddev, std::size_t channels);
    // Parses "MEAN,STD", where each is a number or a ':'-separated list with one number per channel
    // ("0.4914:0.4822:0.4465,0.247:0.243:0.261"), or "none" (identity). A single number is kept as
    // one entry; broadcast() widens it. Throws ConfigError naming the text.
    static Normalization parse(const std::string& text);
    // This normalisation widened to `channels` channels (a one-entry normalisation is repeated).
    // Throws ConfigError when it holds another number of entries.
    Normalization broadcast(std::size_t channels) const;
    // Throws ConfigError (prefixed by `what`) unless it has `channels` entries, every mean is finite
    // and every stddev finite and > 0.
    void check(std::size_t channels, const std::string& what) const;
    // The normalised value of byte `v` in channel `c`.
    float apply(std::uint8_t v, std::size_t c) const { return (static_cast<float>(v) / 255.0f - mean[c]) / stddev[c]; }
    // A table of every byte's normalised value: out[c * 256 + v] = apply(v, c).
    std::vector<float> table() const;
    // "mean 0.2860, std 0.3530" or "mean (0.49, 0.48, 0.45), std (0.25, 0.24, 0.26)".
    std::string describe() const;
    // Back to parse()'s syntax.
    std::string str() const;
    // This normalisation applied to inputs that `outside` has normalised already (a graph whose
    // forward() computes (x - m) / s, fed images normalised before it): one normalisation of the
    // pixels, mean[c] = outside.mean[c] + outside.stddev[c] * m[c] and stddev[c] = outside.stddev[c]
    // * s[c]. Both are broadcast to the larger channel count first; throws ConfigError as broadcast().
    Normalization after(const Normalization& outside) const;
    // The same as `other` to the four decimals describe() prints, on every channel (after
    // broadcasting both); false when the channel counts cannot be matched.
    bool sameAs(const Normalization& other) const;
    bool operator==(const Normalization&) const = default;
};

} // namespace quantscope
