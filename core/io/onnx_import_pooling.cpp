// The ONNX importer's global pooling: GlobalAveragePool and ReduceMean over (2, 3) (also over the
// last axis of a [N, C, H*W] view), and the idioms PyTorch code writes (tester 11; a pool window
// over the whole map is read by the pooling in onnx_import_ops.cpp):
//   x.mean(-1).mean(-1)        ReduceMean over W, then over H (or H then W)   -> GlobalAvgPool2d
//   x.max(-1)[0].max(-1)[0]    ReduceMax over W, then over H, -> MaxPool2d over it
//   x.sum((2, 3)) / (H * W)    ReduceSum over (H, W), then Div by H W or Mul by 1 / (H W)
//   x.amax((2, 3)), GlobalMaxPool, F.adaptive_max_pool2d(x, 1)  -> MaxPool2d over the map
// Each reads [N, C, H, W] activations; keepdims decides whether [N, C] (a Flatten follows), [N, C, 1]
// or [N, C, 1, 1] comes out. A sum divided by anything but H W is refused by node.
#include "io/onnx_importer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace quantscope::onnximport {

namespace {

// The window of a global max pooling over the [C, H, W] map `in`.
PoolGeometry globalWindow(const Shape& in)
{
    PoolGeometry g;
    g.kh = g.sh = in[1];
    g.kw = g.sw = in[2];
    return g;
}

// One axis of a rank-`rank` tensor, negative ones counted from the end; -1 if out of range.
std::int64_t axisOf(std::int64_t a, std::int64_t rank) { return a < -rank || a >= rank ? -1 : (a < 0 ? a + rank : a); }

} // namespace

void Importer::globalAveragePool(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    if (const Shape& v = viewedShape(n, 0, x); shapeOf(x).size() == 1 && v.size() == 3 && v[1] == 1 && v[2] == 1) {
        alias(n, x); // the mean over a 1x1 plane of flat features viewed as (N, C, 1, 1)
        return setView(n, x, v);
    }
    perImageRank(n, x, 3, "GlobalAveragePool takes [N, C, H, W]");
    StoredLayer l;
    l.kind = LayerKind::GlobalAvgPool2d;
    addLayer(n, std::move(l), {shapeOf(x)[0], 1, 1}, {x});
}

// ReduceMean over axes (2, 3): how x.mean((2, 3)) exports. keepdims = 0 adds a Flatten.
void Importer::reduceMean(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const Shape& view = viewedShape(n, 0, x);
    if (view.size() == 2 && shapeOf(x).size() == 3 && view[1] == shapeOf(x)[1] * shapeOf(x)[2] && view[1] > 1) {
        // The mean over the last axis of [N, C, H*W] (x.view(N, C, -1).mean(-1), x.flatten(2).mean(2);
        // tester 11): a global average pooling.
        std::vector<std::int64_t> ax = attrInts(n, "axes");
        for (std::int64_t& a : ax)
            if (a < 0) a += 3;
        if (ax != std::vector<std::int64_t>{2})
            failNode(n, "axes = " + listOf(attrInts(n, "axes")) + " of " + shapeString(view) + " images; the mean over the last axis is read");
        const std::size_t C = shapeOf(x)[0];
        StoredLayer g;
        g.kind = LayerKind::GlobalAvgPool2d;
        addLayer(n, std::move(g), {C, 1, 1}, {x});
        if (attrInt(n, "keepdims", 1) == 0) {
            StoredLayer f;
            f.kind = LayerKind::Flatten;
            addLayer(n, std::move(f), {C}, {m_m.layers.size()}, nullptr, ".flatten");
        } else {
            setView(n, m_m.layers.size(), {C, 1});
        }
        return;
    }
    if (view.size() != 3) perImageRank(n, x, 3, "ReduceMean is read over H and W of [N, C, H, W]");
    std::vector<std::int64_t> axes = attrInts(n, "axes");
    for (std::int64_t& a : axes)
        if (a < 0) a += 4;
    std::sort(axes.begin(), axes.end());
    if (axes == std::vector<std::int64_t>{1} && view.size() == 3 && shapeOf(x).size() == 3 && view == shapeOf(x))
        return channelReduction(n, x, false);
    if (axes != std::vector<std::int64_t>{2, 3})
        failNode(n, "axes = " + listOf(attrInts(n, "axes")) + "; a mean is read over H and W (axes 2, 3), a global average pooling, "
                        "or over the channels (axis 1), as CBAM's spatial attention pools");
    if (shapeOf(x).size() == 1 && view[1] == 1 && view[2] == 1) { // flat features viewed as (N, C, 1, 1)
        alias(n, x);
        if (attrInt(n, "keepdims", 1) != 0) setView(n, x, view);
        return;
    }
    const Shape in = shapeOf(x);
    StoredLayer l;
    l.kind = LayerKind::GlobalAvgPool2d;
    addLayer(n, std::move(l), {in[0], 1, 1}, {x});
    if (attrInt(n, "keepdims", 1) == 0 && isGateFlatten(n)) return setView(n, m_m.layers.size(), {in[0]}); // a Linear-form gate
    if (attrInt(n, "keepdims", 1) == 0) {
        StoredLayer f;
        f.kind = LayerKind::Flatten;
        addLayer(n, std::move(f), {in[0]}, {m_m.layers.size()}, nullptr, ".flatten");
    }
}

