// Decoding of ONNX tensors into ConstTensor (see onnx_const.h): initializers and Constant values
// of every element type the importer reads (float32 and float64; float16 and bfloat16, exactly;
// the integer types), their sizes checked before anything is allocated, and element type names
// for errors. The constant folder that computes on them: onnx_const.cpp.
#include "io/onnx_const.h"
#include "util/ascii_text.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace quantscope::onnximport {

using fold_detail::fail;
using fold_detail::isIntType;

namespace {

using onnx::TensorProto;

std::size_t intWidth(int t)
{
    switch (t) {
    case TensorProto::INT64:
    case TensorProto::UINT64: return 8;
    case TensorProto::INT32:
    case TensorProto::UINT32: return 4;
    case TensorProto::INT16:
    case TensorProto::UINT16: return 2;
    default: return 1;
    }
}

std::int64_t rawInt(const char* p, int t)
{
    switch (t) {
    case TensorProto::INT64:
    case TensorProto::UINT64: {
        std::int64_t v;
        std::memcpy(&v, p, 8);
        return v;
    }
    case TensorProto::INT32: {
        std::int32_t v;
        std::memcpy(&v, p, 4);
        return v;
    }
    case TensorProto::UINT32: {
        std::uint32_t v;
        std::memcpy(&v, p, 4);
        return v;
    }
    case TensorProto::INT16: {
        std::int16_t v;
        std::memcpy(&v, p, 2);
        return v;
    }
    case TensorProto::UINT16: {
        std::uint16_t v;
        std::memcpy(&v, p, 2);
        return v;
    }
    case TensorProto::INT8: return static_cast<std::int8_t>(*p);
    default: return static_cast<std::uint8_t>(*p);
    }
}

} // namespace

bool fold_detail::isIntType(int t)
{
    switch (t) {
    case TensorProto::INT64:
    case TensorProto::INT32:
    case TensorProto::INT16:
    case TensorProto::INT8:
    case TensorProto::UINT8:
    case TensorProto::UINT16:
    case TensorProto::UINT32:
    case TensorProto::UINT64:
    case TensorProto::BOOL: return true;
    default: return false;
    }
}

std::string elemTypeName(std::int64_t type)
{
    if (type < 0 || type > INT32_MAX || !onnx::TensorProto::DataType_IsValid(static_cast<int>(type)))
        return "type " + std::to_string(type);
    return asciiLower(onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(type)));
}

std::uint64_t checkedNumel(const std::vector<std::int64_t>& dims, const std::string& what)
{
    std::uint64_t n = 1;
    for (std::int64_t d : dims) {
        if (d < 0 || d > (std::int64_t{1} << 31)) fail(what + ": dimension " + std::to_string(d) + " is out of range");
        n *= static_cast<std::uint64_t>(d); // both factors <= 2^31 and n <= 2^28: no overflow
        if (n > kMaxConstElements) fail(what + ": more than " + std::to_string(kMaxConstElements) + " elements");
    }
    return n;
}

ConstTensor decodeTensor(const TensorProto& t)
{
    const std::string what = "tensor '" + t.name() + "'";
    if (t.data_location() == TensorProto::EXTERNAL || t.external_data_size() > 0)
        fail(what + " keeps its data in an external file; save the model with its weights inside (onnx.save(..., save_as_external_data=False))", true);
    if (t.has_segment()) fail(what + " is segmented", true);
    ConstTensor r;
    r.origin = t.name();
    r.dims.assign(t.dims().begin(), t.dims().end());
    const std::uint64_t n = checkedNumel(r.dims, what);
    const int type = t.data_type();
    const bool raw = t.has_raw_data();
    const std::uint64_t rawSize = t.raw_data().size();
    auto needCount = [&](std::uint64_t have, std::uint64_t width) {
        if (raw) {
            if (rawSize != n * width)
                fail(what + " holds " + std::to_string(rawSize) + " bytes, its dims need " + std::to_string(n * width));
        } else if (have != n) {
            fail(what + " holds " + std::to_string(have) + " values, its dims need " + std::to_string(n));
        }
    };
    if (type == TensorProto::FLOAT) {
        needCount(static_cast<std::uint64_t>(t.float_data_size()), 4);
        r.f.resize(n);
        if (raw) std::memcpy(r.f.data(), t.raw_data().data(), n * 4);
        else std::copy(t.float_data().begin(), t.float_data().end(), r.f.begin());
    } else if (type == TensorProto::DOUBLE) {
        needCount(static_cast<std::uint64_t>(t.double_data_size()), 8);
        r.f.resize(n);
        for (std::uint64_t k = 0; k < n; ++k) {
            double v;
            if (raw) std::memcpy(&v, t.raw_data().data() + 8 * k, 8);
            else v = t.double_data(static_cast<int>(k));
            r.f[k] = static_cast<float>(v);
        }
    } else if (type == TensorProto::FLOAT16 || type == TensorProto::BFLOAT16) {
        // Two bytes each: raw little-endian, or one per int32_data entry (onnx.proto: "float16 and
        // bfloat16 values are stored as uint16 bit patterns in int32_data").
        needCount(static_cast<std::uint64_t>(t.int32_data_size()), 2);
        r.halfType = type;
        r.f.resize(n);
        for (std::uint64_t k = 0; k < n; ++k) {
            std::uint16_t h;
            if (raw) {
                const auto* p = reinterpret_cast<const unsigned char*>(t.raw_data().data() + 2 * k);
                h = static_cast<std::uint16_t>(p[0] | (p[1] << 8));
            } else {
                const std::int32_t v = t.int32_data(static_cast<int>(k));
                if (v < 0 || v > 0xffff) fail(what + " holds " + std::to_string(v) + " in int32_data, not a 16-bit pattern");
                h = static_cast<std::uint16_t>(v);
            }
            r.f[k] = type == TensorProto::FLOAT16 ? halfToFloat(h) : bfloat16ToFloat(h);
        }
    } else if (isIntType(type)) {
        r.isFloat = false;
        const std::size_t width = intWidth(type);
        const bool in64 = type == TensorProto::INT64;
        const bool inU64 = type == TensorProto::UINT32 || type == TensorProto::UINT64;
        needCount(static_cast<std::uint64_t>(in64 ? t.int64_data_size() : inU64 ? t.uint64_data_size() : t.int32_data_size()), width);
        r.i.resize(n);
        for (std::uint64_t k = 0; k < n; ++k) {
            const int kk = static_cast<int>(k);
            if (raw) r.i[k] = rawInt(t.raw_data().data() + width * k, type);
            else r.i[k] = in64 ? t.int64_data(kk) : inU64 ? static_cast<std::int64_t>(t.uint64_data(kk)) : t.int32_data(kk);
        }
    } else {
        fail(what + " has element type " + elemTypeName(type) + "; float32, float64, float16, bfloat16 and integers are read", true);
    }
    return r;
}

float halfToFloat(std::uint16_t h)
{
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    std::uint32_t bits = 0;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13); // infinity, or NaN with its payload
    } else if (exponent != 0) {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13); // normal: rebias the exponent
    } else if (mantissa == 0) {
        bits = sign; // +-0
    } else {
        // Subnormal: mantissa * 2^-24, a normal float32 (shift the leading 1 into the implicit bit).
        int e = -1;
        std::uint32_t m = mantissa;
        while (!(m & 0x400u)) m <<= 1, ++e;
        bits = sign | static_cast<std::uint32_t>(127 - 15 - e) << 23 | ((m & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float bfloat16ToFloat(std::uint16_t h)
{
    const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16; // bfloat16 is float32's top half
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

} // namespace quantscope::onnximport
