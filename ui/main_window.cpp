#include "main_window.h"

#include "curve_charts.h"
#include "dataset_panel.h"
#include "format_text.h"
#include "quant_catalog.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLayout>
#include <QMenuBar>
#include <QMessageBox>
#include <QPainter>
#include <QPainterPath>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>
#include <QToolButton>
#include <QVBoxLayout>

#include <cmath>

namespace quantscope {

namespace {

QScrollArea* scrolled(QWidget* w)
{
    auto* s = new QScrollArea;
    s->setWidget(w);
    s->setWidgetResizable(true);
    s->setFrameShape(QFrame::NoFrame);
    s->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    // Never narrower than the panel wants: nothing is clipped on the right.
    s->setMinimumWidth(w->minimumSizeHint().width() + s->verticalScrollBar()->sizeHint().width() + 2);
    return s;
}

// The window icon, drawn rather than loaded (no image plugin needed): an FP32 weight
// distribution over quantization levels, as in resources/quantscope.svg.
QIcon makeIcon()
{
    QIcon icon;
    for (int size : {16, 32, 64, 128, 256}) {
        QPixmap pm(size, size);
        pm.fill(Qt::transparent);
        QPainter p(&pm);
        p.setRenderHint(QPainter::Antialiasing);
        p.scale(size / 256.0, size / 256.0);
        p.setPen(Qt::NoPen);
        p.setBrush(QColor(0x1f, 0x3b, 0x57));
        p.drawRoundedRect(QRectF(8, 8, 240, 240), 40, 40);
        p.setBrush(QColor(0xff, 0x8c, 0x1a));
        const int heights[] = {16, 42, 90, 146, 152, 96, 44, 18};
        for (int i = 0; i < 8; ++i) p.drawRect(QRectF(40 + 24 * i, 212 - heights[i], 14, heights[i]));
        QPainterPath curve(QPointF(30, 210));
        curve.cubicTo(70, 206, 90, 150, 110, 80);
        curve.cubicTo(120, 44, 140, 44, 150, 80);
        curve.cubicTo(170, 150, 190, 206, 230, 210);
        p.setBrush(Qt::NoBrush);
        p.setPen(QPen(QColor(0x8f, 0xd3, 0xff), 10, Qt::SolidLine, Qt::RoundCap));
        p.drawPath(curve);
        p.setPen(QPen(Qt::white, 6, Qt::SolidLine, Qt::RoundCap));
        p.drawLine(QPointF(28, 214), QPointF(228, 214));
        icon.addPixmap(pm);
    }
    return icon;
}

} // namespace

MainWindow::MainWindow(const MainWindowOptions& options, QWidget* parent)
    : QMainWindow(parent), m_options(options)
{
    setWindowTitle(tr("QuantScope \u2014 low-precision training explorer"));
    setObjectName(QStringLiteral("mainWindow"));
    setWindowIcon(makeIcon());
    m_controller = new TrainingController(this, options.throttleMs);
    m_runs = new RunsModel(this);
    buildActions();
    buildLayout();
    buildMenus();
    connectController();

    m_redraw.setSingleShot(true);
    m_redraw.setInterval(50); // at most 20 redraws per second, whatever the trainer's pace
    connect(&m_redraw, &QTimer::timeout, this, [this] { refreshCurves(false); });

    resize(1500, 940);
    if (m_options.useSettings) restoreSettings();
    if (m_options.trainLimit >= 0 || m_options.testLimit >= 0)
        m_datasetPanel->setLimits(m_options.trainLimit >= 0 ? std::size_t(m_options.trainLimit) : m_datasetPanel->trainLimit(),
                                  m_options.testLimit >= 0 ? std::size_t(m_options.testLimit) : m_datasetPanel->testLimit());

    if (m_options.autoLoad) {
        QString dir = m_options.dataDir;
        if (dir.isEmpty() && m_options.useSettings) {
            const QString last = QSettings().value(QStringLiteral("dataset/dir")).toString();
            if (!last.isEmpty() && QFileInfo(last).isDir()) dir = last;
        }
        if (dir.isEmpty() && QFileInfo(QString::fromLatin1(kDefaultDataDir)).isDir()) dir = QString::fromLatin1(kDefaultDataDir);
        if (!dir.isEmpty()) openDatasetFolder(dir);
        else m_datasetPanel->setError(tr("%1 is not installed here").arg(QString::fromLatin1(kDefaultDataDir)));
    }
    m_tabs->setCurrentIndex(std::clamp(m_tabs->currentIndex(), 0, m_tabs->count() - 1));
    if (!m_restoredLayout) {
        // First start: the dataset dock as tall as its content, the training dock takes the rest.
        QTimer::singleShot(0, this, [this] {
            QLayout* l = m_datasetPanel->layout();
            const int w = m_datasetDock->widget()->width();
            const int data = std::max(m_datasetPanel->sizeHint().height(), l->hasHeightForWidth() ? l->totalHeightForWidth(w) : 0) + 24;
            resizeDocks({m_datasetDock, m_trainingDock}, {data, std::max(200, height() - data)}, Qt::Vertical);
        });
    }
    updateActions();
    onSelectionChanged();
}

MainWindow::~MainWindow() { m_controller->shutdown(); }

void MainWindow::buildActions()
{
    m_openAct = new QAction(tr("&Open dataset folder\u2026"), this);
    m_openAct->setShortcut(QKeySequence::Open);
    m_openAct->setToolTip(tr("Loads an MNIST-layout folder of IDX files."));
    m_pickFilesAct = new QAction(tr("&Pick dataset files\u2026"), this);
    m_loadRunsAct = new QAction(tr("&Load runs\u2026"), this);
    m_saveRunsAct = new QAction(tr("&Save runs\u2026"), this);
    m_saveRunsAct->setShortcut(QKeySequence::Save);
    m_csvAct = new QAction(tr("Export &metrics as CSV\u2026"), this);
    m_pngAct = new QAction(tr("Save current &chart as PNG\u2026"), this);
    m_pngAct->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_S));
    m_exportAct = new QAction(tr("&Export quantized model\u2026"), this);
    m_exportAct->setObjectName(QStringLiteral("exportModelAction"));
    m_quitAct = new QAction(tr("&Quit"), this);
    m_quitAct->setShortcut(QKeySequence::Quit);

    m_trainAct = new QAction(tr("&Train"), this);
    m_trainAct->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_R));
    m_trainAct->setObjectName(QStringLiteral("trainAction"));
    m_pauseAct = new QAction(tr("&Pause"), this);
    m_pauseAct->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_P));
    m_stopAct = new QAction(tr("&Stop"), this);
    m_stopAct->setShortcut(QKeySequence(Qt::Key_Escape));
    m_stopAct->setObjectName(QStringLiteral("stopAction"));
    for (QAction* a : {m_trainAct, m_pauseAct, m_stopAct, m_openAct}) a->setShortcutContext(Qt::WindowShortcut);

    connect(m_openAct, &QAction::triggered, this, [this] { m_datasetPanel->chooseFolder(); });
    connect(m_pickFilesAct, &QAction::triggered, this, [this] { m_datasetPanel->chooseFiles(); });
    connect(m_loadRunsAct, &QAction::triggered, this, &MainWindow::loadRuns);
    connect(m_saveRunsAct, &QAction::triggered, this, &MainWindow::saveRuns);
    connect(m_csvAct, &QAction::triggered, this, &MainWindow::exportMetricsCsv);
    connect(m_pngAct, &QAction::triggered, this, &MainWindow::saveCurrentChartPng);
    connect(m_exportAct, &QAction::triggered, this, &MainWindow::exportQuantizedModel);
    connect(m_quitAct, &QAction::triggered, this, &QWidget::close);
    connect(m_trainAct, &QAction::triggered, this, &MainWindow::startTraining);
    connect(m_pauseAct, &QAction::triggered, this, &MainWindow::togglePause);
    connect(m_stopAct, &QAction::triggered, this, &MainWindow::stopTraining);
}

