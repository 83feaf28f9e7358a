// Image-folder datasets (torchvision's ImageFolder convention), written as PNG/JPEG fixtures in a
// temporary folder and read back through layout detection: train/ + test/ (or val/), one tree split
// per class, wrapper folders, mixed sizes with --resize, and class names made valid UTF-8.
#include "data/dataset.h"
#include "data/image_codec.h"
#include "data/readers.h"
#include "util/errors.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "dataset_fixtures.h"

using namespace quantscope;
using namespace dataset_fixtures;

class TestImageFolders : public QObject {
    Q_OBJECT

    QTemporaryDir m_tmp;
    std::string path(const std::string& rel) const { return (fs::path(m_tmp.path().toStdString()) / rel).string(); }

private slots:
    void imageFolderSplit();
    void imageFolderSingleTree();
    void classNamesAreUtf8();
    void imageFolderLayouts_data();
    void imageFolderLayouts();
    void imageFolderResize();
    void testOnlyReadsWhatEvalUses();
    void limitsDecodeOnlyWhatIsKept();
    void pngModesDecodeAsStored_data();
    void pngModesDecodeAsStored();
    void upperCaseExtensionsAreImages();
    void archiveLitterIsSkipped();
    void splitStaysAsImagesAreAdded();
    void unreadImagesAreNoted();
    void danglingLinkIsAnError();
    void sourcesNameEachImagesFile();
    void readWithTheModelsChannels();
};

// train/ + test/: PNG and JPEG, grey and colour mixed -> C=3, grey replicated; PNG exact.
void TestImageFolders::imageFolderSplit()
{
    const std::string r = path("img-split");
    writeImageTree(r + "/train", kClasses3, 4, 0, ".png", 3, 8, 8);
    writeImage(r + "/train/dog/zz-grey.png", 500, 1, 8, 8); // one grayscale image among colour ones
    writeImageTree(r + "/test", kClasses3, 2, 100, ".jpg", 3, 8, 8);
    writeText(r + "/train/cat/notes.txt", "not an image: skipped");
    DatasetOptions o;
    o.dir = r;
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.layout, DatasetLayout::ImageFolder);
    QCOMPARE(d.channels(), std::size_t{3});
    QCOMPARE(d.train.size(), std::size_t{13});
    QCOMPARE(d.test.size(), std::size_t{6});
    QCOMPARE(d.classNames, kClasses3);
    // cat/img0..3 come first in name order: image 0 is img0.png of class 0
    QCOMPARE(d.train.labels[0], 0);
    QVERIFY(Bytes(d.train.pixels.begin(), d.train.pixels.begin() + 192) == planar(0, 3, 8, 8));
    // dog: img4..7 then zz-grey; the grey image's three planes are equal
    const std::size_t g = 8;
    QCOMPARE(d.train.labels[g], 1);
    const Bytes grey = planar(500, 1, 8, 8);
    for (std::size_t c = 0; c < 3; ++c)
        QVERIFY(std::equal(grey.begin(), grey.end(), d.train.pixels.begin() + static_cast<std::ptrdiff_t>(g * 192 + c * 64)));
    // JPEG: close to what was written
    const Bytes want = planar(100, 3, 8, 8);
    int worst = 0;
    for (std::size_t k = 0; k < want.size(); ++k) worst = std::max(worst, std::abs(int(want[k]) - int(d.test.pixels[k])));
    QVERIFY2(worst <= kJpegTol, qPrintable(QString("JPEG error %1").arg(worst)));
    QCOMPARE(d.test.labels[5], 2);
}

// One tree, grayscale only: C=1, split per class by the test fraction.
void TestImageFolders::imageFolderSingleTree()
{
    const std::string r = path("img-tree");
    writeImageTree(r, {"a", "b"}, 5, 0, ".png", 1, 6, 7);
    DatasetOptions o;
    o.dir = r;
    o.testFraction = 0.4;
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.channels(), std::size_t{1});
    QCOMPARE(d.height(), std::size_t{6});
    QCOMPARE(d.width(), std::size_t{7});
    QCOMPARE(d.test.size(), std::size_t{4});
    QCOMPARE(d.train.size(), std::size_t{6});
    QCOMPARE(std::count(d.test.labels.begin(), d.test.labels.end(), 1), 2);
}

