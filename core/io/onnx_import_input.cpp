// The ONNX importer's reading of the input normalisation a graph writes in front of its layers:
// Sub, Add, Div and Mul of the graph input by constants, composed into one (x - mean) / stddev,
// and moved to QuantScope's [0, 1] pixels when the graph takes 0..255 pixels.
#include "io/onnx_importer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace quantscope::onnximport {

// Sub / Div of the graph input by constants (one value, or one per channel: [C], [C, 1, 1],
// [1, C, 1, 1]): the input normalisation QuantScope's own exports carry, x = (input - mean) / stddev.
std::vector<float> Importer::perChannel(const NodeProto& n, const ConstTensor& c0, const char* what) const
{
    const std::size_t C = shapeOf(0)[0];
    // A constant of the images' shape that is uniform over each channel's plane (a buffer
    // expand_as(x)'ed, tester 11) is its per-channel values.
    ConstTensor reduced;
    const ConstTensor* cp = &c0;
    if (c0.isFloat && shapeOf(0).size() == 3 && c0.numel() == shapeNumel(shapeOf(0)) && c0.numel() > C) {
        const std::size_t plane = c0.numel() / C;
        bool uniform = true;
        for (std::size_t ch = 0; ch < C && uniform; ++ch)
            for (std::size_t i = 1; i < plane && uniform; ++i) uniform = c0.f[ch * plane + i] == c0.f[ch * plane];
        if (uniform) {
            reduced.isFloat = true;
            reduced.dims = {static_cast<std::int64_t>(C), 1, 1};
            for (std::size_t ch = 0; ch < C; ++ch) reduced.f.push_back(c0.f[ch * plane]);
            cp = &reduced;
        }
    }
    const ConstTensor& c = *cp;
    if (m_inputAct != 0 && !(c.isFloat && c.numel() == 1))
        failNode(n, std::string(what) + " " + listOf(c.dims) + " of a flat input is not one value (per-feature normalisation is not read)");
    std::vector<std::int64_t> dims = c.dims;
    while (!dims.empty() && dims.front() == 1) dims.erase(dims.begin());
    while (dims.size() > 1 && dims.back() == 1) dims.pop_back();
    const bool ok = c.isFloat && (c.numel() == 1 || (c.numel() == C && dims.size() == 1 && c.dims.size() != 2 && c.dims.size() <= 4 &&
                                                      (c.dims.size() < 3 || c.dims[c.dims.size() - 3] == static_cast<std::int64_t>(C))));
    if (!ok) failNode(n, std::string(what) + " " + listOf(c.dims) + " is not one value or one per input channel");
    return c.f; // (a copy: c may be the local reduction)
}

// What a Sub, Div or Mul on the input may be: the one message for all three.
constexpr const char* kNormalisationForms =
    "only the input normalisation is read here: (input - mean) / stddev, (input - mean) * (1 / stddev) or "
    "input / stddev - mean / stddev, by one value or one per channel, on the graph input or right after the model "
    "flattens it";

// The input normalisation (x - mean) / stddev, composed node by node as the graph writes it:
// with u = (x - M) / S, u - c = (x - (M + c S)) / S and u / c = (x - M) / (S c). So
// x / 255 then (u - 0.1307) / 0.3081, or (x - m) * (1 / s) + b, are one normalisation.
namespace {
// a and b to one length (one value widens to the other's per-channel list).
void widen(std::vector<float>& a, std::vector<float>& b)
{
    if (a.size() == 1 && b.size() > 1) a.assign(b.size(), a[0]);
    if (b.size() == 1 && a.size() > 1) b.assign(a.size(), b[0]);
}
} // namespace

void Importer::checkInputNormalisation(const NodeProto& n, int actInput) const
{
    if (onInput(n, actInput)) return;
    if (m_m.layers.size() != inputHere())
        failNode(n, "applies a constant to an activation inside the network (after a ReLU, a pool, an Add, or a layer "
                    "that something else reads too); QuantScope has no layer for that and folds a constant only into the "
                    "Linear or Conv right before it, when nothing else reads that layer's output. Move the scale or shift "
                    "into that layer (or the next one's weights) in PyTorch and export again");
    failNode(n, kNormalisationForms);
}

// A constant c subtracted from the input (sign 1) or added to it (sign -1).
void Importer::shiftInput(const NodeProto& n, const ConstTensor& c, float sign)
{
    std::vector<float> shift = inInputOrder(perChannel(n, c, "the mean"));
    std::vector<float>& M = m_m.normalization.mean;
    std::vector<float>& S = m_m.normalization.stddev;
    widen(shift, M);
    widen(shift, S);
    widen(M, S);
    for (std::size_t i = 0; i < M.size(); ++i) M[i] += sign * shift[i] * S[i];
    m_sawMean = true;
    m_normalisedPermuted = m_normalisedPermuted || inputHere() != m_inputAct;
    alias(n, inputHere());
}

