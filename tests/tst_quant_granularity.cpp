// Weight and activation quantizers: how many scales each granularity gives and which values
// share them, bias rules, straight-through gradient masks, per-layer statistics (grid-aligned
// histograms, SQNR), calibration methods against outliers, and the error metrics.
#include "quant/activation_quantizer.h"
#include "quant/float_cast.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/histogram.h"
#include "quant/metrics.h"
#include "quant/observer.h"
#include "quant/quantize.h"
#include "quant/weight_quantizer.h"
#include "util/errors.h"
#include "util/rng.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

using namespace quantscope;

namespace {

constexpr float kPi = 3.14159265358979f;
// A quantized value divided by its scale is an integer up to float rounding of the division.
constexpr double kOnGridTol = 1e-3;
// Uniform quantization gains ~6.02 dB per bit; on Gaussian data with max-abs scaling the
// step from b to b+1 bits stays within this band once b >= 4.
constexpr double kDbPerBitLow = 5.0, kDbPerBitHigh = 7.0;
// Percentile estimated from a bounded sample vs the exact percentile (relative).
constexpr double kSampledPercentileRtol = 0.05;
// Floating-point sums in double of float data.
constexpr double kMetricTol = 1e-9;
// Round to nearest moves a value by at most half a step (plus float rounding of x / scale).
constexpr float kHalfStep = 0.5001f;
// Bin edges are computed in double from float scales.
constexpr double kEdgeRtol = 1e-6;

std::vector<float> gaussian(std::size_t n, std::uint64_t seed, float sigma = 1.0f)
{
    Rng rng(seed);
    std::vector<float> v(n);
    for (float& x : v) {
        const float u1 = std::max(rng.uniform(), 1e-7f), u2 = rng.uniform();
        x = sigma * std::sqrt(-2.0f * std::log(u1)) * std::cos(2.0f * kPi * u2);
    }
    return v;
}

Param makeParam(const Shape& shape, std::uint64_t seed, float sigma = 0.1f, bool weight = true)
{
    Param p;
    p.name = weight ? "weight" : "bias";
    p.isWeight = weight;
    p.value = Tensor(shape, gaussian(shapeNumel(shape), seed, sigma));
    p.grad = Tensor(shape, 1.0f);
    return p;
}

// A conv layer's parameters: weight (64, 32, 3, 3) and bias (64).
struct ConvParams {
    Param weight = makeParam({64, 32, 3, 3}, 1);
    Param bias = makeParam({64}, 2, 0.05f, false);
    std::vector<WeightTarget> targets() { return {{"conv", &weight, &bias}}; }
};

bool onGrid(float y, float scale, std::int32_t zp, int qmin, int qmax)
{
    const double q = static_cast<double>(y) / scale + zp;
    return std::abs(q - std::nearbyint(q)) < kOnGridTol && q >= qmin - kOnGridTol && q <= qmax + kOnGridTol;
}

double sqnrOf(const std::vector<float>& x, const NumberFormat& f, Calibration c, float percentile = 99.99f)
{
    std::vector<float> y(x.size());
    if (f.kind == FormatKind::Int) {
        RangeObserver obs(c, 1, 0, 0, percentile);
        obs.observe(x);
        fakeQuantize(x, obs.params(f), y, {});
    } else {
        y = x;
        roundToFormat(y, f, Rounding::Nearest);
    }
    return sqnrDb(x, y);
}

} // namespace

class TestQuantGranularity : public QObject {
    Q_OBJECT

private slots:
    void scaleCounts_data();
    void scaleCounts();
    void globalSharesOneScaleAcrossLayers();
    void groupsWithRaggedRows();
    void valuesUseTheirOwnSlotScale_data();
    void valuesUseTheirOwnSlotScale();
    void biasRules();
    void masksStopGradientsOutsideTheClipRange();
    void floatFormatsIgnoreGranularity();
    void stats_data();
    void stats();
    void sqnrIncreasesWithBits();
    void floatFormatsRankBySqnr();
    void calibrationAgainstOutliers_data();
    void calibrationAgainstOutliers();
    void sampledPercentileIsCloseAndDeterministic();
    void movingAverageWeightRanges();
    void applyDoesNotDependOnThreads();
    void activationQuantizer();
    void activationQuantizerFloatFormat();
    void metrics();
    void histogramEdges();
};