void MainWindow::buildLayout()
{
    setDockOptions(QMainWindow::AnimatedDocks | QMainWindow::AllowNestedDocks);

    m_datasetPanel = new DatasetPanel;
    m_datasetDock = new QDockWidget(tr("Dataset"), this);
    m_datasetDock->setObjectName(QStringLiteral("datasetDock"));
    m_datasetDock->setWidget(scrolled(m_datasetPanel));
    m_datasetDock->setFeatures(QDockWidget::DockWidgetMovable | QDockWidget::DockWidgetFloatable |
                               QDockWidget::DockWidgetClosable);
    addDockWidget(Qt::LeftDockWidgetArea, m_datasetDock);

    m_trainingPanel = new TrainingPanel;
    m_trainingDock = new QDockWidget(tr("Training"), this);
    m_trainingDock->setObjectName(QStringLiteral("trainingDock"));
    m_trainingDock->setWidget(scrolled(m_trainingPanel));
    m_trainingDock->setFeatures(m_datasetDock->features());
    addDockWidget(Qt::LeftDockWidgetArea, m_trainingDock);
    splitDockWidget(m_datasetDock, m_trainingDock, Qt::Vertical);
    resizeDocks({m_datasetDock}, {400}, Qt::Horizontal);

    connect(m_datasetPanel, &DatasetPanel::folderChosen, this, &MainWindow::openDatasetFolder);
    connect(m_datasetPanel, &DatasetPanel::filesChosen, this, &MainWindow::openDatasetFiles);
    connect(m_datasetPanel, &DatasetPanel::limitsChanged, this, [this] {
        if (m_source.explicitFiles || !m_source.options.dir.empty()) loadRequest(m_source, tr("the dataset"));
    });
    connect(m_trainingPanel->trainButton(), &QPushButton::clicked, m_trainAct, &QAction::trigger);
    connect(m_trainingPanel->pauseButton(), &QPushButton::clicked, m_pauseAct, &QAction::trigger);
    connect(m_trainingPanel->stopButton(), &QPushButton::clicked, m_stopAct, &QAction::trigger);

    // Chart tabs.
    m_loss = new LossChart;
    m_loss->setObjectName(QStringLiteral("lossChart"));
    m_accuracy = new AccuracyChart;
    m_accuracy->setObjectName(QStringLiteral("accuracyChart"));
    m_curvesSplitter = new QSplitter(Qt::Horizontal);
    m_curvesSplitter->setObjectName(QStringLiteral("curvesSplitter"));
    m_curvesSplitter->addWidget(m_loss);
    m_curvesSplitter->addWidget(m_accuracy);
    m_curvesSplitter->setChildrenCollapsible(false);
    m_histogram = new HistogramPanel;
    m_ranges = new RangesPanel;
    m_sqnr = new SqnrChart;
    m_sqnr->setObjectName(QStringLiteral("sqnrChart"));
    m_lossScale = new LossScaleChart;
    m_lossScale->setObjectName(QStringLiteral("lossScaleChart"));
    m_tabs = new QTabWidget;
    m_tabs->setObjectName(QStringLiteral("chartTabs"));
    m_tabs->addTab(m_curvesSplitter, tr("Curves"));
    m_tabs->addTab(m_histogram, tr("Histograms"));
    m_tabs->addTab(m_ranges, tr("Ranges"));
    m_tabs->addTab(m_sqnr, tr("Error (SQNR)"));
    m_tabs->addTab(m_lossScale, tr("Loss scale"));
    m_tabs->setTabToolTip(0, tr("Loss per step and per epoch; accuracy per epoch, FP32 and quantized."));
    m_tabs->setTabToolTip(1, tr("FP32 vs quantized weight histograms of one layer, with the clip range."));
    m_tabs->setTabToolTip(2, tr("Per-output-channel weight ranges of one layer against the whole tensor's range."));
    m_tabs->setTabToolTip(3, tr("Signal-to-quantization-noise ratio of every quantized layer."));
    m_tabs->setTabToolTip(4, tr("Mixed precision: the dynamic loss scale over steps, and skipped steps."));
    connect(m_tabs, &QTabWidget::currentChanged, this, [this] { refreshCurves(true); });
    connect(m_histogram->bar(), &LayerEpochBar::layerChanged, this, [this](const QString& l) {
        m_ranges->bar()->setLayer(l);
        updateSqnrLabel();
    });
    connect(m_ranges->bar(), &LayerEpochBar::layerChanged, m_histogram->bar(), &LayerEpochBar::setLayer);

    // Error banner over the charts.
    m_errorBar = new QWidget;
    m_errorBar->setObjectName(QStringLiteral("errorBar"));
    m_errorBar->setStyleSheet(QStringLiteral("#errorBar { background: #fdecea; border: 1px solid #e0a0a0; }"));
    m_errorLabel = new QLabel;
    m_errorLabel->setObjectName(QStringLiteral("errorLabel"));
    m_errorLabel->setWordWrap(true);
    m_errorLabel->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_errorLabel->setStyleSheet(QStringLiteral("color: #a40000;"));
    auto* close = new QToolButton;
    close->setText(QStringLiteral("\u2715"));
    close->setToolTip(tr("Hide this message."));
    close->setAutoRaise(true);
    connect(close, &QToolButton::clicked, this, &MainWindow::clearError);
    auto* eb = new QHBoxLayout(m_errorBar);
    eb->setContentsMargins(8, 4, 4, 4);
    eb->addWidget(m_errorLabel, 1);
    eb->addWidget(close, 0, Qt::AlignTop);
    m_errorBar->hide();

    auto* top = new QWidget;
    auto* tv = new QVBoxLayout(top);
    tv->setContentsMargins(0, 0, 0, 0);
    tv->addWidget(m_errorBar);
    tv->addWidget(m_tabs, 1);

    // Runs table.
    m_runsView = new QTableView;
    m_runsView->setObjectName(QStringLiteral("runsTable"));
    m_runsView->setModel(m_runs);
    m_runsView->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_runsView->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_runsView->verticalHeader()->hide();
    m_runsView->setAlternatingRowColors(true);
    m_runsView->setWordWrap(false);
    m_runsView->horizontalHeader()->setStretchLastSection(true);
    m_runsView->horizontalHeader()->setSectionResizeMode(QHeaderView::Interactive);
    m_runsView->setToolTip(tr("Every run of this session. Select several (Ctrl+click) to overlay their curves."));
    const int widths[] = {48, 90, 90, 150, 110, 60, 80, 80, 80, 80};
    for (int c = 0; c < int(std::size(widths)); ++c) m_runsView->setColumnWidth(c, widths[c]);
    connect(m_runsView->selectionModel(), &QItemSelectionModel::selectionChanged, this, &MainWindow::onSelectionChanged);
    connect(m_runsView->selectionModel(), &QItemSelectionModel::currentRowChanged, this, &MainWindow::onSelectionChanged);

    auto* runsBox = new QWidget;
    auto* rv = new QVBoxLayout(runsBox);
    rv->setContentsMargins(0, 4, 0, 0);
    auto* runsHeader = new QHBoxLayout;
    auto* runsTitle = new QLabel(tr("<b>Runs</b> \u2014 select several (Ctrl+click) to overlay their curves"));
    runsHeader->addWidget(runsTitle, 1);
    for (QAction* a : {m_loadRunsAct, m_saveRunsAct, m_csvAct}) {
        auto* b = new QToolButton;
        b->setDefaultAction(a);
        b->setToolButtonStyle(Qt::ToolButtonTextOnly);
        runsHeader->addWidget(b);
    }
    rv->addLayout(runsHeader);
    rv->addWidget(m_runsView, 1);

    m_mainSplitter = new QSplitter(Qt::Vertical);
    m_mainSplitter->setObjectName(QStringLiteral("mainSplitter"));
    m_mainSplitter->addWidget(top);
    m_mainSplitter->addWidget(runsBox);
    m_mainSplitter->setStretchFactor(0, 3);
    m_mainSplitter->setStretchFactor(1, 1);
    m_mainSplitter->setSizes({680, 200});
    m_mainSplitter->setChildrenCollapsible(false);
    setCentralWidget(m_mainSplitter);

    // Status bar: progress, epoch/step/speed/ETA, SQNR of the selected layer.
    m_progress = new QProgressBar;
    m_progress->setObjectName(QStringLiteral("progress"));
    m_progress->setRange(0, 1000);
    m_progress->setValue(0);
    m_progress->setTextVisible(false);
    m_progress->setFixedWidth(220);
    m_statusLabel = new QLabel(tr("Ready"));
    m_statusLabel->setObjectName(QStringLiteral("statusText"));
    m_sqnrLabel = new QLabel;
    m_sqnrLabel->setObjectName(QStringLiteral("sqnrStatus"));
    m_sqnrLabel->setToolTip(tr("SQNR of the layer selected in the Histograms tab, at the latest epoch."));
    statusBar()->addWidget(m_progress);
    statusBar()->addWidget(m_statusLabel, 1);
    statusBar()->addPermanentWidget(m_sqnrLabel);
}

