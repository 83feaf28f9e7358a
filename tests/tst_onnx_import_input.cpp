// FP32 ONNX import of what a graph does with its input, and of QuantScope's own exports: the
// input normalisation inside the graph (Sub and Div or a Mul by 1 / stddev, in either order, one
// value or one per channel, buffers through constant arithmetic), 0..255 pixels (float32, or uint8
// cast to float32 by the graph), flat [N, C*H*W]
// inputs read as flattened images, x.view(...) on the input; QuantScope's own FP32 export read
// back with its normalisation, and the metadata that sends a file to the reader of QuantScope's
// own files or to the importer. The other PyTorch exports and their operators: tst_onnx_import;
// broken files: tst_onnx_import_errors, tst_onnx_file_errors.
#include "io/exported_model.h"
#include "io/onnx_import.h"
#include "io/model_source.h"
#include "io/onnx_io.h"
#include "data/normalization.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <algorithm>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

using namespace quantscope;
namespace fs = std::filesystem;
using namespace onnx_import_fixtures;

namespace {

// m's outputs against PyTorch's for the fixture `name`, once `adapt` has turned the fixture's
// inputs into what the data pipeline gives the model (its shape, its normalisation).
void checkAgainstPyTorch(const ExportedModel& m, const std::string& name, const std::function<void(Reference&)>& adapt)
{
    Reference ref = loadReference(kFixtures / (name + ".json"));
    adapt(ref);
    const double dev = maxDeviation(m, ref);
    QVERIFY2(dev <= kOutputTol, qPrintable(QString("%1: deviation %2").arg(QString::fromStdString(name)).arg(dev)));
}

// The fixture's 3-channel inputs as the data pipeline gives them to m: [0, 1] pixels (the
// fixture's, or its 0..255 ones / 255 with pixels255) normalised per channel as m stores it.
void normaliseAsStored(Reference& ref, const ExportedModel& m, bool pixels255)
{
    const std::size_t plane = ref.inputShape[2] * ref.inputShape[3];
    for (std::size_t k = 0; k < ref.input.size(); ++k) {
        const std::size_t c = (k / plane) % 3;
        const float pixel = pixels255 ? ref.input[k] / 255.0f : ref.input[k];
        ref.input[k] = (pixel - m.normalization.mean[c]) / m.normalization.stddev[c];
    }
}

// The imported model computes what `original` computes, on two 1x28x28 images.
void checkSameForward(Model& original, const ExportedModel& imported, const char* what)
{
    std::unique_ptr<Model> model = buildModel(imported);
    Tensor x({2, 1, 28, 28});
    for (std::size_t i = 0; i < x.numel(); ++i) x[i] = std::sin(0.37f * float(i));
    RunContext ctx;
    const Tensor a = original.forward(x, ctx);
    const Tensor b = model->forward(x, ctx);
    QCOMPARE(a.shape(), b.shape());
    for (std::size_t i = 0; i < a.numel(); ++i) QVERIFY2(std::fabs(a[i] - b[i]) <= kOutputTol, what);
}

} // namespace

class TestOnnxImportInput : public QObject {
    Q_OBJECT

private slots:
    void readsQuantScopeExport();
    void flatInputReadsFlattenedImages();
    void grayscaleInputWithoutChannelAxis();
    void channelsLastInputPermutedFirst();
    void channelsLastFlattenIntoLinear();
    void readsUsersInputConventions();
    void uint8PixelsCastToFloat();
    void metadataDoesNotMisroute();
    void givenNormalisationBeforeTheGraphs();
    void inputWithoutShapeTakesItsReadersCount();
};

