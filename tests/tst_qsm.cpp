// The .qsm file: FP32 and integer round trips (the reloaded model predicts exactly what was
// saved), packed sizes against FP32, atomic writes, FP32 reload for PTQ, and corrupted files
// (every truncation, flipped bytes, bad CRC, absurd sizes, unknown version) that must give a
// typed error naming the file, never a crash or a huge allocation.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/qsm.h"
#include "nn/batchnorm2d.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include <QtTest>

#include <zlib.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>

#include "alloc_tracker.h"

using namespace quantscope;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

constexpr double kInt8MaxSizeRatio = 0.27;  // issue 5: .qsm int8 <= 27% of FP32
constexpr double kInt4MaxSizeRatio = 0.15;  // issue 5: .qsm int4 <= 15% of FP32
constexpr std::size_t kMaxAllocationForCorruptFile = 1u << 20; // the tiny model's file is < 2 KB
// The file's fake-quant reference against QuantSim itself: they differ only in how the bias is
// rounded (int32 at s_in * s_w) and, for folded BatchNorm, in float summation order.
constexpr double kReferenceAgreement = 0.97;

struct Caught {
    QString type, message;
};

template <typename F>
Caught catchError(F&& f)
{
    try {
        f();
    } catch (const FormatError& e) {
        return {"FormatError", e.what()};
    } catch (const IoError& e) {
        return {"IoError", e.what()};
    } catch (const ConfigError& e) {
        return {"ConfigError", e.what()};
    } catch (const std::exception& e) {
        return {"other", e.what()};
    }
    return {"no error", {}};
}

// Rewrites the header's payload size and CRC so the parser, not the CRC check, meets the damage.
void fixHeader(Bytes& b)
{
    const std::uint64_t payload = b.size() - kQsmHeaderSize;
    std::memcpy(b.data() + 16, &payload, 8);
    const std::uint32_t crc = static_cast<std::uint32_t>(crc32(0, b.data() + kQsmHeaderSize, static_cast<uInt>(payload)));
    std::memcpy(b.data() + 24, &crc, 4);
}

void compareModels(const ExportedModel& a, const ExportedModel& b)
{
    QCOMPARE(b.modelName, a.modelName);
    QCOMPARE(b.quantized, a.quantized);
    QCOMPARE(b.classNames, a.classNames);
    QCOMPARE(b.mean, a.mean);
    QCOMPARE(b.stddev, a.stddev);
    QCOMPARE(b.inputQuant, a.inputQuant);
    QCOMPARE(b.layers.size(), a.layers.size());
    for (std::size_t i = 0; i < a.layers.size(); ++i) {
        const StoredLayer &x = a.layers[i], &y = b.layers[i];
        QCOMPARE(y.name, x.name);
        QCOMPARE(y.kind, x.kind);
        QCOMPARE(y.outputQuant, x.outputQuant);
        QCOMPARE(y.bnFolded, x.bnFolded);
        QCOMPARE(y.tensors.size(), x.tensors.size());
        for (std::size_t t = 0; t < x.tensors.size(); ++t) {
            QCOMPARE(y.tensors[t].shape, x.tensors[t].shape);
            QCOMPARE(y.tensors[t].values, x.tensors[t].values);
            QCOMPARE(y.tensors[t].q, x.tensors[t].q);
            QCOMPARE(y.tensors[t].scales, x.tensors[t].scales);
            QCOMPARE(y.tensors[t].zeroPoints, x.tensors[t].zeroPoints);
            QCOMPARE(y.tensors[t].bits, x.tensors[t].bits);
        }
    }
}

std::vector<std::int32_t> predict(const ExportedModel& m, const LabeledImages& set)
{
    ModelRunner r(m);
    return evaluateRunner(r, set).predictions;
}

} // namespace

