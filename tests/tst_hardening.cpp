// Hardening (issue 13): non-finite values never reach a scale, a zero point, a model or a file;
// dynamic loss scaling has a floor and a run whose steps are all skipped stops; BatchNorm folding
// with gamma = 0 or running_var = 0 stays finite; an int32 bias that would overflow at
// s_in * s_w raises the weight scale instead of saturating.
#include "onnx/export_fixtures.h"

#include "infer/model_runner.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/activations.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/model_zoo.h"
#include "quant/observer.h"
#include "quant/quantize.h"
#include "quant/weight_quantizer.h"
#include "train/float_sim.h"
#include "train/trainer.h"
#include "util/errors.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <cmath>
#include <limits>

using namespace quantscope;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Slot layouts: name -> (slots, rowLength, slotLength) for a tensor of 2 rows of 4.
struct Layout {
    std::size_t count, row, len;
};
Layout layoutOf(const QString& g)
{
    if (g == QLatin1String("tensor")) return {1, 0, 0};
    if (g == QLatin1String("channel")) return {2, 4, 4};
    return {4, 4, 2}; // group:2
}

// Passes dy through as +inf: every gradient below it overflows, the forward pass is untouched.
class GradBomb final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::Dropout; }
    Shape outputShape(const Shape& in) const override { return in; }
    void forward(const Tensor& x, Tensor& y, const RunContext&) override { y = x; }
    void backward(const Tensor&, const Tensor&, const Tensor& dy, Tensor& dx, bool needInputGrad) override
    {
        if (!needInputGrad) return;
        dx.resize(dy.shape());
        dx.fill(kInf);
    }
};

bool allFiniteValues(const std::vector<float>& v)
{
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

} // namespace

class TestHardening : public QObject {
    Q_OBJECT
private slots:
    void observersSkipNonFinite_data();
    void observersSkipNonFinite();
    void observerLongRunsMatchScalarRule_data();
    void observerLongRunsMatchScalarRule();
    void infinityInUint8Range();
    void overflowingRangeIsAnError_data();
    void overflowingRangeIsAnError();
    void chooseQParamsScaleIsFiniteAndPositive_data();
    void chooseQParamsScaleIsFiniteAndPositive();
    void layerStatsCountNonFinite();
    void exportRefusesNonFiniteParameter();
    void lossScaleHasAFloor();
    void runOfSkippedStepsStops();
    void bnFoldingWithZeroGammaOrVarStaysFinite();
    void tinyWeightsLargeBiasRaiseTheWeightScale();
};

void TestHardening::observersSkipNonFinite_data()
{
    QTest::addColumn<QString>("calibration");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("format");
    for (const char* c : {"minmax", "moving-average", "percentile", "mse"})
        for (const char* g : {"tensor", "channel", "group"})
            for (const char* f : {"uint8", "int8", "int4"})
                QTest::addRow("%s/%s/%s", c, g, f) << QString::fromLatin1(c) << QString::fromLatin1(g) << QString::fromLatin1(f);
}

