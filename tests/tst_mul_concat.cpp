// Mul of two activations (squeeze-and-excitation gates, x * sigmoid(y)), Concat along the
// channels (DenseNet, Inception) and the broadcast Add of a map and a [N, C, 1, 1] gate (GCNet's
// context add) end to end: PyTorch exports (tests/onnx_import se_*, gate_*, dense_*, inception_*,
// ctxadd_*, make_fixtures.py) import with one Mul, Concat or Add per join and match
// PyTorch's outputs; they survive .qsm and ONNX round trips; onnxruntime runs the FP32 export;
// the integer engine's Mul and Concat agree with the fake-quant simulation at every point (within
// one step) and in the predictions; the QDQ export reads back and onnxruntime runs it; QAT trains
// through them. The numerical gradients are in tst_layers_gradients, the refusals in
// tst_onnx_import_errors.
#include "infer/int_engine.h"
#include "infer/int_kernels.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/concat.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/mul.h"
#include "nn/pointwise.h"
#include "quant/equalization.h"
#include "train/loss.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

#include <cmath>
#include <fstream>
#include <map>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf, onnx_import_fixtures::countKind;
using engine_agreement::maxAbs;
using engine_agreement::maxDiff;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// |QuantScope - PyTorch| over the largest |PyTorch output| (the brief's bound).
constexpr double kFp32RelTol = 1e-5;
// onnxruntime's float graph against QuantScope's float model.
constexpr double kOrtFp32RelTol = 1e-5;
// The engine against the fake-quant simulation: integers at a Mul/Concat point within one step
// (the engine rounds the exact product, the simulation a float one), and argmax agreement.
constexpr std::int32_t kPointStepTol = 1;
constexpr double kMinEngineAgreement = 0.995;
// onnxruntime on the QDQ export against the engine (float between Q/DQ in onnxruntime).
constexpr double kMinQdqAgreement = 0.98;
constexpr double kQdqMeanRelDiff = 2e-2;
// The codes at the Mul/Concat points: within kPointStepTol, in at most one value in 100, over at least 16 codes.
constexpr layer_checks::CodeBounds kPointBounds{kPointStepTol, 100, 16};
// The ONNX read back against the model (BN folded by onnxForm), over its largest |output|.
constexpr double kOnnxRoundTripRelTol = 1e-6;

struct FixtureRow {
    const char* name;
    std::size_t muls, concats, adds = 0; // joins the import must make
};
const FixtureRow kFixtureRows[] = {
    {"se_conv_sigmoid_op13_fold_dyn", 1, 0},     {"se_conv_hardsigmoid_op11_nofold", 1, 0},
    {"se_conv_hardsigmoid_op17_fold_dyn", 1, 0}, {"se_linear_view_op13_fold_dyn", 1, 0},
    {"se_linear_view_op11_nofold", 1, 0},        {"se_linear_flat_op17_fold", 1, 0},
    {"gate_mul_op13_fold_dyn", 1, 0},            {"dense_concat_op13_fold_dyn", 0, 2},
    {"dense_concat_op11_nofold", 0, 2},          {"inception_concat_op13_fold_dyn", 0, 1},
    {"inception_concat_op17_nofold", 0, 1},      {"ctxadd_op13_fold_dyn", 0, 0, 2},
    {"ctxadd_op11_nofold", 0, 0, 2},             {"ctxadd_op17_fold", 0, 0, 2},
};

