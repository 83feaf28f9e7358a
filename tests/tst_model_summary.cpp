// The model summary (core/analysis/model_summary.h): parameter totals, per-image MACs and
// output shapes that follow the graph, and the FP32 / int8 sizes by the integer export's rules.
#include "analysis/model_summary.h"
#include "io/exported_model.h"
#include "io/qsm.h"
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include <QtTest>

#include <filesystem>
#include <fstream>

using namespace quantscope;

namespace {

const LayerSummary& row(const ModelSummary& s, const std::string& name)
{
    for (const LayerSummary& l : s.layers)
        if (l.name == name) return l;
    throw std::runtime_error("no layer " + name);
}

// The layers of a ModelSummary must add up to its totals.
void checkTotals(const ModelSummary& s)
{
    std::uint64_t p = 0, m = 0, f = 0, q = 0;
    for (const LayerSummary& l : s.layers) {
        p += l.params;
        m += l.macs;
        f += l.fp32Bytes;
        q += l.int8Bytes;
    }
    QCOMPARE(s.params, p);
    QCOMPARE(s.macs, m);
    QCOMPARE(s.fp32Bytes, f);
    QCOMPARE(s.int8Bytes, q);
}

} // namespace

class TestModelSummary : public QObject {
    Q_OBJECT

private slots:
    void paramsMatchModel_data();
    void paramsMatchModel();
    void macsOfConvDepthwiseLinear();
    void resnet8ShapesFollowGraph();
    void sizesFollowExportRules();
    void int8EstimateMatchesQuantizedFile();
    void storedModelsAndFiles();
    void pytorchExportsWithFoldedBatchNorm();
    void badInput();
};

void TestModelSummary::paramsMatchModel_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<int>("channels");
    QTest::addColumn<int>("size");
    QTest::addColumn<qulonglong>("specParams"); // 0: no published count to check against
    // resnet8 and mobilenet-tiny: the counts ../shared/reference/common.py prints for 1x28x28, 10 classes.
    QTest::newRow("seed-cnn") << "seed-cnn" << 1 << 28 << 0ULL;
    QTest::newRow("seed-cnn-bn") << "seed-cnn-bn" << 1 << 28 << 0ULL;
    QTest::newRow("lenet5") << "lenet5" << 1 << 28 << 0ULL;
    QTest::newRow("mlp") << "mlp" << 1 << 28 << 0ULL;
    QTest::newRow("resnet8") << "resnet8" << 1 << 28 << 77754ULL;
    QTest::newRow("mobilenet-tiny") << "mobilenet-tiny" << 1 << 28 << 31946ULL;
    QTest::newRow("resnet8 3x32x32") << "resnet8" << 3 << 32 << 0ULL;
}

void TestModelSummary::paramsMatchModel()
{
    QFETCH(QString, preset);
    QFETCH(int, channels);
    QFETCH(int, size);
    QFETCH(qulonglong, specParams);
    const std::string name = preset.toStdString();
    const ModelSummary s = summarizePreset(name, channels, size, size, 10);
    auto model = makeModel(name, channels, size, size, 10);
    QCOMPARE(s.params, static_cast<std::uint64_t>(model->numParams()));
    if (specParams) QCOMPARE(s.params, static_cast<std::uint64_t>(specParams));
    QCOMPARE(s.layers.size(), model->size());
    QCOMPARE(s.inputShape, (Shape{std::size_t(channels), std::size_t(size), std::size_t(size)}));
    QCOMPARE(s.classes, std::size_t{10});
    QCOMPARE(s.layers.back().outputShape, Shape{10});
    checkTotals(s);
}

