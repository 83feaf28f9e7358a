// TBB first: Qt defines emit as a macro, which oneTBB's profiling.h uses as a name.
#include <tbb/task_arena.h>

#include "layer_compare_view.h"

#include "chart_view.h"
#include "core_message.h"
#include "gui_call.h"
#include "quant_catalog.h"

#include "quant/format.h"
#include "train/quant_sim.h"

#include <QApplication>
#include <QCategoryAxis>
#include <QChart>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFontMetrics>
#include <QHBoxLayout>
#include <QLabel>
#include <QLegend>
#include <QLineSeries>
#include <QPointer>
#include <QPushButton>
#include <QScatterSeries>
#include <QSet>
#include <QStandardItemModel>
#include <QValueAxis>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <functional>
#include <thread>

namespace quantscope {

namespace {

constexpr double kCapDb = 100.0; // identical outputs (+inf dB) are drawn here
constexpr std::size_t kImages = 256, kCalibImages = 1000;

double capped(double db) { return std::isfinite(db) ? std::min(db, kCapDb) : kCapDb; }

// "layer2.shortcut" -> "l2.shortcut", "features.12.conv" -> "f.12.conv": every part of a dotted
// path but the last cut to its first letter and its digits.
QString abbreviated(const QString& name)
{
    QStringList parts = name.split(QLatin1Char('.'));
    for (qsizetype i = 0; i + 1 < parts.size(); ++i) {
        QString& p = parts[i];
        qsizetype digits = p.size();
        while (digits > 0 && p[digits - 1].isDigit()) --digits;
        if (digits > 1) p = p.left(1) + p.mid(digits);
    }
    return parts.join(QLatin1Char('.'));
}

// When a name is longer than the labels may be (`tooLong`): the start and the end all `names`
// share, cut at a '.', '/' or '_', replaced by "…" (what is left tells the layers apart).
QStringList withoutSharedEnds(QStringList names, const std::function<bool(const QString&)>& tooLong)
{
    if (names.size() < 2 || std::none_of(names.begin(), names.end(), tooLong)) return names;
    const auto isCut = [](QChar c) { return c == QLatin1Char('.') || c == QLatin1Char('/') || c == QLatin1Char('_'); };
    qsizetype shortest = names.front().size();
    for (const QString& s : names) shortest = std::min(shortest, s.size());
    qsizetype head = 0, tail = 0; // shared lengths, ending (starting) just after (before) a cut
    for (qsizetype i = 0; i < shortest; ++i) {
        const QChar c = names.front()[i];
        if (!std::all_of(names.begin(), names.end(), [&](const QString& s) { return s[i] == c; })) break;
        if (isCut(c)) head = i + 1;
    }
    for (qsizetype i = 1; i <= shortest - head; ++i) {
        const QChar c = names.front()[names.front().size() - i];
        if (!std::all_of(names.begin(), names.end(), [&](const QString& s) { return s[s.size() - i] == c; })) break;
        if (isCut(c)) tail = i;
    }
    for (QString& s : names) {
        const QString middle = s.mid(head, s.size() - head - tail);
        if (middle.isEmpty()) return names; // one name is all shared ends: keep them whole
        s = (head ? QStringLiteral("\u2026") : QString()) + middle + (tail ? QStringLiteral("\u2026") : QString());
    }
    return names;
}

} // namespace

LayerCompareView::LayerCompareView(QWidget* parent) : QWidget(parent)
{
    m_chart = new ChartView(tr("SQNR along the network"));
    m_chart->setObjectName(QStringLiteral("layerCompareChart"));
    QChart* c = m_chart->chart();
    m_titleBrush = c->titleBrush();
    m_propagated = new QLineSeries;
    m_propagated->setName(tr("whole model quantized"));
    m_alone = new QScatterSeries;
    m_alone->setName(tr("this layer alone quantized"));
    m_alone->setMarkerSize(9);
    m_threshold = new QLineSeries;
    m_threshold->setName(tr("threshold"));
    QPen dashed(QColor(150, 150, 150));
    dashed.setStyle(Qt::DashLine);
    m_threshold->setPen(dashed);
    m_propagated->setPointsVisible(true);
    for (QXYSeries* s : std::initializer_list<QXYSeries*>{m_propagated, m_alone, m_threshold}) c->addSeries(s);
    // The layers by name along the x axis (it showed graph indices, and a user had to hover
    // each point to learn which layer "17" was): one label on each layer's point.
    m_x = new QCategoryAxis;
    m_x->setTitleText(tr("layer (graph order)"));
    m_x->setTitleVisible(false); // with the layers' names (labelLayers)
    m_x->setLabelsPosition(QCategoryAxis::AxisLabelsPositionOnValue);
    m_x->setRange(-0.4, 10.4);
    m_y = new QValueAxis;
    m_y->setLabelFormat(QStringLiteral("%.0f"));
    m_y->setTickType(QValueAxis::TicksDynamic); // every 10 dB (0..45 in five ticks read "11.3 22.5 33.8")
    m_y->setTickAnchor(0);
    m_y->setTickInterval(10);
    m_y->setRange(0, 60);
    m_y->setTitleText(tr("SQNR vs FP32 (dB)"));
    ChartView::styleAxis(m_x);
    ChartView::styleAxis(m_y);
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_y, Qt::AlignLeft);
    for (QXYSeries* s : std::initializer_list<QXYSeries*>{m_propagated, m_alone, m_threshold}) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    c->legend()->setAlignment(Qt::AlignBottom);
    m_chart->setEmptyMessage(tr("Select a finished run and click Compare: each layer's output of the quantized model "
                                "against FP32, propagated and alone."));
    for (QXYSeries* s : std::initializer_list<QXYSeries*>{m_propagated, m_alone})
        connect(s, &QXYSeries::hovered, this, [this](const QPointF& p, bool on) {
            const auto i = static_cast<std::size_t>(std::lround(p.x()));
            if (on && i < m_report.layers.size()) {
                const LayerComparison& l = m_report.layers[i];
                m_chart->setToolTip(QStringLiteral("%1 (%2): %3 dB propagated, %4 dB alone")
                                        .arg(QString::fromStdString(l.layer), QString::fromStdString(l.kind))
                                        .arg(l.sqnrDb, 0, 'f', 1)
                                        .arg(l.aloneSqnrDb, 0, 'f', 1));
            }
        });