// Models on the workspace's 1 x 28 x 28 images for the quantized checks.
//   se_*:       conv -> relu, gate = gate(conv1x1(relu(conv1x1(gap)))), x * gate (or gate * x), pool, conv, pool, fc
//   gate_mul:   conv -> relu; convx(h) * sigmoid(convy(h)); pool; fc
//   ctx_add:    conv -> relu, t = conv1x1(relu(conv1x1(gap))), x + t (or t + x, then a ReLU), pool, conv, pool, fc
//   dense:      stem; cat(stem, relu(conv)); cat(that, relu(conv)); 1x1 conv; pool; fc
//   inception:  stem; cat(relu(1x1), relu(3x3), relu(1x1(maxpool 3 s1 p1))); conv; pool; fc
std::unique_ptr<Model> joinModel(const std::string& which)
{
    auto m = std::make_unique<Model>(which, Shape{1, 28, 28});
    std::vector<std::size_t> scaled; // layers whose weights are scaled up (gates across their range)
    const std::size_t stem = m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1));
    const std::size_t x = m->add(std::make_unique<ReLU>("relu1"), {stem});
    std::size_t channels = 8;
    if (which.rfind("se_", 0) == 0) {
        m->add(std::make_unique<GlobalAvgPool2d>("squeeze"), {x});
        m->add(std::make_unique<Conv2d>("fc1", 8, 4, 1, 1, 0, 1, true));
        m->add(std::make_unique<ReLU>("fc1_relu"));
        scaled.push_back(m->size());
        m->add(std::make_unique<Conv2d>("fc2", 4, 8, 1, 1, 0, 1, true));
        const LayerKind gk = which.find("hardsigmoid") != std::string::npos ? LayerKind::Hardsigmoid : LayerKind::Sigmoid;
        const std::size_t s = m->add(std::make_unique<Pointwise>("gate", gk));
        const bool first = which.find("first") != std::string::npos;
        m->add(std::make_unique<Mul>("excite"), first ? std::vector<std::size_t>{s, x} : std::vector<std::size_t>{x, s});
    } else if (which.rfind("ctx_add", 0) == 0) {
        m->add(std::make_unique<GlobalAvgPool2d>("context"), {x});
        m->add(std::make_unique<Conv2d>("t1", 8, 4, 1, 1, 0, 1, true));
        m->add(std::make_unique<ReLU>("t1_relu"));
        scaled.push_back(m->size());
        const std::size_t t = m->add(std::make_unique<Conv2d>("t2", 4, 8, 1, 1, 0, 1, true));
        const bool first = which.find("first") != std::string::npos;
        m->add(std::make_unique<Add>("context_add"), first ? std::vector<std::size_t>{t, x} : std::vector<std::size_t>{x, t});
        if (which.ends_with("_relu")) m->add(std::make_unique<ReLU>("context_relu")); // folds into the Add's clamp
    } else if (which.rfind("gate_mul", 0) == 0) {
        const std::size_t a = m->add(std::make_unique<Conv2d>("convx", 8, 8, 3, 1, 1), {x});
        scaled.push_back(m->size());
        m->add(std::make_unique<Conv2d>("convy", 8, 8, 1), {x});
        const std::size_t s = m->add(std::make_unique<Pointwise>("gate", LayerKind::Sigmoid));
        m->add(std::make_unique<Mul>("gated"), {a, s});
        if (which == "gate_mul_relu") m->add(std::make_unique<ReLU>("gated_relu")); // folds into the Mul's clamp
    } else if (which == "dense") {
        m->add(std::make_unique<Conv2d>("conv_a", 8, 4, 3, 1, 1), {x});
        const std::size_t ya = m->add(std::make_unique<ReLU>("relu_a"));
        const std::size_t c1 = m->add(std::make_unique<Concat>("cat1", 2), {x, ya});
        m->add(std::make_unique<Conv2d>("conv_b", 12, 4, 3, 1, 1), {c1});
        const std::size_t yb = m->add(std::make_unique<ReLU>("relu_b"));
        m->add(std::make_unique<Concat>("cat2", 2), {c1, yb});
        m->add(std::make_unique<Conv2d>("trans", 16, 8, 1));
        m->add(std::make_unique<ReLU>("trans_relu"));
    } else if (which.rfind("inception", 0) == 0) {
        m->add(std::make_unique<Conv2d>("b1", 8, 4, 1), {x});
        const std::size_t b1 = m->add(std::make_unique<ReLU>("b1_relu"));
        m->add(std::make_unique<Conv2d>("b2", 8, 5, 3, 1, 1), {x});
        const std::size_t b2 = m->add(std::make_unique<ReLU>("b2_relu"));
        m->add(std::make_unique<MaxPool2d>("b3_pool", 3, 1, 1), {x});
        m->add(std::make_unique<Conv2d>("b3", 8, 3, 1));
        const std::size_t b3 = m->add(std::make_unique<ReLU>("b3_relu"));
        m->add(std::make_unique<Concat>("cat", 3), {b1, b2, b3});
        if (which == "inception_relu") m->add(std::make_unique<ReLU>("cat_relu")); // folds into the Concat's clamp
        m->add(std::make_unique<Conv2d>("conv2", 12, channels, 3, 1, 1));
        m->add(std::make_unique<ReLU>("relu2"));
    }
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Conv2d>("conv3", channels, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("relu3"));
    m->add(std::make_unique<MaxPool2d>("pool3", 2));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8 * 7 * 7, 10));
    m->initParams(17);
    for (std::size_t i : scaled)
        for (float& w : dynamic_cast<Conv2d&>(m->layer(i)).weight().value.values()) w *= 4.0f;
    return m;
}

