// Datasets beyond IDX: small CSV and image-folder fixtures generated in a temporary folder
// (PNG/JPEG written with libpng/libjpeg), read back through layout detection; their broken
// variants and CIFAR's, each a typed error naming the file and the record, line or image; the
// resize numerics; colour batches; and every preset built for the datasets' shapes. CIFAR's
// readable folders are tst_cifar, the image-folder layouts tst_image_folders; the shared fixtures
// dataset_fixtures.h.
#include "data/dataset.h"
#include "data/image_codec.h"
#include "data/readers.h"
#include "data/resize.h"
#include "nn/model_zoo.h"
#include "util/errors.h"
#include "util/memory.h"

#include <QtTest>

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "alloc_tracker.h"
#include "dataset_fixtures.h"

using namespace quantscope;
namespace fs = std::filesystem;

using namespace dataset_fixtures;

class TestDatasets : public QObject {
    Q_OBJECT

    QTemporaryDir m_tmp;
    std::string path(const std::string& rel) const { return (fs::path(m_tmp.path().toStdString()) / rel).string(); }

private slots:
    void csvSplitsPerClass();
    void csvShapes_data();
    void csvShapes();
    void csvFolder();
    void colourBatch();
    void resizeNumerics();
    void layouts_data();
    void layouts();
    void broken_data();
    void broken();
    void hugeImageHeader();
    void statisticsOnlyTrainSet();
    void limitedTrainingSetKeepsTheSetsStatistics();
    void resizeBeyondMemory();
    void options_data();
    void options();
    void presetsTakeTheShape_data();
    void presetsTakeTheShape();
    void modelClassesAgainstTheData();
    void byteOrderMarks();
    void imageFolderBeyondMemory();
    void splitAndLabelMessages();
};

// One CSV file: each class gives its share to the test set, the same split for every --seed.
void TestDatasets::csvSplitsPerClass()
{
    const std::string f = path("csv-one/digits.csv");
    writeText(f, csvText(0, 50, 5, 1, 4, 4)); // 10 per class
    DatasetOptions o;
    o.dir = f;
    o.testFraction = 0.3;
    const Dataset a = Dataset::load(o);
    QCOMPARE(a.layout, DatasetLayout::Csv);
    QCOMPARE(a.channels(), std::size_t{1});
    QCOMPARE(a.height(), std::size_t{4});
    QCOMPARE(a.test.size(), std::size_t{15});
    QCOMPARE(a.train.size(), std::size_t{35});
    std::map<int, int> perClass;
    for (auto l : a.test.labels) ++perClass[l];
    for (int c = 0; c < 5; ++c) QCOMPARE(perClass[c], 3);
    QCOMPARE(a.numClasses(), std::size_t{5});
    o.seed = 99;
    const Dataset b = Dataset::load(o);
    QCOMPARE(b.test.pixels, a.test.pixels);
    // Every row lands in exactly one set: the pixel rows of train + test are the file's rows.
    std::multiset<std::string> rows, want;
    for (const LabeledImages* s : {&a.train, &a.test})
        for (std::size_t i = 0; i < s->size(); ++i)
            rows.insert(std::string(s->pixels.begin() + static_cast<std::ptrdiff_t>(i * 16),
                                    s->pixels.begin() + static_cast<std::ptrdiff_t>((i + 1) * 16)));
    for (std::size_t i = 0; i < 50; ++i) {
        const Bytes p = planar(i, 1, 4, 4);
        want.insert(std::string(p.begin(), p.end()));
    }
    QVERIFY(rows == want);
    // Each image names its line of the file (eval --predictions' source column): the line holds
    // its label and pixels.
    std::vector<std::string> lines{""};
    {
        std::ifstream in(f);
        for (std::string l; std::getline(in, l);) lines.push_back(l.ends_with('\r') ? l.substr(0, l.size() - 1) : l);
    }
    for (const LabeledImages* s : {&a.train, &a.test}) {
        QCOMPARE(s->sources.size(), s->size());
        for (std::size_t i = 0; i < s->size(); ++i) {
            const std::string& src = s->sources[i];
            QVERIFY2(src.starts_with("digits.csv:"), src.c_str());
            const std::size_t line = std::stoul(src.substr(11));
            QVERIFY2(line < lines.size(), src.c_str());
            std::string expect = std::to_string(s->labels[i]);
            for (std::size_t k = 0; k < 16; ++k) expect += "," + std::to_string(s->pixels[i * 16 + k]);
            QCOMPARE(lines[line], expect);
        }
    }
}

void TestDatasets::csvShapes_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<QString>("shapeOption");
    QTest::newRow("grey 6x6 from 36 columns") << 1 << 6 << 6 << "";
    QTest::newRow("colour 3x5x5 from 75 columns") << 3 << 5 << 5 << "";
    QTest::newRow("--image-shape 1x3x8") << 1 << 3 << 8 << "1x3x8";
    QTest::newRow("--image-shape 3x2x4") << 3 << 2 << 4 << "3x2x4";
}