void MainWindow::buildMenus()
{
    QMenu* file = menuBar()->addMenu(tr("&File"));
    file->addAction(m_openAct);
    file->addAction(m_pickFilesAct);
    file->addSeparator();
    file->addAction(m_loadRunsAct);
    file->addAction(m_saveRunsAct);
    file->addAction(m_csvAct);
    file->addAction(m_pngAct);
    file->addSeparator();
    file->addAction(m_exportAct);
    file->addSeparator();
    file->addAction(m_quitAct);

    QMenu* run = menuBar()->addMenu(tr("&Run"));
    run->addAction(m_trainAct);
    run->addAction(m_pauseAct);
    run->addAction(m_stopAct);

    QMenu* view = menuBar()->addMenu(tr("&View"));
    view->addAction(m_datasetDock->toggleViewAction());
    view->addAction(m_trainingDock->toggleViewAction());
    view->addSeparator();
    for (int i = 0; i < m_tabs->count(); ++i) {
        QAction* a = view->addAction(m_tabs->tabText(i));
        a->setShortcut(QKeySequence(Qt::CTRL | (Qt::Key_1 + i)));
        connect(a, &QAction::triggered, this, [this, i] { m_tabs->setCurrentIndex(i); });
    }

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("&About QuantScope"), this, [this] {
        QMessageBox::about(this, tr("About QuantScope"),
                           tr("<b>QuantScope</b> %1<br>Explore low-precision training and quantization of small "
                              "neural nets: pick a strategy, train, and compare FP32 with quantized weights.")
                               .arg(QApplication::applicationVersion()));
    });
}

