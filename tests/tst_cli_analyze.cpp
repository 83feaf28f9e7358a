// quantscope-cli analyze, and train's notes and exports around it, as a user runs them
// (QProcess): the data options, search's exits and Ctrl+C, ONNX exports of imported graphs,
// values past what the data has.
#include "cli_fixtures.h"

#include "data/normalization.h"
#include "util/rng.h"

#include <QDir>
#include <QFile>
#include <QRegularExpression>
#include <QTemporaryDir>
#include <QtTest>

#include <limits>

#include <map>

#include <nlohmann/json.hpp>

#include <csignal>
#include <signal.h>

using namespace quantscope;
using namespace cli_fixtures;

class TestCliAnalyze : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void exportNamesTheImportedGraphsIo();
    void valuesPastTheDataAreNamed();
    void analyzeTakesTheDataOptions();
    void searchMarksEveryPlanBelowTheBudget();
    void planOutReproducesUnderTrainLimit();
    void tinyNormalizeStdIsNoted();
    void compareReportsAFloatActivationPoint();
    void interruptStopsSearch_data();
    void interruptStopsSearch();
    void analysisFitsSmallDataAndPlans();

private:
    QTemporaryDir m_tmp;
    QString m_valid;
};

void TestCliAnalyze::initTestCase()
{
    startWithSyntheticFolder(m_tmp, m_valid);
}

// A PyTorch graph with its own input and output names (here PyTorch's defaults, 'onnx::Sub_0'
// and '11'), quantized and exported to ONNX: the export's 'input' and 'logits' are named.
void TestCliAnalyze::exportNamesTheImportedGraphsIo()
{
    const QString csv = m_tmp.filePath("rgb8.csv"), out = m_tmp.filePath("caffe_int8.onnx");
    {
        QFile f(csv);
        QVERIFY(f.open(QIODevice::WriteOnly));
        Rng rng(5);
        for (int i = 0; i < 60; ++i) {
            QStringList row{QString::number(i % 10)};
            for (int p = 0; p < 192; ++p) row << QString::number(int(rng.below(256)));
            f.write((row.join(',') + "\n").toUtf8());
        }
    }
    const QString caffe = QStringLiteral(QS_TEST_DATA "/../onnx_import/caffemean_op13_fold.onnx");
    const Result r = runCli({"train", "--model", caffe, "--strategy", "ptq", "--epochs", "0", "--data", csv, "--test-fraction", "0.5",
                             "--export", out, "--json"});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(r.err));
    bool seen = false;
    for (const QString& line : r.out.split('\n', Qt::SkipEmptyParts)) {
        const nlohmann::json j = nlohmann::json::parse(line.toStdString());
        if (j["event"] != "export") continue;
        seen = true;
        const std::string note = j["note"].get<std::string>();
        QVERIFY2(note.find("its input is 'input'") != std::string::npos && note.find("had 'onnx::Sub_0' and '11'") != std::string::npos,
                 note.c_str());
    }
    QVERIFY(seen);
}