void TestDatasets::csvShapes()
{
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(QString, shapeOption);
    const std::string f = path("csv-shape/" + std::string(QTest::currentDataTag()) + ".csv");
    writeText(f, csvText(0, 20, 2, C, H, W));
    DatasetOptions o;
    o.dir = f;
    if (!shapeOption.isEmpty()) o.imageShape = parseImageShape(shapeOption.toStdString());
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.channels(), std::size_t(C));
    QCOMPARE(d.height(), std::size_t(H));
    QCOMPARE(d.width(), std::size_t(W));
    // The first training image is row 0 or row 1 (one of the two classes' first rows), planar.
    const Bytes got(d.train.pixels.begin(), d.train.pixels.begin() + C * H * W);
    QVERIFY(got == planar(0, C, H, W) || got == planar(1, C, H, W));
}

// A folder: train.csv + a labelled test.csv is used as given; Kaggle's unlabelled test.csv is
// skipped (the message says so) and train.csv is split; classes.txt names the classes.
void TestDatasets::csvFolder()
{
    const std::string d = path("csv-folder");
    writeText(d + "/train.csv", csvText(0, 40, 4, 1, 5, 5));
    writeText(d + "/test.csv", csvText(100, 8, 4, 1, 5, 5));
    writeText(d + "/classes.txt", "zero\none\ntwo\nthree\n");
    DatasetOptions o;
    o.dir = d;
    const Dataset a = Dataset::load(o);
    QCOMPARE(a.train.size(), std::size_t{40});
    QCOMPARE(a.test.size(), std::size_t{8});
    QCOMPARE(a.classNames[3], std::string("three"));
    QCOMPARE(a.split, std::string("test.csv"));

    writeText(d + "/test.csv", csvText(100, 8, 4, 1, 5, 5, true, false)); // no label column
    const Dataset b = Dataset::load(o);
    QCOMPARE(b.train.size() + b.test.size(), std::size_t{40});
    QCOMPARE(b.test.size(), std::size_t{8}); // 20% of 10 per class
    QVERIFY2(QString::fromStdString(b.split).contains("no label column"), b.split.c_str());
}

// makeBatch writes (B, C, H, W), channel planes where the data has them, normalised.
void TestDatasets::colourBatch()
{
    const std::string d = path("cifar-batch");
    writeBytes(d + "/data_batch_1.bin", cifarRecords(0, 64, 10, false));
    writeBytes(d + "/test_batch.bin", cifarRecords(64, 10, 10, false));
    DatasetOptions o;
    o.dir = d;
    const Dataset ds = Dataset::load(o);
    Tensor x;
    std::vector<std::int32_t> y;
    ds.makeBatch(ds.train, 0, 64, x, y);
    QCOMPARE(x.shape(), (Shape{64, 3, 32, 32}));
    double s = 0, s2 = 0;
    for (std::size_t k = 0; k < x.numel(); ++k) {
        s += x.data()[k];
        s2 += double(x.data()[k]) * x.data()[k];
    }
    const double n = double(x.numel());
    QVERIFY(std::abs(s / n) < kBatchMomentTol);
    QVERIFY(std::abs(std::sqrt(s2 / n - (s / n) * (s / n)) - 1.0) < kBatchMomentTol);
    // Same pixel byte, same value; the green plane of image 5 starts where (5, 1, 0, 0) is.
    const std::size_t at = ((5 * 3 + 1) * 32 + 0) * 32 + 0;
    const float green = x.data()[at];
    const std::uint8_t byte = pixelOf(5, 1, 0, 0);
    bool found = false;
    for (std::size_t k = 0; k < 64 * 3072 && !found; ++k)
        if (ds.train.pixels[k] == byte) found = x.data()[k] == green;
    QVERIFY(found);
}

// Resize: definitions checked on small cases computed by hand.
void TestDatasets::resizeNumerics()
{
    // area: 4x4 -> 2x2 averages 2x2 blocks (rounded)
    const Bytes src = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 250};
    Bytes dst(4);
    resizeImage(src.data(), 4, 4, 1, dst.data(), 2, 2);
    QCOMPARE(dst, (Bytes{25, 45, 105, 150})); // (0+10+40+50)/4, ..., (100+110+140+250)/4
    // bilinear, half-pixel centres: [0, 100] -> 4 wide: x = -0.25, 0.25, 0.75, 1.25 (clamped)
    const Bytes row = {0, 100};
    Bytes up(4);
    resizeImage(row.data(), 1, 2, 1, up.data(), 1, 4);
    QCOMPARE(up, (Bytes{0, 25, 75, 100}));
    // a constant colour image stays constant at any size; channels do not mix
    Bytes rgb(5 * 7 * 3);
    for (std::size_t k = 0; k < rgb.size(); ++k) rgb[k] = static_cast<std::uint8_t>(k % 3 == 0 ? 200 : k % 3 == 1 ? 7 : 99);
    Bytes out(3 * 11 * 3);
    resizeImage(rgb.data(), 5, 7, 3, out.data(), 3, 11);
    for (std::size_t k = 0; k < out.size(); ++k) QCOMPARE(int(out[k]), k % 3 == 0 ? 200 : k % 3 == 1 ? 7 : 99);
}

