// A constant on flat features inside the network, where the layer right before it cannot take it
// (foldConstant) and no depthwise Conv can (constantOnMaps reads maps only): the mean of two
// heads ((a + b) / 2), a scale after a ReLU (relu(h) * 0.5), a temperature behind a Dropout. It
// is folded back into the Linear or Conv layers that make the value, through layers it commutes
// with exactly:
// - a product y * f (f one value or one per element; Div by c is f = 1 / c) passes linear layers
//   (Dropout, Flatten, Add into each addend, Concat into each part, average pools) and, for
//   f >= 0, positively homogeneous ones (ReLU, LeakyReLU, PReLU, MaxPool2d: g(f x) = f g(x));
// - a shift y + k (Sub by c is k = -c) passes Dropout, Flatten, Concat (each part its own), the
//   max pools and GlobalAvgPool2d (mean(x + k) = mean(x) + k), and one addend of an Add.
// Through pools the factor must be one value per channel. Every value on the way must have this
// chain as its only reader, else the fold would reach other readers too. The layers reached take
// the factor in their weights and bias (the bias alone for a shift): the same function in float,
// with no layer added. Anything else keeps constantOnMaps' refusal.
#include "io/onnx_importer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace quantscope::onnximport {

namespace {
constexpr int kMaxFoldDepth = 256; // layers passed on one path (a guard against absurd graphs)

std::size_t numelOf(const Shape& s)
{
    std::size_t n = 1;
    for (std::size_t d : s) n *= d;
    return n;
}

// f per element of [C, H, W] (plane p = H W values each): one value per channel, or empty.
std::vector<float> perChannelOf(const std::vector<float>& f, std::size_t C)
{
    if (C == 0 || f.size() % C != 0) return {};
    const std::size_t p = f.size() / C;
    std::vector<float> out(C);
    for (std::size_t c = 0; c < C; ++c) {
        out[c] = f[c * p];
        for (std::size_t i = 1; i < p; ++i)
            if (f[c * p + i] != out[c]) return {};
    }
    return out;
}

std::vector<float> perElementOf(const std::vector<float>& perChannel, const Shape& s)
{
    const std::size_t p = perChannel.empty() ? 0 : numelOf(s) / perChannel.size();
    std::vector<float> out;
    out.reserve(numelOf(s));
    for (float v : perChannel) out.insert(out.end(), p, v);
    return out;
}
} // namespace

// Live readers of activation a's values under any of its names (Shape and Size nodes do not
// count). A name besides the layer's own output was defined by a node that read one of them and
// passed a on (an Identity, a view, a constant folded before): that node is no reader of its own,
// so each such name takes one off. Readers counted twice (a subgraph reading x twice) only make
// the fold refuse. An activation without a name was made inside one node, and only the layers
// made there read it.
int Importer::readersOf(std::size_t a) const
{
    int r = 0, names = 0;
    for (const auto& [name, v] : m_values)
        if (v.kind != Value::Kind::Const && v.act == a) {
            ++names;
            if (const auto u = m_valueReaders.find(name); u != m_valueReaders.end()) r += u->second;
        }
    if (names == 0) // a pool before the Flatten of x.mean((2, 3))
        for (const StoredLayer& l : m_m.layers) r += static_cast<int>(std::count(l.inputs.begin(), l.inputs.end(), a));
    return r - std::max(0, names - 1);
}

