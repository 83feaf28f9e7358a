// What the Analysis tab's tests share (tst_gui_analysis, tst_gui_sensitivity, tst_gui_search): a
// window with a small FP32 model trained in it on an IDX fixture, its Analysis tab shown and set to
// measure on the CLI's --validation 200 split with 100 calibration images; the timeouts; a drop's
// text as a heatmap cell shows it; a watch on a progress bar's texts.
#pragma once

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "analysis_view.h"
#include "layer_compare_view.h"
#include "format_text.h"
#include "main_window.h"
#include "pareto_chart.h"
#include "plan_table.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "search_view.h"
#include "sensitivity_view.h"
#include "training_panel.h"

#include "gui_window_fixtures.h"
#include "slow_tests.h"

#include "analysis/sensitivity.h"
#include "data/idx.h"
#include "quant/precision_plan.h"
#include "util/rng.h"

#include <QAction>
#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QElapsedTimer>
#include <QDir>
#include <QFileInfo>
#include <QLabel>
#include <QLineSeries>
#include <QProgressBar>
#include <QPushButton>
#include <QScatterSeries>
#include <QScrollArea>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTableWidget>
#include <QValueAxis>
#include <QTemporaryDir>
#include <QtTest>
#include <QHelpEvent>
#include <QToolTip>

#include <algorithm>
#include <cmath>

namespace gui_analysis_fixtures {

using namespace quantscope;

constexpr int kRunTimeoutMs = 180000;  // generous: the machine is shared
constexpr int kLoadTimeoutMs = 20000;

inline QString dropText(double drop) { return QString::number(drop, 'f', 2) + QStringLiteral(" pts"); }

// Records each text `bar` shows that does not fit it on one line (tester 12 #11: "ranking:
// one-layer plan 12 of 16" wrapped in a 150-pixel bar, both lines cut).
struct ProgressTextWatch {
    QStringList cut;
    QMetaObject::Connection connection;
    explicit ProgressTextWatch(QProgressBar* bar)
    {
        connection = QObject::connect(bar, &QProgressBar::valueChanged, bar, [this, bar] {
            QCoreApplication::processEvents(); // the layout follows a widened bar
            const int need = bar->fontMetrics().horizontalAdvance(bar->text()) + 8;
            if (need > bar->width()) cut << QStringLiteral("'%1' needs %2 px, the bar is %3").arg(bar->text()).arg(need).arg(bar->width());
        });
    }
    ~ProgressTextWatch() { QObject::disconnect(connection); }
};

// The members the tests use and the window they use them in, opened once per test file
// (openTrainedWindow, from initTestCase).
class AnalysisTabFixture : public QObject {
protected:
    // A small FP32 model (lenet5, 3 epochs) trained in a 1500x1000 window on a 900-image fixture;
    // the Analysis tab shown, measuring 200 validation and 100 calibration images (checked against
    // the CLI's split and the note on too few training images).
    void openTrainedWindow();

    QTemporaryDir m_dir;
    std::unique_ptr<MainWindow> m_window;
    AnalysisView* m_view = nullptr;
};

inline void AnalysisTabFixture::openTrainedWindow()
{
    QVERIFY(m_dir.isValid());
    quantscope::testing::writeFixture(m_dir.path(), 900, 200, 11); // gui_window_fixtures.h
    MainWindowOptions o;
    o.useSettings = false;
    o.dataDir = m_dir.path();
    o.quietExport = true;
    m_window = std::make_unique<MainWindow>(o);
    m_window->resize(1500, 1000);
    m_window->show();
    if (!m_window->dataset()) {
        QSignalSpy r(m_window.get(), &MainWindow::datasetReady);
        QVERIFY(r.wait(kLoadTimeoutMs));
    }
    QVERIFY(m_window->dataset());
    // A small FP32 model, trained here so that accuracy means something to the analyses.
    TrainConfig c = m_window->trainingPanel()->config();
    c.model = "lenet5";
    c.precision.strategy = Strategy::Fp32;
    c.epochs = 3;
    c.batchSize = 32;
    m_window->trainingPanel()->setConfig(c);
    QSignalSpy ended(m_window.get(), &MainWindow::runEnded);
    m_window->startTraining();
    QVERIFY(ended.wait(kRunTimeoutMs));
    const RunPtr run = m_window->runsModel()->runAt(0);
    QVERIFY2(run->status == RunStatus::Done, qPrintable(run->error));
    QTRY_VERIFY_WITH_TIMEOUT(run->exportBundle != nullptr, kLoadTimeoutMs);
    m_view = m_window->analysisView();
    // More validation images than the training set holds: half of it, as analyze takes without
    // --validation, not an error.
    m_view->setValidationImages(100000);
    QString error;
    const AnalysisInputPtr in = m_view->input(&error);
    QVERIFY2(in, qPrintable(error));
    QCOMPARE(in->data->validation.size(), std::size_t{900 / 2});
    const QLabel* note = m_view->findChild<QLabel*>("analysisNote"); // and it says so where the number was typed
    QVERIFY(note);
    QVERIFY2(note->text().contains("<b>its 900 training images leave room for 450 validation images, not 100000</b>") &&
                 note->text().contains("one image is 0.22 points of accuracy"),
             qPrintable(note->text()));
    m_view->setValidationImages(200);
    QVERIFY2(!note->text().contains("leave room") && note->text().contains("one image is 0.5 points of accuracy"), qPrintable(note->text()));
    m_view->setCalibrationImages(100);
    // The images the analyses measure on are the CLI's --validation 200 split, apart from those calibrating.
    const AnalysisInputPtr used = m_view->input(&error);
    QCOMPARE(used->data->validation.size(), std::size_t{200});
    QCOMPARE(used->data->train.size(), std::size_t{100});
    QVERIFY(!used->heldOut);
    DatasetOptions cliSplit;
    cliSplit.dir = m_dir.path().toStdString();
    cliSplit.validation = 200;
    const Dataset cli = Dataset::load(cliSplit);
    QVERIFY(used->data->validation.pixels == cli.validation.pixels);
    QVERIFY(used->data->validation.labels == cli.validation.labels);
    QVERIFY(std::equal(used->data->train.labels.begin(), used->data->train.labels.end(), cli.train.labels.begin()));
    QVERIFY2(m_view->sourceCombo()->currentText().startsWith("run #1"), qPrintable(m_view->sourceCombo()->currentText()));
    QTabWidget* tabs = m_window->tabs();
    int page = -1; // the Analysis tab holds the view inside a scroll area
    for (int i = 0; i < tabs->count(); ++i)
        if (tabs->widget(i)->isAncestorOf(m_view)) page = i;
    tabs->setCurrentIndex(page);
    QCOMPARE(tabs->tabText(tabs->currentIndex()), QString("Analysis"));
}

} // namespace gui_analysis_fixtures
