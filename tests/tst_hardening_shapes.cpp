// Hardening: shapes and sizes that do not fit. A layer given an input or an output gradient of a
// shape it does not take throws ConfigError naming it; images far larger than a preset was made
// for are refused before the memory goes; a convolution of an empty batch gives an empty output
// and zero gradients.
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model_zoo.h"
#include "train/trainer.h"
#include "util/errors.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <limits>
#include <memory>
#include <vector>

using namespace quantscope;
using quantscope::testing::randomTensor;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

} // namespace

class TestHardeningShapes : public QObject {
    Q_OBJECT
private slots:
    void layersRejectMismatchedShapes_data();
    void layersRejectMismatchedShapes();
    void imagesTooLargeForTheModel();
    void convolutionOfAnEmptyBatch_data();
    void convolutionOfAnEmptyBatch();
};


namespace {
// One layer of each kind, with an input shape it takes and inputs it does not (none for the
// elementwise layers, which take any shape).
struct LayerCase {
    std::unique_ptr<Layer> layer;
    Shape input;
    std::vector<Shape> invalid;
};

LayerCase layerCase(const QString& kind)
{
    const Shape image{2, 16, 6, 6};
    // (N, C, H, W) layers: no rank 0, 1 or 2 input
    const std::vector<Shape> notImage{{}, {3}, {2, 16}};
    const auto plus = [&](std::vector<Shape> more) {
        more.insert(more.end(), notImage.begin(), notImage.end());
        return more;
    };
    if (kind == "relu") return {std::make_unique<ReLU>("relu"), image, {}};
    if (kind == "relu6") return {std::make_unique<ReLU6>("relu6"), image, {}};
    if (kind == "dropout") return {std::make_unique<Dropout>("dropout", 0.5f), image, {}};
    if (kind == "log_softmax") return {std::make_unique<LogSoftmax>("log_softmax"), {2, 10}, {{}, {3}, image}};
    if (kind == "flatten") return {std::make_unique<Flatten>("flatten"), image, {{}}};
    if (kind == "avgpool") return {std::make_unique<AvgPool2d>("avgpool", 2, 2), image, plus({{2, 16, 1, 6}})};
    if (kind == "avgpool padded") return {std::make_unique<AvgPool2d>("avgpool", 5, 2, 1), image, plus({{2, 16, 2, 6}})};
    if (kind == "global avgpool") return {std::make_unique<GlobalAvgPool2d>("gap"), image, notImage};
    if (kind == "maxpool") return {std::make_unique<MaxPool2d>("maxpool", 2, 2), image, plus({{2, 16, 6, 1}})};
    if (kind == "maxpool padded") return {std::make_unique<MaxPool2d>("maxpool", 5, 2, 2), image, plus({{2, 16, 0, 6}})};
    if (kind == "batchnorm") return {std::make_unique<BatchNorm2d>("bn", 16), image, plus({{2, 5, 6, 6}})};
    const std::vector<Shape> convBad = plus({{2, 5, 6, 6}, {2, 16, 0, 0}});
    if (kind == "conv im2col") {
        auto conv = std::make_unique<Conv2d>("conv", 16, 8, 3, 1, 1);
        conv->setReferencePath(true);
        return {std::move(conv), image, convBad};
    }
    if (kind == "conv direct") return {std::make_unique<Conv2d>("conv", 16, 8, 3, 1, 1), image, convBad};
    if (kind == "conv 3 channels") return {std::make_unique<Conv2d>("conv", 3, 8, 3, 1, 1), {2, 3, 6, 6}, plus({{2, 16, 6, 6}})};
    if (kind == "conv strided") return {std::make_unique<Conv2d>("conv", 16, 8, 3, 2, 1), image, convBad};
    if (kind == "depthwise") return {std::make_unique<Conv2d>("dw", 16, 16, 3, 2, 1, 16), image, convBad};
    if (kind == "linear") return {std::make_unique<Linear>("fc", 576, 10), {2, 576}, {{}, {3}, {2, 575}, image}};
    return {};
}
} // namespace

void TestHardeningShapes::layersRejectMismatchedShapes_data()
{
    QTest::addColumn<QString>("kind");
    for (const char* k : {"relu", "relu6", "dropout", "log_softmax", "flatten", "avgpool", "avgpool padded", "global avgpool",
                          "maxpool", "maxpool padded", "batchnorm", "conv im2col", "conv direct", "conv 3 channels", "conv strided",
                          "depthwise", "linear", "add"})
        QTest::newRow(k) << QString(k);
}

