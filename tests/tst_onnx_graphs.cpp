// ONNX export of graph models (resnet8, mobilenet-tiny, padded pools, and a small graph with every
// other kind: AvgPool2d, grouped and bias-free convs, an Add with fan-out, an unfolded BatchNorm):
// FP32 and QDQ files read back as the same model, onnxruntime's outputs match QuantScope's float /
// fake-quant reference (also after short QAT runs, on Fashion-MNIST too), and the reader refuses
// graphs it does not write. The sequential presets are in tst_onnx_export.cpp.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_io.h"
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"
#include "util/rng.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "infer_fixtures.h"

#include <QtTest>

#include "slow_tests.h"

#include <filesystem>

using namespace quantscope;
using fixtures::accuracy, fixtures::agreement, fixtures::argmaxOf, fixtures::compareExported,
    fixtures::enginePredictions, fixtures::haveOrt, fixtures::kScripts, fixtures::nodeModules, fixtures::ortOutputs,
    fixtures::ortPredictions, fixtures::Run, fixtures::run;
namespace fs = std::filesystem;

namespace {

// onnxruntime against QuantScope's own float model (same weights; ONNX has the BatchNorms folded
// and sums in its own order): largest difference of any output (log-probabilities).
constexpr double kFp32MaxOutputDiff = 1e-3;
// onnxruntime's QDQ graph against the fake-quant reference (buildModel + StoredActivationHooks).
// onnxruntime fuses Q/DQ into integer kernels (QLinearConv, ...) whose requantization rounds once
// per activation, where the reference rounds the float result: an activation lands one step away
// now and then. Per-image argmax agreement, and mean |difference| of the outputs.
constexpr double kMinQdqAgreement = 0.99;
constexpr double kMinFashionGraphAgreement = 0.998; // measured 99.99-100 % (QAT, 6000 images)
constexpr double kQdqMeanOutputDiff = 1e-3; // measured about 1e-5 on the rows below

// QuantScope's outputs for `set`: FP32 models on the float model, integer models on the fake-quant
// reference (RunnerKind::Integer: on the integer engine).
std::vector<float> referenceOutputs(const ExportedModel& m, const LabeledImages& set, RunnerKind kind = RunnerKind::Reference)
{
    RunnerOptions o;
    o.kind = kind;
    ModelRunner r(m, o);
    std::vector<float> out(set.size() * m.classes);
    std::vector<std::int32_t> pred(set.size());
    for (std::size_t b = 0; b < set.size(); b += 100) {
        const std::size_t n = std::min<std::size_t>(100, set.size() - b);
        r.predict(set.pixels.data() + b * set.imageBytes(), n, pred.data() + b, out.data() + b * m.classes);
    }
    return out;
}

// BatchNorm statistics away from (1, 0, 0, 1), so a folding or reading mistake shows.
void scrambleBatchNorms(Model& m, std::uint64_t seed)
{
    Rng rng(seed);
    for (std::size_t i = 0; i < m.size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&m.layer(i))) {
            for (float& v : bn->gamma().value.values()) v = rng.uniform(0.5f, 1.5f);
            for (float& v : bn->beta().value.values()) v = rng.uniform(-0.2f, 0.2f);
            for (float& v : bn->runningMean().values()) v = rng.uniform(-0.2f, 0.2f);
            for (float& v : bn->runningVar().values()) v = rng.uniform(0.5f, 2.0f);
        }
}

