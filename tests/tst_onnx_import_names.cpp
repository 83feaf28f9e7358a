// Layer names of FP32 ONNX imports: the user's PyTorch modules (layer1.conv1, features.0), what a
// top-scope subgraph is (hardswish), a module called twice (a layer a call, named apart from the
// model's other modules), a conv tied to another's weight. Fixtures: tests/onnx_import
// (make_fixtures.py); their outputs against PyTorch's: tst_onnx_import.
#include "io/exported_model.h"
#include "io/onnx_import.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

using namespace quantscope;
namespace fs = std::filesystem;
using namespace onnx_import_fixtures;

class TestOnnxImportNames : public QObject {
    Q_OBJECT

private slots:
    void layerNamesFollowModules();
    void sharedWeightsAreNamed();
};

void TestOnnxImportNames::layerNamesFollowModules()
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
    // A Hardswish written by hand in forward at the top scope (its nodes "/Add", "/Clip", "/Div_1",
    // no module path): named "hardswish" after what it is, not after its last node (tester 9).
    onnx::ModelProto mp = parse(kFixtures / "act_hswishhand_op13_fold.onnx");
    for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
        for (const char* scope : {"/act1/", "/act2/"})
            if (n.name().rfind(scope, 0) == 0) n.set_name("/" + n.name().substr(std::strlen(scope)));
    const ExportedModel top = importOnnx(serialize(mp), "hswish-top.onnx");
    std::vector<std::string> swishes;
    for (const StoredLayer& l : top.layers)
        if (l.kind == LayerKind::Hardswish) swishes.push_back(l.name);
    QCOMPARE(swishes, (std::vector<std::string>{"hardswish", "hardswish_2"}));
    QCOMPARE(layerNames(top).front(), std::string("conv1")); // the others keep their names
}

// A conv called twice shares its weight in the file; QuantScope reads two layers, and says so.
void TestOnnxImportNames::sharedWeightsAreNamed()
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

    // Beside a module of its own named conv_1, which PyTorch scopes "/conv_1" as it does conv's
    // second call: the module is the layer conv_1, the call conv_2 (tester 20: --keep-fp32 conv_1
    // kept the call in FP32 and quantized the module, in silence). The layers' weights say which is
    // which; matchesPyTorch compares the outputs.
    for (const char* name : {"sharedcall_op13_fold_dyn", "sharedcall_op11_nofold"}) {
        const ExportedModel s = importOnnx((kFixtures / (std::string(name) + ".onnx")).string());
        std::map<std::string, std::vector<float>> weights;
        std::vector<std::string> order;
        for (const StoredLayer& l : s.layers)
            if (l.kind == LayerKind::Conv2d) {
                order.push_back(l.name);
                weights[l.name] = l.tensors.at(0).values;
            }
        QCOMPARE(order, (std::vector<std::string>{"stem", "conv", "conv_2", "conv_1"}));
        QVERIFY2(weights["conv_2"] == weights["conv"], name);
        QVERIFY2(weights["conv_1"] != weights["conv"], name);
        QVERIFY2(std::any_of(s.notes.begin(), s.notes.end(),
                             [](const std::string& n) {
                                 return n.find("PyTorch scoped a call of the module 'conv' as 'conv_1', the name of the model's own module 'conv_1': "
                                               "the call is the layer 'conv_2' here") != std::string::npos;
                             }),
                 name);
    }
    // A conv tied to another's weight (b.weight = a.weight) has no weight of its own in the file:
    // it keeps its module's name, b.
    const ExportedModel tied = importOnnx((kFixtures / "tiedconv_op13_fold_dyn.onnx").string());
    std::vector<std::string> convs2;
    for (const StoredLayer& l : tied.layers)
        if (l.kind == LayerKind::Conv2d) convs2.push_back(l.name);
    QCOMPARE(convs2, (std::vector<std::string>{"stem", "a", "b"}));
}

QTEST_GUILESS_MAIN(TestOnnxImportNames)
#include "tst_onnx_import_names.moc"
