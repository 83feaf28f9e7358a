#include "analysis/plan_eval.h"

#include "analysis/engine_eval.h"

#include "quant/format.h"
#include "train/quant_sim.h"
#include "util/errors.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>

namespace quantscope {

PlanEvaluator::PlanEvaluator(Model& model, const Dataset& data, const LabeledImages& validation, std::size_t calibImages,
                             std::size_t batchSize, std::size_t threads)
    : m_model(model), m_data(data), m_set(validation), m_calibImages(calibImages), m_batch(std::max<std::size_t>(1, batchSize)),
      m_threads(threads ? threads : static_cast<std::size_t>(std::max(1, tbb::this_task_arena::max_concurrency())))
{
    m_fp32 = runWith(nullptr);
    m_classes = m_set.size() ? m_fp32.logits.size() / m_set.size() : 0;
    // Every plan is measured against these outputs (SQNR, KL): non-finite ones would make every
    // figure NaN without a word (tester 7: a weight of 3e38 printed "-nan" and exited 0).
    std::size_t images = 0;
    for (std::size_t i = 0; m_classes && i < m_set.size(); ++i)
        images += !std::all_of(m_fp32.logits.begin() + static_cast<std::ptrdiff_t>(i * m_classes),
                               m_fp32.logits.begin() + static_cast<std::ptrdiff_t>((i + 1) * m_classes),
                               [](float v) { return std::isfinite(v); });
    if (images)
        throw NumericError("model '" + m_model.name() + "': the FP32 outputs are inf or NaN on " + std::to_string(images) + " of " +
                           std::to_string(m_set.size()) + " validation images, so no quantized plan can be measured against them: "
                           "the model's values overflow float32 (huge weights, or training diverged)");
}

PlanEvaluator::Result PlanEvaluator::runWith(LayerHooks* hooks)
{
    Result r;
    RunContext ctx;
    ctx.training = false;
    ctx.releaseActivations = true; // only the output is read
    Tensor x;
    std::vector<std::int32_t> y, pred;
    std::size_t correct = 0;
    for (std::size_t b = 0; b < m_set.size(); b += m_batch) {
        const std::size_t e = std::min(m_set.size(), b + m_batch);
        m_data.makeBatch(m_set, b, e, x, y);
        const Tensor& out = m_model.forward(x, ctx, hooks);
        r.logits.insert(r.logits.end(), out.data(), out.data() + out.numel());
        pred.resize(e - b);
        argmaxRows(out, pred);
        for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == y[i];
    }
    r.accuracy = m_set.size() ? static_cast<double>(correct) / static_cast<double>(m_set.size()) : 0.0;
    return r;
}

PlanEvaluator::Result PlanEvaluator::run(const PrecisionPlan& plan)
{
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = plan.defaults.format;
    pc.granularity = plan.defaults.granularity;
    pc.calibration = plan.defaults.calibration;
    pc.activationFormat = plan.defaults.activationFormat;
    pc.activationCalibration = plan.activationCalibration.empty() ? "minmax" : plan.activationCalibration;
    pc.calibImages = m_calibImages;
    pc.layers = plan.layers;
    pc.planSource = plan.source;
    QuantSim sim(m_model, pc, findFormat(pc.format));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(m_data, m_data.train, std::min(m_calibImages, m_data.train.size()), 64);
    sim.setObserving(false);
    sim.roundBiases(); // the fake-quant fallback then agrees with the engine and the exported file
    // The integer engine when it can run the plan (integer formats of at most 8 bits), else the
    // fake-quant float model. A plan that keeps layers FP32 (sensitivity's one-layer plans) runs
    // on the float model: the engine's float layers are plain loops, slower than its batched GEMMs.
    bool floatLayers = plan.defaults.keepFp32();
    for (const LayerOverride& o : plan.layers) floatLayers = floatLayers || (o.format && *o.format == "fp32");
    Result r;
    std::optional<EngineEval> e;
    if (!floatLayers) e = evaluateOnEngine(m_model, sim, m_data, m_set, m_threads, true);
    if (e) {
        r.accuracy = e->accuracy;
        r.logits = std::move(e->logits);
        m_lastRunner = e->runner;
    } else {
        r = runWith(&sim);
        m_lastRunner = "fake-quant";
    }
    sim.clearWeights();
    return r;
}

} // namespace quantscope
