// The ONNX importer's Conv handler: any 2-D window (rectangular kernels, strides, dilations,
// asymmetric pads, auto_pad SAME_*), a zero Pad before it folded in, a 1x1 Conv on flat
// features read as a Linear, a constant scale or shift of maps inside the network read as a
// depthwise 1x1 Conv, and Pad: zeros merged into the Conv or AveragePool windows that read them,
// any other padding a Pad layer.
#include "io/onnx_importer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace quantscope::onnximport {

// Conv: X (N, C, H, W), W (M, C/group, kh, kw), optional B (M); strides, dilations, pads
// [top, left, bottom, right] or auto_pad (SAME_UPPER, SAME_LOWER: the output is ceil(in / stride),
// the odd pad at the end or at the start). A zero Pad in front adds its pads.
void Importer::refuseConv1d(const NodeProto& n) const
{
    const auto weight = n.input_size() > 1 ? m_values.find(n.input(1)) : m_values.end();
    if (attrInts(n, "kernel_shape").size() == 1 ||
        (weight != m_values.end() && weight->second.kind == Value::Kind::Const && weight->second.c.dims.size() == 3))
        failNode(n, "is a 1-D convolution (nn.Conv1d, weight [out, in, k]); QuantScope reads 2-D convolutions (nn.Conv2d)");
}

