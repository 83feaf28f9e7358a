// Layers' fast kernels against their reference paths (the direct depthwise and dense
// convolution kernels against im2col + GEMM), and determinism: every layer gives the same bits in
// arenas of 1 and 2 threads and whatever the alignment of its buffers.
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "tensor/bf16.h"
#include "nn/conv_direct.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "tensor/gemm_bf16.h"
#include "util/errors.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>

using namespace quantscope;
using namespace quantscope::testing;

namespace {
// The direct depthwise kernel against the im2col + GEMM path: the same sums in another order.
// y and dx sum k^2 products of magnitude <= 1 (seen: 2.4e-7 apart); dW and db sum N Ho Wo (up to
// 2352) of them (seen: 6.7e-6 apart on gradients of magnitude ~16).
constexpr double kDepthwiseAtol = 2e-6;
constexpr double kDepthwiseRtol = 1e-6;
constexpr double kDepthwiseGradAtol = 2e-5;
constexpr double kDepthwiseGradRtol = 1e-6;
} // namespace

class TestLayerKernels : public QObject {
    Q_OBJECT

private slots:
    void depthwiseMatchesIm2col_data();
    void depthwiseMatchesIm2col();
    void directConvMatchesIm2col_data();
    void directConvMatchesIm2col();
    void addedInputGradientIsBitIdentical_data() { directConvMatchesIm2col_data(); }
    void addedInputGradientIsBitIdentical();
    void channelsWeightGradientSumsInOrder_data();
    void channelsWeightGradientSumsInOrder();
    void maxPool2x2MatchesScalarRules_data();
    void maxPool2x2MatchesScalarRules();

    void threadCountDeterminism_data();
    void threadCountDeterminism();
    void bufferAlignmentDeterminism_data();
    void bufferAlignmentDeterminism();
};

void TestLayerKernels::depthwiseMatchesIm2col_data()
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

void TestLayerKernels::depthwiseMatchesIm2col()
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

void TestLayerKernels::directConvMatchesIm2col_data()
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
    // strided: resnet8's downsampling convs, odd strides and paddings
    QTest::newRow("k3_s2_p1_16to32_28x28_N5") << 16 << 32 << 3 << 2 << 1 << 5 << 28 << 28 << false;
    QTest::newRow("k3_s2_p1_32to64_14x14_N19_bias") << 32 << 64 << 3 << 2 << 1 << 19 << 14 << 14 << true;
    QTest::newRow("k2_s2_p0_16to32_28x28_N3") << 16 << 32 << 2 << 2 << 0 << 3 << 28 << 28 << false;
    QTest::newRow("k3_s2_p0_8to6_9x8_N4") << 8 << 6 << 3 << 2 << 0 << 4 << 9 << 8 << true;
    QTest::newRow("k5_s3_p2_10to7_11x13_N3") << 10 << 7 << 5 << 3 << 2 << 3 << 11 << 13 << false;
    QTest::newRow("k4_s2_p1_9to5_10x9_N2_bias") << 9 << 5 << 4 << 2 << 1 << 2 << 10 << 9 << true;
    // 31 = 3 x 10 + 1 columns: dy's runs do not line up with the phase runs (the bf16 products'
    // im2col fallback)
    QTest::newRow("k2_s3_p0_8to6_31x31_N2") << 8 << 6 << 2 << 3 << 0 << 2 << 31 << 31 << false;
    // strided 1x1 (the sampled pixels only): resnet8's projection shortcuts, planes that the
    // stride does not divide, a last group of fewer images, output channels past a register tile
    QTest::newRow("k1_s2_p0_16to32_28x28_N5") << 16 << 32 << 1 << 2 << 0 << 5 << 28 << 28 << false;
    QTest::newRow("k1_s2_p0_32to64_14x14_N19_bias") << 32 << 64 << 1 << 2 << 0 << 19 << 14 << 14 << true;
    QTest::newRow("k1_s3_p0_9to5_10x8_N3_bias") << 9 << 5 << 1 << 3 << 0 << 3 << 10 << 8 << true;
    QTest::newRow("k1_s2_p0_8to70_7x9_N37") << 8 << 70 << 1 << 2 << 0 << 37 << 7 << 9 << false;
}

namespace {
// A row of directConvMatchesIm2col_data.
struct DirectConvCase {
    int cin, cout, k, stride, pad, N, H, W;
    bool bias;
};

DirectConvCase fetchDirectConvCase()
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
    return {cin, cout, k, stride, pad, N, H, W, bias};
}
} // namespace

