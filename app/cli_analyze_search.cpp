// quantscope-cli analyze sensitivity (each layer quantized alone, every candidate format: the
// accuracy drop, logit SQNR and KL it costs) and analyze search (mixed-bit plans under an accuracy
// or size budget, ranked by that sensitivity). Ctrl+C or SIGTERM stops either within one
// evaluation; it prints what it measured (cli_signals.h).
#include "cli_analyze.h"
#include "cli_args.h"
#include "cli_commands.h"
#include "cli_signals.h"

#include "analysis/mixed_search.h"
#include "analysis/plan_eval.h"
#include "analysis/sensitivity.h"
#include "data/dataset.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/observer.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <nlohmann/json.hpp>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>

#include <unistd.h>
namespace quantscope::cli {

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
    setAnalysisValidation(args, dopt);
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
        checkOutputIsNotAnInput("--plan-out", args.str("--plan-out", ""), {{"model", spec}, {"data (--data)", args.str("--data", kDefaultDataDir)}});
        checkWritableFolder(args.str("--plan-out", "")); // now, not after the search (tester 12)
    }
    for (const std::string& f : opt.formats) findFormat(f);
    for (const std::string& c : opt.calibrations) parseCalibration(c);
    parseGranularity(opt.granularity);
    const std::size_t threads = threadsOption(args, "analyze");
    const bool json = args.has("--json");

    DatasetOptions dopt = analysisDatasetOptions(args); // --data, --image-shape, --resize, --test-fraction, --train-limit
    setAnalysisValidation(args, dopt);
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

} // namespace quantscope::cli
