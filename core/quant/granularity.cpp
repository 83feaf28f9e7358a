#include "quant/granularity.h"

#include "util/errors.h"

#include <charconv>

namespace quantscope {

std::string Granularity::label() const
{
    switch (kind) {
    case GranularityKind::Global: return "global";
    case GranularityKind::Layer: return "layer-wise";
    case GranularityKind::Tensor: return "tensor-wise";
    case GranularityKind::Channel: return "channel-wise";
    case GranularityKind::Group: return "group-wise (" + std::to_string(groupSize) + ")";
    }
    return "?";
}

std::string Granularity::name() const
{
    switch (kind) {
    case GranularityKind::Global: return "global";
    case GranularityKind::Layer: return "layer";
    case GranularityKind::Tensor: return "tensor";
    case GranularityKind::Channel: return "channel";
    case GranularityKind::Group: return "group:" + std::to_string(groupSize);
    }
    return "?";
}

Granularity parseGranularity(const std::string& s)
{
    if (s == "global") return {GranularityKind::Global, 0};
    if (s == "layer" || s == "layer-wise") return {GranularityKind::Layer, 0};
    if (s == "tensor" || s == "tensor-wise") return {GranularityKind::Tensor, 0};
    if (s == "channel" || s == "channel-wise") return {GranularityKind::Channel, 0};
    const std::string prefix = "group:";
    if (s.rfind(prefix, 0) == 0) {
        std::size_t n = 0;
        const char* b = s.data() + prefix.size();
        const char* e = s.data() + s.size();
        const auto [p, ec] = std::from_chars(b, e, n);
        if (ec == std::errc() && p == e && n > 0) return {GranularityKind::Group, n};
        throw ConfigError("granularity '" + s + "': the group size must be a positive integer, e.g. group:32");
    }
    throw ConfigError("unknown granularity '" + s + "' (known: global, layer, tensor, channel, group:N)");
}

} // namespace quantscope
