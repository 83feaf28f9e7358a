// Precision strategies end to end on small Fashion-MNIST subsets: each strategy trains, reports a
// quantized accuracy close to FP32, publishes layer statistics with the granularity's number of
// scales; QAT's straight-through estimator, BN folding, mixed precision's loss scaling, pure low
// precision's nearest-vs-stochastic effect and progressive phases behave as a user expects.
#include "data/dataset.h"
#include "analysis/model_export.h"
#include "io/model_source.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/model_zoo.h"
#include "quant/quantize.h"
#include "tensor/gemm_bf16.h"
#include "train/float_sim.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"
#include "slow_tests.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>

using namespace quantscope;

namespace {

struct Recorder : TrainObserver {
    std::vector<EpochEvent> epochs;
    std::vector<BatchEvent> batches;
    std::vector<std::vector<LayerStats>> stats;
    FinishEvent finish;
    void onBatch(const BatchEvent& e) override { batches.push_back(e); }
    void onEpoch(const EpochEvent& e) override { epochs.push_back(e); }
    void onLayerStats(const std::vector<LayerStats>& s) override { stats.push_back(s); }
    void onFinish(const FinishEvent& e) override { finish = e; }
};

// Accuracy a quantized model may lose against FP32 on these small subsets.
constexpr double kInt8Gap = 0.03;
constexpr double kMinAccuracy = 0.60; // 1 epoch of 3000 images reaches ~0.70-0.75 in FP32
// mobilenet-tiny learns slower: 1 epoch of 3000 images gave 50.5 % here and 55.5 % in the
// PyTorch reference (pytorch_ref.py --model mobilenet-tiny --train-limit 3000 --test-limit 1000).
constexpr double kMinMobileNetAccuracy = 0.40;

// Under the sanitizer presets (QS_SANITIZER_RUN) every training here runs on a fifth of the
// images (sanitizerSlowdown()) in batches of 64 / 4 = 16: about as many steps as the release
// suite's 3000 images in batches of 64, with a fifth of the arithmetic (under ASan a row took 4-6
// minutes at full size, the whole unit over an hour). Every check runs; the FP32 accuracy bar is
// lower there (kMinScaledAccuracy: 600 images gave resnet8 47-56 % in the release build, seed-cnn
// and mlp above 60 %), the quantized-vs-FP32 gaps are the same (one row trains longer there to meet
// them, kScaledQatInt4Epochs). The one purely statistical check,
// nearest vs stochastic rounding, needs the full data and skips under sanitizers, saying so.
double slowdown() { return quantscope::testing::sanitizerSlowdown(); }
std::size_t scaled(std::size_t n) { return static_cast<std::size_t>(double(n) / slowdown()); }
constexpr double kMinScaledAccuracy = 0.40; // 4x chance
// mobilenet-tiny's QAT int4 group:8 row trains 3 epochs on the scaled data instead of 1: one epoch
// there is 600 / 16 = 38 steps (release: 3000 / 64 = 47), too few for QAT's activation ranges to settle,
// and its gap spread over seeds 1-20 (quantscope-cli train --model mobilenet-tiny --strategy qat
// --format int4 --granularity group:8 --train-limit 600 --test-limit 200 --batch-size 16, release
// build) was -0.085 .. +0.125 (2 of 20 above the 0.10 bar; the ASan build's numerics gave 0.105),
// with FP32 at 35-49.5 % against the 0.40 bar. With 3 epochs (113 steps): gaps -0.19 .. +0.03,
// FP32 44-68.5 %, like the full data in 1 epoch (seeds 1-10: gaps -0.13 .. -0.03). Same bars.
constexpr int kScaledQatInt4Epochs = 3;
// seed-cnn-bn's QAT int8 row takes Adam's rate scaled with the batch on the scaled data (64 -> 16:
// 1e-3 -> 2.5e-4, the linear scaling rule, Goyal et al. 2017). At 1e-3 in batches of 16 that row
// was a coin toss: quantscope-cli train --model seed-cnn-bn --strategy qat --format int8
// --granularity channel --train-limit 600 --test-limit 200 --batch-size 16 --epochs 2, release
// build, seeds 1-20: FP32 26-68.5 %, quantized-vs-FP32 gap -6 .. +32.5 points (9 of 20 above the
// 0.10 bar; the ASan build's numerics gave 0.745 vs 0.645 with the test's seed). At 2.5e-4: FP32
// 66-79 %, gaps -5.5 .. +5.5 (seeds 1-20); the full data in batches of 64 (the release suite's
// row) gave gaps -1.9 .. +6.6 (seeds 1-10). Same bars.
constexpr double kScaledBnQatLr = 2.5e-4;
double accuracyBar(double fullDataBar) { return slowdown() > 1.0 ? std::min(fullDataBar, kMinScaledAccuracy) : fullDataBar; }
TrainConfig baseConfig()
{
    TrainConfig cfg;
    if (slowdown() > 1.0) cfg.batchSize = 16;
    return cfg;
}

} // namespace


