// The Analysis tab's Sensitivity page, offscreen, on a small model trained in the window on an IDX
// fixture: a layer x format heatmap with exactly the core report's cells (colour by drop, text =
// drop and SQNR), the "all but this layer" mode, the float and MX formats with the Activation
// ranges choice, clicking a cell opens that layer's weight histogram at that format (fp16's axis
// on the weights), and Stop ends an analysis early with the cells done. Split from
// tst_gui_analysis; the window is gui_analysis_fixtures.h.
#include "gui_analysis_fixtures.h"

#include <functional>

using namespace quantscope;
using namespace gui_analysis_fixtures;

class TestGuiSensitivity : public AnalysisTabFixture {
    Q_OBJECT
private slots:
    void initTestCase() { openTrainedWindow(); }
    void sensitivityHeatmap();
    void sensitivityAllButOne();
    void sensitivityStops();
    void floatFormatsAndActivationRanges();
    void weightsAloneWithFloatActivations();
    void fp16HistogramZoomsToTheWeights();
    void cleanupTestCase() { m_window.reset(); }
};

namespace {
// The view's report against core's analyzeSensitivity on the same model and images, run as the
// view runs it: with `opt` the cells must be the same, and with `other`'s change to opt at least
// one cell's SQNR must differ (the choice reached the measurement).
void checkCellsAgainstCore(const SensitivityReport& gui, const AnalysisInput& in, SensitivityOptions opt,
                           const std::function<void(SensitivityOptions&)>& other)
{
    opt.calibImages = in.data->train.size();
    std::unique_ptr<Model> model = in.makeModel();
    SensitivityReport core, changed;
    tbb::task_arena arena(static_cast<int>(in.threads));
    arena.execute([&] {
        core = analyzeSensitivity(*model, *in.data, in.data->validation, opt);
        other(opt);
        changed = analyzeSensitivity(*model, *in.data, in.data->validation, opt);
    });
    QCOMPARE(gui.cells.size(), core.cells.size());
    bool differs = false;
    for (std::size_t i = 0; i < gui.cells.size(); ++i) {
        QCOMPARE(gui.cells[i].accuracy, core.cells[i].accuracy);
        QCOMPARE(gui.cells[i].logitSqnrDb, core.cells[i].logitSqnrDb);
        differs = differs || gui.cells[i].logitSqnrDb != changed.cells[i].logitSqnrDb;
    }
    QVERIFY(differs);
}
} // namespace

void TestGuiSensitivity::sensitivityHeatmap()
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

void TestGuiSensitivity::sensitivityAllButOne()
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

void TestGuiSensitivity::sensitivityStops()
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

// The float and MX formats analyze --formats takes are offered too, and the Activation ranges
// choice reaches the measurement: the cells equal core's analyzeSensitivity with percentile
// activation ranges on the same model and images, and differ from min-max's.
void TestGuiSensitivity::floatFormatsAndActivationRanges()
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
    QVERIFY2(s->statusText().contains("uint8 activations, percentile ranges"), qPrintable(s->statusText()));
    const SensitivityReport gui = s->report();

    QString error;
    const AnalysisInputPtr in = m_view->input(&error);
    QVERIFY2(in, qPrintable(error));
    QCOMPARE(in->activationCalibration, std::string("percentile"));
    act->setCurrentIndex(act->findData(QStringLiteral("minmax")));
    SensitivityOptions opt;
    opt.formats = {"fp8-e4m3", "mxfp4"};
    opt.activationCalibration = "percentile";
    // percentile ranges clip: the outputs are not min-max's
    checkCellsAgainstCore(gui, *in, opt, [](SensitivityOptions& o) { o.activationCalibration = "minmax"; });
}

// The Activations choice is analyze sensitivity's --act-format: FP32 keeps the activations float,
// so a cell measures the layer's weights alone (tester 16 read uint8 rows, whose activation
// rounding is the same in every column, as what the weights cost). The cells equal core's with
// activationFormat fp32 and differ from uint8's, and the status line says which ran.
void TestGuiSensitivity::weightsAloneWithFloatActivations()
{
    SensitivityView* s = m_view->sensitivity();
    QComboBox* acts = s->activationsCombo();
    QCOMPARE(acts->currentData().toString(), QString("uint8")); // the default, as the CLI's
    acts->setCurrentIndex(acts->findData(QStringLiteral("fp32")));
    QVERIFY(acts->currentIndex() >= 0);
    s->setFormats({"int8", "int4"});
    QSignalSpy done(s, &SensitivityView::analysisFinished);
    s->run();
    QVERIFY(done.wait(kRunTimeoutMs));
    QVERIFY2(done.first().at(0).toBool(), qPrintable(done.first().at(1).toString()));
    QVERIFY2(s->statusText().contains("FP32 activations (the weights alone)"), qPrintable(s->statusText()));
    const SensitivityReport gui = s->report();
    acts->setCurrentIndex(acts->findData(QStringLiteral("uint8")));

    QString error;
    const AnalysisInputPtr in = m_view->input(&error);
    QVERIFY2(in, qPrintable(error));
    SensitivityOptions opt;
    opt.formats = {"int8", "int4"};
    opt.activationFormat = "fp32";
    opt.activationCalibration = in->activationCalibration;
    checkCellsAgainstCore(gui, *in, opt, [](SensitivityOptions& o) { o.activationFormat = "uint8"; });
}

// fp16's clip range (+-65504) is far beyond any weight: the axis stays on the weights (it ran to
// +-100000 and drew them as one bar), and the legend says the clip lines are off it.
void TestGuiSensitivity::fp16HistogramZoomsToTheWeights()
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

QTEST_MAIN(TestGuiSensitivity)
#include "tst_gui_sensitivity.moc"
