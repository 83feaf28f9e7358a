// The Analysis tab's Mixed-bit search page, offscreen, on a small model trained in the window on an
// IDX fixture: the chart draws every evaluated plan, the front, the uniform plans (labelled) and
// the chosen plan, shows a clicked plan's layers, Save plan writes a file the plan parser reads
// back, the Training dock loads and saves plan files, a budget below the smallest plan is refused,
// Stop ends a search early, a 1024x700 window keeps the chart whole, and "Fine-tune with this
// plan" starts a QAT run with the plan from the run's weights. Split from tst_gui_analysis; the
// window is gui_analysis_fixtures.h.
#include "gui_analysis_fixtures.h"

using namespace quantscope;
using namespace gui_analysis_fixtures;

class TestGuiSearch : public AnalysisTabFixture {
    Q_OBJECT
private slots:
    void initTestCase() { openTrainedWindow(); }
    void searchChartAndPlans();
    void narrowTabKeepsTheChart();
    void searchStops();
    void searchRefusesABudgetBelowTheSmallestPlan();
    void fineTuneStartsQat();
    void cleanupTestCase() { m_window.reset(); }

private:
    QString m_planPath;
};

void TestGuiSearch::searchChartAndPlans()
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

// A 1024x700 window (tester 12 #2): the note beside the Model combo wrapped into about nine lines
// and pushed the search's chart down to a strip. It takes a row of its own under the fields then,
// a few lines high, and the chart, scrolled to, is whole in the tab; a wide window keeps the note
// beside the fields (one row less).
void TestGuiSearch::narrowTabKeepsTheChart()
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

void TestGuiSearch::searchStops()
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

// A size budget below the smallest plan the formats allow ends at once, saying so with both sizes,
// and keeps the last search's chart and report (as the CLI's exit 5 before any evaluation).
void TestGuiSearch::searchRefusesABudgetBelowTheSmallestPlan()
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

void TestGuiSearch::fineTuneStartsQat()
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
    const std::string arch = m_window->runsModel()->runById(1)->config.model; // named with its architecture, not "run1-fp32"
    QVERIFY2(run->config.model == arch + "-run1-fp32", run->config.model.c_str());
    // The Training dock shows it: strategy QAT, the plan table holding the plan.
    QCOMPARE(m_window->trainingPanel()->config().precision.layers, plan.layers);
    QCOMPARE(m_window->trainingPanel()->planTable()->plan().layers, plan.layers);
    // The Analysis tab keeps analysing the run it was on.
    QVERIFY(m_view->sourceCombo()->currentText().startsWith("run #1"));
    m_window->stopTraining();
    QVERIFY(ended.wait(kRunTimeoutMs));
}

QTEST_MAIN(TestGuiSearch)
#include "tst_gui_search.moc"
