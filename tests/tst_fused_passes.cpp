// The training passes' fused and self-rounding paths against their plain twins, bit for bit:
// FloatSim's skipped rounding of values already on the grid, QAT's fused conv + ReLU pass, and
// mixed precision's fused pairs, epilogue rounding and unrounded bf16-read weights (moved out of
// tst_strategies, which trains the strategies end to end).
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/model_zoo.h"
#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"
#include "train/float_sim.h"
#include "train/quant_sim.h"
#include "train/strategy.h"
#include "quant/quantize.h"
#include "util/rng.h"

#include <QtTest>

#include <cstring>
#include <limits>

using namespace quantscope;

namespace {
// Two training passes of the fused-pass tests: each step's output and every parameter gradient,
// and how many activations the first step left unmaterialised (fused away).
struct PassRun {
    std::vector<Tensor> outputs, grads;
    int emptyActivations = 0;
    int selfRounding = 0, convs = 0; // FloatSim::roundsOutputBf16 layers, and Conv2d/BatchNorm2d/Add layers
    int masterWeights = 0;           // layers whose weight went in unrounded (readsWeightAsBf16)
};

// The first output or gradient whose bits differ (empty: none).
QString firstDifference(const PassRun& a, const PassRun& b)
{
    const auto same = [](const Tensor& x, const Tensor& y) {
        return x.shape() == y.shape() && std::memcmp(x.data(), y.data(), x.numel() * sizeof(float)) == 0;
    };
    if (a.outputs.size() != b.outputs.size() || a.grads.size() != b.grads.size()) return QStringLiteral("different step counts");
    for (std::size_t k = 0; k < a.outputs.size(); ++k)
        if (!same(a.outputs[k], b.outputs[k])) return QString("output of step %1").arg(k);
    for (std::size_t k = 0; k < a.grads.size(); ++k)
        if (!same(a.grads[k], b.grads[k])) return QString("gradient %1").arg(k);
    return {};
}
} // namespace

class TestFusedPasses : public QObject {
    Q_OBJECT

private slots:
    void floatSimSkipsOnlyExactRounding_data();
    void floatSimSkipsOnlyExactRounding();
    void qatFusedPassIsBitIdentical_data();
    void qatFusedPassIsBitIdentical();
    void mixedFusedPassIsBitIdentical_data();
    void mixedFusedPassIsBitIdentical();
    void batchNormFakeQuantizesInItsPass_data();
    void batchNormFakeQuantizesInItsPass();
    void stridedBf16GradientSourceIsBitIdentical_data();
    void stridedBf16GradientSourceIsBitIdentical();
};

void TestFusedPasses::floatSimSkipsOnlyExactRounding_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("format");
    QTest::addColumn<bool>("stochastic");
    QTest::addColumn<bool>("overflow"); // an inf in the loss gradient
    QTest::newRow("seed-cnn bf16") << "seed-cnn" << "bf16" << false << false;
    QTest::newRow("seed-cnn fp8-e4m3 stochastic") << "seed-cnn" << "fp8-e4m3" << true << false;
    QTest::newRow("mobilenet-tiny fp16 (ReLU6)") << "mobilenet-tiny" << "fp16" << false << false;
    QTest::newRow("resnet8 bf16 (Add)") << "resnet8" << "bf16" << false << false;
    QTest::newRow("resnet8 bf16 overflow") << "resnet8" << "bf16" << false << true;
    QTest::newRow("seed-cnn mxfp8 (never skips)") << "seed-cnn" << "mxfp8-e4m3" << false << false;
}

