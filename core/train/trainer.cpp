#include "train/trainer.h"

#include "nn/batchnorm2d.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "train/ptq_refine.h"
#include "train/loss.h"
#include "train/lr_schedule.h"
#include "util/errors.h"
#include "util/memory.h"
#include "util/rng.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

namespace quantscope {

namespace {
using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
} // namespace

void TrainConfig::validate() const
{
    if (pretrained && !modelFactory) throw ConfigError("a pretrained start needs a model to load");
    if (epochs > 10000 || (epochs == 0 && !pretrained))
        throw ConfigError(!pretrained ? "epochs must be between 1 and 10000 (0 only with a trained model to start from)"
                                      : "epochs must be between 0 and 10000");
    // QAT and progressive learn their quantizers (ranges, LSQ steps) in training: with no epoch
    // there is nothing to evaluate them with (a run crashed on it). PTQ calibrates instead.
    if (epochs == 0 && (precision.strategy == Strategy::Qat || precision.strategy == Strategy::Progressive))
        throw ConfigError(std::string("--epochs 0 evaluates a loaded model as it is (ptq: calibrated and quantized); --strategy ") +
                          (precision.strategy == Strategy::Qat ? "qat" : "progressive") + " trains, so it needs at least 1 epoch");
    if (batchSize == 0 || batchSize > 65536) throw ConfigError("batch size must be between 1 and 65536");
    if (!(lr > 0.0f) || !std::isfinite(lr)) throw ConfigError("learning rate must be a positive number");
    parseLrSchedule(lrSchedule);
    if (optimizer != "adam" && optimizer != "sgd")
        throw ConfigError("unknown optimizer '" + optimizer + "' (known: adam, sgd)");
    if (!(momentum >= 0.0f && momentum < 1.0f)) throw ConfigError("momentum must be in [0, 1)");
    if (!(weightDecay >= 0.0f)) throw ConfigError("weight decay must be >= 0");
    if (threads == 0 || threads > 1024) throw ConfigError("threads must be between 1 and 1024");
    if (evalBatchSize == 0) throw ConfigError("evaluation batch size must be positive");
    if (quantEval != "engine" && quantEval != "fake-quant")
        throw ConfigError("unknown quantized evaluation '" + quantEval + "' (known: engine, fake-quant)");
    precision.validate();
    if (precision.strategy == Strategy::Progressive) {
        std::size_t total = 0;
        for (const SchedulePhase& p : parseSchedule(precision.schedule)) total += p.epochs;
        if (total != epochs)
            throw ConfigError("the progressive schedule '" + precision.schedule + "' covers " + std::to_string(total) +
                              " epoch(s) but " + std::to_string(epochs) + " are set");
    }
}

void TrainConfig::epochsFromSchedule()
{
    if (precision.strategy != Strategy::Progressive) return;
    std::size_t total = 0;
    for (const SchedulePhase& p : parseSchedule(precision.schedule)) total += p.epochs;
    epochs = total;
}

std::unique_ptr<Optimizer> makeOptimizer(const TrainConfig& cfg)
{
    if (cfg.optimizer == "sgd") {
        SgdOptions o;
        o.lr = cfg.lr;
        o.momentum = cfg.momentum;
        o.nesterov = cfg.nesterov;
        o.weightDecay = cfg.weightDecay;
        return std::make_unique<Sgd>(o);
    }
    AdamOptions o;
    o.lr = cfg.lr;
    o.weightDecay = cfg.weightDecay;
    o.amsgrad = cfg.amsgrad;
    // Pure low precision keeps Adam's moments on the format's grid (LowPrecisionStrategy): a second
    // moment v below the format's smallest subnormal s is 0 there, and with eps = 1e-8 the update
    // lr m / (sqrt(v) + eps) grew by up to 10^4 (fp16 diverged at every learning rate; fp8-e4m3
    // stayed at chance). eps is raised to sqrt(s), the smallest sqrt(v) the grid holds above 0:
    // 2.4e-4 for fp16, 0.0039 for fp8-e5m2, 0.044 for fp8-e4m3 (bf16 and FP32: unchanged).
    if (cfg.precision.strategy == Strategy::LowPrecision) {
        const NumberFormat& f = findFormat(cfg.precision.format);
        if (f.kind == FormatKind::Float) {
            const int bias = (1 << (f.expBits - 1)) - 1;
            o.eps = std::max(o.eps, static_cast<float>(std::sqrt(std::ldexp(1.0, 1 - bias - f.manBits))));
        }
    }
    return std::make_unique<Adam>(o);
}

EvalResult evaluate(Model& model, const Dataset& data, const LabeledImages& set, std::size_t batchSize,
                    LayerHooks* hooks, std::vector<std::int32_t>* predictions)
{
    EvalResult r;
    r.count = set.size();
    if (predictions) predictions->assign(set.size(), -1);
    if (set.size() == 0) return r;
    Tensor x, grad;
    std::vector<std::int32_t> y, pred;
    RunContext ctx;
    ctx.training = false;
    ctx.releaseActivations = true; // only the output is read
    double lossSum = 0.0;
    std::size_t correct = 0;
    for (std::size_t b = 0; b < set.size(); b += batchSize) {
        const std::size_t e = std::min(set.size(), b + batchSize);
        data.makeBatch(set, b, e, x, y);
        const Tensor& out = model.forward(x, ctx, hooks);
        lossSum += static_cast<double>(modelClassificationLoss(model, out, y, grad).loss) * static_cast<double>(e - b);
        pred.resize(e - b);
        argmaxRows(out, pred);
        for (std::size_t i = 0; i < pred.size(); ++i) {
            correct += pred[i] == y[i];
            if (predictions) (*predictions)[b + i] = pred[i];
        }
    }
    r.loss = lossSum / static_cast<double>(set.size());
    r.accuracy = static_cast<double>(correct) / static_cast<double>(set.size());
    return r;
}

std::size_t reestimateBatchNorm(Model& model, const Dataset& data, const LabeledImages& set, std::size_t batches,
                                std::size_t batchSize, LayerHooks* hooks)
{
    std::vector<BatchNorm2d*> bns;
    for (std::size_t i = 0; i < model.size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&model.layer(i))) bns.push_back(bn);
    if (bns.empty() || batches == 0 || batchSize == 0 || set.size() == 0) return 0;
    struct Span { // ends the re-estimation also when a forward pass throws
        std::vector<BatchNorm2d*>& bns;
        ~Span()
        {
            for (BatchNorm2d* bn : bns) bn->endReestimation();
        }
    } span{bns};
    for (BatchNorm2d* bn : bns) bn->beginReestimation();
    Tensor x;
    std::vector<std::int32_t> y;
    RunContext ctx;
    ctx.training = false;
    ctx.releaseActivations = true; // only the output is read
    const std::size_t n = batches >= (set.size() + batchSize - 1) / batchSize ? set.size() : batches * batchSize;
    for (std::size_t b = 0; b < n; b += batchSize) {
        data.makeBatch(set, b, std::min(n, b + batchSize), x, y);
        model.forward(x, ctx, hooks);
    }
    return bns.size();
}

