// `quantscope-cli info` as a user runs it (QProcess): the table and the JSON object for a preset
// and a .qsm file, and one-line errors with the documented exit codes for bad models.
#include "cli_fixtures.h"

#include "io/exported_model.h"
#include "io/qsm.h"
#include "nn/model_zoo.h"

#include <QRegularExpression>
#include <QtTest>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

using namespace quantscope;
using namespace cli_fixtures;

namespace {

// The table row of `layer`, split on runs of spaces.
QStringList tableRow(const QString& out, const QString& layer)
{
    for (const QString& line : out.split('\n'))
        if (line.startsWith(layer + ' ')) return line.split(QRegularExpression("\\s{2,}"), Qt::SkipEmptyParts);
    return {};
}

} // namespace

class TestCliInfo : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void presetTable();
    void presetJson();
    void nonAsciiNamesAlign();
    void qsmFile();
    void quantizedFileGivesWhatItStores();
    void planSize();
    void errors_data();
    void errors();
    void fileTakesItsOwnShape();
    void planNormalizationIsNamed();
    void foldedExportsCountPytorchsParameters_data();
    void foldedExportsCountPytorchsParameters();

private:
    QTemporaryDir m_tmp;
    QString m_qsm, m_junk;
};

void TestCliInfo::initTestCase()
{
    QVERIFY2(QFileInfo(kCli).isExecutable(), qPrintable(kCli + " is not built"));
    QVERIFY(m_tmp.isValid());
    auto model = makeModel("seed-cnn-bn", 1, 28, 28, 10, 4);
    m_qsm = m_tmp.filePath("bn.qsm");
    writeQsm(m_qsm.toStdString(), exportFloatModel(*model, "seed-cnn-bn", Normalization::uniform(0.3f, 0.3f, 1),
                                                   {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}));
    m_junk = m_tmp.filePath("junk.qsm");
    std::ofstream(m_junk.toStdString()) << "this is not a model";
}

// The table: resnet8's documented parameter count, a stride-2 block's shape, aligned columns.
void TestCliInfo::presetTable()
{
    const Result r = runCli({"info", "resnet8"});
    QCOMPARE(r.exitCode, kExitOk);
    QVERIFY2(r.err.isEmpty(), qPrintable(r.err));
    QVERIFY2(r.out.contains("Total params: 77,754"), qPrintable(r.out));
    const QStringList conv = tableRow(r.out, "layer2.conv1");
    QVERIFY2(conv.size() == 7, qPrintable(conv.join('|')));
    QCOMPARE(conv[1], QString("Conv2d"));
    QCOMPARE(conv[4], QString("32x14x14"));
    QCOMPARE(conv[5], QString("4,608"));   // 32 x 16 x 3 x 3, no bias
    QCOMPARE(conv[6], QString("903,168")); // 14 x 14 x 32 x 16 x 9
    // Columns line up: every row's output shape starts where the header's does.
    const QStringList lines = r.out.split('\n');
    const auto header = std::find_if(lines.begin(), lines.end(), [](const QString& l) { return l.startsWith("Layer "); });
    QVERIFY(header != lines.end());
    const qsizetype col = header->indexOf("Output shape");
    for (const QString& l : lines)
        if (l.startsWith("layer3.add ")) QCOMPARE(l.indexOf("64x7x7"), col);
    // Another input shape changes the maps.
    const Result c = runCli({"info", "resnet8", "--input-shape", "3x32x32", "--classes", "100"});
    QCOMPARE(c.exitCode, kExitOk);
    QCOMPARE(tableRow(c.out, "layer2.conv1").value(4), QString("32x16x16"));
    QCOMPARE(tableRow(c.out, "fc").value(4), QString("100"));
}

