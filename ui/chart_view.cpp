#include "chart_view.h"

#include <algorithm>
#include <QChart>
#include <QContextMenuEvent>
#include <QFileDialog>
#include <QFontMetrics>
#include <QLegend>
#include <QGraphicsLayout>
#include <QGraphicsScene>
#include <QLegendMarker>
#include <QLineSeries>
#include <QMenu>
#include <QPainter>
#include <QRegularExpression>
#include <QValueAxis>

#include <cmath>
#include <numeric>

namespace quantscope {

namespace {
constexpr const char* kInLegend = "qsInLegend"; // a series property: setLegendVisible's last word
constexpr const char* kShortName = "qsShortName"; // a series property: its label in a narrow chart's legend
// Below this width a legend at the right takes the short labels (and the chart its short title):
// at 1024x700 the Curves tab's charts are about 250 pixels wide, and their legends' full labels
// ("#2 channel-wise", "test, FP32") were cut to "#2 cha...", "test, FP..." beside a narrowed plot.
constexpr qreal kCompactChartWidth = 480;

// The view's chart, passed to QChartView's constructor: QChartView(parent) would build a default
// chart of its own, and setChart() releases the previous chart without deleting it (a leak of a
// whole QChart, theme, title and legend per view, found by the asan preset's LeakSanitizer).
QChart* newChart(const QString& title)
{
    auto* chart = new QChart; // owned by the view from its constructor on
    chart->setTitle(title);
    QFont tf = chart->titleFont();
    tf.setBold(true);
    tf.setPointSizeF(std::max(10.0, tf.pointSizeF() * 1.1));
    chart->setTitleFont(tf);
    chart->legend()->setAlignment(Qt::AlignBottom);
    chart->legend()->setShowToolTips(true);
    chart->legend()->setMarkerShape(QLegend::MarkerShapeFromSeries);
    QFont lf = chart->legend()->font();
    lf.setPointSizeF(lf.pointSizeF() * 0.9); // a little smaller: entries fit a 1366-pixel window's charts
    chart->legend()->setFont(lf);
    chart->setMargins(QMargins(6, 4, 10, 4));
    chart->setAnimationOptions(QChart::NoAnimation);
    chart->setBackgroundRoundness(0);
    return chart;
}
} // namespace

ChartView::ChartView(const QString& title, QWidget* parent) : QChartView(newChart(title), parent)
{
    setRenderHint(QPainter::Antialiasing);
    // 260: the Curves tab's two charts side by side fit a 1024-pixel window beside the docks (at 320
    // the window was at least 1144 pixels wide, and on a 1024x700 screen its right part was off screen).
    setMinimumSize(260, 240);
    setToolTip(tr("Right-click to save this chart as PNG."));
    // When the plot area moves (the legend goes to the right for a second run, wider tick labels)
    // Qt Charts repaints only the items' new places: the old tick labels, grid lines and axis
    // title stayed on screen ("80" at two heights) until another tab was shown and back. The
    // layout runs after setRuns() repainted, so the repaint follows the plot area itself.
    connect(chart(), &QChart::plotAreaChanged, this, &ChartView::repaintWhole);
}

void ChartView::repaintWhole()
{
    ++m_wholeRepaints;
    scene()->invalidate();
    viewport()->update();
}

QString ChartView::title() const { return chart()->title(); }

void ChartView::setEmptyMessage(const QString& message)
{
    if (m_empty == message) return;
    m_empty = message;
    viewport()->update();
    scene()->update();
}

void ChartView::drawForeground(QPainter* painter, const QRectF& rect)
{
    QChartView::drawForeground(painter, rect);
    if (m_empty.isEmpty()) return;
    const QRectF plot = chart()->plotArea();
    painter->save();
    painter->setPen(QColor(90, 90, 90));
    QFont f = font();
    f.setPointSizeF(f.pointSizeF() * 1.05);
    painter->setFont(f);
    painter->fillRect(plot.adjusted(plot.width() * 0.1, plot.height() * 0.35, -plot.width() * 0.1,
                                    -plot.height() * 0.35),
                      QColor(255, 255, 255, 220));
    painter->drawText(plot.adjusted(plot.width() * 0.12, 0, -plot.width() * 0.12, 0),
                      Qt::AlignCenter | Qt::TextWordWrap, m_empty);
    painter->restore();
}

QString ChartView::suggestedFileName() const
{
    QString name = title().toLower();
    name.replace(QRegularExpression(QStringLiteral("[^a-z0-9]+")), QStringLiteral("-"));
    name = name.mid(0, 48);
    while (name.endsWith(QLatin1Char('-'))) name.chop(1);
    while (name.startsWith(QLatin1Char('-'))) name.remove(0, 1);
    return (name.isEmpty() ? QStringLiteral("chart") : name) + QStringLiteral(".png");
}

QString ChartView::saveAsPng(const QString& path)
{
    const QPixmap pm = grab();
    if (pm.isNull() || !pm.save(path, "PNG")) return tr("%1: could not write the PNG file").arg(path);
    return {};
}

void ChartView::savePngInteractive()
{
    const QString path =
        QFileDialog::getSaveFileName(this, tr("Save chart as PNG"), suggestedFileName(), tr("PNG images (*.png)"));
    if (path.isEmpty()) return;
    const QString err = saveAsPng(path);
    if (!err.isEmpty()) setEmptyMessage(err);
}

void ChartView::contextMenuEvent(QContextMenuEvent* event)
{
    QMenu menu(this);
    menu.addAction(tr("Save chart as PNG\u2026"), this, &ChartView::savePngInteractive);
    menu.exec(event->globalPos());
}

void ChartView::styleAxis(QAbstractAxis* axis)
{
    // Plain titles and tick labels a notch smaller than the text around them: at 1366x768 the
    // default bold titles were cut ("SQNR of the layer's output vs FP3...").
    QFont f = axis->titleFont();
    f.setBold(false);
    f.setPointSizeF(f.pointSizeF() * 0.95);
    axis->setTitleFont(f);
    QFont l = axis->labelsFont();
    l.setPointSizeF(l.pointSizeF() * 0.9);
    axis->setLabelsFont(l);
}

QValueAxis* ChartView::makeValueAxis(const QString& title, Qt::Alignment align, const QString& labelFormat)
{
    auto* axis = new QValueAxis;
    axis->setTitleText(title);
    axis->setLabelFormat(labelFormat);
    styleAxis(axis);
    chart()->addAxis(axis, align);
    return axis;
}

double niceStep(double span, int targetTicks)
{
    const double raw = std::max(span, 1e-12) / std::max(1, targetTicks);
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0})
        if (raw <= m * mag * (1 + 1e-9)) return m * mag;
    return 10 * mag;
}

