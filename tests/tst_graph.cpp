// Graph models: what Model::add accepts, shape errors a user can act on, the resnet8 and
// mobilenet-tiny presets (parameter counts of the reference's common.py), and thread-count
// determinism of a whole forward/backward, and resnet8's training steps against PyTorch's ResNet8
// (029_resnet8_adam_steps.json). Gradients of graphs are checked in tst_layers_gradients.
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model.h"
#include "nn/model_zoo.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "util/errors.h"
#include "util/rng.h"

#include "test_tensors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "golden.h" // Qt

#include <QtTest>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

using namespace quantscope;
using namespace quantscope::testing;

namespace {

// Runs f and returns the message of the ConfigError it throws, or "no ConfigError".
std::string configErrorOf(const std::function<void()>& f)
{
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "no ConfigError";
}

// QVERIFY that `message` contains every one of `parts`, printing the message otherwise.
#define QS_VERIFY_MENTIONS(message, ...)                                                                     \
    do {                                                                                                     \
        const std::string qsMsg_ = (message);                                                                \
        for (const std::string& qsPart_ : std::vector<std::string>{__VA_ARGS__})                             \
            QVERIFY2(qsMsg_.find(qsPart_) != std::string::npos,                                              \
                     ("'" + qsMsg_ + "' does not mention '" + qsPart_ + "'").c_str());                       \
    } while (false)

// input (3, 8, 8) -> conv "a" (3->4, s1 p1) -> ReLU "relu": activations 0, 1, 2.
std::unique_ptr<Model> smallStack()
{
    auto m = std::make_unique<Model>("small", Shape{3, 8, 8});
    m->add(std::make_unique<Conv2d>("a", 3, 4, 3, 1, 1));
    m->add(std::make_unique<ReLU>("relu"));
    return m;
}

} // namespace

class TestGraph : public QObject {
    Q_OBJECT

private slots:
    void addRejects_data();
    void addRejects();
    void addWiresInputsAndConsumers();
    void addOfDifferentShapesNamesLayerAndShapes();
    void depthwiseChannelMismatchNamesLayerAndShapes();
    void presets_data();
    void presets();
    void presetThreadCountDeterminism_data();
    void presetThreadCountDeterminism();
    void fusedActivationIsBitIdentical_data();
    void fusedActivationIsBitIdentical();
    void resnet8TrainsAsPyTorch_data();
    void resnet8TrainsAsPyTorch();
    void inferenceReleasesDeadActivations_data();
    void inferenceReleasesDeadActivations();
    void batchNormDeferredOutputIsItsForward_data();
    void batchNormDeferredOutputIsItsForward();
};

void TestGraph::addRejects_data()
{
    QTest::addColumn<QString>("what");
    QTest::addColumn<QString>("mentions");
    QTest::newRow("input is the layer's own output") << "own_output" << "input activation 3";
    QTest::newRow("input is a later activation") << "later" << "input activation 7";
    QTest::newRow("one input to Add") << "add_one_input" << "takes 2 input(s), given 1";
    QTest::newRow("three inputs to Add") << "add_three_inputs" << "takes 2 input(s), given 3";
    QTest::newRow("two inputs to ReLU") << "relu_two_inputs" << "takes 1 input(s), given 2";
    QTest::newRow("duplicate name") << "duplicate" << "two layers are called 'a'";
    QTest::newRow("empty name") << "empty_name" << "needs a name";
}

