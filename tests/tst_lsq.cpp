// Learned quantizers and small grids (issue 11, parts 1 and 4): LSQ's step-size gradient
// against the paper's closed form and a finite-difference check of its straight-through
// surrogate, LSQ+'s offset gradient, LSQ QAT learning on a small model (loss falls, steps move,
// the exported model runs on the integer engine like the fake-quant), the narrow symmetric range
// end to end (fake-quant, .qsm, ONNX, engine), and the ternary / binary weight grids.
#include "analysis/model_export.h"
#include "infer/int_engine.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "quant/lsq.h"
#include "quant/quantize.h"
#include "quant/weight_quantizer.h"
#include "train/loss.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"

#include "onnx/export_fixtures.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <set>

using namespace quantscope;

namespace {

// Finite differences: central, with a step small enough that no element crosses a clip edge.
constexpr float kFdStep = 1e-3f;
// Relative agreement of the analytic and numerical step gradients (float sums of ~1000 terms).
constexpr double kFdTolerance = 1e-3;
// Exported integer models agree with the fake-quant simulation on at least this share of argmaxes
// (the rest: ties at a rounding edge, as in tst_infer).
constexpr double kMinArgmaxAgreement = 0.99;

std::vector<float> randomVector(std::size_t n, float scale, std::uint64_t seed)
{
    Rng rng(seed);
    std::vector<float> v(n);
    for (float& x : v) x = scale * (static_cast<float>(rng.uniform()) * 2.0f - 1.0f);
    return v;
}

// The straight-through surrogate LSQ differentiates (PyTorch: x_hat = round_pass(clamp(x/s,
// -Qn, Qp)) * s with round_pass(y) = y + (round(y) - y).detach()): the rounding residual is
// frozen at s0, so f(s) = s * (clamp(x/s) + residual(s0)) inside the range, s * Qp / -s * Qn outside.
double surrogateLoss(const std::vector<float>& x, const std::vector<float>& c, double s, double s0, int qn, int qp)
{
    double L = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double y0 = x[i] / s0;
        const double r0 = std::nearbyint(y0);
        double fi;
        if (r0 < -qn) fi = -qn * s;
        else if (r0 > qp) fi = qp * s;
        else fi = s * (x[i] / s + (r0 - y0));
        L += c[i] * fi;
    }
    return L;
}

// Records losses and step sizes.
class StepRecorder : public TrainObserver {
public:
    std::vector<double> losses;
    std::vector<StepSizeEvent> steps;
    std::vector<EpochEvent> epochs;
    void onBatch(const BatchEvent& e) override { losses.push_back(e.loss); }
    void onStepSizes(const StepSizeEvent& e) override { steps.push_back(e); }
    void onEpoch(const EpochEvent& e) override { epochs.push_back(e); }
};

double meanOf(const std::vector<double>& v, std::size_t b, std::size_t e)
{
    double s = 0.0;
    for (std::size_t i = b; i < e; ++i) s += v[i];
    return s / static_cast<double>(e - b);
}

// Argmax agreement of the integer engine with the simulation on the test set.
double engineAgreement(Model& model, QuantSim& sim, const ExportedModel& em, const Dataset& data, double* engineAcc = nullptr)
{
    std::vector<std::int32_t> simPred;
    evaluate(model, data, data.test, 500, &sim, &simPred);
    IntEngine engine(em);
    std::vector<std::int32_t> pred(data.test.size(), -1);
    engine.run(data.test.pixels.data(), data.test.size(), nullptr, pred.data());
    std::size_t same = 0, correct = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) {
        same += pred[i] == simPred[i];
        correct += pred[i] == data.test.labels[i];
    }
    if (engineAcc) *engineAcc = static_cast<double>(correct) / static_cast<double>(pred.size());
    return static_cast<double>(same) / static_cast<double>(pred.size());
}