    m_format = new QComboBox;
    m_format->setObjectName(QStringLiteral("compareFormat"));
    for (const char* f : {"int8", "int6", "int4", "int3", "int2"}) m_format->addItem(QString::fromLatin1(f), QString::fromLatin1(f));
    m_format->setCurrentIndex(2);
    m_format->setToolTip(tr("Weight format of the post-training quantization compared with FP32."));
    m_granularity = new QComboBox;
    m_granularity->setObjectName(QStringLiteral("compareGranularity"));
    m_granularity->addItem(tr("channel-wise"), QStringLiteral("channel"));
    m_granularity->addItem(tr("tensor-wise"), QStringLiteral("tensor"));
    m_granularity->setToolTip(tr("Granularity of the weight scales (a run's plan brings its own)."));
    connect(m_format, &QComboBox::currentIndexChanged, this, &LayerCompareView::followFormat);
    m_thresholdDb = new QDoubleSpinBox;
    m_thresholdDb->setRange(0, 100);
    m_thresholdDb->setValue(20);
    m_thresholdDb->setSuffix(QStringLiteral(" dB"));
    m_thresholdDb->setToolTip(tr("Layers whose output SQNR falls below this are flagged; the first one is named."));
    m_compare = new QPushButton(tr("Compare"));
    m_compare->setObjectName(QStringLiteral("compareButton"));
    m_compare->setEnabled(false);
    m_compare->setToolTip(tr("Select a finished run in the runs table first."));
    connect(m_compare, &QPushButton::clicked, this, &LayerCompareView::compare);
    m_status = new QLabel;
    m_status->setWordWrap(true);
    m_status->setObjectName(QStringLiteral("compareStatus"));