// A rejected add throws ConfigError and leaves the model as it was.
void TestGraph::addRejects()
{
    QFETCH(QString, what);
    QFETCH(QString, mentions);
    auto m = smallStack();
    const auto attempt = [&] {
        if (what == "own_output") m->add(std::make_unique<ReLU>("x"), {3});
        else if (what == "later") m->add(std::make_unique<ReLU>("x"), {7});
        else if (what == "add_one_input") m->add(std::make_unique<Add>("x"), {1});
        else if (what == "add_three_inputs") m->add(std::make_unique<Add>("x"), {0, 1, 2});
        else if (what == "relu_two_inputs") m->add(std::make_unique<ReLU>("x"), {1, 2});
        else if (what == "duplicate") m->add(std::make_unique<ReLU>("a"));
        else if (what == "empty_name") m->add(std::make_unique<ReLU>(""));
    };
    QS_VERIFY_MENTIONS(configErrorOf(attempt), mentions.toStdString());
    QCOMPARE(m->size(), std::size_t{2});
    QCOMPARE(m->consumersOf(1).size(), std::size_t{1});
    QCOMPARE(m->consumersOf(2).size(), std::size_t{0});
    QVERIFY(m->isChain());
    // ... and still takes a valid layer.
    QCOMPARE(m->add(std::make_unique<Add>("add"), {1, 2}), std::size_t{3});
    QCOMPARE(m->outputShape(2), (Shape{2, 4, 8, 8}));
}

void TestGraph::addWiresInputsAndConsumers()
{
    auto m = smallStack();
    const std::size_t b = m->add(std::make_unique<Conv2d>("b", 3, 4, 1), {0}); // reads the input again
    const std::size_t sum = m->add(std::make_unique<Add>("add"), {2, b});
    QCOMPARE(b, std::size_t{3});
    QCOMPARE(sum, std::size_t{4});
    QCOMPARE(m->inputsOf(3), (std::vector<std::size_t>{2, 3}));
    QCOMPARE(m->consumersOf(0), (std::vector<std::size_t>{0, 2}));
    QCOMPARE(m->outputOf("b"), std::size_t{3});
    QCOMPARE(m->soleConsumer(1), 3L);
    QCOMPARE(m->soleConsumer(3), -1L); // nobody reads the last output
    QVERIFY(!m->isChain());
    QVERIFY(configErrorOf([&] { m->outputOf("nope"); }) != "no ConfigError");
}

// Two branches of different resolution joined by Add: shape inference, forward and output shape
// all refuse, naming the Add and both shapes.
void TestGraph::addOfDifferentShapesNamesLayerAndShapes()
{
    Model m("mismatch", {3, 8, 8});
    const std::size_t full = m.add(std::make_unique<Conv2d>("full", 3, 4, 3, 1, 1));
    const std::size_t half = m.add(std::make_unique<Conv2d>("half", 3, 4, 3, 2, 1), {0});
    m.add(std::make_unique<Add>("join"), {full, half}); // add() itself does not know shapes
    const std::string a = shapeString({5, 4, 8, 8}), b = shapeString({5, 4, 4, 4});
    QS_VERIFY_MENTIONS(configErrorOf([&] { m.activationShapes(5); }), "join", a, b);
    QS_VERIFY_MENTIONS(configErrorOf([&] { m.outputShape(5); }), "join", a, b);
    Rng rng(3);
    const Tensor x = randomTensor({5, 3, 8, 8}, rng);
    QS_VERIFY_MENTIONS(configErrorOf([&] { m.forward(x, RunContext{}); }), "join", a, b);
}

void TestGraph::depthwiseChannelMismatchNamesLayerAndShapes()
{
    Model m("dw", {4, 6, 6});
    m.add(std::make_unique<Conv2d>("stem", 4, 6, 1));
    m.add(std::make_unique<Conv2d>("dw3x3", 8, 8, 3, 1, 1, 8, false)); // stem gives 6 channels
    QVERIFY(dynamic_cast<Conv2d&>(m.layer(1)).isDepthwise());
    const std::string msg = configErrorOf([&] { m.activationShapes(2); });
    QS_VERIFY_MENTIONS(msg, "dw3x3", "(N,8,H,W)", shapeString({2, 6, 6, 6}));
    Rng rng(4);
    const Tensor x = randomTensor({2, 4, 6, 6}, rng);
    QS_VERIFY_MENTIONS(configErrorOf([&] { m.forward(x, RunContext{}); }), "dw3x3", shapeString({2, 6, 6, 6}));
    // Channels that are not a multiple of groups are refused when the layer is made.
    QS_VERIFY_MENTIONS(configErrorOf([] { Conv2d("g", 6, 8, 3, 1, 1, 4); }), "g:", "groups = 4");
}