// Values past what the data or the run have are named, not clamped in silence.
void TestCliAnalyze::valuesPastTheDataAreNamed()
{
    const Result calib = runCli({"train", "--data", m_valid, "--strategy", "ptq", "--train-limit", "100", "--calib-images", "5000",
                                 "--test-limit", "20", "--quiet"});
    QVERIFY2(calib.exitCode == kExitOk, qPrintable(calib.err));
    QVERIFY2(calib.err.contains("calibrating on all 100 training images, fewer than --calib-images 5000"), qPrintable(calib.err));
    const Result bn = runCli({"train", "--data", m_valid, "--model", "seed-cnn-bn", "--strategy", "qat", "--train-limit", "64",
                              "--bn-freeze-epoch", "3", "--bn-reestimate", "50", "--test-limit", "20", "--quiet"});
    QVERIFY2(bn.exitCode == kExitOk, qPrintable(bn.err));
    QVERIFY2(bn.err.contains("--bn-freeze-epoch 3 is after the last epoch (1)"), qPrintable(bn.err));
    QVERIFY2(bn.err.contains("--bn-reestimate 50: the training set has 1 batches"), qPrintable(bn.err));
    // Without a BatchNorm both are named as ignored, and no note on their values comes first (tester 16)
    const Result noBn = runCli({"train", "--data", m_valid, "--model", "mlp", "--strategy", "qat", "--train-limit", "64",
                                "--bn-freeze-epoch", "3", "--bn-reestimate", "50", "--test-limit", "20", "--quiet"});
    QVERIFY2(noBn.exitCode == kExitOk, qPrintable(noBn.err));
    QVERIFY2(noBn.err.contains("--bn-reestimate is ignored: the model (mlp) has no BatchNorm layer to re-estimate") &&
                 noBn.err.contains("--bn-freeze-epoch is ignored: the model (mlp) has no BatchNorm layer to freeze"),
             qPrintable(noBn.err));
    QVERIFY2(!noBn.err.contains("the training set has") && !noBn.err.contains("is after the last epoch"), qPrintable(noBn.err));
    const Result plan = runCli({"train", "--data", m_valid, "--model", "mlp", "--strategy", "ptq", "--train-limit", "64", "--test-limit", "20",
                                "--layer", "fc1=int4", "--layer", "fc2=int4", "--layer", "fc3=fp32", "--format", "int2", "--quiet"});
    QVERIFY2(plan.exitCode == kExitOk, qPrintable(plan.err));
    QVERIFY2(plan.err.contains("--format int2 changes no layer"), qPrintable(plan.err));
    // LSQ+'s offset with symmetric activations: nothing to learn, named as ignored (tester 24: silent).
    const Result lsqPlus = runCli({"train", "--data", m_valid, "--model", "mlp", "--strategy", "qat", "--quantizer", "lsq", "--lsq-plus",
                                   "--act-format", "int8", "--train-limit", "64", "--test-limit", "20", "--quiet"});
    QVERIFY2(lsqPlus.exitCode == kExitOk, qPrintable(lsqPlus.err));
    QVERIFY2(lsqPlus.err.contains("--lsq-plus is ignored: LSQ+ learns the offset of affine activations"), qPrintable(lsqPlus.err));
    // Ternary's scale is TWN's, per tensor: global is named as running as tensor (tester 24: silent).
    const Result ternary = runCli({"train", "--data", m_valid, "--model", "mlp", "--strategy", "ptq", "--format", "ternary",
                                   "--granularity", "global", "--train-limit", "64", "--test-limit", "20", "--quiet"});
    QVERIFY2(ternary.exitCode == kExitOk, qPrintable(ternary.err));
    QVERIFY2(ternary.err.contains("--granularity is ignored: ternary and binary weights take TWN's and XNOR-Net's scale per tensor"),
             qPrintable(ternary.err));
    // A narrow-range export says so (nothing told it from a full-range one).
    const QString narrow = m_tmp.filePath("narrow.qsm");
    const Result nr = runCli({"train", "--data", m_valid, "--model", "mlp", "--strategy", "ptq", "--narrow-range", "--train-limit", "64",
                              "--test-limit", "20", "--quiet", "--export", narrow});
    QVERIFY2(nr.exitCode == kExitOk, qPrintable(nr.err));
    QVERIFY2(nr.out.contains("int8 weights (channel, narrow range)"), qPrintable(nr.out));
    QVERIFY2(runCli({"info", narrow}).out.contains("narrow range"), "info");
    // Progressive's quantized evaluation is of the schedule's last format, in its fp32 epochs too.
    const Result progressive = runCli({"train", "--data", m_valid, "--model", "mlp", "--strategy", "progressive", "--schedule", "fp32:1,int4:1",
                                       "--train-limit", "64", "--test-limit", "20", "--quiet"});
    QVERIFY2(progressive.exitCode == kExitOk, qPrintable(progressive.err));
    QVERIFY2(progressive.out.contains("epoch 1/2  [int4]  quantized model test acc"), qPrintable(progressive.out));
}

