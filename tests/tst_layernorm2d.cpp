// LayerNorm2d (nn/layernorm2d.h: a LayerNorm over each pixel's channels, ConvNeXt's) end to end:
// ConvNeXt blocks exported by PyTorch in both of the ConvNeXt code bases' styles (tests/onnx_import
// convnext_*, fixture_modules_norms.py: the permute / nn.LayerNorm / nn.Linear / permute block with
// its layer scale, and the channels_first LayerNorm written by hand) import as LayerNorm2d layers
// and 1x1 Convs with PyTorch's parameters; .qsm and QuantScope's own ONNX keep every parameter bit
// for bit, and that ONNX reads back through the importer too; a quantized model keeps the norms'
// parameters in float32 with an output record, and the integer engine's codes at its points are the
// fake-quant simulation's exactly; onnxruntime runs both exports. Outputs against PyTorch are in
// tst_onnx_import (matchesPyTorch), forward/backward against PyTorch in tst_layers_golden
// (049_layer_norm2d*.json), the numerical gradients in tst_layers_gradients.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/conv2d.h"
#include "nn/groupnorm.h"
#include "nn/layernorm2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

#include <functional>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// ConvNeXtTV and ConvNeXtCF (fixture_modules_norms.py) as PyTorch counts their parameters
// (sum(p.numel())), of which the layer scales (8 + 16) fold into the Linear layers before them.
constexpr std::size_t kConvNeXtParams = 4818, kLayerScales = 8 + 16;

// Every LayerNorm2d as (channels, eps, weight, bias).
struct Norms {
    std::vector<std::size_t> channels;
    std::vector<float> eps;
    std::vector<std::vector<float>> tensors;
    bool operator==(const Norms&) const = default;
};
Norms normsOf(const ExportedModel& m)
{
    Norms n;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::LayerNorm2d) {
            n.channels.push_back(l.outChannels);
            n.eps.push_back(l.eps);
            for (const StoredTensor& t : l.tensors) n.tensors.push_back(t.values);
        }
    return n;
}

std::size_t countOf(const ExportedModel& m, LayerKind k)
{
    return static_cast<std::size_t>(std::count_if(m.layers.begin(), m.layers.end(), [&](const StoredLayer& l) { return l.kind == k; }));
}

// conv 1->8 -> LayerNorm2d(8) -> ReLU -> max pool -> conv 8->8 -> LayerNorm2d(8, no affine) ->
// ReLU -> flatten -> fc 1568->16 -> LayerNorm2d(16) on (N, C) features -> ReLU -> fc 16->10 on
// 28 x 28, affine parameters drawn away from 1 and 0.
std::unique_ptr<Model> layerNormModel(std::uint64_t seed = 7)
{
    auto m = std::make_unique<Model>("ln-net", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1));
    m->add(std::make_unique<LayerNorm2d>("ln1", 8));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Conv2d>("conv2", 8, 8, 3, 1, 1));
    m->add(std::make_unique<LayerNorm2d>("ln2", 8, 1e-5f, false));
    m->add(std::make_unique<ReLU>("relu2"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 8 * 14 * 14, 16));
    m->add(std::make_unique<LayerNorm2d>("ln3", 16)); // on (N, C) features: the engine's batch stage
    m->add(std::make_unique<ReLU>("relu3"));
    m->add(std::make_unique<Linear>("fc2", 16, 10));
    m->initParams(seed);
    Rng rng(seed + 1);
    for (std::size_t i = 0; i < m->size(); ++i)
        if (auto* l = dynamic_cast<LayerNorm2d*>(&m->layer(i)); l && l->affine()) {
            for (float& v : l->weight().value.values()) v = rng.uniform(0.5f, 1.5f);
            for (float& v : l->bias().value.values()) v = rng.uniform(-0.5f, 0.5f);
        }
    return m;
}

} // namespace

class TestLayerNorm2d : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("layernorm2d"); }
    void importsConvNeXt_data();
    void importsConvNeXt();
    void roundTrips_data() { importsConvNeXt_data(); }
    void roundTrips();
    void unaffineRoundTrips();
    void unaffineImportsWithoutParameters();
    void rsqrtFormIsOneNorm();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void onnxruntimeRunsFp32Export();
    void badShapesAreConfigErrors();
    void storedParametersAreChecked();
};