// The input divided by `divisor` (per channel): the stddev grows by it.
void Importer::scaleInput(const NodeProto& n, std::vector<float> divisor)
{
    divisor = inInputOrder(std::move(divisor));
    for (float v : divisor) {
        if (v > 0.0f && std::isfinite(v)) continue;
        char b[32];
        std::snprintf(b, sizeof b, "%g", static_cast<double>(v));
        failNode(n, std::string("divides the input by ") + b + "; a normalisation's stddev must be positive and finite");
    }
    std::vector<float>& M = m_m.normalization.mean;
    std::vector<float>& S = m_m.normalization.stddev;
    widen(divisor, S);
    widen(M, S);
    for (std::size_t i = 0; i < S.size(); ++i) S[i] *= divisor[i];
    m_sawStd = true;
    m_normalisedPermuted = m_normalisedPermuted || inputHere() != m_inputAct;
    alias(n, inputHere());
}

std::vector<float> Importer::inInputOrder(std::vector<float> v) const
{
    if (inputHere() == m_inputAct || v.size() != m_inputPermutation.size()) return v;
    std::vector<float> in(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) in[m_inputPermutation[k]] = v[k];
    return in;
}

bool Importer::readsOnlyPixels(std::size_t a) const
{
    // a Pad, a clamp (x.clamp(0, 1)), a constant, a slice, selection or copies of the channels, a subsampling
    const auto passesPixels = [&](std::size_t k) {
        const LayerKind kind = m_m.layers[k].kind;
        return kind == LayerKind::Pad || kind == LayerKind::Hardtanh || kind == LayerKind::ReLU || kind == LayerKind::ReLU6 ||
               kind == LayerKind::Slice || m_constantLayers.count(k) > 0 || m_pixelLayers.count(k) > 0 ||
               m_subsampleLayers.count(k) > 0;
    };
    while (a != 0 && passesPixels(a - 1)) a = m_m.layers[a - 1].inputs.at(0);
    return a == 0 && m_inputAct == 0;
}

bool Importer::sharedInput(const NodeProto& n, int i) const
{
    const auto r = m_valueReaders.find(n.input(i));
    return onInput(n, i) && r != m_valueReaders.end() && r->second > 1;
}

// A normalisation of the graph input that something else reads too (the raw pixels concatenated
// with normalised ones, two normalisations side by side, a wide-and-deep model's raw branch):
// moved out of the graph, it would reach those readers too. It stays inside as a depthwise 1x1
// Conv (constantOnMaps), and the graph takes [0, 1] pixels as they are. Refused by node on a flat
// input (no layer takes a constant on features there).
void Importer::normaliseInGraph(const NodeProto& n, int i, const ConstTensor& c, Fold op)
{
    const std::size_t x = act(n, i);
    if (shapeOf(x).size() != 3)
        failNode(n, "normalises the graph input, whose raw values something else reads too; QuantScope moves a normalisation "
                    "out of the graph only when nothing else reads the input, and keeps one inside only on [N, C, H, W] images (as "
                    "a depthwise 1x1 Conv), not on flat features. Normalise once, before every reader, in PyTorch and export again");
    m_normalisesAfterPad = true;
    constantOnMaps(n, i, c, op);
}

// Whether input i of n is the graph input before any layer reads it: where a Sub, Div or Mul is
// the input normalisation; elsewhere it may fold into the layer before it (foldConstant).
bool Importer::onInput(const NodeProto& n, int i) const
{
    const Value& v = value(n, i);
    return v.kind == Value::Kind::Act && v.act == inputHere() && m_m.layers.size() == inputHere();
}

// After a Linear or Conv that nothing else reads, a constant folds into it; elsewhere it is refused.
bool Importer::foldsIntoLayer(const NodeProto& n, int i) const
{
    const Value& v = value(n, i);
    if (v.kind != Value::Kind::Act || v.act == 0 || v.act != m_m.layers.size()) return false;
    const LayerKind k = m_m.layers[v.act - 1].kind;
    const auto uses = m_uses.find(n.input(i));
    return (k == LayerKind::Linear || k == LayerKind::Conv2d ||
            ((k == LayerKind::GroupNorm || k == LayerKind::LayerNorm2d) && !m_views.count(n.input(i)))) &&
           uses != m_uses.end() && uses->second == 1;
}

