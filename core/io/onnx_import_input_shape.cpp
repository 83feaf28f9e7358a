// The ONNX importer's reading of the graph's inputs: the initializers (decoded into constants) and
// the one image input, float32 (or uint8 pixels that the graph casts to float32 first) [N, C, H, W] (a dynamic batch, height or width read at the size
// asked for, or the default side), [N, H, W] grayscale images, [N, H, W, C] images the first node
// permutes to [N, C, H, W], or [N, C*H*W] flattened images, read as square images behind a first
// layer input_flatten; and the dimensions a graph declares (checkDims: the input's and the
// output's). Split from onnx_import.cpp, which holds the graph checks and the walk.
#include "io/onnx_importer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace quantscope::onnximport {

namespace {

constexpr std::int64_t kMaxInputChannels = 64, kMaxInputSide = 4096;

} // namespace

void Importer::readInput()
{
    const onnx::GraphProto& g = m_mp.graph();
    std::set<std::string> inits;
    for (const onnx::TensorProto& t : g.initializer()) {
        if (!inits.insert(t.name()).second) fail("initializer '" + t.name() + "' is defined twice");
        Value v;
        try {
            v.c = decodeTensor(t);
        } catch (const FoldError& e) {
            fail("initializer " + e.what, e.config);
        }
        m_values[t.name()] = std::move(v);
        if (const std::string m = parameterModule(t.name()); !m.empty() && t.name() == m + ".weight") m_moduleNames.insert(m);
    }
    if (g.sparse_initializer_size() > 0) fail("sparse initializers are not read", true);
    const onnx::ValueInfoProto* in = nullptr;
    std::size_t extra = 0; // graph inputs past the first that are not initializers
    std::string extraName;
    for (const onnx::ValueInfoProto& v : g.input()) {
        if (inits.count(v.name())) continue; // older exporters list initializers as inputs too
        if (!in) in = &v;
        else if (extra++ == 0) extraName = v.name();
    }
    if (extra > 0) {
        // torch.onnx.export(..., export_params=False) leaves every weight a graph input: no initializers at all
        if (inits.empty())
            fail("the graph has " + std::to_string(extra + 1) + " inputs and no initializers: the weights are not in the file "
                 "(exported with export_params=False?); re-export with the parameters",
                 true);
        fail("the graph has several inputs ('" + in->name() + "', '" + extraName + "'); QuantScope models take one image tensor", true);
    }
    if (!in) fail("the graph has no input (every graph input is an initializer)", true);
    m_inputName = in->name();
    if (!in->type().has_tensor_type()) fail("input '" + m_inputName + "' is not a tensor");
    const auto& tt = in->type().tensor_type();
    if (tt.elem_type() == onnx::TensorProto::FLOAT16 || tt.elem_type() == onnx::TensorProto::BFLOAT16)
        // Not "the model computes in half precision": an fp16 input cast straight to float feeds a
        // float32 model, and was refused with that sentence.
        fail("input '" + m_inputName + "' has element type " + elemTypeName(tt.elem_type()) +
                 "; QuantScope's models take float32 images (or uint8 pixels): export with a float32 example input, after "
                 "model.float() if the model was halved (its weights may stay " + elemTypeName(tt.elem_type()) +
                 " behind a Cast to float)",
             true);
    // uint8 pixels (an export of a model whose forward starts with x.float()): QuantScope's [0, 1]
    // pixels times 255 are those bytes, exactly; read through a Cast to float32 (or by Shape),
    // before or after operators that only move them (x.permute(0, 3, 1, 2).float() of OpenCV's
    // [N, H, W, 3] arrays, x.unsqueeze(1).float(): exact on bytes as on floats; tester 20).
    m_inputBytes = tt.elem_type() == onnx::TensorProto::UINT8;
    m_inputCasts.clear();
    if (m_inputBytes) {
        static const std::set<std::string> kMovesOnly = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"};
        std::vector<std::string> bytes{m_inputName}; // values that hold the bytes still
        std::set<std::string> seen;
        while (!bytes.empty()) {
            const std::string b = bytes.back();
            bytes.pop_back();
            if (!seen.insert(b).second) continue;
            for (const NodeProto& n : g.node())
                for (int i = 0; i < n.input_size(); ++i) {
                    if (n.input(i) != b) continue;
                    const bool toFloat = n.op_type() == "Cast" && attrInt(n, "to", 0) == onnx::TensorProto::FLOAT;
                    if (i == 0 && (n.op_type() == "Shape" || toFloat)) {
                        if (toFloat && b == m_inputName && n.output_size() > 0) m_inputCasts.insert(n.output(0));
                    } else if (i == 0 && kMovesOnly.count(n.op_type()) && n.output_size() > 0) {
                        bytes.push_back(n.output(0));
                    } else {
                        failNode(n, "reads the uint8 input '" + m_inputName + "' as it is; QuantScope reads uint8 pixels through a Cast "
                                    "to float32 (x.float() in forward), before or after operators that only move them (permute, "
                                    "unsqueeze, view)");
                    }
                }
        }
    } else if (tt.elem_type() != onnx::TensorProto::FLOAT) {
        fail("input '" + m_inputName + "' has element type " + elemTypeName(tt.elem_type()) +
                 ", not float32 (or uint8 pixels)" +
                 (tt.elem_type() == onnx::TensorProto::DOUBLE ? ": re-export after model.float(), with a float32 example input" : ""),
             true);
    }
    // A shape is optional in ONNX, and a dimension may be unknown (neither a size nor a name), as
    // tools that strip or rewrite shapes leave them. What the input's reader takes gives the count
    // QuantScope needs: a Conv's weight its channels, a Gemm's or MatMul's its features; H and W are
    // then read as dynamic ones, at the data's size (tester 20 L3).
    onnx::TensorShapeProto inferred;
    const onnx::TensorShapeProto* declared = tt.has_shape() ? &tt.shape() : nullptr;
    if (declared) checkDims(*declared, "input '" + m_inputName + "'");
    const int rank = declared ? declared->dim_size() : -1;
    // Only where a count is missing (C's axis 1, or 3 for channels-last images; the features' 1).
    const bool countMissing = rank < 0 || ((rank == 4 || rank == 2) && !declared->dim(1).has_dim_value()) ||
                              (rank == 4 && !declared->dim(3).has_dim_value());
    if (countMissing) {
        const ReaderCount rc = countFromReader();
        const int axis = rc.channelsLast ? 3 : 1; // of the count
        const bool fits = rc.count > 0 && (rank < 0 || (rank == 4) == !rc.flat);
        // A damaged file is named as such whether the input declares its rank or nothing.
        if (!fits && (!declared || (rc.damaged && !declared->dim(1).has_dim_value())))
            fail("input '" + m_inputName + "' " + (declared ? "does not give its channel count" : "declares no shape") + ", and " +
                     (rc.why.empty() ? std::string("its readers do not give it (a Conv's weight gives the channels, a Gemm's or MatMul's the features)")
                                     : rc.why) +
                     (rc.damaged ? std::string() : ": re-export with the input's shape ([N, C, H, W], or [N, features] for a flat input)"),
                 !rc.damaged);
        if (fits && (!declared || !declared->dim(axis).has_dim_value())) {
            for (int i = 0; i < (rc.flat ? 2 : 4); ++i) {
                auto* d = inferred.add_dim();
                if (i == axis) d->set_dim_value(rc.count);
                else if (declared) d->CopyFrom(declared->dim(i));
            }
            const std::string k = std::to_string(rc.count);
            m_m.notes.push_back("the input '" + m_inputName + "' " +
                                (declared ? "does not give its " + std::string(rc.flat ? "feature count" : "channel count")
                                          : std::string("declares no shape")) +
                                ": it is read as " +
                                (rc.flat           ? "[N, " + k + "]"
                                 : rc.channelsLast ? "[N, H, W, " + k + "] (channels-last)"
                                                   : "[N, " + k + ", H, W]") +
                                ", from the weight of its reader, " +
                                rc.reader);
            declared = &inferred;
        }
    }
    const auto& shape = *declared;
    if (shape.dim_size() == 2) return readFlatInput(shape);
    // [N, H, W]: grayscale images without their channel axis (an MNIST model whose forward starts
    // with x.unsqueeze(1) or x.view(N, -1)), read as [N, 1, H, W] under an [H, W] view (m_views),
    // which only what reshapes or keeps the values' order reads.
    const bool grayscale = shape.dim_size() == 3;
    // [N, H, W, C]: channels-last images that the graph's first node makes [N, C, H, W] with
    // x.permute(0, 3, 1, 2) (a Transpose of perm [0, 3, 1, 2], what every reader of the input must
    // be): read as the images after it, the data's own layout, and the Transpose as the input.
    m_channelsLastInput = false;
    if (shape.dim_size() == 4) {
        bool any = false, onlyPermute = true;
        for (const NodeProto& n : g.node())
            for (const std::string& v : n.input())
                if ((v == m_inputName && !(n.output_size() > 0 && m_inputCasts.count(n.output(0)))) || m_inputCasts.count(v)) {
                    any = true; // what reads the input, or the pixels a uint8 input's x.float() makes
                    onlyPermute = onlyPermute && n.op_type() == "Transpose" && attrInts(n, "perm") == std::vector<std::int64_t>{0, 3, 1, 2};
                }
        m_channelsLastInput = any && onlyPermute;
    }
    if (shape.dim_size() != 4 && !grayscale)
        fail("input '" + m_inputName + "' has rank " + std::to_string(shape.dim_size()) +
                 "; an image model takes [N, C, H, W], [N, H, W] for grayscale images, or [N, C*H*W] for a model of "
                 "flattened images",
             true);
    if (shape.dim(0).has_dim_value()) m_staticBatch = shape.dim(0).dim_value();
    const char* names[] = {"N", "C", "H", "W"};
    std::size_t d[4] = {0, 1, 0, 0};
    std::string dynamicDims; // "H ('height') and W ('width')"
    // the input's axis of each of C, H and W
    const int axisOf[4] = {0, grayscale ? -1 : m_channelsLastInput ? 3 : 1, grayscale ? 1 : m_channelsLastInput ? 1 : 2,
                           grayscale ? 2 : m_channelsLastInput ? 2 : 3};
    for (int i = grayscale ? 2 : 1; i < 4; ++i) {
        const auto& dim = shape.dim(axisOf[i]);
        if (!dim.has_dim_value() && i == 1)
            fail("input '" + m_inputName + "' dimension " + std::to_string(axisOf[1]) + " (C, the channels) is dynamic" +
                 (dim.has_dim_param() ? " ('" + dim.dim_param() + "')" : "") + "; only the batch, height and width may be; re-export with a fixed channel count",
                 true);
        std::int64_t v = dim.has_dim_value() ? dim.dim_value() : 0;
        if (!dim.has_dim_value()) {
            // dynamic_axes on H or W: read at the size asked for (the data's), else the default.
            const std::size_t asked = i == 2 ? m_options.height : m_options.width;
            v = static_cast<std::int64_t>(asked ? asked : d[1] == 3 ? kOnnxDefaultImageSide3 : kOnnxDefaultImageSide1);
            dynamicDims += std::string(dynamicDims.empty() ? "" : " and ") + names[i] + (dim.has_dim_param() ? " ('" + dim.dim_param() + "')" : "");
        }
        if (v < 1 || v > (i == 1 ? kMaxInputChannels : kMaxInputSide))
            fail("input '" + m_inputName + "' dimension " + std::to_string(axisOf[i]) + " (" + names[i] + ") is " + std::to_string(v) +
                 ", out of range: QuantScope reads 1 to " + std::to_string(i == 1 ? kMaxInputChannels : kMaxInputSide) +
                 (i == 1 ? " channels" : " pixels a side"),
                 v > 0); // past QuantScope's limit: a ConfigError (exit 2); a size below 1 is a damaged file
        d[i] = static_cast<std::size_t>(v);
    }
    // dynamic_axes naming H and W alike ({2: 's', 3: 's'}) says they are equal: a square model.
    const auto& hd = shape.dim(axisOf[2]);
    const auto& wd = shape.dim(axisOf[3]);
    if (hd.has_dim_param() && wd.has_dim_param() && !hd.has_dim_value() && !wd.has_dim_value() && hd.dim_param() == wd.dim_param() &&
        d[2] != d[3])
        fail("input '" + m_inputName + "' names its H and W alike ('" + hd.dim_param() + "'), so its images are square; it cannot be read at " +
                 std::to_string(d[2]) + "x" + std::to_string(d[3]) + " (--resize to a square size, such as " + std::to_string(std::max(d[2], d[3])) +
                 "x" + std::to_string(std::max(d[2], d[3])) + ")",
             true);
    m_m.channels = d[1];
    m_m.height = d[2];
    m_m.width = d[3];
    if (!dynamicDims.empty()) {
        m_info.dynamicImageSize = m_m.dynamicImageSize = true;
        m_info.channels = d[1];
        m_info.height = d[2];
        m_info.width = d[3];
        m_info.dynamicDims = dynamicDims;
        const bool asked = m_options.height || m_options.width;
        // A side the graph fixes keeps its size, whatever was asked (tester 18 #2): say so.
        std::string fixed;
        if (asked && hd.has_dim_value() && m_options.height && m_options.height != d[2])
            fixed = "its H is fixed at " + std::to_string(d[2]);
        if (asked && wd.has_dim_value() && m_options.width && m_options.width != d[3])
            fixed = "its W is fixed at " + std::to_string(d[3]);
        m_m.notes.push_back("the input '" + m_inputName + "' has a dynamic " + dynamicDims + ": the model is read at " + std::to_string(d[2]) +
                            "x" + std::to_string(d[3]) +
                            (!asked           ? " (train, eval and analyze read it at their data's size)"
                             : fixed.empty() ? ", the size asked for"
                                             : " (" + fixed + "; " + std::to_string(m_options.height) + "x" + std::to_string(m_options.width) +
                                                   " was asked for)"));
    }
    m_shapes = {{d[1], d[2], d[3]}};
    Value v;
    v.kind = Value::Kind::Act;
    v.act = 0;
    m_values[m_inputName] = v;
    if (m_channelsLastInput)
        m_m.notes.push_back("the input '" + m_inputName + "' [N, " + std::to_string(d[2]) + ", " + std::to_string(d[3]) + ", " +
                            std::to_string(d[1]) + "] is channels-last; the graph permutes it to [N, C, H, W] first, and it is read as " +
                            std::to_string(d[1]) + "x" + std::to_string(d[2]) + "x" + std::to_string(d[3]) + " images");
    if (grayscale) {
        m_views[m_inputName] = {d[2], d[3]};
        m_m.notes.push_back("the input '" + m_inputName + "' [N, " + std::to_string(d[2]) + ", " + std::to_string(d[3]) +
                            "] is read as 1x" + std::to_string(d[2]) + "x" + std::to_string(d[3]) + " grayscale images");
    }
}

