// The Analysis tab as a user meets it, offscreen: a small model trained in the window on an IDX
// fixture; Sensitivity fills a layer x format heatmap with exactly the core report's cells
// (colour by drop, text = drop and SQNR), clicking a cell opens that layer's weight histogram at
// that format, Stop ends an analysis early with the cells done; Search draws every evaluated
// plan, the front, the uniform plans (labelled) and the chosen plan, shows a clicked plan's
// layers, Save plan writes a file the plan parser reads back, the Training dock loads and saves
// plan files, "Fine-tune with this plan" starts a QAT run with the plan from the run's weights, and
// an analysis and a training run take turns.
// QS_ANALYSIS_SHOT=DIR with QS_ANALYSIS_MODEL=seed-cnn.qsm (an FP32 model for Fashion-MNIST) also
// runs both analyses on that model and saves the heatmap and the Pareto chart as PNGs (5,000
// validation images, or QS_ANALYSIS_VALIDATION / QS_ANALYSIS_SEARCH_VALIDATION; give
// QTEST_FUNCTION_TIMEOUT=3600000 on a busy machine).
#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "analysis_view.h"
#include "layer_compare_view.h"
#include "format_text.h"
#include "main_window.h"
#include "pareto_chart.h"
#include "plan_table.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "search_view.h"
#include "sensitivity_view.h"
#include "training_panel.h"

#include "gui_window_fixtures.h"
#include "slow_tests.h"

#include "analysis/sensitivity.h"
#include "data/idx.h"
#include "quant/precision_plan.h"
#include "util/rng.h"

#include <QAction>
#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QElapsedTimer>
#include <QDir>
#include <QFileInfo>
#include <QLabel>
#include <QLineSeries>
#include <QProgressBar>
#include <QPushButton>
#include <QScatterSeries>
#include <QScrollArea>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTableWidget>
#include <QValueAxis>
#include <QTemporaryDir>
#include <QtTest>
#include <QHelpEvent>
#include <QToolTip>

#include <algorithm>
#include <cmath>

using namespace quantscope;

namespace {

constexpr int kRunTimeoutMs = 180000;  // generous: the machine is shared
constexpr int kLoadTimeoutMs = 20000;

QString dropText(double drop) { return QString::number(drop, 'f', 2) + QStringLiteral(" pts"); }

// Records each text `bar` shows that does not fit it on one line (tester 12 #11: "ranking:
// one-layer plan 12 of 16" wrapped in a 150-pixel bar, both lines cut).
struct ProgressTextWatch {
    QStringList cut;
    QMetaObject::Connection connection;
    explicit ProgressTextWatch(QProgressBar* bar)
    {
        connection = QObject::connect(bar, &QProgressBar::valueChanged, bar, [this, bar] {
            QCoreApplication::processEvents(); // the layout follows a widened bar
            const int need = bar->fontMetrics().horizontalAdvance(bar->text()) + 8;
            if (need > bar->width()) cut << QStringLiteral("'%1' needs %2 px, the bar is %3").arg(bar->text()).arg(need).arg(bar->width());
        });
    }
    ~ProgressTextWatch() { QObject::disconnect(connection); }
};

} // namespace

class TestGuiAnalysis : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void limitedTrainingSetSplitsAsAnalyze();
    void sensitivityHeatmap();
    void sensitivityAllButOne();
    void sensitivityStops();
    void floatFormatsAndActivationRanges();
    void searchChartAndPlans();
    void narrowTabKeepsTheChart();
    void searchStops();
    void searchRefusesABudgetBelowTheSmallestPlan();
    void fineTuneStartsQat();
    void tabsAnalyseThePrimaryRun();
    void trainingAndAnalysisTakeTurns();
    void closingMidAnalysis();
    void fp16HistogramZoomsToTheWeights();
    void screenshotsOfSeedCnn();
    void cleanupTestCase();

private:
    QTemporaryDir m_dir;
    std::unique_ptr<MainWindow> m_window;
    AnalysisView* m_view = nullptr;
    QString m_planPath;
};

