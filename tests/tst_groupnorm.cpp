// GroupNorm (nn/groupnorm.h: nn.GroupNorm, and nn.InstanceNorm2d as one group per channel) end to
// end: PyTorch exports (tests/onnx_import groupnorm_*, make_fixtures.py GroupNormNet) import with
// PyTorch's parameter count; .qsm and QuantScope's own ONNX keep every parameter bit for bit and
// compute the same outputs, and that ONNX reads back through the importer too; a quantized model
// keeps the GroupNorm's parameters in float32 with an output record, and the integer engine says
// by name that it does not run it. Outputs against PyTorch are in tst_onnx_import (matchesPyTorch),
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
// ReLU -> flatten -> fc 1568->10 on 28 x 28, affine parameters drawn away from 1 and 0.
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
    m->add(std::make_unique<Linear>("fc", 8 * 14 * 14, 10));
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
    void roundTrips_data() { importKeepsPyTorchParameters_data(); }
    void roundTrips();
    void quantizedModelKeepsFloatNorms();
    void onnxruntimeRunsBothExports();
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

// PTQ int8 of a GroupNorm model: each GroupNorm keeps its float32 weight and bias and carries an
// output record; the .qsm and QDQ ONNX files read back with the same; the integer engine names
// the GroupNorm it does not run (the runner then evaluates the fake-quant reference).
void TestGroupNorm::quantizedModelKeepsFloatNorms()
{
    auto q = fixtures::quantize(groupNormModel(), m_data, "int8", "channel", "uint8");
    std::size_t norms = 0;
    for (const StoredLayer& l : q.exported.layers)
        if (l.kind == LayerKind::GroupNorm) {
            ++norms;
            QVERIFY2(l.outputQuant.has_value(), l.name.c_str());
            QCOMPARE(l.tensors.size(), std::size_t{2});
            for (const StoredTensor& t : l.tensors) QVERIFY(t.encoding == TensorEncoding::Float32);
        }
    QCOMPARE(norms, std::size_t{2});
    const std::string why = IntEngine::unsupportedReason(q.exported);
    QVERIFY2(why.find("GroupNorm 'gn1'") != std::string::npos || why.find("gn1") != std::string::npos, why.c_str());
    const ExportedModel fromQsm = decodeQsm(encodeQsm(q.exported), "round trip");
    QVERIFY(normsOf(fromQsm) == normsOf(q.exported));
    const ExportedModel fromOnnx = decodeOnnx(encodeOnnx(q.exported), "round trip");
    QVERIFY(normsOf(fromOnnx) == normsOf(q.exported));
    QVERIFY(fromOnnx.quantized);
}

// onnxruntime runs the FP32 export (Reshape, InstanceNormalization, Reshape, Mul, Add) as
// QuantScope's float runner does, and the QDQ export (the GroupNorm in float between its
// DequantizeLinear and QuantizeLinear) as QuantScope's fake-quant reference does: the runner that
// evaluates an integer model the engine does not run.
void TestGroupNorm::onnxruntimeRunsBothExports()
{
    auto m = groupNormModel();
    const ExportedModel fp = exportFloatModel(*m, "gn-net", Normalization::identity(1), {});
    const std::vector<std::uint8_t> fpBytes = encodeOnnx(fp);
    auto q = fixtures::quantize(groupNormModel(), m_data, "int8", "channel", "uint8");
    const std::vector<std::uint8_t> qdqBytes = encodeOnnx(q.exported);
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32("gn-net-fp32", fp, fpBytes, m_dir, m_data.test.pixels, 1e-5));
    engine_agreement::EngineRun run; // the fake-quant reference, in the engine's place
    const std::size_t n = m_data.test.size();
    RunnerOptions ro;
    ro.kind = RunnerKind::Reference;
    ModelRunner reference(q.exported, ro);
    run.images = run.agreeing = n;
    run.predicted.resize(n);
    run.outputs.resize(n * 10);
    reference.predict(m_data.test.pixels.data(), n, run.predicted.data(), run.outputs.data());
    QS_CHECK(layer_checks::ortQdqAgrees("gn-net int8 QDQ", qdqBytes, m_dir + "/gn-net-qdq.onnx", m_images, run, 0.98, 2e-2));
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
