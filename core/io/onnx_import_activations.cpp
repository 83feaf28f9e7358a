// The ONNX importer's pointwise activations: the single operators (Sigmoid, Tanh, HardSigmoid,
// HardSwish, LeakyRelu, Elu, Softplus, Mish, Selu, Celu, Softsign, Gelu, PRelu) and the subgraphs torch.onnx.export writes for modules opset 13 has
// no operator for, each read as one layer:
//   SiLU       Sigmoid(x) -> Mul(x, s)                      (either input order)
//   Hardswish  HardSigmoid(x) -> Mul(x, h)                  (opsets < 14)
//   GELU       Div(x, sqrt 2) or Mul(x, 1/sqrt 2) -> Erf -> Add(., 1), and the product of x, that
//              sum and 0.5 as two Muls in any order and nesting
//   GELUTanh   Mul(x, x) -> Mul(x, .) (or Pow(x, 3)) -> Mul(., 0.044715) -> Add(x, .) ->
//              Mul(., sqrt(2/pi)) -> Tanh -> Add(., 1), then that product (inputs in either order)
//   Mish       Softplus(x) -> Tanh -> Mul(x, t)                (opsets < 18; either input order)
//   Softsign   Abs(x) -> Add(., 1) -> Div(x, .)                (nn.Softsign, F.softsign; 1 on either side)
// and the forms written by hand in much MobileNetV3 code, relu6(x + 3) / 6 (Hardsigmoid) and
// x * relu6(x + 3) / 6 (Hardswish, times x before or after the division): Add(x, 3) -> Clip(0, 6)
// (or Relu -> Clip(max = 6), F.relu6's export) -> Div(6) or Mul(1/6), with Mul(x, .) for Hardswish;
// and PRelu, a learned slope of one value or one per channel (the PReLU layer).
// An inner value of a subgraph must have no other reader; a Sigmoid whose output something else
// reads stays a Sigmoid.
#include "io/onnx_importer.h"
#include "io/onnx_io.h"

#include "nn/pointwise.h"

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

