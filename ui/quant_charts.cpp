#include "quant_charts.h"

#include "format_text.h"
#include "quant_catalog.h"

#include <QAreaSeries>
#include <QBarCategoryAxis>
#include <QBarSeries>
#include <QBarSet>
#include <QChart>
#include <QCheckBox>
#include <QComboBox>
#include <QFontMetrics>
#include <QHBoxLayout>
#include <QLabel>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QSlider>
#include <QValueAxis>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

namespace quantscope {

namespace {

const QString kNoStats = QObject::tr(
    "No layer statistics yet. They arrive at the end of each epoch for strategies that quantize weights "
    "(post-training quantization, QAT, progressive, pure low precision).");

QPen pen(const QColor& c, qreal width, Qt::PenStyle style = Qt::SolidLine)
{
    QPen p(c, width, style);
    p.setCosmetic(true);
    return p;
}

QAreaSeries* area(QChart* chart, QLineSeries* upper, QLineSeries* lower, const QColor& fill, const QPen& border)
{
    auto* a = new QAreaSeries(upper, lower);
    a->setBrush(fill);
    a->setPen(border);
    chart->addSeries(a);
    QColor solid = fill;
    solid.setAlpha(std::max(fill.alpha(), 140));
    for (QLegendMarker* m : chart->legend()->markers(a)) {
        m->setShape(QLegend::MarkerShapeRectangle);
        m->setBrush(solid);
    }
    return a;
}

} // namespace

QString statsName(const LayerStats& s)
{
    const QString layer = QString::fromStdString(s.layer);
    return s.tensor.empty() || s.tensor == "weight" ? layer : layer + QLatin1Char('.') + QString::fromStdString(s.tensor);
}

QString runStatsName(const RunPtr& run, const LayerStats& s)
{
    return run ? QObject::tr("Run #%1 \u00b7 %2").arg(run->id).arg(statsName(s)) : statsName(s);
}

QString primaryRunNote(const RunPtr& run, int selected)
{
    if (!run || selected < 2) return {};
    // The curves overlay every selected run; a histogram holds one: with two runs selected the
    // title named only the layer, and a user took run #1's weights for both.
    return QObject::tr("Run #%1 only, of the %2 selected runs (the row clicked last; Ctrl+click another to show it). ")
        .arg(run->id)
        .arg(selected);
}

// Why the Histograms tab has nothing to draw for `run`: the hint said "Train with a quantizing
// strategy (e.g. QAT)" under a QAT run that only had no statistics yet (tester 12 #6).
QString noStatsCaption(const RunPtr& run)
{
    if (!run) return QObject::tr("Train with a quantizing strategy (e.g. QAT) to see the weights.");
    const Strategy st = run->config.precision.strategy;
    const QString name = QObject::tr("Run #%1 (%2)").arg(run->id).arg(strategyLabel(st));
    if (st == Strategy::Fp32 || st == Strategy::Mixed)
        return QObject::tr("%1 quantizes no weights: train with a quantizing strategy (e.g. QAT) to see them.").arg(name);
    switch (run->status) {
    case RunStatus::Running:
    case RunStatus::Paused: return QObject::tr("%1 has no end-of-epoch statistics yet: they arrive when its first epoch ends.").arg(name);
    case RunStatus::Stopped:
    case RunStatus::Failed: return QObject::tr("%1 has no end-of-epoch statistics: it ended before its first epoch did.").arg(name);
    case RunStatus::Done: break;
    }
    return QObject::tr("%1 has no end-of-epoch statistics.").arg(name);
}

QString statsCaption(const LayerStats& s)
{
    QStringList parts{statsName(s), QString::fromStdString(s.format), QString::fromStdString(s.granularity)};
    if (!s.scales.empty()) {
        const auto [lo, hi] = std::minmax_element(s.scales.begin(), s.scales.end());
        if (s.scales.size() == 1)
            parts << QObject::tr("scale %1").arg(formatScale(*lo));
        else
            parts << QObject::tr("scales %1\u2013%2 (%3 of them)")
                         .arg(formatScale(*lo), formatScale(*hi), formatCount(double(s.scales.size())));
    }
    parts << QObject::tr("%1 clipped").arg(formatPercent(s.clippedFraction, s.clippedFraction < 0.01 ? 2 : 1));
    // Non-finite weights are left out of the ranges and histograms; say how many there were.
    if (s.nonFinite) parts << QObject::tr("%1 non-finite (inf/NaN) skipped").arg(formatCount(double(s.nonFinite)));
    parts << QObject::tr("SQNR %1").arg(formatDb(s.sqnrDb));
    return parts.join(QStringLiteral("  \u00b7  "));
}

// ---------------------------------------------------------------- LayerEpochBar

LayerEpochBar::LayerEpochBar(QWidget* parent) : QWidget(parent)
{
    m_layer = new QComboBox;
    m_layer->setObjectName(QStringLiteral("layerSelector"));
    m_layer->setToolTip(tr("The quantized tensor to inspect."));
    m_layer->setMinimumContentsLength(10);
    m_epoch = new QSlider(Qt::Horizontal);
    m_epoch->setObjectName(QStringLiteral("epochSlider"));
    m_epoch->setToolTip(tr("Steps through the epochs: statistics are taken at the end of each."));
    m_epoch->setRange(0, 0);
    m_epoch->setPageStep(1);
    m_epoch->setTickPosition(QSlider::TicksBelow);
    m_epochLabel = new QLabel(tr("epoch \u2013"));
    m_epochLabel->setMinimumWidth(m_epochLabel->fontMetrics().horizontalAdvance(QStringLiteral("epoch 888 of 888")));
    auto* h = new QHBoxLayout(this);
    h->setContentsMargins(0, 0, 0, 0);
    auto* layerLabel = new QLabel(tr("&Layer"));
    layerLabel->setBuddy(m_layer);
    h->addWidget(layerLabel);
    h->addWidget(m_layer);
    h->addSpacing(16);
    h->addWidget(new QLabel(tr("Epoch")));
    h->addWidget(m_epoch, 1);
    h->addWidget(m_epochLabel);
    connect(m_layer, &QComboBox::currentIndexChanged, this, [this] {
        if (m_initializing) return;
        emit layerChanged(layer());
        emit changed();
    });
    connect(m_epoch, &QSlider::valueChanged, this, [this] {
        if (m_initializing) return;
        const int n = m_run ? static_cast<int>(m_run->layerStats.size()) : 0;
        const int i = m_epoch->value();
        m_epochLabel->setText(n && i < n ? tr("epoch %1 of %2").arg(m_run->layerStats[std::size_t(i)].empty()
                                                                         ? i + 1
                                                                         : int(m_run->layerStats[std::size_t(i)][0].epoch))
                                              .arg(m_run->config.epochs)
                                         : tr("epoch \u2013"));
        emit changed();
    });
}

void LayerEpochBar::setRun(RunPtr run)
{
    const QString keepLayer = layer();
    const bool followLast = !m_run || run != m_run || m_epoch->value() >= m_epoch->maximum();
    m_run = std::move(run);
    m_initializing = true;
    m_layer->clear();
    const int n = m_run ? static_cast<int>(m_run->layerStats.size()) : 0;
    if (n > 0)
        for (const LayerStats& s : m_run->layerStats.back()) m_layer->addItem(statsName(s));
    int keep = m_layer->findText(keepLayer);
    if (keep < 0 && n > 0) {
        // First look: the tensor with the most weights, whose histogram is the smoothest.
        std::uint64_t most = 0;
        const auto& last = m_run->layerStats.back();
        for (std::size_t i = 0; i < last.size(); ++i) {
            std::uint64_t count = 0;
            for (std::uint64_t c : last[i].fp32Hist) count += c;
            if (count > most) {
                most = count;
                keep = static_cast<int>(i);
            }
        }
    }
    if (keep >= 0) m_layer->setCurrentIndex(keep);
    m_epoch->setRange(0, std::max(0, n - 1));
    if (followLast) m_epoch->setValue(std::max(0, n - 1));
    m_epoch->setEnabled(n > 1);
    m_layer->setEnabled(m_layer->count() > 0);
    m_initializing = false;
    emit m_epoch->valueChanged(m_epoch->value()); // updates the label and emits changed()
}

const LayerStats* LayerEpochBar::current() const
{
    if (!m_run || m_run->layerStats.empty()) return nullptr;
    const auto i = static_cast<std::size_t>(std::clamp(m_epoch->value(), 0, int(m_run->layerStats.size()) - 1));
    const QString name = layer();
    for (const LayerStats& s : m_run->layerStats[i])
        if (statsName(s) == name) return &s;
    return m_run->layerStats[i].empty() ? nullptr : &m_run->layerStats[i].front();
}

QString LayerEpochBar::layer() const { return m_layer->currentText(); }

void LayerEpochBar::setLayer(const QString& layer)
{
    const int i = m_layer->findText(layer);
    if (i >= 0 && i != m_layer->currentIndex()) m_layer->setCurrentIndex(i);
}

int LayerEpochBar::epochIndex() const { return m_epoch->value(); }
void LayerEpochBar::setEpochIndex(int index) { m_epoch->setValue(index); }

// ---------------------------------------------------------------- HistogramChart

HistogramChart::HistogramChart(QWidget* parent) : ChartView(tr("Weight histogram"), parent)
{
    m_x = makeValueAxis(tr("weight value"), Qt::AlignBottom, QStringLiteral("%.2f"));
    m_yLin = makeValueAxis(tr("weights per bin (count)"), Qt::AlignLeft, QStringLiteral("%.0f"));
    m_yLog = new QLogValueAxis(this); // owned by this view until the log toggle first adds it to the chart
    m_yLog->setBase(10);
    m_yLog->setTitleText(tr("weights per bin (count, log scale)"));
    m_yLog->setLabelFormat(QStringLiteral("%g"));
    m_yLog->setMinorTickCount(-1);
    styleAxis(m_yLog);

    // Quantized bars first, the FP32 outline on top: both stay visible where they coincide.
    m_quantUpper = new QLineSeries(this);
    m_quantLower = new QLineSeries(this);
    m_quant = area(chart(), m_quantUpper, m_quantLower, QColor(255, 127, 14, 170), QPen(Qt::NoPen));
    m_quant->setName(tr("quantized values (bars at the levels)"));
    m_fp32Upper = new QLineSeries(this);
    m_fp32Lower = new QLineSeries(this);
    m_fp32 = area(chart(), m_fp32Upper, m_fp32Lower, QColor(31, 119, 180, 45), pen(QColor(20, 80, 160), 1.6));
    m_fp32->setName(tr("FP32 weights"));
    m_clipLow = new QLineSeries;
    m_clipHigh = new QLineSeries;
    for (QLineSeries* s : {m_clipLow, m_clipHigh}) {
        s->setPen(pen(QColor(200, 0, 0), 2, Qt::DashLine));
        chart()->addSeries(s);
    }
    m_clipLow->setName(tr("grid ends"));
    for (QAbstractSeries* s : chart()->series()) {
        s->attachAxis(m_x);
        s->attachAxis(m_yLin);
    }
    setLegendVisible(chart(), m_clipHigh, false);
    setEmptyMessage(kNoStats);
}

void HistogramChart::useLogAxis(bool log)
{
    if (log == m_log) return;
    QAbstractAxis* from = log ? static_cast<QAbstractAxis*>(m_yLin) : m_yLog;
    QAbstractAxis* to = log ? static_cast<QAbstractAxis*>(m_yLog) : m_yLin;
    for (QAbstractSeries* s : chart()->series()) s->detachAxis(from);
    chart()->removeAxis(from); // keeps the axis object: this view still owns it via m_yLin/m_yLog
    from->setParent(this);
    chart()->addAxis(to, Qt::AlignLeft);
    for (QAbstractSeries* s : chart()->series()) s->attachAxis(to);
    m_log = log;
}

void HistogramChart::setStats(const LayerStats* s, bool logScale, const QString& runName)
{
    if (logScale != m_log) {
        // Empty the series first: zeros on a log axis only produce warnings.
        for (QLineSeries* l : {m_fp32Upper, m_fp32Lower, m_quantUpper, m_quantLower, m_clipLow, m_clipHigh}) l->clear();
        useLogAxis(logScale);
    }
    const bool valid = s && s->binEdges.size() >= 2 && s->fp32Hist.size() + 1 == s->binEdges.size();
    m_bins = valid ? static_cast<int>(s->fp32Hist.size()) : 0;
    if (!valid) {
        for (QLineSeries* l : {m_fp32Upper, m_fp32Lower, m_quantUpper, m_quantLower, m_clipLow, m_clipHigh}) l->clear();
        chart()->setTitle(tr("Weight histogram"));
        // Nothing of the last histogram drawn stays: its clip range and share clipped in the legend,
        // its range on the axes (they read as this run's).
        m_clipLow->setName(tr("grid ends"));
        m_quant->setName(tr("quantized values (bars at the levels)"));
        m_x->setRange(0, 1);
        if (logScale) m_yLog->setRange(1, 10);
        else m_yLin->setRange(0, 1);
        setEmptyMessage(kNoStats);
        return;
    }
    const double floor = logScale ? 0.8 : 0.0;
    auto y = [floor](double v) { return std::max(floor, v); };
    const auto& e = s->binEdges;
    QList<QPointF> up;
    double top = 1;
    up.append({e.front(), floor});
    for (std::size_t i = 0; i < s->fp32Hist.size(); ++i) {
        const double v = double(s->fp32Hist[i]);
        up.append({e[i], y(v)});
        up.append({e[i + 1], y(v)});
        top = std::max(top, v);
    }
    up.append({e.back(), floor});
    m_fp32Upper->replace(up);
    m_fp32Lower->replace(QList<QPointF>{{e.front(), floor}, {e.back(), floor}});

    // Quantized values: a narrow bar per bin that holds a level.
    QList<QPointF> q;
    q.append({e.front(), floor});
    const bool haveQuant = s->quantHist.size() == s->fp32Hist.size();
    for (std::size_t i = 0; haveQuant && i < s->quantHist.size(); ++i) {
        const double v = double(s->quantHist[i]);
        if (v <= 0) continue;
        const double c = 0.5 * (e[i] + e[i + 1]), w = std::max(0.18 * (e[i + 1] - e[i]), 1e-12);
        q.append({c - w, floor});
        q.append({c - w, y(v)});
        q.append({c + w, y(v)});
        q.append({c + w, floor});
        top = std::max(top, v);
    }
    q.append({e.back(), floor});
    m_quantUpper->replace(q);
    m_quantLower->replace(QList<QPointF>{{e.front(), floor}, {e.back(), floor}});

    const double yTop = logScale ? std::pow(10.0, std::ceil(std::log10(top * 1.5))) : top * 1.08;
    m_clipLow->replace(QList<QPointF>{{s->clipLow, floor}, {s->clipLow, yTop}});
    m_clipHigh->replace(QList<QPointF>{{s->clipHigh, floor}, {s->clipHigh, yTop}});
    // One scale: the bars are the levels. A scale per channel or group: each has its own grid, the
    // bins split the widest one's steps, and the clip lines are the widest range.
    const bool severalGrids = s->scales.size() > 1;
    // "Clipped" counts weights beyond their own channel's or group's range by more than half a
    // step (closer ones round to the end level anyway): weights just past the drawn line are not
    // clipped, and with several grids the line is only the widest range (tester 10 #2).
    // Short: a longer entry was cut in a 1366x768 window's histogram ("... clipped by t...").
    // The lines are the grid's ends; "clipped" counts weights more than half a step past them
    // (nearer ones round to the end point as any weight rounds): tester 19 read weights past the
    // line labelled "clip" as clipped while the legend said 0.00 %.
    m_clipLow->setName((severalGrids ? tr("widest grid [%1, %2]; %3 clipped (own grids)")
                                     : tr("grid [%1, %2]; %3 clipped"))
                           .arg(formatScale(s->clipLow), formatScale(s->clipHigh),
                                formatPercent(s->clippedFraction, s->clippedFraction < 0.01 ? 2 : 1)));
    m_quant->setName((severalGrids ? tr("quantized %1 (per-channel grids)") : tr("quantized %1 (bars at the levels)"))
                         .arg(QString::fromStdString(s->format)));

    // The clip lines join the axis when they are near the weights; a float format's (fp16: +-65504)
    // would squash every weight into one bar, so then the legend gives the range instead.
    double lo = std::min(e.front(), double(s->tensorMin)), hi = std::max(e.back(), double(s->tensorMax));
    const double span = std::max(hi - lo, 1e-12);
    const bool clipNear = s->clipLow >= lo - 4.0 * span && s->clipHigh <= hi + 4.0 * span;
    if (clipNear) {
        lo = std::min(lo, double(s->clipLow));
        hi = std::max(hi, double(s->clipHigh));
    } else {
        m_clipLow->setName(m_clipLow->name() + tr(" (off the axis)"));
    }
    setNiceRange(m_x, lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo));
    if (logScale) m_yLog->setRange(floor, yTop);
    else setNiceRange(m_yLin, 0, yTop, true);
    const QString name = runName.isEmpty() ? statsName(*s) : runName + QStringLiteral(" \u00b7 ") + statsName(*s);
    chart()->setTitle(tr("Weight histogram \u2014 %1, epoch %2: FP32 vs quantized").arg(name).arg(s->epoch));
    setEmptyMessage({});
}