TrainConfig qatConfig(const std::string& format, const std::string& quantizer, std::size_t epochs)
{
    TrainConfig cfg;
    cfg.model = "seed-cnn";
    cfg.epochs = epochs;
    cfg.threads = 2;
    cfg.batchSize = 32;
    cfg.precision.strategy = Strategy::Qat;
    cfg.precision.format = format;
    cfg.precision.granularity = "channel";
    cfg.precision.quantizer = quantizer;
    return cfg;
}

// Squared quantization error of x on the grid p (fake-quant).
double quantError(const std::vector<float>& x, const QuantParams& p)
{
    std::vector<float> y(x.size());
    fakeQuantize(x, p, y, {});
    double e = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    return e;
}

// Heavy-tailed weights, one row per channel: Gaussian-like bulk (sum of uniforms) plus a few
// outliers, the shape that makes min-max grids coarse at low bit widths.
std::vector<float> heavyTailedRows(std::size_t rows, std::size_t row, std::uint64_t seed)
{
    Rng rng(seed);
    std::vector<float> w(rows * row);
    for (std::size_t c = 0; c < rows; ++c)
        for (std::size_t j = 0; j < row; ++j) {
            double v = 0.0;
            for (int k = 0; k < 4; ++k) v += rng.uniform() - 0.5;
            if (j % 97 == 5) v *= 8.0; // outliers
            w[c * row + j] = static_cast<float>(v * (0.05 * (c + 1)));
        }
    return w;
}

} // namespace

class TestLsq : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void stepDerivativeClosedForm();
    void stepGradientMatchesFiniteDifferences_data();
    void stepGradientMatchesFiniteDifferences();
    void initialStepIsPaperRule();
    void mseInitialStepsLoseLeast_data();
    void mseInitialStepsLoseLeast();
    void activationMseInitIsUnsignedAfterRelu();
    void firstLast8BitWidensTheEnds_data();
    void firstLast8BitWidensTheEnds();
    void activationStepAndOffsetGradients();
    void optionsAreChecked();
    void lsqQatLearnsAndExports();
    void foldedStepsAreInWeightUnits_data();
    void foldedStepsAreInWeightUnits();
    void collapsedStepIsLiftedToTheFloor_data();
    void collapsedStepIsLiftedToTheFloor();
    void narrowRangeEndToEnd();
    void ternaryAndBinaryGrids();
    void ternaryAndBinaryQatRunOnEngine_data();
    void ternaryAndBinaryQatRunOnEngine();

private:
    Dataset m_data;
};

void TestLsq::initTestCase() { m_data = fixtures::syntheticDataset(640, 200); }

void TestLsq::stepDerivativeClosedForm()
{
    // int4: Qn = 8, Qp = 7; s = 0.5.
    const float s = 0.5f;
    // Inside: round(x/s) - x/s.
    QCOMPARE(lsqStepDerivative(0.3f, s, 0, -8, 7), std::nearbyint(0.6f) - 0.6f);
    QCOMPARE(lsqStepDerivative(-1.1f, s, 0, -8, 7), std::nearbyint(-2.2f) - (-1.1f / s));
    // Outside: -Qn below, Qp above.
    QCOMPARE(lsqStepDerivative(-5.0f, s, 0, -8, 7), -8.0f);
    QCOMPARE(lsqStepDerivative(10.0f, s, 0, -8, 7), 7.0f);
    // Affine (uint8, zero point 3): Qn = 3, Qp = 252.
    QCOMPARE(lsqStepDerivative(-4.0f, s, 3, 0, 255), -3.0f);
    QCOMPARE(lsqStepDerivative(1000.0f, s, 3, 0, 255), 252.0f);
    // Binary: sign(x).
    QCOMPARE(lsqStepDerivative(-0.2f, s, 0, -1, 1, true), -1.0f);
    QCOMPARE(lsqStepDerivative(0.0f, s, 0, -1, 1, true), 1.0f);
    // Gradient scale.
    QCOMPARE(lsqGradScale(100, 7), static_cast<float>(1.0 / std::sqrt(700.0)));

    // lsqStepGradient is g * sum dy * derivative per slot (2 channels of 3).
    const std::vector<float> x = {0.3f, -5.0f, 10.0f, 0.1f, 0.2f, -0.7f};
    const std::vector<float> dy = {1.0f, 2.0f, -1.0f, 0.5f, -0.5f, 3.0f};
    const QuantParams p = perRowParams({0.5f, 0.25f}, {0, 0}, -8, 7, 3);
    std::vector<float> ds(2);
    lsqStepGradient(x, dy, p, ds);
    const float g = lsqGradScale(3, 7);
    const float want0 = g * (1.0f * (1.0f - 0.6f) + 2.0f * -8.0f + -1.0f * 7.0f);
    const float want1 = g * (0.5f * (0.0f - 0.4f) + -0.5f * (1.0f - 0.8f) + 3.0f * (std::nearbyint(-2.8f) + 2.8f));
    QVERIFY(std::abs(ds[0] - want0) < 1e-5f);
    QVERIFY(std::abs(ds[1] - want1) < 1e-5f);
}