// analyze reads datasets as train does: a CSV of 1x8x12 images needs --image-shape (96 columns
// are neither k^2 nor 3k^2), which analyze refused as an unknown option; search takes --test-limit.
void TestCliAnalyze::analyzeTakesTheDataOptions()
{
    const QString csv = m_tmp.filePath("colour.csv"), model = m_tmp.filePath("colour.qsm");
    {
        QFile f(csv);
        QVERIFY(f.open(QIODevice::WriteOnly));
        Rng rng(3);
        for (int i = 0; i < 90; ++i) {
            const int label = i % 3;
            QStringList row{QString::number(label)};
            for (int p = 0; p < 96; ++p) row << QString::number((p / 32 == label ? 150 : 0) + int(rng.below(100)));
            f.write((row.join(',') + "\n").toUtf8());
        }
    }
    const QStringList data{"--data", csv, "--image-shape", "1x8x12", "--test-fraction", "0.2"};
    const Result trained = runCli(QStringList{"train", "--model", "mlp", "--quiet", "--export", model} + data);
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    const Result cmp = runCli(QStringList{"analyze", "compare", model, "--images", "16", "--json"} + data);
    QVERIFY2(cmp.exitCode == kExitOk, qPrintable(cmp.err));
    const Result sens = runCli(QStringList{"analyze", "sensitivity", model, "--validation", "20", "--formats", "int8", "--json"} + data);
    QVERIFY2(sens.exitCode == kExitOk, qPrintable(sens.err));
    // The quantized layer reads and writes uint8 activations unless --act-format fp32, which
    // measures its weights alone (tester 16 read uint8 rows as the weights' cost): the table says
    // which, and so does the JSON, whose first layer's int8 outputs are then closer to FP32's.
    const nlohmann::json sensU8 = nlohmann::json::parse(sens.out.trimmed().toStdString());
    QCOMPARE(sensU8.at("activation_format").get<std::string>(), std::string("uint8"));
    const Result sensF = runCli(QStringList{"analyze", "sensitivity", model, "--validation", "20", "--formats", "int8", "--act-format",
                                            "fp32", "--json"} + data);
    QVERIFY2(sensF.exitCode == kExitOk, qPrintable(sensF.err));
    const nlohmann::json sensF32 = nlohmann::json::parse(sensF.out.trimmed().toStdString());
    QCOMPARE(sensF32.at("activation_format").get<std::string>(), std::string("fp32"));
    const auto sqnr = [](const nlohmann::json& j) {
        const nlohmann::json& v = j.at("cells").at(0).at("logit_sqnr_db");
        return v.is_null() ? std::numeric_limits<double>::infinity() : v.get<double>();
    };
    QVERIFY2(sqnr(sensF32) > sqnr(sensU8), qPrintable(sens.out + sensF.out));
    const Result sensText = runCli(QStringList{"analyze", "sensitivity", model, "--validation", "20", "--formats", "int8"} + data);
    QVERIFY2(sensText.out.contains("the quantized layers read and write uint8 activations, as integer layers run") &&
                 sensText.out.contains("--act-format fp32 measures the weights alone"),
             qPrintable(sensText.out));
    const Result sensTextF = runCli(QStringList{"analyze", "sensitivity", model, "--validation", "20", "--formats", "int8", "--act-format",
                                                "fp32"} + data);
    QVERIFY2(sensTextF.out.contains("fp32 activations") && !sensTextF.out.contains("read and write"), qPrintable(sensTextF.out));
    const QString planOut = m_tmp.filePath("chosen.plan.json");
    const Result search = runCli(QStringList{"analyze", "search", model, "--validation", "20", "--formats", "int8,int4",
                                             "--max-drop", "50", "--test-limit", "10", "--plan-out", planOut} + data);
    QVERIFY2(search.exitCode == kExitOk, qPrintable(search.err));
    QVERIFY2(search.out.contains("chosen:"), qPrintable(search.out));
    QVERIFY2(!search.out.contains("the search stopped at --max-evals"), qPrintable(search.out)); // it ran to its end
    const Result cut = runCli(QStringList{"analyze", "search", model, "--validation", "20", "--formats", "int8,int4", "--max-drop", "50",
                                          "--max-evals", "1", "--test-limit", "10"} + data);
    QVERIFY2(cut.exitCode == kExitOk, qPrintable(cut.err));
    QVERIFY2(cut.out.contains("1 plan evaluated") && cut.out.contains("the search stopped at --max-evals 1 before it was done"),
             qPrintable(cut.out));
    // the file is confirmed by name, and its JSON is not printed as well
    QVERIFY2(search.out.contains("plan written to " + planOut), qPrintable(search.out));
    QVERIFY2(!search.out.contains("\"layers\""), qPrintable(search.out));
    QFile chosen(planOut); // the plan says how its activations were calibrated when it was measured
    QVERIFY(chosen.open(QIODevice::ReadOnly));
    const nlohmann::json chosenPlan = nlohmann::json::parse(chosen.readAll().toStdString());
    QCOMPARE(chosenPlan["default"]["act_calibration"].get<std::string>(), std::string("minmax"));
    // and the input normalisation its evaluations fed the model (the one the .qsm stores, which
    // info prints): train --plan applies it to a model file that stores none
    const Result infoModel = runCli({"info", model, "--json"});
    QVERIFY2(infoModel.exitCode == kExitOk, qPrintable(infoModel.err));
    const std::string stored = nlohmann::json::parse(infoModel.out.toStdString()).at("normalization").get<std::string>();
    QCOMPARE(QString::fromStdString(Normalization::parse(chosenPlan["default"]["normalize"].get<std::string>()).describe()),
             QString::fromStdString(stored));
    // A size budget below the smallest plan the formats allow is refused before any evaluation
    // (tester 7 waited for a whole search to learn it), with that plan's bytes.
    const Result none = runCli(QStringList{"analyze", "search", model, "--validation", "20", "--formats", "int8,int2", "--max-bytes", "1",
                                           "--plan-out", m_tmp.filePath("none.plan.json")} + data);
    QCOMPARE(none.exitCode, kExitNoResult);
    const QRegularExpression smallestRe("no plan can meet --max-bytes 1: the smallest plan the candidate formats \\(int8,int2\\) allow, "
                                        "every layer at its smallest, is (\\d+) bytes; nothing was evaluated; --plan-out is not written");
    const QRegularExpressionMatch smallestMatch = smallestRe.match(none.err);
    QVERIFY2(smallestMatch.hasMatch(), qPrintable(none.err));
    QVERIFY2(!none.out.contains("plans evaluated"), qPrintable(none.out));
    QVERIFY(!QFileInfo::exists(m_tmp.filePath("none.plan.json")));
    const QString smallest = smallestMatch.captured(1);
    // --json: the error event alone (exit_code 5), and the message on stderr.
    const Result noneJson = runCli(QStringList{"analyze", "search", model, "--validation", "20", "--formats", "int8,int2", "--max-bytes", "1",
                                               "--json"} + data);
    QCOMPARE(noneJson.exitCode, kExitNoResult);
    const QStringList refusedLines = noneJson.out.split('\n', Qt::SkipEmptyParts);
    QCOMPARE(refusedLines.size(), 1);
    const nlohmann::json refused = nlohmann::json::parse(refusedLines[0].toStdString());
    QCOMPARE(QString::fromStdString(refused.at("type").get<std::string>()), QString("no_result"));
    QVERIFY2(QString::fromStdString(refused.at("message").get<std::string>()).contains(" is " + smallest + " bytes"),
             qPrintable(noneJson.out));
    // At the smallest plan's bytes the budget is in reach, and a search cut short before that plan
    // (one evaluation: uniform int8) ends as every failing command does: the search object with its
    // plans, then the error event (exit_code 5), and the message on stderr.
    const Result shortJson = runCli(QStringList{"analyze", "search", model, "--validation", "20", "--formats", "int8,int2", "--max-bytes",
                                                smallest, "--max-evals", "1", "--json"} + data);
    QCOMPARE(shortJson.exitCode, kExitNoResult);
    const QStringList noneLines = shortJson.out.split('\n', Qt::SkipEmptyParts);
    QCOMPARE(noneLines.size(), 2);
    const nlohmann::json noneSearch = nlohmann::json::parse(noneLines[0].toStdString());
    QCOMPARE(QString::fromStdString(noneSearch.at("event").get<std::string>()), QString("search"));
    QVERIFY(!noneSearch.at("plans").empty());
    QVERIFY(!noneSearch.contains("chosen"));
    QVERIFY2(noneSearch.at("max_evals_reached").get<bool>(), noneSearch.dump().c_str()); // cut short: said (tester 17)
    QVERIFY2(!refused.contains("max_evals_reached"), refused.dump().c_str());
    const nlohmann::json noneError = nlohmann::json::parse(noneLines[1].toStdString());
    QCOMPARE(QString::fromStdString(noneError.at("event").get<std::string>()), QString("error"));
    QCOMPARE(QString::fromStdString(noneError.at("type").get<std::string>()), QString("no_result"));
    QCOMPARE(noneError.at("exit_code").get<int>(), kExitNoResult);
    const QString noneMessage = QString::fromStdString(noneError.at("message").get<std::string>());
    QVERIFY2(noneMessage.startsWith("no evaluated plan meets the budget (the smallest evaluated plan is "), qPrintable(noneMessage));
    QVERIFY2(shortJson.err.contains("quantscope-cli analyze: " + noneMessage), qPrintable(shortJson.err));
    // --train-limit: the validation images come out of the limited set (the GUI's Analysis tab)
    const Result limited = runCli(QStringList{"analyze", "sensitivity", model, "--train-limit", "40", "--validation", "15", "--formats",
                                              "int8", "--json"} + data);
    QVERIFY2(limited.exitCode == kExitOk, qPrintable(limited.err));
    QCOMPARE(nlohmann::json::parse(limited.out.trimmed().toStdString())["validation_images"].get<int>(), 15);
    const Result tooMany = runCli(QStringList{"analyze", "sensitivity", model, "--train-limit", "40", "--validation", "40", "--formats",
                                              "int8"} + data);
    QCOMPARE(tooMany.exitCode, kExitUsage);
    QVERIFY2(tooMany.err.contains("validation split of 40 leaves no training images (40 in all)"), qPrintable(tooMany.err));
    // Without --validation, a limited set of 5000 or fewer keeps half for calibration (the default
    // 5000 held out all 40 and every such run failed until --validation was given).
    const Result halved = runCli(QStringList{"analyze", "sensitivity", model, "--train-limit", "40", "--formats", "int8", "--json"} + data);
    QVERIFY2(halved.exitCode == kExitOk, qPrintable(halved.err));
    QCOMPARE(nlohmann::json::parse(halved.out.trimmed().toStdString())["validation_images"].get<int>(), 20);
    const Result missing = runCli({"analyze", "compare", model, "--data", csv});
    QCOMPARE(missing.exitCode, kExitData);
}

