// Shared by tst_onnx_export and tst_onnx_graphs: a run of a helper program (python3's onnx
// scripts, node), onnxruntime's predictions and outputs through tests/onnx/run_ort.js, the integer
// engine's predictions, a field-by-field comparison of two exported models, and the synthetic test
// images both run on.
#pragma once

#include "data/dataset.h"
#include "data/idx.h"
#include "infer/model_runner.h"
#include "io/exported_model.h"

#include "export_fixtures.h"
#include "exported_compare.h"

#include <QProcess>
#include <QString>
#include <QStringList>
#include <QtTest>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace fixtures {

using namespace quantscope;

inline constexpr int kProcessTimeoutMs = 300000;

inline const QString kScripts = QStringLiteral(QS_TEST_DATA "/../onnx");

inline QString nodeModules()
{
    const char* cache = std::getenv("QS_NODE_CACHE");
    const std::string dir = cache && *cache ? cache : std::string(std::getenv("HOME") ? std::getenv("HOME") : "/root") + "/.cache/quantscope/node";
    return QString::fromStdString(dir + "/node_modules");
}

inline bool haveOrt() { return std::filesystem::exists((nodeModules() + "/onnxruntime-node/package.json").toStdString()); }

// Skips the calling test function, saying where onnxruntime-node was looked for and how to get it.
#define QS_SKIP_WITHOUT_ORT()                                                                                \
    do {                                                                                                     \
        if (!haveOrt())                                                                                      \
            QSKIP(qPrintable("onnxruntime-node is not installed in " + nodeModules() +                       \
                             " (tests/onnx/install_ort.sh installs it; it needs the npm registry)"));        \
    } while (false)

struct Run {
    int exitCode = -1;
    QString out, err;
};

inline Run run(const QString& program, const QStringList& args, const QProcessEnvironment& env = QProcessEnvironment::systemEnvironment())
{
    QProcess p;
    p.setProcessEnvironment(env);
    p.start(program, args);
    Run r;
    if (!p.waitForStarted(10000)) {
        r.err = program + " did not start";
        return r;
    }
    p.waitForFinished(kProcessTimeoutMs);
    r.exitCode = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.out = QString::fromUtf8(p.readAllStandardOutput());
    r.err = QString::fromUtf8(p.readAllStandardError());
    return r;
}

inline Run runOrt(const std::string& model, const std::string& images, bool outputs, std::size_t limit = 0)
{
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert("NODE_PATH", nodeModules());
    QStringList args{kScripts + "/run_ort.js", QString::fromStdString(model), QString::fromStdString(images)};
    if (limit) args << QString::number(limit);
    if (outputs) args << "--outputs";
    const Run r = run("node", args, env);
    if (r.exitCode != 0) qWarning("onnxruntime failed: %s", qPrintable(r.err));
    return r;
}

// The first `limit` images (0: all).
inline std::vector<std::int32_t> ortPredictions(const std::string& model, const std::string& images, std::size_t limit = 0)
{
    std::vector<std::int32_t> p;
    for (const QString& line : runOrt(model, images, false, limit).out.split('\n', Qt::SkipEmptyParts)) p.push_back(line.toInt());
    return p;
}

// onnxruntime's output rows, flattened (n x classes).
inline std::vector<float> ortOutputs(const std::string& model, const std::string& images)
{
    std::vector<float> v;
    for (const QString& line : runOrt(model, images, true).out.split('\n', Qt::SkipEmptyParts))
        for (const QString& x : line.split(',')) v.push_back(x.toFloat());
    return v;
}

inline std::vector<std::int32_t> enginePredictions(const ExportedModel& m, const LabeledImages& set)
{
    ModelRunner r(m);
    return evaluateRunner(r, set).predictions;
}

inline double accuracy(const std::vector<std::int32_t>& p, const LabeledImages& set)
{
    std::size_t c = 0;
    for (std::size_t i = 0; i < p.size(); ++i) c += p[i] == set.labels[i];
    return static_cast<double>(c) / static_cast<double>(set.size());
}

// What both test classes hold (inherited next to QObject): the synthetic data they export and run
// (256 training, 200 test images of 28 x 28), a temporary folder for their files
// (quantscope-<name>-<pid>, removed with the test object), and the test images there as an IDX
// file for run_ort.js.
class OnnxWorkspace {
protected:
    ~OnnxWorkspace()
    {
        std::error_code ec;
        if (!m_dir.empty()) std::filesystem::remove_all(m_dir, ec);
    }
    void openWorkspace(const std::string& name)
    {
        m_data = syntheticDataset(256, 200);
        m_dir = tempDir(name);
        m_images = m_dir + "/test-images-idx3-ubyte";
        writeIdx(m_images, {static_cast<std::uint32_t>(m_data.test.size()), 28, 28}, m_data.test.pixels);
    }

    Dataset m_data;
    std::string m_dir, m_images;
};

} // namespace fixtures
