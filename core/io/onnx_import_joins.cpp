// The ONNX importer's joins of activations besides Add: Mul of two activations (equal shapes, or
// the [N, C, 1, 1] gate of squeeze-and-excitation against its [N, C, H, W] map, either order;
// x * sigmoid(x) is SiLU, found earlier as a subgraph), Concat along the channels, Expand of a
// gate to its map's shape (y.expand_as(x)), and the gate written with Linear layers:
//   GlobalAveragePool -> Flatten (Reshape, Squeeze) -> Gemm -> Relu -> Gemm -> Sigmoid -> Reshape
//   (Unsqueeze) back to [N, C, 1, 1] -> Mul (or Add: a context transform added to the map)
// whose Gemms (MatMuls) are read as 1x1 convolutions on the pooled [C, 1, 1] map (a Linear on one
// pixel), so the gate stays a feature map the Mul and the integer engine take as it is.
#include "io/onnx_importer.h"

#include "nn/concat.h"
#include "nn/mul.h"

#include <algorithm>
#include <cstdio>
#include <set>

namespace quantscope::onnximport {

namespace {
std::string shapesText(const std::vector<Shape>& shapes)
{
    std::string s;
    for (const Shape& x : shapes) s += (s.empty() ? "" : " and ") + shapeString(x);
    return s;
}
} // namespace

void Importer::mulActivations(const NodeProto& n)
{
    std::size_t a = act(n, 0), b = act(n, 1);
    // A [1, H, W] spatial gate of [C, H, W] maps (CBAM's spatial attention): copied to the C
    // channels by a 1x1 Conv 1 -> C of weights 1, then the Mul of two maps of one shape.
    for (int i = 0; i < 2; ++i) {
        std::size_t& g = i == 0 ? a : b;
        const Shape sg = shapeOf(g), sx = shapeOf(i == 0 ? b : a); // copies: addLayer adds a shape
        if (sg.size() != 3 || sx.size() != 3 || sg[0] != 1 || sx[0] < 2 || sg[1] != sx[1] || sg[2] != sx[2] ||
            m_views.count(n.input(i)) || m_views.count(n.input(1 - i)))
            continue;
        const StoredLayer& made = addLayer(n, pointwiseConv(1, sx[0], std::vector<float>(sx[0], 1.0f)), sx, {g}, nullptr, ".gate_copies");
        m_m.importAddedParams += sx[0];
        m_m.notes.push_back("Mul " + onnxNodeName(n) + " multiplies " + shapeString(sx) + " maps by a " + shapeString(sg) +
                            " spatial gate: the gate is copied to the channels by the 1x1 Conv '" + made.name + "' of weights 1 (" +
                            std::to_string(sx[0]) + " parameters QuantScope adds, trainable)");
        g = m_m.layers.size();
        break;
    }
    int gate = -1;
    try {
        gate = Mul::gateOf(n.name(), shapeOf(a), shapeOf(b));
    } catch (const ConfigError&) {
        failNode(n, "multiplies per-image shapes " + shapesText({shapeOf(a), shapeOf(b)}) +
                        "; QuantScope's Mul takes two activations of one shape, a [N, C, H, W] map and a [N, C, 1, 1] "
                        "gate of its channels, or a map and a [N, 1, H, W] spatial gate");
    }
    StoredLayer l;
    l.kind = LayerKind::Mul;
    addLayer(n, std::move(l), gate == 0 ? shapeOf(b) : shapeOf(a), {a, b});
}

// Pow(x, 2) (x ** 2, torch.pow(x, 2)) on an activation: the Mul of x with itself, as torch.square
// and x * x export; Pow(x, 1) is x. Other exponents are refused by node (nn.LayerNorm's Pow below
// opset 17 and GELU's x^3 are read inside their subgraphs).
void Importer::pow(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const ConstTensor& e = constant(n, 1, "the exponent");
    if (e.numel() != 1) failNode(n, "the exponent " + listOf(e.dims) + " is not one value");
    const double p = e.at(0);
    if (p == 1.0) return alias(n, x);
    if (p != 2.0) {
        char b[32];
        std::snprintf(b, sizeof b, "%g", p);
        failNode(n, std::string("raises an activation to the power ") + b +
                        "; QuantScope reads Pow(x, 2) as x * x (and Pow(x, 1)) only; nn.LayerNorm below opset 17 exports as "
                        "ReduceMean, Sub, Pow and Sqrt, read only in that form");
    }
    StoredLayer l;
    l.kind = LayerKind::Mul;
    addLayer(n, std::move(l), shapeOf(x), {x, x});
    m_m.notes.push_back("Pow " + onnxNodeName(n) + " squares an activation: read as the Mul of it with itself");
}

// Concat of activations along axis 1 (-rank + 1 alike); one input is the activation itself.
void Importer::concat(const NodeProto& n)
{
    std::vector<std::size_t> xs;
    std::vector<Shape> shapes;
    for (int i = 0; i < n.input_size(); ++i) {
        xs.push_back(act(n, i));
        shapes.push_back(shapeOf(xs.back()));
    }
    if (xs.empty()) failNode(n, "has no inputs", false);
    if (xs.size() == 1) return alias(n, xs[0]);
    if (xs.size() > 255) failNode(n, "joins " + std::to_string(xs.size()) + " activations; QuantScope's Concat joins at most 255");
    const auto rank = static_cast<std::int64_t>(shapes[0].size() + 1);
    const std::int64_t given = attrInt(n, "axis", 1);
    const std::int64_t axis = given < 0 ? given + rank : given;
    if (axis != 1)
        failNode(n, "joins per-image shapes " + shapesText(shapes) + " along axis " + std::to_string(given) +
                        "; QuantScope's Concat joins along the channels (axis 1) only");
    Shape out;
    try {
        out = Concat::joined(n.name(), shapes, 0);
    } catch (const ConfigError&) {
        failNode(n, "joins per-image shapes " + shapesText(shapes) +
                        " along the channels; every other axis must be equal (the same H and W)");
    }
    StoredLayer l;
    l.kind = LayerKind::Concat;
    if (std::all_of(xs.begin(), xs.end(), [&](std::size_t a) { return a == xs[0]; })) m_pixelLayers.insert(m_m.layers.size());
    addLayer(n, std::move(l), std::move(out), xs);
}

// Expand of an activation (y.expand_as(x)) whose every reader is a Mul: the Mul broadcasts the
// gate itself, so the Expand is read as the activation. The target must be a shape it broadcasts to.
void Importer::expand(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const ConstTensor& t = constant(n, 1, "the target shape");
    const Shape& s = shapeOf(x);
    // A one-channel map expanded along the channels (x.expand(-1, 3, -1, -1): grayscale images fed
    // to a network made for colour) is that many copies of it, a Concat; expanded to its own shape
    // (x.repeat's Expand before its Tile) it is itself.
    if (!t.isFloat && t.i.size() == s.size() + 1 && s.size() == 3 && !m_views.count(n.input(0))) {
        Shape out = s;
        bool fits = true;
        for (std::size_t d = 0; d < 3 && fits; ++d) {
            const std::int64_t v = t.i[d + 1];
            fits = v == 1 || v == static_cast<std::int64_t>(s[d]) || (s[d] == 1 && v > 1 && v <= kMaxRepeats);
            if (fits && s[d] == 1 && v > 1) out[d] = static_cast<std::size_t>(v);
        }
        if (fits && out == s) return alias(n, x);
        if (fits && out[1] == s[1] && out[2] == s[2]) return channelCopies(n, x, out[0]);
    }
    bool ok = !t.isFloat && t.i.size() == s.size() + 1;
    for (std::size_t d = 0; ok && d < s.size(); ++d) ok = s[d] == 1 || t.i[d + 1] == 1 || t.i[d + 1] == static_cast<std::int64_t>(s[d]);
    if (ok) {
        const onnx::GraphProto& g = m_mp.graph();
        for (const NodeProto& r : g.node())
            for (const std::string& v : r.input())
                if (v == n.output(0) && r.op_type() != "Mul") ok = false;
    }
    if (!ok)
        failNode(n, "expands " + shapeString(s) + " images; QuantScope reads Expand only as a gate broadcast to the map a Mul "
                                                  "multiplies it with (y.expand_as(x))");
    alias(n, x);
}

// k copies of activation x side by side along the channels (torch.cat([x] * k, 1)): a Concat.
void Importer::channelCopies(const NodeProto& n, std::size_t x, std::size_t k)
{
    if (k < 2 || k > kMaxRepeats) failNode(n, "repeats the channels " + std::to_string(k) + " times (read: 2 to " + std::to_string(kMaxRepeats) + ")");
    Shape out = shapeOf(x);
    out[0] *= k;
    StoredLayer l;
    l.kind = LayerKind::Concat;
    m_pixelLayers.insert(m_m.layers.size());
    addLayer(n, std::move(l), std::move(out), std::vector<std::size_t>(k, x));
}

// Tile of an activation along the channels only (x.repeat(1, k, 1, 1)): k copies, a Concat.
void Importer::tile(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const ConstTensor& r = constant(n, 1, "repeats");
    const Shape& s = shapeOf(x);
    if (r.isFloat || r.i.size() != s.size() + 1 || s.size() != 3 || m_views.count(n.input(0)) || r.i[0] != 1 || r.i[2] != 1 ||
        r.i[3] != 1 || r.i[1] < 1)
        failNode(n, "repeats " + shapeString(s) + " images by " + (r.isFloat ? "float values" : listOf(r.i)) +
                        "; QuantScope reads Tile only along the channels of [N, C, H, W] maps (x.repeat(1, k, 1, 1))");
    if (r.i[1] == 1) return alias(n, x);
    channelCopies(n, x, static_cast<std::size_t>(r.i[1]));
}

// Marks the flattening nodes (Flatten, Reshape, Squeeze, a ReduceMean without keepdims) that start
// a Linear-form gate: through sole readers and shape-preserving or dense operators (at least one
// Gemm or MatMul), the chain ends in a Reshape or Unsqueeze that a Mul or Add reads (maybe through
// an Expand).
void Importer::findGateChains(const std::vector<int>& order)
{
    static const std::set<std::string> starts = {"Flatten", "Reshape", "Squeeze", "ReduceMean"};
    static const std::set<std::string> passes = {"Squeeze", "Gemm", "MatMul", "Add", "Relu", "Clip", "Sigmoid", "HardSigmoid",
                                                 "HardSwish", "Tanh", "LeakyRelu", "Elu", "Identity", "Dropout", "Cast"};
    const onnx::GraphProto& g = m_mp.graph();
    const GraphReaders gr = graphReaders(order);
    for (int k : order) {
        const NodeProto& n = g.node(k);
        if (!starts.count(n.op_type()) || n.output_size() < 1 || n.output(0).empty()) continue;
        if (n.op_type() == "ReduceMean" && attrInt(n, "keepdims", 1) != 0) continue;
        bool dense = false;
        std::string v = n.output(0);
        for (int depth = 0; depth < 16; ++depth) {
            const int r = soleReader(gr, v);
            if (r < 0 || g.node(r).output_size() < 1) break;
            const NodeProto& next = g.node(r);
            const std::string& op = next.op_type();
            if ((op == "Reshape" || op == "Unsqueeze") && dense) {
                // Through the reshapes back to [N, C, 1, 1] (h[:, :, None, None] is two Unsqueezes) and an Expand.
                int m = soleReader(gr, next.output(0));
                for (int more = 0; m >= 0 && more < 4 && g.node(m).output_size() > 0; ++more) {
                    const std::string& mop = g.node(m).op_type();
                    if (mop != "Reshape" && mop != "Unsqueeze" && mop != "Expand") break;
                    m = soleReader(gr, g.node(m).output(0));
                }
                // a Mul (squeeze-and-excitation) or an Add (a context transform added to the map)
                if (m >= 0 && (g.node(m).op_type() == "Mul" || g.node(m).op_type() == "Add")) m_gateFlattens.insert(n.output(0));
                break;
            }
            if (!passes.count(op)) break;
            dense = dense || op == "Gemm" || op == "MatMul";
            v = next.output(0);
        }
    }
}

bool Importer::isGateFlatten(const NodeProto& n) const { return n.output_size() > 0 && m_gateFlattens.count(n.output(0)) > 0; }

// A Gemm or MatMul (weight w: out x in, row-major) on the [C, 1, 1] map x viewed flat: a 1x1
// convolution, whose [out, 1, 1] output is viewed flat in turn.
void Importer::linearOnGateView(const NodeProto& n, std::size_t x, std::vector<float> w, std::size_t in, std::size_t out,
                                const std::vector<float>* bias, const ConstTensor& weight)
{
    StoredLayer l;
    l.kind = LayerKind::Conv2d;
    l.inChannels = in;
    l.outChannels = out;
    l.kernel = 1;
    l.stride = 1;
    l.padding = 0;
    l.groups = 1;
    l.tensors.push_back(floatTensor("weight", {out, in, 1, 1}, std::move(w)));
    if (bias) l.tensors.push_back(floatTensor("bias", {out}, *bias));
    const StoredLayer& made = addLayer(n, std::move(l), {out, 1, 1}, {x}, &weight);
    m_m.notes.push_back(n.op_type() + " '" + made.name + "' is a Linear " + std::to_string(in) + " -> " + std::to_string(out) +
                        " inside a squeeze-and-excitation gate: it is read as a 1x1 convolution on the pooled [" + std::to_string(in) +
                        ", 1, 1] map");
    setView(n, m_m.layers.size(), {out});
}

} // namespace quantscope::onnximport
