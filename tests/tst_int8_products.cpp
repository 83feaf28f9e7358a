// QAT's integer products (tensor/gemm_s8.h, Conv2d::setIntegerWeightScales/InputGrid, QuantSim::
// enableIntegerProducts): the VNNI kernel and the quantizer against their scalar twins, the
// convolution on codes against the exact product and the FP32 fake-quant path, the fallback when
// an input is off its grid, and which layers of the presets take the path in a QAT step.
#include "nn/conv2d.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "tensor/gemm_s8.h"
#include "train/quant_sim.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit
#include "slow_tests.h"

#include <QtTest>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

using namespace quantscope;
using namespace quantscope::testing;

namespace {

int randomInt(Rng& rng, int lo, int hi) // [lo, hi]
{
    const int v = lo + static_cast<int>(std::floor(rng.uniform(0.0f, 1.0f) * static_cast<float>(hi - lo + 1)));
    return v > hi ? hi : v;
}

} // namespace

class TestInt8Products : public QObject {
    Q_OBJECT

private slots:
    void kernelMatchesScalarTwin_data();
    void kernelMatchesScalarTwin();
    void quantizerMatchesScalarTwin_data();
    void quantizerMatchesScalarTwin();
    void convolutionOnCodesIsTheExactProduct_data();
    void convolutionOnCodesIsTheExactProduct();
    void offGridOperandsKeepTheFloatKernel();
    void qatStepTakesTheIntegerPath_data();
    void qatStepTakesTheIntegerPath();
    void simStoppedBeforeQuantizingEndsCleanly();
};

void TestInt8Products::kernelMatchesScalarTwin_data()
{
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("groups"); // channel groups of 4
    QTest::addColumn<int>("taps");
    QTest::addColumn<int>("L");
    QTest::newRow("one of each") << 1 << 1 << 1 << 1;
    QTest::newRow("rows below a block, lane tail") << 5 << 3 << 1 << 17;
    QTest::newRow("one block, two vectors") << 8 << 7 << 1 << 32;
    QTest::newRow("block tail, tile tail, 3 groups") << 13 << 3 << 3 << 49;
    QTest::newRow("full tiles, 16 groups") << 32 << 16 << 4 << 96;
    QTest::newRow("24 groups: chunks of 12") << 20 << 24 << 2 << 40;
    QTest::newRow("seed-cnn conv2 group") << 64 << 8 << 9 << 2703;
}

