// FP32 ONNX import of broken graphs (as tst_onnx_import_errors, made from the PyTorch exports in
// tests/onnx_import): padding, pooling and convolution windows, strided slices, and opset 18's
// axes inputs of Pad and the reductions. Each gets a typed error (FormatError for a malformed
// file, ConfigError for valid ONNX QuantScope cannot represent) naming the file and the node.
#include "io/onnx_import.h"

#include "onnx_broken_files.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <string>
#include <vector>

using namespace quantscope;
using namespace onnx_import_fixtures;

class TestOnnxImportWindowErrors : public QObject {
    Q_OBJECT

private slots:
    void badInput_data();
    void badInput();
};

void TestOnnxImportWindowErrors::badInput_data()
{
    addBrokenFileColumns();
    const auto row = addBrokenFileRow;
    // x[:, :, a::2] is read to the end only (tst_onnx_import's optiona and spacetodepth fixtures),
    // and zeros padded to the channels alone (the CIFAR option A shortcut): x[:, :, :5:2] is refused,
    // and so is a reflect padding of the channels.
    row("a strided Slice that stops before the end", "optiona_op13_fold_dyn",
        [](onnx::ModelProto& mp) { setConstantNode(mp, findNode(mp, "Slice")->input(2), 5); },
        "ConfigError", "Slice node '/Slice': slices axis 2 (H or W) of [8,9,9] images to [0, 5) with step 2");
    row("a reflect padding of the channels", "optiona_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            for (onnx::AttributeProto& a : *findNode(mp, "Pad")->mutable_attribute())
                if (a.name() == "mode") a.set_s("reflect");
        },
        "ConfigError", "Pad node '/Pad': pads the channels with mode reflect");
    // torch's opset-9 export of MaxPool2d(ceil_mode=True) is larger end pads (no ceil_mode before
    // opset 10), read as ceil mode where the output sizes agree (tst_onnx_import matchesPyTorch);
    // end pads that give another size are refused with the export that works.
    row("opset 9 end pads that are not ceil_mode's", "poolgeom_max_op9_nofold",
        [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.name() == "/p2/MaxPool")
                    for (onnx::AttributeProto& a : *n.mutable_attribute())
                        if (a.name() == "pads") {
                            a.clear_ints();
                            for (const std::int64_t v : {1, 1, 3, 3}) a.add_ints(v);
                        }
        },
        "ConfigError",
        "opset 9 has no ceil_mode, so torch.onnx.export writes ceil_mode=True as larger end pads: export with opset_version 10");
    // Pad layers (tst_pad): zeros, reflect and edge; wrap (opset 19) is refused, and so is a reflect
    // pad as large as its map (PyTorch refuses it too).
    row("Pad mode wrap", "pad_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            for (onnx::AttributeProto& a : *findNode(mp, "Pad")->mutable_attribute())
                if (a.name() == "mode") a.set_s("wrap");
        },
        "ConfigError", "mode = wrap; QuantScope reads zero (constant 0), reflect and edge (replicate) padding");
    row("reflect Pad as large as its map", "pad_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* last = nullptr;
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Pad") last = &n;
            onnx::TensorProto* t = mp.mutable_graph()->add_initializer();
            t->set_name("padsbig");
            t->set_data_type(onnx::TensorProto::INT64);
            t->add_dims(8);
            for (std::int64_t v : {0, 0, 0, 0, 0, 0, 5, 5}) t->add_int64_data(v);
            last->set_input(1, "padsbig");
        },
        "FormatError", "reflect padding [0, 0, 0, 0, 0, 0, 5, 5] of a map of shape [6,5,5] needs pads smaller than the map");
    // Opset 18's Pad axes input: pads for the listed axes only (read: tst_onnx_import
    // matchesPyTorchAtNewerOpsets); malformed ones are refused by node.
    const auto padAxes = [](std::vector<std::int64_t> pads, std::vector<std::int64_t> axes) {
        return [pads, axes](onnx::ModelProto& mp) {
            mp.mutable_opset_import(0)->set_version(18);
            onnx::NodeProto* pad = findNode(mp, "Pad");
            onnx::GraphProto* g = mp.mutable_graph();
            for (const auto& [name, values] : {std::pair{std::string("pads18"), pads}, std::pair{std::string("axes18"), axes}}) {
                onnx::TensorProto* t = g->add_initializer();
                t->set_name(name);
                t->set_data_type(onnx::TensorProto::INT64);
                t->add_dims(static_cast<std::int64_t>(values.size()));
                for (std::int64_t v : values) t->add_int64_data(v);
            }
            pad->set_input(1, "pads18");
            if (pad->input_size() < 3) pad->add_input("");
            pad->add_input("axes18");
        };
    };
    row("opset 18 Pad axis named twice", "poolpad_op13_fold_dyn", padAxes({1, 1, 1, 1}, {2, 2}), "FormatError",
        "Pad node '/avgpool/Pad': axes [2, 2] name an axis twice");
    row("opset 18 Pad axis past rank 4", "poolpad_op13_fold_dyn", padAxes({1, 1, 1, 1}, {2, 4}), "FormatError",
        "axes [2, 4]: axis 4 is outside rank 4");
    row("opset 18 Pad pads not two per axis", "poolpad_op13_fold_dyn", padAxes({1, 1, 1}, {2, 3}), "FormatError",
        "pads [1, 1, 1] do not give a begin and an end for each of the axes [2, 3]");
    row("opset 18 Pad of the batch axis", "poolpad_op13_fold_dyn", padAxes({1, 1}, {-4}), "ConfigError", "pads the batch axis");
    // Of the channels (read as a 1x1 Conv with identity weights), with H and W in the same Pad.
    row("opset 18 Pad of the channels and W", "poolpad_op13_fold_dyn", padAxes({1, 1, 1, 1}, {-3, -1}), "ConfigError",
        "pads the channels and H or W in one Pad");
    // Opset 18 moved ReduceMean's axes into an input: read when constant (tst_onnx_import
    // matchesPyTorchAtNewerOpsets), refused by name when computed from the images or malformed.
    const auto reduceMeanAxesInput = [](onnx::ModelProto& mp, const std::string& axes) {
        mp.mutable_opset_import(0)->set_version(18);
        onnx::NodeProto* r = findNode(mp, "ReduceMean");
        auto* attrs = r->mutable_attribute();
        for (int k = 0; k < attrs->size(); ++k)
            if (attrs->Get(k).name() == "axes") attrs->DeleteSubrange(k--, 1);
        r->add_input(axes);
    };
    row("opset 18 reduction over computed axes", "mobile_op17_nofold_dyn",
        [reduceMeanAxesInput](onnx::ModelProto& mp) { reduceMeanAxesInput(mp, mp.graph().input(0).name()); }, "ConfigError",
        "ReduceMean node '/ReduceMean': its axes ('input') are computed in the graph, not a constant");
    row("opset 18 reduction over float axes", "mobile_op17_nofold_dyn",
        [reduceMeanAxesInput](onnx::ModelProto& mp) {
            onnx::TensorProto* t = mp.mutable_graph()->add_initializer();
            t->set_name("float_axes");
            t->set_data_type(onnx::TensorProto::FLOAT);
            t->add_dims(2);
            t->add_float_data(2.0f);
            t->add_float_data(3.0f);
            reduceMeanAxesInput(mp, "float_axes");
        },
        "FormatError", "its axes 'float_axes' are not a list of integers");
    row("auto_pad VALID with pads", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* conv = findNode(mp, "Conv");
            setInts(conv, "pads", std::vector<std::int64_t>{1, 1, 1, 1});
            onnx::AttributeProto* a = conv->add_attribute();
            a->set_name("auto_pad");
            a->set_type(onnx::AttributeProto::STRING);
            a->set_s("VALID");
        },
        "FormatError", "both auto_pad = VALID (no padding) and explicit pads");
    // Any window is read (tst_conv_geometry); what cannot be is refused by node.
    row("dilation out of range", "seqview_op13_fold", [](onnx::ModelProto& mp) { setInts(findNode(mp, "Conv"), "dilations", {1, 100}); },
        "FormatError", "Conv node '/conv1/Conv': attribute dilations = [1, 100] is out of range (1 to 64)");
    row("dilation beyond the input", "seqview_op13_fold", [](onnx::ModelProto& mp) { setInts(findNode(mp, "Conv"), "dilations", {6, 1}); },
        "FormatError", "Conv node '/conv1/Conv': the window (k 3x3 s 1 p 0,0,0,0 d 6x1) is larger than its padded input [1,12,12]");
    row("pads out of range", "seqview_op13_fold", [](onnx::ModelProto& mp) { setInts(findNode(mp, "Conv"), "pads", std::vector<std::int64_t>{0, 0, 1, 100}); },
        "FormatError", "pads [0, 0, 1, 100] are out of range");
    // count_include_pad = 0 is read (tst_pool_geometry); not after a zero Pad whose zeros count.
    row("avgpool uncounted pads after a zero Pad", "poolpad_op13_fold_dyn",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "AveragePool"), "pads", std::vector<std::int64_t>{1, 1, 1, 1}); }, "ConfigError",
        "AveragePool node '/avgpool/AveragePool': attribute pads = [1, 1, 1, 1] with count_include_pad = 0 after a zero Pad");
    // ceil_mode after a zero Pad where ONNX keeps a window starting in the Pad's zeros and PyTorch drops it.
    row("avgpool ceil_mode after a zero Pad", "poolpad_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* pool = findNode(mp, "AveragePool");
            setInts(pool, "kernel_shape", std::vector<std::int64_t>{2, 2});
            setInts(pool, "strides", std::vector<std::int64_t>{7, 7});
            for (onnx::AttributeProto& a : *pool->mutable_attribute())
                if (a.name() == "ceil_mode") a.set_i(1);
        },
        "ConfigError", "AveragePool node '/avgpool/AveragePool': attribute ceil_mode = 1 after a zero Pad: ONNX makes a 2x2 output");
    // (AveragePool has dilations since opset 19; at opset 13 the attribute is refused as not ONNX's)
    row("avgpool dilations", "poolpad_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            mp.mutable_opset_import(0)->set_version(19);
            setInts(findNode(mp, "AveragePool"), "dilations", std::vector<std::int64_t>{1, 2});
        },
        "ConfigError",
        "AveragePool node '/avgpool/AveragePool': attribute dilations = [1, 2]: QuantScope's pooling has no dilation");
    row("maxpool padding over half the kernel", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "MaxPool"), "pads", std::vector<std::int64_t>{2, 2, 2, 2}); }, "ConfigError",
        "more than half the kernel");
    row("stride 0", "seqview_op13_fold", [](onnx::ModelProto& mp) { setInts(findNode(mp, "Conv"), "strides", {1, 0}); },
        "FormatError", "attribute strides = [1, 0] is out of range");
}

void TestOnnxImportWindowErrors::badInput() { checkBrokenFile(); }

QTEST_GUILESS_MAIN(TestOnnxImportWindowErrors)
#include "tst_onnx_import_window_errors.moc"
