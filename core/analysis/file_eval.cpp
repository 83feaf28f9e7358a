#include "analysis/file_eval.h"

#include "io/model_source.h"
#include "util/errors.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string_view>

namespace quantscope {

namespace {

std::string shapeText(std::size_t c, std::size_t h, std::size_t w)
{
    return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

std::string nameList(const std::vector<std::string>& v)
{
    std::string s;
    for (std::size_t i = 0; i < v.size() && i < 12; ++i) s += (i ? ", " : "") + v[i];
    return v.size() > 12 ? s + ", ..." : s;
}

// Predicts set[b, e) in batches into pred; false when stopped.
bool predictAll(ModelRunner& runner, const LabeledImages& set, std::size_t batch, std::int32_t* pred, const std::atomic<bool>* stop,
                const std::function<void(std::size_t)>& done)
{
    for (std::size_t b = 0; b < set.size(); b += batch) {
        if (stop && stop->load()) return false;
        const std::size_t e = std::min(set.size(), b + batch);
        runner.predict(set.pixels.data() + b * set.imageBytes(), e - b, pred + b);
        if (done) done(e);
    }
    return true;
}

double top1(const std::vector<std::int32_t>& pred, const std::vector<std::int32_t>& labels)
{
    std::size_t correct = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == labels[i];
    return pred.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(pred.size());
}

} // namespace

DataMatch prepareModelForData(ExportedModel& model, const std::string& path, const Dataset& data, bool resized,
                              const std::optional<Normalization>& normalization)
{
    const LabeledImages& t = data.test;
    // An ONNX graph of dynamic height and width is read again at the data's size (a graph that
    // cannot take that size fails there, naming the layer), and one of several outputs again for
    // the data's classes (the output declared [N, classes]).
    if (t.channels == model.channels && readsDifferentlyFor(model, t.height, t.width, data.numClasses()))
        model = readModelFile(path, t.height, t.width, data.numClasses());
    if (t.channels != model.channels || t.height != model.height || t.width != model.width)
        throw ConfigError(path + " takes " + shapeText(model.channels, model.height, model.width) + " images; " + data.dir +
                          (resized ? " resized gives " : " has ") + shapeText(t.channels, t.height, t.width) +
                          (t.channels == model.channels && !resized
                               ? "; resizing to " + std::to_string(model.height) + "x" + std::to_string(model.width) +
                                     " (--resize HxW in the CLI, the Dataset dock's Resize field in the window) brings the images to the "
                                     "model's size"
                           : model.dynamicImageSize && t.channels == model.channels
                               ? "; the model's " + std::string(t.height != model.height ? "height" : "width") + " is fixed at " +
                                     std::to_string(t.height != model.height ? model.height : model.width) + " (only its " +
                                     (t.height != model.height ? "width" : "height") + " is dynamic): resize to " +
                                     std::to_string(model.height) + "x" + std::to_string(model.width)
                               : channelMismatchHint(model.channels, t.channels)));
    if (model.classes != data.numClasses())
        throw ConfigError(path + " has " + std::to_string(model.classes) + (model.classes == 1 ? " class" : " classes") + " (outputs); the data has " +
                          std::to_string(data.numClasses()) + severalOutputsHint(model, data.numClasses()));

    DataMatch m;
    if (normalization) normalization->broadcast(model.channels).check(model.channels, path + ": the input normalisation");
    // eval refuses a conflict with --normalize's name before it gets here; the Evaluate dialog's field is Normalize.
    const InputNormalization n = resolveInputNormalization(model, path, normalization, model.channels, "Normalize");
    switch (n.kind) {
    case InputNormalization::Kind::Conflict: // another one would evaluate a model on inputs it was not trained on
        throw ConfigError(n.note + "; a normalisation is given only to models that do not store one");
    case InputNormalization::Kind::NotStored:
        model.normalization = data.normalization.broadcast(model.channels);
        m.normalizationNote = path + " does not say how its input was normalised: using the train set's statistics, " +
                              model.normalization.describe();
        break;
    case InputNormalization::Kind::Composed:
        m.composedNote = n.note;
        model.normalization = n.value;
        break;
    default: model.normalization = n.value; break;
    }

    // The class names the file stores against the data's: the same names in another order (a
    // renamed or added folder shifts every label) are matched by name; other names are said.
    m.labels = t.labels;
    const ClassMatch classes = matchClasses(model.classNames, data.classNames);
    if (classes.kind == ClassMatch::Kind::Reordered) {
        for (std::int32_t& l : m.labels) l = classes.dataToModel[static_cast<std::size_t>(l)];
        m.classNote = "the data's class folders are in another order than the model's classes (" + nameList(model.classNames) +
                      "); labels are matched by name";
    } else if (classes.kind == ClassMatch::Kind::Different) {
        m.classNote = "the model was trained on the classes " + nameList(model.classNames) + "; the data's are " + nameList(data.classNames) +
                      ": labels are compared by index, so the accuracy means something only if they are the same classes";
    }
    return m;
}

std::optional<FileEvalResult> evaluateModelFile(const ExportedModel& model, const LabeledImages& test,
                                                const std::vector<std::int32_t>& labels, const FileEvalOptions& options,
                                                const std::atomic<bool>* stop, const FileEvalProgress& progress)
{
    if (labels.size() != test.size())
        throw ConfigError("evaluateModelFile: " + std::to_string(labels.size()) + " labels for " + std::to_string(test.size()) + " images");
    const std::size_t batch = std::max<std::size_t>(options.batch, 1), n = test.size();
    ModelRunner runner(model, options.runner);
    FileEvalResult r;
    r.runner = runner.description();
    r.integer = runner.isInteger();
    r.images = n;
    const bool compare = options.compareReference && r.integer;
    // Progress counts images over every pass: accuracy, the reference, and the timed passes with
    // their warm-up batch.
    const std::size_t benchImages = options.bench ? std::min(batch, n) + std::max<std::size_t>(options.passes, 1) * n : 0;
    const std::size_t total = n + (compare ? n : 0) + benchImages;
    std::size_t base = 0;
    const auto report = [&](std::size_t done) {
        if (progress) progress(base + done, total);
    };

    r.predictions.assign(n, -1);
    if (!predictAll(runner, test, batch, r.predictions.data(), stop, report)) return std::nullopt;
    runner.requireFiniteOutputs("evaluation", n);
    r.accuracy = top1(r.predictions, labels);
    base += n;

    if (compare) {
        RunnerOptions ro = options.runner;
        ro.kind = RunnerKind::Reference;
        ModelRunner reference(model, ro);
        std::vector<std::int32_t> refPred(n, -1);
        if (!predictAll(reference, test, batch, refPred.data(), stop, report)) return std::nullopt;
        r.referenceAccuracy = top1(refPred, labels);
        std::size_t same = 0;
        for (std::size_t i = 0; i < n; ++i) same += refPred[i] == r.predictions[i];
        r.agreement = n ? static_cast<double>(same) / static_cast<double>(n) : 0.0;
        base += n;
    }

    if (options.bench && n > 0) {
        std::vector<std::int32_t> pred(n);
        const std::size_t warm = std::min(batch, n);
        runner.predict(test.pixels.data(), warm, pred.data());
        base += warm;
        report(0);
        double best = 0.0;
        for (std::size_t p = 0; p < std::max<std::size_t>(options.passes, 1); ++p) {
            const auto t0 = std::chrono::steady_clock::now();
            if (!predictAll(runner, test, batch, pred.data(), stop, report)) return std::nullopt;
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, static_cast<double>(n) / std::max(s, 1e-9));
            base += n;
        }
        r.imagesPerSecond = best;
    }
    return r;
}

PredictionRows predictionRows(const ExportedModel& model, const Dataset& data, const DataMatch& match,
                              std::vector<std::int32_t> predicted)
{
    PredictionRows rows;
    if (match.labels.size() != predicted.size() || (!data.test.sources.empty() && data.test.sources.size() != predicted.size()))
        throw ConfigError("predictionRows: " + std::to_string(predicted.size()) + " predictions for " + std::to_string(match.labels.size()) +
                          " labels and " + std::to_string(data.test.sources.size()) + " sources");
    rows.predicted = std::move(predicted);
    rows.labels = match.labels;
    // The labels are in the model's order: its names, else the data's when they are as many (then
    // the labels were compared by position).
    if (!model.classNames.empty()) rows.classNames = model.classNames;
    else if (data.classNames.size() == model.classes) rows.classNames = data.classNames;
    rows.sources = data.test.sources;
    return rows;
}

namespace {

void appendCsvField(std::string& out, std::string_view field)
{
    if (field.find_first_of(",\"\r\n") == std::string_view::npos) {
        out += field;
        return;
    }
    out += '"';
    for (char c : field) {
        if (c == '"') out += '"';
        out += c;
    }
    out += '"';
}

} // namespace

std::string predictionsCsv(const PredictionRows& rows)
{
    const std::size_t n = rows.predicted.size();
    if (rows.labels.size() != n || (!rows.sources.empty() && rows.sources.size() != n))
        throw ConfigError("predictionsCsv: " + std::to_string(n) + " predictions, " + std::to_string(rows.labels.size()) + " labels, " +
                          std::to_string(rows.sources.size()) + " sources");
    const auto name = [&](std::int32_t c) -> std::string_view {
        return c >= 0 && static_cast<std::size_t>(c) < rows.classNames.size() ? std::string_view(rows.classNames[static_cast<std::size_t>(c)])
                                                                             : std::string_view();
    };
    std::string out = "index,predicted_class,predicted_name,label,label_name,correct,source\n";
    out.reserve(out.size() + n * 32);
    for (std::size_t i = 0; i < n; ++i) {
        const std::int32_t p = rows.predicted[i], l = rows.labels[i];
        out += std::to_string(i);
        out += ',';
        out += std::to_string(p);
        out += ',';
        appendCsvField(out, name(p));
        out += ',';
        out += std::to_string(l);
        out += ',';
        appendCsvField(out, name(l));
        out += p == l ? ",1," : ",0,";
        if (!rows.sources.empty()) appendCsvField(out, rows.sources[i]);
        out += '\n';
    }
    return out;
}

} // namespace quantscope