class TestStrategies : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void activationPointsOfSeedCnn();
    void activationPointsOfGraphs();
    void everyConvBnPairIsFolded_data();
    void everyConvBnPairIsFolded();
    void strategiesTrainAndReport_data();
    void strategiesTrainAndReport();
    void granularityScaleCounts_data();
    void granularityScaleCounts();
    void qatStraightThroughZeroesClippedGradients();
    void bnFoldedWeightsLieOnTheIntGrid();
    void lossScalerHalvesOnOverflowAndGrows();
    void mixedFp16ReportsLossScale();
    void lowpNearestStallsWhereStochasticLearns();
    void progressiveFollowsTheSchedule();
    void qatIsDeterministic();
    void qatBnReestimation();
    void ptqOfALoadedFp32Model();
    void badCombinationsAreConfigErrors_data();
    void badCombinationsAreConfigErrors();

private:
    // bf16Left: how many conv/fc layers still run bf16 products after the run (must be none).
    FinishEvent run(TrainConfig cfg, Recorder& rec, const Dataset& data, std::size_t* bf16Left = nullptr);
    std::optional<Dataset> m_data;
};

void TestStrategies::initTestCase()
{
    if (!std::filesystem::exists(kDefaultDataDir))
        QSKIP("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
    DatasetOptions o;
    o.trainLimit = scaled(3000);
    o.testLimit = scaled(1000);
    m_data = Dataset::load(o);
}

FinishEvent TestStrategies::run(TrainConfig cfg, Recorder& rec, const Dataset& data, std::size_t* bf16Left)
{
    Trainer t(cfg, data, &rec);
    const FinishEvent fin = t.run();
    if (bf16Left) {
        *bf16Left = 0;
        for (std::size_t i = 0; i < t.model().size(); ++i) {
            if (auto* c = dynamic_cast<Conv2d*>(&t.model().layer(i)); c && c->bf16Products() != Bf16Path::Emulated) ++*bf16Left;
            if (auto* l = dynamic_cast<Linear*>(&t.model().layer(i)); l && l->bf16Products() != Bf16Path::Emulated) ++*bf16Left;
        }
    }
    return fin;
}

void TestStrategies::activationPointsOfSeedCnn()
{
    auto m = makeModel("seed-cnn");
    const std::vector<bool> p = activationQuantPoints(*m);
    QStringList names;
    for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i]) names << QString::fromStdString(m->layer(i).name());
    // ReLU outputs and the logits; never between a conv and its ReLU.
    QCOMPARE(names, QStringList({"relu1", "relu2", "relu3", "fc2"}));

    auto bn = makeModel("seed-cnn-bn");
    const std::vector<bool> q = activationQuantPoints(*bn);
    for (std::size_t i = 0; i < q.size(); ++i)
        if (bn->layer(i).kind() == LayerKind::Conv2d || bn->layer(i).kind() == LayerKind::BatchNorm2d)
            QVERIFY2(!q[i], "conv/bn outputs feed the next op directly (folded)");
}

void TestStrategies::activationPointsOfGraphs()
{
    auto names = [](Model& m) {
        QStringList out;
        const std::vector<bool> p = activationQuantPoints(m);
        for (std::size_t i = 0; i < p.size(); ++i)
            if (p[i]) out << QString::fromStdString(m.layer(i).name());
        return out;
    };
    auto r = makeModel("resnet8");
    const QStringList rp = names(*r);
    // Both inputs of every residual Add are quantized (bn2 and the shortcut's BN or the previous
    // block's ReLU), the Add is fused with its ReLU, the pooled features and the logits are quantized.
    for (const char* n : {"relu", "layer1.relu1", "layer1.bn2", "layer1.relu2", "layer2.bn2", "layer2.shortcut_bn",
                          "layer2.relu2", "layer3.shortcut_bn", "layer3.relu2", "pool", "fc"})
        QVERIFY2(rp.contains(n), n);
    for (const char* n : {"conv1", "bn1", "layer1.add", "layer2.add", "layer2.shortcut", "layer1.conv1"})
        QVERIFY2(!rp.contains(n), n);

    auto mb = makeModel("mobilenet-tiny");
    const QStringList mp = names(*mb);
    QCOMPARE(mp, QStringList({"relu1", "blocks.0.relu1", "blocks.0.relu2", "blocks.1.relu1", "blocks.1.relu2",
                              "blocks.2.relu1", "blocks.2.relu2", "blocks.3.relu1", "blocks.3.relu2", "pool", "fc"}));
}

