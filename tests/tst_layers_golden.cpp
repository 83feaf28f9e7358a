// Layers, losses and optimizers against their references: PyTorch 1.13 vectors (tests/data/015..028)
// and the semantics PyTorch and AIMET define (the dropout mask, max-pool ties, BatchNorm
// re-estimation). Central-difference gradient checks are in tst_layers_gradients.cpp; the fast
// kernels against their reference paths and thread-count determinism in tst_layer_kernels.cpp.
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/pointwise.h"
#include "nn/groupnorm.h"
#include "nn/layernorm2d.h"
#include "nn/channel_max.h"
#include "nn/prelu.h"
#include "util/rng.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <optional>
#include <cmath>
#include <memory>

using namespace quantscope;
using namespace quantscope::testing;

namespace {

// PyTorch comparisons. Floats in the files round-trip float32 exactly; what remains is the
// summation order of the kernels (ours: Eigen GEMM, double accumulators; theirs: BLAS).
constexpr double kRefAtol = 1e-5;        // values of magnitude ~1
constexpr double kRefRtol = 1e-5;
constexpr double kRefGradAtol = 5e-5;    // weight/bias gradients: sums of ~100 products, magnitude ~10
constexpr double kRefGradRtol = 1e-5;
constexpr double kRunStatRtol = 1e-6;    // BatchNorm running statistics vs a double-precision derivation
constexpr double kPointwiseAtol = 1e-6;  // sigmoid, tanh, SiLU, ELU, GELU: libm vs PyTorch's Sleef, an ulp or two
constexpr double kPointwiseRtol = 1e-5;
// GELU tanh's gradient: PyTorch's vectorised tanh (Sleef) reaches -1 an ulp before libm's (at
// u = -8.9 it gives -1, libm -0.99999994), and 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 kappa x^2) turns
// that ulp into ~2e-6 at |x| ~ 5 (039_gelu_tanh.json element 198: 0 against -2.1e-6).
constexpr double kGeluTanhGradAtol = 1e-5;

// A parameter-free single-input layer against a PyTorch case: forward y, then dx from grad_y.
void compareParameterFree(Layer& layer, const golden::GoldenCase& g, double atol, double rtol)
{
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    layer.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), atol, rtol);
    layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), atol, rtol);
}

// A layer with weights, in training mode, against its golden case: y and grad_x at the reference
// tolerances, grad_w (and grad_b when there is a bias) at the gradient ones. Then inference, which
// takes other code paths (a convolution's per-thread scratch, no cache), must give y bit for bit.
void compareWeighted(Layer& layer, Param& weight, Param* bias, const golden::GoldenCase& g)
{
    weight.value = g.in("w");
    if (bias) bias->value = g.in("b");
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    layer.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(weight.grad, g.out("grad_w"), kRefGradAtol, kRefGradRtol);
    if (bias) {
        QS_COMPARE_TENSORS(bias->grad, g.out("grad_b"), kRefGradAtol, kRefGradRtol);
    }
    Tensor yEval;
    layer.forward(g.in("x"), yEval, RunContext{});
    QVERIFY(bitIdentical(yEval, y));
}


// A spatial parameter of a case as (H, W): a number, or PyTorch's pair (kernel_size, stride,
// padding, dilation); `def` when absent or null (PyTorch's stride=None is the kernel's).
std::array<std::size_t, 2> spatial(const nlohmann::json& params, const char* key, std::array<std::size_t, 2> def)
{
    if (!params.contains(key) || params.at(key).is_null()) return def;
    const nlohmann::json& v = params.at(key);
    if (v.is_number()) return {v.get<std::size_t>(), v.get<std::size_t>()};
    const std::vector<std::size_t> pair = v.get<std::vector<std::size_t>>();
    if (pair.size() == 1) return {pair[0], pair[0]};
    if (pair.size() != 2) throw std::runtime_error(std::string(key) + " is neither a number nor an (H, W) pair");
    return {pair[0], pair[1]};
}

// A pooling case's window (kernel, stride, padding, ceil_mode, count_include_pad), as PyTorch's
// max_pool2d / avg_pool2d take them.
PoolGeometry poolGeometryOf(const nlohmann::json& params)
{
    const auto k = spatial(params, "kernel", {0, 0});
    const auto s = spatial(params, "stride", k);
    const auto p = spatial(params, "padding", {0, 0});
    PoolGeometry geo;
    geo.kh = k[0], geo.kw = k[1], geo.sh = s[0], geo.sw = s[1];
    geo.padTop = geo.padBottom = p[0];
    geo.padLeft = geo.padRight = p[1];
    geo.ceilMode = params.value("ceil_mode", false);
    geo.countIncludePad = params.value("count_include_pad", true);
    return geo;
}

} // namespace

