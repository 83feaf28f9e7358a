// Layers, losses and optimizers: PyTorch 1.13 reference vectors (tests/data/015..028) and
// central-difference gradient checks for every layer and loss. The fast kernels against their
// reference paths and thread-count determinism are in tst_layer_kernels.cpp.
#include "data/dataset.h"
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
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
// Central differences on float layers: L = sum(r * y) is accumulated in double and the step is
// the float-representable difference (x + eps) - (x - eps). Rounding of y (~1e-7 relative)
// divided by 2 eps gives ~1e-4 absolute noise; curvature (BatchNorm, log-softmax) adds O(eps^2).
constexpr float kGradEps = 1e-2f;
constexpr double kGradAtol = 2e-3;
constexpr double kGradRtol = 1e-2;
// A whole model with a ReLU inside. Every ReLU input keeps kModelReluMargin from the kink; a step
// of kModelGradEps on any parameter moves it by less than that (stem weights: eps |x| times the
// sum of 27 conv weights below 1/sqrt(27), about 5 eps; the others less), so no step crosses 0.
// A step of kGradEps would need a margin that random graphs of this size never have. The float
// noise of the smaller step (~1e-7 / 2e-3) stays far under kGradAtol.
constexpr float kModelGradEps = 1e-3f;
constexpr float kModelReluMargin = 1e-2f;
// Max-pooling inputs are spaced this far apart, so a +-eps step never moves the argmax.
constexpr float kDistinctSpacing = 0.05f;
// ReLU inputs keep at least this distance from the kink at 0 (ReLU6: and from the one at 6).
constexpr float kReluMargin = 0.1f;
// Losses return float means; their steps can be smaller since they are cheap and smooth.
constexpr float kLossEps = 1e-2f;
constexpr double kLossGradAtol = 1e-4;
constexpr double kLossGradRtol = 1e-2;


// Every element distinct and at least kDistinctSpacing from every other (a shuffled grid).
Tensor distinctTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    const std::vector<std::size_t> perm = seededPermutation(t.numel(), rng.next());
    for (std::size_t i = 0; i < t.numel(); ++i)
        t[i] = (static_cast<float>(perm[i]) - static_cast<float>(t.numel()) / 2.0f) * kDistinctSpacing;
    return t;
}

// |x| in [kReluMargin, 1], random sign.
Tensor awayFromZeroTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    for (float& v : t.values()) v = (rng.uniform() < 0.5f ? -1.0f : 1.0f) * rng.uniform(kReluMargin, 1.0f);
    return t;
}

// Uniform in [-1, 7] (both sides of both ReLU6 kinks), at least kReluMargin from 0 and from 6.
Tensor awayFromRelu6KinksTensor(const Shape& shape, Rng& rng)
{
    Tensor t(shape);
    for (float& v : t.values()) {
        v = rng.uniform(-1.0f, 7.0f);
        for (const float kink : {0.0f, 6.0f})
            if (std::abs(v - kink) < kReluMargin) v = kink + (v < kink ? -kReluMargin : kReluMargin);
    }
    return t;
}

double dot(const Tensor& r, const Tensor& y)
{
    double s = 0.0;
    for (std::size_t i = 0; i < y.numel(); ++i) s += static_cast<double>(r[i]) * y[i];
    return s;
}

// Compares analytic[i] with the central difference of loss() in values[i], for every i.
// Returns "" when all agree, else the worst element.
std::string numericCheck(const std::string& what, float* values, const float* analytic, std::size_t n, float eps,
                         double atol, double rtol, const std::function<double()>& loss)
{
    double worst = 0.0, worstNum = 0.0, worstAna = 0.0;
    std::size_t worstAt = 0, bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const float orig = values[i];
        const float up = orig + eps, down = orig - eps;
        values[i] = up;
        const double lp = loss();
        values[i] = down;
        const double lm = loss();
        values[i] = orig;
        const double num = (lp - lm) / (static_cast<double>(up) - static_cast<double>(down));
        const double ana = analytic[i];
        const double excess = std::abs(num - ana) - (atol + rtol * std::max(std::abs(num), std::abs(ana)));
        if (excess > 0.0 && (bad++ == 0 || excess > worst)) {
            worst = excess;
            worstAt = i;
            worstNum = num;
            worstAna = ana;
        }
    }
    if (bad == 0) return {};
    return what + ": " + std::to_string(bad) + " of " + std::to_string(n) + " gradients differ; worst at " +
           std::to_string(worstAt) + ": analytic " + std::to_string(worstAna) + ", numeric " + std::to_string(worstNum);
}