// An observer fed values with +-inf and NaN gives, slot by slot, exactly the scale and zero point of
// an observer fed only that slot's finite values, and counts what it skipped.
void TestHardening::observersSkipNonFinite()
{
    QFETCH(QString, calibration);
    QFETCH(QString, granularity);
    QFETCH(QString, format);
    const Calibration cal = parseCalibration(calibration.toStdString());
    const NumberFormat& f = findFormat(format.toStdString());
    const Layout L = layoutOf(granularity);
    // Two batches of 2 rows x 4; the second group of row 1 in batch 1 is all non-finite.
    const std::vector<std::vector<float>> batches = {
        {-1.0f, 2.0f, kInf, 0.5f, kNaN, -3.0f, -kInf, kNaN},
        {0.25f, kNaN, 1.5f, -0.75f, 4.0f, -kInf, 0.1f, -2.0f},
    };
    RangeObserver obs(cal, L.count, L.row, L.len);
    std::uint64_t bad = 0;
    for (const auto& b : batches) {
        obs.observe(b);
        for (float v : b) bad += std::isfinite(v) ? 0 : 1;
    }
    QCOMPARE(obs.nonFinite(), bad);
    const QuantParams p = obs.params(f);
    QCOMPARE(p.numSlots(), L.count);
    for (std::size_t s = 0; s < L.count; ++s) {
        QVERIFY2(std::isfinite(p.scale[s]) && p.scale[s] > 0.0f, qPrintable(QString::number(p.scale[s])));
        QVERIFY(p.zeroPoint[s] >= f.qmin && p.zeroPoint[s] <= f.qmax);
        RangeObserver one(cal);
        for (const auto& b : batches) {
            std::vector<float> finite;
            for (std::size_t i = 0; i < b.size(); ++i)
                if ((L.count == 1 || p.slotOf(i) == s) && std::isfinite(b[i])) finite.push_back(b[i]);
            one.observe(finite);
        }
        const QuantParams q = one.params(f);
        QCOMPARE(p.scale[s], q.scale[0]);
        QCOMPARE(p.zeroPoint[s], q.zeroPoint[0]);
    }
}

void TestHardening::observerLongRunsMatchScalarRule_data()
{
    QTest::addColumn<int>("n");
    QTest::addColumn<int>("slotCount"); // 1: per tensor; else rows of n / slots values, one slot each
    QTest::newRow("per-tensor 1003") << 1003 << 1;
    QTest::newRow("per-tensor 16") << 16 << 1;
    QTest::newRow("per-tensor 40000 (parallel chunks)") << 40000 << 1;
    QTest::newRow("per-channel 6 x 333") << 1998 << 6;
}

// Runs long enough for the vectorised min/max (16 lanes at a time), with +-inf and NaN in many
// lanes and signed zeros at the extremes: each slot's range is the min/max of its finite values as
// the scalar rule takes them (the first of equal values kept: +0 before -0), and the skipped
// values are counted.
void TestHardening::observerLongRunsMatchScalarRule()
{
    QFETCH(int, n);
    QFETCH(int, slotCount);
    const std::size_t N = static_cast<std::size_t>(n), S = static_cast<std::size_t>(slotCount), row = N / S;
    std::vector<float> x(N);
    Rng rng(17);
    std::uint64_t bad = 0;
    for (std::size_t i = 0; i < N; ++i) {
        x[i] = rng.uniform(-3.0f, 5.0f);
        if (i % 37 == 5) x[i] = kInf;
        if (i % 41 == 9) x[i] = -kInf;
        if (i % 29 == 13) x[i] = kNaN;
    }
    // The last slot holds no negatives, and +0 before -0: its minimum is +0 (the scalar rule keeps
    // the first of equal values; vminps with the operands the other way round would give -0).
    const std::size_t last = (S - 1) * row;
    for (std::size_t i = last; i < N; ++i)
        if (std::isfinite(x[i])) x[i] = std::fabs(x[i]);
    x[last] = 0.0f;
    x[last + 16 * (row / 32)] = -0.0f; // the same lane of the 16 as +0
    for (float v : x) bad += std::isfinite(v) ? 0 : 1;
    RangeObserver obs(Calibration::MinMax, S, S == 1 ? 0 : row);
    obs.observe(x);
    QCOMPARE(obs.nonFinite(), bad);
    for (std::size_t s = 0; s < S; ++s) {
        float mn = kInf, mx = -kInf;
        const std::size_t b = S == 1 ? 0 : s * row, e = S == 1 ? N : b + row;
        for (std::size_t i = b; i < e; ++i)
            if (std::isfinite(x[i])) {
                mn = x[i] < mn ? x[i] : mn;
                mx = x[i] > mx ? x[i] : mx;
            }
        QCOMPARE(obs.minValues()[s], mn);
        QCOMPARE(obs.maxValues()[s], mx);
        QCOMPARE(std::signbit(obs.minValues()[s]), std::signbit(mn));
    }
}

