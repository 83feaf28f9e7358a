// Models under a per-layer precision plan: a plan needs a quantizing strategy; QuantSim under a
// plan (an int4 layer on its int4 grid, a layer kept FP32 bit-equal to its float weights and with
// a float output); a PTQ export whose .qsm tensors carry each layer's bits and reads back; the ONNX
// QDQ export of a mixed plan in onnxruntime against QuantScope's reference; the integer engine
// with layers kept FP32; QAT and progressive training under a plan.
#include "data/idx.h"
#include "infer/int_engine.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "infer/model_runner.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "analysis/model_summary.h"
#include "quant/plan_size.h"
#include "quant/precision_plan.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QProcess>
#include <QtTest>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

using namespace quantscope;
using fixtures::agreement;
using fixtures::argmaxOf;
namespace fs = std::filesystem;


namespace {

// onnxruntime fuses Q/DQ into integer kernels that round once per activation, where the fake-quant
// reference rounds the float result (tst_onnx_graphs's tolerances for the same comparison).
constexpr double kMinQdqAgreement = 0.99;
constexpr double kQdqMeanOutputDiff = 1e-3;
// The .qsm's runner against the fake-quant simulation it came from: the stored int32 biases sit on
// the accumulator grid where the simulation fake-quantizes them on the weight grid.
constexpr double kMinSimAgreement = 0.98;

QString nodeModules()
{
    const char* cache = std::getenv("QS_NODE_CACHE");
    const std::string dir = cache && *cache ? cache : std::string(std::getenv("HOME") ? std::getenv("HOME") : "/root") + "/.cache/quantscope/node";
    return QString::fromStdString(dir + "/node_modules");
}
bool haveOrt() { return fs::exists((nodeModules() + "/onnxruntime-node/package.json").toStdString()); }

std::vector<float> ortOutputs(const std::string& model, const std::string& images)
{
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert("NODE_PATH", nodeModules());
    QProcess p;
    p.setProcessEnvironment(env);
    p.start("node", {QStringLiteral(QS_TEST_DATA "/../onnx/run_ort.js"), QString::fromStdString(model), QString::fromStdString(images), "--outputs"});
    p.waitForFinished(300000);
    if (p.exitCode() != 0) qWarning("onnxruntime failed: %s", p.readAllStandardError().constData());
    std::vector<float> v;
    for (const QString& line : QString::fromUtf8(p.readAllStandardOutput()).split('\n', Qt::SkipEmptyParts))
        for (const QString& x : line.split(',')) v.push_back(x.toFloat());
    return v;
}

std::vector<float> referenceOutputs(const ExportedModel& m, const LabeledImages& set, std::string* description = nullptr)
{
    ModelRunner r(m, RunnerOptions{});
    if (description) *description = r.description();
    std::vector<float> out(set.size() * m.classes);
    std::vector<std::int32_t> pred(set.size());
    for (std::size_t b = 0; b < set.size(); b += 100) {
        const std::size_t n = std::min<std::size_t>(100, set.size() - b);
        r.predict(set.pixels.data() + b * set.imageBytes(), n, pred.data() + b, out.data() + b * m.classes);
    }
    return out;
}

// seed-cnn (conv1, conv2, fc1, fc2) quantized by PTQ under `layers` over an int8 channel default.
struct Planned {
    std::unique_ptr<Model> model;
    std::unique_ptr<QuantSim> sim;
};

Planned ptqWithPlan(const Dataset& data, const std::vector<LayerOverride>& layers, const std::string& preset = "seed-cnn")
{
    Planned p;
    p.model = makeModel(preset, 1, 28, 28, 10, 3);
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.activationCalibration = "minmax";
    pc.layers = layers;
    p.sim = std::make_unique<QuantSim>(*p.model, pc, findFormat(pc.format));
    p.sim->quantizeWeights(Rounding::Nearest, 0);
    p.sim->calibrate(data, data.train, data.train.size(), 64);
    p.sim->setObserving(false);
    return p;
}

LayerOverride entry(const std::string& layer, const std::string& format, const std::string& granularity = "")
{
    LayerOverride o;
    o.layer = layer;
    o.format = format;
    if (!granularity.empty()) o.granularity = granularity;
    return o;
}

const Param& weightOf(Model& m, const std::string& layer)
{
    for (std::size_t i = 0; i < m.size(); ++i)
        if (m.layer(i).name() == layer)
            for (Param* p : m.layer(i).params())
                if (p->isWeight) return *p;
    throw std::runtime_error("no layer " + layer);
}

std::size_t layerIndex(const Model& m, const std::string& name)
{
    for (std::size_t i = 0; i < m.size(); ++i)
        if (m.layer(i).name() == name) return i;
    throw std::runtime_error("no layer " + name);
}

} // namespace

