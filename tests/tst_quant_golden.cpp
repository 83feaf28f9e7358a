// Quantization numerics against PyTorch 1.13 (tests/data/001..014): fake quantization per tensor
// and per channel with straight-through masks, min-max / per-channel / moving-average observers,
// and fp16 / bf16 casts. All of these must match bit for bit: they are integer grids and
// correctly rounded casts, so any difference is a bug, not rounding noise.
#include "quant/float_cast.h"
#include "quant/activation_quantizer.h"
#include "quant/format.h"
#include "quant/lsq.h"
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

// The Int format of PyTorch's observer or fake-quant params: an explicit quant_min/quant_max, or
// "dtype" torch.qint8 / torch.quint8 (7 bits with "reduce_range"); symmetric when "qscheme" is a
// *_symmetric one.
NumberFormat formatOf(const nlohmann::json& params)
{
    int qmin = 0, qmax = 255;
    if (params.contains("quant_min") && params.contains("quant_max")) {
        qmin = params.at("quant_min").get<int>();
        qmax = params.at("quant_max").get<int>();
    } else {
        const std::string dtype = params.value("dtype", std::string("torch.quint8"));
        const bool reduce = params.value("reduce_range", false);
        if (dtype == "torch.qint8") {
            qmin = reduce ? -64 : -128;
            qmax = reduce ? 63 : 127;
        } else if (dtype == "torch.quint8") {
            qmax = reduce ? 127 : 255;
        } else {
            throw std::runtime_error("dtype " + dtype + " is not an 8-bit quantized type");
        }
    }
    int bits = 1;
    while ((std::int64_t{1} << bits) < std::int64_t{qmax} - qmin + 1) ++bits;
    NumberFormat f = findFormat((qmin < 0 ? "int" : "uint") + std::to_string(std::max(bits, 2)));
    f.qmin = qmin; // PyTorch allows any range inside the dtype's (e.g. [0, 15] for 4 bits)
    f.qmax = qmax;
    f.symmetric = params.value("qscheme", std::string()).find("symmetric") != std::string::npos;
    return f;
}