void TestGraph::presets_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<int>("params");
    QTest::addColumn<int>("depthwise");
    QTest::addColumn<int>("adds");
    // Counts of common.py's ResNet8 and MobileNetTiny (sum of p.numel() over parameters).
    QTest::newRow("resnet8") << "resnet8" << 77754 << 0 << 3;
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny" << 31946 << 4 << 0;
}

void TestGraph::presets()
{
    QFETCH(QString, preset);
    QFETCH(int, params);
    QFETCH(int, depthwise);
    QFETCH(int, adds);
    auto m = makeModel(preset.toStdString());
    QCOMPARE(m->numParams(), static_cast<std::size_t>(params));
    QCOMPARE(m->outputShape(7), (Shape{7, 10}));
    int dw = 0, add = 0;
    for (std::size_t i = 0; i < m->size(); ++i) {
        if (auto* c = dynamic_cast<Conv2d*>(&m->layer(i)); c && c->isDepthwise()) ++dw;
        if (m->layer(i).kind() == LayerKind::Add) ++add;
    }
    QCOMPARE(dw, depthwise);
    QCOMPARE(add, adds);
    QCOMPARE(m->isChain(), adds == 0);
    // The input shape is a parameter: 3-channel 32x32 images, 100 classes.
    QCOMPARE(makeModel(preset.toStdString(), 3, 32, 32, 100)->outputShape(2), (Shape{2, 100}));
}

void TestGraph::presetThreadCountDeterminism_data()
{
    QTest::addColumn<QString>("preset");
    QTest::newRow("resnet8") << "resnet8";
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny";
}

// A training forward and backward of a whole graph preset gives the same bits in an arena of 1
// and of 2 threads: output, every parameter gradient, and an inference forward after it.
void TestGraph::presetThreadCountDeterminism()
{
    QFETCH(QString, preset);
    Rng rng(11);
    const Tensor x = randomTensor({9, 1, 28, 28}, rng); // 9 images: uneven chunks over 2 threads
    Tensor dOut;
    struct Run {
        Tensor y, yEval;
        std::vector<Tensor> grads;
    };
    const auto run = [&](int threads) {
        Run r;
        auto m = makeModel(preset.toStdString()); // fresh: BatchNorm statistics move in training
        tbb::task_arena arena(threads);
        arena.execute([&] {
            RunContext ctx;
            ctx.training = true;
            r.y = m->forward(x, ctx);
            if (dOut.empty()) {
                Rng g(12);
                dOut = randomTensor(r.y.shape(), g);
            }
            m->backward(dOut);
            r.yEval = m->forward(x, RunContext{});
        });
        for (Param* p : m->params()) r.grads.push_back(p->grad);
        return r;
    };
    const Run one = run(1), two = run(2);
    QVERIFY(bitIdentical(one.y, two.y));
    QVERIFY(bitIdentical(one.yEval, two.yEval));
    QCOMPARE(one.grads.size(), two.grads.size());
    for (std::size_t k = 0; k < one.grads.size(); ++k)
        QVERIFY2(bitIdentical(one.grads[k], two.grads[k]), qPrintable(QString("gradient of parameter %1").arg(k)));
}