class TestPlanRuns : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void cleanupTestCase();
    void planNeedsAQuantizingStrategy();
    void int4AndFp32LayersGetExactlyThoseWeights();
    void uniformPlanIsTodaysQuantization();
    void ptqPlanExportsQsmWithEachLayersBits();
    void simulationAddsTheFilesBiases_data();
    void simulationAddsTheFilesBiases();
    void overflowingRangeIsANumericError();
    void mixedPlanRunsInOnnxruntime();
    void engineRunsFloatLayers_data();
    void engineRunsFloatLayers();
    void floatBatchNormIsFoundBeforeTraining();
    void qatAndProgressiveHonourThePlan_data();
    void qatAndProgressiveHonourThePlan();

private:
    Dataset m_data;
    std::string m_dir;
};

void TestPlanRuns::initTestCase()
{
    m_data = fixtures::syntheticDataset(256, 200);
    m_dir = fixtures::tempDir("plan-runs");
}


void TestPlanRuns::cleanupTestCase() { fs::remove_all(m_dir); }

void TestPlanRuns::planNeedsAQuantizingStrategy()
{
    PrecisionConfig pc;
    pc.layers = {entry("fc1", "int4")};
    for (Strategy s : {Strategy::Fp32, Strategy::Mixed, Strategy::LowPrecision}) {
        pc.strategy = s;
        QVERIFY_THROWS_EXCEPTION(ConfigError, pc.validate());
    }
    for (Strategy s : {Strategy::Ptq, Strategy::Qat, Strategy::Progressive}) {
        pc.strategy = s;
        pc.validate();
    }
    // Every layer kept FP32 quantizes nothing.
    auto m = makeModel("seed-cnn", 1, 28, 28, 10, 1);
    pc.strategy = Strategy::Ptq;
    pc.layers.clear();
    PrecisionPlan all;
    applyKeepFp32(all, "conv1,conv2,fc1,fc2");
    pc.layers = all.layers;
    QVERIFY_THROWS_EXCEPTION(ConfigError, QuantSim(*m, pc, findFormat("int8")));
}

void TestPlanRuns::int4AndFp32LayersGetExactlyThoseWeights()
{
    Planned p = ptqWithPlan(m_data, {entry("conv2", "int4"), entry("fc2", "fp32")});
    Model& m = *p.model;
    // fc2 kept FP32: the weights the forward pass uses are the float ones, bit for bit.
    const Param& fc2 = weightOf(m, "fc2");
    QVERIFY(!fc2.hasOverride);
    QVERIFY(std::memcmp(fc2.forwardValue().data(), fc2.value.data(), fc2.value.numel() * sizeof(float)) == 0);
    // conv2 at int4: every output channel on its own grid of at most 16 levels, q in [-8, 7].
    const Param& conv2 = weightOf(m, "conv2");
    QVERIFY(conv2.hasOverride);
    const std::size_t rows = conv2.value.dim(0), row = conv2.value.numel() / rows;
    const std::size_t t2 = 1; // conv2 is the second weight target
    QCOMPARE(p.sim->weightTargets()[t2].layer, std::string("conv2"));
    const QuantParams& qp = p.sim->weightParams(t2);
    QCOMPARE(qp.qmin, -8);
    QCOMPARE(qp.qmax, 7);
    QCOMPARE(qp.scale.size(), rows);
    for (std::size_t r = 0; r < rows; ++r) {
        std::set<float> levels;
        for (std::size_t j = 0; j < row; ++j) {
            const float v = conv2.forwardValue()[r * row + j];
            const float q = std::nearbyint(v / qp.scale[r]);
            QVERIFY2(std::abs(v / qp.scale[r] - q) < 1e-3f && q >= -8.0f && q <= 7.0f,
                     qPrintable(QString("conv2 weight %1 off the int4 grid (scale %2, zero point %3)").arg(v).arg(qp.scale[r]).arg(qp.zeroPoint[r])));
            levels.insert(v);
        }
        QVERIFY(levels.size() <= 16);
    }
    // conv1 keeps the default (int8): more than 16 levels somewhere.
    QCOMPARE(p.sim->weightParams(0).qmax, 127);
    // Activations: fc2's output stays float, fc1's output (after relu) is quantized at uint8.
    QVERIFY(p.sim->pointFormat(layerIndex(m, "fc2") + 1) == nullptr);
    const std::size_t relu = static_cast<std::size_t>(m.soleConsumer(layerIndex(m, "fc1")));
    QVERIFY(p.sim->pointFormat(relu + 1) != nullptr);
    QCOMPARE(p.sim->pointFormat(relu + 1)->name, std::string("uint8"));
    // A float layer read by an integer one: its output is quantized there (the boundary's Q).
    Planned q = ptqWithPlan(m_data, {entry("conv1", "fp32")});
    const std::size_t relu1 = static_cast<std::size_t>(q.model->soleConsumer(layerIndex(*q.model, "conv1")));
    QVERIFY(q.sim->pointFormat(relu1 + 1) != nullptr);
    QCOMPARE(q.sim->pointFormat(relu1 + 1)->name, std::string("uint8"));
    QVERIFY(!weightOf(*q.model, "conv1").hasOverride);
    // Layer statistics: one per quantized layer, fc2 has none.
    const std::vector<LayerStats> st = p.sim->stats(1);
    QCOMPARE(st.size(), std::size_t{3});
    QCOMPARE(st[1].layer, std::string("conv2"));
    QCOMPARE(st[1].format, std::string("int4"));
    QCOMPARE(st[2].layer, std::string("fc1"));
    QCOMPARE(st[2].format, std::string("int8"));
}