    auto* bar = new QHBoxLayout;
    bar->addWidget(new QLabel(tr("Weights")));
    bar->addWidget(m_format);
    bar->addWidget(m_granularity);
    auto* activations = new QLabel(tr("uint8 activations, threshold"));
    activations->setWordWrap(true); // two lines in a narrow window (its minimum width set the window's past a 1024-pixel screen)
    bar->addWidget(activations);
    bar->addWidget(m_thresholdDb);
    bar->addWidget(m_compare);
    bar->addStretch(1);
    auto* v = new QVBoxLayout(this);
    v->addLayout(bar);
    v->addWidget(m_status);
    v->addWidget(m_chart, 1);
}

void LayerCompareView::labelLayers()
{
    for (const QString& l : m_x->categoriesLabels()) m_x->remove(l);
    m_x->setStartValue(-0.4);
    const std::size_t n = m_report.layers.size();
    // A category axis without categories drew its title at the chart's top left, outside the plot
    // (tester 12 #14): shown with the layers' names only.
    m_x->setTitleVisible(n > 0);
    if (n == 0) return;
    // As many names as fit side by side turned upright (every k-th layer's when there are more),
    // elided when long.
    const QFontMetrics fm(m_x->labelsFont());
    const double plot = std::max(100.0, m_chart->width() - 110.0); // the plot area: the chart less the y axis and margins
    const double room = std::max(1.0, plot / double(n)); // pixels between two layers' points
    // Qt Charts gives each label the axis's width over the labels, less 2 x 5 pixels of padding,
    // and cuts what does not fit to "...": an upright name needs its line height and that.
    const int every = std::max(1, static_cast<int>(std::ceil((fm.height() + 14) / room)));
    // A start and an end every name shares become "…" ("…block12…" for features.block12.dw.conv)
    // when a name is long; then one way of eliding for every name, the first that keeps them
    // apart: in the middle ("layer3.0.…conv2"), else the end, else the start; else whole.
    std::vector<std::size_t> shown;
    QStringList names;
    for (std::size_t i = 0; i < n; i += std::size_t(every)) {
        shown.push_back(i);
        names << QString::fromStdString(m_report.layers[i].layer);
    }
    // Upright names take height from the plot, and Qt Charts gives the x axis at most 40 % of what
    // the title and legend leave, its title and padding included (about 80 and 50 pixels): longer
    // names were cut to "layer3.shor...". At most 24 characters' width in any case: at 16,
    // resnet8's "layer2.shortcut_bn" read "layer2…cut_bn"; longer ones (ONNX imports' paths) are
    // elided, and hovering a point names its layer whole.
    const int room24 = fm.horizontalAdvance(QStringLiteral("features.block12.dw.conv"));
    const int longest = std::min(room24, std::max(40, static_cast<int>(0.4 * (m_chart->height() - 80) - 50)));
    const auto tooLong = [&](const QString& name) { return fm.horizontalAdvance(name) > longest; };
    names = withoutSharedEnds(names, tooLong);
    QStringList labels;
    // Modes: elided in the middle, at the end, at the start, then the path's parts but the last
    // shortened to their initial and number ("l2.shortcut") and elided in the middle; else whole.
    for (int mode = 0; mode < 5; ++mode) {
        labels.clear();
        for (const QString& name : names) {
            if (!tooLong(name) || mode == 4) labels << name;
            else if (mode == 3) labels << fm.elidedText(abbreviated(name), Qt::ElideMiddle, longest);
            else labels << fm.elidedText(name, mode == 0 ? Qt::ElideMiddle : mode == 1 ? Qt::ElideRight : Qt::ElideLeft, longest);
        }
        if (QSet<QString>(labels.begin(), labels.end()).size() == labels.size()) break;
    }
    int widest = 0;
    for (qsizetype k = 0; k < labels.size(); ++k) {
        if (m_x->categoriesLabels().contains(labels[k])) continue; // the axis holds each label once
        m_x->append(labels[k], double(shown[std::size_t(k)]));
        widest = std::max(widest, fm.horizontalAdvance(labels[k]));
    }
    // Flat when the names fit between their points, else upright (slanted ones were cut to fit
    // the same width).
    m_x->setLabelsAngle(widest + 14 <= room * every ? 0 : -90);
}

