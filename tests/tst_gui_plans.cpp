// The Training dock's per-layer plan table as a user meets it: one row per Conv2d/Linear of the
// picked preset with its parameters; picking int4 for a layer and fp32 for another makes them the
// run's plan (TrainConfig::precision.layers) and shrinks / grows that row's bytes and the live
// total exactly as core's planSize says; the table is disabled for strategies without plans.
// QS_PLAN_SHOT=DIR also saves the dock and the table as PNGs (for looking at them).
#include "format_text.h"
#include "main_window.h"
#include "plan_table.h"
#include "training_panel.h"

#include "nn/model_zoo.h"
#include "quant/plan_size.h"

#include <QtTest>

#include <QGroupBox>
#include <QLabel>
#include <QTableView>

using namespace quantscope;

class TestGuiPlans : public QObject {
    Q_OBJECT
private slots:
    void tableEditsThePlan();
};

void TestGuiPlans::tableEditsThePlan()
{
    MainWindowOptions o;
    o.useSettings = false;
    o.autoLoad = false;
    MainWindow w(o);
    w.resize(1500, 1000);
    w.show();
    TrainingPanel* panel = w.trainingPanel();
    TrainConfig c = panel->config();
    c.model = "seed-cnn";
    c.precision.strategy = Strategy::Ptq;
    panel->setConfig(c);
    w.refreshPlanModel();
    PlanTable* table = panel->planTable();
    PlanTableModel* m = table->tableModel();
    QCOMPARE(m->rowCount(), 4); // conv1, conv2, fc1, fc2
    QCOMPARE(m->index(2, PlanTableModel::Layer).data().toString(), QString("fc1"));
    auto model = makeModel("seed-cnn");
    const PlanSize uniform = planSize(*model, panel->config().precision.plan());
    QCOMPARE(m->index(2, PlanTableModel::Bytes).data().toString().remove(','), QString::number(uniform.layers[2].bytes));

    // The user picks int4 for fc1 and fp32 for fc2 (through the cells' edit role, as the combo does).
    QVERIFY(m->setData(m->index(2, PlanTableModel::Weights), "int4", Qt::EditRole));
    QVERIFY(m->setData(m->index(3, PlanTableModel::Weights), "fp32", Qt::EditRole));
    QVERIFY(!m->setData(m->index(2, PlanTableModel::Granularity), "group:4096", Qt::EditRole)); // larger than fc1's rows
    const PrecisionConfig& pc = panel->config().precision;
    QCOMPARE(pc.layers.size(), std::size_t{2});
    QCOMPARE(pc.plan().forLayer("fc1").format, std::string("int4"));
    QVERIFY(pc.plan().forLayer("fc2").keepFp32());
    const PlanSize planned = planSize(*model, pc.plan());
    QVERIFY(planned.layers[2].bytes < uniform.layers[2].bytes);
    QVERIFY(planned.layers[3].bytes > uniform.layers[3].bytes);
    QCOMPARE(m->index(2, PlanTableModel::Bytes).data().toString().remove(','), QString::number(planned.layers[2].bytes));
    const QString total = table->totalLabel()->text();
    QVERIFY2(total.contains(formatCount(double(planned.bytes))), qPrintable(total));
    QVERIFY2(total.contains(QString::number(planned.percentOfFp32, 'f', 1)), qPrintable(total));
    // The user's own cells stand out from those that follow the default.
    QVERIFY(!m->index(2, PlanTableModel::Weights).data(Qt::ForegroundRole).isValid());
    QVERIFY(m->index(2, PlanTableModel::Weights).data(Qt::FontRole).value<QFont>().bold());
    QCOMPARE(m->index(0, PlanTableModel::Weights).data(Qt::ForegroundRole).value<QColor>(), QColor(Qt::gray));
    // Inactive cells: fp32 weights take no granularity.
    QVERIFY(!(m->flags(m->index(3, PlanTableModel::Granularity)) & Qt::ItemIsEditable));

    if (const QByteArray dir = qgetenv("QS_PLAN_SHOT"); !dir.isEmpty()) {
        QTest::qWait(100);
        QVERIFY(panel->grab().save(QString::fromLocal8Bit(dir) + "/plan-dock.png"));
        QVERIFY(table->grab().save(QString::fromLocal8Bit(dir) + "/plan-table.png"));
        QVERIFY(w.grab().save(QString::fromLocal8Bit(dir) + "/plan-window.png"));
    }

    // Strategies without plans disable the table.
    c = panel->config();
    c.precision.strategy = Strategy::Mixed;
    panel->setConfig(c);
    QVERIFY(!panel->findChild<QGroupBox*>("planBox")->isEnabled());
}

QTEST_MAIN(TestGuiPlans)
#include "tst_gui_plans.moc"