class TestLayersGolden : public QObject {
    Q_OBJECT

private slots:
    // PyTorch reference vectors: every case of each op in tests/data
    void goldenConv2d_data() { golden::rowsFor({"conv2d"}); }
    void goldenConv2d();
    // 038_conv_geometry.json: windows that are not square (rectangular, two strides, asymmetric
    // padding, dilation; grouped and depthwise), one row per case of the file.
    void goldenConvGeometry_data();
    void goldenConvGeometry();
    void goldenPoolGeometry_data();
    void goldenPoolGeometry();
    void goldenMaxPool2d_data() { golden::rowsFor({"max_pool2d"}); }
    void goldenMaxPool2d();
    void goldenAvgPool2d_data() { golden::rowsFor({"avg_pool2d"}); }
    void goldenAvgPool2d();
    void goldenGlobalAvgPool2d_data() { golden::rowsFor({"global_avg_pool2d"}); }
    void goldenGlobalAvgPool2d();
    void goldenAdd_data() { golden::rowsFor({"add"}); }
    void goldenAdd();
    void goldenReLU6_data() { golden::rowsFor({"relu6"}); }
    void goldenReLU6();
    void goldenPointwise_data()
    {
        golden::rowsFor({"sigmoid", "tanh", "silu", "hardsigmoid", "hardswish", "leaky_relu", "elu", "gelu", "gelu_tanh", "hardtanh", "softplus", "mish", "selu", "celu", "softsign"});
    }
    void goldenPointwise();
    void goldenPReLU_data() { golden::rowsFor({"prelu"}); }
    void goldenPReLU();
    void goldenGroupNorm_data() { golden::rowsFor({"group_norm"}); }
    void goldenGroupNorm();
    void goldenLayerNorm2d_data() { golden::rowsFor({"layer_norm2d"}); }
    void goldenLayerNorm2d();
    void goldenChannelMax_data() { golden::rowsFor({"channel_max"}); }
    void goldenChannelMax();
    void goldenLinear_data() { golden::rowsFor({"linear"}); }
    void goldenLinear();
    void goldenBatchNorm2dTrain_data() { golden::rowsFor({"batch_norm2d"}); }
    void goldenBatchNorm2dTrain();

    // reference semantics
    void dropoutMask();
    void maxPoolTiesGoToFirstMaximum();
    void batchNormReestimationAveragesBatchStatistics();
};

// Plain (015), depthwise (023: groups = channels, stride 2, padding 1) and grouped (024)
// convolutions, with or without bias, and 042's variants: any kernel, stride, padding (numbers,
// (H, W) pairs, "same", "valid") and dilation PyTorch takes, as the case's params say.
void TestLayersGolden::goldenConv2d()
{
    QS_FETCH_GOLDEN(g);
    const Tensor& w = g.in("w");
    const std::size_t groups = g.params.value("groups", std::size_t{1});
    const bool bias = g.params.value("bias", g.inputs.count("b") > 0);
    QCOMPARE(bias, g.inputs.count("b") > 0);
    const auto stride = spatial(g.params, "stride", {1, 1}), dilation = spatial(g.params, "dilation", {1, 1});
    ConvGeometry geo{w.dim(2), w.dim(3), stride[0], stride[1], 0, 0, 0, 0, dilation[0], dilation[1]};
    const nlohmann::json padding = g.params.value("padding", nlohmann::json(0));
    if (padding.is_string()) { // padding="valid" (none) or "same" (stride 1; the odd pixel goes bottom/right)
        QVERIFY2(padding == "valid" || padding == "same", qPrintable(QString::fromStdString("padding " + padding.dump())));
        if (padding == "same") {
            const std::size_t th = geo.dh * (geo.kh - 1), tw = geo.dw * (geo.kw - 1);
            geo.padTop = th / 2, geo.padBottom = th - th / 2, geo.padLeft = tw / 2, geo.padRight = tw - tw / 2;
        }
    } else {
        const auto pad = spatial(g.params, "padding", {0, 0});
        geo.padTop = geo.padBottom = pad[0];
        geo.padLeft = geo.padRight = pad[1];
    }
    // A square window takes the square constructor, as the presets and .qsm files build them.
    Conv2d conv = geo.isSquare() ? Conv2d("conv", w.dim(1) * groups, w.dim(0), geo.kh, geo.sh, geo.padTop, groups, bias)
                                 : Conv2d("conv", w.dim(1) * groups, w.dim(0), geo, groups, bias);
    QCOMPARE(conv.inChannels(), g.in("x").dim(1));
    QCOMPARE(conv.params().size(), std::size_t{bias ? 2u : 1u});
    compareWeighted(conv, conv.weight(), bias ? &conv.bias() : nullptr, g);
}

