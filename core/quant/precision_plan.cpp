#include "quant/precision_plan.h"

#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/observer.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

namespace quantscope {

namespace {

using nlohmann::json;

std::string formatNames()
{
    std::string s;
    for (const NumberFormat& f : numberFormats()) s += (s.empty() ? "" : ", ") + f.name;
    return s;
}

const char* const kCalibrations = "minmax, moving-average, percentile, mse";
const char* const kGranularities = "global, layer, tensor, channel, group:N";

[[noreturn]] void fail(const std::string& source, const std::string& what)
{
    throw ConfigError("plan " + source + ": " + what);
}

std::string where(const std::string& layer) { return layer.empty() ? "default" : "layer '" + layer + "'"; }

void checkFormat(const std::string& source, const std::string& layer, const std::string& name)
{
    for (const NumberFormat& f : numberFormats())
        if (f.name == name) return;
    fail(source, where(layer) + ": unknown format '" + name + "' (valid: " + formatNames() + ")");
}

void checkActFormat(const std::string& source, const std::string& layer, const std::string& name)
{
    checkFormat(source, layer, name);
    const NumberFormat& f = findFormat(name);
    if (isMxFormat(f))
        fail(source, where(layer) + ": activation format '" + name +
                         "' is a block format; activations take an integer (uint8, int8...) or float format");
    if (isTernaryOrBinary(f)) // as --act-format: a ReLU's output on {-1, 0, 1} loses its sign's half
        fail(source, where(layer) + ": activation format '" + name +
                         "' is a weight format; activations take an integer (uint8, int8...) or float format");
}

Granularity checkGranularity(const std::string& source, const std::string& layer, const std::string& g)
{
    try {
        return parseGranularity(g);
    } catch (const ConfigError& e) { // unknown, or a group size that is not a positive integer
        fail(source, where(layer) + ": " + e.what());
    }
}

void checkCalibration(const std::string& source, const std::string& layer, const std::string& c)
{
    try {
        parseCalibration(c);
    } catch (const ConfigError&) {
        fail(source, where(layer) + ": unknown calibration '" + c + "' (valid: " + kCalibrations + ")");
    }
}

std::string stringField(const json& j, const char* key, const std::string& source, const std::string& layer)
{
    const json& v = j.at(key);
    if (!v.is_string()) fail(source, where(layer) + ": \"" + key + "\" must be a string");
    return v.get<std::string>();
}

// "int4" or "int4:group:32" (format, then an optional granularity).
void splitFormatSpec(const std::string& spec, std::string& format, std::optional<std::string>& granularity)
{
    const auto colon = spec.find(':');
    format = spec.substr(0, colon);
    if (colon != std::string::npos) granularity = spec.substr(colon + 1);
}

// A layer's own granularity beside its own float or MX format, which has no scale to place it
// (tester 10: taken without a word). The default may give one: it is for the integer layers.
void checkNoScaleGranularity(const std::string& source, const std::string& layer, const LayerOverride& o)
{
    if (layer.empty() || !o.format || !o.granularity) return;
    checkFormat(source, layer, *o.format);
    if (!needsScale(findFormat(*o.format)))
        fail(source, where(layer) + ": granularity '" + *o.granularity + "' with format " + *o.format +
                         ", which takes none (float and MX formats have no scale to place)");
}

void readFields(const json& j, const std::string& source, const std::string& layer, LayerOverride& o)
{
    if (j.is_string()) {
        std::string f;
        splitFormatSpec(j.get<std::string>(), f, o.granularity);
        o.format = f;
        checkNoScaleGranularity(source, layer, o);
        return;
    }
    if (!j.is_object())
        fail(source, where(layer) + ": expected an object {\"format\":...} or a string such as \"int4:channel\"");
    for (const auto& [key, value] : j.items()) {
        if (key == "format") o.format = stringField(j, "format", source, layer);
        else if (key == "granularity") o.granularity = stringField(j, "granularity", source, layer);
        else if (key == "calibration") o.calibration = stringField(j, "calibration", source, layer);
        else if (key == "act_format") o.activationFormat = stringField(j, "act_format", source, layer);
        else if (key == "keep_fp32") {
            if (!value.is_boolean()) fail(source, where(layer) + ": \"keep_fp32\" must be true or false");
            if (value.get<bool>()) {
                // With a format of its own the entry contradicts itself (keep_fp32 used to win in silence).
                if (j.contains("format") && j["format"].is_string() && j["format"].get<std::string>() != "fp32")
                    fail(source, where(layer) + ": \"keep_fp32\": true and \"format\": \"" + j["format"].get<std::string>() +
                                     "\" contradict each other; keep one");
                o.format = "fp32";
            }
        } else
            fail(source, where(layer) + ": unknown key '" + key +
                             "' (valid: format, granularity, calibration, act_format, keep_fp32" +
                             (layer.empty() ? ", act_calibration" : "") + ")");
    }
    checkNoScaleGranularity(source, layer, o);
}

// Checks the names in one entry (formats, granularity, calibration), not its fit to a layer.
void checkNames(const std::string& source, const std::string& layer, const LayerOverride& o)
{
    if (o.format) checkFormat(source, layer, *o.format);
    if (o.granularity) checkGranularity(source, layer, *o.granularity);
    if (o.calibration) checkCalibration(source, layer, *o.calibration);
    if (o.activationFormat) checkActFormat(source, layer, *o.activationFormat);
}

void apply(LayerPrecision& p, const LayerOverride& o)
{
    if (o.format) p.format = *o.format;
    if (o.granularity) p.granularity = *o.granularity;
    if (o.calibration) p.calibration = *o.calibration;
    if (o.activationFormat) p.activationFormat = *o.activationFormat;
}

const Param* weightOf(const Layer& l)
{
    for (const Param* p : const_cast<Layer&>(l).params())
        if (p->isWeight) return p;
    return nullptr;
}

bool isPlanLayer(const Layer& l) { return l.kind() == LayerKind::Conv2d || l.kind() == LayerKind::Linear; }

} // namespace

LayerPrecision PrecisionPlan::forLayer(const std::string& layer) const
{
    LayerPrecision p = defaults;
    for (const LayerOverride& o : layers)
        if (o.layer == layer) apply(p, o);
    return p;
}

LayerOverride& PrecisionPlan::entry(const std::string& layer)
{
    for (LayerOverride& o : layers)
        if (o.layer == layer) return o;
    layers.push_back({});
    layers.back().layer = layer;
    return layers.back();
}

std::vector<std::string> planLayerNames(const Model& model)
{
    std::vector<std::string> names;
    for (std::size_t i = 0; i < model.size(); ++i)
        if (isPlanLayer(model.layer(i))) names.push_back(model.layer(i).name());
    return names;
}

PrecisionPlan parsePlanJson(const std::string& text, const std::string& source, const LayerPrecision& defaults)
{
    PrecisionPlan plan;
    plan.defaults = defaults;
    plan.source = source;
    // JSON keeps the last of two equal keys in silence; in a plan that hides a contradiction
    // ("conv1" given int4 and int8), so a repeated key in any object is an error.
    std::vector<std::set<std::string>> keysSeen;
    std::string repeated;
    const json::parser_callback_t noRepeats = [&](int, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) keysSeen.emplace_back();
        else if (event == json::parse_event_t::object_end && !keysSeen.empty()) keysSeen.pop_back();
        else if (event == json::parse_event_t::key && !keysSeen.empty() && repeated.empty() &&
                 !keysSeen.back().insert(parsed.get<std::string>()).second)
            repeated = parsed.get<std::string>();
        return true;
    };
    // A file that is not JSON text at all is a damaged input (exit 3), not a plan to correct (exit 2).
    if (const std::size_t nul = text.find('\0'); nul != std::string::npos)
        throw FormatError("plan " + source + ": not a text file (a NUL byte at offset " + std::to_string(nul) + ")");
    json j;
    try {
        j = json::parse(text, noRepeats);
    } catch (const json::exception& e) { // a syntax error, or a number past double's range (1e400: out_of_range.406)
        // nlohmann's text without its "[json.exception.parse_error.101] " tag: "parse error at
        // line 1, column 3: syntax error while parsing value - ..."
        std::string what = e.what();
        if (const std::size_t tag = what.find("] "); what.rfind("[json.exception.", 0) == 0 && tag != std::string::npos)
            what.erase(0, tag + 2);
        throw FormatError("plan " + source + ": not valid JSON (a truncated or damaged file?): " + what);
    }
    if (!repeated.empty()) fail(source, "the key '" + repeated + "' appears twice in one object; keep one");
    if (!j.is_object()) fail(source, "expected a JSON object with \"default\" and \"layers\"");
    for (const auto& [key, value] : j.items()) {
        if (key == "version") {
            if (!value.is_number_integer() || value.get<long long>() != 1)
                fail(source, "\"version\" must be 1 (the only plan version)");
        } else if (key == "default") {
            json d = value;
            if (d.is_object() && d.contains("act_calibration")) { // whole-model only
                plan.activationCalibration = stringField(d, "act_calibration", source, "");
                checkCalibration(source, "", plan.activationCalibration);
                d.erase("act_calibration");
            }
            if (d.is_object() && d.contains("normalize")) { // whole-model only
                // Kept as written: data/ (Normalization::parse) is a room beside quant/, so the
                // commands that apply it check it (train --plan, the window's plan loading).
                plan.inputNormalization = stringField(d, "normalize", source, "");
                d.erase("normalize");
            }
            LayerOverride o;
            readFields(d, source, "", o);
            checkNames(source, "", o);
            apply(plan.defaults, o);
        } else if (key == "layers") {
            if (!value.is_object()) fail(source, "\"layers\" must be an object {\"layer name\": {...}}");
            for (const auto& [name, entry] : value.items()) {
                if (name.empty()) fail(source, "a layer entry has an empty name");
                if (entry.is_object() && entry.contains("act_calibration"))
                    fail(source, where(name) + ": \"act_calibration\" is a whole-model setting; put it in \"default\"");
                if (entry.is_object() && entry.contains("normalize"))
                    fail(source, where(name) + ": \"normalize\" is a whole-model setting; put it in \"default\"");
                LayerOverride& o = plan.entry(name);
                readFields(entry, source, name, o);
                checkNames(source, name, o);
            }
        } else {
            fail(source, "unknown key '" + key + "' (valid: version, default, layers)");
        }
    }
    return plan;
}