// Every path this CPU runs against the scalar twin: the same int32 sums and the same epilogue, so
// the same bits, including extreme codes (-128 x 255); nothing written past L.
void TestInt8Products::kernelMatchesScalarTwin()
{
    QFETCH(int, M);
    QFETCH(int, groups);
    QFETCH(int, taps);
    QFETCH(int, L);
    Rng rng(stableHash(QTest::currentDataTag()));
    const std::size_t Ms = static_cast<std::size_t>(M), G = static_cast<std::size_t>(groups),
                      T = static_cast<std::size_t>(taps), Ls = static_cast<std::size_t>(L), K4 = G * T;
    std::vector<std::int8_t> a(Ms * 4 * K4);
    for (auto& v : a) v = static_cast<std::int8_t>(randomInt(rng, -128, 127));
    a[0] = -128;
    // Runs of the groups, each read at T offsets (in dwords, up to maxShift).
    const std::size_t maxShift = 37, groupStride = 4 * (Ls + maxShift + 3);
    std::vector<std::size_t> tapOffset(T);
    for (auto& t : tapOffset) t = 4 * static_cast<std::size_t>(randomInt(rng, 0, static_cast<int>(maxShift)));
    std::vector<std::uint8_t> runs(G * groupStride + kRunsRowSlack);
    for (auto& v : runs) v = static_cast<std::uint8_t>(randomInt(rng, 0, 255));
    runs[tapOffset[0]] = 255;
    const ConvRuns b{runs.data(), groupStride, tapOffset.data(), T, G};
    std::vector<float> scale(Ms);
    std::vector<std::int32_t> corr(Ms);
    for (std::size_t m = 0; m < Ms; ++m) {
        scale[m] = rng.uniform(-1e-3f, 1e-3f);
        corr[m] = randomInt(rng, -100000, 100000);
    }
    const std::size_t ldo = Ls + 3;
    const float sentinel = -7.25f;
    PackedS8A plain;
    packS8A(S8Path::None, a.data(), Ms, K4, plain);
    std::vector<float> ref(Ms * ldo, sentinel);
    gemmConvRunsRef(plain, b, Ls, scale.data(), corr.data(), ref.data(), ldo);
    // The twin itself against the sum written out (row 0, column 0).
    std::int64_t acc = 0;
    for (std::size_t g = 0; g < K4; ++g)
        for (std::size_t j = 0; j < 4; ++j)
            acc += std::int64_t{a[4 * g + j]} * runs[(g % G) * groupStride + tapOffset[g / G] + j];
    QCOMPARE(ref[0], static_cast<float>(static_cast<std::int32_t>(acc) + corr[0]) * scale[0]);

    int tested = 0;
    for (S8Path path : {S8Path::Avx512Vnni, S8Path::AmxInt8}) {
        if (!s8PathSupported(path)) continue;
        ++tested;
        PackedS8A packed;
        packS8A(path, a.data(), Ms, K4, packed);
        std::vector<float> out(Ms * ldo, sentinel), twin(Ms * ldo, sentinel);
        gemmConvRuns(packed, b, Ls, scale.data(), corr.data(), out.data(), ldo);
        gemmConvRunsRef(packed, b, Ls, scale.data(), corr.data(), twin.data(), ldo); // the twin reads any packing
        QVERIFY2(std::memcmp(out.data(), ref.data(), out.size() * sizeof(float)) == 0, s8PathName(path));
        QVERIFY2(std::memcmp(twin.data(), ref.data(), twin.size() * sizeof(float)) == 0, s8PathName(path));
    }
    if (tested == 0) QSKIP("this CPU has neither AMX-INT8 nor AVX512_VNNI: only the scalar twin exists");
}

void TestInt8Products::quantizerMatchesScalarTwin_data()
{
    QTest::addColumn<float>("scale");
    QTest::addColumn<int>("zero");
    QTest::addColumn<int>("n");
    QTest::addColumn<QString>("spoil"); // "", "offgrid", "nan", "inf", "range"
    QTest::newRow("uint8 zp 0") << 0.0213f << 0 << 37 << "";
    QTest::newRow("uint8 zp 9, one lane") << 0.5f << 9 << 1 << "";
    QTest::newRow("int8 (zero 128)") << 3.1e-3f << 128 << 64 << "";
    QTest::newRow("tiny scale") << 1.2e-9f << 77 << 100 << "";
    QTest::newRow("off the grid") << 0.0213f << 3 << 40 << "offgrid";
    QTest::newRow("NaN") << 0.0213f << 3 << 40 << "nan";
    QTest::newRow("inf") << 0.0213f << 3 << 40 << "inf";
    QTest::newRow("outside 0..255") << 0.0213f << 3 << 40 << "range";
}