// ---------------------------------------------------------------- RangesChart

RangesChart::RangesChart(QWidget* parent) : ChartView(tr("Per-channel weight ranges"), parent)
{
    m_x = makeValueAxis(tr("output channel"), Qt::AlignBottom, QStringLiteral("%d"));
    m_y = makeValueAxis(tr("weight value"), Qt::AlignLeft, QStringLiteral("%.2f"));
    m_bandUpper = new QLineSeries(this);
    m_bandLower = new QLineSeries(this);
    m_band = area(chart(), m_bandUpper, m_bandLower, QColor(120, 120, 120, 45), pen(QColor(90, 90, 90), 1.5, Qt::DashLine));
    m_band->setName(tr("per-tensor range"));
    m_chanUpper = new QLineSeries(this);
    m_chanLower = new QLineSeries(this);
    m_chan = area(chart(), m_chanUpper, m_chanLower, QColor(44, 160, 44, 190), pen(QColor(20, 100, 20), 1));
    m_chan->setName(tr("min\u2013max of each output channel"));
    m_beforeUpper = new QLineSeries(this);
    m_beforeUpper->setPen(pen(QColor(230, 120, 20), 1.5));
    m_beforeUpper->setName(tr("before cross-layer equalization"));
    m_beforeLower = new QLineSeries(this);
    m_beforeLower->setPen(pen(QColor(230, 120, 20), 1.5));
    chart()->addSeries(m_beforeUpper);
    chart()->addSeries(m_beforeLower);
    for (QLegendMarker* mk : chart()->legend()->markers(m_beforeLower)) mk->setVisible(false);
    for (QAbstractSeries* s : chart()->series()) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    setEmptyMessage(kNoStats);
}

