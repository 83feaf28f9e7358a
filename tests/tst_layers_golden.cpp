// Layers, losses and optimizers against their references: PyTorch 1.13 vectors (tests/data/015..028)
// and the semantics PyTorch and AIMET define (the dropout mask, max-pool ties, BatchNorm
// re-estimation). Central-difference gradient checks are in tst_layers_gradients.cpp; the fast
// kernels against their reference paths and thread-count determinism in tst_layer_kernels.cpp.
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <memory>

using namespace quantscope;
using namespace quantscope::testing;

namespace {

// PyTorch comparisons. Floats in the files round-trip float32 exactly; what remains is the
// summation order of the kernels (ours: Eigen GEMM, double accumulators; theirs: BLAS).
constexpr double kRefAtol = 1e-5;        // values of magnitude ~1
constexpr double kRefRtol = 1e-5;
constexpr double kRefGradAtol = 5e-5;    // weight/bias gradients: sums of ~100 products, magnitude ~10
constexpr double kRefGradRtol = 1e-5;
constexpr double kRefLossRtol = 1e-6;    // scalar mean losses
constexpr double kOptimAtol = 1e-7;      // three optimizer steps on parameters of magnitude ~0.5
constexpr double kOptimRtol = 1e-6;
constexpr double kRunStatRtol = 1e-6;    // BatchNorm running statistics vs a double-precision derivation
constexpr double kCrossEntropyVsNllAtol = 1e-6; // two float routes to the same loss gradient

// A parameter-free single-input layer against a PyTorch case: forward y, then dx from grad_y.
void compareParameterFree(Layer& layer, const golden::GoldenCase& g, double atol, double rtol)
{
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    layer.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), atol, rtol);
    layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), atol, rtol);
}

// A layer with weights, in training mode, against its golden case: y and grad_x at the reference
// tolerances, grad_w (and grad_b when there is a bias) at the gradient ones. Then inference, which
// takes other code paths (a convolution's per-thread scratch, no cache), must give y bit for bit.
void compareWeighted(Layer& layer, Param& weight, Param* bias, const golden::GoldenCase& g)
{
    weight.value = g.in("w");
    if (bias) bias->value = g.in("b");
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    layer.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(weight.grad, g.out("grad_w"), kRefGradAtol, kRefGradRtol);
    if (bias) {
        QS_COMPARE_TENSORS(bias->grad, g.out("grad_b"), kRefGradAtol, kRefGradRtol);
    }
    Tensor yEval;
    layer.forward(g.in("x"), yEval, RunContext{});
    QVERIFY(bitIdentical(yEval, y));
}

} // namespace

class TestLayersGolden : public QObject {
    Q_OBJECT

private slots:
    // PyTorch reference vectors
    void goldenConv2d();
    void goldenGroupedConv2d_data();
    void goldenGroupedConv2d();
    void goldenMaxPool2d();
    void goldenAvgPool2d();
    void goldenGlobalAvgPool2d();
    void goldenAdd();
    void goldenReLU6();
    void goldenLinear();
    void goldenBatchNorm2dTrain();
    void goldenLogSoftmaxNll();
    void goldenMse();
    void goldenOptimizer_data();
    void goldenOptimizer();

    // reference semantics
    void dropoutMask();
    void maxPoolTiesGoToFirstMaximum();
    void batchNormReestimationAveragesBatchStatistics();
};

void TestLayersGolden::goldenConv2d()
{
    const golden::GoldenCase g = golden::loadGolden("015_conv2d.json");
    const Tensor& w = g.in("w");
    Conv2d conv("conv", w.dim(1), w.dim(0), w.dim(2), g.params.at("stride").get<std::size_t>(),
                g.params.at("padding").get<std::size_t>());
    compareWeighted(conv, conv.weight(), &conv.bias(), g);
}

void TestLayersGolden::goldenGroupedConv2d_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("depthwise_s2_p1") << "023_conv2d_depthwise_s2_p1.json";
    QTest::newRow("groups2_p1") << "024_conv2d_grouped_p1.json";
}

