// LSQ QAT (issue 11, part 1): learning on a small model (the loss falls, the steps move, the
// exported model runs on the integer engine like the fake-quant), BatchNorm-folded steps learned
// in the conv's weight units, and a collapsed step lifted to its floor. The step-size math is in
// tst_lsq_steps.cpp.
#include "analysis/model_export.h"
#include "data/dataset.h"
#include "io/qsm.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "quant/lsq.h"
#include "quant/quantize.h"
#include "train/loss.h"
#include "train/quant_sim.h"
#include "train/trainer.h"

#include "onnx/export_fixtures.h"

#include "lsq_fixtures.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

using namespace quantscope;
using fixtures::engineAgreement;
using fixtures::kMinArgmaxAgreement;
using fixtures::qatConfig;
using fixtures::StepRecorder;

namespace {

double meanOf(const std::vector<double>& v, std::size_t b, std::size_t e)
{
    double s = 0.0;
    for (std::size_t i = b; i < e; ++i) s += v[i];
    return s / static_cast<double>(e - b);
}

} // namespace

class TestLsqTraining : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void lsqQatLearnsAndExports();
    void foldedStepsAreInWeightUnits_data();
    void foldedStepsAreInWeightUnits();
    void collapsedStepIsLiftedToTheFloor_data();
    void collapsedStepIsLiftedToTheFloor();
    void activationStepBelowLearningRateSurvives();
    void groupWiseLsqPlusTrains();

private:
    Dataset m_data;
};

void TestLsqTraining::initTestCase() { m_data = fixtures::syntheticDataset(640, 200); }

void TestLsqTraining::lsqQatLearnsAndExports()
{
    TrainConfig cfg = qatConfig("int4", "lsq", 2);
    cfg.precision.lsqPlus = true;
    StepRecorder rec;
    Trainer t(cfg, m_data, &rec);
    const std::size_t learned = t.strategy().learnedParams().size();
    QVERIFY(learned > 0);
    t.run();
    // The loss falls.
    const std::size_t n = rec.losses.size();
    QVERIFY(n >= 40);
    QVERIFY2(meanOf(rec.losses, n - 10, n) < 0.7 * meanOf(rec.losses, 0, 10),
             qPrintable(QString("first %1, last %2").arg(meanOf(rec.losses, 0, 10)).arg(meanOf(rec.losses, n - 10, n))));
    // Step sizes were reported for every conv/linear weight and activation point, and moved. A
    // per-channel track moved when its mean, smallest or largest step did: the channels of a
    // layer move both ways (fc2's 10 steps from 0.0105..0.0128 to 0.0032..0.0166 over the run),
    // so their mean alone can stay within 1e-3 of itself (fc2 in the -O1 baseline build: 3e-4).
    QVERIFY(rec.steps.size() >= 2);
    const auto& first = rec.steps.front().steps;
    const auto& last = rec.steps.back().steps;
    QCOMPARE(first.size(), last.size());
    std::set<std::string> tensors;
    std::size_t moved = 0;
    for (std::size_t i = 0; i < first.size(); ++i) {
        tensors.insert(first[i].tensor);
        QCOMPARE(first[i].layer, last[i].layer);
        QVERIFY(last[i].step > 0.0);
        const auto movedBy = [](double a, double b) { return std::abs(b - a) > 1e-3 * a; };
        if (movedBy(first[i].step, last[i].step) || movedBy(first[i].stepMin, last[i].stepMin) ||
            movedBy(first[i].stepMax, last[i].stepMax))
            ++moved;
    }
    QVERIFY(tensors.count("weight") && tensors.count("activation"));
    QVERIFY2(moved == first.size(), qPrintable(QString("%1 of %2 steps moved").arg(moved).arg(first.size())));
    // The quantized model learned the task (10 classes: chance is 0.1).
    QVERIFY(rec.epochs.back().quantTestAccuracy > 0.5);

    // Exported: the learned steps are the stored scales, and the integer engine agrees.
    const ExportedModel em = exportedModelOf(t);
    QuantSim& sim = *t.strategy().quantSim();
    std::size_t target = 0;
    for (const StoredLayer& l : em.layers) {
        if (l.tensors.empty() || l.tensors[0].encoding != TensorEncoding::Int) continue;
        const auto steps = t.strategy().learnedParams().at(target)->value.values();
        QCOMPARE(l.tensors[0].scales, std::vector<float>(steps.begin(), steps.end()));
        QCOMPARE(l.tensors[0].scales, sim.weightParams(target).scale);
        ++target;
    }
    QVERIFY(target >= 2);
    // And the activation points' scales are the learned steps as the last optimizer step left them
    // (as reported), not those of the forward before it (tester 10): one more update (every
    // learned step 10 % up, then the strategy's after-step clamp), exported with no forward between.
    for (Param* p : t.strategy().learnedParams())
        for (float& v : p->value.values()) v *= 1.1f;
    sim.clampLearnedSteps();
    const ExportedModel updated = exportedModelOf(t);
    std::size_t points = 0;
    for (const StepSizeTrack& k : sim.learnedSteps()) {
        if (k.tensor != "activation") continue;
        const auto l = std::find_if(updated.layers.begin(), updated.layers.end(), [&](const StoredLayer& s) { return s.name == k.layer; });
        QVERIFY2(l != updated.layers.end() && l->outputQuant, k.layer.c_str());
        QCOMPARE(static_cast<double>(l->outputQuant->scale), k.step);
        ++points;
    }
    QVERIFY(points >= 2);
    double engineAcc = 0;
    const double agree = engineAgreement(t.model(), sim, updated, m_data, &engineAcc);
    qInfo("LSQ+ int4 QAT: quantized %.3f, engine %.3f, argmax agreement %.3f", rec.epochs.back().quantTestAccuracy, engineAcc, agree);
    QVERIFY(agree >= kMinArgmaxAgreement);
    // .qsm keeps them.
    const ExportedModel back = decodeQsm(encodeQsm(em), "lsq.qsm");
    QCOMPARE(back.layers.size(), em.layers.size());
    for (std::size_t i = 0; i < em.layers.size(); ++i)
        if (!em.layers[i].tensors.empty()) QCOMPARE(back.layers[i].tensors[0].scales, em.layers[i].tensors[0].scales);
}