void RangesChart::setStats(const LayerStats* s, const QString& runName)
{
    const bool valid = s && !s->channelMin.empty() && s->channelMin.size() == s->channelMax.size();
    m_channels = valid ? static_cast<int>(s->channelMin.size()) : 0;
    if (!valid) {
        for (QLineSeries* l : {m_bandUpper, m_bandLower, m_chanUpper, m_chanLower, m_beforeUpper, m_beforeLower}) l->clear();
        chart()->setTitle(tr("Per-channel weight ranges"));
        setEmptyMessage(kNoStats);
        return;
    }
    const int n = m_channels;
    const double x0 = -0.5, x1 = n - 0.5, half = n > 64 ? 0.45 : 0.35;
    m_bandUpper->replace(QList<QPointF>{{x0, s->tensorMax}, {x1, s->tensorMax}});
    m_bandLower->replace(QList<QPointF>{{x0, s->tensorMin}, {x1, s->tensorMin}});
    QList<QPointF> up, lo;
    up.reserve(4 * n + 2);
    lo.reserve(4 * n + 2);
    for (int c = 0; c < n; ++c) {
        const double mn = s->channelMin[std::size_t(c)], mx = s->channelMax[std::size_t(c)];
        const double a = c - half, b = c + half;
        up << QPointF(a, 0) << QPointF(a, mx) << QPointF(b, mx) << QPointF(b, 0);
        lo << QPointF(a, 0) << QPointF(a, mn) << QPointF(b, mn) << QPointF(b, 0);
    }
    m_chanUpper->replace(up);
    m_chanLower->replace(lo);
    // Before CLE: an outline of each channel's earlier range, so both show at once.
    const bool before = s->channelMinBefore.size() == std::size_t(n) && s->channelMaxBefore.size() == std::size_t(n);
    double ylo = std::min(0.0, double(s->tensorMin)), yhi = std::max(0.0, double(s->tensorMax));
    QList<QPointF> bu, bl;
    if (before)
        for (int c = 0; c < n; ++c) {
            const double mn = s->channelMinBefore[std::size_t(c)], mx = s->channelMaxBefore[std::size_t(c)];
            bu << QPointF(c - 0.5, mx) << QPointF(c + 0.5, mx);
            bl << QPointF(c - 0.5, mn) << QPointF(c + 0.5, mn);
            ylo = std::min(ylo, mn);
            yhi = std::max(yhi, mx);
        }
    m_beforeUpper->replace(bu);
    m_beforeLower->replace(bl);
    m_beforeUpper->setVisible(before);
    m_beforeLower->setVisible(before);
    m_band->setName(tr("per-tensor range [%1, %2]").arg(formatScale(s->tensorMin), formatScale(s->tensorMax)));
    m_x->setRange(x0, x1);
    m_x->setTickType(QValueAxis::TicksDynamic);
    m_x->setTickAnchor(0);
    m_x->setTickInterval(std::max(1.0, niceStep(n, 10)));
    setNiceRange(m_y, ylo - 0.05 * (yhi - ylo), yhi + 0.05 * (yhi - ylo));
    // Widest over narrowest channel by largest |w|, as CLE equalizes and reports it (ptq_refine's
    // "channel range ratio"; the widths max - min gave 2.2x where it said 2.0x: tester 19); empty
    // channels aside, "\u221e" when every channel is.
    auto ratio = [](const std::vector<float>& lo, const std::vector<float>& hi) {
        double narrow = 0, wide = 0;
        for (std::size_t c = 0; c < lo.size(); ++c)
            if (const double r = std::max(std::fabs(double(lo[c])), std::fabs(double(hi[c]))); r > 0) {
                narrow = narrow > 0 ? std::min(narrow, r) : r;
                wide = std::max(wide, r);
            }
        return narrow > 0 ? QString::number(wide / narrow, 'f', 1) : QStringLiteral("\u221e");
    };
    const QString name = runName.isEmpty() ? statsName(*s) : runName + QStringLiteral(" \u00b7 ") + statsName(*s);
    if (before)
        chart()->setTitle(tr("Per-channel weight ranges \u2014 %1, epoch %2 (%3 output channels; largest |w| of the widest %4\u00d7 "
                             "the narrowest's before CLE, %5\u00d7 after)")
                              .arg(name)
                              .arg(s->epoch)
                              .arg(n)
                              .arg(ratio(s->channelMinBefore, s->channelMaxBefore), ratio(s->channelMin, s->channelMax)));
    else
        chart()->setTitle(tr("Per-channel weight ranges \u2014 %1, epoch %2 (%3 output channels; largest |w| of the widest %4\u00d7 the "
                             "narrowest's)")
                              .arg(name)
                              .arg(s->epoch)
                              .arg(n)
                              .arg(ratio(s->channelMin, s->channelMax)));
    setEmptyMessage({});
}

