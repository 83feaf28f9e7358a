// IntEngine::Impl::Builder's layers with weights (int_engine_build.h): Conv2d as Conv (one GEMM over im2col
// rows or the padded image), Depthwise or GroupConv (one GEMM per group), Linear as one GEMM over
// the chunk's rows, and either kept FP32 by a plan (FloatConv, FloatLinear). Integer weights are
// laid out in the order the kernels read A, with each output channel's accumulator bias (the input's
// zero point folded in) and fixed-point requantization multiplier s_in s_w / s_out.
#include "infer/int_engine_build.h"

#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <tuple>

namespace quantscope {

namespace {

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

} // namespace

void IntEngine::Impl::Builder::conv2d(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const StoredTensor& wt = *l.tensor("weight");
    const ConvGeometry geo = l.convGeometry();
    if (wt.encoding == TensorEncoding::Float32) { // kept FP32 by a plan
        floatConv(l, in, wt, geo);
        return;
    }
    checkWeights(wt, m_id);
    const StoredTensor* bias = l.tensor("bias");
    const Point pt = pointOf();
    const auto [lo, hi] = clampOf(pt.d, pt.relu);
    Op op = opOf(OpKind::Conv, pt.name, in.root, pt.act); // the kind is set below: Conv, Depthwise or GroupConv
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
        epilogueOf(m_id, wt, bias, wk.data(), 0, op.cout, op.K, Kreal, in.d, pt.d, b, f);
        op.gemm = packGemm(m_isa, wk.data(), op.cout, op.K, b, f, pt.d.zp(), lo, hi);
        op.rowOff.resize(P);
        for (std::size_t oy = 0; oy < op.hout; ++oy)
            for (std::size_t ox = 0; ox < op.wout; ++ox)
                op.rowOff[oy * op.wout + ox] = static_cast<std::uint32_t>(
                    op.im2col ? (oy * op.wout + ox) * op.K : ((oy * op.stride) * op.wp + ox * op.stride) * c);
        if (op.pad) m_e.maxPad = std::max(m_e.maxPad, op.hp * op.wp * c);
        if (op.im2col) m_e.maxCols = std::max(m_e.maxCols, P * op.K);
    } else if (square && op.cig == 1 && op.cog == 1) {
        // Depthwise: weight (C, 1, k, k) is already (C, k*k).
        op.kind = OpKind::Depthwise;
        std::vector<std::int8_t> wk(c * kk);
        for (std::size_t j = 0; j < wk.size(); ++j) wk[j] = static_cast<std::int8_t>(wt.q[j]);
        std::vector<std::int32_t> b;
        std::vector<FixedPointMultiplier> f;
        epilogueOf(m_id, wt, bias, wk.data(), 0, c, kk, kk, in.d, pt.d, b, f);
        DepthwiseGeometry g{c, in.h, in.w, op.k, op.stride, op.pad, op.hout, op.wout};
        // A channel count far from a multiple of the vector width would need long tables: scalar then.
        const Isa dwIsa = m_isa != Isa::Scalar && std::lcm(c, std::size_t{64}) > 64 * 16 ? Isa::Scalar : m_isa;
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
            epilogueOf(m_id, wt, bias, wk.data(), g * op.cog, op.cog, op.K, Kreal, in.d, pt.d, b, f);
            op.groupGemms.push_back(packGemm(m_isa, wk.data(), op.cog, op.K, b, f, pt.d.zp(), lo, hi));
        }
        op.rowOff.resize(P);
        for (std::size_t p = 0; p < P; ++p) op.rowOff[p] = static_cast<std::uint32_t>(p * op.K);
        if (op.hp != op.hin || op.wp != op.win) m_e.maxPad = std::max(m_e.maxPad, op.hp * op.wp * c);
        m_e.maxCols = std::max(m_e.maxCols, P * op.K);
    }
    ActInfo info;
    info.d = pt.d;
    info.c = op.cout, info.h = op.hout, info.w = op.wout;
    push(std::move(op), info);
}

void IntEngine::Impl::Builder::floatConv(const StoredLayer& l, const ActInfo& in, const StoredTensor& wt, const ConvGeometry& geo)
{
    const Point pt = pointOf();
    Op op = opOf(OpKind::FloatConv, pt.name, in.root, pt.act);
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
    if (wt.values.size() != op.cout * op.cig * kk) throw ConfigError(m_id + ": float weights of the wrong size");
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
    if (op.fb.size() != op.cout) throw ConfigError(m_id + ": bias of the wrong size");
    ActInfo info;
    info.d = pt.d;
    info.c = op.cout, info.h = op.hout, info.w = op.wout;
    push(std::move(op), info);
}

void IntEngine::Impl::Builder::linear(const StoredLayer& l)
{
    const ActInfo& in = input(0);
    const StoredTensor& wt = *l.tensor("weight");
    if (wt.encoding == TensorEncoding::Float32) { // kept FP32 by a plan
        floatLinear(l, in, wt);
        return;
    }
    checkWeights(wt, m_id);
    const Point pt = pointOf();
    const auto [lo, hi] = clampOf(pt.d, pt.relu);
    Op op = opOf(OpKind::Linear, pt.name, in.root, pt.act);
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
    epilogueOf(m_id, wt, l.tensor("bias"), wk.data(), 0, op.outF, op.K, op.inF, in.d, pt.d, b, f);
    op.gemm = packGemm(m_isa, wk.data(), op.outF, op.K, b, f, pt.d.zp(), lo, hi);
    op.rowOff.resize(m_e.opt.chunk);
    for (std::size_t r = 0; r < m_e.opt.chunk; ++r) op.rowOff[r] = static_cast<std::uint32_t>(r * op.K);
    ActInfo info;
    info.d = pt.d;
    info.flat = true;
    info.c = op.outF;
    push(std::move(op), info);
}

void IntEngine::Impl::Builder::floatLinear(const StoredLayer& l, const ActInfo& in, const StoredTensor& wt)
{
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
    const long next = m_model.soleConsumer(m_i);
    const bool last = m_i + 1 == m_layers.size() || (m_i + 2 == m_layers.size() && (m_layers.back().kind == LayerKind::LogSoftmax || m_layers.back().kind == LayerKind::Softmax) && next == static_cast<long>(m_i + 1));
    if (!l.outputQuant && last) {
        op.floatOut = true;
        op.traced = false; // float bytes, not a quantization point
        op.name = l.name;
        op.out = static_cast<int>(m_i + 1);
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
}

} // namespace quantscope
