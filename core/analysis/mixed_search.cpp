#include "analysis/mixed_search.h"

#include "analysis/plan_eval.h"
#include "quant/format.h"
#include "quant/plan_size.h"
#include "util/errors.h"

#include <algorithm>
#include <chrono>
#include <map>

namespace quantscope {

namespace {

struct Option {
    std::string format, calibration;
    std::string text() const { return format + " (" + calibration + ")"; }
};

} // namespace

MixedSearchReport searchMixedPrecision(Model& model, const Dataset& data, const LabeledImages& validation,
                                       const MixedSearchOptions& opt, const SearchProgress& progress)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (opt.maxDropPoints.has_value() == opt.maxBytes.has_value())
        throw ConfigError("search: give exactly one budget, --max-drop PTS or --max-bytes N");
    if (validation.size() == 0) throw ConfigError("search: the validation set is empty (give --validation N)");
    if (opt.formats.empty() || opt.calibrations.empty()) throw ConfigError("search: no candidate formats or calibrations");
    std::vector<Option> options;
    for (const std::string& f : opt.formats) {
        if (f == "fp32") throw ConfigError("search: fp32 is the reference, not a candidate format");
        findFormat(f);
        for (const std::string& c : opt.calibrations) options.push_back({f, c});
    }
    const std::vector<std::string> layers = planLayerNames(model);
    PrecisionPlan base;
    base.defaults.granularity = opt.granularity;
    base.defaults.activationFormat = opt.activationFormat;
    base.activationCalibration = opt.activationCalibration; // PlanEvaluator calibrates so; written to --plan-out files
    base.inputNormalization = data.normalization.str(); // what its evaluations fed the model; train --plan applies it
    base.source = "search";
    const auto planWith = [&](const std::vector<std::size_t>& choice) {
        PrecisionPlan p = base;
        p.defaults.format = options[choice[0]].format;
        p.defaults.calibration = options[choice[0]].calibration;
        for (std::size_t i = 0; i < layers.size(); ++i) {
            LayerOverride& e = p.entry(layers[i]);
            e.format = options[choice[i]].format;
            e.calibration = options[choice[i]].calibration;
        }
        return p;
    };
    // Bytes of each layer at each option (the other layers do not change a layer's bytes).
    std::vector<std::vector<std::uint64_t>> layerBytes(layers.size(), std::vector<std::uint64_t>(options.size()));
    for (std::size_t o = 0; o < options.size(); ++o) {
        const PlanSize ps = planSize(model, planWith(std::vector<std::size_t>(layers.size(), o)));
        for (std::size_t i = 0; i < layers.size(); ++i)
            for (const LayerSize& ls : ps.layers)
                if (ls.layer == layers[i]) layerBytes[i][o] = ls.bytes;
    }
    checkPlan(planWith(std::vector<std::size_t>(layers.size(), 0)), model);

    MixedSearchReport r;
    // Each layer at its smallest option: a size budget below that plan cannot be met, and the
    // evaluations would only say so at their end (tester 7: minutes of search for a budget of 1 KB).
    std::vector<std::size_t> smallest(layers.size(), 0);
    for (std::size_t i = 0; i < layers.size(); ++i)
        for (std::size_t o = 1; o < options.size(); ++o)
            if (layerBytes[i][o] < layerBytes[i][smallest[i]]) smallest[i] = o;
    r.smallestBytes = planSize(model, planWith(smallest)).bytes;
    if (opt.maxBytes && *opt.maxBytes < r.smallestBytes) {
        r.budgetBelowSmallest = true;
        r.images = validation.size();
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return r;
    }
    r.images = validation.size();
    PlanEvaluator eval(model, data, validation, opt.calibImages, opt.batchSize);
    r.fp32Accuracy = eval.fp32Accuracy();
    const auto evaluate = [&](const std::vector<std::size_t>& choice, const std::string& label, bool uniform) -> const EvaluatedPlan* {
        if (r.stopped) return nullptr;
        if (r.evaluations >= opt.maxEvaluations) { // a plan the search wanted and the budget refused
            r.budgetExhausted = true;
            return nullptr;
        }
        if (progress && !progress(uniform ? SearchPhase::Uniform : SearchPhase::Greedy, r.evaluations, opt.maxEvaluations)) {
            r.stopped = true;
            return nullptr;
        }
        EvaluatedPlan e;
        e.plan = planWith(choice);
        e.label = label;
        e.uniform = uniform;
        const PlanSize ps = planSize(model, e.plan);
        e.bytes = ps.bytes;
        e.bitsPerWeight = ps.bitsPerWeight;
        e.accuracy = eval.accuracy(e.plan);
        ++r.evaluations;
        r.plans.push_back(std::move(e));
        return &r.plans.back();
    };

    // The uniform plans, for reference.
    for (std::size_t o = 0; o < options.size(); ++o)
        if (!evaluate(std::vector<std::size_t>(layers.size(), o), "uniform " + options[o].text(), true)) break;