void TestPlanRuns::uniformPlanIsTodaysQuantization()
{
    // A plan whose entries repeat the default quantizes exactly as no plan.
    Planned a = ptqWithPlan(m_data, {});
    Planned b = ptqWithPlan(m_data, {entry("fc1", "int8", "channel")});
    for (const char* l : {"conv1", "conv2", "fc1", "fc2"}) {
        const Param &wa = weightOf(*a.model, l), &wb = weightOf(*b.model, l);
        QVERIFY(std::memcmp(wa.forwardValue().data(), wb.forwardValue().data(), wa.value.numel() * sizeof(float)) == 0);
    }
}

void TestPlanRuns::ptqPlanExportsQsmWithEachLayersBits()
{
    const std::vector<LayerOverride> layers = {entry("conv1", "int8"), entry("conv2", "int4"), entry("fc1", "int2", "group:8"), entry("fc2", "fp32")};
    Planned p = ptqWithPlan(m_data, layers);
    const ExportedModel m = exportQuantizedModel(*p.model, *p.sim, "seed-cnn", m_data, "ptq", "channel");
    const std::string path = m_dir + "/plan.qsm";
    writeQsm(path, m);
    // The file is the size the plan table promised, up to names, layer records and the header: a
    // symmetric group-wise tensor stores no zero points (version 5; fc1's were 576 KB of zeros).
    PrecisionPlan plan;
    plan.layers = layers;
    const std::uint64_t promised = planSize(*p.model, plan).bytes, stored = fs::file_size(path);
    qInfo("plan %llu bytes, file %llu bytes", static_cast<unsigned long long>(promised), static_cast<unsigned long long>(stored));
    QVERIFY2(stored >= promised && stored - promised < 8192, qPrintable(QString("plan %1, file %2").arg(promised).arg(stored)));
    QCOMPARE(QString::fromStdString(m.precisionText()).endsWith("uint8 activations"), true);
    QVERIFY(std::none_of(m.notes.begin(), m.notes.end(), [](const std::string& n) { return n.find("stored as 0") != std::string::npos; }));
    // fc2's biases far below its int32 step s_in * s_w: the file stores 0 where the simulation adds
    // them, and the export says so (tester 11 D8: the two accuracies differed without a word)
    {
        Planned tiny = ptqWithPlan(m_data, {});
        for (std::size_t i = 0; i < tiny.model->size(); ++i)
            if (auto* fc = dynamic_cast<Linear*>(&tiny.model->layer(i)); fc && fc->name() == "fc2") {
                fc->bias().value.fill(1e-12f);
                if (fc->bias().hasOverride) fc->bias().override.fill(1e-12f);
            }
        const ExportedModel t = exportQuantizedModel(*tiny.model, *tiny.sim, "seed-cnn", m_data, "ptq", "channel");
        const auto note = std::find_if(t.notes.begin(), t.notes.end(), [](const std::string& n) { return n.find("stored as 0") != std::string::npos; });
        QVERIFY(note != t.notes.end());
        QVERIFY2(note->find("(layer 'fc2' 10 of 10)") != std::string::npos, note->c_str());
        // two such layers: one sentence naming both (tester 16: the sentence came once per layer)
        for (std::size_t i = 0; i < tiny.model->size(); ++i)
            if (auto* fc = dynamic_cast<Linear*>(&tiny.model->layer(i)); fc && fc->name() == "fc1") {
                fc->bias().value.fill(1e-12f);
                if (fc->bias().hasOverride) fc->bias().override.fill(1e-12f);
            }
        const ExportedModel two = exportQuantizedModel(*tiny.model, *tiny.sim, "seed-cnn", m_data, "ptq", "channel");
        QCOMPARE(std::count_if(two.notes.begin(), two.notes.end(), [](const std::string& n) { return n.find("stored as 0") != std::string::npos; }),
                 std::ptrdiff_t{1});
        const auto both = std::find_if(two.notes.begin(), two.notes.end(), [](const std::string& n) { return n.find("stored as 0") != std::string::npos; });
        QVERIFY2(both->find("(layers 'fc1' 128 of 128, 'fc2' 10 of 10)") != std::string::npos, both->c_str());
    }
    // a layer with an activation format of its own: the summary line names every stored grid
    // (it said "uint8 activations" whatever the plan gave)
    LayerOverride u4 = entry("fc1", "int8");
    u4.activationFormat = "uint4";
    Planned q = ptqWithPlan(m_data, {u4});
    const std::string mixed = exportQuantizedModel(*q.model, *q.sim, "seed-cnn", m_data, "ptq", "channel").precisionText();
    QVERIFY2(QString::fromStdString(mixed).endsWith("per-layer activations (uint8, uint4)"), mixed.c_str());
    // info's "Stored" table reads each layer back: its format, granularity and the bytes the plan
    // table gave that layer's weights and scales.
    const ModelSummary summary = summarizeFile(path);
    const PlanSize sizes = planSize(*p.model, plan);
    QCOMPARE(summary.storedWeights.size(), sizes.layers.size());
    for (std::size_t i = 0; i < sizes.layers.size(); ++i) {
        const StoredWeights& w = summary.storedWeights[i];
        const LayerSize& l = sizes.layers[i];
        QCOMPARE(w.layer, l.layer);
        QCOMPARE(w.format, l.format);
        QCOMPARE(w.granularity, l.granularity);
        QVERIFY2(w.bytes == l.weightBytes + (l.format == "fp32" ? 0 : l.scaleBytes),
                 qPrintable(QString("%1: stored %2, plan %3 + %4").arg(QString::fromStdString(w.layer)).arg(w.bytes).arg(l.weightBytes).arg(l.scaleBytes)));
    }
    // In ONNX (int8 tensors whatever the bits) the same layers take a byte a weight, with an int8
    // zero point beside each scale: info counted conv2's int4 packed, 12 KB of a 52 KB file.
    {
        const std::vector<LayerOverride> onnxLayers = {entry("conv1", "int8"), entry("conv2", "int4"), entry("fc2", "fp32")};
        Planned o = ptqWithPlan(m_data, onnxLayers);
        const std::string onnxPath = m_dir + "/plan.onnx";
        writeOnnx(onnxPath, exportQuantizedModel(*o.model, *o.sim, "seed-cnn", m_data, "ptq", "channel"));
        const ModelSummary fromOnnx = summarizeFile(onnxPath);
        const auto conv2 = std::find_if(fromOnnx.storedWeights.begin(), fromOnnx.storedWeights.end(),
                                        [](const StoredWeights& w) { return w.layer == "conv2"; });
        QVERIFY(conv2 != fromOnnx.storedWeights.end());
        QCOMPARE(conv2->format, std::string("int4"));
        const std::uint64_t channels = weightOf(*o.model, "conv2").value.dim(0);
        QCOMPARE(conv2->bytes, conv2->weights + 5 * channels);
        std::uint64_t stored = 0;
        for (const StoredWeights& w : fromOnnx.storedWeights) stored += w.bytes;
        QVERIFY2(stored <= fs::file_size(onnxPath), qPrintable(QString("%1 bytes counted in a %2-byte file").arg(stored).arg(fs::file_size(onnxPath))));
    }
    const ExportedModel back = readQsm(path);
    std::map<std::string, const StoredLayer*> byName;
    for (const StoredLayer& l : back.layers) byName[l.name] = &l;
    const StoredTensor& c1 = byName.at("conv1")->tensors[0];
    const StoredTensor& c2 = byName.at("conv2")->tensors[0];
    const StoredTensor& f1 = byName.at("fc1")->tensors[0];
    const StoredTensor& f2 = byName.at("fc2")->tensors[0];
    QCOMPARE(c1.encoding, TensorEncoding::Int);
    QCOMPARE(c1.bits, 8);
    QCOMPARE(c2.bits, 4);
    QCOMPARE(c2.layout, ScaleLayout::Channel);
    QCOMPARE(f1.bits, 2);
    QCOMPARE(f1.layout, ScaleLayout::Group);
    QCOMPARE(f1.groupSize, std::size_t{8});
    QCOMPARE(f1.qmin, -2);
    QCOMPARE(f1.qmax, 1);
    QCOMPARE(f2.encoding, TensorEncoding::Float32);
    QVERIFY(f2.values == weightOf(*p.model, "fc2").value.values()); // the float weights, unchanged
    QVERIFY(!byName.at("fc2")->outputQuant);                          // fc2's output stays float
    QVERIFY(byName.at("fc1")->outputQuant || byName.at("relu3")->outputQuant);

    // The file runs (the integer engine refuses group scales and says so; the reference runs it) and agrees with the simulation it came from.
    std::string runner;
    const std::vector<float> fromFile = referenceOutputs(back, m_data.test, &runner);
    QVERIFY2(QString::fromStdString(runner).contains("fake-quant reference"), runner.c_str());
    std::vector<std::int32_t> simPred;
    evaluate(*p.model, m_data, m_data.test, 100, p.sim.get(), &simPred);
    const double agree = agreement(argmaxOf(fromFile, back.classes), simPred);
    qInfo(".qsm (%s) vs the simulation: %.1f %% of %zu images agree", runner.c_str(), 100 * agree, simPred.size());
    QVERIFY(agree >= kMinSimAgreement);
}