// A small graph with what the presets lack: a bias-free conv with no BatchNorm, ReLU6, AvgPool2d
// read by two layers (fan-out), a depthwise conv with bias, a grouped 1x1 conv, MaxPool after a
// QDQ conv; with bnAfterAdd an FP32 BatchNorm that reads the Add and so stays a BatchNormalization.
std::unique_ptr<Model> mixedGraph(bool bnAfterAdd)
{
    auto m = std::make_unique<Model>(bnAfterAdd ? "mixed-graph-bn" : "mixed-graph", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv_a", 1, 8, 3, 1, 1, 1, false));
    m->add(std::make_unique<ReLU6>("relu6_a"));
    const std::size_t a = m->add(std::make_unique<AvgPool2d>("avgpool", 2, 2)); // 8 x 14 x 14
    std::size_t b = m->add(std::make_unique<Conv2d>("dw_b", 8, 8, 3, 1, 1, 8, true), {a});
    b = m->add(std::make_unique<BatchNorm2d>("bn_b", 8), {b});
    b = m->add(std::make_unique<ReLU>("relu_b"), {b});
    std::size_t s = m->add(std::make_unique<Add>("add"), {b, a});
    if (bnAfterAdd) s = m->add(std::make_unique<BatchNorm2d>("bn_add", 8), {s});
    m->add(std::make_unique<ReLU>("relu_add"), {s});
    m->add(std::make_unique<Conv2d>("pw_c", 8, 16, 1, 1, 0, 2, true));
    m->add(std::make_unique<MaxPool2d>("maxpool", 2));
    m->add(std::make_unique<GlobalAvgPool2d>("gap"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 16, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(17);
    return m;
}

// Padded pooling as PyTorch models have it: a ResNet stem's MaxPool2d(3, 2, 1) (ONNX pads, -inf)
// and AvgPool2d(3, 1, 1) / AvgPool2d(3, 2, 1) (pads with count_include_pad = 1).
std::unique_ptr<Model> paddedPools()
{
    auto m = std::make_unique<Model>("padded-pools", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1, 1, false));
    m->add(std::make_unique<BatchNorm2d>("bn1", 8));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<MaxPool2d>("maxpool", 3, 2, 1)); // 8 x 14 x 14
    m->add(std::make_unique<Conv2d>("conv2", 8, 16, 3, 1, 1));
    m->add(std::make_unique<ReLU>("relu2"));
    m->add(std::make_unique<AvgPool2d>("avg_same", 3, 1, 1));
    m->add(std::make_unique<AvgPool2d>("avg_down", 3, 2, 1)); // 16 x 7 x 7
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 16 * 7 * 7, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(19);
    return m;
}

std::unique_ptr<Model> graphModel(const std::string& name)
{
    if (name == "tiny-preact") return infer_fixtures::tinyPreact(); // BatchNorms no convolution absorbs
    auto m = name == "padded-pools"                 ? paddedPools()
             : name.rfind("mixed-graph", 0) == 0 ? mixedGraph(name == "mixed-graph-bn")
                                                  : makeModel(name, 1, 28, 28, 10, 5);
    scrambleBatchNorms(*m, 23);
    return m;
}

} // namespace

class TestOnnxGraphs : public QObject, private fixtures::OnnxWorkspace {
    Q_OBJECT
private slots:
    void initTestCase() { openWorkspace("onnx-graphs"); }
    void graphExportsReadBack_data();
    void graphExportsReadBack();
    void graphOnnxruntimeMatchesReference_data();
    void graphOnnxruntimeMatchesReference();
    void trainedGraphModels_data();
    void trainedGraphModels();
    void graphOnnxruntimeOnFashion_data();
    void graphOnnxruntimeOnFashion();
    void readerRejectsForeignGraphs_data();
    void readerRejectsForeignGraphs();
    void poolCodesMatchOnnxruntime_data();
    void poolCodesMatchOnnxruntime();

private:
    ExportedModel graphExport(const QString& model, const QString& format, const QString& granularity, const QString& act);
};

ExportedModel TestOnnxGraphs::graphExport(const QString& model, const QString& format, const QString& granularity, const QString& act)
{
    auto m = graphModel(model.toStdString());
    if (format == "fp32") return exportFloatModel(*m, model.toStdString(), m_data.normalization, m_data.classNames);
    return fixtures::quantize(std::move(m), m_data, format.toStdString(), granularity.toStdString(), act.toStdString()).exported;
}

