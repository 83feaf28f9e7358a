// MainWindow's construction: actions with their shortcuts, the docks, chart tabs, runs table
// and status bar, the menus, and the window icon.
#include "main_window.h"

#include "analysis_view.h"
#include "curve_charts.h"
#include "step_size_chart.h"
#include "dataset_panel.h"
#include "layer_compare_view.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"

#include "infer/isa.h"

#include <QAction>
#include <QApplication>
#include <QDockWidget>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QPainter>
#include <QPainterPath>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QScreen>
#include <QTableView>
#include <QToolBar>
#include <QToolButton>
#include <QVBoxLayout>

namespace quantscope {

namespace {

// The status bar's message: a message wider than the bar ends in "..." at a word's end, and its
// tooltip holds it whole (it stopped mid-word: "...; BatchNormalizatio"; tester 12 #11). text()
// stays the whole message.
class StatusText : public QLabel {
public:
    using QLabel::QLabel;
    QSize minimumSizeHint() const override { return {0, QLabel::minimumSizeHint().height()}; }

protected:
    void paintEvent(QPaintEvent*) override
    {
        QPainter p(this);
        const QRect r = contentsRect();
        const QString whole = text();
        QString shown = fontMetrics().elidedText(whole, Qt::ElideRight, r.width());
        if (shown != whole) {
            // back to the last whole word before the ellipsis
            const qsizetype cut = shown.lastIndexOf(QLatin1Char(' '), shown.size() - 2);
            if (cut > 0) shown = shown.left(cut) + QStringLiteral(" \u2026");
        }
        setToolTip(shown != whole ? whole : QString());
        p.setPen(palette().color(QPalette::WindowText));
        p.drawText(r, Qt::AlignLeft | Qt::AlignVCenter | Qt::TextSingleLine, shown);
    }
};

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

QIcon MainWindow::appIcon() { return makeIcon(); }

void MainWindow::buildActions()
{
    m_openAct = new QAction(tr("&Open dataset folder\u2026"), this);
    m_openAct->setShortcut(QKeySequence::Open);
    m_openAct->setToolTip(tr("Loads an MNIST-layout folder of IDX files."));
    m_pickFilesAct = new QAction(tr("&Pick dataset files\u2026"), this);
    m_openModelAct = new QAction(tr("Open &model file (ONNX, .qsm)\u2026"), this);
    m_openModelAct->setObjectName(QStringLiteral("openModelAction"));
    m_openModelAct->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_O));
    m_openModelAct->setToolTip(tr("Starts the next run from an FP32 ONNX model (e.g. from torch.onnx.export) or a .qsm file."));
    connect(m_openModelAct, &QAction::triggered, this, &MainWindow::openModelFile);
    m_loadRunsAct = new QAction(tr("&Load runs\u2026"), this);
    m_saveRunsAct = new QAction(tr("&Save runs\u2026"), this);
    m_saveRunsAct->setShortcut(QKeySequence::Save);
    m_csvAct = new QAction(this); // its text and tooltip say whose metrics: updateCsvAction
    m_csvAct->setObjectName(QStringLiteral("exportCsvAction"));
    m_loadRunsAct->setToolTip(tr("Adds the runs of a JSON file written by Save runs to the runs table."));
    m_saveRunsAct->setToolTip(tr("Writes every run of the session, with its curves, to a JSON file (Load runs reads it back)."));
    m_pngAct = new QAction(tr("Save current &chart as PNG\u2026"), this);
    m_pngAct->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_S));
    m_exportAct = new QAction(tr("&Export quantized model\u2026"), this);
    m_exportAct->setObjectName(QStringLiteral("exportModelAction"));
    m_evaluateAct = new QAction(tr("E&valuate model file\u2026"), this);
    m_evaluateAct->setObjectName(QStringLiteral("evaluateModelAction"));
    m_evaluateAct->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
    m_evaluateAct->setToolTip(tr("Runs an exported model (.qsm or .onnx, integer or FP32) on the loaded test set: accuracy on the "
                                 "integer engine, agreement with fake-quant, images/s (quantscope-cli eval)."));
    connect(m_evaluateAct, &QAction::triggered, this, [this] { showEvaluateDialog(); });
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

    m_summaryAct = new QAction(tr("Model &summary\u2026"), this);
    m_summaryAct->setObjectName(QStringLiteral("modelSummaryAction"));
    m_summaryAct->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_I));
    m_summaryFileAct = new QAction(tr("Summary of a model &file\u2026"), this);
    connect(m_summaryAct, &QAction::triggered, this, &MainWindow::showModelSummary);
    connect(m_summaryFileAct, &QAction::triggered, this, &MainWindow::openModelSummaryFile);
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

    connect(m_trainingPanel, &TrainingPanel::openModelFileRequested, this, &MainWindow::openModelFile);
    connect(m_trainingPanel, &TrainingPanel::configChanged, this, &MainWindow::refreshPlanModel);
    connect(m_datasetPanel, &DatasetPanel::folderChosen, this, &MainWindow::openDatasetFolder);
    connect(m_datasetPanel, &DatasetPanel::filesChosen, this, &MainWindow::openDatasetFiles);
    connect(m_datasetPanel, &DatasetPanel::limitsChanged, this, [this] {
        if (m_source.explicitFiles || !m_source.options.dir.empty()) loadRequest(m_source, tr("the dataset"));
    });
    connect(m_trainingPanel->trainButton(), &QPushButton::clicked, m_trainAct, &QAction::trigger);
    connect(m_trainingPanel->pauseButton(), &QPushButton::clicked, m_pauseAct, &QAction::trigger);
    connect(m_trainingPanel->stopButton(), &QPushButton::clicked, m_stopAct, &QAction::trigger);
    connect(m_trainingPanel->summaryButton(), &QPushButton::clicked, m_summaryAct, &QAction::trigger);

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
    m_compare = new LayerCompareView;
    m_sqnr->setObjectName(QStringLiteral("sqnrChart"));
    m_lossScale = new LossScaleChart;
    m_lossScale->setObjectName(QStringLiteral("lossScaleChart"));
    m_stepSizes = new StepSizeChart;
    m_stepSizes->setObjectName(QStringLiteral("stepSizeChart"));
    m_tabs = new QTabWidget;
    m_tabs->setObjectName(QStringLiteral("chartTabs"));
    m_tabs->addTab(m_curvesSplitter, tr("Curves"));
    m_tabs->addTab(m_histogram, tr("Histograms"));
    m_tabs->addTab(m_ranges, tr("Ranges"));
    m_tabs->addTab(m_sqnr, tr("Error (SQNR)"));
    m_tabs->addTab(m_lossScale, tr("Loss scale"));
    m_tabs->addTab(m_stepSizes, tr("Step sizes"));
    m_tabs->addTab(m_compare, tr("Layers"));
    m_analysis = new AnalysisView;
    m_analysis->setObjectName(QStringLiteral("analysisView"));
    // In a scroll area: from 1366x768 up the tab fits (tst_gui_screen analysisTabFits), on smaller
    // screens it scrolls down rather than grow the window's minimum size past the screen; its rows
    // wrap to fit a 1024-pixel window's width (analysisFits1024: it scrolled across there too).
    auto* analysisScroll = new QScrollArea;
    analysisScroll->setObjectName(QStringLiteral("analysisScroll"));
    analysisScroll->setWidgetResizable(true);
    analysisScroll->setFrameShape(QFrame::NoFrame);
    analysisScroll->setWidget(m_analysis);
    m_tabs->addTab(analysisScroll, tr("Analysis"));
    m_tabs->setTabToolTip(m_tabs->indexOf(analysisScroll), tr("Per-layer sensitivity and mixed-bit search of a trained model: which "
                                                          "layers can take fewer bits, and the size/accuracy Pareto front."));
    m_tabs->setTabToolTip(0, tr("Loss per step and per epoch; accuracy per epoch, FP32 and quantized."));
    m_tabs->setTabToolTip(1, tr("FP32 vs quantized weight histograms of one layer, with the grid's ends."));
    m_tabs->setTabToolTip(2, tr("Per-output-channel weight ranges of one layer against the whole tensor's range."));
    m_tabs->setTabToolTip(3, tr("Signal-to-quantization-noise ratio of every quantized layer."));
    m_tabs->setTabToolTip(m_tabs->indexOf(m_compare), tr("Layer-by-layer comparison of a run's model quantized after training against FP32: "
                                "where the error comes from (quantscope-cli analyze compare)."));
    m_tabs->setTabToolTip(m_tabs->indexOf(m_stepSizes), tr("LSQ runs: the learned step size of every quantizer over the training steps."));
    m_tabs->setTabToolTip(4, tr("Mixed, low precision (fp16, fp8) and progressive runs: the dynamic loss scale over steps, and skipped steps."));
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
    m_runsView->setTextElideMode(Qt::ElideMiddle);
    m_runsView->setToolTip(tr("Every run of this session. Select several (Ctrl+click) to overlay their curves."));
    // Each column as wide as its header and cells (fixed widths cut "mobilenet-tiny" and a per-layer
    // plan's format, and left Epochs and Time half empty), at most 240 pixels; Status, last, takes
    // the rest. Refitted when runs arrive or change.
    const auto fitColumns = [this] {
        QHeaderView* header = m_runsView->horizontalHeader();
        for (int c = 0; c + 1 < RunsModel::ColumnCount; ++c)
            header->resizeSection(c, std::min(240, std::max(static_cast<QAbstractItemView*>(m_runsView)->sizeHintForColumn(c), header->sectionSizeHint(c))));
    };
    fitColumns();
    connect(m_runs, &QAbstractItemModel::rowsInserted, this, fitColumns);
    connect(m_runs, &QAbstractItemModel::modelReset, this, fitColumns);
    connect(m_runs, &QAbstractItemModel::dataChanged, this, fitColumns);
    // Four runs stay in view however short the window (at 1366x768 the splitter left two).
    m_runsView->setMinimumHeight(m_runsView->horizontalHeader()->sizeHint().height() + 4 * m_runsView->verticalHeader()->defaultSectionSize() + 4);
    connect(m_runsView->selectionModel(), &QItemSelectionModel::selectionChanged, this, &MainWindow::onSelectionChanged);
    connect(m_runsView->selectionModel(), &QItemSelectionModel::currentRowChanged, this, &MainWindow::onSelectionChanged);

    auto* runsBox = new QWidget;
    auto* rv = new QVBoxLayout(runsBox);
    rv->setContentsMargins(0, 4, 0, 0);
    auto* runsHeader = new QHBoxLayout;
    auto* runsTitle = new QLabel(tr("<b>Runs</b> \u2014 select several (Ctrl+click) to overlay their curves"));
    runsTitle->setWordWrap(true); // two lines in a narrow window, not cut ("(Ctrl+clicl") nor widening it past the screen
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
    m_progress->hide(); // shown while a run goes (startTraining to endProgress)
    m_statusLabel = new StatusText(tr("Ready"));
    m_statusLabel->setObjectName(QStringLiteral("statusText"));
    m_sqnrLabel = new QLabel;
    m_sqnrLabel->setObjectName(QStringLiteral("sqnrStatus"));
    m_sqnrLabel->setToolTip(tr("SQNR of the layer selected in the Histograms tab, at the latest epoch."));
    statusBar()->addWidget(m_progress);
    statusBar()->addWidget(m_statusLabel, 1);
    statusBar()->addPermanentWidget(m_sqnrLabel);
}

