// The Dataset dock with colour data: a CIFAR-layout folder and an image folder open through the
// window (layout detected), the shape line says colour, the thumbnails are the images' own RGB
// pixels, and a folder of mixed sizes fails with a message until the Resize field is filled.
#include "core_message.h"
#include "data/dataset.h"
#include "data/image_codec.h"
#include "dataset_panel.h"
#include "main_window.h"

#include <QDoubleSpinBox>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QtTest>

#include <filesystem>
#include <fstream>

using namespace quantscope;

namespace {

constexpr int kLoadTimeoutMs = 20000;

// Image i's pixel (c, y, x): a colour that differs per channel, so a channel mix-up shows.
std::uint8_t px(std::size_t i, std::size_t c, std::size_t y, std::size_t x)
{
    return static_cast<std::uint8_t>((i * 29 + c * 90 + y * 3 + x * 5) % 256);
}

void writeCifar(const std::string& dir)
{
    std::filesystem::create_directories(dir);
    for (const char* name : {"data_batch_1.bin", "test_batch.bin"}) {
        std::vector<std::uint8_t> b;
        for (std::size_t i = 0; i < 40; ++i) {
            b.push_back(static_cast<std::uint8_t>(i % 10));
            for (std::size_t c = 0; c < 3; ++c)
                for (std::size_t y = 0; y < 32; ++y)
                    for (std::size_t x = 0; x < 32; ++x) b.push_back(px(i, c, y, x));
        }
        std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    }
}

void writePngImage(const std::string& path, std::size_t i, std::size_t H, std::size_t W)
{
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::vector<std::uint8_t> hwc(H * W * 3);
    for (std::size_t y = 0; y < H; ++y)
        for (std::size_t x = 0; x < W; ++x)
            for (std::size_t c = 0; c < 3; ++c) hwc[(y * W + x) * 3 + c] = px(i, c, y, x);
    writePng(path, hwc.data(), W, H, 3);
}

// root/a/ and root/b/: three 8x8 colour PNGs each
void writeTwoClassTree(const std::string& root)
{
    for (std::size_t i = 0; i < 6; ++i) writePngImage(root + "/" + (i % 2 ? "b" : "a") + "/" + std::to_string(i) + ".png", i, 8, 8);
}

MainWindowOptions options(const QString& dir)
{
    MainWindowOptions o;
    o.useSettings = false;
    o.dataDir = dir;
    return o;
}

bool waitLoaded(QSignalSpy& ready)
{
    if (ready.count() == 0 && !ready.wait(kLoadTimeoutMs)) return false;
    return ready.takeFirst().first().toBool();
}

} // namespace

class TestGuiDatasets : public QObject {
    Q_OBJECT

private slots:
    void cifarThumbnailsInColour()
    {
        QTemporaryDir tmp;
        const std::string dir = tmp.path().toStdString() + "/cifar";
        writeCifar(dir);
        MainWindow w(options(QString::fromStdString(dir)));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.show();
        QVERIFY2(waitLoaded(ready), qPrintable(w.datasetPanel()->errorText()));
        const QString shape = w.findChild<QLabel*>(QStringLiteral("datasetShape"))->text();
        QVERIFY2(shape.contains(QStringLiteral("colour")) && shape.contains(QStringLiteral("CIFAR-10")), qPrintable(shape));
        ThumbnailGrid* grid = w.datasetPanel()->thumbnails();
        QVERIFY(grid->sampleCount() >= 10);
        // The first sample is training image 0 (class 0): its thumbnail holds image 0's RGB.
        const QImage& img = grid->sample(0);
        QCOMPARE(img.size(), QSize(32, 32));
        QVERIFY(!img.isGrayscale());
        for (int y : {0, 13, 31})
            for (int x : {0, 7, 30}) {
                const QRgb p = img.pixel(x, y);
                QCOMPARE(qRed(p), int(px(0, 0, y, x)));
                QCOMPARE(qGreen(p), int(px(0, 1, y, x)));
                QCOMPARE(qBlue(p), int(px(0, 2, y, x)));
            }
    }

