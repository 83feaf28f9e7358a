// GroupNorm (nn/groupnorm.h: nn.GroupNorm, and nn.InstanceNorm2d as one group per channel) end to
// end: PyTorch exports (tests/onnx_import groupnorm_*, make_fixtures.py GroupNormNet) import with
// PyTorch's parameter count; .qsm and QuantScope's own ONNX keep every parameter bit for bit and
// compute the same outputs, and that ONNX reads back through the importer too; a quantized model
// keeps the GroupNorm's parameters in float32 with an output record, and the integer engine's
// codes at its points are the fake-quant simulation's exactly; onnxruntime runs both exports. Outputs against PyTorch are in tst_onnx_import (matchesPyTorch),
// forward/backward against PyTorch in tst_layers_golden (045_group_norm*.json), the numerical
// gradients in tst_layers_gradients.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/conv2d.h"
#include "nn/groupnorm.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// GroupNormNet's parameters as PyTorch counts them: conv1 3*6*9+6, gn 6+6, conv2 6*6*9 (no bias),
// inorm 6+6, inorm2 none (affine=False), fc 6*10+10.
constexpr std::size_t kGroupNormNetParams = 168 + 12 + 324 + 12 + 0 + 70;

// Every GroupNorm as (groups, channels, eps, weight, bias).
struct Norms {
    std::vector<std::size_t> groups, channels;
    std::vector<float> eps;
    std::vector<std::vector<float>> tensors;
    bool operator==(const Norms&) const = default;
};
Norms normsOf(const ExportedModel& m)
{
    Norms n;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::GroupNorm) {
            n.groups.push_back(l.groups);
            n.channels.push_back(l.outChannels);
            n.eps.push_back(l.eps);
            for (const StoredTensor& t : l.tensors) n.tensors.push_back(t.values);
        }
    return n;
}

// conv 1->8 -> GroupNorm(2, 8) -> ReLU -> max pool -> conv 8->8 -> GroupNorm(8, 8) (instance) ->
// ReLU -> flatten -> fc 1568->16 -> GroupNorm(4, 16) -> ReLU -> fc 16->10 on 28 x 28, affine
// parameters drawn away from 1 and 0.
std::unique_ptr<Model> groupNormModel(std::uint64_t seed = 5)
{
    auto m = std::make_unique<Model>("gn-net", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1));
    m->add(std::make_unique<GroupNorm>("gn1", 2, 8));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Conv2d>("conv2", 8, 8, 3, 1, 1));
    m->add(std::make_unique<GroupNorm>("in2", 8, 8));
    m->add(std::make_unique<ReLU>("relu2"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 8 * 14 * 14, 16));
    m->add(std::make_unique<GroupNorm>("gn3", 4, 16)); // on (N, C) features: the engine's batch stage
    m->add(std::make_unique<ReLU>("relu3"));
    m->add(std::make_unique<Linear>("fc2", 16, 10));
    m->initParams(seed);
    Rng rng(seed + 1);
    for (std::size_t i = 0; i < m->size(); ++i)
        if (auto* g = dynamic_cast<GroupNorm*>(&m->layer(i))) {
            for (float& v : g->weight().value.values()) v = rng.uniform(0.5f, 1.5f);
            for (float& v : g->bias().value.values()) v = rng.uniform(-0.5f, 0.5f);
        }
    return m;
}

} // namespace

class TestGroupNorm : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("groupnorm"); }
    void importKeepsPyTorchParameters_data();
    void importKeepsPyTorchParameters();
    void untrainedAffineKeepsItsParameters();
    void roundTrips_data() { importKeepsPyTorchParameters_data(); }
    void layerNormIsOneGroup();
    void roundTrips();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void onnxruntimeRunsFp32Export();
    void badShapesAreConfigErrors();
};

void TestGroupNorm::importKeepsPyTorchParameters_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : {"groupnorm_op13_fold_dyn", "groupnorm_op11_nofold", "groupnorm_one_op17_fold"}) QTest::newRow(n) << QString(n);
}

