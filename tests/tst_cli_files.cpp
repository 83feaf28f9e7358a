// quantscope-cli with files as a user runs it (QProcess): model files as the start of a run
// (exported by an earlier run, or by PyTorch) and the input normalisation they store or lack, and
// output paths that are not plain files (devices, links, folders, standard output, the inputs).
#include "cli_fixtures.h"

#include <QtTest>

#include <QRegularExpression>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <sys/resource.h>

using namespace quantscope;
using namespace cli_fixtures;

class TestCliFiles : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void modelFiles();
    void writesThroughDevicesAndLinks();
    void fileSizeLimit();
    void evalNormalizeAgainstTheStoredOne();
    void resizeRefusedBeforeTheImages();
    void qsmNameLimitBeforeTraining();

private:
    QTemporaryDir m_tmp;
    QString m_valid;
};

void TestCliFiles::initTestCase()
{
    startWithSyntheticFolder(m_tmp, m_valid);
}

// Model files as the start of a run: a model exported by one run is quantized without training by
// the next (the same FP32 accuracy, --epochs 0); a PyTorch export (torch.onnx.export of the
// reference resnet8) fine-tunes with QAT; eval takes --normalize for it.
void TestCliFiles::modelFiles()
{
    const QString onnx = m_tmp.filePath("mlp.onnx"), qsm = m_tmp.filePath("mlp.qsm");
    const QStringList common{"--data", m_valid, "--train-limit", "500", "--test-limit", "200", "--quiet", "--json"};
    const Result first = runCli(QStringList{"train", "--model", "mlp", "--export", onnx + "," + qsm} + common);
    QVERIFY2(first.exitCode == kExitOk, qPrintable(first.err));
    const nlohmann::json trained = doneOf(first);
    const Result ptq = runCli(QStringList{"train", "--model", onnx, "--strategy", "ptq", "--epochs", "0"} + common);
    QVERIFY2(ptq.exitCode == kExitOk, qPrintable(ptq.err));
    const nlohmann::json d = doneOf(ptq);
    QCOMPARE(d["epochs_done"].get<int>(), 0);
    QCOMPARE(d["test_acc"].get<double>(), trained["test_acc"].get<double>());
    QVERIFY(std::abs(d["quant_test_acc"].get<double>() - trained["test_acc"].get<double>()) < 0.05);
    // A model file under another name is named for what it holds, by every command (tester 14:
    // "not a model file", "unknown model", "neither a model preset nor a .qsm or .onnx file").
    for (const auto& [source, kind] : {std::pair{onnx, QString("an ONNX model: rename it to end in .onnx")},
                                       std::pair{qsm, QString("a QuantScope .qsm model: rename it to end in .qsm")}}) {
        const QString misnamed = m_tmp.filePath("model.bin");
        QFile::remove(misnamed);
        QVERIFY(QFile::copy(source, misnamed));
        for (const QStringList& cmd : {QStringList{"train", "--model", misnamed, "--data", m_valid, "--epochs", "0", "--strategy", "ptq"},
                                       QStringList{"eval", misnamed, "--data", m_valid}, QStringList{"info", misnamed},
                                       QStringList{"analyze", "compare", misnamed, "--data", m_valid}}) {
            const Result r = runCli(cmd);
            QVERIFY2(r.exitCode != kExitOk && r.err.contains(misnamed + ": holds " + kind), qPrintable(cmd.join(' ') + ": " + r.err));
        }
    }
    const Result evText = runCli({"eval", onnx, "--data", m_valid, "--test-limit", "20"});
    QVERIFY2(evText.exitCode == kExitOk, qPrintable(evText.err));
    QVERIFY2(evText.out.contains("input normalisation: mean ") && evText.out.contains(" (stored in the file)\n"), qPrintable(evText.out));

    // QuantScope's FP32 ONNX export of a BatchNorm preset folds the BatchNorm: --init cannot load
    // it into the preset's BatchNorm layers and says to use --model FILE (it told them to choose
    // resnet8, which they had chosen; tester 12).
    const QString r8 = m_tmp.filePath("r8.onnx");
    const Result r8Trained = runCli({"train", "--model", "resnet8", "--data", m_valid, "--train-limit", "64", "--test-limit", "20",
                                     "--epochs", "1", "--quiet", "--export", r8});
    QVERIFY2(r8Trained.exitCode == kExitOk, qPrintable(r8Trained.err));
    // ... and says so as it exports (tester 10: the export line named nothing of it).
    QVERIFY2(r8Trained.out.contains("exported " + r8) && r8Trained.out.contains("9 BatchNorms are folded into the convolutions before them"),
             qPrintable(r8Trained.out));
    const Result initFolded = runCli({"train", "--model", "resnet8", "--init", r8, "--data", m_valid, "--test-limit", "20",
                                      "--strategy", "ptq", "--epochs", "0", "--quiet"});
    QCOMPARE(initFolded.exitCode, kExitUsage);
    QVERIFY2(initFolded.err.contains("BatchNorm folded") && initFolded.err.contains("--model FILE"), qPrintable(initFolded.err));
    QCOMPARE(runCli({"train", "--model", r8, "--data", m_valid, "--test-limit", "20", "--strategy", "ptq", "--epochs", "0", "--quiet"}).exitCode,
             kExitOk);

    const QString ref = QStringLiteral(QS_TEST_DATA "/../onnx_import/ref_resnet8.onnx");
    // --init of another network: the advice names a preset only when the file holds one (QuantScope
    // wrote it); a PyTorch export's model name is its file's stem, which --model does not take, so
    // it names the file's layers and --model FILE (tester 14: "it holds a ref_resnet8 model; choose
    // that model").
    const Result initOther = runCli({"train", "--model", "lenet5", "--init", onnx, "--data", m_valid, "--test-limit", "20",
                                     "--strategy", "ptq", "--epochs", "0", "--quiet"});
    QCOMPARE(initOther.exitCode, kExitUsage);
    QVERIFY2(initOther.err.contains("choose --model mlp"), qPrintable(initOther.err));
    const Result initTorch = runCli({"train", "--model", "mlp", "--init", ref, "--data", m_valid, "--test-limit", "20",
                                     "--strategy", "ptq", "--epochs", "0", "--quiet", "--normalize", "0.286,0.353"});
    QCOMPARE(initTorch.exitCode, kExitUsage);
    QVERIFY2(initTorch.err.contains("the file's layers are conv1, layer1.conv1, layer1.conv2, layer2.conv1, ...;") && initTorch.err.contains("(--model " + ref + ")") &&
                 !initTorch.err.contains("choose"),
             qPrintable(initTorch.err));
    // A file with more weights than the chosen preset takes (seed-cnn-bn's BatchNorms into seed-cnn)
    // is refused, naming them (tester 24: dropped in silence; the model scored otherwise).
    const auto exported = [&](const QString& preset, const QString& file) {
        return runCli({"train", "--model", preset, "--data", m_valid, "--train-limit", "64", "--test-limit", "20", "--quiet", "--export", file});
    };
    const auto initInto = [&](const QString& preset, const QString& file) {
        return runCli({"train", "--model", preset, "--init", file, "--data", m_valid, "--test-limit", "20", "--strategy", "ptq", "--epochs", "0",
                       "--quiet"});
    };
    const QString bn = m_tmp.filePath("bn.qsm"), plain = m_tmp.filePath("plain.qsm");
    QVERIFY(exported("seed-cnn-bn", bn).exitCode == kExitOk);
    const Result initDrops = initInto("seed-cnn", bn);
    QCOMPARE(initDrops.exitCode, kExitUsage);
    QVERIFY2(initDrops.err.contains("layers 'bn1' (BatchNorm2d), 'bn2' (BatchNorm2d)") && initDrops.err.contains("choose --model seed-cnn-bn"),
             qPrintable(initDrops.err));
    QCOMPARE(initInto("seed-cnn-bn", bn).exitCode, kExitOk);
    // The converse: seed-cnn never had a BatchNorm, so its file is named as another preset, not as folded.
    QVERIFY(exported("seed-cnn", plain).exitCode == kExitOk);
    const Result initMissing = initInto("seed-cnn-bn", plain);
    QCOMPARE(initMissing.exitCode, kExitUsage);
    QVERIFY2(initMissing.err.contains("choose --model seed-cnn") && !initMissing.err.contains("folded"), qPrintable(initMissing.err));
    const Result qat = runCli(QStringList{"train", "--model", ref, "--strategy", "qat", "--epochs", "1", "--normalize", "0.286,0.353"} +
                              QStringList{"--data", m_valid, "--train-limit", "256", "--test-limit", "100", "--quiet", "--json"});
    QVERIFY2(qat.exitCode == kExitOk, qPrintable(qat.err));
    QVERIFY(doneOf(qat)["quant_test_acc"].is_number());
    // PyTorch's eval-mode export folded the BatchNorms: fine-tuning says what that means (a
    // ResNet-18 fell to 0 % without a word; tester 11).
    const nlohmann::json qatStart = nlohmann::json::parse(qat.out.section('\n', 0, 0).toStdString());
    QVERIFY2(qatStart.at("model_notes").dump().find("BatchNorm folded into 9 convolutions") != std::string::npos &&
                 qatStart.at("model_notes").dump().find("TrainingMode.PRESERVE") != std::string::npos,
             qatStart.dump().c_str());
    // --reinit of that file trains the architecture from scratch without its BatchNorms, and says
    // so (tester 15: a mobilenet-style network stayed at chance in silence).
    const QStringList fresh{"train", "--model", ref, "--reinit", "--epochs", "1", "--normalize", "0.286,0.353", "--data", m_valid,
                            "--train-limit", "64", "--test-limit", "20"};
    const Result freshText = runCli(fresh + QStringList{"--quiet"});
    QVERIFY2(freshText.exitCode == kExitOk, qPrintable(freshText.err));
    QVERIFY2(freshText.err.contains("warning: " + ref + ": the file has BatchNorm folded into 9 convolutions") &&
                 freshText.err.contains("--reinit trains the architecture without BatchNorm") && freshText.err.contains("TrainingMode.PRESERVE"),
             qPrintable(freshText.err));
    const Result freshJson = runCli(fresh + QStringList{"--json"});
    QVERIFY2(freshJson.exitCode == kExitOk, qPrintable(freshJson.err));
    QVERIFY2(nlohmann::json::parse(freshJson.out.section('\n', 0, 0).toStdString()).at("model_notes").dump().find("--reinit trains") != std::string::npos,
             qPrintable(freshJson.out.section('\n', 0, 0)));
    const Result ev = runCli({"eval", ref, "--data", m_valid, "--test-limit", "100", "--normalize", "0.286,0.353", "--json"});
    QVERIFY2(ev.exitCode == kExitOk, qPrintable(ev.err));
    // A plan's input normalisation (what analyze search measured with) is the run's for a file that
    // stores none, unless --normalize says otherwise (tester 18 #9).
    const QString normPlan = m_tmp.filePath("norm.plan.json");
    {
        QFile f(normPlan);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"default": {"format": "int8", "normalize": "0.286,0.353"}})");
    }
    for (const QString& given : {QString(), QString("0.5,0.25")}) {
        QStringList args{"train", "--model", ref, "--strategy", "ptq", "--epochs", "0", "--plan", normPlan, "--data", m_valid,
                         "--test-limit", "20", "--quiet", "--json"};
        if (!given.isEmpty()) args << "--normalize" << given;
        const Result p = runCli(args);
        QVERIFY2(p.exitCode == kExitOk, qPrintable(p.err));
        const nlohmann::json s = nlohmann::json::parse(p.out.section('\n', 0, 0).toStdString());
        QCOMPARE(s.at("normalization").get<std::string>(), std::string(given.isEmpty() ? "mean 0.2860, std 0.3530" : "mean 0.5000, std 0.2500"));
        QCOMPARE(s.at("plan").at("default").at("normalize").get<std::string>(), std::string("0.286,0.353"));
    }
    // A plan whose normalisation does not parse is refused before anything runs, naming the plan.
    const QString badNorm = m_tmp.filePath("badnorm.plan.json");
    {
        QFile f(badNorm);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"default": {"format": "int8", "normalize": "0.5"}})");
    }
    const Result refused = runCli({"train", "--model", ref, "--strategy", "ptq", "--epochs", "0", "--plan", badNorm, "--data", m_valid,
                                   "--test-limit", "20", "--quiet"});
    QCOMPARE(refused.exitCode, kExitUsage);
    QVERIFY2(refused.err.contains("plan " + badNorm + ": \"default\".\"normalize\": normalisation '0.5': expected MEAN,STD"),
             qPrintable(refused.err));
    // In text mode it says where the normalisation came from.
    const Result planText = runCli({"train", "--model", ref, "--strategy", "ptq", "--epochs", "0", "--plan", normPlan, "--data", m_valid,
                                    "--test-limit", "20", "--quiet"});
    QVERIFY2(planText.exitCode == kExitOk, qPrintable(planText.err));
    QVERIFY2(planText.err.contains("input normalisation mean 0.2860, std 0.3530, from the plan " + normPlan), qPrintable(planText.err));
    QVERIFY(!planText.err.contains("does not say how its input was normalised"));
    // Without --normalize, a file that does not say how its input was normalised gets the train
    // set's statistics, and eval says so.
    const Result guessed = runCli({"eval", ref, "--data", m_valid, "--test-limit", "20"});
    QVERIFY2(guessed.exitCode == kExitOk, qPrintable(guessed.err));
    QVERIFY2(guessed.err.contains("does not say how its input was normalised: using the train set's statistics"), qPrintable(guessed.err));
    QVERIFY2(guessed.out.contains("input normalisation: mean ") && guessed.out.contains(" (the train set's statistics)\n"),
             qPrintable(guessed.out));
    QVERIFY(!ev.err.contains("does not say how its input")); // --normalize given
    // The statistics of the train set at --resize's size, taken image by image (Dataset's
    // trainForStatistics): at the model's own size, the same evaluation.
    const Result guessedResized = runCli({"eval", ref, "--data", m_valid, "--test-limit", "20", "--resize", "28x28"});
    QVERIFY2(guessedResized.exitCode == kExitOk, qPrintable(guessedResized.err));
    QCOMPARE(guessedResized.out, guessed.out);
    // A --resize the model cannot take is refused before any image is read or resized.
    const Result wrongSize = runCli({"eval", ref, "--data", m_valid, "--test-limit", "20", "--resize", "56x56"});
    QCOMPARE(wrongSize.exitCode, kExitUsage);
    QVERIFY2(wrongSize.err.contains("takes 1x28x28 images; --resize 56x56 gives another size: resize to 28x28"), qPrintable(wrongSize.err));
    // analyze compare / sensitivity on the exported model, as JSON.
    const Result cmp = runCli({"analyze", "compare", onnx, "--data", m_valid, "--images", "32", "--format", "int4", "--json"});
    QVERIFY2(cmp.exitCode == kExitOk, qPrintable(cmp.err));
    const nlohmann::json c = nlohmann::json::parse(cmp.out.toStdString());
    QCOMPARE(c["event"].get<std::string>(), std::string("compare"));
    QVERIFY(c["layers"].size() >= 4);
    QVERIFY(c["layers"][0].contains("sqnr_db") && c["layers"][0].contains("alone_sqnr_db"));
    const Result sens = runCli({"analyze", "sensitivity", onnx, "--data", m_valid, "--validation", "100", "--formats", "int8,int2",
                                "--calib-images", "100", "--json"});
    QVERIFY2(sens.exitCode == kExitOk, qPrintable(sens.err));
    const nlohmann::json r = nlohmann::json::parse(sens.out.toStdString());
    QCOMPARE(r["cells"].size(), std::size_t{3 * 2}); // mlp: fc1, fc2, fc3 x int8, int2
    QCOMPARE(r["validation_images"].get<int>(), 100);
    // Another analysis's option is refused, not ignored: compare --formats ran int8.
    for (const QStringList& wrong : {QStringList{"compare", onnx, "--formats", "int4,int2"}, QStringList{"search", onnx, "--calibration", "mse"},
                                     QStringList{"sensitivity", onnx, "--plan", "p.json"}, QStringList{"search", onnx, "--format", "int4"}}) {
        const Result r = runCli(QStringList{"analyze"} + wrong + QStringList{"--data", m_valid});
        QCOMPARE(r.exitCode, kExitUsage);
        QVERIFY2(r.err.contains(wrong[2] + " is not an option of analyze " + wrong[0]), qPrintable(r.err));
    }
    const Result listedTwice = runCli({"analyze", "search", onnx, "--data", m_valid, "--formats", "int8,int4,int8", "--max-drop", "1"});
    QCOMPARE(listedTwice.exitCode, kExitUsage); // it measured int8 twice, out of --max-evals
    QVERIFY2(listedTwice.err.contains("--formats names int8 twice"), qPrintable(listedTwice.err));
    const Result badFormat = runCli({"analyze", "sensitivity", onnx, "--data", m_valid, "--formats", "int99"});
    QCOMPARE(badFormat.exitCode, kExitUsage);
    QVERIFY2(badFormat.err.contains("int99"), qPrintable(badFormat.err));

    // A model trained with another normalisation than the data's statistics: a run from its file
    // takes the file's (the same accuracy as the run that trained it, and as eval of the file).
    const QString own = m_tmp.filePath("mlp_norm.qsm");
    const Result normed = runCli(QStringList{"train", "--model", "mlp", "--normalize", "0.5,0.25", "--export", own} + common);
    QVERIFY2(normed.exitCode == kExitOk, qPrintable(normed.err));
    const Result again = runCli(QStringList{"train", "--model", own, "--epochs", "0"} + common);
    QVERIFY2(again.exitCode == kExitOk, qPrintable(again.err));
    QCOMPARE(doneOf(again)["test_acc"].get<double>(), doneOf(normed)["test_acc"].get<double>());

    // Our own export stores its normalisation: --normalize is refused for it.
    const Result twice = runCli({"eval", onnx, "--data", m_valid, "--normalize", "0.5,0.5"});
    QCOMPARE(twice.exitCode, kExitUsage);
    QVERIFY2(twice.err.contains("stores its input normalisation"), qPrintable(twice.err));
}

