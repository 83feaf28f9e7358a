// quantscope-cli as a user runs it (QProcess): exit codes and one-line messages for bad
// usage and bad data, and the JSON Lines of a small training run.
#include "cli_fixtures.h"
#include "diverging_model.h"

#include "data/idx.h"
#include "train/precision_config.h"
#include "util/rng.h"

#include <QtTest>

#include <algorithm>
#include <map>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <signal.h>

using namespace quantscope;
using namespace cli_fixtures;

class TestCli : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void help_data();
    void help();
    void errors_data();
    void errors();
    void jsonLines();
    void interruptStopsCleanly_data();
    void interruptStopsCleanly();
    void planInStartEvent();
    void bnReestimateInEpochEvents();
    void lsqOnBatchNormIsNoted();
    void divergedRunExits4();
    void ignoredOptionsAreNamed_data();
    void ignoredOptionsAreNamed();
    void threadsAboveTheCoresAreLowered();
    void versionNamesCommitAndKernels();
    void validationIsHeldOutOfTheLimit();
    void activationCalibrationDefault();
    void blownUpLossIsSaid();

private:
    QTemporaryDir m_tmp;
    QString m_valid, m_corrupt, m_corruptFile, m_truncatedPlan, m_fp32Plan;
};

void TestCli::initTestCase()
{
    startWithSyntheticFolder(m_tmp, m_valid);
    if (QTest::currentTestFailed()) return;
    // A copy whose test labels are cut short.
    m_corrupt = m_tmp.filePath("corrupt");
    std::filesystem::copy(m_valid.toStdString(), m_corrupt.toStdString());
    m_corruptFile = m_corrupt + "/t10k-labels-idx1-ubyte.gz";
    std::filesystem::resize_file(m_corruptFile.toStdString(), 20);
    m_truncatedPlan = m_tmp.filePath("truncated-plan.json");
    std::ofstream(m_truncatedPlan.toStdString()) << R"({"layers":{"fc1":"int4")";
    m_fp32Plan = m_tmp.filePath("fp32-plan.json");
    std::ofstream(m_fp32Plan.toStdString()) << R"({"layers":{"conv1":"fp32","conv2":"fp32","fc1":"fp32","fc2":"fp32"}})";
}

void TestCli::help_data()
{
    QTest::addColumn<QStringList>("args");
    QTest::addColumn<QString>("mentions");
    QTest::newRow("--help") << QStringList{"--help"} << "usage: quantscope-cli";
    QTest::newRow("train --help") << QStringList{"train", "--help"} << "--train-limit";
}

void TestCli::help()
{
    QFETCH(QStringList, args);
    QFETCH(QString, mentions);
    const Result r = runCli(args);
    QCOMPARE(r.exitCode, kExitOk);
    QVERIFY2(r.out.contains(mentions), qPrintable(r.out));
    QVERIFY2(r.err.isEmpty(), qPrintable(r.err));
}