void TestPlanRuns::simulationAddsTheFilesBiases_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("format");
    for (const char* preset : {"seed-cnn", "seed-cnn-bn"})
        for (const char* format : {"int2", "int4", "int8"})
            QTest::newRow(qPrintable(QString("%1 %2").arg(preset).arg(format))) << QString(preset) << QString(format);
}

// The fake-quant simulation, once QuantSim::roundBiases() has run (as the trainer's quantized
// evaluation and the search do), predicts what the exported .qsm's reference runner predicts on
// every image: it adds the int32 biases the file stores (a BatchNorm folded into them for
// seed-cnn-bn), not the float ones. A float bias is off by up to s_in * s_w / 2 per channel, which
// grows as the weights narrow (tester 7: train printed 75.80 % for uint4 and the file gave
// 75.60 %; int2 differed on 25 of 10,000 images). Untrained weights keep the logits close, so
// a bias off by a step flips predictions.
void TestPlanRuns::simulationAddsTheFilesBiases()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    std::vector<LayerOverride> layers;
    for (const char* l : {"conv1", "conv2", "fc1", "fc2"}) layers.push_back(entry(l, format.toStdString()));
    Planned p = ptqWithPlan(m_data, layers, preset.toStdString());
    std::vector<std::int32_t> floatBias, rounded;
    evaluate(*p.model, m_data, m_data.test, 100, p.sim.get(), &floatBias);
    p.sim->roundBiases();
    evaluate(*p.model, m_data, m_data.test, 100, p.sim.get(), &rounded);
    const ExportedModel m = exportQuantizedModel(*p.model, *p.sim, preset.toStdString(), m_data, "ptq", "channel");
    const std::string path = m_dir + "/biases-" + preset.toStdString() + "-" + format.toStdString() + ".qsm";
    writeQsm(path, m);
    const ExportedModel back = readQsm(path);
    const std::vector<std::int32_t> fromFile = argmaxOf(referenceOutputs(back, m_data.test), back.classes);
    qInfo("%s %s: the file's predictions against the simulation's: %.2f %% with float biases, %.2f %% with the file's",
          qPrintable(preset), qPrintable(format), 100 * agreement(fromFile, floatBias), 100 * agreement(fromFile, rounded));
    QCOMPARE(agreement(fromFile, rounded), 1.0);
    // quantizeWeights puts the float biases back (QAT trains them), and roundBiases again gives the same
    p.sim->quantizeWeights(Rounding::Nearest, 0);
    std::vector<std::int32_t> again;
    evaluate(*p.model, m_data, m_data.test, 100, p.sim.get(), &again);
    QVERIFY(again == floatBias);
    p.sim->roundBiases();
    evaluate(*p.model, m_data, m_data.test, 100, p.sim.get(), &again);
    QVERIFY(again == rounded);
}