// The count the input's readers take, from their weights: a Conv's channels (weight [M, C/group,
// kH, kW] times group), a Gemm's (B [K, N], or [N, K] under transB) or a MatMul's (B [K, N])
// features. A reader reads the input through ops that keep its channels: a Cast (uint8 pixels),
// Identity, element-wise activations, arithmetic (the graph's own normalisation), a Pad (less the
// channels it pads), copies along the channels (Concat, Tile: divided out), and the Transpose of
// perm [0, 3, 1, 2] of channels-last images as the input's first op (then channelsLast). The weight is an initializer or a Constant node, or one behind
// Cast, Identity and Transpose nodes. count 0 when none gives it; `why` then says what was found
// (a reader's weight that is not a constant, or readers that disagree), and `damaged` marks a
// broken file (a weight no node defines, a weight of the wrong rank).
Importer::ReaderCount Importer::countFromReader() const
{
    constexpr std::int64_t kMaxCount = std::int64_t{1} << 24; // no products of file values overflow below it
    const auto sane = [](std::int64_t v) { return v >= 0 && v <= kMaxCount; };
    static const std::set<std::string> kKeepsChannels = {
        "Cast",  "Identity",  "Sub",         "Div",      "Mul",     "Add",      "Relu",     "Clip",
        "Sigmoid", "Tanh",    "Neg",         "Abs",      "Pad",     "LeakyRelu", "Elu",     "Selu",
        "Celu",  "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Exp",     "Log",      "Erf",
        "Sqrt",  "Reciprocal", "Pow",        "Max",      "Min",     "PRelu",    "Dropout",  "Gelu",
        "Mish",  "ThresholdedRelu", "Floor", "Ceil",     "Round",   "BatchNormalization"};
    const onnx::GraphProto& g = m_mp.graph();
    const auto producer = [&](const std::string& name) -> const NodeProto* {
        for (const NodeProto& n : g.node())
            for (const std::string& o : n.output())
                if (o == name) return &n;
        return nullptr;
    };
    // A constant's value: an initializer, or a Constant node's (decoded here: readInput runs
    // before the walk folds them); empty when it is neither, or does not decode.
    const auto constant = [&](const std::string& name) -> std::optional<ConstTensor> {
        if (const auto it = m_values.find(name); it != m_values.end() && it->second.kind == Value::Kind::Const) return it->second.c;
        const NodeProto* from = producer(name);
        if (!from || from->op_type() != "Constant") return std::nullopt;
        for (const onnx::AttributeProto& a : from->attribute())
            if (a.name() == "value" && a.has_t()) try {
                    return decodeTensor(a.t());
                } catch (const FoldError&) {
                    return std::nullopt;
                }
        return std::nullopt;
    };
    // A weight's dimensions, through Cast, Identity and Transpose (a bias-free nn.Linear exported
    // without constant folding reads its weight through a Transpose); empty when not a constant.
    const auto constDims = [&](std::string name) -> std::optional<std::vector<std::int64_t>> {
        std::vector<std::vector<std::int64_t>> perms; // Transposes met, outermost first
        for (int hops = 0; hops < 8; ++hops) {
            if (std::optional<ConstTensor> c = constant(name)) {
                std::vector<std::int64_t> dims = c->dims;
                for (auto it = perms.rbegin(); it != perms.rend(); ++it) {
                    std::vector<std::int64_t> p = *it, out(dims.size());
                    if (p.empty())
                        for (std::size_t k = 0; k < dims.size(); ++k) p.push_back(static_cast<std::int64_t>(dims.size() - 1 - k));
                    if (p.size() != dims.size()) return dims; // a Transpose that does not fit: the rank check names it
                    for (std::size_t k = 0; k < p.size(); ++k) {
                        if (p[k] < 0 || p[k] >= static_cast<std::int64_t>(dims.size())) return std::nullopt;
                        out[k] = dims[static_cast<std::size_t>(p[k])];
                    }
                    dims = out;
                }
                return dims;
            }
            const NodeProto* from = producer(name);
            if (!from || from->input_size() < 1) return std::nullopt;
            if (from->op_type() == "Transpose") perms.push_back(attrInts(*from, "perm"));
            else if (from->op_type() != "Cast" && from->op_type() != "Identity") return std::nullopt;
            name = from->input(0);
        }
        return std::nullopt;
    };
    // The channels a Pad adds (zeros padded to the channels: a CIFAR ResNet's option A, 1 -> 3
    // channels for an RGB stem); -1 when it pads the batch, 0 when its pads are not known here.
    const auto channelsPadded = [&](const NodeProto& n) -> std::int64_t {
        std::vector<std::int64_t> pads = attrInts(n, "pads"); // opsets below 11
        if (pads.empty() && n.input_size() > 1)
            if (std::optional<ConstTensor> c = constant(n.input(1)); c && !c->isFloat) pads = c->i;
        if (pads.size() % 2 != 0 || pads.size() < 4) return 0; // the reader's own check speaks
        const std::size_t rank = pads.size() / 2;
        if (pads[0] != 0 || pads[rank] != 0) return -1;
        return pads[1] + pads[rank + 1];
    };
    // Expand's shape (a constant of 4 entries, or ConstantOfShape's ones) leaves C as it is.
    const auto expandKeepsChannels = [&](const std::string& shape) {
        if (const std::optional<ConstTensor> c = constant(shape)) return !c->isFloat && c->i.size() == 4 && c->i[1] == 1;
        const NodeProto* from = producer(shape);
        if (!from || from->op_type() != "ConstantOfShape") return false;
        for (const onnx::AttributeProto& a : from->attribute())
            if (a.name() == "value" && a.has_t()) try {
                    const ConstTensor v = decodeTensor(a.t());
                    return v.numel() == 1 && (v.isFloat ? v.f[0] == 1.0f : v.i[0] == 1);
                } catch (const FoldError&) {
                    return false;
                }
        return false; // ONNX's default value is 0
    };
    // The values that hold the input's pixels (or their permute to [N, C, H, W]), each with its
    // channels as k C + added for the input's C: Pads add zeros to the channels, and copies of
    // grayscale images for an RGB stem (torch.cat([x, x, x], 1), x.repeat(1, 3, 1, 1)) multiply
    // them. Counts past kMaxCount are a damaged file's, which the reader's own check refuses.
    struct Channels {
        std::int64_t k = 1, added = 0;
    };
    std::map<std::string, Channels> reach{{m_inputName, {}}};
    bool permuted = false;
    for (bool grew = true; grew && reach.size() < 256;) {
        grew = false;
        for (const NodeProto& n : g.node()) {
            if (n.output_size() < 1 || reach.count(n.output(0))) continue;
            const auto in = std::find_if(n.input().begin(), n.input().end(), [&](const std::string& v) { return reach.count(v) > 0; });
            if (in == n.input().end()) continue;
            Channels c = reach.at(*in);
            // channels-last images: the permute must read the input itself (or its uint8 pixels' Cast),
            // as the reading of the input as channels-last (readInput) requires
            const bool toNchw = n.op_type() == "Transpose" && attrInts(n, "perm") == std::vector<std::int64_t>{0, 3, 1, 2} &&
                                n.input_size() > 0 && (n.input(0) == m_inputName || m_inputCasts.count(n.input(0)));
            if (n.op_type() == "Concat") {
                // copies of one value along the channels only
                if (attrInt(n, "axis", 0) != 1 ||
                    !std::all_of(n.input().begin(), n.input().end(), [&](const std::string& v) { return v == *in; }))
                    continue;
                c = {c.k * n.input_size(), c.added * n.input_size()};
            } else if (n.op_type() == "Tile") {
                const std::optional<ConstTensor> r = n.input_size() > 1 ? constant(n.input(1)) : std::nullopt;
                if (n.input(0) != *in || !r || r->isFloat || r->i.size() < 2 || r->i[0] != 1 ||
                    !sane(r->i[1]) || std::any_of(r->i.begin() + 2, r->i.end(), [](std::int64_t v) { return v != 1; }))
                    continue;
                c = {c.k * r->i[1], c.added * r->i[1]};
            } else if (n.op_type() == "Expand") {
                // x.repeat exports Expand(x, ones) before its Tile: channels kept when the shape's C is 1
                if (n.input(0) != *in || n.input_size() < 2 || !expandKeepsChannels(n.input(1))) continue;
            } else if (n.op_type() == "Pad") {
                const std::int64_t padded = channelsPadded(n);
                if (padded < 0 || !sane(padded)) continue;
                c.added += padded;
            } else if (!toNchw && !kKeepsChannels.count(n.op_type())) {
                continue;
            }
            if (!sane(c.k) || !sane(c.added)) continue;
            permuted = permuted || toNchw;
            reach.emplace(n.output(0), c);
            grew = true;
        }
    }
    ReaderCount found;
    std::string why;
    bool damaged = false;
    for (const NodeProto& n : g.node()) {
        const bool product = n.op_type() == "Conv" || n.op_type() == "Gemm" || n.op_type() == "MatMul";
        if (!product || n.input_size() < 2 || !reach.count(n.input(0))) continue;
        const std::string reader = "the " + n.op_type() + " " + onnxNodeName(n); // "the Conv '/conv1/Conv'"
        const std::optional<std::vector<std::int64_t>> w = constDims(n.input(1));
        const std::size_t wantRank = n.op_type() == "Conv" ? 4 : 2;
        if (w && std::any_of(w->begin(), w->end(), [&](std::int64_t v) { return !sane(v); })) continue; // refused by the reader
        if (!w || w->size() != wantRank) {
            if (!why.empty()) continue;
            if (!producer(n.input(1)) && !m_values.count(n.input(1))) {
                why = reader + " reads the weight '" + n.input(1) + "', which no node, initializer or input defines";
                damaged = true;
            } else if (w) {
                why = reader + "'s weight '" + n.input(1) + "' has rank " + std::to_string(w->size()) + ", not " + std::to_string(wantRank);
                damaged = true;
            } else {
                why = reader + "'s weight '" + n.input(1) + "' is not a constant";
            }
            continue;
        }
        ReaderCount rc;
        if (n.op_type() == "Conv")
            rc = {(*w)[1] * std::clamp<std::int64_t>(attrInt(n, "group", 1), 1, kMaxCount), false, permuted, {}, {}, false};
        else if (n.op_type() == "Gemm" && attrInt(n, "transA", 0) == 0)
            rc = {attrInt(n, "transB", 0) ? (*w)[1] : (*w)[0], true, false, {}, {}, false};
        else if (n.op_type() == "MatMul")
            rc = {(*w)[0], true, false, {}, {}, false};
        else
            continue;
        const Channels c = reach.at(n.input(0)); // the reader's count is k C + added
        if (c.k < 1 || (rc.count - c.added) % c.k != 0) continue;
        rc.count = (rc.count - c.added) / c.k;
        rc.reader = reader;
        if (rc.count < 1) continue;
        if (found.count > 0 && (found.count != rc.count || found.flat != rc.flat)) {
            const auto what = [](const ReaderCount& r) {
                return r.reader + " takes " + std::to_string(r.count) + (r.flat ? " features" : r.count == 1 ? " channel" : " channels");
            };
            return {0, false, false, {}, "its readers disagree: " + what(found) + ", " + what(rc), true};
        }
        if (found.count == 0) found = rc;
    }
    if (found.count == 0) {
        found.why = why;
        found.damaged = damaged;
    }
    return found;
}