void TestDatasets::layouts_data()
{
    QTest::addColumn<QString>("make");
    QTest::addColumn<int>("layout");
    QTest::newRow("CIFAR-10 test_batch only in a sub-folder") << "cifar10sub" << int(DatasetLayout::Cifar10);
    QTest::newRow("CIFAR-100") << "cifar100" << int(DatasetLayout::Cifar100);
    QTest::newRow("CSV file") << "csvfile" << int(DatasetLayout::Csv);
    QTest::newRow("CSV folder") << "csvfolder" << int(DatasetLayout::Csv);
    QTest::newRow("image folder, split") << "imgsplit" << int(DatasetLayout::ImageFolder);
    QTest::newRow("image folder, nested deeper") << "imgdeep" << int(DatasetLayout::ImageFolder);
}

void TestDatasets::layouts()
{
    QFETCH(QString, make);
    QFETCH(int, layout);
    const std::string r = path("layouts/" + make.toStdString());
    std::string open = r;
    if (make == "cifar10sub") writeBytes(r + "/cifar-10-batches-bin/test_batch.bin", {});
    else if (make == "cifar100") writeBytes(r + "/train.bin", {}), writeBytes(r + "/test.bin", {});
    else if (make == "csvfile") writeText(open = r + "/x.CSV", "label,a\n1,2\n");
    else if (make == "csvfolder") writeText(r + "/train.csv", "label,a\n1,2\n");
    else if (make == "imgsplit") writeImage(r + "/train/a/1.png", 1, 1, 2, 2), writeImage(r + "/test/a/1.png", 1, 1, 2, 2);
    else if (make == "imgdeep") writeImage(r + "/a/more/1.jpeg", 1, 3, 2, 2);
    QCOMPARE(int(detectLayout(open).layout), layout);
}

