// Broken ONNX files for the import tests (tst_onnx_import_errors: the graph's operators and
// shapes; tst_onnx_file_errors: what a file declares, QuantScope's own exports' metadata and
// half-precision weights): QuantScope's own exports made here, edits of a parsed file, and the
// table of broken files with the check each row gets (a typed error naming the file).
#pragma once

#include "io/onnx_const.h"
#include "io/onnx_io.h"
#include "quant/float_cast.h"
#include "quant/format.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace onnx_import_fixtures {

// QuantScope's own exports, made here (tests/onnx_import holds PyTorch's): resnet8 as an FP32
// graph (its BatchNorms folded into the convolutions: quantscope.bn_folded lists them), and as a
// QDQ graph with int8 per-channel weights and uint8 activations, as `train --strategy ptq --export
// x.onnx` writes it. Their metadata is what encodeOnnx writes for exportFloatModel's and
// exportQuantizedModel's models.
inline ExportedModel quantscopeFloatModel()
{
    std::unique_ptr<Model> model = makeModel("resnet8", 1, 28, 28, 10, 7);
    std::vector<std::string> names;
    for (int c = 0; c < 10; ++c) names.push_back("class" + std::to_string(c));
    return exportFloatModel(*model, "resnet8", Normalization::uniform(0.25f, 0.5f, 1), names);
}

inline ExportedModel quantscopeQdqModel()
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
inline onnx::ModelProto fixtureModel(const std::string& file)
{
    if (file != "quantscope_fp32" && file != "quantscope_qdq") return parse(kFixtures / (file + ".onnx"));
    const std::vector<std::uint8_t> bytes = encodeOnnx(file == "quantscope_qdq" ? quantscopeQdqModel() : quantscopeFloatModel());
    onnx::ModelProto mp;
    if (!mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) throw std::runtime_error("cannot parse " + file);
    return mp;
}

// As readOnnxModel routes a file: QuantScope's own exports to decodeOnnx, every other to the importer.
inline ExportedModel readAsCli(const onnx::ModelProto& mp, const std::string& source)
{
    bool ours = false;
    for (const auto& p : mp.metadata_props()) ours = ours || p.key() == "quantscope.model";
    if (ours && mp.producer_name() == "QuantScope") return decodeOnnx(serialize(mp), source);
    return importOnnx(serialize(mp), source);
}

inline void setMetadata(onnx::ModelProto& mp, const std::string& key, const std::string& value)
{
    setEntry(*mp.mutable_metadata_props(), key, value);
}

inline onnx::TensorShapeProto* inputShape(onnx::ModelProto& mp)
{
    return mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
}

// x as IEEE binary16 bits; x must be a binary16 value (roundFloat to fp16 made it one).
inline std::uint16_t fp16Bits(float x)
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
inline std::uint16_t bf16Bits(float x)
{
    std::uint32_t b = 0;
    std::memcpy(&b, &x, 4);
    return static_cast<std::uint16_t>(b >> 16);
}

// Every float initializer of mp stored as float16 (or bfloat16) "NAME_h" behind a Cast to float
// named NAME, as onnxconverter-common's float16 conversion with keep_io_types writes weights; the
// Casts go first. `mp` itself gets the same weights rounded, in float: the float twin. Half of the
// tensors are stored as raw bytes, half as int32_data (both are ONNX's forms).
inline onnx::ModelProto halfWeights(onnx::ModelProto& twin, bool bf16)
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

// A table of broken files: each row names a fixture (a file of tests/onnx_import, or
// quantscope_fp32 / quantscope_qdq), the edit that breaks it, the error type it must get
// (ConfigError: valid ONNX QuantScope cannot represent; FormatError: a malformed file) and words
// the message must hold.
using Mutate = std::function<void(onnx::ModelProto&)>;

inline void addBrokenFileColumns()
{
    QTest::addColumn<QString>("file");
    QTest::addColumn<void*>("mutate");
    QTest::addColumn<QString>("errorType");
    QTest::addColumn<QString>("mentions");
}

inline void addBrokenFileRow(const char* name, const char* file, Mutate m, const char* type, const char* mentions)
{
    static std::deque<Mutate> kept; // the rows hold pointers into it: a deque's elements stay put
    kept.push_back(std::move(m));
    QTest::newRow(name) << QString(file) << static_cast<void*>(&kept.back()) << QString(type) << QString(mentions);
}

// The current row's file, edited, as `train`/`eval` read it: the error of the row's type,
// starting with the file's name and holding the row's words.
inline void checkBrokenFile()
{
    QFETCH(QString, file);
    QFETCH(void*, mutate);
    QFETCH(QString, errorType);
    QFETCH(QString, mentions);
    onnx::ModelProto mp = fixtureModel(file.toStdString());
    (*static_cast<Mutate*>(mutate))(mp);
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

} // namespace onnx_import_fixtures
