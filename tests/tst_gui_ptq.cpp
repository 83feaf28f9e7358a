// The Ranges chart with PTQ cross-layer equalization: a PTQ run with --cle reports each layer's
// channel ranges before CLE next to the ones after, and the chart draws both (orange outline,
// "before CLE, after" ratios in its title). With QS_SHOT_DIR set it saves the charts as PNG; with
// QS_SHOT_MODEL (an FP32 .qsm, e.g. mobilenet-tiny) it quantizes that model instead of training
// lenet5 briefly (QS_SHOT_RELU6=1 adds --cle-relu6-to-relu). A refined PTQ run in the window
// says what CLE, AdaRound and bias correction did, and its weights' SQNR is measured.
#include "gui_window_fixtures.h"
#include "main_window.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"

#include "data/dataset.h"
#include "io/model_source.h"
#include "train/ptq_refine.h"
#include "train/trainer.h"

#include <QtTest>

#include <QDir>
#include <QSignalSpy>
#include <filesystem>

using namespace quantscope;

class TestGuiPtq : public QObject {
    Q_OBJECT

private slots:
    void rangesChartShowsBeforeAndAfterCle();
    void refinedRunReportsItsRefinements();
};

// PTQ with CLE, AdaRound and bias correction in the window: the run's tooltip lists what each did
// (PtqRefiner::reportLines, as train prints them), a saved run keeps them, and the weights' SQNR
// (the Error chart) is finite: the FP32 weights against the refined grid (tester 13 #8: empty).
void TestGuiPtq::refinedRunReportsItsRefinements()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    MainWindowOptions o;
    o.useSettings = false;
    o.dataDir = QString::fromLatin1(kDefaultDataDir);
    o.trainLimit = 600;
    o.testLimit = 100;
    MainWindow w(o);
    QSignalSpy ready(&w, &MainWindow::datasetReady);
    QVERIFY(ready.count() > 0 || ready.wait(quantscope::testing::kLoadTimeoutMs));
    TrainConfig cfg = w.trainingPanel()->config();
    cfg.model = "lenet5";
    cfg.epochs = 1;
    cfg.precision.strategy = Strategy::Ptq;
    cfg.precision.format = "int4";
    cfg.precision.rounding = "adaround";
    cfg.precision.adaroundIters = 50;
    cfg.precision.calibImages = 128;
    cfg.precision.crossLayerEqualization = true;
    cfg.precision.biasCorrection = true;
    w.trainingPanel()->setConfig(cfg);
    QSignalSpy ended(&w, &MainWindow::runEnded);
    w.startTraining();
    QVERIFY(ended.wait(quantscope::testing::kRunTimeoutMs));
    const RunPtr run = w.runsModel()->runById(ended.first().first().toInt());
    QCOMPARE(run->status, RunStatus::Done);
    QTRY_VERIFY_WITH_TIMEOUT(!run->refineReport.isEmpty(), 20000);
    const QString joined = run->refineReport.join(QLatin1Char('\n'));
    QVERIFY2(joined.contains(QStringLiteral("CLE conv1 -> conv2")), qPrintable(joined));
    QVERIFY2(joined.contains(QStringLiteral("AdaRound conv1")), qPrintable(joined));
    QVERIFY2(joined.contains(QStringLiteral("bias correction conv1")), qPrintable(joined));
    const QString tip = run->configTooltip();
    QVERIFY2(tip.contains(QStringLiteral("PTQ refinement:")) && tip.contains(QStringLiteral("AdaRound")), qPrintable(tip));
    // CLE in one summary line, and every AdaRound and bias-correction line in view (tester 16).
    QVERIFY2(tip.contains(QStringLiteral("  CLE: ")) && tip.contains(QStringLiteral(" equalized")), qPrintable(tip));
    QVERIFY2(tip.contains(QStringLiteral("bias correction fc3")) && tip.contains(QStringLiteral("AdaRound fc3")), qPrintable(tip));
    QVERIFY2(!tip.contains(QStringLiteral("CLE skipped")), qPrintable(tip));
    const std::vector<LayerStats>* stats = run->latestStats();
    QVERIFY(stats && !stats->empty());
    for (const LayerStats& st : *stats)
        QVERIFY2(std::isfinite(st.sqnrDb) && st.mse > 0.0, qPrintable(QString::fromStdString(st.layer)));
    // A saved run keeps the report.
    const auto back = runFromJson(runToJson(*run));
    QVERIFY(back);
    QCOMPARE(back->refineReport, run->refineReport);
}

