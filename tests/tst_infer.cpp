// The integer engine's kernels: every fast kernel (AVX-512 VNNI, AVX2: GEMM, depthwise, Add,
// pooling) against its scalar reference twin, the fixed-point requantization, and Add and pooling
// against the float fake-quant arithmetic. Whole models: tst_infer_models.
#include "infer_fixtures.h" // first: TBB's profiling.h before Qt (a member named emit)

using namespace quantscope;
using namespace infer_fixtures;

class TestInfer : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void kernelsMatchScalarTwin_data();
    void kernelsMatchScalarTwin();
    void requantizeIsExactRounding();
    void depthwiseMatchesScalarTwin_data();
    void depthwiseMatchesScalarTwin();
    void addMatchesFakeQuant_data();
    void addMatchesFakeQuant();
    void avgPoolMatchesFakeQuant_data();
    void avgPoolMatchesFakeQuant();
};

void TestInfer::initTestCase() { qInfo("kernels on this CPU: best %s", isaName(bestIsa())); }

void TestInfer::kernelsMatchScalarTwin_data()
{
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("N");
    QTest::addColumn<int>("nseg");
    QTest::addColumn<int>("segLen");
    QTest::addColumn<int>("segStride"); // 0: rows packed one after another
    QTest::addColumn<double>("multiplier");
    QTest::addColumn<bool>("relu");
    QTest::addColumn<int>("zp");
    QTest::newRow("conv 32->64 3x3 on 26x26") << 576 << 64 << 3 << 96 << 26 * 32 << 2e-3 << true << 0;
    QTest::newRow("conv 1->32 3x3, im2col K 12") << 676 << 32 << 1 << 12 << 0 << 5e-3 << true << 0;
    QTest::newRow("dense 9216->128") << 16 << 128 << 1 << 9216 << 0 << 1e-4 << true << 0;
    QTest::newRow("dense 128->10, zp 131") << 13 << 10 << 1 << 128 << 0 << 3e-3 << false << 131;
    QTest::newRow("tails 7x33") << 7 << 33 << 2 << 20 << 44 << 1e-2 << false << 128;
    QTest::newRow("one row, one column") << 1 << 1 << 1 << 4 << 0 << 0.5 << false << 7;
    QTest::newRow("multiplier above 1") << 9 << 17 << 1 << 8 << 0 << 3.7 << false << 100;
    QTest::newRow("tiny multiplier") << 9 << 84 << 1 << 120 << 0 << 1e-12 << false << 3;
    QTest::newRow("lenet 84 outputs, relu zp 5") << 31 << 84 << 1 << 120 << 0 << 4e-3 << true << 5;
}

