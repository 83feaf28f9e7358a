// ONNX local functions: torch.onnx.export(..., export_modules_as_functions=True) writes every
// module as a FunctionProto and the graph as one call of the model's. Real exports of that style
// (tests/onnx_import/*_fn, make_fixtures.py, torch 1.13, opsets 15-17) import as the same layers
// as the plain export of the same module and compute PyTorch's outputs; broken function tables
// (a recursive function, a call with more inputs than its function, a call tree that multiplies)
// are FormatErrors naming the file and the call, never a hang or a crash.
#include "io/exported_model.h"
#include "io/onnx_import.h"
#include "io/onnx_inline.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <QtTest>

using namespace quantscope;
using namespace onnx_import_fixtures;

namespace {

std::vector<LayerKind> kinds(const ExportedModel& m)
{
    std::vector<LayerKind> k;
    for (const StoredLayer& l : m.layers) k.push_back(l.kind);
    return k;
}

ExportedModel import(const std::string& name, OnnxImportInfo* info = nullptr)
{
    const fs::path p = kFixtures / (name + ".onnx");
    return importOnnx(fileBytes(p), p.string(), info);
}

// A function `name` whose one node calls `callee` (itself for a recursion), called by the graph.
onnx::FunctionProto* addFunction(onnx::ModelProto& mp, const std::string& name, const std::string& callee, int calls = 1)
{
    onnx::FunctionProto* f = mp.add_functions();
    f->set_domain("test");
    f->set_name(name);
    f->add_input("x");
    f->add_output("y");
    std::string in = "x";
    for (int i = 0; i < calls; ++i) {
        onnx::NodeProto* n = f->add_node();
        n->set_domain("test");
        n->set_op_type(callee);
        n->add_input(in);
        in = i + 1 == calls ? "y" : "t" + std::to_string(i);
        n->add_output(in);
    }
    return f;
}

} // namespace

class TestOnnxFunctions : public QObject {
    Q_OBJECT

private slots:
    void matchesPlainExport_data()
    {
        QTest::addColumn<QString>("name");
        QTest::addColumn<QString>("plain"); // the same module exported without functions
        QTest::newRow("residual blocks, opset 15") << "residual_op15_fold_fn" << "residual_op13_fold_dyn";
        QTest::newRow("depthwise block, opset 17") << "mobile_op17_nofold_fn" << "mobile_op17_nofold_dyn";
        QTest::newRow("squeeze-and-excitation, opset 15") << "se_conv_sigmoid_op15_nofold_fn" << "se_conv_sigmoid_op13_fold_dyn";
        QTest::newRow("SiLU subgraph in a function, opset 16") << "act_silu_op16_fold_fn" << "act_silu_op13_fold_dyn";
        QTest::newRow("only the blocks as functions, opset 15") << "residual_op15_fold_fnblock" << "residual_op13_fold_dyn";
    }
    void matchesPlainExport()
    {
        QFETCH(QString, name);
        QFETCH(QString, plain);
        OnnxImportInfo info;
        const ExportedModel m = import(name.toStdString(), &info);
        QVERIFY(info.inlinedCalls > 1);
        QVERIFY(std::any_of(m.notes.begin(), m.notes.end(),
                            [](const std::string& n) { return n.find("export_modules_as_functions") != std::string::npos; }));
        const ExportedModel p = import(plain.toStdString());
        QVERIFY(kinds(m) == kinds(p));
        QCOMPARE(m.numParams(), p.numParams());
        const double dev = maxDeviation(m, loadReference(kFixtures / (name.toStdString() + ".json")));
        qInfo("%s: %d calls expanded, %zu layers, max |QuantScope - PyTorch| = %.3g", qPrintable(name), info.inlinedCalls, m.layers.size(), dev);
        QVERIFY2(dev <= kOutputTol, qPrintable(QString::number(dev)));
        // Layers are named after their weights where the exporter kept them ("stem.weight").
        if (name.startsWith("mobile")) QVERIFY(contains(layerNames(m), "stem"));
        // A block called from the main graph ("/layer1/Block") names its layers by that module path
        // (they were "Conv_0", "Conv_0_2", told apart by a counter): conv, ReLU, conv, Add, ReLU in
        // layer1; and the strided block's shortcut conv too in layer2.
        if (name.endsWith("fnblock")) {
            const auto under = [&](const std::string& prefix) {
                const std::vector<std::string> names = layerNames(m);
                return std::count_if(names.begin(), names.end(), [&](const std::string& n) { return n.rfind(prefix, 0) == 0; });
            };
            QCOMPARE(under("layer1."), 5);
            QCOMPARE(under("layer2."), 6);
        }
    }

    void brokenFunctionTables_data()
    {
        QTest::addColumn<int>("kind");
        QTest::addColumn<QString>("expected");
        QTest::newRow("recursive") << 0 << "nest deeper than 32";
        QTest::newRow("more inputs than the function") << 1 << "passes 3 inputs and 1 outputs to a function of 1 inputs";
        QTest::newRow("a call tree that multiplies") << 2 << "passes 131072 nodes";
        QTest::newRow("a function defined twice") << 3 << "test::Linear is defined twice";
    }
    void brokenFunctionTables()
    {
        QFETCH(int, kind);
        QFETCH(QString, expected);
        onnx::ModelProto mp = parse(kFixtures / "seqview_op13_fold.onnx");
        onnx::NodeProto* gemm = findNode(mp, "Gemm");
        if (kind == 0) {
            addFunction(mp, "Loop", "Loop"); // calls itself
            gemm->set_domain("test");
            gemm->set_op_type("Loop");
            gemm->mutable_input()->DeleteSubrange(1, 2);
        } else if (kind == 1) {
            addFunction(mp, "Linear", "Relu");
            mp.mutable_functions(0)->mutable_node(0)->set_domain("");
            gemm->set_domain("test");
            gemm->set_op_type("Linear");
        } else if (kind == 3) {
            addFunction(mp, "Linear", "Relu");
            addFunction(mp, "Linear", "Sigmoid");
            gemm->set_domain("test");
            gemm->set_op_type("Linear");
        } else {
            // f0 calls f1 four times, f1 calls f2 four times ... : 4^12 Relu nodes.
            for (int d = 0; d < 12; ++d) addFunction(mp, "f" + std::to_string(d), "f" + std::to_string(d + 1), 4);
            addFunction(mp, "f12", "Relu");
            mp.mutable_functions(12)->mutable_node(0)->set_domain("");
            gemm->set_domain("test");
            gemm->set_op_type("f0");
            gemm->mutable_input()->DeleteSubrange(1, 2);
        }
        const std::vector<std::uint8_t> bytes = serialize(mp);
        try {
            importOnnx(bytes, "broken.onnx");
            QFAIL("accepted");
        } catch (const FormatError& e) {
            QVERIFY2(QString(e.what()).contains("broken.onnx") && QString(e.what()).contains(expected), e.what());
        }
    }
};

QTEST_APPLESS_MAIN(TestOnnxFunctions)
#include "tst_onnx_functions.moc"
