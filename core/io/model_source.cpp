#include "io/model_source.h"

#include "data/dataset.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/batchnorm2d.h"
#include "nn/model_zoo.h"
#include "util/ascii_text.h"
#include "util/errors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace quantscope {

namespace {

std::string shapeText(const Shape& s)
{
    std::string t;
    for (std::size_t i = 0; i < s.size(); ++i) t += (i ? "x" : "") + std::to_string(s[i]);
    return t;
}

} // namespace

bool isModelFile(const std::string& spec)
{
    const std::string e = lowerExtension(spec);
    return e == ".onnx" || e == ".qsm";
}

namespace {

// What a file's content says it is, whatever its name: a .qsm (its magic) or, with parseOnnx, an
// ONNX model (it parses as one), else neither.
enum class ModelContent { Qsm, Onnx, Neither };
ModelContent modelContent(const std::string& path, bool parseOnnx = true)
{
    {
        std::ifstream f(path, std::ios::binary);
        std::uint8_t head[8] = {};
        if (f.read(reinterpret_cast<char*>(head), 8) && std::memcmp(head, kQsmMagic, 8) == 0) return ModelContent::Qsm;
    }
    if (!parseOnnx) return ModelContent::Neither;
    try {
        readOnnxModel(path);
        return ModelContent::Onnx;
    } catch (const Error&) {
    }
    return ModelContent::Neither;
}

} // namespace

std::string misnamedModelFile(const std::string& path)
{
    const auto& presets = modelPresets(); // a preset's name is the preset, whatever file the folder has
    if (std::any_of(presets.begin(), presets.end(), [&](const ModelPresetInfo& p) { return path == p.name; })) return "";
    std::error_code ec;
    if (isModelFile(path) || !std::filesystem::is_regular_file(path, ec)) return "";
    switch (modelContent(path)) {
    case ModelContent::Qsm: return "holds a QuantScope .qsm model: rename it to end in .qsm";
    case ModelContent::Onnx: return "holds an ONNX model: rename it to end in .onnx";
    case ModelContent::Neither: break;
    }
    return "";
}

std::string severalOutputsHint(const ExportedModel& m, std::size_t classes)
{
    if (m.graphOutputs < 2) return "";
    return " ('" + m.onnxOutputName + "', the first of the graph's " + std::to_string(m.graphOutputs) + " outputs: none is declared [N, " +
           std::to_string(classes) + "]; export a forward that returns the class scores first)";
}

bool readsDifferentlyFor(const ExportedModel& m, std::size_t height, std::size_t width, std::size_t classes)
{
    return (m.dynamicImageSize && (m.height != height || m.width != width)) || (m.graphOutputs > 1 && m.classes != classes);
}

ExportedModel readModelFile(const std::string& path, std::size_t height, std::size_t width, std::size_t classes)
{
    const std::string e = lowerExtension(path);
    if (e != ".qsm" && e != ".onnx") {
        const std::string what = misnamedModelFile(path);
        throw ConfigError(path + ": " + (what.empty() ? "not a model file (expected .qsm or .onnx)" : what));
    }
    try {
        return e == ".qsm" ? readQsm(path) : readOnnxModel(path, height, width, classes);
    } catch (const FormatError&) {
        // A file of the other kind under a wrong name: say so rather than "bad magic number" or
        // "the protobuf does not parse".
        const ModelContent c = modelContent(path, e == ".qsm"); // an .onnx that did not parse is not parsed again
        if (e == ".onnx" && c == ModelContent::Qsm)
            throw FormatError(path + ": is a QuantScope .qsm model, not ONNX: rename it to end in .qsm");
        if (e == ".qsm" && c == ModelContent::Onnx)
            throw FormatError(path + ": is an ONNX model, not a QuantScope .qsm: rename it to end in .onnx");
        throw;
    }
}

