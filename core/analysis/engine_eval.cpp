#include "analysis/engine_eval.h"

#include "analysis/model_export.h"
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "train/quant_sim.h"
#include "util/errors.h"

#include <algorithm>

namespace quantscope {

std::optional<EngineEval> evaluateOnEngine(Model& model, const QuantSim& sim, const Dataset& data, const LabeledImages& set,
                                           std::size_t threads, bool wantLogits, std::string* whyNot)
{
    ExportedModel m;
    try {
        m = exportQuantizedModel(model, sim, model.name(), data, "eval", "");
    } catch (const ConfigError& e) { // a float format, a layout the export does not take
        if (whyNot) *whyNot = e.what();
        return std::nullopt;
    }
    if (!m.quantized) {
        if (whyNot) *whyNot = "the model is not integer-quantized";
        return std::nullopt;
    }
    if (std::string why = IntEngine::unsupportedReason(m); !why.empty()) {
        if (whyNot) *whyNot = why;
        return std::nullopt;
    }
    RunnerOptions opt;
    opt.kind = RunnerKind::Integer;
    opt.threads = std::max<std::size_t>(1, threads);
    ModelRunner runner(m, opt);
    EngineEval r;
    r.runner = runner.description();
    const std::size_t n = set.size(), k = runner.classes(), chunk = 1024;
    std::vector<std::int32_t> pred(std::min(n, chunk));
    std::vector<float> out;
    if (wantLogits) r.logits.resize(n * k);
    std::size_t correct = 0;
    for (std::size_t b = 0; b < n; b += chunk) {
        const std::size_t e = std::min(n, b + chunk);
        runner.predict(set.pixels.data() + b * set.imageBytes(), e - b, pred.data(), wantLogits ? r.logits.data() + b * k : nullptr);
        for (std::size_t i = b; i < e; ++i) correct += pred[i - b] == set.labels[i];
    }
    r.accuracy = n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
    return r;
}

QuantizedEvaluator engineEvaluator(std::size_t threads)
{
    return [threads](Model& model, const QuantSim& sim, const Dataset& data, const LabeledImages& set,
                     std::string* runner) -> std::optional<double> {
        std::optional<EngineEval> r = evaluateOnEngine(model, sim, data, set, threads);
        if (!r) return std::nullopt;
        if (runner) *runner = r->runner;
        return r->accuracy;
    };
}

} // namespace quantscope