std::uint64_t trainingFootprintBytes(Model& model, std::size_t batchSize)
{
    std::uint64_t activations = 0;
    for (const Shape& s : model.activationShapes(batchSize)) {
        std::uint64_t n = 1;
        for (std::size_t d : s) n *= d;
        activations += n;
    }
    return 16 * static_cast<std::uint64_t>(model.numParams()) + 16 * activations;
}

void checkTrainingFootprint(Model& model, std::size_t batchSize, unsigned long long physicalBytes)
{
    if (physicalBytes == 0) return;
    const std::uint64_t need = trainingFootprintBytes(model, batchSize);
    if (static_cast<double>(need) <= 0.8 * static_cast<double>(physicalBytes)) return;
    const Shape& in = model.inputShape();
    char text[256];
    std::snprintf(text, sizeof text, "needs about %.1f GiB to train in batches of %zu, and this machine has %.1f GiB",
                  static_cast<double>(need) / double(1u << 30), batchSize, static_cast<double>(physicalBytes) / double(1u << 30));
    throw ConfigError(model.name() + " on " + std::to_string(in.at(0)) + "x" + std::to_string(in.at(1)) + "x" +
                      std::to_string(in.at(2)) + " images " + text + " (" + std::to_string(model.numParams()) +
                      " parameters); resize the images (--resize HxW) or use a smaller --batch-size");
}

