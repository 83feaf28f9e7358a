// PReLU (nn/prelu.h: a learned slope, shared or one per channel) end to end: PyTorch exports of a
// small network with nn.PReLU(6) on a feature map, nn.PReLU() and nn.PReLU(16) on features
// (tests/onnx_import prelu_*, make_fixtures.py) import as PReLU layers with PyTorch's slopes and
// parameter count and match PyTorch's outputs; .qsm and ONNX (FP32, QDQ) round trips keep them;
// onnxruntime runs both exports; the integer engine's tables (one per channel) equal the fake-quant
// simulation bit for bit; QAT trains the slopes; CLE passes through a PReLU. Forward/backward
// against PyTorch are in tst_layers_golden (038_prelu*.json), the numerical gradients in
// tst_layers_gradients, the refusals in tst_onnx_import_errors and specErrors here.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/prelu.h"
#include "quant/equalization.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf;
using engine_agreement::maxAbs;
using engine_agreement::maxDiff;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

constexpr double kFp32RelTol = 1e-5;     // |QuantScope - PyTorch| over the largest |PyTorch output|
constexpr double kOrtFp32RelTol = 1e-5;  // onnxruntime's float graph against QuantScope's
constexpr double kMinEngineAgreement = 0.98; // the engine vs the fake-quant reference, argmax
constexpr double kMinQdqAgreement = 0.98; // onnxruntime QDQ vs the engine, argmax
constexpr double kQdqMeanRelDiff = 2e-2;  // and mean |diff| over the largest |output|
// At every PReLU point the engine's codes are the fake-quant's, all of them, over at least 16 codes.
constexpr layer_checks::CodeBounds kPointBounds{0, 0, 16};
// PReluNet's parameters as PyTorch counts them (sum(p.numel() for p in model.parameters())):
// conv1 6*9+6, act1 6, conv2 6*6*9+6, act2 1, fc1 96*16+16, act3 16, fc2 16*10+10.
constexpr std::size_t kPReluNetParams = 60 + 6 + 330 + 1 + 1552 + 16 + 170;

// Every PReLU's slopes, in order.
std::vector<std::vector<float>> slopesOf(const ExportedModel& m)
{
    std::vector<std::vector<float>> s;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::PReLU) s.push_back(l.tensors.at(0).values);
    return s;
}

// conv 1->6 -> PReLU(6) -> max pool -> conv 6->8 -> PReLU() -> flatten -> fc 1568->32 -> PReLU(32)
// -> fc 32->10 on 28 x 28; slopes drawn in [-0.3, 0.6] (some negative: the table is then not
// monotonic), convolution weights scaled so both signs occur. `flattened`: prelu2 reads the
// flattened map instead, one slope per feature (the engine holds those bytes in NHWC order).
std::unique_ptr<Model> preluModel(std::uint64_t seed = 11, bool flattened = false)
{
    auto m = std::make_unique<Model>("prelu-net", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 6, 3, 1, 1));
    m->add(std::make_unique<PReLU>("prelu1", 6));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Conv2d>("conv2", 6, 8, 3, 1, 1));
    if (flattened) {
        m->add(std::make_unique<Flatten>("flatten"));
        m->add(std::make_unique<PReLU>("prelu2", 8 * 14 * 14));
    } else {
        m->add(std::make_unique<PReLU>("prelu2"));
        m->add(std::make_unique<Flatten>("flatten"));
    }
    m->add(std::make_unique<Linear>("fc1", 8 * 14 * 14, 32));
    m->add(std::make_unique<PReLU>("prelu3", 32));
    m->add(std::make_unique<Linear>("fc2", 32, 10));
    m->initParams(seed);
    Rng rng(seed + 1);
    for (std::size_t i = 0; i < m->size(); ++i)
        if (auto* p = dynamic_cast<PReLU*>(&m->layer(i)))
            for (float& a : p->weight().value.values()) a = rng.uniform(-0.3f, 0.6f);
    for (std::size_t i : {std::size_t{0}, std::size_t{3}})
        for (float& w : dynamic_cast<Conv2d&>(m->layer(i)).weight().value.values()) w *= 3.0f;
    return m;
}

} // namespace

