// Model summary: one row per layer (name, type, inputs, per-image output shape, parameters,
// multiply-accumulates) plus totals and the FP32 and int8 storage sizes, as torchinfo's summary()
// and Netron's node panel give them. Plain structs keyed by layer name; the CLI prints them
// (`quantscope-cli info`), the GUI shows them in a table.
#pragma once

#include "nn/model.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

struct ExportedModel;

// One layer. Counts are per image (batch 1).
struct LayerSummary {
    std::string name;                // the layer's name, e.g. "block2.conv1"
    std::string type;                // layerKindName: "Conv2d", "Linear", "Add", ...
    std::string detail;              // hyper-parameters as Layer::describe() gives them, e.g. "16->32 3x3 s2 p1"
    std::vector<std::string> inputs; // what it reads: "input" (the model input) or a layer name
    Shape outputShape;               // per image: (C, H, W) for feature maps, (F) after Flatten
    std::uint64_t params = 0;        // trainable parameters (elements of weight, bias, gamma, beta)
    std::uint64_t buffers = 0;       // stored non-trainable values: BatchNorm running mean and variance
    // Multiply-accumulates per image, bias additions not counted (torchinfo's "Mult-Adds"):
    //   Conv2d  outH * outW * outC * (inC / groups) * k * k
    //   Linear  in * out
    //   every other layer 0.
    std::uint64_t macs = 0;
    // Other arithmetic per image, per element of the output unless said otherwise: BatchNorm 2
    // (scale, shift), ReLU/ReLU6 1, Add 1, MaxPool/AvgPool k*k, GlobalAvgPool 1 per input
    // element, LogSoftmax 3 (exp, sum, subtract); Dropout, Flatten, Conv2d, Linear 0.
    std::uint64_t elementwiseOps = 0;
    std::uint64_t fp32Bytes = 0;     // 4 * (params + buffers)
    std::uint64_t int8Bytes = 0;     // see ModelSummary::int8Bytes
    std::string foldedInto;          // BatchNorm2d folded at int8 export: the convolution's name
};

// How an integer file stores one Conv2d/Linear weight (ModelSummary::storedWeights).
struct StoredWeights {
    std::string layer;          // "blocks.2.pw"
    std::string format;         // "int4", "uint8", or "fp32" for a layer kept in float
    std::string granularity;    // "channel-wise", "tensor-wise", "group-wise (16)"; "" for fp32
    std::uint64_t weights = 0;  // elements
    std::uint64_t bytes = 0;    // as stored: .qsm version 5 packs the values, float32 scales, int32 zero points unless all 0;
                                // ONNX (int8 tensors whatever the bits) one byte a value, float32 scales, int8 zero points
    double bitsPerWeight = 0.0; // 8 * bytes / weights
};

struct ModelSummary {
    std::string modelName;           // preset name, or the name stored in the file
    std::string source;              // "preset", or the file's path
    std::string precision;           // "fp32", or e.g. "int8 weights (channel-wise), uint8 activations"
    bool quantized = false;          // the file holds an integer model (BatchNorm already folded)
    Shape inputShape;                // (C, H, W) of one image
    bool dynamicImageSize = false;   // an ONNX graph of dynamic H and W, read at inputShape's
    std::size_t classes = 0;         // outputs of the last layer
    std::vector<LayerSummary> layers;

