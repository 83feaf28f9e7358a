// FP32 ONNX import of broken graphs, made here from the PyTorch exports in tests/onnx_import
// through libonnx's protobuf classes: operators QuantScope does not read or reads only in some
// forms (activations' constants, Clip's bounds, LayerNorm's axes, Gathers, Tile, channels-last
// maps), damaged nodes, and local functions. Each gets a typed error (FormatError for a malformed
// file, ConfigError for valid ONNX QuantScope cannot represent) naming the file and, for a node,
// its op type and name. Graph structure, shapes, constants and training forms are
// tst_onnx_graph_errors'; windows and padding tst_onnx_import_window_errors'; what a file declares
// (IR version, opset, dimensions, QuantScope's own metadata, half precision) and truncated files
// tst_onnx_file_errors'.
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
};

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
    // A Reshape to a sequence layout in a fixed-batch export: the target's first axis is named as
    // the batch (tester 9 read "[2, 28, 28]" beside "[1,28,28] images" as channels).
    row("Reshape of each image to rows", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::TensorProto* t = mp.mutable_graph()->add_initializer();
            t->set_name("rows_shape");
            t->set_data_type(onnx::TensorProto::INT64);
            t->add_dims(3);
            for (std::int64_t v : {3, 20, 5}) t->add_int64_data(v);
            findNode(mp, "Reshape")->set_input(1, "rows_shape");
        },
        "ConfigError", "reshapes [4,5,5] images to [3, 20, 5] (the batch of 3, then [20,5] per image); QuantScope reads flattening");
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
        "ConfigError", "Conv node '/conv/Conv': reads the uint8 input 'input' as it is; QuantScope reads uint8 pixels through a Cast");
    row("uint8 input cast to int32", "bytes_raw_op17_fold",
        [](onnx::ModelProto& mp) { findNode(mp, "Cast")->mutable_attribute(0)->set_i(onnx::TensorProto::INT32); },
        "ConfigError", "Cast node '/Cast': reads the uint8 input 'input' as it is");
    // Refusals that name what the user wrote, not the node that met it first (tester 20): control
    // flow (a torch.jit.script model's If) before the comparison that feeds it, nn.Conv1d before
    // its input's shape, x.std()'s unbiased correction, F.normalize.
    row("If after a comparison", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            findNode(mp, "Relu")->set_op_type("Greater");
            findNode(mp, "Relu")->set_op_type("If");
        },
        "ConfigError", "export the traced module (torch.onnx.export of the nn.Module, not of torch.jit.script(model))");
    row("Conv1d", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* conv = findNode(mp, "Conv");
            for (onnx::AttributeProto& a : *conv->mutable_attribute())
                if (a.name() == "kernel_shape") {
                    a.clear_ints();
                    a.add_ints(3);
                }
        },
        "ConfigError", "is a 1-D convolution (nn.Conv1d, weight [out, in, k]); QuantScope reads 2-D convolutions (nn.Conv2d)");
    row("unbiased std", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("ReduceProd"); },
        "ConfigError", "write x.std(..., unbiased=False)");
    row("F.normalize", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("ReduceL2"); },
        "ConfigError", "F.normalize (an L2 normalisation of the activations");
    // An Erf that is no part of GELU's subgraph.
    row("Erf outside GELU", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Erf"); },
        "ConfigError", "Erf node '/Relu': Erf is read only as part of GELU");
    // An input of no shape or of a dynamic C is read when its Conv or Gemm reader gives the count
    // (tst_onnx_import_input); here the images go into a Flatten first.
    row("an input without a shape", "imgmlp_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape(); },
        "ConfigError", "declares no shape, and its readers do not give it");
    // ... and where its readers say something else than a count, that is the message (tester 21:
    // each was the generic one, where the declared shape's import names the broken node).
    const auto stripped = [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape(); };
    row("an input without a shape, its Conv's weight undefined", "residual_op13_fold_dyn",
        [&](onnx::ModelProto& mp) {
            stripped(mp);
            findNode(mp, "Conv")->set_input(1, "nowhere");
        },
        "FormatError", "the Conv '/stem/Conv' reads the weight 'nowhere', which no node, initializer or input defines");
    row("an input without a shape, readers of two counts", "residual_op13_fold_dyn",
        [&](onnx::ModelProto& mp) {
            stripped(mp);
            onnx::TensorProto* w = mp.mutable_graph()->add_initializer();
            w->set_name("w3");
            w->set_data_type(onnx::TensorProto::FLOAT);
            for (int d : {2, 3, 1, 1}) w->add_dims(d);
            for (int k = 0; k < 6; ++k) w->add_float_data(0.5f);
            onnx::NodeProto* c = mp.mutable_graph()->add_node();
            c->set_op_type("Conv");
            c->set_name("rgb_conv");
            c->add_input("input");
            c->add_input("w3");
            c->add_output("rgb_out");
        },
        "FormatError", "its readers disagree: the Conv '/stem/Conv' takes 1 channel, the Conv 'rgb_conv' takes 3 channels");
    row("an input without a shape, a MatMul weight of rank 3", "mlpnobias_op11_nofold",
        [&](onnx::ModelProto& mp) {
            stripped(mp);
            for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
                if (t.dims_size() == 2 && t.dims(1) == 64) t.add_dims(1); // fc1.weight [24, 64] -> [24, 64, 1]
        },
        "FormatError", "the MatMul '/fc1/MatMul''s weight '/fc1/Transpose_output_0' has rank 3, not 2");
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
            editConstant(mp, scale, [](onnx::TensorProto& t) {
                if (t.raw_data().empty()) t.set_float_data(5, 3.0f);
                else {
                    const float v = 3.0f;
                    t.mutable_raw_data()->replace(5 * sizeof v, sizeof v, reinterpret_cast<const char*>(&v), sizeof v);
                }
            });
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
            editConstant(mp, repeats, set);
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
            editConstant(mp, scale, lengthen);
        },
        "FormatError", "scale and B hold 3 and 2 values for 2 groups");
    row("interpolate's operator", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Resize"); },
        "ConfigError", "Resize node '/Relu': operator Resize is not supported by QuantScope's importer; F.interpolate and nn.Upsample");
    // Operators whose PyTorch origin is not in their name get the modules that export them (tester 9).
    row("pixel shuffle's operator", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("DepthToSpace"); },
        "ConfigError", "DepthToSpace node '/Relu': operator DepthToSpace is not supported by QuantScope's importer; nn.PixelShuffle");
    row("repeat_interleave's sequence operators", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("SequenceEmpty"); }, "ConfigError",
        "SequenceEmpty node '/Relu': operator SequenceEmpty is not supported by QuantScope's importer; a list of tensors built in "
        "forward (torch.repeat_interleave");
    row("log of a softmax", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { afterSoftmax(mp, "Log", {"probs"}); },
        "ConfigError", "export F.log_softmax(x, dim=1) instead");
    // Probabilities used for more than reshaping on the way out.
    row("a Softmax inside the graph", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { afterSoftmax(mp, "Add", {"probs", "probs"}); },
        "ConfigError", "a Softmax inside the graph is not supported");
    // A LogSoftmax read by another (tester 21: refused later as a damaged file, exit 3, naming the layer).
    row("a LogSoftmax inside the graph", "flatten_bn_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* lsm = findNode(mp, "LogSoftmax");
            const std::string out = lsm->output(0);
            lsm->set_output(0, "log_probs");
            onnx::NodeProto* again = mp.mutable_graph()->add_node();
            *again = *lsm;
            again->set_name("/LogSoftmax_again");
            again->set_input(0, "log_probs");
            again->set_output(0, out);
        },
        "ConfigError", "LogSoftmax node '/LogSoftmax': a LogSoftmax inside the graph is not supported (only one that makes the model's output)");
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
        "FormatError", "the graph output 'logits' declares 10 classes, its layers compute 1");
    // A list of channels (x[:, [2, 1, 0]], a 1x1 Conv of one-hot weights) with an index past the channels.
    row("a channel Gather index out of range", "gatherch_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string idx = findNode(mp, "Gather")->input(1);
            const auto setFirst = [](onnx::TensorProto& t) {
                const std::int64_t v = 7;
                if (t.raw_data().empty()) t.set_int64_data(0, v);
                else t.mutable_raw_data()->replace(0, sizeof v, reinterpret_cast<const char*>(&v), sizeof v);
            };
            editConstant(mp, idx, setFirst);
        },
        "FormatError", "index 7 is out of range for axis 1 of size 3");
    row("a Gather from the batch", "computedw_op13_nofold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Gather")->mutable_attribute(0)->set_i(0); },
        "ConfigError", "selects images of the batch (axis 0)");
    // A dynamic height and width are read at the data's size (tst_onnx_dynamic_size); channels are not.
    row("dynamic channels", "imgmlp_op13_fold_dyn",
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
    // A Gemm bias of no values cannot broadcast to the output: a broken file, as a B of no
    // values is (tester 15: a configuration error, exit 2, against 3 for B).
    row("a Gemm bias of no values", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            const std::string bias = findNode(mp, "Gemm")->input(2);
            editConstant(mp, bias, [](onnx::TensorProto& t) {
                t.clear_dims();
                t.add_dims(0);
                t.clear_raw_data();
                t.clear_float_data();
            });
        },
        "FormatError", "C [0] is not a bias of 10 values, nor does it broadcast to the output [N, 10]");
    // 1 - x (an inversion) is no normalisation: on images the graph keeps it (invert_* fixtures in
    // tst_onnx_import_input); on a flat input, where no layer keeps it, it is refused, named as such.
    row("a constant minus the flat input", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* s = findNode(mp, "Sub");
            const std::string a = s->input(0), b = s->input(1);
            s->set_input(0, b);
            s->set_input(1, a);
        },
        "ConfigError", "subtracts the input from a constant");
}

void TestOnnxImportErrors::badInput() { checkBrokenFile(); }

QTEST_GUILESS_MAIN(TestOnnxImportErrors)
#include "tst_onnx_import_errors.moc"
