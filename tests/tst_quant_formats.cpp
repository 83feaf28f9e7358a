// Number formats and rounding kernels: the format table, known fp8/fp16/bf16 values (maximum,
// saturation, overflow, subnormals, ties to even, NaN), OCP MX block scaling, stochastic rounding
// (unbiased, reproducible, independent of the thread count), every fast kernel against its scalar
// twin on random and edge values, and the speed the training loop relies on.
#include "quant/float_cast.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/observer.h"
#include "quant/quantize.h"
#include "quant/rounding.h"
#include "util/errors.h"
#include "util/rng.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>

using namespace quantscope;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Stochastic rounding: the mean of N roundings of x lies within this many standard errors
// (step / (2 sqrt N) bounds the standard deviation of one rounding) of x.
constexpr double kStochasticSigmas = 5.0;
constexpr std::size_t kStochasticSamples = 200000;
// Spans this long are split into several TBB chunks (elementwiseGrain: 16384 per chunk).
constexpr std::size_t kMultiChunkSize = 5 * 16384 + 77;

// QVERIFY2 builds its message even when the check passes; in loops over 10^5 elements that
// dominates the run time, so the message is only built on failure.
#define QS_VERIFY_SAME(got, want, message)                                                           \
    do {                                                                                            \
        if (!sameFloat((got), (want))) QFAIL(qPrintable(message));                                  \
    } while (false)

bool sameFloat(float a, float b)
{
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

QString describeMismatch(std::size_t i, float in, float got, float want)
{
    return QStringLiteral("element %1: input %2 -> got %3, expected %4")
        .arg(i)
        .arg(double(in), 0, 'g', 9)
        .arg(double(got), 0, 'g', 9)
        .arg(double(want), 0, 'g', 9);
}

// Random values over many binades, both signs, plus the edge values of every format.
std::vector<float> edgeAndRandomValues(std::size_t n, std::uint64_t seed)
{
    std::vector<float> v = {0.0f, -0.0f, kInf, -kInf, kNaN, -kNaN, std::numeric_limits<float>::max(),
                            -std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::denorm_min(), 1e-40f, -3e-39f, 65504.0f, 65519.99f, 65520.0f,
                            -65520.0f, 448.0f, 464.0f, 480.0f, -500.0f, 57344.0f, 61440.0f, 61439.0f, 6.0f, 7.0f, 5.0f,
                            0.25f, 0.75f, 1.0f + 1.0f / 16.0f, 1.0f + 3.0f / 256.0f, 5.96046448e-08f, 2.98023224e-08f,
                            0.001953125f, 0.0009765625f, 1.52587890625e-05f, 7.62939453125e-06f};
    Rng rng(seed);
    while (v.size() < n) {
        const float mag = std::ldexp(1.0f + rng.uniform(), static_cast<int>(rng.below(60)) - 40);
        v.push_back(rng.uniform() < 0.5f ? -mag : mag);
    }
    return v;
}

std::vector<std::string> nonIntFormats()
{
    std::vector<std::string> names;
    for (const auto& f : numberFormats())
        if (f.kind != FormatKind::Int) names.push_back(f.name);
    return names;
}

} // namespace

class TestQuantFormats : public QObject {
    Q_OBJECT

private slots:
    void table();
    void unknownNamesAreConfigErrors_data();
    void unknownNamesAreConfigErrors();
    void parseNames();
    void knownValues_data();
    void knownValues();
    void intFormatsNeedAScale();
    void nearestIsIdempotent_data();
    void nearestIsIdempotent();
    void mxBlockScaling_data();
    void mxBlockScaling();
    void mxBlocksAreIndependent();
    void mxTinyBlocks();
    void mxBlocksFollowRows();
    void mxElementsStayOnTheirGrid_data();
    void mxElementsStayOnTheirGrid();
    void stochasticIsUnbiased_data();
    void stochasticIsUnbiased();
    void stochasticIsReproducible();
    void resultsDoNotDependOnThreads_data();
    void resultsDoNotDependOnThreads();
    void castFastPathMatchesScalarTwin_data();
    void castFastPathMatchesScalarTwin();
    void fakeQuantFastPathMatchesScalarTwin_data();
    void fakeQuantFastPathMatchesScalarTwin();
};

