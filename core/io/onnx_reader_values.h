// The reader of QuantScope's own ONNX exports (onnx_reader.cpp): its initializer and attribute
// readers, each a FormatError naming the file and the initializer, node or attribute when the
// value is not what encodeOnnx writes. Internal to core/io.
#pragma once

#include "io/onnx_parse.h"
#include "util/errors.h"

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace quantscope {

class OnnxReaderValues {
protected:
    using TensorProto = onnx::TensorProto;
    OnnxReaderValues(const onnx::ModelProto& mp, const std::string& source) : m_source(source)
    {
        for (const TensorProto& t : mp.graph().initializer()) m_init[t.name()] = &t;
    }

    [[noreturn]] void fail(const std::string& what) const { throw FormatError(m_source + ": " + what); }
    [[noreturn]] void failNode(const onnx::NodeProto& n, const std::string& what) const
    {
        fail(n.op_type() + " " + onnxNodeName(n) + ": " + what);
    }

    // ---- initializers
    const TensorProto& init(const std::string& name) const
    {
        const auto it = m_init.find(name);
        if (it == m_init.end()) fail("'" + name + "' is not an initializer");
        return *it->second;
    }
    std::uint64_t numel(const TensorProto& t) const
    {
        std::uint64_t n = 1;
        for (std::int64_t d : t.dims()) {
            if (d <= 0 || d > (std::int64_t{1} << 31)) fail("initializer '" + t.name() + "' has dimension " + std::to_string(d));
            n *= static_cast<std::uint64_t>(d);
            if (n > (std::uint64_t{1} << 31)) fail("initializer '" + t.name() + "' is too large");
        }
        return n;
    }
    std::vector<float> floats(const TensorProto& t) const
    {
        const std::uint64_t n = numel(t);
        if (t.data_type() != TensorProto::FLOAT) fail("initializer '" + t.name() + "' is not float32");
        std::vector<float> v;
        if (t.has_raw_data()) {
            if (t.raw_data().size() != n * 4) fail("initializer '" + t.name() + "' holds the wrong number of bytes");
            v.resize(static_cast<std::size_t>(n));
            std::memcpy(v.data(), t.raw_data().data(), n * 4);
        } else {
            if (static_cast<std::uint64_t>(t.float_data_size()) != n) fail("initializer '" + t.name() + "' holds the wrong number of values");
            v.assign(t.float_data().begin(), t.float_data().end());
        }
        return v;
    }
    float scalar(const TensorProto& t) const
    {
        const std::vector<float> v = floats(t);
        if (v.size() != 1) fail("initializer '" + t.name() + "' is not one value");
        return v[0];
    }
    std::vector<std::int32_t> ints(const TensorProto& t) const
    {
        const std::uint64_t n = numel(t);
        const int type = t.data_type();
        const std::size_t width = type == TensorProto::INT32 ? 4 : 1;
        if (type != TensorProto::INT32 && type != TensorProto::INT8 && type != TensorProto::UINT8)
            fail("initializer '" + t.name() + "' is not int8, uint8 or int32");
        std::vector<std::int32_t> v;
        if (t.has_raw_data()) {
            if (t.raw_data().size() != n * width) fail("initializer '" + t.name() + "' holds the wrong number of bytes");
            v.resize(static_cast<std::size_t>(n));
            const char* p = t.raw_data().data();
            for (std::size_t i = 0; i < v.size(); ++i) {
                if (type == TensorProto::INT32) std::memcpy(&v[i], p + 4 * i, 4);
                else if (type == TensorProto::INT8) v[i] = static_cast<std::int8_t>(p[i]);
                else v[i] = static_cast<std::uint8_t>(p[i]);
            }
        } else {
            if (static_cast<std::uint64_t>(t.int32_data_size()) != n) fail("initializer '" + t.name() + "' holds the wrong number of values");
            v.assign(t.int32_data().begin(), t.int32_data().end());
        }
        return v;
    }

    // ---- attributes
    std::int64_t attrInt(const onnx::NodeProto& n, const std::string& name, std::int64_t def) const
    {
        for (const auto& a : n.attribute())
            if (a.name() == name) return a.i();
        return def;
    }
    float attrFloat(const onnx::NodeProto& n, const std::string& name, float def) const
    {
        for (const auto& a : n.attribute())
            if (a.name() == name) return a.f();
        return def;
    }
    std::string attrString(const onnx::NodeProto& n, const std::string& name, const std::string& def) const
    {
        for (const auto& a : n.attribute())
            if (a.name() == name) return a.s();
        return def;
    }
    std::vector<std::int64_t> attrInts(const onnx::NodeProto& n, const std::string& name) const
    {
        for (const auto& a : n.attribute())
            if (a.name() == name) return {a.ints().begin(), a.ints().end()};
        return {};
    }
    // count values in [lo, 64] (def when the attribute is absent)
    std::vector<std::size_t> sizesAttr(const onnx::NodeProto& n, const std::string& name, std::size_t count,
                                       std::vector<std::size_t> def, std::int64_t lo) const
    {
        const std::vector<std::int64_t> v = attrInts(n, name);
        if (v.empty()) return def;
        if (v.size() != count) failNode(n, "attribute " + name + " has " + std::to_string(v.size()) + " values");
        std::vector<std::size_t> out;
        for (std::int64_t x : v) {
            if (x < lo || x > 64) failNode(n, "attribute " + name + " holds " + std::to_string(x) + ", out of range");
            out.push_back(static_cast<std::size_t>(x));
        }
        return out;
    }


    const std::string& m_source;
    std::map<std::string, const TensorProto*> m_init;
};

} // namespace quantscope