// Every plan below the accuracy budget says so, the uniform ones too, in JSON and in the table
// (uniform int4, 1.2 points below FP32 at --max-drop 1, said over_budget false and was not marked).
// Noisy classes, so that the low-bit plans lose some of an FP32 accuracy below 100 %.
void TestCliAnalyze::searchMarksEveryPlanBelowTheBudget()
{
    const QString csv = m_tmp.filePath("noisy.csv"), model = m_tmp.filePath("noisy.qsm");
    {
        QFile f(csv);
        QVERIFY(f.open(QIODevice::WriteOnly));
        Rng rng(11);
        for (int i = 0; i < 300; ++i) {
            const int label = i % 3;
            QStringList row{QString::number(label)};
            for (int p = 0; p < 96; ++p) row << QString::number((p / 32 == label ? 25 : 0) + int(rng.below(200)));
            f.write((row.join(',') + "\n").toUtf8());
        }
    }
    const QStringList data{"--data", csv, "--image-shape", "1x8x12", "--test-fraction", "0.2"};
    const Result trained = runCli(QStringList{"train", "--model", "mlp", "--quiet", "--export", model} + data);
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    const QStringList budget = QStringList{"analyze", "search", model, "--validation", "60", "--formats", "int8,int4,int3,int2",
                                           "--max-drop", "0", "--test-limit", "10"} + data;
    const Result budgetJson = runCli(budget + QStringList{"--json"});
    QVERIFY2(budgetJson.exitCode == kExitOk || budgetJson.exitCode == kExitNoResult, qPrintable(budgetJson.err));
    const Result budgetText = runCli(budget);
    const nlohmann::json searched = nlohmann::json::parse(budgetJson.out.split('\n', Qt::SkipEmptyParts).first().toStdString());
    const double fp32 = searched.at("fp32_val_acc").get<double>();
    int uniformOver = 0;
    for (const nlohmann::json& p : searched.at("plans")) {
        const bool below = p.at("accuracy").get<double>() < fp32;
        QCOMPARE(p.at("over_budget").get<bool>(), below);
        uniformOver += below && p.at("uniform").get<bool>();
        const QString label = QString::fromStdString(p.at("label").get<std::string>());
        bool listed = false;
        for (const QString& line : budgetText.out.split('\n'))
            if (line.contains(label + " ")) {
                listed = true;
                QVERIFY2(line.contains("over budget: not taken") == below, qPrintable(line));
            }
        QVERIFY2(listed, qPrintable(label + " is not in the table:\n" + budgetText.out));
    }
    QVERIFY2(uniformOver > 0, qPrintable("no uniform plan below FP32 here, the check needs one:\n" + budgetText.out));
}