void TestQuantFormats::table()
{
    std::set<std::string> names;
    for (const auto& f : numberFormats()) {
        QVERIFY2(names.insert(f.name).second, f.name.c_str());
        QCOMPARE(&findFormat(f.name), &f);
        QVERIFY(!f.description.empty());
    }
    for (int b = 2; b <= 16; ++b) {
        const NumberFormat& s = findFormat("int" + std::to_string(b));
        QCOMPARE(s.kind, FormatKind::Int);
        QVERIFY(s.isSigned && s.symmetric);
        QCOMPARE(s.qmin, -(1 << (b - 1)));
        QCOMPARE(s.qmax, (1 << (b - 1)) - 1);
        const NumberFormat& u = findFormat("uint" + std::to_string(b));
        QVERIFY(!u.isSigned && !u.symmetric);
        QCOMPARE(u.qmin, 0);
        QCOMPARE(u.qmax, (1 << b) - 1);
    }
    const NumberFormat& e4m3 = findFormat("fp8-e4m3");
    QCOMPARE(e4m3.maxFinite, 448.0f);
    QVERIFY(!e4m3.hasInf && e4m3.saturating);
    const NumberFormat& e5m2 = findFormat("fp8-e5m2");
    QCOMPARE(e5m2.maxFinite, 57344.0f);
    QVERIFY(e5m2.hasInf && !e5m2.saturating);
    QCOMPARE(findFormat("fp16").maxFinite, 65504.0f);
    for (const char* mx : {"mxint8", "mxfp8-e4m3", "mxfp4"}) QCOMPARE(findFormat(mx).blockSize, 32);
    QCOMPARE(maxExponent(findFormat("mxfp4")), 2);      // E2M1: 6 = 1.5 * 2^2
    QCOMPARE(maxExponent(findFormat("mxfp8-e4m3")), 8); // 448 = 1.75 * 2^8
    QCOMPARE(maxExponent(findFormat("mxint8")), 0);     // 1.6 fixed point: < 2
}

void TestQuantFormats::unknownNamesAreConfigErrors_data()
{
    QTest::addColumn<QString>("what");
    QTest::addColumn<QString>("name");
    QTest::addColumn<QString>("listed"); // a valid name the message must offer
    QTest::newRow("format") << "format" << "int9000" << "mxfp4";
    QTest::newRow("rounding") << "rounding" << "up" << "stochastic";
    QTest::newRow("calibration") << "calibration" << "kl" << "moving-average";
    QTest::newRow("granularity") << "granularity" << "row" << "group:N";
    QTest::newRow("group without size") << "granularity" << "group:" << "group:32";
    QTest::newRow("group of zero") << "granularity" << "group:0" << "group:32";
}

void TestQuantFormats::unknownNamesAreConfigErrors()
{
    QFETCH(QString, what);
    QFETCH(QString, name);
    QFETCH(QString, listed);
    const std::string n = name.toStdString();
    try {
        if (what == "format") findFormat(n);
        else if (what == "rounding") parseRounding(n);
        else if (what == "calibration") parseCalibration(n);
        else parseGranularity(n);
        QFAIL("no ConfigError");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains(listed), e.what());
    }
}

void TestQuantFormats::parseNames()
{
    QCOMPARE(parseRounding("nearest"), Rounding::Nearest);
    QCOMPARE(parseRounding("stochastic"), Rounding::Stochastic);
    for (Calibration c : {Calibration::MinMax, Calibration::MovingAverage, Calibration::Percentile, Calibration::Mse})
        QCOMPARE(parseCalibration(calibrationName(c)), c);
    for (const char* g : {"global", "layer", "tensor", "channel", "group:32", "group:7"})
        QCOMPARE(parseGranularity(g).name(), std::string(g));
    QCOMPARE(parseGranularity("group:32").label(), std::string("group-wise (32)"));
    QCOMPARE(parseGranularity("channel").label(), std::string("channel-wise"));
    QCOMPARE(parseGranularity("layer").label(), std::string("layer-wise"));
    QCOMPARE(parseGranularity("tensor").label(), std::string("tensor-wise"));
}