void TestLsq::stepGradientMatchesFiniteDifferences_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<float>("spread"); // |x| up to spread * s: > Qp clips some
    QTest::newRow("int4, some clipped") << "int4" << 9.0f;
    QTest::newRow("int3, many clipped") << "int3" << 8.0f;
    QTest::newRow("int8, none clipped") << "int8" << 100.0f;
}

void TestLsq::stepGradientMatchesFiniteDifferences()
{
    QFETCH(QString, format);
    QFETCH(float, spread);
    const NumberFormat& f = findFormat(format.toStdString());
    const float s0 = 0.05f;
    const std::size_t n = 1000;
    std::vector<float> x = randomVector(n, spread * s0, 3);
    const std::vector<float> c = randomVector(n, 1.0f, 4); // dL/dx_hat
    // Keep every element away from a clip edge by more than the FD step moves it.
    for (float& v : x) {
        const float y = v / s0;
        if (std::abs(std::abs(y) - (f.qmax + 0.5f)) < 0.05f || std::abs(std::abs(y) - (-f.qmin + 0.5f)) < 0.05f) v *= 0.9f;
    }
    const QuantParams p = perTensorParams(s0, 0, f.qmin, f.qmax);
    std::vector<float> ds(1);
    lsqStepGradient(x, c, p, ds);
    const double g = lsqGradScale(n, f.qmax);
    const double analytic = ds[0] / g;
    const double h = kFdStep * s0;
    const double numeric = (surrogateLoss(x, c, s0 + h, s0, -f.qmin, f.qmax) - surrogateLoss(x, c, s0 - h, s0, -f.qmin, f.qmax)) / (2 * h);
    QVERIFY2(std::abs(analytic - numeric) <= kFdTolerance * std::max(1.0, std::abs(numeric)),
             qPrintable(QString("analytic %1, numeric %2").arg(analytic).arg(numeric)));
    // The fake-quantized values are the surrogate's at s0.
    std::vector<float> y(n);
    fakeQuantize(x, p, y, {});
    double L = 0.0;
    for (std::size_t i = 0; i < n; ++i) L += c[i] * y[i];
    QVERIFY(std::abs(L - surrogateLoss(x, c, s0, s0, -f.qmin, f.qmax)) < 1e-3 * std::max(1.0, std::abs(L)));
}

void TestLsq::initialStepIsPaperRule()
{
    // Per channel: 2 <|w|> / sqrt(Qp) of each row.
    const std::vector<float> w = {0.1f, -0.3f, 0.2f, 1.0f, -2.0f, 3.0f};
    const QuantParams p = perRowParams({1.0f, 1.0f}, {0, 0}, -8, 7, 3);
    const std::vector<float> s = lsqInitialSteps(w, p);
    QCOMPARE(s.size(), std::size_t{2});
    QVERIFY(std::abs(s[0] - 2.0f * 0.2f / std::sqrt(7.0f)) < 1e-6f);
    QVERIFY(std::abs(s[1] - 2.0f * 2.0f / std::sqrt(7.0f)) < 1e-6f);
}

