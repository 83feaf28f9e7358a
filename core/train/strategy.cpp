#include "train/strategy.h"

#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "quant/float_cast.h"
#include "quant/weight_quantizer.h"
#include "tensor/cpu_features.h"
#include "train/float_sim.h"
#include "train/ptq_refine.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace quantscope {

namespace {

std::vector<WeightTarget> weightTargets(Model& model)
{
    std::vector<WeightTarget> t;
    for (std::size_t i = 0; i < model.size(); ++i) {
        if (auto* c = dynamic_cast<Conv2d*>(&model.layer(i)))
            t.push_back({c->name(), &c->weight(), c->hasBias() ? &c->bias() : nullptr});
        else if (auto* f = dynamic_cast<Linear*>(&model.layer(i)))
            t.push_back({f->name(), &f->weight(), f->hasBias() ? &f->bias() : nullptr});
    }
    return t;
}

void clearOverrides(Model& model)
{
    for (Param* p : model.params()) p->clearOverride();
}

void roundInPlace(const std::vector<Param*>& params, const NumberFormat& f, Rounding r, std::uint64_t key,
                  bool grads)
{
    for (std::size_t k = 0; k < params.size(); ++k) {
        Tensor& t = grads ? params[k]->grad : params[k]->value;
        roundToFormat(t.values(), f, r, streamKey(key, k, grads ? 2 : 1), mxRowLength(t.shape()));
    }
}

const NumberFormat& floatFormatFor(const std::string& strategy, const std::string& name)
{
    const NumberFormat& f = findFormat(name);
    if (needsScale(f) || f.kind == FormatKind::Float32)
        throw ConfigError(strategy + " needs a low-precision float format (fp16, bf16, fp8-e4m3, fp8-e5m2, mx...), not '" +
                          name + "'");
    return f;
}

// ---------------------------------------------------------------- PTQ
// rounding "adaround" quantizes to nearest first (for the scales), then AdaRound re-rounds.
PrecisionConfig nearestFirst(PrecisionConfig c)
{
    if (c.rounding == "adaround") c.rounding = "nearest";
    return c;
}

PtqRefineOptions refineOptions(const TrainConfig& cfg)
{
    PtqRefineOptions o;
    o.cle = cfg.precision.crossLayerEqualization;
    o.relu6ToRelu = cfg.precision.cleRelu6ToRelu;
    o.biasCorrection = cfg.precision.biasCorrection;
    o.adaround = cfg.precision.rounding == "adaround";
    o.ada.iterations = cfg.precision.adaroundIters;
    o.ada.seed = cfg.seed;
    return o;
}

class PtqStrategy final : public PrecisionStrategy {
public:
    PtqStrategy(const TrainConfig& cfg, Model& model)
        : m_cfg(cfg.precision), m_model(model), m_sim(model, nearestFirst(cfg.precision), findFormat(cfg.precision.format)),
          m_refiner(model, refineOptions(cfg))
    {
    }
    void beginEpoch(std::size_t) override
    {
        if (m_refiner.active()) m_refiner.restoreFloat();
        m_trained = true;
    }
    double quantizedAccuracy(const Dataset& data, std::size_t batch) override
    {
        if (m_refiner.active()) {
            m_refiner.begin(m_sim); // FP32 weights back, CLE
            if (m_refiner.replacedRelu6() > 0) { // a different FP32 model: measure it
                const EvalResult changed = evaluate(m_model, data, data.test, batch);
                m_refiner.setFloatAccuracyAfterCle(changed.accuracy, changed.loss);
            }
        }
        m_sim.quantizeWeights(Rounding::Nearest, 0);
        m_sim.calibrate(data, data.train, m_cfg.calibImages, batch);
        m_sim.setObserving(false);
        if (m_refiner.active()) {
            m_refiner.refine(m_sim, data, m_cfg.calibImages, batch, [this](const PtqProgressEvent& e) {
                if (observer()) observer()->onPtqProgress(e);
                return !stopRequested();
            });
            m_trained = false;
        }
        m_sim.roundBiases(); // as the export stores them: int32 at s_in * s_w
        return evaluateQuantized(m_model, m_sim, data, batch);
    }
    std::vector<LayerStats> layerStats(std::size_t epoch) override
    {
        std::vector<LayerStats> s = m_sim.stats(epoch);
        m_refiner.annotate(s);
        return s;
    }
    // A refined model stays refined after its evaluation (export reads it); the next training
    // epoch starts from the FP32 weights again (beginEpoch).
    void afterEval() override
    {
        if (!m_refiner.active()) m_sim.clearWeights();
    }
    std::string phase(std::size_t) const override { return "fp32"; }
    QuantSim* quantSim() override { return &m_sim; }
    void prepareExport(const Dataset& data, std::size_t batch) override
    {
        if (m_refiner.active() && !m_trained && m_refiner.reapplyRefined()) return;
        quantizedAccuracy(data, batch);
    }
    const PtqRefiner* refiner() const override { return m_refiner.active() ? &m_refiner : nullptr; }

private:
    PrecisionConfig m_cfg;
    Model& m_model;
    QuantSim m_sim;
    PtqRefiner m_refiner;
    bool m_trained = true;
};

// ---------------------------------------------------------------- QAT
class QatStrategy final : public PrecisionStrategy {
public:
    QatStrategy(const TrainConfig& cfg, Model& model)
        : m_cfg(cfg.precision), m_model(model), m_sim(model, cfg.precision, findFormat(cfg.precision.format)),
          m_rounding(parseRounding(cfg.precision.rounding)), m_batchSize(cfg.batchSize),
          m_compute(m_sim.enableIntegerProducts())
    {
    }
    LayerHooks* hooks() override { return &m_sim; }
    std::string computePath() const override { return m_compute; }
    void beginEpoch(std::size_t epoch) override
    {
        m_bnFrozen = m_cfg.bnFreezeEpoch && epoch >= m_cfg.bnFreezeEpoch;
        if (m_bnFrozen)
            for (std::size_t i = 0; i < m_model.size(); ++i)
                if (auto* bn = dynamic_cast<BatchNorm2d*>(&m_model.layer(i))) bn->setFrozen(true);
        m_sim.setObserving(true);
    }
    void beforeStep(std::size_t, std::size_t, std::uint64_t key) override
    {
        m_reestimated = false;
        m_sim.zeroLearnedGradients();
        m_sim.quantizeWeights(m_rounding, key);
    }
    bool afterBackward() override
    {
        m_sim.maskWeightGradients();
        return true;
    }
    void afterStep(bool, std::uint64_t) override { m_sim.clampLearnedSteps(); }
    std::vector<Param*> learnedParams() override { return m_sim.learnedParams(); }
    std::vector<StepSizeTrack> learnedSteps() const override { return m_sim.learnedSteps(); }
    void beforeFloatEval() override { m_sim.clearWeights(); }
    double quantizedAccuracy(const Dataset& data, std::size_t batch) override
    {
        m_sim.quantizeWeights(Rounding::Nearest, 0);
        m_sim.setObserving(false);
        m_accBeforeReestimation = kNoValue;
        if (reestimates() && !m_reestimated) {
            m_sim.roundBiases();
            m_accBeforeReestimation = evaluateQuantized(m_model, m_sim, data, batch);
            // the float biases back for the statistics: those of the model QAT trains (and of a
            // re-estimation run again on it), not of one whose betas hold the rounded biases
            m_sim.quantizeWeights(Rounding::Nearest, 0);
            reestimate(data);
        }
        m_sim.roundBiases(); // as the export stores them: int32 at s_in * s_w
        const double acc = evaluateQuantized(m_model, m_sim, data, batch);
        m_sim.setObserving(true);
        return acc;
    }
    double accuracyBeforeBnReestimation() const override { return m_accBeforeReestimation; }
    std::vector<LayerStats> layerStats(std::size_t epoch) override { return m_sim.stats(epoch); }
    void afterEval() override { m_sim.clearWeights(); }
    std::string phase(std::size_t) const override { return m_cfg.format; }
    QuantSim* quantSim() override { return &m_sim; }
    void prepareExport(const Dataset& data, std::size_t) override
    {
        m_sim.quantizeWeights(Rounding::Nearest, 0);
        m_sim.setObserving(false);
        if (reestimates() && !m_reestimated) reestimate(data); // trained since the last evaluation
        m_sim.roundBiases();
    }

private:
    // Not after an epoch trained with frozen BatchNorm statistics (--bn-freeze-epoch): that epoch
    // trained the model that runs on them, and replacing them changes it (resnet8 W2A2 LSQ, BN
    // frozen in epoch 2: 85.07 % on the frozen statistics, 79.67 % re-estimated). The statistics
    // a freeze starts from are the ones the previous epoch's evaluation re-estimated.
    bool reestimates() const { return m_cfg.bnReestimateBatches > 0 && m_sim.foldsBatchNorm() && !m_bnFrozen; }
    // --bn-reestimate: the BatchNorm statistics of the quantized model (weights rounded to
    // nearest, activation observers frozen) on the first batches of the training set, then the
    // weights quantized again with the folding factors of those statistics.
    void reestimate(const Dataset& data)
    {
        reestimateBatchNorm(m_model, data, data.train, m_cfg.bnReestimateBatches, m_batchSize, &m_sim);
        m_sim.quantizeWeights(Rounding::Nearest, 0);
        m_reestimated = true;
    }

