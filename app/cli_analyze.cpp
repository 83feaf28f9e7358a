// quantscope-cli analyze: questions asked of a trained model. `analyze compare` quantizes it
// (PTQ: min-max or other calibration on training images) and compares every layer's output with
// the FP32 model's, propagated and alone, then (--runner engine) the integer engine with the
// fake-quant simulation at every quantization point.
#include "cli_args.h"
#include "cli_commands.h"
#include "cli_signals.h"

#include "analysis/layer_compare.h"
#include "analysis/model_export.h"
#include "analysis/mixed_search.h"
#include "analysis/plan_eval.h"
#include "analysis/sensitivity.h"
#include "data/dataset.h"
#include "io/model_source.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/observer.h"
#include "train/quant_sim.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <nlohmann/json.hpp>
#include <tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>

namespace quantscope::cli {

const char* const kAnalyzeHelp =
    "usage: quantscope-cli analyze compare MODEL [--plan P | --format F ...] [options]\n"
    "       quantscope-cli analyze sensitivity MODEL --formats F[,F...] [options]\n"
    "       quantscope-cli analyze search MODEL --formats F,... (--max-drop PTS | --max-bytes N) [options]\n"
    "\n"
    "search: per-layer weight formats under an accuracy budget (points below FP32 on the validation\n"
    "images) or a size budget (bytes): greedy moves ranked by one-layer sensitivity per byte saved,\n"
    "each verified by evaluation; prints every evaluated plan, the size/accuracy Pareto front and the\n"
    "uniform plans, and the chosen plan's test accuracy once at the end; every plan below --max-drop's\n"
    "budget, uniform or greedy, is marked 'over budget: not taken' (JSON over_budget), every plan above\n"
    "--max-bytes 'larger than --max-bytes' (over_bytes). Exit 5 when no evaluated plan meets the budget\n"
    "(the reason on stderr; with --json an {\"event\":\"error\",\"type\":\"no_result\",...} line after the\n"
    "search object). A --max-bytes below the smallest plan the --formats allow (every layer at its\n"
    "smallest) exits 5 at once, before any evaluation.\n"
    "Bytes are those of docs/PLANS.md (weights, scales, biases: what info --plan and the plan table\n"
    "count); a .qsm file adds its names, layer records and activation scales, a few KB (3.5 KB for\n"
    "mobilenet-tiny), so leave that room under --max-bytes.\n"
    "  --max-drop PTS       accuracy budget: at most PTS points (0 to 100) below FP32 on the validation\n"
    "                       images; the search ends at the smallest plan within it\n"
    "  --max-bytes N        size budget: plans of at most N bytes; the search ends at the most accurate\n"
    "                       plan within it (give exactly one of --max-drop and --max-bytes)\n"
    "  --formats F,F,...    candidate weight formats (default int8,int4,int3,int2)\n"
    "  --calibrations C,... candidate weight calibrations (default minmax; e.g. minmax,mse)\n"
    "  --act-calibration C  activation ranges of every plan (default minmax), recorded in --plan-out\n"
    "  --max-evals N        plans the search evaluates at most (default 80); the ranking before it\n"
    "                       evaluates one plan per layer and candidate (format, calibration) on top\n"
    "  --plan-out FILE      write the chosen plan (docs/PLANS.md), with the activation calibration and\n"
    "                       input normalisation it was measured with, so train --strategy ptq --plan\n"
    "                       reproduces its accuracy (give train the same --calib-images, --validation\n"
    "                       and --train-limit)\n"
    "  --test-limit N       test images for the chosen plan's test accuracy (default: all)\n"
    "  (--validation N as for sensitivity; --granularity, --act-format, --calib-images, --data,\n"
    "   --normalize, --threads, --json as below)\n"
    "Ctrl+C (or SIGTERM) stops sensitivity and search within one evaluation; they print what they measured\n"
    "(exit 130, 143 for SIGTERM).\n"
    "\n"
    "sensitivity: quantizes one Conv2d/Linear layer at a time (PTQ; all other layers FP32) to each\n"
    "format and measures, on --validation N images held out of the training set (default 5000, or\n"
    "half of --train-limit's N when that is fewer),\n"
    "the accuracy drop against FP32, the SQNR of the model's outputs (logits, log-probabilities or\n"
    "probabilities, as the model ends) and the KL divergence of its probabilities. The quantized\n"
    "layer reads and writes activations at --act-format (uint8 by default), as an integer layer runs\n"
    "(docs/PLANS.md, Boundaries): that rounding is the same in every format's column. --act-format\n"
    "fp32 keeps the activations float and measures the weights alone.\n"
    "  --formats F,F,...    candidate weight formats (default int8,int4,int2)\n"
    "  --all-but-one        quantize every layer except one instead\n"
    "  --act-calibration C  activation ranges (default minmax)\n"
    "  --validation N       held-out training images measured on (default 5000, or half of\n"
    "                       --train-limit's N when that is 5000 or fewer; the GUI's Analysis tab\n"
    "                       takes the same)\n"
    "  (--granularity, --calibration, --act-format, --calib-images, --data, --normalize,\n"
    "   --threads, --json as below)\n"
    "\n"
    "compare: quantizes MODEL after training (PTQ) and compares every layer's output with the FP32\n"
    "model's on a batch of test images, in graph order: SQNR and cosine similarity with the error\n"
    "propagated from earlier layers, and with this layer alone quantized (its FP32 inputs rounded at\n"
    "their quantization points, then its weights and output point). Names the\n"
    "first layer whose SQNR falls below --threshold. MODEL is an FP32 .qsm or .onnx file (or a\n"
    "preset name, freshly initialised). An activation point is an integer grid or a rounding to a\n"
    "float format (a plan's act_format fp8-e4m3): both are marked 'a', the header names the points\n"
    "whose format is not --act-format's, and --json gives each layer's activation_format.\n"
    "\n"
    "  --data PATH          dataset (any layout 'train' reads; default Fashion-MNIST), with\n"
    "                       --image-shape CxHxW, --resize HxW and --test-fraction F as for train\n"
    "  --train-limit N      first limit the training set to N seeded images, as train --train-limit N\n"
    "                       and the GUI's training-images field draw them; the validation and\n"
    "                       calibration images then come from those N, as in the GUI's Analysis tab\n"
    "                       (train holds its --validation images out before it limits the rest,\n"
    "                       except with --epochs 0, which draws them as analyze does)\n"
    "  --format F           weight format (default int8)\n"
    "  --granularity G      tensor, channel, group:N, ... (default channel)\n"
    "  --calibration C      weight ranges: minmax (default), percentile, mse, moving-average\n"
    "  --act-format F       activation format (default uint8)\n"
    "  --act-calibration C  activation ranges (default minmax)\n"
    "  --plan FILE          a per-layer precision plan (docs/PLANS.md); the options above are its default\n"
    "  --layer NAME=F[:G]   one layer's weight format (and granularity); repeatable\n"
    "  --keep-fp32 NAMES    layers left in FP32 (comma-separated)\n"
    "  --calib-images N     calibration images from the training set (default 1000)\n"
    "  --images N           test images compared (default 256; compared 64 at a time)\n"
    "  --threshold DB       flag layers whose SQNR is below this (default 20)\n"
    "  --normalize MEAN,STD input normalisation for a model that does not store one\n"
    "  --runner engine      also compare the integer engine with fake-quant at every point, on\n"
    "                       the first 64 of the --images (each image is traced point by point)\n"
    "  --threads N          worker threads (default 2; at most the machine's hardware threads)\n"
    "  --json               one JSON object on stdout\n";

namespace {

nlohmann::json finite(double v)
{
    if (std::isfinite(v)) return v;
    return nullptr;
}

std::string db(double v)
{
    if (std::isinf(v) && v > 0) return "   inf";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%6.1f", v);
    return buf;
}

struct AnalysisInput {
    Dataset data;
    std::unique_ptr<Model> model;
    std::string name; // the file's stem, or the preset's name
    bool statisticsNormalised = false; // a model file storing no normalisation: the training images' statistics
};

// The dataset of `dopt` and the model `spec` for its images: an FP32 model file (whose stored
// normalisation the data takes, unless --normalize gives one) or a freshly initialised preset.
// The dataset flags every analysis shares. --train-limit N limits the training set first and
// holds the validation images out of those N (DatasetOptions::validationAfterLimit), as the GUI's
// Analysis tab holds them out of a run's limited training set, so its results can be repeated here.
DatasetOptions analysisDatasetOptions(const Args& args)
{
    DatasetOptions dopt = datasetOptions(args);
    dopt.trainLimit = args.u64("--train-limit", 0, 1);
    dopt.validationAfterLimit = true;
    return dopt;
}

// Sensitivity's and search's held-out images: --validation N, else 5000, or half of --train-limit's
// images when those are 5000 or fewer (5000 held out of 5000 or fewer left none to calibrate on: every such
// run failed until --validation was given).
std::size_t analysisValidation(const Args& args, const DatasetOptions& dopt)
{
    if (args.has("--validation")) return args.u64("--validation", 5000, 1);
    // 5000 where --train-limit leaves room for them, as the GUI's Analysis tab takes its 5000
    // (8,000 images gave 4,000 here and 5,000 there)
    return dopt.trainLimit && dopt.trainLimit <= 5000 ? std::max<std::size_t>(1, dopt.trainLimit / 2) : 5000;
}

AnalysisInput loadAnalysisInput(const Args& args, const std::string& spec, const DatasetOptions& dopt, bool json)
{
    AnalysisInput in;
    in.data = Dataset::load(dopt);
    unusedDatasetFlags(args, in.data, "analyze", json);
    Dataset& data = in.data;
    if (args.has("--normalize")) {
        data.normalization = Normalization::parse(args.str("--normalize", "")).broadcast(data.channels());
        noteExtremeNormalization(data.normalization, "analyze", json);
    }
    const Shape input{data.channels(), data.height(), data.width()};
    in.name = spec;
    if (isModelFile(spec)) {
        const ExportedModel m = readModelFile(spec, data.height(), data.width());
        // What the import said (a graph of dynamic size: at which size it was read), as eval says it.
        if (!json)
            for (const std::string& n : m.notes) std::fprintf(stderr, "quantscope-cli analyze: note: %s: %s\n", spec.c_str(), n.c_str());
        if (m.normalizationKnown && !args.has("--normalize")) data.normalization = m.normalization.broadcast(data.channels());
        else if (!args.has("--normalize"))
            in.statisticsNormalised = true;
        if (in.statisticsNormalised && !json)
            std::fprintf(stderr,
                         "quantscope-cli analyze: %s does not say how its input was normalised: using the train set's "
                         "statistics, %s (give --normalize none if the model takes [0, 1] pixels as they are)\n",
                         spec.c_str(), data.normalization.describe().c_str());
        in.model = modelFromFile(spec, false)(input, data.numClasses(), 1);
        in.name = std::filesystem::path(spec).stem().string();
    } else {
        const std::string misnamed = misnamedModelFile(spec); // a model file under another name (tester 14)
        if (!misnamed.empty()) throw UsageError(spec + ": " + misnamed);
        in.model = makeModel(spec, input[0], input[1], input[2], data.numClasses(), 1);
        if (!json)
            std::fprintf(stderr, "note: %s is a preset, freshly initialised (give a trained .qsm/.onnx to analyse a trained model)\n",
                         spec.c_str());
    }
    return in;
}

int runCompare(const Args& args)
{
    if (args.positional().size() != 2) throw UsageError("give one model: analyze compare MODEL (see --help)");
    const std::string spec = args.positional()[1];
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = args.str("--format", "int8");
    pc.granularity = args.str("--granularity", "channel");
    pc.calibration = args.str("--calibration", "minmax");
    pc.activationFormat = args.str("--act-format", "uint8");
    pc.activationCalibration = args.str("--act-calibration", "minmax");
    pc.calibImages = args.u64("--calib-images", 1000, 1, 10000000);
    findFormat(pc.format);
    findFormat(pc.activationFormat);
    parseGranularity(pc.granularity);
    parseCalibration(pc.calibration);
    parseCalibration(pc.activationCalibration);
    applyPlanFlags(args, pc);
    pc.validate();
    const std::size_t images = args.u64("--images", 256, 1, 100000);
    const double threshold = args.f64("--threshold", 20.0, -1000.0, 1000.0);
    const std::size_t threads = threadsOption(args, "analyze");
    const std::string runner = args.str("--runner", "");
    if (!runner.empty() && runner != "engine") throw UsageError("unknown --runner '" + runner + "' (engine)");
    const bool json = args.has("--json");

    DatasetOptions dopt = analysisDatasetOptions(args); // --data, --image-shape, --resize, --test-fraction, --train-limit
    dopt.testLimit = images;
    AnalysisInput in = loadAnalysisInput(args, spec, dopt, json);
    Dataset& data = in.data;
    const std::unique_ptr<Model>& model = in.model;
    const std::string& name = in.name;

    const auto t0 = std::chrono::steady_clock::now();
    tbb::task_arena arena(static_cast<int>(threads));
    LayerComparisonReport r;
    std::vector<EnginePointDivergence> engine;
    std::string engineNote;
    arena.execute([&] {
        QuantSim sim(*model, pc, findFormat(pc.format));
        sim.quantizeWeights(Rounding::Nearest, 0);
        sim.calibrate(data, data.train, pc.calibImages, 64);
        sim.setObserving(false);
        Tensor x;
        std::vector<std::int32_t> y;
        data.makeBatch(data.test, 0, std::min(images, data.test.size()), x, y);
        r = compareLayers(*model, sim, x, threshold);
        if (!runner.empty()) {
            try { // a plan the engine cannot run (MX or float weights, group scales) leaves a note, not an error
                const ExportedModel em = exportQuantizedModel(*model, sim, name, data, "ptq", pc.granularity);
                engine = compareEngineWithFakeQuant(em, data, data.test, std::min<std::size_t>(images, 64));
            } catch (const ConfigError& e) { // said as what it means for this command (tester 10 read "export")
                engineNote = std::string("not compared: the integer engine cannot run this plan (") + e.what() + ")";
            }
        }
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    if (json) {
        nlohmann::json layers = nlohmann::json::array();
        for (const LayerComparison& c : r.layers)
            layers.push_back({{"index", c.index},
                              {"layer", c.layer},
                              {"kind", c.kind},
                              {"quantized_weights", c.quantizedWeights},
                              {"output_point", c.outputPoint},
                              {"activation_format", c.outputPoint ? nlohmann::json(c.activationFormat) : nlohmann::json(nullptr)},
                              {"sqnr_db", finite(c.sqnrDb)},
                              {"cosine", c.cosine},
                              {"alone_sqnr_db", finite(c.aloneSqnrDb)},
                              {"alone_cosine", c.aloneCosine}});
        nlohmann::json j = {{"event", "compare"},
                            {"model", name},
                            {"format", pc.format},
                            {"granularity", pc.granularity},
                            {"activation_format", pc.activationFormat},
                            {"images", r.images},
                            {"threshold_db", threshold},
                            {"first_below", r.firstBelow >= 0 ? nlohmann::json(r.layers[r.firstBelow].layer) : nlohmann::json(nullptr)},
                            {"first_alone_below",
                             r.firstAloneBelow >= 0 ? nlohmann::json(r.layers[r.firstAloneBelow].layer) : nlohmann::json(nullptr)},
                            {"layers", layers},
                            {"seconds", seconds}};
        if (!runner.empty()) {
            nlohmann::json pts = nlohmann::json::array();
            for (const EnginePointDivergence& d : engine)
                pts.push_back({{"layer", d.layer}, {"values", d.values}, {"differing", d.differing}, {"max_steps", d.maxSteps}});
            j["engine"] = pts;
            if (!engineNote.empty()) j["engine_note"] = engineNote;
        }
        printJsonLine(j);
        return kExitOk;
    }
    // The weights as set: a format's granularity only where it has a scale (MX blocks and float
    // formats have none), and the plan's layers when it has any.
    std::string weights = pc.format + (needsScale(findFormat(pc.format)) ? " (" + pc.granularity + ")" : "");
    if (!pc.layers.empty())
        weights = "a per-layer plan (" + std::to_string(pc.layers.size()) + (pc.layers.size() == 1 ? " layer entry" : " layer entries") +
                  " over " + weights + ")";
    // The activations as applied: the default, and the points a plan (or an 8-bit floor) sets otherwise
    // ("uint8 activations" was printed over a relu2 rounded to fp8-e4m3).
    std::map<std::string, std::string> otherPoints; // format -> the layers whose output takes it
    for (const LayerComparison& c : r.layers)
        if (c.outputPoint && c.activationFormat != pc.activationFormat)
            otherPoints[c.activationFormat] += (otherPoints[c.activationFormat].empty() ? "" : ", ") + c.layer;
    std::string acts = pc.activationFormat + " activations";
    if (!otherPoints.empty()) {
        std::string others;
        for (const auto& [format, layers] : otherPoints) others += (others.empty() ? "" : "; ") + format + " at " + layers;
        acts += " (" + others + ")";
    }
    std::printf("%s, weights %s, %s, %zu test images\n", name.c_str(), weights.c_str(), acts.c_str(), r.images);
    // Columns as wide as the longest name (an imported model's "Block_3.Conv2d_14"), so they align.
    int lw = 24, kw = 16;
    for (const LayerComparison& c : r.layers) {
        lw = std::max(lw, static_cast<int>(c.layer.size()));
        kw = std::max(kw, static_cast<int>(c.kind.size()));
    }
    std::printf("%-4s %-*s %-*s %4s %10s %8s %10s %8s\n", "#", lw, "layer", kw, "kind", "q", "SQNR dB", "cosine", "alone dB", "cosine");
    for (const LayerComparison& c : r.layers) {
        const bool flagged = (r.firstBelow >= 0 && c.index == r.layers[r.firstBelow].index);
        // Both where a weight layer's own output is a point ("wa": a Conv feeding a MaxPool, a Linear
        // at the head; tester 9 read a lone "w" as an FP32 output).
        const std::string q = std::string(c.quantizedWeights ? "w" : "") + (c.outputPoint ? "a" : "");
        std::printf("%-4zu %-*s %-*s %4s %10s %8.4f %10s %8.4f%s\n", c.index, lw, c.layer.c_str(), kw, c.kind.c_str(),
                    q.c_str(), db(c.sqnrDb).c_str(), c.cosine, db(c.aloneSqnrDb).c_str(),
                    c.aloneCosine, flagged ? "   <- first below threshold" : "");
    }
    if (r.firstBelow >= 0)
        std::printf("first layer below %.1f dB: %s (propagated)", threshold, r.layers[r.firstBelow].layer.c_str());
    else
        std::printf("no layer below %.1f dB (propagated)", threshold);
    if (r.firstAloneBelow >= 0) std::printf(", %s (alone)\n", r.layers[r.firstAloneBelow].layer.c_str());
    else std::printf(", none alone\n");
    std::printf("(q: w = the layer's weights are quantized, a = its output is an activation quantization point, wa = both; SQNR dB and cosine:\n"
                " its output against FP32's with every layer up to it quantized; alone dB and cosine: the FP32 inputs rounded\n"
                " at their points, then this layer's weights and output point alone; so a Flatten differs from its pool)\n");
    if (!runner.empty()) {
        if (!engineNote.empty()) std::printf("engine: %s\n", engineNote.c_str());
        for (const EnginePointDivergence& d : engine)
            std::printf("engine vs fake-quant at %-*s %8zu of %8zu codes differ (max %d step%s)\n", lw, d.layer.c_str(), d.differing, d.values,
                        d.maxSteps, d.maxSteps == 1 ? "" : "s");
    }
    std::printf("%.1f s\n", seconds);
    return kExitOk;
}

int runSensitivity(const Args& args)
{
    if (args.positional().size() != 2) throw UsageError("give one model: analyze sensitivity MODEL (see --help)");
    const std::string spec = args.positional()[1];
    SensitivityOptions opt;
    opt.formats.clear();
    std::stringstream list(args.str("--formats", "int8,int4,int2"));
    for (std::string f; std::getline(list, f, ',');)
        if (!f.empty()) {
            if (std::find(opt.formats.begin(), opt.formats.end(), f) != opt.formats.end())
                throw UsageError("--formats names " + f + " twice");
            opt.formats.push_back(f);
        }
    opt.granularity = args.str("--granularity", "channel");
    opt.calibration = args.str("--calibration", "minmax");
    opt.activationFormat = args.str("--act-format", "uint8");
    opt.activationCalibration = args.str("--act-calibration", "minmax");
    opt.calibImages = args.u64("--calib-images", 1000, 1, 10000000);
    opt.allButOne = args.has("--all-but-one");
    parseGranularity(opt.granularity);
    parseCalibration(opt.calibration);
    parseCalibration(opt.activationCalibration);
    findFormat(opt.activationFormat);
    for (const std::string& f : opt.formats) findFormat(f); // before the data is loaded
    const std::size_t threads = threadsOption(args, "analyze");
    const bool json = args.has("--json");

    DatasetOptions dopt = analysisDatasetOptions(args); // --data, --image-shape, --resize, --test-fraction, --train-limit
    dopt.validation = analysisValidation(args, dopt);
    dopt.testLimit = 1; // the test set is not used
    std::optional<StopSignalScope> stopSignals(std::in_place); // from here, Ctrl+C or SIGTERM stops cleanly
    AnalysisInput in = loadAnalysisInput(args, spec, dopt, json);
    Dataset& data = in.data;
    const std::unique_ptr<Model>& model = in.model;
    const std::string& name = in.name;
    const bool tty = !json && ::isatty(STDERR_FILENO);
    SensitivityReport r;
    tbb::task_arena arena(static_cast<int>(threads));
    {
        arena.execute([&] {
            r = analyzeSensitivity(*model, data, data.validation, opt, [&](std::size_t done, std::size_t total) {
                if (tty) std::fprintf(stderr, "\r%zu of %zu layer x format cells", done, total);
                return !StopSignalScope::requested();
            });
        });
    }
    stopSignals.reset();
    if (tty) std::fputc('\n', stderr);
    const int status = r.stopped ? StopSignalScope::exitCode() : kExitOk;
    if (r.stopped && !json)
        std::fprintf(stderr, "stopped (%s) after %zu cells; the table shows those\n", StopSignalScope::cause(), r.cells.size());
    if (json) {
        nlohmann::json cells = nlohmann::json::array();
        for (const SensitivityCell& c : r.cells)
            cells.push_back({{"layer", c.layer}, {"format", c.format}, {"accuracy", c.accuracy}, {"drop_points", c.dropPoints},
                             {"logit_sqnr_db", finite(c.logitSqnrDb)}, {"kl", c.klDivergence}});
        const nlohmann::json j = {{"event", "sensitivity"}, {"model", name}, {"mode", opt.allButOne ? "all-but-one" : "one-layer"},
                                  {"granularity", opt.granularity}, {"calibration", opt.calibration},
                                  {"activation_format", opt.activationFormat},
                                  {"validation_images", r.images}, {"fp32_acc", r.fp32Accuracy}, {"cells", cells},
                                  {"stopped", r.stopped}, {"seconds", r.seconds}};
        printJsonLine(j);
        return status;
    }
    std::printf("%s: FP32 %.2f %% on %zu validation images; %s, %s weights (%s calibration), %s activations\n", name.c_str(),
                100.0 * r.fp32Accuracy, r.images, opt.allButOne ? "every layer but the one named" : "one layer at a time",
                opt.granularity.c_str(), opt.calibration.c_str(), opt.activationFormat.c_str());
    // Columns as wide as the longest layer and format names (mxfp8-e4m3), so they align.
    const std::size_t nf = opt.formats.size();
    int lw = 24;
    for (const SensitivityCell& c : r.cells) lw = std::max(lw, static_cast<int>(c.layer.size()));
    std::vector<int> fw;
    for (const std::string& f : opt.formats) fw.push_back(std::max(8, static_cast<int>(f.size())));
    std::printf("%-*s", lw, "layer");
    for (std::size_t j = 0; j < nf; ++j) std::printf(" | %-*s %6s %7s %6s", fw[j], opt.formats[j].c_str(), "change", "SQNR", "KL");
    std::printf("\n");
    for (std::size_t i = 0; i * nf < r.cells.size(); ++i) {
        std::printf("%-*s", lw, r.cells[i * nf].layer.c_str());
        for (std::size_t j = 0; j < nf && i * nf + j < r.cells.size(); ++j) {
            const SensitivityCell& c = r.cells[i * nf + j];
            // +0.0 for no change (a drop of 0 printed as "-0.00")
            // KL in the column's 6 characters: 4 decimals below 10 nats, whole nats below 1e5, else
            // an exponent (tester 17: logits of 1e36 gave KL 1.5e32, printed in full across the table)
            char kl[32];
            const double k = c.klDivergence;
            std::snprintf(kl, sizeof kl, !std::isfinite(k) || k >= 1e5 ? "%6.0e" : k >= 10.0 ? "%6.0f" : "%6.4f", k);
            std::printf(" | %*.2f%% %+6.2f %7s %6s", fw[j] - 1, 100.0 * c.accuracy, c.dropPoints == 0.0 ? 0.0 : -c.dropPoints,
                        db(c.logitSqnrDb).c_str(), kl);
        }
        std::printf("\n");
    }
    std::printf("(under each format: the validation accuracy of the row's plan in that format; change: accuracy points against FP32;\n"
                " SQNR of the model's outputs in dB; KL(p_fp32 || p_q) in nats)\n");
    if (opt.activationFormat != "fp32")
        std::printf("(the quantized layers read and write %s activations, as integer layers run: that rounding is in every\n"
                    " format's column alike; --act-format fp32 measures the weights alone)\n",
                    opt.activationFormat.c_str());
    std::printf("%.1f s\n", r.seconds);
    return status;
}

int runSearch(const Args& args)
{
    if (args.positional().size() != 2) throw UsageError("give one model: analyze search MODEL (see --help)");
    const std::string spec = args.positional()[1];
    MixedSearchOptions opt;
    const auto listOf = [&](const std::string& flag, const std::string& def) {
        std::vector<std::string> v;
        std::stringstream list(args.str(flag, def));
        for (std::string f; std::getline(list, f, ',');)
            if (!f.empty()) {
                // twice would be measured twice, out of --max-evals
                if (std::find(v.begin(), v.end(), f) != v.end()) throw UsageError(flag + " names " + f + " twice");
                v.push_back(f);
            }
        return v;
    };
    opt.formats = listOf("--formats", "int8,int4,int3,int2");
    opt.calibrations = listOf("--calibrations", "minmax");
    opt.granularity = args.str("--granularity", "channel");
    opt.activationFormat = args.str("--act-format", "uint8");
    opt.activationCalibration = args.str("--act-calibration", "minmax");
    parseCalibration(opt.activationCalibration);
    opt.calibImages = args.u64("--calib-images", 1000, 1, 10000000);
    opt.maxEvaluations = args.u64("--max-evals", 80, 1, 100000);
    if (args.has("--max-drop")) opt.maxDropPoints = args.f64("--max-drop", 1.0, 0.0, 100.0);
    if (args.has("--max-bytes")) opt.maxBytes = args.u64("--max-bytes", 0, 1);
    if (opt.maxDropPoints.has_value() == opt.maxBytes.has_value()) throw UsageError("give exactly one of --max-drop PTS and --max-bytes N");
    if (args.has("--plan-out")) {
        checkOutputIsNotAnInput("--plan-out", args.str("--plan-out", ""), {{"model", spec}, {"data (--data)", args.str("--data", "")}});
        checkWritableFolder(args.str("--plan-out", "")); // now, not after the search (tester 12)
    }
    for (const std::string& f : opt.formats) findFormat(f);
    for (const std::string& c : opt.calibrations) parseCalibration(c);
    parseGranularity(opt.granularity);
    const std::size_t threads = threadsOption(args, "analyze");
    const bool json = args.has("--json");

    DatasetOptions dopt = analysisDatasetOptions(args); // --data, --image-shape, --resize, --test-fraction, --train-limit
    dopt.validation = analysisValidation(args, dopt);
    dopt.testLimit = args.u64("--test-limit", 0, 1); // the chosen plan's test accuracy
    const StopSignalScope stopSignals; // from here, Ctrl+C or SIGTERM stops cleanly
    AnalysisInput in = loadAnalysisInput(args, spec, dopt, json);
    const bool tty = !json && ::isatty(STDERR_FILENO);
    MixedSearchReport r;
    double testAcc = 0.0;
    tbb::task_arena arena(static_cast<int>(threads));
    arena.execute([&] {
        r = searchMixedPrecision(*in.model, in.data, in.data.validation, opt, [&](SearchPhase phase, std::size_t done, std::size_t total) {
            if (tty && phase == SearchPhase::Ranking) std::fprintf(stderr, "\rranking: %zu of %zu one-layer plans     ", done, total);
            else if (tty) std::fprintf(stderr, "\r%zu plans evaluated (at most %zu)       ", done, total);
            return !StopSignalScope::requested();
        });
        if (r.chosen >= 0 && !r.stopped) {
            PlanEvaluator test(*in.model, in.data, in.data.test, opt.calibImages, 500);
            testAcc = test.accuracy(r.plans[static_cast<std::size_t>(r.chosen)].plan);
        }
    });
    if (tty) std::fputc('\n', stderr);
    if (r.budgetBelowSmallest) // refused before any evaluation: no table to print
        throw NoResultError("no plan can meet --max-bytes " + std::to_string(*opt.maxBytes) + ": the smallest plan the candidate formats (" +
                            args.str("--formats", "int8,int4,int3,int2") + ") allow, every layer at its smallest, is " +
                            std::to_string(r.smallestBytes) + " bytes; nothing was evaluated" +
                            (args.has("--plan-out") ? "; --plan-out is not written" : ""));
    if (r.stopped && !json)
        std::fprintf(stderr, "stopped (%s) after %zu plans; below are those, their front and the best of them (no test accuracy)\n",
                     StopSignalScope::cause(), r.evaluations);
    // A plan file that cannot be written (a full disk) still leaves the results printed; the
    // error follows them.
    std::string planError;
    if (r.chosen >= 0 && !r.stopped && args.has("--plan-out")) {
        try {
            writePlanFile(args.str("--plan-out", ""), r.plans[static_cast<std::size_t>(r.chosen)].plan);
            // The plan records the normalisation (\"default\".\"normalize\"), which train --plan
            // applies to a model that stores none (tester 18 #9).
            if (in.statisticsNormalised && !json)
                std::fprintf(stderr,
                             "quantscope-cli analyze: %s stores no input normalisation; the plan records this search's, %s, "
                             "which train --plan applies (give the same --validation, --train-limit and --calib-images to "
                             "reproduce its accuracy)\n",
                             spec.c_str(), in.data.normalization.describe().c_str());
        } catch (const IoError& e) {
            planError = e.what();
        }
    }
    const auto done = [&](int code) {
        if (!planError.empty()) throw IoError(planError);
        return code;
    };
    // Exit 5 is reported as errors are (reportCurrentError: stderr, and the JSON error event after
    // the search object), with how far the nearest plan was.
    const auto noPlanMessage = [&] {
        std::string nearest;
        if (!r.plans.empty()) {
            std::uint64_t smallest = r.plans.front().bytes;
            double best = r.plans.front().accuracy;
            for (const EvaluatedPlan& p : r.plans) {
                smallest = std::min(smallest, p.bytes);
                best = std::max(best, p.accuracy);
            }
            char b[160];
            if (opt.maxBytes)
                std::snprintf(b, sizeof b, " (the smallest evaluated plan is %llu bytes; the budget is %llu)",
                              static_cast<unsigned long long>(smallest), static_cast<unsigned long long>(*opt.maxBytes));
            else
                std::snprintf(b, sizeof b, " (the most accurate evaluated plan is %.2f points below FP32; the budget is %.2f)",
                              100.0 * (r.fp32Accuracy - best), *opt.maxDropPoints);
            nearest = b;
        }
        return "no evaluated plan meets the budget" + nearest + (args.has("--plan-out") ? "; --plan-out is not written" : "");
    };
    if (json) {
        nlohmann::json plans = nlohmann::json::array();
        for (const EvaluatedPlan& p : r.plans)
            plans.push_back({{"label", p.label}, {"bytes", p.bytes}, {"bits_per_weight", p.bitsPerWeight}, {"accuracy", p.accuracy},
                             {"uniform", p.uniform}, {"on_front", p.onFront}, {"over_budget", p.overBudget}, {"over_bytes", p.overBytes}, {"plan", nlohmann::json::parse(planToJson(p.plan))}});
        nlohmann::json j = {{"event", "search"}, {"model", in.name}, {"fp32_val_acc", r.fp32Accuracy}, {"validation_images", r.images},
                            {"evaluations", r.evaluations}, {"sensitivity_evaluations", r.sensitivityEvaluations}, {"plans", plans},
                            {"stopped", r.stopped}, {"max_evals_reached", r.budgetExhausted}, {"seconds", r.seconds}};
        if (r.chosen >= 0) {
            j["chosen"] = r.chosen;
            if (!r.stopped) j["chosen_test_acc"] = testAcc;
        }
        printJsonLine(j);
        if (r.stopped) return StopSignalScope::exitCode();
        if (r.chosen < 0) throw NoResultError(noPlanMessage());
        return done(kExitOk);
    }
    std::printf("%s: FP32 %.2f %% on %zu validation images; %zu plan%s evaluated (and %zu one-layer plans for the ranking) in %.1f s\n",
                in.name.c_str(), 100.0 * r.fp32Accuracy, r.images, r.evaluations, r.evaluations == 1 ? "" : "s",
                r.sensitivityEvaluations, r.seconds);
    if (r.budgetExhausted) // tester 17: --max-evals 3 ended before the greedy steps, and the uniform plan read as the answer
        std::printf("the search stopped at --max-evals %zu before it was done: a larger --max-evals may find a smaller or "
                    "more accurate plan\n",
                    opt.maxEvaluations);
    int pw = 46; // as wide as the longest plan label, so the columns align
    for (const EvaluatedPlan& p : r.plans) pw = std::max(pw, static_cast<int>(p.label.size()));
    std::printf("%-5s %-*s %12s %6s %9s\n", "front", pw, "plan", "bytes", "bits", "val acc");
    for (std::size_t k = 0; k < r.plans.size(); ++k) {
        const EvaluatedPlan& p = r.plans[k];
        std::printf("%-5s %-*s %12llu %6.2f %8.2f%%%s\n", p.onFront ? "*" : "", pw, p.label.c_str(), static_cast<unsigned long long>(p.bytes),
                    p.bitsPerWeight, 100.0 * p.accuracy,
                    static_cast<long>(k) == r.chosen ? (r.stopped ? "   <- best so far (stopped)" : "   <- chosen")
                    : p.overBudget                   ? "   over budget: not taken"
                    : p.overBytes                    ? "   larger than --max-bytes"
                                                     : "");
    }
    if (r.chosen < 0) {
        if (!r.stopped) throw NoResultError(noPlanMessage());
        std::fprintf(stderr, "quantscope-cli analyze: %s\n", noPlanMessage().c_str());
        return StopSignalScope::exitCode();
    }
    if (r.stopped) {
        const EvaluatedPlan& c = r.plans[static_cast<std::size_t>(r.chosen)];
        std::printf("best so far: %s, %llu bytes, %.2f bits per weight (validation %.2f %%)\n", c.label.c_str(),
                    static_cast<unsigned long long>(c.bytes), c.bitsPerWeight, 100.0 * c.accuracy);
        return StopSignalScope::exitCode();
    }
    const EvaluatedPlan& c = r.plans[static_cast<std::size_t>(r.chosen)];
    std::printf("chosen: %s, %llu bytes, %.2f bits per weight; test accuracy %.2f %%\n", c.label.c_str(),
                static_cast<unsigned long long>(c.bytes), c.bitsPerWeight, 100.0 * testAcc);
    // With --plan-out the file is the plan (confirmed, not printed: a user looked for a line saying
    // it was written); without, the plan's JSON is printed to be copied.
    if (args.has("--plan-out") && planError.empty())
        std::printf("plan written to %s (train --plan %s applies it)\n", args.str("--plan-out", "").c_str(),
                    args.str("--plan-out", "").c_str());
    else
        std::printf("%s\n", planToJson(c.plan).c_str());
    std::fflush(stdout);
    return done(kExitOk);
}

} // namespace

// The options each analysis reads besides the shared ones (the dataset flags, --normalize,
// --threads, --json): another analysis's option is an error, not a silent no-op (compare
// --formats int4,int2 ran int8 under a header that said so in small print).
const std::map<std::string, std::set<std::string>>& analysisOptions()
{
    static const std::map<std::string, std::set<std::string>> own = {
        {"compare", {"--format", "--granularity", "--calibration", "--act-format", "--act-calibration", "--calib-images", "--plan",
                     "--layer", "--keep-fp32", "--images", "--threshold", "--runner"}},
        {"sensitivity", {"--formats", "--all-but-one", "--validation", "--granularity", "--calibration", "--act-format",
                         "--act-calibration", "--calib-images"}},
        {"search", {"--formats", "--calibrations", "--max-evals", "--max-drop", "--max-bytes", "--plan-out", "--validation",
                    "--test-limit", "--granularity", "--act-format", "--act-calibration", "--calib-images"}},
    };
    return own;
}

void checkAnalysisOptions(const Args& args, const std::string& what)
{
    static const std::map<std::string, std::string> instead = {
        {"--formats", "compare takes one --format"}, {"--format", "list candidates in --formats F,F,..."},
        {"--calibration", "search takes its candidates in --calibrations C,C,..."}};
    for (const auto& [other, flags] : analysisOptions()) {
        if (other == what) continue;
        for (const std::string& f : flags) {
            if (!args.has(f) || analysisOptions().at(what).count(f)) continue;
            std::string users;
            for (const auto& [name, fl] : analysisOptions())
                if (fl.count(f)) users += (users.empty() ? "" : " and ") + name;
            const auto hint = instead.find(f);
            throw UsageError(f + " is not an option of analyze " + what + " (it is one of " + users + ")" +
                             (hint != instead.end() ? "; " + hint->second : std::string()));
        }
    }
}

int runAnalyze(const std::vector<std::string>& argv)
{
    std::set<std::string> valueFlags{"--data", "--image-shape", "--resize", "--test-fraction", "--normalize", "--threads",
                                     "--train-limit"};
    for (const auto& [name, flags] : analysisOptions())
        for (const std::string& f : flags)
            if (f != "--all-but-one") valueFlags.insert(f);
    const Args args(argv, valueFlags, {"--json", "--help", "--all-but-one"});
    if (args.has("--help") || args.positional().empty()) {
        std::fputs(kAnalyzeHelp, args.has("--help") ? stdout : stderr);
        return args.has("--help") ? kExitOk : kExitUsage;
    }
    const std::string what = args.positional()[0];
    if (analysisOptions().count(what)) checkAnalysisOptions(args, what);
    if (what == "compare") return runCompare(args);
    if (what == "sensitivity") return runSensitivity(args);
    if (what == "search") return runSearch(args);
    throw UsageError("unknown analysis '" + what + "' (compare, sensitivity, search)");
}

} // namespace quantscope::cli