void TestDatasets::broken_data()
{
    QTest::addColumn<QString>("make");
    QTest::addColumn<QString>("error");
    QTest::addColumn<QString>("blames"); // path relative to the fixture's folder
    QTest::addColumn<QString>("says");
    QTest::newRow("CIFAR record cut short") << "cifar-truncated" << "FormatError" << "data_batch_1.bin" << "record 4 is truncated";
    QTest::newRow("CIFAR label 10") << "cifar-label" << "FormatError" << "test_batch.bin" << "record 3: label 10 is out of range";
    QTest::newRow("CIFAR-100 coarse label 20") << "cifar100-coarse" << "FormatError" << "train.bin" << "record 2: coarse label";
    QTest::newRow("CIFAR test batch missing") << "cifar-notest" << "IoError" << "test_batch.bin" << "missing";
    // A gap in the training batches dropped every later one without a word (tester 12).
    QTest::newRow("CIFAR batch 2 missing, 3 there") << "cifar-gap" << "IoError" << "data_batch_2.bin" << "missing, but data_batch_3.bin is there";
    QTest::newRow("CIFAR names file of 3 lines") << "cifar-names" << "FormatError" << "batches.meta.txt" << "names 3 classes, but the labels go up to 9";
    QTest::newRow("CIFAR names file of 20 lines") << "cifar-names20" << "FormatError" << "batches.meta.txt"
                                                  << "holds more than 10 class names; CIFAR-10 has at most 10 classes";
    QTest::newRow("CSV row with a column too many") << "csv-columns" << "FormatError" << "train.csv" << "line 4 has 18 columns; the header has 17";
    QTest::newRow("CSV non-numeric cell") << "csv-text" << "FormatError" << "train.csv" << "line 3, column 6: 'abc' is not a whole number";
    QTest::newRow("CSV fractional pixel") << "csv-frac" << "FormatError" << "train.csv" << "line 2, column 2: '0.5' is not a whole number";
    QTest::newRow("CSV pixel 256") << "csv-256" << "FormatError" << "train.csv" << "line 5, column 3: pixel 256 is outside 0..255";
    QTest::newRow("CSV label -1") << "csv-neg" << "FormatError" << "train.csv" << "line 2, column 1: label -1 is out of range";
    QTest::newRow("CSV label beyond classes.txt") << "csv-classes" << "FormatError" << "train.csv" << "label 3 is out of range (0..2)";
    QTest::newRow("classes.txt naming a class twice") << "csv-dupclasses" << "FormatError" << "csv-dupclasses" << "classes 0 and 2 have the same name 'a'";
    QTest::newRow("CSV test label beyond train's classes") << "csv-testlabel" << "FormatError" << "test.csv" << "label 7 is out of range (0..3)";
    QTest::newRow("CSV single class") << "csv-oneclass" << "FormatError" << "train.csv" << "at least two";
    QTest::newRow("CSV 10 pixels, no shape") << "csv-shape" << "FormatError" << "train.csv" << "--image-shape";
    QTest::newRow("CSV --image-shape disagrees") << "csv-shape-option" << "ConfigError" << "train.csv" << "needs 12";
    QTest::newRow("CSV header only") << "csv-empty" << "FormatError" << "train.csv" << "no data rows";
    // A comma ending every row read as one pixel more ('rows hold 17 pixels, which is neither NxN...');
    // a label that is a class name said only "'boot' is not a whole number"; a headerless file
    // whose first label is a name had that row taken for a header, and the error blamed line 2.
    QTest::newRow("CSV trailing comma") << "csv-trailing" << "FormatError" << "train.csv"
                                        << "line 2 ends with a comma, an empty last field after 17 values";
    QTest::newRow("CSV one row's trailing comma") << "csv-trailing-row" << "FormatError" << "train.csv"
                                                  << "line 4 has 18 columns; the header has 17 (line 4 ends with a comma)";
    QTest::newRow("CSV label names") << "csv-names" << "FormatError" << "train.csv"
                                     << "line 3, column 1: 'boot' is not a whole number; labels are class indices 0..N-1, not names: "
                                        "write each row's class index, and the class names, one a line in index order, in classes.txt";
    QTest::newRow("CSV label names, no header") << "csv-names-nohdr" << "FormatError" << "train.csv"
                                                << "line 1, column 1: 'tshirt' is a class name; labels are class indices 0..N-1";
    // Classes run 0..K-1: a stray label 7 made 8 classes, 4 of them empty; a label in the last
    // column made a class of each pixel value (183 classes of one row each, trained to 7 %).
    QTest::newRow("CSV label gap") << "csv-gap" << "FormatError" << "train.csv" << "labels 4, 5, 6 have no rows";
    QTest::newRow("CSV label not first") << "csv-lastlabel" << "FormatError" << "train.csv" << "20 of its 20 classes have a single row";
    // A header naming its last column 'label' says to move it first; a file separated by ';' or
    // tabs reads as one column and says so; '0x10' says pixels are decimal (tester 11 #13).
    QTest::newRow("CSV header's last column 'label'") << "csv-labelhdr" << "FormatError" << "train.csv"
                                                      << "the header names the last column 'Label': move that column first";
    QTest::newRow("CSV separated by semicolons") << "csv-semicolon" << "FormatError" << "train.csv"
                                                 << "has 1 column; expected a label and pixels (its fields are separated by semicolons";
    QTest::newRow("CSV separated by tabs") << "csv-tabs" << "FormatError" << "train.csv" << "(its fields are separated by tabs";
    QTest::newRow("CSV hexadecimal pixel") << "csv-hex" << "FormatError" << "train.csv"
                                           << "line 2, column 2: '0x10' is not a whole number (pixels are bytes 0..255, in decimal digits)";
    QTest::newRow("PNG cut short") << "png-truncated" << "FormatError" << "train/b/img3.png" << "fails to decode";
    QTest::newRow("JPEG cut short") << "jpg-truncated" << "FormatError" << "test/a/img6.jpg" << "fails to decode";
    QTest::newRow("not an image") << "png-garbage" << "FormatError" << "train/a/img0.png" << "not a PNG or JPEG";
    QTest::newRow("mixed sizes") << "img-mixed" << "FormatError" << "train/b/odd.png" << "--resize";
    QTest::newRow("empty class folder") << "img-emptyclass" << "FormatError" << "train/c" << "empty class folder";
    QTest::newRow("one class folder") << "img-oneclass" << "FormatError" << "img-oneclass" << "at least two";
    QTest::newRow("test class unknown to train") << "img-testclass" << "FormatError" << "test/zebra" << "not among the training classes";
    QTest::newRow("no dataset in the folder") << "nothing" << "IoError" << "nothing" << "no dataset found";
}

