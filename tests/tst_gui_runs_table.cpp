// The runs table as it repaints during a session: a running run's Time cell follows its clock,
// the # cell of each run the charts show carries
// the run's chart colour, distinct from every other run's in a long session, and repainting the table (every batch of a run repaints it) does not
// grow the heap. A QColor decoration made the view's delegate draw a new pixmap and icon at each
// repaint, which Qt kept in QPixmapCache under that pixmap's serial number: 6.6 KB a repaint
// here, up to the cache's 10 MiB limit (found by the GUI soak, tests/soak).
#include "curve_charts.h"
#include "main_window.h"
#include "runs_model.h"

#include <QtTest>

#include <QAction>
#include <QHeaderView>
#include <QIcon>
#include <QItemSelectionModel>
#include <QLineSeries>
#include <QSignalSpy>
#include <QTableView>
#include <QTemporaryDir>
#include <QToolButton>

#include <array>
#include <cmath>

#include <malloc.h>

using namespace quantscope;

namespace {

// Bytes the process has allocated and not freed (all malloc arenas).
double heapInUse()
{
    const struct mallinfo2 mi = ::mallinfo2();
    return double(mi.uordblks + mi.hblkhd);
}

RunPtr makeRun(int id)
{
    auto r = std::make_shared<RunRecord>();
    r->id = id;
    r->status = RunStatus::Done;
    r->config.model = "seed-cnn";
    return r;
}

// The colour the # cell's swatch draws (invalid when the cell has none).
QColor swatchColour(const RunsModel& model, int row)
{
    const QVariant d = model.data(model.index(row, RunsModel::Id), Qt::DecorationRole);
    return d.typeId() == QMetaType::QIcon ? QColor(d.value<QIcon>().pixmap(16, 16).toImage().pixel(8, 8)) : QColor();
}

// CIELAB (D65) of an sRGB colour, and the CIE76 difference of two colours: about 2.3 is the least
// a person notices side by side; lines of a chart need several times that.
std::array<double, 3> lab(const QColor& c)
{
    const auto linear = [](double v) { return v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4); };
    const double r = linear(c.redF()), g = linear(c.greenF()), b = linear(c.blueF());
    const double x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, y = 0.2126 * r + 0.7152 * g + 0.0722 * b,
                 z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    const auto f = [](double t) { return t > 216.0 / 24389.0 ? std::cbrt(t) : (24389.0 / 27.0 * t + 16.0) / 116.0; };
    return {116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))};
}
double deltaE(const QColor& a, const QColor& b)
{
    const auto p = lab(a), q = lab(b);
    return std::hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
}

// A finished run with a few loss points, so that the loss chart draws it.
RunPtr trainedRun(int id)
{
    RunPtr r = makeRun(id);
    std::vector<BatchEvent> steps;
    for (std::size_t k = 1; k <= 5; ++k) {
        BatchEvent b;
        b.epoch = 1;
        b.step = b.globalStep = k;
        b.stepsPerEpoch = 5;
        b.loss = 2.0 / double(k);
        steps.push_back(b);
    }
    r->addSteps(steps);
    return r;
}

// The run ids of a metrics CSV's rows, in file order.
QList<int> csvRunIds(const QString& path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) return {};
    QList<int> ids;
    f.readLine(); // header
    while (!f.atEnd()) ids << QString::fromUtf8(f.readLine()).section(QLatin1Char(','), 0, 0).toInt();
    return ids;
}

} // namespace