void TestGuiAnalysis::initTestCase()
{
    QVERIFY(m_dir.isValid());
    quantscope::testing::writeFixture(m_dir.path(), 900, 200, 11); // gui_window_fixtures.h
    MainWindowOptions o;
    o.useSettings = false;
    o.dataDir = m_dir.path();
    o.quietExport = true;
    m_window = std::make_unique<MainWindow>(o);
    m_window->resize(1500, 1000);
    m_window->show();
    if (!m_window->dataset()) {
        QSignalSpy r(m_window.get(), &MainWindow::datasetReady);
        QVERIFY(r.wait(kLoadTimeoutMs));
    }
    QVERIFY(m_window->dataset());
    // A small FP32 model, trained here so that accuracy means something to the analyses.
    TrainConfig c = m_window->trainingPanel()->config();
    c.model = "lenet5";
    c.precision.strategy = Strategy::Fp32;
    c.epochs = 3;
    c.batchSize = 32;
    m_window->trainingPanel()->setConfig(c);
    QSignalSpy ended(m_window.get(), &MainWindow::runEnded);
    m_window->startTraining();
    QVERIFY(ended.wait(kRunTimeoutMs));
    const RunPtr run = m_window->runsModel()->runAt(0);
    QVERIFY2(run->status == RunStatus::Done, qPrintable(run->error));
    QTRY_VERIFY_WITH_TIMEOUT(run->exportBundle != nullptr, kLoadTimeoutMs);
    m_view = m_window->analysisView();
    // More validation images than the training set holds: half of it, as analyze takes without
    // --validation, not an error.
    m_view->setValidationImages(100000);
    QString error;
    const AnalysisInputPtr in = m_view->input(&error);
    QVERIFY2(in, qPrintable(error));
    QCOMPARE(in->data->validation.size(), std::size_t{900 / 2});
    const QLabel* note = m_view->findChild<QLabel*>("analysisNote"); // and it says so where the number was typed
    QVERIFY(note);
    QVERIFY2(note->text().contains("<b>its 900 training images leave room for 450 validation images, not 100000</b>") &&
                 note->text().contains("one image is 0.22 points of accuracy"),
             qPrintable(note->text()));
    m_view->setValidationImages(200);
    QVERIFY2(!note->text().contains("leave room") && note->text().contains("one image is 0.5 points of accuracy"), qPrintable(note->text()));
    m_view->setCalibrationImages(100);
    // The images the analyses measure on are the CLI's --validation 200 split, apart from those calibrating.
    const AnalysisInputPtr used = m_view->input(&error);
    QCOMPARE(used->data->validation.size(), std::size_t{200});
    QCOMPARE(used->data->train.size(), std::size_t{100});
    QVERIFY(!used->heldOut);
    DatasetOptions cliSplit;
    cliSplit.dir = m_dir.path().toStdString();
    cliSplit.validation = 200;
    const Dataset cli = Dataset::load(cliSplit);
    QVERIFY(used->data->validation.pixels == cli.validation.pixels);
    QVERIFY(used->data->validation.labels == cli.validation.labels);
    QVERIFY(std::equal(used->data->train.labels.begin(), used->data->train.labels.end(), cli.train.labels.begin()));
    QVERIFY2(m_view->sourceCombo()->currentText().startsWith("run #1"), qPrintable(m_view->sourceCombo()->currentText()));
    QTabWidget* tabs = m_window->tabs();
    int page = -1; // the Analysis tab holds the view inside a scroll area
    for (int i = 0; i < tabs->count(); ++i)
        if (tabs->widget(i)->isAncestorOf(m_view)) page = i;
    tabs->setCurrentIndex(page);
    QCOMPARE(tabs->tabText(tabs->currentIndex()), QString("Analysis"));
}

// A dataset loaded with a training limit (the Dataset dock's field, --train-limit): the analyses
// hold their validation images out of the limited set, and analyze --train-limit N (Dataset::load
// with validationAfterLimit) draws exactly those images, so a GUI result can be repeated.
void TestGuiAnalysis::limitedTrainingSetSplitsAsAnalyze()
{
    DatasetOptions limited;
    limited.dir = m_dir.path().toStdString();
    limited.trainLimit = 500;
    const Dataset gui = Dataset::load(limited);
    Normalization remaining;
    const std::shared_ptr<Dataset> used = analysisDataset(gui, 120, 100000, nullptr, &remaining);
    DatasetOptions cliOpts = limited;
    cliOpts.validation = 120;
    cliOpts.validationAfterLimit = true;
    const Dataset cli = Dataset::load(cliOpts);
    QCOMPARE(used->validation.size(), std::size_t{120});
    QCOMPARE(cli.validation.size(), std::size_t{120});
    QVERIFY(used->validation.pixels == cli.validation.pixels);
    QVERIFY(used->validation.labels == cli.validation.labels);
    QCOMPARE(used->train.size(), cli.train.size());
    QVERIFY(used->train.pixels == cli.train.pixels);
    // A model file that stores no normalisation is measured on analyze's statistics (tester 17):
    // those of the whole training set, whatever the limit and the validation split keep, as train
    // and eval take them (tester 12: train --train-limit stored its subset's, eval the set's).
    DatasetOptions whole;
    whole.dir = limited.dir;
    const Normalization all = Dataset::load(whole).normalization;
    QCOMPARE(gui.normalization, all);
    QCOMPARE(cli.normalization, all);
    QVERIFY(std::fabs(all.stddev[0] - 1.0f) > 1e-3f); // real statistics, not the identity
    QVERIFY(std::fabs(pixelStatistics(used->train).mean[0] - all.mean[0]) > 1e-5f); // the kept images' differ
    QVERIFY2(std::fabs(remaining.mean[0] - cli.normalization.mean[0]) < 1e-6f &&
                 std::fabs(remaining.stddev[0] - cli.normalization.stddev[0]) < 1e-6f,
             qPrintable(QString("%1 %2 vs %3 %4").arg(remaining.mean[0]).arg(remaining.stddev[0]).arg(cli.normalization.mean[0]).arg(cli.normalization.stddev[0])));
    // train's order (validation split off the whole set first, then the limit) draws others
    cliOpts.validationAfterLimit = false;
    QVERIFY(Dataset::load(cliOpts).validation.pixels != used->validation.pixels);
}

