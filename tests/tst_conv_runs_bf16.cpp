// The bf16 products over a convolution's runs (tensor/gemm_bf16.h gemmBf16Runs,
// weightGradBf16Runs, and the transposed weight gradient) on every hardware path this CPU runs
// (amx-bf16, avx512-bf16) against their scalar twins; Conv2d on those runs (forward, input and
// weight gradients, strided phase runs) against the emulated path; and the bf16 rounding that lays
// the runs out (roundInterleave2, tensor/bf16.h's span helpers) bit for bit against bf16Bits. The
// GEMM itself and its packers: tst_gemm_bf16.
#include "nn/conv2d.h"
#include "nn/conv2d_runs.h"
#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"
#include "tensor/tensor.h"

#include "bf16_fixtures.h"

#include <QtTest>

#include <bit>
#include <cstring>
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace quantscope;
using namespace bf16_fixtures;

namespace {

// The hardware paths that read a convolution's runs (gemmBf16Runs, weightGradBf16Runs).
std::vector<Bf16Path> runsPaths()
{
    std::vector<Bf16Path> v;
    for (Bf16Path p : {Bf16Path::Avx512Bf16, Bf16Path::AmxBf16})
        if (bf16PathSupported(p)) v.push_back(p);
    return v;
}

} // namespace

class TestConvRunsBf16 : public QObject {
    Q_OBJECT
private slots:
    void runsProductMatchesScalarTwin_data();
    void runsProductMatchesScalarTwin();
    void runsWeightGradientMatchesScalarTwin_data();
    void runsWeightGradientMatchesScalarTwin();
    void convolutionOnBf16Runs_data();
    void convolutionOnBf16Runs();
    void roundInterleave2IsBf16Bits();
    void phaseRunsBf16AreRoundedPhaseRuns();
    void bf16SpansAreBf16Bits();

private:
    void checkConvolutionOnRuns(Bf16Path path, int cin, int cout, int k, int pad, int H, int stride);
};

void TestConvRunsBf16::runsProductMatchesScalarTwin_data()
{
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("pairs"); // channel pairs per tap
    QTest::addColumn<int>("taps");
    QTest::addColumn<int>("L");
    QTest::newRow("one of each") << 1 << 1 << 1 << 1;
    QTest::newRow("row and column tails") << 13 << 3 << 9 << 37;
    QTest::newRow("two tiles each way") << 32 << 16 << 1 << 64;
    QTest::newRow("24 pairs: chunks of 12") << 20 << 24 << 4 << 50;
    QTest::newRow("seed-cnn conv2 group") << 64 << 16 << 9 << 2703;
}

