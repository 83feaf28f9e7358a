// The bf16 GEMM (tensor/gemm_bf16.h): every path this CPU runs (amx-bf16, avx512-bf16,
// emulated) against the scalar twin and against the emulation it replaces (round A and B with
// quant's roundToFormat, multiply in FP32 with Eigen), on odd shapes, both transposes, with and
// without accumulation; the rounding inside the packers bit for bit against roundToFormat; the
// path names, the override parser and the argument checks. The products over a convolution's
// runs: tst_conv_runs_bf16.
#include "nn/conv2d.h"
#include "quant/float_cast.h"
#include "quant/format.h"
#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"
#include "tensor/tensor.h"
#include "util/errors.h"

#include "bf16_fixtures.h"

#include <QtTest>

#include <bit>
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace quantscope;
using namespace bf16_fixtures;

namespace {

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
// columns of C hold kGuard, which no path may touch.
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

QTEST_GUILESS_MAIN(TestGemmBf16)
#include "tst_gemm_bf16.moc"
