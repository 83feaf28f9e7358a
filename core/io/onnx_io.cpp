// ONNX writing: an ExportedModel in its ONNX form (onnxForm) becomes one node per layer, plus a
// QuantizeLinear/DequantizeLinear pair after every activation point of integer models. Reading
// is in onnx_reader.cpp.
#include "io/onnx_io.h"

#include "util/atomic_file.h"
#include "util/errors.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>

namespace quantscope {

namespace {

using onnx::TensorProto;

constexpr std::int64_t kOnnxIrVersion = 7; // the IR version that goes with opset 13

class GraphBuilder {
public:
    explicit GraphBuilder(onnx::GraphProto* g) : m_g(g) {}

    TensorProto* init(const std::string& name, int type, const std::vector<std::int64_t>& dims, const void* data, std::size_t bytes)
    {
        TensorProto* t = m_g->add_initializer();
        t->set_name(name);
        t->set_data_type(type);
        for (std::int64_t d : dims) t->add_dims(d);
        t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
        return t;
    }
    void floats(const std::string& name, const std::vector<std::int64_t>& dims, const std::vector<float>& v)
    {
        init(name, TensorProto::FLOAT, dims, v.data(), v.size() * 4);
    }
    onnx::NodeProto* node(const std::string& type, const std::string& name, const std::vector<std::string>& in,
                          const std::string& out)
    {
        onnx::NodeProto* n = m_g->add_node();
        n->set_op_type(type);
        n->set_name(name);
        for (const std::string& i : in) n->add_input(i);
        n->add_output(out);
        return n;
    }
    // A GroupNorm's or LayerNorm2d's weight and bias (l.tensors) on the normalised value x, as torch
    // writes them: Mul then Add of (C, 1, 1) on maps (input shape s of rank 3), (C) on features; the
    // Add is named after the layer, marked `mark`, and makes `out`.
    void normAffine(const StoredLayer& l, const Shape& s, const std::string& x, const std::string& out, const std::string& mark)
    {
        const std::string p = l.name + ".";
        const auto C = static_cast<std::int64_t>(l.outChannels);
        const std::vector<std::int64_t> dims = s.size() == 3 ? std::vector<std::int64_t>{C, 1, 1} : std::vector<std::int64_t>{C};
        floats(p + "weight", dims, l.tensors.at(0).values);
        floats(p + "bias", dims, l.tensors.at(1).values);
        node("Mul", p + "scale", {x, p + "weight"}, p + "w")->set_doc_string(kOnnxPart);
        node("Add", l.name, {p + "w", p + "bias"}, out)->set_doc_string(mark);
    }
    // Declares value `name` as float32 of shape [N, dims...] (the graph's value_info).
    void valueShape(const std::string& name, const Shape& dims)
    {
        onnx::ValueInfoProto* v = m_g->add_value_info();
        v->set_name(name);
        auto* t = v->mutable_type()->mutable_tensor_type();
        t->set_elem_type(TensorProto::FLOAT);
        t->mutable_shape()->add_dim()->set_dim_param("N");
        for (std::size_t d : dims) t->mutable_shape()->add_dim()->set_dim_value(static_cast<std::int64_t>(d));
    }
    static void ints(onnx::NodeProto* n, const std::string& name, const std::vector<std::int64_t>& v)
    {
        onnx::AttributeProto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::INTS);
        for (std::int64_t x : v) a->add_ints(x);
    }
    static void intAttr(onnx::NodeProto* n, const std::string& name, std::int64_t v)
    {
        onnx::AttributeProto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(v);
    }
    static void stringAttr(onnx::NodeProto* n, const std::string& name, const std::string& v)
    {
        onnx::AttributeProto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::STRING);
        a->set_s(v);
    }
    static void floatAttr(onnx::NodeProto* n, const std::string& name, float v)
    {
        onnx::AttributeProto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::FLOAT);
        a->set_f(v);
    }

    // QuantizeLinear + DequantizeLinear of an activation; returns the dequantized value's name.
    std::string qdq(const std::string& x, const std::string& base, const ActivationQuant& a)
    {
        if (a.bits != 8 || a.qmin != (a.isSigned ? -128 : 0) || a.qmax != (a.isSigned ? 127 : 255))
            throw ConfigError(base + ": ONNX QuantizeLinear saturates to the full int8/uint8 range; this activation uses " +
                              std::to_string(a.bits) + " bits [" + std::to_string(a.qmin) + ", " + std::to_string(a.qmax) + "]");
        floats(base + ".act_scale", {}, {a.scale});
        if (a.isSigned) {
            const std::int8_t z = static_cast<std::int8_t>(a.zeroPoint);
            init(base + ".act_zero_point", TensorProto::INT8, {}, &z, 1);
        } else {
            const std::uint8_t z = static_cast<std::uint8_t>(a.zeroPoint);
            init(base + ".act_zero_point", TensorProto::UINT8, {}, &z, 1);
        }
        node("QuantizeLinear", base + ".quantize", {x, base + ".act_scale", base + ".act_zero_point"}, base + ".q");
        node("DequantizeLinear", base + ".dequantize", {base + ".q", base + ".act_scale", base + ".act_zero_point"}, base + ".dq");
        m_pairs[base + ".dq"] = {base, a};
        return base + ".dq";
    }

    // The input of a Conv or Gemm that a precision plan keeps FP32, when it is an activation's
    // QuantizeLinear/DequantizeLinear pair (qdq): a DequantizeLinear of its own reading the same
    // codes, its one scale and zero point repeated along an axis of more than one element (the
    // channels, else the rows or columns of a one-channel map; `shape` is the value's per image),
    // which dequantizes to the same values. onnxruntime's WeightBiasQuantization rewrites a float
    // Conv or Gemm between a per-tensor DequantizeLinear (one scale, or [1]) and a QuantizeLinear
    // into an integer one (its float weight to per-tensor int8, its bias to int32) at its basic
    // optimisation level; a per-axis DequantizeLinear is not its pattern, so the layer stays
    // float there, as in the engine (tester 16: mobilenet-v2 int4 with features.0 kept FP32 lost
    // 0.8 points in onnxruntime 1.30, 226 of 10,000 predictions differing from the engine's).
    // Any other value, or one of a single element per image, is returned as it is.
    std::string floatLayerInput(const std::string& value, const Shape& shape)
    {
        const auto pair = m_pairs.find(value);
        const auto wide = std::find_if(shape.begin(), shape.end(), [](std::size_t d) { return d > 1; });
        if (pair == m_pairs.end() || wide == shape.end()) return value;
        const std::string& base = pair->second.first;
        const ActivationQuant& a = pair->second.second;
        const std::string out = base + ".dq_axis";
        if (!m_perAxis.insert(out).second) return out; // made for an earlier float reader
        const std::size_t n = *wide;
        const auto N = static_cast<std::int64_t>(n);
        floats(base + ".act_scale_axis", {N}, std::vector<float>(n, a.scale));
        if (a.isSigned) {
            const std::vector<std::int8_t> z(n, static_cast<std::int8_t>(a.zeroPoint));
            init(base + ".act_zero_point_axis", TensorProto::INT8, {N}, z.data(), z.size());
        } else {
            const std::vector<std::uint8_t> z(n, static_cast<std::uint8_t>(a.zeroPoint));
            init(base + ".act_zero_point_axis", TensorProto::UINT8, {N}, z.data(), z.size());
        }
        intAttr(node("DequantizeLinear", base + ".dequantize_axis", {base + ".q", base + ".act_scale_axis", base + ".act_zero_point_axis"}, out),
                "axis", 1 + (wide - shape.begin()));
        return out;
    }

    // An integer weight (int8) or bias (int32) initializer behind a DequantizeLinear. A weight's
    // doc string keeps its grid ("bits=4 qmin=-8 qmax=7") so the reader restores int4/int2 models.
    std::string dequantized(const std::string& base, const StoredTensor& t)
    {
        std::vector<std::int64_t> dims(t.shape.begin(), t.shape.end());
        const bool perChannel = t.layout == ScaleLayout::Channel;
        const std::vector<std::int64_t> sdims = perChannel ? std::vector<std::int64_t>{static_cast<std::int64_t>(t.scales.size())}
                                                           : std::vector<std::int64_t>{};
        floats(base + "_scale", sdims, t.scales);
        std::vector<std::string> in = {base + "_quantized", base + "_scale"};
        if (t.bits == 32) {
            init(base + "_quantized", TensorProto::INT32, dims, t.q.data(), t.q.size() * 4);
        } else {
            std::vector<std::int8_t> q(t.q.begin(), t.q.end());
            TensorProto* qt = init(base + "_quantized", TensorProto::INT8, dims, q.data(), q.size());
            qt->set_doc_string("bits=" + std::to_string(t.bits) + " qmin=" + std::to_string(t.qmin) + " qmax=" + std::to_string(t.qmax));
            std::vector<std::int8_t> z(t.zeroPoints.begin(), t.zeroPoints.end());
            init(base + "_zero_point", TensorProto::INT8, sdims, z.data(), z.size());
            in.push_back(base + "_zero_point");
        }
        onnx::NodeProto* n = node("DequantizeLinear", base + "_dequantize", in, base);
        if (perChannel) intAttr(n, "axis", 0);
        return base;
    }
    // Drops the DequantizeLinear nodes nothing reads (an activation's pair whose only readers are
    // float layers, which read floatLayerInput's instead).
    void dropUnreadDequantizes()
    {
        std::set<std::string> read;
        for (const onnx::NodeProto& n : m_g->node())
            for (const std::string& i : n.input()) read.insert(i);
        for (const onnx::ValueInfoProto& o : m_g->output()) read.insert(o.name());
        auto* nodes = m_g->mutable_node();
        for (int i = nodes->size() - 1; i >= 0; --i)
            if (nodes->Get(i).op_type() == "DequantizeLinear" && m_pairs.count(nodes->Get(i).output(0)) && !read.count(nodes->Get(i).output(0)))
                nodes->DeleteSubrange(i, 1);
    }