// Each hardware path over runs (AMX, AVX512_BF16) against the scalar twin: the same exact products
// summed in another order (tolerance()); nothing written past L.
void TestConvRunsBf16::runsProductMatchesScalarTwin()
{
    QFETCH(int, M);
    QFETCH(int, pairs);
    QFETCH(int, taps);
    QFETCH(int, L);
    if (runsPaths().empty()) QSKIP("no AMX-BF16 or AVX512_BF16 on this CPU: convolutions keep the im2col bf16 path");
    std::mt19937 rng(static_cast<unsigned>(M * 7919 + pairs * 131 + taps * 17 + L));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const std::size_t Ms = static_cast<std::size_t>(M), P = static_cast<std::size_t>(pairs), T = static_cast<std::size_t>(taps),
                      Ls = static_cast<std::size_t>(L), K2 = P * T;
    std::vector<float> a(Ms * 2 * K2);
    for (float& v : a) v = nd(rng);
    const std::size_t shift = 29, stride = 4 * (Ls + shift + 1);
    std::vector<std::size_t> tapOffset(T);
    for (std::size_t t = 0; t < T; ++t) tapOffset[t] = 4 * ((t * 7) % shift);
    std::vector<std::uint16_t> runs((P * stride + kRunsRowSlack) / 2);
    for (auto& v : runs) v = bf16Bits(nd(rng) * 0.01f);
    const ConvRuns b{reinterpret_cast<const std::uint8_t*>(runs.data()), stride, tapOffset.data(), T, P};
    const std::size_t ldo = Ls + 2;
    for (Bf16Path path : runsPaths()) {
        PackedBf16Runs packed;
        packBf16RunsA(a.data(), Ms, K2, packed, path);
        std::vector<float> out(Ms * ldo, kGuard), ref(Ms * ldo, kGuard);
        gemmBf16Runs(packed, b, Ls, out.data(), ldo);
        gemmBf16RunsRef(packed, b, Ls, ref.data(), ldo);
        for (std::size_t m = 0; m < Ms; ++m) {
            for (std::size_t l = 0; l < Ls; ++l) {
                double sumAbs = 0.0;
                for (std::size_t g = 0; g < K2; ++g)
                    for (std::size_t j = 0; j < 2; ++j) {
                        std::uint16_t bj;
                        std::memcpy(&bj, b.row(g) + 4 * l + 2 * j, 2);
                        sumAbs += std::fabs(static_cast<double>(bf16ToFloat(packed.data[m * 2 * K2 + 2 * g + j])) * bf16ToFloat(bj));
                    }
                const double got = out[m * ldo + l], want = ref[m * ldo + l];
                if (!(std::fabs(got - want) <= tolerance(2 * K2, sumAbs)))
                    QFAIL(qPrintable(QStringLiteral("%1: out[%2][%3] = %4, twin %5")
                                         .arg(bf16PathName(path))
                                         .arg(m)
                                         .arg(l)
                                         .arg(got, 0, 'g', 9)
                                         .arg(want, 0, 'g', 9)));
            }
            for (std::size_t l = Ls; l < ldo; ++l) QCOMPARE(out[m * ldo + l], kGuard);
        }
    }
}

void TestConvRunsBf16::runsWeightGradientMatchesScalarTwin_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("O");
    QTest::addColumn<int>("taps");
    QTest::addColumn<int>("P");
    QTest::newRow("16 channels, one tap") << 16 << 16 << 1 << 16;
    QTest::newRow("seed-cnn conv2 group") << 32 << 64 << 9 << 1360;
    QTest::newRow("80 outputs: a panel past 64") << 32 << 80 << 4 << 144;
    QTest::newRow("odd rows, 7 outputs") << 16 << 7 << 5 << 48;
    QTest::newRow("3 channels: a row tile spans several taps") << 3 << 70 << 9 << 32;
    // 16 outputs (two pairs a broadcast) over four pair blocks, 25 rows: two tiles and a rest
    QTest::newRow("16 outputs, several pair blocks") << 5 << 16 << 5 << 400;
}