// ---------------------------------------------------------------- panels

HistogramPanel::HistogramPanel(QWidget* parent) : QWidget(parent)
{
    m_bar = new LayerEpochBar;
    m_log = new QCheckBox(tr("Log scale"));
    m_log->setObjectName(QStringLiteral("logScale"));
    m_log->setToolTip(tr("Shows counts on a logarithmic axis, so the few weights in the tails become visible."));
    m_caption = new QLabel;
    m_caption->setObjectName(QStringLiteral("histogramCaption"));
    m_caption->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_caption->setWordWrap(true);
    m_chart = new HistogramChart;
    m_chart->setObjectName(QStringLiteral("histogramChart"));
    auto* top = new QHBoxLayout;
    top->addWidget(m_bar, 1);
    top->addSpacing(12);
    top->addWidget(m_log);
    auto* v = new QVBoxLayout(this);
    v->addLayout(top);
    v->addWidget(m_caption);
    v->addWidget(m_chart, 1);
    connect(m_bar, &LayerEpochBar::changed, this, &HistogramPanel::refresh);
    connect(m_log, &QCheckBox::toggled, this, &HistogramPanel::refresh);
    refresh();
}

void HistogramPanel::setRun(RunPtr run, int selected)
{
    m_selected = selected;
    m_bar->setRun(std::move(run)); // emits changed(): refresh() draws it
}

