// Pad (nn/pad.h: F.pad, nn.ZeroPad2d/ReflectionPad2d/ReplicationPad2d, Conv2d's
// padding_mode='reflect'/'replicate') end to end: forward and backward against PyTorch
// (047_pad_*.json, tests/data/make_047_pad.py); PyTorch exports (tests/onnx_import pad_*,
// make_fixtures.py PadNet) import with a Pad layer for each padding no Conv takes, and survive
// .qsm and ONNX round trips; a quantized model's Pad moves codes on its input's grid (zeros are the
// zero point), so the integer engine agrees with the fake-quant reference and onnxruntime with the
// engine. Outputs against PyTorch are in tst_onnx_import (matchesPyTorch), the numerical gradients
// in tst_layers_gradients, the refusals in tst_onnx_import_errors.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/activations.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/pad.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "golden.h"
#include "layer_checks.h"

#include <QtTest>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// Every Pad as (mode, top, left, bottom, right).
std::vector<std::array<std::size_t, 5>> padsOf(const ExportedModel& m)
{
    std::vector<std::array<std::size_t, 5>> p;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Pad) p.push_back({static_cast<std::size_t>(l.padMode), l.pads[0], l.pads[1], l.pads[2], l.pads[3]});
    return p;
}

// conv 1->6 (no padding) -> ReLU -> reflect pad 1 -> conv 6->6 -> replicate pad (right, bottom) ->
// zero pad 1 -> max pool 2 -> flatten -> fc on 28 x 28: 26 -> 28 -> 26 -> 27 -> 29 -> 14. The zeros
// pad signed values (conv2's, no ReLU), whose grid's zero point is not byte 0 with uint8
// activations, and which a MaxPool that pads with -inf would not give.
std::unique_ptr<Model> padModel(std::uint64_t seed = 7)
{
    auto m = std::make_unique<Model>("pad-net", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 6, 3, 1, 0));
    m->add(std::make_unique<ReLU>("relu"));
    m->add(std::make_unique<Pad2d>("reflect", PadMode::Reflect, std::array<std::size_t, 4>{1, 1, 1, 1}));
    m->add(std::make_unique<Conv2d>("conv2", 6, 6, 3, 1, 0));
    m->add(std::make_unique<Pad2d>("replicate", PadMode::Replicate, std::array<std::size_t, 4>{0, 0, 1, 1}));
    m->add(std::make_unique<Pad2d>("zeros", PadMode::Zeros, std::array<std::size_t, 4>{1, 1, 1, 1}));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 6 * 14 * 14, 10));
    m->initParams(seed);
    return m;
}

} // namespace

class TestPad : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("pad"); }
    void goldenPad_data() { golden::rowsFor({"pad"}); }
    void goldenPad();
    void importMakesPadLayers_data();
    void importMakesPadLayers();
    void roundTrips_data() { importMakesPadLayers_data(); }
    void roundTrips();
    void engineAgreesWithFakeQuant_data();
    void engineAgreesWithFakeQuant();
    void onnxruntimeRunsFp32Export();
    void badPadsAreConfigErrors();
};

// y exactly (copies); grad_x sums a few gradients per reflected or replicated value, in output
// order as PyTorch's backward does.
void TestPad::goldenPad()
{
    QS_FETCH_GOLDEN(g);
    const std::string mode = g.params.at("mode").get<std::string>();
    const PadMode m = mode == "reflect" ? PadMode::Reflect : mode == "replicate" ? PadMode::Replicate : PadMode::Zeros;
    const auto p = g.params.at("pads").get<std::vector<std::size_t>>();
    Pad2d layer("pad", m, {p.at(0), p.at(1), p.at(2), p.at(3)});
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    layer.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), 0.0, 0.0);
    layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), 1e-6, 1e-6);
}

void TestPad::importMakesPadLayers_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : {"pad_op13_fold_dyn", "pad_op11_nofold", "pad_op17_fold"}) QTest::newRow(n) << QString(n);
}