void TestCli::errors_data()
{
    QTest::addColumn<QStringList>("args"); // "$VALID" / "$CORRUPT" stand for the test folders, "$TRUNCATED_PLAN" for a cut plan file
    QTest::addColumn<int>("exitCode");
    QTest::addColumn<QStringList>("mentions");
    QTest::newRow("unknown flag") << QStringList{"train", "--bogus"} << kExitUsage << QStringList{"--bogus"};
    QTest::newRow("unknown command") << QStringList{"frobnicate"} << kExitUsage << QStringList{"frobnicate"};
    QTest::newRow("--epochs abc") << QStringList{"train", "--epochs", "abc"} << kExitUsage
                                  << QStringList{"--epochs", "abc"};
    QTest::newRow("--epochs without value") << QStringList{"train", "--epochs"} << kExitUsage
                                            << QStringList{"--epochs", "needs a value"};
    // the value left out, so the next option would have been taken for it: "unexpected argument '1'" named neither flag
    QTest::newRow("--epochs followed by an option") << QStringList{"train", "--epochs", "--threads", "1"} << kExitUsage
                                                    << QStringList{"--epochs needs a value, but the next argument is the option --threads"};
    QTest::newRow("--lr followed by a switch") << QStringList{"train", "--lr", "--quiet"} << kExitUsage
                                               << QStringList{"--lr needs a value, but the next argument is the option --quiet"};
    QTest::newRow("--lr negative") << QStringList{"train", "--lr", "-1"} << kExitUsage << QStringList{"--lr"};
    QTest::newRow("--lr 0") << QStringList{"train", "--lr", "0"} << kExitUsage << QStringList{"--lr: 0 is out of range [1e-12, 100]"};
    QTest::newRow("unknown model") << QStringList{"train", "--data", "$VALID", "--model", "resnet50"} << kExitUsage
                                   << QStringList{"resnet50"};
    QTest::newRow("--data /nonexistent") << QStringList{"train", "--data", "/nonexistent"} << kExitData
                                         << QStringList{"/nonexistent"};
    QTest::newRow("--reinit with a preset") << QStringList{"train", "--data", "$VALID", "--model", "mlp", "--reinit"} << kExitUsage
                                            << QStringList{"--reinit"};
    QTest::newRow("missing model file") << QStringList{"train", "--data", "$VALID", "--model", "/nonexistent/m.onnx"} << kExitData
                                        << QStringList{"/nonexistent/m.onnx"};
    QTest::newRow("--normalize garbage") << QStringList{"train", "--data", "$VALID", "--normalize", "0.5"} << kExitUsage
                                         << QStringList{"normalisation '0.5'"};
    QTest::newRow("--layer unknown layer") << QStringList{"train", "--data", "$VALID", "--strategy", "ptq", "--layer", "fc9=int4"}
                                           << kExitUsage << QStringList{"fc9", "conv1, conv2, fc1, fc2"};
    QTest::newRow("--layer unknown format") << QStringList{"train", "--strategy", "ptq", "--layer", "fc1=int1"} << kExitUsage
                                            << QStringList{"fc1", "int1", "int4"};
    QTest::newRow("--layer group too large") << QStringList{"train", "--data", "$VALID", "--strategy", "ptq", "--layer", "conv1=int4:group:64"}
                                             << kExitUsage << QStringList{"conv1", "group size 64", "group:1..group:9"};
    // tester 24: the schedule's limit named as --epochs' is; epoch 0 (epochs count from 1) refused, not "never"
    QTest::newRow("--schedule past the epoch limit") << QStringList{"train", "--strategy", "progressive", "--schedule", "fp32:20000,int8:1"}
                                                     << kExitUsage << QStringList{"fp32:20000", "20000 epochs is out of range [1, 10000]"};
    QTest::newRow("--bn-freeze-epoch 0") << QStringList{"train", "--strategy", "qat", "--model", "seed-cnn-bn", "--bn-freeze-epoch", "0"}
                                         << kExitUsage << QStringList{"--bn-freeze-epoch: 0 is out of range"};
    QTest::newRow("--plan missing file") << QStringList{"train", "--strategy", "ptq", "--plan", "/nonexistent/plan.json"} << kExitData
                                         << QStringList{"/nonexistent/plan.json"};
    QTest::newRow("--keep-fp32 and --layer on one layer") << QStringList{"train", "--strategy", "ptq", "--keep-fp32", "fc1", "--layer", "fc1=int4"}
                                                          << kExitUsage << QStringList{"layer 'fc1' is both in --keep-fp32 and in --layer"};
    QTest::newRow("--keep-fp32 naming a layer twice") << QStringList{"train", "--strategy", "ptq", "--keep-fp32", "fc1,conv1", "--keep-fp32", "fc1"}
                                                      << kExitUsage << QStringList{"layer 'fc1' is named twice in --keep-fp32"};
    QTest::newRow("a truncated plan file") << QStringList{"train", "--strategy", "ptq", "--plan", "$TRUNCATED_PLAN"} << kExitData
                                           << QStringList{"not valid JSON (a truncated or damaged file?)"};
    QTest::newRow("a plan keeping every layer FP32") << QStringList{"train", "--data", "$VALID", "--strategy", "ptq", "--plan", "$FP32_PLAN"}
                                                     << kExitUsage << QStringList{"plan $FP32_PLAN: quantization needs a format other than fp32"};
    QTest::newRow("info --layer and --keep-fp32 on one layer")
        << QStringList{"info", "seed-cnn", "--layer", "fc1=int4", "--keep-fp32", "fc1"} << kExitUsage << QStringList{"both in --keep-fp32 and in --layer"};
    QTest::newRow("--keep-fp32 with fp32") << QStringList{"train", "--keep-fp32", "fc2"} << kExitUsage << QStringList{"ptq, qat or progressive"};
    QTest::newRow("eval of a folder") << QStringList{"eval", "$VALID"} << kExitUsage << QStringList{"is a folder", "--data"};
    QTest::newRow("--epochs 0 on a preset") << QStringList{"train", "--strategy", "ptq", "--epochs", "0"} << kExitUsage
                                            << QStringList{"--model FILE", "--init FILE"};
    QTest::newRow("--export with no name") << QStringList{"train", "--export", ","} << kExitUsage << QStringList{"--export: no file name"};
    QTest::newRow("--export twice") << QStringList{"train", "--export", "m.qsm,./m.qsm"} << kExitUsage
                                    << QStringList{"--export: ./m.qsm is given twice"}; // by name or another path (tester 20)
    QTest::newRow("--train-limit 0") << QStringList{"train", "--train-limit", "0"} << kExitUsage
                                     << QStringList{"--train-limit: 0 is out of range (at least 1)"}; // not [1, 2^64 - 1]
    QTest::newRow("corrupt IDX file") << QStringList{"train", "--data", "$CORRUPT", "--model", "mlp"} << kExitData
                                      << QStringList{"$CORRUPT_FILE"};
}

