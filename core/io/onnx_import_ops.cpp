// The ONNX importer's operator handlers (see onnx_import.h for the list): each turns one node whose
// inputs are activations into a StoredLayer, or into an alias of an existing activation, with the
// operator's semantics from the ONNX spec (docs/Operators.md) and PyTorch's exports as its test.
#include "io/onnx_importer.h"
#include "nn/pointwise.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace quantscope::onnximport {

const std::map<std::string, Importer::Handler>& Importer::handlers()
{
    static const std::map<std::string, Handler> table = {
        {"Conv", &Importer::conv},
        {"Gemm", &Importer::gemm},
        {"MatMul", &Importer::matMul},
        {"Add", &Importer::add},
        {"Sub", &Importer::sub},
        {"Neg", &Importer::neg},
        {"Pow", &Importer::pow},
        {"Div", &Importer::div},
        {"Mul", &Importer::mul},
        {"Relu", &Importer::relu},
        {"Clip", &Importer::clip},
        {"MaxPool", &Importer::pool},
        {"AveragePool", &Importer::pool},
        {"GlobalAveragePool", &Importer::globalAveragePool},
        {"ReduceMean", &Importer::reduceMean},
        {"GlobalMaxPool", &Importer::globalMaxPool},
        {"ReduceMax", &Importer::globalMaxPool},
        {"BatchNormalization", &Importer::batchNormalization},
        {"InstanceNormalization", &Importer::instanceNormalization},
        {"LayerNormalization", &Importer::layerNormalization},
        {"Flatten", &Importer::flatten},
        {"Reshape", &Importer::reshape},
        {"Squeeze", &Importer::squeeze},
        {"Gather", &Importer::gather},
        {"Unsqueeze", &Importer::unsqueeze},
        {"Dropout", &Importer::dropout},
        {"Identity", &Importer::identity},
        {"Cast", &Importer::cast},
        {"Softmax", &Importer::softmax},
        {"LogSoftmax", &Importer::logSoftmax},
        {"Pad", &Importer::pad},
        {"Shape", &Importer::shape},
        {"Sigmoid", &Importer::pointwise},
        {"Tanh", &Importer::pointwise},
        {"HardSigmoid", &Importer::pointwise},
        {"HardSwish", &Importer::pointwise},
        {"LeakyRelu", &Importer::pointwise},
        {"Elu", &Importer::pointwise},
        {"Gelu", &Importer::pointwise},
        {"Softplus", &Importer::pointwise},
        {"Mish", &Importer::pointwise},
        {"Selu", &Importer::pointwise},
        {"Celu", &Importer::pointwise},
        {"Softsign", &Importer::pointwise},
        {"Erf", &Importer::erf},
        {"PRelu", &Importer::prelu},
        {"Concat", &Importer::concat},
        {"Slice", &Importer::slice},
        {"Split", &Importer::split},
        {"Transpose", &Importer::transpose},
        {"Expand", &Importer::expand},
        {"Tile", &Importer::tile},
    };
    return table;
}