void TestGuiAnalysis::sensitivityHeatmap()
{
    // The whole Analysis view fits the tab of a 1366-pixel window (about 860 pixels wide): it was
    // 949 pixels at least, and a horizontal scrollbar hid the plan table and Fine-tune.
    QVERIFY2(m_view->minimumSizeHint().width() <= 840, qPrintable(QString::number(m_view->minimumSizeHint().width())));
    SensitivityView* s = m_view->sensitivity();
    s->setFormats({"int8", "int2"});
    QSignalSpy done(s, &SensitivityView::analysisFinished);
    QSignalSpy progressed(s->progressBar(), &QProgressBar::valueChanged);
    ProgressTextWatch texts(s->progressBar());
    QCoreApplication::processEvents();
    const QPoint runAt = s->runButton()->mapTo(m_view, QPoint(0, 0));
    QTest::mouseClick(s->runButton(), Qt::LeftButton);
    QVERIFY(s->isRunning());
    QVERIFY(!s->runButton()->isEnabled());
    QVERIFY(s->stopButton()->isEnabled());
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY2(done.first().at(0).toBool(), qPrintable(done.first().at(1).toString()));
    QVERIFY(progressed.count() > 0);
    QVERIFY2(texts.cut.isEmpty(), qPrintable(texts.cut.join(QStringLiteral("; "))));
    // The summary wraps to more lines than the status before it; Run stays where it was clicked
    // (it moved 14 px down, and a second click missed it; tester 12 #11).
    QCoreApplication::processEvents();
    QCOMPARE(s->runButton()->mapTo(m_view, QPoint(0, 0)), runAt);
    const SensitivityReport& r = s->report();
    QCOMPARE(r.layers.size(), std::size_t{5}); // lenet5: conv1, conv2, fc1, fc2, fc3
    QCOMPARE(r.images, std::size_t{200});
    QCOMPARE(r.cells.size(), r.layers.size() * 2);
    QTableWidget* t = s->heatmap();
    QCOMPARE(t->rowCount(), int(r.layers.size()));
    QCOMPARE(t->columnCount(), 2);
    QCOMPARE(t->horizontalHeaderItem(1)->text(), QString("int2"));
    double worst = -1e9, best = 1e9;
    int worstRow = 0, bestRow = 0;
    for (int row = 0; row < t->rowCount(); ++row) {
        QCOMPARE(t->verticalHeaderItem(row)->text(), QString::fromStdString(r.layers[std::size_t(row)]));
        for (int col = 0; col < 2; ++col) {
            const SensitivityCell& c = r.cells[std::size_t(row) * 2 + std::size_t(col)];
            const QString text = t->item(row, col)->text();
            QVERIFY2(text.contains(dropText(c.dropPoints)), qPrintable(text));
            if (std::isfinite(c.logitSqnrDb)) QVERIFY2(text.contains(QString::number(c.logitSqnrDb, 'f', 1) + " dB"), qPrintable(text));
            if (col == 1 && c.dropPoints > worst) worst = c.dropPoints, worstRow = row;
            if (col == 1 && c.dropPoints < best) best = c.dropPoints, bestRow = row;
        }
    }
    // The colour says the drop: a layer that costs more at int2 is redder (less green) than one that costs less.
    if (worst > best + 0.5)
        QVERIFY(t->item(worstRow, 1)->background().color().green() < t->item(bestRow, 1)->background().color().green());
    QVERIFY(s->statusText().contains(formatPercent(r.fp32Accuracy, 2)));

    // Clicking a cell opens that layer's weight histogram at that format.
    const QRect rect = t->visualItemRect(t->item(1, 1));
    QTest::mouseClick(t->viewport(), Qt::LeftButton, {}, rect.center());
    QVERIFY(s->histogramDialog());
    QVERIFY(s->histogramDialog()->isVisible());
    QCOMPARE(QString::fromStdString(s->histogramStats().layer), QString::fromStdString(r.layers[1]));
    QCOMPARE(QString::fromStdString(s->histogramStats().format), QString("int2"));
    // int2 channel-wise: each channel has its own four levels; the bins split the widest grid's
    // steps so the FP32 distribution stays readable (it was drawn in 4-6 bars).
    QVERIFY(s->histogramStats().scales.size() > 1); // a scale per output channel
    QVERIFY2(s->histogramChart()->binCount() >= 24, qPrintable(QString::number(s->histogramChart()->binCount())));
    // Another cell: the same window shows the new layer and format.
    QVERIFY(s->openHistogram(0, 0));
    QCOMPARE(QString::fromStdString(s->histogramStats().format), QString("int8"));
    QVERIFY(s->histogramChart()->binCount() > 16);
    s->histogramDialog()->close();

    // Another model picked: the heatmap on screen is said to be of the one it was measured on.
    const QLabel* note = m_view->findChild<QLabel*>("analysisNote");
    QVERIFY2(!note->text().contains("results below are of"), qPrintable(note->text()));
    const RunPtr run = m_window->runsModel()->runAt(0);
    const QString item = m_view->sourceCombo()->itemText(0); // "run #1 (description)"
    const QString description = item.mid(item.indexOf('(') + 1).chopped(1);
    m_view->setRun(7, run->exportBundle, QStringLiteral("another run"));
    QVERIFY2(note->text().contains("the results below are of run #1"), qPrintable(note->text()));
    m_view->setRun(1, run->exportBundle, description);
    QVERIFY2(!note->text().contains("results below are of"), qPrintable(note->text()));
}

void TestGuiAnalysis::sensitivityAllButOne()
{
    // "All but this layer": one cell per layer (every other layer at int2, this one FP32), and the
    // cells say which mode they measured.
    SensitivityView* s = m_view->sensitivity();
    s->setFormats({"int2"});
    s->modeCombo()->setCurrentIndex(1);
    QSignalSpy done(s, &SensitivityView::analysisFinished);
    s->run();
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY2(done.first().at(0).toBool(), qPrintable(done.first().at(1).toString()));
    const SensitivityReport& r = s->report();
    QCOMPARE(r.cells.size(), r.layers.size());
    QCOMPARE(s->heatmap()->columnCount(), 1);
    QVERIFY(s->statusText().contains("all but one layer"));
    QVERIFY(s->heatmap()->item(0, 0)->toolTip().contains("this one FP32"));
    for (std::size_t i = 0; i < r.cells.size(); ++i) QVERIFY(s->heatmap()->item(int(i), 0)->text().contains(dropText(r.cells[i].dropPoints)));
    s->modeCombo()->setCurrentIndex(0);
}