// Output paths that are not plain files: a device (/dev/full) is written in place and its error
// reported, never replaced by a regular file (as root, a rename over /dev/full did that); a
// symbolic link stays a link to the file written; a folder is refused; and standard output on a
// full device is an I/O error, not exit 0 with the output lost.
void TestCliFiles::writesThroughDevicesAndLinks()
{
    namespace fs = std::filesystem;
    if (!fs::is_character_file("/dev/full")) QSKIP("no /dev/full here");
    const QString model = m_tmp.filePath("devices.qsm");
    const Result trained = runCli({"train", "--model", "mlp", "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                                   "--quiet", "--export", model});
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    const QStringList eval{"eval", model, "--data", m_valid, "--test-limit", "50", "--predictions"};

    const Result full = runCli(eval + QStringList{"/dev/full"});
    QCOMPARE(full.exitCode, kExitData);
    QVERIFY2(full.err.contains("/dev/full: write failed: the disk is full"), qPrintable(full.err));
    QVERIFY(fs::is_character_file("/dev/full"));
    // ... after the evaluation's report, which a full disk used to swallow (tester 12).
    QVERIFY2(full.out.contains("test accuracy"), qPrintable(full.out));
    const Result fullPlan = runCli({"analyze", "search", model, "--data", m_valid, "--formats", "int8,int4", "--max-drop", "50",
                                    "--max-evals", "2", "--validation", "100", "--test-limit", "50", "--calib-images", "50",
                                    "--plan-out", "/dev/full"});
    QCOMPARE(fullPlan.exitCode, kExitData);
    QVERIFY2(fullPlan.out.contains("chosen:"), qPrintable(fullPlan.out + fullPlan.err));
    QVERIFY2(fullPlan.err.contains("/dev/full: write failed: the disk is full"), qPrintable(fullPlan.err));
    // A folder, a missing folder and a dangling link's missing folder are refused before the
    // work (train --export to a folder trained the whole run first).
    const QString danglingLink = m_tmp.filePath("dangling.qsm"), folderQsm = m_tmp.filePath("isdir.qsm");
    QVERIFY(QFile::link(m_tmp.filePath("nowhere/x.qsm"), danglingLink));
    QVERIFY(QDir().mkpath(folderQsm));
    // /sys takes no new files whatever its mode says (access() grants root everything; tester 10's
    // --export /sys/x.qsm failed after training).
    for (const QString& out : {folderQsm, danglingLink, m_tmp.filePath("nowhere/p.qsm"), QString("/sys/p.qsm")}) {
        const Result early = runCli(eval + QStringList{out});
        QCOMPARE(early.exitCode, kExitData);
        QVERIFY2(!early.out.contains("test accuracy"), qPrintable(out + ": " + early.out));
        const Result exported = runCli({"train", "--model", "mlp", "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                                        "--export", out});
        QCOMPARE(exported.exitCode, kExitData);
        QVERIFY2(!exported.out.contains("epoch 1"), qPrintable(out + ": " + exported.out));
    }

    // A failed --export file does not cost the ones after it: each is written and reported, and
    // the first failure's exit code is the command's (one failure used to skip the rest).
    const QString fullQsm = m_tmp.filePath("full.qsm"), after = m_tmp.filePath("after-full.onnx");
    QVERIFY(QFile::link("/dev/full", fullQsm));
    const Result twoExports = runCli({"train", "--model", "mlp", "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                                      "--export", fullQsm + "," + after});
    QCOMPARE(twoExports.exitCode, kExitData);
    QVERIFY2(twoExports.err.contains("full.qsm: write failed: the disk is full"), qPrintable(twoExports.err));
    QVERIFY2(twoExports.out.contains("exported " + after), qPrintable(twoExports.out));
    QVERIFY(fs::file_size(after.toStdString()) > 1000);
    QVERIFY(fs::is_symlink(fullQsm.toStdString()) && fs::is_character_file("/dev/full"));

    const QString target = m_tmp.filePath("predictions.csv"), link = m_tmp.filePath("latest.csv");
    QVERIFY(QFile::link(target, link));
    const Result linked = runCli(eval + QStringList{link});
    QVERIFY2(linked.exitCode == kExitOk, qPrintable(linked.err));
    QVERIFY(fs::is_symlink(link.toStdString()));
    QVERIFY(fs::file_size(target.toStdString()) > 50); // a header and 50 rows

    const Result folder = runCli(eval + QStringList{m_tmp.path()});
    QCOMPARE(folder.exitCode, kExitData);
    QVERIFY2(folder.err.contains("is a folder"), qPrintable(folder.err));

    // "-" and /dev/stdout write to standard output itself (a file named "-" was created; through
    // the link, a temporary was renamed over the shell's redirection and the report was lost).
    // Standard output then holds the CSV alone, a header and a row an image (index, predicted class
    // and name, label and name, correct, and no source for IDX), and the report (text or JSON)
    // goes to stderr: `eval --predictions - > p.csv` had the report in the CSV.
    const auto csvOnly = [](const QString& text) {
        return QRegularExpression("\\Aindex,predicted_class,predicted_name,label,label_name,correct,source\n"
                                  "(\\d+,\\d+,[^,\n]*,\\d+,[^,\n]*,[01],\n){50}\\z")
            .match(text)
            .hasMatch();
    };
    const Result dash = runCli(eval + QStringList{"-"});
    QVERIFY2(dash.exitCode == kExitOk, qPrintable(dash.err));
    QVERIFY2(csvOnly(dash.out), qPrintable(dash.out));
    QVERIFY2(dash.err.contains("test accuracy"), qPrintable(dash.err));
    const Result dashJson = runCli(eval + QStringList{"-", "--json"});
    QVERIFY2(dashJson.exitCode == kExitOk, qPrintable(dashJson.err));
    QVERIFY2(csvOnly(dashJson.out), qPrintable(dashJson.out));
    QVERIFY2(dashJson.err.contains("\"event\":\"eval\""), qPrintable(dashJson.err));
    QVERIFY(!QFileInfo::exists("-"));
    const QString redirected = m_tmp.filePath("stdout.txt");
    QProcess r;
    r.setStandardOutputFile(redirected);
    r.start(kCli, eval + QStringList{"/dev/stdout"});
    QVERIFY(r.waitForStarted() && r.waitForFinished(kRunTimeoutMs));
    QCOMPARE(r.exitCode(), kExitOk);
    QFile got(redirected);
    QVERIFY(got.open(QIODevice::ReadOnly));
    const QByteArray text = got.readAll();
    QVERIFY2(csvOnly(QString::fromUtf8(text)), text.constData());
    QVERIFY(r.readAllStandardError().contains("test accuracy"));

    // An output that is one of the command's inputs is refused before anything is written.
    const qint64 modelBytes = QFileInfo(model).size();
    const Result overModel = runCli(eval + QStringList{QDir(m_tmp.path()).filePath("./devices.qsm")});
    QCOMPARE(overModel.exitCode, kExitUsage);
    QVERIFY2(overModel.err.contains("is the model this command reads"), qPrintable(overModel.err));
    const Result overPlan = runCli({"analyze", "search", model, "--data", m_valid, "--formats", "int8", "--max-drop", "1", "--plan-out", model});
    QCOMPARE(overPlan.exitCode, kExitUsage);
    const Result overExport = runCli({"train", "--model", model, "--data", m_valid, "--strategy", "ptq", "--epochs", "0", "--export", model});
    QCOMPARE(overExport.exitCode, kExitUsage);
    QCOMPARE(QFileInfo(model).size(), modelBytes);
    // ... and so is a file inside the data folder (tester 22: eval --predictions DATA/t10k-labels-idx1-ubyte
    // replaced the labels with a CSV); a new file there replaces nothing
    const QFileInfoList dataFiles = QDir(m_valid).entryInfoList(QDir::Files, QDir::Name);
    QVERIFY(!dataFiles.isEmpty());
    const QString dataFile = dataFiles.front().filePath();
    const auto dataBytes = [&] {
        QFile f(dataFile);
        return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
    };
    const QByteArray dataBefore = dataBytes();
    const Result overData = runCli(QStringList{"eval", model, "--data", m_valid, "--predictions", dataFile});
    QCOMPARE(overData.exitCode, kExitUsage);
    QVERIFY2(overData.err.contains("is a file in the data (--data) folder") && overData.err.contains("writing it would replace it"),
             qPrintable(overData.err));
    const Result overDataPlan = runCli({"analyze", "search", model, "--data", m_valid, "--formats", "int8", "--max-drop", "1", "--plan-out",
                                        QDir(m_valid).filePath("../" + QDir(m_valid).dirName() + "/" + dataFiles.front().fileName())});
    QCOMPARE(overDataPlan.exitCode, kExitUsage);
    QCOMPARE(dataBytes(), dataBefore);
    const QString beside = QDir(m_valid).filePath("predictions-beside.csv");
    const Result newInData = runCli(QStringList{"eval", model, "--data", m_valid, "--predictions", beside});
    QVERIFY2(newInData.exitCode == kExitOk, qPrintable(newInData.err));
    QVERIFY(QFile::remove(beside));
    QCOMPARE(runCli({"train", "--lr", "0x10"}).exitCode, kExitUsage); // strtod read hexadecimal

    QProcess p;
    p.setStandardOutputFile("/dev/full");
    p.start(kCli, {"info", model});
    QVERIFY(p.waitForStarted() && p.waitForFinished(kRunTimeoutMs));
    QCOMPARE(p.exitCode(), kExitData);
    const QString err = QString::fromUtf8(p.readAllStandardError());
    QVERIFY2(err.contains("write failed: standard output: the disk is full"), qPrintable(err));
}

// A write past the file size limit (ulimit -f) is a write error like a full disk: exit 3, a
// message naming the file and the limit, and no temporary file left behind. SIGXFSZ killed the
// process silently (exit 153) with its temporary file (tester 17).
void TestCliFiles::fileSizeLimit()
{
    namespace fs = std::filesystem;
    const QString dir = m_tmp.filePath("fsize");
    QVERIFY(QDir().mkpath(dir));
    const QString model = dir + "/small.qsm";
    const Result trained = runCli({"train", "--model", "mlp", "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                                   "--quiet", "--export", model});
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    QVERIFY(QFileInfo(model).size() > 20000);
    const auto limited = [&](const QStringList& args, rlim_t bytes) {
        return runCli(args, [bytes] {
            const rlimit limit{bytes, bytes};
            ::setrlimit(RLIMIT_FSIZE, &limit);
        });
    };
    const QString exported = dir + "/big.qsm", predictions = dir + "/p.csv";
    const Result exp = limited({"train", "--model", model, "--data", m_valid, "--strategy", "ptq", "--epochs", "0",
                                "--test-limit", "50", "--export", exported}, 16384);
    QCOMPARE(exp.exitCode, kExitData);
    QVERIFY2(exp.err.contains(exported + ": write failed: the file is larger than the file size limit"), qPrintable(exp.err));
    const Result eval = limited({"eval", model, "--data", m_valid, "--predictions", predictions}, 1024); // 250 rows
    QCOMPARE(eval.exitCode, kExitData);
    QVERIFY2(eval.err.contains(predictions + ": write failed"), qPrintable(eval.err));
    QStringList left;
    for (const auto& e : fs::directory_iterator(dir.toStdString())) left << QString::fromStdString(e.path().filename().string());
    QCOMPARE(left, QStringList{"small.qsm"});
}

// eval --normalize on a model that stores its normalisation: the same values again are accepted
// (a script passing the same flags to every model used to fail), others are a usage error naming both.
void TestCliFiles::evalNormalizeAgainstTheStoredOne()
{
    const QString model = m_tmp.filePath("normalized.qsm");
    const Result trained = runCli({"train", "--model", "mlp", "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                                   "--quiet", "--normalize", "0.25,0.5", "--export", model});
    QVERIFY2(trained.exitCode == kExitOk, qPrintable(trained.err));
    const QStringList eval{"eval", model, "--data", m_valid, "--test-limit", "50", "--normalize"};
    const Result same = runCli(eval + QStringList{"0.25,0.5"});
    QVERIFY2(same.exitCode == kExitOk, qPrintable(same.err));
    const Result plain = runCli({"eval", model, "--data", m_valid, "--test-limit", "50"});
    QCOMPARE(same.out, plain.out);
    // Options this float model's run does not use are named (they passed in silence).
    const Result unused = runCli({"eval", model, "--data", m_valid, "--test-limit", "50", "--isa", "avx2", "--passes", "2"});
    QVERIFY2(unused.exitCode == kExitOk, qPrintable(unused.err));
    QVERIFY2(unused.err.contains("--isa is ignored") && unused.err.contains("--passes is ignored: it is for --bench"), qPrintable(unused.err));
    QCOMPARE(unused.out, plain.out);
    // The fake-quant reference of an FP32 model is the model: said, and the same result (tester 16)
    const Result reference = runCli({"eval", model, "--data", m_valid, "--test-limit", "50", "--runner", "reference"});
    QVERIFY2(reference.exitCode == kExitOk, qPrintable(reference.err));
    QVERIFY2(reference.err.contains("is an FP32 model: it quantizes nothing, so --runner reference runs it in FP32"), qPrintable(reference.err));
    QCOMPARE(reference.out, plain.out);
    QVERIFY2(!plain.err.contains("--runner reference"), qPrintable(plain.err));
    const Result other = runCli(eval + QStringList{"0.3,0.5"});
    QCOMPARE(other.exitCode, kExitUsage);
    QVERIFY2(other.err.contains("stores its input normalisation (mean 0.2500, std 0.5000), and --normalize asks for mean 0.3000, std 0.5000"),
             qPrintable(other.err));
    // train from the file's weights refuses another normalisation as eval does (it replaced the
    // stored one in silence, and the exported model carried it); --reinit trains afresh with it.
    const QStringList fromFile{"train", "--model", model, "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                               "--quiet", "--strategy", "ptq", "--epochs", "0", "--normalize"};
    const Result trainOther = runCli(fromFile + QStringList{"0.3,0.5"});
    QCOMPARE(trainOther.exitCode, kExitUsage);
    QVERIFY2(trainOther.err.contains("its weights were trained on the stored one"), qPrintable(trainOther.err));
    QCOMPARE(runCli(fromFile + QStringList{"0.25,0.5"}).exitCode, kExitOk);
    const Result fresh = runCli({"train", "--model", model, "--reinit", "--data", m_valid, "--train-limit", "200", "--test-limit", "50",
                                 "--quiet", "--normalize", "0.3,0.5"});
    QVERIFY2(fresh.exitCode == kExitOk, qPrintable(fresh.err));
    // --init FILE (the file's weights in the preset) keeps the stored normalisation as --model
    // FILE does: it used the train set's statistics in silence, and the accuracy fell to chance.
    const QStringList init{"train", "--model", "mlp", "--init", model, "--data", m_valid, "--test-limit", "50",
                           "--quiet", "--strategy", "ptq", "--epochs", "0", "--json"};
    const Result initKept = runCli(init);
    QVERIFY2(initKept.exitCode == kExitOk, qPrintable(initKept.err));
    const nlohmann::json start = nlohmann::json::parse(initKept.out.section('\n', 0, 0).toStdString());
    QCOMPARE(start.at("normalization").get<std::string>(), std::string("mean 0.2500, std 0.5000"));
    QCOMPARE(doneOf(initKept)["test_acc"].get<double>(), doneOf(runCli(fromFile.mid(0, fromFile.size() - 1) + QStringList{"--json"}))["test_acc"].get<double>());
    const Result initOther = runCli(init + QStringList{"--normalize", "0.3,0.5"});
    QCOMPARE(initOther.exitCode, kExitUsage);
    QVERIFY2(initOther.err.contains("its weights were trained on the stored one (without --init"), qPrintable(initOther.err));
    // eval's JSON says which normalisation it used and which test set it measured.
    const Result json = runCli({"eval", model, "--data", m_valid, "--test-limit", "50", "--json"});
    const nlohmann::json j = nlohmann::json::parse(json.out.toStdString());
    QCOMPARE(j.at("normalization").get<std::string>(), std::string("mean 0.2500, std 0.5000"));
    QVERIFY(j.contains("notes"));
    QCOMPARE(j.at("test_split").get<std::string>(), std::string("t10k-images-idx3-ubyte.gz")); // IDX's own test file, not ""
}

// A --resize the model cannot take is refused from the options, before any image is read or
// resized (tester 22: lenet5 at 4000x4000 took 43 s and 1.7 GB for 100 images to say so). The
// IDX files here claim 60,000 images and hold none: reading them would be "truncated" (exit 3),
// so an exit 2 naming the model shows that no image was read.
void TestCliFiles::resizeRefusedBeforeTheImages()
{
    const QString dir = m_tmp.filePath("headers-only");
    QVERIFY(QDir().mkpath(dir));
    for (const char* set : {"train", "t10k"}) {
        QFile images(dir + "/" + set + "-images-idx3-ubyte"), labels(dir + "/" + set + "-labels-idx1-ubyte");
        QVERIFY(images.open(QIODevice::WriteOnly) && labels.open(QIODevice::WriteOnly));
        images.write(QByteArray::fromHex("00000803" "0000EA60" "0000001C" "0000001C")); // 60,000 images of 28x28
        labels.write(QByteArray::fromHex("00000801" "0000EA60"));
    }
    const QStringList common{"train", "--data", dir, "--quiet", "--threads", "1"};
    // A layer past its weight limit.
    const Result lenet = runCli(common + QStringList{"--model", "lenet5", "--resize", "4000x4000"});
    QCOMPARE(lenet.exitCode, kExitUsage);
    QVERIFY2(lenet.err.contains("fc1 (Linear 15936064 -> 120) would hold") && lenet.err.contains("the input is too large for this model"),
             qPrintable(lenet.err));
    // A run past the machine's memory, counted at the data's one channel.
    const Result resnet = runCli(common + QStringList{"--model", "resnet8", "--resize", "4000x4000"});
    QCOMPARE(resnet.exitCode, kExitUsage);
    QVERIFY2(resnet.err.contains("resnet8 on 1x4000x4000 images needs about") && resnet.err.contains("--batch-size"), qPrintable(resnet.err));
    // A size the model takes goes on to read the images, and the truncated file is named.
    const Result fits = runCli(common + QStringList{"--model", "lenet5", "--resize", "32x32"});
    QCOMPARE(fits.exitCode, kExitData);
    QVERIFY2(fits.err.contains("-images-idx3-ubyte: header says 60000x28x28") && fits.err.contains("truncated"), qPrintable(fits.err));
}

// A class name of classes.txt past the 1,024 bytes a .qsm stores for a name fails its export: the
// run says so before training, naming the file being written and which class, and writes nothing
// (tester 22: it trained, then "string 'aaaa...' is too long for a .qsm file"). The .onnx has no
// such limit and is exported.
void TestCliFiles::qsmNameLimitBeforeTraining()
{
    const QString dir = m_tmp.filePath("long-class-names");
    writeSyntheticFolder(dir.toStdString());
    {
        QFile f(dir + "/classes.txt");
        QVERIFY(f.open(QIODevice::WriteOnly));
        for (char c = 'a'; c < 'a' + 10; ++c) f.write(QByteArray(c == 'c' ? 2000 : 5, c) + "\n");
    }
    const QString qsm = m_tmp.filePath("long.qsm"), onnx = m_tmp.filePath("long.onnx");
    const QStringList common{"train", "--data", dir, "--model", "mlp", "--train-limit", "200", "--test-limit", "50", "--threads", "1"};
    const Result r = runCli(common + QStringList{"--export", onnx + "," + qsm});
    QCOMPARE(r.exitCode, kExitUsage);
    QVERIFY2(r.err.contains(qsm + ": class 2's name ('cccc") && r.err.contains("2000 bytes) is longer than the 1024 bytes a .qsm file stores"),
             qPrintable(r.err));
    QVERIFY2(!r.out.contains("epoch 1/1") && !r.err.contains("epoch 1/1"), qPrintable(r.out)); // refused before training
    QVERIFY(!QFileInfo::exists(qsm) && !QFileInfo::exists(onnx));
    const Result o = runCli(common + QStringList{"--export", onnx, "--quiet"});
    QVERIFY2(o.exitCode == kExitOk, qPrintable(o.err));
    QVERIFY(QFileInfo::exists(onnx));
}

QTEST_GUILESS_MAIN(TestCliFiles)
#include "tst_cli_files.moc"