void ChartView::setNiceRange(QValueAxis* axis, double lo, double hi, bool includeZero)
{
    if (!std::isfinite(lo) || !std::isfinite(hi)) {
        lo = 0;
        hi = 1;
    }
    if (includeZero) {
        lo = std::min(lo, 0.0);
        hi = std::max(hi, 0.0);
    }
    if (hi - lo < 1e-12) {
        const double pad = std::max(1e-3, std::abs(hi) * 0.1);
        lo -= pad;
        hi += pad;
    }
    // Ticks every 1, 2 or 5 x 10^k (four to six intervals), the axis ending on ticks, each label
    // with the decimals its step needs: "%.2f" on a +-0.009 axis read "-0.01 -0.01 -0.00 0.00".
    const double step = niceStep(hi - lo, 5);
    const double first = std::floor(lo / step + 1e-9) * step, last = std::ceil(hi / step - 1e-9) * step;
    const int ticks = static_cast<int>(std::lround((last - first) / step)) + 1;
    const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
    // Qt Charts computes tick i as min + i * (max - min) / (ticks - 1): the zero tick came out as
    // -2.8e-17 and printed "-0.00". Shifted a billionth of a step up it prints "0.00"; nothing
    // else moves by a visible amount or a printed digit.
    const double nudge = first < 0 && last > 0 ? step * 1e-9 : 0.0;
    axis->setTickType(QValueAxis::TicksFixed);
    axis->setRange(first + nudge, last + nudge);
    axis->setTickCount(std::max(2, ticks));
    // Past a million the ticks print in powers of ten: a loss axis of a run that blew up read
    // "5000000000000000000000".
    axis->setLabelFormat(std::max(std::fabs(first), std::fabs(last)) >= 1e6 ? QStringLiteral("%.3g") : QStringLiteral("%.%1f").arg(decimals));
}

