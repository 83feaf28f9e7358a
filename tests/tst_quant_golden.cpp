// Quantization numerics against PyTorch 1.13 (tests/data/001..014): fake quantization per tensor
// and per channel with straight-through masks, min-max / per-channel / moving-average observers,
// and fp16 / bf16 casts. All of these must match bit for bit: they are integer grids and
// correctly rounded casts, so any difference is a bug, not rounding noise.
#include "quant/float_cast.h"
#include "quant/format.h"
#include "quant/observer.h"
#include "quant/quantize.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <bit>
#include <cstring>

using namespace quantscope;

namespace {

// Exact comparisons: 0 absolute, 0 relative tolerance.
constexpr double kExact = 0.0;

// Bitwise equality, except that any NaN matches any NaN (payloads differ between conversions).
QString firstBitMismatch(const Tensor& actual, const Tensor& expected)
{
    if (actual.numel() != expected.numel()) return QStringLiteral("sizes differ");
    for (std::size_t i = 0; i < actual.numel(); ++i) {
        const float a = actual[i], e = expected[i];
        if (std::isnan(a) && std::isnan(e)) continue;
        if (std::bit_cast<std::uint32_t>(a) != std::bit_cast<std::uint32_t>(e))
            return QStringLiteral("element %1: got %2 (0x%3), expected %4 (0x%5)")
                .arg(i)
                .arg(double(a), 0, 'g', 9)
                .arg(std::bit_cast<std::uint32_t>(a), 8, 16, QChar('0'))
                .arg(double(e), 0, 'g', 9)
                .arg(std::bit_cast<std::uint32_t>(e), 8, 16, QChar('0'));
    }
    return {};
}

Tensor maskAsTensor(const std::vector<std::uint8_t>& m, const Shape& shape)
{
    Tensor t(shape);
    for (std::size_t i = 0; i < m.size(); ++i) t[i] = m[i] ? 1.0f : 0.0f;
    return t;
}

// An Int row of the table with the other scheme (e.g. PyTorch's qint8 per_tensor_affine).
NumberFormat withScheme(const std::string& name, bool symmetric)
{
    NumberFormat f = findFormat(name);
    f.symmetric = symmetric;
    return f;
}

} // namespace

class TestQuantGolden : public QObject {
    Q_OBJECT

private slots:
    void fakeQuantPerTensor_data();
    void fakeQuantPerTensor();
    void fakeQuantPerChannel_data();
    void fakeQuantPerChannel();
    void minMaxObserver_data();
    void minMaxObserver();
    void perChannelObserver();
    void movingAverageObserver();
    void floatCast_data();
    void floatCast();
};

void TestQuantGolden::fakeQuantPerTensor_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("int8 [-128,127]") << "001_fq_tensor_b8_-128_127.json";
    QTest::newRow("uint8 [0,255] zp 128") << "002_fq_tensor_b8_0_255.json";
    QTest::newRow("int4 [-8,7]") << "003_fq_tensor_b4_-8_7.json";
    QTest::newRow("int2 [-2,1]") << "004_fq_tensor_b2_-2_1.json";
    QTest::newRow("uint6 [0,63] zp 32") << "005_fq_tensor_b6_0_63.json";
}

void TestQuantGolden::fakeQuantPerTensor()
{
    QFETCH(QString, file);
    const golden::GoldenCase c = golden::loadGolden(file);
    const Tensor& x = c.in("x");
    const QuantParams p = perTensorParams(c.params.at("scale").get<float>(), c.params.at("zero_point").get<int>(),
                                          c.params.at("quant_min").get<int>(), c.params.at("quant_max").get<int>());
    Tensor y(x.shape()), yRef(x.shape());
    std::vector<std::uint8_t> mask(x.numel()), maskRef(x.numel());
    fakeQuantize(x.values(), p, y.values(), mask);
    fakeQuantizeRef(x.values(), p, yRef.values(), maskRef);

    QString bad = firstBitMismatch(y, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("fast: " + bad));
    bad = firstBitMismatch(yRef, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("reference: " + bad));
    QS_COMPARE_TENSORS(maskAsTensor(mask, x.shape()), c.out("grad_x_ste"), kExact, kExact);
    QS_COMPARE_TENSORS(maskAsTensor(maskRef, x.shape()), c.out("grad_x_ste"), kExact, kExact);
    // The file's clipped value (1000) must have a zero gradient.
    QVERIFY(std::count(mask.begin(), mask.end(), std::uint8_t{0}) >= 1);

    // In place (y aliases x) gives the same.
    Tensor inPlace = x;
    fakeQuantize(inPlace.values(), p, inPlace.values(), {});
    QVERIFY(firstBitMismatch(inPlace, c.out("y")).isEmpty());

    // quantizeToInt + dequantize is the same grid.
    std::vector<std::int32_t> q(x.numel());
    quantizeToInt(x.values(), p, q);
    Tensor deq(x.shape());
    dequantize(q, p, deq.values());
    QVERIFY(firstBitMismatch(deq, c.out("y")).isEmpty());
}

void TestQuantGolden::fakeQuantPerChannel_data()
{
    QTest::addColumn<QString>("file");
    QTest::newRow("int8 per channel") << "006_fq_channel_b8.json";
    QTest::newRow("int4 per channel") << "007_fq_channel_b4.json";
}