void TestStrategies::everyConvBnPairIsFolded_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<int>("folds");
    QTest::newRow("resnet8") << "resnet8" << 9;             // stem, 6 block convs, 2 shortcuts
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny" << 9; // stem, 4 depthwise, 4 pointwise
}

void TestStrategies::everyConvBnPairIsFolded()
{
    QFETCH(QString, model);
    QFETCH(int, folds);
    auto m = makeModel(model.toStdString());
    // Non-trivial BN statistics, so folding changes the weights.
    int pairs = 0;
    for (std::size_t i = 0; i < m->size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&m->layer(i))) {
            for (std::size_t c = 0; c < bn->channels(); ++c) {
                bn->gamma().value[c] = 0.5f + 0.01f * float(c);
                bn->runningVar()[c] = 0.3f + 0.02f * float(c);
            }
            QVERIFY2(foldableConv(*m, i) != nullptr, bn->name().c_str());
            ++pairs;
        }
    QCOMPARE(pairs, folds);
    PrecisionConfig pc;
    QuantSim sim(*m, pc, findFormat("int8"));
    QVERIFY(sim.foldsBatchNorm());
    sim.quantizeWeights(Rounding::Nearest, 0);
    std::size_t target = 0;
    for (std::size_t i = 0; i < m->size(); ++i) {
        auto* conv = dynamic_cast<Conv2d*>(&m->layer(i));
        if (!conv) continue;
        BatchNorm2d* bn = foldedBatchNorm(*m, i);
        QVERIFY2(bn, conv->name().c_str());
        QVERIFY(conv->weight().hasOverride);
        const QuantParams& qp = sim.weightParams(target++);
        const std::size_t row = conv->weight().value.numel() / conv->outChannels();
        for (std::size_t c = 0; c < conv->outChannels(); ++c) {
            const float s = bn->gamma().value[c] / std::sqrt(bn->runningVar()[c] + bn->eps());
            for (std::size_t j = 0; j < row; ++j) {
                const float q = conv->weight().override[c * row + j] * s / qp.scale[c];
                QVERIFY2(std::fabs(q - std::nearbyint(q)) < 1e-3f,
                         qPrintable(QString("%1 channel %2: %3").arg(conv->name().c_str()).arg(c).arg(q)));
            }
        }
    }
    sim.clearWeights();
}

void TestStrategies::strategiesTrainAndReport_data()
{
    QTest::addColumn<QString>("strategy");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("model");
    QTest::addColumn<double>("maxGap");
    QTest::addColumn<int>("epochs"); // QAT's activation ranges need ~100 steps to settle
    QTest::addColumn<double>("minAccuracy");
    // Epochs on the scaled data under the sanitizer presets (0: the same as `epochs`); see kScaledQatInt4Epochs.
    QTest::addColumn<int>("scaledEpochs");
    // Adam's learning rate on the scaled data (0: TrainConfig's); see kScaledBnQatLr.
    QTest::addColumn<double>("scaledLr");
    QTest::newRow("ptq int8 channel") << "ptq" << "int8" << "channel" << "seed-cnn" << kInt8Gap << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("ptq int8 tensor") << "ptq" << "int8" << "tensor" << "seed-cnn" << kInt8Gap << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("qat int8 channel") << "qat" << "int8" << "channel" << "seed-cnn" << kInt8Gap << 2 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("qat int8 channel bn") << "qat" << "int8" << "channel" << "seed-cnn-bn" << 0.10 << 2 << kMinAccuracy << 0 << kScaledBnQatLr;
    QTest::newRow("qat fp8-e4m3") << "qat" << "fp8-e4m3" << "tensor" << "seed-cnn" << kInt8Gap << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("ptq mxfp4") << "ptq" << "mxfp4" << "tensor" << "seed-cnn" << 0.10 << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("mixed bf16") << "mixed" << "bf16" << "tensor" << "seed-cnn" << 0.02 << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("lowp bf16") << "lowp" << "bf16" << "tensor" << "mlp" << 0.02 << 1 << kMinAccuracy << 0 << 0.0;
    // Adam's moments on the fp16 grid: with eps 1e-8 this diverged at every learning rate (makeOptimizer)
    QTest::newRow("lowp fp16 adam") << "lowp" << "fp16" << "tensor" << "mlp" << 0.02 << 1 << kMinAccuracy << 0 << 0.0;
    // Graph models: residual Adds and depthwise convs through every strategy.
    QTest::newRow("resnet8 qat int8 channel") << "qat" << "int8" << "channel" << "resnet8" << kInt8Gap << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("resnet8 ptq int8 tensor") << "ptq" << "int8" << "tensor" << "resnet8" << kInt8Gap << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("resnet8 mixed bf16") << "mixed" << "bf16" << "tensor" << "resnet8" << 0.02 << 1 << kMinAccuracy << 0 << 0.0;
    QTest::newRow("mobilenet-tiny ptq int8 channel") << "ptq" << "int8" << "channel" << "mobilenet-tiny" << kInt8Gap << 1 << kMinMobileNetAccuracy << 0 << 0.0;
    QTest::newRow("mobilenet-tiny qat int4 group:8") << "qat" << "int4" << "group:8" << "mobilenet-tiny" << 0.10 << 1 << kMinMobileNetAccuracy << kScaledQatInt4Epochs << 0.0;
    QTest::newRow("mobilenet-tiny lowp bf16") << "lowp" << "bf16" << "tensor" << "mobilenet-tiny" << 0.03 << 1 << kMinMobileNetAccuracy << 0 << 0.0;
}

