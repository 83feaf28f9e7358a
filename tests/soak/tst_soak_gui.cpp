// Soak (label soak, run by scripts/soak): the window offscreen through kCycles cycles, each a
// new MainWindow that opens an IDX fixture, trains and is stopped (Esc), trains again and is
// closed mid-run. No crash, no hang (every wait is bounded), and the resident memory of the
// process (/proc/self/statm) grows less than 5 % from cycle 10 to the last cycle. Memory is read
// as the app leaves it: the window keeps one malloc arena and its training thread returns freed
// memory after each run (ui/training_worker.cpp, limitMallocArenas and releaseFreedMemory); this
// test trims nothing itself. "At cycle N" is the median of the readings after cycles N-4..N:
// single readings still move by a few MiB as threads come and go. mallinfo2's heap in use (all
// arenas) tells live growth (a leak, a cache) from memory glibc keeps.
#include "main_window.h"
#include "runs_model.h"
#include "training_panel.h"

#include "data/idx.h"
#include "util/rng.h"

#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QTemporaryDir>
#include <QtTest>

#include <algorithm>
#include <cstdio>
#include <vector>

#include <malloc.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

using namespace quantscope;

namespace {

constexpr int kDefaultCycles = 50; // QS_SOAK_CYCLES overrides it (>= 11), e.g. to hunt a leak under LSan
constexpr int kFirstMeasuredCycle = 10;   // after the allocator, fonts and TBB's pool have warmed up
constexpr double kMaxGrowth = 0.05;       // resident memory, cycle 10 -> cycle 50
constexpr int kLoadTimeoutMs = 30000;
constexpr int kRunTimeoutMs = 120000;
constexpr qint64 kStopWithinMs = 5000;    // Esc or close -> the run has ended (one batch of 16)

// Leak hunting in the asan build: with QS_SOAK_HEAP_PROFILE set, ASan prints the live heap
// grouped by allocation stack (all threads) after cycle kFirstMeasuredCycle and after the last
// cycle; stacks whose bytes grow between the two are what each window leaves behind. The stop and
// close time bounds are not asserted then: ASan makes a stop (which also keeps the model for
// export) 5-10x slower, depending on the machine's load.
bool profilingHeap()
{
#if defined(__SANITIZE_ADDRESS__)
    return qEnvironmentVariableIsSet("QS_SOAK_HEAP_PROFILE");
#else
    return false;
#endif
}

void printHeapProfile([[maybe_unused]] int cycle)
{
#if defined(__SANITIZE_ADDRESS__)
    if (!profilingHeap()) return;
    std::fprintf(stderr, "=== heap profile after cycle %d ===\n", cycle);
    __sanitizer_print_memory_profile(100, 4000);
    std::fprintf(stderr, "=== end of heap profile after cycle %d ===\n", cycle);
#endif
}

// Resident set size of this process in MiB (/proc/self/statm: pages; field 2 is resident).
double residentMiB()
{
    QFile f(QStringLiteral("/proc/self/statm"));
    if (!f.open(QIODevice::ReadOnly)) return -1;
    const QList<QByteArray> fields = f.readAll().split(' ');
    if (fields.size() < 2) return -1;
    return fields[1].toDouble() * double(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// An MNIST-layout folder; class k is a bright block at its own place on noise.
void writeFixture(const QString& dir, std::size_t nTrain, std::size_t nTest)
{
    constexpr std::size_t H = 28, W = 28;
    Rng rng(11);
    auto make = [&](std::size_t n, const char* images, const char* labels) {
        std::vector<std::uint8_t> px(n * H * W), lb(n);
        for (std::size_t i = 0; i < n; ++i) {
            const auto k = static_cast<std::size_t>(rng.below(10));
            lb[i] = static_cast<std::uint8_t>(k);
            std::uint8_t* img = px.data() + i * H * W;
            for (std::size_t j = 0; j < H * W; ++j) img[j] = static_cast<std::uint8_t>(rng.below(80));
            const std::size_t r0 = 14 * (k / 5), c0 = 5 * (k % 5);
            for (std::size_t r = r0; r < r0 + 7; ++r)
                for (std::size_t c = c0; c < c0 + 4; ++c) img[r * W + c] = static_cast<std::uint8_t>(170 + rng.below(80));
        }
        writeIdx(QDir(dir).filePath(images).toStdString(), {std::uint32_t(n), H, W}, px);
        writeIdx(QDir(dir).filePath(labels).toStdString(), {std::uint32_t(n)}, lb);
    };
    make(nTrain, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    make(nTest, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

// Median of the readings after cycles cycle-4 .. cycle (readings[i] is after cycle i + 1).
double medianOf5(std::vector<double> readings, int cycle)
{
    std::vector<double> w(readings.begin() + (cycle - 5), readings.begin() + cycle);
    std::sort(w.begin(), w.end());
    return w[2];
}

} // namespace

class TestSoakGui : public QObject {
    Q_OBJECT

private slots:
    void trainStopCloseCycles()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        writeFixture(dir.path(), 3000, 200); // 188 steps of 16: every run is still going when stopped

        const int kCycles = std::max(kFirstMeasuredCycle + 1, qEnvironmentVariableIntValue("QS_SOAK_CYCLES") > 0
                                                                   ? qEnvironmentVariableIntValue("QS_SOAK_CYCLES")
                                                                   : kDefaultCycles);
        std::vector<double> resident, heap;
        QElapsedTimer total;
        total.start();
        for (int cycle = 1; cycle <= kCycles; ++cycle) {
            MainWindowOptions o;
            o.useSettings = false;
            o.dataDir = dir.path();
            auto* w = new MainWindow(o);
            QSignalSpy ready(w, &MainWindow::datasetReady);
            w->show();
            QVERIFY2(ready.count() > 0 || ready.wait(kLoadTimeoutMs), qPrintable(QStringLiteral("cycle %1: no dataset").arg(cycle)));
            QVERIFY(ready.first().first().toBool());
            w->findChild<QSpinBox*>(QStringLiteral("batchSize"))->setValue(16);
            w->findChild<QSpinBox*>(QStringLiteral("epochs"))->setValue(1);

            // Train -> Stop (Esc): the run ends as "stopped" within a batch or two.
            QSignalSpy ended(w, &MainWindow::runEnded);
            QTest::mouseClick(w->trainingPanel()->trainButton(), Qt::LeftButton);
            RunPtr first = w->runsModel()->runAt(0);
            QVERIFY(first);
            QTRY_VERIFY_WITH_TIMEOUT(first->steps.size() >= 2, kRunTimeoutMs);
            QElapsedTimer t;
            t.start();
            QTest::keyClick(w, Qt::Key_Escape);
            QVERIFY2(ended.count() > 0 || ended.wait(kRunTimeoutMs), qPrintable(QStringLiteral("cycle %1: stop hung").arg(cycle)));
            QVERIFY2(profilingHeap() || t.elapsed() < kStopWithinMs, qPrintable(QStringLiteral("cycle %1: stop took %2 ms").arg(cycle).arg(t.elapsed())));
            QCOMPARE(first->status, RunStatus::Stopped);

            // Train -> close the window mid-run: the worker is stopped and joined.
            QTest::mouseClick(w->trainingPanel()->trainButton(), Qt::LeftButton);
            RunPtr second = w->runsModel()->runAt(1);
            QVERIFY(second);
            QTRY_VERIFY_WITH_TIMEOUT(second->steps.size() >= 2, kRunTimeoutMs);
            t.restart();
            QVERIFY(w->close());
            QVERIFY(!w->isTraining());
            delete w;
            QCoreApplication::sendPostedEvents(nullptr, QEvent::DeferredDelete);
            QCoreApplication::processEvents();
            QVERIFY2(profilingHeap() || t.elapsed() < kStopWithinMs, qPrintable(QStringLiteral("cycle %1: close took %2 ms").arg(cycle).arg(t.elapsed())));

            // As the app runs: no trimming here (the training thread trims after each run itself).
            const double rss = residentMiB();
            if (cycle == 1 || cycle % 5 == 0) {
                const struct mallinfo2 mi = ::mallinfo2(); // live heap: tells a leak from fragmentation
                qInfo("cycle %d: resident %.1f MiB, heap in use %.1f MiB, %.1f s so far",
                      cycle, rss, double(mi.uordblks + mi.hblkhd) / (1024.0 * 1024.0),
                      double(total.elapsed()) / 1000.0);
            }
            const struct mallinfo2 mi = ::mallinfo2();
            if (cycle == kFirstMeasuredCycle || cycle == kCycles) printHeapProfile(cycle);
            resident.push_back(rss);
            heap.push_back(double(mi.uordblks + mi.hblkhd) / (1024.0 * 1024.0));
        }
        const double rssAt10 = medianOf5(resident, kFirstMeasuredCycle), rssLast = medianOf5(resident, kCycles);
        const double growth = (rssLast - rssAt10) / rssAt10;
        qInfo("heap in use (all arenas): %.2f MiB at cycle %d, %.2f MiB at cycle %d", heap[kFirstMeasuredCycle - 1],
              kFirstMeasuredCycle, heap.back(), kCycles);
        qInfo("soak: %d cycles (Train -> Stop, Train -> close) in %.1f s; resident memory %.1f MiB at cycle %d, "
              "%.1f MiB at cycle %d: %+.2f %% (limit %.0f %%)",
              kCycles, double(total.elapsed()) / 1000.0, rssAt10, kFirstMeasuredCycle, rssLast, kCycles,
              100.0 * growth, 100.0 * kMaxGrowth);
        QVERIFY(rssAt10 > 0);
        QVERIFY2(growth < kMaxGrowth, qPrintable(QStringLiteral("resident memory grew %1 %%").arg(100.0 * growth)));
    }
};

QTEST_MAIN(TestSoakGui)
#include "tst_soak_gui.moc"