QString HistogramPanel::caption() const { return m_caption->text(); }

void HistogramPanel::refresh()
{
    const LayerStats* s = m_bar->current();
    const RunPtr& run = m_bar->run();
    m_chart->setStats(s, m_log->isChecked(), run ? tr("Run #%1").arg(run->id) : QString());
    m_caption->setText(s ? primaryRunNote(run, m_selected) + statsCaption(*s) : noStatsCaption(run));
}

RangesPanel::RangesPanel(QWidget* parent) : QWidget(parent)
{
    m_bar = new LayerEpochBar;
    m_caption = new QLabel;
    m_caption->setWordWrap(true);
    m_chart = new RangesChart;
    m_chart->setObjectName(QStringLiteral("rangesChart"));
    auto* v = new QVBoxLayout(this);
    v->addWidget(m_bar);
    v->addWidget(m_caption);
    v->addWidget(m_chart, 1);
    connect(m_bar, &LayerEpochBar::changed, this, &RangesPanel::refresh);
    refresh();
}

void RangesPanel::setRun(RunPtr run, int selected)
{
    m_selected = selected;
    m_bar->setRun(std::move(run)); // emits changed(): refresh() draws it
}

void RangesPanel::refresh()
{
    const LayerStats* s = m_bar->current();
    const RunPtr& run = m_bar->run();
    m_chart->setStats(s, run ? tr("Run #%1").arg(run->id) : QString());
    if (!s || s->channelMin.empty()) {
        m_caption->setText(tr("Each bar spans one output channel's weights; the grey band is the whole tensor's range. "
                              "When channel ranges differ a lot, one scale per tensor wastes levels on the narrow "
                              "channels, and channel-wise quantization wins."));
        return;
    }
    m_caption->setText(primaryRunNote(run, m_selected) +
                       tr("Each green bar spans one output channel's weights; the grey band is the whole tensor's "
                          "range, which a single tensor-wise scale must cover. %1")
                           .arg(QString::fromStdString(s->granularity) == QLatin1String("channel-wise")
                                    ? tr("This run uses one scale per channel.")
                                    : tr("This run uses %1 quantization.").arg(QString::fromStdString(s->granularity))) +
                       (s->channelMinBefore.empty()
                            ? QString()
                            : tr(" The orange outline is each channel's range before cross-layer equalization.")));
}