    void imageFolderNeedsResize()
    {
        QTemporaryDir tmp;
        const std::string root = tmp.path().toStdString() + "/pics";
        writeTwoClassTree(root);
        writePngImage(root + "/b/wide.png", 9, 8, 12);
        MainWindow w(options(QString::fromStdString(root)));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.show();
        QVERIFY(!waitLoaded(ready));
        const QString err = w.datasetPanel()->errorText();
        // the dock's field, not the CLI's flag (tester 12 #12: "need --resize HxW")
        QVERIFY2(err.contains(QStringLiteral("wide.png")) && err.contains(QStringLiteral("Resize HxW (Dataset dock)")) &&
                     !err.contains(QStringLiteral("--")),
                 qPrintable(err));
        QCOMPARE(w.statusText(), QStringLiteral("The dataset did not load: the Dataset dock says why")); // not "Ready"

        auto* resize = w.findChild<QLineEdit*>(QStringLiteral("resize"));
        QVERIFY(resize);
        resize->setText(QStringLiteral("6x6"));
        emit resize->editingFinished();
        QVERIFY2(waitLoaded(ready), qPrintable(w.datasetPanel()->errorText()));
        QCOMPARE(w.datasetPanel()->dataset()->height(), std::size_t{6});
        QCOMPARE(w.datasetPanel()->thumbnails()->sample(0).size(), QSize(6, 6));
        QVERIFY(w.datasetPanel()->errorText().isEmpty());
        QVERIFY2(w.statusText().startsWith(QStringLiteral("Loaded ")), qPrintable(w.statusText()));
    }

    // What the layout leaves unread (an image beside the class folders) is noted in the dock, as
    // train and eval note it.
    void unreadImagesAreNoted()
    {
        QTemporaryDir tmp;
        const std::string root = tmp.path().toStdString() + "/pics";
        writeTwoClassTree(root);
        writePngImage(root + "/stray.png", 9, 8, 8);
        MainWindow w(options(QString::fromStdString(root)));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.show();
        QVERIFY2(waitLoaded(ready), qPrintable(w.datasetPanel()->errorText()));
        const QString shape = w.findChild<QLabel*>(QStringLiteral("datasetShape"))->text();
        QVERIFY2(shape.contains(QStringLiteral("Note: ")) && shape.contains(QStringLiteral("1 image lies outside the class folders")),
                 qPrintable(shape));
    }

    // The Test fraction field is train's --test-fraction: a class tree without test/ holds that
    // share of each class out, and the Open tooltips say the share it holds (they said 20% always).
    void testFractionSplitsOneTree()
    {
        QTemporaryDir tmp;
        const std::string root = tmp.path().toStdString() + "/pics";
        for (std::size_t i = 0; i < 20; ++i) writePngImage(root + "/" + (i % 2 ? "b" : "a") + "/" + std::to_string(i) + ".png", i, 8, 8);
        MainWindow w(options(QString::fromStdString(root)));
        QSignalSpy ready(&w, &MainWindow::datasetReady);
        w.show();
        QVERIFY2(waitLoaded(ready), qPrintable(w.datasetPanel()->errorText()));
        QCOMPARE(w.datasetPanel()->dataset()->test.size(), std::size_t{4}); // the default: 20% of 10 per class
        auto* fraction = w.findChild<QDoubleSpinBox*>(QStringLiteral("testFraction"));
        QVERIFY(fraction);
        QCOMPARE(fraction->value(), 20.0);
        auto* openCsv = w.findChild<QPushButton*>(QStringLiteral("openCsv"));
        QVERIFY2(openCsv->toolTip().contains(QStringLiteral("20% of each class is held out")), qPrintable(openCsv->toolTip()));

        fraction->setValue(50.0);
        QVERIFY2(waitLoaded(ready), qPrintable(w.datasetPanel()->errorText()));
        QCOMPARE(w.datasetPanel()->dataset()->test.size(), std::size_t{10});
        QCOMPARE(w.datasetPanel()->dataset()->train.size(), std::size_t{10});
        const QString shape = w.findChild<QLabel*>(QStringLiteral("datasetShape"))->text();
        QVERIFY2(shape.contains(QStringLiteral("50% of each class folder")), qPrintable(shape));
        QVERIFY2(openCsv->toolTip().contains(QStringLiteral("50% of each class is held out")), qPrintable(openCsv->toolTip()));
        QVERIFY2(w.findChild<QPushButton*>(QStringLiteral("openFolder"))->toolTip().contains(QStringLiteral("50% of each class")),
                 qPrintable(w.findChild<QPushButton*>(QStringLiteral("openFolder"))->toolTip()));
    }