static void addGraphRows()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::addColumn<QString>("ops");    // operators the file must hold
    QTest::addColumn<QString>("absent"); // and must not
    QTest::newRow("resnet8 fp32") << "resnet8" << "fp32" << "" << "" << "Add,Conv,GlobalAveragePool,Relu" << "BatchNormalization,QuantizeLinear";
    QTest::newRow("resnet8 int8 channel, uint8") << "resnet8" << "int8" << "channel" << "uint8" << "Add,QuantizeLinear,GlobalAveragePool" << "BatchNormalization";
    QTest::newRow("resnet8 int8 tensor, int8") << "resnet8" << "int8" << "tensor" << "int8" << "Add,QuantizeLinear" << "BatchNormalization";
    QTest::newRow("padded pools fp32") << "padded-pools" << "fp32" << "" << "" << "MaxPool,AveragePool" << "Pad,QuantizeLinear";
    QTest::newRow("padded pools int8 channel, uint8") << "padded-pools" << "int8" << "channel" << "uint8" << "MaxPool,AveragePool,QuantizeLinear" << "Pad";
    QTest::newRow("mobilenet-tiny fp32") << "mobilenet-tiny" << "fp32" << "" << "" << "Clip,Conv,GlobalAveragePool" << "BatchNormalization";
    QTest::newRow("mobilenet-tiny int8 channel, uint8") << "mobilenet-tiny" << "int8" << "channel" << "uint8" << "Clip,QuantizeLinear" << "BatchNormalization";
    QTest::newRow("mobilenet-tiny int4 channel, uint8") << "mobilenet-tiny" << "int4" << "channel" << "uint8" << "Clip,QuantizeLinear" << "BatchNormalization";
    QTest::newRow("pre-activation fp32") << "tiny-preact" << "fp32" << "" << "" << "Add,BatchNormalization,Conv" << "QuantizeLinear";
    QTest::newRow("pre-activation int8 channel, uint8 (BatchNorms as depthwise 1x1 convs)")
        << "tiny-preact" << "int8" << "channel" << "uint8" << "Add,Conv,QuantizeLinear" << "BatchNormalization";
    // int4 weights, but the BatchNorms' depthwise convs keep their int8 (+-127): the file reads back
    // (it was refused by its own metadata check, and a second --export file was never written).
    QTest::newRow("pre-activation int4 tensor, uint8 (BatchNorms as int8 depthwise 1x1 convs)")
        << "tiny-preact" << "int4" << "tensor" << "uint8" << "Add,Conv,QuantizeLinear" << "BatchNormalization";
    QTest::newRow("mixed-graph fp32") << "mixed-graph" << "fp32" << "" << "" << "Add,AveragePool,Clip,MaxPool" << "BatchNormalization";
    QTest::newRow("mixed-graph int8 channel, uint8") << "mixed-graph" << "int8" << "channel" << "uint8" << "Add,AveragePool,Clip,QuantizeLinear" << "BatchNormalization";
    QTest::newRow("mixed-graph-bn fp32 (BatchNorm after Add)") << "mixed-graph-bn" << "fp32" << "" << "" << "Add,BatchNormalization" << "QuantizeLinear";
}

void TestOnnxGraphs::graphExportsReadBack_data() { addGraphRows(); }

void TestOnnxGraphs::graphExportsReadBack()
{
    QFETCH(QString, model);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    QFETCH(QString, ops);
    QFETCH(QString, absent);
    const ExportedModel m = graphExport(model, format, granularity, act);
    const std::string path = m_dir + "/graph.onnx";
    writeOnnx(path, m);
    if (fs::exists("/usr/bin/python3")) {
        const Run r = run("/usr/bin/python3", {kScripts + "/check_onnx.py", QString::fromStdString(path)});
        if (!r.out.contains("No module named 'onnx'")) {
            QVERIFY2(r.exitCode == 0, qPrintable(r.out + r.err));
            QVERIFY2(r.out.contains("opset [13]"), qPrintable(r.out));
            const QStringList have = r.out.section(" ops ", 1).trimmed().split(',');
            for (const QString& op : ops.split(',')) QVERIFY2(have.contains(op), qPrintable(op + " missing: " + r.out));
            for (const QString& op : absent.split(',')) QVERIFY2(!have.contains(op), qPrintable(op + " present: " + r.out));
        }
    } else {
        qInfo("/usr/bin/python3 (with python3-onnx) is not installed: onnx.checker not run (libonnx's C++ checker ran in encodeOnnx)");
    }
    // Read back: exactly the model in its ONNX form (inputs, groups, integers, scales, points).
    const ExportedModel back = readOnnx(path);
    compareExported(back, onnxForm(m), 1e-6f); // ONNX stores 1 - momentum
    if (QTest::currentTestFailed()) return;
    if (m.quantized) {
        // QDQ around every Add: both inputs come out of a DequantizeLinear, and the output is
        // quantized again, after the Relu that follows it where one does.
        for (std::size_t i = 0; i < back.layers.size(); ++i) {
            const StoredLayer& l = back.layers[i];
            if (l.kind != LayerKind::Add) continue;
            for (std::size_t a : l.inputs) QVERIFY2(a > 0 && back.layers[a - 1].outputQuant, qPrintable(QString::fromStdString(l.name)));
            const long next = back.soleConsumer(i);
            const bool relu = next >= 0 && back.layers[static_cast<std::size_t>(next)].kind == LayerKind::ReLU;
            QVERIFY(relu ? !l.outputQuant && back.layers[static_cast<std::size_t>(next)].outputQuant : l.outputQuant.has_value());
        }
    }
    // And it computes what the original computes: the same integer model, or the float model with
    // its BatchNorms folded.
    const std::vector<float> a = referenceOutputs(m, m_data.test), b = referenceOutputs(back, m_data.test);
    if (m.quantized) {
        QCOMPARE(b, a);
    } else {
        double worst = 0;
        for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
        QVERIFY2(worst <= kFp32MaxOutputDiff, qPrintable(QString("largest output difference %1").arg(worst)));
    }
}