// Sub or Div of two activations: no layer takes a difference or a quotient of two (Add joins two).
void Importer::refuseTwoActivations(const NodeProto& n, const char* what) const
{
    if (value(n, 0).kind == Value::Kind::Const || value(n, 1).kind == Value::Kind::Const) return;
    failNode(n, std::string(what) + " of two activations (of '" + n.input(0) + "' and '" + n.input(1) +
                    "'): QuantScope has no layer for it (two activations join by Add, Mul or Concat only); a constant " +
                    "operand folds into the Linear or Conv before it, or is the input normalisation");
}

void Importer::sub(const NodeProto& n)
{
    if (value(n, 0).kind == Value::Kind::Act && value(n, 1).kind == Value::Kind::Act) return differenceOfActivations(n);
    refuseTwoActivations(n, "a difference");
    if (value(n, 0).kind == Value::Kind::Const) {
        if (insideNetwork(n, 1)) return constantOnMaps(n, 1, constant(n, 0, "the constant"), Fold::Sub, true);
        // 1 - x on the image input (an inversion, tester 15): no (x - m) / s, so it stays in the
        // graph (a depthwise 1x1 Conv of weight -1), which takes [0, 1] pixels as they are.
        if (onInput(n, 1) && shapeOf(act(n, 1)).size() == 3) {
            m_normalisesAfterPad = true;
            return constantOnMaps(n, 1, constant(n, 0, "the constant"), Fold::Sub, true);
        }
        failNode(n, std::string("subtracts the input from a constant (such as 1 - x, an inversion); ") + kNormalisationForms);
    }
    if (value(n, 1).kind == Value::Kind::Const && !onInput(n, 0) && foldsIntoLayer(n, 0))
        return foldConstant(n, 0, constant(n, 1, "the constant"), Fold::Sub);
    if (insideNetwork(n, 0)) return constantOnMaps(n, 0, constant(n, 1, "the constant"), Fold::Sub);
    checkInputNormalisation(n, 0);
    if (sharedInput(n, 0)) return normaliseInGraph(n, 0, constant(n, 1, "the constant"), Fold::Sub);
    shiftInput(n, constant(n, 1, "the mean"), 1.0f);
}

void Importer::div(const NodeProto& n)
{
    refuseTwoActivations(n, "a quotient");
    if (value(n, 1).kind == Value::Kind::Const && !onInput(n, 0) && foldsIntoLayer(n, 0))
        return foldConstant(n, 0, constant(n, 1, "the constant"), Fold::Div);
    if (insideNetwork(n, 0)) return constantOnMaps(n, 0, constant(n, 1, "the constant"), Fold::Div);
    checkInputNormalisation(n, 0);
    if (sharedInput(n, 0)) return normaliseInGraph(n, 0, constant(n, 1, "the constant"), Fold::Div);
    scaleInput(n, perChannel(n, constant(n, 1, "the stddev"), "the stddev"));
}

// a - b of two activations of one shape on [N, C, H, W] maps (x - tanh(x), nn.Tanhshrink; the
// difference of two branches): -b is a depthwise 1x1 Conv of weight -1 (constantOnMaps' layer:
// exact in float, and exact per channel in int8, code -127 at scale 1/127), then an Add of a and
// it. Shapes that differ and flat features are refused by node.
void Importer::differenceOfActivations(const NodeProto& n)
{
    const std::size_t a = act(n, 0), b = act(n, 1);
    const Shape s = shapeOf(b); // a copy: the negation adds a layer (and a shape) before the Add reads it
    if (shapeOf(a) != s)
        failNode(n, "subtracts per-image shapes " + shapeString(shapeOf(a)) + " and " + shapeString(s) + "; broadcasting is not read");
    if (s.size() != 3 || viewedShape(n, 0, a) != s || viewedShape(n, 1, b) != s)
        failNode(n, "a difference of two activations on features of shape " + shapeString(viewedShape(n, 1, b)) +
                        "; QuantScope reads one on [N, C, H, W] maps only (an Add of the first and a depthwise 1x1 Conv of weight -1 on "
                        "the second)");
    addLayer(n, depthwiseScale(std::vector<float>(s.at(0), -1.0f), nullptr), s, {b}, nullptr, ".neg");
    m_m.importAddedParams += s.at(0);
    const std::size_t negated = m_m.layers.size();
    StoredLayer add;
    add.kind = LayerKind::Add;
    const StoredLayer& made = addLayer(n, std::move(add), s, {a, negated});
    m_m.notes.push_back("Sub " + onnxNodeName(n) + " of two activations: read as the depthwise 1x1 Conv '" + m_m.layers[negated - 1].name +
                        "' (weight -1 per channel, trainable) on its second input and the Add '" + made.name + "'");
}