// Grouped and depthwise convolutions without bias (the depthwise row runs the direct kernel).
void TestLayersGolden::goldenGroupedConv2d()
{
    QFETCH(QString, file);
    const golden::GoldenCase g = golden::loadGolden(file);
    QVERIFY(!g.params.at("bias").get<bool>());
    const Tensor& w = g.in("w");
    const std::size_t groups = g.params.at("groups").get<std::size_t>();
    Conv2d conv("conv", w.dim(1) * groups, w.dim(0), w.dim(2), g.params.at("stride").get<std::size_t>(),
                g.params.at("padding").get<std::size_t>(), groups, false);
    QCOMPARE(conv.inChannels(), g.in("x").dim(1));
    QCOMPARE(conv.params().size(), std::size_t{1});
    compareWeighted(conv, conv.weight(), nullptr, g);
}

void TestLayersGolden::goldenMaxPool2d()
{
    const golden::GoldenCase g = golden::loadGolden("016_max_pool2d.json");
    MaxPool2d pool("pool", g.params.at("kernel").get<std::size_t>(), g.params.at("stride").get<std::size_t>());
    // Max and routing are exact: no arithmetic beyond a copy and one addition per window.
    compareParameterFree(pool, g, 0.0, 0.0);
}

void TestLayersGolden::goldenAvgPool2d()
{
    const golden::GoldenCase g = golden::loadGolden("027_avg_pool2d.json");
    AvgPool2d pool("pool", g.params.at("kernel").get<std::size_t>(), g.params.at("stride").get<std::size_t>());
    compareParameterFree(pool, g, kRefAtol, kRefRtol);
}

void TestLayersGolden::goldenGlobalAvgPool2d()
{
    const golden::GoldenCase g = golden::loadGolden("026_global_avg_pool2d.json");
    GlobalAvgPool2d pool("pool");
    compareParameterFree(pool, g, kRefAtol, kRefRtol);
}

// Through the multi-input form the Model calls. One float addition per element, gradients are
// copies: exact.
void TestLayersGolden::goldenAdd()
{
    const golden::GoldenCase g = golden::loadGolden("025_add.json");
    Add add("add");
    QCOMPARE(add.numInputs(), std::size_t{2});
    RunContext ctx;
    ctx.training = true;
    Tensor y, da, db;
    add.forwardMulti({&g.in("a"), &g.in("b")}, y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), 0.0, 0.0);
    add.backwardMulti({&g.in("a"), &g.in("b")}, y, g.in("grad_y"), {&da, &db});
    QS_COMPARE_TENSORS(da, g.out("grad_a"), 0.0, 0.0);
    QS_COMPARE_TENSORS(db, g.out("grad_b"), 0.0, 0.0);
    // A null gradient slot (the model input) is skipped.
    Tensor only;
    add.backwardMulti({&g.in("a"), &g.in("b")}, y, g.in("grad_y"), {nullptr, &only});
    QS_COMPARE_TENSORS(only, g.out("grad_b"), 0.0, 0.0);
}

// Clamping and masking are exact. The input holds 0 and 6 exactly, whose gradient is 0 as in
// PyTorch's hardtanh_backward.
void TestLayersGolden::goldenReLU6()
{
    const golden::GoldenCase g = golden::loadGolden("028_relu6.json");
    const Tensor& x = g.in("x");
    QVERIFY(std::count(x.values().begin(), x.values().end(), 0.0f) > 0);
    QVERIFY(std::count(x.values().begin(), x.values().end(), 6.0f) > 0);
    ReLU6 relu6("relu6");
    compareParameterFree(relu6, g, 0.0, 0.0);
}

void TestLayersGolden::goldenLinear()
{
    const golden::GoldenCase g = golden::loadGolden("017_linear.json");
    const Tensor& w = g.in("w");
    Linear fc("fc", w.dim(1), w.dim(0));
    compareWeighted(fc, fc.weight(), &fc.bias(), g);
}

