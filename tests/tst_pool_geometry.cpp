// Max and average pooling windows that are not square (rectangular kernels, two strides,
// asymmetric padding, ceil_mode, count_include_pad=False, a global max over a non-square map) end
// to end: PyTorch exports (tests/onnx_import
// poolgeom_*, make_fixtures.py; opsets 11, 13, 17, with and without constant folding) import with
// their windows and match PyTorch's outputs; .qsm (version 6) and ONNX files keep the windows;
// onnxruntime runs the FP32 and QDQ exports; the integer engine's general max pooling gives, at
// the point after each pool, and its general average pooling at its own point, the fake-quant
// simulation's integers; the summary shows the window.
// The layer's own numerics are in tst_layers_golden (040_pool_geometry.json) and
// tst_layers_gradients (maxpool2d_geometry_*).
#include "analysis/model_summary.h"
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/avgpool2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"
#include "util/rng.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"
#include "qsm_fixtures.h"

#include <QtTest>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

using namespace quantscope;
using onnx_import_fixtures::importFixture;
using layer_checks::traceNamed;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// |QuantScope - PyTorch| over the largest |PyTorch output|.
constexpr double kFp32RelTol = 1e-5;
// onnxruntime's float graph against QuantScope's float model.
constexpr double kOrtFp32RelTol = 1e-5;
// At the point after a pool, the engine against the fake-quant simulation (the float max pool and
// convolution on the dequantized input, then the point's fake-quant): within one step where the
// exact value lies within float rounding of a half step, in at most 0.1 % of the values.
constexpr std::int32_t kPointStepTol = 1;
constexpr double kMinEngineAgreement = 0.995;
constexpr double kMinQdqAgreement = 0.98;
// onnxruntime's QDQ outputs against the engine's, mean |diff| over the largest output. Both
// models give 0 here; an average pool exported with ceil_mode and counted pads on the pool gave
// 0.0019-0.0024 (onnxruntime's QLinearAveragePool divided the windows past the end otherwise),
// which this bound refuses while leaving room for a rare one-step difference in a point.
constexpr double kQdqMeanRelDiff = 5e-4;
// The codes at the points: within kPointStepTol, in at most one value in 1000, over at least 16 codes.
constexpr layer_checks::CodeBounds kPointBounds{kPointStepTol, 1000, 16};
// The ONNX read back against the model, over its largest |output|.
constexpr double kOnnxRoundTripRelTol = 1e-6;

const char* const kFixtureNames[] = {"poolgeom_max_op11_nofold", "poolgeom_max_op13_fold_dyn", "poolgeom_max_op17_fold",
                                     "poolgeom_amax_op13_fold", "poolgeom_max2step_op11_nofold", "poolgeom_avg_op11_nofold",
                                     "poolgeom_avg_op13_fold_dyn", "poolgeom_avg_op17_fold", "avgceilpad_op13_fold",
                                     "avgceilpad_op11_nofold"};

// The windows of the model's max pools (of its average pools with `average`).
std::vector<PoolGeometry> windowsOf(const ExportedModel& m, bool average = false)
{
    std::vector<PoolGeometry> w;
    for (const StoredLayer& l : m.layers)
        if (l.kind == (average ? LayerKind::AvgPool2d : LayerKind::MaxPool2d)) w.push_back(l.poolGeometry());
    return w;
}

PoolGeometry pool(std::size_t kh, std::size_t kw, std::size_t sh, std::size_t sw, std::size_t t, std::size_t l, std::size_t b,
                  std::size_t r, bool ceil)
{
    PoolGeometry g;
    g.kh = kh, g.kw = kw, g.sh = sh, g.sw = sw, g.padTop = t, g.padLeft = l, g.padBottom = b, g.padRight = r, g.ceilMode = ceil;
    return g;
}

// The windows of PyTorch's modules (fixture_modules_pool.py), in order.
std::vector<PoolGeometry> fixtureWindows(const std::string& name)
{
    if (name.find("poolgeom_max_") == 0)
        return {pool(2, 2, 2, 2, 0, 0, 0, 0, true), pool(3, 3, 2, 2, 1, 1, 1, 1, true), pool(2, 1, 2, 1, 0, 0, 0, 0, false),
                pool(3, 2, 2, 1, 1, 0, 1, 0, true), pool(2, 3, 2, 3, 0, 0, 0, 0, false)};
    if (name.find("poolgeom_avg_") == 0 || name.find("avgceilpad") == 0) return {};
    return {pool(5, 4, 5, 4, 0, 0, 0, 0, false)}; // the max over the 5 x 4 map
}