PrecisionPlan readPlanFile(const std::string& path, const LayerPrecision& defaults)
{
    const std::vector<std::uint8_t> bytes = readFileBytes(path, 1u << 20);
    return parsePlanJson(std::string(bytes.begin(), bytes.end()), path, defaults);
}

std::string planToJson(const PrecisionPlan& plan)
{
    json d = {{"format", plan.defaults.format},
              {"granularity", plan.defaults.granularity},
              {"calibration", plan.defaults.calibration},
              {"act_format", plan.defaults.activationFormat}};
    if (!plan.activationCalibration.empty()) d["act_calibration"] = plan.activationCalibration;
    if (!plan.inputNormalization.empty()) d["normalize"] = plan.inputNormalization;
    json layers = json::object();
    for (const LayerOverride& o : plan.layers) {
        json e = json::object();
        if (o.format) e["format"] = *o.format;
        // Not beside the layer's own float or MX format, which takes none (the window's plan table
        // keeps a layer's granularity when its format changes to one; readPlanFile refuses the pair).
        const auto& formats = numberFormats();
        const auto own = o.format ? std::find_if(formats.begin(), formats.end(), [&](const NumberFormat& f) { return f.name == *o.format; })
                                  : formats.end();
        if (o.granularity && (own == formats.end() || needsScale(*own))) e["granularity"] = *o.granularity;
        if (o.calibration) e["calibration"] = *o.calibration;
        if (o.activationFormat) e["act_format"] = *o.activationFormat;
        layers[o.layer] = e;
    }
    json j = {{"version", 1}, {"default", d}, {"layers", layers}};
    return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"; // names that are not UTF-8: U+FFFD
}

