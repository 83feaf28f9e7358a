// AdaRound (quant/adaround.h, train/ptq_refine.h): the rectified sigmoid and its initialisation,
// the regulariser's value and gradient (numerical check), the annealed beta, the hard rounding at
// the end (on the grid, within one step of nearest), a lower reconstruction error than nearest on
// dense and depthwise layers, determinism across thread counts, and PTQ end to end on
// Fashion-MNIST: the refined model exports (its weights are on the usual grid).
#include "analysis/model_export.h"
#include "data/dataset.h"
#include "quant/adaround.h"
#include "train/ptq_refine.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"

#include <tbb/task_arena.h> // before QtTest: Qt's emit macro breaks TBB's headers

#include <QtTest>

#include <cmath>
#include <filesystem>
#include <optional>
#include <set>

using namespace quantscope;

namespace {

constexpr double kGradTol = 2e-3; // relative, float central differences

// A layer with a random weight (rows, cols), samples x ~ N(0, 1)-ish uniform, an int-format grid
// per row (symmetric min-max, as the observers choose it).
struct TestLayer {
    std::vector<float> w, x, t;
    QuantParams qp;
    std::size_t rows, cols, groups, samples;
};

TestLayer makeLayer(std::size_t rows, std::size_t cols, std::size_t groups, std::size_t samples, int qmin, int qmax,
                std::uint64_t seed)
{
    TestLayer L{{}, {}, {}, {}, rows, cols, groups, samples};
    Rng r(seed);
    L.w.resize(rows * cols);
    for (float& v : L.w) v = r.uniform(-1.0f, 1.0f) * r.uniform();
    std::vector<float> scales(rows);
    for (std::size_t c = 0; c < rows; ++c) {
        float m = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) m = std::max(m, std::fabs(L.w[c * cols + j]));
        scales[c] = m / ((static_cast<float>(qmax) - static_cast<float>(qmin)) / 2.0f);
    }
    L.qp = perRowParams(scales, std::vector<std::int32_t>(rows, 0), qmin, qmax, cols);
    const std::size_t kin = groups * cols, rpg = rows / groups;
    L.x.resize(samples * kin);
    // Correlated inputs (a shared component), as real activations are: this is where rounding
    // jointly beats rounding each weight to nearest.
    for (std::size_t s = 0; s < samples; ++s) {
        const float common = r.uniform(-1.0f, 1.0f);
        for (std::size_t j = 0; j < kin; ++j) L.x[s * kin + j] = 0.7f * common + 0.5f * r.uniform(-1.0f, 1.0f);
    }
    L.t.assign(samples * rows, 0.0f);
    for (std::size_t s = 0; s < samples; ++s)
        for (std::size_t c = 0; c < rows; ++c) {
            const std::size_t g = c / rpg;
            double acc = 0.0;
            for (std::size_t j = 0; j < cols; ++j) acc += L.w[c * cols + j] * L.x[s * kin + g * cols + j];
            L.t[s * rows + c] = static_cast<float>(acc);
        }
    return L;
}

AdaRoundProblem problemOf(const TestLayer& L)
{
    AdaRoundProblem p;
    p.weight = L.w;
    p.rows = L.rows;
    p.cols = L.cols;
    p.groups = L.groups;
    p.params = &L.qp;
    p.input = L.x;
    p.target = L.t;
    p.samples = L.samples;
    return p;
}

} // namespace

class TestAdaRound : public QObject {
    Q_OBJECT

private slots:
    void rectifiedSigmoid_data();
    void rectifiedSigmoid();
    void initialisationInvertsTheSigmoid();
    void rectifiedSigmoidGradient();
    void regularizerValue();
    void regularizerGradient_data();
    void regularizerGradient();
    void betaIsAnnealedAfterWarmup();
    void hardRoundingIsOnTheGrid_data();
    void hardRoundingIsOnTheGrid();
    void beatsNearest_data();
    void beatsNearest();
    void neverWorseThanNearest();
    void deterministicAcrossThreads();
    void badShapesAreConfigErrors();
    void ptqAdaRoundExports();
    void stopDuringAdaRoundIsAStoppedRun();
    void refinesModelsWithBatchNorm();
};