void TestLayersGolden::goldenBatchNorm2dTrain()
{
    const golden::GoldenCase g = golden::loadGolden("018_batch_norm2d_train.json");
    QVERIFY(g.params.at("training").get<bool>());
    const Tensor& x = g.in("x");
    const std::size_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
    const float eps = g.params.at("eps").get<float>();
    BatchNorm2d bn("bn", C, eps);
    bn.gamma().value = g.in("gamma");
    bn.beta().value = g.in("beta");
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    bn.forward(x, y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    bn.backward(x, y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(bn.gamma().grad, g.out("grad_gamma"), kRefGradAtol, kRefGradRtol);
    QS_COMPARE_TENSORS(bn.beta().grad, g.out("grad_beta"), kRefGradAtol, kRefGradRtol);

    // Running statistics, PyTorch semantics from their defaults (mean 0, var 1):
    // running = (1 - momentum) running + momentum * batch, with the unbiased batch variance.
    constexpr double kMomentum = 0.1;
    Tensor expMean({C}), expVar({C});
    for (std::size_t c = 0; c < C; ++c) {
        double s = 0.0, s2 = 0.0;
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t i = 0; i < HW; ++i) s += x[(n * C + c) * HW + i];
        const double mean = s / static_cast<double>(N * HW);
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t i = 0; i < HW; ++i) s2 += std::pow(x[(n * C + c) * HW + i] - mean, 2);
        expMean[c] = static_cast<float>(kMomentum * mean);
        expVar[c] = static_cast<float>((1.0 - kMomentum) * 1.0 + kMomentum * s2 / static_cast<double>(N * HW - 1));
    }
    QS_COMPARE_TENSORS(bn.runningMean(), expMean, kRefAtol * 0.1, kRunStatRtol);
    QS_COMPARE_TENSORS(bn.runningVar(), expVar, 0.0, kRunStatRtol);

    // Evaluation normalises with the running statistics, not the batch's.
    Tensor yEval, expEval(x.shape());
    bn.forward(x, yEval, RunContext{});
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t i = 0; i < HW; ++i) {
                const std::size_t k = (n * C + c) * HW + i;
                expEval[k] = static_cast<float>(g.in("gamma")[c] * (x[k] - expMean[c]) /
                                                    std::sqrt(static_cast<double>(expVar[c]) + eps) +
                                                g.in("beta")[c]);
            }
    QS_COMPARE_TENSORS(yEval, expEval, kRefAtol, kRefRtol);
    // ... and leaves them alone.
    QS_COMPARE_TENSORS(bn.runningMean(), expMean, kRefAtol * 0.1, kRunStatRtol);
}

