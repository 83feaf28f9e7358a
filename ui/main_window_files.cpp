// MainWindow's file side: runs as JSON, metrics as CSV, charts as PNG, the export entry,
// and the QSettings that remember layout, dataset and options.
#include "main_window.h"

#include "dataset_panel.h"
#include "runs_model.h"
#include "training_panel.h"

#include <QDockWidget>
#include <QFileDialog>
#include <QItemSelectionModel>
#include <QJsonDocument>
#include <QMessageBox>
#include <QRegularExpression>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>

namespace quantscope {

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
    else statusBar()->showMessage(tr("Saved %1 runs to %2").arg(m_runs->rowCount()).arg(path), 5000);
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
    statusBar()->showMessage(tr("Loaded %1 runs from %2").arg(runs.size()).arg(path), 5000);
    return true;
}

void MainWindow::exportMetricsCsv()
{
    std::vector<RunPtr> runs = selectedRuns();
    if (runs.empty()) runs = m_runs->runs();
    if (runs.empty()) {
        showError(tr("There are no metrics to export yet: train a run first (Ctrl+R)."));
        return;
    }
    const QString path = QFileDialog::getSaveFileName(this, tr("Export metrics as CSV"),
                                                      QStringLiteral("quantscope-metrics.csv"), tr("CSV files (*.csv)"));
    if (path.isEmpty()) return;
    const QString err = saveMetricsCsv(path, runs);
    if (!err.isEmpty()) showError(tr("Could not export the metrics: %1").arg(err));
    else statusBar()->showMessage(tr("Wrote the epoch metrics of %1 runs to %2").arg(runs.size()).arg(path), 5000);
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
    else statusBar()->showMessage(tr("Saved %1").arg(path), 5000);
}

void MainWindow::exportQuantizedModel()
{
    QMessageBox::information(this, tr("Export quantized model"),
                             tr("Export is not available yet.\n\nWriting the quantized model as a .qsm or ONNX file "
                                "comes with the export feature. Until then you can keep your results with File > "
                                "Save runs (JSON) and File > Export metrics as CSV."));
}

void MainWindow::restoreSettings()
{
    QSettings s;
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
        const QJsonDocument doc = QJsonDocument::fromJson(cfg);
        if (doc.isObject()) m_trainingPanel->setConfig(configFromJson(doc.object()));
    }
    m_datasetPanel->setLimits(s.value(QStringLiteral("dataset/trainLimit"), 0).toULongLong(),
                              s.value(QStringLiteral("dataset/testLimit"), 0).toULongLong());
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
}

} // namespace quantscope
