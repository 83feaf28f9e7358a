// Convolution windows that are not square (rectangular kernels, two strides, asymmetric padding,
// dilation; grouped and depthwise) end to end: PyTorch exports (tests/onnx_import convgeom_*,
// make_fixtures.py; opsets 11, 13, 17, with and without constant folding) import with their
// windows and match PyTorch's outputs; .qsm and ONNX files keep the windows; onnxruntime runs the
// FP32 and QDQ exports; the integer engine's general path gives at every convolution point the
// integers of the exact integer arithmetic and of the fake-quant simulation; shapes that leave no
// output and absurd sizes are typed errors naming the layer or node. The layer's own numerics are
// in tst_layers_golden (038_conv_geometry.json) and tst_layers_gradients (conv2d_geometry_*).
#include "analysis/model_summary.h"
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"
#include "qsm_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::forwardOn;
using onnx_import_fixtures::fileBytes, onnx_import_fixtures::kFixtures, onnx_import_fixtures::loadReference,
    onnx_import_fixtures::Reference;
using layer_checks::traceNamed;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

// |QuantScope - PyTorch| over the largest |PyTorch output|.
constexpr double kFp32RelTol = 1e-5;
// onnxruntime's float graph against QuantScope's float model.
constexpr double kOrtFp32RelTol = 1e-5;
// The engine against the fake-quant simulation's float convolution: within one step where the
// exact value lies within float rounding of a half step, and in at most 0.1 % of the values.
constexpr std::int32_t kPointStepTol = 1;
// A value this close to a half step may round either way in the engine's fixed-point multiplier.
constexpr double kTieMargin = 1e-6;
constexpr double kMinEngineAgreement = 0.995;
constexpr double kMinQdqAgreement = 0.98;
constexpr double kQdqMeanRelDiff = 2e-2;
// The codes at the points: within kPointStepTol, in at most one value in 1000, over at least 16
// codes (FP32 windows in a plan: the count of codes not asked).
constexpr layer_checks::CodeBounds kPointBounds{kPointStepTol, 1000, 16};
constexpr layer_checks::CodeBounds kFloatPointBounds{kPointStepTol, 1000, 0};
// The ONNX read back against the model, over its largest |output|.
constexpr double kOnnxRoundTripRelTol = 1e-6;

const char* const kFixtureNames[] = {"convgeom_op11_nofold", "convgeom_op13_fold_dyn", "convgeom_op17_fold",
                                     "convgeom_op17_nofold_dyn"};

std::vector<ConvGeometry> windowsOf(const ExportedModel& m)
{
    std::vector<ConvGeometry> w;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Conv2d) w.push_back(l.convGeometry());
    return w;
}
bool sameWindows(const ExportedModel& back, const ExportedModel& m) { return windowsOf(back) == windowsOf(m); }

ConvGeometry geom(std::size_t kh, std::size_t kw, std::size_t sh, std::size_t sw, std::size_t t, std::size_t l, std::size_t b,
                  std::size_t r, std::size_t dh, std::size_t dw)
{
    return {kh, kw, sh, sw, t, l, b, r, dh, dw};
}

// The windows PyTorch's ConvGeometry module (make_fixtures.py) has, in order; the F.pads before
// same4 and fpad are folded into their convolutions.
std::vector<ConvGeometry> fixtureWindows()
{
    return {ConvGeometry::square(3, 1, 1),         geom(1, 7, 1, 1, 0, 3, 0, 3, 1, 1), geom(7, 1, 1, 1, 3, 0, 3, 0, 1, 1),
            geom(3, 3, 2, 1, 1, 1, 1, 1, 1, 1),     geom(3, 3, 1, 1, 2, 2, 2, 2, 2, 2), geom(4, 4, 1, 1, 1, 1, 2, 2, 1, 1),
            geom(3, 2, 1, 2, 0, 1, 1, 2, 1, 1),     geom(3, 3, 1, 1, 2, 1, 2, 1, 2, 1), geom(3, 3, 2, 2, 2, 2, 2, 2, 2, 2)};
}