// A range whose ends are finite but whose width is not (fc1's outputs, or a channel's uint8
// weights, are -3e38 and +3e38: the width 6e38 overflows float32, so the scale would be inf) is a
// NumericError naming the layer and the range, not a file validate() would call malformed (a
// FormatError, exit 3).
void TestPlanRuns::overflowingRangeIsANumericError()
{
    Dataset d;
    d.name = "two-images";
    LabeledImages imgs;
    imgs.channels = 1;
    imgs.height = imgs.width = 4;
    imgs.pixels.assign(16, 0);
    imgs.pixels.resize(32, 255);
    imgs.labels = {0, 1};
    d.train = imgs;
    d.test = imgs;
    d.normalization = Normalization::uniform(0.5f, 0.5f, 1); // the pixels become -1 and +1
    for (int c = 0; c < 10; ++c) d.classNames.push_back("class " + std::to_string(c));
    auto m = std::make_unique<Model>("wide", Shape{1, 4, 4});
    m->add(std::make_unique<Flatten>("flatten"));
    auto fc1 = std::make_unique<Linear>("fc1", 16, 6);
    auto fc2 = std::make_unique<Linear>("fc2", 6, 10);
    Linear* f1 = fc1.get();
    Linear* f2 = fc2.get();
    m->add(std::move(fc1));
    m->add(std::move(fc2));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(5);
    f1->weight().value.fill(0.0f);
    for (std::size_t o = 0; o < 6; ++o) f1->weight().value[o * 16] = 3e38f; // each output: +-3e38, finite
    f1->bias().value.fill(0.0f);
    f2->weight().value.fill(1e-30f); // fc2's outputs stay finite (about 2e9)
    f2->bias().value.fill(0.0f);
    try {
        (void)fixtures::quantize(std::move(m), d, "int8");
        QFAIL("an activation scale of inf was exported");
    } catch (const NumericError& e) {
        const QString what = e.what();
        QVERIFY2(what.contains("the output of 'fc1': the range [-3e+38, 3e+38] is wider than float32 can hold"), qPrintable(what));
    }
    // uint8 weights (affine, per channel): fc1's channels hold -3e38 and +3e38, a range that
    // overflows too (requireFiniteScales, at the end of the export, is the backstop behind both)
    auto w = std::make_unique<Model>("wide-weights", Shape{1, 4, 4});
    w->add(std::make_unique<Flatten>("flatten"));
    auto g1 = std::make_unique<Linear>("fc1", 16, 10);
    Linear* h1 = g1.get();
    w->add(std::move(g1));
    w->add(std::make_unique<LogSoftmax>("log_softmax"));
    w->initParams(5);
    h1->weight().value.fill(1e-30f);
    for (std::size_t o = 0; o < 10; ++o) {
        h1->weight().value[o * 16] = 3e38f;
        h1->weight().value[o * 16 + 1] = -3e38f;
    }
    try {
        (void)fixtures::quantize(std::move(w), d, "uint8");
        QFAIL("a weight scale of inf was exported");
    } catch (const NumericError& e) {
        const QString what = e.what();
        QVERIFY2(what.contains("layer 'fc1' weight (scale slot 0): the range [-3e+38, 3e+38] is wider than float32 can hold"),
                 qPrintable(what));
    }
}

