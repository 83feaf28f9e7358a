// The integer engine: every fast kernel (AVX-512 VNNI, AVX2) against its scalar reference twin,
// the fixed-point requantization against exact arithmetic, and whole models against the
// fake-quant simulation they were exported from (argmax agreement >= 99.5% on the test set;
// where they disagree the first diverging layer is reported), across kernels and thread counts.
#include "infer/int_engine.h"
#include "infer/int_gemm.h"
#include "infer/model_runner.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include <QtTest>

#include "slow_tests.h"

#include <cmath>
#include <optional>

using namespace quantscope;

namespace {

constexpr double kMinArgmaxAgreement = 0.995; // issue 5: engine vs fake-quant on the test set
constexpr double kMaxAccuracyGapPoints = 0.3; // top-1 of engine vs fake-quant, percentage points
constexpr int kRequantTolerance = 1;         // fixed point vs exact rounding, in output steps
constexpr double kTieMargin = 1e-6;          // away from .5 the fixed-point result is exact

std::vector<Isa> fastIsas()
{
    std::vector<Isa> v;
    for (Isa i : {Isa::Avx2, Isa::Avx512Vnni})
        if (isaSupported(i)) v.push_back(i);
    return v;
}

struct Divergence {
    std::string layer;
    std::size_t differing = 0, total = 0;
    int maxDiff = 0;
};

// Runs one image through the engine (integers at every point) and through the float model with
// the simulation's hooks, and returns the first quantization point where their integers differ.
std::optional<Divergence> firstDivergence(const IntEngine& engine, Model& model, LayerHooks* sim, const Dataset& data,
                                          const LabeledImages& set, std::size_t index)
{
    const std::vector<PointTrace> trace = engine.trace(set.pixels.data() + index * set.imageBytes());
    Tensor x;
    std::vector<std::int32_t> y;
    data.makeBatch(set, index, index + 1, x, y);
    RunContext ctx;
    model.forward(x, ctx, sim);
    for (const PointTrace& p : trace) {
        std::size_t act = 0;
        if (p.layer != "input") {
            for (std::size_t i = 0; i < model.size(); ++i)
                if (model.layer(i).name() == p.layer) act = i + 1;
            if (act == 0) continue;
        }
        const Tensor& a = model.activation(act);
        if (a.numel() != p.q.size()) return Divergence{p.layer + " (shape differs)", p.q.size(), p.q.size(), 0};
        Divergence d{p.layer, 0, p.q.size(), 0};
        for (std::size_t i = 0; i < p.q.size(); ++i) {
            const int qs = static_cast<int>(std::nearbyint(a[i] / p.quant.scale)) + p.quant.zeroPoint;
            const int diff = std::abs(qs - p.q[i]);
            if (diff) {
                ++d.differing;
                d.maxDiff = std::max(d.maxDiff, diff);
            }
        }
        if (d.differing) return d;
    }
    return std::nullopt;
}

struct Comparison {
    double agreement = 0, engineAcc = 0, simAcc = 0;
    std::vector<std::int32_t> enginePred;
    QString report;
};

Comparison compareWithSim(Model& model, QuantSim& sim, const ExportedModel& em, const Dataset& data, Isa isa)
{
    Comparison c;
    std::vector<std::int32_t> simPred;
    c.simAcc = evaluate(model, data, data.test, 500, &sim, &simPred).accuracy;
    EngineOptions eo;
    eo.isa = isa;
    IntEngine engine(em, eo);
    c.enginePred.assign(data.test.size(), -1);
    engine.run(data.test.pixels.data(), data.test.size(), nullptr, c.enginePred.data());
    std::size_t same = 0, correct = 0, reported = 0;
    for (std::size_t i = 0; i < simPred.size(); ++i) {
        correct += c.enginePred[i] == data.test.labels[i];
        if (c.enginePred[i] == simPred[i]) {
            ++same;
            continue;
        }
        if (reported++ < 3) {
            const auto d = firstDivergence(engine, model, &sim, data, data.test, i);
            c.report += QString("image %1: engine %2, fake-quant %3; first diverging layer: %4\n")
                            .arg(i)
                            .arg(c.enginePred[i])
                            .arg(simPred[i])
                            .arg(d ? QString("%1 (%2 of %3 values, max %4 steps)").arg(QString::fromStdString(d->layer)).arg(d->differing).arg(d->total).arg(d->maxDiff)
                                   : QString("none (ties in the class scores)"));
        }
    }
    c.agreement = static_cast<double>(same) / static_cast<double>(simPred.size());
    c.engineAcc = static_cast<double>(correct) / static_cast<double>(simPred.size());
    return c;
}

} // namespace