// The same layers' kinds and each layer's inputs.
bool sameKindsAndInputs(const ExportedModel& back, const ExportedModel& m)
{
    if (kindsOf(back) != kindsOf(m)) return false;
    for (std::size_t i = 0; i < m.layers.size(); ++i)
        if (back.layers[i].inputs != m.layers[i].inputs) return false;
    return true;
}

// The trace of stored activation a (0: the input).
const PointTrace* traceOf(const std::vector<PointTrace>& trace, const ExportedModel& m, std::size_t a)
{
    const std::string name = a == 0 ? std::string("input") : m.layers.at(a - 1).name;
    for (const PointTrace& p : trace)
        if (p.layer == name) return &p;
    return nullptr;
}

} // namespace

class TestMulConcat : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("mulconcat"); }
    void importMatchesPyTorch_data();
    void importMatchesPyTorch();
    void roundTripsAndOnnxruntime_data();
    void roundTripsAndOnnxruntime();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void qatTrainsThroughJoins();
    void equalizationStopsAtJoins();
    void shapeErrorsNameTheLayer();
    void kernelsRoundHalfToEven();
};

void TestMulConcat::importMatchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("muls");
    QTest::addColumn<int>("concats");
    QTest::addColumn<int>("adds");
    for (const FixtureRow& r : kFixtureRows)
        QTest::newRow(r.name) << QString(r.name) << int(r.muls) << int(r.concats) << int(r.adds);
}

// Each join is one Mul or Concat layer (an SE gate's Sigmoid stays a Sigmoid, not SiLU; a
// Linear-form gate has no Flatten or Linear left, its Gemms are 1x1 convolutions), and the
// model's outputs are PyTorch's.
void TestMulConcat::importMatchesPyTorch()
{
    QFETCH(QString, name);
    QFETCH(int, muls);
    QFETCH(int, concats);
    const ExportedModel m = importFixture(name.toStdString());
    QCOMPARE(int(countKind(m, LayerKind::Mul)), muls);
    QCOMPARE(int(countKind(m, LayerKind::Concat)), concats);
    QFETCH(int, adds);
    QCOMPARE(int(countKind(m, LayerKind::Add)), adds);
    QCOMPARE(int(countKind(m, LayerKind::SiLU)), 0);
    if (name.startsWith("se_linear")) {
        QCOMPARE(int(countKind(m, LayerKind::Linear)), 1); // the classifier only
        QCOMPARE(int(countKind(m, LayerKind::Flatten)), 1);
    }
    QS_CHECK(layer_checks::matchesPyTorch(name.toStdString(), m, kFp32RelTol));
}

void TestMulConcat::roundTripsAndOnnxruntime_data() { importMatchesPyTorch_data(); }