void TestQuantGranularity::scaleCounts_data()
{
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<int>("weightScales");
    QTest::addColumn<int>("biasScales");
    QTest::addColumn<bool>("biasSharesWeightScale");
    // Weight (64, 32, 3, 3): rows of 288.
    QTest::newRow("global") << "global" << 1 << 1 << false;
    QTest::newRow("layer") << "layer" << 1 << 1 << false;
    QTest::newRow("tensor") << "tensor" << 1 << 1 << false;
    QTest::newRow("channel") << "channel" << 64 << 1 << false;
    QTest::newRow("group:32 (9 per row)") << "group:32" << 64 * 9 << 1 << false;
    QTest::newRow("group:100 (100,100,88)") << "group:100" << 64 * 3 << 1 << false;
    QTest::newRow("group:288 = channel") << "group:288" << 64 << 1 << false;
    QTest::newRow("group:1000 > row") << "group:1000" << 64 << 1 << false;
}

void TestQuantGranularity::scaleCounts()
{
    QFETCH(QString, granularity);
    QFETCH(int, weightScales);
    QFETCH(int, biasScales);
    QFETCH(bool, biasSharesWeightScale);
    ConvParams conv;
    auto targets = conv.targets();
    WeightQuantizer q(findFormat("int8"), parseGranularity(granularity.toStdString()), Calibration::MinMax,
                      Rounding::Nearest);
    q.apply(targets, 1);
    QCOMPARE(q.weightParams(0).numSlots(), std::size_t(weightScales));
    QCOMPARE(q.biasParams(0).numSlots(), std::size_t(biasScales));
    QCOMPARE(q.biasParams(0).scale == q.weightParams(0).scale, biasSharesWeightScale);
    QVERIFY(conv.weight.hasOverride && conv.bias.hasOverride);
    QCOMPARE(conv.weight.override.shape(), conv.weight.value.shape());
    QCOMPARE(q.weightMask(0).size(), conv.weight.value.numel());
    const auto stats = q.stats(1, targets);
    QCOMPARE(stats.size(), std::size_t{1});
    QCOMPARE(stats[0].scales.size(), std::size_t(weightScales));
    QCOMPARE(stats[0].granularity, parseGranularity(granularity.toStdString()).label());
}

void TestQuantGranularity::globalSharesOneScaleAcrossLayers()
{
    Param w1 = makeParam({8, 4}, 3, 0.1f), b1 = makeParam({8}, 4, 0.1f, false);
    Param w2 = makeParam({6, 8}, 5, 1.0f), b2 = makeParam({6}, 6, 0.1f, false);
    w2.value[7] = 9.0f; // the model's largest magnitude
    std::vector<WeightTarget> targets = {{"fc1", &w1, &b1}, {"fc2", &w2, &b2}};
    WeightQuantizer global(findFormat("int8"), parseGranularity("global"), Calibration::MinMax, Rounding::Nearest);
    global.apply(targets, 0);
    QCOMPARE(global.weightParams(0).scale, std::vector<float>{9.0f / 127.5f});
    QCOMPARE(global.weightParams(1).scale, global.weightParams(0).scale);
    QVERIFY(global.biasParams(0).scale != global.weightParams(0).scale); // a bias keeps its own range
    WeightQuantizer layer(findFormat("int8"), parseGranularity("layer"), Calibration::MinMax, Rounding::Nearest);
    layer.apply(targets, 0);
    QCOMPARE(layer.weightParams(1).scale, std::vector<float>{9.0f / 127.5f});
    QVERIFY(layer.weightParams(0).scale[0] < 1.0f / 127.5f);
}

