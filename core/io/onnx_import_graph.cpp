// The ONNX importer's checks of the graph as a whole, before any handler reads a node: each node's
// inputs, outputs and attributes against its operator (Importer::checkArity), and which nodes the
// class scores depend on, in a topological order (Importer::liveOrder, which picks the scores among
// several graph outputs).
#include "io/onnx_importer.h"

#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <functional>
#include <map>
#include <queue>
#include <string>
#include <vector>

namespace quantscope::onnximport {

// A node of a common operator with fewer inputs than every ONNX opset QuantScope reads (9 to 23)
// gives it, or with no output, is damaged: refused before the subgraph matchers and the handlers
// read its inputs and output by position (fuzz_onnx_import: a ReduceMean without an input).
// Operators whose inputs moved to attributes in some of those opsets (Reshape, Slice, Clip, Pad,
// Squeeze, Unsqueeze...) are checked by their handlers instead.
void Importer::checkArity(const NodeProto& n) const
{
    static const std::map<std::string, int> kMinInputs = {
        {"Abs", 1}, {"AveragePool", 1}, {"Cast", 1}, {"Celu", 1}, {"Concat", 1}, {"Dropout", 1}, {"Elu", 1}, {"Erf", 1},
        {"Exp", 1}, {"Flatten", 1}, {"GlobalAveragePool", 1}, {"GlobalMaxPool", 1}, {"HardSigmoid", 1}, {"HardSwish", 1},
        {"Identity", 1}, {"LeakyRelu", 1}, {"Log", 1}, {"LogSoftmax", 1}, {"MaxPool", 1}, {"Neg", 1}, {"Reciprocal", 1},
        {"ReduceMax", 1}, {"ReduceMean", 1}, {"ReduceMin", 1}, {"ReduceSum", 1}, {"Relu", 1}, {"Selu", 1}, {"Sigmoid", 1},
        {"Softmax", 1}, {"Softplus", 1}, {"Softsign", 1}, {"Sqrt", 1}, {"Tanh", 1}, {"Transpose", 1},
        {"Add", 2}, {"Conv", 2}, {"Div", 2}, {"Equal", 2}, {"Expand", 2}, {"Gather", 2}, {"Gemm", 2}, {"MatMul", 2},
        {"Mul", 2}, {"Pow", 2}, {"PRelu", 2}, {"Sub", 2}, {"Tile", 2}, {"Where", 3}, {"InstanceNormalization", 3},
        {"BatchNormalization", 5}};
    if (!n.domain().empty() && n.domain() != "ai.onnx") return;
    const auto it = kMinInputs.find(n.op_type());
    if (it != kMinInputs.end() && (n.input_size() < it->second || n.input(0).empty()))
        fail(onnxNodeLabel(n) + " has " + std::to_string(n.input_size()) + (n.input_size() == 1 ? " input" : " inputs") +
             (n.input_size() && n.input(0).empty() ? " (the first one empty)" : "") + "; ONNX's " + n.op_type() + " takes at least " +
             std::to_string(it->second) + " (a damaged file)");
    if (n.output_size() < 1 || n.output(0).empty()) fail(onnxNodeLabel(n) + " makes no output (a damaged file)");
    // At most the inputs and outputs ONNX's schema of the file's opset gives the operator (libonnx's
    // registry, which knows opsets up to its own release's): an input the operator does not take at
    // that opset would be ignored, such as Clip's bounds in a file that says opset 10 (attributes
    // then), or Split's sizes at opset 11, and the layer would compute something else. Newer
    // opsets are left to the handlers, which read their inputs by name. An operator QuantScope
    // does not read is named as unsupported first (run()).
    if (!handlers().count(n.op_type()) && !isFoldable(n.op_type())) return;
    static const int kSchemaNewest = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map().at(onnx::ONNX_DOMAIN).second;
    if (m_opset > kSchemaNewest) return;
    const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(n.op_type(), m_opset, onnx::ONNX_DOMAIN);
    if (!schema) return;
    if (n.input_size() > schema->max_input())
        fail(onnxNodeLabel(n) + " has " + std::to_string(n.input_size()) + " inputs; ONNX's " + n.op_type() + " takes at most " +
             std::to_string(schema->max_input()) + " at opset " + std::to_string(m_opset) +
             " (the file's opset does not fit its nodes, or the file is damaged)");
    if (n.output_size() > schema->max_output())
        fail(onnxNodeLabel(n) + " has " + std::to_string(n.output_size()) + " outputs; ONNX's " + n.op_type() + " makes at most " +
             std::to_string(schema->max_output()) + " at opset " + std::to_string(m_opset) +
             " (the file's opset does not fit its nodes, or the file is damaged)");
    // An attribute the operator does not have at that opset (Clip's min and max since opset 11,
    // where they are inputs) would be ignored as well.
    for (const onnx::AttributeProto& a : n.attribute())
        if (!schema->attributes().count(a.name()))
            fail(onnxNodeLabel(n) + " has the attribute '" + a.name() + "', which ONNX's " + n.op_type() + " does not have at opset " +
                 std::to_string(m_opset) + " (the file's opset does not fit its nodes, or the file is damaged)");
}

// The nodes the output depends on, in a topological order that keeps the file's order where it can.
std::vector<int> Importer::liveOrder()
{
    const onnx::GraphProto& g = m_mp.graph();
    std::map<std::string, int> producer;
    for (int k = 0; k < g.node_size(); ++k)
        for (const std::string& o : g.node(k).output()) {
            if (o.empty()) continue;
            if (m_values.count(o) || !producer.emplace(o, k).second)
                fail(onnxNodeLabel(g.node(k)) + " makes '" + o + "', which is already defined");
        }
    for (const NodeProto& n : g.node())
        for (const std::string& i : n.input())
            if (!i.empty() && !producer.count(i) && !m_values.count(i))
                fail(n.op_type() + " node " + onnxNodeName(n) + " reads '" + i + "', which no node, initializer or input defines (a dangling input)");
    if (g.output_size() < 1) fail("the graph has no output");
    // Several outputs (a forward returning (logits, features)): the class scores are the first
    // output declared [N, classes] for the data's classes, else the first; the rest are left out.
    int chosen = 0;
    if (g.output_size() > 1 && m_options.classes > 0)
        for (int k = 0; k < g.output_size(); ++k) {
            const auto& os = g.output(k).type().tensor_type().shape();
            if (os.dim_size() == 2 && os.dim(1).has_dim_value() && os.dim(1).dim_value() == static_cast<std::int64_t>(m_options.classes)) {
                chosen = k;
                break;
            }
        }
    m_outputIndex = chosen;
    m_m.graphOutputs = static_cast<std::size_t>(g.output_size());
    m_outputName = g.output(chosen).name();
    if (g.output_size() > 1) {
        std::string others;
        int listed = 0;
        for (int k = 0; k < g.output_size(); ++k) {
            if (k == chosen) continue;
            if (listed == 8) {
                others += ", ...";
                break;
            }
            others += (listed++ ? ", '" : "'") + g.output(k).name() + "'";
        }
        m_m.notes.push_back("the graph has " + std::to_string(g.output_size()) + " outputs: '" + m_outputName + "' (the " +
                            (chosen > 0 ? "one declared [N, " + std::to_string(m_options.classes) + "], the data's classes"
                                        : std::string("first")) +
                            ") is read as the class scores; " + others + (g.output_size() > 2 ? " and the nodes only they need are" : " and the nodes only it needs are") +
                            " left out");
    }
    checkDims(g.output(chosen).type().tensor_type().shape(), "the graph output '" + m_outputName + "'");
    m_m.onnxInputName = m_inputName;
    m_m.onnxOutputName = m_outputName;
    if (!producer.count(m_outputName) && !m_values.count(m_outputName))
        fail("the graph output '" + m_outputName + "' is not defined by any node");

    // Live nodes: walk back from the output.
    std::vector<char> live(static_cast<std::size_t>(g.node_size()), 0);
    std::vector<std::string> stack{m_outputName};
    while (!stack.empty()) {
        const std::string v = stack.back();
        stack.pop_back();
        const auto it = producer.find(v);
        if (it == producer.end() || live[static_cast<std::size_t>(it->second)]) continue;
        live[static_cast<std::size_t>(it->second)] = 1;
        for (const std::string& i : g.node(it->second).input())
            if (!i.empty()) stack.push_back(i);
    }
    // Kahn's algorithm over live nodes, smallest file index first.
    std::vector<int> pending(live.size(), 0);
    std::vector<std::vector<int>> readers(live.size());
    for (int k = 0; k < g.node_size(); ++k) {
        if (!live[static_cast<std::size_t>(k)]) continue;
        for (const std::string& i : g.node(k).input()) {
            if (i.empty()) continue;
            ++m_uses[i];
            const auto it = producer.find(i);
            if (it == producer.end()) continue;
            ++pending[static_cast<std::size_t>(k)];
            readers[static_cast<std::size_t>(it->second)].push_back(k);
        }
    }
    ++m_uses[m_outputName];
    std::priority_queue<int, std::vector<int>, std::greater<>> ready;
    std::size_t liveCount = 0;
    for (int k = 0; k < g.node_size(); ++k)
        if (live[static_cast<std::size_t>(k)]) {
            ++liveCount;
            if (pending[static_cast<std::size_t>(k)] == 0) ready.push(k);
        }
    std::vector<int> order;
    while (!ready.empty()) {
        const int k = ready.top();
        ready.pop();
        order.push_back(k);
        for (int r : readers[static_cast<std::size_t>(k)])
            if (--pending[static_cast<std::size_t>(r)] == 0) ready.push(r);
    }
    if (order.size() != liveCount) {
        for (int k = 0; k < g.node_size(); ++k)
            if (live[static_cast<std::size_t>(k)] && pending[static_cast<std::size_t>(k)] > 0)
                fail(onnxNodeLabel(g.node(k)) + " is on a cycle; an ONNX graph must be acyclic");
    }
    return order;
}

} // namespace quantscope::onnximport