// A layer under a gradient check, with an input that keeps it away from kinks and ties.
struct GradSetup {
    LayerPtr layer;
    Tensor x;
    Tensor x2; // second input of a two-input layer (Add); empty otherwise
};

GradSetup makeGradSetup(const QString& row, Rng& rng)
{
    GradSetup s;
    if (row == "conv2d_k3_s1_p0") {
        s.layer = std::make_unique<Conv2d>("conv", 2, 3, 3);
        s.x = randomTensor({2, 2, 6, 6}, rng);
    } else if (row == "conv2d_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 2, 3, 3, 2, 1);
        s.x = randomTensor({2, 2, 7, 7}, rng);
    } else if (row == "conv2d_k5_s1_p2") {
        s.layer = std::make_unique<Conv2d>("conv", 1, 2, 5, 1, 2);
        s.x = randomTensor({2, 1, 6, 6}, rng);
    } else if (row == "conv2d_direct_k3_s1_p1_bias") { // the direct stride-1 kernels (conv_direct.h)
        s.layer = std::make_unique<Conv2d>("conv", 8, 3, 3, 1, 1, 1, true);
        s.x = randomTensor({3, 8, 5, 6}, rng);
    } else if (row == "conv2d_direct_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 8, 3, 3, 2, 1, 1, true);
        s.x = randomTensor({2, 8, 6, 7}, rng);
    } else if (row == "conv2d_direct_k5_s1_p2") {
        s.layer = std::make_unique<Conv2d>("conv", 9, 2, 5, 1, 2, 1, false);
        s.x = randomTensor({2, 9, 4, 5}, rng);
    } else if (row == "conv2d_g2_k3_s1_p1_bias") {
        s.layer = std::make_unique<Conv2d>("conv", 4, 6, 3, 1, 1, 2, true);
        s.x = randomTensor({2, 4, 5, 5}, rng);
    } else if (row == "conv2d_g2_k3_s2_p0_nobias") {
        s.layer = std::make_unique<Conv2d>("conv", 4, 2, 3, 2, 0, 2, false);
        s.x = randomTensor({2, 4, 7, 6}, rng);
    } else if (row == "conv2d_g3_k1_channel_multiplier") { // groups == Cin but Cout = 2 Cin: not depthwise
        s.layer = std::make_unique<Conv2d>("conv", 3, 6, 1, 1, 0, 3, true);
        s.x = randomTensor({2, 3, 4, 4}, rng);
    } else if (row == "depthwise_k3_s1_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 3, 3, 3, 1, 1, 3, false);
        s.x = randomTensor({2, 3, 5, 6}, rng);
    } else if (row == "depthwise_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 3, 3, 3, 2, 1, 3, false);
        s.x = randomTensor({2, 3, 7, 6}, rng);
    } else if (row == "depthwise_k3_s2_p1_bias") {
        s.layer = std::make_unique<Conv2d>("conv", 2, 2, 3, 2, 1, 2, true);
        s.x = randomTensor({2, 2, 6, 7}, rng);
    } else if (row == "batchnorm2d_train" || row == "batchnorm2d_frozen") {
        auto bn = std::make_unique<BatchNorm2d>("bn", 3);
        if (row == "batchnorm2d_frozen") {
            bn->setFrozen(true);
            bn->runningMean() = randomTensor({3}, rng, -0.5f, 0.5f);
            bn->runningVar() = randomTensor({3}, rng, 0.5f, 2.0f);
        }
        s.layer = std::move(bn);
        s.x = randomTensor({4, 3, 3, 3}, rng, -1.0f, 2.0f);
    } else if (row == "relu") {
        s.layer = std::make_unique<ReLU>("relu");
        s.x = awayFromZeroTensor({2, 3, 4, 4}, rng);
    } else if (row == "relu6") {
        s.layer = std::make_unique<ReLU6>("relu6");
        s.x = awayFromRelu6KinksTensor({2, 3, 4, 4}, rng);
    } else if (row == "avgpool2d_k2") {
        s.layer = std::make_unique<AvgPool2d>("pool", 2);
        s.x = randomTensor({2, 2, 6, 5}, rng); // the odd last column is dropped (floor)
    } else if (row == "avgpool2d_k3_s2_overlapping") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3, 2);
        s.x = randomTensor({1, 2, 7, 7}, rng);
    } else if (row == "avgpool2d_k3_s3_tiled") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3);
        s.x = randomTensor({2, 2, 8, 7}, rng); // the last two rows and the last column are in no window
    } else if (row == "avgpool2d_k3_s2_p1") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3, 2, 1); // zero padding counted in the mean
        s.x = randomTensor({2, 2, 7, 6}, rng);
    } else if (row == "avgpool2d_k3_s1_p1") {
        s.layer = std::make_unique<AvgPool2d>("pool", 3, 1, 1);
        s.x = randomTensor({1, 2, 5, 5}, rng);
    } else if (row == "global_avgpool2d") {
        s.layer = std::make_unique<GlobalAvgPool2d>("pool");
        s.x = randomTensor({2, 3, 5, 4}, rng);
    } else if (row == "add") {
        s.layer = std::make_unique<Add>("add");
        s.x = randomTensor({2, 3, 3, 4}, rng);
        s.x2 = randomTensor({2, 3, 3, 4}, rng);
    } else if (row == "maxpool2d_k2") {
        s.layer = std::make_unique<MaxPool2d>("pool", 2);
        s.x = distinctTensor({2, 2, 6, 6}, rng);
    } else if (row == "maxpool2d_k3_s2_overlapping") {
        s.layer = std::make_unique<MaxPool2d>("pool", 3, 2);
        s.x = distinctTensor({1, 2, 7, 7}, rng);
    } else if (row == "maxpool2d_k3_s2_p1") { // a ResNet stem: -inf padding
        s.layer = std::make_unique<MaxPool2d>("pool", 3, 2, 1);
        s.x = distinctTensor({2, 2, 7, 6}, rng);
    } else if (row == "maxpool2d_k2_s2_p1") {
        s.layer = std::make_unique<MaxPool2d>("pool", 2, 2, 1);
        s.x = distinctTensor({1, 2, 5, 5}, rng);
    } else if (row == "dropout_p0.5") {
        s.layer = std::make_unique<Dropout>("dropout", 0.5f);
        s.x = randomTensor({2, 3, 4, 4}, rng);
    } else if (row == "flatten") {
        s.layer = std::make_unique<Flatten>("flatten");
        s.x = randomTensor({2, 3, 2, 2}, rng);
    } else if (row == "linear") {
        s.layer = std::make_unique<Linear>("fc", 5, 4);
        s.x = randomTensor({3, 5}, rng);
    } else if (row == "log_softmax") {
        s.layer = std::make_unique<LogSoftmax>("log_softmax");
        s.x = randomTensor({3, 6}, rng, -3.0f, 3.0f);
    }
    // Parameters away from their defaults (BatchNorm gamma = 1, beta = 0; conv/linear = 0).
    if (s.layer)
        for (Param* p : s.layer->params())
            p->value = p->name == "gamma" ? randomTensor(p->value.shape(), rng, 0.5f, 1.5f)
                                          : randomTensor(p->value.shape(), rng, -0.5f, 0.5f);
    return s;
}




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

} // namespace

