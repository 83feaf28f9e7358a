// The Layers tab: where a quantized model's error comes from, layer by layer
// (core/analysis/layer_compare.h). For the selected finished run it quantizes the run's FP32 model
// (PTQ with the chosen weight format and granularity, uint8 activations, min-max calibration on
// 1,000 training images) and draws the SQNR of every layer's output against FP32 along the
// depth of the network: propagated (end to end) and with the layer alone quantized, with the
// threshold and the first layer below it. The work runs on a background thread.
#pragma once

#include "training_worker.h"

#include "analysis/layer_compare.h"

#include <QBrush>
#include <QWidget>

#include <thread>

class QCategoryAxis;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineSeries;
class QScatterSeries;
class QPushButton;
class QValueAxis;

namespace quantscope {

class ChartView;

class LayerCompareView : public QWidget {
    Q_OBJECT
public:
    explicit LayerCompareView(QWidget* parent = nullptr);
    ~LayerCompareView() override; // waits for a comparison in flight

    // The run to analyse (its FP32 model and dataset); 0: none. A run without a model greys
    // Compare out, and `noModel` (a clause: why it has none) says why under the tabs' boxes.
    void setRun(int runId, ExportBundlePtr bundle, const QString& noModel = {});
    int runId() const { return m_runId; } // 0: none
    // Draws a finished comparison of run `runId` (0: of no run in the table). While another run is
    // selected (setRun) the chart keeps it, titled and noted as that run's and out of date.
    void showReport(const LayerComparisonReport& report, const QString& title, int runId = 0);
    int reportRunId() const { return m_reportRun; } // 0: none
    const LayerComparisonReport& report() const { return m_report; }
    QPushButton* compareButton() const { return m_compare; }
    ChartView* chart() const { return m_chart; }
    // Series the chart draws: the propagated SQNR of every layer (dB, capped at 100 where exact),
    // and the alone SQNR of the layers that quantize something themselves (weights or output).
    QLineSeries* propagatedSeries() const { return m_propagated; }
    QScatterSeries* aloneSeries() const { return m_alone; }
    QString statusText() const;
    QString chartTitle() const;
    QComboBox* formatBox() const { return m_format; }
    QComboBox* granularityBox() const { return m_granularity; }
    QCategoryAxis* layerAxis() const { return m_x; }
    QValueAxis* sqnrAxis() const { return m_y; }

public slots:
    void compare();

protected:
    void resizeEvent(QResizeEvent* event) override;

signals:
    // After compare(): ok, and a one-line message (the first flagged layer, or the error).
    void compareFinished(bool ok, const QString& message);

private:
    void labelLayers(); // the x axis's names for m_report's layers, as many as fit
    void followFormat(); // the granularity box after the weights box: the run's own, or the uniform one
    void markReport();   // the chart's title and the note: the selected run's comparison, or out of date
    QString noModelText() const; // "Run #N has no model to compare: why." for a selected run without one

    ChartView* m_chart;
    QLineSeries* m_propagated;
    QScatterSeries* m_alone;
    QLineSeries* m_threshold;
    QCategoryAxis* m_x; // the layers' names, on their points

    QValueAxis* m_y;
    QComboBox* m_format;
    QComboBox* m_granularity;
    QDoubleSpinBox* m_thresholdDb;
    QPushButton* m_compare;
    QLabel* m_status;
    int m_runId = 0;
    ExportBundlePtr m_bundle;
    QString m_noModel; // why run m_runId has no model to compare (empty: it has one, or no run)
    bool m_busy = false;
    std::thread m_worker; // the comparison in flight, if any
    LayerComparisonReport m_report;
    int m_reportRun = 0;       // whose comparison m_report is
    QString m_reportTitle;     // its title and note as showReport wrote them
    QString m_reportStatus;
    QBrush m_titleBrush; // the chart's own, for a current report (an out-of-date one's is orange)
    QString m_uniformGranularity = QStringLiteral("channel"); // the box's choice for uniform formats
};

} // namespace quantscope
