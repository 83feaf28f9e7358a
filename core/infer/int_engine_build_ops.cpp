// IntEngine::Impl::Builder's layers without weights (int_engine_build.h): max-pooling (on its input's grid),
// average pooling (sums requantized by the divisor's multiplier), Add, Mul and Concat (each input
// rescaled into the output's point with fixed-point multipliers), a standalone ReLU/ReLU6 (a
// rescale), pointwise activations and PReLU (256-byte tables, int_engine_tables.cpp), and the
// channel movements ChannelShuffle and Slice and the pixel movement Pad (bytes gathered, the grid kept).
#include "infer/int_engine_build.h"
#include "nn/pad.h"

#include "util/errors.h"

#include <array>
#include <tuple>

namespace quantscope {

void IntEngine::Impl::Builder::maxPool(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const bool again = needsRescale(in.d);
    Op op = opOf(OpKind::MaxPool, l.name, in.root, again ? extraAct() : static_cast<int>(m_i + 1));
    op.traced = false;
    const int pooled = op.out;
    op.cin = op.cout = in.c, op.hin = in.h, op.win = in.w, op.k = l.kernel, op.stride = l.stride, op.pad = l.padding;
    const PoolGeometry g = l.poolGeometry();
    if (!g.isSquare()) op.poolGeo = g;
    op.hout = g.outH(in.h), op.wout = g.outW(in.w);
    ActInfo info;
    info.d = in.d;
    info.c = in.c, info.h = op.hout, info.w = op.wout;
    push(std::move(op), info);
    if (again) rescale(pooled);
}

// ChannelMax: each pixel's largest byte (bytes order as the values they stand for), the grid kept.
void IntEngine::Impl::Builder::channelMax(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    if (in.flat || in.floats) throw ConfigError(m_id + " reads " + (in.floats ? "float values" : "flat features") + "; it takes quantized maps");
    const bool again = needsRescale(in.d);
    Op op = opOf(OpKind::ChannelMax, l.name, in.root, again ? extraAct() : static_cast<int>(m_i + 1));
    op.traced = false;
    const int pooled = op.out;
    op.cin = in.c, op.hin = in.h, op.win = in.w, op.cout = 1;
    op.elems = in.h * in.w;
    ActInfo info;
    info.d = in.d;
    info.c = 1, info.h = in.h, info.w = in.w;
    push(std::move(op), info);
    if (again) rescale(pooled);
}

void IntEngine::Impl::Builder::avgPool(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const Point pt = pointOf();
    Op op = opOf(OpKind::AvgPool, pt.name, in.root, pt.act);
    PoolParams& p = op.pool;
    p.isa = m_isa;
    p.C = in.c, p.H = in.h, p.W = in.w;
    if (l.kind == LayerKind::AvgPool2d && !l.poolGeometry().isSquare()) {
        // Any other window (the general scalar kernel): sums over each window's part inside
        // the image, requantized by the multiplier of that window's divisor.
        const PoolGeometry g = l.poolGeometry();
        op.poolGeo = g;
        op.cin = in.c, op.hin = in.h, op.win = in.w;
        p.kh = g.kh, p.kw = g.kw;
        if (g.kh * g.kw * 255 >= (std::size_t{1} << 30)) throw ConfigError(m_id + ": the pooling window is too large for int32 sums");
        op.poolMults.resize(g.kh * g.kw + 1);
        for (std::size_t d = 1; d <= g.kh * g.kw; ++d)
            op.poolMults[d] = fixedPointMultiplier(static_cast<double>(in.d.aq.scale) / (static_cast<double>(d) * pt.d.aq.scale));
        p.Ho = g.outH(in.h), p.Wo = g.outW(in.w);
    } else {
        if (l.kind == LayerKind::GlobalAvgPool2d) {
            p.kh = in.h, p.kw = in.w, p.stride = 1;
        } else {
            p.kh = p.kw = l.kernel, p.stride = l.stride;
            // Zero padding counted in the mean: the kernel runs on a copy bordered with the byte of 0.0.
            op.pad = l.padding;
            op.cin = in.c, op.hin = in.h, op.win = in.w;
            op.padValue = static_cast<std::uint8_t>(in.d.zp());
            p.H += 2 * op.pad, p.W += 2 * op.pad;
        }
        p.Ho = (p.H - p.kh) / p.stride + 1, p.Wo = (p.W - p.kw) / p.stride + 1;
        const std::size_t window = p.kh * p.kw;
        if (window * 255 >= (std::size_t{1} << 30)) throw ConfigError(m_id + ": the pooling window is too large for int32 sums");
        p.f = fixedPointMultiplier(static_cast<double>(in.d.aq.scale) / (static_cast<double>(window) * pt.d.aq.scale));
    }
    p.round = RoundMode::HalfEven;
    p.zin = in.d.zp();
    p.zp = pt.d.zp();
    std::tie(p.lo, p.hi) = clampOf(pt.d, pt.relu);
    ActInfo info;
    info.d = pt.d;
    info.c = in.c, info.h = p.Ho, info.w = p.Wo;
    push(std::move(op), info);
}

namespace {
// The layouts Add and Mul join: equal ones (-1), or a feature map and a [C, 1, 1] gate of its
// channels, either order (the gate's input index, 0 or 1); -2 for anything else. A permuted
// activation is flat, so never a map or a gate.
int gateOfLayouts(const ActInfo& a, const ActInfo& b)
{
    const bool same = a.flat == b.flat && a.permuted == b.permuted && a.c == b.c && a.h == b.h && a.w == b.w &&
                      (!a.permuted || (a.fc == b.fc && a.fh == b.fh && a.fw == b.fw));
    if (same) return -1;
    const auto gates = [](const ActInfo& map, const ActInfo& g) { return !map.flat && !g.flat && g.c == map.c && g.h == 1 && g.w == 1; };
    return gates(a, b) ? 1 : gates(b, a) ? 0 : -2;
}
} // namespace

void IntEngine::Impl::Builder::add()
{
    const ActInfo& a = input(0);
    const ActInfo& b = input(1);
    if (a.floats || b.floats) throw ConfigError(m_id + " reads float values; the integer engine runs it on quantized inputs");
    const int g = gateOfLayouts(a, b); // GCNet's context add: a gate of the map's channels
    if (g < -1) throw ConfigError(m_id + ": adds activations laid out differently (one flattened from a feature map), not supported");
    const bool same = g < 0;
    const ActInfo& map = g == 0 ? b : a;
    const ActInfo& gate = g == 0 ? a : b;
    const Point pt = pointOf();
    const auto [lo, hi] = clampOf(pt.d, pt.relu);
    Op op = opOf(OpKind::Add, pt.name, map.root, pt.act);
    op.in1 = gate.root;
    op.elems = map.numel();
    op.gated = !same;
    op.cout = map.c;
    // requant(a) + requant(b) is symmetric in its two inputs: the map's scale and zero point go
    // first whichever input it was
    op.add = addParams(m_isa, static_cast<double>(map.d.aq.scale) / pt.d.aq.scale, static_cast<double>(gate.d.aq.scale) / pt.d.aq.scale,
                       map.d.zp(), gate.d.zp(), pt.d.zp(), lo, hi);
    pushOnGrid(std::move(op), map, pt.d);
}

void IntEngine::Impl::Builder::mul()
{
    const ActInfo& a = input(0);
    const ActInfo& b = input(1);
    if (a.floats || b.floats) throw ConfigError(m_id + " reads float values; the integer engine runs it on quantized inputs");
    const int g = gateOfLayouts(a, b);
    if (g < -1) throw ConfigError(m_id + ": multiplies activations laid out differently (one flattened from a feature map), not supported");
    const bool same = g < 0;
    const ActInfo& map = g == 0 ? b : a;
    const ActInfo& gate = g == 0 ? a : b;
    const Point pt = pointOf();
    const auto [lo, hi] = clampOf(pt.d, pt.relu);
    Op op = opOf(OpKind::Mul, pt.name, map.root, pt.act);
    op.in1 = gate.root;
    op.elems = map.numel();
    op.gated = !same;
    op.cout = map.c;
    op.mul = mulParams(static_cast<double>(map.d.aq.scale) * gate.d.aq.scale / pt.d.aq.scale, map.d.zp(), gate.d.zp(), pt.d.zp(), lo, hi);
    pushOnGrid(std::move(op), map, pt.d);
}

void IntEngine::Impl::Builder::concat(const StoredLayer& l)
{
    std::vector<const ActInfo*> in;
    for (std::size_t j = 0; j < l.inputs.size(); ++j) in.push_back(&input(j));
    const ActInfo& first = *in[0];
    for (const ActInfo* a : in) {
        if (a->floats) throw ConfigError(m_id + " reads float values; the integer engine runs it on quantized inputs");
        if (a->flat != first.flat || a->permuted || (!a->flat && (a->h != first.h || a->w != first.w)))
            throw ConfigError(m_id + ": joins activations laid out differently (feature maps of other sizes, or features "
                                   "flattened from a feature map), not supported by the integer engine");
    }
    const Point pt = pointOf();
    const auto [lo, hi] = clampOf(pt.d, pt.relu);
    Op op;
    op.kind = OpKind::Concat;
    op.name = pt.name;
    op.out = pt.act;
    ConcatParams& p = op.cat;
    p.pixels = first.flat ? 1 : first.h * first.w;
    p.zo = pt.d.zp(), p.lo = lo, p.hi = hi;
    for (const ActInfo* a : in) {
        ConcatPart part;
        part.channels = a->c;
        part.offset = p.C;
        part.zin = a->d.zp();
        part.f = fixedPointMultiplier(static_cast<double>(a->d.aq.scale) / pt.d.aq.scale);
        part.copy = a->d.aq.scale == pt.d.aq.scale && a->d.zp() == pt.d.zp() && lo <= a->d.lo() && hi >= a->d.hi();
        p.C += part.channels;
        p.parts.push_back(part);
        op.ins.push_back(a->root);
    }
    op.in0 = op.ins[0];
    op.in1 = op.ins[1];
    op.elems = p.C * p.pixels;
    ActInfo info = first;
    info.d = pt.d;
    info.c = p.C;
    push(std::move(op), info);
}

void IntEngine::Impl::Builder::relu(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    if (!l.outputQuant && l.kind == LayerKind::ReLU6)
        throw ConfigError(m_id + ": a ReLU6 without a quantization point (6 need not be on its input's grid) is not supported");
    const Domain d = l.outputQuant ? domainOf(*l.outputQuant, l.name) : in.d;
    pushRescale(in, d, l.kind, l.outputQuant.has_value());
}

Domain IntEngine::Impl::Builder::ownPoint(const StoredLayer& l, const ActInfo& in) const
{
    if (in.floats) throw ConfigError(m_id + " reads float values; the integer engine runs it on a quantized input");
    if (!l.outputQuant)
        throw ConfigError(m_id + ": its output is not quantized, the integer engine needs every layer output as integers");
    return domainOf(*l.outputQuant, l.name);
}

void IntEngine::Impl::Builder::pointwise(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const Domain d = ownPoint(l, in);
    Op op = opOf(OpKind::Lut, l.name, in.root, static_cast<int>(m_i + 1));
    op.elems = in.numel();
    op.table = activationTable(l, in.d, d);
    pushOnGrid(std::move(op), in, d);
}

// One table (a shared slope) or one per channel, C x 256 bytes.
void IntEngine::Impl::Builder::prelu(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const Domain d = ownPoint(l, in);
    const std::vector<float>& slope = l.tensors.at(0).values;
    Op op = opOf(slope.size() == 1 ? OpKind::Lut : OpKind::ChannelLut, l.name, in.root, static_cast<int>(m_i + 1));
    op.elems = in.numel();
    op.cout = slope.size();
    if (slope.size() == 1) {
        op.table = preluTable(slope[0], in.d, d);
    } else {
        for (float a : slope) {
            const std::array<std::uint8_t, 256> t = preluTable(a, in.d, d);
            op.tables.insert(op.tables.end(), t.begin(), t.end());
        }
        if (in.permuted) // NHWC bytes of features flattened from a map: byte p is feature (p % fc) fh fw + p / fc
            for (std::size_t p = 0; p < op.elems; ++p)
                op.col.push_back(static_cast<std::uint32_t>((p % in.fc) * (in.fh * in.fw) + p / in.fc));
    }
    pushOnGrid(std::move(op), in, d);
}

// A GroupNorm or LayerNorm2d in float between two grids (OpKind::FloatNorm): col[j] is byte j's index in the
// model's (C, plane) order: NHWC maps, flat features, or features flattened from an NHWC map.
void IntEngine::Impl::Builder::groupNorm(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const Domain d = ownPoint(l, in);
    const std::size_t C = l.outChannels;
    const bool perPixel = l.kind == LayerKind::LayerNorm2d;
    if (in.c != C || C == 0 || (!perPixel && (l.groups == 0 || C % l.groups != 0)))
        throw ConfigError(m_id + ": a " + layerKindName(l.kind) + " of " + std::to_string(C) + " channels reads " + std::to_string(in.c));
    Op op = opOf(OpKind::FloatNorm, l.name, in.root, static_cast<int>(m_i + 1));
    op.inD = in.d;
    op.outD = d;
    op.elems = in.numel();
    op.cout = C;
    op.groups = perPixel ? 0 : l.groups;
    op.eps = l.eps;
    if (l.tensors.size() == 2) op.fw = l.tensors[0].values, op.fb = l.tensors[1].values;
    const std::size_t plane = op.elems / C;
    op.col.resize(op.elems);
    for (std::size_t j = 0; j < op.elems; ++j)
        op.col[j] = static_cast<std::uint32_t>(!in.flat ? (j % C) * plane + j / C // NHWC
                                               : in.permuted ? (j % in.fc) * (in.fh * in.fw) + j / in.fc
                                                             : j);
    pushOnGrid(std::move(op), in, d);
}

// ChannelShuffle and Slice: bytes moved, output byte j is input byte col[j], on the input's grid.
void IntEngine::Impl::Builder::gather(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    if (in.floats) throw ConfigError(m_id + " reads float values; the integer engine runs it on quantized inputs");
    const bool again = needsRescale(in.d);
    Op op = opOf(OpKind::Gather, l.name, in.root, again ? extraAct() : static_cast<int>(m_i + 1));
    op.traced = false;
    const int moved = op.out;
    const std::size_t C = in.c, pixels = in.flat ? 1 : in.h * in.w;
    const std::size_t K = l.kind == LayerKind::Slice ? l.sliceEnd - l.sliceBegin : C;
    if (l.kind == LayerKind::Slice ? l.sliceEnd > C || l.sliceBegin >= l.sliceEnd : l.groups == 0 || C % l.groups != 0)
        throw ConfigError(m_id + " does not fit its input's " + std::to_string(C) + " channels");
    const std::size_t per = l.kind == LayerKind::Slice ? 0 : C / l.groups;
    op.elems = K * pixels;
    op.col.resize(op.elems);
    // NHWC (flat features: one pixel; features flattened from a map are NHWC bytes: feature
    // f of PyTorch's order is byte (f % (fh fw)) fc + f / (fh fw), and the output is in PyTorch's order)
    const std::size_t hw = in.fh * in.fw;
    for (std::size_t p = 0; p < pixels; ++p)
        for (std::size_t c = 0; c < K; ++c) {
            const std::size_t src = l.kind == LayerKind::Slice ? l.sliceBegin + c : (c % l.groups) * per + c / l.groups;
            op.col[p * K + c] = static_cast<std::uint32_t>(in.permuted ? (src % hw) * in.fc + src / hw : p * C + src);
        }
    ActInfo info = in;
    info.c = K;
    info.permuted = false;
    push(std::move(op), info);
    if (again) rescale(moved);
}

// Pad (nn/pad.h): output pixel (r, c) of each channel copies input pixel (rows[r], cols[c]), or
// is the input grid's zero point (zeros mode), NHWC bytes on the input's grid.
void IntEngine::Impl::Builder::padGather(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    if (in.floats || in.flat) throw ConfigError(m_id + " reads " + (in.floats ? "float values" : "flat features") + "; the integer engine pads quantized maps");
    const bool again = needsRescale(in.d);
    Op op = opOf(OpKind::Gather, l.name, in.root, again ? extraAct() : static_cast<int>(m_i + 1));
    op.traced = false;
    const int moved = op.out;
    const std::size_t C = in.c, H = in.h, W = in.w;
    const std::size_t OH = l.pads[0] + H + l.pads[2], OW = l.pads[1] + W + l.pads[3];
    op.elems = OH * OW * C;
    op.col.resize(op.elems);
    op.fill = static_cast<std::uint8_t>(in.d.zp());
    for (std::size_t r = 0; r < OH; ++r)
        for (std::size_t c = 0; c < OW; ++c) {
            const long sr = Pad2d::sourceIndex(l.padMode, static_cast<long>(r), l.pads[0], H);
            const long sc = Pad2d::sourceIndex(l.padMode, static_cast<long>(c), l.pads[1], W);
            for (std::size_t ch = 0; ch < C; ++ch)
                op.col[(r * OW + c) * C + ch] = sr < 0 || sc < 0 ? kGatherFill
                                                               : static_cast<std::uint32_t>((static_cast<std::size_t>(sr) * W + static_cast<std::size_t>(sc)) * C + ch);
        }
    ActInfo info = in;
    info.h = OH;
    info.w = OW;
    push(std::move(op), info);
    if (again) rescale(moved);
}

} // namespace quantscope
