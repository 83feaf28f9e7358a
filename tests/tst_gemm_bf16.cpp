// The bf16 GEMM (tensor/gemm_bf16.h): every path this CPU runs (amx-bf16, avx512-bf16,
// emulated) against the scalar twin and against the emulation it replaces (round A and B with
// quant's roundToFormat, multiply in FP32 with Eigen), on odd shapes, both transposes, with and
// without accumulation; the rounding inside the packers bit for bit against roundToFormat; the
// path names, the override parser and the argument checks.
#include "nn/conv2d.h"
#include "quant/float_cast.h"
#include "quant/format.h"
#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"
#include "tensor/tensor.h"
#include "util/errors.h"

#include <QtTest>

#include <bit>
#include <cstring>
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace quantscope;

namespace {

// Tolerance. Every product of two bf16 values (8-bit significands) is exact in FP32, so every
// path sums the same K + 1 exact terms t (the K products and, when accumulating, C's old value)
// and differs only in the order of the FP32 additions. Any order of n - 1 rounded additions is
// within gamma_{n-1} * sum|t| of the exact sum (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., eq. 4.4), gamma_n = n u / (1 - n u), u = 2^-24; two results are then
// within 2 gamma_K sum|t| <= K eps_fp32 sum|t| (1 + O(K u)) of each other. The factor 1.01 takes
// the O(K u) and the hardware flushing of subnormal results (VDPBF16PS/TDPBF16PS, below
// K * FLT_MIN absolute) without loosening the bound in any way a wrong kernel could pass.
double tolerance(std::size_t K, double sumAbsTerms)
{
    return 1.01 * static_cast<double>(K) * FLT_EPSILON * sumAbsTerms + static_cast<double>(K) * FLT_MIN;
}

struct Problem {
    bool transA = false, transB = false, accumulate = false;
    std::size_t M = 0, N = 0, K = 0, lda = 0, ldb = 0, ldc = 0;
    std::vector<float> A, B, C0;

    GemmBf16Args args(float* c) const
    {
        return {transA, transB, M, N, K, A.data(), lda, B.data(), ldb, c, ldc, accumulate};
    }
    float a(std::size_t m, std::size_t k) const { return transA ? A[k * lda + m] : A[m * lda + k]; }
    float b(std::size_t k, std::size_t n) const { return transB ? B[n * ldb + k] : B[k * ldb + n]; }
};

// Leading dimensions a little larger than the rows, so that strides are exercised; the padding
// columns of C hold a guard value no path may touch.
constexpr float kGuard = 12345.0f;

Problem makeProblem(std::size_t M, std::size_t N, std::size_t K, bool transA, bool transB, bool accumulate, unsigned seed)
{
    Problem p;
    p.M = M, p.N = N, p.K = K, p.transA = transA, p.transB = transB, p.accumulate = accumulate;
    p.lda = (transA ? M : K) + 3;
    p.ldb = (transB ? K : N) + 5;
    p.ldc = N + 2;
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    p.A.resize((transA ? K : M) * p.lda);
    p.B.resize((transB ? N : K) * p.ldb);
    p.C0.resize(M * p.ldc);
    for (float& x : p.A) x = nd(rng);
    for (float& x : p.B) x = nd(rng) * 0.01f; // other magnitudes: a gradient against activations
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t n = 0; n < p.ldc; ++n) p.C0[m * p.ldc + n] = n < N ? nd(rng) : kGuard;
    return p;
}

// Compares C with the expected E element by element under tolerance(); reports the first miss.
void compare(const Problem& p, const std::vector<float>& C, const std::vector<float>& E, const char* what)
{
    for (std::size_t m = 0; m < p.M; ++m) {
        for (std::size_t n = 0; n < p.N; ++n) {
            double sumAbs = p.accumulate ? std::fabs(p.C0[m * p.ldc + n]) : 0.0;
            for (std::size_t k = 0; k < p.K; ++k)
                sumAbs += std::fabs(static_cast<double>(roundBf16(p.a(m, k))) * roundBf16(p.b(k, n)));
            const double got = C[m * p.ldc + n], want = E[m * p.ldc + n];
            if (!(std::fabs(got - want) <= tolerance(p.K, sumAbs)))
                QFAIL(qPrintable(QStringLiteral("%1: C[%2][%3] = %4, expected %5 (tolerance %6)")
                                     .arg(what)
                                     .arg(m)
                                     .arg(n)
                                     .arg(got, 0, 'g', 9)
                                     .arg(want, 0, 'g', 9)
                                     .arg(tolerance(p.K, sumAbs), 0, 'g', 3)));
        }
        for (std::size_t n = p.N; n < p.ldc; ++n)
            if (C[m * p.ldc + n] != kGuard) QFAIL(qPrintable(QStringLiteral("%1: wrote C[%2][%3] past N").arg(what).arg(m).arg(n)));
    }
}