void TestQuantGranularity::groupsWithRaggedRows()
{
    // Rows of 10, groups of 4: [0,4) [4,8) [8,10) -> 3 slots per row, the last one of 2 values.
    Param w;
    w.value = Tensor({3, 10}, 0.01f);
    w.grad = Tensor({3, 10});
    w.value[1 * 10 + 9] = -8.0f; // only slot 1 * 3 + 2 sees it
    std::vector<WeightTarget> targets = {{"fc", &w, nullptr}};
    WeightQuantizer q(findFormat("int8"), parseGranularity("group:4"), Calibration::MinMax, Rounding::Nearest);
    q.apply(targets, 0);
    const QuantParams& p = q.weightParams(0);
    QCOMPARE(p.numSlots(), std::size_t{9});
    QCOMPARE(p.groupsPerRow(), std::size_t{3});
    const std::size_t expectedSlot[10] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    for (std::size_t r = 0; r < 3; ++r)
        for (std::size_t j = 0; j < 10; ++j) QCOMPARE(p.slotOf(r * 10 + j), r * 3 + expectedSlot[j]);
    for (std::size_t s = 0; s < 9; ++s) QCOMPARE(p.scale[s], s == 5 ? 8.0f / 127.5f : 0.01f / 127.5f);
    QVERIFY(std::abs(w.override[19] + 8.0f) <= kHalfStep * p.scale[5]); // -127.5 steps: -127 or -128
    QCOMPARE(w.override[18], 0.0f); // 0.01 is below half a step of -8's group
    QVERIFY(std::abs(w.override[17] - 0.01f) <= kHalfStep * p.scale[4]); // its own group's fine grid
}

void TestQuantGranularity::valuesUseTheirOwnSlotScale_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    for (const char* f : {"int8", "int4", "uint8", "uint3"})
        for (const char* g : {"tensor", "channel", "group:32", "group:100"})
            QTest::newRow((std::string(f) + " " + g).c_str()) << f << g;
}

void TestQuantGranularity::valuesUseTheirOwnSlotScale()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    const NumberFormat& f = findFormat(format.toStdString());
    ConvParams conv;
    auto targets = conv.targets();
    WeightQuantizer q(f, parseGranularity(granularity.toStdString()), Calibration::MinMax, Rounding::Stochastic);
    q.apply(targets, 5);
    const QuantParams& p = q.weightParams(0);
    for (std::size_t i = 0; i < conv.weight.value.numel(); ++i) {
        const std::size_t s = p.slotOf(i);
        if (!onGrid(conv.weight.override[i], p.scale[s], p.zeroPoint[s], f.qmin, f.qmax))
            QFAIL(qPrintable(QStringLiteral("element %1 is off its slot's grid").arg(i)));
        // Min-max ranges clip nothing: every value is within one step of its original. (The mask
        // may still stop the extreme value: like PyTorch, x / scale = 127.5 rounds to 128 > qmax.)
        const float err = std::abs(conv.weight.override[i] - conv.weight.value[i]);
        QVERIFY(err <= p.scale[s] * 2.0f * kHalfStep);
        QVERIFY(q.weightMask(0)[i] == 1 || err <= p.scale[s] * kHalfStep);
    }
}

void TestQuantGranularity::biasRules()
{
    ConvParams conv;
    auto targets = conv.targets();
    float wmax = 0.0f, bmax = 0.0f;
    for (float v : conv.weight.value.values()) wmax = std::max(wmax, std::abs(v));
    for (float v : conv.bias.value.values()) bmax = std::max(bmax, std::abs(v));
    conv.bias.value[3] = 2.0f * wmax; // the bias dominates the layer's range
    WeightQuantizer channel(findFormat("int8"), parseGranularity("channel"), Calibration::MinMax, Rounding::Nearest);
    channel.apply(targets, 0);
    QCOMPARE(channel.biasParams(0).scale, std::vector<float>{2.0f * wmax / 127.5f}); // its own, per tensor
    QVERIFY(*std::max_element(channel.weightParams(0).scale.begin(), channel.weightParams(0).scale.end()) <=
            wmax / 127.5f);
    // Layer and global ranges hold the weights only: an int bias stays float (int32 in the
    // export), so a large bias must not coarsen the weights' grid (tester 13, F5).
    for (const char* g : {"layer", "global"}) {
        WeightQuantizer q(findFormat("int8"), parseGranularity(g), Calibration::MinMax, Rounding::Nearest);
        q.apply(targets, 0);
        QCOMPARE(q.weightParams(0).scale, std::vector<float>{wmax / 127.5f});
        QCOMPARE(q.biasParams(0).scale, std::vector<float>{2.0f * wmax / 127.5f});
        QCOMPARE(conv.bias.override[3], conv.bias.value[3]); // float, unrounded
    }
}