void TestOnnxGraphs::graphOnnxruntimeMatchesReference_data() { addGraphRows(); }

void TestOnnxGraphs::graphOnnxruntimeMatchesReference()
{
    QFETCH(QString, model);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    QS_SKIP_WITHOUT_ORT();
    const ExportedModel m = graphExport(model, format, granularity, act);
    const std::string path = m_dir + "/graph-ort.onnx";
    writeOnnx(path, m);
    const std::vector<float> ort = ortOutputs(path, m_images), ref = referenceOutputs(m, m_data.test);
    QCOMPARE(ort.size(), ref.size());
    double worst = 0, sum = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double d = std::abs(static_cast<double>(ort[i]) - ref[i]);
        worst = std::max(worst, d);
        sum += d;
    }
    const double mean = sum / static_cast<double>(ref.size());
    const std::vector<std::int32_t> ortPred = argmaxOf(ort, m.classes), refPred = argmaxOf(ref, m.classes);
    const double agree = agreement(ortPred, refPred);
    qInfo("onnxruntime vs %s: argmax agrees on %.1f %% of %zu images, output |diff| mean %.2e, max %.2e",
          m.quantized ? "fake-quant reference" : "float model", 100 * agree, refPred.size(), mean, worst);
    if (m.quantized) {
        QVERIFY(agree >= kMinQdqAgreement);
        QVERIFY(mean <= kQdqMeanOutputDiff);
        // The integer engine, where it runs this graph.
        const std::string why = IntEngine::unsupportedReason(m);
        if (why.empty()) {
            const double e = agreement(ortPred, enginePredictions(m, m_data.test));
            qInfo("onnxruntime vs integer engine: %.1f %% agree", 100 * e);
            QVERIFY(e >= kMinQdqAgreement);
        } else {
            qInfo("integer engine not compared: %s", why.c_str());
        }
    } else {
        QCOMPARE(agree, 1.0);
        QVERIFY(worst <= kFp32MaxOutputDiff);
    }
}

void TestOnnxGraphs::trainedGraphModels_data()
{
    QTest::addColumn<QString>("model");
    QTest::newRow("resnet8") << "resnet8";
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny";
}

void TestOnnxGraphs::trainedGraphModels()
{
    // QAT trained briefly on the synthetic blobs, exported by the CLI's path (exportModel): the
    // file re-measures as the trainer measured, and onnxruntime predicts what the file's
    // fake-quant reference predicts.
    QFETCH(QString, model);
    auto t = fixtures::shortQat(m_data, model.toStdString());
    const std::string path = m_dir + "/trained-" + model.toStdString() + ".onnx";
    const ExportSummary s = exportModel(*t, path);
    const ExportedModel back = readOnnx(path);
    QVERIFY(back.quantized);
    RunnerOptions o;
    o.kind = RunnerKind::Reference;
    ModelRunner ref(back, o);
    const RunnerEval ev = evaluateRunner(ref, m_data.test);
    qInfo("%s QAT on %zu synthetic images: file accuracy %.1f %% (%s), reference %.1f %%", qPrintable(model), m_data.train.size(),
          100 * s.accuracy, s.runner.c_str(), 100 * ev.accuracy);
    if (!haveOrt()) QSKIP("onnxruntime-node is not installed (tests/onnx/install_ort.sh)");
    const std::vector<std::int32_t> ort = ortPredictions(path, m_images);
    QCOMPARE(ort.size(), m_data.test.size());
    const double a = agreement(ort, ev.predictions);
    qInfo("onnxruntime %.1f %%, agreement with the reference %.1f %%", 100 * accuracy(ort, m_data.test), 100 * a);
    QVERIFY(a >= kMinQdqAgreement);
}

