// The ONNX importer's shape operators: Flatten, Reshape, Squeeze, Unsqueeze and Shape, and the
// views they leave (a value read under a per-image shape of its own: m_views), which every other
// operator either passes on (propagateView) or refuses (checkViews). Split from
// onnx_import_ops.cpp, which holds the layers' operators.
#include "io/onnx_importer.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

namespace quantscope::onnximport {

void Importer::flatten(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const std::int64_t rank = static_cast<std::int64_t>(shapeOf(x).size()) + 1;
    std::int64_t axis = attrInt(n, "axis", 1);
    if (axis < 0) axis += rank;
    if (const auto cl = m_channelsLast.find(n.input(0)); cl != m_channelsLast.end()) { // the features in channels-last order
        if (axis != 1) failNode(n, "axis = " + std::to_string(attrInt(n, "axis", 1)) + " on maps permuted to channels-last; only flattening each image (axis 1) is read there");
        return flattenChannelsLast(n, x, cl->second);
    }
    if (axis == 2 && rank == 4 && viewedShape(n, 0, x) == shapeOf(x)) { // x.flatten(2): [N, C, H*W], viewed (a mean over it follows)
        alias(n, x);
        return setView(n, x, {shapeOf(x)[0], shapeOf(x)[1] * shapeOf(x)[2]});
    }
    if (axis != 1) failNode(n, "axis = " + std::to_string(attrInt(n, "axis", 1)) + "; only flattening each image (axis 1) is read");
    flattenImages(n, x);
}

// x -> (N, C H W): a Flatten layer (nothing for a flat x). An MLP that flattens the graph input
// first may normalise the flat values next, by one mean and one stddev (which commute with the
// flattening): the flattened input is then where the normalisation is read (m_inputAct).
void Importer::flattenImages(const NodeProto& n, std::size_t x)
{
    if (shapeOf(x).size() == 1) return alias(n, x);
    if (const Shape& s = shapeOf(x); isGateFlatten(n) && s.size() == 3 && s[1] == 1 && s[2] == 1) {
        alias(n, x); // the pooled map of a Linear-form gate, viewed flat (onnx_import_joins.cpp)
        return setView(n, x, {s[0]});
    }
    StoredLayer l;
    l.kind = LayerKind::Flatten;
    addLayer(n, std::move(l), {shapeNumel(shapeOf(x))}, {x});
    if (x == 0 && m_inputAct == 0 && m_m.layers.size() == 1) m_inputAct = 1;
}

// x's maps permuted to channels-last, flattened (Flatten, Reshape): the Flatten layer of
// flattenImages, its output marked with x's [C, H, W] for the Linear that reads it.
void Importer::flattenChannelsLast(const NodeProto& n, std::size_t x, const Shape& chw)
{
    flattenImages(n, x);
    if (n.output_size() > 0 && !n.output(0).empty()) m_channelsLast[n.output(0)] = chw; // std::map: chw stays valid
}

namespace {
// s without its trailing axes of size 1 (at least one axis kept): [C, 1, 1] and [C] read alike.
Shape withoutTrailingOnes(Shape s)
{
    while (s.size() > 1 && s.back() == 1) s.pop_back();
    return s;
}
} // namespace

// Reshape of an activation. The target's first value must be the batch (x.size(0) folded to the
// batch marker, 0, -1 or the traced batch size of a static export); each image then gets the
// per-image shape the rest resolves to (0 copies an axis, -1 takes what is left). Read: flattening
// each image to (N, -1); a shape that differs from the activation's by trailing axes of size 1
// (x.view(-1, 1, 28, 28) on [N, 1, 28, 28], h.view(N, -1, 1, 1) on flat features: a view, see
// m_views); and a flat [N, C*H*W] input that the first node views as [N, C, H, W].
void Importer::reshape(const NodeProto& n)
{
    const std::size_t x = value(n, 0).kind == Value::Kind::Grouped ? value(n, 0).act : act(n, 0);
    const ConstTensor& t = constant(n, 1, "the target shape");
    const Shape& seen = viewedShape(n, 0, x);
    const std::size_t numel = shapeNumel(shapeOf(x));
    const bool allowZero = attrInt(n, "allowzero", 0) != 0;
    const auto isBatch = [&](std::int64_t a) {
        return a == kBatchDim || (a == 0 && !allowZero) || (m_staticBatch > 0 && a == m_staticBatch);
    };
    std::string target = "a float shape";
    if (!t.isFloat) {
        target = "[";
        for (std::size_t d = 0; d < t.i.size(); ++d)
            target += (d ? ", " : "") + (t.i[d] == kBatchDim ? std::string("N") : std::to_string(t.i[d]));
        target += "]";
    }
    // The per-image shape the target resolves to, or an empty shape when it keeps no batch axis.
    Shape per;
    if (!t.isFloat && t.i.size() >= 2 && (isBatch(t.i[0]) || t.i[0] == -1)) {
        bool ok = true;
        std::size_t known = 1;
        int open = t.i[0] == -1 ? 0 : -1; // index in per of a -1; the batch's -1 needs every other axis known
        for (std::size_t d = 1; d < t.i.size() && ok; ++d) {
            std::int64_t v = t.i[d];
            if (v == 0 && !allowZero) v = d - 1 < seen.size() ? static_cast<std::int64_t>(seen[d - 1]) : -2;
            if (v == -1 && open == -1) {
                open = static_cast<int>(per.size());
                per.push_back(0);
                continue;
            }
            ok = v >= 1 && static_cast<std::uint64_t>(v) <= numel;
            if (ok) {
                per.push_back(static_cast<std::size_t>(v));
                known *= static_cast<std::size_t>(v);
                ok = known <= numel;
            }
        }
        if (ok && open >= 0 && t.i[0] != -1) {
            ok = known > 0 && numel % known == 0;
            if (ok) per[static_cast<std::size_t>(open)] = numel / known;
        }
        if (!ok || shapeNumel(per) != numel) per.clear();
    }
    if (shuffleReshape(n, per)) return;
    if (const auto cl = m_channelsLast.find(n.input(0)); cl != m_channelsLast.end()) { // maps permuted to channels-last
        if (per.size() != 1)
            failNode(n, "reshapes " + shapeString(cl->second) + " maps permuted to channels-last to " + target +
                            "; only flattening each image to (N, -1) is read there");
        return flattenChannelsLast(n, x, cl->second);
    }
    if (per.size() == 1) return flattenImages(n, x);
    if (!per.empty() && withoutTrailingOnes(per) == withoutTrailingOnes(shapeOf(x))) {
        alias(n, x);
        return setView(n, x, per);
    }
    // [N, C, H*W] (x.view(N, C, -1), before a mean over the last axis): a view of the images.
    if (per.size() == 2 && seen.size() == 3 && seen == shapeOf(x) && per[0] == seen[0]) {
        alias(n, x);
        return setView(n, x, per);
    }
    // [N, G, C/G*H*W] (nn.GroupNorm's x.view(N, G, -1)), read by InstanceNormalization alone.
    if (per.size() == 2 && seen == shapeOf(x) && !seen.empty() && per[0] < seen[0] && seen[0] % per[0] == 0 &&
        readOnlyByInstanceNormalization(n.output(0))) {
        alias(n, x);
        return setView(n, x, per);
    }
    // A flat [N, C*H*W] input that the graph's first node views as [N, C, H, W] again (the
    // MNIST tutorials' x.view(-1, 1, 28, 28)): the images need no flattening at all.
    if (!per.empty() && x == m_inputAct && m_info.flatInput && m_m.layers.size() == 1 && m_uses[n.input(0)] == 1 && per == m_shapes[0]) {
        m_names.erase(m_m.layers.back().name);
        m_m.layers.pop_back();
        m_shapes.pop_back();
        std::erase_if(m_m.notes, [](const std::string& note) { return note.find("input_flatten") != std::string::npos; });
        m_inputAct = 0;
        return alias(n, 0);
    }
    // The per-image shape it asks for, when it is one: [1, 28, 28] -> [28, 28] (rows of a Conv1d or
    // a sequence model) reads clearer than the target [1, 28, 28] beside the images' [1,28,28].
    // A fixed-batch export whose input declares another batch (a damaged or edited input shape):
    // the target's first axis is then not read as the batch, which the message says.
    const std::string batchHint = !t.isFloat && t.i.size() >= 2 && t.i[0] > 0 && m_staticBatch > 0 && t.i[0] != m_staticBatch
                                      ? "; its first axis, " + std::to_string(t.i[0]) + ", is not the batch the graph's input declares (" +
                                            std::to_string(m_staticBatch) + ")"
                                      : std::string();
    // The target's first axis named as the batch it is (a traced example batch of 2 read as if it
    // were the 2 beside [1,28,28], tester 9), unless batchHint says it is not.
    const bool firstIsBatch = !t.isFloat && !t.i.empty() && batchHint.empty() && (t.i[0] <= 0 || t.i[0] == m_staticBatch);
    const std::string batchWord = !firstIsBatch ? std::string()
                                  : t.i[0] > 0  ? "the batch of " + std::to_string(t.i[0]) + ", then "
                                                : std::string("the batch, then ");
    // [C, H/b, b, W/b, b] per image: space-to-depth (nn.PixelUnshuffle) or depth-to-space written with view and permute.
    const bool blocks = seen.size() == 3 && per.size() == 5 && per[2] > 1 && per[2] == per[4] && per[1] * per[2] == seen[1] &&
                        per[3] * per[4] == seen[2];
    failNode(n, "reshapes " + shapeString(seen) + (seen.size() == 1 ? " features" : " images") + " to " + target +
                    (per.empty() ? std::string() : " (" + batchWord + shapeString(per) + " per image)") + batchHint +
                    "; QuantScope reads flattening each image to (N, -1), and adding or removing trailing axes of size 1 (no "
                    "sequence or Conv1d layouts)" +
                    (blocks ? "; this splits the image into " + std::to_string(per[2]) + "x" + std::to_string(per[4]) +
                                  " blocks, as nn.PixelUnshuffle exports: space-to-depth is read written as strided slices "
                                  "concatenated (torch.cat([x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], "
                                  "x[:, :, 1::2, 1::2]], 1) is nn.PixelUnshuffle(2) of a one-channel input)"
                            : std::string()));
}

bool Importer::readOnlyByInstanceNormalization(const std::string& v) const
{
    bool read = false;
    for (const NodeProto& r : m_mp.graph().node())
        for (int i = 0; i < r.input_size(); ++i)
            if (r.input(i) == v) {
                if (r.op_type() != "InstanceNormalization" || i != 0) return false;
                read = true;
            }
    for (const auto& o : m_mp.graph().output())
        if (o.name() == v) return false;
    return read;
}

// Squeeze of an activation (axes from the attribute before opset 13, the input since; none: every
// axis of size 1 but the batch's) that leaves each image one axis: the (N, C, 1, 1) -> (N, C) of
// x.squeeze(-1).squeeze(-1) or x.squeeze() after a global pooling, which is a Flatten. Squeezing
// the batch axis, an axis that is not 1, or to another rank is a ConfigError.
void Importer::squeeze(const NodeProto& n)
{
    std::vector<std::int64_t> axes;
    if (m_opset < 13) axes = attrInts(n, "axes");
    else if (const ConstTensor* a = optConstant(n, 1, "axes")) {
        if (a->isFloat) failNode(n, "axes are not integers", false);
        axes = a->i;
    }
    squeezeAxes(n, axes);
}

// Gather of an activation with one constant index on an axis of size 1: x[:, :, 0, 0] after a
// pooled 1x1 Conv head (BiT, timm's ResNetV2), x[:, 0] of a [N, 1, F] view. A scalar index drops
// the axis (a Squeeze); an index list [0] keeps it (the same values). Any other Gather of an
// activation (a token of a sequence, a channel by index) is refused by node.
void Importer::gather(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const Shape s = viewedShape(n, 0, x); // per image
    const std::int64_t rank = static_cast<std::int64_t>(s.size()) + 1;
    const std::int64_t a = attrInt(n, "axis", 0), d = a < 0 ? a + rank : a;
    if (d < 0 || d >= rank) failNode(n, "axis " + std::to_string(a) + " is out of range for rank " + std::to_string(rank), false);
    if (d == 0) failNode(n, "selects images of the batch (axis 0); QuantScope's layers read every image");
    const ConstTensor& idx = constant(n, 1, "the indices");
    if (idx.isFloat) failNode(n, "the indices are not integers", false);
    const std::size_t size = s[static_cast<std::size_t>(d - 1)];
    if (d == 1 && idx.dims.size() == 1 && (s == shapeOf(x)) && (s.size() == 3 || s.size() == 1) && (size != 1 || idx.numel() != 1))
        return gatherChannels(n, x, idx.i);
    // x[:, i] of maps: channel i, its axis dropped ([N, H, W]), as per-channel code takes the planes
    // one by one (torch.stack([(x[:, i] - m[i]) / s[i] for i in range(3)], 1)): the one-hot 1x1 Conv
    // of [i], viewed as [H, W]; an Unsqueeze of axis 1 gives the [1, H, W] map back.
    if (d == 1 && idx.dims.empty() && idx.numel() == 1 && s == shapeOf(x) && s.size() == 3 && size != 1) {
        gatherChannels(n, x, idx.i);
        return setView(n, m_m.layers.size(), {s[1], s[2]});
    }
    if (size != 1 || idx.numel() != 1 || idx.dims.size() > 1 || (idx.i.at(0) != 0 && idx.i.at(0) != -1))
        failNode(n, "takes indices " + listOf(idx.i) + " of axis " + std::to_string(d) + " (of size " + std::to_string(size) + ") of " +
                        shapeString(s) + " activations; QuantScope reads a Gather of an activation as a list of channels (x[:, [2, 1, "
                        "0]], a 1x1 Conv) or of features, or as an index 0 into an axis of size 1 (x[:, :, 0, 0] of a pooled map: a "
                        "squeeze)");
    if (!idx.dims.empty()) { // [0]: the axis stays, the values are the same
        alias(n, x);
        return setView(n, x, s);
    }
    squeezeAxes(n, {d});
}

// x[:, [2, 1, 0]] (RGB to BGR), x[:, idx] with a list of channels on [N, C, H, W] maps or of
// features on [N, F]: output k is input idx[k] (negative indices count from the end, repeats
// allowed). QuantScope has no gather layer for it: it is a 1x1 Conv C -> K (a Linear F -> K on
// features) without bias whose weights are one-hot, exact in float (each output is 1 x one input
// plus zeros), and which trains, quantizes and exports as any such layer (a note says so). An
// index out of range is refused by node.
void Importer::gatherChannels(const NodeProto& n, std::size_t x, const std::vector<std::int64_t>& idx)
{
    const Shape& s = shapeOf(x); // stays valid across addLayer (m_shapes is a deque)
    const std::size_t C = s[0], K = idx.size();
    if (K == 0) failNode(n, "takes no indices", false);
    if (K > kMaxGatheredChannels)
        failNode(n, "takes " + std::to_string(K) + " indices; QuantScope reads at most " + std::to_string(kMaxGatheredChannels), false);
    std::vector<float> w(K * C, 0.0f);
    for (std::size_t k = 0; k < K; ++k) {
        const std::int64_t i = idx[k] < 0 ? idx[k] + static_cast<std::int64_t>(C) : idx[k];
        if (i < 0 || i >= static_cast<std::int64_t>(C))
            failNode(n, "index " + std::to_string(idx[k]) + " is out of range for axis 1 of size " + std::to_string(C), false);
        w[k * C + static_cast<std::size_t>(i)] = 1.0f;
    }
    const bool maps = s.size() == 3;
    // A permutation of the graph input's channels, its only reader: the normalisation after it is
    // the input's, read in the input's channel order (inputHere).
    std::vector<std::size_t> perm;
    if (maps && K == C && x == m_inputAct && m_m.layers.size() == m_inputAct) {
        const auto readers = m_valueReaders.find(n.input(0));
        std::vector<bool> seen(C, false);
        for (std::size_t k = 0; k < K; ++k) {
            const std::size_t i = static_cast<std::size_t>(idx[k] < 0 ? idx[k] + static_cast<std::int64_t>(C) : idx[k]);
            if (seen[i]) break;
            seen[i] = true;
            perm.push_back(i);
        }
        if (perm.size() != C || readers == m_valueReaders.end() || readers->second != 1) perm.clear();
    }
    if (maps) m_pixelLayers.insert(m_m.layers.size());
    StoredLayer l;
    if (maps) {
        l = pointwiseConv(C, K, std::move(w));
    } else {
        l.kind = LayerKind::Linear;
        l.inFeatures = C;
        l.outFeatures = K;
        l.tensors.push_back(floatTensor("weight", {K, C}, std::move(w)));
    }
    const StoredLayer& made = addLayer(n, std::move(l), maps ? Shape{K, s[1], s[2]} : Shape{K}, {x});
    if (!perm.empty()) {
        m_permutedInput = m_m.layers.size();
        m_inputPermutation = std::move(perm);
    }
    m_m.importAddedParams += K * C;
    m_m.notes.push_back("Gather " + onnxNodeName(n) + " takes " + (maps ? "channels " : "features ") + listOf(idx) + " of " + shapeString(s) +
                        ": read as the " + (maps ? "1x1 Conv '" : "Linear '") + made.name + "' " + std::to_string(C) + " -> " +
                        std::to_string(K) + " with one-hot weights (trainable; its weights are counted apart from the file's)");
}

void Importer::squeezeAxes(const NodeProto& n, const std::vector<std::int64_t>& axes)
{
    const std::size_t x = act(n, 0);
    const auto viewed = m_views.find(n.input(0));
    const Shape s = viewed != m_views.end() ? viewed->second : shapeOf(x); // per image
    const std::int64_t rank = static_cast<std::int64_t>(s.size()) + 1;
    std::vector<bool> drop(static_cast<std::size_t>(rank), false);
    if (axes.empty())
        for (std::int64_t d = 1; d < rank; ++d) drop[static_cast<std::size_t>(d)] = s[static_cast<std::size_t>(d - 1)] == 1;
    for (std::int64_t a : axes) {
        const std::int64_t d = a < 0 ? a + rank : a;
        if (d == 0) failNode(n, "squeezes the batch axis");
        if (d < 0 || d >= rank) failNode(n, "axis " + std::to_string(a) + " is out of range for rank " + std::to_string(rank), false);
        if (s[static_cast<std::size_t>(d - 1)] != 1)
            failNode(n, "axis " + std::to_string(a) + " has size " + std::to_string(s[static_cast<std::size_t>(d - 1)]) + ", not 1", false);
        drop[static_cast<std::size_t>(d)] = true;
    }
    Shape out;
    for (std::int64_t d = 1; d < rank; ++d)
        if (!drop[static_cast<std::size_t>(d)]) out.push_back(s[static_cast<std::size_t>(d - 1)]);
    if (out.size() != 1) { // on the way to one axis (a Squeeze follows): the same activation, viewed
        if (!n.output(0).empty()) m_views[n.output(0)] = out;
        return alias(n, x);
    }
    if (shapeOf(x).size() == 1) return alias(n, x);
    if (isGateFlatten(n) && shapeOf(x)[1] == 1 && shapeOf(x)[2] == 1) {
        alias(n, x); // the pooled map of a Linear-form gate, viewed flat (onnx_import_joins.cpp)
        return setView(n, x, out);
    }
    StoredLayer l;
    l.kind = LayerKind::Flatten;
    addLayer(n, std::move(l), out, {x});
}

// Unsqueeze of an activation (axes from the attribute before opset 13, the input since) that adds
// trailing axes of size 1 to each image: h.unsqueeze(-1).unsqueeze(-1) or h[:, :, None, None] on
// flat features, which a 1x1 Conv head reads (a view, see m_views). Other axes are refused.
void Importer::unsqueeze(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const Shape& s = viewedShape(n, 0, x);
    std::vector<std::int64_t> axes;
    if (m_opset < 13) axes = attrInts(n, "axes");
    else if (const ConstTensor* a = optConstant(n, 1, "axes")) {
        if (a->isFloat) failNode(n, "axes are not integers", false);
        axes = a->i;
    }
    if (axes.empty() || axes.size() > 8) failNode(n, "has " + std::to_string(axes.size()) + " axes", false);
    const std::int64_t rank = static_cast<std::int64_t>(s.size() + 1 + axes.size()); // the output's, batch included
    std::vector<bool> added(static_cast<std::size_t>(rank), false);
    for (std::int64_t a : axes) {
        const std::int64_t d = a < 0 ? a + rank : a;
        if (d < 0 || d >= rank || added[static_cast<std::size_t>(d)])
            failNode(n, "axes " + listOf(axes) + " are out of range or repeated for an output of rank " + std::to_string(rank), false);
        if (d == 0) failNode(n, "adds an axis before the batch; QuantScope's layers keep the batch first");
        added[static_cast<std::size_t>(d)] = true;
    }
    Shape out;
    std::size_t next = 0;
    for (std::int64_t d = 1; d < rank; ++d) out.push_back(added[static_cast<std::size_t>(d)] ? 1 : s[next++]);
    if (withoutTrailingOnes(out) != withoutTrailingOnes(shapeOf(x)))
        failNode(n, "unsqueezes " + shapeString(s) + (s.size() == 1 ? " features" : " images") + " to " + shapeString(out) +
                        "; QuantScope reads adding trailing axes of size 1 only");
    alias(n, x);
    setView(n, x, out);
}

// A value viewed under a shape of its own (m_views) is read only by operators that treat it as
// that shape: reshaping, the shape-preserving ones, a 1x1 Conv, pooling over its 1x1 plane, and a
// softmax over axis 1. Anything else would compute on the activation's own shape instead.
void Importer::checkViews(const NodeProto& n) const
{
    static const std::set<std::string> reads = {"Conv", "Squeeze", "Unsqueeze", "Flatten", "Reshape", "Relu", "Clip",
                                                "Dropout", "Identity", "Cast", "BatchNormalization", "Add",
                                                "GlobalAveragePool", "ReduceMean", "Softmax", "LogSoftmax", "Shape",
                                                "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu",
                                                "InstanceNormalization", // nn.GroupNorm's [G, -1] view
                                                // a Linear-form gate's [C] view of its [C, 1, 1] map (onnx_import_joins.cpp)
                                                "Gemm", "MatMul",
                                                "Gather"}; // an index 0 into an axis of size 1 of the view (gather)
    for (int i = 0; i < n.input_size(); ++i) {
        const auto v = m_views.find(n.input(i));
        if (v == m_views.end()) continue;
        const std::string what = "'" + n.input(i) + "', a " + shapeString(v->second) + " view of " +
                                 shapeString(shapeOf(m_values.at(n.input(i)).act)) + " activations";
        const Shape& base = shapeOf(m_values.at(n.input(i)).act);
        const std::string tokens = n.op_type() == "Transpose" && v->second.size() == 2 && base.size() == 3
                                       ? " (x.flatten(2).transpose(1, 2): maps made a sequence of tokens, as ViT and MLP-Mixer write it; "
                                         "QuantScope reads convolutional networks on [N, C, H, W] maps and flat features, not token sequences)"
                                       : "";
        if ((n.op_type() == "Mul" || n.op_type() == "Expand") && base.size() == 1 && v->second.size() == 3)
            failNode(n, "reads " + what + ": a channel vector computed from flat features, multiplied with or expanded to maps (as BAM's "
                        "attention multiplies a channel vector by a [1, H, W] spatial map); QuantScope's Mul reads two maps of one shape, "
                        "a map and a [C, 1, 1] gate of its channels (squeeze-and-excitation), or a map and a [1, H, W] spatial gate (CBAM)");
        // One channel's plane without its axis ([H, W] of a [1, H, W] map: x[:, i], a channel mean
        // without keepdim) with one constant value: the same on the plane as on the map.
        const bool plane = base.size() == 3 && base[0] == 1 && v->second == Shape{base[1], base[2]};
        const auto scalarOther = [&] {
            if (n.input_size() != 2) return false;
            const auto o = m_values.find(n.input(1 - i));
            return o != m_values.end() && o->second.kind == Value::Kind::Const && o->second.c.numel() == 1;
        };
        if (plane && (n.op_type() == "Sub" || n.op_type() == "Div" || n.op_type() == "Mul") && scalarOther()) continue;
        if (n.op_type() == "Conv") refuseConv1d(n);
        if (!reads.count(n.op_type())) failNode(n, "reads " + what + ", which QuantScope's " + n.op_type() + " would not read as that shape" + tokens);
        // A view that merges axes ([C, H*W] of [C, H, W]) is read only by what does not care
        // where the planes are: reshapes, the mean over it, elementwise operators.
        static const std::set<std::string> mergedReads = {"Squeeze", "Unsqueeze", "Flatten", "Reshape", "Relu", "Clip", "Dropout",
                                                          "Identity", "Cast", "Add", "ReduceMean", "Shape",
                                                          "InstanceNormalization", "Gather"};
        if (withoutTrailingOnes(v->second) != withoutTrailingOnes(base) && !mergedReads.count(n.op_type()))
            failNode(n, "reads " + what + ", which QuantScope's " + n.op_type() + " would not read as that shape" + tokens);
        if ((n.op_type() == "Softmax" || n.op_type() == "LogSoftmax") && attrInt(n, "axis", m_opset < 13 ? 1 : -1) != 1)
            failNode(n, "takes the softmax over axis " + std::to_string(attrInt(n, "axis", m_opset < 13 ? 1 : -1)) + " of " + what + "; only axis 1 is read");
        if (n.op_type() == "Add" && n.input_size() == 2) {
            const auto other = m_views.find(n.input(1 - i));
            const auto ov = m_values.find(n.input(1 - i));
            const bool otherAct = ov != m_values.end() && ov->second.kind == Value::Kind::Act;
            if (otherAct && (other == m_views.end() || other->second != v->second)) {
                const Shape otherShape = other != m_views.end() ? other->second : shapeOf(ov->second.act);
                failNode(n, "adds " + what + " to an activation of per-image shape " + shapeString(otherShape) +
                                "; QuantScope's Add takes two activations of one shape, or a map and a [C, 1, 1] gate of its "
                                "channels (as GCNet's context add), not a view of other activations as either");
            }
        }
    }
}

// After a shape-preserving operator, its output keeps the view of its first input.
void Importer::propagateView(const NodeProto& n)
{
    static const std::set<std::string> keeps = {"Relu", "Clip", "Dropout", "Identity", "Cast", "BatchNormalization", "Add",
                                                "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Sub", "Div", "Mul"};
    if (!keeps.count(n.op_type()) || n.input_size() < 1 || n.output_size() < 1 || n.output(0).empty()) return;
    // the viewed input: the first, or the second of two (c * x, c - x)
    int vi = 0;
    if (!m_views.count(n.input(0)) && n.input_size() == 2 && m_views.count(n.input(1))) vi = 1;
    const auto v = m_views.find(n.input(vi));
    const auto in = m_values.find(n.input(vi));
    const auto out = m_values.find(n.output(0));
    if (v == m_views.end() || in == m_values.end() || out == m_values.end() || out->second.kind != Value::Kind::Act) return;
    if (shapeOf(out->second.act) == shapeOf(in->second.act)) m_views[n.output(0)] = v->second;
}

// Shape of an activation: [batch marker, per-image dims...] for the folder (start/end: opset 15).
void Importer::shape(const NodeProto& n)
{
    const Value& xv = value(n, 0);
    if (xv.kind != Value::Kind::Act) failNode(n, "Shape of a Pad's output is not read");
    std::vector<std::int64_t> dims{kBatchDim};
    Shape per = viewedShape(n, 0, xv.act);
    if (const auto cl = m_channelsLast.find(n.input(0)); cl != m_channelsLast.end() && per.size() == 3)
        per = {per[1], per[2], per[0]}; // [H, W, C]: the maps as the graph holds them
    for (std::size_t d : per) dims.push_back(static_cast<std::int64_t>(d));
    const auto rank = static_cast<std::int64_t>(dims.size());
    std::int64_t start = attrInt(n, "start", 0), end = attrInt(n, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<std::int64_t>(start, 0, rank);
    end = std::clamp<std::int64_t>(end, 0, rank);
    Value v;
    v.c.isFloat = false;
    for (std::int64_t k = start; k < end; ++k) v.c.i.push_back(dims[static_cast<std::size_t>(k)]);
    v.c.dims = {static_cast<std::int64_t>(v.c.i.size())};
    define(n, std::move(v));
}

} // namespace quantscope::onnximport