class TestLayers : public QObject {
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

    // numerical gradients
    void layerGradient_data();
    void layerGradient();
    void modelGradient_data();
    void modelGradient();
    void lossGradient_data();
    void lossGradient();

    // behaviour around the gradient checks
    void dropoutMask();
    void maxPoolTiesGoToFirstMaximum();
    void batchNormReestimationAveragesBatchStatistics();
};

void TestLayers::goldenConv2d()
{
    const golden::GoldenCase g = golden::loadGolden("015_conv2d.json");
    const Tensor& w = g.in("w");
    Conv2d conv("conv", w.dim(1), w.dim(0), w.dim(2), g.params.at("stride").get<std::size_t>(),
                g.params.at("padding").get<std::size_t>());
    conv.weight().value = w;
    conv.bias().value = g.in("b");
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    conv.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    conv.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(conv.weight().grad, g.out("grad_w"), kRefGradAtol, kRefGradRtol);
    QS_COMPARE_TENSORS(conv.bias().grad, g.out("grad_b"), kRefGradAtol, kRefGradRtol);

    // Inference takes the other im2col path (per-thread scratch, no cache): same numbers.
    Tensor yEval;
    conv.forward(g.in("x"), yEval, RunContext{});
    QVERIFY(bitIdentical(yEval, y));
}

