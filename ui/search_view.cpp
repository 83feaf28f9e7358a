// TBB first: Qt defines emit as a macro, which oneTBB's profiling.h uses as a name.
#include <tbb/task_arena.h>

#include "search_view.h"

#include "core_message.h"
#include "flow_layout.h"
#include "format_text.h"
#include "gui_call.h"
#include "pareto_chart.h"
#include "quant_catalog.h"

#include "analysis/plan_eval.h"
#include "quant/plan_size.h"
#include "quant/precision_plan.h"

#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFontMetrics>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPointer>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollBar>
#include <QSpinBox>
#include <QResizeEvent>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <limits>

namespace quantscope {

namespace {

const char* const kCalibrations[] = {"minmax", "mse", "percentile"};

} // namespace

struct SearchView::Outcome {
    MixedSearchReport report;
    MixedSearchOptions options;
    std::shared_ptr<const Model> model;
    std::uint64_t fp32Bytes = 0;
    double testAccuracy = std::numeric_limits<double>::quiet_NaN();
    std::size_t testImages = 0;
    QString error;
};

SearchView::SearchView(InputProvider input, QWidget* parent) : QWidget(parent), m_input(std::move(input))
{
    // The integer formats on one row, the float, MX and ternary ones on the next; each wraps in a
    // narrow tab (at 1024x700 they set the tab's minimum width past the window).
    FlowLayout* formatRows[2] = {new FlowLayout, new FlowLayout};
    for (int row = 0; row < 2; ++row) {
        for (const QString& f : row == 0 ? analysisIntegerFormats() : analysisOtherFormats()) {
            auto* b = new QCheckBox(f);
            b->setObjectName(QStringLiteral("searchFormat_%1").arg(f));
            b->setChecked(row == 0 && f != QLatin1String("int6") && f != QLatin1String("int5"));
            const FormatChoice* c = formatChoice(f);
            b->setToolTip(tr("A layer may take %1 weights%2").arg(f, c ? QStringLiteral(": ") + c->description : QStringLiteral(".")));
            m_formatBoxes.append(b);
            formatRows[row]->addWidget(b);
        }
    }
    auto* calibs = new QHBoxLayout;
    for (const char* c : kCalibrations) {
        auto* b = new QCheckBox(QString::fromLatin1(c));
        b->setObjectName(QStringLiteral("searchCalib_%1").arg(QString::fromLatin1(c)));
        b->setChecked(std::string(c) == "minmax");
        b->setToolTip(tr("A layer's weight ranges may come from %1 calibration (each format is tried with each ticked calibration).")
                          .arg(QString::fromLatin1(c)));
        m_calibBoxes.append(b);
        calibs->addWidget(b);
    }
    m_granularity = new QComboBox;
    m_granularity->setObjectName(QStringLiteral("searchGranularity"));
    m_granularity->addItem(tr("channel-wise"), QStringLiteral("channel"));
    m_granularity->addItem(tr("tensor-wise"), QStringLiteral("tensor"));
    m_granularity->setToolTip(tr("The granularity every candidate uses."));
    m_budgetKind = new QComboBox;
    m_budgetKind->setObjectName(QStringLiteral("searchBudgetKind"));
    m_budgetKind->addItem(tr("max accuracy drop"), int(Budget::MaxDrop));
    m_budgetKind->addItem(tr("max size (% of FP32)"), int(Budget::MaxPercent));
    m_budgetKind->addItem(tr("max size (bytes)"), int(Budget::MaxBytes));
    m_budgetKind->setToolTip(tr("Accuracy budget: the smallest plan within this many points of FP32 (validation) is chosen. "
                                "Size budget: the most accurate plan at most this large is chosen."));
    m_budget = new QDoubleSpinBox;
    m_budget->setObjectName(QStringLiteral("searchBudget"));
    m_maxEvals = new QSpinBox;
    m_maxEvals->setObjectName(QStringLiteral("searchMaxEvals"));
    m_maxEvals->setRange(1, 10000);
    m_maxEvals->setValue(80);
    m_maxEvals->setToolTip(tr("Whole plans evaluated on the validation images, at most (the one-layer ranking comes on top)."));
    connect(m_budgetKind, &QComboBox::currentIndexChanged, this, &SearchView::updateBudgetSpin);
    updateBudgetSpin();

    const RunControls rc = makeRunControls(
        QStringLiteral("search"), tr("Run search"),
        tr("Greedy descent from the widest format: moves ranked by accuracy lost per byte saved, each verified."),
        tr("Stop after the plan being evaluated; the plans evaluated so far stay."),
        tr("Pick the candidate formats and a budget, then Run search."));
    m_run = rc.run;
    m_runTip = m_run->toolTip();
    m_stop = rc.stop;
    m_progress = rc.progress;
    m_status = rc.status;
    connect(m_run, &QPushButton::clicked, this, &SearchView::run);
    connect(m_stop, &QPushButton::clicked, this, &SearchView::stop);

    m_chart = new ParetoChart;
    m_chart->setObjectName(QStringLiteral("paretoChart"));
    // Tall enough for a 150-pixel plot under a two-line title (the legend is at the right);
    // squeezed to less, its y axis read "validation accura...". With the controls above it, this
    // fits a 1366x768 window's Analysis tab (at 330 the tab scrolled to it).
    m_chart->setMinimumHeight(240);
    connect(m_chart, &ParetoChart::planClicked, this, &SearchView::selectPlan);
    connect(m_chart, &ParetoChart::titleFitted, this, &SearchView::showSummary);
    m_planTitle = new QLabel(tr("The chosen plan appears here; click any point to see its plan."));
    m_planTitle->setObjectName(QStringLiteral("searchPlanTitle"));
    m_planTitle->setWordWrap(true);
    m_planTable = new QTableWidget(0, 4);
    m_planTable->setObjectName(QStringLiteral("searchPlanTable"));
    m_planTable->setHorizontalHeaderLabels({tr("layer"), tr("weights"), tr("calibration"), tr("bytes")});
    m_planTable->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_planTable->setSelectionMode(QAbstractItemView::NoSelection);
    m_planTable->verticalHeader()->hide();
    m_planTable->setTextElideMode(Qt::ElideMiddle); // "Block_3.…Conv2d_14": both ends of a module path tell
    m_planTable->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_planTable->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_save = new QPushButton(tr("Save plan\u2026"));
    m_save->setObjectName(QStringLiteral("searchSavePlan"));
    m_save->setToolTip(tr("Write this plan as JSON (docs/PLANS.md), as --plan-out does; train --plan reads it."));
    m_fineTune = new QPushButton(tr("Fine-tune with this plan"));
    m_fineTune->setObjectName(QStringLiteral("searchFineTune"));
    m_fineTune->setToolTip(tr("Put this plan into the Training dock (strategy QAT, the plan table filled) and start a QAT run "
                              "from the analysed model's weights."));
    m_save->setEnabled(false);
    m_fineTune->setEnabled(false);
    connect(m_save, &QPushButton::clicked, this, &SearchView::savePlanInteractive);
    connect(m_fineTune, &QPushButton::clicked, this, &SearchView::fineTune);

    auto* side = new QWidget;
    auto* sv = new QVBoxLayout(side);
    sv->setContentsMargins(0, 0, 0, 0);
    sv->addWidget(m_planTitle);
    sv->addWidget(m_planTable, 1);
    auto* sb = new QHBoxLayout;
    sb->addWidget(m_save);
    sb->addWidget(m_fineTune);
    sv->addLayout(sb);
    auto* split = new QSplitter(Qt::Horizontal);
    m_split = split;
    split->addWidget(m_chart);
    split->addWidget(side);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 1);
    split->setChildrenCollapsible(false);
    // The chart and the plan table take the height left, no more: their size hints asked for
    // more than their minimum, and the Analysis tab's scroll area lays a view with wrapped labels
    // out at its preferred height, which scrolled on a 1366x768 screen.
    split->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Ignored);
    split->setMinimumHeight(m_chart->minimumHeight()); // Ignored leaves only an explicit minimum
    split->setSizes({740, 290}); // a plot at least 300 px wide beside the legend on a 1280-pixel screen

    auto* g = new QGridLayout;
    g->setVerticalSpacing(4);
    // The formats on two rows (on one they set the view's minimum width past a 1366-pixel window's
    // tab), the calibrations after the integer formats (a row of their own cost the chart's height);
    // in a narrow tab they wrap, the calibrations with their label.
    auto* formatsLabel = new QLabel(tr("Formats"));
    formatsLabel->setMinimumHeight(m_formatBoxes.front()->sizeHint().height()); // level with the first row when they wrap
    g->addWidget(formatsLabel, 0, 0, Qt::AlignTop);
    calibs->setContentsMargins(0, 0, 0, 0);
    formatRows[0]->addWidget(labelledField(new QLabel(tr("Calibrations")), calibs, 6));
    g->addLayout(formatRows[0], 0, 1);
    g->addLayout(formatRows[1], 1, 1);
    auto* budget = new QHBoxLayout;
    budget->setContentsMargins(0, 0, 0, 0);
    budget->addWidget(m_budgetKind);
    budget->addWidget(m_budget);
    auto* options = new FlowLayout(12);
    options->addWidget(labelledField(new QLabel(tr("Granularity")), m_granularity));
    options->addWidget(labelledField(new QLabel(tr("Budget")), budget));
    options->addWidget(labelledField(new QLabel(tr("Evaluations")), m_maxEvals));
    g->addLayout(options, 2, 0, 1, 2);
    g->setColumnStretch(1, 1);
    // As narrow as its longest text at a few hundred plans allows (the status line beside it wraps
    // to fewer lines); showProgress widens it for a longer one.
    m_progress->setMinimumWidth(0);
    fitProgressText(m_progress, {progressText(SearchPhase::Ranking, 887, 888), progressText(SearchPhase::Uniform, 887, 888),
                                 progressText(SearchPhase::Greedy, 887, 888)});
    m_runRow = runControlsRow(rc);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(0, 4, 0, 0);
    v->setSpacing(4);
    v->addLayout(g);
    v->addLayout(m_runRow);
    v->addWidget(split, 1);
}

