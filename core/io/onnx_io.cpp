#include "io/onnx_io.h"

#include "util/atomic_file.h"
#include "util/errors.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>

namespace quantscope {

namespace {

using onnx::TensorProto;

constexpr std::uint64_t kOnnxMaxBytes = std::uint64_t{1} << 30;
constexpr std::int64_t kOnnxIrVersion = 7; // the IR version that goes with opset 13

// ---------------------------------------------------------------- writing
class GraphBuilder {
public:
    explicit GraphBuilder(onnx::GraphProto* g) : m_g(g) {}

    void init(const std::string& name, int type, const std::vector<std::int64_t>& dims, const void* data, std::size_t bytes)
    {
        TensorProto* t = m_g->add_initializer();
        t->set_name(name);
        t->set_data_type(type);
        for (std::int64_t d : dims) t->add_dims(d);
        t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
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
        return base + ".dq";
    }

    // An integer weight (int8) or bias (int32) initializer behind a DequantizeLinear.
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
            init(base + "_quantized", TensorProto::INT8, dims, q.data(), q.size());
            std::vector<std::int8_t> z(t.zeroPoints.begin(), t.zeroPoints.end());
            init(base + "_zero_point", TensorProto::INT8, sdims, z.data(), z.size());
            in.push_back(base + "_zero_point");
        }
        onnx::NodeProto* n = node("DequantizeLinear", base + "_dequantize", in, base);
        if (perChannel) intAttr(n, "axis", 0);
        return base;
    }

private:
    onnx::GraphProto* m_g;
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
    if (l.tensors.at(1).encoding != TensorEncoding::Int) throw ConfigError(id + ": the bias is not stored as int32");
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

} // namespace