Trainer::Trainer(TrainConfig cfg, const Dataset& data, TrainObserver* observer, StopToken* stop)
    : m_cfg(std::move(cfg)), m_data(data), m_observer(observer), m_stop(stop)
{
    m_cfg.validate();
    if (m_data.train.size() == 0) throw ConfigError("the training set is empty");
    m_model = m_cfg.modelFactory
                  ? m_cfg.modelFactory(Shape{m_data.channels(), m_data.height(), m_data.width()}, m_data.numClasses(), m_cfg.seed)
                  : makeModel(m_cfg.model, m_data.channels(), m_data.height(), m_data.width(), m_data.numClasses(), m_cfg.seed);
    checkTrainingFootprint(*m_model, m_cfg.batchSize, physicalMemoryBytes());
    m_opt = makeOptimizer(m_cfg);
    m_strategy = makeStrategy(m_cfg, *m_model, *m_opt);
    m_strategy->attach(m_observer, m_stop);
}

Trainer::~Trainer() = default;

FinishEvent Trainer::run()
{
    // BatchNorm/Conv2d + ReLU pairs run fused (Model::setFusion; with hooks only where the hooks
    // leave the first layer's output alone) for this run only: whatever reads every activation
    // of the model afterwards sees them all.
    m_model->setFusion(true);
    struct EndRun { // also when the run throws (diverged, bad data)
        PrecisionStrategy& strategy;
        Model& model;
        ~EndRun()
        {
            strategy.endRun();
            model.setFusion(false);
        }
    } endRun{*m_strategy, *m_model};
    tbb::task_arena arena(static_cast<int>(m_cfg.threads));
    FinishEvent result;
    arena.execute([&] { result = runInArena(); });
    return result;
}

