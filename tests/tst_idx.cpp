// IDX reader and Dataset: broken files (each yields a typed error naming the file, without a
// huge allocation), and valid MNIST-layout folders (plain, .gz, both naming variants), the
// normalisation, and the seeded train/validation/test subsets.
#include "data/dataset.h"
#include "data/idx.h"
#include "util/errors.h"
#include "util/rng.h"

#include <QtTest>

#include "caught_error.h"

#include <zlib.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <set>

#include "alloc_tracker.h"

using namespace quantscope;
namespace fs = std::filesystem;

namespace {

// Reading a file of a few KB may allocate its size a few times over, plus zlib's window.
constexpr std::size_t kMaxAllocationForSmallFile = 1u << 20;
constexpr double kNormTol = 1e-6;      // mean/std of the pixels, float vs double
constexpr double kBatchMomentTol = 1e-4; // mean 0 / std 1 of a normalised batch
constexpr std::size_t kH = 6, kW = 5;  // small, non-square images

using Bytes = std::vector<std::uint8_t>;

Bytes idxBytes(std::uint8_t type, const std::vector<std::uint32_t>& dims, std::size_t payload, std::uint8_t fill = 7)
{
    Bytes b = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
    for (std::uint32_t d : dims)
        for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(d >> s));
    b.insert(b.end(), payload, fill);
    return b;
}

void writeBytes(const std::string& path, const Bytes& b)
{
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void writeGzip(const std::string& path, const Bytes& b)
{
    gzFile f = gzopen(path.c_str(), "wb");
    QVERIFY(f);
    QCOMPARE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())), static_cast<int>(b.size()));
    QCOMPARE(gzclose(f), Z_OK);
}

Bytes readBytes(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(f), {});
}

using quantscope::testing::Caught; // caught_error.h
using quantscope::testing::catchError;

// A labelled set whose images are all different: the first two pixels hold the index.
struct Set {
    std::vector<std::uint8_t> pixels;
    std::vector<std::uint8_t> labels;
};

Set makeSet(std::size_t n, std::uint64_t seed, std::uint8_t lo, std::uint8_t hi, std::size_t h = kH, std::size_t w = kW)
{
    Rng rng(seed);
    Set s;
    s.pixels.resize(n * h * w);
    for (std::size_t i = 0; i < n; ++i) {
        std::uint8_t* img = s.pixels.data() + i * h * w;
        for (std::size_t j = 0; j < h * w; ++j) img[j] = static_cast<std::uint8_t>(lo + rng.below(hi - lo + 1u));
        img[0] = static_cast<std::uint8_t>(i & 0xFF);
        img[1] = static_cast<std::uint8_t>(i >> 8);
        s.labels.push_back(static_cast<std::uint8_t>((i * 7) % 10));
    }
    return s;
}

// Index encoded in an image by makeSet.
std::size_t imageId(const LabeledImages& s, std::size_t i)
{
    const std::uint8_t* img = s.pixels.data() + i * s.imageBytes();
    return img[0] | (std::size_t(img[1]) << 8);
}

struct Folder {
    std::string dir;
    Set train, test;
    DatasetFiles files;
};

// stems: "train-images-idx3-ubyte" or the dotted "train-images.idx3-ubyte"; ext "" or ".gz".
Folder writeFolder(const std::string& dir, bool dotted, const std::string& ext, std::size_t nTrain = 50,
                   std::size_t nTest = 20)
{
    fs::create_directories(dir);
    Folder f;
    f.dir = dir;
    // Different pixel distributions: mixing the test set into the statistics would show.
    f.train = makeSet(nTrain, 1, 0, 255);
    f.test = makeSet(nTest, 2, 200, 255);
    const auto name = [&](const char* set, const char* kind, const char* idx) {
        return dir + "/" + set + "-" + kind + (dotted ? "." : "-") + idx + "-ubyte" + ext;
    };
    f.files = {name("train", "images", "idx3"), name("train", "labels", "idx1"), name("t10k", "images", "idx3"),
               name("t10k", "labels", "idx1")};
    writeIdx(f.files.trainImages, {std::uint32_t(nTrain), kH, kW}, f.train.pixels);
    writeIdx(f.files.trainLabels, {std::uint32_t(nTrain)}, f.train.labels);
    writeIdx(f.files.testImages, {std::uint32_t(nTest), kH, kW}, f.test.pixels);
    writeIdx(f.files.testLabels, {std::uint32_t(nTest)}, f.test.labels);
    return f;
}

