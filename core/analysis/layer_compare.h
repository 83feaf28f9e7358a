// Layer-by-layer comparison of a float model with its quantized version, in the manner of
// PyTorch's Numeric Suite (torch.ao.ns: compare_model_outputs) and AIMET's layer-output
// comparison: where in the network does the quantization error come from?
//
// For every layer, in graph order, the output of the quantized model is compared with the FP32
// model's on the same batch, two ways:
//  - propagated: both models run end to end, so a layer's error includes what earlier layers
//    passed on;
//  - alone: the layer reads the FP32 model's inputs, quantized as the quantized model quantizes
//    them at its activation points, and applies its own quantization (weights and, where its
//    output is a quantization point, the output) - the error this layer adds by itself.
// Each way gives the SQNR (10 log10(sum x^2 / sum (x - x')^2), dB) and the cosine similarity.
//
// A second check compares the integer engine with the fake-quant simulation of the same exported
// model at every quantization point: how many values differ, by how many steps (the fake-quant vs
// integer divergence finder).
#pragma once

#include "data/dataset.h"
#include "io/exported_model.h"
#include "nn/model.h"
#include "tensor/tensor.h"

#include <cstddef>
#include <string>
#include <vector>

namespace quantscope {

class QuantSim;

struct LayerComparison {
    std::size_t index = 0;     // layer index in the model
    std::string layer, kind;   // "layer2.conv1", "Conv2d"
    bool quantizedWeights = false; // the layer's weights are fake-quantized
    bool outputPoint = false;      // its output is an activation quantization point (an integer grid, or
                                   // rounding to a float format such as fp8-e4m3)
    std::string activationFormat;  // the format of that point ("uint8", "fp8-e4m3"), empty where none
    double sqnrDb = 0.0, cosine = 1.0;           // propagated (+inf SQNR when identical)
    double aloneSqnrDb = 0.0, aloneCosine = 1.0; // this layer alone
};

struct LayerComparisonReport {
    std::size_t images = 0;
    double thresholdDb = 0.0;
    std::vector<LayerComparison> layers;    // graph order
    long firstBelow = -1;      // index into layers of the first propagated SQNR below the threshold, or -1
    long firstAloneBelow = -1; // the same for the layer-alone SQNR
};

// x: a normalised batch (N, C, H, W) of the model's input shape. `sim` holds calibrated activation
// quantizers (QuantSim::calibrate) for `model`; its weights are quantized here (nearest) after the
// FP32 pass, and left quantized. Layers whose output is neither quantized nor changed are listed
// too (their SQNR is +inf until an upstream layer differs). Throws ConfigError for a batch of the
// wrong shape.
LayerComparisonReport compareLayers(Model& model, QuantSim& sim, const Tensor& x, double thresholdDb);

struct EnginePointDivergence {
    std::string layer;          // "input" or the layer whose output is quantized there
    std::size_t values = 0;     // compared values (over all images)
    std::size_t differing = 0;  // integer codes that differ
    int maxSteps = 0;           // largest difference, in quantization steps
};

// Runs the integer engine (IntEngine::trace) and the fake-quant reference of `m` (buildModel +
// StoredActivationHooks) on the first `images` of `set`, and compares the integer codes at every
// quantization point. Throws ConfigError when the engine cannot run `m` (the reason is named).
std::vector<EnginePointDivergence> compareEngineWithFakeQuant(const ExportedModel& m, const Dataset& data,
                                                              const LabeledImages& set, std::size_t images);

// Cosine similarity of two equally long vectors (1 when both are zero).
double cosineSimilarity(const float* a, const float* b, std::size_t n);

} // namespace quantscope
