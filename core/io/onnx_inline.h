// Expanding an ONNX model's local functions (ModelProto.functions, ONNX IR 8, opset 15+), which
// torch.onnx.export(..., export_modules_as_functions=True) writes: every nn.Module becomes a
// FunctionProto and the graph a tree of calls to them. The importer reads plain graphs, so the
// calls are replaced by the functions' nodes first, as the ONNX spec defines a call
// (onnx/docs/IR.md, "Functions"): formal inputs and outputs bound to the call's actual values,
// attribute references (AttributeProto.ref_attr_name) bound to the call's attributes.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

namespace quantscope {

// The deepest nesting of calls expanded (a module inside a module ...); deeper, or a function
// that calls itself, is a FormatError.
inline constexpr int kOnnxMaxFunctionDepth = 32;
// The most nodes the expanded graph may have (a guard against a call tree that multiplies).
inline constexpr int kOnnxMaxInlinedNodes = 1 << 17;

// Replaces every node of mp's graph that calls one of mp.functions() (same domain and op_type)
// by that function's nodes, recursively, then drops the functions. A function's own values are
// renamed "<call>/<value>" (unique per call); a formal input the call leaves out reads nothing
// (""), a formal output it leaves out gets a fresh name; an attribute reference the call does not
// set is dropped (the operator's default). An inlined node is named after the calls it came from,
// below the outermost ("Block_3.Conv2d_14": torch names a call after its module's class and
// position), or keeps its name directly inside the outermost. Returns the number of calls
// expanded (0 when the model has no functions: then nothing changes).
// Throws FormatError naming `source` and the call for a call with more inputs or outputs than its
// function declares, two functions of one domain and name, nesting deeper than kOnnxMaxFunctionDepth (a recursive function), or an
// expansion past kOnnxMaxInlinedNodes.
int inlineLocalFunctions(onnx::ModelProto& mp, const std::string& source);

} // namespace quantscope
