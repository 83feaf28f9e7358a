// quantscope-cli eval: runs an exported model (.qsm or .onnx) on the test set: accuracy, optional
// per-image predictions, optional speed. Also prints what `train --export` wrote.
#include "cli_args.h"
#include "cli_commands.h"

#include "data/dataset.h"
#include "infer/model_runner.h"
#include "analysis/file_eval.h"
#include "analysis/model_export.h"
#include "io/model_source.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "util/atomic_file.h"
#include "util/memory.h"
#include "util/byte_size.h"
#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

namespace quantscope::cli {

const char* const kEvalHelp =
    "usage: quantscope-cli eval MODEL.qsm|MODEL.onnx [options]\n"
    "\n"
    "Runs an exported model on the test set of a dataset and reports its accuracy.\n"
    "Integer models run on the integer-only engine; FP32 models on the float model.\n"
    "\n"
    "  --data PATH          any layout train reads (IDX, CIFAR, CSV, image folders; see train --help)\n"
    "                       (default /usr/share/datasets/fashion-mnist)\n"
    "  --image-shape CxHxW, --resize HxW   as for train\n"
    "  --test-fraction F    a folder or CSV file without a test split of its own is evaluated whole;\n"
    "                       with F, only the share train held out (train's split, the same for\n"
    "                       every seed)\n"
    "  --test-limit N       only the first N test images\n"
    "  --normalize MEAN,STD input normalisation for a model that does not store one (an ONNX\n"
    "                       file from PyTorch): each a number or one per channel joined by ':';\n"
    "                       default: the train set's statistics (with --resize, of training images\n"
    "                       spread over the set, at most 2^28 resized pixels). Models QuantScope\n"
    "                       wrote keep theirs.\n"
    "  --threads N          worker threads (default 2; at most the machine's hardware threads)\n"
    "  --batch-size N       images per call (default 256)\n"
    "  --predictions FILE   write a CSV file, a header and one row per test image: index,\n"
    "                       predicted_class, predicted_name, label, label_name, correct (1/0),\n"
    "                       source (the image file under --data, or 'train.csv:LINE'; empty for\n"
    "                       IDX and CIFAR, whose index is the position in the test file).\n"
    "                       '-': standard output, and the report then goes to stderr. Not the\n"
    "                       model or data file being read\n"
    "  --bench              also measure images/s (one warm-up batch, best of --passes passes)\n"
    "  --passes N           timed passes for --bench (default 3)\n"
    "  --runner R           auto (default), integer (fail if the engine cannot run the model),\n"
    "                       reference (fake-quant float model)\n"
    "  --isa I              integer kernels: auto (default), avx512-vnni, avx2, scalar\n"
    "  --json               one JSON object on stdout\n"
    "  -h, --help           this text\n";

namespace {

std::string percent(double v)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f %%", 100.0 * v);
    return buf;
}

std::string bytesText(std::uint64_t b) { return formatByteSize(b); }

} // namespace

void printExportSummary(const ExportSummary& s, bool json)
{
    if (json) {
        nlohmann::json j = {{"event", "export"},
                            {"path", s.path},
                            {"format", s.format == ExportFormat::Qsm ? "qsm" : "onnx"},
                            {"quantized", s.quantized},
                            {"precision", s.precision},
                            {"file_bytes", s.fileBytes},
                            {"fp32_bytes", s.fp32Bytes},
                            {"size_ratio", s.sizeRatio},
                            {"test_acc", s.accuracy},
                            {"test_images", s.testImages},
                            {"runner", s.runner},
                            {"note", s.note},
                            {"peak_rss_mb", peakResidentMegabytes()}}; // the re-read included
        printJsonLine(j);
    } else {
        std::printf("exported %s: %s, %s\n", s.path.c_str(), s.precision.c_str(), s.note.c_str());
        // The done line's peak memory came before the export; the re-read may have raised it.
        std::printf("re-read from the file: test accuracy %s on %zu images (%s); peak memory so far %.0f MB\n", percent(s.accuracy).c_str(),
                    s.testImages, s.runner.c_str(), peakResidentMegabytes());
    }
    std::fflush(stdout);
}