void Importer::conv(const NodeProto& n)
{
    refuseConv1d(n);
    const Value& xv = value(n, 0);
    if (xv.kind == Value::Kind::Const) failConstantInput(n, 0);
    const std::size_t x = xv.act;
    if (xv.kind == Value::Kind::Act && shapeOf(x).size() == 1 && viewedShape(n, 0, x).size() == 3)
        return convOnFlatView(n, x, viewedShape(n, 0, x));
    perImageRank(n, x, 3, "Conv takes [N, C, H, W]");
    const ConstTensor& w = constant(n, 1, "the weight");
    const ConstTensor* b = optConstant(n, 2, "the bias");
    if (w.dims.size() != 4) failNode(n, "the weight has rank " + std::to_string(w.dims.size()) + ", 2-D convolutions have 4", false);
    const std::string autoPad = attrString(n, "auto_pad", "NOTSET");
    const bool same = autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER";
    if (autoPad != "NOTSET" && autoPad != "VALID" && !same) failNode(n, "auto_pad = " + autoPad + " is not an ONNX value", false);
    if (const std::vector<std::int64_t> p = attrInts(n, "pads"); // the spec: auto_pad and pads are not used together
        autoPad != "NOTSET" && std::any_of(p.begin(), p.end(), [](std::int64_t v) { return v != 0; }))
        failNode(n, "has both auto_pad = " + autoPad + (autoPad == "VALID" ? " (no padding)" : "") +
                        " and explicit pads; the two cannot be used together", false);
    // Two values per attribute (height, width), each in [lo, 64].
    const auto pairOf = [&](const char* attr, std::int64_t def, std::int64_t lo) {
        std::vector<std::int64_t> v = attrInts(n, attr);
        if (v.empty()) v.assign(2, def);
        if (v.size() != 2) failNode(n, std::string("attribute ") + attr + " has " + std::to_string(v.size()) + " values, expected 2", false);
        for (std::int64_t e : v)
            if (e < lo || e > 64) failNode(n, std::string("attribute ") + attr + " = " + listOf(v) + " is out of range (" + std::to_string(lo) + " to 64)", false);
        return std::array<std::size_t, 2>{static_cast<std::size_t>(v[0]), static_cast<std::size_t>(v[1])};
    };
    for (int i = 2; i < 4; ++i)
        if (w.dims[static_cast<std::size_t>(i)] < 1 || w.dims[static_cast<std::size_t>(i)] > 64)
            failNode(n, "kernel " + std::to_string(w.dims[2]) + "x" + std::to_string(w.dims[3]) + " is out of range (1 to 64)", false);
    if (const std::vector<std::int64_t> ks = attrInts(n, "kernel_shape"); !ks.empty() && (ks.size() != 2 || ks[0] != w.dims[2] || ks[1] != w.dims[3]))
        failNode(n, "kernel_shape " + listOf(ks) + " differs from the weight's shape " + listOf(w.dims), false);
    ConvGeometry geo;
    geo.kh = static_cast<std::size_t>(w.dims[2]), geo.kw = static_cast<std::size_t>(w.dims[3]);
    const std::array<std::size_t, 2> strides = pairOf("strides", 1, 1), dilations = pairOf("dilations", 1, 1);
    geo.sh = strides[0], geo.sw = strides[1], geo.dh = dilations[0], geo.dw = dilations[1];
    const Shape& in = shapeOf(x);
    std::array<std::int64_t, 4> pads{}; // top, left, bottom, right
    if (std::vector<std::int64_t> p = attrInts(n, "pads"); !p.empty()) {
        if (p.size() != 4) failNode(n, "attribute pads has " + std::to_string(p.size()) + " values, expected 4", false);
        for (std::size_t i = 0; i < 4; ++i) pads[i] = p[i];
    }
    if (xv.kind == Value::Kind::Padded) // a Pad node's H/W pads were stored as [top, left, bottom, right] too
        for (std::size_t i = 0; i < 4; ++i) pads[i] += xv.pads[i];
    if (same) { // total = max((ceil(in / s) - 1) s + span - in, 0)
        const std::array<std::size_t, 2> span{geo.spanH(), geo.spanW()}, stride{geo.sh, geo.sw};
        for (std::size_t a = 0; a < 2; ++a) {
            const auto i = static_cast<std::int64_t>(in[1 + a]), s = static_cast<std::int64_t>(stride[a]);
            const std::int64_t total = std::max<std::int64_t>(((i + s - 1) / s - 1) * s + static_cast<std::int64_t>(span[a]) - i, 0);
            const std::int64_t small = total / 2, large = total - small;
            pads[a] += autoPad == "SAME_UPPER" ? small : large;
            pads[a + 2] += autoPad == "SAME_UPPER" ? large : small;
        }
    }
    for (std::int64_t p : pads)
        if (p < 0 || p > 64)
            failNode(n, std::string("pads ") + listOf(std::vector<std::int64_t>(pads.begin(), pads.end())) +
                            (xv.kind == Value::Kind::Padded ? " (with the Pad before it)" : "") + " are out of range (0 to 64)", false);
    geo.padTop = static_cast<std::size_t>(pads[0]), geo.padLeft = static_cast<std::size_t>(pads[1]);
    geo.padBottom = static_cast<std::size_t>(pads[2]), geo.padRight = static_cast<std::size_t>(pads[3]);
    const std::int64_t group = attrInt(n, "group", 1);
    if (group < 1 || group > 65536) failNode(n, "group = " + std::to_string(group), false);
    const auto g = static_cast<std::size_t>(group);
    const auto cout = static_cast<std::size_t>(w.dims[0]), cinPerGroup = static_cast<std::size_t>(w.dims[1]);
    if (cinPerGroup * g != in[0] || cout % g != 0)
        failNode(n, "weight " + listOf(w.dims) + " with group " + std::to_string(g) + " does not fit " + std::to_string(in[0]) + " input channels", false);
    if (!geo.fits(in[1], in[2]))
        failNode(n, "the window (" + geo.text() + ") is larger than its padded input " + shapeString(in) + "; the output would be empty", false);
    StoredLayer l;
    l.kind = LayerKind::Conv2d;
    l.inChannels = in[0];
    l.outChannels = cout;
    l.setConvGeometry(geo);
    l.groups = g;
    l.tensors.push_back(floatTensor("weight", {cout, cinPerGroup, geo.kh, geo.kw}, floats(n, w, "the weight")));
    if (b) {
        if (b->numel() != cout) failNode(n, "the bias has " + std::to_string(b->numel()) + " values for " + std::to_string(cout) + " channels", false);
        l.tensors.push_back(floatTensor("bias", {cout}, floats(n, *b, "the bias")));
        // torch.onnx.export in eval mode folds a BatchNorm into the Conv before it and names the
        // new weight and bias after the node ("onnx::Conv_90") instead of the module's parameters.
        l.bnFolded = w.origin.rfind("onnx::", 0) == 0 && b->origin.rfind("onnx::", 0) == 0;
    }
    addLayer(n, std::move(l), {cout, geo.outH(in[1]), geo.outW(in[2])}, {x}, &w);
}

