// FP32 ONNX import: real torch.onnx.export files (tests/onnx_import, made by make_fixtures.py with
// Debian's torch 1.13, opsets 9/10/11/13/17, with and without constant folding, static and dynamic
// batch) import and their forward matches PyTorch's output within 1e-4; layer names follow the
// user's modules; QuantScope's own FP32 export reads back. Broken files: tst_onnx_import_errors.
// QS_ONNX_REF_DIR=DIR additionally checks DIR/{seed-cnn,resnet8,mobilenet-tiny}.{onnx,json}
// (pytorch_ref.py exports, npz_to_json.py) on all their images.
#include "data/dataset.h"
#include "io/exported_model.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "data/normalization.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <nlohmann/json.hpp>

#include <QtTest>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

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

class TestOnnxImport : public QObject {
    Q_OBJECT

private slots:
    void clampChainsAreRelu6();
    void globalPoolingIdioms();
    void matchesPyTorch_data();
    void matchesPyTorch();
    void matchesPyTorchAtNewerOpsets_data();
    void matchesPyTorchAtNewerOpsets();
    void geluOperatorIsGelu_data();
    void geluOperatorIsGelu();
    void softmaxHeadIsKept();
    void layerNamesFollowModules();
    void poolPaddingImports();
    void foldsWhatExportersWrite();
    void readsQuantScopeExport();
    void flatInputReadsFlattenedImages();
    void biasFreeLinearHasNoBias();
    void referenceModels();
    void readsUsersInputConventions();
    void sharedWeightsAreNamed();
    void convHeadsOnFlatFeatures();
    void metadataDoesNotMisroute();
};

// The PyTorch exports (torch 1.13, opsets 9 to 17) whose outputs matchesPyTorch checks.
static const std::vector<const char*>& pytorchFixtures()
{
    static const std::vector<const char*> names = {"seqview_op11_nofold_dyn", "seqview_op13_fold", "flatten_bn_op17_nofold", "flatten_bn_op13_fold_dyn",
                          "residual_op13_fold_dyn", "residual_op11_nofold", "mobile_op11_fold_dyn", "mobile_op17_nofold_dyn",
                          "padconv_op13_nofold", "padconv_op17_fold_dyn", "matmul_op13_nofold_dyn", "poolpad_op13_fold_dyn", "squeeze_op11_nofold",
                          "squeeze_op13_fold_dyn", "squeezeall_op13_fold", "clampchain_op13_fold_dyn", "clampchain_op11_nofold", "ref_resnet8",
                          "ref_mobilenet-tiny", "convhead_op11_nofold_dyn", "convhead_op13_fold", "unsqueezehead_op11_nofold",
                          "unsqueezehead_op13_fold_dyn", "convscores_op13_fold_dyn", "constops_op11_nofold", "constops_op13_fold_dyn",
                          "wholemapavg_op11_nofold", "wholemapavg_op13_fold", "gapidioms_op11_nofold", "gapidioms_op13_fold_dyn",
                          "gapidioms2_op11_nofold", "gapidioms2_op13_fold_dyn", "bnneck_op11_nofold", "bnneck_op15_fold_dyn",
                          // opsets 9 and 10: the attribute forms of Slice, Clip, Pad, Squeeze/Unsqueeze and Dropout
                          "gapidioms_op9_nofold", "padconv_op9_nofold", "flatten_bn_op9_fold", "seqview_op9_nofold_dyn",
                          "convhead_op9_nofold", "bnneck_op9_nofold", "mobile_op10_nofold_dyn", "residual_op10_fold_dyn",
                          "dense_concat_op10_nofold", "poolgeom_max_op10_fold"};
    return names;
}

void TestOnnxImport::matchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    for (const char* n : pytorchFixtures()) QTest::newRow(n) << QString(n);
}