void TestAdaRound::rectifiedSigmoid_data()
{
    QTest::addColumn<float>("v");
    QTest::addColumn<float>("h");
    // h = clip(sigmoid(v) * 1.2 - 0.1, 0, 1)
    QTest::newRow("zero") << 0.0f << 0.5f;
    QTest::newRow("large positive saturates at 1") << 20.0f << 1.0f;
    QTest::newRow("large negative saturates at 0") << -20.0f << 0.0f;
    QTest::newRow("v=1") << 1.0f << static_cast<float>(1.2 / (1.0 + std::exp(-1.0)) - 0.1);
    QTest::newRow("v=-2") << -2.0f << static_cast<float>(1.2 / (1.0 + std::exp(2.0)) - 0.1);
}

void TestAdaRound::rectifiedSigmoid()
{
    QFETCH(float, v);
    QFETCH(float, h);
    QVERIFY2(std::fabs(quantscope::rectifiedSigmoid(v) - h) < 1e-6f, qPrintable(QString::number(quantscope::rectifiedSigmoid(v))));
}

void TestAdaRound::initialisationInvertsTheSigmoid()
{
    for (float f : {0.0f, 0.01f, 0.25f, 0.5f, 0.75f, 0.999f})
        QVERIFY2(std::fabs(quantscope::rectifiedSigmoid(adaroundInitialV(f)) - f) < 1e-5f, qPrintable(QString::number(f)));
}

void TestAdaRound::rectifiedSigmoidGradient()
{
    for (float v : {-2.3f, -0.7f, 0.0f, 0.4f, 1.9f}) {
        const float h = 1e-3f;
        const double num = (quantscope::rectifiedSigmoid(v + h) - quantscope::rectifiedSigmoid(v - h)) / (2.0 * h);
        QVERIFY2(std::fabs(num - rectifiedSigmoidGrad(v)) < kGradTol * std::max(1.0, std::fabs(num)),
                 qPrintable(QString("v %1: numerical %2, analytic %3").arg(v).arg(num).arg(rectifiedSigmoidGrad(v))));
    }
    QCOMPARE(rectifiedSigmoidGrad(30.0f), 0.0f); // in the clip: no gradient
}

void TestAdaRound::regularizerValue()
{
    // 1 - |2h - 1|^beta: 0 at h in {0, 1}, 1 at h = 1/2, between otherwise.
    const std::vector<float> hard = {-30.0f, 30.0f};
    QCOMPARE(adaroundRegularizer(hard, 20.0f), 0.0);
    const std::vector<float> half = {0.0f, 0.0f, 0.0f};
    QVERIFY(std::fabs(adaroundRegularizer(half, 2.0f) - 3.0) < 1e-9);
    const float v = adaroundInitialV(0.8f); // |2h - 1| = 0.6
    const std::vector<float> one = {v};
    QVERIFY(std::fabs(adaroundRegularizer(one, 2.0f) - (1.0 - 0.36)) < 1e-5);
    QVERIFY(std::fabs(adaroundRegularizer(one, 20.0f) - (1.0 - std::pow(0.6, 20.0))) < 1e-5);
}

void TestAdaRound::regularizerGradient_data()
{
    QTest::addColumn<float>("beta");
    QTest::newRow("beta 20 (start)") << 20.0f;
    QTest::newRow("beta 7.5") << 7.5f;
    QTest::newRow("beta 2 (end)") << 2.0f;
}

void TestAdaRound::regularizerGradient()
{
    QFETCH(float, beta);
    Rng r(7);
    std::vector<float> v(40), g(40);
    for (float& x : v) x = r.uniform(-2.2f, 2.2f); // h inside (0, 1): differentiable
    adaroundRegularizerGrad(v, beta, g);
    for (std::size_t i = 0; i < v.size(); ++i) {
        std::vector<float> a = v, b = v;
        const float h = 1e-3f;
        a[i] += h;
        b[i] -= h;
        const double num = (adaroundRegularizer(a, beta) - adaroundRegularizer(b, beta)) / (2.0 * h);
        QVERIFY2(std::fabs(num - g[i]) < kGradTol * std::max(1.0, std::fabs(num)) + 1e-4,
                 qPrintable(QString("v %1: numerical %2, analytic %3").arg(v[i]).arg(num).arg(g[i])));
    }
}

