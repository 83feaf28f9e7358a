// Cross-layer equalization and bias correction (quant/equalization.h, train/ptq_refine.h):
// BatchNorm folding and CLE leave the FP32 function unchanged (outputs within 1e-5) while they
// equalise the per-channel ranges of every pair (dense, depthwise-separable, conv -> fc through
// pooling and flatten, residual blocks); ReLU6 pairs are skipped and named; empirical bias
// correction cuts the mean output error of a quantized model on its calibration images; the
// PTQ options reach the strategy and its layer statistics carry the ranges before CLE.
#include "data/dataset.h"
#include "io/exported_model.h"
#include "nn/activations.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model_zoo.h"
#include "nn/pointwise.h"
#include "quant/equalization.h"
#include "train/ptq_refine.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"

#include "onnx/export_fixtures.h" // fixtures::syntheticDataset
#include "strategy_fixtures.h"

#include <QtTest>

#include <cmath>
#include <filesystem>
#include <optional>

using namespace quantscope;

namespace {

constexpr float kFunctionTol = 1e-5f; // CLE must not change the FP32 outputs beyond float rounding

// Random BatchNorm statistics and wildly different channel scales in every conv/linear, so there
// is something to equalise.
void roughen(Model& m, std::uint64_t seed);

// The first 2,000 Fashion-MNIST training images and `test` test images (callers skip without the set).
Dataset fashionSubset(std::size_t test)
{
    DatasetOptions o;
    o.trainLimit = 2000;
    o.testLimit = test;
    return Dataset::load(o);
}

// A preset trained for one epoch in FP32 on data.
std::unique_ptr<Trainer> trainedOneEpoch(const std::string& preset, const Dataset& data)
{
    TrainConfig cfg;
    cfg.model = preset;
    auto t = std::make_unique<Trainer>(cfg, data);
    t->run();
    return t;
}

void roughen(Model& m, std::uint64_t seed)
{
    Rng r(seed);
    for (std::size_t i = 0; i < m.size(); ++i) {
        Layer& l = m.layer(i);
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&l)) {
            for (std::size_t c = 0; c < bn->channels(); ++c) {
                bn->runningMean()[c] = r.uniform(-0.5f, 0.5f);
                bn->runningVar()[c] = r.uniform(0.2f, 2.0f);
                bn->gamma().value[c] = r.uniform(0.3f, 3.0f);
                bn->beta().value[c] = r.uniform(-0.3f, 0.3f);
            }
        }
        Param* w = nullptr;
        if (auto* c = dynamic_cast<Conv2d*>(&l)) w = &c->weight();
        if (auto* f = dynamic_cast<Linear*>(&l)) w = &f->weight();
        if (!w) continue;
        const std::size_t C = w->value.shape()[0], row = w->value.numel() / C;
        for (std::size_t c = 0; c < C; ++c) {
            const float k = std::pow(2.0f, static_cast<float>(static_cast<int>(c % 7) - 3));
            for (std::size_t j = 0; j < row; ++j) w->value[c * row + j] *= k;
        }
    }
}

// Rescales the last Linear so the logits lie in [-1, 1]: an absolute tolerance then means what it says.
void normaliseLogits(Model& m, const Tensor& x)
{
    RunContext ctx;
    m.forward(x, ctx);
    for (std::size_t i = m.size(); i-- > 0;)
        if (auto* f = dynamic_cast<Linear*>(&m.layer(i))) {
            float mx = 0.0f;
            for (float v : m.activation(i + 1).values()) mx = std::max(mx, std::fabs(v));
            if (mx > 0.0f) {
                for (float& v : f->weight().value.values()) v *= 1.0f / mx;
                for (float& v : f->bias().value.values()) v *= 1.0f / mx;
            }
            return;
        }
}