void TestQuantFormats::knownValues_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<float>("x");
    QTest::addColumn<float>("expected");
    // fp8 E4M3 (OCP): max 448, saturating, no infinities; subnormals 2^-9 .. 7 * 2^-9.
    QTest::newRow("e4m3 max") << "fp8-e4m3" << 448.0f << 448.0f;
    QTest::newRow("e4m3 above max saturates") << "fp8-e4m3" << 500.0f << 448.0f;
    QTest::newRow("e4m3 huge saturates") << "fp8-e4m3" << -1e30f << -448.0f;
    QTest::newRow("e4m3 inf saturates") << "fp8-e4m3" << kInf << 448.0f;
    QTest::newRow("e4m3 tie 464 to even 448") << "fp8-e4m3" << 464.0f << 448.0f;
    QTest::newRow("e4m3 tie 1+1/16 to even 1") << "fp8-e4m3" << 1.0625f << 1.0f;
    QTest::newRow("e4m3 tie 1+3/16 to even 1.25") << "fp8-e4m3" << 1.1875f << 1.25f;
    QTest::newRow("e4m3 min subnormal") << "fp8-e4m3" << 0.001953125f << 0.001953125f;
    QTest::newRow("e4m3 half min subnormal ties to 0") << "fp8-e4m3" << 0.0009765625f << 0.0f;
    QTest::newRow("e4m3 1.5 min subnormal ties to 2") << "fp8-e4m3" << 0.0029296875f << 0.00390625f;
    QTest::newRow("e4m3 max subnormal") << "fp8-e4m3" << 0.013671875f << 0.013671875f;
    QTest::newRow("e4m3 min normal") << "fp8-e4m3" << 0.015625f << 0.015625f;
    QTest::newRow("e4m3 nan") << "fp8-e4m3" << kNaN << kNaN;
    QTest::newRow("e4m3 -0") << "fp8-e4m3" << -0.0f << -0.0f;
    // fp8 E5M2: max 57344, overflow to inf; subnormals from 2^-16.
    QTest::newRow("e5m2 max") << "fp8-e5m2" << 57344.0f << 57344.0f;
    QTest::newRow("e5m2 below overflow tie") << "fp8-e5m2" << 61439.0f << 57344.0f;
    QTest::newRow("e5m2 overflow tie to inf") << "fp8-e5m2" << 61440.0f << kInf;
    QTest::newRow("e5m2 -inf kept") << "fp8-e5m2" << -kInf << -kInf;
    QTest::newRow("e5m2 min subnormal") << "fp8-e5m2" << 1.52587890625e-05f << 1.52587890625e-05f;
    QTest::newRow("e5m2 half min subnormal to 0") << "fp8-e5m2" << 7.62939453125e-06f << 0.0f;
    QTest::newRow("e5m2 3/2 min subnormal ties to even") << "fp8-e5m2" << 2.288818359375e-05f << 3.0517578125e-05f;
    QTest::newRow("e5m2 tie 1.125 to even 1") << "fp8-e5m2" << 1.125f << 1.0f;
    QTest::newRow("e5m2 tie 1.375 to even 1.5") << "fp8-e5m2" << 1.375f << 1.5f;
    QTest::newRow("e5m2 nan") << "fp8-e5m2" << kNaN << kNaN;
    // fp16 / bf16.
    QTest::newRow("fp16 max") << "fp16" << 65504.0f << 65504.0f;
    QTest::newRow("fp16 below overflow") << "fp16" << 65519.99f << 65504.0f;
    QTest::newRow("fp16 overflow to inf") << "fp16" << 65520.0f << kInf;
    QTest::newRow("fp16 min subnormal") << "fp16" << 5.96046448e-08f << 5.96046448e-08f;
    QTest::newRow("fp16 half min subnormal to 0") << "fp16" << 2.98023224e-08f << 0.0f;
    QTest::newRow("fp16 tie 1+2^-11 to even 1") << "fp16" << 1.00048828125f << 1.0f;
    QTest::newRow("bf16 tie 1+2^-8 to even 1") << "bf16" << 1.00390625f << 1.0f;
    QTest::newRow("bf16 tie 1+3*2^-8 to even") << "bf16" << 1.01171875f << 1.015625f;
    QTest::newRow("bf16 overflow to inf") << "bf16" << std::numeric_limits<float>::max() << kInf;
    QTest::newRow("bf16 subnormal kept") << "bf16" << 9.18354962e-41f << 9.18354962e-41f;
    QTest::newRow("fp32 untouched") << "fp32" << 0.1f << 0.1f;
    // MX element grids with scale 1 (roundFloat on an MX format rounds to the element format).
    QTest::newRow("mxfp4 element 5 ties to 4") << "mxfp4" << 5.0f << 4.0f;
    QTest::newRow("mxfp4 element 0.25 ties to 0") << "mxfp4" << 0.25f << 0.0f;
    QTest::newRow("mxfp4 element 0.26 to 0.5") << "mxfp4" << 0.26f << 0.5f;
    QTest::newRow("mxfp4 element 7 saturates to 6") << "mxfp4" << 7.0f << 6.0f;
    QTest::newRow("mxint8 element 1/128 ties to 0") << "mxint8" << 0.0078125f << 0.0f;
    QTest::newRow("mxint8 element 1.999 saturates") << "mxint8" << 1.999f << 127.0f / 64.0f;
}