// Each error: its exit code, and exactly one line on stderr that names the culprit.
void TestCli::errors()
{
    QFETCH(QStringList, args);
    QFETCH(int, exitCode);
    QFETCH(QStringList, mentions);
    const auto subst = [&](QString s) {
        return s.replace("$CORRUPT_FILE", m_corruptFile)
            .replace("$CORRUPT", m_corrupt)
            .replace("$VALID", m_valid)
            .replace("$TRUNCATED_PLAN", m_truncatedPlan)
            .replace("$FP32_PLAN", m_fp32Plan);
    };
    for (QString& a : args) a = subst(a);
    const Result r = runCli(args);
    QCOMPARE(r.exitCode, exitCode);
    QVERIFY2(r.err.endsWith('\n') && r.err.count('\n') == 1, qPrintable("stderr: " + r.err));
    for (const QString& m : mentions) QVERIFY2(r.err.contains(subst(m)), qPrintable("stderr: " + r.err));
    QVERIFY2(r.out.isEmpty(), qPrintable("stdout: " + r.out));
}

// --json: every stdout line is a JSON object; one "epoch" event per epoch with the documented
// keys, then a "done" event carrying the final test accuracy.
void TestCli::jsonLines()
{
    const Result r = runCli({"train", "--data", m_valid, "--json", "--train-limit", "500", "--test-limit", "200",
                             "--model", "mlp", "--epochs", "2", "--quiet"});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(QString("exit %1: %2").arg(r.exitCode).arg(r.err)));
    std::vector<nlohmann::json> epochs, done;
    const QStringList lines = r.out.split('\n', Qt::SkipEmptyParts);
    for (const QString& line : lines) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line.toStdString());
        } catch (const std::exception& e) {
            QFAIL(qPrintable("not JSON: " + line));
        }
        QVERIFY2(j.is_object() && j.contains("event"), qPrintable(line));
        if (j["event"] == "epoch") epochs.push_back(j);
        if (j["event"] == "done") done.push_back(j);
    }
    QCOMPARE(epochs.size(), std::size_t(2));
    QCOMPARE(done.size(), std::size_t(1));
    QVERIFY2(lines.last().contains("\"done\""), "the done event is not the last line");
    for (std::size_t i = 0; i < epochs.size(); ++i) {
        const nlohmann::json& e = epochs[i];
        for (const char* key : {"epoch", "train_loss", "test_loss", "test_acc", "images_per_s", "seconds"})
            QVERIFY2(e.contains(key) && e[key].is_number(), qPrintable(QString("epoch event lacks %1: %2").arg(key).arg(QString::fromStdString(e.dump()))));
        QCOMPARE(e["epoch"].get<int>(), int(i + 1));
        QVERIFY(e["test_acc"].get<double>() >= 0.0 && e["test_acc"].get<double>() <= 1.0);
        QVERIFY(e["images_per_s"].get<double>() > 0.0);
        QVERIFY(e["seconds"].get<double>() > 0.0);
    }
    QVERIFY(epochs[1]["train_loss"].get<double>() < epochs[0]["train_loss"].get<double>());
    QVERIFY(done[0].contains("test_acc") && done[0]["test_acc"].is_number());
    QCOMPARE(done[0]["test_acc"].get<double>(), epochs.back()["test_acc"].get<double>());
    QVERIFY2(done[0]["test_acc"].get<double>() > kMinSyntheticAccuracy, done[0].dump().c_str());

    // A file name that is not UTF-8 (Latin-1 'modèle'): still one JSON line, the byte as U+FFFD
    // (the dump threw, and the process aborted with no JSON). QProcess takes UTF-8 arguments
    // only, so a shell passes the raw byte.
    for (const char* command : {"eval", "info"}) {
        QProcess p;
        p.start("/bin/sh", {"-c", QString("\"$0\" %1 \"$(printf '%2/mod\\351le.onnx')\" --json").arg(command, m_tmp.path()), kCli});
        QVERIFY(p.waitForFinished(kRunTimeoutMs));
        QCOMPARE(p.exitStatus(), QProcess::NormalExit);
        QCOMPARE(p.exitCode(), kExitData);
        const nlohmann::json j = nlohmann::json::parse(p.readAllStandardOutput().trimmed().toStdString());
        QCOMPARE(j.at("event").get<std::string>(), std::string("error"));
        QVERIFY2(j.at("message").get<std::string>().find("mod\uFFFDle.onnx: no such file") != std::string::npos, j.dump().c_str());
    }
}

