#include "pareto_chart.h"

#include "format_text.h"

#include <QChart>
#include <QGraphicsLayout>
#include <QHelpEvent>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QScatterSeries>
#include <QTextDocument>
#include <QToolTip>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

namespace quantscope {

ParetoChart::ParetoChart(QWidget* parent) : ChartView(tr("Mixed-bit search: size against accuracy"), parent)
{
    QChart* c = chart();
    m_plans = new QScatterSeries;
    m_plans->setName(tr("plans"));
    m_plans->setMarkerSize(8);
    m_plans->setColor(QColor(0x6b, 0x9b, 0xc8));
    m_plans->setBorderColor(QColor(0x3c, 0x6e, 0x9e));
    m_front = new QLineSeries;
    m_front->setName(tr("front"));
    m_front->setPen(QPen(QColor(0x1f, 0x3b, 0x57), 2));
    m_uniform = new QScatterSeries;
    m_uniform->setName(tr("uniform"));
    m_uniform->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
    m_uniform->setMarkerSize(12);
    m_uniform->setColor(QColor(0xff, 0x9f, 0x40));
    m_uniform->setBorderColor(QColor(0xb3, 0x5c, 0x00));
    m_chosen = new QScatterSeries;
    m_chosen->setName(tr("chosen"));
    m_chosen->setMarkerShape(QScatterSeries::MarkerShapeStar);
    m_chosen->setMarkerSize(22);
    m_chosen->setColor(QColor(0xd6, 0x27, 0x28));
    m_chosen->setBorderColor(QColor(0x80, 0x10, 0x10));
    m_selected = new QScatterSeries;
    m_selected->setName(tr("in the table"));
    m_selected->setMarkerSize(32);
    m_selected->setColor(Qt::transparent);
    m_selected->setBorderColor(QColor(0x20, 0x20, 0x20));
    QPen ring(QColor(0x20, 0x20, 0x20), 2);
    m_selected->setPen(ring);
    m_fp32 = new QLineSeries;
    m_fp32->setName(tr("FP32"));
    QPen grey(QColor(140, 140, 140), 1.5);
    grey.setStyle(Qt::DashLine);
    m_fp32->setPen(grey);
    m_budget = new QLineSeries;
    m_budget->setName(tr("budget"));
    QPen red(QColor(0xd6, 0x27, 0x28), 1.5);
    red.setStyle(Qt::DotLine);
    m_budget->setPen(red);

    m_x = makeValueAxis(tr("model size (% of FP32)"), Qt::AlignBottom, QStringLiteral("%.0f"));
    m_y = makeValueAxis(tr("validation accuracy (%)"), Qt::AlignLeft, QStringLiteral("%.1f"));
    setNiceRange(m_x, 0, 100); // before the first plan: whole percentages, not 0..1 in "0 0 1 1 1"
    setNiceRange(m_y, 0, 100);
    for (QXYSeries* s : std::initializer_list<QXYSeries*>{m_fp32, m_budget, m_front, m_plans, m_uniform, m_selected, m_chosen}) {
        c->addSeries(s);
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    for (QScatterSeries* s : {m_plans, m_uniform, m_chosen}) connectPoints(s);
    setLegendVisible(c, m_selected, false);
    fitLegendTo(7); // at the right, one entry a row: below the plot it took height the plot needs
    // No blank band between the view's edge and the chart: the plot keeps those pixels when the
    // chart shares a 1366x768 window's Analysis tab with the search's controls.
    if (c->layout()) c->layout()->setContentsMargins(0, 0, 0, 0);
    c->legend()->setToolTip(tr("front: the Pareto front (no other plan is as small and as accurate); uniform: every layer at one "
                               "format (squares, labelled); chosen: the plan the budget picks; the ring: the plan in the table."));
    connect(m_front, &QXYSeries::clicked, this, [this](const QPointF& p) { emit planClicked(nearestPlan(p)); });
    setEmptyMessage(tr("Pick formats and a budget, then Run search: every plan evaluated appears here, with the Pareto front "
                       "and the uniform plans."));
}

void ParetoChart::connectPoints(QScatterSeries* s)
{
    connect(s, &QXYSeries::hovered, this, [this](const QPointF& p, bool on) {
        const long k = nearestPlan(p);
        if (!on || k < 0) {
            m_hoverText.clear();
            QToolTip::hideText();
            return;
        }
        const EvaluatedPlan& e = m_report.plans[static_cast<std::size_t>(k)];
        QString text = tr("<b>%1</b><br>%2 (%3 % of FP32), %4 bits per weight<br>validation accuracy %5 (%6 points from FP32)")
                           .arg(QString::fromStdString(e.label).toHtmlEscaped(), formatBytes(double(e.bytes)))
                           .arg(percentOf(e.bytes), 0, 'f', 1)
                           .arg(e.bitsPerWeight, 0, 'f', 2)
                           .arg(formatPercent(e.accuracy, 2))
                           .arg(100.0 * (e.accuracy - m_report.fp32Accuracy), 0, 'f', 2);
        if (e.onFront) text += tr("<br>on the Pareto front");
        if (k == m_report.chosen) text += tr("<br><b>chosen</b>");
        text += QStringLiteral("<br><small>");
        for (const LayerOverride& o : e.plan.layers) {
            const LayerPrecision lp = e.plan.forLayer(o.layer);
            text += QStringLiteral("%1: %2 %3<br>").arg(QString::fromStdString(o.layer), QString::fromStdString(lp.format),
                                                      QString::fromStdString(lp.calibration));
        }
        text += tr("click: show in the table</small>");
        m_hoverText = text;
        QToolTip::showText(QCursor::pos(), text, this);
    });
    connect(s, &QXYSeries::clicked, this, [this](const QPointF& p) { emit planClicked(nearestPlan(p)); });
}

bool ParetoChart::event(QEvent* e)
{
    if (e->type() == QEvent::ToolTip && !m_hoverText.isEmpty()) {
        QToolTip::showText(static_cast<QHelpEvent*>(e)->globalPos(), m_hoverText, this);
        return true;
    }
    return ChartView::event(e);
}

double ParetoChart::percentOf(std::uint64_t bytes) const { return 100.0 * double(bytes) / double(std::max<std::uint64_t>(1, m_fp32Bytes)); }

long ParetoChart::nearestPlan(const QPointF& p) const
{
    long best = -1;
    double bestD = 0.0;
    const double sx = std::max(1e-9, m_x->max() - m_x->min()), sy = std::max(1e-9, m_y->max() - m_y->min());
    for (std::size_t k = 0; k < m_report.plans.size(); ++k) {
        const EvaluatedPlan& e = m_report.plans[k];
        const double dx = (percentOf(e.bytes) - p.x()) / sx, dy = (100.0 * e.accuracy - p.y()) / sy;
        const double d = dx * dx + dy * dy;
        if (best < 0 || d < bestD) {
            best = static_cast<long>(k);
            bestD = d;
        }
    }
    return best;
}

long ParetoChart::planAt(const QScatterSeries* s, int i) const
{
    const std::vector<long>* idx = s == m_plans ? &m_plansIdx : s == m_uniform ? &m_uniformIdx : nullptr;
    if (s == m_chosen) return i == 0 && m_chosen->count() == 1 ? m_report.chosen : -1;
    if (!idx || i < 0 || i >= static_cast<int>(idx->size())) return -1;
    return (*idx)[static_cast<std::size_t>(i)];
}

long ParetoChart::frontPlanAt(int i) const
{
    return i >= 0 && i < static_cast<int>(m_frontIdx.size()) ? m_frontIdx[static_cast<std::size_t>(i)] : -1;
}

QStringList ParetoChart::uniformLabels() const
{
    QStringList out;
    for (const QScatterSeries* s : m_uniformLabels) out << s->pointLabelsFormat();
    return out;
}

void ParetoChart::clear()
{
    m_report = {};
    for (QXYSeries* s : std::initializer_list<QXYSeries*>{m_fp32, m_budget, m_front, m_plans, m_uniform, m_selected, m_chosen}) s->clear();
    for (QScatterSeries* s : m_uniformLabels) {
        chart()->removeSeries(s);
        delete s;
    }
    m_uniformLabels.clear();
    m_offChart.clear();
    m_plansIdx.clear();
    m_frontIdx.clear();
    m_uniformIdx.clear();
    // No report, no title and no budget in the legend: a search refused or failed after another
    // kept the previous one's title ("run #3: ... (20 plans)") and budget entry above its message.
    m_titleName.clear();
    m_titleNamesAll = true;
    chart()->setTitle(QString());
    m_budget->setName(tr("budget"));
    setLegendVisible(chart(), m_budget, false);
}

void ParetoChart::setReport(const MixedSearchReport& r, std::uint64_t fp32Bytes, std::optional<double> maxDrop,
                            std::optional<std::uint64_t> maxBytes)
{
    clear();
    m_report = r;
    m_fp32Bytes = std::max<std::uint64_t>(1, fp32Bytes);
    QList<QPointF> plans, uniform, front;
    std::vector<std::pair<double, long>> frontOrder;
    double xlo = 1e300, xhi = 0, ylo = 100.0 * r.fp32Accuracy, yhi = 100.0 * r.fp32Accuracy;
    for (std::size_t k = 0; k < r.plans.size(); ++k) {
        const EvaluatedPlan& e = r.plans[k];
        const QPointF pt(percentOf(e.bytes), 100.0 * e.accuracy);
        xlo = std::min(xlo, pt.x());
        xhi = std::max(xhi, pt.x());
        ylo = std::min(ylo, pt.y());
        yhi = std::max(yhi, pt.y());
        if (e.uniform) {
            uniform << pt;
            m_uniformIdx.push_back(static_cast<long>(k));
        } else {
            plans << pt;
            m_plansIdx.push_back(static_cast<long>(k));
        }
        if (e.onFront) frontOrder.emplace_back(pt.x(), static_cast<long>(k));
    }
    // One label per size the uniform plans take (a format's calibrations share it): the format,
    // by its most accurate square.
    std::vector<std::pair<std::uint64_t, long>> bySize;
    for (long k : m_uniformIdx) bySize.emplace_back(r.plans[static_cast<std::size_t>(k)].bytes, k);
    std::sort(bySize.begin(), bySize.end());
    for (std::size_t i = 0; i < bySize.size();) {
        std::size_t j = i;
        long top = bySize[i].second;
        for (; j < bySize.size() && bySize[j].first == bySize[i].first; ++j)
            if (r.plans[static_cast<std::size_t>(bySize[j].second)].accuracy > r.plans[static_cast<std::size_t>(top)].accuracy) top = bySize[j].second;
        const EvaluatedPlan& e = r.plans[static_cast<std::size_t>(top)];
        auto* label = new QScatterSeries;
        label->append(percentOf(e.bytes), 100.0 * e.accuracy);
        label->setMarkerSize(0.1);
        label->setColor(Qt::transparent);
        label->setBorderColor(Qt::transparent);
        label->setPointLabelsFormat(QString::fromStdString(e.plan.defaults.format));
        label->setPointLabelsVisible(true);
        label->setPointLabelsClipping(false);
        label->setPointLabelsColor(QColor(0x80, 0x40, 0x00));
        QFont f = label->pointLabelsFont();
        f.setBold(true);
        label->setPointLabelsFont(f);
        chart()->addSeries(label);
        label->attachAxis(m_x);
        label->attachAxis(m_y);
        setLegendVisible(chart(), label, false);
        m_uniformLabels.push_back(label);
        i = j;
    }
    std::sort(frontOrder.begin(), frontOrder.end());
    for (const auto& [x, k] : frontOrder) {
        front << QPointF(x, 100.0 * r.plans[static_cast<std::size_t>(k)].accuracy);
        m_frontIdx.push_back(k);
    }
    m_plans->replace(plans);
    m_uniform->replace(uniform);
    m_front->replace(front);
    if (r.chosen >= 0) {
        const EvaluatedPlan& e = r.plans[static_cast<std::size_t>(r.chosen)];
        m_chosen->replace({QPointF(percentOf(e.bytes), 100.0 * e.accuracy)});
    }
    if (r.plans.empty()) {
        setEmptyMessage(r.stopped ? tr("Stopped before any plan was evaluated.") : tr("No plan was evaluated."));
        return;
    }
    setEmptyMessage(QString());
    if (maxBytes) {
        xlo = std::min(xlo, percentOf(*maxBytes));
        xhi = std::max(xhi, percentOf(*maxBytes));
    }
    const double budgetAcc = maxDrop ? 100.0 * r.fp32Accuracy - *maxDrop : 0.0;
    if (maxDrop) ylo = std::min(ylo, budgetAcc);
    // Room on the right for the uniform plans' labels, and a floor at 0.
    const double xpad = std::max(1.0, 0.08 * (xhi - xlo));
    setNiceRange(m_x, std::max(0.0, xlo - xpad), xhi + xpad);
    // Focus on the front and the budget: plans far below them (e.g. uniform int2 with min-max) would
    // squash everything else into a line; they are named in the title instead.
    double focus = 100.0 * r.fp32Accuracy - (maxDrop ? *maxDrop : 1.0);
    for (const EvaluatedPlan& e : r.plans)
        if (e.onFront || e.uniform) focus = std::min(focus, std::max(100.0 * e.accuracy, 100.0 * r.fp32Accuracy - 5.0));
    focus -= 1.0;
    if (ylo < focus) ylo = focus;
    const double ypad = std::max(0.2, 0.06 * (yhi - ylo));
    setNiceRange(m_y, ylo - ypad, std::min(100.0, yhi + 2 * ypad));
    // Named in the title: the plans the axis (rounded out to nice ticks) really leaves out.
    m_offChart.clear();
    for (const EvaluatedPlan& e : r.plans)
        if (100.0 * e.accuracy < m_y->min()) m_offChart << tr("%1 at %2").arg(QString::fromStdString(e.label), formatPercent(e.accuracy, 1));
    m_fp32->replace({QPointF(m_x->min(), 100.0 * r.fp32Accuracy), QPointF(m_x->max(), 100.0 * r.fp32Accuracy)});
    if (maxDrop) m_budget->replace({QPointF(m_x->min(), budgetAcc), QPointF(m_x->max(), budgetAcc)});
    else if (maxBytes) m_budget->replace({QPointF(percentOf(*maxBytes), m_y->min()), QPointF(percentOf(*maxBytes), m_y->max())});
    m_budget->setName(maxDrop ? tr("budget \u2212%1 pts").arg(*maxDrop, 0, 'g', 3)
                              : maxBytes ? tr("budget %1").arg(formatBytes(double(*maxBytes))) : tr("budget"));
    setLegendVisible(chart(), m_budget, maxDrop.has_value() || maxBytes.has_value());
}

void ParetoChart::setTitleFor(const QString& name)
{
    m_titleName = name;
    fitTitle();
}

void ParetoChart::resizeEvent(QResizeEvent* e)
{
    ChartView::resizeEvent(e);
    fitTitle();
}

void ParetoChart::fitTitle()
{
    if (m_titleName.isEmpty()) return;
    const QString first = tr("%1: size against validation accuracy (%2 plans)").arg(m_titleName.toHtmlEscaped()).arg(m_report.plans.size());
    const bool namedAll = m_titleNamesAll;
    if (m_offChart.isEmpty()) {
        chart()->setTitle(first);
        m_titleNamesAll = true;
        if (!namedAll) emit titleFitted();
        return;
    }
    // The width Qt Charts gives the title (the chart less its margins), measured as it measures
    // rich text, with a little to spare.
    qreal left = 0, top = 0, right = 0, bottom = 0;
    if (chart()->layout()) chart()->layout()->getContentsMargins(&left, &top, &right, &bottom);
    const qreal room = chart()->size().width() - chart()->margins().left() - chart()->margins().right() - left - right - 12;
    QTextDocument doc;
    doc.setDefaultFont(chart()->titleFont());
    const auto fits = [&](const QString& html) {
        doc.setHtml(html);
        return doc.idealWidth() <= room;
    };
    const auto withLine = [&](const QString& line) { return first + QStringLiteral("<br><small>") + line.toHtmlEscaped() + QStringLiteral("</small>"); };
    // As many names as fit ("below the chart: A, B and 3 more"), else the count alone; the search's
    // summary names them all.
    const qsizetype n = m_offChart.size();
    QString title = withLine(n == 1 ? tr("1 plan below the chart") : tr("%1 plans below the chart").arg(n));
    m_titleNamesAll = false;
    for (qsizetype k = n; k >= 1; --k) {
        const QString names = m_offChart.mid(0, k).join(QStringLiteral(", "));
        const QString candidate = withLine(k == n ? tr("below the chart: %1").arg(names) : tr("below the chart: %1 and %2 more").arg(names).arg(n - k));
        if (fits(candidate)) {
            title = candidate;
            m_titleNamesAll = k == n;
            break;
        }
    }
    chart()->setTitle(title);
    if (m_titleNamesAll != namedAll) emit titleFitted();
}

void ParetoChart::setSelected(long plan)
{
    if (plan < 0 || plan >= static_cast<long>(m_report.plans.size())) {
        m_selected->clear();
        return;
    }
    const EvaluatedPlan& e = m_report.plans[static_cast<std::size_t>(plan)];
    m_selected->replace({QPointF(percentOf(e.bytes), 100.0 * e.accuracy)});
}

} // namespace quantscope