private:
    onnx::GraphProto* m_g;
    std::map<std::string, std::pair<std::string, ActivationQuant>> m_pairs; // qdq's value -> its base name and grid
    std::set<std::string> m_perAxis;                                         // floatLayerInput's values made so far
};

void checkOnnxWeights(const StoredLayer& l)
{
    const StoredTensor& w = l.tensors.at(0);
    const std::string id = "layer '" + l.name + "'";
    if (w.layout == ScaleLayout::Group)
        throw ConfigError(id + ": ONNX QuantizeLinear (opset 13) has no group-wise scales; export .qsm, or train channel-wise");
    if (!w.isSigned || w.bits > 8)
        throw ConfigError(id + ": ONNX QDQ export needs signed weights of at most 8 bits (int8 initializers)");
    for (std::int32_t z : w.zeroPoints)
        if (z != 0) throw ConfigError(id + ": ONNX QDQ export needs symmetric weights (zero point 0)");
    // A Linear without a bias (bias=False) is a Gemm without C; an integer convolution carries its
    // bias (zero when it had none), as the integer export writes it.
    if (l.tensors.size() < 2 && l.kind != LayerKind::Linear)
        throw ConfigError(id + ": an integer layer needs its bias (int32, or float after a float input)");
}

// PyTorch's Hardsigmoid, relu6(x + 3) / 6, as ONNX HardSigmoid max(0, min(1, alpha x + beta)).
void hardSigmoid(onnx::NodeProto* n)
{
    GraphBuilder::floatAttr(n, "alpha", 1.0f / 6.0f);
    GraphBuilder::floatAttr(n, "beta", 0.5f);
}