// The error for node n, whose operator has no handler: the operator, the PyTorch modules that
// export as it where they are not obvious, the graph's other unsupported operators (others: each
// type in order of appearance, with its node count) and what is read.
void Importer::failUnsupported(const NodeProto& n, const std::vector<std::pair<std::string, int>>& others) const
{
    std::string read; // the operators it has a handler for, in order
    for (const auto& h : handlers()) read += h.first + ", ";
    std::string also;
    for (const auto& [op, count] : others)
        if (op != n.op_type()) also += (also.empty() ? "" : ", ") + op + " (" + std::to_string(count) + (count == 1 ? " node)" : " nodes)");
    // log(softmax(x)) is how a forward often writes what F.log_softmax does in one operator;
    // the others: the PyTorch modules that export as the operator, which the user knows by name.
    static const std::map<std::string, std::string> kFrom{
        {"Log", "; for log(softmax(x)) export F.log_softmax(x, dim=1) instead"},
        {"Sqrt", "; Sqrt is read inside a LayerNorm, as nn.LayerNorm exports below opset 17 and as it is written by hand: "
                 "d = x - x.mean(dim, keepdim=True), then d / torch.sqrt((d ** 2).mean(dim, keepdim=True) + eps) or "
                 "d * torch.rsqrt(...), the variance from that same d or as x.var(dim, unbiased=False, keepdim=True) (the unbiased variance, "
                 "x.var's default, is not read)"},
        {"ReduceSum", "; ReduceSum is read only as a global average pooling: x.sum((2, 3)) divided by "
                      "H W, a Div or Mul by one constant right after it; a sum over other axes, or one used otherwise, is not a "
                      "layer QuantScope has"},
        {"Resize", "; F.interpolate and nn.Upsample export as Resize"},
        {"Upsample", "; F.interpolate and nn.Upsample export as Upsample before opset 10"},
        {"ConvTranspose", "; nn.ConvTranspose2d exports as ConvTranspose"},
        {"DepthToSpace", "; nn.PixelShuffle and F.pixel_shuffle export as DepthToSpace"},
        {"SpaceToDepth", "; nn.PixelUnshuffle and F.pixel_unshuffle export as SpaceToDepth"},
        {"Loop", "; a Python loop over a tensor's values or sizes, and torch.repeat_interleave with a tensor of repeats, export as Loop"},
        {"SequenceEmpty", "; a list of tensors built in forward (torch.repeat_interleave with a tensor of repeats, a loop appending to a "
                          "list) exports as the sequence operators (SequenceEmpty, SequenceInsert, ConcatFromSequence)"},
        {"SequenceConstruct", "; a list of tensors built in forward exports as the sequence operators (SequenceConstruct, ConcatFromSequence)"},
        {"SplitToSequence", "; torch.split or torch.unbind into a list used as a list exports as SplitToSequence"},
        {"ConcatFromSequence", "; torch.cat of a list built in forward (torch.repeat_interleave with a tensor of repeats) exports as ConcatFromSequence"},
        {"If", "; Python control flow on tensor values or sizes in forward (nn.LocalResponseNorm's export has it), and a "
               "torch.jit.script model's branches, export as If: export the traced module (torch.onnx.export of the nn.Module, "
               "not of torch.jit.script(model)), whose branch is taken for the example input"},
        {"Equal", "; a comparison of tensors (nn.LocalResponseNorm's export, or an if on sizes in forward) exports as Equal"},
        {"Greater", "; a comparison of tensors (an if on values or sizes in forward, or a torch.jit.script model's branch) exports as Greater"},
        {"Less", "; a comparison of tensors (an if on values or sizes in forward, or a torch.jit.script model's branch) exports as Less"},
        {"ReduceProd", "; x.std() and x.var() with their default unbiased=True export a ReduceProd of the shape for the N - 1 "
                       "correction: write x.std(..., unbiased=False) (read where it normalises, as a GroupNorm or LayerNorm)"},
        {"ReduceL2", "; F.normalize (an L2 normalisation of the activations, as in a cosine classifier) and torch.norm export as ReduceL2"},
    };
    const auto from = kFrom.find(n.op_type());
    const std::string hint = from != kFrom.end() ? from->second : "";
    // A model quantized elsewhere (torch.ao QDQ, onnxruntime's quantizer, QLinear operators):
    // the QDQ files QuantScope reads are its own, known by their quantscope.* metadata.
    static const std::set<std::string> kQuantized{"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                                                  "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd"};
    if (kQuantized.count(n.op_type()))
        failNode(n, "operator " + n.op_type() + ": this model was quantized by another tool, and QuantScope reads only the "
                    "QDQ files it exported itself (they carry its quantscope.* metadata); import the float model, "
                    "exported before quantization, and quantize it here (train --strategy ptq or qat)" +
                    (also.empty() ? std::string() : "; the graph also uses " + also));
    failNode(n, "operator " + n.op_type() + " is not supported by QuantScope's importer" + hint +
                    (also.empty() ? std::string() : "; the graph also uses the unsupported " + also) + " (it reads " + read +
                    "and constant shape arithmetic)");
}

// Gemm: Y = alpha * A' * B' + beta * C with A the activation (N, in): a Linear with
// W = alpha * B' (out, in) and bias beta * C; without C (PyTorch's nn.Linear(..., bias=False)) a
// Linear without a bias, so the parameter count is PyTorch's and fine-tuning trains no bias.
void Importer::gemm(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const bool onGate = shapeOf(x).size() == 3 && viewedShape(n, 0, x).size() == 1; // a Linear-form gate (onnx_import_joins.cpp)
    if (!onGate) perImageRank(n, x, 1, "Gemm takes [N, features] (flatten first)");
    if (attrInt(n, "transA", 0) != 0) failNode(n, "transA = 1 on an activation (it would mix the batch) is not read");
    const ConstTensor& bt = constant(n, 1, "B (the weight)");
    if (bt.dims.size() != 2) failNode(n, "B has rank " + std::to_string(bt.dims.size()) + ", expected 2", false);
    const bool transB = attrInt(n, "transB", 0) != 0;
    const float alpha = attrFloat(n, "alpha", 1.0f), beta = attrFloat(n, "beta", 1.0f);
    const auto rows = static_cast<std::size_t>(bt.dims[0]), cols = static_cast<std::size_t>(bt.dims[1]);
    const std::size_t in = transB ? cols : rows, out = transB ? rows : cols;
    if (in != shapeOf(x)[0])
        failNode(n, "B " + listOf(bt.dims) + " with transB = " + std::to_string(transB ? 1 : 0) + " is [" + (transB ? "out, in" : "in, out") +
                        "]: it takes " + std::to_string(in) + " features, and its input has " + std::to_string(shapeOf(x)[0]),
                 false);
    if (out < 1) failNode(n, "no output features", false);
    const std::vector<float>& bv = floats(n, bt, "B");
    std::vector<float> w(in * out);
    for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) w[o * in + i] = alpha * (transB ? bv[o * in + i] : bv[i * out + o]);
    StoredLayer l;
    l.kind = LayerKind::Linear;
    l.inFeatures = in;
    l.outFeatures = out;
    l.tensors = {floatTensor("weight", {out, in}, std::move(w))};
    if (const ConstTensor* c = optConstant(n, 2, "C (the bias)")) {
        const std::vector<float>& cv = floats(n, *c, "C");
        const bool perOutput = cv.size() == out && (c->dims.size() == 1 || (c->dims.size() == 2 && c->dims[0] == 1));
        // One that cannot broadcast to [N, out] at all ([0], [5] for 10 outputs) is a broken file
        // (tester 15: exit 2 for it, 3 for a B of [10, 0]); a valid one of other values per image
        // (an [N, out] C) is one QuantScope does not read.
        const bool broadcasts = !cv.empty() && c->dims.size() <= 2 &&
                                (c->dims.empty() || c->dims.back() == 1 || c->dims.back() == static_cast<std::int64_t>(out));
        if (!perOutput && cv.size() != 1)
            failNode(n, "C " + listOf(c->dims) + " is not a bias of " + std::to_string(out) + " values" +
                            (broadcasts ? "" : ", nor does it broadcast to the output [N, " + std::to_string(out) + "]"),
                     broadcasts);
        std::vector<float> bias(out);
        for (std::size_t o = 0; o < out; ++o) bias[o] = beta * (perOutput ? cv[o] : cv[0]);
        l.tensors.push_back(floatTensor("bias", {out}, std::move(bias)));
    }
    if (onGate) {
        std::vector<float> bias;
        if (l.tensors.size() > 1) bias = l.tensors[1].values;
        return linearOnGateView(n, x, std::move(l.tensors[0].values), in, out, l.tensors.size() > 1 ? &bias : nullptr, bt);
    }
    foldPendingAffine(n, l);
    permuteChannelsLastColumns(n, l.tensors[0].values, out);
    addLayer(n, std::move(l), {out}, {x}, &bt);
}

