// FP32 ONNX import of broken files, made here from the PyTorch exports in tests/onnx_import
// through libonnx's protobuf classes: each gets a typed error (FormatError for a malformed file,
// ConfigError for valid ONNX QuantScope cannot represent) naming the file and, for a node, its op
// type and name; truncated files never import.
#include "io/onnx_import.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <cmath>
#include <cstring>
#include <functional>

using namespace quantscope;
using namespace onnx_import_fixtures;

class TestOnnxImportErrors : public QObject {
    Q_OBJECT

private slots:
    void badInput_data();
    void badInput();
    void truncatedFilesFail();
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

} // namespace

void TestOnnxImportErrors::badInput_data()
{
    using Mutate = std::function<void(onnx::ModelProto&)>;
    QTest::addColumn<QString>("file");
    QTest::addColumn<void*>("mutate");
    QTest::addColumn<QString>("errorType");
    QTest::addColumn<QString>("mentions");
    static std::vector<Mutate> keep; // the rows hold pointers into this
    keep.reserve(96); // more than the rows: the pointers must not move
    auto row = [&](const char* name, const char* file, Mutate m, const char* type, const char* mentions) {
        keep.push_back(std::move(m));
        QTest::newRow(name) << QString(file) << static_cast<void*>(&keep.back()) << QString(type) << QString(mentions);
    };
    row("unsupported operator", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Softplus"); },
        "ConfigError", "Softplus node '/Relu'");
    // Every unsupported operator type at once, with counts.
    row("several unsupported operators", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            int k = 0;
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "Relu") n.set_op_type(k++ == 0 ? "Softplus" : "Selu");
        },
        "ConfigError", "also uses the unsupported Selu (");
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
    // An Erf that is no part of GELU's subgraph.
    row("Erf outside GELU", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Erf"); },
        "ConfigError", "Erf node '/Relu': Erf is read only as part of GELU");
    row("an input without a shape", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape(); },
        "ConfigError", "declares no shape");
    // log(softmax(x)) written in forward: the Log is named with the export that works.
    row("log of a softmax", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { afterSoftmax(mp, "Log", {"probs"}); },
        "ConfigError", "export F.log_softmax(x, dim=1) instead");
    // Probabilities used for more than reshaping on the way out.
    row("a Softmax inside the graph", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { afterSoftmax(mp, "Add", {"probs", "probs"}); },
        "ConfigError", "a Softmax inside the graph is not supported");
    // A Sub that is no input normalisation (after the first Linear) lists the forms that are.
    // A Sub after a ReLU is no input normalisation and cannot fold into a layer (after fc1 itself
    // it would fold into fc1's bias).
    row("a Sub inside the graph", "imgmlp_op13_fold_dyn", [](onnx::ModelProto& mp) {
            onnx::NodeProto* relu = findNode(mp, "Relu");
            onnx::NodeProto* sub = findNode(mp, "Sub");
            const std::string subIn = sub->input(0), reluOut = relu->output(0);
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node()) // the ReLU's readers read the Sub ...
                for (int i = 0; i < n.input_size(); ++i)
                    if (n.input(i) == reluOut) n.set_input(i, sub->output(0));
            sub->set_input(0, reluOut); // ... which reads the ReLU
            // ... and the Div, which read the Sub, reads the flattened input instead
            findNode(mp, "Div")->set_input(0, subIn);
        },
        "ConfigError", "right after the model flattens it");
    // A dynamic height and width are read at the data's size (tst_onnx_dynamic_size); channels are not.
    row("dynamic channels", "residual_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_param("C"); },
        "ConfigError", "dimension 1 (C, the channels) is dynamic ('C')");
    row("external data", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_initializer(0)->set_data_location(onnx::TensorProto::EXTERNAL); },
        "ConfigError", "external");
    row("flat input of no square image", "flatmlp_op13_fold_dyn",
        [](onnx::ModelProto& mp) { mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(50); },
        "ConfigError", "neither");
    row("flat input with per-feature normalisation", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            subtractPerFeatureMean(mp);
        },
        "ConfigError", "per-feature");
    // An unsupported operator is named even behind a node that would fail first (a Softplus
    // after a per-feature normalisation, which is refused).
    row("unsupported operator after a bad node", "flatmlp_op11_nofold",
        [](onnx::ModelProto& mp) {
            findNode(mp, "Relu")->set_op_type("Softplus");
            subtractPerFeatureMean(mp);
        },
        "ConfigError", "operator Softplus is not supported");
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
    row("opset 9", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(9); }, "ConfigError", "opset 9");
    row("opset 18", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(18); }, "ConfigError", "opset 18");
    row("no ai.onnx opset", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_domain("com.microsoft"); },
        "FormatError", "declares no ONNX (ai.onnx) opset");
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
    row("avgpool dilations", "poolpad_op13_fold_dyn",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "AveragePool"), "dilations", std::vector<std::int64_t>{1, 2}); }, "ConfigError",
        "AveragePool node '/avgpool/AveragePool': attribute dilations = [1, 2]: QuantScope's pooling has no dilation");
    row("maxpool padding over half the kernel", "seqview_op13_fold",
        [](onnx::ModelProto& mp) { setInts(findNode(mp, "MaxPool"), "pads", std::vector<std::int64_t>{2, 2, 2, 2}); }, "ConfigError",
        "more than half the kernel");
    row("stride 0", "seqview_op13_fold", [](onnx::ModelProto& mp) { setInts(findNode(mp, "Conv"), "strides", {1, 0}); },
        "FormatError", "attribute strides = [1, 0] is out of range");
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
        "ConfigError", "2 outputs");
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
    // A constant folds into a Linear or Conv that nothing else reads; after a ReLU it cannot.
    row("constant after a ReLU", "constops_op13_fold_dyn",
        [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.name() == "/Mul_1") n.set_input(0, "/Relu_output_0"); // 0.2 * relu(...) instead of 0.2 * conv2(x)
        },
        "ConfigError", "applies a constant to the output of a layer that is no Linear or Conv read by nothing else");
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
        "ReduceMax node '/ReduceMax': axes = [1, 2]; a maximum is read only over H and W");
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
        "unsqueezes [6] images to [1,6]");
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
    // Two activations join by Add, Mul or Concat: a difference or a quotient of two is named as
    // such (it was refused as a misplaced constant, tester 55).
    row("Sub of two activations", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Add")->set_op_type("Sub"); },
        "ConfigError", "a difference of two activations");
    row("Div of two activations", "residual_op13_fold_dyn", [](onnx::ModelProto& mp) { findNode(mp, "Add")->set_op_type("Div"); },
        "ConfigError", "a quotient of two activations");
    // A model PyTorch quantized itself (torch.ao FX, exported as QDQ; make_quantized_fixture.py):
    // refused as another tool's quantized model, with the way to go, not as an unknown operator.
    row("QDQ model from torch.ao", "torchao_fx_qdq_op13", [](onnx::ModelProto&) {}, "ConfigError",
        "QuantizeLinear node '/QuantizeLinear': operator QuantizeLinear: this model was quantized by another tool");
    row("no opset", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.clear_opset_import(); }, "FormatError", "not an ONNX model");
    row("no graph", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.clear_graph(); }, "FormatError", "not an ONNX model");
}