// Whether y * f (scale) or y + f (shift), f per element of activation a's per-image shape, folds
// back into the layers that make a; with apply, folds it and lists the layers reached in `into`.
bool Importer::foldBack(std::size_t a, const std::vector<float>& f, bool scale, bool apply, int depth,
                        std::vector<std::string>& into)
{
    if (a <= m_inputAct || a > m_m.layers.size() || depth > kMaxFoldDepth || readersOf(a) != 1) return false;
    StoredLayer& l = m_m.layers[a - 1];
    const Shape& out = shapeOf(a); // views of it ([F] as [F, 1, 1]) hold the same values in the same order
    if (f.size() != numelOf(out)) return false;
    const bool nonNegative = std::all_of(f.begin(), f.end(), [](float v) { return v >= 0.0f; });
    const auto through = [&](std::size_t x, const std::vector<float>& fx) { return foldBack(x, fx, scale, apply, depth + 1, into); };
    switch (l.kind) {
    case LayerKind::Linear:
    case LayerKind::Conv2d: {
        const bool linear = l.kind == LayerKind::Linear;
        const std::size_t channels = linear ? l.outFeatures : l.outChannels;
        const std::vector<float> fc = linear ? f : perChannelOf(f, channels);
        if (fc.size() != channels) return false;
        if (!apply) return true;
        if (!scale && l.tensors.size() < 2) l.tensors.push_back(floatTensor("bias", {channels}, std::vector<float>(channels, 0.0f)));
        std::vector<float>& w = l.tensors[0].values;
        const std::size_t row = w.size() / channels;
        for (std::size_t o = 0; o < channels; ++o) {
            if (scale) {
                for (std::size_t i = 0; i < row; ++i) w[o * row + i] *= fc[o];
                if (l.tensors.size() > 1) l.tensors[1].values[o] *= fc[o];
            } else {
                l.tensors[1].values[o] += fc[o];
            }
        }
        into.push_back(l.name);
        return true;
    }
    case LayerKind::Dropout:
    case LayerKind::Flatten: return through(l.inputs.at(0), f); // the same values in the same order
    case LayerKind::ReLU:
    case LayerKind::LeakyReLU:
    case LayerKind::PReLU: return scale && nonNegative && through(l.inputs.at(0), f);
    // Folding is applied only after the same walk without apply succeeded (foldBackConstant), so
    // no branch below fails halfway through changing weights.
    case LayerKind::Add:
        if (scale) return through(l.inputs.at(0), f) && through(l.inputs.at(1), f);
        for (std::size_t x : l.inputs) { // the first addend that takes the shift
            std::vector<std::string> none;
            if (foldBack(x, f, scale, false, depth + 1, none)) return through(x, f);
        }
        return false;
    case LayerKind::Concat: { // each input its own part of f, in order (the channels, or flat features)
        std::size_t at = 0;
        for (std::size_t x : l.inputs) {
            if (x == 0) return false; // the image input
            const std::size_t k = numelOf(shapeOf(x));
            if (at + k > f.size()) return false;
            if (!through(x, std::vector<float>(f.begin() + static_cast<std::ptrdiff_t>(at), f.begin() + static_cast<std::ptrdiff_t>(at + k))))
                return false;
            at += k;
        }
        return at == f.size();
    }
    case LayerKind::GlobalAvgPool2d:
    case LayerKind::MaxPool2d:
    case LayerKind::AvgPool2d: {
        const std::size_t x = l.inputs.at(0);
        if (x == 0) return false;
        const Shape& in = shapeOf(x);
        if (in.size() != 3) return false;
        const std::vector<float> fc = perChannelOf(f, in[0]);
        if (fc.empty()) return false;
        if (l.kind == LayerKind::MaxPool2d && scale && !nonNegative) return false;
        if (l.kind == LayerKind::AvgPool2d && !scale) return false; // zero padding counted in the mean would not shift
        return through(x, perElementOf(fc, in));
    }
    default: return false;
    }
}

bool Importer::foldBackConstant(const NodeProto& n, int ai, const ConstTensor& c, Fold op)
{
    const std::size_t x = act(n, ai);
    const auto own = m_valueReaders.find(n.input(ai));
    if (x <= m_inputAct || own == m_valueReaders.end() || own->second != 1) return false;
    const Shape view = viewedShape(n, ai, x);
    const std::size_t numel = numelOf(shapeOf(x));
    if (numelOf(view) != numel) return false;
    const std::vector<float>& cv = floats(n, c, "the constant");
    std::vector<std::int64_t> dims = c.dims;
    while (!dims.empty() && dims.front() == 1 && dims.size() > view.size()) dims.erase(dims.begin());
    const bool perElement = dims.size() == view.size() && std::equal(dims.begin(), dims.end(), view.begin(), [](std::int64_t d, std::size_t v) {
                                return d == static_cast<std::int64_t>(v);
                            });
    if (cv.size() != 1 && !(perElement && cv.size() == numel)) return false;
    const bool scale = op == Fold::Mul || op == Fold::Div;
    std::vector<float> f(numel);
    for (std::size_t i = 0; i < numel; ++i) {
        const float v = cv.size() == 1 ? cv[0] : cv[i];
        if (!std::isfinite(v) || (op == Fold::Div && v == 0.0f)) return false; // constantOnMaps names the value
        f[i] = op == Fold::Div ? 1.0f / v : op == Fold::Sub ? -v : v;
    }
    std::vector<std::string> into;
    if (!foldBack(x, f, scale, false, 0, into)) return false;
    foldBack(x, f, scale, true, 0, into);
    std::string names;
    for (const std::string& s : into) names += (names.empty() ? "'" : ", '") + s + "'";
    const char* verb = op == Fold::Add ? "adds" : op == Fold::Sub ? "subtracts" : op == Fold::Mul ? "multiplies by" : "divides by";
    m_m.notes.push_back(std::string(n.op_type()) + " " + onnxNodeName(n) + " " + verb + " a constant on features of shape " + shapeString(view) +
                        ": folded back into the " + (scale ? "weights and bias" : "bias") + " of " + names +
                        ", through the layers between, which it commutes with (no layer added)");
    alias(n, x);
    return true;
}

