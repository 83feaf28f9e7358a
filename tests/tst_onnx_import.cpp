// FP32 ONNX import: real torch.onnx.export files (tests/onnx_import, made by make_fixtures.py with
// Debian's torch 1.13, opsets 9/10/11/13/17, with and without constant folding, static and dynamic
// batch) import and their forward matches PyTorch's output within 1e-4; layer names:
// tst_onnx_import_names. What a graph does with its input (normalisation, 0..255 pixels, flat inputs) and
// QuantScope's own FP32 export: tst_onnx_import_input. Broken files: tst_onnx_import_errors.
// QS_ONNX_REF_DIR=DIR additionally checks DIR/{seed-cnn,resnet8,mobilenet-tiny}.{onnx,json}
// (pytorch_ref.py exports, npz_to_json.py) on all their images.
#include "analysis/model_summary.h"
#include "data/dataset.h"
#include "io/exported_model.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "data/normalization.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <nlohmann/json.hpp>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

using namespace quantscope;
namespace fs = std::filesystem;
using namespace onnx_import_fixtures;

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
    void poolPaddingImports();
    void foldsWhatExportersWrite();
    void biasFreeLinearHasNoBias();
    void referenceModels();
    void convHeadsOnFlatFeatures();
    void addedParametersAreCounted();
};

// The PyTorch exports (torch 1.13, opsets 9 to 17) whose outputs matchesPyTorch checks.
static const std::vector<const char*>& pytorchFixtures()
{
    static const std::vector<const char*> names = {"elufirst_op13_nofold_dyn", "sharedcall_op13_fold_dyn", "sharedcall_op11_nofold", "tiedconv_op13_fold_dyn", "seqview_op11_nofold_dyn", "seqview_op13_fold", "flatten_bn_op17_nofold", "flatten_bn_op13_fold_dyn",
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
                          "dense_concat_op10_nofold", "poolgeom_max_op10_fold",
                          // opset 9's MaxPool2d(ceil_mode=True): larger end pads, read as ceil mode (tester 15)
                          "poolgeom_max_op9_nofold",
                          // nn.GroupNorm and nn.InstanceNorm2d (InstanceNormalization): GroupNorm layers
                          "groupnorm_op13_fold_dyn", "groupnorm_op11_nofold", "groupnorm_one_op17_fold",
                          // grayscale to colour: x.expand(-1, 3, -1, -1), x.repeat(1, k, 1, 1): Concat of copies
                          "gray2rgb_expand_op13_fold_dyn", "gray2rgb_expand_op11_nofold", "gray2rgb_repeat_op17_nofold_dyn",
                          "gray2rgb_tilemid_op13_fold",
                          // nn.LayerNorm over all of each image (LayerNormalization, or its subgraph below 17): GroupNorm(1, C)
                          "layernorm_op17_fold_dyn", "layernorm_op13_nofold", "layernorm_op11_fold", "layernorm_maps_op13_fold_dyn",
                          "layernorm_maps_op17_nofold", "constinside_op13_fold_dyn", "constinside_op11_nofold", "constinside_op17_fold",
                          "subbranches_op13_fold_dyn", "subbranches_op11_nofold", "subbranches_op17_fold", "powsquare_op13_fold_dyn",
                          "powsquare_op11_nofold",
                          // constants on flat features folded back into the layers before them
                          "flatconst_op13_fold_dyn", "flatconst_op11_nofold", "flatconst_op17_fold",
                          // weights computed from parameters (StdConv2d, weight_norm), a x[:, :, 0, 0] head
                          "computedw_op13_nofold_dyn", "computedw_op11_nofold", "computedw_op17_nofold", "computedw_op13_fold",
                          // x[:, :, ::2, ::2] and zeros padded to the channels (a CIFAR ResNet's option A shortcut)
                          "optiona_op13_fold_dyn", "optiona_op11_nofold", "optiona_op17_fold",
                          // x[..., 1::2, ::2] (a space-to-depth stem) and an offset crop x[:, :, 1:, 2:]
                          "spacetodepth_op13_fold_dyn", "spacetodepth_op11_nofold",
                          // ConvNeXt: LayerNorm over each pixel's channels (permuted, or by hand over axis 1),
                          // Linear layers on channels-last maps, layer scales: LayerNorm2d and 1x1 Convs
                          "convnext_tv_op13_fold_dyn", "convnext_tv_op17_fold", "convnext_cf_op13_nofold", "convnext_cf_op17_fold_dyn",
                          // CBAM: channel gates, and spatial gates pooled over the channels (mean and max, keepdim or unsqueezed)
                          "cbam_op13_fold_dyn", "cbam_op11_nofold", "cbam_op17_fold",
                          // nn.LayerNorm(elementwise_affine=False): at opset 17 a LayerNormalization without Scale and B
                          "lnnoaffine_op17_fold", "lnnoaffine_op13_fold",
                          // the channels_first LayerNorm as d * torch.rsqrt((d * d).mean(1) + eps): a LayerNorm2d
                          "lnrsqrt_op13_fold_dyn", "lnrsqrt_op11_nofold", "lnvar_op13_fold", "lnvar_op17_nofold_dyn",
                          // a Keras-style head: channels-last features flattened into x @ W (MatMul) + b
                          "kerasmatmul_op13_fold_dyn",
                          // constants on flat features after a Tanh, SiLU, ... folded into the Linears that read them
                          "gainslinear_op13_fold_dyn", "gainslinear_op11_nofold", "gainslinear_op17_fold",
                          // x[:, [2, 1, 0]] and lists of channels or features: 1x1 Convs and Linears of one-hot weights
                          "gatherch_op13_fold_dyn", "gatherch_op11_nofold",
                          // GCNet's context add: a map plus a [N, C, 1, 1] gate of its channels, both orders
                          "ctxadd_op13_fold_dyn", "ctxadd_op11_nofold", "ctxadd_op17_fold",
                          // x[:, i] planes: per-channel normalisation by torch.stack, a plane put back by unsqueeze + cat
                          "planes_op13_fold_dyn", "planes_op11_nofold", "planes_op17_fold", "planesunbind_op13_fold_dyn",
                          "planesunbind_op11_nofold",
                          "pad_op13_fold_dyn", "pad_op11_nofold", "pad_op17_fold"};
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
    names.insert(names.end(), {"poolgeom_avg_op13_fold_dyn", "poolgeom_avg_op17_fold", "avgceilpad_op13_fold"});
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
// nn.GELU(approximate='tanh'), and ONNX's Mish (opset 18) in place of nn.Mish's Softplus, Tanh,
// Mul: each /actN/ module's nodes replaced by one node read as the same layer and give PyTorch's
// outputs.
void TestOnnxImport::geluOperatorIsGelu_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<QString>("approximate");
    QTest::newRow("erf") << "act_gelu_op13_fold_dyn" << "none";
    QTest::newRow("tanh") << "act_gelutanh_op17_fold_dyn" << "tanh";
    QTest::newRow("mish") << "act_mish_op17_nofold" << "mish"; // "approximate" names the Mish operator here
}

