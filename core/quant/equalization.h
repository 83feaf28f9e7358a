// Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and
// Bias Correction", ICCV 2019, section 4.1): for two consecutive layers y = W2 f(W1 x + b1) + b2
// with f positively homogeneous (ReLU, LeakyReLU, PReLU, pooling, flatten, dropout: f(x / s) = f(x) / s
// for s > 0; PReLU elementwise with its own slope a: prelu_a(x / s) = prelu_a(x) / s whatever a is),
// output channel i of W1 is divided by s_i and input channel i of W2 multiplied by it, which leaves
// the FP32 function unchanged. With r1_i = max|W1[i, :]| and r2_i = max|W2[:, i]|,
// s_i = sqrt(r1_i * r2_i) / r2_i gives both the range sqrt(r1_i r2_i), so per-tensor quantization
// wastes less of its grid on small channels. Pairs are visited in graph order, repeatedly, until
// every s_i is within `tolerance` of 1 (chains of three or more layers need several sweeps).
// Depthwise (and grouped) convolutions take part on either side. ReLU6 is not positively
// homogeneous (min(x/s, 6) != min(x, 6)/s), nor are Sigmoid, Tanh, SiLU, Hardswish, ELU, GELU or GELUTanh,
// so a pair through one is skipped and reported.
#pragma once

#include "nn/model.h"

#include <string>
#include <vector>

namespace quantscope {

// Folds every BatchNorm2d whose only input is a Conv2d read by nothing else into that convolution:
// W *= gamma / sqrt(var + eps) per output channel (and its bias), and the BatchNorm keeps only the
// shift (gamma = sqrt(var + eps), mean = 0, beta = beta - mean * gamma / sqrt(var + eps)), so the
// FP32 function is unchanged and a quantizer that folds BatchNorm sees a factor of 1. Returns the
// number of BatchNorms folded.
std::size_t foldBatchNormsInPlace(Model& model);

struct EqualizedPair {
    std::string first, second;     // the two layers (through whatever lies between them)
    // max_i r_i / min_i r_i of the first layer's output-channel ranges (zero ranges left out)
    double rangeRatioBefore = 0.0, rangeRatioAfter = 0.0;
};

struct EqualizationReport {
    std::vector<EqualizedPair> pairs;
    std::vector<std::string> skipped; // "conv1 -> conv2: ReLU6 relu1 is not positively homogeneous"
    std::size_t sweeps = 0;
    std::size_t foldedBatchNorms = 0;
};

// Folds the BatchNorms (foldBatchNormsInPlace), then equalizes every eligible pair. A pair is a
// Conv2d/Linear whose output reaches exactly one Conv2d/Linear through single-reader BatchNorm,
// ReLU, max/average/global-average pooling, Flatten and Dropout layers (a BatchNorm between them has its mean and
// beta scaled with the channel). Anything else in between (Add, ReLU6, several readers) ends the
// search; a Linear after Flatten takes each channel's block of features.
EqualizationReport equalizeCrossLayer(Model& model, std::size_t maxSweeps = 100, double tolerance = 1e-6);

// Replaces every ReLU6 by a ReLU of the same name (what the ICCV 2019 paper and AIMET do before
// CLE on MobileNets; it changes the FP32 function where activations exceeded 6). Returns the
// replaced layers with their indices, so they can be put back (Model::replaceLayer).
std::vector<std::pair<std::size_t, LayerPtr>> replaceRelu6WithRelu(Model& model);

// Per output channel: max |w| of a Conv2d/Linear's weight (its first dimension).
std::vector<float> outputChannelRanges(const Param& weight);

} // namespace quantscope