InputNormalization resolveInputNormalization(const ExportedModel& m, const std::string& path, const std::optional<Normalization>& given,
                                             std::size_t channels, const std::string& askedBy)
{
    using Kind = InputNormalization::Kind;
    InputNormalization r;
    if (!m.normalizationKnown) {
        r.kind = given ? Kind::Given : Kind::NotStored;
        r.value = given ? given->broadcast(channels) : Normalization::identity(channels);
        return r;
    }
    r.value = m.normalization.broadcast(channels);
    if (!given || given->broadcast(channels).sameAs(r.value)) {
        r.kind = Kind::Stored;
        return r;
    }
    if (!m.normalizationFromGraph) {
        r.kind = Kind::Conflict;
        r.note = path + " stores its input normalisation (" + m.normalization.describe() + "), and " + askedBy + " asks for " +
                 given->broadcast(channels).describe();
        return r;
    }
    const Normalization outside = given->broadcast(channels);
    r.kind = Kind::Composed;
    r.value = r.value.after(outside);
    r.note = path + " normalises its input itself (" +
             (m.normalization == Normalization::identity(m.normalization.channels()) ? std::string("with its own layers")
                                                                                   : m.normalization.describe()) +
             "); the given " + outside.describe() + " is applied before it, as the images were normalised before the graph in training: " +
             r.value.describe() + " of the pixels in all";
    return r;
}

void loadFloatWeights(Model& model, const ExportedModel& m, const std::string& source)
{
    if (m.quantized) throw ConfigError(source + " is an integer model; training, PTQ and analyze start from an FP32 model (export that one as FP32; eval runs this one)");
    std::set<const StoredLayer*> loaded; // the file's layers whose weights went into the model
    // The file's model name is a preset's only when QuantScope wrote it; else it is the file's
    // stem, which --model does not take (tester 14: "it holds a pre_lenet5seq model; choose that model").
    const bool preset = std::any_of(modelPresets().begin(), modelPresets().end(), [&](const ModelPresetInfo& p) { return m.modelName == p.name; });
    for (std::size_t i = 0; i < model.size(); ++i) {
        Layer& layer = model.layer(i);
        std::vector<std::pair<std::string, Tensor*>> wanted;
        for (Param* p : layer.params()) wanted.emplace_back(p->name, &p->value);
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&layer)) {
            wanted.emplace_back("running_mean", &bn->runningMean());
            wanted.emplace_back("running_var", &bn->runningVar());
        }
        if (wanted.empty()) continue;
        // The layer of that name, or PyTorch's name for it: common.py's ResNet8 keeps its projection
        // shortcut in an nn.Sequential (layer2.shortcut.0 and .1, where the preset says
        // layer2.shortcut and layer2.shortcut_bn; tester 11).
        std::vector<std::string> names{layer.name()};
        const std::string& ln = layer.name();
        const auto endsWith = [&](const char* suffix) {
            const std::size_t k = std::strlen(suffix);
            return ln.size() > k && ln.compare(ln.size() - k, k, suffix) == 0;
        };
        if (endsWith(".shortcut")) names.push_back(ln + ".0");
        if (endsWith(".shortcut_bn")) names.push_back(ln.substr(0, ln.size() - 3) + ".1");
        const StoredLayer* stored = nullptr;
        for (const std::string& name : names)
            for (const StoredLayer& s : m.layers)
                if (!stored && s.name == name) stored = &s;
        if (!stored || stored->kind != layer.kind()) {
            // QuantScope's ONNX export folds BatchNorm into the convolutions: the file is the
            // preset's network, but without the BatchNorm layers --init would load (tester 12: the
            // message told them to choose the model they had chosen).
            // Folded, unless the file holds another preset (tester 24: seed-cnn, which never had a
            // BatchNorm, into seed-cnn-bn was said to have its BatchNorm folded)
            const bool folded = layer.kind() == LayerKind::BatchNorm2d && !(preset && m.modelName != model.name()) &&
                                std::none_of(m.layers.begin(), m.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::BatchNorm2d; });
            if (folded)
                throw ConfigError(source + ": holds " + m.modelName + " with its BatchNorm folded into the convolutions (as "
                                  "QuantScope's ONNX export writes it, and torch.onnx.export unless given "
                                  "training=torch.onnx.TrainingMode.PRESERVE), so it has no BatchNorm2d layer '" + layer.name() +
                                  "' for --init to load; start from it with --model FILE instead, or give --init the .qsm");
            // --init loads by layer name into the chosen preset.
            std::string names; // the file's first layers with weights
            std::size_t shown = 0;
            for (const StoredLayer& l : m.layers) {
                if (l.tensors.empty()) continue;
                if (shown++ == 4) {
                    names += ", ...";
                    break;
                }
                names += (shown > 1 ? ", " : "") + l.name;
            }
            throw ConfigError(source + ": has no " + layerKindName(layer.kind()) + " layer '" + layer.name() + "' for --init, which loads weights by " +
                              "layer name into the chosen model (" +
                              (preset ? "the file holds a " + m.modelName + " model: choose --model " + m.modelName
                                      : "the file's layers are " + names + "; to train the file's own network, give it to --model (--model " +
                                            source + ") instead of --init") +
                              ")");
        }
        loaded.insert(stored);
        for (auto& [name, t] : wanted) {
            const StoredTensor* st = stored->tensor(name);
            if (!st || st->shape != t->shape())
                throw ConfigError(source + ": layer '" + layer.name() + "' tensor '" + name + "' is " +
                                  (st ? shapeString(st->shape) : std::string("missing")) + ", the model needs " + shapeString(t->shape()));
            t->values() = st->dequantized();
        }
    }
    // Weights of the file that no layer of the model took would be dropped without a word (tester
    // 24: a seed-cnn-bn file into --model seed-cnn lost its BatchNorms and scored otherwise).
    std::string dropped;
    std::size_t count = 0;
    for (const StoredLayer& l : m.layers)
        if (!l.tensors.empty() && !loaded.count(&l) && count++ < 4)
            dropped += std::string(dropped.empty() ? "" : ", ") + "'" + l.name + "' (" + layerKindName(l.kind) + ")";
    if (count > 0) {
        throw ConfigError(source + ": its layer" + (count == 1 ? " " : "s ") + dropped + (count > 4 ? ", ..." : "") + " ha" +
                          (count == 1 ? "s" : "ve") + " weights that the chosen model (" + model.name() + ") has no layer for; --init "
                          "would drop them (" +
                          (preset && m.modelName != model.name() ? "the file holds a " + m.modelName + " model: choose --model " + m.modelName
                                                                 : "give the file to --model to train its own network") +
                          ")");
    }
}

