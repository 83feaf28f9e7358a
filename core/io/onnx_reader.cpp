// The reader of QuantScope's own ONNX exports (onnx_reader.h): the graph walk, the operator table
// and the operators that are one node each.
#include "io/onnx_reader.h"

#include "io/onnx_import.h"
#include "io/onnx_importer.h"
#include "io/onnx_io.h"
#include "io/onnx_parse.h"
#include "nn/pointwise.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace quantscope {

namespace {
constexpr std::uint64_t kOnnxMaxBytes = std::uint64_t{1} << 30;
} // namespace

void OnnxReader::sub(const onnx::NodeProto& n)
{
    if (input(n, 0) != m_mp.graph().input(0).name() || m_sawSub) failNode(n, "only the input normalisation (input - mean) is read");
    m_m.normalization.mean = perChannel(init(input(n, 1)));
    m_sawSub = true;
    m_centered = n.output(0);
}

void OnnxReader::div(const onnx::NodeProto& n)
{
    if (n.doc_string() == std::string(kOnnxLayerMark) + "LayerNorm2d") return layerNorm2d(n, false);
    if (!m_sawSub || input(n, 0) != m_centered || m_act.count(m_centered)) failNode(n, "only the input normalisation ((input - mean) / stddev) is read");
    m_m.normalization.stddev = perChannel(init(input(n, 1)));
    define(n, 0);
}

void OnnxReader::quantizeLinear(const onnx::NodeProto& n)
{
    const ActivationQuant a = activationQuant(n);
    const std::size_t k = activation(n, 0);
    std::optional<ActivationQuant>& slot = k == 0 ? m_m.inputQuant : m_m.layers[k - 1].outputQuant;
    if (slot) failNode(n, "quantizes an activation that is quantized already");
    slot = a;
    if (n.output_size() != 1 || m_act.count(n.output(0)) || m_quant.count(n.output(0)) || m_dq.count(n.output(0)))
        failNode(n, "must make one new value");
    m_quant[n.output(0)] = k;
}

void OnnxReader::dequantizeLinear(const onnx::NodeProto& n)
{
    if (auto it = m_quant.find(input(n, 0)); it != m_quant.end()) { // the activation pair
        const std::size_t k = it->second;
        const ActivationQuant& q = k == 0 ? *m_m.inputQuant : *m_m.layers[k - 1].outputQuant;
        if (!(activationQuant(n, true) == q)) failNode(n, "does not undo the QuantizeLinear before it");
        define(n, k);
        return;
    }
    StoredTensor t;
    const TensorProto& q = init(input(n, 0));
    t.shape.assign(q.dims().begin(), q.dims().end());
    t.encoding = TensorEncoding::Int;
    t.q = ints(q);
    const TensorProto& s = init(input(n, 1));
    t.scales = floats(s);
    t.zeroPoints = n.input_size() > 2 && !n.input(2).empty() ? ints(init(n.input(2))) : std::vector<std::int32_t>(t.scales.size(), 0);
    t.isSigned = true;
    if (q.data_type() == TensorProto::INT32) {
        t.bits = 32;
        t.qmin = std::numeric_limits<std::int32_t>::min();
        t.qmax = std::numeric_limits<std::int32_t>::max();
    } else {
        if (q.data_type() != TensorProto::INT8) failNode(n, "weights are read as int8 or int32");
        t.bits = 8;
        t.qmin = -128;
        t.qmax = 127;
        int bits = 0, lo = 0, hi = 0;
        if (std::sscanf(q.doc_string().c_str(), "bits=%d qmin=%d qmax=%d", &bits, &lo, &hi) == 3) {
            if (bits < 2 || bits > 8 || lo < -128 || hi > 127 || lo >= hi) failNode(n, "the weight grid '" + q.doc_string() + "' is not int2..int8");
            t.bits = bits;
            t.qmin = lo;
            t.qmax = hi;
        }
    }
    t.layout = s.dims_size() == 0 ? ScaleLayout::Tensor : ScaleLayout::Channel;
    if (t.layout == ScaleLayout::Channel && attrInt(n, "axis", 1) != 0) failNode(n, "per-channel scales are read on axis 0");
    if (t.zeroPoints.size() != t.scales.size()) failNode(n, "has " + std::to_string(t.zeroPoints.size()) + " zero points for " + std::to_string(t.scales.size()) + " scales");
    if (n.output_size() != 1 || m_dq.count(n.output(0)) || m_act.count(n.output(0)) || m_quant.count(n.output(0)))
        failNode(n, "must make one new value");
    m_dq[n.output(0)] = std::move(t);
}

