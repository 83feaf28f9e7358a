// The QuantScope window's files, offscreen: runs saved as JSON and CSV, settings that persist,
// a model file that starts a run, the Layer compare tab, and exporting a run's model (.qsm,
// ONNX) with a failed export leaving nothing behind, and evaluating the exports (File > Evaluate
// model file), and a grey image folder with an RGB model there.
#include "curve_charts.h"
#include "dataset_panel.h"
#include "evaluate_dialog.h"
#include "format_text.h"
#include "layer_compare_view.h"
#include "main_window.h"
#include "quant_charts.h"
#include "run_record.h"
#include "runs_model.h"
#include "training_panel.h"

#include "diverging_model.h"
#include "gui_window_fixtures.h"
#include "slow_tests.h"

#include "data/idx.h"
#include "infer/model_runner.h"
#include "io/exported_model.h"
#include "io/model_source.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/model_zoo.h"
#include "util/rng.h"

#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QHeaderView>
#include <QFileInfo>
#include <QImage>
#include <QLabel>
#include <QLineEdit>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QValueAxis>
#include <QScatterSeries>
#include <QMessageBox>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QSplitter>
#include <QStandardPaths>
#include <QSpinBox>
#include <QTableView>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <algorithm>
#include <cmath>

using namespace quantscope;

using namespace quantscope::testing;

namespace {
// A plan entry that sets one layer's weight format.
LayerOverride formatOverride(const char* layer, const char* format)
{
    LayerOverride o;
    o.layer = layer;
    o.format = format;
    return o;
}
} // namespace

class TestGuiFiles : public QObject {
    Q_OBJECT

private slots:
    void initTestCase()
    {
        QVERIFY(m_small.isValid());
        QVERIFY(m_flow.isValid());
        writeFixture(m_flow.path(), flowTrainImages(), flowTestImages());
        writeFixture(m_small.path(), 640, 200);
    }

    // Runs survive a JSON round trip; metrics export as CSV.
    void runsJsonAndCsv()
    {
        MainWindow w(options(m_flow.path())); // scaled under sanitizers: 640 images outlasted 600 s under TSan at load ~10
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        child<QSpinBox>(&w, "epochs")->setValue(1);
        QSignalSpy ended(&w, &MainWindow::runEnded);
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        // The run's start event names what computed its products (this QAT run: its int8 products
        // where the CPU has them, else "fp32 fake-quant (why)").
        QVERIFY(!w.runsModel()->runAt(0)->start.compute.empty());
        w.runsModel()->runAt(0)->start.compute = "amx-bf16"; // as a mixed bf16 run on AMX reports it
        QTemporaryDir out;
        const QString json = QDir(out.path()).filePath(QStringLiteral("runs.json"));
        QCOMPARE(saveRunsJson(json, w.runsModel()->runs()), QString());
        const QString csv = QDir(out.path()).filePath(QStringLiteral("metrics.csv"));
        QCOMPARE(saveMetricsCsv(csv, w.runsModel()->runs()), QString());
        QFile f(csv);
        QVERIFY(f.open(QIODevice::ReadOnly));
        QCOMPARE(f.readAll().count('\n'), 2); // header + one epoch
        // A progressive run's format is its schedule, not the greyed-out format box's leftover.
        auto progressive = std::make_shared<RunRecord>(*w.runsModel()->runAt(0));
        progressive->config.precision.strategy = Strategy::Progressive;
        progressive->config.precision.schedule = "fp32:1,fp16:1,int8:1";
        progressive->config.precision.format = "int3";
        const QString csv2 = QDir(out.path()).filePath(QStringLiteral("progressive.csv"));
        QCOMPARE(saveMetricsCsv(csv2, {progressive}), QString());
        QFile f2(csv2);
        QVERIFY(f2.open(QIODevice::ReadOnly));
        const QString rows = QString::fromUtf8(f2.readAll());
        QVERIFY2(rows.contains("fp32:1,fp16:1,int8:1") && !rows.contains("int3"), qPrintable(rows));
        // A per-layer plan is said, as the runs table says it (the row read as uniform int4).
        auto planned = std::make_shared<RunRecord>(*w.runsModel()->runAt(0));
        planned->config.precision.strategy = Strategy::Ptq;
        planned->config.precision.format = "int4";
        planned->config.precision.layers = {formatOverride("fc1", "int2"), formatOverride("fc2", "fp32")};
        const QString csv3 = QDir(out.path()).filePath(QStringLiteral("plan.csv"));
        QCOMPARE(saveMetricsCsv(csv3, {planned}), QString());
        QFile f3(csv3);
        QVERIFY(f3.open(QIODevice::ReadOnly));
        const QString planRows = QString::fromUtf8(f3.readAll());
        QVERIFY2(planRows.contains("int4 default, 2 per-layer"), qPrintable(planRows));

        MainWindow w2(MainWindowOptions{false, QString(), false});
        QVERIFY(w2.loadRunsFrom(json));
        QCOMPARE(w2.runsModel()->rowCount(), 1);
        const RunPtr a = w.runsModel()->runAt(0), b = w2.runsModel()->runAt(0);
        QCOMPARE(b->steps.size(), a->steps.size());
        QCOMPARE(b->epochs.size(), a->epochs.size());
        QCOMPARE(b->layerStats.size(), a->layerStats.size());
        QCOMPARE(b->finalTestAccuracy(), a->finalTestAccuracy());
        QCOMPARE(b->config.precision.granularity, a->config.precision.granularity);
        QCOMPARE(b->start.compute, std::string("amx-bf16"));
        QVERIFY2(b->configTooltip().contains(QStringLiteral("Products on amx-bf16")), qPrintable(b->configTooltip()));
        QCOMPARE(w2.lossChart()->pointCount(), int(a->steps.size()));

        QVERIFY(!w2.loadRunsFrom(csv)); // not JSON: a message, no rows
        QVERIFY(w2.errorText().contains(QStringLiteral("not valid JSON")));
        QCOMPARE(w2.runsModel()->rowCount(), 1);
        // A later load that works takes the red banner away (it stayed up, "Could not load runs",
        // over the table that had just loaded them; tester 12 #3).
        QVERIFY(w2.loadRunsFrom(json));
        QCOMPARE(w2.runsModel()->rowCount(), 2);
        QVERIFY2(w2.errorText().isEmpty(), qPrintable(w2.errorText()));
    }

