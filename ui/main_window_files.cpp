// MainWindow's file side: runs as JSON, metrics as CSV, charts as PNG, the export entry,
// and the QSettings that remember layout, dataset and options.
#include "main_window.h"

#include "analysis_view.h"
#include "core_message.h"
#include "dataset_panel.h"
#include "evaluate_dialog.h"
#include "format_text.h"
#include "quant_catalog.h"
#include "runs_model.h"
#include "training_panel.h"

#include "io/model_source.h"

#include <QDockWidget>
#include <QFileInfo>
#include <QFileDialog>
#include <QItemSelectionModel>
#include <QLabel>
#include <QJsonDocument>
#include <QMessageBox>
#include <QRegularExpression>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>

namespace quantscope {

void MainWindow::openModelFile()
{
    const QString path = QFileDialog::getOpenFileName(this, tr("Open a model file"), QString(),
                                                      tr("Models (*.onnx *.qsm);;ONNX (*.onnx);;QuantScope (*.qsm);;All files (*)"));
    if (!path.isEmpty()) loadModelFile(path);
}

bool MainWindow::loadModelFile(const QString& path)
{
    ExportedModel m;
    try {
        // A graph of dynamic height and width is read at the loaded data's size (training reads it
        // at the data's size it runs on).
        m = m_data ? readModelFile(path.toStdString(), m_data->height(), m_data->width(), m_data->numClasses())
                   : readModelFile(path.toStdString());
    } catch (const std::exception& e) {
        showError(tr("Cannot open the model: %1").arg(coreMessage(e)));
        return false;
    }
    if (m.quantized) {
        showError(tr("%1 is an integer model; training and PTQ start from an FP32 model. It is in the Evaluate model file "
                     "dialog (File menu, Ctrl+E), which runs it on the integer engine.").arg(path));
        showEvaluateDialog(path);
        return false;
    }
    const QString shape = QStringLiteral("%1x%2x%3").arg(m.channels).arg(m.height).arg(m.width);
    QString tip = tr("%1\n%2 layers, %3 parameters, input %4, %5 classes")
                      .arg(path)
                      .arg(m.layers.size())
                      .arg(formatCount(static_cast<double>(m.numParams())))
                      .arg(shape)
                      .arg(m.classes);
    // Training from the file takes its normalisation unless the Normalize field says otherwise.
    if (m.normalizationKnown) tip += tr("\ninput normalisation %1 (stored in the file)").arg(QString::fromStdString(m.normalization.describe()));
    QString notes;
    for (const std::string& n : m.notes) notes += QStringLiteral("; ") + QString::fromStdString(n);
    if (!notes.isEmpty()) tip += QStringLiteral("\n") + notes.mid(2);
    m_trainingPanel->addModelFile(path, QFileInfo(path).fileName(), tip,
                                  m.normalizationKnown ? QString::fromStdString(m.normalization.describe()) : QString());
    m_analysis->addModelFile(path);
    clearError();
    QString note;
    if (m_data && (m_data->channels() != m.channels || m_data->height() != m.height || m_data->width() != m.width))
        note = tr(" \u2014 it takes %1 images, the loaded dataset has %2x%3x%4")
                   .arg(shape)
                   .arg(m_data->channels())
                   .arg(m_data->height())
                   .arg(m_data->width());
    m_statusLabel->setText(
        tr("Model %1: %2 parameters%3%4").arg(QFileInfo(path).fileName(), formatCount(static_cast<double>(m.numParams())), note, notes));
    return true;
}

void MainWindow::saveRuns()
{
    if (m_runs->rowCount() == 0) {
        showError(tr("There are no runs to save yet: train one first (Ctrl+R)."));
        return;
    }
    const QString path =
        QFileDialog::getSaveFileName(this, tr("Save runs"), QStringLiteral("quantscope-runs.json"), tr("JSON files (*.json)"));
    if (path.isEmpty()) return;
    const QString err = saveRunsJson(path, m_runs->runs());
    if (!err.isEmpty()) showError(tr("Could not save the runs: %1").arg(err));
    else reportDone(tr("Saved %1 runs to %2").arg(m_runs->rowCount()).arg(path));
}

void MainWindow::loadRuns()
{
    const QString path = QFileDialog::getOpenFileName(this, tr("Load runs"), QString(), tr("JSON files (*.json)"));
    if (!path.isEmpty()) loadRunsFrom(path);
}

bool MainWindow::loadRunsFrom(const QString& path)
{
    QString err;
    const std::vector<RunPtr> runs = loadRunsJson(path, &err);
    if (!err.isEmpty()) {
        showError(tr("Could not load runs: %1").arg(err));
        return false;
    }
    m_runs->addRuns(runs);
    QList<int> ids;
    for (const RunPtr& r : runs) ids << r->id;
    selectRuns(ids);
    reportDone(tr("Loaded %1 runs from %2").arg(runs.size()).arg(path));
    return true;
}

void MainWindow::exportMetricsCsv()
{
    if (m_runs->rowCount() == 0) {
        showError(tr("There are no metrics to export yet: train a run first (Ctrl+R)."));
        return;
    }
    const QString path = QFileDialog::getSaveFileName(this, tr("Export metrics as CSV"),
                                                      QStringLiteral("quantscope-metrics.csv"), tr("CSV files (*.csv)"));
    if (!path.isEmpty()) exportMetricsCsvTo(path);
}

bool MainWindow::exportMetricsCsvTo(const QString& path)
{
    // In the table's order: selectedRuns() puts the row clicked last first (runs 3, 4, 5 selected
    // with 4 clicked last were written 4, 3, 5).
    std::vector<RunPtr> runs = inTableOrder(selectedRuns());
    const bool all = runs.empty();
    if (all) runs = m_runs->runs();
    if (runs.empty()) {
        showError(tr("There are no metrics to export yet: train a run first (Ctrl+R)."));
        return false;
    }
    const QString err = saveMetricsCsv(path, runs);
    if (!err.isEmpty()) {
        showError(tr("Could not export the metrics: %1").arg(err));
        return false;
    }
    reportDone((all ? tr("Wrote the epoch metrics of all %1 runs to %2") : tr("Wrote the epoch metrics of the %1 selected runs to %2"))
                   .arg(runs.size())
                   .arg(path));
    return true;
}

void MainWindow::updateCsvAction()
{
    const std::vector<RunPtr> selected = inTableOrder(selectedRuns());
    QStringList ids;
    for (const RunPtr& r : selected) ids << QStringLiteral("#%1").arg(r->id);
    const QString what = tr("losses, FP32, quantized and validation accuracy, training images/s and seconds (0 for a run that "
                            "only evaluated a loaded model).");
    if (selected.empty()) {
        m_csvAct->setText(tr("Export &metrics of all runs as CSV…"));
        m_csvAct->setIconText(tr("Export all as CSV…"));
        m_csvAct->setToolTip(tr("No run is selected: writes one row per evaluated epoch of every run, in the table's order: %1 "
                                "Select runs to write only theirs.")
                                 .arg(what));
    } else {
        m_csvAct->setText(tr("Export &metrics of the selected runs as CSV…"));
        m_csvAct->setIconText(selected.size() == 1 ? tr("Export run %1 as CSV…").arg(ids.front())
                                                   : tr("Export %1 selected as CSV…").arg(selected.size()));
        m_csvAct->setToolTip(tr("Writes one row per evaluated epoch of the selected runs (%1), in the table's order: %2 "
                                "With no run selected it writes every run.")
                                 .arg(ids.join(QStringLiteral(", ")), what));
    }
}

void MainWindow::saveCurrentChartPng()
{
    QWidget* w = m_tabs->currentWidget();
    QString name = m_tabs->tabText(m_tabs->currentIndex()).toLower();
    name.replace(QRegularExpression(QStringLiteral("[^a-z0-9]+")), QStringLiteral("-"));
    const QString path = QFileDialog::getSaveFileName(this, tr("Save chart as PNG"),
                                                      QStringLiteral("quantscope-%1.png").arg(name), tr("PNG images (*.png)"));
    if (path.isEmpty()) return;
    if (!w->grab().save(path, "PNG")) showError(tr("Could not write %1.").arg(path));
    else reportDone(tr("Saved %1").arg(path));
}

void MainWindow::exportQuantizedModel()
{
    RunPtr run = m_shown.empty() ? nullptr : m_shown.front();
    if (!run) {
        QMessageBox::information(this, tr("Export quantized model"),
                                 tr("There is no run to export yet. Train one (Ctrl+R), select it in the runs "
                                    "table, then export it as .qsm or ONNX."));
        return;
    }
    if (!run->exportBundle) {
        QMessageBox::information(this, tr("Export quantized model"),
                                 tr("Run #%1 has no model to export: %2.").arg(run->id).arg(noModelReason(*run)));
        return;
    }
    QString base = QStringLiteral("quantscope-run%1-%2-%3")
                       .arg(run->id)
                       .arg(strategyName(run->config.precision.strategy), storedFormat(run->config));
    const QString path = QFileDialog::getSaveFileName(
        this, tr("Export run #%1").arg(run->id), base + QStringLiteral(".qsm"),
        tr("QuantScope model (*.qsm);;ONNX with QuantizeLinear/DequantizeLinear (*.onnx)"));
    if (!path.isEmpty()) exportRunTo(run->id, path);
}

QString MainWindow::noModelReason(const RunRecord& run) const
{
    if (!run.exportNote.isEmpty()) return run.exportNote.endsWith(QLatin1Char('.')) ? run.exportNote.chopped(1) : run.exportNote;
    switch (run.status) {
    case RunStatus::Running:
    case RunStatus::Paused: return tr("it is still training (a run keeps its model when it trains to the end)");
    case RunStatus::Stopped:
    case RunStatus::Failed: return tr("only runs that trained to the end keep their model");
    case RunStatus::Done: break;
    }
    return tr("models are kept for the runs trained in this session (the last %1), not for runs loaded from a file").arg(kKeptModels);
}

bool MainWindow::exportRunTo(int id, const QString& path)
{
    RunPtr run = m_runs->runById(id);
    QString problem;
    if (!run) problem = tr("there is no run #%1").arg(id);
    else if (!run->exportBundle) problem = run->exportNote.isEmpty() ? tr("run #%1 has no model to export").arg(id) : run->exportNote;
    else {
        try {
            checkExportable(run->config, path.toStdString());
        } catch (const std::exception& e) {
            problem = coreMessage(e);
        }
    }
    if (problem.isEmpty() && !m_controller->exportRun(id, run->exportBundle, path))
        problem = tr("the worker is busy; try again when training has finished");
    if (!problem.isEmpty()) {
        const QString text = tr("Could not export run #%1 to %2: %3").arg(id).arg(path, problem);
        showError(text);
        emit exportFinished(id, false, text);
        return false;
    }
    clearError();
    m_statusLabel->setText(tr("Exporting run #%1 to %2 and re-measuring its accuracy\u2026").arg(id).arg(path));
    updateActions();
    return true;
}

void MainWindow::onExportReady(int id, const ExportBundlePtr& bundle)
{
    RunPtr run = m_runs->runById(id);
    if (!run) return;
    run->exportBundle = bundle;
    run->refineReport.clear();
    for (const std::string& line : bundle->refineReport) run->refineReport << QString::fromStdString(line);
    if (!run->refineReport.isEmpty()) m_runs->runChanged(id); // the tooltip grows
    // Keep the models of the newest runs only: each holds a full copy of the weights.
    int kept = 0;
    const auto& runs = m_runs->runs();
    for (auto it = runs.rbegin(); it != runs.rend(); ++it)
        if ((*it)->exportBundle && ++kept > kKeptModels) {
            (*it)->exportBundle.reset();
            (*it)->exportNote = tr("its model was released to save memory (only the last %1 runs keep theirs).").arg(kKeptModels);
        }
    updateCompareRun();
    updateActions();
}

void MainWindow::onExported(int id, const ExportSummary& s)
{
    const bool onnx = s.format == ExportFormat::Onnx;
    QString text = tr("Wrote %1 (%2): %3, %4 of the same model in FP32 (%5).")
                       .arg(QString::fromStdString(s.path), onnx ? tr("ONNX") : tr("QuantScope model"),
                            formatBytes(double(s.fileBytes)), formatPercent(s.sizeRatio, 0),
                            formatBytes(double(s.fp32Bytes)));
    text += QLatin1Char('\n') + tr("Precision: %1.").arg(QString::fromStdString(s.precision));
    text += QLatin1Char('\n') + tr("Test accuracy re-measured from the file: %1 on %2 images (%3).")
                                    .arg(formatPercent(s.accuracy), formatCount(double(s.testImages)),
                                         QString::fromStdString(s.runner));
    if (!s.note.empty()) text += QLatin1Char('\n') + tr("Note: %1.").arg(QString::fromStdString(s.note));
    reportDone(tr("Run #%1 exported: %2, accuracy %3").arg(id).arg(formatBytes(double(s.fileBytes)), formatPercent(s.accuracy)));
    updateActions();
    emit exportFinished(id, true, text);
    if (m_options.quietExport) return;
    auto* box = new QMessageBox(QMessageBox::Information, tr("Export of run #%1").arg(id), text, QMessageBox::Ok, this);
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->open(); // window-modal, does not block the event loop
}

void MainWindow::restoreSettings()
{
    QSettings s;
    // A damaged settings file never stops the start: the window opens with its defaults, says
    // which file and what is wrong, and the file is rewritten whole on exit.
    // Qt's INI reader skips lines it cannot parse, so a file with bytes in it but none of the keys
    // this window writes is damaged too.
    const bool noKnownKey = QFileInfo(s.fileName()).size() > 0 && !s.contains(QStringLiteral("window/geometry")) &&
                            !s.contains(QStringLiteral("training/config")) && !s.contains(QStringLiteral("dataset/trainLimit"));
    if (s.status() != QSettings::NoError || noKnownKey) {
        showError(tr("The settings file %1 could not be read (%2): QuantScope started with its default layout and "
                     "options, and rewrites the file when it closes.")
                      .arg(s.fileName(), s.status() == QSettings::AccessError ? tr("it cannot be opened")
                                                                              : tr("it is not a valid settings file")));
        return;
    }
    if (s.contains(QStringLiteral("window/geometry"))) restoreGeometry(s.value(QStringLiteral("window/geometry")).toByteArray());
    if (s.contains(QStringLiteral("window/state")))
        m_restoredLayout = restoreState(s.value(QStringLiteral("window/state")).toByteArray());
    if (s.contains(QStringLiteral("window/mainSplitter")))
        m_mainSplitter->restoreState(s.value(QStringLiteral("window/mainSplitter")).toByteArray());
    if (s.contains(QStringLiteral("window/curvesSplitter")))
        m_curvesSplitter->restoreState(s.value(QStringLiteral("window/curvesSplitter")).toByteArray());
    m_tabs->setCurrentIndex(s.value(QStringLiteral("window/tab"), 0).toInt());
    const QByteArray cfg = s.value(QStringLiteral("training/config")).toByteArray();
    if (!cfg.isEmpty()) {
        QJsonParseError pe;
        const QJsonDocument doc = QJsonDocument::fromJson(cfg, &pe);
        if (doc.isObject()) m_trainingPanel->setConfig(configFromJson(doc.object()));
        else
            showError(tr("The saved training options in %1 (training/config) are damaged (%2 at byte %3): the default "
                         "options are shown.")
                          .arg(s.fileName(), pe.error != QJsonParseError::NoError ? pe.errorString() : tr("not a JSON object"))
                          .arg(pe.offset));
    }
    m_datasetPanel->setLimits(s.value(QStringLiteral("dataset/trainLimit"), 0).toULongLong(),
                              s.value(QStringLiteral("dataset/testLimit"), 0).toULongLong());
    m_datasetPanel->setValidationImages(s.value(QStringLiteral("dataset/validation"), 0).toULongLong());
    bool fractionOk = false;
    const double fraction = s.value(QStringLiteral("dataset/testFraction"), 0.2).toDouble(&fractionOk);
    m_datasetPanel->setTestFraction(fractionOk && fraction >= 0.001 && fraction <= 0.999 ? fraction : 0.2);
}

void MainWindow::saveSettings()
{
    QSettings s;
    s.setValue(QStringLiteral("window/geometry"), saveGeometry());
    s.setValue(QStringLiteral("window/state"), saveState());
    s.setValue(QStringLiteral("window/mainSplitter"), m_mainSplitter->saveState());
    s.setValue(QStringLiteral("window/curvesSplitter"), m_curvesSplitter->saveState());
    s.setValue(QStringLiteral("window/tab"), m_tabs->currentIndex());
    s.setValue(QStringLiteral("training/config"),
               QJsonDocument(configToJson(m_trainingPanel->config())).toJson(QJsonDocument::Compact));
    if (m_data) s.setValue(QStringLiteral("dataset/dir"), QString::fromStdString(m_data->dir));
    s.setValue(QStringLiteral("dataset/trainLimit"), qulonglong(m_datasetPanel->trainLimit()));
    s.setValue(QStringLiteral("dataset/testLimit"), qulonglong(m_datasetPanel->testLimit()));
    s.setValue(QStringLiteral("dataset/validation"), qulonglong(m_datasetPanel->validationImages()));
    s.setValue(QStringLiteral("dataset/testFraction"), m_datasetPanel->testFraction());
}

} // namespace quantscope

namespace quantscope {

void MainWindow::showEvaluateDialog(const QString& path)
{
    if (!m_evaluateDialog) {
        m_evaluateDialog = new EvaluateDialog(this);
        m_evaluateDialog->setThreads(int(m_trainingPanel->config().threads));
    }
    m_evaluateDialog->setDataset(m_data, m_dataOptions);
    if (!path.isEmpty()) m_evaluateDialog->setModelFile(path);
    m_evaluateDialog->show();
    m_evaluateDialog->raise();
    m_evaluateDialog->activateWindow();
}

} // namespace quantscope