// The float and MX formats analyze --formats takes are offered too, and the Activation ranges
// choice reaches the measurement: the cells equal core's analyzeSensitivity with percentile
// activation ranges on the same model and images, and differ from min-max's.
void TestGuiAnalysis::floatFormatsAndActivationRanges()
{
    SensitivityView* s = m_view->sensitivity();
    for (const char* f : {"fp8-e4m3", "fp8-e5m2", "mxint8", "mxfp4", "ternary"}) {
        QVERIFY2(s->findChild<QCheckBox*>(QStringLiteral("sensFormat_%1").arg(f)), f);
        QVERIFY2(m_view->search()->findChild<QCheckBox*>(QStringLiteral("searchFormat_%1").arg(f)), f);
    }
    auto* act = m_view->findChild<QComboBox*>("analysisActCalibration");
    QVERIFY(act);
    act->setCurrentIndex(act->findData(QStringLiteral("percentile")));
    QVERIFY(act->currentIndex() >= 0);
    s->setFormats({"fp8-e4m3", "mxfp4"});
    QSignalSpy done(s, &SensitivityView::analysisFinished);
    s->run();
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY2(done.first().at(0).toBool(), qPrintable(done.first().at(1).toString()));
    QCOMPARE(s->heatmap()->horizontalHeaderItem(0)->text(), QString("fp8-e4m3"));
    QVERIFY2(s->statusText().contains("activations: percentile"), qPrintable(s->statusText()));
    const SensitivityReport gui = s->report();

    QString error;
    const AnalysisInputPtr in = m_view->input(&error);
    QVERIFY2(in, qPrintable(error));
    QCOMPARE(in->activationCalibration, std::string("percentile"));
    SensitivityOptions opt;
    opt.formats = {"fp8-e4m3", "mxfp4"};
    opt.activationCalibration = "percentile";
    opt.calibImages = in->data->train.size();
    std::unique_ptr<Model> model = in->makeModel();
    SensitivityReport core, minmax;
    tbb::task_arena arena(static_cast<int>(in->threads)); // as the view runs it
    arena.execute([&] {
        core = analyzeSensitivity(*model, *in->data, in->data->validation, opt);
        opt.activationCalibration = "minmax";
        minmax = analyzeSensitivity(*model, *in->data, in->data->validation, opt);
    });
    QCOMPARE(gui.cells.size(), core.cells.size());
    bool differs = false;
    for (std::size_t i = 0; i < gui.cells.size(); ++i) {
        QCOMPARE(gui.cells[i].accuracy, core.cells[i].accuracy);
        QCOMPARE(gui.cells[i].logitSqnrDb, core.cells[i].logitSqnrDb);
        differs = differs || gui.cells[i].logitSqnrDb != minmax.cells[i].logitSqnrDb;
    }
    QVERIFY(differs); // percentile ranges clip: the outputs are not min-max's
    act->setCurrentIndex(act->findData(QStringLiteral("minmax")));
}

void TestGuiAnalysis::sensitivityStops()
{
    SensitivityView* s = m_view->sensitivity();
    s->setFormats({"int8", "int6", "int4", "int3", "int2"});
    QSignalSpy done(s, &SensitivityView::analysisFinished);
    s->run();
    QTest::mouseClick(s->stopButton(), Qt::LeftButton);
    QVERIFY(done.wait(kRunTimeoutMs));
    const SensitivityReport& r = s->report();
    QVERIFY(r.stopped);
    QVERIFY(r.cells.size() < r.layers.size() * 5);
    QCOMPARE(s->heatmap()->rowCount(), int(r.layers.size()));
    const int last = s->heatmap()->rowCount() - 1;
    QCOMPARE(s->heatmap()->item(last, 4)->text(), noValueText()); // not measured
    QVERIFY(s->statusText().contains("Stopped"));
    QVERIFY(s->runButton()->isEnabled());
    QVERIFY(!s->stopButton()->isEnabled());
}

// A size budget below the smallest plan the formats allow ends at once, saying so with both sizes,
// and keeps the last search's chart and report (as the CLI's exit 5 before any evaluation).
void TestGuiAnalysis::searchRefusesABudgetBelowTheSmallestPlan()
{
    m_view->pages()->setCurrentIndex(1);
    SearchView* s = m_view->search();
    const std::size_t plansBefore = s->report().plans.size();
    s->setFormats({"int8", "int4"});
    s->setCalibrations({"minmax"});
    s->setBudget(SearchView::Budget::MaxBytes, 1.0);
    QSignalSpy done(s, &SearchView::searchFinished);
    QTest::mouseClick(s->runButton(), Qt::LeftButton);
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY(!done.first().at(0).toBool());
    const QString why = done.first().at(1).toString();
    QVERIFY2(why.startsWith("the budget, 1 B, is below the smallest plan these formats allow ("), qPrintable(why));
    QVERIFY2(why.endsWith(" KB)"), qPrintable(why));
    QCOMPARE(s->progressBar()->format(), QString("no plan can fit"));
    QVERIFY2(s->chart()->emptyMessage().startsWith("No plan was evaluated"), qPrintable(s->chart()->emptyMessage())); // not "Searching..."
    // Nothing of the search before (searchChartAndPlans) is left above that message: not its title
    // ("run #1: size against validation accuracy (20 plans)") nor its budget in the legend.
    QVERIFY2(s->chart()->chart()->title().isEmpty(), qPrintable(s->chart()->chart()->title()));
    for (QAbstractSeries* series : s->chart()->chart()->series())
        if (series->name().startsWith("budget")) QVERIFY2(!series->property("qsInLegend").toBool(), qPrintable(series->name()));
    // nor its chosen plan in the table beside the chart
    QCOMPARE(s->findChild<QTableWidget*>()->rowCount(), 0);
    if (const QString dir = qEnvironmentVariable("QS_ANALYSIS_SHOT"); !dir.isEmpty()) // to look at the status line
        QVERIFY(m_view->grab().save(dir + "/search_refused.png"));
    QCOMPARE(s->report().plans.size(), plansBefore);
    QVERIFY(s->runButton()->isEnabled());
    s->setBudget(SearchView::Budget::MaxDrop, 2.0);
}