    // Seven runs overlaid: every run's legend entry keeps readable text (the legend was ten
    // coloured dashes with no labels).
    void manyRunsKeepTheirLegendText()
    {
        std::vector<RunPtr> runs;
        const char* formats[] = {"int8", "int4", "int2", "fp8-e4m3", "int8", "int4", "fp16"};
        for (int i = 0; i < 7; ++i) {
            auto r = std::make_shared<RunRecord>();
            r->id = i + 1;
            r->status = RunStatus::Done;
            r->finished = true;
            r->config.precision.strategy = i == 6 ? Strategy::LowPrecision : Strategy::Qat;
            r->config.precision.format = formats[i];
            r->config.precision.granularity = i % 2 ? "tensor" : "channel";
            r->config.epochs = 3;
            for (std::size_t e = 1; e <= 3; ++e) {
                EpochEvent ev;
                ev.epoch = e;
                ev.epochs = 3;
                ev.trainAccuracy = 0.5 + 0.1 * double(e) + 0.01 * i;
                ev.testAccuracy = ev.trainAccuracy - 0.02;
                ev.quantTestAccuracy = ev.testAccuracy - 0.01 * i;
                r->epochs.push_back(ev);
            }
            runs.push_back(r);
        }
        const QString json = QDir(m_small.path()).filePath("seven-runs.json");
        QVERIFY(saveRunsJson(json, runs).isEmpty());
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.resize(1600, 1000);
        w.show();
        QVERIFY(w.loadRunsFrom(json));
        QVERIFY(w.loadRunsFrom(json)); // runs #8..#14: two digits beside the colour swatch
        QList<int> ids;
        for (int i = 8; i <= 14; ++i) ids << i;
        w.selectRuns(ids);
        QTest::qWait(100);
        QChart* chart = w.accuracyChart()->chart();
        int shown = 0;
        for (QLegendMarker* m : chart->legend()->markers())
            if (m->isVisible() && m->label().startsWith('#')) ++shown;
        QCOMPARE(shown, 7);
        if (const QByteArray dir = qgetenv("QS_LEGEND_SHOT"); !dir.isEmpty())
            w.grab().save(QString::fromLocal8Bit(dir) + QStringLiteral("/seven-runs.png"));
        // Vertical at the right: each label gets its own row, not a seventh of the width.
        QCOMPARE(chart->legend()->alignment(), Qt::AlignRight);
    }

