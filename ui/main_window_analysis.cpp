// MainWindow's side of the Analysis tab: it gives the tab the loaded dataset, and turns
// "Fine-tune with this plan" into a QAT run of the analysed model with the plan.
#include "main_window.h"

#include "analysis_view.h"
#include "core_message.h"
#include "search_view.h"
#include "training_panel.h"

#include "io/qsm.h"

#include <QComboBox>
#include <QDir>
#include <QDockWidget>
#include <QFileInfo>
#include <QLabel>
#include <QTabWidget>
#include <QTemporaryDir>

namespace quantscope {

void MainWindow::connectAnalysis()
{
    connect(this, &MainWindow::datasetReady, this, [this](bool ok) {
        if (ok) m_analysis->setDataset(m_data);
    });
    // Queued: the page says it is busy before its thread starts, and idle after it is joined.
    connect(m_analysis, &AnalysisView::analysingChanged, this, &MainWindow::updateActions, Qt::QueuedConnection);
    connect(m_analysis->search(), &SearchView::fineTuneRequested, this,
            [this](AnalysisInputPtr in, const PrecisionPlan& plan) { fineTuneWithPlan(std::move(in), plan); });
}

bool MainWindow::fineTuneWithPlan(std::shared_ptr<const AnalysisInput> in, const PrecisionPlan& plan)
{
    if (!in) return false;
    if (m_controller->isTraining() || m_controller->isLoading()) {
        showError(tr("A run is in progress; fine-tune when it has finished."));
        return false;
    }
    QString file = in->modelFile;
    if (file.isEmpty()) {
        // A run's model lives in memory: the QAT run starts from a .qsm of its FP32 weights.
        if (!in->bundle) return false;
        if (!m_fineTuneDir) m_fineTuneDir = std::make_shared<QTemporaryDir>(QDir::tempPath() + QStringLiteral("/quantscope-finetune-XXXXXX"));
        if (!m_fineTuneDir->isValid()) {
            showError(tr("Cannot fine-tune: no temporary folder for the run's model (%1).").arg(m_fineTuneDir->errorString()));
            return false;
        }
        // named after the run's architecture too: the file's name is the fine-tuning run's Model
        // (tester 19: the runs table read "run1-fp32" where it now reads "seed-cnn-run1-fp32")
        file = m_fineTuneDir->filePath(QString::fromStdString(in->bundle->config.model) + QLatin1Char('-') +
                                       in->name.simplified().remove(QLatin1Char(' ')).remove(QLatin1Char('#')) + QStringLiteral("-fp32.qsm"));
        try {
            writeQsm(file.toStdString(), in->bundle->fp32);
        } catch (const std::exception& e) {
            showError(tr("Cannot fine-tune: %1").arg(coreMessage(e)));
            return false;
        }
    }
    const int source = m_analysis->sourceCombo()->currentIndex();
    if (!loadModelFile(file)) return false;
    m_analysis->sourceCombo()->setCurrentIndex(source); // the tab keeps analysing what it was
    TrainConfig cfg = m_trainingPanel->config();
    cfg.modelFile = file.toStdString();
    cfg.model = QFileInfo(file).completeBaseName().toStdString();
    cfg.reinitModel = false;
    cfg.pretrained = true;
    PrecisionConfig& p = cfg.precision;
    p.strategy = Strategy::Qat;
    p.format = plan.defaults.format;
    p.granularity = plan.defaults.granularity;
    p.calibration = plan.defaults.calibration;
    p.activationFormat = plan.defaults.activationFormat;
    p.layers = plan.layers;
    p.planSource.clear();
    if (cfg.epochs == 0) cfg.epochs = 1; // QAT trains: the Epochs field left at 0 by a PTQ evaluation would refuse it
    m_trainingPanel->setConfig(cfg);
    refreshPlanModel();
    m_trainingDock->show();
    m_trainingDock->raise();
    startTraining();
    return isTraining();
}

} // namespace quantscope