// Each broken dataset gives a typed error naming the file (and record, line or image).
void TestDatasets::broken()
{
    QFETCH(QString, make);
    QFETCH(QString, error);
    QFETCH(QString, blames);
    QFETCH(QString, says);
    const std::string r = path("broken/" + make.toStdString());
    DatasetOptions o;
    o.dir = r;
    auto cifar = [&] {
        writeBytes(r + "/data_batch_1.bin", cifarRecords(0, 10, 10, false));
        writeBytes(r + "/test_batch.bin", cifarRecords(10, 5, 10, false));
    };
    auto csv = [&](std::size_t rows = 12) { writeText(r + "/train.csv", csvText(0, rows, 4, 1, 4, 4)); };
    auto images = [&] {
        writeImageTree(r + "/train", {"a", "b"}, 2, 0, ".png", 3, 4, 4);
        writeImageTree(r + "/test", {"a", "b"}, 2, 5, ".jpg", 3, 16, 16);
    };
    auto cut = [&](const std::string& file, std::size_t keep) {
        Bytes b;
        {
            std::ifstream f(r + "/" + file, std::ios::binary);
            b.assign(std::istreambuf_iterator<char>(f), {});
        }
        b.resize(std::min(b.size(), keep));
        writeBytes(r + "/" + file, b);
    };
    auto editLine = [&](std::size_t line, const std::string& text) {
        std::ifstream f(r + "/train.csv");
        std::string all, l;
        for (std::size_t n = 1; std::getline(f, l); ++n) all += (n == line ? text : l) + "\n";
        writeText(r + "/train.csv", all);
    };
    const std::string row17 = "1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"; // a label and 16 pixels
    if (make == "cifar-truncated") cifar(), cut("data_batch_1.bin", 3073 * 3 + 100);
    else if (make == "cifar-label") {
        cifar();
        Bytes b = cifarRecords(10, 5, 10, false);
        b[2 * 3073] = 10;
        writeBytes(r + "/test_batch.bin", b);
    } else if (make == "cifar100-coarse") {
        Bytes b = cifarRecords(0, 4, 100, true);
        b[3074] = 20;
        writeBytes(r + "/train.bin", b);
        writeBytes(r + "/test.bin", cifarRecords(0, 4, 100, true));
    } else if (make == "cifar-notest") writeBytes(r + "/data_batch_1.bin", cifarRecords(0, 10, 10, false));
    else if (make == "cifar-gap") cifar(), writeBytes(r + "/data_batch_3.bin", cifarRecords(20, 10, 10, false));
    else if (make == "cifar-names") cifar(), writeText(r + "/batches.meta.txt", "a\nb\nc\n");
    else if (make == "cifar-names20") {
        cifar();
        std::string names;
        for (int k = 0; k < 20; ++k) names += "class" + std::to_string(k) + "\n";
        writeText(r + "/batches.meta.txt", names);
    }
    else if (make == "csv-columns") csv(), editLine(4, row17 + ",9");
    else if (make == "csv-text") csv(), editLine(3, "1,0,0,0,0,abc,0,0,0,0,0,0,0,0,0,0,0");
    else if (make == "csv-frac") csv(), editLine(2, "1,0.5,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0");
    else if (make == "csv-256") csv(), editLine(5, "1,0,256,0,0,0,0,0,0,0,0,0,0,0,0,0,0");
    else if (make == "csv-neg") csv(), editLine(2, "-1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0");
    else if (make == "csv-classes") csv(), writeText(r + "/classes.txt", "x\ny\nz\n");
    else if (make == "csv-dupclasses") csv(), writeText(r + "/classes.txt", "a\nb\na\nc\n");
    else if (make == "csv-testlabel") csv(), writeText(r + "/test.csv", csvText(0, 3, 4, 1, 4, 4) + "7" + row17.substr(1) + "\n");
    else if (make == "csv-oneclass") writeText(r + "/train.csv", csvText(0, 10, 1, 1, 4, 4));
    else if (make == "csv-shape") writeText(r + "/train.csv", csvText(0, 10, 2, 1, 2, 5));
    else if (make == "csv-shape-option") csv(), o.imageShape = parseImageShape("3x2x2");
    else if (make == "csv-empty") writeText(r + "/train.csv", "label,a,b,c,d\n\n");
    else if (make == "csv-trailing") {
        std::string text;
        for (const char ch : csvText(0, 12, 4, 1, 4, 4)) text += ch == '\r' ? std::string(",\r") : std::string(1, ch); // rows
        writeText(r + "/train.csv", text.replace(text.find('\n'), 1, ",\n")); // and the header
    } else if (make == "csv-trailing-row") csv(), editLine(4, row17 + ",");
    else if (make == "csv-names") csv(), editLine(3, "boot" + row17.substr(1));
    else if (make == "csv-names-nohdr") {
        std::string text;
        for (int i = 0; i < 12; ++i) text += (i % 2 ? "boot" : "tshirt") + row17.substr(1) + "\n";
        writeText(r + "/train.csv", text);
    }
    else if (make == "csv-gap") csv(), editLine(2, "7" + row17.substr(1));
    else if (make == "csv-lastlabel") {
        std::string text = "label,a,b,c,d\n";
        for (int i = 0; i < 20; ++i) text += std::to_string(i) + ",1,2,3,0\n";
        writeText(r + "/train.csv", text);
    }
    else if (make == "csv-labelhdr") writeText(r + "/train.csv", "p0,p1,p2,p3,Label\n0,1,2,3,0\n5,1,2,3,1\n0,1,2,3,1\n");
    else if (make == "csv-semicolon") writeText(r + "/train.csv", "label;a;b;c;d\n0;1;2;3;4\n1;1;2;3;4\n");
    else if (make == "csv-tabs") writeText(r + "/train.csv", "0\t1\t2\t3\t4\n1\t1\t2\t3\t4\n");
    else if (make == "csv-hex") csv(), editLine(2, "1,0x10,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0");
    else if (make == "png-truncated") images(), cut("train/b/img3.png", 60);
    else if (make == "jpg-truncated") images(), cut("test/a/img6.jpg", 300);
    else if (make == "png-garbage") images(), writeText(r + "/train/a/img0.png", "hello, not a PNG");
    else if (make == "img-mixed") images(), writeImage(r + "/train/b/odd.png", 9, 3, 5, 4);
    else if (make == "img-emptyclass") images(), fs::create_directories(r + "/train/c/sub"), writeText(r + "/train/c/x.txt", "");
    else if (make == "img-oneclass") writeImageTree(r, {"only"}, 5, 0, ".png", 1, 4, 4);
    else if (make == "img-testclass") images(), writeImage(r + "/test/zebra/1.png", 1, 3, 4, 4);
    else if (make == "nothing") writeText(r + "/readme.txt", "hi");
    if (make.startsWith("img-") || make.startsWith("png-") || make.startsWith("jpg-")) o.resize = {};
    if (make == "jpg-truncated" || make == "png-truncated" || make == "png-garbage") o.resize = parseResize("4x4");

    g_largestAllocation = 0;
    const Caught c = catchError([&] { Dataset::load(o); });
    QCOMPARE(c.type, error);
    QVERIFY2(c.message.contains(QString::fromStdString(r + "/") + blames) || c.message.contains(QString::fromStdString(r)),
             qPrintable(c.message));
    QVERIFY2(c.message.contains(blames), qPrintable("does not name " + blames + ": " + c.message));
    QVERIFY2(c.message.contains(says), qPrintable(c.message));
}