// The first case: [-1, 2, +inf] for uint8 is the range [-1, 2].
void TestHardening::infinityInUint8Range()
{
    const NumberFormat& u8 = findFormat("uint8");
    RangeObserver obs(Calibration::MinMax);
    const std::vector<float> x = {-1.0f, 2.0f, kInf};
    obs.observe(x);
    const QuantParams p = obs.params(u8);
    const ScaleZeroPoint want = chooseQParams(-1.0f, 2.0f, u8);
    QCOMPARE(p.scale[0], want.scale);
    QCOMPARE(p.zeroPoint[0], want.zeroPoint);
    QCOMPARE(obs.nonFinite(), std::uint64_t{1});
    qInfo("[-1, 2, +inf] uint8: scale %g, zero point %d, %llu non-finite skipped", static_cast<double>(p.scale[0]), p.zeroPoint[0],
          static_cast<unsigned long long>(obs.nonFinite()));
    // Quantizing with it: the finite values survive (within half a step), +inf saturates to the top.
    std::vector<float> y(x.size());
    fakeQuantize(x, p, y, {});
    QVERIFY(std::fabs(y[0] - x[0]) <= p.scale[0] / 2);
    QVERIFY(std::fabs(y[1] - x[1]) <= p.scale[0] / 2);
    QCOMPARE(y[2], p.clipHigh(0));
}

void TestHardening::overflowingRangeIsAnError_data()
{
    QTest::addColumn<QString>("calibration");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("format");
    for (const char* c : {"minmax", "moving-average", "percentile", "mse"})
        for (const char* g : {"tensor", "channel", "group"})
            for (const char* f : {"uint8", "int8"})
                QTest::addRow("%s/%s/%s", c, g, f) << QString::fromLatin1(c) << QString::fromLatin1(g) << QString::fromLatin1(f);
}

// The second case: [-3.4e38, 3.4e38] is wider than float holds. For an affine grid
// (uint8) a NumericError names the tensor; a symmetric one (int8) has a finite scale.
void TestHardening::overflowingRangeIsAnError()
{
    QFETCH(QString, calibration);
    QFETCH(QString, granularity);
    QFETCH(QString, format);
    const Layout L = layoutOf(granularity);
    RangeObserver obs(parseCalibration(calibration.toStdString()), L.count, L.row, L.len);
    obs.setName("layer 'fc9' weight");
    // Every slot (a pair of neighbours) holds both extremes.
    const std::vector<float> x = {-3.4e38f, 3.4e38f, 0.0f, 1.0f, 3.4e38f, -3.4e38f, -1.0f, 0.0f};
    const std::vector<float> tensorCase = {-3.4e38f, 3.4e38f};
    if (L.count == 1) obs.observe(tensorCase);
    else if (L.len == 2) obs.observe(x);
    else obs.observe(x); // channel: each row holds both extremes
    if (format == QLatin1String("int8")) {
        // A symmetric grid takes max |x| alone, which fits: PyTorch's scale, 3.4e38 / 127.5
        // (tester 13: refused as 'wider than float32' before). The other calibrations choose
        // smaller ones, never inf.
        const QuantParams p = obs.params(findFormat("int8"));
        for (float sc : p.scale) QVERIFY2(std::isfinite(sc) && sc > 0.0f, qPrintable(QString::number(double(sc))));
        if (calibration == QLatin1String("minmax")) QCOMPARE(*std::max_element(p.scale.begin(), p.scale.end()), 3.4e38f / 127.5f);
        return;
    }
    try {
        (void)obs.params(findFormat(format.toStdString()));
        QFAIL("an overflowing range gave a scale");
    } catch (const NumericError& e) {
        const QString msg = QString::fromUtf8(e.what());
        QVERIFY2(msg.contains(QLatin1String("fc9")) && msg.contains(QLatin1String("wider than float32")), e.what());
        if (QTest::currentDataTag() == QLatin1String("minmax/tensor/uint8")) qInfo("%s", e.what());
    }
}

