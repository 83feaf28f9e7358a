// ONNX reading: graphs of the shape encodeOnnx writes (onnx_io.cpp) back into an ExportedModel.
// One handler per operator, in a table; every node output is mapped to the activation index it
// holds (0 = normalised input, i + 1 = layer i's output; a Q/DQ pair or Identity keeps the index
// of its input), so layers read their inputs by index, as in the .qsm file. The quantscope.*
// metadata is read and checked in onnx_reader_metadata.cpp.
#include "io/onnx_io.h"

#include "io/onnx_import.h"
#include "io/onnx_importer.h"
#include "io/onnx_reader_values.h"
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
using onnx::TensorProto;

constexpr std::uint64_t kOnnxMaxBytes = std::uint64_t{1} << 30;
constexpr std::size_t kMaxOwnGroups = std::size_t{1} << 20; // a GroupNorm's groups, at most (validate checks them against the channels)

class OnnxReader : OnnxReaderValues {
public:
    OnnxReader(const onnx::ModelProto& mp, const std::string& source) : OnnxReaderValues(mp, source), m_mp(mp) {}

    ExportedModel read();

private:
    using Handler = void (OnnxReader::*)(const onnx::NodeProto&);
    static const std::map<std::string, Handler>& handlers();

    // The input normalisation's mean or stddev: one value (every channel) or [1, C, 1, 1].
    std::vector<float> perChannel(const TensorProto& t) const
    {
        std::vector<float> v = floats(t);
        if (v.size() == 1) return std::vector<float>(m_m.channels, v[0]);
        if (v.size() != m_m.channels || t.dims_size() != 4 || t.dims(1) != static_cast<std::int64_t>(m_m.channels))
            fail("initializer '" + t.name() + "' is neither one value nor one per input channel [1, C, 1, 1]");
        return v;
    }
    // ---- values
    const std::string& input(const onnx::NodeProto& n, int i) const
    {
        if (i >= n.input_size() || n.input(i).empty()) failNode(n, "lacks input " + std::to_string(i));
        return n.input(i);
    }
    // The activation index a node input holds.
    std::size_t activation(const onnx::NodeProto& n, int i) const
    {
        const std::string& v = input(n, i);
        const auto it = m_act.find(v);
        if (it == m_act.end() && m_padded.count(v)) failNode(n, "reads '" + v + "', a Pad's output, which only an AveragePool may read");
        if (it == m_act.end()) failNode(n, "reads '" + v + "', which no earlier node makes as an activation");
        return it->second;
    }
    void define(const onnx::NodeProto& n, std::size_t act)
    {
        if (n.output_size() != 1 || n.output(0).empty()) failNode(n, "has " + std::to_string(n.output_size()) + " outputs, expected 1");
        if (m_act.count(n.output(0)) || m_quant.count(n.output(0)) || m_dq.count(n.output(0)))
            failNode(n, "makes '" + n.output(0) + "' a second time");
        m_act[n.output(0)] = act;
    }
    // Appends a layer reading `inputs` (node inputs 0..inputs-1) and makes the node's output its activation.
    StoredLayer& layer(const onnx::NodeProto& n, LayerKind kind, int inputs = 1)
    {
        std::vector<std::size_t> acts;
        for (int i = 0; i < inputs; ++i) acts.push_back(activation(n, i));
        return appendLayer(n, kind, std::move(acts));
    }
    // The same, reading activation `act` in place of the node's input (a Pad's input: pool).
    StoredLayer& layerOn(const onnx::NodeProto& n, LayerKind kind, std::size_t act) { return appendLayer(n, kind, {act}); }
    StoredLayer& appendLayer(const onnx::NodeProto& n, LayerKind kind, std::vector<std::size_t> acts)
    {
        StoredLayer l;
        l.kind = kind;
        l.name = n.name();
        if (l.name.empty()) l.name = n.op_type() + "_" + std::to_string(m_m.layers.size() + 1); // names are optional in ONNX
        l.inputs = std::move(acts);
        m_m.layers.push_back(std::move(l));
        define(n, m_m.layers.size());
        return m_m.layers.back();
    }
    // A float initializer, or an integer one behind a DequantizeLinear.
    StoredTensor tensorOf(const std::string& v, const char* name) const
    {
        StoredTensor t;
        if (auto it = m_dq.find(v); it != m_dq.end()) {
            t = it->second;
        } else {
            const TensorProto& f = init(v);
            t.shape.assign(f.dims().begin(), f.dims().end());
            t.values = floats(f);
        }
        t.name = name;
        return t;
    }
    ActivationQuant activationQuant(const onnx::NodeProto& n) const
    {
        ActivationQuant a;
        const TensorProto& zp = init(input(n, 2));
        if (zp.data_type() != TensorProto::INT8 && zp.data_type() != TensorProto::UINT8) failNode(n, "zero point is not int8 or uint8");
        a.isSigned = zp.data_type() == TensorProto::INT8;
        a.bits = 8;
        a.qmin = a.isSigned ? -128 : 0;
        a.qmax = a.isSigned ? 127 : 255;
        a.scale = scalar(init(input(n, 1)));
        const std::vector<std::int32_t> z = ints(zp);
        if (z.size() != 1) failNode(n, "activations are quantized per tensor");
        a.zeroPoint = z[0];
        return a;
    }