void LayerCompareView::resizeEvent(QResizeEvent* event)
{
    QWidget::resizeEvent(event);
    labelLayers(); // how many names fit depends on the chart's width
}

LayerCompareView::~LayerCompareView()
{
    if (m_worker.joinable()) m_worker.join();
}

QString LayerCompareView::statusText() const { return m_status->text(); }

QString LayerCompareView::chartTitle() const { return m_chart->chart()->title(); }

void LayerCompareView::followFormat()
{
    // The run's own settings bring their granularity: the greyed box shows it (it kept showing
    // "channel-wise" beside "the run's settings (int8, tensor)"); a uniform format takes the
    // granularity chosen before.
    const bool plan = m_format->currentData().toString() == QStringLiteral("plan");
    const int runItem = m_granularity->findData(QStringLiteral("run"));
    if (plan && runItem >= 0) {
        if (m_granularity->currentIndex() != runItem) m_uniformGranularity = m_granularity->currentData().toString();
        m_granularity->setCurrentIndex(runItem);
    } else if (m_granularity->currentIndex() == runItem || m_granularity->currentIndex() < 0) {
        m_granularity->setCurrentIndex(std::max(0, m_granularity->findData(m_uniformGranularity)));
    }
    m_granularity->setEnabled(!plan);
}

QString LayerCompareView::noModelText() const
{
    return m_runId && !m_bundle ? tr("Run #%1 has no model to compare: %2.").arg(m_runId).arg(m_noModel) : QString();
}

void LayerCompareView::markReport()
{
    if (m_reportRun == 0) return; // nothing drawn, or a report of no run (tests)
    // A selected run without a model: Compare is greyed out, and the line says why (same words as
    // File > Export's) instead of leaving the last result unexplained (tester 12 #5).
    const QString noModel = noModelText();
    if (m_reportRun == m_runId) {
        m_chart->chart()->setTitle(m_reportTitle);
        m_chart->chart()->setTitleBrush(m_titleBrush);
        m_status->setText(m_reportStatus);
        return;
    }
    // Another run selected: the chart still holds run #m_reportRun's comparison beside the boxes
    // that now show the selected run's settings, and nothing said so.
    m_chart->chart()->setTitle(m_runId ? tr("Out of date (run #%1 is selected): %2").arg(m_runId).arg(m_reportTitle)
                                       : tr("Out of date (run #%1 is not selected): %2").arg(m_reportRun).arg(m_reportTitle));
    m_chart->chart()->setTitleBrush(QColor(0xa0, 0x40, 0x00));
    if (!noModel.isEmpty())
        m_status->setText(tr("%1 <b>Out of date:</b> the chart is run #%2's. (Run #%2: %3)").arg(noModel).arg(m_reportRun).arg(m_reportStatus));
    else
        m_status->setText(m_runId ? tr("<b>Out of date:</b> the chart is run #%1's; run #%2 is selected, click Compare to "
                                       "compare it. (Run #%1: %3)")
                                        .arg(m_reportRun)
                                        .arg(m_runId)
                                        .arg(m_reportStatus)
                                  : tr("<b>Out of date:</b> the chart is run #%1's, which is no longer selected. (Run #%1: %2)")
                                        .arg(m_reportRun)
                                        .arg(m_reportStatus));
}