// FloatSim::setModel lets the hooks skip rounding what is on the grid already (ReLU, MaxPool and
// Flatten outputs, gradients that only such layers or an Add produce) and the overflow checks those
// gradients had on the way in: the same bits as rounding everything, and the same overflow.
void TestFusedPasses::floatSimSkipsOnlyExactRounding()
{
    QFETCH(QString, model);
    QFETCH(QString, format);
    QFETCH(bool, stochastic);
    QFETCH(bool, overflow);
    const NumberFormat& f = findFormat(format.toStdString());
    struct Run {
        Tensor y;
        std::vector<Tensor> grads;
        bool overflow = false;
    };
    Rng rng(5);
    Tensor x({3, 1, 28, 28});
    for (float& v : x.values()) v = rng.uniform(0.0f, 1.0f);
    const auto run = [&](bool skip) {
        Run r;
        auto m = makeModel(model.toStdString());
        FloatSim sim(f, stochastic ? Rounding::Stochastic : Rounding::Nearest);
        if (skip) sim.setModel(*m);
        sim.setKey(77);
        RunContext ctx;
        ctx.training = true;
        ctx.rngKey = 3;
        r.y = m->forward(x, ctx, &sim);
        Tensor d(r.y.shape());
        Rng g(6);
        for (float& v : d.values()) v = g.uniform(-1.0f, 1.0f) * 100.0f;
        if (overflow) d[1] = std::numeric_limits<float>::infinity();
        m->backward(d, &sim);
        for (Param* p : m->params()) r.grads.push_back(p->grad);
        r.overflow = sim.overflow();
        return r;
    };
    const Run all = run(false), skipped = run(true);
    QCOMPARE(skipped.overflow, overflow);
    QCOMPARE(all.overflow, overflow);
    QCOMPARE(all.y.values(), skipped.y.values());
    QCOMPARE(all.grads.size(), skipped.grads.size());
    for (std::size_t k = 0; k < all.grads.size(); ++k) {
        const std::vector<float>& a = all.grads[k].values();
        const std::vector<float>& b = skipped.grads[k].values();
        QVERIFY2(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
                 qPrintable(QString("gradient of parameter %1").arg(k)));
    }
}

void TestFusedPasses::qatFusedPassIsBitIdentical_data()
{
    QTest::addColumn<QString>("preset");
    // Activations left empty: the first layer of each conv/BN/Add + ReLU pair QuantSim leaves
    // alone, and the Flatten's input (its buffer is the Flatten's output: no observer there)
    QTest::addColumn<int>("fusedPairs");
    QTest::newRow("seed-cnn") << "seed-cnn" << 3;       // conv1 + relu1, conv2 + relu2, the Flatten
    // BN + ReLU fuses with its mask read from the fake-quantized output (QuantSim::fusesReLU),
    // which is what the ReLU's own backward reads; BN + ReLU6 does not (its rule reads its input)
    QTest::newRow("seed-cnn-bn") << "seed-cnn-bn" << 3; // bn1 + relu1, bn2 + relu2
    QTest::newRow("resnet8") << "resnet8" << 8;         // the stem's and each block's first BN + ReLU, each Add + ReLU
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny" << 1;
}

// QAT's training pass (QuantSim's hooks: observers, fake-quant, STE masks) runs the pairs that the
// hooks leave alone fused (Model::setFusion, as the trainer does): output, every parameter
// gradient and the next step's fake-quantized output are the same bits as the separate layers.
void TestFusedPasses::qatFusedPassIsBitIdentical()
{
    QFETCH(QString, preset);
    QFETCH(int, fusedPairs);
    Rng rng(31);
    Tensor x({6, 1, 28, 28});
    for (float& v : x.values()) v = rng.uniform(-1.0f, 2.0f);
    const auto run = [&](bool fused) {
        PassRun r;
        auto m = makeModel(preset.toStdString());
        PrecisionConfig pc;
        pc.strategy = Strategy::Qat;
        pc.format = "int8";
        pc.granularity = "channel";
        QuantSim sim(*m, pc, findFormat("int8"));
        m->setFusion(fused);
        RunContext ctx;
        ctx.training = true;
        // The second step runs on ready observers, on inputs 4x as large: the moving-average
        // ranges then clip the largest activations, so the straight-through masks hold zeros.
        Tensor x2 = x;
        for (float& v : x2.values()) v *= 4.0f;
        // One image holds each step's largest values (the first, then the last): a range taken in
        // the convolution's epilogue (QuantSim::outputSink) that missed an image would differ.
        Tensor x1 = x;
        const std::size_t image = x.numel() / x.dim(0);
        for (std::size_t k = 0; k < image; ++k) {
            x1[k] *= 3.0f;
            x2[x.numel() - image + k] *= 3.0f;
        }
        for (int step = 0; step < 2; ++step) {
            sim.quantizeWeights(Rounding::Nearest, static_cast<std::uint64_t>(step));
            const Tensor y = m->forward(step == 0 ? x1 : x2, ctx, &sim);
            r.outputs.push_back(y);
            if (step == 0)
                for (std::size_t a = 1; a <= m->size(); ++a) r.emptyActivations += m->activation(a).empty() ? 1 : 0;
            Tensor dOut(y.shape());
            Rng g(32 + static_cast<std::uint64_t>(step));
            for (float& v : dOut.values()) v = g.uniform(-1.0f, 1.0f);
            m->backward(dOut, &sim);
            sim.maskWeightGradients();
            for (Param* p : m->params()) r.grads.push_back(p->grad);
        }
        return r;
    };
    const PassRun plain = run(false), fused = run(true);
    QCOMPARE(plain.emptyActivations, 0);
    QCOMPARE(fused.emptyActivations, fusedPairs);
    const QString differs = firstDifference(plain, fused);
    QVERIFY2(differs.isEmpty(), qPrintable(differs));
}