// Same bytes and the same verdict; a null row is the code of 0.0; a value off the grid, NaN, inf or
// outside the codes' range is refused.
void TestInt8Products::quantizerMatchesScalarTwin()
{
    QFETCH(float, scale);
    QFETCH(int, zero);
    QFETCH(int, n);
    QFETCH(QString, spoil);
    Rng rng(stableHash(QTest::currentDataTag()));
    std::vector<std::vector<float>> x(3, std::vector<float>(static_cast<std::size_t>(n)));
    std::vector<std::vector<std::uint8_t>> codes(3, std::vector<std::uint8_t>(static_cast<std::size_t>(n)));
    for (std::size_t j = 0; j < 3; ++j)
        for (std::size_t i = 0; i < x[j].size(); ++i) {
            const int u = randomInt(rng, 0, 255);
            codes[j][i] = static_cast<std::uint8_t>(u);
            x[j][i] = static_cast<float>(u - zero) * scale; // fake-quant's (q - zp) * scale
        }
    const std::size_t at = static_cast<std::size_t>(n) / 2;
    if (spoil == "offgrid") x[1][at] += 0.3f * scale;
    if (spoil == "nan") x[2][at] = std::numeric_limits<float>::quiet_NaN();
    if (spoil == "inf") x[0][at] = std::numeric_limits<float>::infinity();
    if (spoil == "range") x[1][at] = static_cast<float>(256 - zero) * scale;
    const float* src[4] = {x[0].data(), nullptr, x[1].data(), x[2].data()};
    const U8Grid grid{scale, zero};
    std::vector<std::uint8_t> fast(4 * static_cast<std::size_t>(n) + 8, 0xAB), ref(fast);
    const bool okFast = quantizeInterleave4(src, static_cast<std::size_t>(n), grid, fast.data());
    const bool okRef = quantizeInterleave4Ref(src, static_cast<std::size_t>(n), grid, ref.data());
    QCOMPARE(okFast, okRef);
    QCOMPARE(okRef, spoil.isEmpty());
    if (!okRef) return;
    QVERIFY(fast == ref);
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
        QCOMPARE(int(ref[4 * i + 0]), int(codes[0][i]));
        QCOMPARE(int(ref[4 * i + 1]), zero); // the null row
        QCOMPARE(int(ref[4 * i + 2]), int(codes[1][i]));
        QCOMPARE(int(ref[4 * i + 3]), int(codes[2][i]));
    }
    QCOMPARE(int(fast[4 * static_cast<std::size_t>(n)]), 0xAB); // nothing written past n
}

void TestInt8Products::convolutionOnCodesIsTheExactProduct_data()
{
    QTest::addColumn<int>("cin");
    QTest::addColumn<int>("cout");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("N");
    QTest::addColumn<int>("H");
    QTest::addColumn<bool>("perChannel");
    QTest::addColumn<int>("zero");  // input grid: uint8 zp (int8: 128)
    QTest::addColumn<float>("cap"); // fused clamp: NaN none, inf ReLU, 6 ReLU6
    QTest::addColumn<int>("stride");
    const float none = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    QTest::newRow("seed-cnn conv2 shape, uint8, ReLU") << 32 << 64 << 3 << 0 << 5 << 26 << true << 0 << inf << 1;
    QTest::newRow("padded, zp 17, per tensor") << 16 << 16 << 3 << 1 << 3 << 14 << false << 17 << none << 1;
    QTest::newRow("int8 input, ReLU6") << 8 << 13 << 3 << 1 << 2 << 9 << true << 128 << 6.0f << 1;
    QTest::newRow("channels not a multiple of 4, 5x5") << 13 << 24 << 5 << 2 << 4 << 11 << true << 5 << none << 1;
    QTest::newRow("2x2, odd batch") << 12 << 8 << 2 << 1 << 17 << 7 << true << 0 << none << 1;
    QTest::newRow("1x1 pointwise, ReLU6") << 16 << 24 << 1 << 0 << 3 << 7 << true << 3 << 6.0f << 1;
    // Strided convolutions on the phase runs (resnet8's layer2.conv1 and layer3.conv1 shapes).
    QTest::newRow("stride 2, resnet8 layer2.conv1") << 16 << 32 << 3 << 1 << 5 << 28 << true << 0 << none << 2;
    QTest::newRow("stride 2, odd size, zp 9, per tensor, ReLU") << 32 << 20 << 3 << 1 << 3 << 13 << false << 9 << inf << 2;
    QTest::newRow("stride 3, 5x5, channels not a multiple of 4") << 10 << 8 << 5 << 2 << 2 << 17 << true << 128 << 6.0f << 3;
}