// A model on the workspace's 1 x 28 x 28 images with every kind of window, for the integer engine:
//   stem 3x3 p1 -> relu; 1x7 p(0,3) -> relu; 7x1 p(3,0) (its own point, no ReLU); 3x3 s(2,1) p1
//   -> relu (14 x 28); 3x3 d2 p2 -> relu; 4x4 pads (1,1,2,2) -> relu; grouped 3x3 d(2,1) p(2,1)
//   -> relu; depthwise 3x3 s2 d2 p2 -> relu (7 x 14); 2x2 max pool; fc.
std::unique_ptr<Model> geometryModel()
{
    auto m = std::make_unique<Model>("convgeom", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("stem", 1, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("stem_relu"));
    m->add(std::make_unique<Conv2d>("k1x7", 8, 8, geom(1, 7, 1, 1, 0, 3, 0, 3, 1, 1)));
    m->add(std::make_unique<ReLU>("k1x7_relu"));
    m->add(std::make_unique<Conv2d>("k7x1", 8, 8, geom(7, 1, 1, 1, 3, 0, 3, 0, 1, 1)));
    m->add(std::make_unique<Conv2d>("s2x1", 8, 8, geom(3, 3, 2, 1, 1, 1, 1, 1, 1, 1)));
    m->add(std::make_unique<ReLU>("s2x1_relu"));
    m->add(std::make_unique<Conv2d>("dil2", 8, 8, geom(3, 3, 1, 1, 2, 2, 2, 2, 2, 2)));
    m->add(std::make_unique<ReLU>("dil2_relu"));
    m->add(std::make_unique<Conv2d>("same4", 8, 8, geom(4, 4, 1, 1, 1, 1, 2, 2, 1, 1)));
    m->add(std::make_unique<ReLU>("same4_relu"));
    m->add(std::make_unique<Conv2d>("gdil", 8, 8, geom(3, 3, 1, 1, 2, 1, 2, 1, 2, 1), 2));
    m->add(std::make_unique<ReLU>("gdil_relu"));
    m->add(std::make_unique<Conv2d>("dwdil", 8, 8, geom(3, 3, 2, 2, 2, 2, 2, 2, 2, 2), 8));
    m->add(std::make_unique<ReLU>("dwdil_relu"));
    m->add(std::make_unique<MaxPool2d>("pool", 2));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8 * 3 * 7, 10));
    m->initParams(23);
    return m;
}

// The point holding stored activation a (0: the input): the layer's own record, or where a
// convolution's only reader is a ReLU, the ReLU's.
std::string pointName(const ExportedModel& m, std::size_t a) { return a == 0 ? std::string("input") : m.layers.at(a - 1).name; }

using Bytes = std::vector<std::uint8_t>;

// geometryModel as an FP32 .qsm file.
Bytes storedWindowFile()
{
    std::unique_ptr<Model> m = geometryModel();
    return encodeQsm(exportFloatModel(*m, "convgeom", Normalization::identity(1), {}));
}

// Sets field `field` (0 kernel width .. 6 dilation across) of the stored window whose seven
// fields are `window`, and re-seals the header.
void patchWindow(Bytes& b, const std::array<std::uint32_t, 7>& window, std::size_t field, std::uint32_t value)
{
    std::array<std::uint8_t, 28> pattern;
    std::memcpy(pattern.data(), window.data(), 28);
    const auto at = std::search(b.begin(), b.end(), pattern.begin(), pattern.end());
    QVERIFY2(at != b.end(), "window not found in the file");
    std::memcpy(&*at + 4 * field, &value, 4);
    qsm_fixtures::fixHeader(b);
}

} // namespace