// Class folder names in another encoding (Latin-1 "cl\xe9ss") become valid UTF-8, with U+FFFD for
// the stray byte; UTF-8 names stay as they are. The .qsm and ONNX files store them as UTF-8 strings.
void TestImageFolders::classNamesAreUtf8()
{
    const std::string r = path("img-names");
    writeImageTree(r, {"caf\xC3\xA9", "cl\xE9ss", "ok\xC0\x80", "line\nbreak"}, 4, 0, ".png", 1, 8, 8);
    DatasetOptions o;
    o.dir = r;
    o.testFraction = 0.5;
    const Dataset d = Dataset::load(o);
    // A newline in a folder name becomes a space: model files keep one name per line (tester 12:
    // an ONNX export listed 4 names for 3 classes).
    QCOMPARE(d.classNames, std::vector<std::string>({"caf\xC3\xA9", "cl\xEF\xBF\xBDss", "line break", "ok\xEF\xBF\xBD\xEF\xBF\xBD"}));
}

// Where the train and test images of a folder come from: torchvision's train/ + val/ (a user's
// ImageNet-style tree was read as two classes, 'train' and 'val'), train/ alone and a wrapper
// folder around a tree (both were read as one class) split by the test fraction; a folder whose
// one sub-folder holds images directly is still one class, and an error.
void TestImageFolders::imageFolderLayouts_data()
{
    QTest::addColumn<QString>("layout");
    QTest::addColumn<int>("train");
    QTest::addColumn<int>("test"); // -1: a FormatError naming a single class
    QTest::newRow("train/ + val/") << "train+val" << 12 << 6;
    QTest::newRow("train/ + validation/") << "train+validation" << 12 << 6;
    QTest::newRow("train/ alone") << "train" << 6 << 6;
    QTest::newRow("a wrapper folder") << "wrap" << 6 << 6;
    QTest::newRow("two wrappers") << "wrap2" << 6 << 6;
    QTest::newRow("one class folder") << "oneclass" << 0 << -1;
    QTest::newRow("a class named train") << "classtrain" << 6 << 6;
}

void TestImageFolders::imageFolderLayouts()
{
    QFETCH(QString, layout);
    QFETCH(int, train);
    QFETCH(int, test);
    const std::string r = path("img-layout-" + layout.toStdString());
    const std::string l = layout.toStdString();
    if (l.starts_with("train")) {
        writeImageTree(r + "/train", kClasses3, 4, 0, ".png", 1, 8, 8);
        if (l != "train") writeImageTree(r + "/" + l.substr(6), kClasses3, 2, 100, ".png", 1, 8, 8);
    } else if (l == "wrap") {
        writeImageTree(r + "/mytree", kClasses3, 4, 0, ".png", 1, 8, 8);
    } else if (l == "classtrain") {
        writeImageTree(r, {"cat", "train", "zebra"}, 4, 0, ".png", 1, 8, 8);
    } else if (l == "wrap2") {
        writeImageTree(r + "/outer/inner", kClasses3, 4, 0, ".png", 1, 8, 8);
    } else {
        writeImageTree(r, {"only"}, 6, 0, ".png", 1, 8, 8);
    }
    DatasetOptions o;
    o.dir = r;
    o.testFraction = 0.5;
    if (test < 0) {
        const Caught c = catchError([&] { Dataset::load(o); });
        QCOMPARE(c.type, QString("FormatError"));
        QVERIFY2(c.message.contains("single class"), qPrintable(c.message));
        return;
    }
    const Dataset d = Dataset::load(o);
    const std::vector<std::string> classes = l == "classtrain" ? std::vector<std::string>({"cat", "train", "zebra"}) : kClasses3;
    QCOMPARE(d.classNames, classes);
    QCOMPARE(d.train.size(), std::size_t(train));
    QCOMPARE(d.test.size(), std::size_t(test));
    QCOMPARE(std::count(d.test.labels.begin(), d.test.labels.end(), 2), test / 3);
}