void TestLsq::mseInitialStepsLoseLeast_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("int2") << "int2";
    QTest::newRow("int3") << "int3";
    QTest::newRow("int4") << "int4";
}

void TestLsq::mseInitialStepsLoseLeast()
{
    // --lsq-init mse (the default) starts every channel at the grid that quantizes the
    // checkpoint's weights with the least error: no worse than the paper's 2<|w|>/sqrt(Qp)
    // or min-max, and strictly better than one of them at these bit widths.
    QFETCH(QString, format);
    const NumberFormat& f = findFormat(format.toStdString());
    const std::size_t rows = 3, row = 300;
    const std::vector<float> w = heavyTailedRows(rows, row, 21);
    WeightQuantizer wq(f, parseGranularity("channel"), Calibration::MinMax, Rounding::Nearest);
    Param wp;
    wp.value = Tensor(Shape{rows, row});
    std::copy(w.begin(), w.end(), wp.value.data());
    wp.grad = Tensor(Shape{rows, row});
    wq.apply({WeightTarget{"fc", &wp, nullptr}}, 0);
    const QuantParams minmax = wq.weightParams(0);
    std::vector<std::int32_t> zp;
    const std::vector<float> mse = lsqMseSteps(w, minmax, f, &zp);
    QCOMPARE(mse.size(), rows);
    QCOMPARE(zp, std::vector<std::int32_t>(rows, 0)); // symmetric weights
    QuantParams pm = minmax, pp = minmax;
    pm.scale = mse;
    pp.scale = lsqInitialSteps(w, minmax);
    const double eMse = quantError(w, pm), eMinMax = quantError(w, minmax), ePaper = quantError(w, pp);
    QVERIFY2(eMse <= eMinMax && eMse <= ePaper,
             qPrintable(QString("mse %1, min-max %2, paper %3").arg(eMse).arg(eMinMax).arg(ePaper)));
    QVERIFY(eMse < 0.9 * std::max(eMinMax, ePaper));
    // The step scales with its channel (rows 0.05, 0.10, 0.15 wide).
    QVERIFY(mse[0] < mse[1] && mse[1] < mse[2]);
    // A grid that is not the format's is refused.
    QVERIFY_THROWS_EXCEPTION(ConfigError, lsqMseSteps(w, minmax, findFormat("int8")));
}

void TestLsq::activationMseInitIsUnsignedAfterRelu()
{
    // Post-ReLU activations (>= 0, many zeros, a long tail) at uint2: the MSE init keeps the zero
    // point at 0 (no level wasted below zero) and loses less than LSQ's and min-max's starts.
    const NumberFormat& u2 = findFormat("uint2");
    std::vector<float> x = randomVector(4000, 1.0f, 33);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::max(0.0f, x[i]) * (i % 50 == 0 ? 6.0f : 1.0f);
    double err[3];
    const LsqInit rules[3] = {LsqInit::Mse, LsqInit::Paper, LsqInit::Range};
    for (int k = 0; k < 3; ++k) {
        LsqActivationQuantizer q(u2, false, "relu", rules[k]);
        q.initialise(x);
        QCOMPARE(q.params().zeroPoint[0], 0);
        err[k] = quantError(x, q.params());
    }
    QVERIFY2(err[0] <= err[1] && err[0] <= err[2], qPrintable(QString("mse %1, lsq %2, range %3").arg(err[0]).arg(err[1]).arg(err[2])));
    QVERIFY(err[0] < 0.9 * std::min(err[1], err[2]));
    // The default of a run is mse; the names are checked.
    QCOMPARE(PrecisionConfig{}.lsqInit, std::string("mse"));
    QVERIFY(parseLsqInit("lsq") == LsqInit::Paper);
    QVERIFY_THROWS_EXCEPTION(ConfigError, parseLsqInit("minmax"));
}