// A PNG header claiming 20000x20000 pixels is refused from the header, before any pixel buffer.
void TestDatasets::hugeImageHeader()
{
    const std::string r = path("huge");
    writeImageTree(r, {"a", "b"}, 2, 0, ".png", 1, 4, 4);
    writeBytes(r + "/b/huge.png", pngWithHeader(20000, 20000));
    DatasetOptions o;
    o.dir = r;
    o.resize = parseResize("4x4");
    g_largestAllocation = 0;
    const Caught c = catchError([&] { Dataset::load(o); });
    const std::size_t largest = g_largestAllocation;
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("huge.png") && c.message.contains("20000x20000"), qPrintable(c.message));
    QVERIFY2(largest < kSmallAllocation, qPrintable(QString("allocated %1 bytes").arg(largest)));
}

// --train-limit and --validation keep part of the training set, but the normalisation is the whole
// set's, with or without --resize: train normalises as eval and analyze do (a tester's train
// --train-limit 2000 stored its subset's statistics, eval took the set's, and the loaded model's
// accuracy differed between them).
void TestDatasets::limitedTrainingSetKeepsTheSetsStatistics()
{
    const std::string d = path("cifar-limit");
    writeBytes(d + "/data_batch_1.bin", cifarRecords(0, 64, 10, false));
    writeBytes(d + "/test_batch.bin", cifarRecords(64, 10, 10, false));
    for (const char* size : {"", "48x40"}) {
        DatasetOptions o;
        o.dir = d;
        if (*size) o.resize = parseResize(size);
        const Dataset full = Dataset::load(o);
        o.trainLimit = 12;
        o.validation = 5;
        const Dataset limited = Dataset::load(o);
        QCOMPARE(limited.train.size(), std::size_t{12});
        QCOMPARE(limited.normalization, full.normalization);
        if (!*size) QVERIFY(pixelStatistics(limited.train).mean[0] != full.normalization.mean[0]); // the kept images' differ
    }
}

// eval of a model that stores no normalisation reads the training set for its statistics only
// (DatasetOptions::trainForStatistics): the same statistics as a full load, with --resize taken
// image by image without a resized copy of the set, and no training image kept.
void TestDatasets::statisticsOnlyTrainSet()
{
    const std::string d = path("cifar-stats");
    writeBytes(d + "/data_batch_1.bin", cifarRecords(0, 64, 10, false));
    writeBytes(d + "/test_batch.bin", cifarRecords(64, 10, 10, false));
    for (const char* size : {"", "48x40", "32x32"}) {
        DatasetOptions o;
        o.dir = d;
        if (*size) o.resize = parseResize(size);
        const Dataset full = Dataset::load(o);
        o.trainForStatistics = true;
        g_largestAllocation = 0;
        const Dataset lean = Dataset::load(o);
        const std::size_t largest = g_largestAllocation;
        QCOMPARE(lean.normalization.mean, full.normalization.mean);
        QCOMPARE(lean.normalization.stddev, full.normalization.stddev);
        QVERIFY(std::abs(full.normalization.stddev[0] - 1.0f) > 1e-3f); // real statistics, not the identity
        QCOMPARE(lean.train.size(), std::size_t{0});
        QCOMPARE(lean.channels(), std::size_t{3});
        QCOMPARE(lean.height(), full.test.height);
        QCOMPARE(lean.width(), full.test.width);
        QCOMPARE(lean.test.pixels, full.test.pixels);
        if (*size && std::string(size) != "32x32") // never the whole train set resized at once
            QVERIFY2(largest < full.train.pixels.size(), qPrintable(QString("%1: allocated %2 bytes").arg(size).arg(largest)));
    }
}

