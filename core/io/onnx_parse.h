// Parsing an ONNX file's protobuf, and naming its nodes in errors; shared by the importer
// (onnx_import*.cpp, onnx_inline.cpp) and the reader of QuantScope's own exports (onnx_reader*.cpp).
// Internal to core/io.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

// Parses `bytes` into `mp`. Throws FormatError naming `source`: for an empty file, for bytes that
// do not parse (the message then says whether the file nests messages deeper than protobuf's
// recursion limit, 100 levels, such as If subgraphs inside If subgraphs dozens deep, or is
// truncated or damaged), and for bytes that parse but carry no graph or no opset (a few stray
// bytes parse as a message of defaults) unless `requireGraph` is false.
void parseOnnxModel(const std::vector<std::uint8_t>& bytes, onnx::ModelProto& mp, const std::string& source,
                    bool requireGraph = true);

// How far the length-delimited fields of the protobuf wire data `bytes` nest as well-formed
// messages (a field whose payload is itself a sequence of valid fields counts as one more level),
// found without the schema and without recursion; the count stops at `cap` + 1 and after scanning
// about 1 GB (then what was reached so far). 0 for bytes that hold no message inside.
int protobufNestingDepth(const std::uint8_t* bytes, std::size_t size, int cap);

// "Concat node 'cat_1'", or for a node without a name "Concat node (unnamed, making 'y')": how
// errors name a node (ONNX does not require node names; exporters often leave them empty).
std::string onnxNodeLabel(const onnx::NodeProto& n);
// The node's part of that label: "'cat_1'" or "(unnamed, making 'y')".
std::string onnxNodeName(const onnx::NodeProto& n);

} // namespace quantscope