void TestLayersGolden::goldenLogSoftmaxNll()
{
    const golden::GoldenCase g = golden::loadGolden("019_log_softmax_nll.json");
    const Tensor& logits = g.in("logits");
    const std::vector<std::int32_t> target = g.intInput("target");
    LogSoftmax ls("log_softmax");
    RunContext ctx;
    ctx.training = true;
    Tensor logp, dlogp, dlogits;
    ls.forward(logits, logp, ctx);
    const float loss = nllLoss(logp, target, dlogp);
    QVERIFY2(std::abs(loss - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("loss %1, expected %2").arg(loss, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    ls.backward(logits, logp, dlogp, dlogits, true);
    QS_COMPARE_TENSORS(dlogits, g.out("grad_logits"), kRefAtol, kRefRtol);

    // The fused cross-entropy is the same function.
    Tensor dce;
    const float ce = crossEntropyLoss(logits, target, dce);
    QVERIFY2(std::abs(ce - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("cross-entropy %1, expected %2").arg(ce, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    QS_COMPARE_TENSORS(dce, g.out("grad_logits"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(dce, dlogits, kCrossEntropyVsNllAtol, 0.0);
}

void TestLayersGolden::goldenMse()
{
    const golden::GoldenCase g = golden::loadGolden("020_mse.json");
    Tensor grad;
    const float loss = mseLoss(g.in("pred"), g.in("target"), grad);
    QVERIFY2(std::abs(loss - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("loss %1, expected %2").arg(loss, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    QS_COMPARE_TENSORS(grad, g.out("grad_pred"), kRefAtol, kRefRtol);
}

void TestLayersGolden::goldenOptimizer_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("adam") << "021_optim_adam.json";
    QTest::newRow("sgd_momentum_weight_decay") << "022_optim_sgd_momentum.json";
}

void TestLayersGolden::goldenOptimizer()
{
    QFETCH(QString, file);
    const golden::GoldenCase g = golden::loadGolden(file);
    std::unique_ptr<Optimizer> opt;
    if (g.op == "adam") {
        AdamOptions o;
        o.lr = g.params.at("lr").get<float>();
        o.beta1 = g.params.at("betas").at(0).get<float>();
        o.beta2 = g.params.at("betas").at(1).get<float>();
        o.eps = g.params.at("eps").get<float>();
        o.weightDecay = g.params.at("weight_decay").get<float>();
        opt = std::make_unique<Adam>(o);
    } else {
        QCOMPARE(QString::fromStdString(g.op), QString("sgd_momentum"));
        SgdOptions o;
        o.lr = g.params.at("lr").get<float>();
        o.momentum = g.params.at("momentum").get<float>();
        o.weightDecay = g.params.at("weight_decay").get<float>();
        opt = std::make_unique<Sgd>(o);
    }
    Param p;
    p.name = "weight";
    p.value = g.in("p0");
    const std::vector<Param*> params = {&p};
    for (const char* grad : {"grad0", "grad1", "grad2"}) {
        p.grad = g.in(grad);
        opt->step(params);
    }
    QS_COMPARE_TENSORS(p.value, g.out("p3"), kOptimAtol, kOptimRtol);
}

void TestLayersGolden::dropoutMask()
{
    constexpr float kP = 0.25f;
    constexpr double kFractionTol = 0.01; // ~6 sigma for 1e5 Bernoulli draws
    Dropout d("dropout", kP);
    Rng rng(7);
    const Tensor x = randomTensor({10, 10000}, rng, 0.5f, 1.5f); // no zeros in the input
    RunContext ctx;
    ctx.training = true;
    ctx.rngKey = 99;
    Tensor y1, y2, y3, yEval;
    d.forward(x, y1, ctx);
    std::size_t zeros = 0;
    for (std::size_t i = 0; i < x.numel(); ++i) {
        if (y1[i] == 0.0f) {
            ++zeros;
            continue;
        }
        QCOMPARE(y1[i], x[i] * (1.0f / (1.0f - kP)));
    }
    const double fraction = static_cast<double>(zeros) / static_cast<double>(x.numel());
    QVERIFY2(std::abs(fraction - kP) < kFractionTol, qPrintable(QString("dropped %1").arg(fraction)));

    d.forward(x, y2, ctx);
    QVERIFY(bitIdentical(y1, y2));
    ctx.rngKey = 100;
    d.forward(x, y3, ctx);
    QVERIFY(!bitIdentical(y1, y3));

    d.forward(x, yEval, RunContext{});
    QVERIFY(bitIdentical(yEval, x));
}

// PyTorch sends the gradient of a window with equal values to the first one in scan order.
void TestLayersGolden::maxPoolTiesGoToFirstMaximum()
{
    MaxPool2d pool("pool", 2);
    const Tensor x({1, 1, 2, 4}, {1.0f, 2.0f, 5.0f, 5.0f, //
                                  2.0f, 2.0f, 5.0f, 5.0f});
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    pool.forward(x, y, ctx);
    QCOMPARE(y.values(), (std::vector<float>{2.0f, 5.0f}));
    pool.backward(x, y, Tensor({1, 1, 1, 2}, {10.0f, 20.0f}), dx, true);
    QCOMPARE(dx.values(), (std::vector<float>{0.0f, 10.0f, 20.0f, 0.0f, //
                                              0.0f, 0.0f, 0.0f, 0.0f}));
}

// BatchNorm re-estimation (Nagel et al. 2022; AIMET's reestimate_bn_stats): between begin and end,
// every forward pass normalises with its batch statistics, in evaluation mode and frozen alike,
// and the running statistics become the plain average of the batch means and unbiased batch
// variances over those passes, whatever they held before (not the momentum-0.1 moving average).
void TestLayersGolden::batchNormReestimationAveragesBatchStatistics()
{
    constexpr std::size_t N = 4, C = 3, H = 5, W = 5, HW = H * W, kPasses = 3;
    const float eps = 1e-5f;
    BatchNorm2d bn("bn", C, eps);
    Rng rng(7);
    bn.gamma().value = randomTensor({C}, rng, 0.5f, 2.0f);
    bn.beta().value = randomTensor({C}, rng);
    bn.runningMean() = randomTensor({C}, rng, 5.0f, 9.0f); // far from the data's statistics
    bn.runningVar() = randomTensor({C}, rng, 50.0f, 90.0f);
    bn.setFrozen(true); // re-estimation ignores the freeze; it stays frozen afterwards
    std::vector<Tensor> xs;
    for (std::size_t k = 0; k < kPasses; ++k) // a different mean and spread per pass
        xs.push_back(randomTensor({N, C, H, W}, rng, -1.0f - float(k), 1.0f + 2.0f * float(k)));

    bn.beginReestimation();
    QVERIFY(bn.reestimating());
    std::vector<double> meanSum(C, 0.0), varSum(C, 0.0);
    for (std::size_t k = 0; k < kPasses; ++k) {
        Tensor y;
        bn.forward(xs[k], y, RunContext{}); // evaluation mode
        for (std::size_t c = 0; c < C; ++c) {
            double s = 0.0, s2 = 0.0;
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < HW; ++i) s += xs[k][(n * C + c) * HW + i];
            const double mean = s / double(N * HW);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < HW; ++i) s2 += std::pow(xs[k][(n * C + c) * HW + i] - mean, 2);
            meanSum[c] += mean;
            varSum[c] += s2 / double(N * HW - 1);
            // this pass normalised with its own (biased) batch statistics
            const double inv = 1.0 / std::sqrt(s2 / double(N * HW) + eps);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < HW; ++i) {
                    const std::size_t j = (n * C + c) * HW + i;
                    const double want = bn.gamma().value[c] * (xs[k][j] - mean) * inv + bn.beta().value[c];
                    QVERIFY2(std::abs(y[j] - want) <= kRefAtol * (1.0 + std::abs(want)),
                             qPrintable(QString("pass %1 element %2: %3, expected %4").arg(k).arg(j).arg(y[j]).arg(want)));
                }
        }
    }
    bn.endReestimation();
    QVERIFY(!bn.reestimating());
    QVERIFY(bn.frozen());
    Tensor expMean({C}), expVar({C});
    for (std::size_t c = 0; c < C; ++c) {
        expMean[c] = static_cast<float>(meanSum[c] / kPasses);
        expVar[c] = static_cast<float>(varSum[c] / kPasses);
    }
    QS_COMPARE_TENSORS(bn.runningMean(), expMean, kRefAtol, kRunStatRtol * 10);
    QS_COMPARE_TENSORS(bn.runningVar(), expVar, 0.0, kRunStatRtol * 10);

    // After it, evaluation (and the frozen training pass) use the re-estimated statistics and no
    // longer change them.
    Tensor y;
    RunContext train;
    train.training = true;
    bn.forward(xs[0], y, train);
    QS_COMPARE_TENSORS(bn.runningVar(), expVar, 0.0, kRunStatRtol * 10);

    // A span without a forward pass leaves the statistics as they were, bit for bit (compared
    // with what they were, not with expMean/expVar, which they match only within rtol: the asan
    // build's running mean was 1 ulp from expMean, 2026-11-30).
    const Tensor meanBefore = bn.runningMean(), varBefore = bn.runningVar();
    bn.beginReestimation();
    bn.endReestimation();
    QS_COMPARE_TENSORS(bn.runningMean(), meanBefore, 0.0, 0.0);
    QS_COMPARE_TENSORS(bn.runningVar(), varBefore, 0.0, 0.0);
}

QTEST_GUILESS_MAIN(TestLayersGolden)
#include "tst_layers_golden.moc"