class TestQsm : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void cleanupTestCase();
    void fp32RoundTrip_data();
    void fp32RoundTrip();
    void integerRoundTrip_data();
    void integerRoundTrip();
    void packing_data();
    void packing();
    void sizesAgainstFp32();
    void atomicWrite();
    void fp32ReloadForPtq();
    void everyTruncation();
    void flippedBytes();
    void badCrc();
    void absurdSizes_data();
    void absurdSizes();
    void unknownVersion();
    void notAModel();

private:
    Dataset m_data;
    std::string m_dir;
    Bytes m_tiny; // .qsm bytes of the tiny int8 model
};

void TestQsm::initTestCase()
{
    m_data = fixtures::syntheticDataset(256, 64);
    m_dir = fixtures::tempDir("qsm");
    Dataset tinyData = fixtures::syntheticDataset(64, 16, 4, 4);
    m_tiny = encodeQsm(fixtures::quantize(fixtures::tinyModel(), tinyData, "int8").exported);
    QVERIFY(m_tiny.size() < 2048);
}

void TestQsm::cleanupTestCase() { fs::remove_all(m_dir); }

void TestQsm::fp32RoundTrip_data()
{
    QTest::addColumn<QString>("preset");
    for (const char* p : {"seed-cnn", "seed-cnn-bn", "lenet5", "mlp"}) QTest::newRow(p) << QString(p);
}

void TestQsm::fp32RoundTrip()
{
    QFETCH(QString, preset);
    auto model = makeModel(preset.toStdString(), 1, 28, 28, 10, 11);
    // Non-trivial BatchNorm statistics, so a reader that dropped them would show.
    for (std::size_t i = 0; i < model->size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&model->layer(i))) {
            for (float& v : bn->runningMean().values()) v = 0.1f;
            for (float& v : bn->runningVar().values()) v = 2.0f;
        }
    const ExportedModel m = exportFloatModel(*model, preset.toStdString(), m_data.mean, m_data.stddev, m_data.classNames);
    const std::string path = m_dir + "/" + preset.toStdString() + ".qsm";
    writeQsm(path, m);
    const ExportedModel back = readQsm(path);
    compareModels(m, back);
    // The reloaded float model computes bit-identical outputs.
    auto rebuilt = buildModel(back);
    Tensor x;
    std::vector<std::int32_t> y;
    m_data.makeBatch(m_data.test, 0, 32, x, y);
    RunContext ctx;
    const Tensor a = model->forward(x, ctx);
    const Tensor& b = rebuilt->forward(x, ctx);
    QCOMPARE(b.values(), a.values());
}

void TestQsm::integerRoundTrip_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn int8 channel") << "seed-cnn" << "int8" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn int8 tensor int8 acts") << "seed-cnn-bn" << "int8" << "tensor" << "int8";
    QTest::newRow("lenet5 int4 channel") << "lenet5" << "int4" << "channel" << "uint8";
    QTest::newRow("mlp int2 layer") << "mlp" << "int2" << "layer" << "uint8";
    QTest::newRow("mlp int4 group:32") << "mlp" << "int4" << "group:32" << "uint8";
    QTest::newRow("mlp uint8 weights") << "mlp" << "uint8" << "channel" << "uint8";
    QTest::newRow("mlp int12 weights") << "mlp" << "int12" << "channel" << "uint4";
}