SearchView::~SearchView() = default; // m_thread stops and joins

QString SearchView::statusText() const { return m_status->text(); }

QStringList SearchView::formats() const
{
    QStringList out;
    for (QCheckBox* b : m_formatBoxes)
        if (b->isChecked()) out << b->text();
    return out;
}
void SearchView::setFormats(const QStringList& f)
{
    for (QCheckBox* b : m_formatBoxes) b->setChecked(f.contains(b->text()));
}
QStringList SearchView::calibrations() const
{
    QStringList out;
    for (QCheckBox* b : m_calibBoxes)
        if (b->isChecked()) out << b->text();
    return out;
}
void SearchView::setCalibrations(const QStringList& c)
{
    for (QCheckBox* b : m_calibBoxes) b->setChecked(c.contains(b->text()));
}

void SearchView::setBudget(Budget kind, double value)
{
    m_budgetKind->setCurrentIndex(m_budgetKind->findData(int(kind)));
    m_budget->setValue(value);
}

void SearchView::setMaxEvaluations(int n) { m_maxEvals->setValue(n); }

void SearchView::updateBudgetSpin()
{
    const auto kind = Budget(m_budgetKind->currentData().toInt());
    if (kind == Budget::MaxDrop) {
        m_budget->setRange(0.0, 100.0);
        m_budget->setDecimals(2);
        m_budget->setSingleStep(0.25);
        m_budget->setSuffix(tr(" points"));
        m_budget->setValue(1.0);
    } else if (kind == Budget::MaxPercent) {
        m_budget->setRange(0.1, 100.0);
        m_budget->setDecimals(1);
        m_budget->setSingleStep(1.0);
        m_budget->setSuffix(QStringLiteral(" %"));
        m_budget->setValue(6.25); // about 2 bits a weight
    } else {
        m_budget->setRange(1.0, 1e12);
        m_budget->setDecimals(0);
        m_budget->setSingleStep(1000.0);
        m_budget->setSuffix(tr(" bytes"));
        m_budget->setValue(100000.0);
    }
}

