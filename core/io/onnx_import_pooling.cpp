// The ONNX importer's pooling: MaxPool and AveragePool windows (Importer::pool), and global
// pooling: GlobalAveragePool and ReduceMean over (2, 3) (also over the last axis of a [N, C, H*W]
// view), and the idioms PyTorch code writes (tester 11; a pool window over the whole map is read by
// Importer::pool):
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

// MaxPool / AveragePool with any 2-D window: kernel_shape (kh, kw), strides (sh, sw), pads [top,
// left, bottom, right] of at most half their kernel (PyTorch's limit; MaxPool pads with -inf),
// ceil_mode with PyTorch's rounding (nn/pool_geometry.h). AveragePool: count_include_pad as ONNX
// defines it (0, its default: the mean of the window's part inside the input); a zero Pad in front
// (how torch.onnx.export writes PyTorch's default count_include_pad=True) is folded in as padding
// that counts. ceil_mode that leaves the output size as it is is dropped (the same windows).
// Refused by node and attribute: dilations, storage_order = 1, auto_pad SAME_*, a zero Pad with
// pads that do not count, and ceil_mode after a zero Pad where ONNX and PyTorch would make
// different windows.
void Importer::pool(const NodeProto& n)
{
    const bool isMax = n.op_type() == "MaxPool";
    const Value& xv = value(n, 0);
    if (xv.kind == Value::Kind::Const) failConstantInput(n, 0);
    const std::size_t x = xv.act;
    perImageRank(n, x, 3, "2-D pooling takes [N, C, H, W]");
    noExtraOutputs(n);
    const std::string autoPad = attrString(n, "auto_pad", "NOTSET");
    if (autoPad != "NOTSET" && autoPad != "VALID") failNode(n, "auto_pad = " + autoPad + " is not read; export with explicit pads");
    if (const std::vector<std::int64_t> p = attrInts(n, "pads"); // the spec: auto_pad and pads are not used together
        autoPad == "VALID" && std::any_of(p.begin(), p.end(), [](std::int64_t v) { return v != 0; }))
        failNode(n, "has both auto_pad = VALID (no padding) and explicit pads; the two cannot be used together", false);
    const auto pairOf = [&](const char* attr, std::int64_t def, std::int64_t lo) {
        std::vector<std::int64_t> v = attrInts(n, attr);
        if (v.empty()) v = {def, def};
        if (v.size() != 2) failNode(n, std::string("attribute ") + attr + " = " + listOf(v) + " has " + std::to_string(v.size()) + " values; QuantScope's pooling is 2-D");
        for (std::int64_t e : v)
            if (e < lo || e > 64) failNode(n, std::string("attribute ") + attr + " = " + listOf(v) + " is out of range (" + std::to_string(lo) + " to 64)", false);
        return std::array<std::size_t, 2>{static_cast<std::size_t>(v[0]), static_cast<std::size_t>(v[1])};
    };
    if (attrInts(n, "kernel_shape").empty()) failNode(n, "lacks the attribute kernel_shape", false);
    const std::array<std::size_t, 2> ks = pairOf("kernel_shape", 1, 1), st = pairOf("strides", 1, 1);
    if (const std::vector<std::int64_t> d = attrInts(n, "dilations"); std::any_of(d.begin(), d.end(), [](std::int64_t v) { return v != 1; }))
        failNode(n, "attribute dilations = " + listOf(d) + ": QuantScope's pooling has no dilation");
    if (isMax && attrInt(n, "storage_order", 0) != 0)
        failNode(n, "attribute storage_order = " + std::to_string(attrInt(n, "storage_order", 0)) +
                        ": only row-major (0) is read (it orders the Indices output, which QuantScope does not make)");
    const std::int64_t ceil = attrInt(n, "ceil_mode", 0);
    if (ceil != 0 && ceil != 1) failNode(n, "attribute ceil_mode = " + std::to_string(ceil) + " (0 or 1)", false);
    const Shape& in = shapeOf(x);
    {
        // A window over the whole map, as F.avg_pool2d(x, x.shape[2:]) exports on a non-square one:
        // a global pooling (tester 11). Average: GlobalAvgPool2d (max: the MaxPool2d below).
        const std::vector<std::int64_t> p = attrInts(n, "pads");
        const auto zero = [](std::int64_t v) { return v == 0; };
        const bool unpadded = std::all_of(p.begin(), p.end(), zero) &&
                              (xv.kind == Value::Kind::Act || std::all_of(xv.pads.begin(), xv.pads.end(), zero));
        if (!isMax && unpadded && in[1] != in[2] && ks[0] == in[1] && ks[1] == in[2]) {
            StoredLayer g;
            g.kind = LayerKind::GlobalAvgPool2d;
            addLayer(n, std::move(g), {in[0], 1, 1}, {x});
            return;
        }
    }
    std::vector<std::int64_t> pads = attrInts(n, "pads");
    if (pads.empty()) pads.assign(4, 0);
    if (pads.size() != 4) failNode(n, "attribute pads = " + listOf(pads) + " has " + std::to_string(pads.size()) + " values, expected 4", false);
    const bool attrPads = std::any_of(pads.begin(), pads.end(), [](std::int64_t p) { return p != 0; });
    const std::vector<std::int64_t> attrPadList = pads;
    const std::int64_t countPad = attrInt(n, "count_include_pad", 0);
    if (countPad != 0 && countPad != 1) failNode(n, "attribute count_include_pad = " + std::to_string(countPad) + " (0 or 1)", false);
    const bool zeroPad = xv.kind == Value::Kind::Padded && std::any_of(xv.pads.begin(), xv.pads.end(), [](std::int64_t p) { return p != 0; });
    if (!isMax && zeroPad && attrPads && countPad == 0)
        failNode(n, "attribute pads = " + listOf(pads) + " with count_include_pad = 0 after a zero Pad: the Pad's zeros count in the "
                    "mean and these pads do not; QuantScope's AvgPool2d counts all its padding or none");
    if (xv.kind == Value::Kind::Padded) {
        if (isMax && std::any_of(xv.pads.begin(), xv.pads.end(), [](std::int64_t p) { return p != 0; }))
            failNode(n, "reads a zero Pad; a max-pooling pads with -inf, so the zeros cannot merge into it");
        for (int i = 0; i < 4; ++i) pads[static_cast<std::size_t>(i)] += xv.pads[static_cast<std::size_t>(i)];
    }
    for (std::int64_t p : pads)
        if (p < 0 || p > 64)
            failNode(n, "attribute pads = " + listOf(pads) + (xv.kind == Value::Kind::Padded ? " (with the Pad before it)" : "") +
                            " is out of range (0 to 64)", false);
    PoolGeometry g;
    g.kh = ks[0], g.kw = ks[1], g.sh = st[0], g.sw = st[1];
    g.padTop = static_cast<std::size_t>(pads[0]), g.padLeft = static_cast<std::size_t>(pads[1]);
    g.padBottom = static_cast<std::size_t>(pads[2]), g.padRight = static_cast<std::size_t>(pads[3]);
    // Below opset 10 (no ceil_mode), torch.onnx.export writes nn.MaxPool2d(ceil_mode=True) as end
    // pads larger than the begin pads, beyond half the kernel (tester 15: MaxPool2d(3, 2,
    // ceil_mode=True), pads [0, 0, 2, 2]). Max pooling pads with -inf, so those windows are ceil
    // mode's with the begin pads on both sides wherever the output sizes agree: read so.
    bool ceilFromPads = false;
    if (!g.padsWithinHalfKernel() && isMax && m_opset < 10 && xv.kind != Value::Kind::Padded && g.padBottom >= g.padTop &&
        g.padRight >= g.padLeft && g.fits(in[1], in[2])) {
        PoolGeometry c = g;
        c.padBottom = c.padTop, c.padRight = c.padLeft, c.ceilMode = true;
        if (c.padsWithinHalfKernel() && c.fits(in[1], in[2]) && c.outH(in[1]) == g.outH(in[1]) && c.outW(in[2]) == g.outW(in[2])) {
            m_m.notes.push_back(std::string(n.op_type()) + " " + onnxNodeName(n) + ": pads " + listOf(pads) + " at opset " +
                                std::to_string(m_opset) + " (which has no ceil_mode) are read as ceil_mode = 1 with pads " +
                                listOf({pads[0], pads[1], pads[0], pads[1]}) + ", as torch.onnx.export writes it: the same windows");
            g = c;
            g.ceilMode = false; // set below, after the floor sizes
            ceilFromPads = true;
        }
    }
    if (!g.padsWithinHalfKernel())
        failNode(n, (xv.kind == Value::Kind::Padded ? "pads " + listOf(pads) + " (with the zero Pad before it)" : "attribute pads = " + listOf(pads)) +
                        " with kernel_shape = " + listOf({static_cast<std::int64_t>(g.kh), static_cast<std::int64_t>(g.kw)}) +
                        ": a pad is more than half the kernel along its axis, which QuantScope's pooling layers take at most (PyTorch's own limit)" +
                        (m_opset < 10 ? std::string("; opset ") + std::to_string(m_opset) +
                                            " has no ceil_mode, so torch.onnx.export writes ceil_mode=True as larger end pads: "
                                            "export with opset_version 10 or later"
                                      : std::string()));
    if (!g.fits(in[1], in[2])) failNode(n, "the window (" + g.text() + ") is larger than its input " + shapeString(in), false);
    g.countIncludePad = isMax || countPad == 1 || !attrPads; // a zero Pad's zeros are values, counted
    const std::size_t floorH = g.outH(in[1]), floorW = g.outW(in[2]);
    g.ceilMode = ceil == 1 || ceilFromPads;
    if (g.ceilMode && zeroPad) {
        // ONNX drops a window only when it would start past the Pad's output; PyTorch (whose
        // export this is) when it would start in the padding. Where the two differ, neither is a guess.
        PoolGeometry onPadded = g;
        onPadded.padTop = static_cast<std::size_t>(attrPadList[0]), onPadded.padLeft = static_cast<std::size_t>(attrPadList[1]);
        onPadded.padBottom = static_cast<std::size_t>(attrPadList[2]), onPadded.padRight = static_cast<std::size_t>(attrPadList[3]);
        const std::size_t ph = in[1] + g.padTop + g.padBottom - onPadded.padTop - onPadded.padBottom;
        const std::size_t pw = in[2] + g.padLeft + g.padRight - onPadded.padLeft - onPadded.padRight;
        const std::string onnxSize = std::to_string(onPadded.outH(ph)) + "x" + std::to_string(onPadded.outW(pw));
        const std::string torchSize = std::to_string(g.outH(in[1])) + "x" + std::to_string(g.outW(in[2]));
        using Reading = OnnxImportOptions::PaddedCeilPool;
        if (onnxSize != torchSize && m_options.paddedCeilPool == Reading::Either) {
            m_paddedCeil = {onnxNodeLabel(n), torchSize, onnxSize};
            failNode(n, "attribute ceil_mode = 1 after a zero Pad: ONNX makes a " + onnxSize +
                            " output whose last window starts in the Pad's zeros, PyTorch's ceil_mode a " + torchSize +
                            " one; QuantScope does not guess which was meant");
        }
        if (onnxSize != torchSize && m_options.paddedCeilPool == Reading::Onnx) {
            // The Pad's zeros as a layer, then ONNX's windows over the padded map (the last one
            // partly past its end, averaged over what it covers, as onnxruntime's AveragePool does).
            StoredLayer p;
            p.kind = LayerKind::Pad;
            p.padMode = PadMode::Zeros;
            for (std::size_t i = 0; i < 4; ++i) p.pads[i] = static_cast<std::size_t>(xv.pads[i]);
            addLayer(n, std::move(p), {in[0], ph, pw}, {x}, nullptr, "_pad");
            PoolGeometry floorOnPadded = onPadded; // (its countIncludePad is g's: the Pad's zeros are values, counted)
            floorOnPadded.ceilMode = false;
            onPadded.ceilMode = onPadded.outH(ph) != floorOnPadded.outH(ph) || onPadded.outW(pw) != floorOnPadded.outW(pw);
            StoredLayer l;
            l.kind = LayerKind::AvgPool2d;
            l.setPoolGeometry(onPadded);
            addLayer(n, std::move(l), {in[0], onPadded.outH(ph), onPadded.outW(pw)}, {m_m.layers.size()});
            return;
        }
    }
    // ceil_mode that changes no output size gives the same windows: the square fast paths keep them.
    if (g.ceilMode && g.outH(in[1]) == floorH && g.outW(in[2]) == floorW) g.ceilMode = false;
    StoredLayer l;
    l.kind = isMax ? LayerKind::MaxPool2d : LayerKind::AvgPool2d;
    l.setPoolGeometry(g);
    addLayer(n, std::move(l), {in[0], g.outH(in[1]), g.outW(in[2])}, {x});
}

} // namespace quantscope::onnximport
