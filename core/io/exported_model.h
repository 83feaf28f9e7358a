// ExportedModel: a model as it leaves QuantScope, independent of the file it goes to. It holds
// the architecture (layer kinds and hyper-parameters, BatchNorm already folded for integer
// models), every tensor either as float32 or as integers on a grid with scales and zero points,
// the activation quantization after each layer, the input normalisation and the class names.
// The .qsm and ONNX writers serialise it, their readers rebuild it, and the engines run it.
#pragma once

#include "data/normalization.h"
#include "nn/conv_geometry.h"
#include "nn/layer.h"
#include "nn/model.h"
#include "nn/pad.h"
#include "nn/pool_geometry.h"
#include "quant/quantize.h"
#include "tensor/tensor.h"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

// "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout", "Flatten", "Linear", "LogSoftmax",
// "Add", "GlobalAvgPool2d", "AvgPool2d", "ReLU6", "Softmax", and the pointwise activations
// "Sigmoid", "Tanh", "SiLU", "Hardsigmoid", "Hardswish", "LeakyReLU", "ELU", "GELU", the joins
// "Mul" and "Concat", then "PReLU" (tensor: weight (1) or (C), float32 in every model), "GELUTanh",
// "Hardtanh", "ChannelShuffle", "Slice", "GroupNorm", "Softplus", "Mish", "Pad", "SELU", "CELU"
// "Softsign", "LayerNorm2d" and "ChannelMax".
const char* storedKindName(LayerKind k);
class Layer;
struct StoredLayer;
// For the writers of models as StoredLayers: a ChannelShuffle's groups, a Slice's channel range or a
// Pad2d's mode and pads into l; false (l untouched) for any other layer.
bool storeChannelMove(const Layer& layer, StoredLayer& l);
// The same for a GroupNorm or a LayerNorm2d (channels, groups (GroupNorm), eps, and its weight and
// bias as float32 tensors, in integer models too: the engines compute it in float); false for any
// other layer. Throws NumericError naming the layer for a non-finite weight or bias.
bool storeNormLayer(const Layer& layer, StoredLayer& l);

enum class TensorEncoding : std::uint8_t { Float32 = 0, Int = 1 };
// How scales cover a tensor: one, one per output channel (dim 0), one per group of
// consecutive elements within an output channel.
enum class ScaleLayout : std::uint8_t { Tensor = 0, Channel = 1, Group = 2 };

struct StoredTensor {
    std::string name; // "weight", "bias", "gamma", "beta", "running_mean", "running_var"
    Shape shape;
    TensorEncoding encoding = TensorEncoding::Float32;
    std::vector<float> values; // Float32

    // Int: integers q in [qmin, qmax] stored in `bits` bits; real value = (q - zeroPoint) * scale.
    int bits = 0;
    bool isSigned = true;
    int qmin = 0, qmax = 0;
    ScaleLayout layout = ScaleLayout::Tensor;
    std::size_t groupSize = 0; // Group only
    std::vector<float> scales;
    std::vector<std::int32_t> zeroPoints;
    std::vector<std::int32_t> q; // one per element, unpacked

    std::size_t numel() const { return shapeNumel(shape); }
    // Rows (dim 0) and elements per row, for the scale layout.
    std::size_t rows() const { return shape.empty() ? 1 : shape[0]; }
    std::size_t rowLength() const { return rows() ? numel() / rows() : 0; }
    // Scales this tensor must carry for its layout.
    std::size_t expectedScales() const;
    // The layout as quantize.h's QuantParams (Int only).
    QuantParams params() const;
    // Real values: Float32 as stored, Int dequantized.
    std::vector<float> dequantized() const;
};

// Per-tensor quantization of one activation point.
struct ActivationQuant {
    int bits = 8;
    bool isSigned = false;
    int qmin = 0, qmax = 255;
    float scale = 1.0f;
    std::int32_t zeroPoint = 0;
    bool operator==(const ActivationQuant&) const = default;
};