// The weight gradient over runs on each hardware path against its scalar twin (added into a dW
// that already holds values); AVX512_BF16 also takes channel counts that are not multiples of 16.
void TestConvRunsBf16::runsWeightGradientMatchesScalarTwin()
{
    QFETCH(int, C);
    QFETCH(int, O);
    QFETCH(int, taps);
    QFETCH(int, P);
    if (runsPaths().empty()) QSKIP("no AMX-BF16 or AVX512_BF16 on this CPU");
    std::mt19937 rng(static_cast<unsigned>(C * 31 + O * 7 + taps + P));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const std::size_t Cs = static_cast<std::size_t>(C), Os = static_cast<std::size_t>(O), T = static_cast<std::size_t>(taps),
                      Ps = static_cast<std::size_t>(P), Op = (Os + 15) / 16 * 16;
    std::vector<std::size_t> tapOffset(T);
    for (std::size_t t = 0; t < T; ++t) tapOffset[t] = (t * 5) % 23; // odd offsets: unaligned pairs
    const std::size_t xs = 2 * Ps + 24 + 32;
    std::vector<std::uint16_t> x(Cs * xs + kRunsRowSlack);
    for (auto& v : x) v = bf16Bits(nd(rng));
    std::vector<std::uint32_t> dy(Ps * Op, 0);
    for (std::size_t p = 0; p < Ps; ++p)
        for (std::size_t o = 0; o < Os; ++o)
            dy[p * Op + o] = std::uint32_t{bf16Bits(nd(rng) * 0.01f)} | std::uint32_t{bf16Bits(nd(rng) * 0.01f)} << 16;
    std::vector<float> dW0(Os * Cs * T);
    for (float& v : dW0) v = nd(rng);
    for (Bf16Path path : runsPaths()) {
        if (path == Bf16Path::AmxBf16 && Cs % 16) continue;
        const WeightGradRuns a{path, x.data(), 2 * xs, tapOffset.data(), T, Cs, dy.data(), Os, Op, Ps};
        std::vector<float> got = dW0, want = dW0;
        weightGradBf16Runs(a, got.data());
        weightGradBf16RunsRef(a, want.data());
        for (std::size_t o = 0; o < Os; ++o)
            for (std::size_t c = 0; c < Cs; ++c)
                for (std::size_t t = 0; t < T; ++t) {
                    const std::uint16_t* xr = x.data() + c * xs + tapOffset[t];
                    double sumAbs = std::fabs(dW0[(o * Cs + c) * T + t]);
                    for (std::size_t p = 0; p < Ps; ++p) {
                        const std::uint32_t d = dy[p * Op + o];
                        sumAbs += std::fabs(static_cast<double>(bf16ToFloat(xr[2 * p])) * bf16ToFloat(static_cast<std::uint16_t>(d)));
                        sumAbs += std::fabs(static_cast<double>(bf16ToFloat(xr[2 * p + 1])) *
                                            bf16ToFloat(static_cast<std::uint16_t>(d >> 16)));
                    }
                    const std::size_t i = (o * Cs + c) * T + t;
                    if (!(std::fabs(got[i] - want[i]) <= tolerance(2 * Ps + 1, sumAbs)))
                        QFAIL(qPrintable(QStringLiteral("%1: dW[%2] = %3, twin %4")
                                             .arg(bf16PathName(path))
                                             .arg(i)
                                             .arg(got[i], 0, 'g', 9)
                                             .arg(want[i], 0, 'g', 9)));
                }
        if (path != Bf16Path::Avx512Bf16) continue;
        // The transposed layout a convolution keeps its partial sums in: from zero, the same bits
        // as dW from zero, and the padding columns past O stay zero.
        std::vector<float> fromZero(Os * Cs * T, 0.0f), tr(T * Cs * Op, 0.0f);
        weightGradBf16Runs(a, fromZero.data());
        weightGradBf16RunsTransposed(a, tr.data());
        for (std::size_t o = 0; o < Op; ++o)
            for (std::size_t c = 0; c < Cs; ++c)
                for (std::size_t t = 0; t < T; ++t) {
                    const float v = tr[(t * Cs + c) * Op + o];
                    if (o >= Os) {
                        QCOMPARE(v, 0.0f);
                        continue;
                    }
                    const float w = fromZero[(o * Cs + c) * T + t];
                    if (std::bit_cast<std::uint32_t>(v) != std::bit_cast<std::uint32_t>(w) && !(v == 0.0f && w == 0.0f))
                        QFAIL(qPrintable(QStringLiteral("transposed dW^T[%1][%2] = %3, dW %4").arg(t * Cs + c).arg(o).arg(v, 0, 'g', 9).arg(w, 0, 'g', 9)));
                }
    }
}