void TestAdaRound::betaIsAnnealedAfterWarmup()
{
    AdaRoundOptions o;
    o.iterations = 1000;
    QCOMPARE(adaroundBeta(0, 1000, o), 0.0f);   // warm-up: no regulariser
    QCOMPARE(adaroundBeta(199, 1000, o), 0.0f);
    QCOMPARE(adaroundBeta(200, 1000, o), 20.0f); // decay starts at 20
    QVERIFY(adaroundBeta(600, 1000, o) < 20.0f && adaroundBeta(600, 1000, o) > 2.0f);
    QVERIFY(std::fabs(adaroundBeta(999, 1000, o) - 2.0f) < 0.05f); // ... and ends at 2
}

void TestAdaRound::hardRoundingIsOnTheGrid_data()
{
    QTest::addColumn<int>("qmin");
    QTest::addColumn<int>("qmax");
    QTest::addColumn<int>("groups");
    QTest::newRow("int4 dense") << -8 << 7 << 1;
    QTest::newRow("int3 dense") << -4 << 3 << 1;
    QTest::newRow("int2 depthwise") << -2 << 1 << 12;
}

void TestAdaRound::hardRoundingIsOnTheGrid()
{
    QFETCH(int, qmin);
    QFETCH(int, qmax);
    QFETCH(int, groups);
    const std::size_t rows = 12, cols = groups == 1 ? 40 : 9;
    const TestLayer L = makeLayer(rows, cols, static_cast<std::size_t>(groups), 512, qmin, qmax, 3);
    AdaRoundOptions o;
    o.iterations = 200;
    const AdaRoundResult r = adaroundLayer(problemOf(L), o);
    QCOMPARE(r.weight.size(), L.w.size());
    for (std::size_t i = 0; i < L.w.size(); ++i) {
        const float s = L.qp.scale[i / cols];
        const float q = r.weight[i] / s;
        QVERIFY2(std::fabs(q - std::nearbyint(q)) < 1e-4f, "not on the grid");
        QVERIFY(std::nearbyint(q) >= qmin && std::nearbyint(q) <= qmax);
        const float nearest = std::clamp(std::nearbyint(L.w[i] / s), static_cast<float>(qmin), static_cast<float>(qmax));
        QVERIFY2(std::fabs(std::nearbyint(q) - nearest) <= 1.0f, "more than one step from nearest");
        // floor or ceil of w / s (clamped): AdaRound only chooses the direction
        const float fl = std::floor(L.w[i] / s);
        QVERIFY(std::nearbyint(q) == std::clamp(fl, float(qmin), float(qmax)) ||
                std::nearbyint(q) == std::clamp(fl + 1.0f, float(qmin), float(qmax)));
    }
    // exactly what fake-quantization with the same scales gives back (export checks this)
    std::vector<float> back(r.weight.size());
    fakeQuantize(r.weight, L.qp, back, {});
    for (std::size_t i = 0; i < back.size(); ++i) QCOMPARE(back[i], r.weight[i]);
}

void TestAdaRound::beatsNearest_data()
{
    QTest::addColumn<int>("qmin");
    QTest::addColumn<int>("qmax");
    QTest::addColumn<int>("groups");
    QTest::newRow("int4 dense") << -8 << 7 << 1;
    QTest::newRow("int3 dense") << -4 << 3 << 1;
    QTest::newRow("int3 depthwise") << -4 << 3 << 16;
}

void TestAdaRound::beatsNearest()
{
    QFETCH(int, qmin);
    QFETCH(int, qmax);
    QFETCH(int, groups);
    const std::size_t rows = 16, cols = groups == 1 ? 64 : 9;
    const TestLayer L = makeLayer(rows, cols, static_cast<std::size_t>(groups), 2048, qmin, qmax, 11);
    AdaRoundOptions o;
    o.iterations = 400;
    std::size_t reports = 0;
    const AdaRoundResult r = adaroundLayer(problemOf(L), o, [&](std::size_t, double) { return ++reports, true; });
    QCOMPARE(reports, std::size_t{400 / 50});
    qInfo("reconstruction loss: nearest %.5g, AdaRound %.5g (%.1f %% flipped)", r.lossNearest, r.lossAdaRound,
          100 * r.flippedFraction);
    QVERIFY2(r.lossAdaRound < 0.8 * r.lossNearest, "AdaRound should cut the layer's reconstruction error by 20 % or more");
    QVERIFY(r.flippedFraction > 0.0);
}

