#include "curve_charts.h"

#include "quant_catalog.h"

#include <QChart>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QPainter>
#include <QPen>
#include <QScatterSeries>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

namespace quantscope {

namespace {

constexpr int kMaxPoints = 2500; // per series; more would only cost paint time

QPen pen(const QColor& c, qreal width, Qt::PenStyle style = Qt::SolidLine)
{
    QPen p(c, width, style);
    p.setCosmetic(true);
    return p;
}

QColor faded(QColor c, int alpha)
{
    c.setAlpha(alpha);
    return c;
}

// The quantized accuracy's points: a hollow diamond in the run's colour, beside the FP32 accuracy's
// filled circles. In one shade darker they read as the same dots (tester 19 L7); the series draws
// it at its marker size, and the legend key shows it too.
QImage hollowDiamond(const QColor& c)
{
    constexpr int kSide = 32; // drawn scaled to the marker size: smooth at any
    QImage img(kSide, kSide, QImage::Format_ARGB32_Premultiplied);
    img.fill(Qt::transparent);
    QPainter p(&img);
    p.setRenderHint(QPainter::Antialiasing);
    p.setPen(QPen(c.darker(140), 5));
    p.setBrush(Qt::white);
    const qreal m = kSide / 2.0, r = m - 3;
    p.drawPolygon(QPolygonF{QPointF(m, m - r), QPointF(m + r, m), QPointF(m, m + r), QPointF(m - r, m)});
    return img;
}

double plannedSteps(const RunRecord& r)
{
    if (r.hasStart) return double(r.start.epochs * r.start.stepsPerEpoch);
    return r.steps.empty() ? 0.0 : double(r.steps.back().globalStep);
}

template <class S> S* addSeries(QChart* chart, S* s, QAbstractAxis* x, QAbstractAxis* y)
{
    chart->addSeries(s);
    s->attachAxis(x);
    s->attachAxis(y);
    return s;
}

} // namespace

// ---------------------------------------------------------------- LossChart

LossChart::LossChart(QWidget* parent) : RunChart(tr("Training loss"), parent)
{
    m_x = makeValueAxis(tr("training step (batches)"), Qt::AlignBottom, QStringLiteral("%.0f"));
    m_y = makeValueAxis(tr("loss (cross-entropy, nats)"), Qt::AlignLeft, QStringLiteral("%.2f"));
    setCompactAxisTitle(m_x, tr("step (batches)"));
    setCompactAxisTitle(m_y, tr("loss (nats)"));
    setNiceRange(m_x, 0, 100);
    setNiceRange(m_y, 0, 2.5);
    setEmptyMessage(tr("Click Train (Ctrl+R): the loss of every training step appears here."));
}

void LossChart::rebuild()
{
    chart()->removeAllSeries();
    m_slots.clear();
    const bool many = m_runs.size() > 1;
    const QStringList labels = runLabels(m_runs);
    m_slots.assign(m_runs.size(), Slot{});
    if (!m_runs.empty()) {
        // The primary run's per-step loss, under every other line.
        Slot& s = m_slots.front();
        s.raw = new QLineSeries;
        s.raw->setName(tr("per step"));
        setShortLegendLabel(s.raw, tr("step"));
        s.raw->setPen(pen(faded(runColor(*m_runs.front()), 70), 1));
        addSeries(chart(), s.raw, m_x, m_y);
        setLegendVisible(chart(), s.raw, !many);
    }
    for (std::size_t i : m_tableOrder) { // the legend in the runs table's order
        const QColor c = runColor(*m_runs[i]);
        Slot& s = m_slots[i];
        s.smoothed = new QLineSeries;
        s.smoothed->setName(many ? labels[qsizetype(i)] : tr("training (smoothed)"));
        if (!many) setShortLegendLabel(s.smoothed, tr("train"));
        s.smoothed->setPen(pen(c, 2));
        addSeries(chart(), s.smoothed, m_x, m_y);
        s.test = new QLineSeries;
        s.test->setName(tr("test (per epoch)"));
        setShortLegendLabel(s.test, tr("test")); // hidden entries' labels widen a legend at the right too
        s.test->setPen(pen(c.darker(130), 2, Qt::DashLine));
        s.test->setPointsVisible(true);
        s.test->setMarkerSize(7);
        addSeries(chart(), s.test, m_x, m_y);
        setLegendVisible(chart(), s.test, !many);
    }
    if (many) {
        addStyleKey(chart(), tr("train (smoothed)"), tr("train"), pen(Qt::darkGray, 2), false, m_x, m_y);
        addStyleKey(chart(), tr("test (per epoch)"), tr("test"), pen(Qt::darkGray, 2, Qt::DashLine), true, m_x, m_y);
    }
    fitLegendTo(many ? int(m_runs.size()) + 2 : 3);
}

void LossChart::refresh()
{
    double xMax = 10, yMax = 0.5;
    bool any = false;
    for (std::size_t i = 0; i < m_runs.size() && i < m_slots.size(); ++i) {
        const RunRecord& r = *m_runs[i];
        Slot& s = m_slots[i];
        QList<QPointF> raw, smooth, test;
        raw.reserve(static_cast<qsizetype>(r.steps.size()));
        smooth.reserve(static_cast<qsizetype>(r.steps.size()));
        for (std::size_t k = 0; k < r.steps.size(); ++k) {
            const double x = double(r.steps[k].globalStep);
            raw.append({x, r.steps[k].loss});
            smooth.append({x, r.smoothedLoss[k]});
            if (std::isfinite(r.smoothedLoss[k])) yMax = std::max(yMax, r.smoothedLoss[k]);
            // The per-step loss is drawn for the primary run: the axis covers its spikes (it
            // covered the smoothed loss only, and cut a spike off at the top).
            if (s.raw && std::isfinite(r.steps[k].loss)) yMax = std::max(yMax, r.steps[k].loss);
        }
        const double spe = r.hasStart ? double(r.start.stepsPerEpoch)
                                      : (r.steps.empty() ? 1.0 : double(r.steps.back().stepsPerEpoch));
        for (const EpochEvent& e : r.epochs)
            if (std::isfinite(e.testLoss)) {
                test.append({double(e.epoch) * spe, e.testLoss});
                yMax = std::max(yMax, e.testLoss);
            }
        if (s.raw) s.raw->replace(decimate(raw, kMaxPoints));
        s.smoothed->replace(decimate(smooth, kMaxPoints));
        s.test->replace(test);
        xMax = std::max(xMax, plannedSteps(r));
        any = any || !raw.isEmpty();
    }
    setNiceRange(m_x, 0, xMax);
    setNiceRange(m_y, 0, any ? yMax * 1.05 : 2.5, true); // an untrained 10-class net starts near ln 10 = 2.3
    if (m_runs.size() == 1) setTitles(tr("Training loss \u2014 %1").arg(m_runs[0]->title()));
    else if (m_runs.empty()) setTitles(tr("Training loss"));
    else setTitles(tr("Training loss \u2014 %1 runs (colours as in the runs table)").arg(m_runs.size()), tr("Training loss \u2014 %1 runs").arg(m_runs.size()));
    const bool evaluatedOnly = !m_runs.empty() && std::all_of(m_runs.begin(), m_runs.end(), [](const RunPtr& r) {
        return r->steps.empty() && r->hasStart && r->start.epochs == 0;
    });
    setEmptyMessage(any             ? QString()
                    : evaluatedOnly ? tr("No training steps: this run evaluated a loaded model (0 epochs); its accuracy is in the Accuracy chart.")
                                    : tr("Click Train (Ctrl+R): the loss of every training step appears here."));
}

int LossChart::pointCount() const
{
    return m_slots.empty() ? 0 : static_cast<int>(m_slots.front().smoothed->count());
}

// ---------------------------------------------------------------- AccuracyChart

AccuracyChart::AccuracyChart(QWidget* parent) : RunChart(tr("Accuracy per epoch"), parent)
{
    m_x = makeValueAxis(tr("epoch"), Qt::AlignBottom, QStringLiteral("%d"));
    m_y = makeValueAxis(tr("accuracy (%)"), Qt::AlignLeft, QStringLiteral("%.0f"));
    setEpochRange(m_x, 3);
    setNiceRange(m_y, 50, 100);
    setEmptyMessage(tr("Train and test accuracy appear at the end of each epoch."));
}

void AccuracyChart::rebuild()
{
    chart()->removeAllSeries();
    m_slots.clear();
    const bool many = m_runs.size() > 1;
    const QStringList labels = runLabels(m_runs);
    bool anyQuant = false;
    m_slots.assign(m_runs.size(), Slot{});
    for (std::size_t i : m_tableOrder) { // the legend in the runs table's order
        const QColor c = runColor(*m_runs[i]);
        Slot& s = m_slots[i];
        s.train = new QLineSeries;
        s.train->setName(tr("train"));
        s.train->setPen(pen(faded(c, 150), 1.5, Qt::DotLine));
        s.train->setPointsVisible(true);
        s.train->setMarkerSize(5);
        addSeries(chart(), s.train, m_x, m_y);
        setLegendVisible(chart(), s.train, !many);
        const bool quant = quantizesWeights(m_runs[i]->config);
        anyQuant = anyQuant || quant;
        s.test = new QLineSeries;
        s.test->setName(many ? labels[qsizetype(i)] : (quant ? tr("test, FP32 weights") : tr("test")));
        if (!many) setShortLegendLabel(s.test, tr("test"));
        s.test->setPen(pen(c, 2.5));
        s.test->setPointsVisible(true);
        s.test->setMarkerSize(8);
        addSeries(chart(), s.test, m_x, m_y);
        s.quant = new QLineSeries;
        // A plan's layers take their own formats: its default named alone read as uniform (tester 12 #4).
        s.quant->setName(planInForce(m_runs[i]->config) ? tr("test, quantized (per-layer plan)")
                                                        : tr("test, quantized %1").arg(storedFormat(m_runs[i]->config)));
        setShortLegendLabel(s.quant, tr("quant."));
        s.quant->setPen(pen(c.darker(140), 2.5, Qt::DashLine));
        s.quant->setPointsVisible(true);
        s.quant->setMarkerSize(11);
        s.quant->setLightMarker(hollowDiamond(c));
        addSeries(chart(), s.quant, m_x, m_y);
        setLegendVisible(chart(), s.quant, false);
        s.validation = new QLineSeries;
        s.validation->setName(tr("validation"));
        s.validation->setPen(pen(faded(c, 200), 2.0, Qt::DashDotLine));
        s.validation->setPointsVisible(true);
        s.validation->setMarkerSize(6);
        addSeries(chart(), s.validation, m_x, m_y);
        setLegendVisible(chart(), s.validation, false);
    }
    if (many) {
        addStyleKey(chart(), tr("train"), tr("train"), pen(Qt::darkGray, 1.5, Qt::DotLine), true, m_x, m_y);
        addStyleKey(chart(), tr("test, FP32"), tr("test"), pen(Qt::darkGray, 2.5), true, m_x, m_y);
        if (anyQuant) {
            QLineSeries* key = addStyleKey(chart(), tr("test, quantized"), tr("quant."), pen(Qt::darkGray, 2.5, Qt::DashLine), true, m_x, m_y);
            key->setMarkerSize(11);
            key->setLightMarker(hollowDiamond(Qt::gray));
        }
    }
    fitLegendTo(many ? int(m_runs.size()) + (anyQuant ? 3 : 2) : 4);
}

void AccuracyChart::refresh()
{
    double lo = 100, epochs = 0;
    bool any = false, epochZero = false; // PTQ --epochs 0 of a loaded model reports epoch 0
    for (std::size_t i = 0; i < m_runs.size() && i < m_slots.size(); ++i) {
        const RunRecord& r = *m_runs[i];
        QList<QPointF> train, test, quant, validation;
        for (const EpochEvent& e : r.epochs) {
            const double x = double(e.epoch);
            epochZero = epochZero || e.epoch == 0;
            if (e.epoch > 0) train.append({x, 100 * e.trainAccuracy}); // no training accuracy before training
            else lo = std::min(lo, 100 * e.testAccuracy);
            test.append({x, 100 * e.testAccuracy});
            if (e.epoch > 0) lo = std::min({lo, 100 * e.trainAccuracy, 100 * e.testAccuracy});
            if (std::isfinite(e.quantTestAccuracy)) {
                quant.append({x, 100 * e.quantTestAccuracy});
                lo = std::min(lo, 100 * e.quantTestAccuracy);
            }
            if (std::isfinite(e.validationAccuracy)) {
                validation.append({x, 100 * e.validationAccuracy});
                lo = std::min(lo, 100 * e.validationAccuracy);
            }
        }
        m_slots[i].validation->replace(validation);
        setLegendVisible(chart(), m_slots[i].validation, !validation.isEmpty() && m_runs.size() == 1);
        m_slots[i].train->replace(train);
        m_slots[i].test->replace(test);
        m_slots[i].quant->replace(quant);
        // The quantized entry stays out of the legend until the run reports a quantized accuracy.
        setLegendVisible(chart(), m_slots[i].quant, !quant.isEmpty() && m_runs.size() == 1);
        epochs = std::max({epochs, double(r.config.epochs), r.hasStart ? double(r.start.epochs) : 0.0});
        any = any || !test.isEmpty();
    }
    setEpochRange(m_x, epochs, epochZero); // 1..epochs, from 0 when a run reports epoch 0
    // Round the floor down to a multiple of 5 so small differences near the top stay visible.
    const double floor5 = any ? std::max(0.0, std::floor((lo - 2) / 5) * 5) : 0.0;
    m_y->setTickType(QValueAxis::TicksDynamic);
    const double floor = std::min(floor5, 90.0);
    const double interval = 100 - floor > 50 ? 20 : (100 - floor > 25 ? 10 : 5);
    // From a labelled tick: a first epoch's 28 % sat on an unlabelled stretch from 25 up to the
    // first label, 40 (tester 12 #14). A lower bottom keeps the interval (the span only grows).
    const double bottom = std::floor(floor / interval) * interval;
    m_y->setRange(bottom, 100);
    m_y->setTickAnchor(0);
    m_y->setTickInterval(interval);
    setEmptyMessage(any ? QString() : tr("Train and test accuracy appear at the end of each epoch."));
}

int AccuracyChart::pointCount() const
{
    return m_slots.empty() ? 0 : static_cast<int>(m_slots.front().test->count());
}

// ---------------------------------------------------------------- LossScaleChart

// Which runs scale the loss is core/train's rule (a LossScaler in MixedStrategy, in
// LowPrecisionStrategy for float formats of fewer than 8 exponent bits, in ProgressiveStrategy's
// float phases): the message named Mixed precision only.
QString LossScaleChart::noLossScaleMessage()
{
    return tr("No loss-scale data for this run. The loss is scaled by Mixed precision (every format), by Pure low "
              "precision in fp16 or fp8 (bf16 has FP32's range and needs no scaling) and by Progressive while a phase "
              "trains in a float format (fp16, bf16, fp8): train one of them to see the scale adapt and overflowing "
              "steps skipped.");
}

LossScaleChart::LossScaleChart(QWidget* parent) : RunChart(tr("Loss scale"), parent)
{
    m_x = makeValueAxis(tr("training step (batches)"), Qt::AlignBottom, QStringLiteral("%.0f"));
    m_y = new QLogValueAxis;
    m_y->setBase(2);
    m_y->setTitleText(tr("loss scale (factor, log\u2082)"));
    m_y->setLabelFormat(QStringLiteral("%.0f"));
    m_y->setMinorTickCount(0);
    styleAxis(m_y);
    chart()->addAxis(m_y, Qt::AlignLeft);
    setNiceRange(m_x, 0, 100);
    m_y->setRange(1, 65536);
}

void LossScaleChart::rebuild()
{
    chart()->removeAllSeries();
    m_slots.clear();
    const QStringList labels = runLabels(m_runs);
    m_slots.assign(m_runs.size(), Slot{});
    for (std::size_t i : m_tableOrder) { // the legend in the runs table's order
        const QColor c = runColor(*m_runs[i]);
        Slot& s = m_slots[i];
        s.scale = new QLineSeries;
        s.scale->setName(m_runs.size() > 1 ? labels[qsizetype(i)] : tr("loss scale"));
        s.scale->setPen(pen(c, 2));
        addSeries(chart(), s.scale, m_x, m_y);
        s.skipped = new QScatterSeries;
        s.skipped->setName(tr("skipped step (overflow)"));
        s.skipped->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
        s.skipped->setMarkerSize(8);
        s.skipped->setColor(QColor(0xd6, 0x27, 0x28));
        s.skipped->setBorderColor(QColor(0x80, 0x10, 0x10));
        addSeries(chart(), s.skipped, m_x, m_y);
    }
}

void LossScaleChart::refresh()
{
    double xMax = 10, lo = 1e300, hi = 0;
    std::size_t skippedTotal = 0;
    bool any = false;
    for (std::size_t i = 0; i < m_runs.size() && i < m_slots.size(); ++i) {
        const RunRecord& r = *m_runs[i];
        QList<QPointF> scale, skipped;
        for (const BatchEvent& b : r.steps) {
            if (!(std::isfinite(b.lossScale) && b.lossScale > 0)) continue;
            const QPointF pt(double(b.globalStep), b.lossScale);
            scale.append(pt);
            if (b.skipped) skipped.append(pt);
            lo = std::min(lo, b.lossScale);
            hi = std::max(hi, b.lossScale);
        }
        skippedTotal += static_cast<std::size_t>(skipped.size());
        m_slots[i].scale->replace(decimate(scale, kMaxPoints));
        m_slots[i].skipped->replace(skipped);
        // One "skipped step" entry is enough: the first run that has any.
        setLegendVisible(chart(), m_slots[i].skipped, !skipped.isEmpty() && skippedTotal == std::size_t(skipped.size()));
        setLegendVisible(chart(), m_slots[i].scale, !scale.isEmpty());
        xMax = std::max(xMax, plannedSteps(r));
        any = any || !scale.isEmpty();
    }
    setNiceRange(m_x, 0, xMax);
    if (any) {
        m_y->setRange(std::exp2(std::floor(std::log2(lo)) - 1), std::exp2(std::ceil(std::log2(hi)) + 1));
        chart()->setTitle(tr("Loss scale \u2014 %1 skipped step%2")
                              .arg(skippedTotal)
                              .arg(skippedTotal == 1 ? QString() : QStringLiteral("s")));
        setEmptyMessage({});
    } else {
        m_y->setRange(1, 65536);
        chart()->setTitle(tr("Loss scale"));
        setEmptyMessage(noLossScaleMessage());
    }
}

} // namespace quantscope