// Layer names beyond ASCII keep the columns straight: a row is padded by the columns a terminal
// shows (one a letter, two a CJK character), not by UTF-8 bytes (tester 21: misaligned).
void TestCliInfo::nonAsciiNamesAlign()
{
    auto model = makeModel("seed-cnn-bn", 1, 28, 28, 10, 4);
    ExportedModel m = exportFloatModel(*model, "seed-cnn-bn", Normalization::uniform(0.3f, 0.3f, 1), {});
    m.layers.at(0).name = "卷积层1";
    m.layers.at(1).name = "bn_ä_ö";
    const QString path = m_tmp.filePath("names.qsm");
    writeQsm(path.toStdString(), m);
    const Result r = runCli({"info", path});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(r.err));
    const auto column = [](const QString& line, qsizetype index) { // terminal columns before `index`
        qsizetype c = 0;
        for (qsizetype i = 0; i < index; ++i) c += line[i].unicode() >= 0x2E80 && line[i].unicode() <= 0xA4CF ? 2 : 1;
        return c;
    };
    const QStringList lines = r.out.split('\n');
    const auto header = std::find_if(lines.begin(), lines.end(), [](const QString& l) { return l.startsWith("Layer "); });
    QVERIFY(header != lines.end());
    const qsizetype type = column(*header, header->indexOf("Type"));
    int checked = 0;
    for (const QString& l : lines)
        if (l.startsWith(QString::fromUtf8("卷积层1")) || l.startsWith(QString::fromUtf8("bn_ä_ö"))) {
            QCOMPARE(column(l, l.indexOf(l.startsWith("bn") ? "BatchNorm2d" : "Conv2d")), type);
            ++checked;
        }
    QCOMPARE(checked, 2);
}

void TestCliInfo::presetJson()
{
    const Result r = runCli({"info", "mobilenet-tiny", "--json"});
    QCOMPARE(r.exitCode, kExitOk);
    QCOMPARE(r.out.trimmed().count('\n'), 0); // one object
    const nlohmann::json j = nlohmann::json::parse(r.out.toStdString());
    QCOMPARE(j.at("params").get<std::uint64_t>(), std::uint64_t{31946});
    QCOMPARE(j.at("input_shape"), nlohmann::json({1, 28, 28}));
    std::uint64_t params = 0, macs = 0;
    for (const auto& l : j.at("layers")) {
        params += l.at("params").get<std::uint64_t>();
        macs += l.at("macs").get<std::uint64_t>();
        QVERIFY(l.contains("output_shape") && l.contains("inputs") && l.contains("type"));
    }
    QCOMPARE(params, j.at("params").get<std::uint64_t>());
    QCOMPARE(macs, j.at("macs").get<std::uint64_t>());
    QVERIFY(j.at("int8_bytes").get<std::uint64_t>() * 3 < j.at("fp32_bytes").get<std::uint64_t>());
    QVERIFY(!j.contains("file_bytes"));
}

// info --layer/--keep-fp32: the plan's per-layer bytes add up to its total, the layers it names
// change only their own rows, and a uniform int8 plan is the int8 size.
void TestCliInfo::planSize()
{
    const Result u = runCli({"info", "seed-cnn", "--json", "--format", "int8"});
    QCOMPARE(u.exitCode, kExitOk);
    const nlohmann::json uj = nlohmann::json::parse(u.out.toStdString());
    QCOMPARE(uj.at("plan").at("bytes").get<std::uint64_t>(), uj.at("int8_bytes").get<std::uint64_t>());
    const Result r = runCli({"info", "seed-cnn", "--json", "--layer", "fc1=int4", "--keep-fp32", "fc2"});
    QCOMPARE(r.exitCode, kExitOk);
    const nlohmann::json p = nlohmann::json::parse(r.out.toStdString()).at("plan");
    std::uint64_t sum = 0;
    for (const auto& l : p.at("layers")) sum += l.at("bytes").get<std::uint64_t>();
    QCOMPARE(sum, p.at("bytes").get<std::uint64_t>());
    const auto& ul = uj.at("plan").at("layers");
    const auto& pl = p.at("layers");
    QCOMPARE(pl.at(0).at("bytes"), ul.at(0).at("bytes")); // conv1, conv2 unchanged
    QCOMPARE(pl.at(1).at("bytes"), ul.at(1).at("bytes"));
    QCOMPARE(pl.at(2).at("format").get<std::string>(), std::string("int4"));
    QCOMPARE(pl.at(3).at("bytes").get<std::uint64_t>(), pl.at(3).at("fp32_bytes").get<std::uint64_t>()); // fc2 in float
    QVERIFY(pl.at(2).at("bytes").get<std::uint64_t>() * 2 < ul.at(2).at("bytes").get<std::uint64_t>() + 4096);
    const Result bad = runCli({"info", "seed-cnn", "--layer", "fc7=int4"});
    QCOMPARE(bad.exitCode, kExitUsage);
    QVERIFY2(bad.err.contains("fc7") && bad.err.contains("conv1, conv2, fc1, fc2"), qPrintable(bad.err));
}