class TestConvGeometry : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("convgeom"); }
    void importMatchesPyTorch_data();
    void importMatchesPyTorch();
    void roundTripsAndOnnxruntime_data() { importMatchesPyTorch_data(); }
    void roundTripsAndOnnxruntime();
    void engineEqualsFakeQuant_data();
    void engineEqualsFakeQuant();
    void floatWindowsInAPlan();
    void squareConvolutionsKeepTheirFiles();
    void emptyOutputsAreConfigErrors();
    void absurdWindowsAreTypedErrors();
    void autoPadSameIsRead();
    void summaryShowsTheWindow();
};

void TestConvGeometry::importMatchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : kFixtureNames) QTest::newRow(n) << QString(n);
}

// Every window is read as PyTorch wrote it (the Pads before two convolutions folded into their
// pads), and the model's outputs are PyTorch's.
void TestConvGeometry::importMatchesPyTorch()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    QVERIFY(windowsOf(m) == fixtureWindows());
    QS_CHECK(layer_checks::matchesPyTorch(name.toStdString(), m, kFp32RelTol));
}

// .qsm and ONNX files keep every window and the outputs; onnxruntime runs the FP32 export as
// QuantScope does.
void TestConvGeometry::roundTripsAndOnnxruntime()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, {"every window", sameWindows, sameWindows, kOnnxRoundTripRelTol}, onnxBytes));

    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32(name.toStdString(), m, onnxBytes, m_dir, m_data.test.pixels, kOrtFp32RelTol));
}

void TestConvGeometry::engineEqualsFakeQuant_data()
{
    layer_checks::activationFormatRows();
}