void SearchView::setBlocked(const QString& why)
{
    m_blocked = why;
    setRunEnabled(m_run, m_runTip, m_thread.running(), m_blocked);
}

void SearchView::setBusy(bool busy)
{
    setRunEnabled(m_run, m_runTip, busy, m_blocked);
    m_stop->setEnabled(busy);
    for (QWidget* w : std::initializer_list<QWidget*>{m_granularity, m_budgetKind, m_budget, m_maxEvals}) w->setEnabled(!busy);
    for (QCheckBox* b : m_formatBoxes + m_calibBoxes) b->setEnabled(!busy);
    const bool plan = !busy && m_selected >= 0;
    m_save->setEnabled(plan);
    m_fineTune->setEnabled(plan);
    emit busyChanged(busy);
}

void SearchView::run()
{
    if (m_thread.running()) return;
    MixedSearchOptions opt;
    opt.formats.clear();
    opt.calibrations.clear();
    for (const QString& f : formats()) opt.formats.push_back(f.toStdString());
    for (const QString& c : calibrations()) opt.calibrations.push_back(c.toStdString());
    if (opt.formats.empty() || opt.calibrations.empty()) {
        m_status->setText(tr("Tick at least one format and one calibration."));
        return;
    }
    QString error;
    AnalysisInputPtr in = m_input ? m_input(&error) : nullptr;
    if (!in) {
        m_status->setText(error);
        emit searchFinished(false, error);
        return;
    }
    opt.granularity = m_granularity->currentData().toString().toStdString();
    opt.activationCalibration = in->activationCalibration;
    opt.calibImages = in->data->train.size();
    opt.maxEvaluations = static_cast<std::size_t>(m_maxEvals->value());
    const auto kind = Budget(m_budgetKind->currentData().toInt());
    const double budget = m_budget->value();
    if (kind == Budget::MaxDrop) opt.maxDropPoints = budget;
    else if (kind == Budget::MaxBytes) opt.maxBytes = static_cast<std::uint64_t>(budget);
    m_running = in;
    m_selected = -1;
    setBusy(true);
    m_progress->setRange(0, 1);
    m_progress->setValue(0);
    m_progress->setFormat(tr("measuring FP32\u2026"));
    m_status->setText(tr("%1: searching on %2 validation images\u2026").arg(in->name, formatCount(double(in->data->validation.size()))));
    // Not the "pick formats, then Run search" invitation while the search runs.
    m_chart->clear();
    m_chart->setEmptyMessage(tr("Searching: every plan evaluated appears here when the search ends (the bar below counts them)."));
    m_planTable->setRowCount(0); // not the previous search's plan beside an empty chart
    m_planTitle->setText(tr("The plan this search chooses appears here when it ends."));
    QPointer<SearchView> self(this);
    const bool percent = kind == Budget::MaxPercent;
    m_thread.start([self, in, opt, percent, budget](const std::atomic<bool>& stop) mutable {
        auto out = std::make_shared<Outcome>();
        try {
            std::shared_ptr<Model> model = in->makeModel();
            PrecisionPlan fp32;
            fp32.defaults.format = "fp32";
            out->fp32Bytes = planSize(*model, fp32).fp32Bytes;
            if (percent) opt.maxBytes = static_cast<std::uint64_t>(std::floor(budget / 100.0 * double(out->fp32Bytes)));
            out->options = opt;
            tbb::task_arena arena(static_cast<int>(std::max<std::size_t>(1, in->threads)));
            arena.execute([&] {
                out->report = searchMixedPrecision(*model, *in->data, in->data->validation, opt,
                                                   [&](SearchPhase phase, std::size_t done, std::size_t total) {
                                                       postToGuiThread([self, phase, done, total] {
                                                           if (self) self->showProgress(phase, done, total);
                                                       });
                                                       return !stop.load();
                                                   });
                // The chosen plan's test accuracy, once, as the CLI reports it.
                if (out->report.chosen >= 0 && !out->report.stopped && in->data->test.size() > 0 && !stop.load()) {
                    PlanEvaluator test(*model, *in->data, in->data->test, opt.calibImages, 500);
                    out->testAccuracy = test.accuracy(out->report.plans[static_cast<std::size_t>(out->report.chosen)].plan);
                    out->testImages = in->data->test.size();
                }
            });
            out->model = std::move(model);
        } catch (const std::exception& e) {
            out->error = coreMessage(e);
        }
        postToGuiThread([self, out] {
            if (self) self->showOutcome(out);
        });
    });
}

