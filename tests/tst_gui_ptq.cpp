// The Ranges chart with PTQ cross-layer equalization: a PTQ run with --cle reports each layer's
// channel ranges before CLE next to the ones after, and the chart draws both (orange outline,
// "before CLE, after" ratios in its title). With QS_SHOT_DIR set it saves the charts as PNG; with
// QS_SHOT_MODEL (an FP32 .qsm, e.g. mobilenet-tiny) it quantizes that model instead of training
// lenet5 briefly (QS_SHOT_RELU6=1 adds --cle-relu6-to-relu).
#include "quant_charts.h"

#include "data/dataset.h"
#include "io/model_source.h"
#include "train/trainer.h"

#include <QtTest>

#include <QDir>
#include <filesystem>

using namespace quantscope;

class TestGuiPtq : public QObject {
    Q_OBJECT

private slots:
    void rangesChartShowsBeforeAndAfterCle();
};

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
    int withBefore = 0;
    for (const LayerStats& s : obs.last) {
        if (s.tensor != "weight" || s.channelMinBefore.empty()) continue;
        ++withBefore;
        QCOMPARE(s.channelMinBefore.size(), s.channelMin.size());
        RangesChart chart;
        chart.resize(900, 500);
        chart.setStats(&s);
        QCOMPARE(chart.channelCount(), static_cast<int>(s.channelMin.size()));
        QVERIFY2(chart.title().contains(QStringLiteral("before CLE")), qPrintable(chart.title()));
        if (!shotDir.isEmpty()) {
            QDir().mkpath(shotDir);
            const QString err = chart.saveAsPng(QDir(shotDir).filePath(
                QStringLiteral("ranges-cle-%1-%2.png").arg(QString::fromStdString(cfg.model), QString::fromStdString(s.layer))));
            QVERIFY2(err.isEmpty(), qPrintable(err));
        }
    }
    QVERIFY(withBefore > 0);
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