void TestInfer::kernelsMatchScalarTwin()
{
    QFETCH(int, M);
    QFETCH(int, N);
    QFETCH(int, nseg);
    QFETCH(int, segLen);
    QFETCH(int, segStride);
    QFETCH(double, multiplier);
    QFETCH(bool, relu);
    QFETCH(int, zp);
    const std::size_t K = static_cast<std::size_t>(nseg * segLen);
    Rng rng(static_cast<std::uint64_t>(M * 131 + N * 7 + K));
    // A: rows at arbitrary offsets of a buffer of random bytes (full 0..255 range).
    const std::size_t rowSpan = segStride ? static_cast<std::size_t>((nseg - 1) * segStride + segLen) : K;
    std::vector<std::uint32_t> rowOff(static_cast<std::size_t>(M));
    for (int r = 0; r < M; ++r) rowOff[static_cast<std::size_t>(r)] = static_cast<std::uint32_t>(r * (segStride ? 32 : K));
    const std::size_t extent = rowOff.back() + rowSpan;
    std::vector<std::uint8_t> a(extent);
    for (auto& v : a) v = static_cast<std::uint8_t>(rng.below(256));
    std::vector<std::int8_t> w(static_cast<std::size_t>(N) * K);
    for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(rng.below(256)) - 128);
    std::vector<std::int32_t> bias(static_cast<std::size_t>(N));
    std::vector<FixedPointMultiplier> fpm(static_cast<std::size_t>(N));
    for (int n = 0; n < N; ++n) {
        bias[static_cast<std::size_t>(n)] = static_cast<std::int32_t>(rng.below(200001)) - 100000;
        fpm[static_cast<std::size_t>(n)] = fixedPointMultiplier(multiplier * (0.5 + rng.uniform()));
    }
    const std::int32_t lo = relu ? zp : 0, hi = 255;
    GemmA ga;
    ga.base = a.data();
    ga.extent = extent;
    ga.rowOffset = rowOff.data();
    ga.M = static_cast<std::size_t>(M);
    ga.nseg = static_cast<std::size_t>(nseg);
    ga.segLen = static_cast<std::size_t>(segLen);
    ga.segStride = static_cast<std::size_t>(segStride);
    const std::size_t ldc = static_cast<std::size_t>(N) + 3; // outputs into a wider row
    std::vector<std::uint8_t> ref(static_cast<std::size_t>(M) * ldc, 0xEE);
    GemmScratch scratch;
    gemmRequant(packGemm(Isa::Scalar, w.data(), static_cast<std::size_t>(N), K, bias, fpm, zp, lo, hi), ga, ref.data(), ldc, scratch);
    const std::vector<Isa> isas = fastIsas();
    if (isas.empty()) QSKIP("this CPU has neither AVX2 nor AVX-512 VNNI: only the scalar kernel runs");
    for (Isa isa : isas) {
        std::vector<std::uint8_t> out(static_cast<std::size_t>(M) * ldc, 0xEE);
        gemmRequant(packGemm(isa, w.data(), static_cast<std::size_t>(N), K, bias, fpm, zp, lo, hi), ga, out.data(), ldc, scratch);
        for (std::size_t i = 0; i < out.size(); ++i)
            QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: row %2 col %3: %4, scalar twin %5")
                                                      .arg(isaName(isa)).arg(i / ldc).arg(i % ldc).arg(out[i]).arg(ref[i])));
    }
}

void TestInfer::requantizeIsExactRounding()
{
    Rng rng(99);
    for (int i = 0; i < 200000; ++i) {
        const double m = std::exp(rng.uniform(-25.0f, 1.5f));
        // |acc * m| stays inside int32, where no clamp applies
        const double range = std::min(2.0e9, 2.0e9 / m);
        const std::int32_t acc = static_cast<std::int32_t>(std::trunc((2.0 * rng.uniform() - 1.0) * range));
        const FixedPointMultiplier f = fixedPointMultiplier(m);
        const std::int32_t got = requantize(acc, f, 0, std::numeric_limits<std::int32_t>::min() + 1, std::numeric_limits<std::int32_t>::max());
        const double exact = static_cast<double>(acc) * m;
        QVERIFY(std::abs(got - std::nearbyint(exact)) <= kRequantTolerance);
        const double frac = exact - std::floor(exact);
        if (std::abs(frac - 0.5) > kTieMargin && std::abs(exact) < 1e9)
            QVERIFY2(got == static_cast<std::int32_t>(std::floor(exact + 0.5)), qPrintable(QString("acc %1 m %2").arg(acc).arg(m)));
    }
    // Clamp and zero point.
    const FixedPointMultiplier half = fixedPointMultiplier(0.5);
    QCOMPARE(requantize(1000, half, 10, 0, 255), 255);
    QCOMPARE(requantize(-1000, half, 10, 10, 255), 10);
    QCOMPARE(requantize(5, half, 10, 0, 255), 13); // 2.5 rounds half up, + 10
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(0.0));
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(std::nan("")));
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(1e12));
}