    // A PTQ --epochs 0 run of a loaded model reports one epoch, numbered 0: the accuracy chart
    // shows it (its axis started at epoch 1, so the chart stayed empty) and the loss chart says
    // why it has no steps (it kept "Click Train").
    void evaluationOnlyRunIsDrawn()
    {
        auto r = std::make_shared<RunRecord>();
        r->id = 1;
        r->status = RunStatus::Done;
        r->finished = true;
        r->config.precision.strategy = Strategy::Ptq;
        r->config.epochs = 0;
        r->hasStart = true;
        r->start.epochs = 0;
        EpochEvent ev;
        ev.epoch = 0;
        ev.testAccuracy = 0.81;
        ev.quantTestAccuracy = 0.80;
        r->epochs.push_back(ev);
        const QString json = QDir(m_small.path()).filePath("ptq-0-epochs.json");
        QVERIFY(saveRunsJson(json, {r}).isEmpty());
        MainWindow w(MainWindowOptions{false, QString(), false});
        QVERIFY(w.loadRunsFrom(json));
        w.selectRuns({1});
        QCOMPARE(w.accuracyChart()->pointCount(), 1);
        QVERIFY2(w.accuracyChart()->epochAxis()->min() < 0.0 && w.accuracyChart()->epochAxis()->max() > 0.0,
                 qPrintable(QString("epochs %1..%2").arg(w.accuracyChart()->epochAxis()->min()).arg(w.accuracyChart()->epochAxis()->max())));
        QVERIFY(w.accuracyChart()->emptyMessage().isEmpty());
        QVERIFY2(w.lossChart()->emptyMessage().contains("evaluated a loaded model"), qPrintable(w.lossChart()->emptyMessage()));
        // Beside a trained run of 3 epochs, the axis runs 0..3 (it showed epoch 0 alone).
        auto trained = std::make_shared<RunRecord>(*r);
        trained->id = 2;
        trained->config.epochs = 3;
        trained->start.epochs = 3;
        trained->epochs.clear();
        for (std::size_t e = 1; e <= 3; ++e) {
            EpochEvent t;
            t.epoch = e;
            t.testAccuracy = 0.7 + 0.05 * double(e);
            trained->epochs.push_back(t);
        }
        const QString both = QDir(m_small.path()).filePath("ptq-and-trained.json");
        QVERIFY(saveRunsJson(both, {r, trained}).isEmpty());
        MainWindow w2(MainWindowOptions{false, QString(), false});
        QVERIFY(w2.loadRunsFrom(both));
        w2.selectRuns({1, 2});
        QVERIFY2(w2.accuracyChart()->epochAxis()->min() < 0.0 && w2.accuracyChart()->epochAxis()->max() > 3.0,
                 qPrintable(QString("epochs %1..%2").arg(w2.accuracyChart()->epochAxis()->min()).arg(w2.accuracyChart()->epochAxis()->max())));
    }