// The average pools of AvgPoolGeometry: the zero Pad before a2 folded in (counted), a3's pads not counted.
std::vector<PoolGeometry> fixtureAverageWindows(const std::string& name)
{
    // AvgCeilPadded: its Pad folded in, read by PyTorch's rule (a 4 x 5 output from 7 x 9, which
    // floor mode gives too), as the Linear after it takes
    if (name.find("avgceilpad") == 0) return {pool(2, 2, 2, 2, 1, 1, 1, 1, false)};
    if (name.find("poolgeom_avg_") != 0) return {};
    PoolGeometry a3 = pool(3, 2, 2, 1, 1, 0, 1, 0, true);
    a3.countIncludePad = false;
    return {pool(2, 2, 2, 2, 0, 0, 0, 0, true), pool(3, 3, 2, 2, 1, 1, 1, 1, true), a3, pool(2, 1, 2, 1, 0, 0, 0, 0, false)};
}

// A model on the workspace's 1 x 28 x 28 images with a max pool of each kind, each followed by a
// convolution (whose point is where the engine's pooled bytes are checked):
//   stem 3x3 p1 -> relu; 3x3 s2 p1 ceil (15 x 15); conv -> relu; 2x2 ceil (8 x 8); conv -> relu;
//   3x2 s(2,1) p(1,0) ceil (5 x 7); conv -> relu; 2x1 (2 x 7); 1x1 conv -> relu; global 2x7 max;
//   1x1 conv -> relu; flatten; fc.
std::unique_ptr<Model> poolModel()
{
    auto m = std::make_unique<Model>("poolgeom", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("stem", 1, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("stem_relu"));
    m->add(std::make_unique<MaxPool2d>("pool_k3s2p1_ceil", pool(3, 3, 2, 2, 1, 1, 1, 1, true)));
    m->add(std::make_unique<Conv2d>("conv2", 8, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("conv2_relu"));
    m->add(std::make_unique<MaxPool2d>("pool_k2_ceil", pool(2, 2, 2, 2, 0, 0, 0, 0, true)));
    m->add(std::make_unique<Conv2d>("conv3", 8, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("conv3_relu"));
    m->add(std::make_unique<MaxPool2d>("pool_k3x2", pool(3, 2, 2, 1, 1, 0, 1, 0, true)));
    m->add(std::make_unique<Conv2d>("conv4", 8, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("conv4_relu"));
    m->add(std::make_unique<MaxPool2d>("pool_k2x1", pool(2, 1, 2, 1, 0, 0, 0, 0, false)));
    m->add(std::make_unique<Conv2d>("conv5", 8, 8, 1, 1, 0));
    m->add(std::make_unique<ReLU>("conv5_relu"));
    m->add(std::make_unique<MaxPool2d>("pool_global", pool(2, 7, 2, 7, 0, 0, 0, 0, false)));
    m->add(std::make_unique<Conv2d>("conv6", 8, 16, 1, 1, 0));
    m->add(std::make_unique<ReLU>("conv6_relu"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 16, 10));
    m->initParams(29);
    return m;
}

using Bytes = std::vector<std::uint8_t>;

// A model on 1 x 28 x 28 images with an average pool of each kind, each with its own point:
//   stem 3x3 p1 -> relu; 3x3 s2 p1 ceil (15 x 15); conv -> relu; 2x2 ceil (8 x 8); conv -> relu;
//   3x2 s(2,1) p(1,0) ceil count_include_pad=False (5 x 7); 2x1 (2 x 7); 1x1 conv -> relu; fc.
std::unique_ptr<Model> averageModel()
{
    PoolGeometry exclude = pool(3, 2, 2, 1, 1, 0, 1, 0, true);
    exclude.countIncludePad = false;
    auto m = std::make_unique<Model>("avggeom", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("stem", 1, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("stem_relu"));
    m->add(std::make_unique<AvgPool2d>("avg_k3s2p1_ceil", pool(3, 3, 2, 2, 1, 1, 1, 1, true)));
    m->add(std::make_unique<Conv2d>("conv2", 8, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("conv2_relu"));
    m->add(std::make_unique<AvgPool2d>("avg_k2_ceil", pool(2, 2, 2, 2, 0, 0, 0, 0, true)));
    m->add(std::make_unique<Conv2d>("conv3", 8, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("conv3_relu"));
    m->add(std::make_unique<AvgPool2d>("avg_k3x2_exclude", exclude));
    m->add(std::make_unique<AvgPool2d>("avg_k2x1", pool(2, 1, 2, 1, 0, 0, 0, 0, false)));
    m->add(std::make_unique<Conv2d>("conv4", 8, 8, 1, 1, 0));
    m->add(std::make_unique<ReLU>("conv4_relu"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8 * 2 * 7, 10));
    m->initParams(31);
    return m;
}

} // namespace

class TestPoolGeometry : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("poolgeom"); }
    void importMatchesPyTorch_data();
    void importMatchesPyTorch();
    void roundTripsAndOnnxruntime_data() { importMatchesPyTorch_data(); }
    void roundTripsAndOnnxruntime();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void engineAverageEqualsFakeQuant_data() { engineEqualsFakeQuant_data(); }
    void engineAverageEqualsFakeQuant();
    void ceilAveragePoolExportsAsPadAndPool();
    void paddedCeilReadAsTheGraphTakesIt();
    void qsmStoresTheWindow();
    void summaryShowsTheWindow();
    void badWindowsAreTypedErrors();

private:
    void filesAndRunnersAgree(const ExportedModel& em, bool averages, const std::string& tag);
};

void TestPoolGeometry::importMatchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : kFixtureNames) QTest::newRow(n) << QString(n);
}

// Every window is read as PyTorch wrote it (ceil_mode where it changes the output size, the
// AdaptiveMaxPool2d(1) and amax of a non-square map as a window over the whole map), and the
// model's outputs are PyTorch's.
void TestPoolGeometry::importMatchesPyTorch()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    QCOMPARE(windowsOf(m), fixtureWindows(name.toStdString()));
    QCOMPARE(windowsOf(m, true), fixtureAverageWindows(name.toStdString()));
    QS_CHECK(layer_checks::matchesPyTorch(name.toStdString(), m, kFp32RelTol));
}

// .qsm and ONNX files keep every window and the outputs; onnxruntime runs the FP32 export as
// QuantScope does.
void TestPoolGeometry::roundTripsAndOnnxruntime()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::Keeps windows = [](const ExportedModel& back, const ExportedModel& w) {
        return windowsOf(back) == windowsOf(w) && windowsOf(back, true) == windowsOf(w, true);
    };
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, {"every window", windows, windows, kOnnxRoundTripRelTol}, onnxBytes));

    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32(name.toStdString(), m, onnxBytes, m_dir, m_data.test.pixels, kOrtFp32RelTol));
}