void TestLayerNorm2d::importsConvNeXt_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : {"convnext_tv_op13_fold_dyn", "convnext_tv_op17_fold", "convnext_cf_op13_nofold", "convnext_cf_op17_fold_dyn"})
        QTest::newRow(n) << QString(n);
}

// torchvision's style: LayerNorm2d after the stem, in both blocks, before the downsampling conv and
// on the pooled map (5); the ConvNeXt repository's: 4, and nn.LayerNorm(16) on the pooled features
// (a GroupNorm of one group). Each block's two nn.Linear on channels-last maps are 1x1 Convs (4 in
// all, besides the stem, downsampling and depthwise convs); PyTorch's parameters less the folded
// layer scales.
void TestLayerNorm2d::importsConvNeXt()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const bool tv = name.startsWith("convnext_tv");
    const Norms n = normsOf(m);
    QCOMPARE(n.channels, tv ? std::vector<std::size_t>({8, 8, 8, 16, 16}) : std::vector<std::size_t>({8, 8, 8, 16}));
    for (float e : n.eps) QCOMPARE(e, 1e-6f);
    QCOMPARE(n.tensors.size(), 2 * n.channels.size());
    QVERIFY(n.tensors[0] != std::vector<float>(8, 1.0f)); // PyTorch's drawn weight, not ones
    QCOMPARE(countOf(m, LayerKind::GroupNorm), tv ? std::size_t{0} : std::size_t{1});
    std::size_t pointwise = 0;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Conv2d && l.kernel == 1 && l.groups == 1) ++pointwise;
    QCOMPARE(pointwise, std::size_t{4});
    // one note names them, not one per Linear, bias and layer scale
    const auto linears = std::count_if(m.notes.begin(), m.notes.end(), [](const std::string& t) { return t.find("nn.Linear") != std::string::npos; });
    QCOMPARE(linears, 1);
    QVERIFY2(m.notes.size() <= 2, qPrintable(QString::number(m.notes.size())));
    QCOMPARE(m.numParams() + kLayerScales, kConvNeXtParams);
    QCOMPARE(buildModel(m)->numParams() + kLayerScales, kConvNeXtParams);
}

// .qsm and ONNX keep every LayerNorm2d bit for bit and compute the same outputs; QuantScope's ONNX
// (the channels_first subgraph: ReduceMean over axis 1, Sub, Pow, ReduceMean, Add, Sqrt, Div, then
// Mul and Add) reads back through the importer as the same norms.
void TestLayerNorm2d::roundTrips()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{
        "every layer's kind and every LayerNorm2d's channels, eps, weight and bias",
        [](const ExportedModel& q, const ExportedModel& w) { return kindsOf(q) == kindsOf(w) && normsOf(q) == normsOf(w); },
        [](const ExportedModel& o, const ExportedModel& w) { return kindsOf(o) == kindsOf(onnxForm(w)) && normsOf(o) == normsOf(w); },
        std::nullopt}; // bit for bit
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));
    const ExportedModel again = importOnnx(onnxBytes, "re-import");
    QVERIFY(normsOf(again) == normsOf(m));
    QCOMPARE(kindsOf(again), kindsOf(onnxForm(m)));
}

// A LayerNorm2d without affine parameters names its channels in no tensor: the ONNX export declares
// them as its output's shape, and both readers give the same layer back.
void TestLayerNorm2d::unaffineRoundTrips()
{
    auto model = layerNormModel();
    const ExportedModel fp = exportFloatModel(*model, "ln-net", Normalization::identity(1), {});
    QCOMPARE(normsOf(fp).channels, std::vector<std::size_t>({8, 8, 16}));
    QCOMPARE(normsOf(fp).tensors.size(), std::size_t{4});
    const std::vector<std::uint8_t> bytes = encodeOnnx(fp);
    const ExportedModel back = decodeOnnx(bytes, "round trip");
    QVERIFY(normsOf(back) == normsOf(fp));
    QVERIFY(normsOf(decodeQsm(encodeQsm(fp), "round trip")) == normsOf(fp));
    // The importer reads the norm of (N, C) features as nn.LayerNorm(C), a GroupNorm of one group:
    // the same function, with the same parameters.
    const ExportedModel again = importOnnx(bytes, "re-import");
    QCOMPARE(normsOf(again).channels, std::vector<std::size_t>({8, 8}));
    const Norms want = normsOf(fp);
    QCOMPARE(normsOf(again).tensors, std::vector<std::vector<float>>(want.tensors.begin(), want.tensors.begin() + 2));
    QCOMPARE(countOf(again, LayerKind::GroupNorm), std::size_t{1});
    QCOMPARE(again.numParams(), fp.numParams());
    constexpr std::size_t n = 8;
    std::vector<std::int32_t> predA(n), predB(n);
    std::vector<float> outA(n * 10), outB(n * 10);
    ModelRunner(again).predict(m_data.test.pixels.data(), n, predA.data(), outA.data());
    ModelRunner(fp).predict(m_data.test.pixels.data(), n, predB.data(), outB.data());
    // the same function, up to float rounding: GroupNorm computes x a + b, LayerNorm2d (x - mean) rstd w + b
    const double d = engine_agreement::maxDiff(outA, outB);
    QVERIFY2(d <= 1e-5 * engine_agreement::maxAbs(outB), qPrintable(QString::number(d)));
    QCOMPARE(predA, predB);
}