// A Conv on flat features viewed as (N, C, 1, 1) (h.view(N, -1, 1, 1), h[:, :, None, None]): a
// 1x1 kernel without padding (any stride) computes W h + b, a Linear C -> M, whose output is
// viewed as (N, M, 1, 1) in turn. A larger kernel or padding on a 1x1 plane is refused.
void Importer::convOnFlatView(const NodeProto& n, std::size_t x, const Shape& view)
{
    const ConstTensor& w = constant(n, 1, "the weight");
    const ConstTensor* b = optConstant(n, 2, "the bias");
    if (w.dims.size() != 4) failNode(n, "the weight has rank " + std::to_string(w.dims.size()) + ", 2-D convolutions have 4", false);
    const std::vector<std::int64_t> pads = attrInts(n, "pads");
    const bool padded = std::any_of(pads.begin(), pads.end(), [](std::int64_t v) { return v != 0; });
    const std::string autoPad = attrString(n, "auto_pad", "NOTSET");
    if (view[1] != 1 || view[2] != 1 || w.dims[2] != 1 || w.dims[3] != 1 || padded || (autoPad != "NOTSET" && autoPad != "VALID"))
        failNode(n, "a " + std::to_string(w.dims[2]) + "x" + std::to_string(w.dims[3]) + " kernel" + (padded ? " with padding" : "") +
                        " on flat features viewed as " + shapeString(view) +
                        "; QuantScope reads a 1x1 Conv without padding there (a Linear)");
    if (attrInt(n, "group", 1) != 1) failNode(n, "group = " + std::to_string(attrInt(n, "group", 1)) + " on flat features viewed as " + shapeString(view) + "; only group 1 is read there");
    if (square(n, "dilations", attrInts(n, "dilations"), 1, 2) < 1 || square(n, "strides", attrInts(n, "strides"), 1, 2) < 1)
        failNode(n, "stride or dilation 0", false);
    const auto cout = static_cast<std::size_t>(w.dims[0]), cin = static_cast<std::size_t>(w.dims[1]);
    if (cin != view[0] || cout < 1) failNode(n, "weight " + listOf(w.dims) + " does not fit " + std::to_string(view[0]) + " input channels", false);
    StoredLayer l;
    l.kind = LayerKind::Linear;
    l.inFeatures = cin;
    l.outFeatures = cout;
    l.tensors.push_back(floatTensor("weight", {cout, cin}, floats(n, w, "the weight"))); // (M, C, 1, 1) is (M, C) in memory
    if (b) {
        if (b->numel() != cout) failNode(n, "the bias has " + std::to_string(b->numel()) + " values for " + std::to_string(cout) + " channels", false);
        l.tensors.push_back(floatTensor("bias", {cout}, floats(n, *b, "the bias")));
    }
    const StoredLayer& made = addLayer(n, std::move(l), {cout}, {x}, &w);
    m_m.notes.push_back("Conv '" + made.name + "' is a 1x1 convolution of flat features viewed as " + shapeString(view) +
                        ": it is read as a Linear " + std::to_string(cin) + " -> " + std::to_string(cout));
    setView(n, m_m.layers.size(), {cout, 1, 1});
}

// The 1x1 Conv in -> out of weight w ([out, in, 1, 1], out-major), no bias: a Linear on each
// pixel's channels, a mean over them, copies of a gate, an identity on padded channels.
StoredLayer Importer::pointwiseConv(std::size_t in, std::size_t out, std::vector<float> w) const
{
    StoredLayer l;
    l.kind = LayerKind::Conv2d;
    l.inChannels = in;
    l.outChannels = out;
    l.groups = 1;
    l.setConvGeometry(ConvGeometry::square(1, 1, 0));
    l.tensors.push_back(floatTensor("weight", {out, in, 1, 1}, std::move(w)));
    return l;
}

// The depthwise 1x1 Conv y = w x + b (groups = C = w.size(), weight [C, 1, 1, 1], bias [C] if
// given): the layer of a per-channel scale or shift on maps.
StoredLayer Importer::depthwiseScale(std::vector<float> w, std::vector<float>* b) const
{
    const std::size_t C = w.size();
    StoredLayer l;
    l.kind = LayerKind::Conv2d;
    l.inChannels = l.outChannels = l.groups = C;
    l.setConvGeometry(ConvGeometry::square(1, 1, 0));
    l.tensors.push_back(floatTensor("weight", {C, 1, 1, 1}, std::move(w)));
    if (b) l.tensors.push_back(floatTensor("bias", {C}, std::move(*b)));
    return l;
}

