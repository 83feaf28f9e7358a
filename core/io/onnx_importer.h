// The ONNX importer's graph walker, shared by onnx_import.cpp (graph checks, walk, layer naming),
// onnx_import_input_shape.cpp (the graph input's type and shape), onnx_import_ops.cpp (one handler
// per layer operator), onnx_import_shapes.cpp (shape operators and views) and
// onnx_import_input.cpp (the input normalisation); and what the reader of
// QuantScope's own exports (onnx_reader.cpp) shares with it and with onnx_reader_metadata.cpp.
// Internal to core/io.
#pragma once

#include "io/exported_model.h"
#include "io/onnx_const.h"
#include "io/onnx_import.h"
#include "io/onnx_parse.h"
#include "util/errors.h"

#include <onnx/onnx_pb.h>

#include <array>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace quantscope::onnximport {

// "[1, 64, 3, 3]": a dims list as errors print it.
inline std::string listOf(const std::vector<std::int64_t>& v)
{
    std::string s;
    for (std::int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
    return "[" + s + "]";
}

using onnx::NodeProto;

// The checks both ONNX readers (this importer and onnx_reader.cpp's reader of QuantScope's own
// exports) make first: an ir_version ONNX defines (1 to kOnnxNewestIrVersion; missing or <= 0 is
// FormatError, newer is ConfigError) and no default-domain opset newer than kOnnxNewestOpset
// (ConfigError). Each reader then checks the opsets it reads.
void checkOnnxVersions(const onnx::ModelProto& mp, const std::string& source);
// ONNX external data (onnx_external_data.cpp): every tensor of `mp` (initializers and node
// attributes, in subgraphs and local functions too) whose bytes live in a file named by its
// external_data 'location', relative to `folder` (the model file's), gets them as raw_data, read
// from its 'offset' for its dims' bytes (its 'length', when given, must agree). At most
// kMaxExternalBytes in all. Throws ConfigError when a tensor is external and no folder is known
// (the model came as bytes) or too large; FormatError for a location outside the folder (absolute,
// '..', or a link leading out), an offset or length the file or the dims contradict; IoError
// for a missing or unreadable file. Each names the model file, the tensor and the data file.
inline constexpr std::uint64_t kMaxExternalBytes = std::uint64_t{1} << 30;
void loadExternalData(onnx::ModelProto& mp, const std::string& source, const std::string& folder);
// The module a parameter initializer belongs to, as torch.onnx.export names them
// ("layer1.conv.weight" or ".bias" -> "layer1.conv"); "" for other names ("onnx::Conv_12").
std::string parameterModule(const std::string& initializer);

// The ai.onnx opset a model imports (the last entry of the default domain), 0 when none.
std::int64_t defaultOpset(const onnx::ModelProto& mp);
// At opset 18 and later: each reduction's constant axes input (ReduceMean, ReduceMax, ... not
// ReduceSum) moved into the axes attribute, the form of opsets up to 17 that the importer reads.
// ConfigError for axes computed in the graph, FormatError for malformed ones.
void reduceAxesToAttributes(onnx::ModelProto& mp, const std::string& source);
// The quantscope.* metadata of QuantScope's own exports, for their reader (onnx_reader_metadata.cpp).
// readOwnMetadata sets m's model name, strategy, weight and activation formats, granularity and
// class names from the keys encodeOnnx writes, and returns the Conv names quantscope.bn_folded
// lists; FormatError for a key given twice. checkOwnMetadata, once the graph is read, refuses
// (FormatError, by key and value) a value encodeOnnx does not write for m's kind of graph (FP32 or
// integer QDQ), and a `folded` name that is no Conv of m unless `unnamedConv` (a tool stripped the
// node names).
std::set<std::string> readOwnMetadata(const onnx::ModelProto& mp, ExportedModel& m, const std::string& source);
void checkOwnMetadata(const onnx::ModelProto& mp, const ExportedModel& m, const std::set<std::string>& folded, bool unnamedConv,
                      const std::string& source);
// BatchNorm without running statistics, said the same way wherever it is refused.
inline constexpr const char* kBatchStatisticsHint =
    "BatchNorm without running statistics (track_running_stats=False, or a model exported in training mode) cannot be imported: "
    "export the model in eval mode (model.eval(), torch.onnx.export(..., training=torch.onnx.TrainingMode.EVAL)) with running "
    "statistics (BatchNorm2d(..., track_running_stats=True))";

// For the reader of QuantScope's own exports (onnx_reader_metadata.cpp): an int64 initializer's
// values (at most 8; FormatError naming it otherwise), and the channel shuffle its three nodes
// write (onnx_io.cpp): the first Reshape's dims [0, g, C / g, rest...], the Transpose's perm
// [0, 2, 1, 3, ...] and the last Reshape's dims [0, C, rest...]. ownChannelShuffle sets groups
// and the images' per-image shape [C, rest...] and returns "", or what differs.
std::vector<std::int64_t> int64Values(const onnx::TensorProto& t, const std::string& source);
std::string ownChannelShuffle(const std::vector<std::int64_t>& grouped, const std::vector<std::int64_t>& perm,
                              const std::vector<std::int64_t>& back, std::size_t& groups, Shape& images);

struct Value {
    // Grouped: act's channels viewed as [g, C / g, ...] (the first Reshape of a channel shuffle),
    // then with those two axes swapped (its Transpose); read only by the next step of the shuffle.
    enum class Kind { Const, Act, Padded, Grouped } kind = Kind::Const;
    ConstTensor c;                     // Const
    std::size_t act = 0;               // Act, Padded, Grouped
    std::array<std::int64_t, 4> pads{}; // Padded: top, left, bottom, right zeros around act
    std::size_t groups = 0;            // Grouped: g
    std::size_t rank = 0;              // Grouped: the view's rank, the batch axis included
    bool transposed = false;           // Grouped: after the Transpose
};

class Importer {
public:
    Importer(const onnx::ModelProto& mp, const std::string& source, OnnxImportInfo& info, const OnnxImportOptions& options)
        : m_mp(mp), m_source(source), m_info(info), m_options(options)
    {
    }
    ExportedModel run();
    // The AveragePool whose output size depends on whose ceil_mode rule reads it (OnnxImportOptions::
    // PaddedCeilPool::Either), as the last run() found it: its label, its two sizes "HxW"; empty
    // when there was none.
    struct PaddedCeil {
        std::string node, pytorch, onnx;
    };
    const PaddedCeil& paddedCeil() const { return m_paddedCeil; }

private:
    using Handler = void (Importer::*)(const NodeProto&);
    static const std::map<std::string, Handler>& handlers();
    void checkArity(const NodeProto& n) const;
    [[noreturn]] void failUnsupported(const NodeProto& n, const std::vector<std::pair<std::string, int>>& others) const;

    [[noreturn]] void fail(const std::string& what, bool config = false) const
    {
        if (config) throw ConfigError(m_source + ": " + what);
        throw FormatError(m_source + ": " + what);
    }
    [[noreturn]] void failNode(const NodeProto& n, const std::string& what, bool config = true) const
    {
        fail(n.op_type() + " node " + onnxNodeName(n) + ": " + what, config);
    }

    // ---- values
    bool has(const NodeProto& n, int i) const { return i < n.input_size() && !n.input(i).empty(); }
    const Value& value(const NodeProto& n, int i) const
    {
        if (!has(n, i)) failNode(n, "lacks input " + std::to_string(i), false);
        const auto it = m_values.find(n.input(i));
        if (it == m_values.end()) failNode(n, "reads '" + n.input(i) + "', which its node does not make", false);
        return it->second;
    }
    const ConstTensor& constant(const NodeProto& n, int i, const char* what) const
    {
        const Value& v = value(n, i);
        if (v.kind != Value::Kind::Const) failNode(n, std::string(what) + " must be a constant (an initializer or folded), not an activation");
        // A float16 weight read by a float32 node is a type error in ONNX: the Cast is missing.
        if (v.c.halfType)
            failNode(n, std::string(what) + " ('" + n.input(i) + "') is " + elemTypeName(v.c.halfType) +
                            " while the node computes in float32: the graph lacks a Cast to float after it",
                     false);
        return v.c;
    }
    const ConstTensor* optConstant(const NodeProto& n, int i, const char* what) const
    {
        return has(n, i) ? &constant(n, i, what) : nullptr;
    }
    std::size_t act(const NodeProto& n, int i) const
    {
        const Value& v = value(n, i);
        if (v.kind == Value::Kind::Padded) failNode(n, "reads the output of a Pad; only a Conv or an AveragePool takes zero padding in front of it");
        if (v.kind == Value::Kind::Grouped)
            failNode(n, "reads the channels viewed as " + std::to_string(v.groups) + " groups" + (v.transposed ? ", transposed" : "") +
                            "; QuantScope reads such a view only as a channel shuffle: x.view(N, g, C // g, H, W), "
                            ".transpose(1, 2), .reshape(N, C, H, W)");
        if (v.kind != Value::Kind::Act) failConstantInput(n, i);
        return v.act;
    }
    // A node that computes on a constant where QuantScope needs an activation: a value made from
    // the weights alone, as weight standardisation or weight_norm make them. "input 0 must be an
    // activation, not a constant" told a user neither what the constant was nor the way out.
    [[noreturn]] void failConstantInput(const NodeProto& n, int i) const
    {
        failNode(n, "input " + std::to_string(i) + " ('" + n.input(i) + "') is a constant (a weight, or a value the graph computes from weights), not a value of the image; "
                        "QuantScope folds constants through element-wise arithmetic, reshaping and reductions (Cast, Reshape, Transpose, "
                        "Concat, Slice, Add, Mul, Div, Sqrt, Pow, ReduceMean, ReduceSum, ReduceL2, ...), not through " + n.op_type() +
                        ": where forward computes a weight with it, export the computed weight as the parameter instead");
    }
    const Shape& shapeOf(std::size_t a) const { return m_shapes[a]; }
    void define(const NodeProto& n, Value v, int out = 0)
    {
        if (out < n.output_size() && !n.output(out).empty()) m_values[n.output(out)] = std::move(v);
    }
    void alias(const NodeProto& n, std::size_t a)
    {
        Value v;
        v.kind = Value::Kind::Act;
        v.act = a;
        define(n, v);
    }
    void noExtraOutputs(const NodeProto& n)
    {
        for (int k = 1; k < n.output_size(); ++k)
            if (!n.output(k).empty() && m_uses[n.output(k)] > 0) failNode(n, "output " + std::to_string(k) + " is used; only the first is read");
    }
    std::string layerName(const NodeProto& n, const ConstTensor* weight);
    StoredLayer& addLayer(const NodeProto& n, StoredLayer l, Shape out, const std::vector<std::size_t>& inputs,
                          const ConstTensor* weight = nullptr, const std::string& suffix = {});
    std::size_t square(const NodeProto& n, const char* attr, std::vector<std::int64_t> v, std::int64_t def, std::size_t count);
    StoredTensor floatTensor(const char* name, Shape shape, std::vector<float> values) const;
    const std::vector<float>& floats(const NodeProto& n, const ConstTensor& t, const char* what) const
    {
        if (!t.isFloat) failNode(n, std::string(what) + " is not float");
        return t.f;
    }
    // The per-image shape input i is read under: its view (m_views) or its activation's shape.
    const Shape& viewedShape(const NodeProto& n, int i, std::size_t a) const
    {
        const auto v = m_views.find(n.input(i));
        return v != m_views.end() ? v->second : shapeOf(a);
    }
    // Records `view` as output 0's per-image shape when it differs from activation a's.
    void setView(const NodeProto& n, std::size_t a, const Shape& view)
    {
        if (n.output_size() > 0 && !n.output(0).empty() && view != shapeOf(a)) m_views[n.output(0)] = view;
    }
    void checkViews(const NodeProto& n) const;
    void propagateView(const NodeProto& n);
    void checkChannelsLast(const NodeProto& n) const;
    void propagateChannelsLast(const NodeProto& n);
    // Add, Sub, Mul or Div of maps permuted to channels-last and a constant broadcast against them
    // ([C], [1, 1, 1, C], [H, W, C], ...): true, with `out` a copy of n that reads the constant
    // permuted to the maps' channels-first order (a value of its own), so the handlers read it as
    // they read constants on channels-first maps.
    bool constantsChannelsFirst(const NodeProto& n, NodeProto& out);
    bool isChannelsLast(const std::string& v) const { return m_channelsLast.count(v) > 0; }
    // w (out x C H W, columns in the channels-last order [H, W, C] of input 0's features) with its
    // columns reordered to the activation's channels-first order, when input 0 is such features.
    void permuteChannelsLastColumns(const NodeProto& n, std::vector<float>& w, std::size_t out);
    std::size_t perImageRank(const NodeProto& n, std::size_t a, std::size_t rank, const char* what)
    {
        if (shapeOf(a).size() != rank)
            failNode(n, std::string(what) + ", but its input has per-image shape " + shapeString(shapeOf(a)));
        return rank;
    }

    // ---- graph
    void checkOpset();
    // The initializers, the image input and declared dimensions (onnx_import_input_shape.cpp).
    void readInput();
    void readFlatInput(const onnx::TensorShapeProto& shape);
    struct ReaderCount {
        std::int64_t count = 0; // channels, or features when flat; 0 when not known
        bool flat = false;
        bool channelsLast = false; // read through a Transpose of perm [0, 3, 1, 2]
        std::string reader;
        std::string why;      // count 0: what the readers said instead ("its readers disagree: ..."), or empty
        bool damaged = false; // count 0: why names a broken file (a FormatError), not a missing shape // "the Conv '/conv1/Conv'"
    };
    ReaderCount countFromReader() const;
    void checkDims(const onnx::TensorShapeProto& shape, const std::string& what) const;
    std::vector<int> liveOrder();

    // ---- operators
    void conv(const NodeProto& n);
    void convOnFlatView(const NodeProto& n, std::size_t x, const Shape& view);
    void gemm(const NodeProto& n);
    void matMul(const NodeProto& n);
    // nn.Linear on each pixel's channels of maps permuted to channels-last (a ConvNeXt block's
    // MLP): a 1x1 Conv (onnx_import_channels.cpp).
    void matMulChannelsLast(const NodeProto& n, std::size_t x);
    std::vector<std::string> m_channelsLastLinears; // the 1x1 Convs it made, named in one note (run)
    // LayerNorm over the channels of each pixel (a LayerNorm2d): nn.LayerNorm(C) on maps permuted
    // to channels-last, or ConvNeXt's channels_first LayerNorm (axes [1]) on channels-first maps.
    bool perPixelAxes(const std::string& x, const Shape& s, const std::vector<std::int64_t>& axes) const;
    void add(const NodeProto& n);
    enum class Fold { Add, Sub, Mul, Div };
    void foldConstant(const NodeProto& n, int actInput, const ConstTensor& c, Fold op);
    void foldIntoGroupNorm(const NodeProto& n, int ai, const ConstTensor& c, Fold op, StoredLayer& l);
    // A constant on maps inside the network, as a depthwise 1x1 Conv (onnx_import_conv.cpp);
    // reversed: c - x.
    void constantOnMaps(const NodeProto& n, int actInput, const ConstTensor& c, Fold op, bool reversed = false);
    // Whether input i is an activation inside the network (not the graph input before any layer).
    bool insideNetwork(const NodeProto& n, int i) const
    {
        const Value& v = value(n, i);
        return v.kind == Value::Kind::Act && m_m.layers.size() != inputHere();
    }
    // Where the input normalisation is read now: the graph input (m_inputAct), or, right after a
    // permutation of its channels (x[:, [2, 1, 0]], gatherChannels), the permuted input.
    std::size_t inputHere() const
    {
        return m_permutedInput != 0 && m_m.layers.size() == m_permutedInput ? m_permutedInput : m_inputAct;
    }
    // A per-channel constant of the permuted input in the graph input's channel order (as is
    // before any permutation, and for one value).
    std::vector<float> inInputOrder(std::vector<float> v) const;
    // Whether activation a holds only the graph input's pixels, rearranged: the input itself
    // behind Pads, clamps, constants read as depthwise Convs (m_constantLayers) and channel
    // selections or copies (m_pixelLayers). A constant on it is the graph's own normalisation.
    bool readsOnlyPixels(std::size_t a) const;
    std::vector<float> perChannel(const NodeProto& n, const ConstTensor& c, const char* what) const;
    void checkInputNormalisation(const NodeProto& n, int actInput) const;
    void refuseTwoActivations(const NodeProto& n, const char* what) const;
    void shiftInput(const NodeProto& n, const ConstTensor& c, float sign);
    void scaleInput(const NodeProto& n, std::vector<float> divisor);
    // A normalisation read on 0..255 pixels (a uint8 input, or constants only that scale fits)
    // rescaled to QuantScope's [0, 1] pixels, with a note; true when it rescaled.
    bool pixelScale255();
    // FormatError naming nn.Conv1d for a Conv of one spatial axis (kernel_shape [k], weight
    // [out, in, k]): named before its input's shape is (tester 20).
    void refuseConv1d(const NodeProto& n) const;
    bool onInput(const NodeProto& n, int i) const;
    bool foldsIntoLayer(const NodeProto& n, int i) const;
    void sub(const NodeProto& n);
    void differenceOfActivations(const NodeProto& n);
    StoredLayer depthwiseScale(std::vector<float> w, std::vector<float>* b) const;
    StoredLayer pointwiseConv(std::size_t in, std::size_t out, std::vector<float> w) const; // 1x1, groups 1, no bias
    // x[:, :, ::sh, ::sw] and zeros padded to the channels (onnx_import_channels.cpp)
    void subsample(const NodeProto& n, std::size_t x, std::array<std::size_t, 4> at); // bh, sh, bw, sw
    static constexpr std::size_t kMaxSliceOffset = 15; // x[:, :, b::s]: a kernel of b + 1 taps
    void padChannels(const NodeProto& n, std::size_t x, std::size_t before, std::size_t after);
    // A constant on flat features folded back into the layers that make them (onnx_import_fold_back.cpp):
    // false, with nothing changed, where it does not fold exactly.
    bool foldBackConstant(const NodeProto& n, int ai, const ConstTensor& c, Fold op);
    // A constant on flat features that does not fold back, read only by Linears (or by further
    // constants): kept pending, like a BatchNorm1d before a Linear, and folded into each Linear
    // that reads it (foldPendingAffine). False, with nothing changed, where something else reads it.
    bool constantBeforeLinear(const NodeProto& n, int ai, const ConstTensor& c, Fold op, bool reversed);
    bool onlyLinearsRead(const std::string& name, int depth) const;
    bool foldBack(std::size_t a, const std::vector<float>& f, bool scale, bool apply, int depth, std::vector<std::string>& into);
    int readersOf(std::size_t a) const; // live readers of activation a, under any of its names
    void neg(const NodeProto& n);
    void pow(const NodeProto& n);
    // Whether input i is the graph input before any layer (onInput) and something else reads its
    // values too: a normalisation of it then stays in the graph (normaliseInGraph).
    bool sharedInput(const NodeProto& n, int i) const;
    void normaliseInGraph(const NodeProto& n, int i, const ConstTensor& c, Fold op);
    void div(const NodeProto& n);
    void mul(const NodeProto& n);
    // ---- joins of activations (onnx_import_joins.cpp): Mul of two activations, Concat, and the
    // squeeze-and-excitation gate written with Linear layers (Flatten, Gemm/MatMul, ..., Reshape
    // back to [N, C, 1, 1]) read as 1x1 convolutions on the pooled [C, 1, 1] map.
    void mulActivations(const NodeProto& n);
    void concat(const NodeProto& n);
    // ---- channels moved (onnx_import_channels.cpp): Slice and Split along the channels, and the
    // channel shuffle x.view(N, g, C / g, ...).transpose(1, 2).reshape(N, C, ...) (ShuffleNet).
    void slice(const NodeProto& n);
    void split(const NodeProto& n);
    void transpose(const NodeProto& n);
    // Reshape's part in a channel shuffle: true when it took node n (per: its per-image target).
    bool shuffleReshape(const NodeProto& n, const Shape& per);
    // A Slice layer of channels [begin, end) of x at node n (output `out`), or x itself for all of them.
    void addChannelSlice(const NodeProto& n, std::size_t x, std::size_t begin, std::size_t end, int out, const std::string& suffix);
    void expand(const NodeProto& n);
    void findGateChains(const std::vector<int>& order);
    bool isGateFlatten(const NodeProto& n) const;
    void linearOnGateView(const NodeProto& n, std::size_t x, std::vector<float> w, std::size_t in, std::size_t out,
                          const std::vector<float>* bias, const ConstTensor& weight);
    std::set<std::string> m_gateFlattens; // outputs of the Flatten/Reshape/Squeeze nodes that start such a gate
    void relu(const NodeProto& n);
    void clip(const NodeProto& n);
    void pool(const NodeProto& n);
    void globalAveragePool(const NodeProto& n);
    void reduceMean(const NodeProto& n);
    void batchNormalization(const NodeProto& n);
    void batchNormAfterLinear(const NodeProto& n, std::size_t x);
    void batchNormBeforeLinear(const NodeProto& n, std::size_t x);
    std::pair<std::vector<double>, std::vector<double>> batchNorm1dAffine(const NodeProto& n, std::size_t c);
    void foldPendingAffine(const NodeProto& n, StoredLayer& l);
    void flatten(const NodeProto& n);
    void reshape(const NodeProto& n);
    void tile(const NodeProto& n);
    void channelCopies(const NodeProto& n, std::size_t x, std::size_t k);
    static constexpr std::int64_t kMaxRepeats = 64; // channel copies read from Expand and Tile
    void instanceNormalization(const NodeProto& n);
    bool readOnlyByInstanceNormalization(const std::string& v) const;
    void flattenImages(const NodeProto& n, std::size_t x);
    void flattenChannelsLast(const NodeProto& n, std::size_t x, const Shape& chw);
    void squeeze(const NodeProto& n);
    void gatherChannels(const NodeProto& n, std::size_t x, const std::vector<std::int64_t>& idx);
    static constexpr std::size_t kMaxGatheredChannels = 1 << 16; // indices of one channel Gather
    void squeezeAxes(const NodeProto& n, const std::vector<std::int64_t>& axes); // axes of the batched rank; empty: all of size 1
    void gather(const NodeProto& n);
    void unsqueeze(const NodeProto& n);
    void dropout(const NodeProto& n);
    void identity(const NodeProto& n);
    void cast(const NodeProto& n);
    void softmax(const NodeProto& n);
    void onlyReshapedToTheOutput(const NodeProto& n); // Softmax / LogSoftmax: the graph output, or only reshaped to it
    void logSoftmax(const NodeProto& n);
    void overTheClasses(const NodeProto& n, LayerKind kind); // softmax and logSoftmax
    void pad(const NodeProto& n);
    void shape(const NodeProto& n);
    void pointwise(const NodeProto& n);
    void erf(const NodeProto& n);
    void prelu(const NodeProto& n);
    void checkHardSigmoid(const NodeProto& n, const char* context) const;

    // ---- activations written as subgraphs (onnx_import_activations.cpp)
    struct Subgraph {
        LayerKind kind;                     // SiLU, Hardswish, Hardsigmoid, GELU, GELUTanh; GlobalAvgPool2d, MaxPool2d (onnx_import_pooling.cpp)
        int root = -1;                      // its last node: where the layer is made
        std::string x;                      // the value it reads
        std::vector<int> nodes;             // every node of it (skipped by the walk)
        std::vector<std::string> constants; // GELU: the scale of x, the added 1, the factor 0.5; GELUTanh: kappa,
                                            // sqrt(2/pi), the added 1, the factor 0.5, a Pow's exponent ("" for x x x);
                                            // a sum's mean: the divisor, the ReduceSum's axes input ("" if an attribute)
        int keptDims = 2;                   // pooling: output [N, C] (0, a Flatten follows), [N, C, 1] (1), [N, C, 1, 1] (2)
        std::vector<std::int64_t> axes{};   // GroupNorm (nn.LayerNorm's subgraph): the axes of its means
    };
    // Who makes and who reads each value, over the graph's nodes in `order`.
    struct GraphReaders {
        std::map<std::string, int> producer;
        std::map<std::string, std::vector<int>> readers;
    };
    GraphReaders graphReaders(const std::vector<int>& order) const;
    // The one node reading v, and reading it once, or -1.
    int soleReader(const GraphReaders& g, const std::string& v);
    std::optional<double> scalarConstant(const std::string& v, const std::map<std::string, int>& producer) const;
    void findActivationSubgraphs(const std::vector<int>& order, const std::set<std::string>& dynamic);
    struct ProductTree {
        int root = -1;
        std::vector<int> muls;
        std::string factor; // the constant leaf
    };
    std::optional<ProductTree> productTree(const GraphReaders& gr, const std::string& sum, const std::string& x,
                                           const std::set<std::string>& dynamic);
    std::optional<Subgraph> geluTanhAt(int k, const GraphReaders& gr, const std::set<std::string>& dynamic);
    std::optional<Subgraph> layerNormAt(int k, const GraphReaders& gr, const std::set<std::string>& dynamic);
    void layerNormalization(const NodeProto& n);
    // channelsLast: the axes are of maps permuted to channels-last (refused unless the last alone, perPixelAxes).
    void checkLayerNormAxes(const NodeProto& n, const Shape& s, const std::vector<std::int64_t>& axes, bool channelsLast = false) const;
    std::optional<Subgraph> hardSigmoidByHandAt(int k, const GraphReaders& gr, const std::set<std::string>& dynamic);
    void readActivationSubgraph(const NodeProto& root, const Subgraph& s);
    // ---- global pooling idioms (onnx_import_pooling.cpp): x.mean(-1).mean(-1), x.sum((2, 3)) /
    // (H W) as subgraphs; GlobalMaxPool and ReduceMax over (H, W) as operators.
    void findPoolingSubgraphs(const std::vector<int>& order, const std::set<std::string>& dynamic);
    void readPoolingSubgraph(const NodeProto& root, const Subgraph& s);
    void globalMaxPool(const NodeProto& n);
    void channelReduction(const NodeProto& n, std::size_t x, bool max); // over axis 1: ChannelMax, or the mean as a 1x1 Conv
    // The GlobalAvgPool2d or MaxPool2d `l` over the whole [C, H, W] map of activation x, made at
    // node n, then shaped as keptDims says (a Flatten for 0, a [C, 1] view for 1).
    void addGlobalPool(const NodeProto& n, StoredLayer l, std::size_t x, int keptDims);
    std::vector<Subgraph> m_subgraphs;
    std::map<int, std::size_t> m_subgraphOf; // node index -> its subgraph

    const onnx::ModelProto& m_mp;
    const std::string& m_source;
    OnnxImportInfo& m_info;
    OnnxImportOptions m_options;
    PaddedCeil m_paddedCeil;
    int m_opset = 0;
    ExportedModel m_m;
    // per-image shape of every activation; a deque, so that a reference from shapeOf stays valid
    // while addLayer appends (a handler holding one across addLayer read freed memory)
    std::deque<Shape> m_shapes;
    std::map<std::string, Value> m_values; // every ONNX value defined so far
    std::map<std::string, int> m_uses;     // live readers of each value (graph output counts)
    // Values that alias an activation under a per-image shape of their own, which differs from the
    // activation's by trailing axes of size 1: the (N, C, 1) between the two Squeezes of
    // x.squeeze(-1).squeeze(-1), or the (N, K, 1, 1) of h.view(N, -1, 1, 1) / h[:, :, None, None]
    // on flat features (a 1x1 Conv head reads it as a Linear). Shape-preserving operators pass the
    // view on (propagateView); operators that would read it differently refuse it (checkViews).
    std::map<std::string, Shape> m_views;
    std::uint64_t m_foldedTotal = 0; // values folded so far (kMaxFoldedTotal)
    // Values holding an activation's [C, H, W] maps permuted to channels-last, [H, W, C] (the
    // Transpose of x.permute(0, 2, 3, 1)), or the C H W features of such maps flattened in that
    // order (.flatten(1), .reshape(N, -1)), as a model ported from Keras/TensorFlow flattens:
    // value -> the activation's [C, H, W]. The activation keeps QuantScope's channels-first order;
    // a Linear reading the flattened features takes its weight's columns reordered to match
    // (permuteChannelsLastColumns), element-wise activations pass the mark on, Transpose
    // perm [0, 3, 1, 2] undoes it. On maps, a ConvNeXt block's operators make marked maps of their
    // own: a LayerNorm over the last axis (a LayerNorm2d), MatMul (a 1x1 Conv), constants added or
    // multiplied (constantsChannelsFirst permutes them) and the join of two marked maps. Every
    // other operator refuses it (checkChannelsLast).
    std::map<std::string, Shape> m_channelsLast;
    // BatchNorm1d outputs (and constants on flat features) waiting for the Linear that reads them:
    // the nodes (op and name, for the note), and per feature the scale a and shift b of x' = a x + b (batchNormBeforeLinear,
    // constantBeforeLinear, foldPendingAffine).
    std::map<std::string, std::pair<std::string, std::pair<std::vector<float>, std::vector<float>>>> m_pendingAffine;
    // Set when a node folds a pending affine it reads (foldPendingAffine, constantBeforeLinear): a
    // node that reads one and does not is refused, never run without it.
    bool m_pendingUsed = false;
    std::set<std::string> m_names;         // layer names taken
    std::map<std::string, std::string> m_weightUser; // weight initializer -> the first layer made from it
    // Modules with a weight of their own in the file ("layer1.conv.weight" -> "layer1.conv"): names
    // a layer of another module's weight must not take. PyTorch scopes a module's second call
    // "conv_1", a model's own conv_1 too; a decoder tied to its encoder's weight has no weight of its
    // own and keeps its name.
    std::set<std::string> m_moduleNames;
    std::int64_t m_staticBatch = -1;       // the input's batch dimension when the export fixed it
    std::string m_inputName, m_outputName;
    int m_outputIndex = 0; // which of the graph's outputs m_outputName is (OnnxImportOptions::classes)
    bool m_channelsLastInput = false;      // an [N, H, W, C] input permuted by the first node (readInput)
    // A uint8 input's Casts to float32 (x.float()): what reads their outputs reads the input's
    // pixels, as what reads the input itself (x.float().permute(0, 3, 1, 2)).
    std::set<std::string> m_inputCasts;
    std::size_t m_inputAct = 0;            // the graph input's activation: 1 after a flat input's Flatten
    bool m_sawMean = false, m_sawStd = false;
    // A constant read as a depthwise Conv on the image input, directly where something else reads
    // the input too (normaliseInGraph) or behind Pads and clamps only (F.pad or x.clamp(0, 1), then
    // the normalisation: LeNet's 28 -> 32): the graph normalises its pixels itself (constantOnMaps).
    bool m_normalisesAfterPad = false;
    // Layers that only rearrange their input's values: a Gather of channels (x[:, [2, 1, 0]], a
    // one-hot 1x1 Conv) and copies of one activation (x.repeat(1, 3, 1, 1), a Concat); on the
    // graph input (readsOnlyPixels), a constant after them is the graph's own normalisation.
    std::set<std::size_t> m_pixelLayers;
    // A permutation of the graph input's channels that is its only reader (tester 15: x[:, [2, 1,
    // 0]], then the normalisation): its activation, and input channel m_inputPermutation[k] at its
    // channel k. The normalisation right after it is read as the input's, in the input's order.
    std::size_t m_permutedInput = 0;
    std::vector<std::size_t> m_inputPermutation;
    bool m_normalisedPermuted = false; // a normalisation was read after that permutation
    // Live readers of each value that read its elements (m_uses without Shape and Size nodes).
    std::map<std::string, int> m_valueReaders;
    std::set<std::size_t> m_constantLayers; // those depthwise Convs (layer indices)
    // The strided depthwise Convs of x[:, :, bh::sh, bw::sw] (subsample): layer index -> bh, sh, bw, sw.
    std::map<std::size_t, std::array<std::size_t, 4>> m_subsampleLayers;
    bool m_inputBytes = false; // the graph input is uint8 pixels (0..255), cast to float32 first
};

} // namespace quantscope::onnximport
