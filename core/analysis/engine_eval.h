// Quantized evaluations on the integer engine: the trainer's evaluation of its quantized model
// each epoch (QAT, progressive's integer phase) and PTQ's calibrated model, and every plan the
// analyses evaluate (sensitivity, search). A model QuantSim quantizes to integer formats of at
// most 8 bits (weights signed, per tensor or per channel; activations 8-bit) is exported in memory
// (BatchNorm folded, int32 biases) and run on the VNNI/AVX2 kernels (infer/int_engine.h); any
// other falls back to the fake-quant float model. The engine agrees with fake-quant on the argmax
// of >= 99.9 % of images (tests/tst_engine_eval.cpp); it differs in the rounding of the int32
// bias and the order of float accumulation.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"
#include "train/strategy.h"

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

class QuantSim;

struct EngineEval {
    double accuracy = 0.0;       // top-1 on the set, [0, 1]
    std::vector<float> logits;   // images x classes, when asked for
    std::string runner;          // "integer engine (avx512-vnni)"
};

// `model` under `sim` (weights quantized, observers frozen) on `set` through the integer engine
// with `threads` threads; nullopt (nothing run) when the engine cannot run this quantization,
// with the reason in *whyNot. Throws only on internal errors.
std::optional<EngineEval> evaluateOnEngine(Model& model, const QuantSim& sim, const Dataset& data, const LabeledImages& set,
                                           std::size_t threads, bool wantLogits = false, std::string* whyNot = nullptr);

// The TrainConfig::quantizedEvaluator of the CLI and the GUI: evaluateOnEngine with `threads`.
QuantizedEvaluator engineEvaluator(std::size_t threads);

} // namespace quantscope