class TestInfer : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void kernelsMatchScalarTwin_data();
    void kernelsMatchScalarTwin();
    void requantizeIsExactRounding();
    void syntheticModelsMatchFakeQuant_data();
    void syntheticModelsMatchFakeQuant();
    void floatInputMatchesPixels();
    void unsupportedModelsFallBack_data();
    void unsupportedModelsFallBack();
    void qatFashionMatchesFakeQuant_data();
    void qatFashionMatchesFakeQuant();

private:
    Dataset m_synthetic;
};

void TestInfer::initTestCase()
{
    m_synthetic = fixtures::syntheticDataset(256, 300);
    qInfo("kernels on this CPU: best %s", isaName(bestIsa()));
}

void TestInfer::kernelsMatchScalarTwin_data()
{
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("N");
    QTest::addColumn<int>("nseg");
    QTest::addColumn<int>("segLen");
    QTest::addColumn<int>("segStride"); // 0: rows packed one after another
    QTest::addColumn<double>("multiplier");
    QTest::addColumn<bool>("relu");
    QTest::addColumn<int>("zp");
    QTest::newRow("conv 32->64 3x3 on 26x26") << 576 << 64 << 3 << 96 << 26 * 32 << 2e-3 << true << 0;
    QTest::newRow("conv 1->32 3x3, im2col K 12") << 676 << 32 << 1 << 12 << 0 << 5e-3 << true << 0;
    QTest::newRow("dense 9216->128") << 16 << 128 << 1 << 9216 << 0 << 1e-4 << true << 0;
    QTest::newRow("dense 128->10, zp 131") << 13 << 10 << 1 << 128 << 0 << 3e-3 << false << 131;
    QTest::newRow("tails 7x33") << 7 << 33 << 2 << 20 << 44 << 1e-2 << false << 128;
    QTest::newRow("one row, one column") << 1 << 1 << 1 << 4 << 0 << 0.5 << false << 7;
    QTest::newRow("multiplier above 1") << 9 << 17 << 1 << 8 << 0 << 3.7 << false << 100;
    QTest::newRow("tiny multiplier") << 9 << 84 << 1 << 120 << 0 << 1e-12 << false << 3;
    QTest::newRow("lenet 84 outputs, relu zp 5") << 31 << 84 << 1 << 120 << 0 << 4e-3 << true << 5;
}

void TestInfer::kernelsMatchScalarTwin()
{
    QFETCH(int, M);
    QFETCH(int, N);
    QFETCH(int, nseg);
    QFETCH(int, segLen);
    QFETCH(int, segStride);
    QFETCH(double, multiplier);
    QFETCH(bool, relu);
    QFETCH(int, zp);
    const std::size_t K = static_cast<std::size_t>(nseg * segLen);
    Rng rng(static_cast<std::uint64_t>(M * 131 + N * 7 + K));
    // A: rows at arbitrary offsets of a buffer of random bytes (full 0..255 range).
    const std::size_t rowSpan = segStride ? static_cast<std::size_t>((nseg - 1) * segStride + segLen) : K;
    std::vector<std::uint32_t> rowOff(static_cast<std::size_t>(M));
    for (int r = 0; r < M; ++r) rowOff[static_cast<std::size_t>(r)] = static_cast<std::uint32_t>(r * (segStride ? 32 : K));
    const std::size_t extent = rowOff.back() + rowSpan;
    std::vector<std::uint8_t> a(extent);
    for (auto& v : a) v = static_cast<std::uint8_t>(rng.below(256));
    std::vector<std::int8_t> w(static_cast<std::size_t>(N) * K);
    for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(rng.below(256)) - 128);
    std::vector<std::int32_t> bias(static_cast<std::size_t>(N));
    std::vector<FixedPointMultiplier> fpm(static_cast<std::size_t>(N));
    for (int n = 0; n < N; ++n) {
        bias[static_cast<std::size_t>(n)] = static_cast<std::int32_t>(rng.below(200001)) - 100000;
        fpm[static_cast<std::size_t>(n)] = fixedPointMultiplier(multiplier * (0.5 + rng.uniform()));
    }
    const std::int32_t lo = relu ? zp : 0, hi = 255;
    GemmA ga;
    ga.base = a.data();
    ga.extent = extent;
    ga.rowOffset = rowOff.data();
    ga.M = static_cast<std::size_t>(M);
    ga.nseg = static_cast<std::size_t>(nseg);
    ga.segLen = static_cast<std::size_t>(segLen);
    ga.segStride = static_cast<std::size_t>(segStride);
    const std::size_t ldc = static_cast<std::size_t>(N) + 3; // outputs into a wider row
    std::vector<std::uint8_t> ref(static_cast<std::size_t>(M) * ldc, 0xEE);
    GemmScratch scratch;
    gemmRequant(packGemm(Isa::Scalar, w.data(), static_cast<std::size_t>(N), K, bias, fpm, zp, lo, hi), ga, ref.data(), ldc, scratch);
    const std::vector<Isa> isas = fastIsas();
    if (isas.empty()) QSKIP("this CPU has neither AVX2 nor AVX-512 VNNI: only the scalar kernel runs");
    for (Isa isa : isas) {
        std::vector<std::uint8_t> out(static_cast<std::size_t>(M) * ldc, 0xEE);
        gemmRequant(packGemm(isa, w.data(), static_cast<std::size_t>(N), K, bias, fpm, zp, lo, hi), ga, out.data(), ldc, scratch);
        for (std::size_t i = 0; i < out.size(); ++i)
            QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: row %2 col %3: %4, scalar twin %5")
                                                      .arg(isaName(isa)).arg(i / ldc).arg(i % ldc).arg(out[i]).arg(ref[i])));
    }
}