// The hardware paths that read a convolution's runs (gemmBf16Runs, weightGradBf16Runs).
std::vector<Bf16Path> runsPaths()
{
    std::vector<Bf16Path> v;
    for (Bf16Path p : {Bf16Path::Avx512Bf16, Bf16Path::AmxBf16})
        if (bf16PathSupported(p)) v.push_back(p);
    return v;
}

std::vector<Bf16Path> supportedPaths()
{
    std::vector<Bf16Path> v;
    for (Bf16Path p : {Bf16Path::Emulated, Bf16Path::Avx512Bf16, Bf16Path::AmxBf16})
        if (bf16PathSupported(p)) v.push_back(p);
    return v;
}

// The emulation the paths replace: quant's bf16 rounding of both operands, then an FP32 Eigen GEMM.
std::vector<float> emulate(const Problem& p)
{
    using Idx = Eigen::Index;
    const NumberFormat& bf16 = findFormat("bf16");
    std::vector<float> a(p.M * p.K), b(p.K * p.N), C = p.C0;
    for (std::size_t m = 0; m < p.M; ++m)
        for (std::size_t k = 0; k < p.K; ++k) a[m * p.K + k] = p.a(m, k);
    for (std::size_t k = 0; k < p.K; ++k)
        for (std::size_t n = 0; n < p.N; ++n) b[k * p.N + n] = p.b(k, n);
    roundToFormat(a, bf16, Rounding::Nearest);
    roundToFormat(b, bf16, Rounding::Nearest);
    const RowMatrix prod = ConstMatrixMap(a.data(), static_cast<Idx>(p.M), static_cast<Idx>(p.K)) *
                           ConstMatrixMap(b.data(), static_cast<Idx>(p.K), static_cast<Idx>(p.N));
    for (std::size_t m = 0; m < p.M; ++m)
        for (std::size_t n = 0; n < p.N; ++n) {
            float& c = C[m * p.ldc + n];
            c = p.accumulate ? c + prod(static_cast<Idx>(m), static_cast<Idx>(n)) : prod(static_cast<Idx>(m), static_cast<Idx>(n));
        }
    return C;
}

} // namespace

class TestGemmBf16 : public QObject {
    Q_OBJECT
private slots:
    void pathsMatchScalarTwinAndEmulation_data();
    void pathsMatchScalarTwinAndEmulation();
    void packingRoundsLikeTheEmulation_data();
    void packingRoundsLikeTheEmulation();
    void prepackedAGivesTheSameResults_data();
    void prepackedAGivesTheSameResults();
    void im2colPackingMatchesIm2col_data();
    void im2colPackingMatchesIm2col();
    void pathNamesAndOverride();
    void badArgumentsAreConfigErrors();
    void emptyProducts();
    void runsProductMatchesScalarTwin_data();
    void runsProductMatchesScalarTwin();
    void runsWeightGradientMatchesScalarTwin_data();
    void runsWeightGradientMatchesScalarTwin();
    void convolutionOnBf16Runs_data();
    void convolutionOnBf16Runs();
    void roundInterleave2IsBf16Bits();
    void bf16SpansAreBf16Bits();

private:
    void checkConvolutionOnRuns(Bf16Path path, int cin, int cout, int k, int pad, int H, int stride);
};

