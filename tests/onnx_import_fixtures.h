// Shared by the ONNX import tests (tst_onnx_import and tst_onnx_import_input: PyTorch exports
// against PyTorch's outputs; tst_onnx_import_errors and tst_onnx_file_errors: broken files made
// from them, with onnx_broken_files.h): the fixtures' folder and reference outputs, protobuf edits
// of a parsed file, and the imported model's forward against PyTorch's.
#pragma once

#include "io/exported_model.h"
#include "io/onnx_import.h"
#include "nn/model.h"
#include "nn/model_zoo.h"

#include <onnx/onnx_pb.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace onnx_import_fixtures {

using namespace quantscope;
namespace fs = std::filesystem;


constexpr double kOutputTol = 1e-4;               // |QuantScope - PyTorch| per output value (the brief's bound)
constexpr double kMinPredictionAgreement = 0.999; // issue 9: argmax equal to PyTorch's on the 10k test images

inline const fs::path kFixtures = fs::path(QS_ONNX_FIXTURES);

struct Reference {
    Shape inputShape, outputShape;
    std::vector<float> input, output;
    std::string head;
};

inline Reference loadReference(const fs::path& p)
{
    std::ifstream f(p);
    if (!f) throw std::runtime_error("cannot open " + p.string());
    const nlohmann::json j = nlohmann::json::parse(f);
    Reference r;
    r.inputShape = j.at("input_shape").get<Shape>();
    r.outputShape = j.at("output_shape").get<Shape>();
    r.input = j.at("input").get<std::vector<float>>();
    r.output = j.at("output").get<std::vector<float>>();
    r.head = j.at("head").get<std::string>();
    return r;
}

inline std::vector<std::uint8_t> fileBytes(const fs::path& p)
{
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

// The fixture NAME.onnx, imported.
inline ExportedModel importFixture(const std::string& name)
{
    const fs::path p = kFixtures / (name + ".onnx");
    return importOnnx(fileBytes(p), p.string());
}

// em's float forward on the reference's input (its output, flat).
inline std::vector<float> forwardOn(const ExportedModel& em, const Reference& ref)
{
    std::unique_ptr<Model> model = buildModel(em);
    RunContext ctx;
    return model->forward(Tensor(ref.inputShape, ref.input), ctx).values();
}

// Each layer's kind, in order; how many layers are of kind k.
inline std::vector<LayerKind> kindsOf(const ExportedModel& m)
{
    std::vector<LayerKind> k;
    for (const StoredLayer& l : m.layers) k.push_back(l.kind);
    return k;
}
inline std::size_t countKind(const ExportedModel& m, LayerKind k)
{
    return static_cast<std::size_t>(std::count_if(m.layers.begin(), m.layers.end(), [&](const StoredLayer& l) { return l.kind == k; }));
}

inline onnx::ModelProto parse(const fs::path& p)
{
    const std::vector<std::uint8_t> b = fileBytes(p);
    onnx::ModelProto mp;
    if (!mp.ParseFromArray(b.data(), static_cast<int>(b.size()))) throw std::runtime_error("cannot parse " + p.string());
    return mp;
}

// Sets key to value in a list of ONNX string entries (metadata_props, a tensor's external_data),
// adding the entry when it is not there.
inline void setEntry(google::protobuf::RepeatedPtrField<onnx::StringStringEntryProto>& entries, const std::string& key,
                     const std::string& value)
{
    for (onnx::StringStringEntryProto& e : entries)
        if (e.key() == key) {
            e.set_value(value);
            return;
        }
    onnx::StringStringEntryProto* e = entries.Add();
    e->set_key(key);
    e->set_value(value);
}

inline std::vector<std::uint8_t> serialize(const onnx::ModelProto& mp)
{
    std::string s;
    mp.SerializeToString(&s);
    return {s.begin(), s.end()};
}

inline onnx::NodeProto* findNode(onnx::ModelProto& mp, const std::string& op)
{
    for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
        if (n.op_type() == op) return &n;
    throw std::runtime_error("no " + op + " node");
}

// fn(t) on the constant named `name`: the initializer, and the tensor of the Constant node that
// makes it (torch writes either, by opset and constant folding). runtime_error when the graph has
// neither, so that an edit which finds nothing does not pass as the error row it was meant for.
template <typename Fn>
void editConstant(onnx::ModelProto& mp, const std::string& name, Fn&& fn)
{
    bool found = false;
    for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer())
        if (t.name() == name) {
            fn(t);
            found = true;
        }
    for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
        if (n.op_type() == "Constant" && n.output_size() == 1 && n.output(0) == name && n.attribute_size() > 0 &&
            n.attribute(0).has_t()) {
            fn(*n.mutable_attribute(0)->mutable_t());
            found = true;
        }
    if (!found) throw std::runtime_error("no constant '" + name + "'");
}