// .qsm and ONNX files keep every layer and input and the outputs; onnxruntime runs the FP32
// export as QuantScope does.
void TestMulConcat::roundTripsAndOnnxruntime()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const layer_checks::RoundTrip rt{"every layer's kind and inputs", sameKindsAndInputs,
                                     [](const ExportedModel& o, const ExportedModel& w) { return sameKindsAndInputs(o, onnxForm(w)); },
                                     kOnnxRoundTripRelTol}; // BN folded by onnxForm
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));

    QS_SKIP_WITHOUT_ORT();
    // Images of the model's size: crops of the synthetic test images, one per channel.
    QS_CHECK(layer_checks::ortMatchesFp32(name.toStdString(), m, onnxBytes, m_dir, m_data.test.pixels, kOrtFp32RelTol));
}

void TestMulConcat::engineEqualsFakeQuant_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("act");
    for (const char* model : {"se_sigmoid", "se_hardsigmoid_first", "gate_mul", "gate_mul_relu", "dense", "inception", "inception_relu", "ctx_add",
                              "ctx_add_first_relu"})
        for (const char* act : {"uint8", "int8"})
            QTest::newRow(qPrintable(QString("%1 %2").arg(model).arg(act))) << QString(model) << QString(act);
}

// A model quantized by QuantSim (int8 weights, calibrated activations) and exported: at every Mul
// and Concat point the engine's integers are within one step of what the fake-quant simulation
// computes from the engine's own input integers (the layer's float forward, then the point's
// fake-quant), most of them equal; the engine's predictions are the fake-quant reference's; the
// QDQ export reads back as the same model and onnxruntime predicts what the engine does.
void TestMulConcat::engineEqualsFakeQuant()
{
    QFETCH(QString, model);
    QFETCH(QString, act);
    auto q = fixtures::quantize(joinModel(model.toStdString()), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    std::size_t joins = 0;
    // A join's point is its own, or that of the ReLU that alone reads it (folded into its clamp).
    const auto isJoin = [](LayerKind k) { return k == LayerKind::Mul || k == LayerKind::Concat || k == LayerKind::Add; };
    const auto joinOf = [&](const StoredLayer& l) -> const StoredLayer* {
        if (isJoin(l.kind)) return &l;
        if (l.kind == LayerKind::ReLU && l.inputs[0] > 0 && isJoin(q.exported.layers[l.inputs[0] - 1].kind) &&
            !q.exported.layers[l.inputs[0] - 1].outputQuant)
            return &q.exported.layers[l.inputs[0] - 1];
        return nullptr;
    };
    for (std::size_t i = 0; i < q.exported.layers.size(); ++i) {
        const StoredLayer& l = q.exported.layers[i];
        if (!isJoin(l.kind)) continue;
        ++joins;
        const long next = q.exported.soleConsumer(i);
        const bool fused = next >= 0 && q.exported.layers[static_cast<std::size_t>(next)].kind == LayerKind::ReLU;
        QVERIFY2(l.outputQuant.has_value() != fused, l.name.c_str());
        QCOMPARE(fused, model.endsWith("_relu"));
    }
    QVERIFY(joins > 0);
    const IntEngine engine(q.exported);
    engine_agreement::CodeDiff diff;
    for (std::size_t img = 0; img < 20; ++img) {
        const std::vector<PointTrace> trace = engine.trace(m_data.test.pixels.data() + img * m_data.test.imageBytes());
        for (const PointTrace& p : trace) {
            const auto at = std::find_if(q.exported.layers.begin(), q.exported.layers.end(), [&](const StoredLayer& s) { return s.name == p.layer; });
            if (at == q.exported.layers.end() || !joinOf(*at)) continue;
            const StoredLayer* l = joinOf(*at);
            const bool relu = l != &*at;
            std::vector<Tensor> in;
            for (std::size_t a : l->inputs) {
                const PointTrace* t = traceOf(trace, q.exported, a);
                QVERIFY2(t, qPrintable(QString("no trace of the input of ") + l->name.c_str()));
                in.push_back(engine_agreement::dequantized(*t));
            }
            std::vector<const Tensor*> xs;
            for (const Tensor& t : in) xs.push_back(&t);
            Tensor y;
            if (l->kind == LayerKind::Mul) Mul("ref").forwardMulti(xs, y, RunContext{});
            else if (l->kind == LayerKind::Add) Add("ref").forwardMulti(xs, y, RunContext{});
            else Concat("ref", xs.size()).forwardMulti(xs, y, RunContext{});
            QCOMPARE(y.numel(), p.q.size());
            if (relu)
                for (float& v : y.values()) v = std::max(v, 0.0f);
            fakeQuantizeActivation(y, p.quant);
            diff.add(engine_agreement::compareCodes(y, p));
        }
    }
    const QString what = model + " " + act;
    QS_CHECK(layer_checks::codesWithin(what, diff, kPointBounds));

    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, q.exported, m_data.test, kMinEngineAgreement, run));

    // .qsm and QDQ ONNX: read back as the same model; onnxruntime predicts what the engine does.
    const layer_checks::ReadBack rb{"the layers' kinds, inputs and points",
                                    [](const ExportedModel& fromQsm, const ExportedModel& m) { return kindsOf(fromQsm) == kindsOf(m); },
                                    [](const ExportedModel& back, const ExportedModel& m) {
                                        return sameKindsAndInputs(back, m) && layer_checks::samePoints(back, m);
                                    },
                                    true};
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, q.exported, rb, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    const std::string path = m_dir + "/qdq-" + model.toStdString() + "-" + act.toStdString() + ".onnx";
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, path, m_images, run, kMinQdqAgreement, kQdqMeanRelDiff));
}