std::vector<std::size_t> ids(const LabeledImages& s)
{
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < s.size(); ++i) out.push_back(imageId(s, i));
    return out;
}

} // namespace

class TestIdx : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();

    void brokenFile_data();
    void brokenFile();
    void missingOrUnreadable_data();
    void missingOrUnreadable();
    void sizeLimits();
    void brokenFolder_data();
    void brokenFolder();
    void differentSizesWithResize();

    void roundTrip_data();
    void roundTrip();
    void loadFolder_data();
    void loadFolder();
    void normalisation();
    void trainAndTestLimits();
    void validationSplit();
    void classNames_data();
    void classNames();

private:
    QTemporaryDir m_tmp;
    std::string path(const QString& name) const { return m_tmp.filePath(name).toStdString(); }
};

void TestIdx::initTestCase()
{
    QVERIFY(m_tmp.isValid());
    // The allocation probe sees std::vector's allocations (else the checks below prove nothing).
    g_largestAllocation = 0;
    { const std::vector<std::uint8_t> big(2 * kMaxAllocationForSmallFile); QVERIFY(big.size() > 0); }
    QVERIFY(g_largestAllocation >= 2 * kMaxAllocationForSmallFile);
}

void TestIdx::brokenFile_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<QByteArray>("content");
    QTest::addColumn<QString>("reader"); // images | labels
    QTest::addColumn<QString>("error");
    QTest::addColumn<QString>("says");

    const auto qb = [](const Bytes& b) { return QByteArray(reinterpret_cast<const char*>(b.data()), qsizetype(b.size())); };
    const Bytes good = idxBytes(0x08, {5, kH, kW}, 5 * kH * kW);
    // A valid gzip of a valid IDX file, and variations of it.
    writeIdx(path("good.gz"), {5, kH, kW}, Bytes(5 * kH * kW, 9));
    const Bytes gz = readBytes(path("good.gz"));
    Bytes gzCut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
    Bytes gzBadCrc = gz;
    gzBadCrc[gz.size() - 6] ^= 0xFF; // CRC32 sits in bytes -8..-5 of the trailer
    Bytes gzHugeSize = gz;           // ISIZE (last 4 bytes, little-endian) claims ~4 GB
    for (std::size_t i = gz.size() - 4; i < gz.size(); ++i) gzHugeSize[i] = 0xF0;
    writeIdx(path("truncated-inside.gz"), {5, kH, kW}, Bytes(5 * kH * kW - 3, 9)); // header/payload mismatch
    writeIdx(path("huge-inside.gz"), {4000000000u, 4000000000u, 4000000000u}, {});
    // 3,000 labels, then 8 MiB of zeros: 8 KB of gzip that inflated in full before the size check
    // (tester 12's 1 MB file took 1 GiB).
    Bytes bomb = idxBytes(0x08, {3000}, 3000);
    bomb.resize(bomb.size() + (8u << 20), 0);
    writeGzip(path("bomb.gz"), bomb);

    QTest::newRow("empty file") << "e-idx3-ubyte" << QByteArray() << "images" << "FormatError" << "empty";
    QTest::newRow("header cut in the magic") << "h1-idx3-ubyte" << qb({0, 0, 8}) << "images" << "FormatError"
                                             << "truncated header";
    QTest::newRow("header cut in the dims") << "h2-idx3-ubyte" << qb({0, 0, 8, 3, 0, 0, 0, 5, 0, 0}) << "images"
                                            << "FormatError" << "truncated header";
    QTest::newRow("payload cut short") << "p-idx3-ubyte" << qb(Bytes(good.begin(), good.end() - 11)) << "images"
                                       << "FormatError" << "(truncated?)";
    QTest::newRow("trailing bytes") << "t-idx3-ubyte" << qb(idxBytes(0x08, {5, kH, kW}, 5 * kH * kW + 1)) << "images"
                                    << "FormatError" << "trailing data";
    QTest::newRow("wrong magic") << "m-idx3-ubyte" << qb({0x50, 0x4B, 3, 4, 0, 0, 0, 0}) << "images" << "FormatError"
                                 << "bad magic";
    QTest::newRow("float element type") << "f-idx3-ubyte" << qb(idxBytes(0x0D, {1, 1, 1}, 4)) << "images"
                                        << "FormatError" << "element type 0x0D is not supported";
    QTest::newRow("labels given as images") << "l-idx1-ubyte" << qb(idxBytes(0x08, {5}, 5)) << "images"
                                            << "FormatError" << "3 dimension";
    QTest::newRow("gigantic dims 4e9^3") << "g-idx3-ubyte"
                                         << qb(idxBytes(0x08, {4000000000u, 4000000000u, 4000000000u}, 0))
                                         << "images" << "FormatError" << "4000000000x4000000000x4000000000";
    QTest::newRow("count 2^32-1, one image of payload")
        << "c-idx3-ubyte" << qb(idxBytes(0x08, {0xFFFFFFFFu, kH, kW}, kH * kW)) << "images" << "FormatError"
        << "4294967295";
    QTest::newRow("zero images") << "z-idx3-ubyte" << qb(idxBytes(0x08, {0, kH, kW}, 0)) << "images"
                                 << "FormatError" << "no images";
    QTest::newRow("implausible image size") << "i-idx3-ubyte" << qb(idxBytes(0x08, {1, 5000, 1}, 5000)) << "images"
                                            << "FormatError" << "not plausible";
    QTest::newRow("label out of range") << "o-idx1-ubyte" << qb({0, 0, 8, 1, 0, 0, 0, 4, 1, 9, 10, 2}) << "labels"
                                        << "FormatError" << "label 10 at index 2";
    QTest::newRow("zero labels") << "zl-idx1-ubyte" << qb(idxBytes(0x08, {0}, 0)) << "labels" << "FormatError"
                                 << "no labels";
    QTest::newRow("plain file named .gz") << "n-idx3-ubyte.gz" << qb(good) << "images" << "FormatError"
                                          << "not a gzip file";
    QTest::newRow("gzip stream cut short") << "gc-idx3-ubyte.gz" << qb(gzCut) << "images" << "FormatError"
                                           << "cut short";
    QTest::newRow("gzip CRC mismatch") << "gk-idx3-ubyte.gz" << qb(gzBadCrc) << "images" << "FormatError"
                                       << "corrupt gzip";
    QTest::newRow("gzip trailer claims 4 GB") << "gs-idx3-ubyte.gz" << qb(gzHugeSize) << "images"
                                              << "FormatError" << "corrupt gzip";
    QTest::newRow("gzip of a truncated IDX") << "gt-idx3-ubyte.gz" << qb(readBytes(path("truncated-inside.gz")))
                                             << "images" << "FormatError" << "(truncated?)";
    QTest::newRow("gzip with 8 MiB of trailing data") << "gb-idx1-ubyte.gz" << qb(readBytes(path("bomb.gz"))) << "labels"
                                                      << "FormatError" << "header says 3000 (3000 bytes) but the file decompresses to more";
    // A header past the size limit (3,000,000 images of 28x28, 2.35 GB) over 8 MiB of zeros: refused
    // at the header, not after inflating toward the limit (2 GiB and 14 s, tester 11).
    Bytes claims = idxBytes(0x08, {3000000u, 28, 28}, 0);
    claims.resize(claims.size() + (8u << 20), 0);
    writeGzip(path("claims.gz"), claims);
    QTest::newRow("gzip whose header passes the limit") << "gl-idx3-ubyte.gz" << qb(readBytes(path("claims.gz"))) << "images"
                                                        << "FormatError" << "header says 3000000x28x28, more than the limit";
    QTest::newRow("gzip of gigantic dims") << "gg-idx3-ubyte.gz" << qb(readBytes(path("huge-inside.gz")))
                                           << "images" << "FormatError" << "4000000000x4000000000x4000000000";
}