// A per-layer plan: the start event carries it, the layer statistics show each layer's format
// and none for the layer kept FP32.
void TestCli::planInStartEvent()
{
    const Result r = runCli({"train", "--data", m_valid, "--json", "--train-limit", "300", "--test-limit", "100", "--quiet",
                             "--strategy", "ptq", "--layer", "fc1=int4:tensor", "--keep-fp32", "fc2"});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(QString("exit %1: %2").arg(r.exitCode).arg(r.err)));
    std::map<std::string, std::string> formats;
    nlohmann::json start;
    for (const QString& line : r.out.split('\n', Qt::SkipEmptyParts)) {
        const nlohmann::json j = nlohmann::json::parse(line.toStdString());
        if (j["event"] == "start") start = j;
        if (j["event"] == "layer_stats") formats[j["layer"]] = j["format"].get<std::string>() + " " + j["granularity"].get<std::string>();
    }
    QVERIFY2(start.contains("plan"), start.dump().c_str());
    QCOMPARE(start["plan"]["default"]["format"].get<std::string>(), std::string("int8"));
    QCOMPARE(start["plan"]["layers"]["fc1"]["format"].get<std::string>(), std::string("int4"));
    QCOMPARE(start["plan"]["layers"]["fc1"]["granularity"].get<std::string>(), std::string("tensor"));
    QCOMPARE(start["plan"]["layers"]["fc2"]["format"].get<std::string>(), std::string("fp32"));
    QCOMPARE(formats["fc1"], std::string("int4 tensor-wise"));
    QCOMPARE(formats["conv1"], std::string("int8 channel-wise"));
    QVERIFY(!formats.count("fc2"));
    QCOMPARE(start["plan"]["default"]["act_calibration"].get<std::string>(), std::string("moving-average")); // train's default

    // The text report says what was quantized: the epoch line is tagged with the format and the
    // plan (PTQ said [fp32]), and the done line leads with the quantized model's accuracy.
    const Result text = runCli({"train", "--data", m_valid, "--train-limit", "300", "--test-limit", "100", "--quiet",
                                "--strategy", "ptq", "--layer", "fc1=int4:tensor"});
    QVERIFY2(text.exitCode == kExitOk, qPrintable(text.err));
    QVERIFY2(text.out.contains("[int8, per-layer plan]  quantized model test acc "), qPrintable(text.out));
    QVERIFY2(text.out.contains("done after 1 epoch(s): quantized test accuracy "), qPrintable(text.out));
    QVERIFY2(text.out.contains("(FP32 weights "), qPrintable(text.out));

    // A plan file's activation calibration (what analyze search measured with) is the run's, unless
    // --act-calibration says otherwise.
    const QString planFile = m_tmp.filePath("act.plan.json");
    {
        QFile f(planFile);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"default": {"format": "int8", "act_calibration": "percentile"}, "layers": {"fc2": "fp32"}})");
    }
    for (const QString& given : {QString(), QString("minmax")}) {
        QStringList args{"train", "--data", m_valid, "--json", "--train-limit", "300", "--test-limit", "100", "--quiet",
                         "--strategy", "ptq", "--plan", planFile};
        if (!given.isEmpty()) args << "--act-calibration" << given;
        const Result p = runCli(args);
        QVERIFY2(p.exitCode == kExitOk, qPrintable(QString("exit %1: %2").arg(p.exitCode).arg(p.err)));
        nlohmann::json s;
        for (const QString& line : p.out.split('\n', Qt::SkipEmptyParts))
            if (const nlohmann::json j = nlohmann::json::parse(line.toStdString()); j["event"] == "start") s = j;
        QCOMPARE(s["plan"]["default"]["act_calibration"].get<std::string>(), given.isEmpty() ? std::string("percentile") : given.toStdString());
    }
}

// --bn-reestimate: QAT of a model with BatchNorm reports, per epoch, the quantized accuracy before
// the re-estimation beside the one after it; without the option there is no such field.
void TestCli::bnReestimateInEpochEvents()
{
    for (const bool on : {false, true}) {
        QStringList args{"train", "--data", m_valid, "--json", "--train-limit", "256", "--test-limit", "100", "--quiet",
                         "--model", "seed-cnn-bn", "--strategy", "qat", "--format", "int4", "--act-format", "uint4"};
        if (on) args << "--bn-reestimate" << "2";
        const Result r = runCli(args);
        QVERIFY2(r.exitCode == kExitOk, qPrintable(QString("exit %1: %2").arg(r.exitCode).arg(r.err)));
        QVERIFY2(!r.err.contains("is ignored by"), qPrintable(r.err));
        int epochs = 0;
        for (const QString& line : r.out.split('\n', Qt::SkipEmptyParts)) {
            const nlohmann::json j = nlohmann::json::parse(line.toStdString());
            if (j["event"] != "epoch") continue;
            ++epochs;
            QVERIFY2(j.contains("quant_test_acc"), j.dump().c_str());
            QVERIFY2(j.contains("quant_test_acc_before_bn_reestimate") == on, j.dump().c_str());
            if (on) {
                const double before = j["quant_test_acc_before_bn_reestimate"].get<double>();
                QVERIFY2(before >= 0.0 && before <= 1.0, j.dump().c_str());
            }
        }
        QCOMPARE(epochs, 1);
    }
}