// Quantization-aware steps on a model with an SE gate and a Concat (fake-quantized activations,
// straight-through gradients): the loss falls and the gate's convolutions learn (their gradients
// pass through the Mul), and the fine-tuned model still runs on the integer engine.
void TestMulConcat::qatTrainsThroughJoins()
{
    auto q = fixtures::quantize(joinModel("se_sigmoid"), m_data, "int8", "channel", "uint8");
    Model& model = *q.model;
    QuantSim& sim = *q.sim;
    const std::size_t B = 64;
    const LabeledImages& train = m_data.train;
    Tensor x({B, 1, 28, 28});
    std::vector<std::int32_t> labels(B);
    const std::vector<float> norm = m_data.normalization.table();
    for (std::size_t i = 0; i < B; ++i) {
        labels[i] = train.labels[i];
        for (std::size_t j = 0; j < 28 * 28; ++j) x[i * 784 + j] = norm[train.pixels[i * 784 + j]];
    }
    Conv2d& fc1 = dynamic_cast<Conv2d&>(*model.findLayer("fc1"));
    const std::vector<float> before = fc1.weight().value.values();
    RunContext ctx;
    ctx.training = true;
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
        sim.quantizeWeights(Rounding::Nearest, 0);
        const Tensor& y = model.forward(x, ctx, &sim);
        Tensor dy;
        const double loss = crossEntropyLoss(y, labels, dy);
        QVERIFY(std::isfinite(loss));
        (step == 0 ? first : last) = loss;
        model.backward(dy, &sim);
        for (Param* p : model.params())
            for (std::size_t k = 0; k < p->value.numel(); ++k) p->value[k] -= 0.05f * p->grad[k];
    }
    qInfo("QAT through the SE gate: loss %.4f -> %.4f", first, last);
    QVERIFY(last < first);
    QVERIFY(fc1.weight().value.values() != before);
    sim.quantizeWeights(Rounding::Nearest, 0);
    const ExportedModel e = exportQuantizedModel(model, sim, "se", m_data, "qat", "channel");
    QVERIFY2(IntEngine::unsupportedReason(e).empty(), IntEngine::unsupportedReason(e).c_str());
}