// Each broken file gives a FormatError whose message names the file and the problem, and the
// reader never allocates more than a small multiple of the file size.
void TestIdx::brokenFile()
{
    QFETCH(QString, file);
    QFETCH(QByteArray, content);
    QFETCH(QString, reader);
    QFETCH(QString, error);
    QFETCH(QString, says);
    const std::string p = path("broken/" + file);
    fs::create_directories(fs::path(p).parent_path());
    writeBytes(p, Bytes(content.begin(), content.end()));

    g_largestAllocation = 0;
    const Caught c = catchError([&] {
        if (reader == "images")
            readIdxImages(p);
        else
            readIdxLabels(p, 10);
    });
    const std::size_t largest = g_largestAllocation;
    QCOMPARE(c.type, error);
    QVERIFY2(c.message.contains(QString::fromStdString(p)), qPrintable(c.message));
    QVERIFY2(c.message.contains(says), qPrintable(c.message));
    QVERIFY2(largest < kMaxAllocationForSmallFile, qPrintable(QString("allocated %1 bytes").arg(largest)));
}

void TestIdx::missingOrUnreadable_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("says");
    QTest::newRow("missing file") << "does-not-exist-idx3-ubyte" << "no such file";
    QTest::newRow("missing .gz file") << "does-not-exist-idx3-ubyte.gz" << "no such file";
    QTest::newRow("a folder") << "a-folder" << "is a folder";
}