void TestQuantGranularity::masksStopGradientsOutsideTheClipRange()
{
    ConvParams conv;
    auto targets = conv.targets();
    conv.weight.value[100] = 5.0f; // outliers a percentile range clips
    conv.weight.value[2000] = -6.0f;
    WeightQuantizer pct(findFormat("int8"), parseGranularity("tensor"), Calibration::Percentile, Rounding::Nearest, 99.0f);
    pct.apply(targets, 0);
    const QuantParams& p = pct.weightParams(0);
    pct.maskGradients(targets);
    std::size_t zeroed = 0;
    for (std::size_t i = 0; i < conv.weight.value.numel(); ++i) {
        const float x = conv.weight.value[i];
        const bool inside = x >= p.clipLow(0) - p.scale[0] / 2 && x <= p.clipHigh(0) + p.scale[0] / 2;
        if (!inside) {
            QCOMPARE(conv.weight.grad[i], 0.0f);
            ++zeroed;
        } else if (std::abs(x) < p.clipHigh(0) * 0.99f) {
            QCOMPARE(conv.weight.grad[i], 1.0f);
        }
    }
    QVERIFY(zeroed >= 2);
    QCOMPARE(conv.weight.grad[100], 0.0f);
    QCOMPARE(conv.weight.override[100], p.clipHigh(0));
    // Min-max never clips, so no gradient is stopped.
    for (float& g : conv.weight.grad.values()) g = 1.0f;
    WeightQuantizer mm(findFormat("int8"), parseGranularity("tensor"), Calibration::MinMax, Rounding::Nearest);
    mm.apply(targets, 0);
    mm.maskGradients(targets);
    for (float g : conv.weight.grad.values()) QCOMPARE(g, 1.0f);
    // Masking needs an apply() for the same layers first.
    WeightQuantizer fresh(findFormat("int8"), parseGranularity("tensor"), Calibration::MinMax, Rounding::Nearest);
    QVERIFY_THROWS_EXCEPTION(ConfigError, fresh.maskGradients(targets));
    QVERIFY_THROWS_EXCEPTION(ConfigError, (void)fresh.stats(1, targets));
}

void TestQuantGranularity::floatFormatsIgnoreGranularity()
{
    for (const char* name : {"fp16", "bf16", "fp8-e4m3", "fp8-e5m2", "mxfp4", "mxint8", "mxfp8-e4m3"}) {
        const NumberFormat& f = findFormat(name);
        ConvParams conv;
        conv.weight.value[5] = 1e6f; // beyond fp8/fp16 range: no gradient for plain float formats
        auto targets = conv.targets();
        std::vector<float> expected = conv.weight.value.values();
        roundToFormat(expected, f, Rounding::Nearest);
        for (const char* g : {"tensor", "channel", "group:32"}) {
            WeightQuantizer q(f, parseGranularity(g), Calibration::MinMax, Rounding::Nearest);
            q.apply(targets, 0);
            QVERIFY2(conv.weight.override.values() == expected, name);
            if (isMxFormat(f)) {
                QCOMPARE(q.weightParams(0).scale, mxBlockScales(conv.weight.value.values(), f));
                QCOMPARE(q.weightParams(0).numSlots(), (conv.weight.value.numel() + 31) / 32);
                QCOMPARE(q.weightMask(0)[5], std::uint8_t{1});
            } else {
                QVERIFY(q.weightParams(0).scale.empty());
                QCOMPARE(q.weightMask(0)[5], std::uint8_t{f.maxFinite >= 1e6f});
            }
        }
    }
}

void TestQuantGranularity::stats_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("calibration");
    QTest::newRow("int8 tensor") << "int8" << "tensor" << "minmax";
    QTest::newRow("int4 channel") << "int4" << "channel" << "minmax";
    QTest::newRow("int2 channel (split steps)") << "int2" << "channel" << "minmax";
    QTest::newRow("uint8 group:32") << "uint8" << "group:32" << "minmax";
    QTest::newRow("int16 tensor (merged levels)") << "int16" << "tensor" << "minmax";
    QTest::newRow("int4 tensor percentile") << "int4" << "tensor" << "percentile";
    QTest::newRow("int8 channel mse") << "int8" << "channel" << "mse";
    QTest::newRow("fp8-e4m3") << "fp8-e4m3" << "channel" << "minmax";
    QTest::newRow("fp16") << "fp16" << "channel" << "minmax";
    QTest::newRow("mxfp4") << "mxfp4" << "channel" << "minmax";
}

