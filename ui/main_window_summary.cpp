// MainWindow: the model summary window (View > Model summary, Ctrl+I, the Training dock's
// Summary button). It summarises the preset picked in the Training dock for the loaded dataset's
// images and classes, or a .qsm/.onnx file; errors show in the window's error bar.
#include "main_window.h"

#include "core_message.h"
#include "model_summary_dialog.h"
#include "training_panel.h"

#include "analysis/model_summary.h"
#include "io/model_source.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include <QFileDialog>
#include <QFileInfo>

namespace quantscope {

void MainWindow::showSummary(const ModelSummary& s)
{
    if (!m_summaryDialog) {
        m_summaryDialog = new ModelSummaryDialog(this);
        connect(m_summaryDialog, &ModelSummaryDialog::openFileRequested, this, &MainWindow::openModelSummaryFile);
    }
    m_summaryDialog->setSummary(s);
    m_summaryDialog->show();
    m_summaryDialog->raise();
    m_summaryDialog->activateWindow();
}

void MainWindow::showModelSummary()
{
    if (!m_trainingPanel->config().modelFile.empty()) {
        showModelSummaryOfFile(QString::fromStdString(m_trainingPanel->config().modelFile));
        return;
    }
    const std::string preset = m_trainingPanel->config().model;
    // The loaded dataset's images and classes; MNIST's 1x28x28 and 10 until one is loaded.
    std::size_t c = 1, h = 28, w = 28, classes = 10;
    if (m_data) {
        c = m_data->channels();
        h = m_data->height();
        w = m_data->width();
        classes = m_data->numClasses();
    }
    try {
        showSummary(summarizePreset(preset, c, h, w, classes));
    } catch (const Error& e) {
        showError(tr("Cannot summarise %1: %2").arg(QString::fromStdString(preset), coreMessage(e)));
    }
}

void MainWindow::refreshPlanModel()
{
    const TrainConfig& cfg = m_trainingPanel->config();
    std::size_t c = 1, h = 28, w = 28, classes = 10;
    if (m_data) {
        c = m_data->channels();
        h = m_data->height();
        w = m_data->width();
        classes = m_data->numClasses();
    }
    // With the dataset in the key: a model that fails at the placeholder size is tried again when
    // a dataset of that size loads (its entries are dropped only then).
    const QString key = QStringLiteral("%1|%2|%3x%4x%5|%6|%7")
                            .arg(QString::fromStdString(cfg.model), QString::fromStdString(cfg.modelFile))
                            .arg(c)
                            .arg(h)
                            .arg(w)
                            .arg(classes)
                            .arg(m_data ? 1 : 0);
    if (key == m_planModelKey) return;
    m_planModelKey = key;
    try {
        std::shared_ptr<const Model> model =
            cfg.modelFile.empty() ? std::shared_ptr<const Model>(makeModel(cfg.model, c, h, w, classes, cfg.seed))
                                  : std::shared_ptr<const Model>(modelFromFile(cfg.modelFile, false)(Shape{c, h, w}, classes, cfg.seed));
        m_trainingPanel->setPlanModel(std::move(model));
    } catch (const Error& e) {
        // Before a dataset loads, the placeholder 1x28x28 may be what does not fit. After, the
        // table says why it lists no layers (it said "Load a dataset" with one loaded; tester 12).
        QString why;
        if (m_data) {
            QString message = coreMessage(e);
            if (!cfg.modelFile.empty()) message.replace(QString::fromStdString(cfg.modelFile), QFileInfo(QString::fromStdString(cfg.modelFile)).fileName());
            why = tr("No layers to list: %1.").arg(message);
        }
        m_trainingPanel->setPlanModel(nullptr, why);
    }
}

bool MainWindow::showModelSummaryOfFile(const QString& path)
{
    try {
        showSummary(summarizeFile(path.toStdString()));
        return true;
    } catch (const Error& e) {
        showError(tr("Cannot summarise the model: %1").arg(coreMessage(e)));
        return false;
    }
}

void MainWindow::openModelSummaryFile()
{
    QWidget* parent = m_summaryDialog && m_summaryDialog->isVisible() ? static_cast<QWidget*>(m_summaryDialog) : this;
    const QString path = QFileDialog::getOpenFileName(parent, tr("Summarise a model file"), QString(),
                                                      tr("Models (*.qsm *.onnx);;All files (*)"));
    if (!path.isEmpty()) showModelSummaryOfFile(path);
}

} // namespace quantscope
