// The charts as a user reads them: tick labels (never "-0.00", one text per tick), the loss axis
// covering every drawn point (a spike stays on screen), a run keeping its colour whatever else is
// selected, legends listing the runs in the runs table's order, a moved plot area repainting the
// whole view, the histogram and ranges naming the run they show (or why there is nothing to show),
// the loss-scale chart's empty message, and the window at 1024x700. Each draws offscreen and reads
// the texts Qt Charts laid out, not only the numbers given to it. The Layers and SQNR charts are in
// tst_gui_layer_charts.
#include "gui_chart_fixtures.h"
#include "format_text.h"

using namespace quantscope;
using namespace gui_chart_fixtures;

class TestGuiCharts : public QObject {
    Q_OBJECT

private slots:
    // Ranges across zero whose zero tick Qt Charts computed as -2.8e-17 ("-0.00" under "%.2f"),
    // and a +-0.009 range that "%.2f" printed as "-0.01 -0.01 -0.00 0.00 0.00".
    void tickLabelsNeverReadMinusZero_data()
    {
        QTest::addColumn<double>("lo");
        QTest::addColumn<double>("hi");
        QTest::addColumn<bool>("zero");
        QTest::newRow("-0.077..0.405") << -0.07707526166909698 << 0.4050504135210654 << false;
        QTest::newRow("-0.055..0.861") << -0.05512055088421435 << 0.8611478519924716 << false;
        QTest::newRow("-0.454..0.0025") << -0.45354578848589516 << 0.002503096664277694 << false;
        QTest::newRow("-0.009..0.0002") << -0.009015260301538722 << 0.00023299788910302545 << false;
        QTest::newRow("-0.0003..0.0008") << -0.00033426672063045803 << 0.0008415090366609399 << false;
        QTest::newRow("0..2.4 with zero") << 0.3 << 2.4 << true;
        QTest::newRow("-730..12") << -730.0 << 12.0 << false;
    }
    void tickLabelsNeverReadMinusZero()
    {
        QFETCH(double, lo);
        QFETCH(double, hi);
        QFETCH(bool, zero);
        AxisProbe probe;
        probe.set(lo, hi, zero);
        QVERIFY2(probe.axis()->min() <= lo && probe.axis()->max() >= hi,
                 qPrintable(QStringLiteral("axis %1..%2 for data %3..%4").arg(probe.axis()->min()).arg(probe.axis()->max()).arg(lo).arg(hi)));
        const QMap<int, QStringList> rows = numericLabelRows(probe);
        QVERIFY(!rows.isEmpty());
        const QStringList labels = rows.last(); // the bottom axis: the lowest row of numbers
        QVERIFY2(labels.size() >= 3, qPrintable(labels.join(QLatin1Char(' '))));
        for (const QString& l : labels) QVERIFY2(!minusZero().match(l).hasMatch(), qPrintable(labels.join(QLatin1Char(' '))));
        // One text per tick: a label repeated means too few decimals for the step.
        QCOMPARE(QSet<QString>(labels.begin(), labels.end()).size(), labels.size());
    }

    // The same through the weight histogram of a layer whose weights sit just below zero.
    void histogramTicksNeverReadMinusZero()
    {
        LayerStats s;
        s.format = "int8";
        for (int i = 0; i <= 20; ++i) s.binEdges.push_back(-0.0088 + 0.0091 * i / 20.0);
        s.fp32Hist.assign(20, 10);
        s.quantHist.assign(20, 10);
        s.tensorMin = -0.0088f;
        s.tensorMax = 0.0003f;
        s.clipLow = -0.0088f;
        s.clipHigh = 0.0003f;
        HistogramChart chart;
        chart.setStats(&s, false);
        QStringList all;
        for (const QStringList& row : numericLabelRows(chart)) all << row;
        for (const QString& l : all) QVERIFY2(!minusZero().match(l).hasMatch(), qPrintable(all.join(QLatin1Char(' '))));
        const QStringList x = numericLabelRows(chart).last();
        QCOMPARE(QSet<QString>(x.begin(), x.end()).size(), x.size());
    }