void TestFusedPasses::mixedFusedPassIsBitIdentical_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("format");
    // Activations left empty: the first layer of each fused pair, the ReLU of a convolution that
    // runs its max pool too (bf16: conv2 rounds its own output, so ReLU and pool are exact), and
    // the Flatten's input (element-wise formats: its buffer is the Flatten's output).
    QTest::addColumn<int>("emptyActivations");
    QTest::newRow("seed-cnn bf16") << "seed-cnn" << "bf16" << 4;
    QTest::newRow("seed-cnn fp16") << "seed-cnn" << "fp16" << 3;
    // Block formats: a block's rounding depends on the values ReLU changes, so no fusion.
    QTest::newRow("seed-cnn mxfp8") << "seed-cnn" << "mxfp8-e4m3" << 0;
    // The convs feed BatchNorm; the four BatchNorm + ReLU pairs fuse, and the three Add + ReLU
    // pairs of the residual joins. fp8: BN outputs below e4m3's smallest step round to 0, so the
    // fused backward must take the ReLU's mask from the rounded output, not from BN(x) > 0
    // (measured: that fails this row).
    // bf16: the BNs round their own outputs, so all nine leave them to their readers
    // (BatchNorm2d::forwardDeferringOutput): the five that only an Add reads, and the ReLUs of the
    // four BN + ReLU pairs (read by the stride-1 convolutions' bf16 runs and the first Add); fp16
    // and fp8 round them in the hooks' pass.
    QTest::newRow("resnet8 bf16") << "resnet8" << "bf16" << 17;
    QTest::newRow("resnet8 fp16") << "resnet8" << "fp16" << 8;
    QTest::newRow("resnet8 fp8-e4m3") << "resnet8" << "fp8-e4m3" << 8;
    // The nine BatchNorm + ReLU6 pairs: ReLU6's mask on its rounded input round(v) is its mask on
    // its output min(max(round(v), 0), 6) (FloatSim::fusesReLU6). round(v) may reach 6 where v < 6
    // (fp8 rounds 5.75 up): the mask must come from the rounded value, never from BN(x).
    QTest::newRow("mobilenet-tiny bf16") << "mobilenet-tiny" << "bf16" << 10;
    QTest::newRow("mobilenet-tiny fp16") << "mobilenet-tiny" << "fp16" << 10;
    QTest::newRow("mobilenet-tiny fp8-e4m3") << "mobilenet-tiny" << "fp8-e4m3" << 10;
}

