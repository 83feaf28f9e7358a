// ChannelMax (nn/channel_max.h: the largest of each pixel's channels) and CBAM's spatial attention
// end to end: CBAM blocks exported by PyTorch in the two common styles (tests/onnx_import cbam_*,
// fixture_modules_attention.py: torch.mean / torch.max over dim 1 with keepdim, or without and
// unsqueezed, and the [N, 1, H, W] gate multiplying the maps) import as a ChannelMax, a 1x1 Conv of
// weights 1/C for the mean and a 1x1 Conv of weights 1 that copies the gate to the channels;
// .qsm and QuantScope's own ONNX (ReduceMax over axis 1) keep them, and that ONNX reads back
// through the importer too; in a quantized model the ChannelMax keeps its input's grid, and the
// integer engine agrees with the fake-quant simulation; onnxruntime runs both exports. Outputs
// against PyTorch are in tst_onnx_import (matchesPyTorch), forward/backward against PyTorch in
// tst_layers_golden (050_channel_max*.json), the numerical gradient in tst_layers_gradients.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/activations.h"
#include "nn/channel_max.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/mul.h"
#include "nn/pointwise.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf, onnx_import_fixtures::countKind;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// The 1x1 Convs C -> 1 of weights 1/C (a mean over the channels) and 1 -> C of weights 1 (a gate's copies).
std::size_t channelMeans(const ExportedModel& m)
{
    std::size_t k = 0;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Conv2d && l.outChannels == 1 && l.inChannels > 1 && l.kernel == 1) {
            const std::vector<float>& w = l.tensors.at(0).values;
            if (std::all_of(w.begin(), w.end(), [&](float v) { return v == static_cast<float>(1.0 / static_cast<double>(l.inChannels)); })) ++k;
        }
    return k;
}
std::size_t gateCopies(const ExportedModel& m)
{
    std::size_t k = 0;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Conv2d && l.inChannels == 1 && l.outChannels > 1 && l.kernel == 1 && l.name.find("gate_copies") != std::string::npos) {
            const std::vector<float>& w = l.tensors.at(0).values;
            if (std::all_of(w.begin(), w.end(), [](float v) { return v == 1.0f; })) ++k;
        }
    return k;
}

// conv 1->8 -> ReLU -> (ChannelMax -> conv 1->8 1x1 -> Sigmoid) -> Mul with the ReLU's maps ->
// max pool -> flatten -> fc 1568->10 on 28 x 28: a spatial gate made from the channel maximum.
std::unique_ptr<Model> channelMaxModel(std::uint64_t seed = 9)
{
    auto m = std::make_unique<Model>("cmax-net", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1));
    const std::size_t maps = m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<ChannelMax>("cmax"));
    m->add(std::make_unique<Conv2d>("spread", 1, 8, 1, 1, 0));
    const std::size_t gate = m->add(std::make_unique<Pointwise>("gate", LayerKind::Sigmoid));
    m->add(std::make_unique<Mul>("gated"), {maps, gate});
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8 * 14 * 14, 10));
    m->initParams(seed);
    return m;
}

} // namespace

class TestChannelMax : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("channel-max"); }
    void importsCbam_data();
    void importsCbam();
    void roundTrips_data() { importsCbam_data(); }
    void roundTrips();
    void engineAgreesWithFakeQuant_data();
    void engineAgreesWithFakeQuant();
    void onnxruntimeRunsFp32Export();
    void badShapesAreConfigErrors();
};

void TestChannelMax::importsCbam_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : {"cbam_op13_fold_dyn", "cbam_op11_nofold", "cbam_op17_fold"}) QTest::newRow(n) << QString(n);
}

// Two spatial gates: each a ChannelMax, a mean over the channels and the gate's copies to the 8 and
// 12 channels; the layers QuantScope adds are counted apart (8 + 8 + 12 + 12 weights).
void TestChannelMax::importsCbam()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    QCOMPARE(countKind(m, LayerKind::ChannelMax), std::size_t{2});
    QCOMPARE(channelMeans(m), std::size_t{2});
    QCOMPARE(gateCopies(m), std::size_t{2});
    QVERIFY2(m.importAddedParams >= std::size_t{8 + 8 + 12 + 12}, qPrintable(QString::number(m.importAddedParams)));
}

// .qsm and ONNX keep every layer and compute the same outputs bit for bit; QuantScope's ONNX
// (ReduceMax over axis 1) reads back through the importer with the same layer kinds.
void TestChannelMax::roundTrips()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{
        "every layer's kind", [](const ExportedModel& q, const ExportedModel& w) { return kindsOf(q) == kindsOf(w); },
        [](const ExportedModel& o, const ExportedModel& w) { return kindsOf(o) == kindsOf(onnxForm(w)); }, std::nullopt};
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));
    const ExportedModel again = importOnnx(onnxBytes, "re-import");
    QCOMPARE(countKind(again, LayerKind::ChannelMax), std::size_t{2});
    QCOMPARE(kindsOf(again), kindsOf(onnxForm(m)));
}

// PTQ int8 (uint8 and int8 activations): the ChannelMax carries no output record (it keeps its
// input's grid, as max pooling does); argmax against the fake-quant reference; the .qsm and QDQ
// ONNX files read back with the same points, and onnxruntime predicts what the engine does.
void TestChannelMax::engineAgreesWithFakeQuant_data()
{
    QTest::addColumn<QString>("act");
    for (const char* act : {"uint8", "int8"}) QTest::newRow(act) << QString(act);
}

void TestChannelMax::engineAgreesWithFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(channelMaxModel(), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    for (const StoredLayer& l : q.exported.layers)
        if (l.kind == LayerKind::ChannelMax) QVERIFY2(!l.outputQuant.has_value(), "a ChannelMax keeps its input's grid");
    const QString what = "cmax-net " + act;
    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, q.exported, m_data.test, 0.99, run));
    const layer_checks::ReadBack rb{
        "the layers' kinds and points", [](const ExportedModel& fromQsm, const ExportedModel& m) { return kindsOf(fromQsm) == kindsOf(m); },
        [](const ExportedModel& back, const ExportedModel& m) { return kindsOf(back) == kindsOf(m) && layer_checks::samePoints(back, m); }};
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, q.exported, rb, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, m_dir + "/qdq-cmax-" + act.toStdString() + ".onnx", m_images, run, 0.98, 2e-2));
}

// onnxruntime runs the FP32 export (ReduceMax over axis 1 with keepdims) as QuantScope's float runner does.
void TestChannelMax::onnxruntimeRunsFp32Export()
{
    auto m = channelMaxModel();
    const ExportedModel fp = exportFloatModel(*m, "cmax-net", Normalization::identity(1), {});
    const std::vector<std::uint8_t> fpBytes = encodeOnnx(fp);
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32("cmax-net-fp32", fp, fpBytes, m_dir, m_data.test.pixels, 1e-5));
}

void TestChannelMax::badShapesAreConfigErrors()
{
    ChannelMax l("cmax");
    QCOMPARE(l.outputShape({4, 6, 5, 3}), Shape({4, 1, 5, 3}));
    try {
        (void)l.outputShape({4, 6});
        QFAIL("ChannelMax took (N, C) features");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find("cmax") != std::string::npos, e.what());
    }
}

QTEST_GUILESS_MAIN(TestChannelMax)
#include "tst_channel_max.moc"
