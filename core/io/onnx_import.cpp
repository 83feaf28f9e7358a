// General FP32 ONNX import (see onnx_import.h). The graph is checked (one image input, the class
// scores among its outputs, every input defined, no cycle: onnx_import_graph.cpp), pruned to what
// the scores depend on, and walked in topological
// order. Every ONNX value becomes a Value: a constant (initializer, Constant, or folded), an
// activation index (0 = input, i + 1 = layer i's output) with its per-image shape, or an
// activation waiting in a zero Pad for the Conv that takes the padding. One handler per operator,
// in a table (onnx/onnx onnx/reference/ops: one op, one small function).
#include "io/onnx_import.h"

#include "io/onnx_importer.h"
#include "io/onnx_inline.h"
#include "util/ascii_text.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <optional>
#include <utility>
#include <set>
#include <sstream>

namespace quantscope {

namespace onnximport {

namespace {

constexpr std::uint64_t kOnnxMaxFileBytes = std::uint64_t{1} << 30;

std::string stemOf(const std::string& path)
{
    std::string s = path.substr(path.find_last_of("/\\") == std::string::npos ? 0 : path.find_last_of("/\\") + 1);
    const auto dot = s.rfind('.');
    if (dot != std::string::npos && dot > 0) s.resize(dot);
    return s.empty() ? "onnx-model" : s;
}

// "/layer2/shortcut/shortcut.0/Conv" -> "layer2.shortcut.0": the module scopes PyTorch writes, where
// a child of a Sequential repeats its parent's name ("shortcut" then "shortcut.0").
std::string scopeName(const std::string& node)
{
    std::vector<std::string> parts;
    std::stringstream ss(node);
    for (std::string p; std::getline(ss, p, '/');)
        if (!p.empty()) parts.push_back(p);
    if (parts.size() < 2 || node[0] != '/') return {};
    std::string name = parts[0], last = parts[0];
    for (std::size_t i = 1; i + 1 < parts.size(); ++i) {
        if (parts[i].rfind(last + ".", 0) == 0) name += parts[i].substr(last.size());
        else name += "." + parts[i];
        last = parts[i];
    }
    return name;
}

} // namespace

// ------------------------------------------------------------------------------------- graph

std::int64_t defaultOpset(const onnx::ModelProto& mp)
{
    std::int64_t v = 0;
    for (const auto& o : mp.opset_import())
        if (o.domain().empty() || o.domain() == "ai.onnx") v = o.version();
    return v;
}

void checkOnnxVersions(const onnx::ModelProto& mp, const std::string& source)
{
    const std::string newest = std::to_string(kOnnxNewestIrVersion) + ", " + kOnnxNewestRelease;
    // ir_version is required (onnx.proto: "the version of the IR this model targets"); 0 is its
    // protobuf default, so a file without one reads as 0.
    if (mp.ir_version() <= 0)
        throw FormatError(source + ": the model declares " +
                          (mp.ir_version() == 0 ? std::string("no ir_version") : "ir_version " + std::to_string(mp.ir_version())) +
                          "; ONNX files carry an IR version from 1 to " + newest + " (a damaged file?)");
    if (mp.ir_version() > kOnnxNewestIrVersion)
        throw ConfigError(source + ": the model declares ir_version " + std::to_string(mp.ir_version()) +
                          ", newer than any ONNX release defines; the highest read is " + newest +
                          " (a damaged file, or one from a newer ONNX: save it with an older IR version)");
    for (const auto& o : mp.opset_import()) {
        if (!o.domain().empty() && o.domain() != "ai.onnx") continue;
        if (o.version() < 1)
            throw FormatError(source + ": the model imports ONNX opset " + std::to_string(o.version()) + "; opset versions start at 1");
        if (o.version() > kOnnxNewestOpset)
            throw ConfigError(source + ": the model imports ONNX opset " + std::to_string(o.version()) +
                              ", newer than any ONNX release defines (the newest is opset " + std::to_string(kOnnxNewestOpset) + ", " +
                              kOnnxNewestRelease + "); its operators would be misread: re-export with torch.onnx.export(..., "
                              "opset_version=13)");
    }
}

void Importer::checkOpset()
{
    checkOnnxVersions(m_mp, m_source);
    m_opset = static_cast<int>(defaultOpset(m_mp));
    m_info.opset = m_opset;
    if (m_opset == 0)
        fail("the model declares no ONNX (ai.onnx) opset in opset_import; opsets " + std::to_string(kOnnxImportMinOpset) + " to " +
             std::to_string(kOnnxImportMaxOpset) + " are read");
    if (m_opset < kOnnxImportMinOpset || m_opset > kOnnxImportMaxOpset)
        fail("the model uses ONNX opset " + std::to_string(m_opset) + "; opsets " + std::to_string(kOnnxImportMinOpset) + " to " +
                 std::to_string(kOnnxImportMaxOpset) + " are read (re-export with torch.onnx.export(..., opset_version=13))",
             true);
    m_info.producer = m_mp.producer_name() + (m_mp.producer_version().empty() ? "" : " " + m_mp.producer_version());
}

ExportedModel Importer::run()
{
    checkOpset();
    m_m.modelName = stemOf(m_source);
    m_m.strategy = "fp32";
    m_m.weightFormat = m_m.activationFormat = "fp32";
    m_m.quantized = false;
    readInput();
    const std::vector<int> order = liveOrder();
    const onnx::GraphProto& g = m_mp.graph();
    for (int k : order) checkArity(g.node(k));
    for (int k : order)
        if (g.node(k).op_type() != "Shape" && g.node(k).op_type() != "Size")
            for (const std::string& v : g.node(k).input())
                if (!v.empty()) ++m_valueReaders[v];
    ++m_valueReaders[m_outputName];
    // Every unsupported operator type of the graph, in order of appearance, with its node count:
    // a MobileNetV3 user learns of HardSwish and HardSigmoid at once, not one re-export at a time.
    std::vector<std::pair<std::string, int>> others;
    // An operator QuantScope has no layer for is named first, wherever it sits: GELU's Erf, not
    // the Div in front of it that would otherwise fail as a misplaced input normalisation.
    // Which values depend on the images (Shape of one does not: shapes are constants here): an
    // operator folded for constants only is unsupported on them (Exp of an activation, not of a
    // normalisation's buffer).
    std::set<std::string> dynamic{m_inputName};
    for (int k : order) {
        const NodeProto& n = g.node(k);
        if (n.op_type() == "Shape") continue;
        if (std::any_of(n.input().begin(), n.input().end(), [&](const std::string& v) { return dynamic.count(v) > 0; }))
            for (const std::string& o : n.output()) dynamic.insert(o);
    }
    // BatchNorm2d(track_running_stats=False) exports the batch's statistics as a subgraph (Reshape,
    // Transpose, ReduceMean, Sub, Mul) feeding BatchNormalization's mean and var: named as what it
    // is, before one of those operators is refused as unsupported.
    for (int k : order) {
        const NodeProto& n = g.node(k);
        if (n.op_type() != "BatchNormalization") continue;
        for (int i : {3, 4})
            if (i < n.input_size() && dynamic.count(n.input(i)))
                failNode(n, std::string(i == 3 ? "its mean" : "its variance") + " ('" + n.input(i) +
                                "') is computed from the batch, not stored running statistics: " + kBatchStatisticsHint);
    }
    findActivationSubgraphs(order, dynamic);
    findPoolingSubgraphs(order, dynamic);
    findGateChains(order);
    const NodeProto* firstUnsupported = nullptr;
    for (int k : order) {
        const NodeProto& n = g.node(k);
        // An attribute given twice is a damaged node (onnx.checker: "appeared multiple times");
        // reading the first would pick one of two values in silence (tester 8: group 1 and group 3).
        if (const std::string* twice = repeatedAttr(n)) failNode(n, "has the attribute '" + *twice + "' twice (a damaged file)", false);
        if (m_subgraphOf.count(k)) continue;
        const bool onImages = std::any_of(n.input().begin(), n.input().end(), [&](const std::string& v) { return dynamic.count(v) > 0; });
        if (!n.domain().empty() && n.domain() != "ai.onnx") {
            failNode(n, "operator " + n.domain() + "::" + n.op_type() + " is not supported");
        }
        if (!handlers().count(n.op_type()) && (!isFoldable(n.op_type()) || onImages)) {
            if (!firstUnsupported) firstUnsupported = &n;
            const auto seen = std::find_if(others.begin(), others.end(), [&](const auto& o) { return o.first == n.op_type(); });
            if (seen == others.end()) others.emplace_back(n.op_type(), 1);
            else ++seen->second;
        }
    }
    if (firstUnsupported) {
        // Control flow first (a torch.jit.script model's branch): the comparison feeding it was named
        // instead, as if the Greater were the problem (tester 20).
        for (int k : order)
            if ((g.node(k).op_type() == "If" || g.node(k).op_type() == "Loop") && !handlers().count(g.node(k).op_type())) {
                firstUnsupported = &g.node(k);
                break;
            }
        failUnsupported(*firstUnsupported, others);
    }
    for (int k : order) {
        const NodeProto& n = g.node(k);
        if (const auto sg = m_subgraphOf.find(k); sg != m_subgraphOf.end()) { // SiLU, Hardswish, GELU
            const Subgraph& s = m_subgraphs[sg->second];
            if (s.root != k) continue;
            const auto cl = m_channelsLast.find(s.x);
            const bool pooling = s.kind == LayerKind::GlobalAvgPool2d || s.kind == LayerKind::MaxPool2d;
            if (cl != m_channelsLast.end() && pooling)
                failNode(n, std::string("pools (") + layerKindName(s.kind) + ") maps permuted to channels-last (x.permute(0, 2, 3, 1)); "
                            "QuantScope reads such maps only flattened into a Linear, through element-wise activations");
            readActivationSubgraph(n, s);
            if (cl != m_channelsLast.end() && n.output_size() > 0 && !n.output(0).empty()) // element-wise: passed on
                m_channelsLast[n.output(0)] = cl->second; // std::map: the iterator stays valid
            continue;
        }
        bool allConst = true;
        std::vector<const ConstTensor*> in;
        for (int i = 0; i < n.input_size(); ++i) {
            if (n.input(i).empty()) {
                in.push_back(nullptr);
                continue;
            }
            const auto found = m_values.find(n.input(i));
            if (found == m_values.end()) failNode(n, "reads '" + n.input(i) + "', which its node does not make", false);
            const Value& v = found->second;
            allConst = allConst && v.kind == Value::Kind::Const;
            in.push_back(v.kind == Value::Kind::Const ? &v.c : nullptr);
        }
        if (allConst && isFoldable(n.op_type())) {
            std::vector<ConstTensor> out;
            try {
                out = foldNode(n, in, m_opset);
            } catch (const FoldError& e) {
                failNode(n, e.what, e.config);
            }
            for (const ConstTensor& c : out) m_foldedTotal += c.numel();
            if (m_foldedTotal > kMaxFoldedTotal)
                failNode(n, "the graph's constant arithmetic would fold more than " + std::to_string(kMaxFoldedTotal) +
                                " values in all; QuantScope folds at most that much (export with do_constant_folding=True)");
            for (std::size_t o = 0; o < out.size(); ++o) {
                Value v;
                v.c = std::move(out[o]);
                define(n, std::move(v), static_cast<int>(o));
            }
            continue;
        }
        const auto it = handlers().find(n.op_type());
        if (it == handlers().end()) failUnsupported(n, others);
        checkViews(n);
        checkChannelsLast(n);
        NodeProto channelsFirst; // n with a constant on channels-last maps permuted to channels-first
        const bool readsPending =
            std::any_of(n.input().begin(), n.input().end(), [&](const std::string& v) { return m_pendingAffine.count(v) > 0; });
        m_pendingUsed = false;
        (this->*(it->second))(constantsChannelsFirst(n, channelsFirst) ? channelsFirst : n);
        if (readsPending && !m_pendingUsed)
            failNode(n, "reads features that a constant scale or shift (or a BatchNorm1d) acts on, which QuantScope folds only "
                        "into the Linear layers (Gemm, MatMul) that read them; move the constant into a layer in PyTorch and export again");
        propagateView(n);
        propagateChannelsLast(n);
        for (int o = 0; o < n.output_size(); ++o)
            if (!n.output(o).empty() && m_uses[n.output(o)] > 0 && !m_values.count(n.output(o)))
                failNode(n, "output " + std::to_string(o) + " ('" + n.output(o) + "') is used, but only the first output is read");
    }

    if (!m_channelsLastLinears.empty()) {
        std::string names;
        for (std::size_t i = 0; i < m_channelsLastLinears.size(); ++i)
            names += (i ? ", '" : "'") + m_channelsLastLinears[i] + "'";
        m_m.notes.push_back(std::to_string(m_channelsLastLinears.size()) + " nn.Linear layer" + (m_channelsLastLinears.size() > 1 ? "s" : "") +
                            " on each pixel's channels of maps permuted to channels-last (a ConvNeXt block's MLP) " +
                            (m_channelsLastLinears.size() > 1 ? "are" : "is") + " read as 1x1 Convs on the channels-first maps, "
                            "their biases and layer scales folded in: " + names);
    }
    const auto outIt = m_values.find(m_outputName);
    if (outIt == m_values.end()) fail("the graph output '" + m_outputName + "' is not made by its node");
    const Value& out = outIt->second;
    if (out.kind != Value::Kind::Act || out.act == 0)
        fail("the graph output '" + m_outputName + "' is not computed by any layer", true);
    if (out.act != m_m.layers.size()) fail("the graph output '" + m_outputName + "' is not the last layer's value");
    if (const Shape o = m_shapes[out.act]; o.size() == 3 && o[1] == 1 && o[2] == 1) {
        // [N, C, 1, 1] scores (a 1x1 Conv head with no flatten after it): read as [N, C].
        StoredLayer f;
        f.kind = LayerKind::Flatten;
        f.name = "output_flatten";
        for (int k = 2; m_names.count(f.name); ++k) f.name = "output_flatten_" + std::to_string(k);
        f.inputs = {out.act};
        m_m.layers.push_back(std::move(f));
        m_shapes.push_back({o[0]});
        m_m.notes.push_back("the graph output '" + m_outputName + "' is [N, " + std::to_string(o[0]) +
                            ", 1, 1]: it is read as class scores [N, " + std::to_string(o[0]) + "] (a Flatten is added)");
    }
    const Shape& s = m_shapes.back();
    if (s.size() != 1)
        fail("the graph output '" + m_outputName + "' has per-image shape " + shapeString(s) + "; class scores [N, classes] are expected", true);
    m_m.classes = s[0];
    if (const auto& os = g.output(m_outputIndex).type().tensor_type().shape();
        os.dim_size() == 2 && os.dim(1).has_dim_value() && os.dim(1).dim_value() != static_cast<std::int64_t>(s[0]))
        fail("the graph output '" + m_outputName + "' declares " + std::to_string(os.dim(1).dim_value()) + " classes, its layers compute " +
             std::to_string(s[0]));
    for (const auto& p : m_mp.metadata_props())
        if (p.key() == "quantscope.class_names") {
            std::vector<std::string> lines;
            std::stringstream ss(p.value());
            for (std::string line; std::getline(ss, line);) lines.push_back(line);
            if (lines.size() == m_m.classes) m_m.classNames = lines;
        }
    // else the caller supplies it (--normalize, dataset statistics); uint8 pixels fix the scale
    m_m.normalizationKnown = m_sawMean || m_sawStd || m_inputBytes || m_normalisesAfterPad;
    if (m_normalisesAfterPad && !(m_sawMean || m_sawStd || m_inputBytes))
        m_m.notes.push_back("the graph normalises its input itself (constants on the pixels after padding, clamping, selecting or "
                            "copying their channels, or where something else reads the input too, read as depthwise 1x1 Convs or "
                            "folded into the channel selection): QuantScope feeds it [0, 1] pixels as they are, without the dataset's "
                            "statistics");
    if (m_normalisedPermuted)
        m_m.notes.push_back("the input normalisation follows a permutation of the input's channels (" + m_m.layers[m_permutedInput - 1].name +
                            ", input channels " + listOf(std::vector<std::int64_t>(m_inputPermutation.begin(), m_inputPermutation.end())) +
                            "): it is stored in the input's channel order, and the permutation stays in the network");
    for (std::vector<float>* v : {&m_m.normalization.mean, &m_m.normalization.stddev})
        if (v->size() == 1) v->assign(m_m.channels, v->front());
    // Graph arithmetic on [0, 1] float pixels: another normalisation before the graph composes with it.
    const bool rescaled = pixelScale255();
    m_m.normalizationFromGraph = m_m.normalizationKnown && !m_inputBytes && !rescaled;
    if (m_info.inlinedCalls > 0)
        m_m.notes.push_back("the graph's modules are ONNX local functions (export_modules_as_functions): their " +
                            std::to_string(m_info.inlinedCalls) + " calls were expanded into their nodes");
    m_m.validate(m_source);
    return std::move(m_m);
}

// ------------------------------------------------------------------------------------- layers

std::string parameterModule(const std::string& initializer)
{
    if (initializer.rfind("onnx::", 0) == 0) return {};
    for (const char* suffix : {".weight", ".bias"}) {
        const std::size_t len = std::char_traits<char>::length(suffix);
        if (initializer.size() > len && initializer.compare(initializer.size() - len, len, suffix) == 0)
            return initializer.substr(0, initializer.size() - len);
    }
    return {};
}

std::string Importer::layerName(const NodeProto& n, const ConstTensor* weight)
{
    std::string name = scopeName(n.name());
    if (name.empty() && weight) name = parameterModule(weight->origin);
    if (name.empty()) name = n.name();
    while (!name.empty() && name[0] == '/') name.erase(0, 1);
    if (name.empty()) name = n.op_type() + "_" + std::to_string(m_m.layers.size());
    return name;
}

StoredLayer& Importer::addLayer(const NodeProto& n, StoredLayer l, Shape out, const std::vector<std::size_t>& inputs,
                                const ConstTensor* weight, const std::string& suffix)
{
    std::string base = layerName(n, weight);
    // A layer read from arithmetic at the graph's top scope (a Hardswish written x * relu6(x + 3) / 6
    // in forward, a SiLU x * sigmoid(x), a channel shuffle's Reshape), whose node has no module
    // path: named after what it is, "hardswish", not after its last node, "Div_1" (tester 9).
    static const std::set<LayerKind> kFromArithmetic{LayerKind::Hardswish, LayerKind::SiLU,     LayerKind::GELU,
                                                     LayerKind::GELUTanh,  LayerKind::Mish,     LayerKind::Hardsigmoid,
                                                     LayerKind::Softplus,  LayerKind::ChannelShuffle, LayerKind::LayerNorm2d};
    const std::string kind = asciiLower(layerKindName(l.kind));
    if (kFromArithmetic.count(l.kind) && scopeName(n.name()).empty() && !weight && asciiLower(n.op_type()) != kind) base = kind;
    // A module's second call, which PyTorch scopes "conv_1", where the model has a module conv_1 of
    // its own (tester 20: --keep-fp32 conv_1 kept the call in FP32 and quantized the module): the
    // call is named after its own module, and no layer takes another module's name.
    const std::string own = weight ? parameterModule(weight->origin) : std::string();
    std::string scoped;
    if (!own.empty() && base != own && m_moduleNames.count(base)) {
        scoped = base;
        base = own;
    }
    base += suffix;
    std::string name = base;
    for (int k = 2; m_names.count(name) || (name != base && m_moduleNames.count(name)); ++k) name = base + "_" + std::to_string(k);
    m_names.insert(name);
    if (!scoped.empty())
        m_m.notes.push_back("PyTorch scoped a call of the module '" + own + "' as '" + scoped + "', the name of the model's own module '" +
                            scoped + "': the call is the layer '" + name + "' here, so options and plans naming '" + scoped +
                            "' reach that module");
    if (weight && !weight->origin.empty()) {
        // A module called twice (shared weights): ONNX gives each call a node; each becomes a layer.
        const auto [it, first] = m_weightUser.emplace(weight->origin, name);
        if (!first)
            m_m.notes.push_back("the weight '" + weight->origin + "' is shared by the layers '" + it->second + "' and '" + name +
                                "' (as when one module is called twice): they are read as two layers with a copy each, so their "
                                "parameters count twice and training unties them");
    }
    l.name = name;
    l.inputs = inputs;
    std::size_t numel = 1;
    for (std::size_t d : out) {
        if (d == 0 || d > (std::size_t{1} << 26)) failNode(n, "would produce an activation of shape " + shapeString(out), false);
        numel *= d;
        if (numel > (std::size_t{1} << 26)) failNode(n, "would produce more than 2^26 values per image", false);
    }
    m_m.layers.push_back(std::move(l));
    m_shapes.push_back(std::move(out));
    alias(n, m_m.layers.size());
    return m_m.layers.back();
}

StoredTensor Importer::floatTensor(const char* name, Shape shape, std::vector<float> values) const
{
    StoredTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.encoding = TensorEncoding::Float32;
    t.values = std::move(values);
    return t;
}

// A spatial attribute with `count` values that must all be equal (QuantScope's layers are square).
std::size_t Importer::square(const NodeProto& n, const char* attr, std::vector<std::int64_t> v, std::int64_t def, std::size_t count)
{
    if (v.empty()) return static_cast<std::size_t>(def);
    if (v.size() != count) failNode(n, std::string("attribute ") + attr + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(count), false);
    for (std::int64_t x : v) {
        if (x < 0 || x > 64) failNode(n, std::string("attribute ") + attr + " = " + std::to_string(x) + " is out of range", false);
        if (x != v[0]) {
            std::string list;
            for (std::int64_t y : v) list += (list.empty() ? "" : ", ") + std::to_string(y);
            failNode(n, std::string("attribute ") + attr + " = [" + list + "]: QuantScope's layers take equal values on every side and axis (square kernels, symmetric padding)");
        }
    }
    return static_cast<std::size_t>(v[0]);
}

// Importer::run, with an AveragePool whose ceil_mode output size is ONNX's or PyTorch's
// (OnnxImportOptions::PaddedCeilPool::Either) read both ways: the reading that reads the whole
// graph is kept, with a note; when both do, or neither, the first error stands (with the reason).
ExportedModel readGraph(const onnx::ModelProto& mp, const std::string& source, OnnxImportInfo& info, const OnnxImportOptions& options)
{
    Importer first(mp, source, info, options);
    try {
        return first.run();
    } catch (const Error& e) {
        const Importer::PaddedCeil at = first.paddedCeil();
        if (at.node.empty() || options.paddedCeilPool != OnnxImportOptions::PaddedCeilPool::Either) throw;
        std::string torchError;
        const auto readAs = [&](OnnxImportOptions::PaddedCeilPool reading, OnnxImportInfo& readInfo,
                                std::string* why) -> std::optional<ExportedModel> {
            OnnxImportOptions o = options;
            o.paddedCeilPool = reading;
            try {
                return Importer(mp, source, readInfo, o).run();
            } catch (const Error& failed) {
                if (why) *why = failed.what();
                return std::nullopt;
            }
        };
        OnnxImportInfo torchInfo, onnxInfo;
        std::optional<ExportedModel> torch = readAs(OnnxImportOptions::PaddedCeilPool::PyTorch, torchInfo, &torchError);
        std::optional<ExportedModel> onnx = readAs(OnnxImportOptions::PaddedCeilPool::Onnx, onnxInfo, nullptr);
        if (torch && onnx) throw ConfigError(std::string(e.what()) + "; the rest of the graph reads either size");
        if (!torch && !onnx)
            throw ConfigError(std::string(e.what()) + "; the rest of the graph reads neither size (read as PyTorch's " + at.pytorch +
                              ", it fails with: " + torchError + ")");
        std::optional<ExportedModel>& kept = torch ? torch : onnx;
        info = torch ? torchInfo : onnxInfo;
        kept->notes.push_back(at.node + " has ceil_mode = 1 after a zero Pad, where ONNX's rule makes a " + at.onnx +
                              " output and PyTorch's a " + at.pytorch + " one: read as " + (torch ? "PyTorch's " + at.pytorch : "ONNX's " + at.onnx) +
                              ", the size the rest of the graph takes" +
                              (torch ? " (torch.onnx.export writes nn.AvgPool2d(..., padding, ceil_mode=True) so)" : ""));
        return std::move(*kept);
    }
}

// A square size, other than the one `failed` read at, at which the graph of a dynamic image size
// reads: the common image sides first, then every side from 1 to 256; none when it reads at none.
// Each try reads the whole graph again, so a large model gets fewer tries (a fixed budget of
// initializer bytes read, 256 tries of a 2 MB model; a node counts as 4 kB), the same on every machine.
static std::optional<std::pair<std::size_t, std::size_t>> sizeThatReads(const onnx::ModelProto& mp, const std::string& source,
                                                                         const OnnxImportInfo& failed)
{
    std::uint64_t bytes = 4096 * static_cast<std::uint64_t>(mp.graph().node_size()) + 1; // a node's reading, as a few kB
    for (const auto& t : mp.graph().initializer())
        bytes += t.raw_data().size() + 4 * static_cast<std::uint64_t>(t.float_data_size() + t.int64_data_size() + t.int32_data_size());
    constexpr std::uint64_t kBudgetBytes = std::uint64_t{512} << 20;
    const std::uint64_t tries = std::max<std::uint64_t>(4, kBudgetBytes / bytes);
    std::vector<std::size_t> sides = {kOnnxDefaultImageSide1, kOnnxDefaultImageSide3, 224, 64, 96, 128, 112, 256};
    for (std::size_t s = 1; s <= 256; ++s)
        if (std::find(sides.begin(), sides.end(), s) == sides.end()) sides.push_back(s);
    std::uint64_t tried = 0;
    for (const std::size_t side : sides) {
        if (side == failed.height && side == failed.width) continue;
        if (++tried > tries) break;
        OnnxImportInfo info;
        try {
            OnnxImportOptions at;
            at.height = at.width = side;
            readGraph(mp, source, info, at); // (mp's external data is already in it)
        } catch (const Error&) {
            continue;
        }
        if (info.height != failed.height || info.width != failed.width) return std::make_pair(info.height, info.width);
    }
    return std::nullopt;
}

// Opset 18 made the axes of ReduceMean, ReduceMax and the other reductions (not ReduceSum, whose
// axes became an input at 13) an optional input. The importer reads them as the attribute they
// were through opset 17: a constant axes input (an initializer or a Constant node) moves back into
// the attribute, so each reduction reads the same at every opset. Axes computed from the images are
// refused; an absent input is left as it is (no axes: every axis, as before 18).
void reduceAxesToAttributes(onnx::ModelProto& mp, const std::string& source)
{
    if (defaultOpset(mp) < 18) return;
    static const std::set<std::string> reductions = {"ReduceMean",   "ReduceMax",       "ReduceMin",      "ReduceProd",
                                                     "ReduceL1",     "ReduceL2",        "ReduceLogSum",   "ReduceLogSumExp",
                                                     "ReduceSumSquare"};
    onnx::GraphProto* g = mp.mutable_graph();
    std::map<std::string, const onnx::TensorProto*> constants;
    for (const onnx::TensorProto& t : g->initializer()) constants[t.name()] = &t;
    std::map<std::string, std::vector<std::int64_t>> intLists; // Constant nodes' value_ints
    for (const onnx::NodeProto& n : g->node()) {
        if (n.op_type() != "Constant" || n.output_size() != 1 || !(n.domain().empty() || n.domain() == "ai.onnx")) continue;
        for (const onnx::AttributeProto& a : n.attribute()) {
            if (a.name() == "value" && a.has_t()) constants[n.output(0)] = &a.t();
            if (a.name() == "value_ints") intLists[n.output(0)] = {a.ints().begin(), a.ints().end()};
        }
    }
    for (onnx::NodeProto& n : *g->mutable_node()) {
        if (!reductions.count(n.op_type()) || n.input_size() < 2 || n.input(1).empty()) continue;
        if (!(n.domain().empty() || n.domain() == "ai.onnx")) continue;
        const std::string where = source + ": " + n.op_type() + " node " + onnxNodeName(n) + ": ";
        std::vector<std::int64_t> axes;
        if (const auto il = intLists.find(n.input(1)); il != intLists.end()) {
            axes = il->second;
        } else if (const auto c = constants.find(n.input(1)); c != constants.end()) {
            ConstTensor t;
            try {
                t = decodeTensor(*c->second);
            } catch (const FoldError& e) {
                throw FormatError(where + "its axes '" + n.input(1) + "': " + e.what);
            }
            if (t.isFloat || t.dims.size() > 1) throw FormatError(where + "its axes '" + n.input(1) + "' are not a list of integers");
            axes = t.i;
        } else {
            throw ConfigError(where + "its axes ('" + n.input(1) +
                              "') are computed in the graph, not a constant; QuantScope reads reductions over constant axes");
        }
        for (const onnx::AttributeProto& a : n.attribute())
            if (a.name() == "axes") throw FormatError(where + "has both an axes attribute and an axes input (opset 18 has only the input)");
        onnx::AttributeProto* a = n.add_attribute();
        a->set_name("axes");
        a->set_type(onnx::AttributeProto::INTS);
        for (std::int64_t v : axes) a->add_ints(v);
        n.mutable_input()->DeleteSubrange(1, n.input_size() - 1);
    }
}

} // namespace onnximport

ExportedModel importOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source, OnnxImportInfo* info,
                         const OnnxImportOptions& options)
{
    onnx::ModelProto mp;
    parseOnnxModel(bytes, mp, source);
    onnximport::loadExternalData(mp, source, options.externalDataFolder); // weights in a file beside the model
    OnnxImportInfo local;
    OnnxImportInfo& out = info ? *info : local;
    // torch.onnx.export(..., export_modules_as_functions=True): the calls become their nodes.
    out.inlinedCalls = inlineLocalFunctions(mp, source);
    onnximport::reduceAxesToAttributes(mp, source);
    try {
        return onnximport::readGraph(mp, source, out, options);
    } catch (const Error& e) {
        if (!out.dynamicImageSize) throw;
        // The image size was QuantScope's choice (a Linear after a flatten takes one size): if the
        // graph reads at another, the size is the cause, and that size is named; if it reads at
        // none, the error is the graph's own and no size is blamed (tester 17 #4, #7).
        const OnnxImportInfo failed = out;
        const std::optional<std::pair<std::size_t, std::size_t>> fits = onnximport::sizeThatReads(mp, source, failed);
        if (!fits) throw;
        const bool both = failed.dynamicDims.find(" and ") != std::string::npos;
        const std::string at = std::to_string(failed.height) + "x" + std::to_string(failed.width);
        const std::string works = std::to_string(fits->first) + "x" + std::to_string(fits->second);
        throw ConfigError(std::string(e.what()) + " (the input's " + failed.dynamicDims + (both ? " are" : " is") +
                          " dynamic, but the graph does not read at " + at + (options.height || options.width ? "" : ", the default size") +
                          "; it reads at " + works + ", so it was likely exported for " + works + " images: --resize " + works +
                          " reads it there for train, eval and analyze, --input-shape " + std::to_string(failed.channels) + "x" + works +
                          " for info)");
    }
}

ExportedModel importOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source, OnnxImportInfo* info)
{
    return importOnnx(bytes, source, info, OnnxImportOptions{});
}

ExportedModel importOnnx(const std::vector<std::uint8_t>& bytes, const std::string& source)
{
    return importOnnx(bytes, source, nullptr);
}

ExportedModel importOnnx(const std::string& path)
{
    OnnxImportOptions options;
    options.externalDataFolder = modelFolder(path);
    return importOnnx(readFileBytes(path, onnximport::kOnnxMaxFileBytes), path, nullptr, options);
}

} // namespace quantscope