void TestOnnxImportErrors::badInput()
{
    QFETCH(QString, file);
    QFETCH(void*, mutate);
    QFETCH(QString, errorType);
    QFETCH(QString, mentions);
    onnx::ModelProto mp = parse(kFixtures / (file.toStdString() + ".onnx"));
    (*static_cast<std::function<void(onnx::ModelProto&)>*>(mutate))(mp);
    const std::string source = "broken/" + file.toStdString() + ".onnx";
    try {
        importOnnx(serialize(mp), source);
        QFAIL("imported a broken file");
    } catch (const Error& e) {
        const QString msg = e.what();
        const QString type = dynamic_cast<const ConfigError*>(&e) ? "ConfigError" : dynamic_cast<const FormatError*>(&e) ? "FormatError" : "Error";
        QVERIFY2(type == errorType, qPrintable(type + ": " + msg));
        QVERIFY2(msg.startsWith(QString::fromStdString(source)), e.what());
        QVERIFY2(msg.contains(mentions), e.what());
    }
}

void TestOnnxImportErrors::truncatedFilesFail()
{
    const std::vector<std::uint8_t> full = fileBytes(kFixtures / "residual_op13_fold_dyn.onnx");
    int formatErrors = 0;
    for (std::size_t cut : {std::size_t{1}, std::size_t{17}, full.size() / 3, full.size() / 2, full.size() - 5}) {
        const std::vector<std::uint8_t> part(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut));
        try {
            importOnnx(part, "cut.onnx");
            QFAIL(qPrintable(QString("a file cut at %1 bytes imported").arg(cut)));
        } catch (const FormatError& e) {
            QVERIFY2(QString(e.what()).startsWith("cut.onnx: "), e.what());
            ++formatErrors;
        } catch (const Error& e) {
            QVERIFY2(QString(e.what()).startsWith("cut.onnx: "), e.what());
        }
    }
    QVERIFY(formatErrors >= 3);
    // An empty file and a few stray bytes (protobuf reads them as a message of defaults)
    for (const std::vector<std::uint8_t>& bytes : {std::vector<std::uint8_t>{}, std::vector<std::uint8_t>{'\n'},
                                                   std::vector<std::uint8_t>{0x08, 0x07}}) {
        try {
            importOnnx(bytes, "stray.onnx");
            QFAIL(qPrintable(QString("%1 bytes imported").arg(bytes.size())));
        } catch (const FormatError& e) {
            QVERIFY2(QString(e.what()).startsWith("stray.onnx: not an ONNX model"), e.what());
        }
    }
    try {
        importOnnx("/nonexistent/model.onnx");
        QFAIL("a missing file imported");
    } catch (const IoError& e) {
        QVERIFY(QString(e.what()).contains("/nonexistent/model.onnx"));
    }
}

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
