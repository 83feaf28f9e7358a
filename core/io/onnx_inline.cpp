#include "io/onnx_inline.h"

#include "io/onnx_parse.h"

#include "util/errors.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

namespace quantscope {

namespace {

class Inliner {
public:
    Inliner(const onnx::ModelProto& mp, const std::string& source) : m_source(source)
    {
        for (const onnx::FunctionProto& f : mp.functions())
            if (!m_functions.emplace(std::make_pair(f.domain(), f.name()), &f).second)
                throw FormatError(source + ": the local function " + f.domain() + "::" + f.name() +
                                  " is defined twice (which one a call means is not said)");
    }

    // Appends `n` to `out`, expanded when it calls a function. `path` names the calls `n` is inside
    // ("Block_3.Conv2d_14"), below the outermost (the whole model); `alone` says that `n` is the
    // one operator of its function (a leaf module's: Conv2d's Conv), which then takes its name.
    void expand(const onnx::NodeProto& n, int depth, const std::string& path, bool alone,
                google::protobuf::RepeatedPtrField<onnx::NodeProto>& out)
    {
        const auto it = m_functions.find({n.domain(), n.op_type()});
        if (it == m_functions.end()) {
            if (out.size() >= kOnnxMaxInlinedNodes) fail(n, "the expanded graph passes " + std::to_string(kOnnxMaxInlinedNodes) + " nodes");
            onnx::NodeProto* added = out.Add();
            *added = n;
            if (!path.empty()) added->set_name(alone || n.name().empty() ? path : path + "." + n.name()); // the module it came from, as a layer name
            return;
        }
        const onnx::FunctionProto& f = *it->second;
        if (depth >= kOnnxMaxFunctionDepth)
            fail(n, "calls nest deeper than " + std::to_string(kOnnxMaxFunctionDepth) + " (a function that calls itself?)");
        if (n.input_size() > f.input_size() || n.output_size() > f.output_size())
            fail(n, "passes " + std::to_string(n.input_size()) + " inputs and " + std::to_string(n.output_size()) +
                        " outputs to a function of " + std::to_string(f.input_size()) + " inputs and " +
                        std::to_string(f.output_size()) + " outputs");
        ++m_calls;
        const std::string scope = (n.name().empty() ? f.name() : n.name()) + "#" + std::to_string(m_calls) + "/";
        std::map<std::string, std::string> bound; // formal -> actual
        for (int i = 0; i < f.input_size(); ++i) bound[f.input(i)] = i < n.input_size() ? n.input(i) : std::string();
        for (int i = 0; i < f.output_size(); ++i) bound[f.output(i)] = i < n.output_size() ? n.output(i) : scope + f.output(i);
        const auto rename = [&](const std::string& v) -> std::string {
            if (v.empty()) return v; // an optional input left out
            const auto b = bound.find(v);
            return b != bound.end() ? b->second : scope + v;
        };
        const auto operators = std::count_if(f.node().begin(), f.node().end(), [](const onnx::NodeProto& x) { return x.op_type() != "Constant"; });
        const std::string label = n.name().substr(n.name().find_last_of('/') + 1); // "Conv2d_14"
        // A call in the main graph names its module by path ("/layer1/Block": layer1), unless it is
        // the whole model (export_modules_as_functions=True: the graph's one node, whose name
        // PyTorch takes from its last module, "/fc/Net").
        const std::string inside = depth == 0 ? (m_wholeModel ? std::string() : modulePath(n.name())) : path.empty() ? label : path + "." + label;
        for (const onnx::NodeProto& inner : f.node()) {
            onnx::NodeProto copy = inner;
            for (int i = 0; i < copy.input_size(); ++i) copy.set_input(i, rename(copy.input(i)));
            for (int i = 0; i < copy.output_size(); ++i) copy.set_output(i, rename(copy.output(i)));
            google::protobuf::RepeatedPtrField<onnx::AttributeProto> attrs;
            for (const onnx::AttributeProto& a : inner.attribute()) {
                if (a.ref_attr_name().empty()) {
                    *attrs.Add() = a;
                    continue;
                }
                for (const onnx::AttributeProto& given : n.attribute())
                    if (given.name() == a.ref_attr_name()) {
                        onnx::AttributeProto* b = attrs.Add();
                        *b = given;
                        b->set_name(a.name());
                    }
            }
            copy.mutable_attribute()->Swap(&attrs);
            expand(copy, depth + 1, inside, operators == 1 && inner.op_type() != "Constant", out);
        }
    }

    int calls() const { return m_calls; }
    void setWholeModel(bool on) { m_wholeModel = on; }

    // "/layer1/0/Block" -> "layer1.0" (PyTorch's scope path of a call in the main graph); a name
    // without a path ("blk1") is itself; "/Block" or "" -> "".
    static std::string modulePath(const std::string& name)
    {
        if (name.empty() || name[0] != '/') return name;
        const std::size_t last = name.find_last_of('/');
        std::string p = name.substr(1, last == 0 ? 0 : last - 1);
        std::replace(p.begin(), p.end(), '/', '.');
        return p;
    }

private:
    [[noreturn]] void fail(const onnx::NodeProto& n, const std::string& what) const
    {
        throw FormatError(m_source + ": " + n.op_type() + " node " + onnxNodeName(n) + " (a call of the local function " + n.domain() +
                          "::" + n.op_type() + "): " + what);
    }

    std::string m_source;
    std::map<std::pair<std::string, std::string>, const onnx::FunctionProto*> m_functions;
    int m_calls = 0;
    bool m_wholeModel = false;
};

} // namespace

int inlineLocalFunctions(onnx::ModelProto& mp, const std::string& source)
{
    if (mp.functions_size() == 0) return 0;
    Inliner inliner(mp, source);
    inliner.setWholeModel(mp.graph().node_size() == 1);
    google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
    for (const onnx::NodeProto& n : mp.graph().node()) inliner.expand(n, 0, std::string(), false, nodes);
    mp.mutable_graph()->mutable_node()->Swap(&nodes);
    mp.clear_functions();
    return inliner.calls();
}

} // namespace quantscope