void TestQuantFormats::knownValues()
{
    QFETCH(QString, format);
    QFETCH(float, x);
    QFETCH(float, expected);
    const NumberFormat& f = findFormat(format.toStdString());
    const float scalar = roundFloat(x, f, Rounding::Nearest);
    QS_VERIFY_SAME(scalar, expected, describeMismatch(0, x, scalar, expected));
    if (isMxFormat(f)) return; // the span kernels scale MX blocks; see mxBlockScaling
    // The span kernels: alone (scalar tails) and among 63 copies (vector bodies).
    for (std::size_t n : {std::size_t{1}, std::size_t{64}}) {
        std::vector<float> v(n, x);
        roundToFormat(v, f, Rounding::Nearest);
        for (std::size_t i = 0; i < n; ++i)
            QS_VERIFY_SAME(v[i], expected, describeMismatch(i, x, v[i], expected));
    }
}

void TestQuantFormats::intFormatsNeedAScale()
{
    std::vector<float> v(8, 1.0f);
    QVERIFY_THROWS_EXCEPTION(ConfigError, roundToFormat(v, findFormat("int8"), Rounding::Nearest));
    QVERIFY_THROWS_EXCEPTION(ConfigError, roundFloat(1.0f, findFormat("uint4"), Rounding::Nearest));
    QVERIFY_THROWS_EXCEPTION(ConfigError, RangeObserver().params(findFormat("fp16")));
}

void TestQuantFormats::nearestIsIdempotent_data()
{
    QTest::addColumn<QString>("format");
    for (const auto& n : nonIntFormats()) QTest::newRow(n.c_str()) << QString::fromStdString(n);
}

void TestQuantFormats::nearestIsIdempotent()
{
    QFETCH(QString, format);
    const NumberFormat& f = findFormat(format.toStdString());
    std::vector<float> once = edgeAndRandomValues(4096, 7);
    roundToFormat(once, f, Rounding::Nearest);
    std::vector<float> twice = once;
    roundToFormat(twice, f, Rounding::Nearest);
    for (std::size_t i = 0; i < once.size(); ++i)
        QS_VERIFY_SAME(once[i], twice[i], describeMismatch(i, once[i], twice[i], once[i]));
}

void TestQuantFormats::mxBlockScaling_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<float>("amax");
    QTest::addColumn<float>("scale"); // 2^(floor(log2(amax)) - emax_elem)
    QTest::addColumn<float>("amaxRounded");
    QTest::newRow("mxfp4 amax 5: X=1, 5 ties to 4") << "mxfp4" << 5.0f << 1.0f << 4.0f;
    QTest::newRow("mxfp4 amax 100: X=16, 6.25 -> 6") << "mxfp4" << 100.0f << 16.0f << 96.0f;
    QTest::newRow("mxfp4 amax 7.5: X=1, saturates to 6") << "mxfp4" << 7.5f << 1.0f << 6.0f;
    QTest::newRow("mxfp4 amax 0.01: X=2^-9") << "mxfp4" << 0.01f << 0.001953125f << 0.01171875f;
    QTest::newRow("mxint8 amax 3: X=2, 96/64") << "mxint8" << 3.0f << 2.0f << 3.0f;
    QTest::newRow("mxint8 amax 1000: X=512") << "mxint8" << 1000.0f << 512.0f << 1000.0f;
    QTest::newRow("mxfp8 amax 1000: X=2") << "mxfp8-e4m3" << 1000.0f << 2.0f << 896.0f;
    QTest::newRow("mxfp8 amax 1: X=2^-8") << "mxfp8-e4m3" << 1.0f << 0.00390625f << 1.0f;
}