    // The window remembers its layout and the last options (QSettings, in Qt's test location).
    void settingsPersist()
    {
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("QuantScopeTest"));
        QCoreApplication::setApplicationName(QStringLiteral("tst_gui_window"));
        QSettings().clear();
        MainWindowOptions o = options(m_small.path());
        o.useSettings = true;
        QByteArray splitter;
        {
            MainWindow w(o);
            QSignalSpy ready(&w, &MainWindow::datasetReady);
            w.show();
            QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
            selectData(child<QComboBox>(&w, "granularity"), QStringLiteral("tensor"));
            child<QSpinBox>(&w, "seed")->setValue(42);
            QCOMPARE(w.trainingPanel()->config().lrSchedule, std::string("constant")); // the default
            selectData(child<QComboBox>(&w, "lrSchedule"), QStringLiteral("cosine"));
            QCOMPARE(w.trainingPanel()->config().lrSchedule, std::string("cosine"));
            auto* split = child<QSplitter>(&w, "mainSplitter");
            split->setSizes({500, 300});
            splitter = split->saveState();
            w.tabs()->setCurrentIndex(3);
            w.close();
        }
        MainWindow w(o);
        QCOMPARE(w.trainingPanel()->config().precision.granularity, std::string("tensor"));
        QCOMPARE(w.trainingPanel()->config().seed, std::uint64_t(42));
        QCOMPARE(w.trainingPanel()->config().lrSchedule, std::string("cosine"));
        QCOMPARE(w.tabs()->currentIndex(), 3);
        QCOMPARE(child<QSplitter>(&w, "mainSplitter")->saveState(), splitter);
        QSettings().clear();
    }

    // File > Open model file: an FP32 ONNX file joins the model picker and starts a run from its
    // weights (PTQ with 0 epochs quantizes it without training); broken and integer files are
    // refused with a message naming them, and the picker keeps its choice.
    void modelFileStartsARun()
    {
        MainWindow w(options(m_small.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        const DatasetPtr data = w.dataset();
        QTemporaryDir dir;
        const QString path = QDir(dir.path()).filePath(QStringLiteral("my-lenet.onnx"));
        auto model = makeModel("lenet5", data->channels(), data->height(), data->width(), data->numClasses(), 5);
        writeOnnx(path.toStdString(), exportFloatModel(*model, "lenet5", data->normalization, data->classNames));

        auto* picker = child<QComboBox>(&w, "model");
        const QString before = picker->currentText();
        const QString broken = QDir(dir.path()).filePath(QStringLiteral("broken.onnx"));
        {
            QFile f(broken);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write("not a protobuf at all");
        }
        QVERIFY(!w.loadModelFile(broken));
        QVERIFY2(w.errorText().contains(QStringLiteral("broken.onnx")), qPrintable(w.errorText()));
        QCOMPARE(picker->currentText(), before);

        QVERIFY(w.loadModelFile(path));
        QCOMPARE(picker->currentText(), QStringLiteral("my-lenet.onnx"));
        QCOMPARE(w.trainingPanel()->config().modelFile, path.toStdString());
        QVERIFY(w.trainingPanel()->config().pretrained);
        QVERIFY(child<QCheckBox>(&w, "reinitModel")->isEnabled());
        selectData(child<QComboBox>(&w, "strategy"), QStringLiteral("ptq"));
        child<QSpinBox>(&w, "epochs")->setValue(0);
        QCOMPARE(w.trainingPanel()->config().epochs, std::size_t{0});
        QSignalSpy ended(&w, &MainWindow::runEnded);
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        const RunRecord* run = w.runsModel()->runById(ended.first().first().toInt()).get();
        QCOMPARE(run->status, RunStatus::Done);
        QCOMPARE(run->finish.epochsDone, std::size_t{0});
        QVERIFY(!std::isnan(run->finish.quantTestAccuracy));
        QCOMPARE(run->config.modelFile, path.toStdString());
        // The quantized accuracy came from the integer engine, and the run's tooltip says so; with
        // More options' "fake-quant" the same run measures it on the float model.
        QVERIFY(!run->epochs.empty());
        QVERIFY2(QString::fromStdString(run->epochs.back().quantRunner).contains(QStringLiteral("integer engine")),
                 run->epochs.back().quantRunner.c_str());
        QVERIFY2(run->configTooltip().contains(QStringLiteral("measured on the integer engine")), qPrintable(run->configTooltip()));
        // Another normalisation than the file stores is refused, as train --normalize refuses it
        // (the window trained the file's weights on it in silence, and the export carried it).
        child<QLineEdit>(&w, "normalize")->setText(QStringLiteral("0.3,0.5"));
        const int runsAtRefusal = w.runsModel()->rowCount();
        w.startTraining();
        QVERIFY2(w.errorText().contains(QStringLiteral("stores its input normalisation")), qPrintable(w.errorText()));
        QCOMPARE(w.runsModel()->rowCount(), runsAtRefusal);
        child<QLineEdit>(&w, "normalize")->clear();
        {
            TrainConfig fq = w.trainingPanel()->config();
            fq.quantEval = "fake-quant";
            w.trainingPanel()->setConfig(fq);
            ended.clear();
            w.startTraining();
            QVERIFY(ended.wait(kRunTimeoutMs));
            const RunRecord* f = w.runsModel()->runById(ended.first().first().toInt()).get();
            QCOMPARE(f->status, RunStatus::Done);
            QVERIFY(!f->epochs.empty());
            QCOMPARE(f->epochs.back().quantRunner, std::string("fake-quant"));
            QCOMPARE(f->config.quantEval, std::string("fake-quant"));
        }

        // Choosing a preset again leaves the file behind. Epochs 0 stays as it was (it was clamped
        // to 1 without a word, so the next Train trained), and Train says why it cannot start.
        selectData(picker, QStringLiteral("mlp"));
        QVERIFY(w.trainingPanel()->config().modelFile.empty());
        QVERIFY(!child<QCheckBox>(&w, "reinitModel")->isEnabled());
        QCOMPARE(child<QSpinBox>(&w, "epochs")->value(), 0);
        const int runsBefore = w.runsModel()->rowCount();
        w.startTraining();
        QCOMPARE(w.runsModel()->rowCount(), runsBefore);
        QVERIFY2(w.errorText().contains(QStringLiteral("Epochs 0")) && w.errorText().contains(QStringLiteral("Open model file")),
                 qPrintable(w.errorText()));
    }

    // The Dataset dock's Validation field holds training images out (after the training limit, as
    // train --validation N --train-limit M): each epoch measures them, and the Accuracy chart draws
    // a validation line.
    void validationHeldOut()
    {
        MainWindow w(options(m_small.path()));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        const std::size_t all = w.dataset()->train.size();
        QCOMPARE(w.dataset()->validation.size(), std::size_t{0});
        ready.clear();
        child<QSpinBox>(&w, "validationImages")->setValue(100);
        QVERIFY(ready.wait(kLoadTimeoutMs));
        QCOMPARE(w.dataset()->validation.size(), std::size_t{100});
        QCOMPARE(w.dataset()->train.size(), all - 100);
        selectData(child<QComboBox>(&w, "strategy"), QStringLiteral("fp32"));
        child<QSpinBox>(&w, "epochs")->setValue(1);
        QSignalSpy ended(&w, &MainWindow::runEnded);
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        const RunPtr run = w.runsModel()->runById(ended.first().first().toInt());
        QCOMPARE(run->status, RunStatus::Done);
        QVERIFY(!run->epochs.empty() && std::isfinite(run->epochs.back().validationAccuracy));
        QTRY_VERIFY_WITH_TIMEOUT(
            [&] {
                for (QAbstractSeries* s : w.accuracyChart()->chart()->series())
                    if (s->name() == QStringLiteral("validation") && static_cast<QLineSeries*>(s)->count() == 1) return true;
                return false;
            }(),
            5000);
    }

    // The Layers tab: after a run, Compare quantizes its FP32 model and draws one point per layer
    // for both curves; int2 weights fall further below FP32 than int8 at the first convolution.
    void layerCompareTab()
    {
        MainWindow w(options(m_flow.path())); // scaled under sanitizers: 640 images took over 25 min under TSan
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        selectData(child<QComboBox>(&w, "strategy"), QStringLiteral("fp32"));
        child<QSpinBox>(&w, "epochs")->setValue(1);
        LayerCompareView* view = w.layerCompareView();
        QVERIFY(!view->compareButton()->isEnabled()); // no run yet
        QSignalSpy ended(&w, &MainWindow::runEnded);
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        QTRY_VERIFY_WITH_TIMEOUT(view->compareButton()->isEnabled(), 20000);
        QSignalSpy done(view, &LayerCompareView::compareFinished);
        const auto run = [&](const QString& format) {
            selectData(child<QComboBox>(view, "compareFormat"), format);
            done.clear();
            view->compareButton()->click();
            return done.wait(kRunTimeoutMs) && done.first().first().toBool();
        };
        QVERIFY2(run(QStringLiteral("int8")), qPrintable(view->statusText()));
        const std::size_t layers = view->report().layers.size();
        QVERIFY(layers >= 5);
        QCOMPARE(static_cast<std::size_t>(view->propagatedSeries()->count()), layers);
        QVERIFY(view->aloneSeries()->count() >= 4 && static_cast<std::size_t>(view->aloneSeries()->count()) < layers); // conv1, conv2, fc1, fc2 and the points
        const double int8Conv1 = view->report().layers[0].aloneSqnrDb;
        QVERIFY2(run(QStringLiteral("int2")), qPrintable(view->statusText()));
        QVERIFY(view->report().layers[0].aloneSqnrDb < int8Conv1 - 10.0);
        QVERIFY2(view->statusText().contains(QStringLiteral("dB")), qPrintable(view->statusText()));
        if (const char* dir = std::getenv("QS_COMPARE_SHOT")) {
            w.resize(1600, 1000);
            w.tabs()->setCurrentWidget(view);
            QTest::qWait(200);
            w.grab().save(QString::fromLocal8Bit(dir) + QStringLiteral("/layers-tab.png"));
        }

        // A run with a per-layer plan is compared with its plan first (the tab ignored it): here
        // fc1 kept in FP32 is compared unquantized, conv1 at int2.
        TrainConfig c = w.trainingPanel()->config();
        c.precision.strategy = Strategy::Ptq;
        c.precision.format = "int8";
        c.precision.layers = {formatOverride("fc1", "fp32"), formatOverride("conv1", "int2")};
        w.trainingPanel()->setConfig(c);
        ended.clear();
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        QTRY_VERIFY_WITH_TIMEOUT(view->compareButton()->isEnabled() && view->findChild<QComboBox*>("compareFormat")->currentData() == "plan", 20000);
        done.clear();
        view->compareButton()->click();
        QVERIFY(done.wait(kRunTimeoutMs) && done.first().first().toBool());
        const auto layer = [&](const char* name) {
            for (const LayerComparison& l : view->report().layers)
                if (l.layer == name) return l;
            return LayerComparison{};
        };
        QVERIFY(!layer("fc1").quantizedWeights && std::isinf(layer("fc1").aloneSqnrDb));
        QVERIFY(layer("conv1").quantizedWeights && layer("conv1").aloneSqnrDb < int8Conv1 - 10.0);

        // A uniform PTQ run is compared at its own settings first (int2 tensor-wise here), not at
        // the tab's int4 channel-wise (tester 13).
        c.precision.layers.clear();
        c.precision.format = "int2";
        c.precision.granularity = "tensor";
        w.trainingPanel()->setConfig(c);
        ended.clear();
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        auto* formats = view->findChild<QComboBox*>("compareFormat");
        QTRY_VERIFY_WITH_TIMEOUT(view->compareButton()->isEnabled() && formats->currentData() == "plan" && formats->currentText().contains("int2"),
                                 20000);
        QVERIFY2(formats->currentText().contains("tensor"), qPrintable(formats->currentText()));
        done.clear();
        view->compareButton()->click();
        QVERIFY(done.wait(kRunTimeoutMs) && done.first().first().toBool());
        QVERIFY(layer("conv1").quantizedWeights && layer("conv1").aloneSqnrDb < int8Conv1 - 10.0);
    }

    // File > Export quantized model… writes .qsm / .onnx through core's writers and reports the
    // size and the accuracy re-measured from the file.
    void exportModel()
    {
        {
            // With no run yet, the entry is there and explains what to do.
            MainWindow empty(MainWindowOptions{false, QString(), false});
            auto* act = empty.findChild<QAction*>(QStringLiteral("exportModelAction"));
            QVERIFY(act);
            QVERIFY(act->isEnabled());
            QString text;
            QTimer::singleShot(100, [&text] {
                if (auto* box = qobject_cast<QMessageBox*>(QApplication::activeModalWidget())) {
                    text = box->text();
                    box->accept();
                }
            });
            act->trigger();
            QVERIFY2(text.contains(QStringLiteral("no run to export")), qPrintable(text));
        }

        MainWindowOptions o = options(m_flow.path()); // scaled under sanitizers, as fullFlow
        o.quietExport = true;
        MainWindow w(o);
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        child<QSpinBox>(&w, "epochs")->setValue(1); // default: QAT int8 channel-wise
        QSignalSpy ended(&w, &MainWindow::runEnded);
        w.startTraining();
        QVERIFY(ended.wait(kRunTimeoutMs));
        const int id = ended.first().first().toInt();
        QTRY_VERIFY_WITH_TIMEOUT(w.runsModel()->runById(id)->exportBundle != nullptr, 20000);

        QTemporaryDir out;
        QSignalSpy done(&w, &MainWindow::exportFinished);
        for (const char* name : {"model.qsm", "model.onnx"}) {
            const QString path = QDir(out.path()).filePath(QString::fromLatin1(name));
            done.clear();
            QVERIFY(w.exportRunTo(id, path));
            QVERIFY(done.wait(kRunTimeoutMs));
            const QString report = done.first().at(2).toString();
            qInfo("%s", qPrintable(report));
            QVERIFY2(done.first().at(1).toBool(), qPrintable(report));
            QVERIFY(QFileInfo(path).size() > 1000);
            QVERIFY(report.contains(QStringLiteral("re-measured")));
            QVERIFY(report.contains(QStringLiteral("int8")));
        }

        evaluateExports(w, out.path());

        // What the writers cannot take is refused with their reason, before anything is written.
        done.clear();
        const QString bad = QDir(out.path()).filePath(QStringLiteral("model.txt"));
        QVERIFY(!w.exportRunTo(id, bad));
        QCOMPARE(done.count(), 1);
        QVERIFY(!done.first().at(1).toBool());
        QVERIFY(!QFileInfo::exists(bad));
        QVERIFY(!w.errorText().isEmpty());
    }

    // File > Evaluate model file reads an image folder with the model's channels, as quantscope-cli
    // eval does (0d2e47e): a folder of grey PNGs scores an RGB model (the dialog refused it, "the
    // model reads 3-channel images", while the CLI scored it), with the accuracy the CLI's reading
    // gives, and the dialog says the grey images were read as RGB.
    void evaluateGreyFolderWithAnRgbModel()
    {
        QTemporaryDir tmp;
        QVERIFY(tmp.isValid());
        const QString root = QDir(tmp.path()).filePath(QStringLiteral("grey"));
        for (const char* split : {"train", "test"})
            for (int c = 0; c < 2; ++c) {
                const QString dir = QStringLiteral("%1/%2/%3").arg(root, QString::fromLatin1(split), QLatin1String(c ? "light" : "dark"));
                QVERIFY(QDir().mkpath(dir));
                for (int i = 0; i < 6; ++i) {
                    QImage img(8, 8, QImage::Format_Grayscale8);
                    for (int y = 0; y < 8; ++y)
                        for (int x = 0; x < 8; ++x) img.scanLine(y)[x] = uchar((c ? 160 : 30) + 7 * ((x + y + i) % 9));
                    QVERIFY(img.save(QStringLiteral("%1/%2.png").arg(dir).arg(i)));
                }
            }
        MainWindow w(options(root));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        QVERIFY(ready.count() > 0 || ready.wait(kLoadTimeoutMs));
        QVERIFY(ready.last().first().toBool());
        const DatasetPtr data = w.dataset();
        QCOMPARE(data->channels(), std::size_t{1});
        QCOMPARE(data->test.size(), std::size_t{12});

        const QString path = QDir(tmp.path()).filePath(QStringLiteral("rgb-mlp.qsm"));
        auto model = makeModel("mlp", 3, 8, 8, 2, 7);
        writeQsm(path.toStdString(), exportFloatModel(*model, "mlp", Normalization::uniform(0.4f, 0.3f, 3), data->classNames));

        w.showEvaluateDialog(path);
        EvaluateDialog* dlg = w.evaluateDialog();
        QVERIFY(dlg && dlg->isVisible());
        QSignalSpy finished(dlg, &EvaluateDialog::evaluationFinished);
        QVERIFY(dlg->evaluate());
        QVERIFY(finished.wait(kRunTimeoutMs));
        QVERIFY2(finished.first().at(0).toBool(), qPrintable(finished.first().at(1).toString()));
        QTableWidget* t = dlg->results();
        QCOMPARE(t->rowCount(), 1);
        QCOMPARE(t->item(0, 4)->text(), formatCount(12.0));

        // The CLI's reading: the folder with imageChannels 3, the model run on its test set.
        DatasetOptions o;
        o.dir = root.toStdString();
        o.imageChannels = 3;
        o.testOnly = true;
        const Dataset rgb = Dataset::load(o);
        QCOMPARE(rgb.test.channels, std::size_t{3});
        ExportedModel m = readModelFile(path.toStdString());
        ModelRunner runner(m);
        QCOMPARE(t->item(0, 5)->text(), formatPercent(evaluateRunner(runner, rgb.test).accuracy, 2));

        const auto* notes = dlg->findChild<QLabel*>(QStringLiteral("evaluateNotes"));
        QVERIFY(notes && notes->isVisible());
        QVERIFY2(notes->text().contains(QStringLiteral("grey images are read as RGB")) && notes->text().contains(root),
                 qPrintable(notes->text()));
        QCOMPARE(w.dataset()->channels(), std::size_t{1}); // the loaded dataset stays as it was
        dlg->close();
    }

private:
    // File > Evaluate model file on the exports just written: the integer engine's accuracy is the
    // CLI's (ModelRunner + evaluateRunner, as quantscope-cli eval) on the same test set, the engine
    // agrees with fake-quant, the predictions save as eval --predictions does, and a broken file is
    // refused with its name.
    static void evaluateExports(MainWindow& w, const QString& dir)
    {
        auto* act = w.findChild<QAction*>(QStringLiteral("evaluateModelAction"));
        QVERIFY(act);
        act->trigger();
        EvaluateDialog* dlg = w.evaluateDialog();
        QVERIFY(dlg && dlg->isVisible());
        QVERIFY(dlg->statusText().contains(QStringLiteral("Pick a model file")));
        QSignalSpy finished(dlg, &EvaluateDialog::evaluationFinished);
        int row = 0;
        for (const char* name : {"model.qsm", "model.onnx"}) {
            const QString path = QDir(dir).filePath(QString::fromLatin1(name));
            dlg->setModelFile(path);
            dlg->compareBox()->setChecked(true);
            finished.clear();
            QVERIFY(dlg->evaluate());
            QVERIFY(finished.wait(kRunTimeoutMs));
            QVERIFY2(finished.first().at(0).toBool(), qPrintable(finished.first().at(1).toString()));

            ExportedModel m = readModelFile(path.toStdString());
            QVERIFY(m.quantized);
            ModelRunner runner(m);
            QVERIFY(runner.isInteger());
            const RunnerEval cli = evaluateRunner(runner, w.dataset()->test);
            QTableWidget* t = dlg->results();
            QCOMPARE(t->rowCount(), row + 1);
            QVERIFY2(t->item(row, 2)->text().contains(QStringLiteral("(the file's)")), qPrintable(t->item(row, 2)->text()));
            QVERIFY2(t->item(row, 3)->text().contains(QStringLiteral("integer engine")), qPrintable(t->item(row, 3)->text()));
            QCOMPARE(t->item(row, 5)->text(), formatPercent(cli.accuracy, 2));
            QVERIFY(t->item(row, 7)->text() != noValueText()); // agreement with fake-quant, measured
            const double agree = t->item(row, 7)->text().remove(QStringLiteral(" %")).toDouble();
            QVERIFY2(agree >= 99.0, qPrintable(t->item(row, 7)->text()));

            const QString csv = QDir(dir).filePath(QStringLiteral("pred.csv"));
            QVERIFY(dlg->savePredictionsTo(csv));
            QFile f(csv);
            QVERIFY(f.open(QIODevice::ReadOnly));
            const QStringList lines = QString::fromUtf8(f.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
            QCOMPARE(std::size_t(lines.size()), cli.predictions.size() + 1); // a header
            QVERIFY2(lines[0].startsWith(QStringLiteral("index,predicted_class,")), qPrintable(lines[0]));
            for (std::size_t i = 0; i < cli.predictions.size(); ++i)
                QVERIFY2(lines[int(i) + 1].startsWith(QStringLiteral("%1,%2,").arg(i).arg(cli.predictions[i])), qPrintable(lines[int(i) + 1]));
            ++row;
        }
        // Every column fits the dialog at its default size (Agreement and Speed were past its edge:
        // tester 13); the long texts are whole in their tooltips.
        QTableWidget* t = dlg->results();
        QVERIFY2(t->horizontalHeader()->length() <= t->viewport()->width(),
                 qPrintable(QStringLiteral("%1 > %2").arg(t->horizontalHeader()->length()).arg(t->viewport()->width())));
        // and the last, Speed, is as wide as its text ("23,905 im" was cut: tester 19)
        for (int r = 0; r < t->rowCount(); ++r)
            QVERIFY2(t->horizontalHeader()->sectionSize(8) >= t->fontMetrics().horizontalAdvance(t->item(r, 8)->text()),
                     qPrintable(QStringLiteral("%1 < %2").arg(t->horizontalHeader()->sectionSize(8)).arg(t->item(r, 8)->text())));
        QVERIFY(t->item(0, 1)->toolTip().contains(QStringLiteral("weights")));
        QCOMPARE(t->item(0, 2)->toolTip(), t->item(0, 2)->text());
        // Return in the path field evaluates (it opened the file browser: tester 16).
        finished.clear();
        QTest::keyClick(dlg->findChild<QLineEdit*>(QStringLiteral("evaluatePath")), Qt::Key_Return);
        QVERIFY(finished.wait(kRunTimeoutMs));
        QCOMPARE(dlg->results()->rowCount(), ++row);
        const QString broken = QDir(dir).filePath(QStringLiteral("broken.qsm"));
        QFile b(broken);
        QVERIFY(b.open(QIODevice::WriteOnly));
        b.write("QSM not really");
        b.close();
        dlg->setModelFile(broken);
        finished.clear();
        QVERIFY(dlg->evaluate());
        QVERIFY(finished.wait(kRunTimeoutMs));
        QVERIFY(!finished.first().at(0).toBool());
        QVERIFY2(dlg->statusText().contains(QStringLiteral("broken.qsm")), qPrintable(dlg->statusText()));
        QCOMPARE(dlg->results()->rowCount(), row); // no row for a failure
        dlg->close();
    }

    QTemporaryDir m_small, m_flow;
};

QTEST_MAIN(TestGuiFiles)
#include "tst_gui_files.moc"