void TestInfer::depthwiseMatchesScalarTwin_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("zpIn");
    QTest::addColumn<int>("lo"); // clamp (a folded ReLU / ReLU6)
    QTest::addColumn<int>("hi");
    QTest::newRow("mobilenet 16ch 28x28 3x3 s1 p1, ReLU6") << 16 << 28 << 28 << 3 << 1 << 1 << 0 << 0 << 97;
    QTest::newRow("32ch 28x28 s2 p1") << 32 << 28 << 28 << 3 << 2 << 1 << 3 << 0 << 255;
    QTest::newRow("64ch 14x14 s2 p1") << 64 << 14 << 14 << 3 << 2 << 1 << 0 << 10 << 255;
    QTest::newRow("128ch 7x7 s1 p1") << 128 << 7 << 7 << 3 << 1 << 1 << 128 << 128 << 255;
    QTest::newRow("24ch 9x11 5x5 s2 p2 (period 3 vectors)") << 24 << 9 << 11 << 5 << 2 << 2 << 17 << 0 << 200;
    QTest::newRow("3ch 10x7 3x3 s3 p0") << 3 << 10 << 7 << 3 << 3 << 0 << 40 << 0 << 255;
    QTest::newRow("1ch 5x5 1x1 s1") << 1 << 5 << 5 << 1 << 1 << 0 << 9 << 0 << 255;
    QTest::newRow("100ch 6x6 3x3 s1 p2, wide tables") << 100 << 6 << 6 << 3 << 1 << 2 << 255 << 0 << 255;
    QTest::newRow("kernel as large as the padded input") << 8 << 3 << 3 << 5 << 1 << 1 << 7 << 0 << 255;
}

void TestInfer::depthwiseMatchesScalarTwin()
{
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QFETCH(int, zpIn);
    QFETCH(int, lo);
    QFETCH(int, hi);
    DepthwiseGeometry g;
    g.C = static_cast<std::size_t>(C), g.H = static_cast<std::size_t>(H), g.W = static_cast<std::size_t>(W);
    g.k = static_cast<std::size_t>(k), g.stride = static_cast<std::size_t>(stride), g.pad = static_cast<std::size_t>(pad);
    g.Ho = (g.H + 2 * g.pad - g.k) / g.stride + 1, g.Wo = (g.W + 2 * g.pad - g.k) / g.stride + 1;
    Rng rng(static_cast<std::uint64_t>(C * 1000 + H * 10 + k));
    std::vector<std::uint8_t> in(g.H * g.W * g.C);
    for (auto& v : in) v = static_cast<std::uint8_t>(rng.below(256));
    std::vector<std::int8_t> w(g.C * g.k * g.k);
    for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(rng.below(256)) - 128);
    std::vector<std::int32_t> bias(g.C);
    std::vector<FixedPointMultiplier> fpm(g.C);
    for (std::size_t c = 0; c < g.C; ++c) {
        bias[c] = static_cast<std::int32_t>(rng.below(40001)) - 20000;
        fpm[c] = fixedPointMultiplier(2e-3 * (0.25 + rng.uniform()));
    }
    const std::int32_t zpOut = std::min(std::max(lo, 5), hi);
    const std::size_t outBytes = g.Ho * g.Wo * g.C;
    std::vector<std::uint8_t> ref(outBytes + 64, 0xEE);
    const PackedDepthwise scalar = packDepthwise(Isa::Scalar, g, w.data(), bias, fpm, static_cast<std::uint8_t>(zpIn), zpOut, lo, hi);
    depthwiseRequantScalar(scalar, in.data(), ref.data());
    // The twin itself against the plain formula with the input zero point subtracted explicitly.
    for (std::size_t c = 0; c < g.C; c += 7) {
        std::int64_t acc = bias[c];
        for (std::size_t ky = 0; ky < g.k; ++ky)
            for (std::size_t kx = 0; kx < g.k; ++kx) {
                const long iy = static_cast<long>(ky) - pad, ix = static_cast<long>(kx) - pad; // output (0, 0)
                const int v = iy >= 0 && ix >= 0 && iy < H && ix < W ? in[(static_cast<std::size_t>(iy) * g.W + static_cast<std::size_t>(ix)) * g.C + c] : zpIn;
                acc += static_cast<std::int64_t>(v) * w[c * g.k * g.k + ky * g.k + kx];
            }
        QCOMPARE(static_cast<int>(ref[c]), requantize(static_cast<std::int32_t>(acc), fpm[c], zpOut, lo, hi));
    }
    for (std::size_t i = outBytes; i < ref.size(); ++i) QCOMPARE(ref[i], std::uint8_t{0xEE}); // nothing written past the end
    for (Isa isa : fastIsas()) {
        const PackedDepthwise p = packDepthwise(isa, g, w.data(), bias, fpm, static_cast<std::uint8_t>(zpIn), zpOut, lo, hi);
        // The padded scratch as another layer left it: only what valid outputs read is rewritten.
        std::vector<std::uint8_t> out(outBytes + 64, 0xEE), scratch(p.paddedBytes() + 100);
        for (auto& v : scratch) v = static_cast<std::uint8_t>(rng.below(256));
        depthwiseRequant(p, in.data(), out.data(), scratch);
        for (std::size_t i = 0; i < out.size(); ++i)
            QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: pixel %2 channel %3: %4, scalar twin %5")
                                                      .arg(isaName(isa)).arg(i / g.C).arg(i % g.C).arg(out[i]).arg(ref[i])));
    }
}