// A model quantized by QuantSim (int8 weights per channel, calibrated activations) and exported:
// at every convolution point the engine's integers are those of the exact integer arithmetic
// (int64 sums of (q_x - z_x) q_w plus the int32 bias, times s_x s_w / s_y in double, half to
// even), all of them; and those of the fake-quant simulation (the float convolution on the
// dequantized input, then the point's fake-quant) but for values within float rounding of a half
// step. The engine's predictions are the fake-quant reference's; the .qsm and QDQ files read back
// with their windows and onnxruntime predicts what the engine does.
void TestConvGeometry::engineEqualsFakeQuant()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(geometryModel(), m_data, "int8", "channel", act.toStdString());
    const ExportedModel& em = q.exported;
    QVERIFY2(IntEngine::unsupportedReason(em).empty(), IntEngine::unsupportedReason(em).c_str());
    const IntEngine engine(em);
    std::size_t exactDiffer = 0, nearTies = 0, convs = 0;
    engine_agreement::CodeDiff diff; // against the fake-quant
    for (std::size_t img = 0; img < 20; ++img) {
        const std::vector<PointTrace> trace = engine.trace(m_data.test.pixels.data() + img * m_data.test.imageBytes());
        for (std::size_t li = 0; li < em.layers.size(); ++li) {
            const StoredLayer& l = em.layers[li];
            if (l.kind != LayerKind::Conv2d || l.name == "stem") continue;
            const ConvGeometry g = l.convGeometry();
            QVERIFY2(!g.isSquare(), l.name.c_str());
            // The point: the conv's own, or its ReLU's.
            bool relu = false;
            std::string point = l.name;
            if (!l.outputQuant) {
                const long next = em.soleConsumer(li);
                QVERIFY(next >= 0 && em.layers[static_cast<std::size_t>(next)].kind == LayerKind::ReLU);
                point = em.layers[static_cast<std::size_t>(next)].name;
                relu = true;
            }
            const PointTrace* out = traceNamed(trace, point);
            const PointTrace* in = traceNamed(trace, pointName(em, l.inputs[0]));
            if (in == nullptr && l.inputs[0] > 0) { // the ReLU after the input conv carries its record
                const long next = em.soleConsumer(l.inputs[0] - 1);
                if (next >= 0) in = traceNamed(trace, em.layers[static_cast<std::size_t>(next)].name);
            }
            QVERIFY2(out && in, l.name.c_str());
            QCOMPARE(in->shape.size(), std::size_t{3});
            const std::size_t C = in->shape[0], H = in->shape[1], W = in->shape[2];
            const std::size_t Ho = g.outH(H), Wo = g.outW(W), cout = l.outChannels, cig = C / l.groups, cog = cout / l.groups;
            QCOMPARE(out->q.size(), cout * Ho * Wo);
            const StoredTensor& wt = l.tensors.at(0);
            const StoredTensor& bt = l.tensors.at(1);
            QVERIFY(wt.encoding == TensorEncoding::Int && bt.encoding == TensorEncoding::Int && bt.bits == 32);
            // The fake-quant reference: the layer in float on the dequantized input.
            Conv2d ref("ref", C, cout, g, l.groups, true);
            ref.weight().value.values() = wt.dequantized();
            ref.bias().value.values() = bt.dequantized();
            Tensor x = engine_agreement::dequantized(*in), y; // [1, C, H, W]
            ref.forward(x, y, RunContext{});
            if (relu)
                for (float& v : y.values()) v = std::max(v, 0.0f);
            fakeQuantizeActivation(y, out->quant);
            const std::int32_t lo = relu ? std::max(out->quant.qmin, out->quant.zeroPoint) : out->quant.qmin;
            for (std::size_t co = 0; co < cout; ++co) {
                const std::size_t grp = co / cog;
                const double sw = wt.scales.size() == 1 ? wt.scales[0] : wt.scales[co];
                const double m = static_cast<double>(in->quant.scale) * sw / static_cast<double>(out->quant.scale);
                for (std::size_t oy = 0; oy < Ho; ++oy)
                    for (std::size_t ox = 0; ox < Wo; ++ox) {
                        std::int64_t acc = bt.q[co];
                        for (std::size_t ci = 0; ci < cig; ++ci)
                            for (std::size_t ky = 0; ky < g.kh; ++ky)
                                for (std::size_t kx = 0; kx < g.kw; ++kx) {
                                    const long iy = static_cast<long>(oy * g.sh + ky * g.dh) - static_cast<long>(g.padTop);
                                    const long ix = static_cast<long>(ox * g.sw + kx * g.dw) - static_cast<long>(g.padLeft);
                                    if (iy < 0 || ix < 0 || iy >= static_cast<long>(H) || ix >= static_cast<long>(W)) continue;
                                    const std::size_t c = grp * cig + ci;
                                    const std::int32_t qx = in->q[(c * H + static_cast<std::size_t>(iy)) * W + static_cast<std::size_t>(ix)];
                                    acc += static_cast<std::int64_t>(qx - in->quant.zeroPoint) * wt.q[((co * cig + ci) * g.kh + ky) * g.kw + kx];
                                }
                        const double v = static_cast<double>(acc) * m;
                        const bool tie = std::fabs(v - std::floor(v) - 0.5) < kTieMargin;
                        const auto exact = std::clamp(static_cast<std::int32_t>(std::nearbyint(v)) + out->quant.zeroPoint, lo, out->quant.qmax);
                        const std::size_t i = (co * Ho + oy) * Wo + ox;
                        const std::int32_t got = out->q[i];
                        nearTies += tie;
                        exactDiffer += got != exact && !tie;
                    }
            }
            diff.add(engine_agreement::compareCodes(y, *out));
            ++convs;
        }
    }
    qInfo("%s: %zu convolutions x 20 images, %zu values: %zu differ from the exact integer arithmetic (%zu within %.0e of a "
          "half step), %zu from the fake-quant (at most %d step); up to %zu distinct codes in a point",
          qPrintable(act), convs / 20, diff.values, exactDiffer, nearTies, kTieMargin, diff.differing, diff.worstSteps, diff.distinct);
    QCOMPARE(convs, std::size_t{7 * 20});
    QCOMPARE(exactDiffer, std::size_t{0});
    const QString what = "convgeom " + act;
    QS_CHECK(layer_checks::codesWithin(what, diff, kPointBounds));

    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, em, m_data.test, kMinEngineAgreement, run));
    // .qsm and QDQ ONNX keep the windows; the model read back predicts as the engine does.
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, em, {"every window", sameWindows, sameWindows, true}, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    const std::string path = m_dir + "/qdq-convgeom-" + act.toStdString() + ".onnx";
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, path, m_images, run, kMinQdqAgreement, kQdqMeanRelDiff));
}