void TestIdx::missingOrUnreadable()
{
    QFETCH(QString, file);
    QFETCH(QString, says);
    const std::string p = path(file);
    if (file == "a-folder") fs::create_directories(p);
    const Caught c = catchError([&] { readIdxImages(p); });
    QCOMPARE(c.type, QString("IoError"));
    QVERIFY2(c.message.contains(QString::fromStdString(p)), qPrintable(c.message));
    QVERIFY2(c.message.contains(says), qPrintable(c.message));
}

// The byte limit holds both for the file on disk and for what a gzip inflates to (a small
// .gz can expand enormously).
void TestIdx::sizeLimits()
{
    constexpr std::uint64_t kLimit = 1000;
    const std::string plain = path("limit-plain"), gz = path("limit.gz");
    writeIdx(plain, {5000}, Bytes(5000, 1));
    writeIdx(gz, {5000}, Bytes(5000, 1));
    QVERIFY(fs::file_size(gz) < kLimit); // compresses well: the limit must apply after inflating

    Caught c = catchError([&] { readFileMaybeGzip(plain, kLimit); });
    QCOMPARE(c.type, QString("IoError"));
    QVERIFY2(c.message.contains(QString::fromStdString(plain)) && c.message.contains("limit"), qPrintable(c.message));
    c = catchError([&] { readFileMaybeGzip(gz, kLimit); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains(QString::fromStdString(gz)) && c.message.contains("more than 1000"),
             qPrintable(c.message));
    // Under the limit both read back the same bytes.
    QCOMPARE(readFileMaybeGzip(gz), readFileMaybeGzip(plain));
}

void TestIdx::brokenFolder_data()
{
    QTest::addColumn<QString>("breakage");
    QTest::addColumn<QString>("error");
    QTest::addColumn<QString>("blames"); // which file(s) the message must name: a DatasetFiles member or "dir"
    QTest::addColumn<QString>("says");
    QTest::newRow("labels count differs") << "count" << "FormatError" << "trainImages+trainLabels" << "holds 5 labels";
    QTest::newRow("test labels missing") << "missing" << "IoError" << "dir" << "t10k-labels-idx1-ubyte";
    QTest::newRow("test images of another size") << "size" << "FormatError" << "testImages" << "7x5";
    QTest::newRow("corrupt train labels") << "corrupt" << "FormatError" << "trainLabels" << "bad magic";
    QTest::newRow("no such folder") << "nofolder" << "IoError" << "dir" << "no such folder";
    QTest::newRow("validation takes every image") << "validation" << "ConfigError" << "" << "give a smaller --validation";
    // One stray test label made the model 16 classes, 6 never trained (tester 12).
    QTest::newRow("test label above every training label") << "testlabel" << "FormatError" << "testLabels"
                                                           << "label 15 (test image 4) is above every training label";
}

void TestIdx::brokenFolder()
{
    QFETCH(QString, breakage);
    QFETCH(QString, error);
    QFETCH(QString, blames);
    QFETCH(QString, says);
    Folder f = writeFolder(path("folder-" + breakage), false, ".gz");
    DatasetOptions opt;
    opt.dir = f.dir;
    if (breakage == "count") {
        writeIdx(f.files.trainLabels, {5}, Bytes(5, 1));
    } else if (breakage == "missing") {
        fs::remove(f.files.testLabels);
    } else if (breakage == "size") {
        writeIdx(f.files.testImages, {20, 7, kW}, Bytes(20 * 7 * kW, 3));
    } else if (breakage == "corrupt") {
        Bytes b = readFileMaybeGzip(f.files.trainLabels);
        b[0] = 0x42; // a valid gzip around an IDX file with a bad magic
        writeGzip(f.files.trainLabels, b);
    } else if (breakage == "nofolder") {
        opt.dir = f.dir + "/nope";
    } else if (breakage == "validation") {
        opt.validation = 50;
    } else if (breakage == "testlabel") {
        Bytes labels = f.test.labels;
        labels[3] = 15;
        writeIdx(f.files.testLabels, {std::uint32_t(labels.size())}, labels);
    }
    const Caught c = catchError([&] { Dataset::load(opt); });
    QCOMPARE(c.type, error);
    QVERIFY2(c.message.contains(says), qPrintable(c.message));
    const std::map<QString, std::string> named = {{"trainImages", f.files.trainImages},
                                                  {"trainLabels", f.files.trainLabels},
                                                  {"testImages", f.files.testImages},
                                                  {"testLabels", f.files.testLabels},
                                                  {"dir", opt.dir}};
    for (const QString& who : blames.split('+', Qt::SkipEmptyParts))
        QVERIFY2(c.message.contains(QString::fromStdString(named.at(who))),
                 qPrintable("message does not name " + who + ": " + c.message));
}

// Train and test images of different sizes load with --resize, which brings both to one size
// (it was refused before the resize could apply, tester 12); without it the error says so.
void TestIdx::differentSizesWithResize()
{
    Folder f = writeFolder(path("folder-sizes"), false, "");
    writeIdx(f.files.testImages, {20, 7, kW}, Bytes(20 * 7 * kW, 3));
    DatasetOptions opt;
    opt.dir = f.dir;
    const Caught c = catchError([&] { Dataset::load(opt); });
    QVERIFY2(c.message.contains("--resize"), qPrintable(c.message));
    opt.resize = parseResize("9x9");
    const Dataset d = Dataset::load(opt);
    QCOMPARE(d.train.height, std::size_t{9});
    QCOMPARE(d.test.height, std::size_t{9});
    QCOMPARE(d.test.width, std::size_t{9});
}

void TestIdx::roundTrip_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("plain") << "rt-idx3-ubyte";
    QTest::newRow("gzip") << "rt-idx3-ubyte.gz";
}

