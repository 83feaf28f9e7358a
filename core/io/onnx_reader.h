// The reader of QuantScope's own ONNX exports: graphs of the shape encodeOnnx writes (onnx_io.cpp)
// read back into an ExportedModel. One handler per operator, in a table; every node output is
// mapped to the activation index it holds (0 = normalised input, i + 1 = layer i's output; a Q/DQ
// pair or Identity keeps the index of its input), so layers read their inputs by index, as in the
// .qsm file. Errors are FormatError (ConfigError for an opset it does not read), naming the file
// and the node. Internal to core/io: onnx_reader.cpp holds the walk and the single-node operators,
// onnx_reader_subgraphs.cpp the layers written as subgraphs (LayerNorm2d, GroupNorm, the
// activations made of several nodes, ChannelShuffle), onnx_reader_metadata.cpp the quantscope.*
// metadata.
#pragma once

#include "io/exported_model.h"
#include "io/onnx_reader_values.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <array>
#include <functional>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace quantscope {

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
    // The grid of an activation's QuantizeLinear or DequantizeLinear: one scale and zero point.
    // perAxis also takes a DequantizeLinear's one scale and zero point repeated along an axis
    // past the batch, which the export writes before a Conv or Gemm kept FP32 (onnx_io.cpp
    // floatLayerInput).
    ActivationQuant activationQuant(const onnx::NodeProto& n, bool perAxis = false) const
    {
        ActivationQuant a;
        const TensorProto& zp = init(input(n, 2));
        if (zp.data_type() != TensorProto::INT8 && zp.data_type() != TensorProto::UINT8) failNode(n, "zero point is not int8 or uint8");
        a.isSigned = zp.data_type() == TensorProto::INT8;
        a.bits = 8;
        a.qmin = a.isSigned ? -128 : 0;
        a.qmax = a.isSigned ? 127 : 255;
        const TensorProto& s = init(input(n, 1));
        const std::vector<std::int32_t> z = ints(zp);
        if (perAxis && s.dims_size() == 1) {
            const std::vector<float> v = floats(s);
            const auto same = [](const auto& xs) { return std::adjacent_find(xs.begin(), xs.end(), std::not_equal_to<>()) == xs.end(); };
            if (v.empty() || z.size() != v.size() || attrInt(n, "axis", 1) < 1 || !same(v) || !same(z))
                failNode(n, "activations are dequantized per tensor (one scale and zero point, or one repeated along an axis)");
            a.scale = v[0];
            a.zeroPoint = z[0];
            return a;
        }
        a.scale = scalar(s);
        if (z.size() != 1) failNode(n, "activations are quantized per tensor");
        a.zeroPoint = z[0];
        return a;
    }

    // ---- operators
    void sub(const onnx::NodeProto& n);
    void div(const onnx::NodeProto& n);
    void quantizeLinear(const onnx::NodeProto& n);
    void dequantizeLinear(const onnx::NodeProto& n);
    void conv(const onnx::NodeProto& n);
    void gemm(const onnx::NodeProto& n);
    void batchNormalization(const onnx::NodeProto& n);
    void relu(const onnx::NodeProto& n) { layer(n, LayerKind::ReLU); }
    void clip(const onnx::NodeProto& n); // Clip(0, 6) is ReLU6, any other Hardtanh; a bound left out is infinite
    void add(const onnx::NodeProto& n);
    // The last node of a LayerNorm2d subgraph (onnx_io.cpp): the Add of its bias, or without affine
    // parameters the Div by the standard deviation.
    void layerNorm2d(const onnx::NodeProto& n, bool affine);
    // The last node of a GroupNorm subgraph (onnx_io.cpp): the Add of its bias, or without affine
    // parameters the Reshape back.
    void groupNorm(const onnx::NodeProto& n, bool affine);
    void concat(const onnx::NodeProto& n);
    // A Pad of zeros over H and W, read only as the input of the AveragePool after it (the export
    // writes an average pool that counts its padding, with ceil_mode, so: encodeOnnx).
    void pad(const onnx::NodeProto& n);
    void pool(const onnx::NodeProto& n, LayerKind kind);
    void maxPool(const onnx::NodeProto& n);
    void averagePool(const onnx::NodeProto& n) { pool(n, LayerKind::AvgPool2d); }
    void globalAveragePool(const onnx::NodeProto& n) { layer(n, LayerKind::GlobalAvgPool2d); }
    void reduceMax(const onnx::NodeProto& n); // a ChannelMax
    void flatten(const onnx::NodeProto& n);
    void logSoftmax(const onnx::NodeProto& n);
    void softmax(const onnx::NodeProto& n);
    void identity(const onnx::NodeProto& n) { define(n, activation(n, 0)); }
    void pointwise(const onnx::NodeProto& n, LayerKind kind) { layer(n, kind); }
    void sigmoid(const onnx::NodeProto& n) { pointwise(n, LayerKind::Sigmoid); }
    void tanh(const onnx::NodeProto& n) { pointwise(n, LayerKind::Tanh); }
    void softplus(const onnx::NodeProto& n) { pointwise(n, LayerKind::Softplus); }
    void softsign(const onnx::NodeProto& n) { pointwise(n, LayerKind::Softsign); }
    void selu(const onnx::NodeProto& n);
    void celu(const onnx::NodeProto& n) { layer(n, LayerKind::CELU).alpha = attrFloat(n, "alpha", 1.0f); }
    void checkHardSigmoid(const onnx::NodeProto& n) const;
    void hardSigmoid(const onnx::NodeProto& n);
    void leakyRelu(const onnx::NodeProto& n) { layer(n, LayerKind::LeakyReLU).alpha = attrFloat(n, "alpha", 0.01f); }
    void elu(const onnx::NodeProto& n) { layer(n, LayerKind::ELU).alpha = attrFloat(n, "alpha", 1.0f); }
    // PRelu with a float32 slope of shape (1), (C) or (C, 1, 1), as encodeOnnx writes it; validate()
    // checks C against the input's channels.
    void prelu(const onnx::NodeProto& n);
    // An inner node of a layer written as a subgraph (kOnnxPart): remembered with the activation
    // the subgraph reads and the operators so far, and checked when its last node comes.
    void part(const onnx::NodeProto& n);
    // The last node of a SiLU, Hardswish, Mish or GELU subgraph (onnx_io.h), or a Mul layer: the product
    // of two activations (neither an inner value of a subgraph).
    void mul(const onnx::NodeProto& n);
    void erf(const onnx::NodeProto& n) { failNode(n, "Erf is read only inside the GELU subgraph QuantScope writes"); }
    // The last node of a channel shuffle (onnx_io.cpp): Reshape, Transpose, Reshape marked ChannelShuffle.
    void reshape(const onnx::NodeProto& n);
    void slice(const onnx::NodeProto& n); // x[:, begin:end]

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

} // namespace quantscope