namespace {

// The model as an opset-`opset` exporter (18 or later) writes it: the default-domain opset
// raised, every reduction's axes attribute (ReduceMean, ReduceMax...; ReduceSum's axes were
// already an input) turned into a constant axes input, half of them initializers and half Constant
// nodes, as exporters write both, and every Pad of constant pads given its image axes' pads with
// an axes input. Returns how many nodes were rewritten.
int upgradeToOpset(onnx::ModelProto& mp, int opset)
{
    for (auto& o : *mp.mutable_opset_import())
        if (o.domain().empty() || o.domain() == "ai.onnx") o.set_version(opset);
    int rewritten = 0;
    onnx::GraphProto* g = mp.mutable_graph();
    std::vector<onnx::NodeProto> constants;
    for (onnx::NodeProto& n : *g->mutable_node()) {
        if (n.op_type().rfind("Reduce", 0) != 0 || n.op_type() == "ReduceSum") continue;
        auto* attrs = n.mutable_attribute();
        const auto a = std::find_if(attrs->begin(), attrs->end(), [](const onnx::AttributeProto& x) { return x.name() == "axes"; });
        if (a == attrs->end()) continue;
        onnx::TensorProto t;
        t.set_name(n.output(0) + "_axes");
        t.set_data_type(onnx::TensorProto::INT64);
        t.add_dims(a->ints_size());
        for (std::int64_t v : a->ints()) t.add_int64_data(v);
        attrs->erase(a);
        n.add_input(t.name());
        if (rewritten++ % 2 == 0) {
            *g->add_initializer() = t;
        } else {
            onnx::NodeProto c;
            c.set_op_type("Constant");
            c.add_output(t.name());
            onnx::AttributeProto* v = c.add_attribute();
            v->set_name("value");
            v->set_type(onnx::AttributeProto::TENSOR);
            *v->mutable_t() = t;
            constants.push_back(c);
        }
    }
    // Pad's pads from a Constant node, for the image axes only through Pad's axes input (opset
    // 18), as [2, 3] and as [-2, -1]: a new pads initializer of four values and an axes one.
    std::map<std::string, const onnx::TensorProto*> constValues;
    for (const onnx::NodeProto& n : g->node())
        if (n.op_type() == "Constant" && n.attribute_size() == 1 && n.attribute(0).name() == "value")
            constValues[n.output(0)] = &n.attribute(0).t();
    std::vector<onnx::TensorProto> inits;
    for (onnx::NodeProto& n : *g->mutable_node()) {
        if (n.op_type() != "Pad" || n.input_size() < 2 || !constValues.count(n.input(1))) continue;
        const onnx::TensorProto& t = *constValues.at(n.input(1));
        std::vector<std::int64_t> pads(t.int64_data().begin(), t.int64_data().end());
        if (pads.empty() && t.raw_data().size() == 8 * sizeof(std::int64_t)) {
            pads.resize(8);
            std::memcpy(pads.data(), t.raw_data().data(), t.raw_data().size());
        }
        if (pads.size() != 8) continue;
        onnx::TensorProto p, a;
        p.set_name(n.output(0) + "_hw_pads");
        a.set_name(n.output(0) + "_axes");
        for (onnx::TensorProto* x : {&p, &a}) {
            x->set_data_type(onnx::TensorProto::INT64);
            x->add_dims(x == &p ? 4 : 2);
        }
        for (int k : {2, 3, 6, 7}) p.add_int64_data(pads[static_cast<std::size_t>(k)]);
        const bool negative = rewritten++ % 2 == 1;
        for (std::int64_t ax : {2, 3}) a.add_int64_data(negative ? ax - 4 : ax);
        n.set_input(1, p.name());
        if (n.input_size() < 3) n.add_input("");
        n.add_input(a.name());
        inits.push_back(p);
        inits.push_back(a);
    }
    for (const onnx::TensorProto& t : inits) *g->add_initializer() = t;
    // Constant nodes first: the graph stays in topological order.
    for (auto it = constants.rbegin(); it != constants.rend(); ++it) {
        g->add_node();
        for (int k = g->node_size() - 1; k > 0; --k) g->mutable_node()->SwapElements(k, k - 1);
        *g->mutable_node(0) = *it;
    }
    return rewritten;
}

} // namespace

// Every PyTorch fixture declared at opsets 18 and 23, its reductions' axes as inputs (the form
// those opsets define): the same layers and PyTorch's outputs. torch >= 2.5's exporters write 18.
void TestOnnxImport::matchesPyTorchAtNewerOpsets_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("opset");
    // Not the opset-9 to 11 exports: opset 13 changed Softmax's default axis and moved Squeeze's
    // and Unsqueeze's axes into inputs (and 10 and 11 Slice's, Clip's and Pad's attributes), which
    // an exporter at 18 writes differently.
    // With the pool geometry fixtures, whose Pads (before AveragePool) pad begins and ends unequally.
    std::vector<const char*> names = pytorchFixtures();
    names.insert(names.end(), {"poolgeom_avg_op13_fold_dyn", "poolgeom_avg_op17_fold"});
    for (const char* n : names)
        if (const std::string s(n); s.find("_op9_") == std::string::npos && s.find("_op10_") == std::string::npos &&
                                    s.find("_op11") == std::string::npos)
            for (int opset : {18, 23}) QTest::addRow("%s at opset %d", n, opset) << QString(n) << opset;
}