// Cross-layer equalization ends a pair at a Mul or Concat (it reports the join as the reason and
// pairs no convolution whose output reaches one), and leaves the model's outputs as they were.
void TestMulConcat::equalizationStopsAtJoins()
{
    const std::map<std::string, std::vector<std::string>> feedsJoin = {
        {"gate_mul", {"convx"}}, {"dense", {"conv_a", "conv_b"}}, {"inception", {"b1", "b2", "b3"}}};
    for (const auto& [which, firsts] : feedsJoin) {
        std::unique_ptr<Model> m = joinModel(which);
        Tensor x({4, 1, 28, 28});
        for (std::size_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
        RunContext ctx;
        const std::vector<float> before = m->forward(x, ctx).values();
        const EqualizationReport rep = equalizeCrossLayer(*m);
        for (const EqualizedPair& p : rep.pairs)
            QVERIFY2(std::find(firsts.begin(), firsts.end(), p.first) == firsts.end(), qPrintable(QString::fromStdString(p.first + " -> " + p.second)));
        for (const std::string& f : firsts) {
            const bool reported = std::any_of(rep.skipped.begin(), rep.skipped.end(), [&](const std::string& s) {
                return s.rfind(f + ":", 0) == 0 && s.find("joins several inputs") != std::string::npos;
            });
            QVERIFY2(reported, qPrintable(QString::fromStdString(which + ": " + f + " is not reported as ending at a join")));
        }
        const std::vector<float> after = m->forward(x, ctx).values();
        QVERIFY2(maxDiff(before, after) <= 1e-4 * std::max(1.0, maxAbs(before)), which.c_str());
    }
}

// Shapes that do not join are ConfigErrors naming the layer and the shapes when the model is
// built (and FormatErrors when a file describes them), never a crash.
void TestMulConcat::shapeErrorsNameTheLayer()
{
    const auto expectConfigError = [](Model& m, const QString& mentions) {
        try {
            m.outputShape(2);
            QFAIL("the shapes were taken");
        } catch (const ConfigError& e) {
            QVERIFY2(QString(e.what()).contains(mentions), e.what());
        }
        try {
            RunContext ctx;
            m.forward(Tensor({2, 3, 8, 8}), ctx);
            QFAIL("the forward ran");
        } catch (const ConfigError& e) {
            QVERIFY2(QString(e.what()).contains(mentions), e.what());
        }
    };
    // conv 3->8 stride 2 on 8x8: [8,4,4]; a gate of 16 channels: [16,1,1], joined by `join`
    const auto gateOfOtherChannels = [&](const char* name, LayerPtr join, const QString& mentions) {
        Model m(name, {3, 8, 8});
        const std::size_t x = m.add(std::make_unique<Conv2d>("conv", 3, 8, 3, 2, 1));
        m.add(std::make_unique<GlobalAvgPool2d>("pool"));
        const std::size_t g = m.add(std::make_unique<Conv2d>("fc", 8, 16, 1));
        m.add(std::move(join), {x, g});
        expectConfigError(m, mentions);
    };
    gateOfOtherChannels("bad-mul", std::make_unique<Mul>("excite"), "excite: cannot multiply shapes [2,8,4,4] and [2,16,1,1]");
    {
        // the same for an Add, and an Add of a map of other size
        gateOfOtherChannels("bad-add", std::make_unique<Add>("context_add"), "context_add: cannot add shapes [2,8,4,4] and [2,16,1,1]");
        Model m2("bad-add2", {3, 8, 8});
        const std::size_t a = m2.add(std::make_unique<Conv2d>("a", 3, 4, 3, 1, 1));
        const std::size_t b = m2.add(std::make_unique<Conv2d>("b", 3, 4, 3, 2, 1), {0});
        m2.add(std::make_unique<Add>("join"), {a, b});
        expectConfigError(m2, "join: cannot add shapes [2,4,8,8] and [2,4,4,4]");
    }
    {
        Model m("bad-concat", {3, 8, 8});
        const std::size_t a = m.add(std::make_unique<Conv2d>("a", 3, 4, 3, 1, 1));
        const std::size_t b = m.add(std::make_unique<Conv2d>("b", 3, 5, 3, 2, 1), {0});
        m.add(std::make_unique<Concat>("cat", 2), {a, b});
        expectConfigError(m, "cat: cannot concatenate shapes [2,4,8,8], [2,5,4,4]");
    }
    try {
        Concat("one", 1);
        QFAIL("a Concat of one input was made");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains("one: Concat joins at least two inputs"), e.what());
    }
    // A stored model whose Concat joins maps of other sizes: refused by validate() as a file error.
    ExportedModel em = importFixture("inception_concat_op13_fold_dyn");
    QVERIFY(decodeQsm(encodeQsm(em), "ok").layers.size() == em.layers.size());
    for (StoredLayer& l : em.layers)
        if (l.kind == LayerKind::MaxPool2d) l.stride = 2; // b3's branch becomes 4x4
    try {
        decodeQsm(encodeQsm(em), "bad.qsm");
        QFAIL("a Concat of 8x8 and 4x4 maps was stored");
    } catch (const Error& e) {
        QVERIFY2(QString(e.what()).contains("cannot concatenate shapes"), e.what());
    }
}

