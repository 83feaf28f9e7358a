// ExportedModel::validate (exported_model.h): the checks every stored model passes before it is
// built or run, whichever file it came from (.qsm, QuantScope's own ONNX, the ONNX importer):
// dimensions within bounds, each layer's tensors by name and shape, integer grids, scales and zero
// points, finite values, and inputs that chain. Each failure is a FormatError naming the source
// file and the layer.
#include "io/exported_model.h"

#include "nn/concat.h"
#include "nn/mul.h"
#include "nn/pointwise.h"
#include "util/errors.h"
#include "util/number_text.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace quantscope {

namespace {

// Bounds on what a stored model may describe; past them a file is corrupt, not just large.
constexpr std::size_t kMaxDim = 65536;
constexpr std::size_t kMaxKernel = 64;
constexpr std::size_t kMaxImageSide = 4096;
constexpr std::size_t kMaxActivation = std::size_t{1} << 26; // elements of one image's activation
constexpr std::size_t kMaxLayers = 1024;

[[noreturn]] void bad(const std::string& source, const std::string& what)
{
    throw FormatError(source + ": " + what);
}

std::string layerId(const StoredLayer& l) { return std::string(storedKindName(l.kind)) + " '" + l.name + "'"; }

void checkGrid(const std::string& where, int bits, bool isSigned, int qmin, int qmax, const std::string& source)
{
    if (!((bits >= 2 && bits <= 16) || bits == 32))
        bad(source, where + ": " + std::to_string(bits) + "-bit integers are not a stored width (2..16 or 32)");
    const std::int64_t lo = isSigned ? -(std::int64_t{1} << (bits - 1)) : 0;
    const std::int64_t hi = isSigned ? (std::int64_t{1} << (bits - 1)) - 1 : (std::int64_t{1} << bits) - 1;
    if (bits == 32 && !isSigned) bad(source, where + ": unsigned 32-bit integers are not stored");
    if (qmin < lo || qmax > hi || qmin >= qmax)
        bad(source, where + ": integer range [" + std::to_string(qmin) + ", " + std::to_string(qmax) +
                        "] does not fit " + std::to_string(bits) + "-bit " + (isSigned ? "signed" : "unsigned"));
}

void checkTensor(const StoredTensor& t, const Shape& want, const std::string& where, const std::string& source)
{
    if (t.shape != want)
        bad(source, where + " has shape " + shapeString(t.shape) + ", the layer needs " + shapeString(want));
    const std::size_t n = t.numel();
    if (t.encoding == TensorEncoding::Float32) {
        if (t.values.size() != n) bad(source, where + ": " + std::to_string(t.values.size()) + " values for " + std::to_string(n) + " elements");
        for (std::size_t i = 0; i < t.values.size(); ++i)
            if (!std::isfinite(t.values[i]))
                bad(source, where + " holds a non-finite value (" + std::to_string(t.values[i]) + " at element " + std::to_string(i) + ")");
        return;
    }
    checkGrid(where, t.bits, t.isSigned, t.qmin, t.qmax, source);
    if (t.layout == ScaleLayout::Group && t.groupSize == 0) bad(source, where + ": group size 0");
    if (t.scales.size() != t.expectedScales() || t.zeroPoints.size() != t.scales.size())
        bad(source, where + ": " + std::to_string(t.scales.size()) + " scales and " + std::to_string(t.zeroPoints.size()) +
                        " zero points, the layout needs " + std::to_string(t.expectedScales()));
    for (std::size_t i = 0; i < t.scales.size(); ++i) {
        if (!(std::isfinite(t.scales[i]) && t.scales[i] > 0.0f)) 
            bad(source, where + ": scale " + std::to_string(i) + " is " + numberText(t.scales[i]) + ", not a positive number");
        if (t.zeroPoints[i] < t.qmin || t.zeroPoints[i] > t.qmax) bad(source, where + ": zero point outside the integer range");
        if (t.bits == 32 && t.zeroPoints[i] != 0) bad(source, where + ": 32-bit integers are stored with zero point 0");
    }
    if (t.q.size() != n) bad(source, where + ": " + std::to_string(t.q.size()) + " integers for " + std::to_string(n) + " elements");
    for (std::int32_t v : t.q)
        if (v < t.qmin || v > t.qmax) bad(source, where + ": value " + std::to_string(v) + " outside [" + std::to_string(t.qmin) + ", " + std::to_string(t.qmax) + "]");
}

void checkActivation(const ActivationQuant& a, const std::string& where, const std::string& source)
{
    checkGrid(where, a.bits, a.isSigned, a.qmin, a.qmax, source);
    if (a.bits > 16) bad(source, where + ": activations of more than 16 bits are not stored");
    if (!(std::isfinite(a.scale) && a.scale > 0.0f)) bad(source, where + ": scale is " + numberText(a.scale) + ", not a positive number");
    if (a.zeroPoint < a.qmin || a.zeroPoint > a.qmax) bad(source, where + ": zero point outside the integer range");
}

void expectTensors(const StoredLayer& l, const std::vector<std::pair<const char*, Shape>>& want, const std::string& source)
{
    if (l.tensors.size() != want.size())
        bad(source, layerId(l) + " has " + std::to_string(l.tensors.size()) + " tensors, expected " + std::to_string(want.size()));
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (l.tensors[i].name != want[i].first)
            bad(source, layerId(l) + ": tensor " + std::to_string(i) + " is '" + l.tensors[i].name + "', expected '" + want[i].first + "'");
        checkTensor(l.tensors[i], want[i].second, layerId(l) + " " + want[i].first, source);
    }
}

