// MainWindow: dataset and training panels in docks, chart tabs over the runs table in a
// splitter, menus with shortcuts, a status bar with progress. It owns the TrainingController
// (worker thread), turns the worker's signals into RunRecords and asks the charts to redraw
// at most every 50 ms. Layout and last options persist through QSettings.
#pragma once

#include "run_record.h"
#include "training_worker.h"

#include <QElapsedTimer>
#include <QMainWindow>
#include <QTimer>

#include <memory>

class QAction;
class QDockWidget;
class QLabel;
class QProgressBar;
class QSplitter;
class QTabWidget;
class QTemporaryDir;
class QTableView;
class QToolButton;

namespace quantscope {

struct AnalysisInput;
struct ModelSummary;
struct PrecisionPlan;
class AnalysisView;
class ModelSummaryDialog;
class LayerCompareView;
class AccuracyChart;
class ChartView;
class DatasetPanel;
class EvaluateDialog;
class HistogramPanel;
class LossChart;
class LossScaleChart;
class StepSizeChart;
class RangesPanel;
class RunChart;
class RunsModel;
class SqnrChart;
class TrainingPanel;

struct MainWindowOptions {
    bool useSettings = true;     // restore and save layout/options with QSettings
    QString dataDir;             // a dataset folder or .csv; empty: the last one from the settings, else the default
    bool autoLoad = true;        // load a dataset at start
    long trainLimit = -1;        // >= 0 overrides the panel's value (0 = all)
    long testLimit = -1;
    int throttleMs = 50;         // the worker's batch-signal interval
    bool quietExport = false;    // report exports by signal only (tests), no message box
    QString resize = {};         // "HxW" for the dataset panel's Resize field (empty: as stored)
};

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(const MainWindowOptions& options = {}, QWidget* parent = nullptr);
    ~MainWindow() override;

    DatasetPanel* datasetPanel() const { return m_datasetPanel; }
    TrainingPanel* trainingPanel() const { return m_trainingPanel; }
    LossChart* lossChart() const { return m_loss; }
    AccuracyChart* accuracyChart() const { return m_accuracy; }
    HistogramPanel* histogramPanel() const { return m_histogram; }
    RangesPanel* rangesPanel() const { return m_ranges; }
    SqnrChart* sqnrChart() const { return m_sqnr; }
    LossScaleChart* lossScaleChart() const { return m_lossScale; }
    StepSizeChart* stepSizeChart() const { return m_stepSizes; }
    RunsModel* runsModel() const { return m_runs; }
    QTableView* runsView() const { return m_runsView; }
    QTabWidget* tabs() const { return m_tabs; }
    QDockWidget* datasetDock() const { return m_datasetDock; }
    QDockWidget* trainingDock() const { return m_trainingDock; }
    TrainingController* controller() const { return m_controller; }
    const DatasetPtr& dataset() const { return m_data; }
    QString errorText() const;
    QString statusText() const;
    bool isTraining() const;

    // The selected runs, the primary one (the row clicked last: histograms, ranges, the SQNR
    // label, the Analysis and Layers tabs) first, the others in table order.
    std::vector<RunPtr> selectedRuns() const;

public slots:
    void openDatasetFolder(const QString& dir);
    void openDatasetFiles(const quantscope::DatasetFiles& files);
    void startTraining();
    void togglePause();
    void stopTraining();
    void selectRuns(const QList<int>& ids);
    void showError(const QString& message);
    void clearError();
    // A user action succeeded: the status bar says `status`, and the error banner an earlier
    // action left goes (it read "Could not load runs" over a table that had just loaded them).
    void reportDone(const QString& status);

    // File menu (main_window_files.cpp).
    void saveRuns();
    void loadRuns();
    bool loadRunsFrom(const QString& path);
    void exportMetricsCsv();
    // What Export metrics as CSV writes to `path`: the selected runs, else every run, in the runs
    // table's order; false (with a message) if there is none or the file cannot be written.
    bool exportMetricsCsvTo(const QString& path);
    void saveCurrentChartPng();
    void exportQuantizedModel();
    // Writes run `id`'s model to `path` in the background; false (with a message) if it cannot.
    bool exportRunTo(int id, const QString& path);
    // File > Open model file (Ctrl+Shift+O) and the model picker's entry: an FP32 .onnx (PyTorch's
    // or QuantScope's) or .qsm whose architecture and weights start the next run. loadModelFile
    // checks the file and adds it to the Training dock's picker; false (with a message) if it cannot.
    void openModelFile();
    bool loadModelFile(const QString& path);

    // Model summary (main_window_summary.cpp): of the preset picked in the Training dock for the
    // loaded dataset's image size, of a .qsm/.onnx file, or of any summary (e.g. a loaded model).
    void showModelSummary();
    // Gives the Training dock's plan table the chosen model for the loaded dataset's images
    // (rebuilt only when the model or the image shape changes).
    void refreshPlanModel();
    void openModelSummaryFile();
    // File > Evaluate model file (Ctrl+E, main_window_files.cpp): the dialog that runs an exported
    // model (.qsm/.onnx, integer or FP32) on the loaded dataset's test set, as quantscope-cli eval;
    // with a path, that file is put in it (not yet evaluated).
    void showEvaluateDialog(const QString& path = {});
    EvaluateDialog* evaluateDialog() const { return m_evaluateDialog; }
    bool showModelSummaryOfFile(const QString& path);
    void showSummary(const quantscope::ModelSummary& s);
    ModelSummaryDialog* modelSummaryDialog() const { return m_summaryDialog; }
    LayerCompareView* layerCompareView() const { return m_compare; }
    AnalysisView* analysisView() const { return m_analysis; }

