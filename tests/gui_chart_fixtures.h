// Helpers of the chart tests (tst_gui_charts, tst_gui_layer_charts): the texts a chart laid out,
// runs with curves or weight statistics to draw, and a layer comparison report.
#pragma once

#include "chart_view.h"
#include "curve_charts.h"
#include "layer_compare_view.h"
#include "main_window.h"
#include "quant_charts.h"
#include "runs_model.h"

#include <QtTest>

#include <QAction>
#include <QBarCategoryAxis>
#include <QBarSeries>
#include <QChart>
#include <QCategoryAxis>
#include <QBarSet>
#include <QComboBox>
#include <QLabel>
#include <QSignalSpy>
#include <QGraphicsScene>
#include <QGraphicsTextItem>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QMap>
#include <QPushButton>
#include <QRegularExpression>
#include <QScreen>
#include <QTabWidget>
#include <QValueAxis>
#include <QFile>
#include <QTemporaryDir>
#include <cmath>
#include <limits>

namespace gui_chart_fixtures {

using namespace quantscope;


// The texts the chart's scene holds (axis labels and titles, legend, title) after a layout.
inline QStringList sceneTexts(ChartView& view)
{
    view.resize(900, 500);
    view.show();
    QCoreApplication::processEvents();
    (void)view.grab(); // lays out and paints: the axis labels exist from here
    QStringList out;
    for (QGraphicsItem* item : view.scene()->items())
        if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible()) out << t->toPlainText();
    return out;
}

// The numeric labels of one axis, grouped by the scene row (x axis) they sit on.
inline QMap<int, QStringList> numericLabelRows(ChartView& view)
{
    (void)sceneTexts(view);
    static const QRegularExpression number(QStringLiteral("^-?[0-9]+(\\.[0-9]+)?$"));
    QMap<int, QStringList> rows;
    for (QGraphicsItem* item : view.scene()->items())
        if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible() && number.match(t->toPlainText()).hasMatch())
            rows[int(std::lround(t->sceneBoundingRect().center().y()))] << t->toPlainText();
    return rows;
}

// A bare chart with one value axis at the bottom, set by ChartView::setNiceRange.
class AxisProbe : public ChartView {
public:
    AxisProbe() : ChartView(QStringLiteral("probe")) { m_axis = makeValueAxis(QStringLiteral("value"), Qt::AlignBottom, QStringLiteral("%.2f")); }
    void set(double lo, double hi, bool zero) { setNiceRange(m_axis, lo, hi, zero); }
    QValueAxis* axis() const { return m_axis; }

private:
    QValueAxis* m_axis;
};

// A finished run whose loss falls from 2.3 to 0.3 over `steps` steps, with one step at `spike`.
inline RunPtr lossRun(int id, std::size_t steps, std::size_t spikeAt, double spike)
{
    auto r = std::make_shared<RunRecord>();
    r->id = id;
    r->status = RunStatus::Done;
    std::vector<BatchEvent> batch;
    for (std::size_t k = 1; k <= steps; ++k) {
        BatchEvent b;
        b.epoch = 1;
        b.step = b.globalStep = k;
        b.stepsPerEpoch = steps;
        b.loss = k == spikeAt ? spike : 0.3 + 2.0 * std::exp(-double(k) / double(steps) * 5.0);
        batch.push_back(b);
    }
    r->addSteps(batch);
    return r;
}

// A layer's statistics with a histogram and per-channel ranges, so both panels draw it.
inline LayerStats drawnStats(const char* layer, int epoch)
{
    LayerStats s;
    s.layer = layer;
    s.epoch = epoch;
    s.format = "int8";
    s.granularity = "channel-wise";
    for (int i = 0; i <= 20; ++i) s.binEdges.push_back(-0.1 + 0.01 * i);
    s.fp32Hist.assign(20, 10);
    s.quantHist.assign(20, 10);
    s.tensorMin = s.clipLow = -0.1f;
    s.tensorMax = s.clipHigh = 0.1f;
    s.channelMin = {-0.1f, -0.05f};
    s.channelMax = {0.1f, 0.04f};
    s.sqnrDb = 44.7;
    return s;
}

// A comparison of `names` (SQNR falling along them); `exactFirst`: the first layer's output is
// unchanged (+inf dB, the first layer kept in FP32).
inline LayerComparisonReport comparison(const QStringList& names, bool exactFirst)
{
    LayerComparisonReport r;
    r.thresholdDb = 20;
    r.images = 16;
    for (qsizetype i = 0; i < names.size(); ++i) {
        LayerComparison l;
        l.index = std::size_t(i);
        l.layer = names[i].toStdString();
        l.kind = "Conv2d";
        l.sqnrDb = exactFirst && i == 0 ? std::numeric_limits<double>::infinity() : 45 - 0.5 * double(i);
        l.aloneSqnrDb = 50 - 0.2 * double(i);
        r.layers.push_back(l);
    }
    return r;
}

// The colour of run `id`'s main series in `chart`: the smoothed loss, the test accuracy, the SQNR
// bars (their names start "#id" when several runs are shown).
inline QColor seriesColour(RunChart& chart, int id)
{
    const QString tag = QStringLiteral("#%1").arg(id);
    const bool one = chart.runs().size() == 1;
    for (QAbstractSeries* s : chart.chart()->series()) {
        if (auto* bars = qobject_cast<QBarSeries*>(s)) {
            for (QBarSet* set : bars->barSets())
                if (set->label().startsWith(tag)) return set->color();
        } else if (auto* line = qobject_cast<QLineSeries*>(s)) {
            const bool main = one ? (s->name() == QLatin1String("training (smoothed)") || s->name() == QLatin1String("test"))
                                  : s->name().startsWith(tag);
            if (main) return line->pen().color();
        }
    }
    return {};
}

inline RunPtr statsRun(int id)
{
    RunPtr r = lossRun(id, 40, 0, 0);
    EpochEvent e;
    e.epoch = 1;
    e.testAccuracy = 0.8 + 0.01 * id;
    e.trainAccuracy = 0.8;
    r->epochs.push_back(e);
    LayerStats s;
    s.layer = "conv1";
    s.sqnrDb = 30 + id;
    r->layerStats.push_back({s});
    r->config.model = id == 2 ? "lenet5" : "seed-cnn"; // labels that tell the runs apart
    return r;
}

inline const QRegularExpression& minusZero()
{
    static const QRegularExpression re(QStringLiteral("^-0(\\.0*)?$"));
    return re;
}

} // namespace gui_chart_fixtures