namespace {
// The cases of 038_conv_geometry.json (one file of several cases, unlike the other golden files).
nlohmann::json casesOf(const char* file)
{
    QFile f(QString(QS_TEST_DATA "/") + file);
    if (!f.open(QIODevice::ReadOnly)) throw std::runtime_error(std::string(file) + ": cannot open reference file");
    const QByteArray bytes = f.readAll();
    return nlohmann::json::parse(bytes.constBegin(), bytes.constEnd()).at("cases");
}
nlohmann::json convGeometryCases() { return casesOf("038_conv_geometry.json"); }
// 040_pool_geometry.json's cases of the pooling layers QuantScope reads them for.
nlohmann::json poolGeometryCases()
{
    nlohmann::json out = nlohmann::json::array();
    for (const nlohmann::json& c : casesOf("040_pool_geometry.json"))
        out.push_back(c);
    return out;
}
} // namespace

void TestLayersGolden::goldenConvGeometry_data()
{
    QTest::addColumn<int>("index");
    QCOMPARE(golden::goldenFiles({"conv2d_geometry"}), QStringList{"038_conv_geometry.json"});
    const nlohmann::json cases = convGeometryCases();
    QVERIFY(cases.size() >= 8);
    for (std::size_t i = 0; i < cases.size(); ++i)
        QTest::newRow(cases[i].at("name").get<std::string>().c_str()) << static_cast<int>(i);
}

void TestLayersGolden::goldenConvGeometry()
{
    QFETCH(int, index);
    const nlohmann::json c = convGeometryCases().at(static_cast<std::size_t>(index));
    golden::GoldenCase g;
    g.file = "038_conv_geometry.json: " + QString::fromStdString(c.at("name").get<std::string>());
    g.op = "conv2d_geometry";
    g.params = c.at("params");
    for (const auto& [name, t] : c.at("inputs").items()) g.inputs.emplace(name, golden::goldenTensor(t));
    for (const auto& [name, t] : c.at("outputs").items()) g.outputs.emplace(name, golden::goldenTensor(t));
    const auto v = [&](const char* key, std::size_t i) { return g.params.at(key).at(i).get<std::size_t>(); };
    ConvGeometry geo;
    geo.kh = v("kernel", 0), geo.kw = v("kernel", 1), geo.sh = v("stride", 0), geo.sw = v("stride", 1);
    geo.padTop = v("padding", 0), geo.padLeft = v("padding", 1), geo.padBottom = v("padding", 2), geo.padRight = v("padding", 3);
    geo.dh = v("dilation", 0), geo.dw = v("dilation", 1);
    QVERIFY(!geo.isSquare());
    const std::size_t groups = g.params.at("groups").get<std::size_t>();
    const bool bias = g.params.at("bias").get<bool>();
    const Tensor& w = g.in("w");
    Conv2d conv("conv", w.dim(1) * groups, w.dim(0), geo, groups, bias);
    // None of the square fast paths may take it.
    QVERIFY(!conv.usesDirectKernel() && !conv.takesIntegerProducts() && !conv.addsInputGradient());
    conv.setBf16Products(Bf16Path::Avx512Bf16);
    QVERIFY(!conv.readsWeightAsBf16());
    conv.setBf16Products(Bf16Path::Emulated);
    compareWeighted(conv, conv.weight(), bias ? &conv.bias() : nullptr, g);
}

void TestLayersGolden::goldenPoolGeometry_data()
{
    QTest::addColumn<int>("index");
    QCOMPARE(golden::goldenFiles({"pool_geometry"}), QStringList{"040_pool_geometry.json"});
    const nlohmann::json cases = poolGeometryCases();
    QVERIFY(cases.size() >= 17);
    for (std::size_t i = 0; i < cases.size(); ++i)
        QTest::newRow(cases[i].at("name").get<std::string>().c_str()) << static_cast<int>(i);
}

