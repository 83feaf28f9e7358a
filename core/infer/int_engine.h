// IntEngine: integer-only inference of an integer ExportedModel (Jacob et al. 2018), a DAG of
// stored layers. Activations are uint8 in NHWC (int8 activations run shifted by +128, which leaves
// every product and comparison the same), weights int8 (int2..int8 grids, symmetric, per tensor or
// per channel). Convolutions (plain, depthwise, grouped) and dense layers accumulate in int32 from
// an int32 bias, then requantize in fixed point with a ReLU/ReLU6 folded into the clamp; Add
// rescales both inputs with fixed-point multipliers; average pools sum integers and requantize;
// max-pooling works on the integers. Floats appear only at the edges: the input is quantized
// (pixels through a 256-entry table) and the last layer's integers are dequantized for the
// log-softmax. TBB runs chunks of images in parallel inside an arena of `threads`.
#pragma once

#include "infer/isa.h"
#include "io/exported_model.h"
#include "tensor/tensor.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quantscope {

struct EngineOptions {
    Isa isa = bestIsa();
    std::size_t threads = 2;
    std::size_t chunk = 16; // images per task (fixed, so results never depend on the thread count)
};

// The integers of one quantization point for one image, in NCHW order.
struct PointTrace {
    std::string layer; // "input" or the layer whose output is quantized there
    Shape shape;
    ActivationQuant quant;
    std::vector<std::int32_t> q;
};

class IntEngine {
public:
    // Throws ConfigError naming the layer it cannot run and why (FP32 model, group-wise or
    // unsigned weights, more than 8 bits, an output without a quantization point, a feature-map
    // layer after the first dense layer, ...).
    explicit IntEngine(const ExportedModel& m, const EngineOptions& opt = {});
    ~IntEngine();
    IntEngine(const IntEngine&) = delete;
    IntEngine& operator=(const IntEngine&) = delete;

    // Empty when the engine can run m, otherwise why not.
    static std::string unsupportedReason(const ExportedModel& m);

    Isa isa() const;
    std::size_t classes() const;
    std::size_t imageBytes() const; // C * H * W

    // n images of raw pixel bytes (C planes of H x W each, as in IDX files). outputs: n x classes
    // (log-probabilities when the model ends in LogSoftmax, probabilities in Softmax), predictions: n argmax classes; either
    // may be null.
    void run(const std::uint8_t* pixels, std::size_t n, float* outputs, std::int32_t* predictions) const;
    // x: normalised (N, C, H, W) input as a Model takes it; out becomes (N, classes).
    void runFloat(const Tensor& x, Tensor& out, std::int32_t* predictions = nullptr) const;

    // The integers at the input and at every quantization point the engine writes, for one image,
    // in execution order. `layer` names the stored layer whose point it is (a ReLU folded into its
    // convolution names the ReLU; a convolution folded with its BatchNorm names the convolution).
    std::vector<PointTrace> trace(const std::uint8_t* pixels) const;

private:
    struct Impl;
    std::unique_ptr<Impl> m;
};

} // namespace quantscope