class TestPReLU : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("prelu"); }
    void importMatchesPyTorch_data();
    void importMatchesPyTorch();
    void roundTripsAndOnnxruntime_data() { importMatchesPyTorch_data(); }
    void roundTripsAndOnnxruntime();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void qatTrainsTheSlopes();
    void cleEqualizesThroughPReLU();
    void badSlopesAreFormatErrors();
};

void TestPReLU::importMatchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : {"prelu_op11_nofold", "prelu_op13_fold_dyn", "prelu_op17_nofold"}) QTest::newRow(n) << QString(n);
}

// Three PReLU layers (6 slopes on the map, 1 shared, 16 on the features), PyTorch's parameter
// count, PyTorch's outputs. The unfolded exports write the slope as Unsqueeze(weight, [1, 2]).
void TestPReLU::importMatchesPyTorch()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const std::vector<std::vector<float>> s = slopesOf(m);
    QCOMPARE(s.size(), std::size_t{3});
    QCOMPARE(s[0].size(), std::size_t{6});
    QCOMPARE(s[1].size(), std::size_t{1});
    QCOMPARE(s[2].size(), std::size_t{16});
    QCOMPARE(m.numParams(), kPReluNetParams);
    QCOMPARE(buildModel(m)->numParams(), kPReluNetParams);
    QS_CHECK(layer_checks::matchesPyTorch(name.toStdString(), m, kFp32RelTol));
}

// .qsm and ONNX keep every layer and slope bit for bit; onnxruntime runs the FP32 export as
// QuantScope does.
void TestPReLU::roundTripsAndOnnxruntime()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{
        "every layer's kind and every slope",
        [](const ExportedModel& q, const ExportedModel& w) { return kindsOf(q) == kindsOf(w) && slopesOf(q) == slopesOf(w); },
        [](const ExportedModel& o, const ExportedModel& w) { return kindsOf(o) == kindsOf(onnxForm(w)) && slopesOf(o) == slopesOf(w); },
        std::nullopt}; // bit for bit
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));
    // QuantScope's export reads back through the importer too (PRelu with a [C, 1, 1] slope).
    QVERIFY(slopesOf(importOnnx(onnxBytes, "re-import")) == slopesOf(m));

    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32(name.toStdString(), m, onnxBytes, m_dir, m_data.test.pixels,
                                          kOrtFp32RelTol, {10, 10, 0, 0}));
}

void TestPReLU::engineEqualsFakeQuant_data()
{
    QTest::addColumn<QString>("act");
    QTest::addColumn<bool>("flattened");
    for (const char* act : {"uint8", "int8"}) {
        QTest::newRow(act) << QString(act) << false;
        QTest::newRow(qPrintable(QString(act) + " flattened")) << QString(act) << true;
    }
}