// Pooling windows that are not square (040_pool_geometry.json, PyTorch 1.13): rectangular kernels,
// two strides, ceil_mode (a window that would start in the padding dropped; average windows running
// past input + padding divide by the part inside), count_include_pad=False, asymmetric padding,
// ties, a global max over a 5x7 map; y and grad_x. Max and routing are exact; means at the
// reference tolerances.
void TestLayersGolden::goldenPoolGeometry()
{
    QFETCH(int, index);
    const nlohmann::json c = poolGeometryCases().at(static_cast<std::size_t>(index));
    golden::GoldenCase g;
    g.file = "040_pool_geometry.json: " + QString::fromStdString(c.at("name").get<std::string>());
    g.op = "pool_geometry";
    g.params = c.at("params");
    for (const auto& [name, t] : c.at("inputs").items()) g.inputs.emplace(name, golden::goldenTensor(t));
    for (const auto& [name, t] : c.at("outputs").items()) g.outputs.emplace(name, golden::goldenTensor(t));
    const auto v = [&](const char* key, std::size_t i) { return g.params.at(key).at(i).get<std::size_t>(); };
    PoolGeometry geo;
    geo.kh = v("kernel", 0), geo.kw = v("kernel", 1), geo.sh = v("stride", 0), geo.sw = v("stride", 1);
    geo.padTop = v("padding", 0), geo.padLeft = v("padding", 1), geo.padBottom = v("padding", 2), geo.padRight = v("padding", 3);
    geo.ceilMode = g.params.at("ceil_mode").get<bool>();
    geo.countIncludePad = g.params.at("count_include_pad").get<bool>();
    QVERIFY(!geo.isSquare());
    if (g.params.at("kind") == "avg") {
        AvgPool2d pool("pool", geo);
        QCOMPARE(pool.outputShape(g.in("x").shape()), g.out("y").shape());
        compareParameterFree(pool, g, kRefAtol, kRefRtol);
        return;
    }
    MaxPool2d pool("pool", geo);
    QVERIFY(!pool.fusesAfterConvolution());
    QCOMPARE(pool.outputShape(g.in("x").shape()), g.out("y").shape());
    compareParameterFree(pool, g, 0.0, 0.0);
}

void TestLayersGolden::goldenMaxPool2d()
{
    QS_FETCH_GOLDEN(g);
    QVERIFY2(spatial(g.params, "dilation", {1, 1}) == (std::array<std::size_t, 2>{1, 1}), "MaxPool2d takes no dilation");
    const PoolGeometry geo = poolGeometryOf(g.params);
    MaxPool2d pool = geo.isSquare() ? MaxPool2d("pool", geo.kh, geo.sh, geo.padTop) : MaxPool2d("pool", geo);
    QCOMPARE(pool.outputShape(g.in("x").shape()), g.out("y").shape());
    // Max and routing are exact: no arithmetic beyond a copy and one addition per window.
    compareParameterFree(pool, g, 0.0, 0.0);
}

void TestLayersGolden::goldenAvgPool2d()
{
    QS_FETCH_GOLDEN(g);
    QVERIFY2(!g.params.contains("divisor_override") || g.params.at("divisor_override").is_null(),
             "AvgPool2d divides by the window (divisor_override is not taken)");
    const PoolGeometry geo = poolGeometryOf(g.params);
    AvgPool2d pool = geo.isSquare() ? AvgPool2d("pool", geo.kh, geo.sh, geo.padTop) : AvgPool2d("pool", geo);
    QCOMPARE(pool.outputShape(g.in("x").shape()), g.out("y").shape());
    compareParameterFree(pool, g, kRefAtol, kRefRtol);
}

void TestLayersGolden::goldenGlobalAvgPool2d()
{
    QS_FETCH_GOLDEN(g);
    GlobalAvgPool2d pool("pool");
    compareParameterFree(pool, g, kRefAtol, kRefRtol);
}