void OnnxReader::conv(const onnx::NodeProto& n)
{
    StoredLayer& l = layer(n, LayerKind::Conv2d);
    l.tensors.push_back(tensorOf(input(n, 1), "weight"));
    if (n.input_size() > 2 && !n.input(2).empty()) l.tensors.push_back(tensorOf(n.input(2), "bias"));
    const Shape& ws = l.tensors[0].shape;
    if (ws.size() != 4 || ws[2] < 1 || ws[2] > 64 || ws[3] < 1 || ws[3] > 64) failNode(n, "has a weight of shape " + shapeString(ws));
    const std::int64_t groups = attrInt(n, "group", 1);
    if (groups < 1 || groups > 65536) failNode(n, "group = " + std::to_string(groups));
    l.groups = static_cast<std::size_t>(groups);
    l.outChannels = ws[0];
    l.inChannels = ws[1] * l.groups;
    // Any window (the export writes kernel_shape, strides, pads [top, left, bottom, right], dilations).
    ConvGeometry g;
    g.kh = ws[2], g.kw = ws[3];
    const std::vector<std::size_t> ks = sizesAttr(n, "kernel_shape", 2, {g.kh, g.kw}, 1);
    if (ks[0] != g.kh || ks[1] != g.kw) failNode(n, "kernel_shape is not the weight's");
    const std::vector<std::size_t> st = sizesAttr(n, "strides", 2, {1, 1}, 1), di = sizesAttr(n, "dilations", 2, {1, 1}, 1);
    const std::vector<std::size_t> pa = sizesAttr(n, "pads", 4, {0, 0, 0, 0}, 0);
    g.sh = st[0], g.sw = st[1], g.dh = di[0], g.dw = di[1];
    g.padTop = pa[0], g.padLeft = pa[1], g.padBottom = pa[2], g.padRight = pa[3];
    const std::string autoPad = attrString(n, "auto_pad", "NOTSET");
    if (autoPad != "NOTSET" && autoPad != "VALID") failNode(n, "auto_pad = " + autoPad + " is not read (QuantScope writes explicit pads)");
    l.setConvGeometry(g);
    l.bnFolded = m_folded.count(l.name) > 0;
    m_unnamedConv = m_unnamedConv || n.name().empty();
}

void OnnxReader::gemm(const onnx::NodeProto& n)
{
    StoredLayer& l = layer(n, LayerKind::Linear);
    l.tensors = {tensorOf(input(n, 1), "weight")};
    if (n.input_size() > 2 && !n.input(2).empty()) l.tensors.push_back(tensorOf(n.input(2), "bias")); // none: bias=False
    const Shape& ws = l.tensors[0].shape;
    if (ws.size() != 2 || attrInt(n, "transB", 0) != 1 || attrInt(n, "transA", 0) != 0 || attrFloat(n, "alpha", 1.0f) != 1.0f ||
        attrFloat(n, "beta", 1.0f) != 1.0f)
        failNode(n, "is not x * W^T + b");
    l.outFeatures = ws[0];
    l.inFeatures = ws[1];
}

void OnnxReader::batchNormalization(const onnx::NodeProto& n)
{
    StoredLayer& l = layer(n, LayerKind::BatchNorm2d);
    const char* names[] = {"gamma", "beta", "running_mean", "running_var"};
    for (int i = 0; i < 4; ++i) {
        l.tensors.push_back(tensorOf(input(n, i + 1), names[i]));
        if (l.tensors.back().encoding != TensorEncoding::Float32) failNode(n, "BatchNorm statistics are read as float32");
    }
    l.outChannels = l.tensors[0].numel();
    l.eps = attrFloat(n, "epsilon", 1e-5f);
    l.momentum = 1.0f - attrFloat(n, "momentum", 0.9f);
}