    // A one-step loss spike is on screen: the axis reaches it (it covered the smoothed loss only),
    // and the per-step line still holds it after thinning a long run to 2,500 points.
    void lossAxisCoversSpikes_data()
    {
        QTest::addColumn<int>("steps");
        QTest::addColumn<int>("spikeAt");
        QTest::addColumn<double>("spike");
        QTest::newRow("300 steps, 7.5 at 150") << 300 << 150 << 7.5;
        QTest::newRow("300 steps, 3.1 at the last") << 300 << 300 << 3.1;
        QTest::newRow("20000 steps, 9.0 at 12345") << 20000 << 12345 << 9.0;
    }
    void lossAxisCoversSpikes()
    {
        QFETCH(int, steps);
        QFETCH(int, spikeAt);
        QFETCH(double, spike);
        LossChart chart;
        const RunPtr run = lossRun(1, std::size_t(steps), std::size_t(spikeAt), spike);
        chart.setRuns({run});
        QVERIFY2(chart.lossAxis()->max() >= spike,
                 qPrintable(QStringLiteral("loss axis ends at %1, the spike is %2").arg(chart.lossAxis()->max()).arg(spike)));
        QLineSeries* perStep = nullptr;
        for (QAbstractSeries* s : chart.chart()->series())
            if (s->name() == QLatin1String("per step")) perStep = qobject_cast<QLineSeries*>(s);
        QVERIFY(perStep);
        double top = 0;
        for (const QPointF& p : perStep->points()) top = std::max(top, p.y());
        QCOMPARE(top, spike);
        QVERIFY(perStep->count() <= 2501);
        // Overlaid with another run (drawn smoothed only), the primary's spike still sets the axis.
        chart.setRuns({run, lossRun(2, 50, 0, 0)});
        QVERIFY(chart.lossAxis()->max() >= spike);
    }

    // A run that blew up (a loss of 1e21, finite): the loss axis labels its ticks in powers of
    // ten, and the status text too (tester 19: "5000000000000000000000", "10713662395163606.000").
    void blownUpLossPrintsInPowersOfTen()
    {
        LossChart chart;
        chart.setRuns({lossRun(1, 300, 150, 1e21)});
        QCOMPARE(chart.lossAxis()->labelFormat(), QStringLiteral("%.3g"));
        chart.setRuns({lossRun(1, 300, 150, 7.5)});
        QVERIFY(chart.lossAxis()->labelFormat().endsWith(QLatin1Char('f')));
        QCOMPARE(formatLoss(1.0713662395163606e16), QStringLiteral("1.071e+16"));
        QCOMPARE(formatLoss(2.3026), QStringLiteral("2.303"));
    }