// Windows a precision plan keeps FP32 (the engine's float convolution between integer layers):
// at their points the engine's integers are the fake-quant simulation's (the float convolution on
// the dequantized input, then the point's fake-quant) but for values a float rounding from a half
// step, and the predictions are the fake-quant reference's.
void TestConvGeometry::floatWindowsInAPlan()
{
    std::unique_ptr<Model> model = geometryModel();
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.activationCalibration = "minmax";
    for (const char* name : {"k1x7", "dil2", "dwdil"}) { // each between integer layers
        LayerOverride o;
        o.layer = name;
        o.format = "fp32";
        pc.layers.push_back(o);
    }
    QuantSim sim(*model, pc, findFormat(pc.format));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(m_data, m_data.train, m_data.train.size(), 64);
    sim.setObserving(false);
    const ExportedModel em = exportQuantizedModel(*model, sim, "convgeom", m_data, "ptq", "channel");
    std::size_t floats = 0;
    for (const StoredLayer& l : em.layers)
        if (l.kind == LayerKind::Conv2d && l.tensors[0].encoding == TensorEncoding::Float32) {
            QVERIFY2(l.window.has_value(), l.name.c_str());
            ++floats;
        }
    QCOMPARE(floats, std::size_t{3});
    QVERIFY2(IntEngine::unsupportedReason(em).empty(), IntEngine::unsupportedReason(em).c_str());
    const IntEngine engine(em);
    engine_agreement::CodeDiff diff;
    for (std::size_t img = 0; img < 20; ++img) {
        const std::vector<PointTrace> trace = engine.trace(m_data.test.pixels.data() + img * m_data.test.imageBytes());
        for (std::size_t li = 0; li < em.layers.size(); ++li) {
            const StoredLayer& l = em.layers[li];
            if (l.kind != LayerKind::Conv2d || l.tensors[0].encoding != TensorEncoding::Float32) continue;
            const long next = em.soleConsumer(li);
            const bool relu = !l.outputQuant;
            QVERIFY(!relu || (next >= 0 && em.layers[static_cast<std::size_t>(next)].kind == LayerKind::ReLU));
            const PointTrace* out = traceNamed(trace, relu ? em.layers[static_cast<std::size_t>(next)].name : l.name);
            const std::size_t a = l.inputs[0];
            const PointTrace* in = traceNamed(trace, pointName(em, a));
            if (in == nullptr && a > 0) in = traceNamed(trace, em.layers[static_cast<std::size_t>(em.soleConsumer(a - 1))].name);
            QVERIFY2(out && in, l.name.c_str());
            const ConvGeometry g = l.convGeometry();
            const std::size_t C = in->shape[0];
            Conv2d ref("ref", C, l.outChannels, g, l.groups, true);
            ref.weight().value.values() = l.tensors[0].values;
            ref.bias().value.values() = l.tensors.size() > 1 ? l.tensors[1].dequantized() : std::vector<float>(l.outChannels, 0.0f);
            Tensor x = engine_agreement::dequantized(*in), y; // [1, C, H, W]
            ref.forward(x, y, RunContext{});
            if (relu)
                for (float& v : y.values()) v = std::max(v, 0.0f);
            fakeQuantizeActivation(y, out->quant);
            QCOMPARE(y.numel(), out->q.size());
            diff.add(engine_agreement::compareCodes(y, *out));
        }
    }
    QS_CHECK(layer_checks::codesWithin("FP32 windows in a plan", diff, kFloatPointBounds));
    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees("FP32 windows in a plan", em, m_data.test, kMinEngineAgreement, run));
}