void TestGuiPtq::rangesChartShowsBeforeAndAfterCle()
{
    if (!std::filesystem::exists(kDefaultDataDir)) QSKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    const QString shotModel = qEnvironmentVariable("QS_SHOT_MODEL"), shotDir = qEnvironmentVariable("QS_SHOT_DIR");
    DatasetOptions dopt;
    dopt.trainLimit = shotModel.isEmpty() ? 2000 : 0;
    dopt.testLimit = shotModel.isEmpty() ? 200 : 0;
    const Dataset data = Dataset::load(dopt);
    TrainConfig cfg;
    cfg.model = "lenet5";
    cfg.precision.strategy = Strategy::Ptq;
    cfg.precision.format = "int8";
    cfg.precision.granularity = "tensor";
    cfg.precision.crossLayerEqualization = true;
    cfg.precision.calibImages = 256;
    if (!shotModel.isEmpty()) {
        cfg.model = QFileInfo(shotModel).completeBaseName().toStdString();
        cfg.modelFactory = modelFromFile(shotModel.toStdString(), false);
        cfg.pretrained = true;
        cfg.epochs = 0;
        cfg.precision.cleRelu6ToRelu = qEnvironmentVariableIntValue("QS_SHOT_RELU6") == 1;
    }
    struct Stats : TrainObserver {
        std::vector<LayerStats> last;
        void onLayerStats(const std::vector<LayerStats>& s) override { last = s; }
    } obs;
    Trainer t(cfg, data, &obs);
    t.run();
    QVERIFY(!obs.last.empty());
    int withBefore = 0, matched = 0;
    for (const LayerStats& s : obs.last) {
        if (s.tensor != "weight" || s.channelMinBefore.empty()) continue;
        ++withBefore;
        QCOMPARE(s.channelMinBefore.size(), s.channelMin.size());
        RangesChart chart;
        chart.resize(900, 500);
        chart.setStats(&s);
        QCOMPARE(chart.channelCount(), static_cast<int>(s.channelMin.size()));
        QVERIFY2(chart.title().contains(QStringLiteral("before CLE")), qPrintable(chart.title()));
        // The ratios the title gives are the CLE report's (train prints them as "CLE a -> b: channel
        // range ratio X -> Y"), for the pair's first layer (tester 19: 2.2x -> 1.8x in the title
        // against 2.0 -> 1.7 printed).
        const PtqRefiner* refiner = t.strategy().refiner();
        QVERIFY(refiner);
        for (const EqualizedPair& p : refiner->equalization().pairs) {
            if (p.first != s.layer) continue;
            ++matched;
            const QString want = QStringLiteral("largest |w| of the widest %1\u00d7 the narrowest's before CLE, %2\u00d7 after")
                                     .arg(p.rangeRatioBefore, 0, 'f', 1)
                                     .arg(p.rangeRatioAfter, 0, 'f', 1);
            QVERIFY2(chart.title().contains(want), qPrintable(chart.title() + " / " + want));
        }
        if (!shotDir.isEmpty()) {
            QDir().mkpath(shotDir);
            const QString err = chart.saveAsPng(QDir(shotDir).filePath(
                QStringLiteral("ranges-cle-%1-%2.png").arg(QString::fromStdString(cfg.model), QString::fromStdString(s.layer))));
            QVERIFY2(err.isEmpty(), qPrintable(err));
        }
    }
    QVERIFY(withBefore > 0);
    QVERIFY(matched > 0);
    // Equalized: the first layer's widest/narrowest channel range ratio went down.
    const LayerStats& first = obs.last.front();
    auto ratio = [](const std::vector<float>& lo, const std::vector<float>& hi) {
        double a = 1e300, b = 0;
        for (std::size_t c = 0; c < lo.size(); ++c) {
            a = std::min(a, double(hi[c] - lo[c]));
            b = std::max(b, double(hi[c] - lo[c]));
        }
        return b / a;
    };
    QVERIFY(ratio(first.channelMin, first.channelMax) < ratio(first.channelMinBefore, first.channelMaxBefore));
}

QTEST_MAIN(TestGuiPtq)
#include "tst_gui_ptq.moc"