// LSQ on a model with BatchNorm and no --bn-reestimate: a note up front, as the statistics drift
// from the quantized network (tester 17: resnet8 W4A8 ended at 44 % with the defaults, 83 % with
// re-estimation). Not with --bn-reestimate, nor on a model without BatchNorm.
void TestCli::lsqOnBatchNormIsNoted()
{
    const QString note = "note: learned step sizes (LSQ) on a model with BatchNorm";
    for (const auto& [model, extra, noted] : {std::tuple{QString("seed-cnn-bn"), QStringList{}, true},
                                              std::tuple{QString("seed-cnn-bn"), QStringList{"--bn-reestimate", "2"}, false},
                                              std::tuple{QString("mlp"), QStringList{}, false}}) {
        const Result r = runCli(QStringList{"train", "--data", m_valid, "--train-limit", "128", "--test-limit", "50", "--quiet",
                                            "--model", model, "--strategy", "qat", "--quantizer", "lsq"} + extra);
        QVERIFY2(r.exitCode == kExitOk, qPrintable(QString("exit %1: %2").arg(r.exitCode).arg(r.err)));
        QVERIFY2(r.err.contains(note) == noted, qPrintable(model + " " + extra.join(' ') + ": " + r.err));
    }
}

// Mixed precision whose every step overflows: after --max-skipped-steps the run stops with
// "training diverged: non-finite gradients for N steps" and exit code 4.
void TestCli::divergedRunExits4()
{
    const QString model = m_tmp.filePath("diverging.qsm");
    fixtures::writeDivergingModel(model.toStdString());
    for (const QString& n : {QString("50"), QString("12")}) {
        QStringList args{"train", "--model", model, "--data", m_valid, "--strategy", "mixed", "--format", "fp16", "--batch-size", "8",
                         "--train-limit", "640", "--test-limit", "50", "--quiet"};
        if (n != "50") args << "--max-skipped-steps" << n; // 50 is the default
        const Result r = runCli(args);
        QVERIFY2(r.exitCode == 4, qPrintable(QString("exit %1: %2").arg(r.exitCode).arg(r.err)));
        QVERIFY2(r.err.contains("training diverged: non-finite gradients for " + n + " steps"), qPrintable(r.err));
    }
    // Under --json the log ends with an error event (it ended at the start event), and the start
    // event says how the run was set up.
    const Result j = runCli({"train", "--model", model, "--data", m_valid, "--strategy", "mixed", "--format", "fp16", "--batch-size", "8",
                             "--train-limit", "640", "--test-limit", "50", "--max-skipped-steps", "12", "--json"});
    QCOMPARE(j.exitCode, 4);
    const QStringList lines = j.out.split('\n', Qt::SkipEmptyParts);
    QVERIFY(lines.size() >= 2);
    const nlohmann::json start = nlohmann::json::parse(lines.front().toStdString());
    QCOMPARE(start.at("strategy").get<std::string>(), std::string("mixed"));
    QCOMPARE(start.at("format").get<std::string>(), std::string("fp16"));
    QCOMPARE(start.at("batch_size").get<int>(), 8);
    const nlohmann::json end = nlohmann::json::parse(lines.back().toStdString());
    QCOMPARE(end.at("event").get<std::string>(), std::string("error"));
    QCOMPARE(end.at("exit_code").get<int>(), 4);
    QVERIFY2(end.at("message").get<std::string>().find("training diverged") != std::string::npos, lines.back().toUtf8().constData());
}