// --resize to a size whose images would not fit in memory is a ConfigError naming the sizes,
// before any image is resized (it ran out of memory, exit 1, with nothing said).
void TestDatasets::resizeBeyondMemory()
{
    DatasetOptions o; // Fashion-MNIST's 10,000 test images at 4096x4096: 156 GiB
    o.testOnly = true;
    o.resize = parseResize("4096x4096");
    if (!fs::exists(o.dir)) QSKIP("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
    if (double(physicalMemoryBytes()) > 150.0 * double(1u << 30)) QSKIP("this machine could hold them");
    g_largestAllocation = 0;
    const Caught c = catchError([&] { Dataset::load(o); });
    QCOMPARE(c.type, QString("ConfigError"));
    QVERIFY2(c.message.contains("--resize 4096x4096") && c.message.contains("10000 images") && c.message.contains("GiB"),
             qPrintable(c.message));
    QVERIFY2(g_largestAllocation < std::size_t{1} << 30, qPrintable(QString("allocated %1 bytes").arg(g_largestAllocation)));
}

void TestDatasets::options_data()
{
    QTest::addColumn<QString>("flag");
    QTest::addColumn<QString>("text");
    QTest::addColumn<bool>("ok");
    QTest::newRow("shape 3x32x32") << "shape" << "3x32x32" << true;
    QTest::newRow("shape C=2") << "shape" << "2x32x32" << false;
    QTest::newRow("shape two parts") << "shape" << "32x32" << false;
    QTest::newRow("shape zero") << "shape" << "1x0x5" << false;
    QTest::newRow("shape absurd") << "shape" << "3x100000x100000" << false;
    QTest::newRow("shape garbage") << "shape" << "3xax4" << false;
    QTest::newRow("resize 24x40") << "resize" << "24x40" << true;
    QTest::newRow("resize three parts") << "resize" << "1x2x3" << false;
    QTest::newRow("resize negative") << "resize" << "-4x4" << false;
}

void TestDatasets::options()
{
    QFETCH(QString, flag);
    QFETCH(QString, text);
    QFETCH(bool, ok);
    const Caught c = catchError([&] {
        if (flag == "shape") parseImageShape(text.toStdString());
        else parseResize(text.toStdString());
    });
    QCOMPARE(c.type, ok ? QString("no error") : QString("ConfigError"));
    if (!ok) QVERIFY2(c.message.contains(text), qPrintable(c.message));
}

void TestDatasets::presetsTakeTheShape_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("classes");
    for (const ModelPresetInfo& p : modelPresets()) {
        const std::string n = p.name;
        QTest::newRow((n + " 3x32x32 CIFAR-10").c_str()) << QString(p.name) << 3 << 32 << 32 << 10;
        QTest::newRow((n + " 3x32x32 CIFAR-100").c_str()) << QString(p.name) << 3 << 32 << 32 << 100;
        QTest::newRow((n + " 1x20x24, 3 classes").c_str()) << QString(p.name) << 1 << 20 << 24 << 3;
        QTest::newRow((n + " 3x17x13, 2 classes").c_str()) << QString(p.name) << 3 << 17 << 13 << 2;
    }
}

// Every preset builds for colour, any size and any class count, and gives (B, classes).
void TestDatasets::presetsTakeTheShape()
{
    QFETCH(QString, preset);
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, classes);
    auto m = makeModel(preset.toStdString(), C, H, W, classes, 3);
    Tensor x({2, std::size_t(C), std::size_t(H), std::size_t(W)});
    for (std::size_t k = 0; k < x.numel(); ++k) x.data()[k] = float(k % 7) * 0.1f;
    const Tensor& y = m->forward(x, RunContext{});
    QCOMPARE(y.shape(), (Shape{2, std::size_t(classes)}));
    for (std::size_t k = 0; k < y.numel(); ++k) QVERIFY(std::isfinite(y.data()[k]));
}