void TestHardening::chooseQParamsScaleIsFiniteAndPositive_data()
{
    QTest::addColumn<float>("lo");
    QTest::addColumn<float>("hi");
    QTest::addColumn<bool>("throws");
    QTest::newRow("zero range") << 0.0f << 0.0f << false;
    QTest::newRow("denormal") << -1e-45f << 1e-45f << false;
    QTest::newRow("half of float's range") << -1.7e38f << 1.6e38f << false;
    QTest::newRow("max positive only") << 0.0f << 3.4e38f << false;
    QTest::newRow("wider than float") << -3.4e38f << 3.4e38f << true;
    QTest::newRow("+inf end") << -1.0f << kInf << true;
    QTest::newRow("-inf end") << -kInf << 1.0f << true;
    QTest::newRow("NaN end") << kNaN << 1.0f << true;
}

void TestHardening::chooseQParamsScaleIsFiniteAndPositive()
{
    QFETCH(float, lo);
    QFETCH(float, hi);
    QFETCH(bool, throws);
    for (const char* name : {"uint8", "int8", "int4", "uint16", "int2"}) {
        const NumberFormat& f = findFormat(name);
        // A range whose width overflows has no affine scale; a symmetric grid takes max |x|
        // alone, as PyTorch does (tester 13).
        const bool wideOnly = std::isfinite(lo) && std::isfinite(hi);
        if (throws && !(wideOnly && f.symmetric)) {
            QVERIFY_THROWS_EXCEPTION(NumericError, chooseQParams(lo, hi, f));
            continue;
        }
        const ScaleZeroPoint sz = chooseQParams(lo, hi, f);
        QVERIFY2(std::isfinite(sz.scale) && sz.scale >= kScaleEps, name);
        QVERIFY(sz.zeroPoint >= f.qmin && sz.zeroPoint <= f.qmax);
    }
}

// LayerStats: non-finite weights are counted, left out of ranges and histograms; scales stay finite.
void TestHardening::layerStatsCountNonFinite()
{
    for (const char* g : {"global", "layer", "tensor", "channel", "group:2"}) {
        Param w, b;
        w.name = "weight";
        w.value = Tensor({2, 4}, {0.5f, -kInf, 0.25f, kNaN, -1.0f, 0.75f, kInf, 0.1f});
        b.name = "bias";
        b.value = Tensor({2}, {0.1f, -0.2f});
        const std::vector<WeightTarget> targets = {{"fc1", &w, &b}};
        WeightQuantizer wq(findFormat("int8"), parseGranularity(g), Calibration::MinMax, Rounding::Nearest);
        wq.apply(targets, 1);
        const std::vector<LayerStats> st = wq.stats(1, targets);
        QCOMPARE(st.size(), std::size_t{1});
        QCOMPARE(st[0].nonFinite, std::uint64_t{3});
        QVERIFY2(allFiniteValues(st[0].scales), g);
        QCOMPARE(st[0].tensorMin, -1.0f);
        QCOMPARE(st[0].tensorMax, 0.75f);
        std::uint64_t counted = 0;
        for (std::uint64_t c : st[0].fp32Hist) counted += c;
        QCOMPARE(counted, std::uint64_t{5});
        QCOMPARE(st[0].overflowed, std::uint64_t{0});
    }
    // Finite weights that a format overflows (fp8-e5m2 past 57344, fp16 past 65504: to inf) are
    // counted apart from the weights that were inf already; fp8-e4m3 saturates at 448 and bf16
    // holds them (tester 13: the PTQ said nothing).
    for (const auto& [format, over] : {std::pair{"fp8-e5m2", 2}, std::pair{"fp16", 2}, std::pair{"fp8-e4m3", 0}, std::pair{"bf16", 0}}) {
        Param w;
        w.name = "weight";
        w.value = Tensor({2, 3}, {70000.0f, 0.5f, -kInf, -1e5f, 0.25f, 100.0f});
        const std::vector<WeightTarget> targets = {{"fc1", &w, nullptr}};
        WeightQuantizer wq(findFormat(format), parseGranularity("tensor"), Calibration::MinMax, Rounding::Nearest);
        wq.apply(targets, 1);
        const std::vector<LayerStats> st = wq.stats(1, targets);
        QCOMPARE(st[0].nonFinite, std::uint64_t{1});
        QVERIFY2(st[0].overflowed == std::uint64_t(over), format);
    }
}

