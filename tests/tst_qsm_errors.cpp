// Corrupted .qsm files (every truncation, flipped bytes, bad CRC, absurd sizes, unknown version,
// not a model, impossible graphs) must give a typed error naming the file, never a crash or a huge
// allocation.
#include "infer/model_runner.h"
#include "io/model_source.h"
#include "io/qsm.h"
#include "nn/add.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "qsm_fixtures.h"

#include <QtTest>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>

#include "alloc_tracker.h"

using namespace quantscope;
using namespace qsm_fixtures;
namespace fs = std::filesystem;

namespace {
constexpr std::size_t kMaxAllocationForCorruptFile = 1u << 20; // the tiny model's file is < 2 KB
} // namespace

class TestQsmErrors : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void cleanupTestCase();
    void everyTruncation();
    void flippedBytes();
    void badCrc();
    void absurdSizes_data();
    void absurdSizes();
    void unknownVersion();
    void namesAreUtf8();
    void softmaxNeedsVersion4();
    void hardtanhBoundsAndVersion6();
    void notAModel();
    void renamedModelFilesSayWhatTheyAre();
    void impossibleGraphs_data();
    void impossibleGraphs();
    void negativeVariance();
    void namedPipeIsRefused();
    void specErrors_data();
    void specErrors();

private:
    std::string m_dir;
    Bytes m_tiny; // .qsm bytes of the tiny int8 model
};

void TestQsmErrors::initTestCase()
{
    m_dir = fixtures::tempDir("qsm_errors");
    Dataset tinyData = fixtures::syntheticDataset(64, 16, 4, 4);
    m_tiny = encodeQsm(fixtures::quantize(fixtures::tinyModel(), tinyData, "int8").exported);
    QVERIFY(m_tiny.size() < 2048);
}

void TestQsmErrors::cleanupTestCase() { fs::remove_all(m_dir); }

void TestQsmErrors::everyTruncation()
{
    const std::size_t before = g_largestAllocation.exchange(0);
    for (std::size_t len = 0; len < m_tiny.size(); ++len) {
        Bytes cut(m_tiny.begin(), m_tiny.begin() + static_cast<std::ptrdiff_t>(len));
        const Caught raw = catchError([&] { decodeQsm(cut, "cut.qsm"); });
        QVERIFY2(raw.type == "FormatError", qPrintable(QString("length %1: %2 %3").arg(len).arg(raw.type, raw.message)));
        QVERIFY(raw.message.startsWith("cut.qsm: "));
        if (len >= kQsmHeaderSize) {
            fixHeader(cut); // the parser meets the end of the data
            const Caught parsed = catchError([&] { decodeQsm(cut, "cut.qsm"); });
            QVERIFY2(parsed.type == "FormatError", qPrintable(QString("length %1: %2 %3").arg(len).arg(parsed.type, parsed.message)));
        }
    }
    QVERIFY(g_largestAllocation.load() < kMaxAllocationForCorruptFile);
    g_largestAllocation.store(before);
}

void TestQsmErrors::flippedBytes()
{
    std::size_t accepted = 0;
    for (std::size_t i = 0; i < m_tiny.size(); ++i) {
        for (std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
            Bytes b = m_tiny;
            b[i] ^= mask;
            // As it is: the header checks or the CRC catch every flip, except a version flipped to
            // an older one whose layout this single-channel model shares (3 -> 2): that file must
            // then read as the same model.
            const Caught raw = catchError([&] { decodeQsm(b, "flip.qsm"); });
            std::uint16_t version = 0;
            std::memcpy(&version, b.data() + 8, 2);
            if (raw.type == "no error" && i == 8 && version == 2) {
                compareModels(decodeQsm(m_tiny, "tiny.qsm"), decodeQsm(b, "flip.qsm"));
                continue;
            }
            QVERIFY2(raw.type == "FormatError", qPrintable(QString("byte %1: %2 %3").arg(i).arg(raw.type, raw.message)));
            if (i < kQsmHeaderSize) continue;
            // With a valid CRC: a typed error, or a model that validates and runs.
            fixHeader(b);
            try {
                const ExportedModel m = decodeQsm(b, "flip.qsm");
                ++accepted;
                ModelRunner r(m);
                std::vector<std::int32_t> pred(4);
                std::vector<std::uint8_t> px(4 * m.channels * m.height * m.width, 100);
                r.predict(px.data(), 4, pred.data());
            } catch (const FormatError& e) {
                QVERIFY(QString(e.what()).startsWith("flip.qsm: "));
            } catch (const ConfigError&) {
                // e.g. a flipped scale the engine rejects as an inconsistent multiplier
            }
        }
    }
    qInfo("%zu of %zu CRC-corrected flips still decode to a valid model (e.g. a changed weight)", accepted,
          3 * (m_tiny.size() - kQsmHeaderSize));
}