class TestGuiRunsTable : public QObject {
    Q_OBJECT

private slots:
    // A shown run's # cell has the run's own colour, the same whichever runs are shown beside it
    // (it was the colour of its place among the shown runs: run 1 turned from red to blue when
    // run 3 was deselected).
    void shownRunsCarryTheirChartColour()
    {
        RunsModel model;
        for (int id = 1; id <= 3; ++id) model.addRun(makeRun(id));
        const auto swatch = [&](int row) { return swatchColour(model, row); };
        model.setShownRuns({3, 1});
        QVERIFY(!model.data(model.index(1, RunsModel::Id), Qt::DecorationRole).isValid()); // not shown
        const QColor run3 = swatch(2), run1 = swatch(0);
        QVERIFY(run3.isValid() && run1.isValid());
        QVERIFY(run3 != run1);
        QCOMPARE(run3, runColor(*model.runAt(2)));
        model.setShownRuns({1});
        QCOMPARE(swatch(0), run1);
        model.setShownRuns({2, 3});
        QCOMPARE(swatch(2), run3);
        QVERIFY(swatch(1) != run3);
        // A selected row's swatch keeps the run's colour: the style tinted it with the selection's
        // blue, and orange read as tan beside the chart's orange (tester 19 L7).
        const QIcon icon = model.data(model.index(2, RunsModel::Id), Qt::DecorationRole).value<QIcon>();
        QCOMPARE(QColor(icon.pixmap(16, 16, QIcon::Selected).toImage().pixel(8, 8)), run3);
        // The same icon each time it is asked for (what Qt's icon cache is keyed on).
        QCOMPARE(model.data(model.index(2, RunsModel::Id), Qt::DecorationRole).value<QIcon>().cacheKey(),
                 model.data(model.index(2, RunsModel::Id), Qt::DecorationRole).value<QIcon>().cacheKey());
    }

    // A long session, every run shown: each run's # swatch has the colour of its line in the loss
    // chart, and no two runs look alike. The colours repeated from run 17 on (run 17 drew as run
    // 1, in the chart and in the table) and runs 9-16 were darker shades of 1-8.
    void manyRunsKeepDistinctColours()
    {
        constexpr int kRuns = 40;
        constexpr double kDistinct = 8.0; // CIE76: clearly different lines side by side
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.resize(1366, 740);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QList<int> ids;
        for (int id = 1; id <= kRuns; ++id) {
            w.runsModel()->addRun(trainedRun(id));
            ids << id;
        }
        w.selectRuns(ids);
        QCoreApplication::processEvents();
        // The chart's line of each run, by its legend label ("#7", or "#7 ..." when labels differ).
        QMap<int, QColor> line;
        for (QAbstractSeries* s : w.lossChart()->chart()->series()) {
            auto* l = qobject_cast<QLineSeries*>(s);
            const QString name = s->name();
            if (!l || !name.startsWith(QLatin1Char('#'))) continue;
            bool ok = false;
            const int id = name.mid(1).section(QLatin1Char(' '), 0, 0).toInt(&ok);
            if (ok) line[id] = l->pen().color();
        }
        QCOMPARE(line.size(), kRuns);
        std::vector<QColor> colours;
        for (int row = 0; row < kRuns; ++row) {
            const int id = w.runsModel()->runAt(row)->id;
            const QColor swatch = swatchColour(*w.runsModel(), row);
            QVERIFY2(swatch.rgb() == line.value(id).rgb(), qPrintable(QStringLiteral("run #%1: swatch %2, line %3").arg(id).arg(swatch.name(), line.value(id).name())));
            colours.push_back(swatch);
        }
        // The first runs keep the colours they always had.
        for (int i = 0; i < 8; ++i) QCOMPARE(colours[std::size_t(i)], paletteColor(i));
        double closest = 1e9;
        QString pair;
        for (std::size_t i = 0; i < colours.size(); ++i)
            for (std::size_t j = i + 1; j < colours.size(); ++j)
                if (const double d = deltaE(colours[i], colours[j]); d < closest) {
                    closest = d;
                    pair = QStringLiteral("#%1 %2 and #%3 %4").arg(i + 1).arg(colours[i].name()).arg(j + 1).arg(colours[j].name());
                }
        qInfo("closest pair of %d runs: %s, CIE76 %.1f", kRuns, qPrintable(pair), closest);
        QVERIFY2(closest >= kDistinct, qPrintable(QStringLiteral("%1 differ by %2 (CIE76)").arg(pair).arg(closest, 0, 'f', 1)));
        // Readable on white: none paler than the palette's lightest colour (the lightness of CIELAB).
        double palest = 0;
        for (int i = 0; i < 8; ++i) palest = std::max(palest, lab(paletteColor(i))[0]);
        for (std::size_t i = 0; i < colours.size(); ++i)
            QVERIFY2(lab(colours[i])[0] <= palest + 0.5, qPrintable(QStringLiteral("run #%1 %2 is pale on white").arg(i + 1).arg(colours[i].name())));
    }