// Different sizes need --resize; with it every image has the asked size.
void TestImageFolders::imageFolderResize()
{
    const std::string r = path("img-sizes");
    writeImageTree(r, {"a", "b"}, 3, 0, ".png", 3, 8, 8);
    writeImage(r + "/b/big.jpg", 50, 3, 16, 12);
    DatasetOptions o;
    o.dir = r;
    o.testFraction = 0.5;
    const Caught c = catchError([&] { Dataset::load(o); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("--resize") && c.message.contains("big.jpg"), qPrintable(c.message));
    o.resize = parseResize("4x6");
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.height(), std::size_t{4});
    QCOMPARE(d.width(), std::size_t{6});
    QCOMPARE(d.train.pixels.size(), d.train.size() * 3 * 4 * 6);
}

// eval of a model that knows its normalisation reads the test split alone (a damaged training
// image no longer failed it), and a tree without a split is evaluated whole (it measured 20 %).
void TestImageFolders::testOnlyReadsWhatEvalUses()
{
    const std::string r = path("img-testonly");
    writeImageTree(r + "/train", {"a", "b"}, 4, 0, ".png", 1, 6, 6);
    writeImageTree(r + "/test", {"a", "b"}, 3, 100, ".png", 1, 6, 6);
    writeBytes(r + "/train/a/img0.png", Bytes{0x89, 'P', 'N', 'G'}); // truncated
    DatasetOptions o;
    o.dir = r;
    QVERIFY_THROWS_EXCEPTION(FormatError, Dataset::load(o));
    o.testOnly = true;
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.test.size(), std::size_t{6});
    QCOMPARE(d.train.size(), std::size_t{0});
    QCOMPARE(d.classNames, std::vector<std::string>({"a", "b"}));
    QVERIFY2(d.split.find("train/ not read") != std::string::npos, d.split.c_str());

    const std::string tree = path("img-testonly-tree");
    writeImageTree(tree, {"a", "b", "c"}, 5, 0, ".png", 1, 6, 6);
    DatasetOptions t;
    t.dir = tree;
    QCOMPARE(Dataset::load(t).test.size(), std::size_t{3}); // 20 % of each class
    t.testOnly = true;
    const Dataset whole = Dataset::load(t);
    QCOMPARE(whole.test.size(), std::size_t{15});
    QVERIFY(!whole.splitByFraction);
    QVERIFY2(whole.split.find("every image") != std::string::npos, whole.split.c_str());
}