void TestQuantGranularity::stats()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, calibration);
    const NumberFormat& f = findFormat(format.toStdString());
    ConvParams conv;
    conv.weight.value[10] = 1.5f; // an outlier for percentile to clip
    auto targets = conv.targets();
    WeightQuantizer q(f, parseGranularity(granularity.toStdString()), parseCalibration(calibration.toStdString()),
                      Rounding::Nearest, 99.0f);
    q.apply(targets, 3);
    const std::vector<LayerStats> all = q.stats(7, targets);
    QCOMPARE(all.size(), std::size_t{1});
    const LayerStats& s = all[0];
    const std::size_t n = conv.weight.value.numel();
    QCOMPARE(s.epoch, std::size_t{7});
    QCOMPARE(s.layer, std::string("conv"));
    QCOMPARE(s.tensor, std::string("weight"));
    QCOMPARE(s.format, f.name);
    QCOMPARE(s.channelMin.size(), std::size_t{64});
    QCOMPARE(s.channelMax.size(), std::size_t{64});
    QCOMPARE(s.tensorMax, 1.5f);
    QCOMPARE(s.channelMax[0], 1.5f);
    // Shared bins, every weight counted once in each histogram.
    QVERIFY(s.binEdges.size() >= 2 && s.binEdges.size() <= kMaxHistogramBins + 1);
    QCOMPARE(s.fp32Hist.size(), s.binEdges.size() - 1);
    QCOMPARE(s.quantHist.size(), s.binEdges.size() - 1);
    QCOMPARE(std::accumulate(s.fp32Hist.begin(), s.fp32Hist.end(), std::uint64_t{0}), std::uint64_t(n));
    QCOMPARE(std::accumulate(s.quantHist.begin(), s.quantHist.end(), std::uint64_t{0}), std::uint64_t(n));
    QVERIFY(std::is_sorted(s.binEdges.begin(), s.binEdges.end()));
    QVERIFY(s.binEdges.front() <= s.tensorMin && s.binEdges.back() >= s.tensorMax);
    // The figures are those of what apply() wrote.
    const ErrorMetrics em = errorMetrics(conv.weight.value.values(), conv.weight.override.values());
    QCOMPARE(s.mse, em.mse);
    QCOMPARE(s.maxAbsError, em.maxAbsError);
    QCOMPARE(s.sqnrDb, em.sqnrDb);
    QVERIFY(s.sqnrDb > 0.0);
    QVERIFY(s.clipLow < 0.0f && s.clipHigh > 0.0f);
    if (f.kind == FormatKind::Int) {
        QCOMPARE(s.scales, q.weightParams(0).scale);
        QCOMPARE(s.zeroPoints, q.weightParams(0).zeroPoint);
        // Bins follow the grid of the largest scale: each bin is a whole number of steps wide, or
        // (several scales on a coarse grid) an odd fraction of a step, so that every quantized value
        // of a slot with that scale sits at a bin centre.
        const float big = *std::max_element(s.scales.begin(), s.scales.end());
        const double width = s.binEdges[1] - s.binEdges[0];
        const double split = big / width;
        const bool wholeSteps = std::abs(width / big - std::nearbyint(width / big)) < kEdgeRtol;
        const bool oddSplit = s.scales.size() > 1 && std::abs(split - std::nearbyint(split)) < 1e-3 && std::lround(split) % 2 == 1;
        QVERIFY2(wholeSteps || oddSplit, qPrintable(QString("bin %1, step %2").arg(width).arg(big)));
        if (s.scales.size() > 1) QVERIFY2(s.fp32Hist.size() >= 24, qPrintable(QString::number(s.fp32Hist.size()))); // int2 per channel too
        for (std::size_t k = 0; k < s.scales.size() && width <= big * (1.0 + kEdgeRtol); ++k) // the widest slot's levels at bin centres
            if (s.scales[k] == big)
                for (std::size_t i = 0; i < n; ++i)
                    if (q.weightParams(0).slotOf(i) == k) {
                        const double v = conv.weight.override[i], pos = (v - s.binEdges[0]) / width - 0.5;
                        QVERIFY2(std::abs(pos - std::nearbyint(pos)) < 1e-3, qPrintable(QString("value %1 off-centre").arg(v)));
                    }
        // Per tensor with <= 8 bits: exactly one bin per level.
        if (f.bits <= 8 && granularity == "tensor") QVERIFY(std::abs(width - big) <= kEdgeRtol * big);
        if (calibration == "percentile") QVERIFY(s.clippedFraction >= 1.0 / double(n)); // the outlier
        if (calibration == "minmax") QCOMPARE(s.clippedFraction, 0.0);
    } else if (f.kind == FormatKind::Float && f.bits == 8) {
        // One bin per representable fp8 value: distinct quantized values never share a bin.
        std::vector<float> distinct = conv.weight.override.values();
        std::sort(distinct.begin(), distinct.end());
        distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
        const auto used = std::count_if(s.quantHist.begin(), s.quantHist.end(), [](std::uint64_t c) { return c > 0; });
        QCOMPARE(std::size_t(used), distinct.size());
    } else if (isMxFormat(f)) {
        QCOMPARE(s.scales.size(), (n + 31) / 32);
    }
}