void TestPoolGeometry::engineEqualsFakeQuant_data()
{
    layer_checks::activationFormatRows();
}

// A model quantized by QuantSim (int8 weights per channel, calibrated activations) and exported:
// after every pool, the convolution that reads it gives at its point the integers of the
// fake-quant simulation (the float max pool of the window, then the float convolution on the
// dequantized input, then the point's fake-quant) but for values within float rounding of a half
// step. The engine's predictions are the fake-quant reference's; the .qsm and QDQ files read back
// with their windows and onnxruntime predicts what the engine does.
void TestPoolGeometry::engineEqualsFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(poolModel(), m_data, "int8", "channel", act.toStdString());
    const ExportedModel& em = q.exported;
    QCOMPARE(windowsOf(em).size(), std::size_t{5});
    QVERIFY2(IntEngine::unsupportedReason(em).empty(), IntEngine::unsupportedReason(em).c_str());
    const IntEngine engine(em);
    engine_agreement::CodeDiff diff;
    std::size_t pools = 0;
    for (std::size_t img = 0; img < 20; ++img) {
        const std::vector<PointTrace> trace = engine.trace(m_data.test.pixels.data() + img * m_data.test.imageBytes());
        for (std::size_t li = 0; li < em.layers.size(); ++li) {
            const StoredLayer& l = em.layers[li];
            if (l.kind != LayerKind::MaxPool2d) continue;
            QVERIFY2(l.poolWindow.has_value(), l.name.c_str());
            // Its input: the ReLU before it carries the point.
            const StoredLayer& before = em.layers.at(l.inputs[0] - 1);
            QCOMPARE(before.kind, LayerKind::ReLU);
            const PointTrace* in = traceNamed(trace, before.name);
            // The convolution reading it, and the ReLU after that one (its point).
            const long ci = em.soleConsumer(li);
            QVERIFY(ci >= 0 && em.layers[static_cast<std::size_t>(ci)].kind == LayerKind::Conv2d);
            const StoredLayer& conv = em.layers[static_cast<std::size_t>(ci)];
            const long ri = em.soleConsumer(static_cast<std::size_t>(ci));
            QVERIFY(ri >= 0 && em.layers[static_cast<std::size_t>(ri)].kind == LayerKind::ReLU);
            const PointTrace* out = traceNamed(trace, em.layers[static_cast<std::size_t>(ri)].name);
            QVERIFY2(in && out, l.name.c_str());
            MaxPool2d refPool("ref_pool", l.poolGeometry());
            Conv2d refConv("ref_conv", conv.inChannels, conv.outChannels, conv.convGeometry(), conv.groups, true);
            refConv.weight().value.values() = conv.tensors.at(0).dequantized();
            refConv.bias().value.values() = conv.tensors.at(1).dequantized();
            Tensor x = engine_agreement::dequantized(*in), pooled, y;
            refPool.forward(x, pooled, RunContext{});
            refConv.forward(pooled, y, RunContext{});
            for (float& v : y.values()) v = std::max(v, 0.0f);
            fakeQuantizeActivation(y, out->quant);
            QCOMPARE(y.numel(), out->q.size());
            diff.add(engine_agreement::compareCodes(y, *out));
            ++pools;
        }
    }
    qInfo("%s: %zu pools x 20 images, %zu values at the points after them: %zu differ from the fake-quant (at most %d step); "
          "up to %zu distinct codes in a point",
          qPrintable(act), pools / 20, diff.values, diff.differing, diff.worstSteps, diff.distinct);
    QCOMPARE(pools, std::size_t{5 * 20});
    QS_CHECK(layer_checks::codesWithin("poolgeom " + act, diff, kPointBounds));

    filesAndRunnersAgree(em, false, "poolgeom-" + act.toStdString());
}