void TestQuantFormats::mxBlockScaling()
{
    QFETCH(QString, format);
    QFETCH(float, amax);
    QFETCH(float, scale);
    QFETCH(float, amaxRounded);
    const NumberFormat& f = findFormat(format.toStdString());
    std::vector<float> block(32);
    Rng rng(3);
    for (float& v : block) v = rng.uniform(-0.5f, 0.5f) * amax;
    block[17] = -amax;
    QCOMPARE(mxBlockScale(block, f), scale);
    QCOMPARE(mxBlockScales(block, f).size(), std::size_t{1});
    std::vector<float> fast = block, ref = block;
    roundToFormat(fast, f, Rounding::Nearest);
    roundToFormatRef(ref, f, Rounding::Nearest);
    QCOMPARE(fast[17], -amaxRounded);
    for (std::size_t i = 0; i < block.size(); ++i) {
        QS_VERIFY_SAME(fast[i], ref[i], describeMismatch(i, block[i], fast[i], ref[i]));
        // Every element is the scale times a value of the element format.
        QVERIFY(sameFloat(roundFloat(fast[i] / scale, f, Rounding::Nearest), fast[i] / scale));
    }
}

// Blocks whose largest value is near or below FLT_MIN (E8M0 scales down to 2^-127): the fast
// kernels equal the scalar twin, zeros stay zero and nothing becomes NaN or grows past the block's
// largest value. mxint8's kernel made zeros NaN and 3e-38 into 127/64 X for X <= 2^-122 (tester 13).
void TestQuantFormats::mxTinyBlocks()
{
    for (const auto& f : numberFormats()) {
        if (f.kind != FormatKind::MxInt && f.kind != FormatKind::MxFloat) continue;
        for (const float amax : {3e-38f, 1.2e-38f, 1e-40f, std::ldexp(1.0f, -127), std::ldexp(1.0f, -140)}) {
            std::vector<float> block(64, 0.0f);
            Rng rng(11);
            for (std::size_t i = 20; i < 32; ++i) block[i] = rng.uniform(-1.0f, 1.0f) * amax;
            block[25] = amax;
            block[40] = -amax; // the second block: one value and zeros
            std::vector<float> fast = block, ref = block;
            roundToFormat(fast, f, Rounding::Nearest);
            roundToFormatRef(ref, f, Rounding::Nearest);
            for (std::size_t i = 0; i < block.size(); ++i) {
                const QString what = QString::fromStdString(f.name) + QStringLiteral(" amax %1: ").arg(double(amax)) +
                                     describeMismatch(i, block[i], fast[i], ref[i]);
                QS_VERIFY_SAME(fast[i], ref[i], what);
                QVERIFY2(std::isfinite(fast[i]), qPrintable(what));
                if (block[i] == 0.0f) QVERIFY2(fast[i] == 0.0f, qPrintable(what));
                QVERIFY2(std::abs(fast[i]) <= 2.0f * amax, qPrintable(what));
            }
        }
    }
}

// MX blocks restart at every row (a weight's output channel: the reduction axis, OCP MX v1.0 and
// microxcaling's blocks along the last axis): rounding a 3 x 48 tensor in rows of 48 is rounding
// each row on its own, the last block of a row 16 long. Over the flattened tensor, row 0's small
// tail shared a block with row 1's large head and became 0 (tester 13).
void TestQuantFormats::mxBlocksFollowRows()
{
    constexpr std::size_t R = 3, L = 48;
    std::vector<float> x(R * L);
    Rng rng(5);
    for (float& v : x) v = rng.uniform(-1.0f, 1.0f);
    for (std::size_t i = 32; i < 48; ++i) x[i] = 1e-3f * (1.0f + float(i) / 64.0f); // row 0's last block: small
    for (std::size_t i = 48; i < 64; ++i) x[i] = 50.0f;                             // row 1's first: large
    QCOMPARE(mxRowLength({R, L}), L);
    QCOMPARE(mxRowLength({R, 3, 4, 4}), std::size_t{48});
    QCOMPARE(mxRowLength({L}), std::size_t{0});
    for (const char* name : {"mxint8", "mxfp8-e4m3", "mxfp4"}) {
        const NumberFormat& f = findFormat(name);
        for (const bool sto : {false, true}) {
            const Rounding r = sto ? Rounding::Stochastic : Rounding::Nearest;
            std::vector<float> fast = x, ref = x, rowByRow = x;
            roundToFormat(fast, f, r, 9, L);
            roundToFormatRef(ref, f, r, 9, L);
            for (std::size_t row = 0; row < R; ++row) {
                const std::vector<float> one(x.begin() + std::ptrdiff_t(row * L), x.begin() + std::ptrdiff_t((row + 1) * L));
                const std::vector<float> scales = mxBlockScales(std::span<const float>(one), f);
                QCOMPARE(scales.size(), std::size_t{2});
                const std::vector<float> all = mxBlockScales(x, f, L);
                QCOMPARE(all.size(), 2 * R);
                QCOMPARE(all[2 * row], scales[0]);
                QCOMPARE(all[2 * row + 1], scales[1]);
            }
            for (std::size_t i = 0; i < x.size(); ++i) QS_VERIFY_SAME(fast[i], ref[i], describeMismatch(i, x[i], fast[i], ref[i]));
            // row 0's small tail keeps its values (within the element grid's step), whatever row 1 holds
            for (std::size_t i = 32; i < 48; ++i)
                QVERIFY2(std::abs(fast[i] - x[i]) <= 0.25f * x[i], qPrintable(describeMismatch(i, x[i], fast[i], x[i])));
            if (!sto) {
                std::vector<float> flat = x;
                roundToFormat(flat, f, r, 9);
                if (f.kind == FormatKind::MxInt || std::string(name) == "mxfp4")
                    QCOMPARE(flat[40], 0.0f); // what blocks over the flattened tensor did
                for (std::size_t row = 0; row < R; ++row) {
                    std::vector<float> one(x.begin() + std::ptrdiff_t(row * L), x.begin() + std::ptrdiff_t((row + 1) * L));
                    roundToFormat(one, f, r);
                    for (std::size_t i = 0; i < L; ++i) QCOMPARE(fast[row * L + i], one[i]);
                }
            }
        }
    }
}