void TestOnnxGraphs::graphOnnxruntimeOnFashion_data() { trainedGraphModels_data(); }

void TestOnnxGraphs::graphOnnxruntimeOnFashion()
{
    // A short QAT run of a graph preset on Fashion-MNIST, exported as the CLI exports it:
    // onnxruntime on 2000 test images (QS_FULL_DATA=1: 60k training images, the 10k test set) against QuantScope's run of the same model (the integer
    // engine where it takes the graph, else the fake-quant reference).
    QFETCH(QString, model);
    QS_SKIP_UNDER_SANITIZERS();
    if (!haveOrt()) QSKIP("onnxruntime-node is not installed (tests/onnx/install_ort.sh)");
    if (!fixtures::haveFashion()) QSKIP("Fashion-MNIST is not installed (scripts/setup installs dataset-fashion-mnist)");
    DatasetOptions o;
    o.trainLimit = fixtures::fullData() ? 0 : 2000;
    o.testLimit = fixtures::fullData() ? 0 : 2000;
    const Dataset data = Dataset::load(o);
    auto t = fixtures::shortQat(data, model.toStdString());
    const ExportedModel m = exportedModelOf(*t);
    const std::string path = m_dir + "/fashion-graph.onnx";
    writeOnnx(path, m);
    const std::vector<std::int32_t> ort = ortPredictions(path, data.files.testImages, data.test.size());
    QCOMPARE(ort.size(), data.test.size());
    ModelRunner r(readOnnx(path));
    const std::vector<std::int32_t> ours = evaluateRunner(r, data.test).predictions;
    const double ortAcc = accuracy(ort, data.test), ourAcc = accuracy(ours, data.test), a = agreement(ort, ours);
    qInfo("%s QAT int8 (%s): onnxruntime %.2f %%, QuantScope %.2f %% (%s), agreement %.2f %% of %zu test images", qPrintable(model),
          fixtures::fullData() ? "60000 images" : "2000 images", 100 * ortAcc, 100 * ourAcc, r.description().c_str(), 100 * a,
          ort.size());
    QVERIFY(a >= kMinFashionGraphAgreement); // bounds the top-1 gap by 100 * (1 - a) points
}

void TestOnnxGraphs::readerRejectsForeignGraphs_data()
{
    QTest::addColumn<QString>("mutation");
    QTest::addColumn<QString>("expected"); // in the FormatError, after the file name
    QTest::newRow("unknown operator") << "unknown-op" << "Shrink 'relu_b': operator Shrink is not one QuantScope exports";
    QTest::newRow("input no node makes") << "dangling-input" << "Add 'add': reads 'nonexistent'";
    QTest::newRow("Clip whose max is below its min") << "clip-bounds" << "Clip 'relu6_a': min_val 0 is not below max_val -1";
    QTest::newRow("output not the last layer's") << "output-not-last" << "is not the value of its last layer";
    QTest::newRow("group that does not fit the weight") << "bad-group" << "Conv2d 'dw_b'";
}