// Three GroupNorms: GroupNorm(2 or 1, 6) with its weight and bias, InstanceNorm2d(6, affine=True)
// (6 groups, its weight and bias), InstanceNorm2d(6) (6 groups, none); PyTorch's parameter count.
void TestGroupNorm::importKeepsPyTorchParameters()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const Norms n = normsOf(m);
    const std::size_t first = name.startsWith("groupnorm_one") ? 1 : 2;
    QCOMPARE(n.groups, std::vector<std::size_t>({first, 6, 6}));
    QCOMPARE(n.channels, std::vector<std::size_t>({6, 6, 6}));
    QCOMPARE(n.tensors.size(), std::size_t{4}); // weight and bias of the first two
    for (const auto& t : n.tensors) QCOMPARE(t.size(), std::size_t{6});
    QVERIFY(n.tensors[0] != std::vector<float>(6, 1.0f)); // PyTorch's drawn weight, not ones
    QCOMPARE(m.numParams(), kGroupNormNetParams);
    QCOMPARE(buildModel(m)->numParams(), kGroupNormNetParams);
}

// An untrained nn.InstanceNorm2d(6, affine=True) (weight ones, bias zeros, but the graph's
// initializers) keeps its parameters, as PyTorch counts them; affine=False's has none.
void TestGroupNorm::untrainedAffineKeepsItsParameters()
{
    const ExportedModel m = importFixture("groupnorm_untrained_op13_fold");
    const Norms n = normsOf(m);
    QCOMPARE(n.groups, std::vector<std::size_t>({2, 6, 6}));
    QCOMPARE(n.tensors.size(), std::size_t{4});
    QCOMPARE(n.tensors[2], std::vector<float>(6, 1.0f));
    QCOMPARE(n.tensors[3], std::vector<float>(6, 0.0f));
    QCOMPARE(m.numParams(), kGroupNormNetParams);
    QS_CHECK(layer_checks::matchesPyTorch("groupnorm_untrained_op13_fold", m, 1e-5));
}

// nn.LayerNorm(16) on a head's features (LayerNormalization at opset 17, its ReduceMean/Sub/Pow/
// Sqrt/Div subgraph and a Mul and an Add before) is a GroupNorm of one group with PyTorch's weight
// and bias and parameter count; nn.LayerNorm([4, 8, 8]) on maps, whose weight and bias are equal
// within each channel, is one too, with a note that counts PyTorch's parameters.
void TestGroupNorm::layerNormIsOneGroup()
{
    for (const char* name : {"layernorm_op17_fold_dyn", "layernorm_op13_nofold", "layernorm_op11_fold"}) {
        const ExportedModel m = importFixture(name);
        const Norms n = normsOf(m);
        QCOMPARE(n.groups, std::vector<std::size_t>({1}));
        QCOMPARE(n.channels, std::vector<std::size_t>({16}));
        QCOMPARE(n.tensors.size(), std::size_t{2});
        QVERIFY(n.tensors[0] != std::vector<float>(16, 1.0f)); // PyTorch's drawn weight
        QCOMPARE(m.numParams(), std::size_t{112 + 80 + 32 + 170}); // conv, fc1, ln, fc2 as PyTorch counts them
        QVERIFY2(m.notes.empty(), name);
    }
    for (const char* name : {"layernorm_maps_op13_fold_dyn", "layernorm_maps_op17_nofold"}) {
        const ExportedModel m = importFixture(name);
        QCOMPARE(normsOf(m).groups, std::vector<std::size_t>({1, 1}));
        QCOMPARE(m.notes.size(), std::size_t{1});
        QVERIFY2(m.notes[0].find("8 parameters where PyTorch counts 512") != std::string::npos, m.notes[0].c_str());
    }
}

// .qsm and ONNX keep every GroupNorm bit for bit and compute the same outputs; QuantScope's ONNX
// (torch's Reshape / InstanceNormalization / Reshape / Mul / Add) reads back through the importer
// as the same GroupNorms.
void TestGroupNorm::roundTrips()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{
        "every layer's kind and every GroupNorm's groups, eps, weight and bias",
        [](const ExportedModel& q, const ExportedModel& w) { return kindsOf(q) == kindsOf(w) && normsOf(q) == normsOf(w); },
        [](const ExportedModel& o, const ExportedModel& w) { return kindsOf(o) == kindsOf(onnxForm(w)) && normsOf(o) == normsOf(w); },
        std::nullopt}; // bit for bit
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));
    const ExportedModel again = importOnnx(onnxBytes, "re-import");
    QVERIFY(normsOf(again) == normsOf(m));
}

