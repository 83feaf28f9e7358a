// FP32 ONNX import of broken graphs, made here from the PyTorch exports in tests/onnx_import
// through libonnx's protobuf classes: operators QuantScope does not read, shapes that do not
// chain, joins and constants it cannot represent, BatchNorm with batch statistics (windows,
// padding and opset 18's axes inputs: tst_onnx_import_window_errors). Each
// gets a typed error (FormatError for a malformed file, ConfigError for valid ONNX QuantScope
// cannot represent) naming the file and, for a node, its op type and name. What a file declares
// (IR version, opset, dimensions, QuantScope's own metadata, half precision) and truncated files
// are tst_onnx_file_errors'.
#include "io/onnx_import.h"

#include "onnx_broken_files.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

using namespace quantscope;
using namespace onnx_import_fixtures;

class TestOnnxImportErrors : public QObject {
    Q_OBJECT

private slots:
    void badInput_data();
    void badInput();
    void trainingModeDropoutOfRatio0();
};

namespace {

// A Dropout in training mode (opset 13: ratio and training_mode inputs) after the first ReLU, as
// torch.onnx.export writes nn.Dropout(p) under TrainingMode.TRAINING or PRESERVE.
void trainingDropoutAfterRelu(onnx::ModelProto& mp, float ratio)
{
    onnx::GraphProto* g = mp.mutable_graph();
    const std::string relu = findNode(mp, "Relu")->output(0), dropped = relu + "_dropout";
    for (onnx::NodeProto& n : *g->mutable_node())
        for (int i = 0; i < n.input_size(); ++i)
            if (n.input(i) == relu) n.set_input(i, dropped);
    onnx::TensorProto* r = g->add_initializer();
    r->set_name("dropout_ratio");
    r->set_data_type(onnx::TensorProto::FLOAT);
    r->add_float_data(ratio);
    onnx::TensorProto* t = g->add_initializer();
    t->set_name("dropout_training");
    t->set_data_type(onnx::TensorProto::BOOL);
    t->add_int32_data(1);
    onnx::NodeProto* d = g->add_node();
    d->set_op_type("Dropout");
    d->set_name("/dropout/Dropout");
    d->add_input(relu);
    d->add_input("dropout_ratio");
    d->add_input("dropout_training");
    d->add_output(dropped);
}

// A BatchNorm2d normalising with the batch's statistics, as track_running_stats=False exports it
// (simplified: the batch mean, and the mean of squares): its mean and var inputs are computed.
void batchStatistics(onnx::ModelProto& mp)
{
    onnx::GraphProto* g = mp.mutable_graph();
    onnx::NodeProto* bn = findNode(mp, "BatchNormalization");
    const std::string x = bn->input(0);
    bn->set_input(3, "batch_mean");
    bn->set_input(4, "batch_var");
    auto add = [&](const char* op, std::vector<std::string> in, const char* out) {
        onnx::NodeProto* n = g->add_node();
        n->set_op_type(op);
        n->set_name(std::string("/bn/") + op + "_" + out);
        for (const std::string& i : in) n->add_input(i);
        n->add_output(out);
        if (std::string(op) == "ReduceMean") {
            setInts(n, "axes", {0, 2, 3});
            onnx::AttributeProto* a = n->add_attribute();
            a->set_name("keepdims");
            a->set_type(onnx::AttributeProto::INT);
            a->set_i(0);
        }
    };
    add("ReduceMean", {x}, "batch_mean");
    add("Mul", {x, x}, "batch_square");
    add("ReduceMean", {"batch_square"}, "batch_var");
}

} // namespace
void TestOnnxImportErrors::badInput_data()
{
    addBrokenFileColumns();
    const auto row = addBrokenFileRow;
    row("unsupported operator", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Shrink"); },
        "ConfigError", "Shrink node '/Relu'");
    // An attribute given twice (onnx.checker: "appeared multiple times") is a damaged node: reading
    // the first of two values was a silent choice (tester 8: a Conv's group 1 and group 3).
    // A fixed-batch export (Reshape to [1, -1]) whose input declares another batch (tester 8: 2^40):
    // the Reshape is refused, and the message says its first axis is not the declared batch.
    row("fixed-batch Reshape under another declared batch", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_value(
                std::int64_t{1} << 40);
        },
        "ConfigError", "reshapes [4,5,5] images to [3, -1]; its first axis, 3, is not the batch the graph's input declares (1099511627776)");
    row("Conv with its group attribute twice", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* n = findNode(mp, "Conv");
            onnx::AttributeProto* a = n->add_attribute();
            a->set_name("group");
            a->set_type(onnx::AttributeProto::INT);
            a->set_i(1);
            a = n->add_attribute();
            a->set_name("group");
            a->set_type(onnx::AttributeProto::INT);
            a->set_i(3);
        },
        "FormatError", "has the attribute 'group' twice (a damaged file)");
    // Every unsupported operator type at once, with counts.
    row("several unsupported operators", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            int k = 0;
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Relu") n.set_op_type(k++ == 0 ? "Shrink" : "ThresholdedRelu");
        },
        "ConfigError", "also uses the unsupported ThresholdedRelu (");
    // HardSigmoid is read as PyTorch's Hardsigmoid (alpha 1/6, beta 1/2) only; ONNX's default alpha
    // 0.2 (Keras' hard sigmoid) is refused by name, and so is a HardSigmoid + Mul (Hardswish) with it.
    row("HardSigmoid with alpha 0.2", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* n = findNode(mp, "Relu");
            n->set_op_type("HardSigmoid");
            onnx::AttributeProto* a = n->add_attribute();
            a->set_name("alpha");
            a->set_type(onnx::AttributeProto::FLOAT);
            a->set_f(0.2f);
        },
        "ConfigError", "HardSigmoid node '/Relu': alpha = 0.2, beta = 0.5: QuantScope's Hardsigmoid is PyTorch's relu6(x + 3) / 6");
    // Clip's bounds (opset 9's attributes) become a Hardtanh's; bounds no clamp can have are refused.
    const auto setClipMin = [](onnx::ModelProto& mp, float v) {
        for (onnx::AttributeProto& a : *findNode(mp, "Clip")->mutable_attribute())
            if (a.name() == "min") a.set_f(v);
    };
    row("Clip whose min is above its max", "act_hardtanh_op9_nofold", [=](onnx::ModelProto& mp) { setClipMin(mp, 3.0f); },
        "ConfigError", "Clip node '/act1/Clip': min_val 3 is not below max_val 2");
    row("Clip with a NaN bound", "act_hardtanh_op9_nofold", [=](onnx::ModelProto& mp) { setClipMin(mp, std::nanf("")); },
        "ConfigError", "Clip node '/act1/Clip': a bound is NaN");
    // Maps permuted to channels-last are read only flattened into a Linear (kerasflatten_* in
    // tst_onnx_import_input): a softmax over the channels-last axis is refused by name, and so is
    // another Transpose of them.
    row("softmax over channels-last maps", "kerasflatten_softmax_op13_fold", [](onnx::ModelProto&) {},
        "ConfigError", "Softmax node '/Softmax': reads '/Transpose_output_0', [5,4,3] maps permuted to channels-last (x.permute(0, 2, 3, 1)); QuantScope reads such maps flattened");
    row("channels-last maps permuted again", "kerasflatten_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* t = findNode(mp, "Transpose");
            onnx::NodeProto* again = mp.mutable_graph()->add_node();
            *again = *t;
            again->set_name("/again");
            again->set_input(0, t->output(0));
            again->set_output(0, "again_out");
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Flatten") n.set_input(0, "again_out");
        },
        "ConfigError", "Transpose node '/again': perm = [0, 2, 3, 1] on maps permuted to channels-last; QuantScope reads only perm [0, 3, 1, 2] there");
    // uint8 pixels are read through a Cast to float32 only (bytes_* in tst_onnx_import_input).
    row("uint8 input read without a Cast", "bytes_raw_op17_fold",
        [](onnx::ModelProto& mp) { findNode(mp, "Conv")->set_input(0, mp.graph().input(0).name()); },
        "ConfigError", "Conv node '/conv/Conv': reads the uint8 input 'input' as it is; QuantScope reads uint8 pixels only through a Cast");
    row("uint8 input cast to int32", "bytes_raw_op17_fold",
        [](onnx::ModelProto& mp) { findNode(mp, "Cast")->mutable_attribute(0)->set_i(onnx::TensorProto::INT32); },
        "ConfigError", "Cast node '/Cast': reads the uint8 input 'input' as it is");
    // An Erf that is no part of GELU's subgraph.
    row("Erf outside GELU", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Erf"); },
        "ConfigError", "Erf node '/Relu': Erf is read only as part of GELU");
    row("an input without a shape", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape(); },
        "ConfigError", "declares no shape");
    // log(softmax(x)) written in forward: the Log is named with the export that works.
    // Operators QuantScope has no layer for name the PyTorch modules that export as them.
    // nn.LayerNorm is read over all of each image's values (layernorm_* fixtures), one weight per channel.
    row("LayerNorm over the last axis of maps", "layernorm_maps_op17_nofold", [](onnx::ModelProto& mp) {
            onnx::NodeProto* n = findNode(mp, "LayerNormalization");
            for (onnx::AttributeProto& a : *n->mutable_attribute())
                if (a.name() == "axis") a.set_i(-1);
        },
        "ConfigError", "normalises axes [3] of [4,8,8] images (nn.LayerNorm over part of each image)");
    // Over the channels of each pixel (ConvNeXt's channels_first LayerNorm) is a LayerNorm2d (tst_layernorm2d); over W alone it is not.
    row("LayerNorm over the width of each row", "layernorm_maps_op13_fold_dyn", [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node()) // the LayerNorm's means, over [C, H, W]
                if (n.op_type() == "ReduceMean" && n.attribute_size() > 0 && n.attribute(0).ints_size() == 3) setInts(&n, "axes", {-1});
        },
        "ConfigError", "normalises axes [-1] of [4,8,8] images (nn.LayerNorm over part of each image); QuantScope reads nn.LayerNorm "
        "over all of an image's values");
    // On maps permuted to channels-last, a LayerNorm over the last axis is a LayerNorm2d; over W and C it is not.
    row("LayerNorm over W and C of channels-last maps", "convnext_tv_op17_fold", [](onnx::ModelProto& mp) {
            for (onnx::AttributeProto& a : *findNode(mp, "LayerNormalization")->mutable_attribute())
                if (a.name() == "axis") a.set_i(-2);
        },
        "ConfigError", "LayerNormalization node '/stem/stem.1/ln/LayerNormalization': normalises axes [2, 3] of [8,8,8] maps permuted to "
        "channels-last ([N, H, W, C], x.permute(0, 2, 3, 1)); QuantScope reads a LayerNorm there over the last axis alone");
    // ... and a MaxPool reads them nowhere: the refusal lists what is read on channels-last maps.
    row("max pooling of channels-last maps", "convnext_tv_op17_fold", [](onnx::ModelProto& mp) {
            onnx::NodeProto* ln = findNode(mp, "LayerNormalization");
            ln->set_op_type("MaxPool");
            ln->clear_attribute();
            setInts(ln, "kernel_shape", {2, 2});
            ln->mutable_input()->DeleteSubrange(1, ln->input_size() - 1);
        },
        "ConfigError", "reads '/stem/stem.1/Transpose_output_0', [8,8,8] maps permuted to channels-last (x.permute(0, 2, 3, 1)); "
        "QuantScope reads such maps flattened");
    row("LayerNorm weight that differs within a channel", "layernorm_maps_op17_nofold", [](onnx::ModelProto& mp) {
            const std::string scale = findNode(mp, "LayerNormalization")->input(1);
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == scale) {
                    if (t.raw_data().empty()) t.set_float_data(5, 3.0f);
                    else {
                        const float v = 3.0f;
                        t.mutable_raw_data()->replace(5 * sizeof v, sizeof v, reinterpret_cast<const char*>(&v), sizeof v);
                    }
                }
        },
        "ConfigError", "its Scale or B differs within channel 0 of [4,8,8] maps");
    // InstanceNormalization (nn.GroupNorm, nn.InstanceNorm2d: groupnorm_* fixtures) on other forms.
    row("InstanceNormalization on features", "seqview_op13_fold", [](onnx::ModelProto& mp) {
            onnx::NodeProto* n = findNode(mp, "Gemm");
            n->set_op_type("InstanceNormalization");
            n->clear_attribute();
        },
        "ConfigError", "InstanceNormalization node '/fc/Gemm': normalises [100] images of [100]; read: nn.InstanceNorm2d on [N, C, H, W] maps and nn.GroupNorm's [N, G, -1] view");
    // Tile is read along the channels only (x.repeat(1, k, 1, 1): gray2rgb_* fixtures).
    row("Tile along the rows", "gray2rgb_repeat_op17_nofold_dyn", [](onnx::ModelProto& mp) {
            const std::string repeats = findNode(mp, "Tile")->input(1);
            auto set = [](onnx::TensorProto& t) {
                t.clear_raw_data();
                t.clear_int64_data();
                for (std::int64_t v : {1, 1, 2, 1}) t.add_int64_data(v);
            };
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == repeats) set(t);
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Constant" && n.output(0) == repeats) set(*n.mutable_attribute(0)->mutable_t());
        },
        "ConfigError", "QuantScope reads Tile only along the channels of [N, C, H, W] maps (x.repeat(1, k, 1, 1))");
    row("GroupNorm scale of the wrong length", "groupnorm_op13_fold_dyn", [](onnx::ModelProto& mp) {
            // the scale of ones, an initializer or (as torch writes it) a Constant node's tensor, one value longer
            const std::string scale = findNode(mp, "InstanceNormalization")->input(1);
            auto lengthen = [](onnx::TensorProto& t) {
                t.set_dims(0, t.dims(0) + 1);
                if (t.raw_data().empty()) t.add_float_data(1.0f);
                else t.mutable_raw_data()->append(std::string(4, '\0'));
            };
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == scale) lengthen(t);
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Constant" && n.output(0) == scale) lengthen(*n.mutable_attribute(0)->mutable_t());
        },
        "FormatError", "scale and B hold 3 and 2 values for 2 groups");
    row("interpolate's operator", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Resize"); },
        "ConfigError", "Resize node '/Relu': operator Resize is not supported by QuantScope's importer; F.interpolate and nn.Upsample");
    row("log of a softmax", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { afterSoftmax(mp, "Log", {"probs"}); },
        "ConfigError", "export F.log_softmax(x, dim=1) instead");
    // Probabilities used for more than reshaping on the way out.
    row("a Softmax inside the graph", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { afterSoftmax(mp, "Add", {"probs", "probs"}); },
        "ConfigError", "a Softmax inside the graph is not supported");
    // A constant on flat features folds back into the layers that make them only where it commutes
    // with every layer between and nothing else reads the values on the way (the folds that hold
    // are in tst_onnx_import's flatconst fixtures), or forward into the Linears that alone read it
    // (the gainslinear fixtures). A gain after SiLU also read by an Add of two activations does neither ...
    row("a gain on features read by a Linear and an Add", "gainslinear_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const onnx::NodeProto* gain = nullptr;
            for (const onnx::NodeProto& n : mp.graph().node())
                if (n.op_type() == "Mul") gain = &n; // the last Mul: silu(h) * gain
            const std::string g = gain->output(0);
            onnx::NodeProto* join = nullptr;
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Add") join = &n; // the last Add: head_a(g) + head_b(g)
            join->set_input(1, g);
        },
        "ConfigError", "multiplies by a constant on features of shape [10] inside the network (after SiLU)");
    // ... and the mean of a head added to itself would scale that head twice.
    row("a factor behind an Add of one head twice", "flatconst_op13_fold_dyn",
        [](onnx::ModelProto& mp) { findNode(mp, "Add")->set_input(1, findNode(mp, "Add")->input(0)); },
        "ConfigError", "Div node '/Div': divides by a constant on features of shape [10] inside the network");
    // A Gather of an activation is read only as an index 0 into an axis of size 1 (x[:, :, 0, 0]):
    // another index, an axis of more than one value and the batch axis are refused by node.
    row("a Gather of index 1 from an axis of size 1", "computedw_op13_nofold_dyn",
        [](onnx::ModelProto& mp) { setConstantNode(mp, findNode(mp, "Gather")->input(1), 1); },
        "ConfigError", "takes indices [1] of axis 2 (of size 1) of [10,1,1] activations");
    // x[:, 0] of the pooled [10, 1, 1] map is read (one channel's plane, planes_* in tst_onnx_import):
    // the graph then computes one value per image, not the 10 classes its output declares.
    row("a Gather from the channels", "computedw_op13_nofold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Gather")->mutable_attribute(0)->set_i(1); },
        "FormatError", "the graph output declares 10 classes, its layers compute 1");
    // A list of channels (x[:, [2, 1, 0]], a 1x1 Conv of one-hot weights) with an index past the channels.
    row("a channel Gather index out of range", "gatherch_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string idx = findNode(mp, "Gather")->input(1);
            const auto setFirst = [](onnx::TensorProto& t) {
                const std::int64_t v = 7;
                if (t.raw_data().empty()) t.set_int64_data(0, v);
                else t.mutable_raw_data()->replace(0, sizeof v, reinterpret_cast<const char*>(&v), sizeof v);
            };
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == idx) setFirst(t);
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Constant" && n.output(0) == idx) setFirst(*n.mutable_attribute(0)->mutable_t());
        },
        "FormatError", "index 7 is out of range for axis 1 of size 3");
    row("a Gather from the batch", "computedw_op13_nofold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Gather")->mutable_attribute(0)->set_i(0); },
        "ConfigError", "selects images of the batch (axis 0)");
    // A dynamic height and width are read at the data's size (tst_onnx_dynamic_size); channels are not.
    row("dynamic channels", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_param("C"); },
        "ConfigError", "dimension 1 (C, the channels) is dynamic ('C')");
    // External data that is read is in tst_onnx_external_data; one that names no file is malformed.
    row("external data without a location", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_initializer(0)->set_data_location(onnx::TensorProto::EXTERNAL); },
        "FormatError", "tensor 'conv1.weight' keeps its data in an external file but names none");
    row("flat input of no square image", "flatmlp_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(50); },
        "ConfigError", "neither");
    row("flat input with per-feature normalisation", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            subtractPerFeatureMean(mp);
        },
        "ConfigError", "per-feature");
    // An unsupported operator is named even behind a node that would fail first (a Shrink
    // after a per-feature normalisation, which is refused).
    row("unsupported operator after a bad node", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            findNode(mp, "Relu")->set_op_type("Shrink");
            subtractPerFeatureMean(mp);
        },
        "ConfigError", "operator Shrink is not supported");
    // (A BatchNorm1d after a ReLU and before a Linear, refused here before, folds into that
    // Linear now: fixtures bnneck_*; 'BatchNorm1d read by no Linear' below is the refusal.)
    // export_modules_as_functions: the Linear is a call of a local function the file defines, and
    // that function declares no inputs (tst_onnx_functions reads real exports of that style).
    row("a local function", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* gemm = findNode(mp, "Gemm");
            gemm->set_domain("torch.nn.modules.linear");
            gemm->set_op_type("Linear");
            onnx::FunctionProto* f = mp.add_functions();
            f->set_domain("torch.nn.modules.linear");
            f->set_name("Linear");
        },
        "FormatError", "passes 3 inputs and 1 outputs to a function of 0 inputs and 0 outputs");
    // 1 - x (an inversion) is no normalisation: named as such.
    row("a constant minus the input", "pixels255_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* s = findNode(mp, "Sub");
            const std::string a = s->input(0), b = s->input(1);
            s->set_input(0, b);
            s->set_input(1, a);
        },
        "ConfigError", "subtracts the input from a constant");
    row("opset 8", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(8); }, "ConfigError",
        "uses ONNX opset 8; opsets 9 to 23 are read");
    row("no ai.onnx opset", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_domain("com.microsoft"); },
        "FormatError", "declares no ONNX (ai.onnx) opset");
    row("cycle", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_input(0, findNode(mp, "MaxPool")->output(0)); }, "FormatError", "cycle");
    row("dangling input", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "MaxPool")->set_input(0, "nowhere"); },
        "FormatError", "MaxPool node '/pool/MaxPool' reads 'nowhere'");
    row("raw size vs dims", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::TensorProto* t = mp.mutable_graph()->mutable_initializer(0);
            t->mutable_raw_data()->resize(t->raw_data().size() - 4);
        },
        "FormatError", "bytes, its dims need");
    row("absurd dims", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_initializer(0)->set_dims(0, std::int64_t{1} << 40); }, "FormatError",
        "out of range");
    row("overflowing dims", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::TensorProto* t = mp.mutable_graph()->mutable_initializer(0);
            t->clear_dims();
            for (int i = 0; i < 4; ++i) t->add_dims(std::int64_t{1} << 30);
        },
        "FormatError", "elements");
    // Shape arithmetic whose product overflows int64 (each factor below the 2^40 the folder takes):
    // undefined behaviour that fuzz_onnx_import found, now refused by the Mul.
    row("integer product past int64", "padconv_op13_nofold",
        [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.name() == "/pad/Constant_2" || n.name() == "/pad/Constant_3") {
                    onnx::TensorProto* t = n.mutable_attribute(0)->mutable_t();
                    t->clear_raw_data();
                    t->clear_int64_data();
                    t->add_int64_data(4294967041);
                }
        },
        "FormatError", "Mul node '/pad/Mul': Mul: integers too large to fold");
    row("reshape that is not a flatten", "seqview_op11_nofold_dyn",
        [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.name() == "/Constant_1") { // the -1 of x.view(x.size(0), -1)
                    onnx::TensorProto* t = n.mutable_attribute(0)->mutable_t();
                    t->clear_raw_data();
                    t->add_int64_data(7);
                }
        },
        "ConfigError", "Reshape node '/Reshape'");
    row("two outputs", "seqview_op13_fold", [](onnx::ModelProto& mp) { *mp.mutable_graph()->add_output() = mp.graph().output(0); },
        "ConfigError", "the graph has 2 outputs ('logits', 'logits'); QuantScope models have one, the class scores: export a wrapper");
    // torch.onnx.export(..., training=TrainingMode.TRAINING) at opsets 9-13: BatchNormalization with
    // its running and saved statistics as outputs normalises with batch statistics
    row("batchnorm training form before opset 14", "flatten_bn_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* bn = findNode(mp, "BatchNormalization");
            for (const char* o : {"running_mean_out", "running_var_out", "saved_mean", "saved_var"}) bn->add_output(o);
        },
        "ConfigError", "5 outputs, the training form of opset 13");
    row("squeeze of an axis that is not 1", "squeeze_op11_nofold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "Squeeze"), "axes", std::vector<std::int64_t>{1}); }, "FormatError",
        "axis 1 has size 6, not 1");
    // Flat features viewed as [N, K, 1, 1] before a Conv: a 1x1 kernel is a Linear; padding (or a
    // larger kernel) would spread the features over a plane, and a softmax over a size-1 axis is
    // not the class axis.
    row("padded conv on a flat view", "convhead_op13_fold",
        [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.name() == "/head/Conv") setInts(&n, "pads", {1, 1, 1, 1});
        },
        "ConfigError", "Conv node '/head/Conv': a 1x1 kernel with padding on flat features viewed as [12,1,1]");
    row("softmax over a size-1 axis of a view", "convhead_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* last = mp.mutable_graph()->mutable_node(mp.graph().node_size() - 1);
            last->set_op_type("Softmax");
            last->clear_attribute();
            onnx::AttributeProto* a = last->add_attribute();
            a->set_name("axis");
            a->set_type(onnx::AttributeProto::INT);
            a->set_i(-1);
        },
        "ConfigError", "takes the softmax over axis -1 of");
    // A constant on maps inside the network is a depthwise 1x1 Conv: one value or one per channel
    // (tst_onnx_import constinside_*). A scale along the width, or NaN, is refused.
    const auto gamma = [](onnx::ModelProto& mp) -> onnx::TensorProto& {
        for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
            if (t.name() == "gamma") return t;
        throw std::runtime_error("no gamma");
    };
    row("constant along the width inside the network", "constinside_op13_fold_dyn",
        [gamma](onnx::ModelProto& mp) {
            onnx::TensorProto& t = gamma(mp);
            t.clear_raw_data();
            t.clear_dims();
            for (int d : {1, 1, 1, 8}) t.add_dims(d);
            for (int i = 0; i < 8; ++i) t.add_float_data(0.5f);
        },
        "ConfigError", "Mul node '/Mul': the constant [1, 1, 1, 8] on maps of shape [6,8,8] is not one value or one per channel");
    row("NaN layer scale", "constinside_op13_fold_dyn",
        [gamma](onnx::ModelProto& mp) {
            onnx::TensorProto& t = gamma(mp);
            t.clear_raw_data();
            for (int i = 0; i < 6; ++i) t.add_float_data(i == 4 ? std::nanf("") : 0.5f);
        },
        "FormatError", "Mul node '/Mul': multiplies by the constant nan, which is not a finite number");
    // A [N, C, H*W] view of the images is read by reshapes and a mean over its last axis; a
    // pooling layer would pool the [C, H, W] planes instead.
    row("pooling a merged view", "gapidioms_op11_nofold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* mean = findNode(mp, "ReduceMean");
            mean->set_op_type("GlobalAveragePool");
            mean->clear_attribute();
        },
        "ConfigError", "view of [6,6,7] activations, which QuantScope's GlobalAveragePool would not read as that shape");
    // GELU's tanh approximation is read as one layer (tst_activations); a variant with another
    // constant is refused by name at its last node, not at its first constant Mul (tester 16).
    row("GELU tanh with kappa 0.05", "act_gelutanhbad_op13_fold", [](onnx::ModelProto&) {}, "ConfigError",
        "Mul node '/act1/Mul_3': reads as GELU's tanh approximation only as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))");
    // One of its inner values read elsewhere: not the layer; refused by name at the Tanh.
    row("GELU tanh with a second reader", "act_gelutanh_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* tanh = findNode(mp, "Tanh");
            onnx::NodeProto* pool = findNode(mp, "MaxPool");
            onnx::NodeProto* add = mp.mutable_graph()->add_node();
            add->set_op_type("Add");
            add->set_name("/extra/Add");
            add->add_input(pool->input(0));
            add->add_input(tanh->input(0));
            add->add_output("extra_sum");
            pool->set_input(0, "extra_sum");
        },
        "ConfigError", "Tanh node '/act1/Tanh': looks like GELU's tanh approximation");
    // PRelu: one slope or one per channel; a [C] slope on a map broadcasts along W, not C.
    row("PRelu slope along W", "prelu_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string slope = findNode(mp, "PRelu")->input(1);
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == slope) {
                    t.clear_dims();
                    t.add_dims(6);
                }
        },
        "ConfigError", "PRelu node '/act1/PRelu': slope of shape [6] on an input of per-image shape [6,8,8]");
    row("PRelu slope per pixel", "prelu_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string slope = findNode(mp, "PRelu")->input(1);
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == slope) {
                    t.clear_dims();
                    for (int d : {1, 1, 2, 3}) t.add_dims(d);
                }
        },
        "ConfigError", "QuantScope's PReLU has one slope or one per channel");
    row("PRelu NaN slope", "prelu_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string slope = findNode(mp, "PRelu")->input(1);
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.name() == slope) {
                    std::string raw = t.raw_data();
                    const float nan = NAN;
                    std::memcpy(raw.data() + 4, &nan, 4);
                    t.set_raw_data(raw);
                }
        },
        "ConfigError", "PRelu node '/act1/PRelu': slope 1 is not a finite number");
    // A sum over (H, W) is a mean only divided by H W; a global max only of a square map, over H and W.
    row("sum times H W", "gapidioms2_op11_nofold", [](onnx::ModelProto& mp) { findNode(mp, "Div")->set_op_type("Mul"); },
        "ConfigError", "multiplies the sum over the 7x7 map by 49; only the mean (multiply by 0.0204081633)");
    row("max over channels", "gapidioms2_op11_nofold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "ReduceMax"), "axes", std::vector<std::int64_t>{1, 2}); }, "ConfigError",
        "ReduceMax node '/ReduceMax': axes = [1, 2]; a maximum is read over H and W (axes 2, 3), as a global max pooling, or over the channels");
    // Any 2-D max pooling window is read (tst_pool_geometry), a global one of a non-square map too;
    // dilations, storage_order = 1 and 3-D windows are refused by node and attribute.
    row("maxpool dilations", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "MaxPool"), "dilations", std::vector<std::int64_t>{2, 2}); }, "ConfigError",
        "MaxPool node '/pool/MaxPool': attribute dilations = [2, 2]: QuantScope's pooling has no dilation");
    row("maxpool storage_order 1", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::AttributeProto* a = findNode(mp, "MaxPool")->add_attribute();
            a->set_name("storage_order");
            a->set_type(onnx::AttributeProto::INT);
            a->set_i(1);
        },
        "ConfigError", "MaxPool node '/pool/MaxPool': attribute storage_order = 1: only row-major (0) is read");
    row("maxpool 3-D window", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "MaxPool"), "kernel_shape", std::vector<std::int64_t>{2, 2, 2}); }, "ConfigError",
        "MaxPool node '/pool/MaxPool': attribute kernel_shape = [2, 2, 2] has 3 values; QuantScope's pooling is 2-D");
    row("maxpool kernel out of range", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "MaxPool"), "kernel_shape", std::vector<std::int64_t>{2, 100}); }, "FormatError",
        "MaxPool node '/pool/MaxPool': attribute kernel_shape = [2, 100] is out of range (1 to 64)");
    row("maxpool window beyond the input", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "MaxPool"), "kernel_shape", std::vector<std::int64_t>{11, 1}); }, "FormatError",
        "MaxPool node '/pool/MaxPool': the window (11x1 stride 2 pad 0,0,0,0) is larger than its input [4,10,10]");
    // A BatchNorm1d no Linear made folds into the Linear after it; anything else reading it is refused.
    row("BatchNorm1d read by no Linear", "bnneck_op11_nofold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* fc = findNode(mp, "Gemm");
            fc->set_op_type("Relu");
            while (fc->input_size() > 1) fc->mutable_input()->RemoveLast();
            fc->clear_attribute();
        },
        "ConfigError", "or right before Linears (folded into them); Relu '/fc/Gemm' reads it");
    row("unsqueeze to a middle axis", "unsqueezehead_op11_nofold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "Unsqueeze"), "axes", std::vector<std::int64_t>{1}); }, "ConfigError",
        "unsqueezes [6] features to [1,6]");
    row("unsqueeze before the batch", "unsqueezehead_op11_nofold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "Unsqueeze"), "axes", std::vector<std::int64_t>{0}); }, "ConfigError",
        "adds an axis before the batch");
    // A few bytes of graph asking for millions of values (a fuzzed file's 12.9 million pads).
    row("huge ConstantOfShape", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::GraphProto* g = mp.mutable_graph();
            onnx::TensorProto* dims = g->add_initializer();
            dims->set_name("big_shape");
            dims->set_data_type(onnx::TensorProto::INT64);
            dims->add_dims(2);
            dims->add_int64_data(4096);
            dims->add_int64_data(4096);
            onnx::NodeProto c;
            c.set_op_type("ConstantOfShape");
            c.set_name("zeros");
            c.add_input("big_shape");
            c.add_output("zeros_out");
            *g->add_node() = c;
            for (int k = g->node_size() - 1; k > 0; --k) g->mutable_node()->SwapElements(k, k - 1); // first
            findNode(mp, "Reshape")->set_input(1, "zeros_out");
        },
        "ConfigError", "ConstantOfShape: 16777216 elements");
    row("squeeze of the batch axis", "squeeze_op11_nofold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "Squeeze"), "axes", std::vector<std::int64_t>{0}); }, "ConfigError",
        "squeezes the batch axis");
    // torch.onnx.export(..., export_params=False): every weight a graph input, no initializer
    row("weights not in the file", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::GraphProto* g = mp.mutable_graph();
            for (const onnx::TensorProto& t : g->initializer()) {
                onnx::ValueInfoProto* v = g->add_input();
                v->set_name(t.name());
                v->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
            }
            g->clear_initializer();
        },
        "ConfigError", "the weights are not in the file");
    row("two image inputs", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ValueInfoProto* v = mp.mutable_graph()->add_input();
            *v = mp.graph().input(0);
            v->set_name("second");
        },
        "ConfigError", "several inputs ('input', 'second')");
    row("an int64 input", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
        },
        "ConfigError", "input 'input' has element type int64, not float32");
    row("Dropout in training mode", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { trainingDropoutAfterRelu(mp, 0.3f); },
        "ConfigError", "training_mode = true: export the model in eval mode");
    // Joins (onnx_import_joins.cpp): a gate of other channels, Concat on another axis or of other sizes.
    row("Mul of a map and a gate of other channels", "se_conv_sigmoid_op13_fold_dyn",
        [](onnx::ModelProto& mp) { findNode(mp, "Mul")->set_input(1, "/Relu_1_output_0"); }, "ConfigError",
        "Mul node '/Mul': multiplies per-image shapes [8,8,8] and [4,1,1]");
    row("Concat along axis 2", "inception_concat_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            for (onnx::AttributeProto& a : *findNode(mp, "Concat")->mutable_attribute())
                if (a.name() == "axis") a.set_i(2);
        },
        "ConfigError", "Concat node '/Concat': joins per-image shapes [4,8,8] and [5,8,8] and [3,8,8] along axis 2");
    row("Concat of maps of other sizes", "inception_concat_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            for (onnx::AttributeProto& a : *findNode(mp, "MaxPool")->mutable_attribute())
                if (a.name() == "strides") a.set_ints(0, 2), a.set_ints(1, 2);
        },
        "ConfigError", "Concat node '/Concat': joins per-image shapes [4,8,8] and [5,8,8] and [3,4,4] along the channels");
    // Two activations join by Add, Mul or Concat, and a difference of two on maps is an Add and a
    // depthwise Conv of weight -1 (fixtures subbranches_*); on flat features it is refused, a
    // quotient of two anywhere (each named as such: it was refused as a misplaced constant, tester 55).
    row("Sub of two activations on features", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* relu = findNode(mp, "Relu");
            onnx::NodeProto* d = mp.mutable_graph()->add_node();
            d->set_op_type("Sub");
            d->set_name("/diff/Sub");
            d->add_input(relu->input(0)); // the Gemm's output minus its ReLU
            d->add_input(relu->output(0));
            d->add_output("diff");
            findNode(mp, "MatMul")->set_input(0, "diff");
        },
        "ConfigError", "Sub node '/diff/Sub': a difference of two activations on features of shape [");
    // A normalisation of a flat input whose raw values something else reads too (a wide-and-deep
    // model's raw-pixel branch) cannot move out of the graph, and no layer keeps it on features:
    // refused (it was moved out, and the raw branch silently read normalised pixels; tester 73).
    row("normalised flat input also read raw", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* gemm = findNode(mp, "Gemm");
            onnx::NodeProto* a = mp.mutable_graph()->add_node();
            a->set_op_type("Add");
            a->set_name("/wide/Add");
            a->add_input(gemm->input(0)); // the normalised input plus the raw one
            a->add_input(mp.graph().input(0).name());
            a->add_output("wide");
            gemm->set_input(0, "wide");
        },
        "ConfigError", "normalises the graph input, whose raw values something else reads too");
    // Pow(x, 2) is x * x (fixtures powsquare_*); another exponent on an activation is refused.
    row("Pow with another exponent", "powsquare_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::TensorProto* t = mp.mutable_graph()->add_initializer();
            t->set_name("three");
            t->set_data_type(onnx::TensorProto::FLOAT);
            t->add_float_data(3.0f);
            findNode(mp, "Pow")->set_input(1, "three");
        },
        "ConfigError", "raises an activation to the power 3; QuantScope reads Pow(x, 2) as x * x");
    row("Div of two activations", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Add")->set_op_type("Div"); },
        "ConfigError", "a quotient of two activations");
    // BatchNorm with the batch's statistics: track_running_stats=False (a subgraph of the batch's
    // mean and variance) or a training-mode export (make_batchstats_fixtures.py writes both with torch).
    row("BatchNorm2d(track_running_stats=False)", "bnnotrack_op13", [](onnx::ModelProto&) {}, "ConfigError",
        "BatchNormalization node '/bn/BatchNormalization': its mean ('/bn/ReduceMean_output_0') is computed from the batch, not stored running "
        "statistics: BatchNorm without running statistics (track_running_stats=False, or a model exported in training mode) cannot be "
        "imported: export the model in eval mode");
    row("BatchNorm2d exported in training mode", "bntrain_op13", [](onnx::ModelProto&) {}, "ConfigError",
        "BatchNormalization node '/bn/BatchNormalization': 5 outputs, the training form of opset 13 (batch statistics): BatchNorm without "
        "running statistics (track_running_stats=False, or a model exported in training mode) cannot be imported");
    row("batch statistics before other operators", "flatten_bn_op13_fold_dyn", [](onnx::ModelProto& mp) { batchStatistics(mp); }, "ConfigError",
        "its mean ('batch_mean') is computed from the batch, not stored running statistics: BatchNorm without running statistics");
    row("BatchNorm training_mode = 1", "flatten_bn_op17_nofold",
        [](onnx::ModelProto& mp) {
            for (onnx::AttributeProto& a : *findNode(mp, "BatchNormalization")->mutable_attribute())
                if (a.name() == "training_mode") a.set_i(1); // the export writes training_mode = 0
        },
        "ConfigError", "training_mode = 1, the training form (batch statistics): BatchNorm without running statistics");
}

void TestOnnxImportErrors::badInput() { checkBrokenFile(); }

// nn.Dropout(p=0) exported in training mode is the identity: read, with PyTorch's outputs
// (tester 11 M3: refused as 'training_mode = true').
void TestOnnxImportErrors::trainingModeDropoutOfRatio0()
{
    onnx::ModelProto mp = parse(kFixtures / "residual_op13_fold_dyn.onnx");
    trainingDropoutAfterRelu(mp, 0.0f);
    const ExportedModel em = importOnnx(serialize(mp), "dropout0.onnx");
    QVERIFY(std::any_of(em.layers.begin(), em.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::Dropout; }));
    QVERIFY(maxDeviation(em, loadReference(kFixtures / "residual_op13_fold_dyn.json")) < kOutputTol);
}

QTEST_GUILESS_MAIN(TestOnnxImportErrors)
#include "tst_onnx_import_errors.moc"
