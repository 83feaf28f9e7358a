// Test helper: loads a PyTorch reference case (tests/data/NNN_*.json, see
// /work/shared/golden/README.md) into quantscope::Tensors, and compares tensors with a named
// tolerance. Header-only; include it from any tst_*.cpp.
#pragma once

#include "tensor/tensor.h"

#include <nlohmann/json.hpp>

#include <QDir>
#include <QFile>
#include <QtTest>
#include <QString>
#include <QStringList>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace golden {

// One reference case: {"op", "params", "inputs": {name: tensor}, "outputs": {name: tensor or scalar}}.
struct GoldenCase {
    QString file;
    std::string op;
    nlohmann::json params;
    std::map<std::string, quantscope::Tensor> inputs, outputs;
    std::map<std::string, double> scalars; // plain-number outputs (e.g. "loss")
    nlohmann::json raw;

    const quantscope::Tensor& in(const std::string& name) const { return find(inputs, name, "input"); }
    const quantscope::Tensor& out(const std::string& name) const { return find(outputs, name, "output"); }
    double scalar(const std::string& name) const
    {
        const auto it = scalars.find(name);
        if (it == scalars.end()) throw std::runtime_error(file.toStdString() + ": no scalar output '" + name + "'");
        return it->second;
    }
    // An input tensor of class indices (e.g. NLL targets) as integers.
    std::vector<std::int32_t> intInput(const std::string& name) const
    {
        std::vector<std::int32_t> v;
        for (float f : in(name).values()) v.push_back(static_cast<std::int32_t>(f));
        return v;
    }

private:
    const quantscope::Tensor& find(const std::map<std::string, quantscope::Tensor>& m, const std::string& name,
                                   const char* what) const
    {
        const auto it = m.find(name);
        if (it == m.end()) throw std::runtime_error(file.toStdString() + ": no " + what + " tensor '" + name + "'");
        return it->second;
    }
};

// A float from the file: a number, or one of the strings "inf", "-inf", "nan".
inline float goldenFloat(const nlohmann::json& v)
{
    if (v.is_number()) return v.get<float>();
    if (v.is_string()) {
        const std::string s = v.get<std::string>();
        if (s == "inf") return std::numeric_limits<float>::infinity();
        if (s == "-inf") return -std::numeric_limits<float>::infinity();
        if (s == "nan") return std::numeric_limits<float>::quiet_NaN();
    }
    throw std::runtime_error("golden: not a float: " + v.dump());
}

inline quantscope::Tensor goldenTensor(const nlohmann::json& t)
{
    quantscope::Shape shape;
    for (const auto& d : t.at("shape")) shape.push_back(d.get<std::size_t>());
    std::vector<float> data;
    data.reserve(t.at("data").size());
    for (const auto& v : t.at("data")) data.push_back(goldenFloat(v));
    return quantscope::Tensor(std::move(shape), std::move(data)); // throws if the sizes disagree
}

// `file` is a name inside QS_TEST_DATA ("015_conv2d.json") or a full path.
inline GoldenCase loadGolden(const QString& file)
{
    GoldenCase c;
#ifdef QS_TEST_DATA
    c.file = file.startsWith('/') ? file : QStringLiteral(QS_TEST_DATA "/") + file;
#else
    c.file = file;
#endif
    QFile f(c.file);
    if (!f.open(QIODevice::ReadOnly)) throw std::runtime_error(c.file.toStdString() + ": cannot open reference file");
    const QByteArray bytes = f.readAll();
    try {
        c.raw = nlohmann::json::parse(bytes.constBegin(), bytes.constEnd());
        c.op = c.raw.at("op").get<std::string>();
        c.params = c.raw.value("params", nlohmann::json::object());
        for (const auto& [name, t] : c.raw.at("inputs").items()) c.inputs.emplace(name, goldenTensor(t));
        for (const auto& [name, t] : c.raw.at("outputs").items()) {
            if (t.is_object())
                c.outputs.emplace(name, goldenTensor(t));
            else
                c.scalars.emplace(name, static_cast<double>(goldenFloat(t)));
        }
    } catch (const std::exception& e) {
        throw std::runtime_error(c.file.toStdString() + ": " + e.what());
    }
    return c;
}

#ifdef QS_TEST_DATA
// The reference cases in QS_TEST_DATA (files NNN_*.json) whose "op" is one of `ops`, sorted by
// name. The golden tests take their rows from here, so a case added to tests/data (another
// PyTorch vector of a checked op) is checked without being named in a test.
inline QStringList goldenFiles(std::initializer_list<const char*> ops)
{
    QStringList out;
    const QDir dir(QStringLiteral(QS_TEST_DATA));
    for (const QString& name : dir.entryList({QStringLiteral("[0-9][0-9][0-9]_*.json")}, QDir::Files, QDir::Name)) {
        QFile f(dir.filePath(name));
        if (!f.open(QIODevice::ReadOnly)) throw std::runtime_error(name.toStdString() + ": cannot open reference file");
        const QByteArray bytes = f.readAll();
        std::string op;
        try {
            op = nlohmann::json::parse(bytes.constBegin(), bytes.constEnd()).at("op").get<std::string>();
        } catch (const std::exception& e) {
            throw std::runtime_error(name.toStdString() + ": " + e.what());
        }
        for (const char* o : ops)
            if (op == o) out << name;
    }
    return out;
}