// A BatchNorm-folded conv learns its step in the conv's own weight units (u = s / |f|, f = gamma /
// sqrt(running_var + eps)): the grid of the conv's weights is fq(w; u) whatever the BatchNorm
// statistics are, the reported and exported step is the folded one, s = |f| u, and the gradient
// reaching u is |f| dL/ds. Before, the step was learned in folded units, so the grid in weight
// units moved whenever the running variance did, and Adam moved resnet8's folded steps of a few
// 1e-3 by its lr (1e-3) a step.
void TestLsqTraining::foldedStepsAreInWeightUnits_data()
{
    QTest::addColumn<QString>("granularity");
    QTest::newRow("channel") << "channel";
    QTest::newRow("group:8") << "group:8";
}

void TestLsqTraining::foldedStepsAreInWeightUnits()
{
    QFETCH(QString, granularity);
    auto model = makeModel("seed-cnn-bn");
    PrecisionConfig pc;
    pc.strategy = Strategy::Qat;
    pc.format = "int4";
    pc.activationFormat = "uint4";
    pc.granularity = granularity.toStdString();
    pc.quantizer = "lsq";
    QuantSim sim(*model, pc, findFormat("int4"));
    auto* conv = dynamic_cast<Conv2d*>(&model->layer(0));
    auto* bn = dynamic_cast<BatchNorm2d*>(&model->layer(1));
    QVERIFY(conv && bn && sim.foldsBatchNorm());
    // Non-trivial statistics, one factor per channel.
    const std::size_t C = conv->outChannels();
    for (std::size_t c = 0; c < C; ++c) {
        bn->runningVar()[c] = 0.2f + 0.1f * static_cast<float>(c);
        bn->gamma().value[c] = 1.5f - 0.04f * static_cast<float>(c);
    }
    sim.quantizeWeights(Rounding::Nearest, 0); // initialises the steps (MSE grid of w f)
    const Tensor before = conv->weight().override;
    const std::vector<float> sBefore = sim.weightParams(0).scale;
    const std::vector<float> u(sim.learnedParams().at(0)->value.values().begin(),
                               sim.learnedParams().at(0)->value.values().end());
    QCOMPARE(sBefore.size(), u.size());
    // The BatchNorm statistics move (as they do every training step): f shrinks 4x.
    for (std::size_t c = 0; c < C; ++c) {
        bn->runningVar()[c] = 4.0f * bn->runningVar()[c] + 3.0f * bn->eps();
        bn->gamma().value[c] *= 0.5f;
    }
    sim.quantizeWeights(Rounding::Nearest, 0);
    const Tensor& after = conv->weight().override;
    // The conv's quantized weights stay where they were (float rounding may flip a tie).
    std::size_t moved = 0;
    for (std::size_t i = 0; i < after.numel(); ++i) moved += std::abs(after[i] - before[i]) > 1e-5f * (1.0f + std::abs(before[i]));
    QVERIFY2(moved <= after.numel() / 200, qPrintable(QString("%1 of %2 weights moved").arg(moved).arg(after.numel())));
    // The folded step (exported, reported) followed f: s = |f| u.
    const std::vector<float>& sAfter = sim.weightParams(0).scale;
    for (std::size_t k = 0; k < u.size(); ++k)
        QVERIFY2(std::abs(sAfter[k] - 0.25f * sBefore[k]) <= 1e-5f * sBefore[k],
                 qPrintable(QString("slot %1: %2 -> %3").arg(k).arg(sBefore[k]).arg(sAfter[k])));
    const StepSizeTrack conv1 = sim.learnedSteps().front();
    QCOMPARE(QString::fromStdString(conv1.layer), QString("conv1"));
    QVERIFY(std::abs(conv1.stepMin - *std::min_element(sAfter.begin(), sAfter.end())) <= 1e-6 * conv1.stepMin);

    // The gradient reaching u is |f| dL/ds: one training step on a batch.
    const Dataset data = fixtures::syntheticDataset(32, 1);
    Tensor x, grad;
    std::vector<std::int32_t> y;
    data.makeBatch(data.train, 0, 32, x, y);
    RunContext ctx;
    ctx.training = true;
    sim.zeroLearnedGradients();
    sim.quantizeWeights(Rounding::Nearest, 0);
    std::vector<float> f(C); // the folding factors of this step (the training forward moves the running statistics)
    for (std::size_t c = 0; c < C; ++c) f[c] = bn->gamma().value[c] / std::sqrt(bn->runningVar()[c] + bn->eps());
    const Tensor& out = model->forward(x, ctx, &sim);
    nllLoss(out, y, grad);
    model->backward(grad, &sim);
    // dL/ds the folded way: w f against the upstream gradient dL/dw_hat / f.
    const QuantParams p = sim.weightParams(0);
    const std::size_t row = conv->weight().value.numel() / C, per = p.numSlots() / C;
    std::vector<float> wf(C * row), up(C * row), ds(p.numSlots());
    for (std::size_t c = 0; c < C; ++c) {
        for (std::size_t j = 0; j < row; ++j) {
            wf[c * row + j] = conv->weight().value[c * row + j] * f[c];
            up[c * row + j] = conv->weight().grad[c * row + j] / f[c];
        }
    }
    lsqStepGradient(wf, up, p, ds);
    sim.maskWeightGradients(); // computes the learned steps' gradients
    const float* gu = sim.learnedParams().at(0)->grad.data();
    std::size_t nonzero = 0;
    for (std::size_t k = 0; k < p.numSlots(); ++k) {
        const float expect = std::abs(f[k / per]) * ds[k];
        nonzero += expect != 0.0f;
        QVERIFY2(std::abs(gu[k] - expect) <= 1e-4f * std::abs(expect) + 1e-9f,
                 qPrintable(QString("slot %1: dL/du %2, |f| dL/ds %3").arg(k).arg(gu[k]).arg(expect)));
    }
    QVERIFY(nonzero > 0);
}