bool inRange(std::size_t v, std::size_t lo, std::size_t hi) { return v >= lo && v <= hi; }

// A GroupNorm's or LayerNorm2d's affine parameters: none, or a float32 weight and bias per channel.
void expectNormAffine(const StoredLayer& l, std::size_t channels, const std::string& id, const char* kind, const std::string& source)
{
    if (l.tensors.empty()) return;
    expectTensors(l, {{"weight", {channels}}, {"bias", {channels}}}, source);
    for (const StoredTensor& t : l.tensors)
        if (t.encoding != TensorEncoding::Float32)
            bad(source, id + ": the " + kind + " " + t.name + " is stored as float32 (integer models too), not as integers");
}

} // namespace

void ExportedModel::validate(const std::string& source) const
{
    if (!inRange(channels, 1, 64) || !inRange(height, 1, kMaxImageSide) || !inRange(width, 1, kMaxImageSide))
        bad(source, "input shape " + std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width) + " is out of range");
    if (!inRange(classes, 1, kMaxDim)) bad(source, std::to_string(classes) + " classes is out of range");
    if (!classNames.empty() && classNames.size() != classes)
        bad(source, std::to_string(classNames.size()) + " class names for " + std::to_string(classes) + " classes");
    try {
        normalization.check(channels, "input");
    } catch (const ConfigError& e) {
        bad(source, e.what());
    }
    if (layers.empty()) bad(source, "the model has no layers");
    // A well-formed model past QuantScope's limit is not damaged: a ConfigError (unsupported, exit 2)
    // that says whose limit it is ("2003 layers is out of range (1 to 1024)" read as a corrupt file).
    if (layers.size() > kMaxLayers)
        throw ConfigError(source + ": the model has " + std::to_string(layers.size()) + " layers; QuantScope takes models of at most " +
                          std::to_string(kMaxLayers));
    if (quantized) {
        if (!inputQuant) bad(source, "an integer model needs the quantization of its input");
        checkActivation(*inputQuant, "input quantization", source);
    } else if (inputQuant) {
        bad(source, "an FP32 model carries an input quantization");
    }

    // Walk the shapes of one image through the graph.
    std::vector<Shape> shapes{{channels, height, width}};
    for (std::size_t li = 0; li < layers.size(); ++li) {
        const StoredLayer& l = layers[li];
        const std::string id = layerId(l);
        if (l.kind == LayerKind::Concat) {
            if (l.inputs.size() < 2 || l.inputs.size() > 255)
                bad(source, id + " reads " + std::to_string(l.inputs.size()) + " inputs, it takes 2 to 255");
        } else {
            const std::size_t arity = l.kind == LayerKind::Add || l.kind == LayerKind::Mul ? 2 : 1;
            if (l.inputs.size() != arity)
                bad(source, id + " reads " + std::to_string(l.inputs.size()) + " inputs, it takes " + std::to_string(arity));
        }
        for (std::size_t a : l.inputs)
            if (a > li) bad(source, id + " reads activation " + std::to_string(a) + ", which is not an earlier layer's output");
        Shape s = shapes[l.inputs[0]];
        auto needRank = [&](std::size_t r) {
            if (s.size() != r) bad(source, id + " cannot take an input of shape " + shapeString(s));
        };
        switch (l.kind) {
        case LayerKind::Conv2d: {
            needRank(3);
            const ConvGeometry g = l.convGeometry();
            if (!inRange(l.inChannels, 1, kMaxDim) || !inRange(l.outChannels, 1, kMaxDim) || !inRange(g.kh, 1, kMaxKernel) ||
                !inRange(g.kw, 1, kMaxKernel) || !inRange(g.sh, 1, kMaxKernel) || !inRange(g.sw, 1, kMaxKernel) ||
                !inRange(g.dh, 1, kMaxKernel) || !inRange(g.dw, 1, kMaxKernel) || g.padTop > kMaxKernel ||
                g.padLeft > kMaxKernel || g.padBottom > kMaxKernel || g.padRight > kMaxKernel)
                bad(source, id + ": hyper-parameters out of range (" + g.text() + "; each at most " + std::to_string(kMaxKernel) + ")");
            if (s[0] != l.inChannels) bad(source, id + " expects " + std::to_string(l.inChannels) + " input channels, gets " + std::to_string(s[0]));
            if (!g.fits(s[1], s[2]))
                bad(source, id + ": the window (" + g.text() + ") is larger than its padded input " + shapeString(s) +
                                "; the output would be empty");
            if (!inRange(l.groups, 1, l.inChannels) || l.inChannels % l.groups || l.outChannels % l.groups)
                bad(source, id + ": groups = " + std::to_string(l.groups) + " does not divide its " + std::to_string(l.inChannels) +
                                " input and " + std::to_string(l.outChannels) + " output channels");
            if (l.tensors.size() == 1)
                expectTensors(l, {{"weight", {l.outChannels, l.inChannels / l.groups, g.kh, g.kw}}}, source);
            else
                expectTensors(l, {{"weight", {l.outChannels, l.inChannels / l.groups, g.kh, g.kw}}, {"bias", {l.outChannels}}}, source);
            s = {l.outChannels, g.outH(s[1]), g.outW(s[2])};
            break;
        }
        case LayerKind::BatchNorm2d:
            needRank(3);
            if (s[0] != l.outChannels || !(std::isfinite(l.eps) && l.eps > 0.0f) || !std::isfinite(l.momentum))
                bad(source, id + ": channels or eps do not fit");
            expectTensors(l, {{"gamma", {s[0]}}, {"beta", {s[0]}}, {"running_mean", {s[0]}}, {"running_var", {s[0]}}}, source);
            // a variance below zero has no square root: every output of that channel would be NaN
            if (const StoredTensor& var = l.tensors[3]; var.encoding == TensorEncoding::Float32)
                for (std::size_t i = 0; i < var.values.size(); ++i)
                    if (var.values[i] < 0.0f)
                        bad(source, id + " running_var holds a negative variance (" + numberText(var.values[i]) + " at element " +
                                        std::to_string(i) + ")");
            break;
        case LayerKind::MaxPool2d:
        case LayerKind::AvgPool2d:
        {
            needRank(3);
            const PoolGeometry g = l.poolGeometry();
            if (!inRange(g.kh, 1, kMaxKernel) || !inRange(g.kw, 1, kMaxKernel) || !inRange(g.sh, 1, kMaxKernel) ||
                !inRange(g.sw, 1, kMaxKernel) || !g.padsWithinHalfKernel())
                bad(source, id + ": hyper-parameters out of range (" + g.text() + "; padding at most half the kernel)");
            if (l.kind == LayerKind::MaxPool2d && !g.countIncludePad) bad(source, id + ": a max pooling has no count_include_pad");
            if (!g.fits(s[1], s[2])) bad(source, id + ": the window (" + g.text() + ") is larger than its input");
            expectTensors(l, {}, source);
            s = {s[0], g.outH(s[1]), g.outW(s[2])};
            break;
        }
        case LayerKind::Dropout:
            if (!(l.dropout >= 0.0f && l.dropout < 1.0f)) bad(source, id + ": probability out of range");
            expectTensors(l, {}, source);
            break;
        case LayerKind::ReLU:
        case LayerKind::ReLU6: expectTensors(l, {}, source); break;
        QS_POINTWISE_KIND_CASES:
            if (l.kind == LayerKind::Hardtanh) { // min_val and max_val
                if (const std::string why = hardtanhBoundsProblem(l.alpha, l.beta); !why.empty()) bad(source, id + ": " + why);
            } else {
                if (!std::isfinite(l.alpha) || (!pointwiseInfo(l.kind)->hasAlpha && l.alpha != 0.0f))
                    bad(source, id + ": alpha " + numberText(l.alpha) + " is not a finite number (or set on a kind without one)");
                if (l.kind == LayerKind::CELU && l.alpha == 0.0f) bad(source, id + ": CELU alpha is 0 (it divides x)");
                if (l.beta != 0.0f) bad(source, id + ": beta " + numberText(l.beta) + " set on a kind without one");
            }
            expectTensors(l, {}, source);
            break;
        case LayerKind::PReLU: {
            // One slope, or one per channel of a (C, H, W) map or (C) features; float32 in every model.
            if (s.size() != 3 && s.size() != 1) bad(source, id + " cannot take an input of shape " + shapeString(s));
            const bool shared = !l.tensors.empty() && l.tensors[0].shape == Shape{1};
            expectTensors(l, {{"weight", {shared ? 1 : s[0]}}}, source);
            if (l.tensors[0].encoding != TensorEncoding::Float32)
                bad(source, id + ": the slope is stored as float32 (integer models too), not as integers");
            break;
        }
        case LayerKind::Add: {
            const int gate = channelGateOf(s, shapes[l.inputs[1]]);
            if (gate < -1)
                bad(source, id + " adds shapes " + shapeString(s) + " and " + shapeString(shapes[l.inputs[1]]) +
                                " (Add takes equal shapes, or a [C, H, W] map and a [C, 1, 1] gate of its channels)");
            if (gate == 0) s = shapes[l.inputs[1]];
            expectTensors(l, {}, source);
            break;
        }
        case LayerKind::Mul:
            try {
                if (Mul::gateOf(id, s, shapes[l.inputs[1]]) == 0) s = shapes[l.inputs[1]];
            } catch (const ConfigError& e) {
                bad(source, e.what());
            }
            expectTensors(l, {}, source);
            break;
        case LayerKind::Concat: {
            std::vector<Shape> in;
            for (std::size_t a : l.inputs) in.push_back(shapes[a]);
            try {
                s = Concat::joined(id, in, 0);
            } catch (const ConfigError& e) {
                bad(source, e.what());
            }
            expectTensors(l, {}, source);
            break;
        }
        case LayerKind::GlobalAvgPool2d:
            needRank(3);
            expectTensors(l, {}, source);
            s = {s[0], 1, 1};
            break;
        case LayerKind::ChannelMax:
            needRank(3);
            expectTensors(l, {}, source);
            s = {1, s[1], s[2]};
            break;
        case LayerKind::GroupNorm:
            // (C, H, W) maps or (C) features; float32 weight and bias per channel (affine) or none
            if (s.size() != 3 && s.size() != 1) bad(source, id + " cannot take an input of shape " + shapeString(s));
            if (s[0] != l.outChannels || !inRange(l.groups, 1, kMaxDim) || l.outChannels % l.groups != 0 ||
                !(std::isfinite(l.eps) && l.eps > 0.0f))
                bad(source, id + ": a GroupNorm of " + std::to_string(l.outChannels) + " channels in " + std::to_string(l.groups) +
                                " groups, eps " + numberText(l.eps) + ", cannot take " + shapeString(s));
            expectNormAffine(l, s[0], id, "GroupNorm", source);
            break;
        case LayerKind::LayerNorm2d:
            // (C, H, W) maps or (C) features, normalised per pixel over C; float32 weight and bias per channel (affine) or none
            if (s.size() != 3 && s.size() != 1) bad(source, id + " cannot take an input of shape " + shapeString(s));
            if (s[0] != l.outChannels || !(std::isfinite(l.eps) && l.eps > 0.0f))
                bad(source, id + ": a LayerNorm2d of " + std::to_string(l.outChannels) + " channels, eps " + numberText(l.eps) +
                                ", cannot take " + shapeString(s));
            expectNormAffine(l, s[0], id, "LayerNorm2d", source);
            break;
        case LayerKind::ChannelShuffle:
            if (!inRange(l.groups, 1, kMaxDim) || s.empty() || s[0] % l.groups != 0)
                bad(source, id + ": a channel shuffle of " + std::to_string(l.groups) + " groups cannot take " + shapeString(s));
            expectTensors(l, {}, source);
            break;
        case LayerKind::Slice:
            if (s.empty() || l.sliceBegin >= l.sliceEnd || l.sliceEnd > s[0])
                bad(source, id + ": channels [" + std::to_string(l.sliceBegin) + ", " + std::to_string(l.sliceEnd) +
                                ") cannot be sliced from " + shapeString(s));
            expectTensors(l, {}, source);
            s[0] = l.sliceEnd - l.sliceBegin;
            break;
        case LayerKind::Pad: {
            const std::size_t most = *std::max_element(l.pads.begin(), l.pads.end());
            if (l.padMode != PadMode::Zeros && l.padMode != PadMode::Reflect && l.padMode != PadMode::Replicate)
                bad(source, id + ": padding mode " + std::to_string(static_cast<int>(l.padMode)) + " is not zeros (0), reflect (1) or replicate (2)");
            if (most > Pad2d::kMaxPad) bad(source, id + ": a pad of " + std::to_string(most) + " is beyond " + std::to_string(Pad2d::kMaxPad));
            if (s.size() != 3 || (l.padMode == PadMode::Reflect && (std::max(l.pads[0], l.pads[2]) >= s[1] || std::max(l.pads[1], l.pads[3]) >= s[2])))
                bad(source, id + ": " + padModeName(l.padMode) + " padding [" + std::to_string(l.pads[0]) + ", " + std::to_string(l.pads[1]) + ", " +
                                std::to_string(l.pads[2]) + ", " + std::to_string(l.pads[3]) + "] cannot take " + shapeString(s));
            expectTensors(l, {}, source);
            s = {s[0], l.pads[0] + s[1] + l.pads[2], l.pads[1] + s[2] + l.pads[3]};
            break;
        }
        case LayerKind::Flatten:
            expectTensors(l, {}, source);
            s = {shapeNumel(s)};
            break;
        case LayerKind::Linear:
            needRank(1);
            if (!inRange(l.inFeatures, 1, std::size_t{1} << 24) || !inRange(l.outFeatures, 1, kMaxDim) || s[0] != l.inFeatures)
                bad(source, id + " expects " + std::to_string(l.inFeatures) + " features, gets " + shapeString(s));
            if (l.tensors.size() == 1) // nn.Linear(..., bias=False)
                expectTensors(l, {{"weight", {l.outFeatures, l.inFeatures}}}, source);
            else
                expectTensors(l, {{"weight", {l.outFeatures, l.inFeatures}}, {"bias", {l.outFeatures}}}, source);
            s = {l.outFeatures};
            break;
        case LayerKind::LogSoftmax:
        case LayerKind::Softmax:
            needRank(1);
            expectTensors(l, {}, source);
            if (li + 1 != layers.size()) bad(source, id + " is not the last layer (the engines run LogSoftmax and Softmax only there)");
            break;
        default: bad(source, "unknown layer kind");
        }
        // Group-wise weights have no single accumulator scale per output channel: their bias is float32.
        if ((l.kind == LayerKind::Conv2d || l.kind == LayerKind::Linear) && l.tensors.size() == 2 &&
            l.tensors[0].encoding != TensorEncoding::Float32 && l.tensors[0].layout == ScaleLayout::Group &&
            l.tensors[1].encoding != TensorEncoding::Float32)
            bad(source, id + ": group-wise weights take a float32 bias, not an integer one");
        if (shapeNumel(s) > kMaxActivation) bad(source, id + " would produce " + std::to_string(shapeNumel(s)) + " values per image");
        if (quantized) {
            if (l.kind == LayerKind::BatchNorm2d) bad(source, id + ": an integer model has its BatchNorm folded");
            // Conv2d/Linear weights are integer, or float for a layer a precision plan keeps FP32;
            // such a layer's output is quantized where an integer layer reads it, else float.
            if (l.outputQuant) checkActivation(*l.outputQuant, id + " output quantization", source);
        } else {
            if (l.outputQuant) bad(source, id + ": an FP32 model carries activation quantization");
            for (const StoredTensor& t : l.tensors)
                if (t.encoding != TensorEncoding::Float32) bad(source, id + ": an FP32 model has integer tensors");
        }
        shapes.push_back(std::move(s));
    }
    const Shape& s = shapes.back();
    if (s != Shape{classes}) bad(source, "the model produces " + shapeString(s) + " per image, not " + std::to_string(classes) + " classes");
}

} // namespace quantscope
