// What an ONNX file declares, broken: IR versions and opsets ONNX has not defined, dimensions
// below 1, another tool's quantized model, edited quantscope.* metadata of QuantScope's own
// exports (read by the reader of its own files, as readOnnxModel routes them), half-precision
// weights and graphs, truncated and stray bytes. Each gets a typed error naming the file; what
// QuantScope writes is read back, and float16/bfloat16 weights behind a Cast import exactly.
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/onnx_parse.h"
#include "train/precision_config.h"

#include "onnx_broken_files.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace quantscope;
using namespace onnx_import_fixtures;

class TestOnnxFileErrors : public QObject {
    Q_OBJECT

private slots:
    void badFile_data();
    void badFile();
    void quantscopeMetadataAccepted();
    void halfToFloatIsExact();
    void halfPrecisionWeightsMatchFloatTwin_data();
    void halfPrecisionWeightsMatchFloatTwin();
    void truncatedFilesFail();
    void deepNestingIsNamed();
    void unnamedNodeIsNamedByItsOutput();
};

void TestOnnxFileErrors::badFile_data()
{
    addBrokenFileColumns();
    const auto row = addBrokenFileRow;
    // A model PyTorch quantized itself (torch.ao FX, exported as QDQ; make_quantized_fixture.py):
    // refused as another tool's quantized model, with the way to go, not as an unknown operator.
    row("QDQ model from torch.ao", "torchao_fx_qdq_op13", [](onnx::ModelProto&) {}, "ConfigError",
        "QuantizeLinear node '/QuantizeLinear': operator QuantizeLinear: this model was quantized by another tool");
    // IR versions and opsets: one ONNX has not defined yet (or a damaged file's) is refused by
    // number with the highest read, by the importer and by the reader of QuantScope's own files.
    row("ir_version 999", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.set_ir_version(999); }, "ConfigError",
        "declares ir_version 999, newer than any ONNX release defines; the highest read is 11, ONNX 1.18");
    row("ir_version 999 of an own export", "quantscope_qdq", [](onnx::ModelProto& mp) { mp.set_ir_version(999); }, "ConfigError",
        "declares ir_version 999, newer than any ONNX release defines; the highest read is 11");
    row("no ir_version", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.clear_ir_version(); }, "FormatError",
        "declares no ir_version; ONNX files carry an IR version from 1 to 11");
    row("negative ir_version", "quantscope_fp32", [](onnx::ModelProto& mp) { mp.set_ir_version(-3); }, "FormatError",
        "declares ir_version -3");
    row("opset 99", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(99); }, "ConfigError",
        "imports ONNX opset 99, newer than any ONNX release defines (the newest is opset 23, ONNX 1.18)");
    row("opset 99 of an own export", "quantscope_qdq", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(99); },
        "ConfigError", "imports ONNX opset 99, newer than any ONNX release defines");
    row("opset 21 of an own export", "quantscope_qdq", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(21); },
        "ConfigError", "imports ONNX opset 21; QuantScope writes opset 13 and reads its own exports at opsets 13 to 17");
    // Input and output dimensions: a size >= 1 or a name (dim_param); -5 and 0 are named by input and axis.
    row("negative batch", "seqview_op13_fold", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(0)->set_dim_value(-5); },
        "FormatError", "input 'input' dimension 0 (N, the batch) is -5: an ONNX dimension is a size >= 0 or a name (dim_param)");
    row("zero batch", "seqview_op13_fold", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(0)->set_dim_value(0); },
        "FormatError", "input 'input' dimension 0 (N, the batch) is 0: a tensor with no elements");
    row("negative height", "seqview_op13_fold", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(2)->set_dim_value(-12); },
        "FormatError", "input 'input' dimension 2 (H) is -12: an ONNX dimension is a size >= 0");
    // Sizes past QuantScope's limits are a configuration it cannot take (exit 2), not damage (tester 21: exit 3).
    row("height past the limit", "seqview_op13_fold", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(2)->set_dim_value(5000); },
        "ConfigError", "input 'input' dimension 2 (H) is 5000, out of range: QuantScope reads 1 to 4096 pixels a side");
    row("channels past the limit", "seqview_op13_fold", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(1)->set_dim_value(70000); },
        "ConfigError", "input 'input' dimension 1 (C) is 70000, out of range: QuantScope reads 1 to 64 channels");
    row("negative batch of a flat input", "flatmlp_op13_fold_dyn", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(0)->set_dim_value(-1); },
        "FormatError", "dimension 0 (N, the batch) is -1");
    row("negative output batch", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            mp.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_value(-3);
        },
        "FormatError", "the graph output 'logits' dimension 0 (N, the batch) is -3");
    row("negative batch of an own export", "quantscope_qdq", [](onnx::ModelProto& mp) { inputShape(mp)->mutable_dim(0)->set_dim_value(-5); },
        "FormatError", "input 'input' dimension 0 (N, the batch) is -5");
    // QuantScope's own exports: every quantscope.* value the reader uses is one encodeOnnx writes
    // for that kind of graph; an edited one is refused by key, value and the values written.
    row("weight_format bogus", "quantscope_qdq", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.weight_format", "bogus"); },
        "FormatError",
        "metadata quantscope.weight_format is 'bogus', which QuantScope does not write for an integer (QDQ) graph (it writes int2, int3, "
        "int4, int5, int6, int7, int8, ternary, binary, or 'per-layer (...)' under a precision plan)");
    // A NUL byte in the value is shown as \0, and the message goes on past it (tester 21: it ended there).
    row("weight_format with a NUL byte", "quantscope_qdq",
        [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.weight_format", std::string("int8\0junk", 9)); }, "FormatError",
        "metadata quantscope.weight_format is 'int8\\0junk', which QuantScope does not write for an integer (QDQ) graph (it writes int2");
    row("weight_format of other weights", "quantscope_qdq", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.weight_format", "int4"); },
        "FormatError", "metadata quantscope.weight_format is 'int4', but the weights of 'conv1' are on the 8-bit grid [-128, 127], not int4's [-8, 7]");
    row("weight_format fp16 on a QDQ graph", "quantscope_qdq", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.weight_format", "fp16"); },
        "FormatError", "metadata quantscope.weight_format is 'fp16', which QuantScope does not write for an integer (QDQ) graph");
    row("weight_format int8 on an FP32 graph", "quantscope_fp32", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.weight_format", "int8"); },
        "FormatError", "metadata quantscope.weight_format is 'int8', which QuantScope does not write for an FP32 graph (it writes 'fp32')");
    row("activation_format bogus", "quantscope_qdq", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.activation_format", "uint4"); },
        "FormatError", "metadata quantscope.activation_format is 'uint4', which QuantScope does not write for an integer (QDQ) graph (it writes int8, uint8)");
    row("granularity group", "quantscope_qdq", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.granularity", "group:0"); },
        "FormatError", "metadata quantscope.granularity is 'group:0', which QuantScope does not write for an integer (QDQ) graph (it writes global, layer, tensor or channel");
    row("granularity on an FP32 graph", "quantscope_fp32", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.granularity", "channel"); },
        "FormatError", "metadata quantscope.granularity is 'channel', which QuantScope does not write for an FP32 graph");
    row("strategy bogus", "quantscope_fp32", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.strategy", "bogus"); }, "FormatError",
        "metadata quantscope.strategy is 'bogus', which QuantScope does not write for an FP32 graph (it writes fp32, ptq, qat, mixed, lowp, progressive)");
    row("strategy mixed on a QDQ graph", "quantscope_qdq", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.strategy", "mixed"); },
        "FormatError", "metadata quantscope.strategy is 'mixed', which QuantScope does not write for an integer (QDQ) graph (it writes ptq, qat, progressive)");
    row("class_names of other classes", "quantscope_qdq",
        [](onnx::ModelProto& mp) {
            std::string names = "x";
            for (int k = 0; k < 99999; ++k) names += "\nx";
            setMetadata(mp, "quantscope.class_names", names);
        },
        "FormatError", "metadata quantscope.class_names holds 100000 names for the 10 classes of the graph output");
    row("bn_folded naming no Conv", "quantscope_fp32", [](onnx::ModelProto& mp) { setMetadata(mp, "quantscope.bn_folded", "conv1\nfc"); },
        "FormatError", "metadata quantscope.bn_folded names 'fc', which is no Conv of the graph");
    // A node that makes no value (fuzz_onnx_qdq: the reader read a Sub's first output past the end).
    row("a node without outputs", "quantscope_qdq", [](onnx::ModelProto& mp) { findNode(mp, "Sub")->clear_output(); },
        "FormatError", "Sub 'input.center': makes no value (a damaged file)");
    // An activation's DequantizeLinear of several scales is read only as one scale repeated (what
    // the export writes before a layer kept FP32), not as scales that differ along the axis.
    row("an activation dequantized per axis", "quantscope_qdq",
        [](onnx::ModelProto& mp) {
            for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
                if (n.op_type() == "DequantizeLinear" && n.output(0) == "input.dq") {
                    onnx::TensorProto* s = mp.mutable_graph()->add_initializer();
                    s->set_name("two_scales");
                    s->set_data_type(onnx::TensorProto::FLOAT);
                    s->add_dims(2);
                    s->add_float_data(0.01f);
                    s->add_float_data(0.02f);
                    onnx::TensorProto* z = mp.mutable_graph()->add_initializer();
                    z->set_name("two_zero_points");
                    z->set_data_type(onnx::TensorProto::UINT8);
                    z->add_dims(2);
                    z->add_int32_data(0);
                    z->add_int32_data(0);
                    n.set_input(1, "two_scales");
                    n.set_input(2, "two_zero_points");
                }
        },
        "FormatError", "activations are dequantized per tensor (one scale and zero point, or one repeated along an axis)");
    row("metadata key twice", "quantscope_qdq",
        [](onnx::ModelProto& mp) {
            onnx::StringStringEntryProto* p = mp.add_metadata_props();
            p->set_key("quantscope.weight_format");
            p->set_value("int4");
        },
        "FormatError", "metadata quantscope.weight_format is given twice");
    // Half precision: weights stored as float16 behind a Cast import (halfPrecisionWeightsMatchFloatTwin);
    // a float16 graph input, activations cast to float16, a float16 weight with no Cast, and a NaN
    // among float16 weights are refused, each saying which.
    row("float16 input (model.half())", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT16);
        },
        "ConfigError", "input 'input' has element type float16; QuantScope's models take float32 images (or uint8 pixels): export with "
        "a float32 example input, after model.float() if the model was halved");
    row("float64 input (model.double())", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::DOUBLE);
        },
        "ConfigError", "input 'input' has element type double, not float32 (or uint8 pixels): re-export after model.float()");
    row("activations cast to float16", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* relu = findNode(mp, "Relu");
            relu->set_op_type("Cast");
            onnx::AttributeProto* to = relu->add_attribute();
            to->set_name("to");
            to->set_type(onnx::AttributeProto::INT);
            to->set_i(onnx::TensorProto::FLOAT16);
        },
        "ConfigError", "Cast node '/Relu': casts an activation to element type float16: the model computes in half precision inside");
    // A weight computed in forward through an operator QuantScope does not fold (weight
    // standardisation's reductions fold: tst_onnx_import's computedw fixtures): the node is named,
    // with the way out (the message said "input 0 must be an activation, not a constant").
    row("a weight computed through a Softmax in the graph", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::NodeProto* conv = findNode(mp, "Conv");
            const std::string w = conv->input(1);
            conv->set_input(1, "w_std");
            auto* nodes = mp.mutable_graph()->mutable_node();
            onnx::NodeProto* mean = nodes->Add();
            mean->set_op_type("Softmax");
            mean->set_name("/ws/Softmax");
            mean->add_input(w);
            mean->add_output("w_mean");
            onnx::NodeProto* sub = nodes->Add();
            sub->set_op_type("Sub");
            sub->set_name("/ws/Sub");
            sub->add_input(w);
            sub->add_input("w_mean");
            sub->add_output("w_std");
            for (int k = nodes->size() - 2; k > 0; --k) nodes->SwapElements(k, k - 1); // the mean first,
            for (int k = nodes->size() - 1; k > 1; --k) nodes->SwapElements(k, k - 1); // then the Sub
        },
        "ConfigError", "Softmax node '/ws/Softmax': input 0 ('conv1.weight') is a constant (a weight, or a value the graph computes "
        "from weights), not a value of the image; QuantScope folds constants through element-wise arithmetic, reshaping and "
        "reductions");
    row("float16 weight without a Cast", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            onnx::NodeProto* conv = findNode(mp, "Conv");
            conv->set_input(1, conv->input(1) + "_h");
        },
        "FormatError", "Conv node '/conv1/Conv': the weight ('conv1.weight_h') is float16 while the node computes in float32: the graph lacks a Cast to float");
    row("float16 arithmetic", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            onnx::NodeProto* neg = findNode(mp, "Cast");
            neg->set_op_type("Neg");
            neg->clear_attribute(); // Cast's 'to', which a Neg does not have (refused as such)
        },
        "ConfigError", "Neg on the float16 constant 'conv1.weight_h' is not folded (ONNX computes it in float16)");
    row("float16 NaN weight", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            onnx::TensorProto* t = mp.mutable_graph()->mutable_initializer(0); // conv1.weight_h, raw bytes
            std::string raw = t->raw_data();
            raw[2] = 0x01, raw[3] = 0x7e; // element 1: a NaN
            t->set_raw_data(raw);
        },
        "FormatError", "Conv2d 'conv1' weight holds a non-finite value (nan at element 1)");
    row("float16 infinite weight", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            onnx::TensorProto* t = mp.mutable_graph()->mutable_initializer(1); // conv1.bias_h, int32_data
            t->set_int32_data(2, 0xfc00); // -inf
        },
        "FormatError", "bias holds a non-finite value (-inf at element 2)");
    row("float16 value out of 16 bits", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            mp.mutable_graph()->mutable_initializer(1)->set_int32_data(0, 0x12345);
        },
        "FormatError", "tensor 'conv1.bias_h' holds 74565 in int32_data, not a 16-bit pattern");
    row("no opset", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.clear_opset_import(); }, "FormatError", "not an ONNX model");
    row("no graph", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.clear_graph(); }, "FormatError", "not an ONNX model");
}

