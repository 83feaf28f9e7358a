// QuantSim's learned step sizes (LSQ, Esser et al., ICLR 2020; LSQ+, Bhalgat et al., CVPRW 2020):
// the weight steps as parameters, their initialisation, floor and gradients. The rest of QuantSim
// is in quant_sim.cpp.
#include "train/quant_sim.h"

#include "nn/conv2d.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>

namespace quantscope {

std::vector<Param*> QuantSim::learnedParams()
{
    std::vector<Param*> out;
    for (auto& p : m_lsqW)
        if (p) out.push_back(p.get());
    for (auto& a : m_lsqAct)
        if (a) {
            out.push_back(&a->step());
            if (a->learnsOffset()) out.push_back(&a->offset());
        }
    return out;
}

std::vector<StepSizeTrack> QuantSim::learnedSteps() const
{
    std::vector<StepSizeTrack> out;
    for (std::size_t t = 0; t < m_lsqW.size(); ++t) {
        if (!m_lsqW[t] || !m_lsqWInit[t]) continue;
        const std::vector<float> units = stepUnits(t);
        std::vector<float> v(m_lsqW[t]->value.values().begin(), m_lsqW[t]->value.values().end());
        for (std::size_t k = 0; k < v.size(); ++k) v[k] *= units[k]; // the grid's step s
        StepSizeTrack k;
        k.layer = m_targets[t].layer;
        k.tensor = "weight";
        double sum = 0.0;
        k.stepMin = k.stepMax = v[0];
        for (float x : v) {
            sum += x;
            k.stepMin = std::min<double>(k.stepMin, x);
            k.stepMax = std::max<double>(k.stepMax, x);
        }
        k.step = sum / static_cast<double>(v.size());
        out.push_back(std::move(k));
    }
    for (const auto& a : m_lsqAct) {
        if (!a || !a->initialised()) continue;
        LsqActivationQuantizer& q = *a;
        StepSizeTrack k;
        k.layer = q.name();
        k.tensor = "activation";
        k.step = k.stepMin = k.stepMax = q.step().value[0];
        if (q.learnsOffset()) k.offset = q.offset().value[0];
        out.push_back(std::move(k));
    }
    return out;
}

void QuantSim::zeroLearnedGradients()
{
    for (Param* p : learnedParams()) p->grad.fill(0.0f);
}

void QuantSim::clampLearnedSteps()
{
    for (auto& p : m_lsqW)
        if (p)
            for (float& v : p->value.values()) v = v >= kScaleEps ? v : kScaleEps; // also NaN
    for (auto& a : m_lsqAct)
        if (a) a->clampStep();
    floorLearnedWeightSteps();
    // The activation grids in force (what export and the quantized evaluation read) follow the step
    // the optimizer just made, as the weight steps do: before, they held the grid of the last
    // forward, one update behind what step_sizes reports (tester 10: stem.2 reported 0.04548,
    // exported 0.04319). A step clamped to the float floor keeps its grid: the next training
    // forward lifts it to the batch's floor (lsqActivationStepFloor), which no grid of 1.2e-7 is.
    for (std::size_t point = 0; point < m_lsqAct.size(); ++point) {
        LsqActivationQuantizer* a = m_lsqAct[point].get();
        if (a && a->initialised() && point < m_act.size() && m_act[point] && a->step().value[0] > kScaleEps)
            m_act[point]->setFixedParams(a->params());
    }
}

void QuantSim::floorLearnedWeightSteps()
{
    // In the units u is learned in: floor(s) / (s / u).
    for (std::size_t t = 0; t < m_lsqW.size(); ++t) {
        if (!m_lsqW[t] || !m_lsqWInit[t]) continue;
        const QuantParams& p = weightParams(t);
        const auto w = m_targets[t].weight->value.values();
        if (p.numSlots() != m_lsqW[t]->value.numel() || p.scale.empty()) continue; // not quantized yet
        const std::vector<float> floor = lsqStepFloor(w, p);
        const std::vector<float> units = stepUnits(t);
        float* u = m_lsqW[t]->value.data();
        for (std::size_t k = 0; k < floor.size(); ++k) {
            const float f = floor[k] / units[k];
            u[k] = u[k] >= f ? u[k] : f; // also NaN
        }
    }
}

void QuantSim::initLearnedWeightSteps()
{
    // Per slot, on the layout of the observer's params: the MSE-optimal step of the weights as they
    // are (the checkpoint's, or the folded ones), LSQ's 2<|w|>/sqrt(Qp), or the observer's scale.
    const LsqInit rule = parseLsqInit(m_cfg.lsqInit);
    for (std::size_t t = 0; t < m_lsqW.size(); ++t) {
        if (!m_lsqW[t] || m_lsqWInit[t]) continue;
        const std::size_t g = static_cast<std::size_t>(m_group[t]);
        const QuantParams& observed = m_groups[g].wq->weightParams(m_slot[t]);
        const auto w = m_targets[t].weight->value.values();
        const std::vector<float> s = rule == LsqInit::Range   ? observed.scale
                                     : rule == LsqInit::Paper ? lsqInitialSteps(w, observed)
                                                              : lsqMseSteps(w, observed, m_groups[g].wq->format());
        if (s.size() != m_lsqW[t]->value.numel())
            throw ConfigError("LSQ: layer '" + m_targets[t].layer + "' has " + std::to_string(s.size()) + " scale slots, not " +
                              std::to_string(m_lsqW[t]->value.numel()));
        const std::vector<float> units = stepUnits(t);
        float* u = m_lsqW[t]->value.data();
        for (std::size_t k = 0; k < s.size(); ++k) u[k] = std::max(s[k] / units[k], kScaleEps);
        m_lsqWInit[t] = true;
    }
}

std::vector<float> QuantSim::stepUnits(std::size_t t) const
{
    const std::size_t slots = m_lsqW.at(t) ? m_lsqW[t]->value.numel() : 0;
    std::vector<float> units(slots, 1.0f);
    for (const Fold& f : m_folds) {
        if (f.target != t || f.factor.empty() || slots == 0) continue;
        const std::size_t C = f.factor.size();
        // |f| below this counts as a dead channel: its step stays in folded units.
        auto unit = [](float x) { return std::fabs(x) > 1e-12f ? std::fabs(x) : 1.0f; };
        if (slots % C != 0) { // per tensor: the mean |f|
            double sum = 0.0;
            for (float x : f.factor) sum += std::fabs(x);
            const float mean = static_cast<float>(sum / static_cast<double>(C));
            std::fill(units.begin(), units.end(), unit(mean));
        } else { // per channel, or groups inside each channel's row
            const std::size_t per = slots / C;
            for (std::size_t k = 0; k < slots; ++k) units[k] = unit(f.factor[k / per]);
        }
    }
    return units;
}

void QuantSim::learnedWeightGradients()
{
    // dL/ds = g * sum_i dL/dw_hat_i * d w_hat_i / d s. Folded convs: w_hat = fq(w f; s) / f, so
    // the folded weight's upstream gradient is the conv's divided by f (per output channel).
    std::vector<long> foldOf(m_targets.size(), -1);
    for (std::size_t k = 0; k < m_folds.size(); ++k) foldOf[m_folds[k].target] = static_cast<long>(k);
    std::vector<float> up;
    for (std::size_t t = 0; t < m_lsqW.size(); ++t) {
        if (!m_lsqW[t] || !m_lsqWInit[t]) continue;
        const QuantParams& p = weightParams(t);
        const Param& w = *m_targets[t].weight;
        std::span<const float> grad;
        if (foldOf[t] >= 0) {
            const Fold& f = m_folds[static_cast<std::size_t>(foldOf[t])];
            const Tensor& cg = f.conv->weight().grad;
            const std::size_t C = f.factor.size(), row = cg.numel() / C;
            up.resize(cg.numel());
            for (std::size_t c = 0; c < C; ++c)
                for (std::size_t j = 0; j < row; ++j)
                    up[c * row + j] = f.factor[c] != 0.0f ? cg[c * row + j] / f.factor[c] : 0.0f;
            grad = up;
        } else {
            grad = w.grad.values();
        }
        lsqStepGradient(w.value.values(), grad, p, m_lsqW[t]->grad.values());
        // dL/du = dL/ds * ds/du, s = |f| u.
        const std::vector<float> units = stepUnits(t);
        float* gu = m_lsqW[t]->grad.data();
        for (std::size_t k = 0; k < units.size(); ++k) gu[k] *= units[k];
    }
}

} // namespace quantscope
