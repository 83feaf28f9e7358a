// ONNX export (opset 13) with Debian's libonnx protobuf classes, and a reader for the graphs it
// writes. Integer models become QDQ graphs: the input is float32 [N, C, H, W] pixels in [0, 1]
// named "input", normalised inside the graph (Sub, Div), then QuantizeLinear/DequantizeLinear;
// weights are int8 initializers (symmetric, per channel on axis 0 or per tensor) behind a
// DequantizeLinear, biases int32 at scale s_in * s_w (a Linear without a bias is a Gemm without
// C, in FP32 and QDQ graphs alike); pointwise activations are their ONNX operators (Sigmoid, Tanh,
// HardSigmoid, LeakyRelu, Elu, Softplus, Softsign, Selu, Celu) or subgraphs (SiLU, Hardswish, Mish, GELU) between two Q/DQ pairs, which the
// engine runs as one table; BatchNorm is folded and Relu/Clip follow
// Conv/Gemm/Add directly, before the activation's Q/DQ pair. Graph models keep their shape: a
// node reads the ONNX values of its layer's `inputs` (Add reads two). FP32 models are plain
// ONNX. The output "logits" is [N, classes] (log-probabilities when the model ends in LogSoftmax,
// probabilities when it ends in Softmax).
#pragma once

#include "io/exported_model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

inline constexpr int kOnnxOpset = 13;
// ONNX Selu's default attributes, PyTorch's SELU constants (Klambauer et al. 2017) in float.
inline constexpr float kOnnxSeluAlpha = 1.67326319217681884765625f;
inline constexpr float kOnnxSeluGamma = 1.05070102214813232421875f;
// Doc strings of the nodes of a layer written as a subgraph (SiLU: Sigmoid + Mul; Hardswish:
// HardSigmoid + Mul; Mish: Softplus, Tanh, Mul; GELU: Div, Erf, Add, Mul, Mul): inner nodes carry kOnnxPart, the last one
// kOnnxLayerMark + the kind's name ("quantscope.layer=GELU").
inline constexpr const char* kOnnxPart = "quantscope.part";
inline constexpr const char* kOnnxLayerMark = "quantscope.layer=";

// The model as its ONNX graph holds it: Dropout layers (identity at inference) are left out and
// their readers read the Dropout's input; in FP32 models a BatchNorm2d that reads a convolution
// read by nothing else is folded into it (w * f, beta + (b - mean) * f, f = gamma / sqrt(var + eps),
// bnFolded set). decodeOnnx(encodeOnnx(m)) gives back exactly onnxForm(m). Throws ConfigError for
// a Dropout that carries an activation quantization point (it has no node to carry it).
ExportedModel onnxForm(const ExportedModel& m);

// Serialises `m`. Throws ConfigError for what opset-13 QDQ cannot express (group-wise or
// unsigned weights, activations other than int8/uint8) and Error if libonnx's checker rejects
// the graph (a bug here, not in the model).
std::vector<std::uint8_t> encodeOnnx(const ExportedModel& m);
// Atomic write (temporary file, then rename).
void writeOnnx(const std::string& path, const ExportedModel& m);

// Reads a graph of the shape encodeOnnx writes back into an ExportedModel: node outputs map to
// activation indices, so DAGs (residual Adds, fan-out) read back as they were written. Throws
// IoError / FormatError naming the file and the node it cannot interpret, or a quantscope.*
// metadata value encodeOnnx does not write for that kind of graph (naming the key, the value and
// the values written); ConfigError for an IR version or opset newer than it reads (13 to 17).
ExportedModel decodeOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source);
ExportedModel readOnnx(const std::string& path);

// Any ONNX model file: QuantScope's own exports (they carry quantscope.* metadata) through
// decodeOnnx, every other FP32 graph through the importer (onnx_import.h), which reads a graph
// whose input height and width are dynamic at `height` x `width` (0: its default side).
ExportedModel readOnnxModel(const std::string& path, std::size_t height = 0, std::size_t width = 0, std::size_t classes = 0);

} // namespace quantscope
