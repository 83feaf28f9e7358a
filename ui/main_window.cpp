// MainWindow at run time: dataset loading, training runs from click to finish (the worker's
// events into RunRecords, throttled chart redraws), run selection, status bar, closing.
#include "main_window.h"

#include "analysis_view.h"
#include "core_message.h"
#include "curve_charts.h"
#include "step_size_chart.h"
#include "dataset_panel.h"
#include "evaluate_dialog.h"
#include "format_text.h"
#include "quant_catalog.h"
#include "layer_compare_view.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"
#include "util/errors.h"
#include "util/memory.h"

#include "io/model_source.h"

#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QFileInfo>
#include <QGuiApplication>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLayout>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>

#include <algorithm>
#include <cmath>

namespace quantscope {


MainWindow::MainWindow(const MainWindowOptions& options, QWidget* parent)
    : QMainWindow(parent), m_options(options)
{
    setWindowTitle(tr("QuantScope \u2014 low-precision training explorer"));
    setObjectName(QStringLiteral("mainWindow"));
    // One icon per application, not per window: QIcon caches each size it draws in QPixmapCache
    // under its pixmaps' serial numbers, so a new QIcon per window added ~6 KB of cache entries
    // that no later window could hit (the GUI soak's 50 windows: main-arena heap +0.5 MiB, and the
    // pages those entries pinned). Windows without an icon of their own show the application's.
    if (QGuiApplication::windowIcon().isNull()) QGuiApplication::setWindowIcon(appIcon());
    m_controller = new TrainingController(this, options.throttleMs);
    m_runs = new RunsModel(this);
    buildActions();
    buildLayout();
    buildMenus();
    connectController();
    connectAnalysis();
    refreshPlanModel();

    m_redraw.setSingleShot(true);
    m_redraw.setInterval(50); // at most 20 redraws per second, whatever the trainer's pace
    connect(&m_redraw, &QTimer::timeout, this, [this] { refreshCurves(false); });

    fitToScreen(false);
    if (m_options.useSettings) {
        restoreSettings();
        fitToScreen(true);
    }
    if (m_options.trainLimit >= 0 || m_options.testLimit >= 0)
        m_datasetPanel->setLimits(m_options.trainLimit >= 0 ? std::size_t(m_options.trainLimit) : m_datasetPanel->trainLimit(),
                                  m_options.testLimit >= 0 ? std::size_t(m_options.testLimit) : m_datasetPanel->testLimit());

    if (!m_options.resize.isEmpty()) m_datasetPanel->setResizeText(m_options.resize);
    if (m_options.autoLoad) {
        QString dir = m_options.dataDir;
        if (dir.isEmpty() && m_options.useSettings) {
            const QString last = QSettings().value(QStringLiteral("dataset/dir")).toString();
            if (!last.isEmpty() && QFileInfo::exists(last)) dir = last;
        }
        if (dir.isEmpty() && QFileInfo(QString::fromLatin1(kDefaultDataDir)).isDir()) dir = QString::fromLatin1(kDefaultDataDir);
        if (!dir.isEmpty()) {
            openDatasetFolder(dir);
            m_startLoad = m_pendingLoad;
        } else {
            m_datasetPanel->setError(tr("%1 is not installed here").arg(QString::fromLatin1(kDefaultDataDir)));
        }
    }
    m_tabs->setCurrentIndex(std::clamp(m_tabs->currentIndex(), 0, m_tabs->count() - 1));
    if (!m_restoredLayout) QTimer::singleShot(0, this, &MainWindow::fitDatasetDock);
    updateActions();
    onSelectionChanged();
}

MainWindow::~MainWindow() { m_controller->shutdown(); }

// First start: the dataset dock as tall as its content, the training dock takes the rest. Done
// again once the first dataset is shown (its shape and class lines may wrap to two lines).
void MainWindow::fitDatasetDock()
{
    QLayout* l = m_datasetPanel->layout();
    const int w = m_datasetDock->widget()->width();
    const int data = std::max(m_datasetPanel->sizeHint().height(), l->hasHeightForWidth() ? l->totalHeightForWidth(w) : 0) + 24;
    resizeDocks({m_datasetDock, m_trainingDock}, {data, std::max(200, height() - data)}, Qt::Vertical);
}

void MainWindow::connectController()
{
    auto* c = m_controller;
    connect(c, &TrainingController::busyChanged, this, &MainWindow::updateActions);
    connect(c, &TrainingController::datasetLoaded, this, [this](quint64 id, DatasetPtr data) {
        if (id != m_pendingLoad) return;
        m_data = std::move(data);
        m_dataOptions = m_source.options; // the request m_pendingLoad names
        m_datasetPanel->setDataset(m_data);
        if (m_evaluateDialog) m_evaluateDialog->setDataset(m_data, m_dataOptions);
        if (!m_restoredLayout && !m_dockFittedToData) {
            m_dockFittedToData = true;
            QTimer::singleShot(0, this, &MainWindow::fitDatasetDock);
        }
        refreshPlanModel();
        const QString text = tr("Loaded %1: %2 training and %3 test images")
                                 .arg(QString::fromStdString(m_data->name), formatCount(double(m_data->train.size())),
                                      formatCount(double(m_data->test.size())));
        if (id == m_startLoad) m_statusLabel->setText(text);
        else reportDone(text);
        updateActions();
        emit datasetReady(true);
    });
    connect(c, &TrainingController::datasetFailed, this, [this](quint64 id, const QString& message) {
        if (id != m_pendingLoad) return;
        m_datasetPanel->setError(message);
        // The dock says what went wrong now; an older problem's banner would show a second error.
        if (id != m_startLoad) clearError();
        // The status bar said "Ready" (or the last run's news) beside the error (GUI test by a helper).
        m_statusLabel->setText(m_data ? tr("The dataset did not load (the Dataset dock says why); %1 stays loaded")
                                            .arg(QString::fromStdString(m_data->name))
                                      : tr("The dataset did not load: the Dataset dock says why"));
        updateActions();
        emit datasetReady(false);
    });
    connect(c, &TrainingController::started, this, [this](int id, const StartEvent& e) {
        if (RunPtr r = m_runs->runById(id)) {
            r->hasStart = true;
            r->start = e;
            m_runs->runChanged(id);
        }
        QString text = tr("Run #%1: %2 parameters, %3 steps per epoch")
                           .arg(id)
                           .arg(formatCount(double(e.parameters)), formatCount(double(e.stepsPerEpoch)));
        // mixed / low precision: which hardware computes the products (or why it is emulated)
        if (!e.compute.empty() && e.compute != "fp32") text += tr(", products on %1").arg(QString::fromStdString(e.compute));
        m_statusLabel->setText(text);
    });
    connect(c, &TrainingController::modelSize, this, [this](int id, double bytes) {
        if (RunPtr r = m_runs->runById(id); r && !std::isfinite(r->modelBytes)) {
            r->modelBytes = bytes;
            m_runs->runChanged(id);
        }
    });
    connect(c, &TrainingController::batches, this, &MainWindow::onBatches);
    connect(c, &TrainingController::epochDone, this, &MainWindow::onEpoch);
    connect(c, &TrainingController::layerStats, this, &MainWindow::onLayerStats);
    connect(c, &TrainingController::stepSizes, this, &MainWindow::onStepSizes);
    connect(c, &TrainingController::ptqProgress, this, [this](int id, const QString& text, double done) {
        m_statusLabel->setText(tr("Run #%1 \u00b7 %2").arg(id).arg(text));
        if (done >= 0.0) m_progress->setValue(int(1000.0 * done));
    });
    connect(c, &TrainingController::finished, this, &MainWindow::onFinished);
    connect(c, &TrainingController::exportReady, this, &MainWindow::onExportReady);
    connect(c, &TrainingController::exportUnavailable, this, [this](int id, const QString& reason) {
        if (RunPtr r = m_runs->runById(id)) r->exportNote = reason;
    });
    connect(c, &TrainingController::exported, this, &MainWindow::onExported);
    connect(c, &TrainingController::exportFailed, this, [this](int id, const QString& message) {
        const QString text = tr("Could not export run #%1: %2").arg(id).arg(message);
        showError(text);
        m_statusLabel->setText(tr("Export of run #%1 failed").arg(id));
        updateActions();
        emit exportFinished(id, false, text);
    });
    connect(c, &TrainingController::failed, this, &MainWindow::onFailed);
}

QString MainWindow::errorText() const { return m_errorBar->isHidden() ? QString() : m_errorLabel->text(); }
QString MainWindow::statusText() const { return m_statusLabel->text(); }
bool MainWindow::isTraining() const { return m_controller->isTraining(); }

void MainWindow::showError(const QString& message)
{
    m_errorLabel->setText(message);
    m_errorBar->show();
    // Outside a run the status bar holds the last action's result ("Saved 2 runs to ..."), which
    // a later failure supersedes (tester 19: it stayed under "Could not load runs"); a run's
    // progress line stays.
    if (!m_controller->isTraining() && !m_controller->isLoading()) m_statusLabel->clear();
}

void MainWindow::clearError()
{
    m_errorLabel->clear();
    m_errorBar->hide();
}

void MainWindow::reportDone(const QString& status)
{
    clearError();
    m_statusLabel->setText(status);
}

void MainWindow::loadRequest(DatasetRequest request, const QString& what)
{
    if (m_controller->isTraining()) return;
    request.options.trainLimit = m_datasetPanel->trainLimit();
    request.options.testLimit = m_datasetPanel->testLimit();
    // Held out of the training images the limit keeps, as the Analysis tab holds them out of a run's.
    request.options.validation = m_datasetPanel->validationImages();
    request.options.validationAfterLimit = true;
    request.options.testFraction = m_datasetPanel->testFraction();
    try {
        const QString resize = m_datasetPanel->resizeText(), shape = m_datasetPanel->imageShapeText();
        request.options.resize = resize.isEmpty() ? ImageShape{} : parseResize(resize.toStdString());
        request.options.imageShape = shape.isEmpty() ? ImageShape{} : parseImageShape(shape.toStdString());
    } catch (const ConfigError& e) {
        m_datasetPanel->setError(coreMessage(e));
        return;
    }
    m_source = request;
    m_datasetPanel->setLoading(what);
    m_pendingLoad = m_controller->loadDataset(request);
    updateActions();
}

void MainWindow::openDatasetFolder(const QString& dir)
{
    DatasetRequest r;
    r.options.dir = QDir::cleanPath(dir).toStdString();
    loadRequest(r, QFileInfo(dir).fileName().isEmpty() ? dir : QFileInfo(dir).fileName());
}

void MainWindow::openDatasetFiles(const DatasetFiles& files)
{
    DatasetRequest r;
    r.explicitFiles = true;
    r.files = files;
    loadRequest(r, tr("the chosen files"));
}

void MainWindow::updateActions()
{
    const bool training = m_controller->isTraining();
    const bool loading = m_controller->isLoading();
    const bool paused = m_controller->isPaused();
    const bool exporting = m_controller->isExporting();
    // An analysis and a run would share the cores (each at about half speed): one at a time.
    const bool analysing = m_analysis->isAnalysing();
    m_trainAct->setEnabled(!training && !loading && !exporting && m_data && !analysing);
    const QString trainTip = analysing ? tr("An analysis is running in the Analysis tab, and training would share the cores with it. "
                                            "Train when it has finished (or stop it).")
                             : m_data || loading ? tr("Starts a run with these options (Ctrl+R).")
                                                 : tr("Load a dataset first (Ctrl+O).");
    m_trainAct->setToolTip(trainTip);
    m_analysis->setTraining(training);
    // Export writes the primary selected run's model: greyed out, saying why, when it has none.
    // With no run at all it stays offered and its dialog says how to get one.
    const std::vector<RunPtr> selected = selectedRuns();
    const RunPtr run = !selected.empty() ? selected.front() : m_runs->rowCount() > 0 ? m_runs->runAt(m_runs->rowCount() - 1) : nullptr;
    const QString why = run && !run->exportBundle ? tr("Run #%1 has no model to export: %2.").arg(run->id).arg(noModelReason(*run)) : QString();
    m_exportAct->setEnabled(!training && !loading && !exporting && why.isEmpty());
    m_exportAct->setToolTip(!why.isEmpty() ? why
                            : run ? tr("Writes run #%1's model as .qsm or .onnx and re-measures its accuracy from the file.").arg(run->id)
                                  : tr("Writes a run's model as .qsm or .onnx and re-measures its accuracy from the file."));
    m_exportAct->setStatusTip(why);
    m_pauseAct->setEnabled(training);
    m_pauseAct->setText(paused ? tr("&Resume") : tr("&Pause"));
    m_stopAct->setEnabled(training);
    m_openAct->setEnabled(!training);
    m_pickFilesAct->setEnabled(!training);
    m_loadRunsAct->setEnabled(!training);
    m_trainingPanel->trainButton()->setEnabled(m_trainAct->isEnabled());
    m_trainingPanel->trainButton()->setToolTip(trainTip);
    m_trainingPanel->pauseButton()->setEnabled(training);
    m_trainingPanel->pauseButton()->setText(paused ? tr("Resume") : tr("Pause"));
    m_trainingPanel->stopButton()->setEnabled(training);
    m_trainingPanel->setRunning(training);
    m_datasetPanel->setBusy(training || loading);
}

void MainWindow::startTraining()
{
    if (m_controller->isTraining() || m_controller->isLoading()) return;
    if (m_analysis->isAnalysing()) { // Train is greyed out; Fine-tune with this plan comes here too
        showError(tr("An analysis is running in the Analysis tab: train when it has finished, or stop it."));
        return;
    }
    if (!m_data) {
        showError(tr("No dataset is loaded. Open a folder of IDX files with File > Open dataset folder (Ctrl+O)."));
        return;
    }
    TrainConfig cfg = m_trainingPanel->config();
    if (cfg.epochs == 0 && !cfg.pretrained) {
        showError(tr("Epochs 0 evaluates trained weights without training, and this model starts from random weights. "
                     "Open a trained model with File > Open model file, or set Epochs to 1 or more."));
        return;
    }
    // The plan table keeps its entries while another strategy is picked; only PTQ, QAT and
    // progressive use them.
    const Strategy st = cfg.precision.strategy;
    if (st != Strategy::Ptq && st != Strategy::Qat && st != Strategy::Progressive) cfg.precision.layers.clear();
    DatasetPtr data = m_data;
    std::string composedNote;
    try {
        if (!cfg.modelFile.empty()) cfg.modelFactory = modelFromFile(cfg.modelFile, cfg.reinitModel);
        const QString norm = m_trainingPanel->normalizeText();
        std::optional<Normalization> given;
        if (!norm.isEmpty()) given = Normalization::parse(norm.toStdString()).broadcast(m_data->channels());
        // A file's weights keep the normalisation they were trained on, with the user's before a
        // graph's own; the user's alone otherwise (as train --normalize and eval decide).
        InputNormalization use{given ? InputNormalization::Kind::Given : InputNormalization::Kind::NotStored,
                               given.value_or(Normalization{}), {}};
        if (!cfg.modelFile.empty() && cfg.pretrained) {
            const ExportedModel file = readModelFile(cfg.modelFile);
            const std::size_t nc = file.normalization.channels();
            if (nc == 1 || nc == m_data->channels()) use = resolveInputNormalization(file, cfg.modelFile, given, m_data->channels(), "Normalize");
            if (use.kind == InputNormalization::Kind::Conflict)
                throw ConfigError(use.note + "; its weights were trained on the stored one (clear Normalize, or tick Fresh weights to train afresh)");
        }
        if (use.kind != InputNormalization::Kind::NotStored) { // a copy of the dataset with that normalisation
            auto d = std::make_shared<Dataset>(*m_data);
            d->normalization = use.value;
            data = d;
        }
        composedNote = use.note;
        cfg.validate();
    } catch (const std::exception& e) {
        showError(tr("These options cannot be trained: %1").arg(coreMessage(e)));
        return;
    }
    clearError();
    if (!composedNote.empty()) showError(tr("Note: %1.").arg(QString::fromStdString(composedNote)));
    if (const std::string w = cfg.precision.stallWarning(); !w.empty()) // as the CLI says it, before the run
        showError(tr("Note: %1. Pick Rounding: stochastic in the Training dock.").arg(QString::fromStdString(w)));
    if (const std::string w = cfg.precision.batchNormDriftWarning(m_trainingPanel->planModelHasBatchNorm()); !w.empty())
        showError(tr("Note: %1. Set BN re-estimate to 100 in the Training dock.").arg(QString::fromStdString(w)));
    auto run = std::make_shared<RunRecord>();
    run->id = m_runs->nextId();
    run->config = cfg;
    run->datasetName = QString::fromStdString(m_data->name);
    run->imageHeight = m_data->height();
    run->imageWidth = m_data->width();
    run->classes = m_data->numClasses();
    run->startedAt = QDateTime::currentDateTime();
    m_live = run;
    const int row = m_runs->addRun(run);
    m_sinceTrain.start();
    m_firstPointSent = false;
    if (!m_controller->startTraining(run->id, cfg, data)) {
        run->status = RunStatus::Failed;
        run->error = tr("the worker is busy");
        m_runs->runChanged(run->id);
        return;
    }
    m_runsView->selectionModel()->select(m_runs->index(row, 0), QItemSelectionModel::ClearAndSelect |
                                                                    QItemSelectionModel::Rows);
    m_runsView->selectionModel()->setCurrentIndex(m_runs->index(row, 0), QItemSelectionModel::NoUpdate);
    m_runsView->scrollTo(m_runs->index(row, 0));
    m_progress->setValue(0);
    m_progress->show();
    m_statusLabel->setText(tr("Starting run #%1 (%2)\u2026").arg(run->id).arg(run->shortConfig()));
    updateActions();
    emit runStarted(run->id);
}

void MainWindow::togglePause()
{
    if (!m_controller->isTraining()) return;
    const bool pause = !m_controller->isPaused();
    if (pause) m_controller->pause();
    else m_controller->resume();
    if (m_live) {
        m_live->status = pause ? RunStatus::Paused : RunStatus::Running;
        m_runs->runChanged(m_live->id);
    }
    if (pause) m_statusLabel->setText(m_statusLabel->text() + tr(" \u2014 paused"));
    updateActions();
}

void MainWindow::stopTraining()
{
    if (!m_controller->isTraining()) return;
    m_controller->stop();
    m_statusLabel->setText(tr("Stopping after the current batch\u2026"));
    updateActions();
}

void MainWindow::onBatches(int id, const BatchList& events)
{
    RunPtr r = m_runs->runById(id);
    if (!r || events.empty()) return;
    r->addSteps(events);
    // The runs table's Time cell runs with the clock (it read 0.0 s until the run paused or ended).
    if (!m_timeCell.isValid() || m_timeCell.elapsed() >= 500) {
        m_timeCell.start();
        m_runs->timeChanged(id);
    }
    const BatchEvent& b = events.back();
    const double total = double(std::max<std::size_t>(1, r->config.epochs * b.stepsPerEpoch));
    m_progress->setValue(int(1000.0 * double(b.globalStep) / total));
    const double imagesPerStep = r->hasStart ? double(r->start.trainImages) / double(std::max<std::size_t>(1, b.stepsPerEpoch))
                                             : double(r->config.batchSize);
    const double eta = b.imagesPerSecond > 0 ? (total - double(b.globalStep)) * imagesPerStep / b.imagesPerSecond : -1;
    QString text = tr("Run #%1 \u00b7 epoch %2/%3 \u00b7 step %4/%5 \u00b7 %6 \u00b7 ETA %7 \u00b7 loss %8")
                       .arg(id)
                       .arg(b.epoch)
                       .arg(r->config.epochs)
                       .arg(formatCount(double(b.step)), formatCount(double(b.stepsPerEpoch)),
                            formatRate(b.imagesPerSecond), formatClock(eta), formatLoss(r->smoothedLoss.back()));
    text += tr(" \u00b7 peak memory %1 MB").arg(formatCount(peakResidentMegabytes()));
    if (m_controller->isPaused()) text += tr(" \u2014 paused");
    m_statusLabel->setText(text);
    if (!m_firstPointSent) {
        refreshCurves(false); // the first point shows at once; later ones ride the 50 ms timer
        m_firstPointSent = true;
        emit firstLossPoint(m_sinceTrain.elapsed());
    } else if (!m_redraw.isActive()) {
        m_redraw.start();
    }
}

void MainWindow::onEpoch(int id, const EpochEvent& e)
{
    RunPtr r = m_runs->runById(id);
    if (!r) return;
    r->epochs.push_back(e);
    m_runs->runChanged(id);
    if (!m_redraw.isActive()) m_redraw.start();
}

void MainWindow::onStepSizes(int id, const StepSizeEvent& e)
{
    RunPtr r = m_runs->runById(id);
    if (!r || e.steps.empty()) return;
    r->stepSizes.push_back(e);
    if (!m_redraw.isActive()) m_redraw.start();
}

void MainWindow::onLayerStats(int id, const LayerStatsList& stats)
{
    RunPtr r = m_runs->runById(id);
    if (!r || stats.empty()) return;
    r->layerStats.push_back(stats);
    m_runs->runChanged(id);
    if (std::find(m_shown.begin(), m_shown.end(), r) != m_shown.end()) {
        m_quantDirty = true;
        refreshQuant();
    }
}

void MainWindow::onFinished(int id, const FinishEvent& e)
{
    RunPtr r = m_runs->runById(id);
    if (r) {
        r->finished = true;
        r->finish = e;
        r->status = e.stopped ? RunStatus::Stopped : RunStatus::Done;
        m_runs->runChanged(id);
        QString text = e.stopped ? tr("Run #%1 stopped after %2 of %3 epochs").arg(id).arg(e.epochsDone).arg(r->config.epochs)
                                 : tr("Run #%1 finished").arg(id);
        if (std::isfinite(e.testAccuracy)) text += tr(": test accuracy %1").arg(formatPercent(e.testAccuracy));
        if (std::isfinite(e.quantTestAccuracy)) text += tr(" (quantized %1)").arg(formatPercent(e.quantTestAccuracy));
        // The run's time holds the evaluations too, the rate the training steps alone (tester 19
        // read "in 4.2 s, 1,353 img/s" of 1,500 images as one figure contradicting the other).
        text += tr(" in %1").arg(formatSeconds(e.seconds));
        if (e.imagesPerSecond > 0) text += tr(" (evaluations included), training %1").arg(formatRate(e.imagesPerSecond));
        if (e.peakRssMb > 0) text += tr(", peak memory %1 MB").arg(formatCount(e.peakRssMb));
        m_statusLabel->setText(text);
    }
    endProgress();
    m_redraw.stop();
    refreshCurves(true);
    m_quantDirty = true;
    refreshQuant();
    updateActions();
    emit runEnded(id);
}

void MainWindow::onFailed(int id, const QString& message)
{
    if (RunPtr r = m_runs->runById(id)) {
        r->status = RunStatus::Failed;
        r->error = message;
        m_runs->runChanged(id);
    }
    endProgress();
    showError(tr("Run #%1 failed: %2").arg(id).arg(message));
    // The cause's first clause (e.g. "training diverged: non-finite gradients for 50 steps").
    m_statusLabel->setText(tr("Run #%1 failed: %2").arg(id).arg(message.section(QStringLiteral(" ("), 0, 0)));
    refreshCurves(true);
    updateActions();
    emit runEnded(id);
}

void MainWindow::endProgress()
{
    // The bar shows a run going: left full (or half full for a stopped run) after the end, it read
    // as a run still at work. The status line says how the run ended.
    m_progress->setValue(0);
    m_progress->hide();
}

std::vector<RunPtr> MainWindow::selectedRuns() const
{
    std::vector<RunPtr> out;
    const QModelIndexList rows = m_runsView->selectionModel()->selectedRows();
    const int current = m_runsView->selectionModel()->currentIndex().row();
    std::vector<int> order;
    for (const QModelIndex& i : rows) order.push_back(i.row());
    std::sort(order.begin(), order.end());
    // The current row (the one clicked last) is the primary run: drawn fully, shown in histograms.
    auto it = std::find(order.begin(), order.end(), current);
    if (it != order.end()) std::rotate(order.begin(), it, it + 1);
    for (int row : order) out.push_back(m_runs->runAt(row));
    return out;
}

std::vector<RunPtr> MainWindow::inTableOrder(std::vector<RunPtr> runs) const
{
    std::sort(runs.begin(), runs.end(), [this](const RunPtr& a, const RunPtr& b) { return m_runs->rowOf(a->id) < m_runs->rowOf(b->id); });
    return runs;
}

void MainWindow::selectRuns(const QList<int>& ids)
{
    QItemSelection sel;
    int last = -1;
    for (int id : ids) {
        const int row = m_runs->rowOf(id);
        if (row < 0) continue;
        sel.select(m_runs->index(row, 0), m_runs->index(row, RunsModel::ColumnCount - 1));
        last = row;
    }
    m_runsView->selectionModel()->select(sel, QItemSelectionModel::ClearAndSelect);
    if (last >= 0) m_runsView->selectionModel()->setCurrentIndex(m_runs->index(last, 0), QItemSelectionModel::NoUpdate);
    onSelectionChanged();
}

void MainWindow::updateCompareRun()
{
    // The Analysis and Layers tabs analyse the primary run (the selected row clicked last, the
    // one the histograms and the SQNR label show) when it kept its model; else the newest
    // selected run that did, else the newest run that did (a run in progress being selected
    // does not take away the model being analysed).
    const auto newestWithModel = [](const std::vector<RunPtr>& runs) -> RunPtr {
        for (auto it = runs.rbegin(); it != runs.rend(); ++it)
            if ((*it)->exportBundle) return *it;
        return nullptr;
    };
    const std::vector<RunPtr> selected = selectedRuns(); // the primary run first
    RunPtr analysed = !selected.empty() && selected.front()->exportBundle ? selected.front() : newestWithModel(selected);
    if (!analysed) analysed = newestWithModel(m_runs->runs());
    if (analysed) m_analysis->setRun(analysed->id, analysed->exportBundle, analysed->shortConfig());
    else m_analysis->setRun(0, nullptr, QString());
    // The Layers tab compares what is selected: a selected run without a model greys Compare out
    // and says why (it compared the newest run that had one, under the old chart, without a word).
    if (!selected.empty() && !selected.front()->exportBundle)
        m_compare->setRun(selected.front()->id, nullptr, noModelReason(*selected.front()));
    else if (analysed) m_compare->setRun(analysed->id, analysed->exportBundle);
    else m_compare->setRun(0, nullptr);
}

void MainWindow::onSelectionChanged()
{
    updateCompareRun();
    updateActions(); // Export follows the primary run's model
    updateCsvAction();
    std::vector<RunPtr> shown = selectedRuns();
    if (shown.empty() && m_runs->rowCount() > 0) shown.push_back(m_runs->runAt(m_runs->rowCount() - 1));
    if (shown == m_shown && !m_shown.empty()) return;
    m_shown = shown;
    QList<int> ids;
    for (const RunPtr& r : m_shown) ids << r->id;
    m_runs->setShownRuns(ids);
    // The legends list the runs as the table does, the primary among them at its row.
    const std::vector<RunPtr> inTable = inTableOrder(m_shown);
    for (RunChart* c : std::initializer_list<RunChart*>{m_loss, m_accuracy, m_lossScale, m_stepSizes, m_sqnr}) c->setRuns(m_shown, inTable);
    m_quantDirty = true;
    refreshQuant();
    emit chartsRefreshed();
}

void MainWindow::refreshCurves(bool all)
{
    // Only the visible tab redraws while training; the others catch up when they are shown.
    const QWidget* tab = m_tabs->currentWidget();
    if (all || tab == m_curvesSplitter) {
        m_loss->refresh();
        m_accuracy->refresh();
    }
    if (all || tab == m_lossScale) m_lossScale->refresh();
    if (all || tab == m_stepSizes) m_stepSizes->refresh();
    if (all && m_quantDirty) refreshQuant();
    emit chartsRefreshed();
}

void MainWindow::refreshQuant()
{
    if (!m_quantDirty) return;
    m_quantDirty = false;
    RunPtr primary = m_shown.empty() ? nullptr : m_shown.front();
    const int selected = static_cast<int>(m_shown.size());
    m_histogram->setRun(primary, selected);
    m_ranges->setRun(primary, selected);
    m_sqnr->refresh();
    updateSqnrLabel();
}

void MainWindow::updateSqnrLabel()
{
    const LayerStats* s = m_histogram->bar()->current();
    // The run as well as the layer: with several runs selected, the label named the layer alone.
    m_sqnrLabel->setText(s ? tr("%1: SQNR %2").arg(runStatsName(m_histogram->bar()->run(), *s), formatDb(s->sqnrDb)) : QString());
}

void MainWindow::closeEvent(QCloseEvent* event)
{
    if (m_options.useSettings) saveSettings();
    // Stops a run after its current batch and joins the worker thread: no hang, no crash.
    m_redraw.stop();
    m_controller->shutdown();
    event->accept();
}

} // namespace quantscope