// The engine's Mul and Concat kernels round the exact rescaled value half to even, as nearbyint
// does in the fake-quant: for dyadic multipliers (exact in fixed point and in double) every input
// pair gives exactly clamp(zo + nearbyint(acc * m)), ties included (0.5 -> 0, 1.5 -> 2, -0.5 -> 0).
void TestMulConcat::kernelsRoundHalfToEven()
{
    std::size_t ties = 0;
    for (double m : {0.5, 0.25, 0.125, 0.75, 1.0, 2.0, 1.0 / 128.0, 3.0 / 1024.0})
        for (const auto& [za, zb, zo] : {std::tuple{0, 0, 0}, std::tuple{128, 131, 128}, std::tuple{7, 128, 250}}) {
            const MulParams p = mulParams(m, za, zb, zo, 0, 255);
            for (int a = 0; a < 256; ++a)
                for (int b = 0; b < 256; ++b) {
                    const double v = static_cast<double>((a - za) * (b - zb)) * m;
                    ties += v - std::floor(v) == 0.5;
                    const auto want = static_cast<std::int32_t>(std::clamp(std::nearbyint(v) + zo, 0.0, 255.0));
                    if (mulRequantOne(p, a, b) != want)
                        QFAIL(qPrintable(QString("Mul m %1: (%2 - %3)(%4 - %5) gave %6, not %7").arg(m).arg(a).arg(za).arg(b).arg(zb)
                                             .arg(mulRequantOne(p, a, b)).arg(want)));
                }
            // Concat: one part rescaled by m, one copied.
            ConcatParams c;
            c.pixels = 256;
            c.C = 2;
            c.zo = zo;
            ConcatPart r;
            r.channels = 1;
            r.f = fixedPointMultiplier(m);
            r.zin = za;
            ConcatPart copy = r;
            copy.offset = 1;
            copy.copy = true;
            c.parts = {r, copy};
            std::vector<std::uint8_t> in(256), out(512);
            for (int v = 0; v < 256; ++v) in[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(v);
            const std::uint8_t* ins[] = {in.data(), in.data()};
            concatRequant(c, ins, out.data());
            for (int v = 0; v < 256; ++v) {
                const double x = static_cast<double>(v - za) * m;
                const auto want = static_cast<int>(std::clamp(std::nearbyint(x) + zo, 0.0, 255.0));
                QCOMPARE(int(out[2 * static_cast<std::size_t>(v)]), want);
                QCOMPARE(int(out[2 * static_cast<std::size_t>(v) + 1]), v);
            }
        }
    QVERIFY(ties > 1000); // the rule was exercised
}

QTEST_GUILESS_MAIN(TestMulConcat)
#include "tst_mul_concat.moc"