void MainWindow::connectController()
{
    auto* c = m_controller;
    connect(c, &TrainingController::busyChanged, this, &MainWindow::updateActions);
    connect(c, &TrainingController::datasetLoaded, this, [this](quint64 id, DatasetPtr data) {
        if (id != m_pendingLoad) return;
        m_data = std::move(data);
        m_datasetPanel->setDataset(m_data);
        statusBar()->showMessage(tr("Loaded %1: %2 training and %3 test images")
                                     .arg(QString::fromStdString(m_data->name), formatCount(double(m_data->train.size())),
                                          formatCount(double(m_data->test.size()))),
                                 5000);
        updateActions();
        emit datasetReady(true);
    });
    connect(c, &TrainingController::datasetFailed, this, [this](quint64 id, const QString& message) {
        if (id != m_pendingLoad) return;
        m_datasetPanel->setError(message);
        updateActions();
        emit datasetReady(false);
    });
    connect(c, &TrainingController::started, this, [this](int id, const StartEvent& e) {
        if (RunPtr r = m_runs->runById(id)) {
            r->hasStart = true;
            r->start = e;
            m_runs->runChanged(id);
        }
        m_statusLabel->setText(tr("Run #%1: %2 parameters, %3 steps per epoch")
                                   .arg(id)
                                   .arg(formatCount(double(e.parameters)), formatCount(double(e.stepsPerEpoch))));
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
}

void MainWindow::clearError()
{
    m_errorLabel->clear();
    m_errorBar->hide();
}

void MainWindow::loadRequest(DatasetRequest request, const QString& what)
{
    if (m_controller->isTraining()) return;
    request.options.trainLimit = m_datasetPanel->trainLimit();
    request.options.testLimit = m_datasetPanel->testLimit();
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
    m_trainAct->setEnabled(!training && !loading && !exporting && m_data);
    m_exportAct->setEnabled(!training && !loading && !exporting);
    m_pauseAct->setEnabled(training);
    m_pauseAct->setText(paused ? tr("&Resume") : tr("&Pause"));
    m_stopAct->setEnabled(training);
    m_openAct->setEnabled(!training);
    m_pickFilesAct->setEnabled(!training);
    m_loadRunsAct->setEnabled(!training);
    m_trainingPanel->trainButton()->setEnabled(m_trainAct->isEnabled());
    m_trainingPanel->trainButton()->setToolTip(m_data || loading ? tr("Starts a run with these options (Ctrl+R).")
                                                                 : tr("Load a dataset first (Ctrl+O)."));
    m_trainingPanel->pauseButton()->setEnabled(training);
    m_trainingPanel->pauseButton()->setText(paused ? tr("Resume") : tr("Pause"));
    m_trainingPanel->stopButton()->setEnabled(training);
    m_trainingPanel->setRunning(training);
    m_datasetPanel->setBusy(training || loading);
}

void MainWindow::startTraining()
{
    if (m_controller->isTraining() || m_controller->isLoading()) return;
    if (!m_data) {
        showError(tr("No dataset is loaded. Open a folder of IDX files with File > Open dataset folder (Ctrl+O)."));
        return;
    }
    TrainConfig cfg = m_trainingPanel->config();
    try {
        cfg.validate();
    } catch (const std::exception& e) {
        showError(tr("These options cannot be trained: %1").arg(QString::fromStdString(e.what())));
        return;
    }
    clearError();
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
    if (!m_controller->startTraining(run->id, cfg, m_data)) {
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

void MainWindow::onLayerStats(int id, const LayerStatsList& stats)
{
    RunPtr r = m_runs->runById(id);
    if (!r || stats.empty()) return;
    r->layerStats.push_back(stats);
    long long scaleCount = 0;
    for (const LayerStats& s : stats)
        if (s.tensor == "weight") scaleCount += static_cast<long long>(s.scales.size());
    if (r->hasStart && scaleCount > 0) r->modelBytes = modelBytes(r->config, r->start.parameters, scaleCount);
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
        text += tr(" in %1").arg(formatSeconds(e.seconds));
        if (e.imagesPerSecond > 0) text += tr(", %1").arg(formatRate(e.imagesPerSecond));
        m_statusLabel->setText(text);
        if (!e.stopped) m_progress->setValue(m_progress->maximum());
    }
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
    showError(tr("Run #%1 failed: %2").arg(id).arg(message));
    m_statusLabel->setText(tr("Run #%1 failed").arg(id));
    refreshCurves(true);
    updateActions();
    emit runEnded(id);
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

void MainWindow::onSelectionChanged()
{
    std::vector<RunPtr> shown = selectedRuns();
    if (shown.empty() && m_runs->rowCount() > 0) shown.push_back(m_runs->runAt(m_runs->rowCount() - 1));
    if (shown == m_shown && !m_shown.empty()) return;
    m_shown = shown;
    QList<int> ids;
    for (const RunPtr& r : m_shown) ids << r->id;
    m_runs->setShownRuns(ids);
    for (RunChart* c : std::initializer_list<RunChart*>{m_loss, m_accuracy, m_lossScale, m_sqnr}) c->setRuns(m_shown);
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
    if (all && m_quantDirty) refreshQuant();
    emit chartsRefreshed();
}

void MainWindow::refreshQuant()
{
    if (!m_quantDirty) return;
    m_quantDirty = false;
    RunPtr primary = m_shown.empty() ? nullptr : m_shown.front();
    m_histogram->setRun(primary);
    m_ranges->setRun(primary);
    m_sqnr->refresh();
    updateSqnrLabel();
}

void MainWindow::updateSqnrLabel()
{
    const LayerStats* s = m_histogram->bar()->current();
    m_sqnrLabel->setText(s ? tr("%1: SQNR %2").arg(statsName(*s), formatDb(s->sqnrDb)) : QString());
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