void TestOnnxImport::matchesPyTorchAtNewerOpsets()
{
    QFETCH(QString, name);
    QFETCH(int, opset);
    const fs::path onnxPath = kFixtures / (name.toStdString() + ".onnx");
    const Reference ref = loadReference(kFixtures / (name.toStdString() + ".json"));
    const ExportedModel before = importOnnx(fileBytes(onnxPath), onnxPath.string());
    onnx::ModelProto mp = parse(onnxPath);
    const int reductions = upgradeToOpset(mp, opset);
    OnnxImportInfo info;
    ExportedModel m;
    try {
        m = importOnnx(serialize(mp), onnxPath.string(), &info);
    } catch (const Error& e) {
        QFAIL(e.what());
    }
    QCOMPARE(info.opset, opset);
    QCOMPARE(layerNames(m), layerNames(before));
    const double dev = maxDeviation(m, ref);
    qInfo("%s at opset %d: %d reduction(s) and Pad(s) with axes inputs, max |QuantScope - PyTorch| = %.3g", qPrintable(name), opset, reductions, dev);
    QVERIFY2(dev <= kOutputTol, qPrintable(QString("deviation %1").arg(dev)));
}

// ONNX's Gelu (opset 20) in place of the subgraphs torch 1.13 writes for nn.GELU() (Erf) and
// nn.GELU(approximate='tanh'): each /actN/ module's nodes replaced by one Gelu node reads as the
// same layer and gives PyTorch's outputs.
void TestOnnxImport::geluOperatorIsGelu_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<QString>("approximate");
    QTest::newRow("erf") << "act_gelu_op13_fold_dyn" << "none";
    QTest::newRow("tanh") << "act_gelutanh_op17_fold_dyn" << "tanh";
}

void TestOnnxImport::geluOperatorIsGelu()
{
    QFETCH(QString, name);
    QFETCH(QString, approximate);
    const fs::path onnxPath = kFixtures / (name.toStdString() + ".onnx");
    const Reference ref = loadReference(kFixtures / (name.toStdString() + ".json"));
    onnx::ModelProto mp = parse(onnxPath);
    for (auto& o : *mp.mutable_opset_import())
        if (o.domain().empty() || o.domain() == "ai.onnx") o.set_version(20);
    // Each module's nodes: outputs named /actN/...; the module's input is the one value its
    // nodes read that none of them (nor a Constant) writes, its output the last node's.
    onnx::GraphProto* g = mp.mutable_graph();
    std::map<std::string, std::vector<int>> modules;
    for (int k = 0; k < g->node_size(); ++k) {
        const onnx::NodeProto& n = g->node(k);
        if (n.op_type() == "Constant" || n.output_size() != 1 || n.output(0).rfind("/act", 0) != 0) continue;
        modules[n.output(0).substr(0, n.output(0).find('/', 1))].push_back(k);
    }
    QVERIFY(modules.size() >= 2);
    std::set<std::string> constants;
    for (const onnx::NodeProto& n : g->node())
        if (n.op_type() == "Constant") constants.insert(n.output(0));
    std::set<int> drop;
    for (const auto& [prefix, nodes] : modules) {
        std::set<std::string> written;
        for (int k : nodes) written.insert(g->node(k).output(0));
        std::set<std::string> read;
        for (int k : nodes)
            for (const std::string& v : g->node(k).input())
                if (!written.count(v) && !constants.count(v)) read.insert(v);
        QCOMPARE(read.size(), std::size_t{1});
        onnx::NodeProto gelu;
        gelu.set_op_type("Gelu");
        gelu.set_name(prefix + "/Gelu");
        gelu.add_input(*read.begin());
        gelu.add_output(g->node(nodes.back()).output(0));
        onnx::AttributeProto* a = gelu.add_attribute();
        a->set_name("approximate");
        a->set_type(onnx::AttributeProto::STRING);
        a->set_s(approximate.toStdString());
        *g->mutable_node(nodes.back()) = gelu;
        drop.insert(nodes.begin(), nodes.end() - 1);
    }
    onnx::GraphProto kept = *g;
    kept.clear_node();
    for (int k = 0; k < g->node_size(); ++k)
        if (!drop.count(k)) *kept.add_node() = g->node(k);
    *g = kept;
    const ExportedModel m = importOnnx(serialize(mp), onnxPath.string());
    const LayerKind want = approximate == "none" ? LayerKind::GELU : LayerKind::GELUTanh;
    const auto geluLayers = std::count_if(m.layers.begin(), m.layers.end(), [&](const StoredLayer& l) { return l.kind == want; });
    QCOMPARE(static_cast<std::size_t>(geluLayers), modules.size());
    const double dev = maxDeviation(m, ref);
    QVERIFY2(dev <= kOutputTol, qPrintable(QString("deviation %1").arg(dev)));
    // Only the approximations ONNX defines.
    for (onnx::NodeProto& n : *g->mutable_node())
        if (n.op_type() == "Gelu") n.mutable_attribute(0)->set_s("fast");
    try {
        importOnnx(serialize(mp), onnxPath.string());
        QFAIL("approximate = 'fast' was read");
    } catch (const ConfigError& e) {
        QVERIFY2(std::string(e.what()).find("approximate = 'fast'") != std::string::npos, e.what());
    }
}