    // Core's messages name CLI flags; the window names the fields that set them (tester 12 #12).
    // Each row is a message core gives, word for word.
    void cliFlagsAreNamedAsFields_data()
    {
        QTest::addColumn<QString>("cli");
        QTest::addColumn<QString>("window");
        QTest::newRow("model input") << "m.onnx: the model takes 1x8x8 inputs (C x H x W); the dataset's images are 1x28x28 (--resize 8x8 reads them at its size)"
                                     << "m.onnx: the model takes 1x8x8 inputs (C x H x W); the dataset's images are 1x28x28 (set Resize to 8x8 in the Dataset dock to read them at its size)";
        QTest::newRow("mixed sizes") << "d/b/wide.png is 8x12 but d/a/0.png is 8x8; images that differ in size need --resize HxW"
                                     << "d/b/wide.png is 8x12 but d/a/0.png is 8x8; images that differ in size need Resize HxW (Dataset dock)";
        QTest::newRow("memory") << "d: --resize 512x512 makes 70000 images (60000 training, 0 validation, 10000 test) of 512x512 pixels take 17.1 GiB "
                                   "in memory, and this machine has 7.7 GiB; give a smaller --resize, or fewer images (--train-limit, --test-limit)"
                                << "d: Resize 512x512 (Dataset dock) makes 70000 images (60000 training, 0 validation, 10000 test) of 512x512 pixels take "
                                   "17.1 GiB in memory, and this machine has 7.7 GiB; set a smaller Resize in the Dataset dock, or fewer images (the "
                                   "Dataset dock's Use training and test images)";
        QTest::newRow("channels") << "the model reads 3-channel images: give colour data (a folder of RGB PNG/JPEG images, CIFAR-10/100 binaries, or a CSV "
                                     "file with --image-shape 3xHxW); --resize changes only the size"
                                  << "the model reads 3-channel images: give colour data (a folder of RGB PNG/JPEG images, CIFAR-10/100 binaries, or a CSV "
                                     "file with CSV shape 3xHxW (Dataset dock)); Resize (Dataset dock) changes only the size";
        QTest::newRow("parse") << "--resize: '8' is not HxW (e.g. 32x32)" << "Resize (Dataset dock): '8' is not HxW (e.g. 32x32)";
        QTest::newRow("trainer memory") << "seed-cnn on 1x512x512 images needs about 9.0 GiB to train in batches of 64, and this machine has 7.7 GiB "
                                           "(1000 parameters); resize the images (--resize HxW) or use a smaller --batch-size"
                                        << "seed-cnn on 1x512x512 images needs about 9.0 GiB to train in batches of 64, and this machine has 7.7 GiB "
                                           "(1000 parameters); set Resize (HxW) in the Dataset dock or use a smaller Batch size (Training dock)";
        QTest::newRow("file eval") << "brings the images (--resize HxW in the CLI, the Dataset dock's Resize field in the window) to the"
                                   << "brings the images (the Resize field in the Dataset dock) to the";
        QTest::newRow("no flag") << "d/train.csv: line 3: 783 pixels, expected 784" << "d/train.csv: line 3: 783 pixels, expected 784";
    }
    void cliFlagsAreNamedAsFields()
    {
        QFETCH(QString, cli);
        QFETCH(QString, window);
        QCOMPARE(coreMessage(cli), window);
    }
};

QTEST_MAIN(TestGuiDatasets)
#include "tst_gui_datasets.moc"