void OnnxReader::clip(const onnx::NodeProto& n)
{
    float b[2] = {-std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()};
    for (int i = 1; i <= 2; ++i) b[i - 1] = n.input_size() > i && !n.input(i).empty() ? scalar(init(n.input(i))) : b[i - 1];
    if (b[0] == 0.0f && b[1] == 6.0f) return void(layer(n, LayerKind::ReLU6));
    if (const std::string why = hardtanhBoundsProblem(b[0], b[1]); !why.empty()) failNode(n, why);
    StoredLayer& l = layer(n, LayerKind::Hardtanh);
    l.alpha = b[0], l.beta = b[1];
}

void OnnxReader::add(const onnx::NodeProto& n)
{
    if (n.doc_string() == std::string(kOnnxLayerMark) + "LayerNorm2d") layerNorm2d(n, true);
    else if (m_parts.count(input(n, 0))) groupNorm(n, true);
    else layer(n, LayerKind::Add, 2);
}

void OnnxReader::concat(const onnx::NodeProto& n)
{
    if (attrInt(n, "axis", 0) != 1) failNode(n, "is read along the channels (axis 1) only");
    if (n.input_size() < 2 || n.input_size() > 255) failNode(n, "joins " + std::to_string(n.input_size()) + " inputs (2 to 255 are read)");
    layer(n, LayerKind::Concat, n.input_size());
}

void OnnxReader::pad(const onnx::NodeProto& n)
{
    const bool layerMark = n.doc_string() == std::string(kOnnxLayerMark) + "Pad"; // a Pad layer; else an AveragePool's padding
    const std::string mode = attrString(n, "mode", "constant");
    if (!layerMark && mode != "constant") failNode(n, "only a constant Pad is read before an AveragePool");
    if (mode != "constant" && mode != "reflect" && mode != "edge") failNode(n, "mode '" + mode + "' is not one QuantScope writes");
    if (n.input_size() > 2 && !n.input(2).empty() && scalar(init(n.input(2))) != 0.0f) failNode(n, "only a Pad of zeros is read");
    const TensorProto& t = init(input(n, 1));
    const bool eight = numel(t) == 8 && (t.has_raw_data() ? t.raw_data().size() == 64 : t.int64_data_size() == 8);
    if (t.data_type() != TensorProto::INT64 || !eight) failNode(n, "pads '" + t.name() + "' is not 8 int64 values");
    std::int64_t v[8];
    if (t.has_raw_data()) std::memcpy(v, t.raw_data().data(), sizeof v);
    else std::copy(t.int64_data().begin(), t.int64_data().end(), v);
    if (v[0] || v[1] || v[4] || v[5]) failNode(n, "pads the batch or the channels");
    if (std::any_of(v, v + 8, [](std::int64_t x) { return x < 0 || x > 64; })) failNode(n, "pads by less than 0 or more than 64");
    if (n.output_size() != 1 || n.output(0).empty() || m_act.count(n.output(0)) || m_padded.count(n.output(0)))
        failNode(n, "must make one new value");
    if (layerMark) {
        StoredLayer& l = layer(n, LayerKind::Pad);
        l.padMode = mode == "reflect" ? PadMode::Reflect : mode == "edge" ? PadMode::Replicate : PadMode::Zeros;
        l.pads = {static_cast<std::size_t>(v[2]), static_cast<std::size_t>(v[3]), static_cast<std::size_t>(v[6]), static_cast<std::size_t>(v[7])};
        return;
    }
    m_padded[n.output(0)] = {activation(n, 0), {static_cast<std::size_t>(v[2]), static_cast<std::size_t>(v[3]),
                                                static_cast<std::size_t>(v[6]), static_cast<std::size_t>(v[7])}};
}

