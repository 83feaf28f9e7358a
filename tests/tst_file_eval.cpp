// Scoring a model file on a dataset (core/analysis/file_eval.h), shared by `quantscope-cli eval`
// and the GUI's Evaluate dialog: the shape, class and normalisation checks, labels matched by
// class name, the integer engine against the fake-quant reference, and stopping.
#include "onnx/export_fixtures.h" // first: TBB's profiling.h before Qt (a member named emit)

#include "analysis/file_eval.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include <QtTest>

using namespace quantscope;
using namespace fixtures;
using quantscope::ConfigError;

namespace {

std::vector<std::string> names(std::initializer_list<const char*> v) { return {v.begin(), v.end()}; }

} // namespace

class TestFileEval : public QObject {
    Q_OBJECT
private slots:
    void initTestCase()
    {
        m_data = syntheticDataset(256, 300);
        m_q = quantizePreset("seed-cnn", m_data, "int8");
        QVERIFY(m_q.exported.quantized);
    }

    // A model of another image size or class count is refused before anything runs, naming the
    // file and both sizes.
    void mismatchesAreRefused_data()
    {
        QTest::addColumn<int>("side");
        QTest::addColumn<int>("classes");
        QTest::addColumn<bool>("resized");
        QTest::addColumn<QString>("expected");
        QTest::addColumn<int>("modelChannels");
        QTest::newRow("image size") << 32 << 10 << false << "takes 1x28x28 images; synthetic-dir has 1x32x32; resizing to 28x28" << 1;
        QTest::newRow("image size, resized") << 32 << 10 << true << "synthetic-dir resized gives 1x32x32" << 1;
        QTest::newRow("classes") << 28 << 12 << false << "m.qsm has 10 classes (outputs); the data has 12" << 1;
        // A colour model on grayscale data: resizing cannot help, colour data can (a new user was
        // told to try --resize or --image-shape, which do neither).
        QTest::newRow("channels") << 28 << 10 << false
                                  << "takes 3x28x28 images; synthetic-dir has 1x28x28; the model reads 3-channel images: give colour data "
                                     "(a folder of RGB PNG/JPEG images, CIFAR-10/100 binaries, or a CSV file with --image-shape 3xHxW); "
                                     "--resize changes only the size"
                                  << 3;
    }
    void mismatchesAreRefused()
    {
        QFETCH(int, side);
        QFETCH(int, classes);
        QFETCH(bool, resized);
        QFETCH(QString, expected);
        QFETCH(int, modelChannels);
        Dataset d = syntheticDataset(16, 20, std::size_t(side), std::size_t(side));
        d.dir = "synthetic-dir";
        d.classNames.clear();
        for (int c = 0; c < classes; ++c) d.classNames.push_back("class " + std::to_string(c));
        ExportedModel m = m_q.exported;
        m.channels = static_cast<std::size_t>(modelChannels);
        try {
            prepareModelForData(m, "m.qsm", d, resized);
            QFAIL("accepted");
        } catch (const ConfigError& e) {
            QVERIFY2(QString::fromUtf8(e.what()).contains(expected), e.what());
        }
    }