namespace {

// Cuts a PNG just after its first IDAT chunk starts: the header stays readable, the pixels do not.
void cutPixels(const std::string& file)
{
    Bytes png;
    {
        std::ifstream in(file, std::ios::binary);
        png.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string idat = "IDAT";
    const auto at = std::search(png.begin(), png.end(), idat.begin(), idat.end());
    if (at == png.end()) throw std::runtime_error(file + " has no IDAT chunk");
    png.resize(std::size_t(at - png.begin()) + 6);
    writeBytes(file, png);
}

} // namespace

// --train-limit, --validation and --test-limit on a train/ + test/ tree: only the images
// Dataset::load keeps are decoded (tester 12: 200 of 3,600 large images decoded all 3,600), and
// they are the images a load without limits gives at those places.
void TestImageFolders::limitsDecodeOnlyWhatIsKept()
{
    const std::string r = path("img-limits");
    writeImageTree(r + "/train", {"a", "b", "c"}, 8, 0, ".png", 3, 7, 5);
    writeImageTree(r + "/test", {"a", "b", "c"}, 4, 100, ".png", 3, 7, 5);
    DatasetOptions all;
    all.dir = r;
    const Dataset full = Dataset::load(all);
    QCOMPARE(full.train.size(), std::size_t{24});
    for (const bool afterLimit : {false, true}) {
        DatasetOptions o = all;
        o.trainLimit = 9;
        o.validation = 5;
        o.testLimit = 7;
        o.seed = 3;
        o.validationAfterLimit = afterLimit;
        const Dataset d = Dataset::load(o);
        const TrainingSelection kept = selectTraining(full.train.size(), o);
        QCOMPARE(d.train.size(), kept.train.size());
        QCOMPARE(d.validation.size(), std::size_t{5});
        QCOMPARE(d.test.size(), std::size_t{7});
        const std::size_t B = full.train.imageBytes();
        const auto same = [&](const LabeledImages& got, std::size_t k, const LabeledImages& want, std::size_t i) {
            return std::equal(got.pixels.begin() + std::ptrdiff_t(k * B), got.pixels.begin() + std::ptrdiff_t((k + 1) * B),
                              want.pixels.begin() + std::ptrdiff_t(i * B)) &&
                   got.labels[k] == want.labels[i];
        };
        for (std::size_t k = 0; k < kept.train.size(); ++k) QVERIFY2(same(d.train, k, full.train, kept.train[k]), "a kept training image");
        for (std::size_t k = 0; k < kept.validation.size(); ++k) QVERIFY2(same(d.validation, k, full.train, kept.validation[k]), "a validation image");
        for (std::size_t k = 0; k < 7; ++k) QVERIFY2(same(d.test, k, full.test, k), "a test image");
        // the statistics of the whole training set, not of the kept images among black ones
        // (tester 11: mean 0.0206 for 0.2965 with --train-limit 64 of 900)
        QCOMPARE(d.normalization.mean, full.normalization.mean);
        QCOMPARE(d.normalization.stddev, full.normalization.stddev);
    }
    // One class tree split by --test-fraction: the same, through the split's indices
    const std::string tree = path("img-limits-tree");
    writeImageTree(tree, {"a", "b"}, 10, 0, ".png", 1, 6, 6);
    DatasetOptions whole;
    whole.dir = tree;
    const Dataset fullTree = Dataset::load(whole);
    DatasetOptions limitedTree = whole;
    limitedTree.trainLimit = 5;
    limitedTree.validation = 3;
    limitedTree.testLimit = 2;
    const Dataset t = Dataset::load(limitedTree);
    const TrainingSelection keptTree = selectTraining(fullTree.train.size(), limitedTree);
    const std::size_t B6 = fullTree.train.imageBytes();
    QCOMPARE(t.train.size(), std::size_t{5});
    for (std::size_t k = 0; k < 5; ++k)
        QVERIFY(std::equal(t.train.pixels.begin() + std::ptrdiff_t(k * B6), t.train.pixels.begin() + std::ptrdiff_t((k + 1) * B6),
                           fullTree.train.pixels.begin() + std::ptrdiff_t(keptTree.train[k] * B6)));
    for (std::size_t k = 0; k < 3; ++k)
        QVERIFY(std::equal(t.validation.pixels.begin() + std::ptrdiff_t(k * B6), t.validation.pixels.begin() + std::ptrdiff_t((k + 1) * B6),
                           fullTree.train.pixels.begin() + std::ptrdiff_t(keptTree.validation[k] * B6)));
    QVERIFY(std::equal(t.test.pixels.begin(), t.test.pixels.end(), fullTree.test.pixels.begin()));
    QCOMPARE(t.test.size(), std::size_t{2});
    QCOMPARE(t.normalization.mean, fullTree.normalization.mean);
    QCOMPARE(t.normalization.stddev, fullTree.normalization.stddev);
    {   // an image of the tree the limited load does not keep is never decoded (img<i> is entry i)
        std::vector<std::int32_t> labels(20);
        std::vector<std::uint64_t> keys(20);
        for (std::size_t i = 0; i < 20; ++i) {
            labels[i] = i < 10 ? 0 : 1;
            keys[i] = imagePathKey(tree + (i < 10 ? "/a/img" : "/b/img") + std::to_string(i) + ".png", tree);
        }
        const TrainTestIndices split = splitTrainTestIndices(labels, keys, whole.testFraction, tree);
        std::vector<bool> used(20, false);
        for (std::size_t i : keptTree.train) used[split.train[i]] = true;
        for (std::size_t i : keptTree.validation) used[split.train[i]] = true;
        for (std::size_t i : statisticsSample(split.train.size(), 36, limitedTree)) used[split.train[i]] = true;
        for (std::size_t k = 0; k < 2; ++k) used[split.test[k]] = true;
        const std::size_t unused = std::size_t(std::find(used.begin(), used.end(), false) - used.begin());
        QVERIFY(unused < 20);
        cutPixels(tree + "/" + (unused < 10 ? "a" : "b") + "/img" + std::to_string(unused) + ".png");
        QCOMPARE(Dataset::load(limitedTree).train.size(), std::size_t{5});
        QVERIFY_THROWS_EXCEPTION(FormatError, Dataset::load(whole));
    }

    // A training image neither kept nor among the statistics' images is never decoded: truncating
    // one leaves the limited load as it was, and the full load names it. (A statistics budget of 16
    // images of 3x7x5 draws 16 of the 24, evenly spaced.)
    DatasetOptions o = all;
    o.trainLimit = 3;
    o.statisticsPixels = 16 * 105;
    const TrainingSelection kept = selectTraining(24, o);
    const std::vector<std::size_t> sample = statisticsSample(24, 105, o);
    QCOMPARE(sample.size(), std::size_t{16});
    std::size_t outside = 0; // class a's img0..img7 list in name order: index i is img<i>
    const auto decoded = [&](std::size_t i) {
        return std::find(kept.train.begin(), kept.train.end(), i) != kept.train.end() ||
               std::find(sample.begin(), sample.end(), i) != sample.end();
    };
    while (decoded(outside)) ++outside;
    QVERIFY(outside < 8);
    cutPixels(r + "/train/a/img" + std::to_string(outside) + ".png");
    QCOMPARE(Dataset::load(o).train.size(), std::size_t{3});
    QVERIFY_THROWS_EXCEPTION(FormatError, Dataset::load(all));
}

void TestImageFolders::pngModesDecodeAsStored_data()
{
    QTest::addColumn<QString>("file");
    for (const char* f : {"rgb.png", "rgb_gamma1.png", "rgba.png", "la.png", "gray16.png", "rgb16.png", "palette_trns.png", "gray2.png", "cmyk.jpg"})
        QTest::newRow(f) << QString(f);
}

// PNG modes of users' datasets (tests/data/png_modes, written by PIL; make_png_modes.py says what
// each must decode to): the stored values, as PIL and torchvision read them. libpng's simplified
// API gamma-encoded 16-bit samples (163 read as 208), applied a gAMA 1.0 chunk (38 read as 107)
// and composed alpha in linear light (tester 12).
void TestImageFolders::pngModesDecodeAsStored()
{
    QFETCH(QString, file);
    const fs::path dir = fs::path(QS_TEST_DATA) / "png_modes";
    std::ifstream in(dir / "expected.json");
    const nlohmann::json e = nlohmann::json::parse(in).at(file.toStdString());
    for (const std::size_t channels : {std::size_t{1}, std::size_t{3}}) {
        ImageInfo info;
        const std::vector<std::uint8_t> px = decodeImage((dir / file.toStdString()).string(), channels, &info);
        QCOMPARE(info.width, e.at("width").get<std::size_t>());
        QCOMPARE(info.height, e.at("height").get<std::size_t>());
        const std::vector<int> want = e.at(channels == 1 ? "gray" : "rgb").get<std::vector<int>>();
        QCOMPARE(px.size(), want.size());
        for (std::size_t i = 0; i < px.size(); ++i)
            QVERIFY2(px[i] == want[i], qPrintable(QString("%1 channel(s), value %2: %3, expected %4").arg(channels).arg(i).arg(px[i]).arg(want[i])));
    }
}

// An image that is a link to a missing file is an error naming it, as an unreadable image is
// (tester 22: c0/zz.png -> a missing file was passed over without a word); a link to an image
// that exists is read as the image.
void TestImageFolders::danglingLinkIsAnError()
{
    const std::string t = path("img-links");
    writeImageTree(t, {"a", "b"}, 4, 0, ".png", 1, 5, 5);
    DatasetOptions o;
    o.dir = t;
    std::filesystem::create_symlink(t + "/a/img0.png", t + "/b/linked.png");
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.train.size() + d.test.size(), std::size_t{9});
    std::filesystem::create_symlink(t + "/gone/missing.png", t + "/a/zz.png");
    try {
        Dataset::load(o);
        QFAIL("a link to a missing image was read without an error");
    } catch (const IoError& e) {
        QVERIFY2(std::string(e.what()).starts_with(t + "/a/zz.png: a link to a missing file (" + t + "/gone/missing.png)"), e.what());
    }
}