// t with axis `axis` moved to the front (row-major), so per-channel code that takes channels
// along axis 0 sees them there; moveAxisBack undoes it.
Tensor moveAxisToFront(const Tensor& t, std::size_t axis)
{
    const Shape& s = t.shape();
    std::size_t outer = 1, inner = 1;
    for (std::size_t d = 0; d < axis; ++d) outer *= s[d];
    for (std::size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
    const std::size_t c = s[axis];
    Shape ns{c};
    for (std::size_t d = 0; d < s.size(); ++d)
        if (d != axis) ns.push_back(s[d]);
    Tensor r(ns);
    for (std::size_t o = 0; o < outer; ++o)
        for (std::size_t k = 0; k < c; ++k)
            for (std::size_t i = 0; i < inner; ++i) r[(k * outer + o) * inner + i] = t[(o * c + k) * inner + i];
    return r;
}

Tensor moveAxisBack(const Tensor& r, const Shape& original, std::size_t axis)
{
    std::size_t outer = 1, inner = 1;
    for (std::size_t d = 0; d < axis; ++d) outer *= original[d];
    for (std::size_t d = axis + 1; d < original.size(); ++d) inner *= original[d];
    const std::size_t c = original[axis];
    Tensor t(original);
    for (std::size_t o = 0; o < outer; ++o)
        for (std::size_t k = 0; k < c; ++k)
            for (std::size_t i = 0; i < inner; ++i) t[(o * c + k) * inner + i] = r[(k * outer + o) * inner + i];
    return t;
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
    void perChannelObserver_data();
    void perChannelObserver();
    void movingAverageObserver_data();
    void movingAverageObserver();
    void floatCast_data();
    void floatCast();
    void lsqStepGradient_data();
    void lsqStepGradient();
    void fakeQuantizeModule_data();
    void fakeQuantizeModule();
    void everyCaseIsChecked();
};

void TestQuantGolden::fakeQuantPerTensor_data() { golden::rowsFor({"fake_quantize_per_tensor_affine"}); }

void TestQuantGolden::fakeQuantPerTensor()
{
    QS_FETCH_GOLDEN(c);
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

void TestQuantGolden::fakeQuantPerChannel_data() { golden::rowsFor({"fake_quantize_per_channel_affine"}); }

// Channels along params.axis (PyTorch's default for weights: 0); QuantScope's per-row layout takes
// them along axis 0, so another axis is moved to the front and back.
void TestQuantGolden::fakeQuantPerChannel()
{
    QS_FETCH_GOLDEN(c);
    const std::size_t axis = c.params.value("axis", std::size_t{0});
    QVERIFY(axis < c.in("w").shape().size());
    const Tensor w = moveAxisToFront(c.in("w"), axis);
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
    const Shape& shape = c.in("w").shape();
    QString bad = firstBitMismatch(moveAxisBack(y, shape, axis), c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("fast: " + bad));
    bad = firstBitMismatch(moveAxisBack(yRef, shape, axis), c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("reference: " + bad));
    QS_COMPARE_TENSORS(moveAxisBack(maskAsTensor(mask, w.shape()), shape, axis), c.out("grad_w_ste"), kExact, kExact);
    QS_COMPARE_TENSORS(moveAxisBack(maskAsTensor(maskRef, w.shape()), shape, axis), c.out("grad_w_ste"), kExact, kExact);
}

void TestQuantGolden::minMaxObserver_data() { golden::rowsFor({"minmax_observer"}); }

void TestQuantGolden::minMaxObserver()
{
    QS_FETCH_GOLDEN(c);
    const NumberFormat f = formatOf(c.params);
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

void TestQuantGolden::perChannelObserver_data() { golden::rowsFor({"per_channel_minmax_observer"}); }

void TestQuantGolden::perChannelObserver()
{
    QS_FETCH_GOLDEN(c);
    const std::size_t axis = c.params.value("ch_axis", std::size_t{0});
    QVERIFY(axis < c.in("w").shape().size());
    const Tensor w = moveAxisToFront(c.in("w"), axis);
    const std::size_t row = w.numel() / w.dim(0);
    RangeObserver obs(Calibration::MinMax, w.dim(0), row, row);
    obs.observe(w.values());
    const QuantParams p = obs.params(formatOf(c.params));
    QCOMPARE(p.numSlots(), w.dim(0));
    const Tensor& scales = c.out("scales");
    const Tensor& zps = c.out("zero_points");
    QCOMPARE(scales.numel(), w.dim(0));
    for (std::size_t k = 0; k < w.dim(0); ++k) {
        QCOMPARE(p.scale[k], scales[k]);
        QCOMPARE(p.zeroPoint[k], static_cast<std::int32_t>(zps[k]));
    }
}

void TestQuantGolden::movingAverageObserver_data() { golden::rowsFor({"moving_average_minmax_observer"}); }

// Batches batch0, batch1, ... in order, averaged with the file's constant (PyTorch's default
// 0.01, QuantScope's kMovingAverageConstant, when it names none).
void TestQuantGolden::movingAverageObserver()
{
    QS_FETCH_GOLDEN(c);
    RangeObserver obs(Calibration::MovingAverage);
    QCOMPARE(obs.averagingConstant(), kMovingAverageConstant);
    obs.setAveragingConstant(c.params.value("averaging_constant", kMovingAverageConstant));
    int batches = 0;
    for (; c.inputs.count("batch" + std::to_string(batches)); ++batches) obs.observe(c.in("batch" + std::to_string(batches)).values());
    QVERIFY(batches >= 2);
    QCOMPARE(obs.minValues()[0], static_cast<float>(c.scalar("min_val")));
    QCOMPARE(obs.maxValues()[0], static_cast<float>(c.scalar("max_val")));
    const QuantParams p = obs.params(formatOf(c.params));
    QCOMPARE(p.scale[0], static_cast<float>(c.scalar("scale")));
    QCOMPARE(p.zeroPoint[0], static_cast<std::int32_t>(c.scalar("zero_point")));
}

void TestQuantGolden::floatCast_data() { golden::rowsFor({"cast_fp16", "cast_bf16"}); }

void TestQuantGolden::floatCast()
{
    QS_FETCH_GOLDEN(c);
    const QString format = c.op == "cast_fp16" ? QStringLiteral("fp16") : QStringLiteral("bf16");
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

void TestQuantGolden::lsqStepGradient_data()
{
    golden::rowsFor({"fake_quantize_learnable_per_tensor_affine", "fake_quantize_learnable_per_channel_affine"});
}

// LSQ against PyTorch's learnable fake quantization (043_lsq_*: Esser et al. 2020's operator): the
// forward on the grid of the case's scale and zero point, the straight-through dx, and the step
// gradient lsqStepGradient gives with LSQ's g = 1 / sqrt(N Qp), which the case's grad_factor is.
// The forward and the mask are exact; the step gradient is a sum of a few hundred products, which
// PyTorch adds in float and QuantScope in double.
void TestQuantGolden::lsqStepGradient()
{
    QS_FETCH_GOLDEN(c);
    const Tensor& x = c.in("x");
    const Tensor& scale = c.in("scale");
    const Tensor& zp = c.in("zero_point");
    const int qmin = c.params.at("quant_min").get<int>(), qmax = c.params.at("quant_max").get<int>();
    QVERIFY(c.params.value("axis", 0) == 0);
    const std::size_t slotCount = scale.numel();
    QVERIFY(slotCount >= 1 && x.numel() % slotCount == 0);
    std::vector<std::int32_t> zps;
    for (float z : zp.values()) zps.push_back(static_cast<std::int32_t>(std::nearbyint(z)));
    const QuantParams p = slotCount == 1 ? perTensorParams(scale[0], zps[0], qmin, qmax)
                                     : perRowParams(scale.values(), zps, qmin, qmax, x.numel() / slotCount);
    Tensor y(x.shape());
    std::vector<std::uint8_t> mask(x.numel());
    fakeQuantize(x.values(), p, y.values(), mask);
    QString bad = firstBitMismatch(y, c.out("y"));
    QVERIFY2(bad.isEmpty(), qPrintable("y: " + bad));
    Tensor dx(x.shape());
    for (std::size_t i = 0; i < x.numel(); ++i) dx[i] = c.in("grad_y")[i] * (mask[i] ? 1.0f : 0.0f); // -0 as PyTorch
    bad = firstBitMismatch(dx, c.out("grad_x"));
    QVERIFY2(bad.isEmpty(), qPrintable("grad_x: " + bad));
    // LSQ's g is the case's grad_factor (the same N and Qp in every slot of these cases)
    const double g = c.params.at("grad_factor").get<double>();
    QVERIFY(std::abs(lsqGradScale(x.numel() / slotCount, lsqPositiveLevels(p, 0)) - g) <= 1e-7 * g);
    Tensor ds(Shape{slotCount});
    quantscope::lsqStepGradient(x.values(), c.in("grad_y").values(), p, ds.values());
    QS_COMPARE_TENSORS(ds, c.out("grad_scale"), 1e-6, 1e-5);
}

void TestQuantGolden::fakeQuantizeModule_data() { golden::rowsFor({"fake_quantize_module"}); }

// A QAT activation point over a run of batches against PyTorch's FakeQuantize module (044_fq_module_*):
// each batch moves the observer, then is fake-quantized on the grid that gives. ActivationQuantizer
// must give the same scale, zero point, output and straight-through mask after every batch: exact.
void TestQuantGolden::fakeQuantizeModule()
{
    QS_FETCH_GOLDEN(c);
    QVERIFY2(!c.params.value("reduce_range", false), "reduce_range: PyTorch's module clamps to another range than its observer's");
    const std::string observer = c.params.at("observer").get<std::string>();
    QVERIFY(observer == "moving_average_minmax" || observer == "minmax");
    ActivationQuantizer q(formatOf(c.params), observer == "minmax" ? Calibration::MinMax : Calibration::MovingAverage);
    if (observer != "minmax") q.setAveragingConstant(c.params.value("averaging_constant", kMovingAverageConstant));
    int batches = 0;
    for (; c.inputs.count("batch" + std::to_string(batches)); ++batches) {
        const std::string i = std::to_string(batches);
        Tensor y = c.in("batch" + i);
        q.observe(y.values());
        QVERIFY(q.ready());
        QCOMPARE(q.params().scale[0], static_cast<float>(c.scalar("scale" + i)));
        QCOMPARE(q.params().zeroPoint[0], static_cast<std::int32_t>(c.scalar("zero_point" + i)));
        std::vector<std::uint8_t> mask;
        q.fakeQuantize(y, mask);
        QString bad = firstBitMismatch(y, c.out("y" + i));
        QVERIFY2(bad.isEmpty(), qPrintable(QString("batch %1: ").arg(batches) + bad));
        bad = firstBitMismatch(maskAsTensor(mask, y.shape()), c.out("grad" + i));
        QVERIFY2(bad.isEmpty(), qPrintable(QString("batch %1, mask: ").arg(batches) + bad));
    }
    QVERIFY(batches >= 2);
}

// Every reference case in tests/data is checked by some golden test: a case of an op no test
// reads would otherwise be skipped without a word.
void TestQuantGolden::everyCaseIsChecked()
{
    const QDir dir(QStringLiteral(QS_TEST_DATA));
    const QStringList all = dir.entryList({QStringLiteral("[0-9][0-9][0-9]_*.json")}, QDir::Files, QDir::Name);
    QVERIFY(all.size() >= 28);
    QStringList checked;
    for (const std::string& o : golden::checkedGoldenOps()) checked += golden::goldenFiles({o.c_str()});
    for (const QString& f : all) QVERIFY2(checked.contains(f), qPrintable(f + ": no golden test reads its op"));
}

QTEST_GUILESS_MAIN(TestQuantGolden)
#include "tst_quant_golden.moc"