// Weights w = s_w[c] q and inputs x = s_x (u - z) on their grids: the integer path gives the exact
// product (in double) up to its two roundings, and agrees with the FP32 kernel (fake-quant's
// product, rounded at each of its K additions) within FP32's accumulation error.
void TestInt8Products::convolutionOnCodesIsTheExactProduct()
{
    QFETCH(int, cin);
    QFETCH(int, cout);
    QFETCH(int, k);
    QFETCH(int, pad);
    QFETCH(int, N);
    QFETCH(int, H);
    QFETCH(bool, perChannel);
    QFETCH(int, zero);
    QFETCH(float, cap);
    QFETCH(int, stride);
    if (!Conv2d::directKernelsBuilt()) QSKIP("built without AVX-512: no direct kernels, no integer products");
    if (!s8ProductsAvailable()) QSKIP("this CPU has no AVX512_VNNI (or QS_INT8_PRODUCTS=0)");
    Rng rng(stableHash(QTest::currentDataTag()));
    const std::size_t C = static_cast<std::size_t>(cin), O = static_cast<std::size_t>(cout), kk = static_cast<std::size_t>(k * k);
    Conv2d conv("conv", C, O, static_cast<std::size_t>(k), static_cast<std::size_t>(stride), static_cast<std::size_t>(pad));
    QVERIFY(conv.takesIntegerProducts());
    std::vector<float> ws(perChannel ? O : 1);
    for (float& s : ws) s = rng.uniform(0.001f, 0.02f) * (rng.uniform(0.0f, 1.0f) < 0.2f ? -1.0f : 1.0f); // folded: s / f < 0
    std::vector<int> qw(O * C * kk);
    for (std::size_t o = 0; o < O; ++o)
        for (std::size_t i = 0; i < C * kk; ++i) {
            const int q = randomInt(rng, -127, 127);
            qw[o * C * kk + i] = q;
            conv.weight().value[o * C * kk + i] = static_cast<float>(q) * ws[perChannel ? o : 0];
        }
    for (float& b : conv.bias().value.values()) b = rng.uniform(-0.5f, 0.5f);
    const float sx = 0.037f;
    Tensor x({static_cast<std::size_t>(N), C, static_cast<std::size_t>(H), static_cast<std::size_t>(H)});
    std::vector<int> ux(x.numel());
    for (std::size_t i = 0; i < x.numel(); ++i) {
        const int u = rng.uniform(0.0f, 1.0f) < 0.3f ? zero : randomInt(rng, 0, 255); // ReLU outputs: many zeros
        ux[i] = u;
        x[i] = static_cast<float>(u - zero) * sx;
    }
    RunContext ctx;
    ctx.training = true;
    const auto forward = [&](Tensor& y) {
        if (cap == cap) conv.forwardClamped(x, y, ctx, cap);
        else conv.forward(x, y, ctx);
    };
    Tensor yFloat, yInt;
    forward(yFloat);
    QVERIFY(!conv.lastForwardWasInteger());
    conv.setIntegerWeightScales(ws);
    conv.setIntegerInputGrid(U8Grid{sx, zero});
    forward(yInt);
    QVERIFY(conv.lastForwardWasInteger());
    QCOMPARE(yInt.shape(), yFloat.shape());

    const std::size_t Ho = yInt.dim(2), Wo = yInt.dim(3), Hs = static_cast<std::size_t>(H);
    double worstExact = 0.0, worstFloat = 0.0;
    for (std::size_t n = 0; n < static_cast<std::size_t>(N); ++n)
        for (std::size_t o = 0; o < O; ++o)
            for (std::size_t oy = 0; oy < Ho; ++oy)
                for (std::size_t ox = 0; ox < Wo; ++ox) {
                    long long acc = 0;
                    double absSum = 0.0;
                    for (std::size_t c = 0; c < C; ++c)
                        for (std::size_t ky = 0; ky < static_cast<std::size_t>(k); ++ky)
                            for (std::size_t kx = 0; kx < static_cast<std::size_t>(k); ++kx) {
                                const long iy = static_cast<long>(oy * static_cast<std::size_t>(stride) + ky) - pad,
                                           ix = static_cast<long>(ox * static_cast<std::size_t>(stride) + kx) - pad;
                                if (iy < 0 || ix < 0 || iy >= static_cast<long>(Hs) || ix >= static_cast<long>(Hs)) continue;
                                const std::size_t xi = ((n * C + c) * Hs + static_cast<std::size_t>(iy)) * Hs + static_cast<std::size_t>(ix);
                                const long long prod = static_cast<long long>(qw[(o * C + c) * kk + ky * static_cast<std::size_t>(k) + kx]) * (ux[xi] - zero);
                                acc += prod;
                                absSum += std::fabs(static_cast<double>(prod));
                            }
                    const double s = static_cast<double>(ws[perChannel ? o : 0]) * sx;
                    double exact = static_cast<double>(acc) * s + conv.bias().value[o];
                    if (cap == cap) exact = std::min(std::max(exact, 0.0), static_cast<double>(cap));
                    const std::size_t yi = ((n * O + o) * Ho + oy) * Wo + ox;
                    const double scale = absSum * std::fabs(s) + std::fabs(conv.bias().value[o]);
                    // Integer path: int32 -> float, x scale, + bias: three roundings of the sum's size.
                    worstExact = std::max(worstExact, std::fabs(yInt[yi] - exact) / (scale * 1.8e-7 + 1e-30));
                    // FP32 path: K additions.
                    worstFloat = std::max(worstFloat, std::fabs(yInt[yi] - yFloat[yi]) / (scale * 6e-8 * static_cast<double>(C * kk) + 1e-30));
                }
    QVERIFY2(worstExact <= 1.0, qPrintable(QString("integer path vs exact product: %1 of the bound").arg(worstExact)));
    QVERIFY2(worstFloat <= 1.0, qPrintable(QString("integer path vs FP32 fake-quant: %1 of the bound").arg(worstFloat)));

    // Turned off, the layer is back on its FP32 kernel: the same bits as before.
    conv.setIntegerWeightScales({});
    Tensor yAgain;
    forward(yAgain);
    QVERIFY(!conv.lastForwardWasInteger());
    QVERIFY(bitIdentical(yAgain, yFloat));
}