// A model of square convolutions writes no window (the file is what it was before windows were
// stored), and one with a window takes 28 more bytes for it.
void TestConvGeometry::squareConvolutionsKeepTheirFiles()
{
    auto square = std::make_unique<Model>("sq", Shape{1, 8, 8});
    square->add(std::make_unique<Conv2d>("conv", 1, 2, 3, 1, 1));
    square->add(std::make_unique<Flatten>("flatten"));
    square->add(std::make_unique<Linear>("fc", 2 * 8 * 8, 3));
    square->initParams(1);
    const ExportedModel a = exportFloatModel(*square, "sq", Normalization::identity(1), {});
    QVERIFY(!a.layers[0].window.has_value());
    ExportedModel b = a;
    b.layers[0].setConvGeometry(geom(3, 3, 1, 1, 1, 1, 1, 1, 1, 1)); // square: stays compact
    QVERIFY(!b.layers[0].window.has_value());
    QVERIFY(encodeQsm(a) == encodeQsm(b));
    b.layers[0].setConvGeometry(geom(3, 3, 1, 1, 1, 1, 1, 2, 1, 1)); // one more pad on the right: 8x9
    b.layers[2].inFeatures = 2 * 8 * 9;
    b.layers[2].tensors[0].shape = {3, 2 * 8 * 9};
    b.layers[2].tensors[0].values.resize(3 * 2 * 8 * 9, 0.0f);
    QCOMPARE(encodeQsm(b).size(), encodeQsm(a).size() + 28 + 3 * 16 * 4); // the window; fc's 16 more inputs
    QVERIFY(decodeQsm(encodeQsm(b), "b").layers[0].window == b.layers[0].window);
}

// A window larger than its padded input leaves no output: a ConfigError naming the layer, the
// window and the shapes, when the model is built; in a file, a FormatError.
void TestConvGeometry::emptyOutputsAreConfigErrors()
{
    try {
        Model m("empty", {3, 8, 8});
        m.add(std::make_unique<Conv2d>("conv1", 3, 4, 3, 2, 1)); // 4x4
        m.add(std::make_unique<Conv2d>("atrous", 4, 4, geom(3, 3, 1, 1, 0, 0, 0, 0, 3, 1))); // spans 7 rows of 4
        m.outputShape(2);
        QFAIL("the shapes were taken");
    } catch (const ConfigError& e) {
        const QString msg = e.what();
        QVERIFY2(msg.contains("atrous") && msg.contains("[2,4,4,4]") && msg.contains("k 3x3 s 1 p 0,0,0,0 d 3x1") &&
                     msg.contains("7x3 against 4x4") && msg.contains("empty"),
                 e.what());
    }
    // In a file: validate() refuses it, naming the file and the layer.
    Bytes b = storedWindowFile();
    patchWindow(b, {1, 1, 0, 3, 0, 1, 1}, 5, 9); // k7x1's dilation down 9: 55 rows of 28 + 6
    try {
        decodeQsm(b, "empty.qsm");
        QFAIL("a window larger than its input was read");
    } catch (const FormatError& e) {
        const QString msg = e.what();
        QVERIFY2(msg.startsWith("empty.qsm") && msg.contains("k7x1") && msg.contains("the output would be empty"), e.what());
    }
}