void TestQuantGranularity::sqnrIncreasesWithBits()
{
    const std::vector<float> x = gaussian(50000, 9);
    double previous = -1e9;
    for (int b = 2; b <= 16; ++b) {
        const double db = sqnrOf(x, findFormat("int" + std::to_string(b)), Calibration::MinMax);
        QVERIFY2(db > previous, qPrintable(QStringLiteral("int%1: %2 dB").arg(b).arg(db)));
        if (b >= 5) {
            QVERIFY2(db - previous >= kDbPerBitLow && db - previous <= kDbPerBitHigh,
                     qPrintable(QStringLiteral("int%1: +%2 dB").arg(b).arg(db - previous)));
        }
        previous = db;
    }
    // Affine formats, too.
    QVERIFY(sqnrOf(x, findFormat("uint8"), Calibration::MinMax) > sqnrOf(x, findFormat("uint4"), Calibration::MinMax));
}

void TestQuantGranularity::floatFormatsRankBySqnr()
{
    const std::vector<float> x = gaussian(50000, 10);
    const double e5m2 = sqnrOf(x, findFormat("fp8-e5m2"), Calibration::MinMax);
    const double e4m3 = sqnrOf(x, findFormat("fp8-e4m3"), Calibration::MinMax);
    const double bf16 = sqnrOf(x, findFormat("bf16"), Calibration::MinMax);
    const double fp16 = sqnrOf(x, findFormat("fp16"), Calibration::MinMax);
    const double mxfp4 = sqnrOf(x, findFormat("mxfp4"), Calibration::MinMax);
    const double mxfp8 = sqnrOf(x, findFormat("mxfp8-e4m3"), Calibration::MinMax);
    qInfo("SQNR dB: mxfp4 %.1f, e5m2 %.1f, e4m3 %.1f, mxfp8 %.1f, bf16 %.1f, fp16 %.1f", mxfp4, e5m2, e4m3, mxfp8,
          bf16, fp16);
    QVERIFY(mxfp4 < e5m2);
    QVERIFY(e5m2 < e4m3); // one more mantissa bit
    QVERIFY(e4m3 < bf16);
    QVERIFY(bf16 < fp16);
}

void TestQuantGranularity::calibrationAgainstOutliers_data()
{
    QTest::addColumn<QString>("calibration");
    QTest::addColumn<QString>("format");
    QTest::addColumn<double>("minGainDb"); // SQNR over all data, vs min-max
    // One 40-sigma outlier among 10,000 values carries 14% of the signal energy, so clipping it
    // costs SQNR too: at 4 bits the finer grid for everything else wins by far.
    QTest::newRow("percentile int4") << "percentile" << "int4" << 6.0;
    QTest::newRow("percentile uint4") << "percentile" << "uint4" << 3.0;
    QTest::newRow("mse int4") << "mse" << "int4" << 6.0;
    QTest::newRow("mse uint4") << "mse" << "uint4" << 3.0;
    // At 8 bits clipping the outlier is not worth it; MSE finds that and never does worse.
    QTest::newRow("mse int8 (never worse)") << "mse" << "int8" << 0.0;
    QTest::newRow("mse int6 (never worse)") << "mse" << "int6" << 0.0;
}

void TestQuantGranularity::calibrationAgainstOutliers()
{
    QFETCH(QString, calibration);
    QFETCH(QString, format);
    QFETCH(double, minGainDb);
    std::vector<float> x = gaussian(10000, 12);
    x[1234] = 40.0f; // a 40-sigma outlier
    const NumberFormat& f = findFormat(format.toStdString());
    const double minmax = sqnrOf(x, f, Calibration::MinMax);
    const double other = sqnrOf(x, f, parseCalibration(calibration.toStdString()), 99.9f);
    qInfo("%s %s: %.2f dB vs min-max %.2f dB", calibration.toStdString().c_str(), f.name.c_str(), other, minmax);
    QVERIFY2(other - minmax >= minGainDb, qPrintable(QStringLiteral("%1 vs %2 dB").arg(other).arg(minmax)));
}

