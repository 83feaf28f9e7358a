// Shared by the quantscope-cli tests (tst_cli, tst_cli_files, tst_cli_analyze, tst_cli_info): the CLI run as a user runs it
// (QProcess), its exit codes, and a small synthetic MNIST-layout dataset.
#pragma once

#include "data/idx.h"
#include "util/rng.h"

#include <QFileInfo>
#include <QProcess>
#include <QString>
#include <QStringList>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace cli_fixtures {

using namespace quantscope;

inline constexpr int kExitOk = 0, kExitUsage = 2, kExitData = 3, kExitNoResult = 5;
inline constexpr int kRunTimeoutMs = 60000;
inline constexpr std::size_t kTrain = 600, kTest = 250;
// The synthetic classes are trivially separable; an MLP that learns at all gets far above
// chance (0.10) on them.
inline constexpr double kMinSyntheticAccuracy = 0.5;

inline const QString kCli = QStringLiteral(QS_BINARY_DIR "/app/quantscope-cli");

struct Result {
    int exitCode = -1;
    QString out, err;
};

// The JSON "done" event of a run's --json output (null when there is none).
inline nlohmann::json doneOf(const Result& r)
{
    for (const QString& line : r.out.split('\n', Qt::SkipEmptyParts)) {
        const nlohmann::json j = nlohmann::json::parse(line.toStdString());
        if (j["event"] == "done") return j;
    }
    return nlohmann::json();
}

// childSetup: run in the child before the CLI starts (e.g. setrlimit), as QProcess's modifier.
inline Result runCli(const QStringList& args, const std::function<void()>& childSetup = {})
{
    QProcess p;
    if (childSetup) p.setChildProcessModifier(childSetup);
    p.start(kCli, args);
    Result r;
    if (!p.waitForStarted() || !p.waitForFinished(kRunTimeoutMs)) {
        p.kill();
        p.waitForFinished();
        r.err = "quantscope-cli did not finish: " + p.errorString();
        return r;
    }
    r.exitCode = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.out = QString::fromUtf8(p.readAllStandardOutput());
    r.err = QString::fromUtf8(p.readAllStandardError());
    return r;
}

// An MNIST-layout folder of 28x28 images: class k is a bright block at its own place.
inline void writeSyntheticFolder(const std::string& dir)
{
    std::filesystem::create_directories(dir);
    Rng rng(5);
    const auto write = [&](const std::string& prefix, std::size_t n) {
        std::vector<std::uint8_t> px(n * 784), lb(n);
        for (std::size_t i = 0; i < n; ++i) {
            const auto k = static_cast<std::size_t>(rng.below(10));
            lb[i] = static_cast<std::uint8_t>(k);
            std::uint8_t* img = px.data() + i * 784;
            for (std::size_t j = 0; j < 784; ++j) img[j] = static_cast<std::uint8_t>(rng.below(80));
            const std::size_t r0 = 3 + 13 * (k / 5), c0 = 1 + 5 * (k % 5);
            for (std::size_t r = r0; r < r0 + 6; ++r)
                for (std::size_t c = c0; c < c0 + 4; ++c) img[r * 28 + c] = 230;
        }
        writeIdx(dir + "/" + prefix + "-images-idx3-ubyte.gz", {std::uint32_t(n), 28, 28}, px);
        writeIdx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", {std::uint32_t(n)}, lb);
    };
    write("train", kTrain);
    write("t10k", kTest);
}

// A test case's start (its initTestCase): the CLI is built, and `valid` is a synthetic folder in tmp.
inline void startWithSyntheticFolder(const QTemporaryDir& tmp, QString& valid)
{
    QVERIFY2(QFileInfo(kCli).isExecutable(), qPrintable(kCli + " is not built"));
    QVERIFY(tmp.isValid());
    valid = tmp.filePath("valid");
    writeSyntheticFolder(valid.toStdString());
}

} // namespace cli_fixtures
