// The QuantScope window end to end, offscreen: open a small IDX fixture, choose QAT / int8 /
// channel-wise, click Train and check that the charts, histograms and runs table fill; stop
// and pause mid-epoch; bad dataset paths show the core's message and break nothing; closing
// mid-run is clean; options a strategy does not use are disabled. The window's files (runs JSON,
// settings, model files, export) are tst_gui_files; the shared fixtures gui_window_fixtures.h.
#include "curve_charts.h"
#include "dataset_panel.h"
#include "layer_compare_view.h"
#include "main_window.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"

#include "diverging_model.h"
#include "gui_window_fixtures.h"
#include "slow_tests.h"

#include "data/idx.h"
#include "io/exported_model.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/model_zoo.h"
#include "util/rng.h"

#include <QApplication>
#include <QCheckBox>
#include <QLineEdit>
#include <QComboBox>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QFileInfo>
#include <QImage>
#include <QLabel>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QScatterSeries>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QSplitter>
#include <QStandardPaths>
#include <QSpinBox>
#include <QTableView>
#include <QTemporaryDir>
#include <QtTest>

#include <algorithm>
#include <cmath>
#include <tuple>

using namespace quantscope;

using namespace quantscope::testing;

class TestGuiWindow : public QObject {
    Q_OBJECT

private slots:
    void initTestCase()
    {
        QVERIFY(m_small.isValid());
        QVERIFY(m_big.isValid());
        QVERIFY(m_flow.isValid());
        writeFixture(m_flow.path(), flowTrainImages(), flowTestImages());
        writeFixture(m_small.path(), 640, 200);
        writeFixture(m_big.path(), 6000, 200);
    }

