// FP32 ONNX import of broken files, made here from the PyTorch exports in tests/onnx_import
// through libonnx's protobuf classes: each gets a typed error (FormatError for a malformed file,
// ConfigError for valid ONNX QuantScope cannot represent) naming the file and, for a node, its op
// type and name; truncated files never import. QuantScope's own exports (FP32 and QDQ, made here
// with encodeOnnx) go, as in readOnnxModel, to the reader of its own files, which refuses
// edited quantscope.* metadata by key and value.
#include "io/onnx_import.h"
#include "io/onnx_const.h"
#include "io/onnx_io.h"
#include "quant/float_cast.h"
#include "quant/format.h"
#include "train/precision_config.h"
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
    void quantscopeMetadataAccepted();
    void halfToFloatIsExact();
    void halfPrecisionWeightsMatchFloatTwin_data();
    void halfPrecisionWeightsMatchFloatTwin();
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

// QuantScope's own exports, made here (tests/onnx_import holds PyTorch's): resnet8 as an FP32
// graph (its BatchNorms folded into the convolutions: quantscope.bn_folded lists them), and as a
// QDQ graph with int8 per-channel weights and uint8 activations, as `train --strategy ptq --export
// x.onnx` writes it. Their metadata is what encodeOnnx writes for exportFloatModel's and
// exportQuantizedModel's models.
ExportedModel quantscopeFloatModel()
{
    std::unique_ptr<Model> model = makeModel("resnet8", 1, 28, 28, 10, 7);
    std::vector<std::string> names;
    for (int c = 0; c < 10; ++c) names.push_back("class" + std::to_string(c));
    return exportFloatModel(*model, "resnet8", Normalization::uniform(0.25f, 0.5f, 1), names);
}

ExportedModel quantscopeQdqModel()
{
    ExportedModel m = onnxForm(quantscopeFloatModel()); // BatchNorms folded, as the integer export folds them
    m.quantized = true;
    m.strategy = "ptq";
    m.weightFormat = "int8";
    m.activationFormat = "uint8";
    m.granularity = "channel";
    m.inputQuant = ActivationQuant{8, false, 0, 255, 1.0f / 64.0f, 128};
    for (StoredLayer& l : m.layers) {
        l.outputQuant = ActivationQuant{8, false, 0, 255, 1.0f / 32.0f, 128};
        if (l.kind != LayerKind::Conv2d && l.kind != LayerKind::Linear) continue;
        StoredTensor& w = l.tensors.at(0);
        const std::size_t rows = w.rows(), row = w.rowLength();
        w.encoding = TensorEncoding::Int;
        w.bits = 8, w.isSigned = true, w.qmin = -128, w.qmax = 127;
        w.layout = ScaleLayout::Channel;
        w.scales.assign(rows, 1.0f);
        w.zeroPoints.assign(rows, 0);
        w.q.resize(w.values.size());
        for (std::size_t r = 0; r < rows; ++r) {
            float amax = 0;
            for (std::size_t j = 0; j < row; ++j) amax = std::max(amax, std::fabs(w.values[r * row + j]));
            if (amax > 0) w.scales[r] = amax / 127.0f;
            for (std::size_t j = 0; j < row; ++j) w.q[r * row + j] = static_cast<std::int32_t>(std::lround(w.values[r * row + j] / w.scales[r]));
        }
        w.values.clear();
    }
    return m;
}

// A fixture by name: "quantscope_fp32" and "quantscope_qdq" are the exports above, any other
// name a file of tests/onnx_import.
onnx::ModelProto fixtureModel(const std::string& file)
{
    if (file != "quantscope_fp32" && file != "quantscope_qdq") return parse(kFixtures / (file + ".onnx"));
    const std::vector<std::uint8_t> bytes = encodeOnnx(file == "quantscope_qdq" ? quantscopeQdqModel() : quantscopeFloatModel());
    onnx::ModelProto mp;
    if (!mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) throw std::runtime_error("cannot parse " + file);
    return mp;
}

// As readOnnxModel routes a file: QuantScope's own exports to decodeOnnx, every other to the importer.
ExportedModel readAsCli(const onnx::ModelProto& mp, const std::string& source)
{
    bool ours = false;
    for (const auto& p : mp.metadata_props()) ours = ours || p.key() == "quantscope.model";
    if (ours && mp.producer_name() == "QuantScope") return decodeOnnx(serialize(mp), source);
    return importOnnx(serialize(mp), source);
}

