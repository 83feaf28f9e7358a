// The LSQ options in the Training dock and the Step sizes chart, offscreen: the quantizer choice
// applies to QAT only (greyed with the reason otherwise, and not passed on), LSQ+ only to the
// LSQ quantizer, the narrow range to integer strategies; the chart draws one line per learned
// quantizer of a real LSQ run and says what to do when a run has none. The More options dialog
// (LSQ init, first/last 8-bit, CLE's ReLU6, blend and skipped steps, the quantized evaluation).
#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include "gui_window_fixtures.h"
#include "step_size_chart.h"
#include "more_options_dialog.h"
#include "training_panel.h"

#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QPushButton>
#include <QSpinBox>
#include <QTimer>
#include <QLineSeries>
#include <QtTest>

#include <cstdlib>

using namespace quantscope;

namespace {

using quantscope::testing::child; // gui_window_fixtures.h
using quantscope::testing::selectData;

// Collects what a run reports into a RunRecord, as the window does.
class RecordObserver : public TrainObserver {
public:
    explicit RecordObserver(RunRecord& r) : m_r(r) {}
    void onStart(const StartEvent& e) override
    {
        m_r.hasStart = true;
        m_r.start = e;
    }
    void onStepSizes(const StepSizeEvent& e) override { m_r.stepSizes.push_back(e); }

private:
    RunRecord& m_r;
};

} // namespace

class TestGuiLsq : public QObject {
    Q_OBJECT
private slots:
    // Act. calibration follows the strategy and the model until the user picks one: min-max for
    // QAT from a fresh model (the moving average lags growing ranges: tester 19 lost 10 points),
    // moving average for PTQ; a pick, or a config set on the panel, stays.
    void activationCalibrationFollowsUntilPicked()
    {
        TrainingPanel p;
        auto* strategy = child<QComboBox>(&p, "strategy");
        auto* act = child<QComboBox>(&p, "actCalibration");
        QVERIFY(strategy && act);
        QCOMPARE(p.config().precision.activationCalibration, std::string("minmax")); // QAT, seed-cnn from scratch
        selectData(strategy, QStringLiteral("ptq"));
        QCOMPARE(p.config().precision.activationCalibration, std::string("moving-average"));
        QCOMPARE(act->currentData().toString(), QStringLiteral("moving-average"));
        selectData(strategy, QStringLiteral("qat"));
        QCOMPARE(p.config().precision.activationCalibration, std::string("minmax"));
        const int ma = act->findData(QStringLiteral("moving-average"));
        act->setCurrentIndex(ma); // as a click picks it
        selectData(strategy, QStringLiteral("ptq"));
        selectData(strategy, QStringLiteral("qat"));
        QCOMPARE(p.config().precision.activationCalibration, std::string("moving-average"));
        TrainingPanel q; // a saved or a run's config keeps its own
        TrainConfig c = TrainingPanel::defaultConfig();
        c.precision.activationCalibration = "percentile";
        q.setConfig(c);
        selectData(child<QComboBox>(&q, "strategy"), QStringLiteral("ptq"));
        QCOMPARE(q.config().precision.activationCalibration, std::string("percentile"));
    }