void TestConvRunsBf16::convolutionOnBf16Runs_data()
{
    QTest::addColumn<int>("cin");
    QTest::addColumn<int>("cout");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("stride");
    QTest::newRow("seed-cnn conv2 shape") << 32 << 64 << 3 << 0 << 26 << 1;
    QTest::newRow("resnet8 padded") << 16 << 16 << 3 << 1 << 14 << 1;
    QTest::newRow("odd channels, 5x5") << 9 << 7 << 5 << 2 << 11 << 1;
    QTest::newRow("48 channels, 20 outputs, 2x2") << 48 << 20 << 2 << 1 << 9 << 1;
    // Strided: forward and backward on the phase runs (backwardStridedBf16)...
    QTest::newRow("stride 2, resnet8 layer2.conv1") << 16 << 32 << 3 << 1 << 28 << 2;
    QTest::newRow("stride 2, odd size and channels") << 9 << 12 << 3 << 1 << 13 << 2;
    QTest::newRow("stride 3, 5x5") << 12 << 8 << 5 << 2 << 17 << 3;
    // ... except where dy's runs do not line up with the phase runs (31 = 3 x 10 + 1 columns: 11
    // phase columns, 10 output columns), which keeps the im2col backward.
    QTest::newRow("stride 3, 2x2, im2col backward") << 8 << 16 << 2 << 0 << 31 << 3;
}

// A convolution over its runs on each hardware path (forward, input and weight gradients) against
// the emulated path on the same bf16 values: within tolerance() of the exact sums; the bias
// gradient bit for bit.
void TestConvRunsBf16::convolutionOnBf16Runs()
{
    QFETCH(int, cin);
    QFETCH(int, cout);
    QFETCH(int, k);
    QFETCH(int, pad);
    QFETCH(int, H);
    QFETCH(int, stride);
    if (runsPaths().empty() || !Conv2d::directKernelsBuilt())
        QSKIP("no AMX-BF16 or AVX512_BF16 on this CPU (or no direct kernels in this build)");
    for (Bf16Path path : runsPaths()) checkConvolutionOnRuns(path, cin, cout, k, pad, H, stride);
}