void setMetadata(onnx::ModelProto& mp, const std::string& key, const std::string& value)
{
    for (onnx::StringStringEntryProto& p : *mp.mutable_metadata_props())
        if (p.key() == key) {
            p.set_value(value);
            return;
        }
    onnx::StringStringEntryProto* p = mp.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
}

onnx::TensorShapeProto* inputShape(onnx::ModelProto& mp)
{
    return mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
}

// x as IEEE binary16 bits; x must be a binary16 value (roundFloat to fp16 made it one).
std::uint16_t fp16Bits(float x)
{
    const auto sign = static_cast<std::uint16_t>(std::signbit(x) ? 0x8000 : 0);
    const float a = std::fabs(x);
    if (std::isnan(x)) return sign | 0x7e00;
    if (std::isinf(x)) return sign | 0x7c00;
    if (a < std::ldexp(1.0f, -14)) return sign | static_cast<std::uint16_t>(std::lround(std::ldexp(a, 24))); // subnormal or 0
    int e = 0;
    const float m = std::frexp(a, &e); // a = m 2^e, m in [0.5, 1)
    return sign | static_cast<std::uint16_t>((e - 1 + 15) << 10) | static_cast<std::uint16_t>(std::lround((2 * m - 1) * 1024));
}

// x as bfloat16 bits; x must be a bfloat16 value.
std::uint16_t bf16Bits(float x)
{
    std::uint32_t b = 0;
    std::memcpy(&b, &x, 4);
    return static_cast<std::uint16_t>(b >> 16);
}

// Every float initializer of mp stored as float16 (or bfloat16) "NAME_h" behind a Cast to float
// named NAME, as onnxconverter-common's float16 conversion with keep_io_types writes weights; the
// Casts go first. `mp` itself gets the same weights rounded, in float: the float twin. Half of the
// tensors are stored as raw bytes, half as int32_data (both are ONNX's forms).
onnx::ModelProto halfWeights(onnx::ModelProto& twin, bool bf16)
{
    onnx::ModelProto half = twin;
    const NumberFormat& f = findFormat(bf16 ? "bf16" : "fp16");
    half.mutable_graph()->clear_initializer();
    std::vector<onnx::NodeProto> casts;
    int k = 0;
    for (onnx::TensorProto& t : *twin.mutable_graph()->mutable_initializer()) {
        if (t.data_type() != onnx::TensorProto::FLOAT) {
            *half.mutable_graph()->add_initializer() = t;
            continue;
        }
        std::vector<float> v(t.raw_data().size() / 4);
        std::memcpy(v.data(), t.raw_data().data(), v.size() * 4);
        if (!t.has_raw_data()) v.assign(t.float_data().begin(), t.float_data().end());
        onnx::TensorProto h;
        h.set_name(t.name() + "_h");
        h.mutable_dims()->CopyFrom(t.dims());
        h.set_data_type(bf16 ? onnx::TensorProto::BFLOAT16 : onnx::TensorProto::FLOAT16);
        std::string raw;
        for (float& x : v) {
            x = roundFloat(x, f, Rounding::Nearest);
            const std::uint16_t b = bf16 ? bf16Bits(x) : fp16Bits(x);
            raw.push_back(static_cast<char>(b & 0xff));
            raw.push_back(static_cast<char>(b >> 8));
            if (k % 2) h.add_int32_data(b);
        }
        if (k++ % 2 == 0) h.set_raw_data(raw);
        *half.mutable_graph()->add_initializer() = h;
        t.clear_float_data();
        t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
        onnx::NodeProto c;
        c.set_op_type("Cast");
        c.set_name(t.name() + "_cast");
        c.add_input(h.name());
        c.add_output(t.name());
        onnx::AttributeProto* to = c.add_attribute();
        to->set_name("to");
        to->set_type(onnx::AttributeProto::INT);
        to->set_i(onnx::TensorProto::FLOAT);
        casts.push_back(c);
    }
    onnx::GraphProto* g = half.mutable_graph();
    google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
    for (const onnx::NodeProto& c : casts) *nodes.Add() = c;
    for (const onnx::NodeProto& n : g->node()) *nodes.Add() = n;
    g->mutable_node()->Swap(&nodes);
    return half;
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
    using Mutate = std::function<void(onnx::ModelProto&)>;
    QTest::addColumn<QString>("file");
    QTest::addColumn<void*>("mutate");
    QTest::addColumn<QString>("errorType");
    QTest::addColumn<QString>("mentions");
    static std::vector<Mutate> keep; // the rows hold pointers into this
    keep.reserve(192); // more than the rows: the pointers must not move
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
    // Operators QuantScope has no layer for name the PyTorch modules that export as them.
    row("GroupNorm's operator", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("InstanceNormalization"); },
        "ConfigError", "operator InstanceNormalization is not supported by QuantScope's importer; nn.GroupNorm and nn.InstanceNorm2d");
    row("interpolate's operator", "seqview_op13_fold", [](onnx::ModelProto& mp) { findNode(mp, "Relu")->set_op_type("Resize"); },
        "ConfigError", "Resize node '/Relu': operator Resize is not supported by QuantScope's importer; F.interpolate and nn.Upsample");
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
        "ConfigError", "Sub node '/Sub': applies a constant to an activation inside the network (after a ReLU");
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
    row("opset 8", "seqview_op13_fold", [](onnx::ModelProto& mp) { mp.mutable_opset_import(0)->set_version(8); }, "ConfigError",
        "uses ONNX opset 8; opsets 9 to 23 are read");
    // torch's opset-9 export of MaxPool2d(ceil_mode=True): larger end pads (no ceil_mode before
    // opset 10), refused with the export that works (opset 10: tst_onnx_import matchesPyTorch).
    row("opset 9 ceil_mode as end pads", "poolgeom_max_op9_nofold", [](onnx::ModelProto&) {}, "ConfigError",
        "opset 9 has no ceil_mode, so torch.onnx.export writes ceil_mode=True as larger end pads: export with opset_version 10");
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
    row("opset 18 Pad of the channel axis", "poolpad_op13_fold_dyn", padAxes({1, 1}, {-3}), "ConfigError",
        "pads the batch or channel axis");
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
        "ConfigError", "applies a constant to an activation inside the network");
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
    row("metadata key twice", "quantscope_qdq",
        [](onnx::ModelProto& mp) {
            onnx::StringStringEntryProto* p = mp.add_metadata_props();
            p->set_key("quantscope.weight_format");
            p->set_value("int4");
        },
        "FormatError", "metadata quantscope.weight_format is given twice");
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
    // Half precision: weights stored as float16 behind a Cast import (halfPrecisionWeightsMatchFloatTwin);
    // a float16 graph input, activations cast to float16, a float16 weight with no Cast, and a NaN
    // among float16 weights are refused, each saying which.
    row("float16 input (model.half())", "seqview_op13_fold",
        [](onnx::ModelProto& mp) {
            onnx::ModelProto twin = mp;
            mp = halfWeights(twin, false);
            mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT16);
        },
        "ConfigError", "input 'input' has element type float16: the model computes in half precision (a model.half() export), which QuantScope "
        "does not import; export the model in float32");
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
            findNode(mp, "Cast")->set_op_type("Neg");
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