// Whether every reader of `name` is a Linear (Gemm, MatMul, reading it as input 0) or a constant
// Add, Sub, Mul, Div or Neg whose own output only Linears read in turn, and it is not the output.
bool Importer::onlyLinearsRead(const std::string& name, int depth) const
{
    if (name == m_outputName || depth > kMaxFoldDepth) return false;
    const onnx::GraphProto& g = m_mp.graph();
    const auto constantName = [&](const std::string& v) {
        if (std::any_of(g.initializer().begin(), g.initializer().end(), [&](const onnx::TensorProto& t) { return t.name() == v; }))
            return true;
        return std::any_of(g.node().begin(), g.node().end(), [&](const NodeProto& k) {
            return k.op_type() == "Constant" && k.output_size() > 0 && k.output(0) == v;
        });
    };
    bool read = false;
    for (const NodeProto& r : g.node())
        for (int i = 0; i < r.input_size(); ++i) {
            if (r.input(i) != name) continue;
            read = true;
            const std::string& t = r.op_type();
            if ((t == "Gemm" || t == "MatMul") && i == 0) continue;
            const bool arithmetic = t == "Add" || t == "Sub" || t == "Mul" || t == "Div";
            if (t == "Neg" || (arithmetic && r.input_size() == 2 && constantName(r.input(1 - i)))) {
                if (r.output_size() < 1 || !onlyLinearsRead(r.output(0), depth + 1)) return false;
                continue;
            }
            return false;
        }
    return read;
}

// A constant on flat features that does not fold back (a gain after a Tanh or SiLU, tanh(h) * 3,
// sigmoid(h) * 2 - 1, a negated GELU) where only Linears read the result, directly or through
// further constants: y = a x + b per feature, kept pending on the node's output and folded into
// each Linear that reads it, W' = W diag(a), bias' = bias + W b (foldPendingAffine), as a
// BatchNorm1d before a Linear is. Constants in a row compose (x * 2 - 1 is a = 2, b = -1). The
// constant is one value or one per feature; not finite or a division by zero is refused by node.
bool Importer::constantBeforeLinear(const NodeProto& n, int ai, const ConstTensor& c, Fold op, bool reversed)
{
    const std::size_t x = act(n, ai);
    const Shape& s = shapeOf(x);
    if (s.size() != 1 || viewedShape(n, ai, x) != s || n.output(0) == m_outputName) return false;
    const std::size_t F = s[0];
    if (!onlyLinearsRead(n.output(0), 0)) return false;
    const std::vector<float>& cv = floats(n, c, "the constant");
    if (cv.size() != 1 && cv.size() != F) return false;
    std::vector<std::int64_t> dims = c.dims;
    while (!dims.empty() && dims.front() == 1 && dims.size() > 1) dims.erase(dims.begin());
    if (cv.size() != 1 && dims != std::vector<std::int64_t>{static_cast<std::int64_t>(F)}) return false;
    for (float v : cv)
        if (!std::isfinite(v) || (op == Fold::Div && v == 0.0f)) {
            char b[32];
            std::snprintf(b, sizeof b, "%g", static_cast<double>(v));
            failNode(n, std::string("the constant ") + b + " is not a finite" + (op == Fold::Div ? " non-zero" : "") + " number", false);
        }
    // x' = a0 x + b0 before this node (a pending affine on its input), then this node's op
    std::vector<double> a(F, 1.0), b(F, 0.0);
    std::string names = n.op_type() + " " + onnxNodeName(n);
    if (const auto prev = m_pendingAffine.find(n.input(ai)); prev != m_pendingAffine.end()) {
        const auto& [pa, pb] = prev->second.second;
        if (pa.size() != F) return false;
        for (std::size_t f = 0; f < F; ++f) {
            a[f] = pa[f];
            b[f] = pb[f];
        }
        names = prev->second.first + ", " + names;
        m_pendingUsed = true;
    }
    for (std::size_t f = 0; f < F; ++f) {
        const double v = cv.size() == 1 ? cv[0] : cv[f];
        if (reversed) { // v - x'
            a[f] = -a[f];
            b[f] = v - b[f];
        } else if (op == Fold::Mul || op == Fold::Div) {
            const double k = op == Fold::Mul ? v : 1.0 / v;
            a[f] *= k;
            b[f] *= k;
        } else {
            b[f] += op == Fold::Add ? v : -v;
        }
    }
    m_pendingAffine[n.output(0)] = {names, {std::vector<float>(a.begin(), a.end()), std::vector<float>(b.begin(), b.end())}};
    alias(n, x);
    return true;
}

} // namespace quantscope::onnximport
