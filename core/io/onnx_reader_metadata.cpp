// The quantscope.* metadata of QuantScope's own ONNX exports, for their reader (onnx_reader.cpp):
// read into the ExportedModel (model name, strategy, formats, granularity, class names, the
// convolutions a BatchNorm was folded into), then checked against what encodeOnnx writes for a
// graph of that kind (FP32, or integer QDQ).
#include "io/onnx_importer.h"

#include "quant/format.h"
#include "quant/granularity.h"

#include "util/errors.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

namespace quantscope::onnximport {

namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) { throw FormatError(source + ": " + what); }

// A BatchNorm2d no convolution absorbs, as the export writes it whatever the weight format
// (analysis/model_export.cpp): a depthwise 1x1 convolution with one int8 weight per channel, +-127
// (0 for a channel whose scale is 0).
bool isBatchNormAsDepthwise(const StoredLayer& l, const StoredTensor& w)
{
    return l.kind == LayerKind::Conv2d && l.kernel == 1 && l.stride == 1 && l.padding == 0 && !l.window && l.groups == l.inChannels &&
           l.inChannels == l.outChannels && w.bits == 8 && w.qmax == 127 && (w.qmin == -128 || w.qmin == -127) &&
           std::all_of(w.q.begin(), w.q.end(), [](std::int32_t v) { return v == 127 || v == -127 || v == 0; });
}

// The strategies whose names encodeOnnx writes as quantscope.strategy: train/precision_config.cpp's
// strategies() (io sits beside train and cannot include it; tst_onnx_file_errors checks the two
// agree). An integer (QDQ) export comes from the three that quantize.
const std::vector<std::string> kFloatStrategies = {"fp32", "ptq", "qat", "mixed", "lowp", "progressive"};
const std::vector<std::string> kIntegerStrategies = {"ptq", "qat", "progressive"};
// Written after the granularity when a precision plan gives some layers another one (analysis/model_export.cpp).
constexpr const char* kGranularityPlanSuffix = " unless a layer says otherwise";

std::string joined(const std::vector<std::string>& v)
{
    std::string s;
    for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

// A metadata value of one name per line, as encodeOnnx joins them ("" holds none; a last name
// that is empty leaves a trailing newline).
std::vector<std::string> lineList(const std::string& value)
{
    std::vector<std::string> lines;
    if (value.empty()) return lines;
    std::size_t start = 0;
    for (std::size_t nl; (nl = value.find('\n', start)) != std::string::npos; start = nl + 1) lines.push_back(value.substr(start, nl - start));
    lines.push_back(value.substr(start));
    return lines;
}

} // namespace

std::set<std::string> readOwnMetadata(const onnx::ModelProto& mp, ExportedModel& m, const std::string& source)
{
    std::set<std::string> folded;
    std::set<std::string> seen;
    for (const auto& p : mp.metadata_props()) {
        if (p.key().rfind("quantscope.", 0) == 0 && !seen.insert(p.key()).second)
            fail(source, "metadata " + p.key() + " is given twice (QuantScope writes each key once)");
        if (p.key() == "quantscope.model") m.modelName = p.value();
        else if (p.key() == "quantscope.strategy") m.strategy = p.value();
        else if (p.key() == "quantscope.weight_format") m.weightFormat = p.value();
        else if (p.key() == "quantscope.activation_format") m.activationFormat = p.value();
        else if (p.key() == "quantscope.granularity") m.granularity = p.value();
        else if (p.key() == "quantscope.class_names") m.classNames = lineList(p.value());
        else if (p.key() == "quantscope.bn_folded") {
            const std::vector<std::string> lines = lineList(p.value());
            folded.insert(lines.begin(), lines.end());
        }
    }
    return folded;
}

