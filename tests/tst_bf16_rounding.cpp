// Mixed bf16's rounding inside the layers' own passes (LayerHooks::roundsGradientBf16 and
// RunContext::roundOutputBf16): BatchNorm2d, Conv2d (every backward path), Linear and Dropout
// round their input gradient, and Dropout its output, to the same bits as a pass of roundBf16
// afterwards, and report a non-finite result; a fused BatchNorm2d + ReLU6 takes its mask from its
// output as rounded; an Add + ReLU rounds its output gradient in its mask pass.
#include "nn/add.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <atomic>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

using namespace quantscope;
using namespace quantscope::testing;

class TestBf16Rounding : public QObject {
    Q_OBJECT

private slots:
    void batchNormRoundsInputGradient_data();
    void batchNormRoundsInputGradient();
    void convRoundsInputGradient_data();
    void convRoundsInputGradient();
    void batchNormMaskFromRoundedOutput();
    void linearRoundsInputGradient_data();
    void linearRoundsInputGradient();
    void linearWeightGradientPass_data();
    void linearWeightGradientPass();
    void dropoutRoundsOutputAndInputGradient_data();
    void dropoutRoundsOutputAndInputGradient();
    void addMaskRoundsGradient_data();
    void addMaskRoundsGradient();
};

// run(round, dx, paramGrads) runs a layer's backward with setRoundInputGradientBf16(round) and
// returns inputGradientFinite(): rounding on gives roundBf16 of the plain dx bit for bit, the
// same parameter gradients, and reports a non-finite dx exactly when one is there (expectFinite
// says whether the row's data make one).
namespace {
template <typename Run>
void checkRoundedInputGradient(Run&& run, bool expectFinite)
{
    Tensor plain, rounded;
    std::vector<float> plainGrads, roundedGrads;
    QVERIFY(run(false, plain, plainGrads)); // without rounding nothing is checked: finite
    const bool finite = run(true, rounded, roundedGrads);
    bool allFinite = true;
    for (float& v : plain.values()) {
        v = roundBf16(v);
        allFinite = allFinite && std::isfinite(v);
    }
    QCOMPARE(allFinite, expectFinite); // the overflow rows do overflow, the others do not
    QCOMPARE(finite, allFinite);
    QVERIFY(std::memcmp(plain.data(), rounded.data(), plain.numel() * sizeof(float)) == 0);
    QVERIFY(std::memcmp(plainGrads.data(), roundedGrads.data(), plainGrads.size() * sizeof(float)) == 0);
}
} // namespace

void TestBf16Rounding::batchNormRoundsInputGradient_data()
{
    QTest::addColumn<bool>("clamped"); // fused with a ReLU6 (the mask from BN(x))
    QTest::addColumn<float>("gradScale"); // 3e38: the gradient's sums and dx run past FP32's range
    // The rounded dx written group by group by gradientImages (backwardDeferringInputGradient, as
    // Model has the convolution before the BN ask for it), against the plain backward's rounded.
    QTest::addColumn<bool>("deferred");
    for (const bool deferred : {false, true}) {
        const std::string tag = deferred ? ", deferred" : "";
        QTest::newRow(("plain" + tag).c_str()) << false << 1.0f << deferred;
        QTest::newRow(("fused ReLU6" + tag).c_str()) << true << 1.0f << deferred;
        QTest::newRow(("overflow" + tag).c_str()) << false << 3e38f << deferred;
        QTest::newRow(("fused ReLU6, overflow" + tag).c_str()) << true << 3e38f << deferred;
    }
}