// ---------------------------------------------------------------- SqnrChart

SqnrChart::SqnrChart(QWidget* parent) : RunChart(tr("Quantization error per layer"), parent)
{
    chart()->legend()->setMarkerShape(QLegend::MarkerShapeRectangle); // filled swatches for bars
    m_series = new QBarSeries;
    m_series->setLabelsVisible(true);
    // Whole dB on every label: Qt prints a bar's value with "%g", so 48.0 read "48" beside "48.3"
    // (tester 19 L7). The bars hold the rounded values; the tooltip gives the exact one.
    m_series->setLabelsFormat(QStringLiteral("@value"));
    m_series->setLabelsPrecision(4);
    m_series->setLabelsPosition(QAbstractBarSeries::LabelsOutsideEnd);
    chart()->addSeries(m_series);
    m_x = new QBarCategoryAxis;
    m_x->setTitleText(tr("layer (quantized weight tensor)"));
    styleAxis(m_x);
    chart()->addAxis(m_x, Qt::AlignBottom);
    m_y = makeValueAxis(tr("SQNR (dB, higher is better)"), Qt::AlignLeft, QStringLiteral("%.0f"));
    m_series->attachAxis(m_x);
    m_series->attachAxis(m_y);
    setNiceRange(m_y, 0, 50);
    setEmptyMessage(kNoStats);
    // A long name may still be cut on the axis: hovering a bar names its layer whole.
    connect(m_series, &QBarSeries::hovered, this, [this](bool on, int index, QBarSet* set) {
        const QStringList layers = m_x->categories();
        if (!on || index < 0 || index >= layers.size()) return;
        const QList<double> exact = m_exactDb.value(set);
        setToolTip(tr("%1 \u2014 %2: SQNR %3")
                       .arg(layers[index], set->label(), formatDb(index < exact.size() ? exact[index] : set->at(index))));
    });
}