void SearchView::stop()
{
    if (!m_thread.running()) return;
    m_thread.stop();
    m_status->setText(tr("Stopping after the plan being evaluated\u2026"));
}

void SearchView::showProgress(SearchPhase phase, std::size_t done, std::size_t total)
{
    if (!m_thread.running() || total == 0) return;
    m_progress->setRange(0, static_cast<int>(total));
    m_progress->setValue(static_cast<int>(std::min(done, total)));
    const QString text = progressText(phase, done, total);
    fitProgressText(m_progress, {text});
    m_progress->setFormat(text);
}

QString SearchView::progressText(SearchPhase phase, std::size_t done, std::size_t total)
{
    return phase == SearchPhase::Ranking ? tr("ranking: one-layer plan %1 of %2").arg(std::min(done + 1, total)).arg(total)
           : phase == SearchPhase::Uniform ? tr("uniform plan %1 (of at most %2 plans)").arg(done + 1).arg(total)
                                           : tr("plan %1 of at most %2").arg(std::min(done + 1, total)).arg(total);
}

void SearchView::showOutcome(const std::shared_ptr<const Outcome>& out)
{
    m_thread.finished();
    const AnalysisInputPtr in = std::move(m_running);
    if (!out->error.isEmpty()) {
        setBusy(false);
        m_progress->setFormat(tr("failed"));
        m_status->setText(tr("Cannot search: %1").arg(out->error));
        m_chart->setEmptyMessage(tr("No plan was evaluated: the search failed (the reason is above the chart)."));
        m_planTitle->setText(tr("No plan: the search failed."));
        emit searchFinished(false, out->error);
        return;
    }
    if (out->report.budgetBelowSmallest) { // refused before any evaluation (the CLI's exit 5)
        const QString why = tr("the budget, %1, is below the smallest plan these formats allow (%2)")
                                .arg(formatBytes(double(*out->options.maxBytes)), formatBytes(double(out->report.smallestBytes)));
        setBusy(false);
        m_progress->setFormat(tr("no plan can fit"));
        m_status->setText(tr("Cannot search: %1.").arg(why));
        m_chart->setEmptyMessage(tr("No plan was evaluated: even every layer at its smallest format is over the budget. Raise it, or add smaller formats."));
        m_planTitle->setText(tr("No plan: none can fit the budget."));
        emit searchFinished(false, why);
        return;
    }
    const MixedSearchReport& r = out->report;
    m_report = r;
    m_reported = in;
    m_model = out->model;
    m_testAcc = out->testAccuracy;
    m_chart->setReport(r, out->fp32Bytes, out->options.maxDropPoints, out->options.maxBytes);
    m_chart->setTitleFor(in->name);
    const QStringList off = m_chart->offChart();
    std::size_t front = 0;
    for (const EvaluatedPlan& p : r.plans) front += p.onFront;
    QString s = tr("<b>%1</b>: FP32 %2 on %3 validation images%4; %5 plans evaluated (%6 on the front) and %7 one-layer plans "
                   "for the ranking in %8.")
                    .arg(in->name, formatPercent(r.fp32Accuracy, 2), formatCount(double(r.images)),
                         in->heldOut ? QString() : in->bundle ? tr(" (drawn from the images the run trained on)") : tr(" (drawn from the training set)"))
                    .arg(r.evaluations)
                    .arg(front)
                    .arg(r.sensitivityEvaluations)
                    .arg(formatSeconds(r.seconds));
    // The status line stays short (at four lines it pushed the chart below a 1366x768 window's
    // tab): the chosen plan is in the table's title beside the chart, and the plans below the
    // chart are named here only when the chart's title cannot name them all (showSummary).
    m_summary = s;
    m_testImages = out->testImages;
    if (r.chosen < 0) m_summary += tr(" No evaluated plan meets the budget.");
    if (r.stopped) m_summary += tr(" Stopped early: the best of the plans evaluated so far is marked.");
    else if (r.budgetExhausted) m_summary += tr(" The search reached its plan budget before it was done: more plans may find a better one.");
    if (r.chosen >= 0) {
        const EvaluatedPlan& c = r.plans[static_cast<std::size_t>(r.chosen)];
        s += tr(" Chosen: %1, %2 (%3 % of FP32, %4 bits/weight), validation %5")
                 .arg(QString::fromStdString(c.label).toHtmlEscaped(), formatBytes(double(c.bytes)))
                 .arg(100.0 * double(c.bytes) / double(std::max<std::uint64_t>(1, out->fp32Bytes)), 0, 'f', 1)
                 .arg(c.bitsPerWeight, 0, 'f', 2)
                 .arg(formatPercent(c.accuracy, 2));
        if (std::isfinite(m_testAcc)) s += tr(", test %1 on %2 images").arg(formatPercent(m_testAcc, 2), formatCount(double(out->testImages)));
        s += QLatin1Char('.');
    } else {
        s += tr(" No evaluated plan meets the budget.");
    }
    if (r.stopped) s += tr(" Stopped early: the best of the plans evaluated so far is marked.");
    if (!off.isEmpty()) s += tr(" Below the chart: %1.").arg(off.join(QStringLiteral(", ")).toHtmlEscaped());
    m_status->setText(m_summary);
    showSummary();
    // A finished search is a full bar (it converged before the evaluation budget); a stopped one
    // shows how far it got against that budget.
    m_progress->setRange(0, static_cast<int>(std::max<std::size_t>(1, out->options.maxEvaluations)));
    m_progress->setValue(r.stopped ? static_cast<int>(r.evaluations) : m_progress->maximum());
    m_progress->setFormat(r.stopped ? tr("stopped after %1 plans").arg(r.evaluations) : tr("%1 plans evaluated").arg(r.evaluations));
    m_selected = -1;
    selectPlan(r.chosen);
    setBusy(false);
    emit searchFinished(true, s);
}