QTEST_GUILESS_MAIN(TestImageFolders)
// Each image names its file under the folder given (LabeledImages::sources, eval --predictions'
// source column): the file decodes to the image's pixels and lies in its label's class folder,
// through the train/test split, the --test-fraction split and --test-limit.
void TestImageFolders::sourcesNameEachImagesFile()
{
    const std::string split = path("img-sources-split"), tree = path("img-sources-tree");
    writeImageTree(split + "/train", kClasses3, 3, 0, ".png", 1, 6, 6);
    writeImageTree(split + "/test", kClasses3, 2, 50, ".png", 1, 6, 6);
    writeImageTree(tree, {"a", "b", "c"}, 5, 100, ".png", 1, 6, 6);
    for (const auto& [root, limit] : {std::pair{split, 0}, std::pair{split, 4}, std::pair{tree, 0}, std::pair{tree, 2}}) {
        DatasetOptions o;
        o.dir = root;
        o.testFraction = 0.4;
        o.testLimit = static_cast<std::size_t>(limit);
        const Dataset d = Dataset::load(o);
        const bool hasSplit = root == split;
        for (const auto& [set, folder] : {std::pair{&d.train, "train/"}, std::pair{&d.test, "test/"}}) {
            QCOMPARE(set->sources.size(), set->size());
            for (std::size_t i = 0; i < set->size(); ++i) {
                const std::string& src = set->sources[i];
                const std::string cls = d.classNames[static_cast<std::size_t>(set->labels[i])];
                QVERIFY2(src.starts_with((hasSplit ? std::string(folder) : std::string()) + cls + "/"), src.c_str());
                const std::vector<std::uint8_t> px = decodeImage(root + "/" + src, 1);
                QVERIFY2(std::equal(px.begin(), px.end(), set->pixels.begin() + std::ptrdiff_t(i * 36)), src.c_str());
            }
        }
        if (limit) QCOMPARE(d.test.size(), std::size_t(limit));
    }
}