    PrecisionConfig m_cfg;
    Model& m_model;
    QuantSim m_sim;
    Rounding m_rounding;
    std::size_t m_batchSize;
    bool m_reestimated = false; // no training step since the last re-estimation
    bool m_bnFrozen = false;    // this epoch trains with frozen BatchNorm statistics
    double m_accBeforeReestimation = kNoValue;
    std::string m_compute;
};

// ---------------------------------------------------------------- bf16 products
// Mixed and low-precision bf16 training run their conv/fc GEMMs on bf16 hardware (tensor/
// gemm_bf16.h): their operands are bf16 values already (FloatSim rounds inputs, outputs, gradients
// and weights), so the products are exact and only the order of the FP32 accumulation differs from
// the emulation. Taken: AMX where the CPU has it, and AVX512_BF16 on AMD (Zen 4 and 5 issue
// VDPBF16PS at the FMA's rate: seed-cnn mixed 1.2-1.3x the FP32 step on a Zen 5). On Intel
// without AMX it is not: VDPBF16PS runs on one port there, and it measured slower than the FP32
// kernels on Sapphire Rapids (0.5-0.8x). QS_BF16_PATH overrides; the start event says which ran.
class Bf16Products {
public:
    Bf16Products(Model& model, const std::string& format) : m_model(model)
    {
        if (format != "bf16") {
            m_name = "emulated (" + format + " has no hardware path here)";
            return;
        }
        const Bf16Path best = bestBf16Path();
        const bool forced = std::getenv("QS_BF16_PATH") != nullptr;
        if (best == Bf16Path::AmxBf16 || (best == Bf16Path::Avx512Bf16 && cpuIsAmd()) || (forced && best != Bf16Path::Emulated)) {
            m_path = best;
            m_name = bf16PathName(best);
        } else if (best == Bf16Path::Avx512Bf16) {
            m_name = "emulated (avx512-bf16 runs at half the FP32 rate on this Intel CPU; QS_BF16_PATH=avx512 forces it)";
        } else {
            m_name = forced ? "emulated (QS_BF16_PATH)" : "emulated (this CPU has no AMX-BF16 or AVX512_BF16)";
        }
        enable(true);
    }
    ~Bf16Products() { enable(false); }
    Bf16Products(const Bf16Products&) = delete;
    Bf16Products& operator=(const Bf16Products&) = delete;
    // Off for FP32 evaluations of the master weights, on for training and the bf16 evaluation,
    // on the convolutions where they pay (Conv2d::bf16ProductsPay) and every fc layer.
    void enable(bool on)
    {
        const Bf16Path p = on ? m_path : Bf16Path::Emulated;
        for (std::size_t i = 0; i < m_model.size(); ++i) {
            if (auto* c = dynamic_cast<Conv2d*>(&m_model.layer(i)))
                c->setBf16Products(c->bf16ProductsPay() ? p : Bf16Path::Emulated);
            else if (auto* l = dynamic_cast<Linear*>(&m_model.layer(i))) l->setBf16Products(p);
        }
    }
    const std::string& name() const { return m_name; }
    // params without the weights that only bf16 products read (readsWeightAsBf16, with the
    // products on): their packers round them to bf16 as FloatSim::roundWeightsToOverride would,
    // so mixed precision's step skips their rounded copies (seed-cnn: fc1's 1.2 M floats a step).
    std::vector<Param*> withoutBf16ReadWeights(const std::vector<Param*>& params) const
    {
        if (m_path == Bf16Path::Emulated) return params;
        std::vector<const Param*> skip;
        for (std::size_t i = 0; i < m_model.size(); ++i) {
            Layer& l = m_model.layer(i);
            if (auto* c = dynamic_cast<Conv2d*>(&l); c && c->readsWeightAsBf16()) skip.push_back(&c->weight());
            else if (auto* f = dynamic_cast<Linear*>(&l); f && f->readsWeightAsBf16()) skip.push_back(&f->weight());
        }
        std::vector<Param*> out;
        for (Param* p : params)
            if (std::find(skip.begin(), skip.end(), p) == skip.end()) out.push_back(p);
        return out;
    }

private:
    Model& m_model;
    Bf16Path m_path = Bf16Path::Emulated;
    std::string m_name;
};

std::vector<Linear*> linearsOf(Model& model)
{
    std::vector<Linear*> out;
    for (std::size_t i = 0; i < model.size(); ++i)
        if (auto* l = dynamic_cast<Linear*>(&model.layer(i))) out.push_back(l);
    return out;
}

// The weight-gradient passes of a model's fc layers on bf16 products (Linear::setWeightGradientPass):
// each such layer rounds its dW to bf16, checks it and multiplies it by `scale`, block by block as
// its backward writes it, instead of a pass of the strategy's own over the whole dW afterwards (the
// same bits; seed-cnn's fc1 dW is 4.7 MB). arm() before a step's backward, rest() after it for the
// gradients the strategy's own pass still takes, then disarm(); disarmed again at the end of a run
// and on destruction, so that no pass outlives its step or points at a strategy gone.
class FcGradientPasses {
public:
    explicit FcGradientPasses(Model& model) : m_linears(linearsOf(model)) {}
    FcGradientPasses(const FcGradientPasses&) = delete;
    FcGradientPasses& operator=(const FcGradientPasses&) = delete;
    ~FcGradientPasses() { disarm(); }
    void arm(float scale)
    {
        m_finite.store(true);
        for (Linear* l : m_linears)
            if (l->readsWeightAsBf16()) l->setWeightGradientPass({true, scale, &m_finite});
    }
    void disarm()
    {
        for (Linear* l : m_linears) l->setWeightGradientPass({});
    }
    // Whether every armed pass found its dW finite (after rounding, before the scale).
    bool finite() const { return m_finite.load(); }
    // The gradients of `params` that no pass took in the last backward, in order.
    const std::vector<Param*>& rest(const std::vector<Param*>& params)
    {
        m_rest.clear();
        for (Param* p : params) {
            const auto done = std::find_if(m_linears.begin(), m_linears.end(), [&](Linear* l) {
                return &l->weight() == p && l->weightGradientPassed();
            });
            if (done == m_linears.end()) m_rest.push_back(p);
        }
        return m_rest;
    }

private:
    std::vector<Linear*> m_linears;
    std::atomic<bool> m_finite{true};
    std::vector<Param*> m_rest;
};

// ---------------------------------------------------------------- mixed precision
class MixedStrategy final : public PrecisionStrategy {
public:
    MixedStrategy(const TrainConfig& cfg, Model& model)
        : m_cfg(cfg.precision), m_model(model), m_params(model.params()),
          m_sim(floatFormatFor("mixed precision", cfg.precision.format), Rounding::Nearest),
          m_products(model, cfg.precision.format), m_stepOverrides(m_products.withoutBf16ReadWeights(m_params))
    {
        m_sim.setModel(model);
    }
    std::string computePath() const override { return m_products.name(); }
    LayerHooks* hooks() override { return &m_sim; }
    void beforeStep(std::size_t, std::size_t, std::uint64_t key) override
    {
        m_sim.setKey(key);
        m_sim.resetOverflow();
        m_sim.roundWeightsToOverride(m_stepOverrides);
        // An fc layer on bf16 products rounds, checks and unscales its dW block by block as its
        // backward writes it: the same bits as afterBackward's pass.
        m_fcPasses.arm(1.0f / m_scaler.scale());
    }
    float lossScale() const override { return m_scaler.scale(); }
    bool afterBackward() override
    {
        // Gradients are produced in the low-precision format too: rounded, checked and unscaled
        // in one pass over each (the fc layers' weights already were, in their backward).
        const std::vector<Param*>& rest = m_fcPasses.rest(m_params);
        m_fcPasses.disarm();
        return m_scaler.roundUnscaleOrSkip(rest, m_sim.format(), m_sim.overflow() || !m_fcPasses.finite());
    }
    void beforeFloatEval() override
    {
        clearOverrides(m_model);
        m_products.enable(false);
    }
    double quantizedAccuracy(const Dataset& data, std::size_t batch) override
    {
        m_sim.roundWeightsToOverride(m_params);
        m_products.enable(true);
        return evaluateFakeQuant(m_model, &m_sim, data, batch);
    }
    std::vector<LayerStats> layerStats(std::size_t epoch) override
    {
        return weightStatsFor(m_model, m_cfg, m_cfg.format, epoch);
    }
    void afterEval() override
    {
        clearOverrides(m_model);
        m_products.enable(true);
    }
    void endRun() override
    {
        m_products.enable(false);
        m_fcPasses.disarm();
    }
    std::string phase(std::size_t) const override { return m_cfg.format; }
    double reportedLossScale() const override { return m_scaler.scale(); }
    std::size_t skippedSteps() const override { return m_scaler.skippedSteps(); }

private:
    PrecisionConfig m_cfg;
    Model& m_model;
    std::vector<Param*> m_params;
    FloatSim m_sim;
    LossScaler m_scaler;
    Bf16Products m_products;
    std::vector<Param*> m_stepOverrides; // what a training step rounds into overrides
    FcGradientPasses m_fcPasses{m_model}; // disarmed by its destructor too: a step cut short leaves none
};

// ---------------------------------------------------------------- pure low precision
class LowPrecisionStrategy final : public PrecisionStrategy {
public:
    LowPrecisionStrategy(const TrainConfig& cfg, Model& model, Optimizer& opt)
        : m_cfg(cfg.precision), m_model(model), m_opt(opt), m_params(model.params()),
          m_fmt(floatFormatFor("pure low precision", cfg.precision.format)),
          m_rounding(parseRounding(cfg.precision.rounding)), m_sim(m_fmt, m_rounding),
          m_scaled(m_fmt.kind == FormatKind::Float && m_fmt.expBits < 8), m_products(model, cfg.precision.format)
    {
        // No FP32 master copy: the weights themselves live on the format's grid from the start.
        roundInPlace(m_params, m_fmt, Rounding::Nearest, 0, false);
        m_sim.setModel(model);
        // bf16 to nearest: the optimizer rounds the weights and its state as it updates them
        // (the same bits as afterStep's passes over each tensor).
        m_optimizerRounds = m_fmt.kind == FormatKind::Float && m_fmt.expBits == 8 && m_fmt.manBits == 7 &&
                            m_rounding == Rounding::Nearest;
        m_opt.setRoundToBf16(m_optimizerRounds);
    }
    LayerHooks* hooks() override { return &m_sim; }
    std::string computePath() const override { return m_products.name(); }
    void beforeFloatEval() override { m_products.enable(false); }
    void beforeStep(std::size_t, std::size_t, std::uint64_t key) override
    {
        m_key = key;
        m_sim.setKey(key);
        m_sim.resetOverflow();
        // bf16 to nearest, unscaled: the fc layers on bf16 products round their dW to bf16 as
        // their backward writes it (scale 1), the bits afterBackward's pass gives.
        if (m_optimizerRounds) m_fcPasses.arm(1.0f);
    }
    float lossScale() const override { return m_scaled ? m_scaler.scale() : 1.0f; }
    bool afterBackward() override
    {
        if (m_optimizerRounds) { // the rest to nearest; nothing to unscale or check (bf16: !m_scaled)
            for (Param* p : m_fcPasses.rest(m_params)) roundToFormat(p->grad.values(), m_fmt, Rounding::Nearest, 0, mxRowLength(p->grad.shape()));
            m_fcPasses.disarm();
            return true;
        }
        roundInPlace(m_params, m_fmt, m_rounding, streamKey(m_key, 0x6A), true);
        if (!m_scaled) return true;
        const bool ok = m_scaler.unscaleOrSkip(m_params, m_sim.overflow());
        if (ok) roundInPlace(m_params, m_fmt, m_rounding, streamKey(m_key, 0x6B), true);
        return ok;
    }
    void afterStep(bool stepped, std::uint64_t key) override
    {
        if (!stepped || m_optimizerRounds) return;
        roundInPlace(m_params, m_fmt, m_rounding, streamKey(key, 0x5E), false);
        // MX formats are for the operands of dot products (OCP MX v1.0; the MX paper, Rouhani et
        // al. 2023, keeps optimizer state in FP32/BF16): Adam's second moments in blocks of 32
        // span more than an element's range, most rounded to 0, and lr m / (sqrt(0) + eps) made
        // NaN within 20 steps at every learning rate (tester 13). Their moments stay FP32.
        if (m_fmt.kind == FormatKind::MxInt || m_fmt.kind == FormatKind::MxFloat) return;
        std::vector<Tensor*> state = m_opt.stateTensors();
        for (std::size_t k = 0; k < state.size(); ++k)
            roundToFormat(state[k]->values(), m_fmt, m_rounding, streamKey(key, 0x57A7E, k));
    }
    double quantizedAccuracy(const Dataset& data, std::size_t batch) override
    {
        m_sim.setKey(0);
        m_products.enable(true);
        return evaluateFakeQuant(m_model, &m_sim, data, batch);
    }
    std::vector<LayerStats> layerStats(std::size_t epoch) override
    {
        return weightStatsFor(m_model, m_cfg, m_cfg.format, epoch);
    }
    void afterEval() override
    {
        clearOverrides(m_model);
        m_products.enable(true);
    }
    void endRun() override
    {
        m_products.enable(false);
        m_opt.setRoundToBf16(false);
        m_fcPasses.disarm();
    }
    std::string phase(std::size_t) const override { return m_cfg.format + "-" + m_cfg.rounding; }
    double reportedLossScale() const override { return m_scaled ? m_scaler.scale() : kNoValue; }
    std::size_t skippedSteps() const override { return m_scaler.skippedSteps(); }

private:
    PrecisionConfig m_cfg;
    Model& m_model;
    Optimizer& m_opt;
    std::vector<Param*> m_params;
    const NumberFormat& m_fmt;
    Rounding m_rounding;
    FloatSim m_sim;
    LossScaler m_scaler;
    bool m_scaled;
    Bf16Products m_products;
    bool m_optimizerRounds; // the optimizer rounds weights and state to bf16 (setRoundToBf16)
    std::uint64_t m_key = 0;
    FcGradientPasses m_fcPasses{m_model}; // bf16 to nearest (m_optimizerRounds) only
};

} // namespace