// MatMul: Y = A B with A the activation (N, in) and B (in, out): a Linear with W = B^T and no
// bias; an Add of a constant after it (MatMul + Add, as older exporters write a Linear) gives it one.
void Importer::matMul(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    if (isChannelsLast(n.input(0)) && shapeOf(x).size() == 3) return matMulChannelsLast(n, x);
    const bool onGate = shapeOf(x).size() == 3 && viewedShape(n, 0, x).size() == 1; // a Linear-form gate (onnx_import_joins.cpp)
    if (!onGate) perImageRank(n, x, 1, "MatMul is read as x W with x [N, features]");
    const ConstTensor& bt = constant(n, 1, "the weight");
    if (bt.dims.size() != 2) failNode(n, "the weight has rank " + std::to_string(bt.dims.size()) + ", expected 2", false);
    const auto in = static_cast<std::size_t>(bt.dims[0]), out = static_cast<std::size_t>(bt.dims[1]);
    if (in != shapeOf(x)[0] || out < 1) failNode(n, "the weight " + listOf(bt.dims) + " does not take " + std::to_string(shapeOf(x)[0]) + " features", false);
    const std::vector<float>& bv = floats(n, bt, "the weight");
    std::vector<float> w(in * out);
    for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) w[o * in + i] = bv[i * out + o];
    StoredLayer l;
    l.kind = LayerKind::Linear;
    l.inFeatures = in;
    l.outFeatures = out;
    if (onGate) return linearOnGateView(n, x, std::move(w), in, out, nullptr, bt);
    l.tensors = {floatTensor("weight", {out, in}, std::move(w))};
    foldPendingAffine(n, l);
    permuteChannelsLastColumns(n, l.tensors[0].values, out);
    addLayer(n, std::move(l), {out}, {x}, &bt);
}