// Through the multi-input form the Model calls. One float addition per element, gradients are
// copies: exact.
void TestLayersGolden::goldenAdd()
{
    QS_FETCH_GOLDEN(g);
    Add add("add");
    QCOMPARE(add.numInputs(), std::size_t{2});
    RunContext ctx;
    ctx.training = true;
    Tensor y, da, db;
    add.forwardMulti({&g.in("a"), &g.in("b")}, y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), 0.0, 0.0);
    add.backwardMulti({&g.in("a"), &g.in("b")}, y, g.in("grad_y"), {&da, &db});
    QS_COMPARE_TENSORS(da, g.out("grad_a"), 0.0, 0.0);
    QS_COMPARE_TENSORS(db, g.out("grad_b"), 0.0, 0.0);
    // A null gradient slot (the model input) is skipped.
    Tensor only;
    add.backwardMulti({&g.in("a"), &g.in("b")}, y, g.in("grad_y"), {nullptr, &only});
    QS_COMPARE_TENSORS(only, g.out("grad_b"), 0.0, 0.0);
}

// Clamping and masking are exact. 028's input holds 0 and 6 exactly, whose gradient is 0 as in
// PyTorch's hardtanh_backward.
void TestLayersGolden::goldenReLU6()
{
    QS_FETCH_GOLDEN(g);
    ReLU6 relu6("relu6");
    compareParameterFree(relu6, g, 0.0, 0.0);
}

// Pointwise activations (030-037, 039, 041): x holds the bends exactly (0, +-3; Hardtanh's bounds),
// their float neighbours and +-20, +-90 (exp over- and underflows). PyTorch's vectorised kernels
// (Sleef exp/tanh/erf) and libm differ by an ulp or two; the piecewise-linear ones are exact.
void TestLayersGolden::goldenPointwise()
{
    QS_FETCH_GOLDEN(g);
    struct Kind {
        LayerKind kind;
        const char* param; // the parameter PyTorch names, and its default where the case names none
        float byDefault;
    };
    const std::map<std::string, Kind> kinds = {
        {"sigmoid", {LayerKind::Sigmoid, nullptr, 0.0f}},     {"tanh", {LayerKind::Tanh, nullptr, 0.0f}},
        {"silu", {LayerKind::SiLU, nullptr, 0.0f}},           {"hardsigmoid", {LayerKind::Hardsigmoid, nullptr, 0.0f}},
        {"hardswish", {LayerKind::Hardswish, nullptr, 0.0f}}, {"leaky_relu", {LayerKind::LeakyReLU, "negative_slope", 0.01f}},
        {"elu", {LayerKind::ELU, "alpha", 1.0f}},             {"gelu", {LayerKind::GELU, nullptr, 0.0f}},
        {"gelu_tanh", {LayerKind::GELUTanh, nullptr, 0.0f}},  {"hardtanh", {LayerKind::Hardtanh, "min_val", -1.0f}},
        {"softplus", {LayerKind::Softplus, nullptr, 0.0f}},   {"mish", {LayerKind::Mish, nullptr, 0.0f}},
        {"selu", {LayerKind::SELU, nullptr, 0.0f}},           {"celu", {LayerKind::CELU, "alpha", 1.0f}},
        {"softsign", {LayerKind::Softsign, nullptr, 0.0f}}};
    Kind k = kinds.at(g.op);
    // F.gelu(x, approximate="tanh") is GELU's tanh form, whichever op name the case gives
    if (g.params.value("approximate", std::string("none")) == "tanh") k.kind = LayerKind::GELUTanh;
    const LayerKind kind = k.kind;
    const std::optional<float> maxVal = kind == LayerKind::Hardtanh ? std::optional<float>(g.params.value("max_val", 1.0f)) : std::nullopt;
    Pointwise layer(g.op, kind, k.param ? std::optional<float>(g.params.value(k.param, k.byDefault)) : std::nullopt, maxVal);
    const bool exact = kind == LayerKind::Hardsigmoid || kind == LayerKind::Hardswish || kind == LayerKind::LeakyReLU ||
                       kind == LayerKind::Hardtanh;
    if (kind == LayerKind::GELUTanh) {
        RunContext ctx;
        ctx.training = true;
        Tensor y, dx;
        layer.forward(g.in("x"), y, ctx);
        QS_COMPARE_TENSORS(y, g.out("y"), kPointwiseAtol, kPointwiseRtol);
        layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
        QS_COMPARE_TENSORS(dx, g.out("grad_x"), kGeluTanhGradAtol, kPointwiseRtol);
        return;
    }
    compareParameterFree(layer, g, exact ? 0.0 : kPointwiseAtol, exact ? 0.0 : kPointwiseRtol);
}