void MainWindow::fitToScreen(bool restored)
{
    const QScreen* sc = screen() ? screen() : QGuiApplication::primaryScreen();
    if (!sc) return;
    const QRect avail = sc->availableGeometry();
    // Room for the window manager's frame (title bar, borders), which the geometry excludes.
    const QSize frame = isVisible() ? frameGeometry().size() - geometry().size() : QSize(16, 40);
    const QSize room(std::max(200, avail.width() - frame.width()), std::max(200, avail.height() - frame.height()));
    if (!restored) {
        resize(std::min(1500, room.width()), std::min(940, room.height()));
        move(avail.topLeft() + QPoint(std::max(0, (room.width() - width()) / 2), std::max(0, (room.height() - height()) / 2)));
        return;
    }
    if (isMaximized() || isFullScreen()) return;
    QRect g = geometry();
    g.setSize(g.size().boundedTo(room));
    g.moveLeft(std::clamp(g.x(), avail.left(), avail.left() + room.width() - g.width()));
    g.moveTop(std::clamp(g.y(), avail.top(), avail.top() + room.height() - g.height()));
    setGeometry(g);
}

void MainWindow::buildMenus()
{
    // Train, Pause and Stop also on a toolbar, reachable whatever the docks' scroll position.
    QToolBar* runBar = addToolBar(tr("Run"));
    runBar->setObjectName(QStringLiteral("runToolBar"));
    runBar->setMovable(false);
    runBar->setToolButtonStyle(Qt::ToolButtonTextOnly);
    runBar->addAction(m_trainAct);
    runBar->addAction(m_pauseAct);
    runBar->addAction(m_stopAct);

    QMenu* file = menuBar()->addMenu(tr("&File"));
    file->setToolTipsVisible(true); // the entries' tooltips say what each reads or writes
    file->addAction(m_openAct);
    file->addAction(m_pickFilesAct);
    file->addAction(m_openModelAct);
    file->addSeparator();
    file->addAction(m_loadRunsAct);
    file->addAction(m_saveRunsAct);
    file->addAction(m_csvAct);
    file->addAction(m_pngAct);
    file->addSeparator();
    file->addAction(m_exportAct);
    file->addAction(m_evaluateAct);
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
    view->addAction(m_summaryAct);
    view->addAction(m_summaryFileAct);
    view->addSeparator();
    for (int i = 0; i < m_tabs->count(); ++i) {
        QAction* a = view->addAction(m_tabs->tabText(i));
        a->setShortcut(QKeySequence(Qt::CTRL | (Qt::Key_1 + i)));
        connect(a, &QAction::triggered, this, [this, i] { m_tabs->setCurrentIndex(i); });
    }

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("&About QuantScope"), this, [this] {
        // what a bug report or a benchmark figure needs beside the version (an override the CPU
        // cannot run is named instead)
        const QString kernels = tr("Kernels on this CPU: %1.").arg(QString::fromStdString(kernelSummary()).toHtmlEscaped());
        QMessageBox::about(this, tr("About QuantScope"),
                           tr("<b>QuantScope</b> %1<br>Explore low-precision training and quantization of small "
                              "neural nets: pick a strategy, train, and compare FP32 with quantized weights.<br><br>%2")
                               .arg(QApplication::applicationVersion(), kernels));
    });
}

} // namespace quantscope