    // Class names the file stores are matched to the data's by name; other names are said.
    void labelsFollowClassNames()
    {
        ExportedModel m = m_q.exported;
        m.classNames = m_data.classNames;
        Dataset d = m_data;
        QVERIFY(prepareModelForData(m, "m.qsm", d, false).classNote.empty());

        // The data's classes in reverse order: label d is the model's class 9 - d.
        std::reverse(d.classNames.begin(), d.classNames.end());
        const DataMatch r = prepareModelForData(m, "m.qsm", d, false);
        QVERIFY(r.classNote.find("matched by name") != std::string::npos);
        QCOMPARE(r.labels.size(), d.test.size());
        for (std::size_t i = 0; i < d.test.size(); ++i) QCOMPARE(r.labels[i], 9 - d.test.labels[i]);

        d.classNames = names({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"});
        const DataMatch other = prepareModelForData(m, "m.qsm", d, false);
        QVERIFY(other.classNote.find("compared by index") != std::string::npos);
        QVERIFY(other.labels == d.test.labels);
    }

    // eval --predictions' CSV: a header, then per image its index, the predicted and true class in
    // the model's order with their names, whether they agree, and its source, quoted when needed.
    void predictionsCsvRows()
    {
        ExportedModel m = m_q.exported;
        Dataset d = m_data;
        d.test.labels.resize(3);
        d.test.pixels.resize(3 * d.test.imageBytes());
        d.test.sources = {"test/a,b/1.png", "test/say \"hi\"/2.png", "train.csv:4"};
        m.classNames = d.classNames;
        std::reverse(d.classNames.begin(), d.classNames.end()); // matched by name: labels become 9 - label
        const DataMatch match = prepareModelForData(m, "m.qsm", d, false);
        const std::vector<std::int32_t> predicted{9 - d.test.labels[0], 0, 9 - d.test.labels[2] == 0 ? 1 : 0};
        const std::string csv = predictionsCsv(predictionRows(m, d, match, predicted));
        const QStringList lines = QString::fromStdString(csv).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
        QCOMPARE(lines.size(), 4);
        QCOMPARE(lines[0], QStringLiteral("index,predicted_class,predicted_name,label,label_name,correct,source"));
        const auto name = [&](std::int32_t c) { return QString::fromStdString(m.classNames[std::size_t(c)]); };
        const std::int32_t l0 = match.labels[0], l1 = match.labels[1];
        QCOMPARE(lines[1], QStringLiteral("0,%1,%2,%1,%2,1,\"test/a,b/1.png\"").arg(l0).arg(name(l0)));
        QCOMPARE(lines[2], QStringLiteral("1,0,%1,%2,%3,%4,\"test/say \"\"hi\"\"/2.png\"")
                               .arg(name(0)).arg(l1).arg(name(l1)).arg(l1 == 0 ? 1 : 0));
        QVERIFY2(lines[3].endsWith(QStringLiteral(",0,train.csv:4")), qPrintable(lines[3]));

        // No names in the file: the data's, when as many; IDX and CIFAR have no sources.
        m.classNames.clear();
        d.test.sources.clear();
        const std::string plain = predictionsCsv(predictionRows(m, d, prepareModelForData(m, "m.onnx", d, false), predicted));
        QVERIFY2(QString::fromStdString(plain).split('\n')[1].startsWith(
                     QStringLiteral("0,%1,%2,").arg(predicted[0]).arg(QString::fromStdString(d.classNames[std::size_t(predicted[0])]))),
                 plain.c_str());
        QVERIFY2(QString::fromStdString(plain).split('\n')[1].endsWith(QStringLiteral(",")), plain.c_str());
        d.test.sources = {"x"};
        QVERIFY_THROWS_EXCEPTION(ConfigError, predictionRows(m, d, match, predicted));
    }

    // A model without a stored normalisation takes the given one, else the data's statistics (with
    // a note); a model with one refuses another.
    void normalisation()
    {
        ExportedModel m = m_q.exported;
        m.normalizationKnown = false;
        m.normalization = Normalization::identity(1);
        DataMatch r = prepareModelForData(m, "m.onnx", m_data, false);
        QVERIFY(r.normalizationNote.find("m.onnx does not say how its input was normalised") != std::string::npos);
        QCOMPARE(m.normalization.mean[0], m_data.normalization.mean[0]);
        QCOMPARE(m.normalization.stddev[0], m_data.normalization.stddev[0]);

        ExportedModel given = m_q.exported;
        given.normalizationKnown = false;
        r = prepareModelForData(given, "m.onnx", m_data, false, Normalization::parse("0.5,0.25"));
        QVERIFY(r.normalizationNote.empty());
        QCOMPARE(given.normalization.mean[0], 0.5f);
        QCOMPARE(given.normalization.stddev[0], 0.25f);

        ExportedModel stored = m_q.exported;
        QVERIFY(stored.normalizationKnown);
        QVERIFY_THROWS_EXCEPTION(ConfigError, prepareModelForData(stored, "m.qsm", m_data, false, Normalization::parse("0.5,0.25")));
        // The stored one given again is fine.
        prepareModelForData(stored, "m.qsm", m_data, false, stored.normalization);

        // A graph that normalises its input itself takes the given one before its own (the
        // Evaluate dialog and eval show the note): mean 0.5 + 0.25 x 0.1, std 0.25 x 2.
        ExportedModel graph = m_q.exported;
        graph.normalization = Normalization::uniform(0.1f, 2.0f, 1);
        graph.normalizationFromGraph = true;
        r = prepareModelForData(graph, "g.onnx", m_data, false, Normalization::parse("0.5,0.25"));
        QVERIFY2(r.composedNote.find("g.onnx normalises its input itself (mean 0.1000, std 2.0000); the given mean 0.5000, "
                                     "std 0.2500 is applied before it") != std::string::npos,
                 r.composedNote.c_str());
        QVERIFY(r.normalizationNote.empty());
        QVERIFY(std::fabs(graph.normalization.mean[0] - 0.525f) < 1e-6f);
        QVERIFY(std::fabs(graph.normalization.stddev[0] - 0.5f) < 1e-6f);
    }

    // The integer engine's accuracy is evaluateRunner's (the CLI's), the reference comparison is the
    // fake-quant runner's, and the progress covers every pass.
    void engineAgainstReference()
    {
        ExportedModel m = m_q.exported;
        const DataMatch match = prepareModelForData(m, "m.qsm", m_data, false);
        FileEvalOptions opt;
        opt.compareReference = true;
        opt.bench = true;
        opt.passes = 1;
        opt.batch = 64;
        std::size_t lastDone = 0, lastTotal = 0, calls = 0;
        const auto r = evaluateModelFile(m, m_data.test, match.labels, opt, nullptr, [&](std::size_t done, std::size_t total) {
            QVERIFY(done >= lastDone);
            lastDone = done;
            lastTotal = total;
            ++calls;
        });
        QVERIFY(r);
        QVERIFY(r->integer);
        QCOMPARE(lastDone, lastTotal);
        QCOMPARE(lastTotal, 3 * m_data.test.size() + 64); // accuracy, reference, warm-up batch, one timed pass
        QVERIFY(calls >= 15);

        ModelRunner engine(m);
        const RunnerEval cli = evaluateRunner(engine, m_data.test);
        QCOMPARE(r->accuracy, cli.accuracy);
        QVERIFY(r->predictions == cli.predictions);

        RunnerOptions ro;
        ro.kind = RunnerKind::Reference;
        ModelRunner reference(m, ro);
        const RunnerEval ref = evaluateRunner(reference, m_data.test);
        QCOMPARE(*r->referenceAccuracy, ref.accuracy);
        std::size_t same = 0;
        for (std::size_t i = 0; i < ref.predictions.size(); ++i) same += ref.predictions[i] == cli.predictions[i];
        QCOMPARE(*r->agreement, double(same) / double(ref.predictions.size()));
        QVERIFY2(*r->agreement >= 0.99, qPrintable(QString::number(*r->agreement)));
        QVERIFY(*r->imagesPerSecond > 0.0);

        // The reference alone: no comparison, whatever was asked.
        opt.runner.kind = RunnerKind::Reference;
        opt.bench = false;
        const auto refOnly = evaluateModelFile(m, m_data.test, match.labels, opt);
        QVERIFY(refOnly && !refOnly->integer && !refOnly->agreement);
        QCOMPARE(refOnly->accuracy, ref.accuracy);
    }

    // An FP32 model whose outputs overflow (a weight of 3e38: tester 8's file scored 10 % with every
    // prediction class 0 and no word) is a NumericError counting the images, in the dialog's
    // evaluation and in the CLI's.
    void nonFiniteOutputsAreANumericError()
    {
        std::unique_ptr<Model> model = makeModel("seed-cnn", 1, 28, 28, 10, 3);
        Param& w = *model->params().front(); // conv1.weight
        w.value.fill(3e38f);
        ExportedModel m = exportFloatModel(*model, "huge", m_data.normalization, m_data.classNames);
        const DataMatch match = prepareModelForData(m, "huge.qsm", m_data, false);
        FileEvalOptions opt;
        try {
            (void)evaluateModelFile(m, m_data.test, match.labels, opt);
            QFAIL("scored a model whose outputs are inf or NaN");
        } catch (const NumericError& e) {
            const QString what = e.what();
            QVERIFY2(what.contains(QString("%1 of %1 images gave outputs that are not finite (inf or NaN) on the fp32 float model")
                                       .arg(m_data.test.size())),
                     qPrintable(what));
        }
        ModelRunner runner(m);
        QVERIFY_THROWS_EXCEPTION(NumericError, evaluateRunner(runner, m_data.test, 256, "huge.qsm"));
        // the same model with sane weights scores without a word
        w.value.fill(0.01f);
        ExportedModel sane = exportFloatModel(*model, "sane", m_data.normalization, m_data.classNames);
        (void)prepareModelForData(sane, "sane.qsm", m_data, false);
        ModelRunner ok(sane);
        QCOMPARE(evaluateRunner(ok, m_data.test).count, m_data.test.size());
        QCOMPARE(ok.nonFiniteImages(), std::size_t{0});
    }

    // A raised stop flag ends the evaluation between batches with nothing scored.
    void stopEndsBetweenBatches()
    {
        ExportedModel m = m_q.exported;
        const DataMatch match = prepareModelForData(m, "m.qsm", m_data, false);
        std::atomic<bool> stop{false};
        FileEvalOptions opt;
        opt.batch = 32;
        std::size_t seen = 0;
        const auto r = evaluateModelFile(m, m_data.test, match.labels, opt, &stop, [&](std::size_t done, std::size_t) {
            seen = done;
            if (done >= 64) stop = true;
        });
        QVERIFY(!r);
        QCOMPARE(seen, std::size_t(64));
    }

private:
    Dataset m_data;
    Quantized m_q;
};

QTEST_MAIN(TestFileEval)
#include "tst_file_eval.moc"