void writePlanFile(const std::string& path, const PrecisionPlan& plan) { writeFileAtomic(path, planToJson(plan)); }

void applyLayerSpec(PrecisionPlan& plan, const std::string& spec)
{
    const auto eq = spec.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw ConfigError("--layer '" + spec + "': expected NAME=FORMAT[:GRANULARITY], e.g. fc1=int4:channel");
    const std::string name = spec.substr(0, eq);
    LayerOverride o;
    std::string f;
    splitFormatSpec(spec.substr(eq + 1), f, o.granularity);
    o.format = f;
    checkNames("--layer", name, o);
    if (o.granularity && !needsScale(findFormat(f))) // tester 10: fc1=fp16:group:4 was taken without a word
        throw ConfigError("--layer '" + spec + "': " + f + " takes no granularity (float and MX formats have no scale to place); give " +
                          name + "=" + f);
    LayerOverride& e = plan.entry(name);
    e.format = o.format;
    if (o.granularity) e.granularity = o.granularity;
}

void applyLayerSpecs(PrecisionPlan& plan, const std::vector<std::string>& specs)
{
    std::set<std::string> named;
    for (const std::string& spec : specs) {
        const std::string name = spec.substr(0, spec.rfind('='));
        if (!name.empty() && !named.insert(name).second)
            throw ConfigError("--layer names '" + name + "' twice; keep one");
    }
    for (const std::string& spec : specs) applyLayerSpec(plan, spec);
}

