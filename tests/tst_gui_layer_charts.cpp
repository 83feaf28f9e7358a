// The Layers and Error (SQNR) charts as a user reads them: layer names along the x axis (every k-th
// when they do not fit, elided in the middle; resnet8's whole on the SQNR chart), the axis title
// under the plot, points at 100 dB on the axis, a comparison of another run marked out of date, and
// a selected run without a model (Compare and Export greyed out, saying why). Split from
// tst_gui_charts; the helpers are gui_chart_fixtures.h.
#include "gui_chart_fixtures.h"

using namespace quantscope;
using namespace gui_chart_fixtures;

class TestGuiLayerCharts : public QObject {
    Q_OBJECT

private slots:
    // The Layers chart names its layers along the x axis (it numbered them 0..n-1): every name
    // when they fit, else every k-th (the first always), long ones elided in the middle; and Qt
    // lays them out on screen.
    void layerAxisNamesTheLayers_data()
    {
        QTest::addColumn<int>("layers");
        QTest::addColumn<int>("width");
        QTest::newRow("resnet8-like, 12 layers, wide") << 12 << 1100;
        QTest::newRow("60 long names, narrow") << 60 << 640;
    }

    void layerAxisNamesTheLayers()
    {
        QFETCH(int, layers);
        QFETCH(int, width);
        LayerComparisonReport r;
        r.thresholdDb = 20;
        r.images = 16;
        // resnet8's longest names whole (at most 16 characters' width read "layer2…cut_bn").
        const char* resnet[] = {"conv1", "layer1.conv1", "layer1.conv2", "layer1.add", "layer2.conv1", "layer2.conv2",
                                "layer2.shortcut", "layer2.shortcut_bn", "layer3.conv1", "layer3.shortcut_bn", "pool", "fc"};
        for (int i = 0; i < layers; ++i) {
            LayerComparison l;
            l.index = std::size_t(i);
            l.layer = layers <= 12 ? resnet[i] : "features.block" + std::to_string(i) + ".depthwise.conv";
            l.kind = "Conv2d";
            l.sqnrDb = 40 - 0.3 * i;
            l.aloneSqnrDb = 45 - 0.2 * i;
            r.layers.push_back(l);
        }
        LayerCompareView view;
        view.resize(width, 620); // the Layers tab of a 1500x940 window
        view.show();
        QCoreApplication::processEvents();
        view.showReport(r, QStringLiteral("synthetic"));
        const QStringList labels = view.layerAxis()->categoriesLabels();
        QVERIFY(!labels.isEmpty());
        QStringList names;
        for (const LayerComparison& l : r.layers) names << QString::fromStdString(l.layer);
        if (layers <= 12) QCOMPARE(labels, names);
        QCOMPARE(view.layerAxis()->endValue(labels.first()), 0.0); // the first layer is named
        for (int i = 0; i < labels.size(); ++i) {
            const QString& l = labels[i];
            const int at = int(std::lround(view.layerAxis()->endValue(l)));
            QVERIFY2(at >= 0 && at < layers, qPrintable(l));
            const QString& name = names[at];
            // Elided: the pieces between the ellipses are the name's, in order, and not all of it is cut.
            const QStringList pieces = l.split(QChar(0x2026));
            qsizetype from = 0;
            bool inOrder = pieces.size() == 1 ? l == name : name.startsWith(pieces.first()) && name.endsWith(pieces.last());
            for (const QString& piece : pieces) {
                from = name.indexOf(piece, from);
                inOrder = inOrder && from >= 0;
                from = std::max<qsizetype>(0, from) + piece.size();
            }
            QVERIFY2(inOrder && l.size() - pieces.size() + 1 >= 2, qPrintable(l + QStringLiteral(" on ") + name));
        }
        QVERIFY2(labels.size() >= std::min(layers, 10), qPrintable(labels.join(QLatin1Char(' '))));
        QCOMPARE(QSet<QString>(labels.begin(), labels.end()).size(), labels.size());
        QStringList drawn;
        QCoreApplication::processEvents();
        (void)view.chart()->grab();
        for (QGraphicsItem* item : view.chart()->scene()->items())
            if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible()) drawn << t->toPlainText();
        QVERIFY2(drawn.contains(labels.first()) && drawn.contains(labels.last()), qPrintable(drawn.join(QLatin1Char('|'))));
        if (layers <= 12) // and Qt does not cut them either
            for (const QString& l : labels) QVERIFY2(drawn.contains(l), qPrintable(l + QStringLiteral(" not in ") + drawn.join(QLatin1Char('|'))));
    }

    // The Error (SQNR) chart names resnet8's layers whole: flat they were cut to "layer2.shor..."
    // at 95 pixels a bar, so they turn upright; hovering a bar names its layer.
    void sqnrAxisNamesTheLayersWhole()
    {
        RunPtr r = statsRun(1);
        r->layerStats.back().clear();
        for (const char* name : {"conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "layer2.shortcut",
                                 "layer3.conv1", "layer3.conv2", "layer3.shortcut", "fc"}) {
            LayerStats s;
            s.layer = name;
            s.sqnrDb = 46;
            r->layerStats.back().push_back(s);
        }
        SqnrChart chart;
        chart.resize(1000, 600);
        chart.setRuns({r});
        const QStringList texts = sceneTexts(chart);
        for (const QString& l : chart.layerAxis()->categories())
            QVERIFY2(texts.contains(l), qPrintable(l + QStringLiteral(" not in ") + texts.join(QLatin1Char('|'))));
        for (const QString& t : texts) QVERIFY2(!t.endsWith(QLatin1String("...")), qPrintable(t));
    }

    // Points drawn at 100 dB (an unchanged output) are on the axis, and the note mentions them
    // only when there are some (it did always, under an axis that stopped at 65 dB).
    void layersChartReachesExactPoints()
    {
        const QStringList names{QStringLiteral("conv1"), QStringLiteral("relu"), QStringLiteral("fc")};
        LayerCompareView view;
        view.resize(1000, 600);
        view.showReport(comparison(names, false), QStringLiteral("finite"));
        QVERIFY(view.sqnrAxis()->max() < 100);
        QVERIFY2(!view.statusText().contains(QLatin1String("100 dB")), qPrintable(view.statusText()));
        view.showReport(comparison(names, true), QStringLiteral("one exact"));
        QVERIFY(view.sqnrAxis()->max() >= 100);
        QCOMPARE(view.propagatedSeries()->at(0).y(), 100.0);
        QVERIFY2(view.statusText().contains(QLatin1String("at 100 dB (the top) is exact")), qPrintable(view.statusText()));
    }

    // A comparison of run #1 stays drawn when run #2 is selected, but says whose it is and that it
    // is out of date (the chart kept "Run #1 ..." beside run #2's settings in silence); back on
    // run #1 it is current again. The greyed granularity box shows the run's own (tensor-wise
    // beside "the run's settings (int8, tensor)", where it read "channel-wise").
    void layersResultOfAnotherRunIsMarked()
    {
        const auto bundle = [](const char* granularity) {
            auto b = std::make_shared<ExportBundle>();
            b->config.precision.strategy = Strategy::Qat;
            b->config.precision.format = "int8";
            b->config.precision.granularity = granularity;
            return ExportBundlePtr(b);
        };
        LayerCompareView view;
        view.resize(1000, 600);
        view.setRun(1, bundle("tensor"));
        QCOMPARE(view.formatBox()->currentData().toString(), QStringLiteral("plan"));
        QVERIFY(!view.granularityBox()->isEnabled());
        QCOMPARE(view.granularityBox()->currentText(), QStringLiteral("tensor-wise"));
        const QString title = QStringLiteral("Run #1, the run's settings");
        view.showReport(comparison({QStringLiteral("conv1"), QStringLiteral("fc")}, false), title, 1);
        QCOMPARE(view.chartTitle(), title);
        QVERIFY(!view.statusText().contains(QLatin1String("Out of date")));

        view.setRun(2, bundle("channel"));
        QCOMPARE(view.granularityBox()->currentText(), QStringLiteral("channel-wise"));
        QVERIFY2(view.chartTitle() == QStringLiteral("Out of date (run #2 is selected): ") + title, qPrintable(view.chartTitle()));
        QVERIFY2(view.statusText().contains(QLatin1String("Out of date")) && view.statusText().contains(QLatin1String("run #2 is selected")),
                 qPrintable(view.statusText()));
        // A uniform format takes the uniform granularity back, and the box is enabled.
        view.formatBox()->setCurrentIndex(view.formatBox()->findData(QStringLiteral("int4")));
        QVERIFY(view.granularityBox()->isEnabled());
        QVERIFY(view.granularityBox()->currentData().toString() != QLatin1String("run"));

        view.setRun(1, bundle("tensor"));
        QCOMPARE(view.chartTitle(), title);
        QVERIFY(!view.statusText().contains(QLatin1String("Out of date")));
    }

    // A selected run without a model (stopped, failed, loaded from JSON): the Layers tab greys
    // Compare out and says why, in Export's words, and the last result's title no longer reads as
    // this run's; File > Export is greyed out with the reason as its tooltip (tester 12 #5, #13:
    // Compare re-drew the newest run with a model under its old title, without a word, and Export
    // was offered only to say in a dialog that there was nothing to export).
    void runWithoutModelSaysWhy()
    {
        MainWindowOptions o;
        o.useSettings = false;
        o.autoLoad = false;
        MainWindow w(o);
        auto withModel = lossRun(1, 10, 0, 0.0);
        auto bundle = std::make_shared<ExportBundle>();
        bundle->config.precision.strategy = Strategy::Qat;
        bundle->config.precision.format = "int8";
        withModel->exportBundle = bundle;
        w.runsModel()->addRun(withModel);
        auto stopped = lossRun(2, 10, 0, 0.0);
        stopped->status = RunStatus::Stopped;
        w.runsModel()->addRun(stopped);
        auto* exportAct = w.findChild<QAction*>(QStringLiteral("exportModelAction"));
        QVERIFY(exportAct);

        w.selectRuns({1});
        LayerCompareView* view = w.layerCompareView();
        QVERIFY(view->compareButton()->isEnabled());
        QVERIFY(exportAct->isEnabled());
        const QString title = QStringLiteral("Run #1, int8 weights (channel-wise), uint8 activations");
        view->showReport(comparison({QStringLiteral("conv1"), QStringLiteral("fc")}, false), title, 1);

        w.selectRuns({2});
        QCOMPARE(view->runId(), 2);
        QVERIFY(!view->compareButton()->isEnabled());
        const QString why = QStringLiteral("Run #2 has no model to compare: only runs that trained to the end keep their model.");
        QVERIFY2(view->statusText().startsWith(why), qPrintable(view->statusText()));
        QCOMPARE(view->compareButton()->toolTip(), why);
        QVERIFY2(view->chartTitle() != title && view->chartTitle().startsWith(QLatin1String("Out of date")), qPrintable(view->chartTitle()));
        QVERIFY(!exportAct->isEnabled());
        QCOMPARE(exportAct->toolTip(), QStringLiteral("Run #2 has no model to export: only runs that trained to the end keep their model."));

        // Back on the run with a model: its result and Export again.
        w.selectRuns({1});
        QVERIFY(view->compareButton()->isEnabled());
        QCOMPARE(view->chartTitle(), title);
        QVERIFY(exportAct->isEnabled());
    }

    // Before the first Compare the Layers chart's x-axis title "layer (graph order)" floated at
    // its top left, outside the plot (tester 12 #14): it shows with the layers' names, under them.
    void layerAxisTitleUnderThePlot()
    {
        LayerCompareView view;
        view.resize(900, 620);
        view.show();
        QVERIFY(QTest::qWaitForWindowExposed(&view));
        const auto titleTops = [&] {
            QCoreApplication::processEvents();
            (void)view.chart()->grab();
            QList<qreal> tops;
            for (QGraphicsItem* item : view.chart()->scene()->items())
                if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible() && t->toPlainText() == QLatin1String("layer (graph order)"))
                    tops << t->sceneBoundingRect().top();
            return tops;
        };
        const QList<qreal> before = titleTops();
        QVERIFY2(before.isEmpty(), qPrintable(QString("the title is drawn at y %1").arg(before.value(0))));
        view.showReport(comparison({"conv1", "conv2", "fc1"}, false), QStringLiteral("three layers"));
        const QList<qreal> after = titleTops();
        QCOMPARE(after.size(), 1);
        QVERIFY2(after.first() >= view.chart()->chart()->plotArea().bottom(),
                 qPrintable(QString("title at y %1, the plot ends at %2").arg(after.first()).arg(view.chart()->chart()->plotArea().bottom())));
    }
};

QTEST_MAIN(TestGuiLayerCharts)
#include "tst_gui_layer_charts.moc"
