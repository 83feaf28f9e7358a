// quantscope-cli info: the model summary (core/analysis/model_summary.h) of a preset, a .qsm or
// an .onnx file, as an aligned table (torchinfo's layout) or one JSON object.
#include "cli_args.h"
#include "cli_commands.h"

#include "analysis/model_summary.h"
#include "io/model_source.h"
#include "nn/model_zoo.h"
#include "quant/plan_size.h"
#include "quant/precision_plan.h"
#include "util/byte_size.h"
#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <cstdio>
#include <string>

namespace quantscope::cli {

const char* const kInfoHelp =
    "usage: quantscope-cli info MODEL [options]\n"
    "\n"
    "Prints one row per layer (name, type, hyper-parameters, inputs, output shape per image,\n"
    "parameters, multiply-accumulates per image), the totals, and the FP32 and int8 sizes.\n"
    "MODEL is a preset (seed-cnn, seed-cnn-bn, lenet5, mlp, resnet8, mobilenet-tiny), a .qsm\n"
    "file or an .onnx file.\n"
    "\n"
    "  --input-shape CxHxW  presets: the input image (default 1x28x28; C <= 16, H, W <= 256); an ONNX graph of\n"
    "                       dynamic height and width: the size to read it at (default 28x28, 32x32 for 3 channels)\n"
    "  --classes N          presets: outputs of the last layer (default 10)\n"
    "  --json               one JSON object on stdout\n"
    "  --threads N          accepted as the other commands take it; info computes nothing that uses them\n"
    "size under a precision plan (docs/PLANS.md; presets and FP32 files):\n"
    "  --format F, --granularity G   the plan's default (default int8, channel)\n"
    "  --plan FILE          a JSON plan\n"
    "  --layer NAME=FORMAT[:GRANULARITY]  one layer's format (repeatable)\n"
    "  --keep-fp32 NAME[,NAME]       layers kept in float\n"
    "                       prints each layer's bytes and bits per weight, the total, % of FP32\n"
    "  -h, --help           this text\n"
    "\n"
    "MACs: Conv2d outH*outW*outC*(inC/groups)*k*k, Linear in*out, other layers 0 (their\n"
    "arithmetic is counted apart as elementwise ops). FP32 size: parameters and BatchNorm running\n"
    "statistics as float32. Int8 size: as the integer export stores the model: BatchNorm folded\n"
    "into its convolution, weights 1 byte, biases int32, one float32 scale per output channel\n"
    "(a float model's; a quantized file prints the weights it stores instead).\n";

namespace {

constexpr std::size_t kMaxChannels = 16, kMaxSide = 256;

// "1x28x28" -> {1, 28, 28}.
Shape parseInputShape(const std::string& s)
{
    Shape dims;
    std::size_t pos = 0;
    while (pos <= s.size()) {
        const std::size_t x = s.find('x', pos);
        const std::string part = s.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
        if (part.empty() || part.size() > 6 || part.find_first_not_of("0123456789") != std::string::npos)
            throw UsageError("--input-shape: expected CxHxW such as 3x32x32, got '" + s + "'");
        dims.push_back(std::stoul(part));
        if (x == std::string::npos) break;
        pos = x + 1;
    }
    if (dims.size() != 3) throw UsageError("--input-shape: expected CxHxW such as 3x32x32, got '" + s + "'");
    // The preset is built with its weights, and a dense head grows with H*W (seed-cnn at 256x256
    // holds 130 M parameters), so the shape is bounded.
    if (dims[0] < 1 || dims[0] > kMaxChannels || dims[1] < 1 || dims[1] > kMaxSide || dims[2] < 1 || dims[2] > kMaxSide)
        throw UsageError("--input-shape: channels must be in [1, " + std::to_string(kMaxChannels) + "] and height, width in [1, " +
                         std::to_string(kMaxSide) + "], got '" + s + "'");
    return dims;
}

// The terminal columns of UTF-8 `text`: one a code point, two for the East Asian wide and
// fullwidth ranges (as wcwidth(3) counts them, without needing a UTF-8 locale). The tables pad by
// it, so a layer named 'conv_ä' or '卷积1' keeps its columns straight (tester 21: padded by bytes).
std::size_t columns(const std::string& text)
{
    std::size_t n = 0;
    for (std::size_t i = 0; i < text.size();) {
        const auto b = static_cast<unsigned char>(text[i]);
        const std::size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
        char32_t cp = len == 1 ? b : b & (0x7F >> len);
        for (std::size_t k = 1; k < len && i + k < text.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
        const bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) || (cp >= 0xAC00 && cp <= 0xD7A3) ||
                          (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                          (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) || (cp >= 0x20000 && cp <= 0x3FFFD);
        n += wide ? 2 : 1;
        i += len;
    }
    return n;
}

// `text` and the spaces that make it `width` columns wide (left-aligned).
std::string padded(const std::string& text, std::size_t width)
{
    const std::size_t c = columns(text);
    return c >= width ? text : text + std::string(width - c, ' ');
}

std::string withCommas(std::uint64_t v)
{
    std::string d = std::to_string(v), out;
    for (std::size_t i = 0; i < d.size(); ++i) {
        if (i && (d.size() - i) % 3 == 0) out += ',';
        out += d[i];
    }
    return out;
}

std::string shapeText(const Shape& s)
{
    std::string t;
    for (std::size_t i = 0; i < s.size(); ++i) t += (i ? "x" : "") + std::to_string(s[i]);
    return t;
}

std::string join(const std::vector<std::string>& v)
{
    std::string t;
    for (std::size_t i = 0; i < v.size(); ++i) t += (i ? ", " : "") + v[i];
    return t;
}

// 1234567 -> "1.23 M"
std::string scaled(double v, const char* unit)
{
    char buf[48];
    if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2f G%s", v / 1e9, unit);
    else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M%s", v / 1e6, unit);
    else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.2f k%s", v / 1e3, unit);
    else std::snprintf(buf, sizeof buf, "%.0f %s", v, unit);
    return buf;
}

std::string bytesText(std::uint64_t b)
{
    return formatByteSize(b) + " (" + withCommas(b) + " bytes)";
}

nlohmann::json planJson(const PlanSize& p)
{
    nlohmann::json layers = nlohmann::json::array();
    for (const LayerSize& l : p.layers)
        layers.push_back({{"name", l.layer},
                          {"format", l.format},
                          {"granularity", l.granularity},
                          {"weights", l.weights},
                          {"bytes", l.bytes},
                          {"fp32_bytes", l.fp32Bytes},
                          {"bits_per_weight", l.bitsPerWeight}});
    return {{"layers", layers},
            {"bytes", p.bytes},
            {"fp32_bytes", p.fp32Bytes},
            {"percent_of_fp32", p.percentOfFp32},
            {"bits_per_weight", p.bitsPerWeight}};
}

void printPlan(const PlanSize& p)
{
    std::size_t w = 5, g = 11; // columns as wide as their widest entry ("group-wise (16)")
    for (const LayerSize& l : p.layers) {
        w = std::max(w, columns(l.layer));
        g = std::max(g, l.granularity.size());
    }
    // Bytes: weights, scales, zero points and the bias, as the GUI's plan table counts a layer
    std::printf("Plan: %-*s  %-8s  %-*s  %12s  %11s\n", static_cast<int>(w), "Layer", "Weights", static_cast<int>(g), "Granularity",
                "Bytes+bias", "Bits/weight");
    for (const LayerSize& l : p.layers)
        std::printf("      %s  %-8s  %-*s  %12s  %11.2f\n", padded(l.layer, w).c_str(), l.format.c_str(), static_cast<int>(g),
                    l.granularity.empty() ? "-" : l.granularity.c_str(), withCommas(l.bytes).c_str(), l.bitsPerWeight);
    std::printf("Plan size: %s, %.1f %% of FP32, %.2f bits per weight\n", bytesText(p.bytes).c_str(), p.percentOfFp32,
                p.bitsPerWeight);
}

nlohmann::json toJson(const ModelSummary& s)
{
    nlohmann::json layers = nlohmann::json::array();
    for (const LayerSummary& l : s.layers) {
        nlohmann::json j = {{"name", l.name},
                            {"type", l.type},
                            {"detail", l.detail},
                            {"inputs", l.inputs},
                            {"output_shape", l.outputShape},
                            {"params", l.params},
                            {"buffers", l.buffers},
                            {"macs", l.macs},
                            {"elementwise_ops", l.elementwiseOps},
                            {"fp32_bytes", l.fp32Bytes},
                            {"int8_bytes", l.int8Bytes}};
        if (!l.foldedInto.empty()) j["folded_into"] = l.foldedInto;
        layers.push_back(std::move(j));
    }
    nlohmann::json j = {{"event", "info"},
                        {"model", s.modelName},
                        {"source", s.source},
                        {"precision", s.precision},
                        {"quantized", s.quantized},
                        {"input_shape", s.inputShape},
                        {"classes", s.classes},
                        {"layers", std::move(layers)},
                        {"params", s.params},
                        {"buffers", s.buffers},
                        {"macs", s.macs},
                        {"elementwise_ops", s.elementwiseOps},
                        {"fp32_bytes", s.fp32Bytes},
                        {"int8_bytes", s.int8Bytes},
                        {"notes", s.notes}};
    if (s.fileBytes) j["file_bytes"] = *s.fileBytes;
    if (!s.storedWeights.empty()) {
        nlohmann::json stored = nlohmann::json::array();
        for (const StoredWeights& l : s.storedWeights)
            stored.push_back({{"layer", l.layer}, {"format", l.format}, {"granularity", l.granularity}, {"weights", l.weights},
                              {"bytes", l.bytes}, {"bits_per_weight", l.bitsPerWeight}});
        j["stored_weights"] = std::move(stored);
    }
    if (s.source != "preset") j["normalization"] = s.normalizationKnown ? nlohmann::json(s.normalization) : nlohmann::json(nullptr);
    if (s.source != "preset") j["class_names"] = s.classNames; // [] where the file names none
    const std::size_t own = s.sourceParams(); // the exported model's own parameters
    if (s.importAddedParams || s.importFoldedParams) {
        j["import_added_params"] = s.importAddedParams;
        j["import_folded_params"] = s.importFoldedParams;
        j["source_params"] = own;
    }
    if (s.exporterFoldedConvs) {
        j["exporter_folded_convs"] = s.exporterFoldedConvs;
        j["params_with_batchnorm"] = own + s.exporterFoldedChannels; // bias-free convolutions
        j["params_with_batchnorm_and_conv_bias"] = own + 2 * s.exporterFoldedChannels;
    }
    return j;
}

// planNormalization: a plan's "normalize" (info --plan), which train applies where the file stores none.
void printTable(const ModelSummary& s, const std::string& planNormalization = "")
{
    const std::vector<std::string> head = {"Layer", "Type", "Details", "Input(s)", "Output shape", "Params", "MACs"};
    std::vector<std::vector<std::string>> rows;
    for (const LayerSummary& l : s.layers) {
        std::string detail = l.detail;
        if (!l.foldedInto.empty()) detail += ", folded"; // into the convolution it reads (Input(s))
        rows.push_back({l.name, l.type, detail, join(l.inputs), shapeText(l.outputShape), withCommas(l.params), withCommas(l.macs)});
    }
    std::vector<std::size_t> w(head.size());
    for (std::size_t c = 0; c < head.size(); ++c) {
        w[c] = head[c].size();
        for (const auto& r : rows) w[c] = std::max(w[c], columns(r[c]));
    }
    std::size_t total = 0;
    for (std::size_t c : w) total += c + 2;
    const std::string rule(total - 2, '='), thin(total - 2, '-');
    auto line = [&](const std::vector<std::string>& r) {
        std::string t;
        for (std::size_t c = 0; c < r.size(); ++c) {
            const bool right = c >= 5; // numbers right-aligned
            const std::string pad(w[c] - columns(r[c]), ' ');
            t += right ? pad + r[c] : r[c] + (c + 1 < r.size() ? pad : "");
            if (c + 1 < r.size()) t += "  ";
        }
        std::printf("%s\n", t.c_str());
    };
    const std::string title = s.source == "preset" ? s.modelName + " (preset)" : s.source + " (" + s.modelName + ")";
    std::printf("%s: input %s, %zu classes, %s\n", title.c_str(), shapeText(s.inputShape).c_str(), s.classes, s.precision.c_str());
    std::printf("%s\n", rule.c_str());
    line(head);
    std::printf("%s\n", thin.c_str());
    for (const auto& r : rows) line(r);
    std::printf("%s\n", rule.c_str());
    if (std::any_of(s.layers.begin(), s.layers.end(), [](const LayerSummary& l) { return !l.foldedInto.empty(); }))
        std::printf("folded: a BatchNorm2d the integer export folds into the convolution it reads\n");
    std::printf("Layers: %zu\n", s.layers.size());
    std::printf("Total params: %s\n", withCommas(s.params).c_str());
    const std::size_t own = s.sourceParams();
    if (s.importAddedParams)
        std::printf("  of which %s in layers the ONNX reading added for operations computed without parameters in the\n"
                    "  file (see the notes)%s\n",
                    withCommas(s.importAddedParams).c_str(),
                    s.importFoldedParams ? "" : (": the file's model has " + withCommas(own)).c_str());
    if (s.importFoldedParams)
        std::printf("  and %s BatchNorm1d parameters (gamma, beta) the ONNX reading folded into Linears (see the notes)\n"
                    "  are not among them: the file's model has %s\n",
                    withCommas(s.importFoldedParams).c_str(), withCommas(own).c_str());
    if (s.exporterFoldedConvs) // PyTorch's count, with either kind of convolution (the file holds the same for both)
        std::printf("  the exporter folded BatchNorm into %zu convolution%s: as trained, with BatchNorm (gamma, beta), the\n"
                    "  model had %s parameters if %s had no bias (bias=False), %s if %s had %s (nn.Conv2d's\n"
                    "  default): the folded bias holds both, so the file cannot tell which\n",
                    s.exporterFoldedConvs, s.exporterFoldedConvs == 1 ? "" : "s", withCommas(own + s.exporterFoldedChannels).c_str(),
                    s.exporterFoldedConvs == 1 ? "it" : "they", withCommas(own + 2 * s.exporterFoldedChannels).c_str(),
                    s.exporterFoldedConvs == 1 ? "it" : "they", s.exporterFoldedConvs == 1 ? "one" : "biases");
    if (s.buffers) std::printf("BatchNorm running statistics: %s values\n", withCommas(s.buffers).c_str());
    std::printf("MACs per image: %s (%s)\n", scaled(static_cast<double>(s.macs), "").c_str(), withCommas(s.macs).c_str());
    std::printf("Elementwise ops per image: %s (BatchNorm, activations, Add, Mul, pooling, LogSoftmax, Softmax)\n", withCommas(s.elementwiseOps).c_str());
    std::printf("FP32 size: %s\n", bytesText(s.fp32Bytes).c_str());
    if (s.storedWeights.empty())
        std::printf("Int8 size: %s (BatchNorm folded, int8 weights, int32 biases, per-channel scales)\n", bytesText(s.int8Bytes).c_str());
    else { // a quantized file: what it stores, not what a channel-wise int8 export of it would (a tensor-wise file read 34.8 KB "per-channel")
        std::uint64_t stored = 0;
        for (const StoredWeights& l : s.storedWeights) stored += l.bytes;
        std::printf("Stored weights: %s (as the Stored table below gives them, layer by layer; biases not counted)\n",
                    bytesText(stored).c_str());
    }
    if (s.fileBytes) std::printf("File size: %s\n", bytesText(*s.fileBytes).c_str());
    if (s.source != "preset")
        std::printf("Input normalisation: %s\n",
                    s.normalizationKnown     ? (s.normalization + " (stored in the file)").c_str()
                    : !planNormalization.empty() ? ("not stored in the file; " + planNormalization + ", which train --plan applies").c_str()
                                             : "not stored in the file (train, eval and analyze use the train set's statistics "
                                               "unless --normalize is given)");
    if (s.source != "preset") {
        std::string names;
        for (std::size_t i = 0; i < s.classNames.size(); ++i) names += (i ? ", " : "") + std::to_string(i) + " " + s.classNames[i];
        std::printf("Classes: %s\n", s.classNames.empty() ? "not named in the file" : (names + " (by output)").c_str());
    }
    for (const std::string& n : s.notes) std::printf("Note: %s\n", n.c_str());
    if (!s.storedWeights.empty()) { // what a plan became, read back from the file
        std::size_t w = 5, g = 11;
        for (const StoredWeights& l : s.storedWeights) {
            w = std::max(w, columns(l.layer));
            g = std::max(g, l.granularity.size());
        }
        std::printf("Stored: %-*s  %-8s  %-*s  %12s  %11s\n", static_cast<int>(w), "Layer", "Weights", static_cast<int>(g), "Granularity",
                    "Bytes", "Bits/weight");
        for (const StoredWeights& l : s.storedWeights)
            std::printf("        %s  %-8s  %-*s  %12s  %11.2f\n", padded(l.layer, w).c_str(), l.format.c_str(), static_cast<int>(g),
                        l.granularity.empty() ? "-" : l.granularity.c_str(), withCommas(l.bytes).c_str(), l.bitsPerWeight);
        std::printf("        (Bytes: the weights with their scales and zero points; a plan's table adds the bias)\n");
    }
    std::printf("%s\n", rule.c_str());
}

} // namespace

int runInfo(const std::vector<std::string>& argv)
{
    // --threads: scripts pass the same flags to every command (tester 11); info has nothing to run on them.
    const Args args(argv, {"--input-shape", "--classes", "--plan", "--layer", "--keep-fp32", "--format", "--granularity", "--threads"},
                    {"--json", "--help"});
    if (args.has("--help")) {
        std::fputs(kInfoHelp, stdout);
        return kExitOk;
    }
    if (args.positional().size() != 1) throw UsageError("give one model: a preset name, a .qsm or an .onnx file; see --help");
    const std::string spec = args.positional()[0];
    const bool file = isModelFile(spec);
    if (file && args.has("--classes")) throw UsageError("--classes applies to presets; " + spec + " has its own");
    const Shape in = parseInputShape(args.str("--input-shape", "1x28x28"));
    const std::size_t classes = args.u64("--classes", 10, 2, 100000);
    const bool sized = file && args.has("--input-shape");
    const ModelSummary s = sized ? summarizeFile(spec, in[1], in[2]) : summarize(spec, in[0], in[1], in[2], classes);
    // A file's own shape is fine to give (tester 18 #7); another channel count is the channels'
    // fault, not the flag's (#4).
    if (sized && s.inputShape != in) {
        if (!s.dynamicImageSize)
            throw UsageError("--input-shape " + shapeText(in) + ": " + spec + " takes " + shapeText(s.inputShape) +
                             " only (--input-shape sizes presets, and ONNX graphs whose height or width is dynamic)");
        if (s.inputShape.at(0) != in[0])
            throw UsageError("--input-shape " + shapeText(in) + ": " + spec + " takes images of " + std::to_string(s.inputShape.at(0)) +
                             (s.inputShape.at(0) == 1 ? " channel" : " channels") + "; give " + std::to_string(s.inputShape.at(0)) + "x" +
                             std::to_string(in[1]) + "x" + std::to_string(in[2]));
    }
    // A graph dynamic in one side keeps the other (tester 17 #5): say so rather than show another size.
    if (sized && (s.inputShape.at(1) != in[1] || s.inputShape.at(2) != in[2])) {
        const bool h = s.inputShape.at(1) != in[1];
        throw UsageError("--input-shape " + shapeText(in) + ": " + spec + "'s " + (h ? "height" : "width") + " is fixed at " +
                         std::to_string(s.inputShape.at(h ? 1 : 2)) + " (only its " + (h ? "width" : "height") +
                         " is dynamic); give " + shapeText(Shape{in[0], h ? s.inputShape.at(1) : in[1], h ? in[2] : s.inputShape.at(2)}));
    }
    std::optional<PlanSize> plan;
    std::string planNormalization; // a plan's "normalize", which train --plan applies to a file without one
    if (args.has("--plan") || args.has("--layer") || args.has("--keep-fp32") || args.has("--format") || args.has("--granularity")) {
        PrecisionPlan p;
        p.defaults.format = args.str("--format", p.defaults.format);
        p.defaults.granularity = args.str("--granularity", p.defaults.granularity);
        if (args.has("--plan")) {
            p = readPlanFile(args.str("--plan", ""), p.defaults);
            if (args.has("--format")) p.defaults.format = args.str("--format", "");
            if (args.has("--granularity")) p.defaults.granularity = args.str("--granularity", "");
        }
        checkLayerFlagsAgree(args);
        applyLayerSpecs(p, args.all("--layer"));
        for (const std::string& names : args.all("--keep-fp32")) applyKeepFp32(p, names);
        if (file && readModelFile(spec).quantized) // sizes a plan would give are sizes of an FP32 model's weights
            throw ConfigError(spec + " is an integer model already; --plan, --layer, --keep-fp32, --format and --granularity size "
                                     "plans for an FP32 model or a preset (info FILE alone gives this file's stored sizes)");
        const std::unique_ptr<Model> model =
            file ? modelFromFile(spec, false)(Shape{s.inputShape}, s.classes, 1) : makeModel(spec, in[0], in[1], in[2], classes, 1);
        checkPlan(p, *model);
        plan = planSize(*model, p);
        if (!p.inputNormalization.empty()) planNormalization = "normalize \"" + p.inputNormalization + "\" from the plan " + p.source;
    }
    if (args.has("--json")) {
        nlohmann::json j = toJson(s);
        if (plan) j["plan"] = planJson(*plan);
        if (!planNormalization.empty()) j["plan_normalize"] = planNormalization;
        printJsonLine(j);
    } else {
        printTable(s, planNormalization);
        if (plan) printPlan(*plan);
    }
    return kExitOk;
}

} // namespace quantscope::cli