// The quantscope.* values the reader uses, against what encodeOnnx writes for a graph of this
// kind (FP32, or integer QDQ): an edited or damaged value is refused by key and value, with the
// values that are read; a key that is absent keeps the model's default.
void checkOwnMetadata(const onnx::ModelProto& mp, const ExportedModel& m, const std::set<std::string>& folded, bool unnamedConv,
                      const std::string& source)
{
    const bool q = m.quantized;
    const std::string graph = q ? "an integer (QDQ) graph" : "an FP32 graph";
    auto refuse = [&](const std::string& key, const std::string& value, const std::string& accepted) {
        fail(source, "metadata quantscope." + key + " is '" + (value.size() > 80 ? value.substr(0, 77) + "..." : value) +
             "', which QuantScope does not write for " + graph + " (it writes " + accepted + ")");
    };
    auto has = [&](const char* key) {
        for (const auto& p : mp.metadata_props())
            if (p.key() == std::string("quantscope.") + key) return true;
        return false;
    };
    // Weights: an FP32 graph's are fp32; a QDQ graph's one signed symmetric integer grid of at
    // most 8 bits (what DequantizeLinear holds), or a precision plan's per-layer list.
    std::vector<std::string> weightFormats, actFormats;
    for (const NumberFormat& f : numberFormats()) {
        if (f.kind != FormatKind::Int) continue;
        if (f.isSigned && f.symmetric && f.bits <= 8) weightFormats.push_back(f.name);
        if (f.bits == 8) actFormats.push_back(f.name);
    }
    const std::string& wf = m.weightFormat;
    const bool perLayer = wf.rfind("per-layer (", 0) == 0 && wf.back() == ')';
    if (has("weight_format")) {
        if (!q && wf != "fp32") refuse("weight_format", wf, "'fp32'");
        if (q && !perLayer && std::find(weightFormats.begin(), weightFormats.end(), wf) == weightFormats.end())
            refuse("weight_format", wf, joined(weightFormats) + ", or 'per-layer (...)' under a precision plan");
        // One format for the whole model: every integer weight is on its grid (or its narrow range;
        // binary's {-1, +1} is stored in 2 bits, as ternary's {-1, 0, 1}), but for the int8 of a
        // BatchNorm kept as a depthwise 1x1 convolution.
        if (q && !perLayer) {
            const NumberFormat& f = findFormat(wf);
            const int storedBits = std::max(f.bits, 2);
            for (const StoredLayer& l : m.layers)
                for (const StoredTensor& t : l.tensors)
                    if (t.name == "weight" && t.encoding == TensorEncoding::Int && !isBatchNormAsDepthwise(l, t) &&
                        (t.bits != storedBits || t.qmax != f.qmax || (t.qmin != f.qmin && t.qmin != -f.qmax)))
                        fail(source, "metadata quantscope.weight_format is '" + wf + "', but the weights of '" + l.name + "' are on the " +
                             std::to_string(t.bits) + "-bit grid [" + std::to_string(t.qmin) + ", " + std::to_string(t.qmax) +
                             "], not " + wf + "'s [" + std::to_string(f.qmin) + ", " + std::to_string(f.qmax) + "]");
        }
    }
    if (has("activation_format")) {
        const std::string& af = m.activationFormat;
        if (!q && af != "fp32") refuse("activation_format", af, "'fp32'");
        if (q && std::find(actFormats.begin(), actFormats.end(), af) == actFormats.end()) refuse("activation_format", af, joined(actFormats));
    }
    if (has("granularity")) {
        const std::string& gr = m.granularity;
        if (!q && !gr.empty()) refuse("granularity", gr, "'', as FP32 weights have no scales");
        if (q) {
            std::string base = gr;
            const std::string suffix = kGranularityPlanSuffix;
            if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0)
                base.resize(base.size() - suffix.size());
            bool ok = true;
            try {
                ok = parseGranularity(base).kind != GranularityKind::Group; // QuantizeLinear has no group-wise scales
            } catch (const ConfigError&) {
                ok = false;
            }
            if (!ok) refuse("granularity", gr, std::string("global, layer, tensor or channel, each maybe followed by '") + suffix + "'");
        }
    }
    if (has("strategy")) {
        const std::vector<std::string>& known = q ? kIntegerStrategies : kFloatStrategies;
        if (std::find(known.begin(), known.end(), m.strategy) == known.end()) refuse("strategy", m.strategy, joined(known));
    }
    if (!m.classNames.empty() && m.classNames.size() != m.classes)
        fail(source, "metadata quantscope.class_names holds " + std::to_string(m.classNames.size()) + " names for the " +
             std::to_string(m.classes) + " classes of the graph output (QuantScope writes one per class, or none)");
    // The convolutions a BatchNorm was folded into, by node name (unless a tool stripped the names,
    // which is valid ONNX: then the list matches nothing and no layer is marked).
    for (const std::string& name : unnamedConv ? std::set<std::string>{} : folded) {
        const bool conv = std::any_of(m.layers.begin(), m.layers.end(),
                                      [&](const StoredLayer& l) { return l.kind == LayerKind::Conv2d && l.name == name; });
        if (!conv)
            fail(source, "metadata quantscope.bn_folded names '" + name +
                 "', which is no Conv of the graph (QuantScope lists the Conv layers a BatchNorm was folded into, one per line)");
    }
}

std::vector<std::int64_t> int64Values(const onnx::TensorProto& t, const std::string& source)
{
    const auto bad = [&](const std::string& why) { throw FormatError(source + ": initializer '" + t.name() + "' " + why); };
    if (t.data_type() != onnx::TensorProto::INT64) bad("is not int64");
    std::uint64_t n = 1;
    for (std::int64_t d : t.dims()) n = d < 0 || d > 8 ? 9 : n * static_cast<std::uint64_t>(d);
    if (n > 8 || t.dims_size() > 1) bad("is not a list of at most 8 int64 values");
    std::vector<std::int64_t> v(static_cast<std::size_t>(n));
    if (t.has_raw_data()) {
        if (t.raw_data().size() != n * 8) bad("holds the wrong number of bytes");
        std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
    } else {
        if (static_cast<std::uint64_t>(t.int64_data_size()) != n) bad("holds the wrong number of values");
        std::copy(t.int64_data().begin(), t.int64_data().end(), v.begin());
    }
    return v;
}

std::string ownChannelShuffle(const std::vector<std::int64_t>& grouped, const std::vector<std::int64_t>& perm,
                              const std::vector<std::int64_t>& back, std::size_t& groups, Shape& images)
{
    const std::size_t r = back.size();
    bool ok = r >= 2 && grouped.size() == r + 1 && perm.size() == r + 1 && back[0] == 0 && grouped[0] == 0;
    for (std::size_t d = 1; ok && d < r; ++d) ok = back[d] >= 1 && back[d] <= (std::int64_t{1} << 24);
    ok = ok && grouped[1] >= 1 && grouped[2] >= 1 && grouped[1] * grouped[2] == back[1];
    for (std::size_t d = 2; ok && d < r; ++d) ok = grouped[d + 1] == back[d];
    for (std::size_t d = 0; ok && d <= r; ++d) ok = perm[d] == static_cast<std::int64_t>(d == 1 ? 2 : d == 2 ? 1 : d);
    if (!ok)
        return "the subgraph Reshape " + listOf(grouped) + ", Transpose " + listOf(perm) + ", Reshape " + listOf(back) +
               " is not the channel shuffle QuantScope writes";
    groups = static_cast<std::size_t>(grouped[1]);
    images.clear();
    for (std::size_t d = 1; d < r; ++d) images.push_back(static_cast<std::size_t>(back[d]));
    return {};
}

} // namespace quantscope::onnximport