// nn.LayerNorm(elementwise_affine=False) on channels-last maps and on the flattened features: torch
// 1.13 writes LayerNormalization without Scale and B at opset 17 (which ONNX's checker refuses, after
// writing the file), and the subgraph with no Mul and Add below 17. Both read as norms without
// parameters: PyTorch's count (conv 3*6*9 + 6, fc 96*10 + 10).
void TestLayerNorm2d::unaffineImportsWithoutParameters()
{
    for (const char* name : {"lnnoaffine_op17_fold", "lnnoaffine_op13_fold"}) {
        const ExportedModel m = importFixture(name);
        QCOMPARE(normsOf(m).channels, std::vector<std::size_t>({6}));
        QVERIFY(normsOf(m).tensors.empty());
        QCOMPARE(countOf(m, LayerKind::GroupNorm), std::size_t{1});
        QCOMPARE(m.numParams(), std::size_t{168 + 970});
    }
}

// The channels_first LayerNorm written with torch.rsqrt (1 / Sqrt, then a Mul) and d * d for the
// square, or with x.var(1, unbiased=False) (a mean and a difference of its own), is one
// LayerNorm2d with the module's weight and bias, PyTorch's parameter count.
void TestLayerNorm2d::rsqrtFormIsOneNorm()
{
    for (const char* name : {"lnrsqrt_op13_fold_dyn", "lnrsqrt_op11_nofold", "lnvar_op13_fold", "lnvar_op17_nofold_dyn"}) {
        const ExportedModel m = importFixture(name);
        QCOMPARE(normsOf(m).channels, std::vector<std::size_t>({6}));
        QCOMPARE(normsOf(m).tensors.size(), std::size_t{2});
        QCOMPARE(m.numParams(), std::size_t{168 + 12 + 1510});
    }
}

// PTQ int8 (uint8 and int8 activations) of a LayerNorm2d model: each norm keeps its float32 weight
// and bias and carries an output record; at every norm's point the engine's codes are the layer's
// forward on the engine's own input codes, then the point's fake-quant, exactly; argmax against the
// fake-quant reference; the .qsm and QDQ ONNX files read back with the same norms and points, and
// onnxruntime predicts what the engine does.
void TestLayerNorm2d::engineEqualsFakeQuant_data()
{
    QTest::addColumn<QString>("act");
    for (const char* act : {"uint8", "int8"}) QTest::newRow(act) << QString(act);
}

void TestLayerNorm2d::engineEqualsFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(layerNormModel(), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    QCOMPARE(countOf(q.exported, LayerKind::LayerNorm2d), std::size_t{3});
    for (const StoredLayer& l : q.exported.layers)
        if (l.kind == LayerKind::LayerNorm2d) {
            QVERIFY2(l.outputQuant.has_value(), l.name.c_str());
            for (const StoredTensor& t : l.tensors) QVERIFY(t.encoding == TensorEncoding::Float32);
        }
    const QString what = "ln-net " + act;
    const layer_checks::ReadBack rb = layer_checks::normsKindsAndPoints(normsOf);
    engine_agreement::EngineRun run;
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::floatStepPointsExact(
        what, q.exported, m_data.test, 3, [](const StoredLayer& l) { return l.kind == LayerKind::LayerNorm2d; },
        [](const StoredLayer& l, const PointTrace& in, const PointTrace& p) {
            Shape shape{1};
            shape.insert(shape.end(), p.shape.begin(), p.shape.end());
            Tensor x(shape, engine_agreement::dequantized(in).values()), y;
            LayerNorm2d layer("ref", l.outChannels, l.eps, !l.tensors.empty());
            if (layer.affine()) {
                layer.weight().value.values() = l.tensors.at(0).values;
                layer.bias().value.values() = l.tensors.at(1).values;
            }
            layer.forward(x, y, RunContext{});
            return y;
        },
        rb, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, m_dir + "/qdq-ln-" + act.toStdString() + ".onnx", m_images, run, 0.98, 2e-2));
}

