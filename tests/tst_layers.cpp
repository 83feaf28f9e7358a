// Layers, losses and optimizers: PyTorch 1.13 reference vectors (tests/data/015..028), central-
// difference gradient checks for every layer and loss, and thread-count determinism.
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

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>

using namespace quantscope;

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
// The direct depthwise kernel against the im2col + GEMM path: the same sums in another order.
// y and dx sum k^2 products of magnitude <= 1 (seen: 2.4e-7 apart); dW and db sum N Ho Wo (up to
// 2352) of them (seen: 6.7e-6 apart on gradients of magnitude ~16).
constexpr double kDepthwiseAtol = 2e-6;
constexpr double kDepthwiseRtol = 1e-6;
constexpr double kDepthwiseGradAtol = 2e-5;
constexpr double kDepthwiseGradRtol = 1e-6;

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

Tensor randomTensor(const Shape& shape, Rng& rng, float lo = -1.0f, float hi = 1.0f)
{
    Tensor t(shape);
    for (float& v : t.values()) v = rng.uniform(lo, hi);
    return t;
}

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

// Runs f inside a TBB arena of `threads` threads.
template <typename F>
void inArena(int threads, F&& f)
{
    tbb::task_arena arena(threads);
    arena.execute(std::forward<F>(f));
}