void TestQuantGolden::fakeQuantPerChannel()
{
    QFETCH(QString, file);
    const golden::GoldenCase c = golden::loadGolden(file);
    const Tensor& w = c.in("w");
    std::vector<float> scales = c.in("scales").values();
    std::vector<std::int32_t> zps;
    for (float z : c.in("zero_points").values()) zps.push_back(static_cast<std::int32_t>(z));
    const QuantParams p = perRowParams(scales, zps, c.params.at("quant_min").get<int>(),
                                       c.params.at("quant_max").get<int>(), w.numel() / w.dim(0));
    QCOMPARE(p.numSlots(), w.dim(0));
    Tensor y(w.shape()), yRef(w.shape());
    std::vector<std::uint8_t> mask(w.numel()), maskRef(w.numel());
    fakeQuantize(w.values(), p, y.values(), mask);
    fakeQuantizeRef(w.values(), p, yRef.values(), maskRef);
    QString bad = firstBitMismatch(y, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("fast: " + bad));
    bad = firstBitMismatch(yRef, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("reference: " + bad));
    QS_COMPARE_TENSORS(maskAsTensor(mask, w.shape()), c.out("grad_w_ste"), kExact, kExact);
    QS_COMPARE_TENSORS(maskAsTensor(maskRef, w.shape()), c.out("grad_w_ste"), kExact, kExact);
}

void TestQuantGolden::minMaxObserver_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("format");
    QTest::addColumn<bool>("symmetric");
    QTest::newRow("qint8 symmetric") << "008_observer_minmax_s8_sym.json" << "int8" << true;
    QTest::newRow("quint8 affine") << "009_observer_minmax_u8_aff.json" << "uint8" << false;
    QTest::newRow("qint8 affine") << "010_observer_minmax_s8_aff.json" << "int8" << false;
}

void TestQuantGolden::minMaxObserver()
{
    QFETCH(QString, file);
    QFETCH(QString, format);
    QFETCH(bool, symmetric);
    const golden::GoldenCase c = golden::loadGolden(file);
    const NumberFormat f = withScheme(format.toStdString(), symmetric);
    RangeObserver obs(Calibration::MinMax);
    obs.observe(c.in("x").values());
    const QuantParams p = obs.params(f);
    QCOMPARE(p.numSlots(), std::size_t{1});
    QCOMPARE(p.scale[0], static_cast<float>(c.scalar("scale")));
    QCOMPARE(p.zeroPoint[0], static_cast<std::int32_t>(c.scalar("zero_point")));
    // Observing the same data in two halves gives the same range.
    const auto& x = c.in("x").values();
    RangeObserver halves(Calibration::MinMax);
    halves.observe(std::span<const float>(x.data(), x.size() / 2));
    halves.observe(std::span<const float>(x.data() + x.size() / 2, x.size() - x.size() / 2));
    QCOMPARE(halves.params(f).scale[0], p.scale[0]);
}

void TestQuantGolden::perChannelObserver()
{
    const golden::GoldenCase c = golden::loadGolden("011_observer_perchannel_s8_sym.json");
    const Tensor& w = c.in("w");
    const std::size_t row = w.numel() / w.dim(0);
    RangeObserver obs(Calibration::MinMax, w.dim(0), row, row);
    obs.observe(w.values());
    const QuantParams p = obs.params(findFormat("int8"));
    QCOMPARE(p.numSlots(), w.dim(0));
    const Tensor& scales = c.out("scales");
    const Tensor& zps = c.out("zero_points");
    for (std::size_t k = 0; k < w.dim(0); ++k) {
        QCOMPARE(p.scale[k], scales[k]);
        QCOMPARE(p.zeroPoint[k], static_cast<std::int32_t>(zps[k]));
    }
}

void TestQuantGolden::movingAverageObserver()
{
    const golden::GoldenCase c = golden::loadGolden("012_observer_moving_average_u8.json");
    QCOMPARE(c.params.at("averaging_constant").get<float>(), kMovingAverageConstant);
    RangeObserver obs(Calibration::MovingAverage);
    for (int b = 0; b < 5; ++b) obs.observe(c.in("batch" + std::to_string(b)).values());
    QCOMPARE(obs.minValues()[0], static_cast<float>(c.scalar("min_val")));
    QCOMPARE(obs.maxValues()[0], static_cast<float>(c.scalar("max_val")));
    const QuantParams p = obs.params(findFormat("uint8"));
    QCOMPARE(p.scale[0], static_cast<float>(c.scalar("scale")));
    QCOMPARE(p.zeroPoint[0], static_cast<std::int32_t>(c.scalar("zero_point")));
}

void TestQuantGolden::floatCast_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("format");
    QTest::newRow("fp16") << "013_cast_fp16.json" << "fp16";
    QTest::newRow("bf16") << "014_cast_bf16.json" << "bf16";
}

void TestQuantGolden::floatCast()
{
    QFETCH(QString, file);
    QFETCH(QString, format);
    const golden::GoldenCase c = golden::loadGolden(file);
    const NumberFormat& f = findFormat(format.toStdString());
    Tensor fast = c.in("x"), ref = c.in("x"), scalar = c.in("x");
    roundToFormat(fast.values(), f, Rounding::Nearest);
    roundToFormatRef(ref.values(), f, Rounding::Nearest);
    for (float& v : scalar.values()) v = roundFloat(v, f, Rounding::Nearest);
    QString bad = firstBitMismatch(fast, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("fast: " + bad));
    bad = firstBitMismatch(ref, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("reference: " + bad));
    bad = firstBitMismatch(scalar, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("roundFloat: " + bad));
}

QTEST_GUILESS_MAIN(TestQuantGolden)
#include "tst_quant_golden.moc"
