// Export of a trained model: to an ExportedModel (integer when the strategy quantizes to an
// integer format, FP32 otherwise), then to .qsm or .onnx by the path's extension, then read
// back and re-measured. This is the API the CLI (`train --export`) and the GUI's export menu use.
#pragma once

#include "data/dataset.h"
#include "io/exported_model.h"
#include "nn/model.h"

#include <cstdint>
#include <string>

namespace quantscope {

class QuantSim;
class Trainer;
struct TrainConfig;

enum class ExportFormat { Qsm, Onnx };
// By extension (.qsm / .onnx, any case); throws ConfigError for anything else.
ExportFormat exportFormatFor(const std::string& path);

struct ExportSummary {
    std::string path;
    ExportFormat format = ExportFormat::Qsm;
    bool quantized = false;
    std::string precision;       // "int8 weights (channel), uint8 activations" or "fp32"
    std::uint64_t fileBytes = 0;
    std::uint64_t fp32Bytes = 0; // the same model as FP32, in the same container
    double sizeRatio = 0.0;      // fileBytes / fp32Bytes
    double accuracy = 0.0;       // on the test set, re-measured by reading `path` back
    std::size_t testImages = 0;
    std::string runner;          // what re-measured it, e.g. "integer engine (avx512-vnni)"
    std::string note;            // e.g. why a mixed-precision run exported as FP32
};

// Throws ConfigError (before any training) when a run with `cfg` cannot be exported to `path`:
// unknown extension, float formats (fp16/fp8/MX) under PTQ/QAT, non-integer activation formats,
// and for ONNX anything but signed <= 8-bit per-tensor/per-channel weights with int8/uint8 activations.
void checkExportable(const TrainConfig& cfg, const std::string& path);

// Throws ConfigError (before any training) when the integer export of `model` as `sim` will quantize
// it cannot store a layer, from the layers and the sim's quantization points and formats alone (no
// scales are needed): a BatchNorm2d that no convolution absorbs and that reads a float activation (the
// output of a layer kept FP32 with no point after it). exportQuantizedModel finds the same after
// training, with the same message; this is the check a run with --export makes first.
void checkExportableModel(Model& model, const QuantSim& sim);

// The integer model of `model` as `sim` quantizes it (call strategy.prepareExport() first):
// BatchNorm folded, weights as integers with their scales, int32 biases at scale s_in * s_w
// (float biases under group-wise scales), the activation quantization of every point.
ExportedModel exportQuantizedModel(Model& model, const QuantSim& sim, const std::string& modelName, const Dataset& data,
                                   const std::string& strategyName, const std::string& granularity);

// The trainer's model as it would be exported (prepares the strategy for export first).
ExportedModel exportedModelOf(Trainer& trainer);

// Writes `m` to `path` (.qsm or .onnx, atomically), reads it back and measures its accuracy on
// data.test. fp32 is the FP32 form of the same model, for the size comparison.
ExportSummary writeAndVerify(const ExportedModel& m, const ExportedModel& fp32, const Dataset& data, const std::string& path,
                             std::size_t threads = 2);

// The whole export for the CLI and the GUI: exportedModelOf + writeAndVerify.
ExportSummary exportModel(Trainer& trainer, const std::string& path);

} // namespace quantscope