// A model file's class names against the data's: the same names in another order map by name;
// other names, unnamed (numbered) data or another count say nothing can be matched.
void TestDatasets::modelClassesAgainstTheData()
{
    const std::vector<std::string> model = {"cat", "dog", "eel"};
    QCOMPARE(matchClasses(model, model).kind, ClassMatch::Kind::Same);
    const ClassMatch r = matchClasses(model, {"eel", "cat", "dog"});
    QCOMPARE(r.kind, ClassMatch::Kind::Reordered);
    QCOMPARE(r.dataToModel, std::vector<std::int32_t>({2, 0, 1})); // data label 0 (eel) is the model's class 2
    QCOMPARE(matchClasses(model, {"a_cat", "dog", "eel"}).kind, ClassMatch::Kind::Different);
    QCOMPARE(matchClasses(model, {"0", "1", "2"}).kind, ClassMatch::Kind::Unknown);
    QCOMPARE(matchClasses({}, model).kind, ClassMatch::Kind::Unknown);
    QCOMPARE(matchClasses(model, {"cat", "dog"}).kind, ClassMatch::Kind::Unknown);
}

// A UTF-8 byte order mark (Excel's "CSV UTF-8") is no part of the data: a CSV without a header
// keeps its first row (it was taken for a header: 479 + 120 images for 480 + 120, tester 11), one
// with a header reads as before, and classes.txt's first name has no BOM in it.
void TestDatasets::byteOrderMarks()
{
    const std::string bom = "\xEF\xBB\xBF";
    for (const bool header : {false, true}) {
        const std::string d = path(header ? "bom-header" : "bom-plain");
        writeText(d + "/train.csv", bom + csvText(0, 40, 4, 1, 5, 5, header));
        writeText(d + "/test.csv", bom + csvText(100, 8, 4, 1, 5, 5, header));
        writeText(d + "/classes.txt", bom + "zero\none\ntwo\nthree\n");
        DatasetOptions o;
        o.dir = d;
        const Dataset a = Dataset::load(o);
        QCOMPARE(a.train.size(), std::size_t{40});
        QCOMPARE(a.test.size(), std::size_t{8});
        QVERIFY(std::equal(a.train.pixels.begin(), a.train.pixels.begin() + 25, planar(0, 1, 5, 5).begin()));
        QCOMPARE(a.classNames[0], std::string("zero"));
    }
}

// An image folder whose decoded images would not fit (held twice) is refused after the headers,
// naming the folder, the count, the shape, the GiB and the way out; one that fits passes.
void TestDatasets::imageFolderBeyondMemory()
{
    const unsigned long long gib = 1ull << 30;
    const Caught c = catchError([&] { checkImageFolderFootprint("/data/big", 20, {1, 8192, 8192}, false, 2 * gib); });
    QCOMPARE(c.type, QString("ConfigError"));
    QVERIFY2(c.message.startsWith("/data/big: 20 images of 1x8192x8192 take 1.2 GiB") && c.message.contains("has 2.0 GiB") &&
                 c.message.contains("give --resize HxW, or fewer images"),
             qPrintable(c.message));
    const Caught r = catchError([&] { checkImageFolderFootprint("/data/big", 20, {3, 4096, 4096}, true, 2 * gib); });
    QVERIFY2(r.message.contains("--resize HxW with a smaller size"), qPrintable(r.message));
    checkImageFolderFootprint("/data/big", 20, {1, 8192, 8192}, false, 8 * gib); // 2.5 GiB of 6.4: taken
    checkImageFolderFootprint("/data/big", 20, {1, 8192, 8192}, false, 0);        // memory unknown: taken
}

// Tester 11's messages: a test fraction as given (0.001 read "0%"), too few images to split is a
// data error (exit 3, it was a usage error), and a label past classes.txt's names says where the
// range comes from.
void TestDatasets::splitAndLabelMessages()
{
    QCOMPARE(percentText(0.001), std::string("0.1%"));
    QCOMPARE(percentText(0.2), std::string("20%"));
    QCOMPARE(percentText(0.999), std::string("99.9%"));
    const Caught few = catchError([] { splitTrainTestIndices({0, 1, 2}, {7, 8, 9}, 0.2, "one.csv"); });
    QCOMPARE(few.type, QString("FormatError"));
    QVERIFY2(few.message.contains("one.csv: too few images to hold out a test set: 3 images in 3 classes, and a class needs at least 2"),
             qPrintable(few.message));
    const std::string d = path("csv-named-short");
    writeText(d + "/train.csv", csvText(0, 30, 3, 1, 4, 4));
    writeText(d + "/classes.txt", "zero\none\n");
    DatasetOptions o;
    o.dir = d;
    const Caught c = catchError([&] { Dataset::load(o); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("is out of range (0..1) (" + QString::fromStdString(d) + "/classes.txt names 2 classes)"),
             qPrintable(c.message));
    o.dir = path("csv-split-text/digits.csv");
    writeText(o.dir, csvText(0, 40, 4, 1, 4, 4));
    o.testFraction = 0.125;
    QCOMPARE(Dataset::load(o).split, std::string("12.5% of digits.csv per class"));
}

QTEST_APPLESS_MAIN(TestDatasets)
#include "tst_datasets.moc"