void TestConvRunsBf16::checkConvolutionOnRuns(Bf16Path path, int cin, int cout, int k, int pad, int H, int stride)
{
    const std::size_t C = static_cast<std::size_t>(cin), O = static_cast<std::size_t>(cout), K = static_cast<std::size_t>(k);
    const std::size_t P = static_cast<std::size_t>(pad), Hs = static_cast<std::size_t>(H), N = 5;
    std::mt19937 rng(static_cast<unsigned>(cin * 31 + cout));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const std::size_t S = static_cast<std::size_t>(stride);
    Conv2d hw("hw", C, O, K, S, P), emu("emu", C, O, K, S, P), absConv("abs", C, O, K, S, P);
    for (float& w : hw.weight().value.values()) w = roundBf16(nd(rng) * 0.1f);
    for (float& b : hw.bias().value.values()) b = nd(rng);
    emu.weight().value = hw.weight().value;
    emu.bias().value = hw.bias().value;
    absConv.weight().value = hw.weight().value;
    for (float& w : absConv.weight().value.values()) w = std::fabs(w);
    absConv.bias().value.fill(0.0f);
    hw.setBf16Products(path);
    Tensor x({N, C, Hs, Hs});
    for (float& v : x.values()) v = roundBf16(nd(rng));
    Tensor ax = x;
    for (float& v : ax.values()) v = std::fabs(v);
    RunContext ctx;
    ctx.training = true;
    Tensor y, yEmu, yAbs;
    hw.forward(x, y, ctx);
    emu.forward(x, yEmu, ctx);
    absConv.forward(ax, yAbs, ctx);
    const double Kf = static_cast<double>(C * K * K);
    for (std::size_t i = 0; i < y.numel(); ++i)
        if (!(std::fabs(y[i] - yEmu[i]) <= tolerance(static_cast<std::size_t>(Kf), yAbs[i]) + 2.0 * FLT_EPSILON * std::fabs(yEmu[i])))
            QFAIL(qPrintable(QStringLiteral("%1: y[%2] = %3, emulated %4").arg(bf16PathName(path)).arg(i).arg(y[i], 0, 'g', 9).arg(yEmu[i], 0, 'g', 9)));
    Tensor dy(y.shape()), ady(y.shape());
    for (std::size_t i = 0; i < dy.numel(); ++i) {
        dy[i] = roundBf16(nd(rng) * 0.01f);
        ady[i] = std::fabs(dy[i]);
    }
    Tensor dx, dxEmu, dxAbs;
    hw.backward(x, y, dy, dx, true);
    emu.backward(x, yEmu, dy, dxEmu, true);
    absConv.backward(ax, yAbs, ady, dxAbs, true);
    const std::size_t K2 = O * K * K;
    for (std::size_t i = 0; i < dx.numel(); ++i)
        if (!(std::fabs(dx[i] - dxEmu[i]) <= tolerance(K2, dxAbs[i])))
            QFAIL(qPrintable(QStringLiteral("%1: dx[%2] = %3, emulated %4").arg(bf16PathName(path)).arg(i).arg(dx[i], 0, 'g', 9).arg(dxEmu[i], 0, 'g', 9)));
    // dW: in bf16 too, on AMX where the input channels fill whole tiles (multiples of 16), else the
    // FP32 direct kernel (bit for bit); N Ho Wo terms each.
    const Tensor& gw = hw.weight().grad;
    const Tensor& gwEmu = emu.weight().grad;
    const std::size_t terms = N * y.dim(2) * y.dim(3);
    if (path == Bf16Path::AmxBf16 && C % 16 != 0 && S == 1) QVERIFY(std::memcmp(gw.data(), gwEmu.data(), gw.numel() * sizeof(float)) == 0);
    for (std::size_t i = 0; i < gw.numel(); ++i)
        if (!(std::fabs(gw[i] - gwEmu[i]) <= tolerance(terms, absConv.weight().grad[i])))
            QFAIL(qPrintable(QStringLiteral("%1: dW[%2] = %3, emulated %4").arg(bf16PathName(path)).arg(i).arg(gw[i], 0, 'g', 9).arg(gwEmu[i], 0, 'g', 9)));
    QVERIFY(std::memcmp(hw.bias().grad.data(), emu.bias().grad.data(), emu.bias().grad.numel() * sizeof(float)) == 0);

    // The backward splits x's runs from the ones its training forward kept; given a copy of x (not
    // the forward's tensor) it rounds x again. Both give the same bits, on x off the bf16 grid too.
    Tensor xf({N, C, Hs, Hs});
    for (float& v : xf.values()) v = nd(rng);
    Tensor yf, dxKept, dxAgain;
    hw.forward(xf, yf, ctx);
    QCOMPARE(hw.keptInputRuns(), hw.usesDirectKernel() && (S == 1 || K > 1));
    hw.backward(xf, yf, dy, dxKept, true);
    const Tensor gwKept = hw.weight().grad;
    const Tensor xCopy = xf;
    hw.backward(xCopy, yf, dy, dxAgain, true);
    QCOMPARE(hw.weight().grad.numel(), gwKept.numel());
    for (std::size_t i = 0; i < gwKept.numel(); ++i)
        if (std::memcmp(gwKept.data() + i, hw.weight().grad.data() + i, sizeof(float)) != 0)
            QFAIL(qPrintable(QStringLiteral("%1: dW[%2] = %3 from the kept runs, %4 from x")
                                 .arg(bf16PathName(path)).arg(i).arg(gwKept[i], 0, 'g', 9).arg(hw.weight().grad[i], 0, 'g', 9)));
    QVERIFY(std::memcmp(dxKept.data(), dxAgain.data(), dxKept.numel() * sizeof(float)) == 0);
    // An evaluation forward frees the kept runs; the next training forward keeps them again.
    QCOMPARE(hw.keptRunsBytes() > 0, hw.keptInputRuns());
    const bool kept = hw.keptInputRuns();
    RunContext eval;
    hw.forward(xf, yf, eval);
    QVERIFY(!hw.keptInputRuns());
    QCOMPARE(hw.keptRunsBytes(), std::size_t{0});
    hw.forward(xf, yf, ctx);
    QCOMPARE(hw.keptInputRuns(), kept);
}