// Mixed precision's training pass (FloatSim's hooks, bf16 products where the CPU has them) runs a
// convolution or BatchNorm and its ReLU fused where FloatSim leaves their output alone (rounding
// commutes with ReLU; the ReLU rounds instead): logits, every gradient and the fused pairs' count.
// With bf16 the convolutions and BatchNorms also round their own outputs in their epilogues
// (FloatSim::roundsOutputBf16): the same bits as the hooks' own rounding pass (setLayerRounding off).
void TestFusedPasses::mixedFusedPassIsBitIdentical()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    QFETCH(int, emptyActivations);
    Rng rng(41);
    Tensor x({6, 1, 28, 28});
    for (float& v : x.values()) v = rng.uniform(-1.0f, 2.0f);
    const NumberFormat& fmt = findFormat(format.toStdString());
    const Bf16Path path = format == "bf16" ? bestBf16Path() : Bf16Path::Emulated;
    // masterWeights: the weights that only bf16 products read keep no rounded copy (as
    // MixedStrategy's step does): their packers round them the same way.
    const auto run = [&](bool fused, bool layerRounding, bool masterWeights = false) {
        PassRun r;
        auto m = makeModel(preset.toStdString());
        m->initParams(3);
        for (std::size_t i = 0; i < m->size(); ++i)
            if (auto* c = dynamic_cast<Conv2d*>(&m->layer(i))) c->setBf16Products(path);
            else if (auto* f = dynamic_cast<Linear*>(&m->layer(i))) f->setBf16Products(path);
        FloatSim sim(fmt, Rounding::Nearest);
        sim.setLayerRounding(layerRounding);
        sim.setModel(*m);
        for (std::size_t i = 0; i < m->size(); ++i) {
            r.selfRounding += sim.roundsOutputBf16(i) ? 1 : 0;
            const LayerKind k = m->layer(i).kind();
            r.convs += k == LayerKind::Conv2d || k == LayerKind::BatchNorm2d || k == LayerKind::Add || k == LayerKind::Dropout ? 1 : 0;
        }
        m->setFusion(fused);
        RunContext ctx;
        ctx.training = true;
        std::vector<Param*> rounded;
        for (std::size_t i = 0; i < m->size(); ++i) {
            const auto* c = dynamic_cast<Conv2d*>(&m->layer(i));
            const auto* f = dynamic_cast<Linear*>(&m->layer(i));
            const bool bf16Read = (c && c->readsWeightAsBf16()) || (f && f->readsWeightAsBf16());
            for (Param* p : m->layer(i).params())
                if (!(masterWeights && bf16Read && p->isWeight)) rounded.push_back(p);
            r.masterWeights += masterWeights && bf16Read ? 1 : 0;
        }
        for (int step = 0; step < 2; ++step) {
            for (Param* p : m->params()) p->grad.fill(0.0f);
            sim.roundWeightsToOverride(rounded);
            const Tensor y = m->forward(x, ctx, &sim);
            r.outputs.push_back(y);
            if (step == 0)
                for (std::size_t a = 1; a <= m->size(); ++a) r.emptyActivations += m->activation(a).empty() ? 1 : 0;
            Tensor dOut(y.shape());
            Rng g(42 + static_cast<std::uint64_t>(step));
            for (float& v : dOut.values()) v = g.uniform(-1.0f, 1.0f);
            m->backward(dOut, &sim);
            for (Param* p : m->params()) r.grads.push_back(p->grad);
            for (Param* p : m->params()) p->clearOverride();
        }
        return r;
    };
    const PassRun plain = run(false, true), fused = run(true, true), hooksRound = run(true, false);
    const PassRun masters = run(true, true, true);
    QCOMPARE(plain.emptyActivations, 0);
    // bf16: every convolution, BatchNorm, Add and Dropout rounds its own output; other formats, or with it off: none.
    QCOMPARE(fused.selfRounding, format == "bf16" ? fused.convs : 0);
    QCOMPARE(hooksRound.selfRounding, 0);
    // On the bf16 products seed-cnn's conv1 (one input channel) takes the im2col path, which does not fuse.
    const int conv1OnIm2col = path != Bf16Path::Emulated && preset == "seed-cnn" ? 1 : 0;
    QCOMPARE(fused.emptyActivations, emptyActivations - conv1OnIm2col);
    const QString differs = firstDifference(plain, fused);
    QVERIFY2(differs.isEmpty(), qPrintable(differs));
    const QString differsFromHooks = firstDifference(hooksRound, fused);
    QVERIFY2(differsFromHooks.isEmpty(), qPrintable("layer rounding against the hooks' pass: " + differsFromHooks));
    // On the bf16 products every convolution but the depthwise ones, and every fc layer, packs its weight.
    if (path != Bf16Path::Emulated) QVERIFY(masters.masterWeights > 0);
    const QString differsWithMasters = firstDifference(masters, fused);
    QVERIFY2(differsWithMasters.isEmpty(), qPrintable("master weights on the bf16 products: " + differsWithMasters));
}

namespace {
// dy handed out image by image, as BatchNorm2d::backwardDeferringInputGradient does.
class ImagesOf final : public GradientImageSource {
public:
    explicit ImagesOf(const Tensor& dy) : m_dy(dy) {}
    void gradientImages(std::size_t n0, std::size_t count, float* out) override
    {
        const std::size_t image = m_dy.numel() / m_dy.dim(0);
        std::memcpy(out, m_dy.data() + n0 * image, count * image * sizeof(float));
    }

private:
    const Tensor& m_dy;
};
} // namespace