// A model quantized by QuantSim and exported (the slopes stay float32): at every PReLU point the
// engine's integers are the layer's forward on the engine's own input integers, then the point's
// fake-quant, exactly, for the per-channel tables on a map, the shared table and the per-feature
// tables after a dense layer (or on features flattened from a map); argmax against the fake-quant reference; the QDQ export reads back
// with the same slopes and points, and onnxruntime predicts what the engine does.
void TestPReLU::engineEqualsFakeQuant()
{
    QFETCH(QString, act);
    QFETCH(bool, flattened);
    auto q = fixtures::quantize(preluModel(11, flattened), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    std::size_t prelus = 0;
    for (const StoredLayer& l : q.exported.layers)
        if (l.kind == LayerKind::PReLU) {
            ++prelus;
            QVERIFY2(l.outputQuant.has_value(), l.name.c_str());
            QVERIFY(l.tensors.at(0).encoding == TensorEncoding::Float32);
        }
    QCOMPARE(prelus, std::size_t{3});
    // At each PReLU point: the layer on the engine's own input integers, in the point's own shape
    // (the flattened features after a Flatten; NCHW order, as the trace's), then the point's fake-quant.
    std::map<std::string, engine_agreement::CodeDiff> diffs;
    QS_CHECK(layer_checks::codesAtPoints(
        q.exported, m_data.test, 20, [](const StoredLayer& l) { return l.kind == LayerKind::PReLU; },
        [](const StoredLayer& l, const PointTrace& in, const PointTrace& p) {
            Shape shape{1};
            shape.insert(shape.end(), p.shape.begin(), p.shape.end());
            Tensor x(shape, engine_agreement::dequantized(in).values()), y;
            PReLU layer("ref", l.tensors[0].numel());
            layer.weight().value.values() = l.tensors[0].values;
            layer.forward(x, y, RunContext{});
            return y;
        },
        diffs));
    QCOMPARE(diffs.size(), std::size_t{3});
    const QString what = "prelu-net " + act + (flattened ? " flattened" : "");
    for (const auto& [layer, d] : diffs) QS_CHECK(layer_checks::codesWithin(QString::fromStdString(layer) + " " + what, d, kPointBounds));

    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, q.exported, m_data.test, kMinEngineAgreement, run));
    const layer_checks::ReadBack rb{
        "the layers' kinds, slopes and points",
        [](const ExportedModel& fromQsm, const ExportedModel& m) { return slopesOf(fromQsm) == slopesOf(m); },
        [](const ExportedModel& back, const ExportedModel& m) {
            return kindsOf(back) == kindsOf(m) && slopesOf(back) == slopesOf(m) && layer_checks::samePoints(back, m);
        }};
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, q.exported, rb, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    const std::string path = m_dir + "/qdq-prelu-" + act.toStdString() + (flattened ? "-flat" : "") + ".onnx";
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, path, m_images, run, kMinQdqAgreement, kQdqMeanRelDiff));
}

// A QAT run moves the slopes (they are parameters the optimizer sees, FP32 masters with no
// fake-quant), and the integer export stores what training left.
void TestPReLU::qatTrainsTheSlopes()
{
    const std::vector<float> before = dynamic_cast<PReLU&>(preluModel()->layer(1)).weight().value.values();
    TrainConfig cfg;
    cfg.model = "prelu-net";
    cfg.modelFactory = [](const Shape&, std::size_t, std::uint64_t) { return preluModel(); };
    cfg.precision.strategy = Strategy::Qat;
    cfg.precision.format = "int8";
    cfg.epochs = 1;
    cfg.batchSize = 32;
    cfg.threads = 1;
    cfg.evalBatchSize = 64;
    Trainer trainer(cfg, m_data);
    (void)trainer.run();
    const std::vector<float>& after = dynamic_cast<PReLU&>(trainer.model().layer(1)).weight().value.values();
    std::size_t moved = 0;
    for (std::size_t c = 0; c < after.size(); ++c) moved += after[c] != before[c];
    QCOMPARE(moved, after.size());
    const ExportedModel e = exportedModelOf(trainer);
    QVERIFY(e.quantized);
    QVERIFY(slopesOf(e).at(0) == after);
}

