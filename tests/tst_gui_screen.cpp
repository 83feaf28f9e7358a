// The window on the screens people have (issue 13): run under the offscreen platform with a
// screen of QS_SCREEN (WxH, e.g. 1366x768; tests/cmake_gui_tests.cmake writes the platform's
// screen file). The first window fits the available geometry; Train (toolbar and Training dock),
// the charts and the runs table lie inside the screen; a saved geometry larger than the screen
// is clamped to it at the next start; from 1366x768 up the Analysis tab fits without scrolling,
// and in a 1024x700 window it fits the width (it scrolls down only).
// QS_SHOT_DIR: also save a screenshot of the window there,
// and (tourShots) train four small runs on a fixture and save every chart tab, the Layers tab
// after Compare and the Analysis tab after a sensitivity run and a search.
#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "analysis_view.h"
#include "layer_compare_view.h"
#include "chart_view.h"
#include "main_window.h"
#include "pareto_chart.h"
#include "search_view.h"
#include "sensitivity_view.h"
#include "training_panel.h"

#include "gui_window_fixtures.h"

#include <QAction>
#include <QApplication>
#include <QDir>
#include <QChart>
#include <QDialog>
#include <QGraphicsScene>
#include <QGraphicsTextItem>
#include <QProgressBar>
#include <QPushButton>
#include <QScreen>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QStandardPaths>
#include <QHeaderView>
#include <QTableView>
#include <QTableWidget>
#include <QComboBox>
#include <QTabWidget>
#include <QToolBar>
#include <QtTest>

using namespace quantscope;

namespace {

// The texts Qt Charts cut to fit ("SQNR of the layer's output vs FP3...", a legend entry's
// "clipped by t..."), after the chart's layout.
QStringList cutTexts(ChartView* view)
{
    QCoreApplication::processEvents();
    (void)view->grab();
    QStringList out;
    for (QGraphicsItem* item : view->scene()->items())
        if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible() && t->toPlainText().endsWith(QLatin1String("...")))
            out << t->toPlainText();
    return out;
}

QRect globalRect(const QWidget* w) { return QRect(w->mapToGlobal(QPoint(0, 0)), w->size()); }

// A search report whose weakest plans (uniform int2, greedy steps that went too far) lie below the
// chart's accuracy range, so that its title names them on a second line.
MixedSearchReport offChartReport()
{
    MixedSearchReport r;
    r.fp32Accuracy = 0.99;
    r.images = 200;
    const auto add = [&](const char* label, double percent, double accuracy, bool uniform, bool front) {
        EvaluatedPlan e;
        e.label = label;
        e.bytes = static_cast<std::uint64_t>(percent * 1000);
        e.accuracy = accuracy;
        e.uniform = uniform;
        e.onFront = front;
        e.plan.defaults.format = uniform ? std::string(label).substr(8, 4) : "int8";
        r.plans.push_back(e);
    };
    add("uniform int8 (minmax)", 25, 0.99, true, true);
    add("uniform int4 (minmax)", 12.5, 0.985, true, true);
    add("greedy step 3: layer1.conv1 int2 (minmax)", 10, 0.98, false, true);
    add("uniform int2 (minmax)", 6.3, 0.61, true, false);
    add("greedy step 17: conv1 int2 (minmax)", 8, 0.55, false, false);
    add("greedy step 18: layer2.shortcut int2 (minmax)", 7.5, 0.52, false, false);
    add("greedy step 19: layer3.conv2 int2 (minmax)", 7, 0.48, false, false);
    r.chosen = 2;
    r.evaluations = r.plans.size();
    return r;
}

// The part of `w` not hidden by the scroll areas (and other ancestors) it sits in, in global coordinates.
QRect visibleGlobalRect(const QWidget* w)
{
    const QRect visible = w->visibleRegion().boundingRect();
    return QRect(w->mapToGlobal(visible.topLeft()), visible.size());
}

} // namespace