// PTQ int8 (uint8 and int8 activations) of a GroupNorm model: each GroupNorm keeps its float32
// weight and bias and carries an output record; at every GroupNorm point the engine's codes are the
// layer's forward on the engine's own input codes, then the point's fake-quant, exactly (the
// engine computes it in float with the layer's per-image formula); argmax against the fake-quant
// reference; the .qsm and QDQ ONNX files read back with the same norms and points, and
// onnxruntime predicts what the engine does.
void TestGroupNorm::engineEqualsFakeQuant_data()
{
    QTest::addColumn<QString>("act");
    for (const char* act : {"uint8", "int8"}) QTest::newRow(act) << QString(act);
}

void TestGroupNorm::engineEqualsFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(groupNormModel(), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    std::size_t norms = 0;
    for (const StoredLayer& l : q.exported.layers)
        if (l.kind == LayerKind::GroupNorm) {
            ++norms;
            QVERIFY2(l.outputQuant.has_value(), l.name.c_str());
            QCOMPARE(l.tensors.size(), std::size_t{2});
            for (const StoredTensor& t : l.tensors) QVERIFY(t.encoding == TensorEncoding::Float32);
        }
    QCOMPARE(norms, std::size_t{3});
    const QString what = "gn-net " + act;
    const layer_checks::ReadBack rb = layer_checks::normsKindsAndPoints(normsOf);
    engine_agreement::EngineRun run;
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::floatStepPointsExact(
        what, q.exported, m_data.test, 3, [](const StoredLayer& l) { return l.kind == LayerKind::GroupNorm; },
        [](const StoredLayer& l, const PointTrace& in, const PointTrace& p) {
            Shape shape{1};
            shape.insert(shape.end(), p.shape.begin(), p.shape.end());
            Tensor x(shape, engine_agreement::dequantized(in).values()), y;
            GroupNorm layer("ref", l.groups, l.outChannels, l.eps);
            layer.weight().value.values() = l.tensors.at(0).values;
            layer.bias().value.values() = l.tensors.at(1).values;
            layer.forward(x, y, RunContext{});
            return y;
        },
        rb, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, m_dir + "/qdq-gn-" + act.toStdString() + ".onnx", m_images, run, 0.98, 2e-2));
}

// onnxruntime runs the FP32 export (Reshape, InstanceNormalization, Reshape, Mul, Add) as
// QuantScope's float runner does.
void TestGroupNorm::onnxruntimeRunsFp32Export()
{
    auto m = groupNormModel();
    const ExportedModel fp = exportFloatModel(*m, "gn-net", Normalization::identity(1), {});
    const std::vector<std::uint8_t> fpBytes = encodeOnnx(fp);
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32("gn-net-fp32", fp, fpBytes, m_dir, m_data.test.pixels, 1e-5));
}

void TestGroupNorm::badShapesAreConfigErrors()
{
    QVERIFY_THROWS_EXCEPTION(ConfigError, GroupNorm("gn", 4, 6)); // 4 groups do not divide 6 channels
    QVERIFY_THROWS_EXCEPTION(ConfigError, GroupNorm("gn", 0, 6));
    QVERIFY_THROWS_EXCEPTION(ConfigError, GroupNorm("gn", 2, 6, 0.0f));
    GroupNorm g("gn", 2, 6);
    try {
        (void)g.outputShape({4, 8, 5, 5});
        QFAIL("8 channels taken by a GroupNorm of 6");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find("6 channels") != std::string::npos, e.what());
    }
    QVERIFY_THROWS_EXCEPTION(ConfigError, (void)g.outputShape({4, 6, 5}));
}

QTEST_GUILESS_MAIN(TestGroupNorm)
#include "tst_groupnorm.moc"
