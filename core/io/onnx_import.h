// General FP32 ONNX import: the graphs torch.onnx.export (opsets 9-23) and similar tools write,
// read through Debian's libonnx protobuf classes into a float ExportedModel (buildModel() makes
// it a trainable Model). Layers: Conv, Gemm, MatMul(+Add), Relu, Clip (ReLU6 / ReLU; a Clip(max=6)
// or Clip(min <= 0) right after a Relu that nothing else reads merges into it, as PyTorch writes
// x.clamp(min=0).clamp(max=6)), MaxPool, AveragePool, GlobalAveragePool, ReduceMean over (H, W),
// the global pooling idioms of onnx_import_pooling.cpp (x.mean(-1).mean(-1), x.sum((2, 3)) / (H W),
// GlobalMaxPool and ReduceMax over (H, W) of any map),
// BatchNormalization (inference form), Add (residual), Flatten, Reshape to (N, -1), Dropout,
// Identity, LogSoftmax, a trailing Softmax (kept as the last layer), and the pointwise activations
// Sigmoid, Tanh, HardSigmoid (alpha 1/6, beta 1/2), HardSwish, LeakyRelu, Elu and the SiLU,
// Hardswish and erf-GELU subgraphs torch.onnx.export writes (onnx_import_activations.cpp), Mul of
// two activations (equal shapes, or a squeeze-and-excitation gate [N, C, 1, 1] times its map, also
// behind an Expand, and the gate written with Linear layers), Concat along the channels
// (onnx_import_joins.cpp). Constant subgraphs are folded (onnx_const.h); a zero Pad merges
// into the Conv or AveragePool after it; Sub/Div of the input by scalars (QuantScope's own exports) become
// ExportedModel::mean/stddev. A Gemm without C or a MatMul without an Add after it (PyTorch's
// nn.Linear(..., bias=False)) is a Linear without a bias, so parameters count as in PyTorch.
#pragma once

#include "io/exported_model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

// The range of default-domain opsets the general importer reads (QuantScope itself writes
// kOnnxOpset = 13). Below 11 it reads the attribute forms of Clip's bounds, Pad's pads,
// Dropout's ratio, Squeeze's and Unsqueeze's axes and (below 10) Slice's starts and ends; opset 9
// has no pooling ceil_mode. Opsets 7 and 8 differ in BatchNormalization (spatial) and are refused.
// Of the operators it reads, opsets 18 to 23 change only ReduceMean/ReduceMax's
// axes (an input since 18: importOnnx moves constant axes back into the attribute), AveragePool's
// dilations (19: refused unless 1), Pad's axes (18: a constant axes input is read) and wrap mode
// (19: refused) and the element types accepted; Gelu (20) is a new operator, read as GELU.
inline constexpr int kOnnxImportMinOpset = 9;
inline constexpr int kOnnxImportMaxOpset = 23;
// The opsets at which QuantScope reads its own QDQ exports (onnx_reader.cpp): opset 19 and 21
// change QuantizeLinear and DequantizeLinear.
inline constexpr int kOnnxOwnMaxOpset = 17;
// The newest IR version and default-domain opset the ONNX spec defines (ONNX 1.18): a file that
// declares a later one is refused by name, by both readers, whatever its nodes are (a newer
// operator version may mean something else, and an IR of 999 is a damaged file).
inline constexpr std::int64_t kOnnxNewestIrVersion = 11;
inline constexpr std::int64_t kOnnxNewestOpset = 23;
inline constexpr const char* kOnnxNewestRelease = "ONNX 1.18";

// What the import did beyond the layers, for the caller to tell the user.
struct OnnxImportInfo {
    int opset = 0;
    std::string producer;        // producer_name + version, e.g. "pytorch 1.13.1"
    // The graph input was flat, [N, C*H*W] (an MLP): read as square images of 1 or 3 channels,
    // ExportedModel's channels/height/width, and a first layer "input_flatten".
    bool flatInput = false;
    // The graph input declares H and/or W dynamic (torch.onnx.export with dynamic_axes on them):
    // the model was read at the size OnnxImportOptions asked for, or at kOnnxDefaultImageSide.
    bool dynamicImageSize = false;
    std::size_t channels = 0, height = 0, width = 0; // the image shape it was read at
    std::string dynamicDims;           // which: "H ('h') and W ('w')", "H ('h')"
    // Calls of the model's local functions expanded first (export_modules_as_functions=True;
    // io/onnx_inline.h); 0 for a plain graph.
    int inlinedCalls = 0;
};

