// The ONNX importer's pointwise activations: the single operators (Sigmoid, Tanh, HardSigmoid,
// HardSwish, LeakyRelu, Elu) and the subgraphs torch.onnx.export writes for modules opset 13 has
// no operator for, each read as one layer:
//   SiLU       Sigmoid(x) -> Mul(x, s)                      (either input order)
//   Hardswish  HardSigmoid(x) -> Mul(x, h)                  (opsets < 14)
//   GELU       Div(x, sqrt 2) or Mul(x, 1/sqrt 2) -> Erf -> Add(., 1), and the product of x, that
//              sum and 0.5 as two Muls in any order and nesting
// An inner value of a subgraph must have no other reader; a Sigmoid whose output something else
// reads stays a Sigmoid.
#include "io/onnx_importer.h"

#include "nn/pointwise.h"

#include <cmath>
#include <optional>
#include <cstdio>

namespace quantscope::onnximport {

namespace {
constexpr double kSqrt2 = 1.4142135623730951;
// Tolerance on the subgraphs' constants (written as float32 or float64 by the exporter).
constexpr double kConstRtol = 1e-6;
bool near(double v, double want) { return std::abs(v - want) <= kConstRtol * std::abs(want); }
constexpr double kSqrt2OverPi = 0.7978845608028654;
} // namespace

Importer::GraphReaders Importer::graphReaders(const std::vector<int>& order) const
{
    const onnx::GraphProto& g = m_mp.graph();
    GraphReaders r;
    for (int k : order) {
        for (const std::string& o : g.node(k).output())
            if (!o.empty()) r.producer[o] = k;
        for (const std::string& i : g.node(k).input())
            if (!i.empty()) r.readers[i].push_back(k);
    }
    return r;
}

int Importer::soleReader(const GraphReaders& g, const std::string& v)
{
    const auto it = g.readers.find(v);
    if (it == g.readers.end() || it->second.size() != 1 || m_uses[v] != 1) return -1;
    return it->second[0];
}

// The one value of constant v: an initializer, or a Constant node's tensor (the pre-pass runs
// before the walk folds Constant nodes); nullopt for anything else.
std::optional<double> Importer::scalarConstant(const std::string& v, const std::map<std::string, int>& producer) const
{
    if (const auto it = m_values.find(v); it != m_values.end())
        return it->second.kind == Value::Kind::Const && it->second.c.numel() == 1 ? std::optional<double>(it->second.c.at(0)) : std::nullopt;
    const auto pk = producer.find(v);
    if (pk == producer.end()) return std::nullopt;
    const NodeProto& c = m_mp.graph().node(pk->second);
    if (c.op_type() != "Constant") return std::nullopt;
    for (const onnx::AttributeProto& a : c.attribute())
        if (a.name() == "value" && a.has_t()) try {
                const ConstTensor t = decodeTensor(a.t());
                if (t.numel() == 1) return t.at(0);
            } catch (const FoldError&) {
            }
    return std::nullopt;
}

void Importer::findActivationSubgraphs(const std::vector<int>& order, const std::set<std::string>& dynamic)
{
    const onnx::GraphProto& g = m_mp.graph();
    const GraphReaders gr = graphReaders(order);
    const std::map<std::string, int>& producer = gr.producer;
    const auto soleReader = [&](const std::string& v) { return this->soleReader(gr, v); };
    const auto op = [&](int k) -> const std::string& { return g.node(k).op_type(); };
    const auto taken = [&](int k) { return m_subgraphOf.count(k) > 0; };
    const auto record = [&](Subgraph s) {
        for (int k : s.nodes) m_subgraphOf[k] = m_subgraphs.size();
        m_subgraphs.push_back(std::move(s));
    };

    for (int k : order) {
        const NodeProto& n = g.node(k);
        if (taken(k) || n.input_size() < 1 || n.output_size() < 1) continue;
        if (op(k) == "Sigmoid" || op(k) == "HardSigmoid") {
            const int m = soleReader(n.output(0));
            if (m < 0 || op(m) != "Mul" || taken(m) || g.node(m).input_size() != 2) continue;
            const NodeProto& mul = g.node(m);
            const std::string& other = mul.input(0) == n.output(0) ? mul.input(1) : mul.input(0);
            if (other != n.input(0)) continue; // x * sigmoid(y): a gate, not SiLU
            record({op(k) == "Sigmoid" ? LayerKind::SiLU : LayerKind::Hardswish, m, n.input(0), {k, m}, {}});
        } else if (op(k) == "Tanh") {
            // GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))): refused by
            // name here, or its Muls and Adds fail one by one with messages about constants (tester 16).
            const auto pk = producer.find(n.input(0));
            if (pk == producer.end() || op(pk->second) != "Mul") continue;
            for (const std::string& v : g.node(pk->second).input()) {
                const std::optional<double> c = scalarConstant(v, producer);
                if (c && near(*c, kSqrt2OverPi))
                    failNode(n, "is GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) "
                                "(nn.GELU(approximate='tanh')), which QuantScope does not read; it reads the exact GELU, nn.GELU()");
            }
        } else if (op(k) == "Erf") {
            const auto pk = producer.find(n.input(0));
            if (pk == producer.end()) continue;
            const int d = pk->second;
            const NodeProto& scale = g.node(d);
            if ((op(d) != "Div" && op(d) != "Mul") || taken(d) || scale.input_size() != 2 || soleReader(n.input(0)) != k) continue;
            int xi = dynamic.count(scale.input(0)) ? 0 : 1;
            if (op(d) == "Div" && xi != 0) continue;
            if (!dynamic.count(scale.input(xi)) || dynamic.count(scale.input(1 - xi))) continue;
            const std::string x = scale.input(xi);
            const int a = soleReader(n.output(0));
            if (a < 0 || op(a) != "Add" || taken(a) || g.node(a).input_size() != 2) continue;
            const NodeProto& add = g.node(a);
            const std::string one = add.input(0) == n.output(0) ? add.input(1) : add.input(0);
            if (dynamic.count(one)) continue;
            const std::string sum = add.output(0);
            // The product tree over Muls: from the Mul reading the sum, the smallest root whose
            // leaves are exactly x, the sum and one constant.
            int r = soleReader(sum);
            for (int depth = 0; r >= 0 && op(r) == "Mul" && depth < 3; ++depth) {
                std::vector<std::string> leaves;
                std::vector<int> muls;
                std::vector<int> stack{r};
                while (!stack.empty()) {
                    const int t = stack.back();
                    stack.pop_back();
                    muls.push_back(t);
                    for (const std::string& v : g.node(t).input()) {
                        const auto pv = producer.find(v);
                        if (v != sum && v != x && pv != producer.end() && op(pv->second) == "Mul" && soleReader(v) == t && !taken(pv->second))
                            stack.push_back(pv->second);
                        else
                            leaves.push_back(v);
                    }
                }
                const auto count = [&](const std::string& v) { return std::count(leaves.begin(), leaves.end(), v); };
                std::string half;
                for (const std::string& v : leaves)
                    if (v != x && v != sum && !dynamic.count(v)) half = v;
                if (leaves.size() == 3 && count(x) == 1 && count(sum) == 1 && !half.empty()) {
                    std::vector<int> nodes{d, k, a};
                    nodes.insert(nodes.end(), muls.begin(), muls.end());
                    record({LayerKind::GELU, r, x, nodes, {scale.input(1 - xi), one, half}});
                    break;
                }
                r = g.node(r).output_size() > 0 ? soleReader(g.node(r).output(0)) : -1;
            }
        }
    }
}

// Called at a subgraph's last node (its root): checks the constants and attributes, then adds the layer.
void Importer::readActivationSubgraph(const NodeProto& root, const Subgraph& s)
{
    if (s.kind == LayerKind::GlobalAvgPool2d || s.kind == LayerKind::MaxPool2d) return readPoolingSubgraph(root, s);
    const onnx::GraphProto& g = m_mp.graph();
    const auto xv = m_values.find(s.x);
    if (xv == m_values.end() || xv->second.kind != Value::Kind::Act)
        failNode(root, std::string("the ") + layerKindName(s.kind) + " subgraph must read an activation");
    const std::size_t x = xv->second.act;
    const auto scalar = [&](const std::string& v, const char* what) -> double {
        const auto it = m_values.find(v);
        if (it == m_values.end() || it->second.kind != Value::Kind::Const || it->second.c.numel() != 1)
            failNode(root, std::string("the GELU subgraph's ") + what + " is not one constant");
        return it->second.c.at(0);
    };
    if (s.kind == LayerKind::Hardswish) checkHardSigmoid(g.node(s.nodes[0]), " (x * hardsigmoid(x) is Hardswish)");
    if (s.kind == LayerKind::GELU) {
        const NodeProto& scale = g.node(s.nodes[0]);
        const double c = scalar(s.constants[0], "scale of x"), one = scalar(s.constants[1], "added constant"),
                     half = scalar(s.constants[2], "factor");
        const bool scaleOk = scale.op_type() == "Div" ? near(c, kSqrt2) : near(c, 1.0 / kSqrt2);
        if (!scaleOk || one != 1.0 || half != 0.5) {
            char what[160];
            std::snprintf(what, sizeof what, "x %s %.9g, erf, + %.9g, times x and %.9g", scale.op_type() == "Div" ? "/" : "*", c, one, half);
            failNode(root, std::string("reads as Erf-based GELU only as 0.5 x (1 + erf(x / sqrt 2)); this subgraph computes ") + what);
        }
    }
    StoredLayer l;
    l.kind = s.kind;
    addLayer(root, std::move(l), shapeOf(x), {x});
}

// PyTorch's Hardsigmoid is relu6(x + 3) / 6: ONNX HardSigmoid with alpha = 1/6, beta = 1/2.
void Importer::checkHardSigmoid(const NodeProto& n, const char* context) const
{
    const float alpha = attrFloat(n, "alpha", 0.2f), beta = attrFloat(n, "beta", 0.5f);
    if (!near(alpha, 1.0 / 6.0) || beta != 0.5f) {
        char what[200];
        std::snprintf(what, sizeof what,
                      "alpha = %g, beta = %g: QuantScope's Hardsigmoid is PyTorch's relu6(x + 3) / 6, HardSigmoid with alpha = 1/6 "
                      "and beta = 0.5 only%s",
                      static_cast<double>(alpha), static_cast<double>(beta), context);
        failNode(n, what);
    }
}

void Importer::pointwise(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    StoredLayer l;
    const std::string& op = n.op_type();
    if (op == "Sigmoid") l.kind = LayerKind::Sigmoid;
    else if (op == "Tanh") l.kind = LayerKind::Tanh;
    else if (op == "HardSwish") l.kind = LayerKind::Hardswish;
    else if (op == "HardSigmoid") {
        checkHardSigmoid(n, "");
        l.kind = LayerKind::Hardsigmoid;
    } else if (op == "LeakyRelu") {
        l.kind = LayerKind::LeakyReLU;
        l.alpha = attrFloat(n, "alpha", 0.01f);
    } else if (op == "Elu") {
        l.kind = LayerKind::ELU;
        l.alpha = attrFloat(n, "alpha", 1.0f);
    } else {
        failNode(n, "internal error: not a pointwise operator", false);
    }
    if (!std::isfinite(l.alpha)) failNode(n, "alpha is not a finite number");
    addLayer(n, std::move(l), shapeOf(x), {x});
}

void Importer::erf(const NodeProto& n)
{
    failNode(n, "Erf is read only as part of GELU, 0.5 x (1 + erf(x / sqrt 2)) (torch.nn.GELU() exported); here its input or "
                "output is read otherwise (the tanh approximation, or a value of the pattern with another reader, is not supported)");
}

} // namespace quantscope::onnximport