Tensor randomInput(const Model& m, std::size_t n, std::uint64_t seed)
{
    Shape s = {n};
    for (std::size_t d : m.inputShape()) s.push_back(d);
    Tensor x(s);
    Rng r(seed);
    for (float& v : x.values()) v = r.uniform(-1.0f, 2.0f);
    return x;
}

std::vector<float> run(Model& m, const Tensor& x)
{
    RunContext ctx;
    ctx.training = false;
    return m.forward(x, ctx).values();
}

float maxDiff(const std::vector<float>& a, const std::vector<float>& b)
{
    float d = 0.0f;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

// conv(8) BN ReLU, depthwise 3x3 BN ReLU, pointwise(16) ReLU, maxpool, flatten, fc: three pairs.
std::unique_ptr<Model> separableNet()
{
    auto m = std::make_unique<Model>("separable", Shape{1, 12, 12});
    m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1, 1, false));
    m->add(std::make_unique<BatchNorm2d>("bn1", 8));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<Conv2d>("dw", 8, 8, 3, 1, 1, 8, false));
    m->add(std::make_unique<BatchNorm2d>("bn2", 8));
    m->add(std::make_unique<ReLU>("relu2"));
    m->add(std::make_unique<Conv2d>("pw", 8, 16, 1));
    m->add(std::make_unique<ReLU>("relu3"));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 16 * 6 * 6, 10));
    m->initParams(3);
    return m;
}

// conv(8) LeakyReLU(0.1) conv(8) `act` flatten fc: conv1 -> conv2 pairs through the LeakyReLU
// (positively homogeneous); conv2 -> fc through `act` only if it is one too.
std::unique_ptr<Model> pointwiseNet(LayerKind act)
{
    auto m = std::make_unique<Model>("pointwise", Shape{1, 6, 6});
    m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1));
    m->add(std::make_unique<Pointwise>("leaky", LayerKind::LeakyReLU, 0.1f));
    m->add(std::make_unique<Conv2d>("conv2", 8, 8, 3, 1, 1));
    m->add(std::make_unique<Pointwise>("act", act));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8 * 36, 10));
    m->initParams(3);
    return m;
}

// flatten, fc1 (bias=False), ReLU, fc2 (bias=False): a pair whose first layer has no bias.
std::unique_ptr<Model> biasFreeMlp()
{
    auto m = std::make_unique<Model>("bias-free-mlp", Shape{1, 6, 6});
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 36, 12, false));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<Linear>("fc2", 12, 5, false));
    m->initParams(3);
    return m;
}

double meanOutputError(Model& model, QuantSim& sim, const Dataset& data, std::size_t images, std::size_t layer)
{
    // mean over channels of |E[y_fp] - E[y_q]| at `layer`'s output
    Tensor x;
    std::vector<std::int32_t> y;
    std::vector<double> diff;
    RunContext ctx;
    data.makeBatch(data.train, 0, images, x, y);
    std::vector<Param*> on;
    for (Param* p : model.params())
        if (p->hasOverride) on.push_back(p), p->hasOverride = false;
    model.forward(x, ctx);
    const std::vector<float> fp = model.activation(layer + 1).values();
    for (Param* p : on) p->hasOverride = true;
    model.forward(x, ctx, &sim);
    const std::vector<float> q = model.activation(layer + 1).values();
    const std::size_t C = fp.size() / images;
    diff.assign(C, 0.0);
    for (std::size_t i = 0; i < fp.size(); ++i) diff[i % C] += static_cast<double>(fp[i]) - q[i];
    double s = 0.0;
    for (double d : diff) s += std::fabs(d / static_cast<double>(images));
    return s / static_cast<double>(C);
}

} // namespace

class TestCle : public QObject {
    Q_OBJECT

private slots:
    void functionUnchangedAndRangesEqualised_data();
    void functionUnchangedAndRangesEqualised();
    void depthwisePairEndsWithEqualRanges();
    void relu6PairsAreSkipped();
    void nonHomogeneousActivationsAreSkipped();
    void relu6ToReluOptIn();
    void relu6ToReluRunReportsTheChangedModel();
    void biasCorrectionReducesMeanOutputError();
    void biasCorrectionSkipsBiasFreeLinear();
    void optionsNeedPtq();
};