inline void setInts(onnx::NodeProto* n, const std::string& name, std::vector<std::int64_t> v)
{
    for (onnx::AttributeProto& a : *n->mutable_attribute())
        if (a.name() == name) {
            a.clear_ints();
            for (std::int64_t x : v) a.add_ints(x);
            return;
        }
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (std::int64_t x : v) a->add_ints(x);
}

// Runs the imported model in eval mode on the reference input and returns the largest deviation
// from PyTorch's output (probabilities where the file ends in Softmax: the model's last layer).
inline double maxDeviation(const ExportedModel& em, const Reference& ref)
{
    std::unique_ptr<Model> model = buildModel(em);
    const Tensor x(ref.inputShape, ref.input);
    RunContext ctx;
    ctx.training = false;
    Tensor y = model->forward(x, ctx);
    Shape want = ref.outputShape; // [N, classes, 1, 1] scores are read as [N, classes]
    while (want.size() > 2 && want.back() == 1) want.pop_back();
    if (y.shape() != want) throw std::runtime_error("output shape " + shapeString(y.shape()) + " vs " + shapeString(ref.outputShape));
    double worst = 0;
    for (std::size_t i = 0; i < y.numel(); ++i) worst = std::max(worst, std::fabs(double(y[i]) - ref.output[i]));
    return worst;
}

// A node `op` put between the graph's Softmax and the graph output: the Softmax's output becomes
// "probs", which the node reads as its `inputs` say, and the node makes the graph output.
inline onnx::NodeProto* afterSoftmax(onnx::ModelProto& mp, const std::string& op, const std::vector<std::string>& inputs)
{
    onnx::NodeProto* sm = findNode(mp, "Softmax");
    const std::string out = sm->output(0);
    sm->set_output(0, "probs");
    onnx::NodeProto* n = mp.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name("/" + op + "_after_softmax");
    for (const std::string& in : inputs) n->add_input(in);
    n->add_output(out);
    return n;
}

inline std::vector<std::string> layerNames(const ExportedModel& m)
{
    std::vector<std::string> v;
    for (const StoredLayer& l : m.layers) v.push_back(l.name);
    return v;
}

// The flat MLP's Sub reads a [2] mean (one per feature, which a flat input cannot take) instead of its scalar.
inline void subtractPerFeatureMean(onnx::ModelProto& mp)
{
    onnx::TensorProto* t = mp.mutable_graph()->add_initializer();
    t->set_name("mean_per_feature");
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(2);
    t->add_float_data(0.5f);
    t->add_float_data(0.4f);
    findNode(mp, "Sub")->set_input(1, "mean_per_feature");
}

// The Constant node that makes `value` holds the one int64 v instead.
inline void setConstantNode(onnx::ModelProto& mp, const std::string& value, std::int64_t v)
{
    for (onnx::NodeProto& n : *mp.mutable_graph()->mutable_node())
        if (n.op_type() == "Constant" && n.output(0) == value) {
            onnx::TensorProto* t = n.mutable_attribute(0)->mutable_t();
            t->clear_raw_data();
            t->clear_int64_data();
            t->add_int64_data(v);
        }
}

inline bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }


} // namespace onnx_import_fixtures