    // The first-time user's path: open the fixture, QAT / int8 / channel-wise, click Train.
    void fullFlow()
    {
        MainWindow w(options(m_flow.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady); // before any event loop runs
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        QCOMPARE(ready.first().first().toBool(), true);
        QVERIFY(w.datasetPanel()->errorText().isEmpty());
        const std::size_t nTrain = flowTrainImages(), batch = std::size_t(flowBatch());
        QVERIFY(child<QLabel>(&w, "datasetCounts")->text().contains(QStringLiteral("%1 training").arg(nTrain)));
        QVERIFY(w.datasetPanel()->thumbnails()->sampleCount() > 0);

        selectData(child<QComboBox>(&w, "strategy"), QStringLiteral("qat"));
        selectData(child<QComboBox>(&w, "format"), QStringLiteral("int8"));
        selectData(child<QComboBox>(&w, "granularity"), QStringLiteral("channel"));
        child<QSpinBox>(&w, "epochs")->setValue(2);
        child<QSpinBox>(&w, "batchSize")->setValue(int(batch));
        const TrainConfig cfg = w.trainingPanel()->config();
        QCOMPARE(cfg.precision.strategy, Strategy::Qat);
        QCOMPARE(cfg.precision.format, std::string("int8"));
        QCOMPARE(cfg.precision.granularity, std::string("channel"));

        QSignalSpy started(&w, &MainWindow::runStarted);
        QSignalSpy ended(&w, &MainWindow::runEnded);
        QPushButton* train = w.trainingPanel()->trainButton();
        QVERIFY(train->isEnabled());
        QTest::mouseClick(train, Qt::LeftButton);
        QCOMPARE(started.count(), 1);
        QVERIFY(w.isTraining());
        QVERIFY(!train->isEnabled());
        QVERIFY(w.trainingPanel()->stopButton()->isEnabled());
        QVERIFY(ended.wait(kRunTimeoutMs));

        RunPtr run = w.runsModel()->runById(ended.first().first().toInt());
        QVERIFY(run);
        QCOMPARE(run->status, RunStatus::Done);
        QVERIFY(!child<QProgressBar>(&w, "progress")->isVisible()); // it stayed full after the run
        QCOMPARE(run->config.precision.strategy, Strategy::Qat);
        const std::size_t steps = 2 * ((nTrain + batch - 1) / batch);
        QCOMPARE(run->steps.size(), steps);
        QCOMPARE(run->epochs.size(), std::size_t(2));

        // Charts hold points: every step's loss, both epochs' accuracy.
        QCOMPARE(w.lossChart()->pointCount(), int(steps));
        QCOMPARE(w.accuracyChart()->pointCount(), 2);
        QVERIFY(w.lossChart()->emptyMessage().isEmpty());

        // The runs table has a row with the configuration and results.
        QCOMPARE(w.runsModel()->rowCount(), 1);
        QCOMPARE(cell(w, 0, RunsModel::Strategy), QStringLiteral("qat"));
        QCOMPARE(cell(w, 0, RunsModel::Format), QStringLiteral("int8"));
        QCOMPARE(cell(w, 0, RunsModel::Granularity), QStringLiteral("channel-wise"));
        QVERIFY(cell(w, 0, RunsModel::Fp32Acc).endsWith(QStringLiteral(" %")));
        QVERIFY(cell(w, 0, RunsModel::Size).endsWith(QStringLiteral("B")));
        QCOMPARE(cell(w, 0, RunsModel::Status), QStringLiteral("done"));
        QVERIFY(std::isfinite(run->finalTestAccuracy()));
        qInfo("fullFlow: %zu training images in batches of %zu, 2 epochs: test accuracy %.3f", nTrain, batch, run->finalTestAccuracy());
        QVERIFY2(run->finalTestAccuracy() > 0.3, qPrintable(QStringLiteral("the fixture is learnable: accuracy %1, well above 10 %").arg(run->finalTestAccuracy())));

        // Layer statistics arrive for QAT: the histogram has bins, the ranges and SQNR bars show.
        if (!run->layerStats.empty()) {
            w.tabs()->setCurrentIndex(1);
            QVERIFY(w.histogramPanel()->chart()->binCount() > 0);
            QVERIFY(w.histogramPanel()->caption().contains(QStringLiteral("channel-wise")));
            QVERIFY(w.rangesPanel()->chart()->channelCount() > 0);
            QVERIFY(w.sqnrChart()->barCount() > 0);
            QVERIFY(std::isfinite(run->finalQuantAccuracy()));
            QVERIFY(cell(w, 0, RunsModel::QuantAcc).endsWith(QStringLiteral(" %")));
            // Log scale and the epoch slider redraw without losing the bins.
            w.histogramPanel()->logToggle()->setChecked(true);
            QVERIFY(w.histogramPanel()->chart()->binCount() > 0);
            w.histogramPanel()->bar()->setEpochIndex(0);
            QVERIFY(w.histogramPanel()->chart()->binCount() > 0);
        } else {
            qWarning("no layer statistics arrived for QAT: histogram checks skipped");
        }

        // A second run (tensor-wise) and both selected: curves overlay.
        selectData(child<QComboBox>(&w, "granularity"), QStringLiteral("tensor"));
        QTest::keyClick(&w, Qt::Key_R, Qt::ControlModifier);
        QVERIFY(ended.wait(kRunTimeoutMs));
        QCOMPARE(w.runsModel()->rowCount(), 2);
        QCOMPARE(cell(w, 1, RunsModel::Granularity), QStringLiteral("tensor-wise"));
        w.selectRuns({1, 2});
        QCOMPARE(int(w.lossChart()->runs().size()), 2);
        QCOMPARE(int(w.accuracyChart()->runs().size()), 2);
        QCOMPARE(w.lossChart()->pointCount(), int(steps));
        // The legend names each run once, plus one key per line style: it stays short.
        w.tabs()->setCurrentIndex(0);
        QTest::qWait(50); // legend items count as visible once their chart is laid out on screen
        int visibleMarkers = 0;
        for (QLegendMarker* m : w.lossChart()->chart()->legend()->markers()) visibleMarkers += m->isVisible();
        QCOMPARE(visibleMarkers, 2 + 2);

        // Any chart saves as PNG.
        QTemporaryDir out;
        const QString png = QDir(out.path()).filePath(QStringLiteral("loss.png"));
        QCOMPARE(w.lossChart()->saveAsPng(png), QString());
        QVERIFY(QImage(png).width() > 100);
    }

    // Stop in mid-epoch ends the run within one batch, keeps what it measured.
    void stopMidEpoch()
    {
        MainWindow w(options(m_big.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.show();
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        child<QSpinBox>(&w, "batchSize")->setValue(16);
        child<QSpinBox>(&w, "epochs")->setValue(1);
        QSignalSpy ended(&w, &MainWindow::runEnded);
        auto* progress = child<QProgressBar>(&w, "progress");
        QElapsedTimer wall;
        wall.start();
        QTest::mouseClick(w.trainingPanel()->trainButton(), Qt::LeftButton);
        QVERIFY(progress->isVisible());
        RunPtr run = w.runsModel()->runAt(0);
        QVERIFY(run);
        QTRY_VERIFY_WITH_TIMEOUT(run->steps.size() >= 3, kRunTimeoutMs);

        // Pause: the step count freezes (one batch may be in flight), then resumes.
        QElapsedTimer paused;
        paused.start();
        QTest::mouseClick(w.trainingPanel()->pauseButton(), Qt::LeftButton);
        QCOMPARE(w.trainingPanel()->pauseButton()->text(), QStringLiteral("Resume"));
        const int inFlight = inFlightWaitMs(*run);
        QTest::qWait(inFlight);
        const std::size_t pausedAt = run->steps.size();
        qInfo("pause: the count %zu taken %d ms after Pause", pausedAt, inFlight);
        QTest::qWait(1500);
        QCOMPARE(run->steps.size(), pausedAt);
        const qint64 pausedMs = paused.elapsed() - inFlight; // paused for at least this long
        QTest::mouseClick(w.trainingPanel()->pauseButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(run->steps.size() > pausedAt, int(10000 * quantscope::testing::sanitizerSlowdown())); // a batch took 13.5 s under TSan on a loaded machine

        QElapsedTimer t;
        t.start();
        QTest::keyClick(&w, Qt::Key_Escape); // Stop's shortcut
        QVERIFY(ended.wait(kRunTimeoutMs));
        const qint64 ms = t.elapsed();
        const qint64 bound = stopBoundMs(*run, pausedAt); // the steps before the pause
        qInfo("stop: the run ended %lld ms after Esc (bound %lld ms), at step %zu of %zu", ms, bound, run->steps.size(),
              run->start.stepsPerEpoch);
        QVERIFY2(ms < bound, "stop takes effect within one batch");
        QCOMPARE(run->status, RunStatus::Stopped);
        QVERIFY(run->finish.stopped);
        QVERIFY(run->steps.size() < run->start.stepsPerEpoch);
        QCOMPARE(cell(w, 0, RunsModel::Status), QStringLiteral("stopped"));
        // The Time column leaves the pause out, and its tooltip says so.
        qInfo("time: %.2f s reported, %.2f s wall, %.2f s paused", run->seconds(), wall.elapsed() / 1000.0, pausedMs / 1000.0);
        QVERIFY2(run->seconds() < double(wall.elapsed() - pausedMs) / 1000.0, "the paused time is counted in the run's Time");
        QVERIFY(w.runsModel()->headerData(RunsModel::Time, Qt::Horizontal, Qt::ToolTipRole).toString().contains(QLatin1String("paused")));
        // The run has ended: the progress bar neither stays full nor half full.
        QVERIFY(!progress->isVisible());
        QCOMPARE(progress->value(), 0);
        QVERIFY(w.lossChart()->pointCount() > 0);
        QVERIFY(w.trainingPanel()->trainButton()->isEnabled());
    }

    // Closing the window mid-run stops cleanly: no hang, no crash.
    void closeMidTraining()
    {
        auto* w = new MainWindow(options(m_big.path()));
        QSignalSpy ready(w, &MainWindow::datasetReady);
        w->show();
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        child<QSpinBox>(w, "batchSize")->setValue(16);
        QTest::mouseClick(w->trainingPanel()->trainButton(), Qt::LeftButton);
        RunPtr run = w->runsModel()->runAt(0);
        QTRY_VERIFY_WITH_TIMEOUT(run->steps.size() >= 2, kRunTimeoutMs);
        const qint64 bound = stopBoundMs(*run, run->steps.size());
        QElapsedTimer t;
        t.start();
        QVERIFY(w->close());
        QVERIFY(!w->isTraining());
        delete w;
        qInfo("close mid-training: window closed and worker joined in %lld ms (bound %lld ms)", t.elapsed(), bound);
        QVERIFY(t.elapsed() < bound);
    }

    // A bad path shows the core's message in the window; nothing else breaks.
    void badDatasetPath()
    {
        MainWindow w(options(QStringLiteral("/nonexistent/quantscope-data")));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.show();
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        QCOMPARE(ready.first().first().toBool(), false);
        const QString err = w.datasetPanel()->errorText();
        QVERIFY2(err.contains(QStringLiteral("/nonexistent/quantscope-data")), qPrintable(err));
        QVERIFY2(err.contains(QStringLiteral("no such folder")), qPrintable(err));
        QVERIFY(!w.trainingPanel()->trainButton()->isEnabled());
        w.startTraining(); // Ctrl+R with no dataset: an explanation, not a crash
        QVERIFY(w.errorText().contains(QStringLiteral("No dataset")));
        QCOMPARE(w.runsModel()->rowCount(), 0);

        // A truncated image file: the message names the file.
        QTemporaryDir broken;
        writeFixture(broken.path(), 100, 50);
        {
            QFile f(QDir(broken.path()).filePath(QStringLiteral("train-images-idx3-ubyte")));
            QVERIFY(f.open(QIODevice::ReadWrite));
            QVERIFY(f.resize(1000));
        }
        ready.clear();
        w.openDatasetFolder(broken.path());
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        QCOMPARE(ready.first().first().toBool(), false);
        QVERIFY2(w.datasetPanel()->errorText().contains(QStringLiteral("train-images-idx3-ubyte")),
                 qPrintable(w.datasetPanel()->errorText()));

        // Four files picked one by one load too.
        ready.clear();
        const QDir small(m_small.path());
        w.openDatasetFiles({small.filePath(QStringLiteral("train-images-idx3-ubyte")).toStdString(),
                            small.filePath(QStringLiteral("train-labels-idx1-ubyte")).toStdString(),
                            small.filePath(QStringLiteral("t10k-images-idx3-ubyte")).toStdString(),
                            small.filePath(QStringLiteral("t10k-labels-idx1-ubyte")).toStdString()});
        QVERIFY(ready.wait(kLoadTimeoutMs));
        QCOMPARE(ready.first().first().toBool(), true);
        QCOMPARE(w.dataset()->train.size(), std::size_t(640));

        // And a good folder afterwards loads and trains.
        ready.clear();
        w.openDatasetFolder(m_small.path());
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        QCOMPARE(ready.first().first().toBool(), true);
        QVERIFY(w.datasetPanel()->errorText().isEmpty());
        QVERIFY(w.trainingPanel()->trainButton()->isEnabled());
    }

    // A run the core refuses (LeNet-5 on 8x8 images) fails with the core's message in the window.
    void trainingError()
    {
        QTemporaryDir tiny;
        writeFixture(tiny.path(), 100, 20, 5, 8, 8);
        MainWindow w(options(tiny.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.wait(kLoadTimeoutMs));
        QVERIFY(child<QLabel>(&w, "datasetShape")->text().startsWith(QStringLiteral("8\u00d78")));
        selectData(child<QComboBox>(&w, "model"), QStringLiteral("lenet5"));
        QSignalSpy ended(&w, &MainWindow::runEnded);
        QTest::mouseClick(w.trainingPanel()->trainButton(), Qt::LeftButton);
        QVERIFY(ended.wait(kRunTimeoutMs));
        const RunPtr run = w.runsModel()->runAt(0);
        QCOMPARE(run->status, RunStatus::Failed);
        QVERIFY2(w.errorText().contains(QStringLiteral("lenet5 needs images of at least 12x12")), qPrintable(w.errorText()));
        QVERIFY(cell(w, 0, RunsModel::Status).startsWith(QStringLiteral("failed")));
        // The status bar names the cause too (e.g. "training diverged: non-finite gradients for 50 steps").
        QVERIFY2(w.statusText().contains(QStringLiteral("failed: ")) && w.statusText().contains(QStringLiteral("lenet5 needs images")),
                 qPrintable(w.statusText()));
        // The window carries on: another model trains.
        selectData(child<QComboBox>(&w, "model"), QStringLiteral("mlp"));
        child<QSpinBox>(&w, "epochs")->setValue(1);
        QVERIFY(w.trainingPanel()->trainButton()->isEnabled());
        QTest::mouseClick(w.trainingPanel()->trainButton(), Qt::LeftButton);
        QVERIFY(ended.wait(kRunTimeoutMs));
        QCOMPARE(w.runsModel()->runAt(1)->status, RunStatus::Done);
        QVERIFY(w.errorText().isEmpty());
    }

    // A mixed-precision run whose every step overflows stops after 50 skipped steps and says so in
    // the runs table and the status bar.
    void divergedRunSaysSo()
    {
        MainWindow w(options(m_small.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        QTemporaryDir dir;
        const QString path = QDir(dir.path()).filePath(QStringLiteral("diverging.qsm"));
        fixtures::writeDivergingModel(path.toStdString());
        QVERIFY(w.loadModelFile(path));
        selectData(child<QComboBox>(&w, "strategy"), QStringLiteral("mixed"));
        selectData(child<QComboBox>(&w, "format"), QStringLiteral("fp16"));
        child<QSpinBox>(&w, "batchSize")->setValue(8); // 80 steps per epoch
        child<QSpinBox>(&w, "epochs")->setValue(1);
        QSignalSpy ended(&w, &MainWindow::runEnded);
        QTest::mouseClick(w.trainingPanel()->trainButton(), Qt::LeftButton);
        QVERIFY(ended.wait(kRunTimeoutMs));
        const QString want = QStringLiteral("training diverged: non-finite gradients for 50 steps");
        QCOMPARE(w.runsModel()->runAt(0)->status, RunStatus::Failed);
        QVERIFY2(cell(w, 0, RunsModel::Status).contains(want), qPrintable(cell(w, 0, RunsModel::Status)));
        QVERIFY2(w.statusText().contains(want), qPrintable(w.statusText()));
    }

    // LSQ on a model with BatchNorm and BN re-estimate off: Train says so up front, as the CLI
    // does (tester 17: resnet8 W4A8 ended at 44 % with the defaults, 83 % with re-estimation).
    // Not with re-estimation on, nor on a model without BatchNorm.
    void lsqOnBatchNormIsNoted()
    {
        MainWindow w(options(m_small.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        selectData(child<QComboBox>(&w, "strategy"), QStringLiteral("qat"));
        selectData(child<QComboBox>(&w, "quantizer"), QStringLiteral("lsq"));
        child<QSpinBox>(&w, "epochs")->setValue(1);
        const QString note = QStringLiteral("learned step sizes (LSQ) on a model with BatchNorm");
        QSignalSpy ended(&w, &MainWindow::runEnded);
        for (const auto& [model, reestimate, noted] : {std::tuple{"seed-cnn-bn", 0, true}, std::tuple{"seed-cnn-bn", 2, false},
                                                       std::tuple{"mlp", 0, false}}) {
            selectData(child<QComboBox>(&w, "model"), QString::fromLatin1(model));
            child<QSpinBox>(&w, "bnReestimate")->setValue(reestimate);
            QTest::mouseClick(w.trainingPanel()->trainButton(), Qt::LeftButton);
            const QString said = w.errorText();
            QVERIFY2(said.contains(note) == noted, qPrintable(QString::fromLatin1(model) + ": " + said));
            if (noted) QVERIFY2(said.contains(QStringLiteral("BN re-estimate to 100")), qPrintable(said));
            QVERIFY(ended.wait(kRunTimeoutMs));
        }
    }

    // Options the strategy does not use are disabled (not hidden) and say why.
    void optionApplicability()
    {
        TrainingPanel p;
        auto* strategy = child<QComboBox>(&p, "strategy");
        auto* format = child<QComboBox>(&p, "format");
        auto* granularity = child<QComboBox>(&p, "granularity");
        auto* epochs = child<QSpinBox>(&p, "epochs");
        QVERIFY(strategy && format && granularity && epochs);
        // The default works at once: QAT, int8, channel-wise.
        QCOMPARE(p.config().precision.strategy, Strategy::Qat);
        QCOMPARE(p.config().precision.format, std::string("int8"));
        QCOMPARE(p.config().precision.granularity, std::string("channel"));
        QVERIFY(format->isEnabled() && granularity->isEnabled());

        selectData(strategy, QStringLiteral("fp32"));
        QVERIFY(!format->isEnabled());
        QVERIFY(!format->isHidden());
        QVERIFY(!granularity->isEnabled());
        QVERIFY2(format->toolTip().contains(QStringLiteral("Disabled")), qPrintable(format->toolTip()));

        selectData(strategy, QStringLiteral("mixed"));
        QVERIFY(format->isEnabled());
        QVERIFY(!granularity->isEnabled());
        QCOMPARE(p.config().precision.format, std::string("bf16")); // int8 does not fit mixed precision; bf16 as the CLI (tester 13)
        selectData(strategy, QStringLiteral("qat"));
        QCOMPARE(p.config().precision.format, std::string("int8")); // and comes back

        selectData(strategy, QStringLiteral("progressive"));
        QVERIFY(!epochs->isEnabled());
        QCOMPARE(p.config().epochs, std::size_t(3)); // fp32:1,fp16:1,int8:1
        QVERIFY(child<QWidget>(&p, "schedule")->isEnabled());
        TrainConfig c = p.config();
        QVERIFY(c.precision.schedule == "fp32:1,fp16:1,int8:1");
        c.validate();

        // AdaRound, CLE and bias correction are PTQ-only: greyed out with the reason elsewhere.
        auto* cle = child<QCheckBox>(&p, "cle");
        auto* bias = child<QCheckBox>(&p, "biasCorrection");
        auto* iters = child<QSpinBox>(&p, "adaroundIters");
        auto* rounding = child<QComboBox>(&p, "rounding");
        QVERIFY(cle && bias && iters && rounding);
        selectData(strategy, QStringLiteral("qat"));
        QVERIFY(!cle->isEnabled() && !bias->isEnabled() && !iters->isEnabled());
        QVERIFY2(cle->toolTip().contains(QStringLiteral("Disabled")), qPrintable(cle->toolTip()));
        selectData(strategy, QStringLiteral("ptq"));
        QVERIFY(cle->isEnabled() && bias->isEnabled());
        QVERIFY(!iters->isEnabled()); // nearest rounding does not iterate
        selectData(rounding, QStringLiteral("adaround"));
        QVERIFY(iters->isEnabled());
        cle->setChecked(true);
        bias->setChecked(true);
        c = p.config();
        QCOMPARE(c.precision.rounding, std::string("adaround"));
        QVERIFY(c.precision.crossLayerEqualization && c.precision.biasCorrection);
        c.validate();
        selectData(strategy, QStringLiteral("qat")); // the PTQ-only choices do not travel
        c = p.config();
        QCOMPARE(c.precision.rounding, std::string("nearest"));
        QVERIFY(!c.precision.crossLayerEqualization && !c.precision.biasCorrection);
        c.validate();

        // Weight decay and Nesterov momentum (the CLI's --weight-decay and --nesterov; tester 13
        // found no GUI control for them): they reach the run's config, Nesterov only with SGD and a
        // momentum, and a config sets them back.
        auto* decay = child<QLineEdit>(&p, "weightDecay");
        auto* nesterov = child<QCheckBox>(&p, "nesterov");
        auto* optimizer = child<QComboBox>(&p, "optimizer");
        QVERIFY(decay && nesterov && optimizer);
        QCOMPARE(p.config().weightDecay, 0.0f);
        decay->setText(QStringLiteral("5e-4"));
        QCOMPARE(p.config().weightDecay, 5e-4f);
        selectData(optimizer, QStringLiteral("adam"));
        QVERIFY(!nesterov->isEnabled());
        QVERIFY2(nesterov->toolTip().contains(QStringLiteral("only SGD")), qPrintable(nesterov->toolTip()));
        selectData(optimizer, QStringLiteral("sgd"));
        c = p.config();
        c.momentum = 0.9f;
        p.setConfig(c);
        QVERIFY(nesterov->isEnabled());
        nesterov->setChecked(true);
        QVERIFY(p.config().nesterov);
        c = p.config();
        c.validate();
        c.nesterov = false;
        c.weightDecay = 1e-3f;
        p.setConfig(c);
        QVERIFY(!nesterov->isChecked());
        QCOMPARE(decay->text(), QStringLiteral("0.001"));

        // Every option has a tooltip.
        for (QWidget* w : p.findChildren<QWidget*>())
            if (qobject_cast<QComboBox*>(w) || qobject_cast<QAbstractSpinBox*>(w))
                QVERIFY2(!w->toolTip().isEmpty(), qPrintable(w->objectName()));
    }

private:
    QTemporaryDir m_small, m_big, m_flow;
};

QTEST_MAIN(TestGuiWindow)
#include "tst_gui_window.moc"