std::vector<std::uint8_t> encodeOnnx(const ExportedModel& m)
{
    m.validate("model '" + m.modelName + "'");
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
    std::string names;
    for (const std::string& c : m.classNames) names += (names.empty() ? "" : "\n") + c;
    meta(mp, "quantscope.model", m.modelName);
    meta(mp, "quantscope.class_names", names);
    meta(mp, "quantscope.strategy", m.strategy);
    meta(mp, "quantscope.weight_format", m.weightFormat);
    meta(mp, "quantscope.activation_format", m.activationFormat);
    meta(mp, "quantscope.granularity", m.granularity);

    onnx::GraphProto* g = mp.mutable_graph();
    g->set_name(m.modelName.empty() ? "quantscope" : m.modelName);
    setShape(g->add_input(), "input",
             {static_cast<std::int64_t>(m.channels), static_cast<std::int64_t>(m.height), static_cast<std::int64_t>(m.width)});
    g->mutable_input(0)->set_doc_string("pixels scaled to [0, 1]; the dataset normalisation is inside the graph");
    GraphBuilder b(g);
    b.floats("input.mean", {}, {m.mean});
    b.floats("input.stddev", {}, {m.stddev});
    b.node("Sub", "input.center", {"input", "input.mean"}, "input.centered");
    std::string cur = "input.normalized";
    b.node("Div", "input.scale", {"input.centered", "input.stddev"}, cur);
    if (m.quantized) cur = b.qdq(cur, "input", *m.inputQuant);

    const auto& L = m.layers;
    for (std::size_t i = 0; i < L.size(); ++i) {
        const StoredLayer& l = L[i];
        const std::string out = l.name + ".out";
        switch (l.kind) {
        case LayerKind::Conv2d:
        case LayerKind::Linear: {
            std::string w, bias;
            if (m.quantized) {
                checkOnnxWeights(l);
                w = b.dequantized(l.name + ".weight", l.tensors[0]);
                bias = b.dequantized(l.name + ".bias", l.tensors[1]);
            } else {
                std::vector<float> wv = l.tensors[0].values, bv = l.tensors[1].values;
                if (l.kind == LayerKind::Conv2d && i + 1 < L.size() && L[i + 1].kind == LayerKind::BatchNorm2d) {
                    // Fold the BatchNorm: w' = w * f, b' = beta + (b - mean) * f, f = gamma / sqrt(var + eps)
                    const StoredLayer& bn = L[i + 1];
                    const std::size_t row = wv.size() / bv.size();
                    for (std::size_t c = 0; c < bv.size(); ++c) {
                        const float f = bn.tensors[0].values[c] / std::sqrt(bn.tensors[3].values[c] + bn.eps);
                        for (std::size_t j = 0; j < row; ++j) wv[c * row + j] *= f;
                        bv[c] = bn.tensors[1].values[c] + (bv[c] - bn.tensors[2].values[c]) * f;
                    }
                }
                w = l.name + ".weight";
                bias = l.name + ".bias";
                b.floats(w, std::vector<std::int64_t>(l.tensors[0].shape.begin(), l.tensors[0].shape.end()), wv);
                b.floats(bias, {static_cast<std::int64_t>(bv.size())}, bv);
            }
            if (l.kind == LayerKind::Conv2d) {
                onnx::NodeProto* n = b.node("Conv", l.name, {cur, w, bias}, out);
                const auto k = static_cast<std::int64_t>(l.kernel), s = static_cast<std::int64_t>(l.stride),
                           p = static_cast<std::int64_t>(l.padding);
                GraphBuilder::ints(n, "kernel_shape", {k, k});
                GraphBuilder::ints(n, "strides", {s, s});
                GraphBuilder::ints(n, "pads", {p, p, p, p});
                GraphBuilder::ints(n, "dilations", {1, 1});
                GraphBuilder::intAttr(n, "group", 1);
            } else {
                onnx::NodeProto* n = b.node("Gemm", l.name, {cur, w, bias}, out);
                GraphBuilder::intAttr(n, "transB", 1);
            }
            break;
        }
        case LayerKind::BatchNorm2d:
            if (i == 0 || L[i - 1].kind != LayerKind::Conv2d) throw ConfigError("BatchNorm '" + l.name + "' does not follow a convolution");
            continue; // folded above
        case LayerKind::ReLU: b.node("Relu", l.name, {cur}, out); break;
        case LayerKind::MaxPool2d: {
            onnx::NodeProto* n = b.node("MaxPool", l.name, {cur}, out);
            const auto k = static_cast<std::int64_t>(l.kernel), s = static_cast<std::int64_t>(l.stride);
            GraphBuilder::ints(n, "kernel_shape", {k, k});
            GraphBuilder::ints(n, "strides", {s, s});
            break;
        }
        case LayerKind::Dropout: continue; // identity at inference
        case LayerKind::Flatten: GraphBuilder::intAttr(b.node("Flatten", l.name, {cur}, out), "axis", 1); break;
        case LayerKind::LogSoftmax: GraphBuilder::intAttr(b.node("LogSoftmax", l.name, {cur}, out), "axis", 1); break;
        }
        cur = out;
        if (m.quantized && l.outputQuant) cur = b.qdq(cur, l.name, *l.outputQuant);
    }
    // The last value is the graph output "logits".
    g->mutable_node(g->node_size() - 1)->set_output(0, "logits");
    setShape(g->add_output(), "logits", {static_cast<std::int64_t>(m.classes)});
    const bool logProbs = L.back().kind == LayerKind::LogSoftmax;
    g->mutable_output(0)->set_doc_string(logProbs ? "log-probabilities of the classes (argmax = predicted class)"
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

// ---------------------------------------------------------------- reading
namespace {

class OnnxReader {
public:
    OnnxReader(const onnx::ModelProto& mp, const std::string& source) : m_mp(mp), m_source(source)
    {
        for (const TensorProto& t : mp.graph().initializer()) m_init[t.name()] = &t;
    }

    [[noreturn]] void fail(const std::string& what) const { throw FormatError(m_source + ": " + what); }

    const TensorProto& init(const std::string& name) const
    {
        const auto it = m_init.find(name);
        if (it == m_init.end()) fail("'" + name + "' is not an initializer");
        return *it->second;
    }
    std::uint64_t numel(const TensorProto& t) const
    {
        std::uint64_t n = 1;
        for (std::int64_t d : t.dims()) {
            if (d <= 0 || d > (std::int64_t{1} << 31)) fail("initializer '" + t.name() + "' has dimension " + std::to_string(d));
            n *= static_cast<std::uint64_t>(d);
            if (n > (std::uint64_t{1} << 31)) fail("initializer '" + t.name() + "' is too large");
        }
        return n;
    }
    std::vector<float> floats(const TensorProto& t) const
    {
        const std::uint64_t n = numel(t);
        if (t.data_type() != TensorProto::FLOAT) fail("initializer '" + t.name() + "' is not float32");
        std::vector<float> v;
        if (t.has_raw_data()) {
            if (t.raw_data().size() != n * 4) fail("initializer '" + t.name() + "' holds the wrong number of bytes");
            v.resize(static_cast<std::size_t>(n));
            std::memcpy(v.data(), t.raw_data().data(), n * 4);
        } else {
            if (static_cast<std::uint64_t>(t.float_data_size()) != n) fail("initializer '" + t.name() + "' holds the wrong number of values");
            v.assign(t.float_data().begin(), t.float_data().end());
        }
        return v;
    }
    std::vector<std::int32_t> ints(const TensorProto& t) const
    {
        const std::uint64_t n = numel(t);
        const int type = t.data_type();
        const std::size_t width = type == TensorProto::INT32 ? 4 : 1;
        if (type != TensorProto::INT32 && type != TensorProto::INT8 && type != TensorProto::UINT8)
            fail("initializer '" + t.name() + "' is not int8, uint8 or int32");
        std::vector<std::int32_t> v(static_cast<std::size_t>(0));
        if (t.has_raw_data()) {
            if (t.raw_data().size() != n * width) fail("initializer '" + t.name() + "' holds the wrong number of bytes");
            v.resize(static_cast<std::size_t>(n));
            const char* p = t.raw_data().data();
            for (std::size_t i = 0; i < v.size(); ++i) {
                if (type == TensorProto::INT32) std::memcpy(&v[i], p + 4 * i, 4);
                else if (type == TensorProto::INT8) v[i] = static_cast<std::int8_t>(p[i]);
                else v[i] = static_cast<std::uint8_t>(p[i]);
            }
        } else {
            if (static_cast<std::uint64_t>(t.int32_data_size()) != n) fail("initializer '" + t.name() + "' holds the wrong number of values");
            v.assign(t.int32_data().begin(), t.int32_data().end());
        }
        return v;
    }
    std::int64_t attrInt(const onnx::NodeProto& n, const std::string& name, std::int64_t def) const
    {
        for (const auto& a : n.attribute())
            if (a.name() == name) return a.i();
        return def;
    }
    std::vector<std::int64_t> attrInts(const onnx::NodeProto& n, const std::string& name) const
    {
        for (const auto& a : n.attribute())
            if (a.name() == name) return {a.ints().begin(), a.ints().end()};
        return {};
    }
    std::size_t squareAttr(const onnx::NodeProto& n, const std::string& name, std::size_t count, std::int64_t def) const
    {
        std::vector<std::int64_t> v = attrInts(n, name);
        if (v.empty()) return static_cast<std::size_t>(def);
        if (v.size() != count) fail("node '" + n.name() + "': attribute " + name + " has " + std::to_string(v.size()) + " values");
        for (std::int64_t x : v)
            if (x != v[0] || x < 0 || x > 64) fail("node '" + n.name() + "': only square, small " + name + " are read");
        return static_cast<std::size_t>(v[0]);
    }

    ExportedModel read();

private:
    const onnx::ModelProto& m_mp;
    const std::string& m_source;
    std::map<std::string, const TensorProto*> m_init;
};

ExportedModel OnnxReader::read()
{
    bool opsetOk = false;
    for (const auto& o : m_mp.opset_import())
        if ((o.domain().empty() || o.domain() == "ai.onnx") && o.version() >= 13) opsetOk = true;
    if (!opsetOk) fail("the model does not import the default ONNX opset >= 13");
    const onnx::GraphProto& g = m_mp.graph();
    if (g.input_size() < 1 || g.output_size() != 1) fail("expected one input and one output");
    ExportedModel m;
    for (const auto& p : m_mp.metadata_props()) {
        if (p.key() == "quantscope.model") m.modelName = p.value();
        else if (p.key() == "quantscope.strategy") m.strategy = p.value();
        else if (p.key() == "quantscope.weight_format") m.weightFormat = p.value();
        else if (p.key() == "quantscope.activation_format") m.activationFormat = p.value();
        else if (p.key() == "quantscope.granularity") m.granularity = p.value();
        else if (p.key() == "quantscope.class_names" && !p.value().empty()) {
            std::stringstream ss(p.value());
            for (std::string line; std::getline(ss, line);) m.classNames.push_back(line);
        }
    }
    const auto& inShape = g.input(0).type().tensor_type().shape();
    if (inShape.dim_size() != 4) fail("the input is not [N, C, H, W]");
    auto dim = [&](int i) -> std::size_t {
        const std::int64_t d = inShape.dim(i).dim_value();
        if (d <= 0 || d > 4096) fail("input dimension " + std::to_string(i) + " is " + std::to_string(d));
        return static_cast<std::size_t>(d);
    };
    m.channels = dim(1);
    m.height = dim(2);
    m.width = dim(3);

    std::map<std::string, StoredTensor> dq;               // DequantizeLinear outputs of initializers
    std::map<std::string, ActivationQuant> pendingQuant;  // QuantizeLinear outputs
    std::string normalized;
    for (const onnx::NodeProto& n : g.node()) {
        const std::string& op = n.op_type();
        auto in = [&](int i) -> const std::string& {
            if (i >= n.input_size()) fail("node '" + n.name() + "' (" + op + ") lacks input " + std::to_string(i));
            return n.input(i);
        };
        if (n.output_size() < 1) fail("node '" + n.name() + "' has no output");
        if (op == "Sub") {
            m.mean = floats(init(in(1))).at(0);
        } else if (op == "Div") {
            m.stddev = floats(init(in(1))).at(0);
            normalized = n.output(0);
        } else if (op == "QuantizeLinear") {
            ActivationQuant a;
            const TensorProto& zp = init(in(2));
            a.isSigned = zp.data_type() == TensorProto::INT8;
            a.bits = 8;
            a.qmin = a.isSigned ? -128 : 0;
            a.qmax = a.isSigned ? 127 : 255;
            a.scale = floats(init(in(1))).at(0);
            a.zeroPoint = ints(zp).at(0);
            pendingQuant[n.output(0)] = a;
            if (in(0) == normalized) {
                m.inputQuant = a;
            } else {
                if (m.layers.empty()) fail("QuantizeLinear '" + n.name() + "' before any layer");
                m.layers.back().outputQuant = a;
            }
        } else if (op == "DequantizeLinear") {
            if (pendingQuant.count(in(0))) continue; // the activation pair
            StoredTensor t;
            const TensorProto& q = init(in(0));
            t.shape.assign(q.dims().begin(), q.dims().end());
            t.encoding = TensorEncoding::Int;
            t.q = ints(q);
            t.scales = floats(init(in(1)));
            t.zeroPoints = n.input_size() > 2 ? ints(init(in(2))) : std::vector<std::int32_t>(t.scales.size(), 0);
            t.isSigned = true;
            t.bits = q.data_type() == TensorProto::INT32 ? 32 : 8;
            t.qmin = t.bits == 32 ? std::numeric_limits<std::int32_t>::min() : -128;
            t.qmax = t.bits == 32 ? std::numeric_limits<std::int32_t>::max() : 127;
            t.layout = t.scales.size() == 1 && init(in(1)).dims_size() == 0 ? ScaleLayout::Tensor : ScaleLayout::Channel;
            dq[n.output(0)] = std::move(t);
        } else if (op == "Conv" || op == "Gemm") {
            StoredLayer l;
            l.name = n.name();
            auto tensorOf = [&](const std::string& v, const char* name) {
                StoredTensor t;
                if (auto it = dq.find(v); it != dq.end()) {
                    t = it->second;
                } else {
                    const TensorProto& f = init(v);
                    t.shape.assign(f.dims().begin(), f.dims().end());
                    t.values = floats(f);
                }
                t.name = name;
                return t;
            };
            l.tensors = {tensorOf(in(1), "weight"), tensorOf(in(2), "bias")};
            const Shape& ws = l.tensors[0].shape;
            if (op == "Conv") {
                if (ws.size() != 4 || ws[2] != ws[3]) fail("Conv '" + n.name() + "' has a weight of shape " + shapeString(ws));
                if (attrInt(n, "group", 1) != 1) fail("Conv '" + n.name() + "': grouped convolutions are not read");
                l.kind = LayerKind::Conv2d;
                l.outChannels = ws[0];
                l.inChannels = ws[1];
                l.kernel = ws[2];
                l.stride = squareAttr(n, "strides", 2, 1);
                l.padding = squareAttr(n, "pads", 4, 0);
                if (squareAttr(n, "dilations", 2, 1) != 1) fail("Conv '" + n.name() + "': dilations are not read");
            } else {
                if (ws.size() != 2 || attrInt(n, "transB", 0) != 1 || attrInt(n, "transA", 0) != 0)
                    fail("Gemm '" + n.name() + "' is not x * W^T + b");
                l.kind = LayerKind::Linear;
                l.outFeatures = ws[0];
                l.inFeatures = ws[1];
            }
            m.layers.push_back(std::move(l));
        } else if (op == "Relu" || op == "Flatten" || op == "LogSoftmax" || op == "MaxPool") {
            StoredLayer l;
            l.name = n.name();
            if (op == "Relu") {
                l.kind = LayerKind::ReLU;
            } else if (op == "Flatten") {
                if (attrInt(n, "axis", 1) != 1) fail("Flatten '" + n.name() + "' does not flatten from axis 1");
                l.kind = LayerKind::Flatten;
            } else if (op == "LogSoftmax") {
                const std::int64_t axis = attrInt(n, "axis", -1);
                if (axis != 1 && axis != -1) fail("LogSoftmax '" + n.name() + "' is not over the classes");
                l.kind = LayerKind::LogSoftmax;
            } else {
                l.kind = LayerKind::MaxPool2d;
                l.kernel = squareAttr(n, "kernel_shape", 2, 0);
                l.stride = squareAttr(n, "strides", 2, 1);
                if (squareAttr(n, "pads", 4, 0) != 0) fail("MaxPool '" + n.name() + "': padding is not read");
            }
            m.layers.push_back(std::move(l));
        } else if (op != "Identity") {
            fail("node '" + n.name() + "': operator " + op + " is not one QuantScope exports");
        }
    }
    if (m.layers.empty()) fail("the graph has no layers");
    m.quantized = m.inputQuant.has_value();
    const auto& outShape = g.output(0).type().tensor_type().shape();
    if (outShape.dim_size() != 2 || outShape.dim(1).dim_value() <= 0 || outShape.dim(1).dim_value() > 65536)
        fail("the output is not [N, classes]");
    m.classes = static_cast<std::size_t>(outShape.dim(1).dim_value());
    if (!m.classNames.empty() && m.classNames.size() != m.classes) m.classNames.clear();
    m.validate(m_source);
    return m;
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

} // namespace quantscope
