// ONNX export of whole models: files pass onnx.checker (Debian's python3-onnx, full check), read
// back into the same model (onnxForm: Dropout left out, FP32 BatchNorm folded), refuse what opset-13
// QDQ cannot express, and run in onnxruntime (npm onnxruntime-node) with the engine's predictions:
// on Fashion-MNIST after a short QAT run the top-1 of onnxruntime and of the engine agree within 0.1
// points on the 10k test set. Models from PyTorch re-quantized here and colour models predict in
// onnxruntime what QuantScope predicts. Graph models are in tst_onnx_graphs.cpp.
#include "data/idx.h"
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"

#include <QtTest>

#include "slow_tests.h"

#include <filesystem>

using namespace quantscope;
using fixtures::accuracy, fixtures::agreement, fixtures::compareExported, fixtures::enginePredictions,
    fixtures::haveOrt, fixtures::kScripts, fixtures::nodeModules, fixtures::ortPredictions, fixtures::Run,
    fixtures::run;
namespace fs = std::filesystem;

namespace {

constexpr double kMaxTop1GapPoints = 0.1;     // issue 5: onnxruntime vs engine top-1, 10k images
constexpr double kMinOrtAgreement = 0.995;    // per-image argmax agreement onnxruntime vs engine

} // namespace

class TestOnnxExport : public QObject, private fixtures::OnnxWorkspace {
    Q_OBJECT
private slots:
    void initTestCase() { openWorkspace("onnx-export"); }
    void checkerAcceptsExports_data();
    void checkerAcceptsExports();
    void refusesWhatQdqCannotExpress_data();
    void refusesWhatQdqCannotExpress();
    void onnxruntimeRunsSyntheticModels_data();
    void onnxruntimeRunsSyntheticModels();
    void onnxruntimeMatchesEngineOnFashion();
    void importedPyTorchModelsRequantize_data();
    void importedPyTorchModelsRequantize();
    void colourModelsInOnnxruntime_data();
    void colourModelsInOnnxruntime();

private:
    ExportedModel modelFor(const QString& preset, const QString& format, const QString& granularity, const QString& act);
};

ExportedModel TestOnnxExport::modelFor(const QString& preset, const QString& format, const QString& granularity, const QString& act)
{
    if (preset == "bias-free-mlp") { // fixtures::biasFreeMlp: fc2 = nn.Linear(32, 10, bias=False)
        if (format == "fp32") return exportFloatModel(*fixtures::biasFreeMlp(), "bias-free-mlp", m_data.normalization, m_data.classNames);
        return fixtures::quantize(fixtures::biasFreeMlp(), m_data, format.toStdString(), granularity.toStdString(), act.toStdString()).exported;
    }
    if (format == "fp32") {
        auto m = makeModel(preset.toStdString(), 1, 28, 28, 10, 4);
        return exportFloatModel(*m, preset.toStdString(), m_data.normalization, m_data.classNames);
    }
    return fixtures::quantizePreset(preset.toStdString(), m_data, format.toStdString(), granularity.toStdString(), act.toStdString()).exported;
}

static void addModelRows()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn int8 per channel, uint8") << "seed-cnn" << "int8" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn int8 per tensor, int8 (BN folded)") << "seed-cnn-bn" << "int8" << "tensor" << "int8";
    QTest::newRow("lenet5 int4 per channel (padding)") << "lenet5" << "int4" << "channel" << "uint8";
    QTest::newRow("mlp fp32") << "mlp" << "fp32" << "" << "";
    QTest::newRow("seed-cnn-bn fp32 (BN folded)") << "seed-cnn-bn" << "fp32" << "" << "";
    QTest::newRow("bias-free mlp fp32 (Gemm without C)") << "bias-free-mlp" << "fp32" << "" << "";
    QTest::newRow("bias-free mlp int8 per channel (QDQ Gemm without C)") << "bias-free-mlp" << "int8" << "channel" << "uint8";
}

void TestOnnxExport::checkerAcceptsExports_data() { addModelRows(); }