void TestStrategies::strategiesTrainAndReport()
{
    QFETCH(QString, strategy);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, model);
    QFETCH(double, maxGap);
    QFETCH(int, epochs);
    QFETCH(double, minAccuracy);
    QFETCH(int, scaledEpochs);
    QFETCH(double, scaledLr);
    if (slowdown() > 1.0 && scaledEpochs > 0) epochs = scaledEpochs;
    TrainConfig cfg = baseConfig();
    cfg.model = model.toStdString();
    cfg.epochs = std::size_t(epochs);
    cfg.precision.strategy = parseStrategy(strategy.toStdString());
    cfg.precision.format = format.toStdString();
    cfg.precision.granularity = granularity.toStdString();
    cfg.precision.calibImages = scaled(500);
    if (slowdown() > 1.0 && scaledLr > 0.0) cfg.lr = static_cast<float>(scaledLr);
    Recorder rec;
    std::size_t bf16Left = 0;
    const FinishEvent fin = run(cfg, rec, *m_data, &bf16Left);
    QCOMPARE(bf16Left, std::size_t{0}); // export and analysis after the run see plain FP32 layers
    QCOMPARE(rec.epochs.size(), std::size_t(epochs));
    const EpochEvent& e = rec.epochs.back();
    QVERIFY2(e.testAccuracy > accuracyBar(minAccuracy), qPrintable(QString("fp32 accuracy %1").arg(e.testAccuracy)));
    QVERIFY2(std::isfinite(e.quantTestAccuracy), "the strategy reports its quantized accuracy");
    QVERIFY2(e.quantTestAccuracy > e.testAccuracy - maxGap,
             qPrintable(QString("quantized %1 vs fp32 %2").arg(e.quantTestAccuracy).arg(e.testAccuracy)));
    QCOMPARE(fin.quantTestAccuracy, e.quantTestAccuracy);
    QCOMPARE(rec.stats.size(), std::size_t(epochs));
    QVERIFY(!rec.stats.back().empty());
    for (const LayerStats& s : rec.stats.back()) {
        QCOMPARE(s.format, format.toStdString());
        QCOMPARE(s.fp32Hist.size() + 1, s.binEdges.size());
        QCOMPARE(s.quantHist.size(), s.fp32Hist.size());
        std::uint64_t a = 0, b = 0;
        for (auto v : s.fp32Hist) a += v;
        for (auto v : s.quantHist) b += v;
        QVERIFY2(a > 0 && a == b, "both histograms count every weight");
        QVERIFY2(s.sqnrDb > 10.0, qPrintable(QString("%1: SQNR %2 dB").arg(s.layer.c_str()).arg(s.sqnrDb)));
    }
}

void TestStrategies::granularityScaleCounts_data()
{
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<int>("conv1Scales");
    QTest::addColumn<int>("conv2Scales");
    QTest::newRow("tensor") << "tensor" << 1 << 1;
    QTest::newRow("channel") << "channel" << 32 << 64;
    QTest::newRow("group:16") << "group:16" << 32 << 64 * 18; // 288 weights per conv2 channel
    QTest::newRow("group:5") << "group:5" << 64 << 64 * 58;   // 9 per conv1 channel -> 2 groups
    QTest::newRow("layer") << "layer" << 1 << 1;
    QTest::newRow("global") << "global" << 1 << 1;
}