// analyze compare --plan giving conv2 a float activation format: the header said 'uint8
// activations' and relu2's row had no 'a' though fp8 rounding was applied there. The header names
// the point's format, its row is marked, and the JSON gives each point's format.
// analyze search --plan-out promises that train --strategy ptq --epochs 0 --plan, given the same
// --train-limit, --validation and --calib-images, calibrates on the same images and so gives the
// search's test accuracy. train held its validation images out before it limited the rest, analyze
// out of the N images: with --train-limit the calibration images differed, and so did the accuracy
// (tester 7: 75.30 % against the search's 75.40 %). A weakly trained model and a few calibration
// images at 4 and 2 activation bits make the accuracy depend on which images those are.
void TestCliAnalyze::planOutReproducesUnderTrainLimit()
{
    const QString model = m_tmp.filePath("weak.qsm");
    const Result trained = runCli({"train", "--data", m_valid, "--model", "mlp", "--train-limit", "16", "--batch-size", "16", "--lr",
                                   "3e-3", "--quiet", "--export", model});
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    const auto lastWith = [](const QString& out, const std::string& event) {
        nlohmann::json found;
        for (const QString& line : out.split('\n', Qt::SkipEmptyParts)) {
            const nlohmann::json j = nlohmann::json::parse(line.toStdString(), nullptr, false);
            if (j.is_object() && j.value("event", "") == event) found = j;
        }
        return found;
    };
    int differentFromAll = 0; // how many settings give an accuracy other than the FP32 one (the check has teeth)
    for (const char* act : {"uint4", "uint2"})
        for (const char* calib : {"2", "4"}) {
            const QString plan = m_tmp.filePath(QString("limit_%1_%2.plan.json").arg(act, calib));
            const QStringList common{"--data", m_valid, "--train-limit", "200", "--validation", "50", "--calib-images", calib,
                                     "--test-limit", "200"};
            const Result search = runCli(QStringList{"analyze", "search", model, "--act-format", act, "--formats", "int8",
                                                     "--max-drop", "100", "--plan-out", plan, "--json"} + common);
            QVERIFY2(search.exitCode == kExitOk, qPrintable(search.err));
            const nlohmann::json s = lastWith(search.out, "search");
            QVERIFY2(s.contains("chosen_test_acc"), qPrintable(search.out.left(400)));
            const Result ptq = runCli(QStringList{"train", "--model", model, "--epochs", "0", "--strategy", "ptq", "--plan", plan,
                                                  "--quant-eval", "fake-quant", "--json"} + common);
            QVERIFY2(ptq.exitCode == kExitOk, qPrintable(ptq.err));
            const nlohmann::json done = lastWith(ptq.out, "done");
            QVERIFY2(done.contains("quant_test_acc"), qPrintable(ptq.out.right(400)));
            QVERIFY2(done.at("quant_test_acc").get<double>() == s.at("chosen_test_acc").get<double>(),
                     qPrintable(QString("%1 activations, %2 calibration images: search %3, train %4")
                                    .arg(act, calib)
                                    .arg(s.at("chosen_test_acc").get<double>())
                                    .arg(done.at("quant_test_acc").get<double>())));
            if (done.at("quant_test_acc").get<double>() != done.at("test_acc").get<double>()) ++differentFromAll;
        }
    QVERIFY(differentFromAll > 0);
}