void TestOnnxExport::checkerAcceptsExports()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    if (!fs::exists("/usr/bin/python3")) QSKIP("/usr/bin/python3 (with python3-onnx) is not installed; scripts/setup installs it");
    const ExportedModel m = modelFor(preset, format, granularity, act);
    const std::string path = m_dir + "/checked.onnx";
    writeOnnx(path, m);
    const Run r = run("/usr/bin/python3", {kScripts + "/check_onnx.py", QString::fromStdString(path)});
    if (r.out.contains("No module named 'onnx'")) QSKIP("python3-onnx is not installed");
    QVERIFY2(r.exitCode == 0, qPrintable(r.out + r.err));
    QVERIFY2(r.out.contains("opset [13]"), qPrintable(r.out));
    // the input's doc string says what to feed it: channel order, size, scale (tester 11)
    const QString planes = m.channels == 3 ? "R, G, B planes" : "one grey plane";
    QVERIFY2(r.out.contains("input input: " + planes) &&
                 r.out.contains(QString(" of %1x%2 images").arg(m.height).arg(m.width)) && r.out.contains("scaled to [0, 1]"),
             qPrintable(r.out));
    if (format != "fp32") {
        QVERIFY(r.out.contains("QuantizeLinear") && r.out.contains("DequantizeLinear"));
        QVERIFY(!r.out.contains("BatchNormalization"));
    }
    // It reads back as the same model (Dropout left out, FP32 BatchNorm folded), and predicts the same.
    const ExportedModel back = readOnnx(path);
    compareExported(back, onnxForm(m), 1e-6f); // ONNX stores 1 - momentum
    if (QTest::currentTestFailed()) return;
    if (preset == "bias-free-mlp") { // fc2 is a Gemm of two inputs and reads back without a bias
        QCOMPARE(fixtures::storedLayer(back, "fc2")->tensors.size(), std::size_t{1});
        QCOMPARE(back.numParams(), fixtures::kBiasFreeMlpParams);
    }
    if (m.quantized) QCOMPARE(enginePredictions(back, m_data.test), enginePredictions(m, m_data.test));
}

void TestOnnxExport::refusesWhatQdqCannotExpress_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::addColumn<QString>("reason");
    QTest::newRow("group-wise scales") << "int4" << "group:32" << "uint8" << "group-wise";
    QTest::newRow("unsigned weights") << "uint8" << "channel" << "uint8" << "signed weights";
    QTest::newRow("4-bit activations") << "int8" << "channel" << "uint4" << "saturates";
}

void TestOnnxExport::refusesWhatQdqCannotExpress()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    QFETCH(QString, reason);
    const ExportedModel m = modelFor("mlp", format, granularity, act);
    try {
        encodeOnnx(m);
        QFAIL("encodeOnnx accepted a model opset-13 QDQ cannot express");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains(reason), e.what());
    }
    // The same model still saves as .qsm.
    QVERIFY(!encodeQsm(m).empty());
}

void TestOnnxExport::onnxruntimeRunsSyntheticModels_data() { addModelRows(); }

void TestOnnxExport::onnxruntimeRunsSyntheticModels()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    QS_SKIP_WITHOUT_ORT();
    const ExportedModel m = modelFor(preset, format, granularity, act);
    const std::string path = m_dir + "/ort.onnx";
    writeOnnx(path, m);
    const std::vector<std::int32_t> ort = ortPredictions(path, m_images);
    QCOMPARE(ort.size(), m_data.test.size());
    const std::vector<std::int32_t> ours = enginePredictions(m, m_data.test);
    const double a = agreement(ort, ours);
    qInfo("onnxruntime vs QuantScope: %.1f %% of %zu predictions agree", 100 * a, ort.size());
    QVERIFY(a >= kMinOrtAgreement);
}

