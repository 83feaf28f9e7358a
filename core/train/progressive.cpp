// Progressive precision: a schedule of formats over the epochs (e.g. fp32:1,fp16:1,int8:1).
// Float phases run like mixed precision (rounded compute, FP32 masters, loss scaling); integer
// phases run like QAT. At a phase change the weights used are blended from the previous format
// to the new one over the first `blendSteps` steps, so the hand-over is smooth.
#include "nn/batchnorm2d.h"
#include "quant/float_cast.h"
#include "train/float_sim.h"
#include "train/quant_sim.h"
#include "train/strategy.h"
#include "train/trainer.h"
#include "util/errors.h"

#include <cmath>

namespace quantscope {

namespace {

class ProgressiveStrategy final : public PrecisionStrategy {
    struct Phase {
        std::string format;
        std::size_t firstEpoch, lastEpoch;
        std::unique_ptr<QuantSim> qsim;   // integer formats
        std::unique_ptr<FloatSim> fsim;   // float formats
        bool fp32() const { return !qsim && !fsim; }
    };

public:
    ProgressiveStrategy(const TrainConfig& cfg, Model& model)
        : m_cfg(cfg.precision), m_model(model), m_params(model.params())
    {
        std::size_t epoch = 1;
        const std::vector<SchedulePhase> schedule = parseSchedule(cfg.precision.schedule);
        if (!cfg.precision.layers.empty() && !needsScale(findFormat(schedule.back().format)))
            throw ConfigError("a per-layer plan applies to progressive's last phase, which must be an integer format, not " +
                              schedule.back().format);
        for (const SchedulePhase& sp : schedule) {
            Phase p{sp.format, epoch, epoch + sp.epochs - 1, nullptr, nullptr};
            const NumberFormat& f = findFormat(sp.format);
            if (needsScale(f))
                p.qsim = std::make_unique<QuantSim>(model, cfg.precision, f, &sp == &schedule.back()); // the plan: last phase
            else if (f.kind != FormatKind::Float32) {
                p.fsim = std::make_unique<FloatSim>(f, Rounding::Nearest);
                p.fsim->setModel(model);
            }
            epoch += sp.epochs;
            m_phases.push_back(std::move(p));
        }
    }

    LayerHooks* hooks() override
    {
        Phase& p = m_phases[m_cur];
        if (p.qsim) return p.qsim.get();
        return p.fsim.get();
    }

    void beginEpoch(std::size_t epoch) override
    {
        const std::size_t prev = m_cur;
        m_cur = phaseIndex(epoch);
        if (m_cur != prev || epoch == 1) m_stepInPhase = 0;
        if (m_phases[m_cur].qsim) m_phases[m_cur].qsim->setObserving(true);
    }

    void beforeStep(std::size_t, std::size_t, std::uint64_t key) override
    {
        Phase& p = m_phases[m_cur];
        applyWeights(p, key);
        const bool blending = m_cur > 0 && m_stepInPhase < m_cfg.blendSteps;
        if (blending) {
            // weights used = (1 - a) * previous format + a * new format, a ramping up to 1
            const float a = static_cast<float>(m_stepInPhase + 1) / static_cast<float>(m_cfg.blendSteps + 1);
            std::vector<std::vector<float>> next(m_params.size());
            for (std::size_t k = 0; k < m_params.size(); ++k)
                next[k] = m_params[k]->hasOverride ? m_params[k]->override.values() : m_params[k]->value.values();
            Phase& q = m_phases[m_cur - 1];
            for (Param* prm : m_params) prm->clearOverride();
            applyWeights(q, key);
            for (std::size_t k = 0; k < m_params.size(); ++k) {
                Param& prm = *m_params[k];
                const std::vector<float>& old = prm.hasOverride ? prm.override.values() : prm.value.values();
                std::vector<float> mixed(next[k].size());
                for (std::size_t i = 0; i < mixed.size(); ++i) mixed[i] = (1.0f - a) * old[i] + a * next[k][i];
                prm.override.resize(prm.value.shape());
                prm.override.values() = std::move(mixed);
                prm.hasOverride = true;
            }
        }
        if (p.fsim) {
            p.fsim->setKey(key);
            p.fsim->resetOverflow();
        }
        ++m_stepInPhase;
    }

