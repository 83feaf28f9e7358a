// How responsive the window stays while it trains, offscreen. A 10 ms QTimer on the GUI thread
// records how late each tick arrives during a run of several seconds (QAT int8 channel-wise on
// a 6,000-image fixture, 1,200 under the sanitizer presets); the 99th percentile must stay under
// 50 ms. Also measured: the time from clicking Train to the first point on the loss chart. Both
// are printed for the record.
#include "curve_charts.h"
#include "main_window.h"
#include "runs_model.h"
#include "training_panel.h"

#include "slow_tests.h"

#include "data/idx.h"
#include "util/rng.h"

#include <QComboBox>
#include <QDir>
#include <QElapsedTimer>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QTemporaryDir>
#include <QTimer>
#include <QtTest>

#include <algorithm>
#include <vector>

using namespace quantscope;

namespace {

constexpr int kTickMs = 10;
constexpr double kP99LimitMs = 50.0;       // the bound: 99 % of ticks within 50 ms
constexpr qint64 kFirstPointLimitMs = 3000; // "within a second" on an idle machine; shared here
constexpr std::size_t kTrain = 6000, kTest = 500;
// Under the sanitizer presets (QS_SANITIZER_RUN) the fixture shrinks by the instrumentation's cost
// (sanitizerSlowdown()): the run still lasts far longer than the 2 s the measurement needs. The
// wait for the run's end is a hang guard, not a measurement, and is scaled like the other waits:
// under TSan on a loaded machine (load ~14) the 1200-image run had not ended after 300 s.
const int kRunTimeoutMs = static_cast<int>(300000 * quantscope::testing::sanitizerSlowdown());
std::size_t trainImages() { return static_cast<std::size_t>(double(kTrain) / quantscope::testing::sanitizerSlowdown()); }

void writeFixture(const QString& dir, std::size_t nTrain, std::size_t nTest, std::uint64_t seed = 3)
{
    constexpr std::size_t H = 28, W = 28;
    Rng rng(seed);
    auto make = [&](std::size_t n, const char* images, const char* labels) {
        std::vector<std::uint8_t> px(n * H * W), lb(n);
        for (std::size_t i = 0; i < n; ++i) {
            const auto k = static_cast<std::size_t>(rng.below(10));
            lb[i] = static_cast<std::uint8_t>(k);
            std::uint8_t* img = px.data() + i * H * W;
            for (std::size_t j = 0; j < H * W; ++j) img[j] = static_cast<std::uint8_t>(rng.below(80));
            const std::size_t r0 = 3 + 13 * (k / 5) + rng.below(3), c0 = 1 + 5 * (k % 5) + rng.below(2);
            for (std::size_t r = r0; r < r0 + 6; ++r)
                for (std::size_t c = c0; c < c0 + 4; ++c) img[r * W + c] = static_cast<std::uint8_t>(170 + rng.below(80));
        }
        writeIdx(QDir(dir).filePath(images).toStdString(), {std::uint32_t(n), H, W}, px);
        writeIdx(QDir(dir).filePath(labels).toStdString(), {std::uint32_t(n)}, lb);
    };
    make(nTrain, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    make(nTest, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

double percentile(std::vector<double> v, double p)
{
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const auto i = static_cast<std::size_t>(p / 100.0 * double(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

} // namespace

class TestGuiLatency : public QObject {
    Q_OBJECT

private slots:
    void responsiveWhileTraining()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        writeFixture(dir.path(), trainImages(), kTest);
        MainWindowOptions o;
        o.useSettings = false;
        o.dataDir = dir.path();
        MainWindow w(o);
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.resize(1500, 940);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(ready.count() > 0 || ready.wait(20000));
        QVERIFY(ready.first().first().toBool());

        // The default configuration: QAT, int8, channel-wise, seed-cnn, Adam, batch 64, 2 threads.
        const TrainConfig cfg = w.trainingPanel()->config();
        QCOMPARE(cfg.precision.strategy, Strategy::Qat);
        w.findChild<QSpinBox*>(QStringLiteral("epochs"))->setValue(1);

        // Click-to-first-point: measured here (click to a refreshed chart holding a point) and by
        // the window itself (action to first batch drawn).
        QElapsedTimer sinceClick;
        qint64 firstPointMs = -1, windowReportedMs = -1;
        connect(&w, &MainWindow::chartsRefreshed, this, [&] {
            if (firstPointMs < 0 && w.lossChart()->pointCount() > 0) firstPointMs = sinceClick.elapsed();
        });
        connect(&w, &MainWindow::firstLossPoint, this, [&](qint64 ms) { windowReportedMs = ms; });

        // The probe: a precise 10 ms timer; lateness = interval between ticks minus 10 ms.
        std::vector<double> lateMs;
        QElapsedTimer clock;
        qint64 lastNs = -1;
        QTimer probe;
        probe.setTimerType(Qt::PreciseTimer);
        probe.setInterval(kTickMs);
        connect(&probe, &QTimer::timeout, this, [&] {
            const qint64 now = clock.nsecsElapsed();
            if (lastNs >= 0) lateMs.push_back(std::max(0.0, double(now - lastNs) / 1e6 - kTickMs));
            lastNs = now;
        });

        QSignalSpy ended(&w, &MainWindow::runEnded);
        clock.start();
        probe.start();
        sinceClick.start();
        QTest::mouseClick(w.trainingPanel()->trainButton(), Qt::LeftButton);
        QVERIFY(ended.wait(kRunTimeoutMs));
        const double seconds = double(clock.elapsed()) / 1000.0;
        probe.stop();

        const RunPtr run = w.runsModel()->runAt(0);
        QVERIFY(run && run->status == RunStatus::Done);
        const double p50 = percentile(lateMs, 50), p99 = percentile(lateMs, 99), worst = percentile(lateMs, 100);
        qInfo("GUI-thread latency while training: %zu ticks of %d ms over %.1f s (%zu steps, %.0f img/s): "
              "lateness p50 %.2f ms, p99 %.2f ms, max %.2f ms (limit p99 < %.0f ms)",
              lateMs.size(), kTickMs, seconds, run->steps.size(), run->finish.imagesPerSecond, p50, p99, worst,
              kP99LimitMs);
        qInfo("click Train -> first loss point on the chart: %lld ms (window's own measure: %lld ms)", firstPointMs,
              windowReportedMs);
        QVERIFY2(seconds > 2.0, "the run must last a few seconds for the measurement to mean something");
        QVERIFY(lateMs.size() > 100);
        // Under sanitizers (QS_SANITIZER_RUN) both bounds are scaled by the instrumentation's cost,
        // not dropped: a GUI thread blocked by training still fails.
        const double slow = quantscope::testing::sanitizerSlowdown();
        QVERIFY2(p99 < kP99LimitMs * slow,
                 qPrintable(QStringLiteral("p99 lateness %1 ms (limit %2 ms)").arg(p99).arg(kP99LimitMs * slow)));
        // The first point cannot come before the first batch ends: under TSan on the loaded machine
        // a batch of 64 took ~37 s (19 steps in 705 s) and the first point came after 48 s, against
        // 15 s. So under sanitizers the bound is also at least twice the run's longest step; a chart
        // that waited for the epoch's end (19 steps) still fails. Release: 3 s.
        double longestStep = 0.0;
        for (std::size_t i = 1; i < run->steps.size(); ++i)
            longestStep = std::max(longestStep, run->steps[i].elapsedSeconds - run->steps[i - 1].elapsedSeconds);
        const double firstPointBound =
            slow > 1.0 ? std::max(double(kFirstPointLimitMs) * slow, 2000.0 * longestStep) : double(kFirstPointLimitMs);
        QVERIFY(firstPointMs >= 0);
        QVERIFY2(double(firstPointMs) < firstPointBound,
                 qPrintable(QStringLiteral("first point after %1 ms (bound %2 ms)").arg(firstPointMs).arg(firstPointBound)));
    }
};

QTEST_MAIN(TestGuiLatency)
#include "tst_gui_latency.moc"