// Too few iterations can leave the learned rounding worse than nearest (mobilenet-tiny int3 at
// 50 iterations: 0.153 -> 0.205): the layer then keeps round-to-nearest, so the result is never
// worse than the rounding AdaRound refines.
void TestAdaRound::neverWorseThanNearest()
{
    std::size_t kept = 0, cases = 0;
    for (const std::size_t iterations : {1, 3, 10, 30})
        for (const std::uint64_t seed : {1, 2, 3, 4}) {
            const TestLayer L = makeLayer(16, 64, 1, 256, -4, 3, seed);
            AdaRoundOptions o;
            o.iterations = iterations;
            const AdaRoundResult r = adaroundLayer(problemOf(L), o);
            const double got = reconstructionLoss(problemOf(L), r.weight);
            QVERIFY2(got <= r.lossNearest * (1 + 1e-12),
                     qPrintable(QString("%1 iterations, seed %2: %3 against nearest %4").arg(iterations).arg(seed).arg(got).arg(r.lossNearest)));
            QCOMPARE(r.keptNearest, r.lossAdaRound > r.lossNearest);
            kept += r.keptNearest;
            ++cases;
        }
    qInfo("kept round-to-nearest in %zu of %zu short runs", kept, cases);
    QVERIFY(kept > 0); // the case the guard is for did occur
}

void TestAdaRound::deterministicAcrossThreads()
{
    const TestLayer L = makeLayer(48, 64, 1, 1024, -4, 3, 5);
    AdaRoundOptions o;
    o.iterations = 60;
    AdaRoundResult one, two;
    tbb::task_arena(1).execute([&] { one = adaroundLayer(problemOf(L), o); });
    tbb::task_arena(2).execute([&] { two = adaroundLayer(problemOf(L), o); });
    QVERIFY(one.weight == two.weight);
    QCOMPARE(one.lossAdaRound, two.lossAdaRound);
}

void TestAdaRound::badShapesAreConfigErrors()
{
    TestLayer L = makeLayer(4, 8, 1, 16, -8, 7, 1);
    AdaRoundProblem p = problemOf(L);
    p.samples = 17; // input and target hold 16
    QVERIFY_THROWS_EXCEPTION(ConfigError, adaroundLayer(p, AdaRoundOptions{}));
    p = problemOf(L);
    p.groups = 3; // 4 rows do not split in 3
    QVERIFY_THROWS_EXCEPTION(ConfigError, adaroundLayer(p, AdaRoundOptions{}));
}

namespace {

// lenet5, PTQ int3 with AdaRound (100 iterations), on the first trainImages/testImages of
// Fashion-MNIST.
struct AdaRoundRun {
    Dataset data;
    TrainConfig cfg;
    AdaRoundRun(std::size_t trainImages, std::size_t testImages, std::size_t calibImages)
    {
        DatasetOptions dopt;
        dopt.trainLimit = trainImages;
        dopt.testLimit = testImages;
        data = Dataset::load(dopt);
        cfg.model = "lenet5";
        cfg.epochs = 1;
        cfg.precision.strategy = Strategy::Ptq;
        cfg.precision.format = "int3";
        cfg.precision.rounding = "adaround";
        cfg.precision.adaroundIters = 100;
        cfg.precision.calibImages = calibImages;
    }
};

} // namespace

// Ctrl+C while AdaRound refines (after training): the run is a stopped one, so the CLI exits 130
// and exports nothing. It used to finish as done, and a half-refined model was exported.
void TestAdaRound::stopDuringAdaRoundIsAStoppedRun()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    const AdaRoundRun run(500, 100, 128);
    StopToken stop;
    struct StopOnFirstProgress : TrainObserver {
        StopToken* stop = nullptr;
        void onPtqProgress(const PtqProgressEvent&) override { stop->requestStop(); }
    } obs;
    obs.stop = &stop;
    Trainer t(run.cfg, run.data, &obs, &stop);
    const FinishEvent fin = t.run();
    QVERIFY(fin.stopped);
    QVERIFY(t.strategy().refiner()->adaround().size() < 5);
}

