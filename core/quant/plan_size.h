// The stored size of a model under a precision plan, computed once for every place that shows
// or searches sizes (the GUI plan table and runs table, `quantscope-cli info`, the search).
// Bytes are those of the weights as the integer export stores them, without names and headers:
//   Conv2d/Linear weights   integer formats: n * bits / 8 rounded up (packed as .qsm packs them;
//                           binary takes 2 bits, the grid .qsm and the engine store it on),
//                           plus a float32 scale per slot of the granularity (global: one for
//                           all layers sharing that format) and an int32 zero point per slot for
//                           affine (unsigned) formats; float formats n * bits / 8; MX formats
//                           n * bits / 8 plus one E8M0 byte per block of 32; fp32 4 n.
//   biases                  int32 for integer layers, 4 bytes for fp32, the format's bits for
//                           float and MX layers (plus their block bytes); a BatchNorm that folds
//                           into its convolution (its only reader) becomes that bias.
//   other parameters        (a BatchNorm that does not fold) 4 bytes each, with its running stats.
// FP32 size: every parameter and BatchNorm running statistic at 4 bytes (as `info`).
#pragma once

#include "nn/model.h"
#include "quant/precision_plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

struct LayerSize {
    std::string layer;               // "conv1"
    std::size_t modelLayer = 0;      // its index in the model
    std::string format;              // weight format, "fp32" when kept in float
    std::string granularity;         // "channel-wise", ... ("" for non-integer formats)
    std::uint64_t weights = 0;       // weight elements
    std::uint64_t biases = 0;        // bias elements (a folded BatchNorm's included)
    std::uint64_t scaleSlots = 0;    // scales (integer) or shared block exponents (MX) of the weights
    std::uint64_t weightBytes = 0;   // packed weights
    std::uint64_t scaleBytes = 0;    // their scales, zero points, block exponents
    std::uint64_t biasBytes = 0;
    std::uint64_t bytes = 0;         // weightBytes + scaleBytes + biasBytes
    std::uint64_t fp32Bytes = 0;     // the same parameters in FP32 (a folded BatchNorm's included)
    double bitsPerWeight = 0.0;      // 8 * (weightBytes + scaleBytes) / weights
};

struct PlanSize {
    std::vector<LayerSize> layers;         // every Conv2d/Linear, model order
    std::vector<std::uint64_t> layerBytes; // per model layer (0 for a folded BatchNorm or no params)
    std::uint64_t bytes = 0;               // the whole model
    std::uint64_t fp32Bytes = 0;           // 4 * (params + BatchNorm running statistics)
    std::uint64_t weights = 0;             // Conv2d/Linear weight elements
    double percentOfFp32 = 0.0;            // 100 * bytes / fp32Bytes
    double bitsPerWeight = 0.0;            // 8 * (weight + scale bytes) / weights, over all layers
};

// Throws ConfigError for a plan whose names are not formats / granularities (see checkPlan).
PlanSize planSize(const Model& model, const PrecisionPlan& plan);

} // namespace quantscope