// MACs counted by hand from the layer shapes, not by the formula under test.
void TestModelSummary::macsOfConvDepthwiseLinear()
{
    Model m("hand", {3, 10, 10});
    m.add(std::make_unique<Conv2d>("conv", 3, 8, 3, 1, 1));         // 3x10x10 -> 8x10x10
    m.add(std::make_unique<ReLU>("relu"));
    m.add(std::make_unique<Conv2d>("dw", 8, 8, 3, 2, 1, 8, false));  // depthwise, stride 2: 8x5x5
    m.add(std::make_unique<Conv2d>("pw", 8, 4, 1, 1, 0, 1, false));  // pointwise: 4x5x5
    m.add(std::make_unique<MaxPool2d>("pool", 2, 2));                // 4x2x2
    m.add(std::make_unique<Flatten>("flatten"));                     // 16
    m.add(std::make_unique<Linear>("fc", 16, 7));
    m.initParams(1);
    const ModelSummary s = summarizeModel(m);

    // conv: every output (100 positions x 8 channels) sums 3 channels x 9 taps.
    QCOMPARE(row(s, "conv").macs, std::uint64_t{100 * 8 * 3 * 9});
    // depthwise: each of the 25 x 8 outputs reads one channel's 9 taps.
    QCOMPARE(row(s, "dw").macs, std::uint64_t{25 * 8 * 9});
    QCOMPARE(row(s, "dw").outputShape, (Shape{8, 5, 5}));
    QCOMPARE(row(s, "dw").params, std::uint64_t{8 * 9});
    // pointwise: 25 positions x 4 outputs x 8 inputs.
    QCOMPARE(row(s, "pw").macs, std::uint64_t{25 * 4 * 8});
    QCOMPARE(row(s, "fc").macs, std::uint64_t{16 * 7});
    QCOMPARE(row(s, "fc").params, std::uint64_t{16 * 7 + 7});
    QCOMPARE(row(s, "pool").outputShape, (Shape{4, 2, 2}));
    QCOMPARE(row(s, "flatten").outputShape, Shape{16});
    for (const char* free : {"relu", "pool", "flatten"}) QCOMPARE(row(s, free).macs, std::uint64_t{0});
    // Elementwise ops are counted apart: ReLU one per element, max pooling 2x2 per output.
    QCOMPARE(row(s, "relu").elementwiseOps, std::uint64_t{8 * 10 * 10});
    QCOMPARE(row(s, "pool").elementwiseOps, std::uint64_t{16 * 4});
    QCOMPARE(s.macs, std::uint64_t{21600 + 25 * 8 * 9 + 25 * 4 * 8 + 16 * 7});
    checkTotals(s);
}

// resnet8: the stride-2 blocks halve the maps, the shortcut reads the block input, and the
// residual Add reads two layers.
void TestModelSummary::resnet8ShapesFollowGraph()
{
    for (std::size_t hw : {28, 32}) {
        const ModelSummary s = summarizePreset("resnet8", 3, hw, hw, 10);
        const std::size_t h2 = (hw + 1) / 2, h3 = (h2 + 1) / 2;
        QCOMPARE(row(s, "layer1.add").outputShape, (Shape{16, hw, hw}));
        QCOMPARE(row(s, "layer2.conv1").outputShape, (Shape{32, h2, h2}));
        QCOMPARE(row(s, "layer2.shortcut").outputShape, (Shape{32, h2, h2}));
        QCOMPARE(row(s, "layer3.add").outputShape, (Shape{64, h3, h3}));
        QCOMPARE(row(s, "pool").outputShape, (Shape{64, 1, 1}));
        QCOMPARE(row(s, "layer2.shortcut").inputs, std::vector<std::string>{"layer1.relu2"});
        QCOMPARE(row(s, "layer2.add").inputs.size(), std::size_t{2});
        QCOMPARE(row(s, "conv1").inputs, std::vector<std::string>{"input"});
        // A stride-2 3x3 conv: (h2 x h2) outputs x 32 channels x 16 inputs x 9 taps.
        QCOMPARE(row(s, "layer2.conv1").macs, std::uint64_t{h2 * h2 * 32 * 16 * 9});
    }
}