void TestInfer::addMatchesFakeQuant_data()
{
    QTest::addColumn<double>("sa");
    QTest::addColumn<int>("za");
    QTest::addColumn<double>("sb");
    QTest::addColumn<int>("zb");
    QTest::addColumn<double>("so");
    QTest::addColumn<int>("zo");
    QTest::addColumn<bool>("relu");
    QTest::addColumn<bool>("ties"); // scales in exact ratios: many values are exact halves
    // Scales as observers produce them (range / 255): no simple ratios between them.
    QTest::newRow("residual, ReLU fused") << 0.0312877 << 0 << 0.0471193 << 61 << 0.0519241 << 0 << true << false;
    QTest::newRow("residual, no ReLU") << 0.0213411 << 127 << 0.0119372 << 90 << 0.0307126 << 113 << false << false;
    QTest::newRow("output scale below the inputs'") << 0.0803317 << 3 << 0.1100923 << 0 << 0.0207751 << 128 << false << false;
    QTest::newRow("very different input scales") << 1.03e-4 << 128 << 0.9003 << 128 << 0.7071 << 128 << false << false;
    QTest::newRow("s_a = s_out / 2 exactly (ties)") << 0.025 << 0 << 0.0173 << 20 << 0.05 << 0 << false << true;
    QTest::newRow("ties, odd output zero point") << 0.025 << 0 << 0.0173 << 20 << 0.05 << 77 << false << true;
    QTest::newRow("ties, ReLU, odd zero points") << 0.0125 << 3 << 0.0125 << 9 << 0.05 << 11 << true << true;
}

void TestInfer::addMatchesFakeQuant()
{
    QFETCH(double, sa);
    QFETCH(int, za);
    QFETCH(double, sb);
    QFETCH(int, zb);
    QFETCH(double, so);
    QFETCH(int, zo);
    QFETCH(bool, relu);
    QFETCH(bool, ties);
    const std::size_t n = 100003; // not a multiple of any vector width
    Rng rng(static_cast<std::uint64_t>(za * 7 + zb * 13 + zo));
    std::vector<std::uint8_t> a(n), b(n);
    for (std::size_t i = 0; i < n; ++i) {
        a[i] = static_cast<std::uint8_t>(rng.below(256));
        b[i] = static_cast<std::uint8_t>(rng.below(256));
    }
    const float fa = static_cast<float>(sa), fb = static_cast<float>(sb), fo = static_cast<float>(so);
    const int lo = relu ? zo : 0;
    const AddParams scalar = addParams(Isa::Scalar, static_cast<double>(fa) / fo, static_cast<double>(fb) / fo, za, zb, zo, lo, 255);
    std::vector<std::uint8_t> ref(n);
    addRequantScalar(scalar, a.data(), b.data(), ref.data(), n);
    // Against the float reference: dequantized inputs added in float, (ReLU,) fake-quantized. They
    // may differ where the exact value is (nearly) half-way between two steps: there the float
    // rounding errors of the reference decide.
    std::size_t same = 0;
    int maxDiff = 0;
    for (std::size_t i = 0; i < n; ++i) {
        float v = static_cast<float>(a[i] - za) * fa + static_cast<float>(b[i] - zb) * fb;
        if (relu) v = std::max(v, 0.0f);
        const int diff = std::abs(fakeQuantInt(v, fo, zo, 0, 255) - ref[i]);
        same += diff == 0;
        maxDiff = std::max(maxDiff, diff);
        const double exact = ((a[i] - za) * static_cast<double>(fa) + (b[i] - zb) * static_cast<double>(fb)) / fo;
        QVERIFY2(diff == 0 || nearTie(exact), qPrintable(QString("element %1: exact %2, engine %3").arg(i).arg(exact, 0, 'f', 9).arg(ref[i])));
    }
    const double agreement = static_cast<double>(same) / static_cast<double>(n);
    qInfo("integer Add vs float fake-quant: %.4f %% equal, max %d step", 100.0 * agreement, maxDiff);
    if (!ties) QVERIFY2(agreement >= kMinElementAgreement, qPrintable(QString("agreement %1").arg(agreement)));
    QVERIFY(maxDiff <= kRequantTolerance);
    for (Isa isa : fastIsas()) {
        const AddParams p = addParams(isa, static_cast<double>(fa) / fo, static_cast<double>(fb) / fo, za, zb, zo, lo, 255);
        for (std::size_t len : {n, std::size_t{1}, std::size_t{15}, std::size_t{17}, std::size_t{64}}) {
            std::vector<std::uint8_t> out(len + 1, 0xEE);
            addRequant(p, a.data(), b.data(), out.data(), len);
            for (std::size_t i = 0; i < len; ++i)
                QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: element %2: %3, scalar twin %4").arg(isaName(isa)).arg(i).arg(out[i]).arg(ref[i])));
            QCOMPARE(out[len], std::uint8_t{0xEE});
        }
    }
}