void TestGuiAnalysis::searchChartAndPlans()
{
    m_view->pages()->setCurrentIndex(1);
    SearchView* s = m_view->search();
    s->setFormats({"int8", "int4", "int2"});
    s->setCalibrations({"minmax"});
    s->setBudget(SearchView::Budget::MaxDrop, 2.0);
    s->setMaxEvaluations(20);
    QSignalSpy done(s, &SearchView::searchFinished);
    ProgressTextWatch texts(s->progressBar()); // "ranking: one-layer plan 12 of 16" on one line
    QTest::mouseClick(s->runButton(), Qt::LeftButton);
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY2(done.first().at(0).toBool(), qPrintable(done.first().at(1).toString()));
    QVERIFY2(texts.cut.isEmpty(), qPrintable(texts.cut.join(QStringLiteral("; "))));
    const MixedSearchReport& r = s->report();
    QVERIFY(r.evaluations >= 3);
    QVERIFY(r.evaluations <= 20);
    std::size_t uniform = 0, front = 0;
    for (const EvaluatedPlan& p : r.plans) {
        uniform += p.uniform;
        front += p.onFront;
    }
    QCOMPARE(uniform, std::size_t{3});
    QCOMPARE(s->progressBar()->value(), s->progressBar()->maximum()); // finished: a full bar (it stayed at evaluations / budget)
    ParetoChart* chart = s->chart();
    QCOMPARE(std::size_t(chart->plansSeries()->count() + chart->uniformSeries()->count()), r.plans.size());
    QCOMPARE(std::size_t(chart->uniformSeries()->count()), uniform);
    QCOMPARE(std::size_t(chart->frontSeries()->count()), front);
    QCOMPARE(chart->uniformLabels(), QStringList({"int2", "int4", "int8"})); // by size
    // The title names exactly the plans the y axis leaves out (it named some drawn on the chart).
    QStringList below;
    for (const EvaluatedPlan& p : r.plans)
        if (100.0 * p.accuracy < chart->yAxis()->min()) below << QString::fromStdString(p.label);
    QCOMPARE(chart->offChart().size(), below.size());
    for (int i = 0; i < below.size(); ++i) QVERIFY2(chart->offChart()[i].startsWith(below[i] + " at "), qPrintable(chart->offChart()[i]));
    // The front runs left to right, and no plan lies above it at its size or smaller.
    for (int i = 1; i < chart->frontSeries()->count(); ++i)
        QVERIFY(chart->frontSeries()->at(i).x() >= chart->frontSeries()->at(i - 1).x());
    QVERIFY(r.chosen >= 0);
    QCOMPARE(chart->chosenSeries()->count(), 1);
    const EvaluatedPlan& chosen = r.plans[std::size_t(r.chosen)];
    QCOMPARE(chart->chosenSeries()->at(0).y(), 100.0 * chosen.accuracy);
    QVERIFY(100.0 * (r.fp32Accuracy - chosen.accuracy) <= 2.0 + 1e-9);
    QVERIFY(std::isfinite(s->chosenTestAccuracy()));
    // Hovering a plan shows it, and a pointer that rests there keeps that tooltip (the view's
    // "Right-click to save" tooltip replaced it; testers 4, 10, 13).
    emit chart->chosenSeries()->hovered(chart->chosenSeries()->at(0), true);
    QVERIFY2(chart->hoverText().contains(QString::fromStdString(chosen.label).toHtmlEscaped()) && chart->hoverText().contains("chosen"),
             qPrintable(chart->hoverText()));
    chart->show();
    QHelpEvent rest(QEvent::ToolTip, QPoint(5, 5), chart->mapToGlobal(QPoint(5, 5)));
    QCoreApplication::sendEvent(chart, &rest);
    QCOMPARE(QToolTip::text(), chart->hoverText());
    emit chart->chosenSeries()->hovered(chart->chosenSeries()->at(0), false);
    QVERIFY(chart->hoverText().isEmpty());
    // The side table shows the chosen plan, layer by layer.
    QCOMPARE(s->selectedPlan(), r.chosen);
    QTableWidget* t = s->planTable();
    QCOMPARE(t->rowCount(), 5);
    for (int row = 0; row < 5; ++row)
        QCOMPARE(t->item(row, 1)->text(), QString::fromStdString(chosen.plan.forLayer(t->item(row, 0)->text().toStdString()).format));
    // Clicking another point shows that plan.
    const long other = r.chosen == 0 ? 1 : 0;
    emit chart->planClicked(other);
    QCOMPARE(s->selectedPlan(), other);
    QCOMPARE(chart->selectedSeries()->count(), 1);
    QCOMPARE(t->item(0, 1)->text(), QString::fromStdString(r.plans[std::size_t(other)].plan.forLayer(t->item(0, 0)->text().toStdString()).format));
    s->selectPlan(r.chosen);

    // Save plan writes the plan file the CLI's --plan reads.
    m_planPath = m_dir.filePath("chosen-plan.json");
    QVERIFY(s->savePlanTo(m_planPath));
    const PrecisionPlan read = readPlanFile(m_planPath.toStdString());
    for (const std::string& layer : r.plans.empty() ? std::vector<std::string>{} : std::vector<std::string>{"conv1", "conv2", "fc1", "fc2", "fc3"})
        QVERIFY(read.forLayer(layer) == chosen.plan.forLayer(layer));
    QVERIFY(!s->savePlanTo(m_dir.filePath("no/such/folder/plan.json")));
    QVERIFY(s->statusText().contains("Could not save"));

    // The Training dock loads it into its plan table and saves it back.
    TrainingPanel* panel = m_window->trainingPanel();
    TrainConfig c = panel->config();
    c.model = "lenet5";
    c.precision.strategy = Strategy::Qat;
    panel->setConfig(c);
    m_window->refreshPlanModel();
    QVERIFY(panel->loadPlanFile(m_planPath));
    QCOMPARE(panel->config().precision.layers, read.layers);
    QCOMPARE(panel->config().precision.format, read.defaults.format);
    QVERIFY(panel->planTable()->noteText().contains("chosen-plan.json"));
    const QString again = m_dir.filePath("again.json");
    QVERIFY(panel->savePlanFile(again));
    const PrecisionPlan back = readPlanFile(again.toStdString());
    for (const char* layer : {"conv1", "conv2", "fc1", "fc2", "fc3"}) QVERIFY(back.forLayer(layer) == read.forLayer(layer));
    // A plan naming a layer the model does not have is refused, with the layer named under the table.
    QFile bad(m_dir.filePath("bad.json"));
    QVERIFY(bad.open(QIODevice::WriteOnly));
    bad.write(R"({"layers": {"fc9": "int4"}})");
    bad.close();
    QString error;
    QVERIFY(!panel->loadPlanFile(bad.fileName(), &error));
    QVERIFY2(error.contains("fc9"), qPrintable(error));
    QVERIFY(panel->planTable()->noteText().contains("fc9"));
    QCOMPARE(panel->config().precision.layers, read.layers); // unchanged
}