void TestGemmBf16::pathsMatchScalarTwinAndEmulation_data()
{
    QTest::addColumn<int>("path");
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("N");
    QTest::addColumn<int>("K");
    QTest::addColumn<bool>("transA");
    QTest::addColumn<bool>("transB");
    QTest::addColumn<bool>("accumulate");
    // Odd and tile-edge sizes (1, 7, 17, 143/144 around a multiple of 16 and of 32) and layer
    // shapes (resnet8 16ch forward: 16 x 784 x 144, fc 10 x 64 x 64), kept small enough for seconds.
    struct S {
        int M, N, K;
    };
    const S shapes[] = {{1, 1, 1},   {7, 17, 1},    {1, 784, 7},  {17, 7, 143},  {143, 17, 144}, {16, 784, 144},
                        {33, 49, 577}, {40, 100, 300}, {150, 200, 40}, {10, 64, 64}, {17, 33, 31},   {32, 16, 33}};
    unsigned row = 0;
    for (Bf16Path path : supportedPaths())
        for (const S& s : shapes)
            for (int t = 0; t < 4; ++t) {
                const bool acc = (row++ % 2) == 1; // alternate, so that each shape and transpose sees both
                QTest::addRow("%s %dx%dx%d %s%s%s", bf16PathName(path), s.M, s.N, s.K, t & 1 ? "A^T " : "", t & 2 ? "B^T " : "",
                              acc ? "+=" : "=")
                    << static_cast<int>(path) << s.M << s.N << s.K << bool(t & 1) << bool(t & 2) << acc;
            }
}

void TestGemmBf16::pathsMatchScalarTwinAndEmulation()
{
    QFETCH(int, path);
    QFETCH(int, M);
    QFETCH(int, N);
    QFETCH(int, K);
    QFETCH(bool, transA);
    QFETCH(bool, transB);
    QFETCH(bool, accumulate);
    const Problem p = makeProblem(static_cast<std::size_t>(M), static_cast<std::size_t>(N), static_cast<std::size_t>(K), transA,
                                  transB, accumulate, static_cast<unsigned>(M * 7919 + N * 31 + K));
    std::vector<float> C = p.C0, R = p.C0;
    gemmBf16(static_cast<Bf16Path>(path), p.args(C.data()));
    gemmBf16Ref(p.args(R.data()));
    compare(p, C, R, "against the scalar twin");
    compare(p, C, emulate(p), "against roundToFormat + Eigen");
}

void TestGemmBf16::packingRoundsLikeTheEmulation_data()
{
    QTest::addColumn<int>("path");
    QTest::addColumn<bool>("transA");
    for (Bf16Path path : supportedPaths())
        for (bool t : {false, true}) QTest::addRow("%s%s", bf16PathName(path), t ? " A^T" : "") << static_cast<int>(path) << t;
}

// C = op(A) * 1 with K = 1 is bf16(a) itself: ties to even both ways, values that round up into
// the next binade, overflow to inf, inf, NaN, and random values; every one bit for bit.
// (Subnormals are left out: the hardware paths read them as zero, see gemm_bf16.h.)
void TestGemmBf16::packingRoundsLikeTheEmulation()
{
    QFETCH(int, path);
    QFETCH(bool, transA);
    std::vector<float> x = {1.0f + 0x1p-8f,     1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f), 1.0f + 0x1p-8f + 0x1p-20f,
                            2.0f - 0x1p-9f,     0x1.FFp127f,        FLT_MAX,           -FLT_MAX,
                            FLT_MIN,            1.5f * FLT_MIN,     0.0f,              std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> e(-30.0f, 30.0f);
    while (x.size() < 300) x.push_back(std::ldexp(1.0f + e(rng) / 64.0f, static_cast<int>(e(rng))));
    const std::size_t M = x.size();
    std::vector<float> expected = x;
    roundToFormat(expected, findFormat("bf16"), Rounding::Nearest);
    const float one = 1.0f;
    std::vector<float> C(M, -7.0f);
    // op(A) is M x 1: stored M x 1 (lda 1) or, transposed, 1 x M (lda M).
    gemmBf16(static_cast<Bf16Path>(path), {transA, false, M, 1, 1, x.data(), transA ? M : 1, &one, 1, C.data(), 1, false});
    for (std::size_t m = 0; m < M; ++m) {
        const bool same = std::isnan(expected[m]) ? std::isnan(C[m]) : C[m] == expected[m];
        if (!same)
            QFAIL(qPrintable(QStringLiteral("x = %1 (bits %2): got %3, roundToFormat gives %4")
                                 .arg(x[m], 0, 'g', 9)
                                 .arg(std::bit_cast<std::uint32_t>(x[m]), 8, 16, QChar('0'))
                                 .arg(C[m], 0, 'g', 9)
                                 .arg(expected[m], 0, 'g', 9)));
    }
}

