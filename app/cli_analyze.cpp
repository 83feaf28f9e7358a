// quantscope-cli analyze: questions asked of a trained model. This file holds what the analyses
// share (cli_analyze.h), the dispatch with its per-analysis options, and `analyze compare`, which
// quantizes the model (PTQ: min-max or other calibration on training images) and compares every
// layer's output with the FP32 model's, propagated and alone, then (--runner engine) the integer
// engine with the fake-quant simulation at every quantization point. Sensitivity and search:
// cli_analyze_search.cpp.
#include "cli_analyze.h"
#include "cli_args.h"
#include "cli_commands.h"

#include "analysis/layer_compare.h"
#include "analysis/model_export.h"
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
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>


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
    "  --validation N       held-out training images measured on (default 5000, or half of the\n"
    "                       training images, after --train-limit, when those are 5000 or fewer;\n"
    "                       the GUI's Analysis tab takes the same)\n"
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


// (cli_analyze.h)
DatasetOptions analysisDatasetOptions(const Args& args)
{
    DatasetOptions dopt = datasetOptions(args);
    dopt.trainLimit = args.u64("--train-limit", 0, 1);
    dopt.validationAfterLimit = true;
    return dopt;
}

// Sensitivity's and search's held-out images: --validation N, else 5000, or half of the training
// images when those are 5000 or fewer (5000 held out of 5000 or fewer left none to calibrate on:
// every such run failed until --validation was given; a small dataset failed without --train-limit,
// tester 23). 5000 where the images leave room for them, as the GUI's Analysis tab takes its 5000
// (8,000 images gave 4,000 here and 5,000 there).
void setAnalysisValidation(const Args& args, DatasetOptions& dopt)
{
    dopt.validation = args.has("--validation") ? args.u64("--validation", 5000, 1) : 5000;
    dopt.validationHalvesFewImages = !args.has("--validation");
}

AnalysisInput loadAnalysisInput(const Args& args, const std::string& spec, const DatasetOptions& dopt, bool json,
                                const std::string& planNormalization, const std::string& planSource)
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
        const ExportedModel m = readModelFile(spec, data.height(), data.width(), data.numClasses());
        // What the import said (a graph of dynamic size: at which size it was read), as eval says it.
        if (!json)
            for (const std::string& n : m.notes) std::fprintf(stderr, "quantscope-cli analyze: note: %s: %s\n", spec.c_str(), n.c_str());
        // The file's own normalisation, --normalize before a graph's own, or the train set's statistics: as eval and train.
        const std::optional<Normalization> given = args.has("--normalize") ? std::optional(data.normalization) : std::nullopt;
        const InputNormalization n = resolveInputNormalization(m, spec, given, data.channels());
        if (n.kind == InputNormalization::Kind::Conflict)
            throw UsageError(n.note + "; its weights were trained on the stored one");
        if (n.kind == InputNormalization::Kind::NotStored && !planNormalization.empty()) {
            // the plan's, which its accuracies were measured with (tester 23: compare --plan used the statistics)
            try {
                data.normalization = Normalization::parse(planNormalization).broadcast(data.channels());
            } catch (const ConfigError& e) {
                throw ConfigError("plan " + planSource + ": \"normalize\" does not fit the data: " + e.what());
            }
            if (!json)
                std::fprintf(stderr, "quantscope-cli analyze: input normalisation %s, from the plan %s (the one it was measured with; "
                                     "--normalize overrides it)\n",
                             data.normalization.describe().c_str(), planSource.c_str());
        } else if (n.kind == InputNormalization::Kind::NotStored) {
            in.statisticsNormalised = true;
        } else {
            data.normalization = n.value;
        }
        if (n.kind == InputNormalization::Kind::Composed && !json)
            std::fprintf(stderr, "quantscope-cli analyze: note: %s\n", n.note.c_str());
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
    AnalysisInput in = loadAnalysisInput(args, spec, dopt, json, pc.planNormalization, pc.planSource);
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