// A learned weight step never falls below lsqStepFloor (a quarter of a slot's weights inside). Behind a BatchNorm
// in training mode a fully clipped channel has no step gradient (the loss does not see the scale
// of its quantized weights) and no weight gradient (the straight-through mask is 0 everywhere), so
// a step that Adam pushed that low stayed there: resnet8's layer1-3 conv1 ended with channels at
// the 1.2e-7 step floor, binary for good. Here channel 0's step is put where those ended; the
// clamp after the optimizer step lifts it, and the channel's weights and step learn again.
void TestLsqTraining::collapsedStepIsLiftedToTheFloor_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("int2") << "int2";
    QTest::newRow("int4") << "int4";
    QTest::newRow("binary") << "binary";
}

void TestLsqTraining::collapsedStepIsLiftedToTheFloor()
{
    QFETCH(QString, format);
    auto model = makeModel("seed-cnn-bn");
    PrecisionConfig pc;
    pc.strategy = Strategy::Qat;
    pc.format = format.toStdString();
    pc.activationFormat = "uint4";
    pc.granularity = "channel";
    pc.quantizer = "lsq";
    QuantSim sim(*model, pc, findFormat(pc.format));
    auto* conv = dynamic_cast<Conv2d*>(&model->layer(0));
    auto* bn = dynamic_cast<BatchNorm2d*>(&model->layer(1));
    QVERIFY(conv && bn && sim.foldsBatchNorm());
    const std::size_t C = conv->outChannels(), row = conv->weight().value.numel() / C;
    for (std::size_t c = 0; c < C; ++c) bn->runningVar()[c] = 0.3f + 0.2f * static_cast<float>(c); // |f| != 1
    sim.quantizeWeights(Rounding::Nearest, 0); // initialises the steps
    Param& u = *sim.learnedParams().at(0);
    const std::vector<float> u0(u.value.values().begin(), u.value.values().end());
    const QuantParams& p = sim.weightParams(0);
    // The floor in the conv's own units: the least step with 3 of the channel's 9 weights inside
    // [qmin s, qmax s] (binary: |w| <= s).
    QCOMPARE(row, std::size_t(9));
    const float qmax = p.signOnly ? 1.0f : static_cast<float>(p.qmax), qmin = p.signOnly ? -1.0f : static_cast<float>(p.qmin);
    std::vector<float> floor(C), f(C), wf(C * row);
    for (std::size_t c = 0; c < C; ++c) {
        f[c] = bn->gamma().value[c] / std::sqrt(bn->runningVar()[c] + bn->eps());
        std::vector<float> mag(row);
        for (std::size_t j = 0; j < row; ++j) {
            const float w = conv->weight().value[c * row + j];
            mag[j] = w >= 0.0f ? w / qmax : w / qmin;
            wf[c * row + j] = conv->weight().value[c * row + j] * f[c];
        }
        std::sort(mag.begin(), mag.end());
        floor[c] = mag[2];
    }
    // The floor does not bind at the start: every channel starts on its MSE grid (binary: <|w|>).
    const std::vector<float> mse = lsqMseSteps(wf, p, findFormat(pc.format));
    for (std::size_t c = 0; c < C; ++c) {
        QVERIFY2(std::abs(u0[c] - mse[c] / std::abs(f[c])) <= 1e-5f * u0[c],
                 qPrintable(QString("channel %1: start %2, MSE grid %3").arg(c).arg(u0[c]).arg(mse[c] / std::abs(f[c]))));
        QVERIFY(u0[c] > floor[c]);
    }

    u.value[0] = kScaleEps; // the collapse
    sim.clampLearnedSteps(); // what runs after every optimizer step
    QVERIFY2(std::abs(u.value[0] - floor[0]) <= 1e-5f * floor[0],
             qPrintable(QString("channel 0: step %1, floor %2").arg(u.value[0]).arg(floor[0])));
    for (std::size_t c = 1; c < C; ++c) QCOMPARE(u.value[c], u0[c]); // the others keep theirs

    // One training step: 3 of channel 0's 9 weights are inside its clip range, so they get
    // gradients, and its step gets one too.
    const Dataset data = fixtures::syntheticDataset(32, 1);
    Tensor x, grad;
    std::vector<std::int32_t> y;
    data.makeBatch(data.train, 0, 32, x, y);
    RunContext ctx;
    ctx.training = true;
    sim.zeroLearnedGradients();
    sim.quantizeWeights(Rounding::Nearest, 0);
    const Tensor& out = model->forward(x, ctx, &sim);
    nllLoss(out, y, grad);
    model->backward(grad, &sim);
    sim.maskWeightGradients();
    std::size_t learning = 0;
    for (std::size_t j = 0; j < row; ++j) learning += conv->weight().grad[j] != 0.0f;
    QVERIFY2(learning >= 3, qPrintable(QString("%1 of channel 0's %2 weights have a gradient").arg(learning).arg(row)));
    QVERIFY(u.grad[0] != 0.0f);
}