// Neg (-x, as torch writes a unary minus): folded into the Linear or Conv before it when nothing
// else reads that (a product with -1), else on maps a depthwise 1x1 Conv of weight -1.
void Importer::neg(const NodeProto& n)
{
    const Value& v = value(n, 0);
    if (v.kind == Value::Kind::Const) failConstantInput(n, 0);
    ConstTensor minusOne;
    minusOne.dims = {1};
    minusOne.f = {-1.0f};
    if (!onInput(n, 0) && foldsIntoLayer(n, 0)) return foldConstant(n, 0, minusOne, Fold::Mul);
    if (!insideNetwork(n, 0)) { // -x on the image input: kept in the graph as 1 - x is (sub)
        if (!onInput(n, 0) || shapeOf(act(n, 0)).size() != 3)
            failNode(n, "negates the network's flat input; QuantScope reads a normalisation of the input as (x - mean) / std only");
        m_normalisesAfterPad = true;
    }
    constantOnMaps(n, 0, minusOne, Fold::Mul);
}

// x * f, the factor on either side: a division by 1 / f.
void Importer::mul(const NodeProto& n)
{
    if (value(n, 0).kind != Value::Kind::Const && value(n, 1).kind != Value::Kind::Const) return mulActivations(n);
    const int a = value(n, 0).kind == Value::Kind::Const ? 1 : 0; // the activation's side
    if (value(n, 1 - a).kind == Value::Kind::Const && !onInput(n, a) && foldsIntoLayer(n, a))
        return foldConstant(n, a, constant(n, 1 - a, "the factor"), Fold::Mul);
    if (insideNetwork(n, a)) return constantOnMaps(n, a, constant(n, 1 - a, "the factor"), Fold::Mul);
    checkInputNormalisation(n, a);
    if (sharedInput(n, a)) return normaliseInGraph(n, a, constant(n, 1 - a, "the factor"), Fold::Mul);
    std::vector<float> f = perChannel(n, constant(n, 1 - a, "the factor"), "the factor");
    for (float& v : f) v = 1.0f / v; // 0 becomes inf, refused with the value
    scaleInput(n, std::move(f));
}

// A model that divides its input by 255 (x / 255, or ToTensor's scaling written into the graph
// before a normalisation), or subtracts a mean of pixel values (Caffe's x - 104), takes pixels of
// 0..255. QuantScope's pixels are on [0, 1], so the stored normalisation moves to that scale:
// (255 p - M) / S = (p - M/255) / (S/255). Every channel must show the 0..255 scale by one of:
// - a stddev of at least 4: on [0, 1] pixels no normalisation divides by 4 (torchvision's are
//   0.2-0.5; on 0..255 pixels they are 50-255);
// - a mean so far from the pixels that [0, 1] would be normalised to values beyond +-5 only.
// A uint8 input is 0..255 pixels for certain: the same move, with no test of the values (a graph
// that does not normalise reads the bytes as they are: mean 0, stddev 1/255 on [0, 1] pixels).
bool Importer::pixelScale255()
{
    Normalization& z = m_m.normalization;
    if (!m_inputBytes) { // a float input: the 0..255 scale must show on every channel
        if (!(m_sawStd || m_sawMean) || z.mean.empty()) return false;
        for (std::size_t c = 0; c < z.mean.size(); ++c) {
            const double s = c < z.stddev.size() ? z.stddev[c] : 1.0, m = z.mean[c];
            const double lo = std::min(-m / s, (1.0 - m) / s), hi = std::max(-m / s, (1.0 - m) / s);
            if (!(s >= 4.0 || lo > 5.0 || hi < -5.0)) return false;
        }
    }
    const auto g4 = [](float v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.4g", static_cast<double>(v));
        return std::string(b);
    };
    const std::string before = "mean " + g4(z.mean.front()) + ", stddev " + g4(z.stddev.front());
    for (float& m : z.mean) m /= 255.0f;
    for (float& s : z.stddev) s /= 255.0f;
    const std::string on = m_inputBytes ? "the graph takes uint8 pixels '" + m_inputName + "' (0..255) and casts them to float; its input "
                                          "normalisation (" + before + (z.stddev.size() > 1 ? ", first channel" : "") + ") is"
                                        : "the graph's input normalisation (" + before + (z.stddev.size() > 1 ? ", first channel" : "") + ") is";
    m_m.notes.push_back(on + " on the scale of 0..255 pixels; QuantScope's pixels are on [0, 1], so it is read as mean " +
                        g4(z.mean.front()) + ", stddev " + g4(z.stddev.front()));
    return true;
}

} // namespace quantscope::onnximport