void TestQsm::integerRoundTrip()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    const auto q = fixtures::quantizePreset(preset.toStdString(), m_data, format.toStdString(), granularity.toStdString(),
                                            act.toStdString());
    const std::string path = m_dir + "/int.qsm";
    writeQsm(path, q.exported);
    const ExportedModel back = readQsm(path);
    compareModels(q.exported, back);
    // Export, load, evaluate: identical predictions from the saved and the loaded model.
    QCOMPARE(predict(back, m_data.test), predict(q.exported, m_data.test));
    // And the stored integers are the simulation's: the fake-quant reference of the file predicts
    // what QuantSim predicts (biases aside, which the file keeps at the accumulator scale).
    std::vector<std::int32_t> simPred;
    evaluate(*q.model, m_data, m_data.test, 64, q.sim.get(), &simPred);
    RunnerOptions ro;
    ro.kind = RunnerKind::Reference;
    ModelRunner ref(back, ro);
    const std::vector<std::int32_t> refPred = evaluateRunner(ref, m_data.test).predictions;
    std::size_t same = 0;
    for (std::size_t i = 0; i < simPred.size(); ++i) same += simPred[i] == refPred[i];
    QVERIFY2(static_cast<double>(same) >= kReferenceAgreement * static_cast<double>(simPred.size()), qPrintable(QString("%1 of %2 agree").arg(same).arg(simPred.size())));
}

void TestQsm::packing_data()
{
    QTest::addColumn<int>("bits");
    QTest::addColumn<bool>("isSigned");
    for (int b : {2, 3, 4, 5, 8, 12, 16}) {
        QTest::newRow(qPrintable(QString("int%1").arg(b))) << b << true;
        QTest::newRow(qPrintable(QString("uint%1").arg(b))) << b << false;
    }
}

void TestQsm::packing()
{
    QFETCH(int, bits);
    QFETCH(bool, isSigned);
    const int lo = isSigned ? -(1 << (bits - 1)) : 0, hi = isSigned ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    std::vector<std::int32_t> q;
    for (int v = lo; v <= hi && q.size() < 5000; ++v) q.push_back(v);
    q.push_back(lo); // odd count: the last byte of int4/int2 is partly used
    Bytes packed;
    packInts(q, bits, packed);
    QCOMPARE(packed.size(), static_cast<std::size_t>(packedBytes(q.size(), bits)));
    if (bits == 4) QCOMPARE(packed.size(), (q.size() + 1) / 2);
    if (bits == 2) QCOMPARE(packed.size(), (q.size() + 3) / 4);
    std::vector<std::int32_t> back;
    unpackInts(packed.data(), q.size(), bits, isSigned, back);
    QCOMPARE(back, q);
}

void TestQsm::sizesAgainstFp32()
{
    auto fp32Model = makeModel("seed-cnn", 1, 28, 28, 10, 3);
    const std::size_t fp32 = encodeQsm(exportFloatModel(*fp32Model, "seed-cnn", 0.3f, 0.3f, m_data.classNames)).size();
    const std::size_t int8 = encodeQsm(fixtures::quantizePreset("seed-cnn", m_data, "int8").exported).size();
    const std::size_t int4 = encodeQsm(fixtures::quantizePreset("seed-cnn", m_data, "int4").exported).size();
    const std::size_t int2 = encodeQsm(fixtures::quantizePreset("seed-cnn", m_data, "int2").exported).size();
    qInfo("seed-cnn .qsm: fp32 %zu bytes, int8 %zu (%.1f%%), int4 %zu (%.1f%%), int2 %zu (%.1f%%)", fp32, int8,
          100.0 * int8 / fp32, int4, 100.0 * int4 / fp32, int2, 100.0 * int2 / fp32);
    QVERIFY(static_cast<double>(int8) <= kInt8MaxSizeRatio * static_cast<double>(fp32));
    QVERIFY(static_cast<double>(int4) <= kInt4MaxSizeRatio * static_cast<double>(fp32));
    QVERIFY(int2 < int4 && int4 < int8);
}