// writeIdx -> readIdxImages gives back the dims and bytes; a gzip is detected by name.
void TestIdx::roundTrip()
{
    QFETCH(QString, file);
    const Set s = makeSet(300, 9, 0, 255);
    writeIdx(path(file), {300, kH, kW}, s.pixels);
    const IdxArray a = readIdxImages(path(file));
    QCOMPARE(a.dims, (std::vector<std::uint32_t>{300, kH, kW}));
    QVERIFY(a.data == s.pixels);
    const Bytes raw = readBytes(path(file));
    QCOMPARE(raw.size() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b, file.endsWith(".gz"));
}

void TestIdx::loadFolder_data()
{
    QTest::addColumn<bool>("dotted");
    QTest::addColumn<QString>("ext");
    QTest::newRow("dashed plain") << false << "";
    QTest::newRow("dashed gz") << false << ".gz";
    QTest::newRow("dotted plain") << true << "";
    QTest::newRow("dotted gz") << true << ".gz";
}

// Dataset::locate finds both naming variants (plain and .gz); load reads back every image and
// label unchanged, in order.
void TestIdx::loadFolder()
{
    QFETCH(bool, dotted);
    QFETCH(QString, ext);
    const Folder f = writeFolder(path(QString("load-%1%2").arg(dotted).arg(ext)), dotted, ext.toStdString());
    const DatasetFiles found = Dataset::locate(f.dir);
    QCOMPARE(found.trainImages, f.files.trainImages);
    QCOMPARE(found.trainLabels, f.files.trainLabels);
    QCOMPARE(found.testImages, f.files.testImages);
    QCOMPARE(found.testLabels, f.files.testLabels);

    DatasetOptions opt;
    opt.dir = f.dir;
    const Dataset d = Dataset::load(opt);
    QCOMPARE(d.height(), kH);
    QCOMPARE(d.width(), kW);
    QCOMPARE(d.train.size(), f.train.labels.size());
    QCOMPARE(d.test.size(), f.test.labels.size());
    QCOMPARE(d.validation.size(), std::size_t(0));
    QVERIFY(d.train.pixels == f.train.pixels);
    QVERIFY(d.test.pixels == f.test.pixels);
    QVERIFY(std::equal(d.train.labels.begin(), d.train.labels.end(), f.train.labels.begin()));
    QVERIFY(std::equal(d.test.labels.begin(), d.test.labels.end(), f.test.labels.begin()));
    QCOMPARE(d.numClasses(), std::size_t(10));
}