void TestInfer::requantizeIsExactRounding()
{
    Rng rng(99);
    for (int i = 0; i < 200000; ++i) {
        const double m = std::exp(rng.uniform(-25.0f, 1.5f));
        // |acc * m| stays inside int32, where no clamp applies
        const double range = std::min(2.0e9, 2.0e9 / m);
        const std::int32_t acc = static_cast<std::int32_t>(std::trunc((2.0 * rng.uniform() - 1.0) * range));
        const FixedPointMultiplier f = fixedPointMultiplier(m);
        const std::int32_t got = requantize(acc, f, 0, std::numeric_limits<std::int32_t>::min() + 1, std::numeric_limits<std::int32_t>::max());
        const double exact = static_cast<double>(acc) * m;
        QVERIFY(std::abs(got - std::nearbyint(exact)) <= kRequantTolerance);
        const double frac = exact - std::floor(exact);
        if (std::abs(frac - 0.5) > kTieMargin && std::abs(exact) < 1e9)
            QVERIFY2(got == static_cast<std::int32_t>(std::floor(exact + 0.5)), qPrintable(QString("acc %1 m %2").arg(acc).arg(m)));
    }
    // Clamp and zero point.
    const FixedPointMultiplier half = fixedPointMultiplier(0.5);
    QCOMPARE(requantize(1000, half, 10, 0, 255), 255);
    QCOMPARE(requantize(-1000, half, 10, 10, 255), 10);
    QCOMPARE(requantize(5, half, 10, 0, 255), 13); // 2.5 rounds half up, + 10
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(0.0));
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(std::nan("")));
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(1e12));
}

void TestInfer::syntheticModelsMatchFakeQuant_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn int8 channel") << "seed-cnn" << "int8" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn int8 tensor, int8 activations") << "seed-cnn-bn" << "int8" << "tensor" << "int8";
    QTest::newRow("lenet5 int4 channel (padding, im2col)") << "lenet5" << "int4" << "channel" << "uint8";
    QTest::newRow("mlp int4 layer") << "mlp" << "int4" << "layer" << "uint8";
}

void TestInfer::syntheticModelsMatchFakeQuant()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    auto q = fixtures::quantizePreset(preset.toStdString(), m_synthetic, format.toStdString(), granularity.toStdString(), act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    std::vector<std::int32_t> first;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
        if (!isaSupported(isa)) continue;
        const Comparison c = compareWithSim(*q.model, *q.sim, q.exported, m_synthetic, isa);
        if (!c.report.isEmpty()) qInfo("%s: %s", isaName(isa), qPrintable(c.report));
        QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(QString("%1: agreement %2\n%3").arg(isaName(isa)).arg(c.agreement).arg(c.report)));
        if (first.empty()) first = c.enginePred;
        QCOMPARE(c.enginePred, first); // every kernel set predicts the same
    }
}