// An option the strategy does not use: one stderr line naming it and the strategies that use it
// (from optionUses(), the table the GUI reads), and the start event lists it.
void TestCli::ignoredOptionsAreNamed_data()
{
    QTest::addColumn<QString>("strategy");
    QTest::addColumn<QStringList>("options");
    QTest::addColumn<QStringList>("ignored");
    QTest::addColumn<QStringList>("dataIgnored"); // dataset flags the IDX folder does not use
    QTest::newRow("fp32 --format") << "fp32" << QStringList{"--format", "int4"} << QStringList{"--format"} << QStringList{};
    QTest::newRow("fp32 several") << "fp32" << QStringList{"--format", "int4", "--granularity", "tensor", "--calib-images", "10"}
                                  << QStringList{"--format", "--granularity", "--calib-images"} << QStringList{};
    QTest::newRow("mixed --granularity") << "mixed" << QStringList{"--format", "bf16", "--granularity", "tensor"}
                                         << QStringList{"--granularity"} << QStringList{};
    QTest::newRow("qat --calib-images --max-skipped-steps") << "qat" << QStringList{"--calib-images", "10", "--max-skipped-steps", "5"}
                                                            << QStringList{"--calib-images", "--max-skipped-steps"} << QStringList{};
    QTest::newRow("ptq, all used") << "ptq" << QStringList{"--format", "int4", "--calib-images", "50"} << QStringList{} << QStringList{};
    QTest::newRow("adam --momentum --nesterov, --percentile with minmax")
        << "ptq" << QStringList{"--momentum", "0.9", "--nesterov", "--percentile", "99"} << QStringList{}
        << QStringList{"--momentum", "--nesterov", "--percentile"};
    QTest::newRow("qat --lsq-init without lsq") << "qat" << QStringList{"--lsq-init", "lsq"} << QStringList{} << QStringList{"--lsq-init"};
    QTest::newRow("ptq --rounding stochastic") << "ptq" << QStringList{"--rounding", "stochastic"} << QStringList{} << QStringList{"--rounding"};
    QTest::newRow("ptq adaround on fp8") << "ptq" << QStringList{"--rounding", "adaround", "--format", "fp8-e4m3"} << QStringList{}
                                         << QStringList{"--rounding"};
    // AdaRound picks floor(w / s) or the level above, 0 for some weights of binary's {-1, +1}: binary
    // layers keep their sign (tester 17: an internal error after AdaRound had run every layer).
    QTest::newRow("ptq adaround on binary") << "ptq" << QStringList{"--rounding", "adaround", "--format", "binary", "--adaround-iters", "5"}
                                            << QStringList{} << QStringList{"--rounding"};
    QTest::newRow("ptq adaround, one layer binary")
        << "ptq" << QStringList{"--rounding", "adaround", "--format", "int4", "--layer", "fc1=binary", "--adaround-iters", "5"}
        << QStringList{} << QStringList{};
    QTest::newRow("ptq fp8 --granularity --narrow-range") << "ptq" << QStringList{"--format", "fp8-e4m3", "--granularity", "tensor", "--narrow-range"}
                                                          << QStringList{} << QStringList{"--granularity", "--narrow-range"};
    QTest::newRow("qat fp8 --quantizer lsq --first-last-8bit")
        << "qat" << QStringList{"--format", "fp8-e4m3", "--quantizer", "lsq", "--first-last-8bit"} << QStringList{}
        << QStringList{"--first-last-8bit", "--quantizer"};
    // LSQ starts its steps from --lsq-init: the observers' calibrations were ignored without a word.
    QTest::newRow("qat lsq --calibration --act-calibration --percentile")
        << "qat" << QStringList{"--quantizer", "lsq", "--calibration", "percentile", "--percentile", "90", "--act-calibration", "minmax"}
        << QStringList{} << QStringList{"--calibration", "--act-calibration", "--percentile"};
    QTest::newRow("qat lsq range start reads --calibration")
        << "qat" << QStringList{"--quantizer", "lsq", "--lsq-init", "range", "--calibration", "percentile", "--act-calibration", "minmax"}
        << QStringList{} << QStringList{"--act-calibration"};
    QTest::newRow("ptq fp8 --granularity for an int4 layer")
        << "ptq" << QStringList{"--format", "fp8-e4m3", "--granularity", "tensor", "--layer", "fc1=int4"} << QStringList{} << QStringList{};
    // mlp has no BatchNorm: --bn-reestimate re-estimates nothing (tester 10: accepted without a word).
    QTest::newRow("qat --bn-reestimate without a BatchNorm") << "qat" << QStringList{"--bn-reestimate", "2"} << QStringList{}
                                                             << QStringList{"--bn-reestimate"};
    // nor does --bn-freeze-epoch freeze anything (tester 16: accepted without a word)
    QTest::newRow("qat --bn-freeze-epoch without a BatchNorm")
        << "qat" << QStringList{"--bn-freeze-epoch", "1", "--bn-reestimate", "2"} << QStringList{}
        << QStringList{"--bn-reestimate", "--bn-freeze-epoch"};
    QTest::newRow("--image-shape and --test-fraction on IDX")
        << "fp32" << QStringList{"--image-shape", "1x28x28", "--test-fraction", "0.3"} << QStringList{}
        << QStringList{"--image-shape", "--test-fraction"};
}

void TestCli::ignoredOptionsAreNamed()
{
    QFETCH(QString, strategy);
    QFETCH(QStringList, options);
    QFETCH(QStringList, ignored);
    QFETCH(QStringList, dataIgnored);
    const Result r = runCli(QStringList{"train", "--data", m_valid, "--json", "--quiet", "--model", "mlp", "--train-limit", "100",
                                        "--test-limit", "50", "--strategy", strategy} + options);
    QVERIFY2(r.exitCode == kExitOk, qPrintable(QString("exit %1: %2").arg(r.exitCode).arg(r.err)));
    const QStringList lines = r.err.split('\n', Qt::SkipEmptyParts).filter("is ignored by");
    QCOMPARE(lines.size(), ignored.size());
    for (const QString& flag : ignored) {
        const QStringList mine = lines.filter(flag + " is ignored by --strategy " + strategy + "; it is used by ");
        QVERIFY2(mine.size() == 1, qPrintable(r.err));
        const QString users = mine[0].section("it is used by ", 1);
        QVERIFY2(!users.isEmpty() && !users.split(", ").contains(strategy), qPrintable(mine[0]));
        QCOMPARE(users.toStdString(), strategiesUsing(flag.mid(2).toStdString()));
    }
    const QStringList dataLines = r.err.split('\n', Qt::SkipEmptyParts).filter(" is ignored: ");
    QCOMPARE(dataLines.size(), dataIgnored.size());
    for (const QString& flag : dataIgnored) QVERIFY2(dataLines.filter(flag + " is ignored: ").size() == 1, qPrintable(r.err));
    nlohmann::json start;
    for (const QString& line : r.out.split('\n', Qt::SkipEmptyParts)) {
        const nlohmann::json j = nlohmann::json::parse(line.toStdString());
        if (j["event"] == "start") start = j;
    }
    QVERIFY2(start.contains("ignored_options"), start.dump().c_str());
    QStringList listed;
    for (const auto& o : start["ignored_options"]) listed << QString::fromStdString(o.get<std::string>());
    QCOMPARE(listed, ignored + dataIgnored);
}