void TestLsq::firstLast8BitWidensTheEnds_data()
{
    // model, first layer, last layer, a middle target, the activation feeding the last layer,
    // an activation in the middle (output of that layer)
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("first");
    QTest::addColumn<QString>("last");
    QTest::addColumn<QString>("middle");
    QTest::addColumn<QString>("lastInput");
    QTest::addColumn<QString>("middleAct");
    QTest::newRow("seed-cnn") << "seed-cnn" << "conv1" << "fc2" << "conv2" << "relu3" << "relu1";
    QTest::newRow("resnet8") << "resnet8" << "conv1" << "fc" << "layer2.conv1" << "pool" << "relu";
}

void TestLsq::firstLast8BitWidensTheEnds()
{
    // W2A2 with --first-last-8bit: the first and last layers' weights are int8, the model input,
    // the last layer's input and the logits uint8; everything else stays at 2 bits. Without
    // the option every layer is at 2 bits.
    QFETCH(QString, model);
    QFETCH(QString, first);
    QFETCH(QString, last);
    QFETCH(QString, middle);
    QFETCH(QString, lastInput);
    QFETCH(QString, middleAct);
    for (bool ends : {false, true}) {
        auto m = makeModel(model.toStdString());
        PrecisionConfig pc;
        pc.strategy = Strategy::Qat;
        pc.format = "int2";
        pc.activationFormat = "uint2";
        pc.quantizer = "lsq";
        pc.firstLast8Bit = ends;
        pc.validate();
        QuantSim sim(*m, pc, findFormat("int2"));
        const std::string wide = ends ? "8" : "2";
        auto targetFormat = [&](const QString& layer) {
            for (std::size_t t = 0; t < sim.weightTargets().size(); ++t)
                if (sim.weightTargets()[t].layer == layer.toStdString()) return sim.targetFormat(t).name;
            return std::string("missing");
        };
        auto outputFormat = [&](const QString& layer) {
            for (std::size_t i = 0; i < m->size(); ++i)
                if (m->layer(i).name() == layer.toStdString()) {
                    const NumberFormat* f = sim.pointFormat(i + 1);
                    return f ? f->name : std::string("float");
                }
            return std::string("missing");
        };
        QCOMPARE(targetFormat(first), "int" + wide);
        QCOMPARE(targetFormat(last), "int" + wide);
        QCOMPARE(targetFormat(middle), std::string("int2"));
        QCOMPARE(sim.pointFormat(0)->name, "uint" + wide);
        QCOMPARE(outputFormat(lastInput), "uint" + wide);
        QCOMPARE(outputFormat(last), "uint" + wide); // the logits
        QCOMPARE(outputFormat(middleAct), std::string("uint2"));
    }
}