void TestOnnxImport::matchesPyTorch()
{
    QFETCH(QString, name);
    const fs::path onnxPath = kFixtures / (name.toStdString() + ".onnx");
    const Reference ref = loadReference(kFixtures / (name.toStdString() + ".json"));
    OnnxImportInfo info;
    const ExportedModel m = importOnnx(fileBytes(onnxPath), onnxPath.string(), &info);
    QCOMPARE(m.modelName, name.toStdString());
    QCOMPARE(Shape({m.channels, m.height, m.width}), Shape(ref.inputShape.begin() + 1, ref.inputShape.end()));
    QCOMPARE(m.classes, ref.outputShape[1]);
    QVERIFY(!m.quantized);
    QCOMPARE(m.normalization, Normalization::identity(m.channels)); // the exports take normalised input...
    QVERIFY(!m.normalizationKnown);                                 // ...and do not say how it was normalised
    const double dev = maxDeviation(m, ref);
    qInfo("%s: %zu layers, %zu parameters, max |QuantScope - PyTorch| = %.3g", qPrintable(name), m.layers.size(), m.numParams(), dev);
    QVERIFY2(dev <= kOutputTol, qPrintable(QString("deviation %1").arg(dev)));
    // Names are unique (Model::add would refuse duplicates; buildModel ran above).
    std::vector<std::string> names = layerNames(m);
    std::sort(names.begin(), names.end());
    QVERIFY(std::adjacent_find(names.begin(), names.end()) == names.end());
}

// ReLU6 written as two clamps (x.clamp(min=0).clamp(max=6), F.relu(x).clamp(max=6)) imports as
// one ReLU6 layer each, the trailing clamp(min=0) as nothing: a user's model was refused at
// "Clip(-inf, 6)". matchesPyTorch compares the outputs.
void TestOnnxImport::clampChainsAreRelu6()
{
    for (const char* name : {"clampchain_op13_fold_dyn", "clampchain_op11_nofold"}) {
        const ExportedModel m = importOnnx((kFixtures / (std::string(name) + ".onnx")).string());
        std::vector<LayerKind> kinds;
        for (const StoredLayer& l : m.layers)
            if (l.kind == LayerKind::ReLU || l.kind == LayerKind::ReLU6) kinds.push_back(l.kind);
        QVERIFY2(kinds == std::vector<LayerKind>({LayerKind::ReLU6, LayerKind::ReLU6}), name);
    }
}

// Global pooling as user code writes it (gapidioms2): x.mean(-1).mean(-1), x.sum((2, 3)) / (H W)
// (with H W a constant, or computed from Shape in a dynamic export) and mean(-2).mean(-1) with
// keepdim are one GlobalAvgPool2d each, x.amax((2, 3)) and x.max(-1)[0].max(-1)[0] one MaxPool2d
// each over the 7x7 map; nothing
// else pools. matchesPyTorch compares the outputs.
void TestOnnxImport::globalPoolingIdioms()
{
    for (const char* name : {"gapidioms2_op11_nofold", "gapidioms2_op13_fold_dyn"}) {
        const ExportedModel m = importOnnx((kFixtures / (std::string(name) + ".onnx")).string());
        std::size_t gap = 0, maxPools = 0;
        for (const StoredLayer& l : m.layers) {
            gap += l.kind == LayerKind::GlobalAvgPool2d;
            if (l.kind == LayerKind::MaxPool2d) {
                ++maxPools;
                QCOMPARE(l.kernel, std::size_t{7});
                QCOMPARE(l.stride, std::size_t{7});
            }
            QVERIFY2(l.kind != LayerKind::AvgPool2d, name);
        }
        QCOMPARE(gap, std::size_t{3});
        QCOMPARE(maxPools, std::size_t{2});
    }
}