    // Totals over the layers.
    std::uint64_t params = 0, buffers = 0, macs = 0, elementwiseOps = 0;
    // FP32 size in bytes: every parameter and BatchNorm running statistic as float32 (what an
    // FP32 export stores, without the container's headers and names).
    std::uint64_t fp32Bytes = 0;
    // Int8 size in bytes, by the rules of the integer export (io/model_export.h
    // exportQuantizedModel, train/quant_sim.h foldableConv): a BatchNorm2d that reads a
    // convolution read by nothing else is folded into it and stores nothing; each Conv2d/Linear
    // stores its weight as int8 (1 byte an element), a bias as int32 (4 bytes an output; a
    // convolution gains one when a BatchNorm folds into it) and one float32 scale per output
    // channel (channel-wise, the default granularity); a BatchNorm2d that cannot be folded stays
    // float32. Activation scales and zero points (a few bytes per layer) are not counted.
    std::uint64_t int8Bytes = 0;
    // Bytes of the file the summary was read from (empty for presets).
    std::optional<std::uint64_t> fileBytes;
    // FP32 files whose exporter folded BatchNorm into convolutions (torch.onnx.export in eval
    // mode): how many convolutions, and their output channels. The model as trained had
    // params + exporterFoldedChannels parameters if those convolutions had no bias of their own
    // (bias=False: BatchNorm's gamma and beta, 2 per channel, became 1 bias), and
    // params + 2 * exporterFoldedChannels if they had one (nn.Conv2d's default: its bias and
    // BatchNorm's beta both went into the folded bias). The file cannot tell which.
    std::size_t exporterFoldedConvs = 0, exporterFoldedChannels = 0;
    // Of params, those an ONNX import added for operations PyTorch computes without parameters
    // (ExportedModel::importAddedParams): PyTorch's own count is params less these (plus the
    // BatchNorm parameters above, where the exporter folded BatchNorm).
    std::size_t importAddedParams = 0;
    // Of the file's model, the parameters the import folded away (ExportedModel::importFoldedParams).
    std::size_t importFoldedParams = 0;
    // The file's model's own count, as PyTorch counts it: params - importAddedParams + importFoldedParams.
    std::size_t sourceParams() const { return params - importAddedParams + importFoldedParams; }
    // How the file was read, one sentence each (ExportedModel::notes: a flat input read as images,
    // a BatchNorm1d folded).
    std::vector<std::string> notes;
    // A file's input normalisation (Normalization::describe, e.g. "mean 0.2860, std 0.3530"), or
    // empty where the file does not say (an ONNX graph without Sub/Div on its input: train, eval
    // and analyze then use the train set's statistics unless --normalize is given). Empty for presets.
    std::string normalization;
    bool normalizationKnown = false;
    // A file's class names, one per output in output order (ExportedModel::classNames: a .qsm's,
    // an ONNX file's quantscope.class_names metadata); empty where the file names none, and for
    // presets. eval matches a dataset's classes to them by name.
    std::vector<std::string> classNames;
    // An integer file's Conv2d/Linear weights as stored, in layer order (empty for FP32 files and
    // presets): what a per-layer plan became.
    std::vector<StoredWeights> storedWeights;
};

// Summarises `model` for its own input shape (Model::inputShape). Throws ConfigError (from
// Model::activationShapes) when the layers' shapes do not fit together.
ModelSummary summarizeModel(Model& model);

// Builds preset `name` (nn/model_zoo.h makeModel) for (channels, height, width) images and
// `classes` outputs and summarises it. Throws ConfigError for an unknown name or an input the
// preset cannot take.
ModelSummary summarizePreset(const std::string& name, std::size_t channels = 1, std::size_t height = 28,
                             std::size_t width = 28, std::size_t classes = 10);

// Summarises a stored model (buildModel, then summarizeModel); `source` is recorded as is.
// Throws FormatError when the description does not make a model.
ModelSummary summarizeExported(const ExportedModel& m, const std::string& source);

// Reads a .qsm or .onnx file (io/model_source.h readModelFile) and summarises it, with the file's
// size in fileBytes. Throws ConfigError for another extension, IoError / FormatError naming the
// file when it cannot be read or is not a valid model.
// An ONNX graph of dynamic height and width is read at `height` x `width` (0: the importer's
// default side; ModelSummary::dynamicImageSize says so).
ModelSummary summarizeFile(const std::string& path, std::size_t height = 0, std::size_t width = 0);

// Summarises `spec`: a .qsm/.onnx file name (see summarizeFile) or a preset name (see
// summarizePreset, with the given input shape and classes). The dispatch the CLI and GUI share.
ModelSummary summarize(const std::string& spec, std::size_t channels = 1, std::size_t height = 28,
                       std::size_t width = 28, std::size_t classes = 10);

} // namespace quantscope