// --normalize 0.3,1e-30 (a typo for 0.3,0.35) maps pixels to values near 1e30: tester 7's run
// trained on it with a loss of 2e28 and no word. train, analyze and eval now note it.
void TestCliAnalyze::tinyNormalizeStdIsNoted()
{
    const QString note = "note: --normalize 0.3,1e-30 maps channel 0's pixels to values up to 7e+29"; // as given, not 0.300000012
    const Result train = runCli({"train", "--data", m_valid, "--model", "mlp", "--train-limit", "64", "--test-limit", "20",
                                 "--normalize", "0.3,1e-30", "--quiet"});
    QVERIFY2(train.err.contains("quantscope-cli train: " + note), qPrintable(train.err));
    const Result sane = runCli({"train", "--data", m_valid, "--model", "mlp", "--train-limit", "64", "--test-limit", "20",
                                "--normalize", "0.3,0.35", "--quiet"});
    QVERIFY2(sane.exitCode == kExitOk, qPrintable(sane.err));
    QVERIFY2(!sane.err.contains("note: --normalize"), qPrintable(sane.err));
    const Result cmp = runCli({"analyze", "compare", "mlp", "--data", m_valid, "--images", "8", "--calib-images", "16",
                               "--normalize", "0.3,1e-30"});
    QVERIFY2(cmp.err.contains("quantscope-cli analyze: " + note), qPrintable(cmp.err));
}