void Importer::findPoolingSubgraphs(const std::vector<int>& order, const std::set<std::string>& dynamic)
{
    const onnx::GraphProto& g = m_mp.graph();
    const GraphReaders gr = graphReaders(order);
    const auto op = [&](int k) -> const std::string& { return g.node(k).op_type(); };
    const auto taken = [&](int k) { return m_subgraphOf.count(k) > 0; };
    for (int k : order) {
        const NodeProto& n = g.node(k);
        if (taken(k) || n.input_size() < 1 || n.output_size() < 1 || !dynamic.count(n.input(0))) continue;
        const int m = soleReader(gr, n.output(0));
        if (m < 0 || taken(m)) continue;
        const NodeProto& next = g.node(m);
        const int k1 = attrInt(n, "keepdims", 1) != 0 ? 1 : 0;
        Subgraph s{LayerKind::GlobalAvgPool2d, m, n.input(0), {k, m}, {}, 2};
        if ((op(k) == "ReduceMean" || op(k) == "ReduceMax") && op(m) == op(k)) {
            // Two means (maxima) of one axis each, W then H or H then W, of a 4-D tensor:
            // x.mean(-1).mean(-1), x.max(-1)[0].max(-1)[0], x.amax(-1).amax(-1).
            const std::vector<std::int64_t> a1 = attrInts(n, "axes"), a2 = attrInts(next, "axes");
            if (a1.size() != 1 || a2.size() != 1) continue;
            const std::int64_t first = axisOf(a1[0], 4);
            std::int64_t second = axisOf(a2[0], k1 ? 4 : 3);
            if (first < 2 || second < 0) continue;
            if (!k1 && second >= first) ++second; // an axis of [N, C, H] or [N, C, W], in [N, C, H, W]
            if (std::min(first, second) != 2 || std::max(first, second) != 3) continue;
            s.keptDims = k1 + (attrInt(next, "keepdims", 1) != 0 ? 1 : 0);
            if (op(k) == "ReduceMax") s.kind = LayerKind::MaxPool2d;
            m_subgraphs.push_back(s);
        } else if (op(k) == "ReduceSum" && (op(m) == "Div" || op(m) == "Mul") && next.input_size() == 2) {
            // The sum over (H, W) divided by a constant (checked against H W when the shapes are known).
            const int di = next.input(0) == n.output(0) ? 1 : 0;
            if (next.input(1 - di) != n.output(0) || (op(m) == "Div" && di != 1) || dynamic.count(next.input(di))) continue;
            s.constants = {next.input(di), n.input_size() > 1 ? n.input(1) : std::string()};
            s.keptDims = k1 ? 2 : 0;
            m_subgraphs.push_back(s);
        } else {
            continue;
        }
        for (int node : m_subgraphs.back().nodes) m_subgraphOf[node] = m_subgraphs.size() - 1;
    }
}

void Importer::readPoolingSubgraph(const NodeProto& root, const Subgraph& s)
{
    const onnx::GraphProto& g = m_mp.graph();
    const NodeProto& first = g.node(s.nodes[0]);
    const std::size_t x = act(first, 0); // the messages every reader gives (a Pad's output, a constant)
    if (m_views.count(s.x) || shapeOf(x).size() != 3)
        failNode(first, std::string(s.kind == LayerKind::MaxPool2d ? "a maximum" : "a mean") + " over H and W reads [N, C, H, W]; its input has per-image shape " +
                            shapeString(m_views.count(s.x) ? m_views.at(s.x) : shapeOf(x)));
    const Shape& in = shapeOf(x);
    if (first.op_type() == "ReduceSum") {
        std::vector<std::int64_t> axes = attrInts(first, "axes");
        if (!s.constants[1].empty()) {
            const ConstTensor& a = constant(first, 1, "axes");
            axes.clear();
            for (std::size_t i = 0; i < a.numel(); ++i) axes.push_back(static_cast<std::int64_t>(a.at(i)));
        }
        for (std::int64_t& a : axes) a = axisOf(a, 4);
        std::sort(axes.begin(), axes.end());
        if (axes != std::vector<std::int64_t>{2, 3})
            failNode(first, "axes = " + listOf(axes) + "; a sum is read only over H and W (axes 2, 3), divided by H W, as a global average pooling");
        const auto dv = m_values.find(s.constants[0]);
        if (dv == m_values.end() || dv->second.kind != Value::Kind::Const || dv->second.c.numel() != 1)
            failNode(root, "divides the sum over H and W by something other than one constant");
        const double c = dv->second.c.at(0), hw = static_cast<double>(in[1] * in[2]);
        const bool divides = root.op_type() == "Div";
        const double want = divides ? hw : 1.0 / hw;
        if (!(std::abs(c - want) <= 1e-6 * want)) {
            char what[200];
            std::snprintf(what, sizeof what, "%s the sum over the %zux%zu map by %.9g; only the mean (%s %.9g) is a layer QuantScope has",
                          divides ? "divides" : "multiplies", in[1], in[2], c, divides ? "divide by" : "multiply by", want);
            failNode(root, what);
        }
    }
    StoredLayer l;
    l.kind = LayerKind::GlobalAvgPool2d;
    if (s.kind == LayerKind::MaxPool2d) {
        l.kind = LayerKind::MaxPool2d;
        l.setPoolGeometry(globalWindow(in));
    }
    addGlobalPool(root, std::move(l), x, s.keptDims);
}