// mean/stddev are those of the train pixels (scaled to [0,1]) only, and makeBatch applies them.
void TestIdx::normalisation()
{
    const Folder f = writeFolder(path("norm"), false, ".gz");
    DatasetOptions opt;
    opt.dir = f.dir;
    const Dataset d = Dataset::load(opt);
    double s = 0.0, s2 = 0.0;
    for (std::uint8_t p : f.train.pixels) {
        s += p / 255.0;
        s2 += (p / 255.0) * (p / 255.0);
    }
    const double n = static_cast<double>(f.train.pixels.size());
    const double mean = s / n, stddev = std::sqrt(s2 / n - mean * mean);
    QVERIFY2(std::abs(d.normalization.mean[0] - mean) < kNormTol, qPrintable(QString("mean %1 vs %2").arg(d.normalization.mean[0]).arg(mean)));
    QVERIFY2(std::abs(d.normalization.stddev[0] - stddev) < kNormTol, qPrintable(QString("std %1 vs %2").arg(d.normalization.stddev[0]).arg(stddev)));

    Tensor x;
    std::vector<std::int32_t> y;
    d.makeBatch(d.train, 0, d.train.size(), x, y);
    QCOMPARE(x.shape(), (Shape{d.train.size(), 1, kH, kW}));
    double bs = 0.0, bs2 = 0.0;
    for (float v : x.values()) {
        bs += v;
        bs2 += double(v) * v;
    }
    const double bm = bs / double(x.numel());
    QVERIFY2(std::abs(bm) < kBatchMomentTol, qPrintable(QString("batch mean %1").arg(bm)));
    QVERIFY2(std::abs(std::sqrt(bs2 / double(x.numel()) - bm * bm) - 1.0) < kBatchMomentTol, "batch std is not 1");
    QCOMPARE(x[7], static_cast<float>((f.train.pixels[7] / 255.0f - d.normalization.mean[0]) / d.normalization.stddev[0]));
    QCOMPARE(y[3], std::int32_t(f.train.labels[3]));

    // Indexed batches pick the requested images.
    const std::vector<std::size_t> pick = {4, 0, 4};
    d.makeBatch(d.test, pick, x, y);
    QCOMPARE(x.dim(0), std::size_t(3));
    QCOMPARE(y, (std::vector<std::int32_t>{f.test.labels[4], f.test.labels[0], f.test.labels[4]}));
    QCOMPARE(x[2 * kH * kW + 5], static_cast<float>((f.test.pixels[4 * kH * kW + 5] / 255.0f - d.normalization.mean[0]) / d.normalization.stddev[0]));
}

// trainLimit: a seeded subset of distinct train images; testLimit: the first N test images.
void TestIdx::trainAndTestLimits()
{
    const Folder f = writeFolder(path("limits"), false, "");
    DatasetOptions opt;
    opt.dir = f.dir;
    opt.trainLimit = 30;
    opt.testLimit = 7;
    opt.seed = 5;
    const Dataset a = Dataset::load(opt), b = Dataset::load(opt);
    QCOMPARE(a.train.size(), std::size_t(30));
    QCOMPARE(a.test.size(), std::size_t(7));
    const std::vector<std::size_t> idsA = ids(a.train);
    QCOMPARE(std::set<std::size_t>(idsA.begin(), idsA.end()).size(), std::size_t(30));
    for (std::size_t i = 0; i < a.train.size(); ++i) {
        QVERIFY(idsA[i] < 50);
        QCOMPARE(a.train.labels[i], std::int32_t(f.train.labels[idsA[i]]));
    }
    QCOMPARE(ids(a.test), (std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6}));
    QCOMPARE(ids(b.train), idsA); // same seed, same subset

    opt.seed = 6;
    QVERIFY(ids(Dataset::load(opt).train) != idsA); // another seed, another subset

    opt.trainLimit = 500; // more than there are: all of them
    opt.testLimit = 500;
    const Dataset all = Dataset::load(opt);
    QCOMPARE(all.train.size(), std::size_t(50));
    QCOMPARE(all.test.size(), std::size_t(20));
}