void TestOnnxImport::geluOperatorIsGelu()
{
    QFETCH(QString, name);
    QFETCH(QString, approximate);
    const fs::path onnxPath = kFixtures / (name.toStdString() + ".onnx");
    const Reference ref = loadReference(kFixtures / (name.toStdString() + ".json"));
    onnx::ModelProto mp = parse(onnxPath);
    const bool mish = approximate == "mish";
    for (auto& o : *mp.mutable_opset_import())
        if (o.domain().empty() || o.domain() == "ai.onnx") o.set_version(mish ? 18 : 20);
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
        gelu.set_op_type(mish ? "Mish" : "Gelu");
        gelu.set_name(prefix + (mish ? "/Mish" : "/Gelu"));
        gelu.add_input(*read.begin());
        gelu.add_output(g->node(nodes.back()).output(0));
        if (!mish) {
            onnx::AttributeProto* a = gelu.add_attribute();
            a->set_name("approximate");
            a->set_type(onnx::AttributeProto::STRING);
            a->set_s(approximate.toStdString());
        }
        *g->mutable_node(nodes.back()) = gelu;
        drop.insert(nodes.begin(), nodes.end() - 1);
    }
    onnx::GraphProto kept = *g;
    kept.clear_node();
    for (int k = 0; k < g->node_size(); ++k)
        if (!drop.count(k)) *kept.add_node() = g->node(k);
    *g = kept;
    const ExportedModel m = importOnnx(serialize(mp), onnxPath.string());
    const LayerKind want = mish ? LayerKind::Mish : approximate == "none" ? LayerKind::GELU : LayerKind::GELUTanh;
    const auto geluLayers = std::count_if(m.layers.begin(), m.layers.end(), [&](const StoredLayer& l) { return l.kind == want; });
    QCOMPARE(static_cast<std::size_t>(geluLayers), modules.size());
    const double dev = maxDeviation(m, ref);
    QVERIFY2(dev <= kOutputTol, qPrintable(QString("deviation %1").arg(dev)));
    if (mish) return;
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
    // ...and do not say how it was normalised, but for those that normalise their planes
    // themselves (x[:, i] or x.unbind(1), then (p - m[i]) / s[i]: tester 15), which take [0, 1]
    // pixels as they are: the dataset's statistics in front would normalise them twice.
    const bool normalisesItself = name.startsWith("planes");
    QCOMPARE(m.normalizationKnown, normalisesItself);
    if (normalisesItself)
        QVERIFY(std::any_of(m.notes.begin(), m.notes.end(),
                            [](const std::string& n) { return n.find("normalises its input itself") != std::string::npos; }));
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

// Layers the reading adds for operations the file computes without parameters (the option A
// shortcut's strided 1x1 Conv, a channel pad's identity Conv, the strided depthwise Conv of
// x[:, :, ::2, ::3]) are counted apart, so the summary can give PyTorch's own count: 5,190 is
// sum(p.numel() for p in OptionAShortcut().parameters()) (make_fixtures.py), whose two
// bias-free convolutions the exporter folded BatchNorm into (one bias per channel for gamma and
// beta). A model without such layers adds none.
void TestOnnxImport::addedParametersAreCounted()
{
    const ExportedModel a = importOnnx((kFixtures / "optiona_op11_nofold.onnx").string());
    QCOMPARE(a.importAddedParams, std::size_t{8 * 16 + 16 * 19 + 19});
    const ModelSummary s = summarizeExported(a, "optiona_op11_nofold.onnx");
    QCOMPARE(s.importAddedParams, a.importAddedParams);
    QCOMPARE(s.params - s.importAddedParams + s.exporterFoldedChannels, std::size_t{5190});
    const ExportedModel r = importOnnx((kFixtures / "residual_op11_nofold.onnx").string());
    QCOMPARE(r.importAddedParams, std::size_t{0});
    const ExportedModel c = importOnnx((kFixtures / "subbranches_op11_nofold.onnx").string());
    QVERIFY(c.importAddedParams > 0); // the Sub's depthwise Conv of weight -1
}
