// Pointwise activations (nn/pointwise.h: Sigmoid, Tanh, SiLU, Hardsigmoid, Hardswish, LeakyReLU,
// ELU, GELU, GELUTanh, Hardtanh, Softplus, Mish, SELU, CELU, Softsign) end to end: PyTorch exports of a small CNN per activation (tests/onnx_import act_*,
// make_fixtures.py) import as one layer per module, SiLU, Hardswish and GELU from their subgraphs
// too, and match PyTorch's outputs; they survive .qsm and ONNX (FP32 and QDQ) round trips;
// onnxruntime runs both exports; the integer engine's lookup tables equal the fake-quant
// simulation bit for bit. Forward/backward values against PyTorch are in tst_layers_golden, the
// numerical gradients in tst_layers_gradients, the refusals in tst_onnx_import_errors.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/pointwise.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kFixtures;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// |QuantScope - PyTorch| over the largest |PyTorch output| (float32 on both sides, sums in
// different orders; the brief's bound).
constexpr double kFp32RelTol = 1e-5;
// onnxruntime's float graph against QuantScope's float model (ORT's own exp/erf/tanh).
constexpr double kOrtFp32RelTol = 1e-5;
// QDQ in onnxruntime against the engine: argmax agreement and mean |output difference| over the
// largest |output| (onnxruntime runs the activations in float between Q/DQ, a value near a
// rounding tie lands one step away).
constexpr double kMinQdqAgreement = 0.98;
constexpr double kQdqMeanRelDiff = 2e-2;
// The engine against the fake-quant simulation: every code at an activation point equal, over at
// least 16 codes; argmax agreement with the fake-quant reference.
constexpr layer_checks::CodeBounds kPointBounds{0, 0, 16};
constexpr double kMinEngineAgreement = 0.98;

const char* const kKindRows[][4] = {
    // fixture, kind, alpha, beta
    {"act_sigmoid_op13_fold_dyn", "Sigmoid", "0", "0"},
    {"act_tanh_op11_nofold", "Tanh", "0", "0"},
    {"act_silu_op13_fold_dyn", "SiLU", "0", "0"},
    {"act_silurev_op11_nofold", "SiLU", "0", "0"},
    {"act_hardsigmoid_op13_fold", "Hardsigmoid", "0", "0"},
    {"act_hardswish_op13_fold_dyn", "Hardswish", "0", "0"},
    {"act_hardswish_op14_nofold", "Hardswish", "0", "0"},
    {"act_leakyrelu_op13_fold", "LeakyReLU", "0.1", "0"},
    {"act_elu_op11_nofold", "ELU", "0.7", "0"},
    {"act_gelu_op13_fold_dyn", "GELU", "0", "0"},
    {"act_gelu_op11_nofold", "GELU", "0", "0"},
    {"act_geluhalf_op17_fold", "GELU", "0", "0"},
    // nn.GELU(approximate='tanh'): Mul(x, x), Mul(x, .), ..., Tanh, Add(1), Mul(x), Mul(0.5) at
    // opsets 11, 13, 17, folded or not; by hand with Pow(x, 3) and 0.5 * x first.
    {"act_gelutanh_op13_fold", "GELUTanh", "0", "0"},
    {"act_gelutanh_op11_nofold", "GELUTanh", "0", "0"},
    {"act_gelutanh_op17_fold_dyn", "GELUTanh", "0", "0"},
    {"act_gelutanh_op13_nofold", "GELUTanh", "0", "0"},
    {"act_gelutanhpow_op13_fold", "GELUTanh", "0", "0"},
    // Clip with other bounds than ReLU's and ReLU6's: nn.Hardtanh (attributes at opset 9), its
    // default, torch.clamp with both bounds (Cast constants), only min, only max (an empty input, or
    // the attribute alone).
    {"act_hardtanh_op9_nofold", "Hardtanh", "-0.5", "2"},
    {"act_hardtanh_op13_fold_dyn", "Hardtanh", "-0.5", "2"},
    {"act_hardtanhdefault_op17_nofold", "Hardtanh", "-1", "1"},
    {"act_clamp_op11_nofold", "Hardtanh", "-0.75", "1.25"},
    {"act_clampmin_op13_fold", "Hardtanh", "-1", "inf"},
    {"act_clampmax_op11_fold_dyn", "Hardtanh", "-inf", "1.5"},
    {"act_clampmax_op9_nofold", "Hardtanh", "-inf", "1.5"},
    // Hardswish and Hardsigmoid by hand, as MobileNetV3 code writes them: x * relu6(x + 3) / 6 (F.relu6:
    // Relu, then Clip(max=6)), x * (clamp(x + 3, 0, 6) / 6), hardtanh(x + 3, 0, 6) / 6,
    // relu6(x + 3) * (1/6); folded or not (constants behind Casts), opset 9's Clip attributes.
    {"act_hswishhand_op13_fold", "Hardswish", "0", "0"},
    {"act_hswishhand_op11_nofold", "Hardswish", "0", "0"},
    {"act_hswishinner_op17_nofold_dyn", "Hardswish", "0", "0"},
    {"act_hswishhand_op9_nofold", "Hardswish", "0", "0"},
    {"act_hsigmoidhand_op13_fold", "Hardsigmoid", "0", "0"},
    {"act_hsigmoidmul_op11_nofold", "Hardsigmoid", "0", "0"},
    // nn.Mish (Softplus, Tanh, Mul) and nn.Softplus; Softplus(beta=2) as Mul(2), Softplus, Div(2):
    // the Mul folded into the conv before, the Div a depthwise 1x1 Conv.
    {"act_mish_op13_fold_dyn", "Mish", "0", "0"},
    {"act_mish_op11_nofold", "Mish", "0", "0"},
    {"act_mish_op17_nofold", "Mish", "0", "0"},
    {"act_softplus_op13_fold", "Softplus", "0", "0"},
    {"act_softplusbeta2_op13_fold_dyn", "Softplus", "0", "0"},
    // nn.SELU (Selu), nn.CELU (Celu) and nn.Softsign (Abs, Add(1), Div(x, .)).
    {"act_selu_op13_fold_dyn", "SELU", "0", "0"},
    {"act_selu_op11_nofold", "SELU", "0", "0"},
    {"act_celu_op13_fold", "CELU", "0.5", "0"},
    {"act_celudefault_op17_nofold", "CELU", "1", "0"},
    {"act_softsign_op13_fold_dyn", "Softsign", "0", "0"},
    {"act_softsign_op11_nofold", "Softsign", "0", "0"},
    {"act_softsign_op17_fold", "Softsign", "0", "0"},
};