void TestLayers::goldenGroupedConv2d_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("depthwise_s2_p1") << "023_conv2d_depthwise_s2_p1.json";
    QTest::newRow("groups2_p1") << "024_conv2d_grouped_p1.json";
}

// Grouped and depthwise convolutions without bias (the depthwise row runs the direct kernel).
void TestLayers::goldenGroupedConv2d()
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
    conv.weight().value = w;
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    conv.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    conv.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(conv.weight().grad, g.out("grad_w"), kRefGradAtol, kRefGradRtol);

    Tensor yEval;
    conv.forward(g.in("x"), yEval, RunContext{});
    QVERIFY(bitIdentical(yEval, y));
}

void TestLayers::goldenMaxPool2d()
{
    const golden::GoldenCase g = golden::loadGolden("016_max_pool2d.json");
    MaxPool2d pool("pool", g.params.at("kernel").get<std::size_t>(), g.params.at("stride").get<std::size_t>());
    // Max and routing are exact: no arithmetic beyond a copy and one addition per window.
    compareParameterFree(pool, g, 0.0, 0.0);
}

void TestLayers::goldenAvgPool2d()
{
    const golden::GoldenCase g = golden::loadGolden("027_avg_pool2d.json");
    AvgPool2d pool("pool", g.params.at("kernel").get<std::size_t>(), g.params.at("stride").get<std::size_t>());
    compareParameterFree(pool, g, kRefAtol, kRefRtol);
}

void TestLayers::goldenGlobalAvgPool2d()
{
    const golden::GoldenCase g = golden::loadGolden("026_global_avg_pool2d.json");
    GlobalAvgPool2d pool("pool");
    compareParameterFree(pool, g, kRefAtol, kRefRtol);
}

// Through the multi-input form the Model calls. One float addition per element, gradients are
// copies: exact.
void TestLayers::goldenAdd()
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
void TestLayers::goldenReLU6()
{
    const golden::GoldenCase g = golden::loadGolden("028_relu6.json");
    const Tensor& x = g.in("x");
    QVERIFY(std::count(x.values().begin(), x.values().end(), 0.0f) > 0);
    QVERIFY(std::count(x.values().begin(), x.values().end(), 6.0f) > 0);
    ReLU6 relu6("relu6");
    compareParameterFree(relu6, g, 0.0, 0.0);
}

void TestLayers::goldenLinear()
{
    const golden::GoldenCase g = golden::loadGolden("017_linear.json");
    const Tensor& w = g.in("w");
    Linear fc("fc", w.dim(1), w.dim(0));
    fc.weight().value = w;
    fc.bias().value = g.in("b");
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    fc.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    fc.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(fc.weight().grad, g.out("grad_w"), kRefGradAtol, kRefGradRtol);
    QS_COMPARE_TENSORS(fc.bias().grad, g.out("grad_b"), kRefGradAtol, kRefGradRtol);
}

void TestLayers::goldenBatchNorm2dTrain()
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

void TestLayers::goldenLogSoftmaxNll()
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