void TestOnnxFileErrors::badFile() { checkBrokenFile(); }

// What the reader of QuantScope's own files accepts is what QuantScope writes: every strategy
// train knows on an FP32 graph, the quantizing ones on a QDQ graph, a precision plan's per-layer
// format and granularity, and the unedited exports themselves.
void TestOnnxFileErrors::quantscopeMetadataAccepted()
{
    const ExportedModel fp32 = decodeOnnx(serialize(fixtureModel("quantscope_fp32")), "own.onnx");
    QVERIFY(!fp32.quantized);
    QCOMPARE(fp32.classNames.size(), std::size_t{10});
    QVERIFY(std::any_of(fp32.layers.begin(), fp32.layers.end(), [](const StoredLayer& l) { return l.bnFolded; }));
    QVERIFY(decodeOnnx(serialize(fixtureModel("quantscope_qdq")), "own.onnx").quantized);
    auto reads = [](const char* file, const std::string& key, const std::string& value) {
        onnx::ModelProto mp = fixtureModel(file);
        setMetadata(mp, key, value);
        try {
            decodeOnnx(serialize(mp), "own.onnx");
            return std::string();
        } catch (const Error& e) {
            return std::string(e.what());
        }
    };
    for (const StrategyInfo& s : strategies()) {
        const std::string why = reads("quantscope_fp32", "quantscope.strategy", s.name);
        QVERIFY2(why.empty(), why.c_str());
        const bool quantizes = s.id == Strategy::Ptq || s.id == Strategy::Qat || s.id == Strategy::Progressive;
        QVERIFY2(reads("quantscope_qdq", "quantscope.strategy", s.name).empty() == quantizes, s.name);
    }
    for (const char* g : {"global", "layer", "tensor", "channel", "channel-wise", "tensor unless a layer says otherwise"}) {
        const std::string why = reads("quantscope_qdq", "quantscope.granularity", g);
        QVERIFY2(why.empty(), why.c_str());
    }
    for (const char* w : {"per-layer (conv1 int8, fc fp32)", "int8"}) {
        const std::string why = reads("quantscope_qdq", "quantscope.weight_format", w);
        QVERIFY2(why.empty(), why.c_str());
    }
    const std::string why = reads("quantscope_qdq", "quantscope.activation_format", "int8");
    QVERIFY2(why.empty(), why.c_str());
    // A tool that strips node names leaves bn_folded naming nothing: read, no layer marked.
    onnx::ModelProto stripped = fixtureModel("quantscope_fp32");
    for (onnx::NodeProto& n : *stripped.mutable_graph()->mutable_node()) n.clear_name();
    decodeOnnx(serialize(stripped), "stripped.onnx");
}