// DatasetOptions::imageChannels (eval and train --model FILE give the model's): a grey tree read
// as RGB has each grey plane three times, a colour tree read as grey has the luma decodeImage
// gives, each with a note; the channels the images have already take no note (tester 11: a
// grey test folder for an RGB model was refused).
void TestImageFolders::readWithTheModelsChannels()
{
    const std::string grey = path("img-grey"), colour = path("img-colour");
    writeImageTree(grey + "/train", {"a", "b"}, 2, 0, ".png", 1, 4, 4);
    writeImageTree(grey + "/test", {"a", "b"}, 2, 10, ".png", 1, 4, 4);
    writeImageTree(colour, {"a", "b"}, 3, 20, ".png", 3, 4, 4);
    DatasetOptions o;
    o.dir = grey;
    o.imageChannels = 3;
    Dataset d = Dataset::load(o);
    QCOMPARE(d.channels(), std::size_t{3});
    QCOMPARE(d.notes.size(), std::size_t{1});
    QVERIFY2(d.notes[0].find("grey images are read as RGB") != std::string::npos, d.notes[0].c_str());
    for (std::size_t i = 0; i < d.test.size(); ++i) {
        const Bytes want = planar(10 + i, 1, 4, 4);
        for (std::size_t c = 0; c < 3; ++c)
            QVERIFY(std::equal(want.begin(), want.end(), d.test.pixels.begin() + std::ptrdiff_t(i * 48 + c * 16)));
    }
    o.imageChannels = 1;
    QVERIFY(Dataset::load(o).notes.empty());

    o.dir = colour;
    o.imageChannels = 1;
    d = Dataset::load(o);
    QCOMPARE(d.channels(), std::size_t{1});
    QCOMPARE(d.notes.size(), std::size_t{1});
    QVERIFY2(d.notes[0].find("its 6 colour images are read as grey") != std::string::npos, d.notes[0].c_str());
    for (std::size_t i = 0; i < d.test.size(); ++i) {
        const std::vector<std::uint8_t> luma = decodeImage(colour + "/" + d.test.sources[i], 1);
        QVERIFY(std::equal(luma.begin(), luma.end(), d.test.pixels.begin() + std::ptrdiff_t(i * 16)));
    }
    o.imageChannels = 2;
    QVERIFY_THROWS_EXCEPTION(ConfigError, Dataset::load(o));
}

