// The Analysis tab's Sensitivity page (core/analysis/sensitivity.h): candidate weight formats,
// granularity, calibration and mode ("this layer alone" or "all but this layer"), Run/Stop with
// a progress bar, and the result as a layer x format heatmap: the colour is the validation
// accuracy drop against FP32, the text the drop and the logits' SQNR. Clicking a cell opens that
// layer's weight histogram at that format (FP32 against quantized, on the quantization grid).
#pragma once

#include "analysis_input.h"

#include "analysis/sensitivity.h"
#include "quant/layer_stats.h"

#include <QWidget>

#include <functional>

class QCheckBox;
class QComboBox;
class QDialog;
class QGridLayout;
class QLabel;
class QProgressBar;
class QPushButton;
class QTableWidget;

namespace quantscope {

class HistogramChart;

class SensitivityView : public QWidget {
    Q_OBJECT
public:
    using InputProvider = std::function<AnalysisInputPtr(QString* error)>;
    explicit SensitivityView(InputProvider input, QWidget* parent = nullptr);
    ~SensitivityView() override; // stops and joins an analysis in flight

    // The checked candidate formats, in the order shown.
    QStringList formats() const;
    void setFormats(const QStringList& formats);
    bool isRunning() const { return m_thread.running(); }
    // While `why` is not empty (a training run would share the cores), Run is disabled and its
    // tooltip says why; an analysis in flight goes on.
    void setBlocked(const QString& why);
    const SensitivityReport& report() const { return m_report; }
    QTableWidget* heatmap() const { return m_table; }
    QPushButton* runButton() const { return m_run; }
    QPushButton* stopButton() const { return m_stop; }
    QProgressBar* progressBar() const { return m_progress; }
    QComboBox* modeCombo() const { return m_mode; }
    QComboBox* activationsCombo() const { return m_activations; }
    QString statusText() const;
    // The histogram window of the last clicked cell (null before the first click).
    QDialog* histogramDialog() const { return m_histDialog; }
    HistogramChart* histogramChart() const { return m_histChart; }
    const LayerStats& histogramStats() const { return m_histStats; }

    // Colour of a cell for an accuracy drop of `drop` points, on a scale whose red end is `worst`.
    static QColor dropColor(double drop, double worst);

    // Lays the status line and the note on the cells' text out for a page `width` pixels wide
    // (beside the controls, or under them in a narrow tab). On a resize; AnalysisView calls it
    // for the hidden page too, whose minimum width counts in the tab's.
    void fitWidth(int width);

public slots:
    void run();
    void stop();
    // Opens the histogram of heatmap cell (row = layer, column = format); false with a status message if it cannot.
    bool openHistogram(int row, int column);

signals:
    void analysisFinished(bool ok, const QString& message);
    void busyChanged(bool busy); // an analysis started or ended

protected:
    void resizeEvent(QResizeEvent* e) override;

private:
    void placeCellText(int width); // the note on the cells' text beside the colour scale, or under it
    void showProgress(std::size_t done, std::size_t total);
    void showReport(const SensitivityReport& r, const SensitivityOptions& opt, const QString& error);
    void setBusy(bool busy);

    InputProvider m_input;
    QList<QCheckBox*> m_formatBoxes;
    QComboBox* m_granularity;
    QComboBox* m_calibration;
    QComboBox* m_activations; // SensitivityOptions::activationFormat: uint8 or fp32
    QComboBox* m_mode;
    QPushButton* m_run;
    QString m_runTip, m_blocked; // Run's own tooltip; why it may not start now (empty: it may)
    QPushButton* m_stop;
    QProgressBar* m_progress;
    QLabel* m_status;
    QGridLayout* m_runRow; // Run, Stop, the bar and the status (placeRunStatus)
    QGridLayout* m_legendRow; // the colour scale and the note on the cells' text
    QLabel* m_cellText;
    QTableWidget* m_table;
    QLabel* m_legend;
    QLabel* m_scaleEnd;
    QDialog* m_histDialog = nullptr;
    QLabel* m_histCaption = nullptr;
    HistogramChart* m_histChart = nullptr;
    LayerStats m_histStats;

    AnalysisThread m_thread;
    AnalysisInputPtr m_running;   // the input of the analysis in flight
    AnalysisInputPtr m_reported;  // the input of the report shown
    SensitivityOptions m_reportOptions;
    SensitivityReport m_report;
    std::unique_ptr<Model> m_histModel; // built once per report, for the histograms
};

} // namespace quantscope
