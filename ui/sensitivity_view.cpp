// TBB first: Qt defines emit as a macro, which oneTBB's profiling.h uses as a name.
#include <tbb/task_arena.h>

#include "sensitivity_view.h"

#include "core_message.h"
#include "flow_layout.h"
#include "format_text.h"
#include "gui_call.h"
#include "quant_catalog.h"
#include "quant_charts.h"

#include "quant/format.h"
#include "train/quant_sim.h"

#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPointer>
#include <QProgressBar>
#include <QPushButton>
#include <QResizeEvent>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

namespace quantscope {

namespace {

constexpr double kMinScalePoints = 2.0; // the red end of the colour scale is at least this drop

QColor mix(const QColor& a, const QColor& b, double t)
{
    return QColor::fromRgbF(float(a.redF() + (b.redF() - a.redF()) * t), float(a.greenF() + (b.greenF() - a.greenF()) * t),
                            float(a.blueF() + (b.blueF() - a.blueF()) * t));
}

QString sqnrText(double db) { return std::isfinite(db) ? QStringLiteral("%1 dB").arg(db, 0, 'f', 1) : QStringLiteral("exact"); }

} // namespace

QColor SensitivityView::dropColor(double drop, double worst)
{
    const QColor good(0xe3, 0xf4, 0xe1), mid(0xff, 0xe0, 0x8a), bad(0xe0, 0x4a, 0x3a);
    const double t = std::clamp(drop / std::max(worst, 1e-9), 0.0, 1.0);
    return t < 0.5 ? mix(good, mid, t / 0.5) : mix(mid, bad, (t - 0.5) / 0.5);
}

SensitivityView::SensitivityView(InputProvider input, QWidget* parent) : QWidget(parent), m_input(std::move(input))
{
    // The integer formats on one row, the float, MX and ternary ones on the next; each wraps in a
    // narrow tab (at 1024x700 the second row set the tab's minimum width past the window).
    FlowLayout* formatRows[2] = {new FlowLayout, new FlowLayout};
    for (int row = 0; row < 2; ++row) {
        for (const QString& f : row == 0 ? analysisIntegerFormats() : analysisOtherFormats()) {
            auto* b = new QCheckBox(f);
            b->setObjectName(QStringLiteral("sensFormat_%1").arg(f));
            b->setChecked(f == QLatin1String("int8") || f == QLatin1String("int4") || f == QLatin1String("int2"));
            const FormatChoice* c = formatChoice(f);
            b->setToolTip(tr("Measure every layer at %1 weights%2").arg(f, c ? QStringLiteral(": ") + c->description : QStringLiteral(".")));
            m_formatBoxes.append(b);
            formatRows[row]->addWidget(b);
        }
    }
    m_granularity = new QComboBox;
    m_granularity->setObjectName(QStringLiteral("sensGranularity"));
    m_granularity->addItem(tr("channel-wise"), QStringLiteral("channel"));
    m_granularity->addItem(tr("tensor-wise"), QStringLiteral("tensor"));
    m_granularity->setToolTip(tr("How the quantized layer's weights share scales."));
    m_calibration = new QComboBox;
    m_calibration->setObjectName(QStringLiteral("sensCalibration"));
    for (const Choice& c : calibrationChoices())
        if (c.value != QLatin1String("moving-average")) {
            m_calibration->addItem(c.label, c.value);
            m_calibration->setItemData(m_calibration->count() - 1, c.tooltip, Qt::ToolTipRole);
        }
    m_calibration->setToolTip(tr("How the weight ranges are chosen (the activations': Activation ranges, above)."));
    // The CLI's --act-format: the quantized layer's inputs and outputs as it would run, or float
    // (tester 16 read uint8 rows as what the weights alone cost).
    m_activations = new QComboBox;
    m_activations->setObjectName(QStringLiteral("sensActivations"));
    m_activations->addItem(tr("uint8, as the layer runs"), QStringLiteral("uint8"));
    m_activations->addItem(tr("FP32: the weights alone"), QStringLiteral("fp32"));
    m_activations->setToolTip(tr("uint8: the quantized layer reads and writes uint8 activations, as an integer layer runs; that "
                                 "rounding is in every format's column alike. FP32: the activations stay float, so a cell "
                                 "measures the layer's weights alone."));
    m_mode = new QComboBox;
    m_mode->setObjectName(QStringLiteral("sensMode"));
    m_mode->addItem(tr("this layer alone quantized"), false);
    m_mode->addItem(tr("all but this layer quantized"), true);
    m_mode->setToolTip(tr("Alone: the other layers stay FP32, so a cell is what quantizing that layer costs. All but: every "
                          "other layer is quantized, so a cell is what keeping that layer in FP32 saves."));
    const RunControls rc = makeRunControls(
        QStringLiteral("sens"), tr("Run sensitivity"),
        tr("Quantize one layer at a time to each format (post-training) and measure the validation accuracy."),
        tr("Stop after the cell being measured; the cells done so far stay."),
        tr("Pick the formats and click Run: each Conv2d/Linear layer is quantized alone and measured."));
    m_run = rc.run;
    m_runTip = m_run->toolTip();
    m_stop = rc.stop;
    m_progress = rc.progress;
    m_status = rc.status;
    connect(m_run, &QPushButton::clicked, this, &SensitivityView::run);
    connect(m_stop, &QPushButton::clicked, this, &SensitivityView::stop);

    m_table = new QTableWidget;
    m_table->setObjectName(QStringLiteral("sensHeatmap"));
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSelectionMode(QAbstractItemView::SingleSelection);
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    // Rows share the height (a heatmap, not a list) but never get shorter than two lines of text.
    m_table->verticalHeader()->setMinimumSectionSize(2 * m_table->fontMetrics().height() + 12);
    m_table->verticalHeader()->setMaximumSectionSize(6 * m_table->fontMetrics().height());
    m_table->verticalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    m_table->setToolTip(tr("Click a cell for that layer's weight histogram at that format."));
    m_table->setStyleSheet(QStringLiteral("QTableWidget::item:selected { border: 2px solid #1f3b57; color: black; }"));
    connect(m_table, &QTableWidget::cellClicked, this, [this](int r, int c) { openHistogram(r, c); });

    m_legend = new QLabel;
    m_legend->setFixedSize(160, 14);
    m_legend->setStyleSheet(QStringLiteral("border: 1px solid #999; background: qlineargradient(x1:0, y1:0, x2:1, y2:0, "
                                           "stop:0 %1, stop:0.5 %2, stop:1 %3);")
                                .arg(dropColor(0, 1).name(), dropColor(0.5, 1).name(), dropColor(1, 1).name()));
    m_scaleEnd = new QLabel;
    m_legendRow = new QGridLayout;
    m_legendRow->setVerticalSpacing(2);
    m_legendRow->addWidget(new QLabel(tr("Accuracy drop against FP32:  0 pts")), 0, 0);
    m_legendRow->addWidget(m_legend, 0, 1);
    m_legendRow->addWidget(m_scaleEnd, 0, 2);
    // Wrapped: on one line it set the view's minimum width past a 1366-pixel window's tab; under
    // the scale in a narrow tab (placeCellText).
    m_cellText = new QLabel(tr("Cell text: drop in points, SQNR of the model's outputs. Click a cell for its histogram."));
    m_cellText->setWordWrap(true);
    m_cellText->setContentsMargins(16, 0, 0, 0);
    m_legendRow->addWidget(m_cellText, 0, 3);
    m_legendRow->setColumnStretch(3, 1);

    auto* g = new QGridLayout;
    auto* formatsLabel = new QLabel(tr("Formats"));
    formatsLabel->setMinimumHeight(m_formatBoxes.front()->sizeHint().height()); // level with the first row when they wrap
    g->addWidget(formatsLabel, 0, 0, Qt::AlignTop);
    g->addLayout(formatRows[0], 0, 1);
    g->addLayout(formatRows[1], 1, 1);
    // The options as label + field pairs on one row, wrapping in a narrow tab.
    auto* options = new FlowLayout(12);
    options->addWidget(labelledField(new QLabel(tr("Granularity")), m_granularity));
    options->addWidget(labelledField(new QLabel(tr("Calibration")), m_calibration));
    options->addWidget(labelledField(new QLabel(tr("Activations")), m_activations));
    options->addWidget(labelledField(new QLabel(tr("Mode")), m_mode));
    g->addLayout(options, 2, 0, 1, 2);
    g->setColumnStretch(1, 1);
    fitProgressText(m_progress, {tr("layer %1 of %2 \u00b7 cell %3 of %4").arg(88).arg(88).arg(888).arg(888)});
    m_runRow = runControlsRow(rc);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(0, 4, 0, 0); // as the search page: the tab's own margins are enough
    v->addLayout(g);
    v->addLayout(m_runRow);
    v->addWidget(m_table, 1);
    v->addLayout(m_legendRow);
}

SensitivityView::~SensitivityView() = default; // m_thread stops and joins

void SensitivityView::resizeEvent(QResizeEvent* e)
{
    QWidget::resizeEvent(e);
    fitWidth(e->size().width());
}

void SensitivityView::fitWidth(int width)
{
    placeRunStatus(m_runRow, RunControls{m_run, m_stop, m_progress, m_status}, width);
    placeCellText(width);
}

void SensitivityView::placeCellText(int width)
{
    // Beside the colour scale while it gets about 40 characters there; under it in a narrow tab,
    // where beside it the text was a column of five lines.
    int scale = 0;
    for (int c = 0; c < 3; ++c) scale += m_legendRow->itemAtPosition(0, c)->sizeHint().width() + m_legendRow->horizontalSpacing();
    const bool beside = width - scale - 16 >= 40 * m_cellText->fontMetrics().averageCharWidth();
    int r = 0, col = 0, rows = 0, cols = 0;
    m_legendRow->getItemPosition(m_legendRow->indexOf(m_cellText), &r, &col, &rows, &cols);
    if (beside == (r == 0)) return;
    m_legendRow->removeWidget(m_cellText);
    m_cellText->setContentsMargins(beside ? 16 : 0, 0, 0, 0);
    if (beside) m_legendRow->addWidget(m_cellText, 0, 3);
    else m_legendRow->addWidget(m_cellText, 1, 0, 1, 4);
}

QString SensitivityView::statusText() const { return m_status->text(); }

QStringList SensitivityView::formats() const
{
    QStringList out;
    for (QCheckBox* b : m_formatBoxes)
        if (b->isChecked()) out << b->text();
    return out;
}

void SensitivityView::setFormats(const QStringList& formats)
{
    for (QCheckBox* b : m_formatBoxes) b->setChecked(formats.contains(b->text()));
}

void SensitivityView::setBlocked(const QString& why)
{
    m_blocked = why;
    setRunEnabled(m_run, m_runTip, m_thread.running(), m_blocked);
}

void SensitivityView::setBusy(bool busy)
{
    setRunEnabled(m_run, m_runTip, busy, m_blocked);
    m_stop->setEnabled(busy);
    for (QWidget* w : std::initializer_list<QWidget*>{m_granularity, m_calibration, m_activations, m_mode}) w->setEnabled(!busy);
    for (QCheckBox* b : m_formatBoxes) b->setEnabled(!busy);
    emit busyChanged(busy);
}

void SensitivityView::run()
{
    if (m_thread.running()) return;
    SensitivityOptions opt;
    opt.formats.clear();
    for (const QString& f : formats()) opt.formats.push_back(f.toStdString());
    if (opt.formats.empty()) {
        m_status->setText(tr("Tick at least one format."));
        return;
    }
    QString error;
    AnalysisInputPtr in = m_input ? m_input(&error) : nullptr;
    if (!in) {
        m_status->setText(error);
        emit analysisFinished(false, error);
        return;
    }
    opt.granularity = m_granularity->currentData().toString().toStdString();
    opt.calibration = m_calibration->currentData().toString().toStdString();
    opt.activationCalibration = in->activationCalibration;
    opt.activationFormat = m_activations->currentData().toString().toStdString();
    opt.allButOne = m_mode->currentData().toBool();
    opt.calibImages = in->data->train.size();
    m_running = in;
    setBusy(true);
    m_progress->setRange(0, 1);
    m_progress->setValue(0);
    m_progress->setFormat(tr("measuring FP32\u2026"));
    m_status->setText(tr("%1: %2 validation images, %3 \u2026").arg(in->name, formatCount(double(in->data->validation.size())),
                                                                         m_mode->currentText()));
    QPointer<SensitivityView> self(this);
    m_thread.start([self, in, opt](const std::atomic<bool>& stop) {
        SensitivityReport r;
        QString error;
        try {
            std::unique_ptr<Model> model = in->makeModel();
            tbb::task_arena arena(static_cast<int>(std::max<std::size_t>(1, in->threads)));
            arena.execute([&] {
                r = analyzeSensitivity(*model, *in->data, in->data->validation, opt, [&](std::size_t done, std::size_t total) {
                    postToGuiThread([self, done, total] {
                        if (self) self->showProgress(done, total);
                    });
                    return !stop.load();
                });
            });
        } catch (const std::exception& e) {
            error = coreMessage(e);
        }
        postToGuiThread([self, r, opt, error] {
            if (self) self->showReport(r, opt, error);
        });
    });
}

void SensitivityView::stop()
{
    if (!m_thread.running()) return;
    m_thread.stop();
    m_status->setText(tr("Stopping after the cell being measured\u2026"));
}

void SensitivityView::showProgress(std::size_t done, std::size_t total)
{
    if (!m_thread.running() || total == 0) return;
    const std::size_t nf = std::max<std::size_t>(1, formats().size());
    m_progress->setRange(0, static_cast<int>(total));
    m_progress->setValue(static_cast<int>(done));
    const std::size_t layers = total / nf, layer = std::min(layers, done / nf + 1);
    const QString text = done >= total ? tr("%1 cells done").arg(total)
                                       : tr("layer %1 of %2 \u00b7 cell %3 of %4").arg(layer).arg(layers).arg(done + 1).arg(total);
    fitProgressText(m_progress, {text});
    m_progress->setFormat(text);
}

void SensitivityView::showReport(const SensitivityReport& r, const SensitivityOptions& opt, const QString& error)
{
    m_thread.finished();
    setBusy(false);
    const AnalysisInputPtr in = std::move(m_running);
    if (!error.isEmpty()) {
        m_progress->setFormat(tr("failed"));
        m_status->setText(tr("Cannot analyse: %1").arg(error));
        emit analysisFinished(false, error);
        return;
    }
    m_report = r;
    m_reportOptions = opt;
    m_reported = in;
    m_histModel.reset();
    const std::size_t nf = opt.formats.size();
    m_table->clear();
    m_table->setRowCount(static_cast<int>(r.layers.size()));
    m_table->setColumnCount(static_cast<int>(nf));
    QStringList cols, rows;
    for (const std::string& f : opt.formats) cols << QString::fromStdString(f);
    for (const std::string& l : r.layers) rows << QString::fromStdString(l);
    m_table->setHorizontalHeaderLabels(cols);
    m_table->setVerticalHeaderLabels(rows);
    double worst = kMinScalePoints;
    for (const SensitivityCell& c : r.cells) worst = std::max(worst, c.dropPoints);
    worst = std::ceil(worst);
    m_scaleEnd->setText(tr("%1 pts or more").arg(worst, 0, 'f', 0));
    for (std::size_t k = 0; k < r.layers.size() * nf; ++k) {
        auto* item = new QTableWidgetItem;
        item->setTextAlignment(Qt::AlignCenter);
        if (k < r.cells.size()) {
            const SensitivityCell& c = r.cells[k];
            // a gain reads as one ("drop -0.40 pts" was a double negative)
            item->setText((c.dropPoints < 0 ? tr("gain %1 pts\nSQNR %2").arg(-c.dropPoints, 0, 'f', 2)
                                            : tr("drop %1 pts\nSQNR %2").arg(c.dropPoints, 0, 'f', 2))
                              .arg(sqnrText(c.logitSqnrDb)));
            item->setBackground(dropColor(c.dropPoints, worst));
            item->setForeground(QColor(Qt::black));
            item->setToolTip(tr("%1 at %2 (%3)\nvalidation accuracy %4 (FP32 %5): drop %6 points\nlogit SQNR %7, KL %8 nats\nClick for the "
                                "weight histogram.")
                                 .arg(QString::fromStdString(c.layer), QString::fromStdString(c.format),
                                      opt.allButOne ? tr("every other layer quantized, this one FP32") : tr("this layer alone quantized"))
                                 .arg(formatPercent(c.accuracy, 2), formatPercent(r.fp32Accuracy, 2))
                                 .arg(c.dropPoints, 0, 'f', 2)
                                 .arg(sqnrText(c.logitSqnrDb))
                                 .arg(c.klDivergence, 0, 'g', 3));
        } else {
            item->setText(noValueText());
            item->setToolTip(tr("Not measured (stopped)."));
        }
        m_table->setItem(static_cast<int>(k / nf), static_cast<int>(k % nf), item);
    }
    m_table->resizeColumnsToContents();
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    const QString what = opt.allButOne ? tr("all but one layer quantized") : tr("one layer at a time");
    const QString acts = opt.activationFormat == "fp32"
                             ? tr("FP32 activations (the weights alone)")
                             : tr("%1 activations, %2 ranges")
                                   .arg(QString::fromStdString(opt.activationFormat), QString::fromStdString(opt.activationCalibration));
    QString s = tr("<b>%1</b>: FP32 %2 on %3 validation images%4; %5, %6 weights, %7 calibration, %8; %9 cells in %10.")
                    .arg(in->name, formatPercent(r.fp32Accuracy, 2), formatCount(double(r.images)),
                         in->heldOut ? QString() : in->bundle ? tr(" (drawn from the images the run trained on)") : tr(" (drawn from the training set)"), what,
                         m_granularity->itemText(m_granularity->findData(QString::fromStdString(opt.granularity))),
                         QString::fromStdString(opt.calibration), acts)
                    .arg(r.cells.size())
                    .arg(formatSeconds(r.seconds));
    if (r.stopped) s += tr(" Stopped: %1 of %2 cells measured.").arg(r.cells.size()).arg(r.layers.size() * nf);
    m_status->setText(s);
    m_progress->setRange(0, static_cast<int>(std::max<std::size_t>(1, r.layers.size() * nf)));
    m_progress->setValue(static_cast<int>(r.cells.size()));
    m_progress->setFormat(r.stopped ? tr("stopped at %1 of %2").arg(r.cells.size()).arg(r.layers.size() * nf)
                                    : tr("%1 cells done").arg(r.cells.size()));
    emit analysisFinished(true, m_status->text());
}

bool SensitivityView::openHistogram(int row, int column)
{
    const std::size_t nf = m_reportOptions.formats.size();
    const std::size_t k = static_cast<std::size_t>(row) * nf + static_cast<std::size_t>(column);
    if (!m_reported || row < 0 || column < 0 || k >= m_report.layers.size() * nf) return false;
    const std::string layer = m_report.layers[static_cast<std::size_t>(row)];
    const std::string format = m_reportOptions.formats[static_cast<std::size_t>(column)];
    LayerStats found;
    bool ok = false;
    try {
        if (!m_histModel) m_histModel = m_reported->makeModel();
        // This layer alone at the cell's format: its weights are what the cell quantized.
        PrecisionConfig pc;
        pc.strategy = Strategy::Ptq;
        pc.format = "fp32";
        pc.granularity = m_reportOptions.granularity;
        pc.calibration = m_reportOptions.calibration;
        LayerOverride o;
        o.layer = layer;
        o.format = format;
        o.granularity = m_reportOptions.granularity;
        o.calibration = m_reportOptions.calibration;
        pc.layers = {o};
        QuantSim sim(*m_histModel, pc, findFormat(pc.format));
        sim.quantizeWeights(Rounding::Nearest, 0);
        for (LayerStats& s : sim.stats(0))
            if (s.layer == layer && s.tensor == "weight") {
                found = std::move(s);
                ok = true;
            }
        sim.clearWeights();
    } catch (const std::exception& e) {
        m_status->setText(tr("Cannot show the histogram of %1: %2").arg(QString::fromStdString(layer), coreMessage(e)));
        return false;
    }
    if (!ok) {
        m_status->setText(tr("%1 has no quantized weights at %2.").arg(QString::fromStdString(layer), QString::fromStdString(format)));
        return false;
    }
    m_histStats = std::move(found);
    if (!m_histDialog) {
        m_histDialog = new QDialog(this);
        m_histDialog->setObjectName(QStringLiteral("sensHistogramDialog"));
        m_histDialog->resize(760, 480);
        m_histCaption = new QLabel;
        m_histCaption->setWordWrap(true);
        m_histChart = new HistogramChart;
        auto* log = new QCheckBox(tr("log scale"));
        log->setChecked(true); // the few weights at the outer levels of a narrow grid stay visible
        connect(log, &QCheckBox::toggled, this, [this](bool on) { m_histChart->setStats(&m_histStats, on); });
        auto* v = new QVBoxLayout(m_histDialog);
        auto* top = new QHBoxLayout;
        top->addWidget(m_histCaption, 1);
        top->addWidget(log);
        v->addLayout(top);
        v->addWidget(m_histChart, 1);
        m_histDialog->setProperty("logBox", QVariant::fromValue<QObject*>(log));
    }
    const auto* log = qobject_cast<QCheckBox*>(m_histDialog->property("logBox").value<QObject*>());
    m_histChart->setStats(&m_histStats, log && log->isChecked());
    m_histChart->chart()->setTitle(tr("%1 at %2 (%3, %4 calibration): FP32 vs quantized weights")
                                       .arg(QString::fromStdString(layer), QString::fromStdString(format),
                                            QString::fromStdString(m_histStats.granularity), QString::fromStdString(m_reportOptions.calibration)));
    const SensitivityCell& c = m_report.cells.size() > k ? m_report.cells[k] : SensitivityCell{};
    m_histDialog->setWindowTitle(tr("%1 at %2 \u2014 weight histogram").arg(QString::fromStdString(layer), QString::fromStdString(format)));
    QString caption = statsCaption(m_histStats);
    if (k < m_report.cells.size())
        caption += (m_reportOptions.allButOne ? tr("<br>All layers but this one at this format: validation accuracy %1, drop %2 points, logit SQNR %3.")
                                              : tr("<br>This layer alone at this format: validation accuracy %1, drop %2 points, logit SQNR %3."))
                       .arg(formatPercent(c.accuracy, 2))
                       .arg(c.dropPoints, 0, 'f', 2)
                       .arg(sqnrText(c.logitSqnrDb));
    m_histCaption->setText(caption);
    m_histDialog->show();
    m_histDialog->raise();
    return true;
}

} // namespace quantscope
