// CIFAR-10/100 binary folders (data/cifar.cpp) generated in a temporary folder and read back
// through layout detection: records, labels and pixels as stored, and the classes (their names
// files, or as many as the labels use). Their broken variants are rows of tst_datasets' broken().
#include "data/dataset.h"

#include <QtTest>

#include <filesystem>
#include <string>

#include "dataset_fixtures.h"

using namespace quantscope;
namespace fs = std::filesystem;

using namespace dataset_fixtures;

class TestCifar : public QObject {
    Q_OBJECT

    QTemporaryDir m_tmp;
    std::string path(const std::string& rel) const { return (fs::path(m_tmp.path().toStdString()) / rel).string(); }

private slots:
    void cifar10();
    void cifar100();
    void cifarSubsetClasses();
};

// CIFAR-10: five training batches (fewer here), records planar as stored, names from batches.meta.txt.
void TestCifar::cifar10()
{
    const std::string d = path("cifar10/cifar-10-batches-bin"); // as the tarball unpacks
    writeBytes(d + "/data_batch_1.bin", cifarRecords(0, 30, 10, false));
    writeBytes(d + "/data_batch_2.bin", cifarRecords(30, 20, 10, false));
    writeBytes(d + "/test_batch.bin", cifarRecords(100, 12, 10, false));
    writeText(d + "/batches.meta.txt", "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n");
    DatasetOptions o;
    o.dir = path("cifar10"); // the parent: detection looks one folder down
    const Dataset ds = Dataset::load(o);
    QCOMPARE(ds.layout, DatasetLayout::Cifar10);
    QCOMPARE(ds.channels(), std::size_t{3});
    QCOMPARE(ds.height(), std::size_t{32});
    QCOMPARE(ds.width(), std::size_t{32});
    QCOMPARE(ds.train.size(), std::size_t{50});
    QCOMPARE(ds.test.size(), std::size_t{12});
    QCOMPARE(ds.numClasses(), std::size_t{10});
    QCOMPARE(ds.classNames[1], std::string("car"));
    for (std::size_t i : {std::size_t{0}, std::size_t{29}, std::size_t{30}, std::size_t{49}}) {
        QCOMPARE(ds.train.labels[i], static_cast<std::int32_t>(i % 10));
        const Bytes want = planar(i, 3, 32, 32);
        QVERIFY(std::equal(want.begin(), want.end(), ds.train.pixels.begin() + static_cast<std::ptrdiff_t>(i * 3072)));
    }
    QCOMPARE(ds.test.labels[5], static_cast<std::int32_t>(105 % 10));
}

// CIFAR-100: the fine label (second byte) is the class; 100 classes named by fine_label_names.txt.
void TestCifar::cifar100()
{
    const std::string d = path("cifar100");
    writeBytes(d + "/train.bin", cifarRecords(0, 40, 100, true));
    writeBytes(d + "/test.bin", cifarRecords(200, 10, 100, true));
    std::string names;
    for (int i = 0; i < 100; ++i) names += "fine" + std::to_string(i) + "\n";
    writeText(d + "/fine_label_names.txt", names);
    DatasetOptions o;
    o.dir = d;
    const Dataset ds = Dataset::load(o);
    QCOMPARE(ds.layout, DatasetLayout::Cifar100);
    QCOMPARE(ds.numClasses(), std::size_t{100});
    QCOMPARE(ds.classNames[37], std::string("fine37"));
    QCOMPARE(ds.train.labels[37], 37); // fine, not the coarse 37 % 20
    QCOMPARE(ds.test.labels[3], 203 % 100);
    const Bytes want = planar(39, 3, 32, 32);
    QVERIFY(std::equal(want.begin(), want.end(), ds.train.pixels.begin() + 39 * 3072));
}

// A CIFAR folder whose labels use only some of the format's classes has as many classes as its
// labels use, named by its names file when it has one (a 5-line batches.meta.txt was refused for
// "10 classes", tester 11) and else by the first CIFAR-10 names (numbers for CIFAR-100).
void TestCifar::cifarSubsetClasses()
{
    const auto load = [&](const std::string& d) {
        DatasetOptions o;
        o.dir = d;
        return Dataset::load(o);
    };
    const std::string named = path("cifar-subset-named");
    writeBytes(named + "/data_batch_1.bin", cifarRecords(0, 20, 5, false));
    writeBytes(named + "/test_batch.bin", cifarRecords(20, 10, 5, false));
    writeText(named + "/batches.meta.txt", "cat\ndog\nfox\nowl\nbee\n");
    const Dataset a = load(named);
    QCOMPARE(a.numClasses(), std::size_t{5});
    QCOMPARE(a.classNames[4], std::string("bee"));

    const std::string bare = path("cifar-subset-bare");
    writeBytes(bare + "/data_batch_1.bin", cifarRecords(0, 20, 5, false));
    writeBytes(bare + "/test_batch.bin", cifarRecords(20, 10, 5, false));
    const Dataset b = load(bare);
    QCOMPARE(b.numClasses(), std::size_t{5});
    QCOMPARE(b.classNames[0], std::string("airplane"));
    QCOMPARE(b.classNames[4], std::string("deer"));

    // ten names for five labels: the names file says what the classes are
    writeText(bare + "/batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n");
    QCOMPARE(load(bare).numClasses(), std::size_t{10});

    const std::string hundred = path("cifar100-subset");
    writeBytes(hundred + "/train.bin", cifarRecords(0, 21, 7, true));
    writeBytes(hundred + "/test.bin", cifarRecords(0, 7, 7, true));
    const Dataset c = load(hundred);
    QCOMPARE(c.layout, DatasetLayout::Cifar100);
    QCOMPARE(c.numClasses(), std::size_t{7});
    QCOMPARE(c.classNames[6], std::string("6"));
}

QTEST_APPLESS_MAIN(TestCifar)
#include "tst_cifar.moc"