void TestQsm::atomicWrite()
{
    const std::string path = m_dir + "/atomic.qsm";
    const ExportedModel small = decodeQsm(m_tiny, "tiny");
    writeQsm(path, small);
    const auto before = fs::file_size(path);
    // A failing write (missing folder) names the file, leaves nothing behind.
    const Caught c = catchError([&] { writeQsm(m_dir + "/no/such/folder/x.qsm", small); });
    QCOMPARE(c.type, QString("IoError"));
    QVERIFY(c.message.contains("no/such/folder/x.qsm"));
    // Overwriting replaces the file whole, and no temporary file stays next to it.
    const auto q = fixtures::quantizePreset("mlp", m_data, "int8");
    writeQsm(path, q.exported);
    QVERIFY(fs::file_size(path) != before);
    for (const auto& e : fs::directory_iterator(m_dir)) QVERIFY2(e.path().string().find(".tmp-") == std::string::npos, e.path().c_str());
    compareModels(q.exported, readQsm(path));
    const Caught missing = catchError([&] { readQsm(m_dir + "/missing.qsm"); });
    QCOMPARE(missing.type, QString("IoError"));
    QVERIFY(missing.message.contains("missing.qsm"));
}

void TestQsm::fp32ReloadForPtq()
{
    // Save a trained FP32 model, reload it, quantize the reloaded model (PTQ) and run it on the
    // integer engine: the reloaded FP32 model predicts exactly what the original did.
    TrainConfig cfg;
    cfg.model = "seed-cnn-bn";
    cfg.epochs = 1;
    Trainer t(cfg, m_data);
    t.run();
    const std::string path = m_dir + "/trained-fp32.qsm";
    writeQsm(path, exportFloatModel(t.model(), cfg.model, m_data.mean, m_data.stddev, m_data.classNames));
    auto reloaded = buildModel(readQsm(path));
    std::vector<std::int32_t> a, b;
    evaluate(t.model(), m_data, m_data.test, 64, nullptr, &a);
    evaluate(*reloaded, m_data, m_data.test, 64, nullptr, &b);
    QCOMPARE(b, a);
    const auto q = fixtures::quantize(std::move(reloaded), m_data, "int8");
    QVERIFY(IntEngine::unsupportedReason(q.exported).empty());
    ModelRunner r(q.exported);
    QVERIFY(r.isInteger());
    QCOMPARE(evaluateRunner(r, m_data.test).count, m_data.test.size());
}

void TestQsm::everyTruncation()
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

void TestQsm::flippedBytes()
{
    std::size_t accepted = 0;
    for (std::size_t i = 0; i < m_tiny.size(); ++i) {
        for (std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
            Bytes b = m_tiny;
            b[i] ^= mask;
            // As it is: the header checks or the CRC catch every flip.
            const Caught raw = catchError([&] { decodeQsm(b, "flip.qsm"); });
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

void TestQsm::badCrc()
{
    Bytes b = m_tiny;
    b[24] ^= 0x5A;
    const Caught c = catchError([&] { decodeQsm(b, "crc.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("CRC-32 mismatch"), qPrintable(c.message));
}

void TestQsm::absurdSizes_data()
{
    QTest::addColumn<QString>("field");
    QTest::addColumn<QString>("expected");
    QTest::newRow("layer count") << "layers" << "layer count";
    QTest::newRow("class names") << "classes" << "class name count";
    QTest::newRow("tensor dimension") << "dim" << "tensor";
    QTest::newRow("scale count") << "scales" << "scale count";
    QTest::newRow("payload size") << "payload" << "truncated";
}

void TestQsm::absurdSizes()
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

void TestQsm::unknownVersion()
{
    Bytes b = m_tiny;
    const std::uint16_t v = 3;
    std::memcpy(b.data() + 8, &v, 2);
    const Caught c = catchError([&] { decodeQsm(b, "v3.qsm"); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY2(c.message.contains("version 3"), qPrintable(c.message));
}

void TestQsm::notAModel()
{
    const std::string path = m_dir + "/text.qsm";
    writeFileAtomic(path, std::string_view("this is a text file, not a model, but it is long enough"));
    const Caught c = catchError([&] { readQsm(path); });
    QCOMPARE(c.type, QString("FormatError"));
    QVERIFY(c.message.contains("bad magic"));
    QVERIFY(c.message.contains("text.qsm"));
}

QTEST_GUILESS_MAIN(TestQsm)
#include "tst_qsm.moc"