// y = W2 prelu(W1 x): CLE pairs conv1 with conv2 through the PReLU (prelu_a(x / s) = prelu_a(x) / s
// for s > 0 whatever the slope), the function is unchanged and the range ratio goes down.
void TestPReLU::cleEqualizesThroughPReLU()
{
    auto m = std::make_unique<Model>("cle-prelu", Shape{1, 8, 8});
    m->add(std::make_unique<Conv2d>("conv1", 1, 6, 3, 1, 1));
    m->add(std::make_unique<PReLU>("prelu", 6));
    m->add(std::make_unique<Conv2d>("conv2", 6, 4, 3, 1, 1));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 4 * 64, 10));
    m->initParams(3);
    auto& c1 = dynamic_cast<Conv2d&>(m->layer(0));
    for (std::size_t i = 0; i < c1.weight().value.numel(); ++i) c1.weight().value[i] *= static_cast<float>(1 + i / 9 * 3); // channel ranges 1..16
    Rng rng(5);
    for (float& a : dynamic_cast<PReLU&>(m->layer(1)).weight().value.values()) a = rng.uniform(-0.3f, 0.6f);
    Tensor x({4, 1, 8, 8});
    for (float& v : x.values()) v = rng.uniform(-1.0f, 1.0f);
    RunContext ctx;
    const std::vector<float> y0 = m->forward(x, ctx).values();
    const EqualizationReport rep = equalizeCrossLayer(*m, 20, 1e-6);
    QCOMPARE(rep.pairs.size(), std::size_t{2}); // and conv2 -> fc through the Flatten
    QVERIFY(rep.skipped.empty());
    QCOMPARE(QString::fromStdString(rep.pairs[0].first), QString("conv1"));
    QCOMPARE(QString::fromStdString(rep.pairs[0].second), QString("conv2"));
    qInfo("range ratio %.3g -> %.3g", rep.pairs[0].rangeRatioBefore, rep.pairs[0].rangeRatioAfter);
    QVERIFY(rep.pairs[0].rangeRatioAfter < rep.pairs[0].rangeRatioBefore / 2);
    const std::vector<float> y1 = m->forward(x, ctx).values();
    QVERIFY(maxDiff(y0, y1) <= 1e-5 * maxAbs(y0));
}

// A .qsm PReLU with a NaN slope, a slope count that is neither 1 nor the channels, or an integer
// slope is a FormatError naming the file and the layer.
void TestPReLU::badSlopesAreFormatErrors()
{
    auto q = fixtures::quantize(preluModel(), m_data, "int8", "channel", "uint8");
    const auto expectError = [&](const char* what, const std::function<void(StoredLayer&)>& edit, const char* mentions) {
        ExportedModel e = q.exported;
        for (StoredLayer& l : e.layers)
            if (l.name == "prelu1") edit(l);
        try {
            e.validate("bad.qsm");
            QFAIL(qPrintable(QString(what) + ": no error"));
        } catch (const FormatError& err) {
            const QString msg = err.what();
            QVERIFY2(msg.startsWith("bad.qsm: ") && msg.contains("prelu1") && msg.contains(mentions), qPrintable(QString(what) + ": " + msg));
        }
    };
    expectError("NaN slope", [](StoredLayer& l) { l.tensors[0].values[2] = NAN; }, "non-finite value");
    expectError("5 slopes for 6 channels", [](StoredLayer& l) {
        l.tensors[0].values.resize(5);
        l.tensors[0].shape = {5};
    }, "the layer needs [6]");
    expectError("integer slope", [](StoredLayer& l) {
        StoredTensor& t = l.tensors[0];
        t.encoding = TensorEncoding::Int;
        t.bits = 8;
        t.qmin = -128;
        t.qmax = 127;
        t.scales = {0.01f};
        t.zeroPoints = {0};
        t.q.assign(t.numel(), 1);
    }, "stored as float32");
    // And through the file: a NaN written into a .qsm is refused on reading.
    ExportedModel e = q.exported;
    std::vector<std::uint8_t> bytes = encodeQsm(e);
    const float slope = e.layers[1].tensors[0].values[0];
    bool patched = false;
    for (std::size_t i = 32; i + 4 <= bytes.size() && !patched; ++i)
        if (std::memcmp(bytes.data() + i, &slope, 4) == 0) {
            const float nan = NAN;
            std::memcpy(bytes.data() + i, &nan, 4);
            patched = true;
        }
    QVERIFY(patched);
    // Fix the CRC so the reader gets as far as the value.
    const std::uint32_t crc = static_cast<std::uint32_t>(::crc32(0L, bytes.data() + 32, static_cast<uInt>(bytes.size() - 32)));
    std::memcpy(bytes.data() + 24, &crc, 4);
    QVERIFY_THROWS_EXCEPTION(FormatError, decodeQsm(bytes, "nan.qsm"));
    try {
        decodeQsm(bytes, "nan.qsm");
    } catch (const FormatError& err) {
        QVERIFY2(QString(err.what()).contains("prelu1") && QString(err.what()).contains("non-finite"), err.what());
    }
}

QTEST_GUILESS_MAIN(TestPReLU)
#include "tst_prelu.moc"