// validation: N train images move to a validation set; the two are disjoint, cover the train
// file, and are chosen by the seed.
void TestIdx::validationSplit()
{
    const Folder f = writeFolder(path("validation"), false, ".gz");
    DatasetOptions opt;
    opt.dir = f.dir;
    opt.validation = 10;
    opt.seed = 3;
    const Dataset a = Dataset::load(opt), b = Dataset::load(opt);
    QCOMPARE(a.train.size(), std::size_t(40));
    QCOMPARE(a.validation.size(), std::size_t(10));
    std::vector<std::size_t> all = ids(a.train);
    const std::vector<std::size_t> val = ids(a.validation);
    all.insert(all.end(), val.begin(), val.end());
    std::sort(all.begin(), all.end());
    for (std::size_t i = 0; i < 50; ++i) QCOMPARE(all[i], i);
    for (std::size_t i = 0; i < a.validation.size(); ++i)
        QCOMPARE(a.validation.labels[i], std::int32_t(f.train.labels[val[i]]));
    QCOMPARE(ids(b.validation), val);
    opt.seed = 4;
    QVERIFY(ids(Dataset::load(opt).validation) != val);

    // With a train limit too, the limit applies to what is left after the validation split.
    opt.seed = 3;
    opt.trainLimit = 25;
    const Dataset c = Dataset::load(opt);
    QCOMPARE(c.train.size(), std::size_t(25));
    QCOMPARE(ids(c.validation), val);
    for (std::size_t id : ids(c.train)) QVERIFY(std::find(val.begin(), val.end(), id) == val.end());
}

void TestIdx::classNames_data()
{
    QTest::addColumn<QString>("folder");
    QTest::addColumn<QString>("classesTxt");
    QTest::addColumn<QString>("first");
    QTest::addColumn<QString>("last");
    QTest::addColumn<int>("labelCount");
    QTest::addColumn<int>("classes"); // 0: a FormatError naming classes.txt
    QTest::newRow("digits by default") << "digits" << "" << "0" << "9" << 10 << 10;
    QTest::newRow("fashion by folder name") << "Fashion-MNIST" << "" << "T-shirt/top" << "Ankle boot" << 10 << 10;
    QTest::newRow("classes.txt wins") << "fashion-x" << "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n" << "a" << "j" << 10 << 10;
    QTest::newRow("classes.txt with CRLF") << "crlf" << "a\r\nb\r\nc\r\n" << "a" << "c" << 3 << 3;
    QTest::newRow("5 labels: 5 classes, not 10") << "five" << "" << "0" << "4" << 5 << 5;
    QTest::newRow("fashion, 4 labels") << "fashion-4" << "" << "T-shirt/top" << "Dress" << 4 << 4;
    QTest::newRow("15 labels (EMNIST-like)") << "letters" << "" << "0" << "14" << 15 << 15;
    QTest::newRow("classes.txt names 15") << "letters-named" << "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\n" << "a" << "o" << 15 << 15;
    QTest::newRow("classes.txt with 9 lines for 10 labels") << "other" << "a\nb\nc\nd\ne\nf\ng\nh\ni\n" << "" << "" << 10 << 0;
}

void TestIdx::classNames()
{
    QFETCH(QString, folder);
    QFETCH(QString, classesTxt);
    QFETCH(QString, first);
    QFETCH(QString, last);
    const std::string dir = path("names/" + folder);
    fs::create_directories(dir);
    const QByteArray txt = classesTxt.toUtf8();
    QFETCH(int, labelCount);
    QFETCH(int, classes);
    if (!txt.isEmpty()) writeBytes(dir + "/classes.txt", Bytes(txt.begin(), txt.end()));
    if (classes == 0) {
        try {
            guessClassNames(dir, std::size_t(labelCount));
            QFAIL("no error");
        } catch (const FormatError& e) {
            QVERIFY2(QString(e.what()).contains("classes.txt: names 9 classes, but the labels go up to 9"), e.what());
        }
        return;
    }
    const std::vector<std::string> names = guessClassNames(dir, std::size_t(labelCount));
    QCOMPARE(names.size(), std::size_t(classes));
    QCOMPARE(QString::fromStdString(names.front()), first);
    QCOMPARE(QString::fromStdString(names.back()), last);
}

QTEST_GUILESS_MAIN(TestIdx)
#include "tst_idx.moc"