// A BatchNorm1d before this Linear (m_pendingAffine: x' = a x + b per feature) folds into it:
// W' = W diag(a), bias' = bias + W b.
void Importer::foldPendingAffine(const NodeProto& n, StoredLayer& l)
{
    const auto it = m_pendingAffine.find(n.input(0));
    if (it == m_pendingAffine.end()) return;
    m_pendingUsed = true;
    const auto& [a, b] = it->second.second;
    const std::size_t in = l.inFeatures, out = l.outFeatures;
    if (a.size() != in) failNode(n, "reads " + std::to_string(a.size()) + " features as " + std::to_string(in), false);
    std::vector<float>& w = l.tensors[0].values;
    std::vector<float> shift(out, 0.0f);
    for (std::size_t o = 0; o < out; ++o) {
        double sum = 0.0;
        for (std::size_t i = 0; i < in; ++i) {
            sum += static_cast<double>(w[o * in + i]) * b[i];
            w[o * in + i] *= a[i];
        }
        shift[o] = static_cast<float>(sum);
    }
    if (l.tensors.size() < 2) {
        l.tensors.push_back(floatTensor("bias", {out}, std::vector<float>(out, 0.0f)));
        m_m.importAddedParams += out;
    }
    for (std::size_t o = 0; o < out; ++o) l.tensors[1].values[o] += shift[o];
    m_m.notes.push_back(it->second.first + " before Linear '" + n.name() +
                        "' (a per-feature scale and shift) is folded into it; fine-tuning trains the folded Linear");
}

// Add: two activations of one shape (a residual join) or a map and a [C, 1, 1] gate of its channels,
// or a Linear/Conv output plus a constant
// (its bias, as MatMul + Add export a Linear): a layer without a bias gains one, one with a bias
// adds the constant to it.
void Importer::add(const NodeProto& n)
{
    const Value& a = value(n, 0);
    const Value& b = value(n, 1);
    if (a.kind == Value::Kind::Act && b.kind == Value::Kind::Act) {
        // Equal shapes, or a [C, H, W] map plus a [C, 1, 1] gate of its channels (GCNet's context
        // add), either order, as Mul takes them.
        const int gate = channelGateOf(shapeOf(a.act), shapeOf(b.act));
        if (gate < -1)
            failNode(n, "adds per-image shapes " + shapeString(shapeOf(a.act)) + " and " + shapeString(shapeOf(b.act)) +
                            "; QuantScope's Add takes two activations of one shape, or a [N, C, H, W] map and a [N, C, 1, 1] "
                            "gate of its channels");
        StoredLayer l;
        l.kind = LayerKind::Add;
        const Shape out = shapeOf(gate == 0 ? b.act : a.act); // a copy: addLayer adds a shape
        addLayer(n, std::move(l), out, {a.act, b.act});
        return;
    }
    const int ai = a.kind == Value::Kind::Act ? 0 : 1;
    const Value& v = ai == 0 ? a : b;
    const ConstTensor& c = constant(n, 1 - ai, "one addend");
    if (v.kind != Value::Kind::Act) failNode(n, "adds a Pad's output");
    if (onInput(n, ai)) { // x * (1 / s) + b: the normalisation's shift
        if (sharedInput(n, ai)) return normaliseInGraph(n, ai, c, Fold::Add);
        return shiftInput(n, c, -1.0f);
    }
    if (!foldsIntoLayer(n, ai) && insideNetwork(n, ai)) return constantOnMaps(n, ai, c, Fold::Add);
    foldConstant(n, ai, c, Fold::Add);
}