namespace quantscope::onnximport {

namespace {
constexpr double kSqrt2 = 1.4142135623730951;
// Tolerance on the subgraphs' constants (written as float32 or float64 by the exporter).
constexpr double kConstRtol = 1e-6;
bool near(double v, double want) { return std::abs(v - want) <= kConstRtol * std::abs(want); }
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluKappa = 0.044715;
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

// The product tree over Muls: from the Mul reading `sum`, the smallest root whose leaves are
// exactly x, the sum and one constant (GELU's 0.5), in any order and nesting; nullopt if none.
std::optional<Importer::ProductTree> Importer::productTree(const GraphReaders& gr, const std::string& sum, const std::string& x,
                                                           const std::set<std::string>& dynamic)
{
    const onnx::GraphProto& g = m_mp.graph();
    const auto op = [&](int k) -> const std::string& { return g.node(k).op_type(); };
    const auto taken = [&](int k) { return m_subgraphOf.count(k) > 0; };
    int r = soleReader(gr, sum);
    for (int depth = 0; r >= 0 && op(r) == "Mul" && !taken(r) && depth < 3; ++depth) {
        std::vector<std::string> leaves;
        std::vector<int> muls;
        std::vector<int> stack{r};
        while (!stack.empty()) {
            const int t = stack.back();
            stack.pop_back();
            muls.push_back(t);
            for (const std::string& v : g.node(t).input()) {
                const auto pv = gr.producer.find(v);
                if (v != sum && v != x && pv != gr.producer.end() && op(pv->second) == "Mul" && soleReader(gr, v) == t && !taken(pv->second))
                    stack.push_back(pv->second);
                else
                    leaves.push_back(v);
            }
        }
        const auto count = [&](const std::string& v) { return std::count(leaves.begin(), leaves.end(), v); };
        std::string factor;
        for (const std::string& v : leaves)
            if (v != x && v != sum && !dynamic.count(v)) factor = v;
        if (leaves.size() == 3 && count(x) == 1 && count(sum) == 1 && !factor.empty()) return ProductTree{r, muls, factor};
        r = g.node(r).output_size() > 0 ? soleReader(gr, g.node(r).output(0)) : -1;
    }
    return std::nullopt;
}

// GELU's tanh approximation ending at Tanh node k, or nullopt. Its constants (kappa, sqrt(2/pi),
// 1, 0.5 and a Pow's exponent) are checked at the root, so a wrong one is refused by name.
std::optional<Importer::Subgraph> Importer::geluTanhAt(int k, const GraphReaders& gr, const std::set<std::string>& dynamic)
{
    const onnx::GraphProto& g = m_mp.graph();
    const auto op = [&](int j) -> const std::string& { return g.node(j).op_type(); };
    const auto usable = [&](const std::string& v, const char* what, int reader) -> int { // v's producer, an unclaimed `what` read only by `reader`
        const auto p = gr.producer.find(v);
        if (p == gr.producer.end() || op(p->second) != what || m_subgraphOf.count(p->second) || soleReader(gr, v) != reader ||
            g.node(p->second).input_size() != 2)
            return -1;
        return p->second;
    };
    // (dynamic input, constant input) of a binary node, or false.
    const auto split = [&](int j, std::string& dyn, std::string& cst) {
        const NodeProto& b = g.node(j);
        const bool d0 = dynamic.count(b.input(0)) > 0, d1 = dynamic.count(b.input(1)) > 0;
        if (d0 == d1) return false;
        dyn = d0 ? b.input(0) : b.input(1);
        cst = d0 ? b.input(1) : b.input(0);
        return true;
    };
    const NodeProto& tanh = g.node(k);
    std::string poly, beta, kx3, kappa, x3, x, one, tanh1 = tanh.output(0);
    const int mBeta = usable(tanh.input(0), "Mul", k);
    if (mBeta < 0 || !split(mBeta, poly, beta)) return std::nullopt;
    const int add = usable(poly, "Add", mBeta);
    if (add < 0) return std::nullopt;
    int mKappa = -1;
    for (int i = 0; i < 2 && mKappa < 0; ++i) {
        mKappa = usable(g.node(add).input(i), "Mul", add);
        x = g.node(add).input(1 - i);
        if (mKappa >= 0 && !split(mKappa, x3, kappa)) mKappa = -1;
    }
    if (mKappa < 0 || !dynamic.count(x)) return std::nullopt;
    std::vector<int> nodes;
    std::string exponent; // Pow(x, 3)'s exponent, "" for x * (x * x)
    if (const int pw = usable(x3, "Pow", mKappa); pw >= 0) {
        if (g.node(pw).input(0) != x || dynamic.count(g.node(pw).input(1))) return std::nullopt;
        exponent = g.node(pw).input(1);
        nodes = {pw};
    } else {
        const int cube = usable(x3, "Mul", mKappa);
        if (cube < 0) return std::nullopt;
        const NodeProto& c = g.node(cube);
        const std::string x2 = c.input(0) == x ? c.input(1) : c.input(0);
        if (c.input(0) != x && c.input(1) != x) return std::nullopt;
        const int sq = usable(x2, "Mul", cube);
        if (sq < 0 || g.node(sq).input(0) != x || g.node(sq).input(1) != x) return std::nullopt;
        nodes = {sq, cube};
    }
    const int a1 = soleReader(gr, tanh1);
    if (a1 < 0 || op(a1) != "Add" || m_subgraphOf.count(a1) || g.node(a1).input_size() != 2) return std::nullopt;
    one = g.node(a1).input(0) == tanh1 ? g.node(a1).input(1) : g.node(a1).input(0);
    if (dynamic.count(one)) return std::nullopt;
    const std::optional<ProductTree> t = productTree(gr, g.node(a1).output(0), x, dynamic);
    if (!t) return std::nullopt;
    nodes.insert(nodes.end(), {mKappa, add, mBeta, k, a1});
    nodes.insert(nodes.end(), t->muls.begin(), t->muls.end());
    return Subgraph{LayerKind::GELUTanh, t->root, x, nodes, {kappa, beta, one, t->factor, exponent}};
}

// relu6(x + 3) / 6 written by hand, from the Add of x and 3 at node k: Hardsigmoid, or Hardswish
// when x multiplies it (before or after the division). Every constant must be exact (through a
// Cast, as unfolded exports write them); anything else is no match, and its nodes are read (or
// refused) one by one.
std::optional<Importer::Subgraph> Importer::hardSigmoidByHandAt(int k, const GraphReaders& gr, const std::set<std::string>& dynamic)
{
    const onnx::GraphProto& g = m_mp.graph();
    const auto op = [&](int j) -> const std::string& { return g.node(j).op_type(); };
    const auto constant = [&](std::string v) -> std::optional<double> {
        for (int hops = 0; hops < 3 && !v.empty(); ++hops) {
            if (const std::optional<double> c = scalarConstant(v, gr.producer)) return c;
            const auto p = gr.producer.find(v);
            if (p == gr.producer.end() || op(p->second) != "Cast" || g.node(p->second).input_size() < 1) return std::nullopt;
            v = g.node(p->second).input(0);
        }
        return std::nullopt;
    };
    const auto otherInput = [&](int j, const std::string& v) -> std::string { // of binary node j, one of whose inputs is v
        const NodeProto& b = g.node(j);
        if (b.input_size() != 2) return {};
        return b.input(0) == v ? b.input(1) : b.input(1) == v ? b.input(0) : std::string();
    };
    const auto next = [&](const std::string& v, std::initializer_list<const char*> kinds) -> int { // v's sole reader, unclaimed, of a kind
        const int r = soleReader(gr, v);
        if (r < 0 || m_subgraphOf.count(r) || g.node(r).output_size() < 1) return -1;
        for (const char* w : kinds)
            if (op(r) == w) return r;
        return -1;
    };
    const auto bySix = [&](int j, const std::string& v) { // Div(v, 6) or Mul(v, 1/6)
        const std::string c = otherInput(j, v);
        const std::optional<double> f = c.empty() || dynamic.count(c) ? std::nullopt : constant(c);
        if (!f) return false;
        return op(j) == "Div" ? g.node(j).input(0) == v && *f == 6.0 : near(*f, 1.0 / 6.0);
    };
    const auto clipBounds = [&](const NodeProto& c, double& lo, double& hi) {
        const double inf = std::numeric_limits<double>::infinity();
        lo = -inf, hi = inf;
        if (m_opset < 11) {
            lo = attrFloat(c, "min", -std::numeric_limits<float>::infinity());
            hi = attrFloat(c, "max", std::numeric_limits<float>::infinity());
            return true;
        }
        for (int i = 1; i <= 2; ++i)
            if (c.input_size() > i && !c.input(i).empty()) {
                const std::optional<double> b = constant(c.input(i));
                if (!b) return false;
                (i == 1 ? lo : hi) = *b;
            }
        return true;
    };
    const NodeProto& add = g.node(k);
    if (add.input_size() != 2) return std::nullopt;
    std::string x;
    for (int i = 0; i < 2 && x.empty(); ++i)
        if (dynamic.count(add.input(i)) && !dynamic.count(add.input(1 - i)))
            if (const std::optional<double> c = constant(add.input(1 - i)); c && *c == 3.0) x = add.input(i);
    if (x.empty()) return std::nullopt;
    std::vector<int> nodes{k};
    int clip = next(add.output(0), {"Clip", "Relu"});
    if (clip >= 0 && op(clip) == "Relu") { // F.relu6: Relu, then Clip(max = 6)
        nodes.push_back(clip);
        clip = next(g.node(clip).output(0), {"Clip"});
    }
    double lo = 0, hi = 0;
    if (clip < 0 || !clipBounds(g.node(clip), lo, hi) || hi != 6.0 || (nodes.size() == 1 ? lo != 0.0 : lo > 0.0)) return std::nullopt;
    nodes.push_back(clip);
    const std::string h = g.node(clip).output(0);
    const int r = next(h, {"Div", "Mul"});
    if (r < 0) return std::nullopt;
    nodes.push_back(r);
    const std::string& ro = g.node(r).output(0);
    if (bySix(r, h)) {
        const int m = next(ro, {"Mul"});
        if (m >= 0 && otherInput(m, ro) == x) {
            nodes.push_back(m);
            return Subgraph{LayerKind::Hardswish, m, x, nodes, {}};
        }
        return Subgraph{LayerKind::Hardsigmoid, r, x, nodes, {}};
    }
    if (op(r) != "Mul" || otherInput(r, h) != x) return std::nullopt;
    const int d = next(ro, {"Div", "Mul"});
    if (d < 0 || !bySix(d, ro)) return std::nullopt;
    nodes.push_back(d);
    return Subgraph{LayerKind::Hardswish, d, x, nodes, {}};
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
        if (op(k) == "Add") {
            if (std::optional<Subgraph> sg = hardSigmoidByHandAt(k, gr, dynamic)) record(std::move(*sg));
        } else if (op(k) == "ReduceMean" && dynamic.count(n.input(0))) {
            if (std::optional<Subgraph> sg = layerNormAt(k, gr, dynamic)) record(std::move(*sg));
        } else if (op(k) == "Softplus") { // nn.Mish below opset 18: x * tanh(softplus(x))
            const int t = soleReader(n.output(0));
            if (t < 0 || op(t) != "Tanh" || taken(t)) continue;
            const int m = soleReader(g.node(t).output(0));
            if (m < 0 || op(m) != "Mul" || taken(m) || g.node(m).input_size() != 2) continue;
            const NodeProto& mul = g.node(m);
            const std::string& other = mul.input(0) == g.node(t).output(0) ? mul.input(1) : mul.input(0);
            if (other != n.input(0)) continue; // y * tanh(softplus(x)): no Mish
            record({LayerKind::Mish, m, n.input(0), {k, t, m}, {}});
        } else if (op(k) == "Abs") { // nn.Softsign: x / (|x| + 1)
            const int a = soleReader(n.output(0));
            if (a < 0 || op(a) != "Add" || taken(a) || g.node(a).input_size() != 2) continue;
            const NodeProto& add = g.node(a);
            const std::string& one = add.input(0) == n.output(0) ? add.input(1) : add.input(0);
            const std::optional<double> c = dynamic.count(one) ? std::nullopt : scalarConstant(one, producer);
            if (!dynamic.count(n.input(0)) || !c || *c != 1.0) continue;
            const int d = soleReader(add.output(0));
            if (d < 0 || op(d) != "Div" || taken(d) || g.node(d).input_size() != 2) continue;
            if (g.node(d).input(0) != n.input(0) || g.node(d).input(1) != add.output(0)) continue;
            record({LayerKind::Softsign, d, n.input(0), {k, a, d}, {}});
        } else if (op(k) == "Sigmoid" || op(k) == "HardSigmoid") {
            const int m = soleReader(n.output(0));
            if (m < 0 || op(m) != "Mul" || taken(m) || g.node(m).input_size() != 2) continue;
            const NodeProto& mul = g.node(m);
            const std::string& other = mul.input(0) == n.output(0) ? mul.input(1) : mul.input(0);
            if (other != n.input(0)) continue; // x * sigmoid(y): a gate, not SiLU
            record({op(k) == "Sigmoid" ? LayerKind::SiLU : LayerKind::Hardswish, m, n.input(0), {k, m}, {}});
        } else if (op(k) == "Tanh") {
            // GELU's tanh approximation, nn.GELU(approximate='tanh') as torch 1.13 writes it at opsets
            // 9-17: Mul(x, x) -> Mul(x, .) (or Pow(x, 3)) -> Mul(0.044715) -> Add(x, .) ->
            // Mul(sqrt(2/pi)) -> Tanh -> Add(1), then the product of x, that sum and 0.5.
            std::optional<Subgraph> sg = geluTanhAt(k, gr, dynamic);
            if (sg) {
                record(std::move(*sg));
                continue;
            }
            // Something with its scale that is not that form: refused by name here, or its Muls and
            // Adds would fail one by one with messages about constants (tester 16).
            const auto pk = producer.find(n.input(0));
            if (pk == producer.end() || op(pk->second) != "Mul") continue;
            for (const std::string& v : g.node(pk->second).input()) {
                const std::optional<double> c = scalarConstant(v, producer);
                if (c && near(*c, kSqrt2OverPi))
                    failNode(n, "looks like GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) "
                                "(nn.GELU(approximate='tanh')), but is not in the form QuantScope reads (x^3 as x * x * x or "
                                "Pow(x, 3), each inner value read once, the product of x, 1 + tanh and 0.5 last)");
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
            if (const std::optional<ProductTree> t = productTree(gr, sum, x, dynamic)) {
                std::vector<int> nodes{d, k, a};
                nodes.insert(nodes.end(), t->muls.begin(), t->muls.end());
                record({LayerKind::GELU, t->root, x, nodes, {scale.input(1 - xi), one, t->factor}});
            }
        }
    }
}

// nn.LayerNorm as torch.onnx.export writes it below opset 17 (and layer norms written by hand
// alike): m = ReduceMean(x), d = Sub(x, m), Pow(d, 2) (or Mul(d, d)) -> ReduceMean -> Add(eps) ->
// Sqrt, then Div(d, that), or Mul(d, Div(1, that)) (torch.rsqrt written as 1 / sqrt), both means
// over the same axes, kept; d read by the square and the normalisation only, every other inner
// value read once. Or the variance as x.var(dim, unbiased=False) writes it, from a mean and a
// difference of its own (then d is read by the normalisation alone). Its weight and bias (a Mul and an Add after it) fold into the
// GroupNorm it becomes (foldIntoGroupNorm); readActivationSubgraph checks the axes and constants.
std::optional<Importer::Subgraph> Importer::layerNormAt(int k, const GraphReaders& gr, const std::set<std::string>& dynamic)
{
    const onnx::GraphProto& g = m_mp.graph();
    const auto op = [&](int j) -> const std::string& { return g.node(j).op_type(); };
    const auto sole = [&](const std::string& v) { return soleReader(gr, v); };
    const NodeProto& mean = g.node(k);
    const std::string& x = mean.input(0);
    const std::vector<std::int64_t> axes = attrInts(mean, "axes");
    if (axes.empty() || attrInt(mean, "keepdims", 1) == 0 || mean.output_size() < 1) return std::nullopt;
    const int sub = sole(mean.output(0));
    if (sub < 0 || op(sub) != "Sub" || g.node(sub).input_size() != 2 || g.node(sub).input(0) != x || g.node(sub).input(1) != mean.output(0))
        return std::nullopt;
    const std::string& d = g.node(sub).output(0);
    const auto rd = gr.readers.find(d);
    if (rd == gr.readers.end()) return std::nullopt;
    std::vector<int> readers = rd->second; // a node reading d twice (Mul(d, d)) is listed once or twice
    std::sort(readers.begin(), readers.end());
    readers.erase(std::unique(readers.begin(), readers.end()), readers.end());
    int pow = -1, div = -1;
    bool squareByMul = false;
    const auto isNormalisation = [&](int r) {
        const NodeProto& rn = g.node(r);
        return (op(r) == "Div" || op(r) == "Mul") && rn.input_size() == 2 && (rn.input(0) == d || (op(r) == "Mul" && rn.input(1) == d));
    };
    std::vector<int> ownMean; // x.var(dim): the mean and difference it computes itself
    if (readers.size() == 2) {
        for (int r : readers) {
            const NodeProto& rn = g.node(r);
            if (op(r) == "Pow" && rn.input(0) == d) pow = r;
            else if (op(r) == "Mul" && rn.input_size() == 2 && rn.input(0) == d && rn.input(1) == d) pow = r, squareByMul = true;
            else if (isNormalisation(r)) div = r;
        }
        if (m_uses[d] != (squareByMul ? 3 : 2)) return std::nullopt;
    } else if (readers.size() == 1 && isNormalisation(readers[0]) && m_uses[d] == 1) {
        // d / sqrt(x.var(dim, unbiased=False, keepdim=True) + eps): the variance squares a
        // difference of its own, x - ReduceMean(x) over the same axes; walk its denominator back.
        div = readers[0];
        const NodeProto& dn = g.node(div);
        std::string den = op(div) == "Div" ? dn.input(1) : dn.input(0) == d ? dn.input(1) : dn.input(0);
        const auto made = [&](const std::string& v, const char* kind) {
            const auto it = gr.producer.find(v);
            return it != gr.producer.end() && op(it->second) == kind ? it->second : -1;
        };
        if (op(div) == "Mul") { // Mul(d, Div(1, sqrt))
            const int inv = made(den, "Div");
            if (inv < 0 || g.node(inv).input_size() != 2) return std::nullopt;
            den = g.node(inv).input(1);
        }
        const int sq = made(den, "Sqrt");
        const int ad = sq < 0 ? -1 : made(g.node(sq).input(0), "Add");
        if (ad < 0 || g.node(ad).input_size() != 2) return std::nullopt;
        const int v = std::max(made(g.node(ad).input(0), "ReduceMean"), made(g.node(ad).input(1), "ReduceMean"));
        if (v < 0) return std::nullopt;
        const std::string& squared = g.node(v).input(0);
        pow = std::max(made(squared, "Pow"), made(squared, "Mul"));
        if (pow < 0 || g.node(pow).input_size() != 2) return std::nullopt;
        const std::string& d2 = g.node(pow).input(0);
        squareByMul = op(pow) == "Mul";
        if (squareByMul && g.node(pow).input(1) != d2) return std::nullopt;
        const int sub2 = made(d2, "Sub");
        if (sub2 < 0 || g.node(sub2).input_size() != 2 || g.node(sub2).input(0) != x || m_uses[d2] != (squareByMul ? 2 : 1)) return std::nullopt;
        const int mean2 = made(g.node(sub2).input(1), "ReduceMean");
        if (mean2 < 0 || g.node(mean2).input(0) != x || attrInts(g.node(mean2), "axes") != axes || attrInt(g.node(mean2), "keepdims", 1) == 0 ||
            sole(g.node(mean2).output(0)) != sub2)
            return std::nullopt;
        ownMean = {mean2, sub2};
    }
    if (pow < 0 || div < 0 || g.node(pow).input_size() != 2 || (!squareByMul && dynamic.count(g.node(pow).input(1)))) return std::nullopt;
    const int var = sole(g.node(pow).output(0));
    if (var < 0 || op(var) != "ReduceMean" || attrInts(g.node(var), "axes") != axes || attrInt(g.node(var), "keepdims", 1) == 0)
        return std::nullopt;
    const int add = sole(g.node(var).output(0));
    if (add < 0 || op(add) != "Add" || g.node(add).input_size() != 2) return std::nullopt;
    const NodeProto& a = g.node(add);
    const std::string eps = a.input(0) == g.node(var).output(0) ? a.input(1) : a.input(0);
    if (dynamic.count(eps)) return std::nullopt;
    const int sqrt = sole(a.output(0));
    if (sqrt < 0 || op(sqrt) != "Sqrt") return std::nullopt;
    const std::string& sd = g.node(sqrt).output(0);
    std::vector<int> nodes{k, sub, pow, var, add, sqrt, div};
    nodes.insert(nodes.begin() + 2, ownMean.begin(), ownMean.end());
    std::string one; // the numerator of 1 / sqrt (the rsqrt form)
    if (op(div) == "Div") {
        if (sole(sd) != div || g.node(div).input(1) != sd) return std::nullopt;
    } else { // Mul(d, Div(1, sqrt))
        const int inv = sole(sd);
        if (inv < 0 || op(inv) != "Div" || g.node(inv).input_size() != 2 || g.node(inv).input(1) != sd || dynamic.count(g.node(inv).input(0)) ||
            sole(g.node(inv).output(0)) != div)
            return std::nullopt;
        const NodeProto& m = g.node(div);
        if (!((m.input(0) == d && m.input(1) == g.node(inv).output(0)) || (m.input(1) == d && m.input(0) == g.node(inv).output(0))))
            return std::nullopt;
        one = g.node(inv).input(0);
        nodes.insert(nodes.end() - 1, inv);
    }
    Subgraph s{LayerKind::GroupNorm, div, x, nodes, {eps, squareByMul ? std::string() : g.node(pow).input(1), one}};
    s.axes = axes;
    return s;
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
            failNode(root, std::string("the ") + layerKindName(s.kind) + " subgraph's " + what + " is not one constant");
        return it->second.c.at(0);
    };
    if (s.kind == LayerKind::GroupNorm) { // nn.LayerNorm's subgraph (layerNormAt)
        if (m_views.count(s.x)) failNode(root, "normalises a view of its input, which QuantScope does not read");
        const Shape sh = shapeOf(x); // a copy: addLayer adds a shape
        const bool perPixel = perPixelAxes(s.x, sh, s.axes); // a LayerNorm2d
        if (!perPixel) checkLayerNormAxes(root, sh, s.axes, isChannelsLast(s.x) && sh.size() == 3); // maps: features keep their reading
        const double eps = scalar(s.constants[0], "added epsilon");
        const double power = s.constants[1].empty() ? 2.0 : scalar(s.constants[1], "exponent"); // "": Mul(d, d)
        if (!s.constants[2].empty() && scalar(s.constants[2], "numerator of 1 / sqrt") != 1.0)
            failNode(root, "reads as nn.LayerNorm only as (x - mean) * (1 / sqrt(var + eps)); this subgraph's numerator is not 1");
        if (power != 2.0 || !(eps > 0.0) || !std::isfinite(eps))
            failNode(root, "reads as nn.LayerNorm only as (x - mean) / sqrt(mean((x - mean)^2) + eps) with eps > 0; this subgraph "
                           "raises to the power " + std::to_string(power) + " and adds " + std::to_string(eps));
        StoredLayer l;
        l.kind = perPixel ? LayerKind::LayerNorm2d : LayerKind::GroupNorm;
        l.groups = perPixel ? 0 : 1;
        l.outChannels = sh.at(0);
        l.eps = static_cast<float>(eps);
        addLayer(root, std::move(l), sh, {x});
        return;
    }
    if (s.kind == LayerKind::Hardswish && g.node(s.nodes[0]).op_type() == "HardSigmoid")
        checkHardSigmoid(g.node(s.nodes[0]), " (x * hardsigmoid(x) is Hardswish)");
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
    if (s.kind == LayerKind::GELUTanh) {
        const double kappa = scalar(s.constants[0], "cube factor"), beta = scalar(s.constants[1], "scale"),
                     one = scalar(s.constants[2], "added constant"), half = scalar(s.constants[3], "factor");
        const double power = s.constants[4].empty() ? 3.0 : scalar(s.constants[4], "exponent");
        if (!near(kappa, kGeluKappa) || !near(beta, kSqrt2OverPi) || one != 1.0 || half != 0.5 || power != 3.0) {
            char what[200];
            std::snprintf(what, sizeof what, "tanh(%.9g (x + %.9g x^%.9g)), + %.9g, times x and %.9g", beta, kappa, power, one, half);
            failNode(root, std::string("reads as GELU's tanh approximation only as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) "
                                       "(nn.GELU(approximate='tanh')); this subgraph computes ") + what);
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
    } else if (op == "Softplus") {
        l.kind = LayerKind::Softplus;
    } else if (op == "Mish") { // opset 18
        l.kind = LayerKind::Mish;
    } else if (op == "Softsign") {
        l.kind = LayerKind::Softsign;
    } else if (op == "Selu") { // nn.SELU: ONNX's default alpha and gamma are its constants
        const float alpha = attrFloat(n, "alpha", kOnnxSeluAlpha), gamma = attrFloat(n, "gamma", kOnnxSeluGamma);
        if (!near(alpha, kOnnxSeluAlpha) || !near(gamma, kOnnxSeluGamma)) {
            char what[200];
            std::snprintf(what, sizeof what,
                          "alpha = %.9g, gamma = %.9g: QuantScope's SELU is PyTorch's nn.SELU (alpha = 1.6732632, gamma = "
                          "1.0507010, Selu's defaults) only",
                          static_cast<double>(alpha), static_cast<double>(gamma));
            failNode(n, what);
        }
        l.kind = LayerKind::SELU;
    } else if (op == "Celu") { // opset 12: nn.CELU(alpha)
        l.kind = LayerKind::CELU;
        l.alpha = attrFloat(n, "alpha", 1.0f);
        if (l.alpha == 0.0f) failNode(n, "alpha = 0: CELU divides x by alpha");
    } else if (op == "Gelu") { // opset 20: nn.GELU() and nn.GELU(approximate='tanh') as one operator
        const std::string approximate = attrString(n, "approximate", "none");
        if (approximate == "none") l.kind = LayerKind::GELU;
        else if (approximate == "tanh") l.kind = LayerKind::GELUTanh;
        else failNode(n, "approximate = '" + approximate + "'; ONNX's Gelu defines 'none' and 'tanh'");
    } else {
        failNode(n, "internal error: not a pointwise operator", false);
    }
    if (!std::isfinite(l.alpha)) failNode(n, "alpha is not a finite number");
    addLayer(n, std::move(l), shapeOf(x), {x});
}

// PRelu(x, slope): torch.onnx.export writes nn.PReLU()'s slope as [1, 1, 1] (folded) or [1]
// (Unsqueezed, constant), nn.PReLU(C)'s as [C, 1, 1] on feature maps and [C] on [N, C] features;
// [1, C, 1, 1] and [1, C] are the same broadcasts. A [C] slope on a map broadcasts along W (ONNX
// aligns trailing axes), not the channels: refused, as is any other shape.
void Importer::prelu(const NodeProto& n)
{
    const std::size_t x = act(n, 0);
    const ConstTensor& c = constant(n, 1, "the slope");
    const std::vector<float>& a = floats(n, c, "the slope");
    const Shape& s = shapeOf(x);
    const std::size_t C = s.empty() ? 0 : s[0];
    std::vector<std::int64_t> d = c.dims;
    const bool shared = a.size() == 1 && d.size() <= s.size() + 1;
    if (!shared && d.size() == s.size() + 1 && !d.empty() && d[0] == 1) d.erase(d.begin()); // [1, C, 1, 1], [1, C]
    const bool perChannel = !shared && C > 1 && a.size() == C && !d.empty() && d.size() == s.size() && d[0] == static_cast<std::int64_t>(C) &&
                            std::all_of(d.begin() + 1, d.end(), [](std::int64_t v) { return v == 1; });
    if (!shared && !perChannel)
        failNode(n, "slope of shape " + listOf(c.dims) + " on an input of per-image shape " + shapeString(s) +
                        ": QuantScope's PReLU has one slope or one per channel ([1], or [C, 1, 1] / [1, C, 1, 1] on feature maps, [C] "
                        "on features)" + (s.size() == 3 && c.dims.size() == 1 ? "; a [C] slope on a feature map broadcasts along W" : ""));
    for (std::size_t i = 0; i < a.size(); ++i)
        if (!std::isfinite(a[i])) failNode(n, "slope " + std::to_string(i) + " is not a finite number");
    StoredLayer l;
    l.kind = LayerKind::PReLU;
    l.tensors = {floatTensor("weight", {a.size()}, a)};
    addLayer(n, std::move(l), s, {x}, &c);
}

void Importer::erf(const NodeProto& n)
{
    failNode(n, "Erf is read only as part of GELU, 0.5 x (1 + erf(x / sqrt 2)) (torch.nn.GELU() exported); here its input or "
                "output is read otherwise (a value of the pattern with another reader is not supported)");
}

} // namespace quantscope::onnximport