// A weight or an input off the grid it was given (a stale scale, dropout's 1/(1-p), plain float
// data) is never rounded onto it: the layer runs its FP32 kernel, same bits as without the path.
void TestInt8Products::offGridOperandsKeepTheFloatKernel()
{
    if (!Conv2d::directKernelsBuilt()) QSKIP("built without AVX-512: no direct kernels, no integer products");
    if (!s8ProductsAvailable()) QSKIP("this CPU has no AVX512_VNNI (or QS_INT8_PRODUCTS=0)");
    Rng rng(7);
    Conv2d conv("conv", 8, 16, 3, 1, 1);
    const float sw = 0.01f, sx = 0.05f;
    for (float& w : conv.weight().value.values()) w = static_cast<float>(randomInt(rng, -127, 127)) * sw;
    Tensor x({2, 8, 10, 10});
    for (float& v : x.values()) v = static_cast<float>(randomInt(rng, 0, 255)) * sx;
    RunContext ctx;
    Tensor yFloat, y;
    conv.forward(x, yFloat, ctx);
    conv.setIntegerWeightScales({sw});
    conv.setIntegerInputGrid(U8Grid{sx, 0});
    conv.forward(x, y, ctx);
    QVERIFY(conv.lastForwardWasInteger()); // on the grid: the integer path

    Tensor off = x;
    off[off.numel() - 1] *= 1.0f / 0.75f; // one value scaled as dropout scales
    Tensor yOffFloat;
    conv.setIntegerInputGrid(std::nullopt);
    conv.forward(off, yOffFloat, ctx);
    conv.setIntegerInputGrid(U8Grid{sx, 0});
    conv.forward(off, y, ctx);
    QVERIFY(!conv.lastForwardWasInteger());
    QVERIFY(bitIdentical(y, yOffFloat));

    conv.weight().value[5] += 0.3f * sw; // a weight off its grid
    conv.setIntegerInputGrid(U8Grid{sx, 0});
    conv.forward(x, y, ctx);
    QVERIFY(!conv.lastForwardWasInteger());
    conv.setIntegerWeightScales({});
    conv.forward(x, yFloat, ctx);
    QVERIFY(bitIdentical(y, yFloat));
}