bool Trainer::waitWhilePaused()
{
    if (m_stop && m_stop->paused()) { // paused time is no training time: the reported seconds leave it out
        const auto t = Clock::now();
        while (m_stop->paused() && !m_stop->stopRequested()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        m_pausedSeconds += secondsSince(t);
    }
    return !(m_stop && m_stop->stopRequested());
}

// Evaluates after an epoch (FP32 and, where the strategy has one, the quantized model) and
// reports the epoch and the layer statistics.
void Trainer::endOfEpoch(EpochEvent& ee, FinishEvent& fin)
{
    const std::size_t epoch = ee.epoch;
    ee.epochs = m_cfg.epochs;
    ee.phase = m_strategy->phase(std::max<std::size_t>(epoch, 1));
    ee.lossScale = m_strategy->reportedLossScale();
    ee.skippedSteps = m_strategy->skippedSteps();
    m_strategy->beforeFloatEval();
    const EvalResult test = evaluate(*m_model, m_data, m_data.test, m_cfg.evalBatchSize);
    ee.testLoss = test.loss;
    ee.testAccuracy = test.accuracy;
    if (m_data.validation.size() > 0)
        ee.validationAccuracy = evaluate(*m_model, m_data, m_data.validation, m_cfg.evalBatchSize).accuracy;
    ee.quantTestAccuracy = m_strategy->quantizedAccuracy(m_data, m_cfg.evalBatchSize);
    if (!std::isnan(ee.quantTestAccuracy)) ee.quantRunner = m_strategy->quantizedRunner();
    ee.quantTestAccuracyBeforeBnReestimation = m_strategy->accuracyBeforeBnReestimation();
    ee.peakRssMb = peakResidentMegabytes(); // the evaluations included (a PTQ --epochs 0 reported 0)
    std::vector<LayerStats> stats = m_strategy->layerStats(epoch);
    m_strategy->afterEval();
    fin.epochsDone = epoch;
    fin.testAccuracy = ee.testAccuracy;
    fin.testLoss = ee.testLoss;
    fin.quantTestAccuracy = ee.quantTestAccuracy;
    // PTQ with --cle-relu6-to-relu quantizes a different FP32 model (its ReLU6 layers made ReLU):
    // the run's FP32 accuracy is that model's, beside the quantized one made from it (tester 10:
    // the ReLU6 model's 74.27 % was reported where the ReLU model scores 74.28 %).
    if (const PtqRefiner* r = m_strategy->refiner(); r && r->replacedRelu6() > 0 && !std::isnan(r->floatAccuracyAfterCle())) {
        fin.testAccuracy = r->floatAccuracyAfterCle();
        fin.testLoss = r->floatLossAfterCle(); // the pair from one model
    }
    if (m_observer) {
        if (!stats.empty()) m_observer->onLayerStats(stats);
        m_observer->onEpoch(ee);
    }
}

FinishEvent Trainer::runInArena()
{
    const auto t0 = Clock::now();
    const LabeledImages& train = m_data.train;
    const std::size_t N = train.size(), B = m_cfg.batchSize;
    const std::size_t steps = (N + B - 1) / B;
    StartEvent se;
    se.model = m_cfg.model;
    se.parameters = m_model->numParams();
    se.epochs = m_cfg.epochs;
    se.stepsPerEpoch = steps;
    se.trainImages = N;
    se.testImages = m_data.test.size();
    se.threads = m_cfg.threads;
    se.compute = m_strategy->computePath();
    se.optimizer = m_cfg.optimizer;
    se.lr = m_cfg.lr;
    se.lrSchedule = m_cfg.lrSchedule;
    if (m_observer) m_observer->onStart(se);

    FinishEvent fin;
    Tensor x, grad;
    std::vector<std::int32_t> y, pred;
    std::vector<Param*> params = m_model->params();
    for (Param* p : m_strategy->learnedParams()) params.push_back(p);
    const std::size_t reportEvery = std::max<std::size_t>(1, steps / 20); // learned step sizes
    // Constant leaves the optimizer's rate alone (bit-identical to runs before schedules).
    const LrSchedule schedule = parseLrSchedule(m_cfg.lrSchedule);
    const std::size_t totalSteps = steps * m_cfg.epochs;
    std::size_t globalStep = 0, skippedInARow = 0;
    double ipsSum = 0.0;
    // One shuffle generator seeded with the seed, drawn from epoch after epoch (as the PyTorch
    // reference does with its torch.Generator).
    Rng shuffle(m_cfg.seed);
    for (std::size_t epoch = 1; epoch <= m_cfg.epochs; ++epoch) {
        const std::vector<std::size_t> perm = seededPermutation(N, shuffle);
        m_strategy->beginEpoch(epoch);
        const auto te = Clock::now();
        const double pausedBefore = m_pausedSeconds;
        const auto epochSeconds = [&] { return secondsSince(te) - (m_pausedSeconds - pausedBefore); };
        double lossSum = 0.0;
        std::size_t correct = 0, seen = 0;
        bool stopped = false;
        for (std::size_t s = 0; s < steps; ++s) {
            if (!waitWhilePaused()) {
                stopped = true;
                break;
            }
            const std::size_t b = s * B, e = std::min(N, b + B);
            m_data.makeBatch(train, std::span<const std::size_t>(perm.data() + b, e - b), x, y);
            RunContext ctx;
            ctx.training = true;
            ctx.rngKey = streamKey(m_cfg.seed, epoch, s + 1, 0xD0);
            m_strategy->beforeStep(epoch, s + 1, ctx.rngKey);
            LayerHooks* hooks = m_strategy->hooks();
            const Tensor& out = m_model->forward(x, ctx, hooks);
            // NLL on log-probabilities, cross-entropy on logits (a model imported from PyTorch) or
            // on a Softmax head's input
            const ModelLoss ml = modelClassificationLoss(*m_model, out, y, grad);
            const float loss = ml.loss;
            if (!std::isfinite(loss))
                throw NumericError("training diverged: the loss became " + std::string(std::isnan(loss) ? "NaN" : loss > 0 ? "inf" : "-inf") +
                                   " at epoch " +
                                   std::to_string(epoch) + ", step " + std::to_string(s + 1) +
                                   " (try a smaller learning rate)");
            pred.resize(e - b);
            argmaxRows(out, pred);
            std::size_t batchCorrect = 0;
            for (std::size_t i = 0; i < pred.size(); ++i) batchCorrect += pred[i] == y[i];
            if (const float ls = m_strategy->lossScale(); ls != 1.0f)
                for (float& g : grad.values()) g *= ls;
            m_model->backward(grad, hooks, ml.beforeHead);
            const bool stepped = m_strategy->afterBackward();
            // The schedule counts batches, skipped steps included (as PyTorch's scheduler.step()
            // after every batch does).
            if (schedule != LrSchedule::Constant)
                m_opt->setLearningRate(scheduledLearningRate(schedule, m_cfg.lr, globalStep, totalSteps));
            if (stepped) m_opt->step(params);
            m_strategy->afterStep(stepped, ctx.rngKey);
            skippedInARow = stepped ? 0 : skippedInARow + 1;
            if (m_cfg.maxSkippedSteps && skippedInARow >= m_cfg.maxSkippedSteps) {
                char scale[32];
                std::snprintf(scale, sizeof scale, "%g", m_strategy->reportedLossScale());
                throw NumericError("training diverged: non-finite gradients for " + std::to_string(skippedInARow) +
                                   " steps (all skipped, the last at epoch " + std::to_string(epoch) + ", step " +
                                   std::to_string(s + 1) + "; loss scale " + scale +
                                   "; try a smaller learning rate or a wider format such as bf16)");
            }
            ++globalStep;
            lossSum += static_cast<double>(loss) * static_cast<double>(e - b);
            correct += batchCorrect;
            seen += e - b;
            if (m_observer) {
                BatchEvent be;
                be.epoch = epoch;
                be.step = s + 1;
                be.stepsPerEpoch = steps;
                be.globalStep = globalStep;
                be.loss = loss;
                be.accuracy = static_cast<double>(batchCorrect) / static_cast<double>(e - b);
                be.imagesPerSecond = static_cast<double>(seen) / std::max(1e-9, epochSeconds());
                be.elapsedSeconds = secondsSince(t0) - m_pausedSeconds;
                be.lossScale = m_strategy->reportedLossScale();
                be.skipped = !stepped;
                m_observer->onBatch(be);
                if ((s + 1) % reportEvery == 0 || s + 1 == steps) {
                    StepSizeEvent sz{epoch, globalStep, m_strategy->learnedSteps()};
                    if (!sz.steps.empty()) m_observer->onStepSizes(sz);
                }
            }
        }
        const double trainSeconds = epochSeconds();
        if (stopped) {
            fin.stopped = true;
            break;
        }
        EpochEvent ee;
        ee.epoch = epoch;
        ee.trainLoss = lossSum / static_cast<double>(seen);
        ee.trainAccuracy = static_cast<double>(correct) / static_cast<double>(seen);
        ee.seconds = trainSeconds;
        ee.imagesPerSecond = static_cast<double>(seen) / std::max(1e-9, trainSeconds);
        ee.lr = m_opt->learningRate();
        ipsSum += ee.imagesPerSecond;
        endOfEpoch(ee, fin);
        if (m_stop && m_stop->stopRequested()) { // during the evaluation (PTQ's AdaRound stops early): a stopped run
            fin.stopped = true;
            break;
        }
    }
    if (m_cfg.epochs == 0) { // a loaded model, evaluated (and for PTQ calibrated) as it is
        EpochEvent ee;
        ee.trainLoss = ee.trainAccuracy = kNoValue;
        endOfEpoch(ee, fin);
        // A stop during calibration or AdaRound left a half-refined model: no export (the CLI
        // exits 130), as a stop during training.
        if (m_stop && m_stop->stopRequested()) fin.stopped = true;
    }
    fin.seconds = secondsSince(t0) - m_pausedSeconds;
    fin.skippedSteps = m_strategy->skippedSteps();
    fin.finalLossScale = m_strategy->reportedLossScale();
    fin.imagesPerSecond = fin.epochsDone ? ipsSum / static_cast<double>(fin.epochsDone) : 0.0;
    fin.peakRssMb = peakResidentMegabytes();
    if (m_observer) m_observer->onFinish(fin);
    return fin;
}

} // namespace quantscope