#include "tst_image_folders.moc"

// Extensions are matched without case, as cameras and Windows write them (IMG_0001.JPG): a tree of
// only .PNG and .JpEg files is an image folder, and every image in it is read.
void TestImageFolders::upperCaseExtensionsAreImages()
{
    const std::string r = path("img-upper");
    writeImageTree(r, {"a", "b"}, 3, 0, ".png", 1, 6, 6);
    writeImage(r + "/b/photo.jpg", 9, 1, 6, 6);
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(r))
        if (e.is_regular_file()) files.push_back(e.path());
    for (const fs::path& f : files) {
        fs::path to = f;
        to.replace_extension(f.extension() == ".png" ? ".PNG" : ".JpEg");
        fs::rename(f, to);
    }
    DatasetOptions o;
    o.dir = r;
    o.testFraction = 0.5;
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.layout, DatasetLayout::ImageFolder);
    QCOMPARE(d.train.size() + d.test.size(), std::size_t{7});
    QCOMPARE(d.classNames, std::vector<std::string>({"a", "b"}));
    QVERIFY(isImageFileName("x/IMG_0001.JPG") && isImageFileName("y.Png") && !isImageFileName("notes.TXT"));
}

// What unzipping a macOS-made archive leaves (a __MACOSX/ folder of AppleDouble "._name.png" files,
// and "._name.png" beside each image) and hidden folders (.ipynb_checkpoints) are passed over: the
// set loads with its own images only (it stopped at "._circle_0000.png: not a PNG or JPEG image",
// tester 11), at the top, in a split and inside a class.
void TestImageFolders::archiveLitterIsSkipped()
{
    const std::string r = path("img-litter");
    writeImageTree(r + "/train", {"a", "b"}, 3, 0, ".png", 1, 6, 6);
    writeImageTree(r + "/test", {"a", "b"}, 2, 50, ".png", 1, 6, 6);
    for (const char* f : {"/train/a/._img0.png", "/train/b/._img3.png", "/__MACOSX/train/a/._img0.png", "/train/__MACOSX/a/._img0.png",
                          "/test/a/._img50.png"})
        writeText(r + f, "\x00\x05\x16\x07 AppleDouble");
    writeImage(r + "/train/a/.ipynb_checkpoints/img0-checkpoint.png", 0, 1, 6, 6);
    DatasetOptions o;
    o.dir = r;
    const Dataset d = Dataset::load(o);
    QCOMPARE(d.classNames, std::vector<std::string>({"a", "b"}));
    QCOMPARE(d.train.size(), std::size_t{6});
    QCOMPARE(d.test.size(), std::size_t{4});
    // one tree without a split: __MACOSX is no class
    const std::string t = path("img-litter-tree");
    writeImageTree(t, {"a", "b"}, 5, 0, ".png", 1, 6, 6);
    writeText(t + "/__MACOSX/a/._img0.png", "AppleDouble");
    writeText(t + "/b/._img5.png", "AppleDouble");
    o.dir = t;
    const Dataset e = Dataset::load(o);
    QCOMPARE(e.classNames, std::vector<std::string>({"a", "b"}));
    QCOMPARE(e.train.size() + e.test.size(), std::size_t{10});
    QVERIFY(!isImageFileName("x") && skippedFileName("._img0.png") && skippedFolderName("__MACOSX") && !skippedFolderName("a"));
}