// A constant applied to maps inside the network where no layer before it can take it (after a
// ReLU, a pool or an Add, or on a value something else reads too): layer scale (CaiT, Touvron et
// al. 2021; ConvNeXt's gamma * branch), torch.add(x, y, alpha=2), a scaled ReLU, x + 0.5 or 1 - x.
// y = w x + b with one w and b per channel is a depthwise 1x1 Conv (groups = C, weight
// [C, 1, 1, 1]), which every part of QuantScope already trains, quantizes per channel, exports and
// runs in integers. The constant is one value or one per channel ([C, 1, 1], [1, C, 1, 1]). A
// scale without a shift has no bias; a shift alone has weight 1. `reversed`: c - x (Sub with the
// constant first). On flat features it folds back into the layers before (foldBackConstant) or is
// refused by node; refused too: any other constant shape, a non-finite value, a
// division by zero.
void Importer::constantOnMaps(const NodeProto& n, int ai, const ConstTensor& c, Fold op, bool reversed)
{
    const char* verb = reversed ? "subtracts an activation from" : op == Fold::Add ? "adds" : op == Fold::Sub ? "subtracts" : op == Fold::Mul ? "multiplies by" : "divides by";
    const std::size_t x = act(n, ai);
    const Shape& s = shapeOf(x);
    // x[:, i] - m (one channel's [H, W] plane of a [1, H, W] map, one value): read on the map
    const bool plane = s.size() == 3 && s[0] == 1 && viewedShape(n, ai, x) == Shape{s[1], s[2]} && c.numel() == 1;
    if (s.size() != 3 || (viewedShape(n, ai, x) != s && !plane)) {
        // after another pending constant, only onto it: folding back would apply it first
        if (m_pendingAffine.count(n.input(ai))) {
            if (constantBeforeLinear(n, ai, c, op, reversed)) return;
        } else if ((!reversed && foldBackConstant(n, ai, c, op)) || constantBeforeLinear(n, ai, c, op, reversed)) {
            return;
        }
        const std::string after = x > 0 && x <= m_m.layers.size() ? std::string(" (after ") + layerKindName(m_m.layers[x - 1].kind) + ")" : "";
        failNode(n, std::string(verb) + " a constant on features of shape " + shapeString(viewedShape(n, ai, x)) +
                        " inside the network" + after + "; QuantScope reads a constant on [N, C, H, W] maps (as a depthwise 1x1 Conv), and on "
                        "features where it folds exactly into the Linear or Conv layers that make them (through ReLU, Dropout, Add, "
                        "Concat and pools, a factor of at least 0 through a ReLU, a shift through no ReLU, when nothing else reads the "
                        "values on the way) or into the Linear layers that alone read it. Move the constant into a layer in PyTorch "
                        "and export again");
    }
    const std::size_t C = s[0];
    const std::vector<float>& cv = floats(n, c, "the constant");
    std::vector<std::int64_t> dims = c.dims;
    while (!dims.empty() && dims.front() == 1 && dims.size() > 3) dims.erase(dims.begin());
    const bool one = cv.size() == 1;
    if (!one && dims != std::vector<std::int64_t>{static_cast<std::int64_t>(C), 1, 1})
        failNode(n, "the constant " + listOf(c.dims) + " on maps of shape " + shapeString(s) +
                        " is not one value or one per channel ([C, 1, 1] or [1, C, 1, 1]); QuantScope reads a constant inside the "
                        "network as a per-channel scale or shift");
    for (float v : cv)
        if (!std::isfinite(v) || (op == Fold::Div && v == 0.0f)) {
            char b[32];
            std::snprintf(b, sizeof b, "%g", static_cast<double>(v));
            failNode(n, std::string(verb) + " the constant " + b + ", which is not a finite" + (op == Fold::Div ? " non-zero" : "") + " number", false);
        }
    const auto at = [&](std::size_t ch) { return one ? cv[0] : cv[ch]; };
    const bool shift = op == Fold::Add || op == Fold::Sub;
    std::vector<float> w(C), b(C, 0.0f);
    for (std::size_t ch = 0; ch < C; ++ch) {
        w[ch] = reversed ? -1.0f : op == Fold::Mul ? at(ch) : op == Fold::Div ? 1.0f / at(ch) : 1.0f;
        if (shift) b[ch] = op == Fold::Add || reversed ? at(ch) : -at(ch);
    }
    StoredLayer l = depthwiseScale(std::move(w), shift ? &b : nullptr);
    // Behind Pads, clamps, such constants, and selections or copies of the channels only
    // (x.repeat(1, 3, 1, 1), then per-channel means), on the image input: the graph's own
    // normalisation of its pixels, so QuantScope must feed it [0, 1] pixels as they are
    // (normaliseInGraph sets the same for a constant right on a shared input).
    if (x != 0 && readsOnlyPixels(x)) m_normalisesAfterPad = true;
    m_constantLayers.insert(m_m.layers.size());
    m_m.importAddedParams += shift ? 2 * C : C;
    const StoredLayer& made = addLayer(n, std::move(l), s, {x});
    m_m.notes.push_back(std::string(n.op_type()) + " " + onnxNodeName(n) + " " + verb + " a constant (" +
                        (one ? std::string("one value") : "one per channel") + ") inside the network: read as the depthwise 1x1 Conv '" +
                        made.name + "' (" + (reversed ? "weight -1 and the constant as bias" : shift ? "weight 1 and the constant as bias" : "the constant as weight, no bias") +
                        "), which trains one " + (shift ? "weight and bias" : "weight") + " per channel" +
                        (one ? " where PyTorch's graph has one value" : ""));
}