void TestFusedPasses::stridedBf16GradientSourceIsBitIdentical_data()
{
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("size");
    QTest::addColumn<bool>("bias");
    // resnet8's downsampling convolutions, odd sizes, and windows whose phase runs may not line
    // up with dy's (then the source's whole gradient takes the im2col path)
    QTest::newRow("3x3 s2 p1 at 28") << 3 << 2 << 1 << 28 << false;
    QTest::newRow("3x3 s2 p1 at 13") << 3 << 2 << 1 << 13 << true;
    QTest::newRow("3x3 s2 p0 at 9") << 3 << 2 << 0 << 9 << true;
    QTest::newRow("5x5 s3 p2 at 11") << 5 << 3 << 2 << 11 << false;
    QTest::newRow("3x3 s3 p0 at 10") << 3 << 3 << 0 << 10 << true;
    QTest::newRow("4x4 s2 p1 at 9") << 4 << 2 << 1 << 9 << false;
    QTest::newRow("2x2 s2 p0 at 7") << 2 << 2 << 0 << 7 << true;
}

// A strided convolution on bf16 products reading its output gradient from a source (the model's
// deferred BatchNorm gradient, Conv2d::setGradientSource) computes what it computes from the tensor.
void TestFusedPasses::stridedBf16GradientSourceIsBitIdentical()
{
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QFETCH(int, size);
    QFETCH(bool, bias);
    if (bestBf16Path() == Bf16Path::Emulated) QSKIP("no bf16 products on this CPU");
    Conv2d conv("conv", 16, 24, static_cast<std::size_t>(k), static_cast<std::size_t>(stride), static_cast<std::size_t>(pad), 1, bias);
    Rng rng(5);
    for (Param* p : conv.params())
        for (float& v : p->value.values()) v = rng.uniform(-0.2f, 0.2f);
    conv.setBf16Products(bestBf16Path());
    QVERIFY(conv.takesGradientSource());
    const auto n = static_cast<std::size_t>(size);
    Tensor x({5, 16, n, n}), y;
    for (float& v : x.values()) v = roundBf16(rng.uniform(-1.0f, 1.0f));
    RunContext ctx;
    ctx.training = true;
    conv.forward(x, y, ctx);
    Tensor dy(y.shape());
    for (float& v : dy.values()) v = roundBf16(rng.uniform(-1.0f, 1.0f));
    const auto run = [&](bool sourced) {
        std::vector<Tensor> out(1);
        for (Param* p : conv.params()) p->grad.setZero();
        ImagesOf source(dy);
        static const Tensor kNoGradient;
        if (sourced) conv.setGradientSource(&source);
        conv.backward(x, y, sourced ? kNoGradient : dy, out[0], true);
        conv.setGradientSource(nullptr);
        for (Param* p : conv.params()) out.push_back(p->grad);
        return out;
    };
    const std::vector<Tensor> plain = run(false), sourced = run(true);
    QCOMPARE(sourced.size(), plain.size());
    for (std::size_t i = 0; i < plain.size(); ++i) {
        QCOMPARE(sourced[i].shape(), plain[i].shape());
        QVERIFY2(std::memcmp(sourced[i].data(), plain[i].data(), plain[i].numel() * sizeof(float)) == 0,
                 qPrintable(QString("tensor %1 differs").arg(i)));
    }
}

namespace {
// A sink that takes BatchNorm2d's output range before its pass (OutputImageSink::outputRange)
// and hands it a fixed grid, or declines (grid off), as QuantSim's observer sink does.
struct GridSink final : OutputImageSink {
    bool grid = true;
    OutputImageSink::FakeQuantGrid g;
    std::vector<std::uint8_t> mask;
    int rangeCalls = 0, imageCalls = 0;
    float lo = 0.0f, hi = 0.0f;
    bool outputRange(const Shape& y, float l, float h, FakeQuantGrid& out) override
    {
        ++rangeCalls;
        lo = l;
        hi = h;
        if (!grid) return false;
        mask.assign(shapeNumel(y), 7);
        out = g;
        out.mask = mask.data();
        return true;
    }
    void imagesWritten(const Tensor&, std::size_t, std::size_t count) override { imageCalls += static_cast<int>(count); }
};
} // namespace

void TestFusedPasses::batchNormFakeQuantizesInItsPass_data()
{
    QTest::addColumn<bool>("clamped");
    QTest::addColumn<float>("scale"); // of the grid: 0.0157 from zero point 0 holds the outputs (|y| < 3.3), 0.004 clips them
    QTest::addColumn<int>("zeroPoint");
    QTest::addColumn<bool>("withNaN");
    QTest::newRow("relu, inside the grid") << true << 0.0157f << 0 << false;
    QTest::newRow("relu, clipped") << true << 0.004f << 0 << false;
    QTest::newRow("no clamp, asymmetric, clipped") << false << 0.004f << 37 << false;
    QTest::newRow("no clamp, asymmetric, inside") << false << 0.03f << 128 << false; // [-3.84, 3.81]
    QTest::newRow("no clamp, NaN in x: no range") << false << 0.0157f << 128 << true;
}