void TestQsmErrors::badCrc()
{
    Bytes b = m_tiny;
    b[24] ^= 0x5A;
    const Caught c = catchError([&] { decodeQsm(b, "crc.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("CRC-32 mismatch"), qPrintable(c.message));
}

void TestQsmErrors::absurdSizes_data()
{
    QTest::addColumn<QString>("field");
    QTest::addColumn<QString>("expected");
    QTest::newRow("layer count") << "layers" << "layer count";
    QTest::newRow("class names") << "classes" << "class name count";
    QTest::newRow("tensor dimension") << "dim" << "tensor";
    QTest::newRow("scale count") << "scales" << "scale count";
    QTest::newRow("payload size") << "payload" << "truncated";
}

void TestQsmErrors::absurdSizes()
{
    QFETCH(QString, field);
    QFETCH(QString, expected);
    Bytes b = m_tiny;
    // Offsets follow docs/FORMAT.md: the tiny model's name "tiny" (2 + 4 bytes), C, H, W, classes,
    // mean, stddev, then the class name count.
    const std::size_t classCount = kQsmHeaderSize + 6 + 4 * 6;
    auto put32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); };
    auto find = [&](const char* name) {
        const std::string n(name);
        const auto it = std::search(b.begin(), b.end(), n.begin(), n.end());
        return static_cast<std::size_t>(it - b.begin()) + n.size();
    };
    if (field == "classes") {
        put32(classCount, 0xFFFFFFF0u);
    } else if (field == "layers") {
        // After the last class name, strategy/format/granularity strings, flags and the input quantization.
        const std::size_t at = find("channel") + 1 + 1 + 20;
        put32(at, 0x7FFFFFFFu);
    } else if (field == "dim") {
        // The first tensor ("weight" of fc1): name, rank (1 byte), then the first dimension.
        put32(find("weight") + 1, 0xFFFFFFFFu);
    } else if (field == "scales") {
        // weight: name, rank 2, dims (8), encoding, bits, signed, layout, reserved, qmin, qmax, group -> scale count
        put32(find("weight") + 1 + 8 + 1 + 4 + 12, 0x40000000u);
    } else {
        const std::uint64_t huge = 1ull << 40;
        std::memcpy(b.data() + 16, &huge, 8);
    }
    if (field != "payload") fixHeader(b);
    const std::size_t before = g_largestAllocation.exchange(0);
    const Caught c = catchError([&] { decodeQsm(b, "absurd.qsm"); });
    const std::size_t largest = g_largestAllocation.exchange(before);
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains(expected), qPrintable(c.message));
    QVERIFY2(largest < kMaxAllocationForCorruptFile, qPrintable(QString("allocated %1 bytes").arg(largest)));
}