// A graph ending in Softmax keeps it as the model's last layer: the model outputs the file's
// probabilities (matchesPyTorch compares them), through the .qsm and ONNX exports too.
void TestOnnxImport::softmaxHeadIsKept()
{
    OnnxImportInfo info;
    const fs::path p = kFixtures / "padconv_op13_nofold.onnx";
    const ExportedModel m = importOnnx(fileBytes(p), p.string(), &info);
    QCOMPARE(info.opset, 13);
    QCOMPARE(m.layers.back().kind, LayerKind::Softmax);
    QVERIFY(m.notes.empty());
    const Reference ref = loadReference(kFixtures / "padconv_op13_nofold.json");
    const ExportedModel viaQsm = decodeQsm(encodeQsm(m), "memory");
    QCOMPARE(viaQsm.layers.back().kind, LayerKind::Softmax);
    QVERIFY(maxDeviation(viaQsm, ref) <= kOutputTol);
    const std::vector<std::uint8_t> onnxBytes = encodeOnnx(m);
    const ExportedModel viaOnnx = decodeOnnx(onnxBytes, "export.onnx");
    QCOMPARE(viaOnnx.layers.back().kind, LayerKind::Softmax);
    QVERIFY(maxDeviation(viaOnnx, ref) <= kOutputTol);
    OnnxImportInfo info2;
    const fs::path q = kFixtures / "flatten_bn_op17_nofold.onnx";
    const ExportedModel l = importOnnx(fileBytes(q), q.string(), &info2);
    QCOMPARE(l.layers.back().kind, LayerKind::LogSoftmax);
    // A reshape of the probabilities on the way out (softmax(x).view(-1, classes)) keeps them.
    onnx::ModelProto mp = parse(kFixtures / "imgmlp_op13_fold_dyn.onnx");
    afterSoftmax(mp, "Reshape", {"probs", "view_shape"});
    onnx::TensorProto* shape = mp.mutable_graph()->add_initializer();
    shape->set_name("view_shape");
    shape->set_data_type(onnx::TensorProto::INT64);
    shape->add_dims(2);
    shape->add_int64_data(-1);
    shape->add_int64_data(5);
    const ExportedModel viewed = importOnnx(serialize(mp), "viewed.onnx");
    QCOMPARE(viewed.layers.back().kind, LayerKind::Softmax);
    Reference vref = loadReference(kFixtures / "imgmlp_op13_fold_dyn.json");
    for (auto& v : vref.input) v = (v - 0.3) / 0.35;
    QVERIFY(maxDeviation(viewed, vref) <= kOutputTol);
}