// The tail both engine tests share: the engine predicts as the fake-quant reference on the whole
// test set; the .qsm and the QDQ ONNX keep the max (average) pools' windows; the engine reading
// the ONNX back predicts as the engine did; onnxruntime runs the QDQ file and agrees with it.
void TestPoolGeometry::filesAndRunnersAgree(const ExportedModel& em, bool averages, const std::string& tag)
{
    const QString what = QString::fromStdString(tag);
    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, em, m_data.test, kMinEngineAgreement, run));
    const layer_checks::ReadBack rb{averages ? "the average pools' windows" : "the max pools' windows",
                                    [averages](const ExportedModel& back, const ExportedModel& m) { return windowsOf(back, averages) == windowsOf(m, averages); },
                                    [averages](const ExportedModel& back, const ExportedModel& m) { return windowsOf(back, averages) == windowsOf(m, averages); },
                                    true};
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, em, rb, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, m_dir + "/qdq-" + tag + ".onnx", m_images, run, kMinQdqAgreement, kQdqMeanRelDiff));
}

// Average pools quantized by QuantSim and exported: at each pool's own point the engine's general
// kernel (an int64 sum over the window's part inside the image, the requantizing multiplier of its
// divisor) gives the fake-quant simulation's integers (the float AvgPool2d on the dequantized
// input, then the point's fake-quant) but for values within float rounding of a half step; the
// predictions are the reference's, and the files and onnxruntime agree as for the max pools.
void TestPoolGeometry::engineAverageEqualsFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(averageModel(), m_data, "int8", "channel", act.toStdString());
    const ExportedModel& em = q.exported;
    QCOMPARE(windowsOf(em, true).size(), std::size_t{4});
    QVERIFY2(IntEngine::unsupportedReason(em).empty(), IntEngine::unsupportedReason(em).c_str());
    const IntEngine engine(em);
    engine_agreement::CodeDiff diff;
    std::size_t pools = 0;
    for (std::size_t img = 0; img < 20; ++img) {
        const std::vector<PointTrace> trace = engine.trace(m_data.test.pixels.data() + img * m_data.test.imageBytes());
        for (const StoredLayer& l : em.layers) {
            if (l.kind != LayerKind::AvgPool2d) continue;
            QVERIFY2(l.poolWindow.has_value() && l.outputQuant.has_value(), l.name.c_str());
            const PointTrace* in = traceNamed(trace, em.layers.at(l.inputs[0] - 1).name);
            const PointTrace* out = traceNamed(trace, l.name);
            QVERIFY2(in && out, l.name.c_str());
            AvgPool2d ref("ref", l.poolGeometry());
            Tensor x = engine_agreement::dequantized(*in), y;
            ref.forward(x, y, RunContext{});
            fakeQuantizeActivation(y, out->quant);
            QCOMPARE(y.numel(), out->q.size());
            diff.add(engine_agreement::compareCodes(y, *out));
            ++pools;
        }
    }
    qInfo("%s: %zu average pools x 20 images, %zu values at their points: %zu differ from the fake-quant (at most %d step); "
          "up to %zu distinct codes in a point",
          qPrintable(act), pools / 20, diff.values, diff.differing, diff.worstSteps, diff.distinct);
    QCOMPARE(pools, std::size_t{4 * 20});
    QS_CHECK(layer_checks::codesWithin("avggeom " + act, diff, kPointBounds));

    filesAndRunnersAgree(em, true, "avggeom-" + act.toStdString());
}

