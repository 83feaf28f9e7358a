// The ONNX importer's channel movements (ShuffleNet's data movement, nn/channel_ops.h):
//   Slice of an activation along the channels (x[:, a:b], and each part of x.chunk(k, 1) as
//   torch.onnx.export wrote it before Split: a Slice per part), with constant bounds, step 1;
//   H and W whole, or to the end from an offset with a step (x[:, :, 1::2, ::2]: a strided
//   depthwise Conv of one-hot weight);
//   zeros padded to the channels (F.pad(x, (0, 0, 0, 0, a, b)): a 1x1 Conv of identity weights);
//   Split along the channels (x.chunk(k, 1), x.split(sizes, 1)): one Slice layer per part read;
//   the channel shuffle x.view(N, g, C // g, H, W).transpose(1, 2).reshape(N, C, H, W): the first
//   Reshape (any [g, C / g, ...] view of the channels with the rest of each image kept, as
//   reshape(N, g, C // g, H * W) too), then a Transpose that swaps those two axes alone, then a
//   Reshape back to the images' shape, read as one ChannelShuffle layer. Other readers of the
//   views in between are refused (Importer::act).
#include "io/onnx_importer.h"

#include <array>

#include <algorithm>
#include <limits>

namespace quantscope::onnximport {

namespace {
// ONNX Slice's clamping of a start or an end on an axis of `dim` (step 1): negative counts from
// the end, then clamped to [0, dim].
std::size_t clampIndex(std::int64_t v, std::size_t dim)
{
    const auto d = static_cast<std::int64_t>(dim);
    if (v < 0) v = v < std::numeric_limits<std::int64_t>::min() / 2 ? 0 : v + d;
    return static_cast<std::size_t>(std::clamp<std::int64_t>(v, 0, d));
}
} // namespace

void Importer::addChannelSlice(const NodeProto& n, std::size_t x, std::size_t begin, std::size_t end, int out, const std::string& suffix)
{
    Value made;
    made.kind = Value::Kind::Act;
    if (begin == 0 && end == shapeOf(x)[0]) { // every channel: the input itself
        made.act = x;
        return define(n, made, out);
    }
    // addLayer names output 0; another output's layer leaves output 0 as it was.
    std::optional<Value> first;
    if (out != 0 && n.output_size() > 0)
        if (const auto it = m_values.find(n.output(0)); it != m_values.end()) first = it->second;
    StoredLayer l;
    l.kind = LayerKind::Slice;
    l.sliceBegin = begin;
    l.sliceEnd = end;
    Shape shape = shapeOf(x);
    shape[0] = end - begin;
    addLayer(n, std::move(l), std::move(shape), {x}, nullptr, suffix);
    if (out == 0) return;
    made.act = m_m.layers.size();
    define(n, made, out);
    if (first) define(n, *first, 0);
    else m_values.erase(n.output(0));
}

void Importer::slice(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    if (m_views.count(n.input(0))) failNode(n, "slices a view " + shapeString(m_views.at(n.input(0))) + " of the images; only [N, C, ...] is sliced");
    const Shape& s = shapeOf(x);
    const std::size_t rank = s.size() + 1;
    std::vector<std::int64_t> starts, ends, axes, steps;
    const auto ints = [&](int i, const char* what) {
        const ConstTensor& t = constant(n, i, what);
        if (t.isFloat) failNode(n, std::string(what) + " is not integer", false);
        return t.i;
    };
    if (m_opset < 10) { // the attribute form
        starts = attrInts(n, "starts"), ends = attrInts(n, "ends"), axes = attrInts(n, "axes");
    } else {
        starts = ints(1, "starts"), ends = ints(2, "ends");
        if (has(n, 3)) axes = ints(3, "axes");
        if (has(n, 4)) steps = ints(4, "steps");
    }
    if (axes.empty())
        for (std::size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<std::int64_t>(i));
    if (starts.empty() || ends.size() != starts.size() || axes.size() != starts.size() || (!steps.empty() && steps.size() != starts.size()))
        failNode(n, "has " + std::to_string(starts.size()) + " starts, " + std::to_string(ends.size()) + " ends, " +
                        std::to_string(axes.size()) + " axes and " + std::to_string(steps.size()) + " steps; they must agree", false);
    // A negative step along the channels alone (torch.flip(x, [1]), x[:, ::-1] in ONNX terms: RGB
    // to BGR, tester 15): the channels it takes, in its order, are a Gather of them (gatherChannels).
    if (starts.size() == 1 && !steps.empty() && steps[0] < 0 && (axes[0] == 1 || axes[0] == 1 - static_cast<std::int64_t>(rank))) {
        const auto dim = static_cast<std::int64_t>(s[0]);
        const std::int64_t step = steps[0];
        if (step < -dim) failNode(n, "slices the channels with step " + std::to_string(step) + ", beyond their " + std::to_string(dim));
        // ONNX's rule for a negative step: start in [0, dim - 1], end in [-1, dim - 1], both
        // counted from the end when negative
        const auto from = [dim](std::int64_t v, std::int64_t lo) {
            if (v < 0) v = v < -dim ? lo : v + dim;
            return std::clamp<std::int64_t>(v, lo, dim - 1);
        };
        const std::int64_t b = from(starts[0], 0), e = from(ends[0], -1);
        std::vector<std::int64_t> idx;
        for (std::int64_t c = b; c > e; c += step) idx.push_back(c);
        if (idx.empty()) failNode(n, "takes no channel of " + shapeString(s));
        return gatherChannels(n, x, idx);
    }
    std::size_t begin = 0, end = s[0];
    std::array<std::size_t, 2> stride{1, 1}, offset{0, 0}; // H, W
    for (std::size_t i = 0; i < starts.size(); ++i) {
        const std::int64_t a = axes[i] < 0 ? axes[i] + static_cast<std::int64_t>(rank) : axes[i];
        const std::int64_t step = steps.empty() ? 1 : steps[i];
        if (a < 0 || a >= static_cast<std::int64_t>(rank)) failNode(n, "axis " + std::to_string(axes[i]) + " is out of range for rank " + std::to_string(rank), false);
        if (a == 0) { // the batch, whole only
            if (starts[i] != 0 || ends[i] < std::numeric_limits<std::int32_t>::max() || step != 1)
                failNode(n, "slices the batch axis; QuantScope reads a Slice of the channels only (x[:, a:b])");
            continue;
        }
        const std::size_t dim = s[static_cast<std::size_t>(a - 1)];
        if (step < 1 || (step != 1 && a < 2))
            failNode(n, "slices axis " + std::to_string(a) + " with step " + std::to_string(step) +
                            "; QuantScope reads a Slice of the channels with step 1 (x[:, a:b]), and of H and W from 0 with a "
                            "step (x[:, :, ::2, ::2])");
        const std::size_t b = clampIndex(starts[i], dim), e = clampIndex(ends[i], dim);
        if (a >= 2) {
            const auto k = static_cast<std::size_t>(step);
            if (e <= b || (e - b + k - 1) / k != (dim - b + k - 1) / k || b > kMaxSliceOffset || rank != 4)
                failNode(n, "slices axis " + std::to_string(a) + " (H or W) of " + shapeString(s) +
                                " images to [" + std::to_string(b) + ", " + std::to_string(e) + ") with step " + std::to_string(step) +
                                "; QuantScope reads a Slice of the channels (x[:, a:b]), and of H and W only to the end, from "
                                "an offset of at most " + std::to_string(kMaxSliceOffset) + ", with or without a step "
                                "(x[:, :, ::2, ::2] as a CIFAR ResNet's option A shortcut takes it, x[:, :, 1::2, ::2] as a "
                                "space-to-depth stem); nn.Conv2d(padding_mode='circular') and torch.roll export as such Slices "
                                "and a Concat, which QuantScope does not read (padding_mode='zeros', 'reflect' or 'replicate' is read)");
            stride[static_cast<std::size_t>(a - 2)] = k;
            offset[static_cast<std::size_t>(a - 2)] = b;
            continue;
        }
        begin = std::max(begin, b), end = std::min(end, e);
    }
    if (begin >= end) failNode(n, "takes no channel of " + shapeString(s) + " (channels [" + std::to_string(begin) + ", " + std::to_string(end) + "))");
    if (stride == std::array<std::size_t, 2>{1, 1} && offset == std::array<std::size_t, 2>{0, 0})
        return addChannelSlice(n, x, begin, end, 0, "");
    if (begin != 0 || end != s[0])
        failNode(n, "slices the channels and strides H or W in one Slice; QuantScope reads one of the two in a Slice");
    subsample(n, x, {offset[0], stride[0], offset[1], stride[1]});
}

// x[:, :, bh::sh, bw::sw]: a depthwise Conv of kernel (bh + 1) x (bw + 1) and stride (sh, sw)
// whose weight is 1 at tap (bh, bw) and 0 elsewhere, no bias, no padding: its output position i
// reads pixel bh + i sh, ceil((H - bh) / sh) of them. Exact in float and in per-channel int8
// (code 127 at scale 1/127). Two Slices in a row (torch writes one for H, one for W) make one
// layer: the second takes its offsets and strides in the first's output, which nothing else
// reads (offset b1 + b2 s1, stride s1 s2).
void Importer::subsample(const NodeProto& n, std::size_t x, std::array<std::size_t, 4> at)
{
    const auto weights = [](std::size_t C, const std::array<std::size_t, 4>& o) {
        const std::size_t kh = o[0] + 1, kw = o[2] + 1;
        std::vector<float> w(C * kh * kw, 0.0f);
        for (std::size_t c = 0; c < C; ++c) w[(c * kh + o[0]) * kw + o[2]] = 1.0f;
        return w;
    };
    const auto geometry = [](const std::array<std::size_t, 4>& o) { return ConvGeometry{o[0] + 1, o[2] + 1, o[1], o[3], 0, 0, 0, 0, 1, 1}; };
    const auto outSize = [](std::size_t d, std::size_t b, std::size_t k) { return (d - b + k - 1) / k; };
    if (const auto prev = m_subsampleLayers.find(x); prev != m_subsampleLayers.end() && x == m_m.layers.size() && readersOf(x) == 1) {
        std::array<std::size_t, 4>& o = prev->second;
        const Shape& in = shapeOf(m_m.layers[x - 1].inputs.at(0));
        const std::array<std::size_t, 4> merged{o[0] + at[0] * o[1], o[1] * at[1], o[2] + at[2] * o[3], o[3] * at[3]};
        if (merged[0] <= kMaxSliceOffset && merged[2] <= kMaxSliceOffset && merged[0] < in[1] && merged[2] < in[2]) {
            StoredLayer& l = m_m.layers[x - 1];
            const std::size_t before = l.tensors.at(0).values.size();
            o = merged;
            l.setConvGeometry(geometry(o));
            l.tensors.at(0) = floatTensor("weight", {in[0], 1, o[0] + 1, o[2] + 1}, weights(in[0], o));
            m_shapes[x] = {in[0], outSize(in[1], o[0], o[1]), outSize(in[2], o[2], o[3])};
            m_m.importAddedParams += l.tensors.at(0).values.size() - before;
            m_m.notes.push_back("Slice " + onnxNodeName(n) + " slices the output of '" + l.name + "' further: merged into it (pixels " +
                                std::to_string(o[0]) + " + " + std::to_string(o[1]) + " i, " + std::to_string(o[2]) + " + " +
                                std::to_string(o[3]) + " j)");
            return alias(n, x);
        }
    }
    const Shape s = shapeOf(x); // a copy: addLayer adds a shape
    if (at[0] >= s[1] || at[2] >= s[2]) failNode(n, "starts past the end of " + shapeString(s) + " images", false);
    StoredLayer l = depthwiseScale(std::vector<float>(s[0], 1.0f), nullptr);
    l.setConvGeometry(geometry(at));
    l.tensors.at(0) = floatTensor("weight", {s[0], 1, at[0] + 1, at[2] + 1}, weights(s[0], at));
    const std::size_t added = l.tensors.at(0).values.size();
    const StoredLayer& made = addLayer(n, std::move(l), {s[0], outSize(s[1], at[0], at[1]), outSize(s[2], at[2], at[3])}, {x});
    m_subsampleLayers[m_m.layers.size()] = at;
    m_m.importAddedParams += added;
    m_m.notes.push_back("Slice " + onnxNodeName(n) + " takes pixels of H and W at an offset and a stride (x[:, :, a::s, b::t]): read as the "
                        "depthwise Conv '" + made.name + "' of weight 1 at one tap and that stride (trainable; PyTorch's slice has "
                        "no parameters)");
}

void Importer::split(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    if (m_views.count(n.input(0))) failNode(n, "splits a view " + shapeString(m_views.at(n.input(0))) + " of the images; only [N, C, ...] is split");
    const Shape& s = shapeOf(x);
    const auto rank = static_cast<std::int64_t>(s.size() + 1);
    const std::int64_t given = attrInt(n, "axis", 0), axis = given < 0 ? given + rank : given;
    if (axis != 1)
        failNode(n, "splits axis " + std::to_string(given) + " of " + shapeString(s) +
                        " images; QuantScope reads a Split of the channels only (x.chunk(k, 1), x.split(sizes, 1))");
    std::vector<std::int64_t> sizes = attrInts(n, "split");
    if (m_opset >= 13 && has(n, 1)) {
        const ConstTensor& t = constant(n, 1, "split");
        if (t.isFloat) failNode(n, "split is not integer", false);
        sizes = t.i;
    }
    const std::size_t C = s[0];
    if (sizes.empty()) { // equal parts, the last one smaller when they do not divide C (opset 18)
        const std::int64_t k = m_opset >= 18 ? attrInt(n, "num_outputs", n.output_size()) : n.output_size();
        if (k < 1 || k > static_cast<std::int64_t>(C)) failNode(n, "splits " + std::to_string(C) + " channels into " + std::to_string(k) + " parts", false);
        const auto part = static_cast<std::int64_t>((C + static_cast<std::size_t>(k) - 1) / static_cast<std::size_t>(k));
        for (std::int64_t i = 0, left = static_cast<std::int64_t>(C); i < k; ++i, left -= part) sizes.push_back(std::min(part, left));
    }
    std::uint64_t total = 0;
    bool ok = sizes.size() == static_cast<std::size_t>(n.output_size());
    for (std::int64_t v : sizes) {
        ok = ok && v >= 0 && static_cast<std::uint64_t>(v) <= C; // each part within the channels: no overflow below
        if (ok) total += static_cast<std::uint64_t>(v);
    }
    if (!ok || total != C)
        failNode(n, "splits " + std::to_string(C) + " channels into parts " + listOf(sizes) + " for " + std::to_string(n.output_size()) +
                        " outputs; the parts must add up to the channels, one per output", false);
    std::size_t begin = 0;
    for (int k = 0; k < n.output_size(); ++k) {
        const auto size = static_cast<std::size_t>(sizes[static_cast<std::size_t>(k)]);
        if (size > 0 && !n.output(k).empty() && m_uses[n.output(k)] > 0)
            addChannelSlice(n, x, begin, begin + size, k, n.output_size() > 1 ? "." + std::to_string(k) : "");
        begin += size;
    }
}

bool Importer::shuffleReshape(const NodeProto& n, const Shape& per)
{
    const Value& v = value(n, 0);
    if (v.kind == Value::Kind::Grouped) {
        const Shape& images = shapeOf(v.act);
        if (!v.transposed)
            failNode(n, "reshapes the channels viewed as " + std::to_string(v.groups) +
                            " groups again before a Transpose; QuantScope reads such a view only as a channel shuffle: "
                            "x.view(N, g, C // g, H, W), .transpose(1, 2), .reshape(N, C, H, W)");
        if (per != images)
            failNode(n, "reshapes a channel shuffle's transposed view to " + (per.empty() ? std::string("a shape without the batch") : shapeString(per)) +
                            " per image; a channel shuffle ends in the images' own shape " + shapeString(images));
        StoredLayer l;
        l.kind = LayerKind::ChannelShuffle;
        l.groups = v.groups;
        addLayer(n, std::move(l), images, {v.act});
        return true;
    }
    // Its first step: the channels of [C, ...] images viewed as [g, C / g, ...], g and C / g >= 2.
    if (v.kind != Value::Kind::Act || m_views.count(n.input(0)) || per.size() < 2) return false;
    const Shape& s = shapeOf(v.act);
    if (s.empty() || per[0] < 2 || per[1] < 2 || per[0] * per[1] != s[0]) return false;
    Value g;
    g.kind = Value::Kind::Grouped;
    g.act = v.act;
    g.groups = per[0];
    g.rank = per.size() + 1;
    define(n, g);
    return true;
}

void Importer::transpose(const NodeProto& n)
{
    const Value& v = value(n, 0);
    if (m_channelsLastInput && (n.input(0) == m_inputName || m_inputCasts.count(n.input(0)))) { // [N, H, W, C] to [N, C, H, W]: the input as read
        alias(n, v.act);
        return;
    }
    const std::vector<std::int64_t> perm = attrInts(n, "perm");
    if (m_channelsLast.count(n.input(0))) { // x.permute(0, 2, 3, 1).permute(0, 3, 1, 2): the maps as they were
        if (perm != std::vector<std::int64_t>{0, 3, 1, 2})
            failNode(n, "perm = " + listOf(perm) + " on maps permuted to channels-last; QuantScope reads only perm [0, 3, 1, 2] there, "
                        "which permutes them back");
        return alias(n, v.act);
    }
    // x.permute(0, 2, 3, 1) of [C, H, W] maps, as a model ported from Keras does before flattening:
    // the activation stays channels-first and the value is marked (m_channelsLast).
    if (v.kind == Value::Kind::Act && shapeOf(v.act).size() == 3 && viewedShape(n, 0, v.act) == shapeOf(v.act) &&
        perm == std::vector<std::int64_t>{0, 2, 3, 1}) {
        alias(n, v.act);
        if (n.output_size() > 0 && !n.output(0).empty()) m_channelsLast[n.output(0)] = shapeOf(v.act);
        return;
    }
    const std::string shuffle = "QuantScope reads Transpose inside a channel shuffle (x.view(N, g, C // g, H, W), "
                                ".transpose(1, 2), .reshape(N, C, H, W)) and as x.permute(0, 2, 3, 1) of [C, H, W] maps "
                                "before a flatten into a Linear";
    if (v.kind != Value::Kind::Grouped || v.transposed) {
        if (v.kind == Value::Kind::Act) failNode(n, "permutes the axes of " + shapeString(shapeOf(v.act)) + " images by perm " + listOf(perm) + "; " + shuffle);
        failNode(n, shuffle);
    }
    std::vector<std::int64_t> want{0, 2, 1};
    for (std::size_t d = 3; d < v.rank; ++d) want.push_back(static_cast<std::int64_t>(d));
    if (perm != want) failNode(n, "perm = " + listOf(perm) + " on the channels viewed as " + std::to_string(v.groups) + " groups; " + shuffle + " (perm " + listOf(want) + ")");
    Value t = v;
    t.transposed = true;
    define(n, t);
}

namespace {
// Operators of one activation that act on each value alone: they commute with any reordering
// of the values, so they read and pass on channels-last maps and features (m_channelsLast).
const std::set<std::string>& elementwiseOps()
{
    static const std::set<std::string> ops = {"Relu", "Clip", "Dropout", "Identity", "Cast", "Sigmoid", "Tanh",
                                              "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Gelu"};
    return ops;
}
} // namespace

void Importer::checkChannelsLast(const NodeProto& n) const
{
    for (int i = 0; i < n.input_size(); ++i) {
        const auto it = m_channelsLast.find(n.input(i));
        if (it == m_channelsLast.end()) continue;
        const std::string& op = n.op_type();
        const bool flat = shapeOf(m_values.at(n.input(i)).act).size() == 1;
        if (i == 0 && (elementwiseOps().count(op) || op == "Shape")) continue;
        if (i == 0 && flat && (op == "Gemm" || op == "MatMul")) continue;
        if (i == 0 && !flat && (op == "Flatten" || op == "Reshape" || op == "Transpose")) continue;
        // nn.LayerNorm(C) and nn.Linear on each pixel's channels, as ConvNeXt blocks (torchvision's CNBlock) write them
        if (i == 0 && !flat && (op == "LayerNormalization" || op == "MatMul")) continue;
        if (!flat && (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") && n.input_size() == 2) {
            const Value& other = value(n, 1 - i);
            // a constant (permuted by constantsChannelsFirst), or two such maps joined element by element
            if (other.kind == Value::Kind::Const || m_channelsLast.count(n.input(1 - i))) continue;
        }
        failNode(n, "reads '" + n.input(i) + "', " + (flat ? "the features of " : "") + shapeString(it->second) +
                        " maps permuted to channels-last (x.permute(0, 2, 3, 1))" + (flat ? " and flattened" : "") +
                        "; QuantScope reads such maps flattened (.flatten(1), .reshape(N, -1)) into a Linear, or, as a ConvNeXt "
                        "block computes on them, through nn.LayerNorm over the channels (LayerNormalization, or its subgraph over "
                        "the last axis), nn.Linear on the channels (MatMul), element-wise activations, constants added or "
                        "multiplied, and back to channels-first (perm [0, 3, 1, 2])");
    }
}

void Importer::propagateChannelsLast(const NodeProto& n)
{
    if (n.input_size() < 1 || n.output_size() < 1 || n.output(0).empty()) return;
    const std::string& op = n.op_type();
    if (elementwiseOps().count(op)) {
        const auto it = m_channelsLast.find(n.input(0));
        if (it == m_channelsLast.end()) return;
        const auto in = m_values.find(n.input(0));
        const auto out = m_values.find(n.output(0));
        if (in == m_values.end() || out == m_values.end() || out->second.kind != Value::Kind::Act ||
            shapeOf(out->second.act) != shapeOf(in->second.act))
            failNode(n, "does not keep the shape of the channels-last maps it reads");
        m_channelsLast[n.output(0)] = it->second;
        return;
    }
    // Layers on the channels of each pixel make channels-last maps of their own shape (a Linear
    // reading flattened channels-last features makes features in no permuted order).
    const bool perPixel = op == "LayerNormalization" || op == "MatMul" || op == "Add" || op == "Sub" || op == "Mul" || op == "Div";
    const auto onMaps = [&](const std::string& v) {
        const auto it = m_channelsLast.find(v);
        return it != m_channelsLast.end() && shapeOf(m_values.at(v).act).size() == 3;
    };
    if (!perPixel || !std::any_of(n.input().begin(), n.input().end(), onMaps)) return;
    const auto out = m_values.find(n.output(0));
    if (out == m_values.end() || out->second.kind != Value::Kind::Act || shapeOf(out->second.act).size() != 3)
        failNode(n, "does not make channels-last maps from the channels-last maps it reads");
    m_channelsLast[n.output(0)] = shapeOf(out->second.act);
}

bool Importer::constantsChannelsFirst(const NodeProto& n, NodeProto& out)
{
    const std::string& op = n.op_type();
    if ((op != "Add" && op != "Sub" && op != "Mul" && op != "Div") || n.input_size() != 2) return false;
    for (int i = 0; i < 2; ++i) {
        const auto cl = m_channelsLast.find(n.input(i));
        if (cl == m_channelsLast.end() || cl->second.size() != 3) continue;
        const Value& other = value(n, 1 - i);
        if (other.kind != Value::Kind::Const) return false;
        const ConstTensor& c = other.c;
        if (c.dims.size() > 4) failNode(n, "broadcasts a constant of rank " + std::to_string(c.dims.size()) + " against [N, H, W, C] maps", false);
        // [n, h, w, c], right-aligned, to [n, c, h, w]
        std::array<std::int64_t, 4> d{1, 1, 1, 1};
        std::copy(c.dims.begin(), c.dims.end(), d.begin() + static_cast<std::ptrdiff_t>(4 - c.dims.size()));
        ConstTensor p = c;
        p.dims = {d[0], d[3], d[1], d[2]};
        const auto nd = static_cast<std::size_t>(d[0]), hd = static_cast<std::size_t>(d[1]), wd = static_cast<std::size_t>(d[2]),
                   cd = static_cast<std::size_t>(d[3]);
        const auto move = [&](auto& dst, const auto& src) {
            for (std::size_t a = 0; a < nd; ++a)
                for (std::size_t h = 0; h < hd; ++h)
                    for (std::size_t w = 0; w < wd; ++w)
                        for (std::size_t k = 0; k < cd; ++k) dst[((a * cd + k) * hd + h) * wd + w] = src[((a * hd + h) * wd + w) * cd + k];
        };
        if (c.isFloat) move(p.f, c.f);
        else move(p.i, c.i);
        out = n;
        const std::string name = n.input(1 - i) + "#channels_first@" + n.name() + "#" + std::to_string(m_values.size());
        out.set_input(1 - i, name);
        Value v;
        v.c = std::move(p);
        m_values[name] = std::move(v);
        return true;
    }
    return false;
}

void Importer::matMulChannelsLast(const NodeProto& n, std::size_t x)
{
    const Shape s = shapeOf(x); // a copy: addLayer adds a shape
    const ConstTensor& bt = constant(n, 1, "the weight");
    if (bt.dims.size() != 2) failNode(n, "the weight has rank " + std::to_string(bt.dims.size()) + ", expected 2 (nn.Linear on each pixel's channels)", false);
    const auto in = static_cast<std::size_t>(bt.dims[0]), out = static_cast<std::size_t>(bt.dims[1]);
    if (in != s[0] || out < 1)
        failNode(n, "the weight " + listOf(bt.dims) + " does not take the " + std::to_string(s[0]) + " channels of each pixel of " +
                        shapeString(s) + " maps", false);
    const std::vector<float>& bv = floats(n, bt, "the weight");
    checkWeightCount(n.name(), "Linear " + std::to_string(in) + " -> " + std::to_string(out), {in, out});
    std::vector<float> w(in * out);
    for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) w[o * in + i] = bv[i * out + o];
    m_channelsLastLinears.push_back(addLayer(n, pointwiseConv(in, out, std::move(w)), {out, s[1], s[2]}, {x}, &bt).name);
}

void Importer::permuteChannelsLastColumns(const NodeProto& n, std::vector<float>& w, std::size_t out)
{
    const auto it = m_channelsLast.find(n.input(0));
    if (it == m_channelsLast.end()) return;
    const std::size_t C = it->second[0], HW = it->second[1] * it->second[2], in = C * HW;
    if (w.size() != out * in) failNode(n, "the weight does not take the " + std::to_string(in) + " features of " + shapeString(it->second) + " maps", false);
    // column (h W + x) C + c of the channels-last order is column c H W + h W + x of the activation's
    std::vector<float> p(w.size());
    for (std::size_t o = 0; o < out; ++o)
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t q = 0; q < HW; ++q) p[o * in + c * HW + q] = w[o * in + q * C + c];
    w = std::move(p);
    m_m.notes.push_back(n.op_type() + " " + onnxNodeName(n) + " reads the features of " + shapeString(it->second) +
                        " maps that forward permuted to channels-last (x.permute(0, 2, 3, 1)) before flattening: the maps stay "
                        "channels-first here and the Linear's weight columns are reordered to match (the same outputs)");
}

} // namespace quantscope::onnximport