// onnxruntime runs the FP32 export (ReduceMean over the channels, Sub, Pow, ReduceMean, Add, Sqrt,
// Div, Mul, Add) as QuantScope's float runner does, the norm without affine parameters included.
void TestLayerNorm2d::onnxruntimeRunsFp32Export()
{
    auto m = layerNormModel();
    const ExportedModel fp = exportFloatModel(*m, "ln-net", Normalization::identity(1), {});
    const std::vector<std::uint8_t> fpBytes = encodeOnnx(fp);
    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32("ln-net-fp32", fp, fpBytes, m_dir, m_data.test.pixels, 1e-5));
}

void TestLayerNorm2d::badShapesAreConfigErrors()
{
    QVERIFY_THROWS_EXCEPTION(ConfigError, LayerNorm2d("ln", 0));
    QVERIFY_THROWS_EXCEPTION(ConfigError, LayerNorm2d("ln", 6, 0.0f));
    QVERIFY_THROWS_EXCEPTION(ConfigError, LayerNorm2d("ln", 6, std::numeric_limits<float>::infinity()));
    LayerNorm2d l("ln", 6);
    try {
        (void)l.outputShape({4, 8, 5, 5});
        QFAIL("8 channels taken by a LayerNorm2d of 6");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find("6 channels") != std::string::npos, e.what());
    }
    QVERIFY_THROWS_EXCEPTION(ConfigError, (void)l.outputShape({4, 6, 5}));
}

// A stored LayerNorm2d (and GroupNorm, which shares the check) takes no affine parameters or a
// float32 weight and bias per channel: integers, a missing bias or a weight of the wrong length are
// FormatErrors naming the layer, before any model is built.
void TestLayerNorm2d::storedParametersAreChecked()
{
    auto m = layerNormModel();
    m->add(std::make_unique<GroupNorm>("gn", 2, 10));
    const ExportedModel fp = exportFloatModel(*m, "ln-net", Normalization::identity(1), {});
    fp.validate("ok.qsm");
    std::size_t checked = 0;
    for (std::size_t i = 0; i < fp.layers.size(); ++i) {
        if (fp.layers[i].kind != LayerKind::LayerNorm2d && fp.layers[i].kind != LayerKind::GroupNorm) continue;
        if (fp.layers[i].tensors.empty()) continue;
        ++checked;
        const auto refused = [&](const char* what, const std::function<void(StoredLayer&)>& damage, const char* expected) {
            ExportedModel bad = fp;
            damage(bad.layers[i]);
            try {
                bad.validate("bad.qsm");
                QFAIL(qPrintable(QString("%1 of %2 was accepted").arg(what, QString::fromStdString(fp.layers[i].name))));
            } catch (const FormatError& e) {
                const std::string msg = e.what();
                QVERIFY2(msg.find("bad.qsm") != std::string::npos && msg.find("'" + fp.layers[i].name + "'") != std::string::npos &&
                             msg.find(expected) != std::string::npos,
                         e.what());
            }
        };
        refused("integer weights", [](StoredLayer& l) {
            StoredTensor& w = l.tensors[0];
            w.encoding = TensorEncoding::Int;
            w.bits = 8, w.qmin = -128, w.qmax = 127, w.isSigned = true;
            w.q.assign(w.values.size(), 1);
            w.scales = {0.01f};
            w.zeroPoints = {0};
            w.layout = ScaleLayout::Tensor;
            w.values.clear();
        }, "stored as float32");
        refused("a missing bias", [](StoredLayer& l) { l.tensors.pop_back(); }, "expected 2");
        refused("a short weight", [](StoredLayer& l) {
            l.tensors[0].values.pop_back();
            l.tensors[0].shape = {l.tensors[0].values.size()};
        }, "has shape");
    }
    QCOMPARE(checked, std::size_t{3}); // ln1, ln3 and gn (ln2 has no affine parameters)
}

QTEST_GUILESS_MAIN(TestLayerNorm2d)
#include "tst_layernorm2d.moc"