void SearchView::showSummary()
{
    // Over the summary only, not over "searching..." or "Saved the plan...".
    if (m_summary.isEmpty() || !m_status->text().startsWith(m_summary)) return;
    const QStringList off = m_chart->offChart();
    m_status->setText(off.isEmpty() || m_chart->titleNamesAll()
                          ? m_summary
                          : m_summary + tr(" Below the chart: %1.").arg(off.join(QStringLiteral(", ")).toHtmlEscaped()));
}

void SearchView::selectPlan(long plan)
{
    if (plan < 0 || plan >= static_cast<long>(m_report.plans.size())) {
        m_selected = -1;
        m_chart->setSelected(-1);
        m_planTable->setRowCount(0);
        m_planTitle->setText(tr("No plan selected: click a point of the chart."));
        setBusy(m_thread.running());
        return;
    }
    m_selected = plan;
    m_chart->setSelected(plan);
    const EvaluatedPlan& e = m_report.plans[static_cast<std::size_t>(plan)];
    m_planTitle->setText(tr("<b>%1</b>%2<br>%3 \u00b7 %4 bits/weight \u00b7 validation %5")
                             .arg(QString::fromStdString(e.label).toHtmlEscaped(),
                                  plan == m_report.chosen ? tr(" \u2014 chosen")
                                  : e.overBudget          ? tr(" \u2014 over the accuracy budget, not taken")
                                  : e.overBytes           ? tr(" \u2014 larger than the size budget")
                                  : e.onFront             ? tr(" \u2014 on the front")
                                                          : QString(),
                                  formatBytes(double(e.bytes)))
                             .arg(e.bitsPerWeight, 0, 'f', 2)
                             .arg(formatPercent(e.accuracy, 2)) +
                         (plan == m_report.chosen && std::isfinite(m_testAcc)
                              ? tr(", test %1 on %2 images").arg(formatPercent(m_testAcc, 2), formatCount(double(m_testImages)))
                              : QString()));
    PlanSize ps;
    if (m_model) ps = planSize(*m_model, e.plan);
    const std::vector<std::string> layers = m_model ? planLayerNames(*m_model) : std::vector<std::string>{};
    m_planTable->setRowCount(static_cast<int>(layers.size()));
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const LayerPrecision lp = e.plan.forLayer(layers[i]);
        std::uint64_t bytes = 0;
        for (const LayerSize& ls : ps.layers)
            if (ls.layer == layers[i]) bytes = ls.bytes;
        const QStringList cells = {QString::fromStdString(layers[i]), QString::fromStdString(lp.format), QString::fromStdString(lp.calibration),
                                   formatCount(double(bytes))};
        for (int c = 0; c < cells.size(); ++c) {
            auto* item = new QTableWidgetItem(cells[c]);
            if (c == 3) item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
            if (c == 0) item->setToolTip(cells[c]); // a long layer name is elided in its middle
            m_planTable->setItem(static_cast<int>(i), c, item);
        }
    }
    fitLayerColumn(layers);
    setBusy(m_thread.running());
}