void TestCliAnalyze::compareReportsAFloatActivationPoint()
{
    const QString plan = m_tmp.filePath("fp8act.plan.json");
    {
        QFile f(plan);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"version":1,"layers":{"conv2":{"act_format":"fp8-e4m3"}}})");
    }
    const QStringList cmd{"analyze", "compare", "seed-cnn", "--data", m_valid, "--plan", plan, "--images", "32", "--calib-images", "64"};
    const Result text = runCli(cmd);
    QVERIFY2(text.exitCode == kExitOk, qPrintable(text.err));
    QVERIFY2(text.out.section('\n', 0, 0).contains("uint8 activations (fp8-e4m3 at relu2)"), qPrintable(text.out));
    // The q column: relu2 is a point; conv1's output is not (relu1 carries its point), fc2's is
    // (LogSoftmax reads it), so fc2 shows both (tester 9: it showed "w" alone).
    std::map<QString, QString> q;
    for (const QString& line : text.out.split('\n')) {
        const QStringList cells = line.split(' ', Qt::SkipEmptyParts);
        if (cells.size() > 3 && (cells[1] == "relu2" || cells[1] == "conv1" || cells[1] == "fc2")) q[cells[1]] = cells[3];
    }
    QCOMPARE(q["relu2"], QString("a"));
    QCOMPARE(q["conv1"], QString("w"));
    QCOMPARE(q["fc2"], QString("wa"));
    const Result json = runCli(cmd + QStringList{"--json"});
    QVERIFY2(json.exitCode == kExitOk, qPrintable(json.err));
    for (const nlohmann::json& l : nlohmann::json::parse(json.out.trimmed().toStdString()).at("layers")) {
        const std::string name = l.at("layer").get<std::string>();
        if (name == "relu2") {
            QCOMPARE(l.at("activation_format").get<std::string>(), std::string("fp8-e4m3"));
            QVERIFY(l.at("output_point").get<bool>());
            QVERIFY2(l.at("alone_sqnr_db").is_number(), l.dump().c_str()); // rounded alone too (+inf is null)
        }
        if (name == "relu1") QCOMPARE(l.at("activation_format").get<std::string>(), std::string("uint8"));
    }
}

// Ctrl-C (or SIGTERM) during a mixed-bit search: it stops within one evaluation, still prints its
// JSON (the plans evaluated so far, stopped=true) and exits with 128 + the signal (130, 143).
void TestCliAnalyze::interruptStopsSearch_data()
{
    QTest::addColumn<int>("signal");
    QTest::newRow("SIGINT") << int(SIGINT);
    QTest::newRow("SIGTERM") << int(SIGTERM);
}