// Every binary16 pattern against its definition: (-1)^s 2^(e-15) (1 + m/1024), subnormals
// 2^-14 (m/1024), infinities and NaN; and bfloat16, float32's upper half.
void TestOnnxFileErrors::halfToFloatIsExact()
{
    for (std::uint32_t h = 0; h <= 0xffff; ++h) {
        const int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
        const float got = onnximport::halfToFloat(static_cast<std::uint16_t>(h));
        if (e == 0x1f) {
            QVERIFY(m ? std::isnan(got) : std::isinf(got));
            QCOMPARE(std::signbit(got), sign == 1);
            continue;
        }
        const double want = (sign ? -1.0 : 1.0) * (e ? std::ldexp(1024.0 + m, e - 25) : std::ldexp(static_cast<double>(m), -24));
        if (static_cast<double>(got) != want || std::signbit(got) != (sign == 1))
            QFAIL(qPrintable(QString("0x%1 -> %2, want %3").arg(h, 4, 16, QChar('0')).arg(got).arg(want)));
        QCOMPARE(fp16Bits(got), static_cast<std::uint16_t>(h)); // the test's own encoder, used by halfWeights
    }
    QCOMPARE(onnximport::bfloat16ToFloat(0x3f80), 1.0f);
    QCOMPARE(onnximport::bfloat16ToFloat(0xc040), -3.0f);
    QCOMPARE(onnximport::bfloat16ToFloat(0x0001), std::ldexp(1.0f, -133)); // the smallest subnormal
    QVERIFY(std::isinf(onnximport::bfloat16ToFloat(0x7f80)) && std::isnan(onnximport::bfloat16ToFloat(0x7fc0)));
}

