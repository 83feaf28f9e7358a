// QAT and PTQ in detail on small Fashion-MNIST subsets: the straight-through estimator zeroes
// clipped gradients, BN-folded weights lie on the integer grid, QAT is deterministic for a seed,
// BatchNorm re-estimation, and PTQ of a loaded FP32 model. The strategies' shared runs are
// tst_strategies; the fixtures strategy_fixtures.h.
#include "data/dataset.h"
#include "analysis/model_export.h"
#include "io/exported_model.h"
#include "io/model_source.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/model_zoo.h"
#include "quant/quantize.h"
#include "train/float_sim.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"
#include "slow_tests.h"
#include "strategy_fixtures.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>

using namespace quantscope;
using namespace strategy_fixtures;

class TestQatPtq : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void qatStraightThroughZeroesClippedGradients();
    void bnFoldedWeightsLieOnTheIntGrid();
    void biasesStayFloatAndCalibrationSeesTheFloatModel();
    void qatIsDeterministic();
    void qatBnReestimation();
    void ptqOfALoadedFp32Model();
    void initReadsPyTorchShortcutNames();

private:
    FinishEvent run(TrainConfig cfg, Recorder& rec, const Dataset& data) { return runTraining(cfg, rec, data); }
    std::optional<Dataset> m_data;
};

void TestQatPtq::initTestCase()
{
    m_data = strategiesData();
    if (!m_data) QSKIP("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
}

void TestQatPtq::qatStraightThroughZeroesClippedGradients()
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

void TestQatPtq::bnFoldedWeightsLieOnTheIntGrid()
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

// PyTorch's semantics (tester 9): a bias stays float on an integer grid (it was rounded onto the
// weight format's own grid: int2 took -0.3 to -0.40), and PTQ calibrates the activation ranges
// on the float model, as prepare/calibrate/convert does (they were those of the int2-weight model).
void TestQatPtq::biasesStayFloatAndCalibrationSeesTheFloatModel()
{
    auto m = makeModel("mlp");
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.granularity = "tensor";
    pc.activationCalibration = "minmax";
    QuantSim sim(*m, pc, findFormat("int2"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    std::size_t biases = 0;
    for (const WeightTarget& t : sim.weightTargets()) {
        QVERIFY(t.weight->hasOverride && t.weight->override.values() != t.weight->value.values());
        if (!t.bias) continue;
        ++biases;
        QVERIFY2(!t.bias->hasOverride || t.bias->override.values() == t.bias->value.values(), t.layer.c_str());
    }
    QVERIFY(biases > 0);
    sim.calibrate(*m_data, m_data->train, 200, 50);
    auto m2 = makeModel("mlp");
    QuantSim floatOnly(*m2, pc, findFormat("int2"));
    floatOnly.calibrate(*m_data, m_data->train, 200, 50);
    std::size_t points = 0;
    for (std::size_t a = 1; a <= m->size(); ++a) {
        const ActivationQuantizer* q = sim.activationQuantizer(a);
        const ActivationQuantizer* f = floatOnly.activationQuantizer(a);
        if (!q || !f || q->params().scale.empty()) continue;
        ++points;
        QCOMPARE(q->params().scale, f->params().scale);
        QCOMPARE(q->params().zeroPoint, f->params().zeroPoint);
    }
    QVERIFY(points > 0);
    QVERIFY(sim.weightTargets()[0].weight->hasOverride); // the quantized weights are back
}

void TestQatPtq::qatIsDeterministic()
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

void TestQatPtq::ptqOfALoadedFp32Model()
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

// --bn-reestimate: before the quantized evaluation, QAT replaces every BatchNorm's running
// statistics by the average batch statistics of the quantized model on the first N training
// batches. Training itself is untouched (same FP32 evaluation, same first quantized figure, which
// the epoch reports as the figure before re-estimation); the running statistics afterwards are
// those of the quantized model, not the moving average training kept; a model without
// BatchNorm reports nothing and runs as before.
void TestQatPtq::qatBnReestimation()
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

// --init from PyTorch's export of common.py's ResNet8 (TrainingMode.PRESERVE, BatchNorm kept):
// its projection shortcut is an nn.Sequential, so its layers are layer2.shortcut.0 and .1 where
// the preset says layer2.shortcut and layer2.shortcut_bn; they load (tester 11 D10: refused).
void TestQatPtq::initReadsPyTorchShortcutNames()
{
    std::unique_ptr<Model> trained = makeModel("resnet8", 1, 28, 28, 10, 5);
    ExportedModel m = exportFloatModel(*trained, "resnet8", Normalization::identity(1), {});
    std::size_t renamed = 0;
    for (StoredLayer& l : m.layers) {
        const auto swap = [&](const std::string& from, const std::string& to) {
            if (l.name.size() > from.size() && l.name.compare(l.name.size() - from.size(), from.size(), from) == 0) {
                l.name = l.name.substr(0, l.name.size() - from.size()) + to;
                ++renamed;
            }
        };
        swap(".shortcut_bn", ".shortcut.1");
        swap(".shortcut", ".shortcut.0");
    }
    QCOMPARE(renamed, std::size_t{4}); // layer2 and layer3: conv and BatchNorm each
    std::unique_ptr<Model> fresh = makeModel("resnet8", 1, 28, 28, 10, 99);
    loadFloatWeights(*fresh, m, "pytorch_resnet8.onnx");
    for (std::size_t i = 0; i < fresh->size(); ++i) {
        const std::vector<Param*> a = fresh->layer(i).params(), b = trained->layer(i).params();
        for (std::size_t k = 0; k < a.size(); ++k) QVERIFY2(a[k]->value.values() == b[k]->value.values(), fresh->layer(i).name().c_str());
    }
}

QTEST_GUILESS_MAIN(TestQatPtq)
#include "tst_qat_ptq.moc"
