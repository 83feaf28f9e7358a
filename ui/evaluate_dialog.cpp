#include "evaluate_dialog.h"

#include "core_message.h"
#include "format_text.h"
#include "gui_call.h"

#include "infer/isa.h"
#include "io/model_source.h"
#include "util/atomic_file.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPointer>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QStyle>
#include <QTableWidget>
#include <QThread>
#include <QVBoxLayout>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

namespace quantscope {

namespace {

constexpr int kLongColumnWidth = 160; // pixels: File, Precision, Input normalisation and Runner at most

enum Column { FileCol, PrecisionCol, InputCol, RunnerCol, ImagesCol, AccuracyCol, ReferenceCol, AgreementCol, SpeedCol, ColumnCount };

QString precisionText(const ExportedModel& m)
{
    if (!m.quantized) return QStringLiteral("fp32");
    return QString::fromStdString(m.weightFormat + " weights (" + m.granularity + "), " + m.activationFormat + " activations");
}

// An image folder whose images have other channels than the model's (1 or 3): it is read again.
bool readAgainFor(const Dataset& data, std::size_t channels)
{
    return data.layout == DatasetLayout::ImageFolder && channels != data.test.channels && (channels == 1 || channels == 3);
}

// The dataset a model taking `channels`-channel images is scored on: the loaded one, or, when it is
// an image folder of other channels, the folder read again with the model's, as quantscope-cli
// eval reads it (grey images replicated to RGB, colour ones converted to BT.601 luma; tester 11:
// a grey folder was refused for an RGB model), with core's note on what was converted. Only the
// test set and the training images of the normalisation statistics are decoded (the same
// statistics as the loaded set's). CSV, IDX and CIFAR store their channels: they stay as loaded,
// and prepareModelForData says what to give.
DatasetPtr readWithModelsChannels(const DatasetPtr& data, const DatasetOptions& readWith, std::size_t channels, QStringList& notes)
{
    if (!readAgainFor(*data, channels)) return data;
    DatasetOptions o = readWith;
    o.imageChannels = channels;
    o.trainForStatistics = true; // no training set kept, only its statistics
    o.validation = 0;            // the test set and the statistics do not depend on it
    auto again = std::make_shared<Dataset>(Dataset::load(o));
    for (const std::string& n : again->notes)
        if (std::find(data->notes.begin(), data->notes.end(), n) == data->notes.end())
            notes << QObject::tr("%1 (for this evaluation, as quantscope-cli eval reads the folder; the Dataset dock keeps the images as "
                                 "loaded)")
                         .arg(QString::fromStdString(n));
    return again;
}

} // namespace

EvaluateDialog::EvaluateDialog(QWidget* parent) : QDialog(parent)
{
    setWindowTitle(tr("Evaluate model file"));
    setObjectName(QStringLiteral("evaluateDialog"));

    m_path = new QLineEdit;
    m_path->setObjectName(QStringLiteral("evaluatePath"));
    m_path->setPlaceholderText(tr("a .qsm or .onnx file: an export, FP32 or integer"));
    m_browse = new QPushButton(tr("Browse\u2026"));
    m_browse->setObjectName(QStringLiteral("evaluateBrowse"));
    connect(m_browse, &QPushButton::clicked, this, &EvaluateDialog::browse);
    m_browse->setAutoDefault(false); // Return in the path field evaluates (tester 16: it opened the browser)
    auto* fileRow = new QHBoxLayout;
    fileRow->addWidget(m_path, 1);
    fileRow->addWidget(m_browse);

    m_dataLabel = new QLabel;
    m_dataLabel->setObjectName(QStringLiteral("evaluateData"));
    m_dataLabel->setWordWrap(true);

    m_runner = new QComboBox;
    m_runner->setObjectName(QStringLiteral("evaluateRunner"));
    m_runner->addItem(tr("auto: the integer engine for an integer model"), QVariant::fromValue(int(RunnerKind::Auto)));
    m_runner->addItem(tr("integer engine only (fail if it cannot run the model)"), QVariant::fromValue(int(RunnerKind::Integer)));
    m_runner->addItem(tr("fake-quant reference (float model)"), QVariant::fromValue(int(RunnerKind::Reference)));
    m_runner->setToolTip(tr("Which code runs the model: as quantscope-cli eval --runner auto|integer|reference"));

    m_isa = new QComboBox;
    m_isa->setObjectName(QStringLiteral("evaluateIsa"));
    m_isa->addItem(tr("auto (%1)").arg(QString::fromLatin1(isaName(bestIsa()))), QStringLiteral("auto"));
    for (const Isa isa : {Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar})
        if (isaSupported(isa)) m_isa->addItem(QString::fromLatin1(isaName(isa)), QString::fromLatin1(isaName(isa)));
    m_isa->setToolTip(tr("The integer engine's kernels (quantscope-cli eval --isa); every choice gives the same predictions"));

    m_threads = new QSpinBox;
    m_threads->setObjectName(QStringLiteral("evaluateThreads"));
    m_threads->setRange(1, std::max(1, QThread::idealThreadCount()));
    m_threads->setValue(std::min(2, m_threads->maximum()));

    m_compare = new QCheckBox(tr("Also run the fake-quant reference and count the images on which both predict the same class"));
    m_compare->setObjectName(QStringLiteral("evaluateCompare"));
    m_compare->setChecked(true);
    m_compare->setToolTip(tr("For an integer model on the integer engine: the float model with the stored quantization, "
                             "which the engine should agree with on nearly every image"));
    m_bench = new QCheckBox(tr("Measure speed (images/s: a warm-up batch, then the best of 3 passes)"));
    m_bench->setObjectName(QStringLiteral("evaluateBench"));

    m_normalize = new QLineEdit;
    m_normalize->setObjectName(QStringLiteral("evaluateNormalize"));
    m_normalize->setPlaceholderText(tr("the file's own; else the train set's statistics"));
    m_normalize->setToolTip(tr("For a model that does not store its input normalisation (an ONNX file from PyTorch): MEAN,STD, "
                               "each a number or one per channel joined by ':', or none for [0, 1] pixels"));

    auto* form = new QFormLayout;
    auto* fileLabel = new QLabel(tr("&Model file"));
    fileLabel->setBuddy(m_path);
    form->addRow(fileLabel, fileRow);
    form->addRow(tr("Data"), m_dataLabel);
    form->addRow(tr("&Runner"), m_runner);
    form->addRow(tr("&Kernels"), m_isa);
    form->addRow(tr("&Threads"), m_threads);
    form->addRow(tr("&Normalize"), m_normalize);
    form->addRow(QString(), m_compare);
    form->addRow(QString(), m_bench);

    m_controls = makeRunControls(QStringLiteral("evaluate"), tr("&Evaluate"),
                                 tr("Run the model file on the loaded dataset's test set"), tr("Stop after the current batch"),
                                 tr("Pick a model file, then Evaluate."));
    connect(m_controls.run, &QPushButton::clicked, this, [this] { evaluate(); });
    m_controls.run->setDefault(true);
    m_controls.stop->setAutoDefault(false);
    connect(m_controls.stop, &QPushButton::clicked, this, &EvaluateDialog::stop);
    auto* runRow = new QHBoxLayout;
    runRow->addWidget(m_controls.run);
    runRow->addWidget(m_controls.stop);
    runRow->addWidget(m_controls.progress, 1);

    m_notes = new QLabel;
    m_notes->setObjectName(QStringLiteral("evaluateNotes"));
    m_notes->setWordWrap(true);
    m_notes->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_notes->hide();

    m_results = new QTableWidget(0, ColumnCount);
    m_results->setObjectName(QStringLiteral("evaluateResults"));
    m_results->setHorizontalHeaderLabels({tr("File"), tr("Precision"), tr("Input normalisation"), tr("Runner"), tr("Images"),
                                          tr("Accuracy"), tr("Fake-quant acc."), tr("Agreement"), tr("Speed")});
    m_results->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_results->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_results->verticalHeader()->hide();
    m_results->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_results->horizontalHeader()->setStretchLastSection(true);
    m_results->setMinimumHeight(140);

    m_savePredictions = new QPushButton(tr("Save &predictions\u2026"));
    m_savePredictions->setObjectName(QStringLiteral("evaluateSavePredictions"));
    m_savePredictions->setToolTip(tr("The last evaluation's prediction for every test image as CSV: its index, the predicted and "
                                     "true class (number and name), whether they agree, and the image's file or CSV line "
                                     "(quantscope-cli eval --predictions)"));
    m_savePredictions->setEnabled(false);
    connect(m_savePredictions, &QPushButton::clicked, this, &EvaluateDialog::savePredictions);
    m_savePredictions->setAutoDefault(false);
    auto* close = new QPushButton(tr("Close"));
    close->setAutoDefault(false);
    connect(close, &QPushButton::clicked, this, &QDialog::close);
    auto* bottom = new QHBoxLayout;
    bottom->addWidget(m_savePredictions);
    bottom->addStretch(1);
    bottom->addWidget(close);

    auto* layout = new QVBoxLayout(this);
    layout->addLayout(form);
    layout->addLayout(runRow);
    layout->addWidget(m_controls.status);
    layout->addWidget(m_notes);
    layout->addWidget(m_results, 1);
    layout->addLayout(bottom);
    resize(1000, 520);
    updateDataLabel();
}

EvaluateDialog::~EvaluateDialog() = default; // m_thread stops and joins; its posted result finds no dialog

void EvaluateDialog::setDataset(DatasetPtr data, const DatasetOptions& readWith)
{
    m_data = std::move(data);
    m_readWith = readWith;
    updateDataLabel();
}

void EvaluateDialog::setModelFile(const QString& path) { m_path->setText(path); }

QString EvaluateDialog::modelFile() const { return m_path->text().trimmed(); }

void EvaluateDialog::setThreads(int threads) { m_threads->setValue(std::clamp(threads, 1, m_threads->maximum())); }

QString EvaluateDialog::statusText() const { return m_controls.status->text(); }

void EvaluateDialog::updateDataLabel()
{
    if (!m_data) {
        m_dataLabel->setText(tr("no dataset loaded: open one in the Dataset dock first"));
        return;
    }
    const Dataset& d = *m_data;
    m_dataLabel->setText(tr("the test set of %1: %2 images of %3x%4x%5, %6 classes%7")
                             .arg(QString::fromStdString(d.name), formatCount(double(d.test.size())))
                             .arg(d.test.channels)
                             .arg(d.test.height)
                             .arg(d.test.width)
                             .arg(d.numClasses())
                             .arg(m_readWith.resize.given() ? tr(" (resized on load)") : QString()));
}

void EvaluateDialog::browse()
{
    const QString start = modelFile().isEmpty() ? QString() : QFileInfo(modelFile()).absolutePath();
    const QString path = QFileDialog::getOpenFileName(this, tr("Evaluate model file"), start, tr("Models (*.qsm *.onnx);;All files (*)"));
    if (!path.isEmpty()) m_path->setText(path);
}

void EvaluateDialog::setBusy(bool busy)
{
    m_controls.run->setEnabled(!busy);
    m_controls.stop->setEnabled(busy);
    for (QWidget* w : std::initializer_list<QWidget*>{m_path, m_browse, m_runner, m_isa, m_threads, m_compare, m_bench, m_normalize})
        w->setEnabled(!busy);
    m_savePredictions->setEnabled(!busy && !m_lastPredictions.predicted.empty());
}

bool EvaluateDialog::evaluate()
{
    if (m_thread.running()) return false;
    const QString path = modelFile();
    QString problem;
    if (path.isEmpty()) problem = tr("Pick a model file (.qsm or .onnx) first.");
    else if (!m_data) problem = tr("Load a dataset first: the model is scored on its test set.");
    else if (m_data->test.size() == 0) problem = tr("The loaded dataset has no test images.");
    if (!problem.isEmpty()) {
        m_controls.status->setText(problem);
        emit evaluationFinished(false, problem);
        return false;
    }
    FileEvalOptions opt;
    opt.runner.kind = static_cast<RunnerKind>(m_runner->currentData().toInt());
    opt.runner.threads = static_cast<std::size_t>(m_threads->value());
    opt.compareReference = m_compare->isChecked();
    opt.bench = m_bench->isChecked();
    const std::string isa = m_isa->currentData().toString().toStdString();
    const std::string normText = m_normalize->text().trimmed().toStdString();
    try {
        opt.runner.isa = parseIsa(isa);
        if (!normText.empty()) (void)Normalization::parse(normText);
    } catch (const std::exception& e) {
        m_controls.status->setText(coreMessage(e));
        emit evaluationFinished(false, coreMessage(e));
        return false;
    }
    setBusy(true);
    m_controls.progress->setRange(0, 1);
    m_controls.progress->setValue(0);
    m_controls.progress->setFormat(tr("reading the model\u2026"));
    m_controls.status->setText(tr("Evaluating %1 on %2 test images\u2026").arg(QFileInfo(path).fileName(), formatCount(double(m_data->test.size()))));
    m_notes->hide();

    QPointer<EvaluateDialog> self(this);
    const DatasetPtr loaded = m_data;
    const DatasetOptions readWith = m_readWith;
    const std::string file = path.toStdString();
    m_thread.start([self, loaded, readWith, file, normText, opt](const std::atomic<bool>& stop) {
        std::optional<FileEvalResult> r;
        PredictionRows rows;
        QString precision, error, input;
        QStringList notes;
        try {
            ExportedModel m = readModelFile(file, 0, 0, loaded->numClasses()); // of several graph outputs, the scores for these classes
            for (const std::string& n : m.notes) notes << QString::fromStdString(n);
            if (readAgainFor(*loaded, m.channels))
                postToGuiThread([self, channels = m.channels] {
                    if (self) self->m_controls.progress->setFormat(tr("reading the test images with %1 channels\u2026").arg(channels));
                });
            const DatasetPtr data = readWithModelsChannels(loaded, readWith, m.channels, notes);
            const bool resized = readWith.resize.given();
            std::optional<Normalization> given;
            if (!normText.empty()) given = Normalization::parse(normText);
            const DataMatch match = prepareModelForData(m, file, *data, resized, given);
            if (!match.composedNote.empty()) notes << QString::fromStdString(match.composedNote);
            if (!match.normalizationNote.empty())
                notes << QString::fromStdString(match.normalizationNote) +
                             QObject::tr(" of the %1 loaded training images (quantscope-cli eval takes the whole training set's; type "
                                         "MEAN,STD in Normalize to give one, or none for [0, 1] pixels)")
                                 .arg(formatCount(double(loaded->train.size())));
            if (!match.classNote.empty()) notes << QString::fromStdString(match.classNote);
            precision = precisionText(m);
            input = QString::fromStdString(m.normalization.describe()) +
                    (m.normalizationKnown ? QObject::tr(" (the file's)")
                                          : given ? QObject::tr(" (given)") : QObject::tr(" (the loaded training images')"));
            r = evaluateModelFile(m, data->test, match.labels, opt, &stop, [self](std::size_t done, std::size_t total) {
                postToGuiThread([self, done, total] {
                    if (self) self->showProgress(done, total);
                });
            });
            if (!r) error = QObject::tr("stopped");
            else rows = predictionRows(m, *data, match, r->predictions);
        } catch (const std::exception& e) {
            error = coreMessage(e);
        }
        const QString path = QString::fromStdString(file);
        postToGuiThread([self, path, r = std::move(r), rows = std::move(rows), precision, input, notes, error]() mutable {
            if (!self) return;
            if (r) self->m_lastPredictions = std::move(rows);
            self->showResult(path, r, precision, input, notes, error);
        });
    });
    return true;
}

void EvaluateDialog::stop()
{
    if (!m_thread.running()) return;
    m_thread.stop();
    m_controls.status->setText(tr("Stopping after the current batch\u2026"));
}

void EvaluateDialog::showProgress(std::size_t done, std::size_t total)
{
    if (!m_thread.running() || total == 0) return;
    m_controls.progress->setRange(0, 1000);
    m_controls.progress->setValue(static_cast<int>(1000.0 * double(done) / double(total)));
    m_controls.progress->setFormat(tr("%1 of %2 images run").arg(formatCount(double(done)), formatCount(double(total))));
}

void EvaluateDialog::showResult(const QString& path, const std::optional<FileEvalResult>& r, const QString& precision,
                                const QString& input, const QStringList& notes, const QString& error)
{
    m_thread.finished();
    if (!notes.isEmpty()) {
        m_notes->setText(notes.join(QStringLiteral("\n")));
        m_notes->show();
    }
    if (!r) {
        m_controls.progress->setRange(0, 1);
        m_controls.progress->setValue(0);
        m_controls.progress->setFormat(error == tr("stopped") ? tr("stopped") : tr("failed"));
        m_controls.status->setText(error == tr("stopped") ? tr("Stopped; nothing was scored.") : tr("Cannot evaluate: %1").arg(error));
        setBusy(false);
        emit evaluationFinished(false, error);
        return;
    }
    const int row = m_results->rowCount();
    m_results->insertRow(row);
    const auto set = [&](int col, const QString& text, const QString& tip = {}) {
        auto* item = new QTableWidgetItem(text);
        if (col >= ImagesCol) item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        if (!tip.isEmpty()) item->setToolTip(tip);
        m_results->setItem(row, col, item);
    };
    set(FileCol, QFileInfo(path).fileName(), path);
    set(PrecisionCol, precision, precision); // long texts: capped columns, the whole text in the tooltip
    set(InputCol, input, input);
    set(RunnerCol, QString::fromStdString(r->runner), QString::fromStdString(r->runner));
    set(ImagesCol, formatCount(double(r->images)));
    set(AccuracyCol, formatPercent(r->accuracy, 2));
    set(ReferenceCol, r->referenceAccuracy ? formatPercent(*r->referenceAccuracy, 2) : noValueText(),
        r->referenceAccuracy ? QString() : tr("Run only for an integer model on the integer engine, with the comparison ticked"));
    set(AgreementCol, r->agreement ? formatPercent(*r->agreement, 2) : noValueText(),
        tr("Images on which the integer engine and the fake-quant reference predict the same class"));
    set(SpeedCol, r->imagesPerSecond ? formatRate(*r->imagesPerSecond) : noValueText());
    // The long texts ("int8 weights (channel), uint8 activations", "mean 0.2860, std 0.3530
    // (the file's)", "integer engine (avx512-vnni)") would push Agreement and Speed past the
    // dialog's edge (tester 13): their columns are capped, the text elided, whole in the tooltip.
    // The cap shares what the short columns leave of the table's width among the four, so Speed
    // stays in view (tester 19: "23,905 im" at 160 px each in a 1,000-pixel dialog).
    QHeaderView* header = m_results->horizontalHeader();
    int shortColumns = 0; // what their texts need (Speed, the last, is stretched: its size says nothing)
    for (int col = ImagesCol; col < ColumnCount; ++col) {
        int need = header->sectionSizeHint(col);
        for (int r = 0; r < m_results->rowCount(); ++r)
            if (const QTableWidgetItem* it = m_results->item(r, col))
                need = std::max(need, m_results->fontMetrics().horizontalAdvance(it->text()) + 2 * m_results->style()->pixelMetric(QStyle::PM_FocusFrameHMargin) + 12);
        shortColumns += need;
    }
    const int cap = std::clamp((m_results->viewport()->width() - shortColumns) / 4, 80, kLongColumnWidth);
    for (const int col : {FileCol, PrecisionCol, InputCol, RunnerCol}) {
        m_results->resizeColumnToContents(col);
        header->setSectionResizeMode(col, QHeaderView::Interactive);
        header->resizeSection(col, std::min(header->sectionSize(col), cap));
    }
    m_results->selectRow(row);
    m_results->scrollToBottom();
    m_controls.progress->setRange(0, 1);
    m_controls.progress->setValue(1);
    m_controls.progress->setFormat(tr("done"));
    QString summary = tr("%1: test accuracy %2 on %3 images (%4)")
                          .arg(QFileInfo(path).fileName(), formatPercent(r->accuracy, 2), formatCount(double(r->images)),
                               QString::fromStdString(r->runner));
    if (r->agreement) summary += tr("; agrees with fake-quant on %1").arg(formatPercent(*r->agreement, 2));
    if (r->imagesPerSecond) summary += tr("; %1").arg(formatRate(*r->imagesPerSecond));
    m_controls.status->setText(summary);
    setBusy(false);
    emit evaluationFinished(true, summary);
}

void EvaluateDialog::savePredictions()
{
    const QString path = QFileDialog::getSaveFileName(this, tr("Save predictions"), QString(), tr("CSV (*.csv);;All files (*)"));
    if (!path.isEmpty()) savePredictionsTo(path);
}

bool EvaluateDialog::savePredictionsTo(const QString& path)
{
    if (m_lastPredictions.predicted.empty()) {
        m_controls.status->setText(tr("No predictions yet: evaluate a model first."));
        return false;
    }
    try {
        writeFileAtomic(path.toStdString(), std::string_view(predictionsCsv(m_lastPredictions)));
    } catch (const std::exception& e) {
        m_controls.status->setText(tr("Cannot save the predictions: %1").arg(coreMessage(e)));
        return false;
    }
    m_controls.status->setText(tr("Saved %1 predictions to %2").arg(formatCount(double(m_lastPredictions.predicted.size())), path));
    return true;
}

} // namespace quantscope