void TestGemmBf16::prepackedAGivesTheSameResults_data()
{
    QTest::addColumn<int>("path");
    for (Bf16Path path : supportedPaths()) QTest::addRow("%s", bf16PathName(path)) << static_cast<int>(path);
}

// A layer packs W once per batch and multiplies it with every image's columns: each product
// must be bit for bit the one gemmBf16 gives, also after the packed A is remade for another shape.
void TestGemmBf16::prepackedAGivesTheSameResults()
{
    QFETCH(int, path);
    const auto p = static_cast<Bf16Path>(path);
    PackedBf16A packed;
    struct S {
        int M, N, K;
        bool transA, transB;
    };
    for (const S& s : {S{32, 196, 288, false, false}, S{17, 9, 143, true, true}, S{64, 49, 576, true, false}}) {
        for (unsigned image = 0; image < 3; ++image) {
            Problem pr = makeProblem(static_cast<std::size_t>(s.M), static_cast<std::size_t>(s.N), static_cast<std::size_t>(s.K),
                                     s.transA, s.transB, image == 2, 100 + image);
            if (image == 0)
                packBf16A(packed, p, s.transA, pr.M, pr.K, pr.A.data(), pr.lda);
            else // the same A as image 0, other B and C
                pr.A = makeProblem(pr.M, pr.N, pr.K, s.transA, s.transB, false, 100).A;
            QCOMPARE(packed.rows(), pr.M);
            QCOMPARE(packed.depth(), pr.K);
            std::vector<float> C = pr.C0, D = pr.C0;
            gemmBf16Packed(packed, pr.transB, pr.N, pr.B.data(), pr.ldb, C.data(), pr.ldc, pr.accumulate);
            gemmBf16(p, pr.args(D.data()));
            QCOMPARE(C, D);
        }
    }
}

void TestGemmBf16::im2colPackingMatchesIm2col_data()
{
    QTest::addColumn<int>("path");
    for (Bf16Path path : supportedPaths()) QTest::addRow("%s", bf16PathName(path)) << static_cast<int>(path);
}