void TestOnnxImportInput::readsQuantScopeExport()
{
    for (const char* preset : {"resnet8", "mobilenet-tiny", "seed-cnn-bn"}) {
        std::unique_ptr<Model> original = makeModel(preset, 1, 28, 28, 10, 7);
        const ExportedModel e = exportFloatModel(*original, preset, Normalization::uniform(0.25f, 0.5f, 1), {});
        const ExportedModel back = importOnnx(encodeOnnx(e), std::string(preset) + ".onnx");
        QCOMPARE(back.normalization, Normalization::uniform(0.25f, 0.5f, 1));
        QVERIFY(back.normalizationKnown);
        checkSameForward(*original, back, preset);
    }
    // Colour input with per-channel normalisation (Sub/Div constants [1, 3, 1, 1]).
    std::unique_ptr<Model> colour = makeModel("resnet8", 3, 16, 16, 10, 5);
    Normalization norm;
    norm.mean = {0.49f, 0.48f, 0.45f};
    norm.stddev = {0.25f, 0.24f, 0.26f};
    const ExportedModel back = importOnnx(encodeOnnx(exportFloatModel(*colour, "resnet8", norm, {})), "colour.onnx");
    QCOMPARE(back.channels, std::size_t{3});
    QCOMPARE(back.normalization, norm);
    // The same normalisation written as a Mul by 1 / stddev, the factor first: (1 / s) * (x - m)
    const std::vector<std::uint8_t> bytes = encodeOnnx(exportFloatModel(*colour, "resnet8", norm, {}));
    onnx::ModelProto mp;
    QVERIFY(mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
    onnx::NodeProto* div = findNode(mp, "Div");
    QVERIFY(div);
    const std::string centered = div->input(0), stddev = div->input(1);
    div->set_op_type("Mul");
    div->set_input(0, stddev);
    div->set_input(1, centered);
    bool inverted = false;
    for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
        if (t.name() == stddev) {
            std::vector<float> v(t.raw_data().size() / 4);
            std::memcpy(v.data(), t.raw_data().data(), v.size() * 4);
            for (float& f : v) f = 1.0f / f;
            t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
            inverted = true;
        }
    QVERIFY(inverted);
    const ExportedModel mul = importOnnx(serialize(mp), "colour_mul.onnx");
    QCOMPARE(mul.normalization.mean, norm.mean);
    QCOMPARE(mul.normalization.stddev.size(), norm.stddev.size());
    for (std::size_t c = 0; c < norm.stddev.size(); ++c)
        QVERIFY2(std::fabs(mul.normalization.stddev[c] - norm.stddev[c]) <= 1e-6f * norm.stddev[c], qPrintable(QString::number(c)));
}

namespace {

// A fixture read with the image shape `chw` and a note containing `note` (how its input was read).
ExportedModel importReadAs(const char* name, const Shape& chw, const std::string& note)
{
    const fs::path p = kFixtures / (std::string(name) + ".onnx");
    ExportedModel m = importOnnx(fileBytes(p), p.string());
    if (Shape({m.channels, m.height, m.width}) != chw)
        QTest::qFail(qPrintable(QString("%1 read as %2").arg(name, QString::fromStdString(shapeString({m.channels, m.height, m.width})))), __FILE__, __LINE__);
    if (std::none_of(m.notes.begin(), m.notes.end(), [&](const std::string& n) { return n.find(note) != std::string::npos; }))
        QTest::qFail(qPrintable(QString("%1: no note '%2'").arg(name, QString::fromStdString(note))), __FILE__, __LINE__);
    return m;
}

} // namespace

// Grayscale images exported as [N, H, W] (an MNIST model whose forward starts with x.unsqueeze(1),
// x.view(-1, 1, H, W) or x.view(N, -1)): read as 1xHxW images, said in a note, with PyTorch's
// outputs. They were refused ("input 'input' has rank 3").
void TestOnnxImportInput::grayscaleInputWithoutChannelAxis()
{
    for (const char* name : {"grayunsqueeze_op13_fold_dyn", "grayunsqueeze_op11_nofold", "grayflat_op17_fold", "grayview_op13_nofold_dyn"}) {
        const ExportedModel m = importReadAs(name, {1, 8, 8}, "[N, 8, 8] is read as 1x8x8 grayscale images");
        if (QTest::currentTestFailed()) return;
        checkAgainstPyTorch(m, name, [](Reference& ref) {
            QCOMPARE(ref.inputShape, Shape({3, 8, 8}));
            ref.inputShape = {3, 1, 8, 8}; // the images the data pipeline gives
        });
    }
}

// Channels-last colour images [N, H, W, 3] that the graph permutes to [N, C, H, W] first
// (x.permute(0, 3, 1, 2)): read as the 3xHxW images after the Transpose, with a note, and PyTorch's
// outputs on the same images laid out channels-first. Three channels, so that a wrong axis shows.
void TestOnnxImportInput::channelsLastInputPermutedFirst()
{
    for (const char* name : {"channelslast_op13_fold_dyn", "channelslast_op11_nofold"}) {
        const ExportedModel m = importReadAs(name, {3, 8, 8}, "[N, 8, 8, 3] is channels-last");
        if (QTest::currentTestFailed()) return;
        checkAgainstPyTorch(m, name, [](Reference& ref) {
            QCOMPARE(ref.inputShape, Shape({3, 8, 8, 3}));
            const std::vector<float> hwc = ref.input; // to [N, C, H, W], the data pipeline's layout
            for (std::size_t i = 0; i < 3; ++i)
                for (std::size_t c = 0; c < 3; ++c)
                    for (std::size_t y = 0; y < 8; ++y)
                        for (std::size_t x = 0; x < 8; ++x) ref.input[((i * 3 + c) * 8 + y) * 8 + x] = hwc[((i * 8 + y) * 8 + x) * 3 + c];
            ref.inputShape = {3, 3, 8, 8};
        });
    }
}

// A model ported from Keras permutes its maps to channels-last before the flatten into the
// Linear (x.permute(0, 2, 3, 1), then .flatten(1) or .reshape(N, -1), a ReLU or a SiLU (a
// subgraph) between them, or a round trip there and back around a sigmoid first): read with the maps kept channels-first and
// the Linear's weight columns reordered, said in a note, with PyTorch's outputs (5 x 4 x 3 maps:
// a wrong column order shows). These were refused ("QuantScope reads Transpose only inside a
// channel shuffle").
void TestOnnxImportInput::channelsLastFlattenIntoLinear()
{
    for (const char* name : {"kerasflatten_op13_fold_dyn", "kerasflatten_reshape_op11_nofold", "kerasflatten_reshape_op17_fold_dyn",
                             "kerasflatten_roundtrip_op13_nofold", "kerasflatten_silu_op11_nofold"}) {
        const ExportedModel m = importReadAs(name, {3, 8, 6}, "maps that forward permuted to channels-last");
        if (QTest::currentTestFailed()) return;
        QCOMPARE(std::count_if(m.layers.begin(), m.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::Linear; }), 1);
        checkAgainstPyTorch(m, name, [](Reference&) {});
    }
}