void OnnxReader::pool(const onnx::NodeProto& n, LayerKind kind)
{
    // Over a Pad's output (pad): the pool reads the Pad's input, and its window counts the
    // Pad's zeros (PyTorch's count_include_pad).
    const auto padded = n.input_size() > 0 ? m_padded.find(n.input(0)) : m_padded.end();
    std::vector<std::size_t> ends; // the pool's own end pads after a Pad: ceil_mode's windows
    if (padded != m_padded.end()) {
        if (kind != LayerKind::AvgPool2d) failNode(n, "reads a Pad's output; only an AveragePool is read after a Pad");
        ends = sizesAttr(n, "pads", 4, {0, 0, 0, 0}, 0);
        if (ends[0] || ends[1]) failNode(n, "pads the start of a Pad's output again");
        if (attrInt(n, "count_include_pad", 0) != 0 || attrInt(n, "ceil_mode", 0) != 0)
            failNode(n, "reads a Pad's output with count_include_pad or ceil_mode");
    }
    StoredLayer& l = padded == m_padded.end() ? layer(n, kind) : layerOn(n, kind, padded->second.act);
    // Any window (the export writes kernel_shape, strides, pads [top, left, bottom, right],
    // ceil_mode, and for AveragePool with pads count_include_pad).
    const std::vector<std::size_t> ks = sizesAttr(n, "kernel_shape", 2, {0, 0}, 1);
    if (ks[0] == 0) failNode(n, "lacks kernel_shape");
    const std::vector<std::size_t> st = sizesAttr(n, "strides", 2, {1, 1}, 1);
    const std::vector<std::size_t> pa = sizesAttr(n, "pads", 4, {0, 0, 0, 0}, 0);
    PoolGeometry g;
    g.kh = ks[0], g.kw = ks[1], g.sh = st[0], g.sw = st[1];
    g.padTop = pa[0], g.padLeft = pa[1], g.padBottom = pa[2], g.padRight = pa[3];
    const std::int64_t ceil = attrInt(n, "ceil_mode", 0), count = attrInt(n, "count_include_pad", 0);
    if (ceil != 0 && ceil != 1) failNode(n, "ceil_mode = " + std::to_string(ceil));
    if (count != 0 && count != 1) failNode(n, "count_include_pad = " + std::to_string(count));
    g.ceilMode = ceil == 1;
    g.countIncludePad = kind == LayerKind::MaxPool2d || count == 1;
    if (padded != m_padded.end()) { // PyTorch's AvgPool2d(count_include_pad=True), with ceil_mode where the pool pads the end
        const std::array<std::size_t, 4>& p = padded->second.pads; // top, left, bottom, right
        g.padTop = p[0], g.padLeft = p[1], g.padBottom = p[2], g.padRight = p[3];
        g.countIncludePad = true;
        g.ceilMode = ends[2] || ends[3];
        if (g.ceilMode) m_ceilEnds.push_back({m_m.layers.size() - 1, ends[2], ends[3]});
        padded->second.read = true;
    }
    l.setPoolGeometry(g);
    if (sizesAttr(n, "dilations", 2, {1, 1}, 1) != std::vector<std::size_t>{1, 1}) failNode(n, "dilations are not read");
    for (const auto& a : n.attribute())
        if (a.name() == "auto_pad" && a.s() != "NOTSET") failNode(n, "auto_pad is not read");
}

void OnnxReader::maxPool(const onnx::NodeProto& n)
{
    if (n.output_size() != 2) return pool(n, LayerKind::MaxPool2d);
    onnx::NodeProto values = n; // the Indices output encodeOnnx adds after a zero Pad layer (read by nothing)
    values.mutable_output()->RemoveLast();
    pool(values, LayerKind::MaxPool2d);
}

void OnnxReader::reduceMax(const onnx::NodeProto& n)
{
    if (attrInts(n, "axes") != std::vector<std::int64_t>{1} || attrInt(n, "keepdims", 1) != 1)
        failNode(n, "is read only over the channels (axes [1], keepdims 1), a ChannelMax");
    layer(n, LayerKind::ChannelMax);
}