// Ctrl-C (SIGINT) or SIGTERM during training: the run stops within a batch, still reports "done"
// with stopped=true, and exits with 128 + the signal (130, 143). The --export it was given is not
// written, and a last line says so; the text output names the signal (tester 17: SIGTERM ended
// the process with no word and exit 143 from the default action).
void TestCli::interruptStopsCleanly_data()
{
    QTest::addColumn<int>("signal");
    QTest::addColumn<bool>("json");
    QTest::newRow("SIGINT json") << int(SIGINT) << true;
    QTest::newRow("SIGTERM json") << int(SIGTERM) << true;
    QTest::newRow("SIGTERM text") << int(SIGTERM) << false;
}

void TestCli::interruptStopsCleanly()
{
    QFETCH(int, signal);
    QFETCH(bool, json);
    QProcess p;
    const QString exportPath = m_tmp.filePath("interrupted.qsm");
    QStringList args{"train", "--data", m_valid, "--model", "mlp", "--epochs", "10000", "--quiet", "--export", exportPath};
    if (json) args << "--json";
    p.start(kCli, args);
    QVERIFY(p.waitForStarted());
    QByteArray out;
    const QByteArray started = json ? "\"event\":\"epoch\"" : "epoch 1/";
    while (!out.contains(started)) {
        QVERIFY2(p.waitForReadyRead(kRunTimeoutMs), "no epoch line");
        out += p.readAllStandardOutput();
    }
    ::kill(static_cast<pid_t>(p.processId()), signal);
    QVERIFY(p.waitForFinished(kRunTimeoutMs));
    out += p.readAllStandardOutput();
    const QString err = QString::fromUtf8(p.readAllStandardError());
    QCOMPARE(p.exitStatus(), QProcess::NormalExit);
    QCOMPARE(p.exitCode(), 128 + signal);
    QVERIFY(!QFile::exists(exportPath));
    if (!json) {
        QVERIFY2(out.contains("stopped after"), out.constData());
        QVERIFY2(err.contains("stopped (SIGTERM): --export not written (1 file(s))"), qPrintable(err));
        return;
    }
    const QList<QByteArray> lines = out.trimmed().split('\n');
    QVERIFY(lines.size() >= 2);
    const nlohmann::json done = nlohmann::json::parse(lines[lines.size() - 2].toStdString());
    QCOMPARE(QString::fromStdString(done.value("event", "")), QString("done"));
    QVERIFY(done.value("stopped", false));
    const nlohmann::json last = nlohmann::json::parse(lines.last().toStdString());
    QCOMPARE(QString::fromStdString(last.value("event", "")), QString("export_skipped"));
    QCOMPARE(QString::fromStdString(last["paths"].at(0).get<std::string>()), exportPath);
}

// --threads above the machine's hardware threads runs on that many, with a note naming both
// (TBB printed "The number of workers is currently limited to 1" on 2 cores); the start event
// gives the count used.
void TestCli::threadsAboveTheCoresAreLowered()
{
    const std::size_t cores = std::thread::hardware_concurrency();
    if (cores == 0 || cores >= 1000) QSKIP("the machine's thread count is unknown or large");
    const Result r = runCli({"train", "--data", m_valid, "--model", "mlp", "--epochs", "1", "--train-limit", "64", "--test-limit", "16",
                             "--threads", "1000", "--json"});
    QVERIFY2(r.exitCode == 0, qPrintable(r.err));
    QVERIFY2(r.err.contains(QString("--threads 1000 is more than this machine's %1 hardware threads: using %1").arg(cores)), qPrintable(r.err));
    QVERIFY2(!r.err.contains("TBB Warning"), qPrintable(r.err));
    const nlohmann::json start = nlohmann::json::parse(r.out.split('\n', Qt::SkipEmptyParts).front().toStdString());
    QCOMPARE(start.at("threads").get<std::size_t>(), cores);
}