// Convolutions on every path that fuses an activation, with ReLU and ReLU6: direct stride 1
// (padded: the mask is applied in the run layout), direct stride 2 and 1x1 (im2col) and no bias
// (a masked copy first); the last conv has two readers, so its ReLU runs on its own.
std::unique_ptr<Model> fusionConvs()
{
    auto m = std::make_unique<Model>("fusion-convs", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("stem", 1, 8, 3, 1, 1));             // im2col (1 input channel)
    m->add(std::make_unique<ReLU>("stem_relu"));
    m->add(std::make_unique<Conv2d>("same", 8, 16, 3, 1, 1));            // direct, stride 1, padded
    m->add(std::make_unique<ReLU6>("same_relu6"));
    m->add(std::make_unique<Conv2d>("down", 16, 16, 3, 2, 1, 1, false)); // direct, stride 2, no bias
    m->add(std::make_unique<ReLU6>("down_relu6"));
    m->add(std::make_unique<Conv2d>("point", 16, 8, 1));                 // im2col, 1x1
    m->add(std::make_unique<ReLU>("point_relu"));
    const std::size_t shared = m->add(std::make_unique<Conv2d>("shared", 8, 8, 3, 1, 1));
    const std::size_t relu = m->add(std::make_unique<ReLU>("shared_relu"));
    m->add(std::make_unique<Add>("join"), {shared, relu});
    m->add(std::make_unique<Flatten>("flat"));
    m->add(std::make_unique<Linear>("fc", 8 * 14 * 14, 10));
    m->initParams(5);
    return m;
}

// Max pools after Conv2d + clamp pairs: fused into the direct convolutions' epilogue (ReLU6 with
// a bias-less convolution, an odd output that the pool floors), not after the im2col stem.
std::unique_ptr<Model> fusionPools()
{
    auto m = std::make_unique<Model>("fusion-pools", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("stem", 1, 8, 3, 1, 1));          // im2col: clamp fused, pool not
    m->add(std::make_unique<ReLU>("stem_relu"));
    m->add(std::make_unique<MaxPool2d>("stem_pool", 2));               // 14 x 14
    m->add(std::make_unique<Conv2d>("mid", 8, 16, 3, 1, 0, 1, false)); // direct, no bias: 12 x 12
    m->add(std::make_unique<ReLU6>("mid_relu6"));
    m->add(std::make_unique<MaxPool2d>("mid_pool", 2));                // fused: 6 x 6
    m->add(std::make_unique<Conv2d>("odd", 16, 8, 2));                 // direct, 5 x 5
    m->add(std::make_unique<ReLU>("odd_relu"));
    m->add(std::make_unique<MaxPool2d>("odd_pool", 2));                // fused, floors to 2 x 2
    m->add(std::make_unique<Flatten>("flat"));
    m->add(std::make_unique<Linear>("fc", 8 * 2 * 2, 10));
    m->initParams(5);
    return m;
}

void TestGraph::fusedActivationIsBitIdentical_data()
{
    QTest::addColumn<QString>("preset");
    // Activations left empty: the first layer of each BatchNorm2d or Conv2d -> ReLU/ReLU6 pair where
    // it has no other reader, the clamp of each Conv2d + clamp + 2x2 max pool run as one, and the
    // input of the Flatten (its buffer is the Flatten's output), and a BatchNorm2d read by an
    // Add + clamp alone (the Add computes its output plane by plane).
    QTest::addColumn<int>("emptyActivations");
    QTest::addColumn<bool>("bf16"); // the convolutions on the bf16 products (where the CPU has them)
    // resnet8: the stem's and each block's first BN, each block's Add, the 5 BNs that only an Add
    // reads (each block's second BN, the shortcuts' BNs: the Add computes their output), and the
    // ReLUs of the stem's and each block's first BN (their readers, stride-1 direct convolutions
    // and the first block's Add, compute that output)
    QTest::newRow("resnet8") << "resnet8" << 17 << false;
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny" << 10 << false; // stem, then depthwise and pointwise in 4 blocks
    QTest::newRow("seed-cnn-bn") << "seed-cnn-bn" << 4 << false; // bn1's ReLU: conv2 computes it
    QTest::newRow("seed-cnn") << "seed-cnn" << 4 << false;       // conv1 (im2col), conv2 (direct, unpadded) and its pooled ReLU
    QTest::newRow("seed-cnn bf16") << "seed-cnn" << 3 << true; // conv1's bf16 im2col path fuses no clamp
    QTest::newRow("convs") << "convs" << 5 << false;             // fusionConvs: all but the shared conv
    QTest::newRow("pools") << "pools" << 6 << false;             // fusionPools: 3 pairs, 2 of them pooled
    QTest::newRow("pools bf16") << "pools" << 5 << true;         // nor does the stem's
}