// Weights stored in half precision behind a Cast to float (onnxconverter-common's float16
// conversion of weights; the file repro fp16_weights_cast.onnx was refused as 'element type
// float16'): the model imports, and computes exactly what its float twin (the same rounded
// weights as float32) computes.
void TestOnnxFileErrors::halfPrecisionWeightsMatchFloatTwin_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<bool>("bf16");
    for (const char* f : {"seqview_op13_fold", "residual_op13_fold_dyn", "mobile_op17_nofold_dyn"}) {
        QTest::newRow((std::string(f) + " float16").c_str()) << QString(f) << false;
        QTest::newRow((std::string(f) + " bfloat16").c_str()) << QString(f) << true;
    }
}

void TestOnnxFileErrors::halfPrecisionWeightsMatchFloatTwin()
{
    QFETCH(QString, file);
    QFETCH(bool, bf16);
    onnx::ModelProto twin = parse(kFixtures / (file.toStdString() + ".onnx"));
    const onnx::ModelProto half = halfWeights(twin, bf16);
    const ExportedModel a = importOnnx(serialize(half), "half.onnx"), b = importOnnx(serialize(twin), "twin.onnx");
    QCOMPARE(a.layers.size(), b.layers.size());
    for (std::size_t i = 0; i < a.layers.size(); ++i) {
        QCOMPARE(a.layers[i].name, b.layers[i].name);
        QCOMPARE(a.layers[i].tensors.size(), b.layers[i].tensors.size());
        for (std::size_t t = 0; t < a.layers[i].tensors.size(); ++t) QVERIFY(a.layers[i].tensors[t].values == b.layers[i].tensors[t].values);
    }
    const Reference ref = loadReference(kFixtures / (file.toStdString() + ".json"));
    std::unique_ptr<Model> ma = buildModel(a), mb = buildModel(b);
    RunContext ctx;
    ctx.training = false;
    const Tensor x(ref.inputShape, ref.input);
    const Tensor ya = ma->forward(x, ctx), yb = mb->forward(x, ctx);
    QVERIFY(ya.values() == yb.values());
    // And near PyTorch's float32 outputs (the weights lost their low bits).
    double worst = 0;
    for (std::size_t i = 0; i < ya.numel(); ++i) worst = std::max(worst, std::fabs(double(ya[i]) - ref.output[i]));
    qInfo("%s: max |half-weight model - PyTorch float32| = %.3g", bf16 ? "bfloat16" : "float16", worst);
    QVERIFY(worst < (bf16 ? 0.1 : 0.01));
}

