// The window on the screens people have (issue 13): run under the offscreen platform with a
// screen of QS_SCREEN (WxH, e.g. 1366x768; tests/cmake_gui_tests.cmake writes the platform's
// screen file). The first window fits the available geometry; Train (toolbar and Training dock),
// the charts and the runs table lie inside the screen; a saved geometry larger than the screen
// is clamped to it at the next start. QS_SHOT_DIR: also save a screenshot of the window there.
#include "main_window.h"
#include "training_panel.h"

#include <QAction>
#include <QApplication>
#include <QDir>
#include <QPushButton>
#include <QScreen>
#include <QScrollArea>
#include <QSettings>
#include <QStandardPaths>
#include <QHeaderView>
#include <QTableView>
#include <QTabWidget>
#include <QToolBar>
#include <QtTest>

using namespace quantscope;

namespace {

QRect globalRect(const QWidget* w) { return QRect(w->mapToGlobal(QPoint(0, 0)), w->size()); }

// The part of `w` not hidden by the scroll areas (and other ancestors) it sits in, in global coordinates.
QRect visibleGlobalRect(const QWidget* w)
{
    const QRect visible = w->visibleRegion().boundingRect();
    return QRect(w->mapToGlobal(visible.topLeft()), visible.size());
}

} // namespace

class TestGuiScreen : public QObject {
    Q_OBJECT
private slots:
    void initTestCase()
    {
        const QStringList wh = qEnvironmentVariable("QS_SCREEN").split(QLatin1Char('x'));
        QVERIFY2(wh.size() == 2, "set QS_SCREEN=WxH and the offscreen platform's configfile (see cmake_gui_tests.cmake)");
        m_screen = QSize(wh[0].toInt(), wh[1].toInt());
        // The platform really has that screen, otherwise the test would prove nothing.
        QCOMPARE(QGuiApplication::primaryScreen()->geometry().size(), m_screen);
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("QuantScopeTest"));
        QCoreApplication::setApplicationName(QStringLiteral("tst_gui_screen"));
        QSettings().clear();
    }

    void firstWindowFits()
    {
        MainWindow w(MainWindowOptions{false, QString(), false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const QRect avail = w.screen()->availableGeometry();
        QVERIFY2(avail.contains(w.frameGeometry()),
                 qPrintable(QStringLiteral("window %1x%2 at %3,%4 on %5x%6").arg(w.frameGeometry().width()).arg(w.frameGeometry().height())
                                .arg(w.frameGeometry().x()).arg(w.frameGeometry().y()).arg(avail.width()).arg(avail.height())));

        // Train, Pause, Stop on the toolbar, inside the screen and not covered.
        auto* bar = w.findChild<QToolBar*>(QStringLiteral("runToolBar"));
        QVERIFY(bar);
        for (const char* name : {"trainAction", "stopAction"}) {
            auto* act = w.findChild<QAction*>(QString::fromLatin1(name));
            QVERIFY(act);
            QWidget* button = bar->widgetForAction(act);
            QVERIFY2(button && button->isVisible(), name);
            QVERIFY2(avail.contains(visibleGlobalRect(button)) && visibleGlobalRect(button).size() == button->size(), name);
        }
        // The Training dock's Train button: its scroll area reaches it, and then it is on screen.
        QPushButton* train = w.trainingPanel()->trainButton();
        QScrollArea* scroll = nullptr;
        for (QWidget* p = train->parentWidget(); p && !scroll; p = p->parentWidget()) scroll = qobject_cast<QScrollArea*>(p);
        QVERIFY(scroll);
        scroll->ensureWidgetVisible(train);
        QCoreApplication::processEvents();
        QVERIFY2(avail.contains(visibleGlobalRect(train)) && visibleGlobalRect(train).size() == train->size(),
                 "the Training dock's Train button is not reachable on screen");
        // The charts and the runs table: wholly inside the screen, with a usable size.
        for (const char* name : {"chartTabs", "lossChart", "accuracyChart", "runsTable"}) {
            auto* c = w.findChild<QWidget*>(QString::fromLatin1(name));
            QVERIFY2(c && c->isVisible(), name);
            QVERIFY2(avail.contains(globalRect(c)), name);
            QVERIFY2(c->width() >= 200 && c->height() >= 100, name);
        }
        // The runs table shows its last column (Status) and three rows without scrolling.
        auto* table = w.findChild<QTableView*>(QStringLiteral("runsTable"));
        QVERIFY(table);
        const int status = table->model()->columnCount() - 1;
        QVERIFY2(table->horizontalHeader()->sectionViewportPosition(status) + 40 <= table->viewport()->width(),
                 qPrintable(QStringLiteral("Status column at x %1 of a %2-pixel table")
                                .arg(table->horizontalHeader()->sectionViewportPosition(status)).arg(table->viewport()->width())));
        QVERIFY2(table->viewport()->height() >= 3 * table->verticalHeader()->defaultSectionSize(),
                 qPrintable(QStringLiteral("runs table %1 pixels high").arg(table->viewport()->height())));
        const QString shots = qEnvironmentVariable("QS_SHOT_DIR");
        if (!shots.isEmpty()) {
            QDir().mkpath(shots);
            QVERIFY(w.grab().save(QDir(shots).filePath(QStringLiteral("window-%1x%2.png").arg(m_screen.width()).arg(m_screen.height()))));
        }
    }

    // A geometry saved on a bigger screen (or moved off it) comes back clamped to this one.
    void savedGeometryIsClamped()
    {
        MainWindowOptions o{true, QString(), false};
        {
            MainWindow w(o);
            w.show();
            QVERIFY(QTest::qWaitForWindowExposed(&w));
            w.setGeometry(700, 500, 1900, 1150);
            QCoreApplication::processEvents();
            w.close(); // saves the settings
        }
        MainWindow w(o);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const QRect avail = w.screen()->availableGeometry();
        QVERIFY2(avail.contains(w.geometry()), qPrintable(QStringLiteral("%1x%2 at %3,%4").arg(w.width()).arg(w.height()).arg(w.x()).arg(w.y())));
        QSettings().clear();
    }

private:
    QSize m_screen;
};

QTEST_MAIN(TestGuiScreen)
#include "tst_gui_screen.moc"
