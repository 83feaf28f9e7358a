#include "analysis/sensitivity.h"

#include "analysis/plan_eval.h"
#include "quant/format.h"
#include "quant/metrics.h"
#include "quant/precision_plan.h"
#include "train/loss.h"
#include "train/quant_sim.h"
#include "util/errors.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace quantscope {

namespace {

// Mean KL(p || q) over rows of `classes` outputs, each row turned into probabilities by softmax
// (logits; log-probabilities are their own log-softmax), or taken as they are where the model ends
// in Softmax (probabilities: their log, floored at FLT_MIN, is the row's log-softmax).
double meanKl(const std::vector<float>& p, const std::vector<float>& q, std::size_t classes, bool probabilities)
{
    const std::size_t rows = classes ? p.size() / classes : 0;
    double total = 0.0;
    std::vector<double> lp(classes), lq(classes);
    const auto logSoftmax = [&](const float* z, std::vector<double>& out) {
        if (probabilities) {
            for (std::size_t k = 0; k < classes; ++k)
                out[k] = std::log(std::max(static_cast<double>(z[k]), static_cast<double>(std::numeric_limits<float>::min())));
            return;
        }
        double m = z[0];
        for (std::size_t k = 1; k < classes; ++k) m = std::max(m, static_cast<double>(z[k]));
        double s = 0.0;
        for (std::size_t k = 0; k < classes; ++k) s += std::exp(z[k] - m);
        const double lse = m + std::log(s);
        for (std::size_t k = 0; k < classes; ++k) out[k] = z[k] - lse;
    };
    for (std::size_t r = 0; r < rows; ++r) {
        logSoftmax(p.data() + r * classes, lp);
        logSoftmax(q.data() + r * classes, lq);
        double kl = 0.0;
        for (std::size_t k = 0; k < classes; ++k) kl += std::exp(lp[k]) * (lp[k] - lq[k]);
        total += kl;
    }
    return rows ? total / static_cast<double>(rows) : 0.0;
}

} // namespace

SensitivityReport analyzeSensitivity(Model& model, const Dataset& data, const LabeledImages& validation,
                                     const SensitivityOptions& opt, const SensitivityProgress& progress)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (validation.size() == 0) throw ConfigError("sensitivity: the validation set is empty (give --validation N)");
    if (opt.formats.empty()) throw ConfigError("sensitivity: no candidate formats");
    SensitivityReport r;
    r.layers = planLayerNames(model);
    r.images = validation.size();

    // Every configuration is checked before anything is measured.
    std::vector<PrecisionConfig> configs;
    for (const std::string& layer : r.layers)
        for (const std::string& f : opt.formats) {
            if (f == "fp32") throw ConfigError("sensitivity: fp32 is the reference, not a candidate format");
            findFormat(f);
            PrecisionConfig pc;
            pc.strategy = Strategy::Ptq;
            pc.granularity = opt.granularity;
            pc.calibration = opt.calibration;
            pc.activationFormat = opt.activationFormat;
            pc.activationCalibration = opt.activationCalibration;
            pc.calibImages = opt.calibImages;
            LayerOverride o;
            o.layer = layer;
            if (opt.allButOne) {
                pc.format = f;
                o.format = "fp32";
            } else {
                pc.format = "fp32";
                o.format = f; // the granularity and calibration are the default's (pc), so a default group size
                              // past a layer's row is clamped to it, as in train (tester 23: refused, exit 2)
            }
            pc.layers = {o};
            checkPlan(pc.plan(), model);
            configs.push_back(pc);
        }

    PlanEvaluator eval(model, data, validation, opt.calibImages, opt.batchSize);
    r.fp32Accuracy = eval.fp32Accuracy();
    const bool probabilities = modelOutput(model) == ModelOutput::Probabilities;
    const std::size_t total = configs.size();
    for (std::size_t c = 0; c < total; ++c) {
        if (progress && !progress(c, total)) {
            r.stopped = true;
            break;
        }
        SensitivityCell cell;
        cell.layer = r.layers[c / opt.formats.size()];
        cell.format = opt.formats[c % opt.formats.size()];
        const PlanEvaluator::Result q = eval.run(configs[c].plan());
        cell.accuracy = q.accuracy;
        cell.dropPoints = 100.0 * (r.fp32Accuracy - cell.accuracy);
        cell.logitSqnrDb = sqnrDb(eval.fp32Logits(), q.logits);
        cell.klDivergence = meanKl(eval.fp32Logits(), q.logits, eval.classes(), probabilities);
        r.cells.push_back(cell);
    }
    if (progress && !r.stopped) progress(r.cells.size(), total);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

} // namespace quantscope