// The bf16 runs' interleaving (vectorised where the build has AVX-512) gives bf16Bits of each value
// bit for bit, specials included (ties to even, subnormals, overflow to inf, NaN quietened, signed
// zeros), at every length (the masked tails), with either channel absent (zeros in its half).
void TestConvRunsBf16::roundInterleave2IsBf16Bits()
{
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    const float specials[] = {0.0f, -0.0f, 1.0f + 1.0f / 256.0f /* tie, even below */, 1.0f + 3.0f / 256.0f /* tie, odd */,
                              std::numeric_limits<float>::denorm_min(), -1e-40f, FLT_MAX, -FLT_MAX,
                              std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x7F800001u) /* signalling */,
                              std::bit_cast<float>(0x3F80FFFFu), std::bit_cast<float>(0x3F808000u)};
    for (std::size_t n : {1u, 7u, 15u, 16u, 17u, 31u, 32u, 45u}) {
        std::vector<float> a(n), b(n);
        for (std::size_t i = 0; i < n; ++i) {
            a[i] = i % 3 == 0 ? specials[(i / 3) % std::size(specials)] : nd(rng);
            b[i] = i % 2 == 0 ? specials[(i * 5 + 1) % std::size(specials)] : nd(rng);
        }
        for (int which = 0; which < 4; ++which) {
            const float* src[2] = {which & 1 ? a.data() : nullptr, which & 2 ? b.data() : nullptr};
            std::vector<std::uint16_t> got(2 * n + 2, 0xABCDu);
            roundInterleave2(src, n, got.data());
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint16_t lo = src[0] ? bf16Bits(a[i]) : 0, hi = src[1] ? bf16Bits(b[i]) : 0;
                QVERIFY2(got[2 * i] == lo && got[2 * i + 1] == hi,
                         qPrintable(QString("n %1, channels %2, element %3").arg(n).arg(which).arg(i)));
            }
            QCOMPARE(got[2 * n], std::uint16_t{0xABCDu}); // nothing written past the end
        }
    }
}

// The strided bf16 forward's one-pass layout (toPhaseRunsBf16: x to bf16 pair phase runs) is the
// FP32 phase runs (toPhaseRuns) rounded pair by pair (roundInterleave2), bit for bit: padding
// zeros, odd channel counts (a zero half), odd widths (the even and odd phases' lengths), rows past
// 32 columns and partial groups, specials included; nothing is written past the runs.
void TestConvRunsBf16::phaseRunsBf16AreRoundedPhaseRuns()
{
    using namespace conv_detail;
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    const float specials[] = {-0.0f, std::numeric_limits<float>::denorm_min(), FLT_MAX, -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x3F808000u) /* tie */};
    struct Case {
        std::size_t H, W, k, s, p, C, N;
    };
    const Case cases[] = {{28, 28, 3, 2, 1, 16, 5}, {14, 14, 3, 2, 1, 3, 9}, {7, 9, 3, 2, 1, 5, 2}, {5, 5, 3, 2, 0, 1, 1},
                          {33, 40, 3, 2, 1, 2, 3}, {9, 10, 5, 3, 2, 3, 2}, {8, 8, 2, 2, 0, 4, 17}, {6, 1, 3, 2, 1, 2, 2},
                          {11, 13, 3, 3, 1, 1, 4}};
    for (const Case& c : cases) {
        const PhaseGeometry g = phaseGeometry(c.H, c.W, c.k, c.s, c.p);
        const DepthwiseGeometry dg = depthwiseGeometry(c.H, c.W, c.k, c.s, c.p);
        std::vector<float> x(c.N * c.C * c.H * c.W);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 7 == 3 ? specials[(i / 7) % std::size(specials)] : nd(rng);
        const std::size_t C2 = (c.C + 1) / 2;
        for (std::size_t n0 = 0; n0 < c.N; n0 += g.Ng) {
            const std::size_t count = std::min(g.Ng, c.N - n0);
            std::vector<float> phases(c.C * g.S);
            toPhaseRuns(x.data(), c.C, n0, count, g, dg, phases.data());
            std::vector<std::uint16_t> want(2 * C2 * g.S);
            for (std::size_t cp = 0; cp < C2; ++cp) {
                const float* pair[2] = {phases.data() + 2 * cp * g.S, 2 * cp + 1 < c.C ? phases.data() + (2 * cp + 1) * g.S : nullptr};
                roundInterleave2(pair, g.S, want.data() + 2 * cp * g.S);
            }
            std::vector<std::uint16_t> got(2 * C2 * g.S + 8, 0xABCDu);
            toPhaseRunsBf16(x.data(), c.C, n0, count, g, dg, got.data());
            const QString what = QString("%1x%2 k%3 s%4 p%5, %6 channels, images %7..%8")
                                     .arg(c.H).arg(c.W).arg(c.k).arg(c.s).arg(c.p).arg(c.C).arg(n0).arg(n0 + count);
            QVERIFY2(std::memcmp(got.data(), want.data(), want.size() * sizeof(std::uint16_t)) == 0, qPrintable(what));
            for (std::size_t i = want.size(); i < got.size(); ++i) QVERIFY2(got[i] == 0xABCDu, qPrintable(what + ": written past the runs"));
        }
    }
}