// An average pool that counts its padding, with ceil_mode (avg_k3s2p1_ceil, 28 -> 15), is written
// as a Pad and a pool without ceil_mode whose own end pads hold ceil_mode's last windows: with the
// pads on the pool, onnxruntime's optimized QDQ graph divided those windows otherwise
// (engineAverageEqualsFakeQuant's bound). The pair reads back as the same window; an edited pair
// is a FormatError naming the node.
void TestPoolGeometry::ceilAveragePoolExportsAsPadAndPool()
{
    const ExportedModel em = exportFloatModel(*averageModel(), "avggeom", Normalization::identity(1), {});
    const Bytes bytes = encodeOnnx(em);
    onnx::ModelProto written;
    QVERIFY(written.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
    const auto node = [](onnx::ModelProto& mp, const std::string& name) -> onnx::NodeProto* {
        for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
            if (n.name() == name) return &n;
        return nullptr;
    };
    const auto ints = [](const onnx::NodeProto& n, const std::string& name) {
        for (const auto& a : n.attribute())
            if (a.name() == name) return std::vector<std::int64_t>(a.ints().begin(), a.ints().end());
        return std::vector<std::int64_t>{};
    };
    const onnx::NodeProto* pad = node(written, "avg_k3s2p1_ceil.pad");
    const onnx::NodeProto* avg = node(written, "avg_k3s2p1_ceil");
    QVERIFY(pad && avg);
    QCOMPARE(pad->op_type(), std::string("Pad"));
    QCOMPARE(avg->input(0), pad->output(0));
    QCOMPARE(ints(*avg, "pads"), (std::vector<std::int64_t>{0, 0, 1, 1})); // (15 - 1) 2 + 3 = 31 = 28 + 2 + 1
    for (const auto& a : avg->attribute()) QVERIFY2(a.name() != "ceil_mode" && a.name() != "count_include_pad", a.name().c_str());
    // The other pools keep their attributes: no padding to count, or padding not counted.
    QVERIFY(!node(written, "avg_k2_ceil.pad") && !node(written, "avg_k3x2_exclude.pad"));
    QCOMPARE(windowsOf(decodeOnnx(bytes, "pad.onnx"), true), windowsOf(em, true));

    const auto setInts = [](onnx::NodeProto* n, const std::string& name, const std::vector<std::int64_t>& v) {
        for (auto& a : *n->mutable_attribute())
            if (a.name() == name) {
                a.clear_ints();
                for (std::int64_t x : v) a.add_ints(x);
            }
    };
    const auto addAttr = [](onnx::NodeProto* n, const std::string& name, std::int64_t i, const std::string& text) {
        onnx::AttributeProto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(text.empty() ? onnx::AttributeProto::INT : onnx::AttributeProto::STRING);
        if (text.empty()) a->set_i(i);
        else a->set_s(text);
    };
    const std::vector<std::pair<std::function<void(onnx::ModelProto&)>, std::string>> edits{
        {[&](onnx::ModelProto& mp) { addAttr(node(mp, "avg_k3s2p1_ceil.pad"), "mode", 0, "reflect"); },
         "Pad 'avg_k3s2p1_ceil.pad': only a constant Pad is read"},
        {[&](onnx::ModelProto& mp) { setInts(node(mp, "avg_k3s2p1_ceil"), "pads", {0, 0, 3, 1}); },
         "AveragePool 'avg_k3s2p1_ceil': its end pads after a Pad are not the windows of ceil_mode"},
        {[&](onnx::ModelProto& mp) { setInts(node(mp, "avg_k3s2p1_ceil"), "pads", {1, 0, 1, 1}); },
         "AveragePool 'avg_k3s2p1_ceil': pads the start of a Pad's output again"},
        {[&](onnx::ModelProto& mp) { addAttr(node(mp, "avg_k3s2p1_ceil"), "count_include_pad", 1, ""); },
         "reads a Pad's output with count_include_pad or ceil_mode"},
        {[&](onnx::ModelProto& mp) { node(mp, "avg_k3s2p1_ceil")->set_op_type("MaxPool"); },
         "MaxPool 'avg_k3s2p1_ceil': reads a Pad's output; only an AveragePool is read after a Pad"},
        {[&](onnx::ModelProto& mp) { node(mp, "conv2")->set_input(0, "avg_k3s2p1_ceil.padded"); },
         "a Pad's output, which only an AveragePool may read"},
    };
    for (const auto& [edit, mentions] : edits) {
        onnx::ModelProto mp = written;
        edit(mp);
        std::string out;
        QVERIFY(mp.SerializeToString(&out));
        try {
            decodeOnnx(Bytes(out.begin(), out.end()), "edited.onnx");
            QFAIL(qPrintable(QString::fromStdString("read an edited Pad and pool: " + mentions)));
        } catch (const FormatError& e) {
            QVERIFY2(QString(e.what()).startsWith("edited.onnx: ") && QString(e.what()).contains(QString::fromStdString(mentions)), e.what());
        }
    }
}

// nn.AvgPool2d(2, 2, padding=1, ceil_mode=True) on a 7 x 9 map exports as Pad + AveragePool with
// ceil_mode, which makes 5 x 6 by ONNX's rule and 4 x 5 by PyTorch's. The importer reads the graph
// both ways and keeps the reading the rest of the graph takes (tester 9): PyTorch's before the
// fixture's Linear of 6 x 4 x 5 features, ONNX's (a Pad layer, then the windows over the padded
// map) when that Linear is made to take 6 x 5 x 6; a global pool after it takes either size, and
// that graph is refused.
void TestPoolGeometry::paddedCeilReadAsTheGraphTakesIt()
{
    using onnx_import_fixtures::kFixtures;
    const auto noteOf = [](const ExportedModel& m) {
        for (const std::string& n : m.notes)
            if (n.find("ceil_mode = 1 after a zero Pad") != std::string::npos) return QString::fromStdString(n);
        return QString();
    };
    const ExportedModel torch = importFixture("avgceilpad_op13_fold");
    QVERIFY2(noteOf(torch).contains("AveragePool node '/pool/AveragePool'") && noteOf(torch).contains("read as PyTorch's 4x5") &&
                 noteOf(torch).contains("ONNX's rule makes a 5x6"),
             qPrintable(noteOf(torch)));
    QCOMPARE(onnx_import_fixtures::countKind(torch, LayerKind::Pad), std::size_t{0});

    // The Linear made to take ONNX's 6 x 5 x 6 features (its weight [10, 180], seeded values).
    onnx::ModelProto mp = onnx_import_fixtures::parse(kFixtures / "avgceilpad_op13_fold.onnx");
    const onnx::NodeProto* gemm = onnx_import_fixtures::findNode(mp, "Gemm");
    QVERIFY(gemm);
    bool replaced = false;
    for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer()) {
        if (t.name() != gemm->input(1)) continue;
        t.clear_raw_data();
        t.clear_float_data();
        t.clear_dims();
        t.add_dims(10);
        t.add_dims(180);
        Rng rng(41);
        for (int i = 0; i < 1800; ++i) t.add_float_data(rng.uniform(-0.2f, 0.2f));
        replaced = true;
    }
    QVERIFY(replaced);
    for (auto* v : {mp.mutable_graph()->mutable_input(0), mp.mutable_graph()->mutable_output(0)}) // any batch, for onnxruntime's
        v->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_param("N");
    const Bytes onnxBytes = onnx_import_fixtures::serialize(mp);
    const ExportedModel onnxReading = importOnnx(onnxBytes, "onnx-size.onnx");
    QVERIFY2(noteOf(onnxReading).contains("read as ONNX's 5x6"), qPrintable(noteOf(onnxReading)));
    QCOMPARE(onnx_import_fixtures::countKind(onnxReading, LayerKind::Pad), std::size_t{1});
    QCOMPARE(windowsOf(onnxReading, true), std::vector<PoolGeometry>{pool(2, 2, 2, 2, 0, 0, 0, 0, true)}); // on the 9 x 11 map
    QCOMPARE(buildModel(onnxReading)->outputShape(1), (Shape{1, 10}));

    // The global head fits both: refused, by node, with both sizes; either reading when asked for.
    const std::filesystem::path gap = kFixtures / "avgceilpadgap_op13_fold.onnx";
    try {
        importOnnx(onnx_import_fixtures::fileBytes(gap), gap.string());
        QFAIL("a pool whose size nothing in the graph decides was read");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains("AveragePool node '/pool/AveragePool'") && QString(e.what()).contains("ONNX makes a 5x6") &&
                     QString(e.what()).contains("PyTorch's ceil_mode a 4x5") && QString(e.what()).contains("reads either size"),
                 e.what());
    }
    for (const auto reading : {OnnxImportOptions::PaddedCeilPool::PyTorch, OnnxImportOptions::PaddedCeilPool::Onnx}) {
        OnnxImportOptions o;
        o.paddedCeilPool = reading;
        const ExportedModel m = importOnnx(onnx_import_fixtures::fileBytes(gap), gap.string(), nullptr, o);
        const std::vector<Shape> shapes = buildModel(m)->activationShapes(1);
        const bool torchSize = std::find(shapes.begin(), shapes.end(), Shape{1, 6, 4, 5}) != shapes.end();
        const bool onnxSize = std::find(shapes.begin(), shapes.end(), Shape{1, 6, 5, 6}) != shapes.end();
        QCOMPARE(torchSize, reading == OnnxImportOptions::PaddedCeilPool::PyTorch);
        QCOMPARE(onnxSize, reading == OnnxImportOptions::PaddedCeilPool::Onnx);
    }

    // onnxruntime, running each node as the spec defines it, runs the edited file as QuantScope
    // reads it (the windows past the padded map's end averaged over what they cover). Its default
    // session does not: its Pad fusion merges the Pad into the AveragePool, whose ceil_mode then
    // drops the last windows as PyTorch does (4 x 5), and the edited Linear no longer fits.
    QS_SKIP_WITHOUT_ORT();
    qputenv("QS_ORT_GRAPH_OPTIMIZATION", "disabled");
    const QString check = layer_checks::ortMatchesFp32("onnx-size", onnxReading, onnxBytes, m_dir, m_data.test.pixels, kOrtFp32RelTol);
    qunsetenv("QS_ORT_GRAPH_OPTIMIZATION");
    QVERIFY2(check.isEmpty(), qPrintable(check));
}