// A constant op on the output of the last layer, a Linear or Conv that nothing else reads, folded
// into it: + c and - c into its bias, * c and / c (one value, or one per output) into its weights
// and bias. conv(x) * a + b (a frozen BatchNorm), x + 0.2 * h (a scaled residual branch) and
// torch.add(x, h, alpha=2) export so (tester 11). Anything else is refused with the forms read.
void Importer::foldConstant(const NodeProto& n, int ai, const ConstTensor& c, Fold op)
{
    const Value& v = value(n, ai);
    const char* verb = op == Fold::Add ? "adds" : op == Fold::Sub ? "subtracts" : op == Fold::Mul ? "multiplies by" : "divides by";
    const bool last = v.kind == Value::Kind::Act && v.act == m_m.layers.size() && v.act > 0;
    StoredLayer* l = last ? &m_m.layers[v.act - 1] : nullptr;
    if (l && (l->kind == LayerKind::GroupNorm || l->kind == LayerKind::LayerNorm2d) && m_uses[n.input(ai)] == 1 &&
        !m_views.count(n.input(ai)))
        return foldIntoGroupNorm(n, ai, c, op, *l);
    if (!l || (l->kind != LayerKind::Linear && l->kind != LayerKind::Conv2d) || m_uses[n.input(ai)] != 1)
        failNode(n, std::string(verb) + " a constant on an activation; QuantScope reads that only right after a Linear (Gemm, MatMul) "
                                        "or Conv that nothing else reads, folded into it" +
                        (op == Fold::Mul || op == Fold::Div ? "" : " as a bias"));
    const std::vector<float>& cv = floats(n, c, "the constant");
    const std::size_t out = l->kind == LayerKind::Linear ? l->outFeatures : l->outChannels;
    // Shapes with one value per output channel/feature: [out], [1, out] (Linear), [out, 1, 1], [1, out, 1, 1] (Conv).
    std::vector<std::int64_t> dims = c.dims;
    while (!dims.empty() && dims.front() == 1 && dims.size() > (l->kind == LayerKind::Linear ? 1u : 3u)) dims.erase(dims.begin());
    // A 1x1 convolution of a Linear-form gate is viewed flat: its bias comes as [out] too.
    const auto view = m_views.find(n.input(ai));
    const bool flatView = view != m_views.end() && view->second.size() == 1;
    const bool ok = cv.size() == 1 ||
                    (l->kind == LayerKind::Linear || flatView ? dims == std::vector<std::int64_t>{static_cast<std::int64_t>(out)}
                                                              : dims == std::vector<std::int64_t>{static_cast<std::int64_t>(out), 1, 1});
    if (!ok) failNode(n, "the constant " + listOf(c.dims) + " is not one value per output of '" + l->name + "'");
    const auto at = [&](std::size_t o) { return cv.size() == 1 ? cv[0] : cv[o]; };
    if (op == Fold::Add || op == Fold::Sub) {
        if (l->tensors.size() < 2) l->tensors.push_back(floatTensor("bias", {out}, std::vector<float>(out, 0.0f)));
        std::vector<float>& bias = l->tensors[1].values;
        for (std::size_t o = 0; o < out; ++o) bias[o] += op == Fold::Add ? at(o) : -at(o);
    } else {
        for (std::size_t o = 0; o < out; ++o)
            if (!std::isfinite(at(o)) || (op == Fold::Div && at(o) == 0.0f))
                failNode(n, std::string(verb) + " a constant that is not a finite " + (op == Fold::Div ? "non-zero " : "") + "number", false);
        std::vector<float>& w = l->tensors[0].values;
        const std::size_t row = w.size() / out;
        for (std::size_t o = 0; o < out; ++o) {
            const float f = op == Fold::Mul ? at(o) : 1.0f / at(o);
            for (std::size_t i = 0; i < row; ++i) w[o * row + i] *= f;
            if (l->tensors.size() > 1) l->tensors[1].values[o] *= f;
        }
    }
    // A selection or copies of the input's channels, then a constant: the graph's own
    // normalisation (x[:, [0, 0, 0]] - mean), which takes [0, 1] pixels as they are.
    if (m_pixelLayers.count(v.act - 1) && readsOnlyPixels(v.act)) m_normalisesAfterPad = true;
    if (std::find(m_channelsLastLinears.begin(), m_channelsLastLinears.end(), l->name) == m_channelsLastLinears.end()) // else named in their note
        m_m.notes.push_back(std::string(n.op_type()) + " " + onnxNodeName(n) + " " + verb + " a constant after '" + l->name +
                            "': folded into its " + (op == Fold::Add || op == Fold::Sub ? "bias" : "weights and bias"));
    alias(n, v.act);
}

void Importer::relu(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    StoredLayer l;
    l.kind = LayerKind::ReLU;
    addLayer(n, std::move(l), shapeOf(x), {x});
}