// --version names the build's commit (built from a git checkout, as here) and the kernels this
// CPU runs, the facts a bug report needs (tester 17: the version alone said neither). A kernel
// override the CPU cannot run is named, and --version still succeeds.
void TestCli::versionNamesCommitAndKernels()
{
    const Result r = runCli({"--version"});
    QCOMPARE(r.exitCode, kExitOk);
    const QStringList lines = r.out.trimmed().split('\n');
    QCOMPARE(lines.size(), 2);
    QVERIFY2(QRegularExpression("^quantscope-cli \\d+\\.\\d+\\.\\d+( \\(commit [0-9a-f]{12}\\))?$").match(lines[0]).hasMatch(),
             qPrintable(lines[0]));
    if (QDir(QStringLiteral(QS_TEST_DATA "/../../.git")).exists() && !QStandardPaths::findExecutable("git").isEmpty())
        QVERIFY2(lines[0].contains("(commit "), qPrintable(lines[0]));
    QVERIFY2(QRegularExpression("^kernels on this CPU: integer (avx512-vnni|avx2|scalar), bf16 \\S+$").match(lines[1]).hasMatch(),
             qPrintable(lines[1]));
    // `program --version` with one more environment variable: its exit code and standard output
    const auto versionWith = [](const QString& program, const QString& var, const QString& value) {
        QProcess p;
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        env.insert(var, value);
        p.setProcessEnvironment(env);
        p.start(program, {"--version"});
        p.waitForFinished(kRunTimeoutMs);
        return std::pair{p.exitCode(), p.readAllStandardOutput()};
    };
    const auto [overridden, overriddenOut] = versionWith(kCli, "QUANTSCOPE_ISA", "no-such-kernels");
    QCOMPARE(overridden, kExitOk);
    QVERIFY2(overriddenOut.contains("unknown kernel set 'no-such-kernels'"), "the override is not named");
    // The GUI's --version (and Help > About) gives the same version and commit.
    const QString gui = QStringLiteral(QS_BINARY_DIR "/app/quantscope");
    if (!QFile::exists(gui)) return; // built without the GUI
    const auto [guiCode, guiOut] = versionWith(gui, "QT_QPA_PLATFORM", "offscreen");
    QCOMPARE(guiCode, kExitOk);
    const QString guiVersion = QString::fromUtf8(guiOut).trimmed();
    QCOMPARE(guiVersion, QString(lines[0]).replace("quantscope-cli", "QuantScope"));
}

// --validation N with --train-limit M holds the N out of the M images (M - N train), as analyze
// and the GUI's dataset dock do (tester 19: train took them from outside the M, so the dock's
// "as train --validation N" trained other images and gave other figures).
void TestCli::validationIsHeldOutOfTheLimit()
{
    const Result r = runCli({"train", "--data", m_valid, "--model", "mlp", "--epochs", "1", "--train-limit", "120", "--validation", "30",
                             "--test-limit", "16", "--json"});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(r.err));
    const nlohmann::json start = nlohmann::json::parse(r.out.split('\n', Qt::SkipEmptyParts).front().toStdString());
    QCOMPARE(start.at("train_images").get<std::size_t>(), std::size_t{90});
}

// Without --act-calibration, QAT from a fresh model calibrates its activations min-max (a moving
// average lags the ranges that grow while the weights learn: tester 19 lost 10 points of seed-cnn
// int8 on 2,000 images), a model that starts trained (a file's weights) and PTQ take PyTorch's
// moving average, and a given --act-calibration wins. The start event says which ran.
void TestCli::activationCalibrationDefault()
{
    const QString trained = m_tmp.filePath("trained-for-calibration.qsm");
    fixtures::writeDivergingModel(trained.toStdString());
    const QStringList common{"--data", m_valid, "--train-limit", "64", "--test-limit", "16", "--json", "--quiet"};
    for (const auto& [args, want] :
         {std::pair{QStringList{"--model", "mlp", "--strategy", "qat"}, "minmax"},
          std::pair{QStringList{"--model", "mlp", "--strategy", "qat", "--act-calibration", "moving-average"}, "moving-average"},
          std::pair{QStringList{"--model", "mlp", "--strategy", "ptq"}, "moving-average"},
          std::pair{QStringList{"--model", trained, "--strategy", "qat"}, "moving-average"}}) {
        const Result r = runCli(QStringList{"train"} + args + common);
        QVERIFY2(r.exitCode == kExitOk, qPrintable(args.join(' ') + ": " + r.err));
        const nlohmann::json start = nlohmann::json::parse(r.out.split('\n', Qt::SkipEmptyParts).front().toStdString());
        QCOMPARE(QString::fromStdString(start.value("act_calibration", "")), QString(want));
    }
}

// A run whose loss blows up without turning inf (--lr 100) ends "done", as before, but says why
// it failed, and its losses print in powers of ten (tester 19: "10713662395163606.0000").
void TestCli::blownUpLossIsSaid()
{
    const Result r = runCli({"train", "--data", m_valid, "--model", "mlp", "--lr", "100", "--epochs", "2", "--test-limit", "64", "--quiet"});
    QVERIFY2(r.exitCode == kExitOk, qPrintable(r.err));
    QVERIFY2(r.err.count("the run has blown up; a smaller --lr") == 1, qPrintable(r.err));
    const QRegularExpression epoch1("^epoch 1/2  train loss \\d\\.\\d+e\\+\\d+  ", QRegularExpression::MultilineOption);
    QVERIFY2(epoch1.match(r.out).hasMatch(), qPrintable(r.out));
    const Result sane = runCli({"train", "--data", m_valid, "--model", "mlp", "--epochs", "1", "--test-limit", "64", "--quiet"});
    QVERIFY2(sane.exitCode == kExitOk && !sane.err.contains("blown up"), qPrintable(sane.err));
    QVERIFY2(QRegularExpression("^epoch 1/1  train loss \\d\\.\\d{4}  ", QRegularExpression::MultilineOption).match(sane.out).hasMatch(),
             qPrintable(sane.out));
}

QTEST_GUILESS_MAIN(TestCli)
#include "tst_cli.moc"