// Convolutions with 8 or more input channels (groups 1, kernels up to 7x7) run the direct kernels; the same
// layer forced onto the im2col + GEMM path is their reference. Sums run in another order, so
// the tolerance is relative to the size of the terms.
void TestLayerKernels::directConvMatchesIm2col()
{
    const auto [cin, cout, k, stride, pad, N, H, W, bias] = fetchDirectConvCase();
    if (!Conv2d::directKernelsBuilt())
        QSKIP("built without AVX-512: every convolution runs im2col + Eigen (Conv2d::directKernelsBuilt)");
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
    // dx starts as NaN (as a reused gradient buffer holds stale values): every path must write
    // every element
    Tensor y, dx(x.shape()), yRef, dxRef;
    dx.fill(std::numeric_limits<float>::quiet_NaN());
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

    // The weight gradient's other AVX-512 kernel (conv_direct::TransAddKernel, chosen per CPU):
    // the same sums in another order, and the input gradient untouched by the choice.
    const conv_direct::TransAddKernel chosen = conv_direct::transAddKernel();
    for (const auto kernel : {conv_direct::TransAddKernel::Pixels, conv_direct::TransAddKernel::Channels}) {
        if (kernel == chosen) continue;
        Tensor dxOther(x.shape());
        dxOther.fill(std::numeric_limits<float>::quiet_NaN());
        conv_direct::setTransAddKernel(kernel);
        conv.backward(x, y, dy, dxOther, true);
        conv_direct::setTransAddKernel(chosen);
        QS_COMPARE_TENSORS(conv.weight().grad, ref.weight().grad, 1e-4, 1e-5);
        QVERIFY(bitIdentical(dxOther, dx));
    }
}

// A convolution adding its input gradient into one that is there already (Model's gradient of an
// activation with two readers: a residual block's input) gives exactly backward into a fresh
// tensor followed by the addition, plain and with the fused ReLU, and the same weight gradient.
void TestLayerKernels::addedInputGradientIsBitIdentical()
{
    const auto [cin, cout, k, stride, pad, N, H, W, bias] = fetchDirectConvCase();
    if (!Conv2d::directKernelsBuilt()) QSKIP("built without AVX-512: no direct kernels (Conv2d::directKernelsBuilt)");
    Rng rng(stableHash(QTest::currentDataTag()));
    Conv2d conv("conv", cin, cout, k, stride, pad, 1, bias);
    QVERIFY(conv.addsInputGradient());
    for (Param* p : conv.params()) p->value = randomTensor(p->value.shape(), rng);
    const Tensor x = randomTensor({std::size_t(N), std::size_t(cin), std::size_t(H), std::size_t(W)}, rng);
    const Tensor dy = randomTensor(conv.outputShape(x.shape()), rng);
    const Tensor before = randomTensor(x.shape(), rng); // the gradient another reader left
    RunContext ctx;
    ctx.training = true;
    for (const bool clamped : {false, true}) {
        Tensor y, dx, added = before;
        if (clamped) conv.forwardClamped(x, y, ctx, std::numeric_limits<float>::infinity());
        else conv.forward(x, y, ctx);
        if (clamped) conv.backwardClamped(x, y, dy, dx, true, std::numeric_limits<float>::infinity());
        else conv.backward(x, y, dy, dx, true);
        const Tensor dW = conv.weight().grad;
        Tensor expected = before;
        for (std::size_t i = 0; i < expected.numel(); ++i) expected.values()[i] += dx.values()[i];
        conv.backwardAddingInputGradient(x, clamped ? &y : nullptr, dy, added, std::numeric_limits<float>::infinity());
        QVERIFY2(bitIdentical(added, expected), clamped ? "with the fused ReLU" : "plain");
        QVERIFY(bitIdentical(conv.weight().grad, dW));
    }
    Tensor wrong({std::size_t(N), std::size_t(cin), std::size_t(H), std::size_t(W) + 1});
    QVERIFY_THROWS_EXCEPTION(ConfigError, conv.backwardAddingInputGradient(x, nullptr, dy, wrong, 0.0f));
    // On bf16 products the stride-1 runs (backwardDirect) and strided convolutions of 2x2 or more
    // (backwardStridedBf16, or its im2col fallback) add too: the same bits as their own backward
    // and the addition. Strided 1x1 convolutions stay on their FP32 path.
    if (bestBf16Path() == Bf16Path::Emulated) return;
    conv.setBf16Products(bestBf16Path());
    QCOMPARE(conv.addsInputGradient(), stride == 1 || k > 1);
    if (!conv.addsInputGradient()) return;
    Tensor y, dx, added = before;
    conv.forward(x, y, ctx);
    conv.backward(x, y, dy, dx, true);
    const Tensor dW = conv.weight().grad;
    Tensor expected = before;
    for (std::size_t i = 0; i < expected.numel(); ++i) expected.values()[i] += dx.values()[i];
    conv.backwardAddingInputGradient(x, nullptr, dy, added, 0.0f);
    QVERIFY2(bitIdentical(added, expected), "bf16 products");
    QVERIFY(bitIdentical(conv.weight().grad, dW));
    // With setRoundInputGradientBf16, the stride-1 runs round the sum (the hooks' pass over a
    // residual input's gradient, done by its last reader) and report an entry that overflows.
    QCOMPARE(conv.roundsAddedInputGradient(), stride == 1);
    if (!conv.roundsAddedInputGradient()) return;
    Tensor overflowing = before;
    overflowing.values()[1] = 3.3999e38f; // finite in FP32; + dx past bf16's largest value: inf
    for (const bool overflow : {false, true}) {
        Tensor summed = overflow ? overflowing : before, want = summed;
        for (std::size_t i = 0; i < want.numel(); ++i) want.values()[i] = roundBf16(want.values()[i] + dx.values()[i]);
        conv.setRoundInputGradientBf16(true);
        conv.backwardAddingInputGradient(x, nullptr, dy, summed, 0.0f);
        conv.setRoundInputGradientBf16(false);
        QVERIFY2(bitIdentical(summed, want), overflow ? "bf16 products, sum rounded, overflow" : "bf16 products, sum rounded");
        QCOMPARE(conv.inputGradientFinite(), !overflow);
        QVERIFY(bitIdentical(conv.weight().grad, dW));
    }
}