// The trainer's fused BatchNorm/Conv2d + activation pass (Model::setFusion) gives the same bits as
// the separate layers: training output, every parameter gradient, the running statistics (seen
// through an inference forward after the step) and a fused inference forward.
void TestGraph::fusedActivationIsBitIdentical()
{
    QFETCH(QString, preset);
    QFETCH(int, emptyActivations);
    QFETCH(bool, bf16);
    if (bf16 && bestBf16Path() == Bf16Path::Emulated) QSKIP("no bf16 products on this CPU");
    Rng rng(21);
    const Tensor x = randomTensor({5, 1, 28, 28}, rng);
    Tensor dOut;
    struct Run {
        Tensor y, yEval, yEvalFused;
        std::vector<Tensor> grads;
        int emptyActivations = 0;
    };
    const auto run = [&](bool fused) {
        Run r;
        auto m = preset == "convs" ? fusionConvs() : preset == "pools" ? fusionPools() : makeModel(preset.toStdString());
        if (bf16)
            for (std::size_t i = 0; i < m->size(); ++i)
                if (auto* c = dynamic_cast<Conv2d*>(&m->layer(i))) c->setBf16Products(bestBf16Path());
        m->setFusion(fused);
        RunContext ctx;
        ctx.training = true;
        r.y = m->forward(x, ctx);
        for (std::size_t a = 1; a <= m->size(); ++a) r.emptyActivations += m->activation(a).empty() ? 1 : 0;
        if (dOut.empty()) {
            Rng g(22);
            dOut = randomTensor(r.y.shape(), g);
        }
        m->backward(dOut);
        m->backward(dOut); // a second backward of the same forward (a Flatten's view handed its buffer back)
        for (Param* p : m->params()) r.grads.push_back(p->grad);
        r.yEvalFused = m->forward(x, RunContext{});
        m->setFusion(false);
        r.yEval = m->forward(x, RunContext{});
        return r;
    };
    const Run plain = run(false), fused = run(true);
    QCOMPARE(plain.emptyActivations, 0);
    QCOMPARE(fused.emptyActivations, emptyActivations);
    QVERIFY(bitIdentical(plain.y, fused.y));
    QCOMPARE(plain.grads.size(), fused.grads.size());
    for (std::size_t k = 0; k < plain.grads.size(); ++k)
        QVERIFY2(bitIdentical(plain.grads[k], fused.grads[k]), qPrintable(QString("gradient of parameter %1").arg(k)));
    QVERIFY2(bitIdentical(plain.yEval, fused.yEval), "running statistics");
    QVERIFY(bitIdentical(plain.yEval, fused.yEvalFused));
}