void setShape(onnx::ValueInfoProto* v, const std::string& name, const std::vector<std::int64_t>& dims)
{
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(TensorProto::FLOAT);
    auto* s = tt->mutable_shape();
    s->add_dim()->set_dim_param("N");
    for (std::int64_t d : dims) s->add_dim()->set_dim_value(d);
}

void meta(onnx::ModelProto& mp, const std::string& k, const std::string& v)
{
    auto* p = mp.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
}

std::vector<std::int64_t> dimsOf(const Shape& s) { return {s.begin(), s.end()}; }

// Folds the FP32 BatchNorm `bn` into the FP32 convolution `conv` (which gains a bias if it had none).
void foldBatchNorm(StoredLayer& conv, const StoredLayer& bn)
{
    const std::size_t out = conv.outChannels;
    if (conv.tensors.size() < 2) {
        StoredTensor b;
        b.name = "bias";
        b.shape = {out};
        b.values.assign(out, 0.0f);
        conv.tensors.push_back(std::move(b));
    }
    std::vector<float>& w = conv.tensors[0].values;
    std::vector<float>& b = conv.tensors[1].values;
    const std::size_t row = w.size() / out;
    const std::vector<float>&gamma = bn.tensors.at(0).values, &beta = bn.tensors.at(1).values, &mean = bn.tensors.at(2).values,
                       &var = bn.tensors.at(3).values;
    for (std::size_t c = 0; c < out; ++c) {
        const float f = gamma[c] / std::sqrt(var[c] + bn.eps);
        for (std::size_t j = 0; j < row; ++j) w[c * row + j] *= f;
        b[c] = beta[c] + (b[c] - mean[c]) * f;
    }
    conv.bnFolded = true;
}

} // namespace

ExportedModel onnxForm(const ExportedModel& m)
{
    ExportedModel g = m;
    g.layers.clear();
    // Activation of m -> activation of g (0 is the input in both).
    std::vector<std::size_t> act(m.layers.size() + 1, 0);
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
        const StoredLayer& l = m.layers[i];
        if (l.kind == LayerKind::Dropout) {
            if (l.outputQuant)
                throw ConfigError("Dropout '" + l.name + "' carries an activation quantization point; ONNX export leaves Dropout out");
            act[i + 1] = act.at(l.inputs.at(0));
            continue;
        }
        if (l.kind == LayerKind::BatchNorm2d && !m.quantized && l.inputs.size() == 1) {
            const std::size_t a = l.inputs[0];
            if (a > 0 && m.layers[a - 1].kind == LayerKind::Conv2d && m.soleConsumer(a - 1) == static_cast<long>(i) &&
                !g.layers.at(act[a] - 1).bnFolded) {
                foldBatchNorm(g.layers[act[a] - 1], l);
                act[i + 1] = act[a];
                continue;
            }
        }
        StoredLayer s = l;
        for (std::size_t& a : s.inputs) a = act.at(a);
        g.layers.push_back(std::move(s));
        act[i + 1] = g.layers.size();
    }
    if (act.back() != g.layers.size())
        throw ConfigError("model '" + m.modelName + "': its output is a Dropout of an earlier layer's output; ONNX export leaves Dropout out");
    return g;
}