void TestInfer::floatInputMatchesPixels()
{
    auto q = fixtures::quantizePreset("seed-cnn", m_synthetic, "int8");
    IntEngine engine(q.exported);
    Tensor x;
    std::vector<std::int32_t> y;
    m_synthetic.makeBatch(m_synthetic.test, 0, 40, x, y);
    Tensor out;
    std::vector<std::int32_t> fromFloat(40), fromBytes(40);
    engine.runFloat(x, out, fromFloat.data());
    std::vector<float> outBytes(40 * 10);
    engine.run(m_synthetic.test.pixels.data(), 40, outBytes.data(), fromBytes.data());
    QCOMPARE(fromFloat, fromBytes);
    QCOMPARE(out.values(), outBytes);
    // Log-probabilities: every row sums to 1 after exp.
    for (std::size_t i = 0; i < 40; ++i) {
        double s = 0;
        for (std::size_t j = 0; j < 10; ++j) s += std::exp(outBytes[i * 10 + j]);
        QVERIFY(std::abs(s - 1.0) < 1e-4);
    }
}

void TestInfer::unsupportedModelsFallBack_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("reason");
    QTest::newRow("group-wise") << "int4" << "group:32" << "group-wise";
    QTest::newRow("unsigned weights") << "uint8" << "channel" << "signed weights";
    QTest::newRow("12-bit weights") << "int12" << "channel" << "at most 8 bits";
    QTest::newRow("bias beyond int32 (fuzz finding)") << "int8" << "channel" << "does not fit the int32 accumulator";
}

void TestInfer::unsupportedModelsFallBack()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, reason);
    auto q = fixtures::quantizePreset("mlp", m_synthetic, format.toStdString(), granularity.toStdString());
    if (reason.contains("int32")) {
        // A file may store a bias far outside what the accumulator holds (here 1e30 times its scale).
        StoredTensor& bias = q.exported.layers.at(1).tensors.at(1);
        for (float& s : bias.scales) s *= 1e30f;
    }
    const std::string why = IntEngine::unsupportedReason(q.exported);
    QVERIFY2(QString::fromStdString(why).contains(reason), why.c_str());
    RunnerOptions integerOnly;
    integerOnly.kind = RunnerKind::Integer;
    QVERIFY_THROWS_EXCEPTION(ConfigError, ModelRunner(q.exported, integerOnly));
    ModelRunner r(q.exported);
    QVERIFY(!r.isInteger());
    QVERIFY(QString::fromStdString(r.description()).contains("fake-quant reference"));
    if (reason.contains("int32")) return; // no simulation of the altered model to compare with
    // The reference runs the stored model as the simulation does.
    std::vector<std::int32_t> simPred;
    const double simAcc = evaluate(*q.model, m_synthetic, m_synthetic.test, 100, q.sim.get(), &simPred).accuracy;
    const RunnerEval ev = evaluateRunner(r, m_synthetic.test);
    QVERIFY(std::abs(ev.accuracy - simAcc) <= 0.01);
}

void TestInfer::qatFashionMatchesFakeQuant_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn QAT int8 channel") << "seed-cnn" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn QAT int8 tensor, int8 activations") << "seed-cnn-bn" << "tensor" << "int8";
}

void TestInfer::qatFashionMatchesFakeQuant()
{
    QS_SKIP_UNDER_SANITIZERS();
    QFETCH(QString, model);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    if (!fixtures::haveFashion()) QSKIP("Fashion-MNIST is not installed (scripts/setup installs dataset-fashion-mnist)");
    DatasetOptions o;
    o.trainLimit = fixtures::fullData() ? 0 : 2000;
    const Dataset data = Dataset::load(o); // the full 10k test set
    auto t = fixtures::shortQat(data, model.toStdString(), granularity.toStdString(), act.toStdString(), fixtures::fullData() ? 2 : 1);
    const ExportedModel em = exportedModelOf(*t);
    QuantSim& sim = *t->strategy().quantSim();
    const Comparison c = compareWithSim(t->model(), sim, em, data, bestIsa());
    qInfo("%s: engine %.2f %%, fake-quant %.2f %%, argmax agreement %.2f %% on %zu images", qPrintable(model), 100 * c.engineAcc,
          100 * c.simAcc, 100 * c.agreement, data.test.size());
    if (!c.report.isEmpty()) qInfo("%s", qPrintable(c.report));
    QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(c.report));
    QVERIFY(std::abs(c.engineAcc - c.simAcc) * 100.0 <= kMaxAccuracyGapPoints);
    // Thread count does not change a prediction.
    EngineOptions one;
    one.threads = 1;
    IntEngine single(em, one);
    std::vector<std::int32_t> p1(data.test.size());
    single.run(data.test.pixels.data(), data.test.size(), nullptr, p1.data());
    QCOMPARE(p1, c.enginePred);
}

QTEST_GUILESS_MAIN(TestInfer)
#include "tst_infer.moc"