    void quantizerApplicability()
    {
        TrainingPanel p;
        auto* strategy = child<QComboBox>(&p, "strategy");
        auto* quantizer = child<QComboBox>(&p, "quantizer");
        auto* lsqPlus = child<QCheckBox>(&p, "lsqPlus");
        auto* narrow = child<QCheckBox>(&p, "narrowRange");
        QVERIFY(strategy && quantizer && lsqPlus && narrow);
        // Default QAT with the observer: the quantizer applies, LSQ+ does not yet.
        QCOMPARE(p.config().precision.quantizer, std::string("observer"));
        QVERIFY(quantizer->isEnabled());
        QVERIFY(!lsqPlus->isEnabled());
        selectData(quantizer, QStringLiteral("lsq"));
        QCOMPARE(p.config().precision.quantizer, std::string("lsq"));
        QVERIFY(lsqPlus->isEnabled());
        lsqPlus->setChecked(true);
        narrow->setChecked(true);
        QVERIFY(p.config().precision.lsqPlus);
        QVERIFY(p.config().precision.narrowRange);
        p.config().validate();

        // PTQ: no learned steps (greyed, says why, not passed on); the narrow range still applies.
        selectData(strategy, QStringLiteral("ptq"));
        QVERIFY(!quantizer->isEnabled());
        QVERIFY2(quantizer->toolTip().contains(QStringLiteral("Disabled")), qPrintable(quantizer->toolTip()));
        QVERIFY(!lsqPlus->isEnabled());
        QCOMPARE(p.config().precision.quantizer, std::string("observer"));
        QVERIFY(!p.config().precision.lsqPlus);
        QVERIFY(narrow->isEnabled());
        QVERIFY(p.config().precision.narrowRange);
        p.config().validate();

        // FP32: neither.
        selectData(strategy, QStringLiteral("fp32"));
        QVERIFY(!narrow->isEnabled());
        QVERIFY(!p.config().precision.narrowRange);
        // Back to QAT: the user's choice comes back.
        selectData(strategy, QStringLiteral("qat"));
        QCOMPARE(p.config().precision.quantizer, std::string("lsq"));
        QVERIFY(p.config().precision.lsqPlus);
    }

    // "More options...": the CLI flags the dock has no room for. Values reach the run's config where
    // the strategy uses them, are greyed with the reason where it does not, survive a strategy
    // change, and travel with saved runs.
    void moreOptions()
    {
        TrainingPanel p;
        auto* strategy = child<QComboBox>(&p, "strategy");
        selectData(child<QComboBox>(&p, "quantizer"), QStringLiteral("lsq"));
        auto* more = child<QPushButton>(&p, "moreOptions");
        QVERIFY(more && more->isEnabled());
        const auto inDialog = [&](const std::function<void(MoreOptionsDialog&)>& act, bool accept) {
            bool seen = false;
            QTimer::singleShot(0, [&] {
                auto* d = qobject_cast<MoreOptionsDialog*>(QApplication::activeModalWidget());
                if (!d) return;
                seen = true;
                act(*d);
                accept ? d->accept() : d->reject();
            });
            more->click();
            QVERIFY(seen);
        };
        // QAT with LSQ: everything but CLE's and progressive's options applies.
        inDialog(
            [](MoreOptionsDialog& d) {
                QVERIFY(d.lsqInit()->isEnabled() && d.firstLast8Bit()->isEnabled() && d.quantEval()->isEnabled());
                QVERIFY(!d.cleRelu6ToRelu()->isEnabled() && !d.blendSteps()->isEnabled() && !d.maxSkippedSteps()->isEnabled());
                QVERIFY2(d.blendSteps()->toolTip().contains(QStringLiteral("Disabled")), qPrintable(d.blendSteps()->toolTip()));
                selectData(d.lsqInit(), QStringLiteral("lsq"));
                d.firstLast8Bit()->setChecked(true);
                selectData(d.quantEval(), QStringLiteral("fake-quant"));
                d.maxSkippedSteps()->setValue(7);
            },
            true);
        QCOMPARE(p.config().precision.lsqInit, std::string("lsq"));
        QVERIFY(p.config().precision.firstLast8Bit);
        QCOMPARE(p.config().quantEval, std::string("fake-quant"));
        QCOMPARE(p.config().maxSkippedSteps, std::size_t(7));
        p.config().validate();
        QVERIFY2(more->toolTip().contains(QStringLiteral("quantized evaluation: fake-quant")), qPrintable(more->toolTip()));

        // Cancel keeps what was there.
        inDialog([](MoreOptionsDialog& d) { d.firstLast8Bit()->setChecked(false); }, false);
        QVERIFY(p.config().precision.firstLast8Bit);

        // FP32 does not pass first/last 8-bit on; back to QAT it returns.
        selectData(strategy, QStringLiteral("fp32"));
        QVERIFY(!p.config().precision.firstLast8Bit);
        p.config().validate();
        selectData(strategy, QStringLiteral("qat"));
        QVERIFY(p.config().precision.firstLast8Bit);

        // PTQ with CLE: ReLU6 -> ReLU applies, and only with CLE ticked.
        selectData(strategy, QStringLiteral("ptq"));
        child<QCheckBox>(&p, "cle")->setChecked(true);
        inDialog([](MoreOptionsDialog& d) { QVERIFY(d.cleRelu6ToRelu()->isEnabled()); d.cleRelu6ToRelu()->setChecked(true); }, true);
        QVERIFY(p.config().precision.cleRelu6ToRelu);
        p.config().validate();
        child<QCheckBox>(&p, "cle")->setChecked(false);
        QVERIFY(!p.config().precision.cleRelu6ToRelu); // --cle-relu6-to-relu needs --cle
        p.config().validate();
        child<QCheckBox>(&p, "cle")->setChecked(true);

        // A saved run keeps them all.
        const TrainConfig back = configFromJson(configToJson(p.config()));
        QCOMPARE(back.precision.lsqInit, std::string("lsq"));
        QVERIFY(back.precision.firstLast8Bit);
        QVERIFY(back.precision.cleRelu6ToRelu);
        QCOMPARE(back.quantEval, std::string("fake-quant"));
        QCOMPARE(back.maxSkippedSteps, std::size_t(7));
        TrainingPanel restored;
        restored.setConfig(back);
        QCOMPARE(restored.config().quantEval, std::string("fake-quant"));
        QVERIFY(restored.config().precision.cleRelu6ToRelu);
    }