void TestGuiAnalysis::searchStops()
{
    SearchView* s = m_view->search();
    s->setFormats({"int8", "int6", "int5", "int4", "int3", "int2"});
    s->setCalibrations({"minmax", "mse"});
    s->setMaxEvaluations(200);
    QSignalSpy done(s, &SearchView::searchFinished);
    s->run();
    // While it runs, the chart says so (it kept "Pick formats and a budget, then Run search").
    QVERIFY2(s->chart()->emptyMessage().startsWith("Searching"), qPrintable(s->chart()->emptyMessage()));
    QTest::mouseClick(s->stopButton(), Qt::LeftButton);
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY(s->report().stopped);
    QVERIFY(s->report().evaluations < 200);
    QVERIFY(s->statusText().contains("Stopped"));
    QVERIFY(s->runButton()->isEnabled());
}

void TestGuiAnalysis::fineTuneStartsQat()
{
    // Back to the finished search with a plan.
    SearchView* s = m_view->search();
    s->setFormats({"int8", "int4", "int2"});
    s->setCalibrations({"minmax"});
    s->setMaxEvaluations(12);
    QSignalSpy done(s, &SearchView::searchFinished);
    s->run();
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY(s->selectedPlan() >= 0);
    const PrecisionPlan plan = s->report().plans[std::size_t(s->selectedPlan())].plan;
    const int before = m_window->runsModel()->rowCount();
    QSignalSpy started(m_window.get(), &MainWindow::runStarted);
    QSignalSpy ended(m_window.get(), &MainWindow::runEnded);
    QTest::mouseClick(s->fineTuneButton(), Qt::LeftButton);
    QCOMPARE(started.count(), 1);
    QCOMPARE(m_window->runsModel()->rowCount(), before + 1);
    const RunPtr run = m_window->runsModel()->runById(started.first().at(0).toInt());
    QVERIFY(run);
    QCOMPARE(run->config.precision.strategy, Strategy::Qat);
    QCOMPARE(run->config.precision.layers, plan.layers);
    QCOMPARE(run->config.precision.format, plan.defaults.format);
    QVERIFY(run->config.pretrained);
    QVERIFY(QFileInfo::exists(QString::fromStdString(run->config.modelFile))); // the run's FP32 weights, as .qsm
    // The Training dock shows it: strategy QAT, the plan table holding the plan.
    QCOMPARE(m_window->trainingPanel()->config().precision.layers, plan.layers);
    QCOMPARE(m_window->trainingPanel()->planTable()->plan().layers, plan.layers);
    // The Analysis tab keeps analysing the run it was on.
    QVERIFY(m_view->sourceCombo()->currentText().startsWith("run #1"));
    m_window->stopTraining();
    QVERIFY(ended.wait(kRunTimeoutMs));
}

// With two finished runs selected, the Analysis and Layers tabs analyse the one clicked last,
// as the histograms and the SQNR label do (Layers took the newest, the histograms the clicked).
void TestGuiAnalysis::tabsAnalyseThePrimaryRun()
{
    TrainConfig c = m_window->trainingPanel()->config();
    c.precision = PrecisionConfig{};
    c.precision.strategy = Strategy::Fp32;
    c.epochs = 1;
    m_window->trainingPanel()->setConfig(c);
    QSignalSpy started(m_window.get(), &MainWindow::runStarted);
    QSignalSpy ended(m_window.get(), &MainWindow::runEnded);
    m_window->startTraining();
    QVERIFY(ended.wait(kRunTimeoutMs));
    const int newer = started.first().at(0).toInt();
    const RunPtr run = m_window->runsModel()->runById(newer);
    QTRY_VERIFY_WITH_TIMEOUT(run->exportBundle != nullptr, kLoadTimeoutMs);
    for (const int primary : {1, newer}) {
        m_window->selectRuns({primary == 1 ? newer : 1, primary}); // the last one is the current row
        QCOMPARE(m_window->selectedRuns().size(), std::size_t{2});
        QCOMPARE(m_window->selectedRuns().front()->id, primary);
        QCOMPARE(m_window->layerCompareView()->runId(), primary);
        const QString source = m_view->sourceCombo()->currentText();
        QVERIFY2(source.startsWith(QString("run #%1").arg(primary)), qPrintable(source));
    }
    m_window->selectRuns({1});
}