namespace {

// u(t, i) of make_029_resnet8_adam_steps.py: splitmix64(t * 2^32 + i) as a double in [-1, 1).
double refUniform(std::uint64_t t, std::uint64_t i)
{
    return static_cast<double>(splitmix64((t << 32) + i) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

// sum_i v[i] u(t + 1000, i) in double: the reference's per-tensor probe.
double refProbe(const Tensor& v, std::uint64_t t)
{
    double s = 0.0;
    for (std::size_t i = 0; i < v.numel(); ++i) s += static_cast<double>(v[i]) * refUniform(t + 1000, i);
    return s;
}

double l2Norm(const Tensor& v)
{
    double s = 0.0;
    for (float f : v.values()) s += static_cast<double>(f) * f;
    return std::sqrt(s);
}

} // namespace

void TestGraph::resnet8TrainsAsPyTorch_data()
{
    QTest::addColumn<bool>("fused");
    QTest::newRow("layers fused as the trainer runs them") << true;
    QTest::newRow("separate layers") << false;
}

// PyTorch's ResNet8 (common.py) from fixed weights, three Adam steps (lr 1e-3) on one batch of 8
// 1x12x12 images in training mode, then evaluated: 029_resnet8_adam_steps.json. The preset, given
// the same weights, must give the same losses, training output, gradients, running statistics
// and eval output. This pins what moves accuracy between the two trainers: BatchNorm's eps,
// momentum (0.1 on the new value) and unbiased running variance, eval on running statistics,
// the wiring of the blocks and shortcuts, global average pooling, the loss and Adam. The weights
// come from the formula both sides compute (see the script), not from either side's init.
void TestGraph::resnet8TrainsAsPyTorch()
{
    QFETCH(bool, fused);
    const golden::GoldenCase g = golden::loadGolden("029_resnet8_adam_steps.json");
    const auto& p = g.params;
    const std::size_t n = p.at("n"), c = p.at("c"), h = p.at("h"), w = p.at("w"), classes = p.at("classes");
    auto m = makeModel("resnet8", c, h, w, classes);
    m->setFusion(fused);
    // The reference's weights, tensor by tensor in QuantScope's parameter order.
    std::vector<Param*> order;
    std::size_t total = 0;
    for (std::size_t t = 0; t < p.at("tensors").size(); ++t) {
        const auto& d = p.at("tensors")[t];
        Layer* l = m->findLayer(d.at("layer").get<std::string>());
        QVERIFY2(l, d.dump().c_str());
        Param* q = nullptr;
        for (Param* cand : l->params())
            if (cand->name == d.at("param").get<std::string>()) q = cand;
        QVERIFY2(q, d.dump().c_str());
        const Shape shape = d.at("shape").get<Shape>();
        QCOMPARE(q->value.shape(), shape);
        const std::string init = d.at("init");
        // fan-in of a conv weight (out, in, kh, kw) or an fc weight (out, in); the fc bias uses the fc's
        const double fanIn = init == "b" ? static_cast<double>(order.back()->value.numel() / q->value.numel())
                                         : static_cast<double>(q->value.numel() / shape[0]);
        for (std::size_t i = 0; i < q->value.numel(); ++i) {
            const double u = refUniform(t, i);
            q->value[i] = static_cast<float>(init == "gamma" ? 1.0 + 0.1 * u
                                             : init == "beta" ? 0.1 * u
                                                              : u / std::sqrt(fanIn));
        }
        order.push_back(q);
        total += q->value.numel();
    }
    QCOMPARE(total, m->numParams()); // every parameter is set
    QCOMPARE(order.size(), m->params().size());

    const Tensor& x = g.in("x");
    QCOMPARE(x.shape(), (Shape{n, c, h, w}));
    const std::vector<std::int32_t> y = g.intInput("target");
    AdamOptions ao;
    ao.lr = p.at("lr").get<float>();
    Adam adam(ao);
    // Float32 on both sides, summed in different orders. Measured here: losses 1.3e-7 relative,
    // log-probabilities 4.8e-7, gradients (norms and probes) 7e-7 of the tensor's norm, parameters
    // after the steps 1.2e-6 of their norm (Adam's first step is about lr sign(g), so an element
    // whose gradient is near 0 may move differently), running means 2.3e-6 (layer3.bn2, after that
    // parameter), running variances 3e-7 relative. The bounds leave a margin of about 10x; a
    // biased running variance or the other momentum convention misses them by 1e-3 or more.
    constexpr double kLossRtol = 2e-6, kOutAtol = 1e-5, kGradRel = 1e-5, kParamRel = 1e-5, kMeanAtol = 2e-5,
                     kVarRtol = 5e-6;
    for (std::size_t s = 1; s <= p.at("steps").get<std::size_t>(); ++s) {
        RunContext ctx;
        ctx.training = true;
        const Tensor out = m->forward(x, ctx);
        Tensor grad;
        const double loss = nllLoss(out, y, grad);
        const double expLoss = g.scalar("loss_step" + std::to_string(s));
        QVERIFY2(std::abs(loss - expLoss) <= kLossRtol * std::abs(expLoss),
                 qPrintable(QString("step %1: loss %2, PyTorch %3").arg(s).arg(loss, 0, 'g', 9).arg(expLoss, 0, 'g', 9)));
        m->backward(grad);
        if (s == 1) {
            QS_COMPARE_TENSORS(out, g.out("logp_train_step1"), kOutAtol, 0.0);
            const Tensor& probes = g.out("grad_probe_step1");
            const Tensor& norms = g.out("grad_norm_step1");
            for (std::size_t t = 0; t < order.size(); ++t) {
                const double norm = l2Norm(order[t]->grad), probe = refProbe(order[t]->grad, t);
                // a probe sums numel terms of size ~norm/sqrt(numel): its rounding scales with norm
                QVERIFY2(std::abs(norm - norms[t]) <= kGradRel * norms[t] + 1e-8 &&
                             std::abs(probe - probes[t]) <= kGradRel * norms[t] + 1e-8,
                         qPrintable(QString("gradient of %1.%2: norm %3 (PyTorch %4), probe %5 (PyTorch %6)")
                                        .arg(QString::fromStdString(p.at("tensors")[t].at("layer").get<std::string>()),
                                             QString::fromStdString(order[t]->name))
                                        .arg(norm, 0, 'g', 9).arg(double(norms[t]), 0, 'g', 9)
                                        .arg(probe, 0, 'g', 9).arg(double(probes[t]), 0, 'g', 9)));
            }
        }
        adam.step(order);
    }
    const Tensor& after = g.out("param_probe_after");
    for (std::size_t t = 0; t < order.size(); ++t) {
        const double probe = refProbe(order[t]->value, t), tol = kParamRel * l2Norm(order[t]->value);
        QVERIFY2(std::abs(probe - after[t]) <= tol,
                 qPrintable(QString("parameter %1 after the steps: probe %2, PyTorch %3")
                                .arg(t).arg(probe, 0, 'g', 9).arg(double(after[t]), 0, 'g', 9)));
    }
    int bns = 0;
    for (std::size_t i = 0; i < m->size(); ++i) {
        auto* bn = dynamic_cast<BatchNorm2d*>(&m->layer(i));
        if (!bn) continue;
        ++bns;
        QS_COMPARE_TENSORS(bn->runningMean(), g.out("running_mean." + bn->name()), kMeanAtol, 0.0);
        QS_COMPARE_TENSORS(bn->runningVar(), g.out("running_var." + bn->name()), 0.0, kVarRtol);
    }
    QCOMPARE(bns, 9);
    QS_COMPARE_TENSORS(m->forward(x, RunContext{}), g.out("logp_eval_after"), kOutAtol, 0.0);
}

// RunContext::releaseActivations (evaluation, calibration): each activation is freed once its last
// reader has run, so a pass holds only the live ones; the output, and the last layer's input that
// the loss reads, stay, bit-identical to a pass that keeps everything. resnet8's residual
// inputs stay until their Add has run.
void TestGraph::inferenceReleasesDeadActivations_data()
{
    QTest::addColumn<QString>("preset");
    for (const char* p : {"resnet8", "mobilenet-tiny", "seed-cnn"}) QTest::newRow(p) << p;
}

void TestGraph::inferenceReleasesDeadActivations()
{
    QFETCH(QString, preset);
    auto m = makeModel(preset.toStdString());
    Rng rng(31);
    const Tensor x = randomTensor({6, 1, 28, 28}, rng);
    const auto empties = [&] {
        int e = 0;
        for (std::size_t a = 0; a <= m->size(); ++a) e += m->activation(a).empty() ? 1 : 0;
        return e;
    };
    const Tensor kept = m->forward(x, RunContext{});
    const std::size_t n = m->size();
    const Tensor lastInput = m->activation(n - 1);
    const int fusedAway = empties(); // a ReLU run inside its conv leaves the conv's output empty
    QVERIFY(fusedAway < int(n) / 2);
    RunContext release;
    release.releaseActivations = true;
    const Tensor out = m->forward(x, release);
    QVERIFY(bitIdentical(kept, out));
    QVERIFY(bitIdentical(lastInput, m->activation(n - 1)));
    for (std::size_t a = 0; a + 1 < n; ++a) QVERIFY2(m->activation(a).empty(), qPrintable(QString("activation %1 kept").arg(a)));
    // a training pass keeps every activation for backward, whatever the flag says
    RunContext training;
    training.training = true;
    m->forward(x, training);
    const int trainingEmpties = empties();
    training.releaseActivations = true;
    m->forward(x, training);
    QCOMPARE(empties(), trainingEmpties);
}

void TestGraph::batchNormDeferredOutputIsItsForward_data()
{
    QTest::addColumn<bool>("training");
    QTest::addColumn<bool>("clamp");
    QTest::addColumn<bool>("bf16");
    QTest::newRow("training") << true << false << false;
    QTest::newRow("training, ReLU") << true << true << false;
    QTest::newRow("training, ReLU, bf16") << true << true << true;
    QTest::newRow("evaluation, ReLU6, bf16") << false << true << true;
}

// BatchNorm2d::forwardDeferringOutput + OutputPlaneSource give the values (and the statistics) of
// the BN's own forward, plane by plane and row by row at a pitch; asked for without such a forward,
// they are a ConfigError naming the layer.
void TestGraph::batchNormDeferredOutputIsItsForward()
{
    QFETCH(bool, training);
    QFETCH(bool, clamp);
    QFETCH(bool, bf16);
    Rng rng(41);
    const Tensor x = randomTensor({3, 5, 7, 9}, rng);
    const float cap = bf16 ? 6.0f : std::numeric_limits<float>::infinity();
    RunContext ctx;
    ctx.training = training;
    ctx.roundOutputBf16 = bf16;
    BatchNorm2d own("bn", 5), deferred("bn", 5);
    for (BatchNorm2d* b : {&own, &deferred}) { // gamma and beta away from 1 and 0, the same in both
        for (std::size_t c = 0; c < 5; ++c) {
            b->gamma().value[c] = 0.5f + 0.25f * static_cast<float>(c);
            b->beta().value[c] = 0.1f * static_cast<float>(c) - 0.2f;
            b->runningMean()[c] = 0.05f * static_cast<float>(c);
            b->runningVar()[c] = 1.0f + 0.1f * static_cast<float>(c);
        }
    }
    QVERIFY_THROWS_EXCEPTION(ConfigError, [&] {
        std::vector<float> out(63);
        deferred.outputPlanes(0, 1, out.data());
    }());
    Tensor y;
    if (clamp) own.forwardClamped(x, y, ctx, cap);
    else own.forward(x, y, ctx);
    deferred.forwardDeferringOutput(x, ctx, clamp ? cap : 0.0f, clamp);
    std::vector<float> planes(y.numel());
    deferred.outputPlanes(0, 15, planes.data());
    QVERIFY(std::memcmp(planes.data(), y.data(), y.numel() * sizeof(float)) == 0);
    const std::size_t pitch = 12; // rows of 9 at a pitch of 12: the 3 floats between rows stay as they are
    std::vector<float> rows(7 * pitch, -7.0f);
    deferred.outputPlaneRows(13, rows.data(), pitch);
    for (std::size_t r = 0; r < 7; ++r) {
        QVERIFY(std::memcmp(rows.data() + r * pitch, y.data() + 13 * 63 + r * 9, 9 * sizeof(float)) == 0);
        for (std::size_t k = 9; k < pitch; ++k) QCOMPARE(rows[r * pitch + k], -7.0f);
    }
    QVERIFY(bitIdentical(own.runningMean(), deferred.runningMean()));
    QVERIFY(bitIdentical(own.runningVar(), deferred.runningVar()));
    QVERIFY_THROWS_EXCEPTION(ConfigError, deferred.outputPlaneRows(0, rows.data(), 8)); // pitch below the width
    QVERIFY_THROWS_EXCEPTION(ConfigError, deferred.outputPlanes(15, 1, planes.data())); // past the last plane
    Tensor again;
    deferred.forward(x, again, ctx); // a forward of its own ends the deferred one
    QVERIFY_THROWS_EXCEPTION(ConfigError, deferred.outputPlanes(0, 1, planes.data()));
}

QTEST_GUILESS_MAIN(TestGraph)
#include "tst_graph.moc"