// PTQ int3 channel-wise from a briefly trained seed-cnn: every layer's reconstruction error goes
// down, progress is reported, and the integer export accepts the refined weights (on the grid).
void TestAdaRound::ptqAdaRoundExports()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    const AdaRoundRun run(2000, 500, 256);
    const Dataset& data = run.data;
    const TrainConfig& cfg = run.cfg;
    struct Progress : TrainObserver {
        std::size_t events = 0;
        std::set<std::string> layers;
        std::vector<LayerStats> stats;
        void onPtqProgress(const PtqProgressEvent& e) override
        {
            ++events;
            layers.insert(e.layer);
        }
        void onLayerStats(const std::vector<LayerStats>& s) override { stats = s; }
    } obs;
    Trainer t(cfg, data, &obs);
    const FinishEvent fin = t.run();
    QVERIFY(std::isfinite(fin.quantTestAccuracy));
    QCOMPARE(obs.layers.size(), std::size_t{5}); // conv1, conv2, fc1, fc2, fc3
    QVERIFY(obs.events >= 10);
    const PtqRefiner* r = t.strategy().refiner();
    QVERIFY(r);
    QCOMPARE(r->adaround().size(), std::size_t{5});
    for (const AdaRoundLayerReport& a : r->adaround())
        QVERIFY2(a.lossAdaRound <= a.lossNearest, qPrintable(QString::fromStdString(a.layer)));
    // The weights' statistics compare the FP32 weights with the refined grid (the SQNR chart and
    // histograms): an error above 0 and a finite SQNR, not the refined weights against themselves.
    QCOMPARE(obs.stats.size(), std::size_t{5});
    for (const LayerStats& st : obs.stats) {
        QVERIFY2(st.mse > 0.0 && std::isfinite(st.sqnrDb) && st.sqnrDb > 5.0,
                 qPrintable(QString("%1: mse %2, SQNR %3 dB").arg(QString::fromStdString(st.layer)).arg(st.mse).arg(st.sqnrDb)));
        std::uint64_t counted = 0;
        for (const std::uint64_t c : st.quantHist) counted += c;
        QVERIFY(counted > 0);
    }
    const auto dir = std::filesystem::temp_directory_path() / "qs_tst_adaround";
    std::filesystem::create_directories(dir);
    const ExportSummary s = exportModel(t, (dir / "m.qsm").string());
    // the file gives back the accuracy the refined simulation measured
    QVERIFY2(std::fabs(s.accuracy - fin.quantTestAccuracy) < 0.01,
             qPrintable(QString("file %1, simulation %2").arg(s.accuracy).arg(fin.quantTestAccuracy)));
    std::filesystem::remove_all(dir);
}

// PTQ with AdaRound and bias correction after training, on models whose training pass defers a
// BatchNorm's output into the convolution reading it (resnet8, with its residual joins, and
// seed-cnn-bn): every convolution and dense layer is refined and corrected. The refinement read
// the fused pass's empty activations and crashed (a new user's `train --model resnet8 --strategy
// ptq --bias-correction`, exit 139).
void TestAdaRound::refinesModelsWithBatchNorm()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    for (const auto& [model, layers] : {std::pair<const char*, std::size_t>{"resnet8", 10}, {"seed-cnn-bn", 4}}) {
        AdaRoundRun run(256, 100, 64);
        run.cfg.model = model;
        run.cfg.precision.format = "int4";
        run.cfg.precision.adaroundIters = 5;
        run.cfg.precision.biasCorrection = true;
        Trainer t(run.cfg, run.data);
        const FinishEvent fin = t.run();
        QVERIFY2(std::isfinite(fin.quantTestAccuracy), model);
        const PtqRefiner* r = t.strategy().refiner();
        QVERIFY(r);
        QCOMPARE(r->adaround().size(), layers);
        QCOMPARE(r->biasCorrection().size(), layers);
        for (const BiasCorrectionReport& b : r->biasCorrection())
            QVERIFY2(std::isfinite(b.meanAbsShift), qPrintable(QString::fromStdString(b.layer)));
    }
}

QTEST_GUILESS_MAIN(TestAdaRound)
#include "tst_adaround.moc"