void TestOnnxExport::onnxruntimeMatchesEngineOnFashion()
{
    QS_SKIP_UNDER_SANITIZERS();
    QS_SKIP_WITHOUT_ORT();
    if (!fixtures::haveFashion()) QSKIP("Fashion-MNIST is not installed (scripts/setup installs dataset-fashion-mnist)");
    DatasetOptions o;
    o.trainLimit = fixtures::fullData() ? 0 : 2000;
    const Dataset data = Dataset::load(o);
    auto t = fixtures::shortQat(data, "seed-cnn", "channel", "uint8", fixtures::fullData() ? 2 : 1);
    const std::string onnxPath = m_dir + "/qat.onnx", qsmPath = m_dir + "/qat.qsm";
    const ExportSummary so = exportModel(*t, onnxPath);
    const ExportSummary sq = exportModel(*t, qsmPath);
    const std::vector<std::int32_t> ort = ortPredictions(onnxPath, data.files.testImages);
    QCOMPARE(ort.size(), data.test.size());
    const std::vector<std::int32_t> engine = enginePredictions(readOnnx(onnxPath), data.test);
    const std::vector<std::int32_t> engineQsm = enginePredictions(readQsm(qsmPath), data.test);
    const double ortAcc = accuracy(ort, data.test), engAcc = accuracy(engine, data.test);
    qInfo("QAT int8 channel (%s): onnxruntime %.2f %%, engine %.2f %% (.onnx) / %.2f %% (.qsm), "
          "agreement %.2f %%; export summaries: %.2f %% / %.2f %%",
          fixtures::fullData() ? "60000 images, 2 epochs" : "2000 images, 1 epoch", 100 * ortAcc, 100 * engAcc, 100 * accuracy(engineQsm, data.test), 100 * agreement(ort, engine), 100 * so.accuracy,
          100 * sq.accuracy);
    QVERIFY(std::abs(ortAcc - engAcc) * 100.0 <= kMaxTop1GapPoints);
    QVERIFY(agreement(ort, engine) >= kMinOrtAgreement);
    QCOMPARE(engineQsm, engine); // the two files hold the same integer model
    QCOMPARE(so.accuracy, engAcc);
}

void TestOnnxExport::importedPyTorchModelsRequantize_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("pytorch_ref resnet8") << "ref_resnet8.onnx";
    QTest::newRow("pytorch_ref mobilenet-tiny") << "ref_mobilenet-tiny.onnx";
    QTest::newRow("residual block, opset 11") << "residual_op11_nofold.onnx";
    // The same block with a Softmax head (a PyTorch forward that returns probabilities): the
    // engine and onnxruntime output the same probabilities.
    QTest::newRow("residual block, Softmax head") << "residual_op11_nofold.onnx+softmax";
}