// BatchNorm2d::setRoundInputGradientBf16 (mixed precision's gradient rounding in the layer's own
// pass, LayerHooks::roundsGradientBf16): dx is the unrounded backward's dx rounded by roundBf16,
// bit for bit, the parameter gradients are unchanged, and a value that rounds to inf is reported.
void TestBf16Rounding::batchNormRoundsInputGradient()
{
    QFETCH(bool, clamped);
    QFETCH(float, gradScale);
    QFETCH(bool, deferred);
    Rng rng(17);
    Tensor x({5, 4, 9, 7}), dy(x.shape());
    for (float& v : x.values()) v = rng.uniform(-3.0f, 3.0f);
    for (float& v : dy.values()) v = rng.uniform(-1.0f, 1.0f) * gradScale;
    const auto run = [&](bool round, Tensor& dx, std::vector<float>& grads) {
        BatchNorm2d bn("bn", 4);
        bn.gamma().value.fill(gradScale > 1.0f ? 2.0f : 1.5f);
        bn.beta().value.fill(3.0f); // BN(x) mostly inside ReLU6's (0, 6)
        RunContext ctx;
        ctx.training = true;
        Tensor y;
        if (clamped) bn.forwardClamped(x, y, ctx, 6.0f);
        else bn.forward(x, y, ctx);
        bn.setRoundInputGradientBf16(round);
        if (deferred && round) {
            bn.backwardDeferringInputGradient(x, clamped ? &y : nullptr, dy, 6.0f);
            bn.setRoundInputGradientBf16(false); // the deferred pass keeps the call's setting
            dx.resize(x.shape());
            dx.fill(std::numeric_limits<float>::quiet_NaN());
            const std::size_t image = 4 * 9 * 7;
            for (const auto& [n0, count] : {std::pair<std::size_t, std::size_t>{4, 1}, {0, 2}, {2, 2}})
                bn.gradientImages(n0, count, dx.data() + n0 * image);
        } else if (clamped) {
            bn.backwardClamped(x, y, dy, dx, true, 6.0f, false, nullptr);
        } else {
            bn.backward(x, y, dy, dx, true);
        }
        grads = bn.gamma().grad.values();
        grads.insert(grads.end(), bn.beta().grad.values().begin(), bn.beta().grad.values().end());
        if (deferred && round) {
            const bool finite = bn.deferredGradientFinite();
            bn.endDeferredGradient();
            return finite;
        }
        return bn.inputGradientFinite();
    };
    checkRoundedInputGradient(run, gradScale < 1e30f);
}

void TestBf16Rounding::convRoundsInputGradient_data()
{
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::addColumn<bool>("bf16");       // the bf16 products (bestBf16Path), as mixed training runs them
    QTest::addColumn<float>("gradScale"); // 3e38: dx past FP32's range
    QTest::addColumn<int>("groups");      // 16 = the channels: the depthwise kernel
    // 3x3 stride 1: the direct kernels round each group; stride 2 and 1x1 (im2col) take other paths
    for (const bool bf16 : {false, true}) {
        const char* tag = bf16 ? "bf16 " : "fp32 ";
        QTest::newRow((std::string(tag) + "3x3 s1").c_str()) << 3 << 1 << 1 << bf16 << 1.0f << 1;
        QTest::newRow((std::string(tag) + "3x3 s2").c_str()) << 3 << 2 << 1 << bf16 << 1.0f << 1;
        QTest::newRow((std::string(tag) + "1x1 s1").c_str()) << 1 << 1 << 0 << bf16 << 1.0f << 1;
        QTest::newRow((std::string(tag) + "3x3 s1 overflow").c_str()) << 3 << 1 << 1 << bf16 << 3e38f << 1;
        QTest::newRow((std::string(tag) + "1x1 s1 overflow").c_str()) << 1 << 1 << 0 << bf16 << 3e38f << 1;
    }
    QTest::newRow("depthwise 3x3 s1") << 3 << 1 << 1 << false << 1.0f << 16;
    QTest::newRow("depthwise 3x3 s2") << 3 << 2 << 1 << false << 1.0f << 16;
    QTest::newRow("depthwise 3x3 s1 overflow") << 3 << 1 << 1 << false << 3e38f << 16;
    // grouped, not depthwise: the FP32 im2col path (col2im), which rounds each image's dx
    QTest::newRow("2 groups 3x3 s1") << 3 << 1 << 1 << false << 1.0f << 2;
    QTest::newRow("2 groups 3x3 s1 overflow") << 3 << 1 << 1 << false << 3e38f << 2;
}