// Clip(0, 6) is ReLU6, Clip(0, none) ReLU, Clip(none, none) nothing, and any other bounds a
// Hardtanh (nn.Hardtanh, torch.clamp; nn/pointwise.h); min/max are attributes before opset 11,
// inputs since. Refused by node: a bound that is not one constant value, NaN, or min not below max.
void Importer::clip(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (m_opset < 11) {
        lo = attrFloat(n, "min", lo);
        hi = attrFloat(n, "max", hi);
    } else {
        for (int i = 1; i <= 2; ++i)
            if (const ConstTensor* c = optConstant(n, i, i == 1 ? "min" : "max")) {
                if (c->numel() != 1) failNode(n, std::string(i == 1 ? "min" : "max") + " is not one value", false);
                (i == 1 ? lo : hi) = static_cast<float>(c->at(0));
            }
    }
    // Right after a ReLU that nothing else reads (x.clamp(min=0).clamp(max=6), F.relu(x).clamp(max=6)):
    // a lower bound of at most 0 changes nothing, so Clip(lo <= 0, 6) makes the ReLU a ReLU6 and
    // Clip(lo <= 0) is nothing at all.
    const bool afterRelu = x > 0 && x == m_m.layers.size() && m_uses[n.input(0)] == 1 &&
                           (m_m.layers[x - 1].kind == LayerKind::ReLU || m_m.layers[x - 1].kind == LayerKind::ReLU6);
    if (afterRelu && lo <= 0.0f && (hi == 6.0f || (std::isinf(hi) && hi > 0))) {
        if (hi == 6.0f) m_m.layers[x - 1].kind = LayerKind::ReLU6;
        return alias(n, x);
    }
    if (std::isinf(lo) && lo < 0 && std::isinf(hi) && hi > 0) return alias(n, x); // clamps nothing
    StoredLayer l;
    if (lo == 0.0f && hi == 6.0f) l.kind = LayerKind::ReLU6;
    else if (lo == 0.0f && std::isinf(hi) && hi > 0) l.kind = LayerKind::ReLU;
    else {
        if (const std::string why = hardtanhBoundsProblem(lo, hi); !why.empty()) failNode(n, why);
        l.kind = LayerKind::Hardtanh;
        l.alpha = lo;
        l.beta = hi;
    }
    addLayer(n, std::move(l), shapeOf(x), {x});
}

// BatchNormalization in inference form: Y = scale (X - mean) / sqrt(var + epsilon) + B.
void Importer::batchNormalization(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    if (shapeOf(x).size() == 1) return batchNormAfterLinear(n, x);
    perImageRank(n, x, 3, "BatchNormalization is read on [N, C, H, W], or on [N, C] right after a Linear");
    noExtraOutputs(n);
    if (attrInt(n, "training_mode", 0) != 0) failNode(n, std::string("training_mode = 1, the training form (batch statistics): ") + kBatchStatisticsHint);
    // Before opset 14 the training form is the one with the running and saved statistics as
    // outputs (torch.onnx.export(..., training=TrainingMode.TRAINING)): it normalises with the
    // batch's statistics, which the inference layer read here would not.
    if (m_opset < 14)
        for (int k = 1; k < n.output_size(); ++k)
            if (!n.output(k).empty())
                failNode(n, std::to_string(n.output_size()) + " outputs, the training form of opset " + std::to_string(m_opset) +
                                " (batch statistics): " + kBatchStatisticsHint);
    const std::size_t c = shapeOf(x)[0];
    StoredLayer l;
    l.kind = LayerKind::BatchNorm2d;
    l.outChannels = c;
    l.eps = attrFloat(n, "epsilon", 1e-5f);
    l.momentum = 1.0f - attrFloat(n, "momentum", 0.9f);
    if (!(l.eps > 0.0f) || !std::isfinite(l.eps)) failNode(n, "epsilon must be positive", false);
    if (!std::isfinite(l.momentum)) l.momentum = 0.1f;
    const char* names[] = {"gamma", "beta", "running_mean", "running_var"};
    const char* what[] = {"scale", "B", "input_mean", "input_var"};
    for (int i = 0; i < 4; ++i) {
        const ConstTensor& t = constant(n, i + 1, what[i]);
        if (t.numel() != c) failNode(n, std::string(what[i]) + " has " + std::to_string(t.numel()) + " values for " + std::to_string(c) + " channels", false);
        l.tensors.push_back(floatTensor(names[i], {c}, floats(n, t, what[i])));
    }
    for (float v : l.tensors[3].values)
        if (!(v >= 0.0f)) failNode(n, "input_var holds a negative or non-finite variance", false);
    addLayer(n, std::move(l), shapeOf(x), {x});
}