void TestQuantGranularity::sampledPercentileIsCloseAndDeterministic()
{
    // 400k values is far beyond one slot's sample: the percentile comes from a hashed subset.
    const std::vector<float> x = gaussian(400000, 13);
    std::vector<float> a = x;
    for (float& v : a) v = std::abs(v);
    std::sort(a.begin(), a.end());
    const float exact = a[static_cast<std::size_t>(0.999 * (a.size() - 1))];
    auto estimate = [&](std::size_t batches) {
        RangeObserver obs(Calibration::Percentile, 1, 0, 0, 99.9f);
        const std::size_t step = x.size() / batches;
        for (std::size_t b = 0; b < batches; ++b) obs.observe(std::span<const float>(x.data() + b * step, step));
        std::vector<float> lo, hi;
        obs.clipRange(findFormat("int8"), lo, hi);
        return hi[0];
    };
    const float one = estimate(1), again = estimate(1), many = estimate(40);
    QCOMPARE(one, again);
    // The subset is chosen by position in the stream, so batch boundaries do not matter.
    QCOMPARE(many, one);
    QVERIFY2(std::abs(one - exact) <= kSampledPercentileRtol * exact,
             qPrintable(QStringLiteral("%1 vs exact %2").arg(one).arg(exact)));
}

void TestQuantGranularity::movingAverageWeightRanges()
{
    Param w;
    w.value = Tensor({4, 4}, 0.5f);
    w.value[0] = -1.0f;
    w.value[1] = 1.0f;
    w.grad = Tensor({4, 4});
    std::vector<WeightTarget> targets = {{"fc", &w, nullptr}};
    WeightQuantizer q(findFormat("int8"), parseGranularity("tensor"), Calibration::MovingAverage, Rounding::Nearest);
    q.apply(targets, 0);
    QCOMPARE(q.weightParams(0).scale[0], 1.0f / 127.5f);
    w.value[1] = 3.0f;
    q.apply(targets, 0);
    // max: 1 + 0.01 * (3 - 1) = 1.02
    QCOMPARE(q.weightParams(0).scale[0], (1.0f + 0.01f * 2.0f) / 127.5f);
    q.reset();
    q.apply(targets, 0);
    QCOMPARE(q.weightParams(0).scale[0], 3.0f / 127.5f);
}

void TestQuantGranularity::applyDoesNotDependOnThreads()
{
    auto run = [](int threads, const char* format, const char* gran) {
        Param w = makeParam({128, 1024}, 21), b = makeParam({128}, 22, 0.1f, false);
        std::vector<WeightTarget> targets = {{"fc1", &w, &b}};
        WeightQuantizer q(findFormat(format), parseGranularity(gran), Calibration::Percentile, Rounding::Stochastic);
        tbb::task_arena arena(threads);
        arena.execute([&] { q.apply(targets, 99); });
        return w.override.values();
    };
    for (const char* format : {"int4", "fp8-e4m3", "mxfp4"})
        for (const char* gran : {"tensor", "channel", "group:64"})
            QVERIFY2(run(1, format, gran) == run(2, format, gran), format);
}