// Conv2d::setRoundInputGradientBf16, as batchNormRoundsInputGradient: on every backward path dx is
// the unrounded backward's dx rounded by roundBf16, bit for bit, the weight gradient is unchanged,
// and a value that is not finite is reported.
void TestBf16Rounding::convRoundsInputGradient()
{
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QFETCH(bool, bf16);
    QFETCH(float, gradScale);
    QFETCH(int, groups);
    Rng rng(23);
    Conv2d conv("conv", 16, groups == 16 ? 16 : 24, static_cast<std::size_t>(k), static_cast<std::size_t>(stride),
                static_cast<std::size_t>(pad), static_cast<std::size_t>(groups), false);
    if (bf16) conv.setBf16Products(bestBf16Path());
    for (Param* p : conv.params()) p->value = randomTensor(p->value.shape(), rng);
    const Tensor x = randomTensor({5, 16, 12, 10}, rng);
    Tensor dy = randomTensor(conv.outputShape(x.shape()), rng);
    for (float& v : dy.values()) v *= gradScale;
    RunContext ctx;
    ctx.training = true;
    const auto run = [&](bool round, Tensor& dx, std::vector<float>& dW) {
        Tensor y;
        conv.forward(x, y, ctx);
        conv.setRoundInputGradientBf16(round);
        conv.backward(x, y, dy, dx, true);
        conv.setRoundInputGradientBf16(false);
        dW = conv.weight().grad.values();
        return conv.inputGradientFinite();
    };
    checkRoundedInputGradient(run, gradScale < 1e30f);
}

// A BatchNorm2d + ReLU6 whose forward rounded its output to bf16 (RunContext::roundOutputBf16)
// takes the fused backward's mask from its output as rounded (maskFromOutput), recomputed from x
// and rounded rather than read: the same bits as masking dy by 0 < r < 6 first and running the
// plain backward. The outputs sit around 6, where rounding moves the bound: values just below 6
// round up to it and pass no gradient.
void TestBf16Rounding::batchNormMaskFromRoundedOutput()
{
    Rng rng(37);
    Tensor x({4, 3, 11, 13}), dy(x.shape());
    for (float& v : x.values()) v = rng.uniform(-2.0f, 2.0f);
    for (float& v : dy.values()) v = rng.uniform(-1.0f, 1.0f);
    BatchNorm2d bn("bn", 3);
    bn.gamma().value.fill(0.01f);
    bn.beta().value.fill(5.995f); // BN(x) within about 0.03 of 6
    RunContext ctx;
    ctx.training = true;
    ctx.roundOutputBf16 = true;
    Tensor r, dx, y, expected;
    bn.forwardClamped(x, r, ctx, 6.0f);
    std::size_t roundedUp = 0; // outputs that are 6 only because of the rounding
    Tensor masked = dy;
    for (std::size_t i = 0; i < r.numel(); ++i) {
        QCOMPARE(roundBf16(r[i]), r[i]);
        if (!(r[i] > 0.0f && r[i] < 6.0f)) masked[i] = 0.0f;
    }
    RunContext plainCtx;
    plainCtx.training = true;
    BatchNorm2d ref("bn", 3);
    ref.gamma().value.fill(0.01f);
    ref.beta().value.fill(5.995f);
    ref.forward(x, y, plainCtx);
    for (std::size_t i = 0; i < y.numel(); ++i) roundedUp += y[i] < 6.0f && roundBf16(y[i]) == 6.0f ? 1 : 0;
    QVERIFY(roundedUp > 20); // the rounded mask differs from the unrounded one there
    bn.backwardClamped(x, r, dy, dx, true, 6.0f, true, nullptr);
    const std::vector<float> grads{bn.gamma().grad[0], bn.gamma().grad[1], bn.gamma().grad[2], bn.beta().grad[0], bn.beta().grad[1],
                                   bn.beta().grad[2]};
    ref.backward(x, y, masked, expected, true);
    QVERIFY(std::memcmp(dx.data(), expected.data(), dx.numel() * sizeof(float)) == 0);
    for (std::size_t c = 0; c < 3; ++c) {
        QCOMPARE(grads[c], ref.gamma().grad[c]);
        QCOMPARE(grads[3 + c], ref.beta().grad[c]);
    }
}

