// LSQ's step sizes (issue 11, part 1): the step-size gradient against the paper's closed form and
// a finite-difference check of its straight-through surrogate, LSQ+'s offset gradient, the initial
// steps (the paper's rule, the MSE grid), the 8-bit first and last layers, and the option checks.
// LSQ QAT runs are in tst_lsq_training.cpp, the narrow range and ternary / binary grids in
// tst_lsq_grids.cpp.
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "quant/lsq.h"
#include "quant/quantize.h"
#include "quant/weight_quantizer.h"
#include "train/quant_sim.h"
#include "util/errors.h"
#include "util/rng.h"

#include "lsq_fixtures.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <cmath>

using namespace quantscope;
using fixtures::randomVector;

namespace {

// Finite differences: central, with a step small enough that no element crosses a clip edge.
constexpr float kFdStep = 1e-3f;
// Relative agreement of the analytic and numerical step gradients (float sums of ~1000 terms).
constexpr double kFdTolerance = 1e-3;

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

class TestLsqSteps : public QObject {
    Q_OBJECT
private slots:
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
};

void TestLsqSteps::stepDerivativeClosedForm()
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

void TestLsqSteps::stepGradientMatchesFiniteDifferences_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<float>("spread"); // |x| up to spread * s: > Qp clips some
    QTest::newRow("int4, some clipped") << "int4" << 9.0f;
    QTest::newRow("int3, many clipped") << "int3" << 8.0f;
    QTest::newRow("int8, none clipped") << "int8" << 100.0f;
}

void TestLsqSteps::stepGradientMatchesFiniteDifferences()
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

void TestLsqSteps::initialStepIsPaperRule()
{
    // Per channel: 2 <|w|> / sqrt(Qp) of each row.
    const std::vector<float> w = {0.1f, -0.3f, 0.2f, 1.0f, -2.0f, 3.0f};
    const QuantParams p = perRowParams({1.0f, 1.0f}, {0, 0}, -8, 7, 3);
    const std::vector<float> s = lsqInitialSteps(w, p);
    QCOMPARE(s.size(), std::size_t{2});
    QVERIFY(std::abs(s[0] - 2.0f * 0.2f / std::sqrt(7.0f)) < 1e-6f);
    QVERIFY(std::abs(s[1] - 2.0f * 2.0f / std::sqrt(7.0f)) < 1e-6f);
}

void TestLsqSteps::mseInitialStepsLoseLeast_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("int2") << "int2";
    QTest::newRow("int3") << "int3";
    QTest::newRow("int4") << "int4";
}

void TestLsqSteps::mseInitialStepsLoseLeast()
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

void TestLsqSteps::activationMseInitIsUnsignedAfterRelu()
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

void TestLsqSteps::firstLast8BitWidensTheEnds_data()
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

void TestLsqSteps::firstLast8BitWidensTheEnds()
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
    // A format given to the first layer by name (--layer, a plan file) wins over the option.
    auto m = makeModel(model.toStdString());
    PrecisionConfig pc;
    pc.strategy = Strategy::Qat;
    pc.format = "int2";
    pc.activationFormat = "uint2";
    pc.firstLast8Bit = true;
    LayerOverride o;
    o.layer = first.toStdString();
    o.format = "int4";
    pc.layers.push_back(o);
    pc.validate();
    QuantSim sim(*m, pc, findFormat("int2"));
    for (std::size_t t = 0; t < sim.weightTargets().size(); ++t) {
        const std::string& l = sim.weightTargets()[t].layer;
        if (l == first.toStdString()) QCOMPARE(sim.targetFormat(t).name, std::string("int4"));
        if (l == last.toStdString()) QCOMPARE(sim.targetFormat(t).name, std::string("int8"));
    }
}

void TestLsqSteps::activationStepAndOffsetGradients()
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

void TestLsqSteps::optionsAreChecked()
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

QTEST_GUILESS_MAIN(TestLsqSteps)
#include "tst_lsq_steps.moc"