std::vector<LayerStats> weightStatsFor(Model& model, const PrecisionConfig& cfg, const std::string& format,
                                       std::size_t epoch)
{
    const NumberFormat& f = findFormat(format);
    if (f.kind == FormatKind::Float32) return {};
    std::vector<WeightTarget> targets = weightTargets(model);
    WeightQuantizer wq(f, parseGranularity(cfg.granularity), parseCalibration(cfg.calibration), Rounding::Nearest,
                       cfg.percentile);
    wq.apply(targets, 0);
    std::vector<LayerStats> s = wq.stats(epoch, targets);
    clearOverrides(model);
    return s;
}

std::vector<SchedulePhase> parseSchedule(const std::string& text)
{
    std::vector<SchedulePhase> phases;
    std::stringstream ss(text);
    for (std::string part; std::getline(ss, part, ',');) {
        const auto colon = part.find(':');
        if (colon == std::string::npos || colon == 0 || colon + 1 == part.size())
            throw ConfigError("schedule part '" + part + "' is not format:epochs (e.g. fp32:1,fp16:1,int8:1)");
        const std::string fmt = part.substr(0, colon), count = part.substr(colon + 1);
        findFormat(fmt); // throws with the list of formats
        std::size_t pos = 0;
        unsigned long n = 0;
        try {
            n = std::stoul(count, &pos);
        } catch (...) {
            pos = 0;
        }
        if (pos != count.size() || n == 0)
            throw ConfigError("schedule part '" + part + "': epochs must be a positive whole number");
        if (n > 10000) // the --epochs limit (tester 24: "must be a positive whole number" for 20000)
            throw ConfigError("schedule part '" + part + "': " + count + " epochs is out of range [1, 10000]");
        phases.push_back({fmt, n});
    }
    if (phases.empty()) throw ConfigError("the schedule is empty (e.g. fp32:1,fp16:1,int8:1)");
    // getline drops an empty last part: "int8:1," ran, and the progress line showed its phase as []
    if (text.back() == ',') throw ConfigError("the schedule '" + text + "' ends with a comma (e.g. fp32:1,fp16:1,int8:1)");
    return phases;
}