// A convolution packed straight from the image gives bit for bit what nn's im2col followed by
// gemmBf16 gives, for the forward product W * cols and the weight gradient dY * cols^T: padding, strides, 1x1 kernels, odd sizes; stride-1 "same" convolutions
// (masked loads) and the others (gathers), and a geometry repeated after another (cached tables).
void TestGemmBf16::im2colPackingMatchesIm2col()
{
    QFETCH(int, path);
    const auto p = static_cast<Bf16Path>(path);
    struct Geo {
        std::size_t C, H, W, k, stride, pad, M;
    };
    PackedBf16A wPacked;
    PackedBf16B colsPacked;
    for (const Geo& g : {Geo{1, 28, 28, 3, 1, 0, 32}, Geo{3, 9, 9, 3, 1, 1, 16}, Geo{2, 7, 5, 3, 2, 0, 5}, Geo{16, 14, 14, 3, 2, 1, 32},
                         Geo{5, 6, 7, 1, 1, 0, 17}, Geo{4, 5, 5, 5, 1, 2, 8}, Geo{3, 8, 6, 1, 2, 0, 3}, Geo{3, 20, 18, 3, 1, 1, 8},
                         Geo{2, 40, 36, 3, 2, 1, 4}, Geo{2, 17, 40, 1, 1, 0, 5},
                         Geo{32, 14, 14, 3, 1, 1, 32}, Geo{6, 9, 19, 3, 1, 0, 7}, Geo{2, 16, 18, 3, 1, 0, 3}}) {
        for (int again = 0; again < 2; ++again) { // the second time on cached tables, other values
            const std::size_t Ho = (g.H + 2 * g.pad - g.k) / g.stride + 1, Wo = (g.W + 2 * g.pad - g.k) / g.stride + 1;
            const std::size_t K = g.C * g.k * g.k, N = Ho * Wo;
            std::mt19937 rng(static_cast<unsigned>(K * 131 + N + 7 * again));
            std::normal_distribution<float> nd;
            std::vector<float> x(g.C * g.H * g.W), w(g.M * K), cols(K * N);
            for (float& v : x) v = nd(rng);
            for (float& v : w) v = nd(rng);
            im2col(x.data(), g.C, g.H, g.W, g.k, g.stride, g.pad, cols.data());
            packBf16A(wPacked, p, false, g.M, K, w.data(), K);
            packBf16Im2col(colsPacked, p, x.data(), g.C, g.H, g.W, g.k, g.stride, g.pad);
            QCOMPARE(colsPacked.depth(), K);
            QCOMPARE(colsPacked.cols(), N);
            std::vector<float> Y(g.M * N, 3.0f), Z(g.M * N, 3.0f);
            gemmBf16PackedAB(wPacked, colsPacked, Y.data(), N, true);
            gemmBf16(p, {false, false, g.M, N, K, w.data(), K, cols.data(), N, Z.data(), N, true});
            QCOMPARE(Y, Z);
            // The weight gradient dW (M x K) = dY (M x N) * cols^T from im2col(x)^T packed the same way.
            std::vector<float> dY(g.M * N), dW(g.M * K, 1.0f), dW2(g.M * K, 1.0f);
            for (float& v : dY) v = nd(rng);
            PackedBf16A dYPacked;
            packBf16A(dYPacked, p, false, g.M, N, dY.data(), N);
            packBf16Im2colT(colsPacked, p, x.data(), g.C, g.H, g.W, g.k, g.stride, g.pad);
            QCOMPARE(colsPacked.depth(), N);
            QCOMPARE(colsPacked.cols(), K);
            gemmBf16PackedAB(dYPacked, colsPacked, dW.data(), K, again == 1);
            gemmBf16(p, {false, true, g.M, K, N, dY.data(), N, cols.data(), N, dW2.data(), K, again == 1});
            QCOMPARE(dW, dW2);
        }
    }
    // Operands packed for different depths do not multiply.
    packBf16A(wPacked, p, false, 4, 7, std::vector<float>(28, 1.0f).data(), 7);
    std::vector<float> y(64);
    QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16PackedAB(wPacked, colsPacked, y.data(), colsPacked.cols(), false));
    QVERIFY_THROWS_EXCEPTION(ConfigError, packBf16Im2col(colsPacked, p, y.data(), 1, 2, 2, 5, 1, 1));
}

void TestGemmBf16::pathNamesAndOverride()
{
    QCOMPARE(QString(bf16PathName(Bf16Path::AmxBf16)), QStringLiteral("amx-bf16"));
    QCOMPARE(QString(bf16PathName(Bf16Path::Avx512Bf16)), QStringLiteral("avx512-bf16"));
    QCOMPARE(QString(bf16PathName(Bf16Path::Emulated)), QStringLiteral("emulated"));
    QVERIFY(parseBf16Path("scalar") == Bf16Path::Emulated);
    QVERIFY(parseBf16Path("emulated") == Bf16Path::Emulated);
    QVERIFY_THROWS_EXCEPTION(ConfigError, parseBf16Path("avx1024"));
    // "auto" is the best supported path: AMX over AVX512_BF16 over the emulation.
    const Bf16Path best = parseBf16Path("auto");
    QVERIFY(bf16PathSupported(best));
    if (bf16PathSupported(Bf16Path::AmxBf16)) QVERIFY(best == Bf16Path::AmxBf16);
    else if (bf16PathSupported(Bf16Path::Avx512Bf16)) QVERIFY(best == Bf16Path::Avx512Bf16);
    for (Bf16Path p : {Bf16Path::Avx512Bf16, Bf16Path::AmxBf16}) {
        if (bf16PathSupported(p)) {
            QVERIFY(parseBf16Path(bf16PathName(p)) == p);
        } else {
            QVERIFY_THROWS_EXCEPTION(ConfigError, parseBf16Path(bf16PathName(p)));
            std::vector<float> a(4, 1.0f), c(4);
            QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16(p, {false, false, 2, 2, 2, a.data(), 2, a.data(), 2, c.data(), 2, false}));
        }
    }
    qInfo("bf16 GEMM path on this CPU: %s", bf16PathName(bestBf16Path()));
}