    void stepSizeChartDrawsLearnedSteps()
    {
        const Dataset data = fixtures::syntheticDataset(320, 50);
        TrainConfig cfg;
        cfg.model = "seed-cnn";
        cfg.epochs = 1;
        cfg.batchSize = 32;
        cfg.precision.strategy = Strategy::Qat;
        cfg.precision.format = "int4";
        cfg.precision.quantizer = "lsq";
        auto run = std::make_shared<RunRecord>();
        run->config = cfg;
        RecordObserver obs(*run);
        Trainer t(cfg, data, &obs);
        t.run();
        QVERIFY(run->stepSizes.size() >= 2);
        const std::size_t tracks = run->stepSizes.front().steps.size();
        QVERIFY(tracks >= 4);

        StepSizeChart chart;
        chart.resize(800, 500);
        chart.setRuns({run});
        QVERIFY(chart.emptyMessage().isEmpty());
        const auto series = chart.chart()->series();
        QCOMPARE(std::size_t(series.size()), tracks);
        for (std::size_t k = 0; k < tracks; ++k) {
            auto* s = qobject_cast<QLineSeries*>(series[qsizetype(k)]);
            QVERIFY(s);
            QCOMPARE(std::size_t(s->count()), run->stepSizes.size());
            QCOMPARE(s->at(s->count() - 1).y(), run->stepSizes.back().steps[k].step);
            const StepSizeTrack& tr = run->stepSizes.front().steps[k];
            QCOMPARE(s->name(), QString::fromStdString(tr.layer + " " + tr.tensor));
        }
        // QS_SCREENSHOT_DIR=DIR keeps a picture of the chart (for docs and reviews).
        if (const char* dir = std::getenv("QS_SCREENSHOT_DIR")) {
            chart.show();
            QVERIFY(chart.saveAsPng(QString::fromLocal8Bit(dir) + QStringLiteral("/step_sizes.png")).isEmpty());
        }
        // A run without learned steps: no lines, and a message saying how to get them.
        auto plain = std::make_shared<RunRecord>();
        chart.setRuns({plain});
        QVERIFY(chart.chart()->series().isEmpty());
        QVERIFY(chart.emptyMessage().contains(QStringLiteral("LSQ")));
    }
};

QTEST_MAIN(TestGuiLsq)
#include "tst_gui_lsq.moc"