namespace {

// An fc layer of `in` -> 19 features on `path` with random weights, a batch of 7 random inputs and
// an output gradient scaled by gradScale (3e38: it overflows once multiplied out).
struct LinearCase {
    Linear fc;
    Tensor x, dy;
    LinearCase(int in, float gradScale, std::uint64_t seed, Bf16Path path) : fc("fc", static_cast<std::size_t>(in), 19)
    {
        Rng rng(seed);
        fc.setBf16Products(path);
        for (Param* p : fc.params()) p->value = randomTensor(p->value.shape(), rng);
        x = randomTensor({7, static_cast<std::size_t>(in)}, rng);
        dy = randomTensor({7, 19}, rng);
        for (float& v : dy.values()) v *= gradScale;
    }
};

} // namespace

void TestBf16Rounding::linearRoundsInputGradient_data()
{
    QTest::addColumn<bool>("bf16");
    QTest::addColumn<float>("gradScale");
    QTest::addColumn<int>("in"); // 2,500: three column blocks of dx, the last one partial
    for (const bool bf16 : {false, true}) {
        const char* tag = bf16 ? "bf16 " : "fp32 ";
        QTest::newRow((std::string(tag) + "in 2500").c_str()) << bf16 << 1.0f << 2500;
        QTest::newRow((std::string(tag) + "in 37").c_str()) << bf16 << 1.0f << 37;
        QTest::newRow((std::string(tag) + "overflow").c_str()) << bf16 << 3e38f << 2500;
    }
}

// Linear::setRoundInputGradientBf16, as convRoundsInputGradient: dx is the unrounded backward's dx
// rounded by roundBf16, bit for bit, in every column block, and dW, db are unchanged.
void TestBf16Rounding::linearRoundsInputGradient()
{
    QFETCH(bool, bf16);
    QFETCH(float, gradScale);
    QFETCH(int, in);
    LinearCase lc(in, gradScale, 29, bf16 ? bestBf16Path() : Bf16Path::Emulated);
    Linear& fc = lc.fc;
    const Tensor& x = lc.x;
    const Tensor& dy = lc.dy;
    RunContext ctx;
    ctx.training = true;
    const auto run = [&](bool round, Tensor& dx, std::vector<float>& grads) {
        Tensor y;
        fc.forward(x, y, ctx);
        fc.setRoundInputGradientBf16(round);
        fc.backward(x, y, dy, dx, true);
        fc.setRoundInputGradientBf16(false);
        grads = fc.weight().grad.values();
        grads.insert(grads.end(), fc.bias().grad.values().begin(), fc.bias().grad.values().end());
        return fc.inputGradientFinite();
    };
    checkRoundedInputGradient(run, gradScale < 1e30f);
}

void TestBf16Rounding::linearWeightGradientPass_data()
{
    QTest::addColumn<float>("gradScale");
    QTest::addColumn<float>("scale");
    QTest::addColumn<int>("in"); // 2,500: three column blocks of dW, the last one partial
    QTest::newRow("in 2500") << 1.0f << 1.0f / 65536.0f << 2500;
    QTest::newRow("in 37, scale 1") << 1.0f << 1.0f << 37;
    QTest::newRow("overflow") << 3e38f << 0.5f << 2500;
}

