// im2col / col2imAdd (the fast row copies, AVX-512 masked where built for it) against their plain
// definitions, for the kernel/stride/padding combinations the presets and imported models use.
#include "nn/conv2d.h"
#include "util/rng.h"

#include <QtTest>

#include <vector>

using namespace quantscope;

namespace {

std::size_t outDim(std::size_t in, std::size_t k, std::size_t s, std::size_t p) { return (in + 2 * p - k) / s + 1; }

// The definition: cols[(c,ky,kx), (oy,ox)] = x[c, oy*s+ky-p, ox*s+kx-p] or 0 outside.
float source(const std::vector<float>& x, std::size_t H, std::size_t W, std::size_t c, long iy, long ix)
{
    if (iy < 0 || ix < 0 || iy >= static_cast<long>(H) || ix >= static_cast<long>(W)) return 0.0f;
    return x[(c * H + static_cast<std::size_t>(iy)) * W + static_cast<std::size_t>(ix)];
}

} // namespace

class TestIm2col : public QObject {
    Q_OBJECT
private slots:
    void matchesDefinition_data();
    void matchesDefinition();
};

void TestIm2col::matchesDefinition_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::newRow("3x3 s1 p1 28x28") << 3 << 28 << 28 << 3 << 1 << 1;
    QTest::newRow("3x3 s1 p0 28x28") << 2 << 28 << 28 << 3 << 1 << 0;
    QTest::newRow("3x3 s2 p1 14x14") << 2 << 14 << 14 << 3 << 2 << 1;
    QTest::newRow("3x3 s2 p1 odd 9x7") << 2 << 9 << 7 << 3 << 2 << 1;
    QTest::newRow("1x1 s2 p0 28x28") << 3 << 28 << 28 << 1 << 2 << 0;
    QTest::newRow("5x5 s1 p2 wide 5x40") << 1 << 5 << 40 << 5 << 1 << 2;
    QTest::newRow("3x3 s1 p1 tiny 1x1") << 2 << 1 << 1 << 3 << 1 << 1;
    QTest::newRow("7x7 s3 p3 33x17") << 2 << 33 << 17 << 7 << 3 << 3;
    QTest::newRow("3x3 s1 p2 (pad > kernel/2) 6x6") << 1 << 6 << 6 << 3 << 1 << 2;
}

void TestIm2col::matchesDefinition()
{
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    const std::size_t c = C, h = H, w = W, kk = k, s = stride, p = pad;
    const std::size_t Ho = outDim(h, kk, s, p), Wo = outDim(w, kk, s, p), K = c * kk * kk;
    Rng rng(7);
    std::vector<float> x(c * h * w);
    for (float& v : x) v = rng.uniform(-1.0f, 1.0f);

    std::vector<float> cols(K * Ho * Wo, 99.0f);
    im2col(x.data(), c, h, w, kk, s, p, cols.data());
    std::vector<float> dcols(K * Ho * Wo);
    for (float& v : dcols) v = rng.uniform(-1.0f, 1.0f);
    std::vector<float> want(c * h * w, 0.0f);
    for (std::size_t ci = 0; ci < c; ++ci)
        for (std::size_t ky = 0; ky < kk; ++ky)
            for (std::size_t kx = 0; kx < kk; ++kx)
                for (std::size_t oy = 0; oy < Ho; ++oy)
                    for (std::size_t ox = 0; ox < Wo; ++ox) {
                        const std::size_t at = ((ci * kk + ky) * kk + kx) * Ho * Wo + oy * Wo + ox;
                        const long iy = static_cast<long>(oy * s + ky) - static_cast<long>(p);
                        const long ix = static_cast<long>(ox * s + kx) - static_cast<long>(p);
                        QCOMPARE(cols[at], source(x, h, w, ci, iy, ix)); // a copy: exact
                        if (iy >= 0 && ix >= 0 && iy < H && ix < W)
                            want[(ci * h + static_cast<std::size_t>(iy)) * w + static_cast<std::size_t>(ix)] += dcols[at];
                    }
    std::vector<float> dx(c * h * w, 0.0f);
    col2imAdd(dcols.data(), c, h, w, kk, s, p, dx.data());
    // Sums of up to k*k terms in a possibly different order.
    constexpr float kSumTol = 1e-5f;
    for (std::size_t i = 0; i < dx.size(); ++i) QVERIFY2(std::abs(dx[i] - want[i]) <= kSumTol, qPrintable(QString::number(i)));
}

QTEST_APPLESS_MAIN(TestIm2col)
#include "tst_im2col.moc"