namespace quantscope::onnximport {

// Zeros added before and after the channels of maps (F.pad(x, (0, 0, 0, 0, p, p)), a CIFAR ResNet's
// option A shortcut): a 1x1 Conv C -> before + C + after without bias whose weight is the identity
// placed at channel `before`, zero rows around it, exact in float and in per-channel int8. After
// x[:, :, ::2, ::2] (subsample) that nothing else reads, the two are one layer: the strided
// depthwise Conv becomes this Conv with its stride.
void Importer::padChannels(const NodeProto& n, std::size_t x, std::size_t before, std::size_t after)
{
    const Shape s = shapeOf(x); // a copy: addLayer adds a shape
    const std::size_t C = s.at(0), out = before + C + after;
    const auto sub = m_subsampleLayers.find(x);
    const bool merges = sub != m_subsampleLayers.end() && x == m_m.layers.size() && readersOf(x) == 1;
    const std::size_t taps = merges ? (sub->second[0] + 1) * (sub->second[2] + 1) : 1; // the strided Conv's kernel
    if (out * C * taps > (std::size_t{1} << 24))
        failNode(n, "pads " + std::to_string(C) + " channels to " + std::to_string(out) + ", a layer of more than 2^24 weights", false);
    const std::string what = "pads the channels with zeros (" + std::to_string(before) + " before, " + std::to_string(after) + " after): read as ";
    const char* why = " (trainable; PyTorch's padding has no parameters)";
    // The identity at channel `before`, each weight one-hot at tap (th, tw) of a kh x kw kernel.
    const auto identity = [&](std::size_t kh, std::size_t kw, std::size_t th, std::size_t tw) {
        std::vector<float> w(out * C * kh * kw, 0.0f);
        for (std::size_t c = 0; c < C; ++c) w[(((before + c) * C + c) * kh + th) * kw + tw] = 1.0f;
        return w;
    };
    if (merges) {
        const std::array<std::size_t, 4> o = sub->second;
        StoredLayer& l = m_m.layers[x - 1];
        const std::size_t counted = l.tensors.at(0).values.size();
        l.outChannels = out;
        l.groups = 1;
        l.tensors.at(0) = floatTensor("weight", {out, C, o[0] + 1, o[2] + 1}, identity(o[0] + 1, o[2] + 1, o[0], o[2]));
        m_shapes[x][0] = out;
        m_subsampleLayers.erase(sub);
        m_m.importAddedParams += l.tensors.at(0).values.size() - counted; // the strided Conv's weights were counted
        m_m.notes.push_back("Pad " + onnxNodeName(n) + " " + what + "the strided Conv '" + l.name + "' before it, now a Conv " +
                            std::to_string(C) + " -> " + std::to_string(out) + " with identity weights" + why);
        return alias(n, x);
    }
    const StoredLayer& made = addLayer(n, pointwiseConv(C, out, identity(1, 1, 0, 0)), {out, s[1], s[2]}, {x});
    m_m.importAddedParams += out * C;
    m_m.notes.push_back("Pad " + onnxNodeName(n) + " " + what + "the 1x1 Conv '" + made.name + "' " + std::to_string(C) + " -> " +
                        std::to_string(out) + " with identity weights" + why);
}

} // namespace quantscope::onnximport