void TestOnnxImport::layerNamesFollowModules()
{
    const std::vector<std::string> res = layerNames(importOnnx((kFixtures / "residual_op13_fold_dyn.onnx").string()));
    for (const char* n : {"stem", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.shortcut.0", "pool", "fc"})
        QVERIFY2(contains(res, n), n);
    const ExportedModel fb = importOnnx((kFixtures / "flatten_bn_op17_nofold.onnx").string());
    const std::vector<std::string> names = layerNames(fb);
    for (const char* n : {"features.0", "features.2", "classifier", "flatten"}) QVERIFY2(contains(names, n), n);
    QCOMPARE(fb.layers[2].kind, LayerKind::BatchNorm2d); // Conv-ReLU-BN: the BatchNormalization node stays a layer
    const std::vector<std::string> mm = layerNames(importOnnx((kFixtures / "matmul_op13_nofold_dyn.onnx").string()));
    QVERIFY(contains(mm, "conv"));
}

void TestOnnxImport::poolPaddingImports()
{
    // MaxPool(3, 2, 1) pads with -inf; AvgPool2d(3, 1, 1) exports as a zero Pad + AveragePool and merges.
    const ExportedModel m = importOnnx((kFixtures / "poolpad_op13_fold_dyn.onnx").string());
    const StoredLayer* maxPool = nullptr;
    const StoredLayer* avgPool = nullptr;
    for (const StoredLayer& l : m.layers) {
        if (l.kind == LayerKind::MaxPool2d) maxPool = &l;
        if (l.kind == LayerKind::AvgPool2d) avgPool = &l;
    }
    QVERIFY(maxPool && avgPool);
    QCOMPARE(maxPool->name, std::string("maxpool"));
    QCOMPARE(maxPool->padding, std::size_t{1});
    QCOMPARE(avgPool->padding, std::size_t{1});
    // It round-trips through QuantScope's own ONNX export (pads, count_include_pad = 1).
    const ExportedModel back = decodeOnnx(encodeOnnx(m), "poolpad.onnx");
    QCOMPARE(back.layers.size(), m.layers.size());
    for (std::size_t i = 0; i < m.layers.size(); ++i) QCOMPARE(back.layers[i].padding, m.layers[i].padding);
    // And through .qsm version 3 (the u32 padding of MaxPool2d / AvgPool2d).
    const ExportedModel qsm = decodeQsm(encodeQsm(m), "poolpad.qsm");
    for (std::size_t i = 0; i < m.layers.size(); ++i) QCOMPARE(qsm.layers[i].padding, m.layers[i].padding);
    const Reference ref = loadReference(kFixtures / "poolpad_op13_fold_dyn.json");
    QVERIFY(maxDeviation(qsm, ref) <= kOutputTol);
}

// What other exporters (and older torch versions) write around layers, made from a fixture: the
// Linear weight stored transposed behind Transpose and Cast nodes, a Dropout (ratio as an input)
// in front of it, and the nodes listed out of order. The forward still matches PyTorch.
void TestOnnxImport::foldsWhatExportersWrite()
{
    onnx::ModelProto mp = parse(kFixtures / "seqview_op13_fold.onnx");
    onnx::GraphProto* g = mp.mutable_graph();
    for (onnx::TensorProto& t : *g->mutable_initializer())
        if (t.name() == "fc.weight") { // [10, 100] -> stored as [100, 10] named fc.weight_t
            std::vector<float> w(t.raw_data().size() / 4), wt(w.size());
            std::memcpy(w.data(), t.raw_data().data(), t.raw_data().size());
            for (int o = 0; o < 10; ++o)
                for (int i = 0; i < 100; ++i) wt[static_cast<std::size_t>(i * 10 + o)] = w[static_cast<std::size_t>(o * 100 + i)];
            t.set_name("fc.weight_t");
            t.set_dims(0, 100);
            t.set_dims(1, 10);
            t.set_raw_data(std::string(reinterpret_cast<const char*>(wt.data()), wt.size() * 4));
        }
    onnx::NodeProto* gemm = findNode(mp, "Gemm");
    const std::string flat = gemm->input(0);
    gemm->set_input(0, "dropped");
    gemm->set_input(1, "fc.weight.cast");
    // Appended after the Gemm that reads them: the importer orders nodes itself.
    onnx::NodeProto* tr = g->add_node();
    tr->set_op_type("Transpose");
    tr->set_name("fc.transpose");
    tr->add_input("fc.weight_t");
    tr->add_output("fc.weight.back");
    setInts(tr, "perm", std::vector<std::int64_t>{1, 0});
    onnx::NodeProto* cast = g->add_node();
    cast->set_op_type("Cast");
    cast->set_name("fc.cast");
    cast->add_input("fc.weight.back");
    cast->add_output("fc.weight.cast");
    onnx::AttributeProto* to = cast->add_attribute();
    to->set_name("to");
    to->set_type(onnx::AttributeProto::INT);
    to->set_i(onnx::TensorProto::FLOAT);
    onnx::NodeProto* ratio = g->add_node();
    ratio->set_op_type("Constant");
    ratio->set_name("ratio");
    ratio->add_output("ratio.value");
    onnx::AttributeProto* v = ratio->add_attribute();
    v->set_name("value");
    v->set_type(onnx::AttributeProto::TENSOR);
    v->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
    v->mutable_t()->add_float_data(0.25f);
    onnx::NodeProto* drop = g->add_node();
    drop->set_op_type("Dropout");
    drop->set_name("/drop/Dropout");
    drop->add_input(flat);
    drop->add_input("ratio.value");
    drop->add_output("dropped");

    const ExportedModel m = importOnnx(serialize(mp), "folded.onnx");
    const std::vector<std::string> names = layerNames(m);
    QVERIFY(contains(names, "fc")); // from the node scope, not the renamed weight
    const StoredLayer* dropout = nullptr;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Dropout) dropout = &l;
    QVERIFY(dropout);
    QCOMPARE(dropout->name, std::string("drop"));
    QCOMPARE(dropout->dropout, 0.25f);
    const double dev = maxDeviation(m, loadReference(kFixtures / "seqview_op13_fold.json"));
    QVERIFY2(dev <= kOutputTol, qPrintable(QString("deviation %1").arg(dev)));
}

void TestOnnxImport::readsQuantScopeExport()
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

// An MLP exported on flat images [N, 64], normalising inside the graph: read as 1 x 8 x 8 images
// with a Flatten in front, the normalisation kept, the outputs PyTorch's.
void TestOnnxImport::flatInputReadsFlattenedImages()
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
        QVERIFY2(QString(e.what()).contains("does not take 3072 features"), e.what()); // read as 3 x 32 x 32, flattened
    }
}