// FP32: parameters and BatchNorm running statistics at 4 bytes. Int8: a BatchNorm that follows a
// conv read by nothing else folds (the conv gains an int32 bias); one read twice stays float32.
void TestModelSummary::sizesFollowExportRules()
{
    Model m("sizes", {1, 6, 6});
    m.add(std::make_unique<Conv2d>("conv", 1, 4, 3, 1, 1, 1, false)); // 36 weights, no bias
    m.add(std::make_unique<BatchNorm2d>("bn", 4));                    // folds into conv
    const std::size_t relu = m.add(std::make_unique<ReLU>("relu"));
    const std::size_t conv2 = m.add(std::make_unique<Conv2d>("conv2", 4, 4, 3, 1, 1)); // 144 + 4 bias
    const std::size_t bn2 = m.add(std::make_unique<BatchNorm2d>("bn2", 4), {conv2}); // conv2 is also read by the Add
    m.add(std::make_unique<Add>("add"), {bn2, conv2});
    m.add(std::make_unique<GlobalAvgPool2d>("pool"));
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc", 4, 3)); // 12 + 3
    (void)relu;
    m.initParams(1);
    const ModelSummary s = summarizeModel(m);

    QCOMPARE(row(s, "bn").foldedInto, std::string("conv"));
    QVERIFY(row(s, "bn2").foldedInto.empty());
    QCOMPARE(row(s, "bn").buffers, std::uint64_t{8});
    // FP32: every float the model stores.
    const std::uint64_t params = 36 + 8 + 148 + 8 + 15, buffers = 8 + 8;
    QCOMPARE(s.params, params);
    QCOMPARE(s.fp32Bytes, 4 * (params + buffers));
    // Int8: weights 1 byte, int32 biases (conv gains one from bn), float32 scale per output channel,
    // bn2 (not foldable) as float32 gamma, beta, mean, var.
    const std::uint64_t conv = 36 + 4 * 4 + 4 * 4, conv2b = 144 + 4 * 4 + 4 * 4, bn2f = 4 * 16, fc = 12 + 3 * 4 + 3 * 4;
    QCOMPARE(row(s, "conv").int8Bytes, conv);
    QCOMPARE(row(s, "bn").int8Bytes, std::uint64_t{0});
    QCOMPARE(row(s, "bn2").int8Bytes, bn2f);
    QCOMPARE(s.int8Bytes, conv + conv2b + bn2f + fc);
    checkTotals(s);
}

// The int8 estimate of a preset equals that of its quantized export (BatchNorm already folded
// there), and the actual .qsm is that plus the container's overhead: names, headers and, per
// output channel, weight zero points and the bias's own scales and zero points (12 more bytes a
// channel, which depthwise-heavy mobilenet-tiny feels most: about +27%).
void TestModelSummary::int8EstimateMatchesQuantizedFile()
{
    const Dataset data = fixtures::syntheticDataset(64, 16);
    for (const char* preset : {"seed-cnn-bn", "resnet8", "mobilenet-tiny"}) {
        auto q = fixtures::quantizePreset(preset, data, "int8", "channel", "uint8");
        const ModelSummary fp = summarizeModel(*makeModel(preset, 1, 28, 28, 10, 3));
        const ModelSummary qs = summarizeExported(q.exported, "memory");
        QVERIFY(qs.quantized);
        QVERIFY(qs.precision.find("int8") != std::string::npos);
        QCOMPARE(qs.int8Bytes, fp.int8Bytes);
        QCOMPARE(qs.macs, fp.macs);
        const std::uint64_t file = encodeQsm(q.exported).size();
        QVERIFY2(file >= fp.int8Bytes && file < fp.int8Bytes * 130 / 100,
                 qPrintable(QString("%1: file %2 bytes, estimate %3").arg(preset).arg(file).arg(fp.int8Bytes)));
        QVERIFY(fp.int8Bytes * 3 < fp.fp32Bytes);
    }
}

// A stored FP32 model summarises like the model it was made from; files carry their size.
void TestModelSummary::storedModelsAndFiles()
{
    auto model = makeModel("mobilenet-tiny", 1, 28, 28, 10, 2);
    const ModelSummary direct = summarizeModel(*model);
    const ExportedModel stored = exportFloatModel(*model, "mobilenet-tiny", Normalization::uniform(0.3f, 0.3f, 1), {});
    const ModelSummary back = summarizeExported(stored, "memory");
    QCOMPARE(back.params, direct.params);
    QCOMPARE(back.macs, direct.macs);
    QCOMPARE(back.fp32Bytes, direct.fp32Bytes);
    QCOMPARE(back.layers.size(), direct.layers.size());
    for (std::size_t i = 0; i < back.layers.size(); ++i) {
        QCOMPARE(back.layers[i].outputShape, direct.layers[i].outputShape);
        QCOMPARE(back.layers[i].inputs, direct.layers[i].inputs);
    }

    const std::string dir = fixtures::tempDir("model_summary");
    const std::string path = dir + "/m.qsm";
    writeQsm(path, stored);
    const ModelSummary file = summarize(path);
    QCOMPARE(file.source, path);
    QCOMPARE(file.modelName, std::string("mobilenet-tiny"));
    QVERIFY(file.fileBytes.has_value());
    QCOMPARE(*file.fileBytes, static_cast<std::uint64_t>(std::filesystem::file_size(path)));
    QCOMPARE(file.params, direct.params);
    std::filesystem::remove_all(dir);
}