void TestPlanRuns::mixedPlanRunsInOnnxruntime()
{
    if (!haveOrt()) QSKIP("onnxruntime-node is not installed (tests/onnx/install_ort.sh)");
    // Both boundaries: float conv1 -> int4 conv2 (Q), int2 fc1 -> float fc2 (DQ).
    Planned p = ptqWithPlan(m_data, {entry("conv1", "fp32"), entry("conv2", "int4"), entry("fc1", "int2", "tensor"), entry("fc2", "fp32")});
    const ExportedModel m = exportQuantizedModel(*p.model, *p.sim, "seed-cnn", m_data, "ptq", "channel");
    const std::string path = m_dir + "/plan.onnx", images = m_dir + "/test-images-idx3-ubyte";
    writeOnnx(path, m);
    writeIdx(images, {static_cast<std::uint32_t>(m_data.test.size()), 28, 28}, m_data.test.pixels);
    const std::vector<float> ort = ortOutputs(path, images), ref = referenceOutputs(m, m_data.test);
    QCOMPARE(ort.size(), ref.size());
    double sum = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) sum += std::abs(static_cast<double>(ort[i]) - ref[i]);
    const double mean = sum / static_cast<double>(ref.size());
    const double agree = agreement(argmaxOf(ort, m.classes), argmaxOf(ref, m.classes));
    qInfo("mixed plan: onnxruntime vs fake-quant reference: argmax agrees on %.1f %%, mean |diff| %.2e", 100 * agree, mean);
    QVERIFY(agree >= kMinQdqAgreement);
    // The float layers stay float in onnxruntime too: each reads a DequantizeLinear of more than
    // one scale (the activation's one, repeated along an axis), which onnxruntime's
    // WeightBiasQuantization does not rewrite into an int8 layer. Rewritten, conv1's float weights
    // went to per-tensor int8 there: mean |diff| 3.3e-4 (tester 16: 226 of 10,000 predictions
    // differed on a mobilenet-v2 with its first layer kept FP32); now about 1e-7.
    QVERIFY2(mean <= 1e-5, qPrintable(QString("mean |diff| %1").arg(mean)));
    onnx::ModelProto mp;
    {
        std::ifstream f(path, std::ios::binary);
        QVERIFY(mp.ParseFromIstream(&f));
    }
    std::map<std::string, const onnx::TensorProto*> inits;
    std::map<std::string, const onnx::NodeProto*> producer;
    for (const onnx::TensorProto& t : mp.graph().initializer()) inits[t.name()] = &t;
    for (const onnx::NodeProto& n : mp.graph().node()) producer[n.output(0)] = &n;
    int floatLayers = 0;
    for (const onnx::NodeProto& n : mp.graph().node()) {
        if ((n.op_type() != "Conv" && n.op_type() != "Gemm") || !inits.count(n.input(1))) continue;
        ++floatLayers;
        const onnx::NodeProto* dq = producer.at(n.input(0));
        QCOMPARE(dq->op_type(), std::string("DequantizeLinear"));
        const onnx::TensorProto& scale = *inits.at(dq->input(1));
        QVERIFY2(scale.dims_size() == 1 && scale.dims(0) > 1, qPrintable(QString::fromStdString(n.name())));
    }
    QCOMPARE(floatLayers, 2); // conv1 and fc2
    // QuantScope reads the file back to the same model: the engine's predictions are the export's.
    const ExportedModel back = readOnnx(path);
    RunnerOptions io;
    io.kind = RunnerKind::Integer;
    std::vector<std::int32_t> fromFile(m_data.test.size()), fromExport(m_data.test.size());
    ModelRunner(back, io).predict(m_data.test.pixels.data(), m_data.test.size(), fromFile.data(), nullptr);
    ModelRunner(m, io).predict(m_data.test.pixels.data(), m_data.test.size(), fromExport.data(), nullptr);
    QVERIFY(fromFile == fromExport);
}