void SearchView::fitLayerColumn(const std::vector<std::string>& layers)
{
    // The table at least as wide as its names need, up to 24 characters' worth: in a 290-pixel
    // side panel resnet8's "layer2.shortcut" read "layer2…ortcut". Only longer names (ONNX
    // imports' module paths) are elided, in the middle, with the whole name as the tooltip.
    const QFontMetrics fm(m_planTable->font());
    int name = fm.horizontalAdvance(m_planTable->horizontalHeaderItem(0)->text());
    for (const std::string& l : layers) name = std::max(name, fm.horizontalAdvance(QString::fromStdString(l)));
    name = std::min(name, fm.horizontalAdvance(QStringLiteral("features.block12.dw.conv"))) + 2 * fm.averageCharWidth();
    m_planTable->resizeColumnsToContents();
    int others = 0;
    for (int c = 1; c < m_planTable->columnCount(); ++c) others += m_planTable->horizontalHeader()->sectionSize(c);
    m_planTable->setMinimumWidth(name + others + m_planTable->verticalScrollBar()->sizeHint().width() + 2 * m_planTable->frameWidth());
    placePlan(width()); // a wider table may leave the chart too little room beside it
}

void SearchView::resizeEvent(QResizeEvent* e)
{
    QWidget::resizeEvent(e);
    fitWidth(e->size().width());
}