struct StoredLayer {
    LayerKind kind = LayerKind::ReLU;
    std::string name;
    // The activations this layer reads: 0 = the (normalised) model input, i+1 = output of layer i;
    // always earlier than the layer itself. One entry, two for Add and Mul, 2 to 255 for Concat.
    std::vector<std::size_t> inputs;
    // Conv2d: inChannels, outChannels, kernel, stride, padding, groups (tensors: weight
    // (out, in/groups, k, k) and an optional bias). MaxPool2d, AvgPool2d: kernel, stride, padding
    // (MaxPool pads with -inf, AvgPool with zeros counted in the mean unless its window says
    // count_include_pad = 0; padding <= kernel / 2), and for any other window `poolWindow`.
    std::size_t inChannels = 0, outChannels = 0, kernel = 0, stride = 0, padding = 0, groups = 1;
    // Conv2d whose window is not square (rectangular kernel, two strides, asymmetric padding,
    // dilation): the whole window; kernel, stride and padding then hold its kh, sh and top padding.
    // Empty for square convolutions. Read convGeometry(), write setConvGeometry().
    std::optional<ConvGeometry> window;
    // MaxPool2d / AvgPool2d whose window is not square (rectangular kernel, two strides, asymmetric
    // padding, ceil_mode, AvgPool2d's count_include_pad = 0): the whole window; kernel, stride and
    // padding then hold its kh, sh and top padding. Read poolGeometry(), write setPoolGeometry().
    std::optional<PoolGeometry> poolWindow;
    std::size_t inFeatures = 0, outFeatures = 0; // Linear (tensors: weight (out, in) and an optional bias)
    float eps = 0.0f, momentum = 0.0f;           // BatchNorm2d
    float dropout = 0.0f;                        // Dropout p
    float alpha = 0.0f;                          // LeakyReLU negative_slope, ELU alpha, Hardtanh min_val (nn/pointwise.h); 0 for other kinds
    float beta = 0.0f;                           // Hardtanh max_val; 0 for other kinds
    // ChannelShuffle: groups (above). Slice: channels [sliceBegin, sliceEnd) of its input (nn/channel_ops.h).
    std::size_t sliceBegin = 0, sliceEnd = 0;
    // Pad: the mode and the pads top, left, bottom, right (nn/pad.h).
    PadMode padMode = PadMode::Zeros;
    std::array<std::size_t, 4> pads{};
    bool bnFolded = false;                       // Conv2d: a BatchNorm2d was folded into it
    std::vector<StoredTensor> tensors;
    std::optional<ActivationQuant> outputQuant;  // integer models: quantization of this layer's output

    const StoredTensor* tensor(const std::string& name) const;
    // Conv2d: the window, square (kernel, stride, padding) unless `window` says otherwise.
    ConvGeometry convGeometry() const { return window ? *window : ConvGeometry::square(kernel, stride, padding); }
    void setConvGeometry(const ConvGeometry& g)
    {
        kernel = g.kh, stride = g.sh, padding = g.padTop;
        if (g.isSquare()) window.reset();
        else window = g;
    }
    // MaxPool2d, AvgPool2d: the window, square (kernel, stride, padding) unless `poolWindow` says otherwise.
    PoolGeometry poolGeometry() const { return poolWindow ? *poolWindow : PoolGeometry::square(kernel, stride, padding); }
    void setPoolGeometry(const PoolGeometry& pg)
    {
        const PoolGeometry g = pg.normalized();
        kernel = g.kh, stride = g.sh, padding = g.padTop;
        if (g.isSquare()) poolWindow.reset();
        else poolWindow = g;
    }
};

