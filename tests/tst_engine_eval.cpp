// Quantized evaluations on the integer engine (analysis/engine_eval.h): a trained model under
// PTQ int8/int4 runs on the engine with the fake-quant model's predictions (argmax agreement
// >= 99.9 %); what the engine cannot run (group-wise scales, float formats) falls back, saying
// why; the trainer's quantized accuracy and the analyses' plan evaluations report the runner.
#include "analysis/engine_eval.h"
#include "analysis/plan_eval.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit
#include "onnx/export_fixtures.h"
#include "slow_tests.h"

#include <QtTest>

#include <cmath>
#include <limits>

using namespace quantscope;
using fixtures::agreement;
using fixtures::argmaxOf;

namespace {
// The bar for the engine against the float fake-quant evaluation of the same model: issue 12's on
// a trained Fashion-MNIST model; issue 5's on the synthetic blobs, whose weak model (about 60 %)
// has many near-tied logits, so that the int32 bias rounding decides more of them.
constexpr double kMinAgreement = 0.999;
constexpr double kMinAgreementBlobs = 0.995;
// int4 weights: the engine rounds each bias to int32 at s_in x s_w, the fake-quant model keeps it
// float. s_w is 2^4 = 16x coarser at 4 bits than at 8, so that rounding moves an activation up to
// 16x further, and more images sit within it of a rounding boundary or of a tie between two
// classes. How many do depends on the trained model, which depends on the build: the release
// build (-march=native, FMA) agreed on >= 99.9 %, the asan build (baseline x86-64, no FMA, so a
// slightly different model after the same training) on 99.87 % (4 of 3000 images). The bar holds
// for both. What a user relies on is asserted beside it, for every format: each image the two
// disagree on is a near tie, its two classes at most kMaxTieSteps output steps apart in the
// engine's own logits (the asan build: all were exact ties, the same uint8 code for both classes).
constexpr double kMinAgreementInt4 = 0.998;
constexpr int kMaxTieSteps = 1;

struct EngineObserver final : TrainObserver {
    std::vector<EpochEvent> epochs;
    void onEpoch(const EpochEvent& e) override { epochs.push_back(e); }
};
} // namespace

class TestEngineEval : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void engineAgreesWithFakeQuant_data();
    void engineAgreesWithFakeQuant();
    void fallsBackWithTheReason_data();
    void fallsBackWithTheReason();
    void trainerReportsTheRunner();
    void planEvaluatorRunsOnTheEngine();

private:
    Dataset m_data = fixtures::blobsWithValidation();
    std::unique_ptr<Trainer> m_trained;
    Dataset m_fashion;                     // Fashion-MNIST, 3000 training images (1000 under sanitizers), when installed
    Dataset m_fashionTrain;                // the trainer's copy (under sanitizers: 100 test images for its epoch-end evaluation)
    std::unique_ptr<Trainer> m_fashionModel; // seed-cnn trained 1 epoch on them
};

void TestEngineEval::initTestCase()
{
    m_data.test = fixtures::blobImages(1000, 28, 28, 123);
    m_trained = fixtures::trainedLenet5(m_data);
    if (fixtures::haveFashion()) {
        // Under the sanitizer presets (QS_SANITIZER_RUN) a third of the work: 1000 training images
        // in batches of 16, 1000 test images (under TSan the full-size training alone had not
        // ended after 28 minutes). The release build agreed there on 99.9-100 % of the 1000 images
        // in every row, each disagreement within 1 output step: the bars are unchanged.
        // The trainer's own epoch-end evaluation, which no check here reads, sees 100 of the test
        // images, and each row calibrates on 200 training images instead of 1000 (both under
        // sanitizers only): under TSan on this 2-core machine at load ~9 (2026-11-30) this
        // initTestCase took ~17 min and each agreement row ~5 min, 37 min in all against ctest's
        // 30 (the int8 channel row agreed on 100.00 % of 1000).
        const bool scaled = quantscope::testing::sanitizerSlowdown() > 1.0;
        DatasetOptions o;
        o.trainLimit = scaled ? 1000 : 3000;
        o.testLimit = scaled ? 1000 : 3000;
        m_fashion = Dataset::load(o);
        m_fashionTrain = m_fashion;
        if (scaled) {
            m_fashionTrain.test.pixels.resize(100 * m_fashionTrain.test.imageBytes());
            m_fashionTrain.test.labels.resize(100);
        }
        TrainConfig cfg;
        cfg.model = "seed-cnn";
        cfg.epochs = 1;
        if (scaled) cfg.batchSize = 16;
        m_fashionModel = std::make_unique<Trainer>(cfg, m_fashionTrain);
        m_fashionModel->run();
    }
}

void TestEngineEval::engineAgreesWithFakeQuant_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::newRow("int8 channel") << "int8" << "channel";
    QTest::newRow("int8 tensor") << "int8" << "tensor";
    QTest::newRow("int4 channel (int4 values on the int8 kernels)") << "int4" << "channel";
}