void TestQuantFormats::mxBlocksAreIndependent()
{
    // 40 values = one full block and one short block of 8.
    const NumberFormat& f = findFormat("mxfp4");
    std::vector<float> x(40, 0.0f);
    for (std::size_t i = 0; i < 32; ++i) x[i] = 0.75f;        // block 0: amax 0.75 -> X = 2^-3
    for (std::size_t i = 32; i < 40; ++i) x[i] = 0.75f;       // block 1 ...
    x[39] = 1000.0f;                                          // ... dominated by 1000 -> X = 2^7
    const std::vector<float> scales = mxBlockScales(x, f);
    QCOMPARE(scales.size(), std::size_t{2});
    QCOMPARE(scales[0], 0.125f);
    QCOMPARE(scales[1], 128.0f);
    std::vector<float> y = x;
    roundToFormat(y, f, Rounding::Nearest);
    QCOMPARE(y[0], 0.75f);  // 6 * 2^-3: exact in block 0
    QCOMPARE(y[32], 0.0f);  // 0.75 / 128 is below E2M1's smallest step: flushed in block 1
    QCOMPARE(y[39], 768.0f); // 1000 / 128 = 7.8 saturates to E2M1's 6 (the OCP scale allows it)
    // A NaN poisons only its own block; an all-zero block stays zero.
    std::vector<float> z(64, 0.0f);
    z[40] = kNaN;
    roundToFormat(z, f, Rounding::Nearest);
    QCOMPARE(z[0], 0.0f);
    QVERIFY(std::isnan(z[33]));
}

void TestQuantFormats::mxElementsStayOnTheirGrid_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("mxfp4") << "mxfp4";
    QTest::newRow("mxint8") << "mxint8";
    QTest::newRow("mxfp8-e4m3") << "mxfp8-e4m3";
}

void TestQuantFormats::mxElementsStayOnTheirGrid()
{
    QFETCH(QString, format);
    const NumberFormat& f = findFormat(format.toStdString());
    std::vector<float> x(32 * 50);
    Rng rng(11);
    for (float& v : x) v = rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, static_cast<int>(rng.below(20)) - 10);
    const std::vector<float> scales = mxBlockScales(x, f);
    for (Rounding r : {Rounding::Nearest, Rounding::Stochastic}) {
        std::vector<float> y = x;
        roundToFormat(y, f, r, 99);
        for (std::size_t i = 0; i < x.size(); ++i) {
            const float X = scales[i / 32];
            QVERIFY(std::abs(y[i]) <= f.maxFinite * X);
            QS_VERIFY_SAME(roundFloat(y[i] / X, f, Rounding::Nearest), y[i] / X, describeMismatch(i, x[i], y[i], y[i]));
        }
    }
}