// A .qsm: its own shape and name, the file's size, BatchNorms marked as folded at int8 export, and
// the class names it stores, by output (tester 11 could find them only with `strings`).
void TestCliInfo::qsmFile()
{
    const Result r = runCli({"info", m_qsm});
    QCOMPARE(r.exitCode, kExitOk);
    QVERIFY2(r.out.contains("seed-cnn-bn"), qPrintable(r.out));
    QVERIFY2(r.out.contains(QString("File size: ")) &&
                 r.out.contains(QLocale(QLocale::English).toString(QFileInfo(m_qsm).size()) + " bytes"),
             qPrintable(r.out));
    QVERIFY2(r.out.contains("folded"), qPrintable(r.out));
    QVERIFY2(r.out.contains("Classes: 0 zero, 1 one, 2 two,") && r.out.contains("9 nine (by output)"), qPrintable(r.out));
    const Result j = runCli({"info", m_qsm, "--json"});
    QCOMPARE(j.exitCode, kExitOk);
    const nlohmann::json o = nlohmann::json::parse(j.out.toStdString());
    QCOMPARE(o.at("file_bytes").get<qint64>(), QFileInfo(m_qsm).size());
    QCOMPARE(o.at("class_names").size(), std::size_t{10});
    QCOMPARE(o.at("class_names")[9].get<std::string>(), std::string("nine"));
    QCOMPARE(QString::fromStdString(o.at("source").get<std::string>()), m_qsm);
}

// A tensor-wise int8 file: info gives the weights it stores (the Stored table's sum), not the
// channel-wise int8 estimate of a float model, which read "per-channel scales" beside a table
// saying tensor-wise.
void TestCliInfo::quantizedFileGivesWhatItStores()
{
    QString data;
    startWithSyntheticFolder(m_tmp, data);
    const QString q = m_tmp.filePath("tensor.qsm");
    const Result trained = runCli({"train", "--data", data, "--model", "mlp", "--strategy", "ptq", "--granularity", "tensor", "--quiet",
                                   "--export", q});
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    const Result r = runCli({"info", q});
    QCOMPARE(r.exitCode, kExitOk);
    QVERIFY2(r.out.contains("tensor-wise"), qPrintable(r.out));
    QVERIFY2(!r.out.contains("per-channel scales"), qPrintable(r.out));
    const QRegularExpression stored("Stored weights: .*\\(([0-9,]+) bytes\\)");
    const QRegularExpressionMatch m = stored.match(r.out);
    QVERIFY2(m.hasMatch(), qPrintable(r.out));
    // the sum of the table's Bytes column
    qint64 sum = 0;
    const QRegularExpression row("^\\s+\\S+\\s+int8\\s+tensor-wise\\s+([0-9,]+)\\s", QRegularExpression::MultilineOption);
    for (auto it = row.globalMatch(r.out); it.hasNext();) sum += it.next().captured(1).remove(',').toLongLong();
    QVERIFY(sum > 0);
    QCOMPARE(m.captured(1).remove(',').toLongLong(), sum);
}

void TestCliInfo::errors_data()
{
    QTest::addColumn<QStringList>("args"); // "$JUNK" / "$QSM" stand for the test files
    QTest::addColumn<int>("exitCode");
    QTest::addColumn<QString>("mentions");
    QTest::newRow("unknown model") << QStringList{"info", "resnet50"} << kExitUsage << "resnet50";
    QTest::newRow("other extension") << QStringList{"info", "model.pt"} << kExitUsage << "model.pt";
    QTest::newRow("no model") << QStringList{"info"} << kExitUsage << "preset";
    QTest::newRow("bad shape") << QStringList{"info", "lenet5", "--input-shape", "28x28"} << kExitUsage << "--input-shape";
    QTest::newRow("too small") << QStringList{"info", "lenet5", "--input-shape", "1x8x8"} << kExitUsage << "lenet5";
    QTest::newRow("shape of a file") << QStringList{"info", "$QSM", "--input-shape", "3x32x32"} << kExitUsage << "$QSM";
    QTest::newRow("missing file") << QStringList{"info", "/nonexistent/m.qsm"} << kExitData << "/nonexistent/m.qsm";
    QTest::newRow("not a model") << QStringList{"info", "$JUNK"} << kExitData << "$JUNK";
}