LayerKind kindNamed(const std::string& s)
{
    for (const PointwiseInfo& r : pointwiseTable())
        if (s == r.name) return r.kind;
    throw std::runtime_error("no pointwise kind " + s);
}

// The layers' kinds, alphas and betas, in order.
std::vector<std::tuple<LayerKind, float, float>> kindsOf(const ExportedModel& m)
{
    std::vector<std::tuple<LayerKind, float, float>> k;
    for (const StoredLayer& l : m.layers) k.emplace_back(l.kind, l.alpha, l.beta);
    return k;
}

// conv 1->6 -> act -> max pool -> conv 6->8 -> act -> flatten -> fc -> 10 on 28 x 28, the
// convolutions' weights scaled so the activations see both sides of their bends.
std::unique_ptr<Model> actModel(LayerKind kind, float alpha)
{
    auto m = std::make_unique<Model>("act-" + std::string(layerKindName(kind)), Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 6, 3, 1, 1));
    m->add(std::make_unique<Pointwise>("act1", kind, alpha));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Conv2d>("conv2", 6, 8, 3, 1, 1));
    m->add(std::make_unique<Pointwise>("act2", kind, alpha));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8 * 14 * 14, 10));
    m->initParams(11);
    for (std::size_t i : {std::size_t{0}, std::size_t{3}})
        for (float& w : dynamic_cast<Conv2d&>(m->layer(i)).weight().value.values()) w *= 3.0f;
    return m;
}

} // namespace

class TestActivations : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("activations"); }
    void importMatchesPyTorch_data();
    void importMatchesPyTorch();
    void roundTripsAndOnnxruntime_data();
    void roundTripsAndOnnxruntime();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void sigmoidWithAnotherReaderStaysSigmoid();
    void softsignOperatorAndSeluAttributes();
    void pointwiseCaseLabelsMatchTable();
};

void TestActivations::importMatchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<QString>("kind");
    QTest::addColumn<float>("alpha");
    QTest::addColumn<float>("beta");
    for (const auto& r : kKindRows) QTest::newRow(r[0]) << QString(r[0]) << QString(r[1]) << std::stof(r[2]) << std::stof(r[3]);
}

// Each module is one layer of its kind (SiLU and Hardswish leave no Sigmoid/HardSigmoid behind,
// GELU no Erf), with PyTorch's alpha (and Hardtanh's bounds), and the model's outputs are PyTorch's.
void TestActivations::importMatchesPyTorch()
{
    QFETCH(QString, name);
    QFETCH(QString, kind);
    QFETCH(float, alpha);
    QFETCH(float, beta);
    const ExportedModel m = importFixture(name.toStdString());
    const LayerKind k = kindNamed(kind.toStdString());
    std::size_t count = 0;
    for (const StoredLayer& l : m.layers) {
        QVERIFY2(!isPointwise(l.kind) || l.kind == k, qPrintable(QString("unexpected ") + layerKindName(l.kind) + " '" + l.name.c_str() + "'"));
        if (l.kind == k) {
            ++count;
            QCOMPARE(l.alpha, alpha);
            QCOMPARE(l.beta, beta);
        }
    }
    QCOMPARE(count, std::size_t{2});
    QS_CHECK(layer_checks::matchesPyTorch(name.toStdString(), m, kFp32RelTol));
}