// An image's side of the --test-fraction split follows from its own path: adding images to a class
// moves none of the others from train to test (one added image moved two of each class's eight,
// so a model was scored partly on its training images, tester 11).
void TestImageFolders::splitStaysAsImagesAreAdded()
{
    const std::string r = path("img-grow");
    writeImageTree(r, {"a", "b"}, 10, 0, ".png", 1, 5, 5);
    DatasetOptions o;
    o.dir = r;
    const auto testImages = [&] {
        const Dataset d = Dataset::load(o);
        std::set<std::string> out;
        for (std::size_t i = 0; i < d.test.size(); ++i)
            out.insert(std::string(d.test.pixels.begin() + std::ptrdiff_t(i * 25), d.test.pixels.begin() + std::ptrdiff_t((i + 1) * 25)));
        return out;
    };
    const std::set<std::string> before = testImages();
    QCOMPARE(before.size(), std::size_t{4});
    writeImage(r + "/a/a_new.png", 40, 1, 5, 5); // 11 in a: still 2 held out
    writeImage(r + "/b/zz_new.png", 41, 1, 5, 5);
    const std::set<std::string> after = testImages();
    QCOMPARE(after.size(), std::size_t{4});
    // every image tested now was tested before, or is new
    const Bytes n0 = planar(40, 1, 5, 5), n1 = planar(41, 1, 5, 5);
    for (const std::string& img : after)
        QVERIFY(before.count(img) || img == std::string(n0.begin(), n0.end()) || img == std::string(n1.begin(), n1.end()));
}

// What the layout leaves unread is said (Dataset::notes): images at the root of a class tree, and
// folders beside train/ and test/ (tester 11: both went without a word); a tidy tree has no notes.
void TestImageFolders::unreadImagesAreNoted()
{
    const std::string t = path("img-loose");
    writeImageTree(t, {"a", "b"}, 4, 0, ".png", 1, 5, 5);
    DatasetOptions o;
    o.dir = t;
    QVERIFY(Dataset::load(o).notes.empty());
    writeImage(t + "/stray1.png", 20, 1, 5, 5);
    writeImage(t + "/stray2.png", 21, 1, 5, 5);
    Dataset d = Dataset::load(o);
    QCOMPARE(d.notes.size(), std::size_t{1});
    QVERIFY2(d.notes[0] == t + ": 2 images lie outside the class folders and are not read", d.notes[0].c_str());
    QCOMPARE(d.train.size() + d.test.size(), std::size_t{8});

    const std::string s = path("img-beside");
    writeImageTree(s + "/train", {"a", "b"}, 3, 0, ".png", 1, 5, 5);
    writeImageTree(s + "/test", {"a", "b"}, 1, 9, ".png", 1, 5, 5);
    o.dir = s;
    QVERIFY(Dataset::load(o).notes.empty());
    writeImageTree(s + "/extra_c", {"x"}, 2, 30, ".png", 1, 5, 5);
    writeImageTree(s + "/val", {"a"}, 1, 40, ".png", 1, 5, 5);
    d = Dataset::load(o);
    QCOMPARE(d.notes.size(), std::size_t{1});
    QVERIFY2(d.notes[0] == s + ": extra_c/, val/ beside train/ and test/ are not read", d.notes[0].c_str());
}