// PyTorch's nn.Linear(..., bias=False) exports as a MatMul (or a Gemm without C): it imports as a
// Linear without a bias, so the parameter count is PyTorch's and fine-tuning trains no bias that
// the model does not have. A MatMul + Add head still gets its bias from the Add.
void TestOnnxImport::biasFreeLinearHasNoBias()
{
    auto linears = [](const ExportedModel& m) {
        std::vector<const StoredLayer*> v;
        for (const StoredLayer& l : m.layers)
            if (l.kind == LayerKind::Linear) v.push_back(&l);
        return v;
    };
    for (const char* name : {"flatmlp_op13_fold_dyn", "flatmlp_op11_nofold"}) {
        const ExportedModel m = importOnnx((kFixtures / (std::string(name) + ".onnx")).string());
        const auto fc = linears(m);
        QCOMPARE(fc.size(), std::size_t{2});
        QCOMPARE(fc[0]->tensors.size(), std::size_t{2}); // fc1 = nn.Linear(64, 24)
        QCOMPARE(fc[1]->tensors.size(), std::size_t{1}); // fc2 = nn.Linear(24, 5, bias=False)
        QCOMPARE(fc[1]->tensors[0].name, std::string("weight"));
        QCOMPARE(m.numParams(), std::size_t{64 * 24 + 24 + 24 * 5}); // PyTorch's sum(p.numel()): 1,680
        const std::unique_ptr<Model> model = buildModel(m);
        QCOMPARE(model->params().size(), std::size_t{3}); // fc1.weight, fc1.bias, fc2.weight
    }
    // x @ W + b: the Add is the bias (conv bias-free: 3*1*5*5 + 48*6 + 6 = 369).
    const ExportedModel mm = importOnnx((kFixtures / "matmul_op13_nofold_dyn.onnx").string());
    QCOMPARE(linears(mm).at(0)->tensors.size(), std::size_t{2});
    QCOMPARE(mm.numParams(), std::size_t{369});
    // Gemm without C: fc1 of the flat MLP with its C input removed.
    onnx::ModelProto mp = parse(kFixtures / "flatmlp_op13_fold_dyn.onnx");
    onnx::NodeProto* gemm = findNode(mp, "Gemm");
    QCOMPARE(gemm->input_size(), 3);
    gemm->mutable_input()->RemoveLast();
    const ExportedModel noC = importOnnx(serialize(mp), "gemm_without_c.onnx");
    QCOMPARE(linears(noC).at(0)->tensors.size(), std::size_t{1});
    QCOMPARE(noC.numParams(), std::size_t{64 * 24 + 24 * 5});
}

void TestOnnxImport::referenceModels()
{
    const char* dir = std::getenv("QS_ONNX_REF_DIR");
    if (!dir) QSKIP("QS_ONNX_REF_DIR is not set (pytorch_ref.py exports converted by npz_to_json.py)");
    for (const char* m : {"seed-cnn", "resnet8", "mobilenet-tiny"}) {
        const fs::path base = fs::path(dir) / m;
        OnnxImportInfo info;
        const ExportedModel em = importOnnx(fileBytes(base.string() + ".onnx"), base.string() + ".onnx", &info);
        const Reference ref = loadReference(base.string() + ".json");
        const double dev = maxDeviation(em, ref);
        qInfo("%s: %zu parameters, %zu images, max |QuantScope - PyTorch| logit = %.3g", m, em.numParams(), ref.inputShape[0], dev);
        QVERIFY2(dev <= kOutputTol, m);
        // Predictions on the whole Fashion-MNIST test split, normalised as common.py does.
        std::ifstream f(base.string() + ".json");
        const nlohmann::json j = nlohmann::json::parse(f);
        if (!j.contains("predictions") || !fs::exists(kDefaultDataDir)) continue;
        const std::vector<std::int32_t> want = j.at("predictions").get<std::vector<std::int32_t>>();
        DatasetOptions o;
        Dataset d = Dataset::load(o);
        d.normalization = Normalization::uniform(0.2860f, 0.3530f, 1);
        QCOMPARE(want.size(), d.test.size());
        std::unique_ptr<Model> model = buildModel(em);
        std::size_t same = 0;
        Tensor x;
        std::vector<std::int32_t> labels;
        RunContext ctx;
        for (std::size_t b = 0; b < d.test.size(); b += 500) {
            const std::size_t e = std::min(d.test.size(), b + 500);
            d.makeBatch(d.test, b, e, x, labels);
            const Tensor& y = model->forward(x, ctx);
            const std::size_t k = y.shape()[1];
            for (std::size_t r = 0; r < e - b; ++r) {
                const float* row = y.data() + r * k;
                same += static_cast<std::int32_t>(std::max_element(row, row + k) - row) == want[b + r];
            }
        }
        const double agree = static_cast<double>(same) / static_cast<double>(want.size());
        qInfo("%s: predictions equal to PyTorch's on %zu of %zu test images (%.2f %%)", m, same, want.size(), 100.0 * agree);
        QVERIFY2(agree >= kMinPredictionAgreement, m);
    }
}