// Absurd sizes in files are typed errors naming the file and the problem, never a crash or a huge
// allocation: .qsm (validate) and ONNX (the importer's range checks), kernel and dilation alike.
void TestConvGeometry::absurdWindowsAreTypedErrors()
{
    Bytes b = storedWindowFile();
    patchWindow(b, {7, 1, 3, 0, 3, 1, 1}, 6, 1000000); // k1x7's dilation across
    try {
        decodeQsm(b, "huge.qsm");
        QFAIL("a dilation of a million was read");
    } catch (const FormatError& e) {
        const QString msg = e.what();
        QVERIFY2(msg.startsWith("huge.qsm") && msg.contains("k1x7") && msg.contains("out of range"), e.what());
    }
    b = storedWindowFile();
    patchWindow(b, {7, 1, 3, 0, 3, 1, 1}, 0, 0xFFFFFFFFu); // k1x7's kernel width
    try {
        decodeQsm(b, "wide.qsm");
        QFAIL("a kernel 4 billion wide was read");
    } catch (const FormatError& e) {
        QVERIFY2(QString(e.what()).startsWith("wide.qsm") && QString(e.what()).contains("out of range"), e.what());
    }
    struct Edit {
        const char* attr;
        std::vector<std::int64_t> v;
        const char* says;
    };
    for (const Edit& e : {Edit{"dilations", {1, 100000}, "dilations"}, Edit{"strides", {0, 1}, "strides"},
                          Edit{"pads", {0, 3, 0, 3000}, "pads"}, Edit{"dilations", {1, 2, 3}, "dilations"},
                          Edit{"kernel_shape", {1, 8}, "kernel_shape"}}) {
        onnx::ModelProto mp;
        const std::vector<std::uint8_t> bytes = fileBytes(kFixtures / "convgeom_op11_nofold.onnx");
        QVERIFY(mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
        std::string node;
        for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node()) {
            if (n.op_type() != "Conv") continue;
            for (onnx::AttributeProto& a : *n.mutable_attribute())
                if (a.name() == "kernel_shape" && a.ints(0) == 1 && a.ints(1) == 7) node = n.name();
            if (node != n.name()) continue;
            for (onnx::AttributeProto& a : *n.mutable_attribute())
                if (a.name() == e.attr) {
                    a.clear_ints();
                    for (std::int64_t x : e.v) a.add_ints(x);
                }
            break;
        }
        QVERIFY(!node.empty());
        std::string out;
        mp.SerializeToString(&out);
        try {
            importOnnx(std::vector<std::uint8_t>(out.begin(), out.end()), "edited.onnx");
            QFAIL(qPrintable(QString("%1 was read").arg(e.attr)));
        } catch (const Error& err) {
            const QString msg = err.what();
            QVERIFY2(msg.startsWith("edited.onnx") && msg.contains(QString::fromStdString(node)) && msg.contains(e.says), err.what());
        }
    }
}