// Version 6 gives every pool a flags byte; a square pool stores no window (poolWindow stays
// empty), a window that is not square its five more fields; flags a square window or a max pool
// could not have are FormatErrors naming the file and the layer.
void TestPoolGeometry::qsmStoresTheWindow()
{
    auto square = std::make_unique<Model>("sq", Shape{1, 8, 8});
    square->add(std::make_unique<MaxPool2d>("pool", 2));
    square->add(std::make_unique<Flatten>("flatten"));
    square->add(std::make_unique<Linear>("fc", 16, 3));
    square->initParams(1);
    const ExportedModel a = exportFloatModel(*square, "sq", Normalization::identity(1), {});
    QVERIFY(!a.layers[0].poolWindow.has_value());
    const Bytes plain = encodeQsm(a);
    ExportedModel b = a;
    b.layers[0].setPoolGeometry(PoolGeometry::square(2, 2, 0)); // square: stays compact
    QVERIFY(!b.layers[0].poolWindow.has_value());
    QVERIFY(encodeQsm(b) == plain);
    b.layers[0].setPoolGeometry(pool(2, 2, 2, 2, 0, 0, 0, 0, true)); // ceil_mode only: the flags byte says it
    QCOMPARE(encodeQsm(b).size(), plain.size());
    QCOMPARE(decodeQsm(encodeQsm(b), "b").layers[0].poolWindow, b.layers[0].poolWindow);
    b.layers[0].setPoolGeometry(pool(2, 1, 2, 1, 0, 0, 0, 0, false)); // 4 x 8: fc reads 32
    b.layers[2].inFeatures = 32;
    b.layers[2].tensors[0].shape = {3, 32};
    b.layers[2].tensors[0].values.resize(3 * 32, 0.0f);
    const Bytes wide = encodeQsm(b);
    QCOMPARE(wide.size(), plain.size() + 20 + 3 * 16 * 4); // the window's five fields; fc's 16 more inputs
    QCOMPARE(decodeQsm(wide, "b").layers[0].poolWindow, b.layers[0].poolWindow);
    // The flags byte of a max pool: 4 (count_include_pad = 0) is an average pooling's.
    Bytes bad = encodeQsm(b);
    const std::array<std::uint8_t, 13> pattern{2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1}; // kh 2, sh 2, pad 0, flags 1
    const auto at = std::search(bad.begin(), bad.end(), pattern.begin(), pattern.end());
    QVERIFY(at != bad.end());
    *(at + 12) = 5;
    qsm_fixtures::fixHeader(bad);
    try {
        decodeQsm(bad, "bad.qsm");
        QFAIL("a max pool with count_include_pad = 0 was read");
    } catch (const FormatError& e) {
        QVERIFY2(QString(e.what()).startsWith("bad.qsm") && QString(e.what()).contains("'pool'") &&
                     QString(e.what()).contains("pooling flags are 5"),
                 e.what());
    }
}