void TestQuantGranularity::activationQuantizer()
{
    ActivationQuantizer act(findFormat("uint8"), Calibration::MovingAverage);
    QVERIFY(!act.ready());
    Tensor y({2, 8}, 0.0f);
    std::vector<std::uint8_t> mask;
    QVERIFY_THROWS_EXCEPTION(ConfigError, act.fakeQuantize(y, mask));
    act.observe(std::vector<float>{}); // an empty batch (or only NaN) gives no range
    act.observe(std::vector<float>{NAN, NAN});
    QVERIFY(!act.ready());

    RangeObserver reference(Calibration::MovingAverage);
    const std::vector<float> batch1 = gaussian(256, 30), batch2 = gaussian(256, 31, 3.0f);
    act.observe(batch1);
    reference.observe(batch1);
    QVERIFY(act.ready());
    act.observe(batch2);
    reference.observe(batch2);
    const QuantParams expected = reference.params(findFormat("uint8"));
    QCOMPARE(act.params().scale, expected.scale);
    QCOMPARE(act.params().zeroPoint, expected.zeroPoint);

    // Frozen: further batches do not move the range.
    act.setObserving(false);
    act.observe(gaussian(256, 32, 100.0f));
    QCOMPARE(act.params().scale, expected.scale);

    Tensor t({4, 64}, gaussian(256, 33, 2.0f));
    t[0] = 1000.0f; // clipped: no gradient
    const Tensor original = t;
    act.fakeQuantize(t, mask);
    QCOMPARE(mask.size(), t.numel());
    QCOMPARE(mask[0], std::uint8_t{0});
    for (std::size_t i = 0; i < t.numel(); ++i)
        QVERIFY(onGrid(t[i], expected.scale[0], expected.zeroPoint[0], 0, 255));
    std::vector<float> direct(t.numel());
    fakeQuantize(original.values(), expected, direct, {});
    QVERIFY(t.values() == direct);

    act.reset();
    QVERIFY(!act.ready());
}

void TestQuantGranularity::activationQuantizerFloatFormat()
{
    ActivationQuantizer act(findFormat("fp8-e4m3"));
    QVERIFY(act.ready()); // no observer needed
    Tensor t({3}, std::vector<float>{1.0625f, 500.0f, -0.1f});
    std::vector<std::uint8_t> mask;
    act.fakeQuantize(t, mask);
    QCOMPARE(t[0], 1.0f);
    QCOMPARE(t[1], 448.0f);
    QCOMPARE(mask, (std::vector<std::uint8_t>{1, 0, 1}));
}

void TestQuantGranularity::metrics()
{
    const std::vector<float> x = {1.0f, 2.0f, 3.0f}, y = {1.0f, 2.0f, 2.0f};
    const ErrorMetrics m = errorMetrics(x, y);
    QVERIFY(std::abs(m.mse - 1.0 / 3.0) < kMetricTol);
    QCOMPARE(m.maxAbsError, 1.0);
    QVERIFY(std::abs(m.sqnrDb - 10.0 * std::log10(14.0)) < kMetricTol);
    QVERIFY(std::isinf(sqnrDb(x, x)));
    QCOMPARE(mse(x, x), 0.0);
    QCOMPARE(maxAbsError(x, y), 1.0);
    QVERIFY_THROWS_EXCEPTION(ConfigError, errorMetrics(x, std::vector<float>{1.0f}));
}

void TestQuantGranularity::histogramEdges()
{
    // Grid of step 0.25 over [-2.6, 1.3]: levels -10..5, one bin each.
    const std::vector<double> e = integerGridEdges(0.25, -2.6, 1.3);
    QCOMPARE(e.size(), std::size_t{17});
    QCOMPARE(e.front(), -2.625);
    QCOMPARE(e.back(), 1.375);
    // 2^16 levels merge into at most 256 bins of whole levels.
    const std::vector<double> wide = integerGridEdges(1.0, -32768.0, 32767.0);
    QVERIFY(wide.size() - 1 <= kMaxHistogramBins);
    QCOMPARE(wide[1] - wide[0], 256.0);
    // Counting: values on edges go to the upper bin; out-of-range values to the end bins.
    const std::vector<std::uint64_t> h = histogram(std::vector<float>{-5.0f, -0.125f, 0.0f, 0.1f, 9.0f, NAN}, e);
    QCOMPARE(h.front(), std::uint64_t{1});
    QCOMPARE(h.back(), std::uint64_t{1});
    QCOMPARE(h[10], std::uint64_t{3}); // level 0: [-0.125, 0.125)
    QCOMPARE(std::accumulate(h.begin(), h.end(), std::uint64_t{0}), std::uint64_t{5}); // NaN skipped
    // fp8 E4M3 values nearest to [0.95, 1.3] and between: 0.9375, 1, 1.125, 1.25.
    const std::vector<double> g = floatGridEdges(findFormat("fp8-e4m3"), 0.95, 1.3);
    QCOMPARE(g.size(), std::size_t{5});
    QCOMPARE(g[1], 0.96875);
    QCOMPARE(g[2], 1.0625);
    QCOMPARE(g[3], 1.1875);
}

QTEST_GUILESS_MAIN(TestQuantGranularity)
#include "tst_quant_granularity.moc"
