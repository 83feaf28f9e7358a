// The model summary window as a user opens it: the Training dock's Summary button shows the
// picked preset's layers and totals; a file that is not a model shows an error naming it.
// QS_SUMMARY_SHOT=DIR also saves the dialog as DIR/model-summary.png (for looking at it).
#include "main_window.h"
#include "model_summary_dialog.h"
#include "training_panel.h"

#include "analysis/model_summary.h"
#include "nn/model_zoo.h"

#include <QtTest>

#include <QPushButton>
#include <QTableView>

#include <fstream>

using namespace quantscope;

class TestGuiSummary : public QObject {
    Q_OBJECT

private slots:
    void summaryButtonShowsPreset();
    void badFileShowsError();
    void importNotesAreShown();
    void quantizedFileGivesWhatItStores();
};

namespace {

MainWindowOptions offlineOptions()
{
    MainWindowOptions o;
    o.useSettings = false;
    o.autoLoad = false;
    return o;
}

} // namespace

void TestGuiSummary::summaryButtonShowsPreset()
{
    MainWindow w(offlineOptions());
    w.show();
    TrainConfig c = w.trainingPanel()->config();
    c.model = "resnet8";
    w.trainingPanel()->setConfig(c);
    QTest::mouseClick(w.trainingPanel()->summaryButton(), Qt::LeftButton);
    ModelSummaryDialog* d = w.modelSummaryDialog();
    QVERIFY(d && d->isVisible());
    auto model = makeModel("resnet8");
    QCOMPARE(d->table()->model()->rowCount(), static_cast<int>(model->size()));
    QVERIFY2(d->totalsText().contains("77,754"), qPrintable(d->totalsText()));
    QVERIFY2(d->titleText().contains("resnet8"), qPrintable(d->titleText()));
    // The row of a stride-2 convolution shows its halved maps.
    const QAbstractItemModel* m = d->table()->model();
    bool found = false;
    for (int r = 0; r < m->rowCount(); ++r) {
        if (m->index(r, ModelSummaryModel::Name).data().toString() != "layer2.conv1") continue;
        found = true;
        QCOMPARE(m->index(r, ModelSummaryModel::Output).data().toString(), QString("32 \u00d7 14 \u00d7 14"));
    }
    QVERIFY(found);
    if (const QByteArray dir = qgetenv("QS_SUMMARY_SHOT"); !dir.isEmpty()) {
        QTest::qWait(100);
        QVERIFY(d->grab().save(QString::fromLocal8Bit(dir) + "/model-summary.png"));
        QVERIFY(w.grab().save(QString::fromLocal8Bit(dir) + "/main-window.png"));
    }
    // Another preset replaces the rows.
    c.model = "mlp";
    w.trainingPanel()->setConfig(c);
    w.showModelSummary();
    QCOMPARE(d->table()->model()->rowCount(), static_cast<int>(makeModel("mlp")->size()));
}

void TestGuiSummary::badFileShowsError()
{
    QTemporaryDir tmp;
    const QString junk = tmp.filePath("junk.qsm");
    std::ofstream(junk.toStdString()) << "not a model";
    MainWindow w(offlineOptions());
    QVERIFY(!w.showModelSummaryOfFile(junk));
    QVERIFY2(w.errorText().contains("junk.qsm"), qPrintable(w.errorText()));
}

// A PyTorch MLP exported on flat images: the summary and the model picker say how it was read.
void TestGuiSummary::importNotesAreShown()
{
    const QString path = QStringLiteral(QS_TEST_DATA "/../onnx_import/flatmlp_op13_fold_dyn.onnx");
    MainWindow w(offlineOptions());
    QVERIFY(w.showModelSummaryOfFile(path));
    const QString totals = w.modelSummaryDialog()->totalsText();
    QVERIFY2(totals.contains("is read as 1x8x8 images, flattened by a first layer input_flatten"), qPrintable(totals));
    if (const QByteArray dir = qgetenv("QS_SUMMARY_SHOT"); !dir.isEmpty()) {
        QTest::qWait(100);
        QVERIFY(w.modelSummaryDialog()->grab().save(QString::fromLocal8Bit(dir) + "/model-summary-flat.png"));
    }
    QVERIFY(w.loadModelFile(path));
    QVERIFY2(w.statusText().contains("input_flatten"), qPrintable(w.statusText()));
    // Its in-graph normalisation is what an empty Normalize field means for it.
    QVERIFY2(w.trainingPanel()->normalizePlaceholder().startsWith("file: mean 0.5"),
             qPrintable(w.trainingPanel()->normalizePlaceholder()));
    QVERIFY2(w.trainingPanel()->normalizePlaceholder().contains("0.5"), qPrintable(w.trainingPanel()->normalizePlaceholder()));
    if (const QByteArray dir = qgetenv("QS_SUMMARY_SHOT"); !dir.isEmpty()) {
        w.show();
        QTest::qWait(100);
        QVERIFY(w.grab().save(QString::fromLocal8Bit(dir) + "/main-window-flat-model.png"));
    }
    TrainConfig c = w.trainingPanel()->config();
    c.model = "mlp";
    c.modelFile.clear();
    c.pretrained = false;
    w.trainingPanel()->setConfig(c); // a preset: the dataset's statistics
    QCOMPARE(w.trainingPanel()->normalizePlaceholder(), QString("dataset statistics"));
}

// A quantized file's summary gives the weights it stores with their formats, not the channel-wise
// int8 estimate of a float model ("per-channel scales" beside a tensor-wise file's table).
void TestGuiSummary::quantizedFileGivesWhatItStores()
{
    MainWindow w(offlineOptions());
    w.showModelSummary(); // the dialog, on the preset
    ModelSummaryDialog* d = w.modelSummaryDialog();
    QVERIFY(d);
    QVERIFY2(d->totalsText().contains("per-channel scales"), qPrintable(d->totalsText())); // a float model: the estimate
    ModelSummary s = summarizePreset("mlp", 1, 28, 28, 10);
    s.storedWeights = {{"fc1", "int8", "tensor-wise", 100352, 100357, 8.0}, {"fc2", "int8", "tensor-wise", 1280, 1285, 8.03}};
    d->setSummary(s);
    const QString t = d->totalsText();
    QVERIFY2(!t.contains("per-channel scales") && !t.contains("int8 size"), qPrintable(t));
    QVERIFY2(t.contains("stored weights <b>") && t.contains("(101,642 bytes)") && t.contains("int8 tensor-wise"), qPrintable(t));
}

QTEST_MAIN(TestGuiSummary)
#include "tst_gui_summary.moc"