void TestInt8Products::qatStepTakesTheIntegerPath_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("quantizer");
    QTest::addColumn<QStringList>("integerConvs");
    QTest::addColumn<double>("outputTol"); // of the logits' range
    QTest::addColumn<double>("gradTol");   // of each gradient's range
    // seed-cnn: the products differ in the last bits only (seen: 9e-8 of the logits, 3e-7 of a
    // gradient); a tolerance of 1e-3 still holds if one activation rounds to its neighbouring code.
    QTest::newRow("seed-cnn channel") << "seed-cnn" << "channel" << "observer" << QStringList{"conv2"} << 1e-3 << 1e-3;
    // Under the sanitizer presets (QS_SANITIZER_RUN: baseline x86-64, the direct kernels' portable
    // twins, no FMA) this row's logits agree bit for bit but one output of conv2 moves its gradient
    // to the other position of a maxpool window: two of its outputs are equal on the integer
    // products and a rounding apart in this build's FP32 sums, so the pool's argmax differs
    // (asan 2026-11-30: conv2.weight's gradient differs in output channel 31 only, 200 of its 288
    // weights, by 1.2 % of the range; conv2.bias and the fc gradients within 2e-7; every run of
    // either path gave the same bits). A tie, not a wrong product: there the logits are compared
    // and the gradients are not. The release build compares both (no tie there).
    QTest::newRow("seed-cnn tensor, lsq") << "seed-cnn" << "tensor" << "lsq" << QStringList{"conv2"} << 1e-3
                                          << (quantscope::testing::sanitizerSlowdown() > 1.0 ? -1.0 : 1e-3);
    // Group-wise scales are not one per channel: FP32 everywhere.
    QTest::newRow("seed-cnn group") << "seed-cnn" << "group:8" << "observer" << QStringList{} << 0.0 << 0.0;
    // BN-folded convs (per channel: the folded scale / the folding factor), the strided 3x3 ones
    // on their phase runs; the stem (1 channel) and the strided 1x1 shortcuts stay on their FP32
    // kernels.
    QTest::newRow("resnet8 channel") << "resnet8" << "channel" << "observer"
                                     << QStringList{"layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2",
                                                    "layer3.conv1", "layer3.conv2"}
                                     // layer1.conv1's output is 6e-7 from the FP32 product, which
                                     // rounds 1 of relu1's 100,352 activations to the next code;
                                     // training-mode BN's batch statistics spread that step over
                                     // every later activation (seen: 1.6e-3 of the logits). This
                                     // QAT pass is that sensitive by itself: the FP32 path with
                                     // layer1.conv1's weights moved by a few 1e-6 of themselves moved
                                     // the logits by 2.2e-3 and the gradients by 1.5-70 % of their
                                     // ranges, so only the logits are compared here (gradTol < 0).
                                     << 0.02 << -1.0;
    // The 1x1 pointwise convs (runs of one plane a row); depthwise convs keep their own kernel.
    QTest::newRow("mobilenet-tiny channel") << "mobilenet-tiny" << "channel" << "observer"
                                            << QStringList{"blocks.0.pw", "blocks.1.pw", "blocks.2.pw", "blocks.3.pw"}
                                            << 0.02 << -1.0;
}