void TestActivations::roundTripsAndOnnxruntime_data() { importMatchesPyTorch_data(); }

// .qsm and ONNX files keep every layer's kind and alpha and the outputs; onnxruntime runs the
// FP32 export as QuantScope does.
void TestActivations::roundTripsAndOnnxruntime()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{"every layer's kind, alpha and beta",
                                     [](const ExportedModel& q, const ExportedModel& w) { return kindsOf(q) == kindsOf(w); },
                                     [](const ExportedModel& o, const ExportedModel& w) { return kindsOf(o) == kindsOf(onnxForm(w)); },
                                     std::nullopt}; // bit for bit
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));

    QS_SKIP_WITHOUT_ORT();
    // Images of the model's size (8 x 8 here): the synthetic test images' crops at (10, 10).
    QS_CHECK(layer_checks::ortMatchesFp32(name.toStdString(), m, onnxBytes, m_dir, m_data.test.pixels,
                                          kOrtFp32RelTol, {10, 10, 0, 0}));
}

void TestActivations::engineEqualsFakeQuant_data()
{
    QTest::addColumn<QString>("kind");
    QTest::addColumn<float>("alpha");
    QTest::addColumn<QString>("act");
    for (const PointwiseInfo& r : pointwiseTable())
        for (const char* act : {"uint8", "int8"})
            QTest::newRow(qPrintable(QString("%1 %2").arg(r.name).arg(act))) << QString(r.name) << (r.hasAlpha ? 0.2f : 0.0f) << QString(act);
}

// A model quantized by QuantSim (int8 weights, calibrated activations) and exported: at every
// activation layer the engine's integers are what the fake-quant simulation computes from the
// engine's own input integers, exactly (the layer's forward, then the stored point's fake-quant);
// the QDQ export reads back as the same model, and onnxruntime runs it with the engine's predictions.
void TestActivations::engineEqualsFakeQuant()
{
    QFETCH(QString, kind);
    QFETCH(float, alpha);
    QFETCH(QString, act);
    const LayerKind k = kindNamed(kind.toStdString());
    auto q = fixtures::quantize(actModel(k, alpha), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    for (const StoredLayer& l : q.exported.layers)
        if (l.kind == k) QVERIFY2(l.outputQuant.has_value(), l.name.c_str());
    // At each activation point: the layer on the engine's own input integers, then the point's fake-quant.
    std::map<std::string, engine_agreement::CodeDiff> diffs;
    QS_CHECK(layer_checks::codesAtPoints(
        q.exported, m_data.test, 20, [&](const StoredLayer& l) { return l.kind == k; },
        [&](const StoredLayer& l, const PointTrace& in, const PointTrace&) {
            Tensor x = engine_agreement::dequantized(in), y;
            Pointwise("ref", k, l.alpha, l.beta).forward(x, y, RunContext{});
            return y;
        },
        diffs));
    engine_agreement::CodeDiff diff;
    for (const auto& [layer, d] : diffs) diff.add(d);
    const QString what = kind + " " + act;
    QS_CHECK(layer_checks::codesWithin(what, diff, kPointBounds));

    // The engine's predictions against the exported model's fake-quant reference.
    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, q.exported, m_data.test, kMinEngineAgreement, run));

    // QDQ: reads back as the same model; onnxruntime predicts what the engine does.
    const layer_checks::ReadBack rb{"the layers' kinds, alphas, betas and points", nullptr, [](const ExportedModel& back, const ExportedModel& m) {
                                        return kindsOf(back) == kindsOf(m) && layer_checks::samePoints(back, m);
                                    }};
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, q.exported, rb, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    const std::string path = m_dir + "/qdq-" + kind.toStdString() + "-" + act.toStdString() + ".onnx";
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, path, m_images, run, kMinQdqAgreement, kQdqMeanRelDiff));
}

