#include "io/onnx_parse.h"

#include "util/errors.h"

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <limits>

namespace quantscope {

namespace {

// Protobuf wire format (protobuf.dev/programming-guides/encoding): a message is a sequence of
// fields, each a varint tag (field number << 3 | wire type) and a payload.
bool readVarint(const std::uint8_t*& p, const std::uint8_t* end, std::uint64_t& v)
{
    v = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
        const std::uint8_t b = *p++;
        v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

// One field from p: false where the bytes are not a valid field inside [p, end). A length-delimited
// field's payload is [payload, payload + len).
bool readField(const std::uint8_t*& p, const std::uint8_t* end, const std::uint8_t*& payload, std::size_t& len)
{
    std::uint64_t tag = 0;
    if (!readVarint(p, end, tag) || (tag >> 3) == 0 || (tag >> 3) > (1u << 29) - 1) return false;
    payload = nullptr;
    len = 0;
    const auto left = static_cast<std::size_t>(end - p);
    switch (tag & 7) {
    case 0: {
        std::uint64_t v = 0;
        return readVarint(p, end, v);
    }
    case 1:
        if (left < 8) return false;
        p += 8;
        return true;
    case 5:
        if (left < 4) return false;
        p += 4;
        return true;
    case 2: {
        std::uint64_t n = 0;
        if (!readVarint(p, end, n) || n > static_cast<std::uint64_t>(end - p)) return false;
        payload = p;
        len = static_cast<std::size_t>(n);
        p += len;
        return true;
    }
    default: // groups (3, 4), long deprecated and not in ONNX, and the invalid 6 and 7
        return false;
    }
}

// Whether [p, end) is a sequence of valid fields; `scanned` counts the bytes read.
bool wellFormed(const std::uint8_t* p, const std::uint8_t* end, std::size_t& scanned)
{
    scanned += static_cast<std::size_t>(end - p);
    const std::uint8_t* payload = nullptr;
    std::size_t len = 0;
    while (p < end)
        if (!readField(p, end, payload, len)) return false;
    return true;
}

} // namespace

int protobufNestingDepth(const std::uint8_t* bytes, std::size_t size, int cap)
{
    struct Frame {
        const std::uint8_t* p;
        const std::uint8_t* end;
        int depth;
    };
    constexpr std::size_t kBudget = std::size_t{1} << 30;
    std::vector<Frame> stack{{bytes, bytes + size, 0}};
    std::size_t scanned = 0;
    int deepest = 0;
    while (!stack.empty() && scanned < kBudget) {
        Frame& f = stack.back();
        const std::uint8_t* payload = nullptr;
        std::size_t len = 0;
        // the outermost bytes may be cut short (a truncated file): their fields up to the damage count
        if (f.p >= f.end || !readField(f.p, f.end, payload, len)) {
            stack.pop_back();
            continue;
        }
        if (len >= 2 && wellFormed(payload, payload + len, scanned)) { // a message: a tag and a value at least
            const int d = f.depth + 1;
            deepest = std::max(deepest, d);
            if (deepest > cap) return cap + 1;
            stack.push_back({payload, payload + len, d});
        }
    }
    return deepest;
}

void parseOnnxModel(const std::vector<std::uint8_t>& bytes, onnx::ModelProto& mp, const std::string& source, bool requireGraph)
{
    if (bytes.empty()) throw FormatError(source + ": not an ONNX model (the file is empty)");
    if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
        throw FormatError(source + ": not an ONNX model (" + std::to_string(bytes.size()) +
                          " bytes, more than a protobuf message can hold: 2 GB; large weights go in external data files)");
    if (!mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        const int limit = google::protobuf::io::CodedInputStream::GetDefaultRecursionLimit();
        if (protobufNestingDepth(bytes.data(), bytes.size(), limit) > limit)
            throw FormatError(source + ": not an ONNX model QuantScope can read (its protobuf nests messages more than " +
                              std::to_string(limit) +
                              " levels deep, beyond the parser's limit: subgraphs of If, Loop or Scan nodes nested "
                              "inside each other dozens of times?)");
        throw FormatError(source + ": not an ONNX model (the protobuf does not parse; a truncated or damaged file?)");
    }
    // Protobuf parses a few stray bytes as a message of defaults: no graph, no opset.
    if (requireGraph && (!mp.has_graph() || mp.opset_import_size() == 0))
        throw FormatError(source + ": not an ONNX model (no graph or no opset; a truncated or damaged file?)");
}

std::string onnxNodeName(const onnx::NodeProto& n)
{
    if (!n.name().empty()) return "'" + n.name() + "'";
    for (const std::string& o : n.output())
        if (!o.empty()) return "(unnamed, making '" + o + "')";
    return "(unnamed)";
}

std::string onnxNodeLabel(const onnx::NodeProto& n) { return n.op_type() + " node " + onnxNodeName(n); }

} // namespace quantscope