void OnnxReader::flatten(const onnx::NodeProto& n)
{
    if (attrInt(n, "axis", 1) != 1) failNode(n, "does not flatten from axis 1");
    layer(n, LayerKind::Flatten);
}

void OnnxReader::logSoftmax(const onnx::NodeProto& n)
{
    const std::int64_t axis = attrInt(n, "axis", -1);
    if (axis != 1 && axis != -1) failNode(n, "is not over the classes");
    layer(n, LayerKind::LogSoftmax);
}

void OnnxReader::softmax(const onnx::NodeProto& n)
{
    const std::int64_t axis = attrInt(n, "axis", -1);
    if (axis != 1 && axis != -1) failNode(n, "is not over the classes");
    layer(n, LayerKind::Softmax);
}

void OnnxReader::selu(const onnx::NodeProto& n)
{
    if (attrFloat(n, "alpha", kOnnxSeluAlpha) != kOnnxSeluAlpha || attrFloat(n, "gamma", kOnnxSeluGamma) != kOnnxSeluGamma)
        failNode(n, "only PyTorch's SELU (Selu's default alpha and gamma) is read");
    pointwise(n, LayerKind::SELU);
}

void OnnxReader::checkHardSigmoid(const onnx::NodeProto& n) const
{
    if (std::abs(attrFloat(n, "alpha", 0.2f) - 1.0f / 6.0f) > 1e-7f || attrFloat(n, "beta", 0.5f) != 0.5f)
        failNode(n, "only HardSigmoid(alpha = 1/6, beta = 1/2) (PyTorch's Hardsigmoid) is read");
}

void OnnxReader::hardSigmoid(const onnx::NodeProto& n)
{
    checkHardSigmoid(n);
    pointwise(n, LayerKind::Hardsigmoid);
}

void OnnxReader::prelu(const onnx::NodeProto& n)
{
    StoredLayer& l = layer(n, LayerKind::PReLU);
    StoredTensor w = tensorOf(input(n, 1), "weight");
    if (w.encoding != TensorEncoding::Float32) failNode(n, "the slope is read as float32");
    const bool chw = w.shape.size() == 3 && w.shape[1] == 1 && w.shape[2] == 1;
    if (w.shape.size() != 1 && !chw) failNode(n, "has a slope of shape " + shapeString(w.shape) + " (read: (1), (C), (C, 1, 1))");
    w.shape = {w.numel()};
    l.tensors = {std::move(w)};
}

void OnnxReader::slice(const onnx::NodeProto& n)
{
    std::int64_t v[3];
    for (int i = 0; i < 3; ++i) {
        const std::vector<std::int64_t> one = onnximport::int64Values(init(input(n, i + 1)), m_source);
        if (one.size() != 1) failNode(n, "starts, ends and axes are read as one value each");
        v[i] = one[0];
    }
    if (v[2] != 1 || n.input_size() > 4 || v[0] < 0 || v[1] <= v[0] || v[1] > (std::int64_t{1} << 24))
        failNode(n, "only a Slice of channels [begin, end) along axis 1 with step 1 is read");
    StoredLayer& l = layer(n, LayerKind::Slice);
    l.sliceBegin = static_cast<std::size_t>(v[0]), l.sliceEnd = static_cast<std::size_t>(v[1]);
}

