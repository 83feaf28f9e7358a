// Constant tensors of an ONNX graph and the small constant folder the importer (onnx_import.cpp)
// runs on them: initializers and Constant nodes decoded with their sizes checked before anything
// is allocated, and the ops exporters write around layers (shape arithmetic of
// x.view(x.size(0), -1), F.pad's pad lists, weights through Transpose or Cast), evaluated with
// the semantics of the ONNX spec (onnx/onnx docs/Operators.md). Internal to core/io.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace quantscope::onnximport {

// The batch size in a folded shape: Shape() of an activation gives [kBatchDim, C, H, W], so a
// Reshape target computed from x.size(0) is recognised whatever batch the export was traced with.
inline constexpr std::int64_t kBatchDim = std::numeric_limits<std::int64_t>::min() + 1;
// Largest constant (elements) the folder makes or decodes: 2^28 floats = 1 GiB.
inline constexpr std::uint64_t kMaxConstElements = std::uint64_t{1} << 28;
// Largest tensor an op may create beyond its inputs' size (ConstantOfShape, broadcasting, Gather):
// 2^24 elements, so a few bytes of graph cannot ask for gigabytes.
inline constexpr std::uint64_t kMaxFoldedElements = std::uint64_t{1} << 24;
// The most values the importer folds in one graph, all nodes together (2^28, about a second): a
// 5 KB file whose many Transposes each re-fold a 2^24-value constant kept the fuzzer busy for minutes.
inline constexpr std::uint64_t kMaxFoldedTotal = std::uint64_t{1} << 28;
// ConstantOfShape's own limit: 2^20 elements. Exports use it for small index and pads vectors;
// a fuzzed 6 KB file asked for 12.9 million values (0.6 s and 100 MB before the Pad refused them).
inline constexpr std::uint64_t kMaxConstantOfShapeElements = std::uint64_t{1} << 20;

// A constant: float32 values (FLOAT and DOUBLE, rounded to float; FLOAT16 and BFLOAT16, exact) or
// integers (INT64, INT32, INT8, UINT8, BOOL...), row-major with `dims`.
struct ConstTensor {
    bool isFloat = true;
    std::vector<std::int64_t> dims;
    std::vector<float> f;        // isFloat
    std::vector<std::int64_t> i; // !isFloat
    std::string origin;          // the initializer it comes from, through Transpose/Cast/... (layer names)
    // TensorProto::FLOAT16 or BFLOAT16 for half-precision values (held exactly in f), else 0. Kept
    // through the ops that only move values (Reshape, Transpose, Gather...); a Cast to float or
    // double clears it; arithmetic on it is not folded (ONNX computes it in half precision). The
    // importer refuses such a constant as a layer's float input: the graph lacks its Cast.
    int halfType = 0;

    std::size_t numel() const { return isFloat ? f.size() : i.size(); }
    // Values as doubles / int64 whatever the type.
    double at(std::size_t k) const { return isFloat ? f[k] : static_cast<double>(i[k]); }
};

// What a fold failed on; the importer adds the file and the node. `config` marks valid ONNX that
// the folder does not evaluate (ConfigError) rather than a malformed file (FormatError).
struct FoldError {
    std::string what;
    bool config = false;
};

// Internal to the tensor decoder (onnx_const_decode.cpp) and the folder (onnx_const.cpp): how both
// fail, and the element types both read as integers.
namespace fold_detail {
[[noreturn]] inline void fail(const std::string& what, bool config = false) { throw FoldError{what, config}; }
// INT8 to INT64, UINT8 to UINT64 and BOOL: decoded into ConstTensor::i, and the integer targets of a Cast.
bool isIntType(int t);
} // namespace fold_detail

// Element count of `dims`, checked: every dim in [0, 2^31], the product at most kMaxConstElements.
// Throws FoldError.
// An ONNX element type as its name: "int64", "float16", "type 99" for an unknown code.
std::string elemTypeName(std::int64_t type);
std::uint64_t checkedNumel(const std::vector<std::int64_t>& dims, const std::string& what);

// Decodes an initializer or a Constant's tensor. Throws FoldError for external data, an unknown
// element type, or a payload whose size disagrees with its dims.
ConstTensor decodeTensor(const onnx::TensorProto& t);

// IEEE binary16 and bfloat16 bit patterns to float, exactly (subnormals, infinities and NaN kept).
float halfToFloat(std::uint16_t h);
float bfloat16ToFloat(std::uint16_t h);

// Evaluates node `n` on constant inputs (`in[k]` null for an absent optional input) for op types
// where isFoldable() is true. `opset` selects attribute or input forms. Throws FoldError.
std::vector<ConstTensor> foldNode(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in, int opset);
bool isFoldable(const std::string& opType);

// Attribute helpers (absent -> default).
const onnx::AttributeProto* findAttr(const onnx::NodeProto& n, const std::string& name);
// The name of an attribute the node gives twice (a damaged node: onnx.checker refuses it), or null.
const std::string* repeatedAttr(const onnx::NodeProto& n);
std::int64_t attrInt(const onnx::NodeProto& n, const std::string& name, std::int64_t def);
float attrFloat(const onnx::NodeProto& n, const std::string& name, float def);
std::vector<std::int64_t> attrInts(const onnx::NodeProto& n, const std::string& name);
std::string attrString(const onnx::NodeProto& n, const std::string& name, const std::string& def);

} // namespace quantscope::onnximport