void TestInfer::avgPoolMatchesFakeQuant_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("k"); // 0: global
    QTest::addColumn<int>("stride");
    QTest::addColumn<double>("si");
    QTest::addColumn<int>("zin");
    QTest::addColumn<double>("so");
    QTest::addColumn<int>("zo");
    QTest::addColumn<bool>("ties"); // s_in / (window s_out) a simple fraction: many exact halves
    QTest::newRow("GAP 64ch 7x7 (resnet8)") << 64 << 7 << 7 << 0 << 1 << 0.0431377 << 0 << 0.0171249 << 0 << false;
    QTest::newRow("GAP 128ch 7x7, zero points") << 128 << 7 << 7 << 0 << 1 << 0.0233813 << 12 << 0.0090127 << 7 << false;
    QTest::newRow("GAP 5ch 4x6 (channel tails)") << 5 << 4 << 6 << 0 << 1 << 0.1012231 << 128 << 0.0497433 << 128 << false;
    QTest::newRow("AvgPool 2x2 s2 16ch 14x14") << 16 << 14 << 14 << 2 << 2 << 0.0200371 << 0 << 0.0191823 << 0 << false;
    QTest::newRow("AvgPool 3x3 s1 20ch 9x9") << 20 << 9 << 9 << 3 << 1 << 0.0500122 << 30 << 0.0410021 << 25 << false;
    QTest::newRow("same scale in and out (ties)") << 8 << 8 << 8 << 2 << 2 << 0.02 << 0 << 0.02 << 0 << true;
    QTest::newRow("GAP 4x6, s_out = s_in / 2 (ties)") << 5 << 4 << 6 << 0 << 1 << 0.1 << 128 << 0.05 << 128 << true;
}