void TestOnnxImportErrors::badInput()
{
    QFETCH(QString, file);
    QFETCH(void*, mutate);
    QFETCH(QString, errorType);
    QFETCH(QString, mentions);
    onnx::ModelProto mp = fixtureModel(file.toStdString());
    (*static_cast<std::function<void(onnx::ModelProto&)>*>(mutate))(mp);
    const std::string source = "broken/" + file.toStdString() + ".onnx";
    try {
        readAsCli(mp, source);
        QFAIL("imported a broken file");
    } catch (const Error& e) {
        const QString msg = e.what();
        const QString type = dynamic_cast<const ConfigError*>(&e) ? "ConfigError" : dynamic_cast<const FormatError*>(&e) ? "FormatError" : "Error";
        QVERIFY2(type == errorType, qPrintable(type + ": " + msg));
        QVERIFY2(msg.startsWith(QString::fromStdString(source)), e.what());
        QVERIFY2(msg.contains(mentions), e.what());
    }
}

// What the reader of QuantScope's own files accepts is what QuantScope writes: every strategy
// train knows on an FP32 graph, the quantizing ones on a QDQ graph, a precision plan's per-layer
// format and granularity, and the unedited exports themselves.
void TestOnnxImportErrors::quantscopeMetadataAccepted()
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
void TestOnnxImportErrors::halfToFloatIsExact()
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
void TestOnnxImportErrors::halfPrecisionWeightsMatchFloatTwin_data()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<bool>("bf16");
    for (const char* f : {"seqview_op13_fold", "residual_op13_fold_dyn", "mobile_op17_nofold_dyn"}) {
        QTest::newRow((std::string(f) + " float16").c_str()) << QString(f) << false;
        QTest::newRow((std::string(f) + " bfloat16").c_str()) << QString(f) << true;
    }
}

void TestOnnxImportErrors::halfPrecisionWeightsMatchFloatTwin()
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