// An analysis and a training run would share the cores (each at about half speed on two), so
// they take turns: while an analysis runs, Train (button, Run menu, Ctrl+R) is greyed out saying
// why; while a run trains, Run sensitivity and Run search are (tester 12 #8: both stayed enabled).
void TestGuiAnalysis::trainingAndAnalysisTakeTurns()
{
    auto* trainAct = m_window->findChild<QAction*>("trainAction");
    QVERIFY(trainAct && trainAct->isEnabled());
    SensitivityView* s = m_view->sensitivity();
    s->setFormats({"int8", "int6", "int4", "int3", "int2"});
    QSignalSpy done(s, &SensitivityView::analysisFinished);
    s->run();
    QTRY_VERIFY(!trainAct->isEnabled());
    QVERIFY(!m_window->trainingPanel()->trainButton()->isEnabled());
    QVERIFY2(m_window->trainingPanel()->trainButton()->toolTip().contains("An analysis is running"),
             qPrintable(m_window->trainingPanel()->trainButton()->toolTip()));
    const int runs = m_window->runsModel()->rowCount();
    m_window->startTraining(); // as Fine-tune with this plan would
    QCOMPARE(m_window->runsModel()->rowCount(), runs);
    QVERIFY2(m_window->errorText().contains("An analysis is running"), qPrintable(m_window->errorText()));
    s->stop();
    QVERIFY(done.wait(kRunTimeoutMs));
    QTRY_VERIFY(trainAct->isEnabled());
    QVERIFY(m_window->trainingPanel()->trainButton()->toolTip().startsWith("Starts a run"));

    TrainConfig c = m_window->trainingPanel()->config();
    c.precision = PrecisionConfig{};
    c.precision.strategy = Strategy::Fp32;
    c.epochs = 3;
    m_window->trainingPanel()->setConfig(c);
    QSignalSpy ended(m_window.get(), &MainWindow::runEnded);
    m_window->startTraining();
    QVERIFY(m_window->isTraining());
    for (QPushButton* run : {s->runButton(), m_view->search()->runButton()}) {
        QVERIFY(!run->isEnabled());
        QVERIFY2(run->toolTip().contains("a training run is in progress"), qPrintable(run->toolTip()));
    }
    m_window->stopTraining();
    QVERIFY(ended.wait(kRunTimeoutMs));
    for (QPushButton* run : {s->runButton(), m_view->search()->runButton()}) {
        QVERIFY(run->isEnabled());
        QVERIFY(!run->toolTip().contains("a training run is in progress"));
    }
    m_window->selectRuns({1});
}

void TestGuiAnalysis::closingMidAnalysis()
{
    // Closing the window while a search runs stops it within one evaluation and joins its thread.
    SearchView* s = m_view->search();
    s->setFormats({"int8", "int6", "int5", "int4", "int3", "int2"});
    s->setCalibrations({"minmax", "mse", "percentile"});
    s->setMaxEvaluations(500);
    QSignalSpy progressed(s->progressBar(), &QProgressBar::valueChanged);
    s->run();
    QVERIFY(s->isRunning());
    QTRY_VERIFY_WITH_TIMEOUT(progressed.count() > 1, kRunTimeoutMs); // under way
    QElapsedTimer t;
    t.start();
    m_window->close();
    m_window.reset();
    m_view = nullptr;
    // The whole search would take several seconds (release) and far longer under sanitizers, so the
    // bound, scaled by the instrumentation's cost there (QS_SANITIZER_RUN: 15 s; TSan on the loaded
    // machine closed in 5.7 s), still tells a stop within one evaluation from a finished search.
    const qint64 bound = qint64(3000 * quantscope::testing::sanitizerSlowdown());
    qInfo("closed in %lld ms (bound %lld ms)", static_cast<long long>(t.elapsed()), static_cast<long long>(bound));
    QVERIFY2(t.elapsed() < bound, qPrintable(QString::number(t.elapsed())));
}

