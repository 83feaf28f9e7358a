#include "step_size_chart.h"

#include <QChart>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QPen>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

namespace quantscope {

namespace {
QString keyOf(const StepSizeTrack& t) { return QString::fromStdString(t.layer + " " + t.tensor); }
} // namespace

StepSizeChart::StepSizeChart(QWidget* parent) : RunChart(tr("LSQ: learned step sizes"), parent)
{
    m_x = makeValueAxis(tr("training step (batches)"), Qt::AlignBottom, QStringLiteral("%.0f"));
    m_y = new QLogValueAxis;
    m_y->setBase(10);
    m_y->setTitleText(tr("step size (scale, log)"));
    m_y->setLabelFormat(QStringLiteral("%.3g"));
    m_y->setMinorTickCount(-1);
    QFont f = m_y->titleFont();
    f.setBold(false);
    m_y->setTitleFont(f);
    chart()->addAxis(m_y, Qt::AlignLeft);
    setNiceRange(m_x, 0, 100);
    m_y->setRange(1e-3, 1);
}

void StepSizeChart::rebuild()
{
    chart()->removeAllSeries();
    m_series.clear();
    m_keys.clear();
    if (m_runs.empty() || m_runs.front()->stepSizes.empty()) return;
    int i = 0;
    for (const StepSizeTrack& t : m_runs.front()->stepSizes.front().steps) {
        auto* s = new QLineSeries;
        s->setName(keyOf(t));
        QPen p(paletteColor(i++), 2, t.tensor == "activation" ? Qt::DashLine : Qt::SolidLine);
        p.setCosmetic(true);
        s->setPen(p);
        chart()->addSeries(s);
        s->attachAxis(m_x);
        s->attachAxis(m_y);
        m_series.push_back(s);
        m_keys << keyOf(t);
    }
}

void StepSizeChart::refresh()
{
    const RunRecord* r = m_runs.empty() ? nullptr : m_runs.front().get();
    if (!r || r->stepSizes.empty()) {
        if (!m_series.empty()) rebuild();
        setEmptyMessage(tr("No learned step sizes for this run. Choose Quantization-aware training with the LSQ "
                           "quantizer in the training panel: its step sizes are learned with the weights and "
                           "drawn here as they move."));
        return;
    }
    QStringList keys;
    for (const StepSizeTrack& t : r->stepSizes.front().steps) keys << keyOf(t);
    if (keys != m_keys) rebuild();
    std::vector<QList<QPointF>> pts(m_series.size());
    double lo = 1e300, hi = 0, xMax = 10;
    for (const StepSizeEvent& e : r->stepSizes) {
        for (std::size_t k = 0; k < e.steps.size() && k < pts.size(); ++k) {
            const double v = e.steps[k].step;
            if (!(std::isfinite(v) && v > 0)) continue;
            pts[k].append(QPointF(double(e.globalStep), v));
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
        xMax = std::max(xMax, double(e.globalStep));
    }
    if (r->hasStart) xMax = std::max(xMax, double(r->start.epochs * r->start.stepsPerEpoch));
    for (std::size_t k = 0; k < m_series.size(); ++k) m_series[k]->replace(decimate(pts[k], 2500));
    setNiceRange(m_x, 0, xMax);
    if (hi > 0) m_y->setRange(std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi))));
    setEmptyMessage({});
}

} // namespace quantscope