    // Analysis tab (main_window_analysis.cpp): "Fine-tune with this plan" puts `plan` into the
    // Training dock (strategy QAT, the plan table filled) with the analysed model as the start
    // (a run's FP32 model is written to a session .qsm first) and starts the run; false (with a
    // message) if it cannot.
    bool fineTuneWithPlan(std::shared_ptr<const quantscope::AnalysisInput> input, const quantscope::PrecisionPlan& plan);

signals:
    void datasetReady(bool ok);
    void runStarted(int id);
    void runEnded(int id); // finished, stopped or failed
    void firstLossPoint(qint64 msSinceTrain);
    void chartsRefreshed();
    void exportFinished(int id, bool ok, const QString& report);

protected:
    void closeEvent(QCloseEvent* event) override;

    static QIcon appIcon();

private:
    QString m_planModelKey;
    void buildActions();
    void buildLayout();
    void buildMenus();
    void connectController();
    void loadRequest(DatasetRequest request, const QString& what);
    void fitDatasetDock();
    // First start: the preferred size, shrunk to the screen's available geometry. After
    // restoring saved geometry: clamped to the screen the window is on now (a laptop after a
    // monitor, or a smaller resolution).
    void fitToScreen(bool restored);
    void updateActions();
    void updateCsvAction(); // Export metrics as CSV says whose metrics it writes
    std::vector<RunPtr> inTableOrder(std::vector<RunPtr> runs) const;
    void onSelectionChanged();
    void refreshCurves(bool all);
    void refreshQuant();
    void onBatches(int id, const BatchList& events);
    void onEpoch(int id, const EpochEvent& e);
    void onLayerStats(int id, const LayerStatsList& stats);
    void onStepSizes(int id, const StepSizeEvent& e);
    void onFinished(int id, const FinishEvent& e);
    void onFailed(int id, const QString& message);
    void endProgress(); // a run ended: the status bar's progress bar empties and hides
    void updateSqnrLabel();
    void onExportReady(int id, const ExportBundlePtr& bundle);
    void onExported(int id, const ExportSummary& s);
    void restoreSettings();
    void saveSettings();

    static constexpr int kKeptModels = 8; // finished runs whose trained model stays exportable
    MainWindowOptions m_options;
    TrainingController* m_controller;
    DatasetPtr m_data;
    DatasetRequest m_source; // what was asked last (for reloading with new limits)
    DatasetOptions m_dataOptions; // what m_data was read with (m_source may be a later request, failed or pending)
    quint64 m_pendingLoad = 0;
    quint64 m_startLoad = 0; // the load the window starts with: it keeps a settings error in view
    RunPtr m_live;
    QElapsedTimer m_sinceTrain;
    QElapsedTimer m_timeCell; // since the live run's Time cell last changed (twice a second at most)
    bool m_firstPointSent = false;
    QTimer m_redraw;
    bool m_quantDirty = false;
    bool m_restoredLayout = false;
    bool m_dockFittedToData = false; // fitDatasetDock ran after the first dataset was shown
    std::vector<RunPtr> m_shown;

    DatasetPanel* m_datasetPanel;
    TrainingPanel* m_trainingPanel;
    QDockWidget* m_datasetDock;
    QDockWidget* m_trainingDock;
    QSplitter* m_mainSplitter;
    QSplitter* m_curvesSplitter;
    QTabWidget* m_tabs;
    LossChart* m_loss;
    AccuracyChart* m_accuracy;
    HistogramPanel* m_histogram;
    RangesPanel* m_ranges;
    SqnrChart* m_sqnr;
    LayerCompareView* m_compare;
    AnalysisView* m_analysis;
    std::shared_ptr<QTemporaryDir> m_fineTuneDir; // the FP32 models of runs being fine-tuned
    void connectAnalysis();
    // Gives the Analysis tab the primary selected run that kept its model (else the newest that
    // did), and the Layers tab the primary selected run, with or without one.
    void updateCompareRun();
    // Why `run` has no model to export or compare (a clause, no final stop): still training,
    // stopped or failed, loaded from a file, or released to save memory.
    QString noModelReason(const RunRecord& run) const;
    LossScaleChart* m_lossScale;
    StepSizeChart* m_stepSizes;
    RunsModel* m_runs;
    QTableView* m_runsView;
    QWidget* m_errorBar;
    QLabel* m_errorLabel;
    QProgressBar* m_progress;
    QLabel* m_statusLabel;
    QLabel* m_sqnrLabel;

    QAction* m_openAct;
    QAction* m_pickFilesAct;
    QAction* m_loadRunsAct;
    QAction* m_saveRunsAct;
    QAction* m_csvAct;
    QAction* m_pngAct;
    QAction* m_exportAct;
    QAction* m_quitAct;
    QAction* m_trainAct;
    QAction* m_pauseAct;
    QAction* m_stopAct;
    QAction* m_summaryAct;
    QAction* m_summaryFileAct;
    QAction* m_openModelAct;
    QAction* m_evaluateAct;
    ModelSummaryDialog* m_summaryDialog = nullptr;
    EvaluateDialog* m_evaluateDialog = nullptr;
};

} // namespace quantscope