// Each error: its exit code and exactly one line on stderr naming the culprit; nothing on stdout.
void TestCliInfo::errors()
{
    QFETCH(QStringList, args);
    QFETCH(int, exitCode);
    QFETCH(QString, mentions);
    const auto subst = [&](QString s) { return s.replace("$JUNK", m_junk).replace("$QSM", m_qsm); };
    for (QString& a : args) a = subst(a);
    const Result r = runCli(args);
    QCOMPARE(r.exitCode, exitCode);
    QVERIFY2(r.err.endsWith('\n') && r.err.count('\n') == 1, qPrintable("stderr: " + r.err));
    QVERIFY2(r.err.contains(subst(mentions)), qPrintable("stderr: " + r.err));
    QVERIFY2(r.out.isEmpty(), qPrintable("stdout: " + r.out));
}

// A file's own input shape is no error (tester 18 #7): the summary is the same as without it.
void TestCliInfo::fileTakesItsOwnShape()
{
    const Result plain = runCli({"info", m_qsm});
    const Result sized = runCli({"info", m_qsm, "--input-shape", "1x28x28"});
    QCOMPARE(sized.exitCode, 0);
    QVERIFY2(sized.out == plain.out && sized.out.contains("1x28x28"), qPrintable(sized.out + sized.err));
}

// torch.onnx.export in eval mode folds each BatchNorm into the convolution before it; whether
// that convolution had a bias of its own (nn.Conv2d's default) or not (bias=False), the file holds
// one folded bias. info's note gives PyTorch's count for both kinds, in the text and the JSON: a
// new user's convolutions with biases were counted as bias-free (5,555 against PyTorch's 5,603).
// The counts are PyTorch's: sum(p.numel() for p in model.parameters()) of the module exported.
void TestCliInfo::foldedExportsCountPytorchsParameters_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("pytorchParams");
    QTest::addColumn<QString>("jsonKey");
    // fixture_modules_joins.py SEConv: conv1 = nn.Conv2d(3, 8, 3, padding=1), then bn1
    QTest::newRow("convolution with a bias") << "se_conv_sigmoid_op13_fold_dyn.onnx" << "1,724" << "params_with_batchnorm_and_conv_bias";
    // pytorch_ref.py's resnet8: every convolution bias=False
    QTest::newRow("bias-free convolutions") << "ref_resnet8.onnx" << "77,754" << "params_with_batchnorm";
}

void TestCliInfo::foldedExportsCountPytorchsParameters()
{
    QFETCH(QString, file);
    QFETCH(QString, pytorchParams);
    QFETCH(QString, jsonKey);
    const QString path = QStringLiteral(QS_TEST_DATA "/../onnx_import/") + file;
    const Result r = runCli({"info", path});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(r.err));
    const QString note = r.out.section("the exporter folded BatchNorm", 1).section("MACs per image", 0, 0).simplified();
    QVERIFY2(note.contains(pytorchParams + " parameters") || note.contains(pytorchParams + " if"), qPrintable(r.out));
    const Result j = runCli({"info", path, "--json"});
    QVERIFY2(j.exitCode == kExitOk, qPrintable(j.err));
    const nlohmann::json o = nlohmann::json::parse(j.out.toStdString());
    QCOMPARE(QLocale(QLocale::English).toString(o.at(jsonKey.toStdString()).get<qulonglong>()), pytorchParams);
}

// A plan's "normalize" on a file that stores none: info --plan names it as what train --plan
// applies (tester 17: it said the train set's statistics would be used).
void TestCliInfo::planNormalizationIsNamed()
{
    const QString path = QStringLiteral(QS_TEST_DATA "/../onnx_import/ref_resnet8.onnx");
    QTemporaryDir tmp;
    const QString plan = tmp.filePath("normalized.json");
    {
        QFile f(plan);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"default":{"normalize":"0.5,0.25"}})");
    }
    const Result bare = runCli({"info", path});
    QVERIFY2(bare.exitCode == kExitOk, qPrintable(bare.err));
    QVERIFY2(bare.out.contains("Input normalisation: not stored in the file (train, eval and analyze use the train set's statistics"),
             qPrintable(bare.out));
    const Result planned = runCli({"info", path, "--plan", plan});
    QVERIFY2(planned.exitCode == kExitOk, qPrintable(planned.err));
    QVERIFY2(planned.out.contains("Input normalisation: not stored in the file; normalize \"0.5,0.25\" from the plan " + plan +
                                  ", which train --plan applies"),
             qPrintable(planned.out));
    const Result json = runCli({"info", path, "--plan", plan, "--json"});
    QVERIFY2(json.exitCode == kExitOk, qPrintable(json.err));
    QVERIFY(nlohmann::json::parse(json.out.toStdString()).contains("plan_normalize"));
}

QTEST_GUILESS_MAIN(TestCliInfo)
#include "tst_cli_info.moc"