void TestPlanRuns::engineRunsFloatLayers_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("fp32Layer");
    QTest::newRow("fc2 kept FP32: float logits") << "seed-cnn" << "fc2";
    QTest::newRow("fc1 kept FP32 between int layers") << "seed-cnn" << "fc1";
    QTest::newRow("conv1 kept FP32: the first layer") << "seed-cnn" << "conv1";
    QTest::newRow("conv2 kept FP32 between int layers") << "seed-cnn" << "conv2";
    QTest::newRow("a depthwise conv kept FP32") << "mobilenet-tiny" << "blocks.1.dw";
    QTest::newRow("a shortcut conv kept FP32 into an Add") << "resnet8" << "layer2.shortcut";
}

// The integer engine runs layers kept FP32 between integer ones (DQ in, float product, Q out, or
// float logits at the end) and agrees with the fake-quant reference.
void TestPlanRuns::engineRunsFloatLayers()
{
    QFETCH(QString, preset);
    QFETCH(QString, fp32Layer);
    std::vector<LayerOverride> layers{entry(fp32Layer.toStdString(), "fp32")};
    if (preset == "seed-cnn" && fp32Layer != "conv2") layers.push_back(entry("conv2", "int4"));
    Planned p = ptqWithPlan(m_data, layers, preset.toStdString());
    const ExportedModel m = exportQuantizedModel(*p.model, *p.sim, preset.toStdString(), m_data, "ptq", "channel");
    bool hasFloat = false;
    for (const StoredLayer& l : m.layers)
        if (l.name == fp32Layer.toStdString()) hasFloat = l.tensors.at(0).encoding == TensorEncoding::Float32;
    QVERIFY(hasFloat);
    QCOMPARE(IntEngine::unsupportedReason(m), std::string());
    RunnerOptions io;
    io.kind = RunnerKind::Integer;
    ModelRunner engine(m, io);
    std::vector<float> e(m_data.test.size() * m.classes);
    std::vector<std::int32_t> pred(m_data.test.size());
    engine.predict(m_data.test.pixels.data(), m_data.test.size(), pred.data(), e.data());
    RunnerOptions ro;
    ro.kind = RunnerKind::Reference;
    ModelRunner ref(m, ro);
    std::vector<float> r(e.size());
    ref.predict(m_data.test.pixels.data(), m_data.test.size(), pred.data(), r.data());
    double sum = 0;
    for (std::size_t i = 0; i < e.size(); ++i) sum += std::abs(static_cast<double>(e[i]) - r[i]);
    const double agree = agreement(argmaxOf(e, m.classes), argmaxOf(r, m.classes));
    qInfo("%s: engine vs reference with %s in float: %.1f %% agree, mean |diff| %.2e", qPrintable(preset), qPrintable(fp32Layer),
          100 * agree, sum / e.size());
    QVERIFY(agree >= kMinQdqAgreement);
    QVERIFY(sum / static_cast<double>(e.size()) <= kQdqMeanOutputDiff);
}