// The summary's Details column (the GUI's and `quantscope-cli info`) shows a window that is not
// square in full; square ones as before.
void TestPoolGeometry::summaryShowsTheWindow()
{
    std::unique_ptr<Model> m = poolModel();
    const ModelSummary s = summarizeModel(*m);
    std::map<std::string, std::string> detail;
    std::map<std::string, std::uint64_t> ops;
    for (const LayerSummary& l : s.layers) detail[l.name] = l.detail, ops[l.name] = l.elementwiseOps;
    QCOMPARE(detail["pool_k3s2p1_ceil"], std::string("3x3 stride 2 pad 1,1,1,1 ceil"));
    QCOMPARE(detail["pool_k3x2"], std::string("3x2 stride 2x1 pad 1,0,1,0 ceil"));
    QCOMPARE(detail["pool_k2x1"], std::string("2x1 stride 2x1 pad 0,0,0,0"));
    QCOMPARE(ops["pool_k3x2"], std::uint64_t{8 * 5 * 7 * 3 * 2});
    MaxPool2d sq("sq", 3, 2, 1);
    QCOMPARE(sq.describe(), std::string("3x3 s2 p1"));
    std::unique_ptr<Model> a = averageModel();
    for (const LayerSummary& l : summarizeModel(*a).layers) detail[l.name] = l.detail;
    QCOMPARE(detail["avg_k3x2_exclude"], std::string("3x2 stride 2x1 pad 1,0,1,0 ceil pad not counted"));
    QCOMPARE(detail["avg_k2_ceil"], std::string("2x2 stride 2 pad 0,0,0,0 ceil"));
}