void SqnrChart::resizeEvent(QResizeEvent* event)
{
    RunChart::resizeEvent(event);
    fitLayerLabels();
}

void SqnrChart::fitLayerLabels()
{
    const QStringList layers = m_x->categories();
    if (layers.isEmpty()) return;
    const QFontMetrics fm(m_x->labelsFont());
    int widest = 0;
    for (const QString& l : layers) widest = std::max(widest, fm.horizontalAdvance(l));
    // The plot's width once laid out, else the chart's less the y axis and margins.
    const QRectF plot = chart()->plotArea();
    const double width = plot.width() > 50 ? plot.width() : std::max(100.0, double(this->width()) - 110.0);
    const double perLayer = width / double(layers.size());
    const qreal angle = widest + 14 <= perLayer ? 0 : -90; // Qt pads each label 5 pixels a side
    if (m_x->labelsAngle() != angle) m_x->setLabelsAngle(angle);
}

int SqnrChart::barCount() const
{
    int n = 0;
    for (QBarSet* s : m_series->barSets()) n += s->count();
    return n;
}

void SqnrChart::refresh()
{
    m_series->clear();
    m_exactDb.clear();
    QStringList layers;
    for (const RunPtr& r : m_runs)
        if (const auto* stats = r->latestStats())
            for (const LayerStats& s : *stats)
                if (!layers.contains(statsName(s))) layers << statsName(s);
    m_x->clear();
    m_x->append(layers);
    fitLayerLabels();
    double top = 10;
    int withStats = 0;
    const QStringList labels = runLabels(m_runs);
    for (std::size_t i : m_tableOrder) { // bars and legend in the runs table's order
        const RunPtr& r = m_runs[i];
        const QColor color = runColor(*r);
        const auto* stats = r->latestStats();
        if (!stats || stats->empty()) continue;
        ++withStats;
        auto* set = new QBarSet(m_runs.size() > 1 ? labels[qsizetype(i)] : r->title());
        set->setColor(color);
        set->setBorderColor(color.darker(130));
        set->setLabelColor(QColor(40, 40, 40));
        for (const QString& l : layers) {
            double v = 0;
            for (const LayerStats& s : *stats)
                if (statsName(s) == l) v = std::isfinite(s.sqnrDb) ? s.sqnrDb : 0;
            set->append(std::round(v));
            m_exactDb[set].append(v);
            top = std::max(top, v);
        }
        m_series->append(set);
    }
    // Many bars side by side: upright value labels ran into each other ("48.248.2"), so they turn
    // vertical, with room above the tallest bar for them.
    const bool vertical = barCount() > 12;
    m_series->setLabelsAngle(vertical ? -90.0 : 0.0);
    setNiceRange(m_y, 0, top * (vertical ? 1.3 : 1.15), true);
    chart()->setTitle(withStats > 1 ? tr("Quantization error per layer: SQNR of %1 runs (higher is better)").arg(withStats)
                                    : tr("Quantization error per layer: SQNR (higher is better)"));
    setEmptyMessage(withStats ? QString() : kNoStats);
}

} // namespace quantscope
