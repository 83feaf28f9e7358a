// LayerStats: what the user sees of one quantized weight tensor (ranges, scales, histograms on the
// quantization grid, errors). The weight quantizer computes them; the Trainer reports them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

// One quantized weight tensor after an epoch.
struct LayerStats {
    std::size_t epoch = 0;
    std::string layer;                    // "conv1"
    std::string tensor = "weight";
    std::string format;                   // "int8"
    std::string granularity;              // spec name: "channel-wise", "tensor-wise", ...
    std::vector<float> scales;            // one per scale slot
    std::vector<std::int32_t> zeroPoints; // one per scale slot
    std::vector<float> channelMin, channelMax; // FP32 weights, per output channel
    // The same before cross-layer equalization (PTQ --cle); empty without it.
    std::vector<float> channelMinBefore, channelMaxBefore;
    float tensorMin = 0.0f, tensorMax = 0.0f;  // FP32 weights, whole tensor
    float clipLow = 0.0f, clipHigh = 0.0f;     // representable range (widest over slots)
    // Histograms over shared bins aligned to the quantization grid (edges.size() == bins + 1).
    std::vector<double> binEdges;
    std::vector<std::uint64_t> fp32Hist, quantHist;
    double clippedFraction = 0.0;         // share of weights outside the clip range
    // Weights that are +-inf or NaN: left out of the ranges, scales and histograms above.
    std::uint64_t nonFinite = 0;
    // Finite weights the format rounded to +-inf or NaN (fp16 past 65504, fp8-e5m2 past 57344,
    // which overflow rather than saturate): the model's outputs are then not finite.
    std::uint64_t overflowed = 0;
    double mse = 0.0, maxAbsError = 0.0, sqnrDb = 0.0;
};

} // namespace quantscope