// An ONNX dimension is a size >= 0 or a name (dim_param); a negative one is a damaged file, and a
// zero one (an empty tensor) no image model's: both refused by value and axis.
void Importer::checkDims(const onnx::TensorShapeProto& shape, const std::string& what) const
{
    const char* nchw[] = {"N, the batch", "C, the channels", "H", "W"};
    for (int i = 0; i < shape.dim_size(); ++i) {
        if (!shape.dim(i).has_dim_value() || shape.dim(i).dim_value() > 0) continue;
        const std::int64_t v = shape.dim(i).dim_value();
        const std::string axis = "dimension " + std::to_string(i) +
                                 (shape.dim_size() == 4 ? std::string(" (") + nchw[i] + ")" : i == 0 ? " (N, the batch)" : "");
        fail(what + " " + axis + " is " + std::to_string(v) +
             (v < 0 ? ": an ONNX dimension is a size >= 0 or a name (dim_param); a damaged file?"
                    : ": a tensor with no elements; QuantScope models take at least one image of at least one pixel"));
    }
}

// A model of flattened images (an MLP on [N, 784]): the image shape is the one square image of 1
// or 3 channels with that many values (784 -> 1 x 28 x 28, 3072 -> 3 x 32 x 32; never both, as
// 3 k^2 is not a square), and the model starts with the Flatten the caller did before the export.
void Importer::readFlatInput(const onnx::TensorShapeProto& shape)
{
    if (shape.dim(0).has_dim_value()) m_staticBatch = shape.dim(0).dim_value();
    const auto& dim = shape.dim(1);
    if (!dim.has_dim_value())
        fail("input '" + m_inputName + "' dimension 1 (the features) is dynamic" + (dim.has_dim_param() ? " ('" + dim.dim_param() + "')" : "") +
             "; re-export with a fixed input size",
             true);
    const std::int64_t f = dim.dim_value();
    if (f < 1 || f > kMaxInputChannels * kMaxInputSide * kMaxInputSide)
        fail("input '" + m_inputName + "' has " + std::to_string(f) + " features, out of range");
    std::size_t c = 0, side = 0;
    for (const std::int64_t ch : {1, 3}) {
        if (f % ch != 0) continue;
        const auto s = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(f / ch))));
        if (s * s == f / ch && s <= kMaxInputSide) {
            c = static_cast<std::size_t>(ch);
            side = static_cast<std::size_t>(s);
            break;
        }
    }
    if (c == 0)
        fail("input '" + m_inputName + "' is [N, " + std::to_string(f) + "]: a flat input is read as square images of 1 or 3 channels flattened, and " +
                 std::to_string(f) + " values are neither (export the model with an [N, C, H, W] input and a Flatten)",
             true);
    m_m.channels = c;
    m_m.height = m_m.width = side;
    m_shapes = {{c, side, side}};
    StoredLayer l;
    l.kind = LayerKind::Flatten;
    l.name = "input_flatten";
    l.inputs = {0};
    m_names.insert(l.name);
    m_m.layers.push_back(std::move(l));
    m_shapes.push_back({static_cast<std::size_t>(f)});
    m_inputAct = 1;
    m_info.flatInput = true;
    m_m.notes.push_back("the input [N, " + std::to_string(f) + "] is read as " + std::to_string(c) + "x" + std::to_string(side) + "x" +
                        std::to_string(side) + " images, flattened by a first layer input_flatten");
    Value v;
    v.kind = Value::Kind::Act;
    v.act = m_inputAct;
    m_values[m_inputName] = v;
}

} // namespace quantscope::onnximport