void ChartView::setEpochRange(QValueAxis* axis, double maxEpoch, bool fromZero)
{
    const double n = std::max(fromZero ? 0.0 : 1.0, maxEpoch);
    double step = 1;
    while (n / step > 12) step *= n / step > 60 ? 5 : 2;
    axis->setRange(fromZero ? -0.5 : 0.5, n + 0.5);
    axis->setTickType(QValueAxis::TicksDynamic);
    axis->setTickAnchor(fromZero ? 0 : 1);
    axis->setTickInterval(step);
    axis->setLabelFormat(QStringLiteral("%d"));
}

void RunChart::setRuns(RunList runs, const RunList& tableOrder)
{
    m_runs = std::move(runs);
    m_tableOrder.clear();
    for (const RunPtr& r : tableOrder)
        if (auto it = std::find(m_runs.begin(), m_runs.end(), r); it != m_runs.end())
            m_tableOrder.push_back(static_cast<std::size_t>(it - m_runs.begin()));
    std::vector<std::size_t> sorted = m_tableOrder;
    std::sort(sorted.begin(), sorted.end());
    if (sorted.size() != m_runs.size() || std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
        m_tableOrder.resize(m_runs.size());
        std::iota(m_tableOrder.begin(), m_tableOrder.end(), std::size_t(0));
    }
    rebuild();
    refresh();
    // The removed series' point markers stayed on screen until the next full repaint (another
    // tab and back): repaint the whole view now.
    repaintWhole();
}

void setLegendVisible(QChart* chart, QAbstractSeries* series, bool visible)
{
    series->setProperty(kInLegend, visible); // what fitLegend counts: a marker's own flag reads false off screen
    // Always set it: a marker of a chart not on screen reads as invisible whatever its flag.
    for (QLegendMarker* m : chart->legend()->markers(series)) m->setVisible(visible);
    // The legend does not always lay itself out again when a marker reappears.
    if (chart->legend()->layout()) chart->legend()->layout()->invalidate();
}

void fitLegend(QChart* chart, int entries)
{
    // One row below the plot only if its visible entries fit the chart's width (marker, gap and
    // text each): three runs and two style keys below a 430-pixel loss chart read "train (smoot...".
    const QFontMetrics fm(chart->legend()->font());
    int row = 0;
    // The entries setLegendVisible left in: a marker's isVisible() is false while the chart is not
    // on screen (or not laid out yet), which measured an empty row.
    for (QLegendMarker* m : chart->legend()->markers())
        if (m->series()->property(kInLegend).toBool() || !m->series()->property(kInLegend).isValid())
            row += fm.horizontalAdvance(m->series()->name()) + 3 * fm.height(); // about what Qt lays out (the full label)
    const bool below = entries <= 5 && row <= chart->size().width() - 24;
    const Qt::Alignment want = below ? Qt::AlignBottom : Qt::AlignRight;
    if (chart->legend()->alignment() != want) chart->legend()->setAlignment(want);
    const bool compact = !below && chart->size().width() < kCompactChartWidth;
    bool relabelled = false;
    for (QLegendMarker* m : chart->legend()->markers()) {
        const QString label = compact ? shortLegendLabel(m->series()) : m->series()->name();
        if (m->label() == label) continue;
        m->setLabel(label);
        relabelled = true;
    }
    if (relabelled) { // else the legend kept the old labels' widths, and the plot its width
        if (chart->legend()->layout()) chart->legend()->layout()->invalidate();
        if (chart->layout()) chart->layout()->invalidate();
    }
}