// Names are UTF-8 text: a byte that is not is a FormatError (it was printed raw), and the writer
// stores a name that is not UTF-8 (a Latin-1 folder name) with U+FFFD in its place.
void TestQsmErrors::namesAreUtf8()
{
    Bytes b = m_tiny;
    const std::string name("tiny");
    const auto at = std::search(b.begin(), b.end(), name.begin(), name.end());
    QVERIFY(at != b.end());
    *(at + 2) = static_cast<std::uint8_t>(0xFF);
    fixHeader(b);
    const Caught c = catchError([&] { decodeQsm(b, "latin.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("model name is not UTF-8"), qPrintable(c.message));

    ExportedModel m = decodeQsm(m_tiny, "tiny.qsm");
    m.classNames.assign(m.classes, "ok");
    m.classNames[0] = "caf\xE9";       // Latin-1
    m.classNames[1] = "\xC3\xA9t\xC3\xA9"; // UTF-8, kept
    const ExportedModel back = decodeQsm(encodeQsm(m), "names.qsm");
    QCOMPARE(back.classNames[0], std::string("caf\xEF\xBF\xBD"));
    QCOMPARE(back.classNames[1], std::string("\xC3\xA9t\xC3\xA9"));
}

void TestQsmErrors::unknownVersion()
{
    Bytes b = m_tiny;
    const std::uint16_t v = kQsmVersion + 1;
    std::memcpy(b.data() + 8, &v, 2);
    const Caught c = catchError([&] { decodeQsm(b, "future.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("version " + QString::number(v)), qPrintable(c.message));
}

// Softmax (kind 12) came with version 4: a model ending in it round-trips, and the same bytes
// labelled version 3 are refused with the kind named.
void TestQsmErrors::softmaxNeedsVersion4()
{
    // An FP32 model: its bytes are those of version 3 but for the kind (integer tensors have a
    // flags byte since version 5).
    ExportedModel m = exportFloatModel(*fixtures::tinyModel(), "tiny", Normalization::uniform(0.5f, 0.25f, 1), {});
    QCOMPARE(m.layers.back().kind, LayerKind::LogSoftmax);
    m.layers.back().kind = LayerKind::Softmax;
    Bytes b = encodeQsm(m);
    QCOMPARE(decodeQsm(b, "softmax.qsm").layers.back().kind, LayerKind::Softmax);
    const std::uint16_t v3 = 3;
    std::memcpy(b.data() + 8, &v3, 2);
    fixHeader(b);
    const Caught c = catchError([&] { decodeQsm(b, "softmax-v3.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("unknown layer kind 12"), qPrintable(c.message));
}

// Hardtanh (kind 25) came within version 6: its bounds round-trip (an infinite one too), bounds
// no clamp can have are refused naming the layer, and the same bytes labelled version 5 are
// refused with the kind named.
void TestQsmErrors::hardtanhBoundsAndVersion6()
{
    ExportedModel m = exportFloatModel(*fixtures::tinyModel(), "tiny", Normalization::uniform(0.5f, 0.25f, 1), {});
    StoredLayer& act = m.layers.at(2);
    QCOMPARE(act.kind, LayerKind::ReLU);
    act.kind = LayerKind::Hardtanh;
    for (const auto& [lo, hi] : {std::pair{-0.25f, 1.5f}, std::pair{-std::numeric_limits<float>::infinity(), 2.0f}}) {
        act.alpha = lo, act.beta = hi;
        const ExportedModel back = decodeQsm(encodeQsm(m), "hardtanh.qsm");
        QCOMPARE(back.layers.at(2).kind, LayerKind::Hardtanh);
        QCOMPARE(back.layers.at(2).alpha, lo);
        QCOMPARE(back.layers.at(2).beta, hi);
    }
    act.alpha = 2.0f, act.beta = 1.0f;
    const Caught bad = catchError([&] { decodeQsm(encodeQsm(m), "hardtanh-bounds.qsm"); });
    QVERIFY2(bad.type == "FormatError" || bad.type == "ConfigError", qPrintable(bad.type));
    QVERIFY2(bad.message.contains("relu1") && bad.message.contains("min_val 2 is not below max_val 1"), qPrintable(bad.message));

    act.alpha = -1.0f, act.beta = 1.0f;
    Bytes b = encodeQsm(m);
    const std::uint16_t v5 = 5;
    std::memcpy(b.data() + 8, &v5, 2);
    fixHeader(b);
    const Caught c = catchError([&] { decodeQsm(b, "hardtanh-v5.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("unknown layer kind 25"), qPrintable(c.message));
}

void TestQsmErrors::notAModel()
{
    const std::string path = m_dir + "/text.qsm";
    writeFileAtomic(path, std::string_view("this is a text file, not a model, but it is long enough"));
    const Caught c = catchError([&] { readQsm(path); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY(c.message.contains("bad magic"));
    QVERIFY(c.message.contains("text.qsm"));
}

namespace {

// A small FP32 graph (1x4x4 input): conv c1 (1->2, 3x3, pad 1), relu r1, depthwise conv c2
// (groups 2, pad 1), add (c2 + r1), flatten, linear 32->10, log-softmax.
ExportedModel smallGraph()
{
    Model m("smallgraph", Shape{1, 4, 4});
    m.add(std::make_unique<Conv2d>("c1", 1, 2, 3, 1, 1));
    const std::size_t r1 = m.add(std::make_unique<ReLU>("r1"));
    const std::size_t c2 = m.add(std::make_unique<Conv2d>("c2", 2, 2, 3, 1, 1, 2, true));
    m.add(std::make_unique<Add>("add"), {c2, r1});
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc", 32, 10));
    m.add(std::make_unique<LogSoftmax>("log_softmax"));
    m.initParams(3);
    return exportFloatModel(m, "smallgraph", Normalization::uniform(0.5f, 0.25f, 1), {});
}

// Offset of the byte after layer `name`'s name string (its input count, in version 2).
std::size_t afterLayerName(const Bytes& b, const std::string& name)
{
    std::string pattern(2, '\0');
    const std::uint16_t n = static_cast<std::uint16_t>(name.size());
    std::memcpy(pattern.data(), &n, 2);
    pattern += name;
    const auto it = std::search(b.begin(), b.end(), pattern.begin(), pattern.end());
    if (it == b.end()) return 0;
    return static_cast<std::size_t>(it - b.begin()) + pattern.size();
}

} // namespace

void TestQsmErrors::impossibleGraphs_data()
{
    QTest::addColumn<QString>("damage");
    QTest::addColumn<QString>("expected");
    QTest::newRow("input not earlier than the layer") << "self-input" << "'add' reads activation 4, not an earlier layer's output";
    QTest::newRow("input far beyond the layers") << "far-input" << "'add' reads activation 4294967295";
    QTest::newRow("input count 0") << "count0" << "'r1' reads 0 inputs";
    QTest::newRow("input count 3") << "count3" << "'r1' reads 3 inputs";
    QTest::newRow("two inputs to a ReLU") << "relu2" << "ReLU 'r1' reads 2 inputs, it takes 1";
    QTest::newRow("groups not dividing the channels") << "groups" << "Conv2d 'c2': groups = 3 does not divide";
    QTest::newRow("groups 0") << "groups0" << "Conv2d 'c2': groups = 0 does not divide";
    QTest::newRow("Add of two different shapes") << "add-shapes" << "Add 'add' adds shapes";
}

void TestQsmErrors::impossibleGraphs()
{
    QFETCH(QString, damage);
    QFETCH(QString, expected);
    Bytes b = encodeQsm(smallGraph());
    QVERIFY(decodeQsm(b, "ok.qsm").layers.size() == 7);
    auto put32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); };
    const std::size_t add = afterLayerName(b, "add"), r1 = afterLayerName(b, "r1"), c2 = afterLayerName(b, "c2");
    QVERIFY(add && r1 && c2);
    QCOMPARE(b[add], std::uint8_t{2});
    if (damage == "self-input") {
        put32(add + 1 + 4, 4); // the Add (layer 3) reads its own output
    } else if (damage == "far-input") {
        put32(add + 1 + 4, 0xFFFFFFFFu);
    } else if (damage == "count0") {
        b[r1] = 0;
    } else if (damage == "count3") {
        b[r1] = 3;
    } else if (damage == "relu2") {
        // Two inputs (1, 1): four more bytes in the layer.
        b[r1] = 2;
        const std::uint32_t one = 1;
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(r1 + 1), reinterpret_cast<const std::uint8_t*>(&one),
                 reinterpret_cast<const std::uint8_t*>(&one) + 4);
    } else if (damage == "groups" || damage == "groups0") {
        // c2: count, one input, then in, out, kernel, stride, padding, groups.
        put32(c2 + 1 + 4 + 5 * 4, damage == "groups" ? 3 : 0);
    } else {
        put32(add + 1 + 4, 0); // c2 (2x4x4) + the model input (1x4x4)
    }
    fixHeader(b);
    const std::string path = m_dir + "/graph-" + damage.toStdString() + ".qsm";
    writeFileAtomic(path, b);
    const Caught c = catchError([&] { readQsm(path); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.startsWith(QString::fromStdString(path) + ": "), qPrintable(c.message));
    QVERIFY2(c.message.contains(expected), qPrintable(c.message));
}

// A BatchNorm2d whose running_var holds a negative value (a flipped sign; the CRC fixed) is refused
// at load, naming the tensor, as a non-finite one is: eval ran it and every output of the channel
// was NaN (tester 22: exit 4, "the model's values overflow").
void TestQsmErrors::negativeVariance()
{
    Model m("bn", Shape{1, 4, 4});
    m.add(std::make_unique<Conv2d>("c1", 1, 2, 3, 1, 1));
    m.add(std::make_unique<BatchNorm2d>("bn1", 2));
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc", 32, 10));
    m.initParams(5);
    ExportedModel e = exportFloatModel(m, "bn", Normalization::uniform(0.5f, 0.25f, 1), {});
    const float marker = 0.8765432f;
    for (StoredLayer& l : e.layers)
        if (l.name == "bn1") l.tensors[3].values[1] = marker;
    Bytes b = encodeQsm(e);
    QVERIFY(decodeQsm(b, "ok.qsm").layers.size() == 4);
    const auto* mb = reinterpret_cast<const std::uint8_t*>(&marker);
    const auto at = std::search(b.begin(), b.end(), mb, mb + 4);
    QVERIFY(at != b.end());
    const float negative = -0.25f;
    std::memcpy(&*at, &negative, 4);
    fixHeader(b);
    const std::string path = m_dir + "/negative-variance.qsm";
    writeFileAtomic(path, b);
    const Caught c = catchError([&] { readQsm(path); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.startsWith(QString::fromStdString(path) + ": ") &&
                 c.message.contains("BatchNorm2d 'bn1' running_var holds a negative variance (-0.25 at element 1)"),
             qPrintable(c.message));
}

// A named pipe given as the model is refused at once: opening it waited for a writer for ever
// (tester 22; the plan reader and ONNX's take the same readFileBytes).
void TestQsmErrors::namedPipeIsRefused()
{
    const std::string path = m_dir + "/pipe.qsm";
    QCOMPARE(::mkfifo(path.c_str(), 0600), 0);
    const Caught c = catchError([&] { readQsm(path); });
    QCOMPARE(c.type, QString("IoError"));
    QVERIFY2(c.message == QString::fromStdString(path) + ": is a named pipe or socket, not a file", qPrintable(c.message));
    fs::remove(path);
}

// Files written from docs/FORMAT.md by hand, outside QuantScope's writer (tests/data/qsm_spec_errors):
// each breaks one rule the format states, which the reader loaded before.
void TestQsmErrors::specErrors_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("expected"); // empty: the file is valid
    QTest::newRow("group-wise base") << "G_layout2_ok" << "";
    QTest::newRow("group size on a per-tensor layout") << "G_on_tensor" << "has group size 5 on a scale layout that is not group-wise";
    QTest::newRow("int32 bias beside group-wise weights") << "G_layout2_intbias" << "group-wise weights take a float32 bias";
    QTest::newRow("LogSoftmax in the middle") << "logsoftmax_middle" << "LogSoftmax 'ls' is not the last layer";
    QTest::newRow("Softmax in the middle") << "softmax_middle" << "Softmax 'sm' is not the last layer";
    QTest::newRow("NaN activation scale") << "actscale_nan" << "output quantization: scale is nan, not a positive number";
}

void TestQsmErrors::specErrors()
{
    QFETCH(QString, file);
    QFETCH(QString, expected);
    const std::string path = QS_TEST_DATA "/qsm_spec_errors/" + file.toStdString() + ".qsm";
    if (expected.isEmpty()) {
        QVERIFY(!readQsm(path).layers.empty());
        return;
    }
    const Caught c = catchError([&] { readQsm(path); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.startsWith(QString::fromStdString(path) + ": "), qPrintable(c.message));
    QVERIFY2(c.message.contains(expected), qPrintable(c.message));
}

// A .qsm named .onnx and an ONNX file named .qsm: the error says which kind the file is (it said
// "the protobuf does not parse" and "bad magic number").
void TestQsmErrors::renamedModelFilesSayWhatTheyAre()
{
    const std::string qsmAsOnnx = m_dir + "/model-qsm.onnx", onnxAsQsm = m_dir + "/model-onnx.qsm";
    writeQsm(qsmAsOnnx, smallGraph());
    std::filesystem::copy_file(QS_TEST_DATA "/../onnx_import/seqview_op13_fold.onnx", onnxAsQsm,
                               std::filesystem::copy_options::overwrite_existing);
    const Caught a = catchError([&] { readModelFile(qsmAsOnnx); });
    QCOMPARE(a.type, QString("FormatError"));
    QVERIFY2(a.message.contains("model-qsm.onnx: is a QuantScope .qsm model, not ONNX: rename it"), qPrintable(a.message));
    const Caught b = catchError([&] { readModelFile(onnxAsQsm); });
    QCOMPARE(b.type, QString("FormatError"));
    QVERIFY2(b.message.contains("model-onnx.qsm: is an ONNX model, not a QuantScope .qsm: rename it"), qPrintable(b.message));
}

QTEST_GUILESS_MAIN(TestQsmErrors)
#include "tst_qsm_errors.moc"