// A BatchNorm2d no convolution absorbs (conv, ReLU, BN: stored as a depthwise 1x1 integer
// convolution) cannot read a float activation: with conv1 and conv2 kept FP32, the ReLU's output
// before the BN is float, and the export refuses it. checkExportableModel says so from the built model before any training, with
// the export's own message (tester 17: two epochs trained, then the export refused), and lets the
// same net through when conv1 is quantized.
void TestPlanRuns::floatBatchNormIsFoundBeforeTraining()
{
    const auto net = [] {
        auto m = std::make_unique<Model>("relu-bn", Shape{1, 28, 28});
        m->add(std::make_unique<Conv2d>("conv1", 1, 4, 3, 1, 1));
        m->add(std::make_unique<ReLU>("relu1"));
        m->add(std::make_unique<BatchNorm2d>("bn", 4));
        m->add(std::make_unique<Conv2d>("conv2", 4, 4, 3, 2, 1));
        m->add(std::make_unique<ReLU>("relu2"));
        m->add(std::make_unique<Flatten>("flatten"));
        m->add(std::make_unique<Linear>("fc", 4 * 14 * 14, 10));
        m->initParams(2);
        return m;
    };
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.activationCalibration = "minmax";
    pc.layers = {entry("conv1", "fp32"), entry("conv2", "fp32")}; // only fc integer: no point before it holds a grid
    auto model = net();
    QuantSim sim(*model, pc, findFormat(pc.format));
    QString before;
    try {
        checkExportableModel(*model, sim);
    } catch (const ConfigError& e) {
        before = e.what();
    }
    QVERIFY2(before.contains("BatchNorm2d 'bn' follows no convolution and reads a float activation"), qPrintable(before));
    // ... which is what the export after calibration says
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(m_data, m_data.train, 64, 64);
    sim.setObserving(false);
    QString after;
    try {
        exportQuantizedModel(*model, sim, "relu-bn", m_data, "ptq", "channel");
    } catch (const ConfigError& e) {
        after = e.what();
    }
    QCOMPARE(after, before);

    pc.layers.clear();
    auto quantized = net();
    QuantSim all(*quantized, pc, findFormat(pc.format));
    checkExportableModel(*quantized, all);
    all.quantizeWeights(Rounding::Nearest, 0);
    all.calibrate(m_data, m_data.train, 64, 64);
    all.setObserving(false);
    const ExportedModel m = exportQuantizedModel(*quantized, all, "relu-bn", m_data, "ptq", "channel");
    QVERIFY(std::any_of(m.layers.begin(), m.layers.end(), [](const StoredLayer& l) { return l.name == "bn" && l.groups == 4; }));
}

namespace {
struct StatsLog final : TrainObserver {
    std::vector<LayerStats> last;
    void onLayerStats(const std::vector<LayerStats>& s) override { last = s; }
};
} // namespace

void TestPlanRuns::qatAndProgressiveHonourThePlan_data()
{
    QTest::addColumn<QString>("strategy");
    QTest::addColumn<QString>("schedule");
    QTest::addColumn<QString>("defaultFormat"); // the format of layers the plan does not name
    QTest::newRow("qat") << "qat" << "" << "int8";
    QTest::newRow("progressive, plan in the last phase") << "progressive" << "int8:1,int4:1" << "int4";
}

void TestPlanRuns::qatAndProgressiveHonourThePlan()
{
    QFETCH(QString, strategy);
    QFETCH(QString, schedule);
    QFETCH(QString, defaultFormat);
    TrainConfig cfg;
    cfg.model = "seed-cnn";
    cfg.threads = 2;
    cfg.epochs = 1;
    cfg.precision.strategy = parseStrategy(strategy.toStdString());
    if (!schedule.isEmpty()) {
        cfg.precision.schedule = schedule.toStdString();
        cfg.epochsFromSchedule();
    }
    cfg.precision.layers = {entry("fc1", "int2"), entry("fc2", "fp32")};
    StatsLog log;
    Trainer t(cfg, m_data, &log);
    t.run();
    // The last epoch's statistics: fc1 at int2, the unnamed layers at the default, fc2 absent.
    std::map<std::string, std::string> formats;
    for (const LayerStats& s : log.last) formats[s.layer] = s.format;
    QCOMPARE(formats.size(), std::size_t{3});
    QCOMPARE(formats["fc1"], std::string("int2"));
    QCOMPARE(formats["conv1"], defaultFormat.toStdString());
    QVERIFY(!formats.count("fc2"));
    // The export: each layer at its bits, fc2 in float.
    QuantSim* sim = t.strategy().quantSim();
    QVERIFY(sim);
    t.strategy().prepareExport(m_data, 100);
    const ExportedModel m = exportQuantizedModel(t.model(), *sim, "seed-cnn", m_data, strategy.toStdString(), "channel");
    std::map<std::string, const StoredTensor*> w;
    for (const StoredLayer& l : m.layers)
        if (!l.tensors.empty()) w[l.name] = &l.tensors[0];
    QCOMPARE(w.at("fc1")->bits, 2);
    QCOMPARE(w.at("conv2")->bits, findFormat(defaultFormat.toStdString()).bits);
    QCOMPARE(w.at("fc2")->encoding, TensorEncoding::Float32);
}

QTEST_GUILESS_MAIN(TestPlanRuns)
#include "tst_plan_runs.moc"