    float lossScale() const override { return m_phases[m_cur].fsim ? m_scaler.scale() : 1.0f; }

    bool afterBackward() override
    {
        Phase& p = m_phases[m_cur];
        if (p.qsim) p.qsim->maskWeightGradients();
        if (p.fsim) return m_scaler.unscaleOrSkip(m_params, p.fsim->overflow());
        return true;
    }

    void beforeFloatEval() override { clearAll(); }

    double quantizedAccuracy(const Dataset& data, std::size_t batch) override
    {
        // The model as it would run in the schedule's final format.
        Phase& last = m_phases.back();
        if (last.fp32()) return kNoValue;
        if (last.fsim) {
            last.fsim->roundWeightsToOverride(m_params);
            last.fsim->setKey(0);
            return evaluateFakeQuant(m_model, last.fsim.get(), data, batch);
        }
        last.qsim->quantizeWeights(Rounding::Nearest, 0);
        if (m_cur != m_phases.size() - 1) last.qsim->calibrate(data, data.train, m_cfg.calibImages, batch);
        last.qsim->setObserving(false);
        last.qsim->roundBiases(); // as the export stores them: int32 at s_in * s_w
        const double acc = evaluateQuantized(m_model, *last.qsim, data, batch);
        last.qsim->setObserving(true);
        return acc;
    }

    std::vector<LayerStats> layerStats(std::size_t epoch) override
    {
        clearAll();
        Phase& p = m_phases[m_cur];
        if (p.qsim) {
            p.qsim->quantizeWeights(Rounding::Nearest, 0);
            return p.qsim->stats(epoch);
        }
        return weightStatsFor(m_model, m_cfg, p.fp32() ? m_phases.back().format : p.format, epoch);
    }

    void afterEval() override { clearAll(); }
    std::string phase(std::size_t epoch) const override { return m_phases[phaseIndex(epoch)].format; }
    double reportedLossScale() const override { return m_phases[m_cur].fsim ? m_scaler.scale() : kNoValue; }
    std::size_t skippedSteps() const override { return m_scaler.skippedSteps(); }
    QuantSim* quantSim() override { return m_phases.back().qsim.get(); }
    void prepareExport(const Dataset& data, std::size_t batch) override
    {
        if (!m_phases.back().qsim) return;
        quantizedAccuracy(data, batch); // calibrates when needed
        m_phases.back().qsim->quantizeWeights(Rounding::Nearest, 0);
    }

private:
    std::size_t phaseIndex(std::size_t epoch) const
    {
        for (std::size_t i = 0; i < m_phases.size(); ++i)
            if (epoch <= m_phases[i].lastEpoch) return i;
        return m_phases.size() - 1;
    }
    void applyWeights(Phase& p, std::uint64_t key)
    {
        if (p.qsim)
            p.qsim->quantizeWeights(parseRounding(m_cfg.rounding), key);
        else if (p.fsim)
            p.fsim->roundWeightsToOverride(m_params);
    }
    void clearAll()
    {
        for (Phase& p : m_phases)
            if (p.qsim) p.qsim->clearWeights();
        for (Param* prm : m_params) prm->clearOverride();
    }

    PrecisionConfig m_cfg;
    Model& m_model;
    std::vector<Param*> m_params;
    std::vector<Phase> m_phases;
    std::size_t m_cur = 0, m_stepInPhase = 0;
    LossScaler m_scaler;
};

} // namespace

std::unique_ptr<PrecisionStrategy> makeProgressiveStrategy(const TrainConfig& cfg, Model& model)
{
    return std::make_unique<ProgressiveStrategy>(cfg, model);
}

} // namespace quantscope