// Mixed bf16's weight-gradient pass inside Linear's bf16 backward (setWeightGradientPass): dW is
// the plain backward's dW rounded to bf16 and then scaled, bit for bit, an overflow clears the
// flag, the bias gradient is left alone, and once the pass is cleared dW is unrounded again.
void TestBf16Rounding::linearWeightGradientPass()
{
    QFETCH(float, gradScale);
    QFETCH(float, scale);
    QFETCH(int, in);
    if (bestBf16Path() == Bf16Path::Emulated) QSKIP("no bf16 products on this CPU");
    LinearCase lc(in, gradScale, 31, bestBf16Path());
    Linear& fc = lc.fc;
    const Tensor& x = lc.x;
    const Tensor& dy = lc.dy;
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    fc.forward(x, y, ctx);
    fc.backward(x, y, dy, dx, true);
    QVERIFY(!fc.weightGradientPassed());
    const std::vector<float> plain = fc.weight().grad.values(), bias = fc.bias().grad.values();
    std::vector<float> expected = plain;
    const bool finite = roundBf16AllFinite(expected.data(), expected.size());
    for (float& v : expected) v *= scale;
    QCOMPARE(finite, gradScale < 1e30f);

    std::atomic<bool> flag{true};
    fc.setWeightGradientPass({true, scale, &flag});
    fc.forward(x, y, ctx);
    fc.backward(x, y, dy, dx, true);
    QVERIFY(fc.weightGradientPassed());
    QCOMPARE(flag.load(), finite);
    if (finite) QVERIFY(std::memcmp(fc.weight().grad.data(), expected.data(), expected.size() * sizeof(float)) == 0);
    QVERIFY(std::memcmp(fc.bias().grad.data(), bias.data(), bias.size() * sizeof(float)) == 0);

    fc.setWeightGradientPass({});
    fc.forward(x, y, ctx);
    fc.backward(x, y, dy, dx, true);
    QVERIFY(!fc.weightGradientPassed());
    QVERIFY(std::memcmp(fc.weight().grad.data(), plain.data(), plain.size() * sizeof(float)) == 0);
}

void TestBf16Rounding::dropoutRoundsOutputAndInputGradient_data()
{
    QTest::addColumn<float>("p");
    QTest::addColumn<float>("gradScale");
    QTest::newRow("p 0.3") << 0.3f << 1.0f; // 1/0.7: the kept values leave the bf16 grid
    QTest::newRow("p 0.5") << 0.5f << 1.0f;
    QTest::newRow("p 0.3 overflow") << 0.3f << 3e38f;
}

// Dropout under mixed bf16: with RunContext::roundOutputBf16 its output is the unrounded output
// rounded by roundBf16, and with setRoundInputGradientBf16 so is dx, bit for bit, with overflow
// reported; the mask (the same key) does not change.
void TestBf16Rounding::dropoutRoundsOutputAndInputGradient()
{
    QFETCH(float, p);
    QFETCH(float, gradScale);
    Rng rng(31);
    Tensor x = randomTensor({3, 5, 37, 41}, rng); // 22,755 values: several chunks, the last partial
    for (float& v : x.values()) v = roundBf16(v);
    Tensor dy = randomTensor(x.shape(), rng);
    for (float& v : dy.values()) v *= gradScale;
    Dropout drop("drop", p);
    RunContext ctx;
    ctx.training = true;
    ctx.rngKey = 99;
    Tensor plainY, roundedY;
    drop.forward(x, plainY, ctx);
    RunContext rounding = ctx;
    rounding.roundOutputBf16 = true;
    drop.forward(x, roundedY, rounding);
    std::size_t offGrid = 0;
    for (float& v : plainY.values()) {
        offGrid += v != roundBf16(v);
        v = roundBf16(v);
    }
    if (p == 0.3f) QVERIFY(offGrid > 1000); // the check below has something to check
    QVERIFY(std::memcmp(plainY.data(), roundedY.data(), x.numel() * sizeof(float)) == 0);
    const auto run = [&](bool round, Tensor& dx, std::vector<float>& grads) {
        Tensor y;
        drop.forward(x, y, ctx);
        drop.setRoundInputGradientBf16(round);
        drop.backward(x, y, dy, dx, true);
        drop.setRoundInputGradientBf16(false);
        grads.clear();
        return drop.inputGradientFinite();
    };
    checkRoundedInputGradient(run, gradScale < 1e30f);
}