    // A failed run's Status and a plan's Format, elided in the middle in a narrow table ("failed:
    // /w... its size)"; tester 12 #11), are whole in their cells' tooltips.
    void elidedCellsAreWholeInTheirTooltips()
    {
        RunsModel model;
        RunPtr r = makeRun(1);
        r->status = RunStatus::Failed;
        r->error = QStringLiteral("/work/models/m.onnx: the model takes 1x8x8 inputs (C x H x W); the dataset's images are 1x28x28 "
                                  "(set Resize to 8x8 in the Dataset dock to read them at its size)");
        r->config.precision.strategy = Strategy::Qat;
        r->config.precision.format = "int8";
        for (const char* name : {"conv1", "conv2", "fc1", "fc2"}) {
            LayerOverride o;
            o.layer = name;
            o.format = "int2";
            r->config.precision.layers.push_back(o);
        }
        model.addRun(r);
        const QString status = model.data(model.index(0, RunsModel::Status), Qt::ToolTipRole).toString();
        QVERIFY2(status.startsWith(QStringLiteral("failed: ") + r->error), qPrintable(status));
        const QString format = model.data(model.index(0, RunsModel::Format), Qt::DisplayRole).toString();
        QVERIFY2(format.contains(QStringLiteral("4 per-layer")), qPrintable(format));
        QVERIFY(model.data(model.index(0, RunsModel::Format), Qt::ToolTipRole).toString().startsWith(format));
    }

    // Export metrics as CSV writes the selected runs in the table's order (runs 3, 4, 5 selected,
    // 4 clicked last, were written 4, 3, 5; tester 12 #15), and its button and tooltip say whose
    // metrics it writes: the selected runs, or every run when none is selected.
    void metricsCsvFollowsTheTable()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.resize(1366, 740);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        for (int id = 1; id <= 5; ++id) {
            RunPtr r = makeRun(id);
            EpochEvent e;
            e.epoch = 1;
            e.testAccuracy = 0.5;
            r->epochs.push_back(e);
            w.runsModel()->addRun(r);
        }
        auto* csv = w.findChild<QAction*>(QStringLiteral("exportCsvAction"));
        QVERIFY(csv);
        QToolButton* button = nullptr;
        for (QToolButton* b : w.findChildren<QToolButton*>())
            if (b->defaultAction() == csv) button = b;
        QVERIFY(button);
        QTemporaryDir tmp;
        const QString path = QDir(tmp.path()).filePath(QStringLiteral("metrics.csv"));

        w.selectRuns({3, 5, 4}); // 4 is the current row, the primary run
        QCOMPARE(w.selectedRuns().front()->id, 4);
        QVERIFY2(button->text().contains(QStringLiteral("3 selected")), qPrintable(button->text()));
        QVERIFY2(csv->toolTip().contains(QStringLiteral("selected runs (#3, #4, #5)")), qPrintable(csv->toolTip()));
        QVERIFY(w.exportMetricsCsvTo(path));
        QCOMPARE(csvRunIds(path), (QList<int>{3, 4, 5}));