// BatchNorm1d on [N, C] right after a Linear that nothing else reads: folded into it with its
// running statistics (eval mode), y = (x W^T + b - mean) gamma / sqrt(var + eps) + beta, so
// W'[c] = W[c] a[c] and b'[c] = (b[c] - mean[c]) a[c] + beta[c] with a = gamma / sqrt(var + eps);
// the imported model has no BatchNorm there (fine-tuning trains the folded Linear), which a note says.
// A BatchNorm1d's inference form on c features, x' = a x + b: checks (eval form, epsilon, one
// value per feature, variances) and returns a = scale / sqrt(var + eps) and b = B - mean a, in
// double before rounding (so folding into a Linear rounds once).
std::pair<std::vector<double>, std::vector<double>> Importer::batchNorm1dAffine(const NodeProto& n, std::size_t c)
{
    if (attrInt(n, "training_mode", 0) != 0) failNode(n, std::string("training_mode = 1, the training form (batch statistics): ") + kBatchStatisticsHint);
    if (m_opset < 14)
        for (int k = 1; k < n.output_size(); ++k)
            if (!n.output(k).empty())
                failNode(n, std::to_string(n.output_size()) + " outputs, the training form of opset " + std::to_string(m_opset) +
                                " (batch statistics): " + kBatchStatisticsHint);
    const float eps = attrFloat(n, "epsilon", 1e-5f);
    if (!(eps > 0.0f) || !std::isfinite(eps)) failNode(n, "epsilon must be positive", false);
    const char* what[] = {"scale", "B", "input_mean", "input_var"};
    std::vector<float> v[4];
    for (int i = 0; i < 4; ++i) {
        const ConstTensor& t = constant(n, i + 1, what[i]);
        if (t.numel() != c) failNode(n, std::string(what[i]) + " has " + std::to_string(t.numel()) + " values for " + std::to_string(c) + " features", false);
        v[i] = floats(n, t, what[i]);
    }
    std::vector<double> a(c), b(c);
    for (std::size_t f = 0; f < c; ++f) {
        if (!(v[3][f] >= 0.0f)) failNode(n, "input_var holds a negative or non-finite variance", false);
        a[f] = static_cast<double>(v[0][f]) / std::sqrt(static_cast<double>(v[3][f]) + eps);
        b[f] = static_cast<double>(v[1][f]) - v[2][f] * a[f];
    }
    return {std::move(a), std::move(b)};
}

// BatchNorm1d on features no Linear just made (global pooling -> flatten -> BN -> Linear, the
// "BNNeck"; tester 11): its inference form x' = a x + b is kept pending on its output, which only
// a Linear (Gemm, MatMul) may read, and folds into that Linear (foldPendingAffine).
void Importer::batchNormBeforeLinear(const NodeProto& n, std::size_t x)
{
    const auto [ad, bd] = batchNorm1dAffine(n, shapeOf(x)[0]);
    std::vector<float> a(ad.begin(), ad.end()), b(bd.begin(), bd.end());
    for (const NodeProto& r : m_mp.graph().node())
        for (const std::string& in : r.input())
            if (in == n.output(0) && r.op_type() != "Gemm" && r.op_type() != "MatMul")
                failNode(n, "BatchNormalization on [N, C] (BatchNorm1d) is read only right after a Linear that nothing else reads, "
                            "or right before Linears (folded into them); " + r.op_type() + " " + onnxNodeName(r) + " reads it");
    if (n.output(0) == m_outputName) failNode(n, "BatchNormalization on [N, C] (BatchNorm1d) as the graph output is not read");
    m_m.importFoldedParams += 2 * a.size(); // its gamma and beta, whichever Linears it folds into
    m_pendingAffine[n.output(0)] = {"BatchNormalization " + onnxNodeName(n), {std::move(a), std::move(b)}};
    alias(n, x);
}

void Importer::batchNormAfterLinear(const NodeProto& n, std::size_t x)
{
    noExtraOutputs(n);
    StoredLayer* l = x == m_m.layers.size() && x > 0 ? &m_m.layers[x - 1] : nullptr;
    if (!l || l->kind != LayerKind::Linear || m_uses[n.input(0)] != 1)
        return batchNormBeforeLinear(n, x);
    const std::size_t c = l->outFeatures;
    const auto [a, shift] = batchNorm1dAffine(n, c);
    m_m.importFoldedParams += 2 * c; // its gamma and beta
    if (l->tensors.size() < 2) {
        l->tensors.push_back(floatTensor("bias", {c}, std::vector<float>(c, 0.0f)));
        m_m.importAddedParams += c;
    }
    std::vector<float>& w = l->tensors[0].values; // after the push_back, which may move the tensors
    std::vector<float>& b = l->tensors[1].values;
    const std::size_t in = l->inFeatures;
    for (std::size_t o = 0; o < c; ++o) {
        for (std::size_t i = 0; i < in; ++i) w[o * in + i] = static_cast<float>(w[o * in + i] * a[o]);
        b[o] = static_cast<float>(static_cast<double>(b[o]) * a[o] + shift[o]);
    }
    m_m.notes.push_back("BatchNormalization " + onnxNodeName(n) + " after Linear '" + l->name +
                        "' is folded into it (its running statistics); fine-tuning trains the folded Linear");
    alias(n, x);
}