struct ExportedModel {
    std::string modelName;  // the preset it was built from, e.g. "seed-cnn"
    std::size_t channels = 1, height = 28, width = 28, classes = 10;
    Normalization normalization; // per input channel: x = (pixel / 255 - mean[c]) / stddev[c]
    // False when the file does not say how its input was normalised (an ONNX graph from another
    // tool takes normalised tensors): `normalization` is then identity until the caller sets it
    // (--normalize, or the dataset's statistics). Not stored: every file QuantScope writes has it.
    bool normalizationKnown = true;
    // True when `normalization` is the graph's own arithmetic on a float input in [0, 1], read from
    // an ONNX graph of another tool ((x - m) / s in a PyTorch forward(), or operators after a pad,
    // kept as layers, with `normalization` the identity): images normalised before the graph as
    // well compose with it (resolveInputNormalization, io/model_source.h). False for .qsm files,
    // QuantScope's ONNX, graphs of uint8 or 0..255 pixels, and graphs that say nothing.
    bool normalizationFromGraph = false;
    std::vector<std::string> classNames;
    // What produced it (informative): "qat", "int8", "uint8", "channel".
    std::string strategy, weightFormat, activationFormat, granularity;
    bool quantized = false;
    std::optional<ActivationQuant> inputQuant; // integer models: quantization of the normalised input
    std::vector<StoredLayer> layers;
    // What the export had to change, one sentence each (informative, not stored in files), e.g. a
    // weight scale raised so that an int32 bias fits.
    std::vector<std::string> notes;
    // Parameters of the layers an ONNX import added for operations PyTorch computes without any (a
    // constant inside the network as a depthwise 1x1 Conv, x[:, :, ::2, ::2], zeros padded to the
    // channels; each has a note): PyTorch's own count is numParams() less these. Informative, not stored.
    std::size_t importAddedParams = 0;
    // Parameters of the file's model that the import folded away: a BatchNorm1d's gamma and beta
    // folded into the Linear beside it (a bias the fold gave a bias-free Linear is in
    // importAddedParams). PyTorch's count is numParams() - importAddedParams + importFoldedParams.
    std::size_t importFoldedParams = 0;
    // An imported ONNX graph's input and output names (informative, not stored; empty for other
    // sources). QuantScope's own ONNX exports name them "input" and "logits" (io/onnx_io.h).
    std::string onnxInputName, onnxOutputName;
    // An imported ONNX graph whose input declares H and/or W dynamic (informative, not stored):
    // height and width are the size it was read at (io/onnx_import.h OnnxImportOptions), and
    // readModelFile(path, height, width) reads it at another, such as the data's.
    bool dynamicImageSize = false;
    // How many outputs the imported ONNX graph has (informative, not stored; 1 for other sources).
    // With more than one, readModelFile(path, height, width, classes) may read another output as
    // the class scores (OnnxImportOptions::classes).
    std::size_t graphOutputs = 1;

    // "int8 weights (channel), uint8 activations" for an integer model, with ", narrow range" when
    // its signed weights use [-(2^(b-1)-1), 2^(b-1)-1] (--narrow-range, read from the tensors); "fp32".
    std::string precisionText() const;

    // Parameters and (integer models) activation points, summed over layers.
    std::size_t numParams() const;
    // The one layer that reads layer i's output, or -1 when none or several do.
    long soleConsumer(std::size_t i) const;
    // Per-image shapes of every activation (input first); call validate() first.
    std::vector<Shape> activationShapes() const;
    // Throws FormatError (prefixed with `source`) unless every layer reads earlier activations of
    // shapes it can take and the last produces `classes` outputs, every tensor has its layer's shape and a valid layout, and integer
    // models have the activation quantization the engines need.
    void validate(const std::string& source) const;
};

// An FP32 model as stored (every layer, BatchNorm with running statistics).
// `norm` is widened to the model's channels (Normalization::broadcast); throws ConfigError if it cannot be.
ExportedModel exportFloatModel(Model& model, const std::string& modelName, const Normalization& norm,
                               const std::vector<std::string>& classNames);

// Builds the layers of `m` as a Model. Float tensors are copied, integer tensors dequantized.
// Throws FormatError if the description does not make a model.
std::unique_ptr<Model> buildModel(const ExportedModel& m);

// Fake-quantizes activations at the points recorded in an integer ExportedModel, with the
// arithmetic of QuantSim, so the float Model from buildModel() reproduces the quantized model.
class StoredActivationHooks final : public LayerHooks {
public:
    // model: the Model built from m (buildModel) that these hooks will run with, or nullptr. With
    // it, an average pool on its input's grid sums its input's codes as the engine does
    // (quant/exact_pool.h), for global pools and windows of any size; without it only an
    // AvgPool2d's codes are recovered from its float output.
    explicit StoredActivationHooks(const ExportedModel& m, const Model* model = nullptr);
    void onInput(Tensor& x, const RunContext& ctx) override;
    void afterForward(std::size_t layer, Layer& l, Tensor& y, const RunContext& ctx) override;

private:
    std::optional<ActivationQuant> m_input;
    std::vector<std::optional<ActivationQuant>> m_points;
    // per layer: an AvgPool2d or GlobalAvgPool2d on its input's grid (quant/exact_pool.h)
    std::vector<std::uint8_t> m_sameGridPool;
    const Model* m_model = nullptr;
};

// Applies one activation quantization in place (QuantSim's fake-quant arithmetic).
void fakeQuantizeActivation(Tensor& y, const ActivationQuant& a);

} // namespace quantscope
