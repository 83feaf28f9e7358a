// FP32 ONNX import of broken graphs (as tst_onnx_import_errors, made from the PyTorch exports in
// tests/onnx_import through libonnx's protobuf classes): opsets, cycles and dangling inputs,
// initializers whose sizes do not match, shapes and views that do not chain, constants and
// activations QuantScope cannot represent, and BatchNorm and Dropout in their training forms.
// Each gets a typed error (FormatError for a malformed file, ConfigError for valid ONNX QuantScope
// cannot represent) naming the file and, for a node, its op type and name.
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

class TestOnnxGraphErrors : public QObject {
    Q_OBJECT

private slots:
    void badGraph_data();
    void badGraph();
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

void TestOnnxGraphErrors::badGraph_data()
{
    addBrokenFileColumns();
    const auto row = addBrokenFileRow;
    row("opset 8", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(8); }, "ConfigError",
        "uses ONNX opset 8; opsets 9 to 23 are read");
    // More inputs than the operator takes at the file's opset (tester 21: a file re-stamped with
    // another opset): Clip's bounds or Split's sizes were ignored, and the layer computed without them.
    row("Clip's bound inputs at opset 10", "act_clamp_op11_nofold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(10); },
        "FormatError", "Clip node '/act1/Clip' has 3 inputs; ONNX's Clip takes at most 1 at opset 10 (the file's opset does not fit its nodes");
    row("Split's sizes input at opset 11", "shuffle_split_permute_op13_fold",
        [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(11); }, "FormatError",
        "Split node '/Split' has 2 inputs; ONNX's Split takes at most 1 at opset 11");
    row("Clip's bound attributes at opset 13", "act_clampmax_op9_nofold",
        [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(13); }, "FormatError",
        "has the attribute 'max', which ONNX's Clip does not have at opset 13 (the file's opset does not fit its nodes");
    row("a Relu of two inputs", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->add_input("conv1.bias"); },
        "FormatError", "Relu node '/Relu' has 2 inputs; ONNX's Relu takes at most 1 at opset 13");
    row("a Relu of two outputs", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->add_output("extra"); },
        "FormatError", "Relu node '/Relu' has 2 outputs; ONNX's Relu makes at most 1 at opset 13");
    row("no ai.onnx opset", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_domain("com.microsoft"); },
        "FormatError", "declares no ONNX (ai.onnx) opset");
    // A node with fewer inputs than its operator takes in any opset is damaged (fuzz_onnx_import: a
    // ReduceMean without its input sent LayerNorm's subgraph matcher past the end of the list).
    row("ReduceMean without an input", "layernorm_maps_op13_fold_dyn",
        [](onnx::ModelProto& mp) { findNode(mp, "ReduceMean")->clear_input(); }, "FormatError",
        "has 0 inputs; ONNX's ReduceMean takes at least 1 (a damaged file)");
    row("Sub with one input", "layernorm_maps_op13_fold_dyn",
        [](onnx::ModelProto& mp) { findNode(mp, "Sub")->mutable_input()->RemoveLast(); }, "FormatError",
        "has 1 input; ONNX's Sub takes at least 2 (a damaged file)");
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
    // Of two outputs the first is read (tst_onnx_outputs): here a feature map, which is not class scores.
    row("a feature map as the first of two outputs", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::GraphProto* g = mp.mutable_graph();
            *g->add_output() = g->output(0);
            g->mutable_output(0)->set_name("/pool/MaxPool_output_0");
            g->mutable_output(0)->clear_type();
        },
        "ConfigError", "the graph output '/pool/MaxPool_output_0' has per-image shape [4,5,5]; class scores [N, classes] are expected");
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
    row("constant along the width inside the network", "constinside_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            editConstant(mp, "gamma", [](onnx::TensorProto& t) {
                t.clear_raw_data();
                t.clear_dims();
                for (int d : {1, 1, 1, 8}) t.add_dims(d);
                for (int i = 0; i < 8; ++i) t.add_float_data(0.5f);
            });
        },
        "ConfigError", "Mul node '/Mul': the constant [1, 1, 1, 8] on maps of shape [6,8,8] is not one value or one per channel");
    row("NaN layer scale", "constinside_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            editConstant(mp, "gamma", [](onnx::TensorProto& t) {
                t.clear_raw_data();
                for (int i = 0; i < 6; ++i) t.add_float_data(i == 4 ? std::nanf("") : 0.5f);
            });
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
            editConstant(mp, slope, [](onnx::TensorProto& t) {
                t.clear_dims();
                t.add_dims(6);
            });
        },
        "ConfigError", "PRelu node '/act1/PRelu': slope of shape [6] on an input of per-image shape [6,8,8]");
    row("PRelu slope per pixel", "prelu_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string slope = findNode(mp, "PRelu")->input(1);
            editConstant(mp, slope, [](onnx::TensorProto& t) {
                t.clear_dims();
                for (int d : {1, 1, 2, 3}) t.add_dims(d);
            });
        },
        "ConfigError", "QuantScope's PReLU has one slope or one per channel");
    row("PRelu NaN slope", "prelu_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            const std::string slope = findNode(mp, "PRelu")->input(1);
            editConstant(mp, slope, [](onnx::TensorProto& t) {
                std::string raw = t.raw_data();
                const float nan = NAN;
                std::memcpy(raw.data() + 4, &nan, 4);
                t.set_raw_data(raw);
            });
        },
        "ConfigError", "PRelu node '/act1/PRelu': slope 1 is not a finite number");
    // A sum over (H, W) is a mean only divided by H W; a global max only of a square map, over H and W.
    row("sum times H W", "gapidioms2_op11_nofold", [](onnx::ModelProto& mp) { findNode(mp, "Div")->set_op_type("Mul"); },
        "ConfigError", "multiplies the sum over the 7x7 map by 49; only the mean (multiply by 0.0204081633)");
    // A ReduceSum that no Div or Mul by a constant follows is no pooling: refused by operator,
    // with the form that is read (tester 16: the list of read operators omitted ReduceSum, which
    // the README says is read as a mean over H and W).
    row("a sum not divided", "gapidioms2_op11_nofold", [](onnx::ModelProto& mp) { findNode(mp, "Div")->set_op_type("Sub"); },
        "ConfigError", "operator ReduceSum is not supported by QuantScope's importer; ReduceSum is read only as a global average "
                       "pooling: x.sum((2, 3)) divided by H W");
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

void TestOnnxGraphErrors::badGraph() { checkBrokenFile(); }

// nn.Dropout(p=0) exported in training mode is the identity: read, with PyTorch's outputs
// (tester 11 M3: refused as 'training_mode = true').
void TestOnnxGraphErrors::trainingModeDropoutOfRatio0()
{
    onnx::ModelProto mp = parse(kFixtures / "residual_op13_fold_dyn.onnx");
    trainingDropoutAfterRelu(mp, 0.0f);
    const ExportedModel em = importOnnx(serialize(mp), "dropout0.onnx");
    QVERIFY(std::any_of(em.layers.begin(), em.layers.end(), [](const StoredLayer& l) { return l.kind == LayerKind::Dropout; }));
    QVERIFY(maxDeviation(em, loadReference(kFixtures / "residual_op13_fold_dyn.json")) < kOutputTol);
}

QTEST_GUILESS_MAIN(TestOnnxGraphErrors)
#include "tst_onnx_graph_errors.moc"