int runEval(const std::vector<std::string>& argv)
{
    const Args args(argv, {"--data", "--test-limit", "--threads", "--batch-size", "--predictions", "--passes", "--runner", "--isa",
                           "--normalize", "--image-shape", "--resize", "--test-fraction"},
                    {"--json", "--help", "--bench"});
    if (args.has("--help")) {
        std::fputs(kEvalHelp, stdout);
        return kExitOk;
    }
    if (args.positional().size() != 1) throw UsageError("give one model file (.qsm or .onnx); see --help");
    const std::string path = args.positional()[0];
    if (args.has("--predictions")) {
        checkOutputIsNotAnInput("--predictions", args.str("--predictions", ""), {{"model", path}, {"data (--data)", args.str("--data", kDefaultDataDir)}});
        checkWritableFolder(args.str("--predictions", "")); // now, not after the evaluation (tester 12)
    }
    const std::size_t threads = threadsOption(args, "eval");
    const std::size_t batch = args.u64("--batch-size", 256, 1, 65536);
    const std::size_t passes = args.u64("--passes", 3, 1, 100);
    const std::string runnerName = args.str("--runner", "auto");
    RunnerOptions ro;
    ro.threads = threads;
    ro.isa = parseIsa(args.str("--isa", "auto"));
    if (runnerName == "integer") ro.kind = RunnerKind::Integer;
    else if (runnerName == "reference") ro.kind = RunnerKind::Reference;
    else if (runnerName != "auto") throw UsageError("unknown --runner '" + runnerName + "' (auto, integer, reference)");

    if (std::filesystem::is_directory(path)) throw UsageError(path + " is a folder: give a model file (.qsm or .onnx); the data goes in --data");
    // A graph of dynamic height and width is read at --resize's size when given (the images' then),
    // and again at the data's size once it is loaded (prepareModelForData).
    const ImageShape at = datasetOptions(args).resize;
    ExportedModel model = readModelFile(path, at.height, at.width); // other extensions: "not a model file (expected .qsm or .onnx)"
    // A --resize the model cannot take is said now, before the data is read and resized (minutes
    // at 2048x2048 only to be refused by prepareModelForData).
    if (at.given() && (at.height != model.height || at.width != model.width)) {
        const std::string size = std::to_string(model.height) + "x" + std::to_string(model.width);
        throw ConfigError(path + " takes " + std::to_string(model.channels) + "x" + size + " images" +
                          (model.dynamicImageSize ? std::string(" (only its ") + (at.height != model.height ? "width" : "height") +
                                                        " is dynamic)"
                                                  : std::string()) +
                          "; --resize " + std::to_string(at.height) + "x" + std::to_string(at.width) + " gives another size: resize to " +
                          size + ", or leave --resize out for images of that size");
    }
    DatasetOptions dopt = datasetOptions(args);
    dopt.testLimit = args.u64("--test-limit", 0, 1);
    // An image folder is read with the model's channels: grey images for a colour model replicated,
    // as PIL's convert("RGB") gives them (tester 11: a grey test folder was refused), with a note.
    dopt.imageChannels = model.channels;
    // Only the test set is read, and a folder or CSV file with no test split of its own is all test
    // images (--test-fraction F: the share train held out, as train split it), unless the model's
    // normalisation must come from the train set: then the train set is read for its statistics
    // (as train computed them), and the test set still is every image.
    const bool needStatistics = !model.normalizationKnown && !args.has("--normalize");
    const bool heldOutShare = args.has("--test-fraction");
    dopt.testOnly = !needStatistics && !heldOutShare;
    dopt.trainForStatistics = true; // eval reads no training image for anything else
    Dataset data = Dataset::load(dopt);
    if (needStatistics && data.splitByFraction && !heldOutShare) {
        const Normalization statistics = data.normalization;
        dopt.testOnly = true;
        data = Dataset::load(dopt);
        data.normalization = statistics;
    }
    unusedDatasetFlags(args, data, "eval", args.has("--json"));
    std::optional<Normalization> given;
    if (args.has("--normalize")) {
        given = Normalization::parse(args.str("--normalize", "")).broadcast(model.channels);
        noteExtremeNormalization(*given, "eval", args.has("--json"));
        // The stored one, given again, passes (prepareModelForData); another is a usage error here.
        if (const InputNormalization n = resolveInputNormalization(model, path, given, model.channels); n.kind == InputNormalization::Kind::Conflict)
            throw UsageError(n.note + "; --normalize is for models that do not store one");
    }
    // Shapes, classes (matched by name), the normalisation: as the GUI's Evaluate dialog decides.
    const DataMatch match = prepareModelForData(model, path, data, dopt.resize.given(), given);
    // The notes after prepareModelForData: a graph of dynamic size was read again at the data's.
    if (!args.has("--json"))
        for (const std::string& n : model.notes) std::fprintf(stderr, "quantscope-cli eval: note: %s: %s\n", path.c_str(), n.c_str());
    data.test.labels = match.labels;
    if (!match.normalizationNote.empty() && !args.has("--json"))
        std::fprintf(stderr, "quantscope-cli eval: %s (give --normalize none if the model takes [0, 1] pixels as they are)\n",
                     match.normalizationNote.c_str());
    if (!match.composedNote.empty() && !args.has("--json"))
        std::fprintf(stderr, "quantscope-cli eval: note: %s\n", match.composedNote.c_str());
    ModelRunner runner(model, ro);
    if (!args.has("--json")) { // options this run does not use, named as train names its own
        if (args.has("--isa") && !runner.isInteger())
            std::fprintf(stderr, "quantscope-cli eval: --isa is ignored: it picks the integer engine's kernels, and the runner is the %s\n",
                         runner.description().c_str());
        if (args.has("--passes") && !args.has("--bench"))
            std::fprintf(stderr, "quantscope-cli eval: --passes is ignored: it is for --bench\n");
        // The fake-quant reference of a model that quantizes nothing is the model itself (tester 16:
        // --runner reference on an FP32 file ran FP32 without a word).
        if (runnerName == "reference" && !model.quantized)
            std::fprintf(stderr, "quantscope-cli eval: note: %s is an FP32 model: it quantizes nothing, so --runner reference runs it in "
                                 "FP32, as --runner auto does\n",
                         path.c_str());
    }
    const std::string& classNote = match.classNote;
    if (!classNote.empty() && !args.has("--json")) std::fprintf(stderr, "quantscope-cli eval: %s: %s\n", path.c_str(), classNote.c_str());

    const RunnerEval ev = evaluateRunner(runner, data.test, batch, path);
    double ips = 0.0;
    if (args.has("--bench")) ips = benchmarkRunner(runner, data.test, batch, passes);
    std::string predictionsError;
    if (args.has("--predictions")) {
        const std::string csv = predictionsCsv(predictionRows(model, data, match, ev.predictions));
        try { // a full disk still leaves the accuracy printed; the error follows it
            writeFileAtomic(args.str("--predictions", ""), std::string_view(csv));
        } catch (const IoError& e) {
            predictionsError = e.what();
        }
    }
    std::uint64_t fileBytes = 0;
    try {
        fileBytes = readFileBytes(path, kQsmMaxBytes).size();
    } catch (const IoError&) {
    }
    const std::string precision =
        model.quantized ? model.weightFormat + " weights (" + model.granularity + "), " + model.activationFormat + " activations" : "fp32";
    // With the predictions on standard output (--predictions -), the report goes to stderr, so
    // that stdout holds the CSV alone.
    std::FILE* report = args.has("--predictions") && writesToStandardOutput(args.str("--predictions", "")) ? stderr : stdout;
    if (args.has("--json")) {
        nlohmann::json j = {{"event", "eval"},         {"path", path},
                            {"model", model.modelName}, {"strategy", model.strategy},
                            {"quantized", model.quantized}, {"precision", precision},
                            {"file_bytes", fileBytes},  {"runner", runner.description()},
                            {"threads", threads},       {"batch_size", batch},
                            {"test_images", ev.count},  {"test_acc", ev.accuracy},
                            {"data", data.dir},         {"test_split", data.split},
                            {"normalization", model.normalization.describe()},
                            {"notes", model.notes},
                            {"data_notes", data.notes}};
        if (!classNote.empty()) j["class_note"] = classNote;
        // Where the normalisation came from: the file, --normalize, or (neither says) the data.
        j["normalization_source"] = !match.composedNote.empty() ? "--normalize+file"
                                    : model.normalizationKnown ? "file"
                                    : args.has("--normalize")  ? "--normalize"
                                                               : "data";
        if (!match.normalizationNote.empty()) j["normalization_note"] = match.normalizationNote;
        if (!match.composedNote.empty()) j["normalization_note"] = match.composedNote;
        if (args.has("--bench")) j["images_per_s"] = ips;
        printJsonLine(j, report);
    } else {
        std::fprintf(report, "%s: %s, %s, %s\n", path.c_str(), model.modelName.c_str(), precision.c_str(), bytesText(fileBytes).c_str());
        std::fprintf(report, "data: %s (%s), %zu test images of %zux%zux%zu, %zu classes; test set: %s\n", data.name.c_str(),
                    layoutName(data.layout), ev.count, data.channels(), data.height(), data.width(), data.numClasses(),
                    data.split.empty() ? "the test files" : data.split.c_str());
        for (const std::string& n : data.notes) std::fprintf(report, "note: %s\n", n.c_str());
        std::fprintf(report, "runner: %s, %zu thread(s)\n", runner.description().c_str(), threads);
        // Where the input normalisation came from, as --json's normalization_source: a graph whose
        // first operations scale its input (x + 0.1, x / 0.353) stores one (tester 14: nothing said so).
        std::fprintf(report, "input normalisation: %s (%s)\n", model.normalization.describe().c_str(),
                     !match.composedNote.empty() ? "--normalize before the graph's own"
                     : model.normalizationKnown  ? "stored in the file"
                     : args.has("--normalize")   ? "from --normalize"
                                                 : "the train set's statistics");
        std::fprintf(report, "test accuracy: %s (%zu images)\n", percent(ev.accuracy).c_str(), ev.count);
        if (args.has("--bench"))
            std::fprintf(report, "speed: %.0f images/s (batch %zu, %zu thread(s), best of %zu passes)\n", ips, batch, threads, passes);
    }
    std::fflush(stdout);
    if (!predictionsError.empty()) throw IoError(predictionsError);
    return kExitOk;
}

} // namespace quantscope::cli
