// Per-layer sensitivity analysis (as in AIMET's per-layer sensitivity and PyTorch's Numeric
// Suite): for a trained FP32 model and a list of candidate weight formats, quantize ONE layer at
// a time (post-training quantization with the chosen granularity and calibration; every other
// layer stays FP32; activations around the quantized layer are quantized at its activation
// format, the plan's float/integer boundary rule, docs/PLANS.md, so that rounding is in every
// format's cell alike; activationFormat "fp32" keeps them float and measures the weights alone)
// and measure on a held-out validation set:
//  - the top-1 accuracy and its drop against FP32 (points, FP32 minus quantized);
//  - the SQNR of the model's outputs (logits, log-probabilities or probabilities) against FP32's (10 log10(sum z^2 / sum (z - z')^2), dB);
//  - the mean KL divergence KL(p_FP32 || p_quantized) of the output distributions (nats), the
//    outputs turned into probabilities with a softmax.
// The "all but one" mode quantizes every layer but one instead.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace quantscope {

struct SensitivityOptions {
    std::vector<std::string> formats{"int8", "int4", "int2"}; // weight formats (rows of numberFormats())
    std::string granularity = "channel";
    std::string calibration = "minmax";      // weight ranges
    std::string activationFormat = "uint8";
    std::string activationCalibration = "minmax"; // activation ranges (calibration names as PrecisionConfig's)
    std::size_t calibImages = 1000;          // from the training set
    std::size_t batchSize = 500;
    bool allButOne = false;                  // quantize every layer except the one named
};

struct SensitivityCell {
    std::string layer, format;
    double accuracy = 0.0;    // on the validation images, [0, 1]
    double dropPoints = 0.0;  // 100 * (FP32 accuracy - accuracy)
    double logitSqnrDb = 0.0; // +inf when the logits are unchanged
    double klDivergence = 0.0; // mean over images, nats
};

struct SensitivityReport {
    double fp32Accuracy = 0.0;
    std::size_t images = 0;
    std::vector<std::string> layers;  // Conv2d / Linear layers in graph order
    std::vector<SensitivityCell> cells; // layer-major: layers[i] x formats[j] at i * formats + j
    bool stopped = false;               // the progress callback asked to stop: cells holds those done
    double seconds = 0.0;
};

// Progress: cells done, cells in all. Returning false stops the analysis (the report then holds
// the cells done so far).
using SensitivityProgress = std::function<bool(std::size_t done, std::size_t total)>;

// `model` is FP32 (weights are restored after each cell); `validation` the images measured on
// (not the test set). Runs in the caller's task_arena. Throws ConfigError for an unknown format
// or a granularity a layer cannot take (naming it), before any measurement.
SensitivityReport analyzeSensitivity(Model& model, const Dataset& data, const LabeledImages& validation,
                                     const SensitivityOptions& opt, const SensitivityProgress& progress = {});

} // namespace quantscope
