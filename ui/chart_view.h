// ChartView: the base of every chart in the window. It owns its QChart (built once by the
// subclass, with titled axes and the legend below the plot so it never covers data), shows a
// plain-words message when there is nothing to draw, and saves itself as PNG from its context
// menu. Nothing outside a chart widget touches its series.
#pragma once

#include "run_record.h"

#include <QChartView>
#include <QColor>
#include <QList>
#include <QPointF>
#include <QPointer>

#include <vector>

class QAbstractAxis;
class QAbstractSeries;
class QChart;
class QPen;
class QValueAxis;
class QLineSeries;
class QXYSeries;

namespace quantscope {

// The runs a chart shows: the first is the primary (drawn fully), the others are overlays.
using RunList = std::vector<RunPtr>;

class ChartView : public QChartView {
    Q_OBJECT
public:
    explicit ChartView(const QString& title, QWidget* parent = nullptr);

    void setEmptyMessage(const QString& message); // empty string: the chart has data
    QString emptyMessage() const { return m_empty; }
    QString title() const;
    // Grabs the widget (what the user sees) into a PNG; returns an error message or empty.
    QString saveAsPng(const QString& path);
    QString suggestedFileName() const;
    // How often the whole view was repainted because its plot area moved or its runs changed.
    int wholeRepaints() const { return m_wholeRepaints; }

public slots:
    void savePngInteractive();

public:
    // The house style of an axis: a plain title, tick labels a notch smaller (makeValueAxis does it).
    static void styleAxis(QAbstractAxis* axis);

protected:
    void contextMenuEvent(QContextMenuEvent* event) override;
    void drawForeground(QPainter* painter, const QRectF& rect) override;
    void resizeEvent(QResizeEvent* event) override;
    void showEvent(QShowEvent* event) override;
    // fitLegend(chart(), entries), again at every resize and show.
    void fitLegendTo(int entries);
    // The chart's title, and a shorter one for a chart narrower than a legend's full labels fit
    // beside (empty: the same); chosen again at every resize.
    void setTitles(const QString& full, const QString& compact = {});
    // The same for an axis of the chart: its title now, and `compact` in a narrow chart.
    void setCompactAxisTitle(QAbstractAxis* axis, const QString& compact);
    // Invalidates the whole scene and the viewport: nothing drawn before stays on screen.
    void repaintWhole();

    QValueAxis* makeValueAxis(const QString& title, Qt::Alignment align, const QString& labelFormat);
    // Sets a range on whole ticks (1, 2 or 5 x 10^k apart) that covers [lo, hi], and a label
    // format with the decimals the step needs (the axis's own format is replaced). No tick
    // reads "-0".
    static void setNiceRange(QValueAxis* axis, double lo, double hi, bool includeZero = false);
    // An integer epoch axis: ticks at 1, 2, 3... (or a coarser step for long runs), from 0 with
    // fromZero (a run that evaluated a loaded model before any training reports an epoch 0).
    static void setEpochRange(QValueAxis* axis, double maxEpoch, bool fromZero = false);

private:
    QString m_empty;
    int m_wholeRepaints = 0;
    int m_legendEntries = -1; // fitLegendTo's, or -1: the legend stays where it is
    std::pair<QString, QString> m_titles; // setTitles': full, compact; empty: the title is set directly
    struct AxisTitles {
        QPointer<QAbstractAxis> axis;
        QString full, compact;
    };
    std::vector<AxisTitles> m_axisTitles;
    void applyTitle();
};

// A chart that draws a list of runs. setRuns() rebuilds its series (selection changed);
// refresh() only replaces their points (new data arrived), one replace() per series.
class RunChart : public ChartView {
    Q_OBJECT
public:
    using ChartView::ChartView;
    // runs: the primary run first, then the overlays. tableOrder: the same runs in the runs
    // table's order, which the legend follows (empty, or not the same runs: the order of runs).
    void setRuns(RunList runs, const RunList& tableOrder = {});
    const RunList& runs() const { return m_runs; }
    virtual void refresh() = 0;

protected:
    virtual void rebuild() = 0;
    RunList m_runs;
    // Indices into m_runs in the runs table's order: a rebuild() adds the runs' series so, and the
    // legend lists them as the table does (it listed the primary run first, wherever its row was).
    std::vector<std::size_t> m_tableOrder;
};

void setLegendVisible(QChart* chart, QAbstractSeries* series, bool visible);
// The legend below the plot while its visible entries fit one row of the chart's width (and
// `entries` is at most 5), else at the right, one entry a row: seven runs and three style keys at
// the bottom left each label a few pixels, elided to nothing.
// A chart narrower than 480 pixels with its legend at the right labels its entries short
// (shortLegendLabel), so that the plot keeps its width and no label is cut.
void fitLegend(QChart* chart, int entries);
// The label of a series in a narrow chart's legend: the one setShortLegendLabel gave it, else a
// run's number ("#2" of "#2 channel-wise"), else its name.
QString shortLegendLabel(const QAbstractSeries* series);
void setShortLegendLabel(QAbstractSeries* series, const QString& label);
// A legend-only entry (an empty series) that explains a line style, e.g. dashed = test, labelled
// shortName in a narrow chart; returned for a marker of its own (the chart owns it).
QLineSeries* addStyleKey(QChart* chart, const QString& name, const QString& shortName, const QPen& pen, bool points, QAbstractAxis* x,
                         QAbstractAxis* y);

// A tick step of 1, 2 or 5 x 10^k that splits `span` into at most targetTicks intervals.
double niceStep(double span, int targetTicks);

// Keeps about maxPoints points (at most maxPoints + 1): the lowest and the highest of each stretch
// of steps, so peaks and dips stay drawn, and the last point.
QList<QPointF> decimate(const QList<QPointF>& points, int maxPoints);

} // namespace quantscope