void TestBf16Rounding::addMaskRoundsGradient_data()
{
    QTest::addColumn<float>("cap");       // ReLU (inf) or ReLU6
    QTest::addColumn<int>("first");       // 0: no first input gradient, 1: written, 2: added into
    QTest::addColumn<int>("overflowAt");  // -1: none; else an entry of dr that rounds to inf
    QTest::addColumn<bool>("overflowKept"); // that entry passes the mask (else it is masked out)
    for (const float cap : {std::numeric_limits<float>::infinity(), 6.0f})
        for (const int first : {0, 1, 2}) {
            const std::string tag = std::string(std::isfinite(cap) ? "ReLU6" : "ReLU") + ", first " + std::to_string(first);
            QTest::newRow(tag.c_str()) << cap << first << -1 << false;
            QTest::newRow((tag + ", overflow kept").c_str()) << cap << first << 20001 << true;
            QTest::newRow((tag + ", overflow masked").c_str()) << cap << first << 34846 << false;
        }
}

// Add::maskGradient(roundBf16): dr rounded (roundBf16) then masked by the clamp's rule on r, and
// the first input's gradient written or added, bit for bit as the hooks' rounding pass followed by
// the plain mask pass; non-finite reported for an entry that rounds to inf, kept or masked out.
// 34,848 entries: three chunks of the parallel pass, the last one with a tail of 8 lanes.
void TestBf16Rounding::addMaskRoundsGradient()
{
    QFETCH(float, cap);
    QFETCH(int, first);
    QFETCH(int, overflowAt);
    QFETCH(bool, overflowKept);
    Rng rng(23);
    Tensor r({2, 16, 33, 33}), dr(r.shape()), f0(r.shape());
    for (float& v : r.values()) v = rng.uniform(0.0f, 1.0f) < 0.3f ? 0.0f : rng.uniform(0.0f, 7.0f);
    if (std::isfinite(cap))
        for (float& v : r.values()) v = std::min(v, cap);
    for (float& v : dr.values()) v = rng.uniform(-2.0f, 2.0f);
    for (float& v : f0.values()) v = rng.uniform(-1.0f, 1.0f);
    if (overflowAt >= 0) {
        const auto at = static_cast<std::size_t>(overflowAt);
        r[at] = overflowKept ? 1.0f : 0.0f;
        dr[at] = 3.3999e38f; // finite in FP32, past bf16's largest (3.3895e38): rounds to inf
    }
    const Add add("add");
    // reference: the hooks' pass, then the plain mask pass
    Tensor refDr = dr, refF = f0;
    const bool refFinite = roundBf16AllFinite(refDr.data(), refDr.numel());
    add.maskGradient(r, refDr, cap, first ? &refF : nullptr, first == 2);
    Tensor gotDr = dr, gotF = f0;
    const bool finite = add.maskGradient(r, gotDr, cap, first ? &gotF : nullptr, first == 2, nullptr, true);
    QCOMPARE(refFinite, overflowAt < 0);
    QCOMPARE(finite, refFinite);
    QVERIFY(std::memcmp(refDr.data(), gotDr.data(), refDr.numel() * sizeof(float)) == 0);
    QVERIFY(std::memcmp(refF.data(), gotF.data(), refF.numel() * sizeof(float)) == 0);
    // the rounding is there: some entry differs from the plain mask pass of the unrounded dr
    Tensor plain = dr;
    add.maskGradient(r, plain, cap, nullptr, false);
    QVERIFY(std::memcmp(plain.data(), gotDr.data(), plain.numel() * sizeof(float)) != 0);
}

QTEST_GUILESS_MAIN(TestBf16Rounding)
#include "tst_bf16_rounding.moc"