void TestEngineEval::engineAgreesWithFakeQuant()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    const bool fashion = m_fashionModel != nullptr;
    Model& model = fashion ? m_fashionModel->model() : m_trained->model();
    const Dataset& data = fashion ? m_fashion : m_data;
    double bar = fashion ? kMinAgreement : kMinAgreementBlobs;
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = format.toStdString();
    pc.granularity = granularity.toStdString();
    pc.activationCalibration = "minmax";
    QuantSim sim(model, pc, findFormat(pc.format));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(data, data.train, fashion && quantscope::testing::sanitizerSlowdown() > 1.0 ? 200 : 1000, 100);
    sim.setObserving(false);
    std::vector<std::int32_t> fake;
    const EvalResult f = evaluate(model, data, data.test, 100, &sim, &fake);
    std::string why;
    const std::optional<EngineEval> e = evaluateOnEngine(model, sim, data, data.test, 2, true, &why);
    sim.clearWeights();
    QVERIFY2(e.has_value(), why.c_str());
    QVERIFY2(QString::fromStdString(e->runner).contains("integer engine"), e->runner.c_str());
    QCOMPARE(e->logits.size(), data.test.size() * 10);
    const std::vector<std::int32_t> enginePred = argmaxOf(e->logits, 10);
    const double agree = agreement(enginePred, fake);
    // The engine's logits are its uint8 output codes dequantized (then log-softmax, a shift per
    // image): every difference between two classes of an image is a multiple of the output step.
    // The step is the smallest such difference over the set.
    float step = std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < fake.size(); ++i)
        for (std::size_t a = 0; a < 10; ++a)
            for (std::size_t b = 0; b < 10; ++b) {
                const float d = e->logits[i * 10 + a] - e->logits[i * 10 + b];
                if (d > 1e-4f) step = std::min(step, d);
            }
    QVERIFY(std::isfinite(step));
    double worstTie = 0; // in output steps: how far apart the two classes are where they disagree
    for (std::size_t i = 0; i < fake.size(); ++i)
        if (enginePred[i] != fake[i])
            worstTie = std::max<double>(worstTie, (e->logits[i * 10 + static_cast<std::size_t>(enginePred[i])] -
                                                   e->logits[i * 10 + static_cast<std::size_t>(fake[i])]) / step);
    if (fashion && format == "int4") bar = kMinAgreementInt4;
    qInfo("%s, %s %s: engine %.2f %% (%s), fake-quant %.2f %%, argmax agreement %.2f %% of %zu (bar %.1f %%); "
          "disagreements at most %.2f output steps apart",
          fashion ? "Fashion-MNIST seed-cnn" : "blobs lenet5", qPrintable(format), qPrintable(granularity), 100 * e->accuracy,
          e->runner.c_str(), 100 * f.accuracy, 100 * agree, fake.size(), 100 * bar, worstTie);
    QVERIFY(agree >= bar);
    QVERIFY(std::abs(e->accuracy - f.accuracy) <= 1.0 - bar + 1e-12);
    QVERIFY2(worstTie <= kMaxTieSteps + 1e-3, qPrintable(QStringLiteral("engine and fake-quant disagree on an image whose classes are %1 output steps apart").arg(worstTie)));
}

void TestEngineEval::fallsBackWithTheReason_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("reason");
    QTest::newRow("group-wise scales") << "int8" << "group:8" << "group";
    QTest::newRow("16-bit weights") << "int16" << "channel" << "8 bits";
}

void TestEngineEval::fallsBackWithTheReason()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, reason);
    Model& model = m_trained->model();
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = format.toStdString();
    pc.granularity = granularity.toStdString();
    QuantSim sim(model, pc, findFormat(pc.format));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(m_data, m_data.train, 200, 64);
    sim.setObserving(false);
    std::string why;
    const std::optional<EngineEval> e = evaluateOnEngine(model, sim, m_data, m_data.test, 2, false, &why);
    sim.clearWeights();
    QVERIFY(!e.has_value());
    QVERIFY2(QString::fromStdString(why).contains(reason), why.c_str());
}

// QAT with the engine evaluator: each epoch's quantized accuracy comes from the integer engine,
// and equals (within the agreement bar) the fake-quant evaluation of the same run.
void TestEngineEval::trainerReportsTheRunner()
{
    auto run = [&](bool engine) {
        TrainConfig cfg;
        cfg.model = "lenet5";
        cfg.epochs = 1;
        cfg.precision.strategy = Strategy::Qat;
        if (engine) cfg.quantizedEvaluator = engineEvaluator(2);
        EngineObserver obs;
        Trainer t(cfg, m_data, &obs);
        t.run();
        return obs.epochs.back();
    };
    const EpochEvent e = run(true), f = run(false);
    qInfo("QAT int8: quantized test accuracy %.2f %% (%s) against %.2f %% (%s)", 100 * e.quantTestAccuracy, e.quantRunner.c_str(),
          100 * f.quantTestAccuracy, f.quantRunner.c_str());
    QVERIFY2(QString::fromStdString(e.quantRunner).contains("integer engine"), e.quantRunner.c_str());
    QCOMPARE(f.quantRunner, std::string("fake-quant"));
    QCOMPARE(e.testAccuracy, f.testAccuracy); // the same training, deterministic
    QVERIFY(std::abs(e.quantTestAccuracy - f.quantTestAccuracy) <= 1.0 - kMinAgreementBlobs + 1e-12);
}

void TestEngineEval::planEvaluatorRunsOnTheEngine()
{
    PlanEvaluator eval(m_trained->model(), m_data, m_data.validation, 200, 100, 2);
    PrecisionPlan plan;
    plan.defaults.format = "int4";
    plan.defaults.granularity = "channel";
    const PlanEvaluator::Result r = eval.run(plan);
    QVERIFY2(QString::fromStdString(eval.lastRunner()).contains("integer engine"), eval.lastRunner().c_str());
    QCOMPARE(r.logits.size(), m_data.validation.size() * eval.classes());
    plan.defaults.granularity = "group:8";
    eval.run(plan);
    QCOMPARE(eval.lastRunner(), std::string("fake-quant"));
}

QTEST_GUILESS_MAIN(TestEngineEval)
#include "tst_engine_eval.moc"
