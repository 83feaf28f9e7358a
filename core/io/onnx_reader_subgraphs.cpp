// The reader of QuantScope's own ONNX exports (onnx_reader.h): the layers encodeOnnx writes as
// subgraphs. Their inner nodes (marked kOnnxPart) are remembered by part(); the last node, marked
// with the layer's name, checks the whole chain against what onnx_io.cpp writes and appends the
// layer: LayerNorm2d, GroupNorm, SiLU / Hardswish / Mish / GELU / GELUTanh (the Mul that ends
// them, or a Mul layer of two activations) and ChannelShuffle.
#include "io/onnx_reader.h"

#include "io/onnx_io.h"
#include "io/onnx_importer.h"

#include <cmath>
#include <cstdlib>

namespace quantscope {

namespace {
constexpr std::size_t kMaxOwnGroups = std::size_t{1} << 20; // a GroupNorm's groups, at most (validate checks them against the channels)
} // namespace

void OnnxReader::layerNorm2d(const onnx::NodeProto& n, bool affine)
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

void OnnxReader::groupNorm(const onnx::NodeProto& n, bool affine)
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

void OnnxReader::part(const onnx::NodeProto& n)
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

void OnnxReader::mul(const onnx::NodeProto& n)
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

void OnnxReader::reshape(const onnx::NodeProto& n)
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
} // namespace quantscope