// 038_prelu*.json: per-channel slopes on a map, one shared slope, per-channel on features. y and
// grad_x are exact (one product or none per value); the slopes' gradient is a sum (of 50 products
// per channel, 200 shared), at the weight-gradient tolerance.
void TestLayersGolden::goldenPReLU()
{
    QS_FETCH_GOLDEN(g);
    PReLU layer("prelu", g.params.at("num_parameters").get<std::size_t>());
    layer.weight().value = g.in("w");
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    layer.forward(g.in("x"), y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), 0.0, 0.0);
    layer.backward(g.in("x"), y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), 0.0, 0.0);
    QS_COMPARE_TENSORS(layer.weight().grad, g.out("grad_w"), kRefGradAtol, kRefGradRtol);
}

// 045_group_norm*.json: nn.GroupNorm with 2 groups of 3 channels, one group per channel
// (InstanceNorm2d), one group without affine parameters (an offset input, eps 1e-3), and on (N, C)
// features. Values of magnitude ~1 and parameter gradients summed over up to 60 values an image.
void TestLayersGolden::goldenGroupNorm()
{
    QS_FETCH_GOLDEN(g);
    const bool affine = g.params.at("affine").get<bool>();
    GroupNorm layer("gn", g.params.at("num_groups").get<std::size_t>(), g.params.at("num_channels").get<std::size_t>(),
                    g.params.at("eps").get<float>(), affine);
    if (affine) compareWeighted(layer, layer.weight(), &layer.bias(), g); // evaluation computes the same, bit for bit
    else compareParameterFree(layer, g, kRefAtol, kRefRtol);
}

// 049_layer_norm2d*.json: F.layer_norm over each pixel's channels of permuted maps (ConvNeXt's
// LayerNorm2d), without affine parameters on an offset input (eps 1e-3), and on (N, C) features
// (nn.LayerNorm(C)).
void TestLayersGolden::goldenLayerNorm2d()
{
    QS_FETCH_GOLDEN(g);
    const bool affine = g.params.at("affine").get<bool>();
    LayerNorm2d layer("ln", g.params.at("num_channels").get<std::size_t>(), g.params.at("eps").get<float>(), affine);
    if (affine) compareWeighted(layer, layer.weight(), &layer.bias(), g);
    else compareParameterFree(layer, g, kRefAtol, kRefRtol);
}

// 050_channel_max*.json: torch.max(x, dim=1, keepdim=True)'s values, random and with ties (the
// gradient goes to the index torch.max returns, the first maximum). Values are inputs: exact.
void TestLayersGolden::goldenChannelMax()
{
    QS_FETCH_GOLDEN(g);
    ChannelMax layer("cmax");
    compareParameterFree(layer, g, 0.0, 0.0);
}

void TestLayersGolden::goldenLinear()
{
    QS_FETCH_GOLDEN(g);
    const Tensor& w = g.in("w");
    const bool bias = g.inputs.count("b") > 0;
    Linear fc("fc", w.dim(1), w.dim(0), bias);
    compareWeighted(fc, fc.weight(), bias ? &fc.bias() : nullptr, g);
}

