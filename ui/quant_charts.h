// What quantization does to the weights, from the LayerStats the trainer reports after each
// epoch: FP32-vs-quantized histograms with the clip range (HistogramPanel), per-channel ranges
// against the per-tensor range (RangesPanel), and SQNR per layer for the selected runs (SqnrChart).
#pragma once

#include "chart_view.h"

#include <QHash>
#include <QList>
#include <QWidget>

class QAreaSeries;
class QBarCategoryAxis;
class QBarSeries;
class QBarSet;
class QCheckBox;
class QComboBox;
class QLabel;
class QLineSeries;
class QLogValueAxis;
class QSlider;
class QValueAxis;

namespace quantscope {

// Layer selector + epoch slider over one run's layer statistics.
class LayerEpochBar : public QWidget {
    Q_OBJECT
public:
    explicit LayerEpochBar(QWidget* parent = nullptr);
    // Keeps the selected layer when it still exists, and follows the newest epoch if it was on it.
    void setRun(RunPtr run);
    const RunPtr& run() const { return m_run; }
    const LayerStats* current() const;
    QString layer() const;
    void setLayer(const QString& layer);
    int epochIndex() const;
    void setEpochIndex(int index);
    QComboBox* layerCombo() const { return m_layer; }
    QSlider* epochSlider() const { return m_epoch; }

signals:
    void changed();
    void layerChanged(const QString& layer);

private:
    RunPtr m_run;
    QComboBox* m_layer;
    QSlider* m_epoch;
    QLabel* m_epochLabel;
    bool m_initializing = false;
};

class HistogramChart : public ChartView {
    Q_OBJECT
public:
    explicit HistogramChart(QWidget* parent = nullptr);
    // runName: whose weights these are ("Run #1"), put before the layer in the title; empty: none.
    void setStats(const LayerStats* stats, bool logScale, const QString& runName = {});
    int binCount() const { return m_bins; }
    const QValueAxis* xAxis() const { return m_x; } // weight value

private:
    void useLogAxis(bool log);
    QValueAxis* m_x;
    QValueAxis* m_yLin;
    QLogValueAxis* m_yLog;
    bool m_log = false;
    QLineSeries* m_fp32Upper;
    QLineSeries* m_fp32Lower;
    QAreaSeries* m_fp32;
    QLineSeries* m_quantUpper;
    QLineSeries* m_quantLower;
    QAreaSeries* m_quant;
    QLineSeries* m_clipLow;
    QLineSeries* m_clipHigh;
    int m_bins = 0;
};

class RangesChart : public ChartView {
    Q_OBJECT
public:
    explicit RangesChart(QWidget* parent = nullptr);
    void setStats(const LayerStats* stats, const QString& runName = {}); // runName as HistogramChart's
    int channelCount() const { return m_channels; }

private:
    QValueAxis* m_x;
    QValueAxis* m_y;
    QLineSeries* m_bandUpper;
    QLineSeries* m_bandLower;
    QAreaSeries* m_band;
    QLineSeries* m_chanUpper;
    QLineSeries* m_chanLower;
    QAreaSeries* m_chan;
    QLineSeries* m_beforeUpper; // PTQ with cross-layer equalization: the ranges before it (outline)
    QLineSeries* m_beforeLower;
    int m_channels = 0;
};

class HistogramPanel : public QWidget {
    Q_OBJECT
public:
    explicit HistogramPanel(QWidget* parent = nullptr);
    // The primary run of `selected` runs: the panel draws it alone and names it.
    void setRun(RunPtr run, int selected = 1);
    LayerEpochBar* bar() const { return m_bar; }
    HistogramChart* chart() const { return m_chart; }
    QCheckBox* logToggle() const { return m_log; }
    QString caption() const;

private:
    void refresh();
    LayerEpochBar* m_bar;
    QCheckBox* m_log;
    QLabel* m_caption;
    HistogramChart* m_chart;
    int m_selected = 1;
};

class RangesPanel : public QWidget {
    Q_OBJECT
public:
    explicit RangesPanel(QWidget* parent = nullptr);
    void setRun(RunPtr run, int selected = 1); // as HistogramPanel's
    LayerEpochBar* bar() const { return m_bar; }
    RangesChart* chart() const { return m_chart; }

private:
    void refresh();
    LayerEpochBar* m_bar;
    QLabel* m_caption;
    RangesChart* m_chart;
    int m_selected = 1;
};

class SqnrChart : public RunChart {
    Q_OBJECT
public:
    explicit SqnrChart(QWidget* parent = nullptr);
    void refresh() override;
    int barCount() const;
    QBarCategoryAxis* layerAxis() const { return m_x; }

protected:
    void rebuild() override {}
    void resizeEvent(QResizeEvent* event) override;

private:
    // Upright layer names when one does not fit its bars' width (flat, Qt cut "layer2.shortcut"
    // to "layer2.shor..."), flat again when all do.
    void fitLayerLabels();
    QBarSeries* m_series;
    // Each bar's SQNR before rounding to the whole dB its bar and label show, for the tooltip.
    QHash<const QBarSet*, QList<double>> m_exactDb;
    QBarCategoryAxis* m_x;
    QValueAxis* m_y;
};

// "conv2 · int8 · channel-wise · scale 0.0041 (64 scales) · 0.3 % clipped · SQNR 38.2 dB"
QString statsCaption(const LayerStats& s);
// Name shown for a stats entry: "conv2", or "conv2.bias" for a tensor other than the weight.
QString statsName(const LayerStats& s);
// "Run #1 · conv2": which run's statistics a title or the status bar shows (the name alone without a run).
QString runStatsName(const RunPtr& run, const LayerStats& s);
// Before a panel's caption when several runs are selected: which one the panel shows, and why.
QString primaryRunNote(const RunPtr& run, int selected);

} // namespace quantscope