void TestOnnxFileErrors::truncatedFilesFail()
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
            QVERIFY2(!QString(e.what()).contains("levels deep"), e.what()); // damaged, not deep
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

namespace {
// The fixture with a node If whose then-branch holds an If, `depth` times over (tester 8's
// nested_if_60.onnx, made with torch.jit.script'ed conditionals inside conditionals): each If adds
// three protobuf levels (node, attribute, graph).
std::vector<std::uint8_t> nestedIfs(int depth)
{
    onnx::ModelProto mp = fixtureModel("residual_op13_fold_dyn");
    onnx::GraphProto* g = mp.mutable_graph();
    for (int d = 0; d < depth; ++d) {
        onnx::NodeProto* n = g->add_node();
        n->set_op_type("If");
        n->set_name("/if_" + std::to_string(d));
        n->add_input(mp.graph().input(0).name());
        n->add_output("if_out_" + std::to_string(d));
        onnx::AttributeProto* a = n->add_attribute();
        a->set_name("then_branch");
        a->set_type(onnx::AttributeProto::GRAPH);
        g = a->mutable_g();
        g->set_name("then_" + std::to_string(d));
    }
    return serialize(mp);
}
} // namespace

// A file nested deeper than protobuf's recursion limit (100) is refused as nested too deep, by
// the importer and by the reader of QuantScope's own files; one nested less deep parses (and its
// unread Ifs are left out); damaged files are not called deep (truncatedFilesFail).
void TestOnnxFileErrors::deepNestingIsNamed()
{
    const std::vector<std::uint8_t> deep = nestedIfs(60), shallow = nestedIfs(10);
    const std::vector<std::uint8_t> plain = serialize(fixtureModel("residual_op13_fold_dyn"));
    QVERIFY(protobufNestingDepth(deep.data(), deep.size(), 100) > 100);
    const int plainDepth = protobufNestingDepth(plain.data(), plain.size(), 100);
    QVERIFY2(plainDepth >= 4 && plainDepth < 20, qPrintable(QString::number(plainDepth))); // model, graph, node, attribute...
    const int shallowDepth = protobufNestingDepth(shallow.data(), shallow.size(), 100);
    QVERIFY2(shallowDepth >= 30 && shallowDepth <= 100, qPrintable(QString::number(shallowDepth)));
    try {
        importOnnx(deep, "deep.onnx");
        QFAIL("a model nested 180 levels deep imported");
    } catch (const FormatError& e) {
        QVERIFY2(QString(e.what()).startsWith("deep.onnx: "), e.what());
        QVERIFY2(QString(e.what()).contains("more than 100 levels deep"), e.what());
    }
    try {
        decodeOnnx(deep, "deep_own.onnx");
        QFAIL("the reader of QuantScope's files read a model nested 180 levels deep");
    } catch (const FormatError& e) {
        QVERIFY2(QString(e.what()).contains("deep_own.onnx: ") && QString(e.what()).contains("levels deep"), e.what());
    }
    try { // the Ifs read the input and nothing reads them: the importer leaves them out
        const ExportedModel m = importOnnx(shallow, "shallow.onnx");
        QCOMPARE(m.layers.size(), importOnnx(plain, "plain.onnx").layers.size());
    } catch (const Error& e) {
        QFAIL(e.what());
    }
}

// ONNX does not require node names, and exporters leave many empty: such a node is named in an
// error by the value it makes (tester 8: "Concat node ''" said nothing).
void TestOnnxFileErrors::unnamedNodeIsNamedByItsOutput()
{
    onnx::ModelProto mp = fixtureModel("residual_op13_fold_dyn");
    onnx::NodeProto* conv = findNode(mp, "Conv");
    conv->clear_name();
    for (int k = 0; k < 2; ++k) { // an attribute given twice: a FormatError that names the node
        onnx::AttributeProto* a = conv->add_attribute();
        a->set_name("group");
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(1);
    }
    const std::string made = conv->output(0);
    try {
        importOnnx(serialize(mp), "unnamed.onnx");
        QFAIL("a Conv with its group attribute twice imported");
    } catch (const FormatError& e) {
        const QString want = QString::fromStdString("Conv node (unnamed, making '" + made + "')");
        QVERIFY2(QString(e.what()).contains(want), e.what());
        QVERIFY2(!QString(e.what()).contains("node ''"), e.what());
    }
}

QTEST_GUILESS_MAIN(TestOnnxFileErrors)
#include "tst_onnx_file_errors.moc"
