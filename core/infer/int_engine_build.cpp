// IntEngine::Impl::build: turns an integer ExportedModel (a DAG of stored layers) into the plan of
// int_engine_plan.h, or throws ConfigError naming the first layer it cannot run.
//
// Every activation the engine computes is on an 8-bit grid. A convolution, dense layer, Add or
// average pool writes its own quantization point, or, when its only reader is a ReLU/ReLU6 that
// carries the point, that ReLU's point with the ReLU folded into the clamp (QuantSim's fusion).
// A ReLU with its own point after a quantized input is a rescale. Max-pooling, Flatten and
// Dropout keep their input's grid; Flatten and Dropout are aliases of their input's bytes. A
// pointwise activation (Sigmoid, GELU, ...) with its own point is a 256-entry table from its
// input's grid to its own, a PReLU one such table per channel (int_engine_tables.cpp). Mul and Concat write their own point (or a ReLU's) as Add does: the
// product (qa - za)(qb - zb) or each input's bytes rescaled with fixed-point multipliers.
#include "infer/int_engine_plan.h"

#include "nn/pointwise.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

namespace quantscope {

namespace {

Domain domainOf(const ActivationQuant& a, const std::string& where)
{
    if (a.bits > 8) throw ConfigError(where + ": the integer engine runs activations of at most 8 bits, not " + std::to_string(a.bits));
    Domain d;
    d.aq = a;
    d.offset = a.isSigned ? 128 : 0;
    if (d.lo() < 0 || d.hi() > 255) throw ConfigError(where + ": activation range does not fit 8 bits");
    if (!(std::isfinite(a.scale) && a.scale > 0.0f)) throw ConfigError(where + ": activation scale is not a positive number");
    return d;
}

bool isRelu(LayerKind k) { return k == LayerKind::ReLU || k == LayerKind::ReLU6; }

std::string layerId(const StoredLayer& l) { return std::string(storedKindName(l.kind)) + " '" + l.name + "'"; }

// The output clamp of a point, with a ReLU/ReLU6 (or none: LayerKind::Flatten) folded in. ReLU6
// caps at the grid value of 6 as the fake-quant computes it: nearbyint(6 * (1 / scale)) + zp.
std::pair<std::int32_t, std::int32_t> clampOf(const Domain& d, LayerKind act)
{
    std::int32_t lo = d.lo(), hi = d.hi();
    if (isRelu(act)) lo = std::max(lo, d.zp());
    if (act == LayerKind::ReLU6) {
        const float inv = 1.0f / d.aq.scale;
        float q6 = std::nearbyint(6.0f * inv) + static_cast<float>(d.aq.zeroPoint);
        q6 = std::clamp(q6, static_cast<float>(d.aq.qmin), static_cast<float>(d.aq.qmax));
        hi = std::min(hi, static_cast<std::int32_t>(q6) + d.offset);
    }
    return {lo, hi};
}

void checkWeights(const StoredTensor& t, const std::string& id)
{
    if (t.encoding == TensorEncoding::Float32)
        throw ConfigError(id + ": float weights where the integer engine needs integer ones");
    if (t.encoding != TensorEncoding::Int || !t.isSigned || t.bits > 8)
        throw ConfigError(id + ": the integer engine runs signed weights of at most 8 bits (this model has " +
                          (t.encoding == TensorEncoding::Int ? std::to_string(t.bits) + "-bit " + (t.isSigned ? "signed" : "unsigned")
                                                             : std::string("float")) +
                          " weights)");
    if (t.layout == ScaleLayout::Group)
        throw ConfigError(id + ": group-wise weight scales need a rescale per group; the integer engine runs per-tensor or per-channel scales");
    for (std::int32_t z : t.zeroPoints)
        if (z != 0) throw ConfigError(id + ": the integer engine runs symmetric weights (zero point 0)");
}

// Accumulator bias and requantization multiplier of output channels n0 .. n0 + N of a layer, whose
// weights wk are N rows of K (in the order the kernel reads A, zero padding included; Kreal of
// them real). bias may be null (a convolution without bias).
void epilogueOf(const std::string& id, const StoredTensor& w, const StoredTensor* bias, const std::int8_t* wk, std::size_t n0,
                std::size_t N, std::size_t K, std::size_t Kreal, const Domain& in, const Domain& out, std::vector<std::int32_t>& b,
                std::vector<FixedPointMultiplier>& f)
{
    b.resize(N);
    f.resize(N);
    for (std::size_t r = 0; r < N; ++r) {
        const std::size_t n = n0 + r;
        const double sw = w.scales[w.layout == ScaleLayout::Tensor ? 0 : n];
        const double accScale = static_cast<double>(in.aq.scale) * sw;
        // Bias in accumulator units: stored int32 at scale s_in * s_w (Jacob et al.); rescaled if
        // it was stored at another scale, rounded once if stored as float.
        double bq = 0.0;
        if (bias && bias->encoding == TensorEncoding::Int) {
            const std::size_t slot = bias->layout == ScaleLayout::Tensor ? 0 : n;
            const std::int64_t stored = static_cast<std::int64_t>(bias->q[n]) - bias->zeroPoints[slot];
            bq = std::nearbyint(static_cast<double>(stored) * bias->scales[slot] / accScale);
            if (bias->bits == 32 && static_cast<float>(accScale) == bias->scales[slot]) bq = static_cast<double>(stored);
        } else if (bias) {
            bq = std::nearbyint(bias->values[n] / accScale);
        }
        // |acc| <= |bias| + K * 255 * 128 must stay inside int32.
        if (!(std::abs(bq) < 2147483648.0)) throw ConfigError(id + ": the bias does not fit the int32 accumulator");
        std::int64_t sumW = 0;
        for (std::size_t k = 0; k < K; ++k) sumW += wk[r * K + k];
        const std::int64_t eff = static_cast<std::int64_t>(bq) - static_cast<std::int64_t>(in.zp()) * sumW;
        if (std::llabs(eff) + static_cast<std::int64_t>(Kreal) * 255 * 128 >= (std::int64_t{1} << 31))
            throw ConfigError(id + ": the int32 accumulator could overflow (bias or K too large)");
        b[r] = static_cast<std::int32_t>(eff);
        f[r] = fixedPointMultiplier(accScale / out.aq.scale);
    }
}

// Elementwise rescale of `elems` values from `in` to `out`'s grid with `act` folded into the clamp
// (an average pool with a 1 x 1 window over a 1 x 1 x elems image).
PoolParams rescaleParams(Isa isa, std::size_t elems, const Domain& in, const Domain& out, LayerKind act)
{
    PoolParams p;
    p.isa = isa;
    p.C = elems;
    p.H = p.W = p.Ho = p.Wo = 1;
    p.f = fixedPointMultiplier(static_cast<double>(in.aq.scale) / out.aq.scale);
    p.zin = in.zp();
    p.zp = out.zp();
    std::tie(p.lo, p.hi) = clampOf(out, act);
    return p;
}

} // namespace

void IntEngine::Impl::build(const ExportedModel& m)
{
    if (!m.quantized || !m.inputQuant) throw ConfigError("the integer engine runs integer models; this one is FP32");
    m.validate("model '" + m.modelName + "'");
    const Isa isa = opt.isa;
    C = m.channels;
    H = m.height;
    W = m.width;
    classes = m.classes;
    const auto& L = m.layers;
    const Domain input = domainOf(*m.inputQuant, "input");
    const std::vector<float> norm = m.normalization.table();
    lut.resize(norm.size());
    for (std::size_t i = 0; i < norm.size(); ++i) lut[i] = quantizeInput(norm[i], input);

    acts.assign(L.size() + 1, ActInfo{});
    acts.reserve(2 * L.size() + 2); // + at most one extra activation per layer; references stay valid
    acts[0].defined = true;
    acts[0].root = 0;
    acts[0].d = input;
    acts[0].c = C, acts[0].h = H, acts[0].w = W;
    std::size_t B = L.size(); // the batch stage starts at the first dense layer
    for (std::size_t i = 0; i < L.size(); ++i)
        if (L[i].kind == LayerKind::Linear) {
            B = i;
            break;
        }
    std::vector<bool> fused(L.size(), false); // ReLUs folded into the layer they read
    std::vector<Op> imageOps, batchOps;

    for (std::size_t i = 0; i < L.size(); ++i) {
        if (fused[i]) continue;
        const StoredLayer& l = L[i];
        const std::string id = layerId(l);
        const bool batch = i >= B;
        auto input = [&](std::size_t j) -> const ActInfo& {
            const ActInfo& a = acts[l.inputs.at(j)];
            if (!a.defined) throw ConfigError(id + " reads an activation the integer engine does not compute");
            if (batch && !a.flat)
                throw ConfigError(id + ": a layer on feature maps after the first dense layer is not supported by the integer engine");
            return a;
        };
        auto push = [&](Op op, const ActInfo& info) {
            op.batch = batch;
            acts[static_cast<std::size_t>(op.out)] = info;
            acts[static_cast<std::size_t>(op.out)].defined = true;
            acts[static_cast<std::size_t>(op.out)].root = op.out;
            acts[static_cast<std::size_t>(op.out)].batch = batch;
            (batch ? batchOps : imageOps).push_back(std::move(op));
        };
        // The point a computing layer writes: its own, or that of a ReLU/ReLU6 reading only it.
        struct Point {
            Domain d;
            int act;
            std::string name;
            LayerKind relu;
        };
        auto pointOf = [&]() -> Point {
            if (l.outputQuant) return {domainOf(*l.outputQuant, l.name), static_cast<int>(i + 1), l.name, LayerKind::Flatten};
            const long next = m.soleConsumer(i);
            if (next >= 0 && isRelu(L[static_cast<std::size_t>(next)].kind) && L[static_cast<std::size_t>(next)].outputQuant) {
                const StoredLayer& r = L[static_cast<std::size_t>(next)];
                fused[static_cast<std::size_t>(next)] = true;
                return {domainOf(*r.outputQuant, r.name), static_cast<int>(next + 1), r.name, r.kind};
            }
            throw ConfigError(id + ": its output is not quantized, the integer engine needs every layer output as integers");
        };
        // A layer that keeps its input's grid (max-pooling, Flatten, Dropout) but carries a point
        // of its own (QuantSim never exports one) is followed by a rescale from `from` into act i+1.
        auto needsRescale = [&](const Domain& in) { return l.outputQuant && !(*l.outputQuant == in.aq); };
        auto rescale = [&](int from) {
            const ActInfo a = acts[static_cast<std::size_t>(from)];
            const Domain d = domainOf(*l.outputQuant, l.name);
            Op op;
            op.kind = OpKind::AvgPool;
            op.name = l.name;
            op.in0 = a.root;
            op.out = static_cast<int>(i + 1);
            op.pool = rescaleParams(isa, a.numel(), a.d, d, LayerKind::Flatten);
            ActInfo info = a;
            info.d = d;
            push(std::move(op), info);
        };
        // An activation of the engine's own (the value before such a rescale).
        auto extraAct = [&]() {
            if (acts.size() == acts.capacity()) throw Error("internal error: activation table full");
            acts.emplace_back();
            return static_cast<int>(acts.size() - 1);
        };

        switch (l.kind) {
        case LayerKind::Conv2d: {
            const ActInfo& in = input(0);
            const StoredTensor& wt = *l.tensor("weight");
            const ConvGeometry geo = l.convGeometry();
            if (wt.encoding == TensorEncoding::Float32) { // kept FP32 by a plan
                const Point pt = pointOf();
                Op op;
                op.kind = OpKind::FloatConv;
                op.name = pt.name;
                op.in0 = in.root;
                op.out = pt.act;
                op.cin = in.c, op.hin = in.h, op.win = in.w, op.cout = l.outChannels, op.k = l.kernel, op.stride = l.stride,
                op.pad = l.padding, op.geo = geo;
                op.hp = geo.paddedH(in.h), op.wp = geo.paddedW(in.w);
                op.hout = geo.outH(in.h), op.wout = geo.outW(in.w);
                op.groups = l.groups;
                op.cig = op.cin / op.groups, op.cog = op.cout / op.groups;
                op.inD = in.d;
                op.outD = pt.d;
                std::tie(op.lo, op.hi) = clampOf(pt.d, pt.relu);
                const std::size_t kk = geo.taps();
                if (wt.values.size() != op.cout * op.cig * kk) throw ConfigError(id + ": float weights of the wrong size");
                op.fw.assign(wt.values.size(), 0.0f);
                // (co, ci, ky, kx) -> (g, ky, kx, ci, co within the group)
                for (std::size_t co = 0; co < op.cout; ++co)
                    for (std::size_t ci = 0; ci < op.cig; ++ci)
                        for (std::size_t t = 0; t < kk; ++t) {
                            const std::size_t g = co / op.cog, o = co % op.cog;
                            op.fw[((g * kk + t) * op.cig + ci) * op.cog + o] = wt.values[(co * op.cig + ci) * kk + t];
                        }
                const StoredTensor* bt = l.tensor("bias");
                op.fb = bt ? bt->dequantized() : std::vector<float>(op.cout, 0.0f);
                if (op.fb.size() != op.cout) throw ConfigError(id + ": bias of the wrong size");
                ActInfo info;
                info.d = pt.d;
                info.c = op.cout, info.h = op.hout, info.w = op.wout;
                push(std::move(op), info);
                break;
            }
            checkWeights(wt, id);
            const StoredTensor* bias = l.tensor("bias");
            const Point pt = pointOf();
            const auto [lo, hi] = clampOf(pt.d, pt.relu);
            Op op;
            op.name = pt.name;
            op.in0 = in.root;
            op.out = pt.act;
            op.cin = in.c, op.hin = in.h, op.win = in.w, op.cout = l.outChannels, op.k = l.kernel, op.stride = l.stride, op.pad = l.padding;
            op.geo = geo;
            op.hp = geo.paddedH(in.h), op.wp = geo.paddedW(in.w);
            op.hout = geo.outH(in.h), op.wout = geo.outW(in.w);
            op.padValue = static_cast<std::uint8_t>(in.d.zp());
            op.groups = l.groups;
            op.cig = op.cin / op.groups, op.cog = op.cout / op.groups;
            const std::size_t c = op.cin, kk = geo.taps(), P = op.hout * op.wout;
            // A window that is not square (rectangular, two strides, asymmetric pads, dilation) takes
            // the general im2col of GroupConv, whatever its groups; the fast kernels stay square.
            const bool square = geo.isSquare();
            if (square && op.groups == 1) {
                op.kind = OpKind::Conv;
                const std::size_t segLen = op.k * c;
                op.im2col = segLen % 4 != 0;
                const std::size_t Kreal = kk * c;
                op.K = op.im2col ? roundUp4(Kreal) : Kreal;
                // weights in A's order: (ky, kx, ci), from (co, ci, ky, kx)
                std::vector<std::int8_t> wk(op.cout * op.K, 0);
                for (std::size_t co = 0; co < op.cout; ++co)
                    for (std::size_t ci = 0; ci < c; ++ci)
                        for (std::size_t t = 0; t < kk; ++t)
                            wk[co * op.K + t * c + ci] = static_cast<std::int8_t>(wt.q[(co * c + ci) * kk + t]);
                std::vector<std::int32_t> b;
                std::vector<FixedPointMultiplier> f;
                epilogueOf(id, wt, bias, wk.data(), 0, op.cout, op.K, Kreal, in.d, pt.d, b, f);
                op.gemm = packGemm(isa, wk.data(), op.cout, op.K, b, f, pt.d.zp(), lo, hi);
                op.rowOff.resize(P);
                for (std::size_t oy = 0; oy < op.hout; ++oy)
                    for (std::size_t ox = 0; ox < op.wout; ++ox)
                        op.rowOff[oy * op.wout + ox] = static_cast<std::uint32_t>(
                            op.im2col ? (oy * op.wout + ox) * op.K : ((oy * op.stride) * op.wp + ox * op.stride) * c);
                if (op.pad) maxPad = std::max(maxPad, op.hp * op.wp * c);
                if (op.im2col) maxCols = std::max(maxCols, P * op.K);
            } else if (square && op.cig == 1 && op.cog == 1) {
                // Depthwise: weight (C, 1, k, k) is already (C, k*k).
                op.kind = OpKind::Depthwise;
                std::vector<std::int8_t> wk(c * kk);
                for (std::size_t j = 0; j < wk.size(); ++j) wk[j] = static_cast<std::int8_t>(wt.q[j]);
                std::vector<std::int32_t> b;
                std::vector<FixedPointMultiplier> f;
                epilogueOf(id, wt, bias, wk.data(), 0, c, kk, kk, in.d, pt.d, b, f);
                DepthwiseGeometry g{c, in.h, in.w, op.k, op.stride, op.pad, op.hout, op.wout};
                // A channel count far from a multiple of the vector width would need long tables: scalar then.
                const Isa dwIsa = isa != Isa::Scalar && std::lcm(c, std::size_t{64}) > 64 * 16 ? Isa::Scalar : isa;
                op.dw = packDepthwise(dwIsa, g, wk.data(), b, f, op.padValue, pt.d.zp(), lo, hi);
            } else {
                // Grouped: per group an im2col of its cig channels and a GEMM into its cog outputs.
                op.kind = OpKind::GroupConv;
                const std::size_t Kreal = kk * op.cig;
                op.K = roundUp4(Kreal);
                for (std::size_t g = 0; g < op.groups; ++g) {
                    std::vector<std::int8_t> wk(op.cog * op.K, 0);
                    for (std::size_t r = 0; r < op.cog; ++r)
                        for (std::size_t ci = 0; ci < op.cig; ++ci)
                            for (std::size_t t = 0; t < kk; ++t)
                                wk[r * op.K + t * op.cig + ci] = static_cast<std::int8_t>(wt.q[((g * op.cog + r) * op.cig + ci) * kk + t]);
                    std::vector<std::int32_t> b;
                    std::vector<FixedPointMultiplier> f;
                    epilogueOf(id, wt, bias, wk.data(), g * op.cog, op.cog, op.K, Kreal, in.d, pt.d, b, f);
                    op.groupGemms.push_back(packGemm(isa, wk.data(), op.cog, op.K, b, f, pt.d.zp(), lo, hi));
                }
                op.rowOff.resize(P);
                for (std::size_t p = 0; p < P; ++p) op.rowOff[p] = static_cast<std::uint32_t>(p * op.K);
                if (op.hp != op.hin || op.wp != op.win) maxPad = std::max(maxPad, op.hp * op.wp * c);
                maxCols = std::max(maxCols, P * op.K);
            }
            ActInfo info;
            info.d = pt.d;
            info.c = op.cout, info.h = op.hout, info.w = op.wout;
            push(std::move(op), info);
            break;
        }
        case LayerKind::Linear: {
            const ActInfo& in = input(0);
            const StoredTensor& wt = *l.tensor("weight");
            if (wt.encoding == TensorEncoding::Float32) { // kept FP32 by a plan
                Op op;
                op.kind = OpKind::FloatLinear;
                op.in0 = in.root;
                op.inF = l.inFeatures, op.outF = l.outFeatures;
                op.inD = in.d;
                op.fw = wt.values;
                const StoredTensor* bt = l.tensor("bias");
                op.fb = bt ? bt->dequantized() : std::vector<float>(op.outF, 0.0f);
                op.col.resize(op.inF);
                for (std::size_t j = 0; j < op.inF; ++j)
                    op.col[j] = static_cast<std::uint32_t>(in.permuted ? (j % (in.fh * in.fw)) * in.fc + j / (in.fh * in.fw) : j);
                ActInfo info;
                info.flat = true;
                info.c = op.outF;
                const long next = m.soleConsumer(i);
                const bool last = i + 1 == L.size() || (i + 2 == L.size() && (L.back().kind == LayerKind::LogSoftmax || L.back().kind == LayerKind::Softmax) && next == static_cast<long>(i + 1));
                if (!l.outputQuant && last) {
                    op.floatOut = true;
                    op.traced = false; // float bytes, not a quantization point
                    op.name = l.name;
                    op.out = static_cast<int>(i + 1);
                    info.floats = true;
                } else {
                    const Point pt = pointOf(); // throws when a float output feeds another layer
                    std::tie(op.lo, op.hi) = clampOf(pt.d, pt.relu);
                    op.outD = pt.d;
                    op.name = pt.name;
                    op.out = pt.act;
                    info.d = pt.d;
                }
                push(std::move(op), info);
                break;
            }
            checkWeights(wt, id);
            const Point pt = pointOf();
            const auto [lo, hi] = clampOf(pt.d, pt.relu);
            Op op;
            op.kind = OpKind::Linear;
            op.name = pt.name;
            op.in0 = in.root;
            op.out = pt.act;
            op.inF = l.inFeatures, op.outF = l.outFeatures;
            op.K = roundUp4(op.inF);
            std::vector<std::int8_t> wk(op.outF * op.K, 0);
            for (std::size_t n = 0; n < op.outF; ++n)
                for (std::size_t j = 0; j < op.inF; ++j) {
                    // The stored columns are in NCHW flatten order; a flattened feature map is NHWC here.
                    const std::size_t col = in.permuted ? (j % (in.fh * in.fw)) * in.fc + j / (in.fh * in.fw) : j;
                    wk[n * op.K + col] = static_cast<std::int8_t>(wt.q[n * op.inF + j]);
                }
            std::vector<std::int32_t> b;
            std::vector<FixedPointMultiplier> f;
            epilogueOf(id, wt, l.tensor("bias"), wk.data(), 0, op.outF, op.K, op.inF, in.d, pt.d, b, f);
            op.gemm = packGemm(isa, wk.data(), op.outF, op.K, b, f, pt.d.zp(), lo, hi);
            op.rowOff.resize(opt.chunk);
            for (std::size_t r = 0; r < opt.chunk; ++r) op.rowOff[r] = static_cast<std::uint32_t>(r * op.K);
            ActInfo info;
            info.d = pt.d;
            info.flat = true;
            info.c = op.outF;
            push(std::move(op), info);
            break;
        }
        case LayerKind::MaxPool2d: {
            const ActInfo& in = input(0);
            Op op;
            op.kind = OpKind::MaxPool;
            op.name = l.name;
            op.traced = false;
            op.in0 = in.root;
            const bool again = needsRescale(in.d);
            op.out = again ? extraAct() : static_cast<int>(i + 1);
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
            break;
        }
        case LayerKind::AvgPool2d:
        case LayerKind::GlobalAvgPool2d: {
            const ActInfo& in = input(0);
            const Point pt = pointOf();
            Op op;
            op.kind = OpKind::AvgPool;
            op.name = pt.name;
            op.in0 = in.root;
            op.out = pt.act;
            PoolParams& p = op.pool;
            p.isa = isa;
            p.C = in.c, p.H = in.h, p.W = in.w;
            if (l.kind == LayerKind::AvgPool2d && !l.poolGeometry().isSquare()) {
                // Any other window (the general scalar kernel): sums over each window's part inside
                // the image, requantized by the multiplier of that window's divisor.
                const PoolGeometry g = l.poolGeometry();
                op.poolGeo = g;
                op.cin = in.c, op.hin = in.h, op.win = in.w;
                p.kh = g.kh, p.kw = g.kw;
                if (g.kh * g.kw * 255 >= (std::size_t{1} << 30)) throw ConfigError(id + ": the pooling window is too large for int32 sums");
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
                if (window * 255 >= (std::size_t{1} << 30)) throw ConfigError(id + ": the pooling window is too large for int32 sums");
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
            break;
        }
        case LayerKind::Add: {
            const ActInfo& a = input(0);
            const ActInfo& b = input(1);
            if (a.flat != b.flat || a.permuted != b.permuted || (a.permuted && (a.fc != b.fc || a.fh != b.fh || a.fw != b.fw)))
                throw ConfigError(id + ": adds activations laid out differently (one flattened from a feature map), not supported");
            const Point pt = pointOf();
            const auto [lo, hi] = clampOf(pt.d, pt.relu);
            Op op;
            op.kind = OpKind::Add;
            op.name = pt.name;
            op.in0 = a.root;
            op.in1 = b.root;
            op.out = pt.act;
            op.elems = a.numel();
            op.add = addParams(isa, static_cast<double>(a.d.aq.scale) / pt.d.aq.scale, static_cast<double>(b.d.aq.scale) / pt.d.aq.scale,
                               a.d.zp(), b.d.zp(), pt.d.zp(), lo, hi);
            ActInfo info = a;
            info.d = pt.d;
            push(std::move(op), info);
            break;
        }
        case LayerKind::Mul: {
            const ActInfo& a = input(0);
            const ActInfo& b = input(1);
            if (a.floats || b.floats) throw ConfigError(id + " reads float values; the integer engine runs it on quantized inputs");
            // Equal layouts, or a feature map and a [C, 1, 1] gate of its channels (either order).
            const bool same = a.flat == b.flat && a.permuted == b.permuted && a.c == b.c && a.h == b.h && a.w == b.w &&
                              (!a.permuted || (a.fc == b.fc && a.fh == b.fh && a.fw == b.fw));
            const auto gates = [](const ActInfo& map, const ActInfo& g) { return !map.flat && !g.flat && g.c == map.c && g.h == 1 && g.w == 1; };
            const bool bGate = !same && gates(a, b), aGate = !same && !bGate && gates(b, a);
            if (!same && !bGate && !aGate)
                throw ConfigError(id + ": multiplies activations laid out differently (one flattened from a feature map), not supported");
            const ActInfo& map = aGate ? b : a;
            const ActInfo& gate = aGate ? a : b;
            const Point pt = pointOf();
            const auto [lo, hi] = clampOf(pt.d, pt.relu);
            Op op;
            op.kind = OpKind::Mul;
            op.name = pt.name;
            op.in0 = map.root;
            op.in1 = gate.root;
            op.out = pt.act;
            op.elems = map.numel();
            op.gated = !same;
            op.cout = map.c;
            op.mul = mulParams(static_cast<double>(map.d.aq.scale) * gate.d.aq.scale / pt.d.aq.scale, map.d.zp(), gate.d.zp(), pt.d.zp(), lo, hi);
            ActInfo info = map;
            info.d = pt.d;
            push(std::move(op), info);
            break;
        }
        case LayerKind::Concat: {
            std::vector<const ActInfo*> in;
            for (std::size_t j = 0; j < l.inputs.size(); ++j) in.push_back(&input(j));
            const ActInfo& first = *in[0];
            for (const ActInfo* a : in) {
                if (a->floats) throw ConfigError(id + " reads float values; the integer engine runs it on quantized inputs");
                if (a->flat != first.flat || a->permuted || (!a->flat && (a->h != first.h || a->w != first.w)))
                    throw ConfigError(id + ": joins activations laid out differently (feature maps of other sizes, or features "
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
            break;
        }
        case LayerKind::ReLU:
        case LayerKind::ReLU6: {
            const ActInfo& in = input(0);
            if (!l.outputQuant && l.kind == LayerKind::ReLU6)
                throw ConfigError(id + ": a ReLU6 without a quantization point (6 need not be on its input's grid) is not supported");
            const Domain d = l.outputQuant ? domainOf(*l.outputQuant, l.name) : in.d;
            Op op;
            op.kind = OpKind::AvgPool;
            op.name = l.name;
            op.traced = l.outputQuant.has_value();
            op.in0 = in.root;
            op.out = static_cast<int>(i + 1);
            op.pool = rescaleParams(isa, in.numel(), in.d, d, l.kind);
            ActInfo info = in;
            info.d = d;
            push(std::move(op), info);
            break;
        }
        case LayerKind::Sigmoid:
        case LayerKind::Tanh:
        case LayerKind::SiLU:
        case LayerKind::Hardsigmoid:
        case LayerKind::Hardswish:
        case LayerKind::LeakyReLU:
        case LayerKind::ELU:
        case LayerKind::GELU:
        case LayerKind::GELUTanh:
        case LayerKind::Hardtanh: {
            const ActInfo& in = input(0);
            if (in.floats) throw ConfigError(id + " reads float values; the integer engine runs it on a quantized input");
            if (!l.outputQuant)
                throw ConfigError(id + ": its output is not quantized, the integer engine needs every layer output as integers");
            const Domain d = domainOf(*l.outputQuant, l.name);
            Op op;
            op.kind = OpKind::Lut;
            op.name = l.name;
            op.in0 = in.root;
            op.out = static_cast<int>(i + 1);
            op.elems = in.numel();
            op.table = activationTable(l, in.d, d);
            ActInfo info = in;
            info.d = d;
            push(std::move(op), info);
            break;
        }
        case LayerKind::PReLU: { // one table (a shared slope) or one per channel, C x 256 bytes
            const ActInfo& in = input(0);
            if (in.floats) throw ConfigError(id + " reads float values; the integer engine runs it on a quantized input");
            if (!l.outputQuant)
                throw ConfigError(id + ": its output is not quantized, the integer engine needs every layer output as integers");
            const Domain d = domainOf(*l.outputQuant, l.name);
            const std::vector<float>& slope = l.tensors.at(0).values;
            Op op;
            op.kind = slope.size() == 1 ? OpKind::Lut : OpKind::ChannelLut;
            op.name = l.name;
            op.in0 = in.root;
            op.out = static_cast<int>(i + 1);
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
            ActInfo info = in;
            info.d = d;
            push(std::move(op), info);
            break;
        }
        case LayerKind::ChannelShuffle:
        case LayerKind::Slice: { // bytes moved: output byte j is input byte col[j], on the input's grid
            const ActInfo& in = input(0);
            if (in.floats) throw ConfigError(id + " reads float values; the integer engine runs it on quantized inputs");
            Op op;
            op.kind = OpKind::Gather;
            op.name = l.name;
            op.traced = false;
            op.in0 = in.root;
            const bool again = needsRescale(in.d);
            op.out = again ? extraAct() : static_cast<int>(i + 1);
            const int moved = op.out;
            const std::size_t C = in.c, pixels = in.flat ? 1 : in.h * in.w;
            const std::size_t K = l.kind == LayerKind::Slice ? l.sliceEnd - l.sliceBegin : C;
            if (l.kind == LayerKind::Slice ? l.sliceEnd > C || l.sliceBegin >= l.sliceEnd : l.groups == 0 || C % l.groups != 0)
                throw ConfigError(id + " does not fit its input's " + std::to_string(C) + " channels");
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
            break;
        }
        case LayerKind::Flatten:
        case LayerKind::Dropout: {
            const ActInfo& in = acts[l.inputs.at(0)];
            if (!in.defined) throw ConfigError(id + " reads an activation the integer engine does not compute");
            ActInfo info = in; // same bytes, maybe a new view
            if (l.kind == LayerKind::Flatten && !in.flat) {
                info.flat = true;
                info.permuted = in.c > 1 && in.h * in.w > 1;
                info.fc = in.c, info.fh = in.h, info.fw = in.w;
                info.c = in.numel();
                info.h = info.w = 0;
            }
            acts[i + 1] = info; // root stays the input's
            if (needsRescale(in.d)) rescale(static_cast<int>(i + 1));
            break;
        }
        case LayerKind::LogSoftmax:
        case LayerKind::Softmax: {
            const char* what = l.kind == LayerKind::Softmax ? "Softmax" : "LogSoftmax";
            if (i + 1 != L.size()) throw ConfigError(id + ": " + what + " must be the last layer");
            if (l.outputQuant) throw ConfigError(id + ": a quantized " + what + " output is not supported");
            (l.kind == LayerKind::Softmax ? softmax : logSoftmax) = true;
            break;
        }
        case LayerKind::BatchNorm2d: throw ConfigError(id + ": BatchNorm must be folded into its convolution");
        }
    }
    outputAct = logSoftmax || softmax ? static_cast<int>(L.back().inputs.at(0)) : static_cast<int>(L.size());
    const ActInfo& out = acts[static_cast<std::size_t>(outputAct)];
    if (!out.defined) throw ConfigError("the integer engine does not compute the model's output");
    if (out.numel() != classes)
        throw ConfigError("the model produces " + std::to_string(out.numel()) + " values, not " + std::to_string(classes));
    outputIndex.resize(classes);
    for (std::size_t j = 0; j < classes; ++j)
        outputIndex[j] = static_cast<std::uint32_t>(out.permuted ? (j % (out.fh * out.fw)) * out.fc + j / (out.fh * out.fw) : j);

    firstBatchOp = imageOps.size();
    ops = std::move(imageOps);
    for (Op& op : batchOps) ops.push_back(std::move(op));
    planBuffers();
}

} // namespace quantscope