void SearchView::fitWidth(int width)
{
    placeRunStatus(m_runRow, RunControls{m_run, m_stop, m_progress, m_status}, width);
    placePlan(width);
}

void SearchView::placePlan(int width)
{
    // Beside the chart while the chart gets at least 200 pixels more than its minimum there (and
    // the tab is 700 wide: a 1280-pixel window's is about 780); under it in a narrower tab, where
    // beside it the chart was a strip and the table set the tab's minimum width past a 1024x700
    // window's (tester finding: the Analysis tab scrolled across). Under the chart the two take a
    // fixed height, the page scrolls down to them (the Ignored height of the side-by-side split
    // counts for nothing in the scroll area's height-for-width, and the buttons lay past the end).
    QWidget* side = m_split->widget(1);
    const int chartWidth = std::max(m_chart->minimumWidth(), m_chart->minimumSizeHint().width());
    const int beside = chartWidth + std::max(side->minimumWidth(), side->minimumSizeHint().width()) + m_split->handleWidth();
    const Qt::Orientation o = width >= std::max(700, beside + 200) ? Qt::Horizontal : Qt::Vertical;
    if (o == m_split->orientation()) return;
    m_split->setOrientation(o);
    const int planHeight = 12 * fontMetrics().lineSpacing(); // the title, six rows of the table and the buttons
    const int chartHeight = m_chart->minimumHeight() + 60;
    side->setMinimumHeight(o == Qt::Vertical ? planHeight : 0);
    if (o == Qt::Horizontal) {
        m_split->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Ignored);
        m_split->setMinimumHeight(m_chart->minimumHeight());
        m_split->setMaximumHeight(QWIDGETSIZE_MAX);
        m_split->setSizes({740, 290});
    } else {
        m_split->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Fixed);
        m_split->setFixedHeight(chartHeight + planHeight + m_split->handleWidth());
        m_split->setSizes({chartHeight, planHeight});
    }
}

void SearchView::savePlanInteractive()
{
    if (m_selected < 0) return;
    const QString path = QFileDialog::getSaveFileName(this, tr("Save plan"), QStringLiteral("plan.json"), tr("Plans (*.json)"));
    if (!path.isEmpty()) savePlanTo(path);
}

bool SearchView::savePlanTo(const QString& path)
{
    if (m_selected < 0) return false;
    try {
        writePlanFile(path.toStdString(), m_report.plans[static_cast<std::size_t>(m_selected)].plan);
    } catch (const std::exception& e) {
        m_status->setText(tr("Could not save the plan: %1").arg(coreMessage(e)));
        return false;
    }
    m_status->setText(tr("Saved the plan \u201c%1\u201d to %2 (quantscope-cli train --plan reads it).")
                          .arg(QString::fromStdString(m_report.plans[static_cast<std::size_t>(m_selected)].label), path));
    return true;
}

void SearchView::fineTune()
{
    if (m_selected < 0 || !m_reported) return;
    emit fineTuneRequested(m_reported, m_report.plans[static_cast<std::size_t>(m_selected)].plan);
}

} // namespace quantscope