    // One layer at a time: the accuracy each option costs alone (the rest FP32).
    std::vector<std::vector<double>> drop(layers.size(), std::vector<double>(options.size(), 0.0));
    const std::size_t rankTotal = layers.size() * options.size();
    for (std::size_t i = 0; i < layers.size() && !r.stopped; ++i)
        for (std::size_t o = 0; o < options.size(); ++o) {
            if (progress && !progress(SearchPhase::Ranking, r.sensitivityEvaluations, rankTotal)) {
                r.stopped = true;
                break;
            }
            PrecisionPlan p = base;
            p.defaults.format = "fp32";
            LayerOverride& e = p.entry(layers[i]);
            e.format = options[o].format;
            e.calibration = options[o].calibration; // the granularity is base's default: a group size past a row is clamped
            drop[i][o] = std::max(0.0, r.fp32Accuracy - eval.accuracy(p));
            ++r.sensitivityEvaluations;
        }

    // Greedy descent from the widest option of every layer.
    std::size_t widest = 0;
    for (std::size_t o = 1; o < options.size(); ++o)
        if (layerBytes[0][o] > layerBytes[0][widest] ||
            (layerBytes[0][o] == layerBytes[0][widest] && drop[0][o] < drop[0][widest]))
            widest = o;
    if (progress && !r.stopped && !progress(SearchPhase::Ranking, r.sensitivityEvaluations, rankTotal)) r.stopped = true;
    std::vector<std::size_t> current(layers.size(), widest);
    std::vector<std::vector<bool>> rejected(layers.size(), std::vector<bool>(options.size(), false));
    double currentAcc = r.fp32Accuracy;
    for (const EvaluatedPlan& e : r.plans)
        if (e.uniform && e.label == "uniform " + options[widest].text()) currentAcc = e.accuracy;
    std::uint64_t currentBytes = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) currentBytes += layerBytes[i][current[i]];
    for (std::size_t step = 1; !r.stopped; ++step) {
        if (opt.maxBytes && currentBytes <= *opt.maxBytes) break;
        // The best-ranked move: least accuracy lost alone per byte saved.
        long bestLayer = -1, bestOption = -1;
        double bestScore = 0.0;
        for (std::size_t i = 0; i < layers.size(); ++i)
            for (std::size_t o = 0; o < options.size(); ++o) {
                if (rejected[i][o] || layerBytes[i][o] >= layerBytes[i][current[i]]) continue;
                const double saved = static_cast<double>(layerBytes[i][current[i]] - layerBytes[i][o]);
                const double score = (std::max(0.0, drop[i][o] - drop[i][current[i]]) + 1e-9) / saved;
                if (bestLayer < 0 || score < bestScore) {
                    bestLayer = static_cast<long>(i);
                    bestOption = static_cast<long>(o);
                    bestScore = score;
                }
            }
        if (bestLayer < 0) break;
        const auto li = static_cast<std::size_t>(bestLayer), oi = static_cast<std::size_t>(bestOption);
        std::vector<std::size_t> next = current;
        next[li] = oi;
        const EvaluatedPlan* e =
            evaluate(next, "greedy step " + std::to_string(step) + ": " + layers[li] + " " + options[oi].text(), false);
        if (!e) break;
        const bool withinDrop = !opt.maxDropPoints || withinDropBudget(r.fp32Accuracy, e->accuracy, *opt.maxDropPoints);
        if (withinDrop) {
            current = next;
            currentAcc = e->accuracy;
            currentBytes = e->bytes;
        } else {
            rejected[li][oi] = true; // this option is too costly here; smaller options of the layer may still be tried
        }
    }
    (void)currentAcc;
    if (progress && !r.stopped && !progress(SearchPhase::Greedy, r.evaluations, opt.maxEvaluations)) r.stopped = true;

    // The front, and the chosen plan.
    // Every plan is marked against the budget it was searched under, the uniform ones too (they were
    // marked only when a greedy move: uniform int4 1.2 points below FP32 said over_budget false at --max-drop 1).
    for (EvaluatedPlan& p : r.plans) {
        p.overBytes = opt.maxBytes && p.bytes > *opt.maxBytes;
        p.overBudget = opt.maxDropPoints && !withinDropBudget(r.fp32Accuracy, p.accuracy, *opt.maxDropPoints);
    }
    for (EvaluatedPlan& p : r.plans) {
        p.onFront = true;
        for (const EvaluatedPlan& q : r.plans)
            if (&q != &p && q.bytes <= p.bytes && q.accuracy >= p.accuracy && (q.bytes < p.bytes || q.accuracy > p.accuracy)) {
                p.onFront = false;
                break;
            }
    }
    for (std::size_t k = 0; k < r.plans.size(); ++k) {
        const EvaluatedPlan& p = r.plans[k];
        if (opt.maxDropPoints) {
            if (!withinDropBudget(r.fp32Accuracy, p.accuracy, *opt.maxDropPoints)) continue;
            if (r.chosen < 0 || p.bytes < r.plans[static_cast<std::size_t>(r.chosen)].bytes ||
                (p.bytes == r.plans[static_cast<std::size_t>(r.chosen)].bytes && p.accuracy > r.plans[static_cast<std::size_t>(r.chosen)].accuracy))
                r.chosen = static_cast<long>(k);
        } else {
            if (p.bytes > *opt.maxBytes) continue;
            if (r.chosen < 0 || p.accuracy > r.plans[static_cast<std::size_t>(r.chosen)].accuracy) r.chosen = static_cast<long>(k);
        }
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

} // namespace quantscope