void TestQuantFormats::stochasticIsUnbiased_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<float>("x");
    QTest::addColumn<float>("step"); // grid spacing around x
    QTest::newRow("int8 scale 0.1") << "int8" << 0.123f << 0.1f;
    QTest::newRow("int8 negative") << "int8" << -0.377f << 0.1f;
    QTest::newRow("fp16") << "fp16" << 1.0f + 0.3f / 1024.0f << 1.0f / 1024.0f;
    QTest::newRow("bf16") << "bf16" << 1.0f + 0.7f / 128.0f << 1.0f / 128.0f;
    QTest::newRow("fp8-e4m3") << "fp8-e4m3" << -2.6f << 0.25f;
    QTest::newRow("fp8-e5m2 subnormal") << "fp8-e5m2" << 2.0e-5f << 1.52587890625e-05f;
    QTest::newRow("mxfp4") << "mxfp4" << 2.6f << 1.0f; // all 32 equal: X = 1, 2.6 between 2 and 3
    QTest::newRow("mxint8") << "mxint8" << 0.3f << 1.0f / 256.0f;
}

void TestQuantFormats::stochasticIsUnbiased()
{
    QFETCH(QString, format);
    QFETCH(float, x);
    QFETCH(float, step);
    const NumberFormat& f = findFormat(format.toStdString());
    std::vector<float> v(kStochasticSamples, x);
    if (f.kind == FormatKind::Int) {
        const QuantParams p = perTensorParams(step, 0, f.qmin, f.qmax);
        fakeQuantize(v, p, v, {}, Rounding::Stochastic, 1234);
    } else {
        roundToFormat(v, f, Rounding::Stochastic, 1234);
    }
    double sum = 0.0;
    std::set<float> seen;
    for (float y : v) {
        sum += y;
        seen.insert(y);
    }
    const double mean = sum / static_cast<double>(v.size());
    const double tol = kStochasticSigmas * step / (2.0 * std::sqrt(static_cast<double>(v.size())));
    QVERIFY2(std::abs(mean - x) <= tol, qPrintable(QStringLiteral("mean %1 vs x %2 (tolerance %3)")
                                                       .arg(mean, 0, 'g', 9)
                                                       .arg(double(x), 0, 'g', 9)
                                                       .arg(tol)));
    QCOMPARE(seen.size(), std::size_t{2}); // only the two neighbours of x
}

void TestQuantFormats::stochasticIsReproducible()
{
    std::vector<float> x = edgeAndRandomValues(10000, 5);
    for (const auto& name : nonIntFormats()) {
        const NumberFormat& f = findFormat(name);
        std::vector<float> a = x, b = x, c = x;
        roundToFormat(a, f, Rounding::Stochastic, 42);
        roundToFormat(b, f, Rounding::Stochastic, 42);
        roundToFormat(c, f, Rounding::Stochastic, 43);
        std::size_t differ = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            QS_VERIFY_SAME(a[i], b[i], QString::fromStdString(name));
            differ += sameFloat(a[i], c[i]) ? 0 : 1;
        }
        if (f.kind != FormatKind::Float32) QVERIFY2(differ > 0, name.c_str()); // another key, other roundings
    }
}

void TestQuantFormats::resultsDoNotDependOnThreads_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<bool>("stochastic");
    for (const char* n : {"int8", "uint4", "fp16", "bf16", "fp8-e4m3", "mxfp4", "mxint8"}) {
        QTest::newRow((std::string(n) + " nearest").c_str()) << n << false;
        QTest::newRow((std::string(n) + " stochastic").c_str()) << n << true;
    }
}

void TestQuantFormats::resultsDoNotDependOnThreads()
{
    QFETCH(QString, format);
    QFETCH(bool, stochastic);
    const NumberFormat& f = findFormat(format.toStdString());
    const Rounding r = stochastic ? Rounding::Stochastic : Rounding::Nearest;
    std::vector<float> x(kMultiChunkSize);
    Rng rng(17);
    for (float& v : x) v = rng.uniform(-2.0f, 2.0f);
    auto run = [&](int threads) {
        std::vector<float> y(x.size());
        std::vector<std::uint8_t> mask(x.size());
        tbb::task_arena arena(threads);
        arena.execute([&] {
            if (f.kind == FormatKind::Int) {
                RangeObserver obs(Calibration::MinMax);
                obs.observe(x);
                fakeQuantize(x, obs.params(f), y, mask, r, 77);
            } else {
                y = x;
                roundToFormat(y, f, r, 77);
            }
        });
        return y;
    };
    const std::vector<float> one = run(1), two = run(2);
    for (std::size_t i = 0; i < x.size(); ++i) QS_VERIFY_SAME(one[i], two[i], QString::number(i));
}