// A BatchNorm2d whose sink takes its output's range (QuantSim's observer in a QAT pass) computes
// that range from its input's planes, and writes its output fake-quantized with its
// straight-through mask in the same pass: the same bits as the plain output's range, then
// fakeQuantize (what QuantSim runs when the pass is not fused). With a NaN in x there is no range,
// and the sink takes the images as they are written instead.
void TestFusedPasses::batchNormFakeQuantizesInItsPass()
{
    QFETCH(bool, clamped);
    QFETCH(float, scale);
    QFETCH(int, zeroPoint);
    QFETCH(bool, withNaN);
    const std::size_t N = 5, C = 6, H = 7, W = 9; // C % 4 != 0 and H W % 16 != 0: the tail paths too
    Rng rng(77);
    Tensor x({N, C, H, W});
    for (float& v : x.values()) v = rng.uniform(-3.0f, 5.0f);
    if (withNaN) x[x.numel() / 2] = std::numeric_limits<float>::quiet_NaN();
    const auto makeBn = [&] {
        auto bn = std::make_unique<BatchNorm2d>("bn", C);
        for (std::size_t c = 0; c < C; ++c) {
            bn->gamma().value[c] = c == 2 ? -0.7f : 0.5f + 0.25f * static_cast<float>(c); // one falling map
            bn->beta().value[c] = 0.1f * static_cast<float>(c) - 0.2f;
        }
        return bn;
    };
    RunContext ctx;
    ctx.training = true;
    auto plainBn = makeBn();
    Tensor plain;
    if (clamped) plainBn->forwardClamped(x, plain, ctx, std::numeric_limits<float>::infinity());
    else plainBn->forward(x, plain, ctx);

    GridSink sink;
    sink.g.scale = scale;
    sink.g.zeroPoint = zeroPoint;
    sink.g.qmin = 0;
    sink.g.qmax = 255;
    auto bn = makeBn();
    bn->setOutputSink(&sink);
    Tensor fused;
    if (clamped) bn->forwardClamped(x, fused, ctx, std::numeric_limits<float>::infinity());
    else bn->forward(x, fused, ctx);
    if (withNaN) {
        QCOMPARE(sink.rangeCalls, 0);
        QCOMPARE(sink.imageCalls, static_cast<int>(N));
        QVERIFY(std::memcmp(plain.data(), fused.data(), plain.numel() * sizeof(float)) == 0);
        return;
    }
    QCOMPARE(sink.rangeCalls, 1);
    QCOMPARE(sink.imageCalls, 0);
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (float v : plain.values()) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    QCOMPARE(sink.lo, lo);
    QCOMPARE(sink.hi, hi);
    Tensor expected(plain.shape());
    std::vector<std::uint8_t> mask(plain.numel());
    fakeQuantize(plain.values(), perTensorParams(sink.g.scale, zeroPoint, 0, 255), expected.values(), mask);
    QVERIFY(std::memcmp(expected.data(), fused.data(), expected.numel() * sizeof(float)) == 0);
    QVERIFY(mask == sink.mask);
    const auto clipped = std::count(mask.begin(), mask.end(), std::uint8_t{0});
    if (scale < 0.01f) QVERIFY2(clipped > 0, "the grid clips some values");
    else QCOMPARE(clipped, 0);

    // declined: the output as it is, and no images for a sink that took the range
    GridSink declines;
    declines.grid = false;
    auto bn2 = makeBn();
    bn2->setOutputSink(&declines);
    Tensor again;
    if (clamped) bn2->forwardClamped(x, again, ctx, std::numeric_limits<float>::infinity());
    else bn2->forward(x, again, ctx);
    QCOMPARE(declines.rangeCalls, 1);
    QCOMPARE(declines.imageCalls, static_cast<int>(N));
    QVERIFY(std::memcmp(plain.data(), again.data(), plain.numel() * sizeof(float)) == 0);
}

QTEST_GUILESS_MAIN(TestFusedPasses)
#include "tst_fused_passes.moc"