        w.selectRuns({});
        QVERIFY2(button->text().contains(QStringLiteral("all")), qPrintable(button->text()));
        QVERIFY2(csv->toolTip().contains(QStringLiteral("every run")), qPrintable(csv->toolTip()));
        QVERIFY(w.exportMetricsCsvTo(path));
        QCOMPARE(csvRunIds(path), (QList<int>{1, 2, 3, 4, 5}));
        QVERIFY2(w.statusText().contains(QStringLiteral("all 5 runs")), qPrintable(w.statusText()));
    }

    // The window's runs table sizes each column to its header and cells: none cut ("mobilenet-t..."),
    // none much wider than what it holds, and Status, last, takes the rest of the width.
    // A running run's Time cell follows its clock while it trains (it read 0.0 s until the run
    // paused or ended; tester 12 #7), twice a second at most: each change refits the columns.
    void timeCellRunsWhileTraining()
    {
        MainWindowOptions o;
        o.useSettings = false;
        o.autoLoad = false;
        MainWindow w(o);
        RunPtr r = makeRun(1);
        r->status = RunStatus::Running;
        r->config.epochs = 1;
        w.runsModel()->addRun(r);
        QSignalSpy changed(w.runsModel(), &QAbstractItemModel::dataChanged);
        const auto batch = [&](std::size_t step, double seconds) {
            BatchEvent b;
            b.epoch = 1;
            b.step = b.globalStep = step;
            b.stepsPerEpoch = 100;
            b.loss = 1.0;
            b.elapsedSeconds = seconds;
            emit w.controller()->batches(1, BatchList{b});
        };
        const auto timeCellChanges = [&] {
            int n = 0;
            for (const QList<QVariant>& args : changed) {
                const auto from = args.at(0).value<QModelIndex>(), to = args.at(1).value<QModelIndex>();
                n += from.row() <= 0 && to.row() >= 0 && from.column() <= RunsModel::Time && to.column() >= RunsModel::Time;
            }
            return n;
        };
        const auto timeCell = [&] { return w.runsModel()->index(0, RunsModel::Time).data().toString(); };
        batch(1, 0.4);
        QCOMPARE(timeCellChanges(), 1);
        QCOMPARE(timeCell(), QStringLiteral("0.4 s"));
        batch(2, 0.5); // at once: the cell waits
        QCOMPARE(timeCellChanges(), 1);
        QTest::qWait(600);
        batch(3, 3.3);
        QCOMPARE(timeCellChanges(), 2);
        QCOMPARE(timeCell(), QStringLiteral("3.3 s"));
    }

    void columnsFitTheirContents()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.resize(1366, 740);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        RunPtr small = makeRun(1);
        small->config.model = "lenet5";
        RunPtr wide = makeRun(2);
        wide->config.model = "mobilenet-tiny";
        wide->config.precision.strategy = Strategy::Qat;
        wide->config.precision.layers.resize(3); // "int8 default, 3 per-layer"
        wide->status = RunStatus::Failed;
        wide->error = QStringLiteral("training diverged: non-finite gradients for 50 steps");
        w.runsModel()->addRun(small);
        w.runsModel()->addRun(wide);
        QCoreApplication::processEvents();
        QTableView* t = w.runsView();
        QHeaderView* h = t->horizontalHeader();
        const int last = RunsModel::ColumnCount - 1;
        for (int c = 0; c < last; ++c) {
            const int needs = std::max(static_cast<QAbstractItemView*>(t)->sizeHintForColumn(c), h->sectionSizeHint(c));
            const QString what = QStringLiteral("column %1 (%2): %3 px for %4 px of content")
                                     .arg(c).arg(w.runsModel()->headerData(c, Qt::Horizontal, Qt::DisplayRole).toString())
                                     .arg(h->sectionSize(c)).arg(needs);
            QVERIFY2(h->sectionSize(c) >= std::min(needs, 240), qPrintable(what));
            QVERIFY2(h->sectionSize(c) <= needs + 8, qPrintable(what));
        }
        QVERIFY2(h->sectionViewportPosition(last) + h->sectionSize(last) >= t->viewport()->width() - 1, "Status does not reach the edge");
        QVERIFY2(h->sectionViewportPosition(last) + 80 <= t->viewport()->width(), "Status is pushed out of view");
        // A run changing (the epochs and time of a run in progress) refits its columns.
        wide->config.model = "a-much-longer-model-name";
        w.runsModel()->runChanged(2);
        QCoreApplication::processEvents();
        QVERIFY(h->sectionSize(RunsModel::Model) >= std::min(240, static_cast<QAbstractItemView*>(t)->sizeHintForColumn(RunsModel::Model)));
    }

    void repaintingDoesNotGrowTheHeap()
    {
        RunsModel model;
        for (int id = 1; id <= 4; ++id) model.addRun(makeRun(id));
        model.setShownRuns({1, 2, 3, 4});
        QTableView view;
        view.setModel(&model);
        view.resize(900, 300);
        view.show();
        QVERIFY(QTest::qWaitForWindowExposed(&view));
        view.selectRow(1); // a selected row's icon is drawn in the Selected mode too
        auto repaint = [&](int times) {
            for (int i = 0; i < times; ++i) (void)view.grab();
        };
        repaint(20); // fonts, style and the first icons
        const double before = heapInUse();
        constexpr int kRepaints = 200;
        repaint(kRepaints);
        const double grown = heapInUse() - before;
        qInfo("heap in use after %d repaints of 4 coloured rows: %+.1f KB", kRepaints, grown / 1024.0);
        // Before the fix: +1330 KB here (release build); after it +4 KB. Allow a little for Qt's own bookkeeping.
        QVERIFY2(grown < 64 * 1024, qPrintable(QStringLiteral("the heap grew %1 KB").arg(grown / 1024.0)));
    }
};

QTEST_MAIN(TestGuiRunsTable)
#include "tst_gui_runs_table.moc"