void LayerCompareView::setRun(int runId, ExportBundlePtr bundle, const QString& noModel)
{
    m_runId = runId;
    m_bundle = std::move(bundle);
    m_noModel = m_bundle ? QString() : noModel;
    // A quantized run (PTQ or QAT on an integer grid, or any per-layer plan) is compared at its own
    // settings first: its format, granularity, calibrations and plan (tester 13: a tensor-wise run
    // was compared channel-wise, at the tab's int4, and blamed another layer than the CLI). The
    // uniform formats stay on offer.
    bool own = false;
    QString label;
    if (m_bundle) {
        const PrecisionConfig& p = m_bundle->config.precision;
        const bool intGrid = (p.strategy == Strategy::Ptq || p.strategy == Strategy::Qat) && needsScale(findFormat(p.format));
        own = !p.layers.empty() || intGrid;
        label = !p.layers.empty() ? tr("the run's plan")
                                  : tr("the run's settings (%1, %2)").arg(QString::fromStdString(p.format), QString::fromStdString(p.granularity));
    }
    const int planIndex = m_format->findData(QStringLiteral("plan"));
    if (planIndex >= 0) m_format->removeItem(planIndex);
    const int runItem = m_granularity->findData(QStringLiteral("run"));
    if (runItem >= 0) {
        if (m_granularity->currentIndex() == runItem) m_granularity->setCurrentIndex(m_granularity->findData(m_uniformGranularity));
        m_granularity->removeItem(runItem);
    }
    if (own) {
        const PrecisionConfig& p = m_bundle->config.precision;
        // The run's granularity, shown (greyed) while its settings are compared; never picked by hand.
        m_granularity->insertItem(0, p.layers.empty() ? granularityLabel(p.granularity) : tr("the plan's"), QStringLiteral("run"));
        if (auto* items = qobject_cast<QStandardItemModel*>(m_granularity->model())) items->item(0)->setEnabled(false);
        m_format->insertItem(0, label, QStringLiteral("plan"));
        m_format->setCurrentIndex(0);
    }
    followFormat();
    m_compare->setEnabled(m_bundle != nullptr && !m_busy);
    m_compare->setToolTip(m_bundle   ? tr("Quantize run #%1's FP32 model and compare it layer by layer.").arg(runId)
                          : runId ? noModelText()
                                  : tr("Select a finished run in the runs table first."));
    if (m_reportRun == 0 && !m_busy) m_status->setText(noModelText()); // no chart yet: the line alone says why
    markReport();
}

void LayerCompareView::compare()
{
    if (!m_bundle || m_busy) return;
    m_busy = true;
    m_compare->setEnabled(false);
    const ExportBundlePtr bundle = m_bundle;
    const std::string format = m_format->currentData().toString().toStdString();
    const std::string granularity = m_granularity->currentData().toString().toStdString();
    const double threshold = m_thresholdDb->value();
    const std::size_t threads = std::max<std::size_t>(1, bundle->config.threads);
    const bool plan = format == "plan";
    const int runId = m_runId;
    const QString title = plan ? tr("Run #%1 with its per-layer plan (%2 layers of their own, default %3)")
                                     .arg(m_runId)
                                     .arg(bundle->config.precision.layers.size())
                                     .arg(QString::fromStdString(bundle->config.precision.format))
                               : tr("Run #%1, %2 weights (%3), uint8 activations")
                                     .arg(m_runId)
                                     .arg(QString::fromStdString(format), m_granularity->currentText());
    m_status->setText(tr("Comparing run #%1 on %2 test images\u2026").arg(m_runId).arg(kImages));
    QPointer<LayerCompareView> self(this);
    if (m_worker.joinable()) m_worker.join(); // the previous one has finished (m_busy was false)
    m_worker = std::thread([self, bundle, format, granularity, threshold, threads, title, plan, runId] {
        LayerComparisonReport report;
        QString error;
        try {
            const Dataset& data = *bundle->data;
            std::unique_ptr<Model> model = buildModel(bundle->fp32);
            PrecisionConfig pc;
            pc.activationCalibration = "minmax";
            if (plan) { // the run's own settings and plan, calibrated as PTQ calibrates
                const PrecisionConfig& run = bundle->config.precision;
                pc.format = run.format;
                pc.granularity = run.granularity;
                pc.calibration = run.calibration;
                pc.percentile = run.percentile;
                pc.activationFormat = run.activationFormat;
                pc.activationCalibration = run.activationCalibration;
                pc.narrowRange = run.narrowRange;
                pc.layers = run.layers;
            } else {
                pc.format = format;
                pc.granularity = granularity;
                pc.activationFormat = "uint8";
            }
            pc.strategy = Strategy::Ptq;
            tbb::task_arena arena(static_cast<int>(threads));
            arena.execute([&] {
                QuantSim sim(*model, pc, findFormat(pc.format));
                sim.quantizeWeights(Rounding::Nearest, 0);
                sim.calibrate(data, data.train, std::min(kCalibImages, data.train.size()), 64);
                sim.setObserving(false);
                Tensor x;
                std::vector<std::int32_t> y;
                data.makeBatch(data.test, 0, std::min(kImages, data.test.size()), x, y);
                report = compareLayers(*model, sim, x, threshold);
            });
        } catch (const std::exception& e) {
            error = coreMessage(e);
        }
        postToGuiThread([self, report, error, title, runId] {
            if (!self) return;
            self->m_busy = false;
            self->m_compare->setEnabled(self->m_bundle != nullptr);
            if (!error.isEmpty()) {
                self->m_status->setText(tr("Cannot compare run #%1: %2").arg(runId).arg(error));
                emit self->compareFinished(false, error);
                return;
            }
            self->showReport(report, title, runId);
            emit self->compareFinished(true, self->m_status->text());
        });
    });
}