void TestGemmBf16::badArgumentsAreConfigErrors()
{
    std::vector<float> a(64, 1.0f), b(64, 1.0f), c(64);
    for (Bf16Path p : supportedPaths()) {
        QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16(p, {false, false, 4, 4, 4, a.data(), 3, b.data(), 4, c.data(), 4, false}));
        QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16(p, {false, true, 4, 4, 4, a.data(), 4, b.data(), 3, c.data(), 4, false}));
        QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16(p, {false, false, 4, 4, 4, a.data(), 4, b.data(), 4, c.data(), 3, false}));
        QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16(p, {false, false, 4, 4, 4, nullptr, 4, b.data(), 4, c.data(), 4, false}));
    }
    QVERIFY_THROWS_EXCEPTION(ConfigError, gemmBf16Ref({true, false, 4, 4, 4, a.data(), 3, b.data(), 4, c.data(), 4, false}));
}

// K == 0: C = 0 (or unchanged when accumulating); M or N == 0: nothing is touched.
void TestGemmBf16::emptyProducts()
{
    for (Bf16Path p : supportedPaths()) {
        std::vector<float> c(6, 5.0f);
        gemmBf16(p, {false, false, 2, 3, 0, nullptr, 0, nullptr, 3, c.data(), 3, true});
        QCOMPARE(c, std::vector<float>(6, 5.0f));
        gemmBf16(p, {false, false, 2, 3, 0, nullptr, 0, nullptr, 3, c.data(), 3, false});
        QCOMPARE(c, std::vector<float>(6, 0.0f));
        gemmBf16(p, {false, false, 0, 3, 4, nullptr, 4, nullptr, 3, nullptr, 3, false});
    }
}

void TestGemmBf16::runsProductMatchesScalarTwin_data()
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
// summed in another order (tolerance() above); nothing written past L.
void TestGemmBf16::runsProductMatchesScalarTwin()
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

void TestGemmBf16::runsWeightGradientMatchesScalarTwin_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("O");
    QTest::addColumn<int>("taps");
    QTest::addColumn<int>("P");
    QTest::newRow("16 channels, one tap") << 16 << 16 << 1 << 16;
    QTest::newRow("seed-cnn conv2 group") << 32 << 64 << 9 << 1360;
    QTest::newRow("80 outputs: a panel past 64") << 32 << 80 << 4 << 144;
    QTest::newRow("odd rows, 7 outputs") << 16 << 7 << 5 << 48;
}

// The weight gradient over runs on each hardware path against its scalar twin (added into a dW
// that already holds values); AVX512_BF16 also takes channel counts that are not multiples of 16.
void TestGemmBf16::runsWeightGradientMatchesScalarTwin()
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

void TestGemmBf16::convolutionOnBf16Runs_data()
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
void TestGemmBf16::convolutionOnBf16Runs()
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

void TestGemmBf16::checkConvolutionOnRuns(Bf16Path path, int cin, int cout, int k, int pad, int H, int stride)
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
}

// The bf16 runs' interleaving (vectorised where the build has AVX-512) gives bf16Bits of each value
// bit for bit, specials included (ties to even, subnormals, overflow to inf, NaN quietened, signed
// zeros), at every length (the masked tails), with either channel absent (zeros in its half).
void TestGemmBf16::roundInterleave2IsBf16Bits()
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

// The span helpers of tensor/bf16.h (vectorised with masked tails where the build has AVX-512):
// roundBf16Span, bf16BitsSpan and roundBf16AllFinite give bf16Bits / roundBf16 of every value bit
// for bit, specials included, at every length, write nothing past n, and roundBf16AllFinite says
// false exactly when a rounded value is inf or NaN (FLT_MAX rounds up to inf).
void TestGemmBf16::bf16SpansAreBf16Bits()
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

QTEST_GUILESS_MAIN(TestGemmBf16)
#include "tst_gemm_bf16.moc"