// A layer called with shapes that do not fit (an input it does not take, an output gradient of
// another shape than its output) throws ConfigError naming the layer: never reads out of bounds,
// crashes or gives a gradient of garbage.
void TestHardeningShapes::layersRejectMismatchedShapes()
{
    QFETCH(QString, kind);
    Rng rng(5);
    RunContext ctx;
    ctx.training = true;
    if (kind == "add") {
        Add add("join");
        const Tensor a = randomTensor({2, 4, 3, 3}, rng), b = randomTensor({2, 4, 3, 3}, rng);
        Tensor y, da, db;
        add.forwardMulti({&a, &b}, y, ctx);
        const Tensor bad = randomTensor({2, 4, 3, 4}, rng);
        QVERIFY_THROWS_EXCEPTION(ConfigError, add.forwardMulti({&a, &bad}, y, ctx));
        QVERIFY_THROWS_EXCEPTION(ConfigError, add.backwardMulti({&a, &b}, y, bad, {&da, &db}));
        add.backwardMulti({&a, &b}, y, y, {&da, &db});
        QCOMPARE(da.shape(), a.shape());
        return;
    }
    LayerCase c = layerCase(kind);
    QVERIFY(c.layer);
    Layer& l = *c.layer;
    const Tensor x = randomTensor(c.input, rng);
    Tensor y, dx;
    l.forward(x, y, ctx);
    const Tensor dy = randomTensor(y.shape(), rng);
    l.backward(x, y, dy, dx, true); // the shapes that fit
    QCOMPARE(dx.shape(), x.shape());
    Shape more = y.shape();
    more[0] += 1;
    Shape fewer = y.shape();
    fewer.back() -= 1;
    for (const Shape& s : {more, fewer, Shape{y.numel()}}) {
        const Tensor wrong = randomTensor(s, rng);
        try {
            l.backward(x, y, wrong, dx, true);
            QFAIL(qPrintable(QString("output gradient %1 accepted").arg(QString::fromStdString(shapeString(s)))));
        } catch (const ConfigError& e) {
            QVERIFY2(std::string(e.what()).find(l.name()) != std::string::npos, e.what());
        }
    }
    for (const Shape& s : c.invalid) {
        Tensor out;
        try {
            l.forward(Tensor(s), out, ctx);
            QFAIL(qPrintable(QString("input %1 accepted").arg(QString::fromStdString(shapeString(s)))));
        } catch (const ConfigError& e) {
            QVERIFY2(std::string(e.what()).find(l.name()) != std::string::npos, e.what());
        }
    }
}

// Images far larger than a preset was made for are ConfigErrors before the memory goes: a layer
// over 2^28 weights (seed-cnn's fc1 on 1024x1024 would hold 2.1 billion; a user's run grew to
// 8.3 GB and ended in "out of memory", exit 1), and a training footprint over 80 % of memory.
void TestHardeningShapes::imagesTooLargeForTheModel()
{
    try {
        makeModel("seed-cnn", 1, 1024, 1024, 3, 1);
        QFAIL("seed-cnn on 1024x1024 was built");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains("fc1 (Linear 16646400 -> 128) would hold 2130739200 weights"), e.what());
    }
    QVERIFY_THROWS_EXCEPTION(ConfigError, Linear("huge", std::size_t{1} << 40, std::size_t{1} << 40));
    auto m = makeModel("resnet8", 1, 64, 64, 10, 1); // 16x64x64 activations: about 3.9 MB a 64-image batch each
    const std::uint64_t need = trainingFootprintBytes(*m, 64);
    QVERIFY(need > (std::uint64_t{1} << 30) && need < (std::uint64_t{4} << 30));
    checkTrainingFootprint(*m, 64, 2 * need); // fits
    try {
        checkTrainingFootprint(*m, 64, need);
        QFAIL("a footprint of all the memory passed");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).startsWith("resnet8 on 1x64x64 images needs about"), e.what());
        QVERIFY2(QString(e.what()).contains("--resize HxW"), e.what());
    }
    checkTrainingFootprint(*m, 64, 0); // unknown memory: no check
}

void TestHardeningShapes::convolutionOfAnEmptyBatch_data()
{
    QTest::addColumn<int>("cin");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("groups");
    QTest::newRow("im2col") << 3 << 1 << 1;
    QTest::newRow("direct") << 16 << 1 << 1;
    QTest::newRow("strided") << 16 << 2 << 1;
    QTest::newRow("depthwise") << 16 << 1 << 16;
}

// A batch of zero images (the tail of a split that came out empty) goes through a convolution:
// an empty output and zero gradients, not a read of partial sums that were never written.
void TestHardeningShapes::convolutionOfAnEmptyBatch()
{
    QFETCH(int, cin);
    QFETCH(int, stride);
    QFETCH(int, groups);
    Rng rng(6);
    const std::size_t cout = 16;
    Conv2d conv("conv", std::size_t(cin), cout, 3, std::size_t(stride), 1, std::size_t(groups));
    for (Param* p : conv.params()) {
        p->value = randomTensor(p->value.shape(), rng);
        p->grad.fill(kNaN); // stale
    }
    RunContext ctx;
    ctx.training = true;
    const Tensor x({0, std::size_t(cin), 8, 8});
    Tensor y, dx;
    conv.forward(x, y, ctx);
    QCOMPARE(y.numel(), std::size_t(0));
    conv.backward(x, y, y, dx, true);
    QCOMPARE(dx.shape(), x.shape());
    for (float g : conv.weight().grad.values()) QCOMPARE(g, 0.0f);
    for (float g : conv.bias().grad.values()) QCOMPARE(g, 0.0f);
}

QTEST_APPLESS_MAIN(TestHardeningShapes)
#include "tst_hardening_shapes.moc"