// The span helpers of tensor/bf16.h (vectorised with masked tails where the build has AVX-512):
// roundBf16Span, bf16BitsSpan and roundBf16AllFinite give bf16Bits / roundBf16 of every value bit
// for bit, specials included, at every length, write nothing past n, and roundBf16AllFinite says
// false exactly when a rounded value is inf or NaN (FLT_MAX rounds up to inf).
void TestConvRunsBf16::bf16SpansAreBf16Bits()
{
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    const float specials[] = {0.0f, -0.0f, 1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f, std::numeric_limits<float>::denorm_min(),
                              -1e-40f, FLT_MAX, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                              std::bit_cast<float>(0x7F800001u), std::bit_cast<float>(0x3F80FFFFu)};
    const float sentinel = 12345.0f;
    for (std::size_t n : {0u, 1u, 5u, 15u, 16u, 17u, 33u, 64u, 70u}) {
        for (int kind = 0; kind < 3; ++kind) { // finite values only; one special; specials throughout
            std::vector<float> v(n);
            for (std::size_t i = 0; i < n; ++i) v[i] = nd(rng);
            if (kind == 1 && n) v[n - 1] = FLT_MAX;
            if (kind == 2)
                for (std::size_t i = 0; i < n; i += 3) v[i] = specials[(i / 3) % std::size(specials)];
            bool finite = true;
            for (float x : v) finite = finite && std::isfinite(roundBf16(x));
            std::vector<float> a(v), b(v);
            a.push_back(sentinel);
            b.push_back(sentinel);
            roundBf16Span(a.data(), n);
            QCOMPARE(roundBf16AllFinite(b.data(), n), finite);
            std::vector<std::uint16_t> bits(n + 1, 0xABCDu);
            bf16BitsSpan(v.data(), n, bits.data());
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint32_t want = std::bit_cast<std::uint32_t>(roundBf16(v[i]));
                QVERIFY2(std::bit_cast<std::uint32_t>(a[i]) == want && std::bit_cast<std::uint32_t>(b[i]) == want &&
                             bits[i] == bf16Bits(v[i]),
                         qPrintable(QString("n %1, kind %2, element %3").arg(n).arg(kind).arg(i)));
            }
            QCOMPARE(a[n], sentinel);
            QCOMPARE(b[n], sentinel);
            QCOMPARE(bits[n], std::uint16_t{0xABCDu});
        }
    }
}

QTEST_GUILESS_MAIN(TestConvRunsBf16)
#include "tst_conv_runs_bf16.moc"