// Dropout: identity at inference; kept as a layer (ratio from the attribute before opset 12, the
// input since) so fine-tuning drops out as the original did.
void Importer::dropout(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    noExtraOutputs(n);
    float p = 0.5f;
    if (m_opset < 12) p = attrFloat(n, "ratio", 0.5f);
    else if (const ConstTensor* r = optConstant(n, 1, "ratio")) {
        if (r->numel() != 1) failNode(n, "ratio is not one value", false);
        p = static_cast<float>(r->at(0));
    }
    if (!(p >= 0.0f && p < 1.0f)) failNode(n, "ratio " + std::to_string(p) + " is outside [0, 1)", false);
    // In training mode a Dropout drops at random; of ratio 0 it is the identity either way
    // (nn.Dropout(p=0) exported with TrainingMode.TRAINING or PRESERVE; tester 11 M3).
    if (const ConstTensor* tm = m_opset >= 12 ? optConstant(n, 2, "training_mode") : nullptr)
        if (tm->numel() == 1 && tm->at(0) != 0 && p != 0.0f) failNode(n, "training_mode = true: export the model in eval mode (model.eval(), or torch.onnx.export(..., training=torch.onnx.TrainingMode.EVAL))");
    StoredLayer l;
    l.kind = LayerKind::Dropout;
    l.dropout = p;
    addLayer(n, std::move(l), shapeOf(x), {x});
}

void Importer::identity(const NodeProto& n) { define(n, value(n, 0)); }

void Importer::cast(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const std::int64_t to = attrInt(n, "to", 0);
    if (to == onnx::TensorProto::FLOAT16 || to == onnx::TensorProto::BFLOAT16)
        failNode(n, "casts an activation to element type " + elemTypeName(to) +
                        ": the model computes in half precision inside (converted to " + elemTypeName(to) +
                        " with float32 inputs and outputs kept), which QuantScope does not import; export the model in float32");
    if (to != onnx::TensorProto::FLOAT) failNode(n, "casts an activation to element type " + elemTypeName(to) + "; activations are float32");
    alias(n, x);
}

// Refuses a Softmax or LogSoftmax `n` whose output anything but Reshape, Flatten, Squeeze or
// Identity reads on the way to the graph output: the engines run them only as the last layer
// (tester 21: a LogSoftmax followed by another was refused later, as a damaged file, exit 3).
void Importer::onlyReshapedToTheOutput(const NodeProto& n)
{
    const std::string inside = "a " + n.op_type() + " inside the graph is not supported (only one that makes the model's output)";
    if (n.output_size() < 1) failNode(n, "has no output");
    std::vector<std::string> frontier{n.output(0)};
    std::set<std::string> seen;
    while (!frontier.empty()) {
        const std::string v = frontier.back();
        frontier.pop_back();
        if (!seen.insert(v).second) continue;
        for (const NodeProto& c : m_mp.graph().node()) {
            if (c.input_size() < 1 || c.input(0) != v) {
                for (const std::string& in : c.input())
                    if (in == v) failNode(n, inside);
                continue;
            }
            const std::string& op = c.op_type();
            if (op != "Reshape" && op != "Flatten" && op != "Squeeze" && op != "Identity") failNode(n, inside);
            if (c.output_size() > 0) frontier.push_back(c.output(0));
        }
    }
}

// Softmax over the classes, as the graph's output: the model's last layer (a Softmax inside the
// graph is refused). Training takes cross-entropy on the scores before it (loss.h
// modelClassificationLoss). What reads its output may only reshape it on the way to the graph
// output (x.view(-1, classes), flatten, squeeze, identity: [N, classes] stays).
void Importer::softmax(const NodeProto& n) { overTheClasses(n, LayerKind::Softmax); }

void Importer::logSoftmax(const NodeProto& n) { overTheClasses(n, LayerKind::LogSoftmax); }

// Softmax or LogSoftmax (`kind`) of the [N, classes] scores, as the graph's output.
void Importer::overTheClasses(const NodeProto& n, LayerKind kind)
{
    const std::size_t x = act(n, 0);
    perImageRank(n, x, 1, kind == LayerKind::Softmax ? "Softmax is read over the classes of [N, classes]"
                                                      : "LogSoftmax is read over the classes of [N, classes]");
    const std::int64_t axis = attrInt(n, "axis", m_opset < 13 ? 1 : -1);
    if (axis != 1 && axis != -1) failNode(n, "axis = " + std::to_string(axis) + " is not the class axis");
    onlyReshapedToTheOutput(n);
    StoredLayer l;
    l.kind = kind;
    addLayer(n, std::move(l), shapeOf(x), {x});
}

} // namespace quantscope::onnximport