void TestCle::functionUnchangedAndRangesEqualised_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<int>("pairs");
    QTest::newRow("depthwise-separable + fc") << "separable" << 3;
    QTest::newRow("seed-cnn-bn") << "seed-cnn-bn" << 3;
    QTest::newRow("resnet8 (inside the residual blocks)") << "resnet8" << 3;
    QTest::newRow("lenet5") << "lenet5" << 4;
    QTest::newRow("bias-free mlp") << "bias-free-mlp" << 1;
    QTest::newRow("through LeakyReLU") << "leaky" << 1;
}

void TestCle::functionUnchangedAndRangesEqualised()
{
    QFETCH(QString, model);
    QFETCH(int, pairs);
    auto m = model == "separable"       ? separableNet()
             : model == "bias-free-mlp" ? biasFreeMlp()
             : model == "leaky"         ? pointwiseNet(LayerKind::Sigmoid)
                                        : makeModel(model.toStdString());
    roughen(*m, 9);
    const Tensor x = randomInput(*m, 3, 4);
    normaliseLogits(*m, x);
    const std::vector<float> before = run(*m, x);
    const EqualizationReport rep = equalizeCrossLayer(*m);
    const std::vector<float> after = run(*m, x);
    QVERIFY2(maxDiff(before, after) < kFunctionTol, qPrintable(QString("outputs moved by %1").arg(maxDiff(before, after))));
    QCOMPARE(static_cast<int>(rep.pairs.size()), pairs);
    for (const EqualizedPair& p : rep.pairs) {
        qInfo("%s -> %s: channel range ratio %.2f -> %.2f", p.first.c_str(), p.second.c_str(), p.rangeRatioBefore,
              p.rangeRatioAfter);
        QVERIFY2(p.rangeRatioAfter < p.rangeRatioBefore, p.first.c_str());
    }
    QVERIFY(rep.sweeps >= 1);
}

void TestCle::depthwisePairEndsWithEqualRanges()
{
    auto m = separableNet();
    roughen(*m, 2);
    equalizeCrossLayer(*m, 500, 1e-7);
    auto* conv1 = dynamic_cast<Conv2d*>(m->findLayer("conv1"));
    auto* dw = dynamic_cast<Conv2d*>(m->findLayer("dw"));
    const std::vector<float> r1 = outputChannelRanges(conv1->weight()), r2 = outputChannelRanges(dw->weight());
    for (std::size_t c = 0; c < r1.size(); ++c) // depthwise: input channel c is kernel c
        QVERIFY2(std::fabs(r1[c] - r2[c]) < 1e-3f * r1[c], qPrintable(QString("channel %1: %2 vs %3").arg(c).arg(r1[c]).arg(r2[c])));
}

void TestCle::relu6PairsAreSkipped()
{
    auto m = makeModel("mobilenet-tiny");
    roughen(*m, 5);
    const Tensor x = randomInput(*m, 2, 8);
    normaliseLogits(*m, x);
    const std::vector<float> before = run(*m, x);
    const EqualizationReport rep = equalizeCrossLayer(*m);
    QVERIFY(maxDiff(before, run(*m, x)) < kFunctionTol); // BatchNorm folding alone
    QVERIFY(rep.pairs.empty());
    QVERIFY(rep.foldedBatchNorms >= 9);
    QVERIFY(!rep.skipped.empty());
    QVERIFY2(QString::fromStdString(rep.skipped.front()).contains("ReLU6"), rep.skipped.front().c_str());
}