void TestGuiAnalysis::screenshotsOfSeedCnn()
{
    const QString dir = qEnvironmentVariable("QS_ANALYSIS_SHOT");
    const QString model = qEnvironmentVariable("QS_ANALYSIS_MODEL");
    if (dir.isEmpty() || model.isEmpty()) QSKIP("QS_ANALYSIS_SHOT=DIR and QS_ANALYSIS_MODEL=seed-cnn.qsm save the screenshots");
    m_window.reset();
    MainWindowOptions o;
    o.useSettings = false;
    o.dataDir = qEnvironmentVariable("QS_ANALYSIS_DATA", QString::fromLatin1(kDefaultDataDir));
    auto w = std::make_unique<MainWindow>(o);
    w->resize(1600, 1000);
    w->show();
    if (!w->dataset()) {
        QSignalSpy r(w.get(), &MainWindow::datasetReady);
        QVERIFY(r.wait(60000));
    }
    QVERIFY(w->loadModelFile(model));
    AnalysisView* v = w->analysisView();
    v->setValidationImages(qEnvironmentVariableIntValue("QS_ANALYSIS_VALIDATION") > 0 ? qEnvironmentVariableIntValue("QS_ANALYSIS_VALIDATION")
                                                                                        : 5000);
    for (int i = 0; i < w->tabs()->count(); ++i)
        if (w->tabs()->widget(i)->isAncestorOf(v)) w->tabs()->setCurrentIndex(i);
    SensitivityView* s = v->sensitivity();
    s->setFormats({"int8", "int4", "int2"});
    QSignalSpy sdone(s, &SensitivityView::analysisFinished);
    s->run();
    QVERIFY(sdone.wait(600000));
    QVERIFY2(sdone.first().at(0).toBool(), qPrintable(sdone.first().at(1).toString()));
    qInfo("sensitivity: %s", qPrintable(s->statusText()));
    QTest::qWait(200);
    QVERIFY(w->grab().save(dir + "/analysis-sensitivity.png"));
    QVERIFY(s->openHistogram(2, 2));
    QTest::qWait(200);
    QVERIFY(s->histogramDialog()->grab().save(dir + "/analysis-histogram.png"));
    s->histogramDialog()->close();

    v->pages()->setCurrentIndex(1);
    if (const int n = qEnvironmentVariableIntValue("QS_ANALYSIS_SEARCH_VALIDATION"); n > 0) v->setValidationImages(n);
    SearchView* q = v->search();
    q->setFormats({"int8", "int4", "int3", "int2"});
    q->setCalibrations({"minmax", "mse"});
    q->setBudget(SearchView::Budget::MaxDrop, 1.0);
    QSignalSpy qdone(q, &SearchView::searchFinished);
    q->run();
    QVERIFY(qdone.wait(1200000));
    QVERIFY2(qdone.first().at(0).toBool(), qPrintable(qdone.first().at(1).toString()));
    qInfo("search: %s", qPrintable(q->statusText()));
    QTest::qWait(200);
    QVERIFY(w->grab().save(dir + "/analysis-search.png"));
    QVERIFY(q->chart()->grab().save(dir + "/analysis-pareto.png"));
}

void TestGuiAnalysis::cleanupTestCase() { m_window.reset(); }

// fp16's clip range (+-65504) is far beyond any weight: the axis stays on the weights (it ran to
// +-100000 and drew them as one bar), and the legend says the clip lines are off it.
// A 1024x700 window (tester 12 #2): the note beside the Model combo wrapped into about nine lines
// and pushed the search's chart down to a strip. It takes a row of its own under the fields then,
// a few lines high, and the chart, scrolled to, is whole in the tab; a wide window keeps the note
// beside the fields (one row less).
void TestGuiAnalysis::narrowTabKeepsTheChart()
{
    const QSize before = m_window->size();
    m_view->pages()->setCurrentIndex(1);
    SearchView* s = m_view->search();
    const QLabel* note = m_view->findChild<QLabel*>("analysisNote");
    m_view->setValidationImages(100000); // the note at its longest: "...leave room for 450 validation images, not 100000"
    m_window->resize(1024, 700);
    QCoreApplication::processEvents();
    QCoreApplication::processEvents();
    const int lines = note->height() / note->fontMetrics().lineSpacing();
    QVERIFY2(lines <= 3, qPrintable(QString("the note is %1 px high (%2 lines) and %3 px wide: %4").arg(note->height()).arg(lines).arg(note->width()).arg(note->text())));
    auto* scroll = m_window->findChild<QScrollArea*>("analysisScroll");
    QVERIFY(scroll);
    ParetoChart* chart = s->chart();
    const QPoint at = chart->mapTo(scroll->widget(), QPoint(chart->width() / 2, chart->height() / 2));
    scroll->ensureVisible(at.x(), at.y(), chart->width() / 2 + 8, chart->height() / 2 + 8);
    QCoreApplication::processEvents();
    const QRect inView(chart->mapTo(scroll->viewport(), QPoint(0, 0)), chart->size());
    QVERIFY2(chart->height() >= chart->minimumHeight() && scroll->viewport()->rect().contains(inView),
             qPrintable(QString("chart %1x%2 at %3,%4; the scroll area shows %5x%6").arg(chart->width()).arg(chart->height()).arg(inView.x()).arg(inView.y())
                            .arg(scroll->viewport()->width()).arg(scroll->viewport()->height())));
    m_window->resize(before);
    QCoreApplication::processEvents();
    QVERIFY(!m_view->noteHasOwnRow());
    QCOMPARE(note->mapTo(m_view, QPoint(0, 0)).y() <= m_view->sourceCombo()->mapTo(m_view, QPoint(0, 0)).y() + m_view->sourceCombo()->height(), true);
    m_view->setValidationImages(200);
    m_view->pages()->setCurrentIndex(0);
}

void TestGuiAnalysis::fp16HistogramZoomsToTheWeights()
{
    LayerStats s;
    s.format = "fp16";
    for (int i = 0; i <= 20; ++i) s.binEdges.push_back(-0.3 + 0.03 * i);
    s.fp32Hist.assign(20, 10);
    s.quantHist.assign(20, 10);
    s.tensorMin = -0.29f;
    s.tensorMax = 0.28f;
    s.clipLow = -65504.0f;
    s.clipHigh = 65504.0f;
    HistogramChart chart;
    chart.setStats(&s, false);
    QVERIFY2(chart.xAxis()->max() < 2.0 && chart.xAxis()->min() > -2.0,
             qPrintable(QString("axis %1..%2").arg(chart.xAxis()->min()).arg(chart.xAxis()->max())));
    // An integer grid's clip range near the weights stays on the axis.
    s.format = "int8";
    s.clipLow = -0.4f;
    s.clipHigh = 0.4f;
    chart.setStats(&s, false);
    QVERIFY(chart.xAxis()->min() <= -0.4 && chart.xAxis()->max() >= 0.4);
}

QTEST_MAIN(TestGuiAnalysis)
#include "tst_gui_analysis.moc"