const std::map<std::string, OnnxReader::Handler>& OnnxReader::handlers()
{
    static const std::map<std::string, Handler> table = {
        {"Sub", &OnnxReader::sub},
        {"Div", &OnnxReader::div},
        {"QuantizeLinear", &OnnxReader::quantizeLinear},
        {"DequantizeLinear", &OnnxReader::dequantizeLinear},
        {"Conv", &OnnxReader::conv},
        {"Gemm", &OnnxReader::gemm},
        {"BatchNormalization", &OnnxReader::batchNormalization},
        {"Relu", &OnnxReader::relu},
        {"Clip", &OnnxReader::clip},
        {"Add", &OnnxReader::add},
        {"Concat", &OnnxReader::concat},
        {"MaxPool", &OnnxReader::maxPool},
        {"ReduceMax", &OnnxReader::reduceMax},
        {"AveragePool", &OnnxReader::averagePool},
        {"Pad", &OnnxReader::pad},
        {"GlobalAveragePool", &OnnxReader::globalAveragePool},
        {"Flatten", &OnnxReader::flatten},
        {"LogSoftmax", &OnnxReader::logSoftmax},
        {"Softmax", &OnnxReader::softmax},
        {"Identity", &OnnxReader::identity},
        {"Sigmoid", &OnnxReader::sigmoid},
        {"Tanh", &OnnxReader::tanh},
        {"Softplus", &OnnxReader::softplus},
        {"Softsign", &OnnxReader::softsign},
        {"Selu", &OnnxReader::selu},
        {"Celu", &OnnxReader::celu},
        {"HardSigmoid", &OnnxReader::hardSigmoid},
        {"LeakyRelu", &OnnxReader::leakyRelu},
        {"PRelu", &OnnxReader::prelu},
        {"Elu", &OnnxReader::elu},
        {"Mul", &OnnxReader::mul},
        {"Erf", &OnnxReader::erf},
        {"Reshape", &OnnxReader::reshape},
        {"Slice", &OnnxReader::slice},
    };
    return table;
}

ExportedModel OnnxReader::read()
{
    onnximport::checkOnnxVersions(m_mp, m_source);
    // QuantScope writes opset 13 (kOnnxOpset); the operators it writes read the same up to the
    // 17 (later ones change QuantizeLinear and DequantizeLinear).
    const std::int64_t opset = onnximport::defaultOpset(m_mp);
    if (opset < kOnnxOpset) fail("the model does not import the default ONNX opset >= " + std::to_string(kOnnxOpset));
    if (opset > kOnnxOwnMaxOpset)
        throw ConfigError(m_source + ": the model imports ONNX opset " + std::to_string(opset) + "; QuantScope writes opset " +
                          std::to_string(kOnnxOpset) + " and reads its own exports at opsets " + std::to_string(kOnnxOpset) + " to " +
                          std::to_string(kOnnxOwnMaxOpset));
    const onnx::GraphProto& g = m_mp.graph();
    if (g.input_size() < 1 || g.output_size() != 1) fail("expected one input and one output");
    m_folded = onnximport::readOwnMetadata(m_mp, m_m, m_source);
    const auto& inShape = g.input(0).type().tensor_type().shape();
    if (inShape.dim_size() != 4) fail("the input is not [N, C, H, W]");
    if (inShape.dim(0).has_dim_value() && inShape.dim(0).dim_value() <= 0)
        fail("input '" + g.input(0).name() + "' dimension 0 (N, the batch) is " + std::to_string(inShape.dim(0).dim_value()) +
             (inShape.dim(0).dim_value() < 0 ? ": an ONNX dimension is a size >= 0 or a name (dim_param)" : ": a batch of no images") +
             " (QuantScope writes the name 'N')");
    auto dim = [&](int i) -> std::size_t {
        const std::int64_t d = inShape.dim(i).dim_value();
        if (d <= 0 || d > 4096) fail("input '" + g.input(0).name() + "' dimension " + std::to_string(i) + " is " + std::to_string(d));
        return static_cast<std::size_t>(d);
    };
    m_m.channels = dim(1);
    m_m.height = dim(2);
    m_m.width = dim(3);

    for (const onnx::NodeProto& n : g.node()) {
        if (const std::string* twice = onnximport::repeatedAttr(n)) failNode(n, "has the attribute '" + *twice + "' twice (a damaged file)");
        // Every node QuantScope writes makes a value (fuzz_onnx_qdq: a Sub without outputs was read past its end)
        if (n.output_size() < 1 || n.output(0).empty()) failNode(n, "makes no value (a damaged file)");
        if (n.doc_string() == kOnnxPart) {
            part(n);
            continue;
        }
        const auto it = handlers().find(n.op_type());
        if (it == handlers().end()) failNode(n, "operator " + n.op_type() + " is not one QuantScope exports");
        (this->*(it->second))(n);
    }
    for (const auto& [value, p] : m_padded)
        if (!p.read) fail("Pad output '" + value + "' is read by no AveragePool");
    if (m_m.layers.empty()) fail("the graph has no layers");
    const auto out = m_act.find(g.output(0).name());
    if (out == m_act.end() || out->second != m_m.layers.size())
        fail("the graph output '" + g.output(0).name() + "' is not the value of its last layer");
    m_m.quantized = m_m.inputQuant.has_value();
    const auto& outShape = g.output(0).type().tensor_type().shape();
    if (outShape.dim_size() != 2 || outShape.dim(1).dim_value() <= 0 || outShape.dim(1).dim_value() > 65536 ||
        (outShape.dim(0).has_dim_value() && outShape.dim(0).dim_value() <= 0))
        fail("the output is not [N, classes]");
    m_m.classes = static_cast<std::size_t>(outShape.dim(1).dim_value());
    onnximport::checkOwnMetadata(m_mp, m_m, m_folded, m_unnamedConv, m_source);
    m_m.validate(m_source);
    if (!m_shuffled.empty()) { // the channel shuffles' Reshapes name the images they read
        const std::vector<Shape> shapes = m_m.activationShapes();
        for (const auto& [at, images] : m_shuffled)
            if (shapes.at(m_m.layers[at].inputs.at(0)) != images)
                fail("ChannelShuffle '" + m_m.layers[at].name + "' reshapes " + shapeString(images) + " images but reads " +
                     shapeString(shapes.at(m_m.layers[at].inputs.at(0))));
    }
    // A pool after a Pad, whose own end pads stand for ceil_mode (encodeOnnx): they must make
    // exactly the windows ceil_mode makes, over the padded input.
    if (!m_ceilEnds.empty()) {
        const std::vector<Shape> shapes = m_m.activationShapes();
        for (const CeilEnds& c : m_ceilEnds) {
            const StoredLayer& l = m_m.layers[c.layer];
            const PoolGeometry g = l.poolGeometry();
            const Shape& x = shapes.at(l.inputs.at(0));
            const auto floorOut = [](std::size_t padded, std::size_t end, std::size_t k, std::size_t s) {
                return padded + end >= k ? (padded + end - k) / s + 1 : 0;
            };
            if (x.size() != 3 || floorOut(g.paddedH(x[1]), c.bottom, g.kh, g.sh) != g.outH(x[1]) ||
                floorOut(g.paddedW(x[2]), c.right, g.kw, g.sw) != g.outW(x[2]))
                fail("AveragePool '" + l.name + "': its end pads after a Pad are not the windows of ceil_mode");
        }
    }
    return std::move(m_m);
}