void TestCliAnalyze::interruptStopsSearch()
{
    QFETCH(int, signal);
    QProcess p;
    p.start(kCli, {"analyze", "search", "seed-cnn", "--data", m_valid, "--validation", QString::number(kTrain / 2), "--formats",
                   "int8,int7,int6,int5,int4,int3,int2", "--calibrations", "minmax,mse,percentile", "--max-drop", "0.5",
                   "--max-evals", "100000", "--json"});
    QVERIFY(p.waitForStarted());
    QTest::qWait(1500); // loading, then evaluating: either way the search stops cleanly
    ::kill(static_cast<pid_t>(p.processId()), signal);
    QVERIFY(p.waitForFinished(kRunTimeoutMs));
    QCOMPARE(p.exitStatus(), QProcess::NormalExit);
    QCOMPARE(p.exitCode(), 128 + signal);
    const nlohmann::json j = nlohmann::json::parse(p.readAllStandardOutput().trimmed().toStdString());
    QCOMPARE(QString::fromStdString(j.value("event", "")), QString("search"));
    QVERIFY(j.value("stopped", false));
}

// What tester 23 met (each was exit 2 or 3, or a silent choice): the default validation images on
// a training set of fewer than 5000 (half of them, as with --train-limit and in the GUI); a default
// group size past a layer's row in sensitivity and search (clamped, as train and compare do); an
// empty output name, refused before the work; compare --plan on a file that stores no
// normalisation takes the plan's, as train --plan does.
void TestCliAnalyze::analysisFitsSmallDataAndPlans()
{
    const QStringList data{"--data", m_valid, "--threads", "1"};
    // 600 training images: 300 held out, without --validation.
    const Result sens = runCli(QStringList{"analyze", "sensitivity", "mlp", "--formats", "int8", "--json"} + data);
    QVERIFY2(sens.exitCode == kExitOk, qPrintable(sens.err));
    QCOMPARE(nlohmann::json::parse(sens.out.toStdString()).at("validation_images").get<int>(), 300);
    // seed-cnn's conv1 has rows of 9 weights: group:16 is clamped to them.
    const Result group = runCli(QStringList{"analyze", "sensitivity", "seed-cnn", "--formats", "int8", "--granularity", "group:16",
                                            "--validation", "50", "--train-limit", "200", "--json"} + data);
    QVERIFY2(group.exitCode == kExitOk, qPrintable(group.err));
    const Result searched = runCli(QStringList{"analyze", "search", "seed-cnn", "--formats", "int8,int4", "--granularity", "group:32",
                                               "--validation", "50", "--train-limit", "200", "--test-limit", "20", "--max-drop", "100",
                                               "--json"} + data);
    QVERIFY2(searched.exitCode == kExitOk, qPrintable(searched.err));
    // An empty output name: refused at once, naming the option.
    const Result noPlanOut = runCli(QStringList{"analyze", "search", "mlp", "--formats", "int8", "--max-drop", "1", "--plan-out", ""} + data);
    QCOMPARE(noPlanOut.exitCode, kExitUsage);
    QVERIFY2(noPlanOut.err.contains("--plan-out: no file name given"), qPrintable(noPlanOut.err));
    const QString model = QStringLiteral(QS_TEST_DATA "/../onnx_import/act_clampmax_op11_fold_dyn.onnx");
    const Result noPredictions = runCli(QStringList{"eval", model, "--predictions", "", "--resize", "8x8"} + data);
    QCOMPARE(noPredictions.exitCode, kExitUsage);
    QVERIFY2(noPredictions.err.contains("--predictions: no file name given"), qPrintable(noPredictions.err));
    // A plan's normalisation on a PyTorch graph that stores none.
    const QString plan = m_tmp.filePath("normalized.plan.json");
    {
        QFile f(plan);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"default": {"format": "int8", "normalize": "0.5,0.25"}})");
    }
    const Result cmp = runCli(QStringList{"analyze", "compare", model, "--plan", plan, "--images", "16", "--resize", "8x8"} + data);
    QVERIFY2(cmp.exitCode == kExitOk, qPrintable(cmp.err));
    QVERIFY2(cmp.err.contains("input normalisation mean 0.5000, std 0.2500, from the plan " + plan), qPrintable(cmp.err));
    QVERIFY2(!cmp.err.contains("does not say how its input was normalised"), qPrintable(cmp.err));
}

QTEST_GUILESS_MAIN(TestCliAnalyze)
#include "tst_cli_analyze.moc"