// What users write in front of their models: x / 255 (or * (1/255)) then a normalisation,
// which takes 0..255 pixels (read on QuantScope's [0, 1] scale, with a note; it gave chance
// accuracy), and x.view(-1, 1, H, W) on images (a no-op) or on a flat input (un-flattening).
void TestOnnxImport::readsUsersInputConventions()
{
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
        checkAgainstPyTorch(m, name, [&](Reference& ref) {
            const std::size_t plane = ref.inputShape[2] * ref.inputShape[3];
            for (std::size_t k = 0; k < ref.input.size(); ++k) { // the [0, 1] pixel the pipeline gives, normalised as stored
                const std::size_t c = (k / plane) % 3;
                const float pixel = caffe ? ref.input[k] / 255.0f : ref.input[k];
                ref.input[k] = (pixel - m.normalization.mean[c]) / m.normalization.stddev[c];
            }
        });
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
        checkAgainstPyTorch(m, name, [&](Reference& ref) {
            const std::size_t plane = ref.inputShape[2] * ref.inputShape[3];
            for (std::size_t k = 0; k < ref.input.size(); ++k) {
                const std::size_t c = (k / plane) % 3;
                ref.input[k] = (ref.input[k] - m.normalization.mean[c]) / m.normalization.stddev[c];
            }
        });
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

// A conv called twice shares its weight in the file; QuantScope reads two layers, and says so.
void TestOnnxImport::sharedWeightsAreNamed()
{
    const fs::path p = kFixtures / "viewinput_op13_fold_dyn.onnx";
    const ExportedModel m = importOnnx(fileBytes(p), p.string());
    std::vector<std::string> convs;
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::Conv2d) convs.push_back(l.name);
    QCOMPARE(convs.size(), std::size_t{2});
    QCOMPARE(convs[0], std::string("conv"));
    QCOMPARE(m.notes.size(), std::size_t{1});
    QVERIFY2(m.notes[0].find("shared by the layers 'conv' and '" + convs[1] + "'") != std::string::npos, m.notes[0].c_str());
}

// A PyTorch export that carries QuantScope's class-name key is still a PyTorch export (it went to
// the reader of QuantScope's own files and failed); QuantScope's own FP32 export still reads back
// when a tool strips its node names (valid ONNX).
void TestOnnxImport::metadataDoesNotMisroute()
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

// A 1x1 Conv on flat features viewed as [N, K, 1, 1] (h.view(N, -1, 1, 1), h[:, :, None, None])
// is a Linear, and a [N, classes, 1, 1] graph output gets a Flatten: the three exports were
// refused ("reshapes [12] images to [N, -1, 1, 1]", Unsqueeze unsupported, "per-image shape
// [10,1,1]"). matchesPyTorch compares their outputs with PyTorch's.
void TestOnnxImport::convHeadsOnFlatFeatures()
{
    for (const char* name : {"convhead_op11_nofold_dyn", "convhead_op13_fold", "unsqueezehead_op11_nofold", "unsqueezehead_op13_fold_dyn"}) {
        const ExportedModel m = importOnnx((kFixtures / (std::string(name) + ".onnx")).string());
        const StoredLayer& head = m.layers.back();
        QVERIFY2(head.kind == LayerKind::Linear && head.name == "head" && head.outFeatures == 10, name);
        QVERIFY2(std::none_of(m.layers.begin(), m.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::Conv2d && l.kernel == 1; }), name);
        QVERIFY2(std::any_of(m.notes.begin(), m.notes.end(), [](const std::string& n) { return n.find("read as a Linear") != std::string::npos; }), name);
    }
    const ExportedModel s = importOnnx((kFixtures / "convscores_op13_fold_dyn.onnx").string());
    QCOMPARE(s.layers.back().kind, LayerKind::Flatten);
    QCOMPARE(s.layers[s.layers.size() - 2].kind, LayerKind::Conv2d);
    QCOMPARE(s.classes, std::size_t{10});
}

QTEST_GUILESS_MAIN(TestOnnxImport)
#include "tst_onnx_import.moc"