void TestOnnxGraphs::readerRejectsForeignGraphs()
{
    QFETCH(QString, mutation);
    QFETCH(QString, expected);
    if (!fs::exists("/usr/bin/python3")) QSKIP("/usr/bin/python3 (with python3-onnx) is not installed");
    const std::string good = m_dir + "/good.onnx", bad = m_dir + "/bad-" + mutation.toStdString() + ".onnx";
    writeOnnx(good, graphExport("mixed-graph", "int8", "channel", "uint8"));
    const Run r = run("/usr/bin/python3", {kScripts + "/mutate_onnx.py", QString::fromStdString(good), QString::fromStdString(bad), mutation});
    if (r.err.contains("No module named 'onnx'")) QSKIP("python3-onnx is not installed");
    QVERIFY2(r.exitCode == 0, qPrintable(r.out + r.err));
    try {
        readOnnx(bad);
        QFAIL("readOnnx accepted a damaged graph");
    } catch (const FormatError& e) {
        const QString msg = e.what();
        QVERIFY2(msg.startsWith(QString::fromStdString(bad) + ": "), qPrintable(msg));
        QVERIFY2(msg.contains(expected), qPrintable(msg));
    }
}

QTEST_GUILESS_MAIN(TestOnnxGraphs)
#include "tst_onnx_graphs.moc"

// onnxruntime runs an exported AveragePool between Q/DQ by its own arithmetic (a float mean,
// rounded), the integer engine by summing the window's codes and requantizing with a fixed-point
// 1/n, ties to even (docs/FORMAT.md). Where the pool's input and output share a grid (a saturating
// ReLU6 before it), a mean of an even count of codes can fall exactly halfway between two codes,
// and there onnxruntime's float rounding, not a rule, picks the side. Everywhere else the codes are
// the same. Model: conv (weights x 8) -> ReLU6 -> pool -> flatten, its pooled values as outputs.
void TestOnnxGraphs::poolCodesMatchOnnxruntime_data()
{
    QTest::addColumn<int>("window");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::newRow("AvgPool2d(2): 4 codes, ties possible") << 2 << 2 << 0;
    QTest::newRow("AvgPool2d(3): 9 codes, no ties") << 3 << 3 << 0;
    QTest::newRow("AvgPool2d(3, 1, 1): 9 codes (pads count), no ties") << 3 << 1 << 1;
    QTest::newRow("global: 576 codes") << 0 << 0 << 0;
}

void TestOnnxGraphs::poolCodesMatchOnnxruntime()
{
    QFETCH(int, window);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QS_SKIP_WITHOUT_ORT();
    auto m = std::make_unique<Model>("pool-codes", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("conv", 1, 8, 5, 1, 0, 1, true));
    m->add(std::make_unique<ReLU6>("relu6"));
    if (window) m->add(std::make_unique<AvgPool2d>("pool", window, stride, pad));
    else m->add(std::make_unique<GlobalAvgPool2d>("pool"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->initParams(29);
    for (float& w : m->layer(0).params()[0]->value.values()) w *= 8.0f; // ReLU6 saturates: its grid is [0, 6]
    Dataset data = m_data; // one "class" per pooled value
    const std::size_t values = m->outputShape(1)[1];
    data.classNames.resize(values);
    for (std::size_t i = 0; i < values; ++i) data.classNames[i] = "v" + std::to_string(i);
    const ExportedModel e = fixtures::quantize(std::move(m), data, "int8", "channel", "uint8").exported;
    const std::string path = m_dir + "/pool-codes.onnx";
    writeOnnx(path, e);
    const std::vector<float> ort = ortOutputs(path, m_images);
    const std::vector<float> eng = referenceOutputs(e, m_data.test, RunnerKind::Integer);
    QCOMPARE(ort.size(), eng.size());
    const float step = 6.0f / 255.0f; // the pooled output's scale: ReLU6's range over uint8
    std::size_t differ = 0, oneStep = 0;
    for (std::size_t i = 0; i < eng.size(); ++i) {
        if (ort[i] == eng[i]) continue;
        ++differ;
        oneStep += std::abs(std::abs(ort[i] - eng[i]) - step) < 1e-3f * step;
    }
    qInfo("%zu of %zu pooled values differ (%.2f %%), %zu of them by one step", differ, eng.size(),
          100.0 * static_cast<double>(differ) / static_cast<double>(eng.size()), oneStep);
    QCOMPARE(oneStep, differ); // never more than one step: a tie, rounded the other way
    const bool oddWindow = window % 2 == 1;
    if (oddWindow) QCOMPARE(differ, std::size_t{0}); // no mean of 9 codes is halfway between two
    else QVERIFY(differ * 50 <= eng.size()); // measured 1.0 % for 2x2 (about half of its ties)
}