// PadNet: reflect and replicate Pads before the convolutions (which then have no padding of their
// own), zeros before the MaxPool, an asymmetric reflect before the head.
void TestPad::importMakesPadLayers()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    using A = std::array<std::size_t, 5>;
    const auto R = static_cast<std::size_t>(PadMode::Reflect), E = static_cast<std::size_t>(PadMode::Replicate),
               Z = static_cast<std::size_t>(PadMode::Zeros);
    const std::vector<A> want{A{R, 1, 1, 1, 1}, A{E, 1, 1, 1, 1}, A{Z, 1, 1, 1, 1}, A{R, 0, 0, 1, 1}};
    QVERIFY(padsOf(m) == want);
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Conv2d) QCOMPARE(l.convGeometry().padTop, std::size_t{0});
}

void TestPad::roundTrips()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{
        "every layer's kind and every Pad's mode and pads",
        [](const ExportedModel& q, const ExportedModel& w) { return kindsOf(q) == kindsOf(w) && padsOf(q) == padsOf(w); },
        [](const ExportedModel& o, const ExportedModel& w) { return kindsOf(o) == kindsOf(onnxForm(w)) && padsOf(o) == padsOf(w); },
        std::nullopt};
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));
    const ExportedModel again = importOnnx(onnxBytes, "re-import");
    QVERIFY(padsOf(again) == padsOf(m));
}

void TestPad::engineAgreesWithFakeQuant_data()
{
    QTest::addColumn<QString>("act");
    for (const char* act : {"uint8", "int8"}) QTest::newRow(act) << QString(act);
}

// PTQ int8 of padModel: the engine (Pads as byte gathers, zeros the zero point) against the
// fake-quant reference; the .qsm and QDQ files read back with the same Pads; onnxruntime's QDQ
// (Pad on dequantized values) against the engine.
void TestPad::engineAgreesWithFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(padModel(), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    QCOMPARE(padsOf(q.exported).size(), std::size_t{3});
    const QString what = "pad-net " + act;
    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, q.exported, m_data.test, 0.99, run));
    const layer_checks::ReadBack rb{
        "the layers' kinds, Pads and points",
        [](const ExportedModel& fromQsm, const ExportedModel& m) { return padsOf(fromQsm) == padsOf(m); },
        [](const ExportedModel& back, const ExportedModel& m) {
            return kindsOf(back) == kindsOf(m) && padsOf(back) == padsOf(m) && layer_checks::samePoints(back, m);
        }};
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, q.exported, rb, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, m_dir + "/qdq-pad-" + act.toStdString() + ".onnx", m_images, run, 0.98, 2e-2));
}

// onnxruntime runs the FP32 export (Pad nodes; the MaxPool after the zero Pad carries its Indices
// output, which keeps onnxruntime from merging the Pad into the MaxPool's -inf padding) as
// QuantScope's float runner does.
void TestPad::onnxruntimeRunsFp32Export()
{
    auto m = padModel();
    const ExportedModel fp = exportFloatModel(*m, "pad-net", Normalization::identity(1), {});
    const std::vector<std::uint8_t> fpBytes = encodeOnnx(fp);
    QVERIFY(padsOf(importOnnx(fpBytes, "re-import")) == padsOf(fp));
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32("pad-net-fp32", fp, fpBytes, m_dir, m_data.test.pixels, 1e-5));
}

void TestPad::badPadsAreConfigErrors()
{
    QVERIFY_THROWS_EXCEPTION(ConfigError, Pad2d("p", PadMode::Zeros, {65, 0, 0, 0}));
    Pad2d reflect("p", PadMode::Reflect, {0, 3, 0, 0});
    try {
        (void)reflect.outputShape({2, 4, 5, 3}); // 3 columns cannot reflect 3
        QFAIL("a reflect pad of 3 columns took a map of 3");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find("3 columns") != std::string::npos, e.what());
    }
    QCOMPARE(reflect.outputShape({2, 4, 5, 4}), (Shape{2, 4, 5, 7}));
    QVERIFY_THROWS_EXCEPTION(ConfigError, (void)Pad2d("p", PadMode::Zeros, {1, 1, 1, 1}).outputShape({2, 4, 5}));
}

QTEST_GUILESS_MAIN(TestPad)
#include "tst_pad.moc"