bool bitIdentical(const Tensor& a, const Tensor& b)
{
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0;
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

    // fast kernels against their reference paths
    void depthwiseMatchesIm2col_data();
    void depthwiseMatchesIm2col();
    void directConvMatchesIm2col_data();
    void directConvMatchesIm2col();

    // behaviour around the gradient checks
    void dropoutMask();
    void maxPoolTiesGoToFirstMaximum();

    // determinism
    void threadCountDeterminism_data();
    void threadCountDeterminism();
    void bufferAlignmentDeterminism_data();
    void bufferAlignmentDeterminism();
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

void TestLayers::depthwiseMatchesIm2col_data()
{
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<bool>("bias");
    QTest::newRow("k3_s1_p0_11x9") << 3 << 1 << 0 << 11 << 9 << false;
    QTest::newRow("k3_s1_p1_11x9") << 3 << 1 << 1 << 11 << 9 << false;
    QTest::newRow("k3_s2_p0_11x9") << 3 << 2 << 0 << 11 << 9 << false;
    QTest::newRow("k3_s2_p1_11x9") << 3 << 2 << 1 << 11 << 9 << false;
    QTest::newRow("k3_s2_p1_8x10") << 3 << 2 << 1 << 8 << 10 << false;
    QTest::newRow("k3_s2_p1_7x7") << 3 << 2 << 1 << 7 << 7 << false;
    QTest::newRow("k3_s1_p1_3x5") << 3 << 1 << 1 << 3 << 5 << false;
    QTest::newRow("k3_s2_p1_2x2") << 3 << 2 << 1 << 2 << 2 << false;
    QTest::newRow("k3_s1_p1_28x28_bias") << 3 << 1 << 1 << 28 << 28 << true;
    QTest::newRow("k3_s2_p1_13x13_bias") << 3 << 2 << 1 << 13 << 13 << true;
    // stride 2 rows longer than one 32-float (de)interleave block, odd and even widths
    QTest::newRow("k3_s2_p1_28x28_mobilenet") << 3 << 2 << 1 << 28 << 28 << false;
    QTest::newRow("k3_s2_p1_5x37") << 3 << 2 << 1 << 5 << 37 << true;
    QTest::newRow("k3_s2_p0_6x34") << 3 << 2 << 0 << 6 << 34 << false;
    QTest::newRow("k5_s1_p2_9x7") << 5 << 1 << 2 << 9 << 7 << false;
    QTest::newRow("k4_s2_p1_9x10") << 4 << 2 << 1 << 9 << 10 << true;
    QTest::newRow("k3_s3_p1_10x11") << 3 << 3 << 1 << 10 << 11 << false;
    QTest::newRow("k1_s1_p0_5x5") << 1 << 1 << 0 << 5 << 5 << true;
    QTest::newRow("k7_s4_p3_17x15_largest_direct") << 7 << 4 << 3 << 17 << 15 << true;
    QTest::newRow("k9_s1_p4_11x11_takes_im2col") << 9 << 1 << 4 << 11 << 11 << false;
}

// Depthwise convolution runs a direct kernel (up to 7x7, stride 4); one input channel through a
// 1->1 Conv2d runs the im2col + GEMM path, the reference. Channel by channel, the two agree.
namespace {
// A fast kernel's inference forward gives its training forward's bits, and its backward without
// an input gradient gives the same weight gradient as with one (conv's current weight.grad).
bool inferenceAndWeightGradientOnlyAgree(Conv2d& conv, const Tensor& x, const Tensor& y, const Tensor& dy)
{
    Tensor yEval, yTrain, unused;
    conv.forward(x, yEval, RunContext{});
    if (!bitIdentical(yEval, y)) return false;
    const Tensor dW = conv.weight().grad;
    RunContext ctx;
    ctx.training = true;
    conv.forward(x, yTrain, ctx);
    conv.backward(x, yTrain, dy, unused, false);
    return bitIdentical(conv.weight().grad, dW);
}

} // namespace

void TestLayers::depthwiseMatchesIm2col()
{
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(bool, bias);
    Rng rng(stableHash(QTest::currentDataTag()));
    const std::size_t N = 3, C = 5, kk = static_cast<std::size_t>(k * k);
    Conv2d dw("dw", C, C, k, stride, pad, C, bias);
    QVERIFY(dw.isDepthwise());
    for (Param* p : dw.params()) p->value = randomTensor(p->value.shape(), rng);
    const Tensor x = randomTensor({N, C, std::size_t(H), std::size_t(W)}, rng);
    const Shape os = dw.outputShape(x.shape());
    const Tensor dy = randomTensor(os, rng);
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    dw.forward(x, y, ctx);
    dw.backward(x, y, dy, dx, true);

    const std::size_t HW = x.dim(2) * x.dim(3), HWo = os[2] * os[3];
    Tensor yRef(os), dxRef(x.shape()), dwRef(dw.weight().value.shape()), dbRef(dw.bias().value.shape());
    for (std::size_t c = 0; c < C; ++c) {
        Conv2d ref("ref", 1, 1, k, stride, pad, 1, bias);
        QVERIFY(!ref.isDepthwise());
        std::copy_n(dw.weight().value.data() + c * kk, kk, ref.weight().value.data());
        if (bias) ref.bias().value[0] = dw.bias().value[c];
        Tensor xc({N, 1, x.dim(2), x.dim(3)}), dyc({N, 1, os[2], os[3]}), yc, dxc;
        for (std::size_t n = 0; n < N; ++n) {
            std::copy_n(x.data() + (n * C + c) * HW, HW, xc.data() + n * HW);
            std::copy_n(dy.data() + (n * C + c) * HWo, HWo, dyc.data() + n * HWo);
        }
        ref.forward(xc, yc, ctx);
        ref.backward(xc, yc, dyc, dxc, true);
        for (std::size_t n = 0; n < N; ++n) {
            std::copy_n(yc.data() + n * HWo, HWo, yRef.data() + (n * C + c) * HWo);
            std::copy_n(dxc.data() + n * HW, HW, dxRef.data() + (n * C + c) * HW);
        }
        std::copy_n(ref.weight().grad.data(), kk, dwRef.data() + c * kk);
        if (bias) dbRef[c] = ref.bias().grad[0];
    }
    QS_COMPARE_TENSORS(y, yRef, kDepthwiseAtol, kDepthwiseRtol);
    QS_COMPARE_TENSORS(dx, dxRef, kDepthwiseAtol, kDepthwiseRtol);
    QS_COMPARE_TENSORS(dw.weight().grad, dwRef, kDepthwiseGradAtol, kDepthwiseGradRtol);
    if (bias) QS_COMPARE_TENSORS(dw.bias().grad, dbRef, kDepthwiseGradAtol, kDepthwiseGradRtol);

    QVERIFY(inferenceAndWeightGradientOnlyAgree(dw, x, y, dy));
}

void TestLayers::directConvMatchesIm2col_data()
{
    QTest::addColumn<int>("cin");
    QTest::addColumn<int>("cout");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("N");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<bool>("bias");
    // resnet8's layers, seed-cnn's unpadded conv2, and odd shapes: a last group of fewer images, output channels that fill
    // no register tile, 5x5 and 7x7, non-square planes, planes smaller than the kernel's reach.
    QTest::newRow("k3_16to16_28x28_N5") << 16 << 16 << 3 << 1 << 1 << 5 << 28 << 28 << false;
    QTest::newRow("k3_32to24_14x14_N11_bias") << 32 << 24 << 3 << 1 << 1 << 11 << 14 << 14 << true;
    QTest::newRow("k3_64to64_7x7_N19") << 64 << 64 << 3 << 1 << 1 << 19 << 7 << 7 << false;
    QTest::newRow("k3_8to70_5x6_N2_bias") << 8 << 70 << 3 << 1 << 1 << 2 << 5 << 6 << true;
    QTest::newRow("k5_9to13_9x11_N20") << 9 << 13 << 5 << 1 << 2 << 20 << 9 << 11 << true;
    QTest::newRow("k7_12to17_3x4_N3") << 12 << 17 << 7 << 1 << 3 << 3 << 3 << 4 << false;
    QTest::newRow("k3_p0_32to64_26x26_N9_seedcnn") << 32 << 64 << 3 << 1 << 0 << 9 << 26 << 26 << true;
    QTest::newRow("k3_p2_8to8_6x5_N4") << 8 << 8 << 3 << 1 << 2 << 4 << 6 << 5 << false;
    QTest::newRow("k5_p1_10to6_12x9_N5") << 10 << 6 << 5 << 1 << 1 << 5 << 12 << 9 << true;
    QTest::newRow("k2_p0_8to5_7x7_N3") << 8 << 5 << 2 << 1 << 0 << 3 << 7 << 7 << false;
    QTest::newRow("k4_p3_8to9_5x6_N2") << 8 << 9 << 4 << 1 << 3 << 2 << 5 << 6 << true;
    // strided: resnet8's downsampling convs, odd strides and paddings (strided 1x1 stays on Eigen)
    QTest::newRow("k3_s2_p1_16to32_28x28_N5") << 16 << 32 << 3 << 2 << 1 << 5 << 28 << 28 << false;
    QTest::newRow("k3_s2_p1_32to64_14x14_N19_bias") << 32 << 64 << 3 << 2 << 1 << 19 << 14 << 14 << true;
    QTest::newRow("k2_s2_p0_16to32_28x28_N3") << 16 << 32 << 2 << 2 << 0 << 3 << 28 << 28 << false;
    QTest::newRow("k3_s2_p0_8to6_9x8_N4") << 8 << 6 << 3 << 2 << 0 << 4 << 9 << 8 << true;
    QTest::newRow("k5_s3_p2_10to7_11x13_N3") << 10 << 7 << 5 << 3 << 2 << 3 << 11 << 13 << false;
    QTest::newRow("k4_s2_p1_9to5_10x9_N2_bias") << 9 << 5 << 4 << 2 << 1 << 2 << 10 << 9 << true;
}

// Convolutions with 8 or more input channels (groups 1, kernels up to 7x7) run the direct kernels; the same
// layer forced onto the im2col + GEMM path is their reference. Sums run in another order, so
// the tolerance is relative to the size of the terms.
void TestLayers::directConvMatchesIm2col()
{
    QFETCH(int, cin);
    QFETCH(int, cout);
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QFETCH(int, N);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(bool, bias);
    Rng rng(stableHash(QTest::currentDataTag()));
    Conv2d conv("conv", cin, cout, k, stride, pad, 1, bias), ref("ref", cin, cout, k, stride, pad, 1, bias);
    QVERIFY(conv.usesDirectKernel());
    ref.setReferencePath(true);
    QVERIFY(!ref.usesDirectKernel());
    for (std::size_t i = 0; i < conv.params().size(); ++i)
        ref.params()[i]->value = conv.params()[i]->value = randomTensor(conv.params()[i]->value.shape(), rng);
    const Tensor x = randomTensor({std::size_t(N), std::size_t(cin), std::size_t(H), std::size_t(W)}, rng);
    const Tensor dy = randomTensor(conv.outputShape(x.shape()), rng);
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx, yRef, dxRef;
    conv.forward(x, y, ctx);
    conv.backward(x, y, dy, dx, true);
    ref.forward(x, yRef, ctx);
    ref.backward(x, yRef, dy, dxRef, true);
    QCOMPARE(y.shape(), yRef.shape());
    // y and dx sum K = cin k k (cout k k) products of N(0, 1) terms in another order: an absolute
    // error of order eps K (seed-cnn's conv2 dx: 1.7e-5 at K = 576)
    const double eps = 2.5e-7;
    QS_COMPARE_TENSORS(y, yRef, eps * cin * k * k, 1e-5);
    QS_COMPARE_TENSORS(dx, dxRef, eps * cout * k * k, 1e-5);
    // dW sums N H W products of N(0, 1) terms: a few 1e-5 of absolute error in another order
    QS_COMPARE_TENSORS(conv.weight().grad, ref.weight().grad, 1e-4, 1e-5);
    if (bias) QS_COMPARE_TENSORS(conv.bias().grad, ref.bias().grad, 1e-4, 1e-5);

    QVERIFY(inferenceAndWeightGradientOnlyAgree(conv, x, y, dy));
}

// Inverted dropout: about p of the elements are zeroed, the rest scaled by 1/(1-p); the mask is
// a function of the step key only; evaluation is the identity.
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

namespace {

// Layers of training size for the determinism tests: 19 images give uneven chunks of the conv
// weight gradient; the linear layer has more than one column block of dW.
struct DeterminismSetup {
    LayerPtr layer;
    Tensor x, dy;
};

DeterminismSetup makeDeterminismSetup(const QString& layer)
{
    Rng rng(42);
    DeterminismSetup s;
    if (layer == "conv2d_k3_s1_p0") {
        s.layer = std::make_unique<Conv2d>("conv", 8, 16, 3);
        s.x = randomTensor({19, 8, 12, 12}, rng);
    } else if (layer == "conv2d_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 8, 16, 3, 2, 1);
        s.x = randomTensor({19, 8, 13, 13}, rng);
    } else if (layer == "conv2d_g4_k3_s1_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 8, 16, 3, 1, 1, 4);
        s.x = randomTensor({19, 8, 12, 12}, rng);
    } else if (layer == "conv2d_im2col_k3_s2_p1") { // fewer than 8 input channels: im2col + GEMM
        s.layer = std::make_unique<Conv2d>("conv", 4, 16, 3, 2, 1);
        s.x = randomTensor({19, 4, 13, 13}, rng);
    } else if (layer == "conv2d_direct_k3_s1_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 8, 16, 3, 1, 1);
        s.x = randomTensor({19, 8, 12, 12}, rng);
    } else if (layer == "depthwise_k3_s1_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 16, 16, 3, 1, 1, 16);
        s.x = randomTensor({19, 16, 12, 12}, rng);
    } else if (layer == "depthwise_k3_s2_p1") {
        s.layer = std::make_unique<Conv2d>("conv", 16, 16, 3, 2, 1, 16, false);
        s.x = randomTensor({19, 16, 13, 13}, rng);
    } else if (layer == "linear") {
        s.layer = std::make_unique<Linear>("fc", 2100, 30);
        s.x = randomTensor({70, 2100}, rng);
    } else {
        s.layer = std::make_unique<BatchNorm2d>("bn", 16);
        s.x = randomTensor({19, 16, 12, 12}, rng);
    }
    for (Param* p : s.layer->params()) p->value = randomTensor(p->value.shape(), rng);
    s.dy = randomTensor(s.layer->outputShape(s.x.shape()), rng);
    return s;
}

struct LayerRun {
    Tensor y, yEval, dx;
    std::vector<Tensor> grads;
};

LayerRun runLayer(Layer& l, const Tensor& x, const Tensor& dy, int threads)
{
    LayerRun out;
    inArena(threads, [&] {
        RunContext ctx;
        ctx.training = true;
        l.forward(x, out.y, ctx);
        l.backward(x, out.y, dy, out.dx, true);
        l.forward(x, out.yEval, RunContext{});
    });
    for (Param* p : l.params()) out.grads.push_back(p->grad);
    return out;
}

// "" when the two runs are bit-identical, else which tensor differs.
std::string compareRuns(const LayerRun& a, const LayerRun& b)
{
    if (!bitIdentical(a.y, b.y)) return "training forward y";
    if (!bitIdentical(a.yEval, b.yEval)) return "inference forward y";
    if (!bitIdentical(a.dx, b.dx)) return "dx";
    if (a.grads.size() != b.grads.size()) return "number of parameters";
    for (std::size_t k = 0; k < a.grads.size(); ++k)
        if (!bitIdentical(a.grads[k], b.grads[k])) return "gradient of parameter " + std::to_string(k);
    return {};
}

void determinismRows()
{
    QTest::addColumn<QString>("layer");
    for (const char* row : {"conv2d_k3_s1_p0", "conv2d_k3_s2_p1", "conv2d_g4_k3_s1_p1", "conv2d_direct_k3_s1_p1",
                            "conv2d_im2col_k3_s2_p1",
                            "depthwise_k3_s1_p1", "depthwise_k3_s2_p1", "linear", "batchnorm2d"})
        QTest::newRow(row) << QString(row);
}

} // namespace

void TestLayers::threadCountDeterminism_data() { determinismRows(); }

// Training must not depend on the thread count: forward and backward of one layer are
// bit-identical in an arena of 1 thread and of 2 threads.
void TestLayers::threadCountDeterminism()
{
    QFETCH(QString, layer);
    // A fresh layer per run: BatchNorm's running statistics move with every training forward.
    DeterminismSetup s1 = makeDeterminismSetup(layer), s2 = makeDeterminismSetup(layer);
    const LayerRun one = runLayer(*s1.layer, s1.x, s1.dy, 1);
    const LayerRun two = runLayer(*s2.layer, s2.x, s2.dy, 2);
    const std::string diff = compareRuns(one, two);
    QVERIFY2(diff.empty(), ("1 vs 2 threads: " + diff).c_str());
}

void TestLayers::bufferAlignmentDeterminism_data() { determinismRows(); }

// Nor on where the tensors happen to sit in memory: copies of x and dy at different addresses
// (vectorised reductions peel unaligned heads, which changes the rounding) give the same bits.
void TestLayers::bufferAlignmentDeterminism()
{
    QFETCH(QString, layer);
    DeterminismSetup s = makeDeterminismSetup(layer);
    // Consecutive heap blocks of this size (< the mmap threshold) start at different offsets
    // modulo a 64-byte AVX-512 line.
    std::vector<Tensor> xs(6, s.x), dys(6, s.dy);
    std::vector<std::uintptr_t> offsets;
    for (const Tensor& t : dys) offsets.push_back(reinterpret_cast<std::uintptr_t>(t.data()) % 64);
    std::sort(offsets.begin(), offsets.end());
    if (std::unique(offsets.begin(), offsets.end()) - offsets.begin() < 2)
        QSKIP("the allocator gave every copy the same alignment");
    const LayerRun ref = runLayer(*s.layer, xs[0], dys[0], 1);
    for (std::size_t k = 1; k < xs.size(); ++k) {
        DeterminismSetup fresh = makeDeterminismSetup(layer);
        const std::string diff = compareRuns(ref, runLayer(*fresh.layer, xs[k], dys[k], 1));
        QVERIFY2(diff.empty(), ("copy " + std::to_string(k) + ": " + diff).c_str());
    }
}

QTEST_GUILESS_MAIN(TestLayers)
#include "tst_layers.moc"