// Export (integer and FP32, .qsm and ONNX) refuses a parameter that is inf or NaN, naming it.
void TestHardening::exportRefusesNonFiniteParameter()
{
    const Dataset data = fixtures::syntheticDataset(64, 16, 4, 4);
    auto expectRefusal = [](auto&& fn, const char* what) {
        try {
            fn();
            QFAIL(qPrintable(QStringLiteral("exported a non-finite parameter: %1").arg(QLatin1String(what))));
        } catch (const Error& e) {
            const QString msg = QString::fromUtf8(e.what());
            QVERIFY2(msg.contains(QLatin1String("fc1")) && msg.contains(QLatin1String("non-finite")), e.what());
        }
    };
    {
        auto model = fixtures::tinyModel();
        model->params()[0]->value[3] = kNaN; // fc1.weight
        expectRefusal([&] { (void)fixtures::quantize(std::move(model), data, "int8"); }, "int8 weight");
    }
    {
        auto model = fixtures::tinyModel();
        model->params()[1]->value[2] = kInf; // fc1.bias
        expectRefusal([&] { (void)fixtures::quantize(std::move(model), data, "int8"); }, "int8 bias");
    }
    {
        auto model = fixtures::tinyModel();
        model->params()[0]->value[0] = -kInf;
        expectRefusal([&] { (void)exportFloatModel(*model, "tiny", data.normalization, data.classNames); }, "fp32 model");
        // A model assembled by hand with a non-finite value: both writers refuse it.
        model->params()[0]->value[0] = 0.0f;
        ExportedModel m = exportFloatModel(*model, "tiny", data.normalization, data.classNames);
        for (StoredLayer& l : m.layers)
            if (l.name == "fc1") l.tensors.at(0).values.at(5) = kNaN;
        expectRefusal([&] { (void)encodeQsm(m); }, "fp32 .qsm");
        expectRefusal([&] { (void)encodeOnnx(m); }, "fp32 .onnx");
    }
}

void TestHardening::lossScaleHasAFloor()
{
    Param p;
    p.value = Tensor({4}, {0.0f, 0.0f, 0.0f, 0.0f});
    p.grad = Tensor({4}, {1.0f, kInf, 0.0f, 0.0f});
    const std::vector<Param*> params = {&p};
    LossScaler scaler;
    for (int i = 0; i < 400; ++i) QVERIFY(!scaler.unscaleOrSkip(params, false));
    QCOMPARE(scaler.scale(), kMinLossScale);
    QCOMPARE(scaler.skippedSteps(), std::size_t{400});
    // Growth: after kLossScaleGrowthInterval clean steps the scale doubles, not before.
    p.grad = Tensor({4}, {1.0f, 2.0f, 3.0f, 4.0f});
    for (std::size_t i = 0; i + 1 < kLossScaleGrowthInterval; ++i) QVERIFY(scaler.unscaleOrSkip(params, false));
    QCOMPARE(scaler.scale(), kMinLossScale);
    QVERIFY(scaler.unscaleOrSkip(params, false));
    QCOMPARE(scaler.scale(), 2.0f * kMinLossScale);
}