// auto_pad SAME_UPPER and SAME_LOWER (other exporters write them instead of pads): the output is
// ceil(in / stride), the odd pad at the end or at the start; the model computes what explicit
// pads give.
void TestConvGeometry::autoPadSameIsRead()
{
    const std::vector<std::uint8_t> bytes = fileBytes(kFixtures / "convgeom_op11_nofold.onnx");
    const ExportedModel plain = importOnnx(bytes, "plain.onnx");
    const Reference ref = loadReference(kFixtures / "convgeom_op11_nofold.json");
    for (const char* mode : {"SAME_UPPER", "SAME_LOWER"}) {
        onnx::ModelProto mp;
        QVERIFY(mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
        // The dilated 3x3 (pads 2 on every side): auto_pad gives the same pads at stride 1.
        bool edited = false;
        for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node()) {
            if (n.op_type() != "Conv") continue;
            bool dilated = false;
            for (const onnx::AttributeProto& a : n.attribute())
                if (a.name() == "dilations" && a.ints(0) == 2 && a.ints(1) == 2) dilated = true;
            bool strided = false;
            for (const onnx::AttributeProto& a : n.attribute())
                if (a.name() == "strides" && a.ints(0) != 1) strided = true;
            if (!dilated || strided) continue;
            auto* attrs = n.mutable_attribute();
            for (int i = attrs->size() - 1; i >= 0; --i)
                if (attrs->Get(i).name() == "pads") attrs->DeleteSubrange(i, 1);
            onnx::AttributeProto* a = n.add_attribute();
            a->set_name("auto_pad");
            a->set_type(onnx::AttributeProto::STRING);
            a->set_s(mode);
            edited = true;
        }
        QVERIFY(edited);
        std::string out;
        mp.SerializeToString(&out);
        const ExportedModel m = importOnnx(std::vector<std::uint8_t>(out.begin(), out.end()), "auto.onnx");
        QVERIFY(windowsOf(m) == windowsOf(plain));
        QCOMPARE(forwardOn(m, ref), forwardOn(plain, ref));
    }
    // An even kernel: SAME_UPPER puts the odd pad at the bottom and right (padding='same' in
    // PyTorch: with the F.pad before same4 bypassed, the model is PyTorch's again), SAME_LOWER at
    // the top and left.
    for (const char* mode : {"SAME_UPPER", "SAME_LOWER"}) {
        onnx::ModelProto mp;
        QVERIFY(mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
        onnx::NodeProto* conv4 = nullptr;
        for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
            for (const onnx::AttributeProto& a : n.attribute())
                if (n.op_type() == "Conv" && a.name() == "kernel_shape" && a.ints(0) == 4) conv4 = &n;
        QVERIFY(conv4);
        for (const onnx::NodeProto& n : mp.graph().node())
            if (n.op_type() == "Pad" && n.output(0) == conv4->input(0)) conv4->set_input(0, n.input(0));
        auto* attrs = conv4->mutable_attribute();
        for (int i = attrs->size() - 1; i >= 0; --i)
            if (attrs->Get(i).name() == "pads") attrs->DeleteSubrange(i, 1);
        onnx::AttributeProto* a = conv4->add_attribute();
        a->set_name("auto_pad");
        a->set_type(onnx::AttributeProto::STRING);
        a->set_s(mode);
        std::string out;
        mp.SerializeToString(&out);
        const ExportedModel m = importOnnx(std::vector<std::uint8_t>(out.begin(), out.end()), "auto4.onnx");
        const ConvGeometry g = windowsOf(m).at(5);
        const bool upper = std::string(mode) == "SAME_UPPER";
        QCOMPARE(g, upper ? geom(4, 4, 1, 1, 1, 1, 2, 2, 1, 1) : geom(4, 4, 1, 1, 2, 2, 1, 1, 1, 1));
        if (upper) QCOMPARE(forwardOn(m, ref), forwardOn(plain, ref));
    }
}

// The summary's Details column shows a window that is not square in full.
void TestConvGeometry::summaryShowsTheWindow()
{
    std::unique_ptr<Model> m = geometryModel();
    const ModelSummary s = summarizeModel(*m);
    std::map<std::string, std::string> detail;
    for (const LayerSummary& l : s.layers) detail[l.name] = l.detail;
    QCOMPARE(detail["stem"], std::string("1->8 3x3 s1 p1"));
    QCOMPARE(detail["k1x7"], std::string("8->8 k 1x7 s 1 p 0,3,0,3 d 1"));
    QCOMPARE(detail["s2x1"], std::string("8->8 k 3x3 s 2x1 p 1,1,1,1 d 1"));
    QCOMPARE(detail["gdil"], std::string("8->8 k 3x3 s 1 p 2,1,2,1 d 2x1 g2"));
    QCOMPARE(detail["dwdil"], std::string("8->8 k 3x3 s 2 p 2,2,2,2 d 2 depthwise"));
    for (const LayerSummary& l : s.layers)
        if (l.name == "k1x7") QCOMPARE(l.macs, std::uint64_t{8 * 28 * 28 * 8 * 7});
}

QTEST_GUILESS_MAIN(TestConvGeometry)
#include "tst_conv_geometry.moc"
