#include "core_message.h"

#include <QRegularExpression>

#include <vector>

namespace quantscope {

namespace {

struct Rewrite {
    QRegularExpression pattern;
    QString replacement;
};

// In order: the whole phrases first, then what is left of a flag. A size is "8x8" or "HxW".
// Built per call (an error message is rare): safe from the worker threads too.
std::vector<Rewrite> rewrites()
{
    return {
        // file_eval says both already: the window's half is kept
        {QRegularExpression(QStringLiteral(R"(--resize HxW in the CLI, the Dataset dock's Resize field in the window)")),
         QStringLiteral("the Resize field in the Dataset dock")},
        // model_source: "(--resize 8x8 reads them at its size)"
        {QRegularExpression(QStringLiteral(R"(--resize (\w+x\w+) reads them at its size)")),
         QStringLiteral("set Resize to \\1 in the Dataset dock to read them at its size")},
        // onnx_import: "...images: --resize 28x28 reads it there for train, eval and analyze, --input-shape 1x28x28 for info"
        {QRegularExpression(QStringLiteral(R"(--resize (\w+x\w+) reads it there for train, eval and analyze, --input-shape \S+ for info)")),
         QStringLiteral("set Resize to \\1 in the Dataset dock to read it there")},
        {QRegularExpression(QStringLiteral(R"(\(--train-limit, --test-limit\))")),
         QStringLiteral("(the Dataset dock's Use training and test images)")},
        // trainer: "resize the images (--resize HxW) or use a smaller --batch-size"
        {QRegularExpression(QStringLiteral(R"(resize the images \(--resize HxW\))")), QStringLiteral("set Resize (HxW) in the Dataset dock")},
        {QRegularExpression(QStringLiteral(R"(give --resize HxW)")), QStringLiteral("set Resize (HxW) in the Dataset dock")},
        {QRegularExpression(QStringLiteral(R"(use --resize HxW)")), QStringLiteral("set Resize (HxW) in the Dataset dock")},
        {QRegularExpression(QStringLiteral(R"(give a smaller --resize)")), QStringLiteral("set a smaller Resize in the Dataset dock")},
        // dataset: "--resize 64x64 makes ..."; "--image-shape 3x32x32"; "--resize HxW brings both ..."
        {QRegularExpression(QStringLiteral(R"(--resize (\w+x\w+))")), QStringLiteral("Resize \\1 (Dataset dock)")},
        // layout's parse errors: "--resize: '8' is not HxW"
        {QRegularExpression(QStringLiteral(R"(--resize:)")), QStringLiteral("Resize (Dataset dock):")},
        {QRegularExpression(QStringLiteral(R"(--resize\b)")), QStringLiteral("Resize (Dataset dock)")},
        {QRegularExpression(QStringLiteral(R"(--image-shape (\w+x\w+x\w+))")), QStringLiteral("CSV shape \\1 (Dataset dock)")},
        {QRegularExpression(QStringLiteral(R"(--image-shape:)")), QStringLiteral("CSV shape (Dataset dock):")},
        {QRegularExpression(QStringLiteral(R"(--image-shape\b)")), QStringLiteral("CSV shape (Dataset dock)")},
        {QRegularExpression(QStringLiteral(R"(a smaller --batch-size)")), QStringLiteral("a smaller Batch size (Training dock)")},
    };
}

} // namespace

QString coreMessage(const QString& cliText)
{
    QString s = cliText;
    for (const Rewrite& r : rewrites()) s.replace(r.pattern, r.replacement);
    return s;
}

QString coreMessage(const std::exception& e) { return coreMessage(QString::fromUtf8(e.what())); }

} // namespace quantscope