// An activation step below Adam's learning rate: Adam's first update moves a parameter by lr
// whatever its size, which took it below zero, and clampStep put it at kScaleEps (every value
// clipped, no gradient through the point). The next training forward lifts it to its batch's
// floor: a quarter of the nonzero values inside the clip range.
void TestLsqTraining::activationStepBelowLearningRateSurvives()
{
    const float lr = 1e-3f;
    for (const bool plus : {false, true}) {
        // relu3-like: 93 % zeros, the rest in [0, 0.17) (seed-cnn behind group-wise int3 weights).
        std::vector<float> x = fixtures::randomVector(8192, 0.17f, 7);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 14 == 0 ? std::fabs(x[i]) : 0.0f;
        LsqActivationQuantizer q(findFormat("uint8"), plus, "relu3");
        q.initialise(x);
        const float s0 = q.step().value[0];
        QVERIFY2(s0 < lr, qPrintable(QString("initial step %1").arg(s0)));
        q.step().value[0] = s0 - lr; // Adam's first step with a positive gradient
        q.clampStep();
        std::vector<float> y = x;
        q.forward(y, true, 32);
        const float s = q.step().value[0];
        const float floor = lsqActivationStepFloor(x, q.params());
        QVERIFY2(s >= floor && s > 100.0f * kScaleEps, qPrintable(QString("step %1, floor %2").arg(s).arg(floor)));
        std::size_t nonzero = 0, inside = 0;
        for (float v : x)
            if (v != 0.0f) {
                ++nonzero;
                inside += v <= 255.0f * s;
            }
        QVERIFY2(4 * inside >= nonzero, qPrintable(QString("%1 of %2 inside").arg(inside).arg(nonzero)));
    }
}