// GlobalMaxPool, and ReduceMax over (H, W) (x.amax((2, 3)), x.max over both): a MaxPool2d whose
// window is the whole map (H x W, stride H x W: square maps give the square window they always did).
void Importer::globalMaxPool(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const bool reduce = n.op_type() == "ReduceMax";
    int keptDims = 2;
    if (reduce) {
        std::vector<std::int64_t> axes = attrInts(n, "axes");
        for (std::int64_t& a : axes) a = axisOf(a, 4);
        std::sort(axes.begin(), axes.end());
        if (axes == std::vector<std::int64_t>{1} && !m_views.count(n.input(0)) && shapeOf(x).size() == 3)
            return channelReduction(n, x, true);
        if (axes != std::vector<std::int64_t>{2, 3})
            failNode(n, "axes = " + listOf(attrInts(n, "axes")) + "; a maximum is read over H and W (axes 2, 3), as a global max "
                            "pooling, or over the channels (axis 1), as CBAM's spatial attention pools");
        keptDims = attrInt(n, "keepdims", 1) != 0 ? 2 : 0;
    }
    if (m_views.count(n.input(0))) failNode(n, "a global max pooling reads [N, C, H, W]; its input is viewed as " + shapeString(m_views.at(n.input(0))));
    perImageRank(n, x, 3, "a global max pooling takes [N, C, H, W]");
    noExtraOutputs(n);
    StoredLayer l;
    l.kind = LayerKind::MaxPool2d;
    l.setPoolGeometry(globalWindow(shapeOf(x)));
    addGlobalPool(n, std::move(l), x, keptDims);
}

// The mean or maximum over the channels of [N, C, H, W] maps (torch.mean(x, 1, keepdim=True),
// torch.max(x, 1)[0], as CBAM's spatial attention pools them): a ChannelMax layer, or for the mean a
// 1x1 Conv C -> 1 with weights 1 / C, counted as added parameters. Without keepdims the [N, H, W]
// value is a view of the [1, H, W] maps, which an Unsqueeze of axis 1 gives back.
void Importer::channelReduction(const NodeProto& n, std::size_t x, bool max)
{
    noExtraOutputs(n);
    const Shape s = shapeOf(x); // a copy: addLayer adds a shape
    const std::size_t C = s[0];
    StoredLayer l;
    if (max) {
        l.kind = LayerKind::ChannelMax;
        addLayer(n, std::move(l), {1, s[1], s[2]}, {x});
    } else {
        const StoredLayer& made =
            addLayer(n, pointwiseConv(C, 1, std::vector<float>(C, static_cast<float>(1.0 / static_cast<double>(C)))), {1, s[1], s[2]}, {x});
        m_m.importAddedParams += C;
        m_m.notes.push_back("ReduceMean " + onnxNodeName(n) + " averages the " + std::to_string(C) + " channels of each pixel: read as the 1x1 Conv '" +
                            made.name + "' with weights 1/" + std::to_string(C) + " (" + std::to_string(C) +
                            " parameters QuantScope adds, trainable; PyTorch's mean has none)");
    }
    if (attrInt(n, "keepdims", 1) == 0) setView(n, m_m.layers.size(), {s[1], s[2]});
}

void Importer::addGlobalPool(const NodeProto& n, StoredLayer l, std::size_t x, int keptDims)
{
    const std::size_t C = shapeOf(x)[0];
    addLayer(n, std::move(l), {C, 1, 1}, {x});
    if (keptDims == 0 && isGateFlatten(n)) return setView(n, m_m.layers.size(), {C}); // a Linear-form gate (onnx_import_joins.cpp)
    if (keptDims == 0) {
        StoredLayer f;
        f.kind = LayerKind::Flatten;
        addLayer(n, std::move(f), {C}, {m_m.layers.size()}, nullptr, ".flatten");
    } else if (keptDims == 1) {
        setView(n, m_m.layers.size(), {C, 1});
    }
}

} // namespace quantscope::onnximport
