// How many scales a quantized weight gets:
//   global  one scale for all weights of the model
//   layer   one per layer's weights (a Conv/Linear layer has one weight tensor: as tensor)
//   tensor  one per tensor
//   channel one per output channel (dim 0)
//   group:N one per block of N consecutive weights within an output channel (the last block of
//           a row may be shorter)
// Biases never share the weights' range: on integer formats they stay float (int32 in the
// export, at scale s_w * s_x), and each gets one observer of its own (per tensor) for statistics.
#pragma once

#include <cstddef>
#include <string>

namespace quantscope {

enum class GranularityKind { Global, Layer, Tensor, Channel, Group };

struct Granularity {
    GranularityKind kind = GranularityKind::Channel;
    std::size_t groupSize = 0; // Group only

    // For people: "global", "layer-wise", "tensor-wise", "channel-wise", "group-wise (32)".
    std::string label() const;
    // For the CLI/config: "global", "layer", "tensor", "channel", "group:32".
    std::string name() const;
    bool operator==(const Granularity&) const = default;
};

// Accepts name() forms (and "layer-wise" style labels without the group size); throws
// ConfigError naming the valid forms.
Granularity parseGranularity(const std::string& s);

} // namespace quantscope