void TestInfer::avgPoolMatchesFakeQuant()
{
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(double, si);
    QFETCH(int, zin);
    QFETCH(double, so);
    QFETCH(int, zo);
    QFETCH(bool, ties);
    const float fsi = static_cast<float>(si), fso = static_cast<float>(so);
    PoolParams p;
    p.C = static_cast<std::size_t>(C), p.H = static_cast<std::size_t>(H), p.W = static_cast<std::size_t>(W);
    p.kh = k ? static_cast<std::size_t>(k) : p.H;
    p.kw = k ? static_cast<std::size_t>(k) : p.W;
    p.stride = static_cast<std::size_t>(stride);
    p.Ho = (p.H - p.kh) / p.stride + 1, p.Wo = (p.W - p.kw) / p.stride + 1;
    const std::size_t window = p.kh * p.kw;
    p.f = fixedPointMultiplier(static_cast<double>(fsi) / (static_cast<double>(window) * fso));
    p.zin = zin, p.zp = zo, p.lo = 0, p.hi = 255;
    const std::size_t images = 400, inBytes = p.H * p.W * p.C, outBytes = p.Ho * p.Wo * p.C;
    Rng rng(static_cast<std::uint64_t>(C + H * 100 + k));
    std::vector<std::uint8_t> in(images * inBytes);
    for (auto& v : in) v = static_cast<std::uint8_t>(rng.below(256));
    // The float reference: dequantized inputs summed in window order, times 1 / window, fake-quantized;
    // and the exact value, to tell where it may round either way.
    std::vector<int> want(images * outBytes);
    std::vector<double> exact(images * outBytes);
    const float inv = 1.0f / static_cast<float>(window);
    for (std::size_t img = 0; img < images; ++img)
        for (std::size_t oy = 0; oy < p.Ho; ++oy)
            for (std::size_t ox = 0; ox < p.Wo; ++ox)
                for (std::size_t c = 0; c < p.C; ++c) {
                    float sum = 0.0f;
                    long isum = 0;
                    for (std::size_t ky = 0; ky < p.kh; ++ky)
                        for (std::size_t kx = 0; kx < p.kw; ++kx) {
                            const int q = in[img * inBytes + ((oy * p.stride + ky) * p.W + ox * p.stride + kx) * p.C + c] - zin;
                            sum += static_cast<float>(q) * fsi;
                            isum += q;
                        }
                    const std::size_t at = img * outBytes + (oy * p.Wo + ox) * p.C + c;
                    want[at] = fakeQuantInt(sum * inv, fso, zo, 0, 255);
                    exact[at] = static_cast<double>(isum) * fsi / (static_cast<double>(window) * fso);
                }
    std::vector<std::uint8_t> ref[2];
    const RoundMode modes[2] = {RoundMode::HalfEven, RoundMode::HalfUp};
    for (int m = 0; m < 2; ++m) {
        PoolParams q = p;
        q.round = modes[m];
        ref[m].assign(images * outBytes, 0);
        for (std::size_t img = 0; img < images; ++img) avgPoolRequantScalar(q, in.data() + img * inBytes, ref[m].data() + img * outBytes);
        std::size_t same = 0, offTie = 0;
        int maxDiff = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
            const int diff = std::abs(want[i] - ref[m][i]);
            same += diff == 0;
            offTie += diff != 0 && !nearTie(exact[i]);
            maxDiff = std::max(maxDiff, diff);
        }
        const double agreement = static_cast<double>(same) / static_cast<double>(want.size());
        qInfo("rounding %s: %.4f %% equal to the float fake-quant, max %d step, %zu differences away from a tie",
              m == 0 ? "half to even" : "half up", 100.0 * agreement, maxDiff, offTie);
        QCOMPARE(offTie, std::size_t{0});
        QVERIFY(maxDiff <= kRequantTolerance);
        if (modes[m] == RoundMode::HalfEven && !ties) // what the engine uses
            QVERIFY2(agreement >= kMinElementAgreement, qPrintable(QString("agreement %1").arg(agreement)));
        for (Isa isa : fastIsas()) {
            q.isa = isa;
            std::vector<std::uint8_t> out(outBytes + 1, 0xEE);
            for (std::size_t img = 0; img < images; img += 37) {
                out[outBytes] = 0xEE;
                avgPoolRequant(q, in.data() + img * inBytes, out.data());
                for (std::size_t i = 0; i < outBytes; ++i)
                    QVERIFY2(out[i] == ref[m][img * outBytes + i], qPrintable(QString("%1: image %2 value %3: %4, scalar twin %5")
                                                                                   .arg(isaName(isa)).arg(img).arg(i).arg(out[i]).arg(ref[m][img * outBytes + i])));
                QCOMPARE(out[outBytes], std::uint8_t{0xEE});
            }
        }
    }
}

QTEST_GUILESS_MAIN(TestInfer)
#include "tst_infer.moc"