    // Run #2 keeps its colour in every chart while the runs beside it change (it was the colour of
    // its place in the selection: red beside #1, blue alone, red again beside #3).
    // The quantized test accuracy is drawn as hollow diamonds, the FP32 one as filled circles, in
    // the plot and in the legend's key: in one shade darker the two read as the same dots, and the
    // two legend keys as the same grey line (tester 19 L7).
    void quantizedAccuracyHasItsOwnMarker()
    {
        AccuracyChart chart;
        std::vector<RunPtr> runs;
        for (int id = 1; id <= 2; ++id) {
            RunPtr r = statsRun(id);
            r->config.precision.strategy = Strategy::Qat;
            r->config.precision.format = "int8";
            r->epochs.front().testAccuracy = 0.75;
            r->epochs.front().quantTestAccuracy = 0.74;
            runs.push_back(r);
        }
        for (std::size_t shown : {std::size_t{1}, std::size_t{2}}) {
            chart.setRuns(std::vector<RunPtr>(runs.begin(), runs.begin() + long(shown)));
            int fp32 = 0, quantized = 0;
            for (QAbstractSeries* s : chart.chart()->series()) {
                auto* line = qobject_cast<QLineSeries*>(s);
                if (!line || !line->pointsVisible()) continue;
                const QString name = s->name();
                if (name.startsWith(QLatin1String("test, quantized"))) {
                    const QImage m = line->lightMarker();
                    QVERIFY2(!m.isNull(), qPrintable(name));
                    QCOMPARE(QColor(m.pixel(m.width() / 2, m.height() / 2)), QColor(Qt::white)); // hollow
                    QCOMPARE(qAlpha(m.pixel(1, 1)), 0);                                       // a diamond's corner
                    ++quantized;
                } else if (name == QLatin1String("test, FP32") || name == QLatin1String("test, FP32 weights") ||
                           name.startsWith(QLatin1Char('#'))) {
                    QVERIFY2(line->lightMarker().isNull(), qPrintable(name)); // Qt's filled circle
                    ++fp32;
                }
            }
            QVERIFY(fp32 >= 1);
            QCOMPARE(quantized, shown == 1 ? 1 : 3); // two runs' series and the legend's key
        }
        // At 1024x700 the chart is about 250 pixels wide: no legend entry is cut ("test, q...",
        // then "quanti..." once the labels were short).
        chart.resize(250, 430);
        chart.show();
        QVERIFY(QTest::qWaitForWindowExposed(&chart));
        QCoreApplication::processEvents();
        (void)chart.grab();
        QStringList cut;
        for (QGraphicsItem* item : chart.scene()->items())
            if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible() && t->toPlainText().endsWith(QLatin1String("...")))
                cut << t->toPlainText();
        QVERIFY2(cut.isEmpty(), qPrintable(cut.join(QStringLiteral(" | "))));
    }

    // The SQNR bars' labels are whole dB alike: Qt printed 48.0 as "48" beside "46.3" (tester 19 L7).
    // Hovering gives the exact value.
    void sqnrLabelsAreWholeDecibels()
    {
        RunPtr r = statsRun(1);
        r->layerStats.back().clear();
        for (auto [name, db] : {std::pair{"conv1", 48.0}, std::pair{"conv2", 46.34}, std::pair{"fc", 102.6}}) {
            LayerStats s;
            s.layer = name;
            s.sqnrDb = db;
            r->layerStats.back().push_back(s);
        }
        SqnrChart chart;
        chart.setRuns({r});
        const QStringList texts = sceneTexts(chart);
        for (const char* label : {"48", "46", "103"}) QVERIFY2(texts.contains(QLatin1String(label)), qPrintable(texts.join('|')));
        for (const QString& t : texts) QVERIFY2(!t.contains(QLatin1String("46.3")) && !t.contains(QLatin1String("e+")), qPrintable(t));
    }

    void runKeepsItsColour()
    {
        const RunPtr r1 = statsRun(1), r2 = statsRun(2), r3 = statsRun(3);
        LossChart loss;
        AccuracyChart accuracy;
        SqnrChart sqnr;
        for (RunChart* chart : std::initializer_list<RunChart*>{&loss, &accuracy, &sqnr}) {
            const char* name = chart == &loss ? "loss" : chart == &accuracy ? "accuracy" : "sqnr";
            chart->setRuns({r1, r2});
            const QColor two = seriesColour(*chart, 2);
            QVERIFY2(two.isValid(), name);
            QVERIFY2(seriesColour(*chart, 1) != two, name);
            chart->setRuns({r2});
            QVERIFY2(seriesColour(*chart, 2) == two, name);
            chart->setRuns({r3, r2});
            QVERIFY2(seriesColour(*chart, 2) == two, name);
            QVERIFY2(seriesColour(*chart, 3).isValid() && seriesColour(*chart, 3) != two, name);
        }
    }

    // The legends of the window's run charts list the runs in the runs table's order, whichever
    // selected row was clicked last (that run, the primary, is drawn fully; its entry came first:
    // rows #1 #2 #3 with #2 clicked last read "#2, #1, #3", and users matched entries to the wrong rows).
    void legendsFollowTheRunsTable_data()
    {
        QTest::addColumn<QList<int>>("selected"); // in click order: the last one is the primary run
        QTest::newRow("#1 #3, then #2") << QList<int>{1, 3, 2};
        QTest::newRow("#1, then #3") << QList<int>{1, 3};
        QTest::newRow("#2 #4, then #3") << QList<int>{2, 4, 3};
        QTest::newRow("all, then #4") << QList<int>{1, 2, 3, 4};
    }
    void legendsFollowTheRunsTable()
    {
        QFETCH(QList<int>, selected);
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.resize(1366, 740);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        for (int id = 1; id <= 4; ++id) {
            RunPtr r = statsRun(id);
            for (BatchEvent& b : r->steps) b.lossScale = 1024.0 * id; // mixed precision: the loss-scale chart draws it
            w.runsModel()->addRun(r);
        }
        w.selectRuns(selected);
        QCoreApplication::processEvents();
        QCOMPARE(w.selectedRuns().front()->id, selected.last());
        QList<int> inTable = selected;
        std::sort(inTable.begin(), inTable.end());
        static const QRegularExpression runEntry(QStringLiteral("^#([0-9]+)\\b"));
        for (RunChart* chart : std::initializer_list<RunChart*>{w.lossChart(), w.accuracyChart(), w.sqnrChart(), w.lossScaleChart()}) {
            w.tabs()->setCurrentIndex(chart == w.lossChart() || chart == w.accuracyChart() ? 0 : w.tabs()->indexOf(chart));
            QCoreApplication::processEvents();
            (void)chart->grab();
            QList<int> legend;
            QStringList labels;
            for (QLegendMarker* m : chart->chart()->legend()->markers()) {
                if (!m->isVisible()) continue;
                labels << m->label();
                if (const auto match = runEntry.match(m->label()); match.hasMatch()) legend << match.captured(1).toInt();
            }
            QVERIFY2(legend == inTable, qPrintable(chart->title() + QStringLiteral(": ") + labels.join(QStringLiteral(" | "))));
        }
    }

    // A run with a per-layer plan in force is not labelled as uniform at its default format: the
    // accuracy legend says "quantized (per-layer plan)", the loss chart's title names the plan, and
    // the CSV's phase column says it for the epochs the plan was in force (progressive's last
    // phase). They said "quantized int8" for layers at int2, int3 and ternary (tester 12 #4).
    void planRunsAreNotCalledUniform()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        RunPtr r = statsRun(1);
        PrecisionConfig& p = r->config.precision;
        p.strategy = Strategy::Progressive;
        p.schedule = "fp32:1,fp16:1,int8:1";
        p.format = "bf16"; // the greyed-out format box's leftover
        LayerOverride fc1;
        fc1.layer = "fc1";
        fc1.format = "int2";
        p.layers = {fc1};
        r->config.epochs = 3;
        r->epochs.clear();
        for (const char* phase : {"fp32", "fp16", "int8"}) {
            EpochEvent e;
            e.epoch = r->epochs.size() + 1;
            e.phase = phase;
            e.testAccuracy = 0.8;
            e.quantTestAccuracy = 0.7;
            r->epochs.push_back(e);
        }
        w.runsModel()->addRun(r);
        w.selectRuns({1});
        w.tabs()->setCurrentIndex(0);
        QCoreApplication::processEvents();
        QStringList names;
        for (QAbstractSeries* series : w.accuracyChart()->chart()->series()) names << series->name();
        QVERIFY2(names.contains(QStringLiteral("test, quantized (per-layer plan)")) && !names.join('|').contains(QLatin1String("quantized int8")),
                 qPrintable(names.join('|')));
        QVERIFY2(w.lossChart()->chart()->title().contains(QLatin1String("per-layer plan")), qPrintable(w.lossChart()->chart()->title()));

        QTemporaryDir out;
        const QString csv = out.filePath(QStringLiteral("plan.csv"));
        QCOMPARE(saveMetricsCsv(csv, {r}), QString());
        QFile f(csv);
        QVERIFY(f.open(QIODevice::ReadOnly));
        const QStringList rows = QString::fromUtf8(f.readAll()).split('\n', Qt::SkipEmptyParts);
        QCOMPARE(rows.size(), 4);
        QVERIFY2(rows[2].contains(QLatin1String(",2,fp16,")), qPrintable(rows[2])); // epoch, phase
        QVERIFY2(rows[3].contains(QLatin1String(",3,per-layer plan (default int8),")), qPrintable(rows[3]));
    }

    // Two runs selected: the accuracy chart's legend goes to the right and its plot area shrinks
    // after setRuns() repainted; the moved area repaints the whole view again (the old tick labels,
    // grid lines and axis title stayed on screen: "80" at two heights).
    // The accuracy axis starts on a labelled tick: a first epoch's 28 % training accuracy sat on
    // an unlabelled stretch from 25 up to the first label, 40 (tester 12 #14).
    void accuracyAxisStartsOnATick_data()
    {
        QTest::addColumn<double>("lowest");
        QTest::newRow("28 %") << 0.28;
        QTest::newRow("47 %") << 0.47;
        QTest::newRow("63 %") << 0.63;
        QTest::newRow("81 %") << 0.81;
        QTest::newRow("97 %") << 0.97;
    }
    void accuracyAxisStartsOnATick()
    {
        QFETCH(double, lowest);
        RunPtr r = std::make_shared<RunRecord>();
        r->id = 1;
        r->status = RunStatus::Done;
        r->config.epochs = 2;
        for (int k = 1; k <= 2; ++k) {
            EpochEvent e;
            e.epoch = std::size_t(k);
            e.trainAccuracy = k == 1 ? lowest : 0.99;
            e.testAccuracy = 0.99;
            r->epochs.push_back(e);
        }
        AccuracyChart chart;
        chart.resize(490, 600);
        chart.setRuns({r});
        chart.refresh();
        auto* y = qobject_cast<QValueAxis*>(chart.chart()->axes(Qt::Vertical).value(0));
        QVERIFY(y);
        QVERIFY2(y->min() <= 100 * lowest, qPrintable(QString::number(y->min())));
        QVERIFY2(std::fmod(y->min() - y->tickAnchor(), y->tickInterval()) == 0.0,
                 qPrintable(QString("from %1, ticks every %2").arg(y->min()).arg(y->tickInterval())));
    }

    void movedPlotAreaRepaintsTheWholeView()
    {
        const auto qatRun = [](int id) {
            RunPtr r = statsRun(id);
            r->config.precision.strategy = Strategy::Qat; // a quantized test accuracy: five legend entries for two runs
            r->config.precision.format = "int8";
            return r;
        };
        AccuracyChart chart;
        chart.resize(490, 600);
        chart.setRuns({qatRun(1)});
        chart.show();
        QVERIFY(QTest::qWaitForWindowExposed(&chart));
        (void)chart.grab();
        const QRectF before = chart.chart()->plotArea();
        QSignalSpy moved(chart.chart(), &QChart::plotAreaChanged);
        chart.setRuns({qatRun(1), qatRun(2)});
        const int afterSetRuns = chart.wholeRepaints();
        QCoreApplication::processEvents();
        (void)chart.grab();
        QCOMPARE(chart.chart()->legend()->alignment(), Qt::AlignRight);
        QVERIFY(chart.chart()->plotArea() != before);
        QVERIFY(moved.count() > 0);
        QVERIFY2(chart.wholeRepaints() > afterSetRuns, "the plot area moved after setRuns() and nothing repainted the whole view");
    }

    // The empty loss-scale chart names every strategy that scales the loss (core/train's
    // LossScaler users: mixed, lowp in fp16/fp8, progressive's float phases); it said "Only the
    // Mixed precision strategy".
    void lossScaleMessageNamesEveryScalingStrategy()
    {
        LossScaleChart chart;
        chart.setRuns({lossRun(1, 40, 0, 0)}); // an FP32-like run: no loss scale reported
        const QString m = chart.emptyMessage();
        for (const char* want : {"Mixed precision", "Pure low precision", "fp16", "fp8", "Progressive"})
            QVERIFY2(m.contains(QLatin1String(want)), qPrintable(m));
        QVERIFY2(!m.contains(QLatin1String("Only")), qPrintable(m));
    }

    // Two runs selected: the Histograms and Ranges titles name the run they show (the row
    // clicked last), their captions say it is one of two, and so does the status bar's SQNR.
    void histogramsNameTheRunShown()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.resize(1366, 740);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        for (int id = 1; id <= 2; ++id) {
            RunPtr r = statsRun(id);
            r->layerStats = {{drawnStats("layer3.conv2", 2)}};
            w.runsModel()->addRun(r);
        }
        w.selectRuns({2, 1}); // #1 clicked last: the primary run
        QCoreApplication::processEvents();
        QCOMPARE(w.selectedRuns().front()->id, 1);
        const QString tag = QStringLiteral("Run #1 \u00b7 layer3.conv2, epoch 2");
        QVERIFY2(w.histogramPanel()->chart()->title().contains(tag), qPrintable(w.histogramPanel()->chart()->title()));
        QVERIFY2(w.rangesPanel()->chart()->title().contains(tag), qPrintable(w.rangesPanel()->chart()->title()));
        QVERIFY2(w.histogramPanel()->caption().contains(QLatin1String("of the 2 selected runs")), qPrintable(w.histogramPanel()->caption()));
        const QString sqnr = w.findChild<QLabel*>(QStringLiteral("sqnrStatus"))->text();
        QVERIFY2(sqnr.startsWith(QStringLiteral("Run #1 \u00b7 layer3.conv2: SQNR")), qPrintable(sqnr));
        w.selectRuns({2});
        QCoreApplication::processEvents();
        QVERIFY2(w.histogramPanel()->chart()->title().contains(QStringLiteral("Run #2 \u00b7 layer3.conv2")), qPrintable(w.histogramPanel()->chart()->title()));
        QVERIFY2(!w.histogramPanel()->caption().contains(QLatin1String("selected runs")), qPrintable(w.histogramPanel()->caption()));
    }

    // A quantizing run with no end-of-epoch statistics yet: the hint says that (it said "Train with
    // a quantizing strategy (e.g. QAT)" under a QAT run), and the empty chart's legend and axes
    // keep nothing of the run shown before (its "clip [...]; 0.00 % clipped", its range; tester 12 #6).
    void histogramWithoutStatsSaysWhy()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        RunPtr drawn = statsRun(1);
        drawn->layerStats = {{drawnStats("conv1", 1)}};
        drawn->config.precision.strategy = Strategy::Qat;
        w.runsModel()->addRun(drawn);
        RunPtr early = lossRun(2, 10, 0, 0.0);
        early->status = RunStatus::Running;
        early->config.precision.strategy = Strategy::Qat;
        w.runsModel()->addRun(early);
        QChart* chart = w.histogramPanel()->chart()->chart();
        const auto legendTexts = [&] {
            QStringList names;
            for (QAbstractSeries* series : chart->series()) names << series->name();
            return names.join(QLatin1Char('|'));
        };
        auto* x = qobject_cast<QValueAxis*>(chart->axes(Qt::Horizontal).value(0));
        QVERIFY(x);
        w.selectRuns({1});
        QVERIFY2(legendTexts().contains(QLatin1String("clipped")), qPrintable(legendTexts()));
        // the red lines are the grid's ends, not where clipping starts (half a step beyond: tester 19)
        QVERIFY2(legendTexts().contains(QLatin1String("grid [")) && !legendTexts().contains(QLatin1String("clip [")),
                 qPrintable(legendTexts()));
        QVERIFY(x->min() < 0);

        w.selectRuns({2});
        const QString caption = w.histogramPanel()->caption();
        QVERIFY2(caption.startsWith(QLatin1String("Run #2 (Quantization-aware training) has no end-of-epoch statistics yet")), qPrintable(caption));
        QVERIFY2(!legendTexts().contains(QLatin1String("clipped")), qPrintable(legendTexts()));
        QVERIFY2(x->min() >= 0, qPrintable(QString::number(x->min())));
        early->status = RunStatus::Stopped;
        w.selectRuns({1});
        w.selectRuns({2});
        QVERIFY2(w.histogramPanel()->caption().contains(QLatin1String("it ended before its first epoch did")), qPrintable(w.histogramPanel()->caption()));
        early->config.precision.strategy = Strategy::Fp32;
        w.selectRuns({1});
        w.selectRuns({2});
        QVERIFY2(w.histogramPanel()->caption().contains(QLatin1String("quantizes no weights")), qPrintable(w.histogramPanel()->caption()));
    }

    // Three runs on a loss chart as wide as at 1366x768 (about 430 pixels): no legend entry is
    // cut ("train (smoot..."), the legend goes to the right; a wide chart keeps it below. At
    // 1024x700 (about 250 pixels) the entries, the title and the step axis's title were cut
    // ("#2 cha...", "train (s...", "training step (..."), and the legend took 39 % of the chart:
    // below 480 pixels the legend reads "#1", "train", "test" (the runs table's swatches give the
    // colours), and the titles are short ("Training loss - 3 runs", "step (batches)").
    void lossLegendIsNotCut_data()
    {
        QTest::addColumn<bool>("sameConfig");
        QTest::addColumn<int>("width");
        QTest::newRow("labels '#1 seed-cnn', '#2 lenet5'") << false << 430;
        QTest::newRow("labels '#1', '#2', '#3'") << true << 430;
        QTest::newRow("at 1024x700: 250 pixels") << false << 250;
    }
    void lossLegendIsNotCut()
    {
        QFETCH(bool, sameConfig);
        QFETCH(int, width);
        LossChart chart;
        // The runs set before the chart is first shown, and again while it is hidden (another tab
        // in front): its legend markers read as invisible both times.
        chart.resize(width, 430);
        chart.setRuns({lossRun(4, 40, 0, 0)});
        chart.show();
        QCoreApplication::processEvents();
        chart.hide();
        if (sameConfig) chart.setRuns({lossRun(1, 40, 0, 0), lossRun(2, 40, 0, 0), lossRun(3, 40, 0, 0)});
        else chart.setRuns({statsRun(1), statsRun(2), statsRun(3)});
        chart.show();
        QCoreApplication::processEvents();
        QStringList cut;
        (void)chart.grab();
        for (QGraphicsItem* item : chart.scene()->items())
            if (auto* t = dynamic_cast<QGraphicsTextItem*>(item); t && t->isVisible() && t->toPlainText().endsWith(QLatin1String("...")))
                cut << t->toPlainText();
        QVERIFY2(cut.isEmpty(), qPrintable(cut.join(QStringLiteral(" | "))));
        QCoreApplication::processEvents(); // the relabelled legend's layout
        const QRectF plot = chart.chart()->plotArea();
        const qreal legendWidth = chart.chart()->legend()->geometry().width();
        QVERIFY2(plot.width() >= 0.4 * width && legendWidth <= 0.3 * width,
                 qPrintable(QString("plot %1, legend %2 of %3 pixels").arg(plot.width()).arg(legendWidth).arg(width)));
        QStringList labels;
        for (QLegendMarker* m : chart.chart()->legend()->markers())
            if (m->isVisible()) labels << m->label();
        if (width < 300) QCOMPARE(labels, QStringList({"#1", "#2", "#3", "train", "test"}));
        chart.resize(1200, 430);
        QCoreApplication::processEvents();
        QCOMPARE(chart.chart()->legend()->alignment(), Qt::AlignBottom);
        labels.clear();
        for (QLegendMarker* m : chart.chart()->legend()->markers())
            if (m->isVisible()) labels << m->label();
        QVERIFY2(labels.contains("train (smoothed)") && chart.chart()->title().contains("colours as in the runs table"), qPrintable(labels.join(" | ")));
    }

    // With QS_CHART_SHOT=DIR under a real X server (QT_QPA_PLATFORM=xcb, e.g. xvfb-run), PNGs of
    // the screen itself (what the display holds, stale pixels included, not a fresh render) for a
    // person to look at: the curves after a second run is selected, the histograms, ranges, SQNR
    // and loss-scale tabs of two resnet8-like runs, and the Layers tab out of date.
    void screenshotsForReview()
    {
        const QString dir = qEnvironmentVariable("QS_CHART_SHOT");
        if (dir.isEmpty() || QGuiApplication::platformName() != QLatin1String("xcb")) QSKIP("QS_CHART_SHOT and an X server");
        const QStringList resnet{QStringLiteral("conv1"), QStringLiteral("layer1.conv1"), QStringLiteral("layer1.conv2"),
                                 QStringLiteral("layer2.conv1"), QStringLiteral("layer2.conv2"), QStringLiteral("layer2.shortcut"),
                                 QStringLiteral("layer3.conv1"), QStringLiteral("layer3.conv2"), QStringLiteral("layer3.shortcut"),
                                 QStringLiteral("fc")};
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.setGeometry(0, 0, 1500, 940);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        for (int id = 1; id <= 2; ++id) {
            RunPtr r = statsRun(id);
            r->config.precision.strategy = Strategy::Qat;
            r->config.precision.format = "int8";
            r->config.precision.granularity = id == 1 ? "channel" : "tensor";
            r->config.model = "resnet8";
            r->config.epochs = 2;
            EpochEvent e;
            e.epoch = 2;
            e.testAccuracy = 0.70 + 0.004 * id;
            e.trainAccuracy = 0.66;
            e.quantTestAccuracy = 0.69 + 0.004 * id;
            r->epochs.front().quantTestAccuracy = 0.55 + 0.03 * id;
            r->epochs.front().testAccuracy = 0.5 + 0.02 * id;
            r->epochs.front().trainAccuracy = 0.47;
            r->epochs.push_back(e);
            r->layerStats.clear();
            r->layerStats.push_back({});
            for (const QString& n : resnet) {
                LayerStats s = drawnStats(qPrintable(n), 2);
                s.layer = n.toStdString();
                s.sqnrDb = 44 + 0.3 * double(n.size() % 7) + id;
                r->layerStats.back().push_back(s);
            }
            w.runsModel()->addRun(r);
        }
        const auto shoot = [&](const QString& name) {
            QTest::qWait(400);
            QVERIFY(w.screen()->grabWindow(0).save(dir + QLatin1Char('/') + name));
        };
        w.tabs()->setCurrentIndex(0);
        w.selectRuns({1});
        shoot(QStringLiteral("curves-1run.png"));
        w.selectRuns({2, 1}); // Ctrl+click: the legend moves to the right
        shoot(QStringLiteral("curves-2runs.png"));
        w.tabs()->setCurrentWidget(w.histogramPanel());
        shoot(QStringLiteral("histograms-2runs.png"));
        w.tabs()->setCurrentWidget(w.rangesPanel());
        shoot(QStringLiteral("ranges-2runs.png"));
        w.tabs()->setCurrentWidget(w.sqnrChart());
        w.selectRuns({1});
        shoot(QStringLiteral("sqnr-1run.png"));
        w.tabs()->setCurrentWidget(w.lossScaleChart());
        shoot(QStringLiteral("lossscale-empty.png"));
        QStringList layers{QStringLiteral("conv1"), QStringLiteral("bn1"), QStringLiteral("relu")};
        for (const char* b : {"layer1", "layer2", "layer3"})
            for (const char* l : {"conv1", "bn1", "relu1", "conv2", "bn2", "shortcut", "shortcut_bn", "add", "relu2"})
                if (std::string(b) != "layer1" || std::string(l).rfind("shortcut", 0) != 0) layers << QStringLiteral("%1.%2").arg(b, l);
        layers << QStringLiteral("pool") << QStringLiteral("flatten") << QStringLiteral("fc");
        w.tabs()->setCurrentWidget(w.layerCompareView());
        w.layerCompareView()->showReport(comparison(layers, false), QStringLiteral("Run #1, int8 weights (channel-wise), uint8 activations"), 1);
        w.selectRuns({2});
        shoot(QStringLiteral("layers-out-of-date.png"));
    }

    // The window fits a 1024x700 screen (tester 12 #2): at least 1144 pixels wide before (two
    // 320-pixel charts on the Curves tab, the runs header's one-line title, the Layers tab's
    // controls beside the 466-pixel docks), so on such a screen its right part, with the accuracy
    // chart's legend and the Status column, lay off screen. The runs title wraps instead of being cut.
    void windowFitsA1024Screen()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const QSize min = w.minimumSizeHint().expandedTo(w.minimumSize());
        QVERIFY2(min.width() <= 1024 && min.height() <= 700, qPrintable(QString("%1x%2").arg(min.width()).arg(min.height())));
        w.resize(1024, 700);
        QCoreApplication::processEvents();
        QCOMPARE(w.width(), 1024);
        for (QLabel* l : w.findChildren<QLabel*>())
            if (l->text().contains("select several (Ctrl+click)") && l->isVisible())
                QVERIFY2(l->width() >= l->sizeHint().width() || l->wordWrap(), qPrintable(l->text())); // whole, or wrapped
        for (const char* name : {"lossChart", "accuracyChart"}) {
            auto* chart = w.findChild<QWidget*>(name);
            QVERIFY2(chart && chart->isVisible() && chart->width() >= 250, name);
            QVERIFY2(QRect(QPoint(0, 0), w.size()).contains(QRect(chart->mapTo(&w, QPoint(0, 0)), chart->size())), name);
        }
    }

    // A status message wider than the window (Open model file on a model that does not fit the
    // data) neither widens the window nor stops mid-word ("...; BatchNormalizatio"; tester 12 #11):
    // it ends in "..." and its tooltip holds it whole.
    void longStatusIsElided()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        w.resize(1024, 700);
        QCoreApplication::processEvents();
        QString message = QStringLiteral("Loaded model.onnx: its layers");
        for (int i = 0; i < 30; ++i) message += QStringLiteral(" fc%1 flattened by a first layer; BatchNormalization").arg(i);
        w.reportDone(message);
        QCoreApplication::processEvents();
        (void)w.grab(); // paints the status bar
        QCOMPARE(w.width(), 1024);
        QCOMPARE(w.statusText(), message);
        auto* label = w.findChild<QLabel*>(QStringLiteral("statusText"));
        QVERIFY(label);
        QVERIFY(label->width() < label->fontMetrics().horizontalAdvance(message));
        QCOMPARE(label->toolTip(), message);
        w.reportDone(QStringLiteral("Ready"));
        (void)w.grab();
        QVERIFY(label->toolTip().isEmpty()); // whole: no tooltip needed
    }

};

QTEST_MAIN(TestGuiCharts)
#include "tst_gui_charts.moc"