// The side a graph whose input H or W is dynamic is read at when OnnxImportOptions gives none:
// 28 for one channel (MNIST, Fashion-MNIST), 32 for three (CIFAR), QuantScope's default data.
inline constexpr std::size_t kOnnxDefaultImageSide1 = 28, kOnnxDefaultImageSide3 = 32;

// How to read a graph (input only).
struct OnnxImportOptions {
    // The image height and width to read a graph at whose input declares them dynamic (the data's
    // size: train and eval pass it); 0 takes the default side above. A static dimension of the
    // graph is kept whatever is asked here (the caller's size check then names both).
    std::size_t height = 0, width = 0;
    // The folder the locations of external data (onnx.save(..., save_as_external_data=True)) are
    // relative to: the model file's (importOnnx(path) and readModelFile set it). Empty: a tensor
    // with external data is a ConfigError.
    std::string externalDataFolder;
    // An AveragePool with ceil_mode = 1 after a zero Pad, where ONNX's output size and PyTorch's
    // differ: ONNX keeps a last window that starts in the Pad's zeros, PyTorch (nn.AvgPool2d with
    // padding, ceil_mode=True and count_include_pad=True, which torch.onnx.export writes as Pad +
    // AveragePool) drops it. Either (the default): the graph is read both ways and the reading the
    // rest of the graph fits is kept, with a note in ExportedModel::notes; a ConfigError when both
    // fit (a global pooling after it) or neither does. PyTorch / Onnx: that reading only (ONNX's
    // is the zeros as a Pad layer, then the window over the padded map).
    enum class PaddedCeilPool { Either, PyTorch, Onnx };
    PaddedCeilPool paddedCeilPool = PaddedCeilPool::Either;
    // The data's class count, for a graph of several outputs (a forward that returns (logits,
    // features), exported as a tuple): the first output whose declared shape is [N, classes] is
    // read as the class scores. 0, or no output declared so: the first output. The other outputs,
    // and the nodes only they need, are left out, with a note in ExportedModel::notes.
    std::size_t classes = 0;
};

// Reads an FP32 ONNX model: architecture and weights. Input pixels are assumed already normalised
// (ExportedModel::normalization is the identity and normalizationKnown false: the caller sets it) unless the graph itself starts
// with Sub/Div of its input by constants (one or one per channel), as QuantScope's exports do. channels/height/width come from the graph input
// [N, C, H, W] (N may be symbolic; H and W too: then they are options.height/width, or the default
// side, and OnnxImportInfo::dynamicImageSize and ExportedModel::dynamicImageSize are set), or [N, F] with F = C H W (see OnnxImportInfo::flatInput), classes from the output [N, classes] (of several
// outputs, the one OnnxImportOptions::classes picks), modelName from the file
// stem, layer names from the exporter's module scopes (node "/layer1/conv1/Conv" -> "layer1.conv1")
// or else the weight's initializer ("conv1.weight" -> "conv1"), made unique.
// Initializers of float16 and bfloat16 are read exactly as float32 values; they must reach a layer
// through a Cast to float (as in a graph whose weights were stored in half precision).
// Throws IoError (file unreadable), FormatError (malformed protobuf or graph: no ir_version,
// dangling input, cycle, tensor size disagreeing with its dims, absurd dims, a negative or zero
// input dimension, a half-precision weight read by a float layer without a Cast, a dynamic
// channel or feature count) and ConfigError (valid ONNX QuantScope cannot represent: unsupported
// operator, opset outside 11..17, an IR version or opset newer than ONNX defines, a float16
// input, BatchNorm with batch statistics, external data without its file, dilation, asymmetric padding,
// count_include_pad = 0...), each naming the file and, for a node, its op type and name.
ExportedModel importOnnx(const std::string& path);
// The folder of a model file, which its external data's locations are relative to: the path's
// parent, or "." for a bare file name.
std::string modelFolder(const std::string& path);
ExportedModel importOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source);
ExportedModel importOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source, OnnxImportInfo* info);
ExportedModel importOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source, OnnxImportInfo* info,
                         const OnnxImportOptions& options);

} // namespace quantscope