void TestLsq::activationStepAndOffsetGradients()
{
    // uint8 with LSQ+: one batch of 4 samples x 50 features, partly negative (nonzero zero point).
    const NumberFormat& u8 = findFormat("uint8");
    LsqActivationQuantizer q(u8, true, "act", LsqInit::Paper); // min-max zero point, LSQ step
    std::vector<float> x = randomVector(200, 3.0f, 9);
    for (float& v : x) v += 1.0f;
    q.initialise(x);
    // Shrink the step so that some values clip at both ends.
    q.step().value[0] *= 0.02f;
    q.offset().value[0] = -static_cast<float>(q.params().zeroPoint[0]) * q.step().value[0];
    const QuantParams p = q.params();
    QVERIFY(p.zeroPoint[0] > 0);
    std::vector<float> y = x;
    q.forward(y, true, 4);
    std::vector<float> want(200);
    fakeQuantize(x, p, want, {});
    QCOMPARE(y, want);
    const std::vector<float> dy = randomVector(200, 1.0f, 10);
    std::vector<float> dx = dy;
    q.step().grad.fill(0.0f);
    q.offset().grad.fill(0.0f);
    q.backward(dx);
    // Closed form of LSQ+ in its parameters (s, beta): x_hat = clamp(round((x - beta)/s), qmin,
    // qmax) * s + beta; d/ds = round(y) - y inside, qmin / qmax outside; d/dbeta = 0 inside, 1
    // outside; g = 1/sqrt(N_features * Qp) with N_features = 50, Qp = qmax.
    const double g = lsqGradScale(50, p.qmax);
    const double s = p.scale[0], beta = -p.zeroPoint[0] * s;
    double ds = 0.0, db = 0.0;
    std::size_t clipped = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        bool inside = false;
        fakeQuantizeValue(x[i], p.scale[0], p.zeroPoint[0], p.qmin, p.qmax, inside);
        const float v = x[i] * (1.0f / p.scale[0]);
        const float level = std::nearbyint(v) + static_cast<float>(p.zeroPoint[0]);
        ds += dy[i] * (inside ? std::nearbyint(v) - v : (level < p.qmin ? p.qmin : p.qmax));
        if (!inside) {
            db += dy[i];
            ++clipped;
            QCOMPARE(dx[i], 0.0f); // d x_hat / dx = 0 outside
        } else {
            QCOMPARE(dx[i], dy[i]);
        }
    }
    QVERIFY(clipped > 10 && clipped < 190);
    QVERIFY(std::abs(q.step().grad[0] - g * ds) < 1e-4 * std::max(1.0, std::abs(g * ds)));
    QVERIFY(std::abs(q.offset().grad[0] - g * db) < 1e-4 * std::max(1.0, std::abs(g * db)));
    // Numerical check of both on the straight-through surrogate (rounding residual frozen at (s, beta)).
    auto L = [&](double ss, double b) {
        double sum = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double y0 = (x[i] - beta) / s, r0 = std::nearbyint(y0);
            const double f = r0 < p.qmin ? p.qmin * ss + b : r0 > p.qmax ? p.qmax * ss + b : ss * ((x[i] - b) / ss + (r0 - y0)) + b;
            sum += dy[i] * f;
        }
        return sum;
    };
    const double hb = 1e-4 * s, hs = 1e-4 * s;
    const double numB = (L(s, beta + hb) - L(s, beta - hb)) / (2 * hb);
    const double numS = (L(s + hs, beta) - L(s - hs, beta)) / (2 * hs);
    QVERIFY2(std::abs(numB - db) < 1e-3 * std::max(1.0, std::abs(db)), qPrintable(QString("offset: %1 vs %2").arg(numB).arg(db)));
    QVERIFY2(std::abs(numS - ds) < 1e-3 * std::max(1.0, std::abs(ds)), qPrintable(QString("step: %1 vs %2").arg(numS).arg(ds)));
}

void TestLsq::optionsAreChecked()
{
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.quantizer = "lsq";
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate()); // lsq needs qat
    pc.strategy = Strategy::Qat;
    pc.validate();
    pc.granularity = "layer";
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate());
    pc.granularity = "channel";
    pc.quantizer = "learned";
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate());
    pc.quantizer = "observer";
    pc.lsqPlus = true;
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate()); // lsq+ needs lsq
    pc.lsqPlus = false;
    pc.activationFormat = "binary";
    QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate()); // a weight-only format
}

void TestLsq::lsqQatLearnsAndExports()
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
    // Step sizes were reported for every conv/linear weight and activation point, and moved.
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
        if (std::abs(last[i].step - first[i].step) > 1e-3 * first[i].step) ++moved;
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
    double engineAcc = 0;
    const double agree = engineAgreement(t.model(), sim, em, m_data, &engineAcc);
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
void TestLsq::foldedStepsAreInWeightUnits_data()
{
    QTest::addColumn<QString>("granularity");
    QTest::newRow("channel") << "channel";
    QTest::newRow("group:8") << "group:8";
}

void TestLsq::foldedStepsAreInWeightUnits()
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
void TestLsq::collapsedStepIsLiftedToTheFloor_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("int2") << "int2";
    QTest::newRow("int4") << "int4";
    QTest::newRow("binary") << "binary";
}