void LayerCompareView::showReport(const LayerComparisonReport& r, const QString& title, int runId)
{
    m_report = r;
    QList<QPointF> prop, alone;
    double lo = kCapDb, hi = 0.0;
    int exact = 0; // points drawn at kCapDb
    for (std::size_t i = 0; i < r.layers.size(); ++i) {
        prop.append(QPointF(double(i), capped(r.layers[i].sqnrDb)));
        exact += capped(r.layers[i].sqnrDb) >= kCapDb;
        // +inf alone: the layer quantizes nothing itself, and has no alone point
        if (std::isfinite(r.layers[i].aloneSqnrDb)) {
            alone.append(QPointF(double(i), capped(r.layers[i].aloneSqnrDb)));
            hi = std::max(hi, capped(r.layers[i].aloneSqnrDb));
            exact += capped(r.layers[i].aloneSqnrDb) >= kCapDb;
        }
        lo = std::min({lo, capped(r.layers[i].sqnrDb), capped(r.layers[i].aloneSqnrDb)});
        hi = std::max(hi, capped(r.layers[i].sqnrDb));
    }
    m_propagated->replace(prop);
    m_alone->replace(alone);
    const double last = r.layers.empty() ? 1.0 : double(r.layers.size() - 1);
    m_threshold->replace({QPointF(0, r.thresholdDb), QPointF(last, r.thresholdDb)});
    m_x->setRange(-0.4, std::max(1.0, last) + 0.4); // the end points' markers whole, not cut by the frame
    labelLayers();
    // The top covers every drawn point, the exact ones at kCapDb included.
    m_y->setRange(std::max(0.0, std::floor(std::min(lo, r.thresholdDb) / 10.0) * 10.0 - 5.0),
                  std::ceil(std::max(hi, r.thresholdDb) / 10.0) * 10.0 + 5.0);
    m_chart->chart()->setTitle(title);
    m_chart->setEmptyMessage(r.layers.empty() ? tr("The model has no layers.") : QString());
    const auto name = [&](long i) { return QString::fromStdString(r.layers[static_cast<std::size_t>(i)].layer); };
    QString s = r.firstBelow >= 0 ? tr("First layer below %1 dB: <b>%2</b> (layer %3, propagated %4 dB)")
                                        .arg(r.thresholdDb)
                                        .arg(name(r.firstBelow))
                                        .arg(r.firstBelow)
                                        .arg(r.layers[static_cast<std::size_t>(r.firstBelow)].sqnrDb, 0, 'f', 1)
                                  : tr("No layer falls below %1 dB end to end.").arg(r.thresholdDb);
    if (r.firstAloneBelow >= 0) s += tr("; alone, <b>%1</b> first falls below it.").arg(name(r.firstAloneBelow));
    s += tr(" %1 test images.").arg(r.images);
    // Only when there are such points: the note stood under an axis that stopped at 65 dB, and a
    // user looked for points at 100 that were not there.
    if (exact == 1) s += tr(" The point at %1 dB (the top) is exact: no error yet.").arg(kCapDb);
    else if (exact > 1) s += tr(" The %1 points at %2 dB (the top) are exact: no error yet.").arg(exact).arg(kCapDb);
    m_status->setText(s);
    m_reportRun = runId;
    m_reportTitle = title;
    m_reportStatus = s;
    markReport();
}

} // namespace quantscope