// Mixed precision where every gradient overflows: the run stops after maxSkippedSteps with
// "training diverged: non-finite gradients for N steps".
void TestHardening::runOfSkippedStepsStops()
{
    const Dataset data = fixtures::syntheticDataset(512, 16, 4, 4);
    for (std::size_t limit : {std::size_t{50}, std::size_t{7}}) {
        TrainConfig cfg;
        cfg.model = "bomb";
        cfg.batchSize = 4; // 128 steps per epoch
        cfg.precision.strategy = Strategy::Mixed;
        cfg.precision.format = "fp16";
        cfg.maxSkippedSteps = limit;
        cfg.modelFactory = [](const Shape&, std::size_t, std::uint64_t) {
            auto m = std::make_unique<Model>("bomb", Shape{1, 4, 4});
            m->add(std::make_unique<Flatten>("flatten"));
            m->add(std::make_unique<Linear>("fc1", 16, 10));
            m->add(std::make_unique<GradBomb>("bomb"));
            m->add(std::make_unique<LogSoftmax>("log_softmax"));
            m->initParams(3);
            return m;
        };
        Trainer trainer(cfg, data);
        try {
            (void)trainer.run();
            QFAIL("a run whose every step was skipped did not stop");
        } catch (const NumericError& e) {
            const QString want = QStringLiteral("training diverged: non-finite gradients for %1 steps").arg(limit);
            QVERIFY2(QString::fromUtf8(e.what()).startsWith(want), e.what());
            qInfo("%s", e.what());
        }
        QCOMPARE(trainer.strategy().skippedSteps(), limit);
        // Halved on every skipped step, down to the floor.
        QCOMPARE(trainer.strategy().reportedLossScale(),
                 std::max(static_cast<double>(kMinLossScale), kInitialLossScale / std::pow(2.0, static_cast<double>(limit))));
    }
}

// QAT with BatchNorm folded: a channel with gamma = 0 and one with running_var = 0 train, evaluate
// and export with finite numbers.
void TestHardening::bnFoldingWithZeroGammaOrVarStaysFinite()
{
    const Dataset data = fixtures::syntheticDataset(256, 64, 8, 8);
    for (bool freeze : {false, true}) {
        TrainConfig cfg;
        cfg.model = "conv-bn";
        cfg.batchSize = 32;
        cfg.precision.strategy = Strategy::Qat;
        cfg.precision.bnFreezeEpoch = freeze ? 1 : 0;
        cfg.modelFactory = [](const Shape&, std::size_t, std::uint64_t) {
            auto m = std::make_unique<Model>("conv-bn", Shape{1, 8, 8});
            m->add(std::make_unique<Conv2d>("conv1", 1, 4, 3, 1, 1));
            m->add(std::make_unique<BatchNorm2d>("bn1", 4));
            m->add(std::make_unique<ReLU>("relu1"));
            m->add(std::make_unique<Flatten>("flatten"));
            m->add(std::make_unique<Linear>("fc1", 4 * 8 * 8, 10));
            m->add(std::make_unique<LogSoftmax>("log_softmax"));
            m->initParams(4);
            auto* bn = dynamic_cast<BatchNorm2d*>(&m->layer(1));
            bn->gamma().value[0] = 0.0f;
            bn->runningVar()[1] = 0.0f;
            bn->runningVar()[2] = 0.0f;
            bn->gamma().value[2] = 0.0f;
            return m;
        };
        Trainer trainer(cfg, data);
        const FinishEvent fin = trainer.run();
        QVERIFY2(std::isfinite(fin.testLoss), freeze ? "frozen BN" : "live BN");
        QVERIFY(std::isfinite(fin.quantTestAccuracy));
        for (Param* p : trainer.model().params()) QVERIFY2(allFiniteValues(p->value.values()), p->name.c_str());
        const ExportedModel m = exportedModelOf(trainer);
        QVERIFY(m.layers.at(0).bnFolded);
        QVERIFY(!encodeQsm(m).empty());
        ModelRunner runner(m);
        std::vector<std::int32_t> pred(data.test.size());
        std::vector<float> out(data.test.size() * 10);
        runner.predict(data.test.pixels.data(), data.test.size(), pred.data(), out.data());
        QVERIFY(allFiniteValues(out));
    }
}