// Inverted dropout: about p of the elements are zeroed, the rest scaled by 1/(1-p); the mask is
// a function of the step key only; evaluation is the identity.
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

void TestLayerKernels::threadCountDeterminism_data() { determinismRows(); }

// Training must not depend on the thread count: forward and backward of one layer are
// bit-identical in an arena of 1 thread and of 2 threads.
void TestLayerKernels::threadCountDeterminism()
{
    QFETCH(QString, layer);
    // A fresh layer per run: BatchNorm's running statistics move with every training forward.
    DeterminismSetup s1 = makeDeterminismSetup(layer), s2 = makeDeterminismSetup(layer);
    const LayerRun one = runLayer(*s1.layer, s1.x, s1.dy, 1);
    const LayerRun two = runLayer(*s2.layer, s2.x, s2.dy, 2);
    const std::string diff = compareRuns(one, two);
    QVERIFY2(diff.empty(), ("1 vs 2 threads: " + diff).c_str());
}

void TestLayerKernels::bufferAlignmentDeterminism_data() { determinismRows(); }

// Nor on where the tensors happen to sit in memory: copies of x and dy at different addresses
// (vectorised reductions peel unaligned heads, which changes the rounding) give the same bits.
void TestLayerKernels::bufferAlignmentDeterminism()
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

void TestLayerKernels::channelsWeightGradientSumsInOrder_data()
{
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("K");
    QTest::addColumn<int>("L");
    // M: 1-4 channel vectors and partial ones, and blocks of 64 channels; L: one column, under
    // one chunk of 128 and across several
    QTest::newRow("64x288 L=1456 (seed-cnn conv2)") << 64 << 288 << 1456;
    QTest::newRow("16x144 L=1800 (resnet8 layer1)") << 16 << 144 << 1800;
    QTest::newRow("37x50 L=700") << 37 << 50 << 700;
    QTest::newRow("70x9 L=300") << 70 << 9 << 300;
    QTest::newRow("130x31 L=129") << 130 << 31 << 129;
    QTest::newRow("5x7 L=1") << 5 << 7 << 1;
    // sums too large for L2 (K x 64 channels over 256 KB): rows in blocks of 96, the last one
    // partial; the second block of channels (6 of 16 lanes) small enough for the chunked path
    QTest::newRow("70x1100 L=150 (row blocks)") << 70 << 1100 << 150;
}

// The Channels weight-gradient kernel keeps each output one FP32 sum over the columns j in order
// from 0, whatever its L1 chunking of j: every element equals the scalar fused multiply-add
// chain, bit for bit, and is added to what C held.
void TestLayerKernels::channelsWeightGradientSumsInOrder()
{
    QFETCH(int, M);
    QFETCH(int, K);
    QFETCH(int, L);
    if (!Conv2d::directKernelsBuilt()) QSKIP("built without AVX-512: the portable kernel sums without fused multiply-adds");
    Rng rng(stableHash(QTest::currentDataTag()));
    const Tensor d = randomTensor({std::size_t(M), std::size_t(L) + 3}, rng);
    const Tensor r = randomTensor({std::size_t(K), std::size_t(L) + 5}, rng);
    const Tensor c0 = randomTensor({std::size_t(M), std::size_t(K)}, rng);
    std::vector<const float*> D(M), R(K);
    for (int m = 0; m < M; ++m) D[m] = d.data() + m * (L + 3) + 1; // rows at odd offsets, as runs are
    for (int k = 0; k < K; ++k) R[k] = r.data() + k * (L + 5) + 2;
    Tensor c = c0;
    const conv_direct::TransAddKernel chosen = conv_direct::transAddKernel();
    conv_direct::setTransAddKernel(conv_direct::TransAddKernel::Channels);
    conv_direct::gemmRowsTransAdd(D.data(), M, R.data(), K, L, c.data(), K);
    conv_direct::setTransAddKernel(chosen);
    Tensor expected = c0;
    for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) {
            float s = 0.0f;
            for (int j = 0; j < L; ++j) s = std::fma(R[k][j], D[m][j], s);
            expected.data()[m * K + k] += s;
        }
    QVERIFY(bitIdentical(c, expected));
}