ModelFactory modelFromFile(const std::string& path, bool reinit)
{
    return [path, reinit](const Shape& input, std::size_t classes, std::uint64_t seed) {
        const ExportedModel m = readModelFile(path, input.at(1), input.at(2), classes);
        if (m.quantized)
            throw ConfigError(path + " is an integer model; training, PTQ and analyze start from an FP32 model (export that one as FP32; eval runs this one)");
        const Shape theirs{m.channels, m.height, m.width};
        // A graph of dynamic height and width was read at the data's size: only its channels can
        // differ, and naming a size would blame the wrong thing (tester 17 #12).
        if (m.dynamicImageSize && m.channels != input.at(0))
            throw ConfigError(path + ": the model takes images of " + std::to_string(m.channels) + " channel" + (m.channels == 1 ? "" : "s") +
                              " (its height or width is dynamic); the dataset's images have " + std::to_string(input.at(0)) +
                              (input.at(0) == 1 ? " channel" : " channels") + channelMismatchHint(m.channels, input.at(0)));
        if (theirs != input && m.dynamicImageSize) { // one side dynamic, the other fixed (tester 18 #2)
            const bool h = m.height != input.at(1);
            throw ConfigError(path + ": the model takes " + shapeText(theirs) + " inputs (C x H x W): its " + (h ? "height" : "width") +
                              " is fixed at " + std::to_string(h ? m.height : m.width) + ", only its " + (h ? "width" : "height") +
                              " is dynamic; the dataset's images are " + shapeText(input) + " (--resize " + std::to_string(m.height) + "x" +
                              std::to_string(m.width) + " reads them at its size)");
        }
        if (theirs != input)
            throw ConfigError(path + ": the model takes " + shapeText(theirs) + " inputs (C x H x W); the dataset's images are " +
                              shapeText(input) +
                              (m.channels != input.at(0) ? channelMismatchHint(m.channels, input.at(0))
                                                         : " (--resize " + std::to_string(m.height) + "x" + std::to_string(m.width) +
                                                               " reads them at its size)"));
        if (m.classes != classes)
            throw ConfigError(path + ": the model has " + std::to_string(m.classes) + (m.classes == 1 ? " output" : " outputs") + "; the dataset has " +
                              std::to_string(classes) + " classes" + severalOutputsHint(m, classes));
        std::unique_ptr<Model> model = buildModel(m);
        if (reinit) model->initParams(seed);
        return model;
    };
}

ModelFactory presetWithWeights(const std::string& preset, const std::string& path)
{
    return [preset, path](const Shape& input, std::size_t classes, std::uint64_t seed) {
        std::unique_ptr<Model> model = makeModel(preset, input.at(0), input.at(1), input.at(2), classes, seed);
        loadFloatWeights(*model, readModelFile(path, input.at(1), input.at(2)), path);
        return model;
    };
}

} // namespace quantscope