// Two QAT training steps with and without the integer products: the listed convs (and only they)
// ran on codes in the second step, and the logits and gradients stay those of the FP32
// fake-quant pass (group-wise: bit for bit, nothing changed).
void TestInt8Products::qatStepTakesTheIntegerPath()
{
    QFETCH(QString, preset);
    QFETCH(QString, granularity);
    QFETCH(QString, quantizer);
    QFETCH(QStringList, integerConvs);
    QFETCH(double, outputTol);
    QFETCH(double, gradTol);
    if (!Conv2d::directKernelsBuilt()) QSKIP("built without AVX-512: no direct kernels, no integer products");
    if (!s8ProductsAvailable()) QSKIP("this CPU has no AVX512_VNNI (or QS_INT8_PRODUCTS=0)");
    Rng rng(31);
    Tensor x({8, 1, 28, 28});
    for (float& v : x.values()) v = rng.uniform(-1.0f, 2.0f);
    struct Run {
        std::vector<Tensor> outputs, grads;
        QStringList integer;
        std::string compute;
    };
    const auto run = [&](bool integer) {
        Run r;
        auto m = makeModel(preset.toStdString());
        m->initParams(5);
        PrecisionConfig pc;
        pc.strategy = Strategy::Qat;
        pc.format = "int8";
        pc.granularity = granularity.toStdString();
        pc.quantizer = quantizer.toStdString();
        QuantSim sim(*m, pc, findFormat("int8"));
        if (integer) r.compute = sim.enableIntegerProducts();
        m->setFusion(true);
        RunContext ctx;
        ctx.training = true;
        for (int step = 0; step < 2; ++step) {
            for (Param* p : m->params()) p->grad.fill(0.0f);
            sim.quantizeWeights(Rounding::Nearest, static_cast<std::uint64_t>(step));
            const Tensor y = m->forward(x, ctx, &sim);
            r.outputs.push_back(y);
            Tensor dOut(y.shape());
            Rng g(32 + static_cast<std::uint64_t>(step));
            for (float& v : dOut.values()) v = g.uniform(-1.0f, 1.0f);
            m->backward(dOut, &sim);
            sim.maskWeightGradients();
            for (Param* p : m->params()) r.grads.push_back(p->grad);
        }
        for (std::size_t i = 0; i < m->size(); ++i)
            if (auto* c = dynamic_cast<Conv2d*>(&m->layer(i)); c && c->lastForwardWasInteger())
                r.integer << QString::fromStdString(c->name());
        sim.clearWeights();
        return r;
    };
    const Run ref = run(false), fast = run(true);
    QVERIFY(ref.integer.isEmpty());
    QCOMPARE(fast.integer, integerConvs);
    if (!integerConvs.isEmpty()) QVERIFY2(QString::fromStdString(fast.compute).contains(integerConvs.first()), fast.compute.c_str());
    const auto relMaxDiff = [](const Tensor& a, const Tensor& b) {
        double d = 0.0, m = 0.0;
        for (std::size_t i = 0; i < a.numel(); ++i) {
            d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
            m = std::max(m, static_cast<double>(std::fabs(b[i])));
        }
        return d / (m + 1e-30);
    };
    for (std::size_t k = 0; k < ref.outputs.size(); ++k) {
        const double d = relMaxDiff(fast.outputs[k], ref.outputs[k]);
        QVERIFY2(d <= outputTol, qPrintable(QString("logits of step %1 differ by %2 of their range").arg(k).arg(d)));
    }
    QCOMPARE(fast.grads.size(), ref.grads.size());
    if (gradTol < 0.0) return;
    for (std::size_t k = 0; k < ref.grads.size(); ++k) {
        const double d = relMaxDiff(fast.grads[k], ref.grads[k]);
        QVERIFY2(d <= gradTol, qPrintable(QString("gradient %1 differs by %2 of its range").arg(k).arg(d)));
    }
}

// A QAT run stopped (Ctrl+C) before its weights were first quantized: the simulation's
// destructor turns the integer products off without reading the weight grids it never made (it
// threw std::out_of_range from the destructor, and the CLI aborted: 15 of 150 soak runs).
void TestInt8Products::simStoppedBeforeQuantizingEndsCleanly()
{
    if (!Conv2d::directKernelsBuilt()) QSKIP("built without AVX-512: no direct kernels, no integer products");
    if (!s8ProductsAvailable()) QSKIP("this CPU has no AVX512_VNNI (or QS_INT8_PRODUCTS=0)");
    auto m = makeModel("seed-cnn-bn");
    m->initParams(5);
    PrecisionConfig pc;
    pc.strategy = Strategy::Qat;
    pc.format = "uint8";
    pc.granularity = "global";
    {
        QuantSim sim(*m, pc, findFormat("uint8"));
        QVERIFY(!sim.enableIntegerProducts().empty());
        sim.clearWeights(); // what the destructor does
    }
    QuantSim again(*m, pc, findFormat("uint8"));
    again.enableIntegerProducts();
}

QTEST_GUILESS_MAIN(TestInt8Products)
#include "tst_int8_products.moc"