void TestLsq::collapsedStepIsLiftedToTheFloor()
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

void TestLsq::narrowRangeEndToEnd()
{
    // The weight grid: [-127, 127], and the max-abs weight lands on +-127.
    const NumberFormat nf = narrowRangeFormat(findFormat("int8"));
    QCOMPARE(nf.qmin, -127);
    QCOMPARE(nf.qmax, 127);
    QCOMPARE(narrowRangeFormat(findFormat("uint8")).qmin, 0); // unsigned: unchanged
    QCOMPARE(narrowRangeFormat(findFormat("int4")).qmin, -7);

    // PTQ with --narrow-range: fake-quant, export, .qsm, ONNX and the engine all use [-127, 127].
    auto model = makeModel("seed-cnn", 1, 28, 28, 10, 3);
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = "int8";
    pc.granularity = "channel";
    pc.narrowRange = true;
    pc.activationCalibration = "minmax";
    QuantSim sim(*model, pc, findFormat("int8"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(m_data, m_data.train, m_data.train.size(), 64);
    sim.setObserving(false);
    const ExportedModel em = exportQuantizedModel(*model, sim, "seed-cnn", m_data, "ptq", "channel");
    std::size_t intWeights = 0;
    for (const StoredLayer& l : em.layers) {
        if (l.tensors.empty() || l.tensors[0].encoding != TensorEncoding::Int) continue;
        const StoredTensor& w = l.tensors[0];
        QCOMPARE(w.qmin, -127);
        QCOMPARE(w.qmax, 127);
        const auto [lo, hi] = std::minmax_element(w.q.begin(), w.q.end());
        QVERIFY(*lo >= -127);
        QVERIFY(*lo == -127 || *hi == 127); // max-abs on the grid's end
        ++intWeights;
    }
    QVERIFY(intWeights >= 2);
    QVERIFY(engineAgreement(*model, sim, em, m_data) >= kMinArgmaxAgreement);
    const ExportedModel viaOnnx = onnxForm(em);
    const std::pair<ExportedModel, const ExportedModel*> files[] = {{decodeQsm(encodeQsm(em), "narrow.qsm"), &em},
                                                                     {decodeOnnx(encodeOnnx(em), "narrow.onnx"), &viaOnnx}};
    for (const auto& [back, ref] : files) {
        QCOMPARE(back.layers.size(), ref->layers.size());
        for (std::size_t i = 0; i < ref->layers.size(); ++i) {
            if (ref->layers[i].tensors.empty() || ref->layers[i].tensors[0].encoding != TensorEncoding::Int) continue;
            QCOMPARE(back.layers[i].tensors[0].qmin, -127);
            QCOMPARE(back.layers[i].tensors[0].q, ref->layers[i].tensors[0].q);
        }
        QVERIFY(engineAgreement(*model, sim, back, m_data) >= kMinArgmaxAgreement);
    }
}

void TestLsq::ternaryAndBinaryGrids()
{
    const NumberFormat& tern = findFormat("ternary");
    const NumberFormat& bin = findFormat("binary");
    QVERIFY(isTernaryOrBinary(tern) && isTernaryOrBinary(bin));
    QVERIFY(needsScale(tern) && needsScale(bin));
    const std::vector<float> w = randomVector(4 * 64, 1.0f, 21);
    Param weight;
    weight.name = "weight";
    weight.isWeight = true;
    weight.value = Tensor(Shape{4, 64}, w);
    weight.grad = Tensor(Shape{4, 64}, 1.0f);
    for (const NumberFormat* f : {&tern, &bin}) {
        WeightQuantizer wq(*f, parseGranularity("channel"), Calibration::MinMax, Rounding::Nearest);
        std::vector<WeightTarget> targets = {{"fc", &weight, nullptr}};
        wq.apply(targets, 0);
        const QuantParams& p = wq.weightParams(0);
        QCOMPARE(p.numSlots(), std::size_t{4});
        std::set<float> levels;
        for (std::size_t r = 0; r < 4; ++r) {
            double sum = 0, above = 0;
            std::size_t nAbove = 0;
            for (std::size_t j = 0; j < 64; ++j) sum += std::abs(w[r * 64 + j]);
            for (std::size_t j = 0; j < 64; ++j)
                if (std::abs(w[r * 64 + j]) > 0.7 * sum / 64) {
                    above += std::abs(w[r * 64 + j]);
                    ++nAbove;
                }
            // The papers' scales: XNOR-Net mean|w|, TWN mean of |w| above 0.7 mean|w|.
            const double want = f == &bin ? sum / 64 : above / static_cast<double>(nAbove);
            QVERIFY(std::abs(p.scale[r] - want) < 1e-5);
            for (std::size_t j = 0; j < 64; ++j) {
                const float v = weight.override[r * 64 + j] / p.scale[r];
                levels.insert(v);
                if (f == &bin) QCOMPARE(v, w[r * 64 + j] >= 0 ? 1.0f : -1.0f); // sign
            }
        }
        if (f == &bin) QCOMPARE(levels, (std::set<float>{-1.0f, 1.0f}));
        else QCOMPARE(levels, (std::set<float>{-1.0f, 0.0f, 1.0f}));
        // Straight-through: the gradient passes inside |w| <= scale (binary), inside the clip range (ternary).
        weight.grad.fill(1.0f);
        wq.maskGradients(targets);
        for (std::size_t i = 0; i < w.size(); ++i) {
            const float s = p.scale[i / 64];
            const bool inside = f == &bin ? std::abs(w[i]) <= s : std::abs(std::nearbyint(w[i] / s)) <= 1.0f;
            QCOMPARE(weight.grad[i], inside ? 1.0f : 0.0f);
        }
        // Integers for export: the same grid.
        std::vector<std::int32_t> q(w.size());
        quantizeToInt(w, p, q);
        for (std::size_t i = 0; i < w.size(); ++i) QCOMPARE(static_cast<float>(q[i]) * p.scale[i / 64], weight.override[i]);
    }
}

void TestLsq::ternaryAndBinaryQatRunOnEngine_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("quantizer");
    QTest::newRow("ternary, observer") << "ternary" << "observer";
    QTest::newRow("binary, observer") << "binary" << "observer";
    QTest::newRow("binary, lsq") << "binary" << "lsq";
}

void TestLsq::ternaryAndBinaryQatRunOnEngine()
{
    QFETCH(QString, format);
    QFETCH(QString, quantizer);
    StepRecorder rec;
    Trainer t(qatConfig(format.toStdString(), quantizer.toStdString(), 1), m_data, &rec);
    t.run();
    const double acc = rec.epochs.back().quantTestAccuracy;
    QVERIFY2(acc > 0.3, qPrintable(QString("quantized accuracy %1").arg(acc)));
    const ExportedModel em = exportedModelOf(t);
    for (const StoredLayer& l : em.layers)
        if (!l.tensors.empty() && l.tensors[0].encoding == TensorEncoding::Int)
            for (std::int32_t v : l.tensors[0].q) QVERIFY(v >= -1 && v <= 1 && (format != "binary" || v != 0));
    double engineAcc = 0;
    const double agree = engineAgreement(t.model(), *t.strategy().quantSim(), em, m_data, &engineAcc);
    qInfo("%s %s QAT: quantized %.3f, engine %.3f, agreement %.3f", qPrintable(format), qPrintable(quantizer), acc, engineAcc, agree);
    QVERIFY(agree >= kMinArgmaxAgreement);
    // ONNX keeps the grid (int8 QDQ on {-1, 0, 1}).
    const ExportedModel back = decodeOnnx(encodeOnnx(em), "small.onnx");
    QVERIFY(engineAgreement(t.model(), *t.strategy().quantSim(), back, m_data) >= kMinArgmaxAgreement);
}

QTEST_GUILESS_MAIN(TestLsq)
#include "tst_lsq.moc"