void TestQuantFormats::castFastPathMatchesScalarTwin_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<bool>("stochastic");
    for (const auto& n : nonIntFormats()) {
        QTest::newRow((n + " nearest").c_str()) << QString::fromStdString(n) << false;
        QTest::newRow((n + " stochastic").c_str()) << QString::fromStdString(n) << true;
    }
}

void TestQuantFormats::castFastPathMatchesScalarTwin()
{
    QFETCH(QString, format);
    QFETCH(bool, stochastic);
    const NumberFormat& f = findFormat(format.toStdString());
    const Rounding r = stochastic ? Rounding::Stochastic : Rounding::Nearest;
    const std::vector<float> x = edgeAndRandomValues(kMultiChunkSize, 23);
    std::vector<float> fast = x, ref = x;
    roundToFormat(fast, f, r, 5);
    roundToFormatRef(ref, f, r, 5);
    for (std::size_t i = 0; i < x.size(); ++i)
        QS_VERIFY_SAME(fast[i], ref[i], describeMismatch(i, x[i], fast[i], ref[i]));
    // The same through roundFloat with the element's own random bits (plain float formats).
    if (f.kind == FormatKind::Float)
        for (std::size_t i = 0; i < x.size(); i += 97) {
            const float s = roundFloat(x[i], f, r, elementBits(5, i));
            QS_VERIFY_SAME(fast[i], s, describeMismatch(i, x[i], fast[i], s));
        }
}

void TestQuantFormats::fakeQuantFastPathMatchesScalarTwin_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("layout"); // tensor | channel | group
    QTest::addColumn<bool>("stochastic");
    for (const char* f : {"int8", "int4", "uint8", "int16", "int2"})
        for (const char* l : {"tensor", "channel", "group"})
            for (bool s : {false, true})
                QTest::newRow((std::string(f) + " " + l + (s ? " stochastic" : " nearest")).c_str()) << f << l << s;
}

void TestQuantFormats::fakeQuantFastPathMatchesScalarTwin()
{
    QFETCH(QString, format);
    QFETCH(QString, layout);
    QFETCH(bool, stochastic);
    const NumberFormat& f = findFormat(format.toStdString());
    const Rounding r = stochastic ? Rounding::Stochastic : Rounding::Nearest;
    // (rows, row) with a row length that is not a multiple of the group size.
    const std::size_t rows = 300, row = 291, group = 32;
    std::vector<float> x(rows * row);
    Rng rng(31);
    for (float& v : x) v = rng.uniform(-1.0f, 1.0f) * (rng.uniform() < 0.01f ? 50.0f : 1.0f);
    // An exact tie of the grid and non-finite values.
    x[3] = 0.625f;
    x[4] = kInf;
    x[5] = -kInf;
    x[6] = kNaN;
    const std::size_t slotN = layout == "tensor" ? 1 : slotCount(x.size(), row, layout == "group" ? group : row);
    RangeObserver obs(Calibration::Percentile, slotN, row, layout == "group" ? group : row, 99.0f);
    std::vector<float> finite = x;
    for (float& v : finite) v = std::isfinite(v) ? v : 0.0f;
    obs.observe(finite);
    QuantParams p = obs.params(f);
    p.scale[0] = 0.25f; // 0.625 / 0.25 = 2.5: a tie, to even 2
    std::vector<float> yFast(x.size()), yRef(x.size());
    std::vector<std::uint8_t> mFast(x.size()), mRef(x.size());
    fakeQuantize(x, p, yFast, mFast, r, 9);
    fakeQuantizeRef(x, p, yRef, mRef, r, 9);
    for (std::size_t i = 0; i < x.size(); ++i) {
        QS_VERIFY_SAME(yFast[i], yRef[i], describeMismatch(i, x[i], yFast[i], yRef[i]));
        QCOMPARE(mFast[i], mRef[i]);
    }
    if (r == Rounding::Nearest && f.qmax - p.zeroPoint[0] >= 3) QCOMPARE(yFast[3], 0.5f);
    QCOMPARE(mFast[4], std::uint8_t{0});  // +inf: clipped, no gradient
    QVERIFY(std::isnan(yFast[6]) && mFast[6] == 0);
}

QTEST_GUILESS_MAIN(TestQuantFormats)
#include "tst_quant_formats.moc"