// Training (batch statistics) or evaluation (running statistics) as the case's "training" says;
// running statistics from the case's inputs, else PyTorch's initial mean 0 and variance 1.
void TestLayersGolden::goldenBatchNorm2dTrain()
{
    QS_FETCH_GOLDEN(g);
    const bool training = g.params.value("training", true);
    const Tensor& x = g.in("x");
    const std::size_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
    const float eps = g.params.value("eps", 1e-5f);
    const double kMomentum = g.params.value("momentum", 0.1);
    BatchNorm2d bn("bn", C, eps, static_cast<float>(kMomentum));
    bn.gamma().value = g.in("gamma");
    bn.beta().value = g.in("beta");
    const bool givenStats = g.inputs.count("running_mean") > 0;
    QCOMPARE(g.inputs.count("running_var") > 0, givenStats);
    if (givenStats) {
        bn.runningMean() = g.in("running_mean");
        bn.runningVar() = g.in("running_var");
    }
    const Tensor mean0 = bn.runningMean(), var0 = bn.runningVar();
    RunContext ctx;
    ctx.training = training;
    Tensor y, dx;
    bn.forward(x, y, ctx);
    QS_COMPARE_TENSORS(y, g.out("y"), kRefAtol, kRefRtol);
    bn.backward(x, y, g.in("grad_y"), dx, true);
    QS_COMPARE_TENSORS(dx, g.out("grad_x"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(bn.gamma().grad, g.out("grad_gamma"), kRefGradAtol, kRefGradRtol);
    QS_COMPARE_TENSORS(bn.beta().grad, g.out("grad_beta"), kRefGradAtol, kRefGradRtol);

    // Running statistics, PyTorch semantics: running = (1 - momentum) running + momentum * batch,
    // with the unbiased batch variance; evaluation leaves them alone.
    Tensor expMean = mean0, expVar = var0;
    for (std::size_t c = 0; c < C && training; ++c) {
        double s = 0.0, s2 = 0.0;
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t i = 0; i < HW; ++i) s += x[(n * C + c) * HW + i];
        const double mean = s / static_cast<double>(N * HW);
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t i = 0; i < HW; ++i) s2 += std::pow(x[(n * C + c) * HW + i] - mean, 2);
        expMean[c] = static_cast<float>((1.0 - kMomentum) * mean0[c] + kMomentum * mean);
        expVar[c] = static_cast<float>((1.0 - kMomentum) * var0[c] + kMomentum * s2 / static_cast<double>(N * HW - 1));
    }
    QS_COMPARE_TENSORS(bn.runningMean(), expMean, kRefAtol * 0.1, kRunStatRtol);
    QS_COMPARE_TENSORS(bn.runningVar(), expVar, 0.0, kRunStatRtol);
    if (g.outputs.count("running_mean")) { // PyTorch's own running statistics after the pass
        QS_COMPARE_TENSORS(bn.runningMean(), g.out("running_mean"), kRefAtol * 0.1, kRunStatRtol);
        QS_COMPARE_TENSORS(bn.runningVar(), g.out("running_var"), 0.0, kRunStatRtol);
    }

    // Evaluation normalises with the running statistics, not the batch's.
    Tensor yEval, expEval(x.shape());
    bn.forward(x, yEval, RunContext{});
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t i = 0; i < HW; ++i) {
                const std::size_t k = (n * C + c) * HW + i;
                expEval[k] = static_cast<float>(g.in("gamma")[c] * (x[k] - expMean[c]) /
                                                    std::sqrt(static_cast<double>(expVar[c]) + eps) +
                                                g.in("beta")[c]);
            }
    QS_COMPARE_TENSORS(yEval, expEval, kRefAtol, kRefRtol);
    // ... and leaves them alone.
    QS_COMPARE_TENSORS(bn.runningMean(), expMean, kRefAtol * 0.1, kRunStatRtol);
}

void TestLayersGolden::dropoutMask()
{
    constexpr float kP = 0.25f;
    constexpr double kFractionTol = 0.01; // ~6 sigma for 1e5 Bernoulli draws
    Dropout d("dropout", kP);
    Rng rng(7);
    const Tensor x = randomTensor({10, 10000}, rng, 0.5f, 1.5f); // no zeros in the input
    RunContext ctx;
    ctx.training = true;
    ctx.rngKey = 99;
    Tensor y1, y2, y3, yEval;
    d.forward(x, y1, ctx);
    std::size_t zeros = 0;
    for (std::size_t i = 0; i < x.numel(); ++i) {
        if (y1[i] == 0.0f) {
            ++zeros;
            continue;
        }
        QCOMPARE(y1[i], x[i] * (1.0f / (1.0f - kP)));
    }
    const double fraction = static_cast<double>(zeros) / static_cast<double>(x.numel());
    QVERIFY2(std::abs(fraction - kP) < kFractionTol, qPrintable(QString("dropped %1").arg(fraction)));

    d.forward(x, y2, ctx);
    QVERIFY(bitIdentical(y1, y2));
    ctx.rngKey = 100;
    d.forward(x, y3, ctx);
    QVERIFY(!bitIdentical(y1, y3));

    d.forward(x, yEval, RunContext{});
    QVERIFY(bitIdentical(yEval, x));
}

// PyTorch sends the gradient of a window with equal values to the first one in scan order.
void TestLayersGolden::maxPoolTiesGoToFirstMaximum()
{
    MaxPool2d pool("pool", 2);
    const Tensor x({1, 1, 2, 4}, {1.0f, 2.0f, 5.0f, 5.0f, //
                                  2.0f, 2.0f, 5.0f, 5.0f});
    RunContext ctx;
    ctx.training = true;
    Tensor y, dx;
    pool.forward(x, y, ctx);
    QCOMPARE(y.values(), (std::vector<float>{2.0f, 5.0f}));
    pool.backward(x, y, Tensor({1, 1, 1, 2}, {10.0f, 20.0f}), dx, true);
    QCOMPARE(dx.values(), (std::vector<float>{0.0f, 10.0f, 20.0f, 0.0f, //
                                              0.0f, 0.0f, 0.0f, 0.0f}));
}