// Pad (H/W only): zeros that only Conv and AveragePool nodes read are remembered with the
// activation for the window after them (Value::Kind::Padded); reflect, edge, and zeros read by
// anything else (a MaxPool, an activation) are a Pad layer (nn/pad.h).
void Importer::pad(const NodeProto& n)
{
    const Value& xv = value(n, 0);
    if (xv.kind == Value::Kind::Const) failConstantInput(n, 0);
    perImageRank(n, xv.act, 3, "Pad is read on [N, C, H, W]");
    const std::string mode = attrString(n, "mode", "constant");
    if (mode != "constant" && mode != "reflect" && mode != "edge")
        failNode(n, "mode = " + mode + "; QuantScope reads zero (constant 0), reflect and edge (replicate) padding");
    std::vector<std::int64_t> pads;
    float fill = 0.0f;
    if (m_opset < 11) {
        pads = attrInts(n, "pads");
        fill = attrFloat(n, "value", 0.0f);
    } else {
        const ConstTensor& p = constant(n, 1, "pads");
        if (p.isFloat) failNode(n, "pads are not integers", false);
        pads = p.i;
        if (const ConstTensor* v = optConstant(n, 2, "constant_value")) {
            if (v->numel() != 1) failNode(n, "constant_value is not one value", false);
            fill = static_cast<float>(v->at(0));
        }
        if (has(n, 3)) { // opset 18: pads for the listed axes only, [begins..., ends...]
            const ConstTensor& a = constant(n, 3, "axes");
            if (a.isFloat) failNode(n, "axes are not integers", false);
            if (pads.size() != 2 * a.i.size())
                failNode(n, "pads " + listOf(pads) + " do not give a begin and an end for each of the axes " + listOf(a.i), false);
            std::vector<std::int64_t> full(8, 0);
            std::array<bool, 4> seen{};
            for (std::size_t k = 0; k < a.i.size(); ++k) {
                const std::int64_t ax = a.i[k] < 0 ? a.i[k] + 4 : a.i[k];
                if (ax < 0 || ax > 3) failNode(n, "axes " + listOf(a.i) + ": axis " + std::to_string(a.i[k]) + " is outside rank 4", false);
                if (seen[static_cast<std::size_t>(ax)]) failNode(n, "axes " + listOf(a.i) + " name an axis twice", false);
                seen[static_cast<std::size_t>(ax)] = true;
                full[static_cast<std::size_t>(ax)] = pads[k];
                full[static_cast<std::size_t>(ax) + 4] = pads[k + a.i.size()];
            }
            pads = full;
        }
    }
    if (mode == "constant" && fill != 0.0f)
        failNode(n, "pads with " + std::to_string(fill) + "; QuantScope reads zero, reflect and replicate padding (a constant other than 0 "
                    "would lie off a quantized grid)");
    if (pads.size() != 8) failNode(n, "pads has " + std::to_string(pads.size()) + " values, expected 8 for [N, C, H, W]", false);
    // pads: [N_begin, C_begin, H_begin, W_begin, N_end, C_end, H_end, W_end]
    if (pads[0] != 0 || pads[4] != 0) failNode(n, "pads the batch axis: " + listOf(pads));
    if (pads[1] != 0 || pads[5] != 0) {
        if (mode != "constant" || xv.kind != Value::Kind::Act || pads[2] != 0 || pads[3] != 0 || pads[6] != 0 || pads[7] != 0)
            failNode(n, "pads the channels " + std::string(mode != "constant" ? "with mode " + mode : "and H or W in one Pad") + ": " +
                            listOf(pads) + "; QuantScope reads zeros added to the channels alone (F.pad(x, (0, 0, 0, 0, a, b)))");
        if (pads[1] < 0 || pads[5] < 0 || pads[1] > 65536 || pads[5] > 65536)
            failNode(n, "pads " + listOf(pads) + ": negative (cropping) or large channel pads are not read");
        return padChannels(n, xv.act, static_cast<std::size_t>(pads[1]), static_cast<std::size_t>(pads[5]));
    }
    for (std::int64_t p : pads)
        if (p < 0 || p > 64) failNode(n, "pads " + listOf(pads) + ": negative (cropping) or large pads are not read");
    // Zeros read only by Conv and AveragePool nodes merge into their windows; any other padding,
    // or zeros something else reads (a MaxPool, an activation), is a Pad layer.
    bool merges = mode == "constant";
    for (const NodeProto& r : m_mp.graph().node())
        for (const std::string& i : r.input())
            if (i == n.output(0) && r.op_type() != "Conv" && r.op_type() != "AveragePool") merges = false;
    for (const onnx::ValueInfoProto& o : m_mp.graph().output())
        if (o.name() == n.output(0)) merges = false;
    if (!merges) {
        if (xv.kind != Value::Kind::Act && !(xv.kind == Value::Kind::Padded && mode == "constant"))
            failNode(n, "pads the output of a Pad with mode " + mode + "; QuantScope reads one reflect or edge Pad on a map");
        StoredLayer l;
        l.kind = LayerKind::Pad;
        l.padMode = mode == "reflect" ? PadMode::Reflect : mode == "edge" ? PadMode::Replicate : PadMode::Zeros;
        const std::array<std::int64_t, 4> add{pads[2], pads[3], pads[6], pads[7]};
        for (std::size_t i = 0; i < 4; ++i)
            l.pads[i] = static_cast<std::size_t>(add[i] + (xv.kind == Value::Kind::Padded ? xv.pads[i] : 0));
        const Shape& s = shapeOf(xv.act);
        if (l.padMode == PadMode::Reflect && (std::max(l.pads[0], l.pads[2]) >= s[1] || std::max(l.pads[1], l.pads[3]) >= s[2]))
            failNode(n, "reflect padding " + listOf(pads) + " of a map of shape " + shapeString(s) + " needs pads smaller than the map", false);
        const std::size_t most = *std::max_element(l.pads.begin(), l.pads.end());
        if (most > Pad2d::kMaxPad) failNode(n, "pads " + listOf(pads) + " (with the Pad before it) are out of range (0 to 64)", false);
        Shape out{s[0], l.pads[0] + s[1] + l.pads[2], l.pads[1] + s[2] + l.pads[3]};
        addLayer(n, std::move(l), std::move(out), {xv.act});
        return;
    }
    Value v = xv;
    v.kind = Value::Kind::Padded;
    const std::array<std::int64_t, 4> add{pads[2], pads[3], pads[6], pads[7]};
    for (int i = 0; i < 4; ++i) v.pads[static_cast<std::size_t>(i)] = (xv.kind == Value::Kind::Padded ? xv.pads[static_cast<std::size_t>(i)] : 0) + add[static_cast<std::size_t>(i)];
    define(n, v);
}

} // namespace quantscope::onnximport