// A model written by torch.onnx.export (tests/onnx_import) is imported, quantized (PTQ int8
// per-channel, calibrated here), exported again as QDQ, and run in onnxruntime: it predicts what
// QuantScope's integer engine (or fake-quant reference) predicts for the same file.
void TestOnnxExport::importedPyTorchModelsRequantize()
{
    QFETCH(QString, file);
    const bool softmaxHead = file.endsWith("+softmax");
    if (softmaxHead) file.chop(8);
    const std::string path = std::string(QS_TEST_DATA) + "/../onnx_import/" + file.toStdString();
    ExportedModel imported = readOnnxModel(path);
    if (softmaxHead) {
        StoredLayer head;
        head.kind = LayerKind::Softmax;
        head.name = "softmax";
        head.inputs = {imported.layers.size()};
        imported.layers.push_back(head);
    }
    QVERIFY(!imported.normalizationKnown);
    QCOMPARE(imported.channels, std::size_t{1});
    // Data shaped as the model wants it.
    Dataset data = fixtures::syntheticDataset(160, 300, imported.height, imported.width, 13);
    QVERIFY(imported.classes >= 4); // the blobs' labels are 0..3
    data.classNames.resize(imported.classes, "extra");
    imported.normalization = data.normalization;
    const ExportedModel q = fixtures::quantize(buildModel(imported), data, "int8").exported;
    QVERIFY(q.quantized);
    const std::string out = m_dir + "/requantized-" + file.toStdString();
    writeOnnx(out, q);
    QVERIFY(readOnnxModel(out).quantized);
    if (!haveOrt()) QSKIP("onnxruntime-node is not installed (tests/onnx/install_ort.sh)");
    const std::string images = m_dir + "/requant-images-idx3-ubyte";
    writeIdx(images, {static_cast<std::uint32_t>(data.test.size()), static_cast<std::uint32_t>(data.test.height),
                      static_cast<std::uint32_t>(data.test.width)},
             data.test.pixels);
    const std::vector<std::int32_t> ort = ortPredictions(out, images);
    QCOMPARE(ort.size(), data.test.size());
    const double a = agreement(ort, enginePredictions(q, data.test));
    qInfo("%s re-quantized: onnxruntime vs QuantScope %.1f %% agree", qPrintable(file), 100 * a);
    QVERIFY(a >= kMinOrtAgreement);
    if (!softmaxHead) return;
    const std::vector<float> probs = fixtures::ortOutputs(out, images);
    IntEngine engine(q);
    std::vector<float> mine(data.test.size() * q.classes);
    engine.run(data.test.pixels.data(), data.test.size(), mine.data(), nullptr);
    QCOMPARE(probs.size(), mine.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < data.test.size(); ++i) {
        double sum = 0.0;
        for (std::size_t j = 0; j < q.classes; ++j) {
            sum += mine[i * q.classes + j];
            worst = std::max(worst, static_cast<double>(std::fabs(mine[i * q.classes + j] - probs[i * q.classes + j])));
        }
        QVERIFY2(std::fabs(sum - 1.0) < 1e-5, qPrintable(QString("image %1: probabilities sum to %2").arg(i).arg(sum)));
    }
    qInfo("Softmax head: largest |engine - onnxruntime| probability %.3g", worst);
    QVERIFY(worst < 1e-4); // the same dequantized scores, through the same softmax
}

void TestOnnxExport::colourModelsInOnnxruntime_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("resnet8 fp32, 3 channels") << "fp32";
    QTest::newRow("resnet8 int8 channel, 3 channels") << "int8";
}

// Colour input: the per-channel normalisation becomes [1, 3, 1, 1] Sub/Div constants in front of
// the graph, reads back as it was, and onnxruntime on [N, 3, H, W] pixels predicts what
// QuantScope predicts.
void TestOnnxExport::colourModelsInOnnxruntime()
{
    QFETCH(QString, format);
    const Dataset colour = fixtures::syntheticDataset(128, 200, 16, 16, 9, 3);
    auto model = makeModel("resnet8", 3, 16, 16, 10, 4);
    const ExportedModel m = format == "fp32" ? exportFloatModel(*model, "resnet8", colour.normalization, colour.classNames)
                                             : fixtures::quantize(std::move(model), colour, "int8").exported;
    const std::string path = m_dir + "/colour-" + format.toStdString() + ".onnx";
    writeOnnx(path, m);
    const ExportedModel back = readOnnx(path);
    QCOMPARE(back.channels, std::size_t{3});
    QVERIFY(back.normalization == colour.normalization);
    if (!haveOrt()) QSKIP("onnxruntime-node is not installed (tests/onnx/install_ort.sh)");
    const std::string images = m_dir + "/colour-images-idx4-ubyte";
    writeIdx(images, {static_cast<std::uint32_t>(colour.test.size()), 3, 16, 16}, colour.test.pixels);
    const std::vector<std::int32_t> ort = ortPredictions(path, images);
    QCOMPARE(ort.size(), colour.test.size());
    const std::vector<std::int32_t> ours = enginePredictions(m, colour.test); // the integer engine, or the float model
    const double a = agreement(ort, ours);
    qInfo("onnxruntime vs QuantScope on colour input: %.1f %% agree", 100 * a);
    QVERIFY(a >= kMinOrtAgreement);
}

QTEST_GUILESS_MAIN(TestOnnxExport)
#include "tst_onnx_export.moc"