ExportedModel decodeOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source)
{
    onnx::ModelProto mp;
    parseOnnxModel(bytes, mp, source, false); // OnnxReader names what its graph lacks
    return OnnxReader(mp, source).read();
}

ExportedModel readOnnx(const std::string& path) { return decodeOnnx(readFileBytes(path, kOnnxMaxBytes), path); }

ExportedModel readOnnxModel(const std::string& path, std::size_t height, std::size_t width, std::size_t classes)
{
    const std::vector<std::uint8_t> bytes = readFileBytes(path, kOnnxMaxBytes);
    onnx::ModelProto mp;
    parseOnnxModel(bytes, mp, path, false); // the importer checks the graph and the opset
    // One of QuantScope's own exports (FP32 or QDQ; its weights maybe re-saved beside it) is read by
    // OnnxReader; anything else, including a PyTorch export that carries quantscope.class_names, by the importer.
    bool ours = false;
    for (const auto& p : mp.metadata_props()) ours = ours || p.key() == "quantscope.model";
    OnnxImportOptions options{height, width, modelFolder(path)};
    options.classes = classes;
    if (!ours || mp.producer_name() != "QuantScope") return importOnnx(bytes, path, nullptr, options);
    onnximport::loadExternalData(mp, path, options.externalDataFolder);
    return OnnxReader(mp, path).read();
}

} // namespace quantscope