class TestGuiScreen : public QObject {
    Q_OBJECT
private slots:
    void initTestCase()
    {
        const QStringList wh = qEnvironmentVariable("QS_SCREEN").split(QLatin1Char('x'));
        QVERIFY2(wh.size() == 2, "set QS_SCREEN=WxH and the offscreen platform's configfile (see cmake_gui_tests.cmake)");
        m_screen = QSize(wh[0].toInt(), wh[1].toInt());
        // The platform really has that screen, otherwise the test would prove nothing.
        QCOMPARE(QGuiApplication::primaryScreen()->geometry().size(), m_screen);
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("QuantScopeTest"));
        QCoreApplication::setApplicationName(QStringLiteral("tst_gui_screen"));
        QSettings().clear();
    }

    void firstWindowFits()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const QRect avail = w.screen()->availableGeometry();
        QVERIFY2(avail.contains(w.frameGeometry()),
                 qPrintable(QStringLiteral("window %1x%2 at %3,%4 on %5x%6").arg(w.frameGeometry().width()).arg(w.frameGeometry().height())
                                .arg(w.frameGeometry().x()).arg(w.frameGeometry().y()).arg(avail.width()).arg(avail.height())));

        // Train, Pause, Stop on the toolbar, inside the screen and not covered.
        auto* bar = w.findChild<QToolBar*>(QStringLiteral("runToolBar"));
        QVERIFY(bar);
        for (const char* name : {"trainAction", "stopAction"}) {
            auto* act = w.findChild<QAction*>(QString::fromLatin1(name));
            QVERIFY(act);
            QWidget* button = bar->widgetForAction(act);
            QVERIFY2(button && button->isVisible(), name);
            QVERIFY2(avail.contains(visibleGlobalRect(button)) && visibleGlobalRect(button).size() == button->size(), name);
        }
        // The Training dock's Train button: its scroll area reaches it, and then it is on screen.
        QPushButton* train = w.trainingPanel()->trainButton();
        QScrollArea* scroll = nullptr;
        for (QWidget* p = train->parentWidget(); p && !scroll; p = p->parentWidget()) scroll = qobject_cast<QScrollArea*>(p);
        QVERIFY(scroll);
        scroll->ensureWidgetVisible(train);
        QCoreApplication::processEvents();
        QVERIFY2(avail.contains(visibleGlobalRect(train)) && visibleGlobalRect(train).size() == train->size(),
                 "the Training dock's Train button is not reachable on screen");
        // The charts and the runs table: wholly inside the screen, with a usable size.
        for (const char* name : {"chartTabs", "lossChart", "accuracyChart", "runsTable"}) {
            auto* c = w.findChild<QWidget*>(QString::fromLatin1(name));
            QVERIFY2(c && c->isVisible(), name);
            QVERIFY2(avail.contains(globalRect(c)), name);
            QVERIFY2(c->width() >= 200 && c->height() >= 100, name);
        }
        // The runs table shows its last column (Status) and three rows without scrolling.
        auto* table = w.findChild<QTableView*>(QStringLiteral("runsTable"));
        QVERIFY(table);
        const int status = table->model()->columnCount() - 1;
        QVERIFY2(table->horizontalHeader()->sectionViewportPosition(status) + 40 <= table->viewport()->width(),
                 qPrintable(QStringLiteral("Status column at x %1 of a %2-pixel table")
                                .arg(table->horizontalHeader()->sectionViewportPosition(status)).arg(table->viewport()->width())));
        QVERIFY2(table->viewport()->height() >= 3 * table->verticalHeader()->defaultSectionSize(),
                 qPrintable(QStringLiteral("runs table %1 pixels high").arg(table->viewport()->height())));
        const QString shots = qEnvironmentVariable("QS_SHOT_DIR");
        if (!shots.isEmpty()) {
            QDir().mkpath(shots);
            QVERIFY(w.grab().save(QDir(shots).filePath(QStringLiteral("window-%1x%2.png").arg(m_screen.width()).arg(m_screen.height()))));
        }
    }

    // A geometry saved on a bigger screen (or moved off it) comes back clamped to this one.
    void savedGeometryIsClamped()
    {
        MainWindowOptions o{true, QString(), false};
        {
            MainWindow w(o);
            w.show();
            QVERIFY(QTest::qWaitForWindowExposed(&w));
            w.setGeometry(700, 500, 1900, 1150);
            QCoreApplication::processEvents();
            w.close(); // saves the settings
        }
        MainWindow w(o);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const QRect avail = w.screen()->availableGeometry();
        QVERIFY2(avail.contains(w.geometry()), qPrintable(QStringLiteral("%1x%2 at %3,%4").arg(w.width()).arg(w.height()).arg(w.x()).arg(w.y())));
        QSettings().clear();
    }

    // The Layers and Analysis tabs' charts on this screen: a plot of a readable size, and no axis
    // title, legend entry or title line cut to "..." (at 1366x768 the SQNR axis read "SQNR of the
    // layer's output vs FP3...", the search's "validation accura...", and its title's list of the
    // plans below the chart "greedy step 17: conv1 int2 (mi...").
    void chartsReadable()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        LayerCompareView* layers = w.layerCompareView();
        LayerComparisonReport r;
        r.thresholdDb = 20;
        r.images = 256;
        for (const char* block : {"layer1", "layer2", "layer3"})
            for (const char* part : {"conv1", "bn1", "relu1", "conv2", "bn2", "shortcut", "add", "relu2"}) {
                LayerComparison l;
                l.layer = std::string(block) + "." + part;
                l.sqnrDb = 30;
                l.aloneSqnrDb = 35;
                r.layers.push_back(l);
            }
        w.tabs()->setCurrentWidget(layers);
        layers->showReport(r, QStringLiteral("Run #4, int8 weights (channel-wise), uint8 activations"));
        auto* search = w.analysisView()->search();
        w.analysisView()->pages()->setCurrentWidget(search);
        // Plans below the chart: the title's second line names them as far as the width allows
        // (it named three, cut at 1366x768: "greedy step 17: conv1 int2 (mi...").
        search->chart()->setReport(offChartReport(), 100000, 2.0, std::nullopt);
        search->chart()->setTitleFor(QStringLiteral("run #4"));
        for (ChartView* chart : {layers->chart(), static_cast<ChartView*>(search->chart())}) {
            for (int i = 0; i < w.tabs()->count(); ++i)
                if (w.tabs()->widget(i)->isAncestorOf(chart)) w.tabs()->setCurrentIndex(i);
            QCoreApplication::processEvents();
            for (QWidget* p = chart->parentWidget(); p; p = p->parentWidget())
                if (auto* scroll = qobject_cast<QScrollArea*>(p)) {
                    QCoreApplication::processEvents();
                    // Not ensureWidgetVisible: a QGraphicsView answers it with its scene's cursor rectangle.
                    const QPoint at = chart->mapTo(scroll->widget(), QPoint(chart->width() / 2, chart->height() / 2));
                    scroll->ensureVisible(at.x(), at.y(), chart->width() / 2 + 8, chart->height() / 2 + 8);
                }
            QCoreApplication::processEvents();
            const QString name = chart->title();
            QVERIFY2(cutTexts(chart).isEmpty(), qPrintable(QStringLiteral("%1 (%2x%3): ").arg(name).arg(chart->width()).arg(chart->height()) +
                                                           cutTexts(chart).join(QStringLiteral(" | "))));
            if (chart == search->chart())
                QVERIFY2(chart->chart()->title().contains(QLatin1String("below the chart")), qPrintable(chart->chart()->title()));
            const QRectF plot = chart->chart()->plotArea();
            QVERIFY2(plot.height() >= 150 && plot.width() >= 300,
                     qPrintable(QStringLiteral("%1: plot %2x%3").arg(name).arg(plot.width()).arg(plot.height())));
            // Wholly in view once scrolled to, not half hidden below a scroll area's edge.
            QVERIFY2(w.screen()->availableGeometry().contains(globalRect(chart)), qPrintable(name));
            for (QWidget* p = chart->parentWidget(); p; p = p->parentWidget())
                if (auto* scroll = qobject_cast<QScrollArea*>(p)) {
                    const QRect inView(chart->mapTo(scroll->viewport(), QPoint(0, 0)), chart->size());
                    QVERIFY2(scroll->viewport()->rect().contains(inView),
                             qPrintable(QStringLiteral("%1: at %2,%3 %4x%5, the scroll area shows %6x%7").arg(name).arg(inView.x()).arg(inView.y())
                                            .arg(inView.width()).arg(inView.height()).arg(scroll->viewport()->width()).arg(scroll->viewport()->height())
                                            + QStringLiteral(" content %1 high, scroll max %2 at %3").arg(scroll->widget()->height()).arg(scroll->verticalScrollBar()->maximum()).arg(scroll->verticalScrollBar()->value())));
                }
        }
    }

    // The Analysis tab on a 1366x768 screen: each page's controls, results and their buttons are in
    // view at once, without scrolling, and the search's chart is readable (a plot of at least
    // 300x150 px). Both pages needed scrolling there: the search's chart began below the tab.
    void analysisTabFits()
    {
        if (m_screen.width() < 1366 || m_screen.height() < 768)
            QSKIP("the Analysis tab fits from 1366x768 up; on smaller screens it scrolls (chartsReadable checks its chart there)");
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        AnalysisView* analysis = w.analysisView();
        for (int i = 0; i < w.tabs()->count(); ++i)
            if (w.tabs()->widget(i)->isAncestorOf(analysis)) w.tabs()->setCurrentIndex(i);
        SearchView* search = analysis->search();
        SensitivityView* sens = analysis->sensitivity();
        search->chart()->setReport(offChartReport(), 100000, 2.0, std::nullopt);
        search->chart()->setTitleFor(QStringLiteral("run #4"));
        search->selectPlan(offChartReport().chosen);
        const QWidget* tab = w.tabs()->currentWidget();
        const QRect tabRect = globalRect(tab);
        for (QWidget* page : {static_cast<QWidget*>(sens), static_cast<QWidget*>(search)}) {
            analysis->pages()->setCurrentWidget(page);
            QCoreApplication::processEvents();
            QList<QWidget*> needed{analysis->sourceCombo(), analysis->pages()};
            if (page == search)
                needed << search->runButton() << search->stopButton() << search->progressBar() << search->chart() << search->planTable()
                       << search->saveButton() << search->fineTuneButton();
            else
                needed << sens->runButton() << sens->stopButton() << sens->progressBar() << sens->heatmap() << sens->modeCombo();
            QTest::qWait(20);
            for (QWidget* n : needed) {
                // A scroll area (a chart, a table) is drawn by its viewport, which covers it.
                const QWidget* drawn = qobject_cast<QAbstractScrollArea*>(n) ? static_cast<QAbstractScrollArea*>(n)->viewport() : n;
                const QString what = QStringLiteral("%1 on the %2 page: %3x%4 at %5,%6, %7x%8 of it shown; the tab is %9x%10 at %11,%12")
                                         .arg(n->objectName().isEmpty() ? QString::fromLatin1(n->metaObject()->className()) : n->objectName())
                                         .arg(page == search ? QStringLiteral("search") : QStringLiteral("sensitivity"))
                                         .arg(n->width()).arg(n->height()).arg(globalRect(n).x()).arg(globalRect(n).y())
                                         .arg(visibleGlobalRect(drawn).width()).arg(visibleGlobalRect(drawn).height())
                                         .arg(tabRect.width()).arg(tabRect.height()).arg(tabRect.x()).arg(tabRect.y());
                QVERIFY2(n->isVisible() && visibleGlobalRect(drawn).size() == drawn->size() && tabRect.contains(globalRect(n)), qPrintable(what));
            }
            if (auto* scroll = w.findChild<QScrollArea*>(QStringLiteral("analysisScroll")))
                QVERIFY2(scroll->verticalScrollBar()->maximum() == 0 && scroll->horizontalScrollBar()->maximum() == 0,
                         qPrintable(QStringLiteral("the Analysis tab scrolls %1 px down, %2 px across")
                                        .arg(scroll->verticalScrollBar()->maximum()).arg(scroll->horizontalScrollBar()->maximum())));
        }
        QVERIFY2(cutTexts(search->chart()).isEmpty(), qPrintable(cutTexts(search->chart()).join(QStringLiteral(" | "))));
        const QRectF plot = search->chart()->chart()->plotArea();
        QVERIFY2(plot.height() >= 150 && plot.width() >= 300, qPrintable(QStringLiteral("plot %1x%2").arg(plot.width()).arg(plot.height())));
    }

    // A 1024x700 window (tester finding: the Analysis tab scrolled across): every page of the
    // Analysis tab fits the tab's width, with no horizontal scroll bar, and nothing in it is
    // squeezed below its minimum (the view's and the page's minimumSizeHint width are at most the
    // width the tab's scroll area shows), with a search's plan in the table beside the chart.
    // QS_SHOT_DIR: also saves the window on each page.
    void analysisFits1024()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        w.resize(1024, 700);
        AnalysisView* analysis = w.analysisView();
        for (int i = 0; i < w.tabs()->count(); ++i)
            if (w.tabs()->widget(i)->isAncestorOf(analysis)) w.tabs()->setCurrentIndex(i);
        SearchView* search = analysis->search();
        search->chart()->setReport(offChartReport(), 100000, 2.0, std::nullopt);
        search->chart()->setTitleFor(QStringLiteral("run #4"));
        search->selectPlan(offChartReport().chosen);
        auto* scroll = w.findChild<QScrollArea*>(QStringLiteral("analysisScroll"));
        QVERIFY(scroll);
        QTest::qWait(20);
        QCOMPARE(w.width(), 1024);
        for (int p = 0; p < analysis->pages()->count(); ++p) {
            analysis->pages()->setCurrentIndex(p);
            QWidget* page = analysis->pages()->currentWidget();
            QCoreApplication::processEvents();
            QCoreApplication::processEvents();
            const int shown = scroll->viewport()->width();
            const QString what = QStringLiteral("%1 page at 1024x700: the tab shows %2 px; the view needs %3 px (is %4), the page %5 px (is %6)")
                                     .arg(analysis->pages()->tabText(p))
                                     .arg(shown)
                                     .arg(analysis->minimumSizeHint().width())
                                     .arg(analysis->width())
                                     .arg(page->minimumSizeHint().width())
                                     .arg(page->width());
            if (const QString dir = qEnvironmentVariable("QS_SHOT_DIR"); !dir.isEmpty()) { // the page's top, then its bottom
                QDir().mkpath(dir);
                QVERIFY(w.grab().save(QDir(dir).filePath(QStringLiteral("analysis-%1-1024x700.png").arg(p))));
                QCoreApplication::processEvents();
                scroll->verticalScrollBar()->setValue(scroll->verticalScrollBar()->maximum());
                QCoreApplication::processEvents();
                QVERIFY(w.grab().save(QDir(dir).filePath(QStringLiteral("analysis-%1-1024x700-scrolled.png").arg(p))));
                scroll->verticalScrollBar()->setValue(0);
            }
            QVERIFY2(!scroll->horizontalScrollBar()->isVisible() && scroll->horizontalScrollBar()->maximum() == 0, qPrintable(what));
            QVERIFY2(analysis->minimumSizeHint().width() <= shown && analysis->width() <= shown, qPrintable(what));
            QVERIFY2(page->minimumSizeHint().width() <= page->width(), qPrintable(what));
        }
    }

    // Not a check: pictures for a person to look at (QS_SHOT_DIR; skipped without it).
    void tourShots()
    {
        const QString dir = qEnvironmentVariable("QS_SHOT_DIR");
        if (dir.isEmpty()) QSKIP("QS_SHOT_DIR=DIR saves the tour's screenshots there");
        QDir().mkpath(dir);
        QTemporaryDir data;
        QVERIFY(data.isValid());
        testing::writeFixture(data.path(), 900, 200, 11);
        MainWindowOptions o{false, data.path(), true};
        o.quietExport = true;
        MainWindow w(o);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        if (!w.dataset()) {
            QSignalSpy ready(&w, &MainWindow::datasetReady);
            QVERIFY(ready.wait(testing::kLoadTimeoutMs));
        }
        const auto train = [&](const char* model, Strategy strategy, const char* granularity, std::size_t epochs) {
            TrainConfig c = w.trainingPanel()->config();
            c.model = model;
            c.precision.strategy = strategy;
            c.precision.granularity = granularity;
            c.epochs = epochs;
            c.batchSize = 32;
            w.trainingPanel()->setConfig(c);
            QSignalSpy ended(&w, &MainWindow::runEnded);
            w.startTraining();
            QVERIFY(ended.wait(testing::kRunTimeoutMs));
        };
        train("lenet5", Strategy::Fp32, "channel", 3);
        train("seed-cnn", Strategy::Qat, "channel", 3);
        train("seed-cnn", Strategy::Qat, "tensor", 3);
        train("resnet8", Strategy::Fp32, "channel", 1);
        const QString size = QStringLiteral("%1x%2").arg(m_screen.width()).arg(m_screen.height());
        const auto shot = [&](QWidget* widget, const QString& name) {
            QTest::qWait(300);
            QVERIFY(widget->grab().save(QDir(dir).filePath(name + QLatin1Char('-') + size + QStringLiteral(".png"))));
        };
        const auto tab = [&](QWidget* page) {
            for (int i = 0; i < w.tabs()->count(); ++i)
                if (w.tabs()->widget(i) == page || w.tabs()->widget(i)->isAncestorOf(page)) w.tabs()->setCurrentIndex(i);
        };
        w.selectRuns({3, 2});
        w.tabs()->setCurrentIndex(0);
        shot(&w, QStringLiteral("tour-curves-3-2"));
        w.selectRuns({1, 2, 3});
        shot(&w, QStringLiteral("tour-curves-1-2-3"));
        w.selectRuns({2});
        w.tabs()->setCurrentIndex(1);
        shot(&w, QStringLiteral("tour-histograms"));
        w.selectRuns({3, 2});
        w.tabs()->setCurrentIndex(3);
        shot(&w, QStringLiteral("tour-sqnr"));

        w.selectRuns({4});
        LayerCompareView* layers = w.layerCompareView();
        tab(layers);
        QSignalSpy compared(layers, &LayerCompareView::compareFinished);
        layers->compare();
        QVERIFY(compared.wait(testing::kRunTimeoutMs));
        shot(&w, QStringLiteral("tour-layers"));

        AnalysisView* analysis = w.analysisView();
        analysis->setValidationImages(200);
        analysis->setCalibrationImages(100);
        tab(analysis);
        SensitivityView* sens = analysis->sensitivity();
        sens->setFormats({"int8", "int4", "int2"});
        QSignalSpy sensDone(sens, &SensitivityView::analysisFinished);
        sens->run();
        QVERIFY(sensDone.wait(testing::kRunTimeoutMs));
        shot(&w, QStringLiteral("tour-analysis-sensitivity"));
        QVERIFY(sens->openHistogram(2, 1));
        shot(sens->histogramDialog(), QStringLiteral("tour-analysis-histogram"));
        sens->histogramDialog()->close();
        analysis->pages()->setCurrentIndex(1);
        SearchView* search = analysis->search();
        search->setFormats({"int8", "int4", "int2"});
        search->setBudget(SearchView::Budget::MaxDrop, 2.0);
        QSignalSpy searchDone(search, &SearchView::searchFinished);
        search->run();
        QVERIFY(searchDone.wait(testing::kRunTimeoutMs));
        shot(&w, QStringLiteral("tour-analysis-search"));
        auto* scroll = w.findChild<QScrollArea*>(QStringLiteral("analysisScroll"));
        QVERIFY(scroll);
        scroll->verticalScrollBar()->setValue(scroll->verticalScrollBar()->maximum()); // the chart, as a user scrolls to it
        shot(&w, QStringLiteral("tour-analysis-search-scrolled"));
    }

private:
    QSize m_screen;
};

QTEST_MAIN(TestGuiScreen)
#include "tst_gui_screen.moc"