void applyKeepFp32(PrecisionPlan& plan, const std::string& names)
{
    std::size_t b = 0;
    while (b <= names.size()) {
        std::size_t e = names.find(',', b);
        if (e == std::string::npos) e = names.size();
        const std::string n = names.substr(b, e - b);
        if (n.empty()) throw ConfigError("--keep-fp32 '" + names + "': expected NAME[,NAME], e.g. conv1,fc2");
        plan.entry(n).format = "fp32";
        b = e + 1;
    }
}

void checkPlan(const PrecisionPlan& plan, const Model& model)
{
    const std::string source = plan.source.empty() ? "(--layer, --keep-fp32)" : plan.source;
    LayerOverride d{"", plan.defaults.format, plan.defaults.granularity, plan.defaults.calibration,
                    plan.defaults.activationFormat};
    checkNames(source, "", d);
    const std::vector<std::string> names = planLayerNames(model);
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    for (const LayerOverride& o : plan.layers) {
        const auto it = std::find(names.begin(), names.end(), o.layer);
        if (it == names.end())
            fail(source, "layer '" + o.layer + "' is not a Conv2d or Linear layer of the model (layers: " + list + ")");
        checkNames(source, o.layer, o);
        const LayerPrecision p = plan.forLayer(o.layer);
        const NumberFormat& f = findFormat(p.format);
        if (!needsScale(f)) continue; // float and MX formats take no granularity
        // A group size the layer inherits from the default is clamped to its rows (docs/PLANS.md),
        // whatever else the entry sets (tester 23: sensitivity's format-only entries were refused).
        if (!o.granularity) continue;
        const Granularity g = parseGranularity(p.granularity);
        if (g.kind != GranularityKind::Group) continue;
        for (std::size_t i = 0; i < model.size(); ++i) {
            if (model.layer(i).name() != o.layer) continue;
            const Param* w = weightOf(model.layer(i));
            const std::size_t row = w && w->value.rank() > 0 ? w->value.numel() / w->value.dim(0) : 0;
            if (g.groupSize > row)
                fail(source, "layer '" + o.layer + "': group size " + std::to_string(g.groupSize) +
                                 " is larger than its rows of " + std::to_string(row) +
                                 " weights (valid: group:1..group:" + std::to_string(row) + ", channel, tensor, layer, global)");
        }
    }
}

} // namespace quantscope