void TestStrategies::granularityScaleCounts()
{
    QFETCH(QString, granularity);
    QFETCH(int, conv1Scales);
    QFETCH(int, conv2Scales);
    auto m = makeModel("seed-cnn");
    PrecisionConfig pc;
    pc.granularity = granularity.toStdString();
    QuantSim sim(*m, pc, findFormat("int8"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    const std::vector<LayerStats> st = sim.stats(1);
    QCOMPARE(st.size(), std::size_t{4});
    QCOMPARE(int(st[0].scales.size()), conv1Scales);
    QCOMPARE(int(st[1].scales.size()), conv2Scales);
    if (granularity == "global") {
        for (const LayerStats& s : st) QCOMPARE(s.scales[0], st[0].scales[0]);
    } else if (granularity == "layer" || granularity == "tensor") {
        QVERIFY2(st[0].scales[0] != st[1].scales[0], "each layer has its own scale");
    }
}

void TestStrategies::qatStraightThroughZeroesClippedGradients()
{
    auto m = makeModel("mlp");
    PrecisionConfig pc;
    pc.granularity = "tensor";
    pc.calibration = "percentile";
    pc.percentile = 99.0f; // clips the largest 1% of |w|
    QuantSim sim(*m, pc, findFormat("int4"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    Param& w = *sim.weightTargets()[0].weight;
    for (float& g : w.grad.values()) g = 1.0f;
    sim.maskWeightGradients();
    const QuantParams& qp = sim.weightParams(0);
    std::size_t clipped = 0;
    for (std::size_t i = 0; i < w.value.numel(); ++i) {
        // PyTorch's rule: the gradient passes where round(x / scale) lands inside [qmin, qmax].
        const float q = std::nearbyint(w.value[i] / qp.scale[0]);
        if (q < qp.qmin || q > qp.qmax) {
            ++clipped;
            QCOMPARE(w.grad[i], 0.0f);
        } else {
            QCOMPARE(w.grad[i], 1.0f);
        }
    }
    QVERIFY2(clipped > 0, "percentile 99 clips some weights");
}

void TestStrategies::bnFoldedWeightsLieOnTheIntGrid()
{
    auto m = makeModel("seed-cnn-bn");
    auto* bn = dynamic_cast<BatchNorm2d*>(m->findLayer("bn1"));
    auto* conv = dynamic_cast<Conv2d*>(m->findLayer("conv1"));
    QVERIFY(bn && conv);
    for (std::size_t c = 0; c < bn->channels(); ++c) {
        bn->gamma().value[c] = 0.5f + 0.1f * float(c);
        bn->runningVar()[c] = 0.2f + 0.05f * float(c);
    }
    PrecisionConfig pc;
    QuantSim sim(*m, pc, findFormat("int8"));
    QVERIFY(sim.foldsBatchNorm());
    sim.quantizeWeights(Rounding::Nearest, 0);
    QVERIFY(conv->weight().hasOverride);
    const QuantParams& qp = sim.weightParams(0);
    const std::size_t row = conv->weight().value.numel() / conv->outChannels();
    for (std::size_t c = 0; c < conv->outChannels(); ++c) {
        const float s = bn->gamma().value[c] / std::sqrt(bn->runningVar()[c] + bn->eps());
        for (std::size_t j = 0; j < row; ++j) {
            // w_used * s = fq(w * s): an integer number of steps of the folded scale
            const float q = conv->weight().override[c * row + j] * s / qp.scale[c];
            QVERIFY2(std::fabs(q - std::nearbyint(q)) < 1e-3f, qPrintable(QString("channel %1: %2").arg(c).arg(q)));
        }
    }
    sim.clearWeights();
    QVERIFY(!conv->weight().hasOverride);
}

void TestStrategies::lossScalerHalvesOnOverflowAndGrows()
{
    Param p;
    p.value = Tensor({4});
    p.grad = Tensor({4}, 8.0f);
    LossScaler ls(1024.0f, 3);
    QCOMPARE(ls.scale(), 1024.0f);
    p.grad[2] = std::numeric_limits<float>::infinity();
    QVERIFY(!ls.unscaleOrSkip({&p}, false)); // overflow: skip and halve
    QCOMPARE(ls.scale(), 512.0f);
    QCOMPARE(ls.skippedSteps(), std::size_t{1});
    for (int i = 0; i < 3; ++i) {
        p.grad.fill(512.0f);
        QVERIFY(ls.unscaleOrSkip({&p}, false));
        QCOMPARE(p.grad[0], 512.0f / (i < 3 ? (i == 0 ? 512.0f : 512.0f) : 1024.0f));
    }
    QCOMPARE(ls.scale(), 1024.0f); // grown after 3 clean steps
    QVERIFY(!ls.unscaleOrSkip({&p}, true)); // overflow seen in an activation gradient
    QCOMPARE(ls.scale(), 512.0f);
}

void TestStrategies::mixedFp16ReportsLossScale()
{
    TrainConfig cfg = baseConfig();
    cfg.precision.strategy = Strategy::Mixed;
    cfg.precision.format = "fp16";
    Recorder rec;
    const FinishEvent fin = run(cfg, rec, *m_data);
    QVERIFY(!rec.batches.empty());
    for (const BatchEvent& b : rec.batches) QVERIFY(std::isfinite(b.lossScale) && b.lossScale >= 1.0);
    QCOMPARE(rec.batches.front().lossScale <= 65536.0, true);
    QCOMPARE(fin.finalLossScale, rec.batches.back().lossScale);
    std::size_t skipped = 0;
    for (const BatchEvent& b : rec.batches) skipped += b.skipped;
    QCOMPARE(skipped, fin.skippedSteps);
    QVERIFY(rec.epochs.back().quantTestAccuracy > accuracyBar(kMinAccuracy));
}

void TestStrategies::lowpNearestStallsWhereStochasticLearns()
{
    // SGD steps of lr * grad ~ 1e-5 are below half a bf16 ulp of the weights (~1e-4): nearest
    // rounding throws them away, stochastic rounding keeps them in expectation.
    if (slowdown() > 1.0)
        QSKIP("a statistical effect of 2 epochs on 3000 images (600 images in batches of 16 gave nearest 48.0 %, "
              "stochastic 49.5 %); the release suite runs it. lowp bf16 training itself runs in strategiesTrainAndReport");
    double acc[3];
    const char* modes[3] = {"nearest", "stochastic", "fp32"};
    for (int i = 0; i < 3; ++i) {
        TrainConfig cfg = baseConfig();
        cfg.model = "mlp";
        cfg.optimizer = "sgd";
        cfg.lr = 0.01f;
        cfg.epochs = 2;
        if (i < 2) {
            cfg.precision.strategy = Strategy::LowPrecision;
            cfg.precision.format = "bf16";
            cfg.precision.rounding = modes[i];
        }
        Recorder rec;
        run(cfg, rec, *m_data);
        acc[i] = rec.epochs.back().testAccuracy;
    }
    qInfo("lowp bf16 SGD lr 0.01: nearest %.3f, stochastic %.3f, fp32 %.3f", acc[0], acc[1], acc[2]);
    QVERIFY2(acc[1] > acc[0] + 0.04, "stochastic rounding learns where nearest stalls");
    QVERIFY2(std::fabs(acc[1] - acc[2]) < 0.03, "stochastic rounding tracks fp32");
}

void TestStrategies::progressiveFollowsTheSchedule()
{
    TrainConfig cfg = baseConfig();
    cfg.model = "mlp";
    cfg.precision.strategy = Strategy::Progressive;
    cfg.precision.schedule = "fp32:1,bf16:1,int8:1";
    cfg.precision.blendSteps = 10;
    cfg.epochsFromSchedule();
    QCOMPARE(cfg.epochs, std::size_t{3});
    Recorder rec;
    run(cfg, rec, *m_data);
    QCOMPARE(rec.epochs.size(), std::size_t{3});
    QCOMPARE(rec.epochs[0].phase, std::string("fp32"));
    QCOMPARE(rec.epochs[1].phase, std::string("bf16"));
    QCOMPARE(rec.epochs[2].phase, std::string("int8"));
    QVERIFY(std::isnan(rec.batches.front().lossScale));
    for (const EpochEvent& e : rec.epochs) QVERIFY(e.quantTestAccuracy > accuracyBar(kMinAccuracy));
    QVERIFY(rec.epochs[2].quantTestAccuracy > rec.epochs[2].testAccuracy - kInt8Gap);
    // The hand-over is smooth: the first steps of the int8 phase lose no more than a little.
    const std::size_t steps = rec.batches.size() / 3;
    double before = 0, after = 0;
    for (std::size_t i = 0; i < 10; ++i) {
        before += rec.batches[2 * steps - 1 - i].loss / 10;
        after += rec.batches[2 * steps + i].loss / 10;
    }
    QVERIFY2(after < before + 0.3, qPrintable(QString("loss %1 -> %2 at the phase change").arg(before).arg(after)));
}

void TestStrategies::qatIsDeterministic()
{
    TrainConfig cfg = baseConfig();
    cfg.model = "mlp";
    cfg.precision.strategy = Strategy::Qat;
    cfg.precision.format = "int4";
    Recorder a, b;
    run(cfg, a, *m_data);
    cfg.threads = 1;
    run(cfg, b, *m_data);
    QCOMPARE(a.epochs.back().quantTestAccuracy, b.epochs.back().quantTestAccuracy);
    QCOMPARE(a.batches.back().loss, b.batches.back().loss);
    QCOMPARE(a.stats[0][0].scales, b.stats[0][0].scales);
}

// --bn-reestimate: before the quantized evaluation, QAT replaces every BatchNorm's running
// statistics by the average batch statistics of the quantized model on the first N training
// batches. Training itself is untouched (same FP32 evaluation, same first quantized figure, which
// the epoch reports as the figure before re-estimation); the running statistics afterwards are
// those of the quantized model, not the moving average training kept; a model without
// BatchNorm reports nothing and runs as before.
void TestStrategies::qatBnReestimation()
{
    TrainConfig cfg = baseConfig();
    cfg.model = "seed-cnn-bn";
    cfg.precision.strategy = Strategy::Qat;
    cfg.precision.format = "int2";
    cfg.precision.activationFormat = "uint2";
    cfg.precision.quantizer = "lsq";
    const auto runningStats = [](Trainer& t) {
        std::vector<float> v;
        for (std::size_t i = 0; i < t.model().size(); ++i)
            if (auto* bn = dynamic_cast<BatchNorm2d*>(&t.model().layer(i))) {
                v.insert(v.end(), bn->runningMean().values().begin(), bn->runningMean().values().end());
                v.insert(v.end(), bn->runningVar().values().begin(), bn->runningVar().values().end());
            }
        return v;
    };
    DatasetOptions o; // a fifth of the unit's subset: 4 short runs
    o.trainLimit = scaled(640);
    o.testLimit = scaled(200);
    const Dataset data = Dataset::load(o);
    Recorder off, on;
    Trainer a(cfg, data, &off);
    a.run();
    cfg.precision.bnReestimateBatches = 5;
    Trainer b(cfg, data, &on);
    b.run();
    QCOMPARE(on.epochs.size(), off.epochs.size());
    QVERIFY(std::isnan(off.epochs.back().quantTestAccuracyBeforeBnReestimation));
    QCOMPARE(on.batches.back().loss, off.batches.back().loss);
    QCOMPARE(on.epochs.back().testAccuracy, off.epochs.back().testAccuracy);
    QCOMPARE(on.epochs.back().quantTestAccuracyBeforeBnReestimation, off.epochs.back().quantTestAccuracy);
    QVERIFY(std::isfinite(on.epochs.back().quantTestAccuracy));
    QVERIFY(runningStats(a) != runningStats(b));

    // Re-estimating the re-estimated model on the same batches under the same quantized weights
    // gives the same statistics: they are the quantized model's batch statistics, whatever
    // the moving average held.
    const std::vector<float> once = runningStats(b);
    QuantSim* sim = b.strategy().quantSim();
    QVERIFY(sim);
    sim->quantizeWeights(Rounding::Nearest, 0);
    sim->setObserving(false);
    QCOMPARE(reestimateBatchNorm(b.model(), data, data.train, 5, cfg.batchSize, sim), std::size_t(2));
    const std::vector<float> twice = runningStats(b);
    QCOMPARE(twice.size(), once.size());
    for (std::size_t i = 0; i < once.size(); ++i)
        QVERIFY2(std::abs(twice[i] - once[i]) <= 1e-5f * (1.0f + std::abs(once[i])),
                 qPrintable(QString("statistic %1: %2 then %3").arg(i).arg(once[i]).arg(twice[i])));
    // ... and from the moving average the run without it ended with, the same again.
    QuantSim* simA = a.strategy().quantSim();
    simA->quantizeWeights(Rounding::Nearest, 0);
    simA->setObserving(false);
    reestimateBatchNorm(a.model(), data, data.train, 5, cfg.batchSize, simA);
    const std::vector<float> fromA = runningStats(a);
    for (std::size_t i = 0; i < once.size(); ++i)
        QVERIFY2(std::abs(fromA[i] - once[i]) <= 1e-5f * (1.0f + std::abs(once[i])),
                 qPrintable(QString("statistic %1: %2 against %3").arg(i).arg(fromA[i]).arg(once[i])));

    // With the statistics frozen for epoch 2 (--bn-freeze-epoch 2), epoch 1 re-estimates them as
    // before and the frozen epoch trains and ends on exactly those: no second re-estimation.
    cfg.epochs = 2;
    cfg.precision.bnFreezeEpoch = 2;
    Recorder frozen;
    Trainer c(cfg, data, &frozen);
    c.run();
    QCOMPARE(frozen.epochs.size(), std::size_t(2));
    QCOMPARE(frozen.epochs[0].quantTestAccuracy, on.epochs.back().quantTestAccuracy);
    QVERIFY(std::isnan(frozen.epochs[1].quantTestAccuracyBeforeBnReestimation));
    QVERIFY(runningStats(c) == once);
    cfg.epochs = 1;
    cfg.precision.bnFreezeEpoch = 0;

    // No BatchNorm: nothing to re-estimate, nothing reported, the same run.
    cfg.model = "seed-cnn";
    Recorder plainOff, plainOn;
    cfg.precision.bnReestimateBatches = 0;
    run(cfg, plainOff, data);
    cfg.precision.bnReestimateBatches = 5;
    run(cfg, plainOn, data);
    QVERIFY(std::isnan(plainOn.epochs.back().quantTestAccuracyBeforeBnReestimation));
    QCOMPARE(plainOn.epochs.back().quantTestAccuracy, plainOff.epochs.back().quantTestAccuracy);
}

void TestStrategies::ptqOfALoadedFp32Model()
{
    // Train FP32, save it, then PTQ the saved model without training (epochs 0).
    QTemporaryDir dir;
    const std::string path = (dir.path() + "/fp32.qsm").toStdString();
    TrainConfig cfg = baseConfig();
    cfg.model = "mlp";
    Recorder trained;
    Trainer t(cfg, *m_data, &trained);
    t.run();
    exportModel(t, path);

    TrainConfig ptq = baseConfig();
    ptq.model = "mlp";
    ptq.epochs = 0;
    ptq.modelFactory = presetWithWeights("mlp", path);
    ptq.pretrained = true;
    ptq.precision.strategy = Strategy::Ptq;
    ptq.precision.calibImages = scaled(500);
    Recorder rec;
    Trainer p(ptq, *m_data, &rec);
    const FinishEvent fin = p.run();
    QCOMPARE(rec.epochs.size(), std::size_t{1});
    QCOMPARE(fin.epochsDone, std::size_t{0});
    QVERIFY(rec.batches.empty());
    // The loaded model is the trained one, and its int8 version stays close to it.
    QCOMPARE(fin.testAccuracy, trained.epochs.back().testAccuracy);
    QVERIFY2(fin.quantTestAccuracy > fin.testAccuracy - kInt8Gap,
             qPrintable(QString("ptq %1 vs fp32 %2").arg(fin.quantTestAccuracy).arg(fin.testAccuracy)));
    QCOMPARE(rec.stats.size(), std::size_t{1});

    TrainConfig wrong = ptq;
    wrong.model = "seed-cnn";
    wrong.modelFactory = presetWithWeights("seed-cnn", path);
    QVERIFY_THROWS_EXCEPTION(ConfigError, Trainer(wrong, *m_data));
    TrainConfig none = ptq;
    none.modelFactory = nullptr;
    none.pretrained = false;
    QVERIFY_THROWS_EXCEPTION(ConfigError, Trainer(none, *m_data)); // epochs 0 needs a model

    // The file's own architecture and weights (--model FILE): the same trained model.
    TrainConfig fromFile = ptq;
    fromFile.model = "fp32";
    fromFile.modelFactory = modelFromFile(path, false);
    Recorder rf;
    const FinishEvent ff = Trainer(fromFile, *m_data, &rf).run();
    QCOMPARE(ff.testAccuracy, trained.epochs.back().testAccuracy);
    QCOMPARE(ff.quantTestAccuracy, fin.quantTestAccuracy);
    // --reinit keeps the architecture and draws fresh weights: an untrained model.
    TrainConfig fresh = fromFile;
    fresh.modelFactory = modelFromFile(path, true);
    fresh.pretrained = false;
    fresh.epochs = 1;
    fresh.precision.strategy = Strategy::Fp32;
    Trainer reinit(fresh, *m_data);
    const EvalResult untrained = evaluate(reinit.model(), *m_data, m_data->test, 500);
    QVERIFY2(untrained.accuracy < trained.epochs.back().testAccuracy - 0.2,
             qPrintable(QString("re-initialised %1 vs trained %2").arg(untrained.accuracy).arg(trained.epochs.back().testAccuracy)));
    // A dataset of another image size is refused, naming the file.
    Dataset small = *m_data;
    small.train.height = small.train.width = 14;
    small.train.pixels.resize(small.train.size() * 14 * 14);
    try {
        Trainer t2(fromFile, small);
        QFAIL("a model for 28x28 images trained on 14x14");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find(path) != std::string::npos && std::string(e.what()).find("1x28x28") != std::string::npos,
                 e.what());
    }
}

void TestStrategies::badCombinationsAreConfigErrors_data()
{
    QTest::addColumn<QString>("strategy");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("schedule");
    QTest::addColumn<int>("epochs");
    QTest::newRow("mixed int8") << "mixed" << "int8" << "" << 1;
    QTest::newRow("lowp int8") << "lowp" << "int8" << "" << 1;
    QTest::newRow("qat fp32") << "qat" << "fp32" << "" << 1;
    QTest::newRow("unknown format") << "qat" << "int99" << "" << 1;
    QTest::newRow("schedule vs epochs") << "progressive" << "int8" << "fp32:1,int8:1" << 3;
    QTest::newRow("bad schedule") << "progressive" << "int8" << "fp32:x" << 1;
}

void TestStrategies::badCombinationsAreConfigErrors()
{
    QFETCH(QString, strategy);
    QFETCH(QString, format);
    QFETCH(QString, schedule);
    QFETCH(int, epochs);
    TrainConfig cfg = baseConfig();
    cfg.model = "mlp";
    cfg.epochs = std::size_t(epochs);
    cfg.precision.strategy = parseStrategy(strategy.toStdString());
    cfg.precision.format = format.toStdString();
    if (!schedule.isEmpty()) cfg.precision.schedule = schedule.toStdString();
    QVERIFY_THROWS_EXCEPTION(ConfigError, Trainer(cfg, *m_data));
}

QTEST_GUILESS_MAIN(TestStrategies)
#include "tst_strategies.moc"
