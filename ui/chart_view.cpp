#include "chart_view.h"

#include <algorithm>
#include <QChart>
#include <QContextMenuEvent>
#include <QFileDialog>
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

namespace quantscope {

namespace {
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
    chart->setMargins(QMargins(6, 4, 10, 4));
    chart->setAnimationOptions(QChart::NoAnimation);
    chart->setBackgroundRoundness(0);
    return chart;
}
} // namespace

ChartView::ChartView(const QString& title, QWidget* parent) : QChartView(newChart(title), parent)
{
    setRenderHint(QPainter::Antialiasing);
    setMinimumSize(320, 240);
    setToolTip(tr("Right-click to save this chart as PNG."));
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

QColor ChartView::runColor(int slot) { return runSlotColor(slot); }

QValueAxis* ChartView::makeValueAxis(const QString& title, Qt::Alignment align, const QString& labelFormat)
{
    auto* axis = new QValueAxis;
    axis->setTitleText(title);
    axis->setLabelFormat(labelFormat);
    QFont f = axis->titleFont();
    f.setBold(false);
    axis->setTitleFont(f);
    chart()->addAxis(axis, align);
    return axis;
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
    axis->setTickType(QValueAxis::TicksFixed);
    axis->setRange(lo, hi);
    axis->setTickCount(6);
    axis->applyNiceNumbers();
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

void RunChart::setRuns(RunList runs)
{
    m_runs = std::move(runs);
    rebuild();
    refresh();
    // The removed series' point markers stayed on screen until the next full repaint (another
    // tab and back): repaint the whole view now.
    scene()->invalidate();
    viewport()->update();
}

void setLegendVisible(QChart* chart, QAbstractSeries* series, bool visible)
{
    // Always set it: a marker of a chart not on screen reads as invisible whatever its flag.
    for (QLegendMarker* m : chart->legend()->markers(series)) m->setVisible(visible);
    // The legend does not always lay itself out again when a marker reappears.
    if (chart->legend()->layout()) chart->legend()->layout()->invalidate();
}

void fitLegend(QChart* chart, int entries)
{
    const Qt::Alignment want = entries > 5 ? Qt::AlignRight : Qt::AlignBottom;
    if (chart->legend()->alignment() != want) chart->legend()->setAlignment(want);
}

void addStyleKey(QChart* chart, const QString& name, const QPen& pen, bool points, QAbstractAxis* x, QAbstractAxis* y)
{
    auto* s = new QLineSeries;
    s->setName(name);
    s->setPen(pen);
    s->setPointsVisible(points);
    chart->addSeries(s);
    s->attachAxis(x);
    s->attachAxis(y);
}

QList<QPointF> decimate(const QList<QPointF>& points, int maxPoints)
{
    if (points.size() <= maxPoints || maxPoints < 2) return points;
    QList<QPointF> out;
    out.reserve(maxPoints + 1);
    const double stride = double(points.size() - 1) / double(maxPoints - 1);
    for (int i = 0; i < maxPoints; ++i) out.append(points[std::min<qsizetype>(points.size() - 1, qsizetype(i * stride + 0.5))]);
    return out;
}

} // namespace quantscope