void TestLayerKernels::maxPool2x2MatchesScalarRules_data()
{
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("pad");
    QTest::newRow("24x24") << 24 << 24 << 0;       // seed-cnn's pool: 12 outputs per row, one partial block
    QTest::newRow("9x37_odd") << 9 << 37 << 0;     // 18 outputs per row: a full block and a tail, odd sizes
    QTest::newRow("64x66") << 64 << 66 << 0;       // two full blocks and a tail of 1
    QTest::newRow("7x35_pad1") << 7 << 35 << 1;    // -inf padding
}

// The vectorised 2x2/2 pool against the rules written out (x padded with -inf; per window in
// scan order, '>' takes a later value, a NaN wins over a number): output values, and the input
// gradient (dy at each window's winner, 0 elsewhere, including what no window covers), bit for
// bit, on inputs full of ties (few distinct values), NaNs and signed zeros.
void TestLayerKernels::maxPool2x2MatchesScalarRules()
{
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, pad);
    const std::size_t N = 2, C = 3, p = static_cast<std::size_t>(pad);
    Rng rng(41);
    Tensor x({N, C, static_cast<std::size_t>(H), static_cast<std::size_t>(W)});
    for (float& v : x.values()) {
        const float u = rng.uniform(0.0f, 1.0f);
        v = u < 0.03f ? std::nanf("") : (u < 0.1f ? -0.0f : std::round(rng.uniform(-3.0f, 3.0f)));
    }
    MaxPool2d pool("pool", 2, 2, p);
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    pool.forward(x, y, ctx);
    const std::size_t Hp = H + 2 * p, Wp = W + 2 * p, Ho = (Hp - 2) / 2 + 1, Wo = (Wp - 2) / 2 + 1;
    QCOMPARE(y.shape(), (Shape{N, C, Ho, Wo}));
    Tensor dy(y.shape());
    for (float& v : dy.values()) v = rng.uniform(0.0f, 1.0f) < 0.1f ? -0.0f : rng.uniform(-1.0f, 1.0f);
    pool.backward(x, y, dy, dx, true);
    Tensor yRef(y.shape()), dxRef(x.shape());
    dxRef.setZero();
    const float ninf = -std::numeric_limits<float>::infinity();
    for (std::size_t pl = 0; pl < N * C; ++pl) {
        const auto at = [&](long r, long c) {
            r -= static_cast<long>(p);
            c -= static_cast<long>(p);
            return (r < 0 || c < 0 || r >= H || c >= W) ? ninf : x[pl * H * W + static_cast<std::size_t>(r * W + c)];
        };
        for (std::size_t oy = 0; oy < Ho; ++oy)
            for (std::size_t ox = 0; ox < Wo; ++ox) {
                long br = static_cast<long>(2 * oy), bc = static_cast<long>(2 * ox);
                float bv = at(br, bc);
                for (int t = 1; t < 4; ++t) {
                    const long r = static_cast<long>(2 * oy) + t / 2, c = static_cast<long>(2 * ox) + t % 2;
                    const float v = at(r, c);
                    const bool nan = v != v, takes = t == 1 ? (v > bv || nan) : (v > bv || (nan && bv == bv));
                    if (takes) { bv = v; br = r; bc = c; }
                }
                yRef[pl * Ho * Wo + oy * Wo + ox] = bv;
                const long r = br - static_cast<long>(p), c = bc - static_cast<long>(p);
                if (r >= 0 && c >= 0 && r < H && c < W)
                    dxRef[pl * H * W + static_cast<std::size_t>(r * W + c)] += dy[pl * Ho * Wo + oy * Wo + ox];
            }
    }
    QVERIFY(bitIdentical(y, yRef));
    QVERIFY(bitIdentical(dx, dxRef));
}

QTEST_GUILESS_MAIN(TestLayerKernels)
#include "tst_layer_kernels.moc"
