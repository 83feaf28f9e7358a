#include "infer/model_runner.h"

#include "quant/float_cast.h"

#include "util/errors.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace quantscope {

ModelRunner::ModelRunner(const ExportedModel& m, const RunnerOptions& opt)
    : m_classes(m.classes), m_threads(opt.threads ? opt.threads : 1), m_imageBytes(m.channels * m.height * m.width),
      m_lut(m.normalization.table())
{
    std::string why;
    if (m.quantized && opt.kind != RunnerKind::Reference) {
        why = IntEngine::unsupportedReason(m);
        if (why.empty()) {
            EngineOptions eo;
            eo.isa = opt.isa;
            eo.threads = m_threads;
            m_engine = std::make_unique<IntEngine>(m, eo);
            m_description = std::string("integer engine (") + isaName(opt.isa) + ")";
            return;
        }
        if (opt.kind == RunnerKind::Integer) throw ConfigError("the integer engine cannot run this model: " + why);
    }
    if (!m.quantized && opt.kind == RunnerKind::Integer) throw ConfigError("the integer engine cannot run an FP32 model");
    m_model = buildModel(m);
    if (m.quantized) {
        m_hooks = std::make_unique<StoredActivationHooks>(m, m_model.get());
        m_description = why.empty() ? "fake-quant reference" : "fake-quant reference (" + why + ")";
    } else {
        m_description = "fp32 float model";
    }
}

ModelRunner::~ModelRunner() = default;

void ModelRunner::predict(const std::uint8_t* pixels, std::size_t n, std::int32_t* predictions, float* outputs)
{
    if (m_engine) {
        m_engine->run(pixels, n, outputs, predictions);
        return;
    }
    const Shape& in = m_model->inputShape();
    m_x.resize({n, in[0], in[1], in[2]});
    const std::size_t C = in[0], plane = in[1] * in[2]; // as Dataset::makeBatch
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < C; ++c) {
            const float* lut = m_lut.data() + c * 256;
            const std::size_t o = (i * C + c) * plane;
            for (std::size_t j = 0; j < plane; ++j) m_x[o + j] = lut[pixels[o + j]];
        }
    tbb::task_arena arena(static_cast<int>(m_threads));
    arena.execute([&] {
        RunContext ctx;
        ctx.training = false;
        ctx.releaseActivations = true; // only the output is read
        const Tensor& out = m_model->forward(m_x, ctx, m_hooks.get());
        if (outputs) std::memcpy(outputs, out.data(), out.numel() * sizeof(float));
        argmaxRows(out, std::span<std::int32_t>(predictions, n));
        const std::size_t k = n ? out.numel() / n : 0;
        for (std::size_t i = 0; i < n; ++i)
            if (!allFiniteSpan(out.data() + i * k, k)) ++m_nonFinite;
    });
}

void ModelRunner::requireFiniteOutputs(const std::string& what, std::size_t images) const
{
    if (m_nonFinite == 0) return;
    throw NumericError(what + ": " + std::to_string(m_nonFinite) + " of " + std::to_string(images) +
                       " images gave outputs that are not finite (inf or NaN) on the " + m_description +
                       ": the model's values overflow float32 (a weight or activation beyond 3.4e38), so its predictions "
                       "and accuracy would mean nothing");
}

RunnerEval evaluateRunner(ModelRunner& runner, const LabeledImages& set, std::size_t batch, const std::string& what)
{
    RunnerEval r;
    r.count = set.size();
    r.predictions.assign(set.size(), -1);
    if (batch == 0) batch = 256;
    for (std::size_t b = 0; b < set.size(); b += batch) {
        const std::size_t e = std::min(set.size(), b + batch);
        runner.predict(set.pixels.data() + b * set.imageBytes(), e - b, r.predictions.data() + b);
    }
    runner.requireFiniteOutputs(what, set.size());
    std::size_t correct = 0;
    for (std::size_t i = 0; i < set.size(); ++i) correct += r.predictions[i] == set.labels[i];
    r.accuracy = set.size() ? static_cast<double>(correct) / static_cast<double>(set.size()) : 0.0;
    return r;
}

double benchmarkRunner(ModelRunner& runner, const LabeledImages& set, std::size_t batch, std::size_t passes)
{
    if (set.size() == 0) return 0.0;
    if (batch == 0) batch = 256;
    std::vector<std::int32_t> pred(std::min(batch, set.size()));
    runner.predict(set.pixels.data(), pred.size(), pred.data()); // warm-up
    double best = 0.0;
    for (std::size_t p = 0; p < std::max<std::size_t>(passes, 1); ++p) {
        const auto t0 = std::chrono::steady_clock::now();
        for (std::size_t b = 0; b < set.size(); b += batch) {
            const std::size_t e = std::min(set.size(), b + batch);
            runner.predict(set.pixels.data() + b * set.imageBytes(), e - b, pred.data());
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, static_cast<double>(set.size()) / std::max(s, 1e-9));
    }
    return best;
}

} // namespace quantscope