// An MLP exported on flat images [N, 64], normalising inside the graph: read as 1 x 8 x 8 images
// with a Flatten in front, the normalisation kept, the outputs PyTorch's.
void TestOnnxImportInput::flatInputReadsFlattenedImages()
{
    for (const char* name : {"flatmlp_op13_fold_dyn", "flatmlp_op11_nofold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        OnnxImportInfo info;
        const ExportedModel m = importOnnx(fileBytes(p), p.string(), &info);
        QVERIFY(info.flatInput);
        QCOMPARE(Shape({m.channels, m.height, m.width}), Shape({1, 8, 8}));
        QCOMPARE(m.layers.front().kind, LayerKind::Flatten);
        QCOMPARE(m.layers.front().name, std::string("input_flatten"));
        QCOMPARE(m.notes.size(), std::size_t{1}); // info, train and eval print how the input was read
        QVERIFY2(m.notes[0].find("[N, 64] is read as 1x8x8 images") != std::string::npos, m.notes[0].c_str());
        QCOMPARE(m.normalization, Normalization::uniform(0.5f, 0.25f, 1));
        checkAgainstPyTorch(m, name, [](Reference& ref) {
            QCOMPARE(ref.inputShape, Shape({3, 64}));
            ref.inputShape = {3, 1, 8, 8}; // the images the data pipeline gives, normalised as it would
            for (auto& v : ref.input) v = (v - 0.5) / 0.25;
        });
    }
    // Image input flattened by the model (x.flatten(1), x.view(-1, 64)) and then normalised by one
    // mean and one stddev, ending in softmax: the normalisation is read (it commutes with the
    // flattening), the Softmax kept, PyTorch's probabilities.
    for (const char* name : {"imgmlp_op13_fold_dyn", "imgmlpview_op11_nofold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        OnnxImportInfo info;
        const ExportedModel m = importOnnx(fileBytes(p), p.string(), &info);
        QVERIFY(!info.flatInput);
        QCOMPARE(m.layers.front().kind, LayerKind::Flatten);
        QCOMPARE(m.layers.back().kind, LayerKind::Softmax);
        QVERIFY(m.normalizationKnown);
        QCOMPARE(m.normalization, Normalization::uniform(0.3f, 0.35f, 1));
        checkAgainstPyTorch(m, name, [](Reference& ref) {
            for (auto& v : ref.input) v = (v - 0.3) / 0.35; // the data pipeline normalises
        });
    }
    // BatchNorm1d after a Linear (the second one bias-free): folded into it, PyTorch's outputs.
    for (const char* name : {"flatmlpbn_op13_fold_dyn", "flatmlpbn_op11_nofold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        OnnxImportInfo info;
        const ExportedModel m = importOnnx(fileBytes(p), p.string(), &info);
        QCOMPARE(m.layers.size(), std::size_t{6}); // input_flatten, fc1, relu, fc2, relu, fc3: no BatchNorm
        for (const StoredLayer& l : m.layers) QVERIFY(l.kind != LayerKind::BatchNorm2d);
        QCOMPARE(m.notes.size(), std::size_t{3}); // the flat input, two folds
        QVERIFY2(m.notes[2].find("folded into it") != std::string::npos, m.notes[2].c_str());
        Reference ref = loadReference(kFixtures / (std::string(name) + ".json"));
        ref.inputShape = {3, 1, 8, 8};
        const double dev = maxDeviation(m, ref);
        QVERIFY2(dev <= kOutputTol, qPrintable(QString("%1: deviation %2").arg(name).arg(dev)));
    }
    // The same normalisation written the other way round, x / 0.25 - 2 (Div first, then Sub, as
    // PyTorch exports x / s - m / s): mean 2 x 0.25, and the same outputs.
    {
        onnx::ModelProto mp = parse(kFixtures / "flatmlp_op13_fold_dyn.onnx");
        onnx::NodeProto* sub = findNode(mp, "Sub");
        onnx::NodeProto* div = findNode(mp, "Div");
        const std::string input = sub->input(0), subOut = sub->output(0), divOut = div->output(0);
        for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
            for (int i = 0; i < n.input_size(); ++i)
                if (n.input(i) == divOut) n.set_input(i, subOut); // the Gemm reads the Sub now
        div->set_input(0, input);
        sub->set_input(0, divOut);
        onnx::TensorProto* two = mp.mutable_graph()->add_initializer();
        two->set_name("two");
        two->set_data_type(onnx::TensorProto::FLOAT);
        two->add_float_data(2.0f);
        sub->set_input(1, "two");
        // Div before Sub in the file, as the data flows
        std::swap(*sub, *div);
        const ExportedModel m = importOnnx(serialize(mp), "div_sub.onnx");
        QCOMPARE(m.normalization, Normalization::uniform(0.5f, 0.25f, 1));
    }
    // Colour: 3072 = 3 x 32 x 32 (never also 1 x k x k).
    onnx::ModelProto mp = parse(kFixtures / "flatmlp_op13_fold_dyn.onnx");
    mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(3072);
    try {
        importOnnx(serialize(mp), "colour_mlp.onnx");
        QFAIL("a Linear of 64 inputs read 3072 features");
    } catch (const FormatError& e) {
        QVERIFY2(QString(e.what()).contains("it takes 64 features, and its input has 3072"), e.what()); // read as 3 x 32 x 32, flattened
    }
}

// What users write in front of their models: x / 255 (or * (1/255)) then a normalisation,
// which takes 0..255 pixels (read on QuantScope's [0, 1] scale, with a note; it gave chance
// accuracy), and x.view(-1, 1, H, W) on images (a no-op) or on a flat input (un-flattening).
void TestOnnxImportInput::readsUsersInputConventions()
{
    // F.pad on the raw pixels, then the model's own (x - 0.1307) / 0.3081 (LeNet's 28 -> 32): the
    // normalisation cannot move before the Pad (the border would be 0, not -0.1307 / 0.3081), so it
    // stays in the graph as depthwise Convs and the graph takes [0, 1] pixels as they are, not the
    // dataset's statistics; PyTorch's outputs on those pixels.
    for (const char* name : {"padnorm_op13_fold_dyn", "padnorm_op11_nofold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationKnown, name);
        QCOMPARE(m.normalization, Normalization::identity(1));
        QCOMPARE(m.layers.at(0).kind, LayerKind::Pad);
        QVERIFY(std::any_of(m.notes.begin(), m.notes.end(), [](const std::string& s) { return s.find("normalises its input itself") != std::string::npos; }));
        checkAgainstPyTorch(m, name, [](Reference&) {});
    }
    // The input read raw as well as normalised (two normalisations side by side and a raw branch,
    // joined by Concat), and x.clamp(0, 1) before the normalisation: the normalisations stay in the
    // graph as depthwise Convs, the graph takes [0, 1] pixels as they are (moved out, the raw
    // branch read normalised pixels: 69.8 to 96.4 % agreement with PyTorch, silently; tester 73).
    for (const char* name : {"sharednorm_op13_fold_dyn", "sharednorm_op11_nofold", "clampnorm_op13_fold", "clampnorm_op11_nofold_dyn"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationKnown, name);
        QCOMPARE(m.normalization, Normalization::identity(m.channels));
        QVERIFY2(std::any_of(m.notes.begin(), m.notes.end(), [](const std::string& s) { return s.find("normalises its input itself") != std::string::npos; }), name);
        checkAgainstPyTorch(m, name, [](Reference&) {});
    }
    for (const char* name : {"pixels255_op13_fold_dyn", "pixels255mul_op11_nofold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY(m.normalizationKnown);
        QVERIFY2(std::fabs(m.normalization.mean[0] - 0.1307f) < 1e-5f && std::fabs(m.normalization.stddev[0] - 0.3081f) < 1e-5f,
                 qPrintable(QString("%1: mean %2 stddev %3").arg(name).arg(m.normalization.mean[0]).arg(m.normalization.stddev[0])));
        QCOMPARE(m.notes.size(), std::size_t{1});
        QVERIFY2(m.notes[0].find("0..255 pixels") != std::string::npos, m.notes[0].c_str());
        checkAgainstPyTorch(m, name, [&](Reference& ref) {
            for (float& v : ref.input) // the pipeline's [0, 1] pixel, normalised as the model says
                v = (v / 255.0f - m.normalization.mean[0]) / m.normalization.stddev[0];
        });
    }
    // Caffe's x - mean on 0..255 pixels (no division), and (x - m) * (1 / s) with per-channel
    // tensors (a Reciprocal of a constant): per-channel normalisations, read on [0, 1] pixels.
    const float caffeMean[] = {103.94f, 116.78f, 123.68f}, torchMean[] = {0.485f, 0.456f, 0.406f}, torchStd[] = {0.229f, 0.224f, 0.225f};
    for (const bool caffe : {true, false}) {
        const std::string name = caffe ? "caffemean_op13_fold" : "reciprocal_op11_nofold";
        const fs::path p = kFixtures / (name + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY(m.normalizationKnown);
        QCOMPARE(m.normalization.mean.size(), std::size_t{3});
        for (std::size_t c = 0; c < 3; ++c) {
            const float mean = caffe ? caffeMean[c] / 255.0f : torchMean[c], stddev = caffe ? 1.0f / 255.0f : torchStd[c];
            QVERIFY2(std::fabs(m.normalization.mean[c] - mean) < 1e-5f && std::fabs(m.normalization.stddev[c] - stddev) < 1e-6f,
                     qPrintable(QString("%1 channel %2: mean %3 stddev %4").arg(name.c_str()).arg(c).arg(m.normalization.mean[c]).arg(m.normalization.stddev[c])));
        }
        QCOMPARE(m.notes.size(), std::size_t{caffe ? 1u : 0u});
        if (caffe) QVERIFY2(m.notes[0].find("0..255 pixels") != std::string::npos, m.notes[0].c_str());
        checkAgainstPyTorch(m, name, [&](Reference& ref) { normaliseAsStored(ref, m, caffe); });
    }
    // RGB swapped to BGR (x[:, [2, 1, 0]], or torch.flip(x, [1])) and then normalised with BGR statistics (tester 15: the
    // normalisation was folded into the swap's 1x1 Conv, the dataset's statistics put in front, and
    // 68-79 % of PyTorch's predictions kept): the input's normalisation, in the input's order, and
    // the swap stays a one-hot 1x1 Conv. On [0, 1] pixels, and Caffe's on 0..255 pixels.
    for (const char* name : {"bgrnorm_op13_fold_dyn", "bgrnorm_op11_nofold", "bgrcaffe_op13_fold", "bgrflip_op13_fold_dyn"}) {
        const bool caffe = std::string(name).rfind("bgrcaffe", 0) == 0;
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationKnown, name);
        QCOMPARE(m.normalization.mean.size(), std::size_t{3});
        for (std::size_t c = 0; c < 3; ++c) {
            // Caffe's means are BGR: input channel c is the swap's channel 2 - c
            const float mean = caffe ? caffeMean[2 - c] / 255.0f : torchMean[c], stddev = caffe ? 64.0f / 255.0f : torchStd[c];
            QVERIFY2(std::fabs(m.normalization.mean[c] - mean) < 1e-5f && std::fabs(m.normalization.stddev[c] - stddev) < 1e-6f,
                     qPrintable(QString("%1 channel %2: mean %3 stddev %4").arg(name).arg(c).arg(m.normalization.mean[c]).arg(m.normalization.stddev[c])));
        }
        QCOMPARE(m.layers.at(0).kind, LayerKind::Conv2d); // the swap, read as a one-hot 1x1 Conv
        QVERIFY2(std::any_of(m.notes.begin(), m.notes.end(), [](const std::string& s) { return s.find("follows a permutation") != std::string::npos; }), name);
        checkAgainstPyTorch(m, name, [&](Reference& ref) { normaliseAsStored(ref, m, caffe); });
    }
    // Grayscale copied to three channels (repeat, expand, cat), then ImageNet's per-channel
    // statistics (tester 15: the dataset's statistics were put in front; 52 % agreement): the
    // normalisation stays in the graph, which takes [0, 1] pixels as they are.
    // And 1 - x or -x on the input (tester 15: refused): no (x - m) / s, so it stays in the graph
    // as a depthwise 1x1 Conv of weight -1.
    for (const char* name : {"grayrepeatnorm_op13_fold_dyn", "grayexpandnorm_op11_nofold", "graycatnorm_op17_fold",
                             "invert_op13_fold_dyn", "invert_op11_nofold", "neginput_op13_fold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationKnown, name);
        QCOMPARE(m.normalization, Normalization::identity(1));
        QVERIFY2(std::any_of(m.notes.begin(), m.notes.end(), [](const std::string& s) { return s.find("normalises its input itself") != std::string::npos; }), name);
        checkAgainstPyTorch(m, name, [](Reference&) {});
    }
    // Buffers through constant arithmetic the exporter kept (no constant folding): expand_as,
    // exp, clamp, pow and abs fold into the normalisation (tester 11: Expand/Exp/Pow/Abs refused).
    {
        const std::string name = "bufferops_op13_nofold_dyn";
        const fs::path p = kFixtures / (name + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY(m.normalizationKnown);
        QCOMPARE(m.normalization.mean.size(), std::size_t{3});
        for (std::size_t c = 0; c < 3; ++c)
            QVERIFY2(std::fabs(m.normalization.mean[c] - torchMean[c]) < 1e-6f && std::fabs(m.normalization.stddev[c] - torchStd[c]) < 1e-6f,
                     qPrintable(QString("channel %1: mean %2 stddev %3").arg(c).arg(m.normalization.mean[c]).arg(m.normalization.stddev[c])));
        checkAgainstPyTorch(m, name, [&](Reference& ref) { normaliseAsStored(ref, m, false); });
    }
    for (const char* name : {"viewinput_op13_fold_dyn", "viewflat_op11_nofold"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        OnnxImportInfo info;
        const ExportedModel m = importOnnx(fileBytes(p), p.string(), &info);
        QCOMPARE(Shape({m.channels, m.height, m.width}), Shape({1, 8, 8}));
        QVERIFY2(m.layers.front().kind == LayerKind::Conv2d, name); // no Flatten in front: the view undid it
        checkAgainstPyTorch(m, name, [](Reference& ref) { ref.inputShape = {ref.inputShape[0], 1, 8, 8}; });
    }
}

// A PyTorch export that carries QuantScope's class-name key is still a PyTorch export (it went to
// the reader of QuantScope's own files and failed); QuantScope's own FP32 export still reads back
// when a tool strips its node names (valid ONNX).
// A forward that starts with x.float() on uint8 pixels exports a uint8 input and a Cast: the bytes
// are QuantScope's [0, 1] pixels times 255, so the graph's normalisation is read on that scale
// (x / 255 then (x - 0.286) / 0.353; ImageNet's per-channel statistics on 3 channels; no
// normalisation at all: the raw 0..255 values, stddev 1/255), and the outputs are PyTorch's on the
// same bytes. They were refused ("element type uint8, not float32").
void TestOnnxImportInput::uint8PixelsCastToFloat()
{
    struct Case {
        const char* name;
        std::vector<float> mean, stddev;
    };
    // The bytes may be moved before the Cast as after it (tester 20: OpenCV's [N, H, W, 3] arrays
    // permuted to [N, 3, H, W] before x.float() were refused, and the float-first form the error
    // advised was refused in turn; so were x.unsqueeze(1).float() and x.view(...).float()).
    const Case cases[] = {{"bytes_div_op13_fold_dyn", {0.2860f}, {0.3530f}},
                          {"bytes_norm_op11_nofold", {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}},
                          {"bytes_raw_op17_fold", {0.0f}, {1.0f / 255.0f}},
                          {"bytesnhwc_op13_fold_dyn", {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}},
                          {"bytesnhwcfloat_op11_nofold", {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}},
                          {"bytesgrayunsq_op13_fold", {0.2860f}, {0.3530f}},
                          {"bytesgrayview_op11_nofold_dyn", {0.2860f}, {0.3530f}}};
    for (const Case& c : cases) {
        const fs::path p = kFixtures / (std::string(c.name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationKnown, c.name);
        QCOMPARE(m.normalization.mean.size(), c.mean.size());
        for (std::size_t ch = 0; ch < c.mean.size(); ++ch)
            QVERIFY2(std::fabs(m.normalization.mean[ch] - c.mean[ch]) < 1e-5f && std::fabs(m.normalization.stddev[ch] / c.stddev[ch] - 1.0f) < 1e-5f,
                     qPrintable(QString("%1 channel %2: mean %3 stddev %4").arg(c.name).arg(ch).arg(m.normalization.mean[ch]).arg(m.normalization.stddev[ch])));
        QVERIFY2(!m.notes.empty() && m.notes.back().find("uint8 pixels 'input'") != std::string::npos, c.name);
        checkAgainstPyTorch(m, c.name, [&](Reference& ref) {
            if (ref.inputShape.size() == 3) ref.inputShape = {ref.inputShape[0], 1, ref.inputShape[1], ref.inputShape[2]}; // [N, H, W] bytes
            if (ref.inputShape.size() == 4 && ref.inputShape[3] == 3) { // [N, H, W, 3] bytes: the images as the data gives them
                const std::size_t N = ref.inputShape[0], H = ref.inputShape[1], W = ref.inputShape[2];
                std::vector<float> planar(ref.input.size());
                for (std::size_t n = 0; n < N; ++n)
                    for (std::size_t y = 0; y < H; ++y)
                        for (std::size_t x = 0; x < W; ++x)
                            for (std::size_t ch = 0; ch < 3; ++ch)
                                planar[((n * 3 + ch) * H + y) * W + x] = ref.input[((n * H + y) * W + x) * 3 + ch];
                ref.input = std::move(planar);
                ref.inputShape = {N, 3, H, W};
            }
            const std::size_t plane = ref.inputShape[2] * ref.inputShape[3], C = ref.inputShape[1];
            for (std::size_t k = 0; k < ref.input.size(); ++k) { // the byte as the pipeline gives it, normalised as stored
                const std::size_t ch = (k / plane) % C;
                ref.input[k] = (ref.input[k] / 255.0f - m.normalization.mean[ch]) / m.normalization.stddev[ch];
            }
        });
    }
}

void TestOnnxImportInput::metadataDoesNotMisroute()
{
    const fs::path dir = fs::temp_directory_path() / ("qs_onnx_meta_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    onnx::ModelProto mp = parse(kFixtures / "seqview_op13_fold.onnx");
    auto* prop = mp.add_metadata_props();
    prop->set_key("quantscope.class_names");
    std::string names;
    for (int c = 0; c < 10; ++c) names += "class" + std::to_string(c) + "\n";
    prop->set_value(names);
    const std::vector<std::uint8_t> bytes = serialize(mp);
    const fs::path withNames = dir / "with_names.onnx";
    std::ofstream(withNames, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    const ExportedModel m = readOnnxModel(withNames.string());
    QCOMPARE(m.classNames.size(), std::size_t{10});
    QCOMPARE(m.classNames[3], std::string("class3"));
    QVERIFY(maxDeviation(m, loadReference(kFixtures / "seqview_op13_fold.json")) <= kOutputTol);

    std::unique_ptr<Model> original = makeModel("resnet8", 1, 28, 28, 10, 7);
    onnx::ModelProto own;
    const std::vector<std::uint8_t> ownBytes = encodeOnnx(exportFloatModel(*original, "resnet8", Normalization::uniform(0.25f, 0.5f, 1), {}));
    QVERIFY(own.ParseFromArray(ownBytes.data(), static_cast<int>(ownBytes.size())));
    for (onnx::NodeProto& n : *own.mutable_graph()->mutable_node()) n.clear_name();
    const std::vector<std::uint8_t> stripped = serialize(own);
    const fs::path strippedPath = dir / "stripped.onnx";
    std::ofstream(strippedPath, std::ios::binary).write(reinterpret_cast<const char*>(stripped.data()), static_cast<std::streamsize>(stripped.size()));
    checkSameForward(*original, readOnnxModel(strippedPath.string()), "names stripped");
    fs::remove_all(dir);
}

// A graph that normalises its input itself, trained on images normalised before it as well (a
// Normalize transform in the loader and (x - m) / s in forward(); tester 14: --normalize was
// refused for it, so the model could not be run as trained): the given normalisation is applied
// before the graph's. PyTorch's outputs on its graph inputs x, fed as the pixels p that the outside
// normalisation maps to x (p = x s_e + m_e), normalised the composed way. Files that store their
// own (QuantScope's, uint8 pixels, a 0..255 scale) still refuse another one.
void TestOnnxImportInput::givenNormalisationBeforeTheGraphs()
{
    using Kind = InputNormalization::Kind;
    const Normalization outside = Normalization::uniform(0.2f, 0.5f, 1);
    struct Case {
        const char* name;
        Normalization inGraph; // what the import reads: the graph's (x - m) / s, or none left when it stays in layers
    };
    for (const Case& c : {Case{"imgmlp_op13_fold_dyn", Normalization::uniform(0.3f, 0.35f, 1)},
                          Case{"imgmlpview_op11_nofold", Normalization::uniform(0.3f, 0.35f, 1)},
                          Case{"padnorm_op13_fold_dyn", Normalization::identity(1)}}) {
        const fs::path p = kFixtures / (std::string(c.name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationFromGraph, c.name);
        QCOMPARE(m.normalization, c.inGraph);
        const InputNormalization n = resolveInputNormalization(m, p.string(), outside, 1);
        QCOMPARE(n.kind, Kind::Composed);
        QVERIFY2(n.note.find("is applied before it") != std::string::npos, n.note.c_str());
        // mean m_e + s_e m, std s_e s
        QVERIFY(std::fabs(n.value.mean[0] - (0.2f + 0.5f * c.inGraph.mean[0])) < 1e-6f);
        QVERIFY(std::fabs(n.value.stddev[0] - 0.5f * c.inGraph.stddev[0]) < 1e-6f);
        ExportedModel run = m;
        run.normalization = n.value;
        checkAgainstPyTorch(run, c.name, [&](Reference& ref) {
            for (auto& v : ref.input) {
                const double pixel = v * 0.5 + 0.2; // what the loader's Normalize(0.2, 0.5) turned into v
                v = (pixel - n.value.mean[0]) / n.value.stddev[0];
            }
        });
        // Nothing given, or the graph's own again: the graph's alone.
        QCOMPARE(resolveInputNormalization(m, p.string(), std::nullopt, 1).kind, Kind::Stored);
        QCOMPARE(resolveInputNormalization(m, p.string(), c.inGraph, 1).kind, Kind::Stored);
    }
    // Graphs of uint8 or 0..255 pixels take no normalisation from outside; nor do QuantScope's
    // files (OnnxReader, .qsm: normalizationFromGraph false).
    for (const char* name : {"bytes_norm_op11_nofold", "pixels255_op13_fold_dyn"}) {
        const fs::path p = kFixtures / (std::string(name) + ".onnx");
        const ExportedModel m = importOnnx(fileBytes(p), p.string());
        QVERIFY2(m.normalizationKnown && !m.normalizationFromGraph, name);
        QCOMPARE(resolveInputNormalization(m, p.string(), outside, m.channels).kind, Kind::Conflict);
    }
    ExportedModel ours;
    ours.channels = 1;
    ours.normalization = Normalization::uniform(0.25f, 0.5f, 1);
    QCOMPARE(resolveInputNormalization(ours, "ours.qsm", outside, 1).kind, Kind::Conflict);
    QCOMPARE(resolveInputNormalization(ours, "ours.qsm", Normalization::uniform(0.25f, 0.5f, 1), 1).kind, Kind::Stored);
    // A file that says nothing takes the given one as it is, or leaves the choice to the caller.
    ExportedModel silent = ours;
    silent.normalizationKnown = false;
    QCOMPARE(resolveInputNormalization(silent, "m.onnx", outside, 3).value, Normalization::uniform(0.2f, 0.5f, 3));
    QCOMPARE(resolveInputNormalization(silent, "m.onnx", std::nullopt, 1).kind, Kind::NotStored);
}


// An input that declares no shape, or dimensions that are neither a size nor a name, as tools that
// strip or rewrite shapes leave them (tester 20 L3; refused before: "declares no shape"): its
// channels are its first Conv's (its features its Gemm's), read through the graph's own
// normalisation, a uint8 Cast or a channels-last permute; H and W are read at the data's size, as
// a dynamic H and W are, with a note. The model is the one its declared shape gives: PyTorch's
// outputs, or the same outputs as the fixture with its shape, on the same images.
void TestOnnxImportInput::inputWithoutShapeTakesItsReadersCount()
{
    struct Case {
        const char* name;
        bool noShape;   // else rank 4 (2) of unknown dimensions
        Shape images;   // what the data pipeline gives
        const char* note;
    };
    const Case cases[] = {{"mobile_op11_fold_dyn", true, {3, 8, 8}, "declares no shape: it is read as [N, 3, H, W]"},
                          {"residual_op13_fold_dyn", false, {1, 8, 8}, "does not give its channel count: it is read as [N, 1, H, W]"},
                          {"padnorm_op13_fold_dyn", true, {1, 8, 8}, "[N, 1, H, W], from the weight of its reader, the Conv"},
                          {"flatmlp_op13_fold_dyn", true, {1, 8, 8}, "declares no shape: it is read as [N, 64], from the weight of its reader, the Gemm"},
                          {"bytes_norm_op11_nofold", true, {3, 8, 8}, "[N, 3, H, W]"},
                          {"bytesnhwc_op13_fold_dyn", false, {3, 8, 8}, "it is read as [N, H, W, 3] (channels-last), from the weight of its reader, the Conv"},
                          // tester 21: a bias-free Linear's MatMul reads its weight through a Transpose; an
                          // activation before the first Conv, on channels-last images too
                          {"mlpnobias_op11_nofold", true, {1, 8, 8}, "[N, 64], from the weight of its reader, the MatMul"},
                          {"elufirst_op13_nofold_dyn", false, {3, 8, 8}, "[N, 3, H, W], from the weight of its reader, the Conv"},
                          {"hardswishnhwc_op17_fold", true, {3, 8, 8}, "[N, H, W, 3] (channels-last)"},
                          // grayscale copied to an RGB stem: torch.cat([x, x, x], 1), x.repeat(1, 3, 1, 1)
                          {"graycatnorm_op17_fold", true, {1, 8, 8}, "[N, 1, H, W], from the weight of its reader, the Conv"},
                          {"gray2rgb_repeat_op17_nofold_dyn", false, {1, 8, 8}, "[N, 1, H, W], from the weight of its reader, the Conv"}};
    for (const Case& c : cases) {
        const fs::path p = kFixtures / (std::string(c.name) + ".onnx");
        const ExportedModel declared = importOnnx(fileBytes(p), p.string());
        onnx::ModelProto mp = parse(p);
        auto* tt = mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type();
        if (c.noShape) tt->clear_shape();
        else
            for (auto& d : *tt->mutable_shape()->mutable_dim()) d.Clear();
        mp.mutable_graph()->clear_value_info();
        OnnxImportOptions asked;
        asked.height = c.images[1];
        asked.width = c.images[2];
        const ExportedModel m = importOnnx(serialize(mp), c.name, nullptr, asked);
        QCOMPARE(Shape({m.channels, m.height, m.width}), c.images);
        QCOMPARE(layerNames(m), layerNames(declared));
        QCOMPARE(m.normalization, declared.normalization);
        QCOMPARE(m.normalizationKnown, declared.normalizationKnown);
        QVERIFY2(std::any_of(m.notes.begin(), m.notes.end(), [&](const std::string& n) { return n.find(c.note) != std::string::npos; }),
                 qPrintable(QString("%1: %2").arg(c.name).arg(QString::fromStdString(m.notes.empty() ? "" : m.notes.front()))));
        Reference ref = loadReference(kFixtures / (std::string(c.name) + ".json"));
        ref.inputShape = {ref.inputShape[0], c.images[0], c.images[1], c.images[2]};
        if (const std::string n = c.name; n.find("nhwc") != std::string::npos || n.rfind("bytes", 0) == 0 || n.rfind("gray", 0) == 0) { // the same images to both
            QCOMPARE(forwardOn(m, ref), forwardOn(declared, ref));
            continue;
        }
        if (std::string(c.name) == "flatmlp_op13_fold_dyn")
            for (auto& v : ref.input) v = (v - 0.5f) / 0.25f; // the images the data pipeline gives, normalised as stored
        const double dev = maxDeviation(m, ref);
        QVERIFY2(dev <= kOutputTol, qPrintable(QString("%1: deviation %2").arg(c.name).arg(dev)));
    }
    // Zeros padded to the channels of grayscale images before a 3-channel stem (F.pad(x, (0, 0, 0,
    // 0, 1, 1))): one channel, as the declared [N, 1, H, W] reads (tester 21: the stem's 3 were taken
    // for the input's, and the Pad's 2 added to them).
    {
        onnx::ModelProto padded = parse(kFixtures / "mobile_op11_fold_dyn.onnx");
        onnx::GraphProto* g = padded.mutable_graph();
        for (onnx::NodeProto& n : *g->mutable_node())
            for (int i = 0; i < n.input_size(); ++i)
                if (n.input(i) == "input") n.set_input(i, "input_rgb");
        onnx::TensorProto* pads = g->add_initializer();
        pads->set_name("channel_pads");
        pads->set_data_type(onnx::TensorProto::INT64);
        pads->add_dims(8);
        for (std::int64_t v : {0, 1, 0, 0, 0, 1, 0, 0}) pads->add_int64_data(v);
        onnx::NodeProto pad;
        pad.set_op_type("Pad");
        pad.add_input("input");
        pad.add_input("channel_pads");
        pad.add_output("input_rgb");
        g->add_node();
        for (int k = g->node_size() - 1; k > 0; --k) g->mutable_node()->SwapElements(k, k - 1);
        *g->mutable_node(0) = pad;
        g->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(1);
        const ExportedModel declared = importOnnx(serialize(padded), "chanpad.onnx");
        g->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
        OnnxImportOptions asked;
        asked.height = asked.width = 8;
        const ExportedModel m = importOnnx(serialize(padded), "chanpad.onnx", nullptr, asked);
        QCOMPARE(Shape({m.channels, m.height, m.width}), Shape({1, 8, 8}));
        Reference ref = loadReference(kFixtures / "mobile_op11_fold_dyn.json");
        ref.input.resize(ref.input.size() / 3);
        ref.inputShape = {3, 1, 8, 8};
        QCOMPARE(forwardOn(m, ref), forwardOn(declared, ref));
    }
    // At another size, as the data asks (the fixture's graph is dynamic in H and W only by its ops).
    onnx::ModelProto mp = parse(kFixtures / "mobile_op11_fold_dyn.onnx");
    mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    OnnxImportOptions asked;
    asked.height = 16;
    asked.width = 12;
    QCOMPARE(importOnnx(serialize(mp), "mobile.onnx", nullptr, asked).height, std::size_t{16});
    // No reader gives the count (the input goes straight into a Flatten): refused, saying what to do.
    mp = parse(kFixtures / "imgmlp_op13_fold_dyn.onnx");
    mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    try {
        importOnnx(serialize(mp), "imgmlp.onnx");
        QFAIL("an input of no shape whose count no reader gives was read");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).contains("imgmlp.onnx") && QString(e.what()).contains("declares no shape, and its readers do not give it"), e.what());
    }
}

QTEST_GUILESS_MAIN(TestOnnxImportInput)
#include "tst_onnx_import_input.moc"