// One QTest row per reference case of `ops` (named by its file), in column "file"; one row with
// an empty name when there is none, which QS_FETCH_GOLDEN fails.
inline void rowsFor(std::initializer_list<const char*> ops)
{
    QTest::addColumn<QString>("file");
    const QStringList files = goldenFiles(ops);
    for (const QString& f : files) QTest::newRow(qPrintable(f)) << f;
    if (files.isEmpty()) QTest::newRow("none") << QString();
}

// Every op a golden test checks (tst_quant_golden, tst_layers_golden, tst_training_golden; resnet8_adam_steps in
// tst_graph). tst_quant_golden everyCaseIsChecked fails on a case whose op is not here.
inline const std::vector<std::string>& checkedGoldenOps()
{
    static const std::vector<std::string> ops = {
        "fake_quantize_per_tensor_affine", "fake_quantize_per_channel_affine", "minmax_observer",
        "per_channel_minmax_observer", "moving_average_minmax_observer", "cast_fp16", "cast_bf16", "conv2d",
        "max_pool2d", "avg_pool2d", "global_avg_pool2d", "linear", "batch_norm2d", "add", "relu6",
        "log_softmax_nll_mean", "mse_mean", "adam", "sgd_momentum", "resnet8_adam_steps", "sigmoid", "tanh", "silu",
        "hardsigmoid", "hardswish", "leaky_relu", "elu", "gelu", "conv2d_geometry", "gelu_tanh", "prelu", "pool_geometry", "hardtanh", "group_norm", "layer_norm2d", "channel_max", "softplus", "mish", "selu", "celu", "softsign", "pad",
        "fake_quantize_learnable_per_tensor_affine", "fake_quantize_learnable_per_channel_affine",
        "fake_quantize_module"};
    return ops;
}
#endif

// |actual - expected| <= atol + rtol * |expected| elementwise; NaN matches NaN, inf matches the
// same inf. Returns an empty string when they agree, else a description of the worst element.
inline std::string compareTensors(const quantscope::Tensor& actual, const quantscope::Tensor& expected, double atol,
                                  double rtol)
{
    std::ostringstream os;
    if (actual.shape() != expected.shape()) {
        os << "shape " << quantscope::shapeString(actual.shape()) << " != expected "
           << quantscope::shapeString(expected.shape());
        return os.str();
    }
    double worst = 0.0;
    std::size_t worstAt = 0, bad = 0;
    for (std::size_t i = 0; i < actual.numel(); ++i) {
        const double a = actual[i], e = expected[i];
        double excess;
        if (std::isnan(e) || std::isinf(e))
            excess = (std::isnan(e) ? std::isnan(a) : a == e) ? 0.0 : std::numeric_limits<double>::infinity();
        else if (!std::isfinite(a))
            excess = std::numeric_limits<double>::infinity();
        else
            excess = std::abs(a - e) - (atol + rtol * std::abs(e));
        if (excess > 0.0) {
            ++bad;
            if (excess > worst || bad == 1) {
                worst = excess;
                worstAt = i;
            }
        }
    }
    if (bad == 0) return {};
    os.precision(9);
    os << bad << " of " << actual.numel() << " elements differ; worst at " << worstAt << ": got " << actual[worstAt]
       << ", expected " << expected[worstAt] << " (atol " << atol << ", rtol " << rtol << ")";
    return os.str();
}

// Largest |actual - expected| (for reporting how close a match is).
inline double maxAbsDiff(const quantscope::Tensor& a, const quantscope::Tensor& b)
{
    double m = 0.0;
    for (std::size_t i = 0; i < a.numel() && i < b.numel(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
    return m;
}

} // namespace golden

// QVERIFY that two tensors agree within (atol, rtol), printing the worst element otherwise.
#define QS_COMPARE_TENSORS(actual, expected, atol, rtol)                                                    \
    do {                                                                                                    \
        const std::string qsCmp_ = golden::compareTensors((actual), (expected), (atol), (rtol));            \
        QVERIFY2(qsCmp_.empty(), (std::string(#actual) + ": " + qsCmp_).c_str());                           \
    } while (false)

// In a data-driven golden test (rows from golden::rowsFor): loads the row's case into `g`.
#define QS_FETCH_GOLDEN(g)                                                                                   \
    QFETCH(QString, file);                                                                                    \
    QVERIFY2(!file.isEmpty(), "no reference case of this op in tests/data");                                  \
    const golden::GoldenCase g = golden::loadGolden(file)