void TestLayers::goldenMse()
{
    const golden::GoldenCase g = golden::loadGolden("020_mse.json");
    Tensor grad;
    const float loss = mseLoss(g.in("pred"), g.in("target"), grad);
    QVERIFY2(std::abs(loss - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("loss %1, expected %2").arg(loss, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    QS_COMPARE_TENSORS(grad, g.out("grad_pred"), kRefAtol, kRefRtol);
}

void TestLayers::goldenOptimizer_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("adam") << "021_optim_adam.json";
    QTest::newRow("sgd_momentum_weight_decay") << "022_optim_sgd_momentum.json";
}

void TestLayers::goldenOptimizer()
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

void TestLayers::layerGradient_data()
{
    QTest::addColumn<QString>("layer");
    for (const char* row :
         {"conv2d_k3_s1_p0", "conv2d_k3_s2_p1", "conv2d_k5_s1_p2", "conv2d_direct_k3_s1_p1_bias",
          "conv2d_direct_k5_s1_p2", "conv2d_direct_k3_s2_p1", "conv2d_g2_k3_s1_p1_bias",
          "conv2d_g2_k3_s2_p0_nobias", "conv2d_g3_k1_channel_multiplier", "depthwise_k3_s1_p1", "depthwise_k3_s2_p1",
          "depthwise_k3_s2_p1_bias", "batchnorm2d_train", "batchnorm2d_frozen", "relu", "relu6", "maxpool2d_k2",
          "maxpool2d_k3_s2_overlapping", "maxpool2d_k3_s2_p1", "maxpool2d_k2_s2_p1", "avgpool2d_k2",
          "avgpool2d_k3_s2_overlapping", "avgpool2d_k3_s3_tiled", "avgpool2d_k3_s2_p1", "avgpool2d_k3_s1_p1",
          "global_avgpool2d", "add", "dropout_p0.5", "flatten", "linear", "log_softmax"})
        QTest::newRow(row) << QString(row);
}

// L = sum(r * layer(x)) for a fixed random r: dL/dy = r, so backward(dy = r) must give dL/dx
// and dL/dparam, which we compare with central differences of L.
void TestLayers::layerGradient()
{
    QFETCH(QString, layer);
    Rng rng(stableHash(qPrintable(layer)));
    GradSetup s = makeGradSetup(layer, rng);
    QVERIFY2(s.layer, qPrintable("no set-up for " + layer));
    Layer& l = *s.layer;
    RunContext ctx;
    ctx.training = true;
    ctx.rngKey = 0xC0FFEE; // fixed: dropout draws the same mask on every forward

    // Through the multi-input forms, which forward to the plain ones for single-input layers.
    std::vector<Tensor> xs = {s.x};
    if (!s.x2.empty()) xs.push_back(s.x2);
    QCOMPARE(xs.size(), l.numInputs());
    std::vector<const Tensor*> in;
    std::vector<Shape> inShapes;
    for (const Tensor& t : xs) {
        in.push_back(&t);
        inShapes.push_back(t.shape());
    }
    Tensor y;
    l.forwardMulti(in, y, ctx);
    QCOMPARE(y.shape(), l.outputShapeMulti(inShapes));
    const Tensor r = randomTensor(y.shape(), rng);
    std::vector<Tensor> dxs(xs.size());
    std::vector<Tensor*> dxPtrs;
    for (Tensor& t : dxs) dxPtrs.push_back(&t);
    l.backwardMulti(in, y, r, dxPtrs);
    std::vector<Tensor> paramGrads;
    for (Param* p : l.params()) paramGrads.push_back(p->grad);

    Tensor yy;
    const auto loss = [&] {
        l.forwardMulti(in, yy, ctx);
        return dot(r, yy);
    };
    std::string err;
    for (std::size_t j = 0; j < xs.size(); ++j) {
        QCOMPARE(dxs[j].shape(), xs[j].shape());
        err = numericCheck("dL/dx" + std::to_string(j), xs[j].data(), dxs[j].data(), xs[j].numel(), kGradEps,
                           kGradAtol, kGradRtol, loss);
        QVERIFY2(err.empty(), err.c_str());
    }

    const std::vector<Param*> params = l.params();
    for (std::size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        QCOMPARE(paramGrads[k].shape(), p.value.shape());
        err = numericCheck("dL/d" + p.name, p.value.data(), paramGrads[k].data(), p.value.numel(), kGradEps,
                           kGradAtol, kGradRtol, loss);
        QVERIFY2(err.empty(), err.c_str());
    }
}

void TestLayers::modelGradient_data()
{
    QTest::addColumn<QString>("graph");
    QTest::newRow("residual_block") << "residual_block";
    QTest::newRow("one_activation_read_three_times") << "one_activation_read_three_times";
}

// A whole graph model: L = sum(r * model(x)), model.backward(r), every parameter against central
// differences. The stem's output is read by more than one layer, so the stem's gradients are
// right only if the model sums the gradients flowing back along every read.
void TestLayers::modelGradient()
{
    QFETCH(QString, graph);
    Rng rng(stableHash(qPrintable(graph)));
    Model m(graph.toStdString(), {2, 4, 4});
    const std::size_t stem = m.add(std::make_unique<Conv2d>("stem", 2, 3, 3, 1, 1));
    std::size_t reluInput = 0; // activation index of the ReLU's input, 0 = no ReLU
    if (graph == "residual_block") {
        // stem -> conv -> relu -> conv, + identity shortcut from the stem, Add, flatten, linear
        reluInput = m.add(std::make_unique<Conv2d>("conv1", 3, 3, 3, 1, 1));
        m.add(std::make_unique<ReLU>("relu"));
        const std::size_t branch = m.add(std::make_unique<Conv2d>("conv2", 3, 3, 3, 1, 1, 1, false));
        m.add(std::make_unique<Add>("add"), {branch, stem});
    } else {
        // stem + stem, then + stem again: three reads of one activation, two by the same layer
        const std::size_t twice = m.add(std::make_unique<Add>("add1"), {stem, stem});
        m.add(std::make_unique<Add>("add2"), {stem, twice});
    }
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc", 3 * 4 * 4, 4));
    QCOMPARE(m.consumersOf(stem).size(), graph == "residual_block" ? std::size_t{2} : std::size_t{3});

    RunContext ctx;
    ctx.training = true;
    // Redraw input and parameters until every ReLU input keeps its margin from 0 (a few draws).
    Tensor x;
    const auto reluClear = [&] {
        if (!reluInput) return true;
        const std::vector<float>& v = m.activation(reluInput).values();
        return std::all_of(v.begin(), v.end(), [](float a) { return std::abs(a) >= kModelReluMargin; });
    };
    int draws = 0;
    do {
        x = randomTensor({2, 2, 4, 4}, rng);
        m.initParams(rng.next());
        m.forward(x, ctx);
    } while (!reluClear() && ++draws < 1000);
    QVERIFY2(reluClear(), "no draw kept the ReLU inputs clear of 0");

    const Tensor y = m.forward(x, ctx);
    QCOMPARE(y.shape(), m.outputShape(2));
    const Tensor r = randomTensor(y.shape(), rng);
    m.backward(r);
    const std::vector<Param*> params = m.params();
    std::vector<Tensor> analytic;
    for (Param* p : params) analytic.push_back(p->grad);

    const auto loss = [&] { return dot(r, m.forward(x, ctx)); };
    for (std::size_t k = 0; k < params.size(); ++k) {
        const std::string err = numericCheck("dL/d" + std::to_string(k) + "." + params[k]->name,
                                             params[k]->value.data(), analytic[k].data(), analytic[k].numel(),
                                             kModelGradEps, kGradAtol, kGradRtol, loss);
        QVERIFY2(err.empty(), err.c_str());
    }
}

void TestLayers::lossGradient_data()
{
    QTest::addColumn<QString>("loss");
    QTest::newRow("nll") << "nll";
    QTest::newRow("cross_entropy") << "cross_entropy";
    QTest::newRow("mse") << "mse";
}

void TestLayers::lossGradient()
{
    QFETCH(QString, loss);
    Rng rng(stableHash(qPrintable(loss)));
    const std::vector<std::int32_t> targets = {3, 0, 4, 4, 1};
    Tensor x, grad, scratch;
    std::function<float(Tensor&)> f;
    if (loss == "nll") {
        // log-probabilities of 5 samples over 5 classes (NLL does not need them normalised)
        Tensor lp = randomTensor({5, 5}, rng, -4.0f, 0.0f);
        x = lp;
        f = [&](Tensor& g) { return nllLoss(x, targets, g); };
    } else if (loss == "cross_entropy") {
        x = randomTensor({5, 5}, rng, -3.0f, 3.0f);
        f = [&](Tensor& g) { return crossEntropyLoss(x, targets, g); };
    } else {
        x = randomTensor({4, 6}, rng);
        const Tensor target = randomTensor({4, 6}, rng);
        f = [&, target](Tensor& g) { return mseLoss(x, target, g); };
    }
    f(grad);
    QCOMPARE(grad.shape(), x.shape());
    const Tensor analytic = grad;
    const std::string err = numericCheck("dL/dinput", x.data(), analytic.data(), x.numel(), kLossEps, kLossGradAtol,
                                         kLossGradRtol, [&] { return static_cast<double>(f(scratch)); });
    QVERIFY2(err.empty(), err.c_str());
}

void TestLayers::dropoutMask()
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
void TestLayers::maxPoolTiesGoToFirstMaximum()
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

QTEST_GUILESS_MAIN(TestLayers)
// BatchNorm re-estimation (Nagel et al. 2022; AIMET's reestimate_bn_stats): between begin and end,
// every forward pass normalises with its batch statistics, in evaluation mode and frozen alike,
// and the running statistics become the plain average of the batch means and unbiased batch
// variances over those passes, whatever they held before (not the momentum-0.1 moving average).
void TestLayers::batchNormReestimationAveragesBatchStatistics()
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

#include "tst_layers.moc"