std::unique_ptr<PrecisionStrategy> makeProgressiveStrategy(const TrainConfig& cfg, Model& model);

double PrecisionStrategy::evaluateQuantized(Model& model, QuantSim& sim, const Dataset& data, std::size_t batch)
{
    if (m_evaluator)
        if (const std::optional<double> acc = m_evaluator(model, sim, data, data.test, &m_runner)) return *acc;
    return evaluateFakeQuant(model, &sim, data, batch);
}

double PrecisionStrategy::evaluateFakeQuant(Model& model, LayerHooks* hooks, const Dataset& data, std::size_t batch)
{
    m_runner = "fake-quant";
    return evaluate(model, data, data.test, batch, hooks).accuracy;
}

namespace {
std::unique_ptr<PrecisionStrategy> makeStrategyOf(const TrainConfig& cfg, Model& model, Optimizer& opt)
{
    switch (cfg.precision.strategy) {
    case Strategy::Fp32: return std::make_unique<PrecisionStrategy>();
    case Strategy::Ptq: return std::make_unique<PtqStrategy>(cfg, model);
    case Strategy::Qat: return std::make_unique<QatStrategy>(cfg, model);
    case Strategy::Mixed: return std::make_unique<MixedStrategy>(cfg, model);
    case Strategy::LowPrecision: return std::make_unique<LowPrecisionStrategy>(cfg, model, opt);
    case Strategy::Progressive: return makeProgressiveStrategy(cfg, model);
    }
    throw ConfigError("unknown strategy");
}
} // namespace

std::unique_ptr<PrecisionStrategy> makeStrategy(const TrainConfig& cfg, Model& model, Optimizer& opt)
{
    std::unique_ptr<PrecisionStrategy> s = makeStrategyOf(cfg, model, opt);
    s->setQuantizedEvaluator(cfg.quantizedEvaluator);
    return s;
}

} // namespace quantscope