    // ---- operators
    void sub(const onnx::NodeProto& n)
    {
        if (input(n, 0) != m_mp.graph().input(0).name() || m_sawSub) failNode(n, "only the input normalisation (input - mean) is read");
        m_m.normalization.mean = perChannel(init(input(n, 1)));
        m_sawSub = true;
        m_centered = n.output(0);
    }
    void div(const onnx::NodeProto& n)
    {
        if (n.doc_string() == std::string(kOnnxLayerMark) + "LayerNorm2d") return layerNorm2d(n, false);
        if (!m_sawSub || input(n, 0) != m_centered || m_act.count(m_centered)) failNode(n, "only the input normalisation ((input - mean) / stddev) is read");
        m_m.normalization.stddev = perChannel(init(input(n, 1)));
        define(n, 0);
    }
    void quantizeLinear(const onnx::NodeProto& n)
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
    void dequantizeLinear(const onnx::NodeProto& n)
    {
        if (auto it = m_quant.find(input(n, 0)); it != m_quant.end()) { // the activation pair
            const std::size_t k = it->second;
            const ActivationQuant& q = k == 0 ? *m_m.inputQuant : *m_m.layers[k - 1].outputQuant;
            if (!(activationQuant(n) == q)) failNode(n, "does not undo the QuantizeLinear before it");
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
    void conv(const onnx::NodeProto& n)
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
    void gemm(const onnx::NodeProto& n)
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
    void batchNormalization(const onnx::NodeProto& n)
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
    void relu(const onnx::NodeProto& n) { layer(n, LayerKind::ReLU); }
    void clip(const onnx::NodeProto& n) // Clip(0, 6) is ReLU6, any other Hardtanh; a bound left out is infinite
    {
        float b[2] = {-std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()};
        for (int i = 1; i <= 2; ++i) b[i - 1] = n.input_size() > i && !n.input(i).empty() ? scalar(init(n.input(i))) : b[i - 1];
        if (b[0] == 0.0f && b[1] == 6.0f) return void(layer(n, LayerKind::ReLU6));
        if (const std::string why = hardtanhBoundsProblem(b[0], b[1]); !why.empty()) failNode(n, why);
        StoredLayer& l = layer(n, LayerKind::Hardtanh);
        l.alpha = b[0], l.beta = b[1];
    }
    void add(const onnx::NodeProto& n)
    {
        if (n.doc_string() == std::string(kOnnxLayerMark) + "LayerNorm2d") layerNorm2d(n, true);
        else if (m_parts.count(input(n, 0))) groupNorm(n, true);
        else layer(n, LayerKind::Add, 2);
    }
    // The last node of a LayerNorm2d subgraph (onnx_io.cpp): the Add of its bias, or without affine
    // parameters the Div by the standard deviation.
    void layerNorm2d(const onnx::NodeProto& n, bool affine)
    {
        const auto it = m_parts.find(input(n, affine ? 0 : 1));
        const auto centered = m_parts.find(input(n, 0)); // without affine parameters: the Div's x - mean
        const std::string stats = "ReduceMean,Sub,Pow,ReduceMean,Add,Sqrt";
        if (it == m_parts.end() || it->second.ops != (affine ? stats + ",Div,Mul" : stats) || it->second.constants.size() != 2 ||
            it->second.constants[0] != 2.0f || !(it->second.constants[1] > 0.0f) || !std::isfinite(it->second.constants[1]) ||
            it->second.tensors.size() != (affine ? 1u : 0u) ||
            (!affine && (centered == m_parts.end() || centered->second.ops != "ReduceMean,Sub" || centered->second.x != it->second.x)))
            failNode(n, "the subgraph " + (it == m_parts.end() ? std::string("(none)") : it->second.ops) +
                            " is not the LayerNorm2d QuantScope writes");
        const Part& p = it->second;
        StoredLayer l;
        l.kind = LayerKind::LayerNorm2d;
        l.name = n.name();
        l.inputs = {p.x};
        l.eps = p.constants[1];
        if (affine) {
            StoredTensor w = tensorOf(p.tensors[0], "weight"), b = tensorOf(input(n, 1), "bias");
            w.shape = {w.numel()};
            b.shape = {b.numel()};
            if (w.numel() == 0 || b.numel() != w.numel()) failNode(n, "its weight and bias are not one value per channel each");
            l.outChannels = w.numel();
            l.tensors = {std::move(w), std::move(b)};
        } else { // the graph's value_info gives the output's shape, [N, C, ...]
            for (const onnx::ValueInfoProto& v : m_mp.graph().value_info())
                if (v.name() == n.output(0) && v.type().tensor_type().shape().dim_size() >= 2 &&
                    v.type().tensor_type().shape().dim(1).dim_value() > 0 &&
                    v.type().tensor_type().shape().dim(1).dim_value() <= static_cast<std::int64_t>(kMaxOwnGroups))
                    l.outChannels = static_cast<std::size_t>(v.type().tensor_type().shape().dim(1).dim_value());
            if (l.outChannels == 0) failNode(n, "its output's channels are not declared (the graph's value_info)");
        }
        m_m.layers.push_back(std::move(l));
        define(n, m_m.layers.size());
    }
    // The last node of a GroupNorm subgraph (onnx_io.cpp): the Add of its bias, or without affine
    // parameters the Reshape back.
    void groupNorm(const onnx::NodeProto& n, bool affine)
    {
        const Part& p = m_parts.at(input(n, 0));
        if (n.doc_string() != std::string(kOnnxLayerMark) + "GroupNorm" ||
            p.ops != (affine ? "Reshape,InstanceNormalization,Reshape,Mul" : "Reshape,InstanceNormalization") || p.dims.size() != 3 ||
            p.tensors.size() != (affine ? 3u : 2u) || p.dims[1] <= 0 || p.dims[1] > static_cast<std::int64_t>(kMaxOwnGroups))
            failNode(n, "the subgraph " + p.ops + " is not the GroupNorm QuantScope writes");
        StoredLayer l;
        l.kind = LayerKind::GroupNorm;
        l.name = n.name();
        l.inputs = {p.x};
        l.groups = static_cast<std::size_t>(p.dims[1]);
        l.eps = p.eps;
        const std::vector<float> one = floats(init(p.tensors[0])), zero = floats(init(p.tensors[1]));
        if (one != std::vector<float>(l.groups, 1.0f) || zero != std::vector<float>(l.groups, 0.0f))
            failNode(n, "its InstanceNormalization's scale and bias are not ones and zeros, one per group");
        const std::vector<std::int64_t> back = affine ? p.dims2 : onnximport::int64Values(init(input(n, 1)), m_source);
        if (back.size() < 2 || back[1] <= 0) failNode(n, "its Reshape back does not name the channels");
        l.outChannels = static_cast<std::size_t>(back[1]);
        if (affine) {
            StoredTensor w = tensorOf(p.tensors[2], "weight"), b = tensorOf(input(n, 1), "bias");
            w.shape = {w.numel()};
            b.shape = {b.numel()};
            l.tensors = {std::move(w), std::move(b)};
        }
        m_m.layers.push_back(std::move(l));
        define(n, m_m.layers.size());
    }
    void concat(const onnx::NodeProto& n)
    {
        if (attrInt(n, "axis", 0) != 1) failNode(n, "is read along the channels (axis 1) only");
        if (n.input_size() < 2 || n.input_size() > 255) failNode(n, "joins " + std::to_string(n.input_size()) + " inputs (2 to 255 are read)");
        layer(n, LayerKind::Concat, n.input_size());
    }
    // A Pad of zeros over H and W, read only as the input of the AveragePool after it (the export
    // writes an average pool that counts its padding, with ceil_mode, so: encodeOnnx).
    void pad(const onnx::NodeProto& n)
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
    void pool(const onnx::NodeProto& n, LayerKind kind)
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
    void maxPool(const onnx::NodeProto& n)
    {
        if (n.output_size() != 2) return pool(n, LayerKind::MaxPool2d);
        onnx::NodeProto values = n; // the Indices output encodeOnnx adds after a zero Pad layer (read by nothing)
        values.mutable_output()->RemoveLast();
        pool(values, LayerKind::MaxPool2d);
    }
    void averagePool(const onnx::NodeProto& n) { pool(n, LayerKind::AvgPool2d); }
    void globalAveragePool(const onnx::NodeProto& n) { layer(n, LayerKind::GlobalAvgPool2d); }
    void reduceMax(const onnx::NodeProto& n) // a ChannelMax
    {
        if (attrInts(n, "axes") != std::vector<std::int64_t>{1} || attrInt(n, "keepdims", 1) != 1)
            failNode(n, "is read only over the channels (axes [1], keepdims 1), a ChannelMax");
        layer(n, LayerKind::ChannelMax);
    }
    void flatten(const onnx::NodeProto& n)
    {
        if (attrInt(n, "axis", 1) != 1) failNode(n, "does not flatten from axis 1");
        layer(n, LayerKind::Flatten);
    }
    void logSoftmax(const onnx::NodeProto& n)
    {
        const std::int64_t axis = attrInt(n, "axis", -1);
        if (axis != 1 && axis != -1) failNode(n, "is not over the classes");
        layer(n, LayerKind::LogSoftmax);
    }
    void softmax(const onnx::NodeProto& n)
    {
        const std::int64_t axis = attrInt(n, "axis", -1);
        if (axis != 1 && axis != -1) failNode(n, "is not over the classes");
        layer(n, LayerKind::Softmax);
    }
    void identity(const onnx::NodeProto& n) { define(n, activation(n, 0)); }
    void pointwise(const onnx::NodeProto& n, LayerKind kind) { layer(n, kind); }
    void sigmoid(const onnx::NodeProto& n) { pointwise(n, LayerKind::Sigmoid); }
    void tanh(const onnx::NodeProto& n) { pointwise(n, LayerKind::Tanh); }
    void softplus(const onnx::NodeProto& n) { pointwise(n, LayerKind::Softplus); }
    void softsign(const onnx::NodeProto& n) { pointwise(n, LayerKind::Softsign); }
    void selu(const onnx::NodeProto& n)
    {
        if (attrFloat(n, "alpha", kOnnxSeluAlpha) != kOnnxSeluAlpha || attrFloat(n, "gamma", kOnnxSeluGamma) != kOnnxSeluGamma)
            failNode(n, "only PyTorch's SELU (Selu's default alpha and gamma) is read");
        pointwise(n, LayerKind::SELU);
    }
    void celu(const onnx::NodeProto& n) { layer(n, LayerKind::CELU).alpha = attrFloat(n, "alpha", 1.0f); }
    void checkHardSigmoid(const onnx::NodeProto& n) const
    {
        if (std::abs(attrFloat(n, "alpha", 0.2f) - 1.0f / 6.0f) > 1e-7f || attrFloat(n, "beta", 0.5f) != 0.5f)
            failNode(n, "only HardSigmoid(alpha = 1/6, beta = 1/2) (PyTorch's Hardsigmoid) is read");
    }
    void hardSigmoid(const onnx::NodeProto& n)
    {
        checkHardSigmoid(n);
        pointwise(n, LayerKind::Hardsigmoid);
    }
    void leakyRelu(const onnx::NodeProto& n) { layer(n, LayerKind::LeakyReLU).alpha = attrFloat(n, "alpha", 0.01f); }
    void elu(const onnx::NodeProto& n) { layer(n, LayerKind::ELU).alpha = attrFloat(n, "alpha", 1.0f); }
    // PRelu with a float32 slope of shape (1), (C) or (C, 1, 1), as encodeOnnx writes it; validate()
    // checks C against the input's channels.
    void prelu(const onnx::NodeProto& n)
    {
        StoredLayer& l = layer(n, LayerKind::PReLU);
        StoredTensor w = tensorOf(input(n, 1), "weight");
        if (w.encoding != TensorEncoding::Float32) failNode(n, "the slope is read as float32");
        const bool chw = w.shape.size() == 3 && w.shape[1] == 1 && w.shape[2] == 1;
        if (w.shape.size() != 1 && !chw) failNode(n, "has a slope of shape " + shapeString(w.shape) + " (read: (1), (C), (C, 1, 1))");
        w.shape = {w.numel()};
        l.tensors = {std::move(w)};
    }
    // An inner node of a layer written as a subgraph (kOnnxPart): remembered with the activation
    // the subgraph reads and the operators so far, and checked when its last node comes.
    void part(const onnx::NodeProto& n)
    {
        Part p;
        bool chained = false;
        for (int i = 0; i < n.input_size(); ++i) // the longest chain so far (a LayerNorm2d's Div reads two parts)
            if (const auto it = m_parts.find(n.input(i)); it != m_parts.end() && (!chained || it->second.ops.size() > p.ops.size()))
                p = it->second, chained = true;
        if (!chained) p.x = activation(n, 0);
        // a GroupNorm's InstanceNormalization and the Reshape and Mul after it read tensors, as does
        // the Mul of a LayerNorm2d's weight
        const bool normed = n.op_type() == "InstanceNormalization" || p.ops.find("InstanceNormalization") != std::string::npos ||
                            (n.op_type() == "Mul" && p.ops == "ReduceMean,Sub,Pow,ReduceMean,Add,Sqrt,Div");
        if (n.op_type() == "ReduceMean" && (attrInts(n, "axes") != std::vector<std::int64_t>{1} || attrInt(n, "keepdims", 1) != 1))
            failNode(n, "is read only over the channels (axes [1], keepdims 1), inside a LayerNorm2d");
        if (n.op_type() == "InstanceNormalization") p.eps = attrFloat(n, "epsilon", 1e-5f);
        for (int i = 1; i < n.input_size(); ++i) {
            if (m_parts.count(n.input(i)) || (m_act.count(n.input(i)) && m_act.at(n.input(i)) == p.x)) continue;
            if (n.op_type() == "Reshape" && normed) p.dims2 = onnximport::int64Values(init(n.input(i)), m_source);
            else if (n.op_type() == "Reshape") p.dims = onnximport::int64Values(init(n.input(i)), m_source);
            else if (normed) p.tensors.push_back(n.input(i));
            else p.constants.push_back(scalar(init(n.input(i))));
        }
        if (n.op_type() == "Transpose") p.perm = attrInts(n, "perm");
        if (n.op_type() == "HardSigmoid") checkHardSigmoid(n);
        p.ops += (p.ops.empty() ? "" : ",") + n.op_type();
        if (n.output_size() != 1 || m_act.count(n.output(0)) || m_parts.count(n.output(0))) failNode(n, "must make one new value");
        m_parts[n.output(0)] = p;
    }
    // The last node of a SiLU, Hardswish, Mish or GELU subgraph (onnx_io.h), or a Mul layer: the product
    // of two activations (neither an inner value of a subgraph).
    void mul(const onnx::NodeProto& n)
    {
        const std::string mark = n.doc_string().rfind(kOnnxLayerMark, 0) == 0 ? n.doc_string().substr(std::string(kOnnxLayerMark).size()) : "";
        const Part* p = nullptr;
        std::size_t other = 0;
        for (int i = 0; i < 2 && !p; ++i)
            if (const auto it = m_parts.find(input(n, i)); it != m_parts.end()) p = &it->second, other = static_cast<std::size_t>(1 - i);
        if (!p && mark.empty() && n.input_size() == 2 && m_act.count(input(n, 0)) && m_act.count(input(n, 1))) {
            layer(n, LayerKind::Mul, 2);
            return;
        }
        if (!p || mark.empty())
            failNode(n, "only the Mul of two activations, or the Mul that ends a SiLU, Hardswish, Mish, GELU or GELUTanh subgraph, is read");
        const std::string& o = input(n, static_cast<int>(other));
        std::vector<float> c = p->constants;
        const bool readsX = m_act.count(o) && m_act.at(o) == p->x;
        if (!readsX) c.push_back(scalar(init(o)));
        LayerKind kind;
        if (mark == "SiLU" && p->ops == "Sigmoid" && readsX && c.empty()) kind = LayerKind::SiLU;
        else if (mark == "Hardswish" && p->ops == "HardSigmoid" && readsX && c.empty()) kind = LayerKind::Hardswish;
        else if (mark == "Mish" && p->ops == "Softplus,Tanh" && readsX && c.empty()) kind = LayerKind::Mish;
        else if (mark == "GELUTanh" && p->ops == "Mul,Mul,Mul,Add,Mul,Tanh,Add,Mul" && !readsX && c.size() == 4 &&
                 std::abs(c[0] - 0.044715f) < 1e-7f && std::abs(c[1] - 0.7978845608f) < 1e-7f && c[2] == 1.0f && c[3] == 0.5f)
            kind = LayerKind::GELUTanh;
        else if (mark == "GELU" && p->ops == "Div,Erf,Add,Mul" && !readsX && c.size() == 3 && std::abs(c[0] - 1.41421356f) < 1e-6f &&
                 c[1] == 1.0f && c[2] == 0.5f)
            kind = LayerKind::GELU;
        else
            failNode(n, "the subgraph " + p->ops + ", Mul is not the " + mark + " QuantScope writes");
        StoredLayer l;
        l.kind = kind;
        l.name = n.name();
        l.inputs = {p->x};
        m_m.layers.push_back(std::move(l));
        define(n, m_m.layers.size());
    }
    void erf(const onnx::NodeProto& n) { failNode(n, "Erf is read only inside the GELU subgraph QuantScope writes"); }
    // The last node of a channel shuffle (onnx_io.cpp): Reshape, Transpose, Reshape marked ChannelShuffle.
    void reshape(const onnx::NodeProto& n)
    {
        const auto it = m_parts.find(input(n, 0));
        if (it != m_parts.end() && n.doc_string() == std::string(kOnnxLayerMark) + "GroupNorm") {
            groupNorm(n, false);
            return;
        }
        if (it == m_parts.end() || n.doc_string() != std::string(kOnnxLayerMark) + "ChannelShuffle" || it->second.ops != "Reshape,Transpose")
            failNode(n, "only the Reshape that ends a ChannelShuffle subgraph is read");
        StoredLayer l;
        l.kind = LayerKind::ChannelShuffle;
        l.name = n.name();
        l.inputs = {it->second.x};
        Shape images;
        const std::string why = onnximport::ownChannelShuffle(it->second.dims, it->second.perm,
                                                              onnximport::int64Values(init(input(n, 1)), m_source), l.groups, images);
        if (!why.empty()) failNode(n, why);
        m_m.layers.push_back(std::move(l));
        define(n, m_m.layers.size());
        m_shuffled.emplace_back(m_m.layers.size() - 1, std::move(images));
    }
    void slice(const onnx::NodeProto& n) // x[:, begin:end]
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

    const onnx::ModelProto& m_mp;
    ExportedModel m_m;
    std::map<std::string, std::size_t> m_act;   // value -> activation index
    struct Padded {
        std::size_t act;                 // the Pad's input
        std::array<std::size_t, 4> pads; // top, left, bottom, right
        bool read = false;               // by an AveragePool
    };
    std::map<std::string, Padded> m_padded; // a Pad's output, until the AveragePool reading it
    struct CeilEnds {
        std::size_t layer, bottom, right; // the pool's own end pads, checked against ceil_mode in read()
    };
    std::vector<CeilEnds> m_ceilEnds;
    std::map<std::string, std::size_t> m_quant; // QuantizeLinear output -> the activation it quantizes
    std::map<std::string, StoredTensor> m_dq;   // DequantizeLinear outputs of initializers
    std::set<std::string> m_folded;             // Conv names with a folded BatchNorm
    std::string m_centered;
    bool m_sawSub = false;
    bool m_unnamedConv = false; // a Conv node without a name (a tool stripped them): bn_folded cannot name it
    struct Part {
        std::size_t x = 0;            // the activation the subgraph reads
        std::string ops;              // its operators so far, "Div,Erf,Add"
        std::vector<float> constants; // the scalar initializers they read, in order
        std::vector<std::int64_t> dims, perm; // a channel shuffle's first Reshape and its Transpose
        std::vector<std::int64_t> dims2;      // a GroupNorm's Reshape back
        std::vector<std::string> tensors;     // a GroupNorm's InstanceNormalization scale and bias, then its weight
        float eps = 0.0f;                     // its epsilon
    };
    std::vector<std::pair<std::size_t, Shape>> m_shuffled; // ChannelShuffle layer -> the images its Reshapes name
    std::map<std::string, Part> m_parts; // value of an inner node -> its subgraph so far
};

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

} // namespace

ExportedModel decodeOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source)
{
    onnx::ModelProto mp;
    if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
        !mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
        throw FormatError(source + ": not an ONNX model (the protobuf does not parse)");
    return OnnxReader(mp, source).read();
}

ExportedModel readOnnx(const std::string& path) { return decodeOnnx(readFileBytes(path, kOnnxMaxBytes), path); }

ExportedModel readOnnxModel(const std::string& path, std::size_t height, std::size_t width)
{
    const std::vector<std::uint8_t> bytes = readFileBytes(path, kOnnxMaxBytes);
    onnx::ModelProto mp;
    if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
        !mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
        throw FormatError(path + ": not an ONNX model (the protobuf does not parse; a truncated or damaged file?)");
    // One of QuantScope's own exports (FP32 or QDQ; its weights maybe re-saved beside it) is read by
    // OnnxReader; anything else, including a PyTorch export that carries quantscope.class_names, by the importer.
    bool ours = false;
    for (const auto& p : mp.metadata_props()) ours = ours || p.key() == "quantscope.model";
    OnnxImportOptions options{height, width, modelFolder(path)};
    if (!ours || mp.producer_name() != "QuantScope") return importOnnx(bytes, path, nullptr, options);
    onnximport::loadExternalData(mp, path, options.externalDataFolder);
    return OnnxReader(mp, path).read();
}

} // namespace quantscope
