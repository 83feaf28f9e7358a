// FP32 ONNX graphs of several outputs, as torch.onnx.export writes a forward that returns a tuple
// (tests/onnx_import/make_outputs_fixtures.py: (scores, features), (features, scores) and (scores,
// softmax(scores))): the class scores are the output declared [N, classes] for the data's classes,
// else the first; the other outputs and the nodes only they need are left out, with a note. Checked
// against PyTorch's scores through importOnnx, readModelFile and the training factory.
#include "io/model_source.h"
#include "io/onnx_import.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <QtTest>

#include <algorithm>
#include <string>
#include <vector>

using namespace quantscope;
using namespace onnx_import_fixtures;

class TestOnnxOutputs : public QObject {
    Q_OBJECT

private slots:
    void firstOutputWithoutClasses();
    void classesPickTheScores();
    void factoryReadsForTheData();
    void noOutputIsAFormatError();
};

namespace {

std::string fixture(const char* name) { return (kFixtures / (std::string(name) + ".onnx")).string(); }

bool hasNote(const ExportedModel& m, const std::string& text)
{
    return std::any_of(m.notes.begin(), m.notes.end(), [&](const std::string& n) { return n.find(text) != std::string::npos; });
}

ExportedModel importFor(const char* name, std::size_t classes)
{
    OnnxImportOptions o;
    o.classes = classes;
    o.externalDataFolder = kFixtures.string();
    return importOnnx(fileBytes(fixture(name)), fixture(name), nullptr, o);
}

} // namespace

// Without the data's classes the first output is read: the scores where the forward returns them
// first (the usual (logits, features)), the features where it does not.
void TestOnnxOutputs::firstOutputWithoutClasses()
{
    const ExportedModel s = importOnnx(fixture("twoout_scoresfirst_op13_fold"));
    QCOMPARE(s.classes, std::size_t{10});
    QCOMPARE(s.graphOutputs, std::size_t{2});
    QCOMPARE(s.onnxOutputName, std::string("logits"));
    QVERIFY(maxDeviation(s, loadReference(kFixtures / "twoout_scoresfirst_op13_fold.json")) <= kOutputTol);
    QVERIFY2(hasNote(s, "the graph has 2 outputs: 'logits' (the first) is read as the class scores; 'features' and the nodes only it needs are left out"),
             s.notes.empty() ? "no note" : s.notes.front().c_str());

    const ExportedModel f = importOnnx(fixture("twoout_featuresfirst_op13_fold_dyn"));
    QCOMPARE(f.classes, std::size_t{36}); // the flattened features
    QCOMPARE(countKind(f, LayerKind::Linear), std::size_t{0}); // the head only the other output needs
    QVERIFY(hasNote(f, "'features' (the first) is read as the class scores; 'logits' and the nodes only it needs are left out"));
    QVERIFY(readsDifferentlyFor(f, f.height, f.width, 10));
    QVERIFY(!readsDifferentlyFor(f, f.height, f.width, 36));
    QVERIFY(!readsDifferentlyFor(s, s.height, s.width, 10));
}

void TestOnnxOutputs::classesPickTheScores()
{
    // (features, scores): the output declared [N, 10]
    const ExportedModel f = importFor("twoout_featuresfirst_op13_fold_dyn", 10);
    QCOMPARE(f.classes, std::size_t{10});
    QCOMPARE(f.onnxOutputName, std::string("logits"));
    QVERIFY(maxDeviation(f, loadReference(kFixtures / "twoout_featuresfirst_op13_fold_dyn.json")) <= kOutputTol);
    QVERIFY(hasNote(f, "'logits' (the one declared [N, 10], the data's classes) is read as the class scores; 'features'"));
    // the same through readModelFile, as train and eval read a file for their data
    const ExportedModel r = readModelFile(fixture("twoout_featuresfirst_op13_fold_dyn"), 8, 8, 10);
    QCOMPARE(r.classes, std::size_t{10});
    QVERIFY(maxDeviation(r, loadReference(kFixtures / "twoout_featuresfirst_op13_fold_dyn.json")) <= kOutputTol);

    // (scores, softmax(scores)), both declared [N, 10]: the first, and the Softmax only the
    // second output reads is left out (the scores are the logits, not probabilities)
    const ExportedModel p = importFor("twoout_probs_op11_nofold", 10);
    QCOMPARE(p.onnxOutputName, std::string("logits"));
    QCOMPARE(countKind(p, LayerKind::Softmax), std::size_t{0});
    QVERIFY(maxDeviation(p, loadReference(kFixtures / "twoout_probs_op11_nofold.json")) <= kOutputTol);
    // classes no output declares: the first
    QCOMPARE(importFor("twoout_featuresfirst_op13_fold_dyn", 7).classes, std::size_t{36});
}

// The model train builds from the file for data of 10 classes reads the scores.
void TestOnnxOutputs::factoryReadsForTheData()
{
    const Reference ref = loadReference(kFixtures / "twoout_featuresfirst_op13_fold_dyn.json");
    std::unique_ptr<Model> model = modelFromFile(fixture("twoout_featuresfirst_op13_fold_dyn"), false)(Shape{1, 8, 8}, 10, 1);
    RunContext ctx;
    ctx.training = false;
    const Tensor y = model->forward(Tensor(ref.inputShape, ref.input), ctx);
    QCOMPARE(y.shape(), (Shape{3, 10}));
    double worst = 0;
    for (std::size_t i = 0; i < y.numel(); ++i) worst = std::max(worst, std::fabs(double(y[i]) - ref.output[i]));
    QVERIFY2(worst <= kOutputTol, std::to_string(worst).c_str());
    // data of 7 classes: no output fits, and the error says which one was read
    try {
        modelFromFile(fixture("twoout_featuresfirst_op13_fold_dyn"), false)(Shape{1, 8, 8}, 7, 1);
        QFAIL("36 scores taken for 7 classes");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find("the model has 36 outputs; the dataset has 7 classes ('features', the first of the graph's 2 "
                                            "outputs: none is declared [N, 7]") != std::string::npos,
                 e.what());
    }
}

void TestOnnxOutputs::noOutputIsAFormatError()
{
    onnx::ModelProto mp = parse(fixture("twoout_scoresfirst_op13_fold"));
    mp.mutable_graph()->clear_output();
    try {
        importOnnx(serialize(mp), "none.onnx");
        QFAIL("a graph without outputs imported");
    } catch (const FormatError& e) {
        QVERIFY2(std::string(e.what()).find("none.onnx") != std::string::npos &&
                     std::string(e.what()).find("the graph has no output") != std::string::npos,
                 e.what());
    }
}

QTEST_GUILESS_MAIN(TestOnnxOutputs)
#include "tst_onnx_outputs.moc"