QString shortLegendLabel(const QAbstractSeries* series)
{
    const QVariant given = series->property(kShortName);
    if (given.isValid()) return given.toString();
    const QString name = series->name();
    // A run's label, "#2 channel-wise": its number, which the runs table's swatch colours alike.
    if (name.startsWith(QLatin1Char('#')) && name.contains(QLatin1Char(' '))) return name.left(name.indexOf(QLatin1Char(' ')));
    return name;
}

void setShortLegendLabel(QAbstractSeries* series, const QString& label) { series->setProperty(kShortName, label); }

void ChartView::fitLegendTo(int entries)
{
    m_legendEntries = entries;
    fitLegend(chart(), entries);
}

void ChartView::resizeEvent(QResizeEvent* event)
{
    QChartView::resizeEvent(event); // resizes the chart
    if (m_legendEntries >= 0) fitLegend(chart(), m_legendEntries);
    applyTitle();
}

void ChartView::setTitles(const QString& full, const QString& compact)
{
    m_titles = {full, compact.isEmpty() ? full : compact};
    applyTitle();
}

void ChartView::setCompactAxisTitle(QAbstractAxis* axis, const QString& compact)
{
    m_axisTitles.push_back({axis, axis->titleText(), compact});
    applyTitle();
}

void ChartView::applyTitle()
{
    const bool compact = chart()->size().width() < kCompactChartWidth;
    if (!m_titles.first.isEmpty()) {
        const QString& t = compact ? m_titles.second : m_titles.first;
        if (chart()->title() != t) chart()->setTitle(t);
    }
    for (const AxisTitles& a : m_axisTitles)
        if (a.axis && a.axis->titleText() != (compact ? a.compact : a.full)) a.axis->setTitleText(compact ? a.compact : a.full);
}

void ChartView::showEvent(QShowEvent* event)
{
    QChartView::showEvent(event);
    // Legend markers of a chart not on screen read as invisible: runs selected while another tab
    // was shown left a legend of five entries below a 430-pixel chart, cut.
    if (m_legendEntries >= 0) fitLegend(chart(), m_legendEntries);
}

QLineSeries* addStyleKey(QChart* chart, const QString& name, const QString& shortName, const QPen& pen, bool points, QAbstractAxis* x,
                         QAbstractAxis* y)
{
    auto* s = new QLineSeries;
    s->setName(name);
    setShortLegendLabel(s, shortName);
    s->setPen(pen);
    s->setPointsVisible(points);
    chart->addSeries(s);
    s->attachAxis(x);
    s->attachAxis(y);
    return s;
}

QList<QPointF> decimate(const QList<QPointF>& points, int maxPoints)
{
    if (points.size() <= maxPoints || maxPoints < 4) return points;
    // Each of maxPoints / 2 buckets keeps its lowest and its highest point, in step order: a
    // one-step loss spike survives (an even stride dropped it, and the chart showed no spike).
    const qsizetype buckets = maxPoints / 2;
    const double width = double(points.size()) / double(buckets);
    QList<QPointF> out;
    out.reserve(maxPoints + 1);
    for (qsizetype b = 0; b < buckets; ++b) {
        const auto from = static_cast<qsizetype>(double(b) * width);
        const qsizetype to = std::min(points.size(), static_cast<qsizetype>(double(b + 1) * width));
        if (from >= to) continue;
        qsizetype lo = from, hi = from;
        for (qsizetype i = from + 1; i < to; ++i) {
            if (points[i].y() < points[lo].y()) lo = i;
            if (points[i].y() > points[hi].y()) hi = i;
        }
        out.append(points[std::min(lo, hi)]);
        if (lo != hi) out.append(points[std::max(lo, hi)]);
    }
    if (out.back() != points.back()) out.append(points.back());
    return out;
}

} // namespace quantscope