// A Sigmoid, SiLU, Hardswish... is not positively homogeneous: its pair is skipped and named.
void TestCle::nonHomogeneousActivationsAreSkipped()
{
    for (const LayerKind act : {LayerKind::Sigmoid, LayerKind::SiLU, LayerKind::Hardswish, LayerKind::GELU}) {
        auto m = pointwiseNet(act);
        const EqualizationReport rep = equalizeCrossLayer(*m);
        QCOMPARE(rep.pairs.size(), std::size_t{1}); // conv1 -> conv2 through the LeakyReLU
        QCOMPARE(rep.pairs.front().first, std::string("conv1"));
        QCOMPARE(rep.skipped.size(), std::size_t{1});
        QVERIFY2(QString::fromStdString(rep.skipped.front()).contains("act is not positively homogeneous"), rep.skipped.front().c_str());
    }
}

// --cle-relu6-to-relu: the ReLU6 layers become ReLU (a different FP32 model), then the pairs of
// mobilenet-tiny equalise and leave that model's function unchanged; the originals go back.
void TestCle::relu6ToReluOptIn()
{
    auto m = makeModel("mobilenet-tiny");
    roughen(*m, 6);
    const Tensor x = randomInput(*m, 2, 3);
    auto old = replaceRelu6WithRelu(*m);
    QCOMPARE(old.size(), std::size_t{9});
    normaliseLogits(*m, x);
    const std::vector<float> before = run(*m, x);
    const EqualizationReport rep = equalizeCrossLayer(*m);
    QVERIFY2(maxDiff(before, run(*m, x)) < kFunctionTol, qPrintable(QString::number(maxDiff(before, run(*m, x)))));
    QCOMPARE(rep.pairs.size(), std::size_t{9}); // conv1 -> dw -> pw -> ... -> the last pw -> (global pool) fc
    for (const EqualizedPair& p : rep.pairs) QVERIFY2(p.rangeRatioAfter < p.rangeRatioBefore, p.first.c_str());
    for (auto& [i, layer] : old) m->replaceLayer(i, std::move(layer));
    QCOMPARE(m->layer(old.empty() ? 0 : 2).kind(), LayerKind::ReLU6);
    QVERIFY_THROWS_EXCEPTION(ConfigError, m->replaceLayer(2, std::make_unique<ReLU>("another-name")));
}

// A PTQ run with --cle-relu6-to-relu quantizes the ReLU model: the FP32 accuracy it finishes with
// (the "FP32 weights" beside the quantized accuracy) is that model's, not the ReLU6 model's it
// evaluated first (tester 10).
void TestCle::relu6ToReluRunReportsTheChangedModel()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    const Dataset data = fashionSubset(500);
    // mobilenet-tiny trained one epoch, then its BatchNorms' gamma and beta 8 times as large, so
    // that ReLU6 clips and the ReLU model predicts otherwise.
    const std::unique_ptr<Trainer> first = trainedOneEpoch("mobilenet-tiny", data);
    const ExportedModel trained = exportFloatModel(first->model(), "mobilenet-tiny", data.normalization, data.classNames);
    TrainConfig cfg;
    cfg.model = "mobilenet-tiny";
    cfg.epochs = 0;
    cfg.pretrained = true;
    cfg.modelFactory = [&](const Shape&, std::size_t, std::uint64_t) {
        std::unique_ptr<Model> m = buildModel(trained);
        for (std::size_t i = 0; i < m->size(); ++i)
            if (auto* bn = dynamic_cast<BatchNorm2d*>(&m->layer(i)))
                for (std::size_t c = 0; c < bn->channels(); ++c) {
                    bn->gamma().value[c] *= 8.0f;
                    bn->beta().value[c] *= 8.0f;
                }
        return m;
    };
    cfg.precision.strategy = Strategy::Ptq;
    cfg.precision.format = "int8";
    cfg.precision.crossLayerEqualization = true;
    cfg.precision.cleRelu6ToRelu = true;
    strategy_fixtures::Recorder rec;
    Trainer t(cfg, data, &rec);
    const FinishEvent fin = t.run();
    const PtqRefiner* r = t.strategy().refiner();
    QVERIFY(r && r->replacedRelu6() == 9);
    QCOMPARE(rec.epochs.size(), std::size_t{1});
    qInfo("ReLU6 model %.4f, ReLU model %.4f, quantized %.4f", rec.epochs[0].testAccuracy, r->floatAccuracyAfterCle(), fin.quantTestAccuracy);
    QVERIFY(r->floatAccuracyAfterCle() != rec.epochs[0].testAccuracy); // the two models differ here
    QCOMPARE(fin.testAccuracy, r->floatAccuracyAfterCle());
    QCOMPARE(rec.finish.testAccuracy, r->floatAccuracyAfterCle());
    QCOMPARE(fin.testLoss, r->floatLossAfterCle()); // its loss too, not the ReLU6 model's
    QVERIFY(fin.testLoss != rec.epochs[0].testLoss);
}