// The user's report: LSQ+ with int3 group-wise weights on Fashion-MNIST. relu3's and the logits'
// steps started below Adam's lr, sat at kScaleEps from the first step on and the loss stayed at
// ln 10 (10.5 % quantized accuracy).
void TestLsqTraining::groupWiseLsqPlusTrains()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    DatasetOptions dopt;
    dopt.trainLimit = 1000;
    dopt.testLimit = 200;
    const Dataset data = Dataset::load(dopt);
    TrainConfig cfg = qatConfig("int3", "lsq", 1);
    cfg.batchSize = 64;
    cfg.precision.granularity = "group:5";
    cfg.precision.lsqPlus = true;
    StepRecorder rec;
    Trainer t(cfg, data, &rec);
    t.run();
    QVERIFY(!rec.steps.empty());
    for (const StepSizeTrack& k : rec.steps.back().steps)
        if (k.tensor == "activation")
            QVERIFY2(k.step > 1e-5, qPrintable(QString("%1 ends at step %2").arg(k.layer.c_str()).arg(k.step)));
    const std::size_t n = rec.losses.size();
    QVERIFY(n >= 8);
    const double chance = std::log(10.0), last = meanOf(rec.losses, n - n / 4, n);
    qInfo("group:5 LSQ+ int3: last quarter's loss %.3f", last);
    QVERIFY2(last < chance - 0.2, qPrintable(QString("last quarter's loss %1, ln 10 = %2").arg(last).arg(chance)));
}

QTEST_GUILESS_MAIN(TestLsqTraining)
#include "tst_lsq_training.moc"
