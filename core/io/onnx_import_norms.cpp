// The ONNX importer's normalisation layers: InstanceNormalization (nn.GroupNorm, nn.InstanceNorm2d)
// and LayerNormalization (nn.LayerNorm over all of each image) as GroupNorm layers
// (nn/groupnorm.h), LayerNormalization over each pixel's channels as LayerNorm2d layers
// (nn/layernorm2d.h), and the weight and bias after them folded in; nn.LayerNorm's subgraph below
// opset 17 is matched in onnx_import_activations.cpp (layerNormAt).
#include "io/onnx_importer.h"

#include <cmath>
#include <string>
#include <vector>

namespace quantscope::onnximport {

// nn.GroupNorm's weight and bias as torch.onnx.export writes them (a Mul and an Add of one value
// per channel after the InstanceNormalization and the Reshape back), or any constant scale and
// shift of one value or one per channel on a GroupNorm's output that nothing else reads: folded
// into its per-channel weight and bias (made affine, weight 1 and bias 0, if it had none).
void Importer::foldIntoGroupNorm(const NodeProto& n, int ai, const ConstTensor& c, Fold op, StoredLayer& l)
{
    const std::vector<float>& cv = floats(n, c, "the constant");
    const std::size_t C = l.outChannels;
    const bool map = shapeOf(value(n, ai).act).size() == 3;
    std::vector<std::int64_t> dims = c.dims;
    while (!dims.empty() && dims.front() == 1 && dims.size() > (map ? 3u : 1u)) dims.erase(dims.begin());
    const auto Ci = static_cast<std::int64_t>(C);
    // nn.LayerNorm([C, H, W])'s weight and bias are one value per element: read when each channel's are equal
    const Shape& s = shapeOf(value(n, ai).act);
    const std::vector<std::int64_t> whole(s.begin(), s.end());
    const std::size_t plane = map && dims == whole ? shapeNumel(s) / C : 1;
    if (cv.size() != 1 && dims != (map ? std::vector<std::int64_t>{Ci, 1, 1} : std::vector<std::int64_t>{Ci}) && plane == 1)
        failNode(n, "the constant " + listOf(c.dims) + " is not one value per channel of " + layerKindName(l.kind) + " '" + l.name + "'");
    if (plane > 1)
        for (std::size_t o = 0; o < C; ++o)
            for (std::size_t p = 0; p < plane; ++p)
                if (cv[o * plane + p] != cv[o * plane])
                    failNode(n, "the constant " + listOf(c.dims) + " differs within channel " + std::to_string(o) + " after the norm '" +
                                    l.name + "': nn.LayerNorm([C, H, W]) with a weight and bias per element (trained) is not read; "
                                    "QuantScope reads it as nn.GroupNorm(1, C), whose weight and bias are one value per channel"
                                    " (elementwise_affine=False, or weights equal within each channel)");
    const auto at = [&](std::size_t o) { return cv.size() == 1 ? cv[0] : cv[o * plane]; };
    if (plane > 1 && op == Fold::Mul && l.kind == LayerKind::GroupNorm)
        m_m.notes.push_back("nn.LayerNorm '" + l.name + "' over " + shapeString(s) + " maps holds one weight and one bias per value, equal "
                            "within each channel: read as a GroupNorm of one group with one per channel (" + std::to_string(2 * C) +
                            " parameters where PyTorch counts " + std::to_string(2 * shapeNumel(s)) + ")");
    for (std::size_t o = 0; o < C; ++o)
        if (!std::isfinite(at(o)) || (op == Fold::Div && at(o) == 0.0f))
            failNode(n, "applies a constant that is not a finite " + std::string(op == Fold::Div ? "non-zero " : "") + "number", false);
    if (l.tensors.empty())
        l.tensors = {floatTensor("weight", {C}, std::vector<float>(C, 1.0f)), floatTensor("bias", {C}, std::vector<float>(C, 0.0f))};
    std::vector<float>& w = l.tensors[0].values;
    std::vector<float>& b = l.tensors[1].values;
    for (std::size_t o = 0; o < C; ++o) {
        if (op == Fold::Add || op == Fold::Sub) {
            b[o] += op == Fold::Add ? at(o) : -at(o);
        } else {
            const float f = op == Fold::Mul ? at(o) : 1.0f / at(o);
            w[o] *= f;
            b[o] *= f;
        }
    }
    alias(n, value(n, ai).act);
}

// InstanceNormalization (ONNX: y = scale (x - mean) / sqrt(var + epsilon) + B, the statistics over
// each image's axes after the second) on the forms torch.onnx.export writes: nn.InstanceNorm2d on
// [N, C, H, W] maps (scale and B one per channel: its weight and bias, or ones and zeros without
// affine parameters), and nn.GroupNorm(G, C) as x.view(N, G, -1) (a view of the maps, see
// reshape), this node with a scale of ones and a B of zeros per group, a Reshape back to the maps
// and the weight and bias as a Mul and an Add (foldIntoGroupNorm). Both are one GroupNorm layer
// (nn/groupnorm.h), G = C for InstanceNorm2d. Other shapes are refused by node.
void Importer::instanceNormalization(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const Shape& s = shapeOf(x);
    const Shape seen = viewedShape(n, 0, x); // a copy: it is read after addLayer, which may move the shapes
    if (s.empty() || (seen == s && s.size() != 3) || (seen != s && (seen.size() != 2 || seen[0] == 0 || s[0] % seen[0] != 0)))
        failNode(n, "normalises " + shapeString(seen) + " images of " + shapeString(s) +
                        "; read: nn.InstanceNorm2d on [N, C, H, W] maps and nn.GroupNorm's [N, G, -1] view of them");
    const std::size_t C = s[0], G = seen[0], Cg = C / G;
    const std::vector<float>& scale = floats(n, constant(n, 1, "scale"), "scale");
    const std::vector<float>& bias = floats(n, constant(n, 2, "B"), "B");
    if (scale.size() != G || bias.size() != G)
        failNode(n, "scale and B hold " + std::to_string(scale.size()) + " and " + std::to_string(bias.size()) + " values for " +
                        std::to_string(G) + " groups", false);
    const float eps = attrFloat(n, "epsilon", 1e-5f);
    if (!(eps > 0.0f) || !std::isfinite(eps)) failNode(n, "epsilon is not a positive finite number", false);
    StoredLayer l;
    l.kind = LayerKind::GroupNorm;
    l.groups = G;
    l.outChannels = C;
    l.eps = eps;
    // On the maps themselves (nn.InstanceNorm2d), affine=True's weight and bias are the graph's
    // initializers (its parameters) and affine=False's ones and zeros Constant nodes: an untrained
    // affine one keeps its parameters, as PyTorch counts them. nn.GroupNorm's normalisation of its
    // view always has ones and zeros, its parameters come after (a Mul and an Add).
    bool plain = true;
    if (seen == s)
        for (const onnx::TensorProto& t : m_mp.graph().initializer())
            if (t.name() == n.input(1) || t.name() == n.input(2)) plain = false;
    for (std::size_t g = 0; g < G; ++g) {
        if (!std::isfinite(scale[g]) || !std::isfinite(bias[g])) failNode(n, "scale or B holds a value that is not finite", false);
        plain = plain && scale[g] == 1.0f && bias[g] == 0.0f;
    }
    if (!plain) {
        std::vector<float> w(C), b(C);
        for (std::size_t c = 0; c < C; ++c) w[c] = scale[c / Cg], b[c] = bias[c / Cg];
        l.tensors = {floatTensor("weight", {C}, std::move(w)), floatTensor("bias", {C}, std::move(b))};
    }
    addLayer(n, std::move(l), s, {x});
    setView(n, m_m.layers.size(), seen);
}

bool Importer::perPixelAxes(const std::string& x, const Shape& s, const std::vector<std::int64_t>& axes) const
{
    if (s.size() != 3 || axes.size() != 1) return false;
    const std::int64_t a = axes[0] < 0 ? axes[0] + 4 : axes[0];
    return isChannelsLast(x) ? a == 3 : a == 1;
}

// nn.LayerNorm's axes (ReduceMean axes, or LayerNormalization's axis onwards) on images of per-image
// shape s: read only over all of each image's values, [N, C] features (nn.LayerNorm(C)) or [N, C,
// H, W] maps (nn.LayerNorm([C, H, W])), which is GroupNorm(1, C) with a per-channel affine.
void Importer::checkLayerNormAxes(const NodeProto& n, const Shape& s, const std::vector<std::int64_t>& axes, bool channelsLast) const
{
    if (channelsLast)
        failNode(n, "normalises axes " + listOf(axes) + " of " + shapeString(s) + " maps permuted to channels-last ([N, H, W, C], "
                        "x.permute(0, 2, 3, 1)); QuantScope reads a LayerNorm there over the last axis alone, the channels of each pixel "
                        "(a LayerNorm2d, as ConvNeXt writes it)");
    const auto rank = static_cast<std::int64_t>(s.size()) + 1;
    std::vector<bool> seen(static_cast<std::size_t>(rank), false);
    bool ok = !axes.empty() && static_cast<std::int64_t>(axes.size()) == rank - 1;
    for (std::int64_t a : axes) {
        const std::int64_t d = a < 0 ? a + rank : a;
        ok = ok && d >= 1 && d < rank && !seen[static_cast<std::size_t>(d)];
        if (d >= 0 && d < rank) seen[static_cast<std::size_t>(d)] = true;
    }
    if (!ok)
        failNode(n, "normalises axes " + listOf(axes) + " of " + shapeString(s) + " images (nn.LayerNorm over part of each image); "
                        "QuantScope reads nn.LayerNorm over all of an image's values (nn.LayerNorm(C) on [N, C] features, "
                        "nn.LayerNorm([C, H, W]) on maps with its weight and bias equal within each channel, as nn.GroupNorm(1, C)) and over the channels of each pixel (LayerNorm2d: "
                        "axis 1 of [N, C, H, W] maps, ConvNeXt's channels_first LayerNorm, or the last axis of maps permuted to "
                        "channels-last)");
}

// LayerNormalization (opset 17: nn.LayerNorm) over all of each image's values (checkLayerNormAxes):
// a GroupNorm of one group, its scale and B (one value per element) the per-channel weight and
// bias, which on maps must be one value per channel (refused by node otherwise).
void Importer::layerNormalization(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    if (m_views.count(n.input(0))) failNode(n, "normalises a view of its input, which QuantScope does not read");
    noExtraOutputs(n);
    const Shape s = shapeOf(x); // a copy: the note reads it after addLayer, which may move the shapes
    const auto rank = static_cast<std::int64_t>(s.size()) + 1;
    const std::int64_t axis = attrInt(n, "axis", -1);
    std::vector<std::int64_t> axes;
    for (std::int64_t d = axis < 0 ? axis + rank : axis; d >= 0 && d < rank; ++d) axes.push_back(d);
    const float eps = attrFloat(n, "epsilon", 1e-5f);
    if (!(eps > 0.0f) || !std::isfinite(eps)) failNode(n, "epsilon is not a positive finite number", false);
    // torch 1.13 writes nn.LayerNorm(elementwise_affine=False) at opset 17 with no Scale and no B
    // (invalid ONNX, Scale is required; the file is written before its checker fails): the
    // normalisation alone, no affine parameters, as PyTorch counts them.
    const bool plain = !has(n, 1) && !has(n, 2);
    if (plain) {
        StoredLayer l;
        l.kind = perPixelAxes(n.input(0), s, axes) ? LayerKind::LayerNorm2d : LayerKind::GroupNorm;
        if (l.kind == LayerKind::GroupNorm) checkLayerNormAxes(n, s, axes, isChannelsLast(n.input(0)) && s.size() == 3);
        l.groups = l.kind == LayerKind::GroupNorm ? 1 : 0;
        l.outChannels = s[0];
        l.eps = eps;
        addLayer(n, std::move(l), s, {x});
        return;
    }
    if (perPixelAxes(n.input(0), s, axes)) { // nn.LayerNorm(C) on channels-last maps: a LayerNorm2d
        const std::size_t C = s[0];
        const std::vector<float>& scale = floats(n, constant(n, 1, "Scale"), "Scale");
        const ConstTensor* bt = optConstant(n, 2, "B");
        std::vector<float> bias = bt ? floats(n, *bt, "B") : std::vector<float>(C, 0.0f);
        if (scale.size() != C || bias.size() != C)
            failNode(n, "Scale and B hold " + std::to_string(scale.size()) + " and " + std::to_string(bias.size()) +
                            " values for the " + std::to_string(C) + " channels of each pixel (one per channel is read)", false);
        for (std::size_t c = 0; c < C; ++c)
            if (!std::isfinite(scale[c]) || !std::isfinite(bias[c])) failNode(n, "Scale or B holds a value that is not finite", false);
        StoredLayer l;
        l.kind = LayerKind::LayerNorm2d;
        l.outChannels = C;
        l.eps = eps;
        l.tensors = {floatTensor("weight", {C}, scale), floatTensor("bias", {C}, std::move(bias))};
        addLayer(n, std::move(l), s, {x});
        return;
    }
    checkLayerNormAxes(n, s, axes, isChannelsLast(n.input(0)) && s.size() == 3);
    const std::size_t C = s[0], plane = shapeNumel(s) / C;
    const std::vector<float>& scale = floats(n, constant(n, 1, "Scale"), "Scale");
    const ConstTensor* bt = optConstant(n, 2, "B");
    const std::vector<float> bias = bt ? floats(n, *bt, "B") : std::vector<float>(scale.size(), 0.0f);
    if (scale.size() != shapeNumel(s) || bias.size() != shapeNumel(s))
        failNode(n, "Scale and B hold " + std::to_string(scale.size()) + " and " + std::to_string(bias.size()) + " values for " +
                        shapeString(s) + " images (one per value is read)", false);
    std::vector<float> w(C), b(C);
    for (std::size_t c = 0; c < C; ++c) {
        w[c] = scale[c * plane], b[c] = bias[c * plane];
        for (std::size_t p = 0; p < plane; ++p)
            if (scale[c * plane + p] != w[c] || bias[c * plane + p] != b[c])
                failNode(n, "its Scale or B differs within channel " + std::to_string(c) + " of " + shapeString(s) +
                                " maps: nn.LayerNorm([C, H, W]) with a weight and bias per element (trained) is not read; QuantScope "
                                "reads it as nn.GroupNorm(1, C), whose weight and bias are one value per channel");
        if (!std::isfinite(w[c]) || !std::isfinite(b[c])) failNode(n, "Scale or B holds a value that is not finite", false);
    }
    StoredLayer l;
    l.kind = LayerKind::GroupNorm;
    l.groups = 1;
    l.outChannels = C;
    l.eps = eps;
    l.tensors = {floatTensor("weight", {C}, std::move(w)), floatTensor("bias", {C}, std::move(b))};
    const StoredLayer& added = addLayer(n, std::move(l), s, {x});
    if (plane > 1)
        m_m.notes.push_back("nn.LayerNorm '" + added.name + "' over " + shapeString(s) + " maps holds one weight and one bias per value, "
                            "equal within each channel: read as a GroupNorm of one group with one per channel (" + std::to_string(2 * C) +
                            " parameters where PyTorch counts " + std::to_string(2 * shapeNumel(s)) + ")");
}

} // namespace quantscope::onnximport