void TestCle::biasCorrectionReducesMeanOutputError()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    const Dataset data = fashionSubset(200);
    const std::unique_ptr<Trainer> t = trainedOneEpoch("lenet5", data);
    Model& m = t->model();
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = "int4";
    pc.granularity = "tensor";
    QuantSim sim(m, pc, findFormat("int4"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(data, data.train, 500, 100);
    sim.setObserving(false);
    const std::size_t last = m.size() - 2; // fc3, before LogSoftmax
    QCOMPARE(m.layer(last).kind(), LayerKind::Linear);
    const double before = meanOutputError(m, sim, data, 500, last);
    const std::vector<BiasCorrectionReport> rep = applyBiasCorrection(m, sim, data, data.train, 500, 100);
    const double after = meanOutputError(m, sim, data, 500, last);
    qInfo("mean |E[y_fp] - E[y_q]| of the logits on the calibration images: %.4f -> %.4f", before, after);
    QCOMPARE(rep.size(), std::size_t{5});
    QVERIFY(after < 0.7 * before);
}

// A Linear without a bias (and no BatchNorm) is skipped, reported as not applied: bias correction
// does not give the model a bias its architecture does not have. The layer with a bias is corrected.
void TestCle::biasCorrectionSkipsBiasFreeLinear()
{
    const Dataset data = fixtures::syntheticDataset(200, 10, 12, 12);
    auto m = std::make_unique<Model>("mlp", Shape{1, 12, 12});
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 144, 16, false));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<Linear>("fc2", 16, 10));
    m->initParams(4);
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = "int4";
    pc.granularity = "tensor";
    QuantSim sim(*m, pc, findFormat("int4"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(data, data.train, 200, 100);
    sim.setObserving(false);
    const std::vector<BiasCorrectionReport> rep = applyBiasCorrection(*m, sim, data, data.train, 200, 100);
    QCOMPARE(rep.size(), std::size_t{2});
    QCOMPARE(rep[0].layer, std::string("fc1"));
    QVERIFY(!rep[0].applied);
    QVERIFY(rep[0].meanAbsShift > 0.0); // there was a shift to correct; it is reported, not applied
    QVERIFY(rep[1].applied);
    auto& fc1 = dynamic_cast<Linear&>(*m->findLayer("fc1"));
    QVERIFY(!fc1.hasBias());
    QCOMPARE(fc1.params().size(), std::size_t{1});
    QVERIFY(!fc1.bias().hasOverride);
    QVERIFY(dynamic_cast<Linear&>(*m->findLayer("fc2")).bias().hasOverride);
}

void TestCle::optionsNeedPtq()
{
    PrecisionConfig pc;
    pc.strategy = Strategy::Qat;
    pc.crossLayerEqualization = true;
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate());
    pc.crossLayerEqualization = false;
    pc.rounding = "adaround";
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate());
    pc.strategy = Strategy::Ptq;
    pc.validate();
    pc.biasCorrection = true;
    pc.crossLayerEqualization = true;
    pc.validate();
}

QTEST_GUILESS_MAIN(TestCle)
#include "tst_cle.moc"