// fc1 with |w| <= 1e-7 and biases of +-5: at s_in * s_w the int32 bias would be ~1e10. The export
// raises fc1's weight scale until the bias fits (and says so); the integer engine runs the file and
// agrees with the FP32 model.
void TestHardening::tinyWeightsLargeBiasRaiseTheWeightScale()
{
    const Dataset data = fixtures::syntheticDataset(128, 64, 4, 4);
    for (const char* g : {"channel", "tensor"}) {
        auto model = fixtures::tinyModel();
        Param* w = model->params()[0];
        Param* b = model->params()[1];
        for (std::size_t i = 0; i < w->value.numel(); ++i) w->value[i] = (i % 3 == 0 ? 1e-7f : -0.5e-7f);
        for (std::size_t i = 0; i < b->value.numel(); ++i) b->value[i] = (i % 2 ? 5.0f : -4.0f) + 0.25f * static_cast<float>(i);
        std::vector<float> fp32Out(data.test.size() * 10);
        {
            ExportedModel f = exportFloatModel(*model, "tiny", data.normalization, data.classNames);
            ModelRunner fr(f);
            std::vector<std::int32_t> pred(data.test.size());
            fr.predict(data.test.pixels.data(), data.test.size(), pred.data(), fp32Out.data());
        }
        fixtures::Quantized q = fixtures::quantize(std::move(model), data, "int8", g);
        const StoredLayer* fc1 = nullptr;
        for (const StoredLayer& l : q.exported.layers)
            if (l.name == "fc1") fc1 = &l;
        QVERIFY(fc1);
        const StoredTensor* bias = fc1->tensor("bias");
        QVERIFY(bias && bias->encoding == TensorEncoding::Int);
        const std::vector<float> back = bias->dequantized();
        for (std::size_t c = 0; c < back.size(); ++c) {
            const float step = bias->scales[bias->layout == ScaleLayout::Tensor ? 0 : c];
            // What the simulation computed with (the bias fake-quantized), within half a step: no saturation.
            QVERIFY2(std::fabs(back[c] - b->forwardValue()[c]) <= 0.5f * step + 1e-6f, g);
            QVERIFY(std::llabs(bias->q[c]) <= (1ll << 30));
        }
        bool noted = false;
        for (const std::string& n : q.exported.notes) {
            noted = noted || n.find("fc1") != std::string::npos;
            qInfo("%s: %s", g, n.c_str());
        }
        QVERIFY2(noted, "the raised scale is not reported");
        // The file reads back and runs on the integer engine, close to the FP32 model.
        const ExportedModel back2 = decodeQsm(encodeQsm(q.exported), "memory");
        ModelRunner runner(back2);
        QVERIFY2(runner.isInteger(), runner.description().c_str());
        std::vector<std::int32_t> pred(data.test.size());
        std::vector<float> out(data.test.size() * 10);
        runner.predict(data.test.pixels.data(), data.test.size(), pred.data(), out.data());
        double worst = 0.0;
        for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(out[i] - fp32Out[i])));
        QVERIFY2(worst < 0.25, qPrintable(QStringLiteral("%1: largest log-probability difference %2").arg(QLatin1String(g)).arg(worst)));
        // The engine does not saturate either: a (foreign) file whose float bias cannot be an int32 at
        // s_in * s_w is refused, naming the layer.
        ExportedModel foreign = back2;
        for (StoredLayer& l : foreign.layers)
            if (l.name == "fc1") {
                StoredTensor bf;
                bf.name = "bias";
                bf.shape = l.tensors.at(1).shape;
                bf.values.assign(bf.shape.at(0), 1000.0f);
                l.tensors.at(1) = bf;
            }
        RunnerOptions integerOnly;
        integerOnly.kind = RunnerKind::Integer;
        try {
            ModelRunner r(foreign, integerOnly);
            QFAIL("the integer engine took a bias that does not fit its int32 accumulator");
        } catch (const ConfigError& e) {
            QVERIFY2(QString::fromUtf8(e.what()).contains(QLatin1String("fc1")), e.what());
            qInfo("engine: %s", e.what());
        }
    }
}

QTEST_APPLESS_MAIN(TestHardening)
#include "tst_hardening.moc"