std::vector<std::uint8_t> encodeOnnx(const ExportedModel& source)
{
    source.validate("model '" + source.modelName + "'");
    const ExportedModel m = onnxForm(source);
    onnx::ModelProto mp;
    mp.set_ir_version(kOnnxIrVersion);
    mp.set_producer_name("QuantScope");
    mp.set_producer_version("0.1.0");
    mp.set_model_version(1);
    mp.set_doc_string(m.quantized ? "QuantScope integer model in QDQ form: " + m.weightFormat + " weights (" + m.granularity +
                                        "), " + m.activationFormat + " activations"
                                  : "QuantScope FP32 model");
    auto* opset = mp.add_opset_import();
    opset->set_domain("");
    opset->set_version(kOnnxOpset);
    std::string names, folded;
    for (const std::string& c : m.classNames) names += (names.empty() ? "" : "\n") + c;
    for (const StoredLayer& l : m.layers)
        if (l.bnFolded) folded += (folded.empty() ? "" : "\n") + l.name;
    meta(mp, "quantscope.model", m.modelName);
    meta(mp, "quantscope.class_names", names);
    meta(mp, "quantscope.strategy", m.strategy);
    meta(mp, "quantscope.weight_format", m.weightFormat);
    meta(mp, "quantscope.activation_format", m.activationFormat);
    meta(mp, "quantscope.granularity", m.granularity);
    meta(mp, "quantscope.bn_folded", folded);

    onnx::GraphProto* g = mp.mutable_graph();
    g->set_name(m.modelName.empty() ? "quantscope" : m.modelName);
    setShape(g->add_input(), "input",
             {static_cast<std::int64_t>(m.channels), static_cast<std::int64_t>(m.height), static_cast<std::int64_t>(m.width)});
    // What a user of the file must feed it (tester 11: the channel order and the size were nowhere).
    g->mutable_input(0)->set_doc_string(
        std::string(m.channels == 3 ? "R, G, B planes (NCHW)" : "one grey plane (NCHW; colour images as BT.601 luma, PIL's convert('L'))") +
        " of " + std::to_string(m.height) + "x" + std::to_string(m.width) +
        " images (resized by area when shrinking, bilinear when growing, as quantscope-cli --resize), pixels scaled to [0, 1]; "
        "the dataset normalisation is inside the graph");
    GraphBuilder b(g);
    // One value when every channel shares it, else [1, C, 1, 1] broadcast over N, H, W.
    const bool shared = std::adjacent_find(m.normalization.mean.begin(), m.normalization.mean.end(), std::not_equal_to<>()) ==
                            m.normalization.mean.end() &&
                        std::adjacent_find(m.normalization.stddev.begin(), m.normalization.stddev.end(), std::not_equal_to<>()) ==
                            m.normalization.stddev.end();
    const std::vector<std::int64_t> normDims =
        shared ? std::vector<std::int64_t>{} : std::vector<std::int64_t>{1, static_cast<std::int64_t>(m.channels), 1, 1};
    b.floats("input.mean", normDims, shared ? std::vector<float>{m.normalization.mean[0]} : m.normalization.mean);
    b.floats("input.stddev", normDims, shared ? std::vector<float>{m.normalization.stddev[0]} : m.normalization.stddev);
    b.node("Sub", "input.center", {"input", "input.mean"}, "input.centered");
    b.node("Div", "input.scale", {"input.centered", "input.stddev"}, "input.normalized");
    // The ONNX value holding each activation (0 = normalised input, i + 1 = layer i's output),
    // after its Q/DQ pair where it has one.
    std::vector<std::string> value{m.quantized ? b.qdq("input.normalized", "input", *m.inputQuant) : "input.normalized"};
    const std::vector<Shape> shapes = m.activationShapes(); // per image: PReLU's slope broadcasts over the channels

    for (const StoredLayer& l : m.layers) {
        const std::string out = l.name + ".out";
        auto in = [&](std::size_t k) { return value.at(l.inputs.at(k)); };
        switch (l.kind) {
        case LayerKind::Conv2d:
        case LayerKind::Linear: {
            std::vector<std::string> ins{in(0)};
            // A layer a precision plan keeps FP32 is a plain float op inside the QDQ graph.
            if (m.quantized && l.tensors.at(0).encoding == TensorEncoding::Int) {
                checkOnnxWeights(l);
                ins.push_back(b.dequantized(l.name + ".weight", l.tensors[0]));
                if (l.tensors.size() < 2) {
                    // bias=False: Gemm without C
                } else if (l.tensors[1].encoding == TensorEncoding::Int) {
                    ins.push_back(b.dequantized(l.name + ".bias", l.tensors[1]));
                } else { // reads a float activation: no accumulator scale, a float bias
                    ins.push_back(l.name + ".bias");
                    b.floats(ins.back(), dimsOf(l.tensors[1].shape), l.tensors[1].values);
                }
            } else {
                if (m.quantized) ins[0] = b.floatLayerInput(ins[0], shapes.at(l.inputs.at(0)));
                for (const StoredTensor& t : l.tensors) {
                    ins.push_back(l.name + "." + t.name);
                    b.floats(ins.back(), dimsOf(t.shape), t.values);
                }
            }
            if (l.kind == LayerKind::Conv2d) {
                onnx::NodeProto* n = b.node("Conv", l.name, ins, out);
                const ConvGeometry g = l.convGeometry();
                const auto i64 = [](std::size_t v) { return static_cast<std::int64_t>(v); };
                GraphBuilder::ints(n, "kernel_shape", {i64(g.kh), i64(g.kw)});
                GraphBuilder::ints(n, "strides", {i64(g.sh), i64(g.sw)});
                GraphBuilder::ints(n, "pads", {i64(g.padTop), i64(g.padLeft), i64(g.padBottom), i64(g.padRight)}); // ONNX's order
                GraphBuilder::ints(n, "dilations", {i64(g.dh), i64(g.dw)});
                GraphBuilder::intAttr(n, "group", static_cast<std::int64_t>(l.groups));
            } else {
                GraphBuilder::intAttr(b.node("Gemm", l.name, ins, out), "transB", 1);
            }
            break;
        }
        case LayerKind::BatchNorm2d: {
            // An FP32 BatchNorm onnxForm could not fold (it does not read a convolution of its own).
            std::vector<std::string> ins{in(0)};
            for (const StoredTensor& t : l.tensors) {
                ins.push_back(l.name + "." + t.name);
                b.floats(ins.back(), dimsOf(t.shape), t.values);
            }
            onnx::NodeProto* n = b.node("BatchNormalization", l.name, ins, out);
            GraphBuilder::floatAttr(n, "epsilon", l.eps);
            GraphBuilder::floatAttr(n, "momentum", 1.0f - l.momentum); // ONNX: running = running * momentum + batch * (1 - momentum)
            break;
        }
        case LayerKind::ReLU: b.node("Relu", l.name, {in(0)}, out); break;
        case LayerKind::ReLU6:
            b.floats(l.name + ".min", {}, {0.0f});
            b.floats(l.name + ".max", {}, {6.0f});
            b.node("Clip", l.name, {in(0), l.name + ".min", l.name + ".max"}, out);
            break;
        case LayerKind::Hardtanh: { // an infinite bound is left out (an empty min, no max)
            if (std::isfinite(l.alpha)) b.floats(l.name + ".min", {}, {l.alpha});
            std::vector<std::string> ins = {in(0), std::isfinite(l.alpha) ? l.name + ".min" : std::string()};
            if (std::isfinite(l.beta)) b.floats(l.name + ".max", {}, {l.beta}), ins.push_back(l.name + ".max");
            b.node("Clip", l.name, ins, out);
            break;
        }
        case LayerKind::Add: b.node("Add", l.name, {in(0), in(1)}, out); break;
        // ONNX's multidirectional broadcasting takes the [N, C, 1, 1] gate as it is.
        case LayerKind::Mul: b.node("Mul", l.name, {in(0), in(1)}, out); break;
        case LayerKind::Concat: {
            std::vector<std::string> ins;
            for (std::size_t k = 0; k < l.inputs.size(); ++k) ins.push_back(in(k));
            GraphBuilder::intAttr(b.node("Concat", l.name, ins, out), "axis", 1);
            break;
        }
        case LayerKind::MaxPool2d:
        case LayerKind::AvgPool2d: {
            const PoolGeometry g = l.poolGeometry();
            const auto i64 = [](std::size_t v) { return static_cast<std::int64_t>(v); };
            // An average pool that counts its padding, with ceil_mode: a Pad of zeros (PyTorch's
            // padding, counted), then the pool without ceil_mode, whose own end pads (not counted:
            // count_include_pad = 0) hold the windows that ceil_mode adds. The divisor is then the
            // window's part inside the padded input, which is PyTorch's, and ceil_mode is gone:
            // onnxruntime's optimized QDQ graph (QLinearAveragePool) divided those last windows
            // otherwise, with the pads on the pool or after a Pad (71 of 2,000 predictions
            // changed). Read back by onnx_reader (pad, pool). Not where PyTorch drops a last
            // window that would start in the end padding, nor where an end pad would reach a
            // whole window: the pool's own attributes then, as for every other pool.
            const Shape& xs = shapes.at(l.inputs.at(0));
            const auto overflow = [](std::size_t out, std::size_t k, std::size_t s, std::size_t padded) -> long {
                const long e = static_cast<long>((out - 1) * s + k) - static_cast<long>(padded);
                return e < 0 || e >= static_cast<long>(k) || (padded + static_cast<std::size_t>(e) - k) / s + 1 != out ? -1 : e;
            };
            const long eh = l.kind == LayerKind::AvgPool2d && g.padded() && g.countIncludePad && g.ceilMode && xs.size() == 3
                                ? overflow(g.outH(xs[1]), g.kh, g.sh, g.paddedH(xs[1]))
                                : -1;
            const long ew = eh < 0 ? -1 : overflow(g.outW(xs[2]), g.kw, g.sw, g.paddedW(xs[2]));
            if (eh >= 0 && ew >= 0 && (eh || ew)) { // (without such windows, ceil_mode changes nothing)
                const std::vector<std::int64_t> pads{0, 0, i64(g.padTop), i64(g.padLeft), 0, 0, i64(g.padBottom), i64(g.padRight)};
                b.init(l.name + ".pads", TensorProto::INT64, {8}, pads.data(), pads.size() * sizeof(std::int64_t));
                b.node("Pad", l.name + ".pad", {in(0), l.name + ".pads"}, l.name + ".padded");
                onnx::NodeProto* n = b.node("AveragePool", l.name, {l.name + ".padded"}, out);
                GraphBuilder::ints(n, "kernel_shape", {i64(g.kh), i64(g.kw)});
                GraphBuilder::ints(n, "strides", {i64(g.sh), i64(g.sw)});
                GraphBuilder::ints(n, "pads", {0, 0, eh, ew});
                break;
            }
            onnx::NodeProto* n = b.node(l.kind == LayerKind::MaxPool2d ? "MaxPool" : "AveragePool", l.name, {in(0)}, out);
            // A MaxPool of a zero Pad layer: onnxruntime's PadFusion merges such a Pad into the
            // MaxPool's pads, which pad with -inf (onnxruntime 1.30: 1,634 of 10,000 predictions of
            // a signed map changed); it leaves a MaxPool that has its Indices output alone.
            if (const std::size_t a = l.inputs.at(0); l.kind == LayerKind::MaxPool2d && a > 0 && m.layers[a - 1].kind == LayerKind::Pad &&
                                                      m.layers[a - 1].padMode == PadMode::Zeros)
                n->add_output(l.name + ".indices");
            GraphBuilder::ints(n, "kernel_shape", {i64(g.kh), i64(g.kw)});
            GraphBuilder::ints(n, "strides", {i64(g.sh), i64(g.sw)});
            if (g.padded()) { // MaxPool pads with -inf; AvgPool2d counts its zero padding unless told not to (ONNX's default does not)
                GraphBuilder::ints(n, "pads", {i64(g.padTop), i64(g.padLeft), i64(g.padBottom), i64(g.padRight)});
                if (l.kind == LayerKind::AvgPool2d) GraphBuilder::intAttr(n, "count_include_pad", g.countIncludePad ? 1 : 0);
            }
            if (g.ceilMode) GraphBuilder::intAttr(n, "ceil_mode", 1);
            break;
        }
        case LayerKind::GlobalAvgPool2d: b.node("GlobalAveragePool", l.name, {in(0)}, out); break;
        case LayerKind::ChannelMax: { // torch.amax(x, dim=1, keepdim=True)
            onnx::NodeProto* r = b.node("ReduceMax", l.name, {in(0)}, out);
            GraphBuilder::ints(r, "axes", {1});
            GraphBuilder::intAttr(r, "keepdims", 1);
            break;
        }
        // x.view(N, g, C / g, ...).transpose(1, 2).reshape(N, C, ...), as torch.onnx.export writes a
        // channel shuffle (0: the batch, copied), the last node marked as the layer.
        case LayerKind::ChannelShuffle: {
            const Shape& xs = shapes.at(l.inputs.at(0));
            const auto i64 = [](std::size_t v) { return static_cast<std::int64_t>(v); };
            std::vector<std::int64_t> grouped{0, i64(l.groups), i64(xs.at(0) / l.groups)}, back{0, i64(xs[0])}, perm{0, 2, 1};
            for (std::size_t d = 1; d < xs.size(); ++d) grouped.push_back(i64(xs[d])), back.push_back(i64(xs[d])), perm.push_back(i64(d + 2));
            b.init(l.name + ".grouped_shape", TensorProto::INT64, {i64(grouped.size())}, grouped.data(), grouped.size() * sizeof(std::int64_t));
            b.init(l.name + ".shape", TensorProto::INT64, {i64(back.size())}, back.data(), back.size() * sizeof(std::int64_t));
            b.node("Reshape", l.name + ".view", {in(0), l.name + ".grouped_shape"}, l.name + ".grouped")->set_doc_string(kOnnxPart);
            onnx::NodeProto* t = b.node("Transpose", l.name + ".transpose", {l.name + ".grouped"}, l.name + ".transposed");
            GraphBuilder::ints(t, "perm", perm);
            t->set_doc_string(kOnnxPart);
            b.node("Reshape", l.name, {l.name + ".transposed", l.name + ".shape"}, out)->set_doc_string(std::string(kOnnxLayerMark) + "ChannelShuffle");
            break;
        }
        case LayerKind::GroupNorm: {
            // As torch.onnx.export writes nn.GroupNorm at opset 13: Reshape to (N, G, -1),
            // InstanceNormalization with a scale of ones and a bias of zeros, Reshape back, then the
            // per-channel weight and bias as Mul and Add ((C, 1, 1) on maps, (C) on features);
            // float32 in QDQ files too. The last node is named after the layer and marked GroupNorm.
            const std::string p = l.name + ".";
            const Shape& s = shapes.at(l.inputs.at(0));
            const auto G = static_cast<std::int64_t>(l.groups);
            const std::int64_t grouped[3] = {0, G, -1};
            b.init(p + "grouped", TensorProto::INT64, {3}, grouped, sizeof grouped);
            std::vector<std::int64_t> back{0};
            for (std::size_t d : s) back.push_back(static_cast<std::int64_t>(d));
            b.init(p + "shape", TensorProto::INT64, {static_cast<std::int64_t>(back.size())}, back.data(), back.size() * sizeof(std::int64_t));
            b.floats(p + "ones", {G}, std::vector<float>(l.groups, 1.0f));
            b.floats(p + "zeros", {G}, std::vector<float>(l.groups, 0.0f));
            const bool affine = !l.tensors.empty();
            const std::string mark = std::string(kOnnxLayerMark) + "GroupNorm";
            b.node("Reshape", p + "group", {in(0), p + "grouped"}, p + "g")->set_doc_string(kOnnxPart);
            onnx::NodeProto* norm = b.node("InstanceNormalization", p + "norm", {p + "g", p + "ones", p + "zeros"}, p + "n");
            GraphBuilder::floatAttr(norm, "epsilon", l.eps);
            norm->set_doc_string(kOnnxPart);
            if (!affine) {
                b.node("Reshape", l.name, {p + "n", p + "shape"}, out)->set_doc_string(mark);
                break;
            }
            b.node("Reshape", p + "ungroup", {p + "n", p + "shape"}, p + "u")->set_doc_string(kOnnxPart);
            b.normAffine(l, s, p + "u", out, mark);
            break;
        }
        case LayerKind::LayerNorm2d: {
            // As torch.onnx.export writes ConvNeXt's channels_first LayerNorm at opset 13: u =
            // ReduceMean(x, axes [1]), d = x - u, ReduceMean(Pow(d, 2), axes [1]) + eps, Sqrt, d /
            // that, then the per-channel weight and bias as Mul and Add ((C, 1, 1) on maps, (C) on
            // features); float32 in QDQ files too. The last node is named after the layer and marked
            // LayerNorm2d.
            const std::string p = l.name + ".";
            const Shape& s = shapes.at(l.inputs.at(0));
            const std::string mark = std::string(kOnnxLayerMark) + "LayerNorm2d";
            const bool affine = !l.tensors.empty();
            b.floats(p + "two", {}, {2.0f});
            b.floats(p + "eps", {}, {l.eps});
            const auto reduce = [&](const std::string& x, const std::string& name, const std::string& y) {
                onnx::NodeProto* r = b.node("ReduceMean", name, {x}, y);
                GraphBuilder::ints(r, "axes", {1});
                r->set_doc_string(kOnnxPart);
            };
            reduce(in(0), p + "mean", p + "u");
            b.node("Sub", p + "center", {in(0), p + "u"}, p + "d")->set_doc_string(kOnnxPart);
            b.node("Pow", p + "square", {p + "d", p + "two"}, p + "d2")->set_doc_string(kOnnxPart);
            reduce(p + "d2", p + "var", p + "v");
            b.node("Add", p + "add_eps", {p + "v", p + "eps"}, p + "ve")->set_doc_string(kOnnxPart);
            b.node("Sqrt", p + "std", {p + "ve"}, p + "sd")->set_doc_string(kOnnxPart);
            if (!affine) { // the channels, named by no weight, are declared as the output's shape
                b.node("Div", l.name, {p + "d", p + "sd"}, out)->set_doc_string(mark);
                b.valueShape(out, s);
                break;
            }
            b.node("Div", p + "normalize", {p + "d", p + "sd"}, p + "n")->set_doc_string(kOnnxPart);
            b.normAffine(l, s, p + "n", out, mark);
            break;
        }
        case LayerKind::Pad: { // F.pad: pads [0, 0, top, left, 0, 0, bottom, right], mode constant (zeros), reflect or edge
            const std::int64_t v[8] = {0, 0, static_cast<std::int64_t>(l.pads[0]), static_cast<std::int64_t>(l.pads[1]),
                                       0, 0, static_cast<std::int64_t>(l.pads[2]), static_cast<std::int64_t>(l.pads[3])};
            b.init(l.name + ".pads", TensorProto::INT64, {8}, v, sizeof v);
            onnx::NodeProto* n = b.node("Pad", l.name, {in(0), l.name + ".pads"}, out);
            n->set_doc_string(std::string(kOnnxLayerMark) + "Pad");
            GraphBuilder::stringAttr(n, "mode", l.padMode == PadMode::Reflect ? "reflect" : l.padMode == PadMode::Replicate ? "edge" : "constant");
            break;
        }
        case LayerKind::Slice: { // x[:, begin:end]
            const std::int64_t v[3] = {static_cast<std::int64_t>(l.sliceBegin), static_cast<std::int64_t>(l.sliceEnd), 1};
            b.init(l.name + ".starts", TensorProto::INT64, {1}, v, sizeof(std::int64_t));
            b.init(l.name + ".ends", TensorProto::INT64, {1}, v + 1, sizeof(std::int64_t));
            b.init(l.name + ".axes", TensorProto::INT64, {1}, v + 2, sizeof(std::int64_t));
            b.node("Slice", l.name, {in(0), l.name + ".starts", l.name + ".ends", l.name + ".axes"}, out);
            break;
        }
        case LayerKind::Dropout: throw Error("internal error: onnxForm left Dropout '" + l.name + "' in");
        case LayerKind::Flatten: GraphBuilder::intAttr(b.node("Flatten", l.name, {in(0)}, out), "axis", 1); break;
        case LayerKind::LogSoftmax: GraphBuilder::intAttr(b.node("LogSoftmax", l.name, {in(0)}, out), "axis", 1); break;
        case LayerKind::Softmax: GraphBuilder::intAttr(b.node("Softmax", l.name, {in(0)}, out), "axis", 1); break;
        case LayerKind::Sigmoid: b.node("Sigmoid", l.name, {in(0)}, out); break;
        case LayerKind::Tanh: b.node("Tanh", l.name, {in(0)}, out); break;
        case LayerKind::Softplus: b.node("Softplus", l.name, {in(0)}, out); break;
        case LayerKind::Softsign: b.node("Softsign", l.name, {in(0)}, out); break;
        case LayerKind::SELU: { // ONNX's defaults are PyTorch's constants in float: written out all the same
            onnx::NodeProto* s = b.node("Selu", l.name, {in(0)}, out);
            GraphBuilder::floatAttr(s, "alpha", kOnnxSeluAlpha);
            GraphBuilder::floatAttr(s, "gamma", kOnnxSeluGamma);
            break;
        }
        case LayerKind::CELU: GraphBuilder::floatAttr(b.node("Celu", l.name, {in(0)}, out), "alpha", l.alpha); break;
        case LayerKind::LeakyReLU: GraphBuilder::floatAttr(b.node("LeakyRelu", l.name, {in(0)}, out), "alpha", l.alpha); break;
        case LayerKind::ELU: GraphBuilder::floatAttr(b.node("Elu", l.name, {in(0)}, out), "alpha", l.alpha); break;
        case LayerKind::Hardsigmoid: hardSigmoid(b.node("HardSigmoid", l.name, {in(0)}, out)); break;
        // Subgraphs (opset 13 has no SiLU, HardSwish or GELU operator), as torch.onnx.export writes
        // them: inner nodes named "<layer>.<op>" and marked kOnnxPart, the last one named after the
        // layer and marked with its kind, so the reader rebuilds one layer.
        case LayerKind::SiLU:
        case LayerKind::Hardswish: {
            const bool silu = l.kind == LayerKind::SiLU;
            onnx::NodeProto* g = b.node(silu ? "Sigmoid" : "HardSigmoid", l.name + (silu ? ".sigmoid" : ".hardsigmoid"), {in(0)}, l.name + ".gate");
            if (!silu) hardSigmoid(g);
            g->set_doc_string(kOnnxPart);
            b.node("Mul", l.name, {in(0), l.name + ".gate"}, out)->set_doc_string(std::string(kOnnxLayerMark) + layerKindName(l.kind));
            break;
        }
        case LayerKind::Mish: // x tanh(softplus(x)), as torch.onnx.export writes nn.Mish below opset 18
            b.node("Softplus", l.name + ".softplus", {in(0)}, l.name + ".sp")->set_doc_string(kOnnxPart);
            b.node("Tanh", l.name + ".tanh", {l.name + ".sp"}, l.name + ".gate")->set_doc_string(kOnnxPart);
            b.node("Mul", l.name, {in(0), l.name + ".gate"}, out)->set_doc_string(std::string(kOnnxLayerMark) + "Mish");
            break;
        case LayerKind::PReLU: {
            // The slope as torch.onnx.export writes it: (C, 1, 1) on feature maps, (C) on features,
            // (1) when shared; float32 in QDQ files too (a float initializer, no DQ).
            const StoredTensor& w = l.tensors.at(0);
            const auto c = static_cast<std::int64_t>(w.numel());
            const bool map = shapes.at(l.inputs.at(0)).size() == 3;
            b.floats(l.name + ".weight", c > 1 && map ? std::vector<std::int64_t>{c, 1, 1} : std::vector<std::int64_t>{c}, w.values);
            b.node("PRelu", l.name, {in(0), l.name + ".weight"}, out);
            break;
        }
        case LayerKind::GELUTanh: { // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in torch 1.13's node order
            const std::string p = l.name + ".";
            b.floats(p + "kappa", {}, {0.044715f});
            b.floats(p + "beta", {}, {0.7978845608f});
            b.floats(p + "one", {}, {1.0f});
            b.floats(p + "half", {}, {0.5f});
            b.node("Mul", p + "sq", {in(0), in(0)}, p + "x2")->set_doc_string(kOnnxPart);
            b.node("Mul", p + "cube", {in(0), p + "x2"}, p + "x3")->set_doc_string(kOnnxPart);
            b.node("Mul", p + "kcube", {p + "x3", p + "kappa"}, p + "kx3")->set_doc_string(kOnnxPart);
            b.node("Add", p + "add", {in(0), p + "kx3"}, p + "poly")->set_doc_string(kOnnxPart);
            b.node("Mul", p + "inner", {p + "poly", p + "beta"}, p + "u")->set_doc_string(kOnnxPart);
            b.node("Tanh", p + "tanh", {p + "u"}, p + "t")->set_doc_string(kOnnxPart);
            b.node("Add", p + "add1", {p + "t", p + "one"}, p + "t1")->set_doc_string(kOnnxPart);
            b.node("Mul", p + "mul", {in(0), p + "t1"}, p + "x_t1")->set_doc_string(kOnnxPart);
            b.node("Mul", l.name, {p + "x_t1", p + "half"}, out)->set_doc_string(std::string(kOnnxLayerMark) + "GELUTanh");
            break;
        }
        case LayerKind::GELU: // 0.5 x (1 + erf(x / sqrt 2))
            b.floats(l.name + ".sqrt2", {}, {1.41421356f});
            b.floats(l.name + ".one", {}, {1.0f});
            b.floats(l.name + ".half", {}, {0.5f});
            b.node("Div", l.name + ".div", {in(0), l.name + ".sqrt2"}, l.name + ".scaled")->set_doc_string(kOnnxPart);
            b.node("Erf", l.name + ".erf", {l.name + ".scaled"}, l.name + ".erf_out")->set_doc_string(kOnnxPart);
            b.node("Add", l.name + ".add", {l.name + ".erf_out", l.name + ".one"}, l.name + ".cdf2")->set_doc_string(kOnnxPart);
            b.node("Mul", l.name + ".mul", {in(0), l.name + ".cdf2"}, l.name + ".x_cdf2")->set_doc_string(kOnnxPart);
            b.node("Mul", l.name, {l.name + ".x_cdf2", l.name + ".half"}, out)->set_doc_string(std::string(kOnnxLayerMark) + "GELU");
            break;
        }
        value.push_back(m.quantized && l.outputQuant ? b.qdq(out, l.name, *l.outputQuant) : out);
    }
    // The last layer's value is the graph output "logits"; onnxForm made sure the last node makes it.
    onnx::NodeProto* last = g->mutable_node(g->node_size() - 1);
    if (last->output(0) != value.back()) throw Error("internal error: the last ONNX node does not make the model output");
    last->set_output(0, "logits");
    setShape(g->add_output(), "logits", {static_cast<std::int64_t>(m.classes)});
    b.dropUnreadDequantizes();
    const LayerKind lastKind = m.layers.back().kind;
    g->mutable_output(0)->set_doc_string(lastKind == LayerKind::LogSoftmax ? "log-probabilities of the classes (argmax = predicted class)"
                                         : lastKind == LayerKind::Softmax  ? "probabilities of the classes (argmax = predicted class)"
                                                                           : "class scores (argmax = predicted class)");
    try {
        onnx::checker::check_model(mp);
    } catch (const std::exception& e) {
        throw Error(std::string("internal error: the ONNX graph fails onnx.checker: ") + e.what());
    }
    std::string s;
    if (!mp.SerializeToString(&s)) throw Error("internal error: the ONNX model could not be serialised");
    return std::vector<std::uint8_t>(s.begin(), s.end());
}

void writeOnnx(const std::string& path, const ExportedModel& m) { writeFileAtomic(path, encodeOnnx(m)); }

} // namespace quantscope
