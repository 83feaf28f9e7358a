// The runs table as it repaints during a session: the # cell of each run the charts show carries
// the run's chart colour, and repainting the table (every batch of a run repaints it) does not
// grow the heap. A QColor decoration made the view's delegate draw a new pixmap and icon at each
// repaint, which Qt kept in QPixmapCache under that pixmap's serial number: 6.6 KB a repaint
// here, up to the cache's 10 MiB limit (found by the GUI soak, tests/soak).
#include "main_window.h"
#include "runs_model.h"

#include <QtTest>

#include <QHeaderView>
#include <QIcon>
#include <QItemSelectionModel>
#include <QTableView>

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
        const auto swatch = [&](int row) {
            const QVariant d = model.data(model.index(row, RunsModel::Id), Qt::DecorationRole);
            return d.typeId() == QMetaType::QIcon ? QColor(d.value<QIcon>().pixmap(16, 16).toImage().pixel(8, 8)) : QColor();
        };
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
        // The same icon each time it is asked for (what Qt's icon cache is keyed on).
        QCOMPARE(model.data(model.index(2, RunsModel::Id), Qt::DecorationRole).value<QIcon>().cacheKey(),
                 model.data(model.index(2, RunsModel::Id), Qt::DecorationRole).value<QIcon>().cacheKey());
    }

    // The window's runs table sizes each column to its header and cells: none cut ("mobilenet-t..."),
    // none much wider than what it holds, and Status, last, takes the rest of the width.
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