// A Sigmoid whose output is read by more than the Mul of SiLU stays a Sigmoid (the Mul of two
// activations is then a Mul layer, not silently turned into SiLU).
void TestActivations::sigmoidWithAnotherReaderStaysSigmoid()
{
    onnx::ModelProto mp = onnx_import_fixtures::parse(kFixtures / "act_silu_op13_fold_dyn.onnx");
    // A second reader of the first Sigmoid's output: an Identity nobody reads is dead (pruned), so
    // make the graph output depend on it by feeding the MaxPool from the Sigmoid instead of the Mul.
    onnx::NodeProto* sig = onnx_import_fixtures::findNode(mp, "Sigmoid");
    onnx::NodeProto* pool = onnx_import_fixtures::findNode(mp, "MaxPool");
    pool->set_input(0, sig->output(0)); // the Mul is now dead, the Sigmoid read by the pool
    const ExportedModel m = importOnnx(onnx_import_fixtures::serialize(mp), "sigmoid-reader");
    std::vector<LayerKind> kinds;
    for (const StoredLayer& l : m.layers)
        if (isPointwise(l.kind)) kinds.push_back(l.kind);
    QVERIFY(kinds == std::vector<LayerKind>({LayerKind::Sigmoid, LayerKind::SiLU}));
    // Both readers live: Sigmoid read by the Mul and by an Add into the Mul's output.
    onnx::ModelProto mp2 = onnx_import_fixtures::parse(kFixtures / "act_silu_op13_fold_dyn.onnx");
    onnx::NodeProto* sig2 = onnx_import_fixtures::findNode(mp2, "Sigmoid");
    onnx::NodeProto* mul2 = onnx_import_fixtures::findNode(mp2, "Mul");
    onnx::NodeProto* add = mp2.mutable_graph()->add_node();
    add->set_op_type("Add");
    add->set_name("/extra/Add");
    add->add_input(mul2->output(0));
    add->add_input(sig2->output(0));
    add->add_output("extra_sum");
    onnx_import_fixtures::findNode(mp2, "MaxPool")->set_input(0, "extra_sum");
    const ExportedModel m2 = importOnnx(onnx_import_fixtures::serialize(mp2), "sigmoid-two-readers");
    std::vector<LayerKind> joins;
    for (const StoredLayer& l : m2.layers)
        if (isPointwise(l.kind) || l.kind == LayerKind::Mul || l.kind == LayerKind::Add) joins.push_back(l.kind);
    QVERIFY(joins == std::vector<LayerKind>({LayerKind::Sigmoid, LayerKind::Mul, LayerKind::Add, LayerKind::SiLU}));
}

// ONNX's Softsign operator (which other exporters write) reads as the same layer as torch's Abs,
// Add(1), Div(x, .) subgraph, with PyTorch's outputs; a Selu whose alpha is not PyTorch's
// constant is refused, naming the node and the value.
void TestActivations::softsignOperatorAndSeluAttributes()
{
    onnx::ModelProto mp = onnx_import_fixtures::parse(kFixtures / "act_softsign_op13_fold_dyn.onnx");
    int replaced = 0;
    for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
        if (n.op_type() == "Div") { // Div(x, |x| + 1) -> Softsign(x); the Abs and Add are then dead
            const std::string x = n.input(0);
            n.set_op_type("Softsign");
            n.clear_input();
            n.add_input(x);
            ++replaced;
        }
    QCOMPARE(replaced, 2);
    const ExportedModel m = importOnnx(onnx_import_fixtures::serialize(mp), "softsign-operator");
    QCOMPARE(std::count_if(m.layers.begin(), m.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::Softsign; }), 2);
    QS_CHECK(layer_checks::matchesPyTorch("act_softsign_op13_fold_dyn", m, kFp32RelTol));

    onnx::ModelProto sp = onnx_import_fixtures::parse(kFixtures / "act_selu_op13_fold_dyn.onnx");
    onnx::NodeProto* selu = onnx_import_fixtures::findNode(sp, "Selu");
    onnx::AttributeProto* alpha = selu->add_attribute();
    alpha->set_name("alpha");
    alpha->set_type(onnx::AttributeProto::FLOAT);
    alpha->set_f(1.5f);
    try {
        importOnnx(onnx_import_fixtures::serialize(sp), "selu-alpha");
        QFAIL("a Selu with alpha 1.5 was accepted");
    } catch (const ConfigError& e) {
        const QString what = e.what();
        QVERIFY2(what.contains("alpha = 1.5") && what.contains(QString::fromStdString(selu->name())), e.what());
    }
}

QTEST_GUILESS_MAIN(TestActivations)
// QS_POINTWISE_KIND_CASES, the case labels the switches over LayerKind share (the integer engine's
// build, the stored model's checks and construction, the summary), names exactly the kinds of
// pointwiseTable(): a kind added to one and not the other would be refused or mis-sized.
void TestActivations::pointwiseCaseLabelsMatchTable()
{
    const auto listed = [](LayerKind k) {
        switch (k) {
        QS_POINTWISE_KIND_CASES: return true;
        default: return false;
        }
    };
    for (int i = 0; i <= kLastLayerKind; ++i) {
        const auto k = static_cast<LayerKind>(i);
        QVERIFY2(listed(k) == isPointwise(k), layerKindName(k));
    }
}

#include "tst_activations.moc"