void TestModelSummary::badInput()
{
    const std::string dir = fixtures::tempDir("model_summary_bad");
    const auto throwsNaming = [](auto fn, const std::string& needle, auto tag) {
        try {
            fn();
        } catch (const decltype(tag)& e) {
            QVERIFY2(std::string(e.what()).find(needle) != std::string::npos, e.what());
            return;
        }
        QFAIL(qPrintable(QString::fromStdString("no error naming " + needle)));
    };
    throwsNaming([] { summarize("resnet50"); }, "resnet50", ConfigError(""));
    throwsNaming([] { summarize("weights.pt"); }, "weights.pt", ConfigError(""));
    throwsNaming([&] { summarize(dir + "/missing.qsm"); }, "missing.qsm", IoError(""));
    const std::string junk = dir + "/junk.qsm";
    std::ofstream(junk) << "not a model";
    throwsNaming([&] { summarize(junk); }, "junk.qsm", FormatError(""));
    const std::string junkOnnx = dir + "/junk.onnx";
    std::ofstream(junkOnnx) << "not a model either";
    throwsNaming([&] { summarize(junkOnnx); }, "junk.onnx", FormatError(""));
    throwsNaming([] { summarizePreset("resnet8", 1, 2, 2, 10); }, "resnet8", ConfigError(""));
    std::filesystem::remove_all(dir);
}

// torch.onnx.export in eval mode folds BatchNorm into the convolutions: the file holds fewer
// parameters than the model PyTorch trained. The summary counts the file and says how many the
// model had with BatchNorm: pytorch_ref.py's resnet8 and mobilenet-tiny (77,754 and 31,946
// parameters there); a file exported without folding says nothing of the kind.
void TestModelSummary::pytorchExportsWithFoldedBatchNorm()
{
    const std::string dir = std::string(QS_TEST_DATA) + "/../onnx_import/";
    const ModelSummary r = summarizeFile(dir + "ref_resnet8.onnx");
    QCOMPARE(r.params, std::uint64_t{77418});
    QCOMPARE(r.exporterFoldedConvs, std::size_t{9});
    QCOMPARE(r.params + r.exporterFoldedChannels, std::uint64_t{77754});
    QCOMPARE(r.params + r.exporterFoldedChannels, std::uint64_t{makeModel("resnet8")->numParams()});
    const ModelSummary m = summarizeFile(dir + "ref_mobilenet-tiny.onnx");
    QCOMPARE(m.params + m.exporterFoldedChannels, std::uint64_t{31946});
    const ModelSummary plain = summarizeFile(dir + "flatten_bn_op17_nofold.onnx");
    QCOMPARE(plain.exporterFoldedConvs, std::size_t{0});
    // The input normalisation is told as the file stores it, or as not stored.
    QVERIFY(!plain.normalizationKnown);
    QVERIFY(plain.normalization.empty());
    const ModelSummary normalised = summarizeFile(dir + "imgmlp_op13_fold_dyn.onnx");
    QVERIFY(normalised.normalizationKnown);
    QCOMPARE(normalised.normalization, std::string("mean 0.3000, std 0.3500"));
    // A BatchNorm1d the import folds into a Linear (after it, or before it in a BNNeck): its gamma
    // and beta count in the file's model, as PyTorch counts them, and a bias the fold gave a
    // bias-free Linear does not (tester 20: info undercounted a fastai head by 150). PyTorch's
    // sum(p.numel()) of make_fixtures.py's FlatMLPBN and BNNeck: 2,109 and 186.
    for (const auto& [file, pytorch] : {std::pair{"flatmlpbn_op13_fold_dyn.onnx", 2109}, std::pair{"flatmlpbn_op11_nofold.onnx", 2109},
                                        std::pair{"bnneck_op11_nofold.onnx", 186}, std::pair{"bnneck_op15_fold_dyn.onnx", 186}}) {
        const ModelSummary f = summarizeFile(dir + file);
        QVERIFY2(f.importFoldedParams > 0, file);
        QCOMPARE(f.sourceParams(), std::uint64_t(pytorch));
    }
}

QTEST_GUILESS_MAIN(TestModelSummary)
#include "tst_model_summary.moc"