// BatchNorm re-estimation (Nagel et al. 2022; AIMET's reestimate_bn_stats): between begin and end,
// every forward pass normalises with its batch statistics, in evaluation mode and frozen alike,
// and the running statistics become the plain average of the batch means and unbiased batch
// variances over those passes, whatever they held before (not the momentum-0.1 moving average).
void TestLayersGolden::batchNormReestimationAveragesBatchStatistics()
{
    constexpr std::size_t N = 4, C = 3, H = 5, W = 5, HW = H * W, kPasses = 3;
    const float eps = 1e-5f;
    BatchNorm2d bn("bn", C, eps);
    Rng rng(7);
    bn.gamma().value = randomTensor({C}, rng, 0.5f, 2.0f);
    bn.beta().value = randomTensor({C}, rng);
    bn.runningMean() = randomTensor({C}, rng, 5.0f, 9.0f); // far from the data's statistics
    bn.runningVar() = randomTensor({C}, rng, 50.0f, 90.0f);
    bn.setFrozen(true); // re-estimation ignores the freeze; it stays frozen afterwards
    std::vector<Tensor> xs;
    for (std::size_t k = 0; k < kPasses; ++k) // a different mean and spread per pass
        xs.push_back(randomTensor({N, C, H, W}, rng, -1.0f - float(k), 1.0f + 2.0f * float(k)));

    bn.beginReestimation();
    QVERIFY(bn.reestimating());
    std::vector<double> meanSum(C, 0.0), varSum(C, 0.0);
    for (std::size_t k = 0; k < kPasses; ++k) {
        Tensor y;
        bn.forward(xs[k], y, RunContext{}); // evaluation mode
        for (std::size_t c = 0; c < C; ++c) {
            double s = 0.0, s2 = 0.0;
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < HW; ++i) s += xs[k][(n * C + c) * HW + i];
            const double mean = s / double(N * HW);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < HW; ++i) s2 += std::pow(xs[k][(n * C + c) * HW + i] - mean, 2);
            meanSum[c] += mean;
            varSum[c] += s2 / double(N * HW - 1);
            // this pass normalised with its own (biased) batch statistics
            const double inv = 1.0 / std::sqrt(s2 / double(N * HW) + eps);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < HW; ++i) {
                    const std::size_t j = (n * C + c) * HW + i;
                    const double want = bn.gamma().value[c] * (xs[k][j] - mean) * inv + bn.beta().value[c];
                    QVERIFY2(std::abs(y[j] - want) <= kRefAtol * (1.0 + std::abs(want)),
                             qPrintable(QString("pass %1 element %2: %3, expected %4").arg(k).arg(j).arg(y[j]).arg(want)));
                }
        }
    }
    bn.endReestimation();
    QVERIFY(!bn.reestimating());
    QVERIFY(bn.frozen());
    Tensor expMean({C}), expVar({C});
    for (std::size_t c = 0; c < C; ++c) {
        expMean[c] = static_cast<float>(meanSum[c] / kPasses);
        expVar[c] = static_cast<float>(varSum[c] / kPasses);
    }
    QS_COMPARE_TENSORS(bn.runningMean(), expMean, kRefAtol, kRunStatRtol * 10);
    QS_COMPARE_TENSORS(bn.runningVar(), expVar, 0.0, kRunStatRtol * 10);

    // After it, evaluation (and the frozen training pass) use the re-estimated statistics and no
    // longer change them.
    Tensor y;
    RunContext train;
    train.training = true;
    bn.forward(xs[0], y, train);
    QS_COMPARE_TENSORS(bn.runningVar(), expVar, 0.0, kRunStatRtol * 10);

    // A span without a forward pass leaves the statistics as they were, bit for bit (compared
    // with what they were, not with expMean/expVar, which they match only within rtol: the asan
    // build's running mean was 1 ulp from expMean, 2026-11-30).
    const Tensor meanBefore = bn.runningMean(), varBefore = bn.runningVar();
    bn.beginReestimation();
    bn.endReestimation();
    QS_COMPARE_TENSORS(bn.runningMean(), meanBefore, 0.0, 0.0);
    QS_COMPARE_TENSORS(bn.runningVar(), varBefore, 0.0, 0.0);
}

QTEST_GUILESS_MAIN(TestLayersGolden)
#include "tst_layers_golden.moc"