// Windows the layer cannot take are ConfigErrors naming the layer and the window; in a file,
// FormatErrors naming the file and the layer.
void TestPoolGeometry::badWindowsAreTypedErrors()
{
    try {
        MaxPool2d p("wide_pad", pool(2, 3, 1, 1, 0, 2, 0, 0, false)); // 2 > 3 / 2
        QFAIL("a pad over half its kernel was taken");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains("wide_pad") && QString(e.what()).contains("2x3 stride 1 pad 0,2,0,0"), e.what());
    }
    try {
        MaxPool2d p("tall", pool(5, 1, 1, 1, 0, 0, 0, 0, false));
        p.outputShape({1, 2, 4, 4});
        QFAIL("a window taller than its input was taken");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains("tall") && QString(e.what()).contains("[1,2,4,4]"), e.what());
    }
    Bytes b = encodeQsm(exportFloatModel(*poolModel(), "poolgeom", Normalization::identity(1), {}));
    // pool_k2x1 (on a 5 x 7 map): kh 2, sh 2, top 0, flags 1, kw 1; its kh becomes 9.
    const std::array<std::uint8_t, 17> pattern{2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0};
    const auto at = std::search(b.begin(), b.end(), pattern.begin(), pattern.end());
    QVERIFY(at != b.end());
    *at = 9;
    qsm_fixtures::fixHeader(b);
    try {
        decodeQsm(b, "tall.qsm");
        QFAIL("a window larger than its input was read");
    } catch (const FormatError& e) {
        QVERIFY2(QString(e.what()).startsWith("tall.qsm") && QString(e.what()).contains("pool_k2x1") &&
                     QString(e.what()).contains("larger than its input"),
                 e.what());
    }
}

QTEST_GUILESS_MAIN(TestPoolGeometry)
#include "tst_pool_geometry.moc"
