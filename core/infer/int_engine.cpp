#include "infer/int_engine.h"

#include "infer/int_engine_plan.h"
#include "nn/activations.h"
#include "nn/groupnorm.h"
#include "nn/layernorm2d.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <tbb/enumerable_thread_specific.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace quantscope {

std::uint8_t* IntEngine::Impl::imagePtr(Scratch& s, int act) const
{
    const ActInfo& r = acts[static_cast<std::size_t>(acts[static_cast<std::size_t>(act)].root)];
    return s.slots[static_cast<std::size_t>(buffers[static_cast<std::size_t>(r.imgBuffer)].slot)].data();
}

std::uint8_t* IntEngine::Impl::batchPtr(Scratch& s, int act) const
{
    const ActInfo& r = acts[static_cast<std::size_t>(acts[static_cast<std::size_t>(act)].root)];
    return s.batchSlots[static_cast<std::size_t>(buffers[static_cast<std::size_t>(r.batchBuffer)].slot)].data();
}

namespace {

// src (H, W, C) into dst (top + H + bottom, left + W + right, C) with padValue around it.
void padImageSides(const std::uint8_t* src, std::size_t h, std::size_t w, std::size_t c, std::size_t top, std::size_t left,
                   std::size_t bottom, std::size_t right, std::uint8_t padValue, std::uint8_t* dst)
{
    const std::size_t rowBytes = (left + w + right) * c;
    std::memset(dst, padValue, top * rowBytes);
    std::memset(dst + (top + h) * rowBytes, padValue, bottom * rowBytes);
    for (std::size_t y = 0; y < h; ++y) {
        std::uint8_t* row = dst + (y + top) * rowBytes;
        std::memset(row, padValue, left * c);
        std::memcpy(row + left * c, src + y * w * c, w * c);
        std::memset(row + (left + w) * c, padValue, right * c);
    }
}

// src (H, W, C) into dst (H + 2 pad, W + 2 pad, C) with padValue around it.
void padImage(const std::uint8_t* src, std::size_t h, std::size_t w, std::size_t c, std::size_t pad, std::uint8_t padValue, std::uint8_t* dst)
{
    padImageSides(src, h, w, c, pad, pad, pad, pad, padValue, dst);
}

// A GroupNorm or LayerNorm2d (OpKind::FloatNorm) on one image's (or row's) bytes x, into y (int_engine_plan.h).
void floatNorm(const Op& op, const std::uint8_t* x, std::uint8_t* y, std::vector<float>& in, std::vector<float>& out)
{
    in.resize(op.elems);
    out.resize(op.elems);
    const float scale = op.inD.aq.scale;
    const std::int32_t zp = op.inD.zp();
    for (std::size_t j = 0; j < op.elems; ++j) in[op.col[j]] = static_cast<float>(static_cast<std::int32_t>(x[j]) - zp) * scale;
    const float* w = op.fw.empty() ? nullptr : op.fw.data();
    const float* b = op.fb.empty() ? nullptr : op.fb.data();
    if (op.groups == 0) layerNorm2dImage(in.data(), op.cout, op.elems / op.cout, op.eps, w, b, out.data());
    else groupNormImage(in.data(), op.cout, op.elems / op.cout, op.groups, op.eps, w, b, out.data());
    for (std::size_t j = 0; j < op.elems; ++j) y[j] = quantizeInput(out[op.col[j]], op.outD);
}

// A convolution a plan keeps FP32 (OpKind::FloatConv): y = conv(dq(x), W) + b in float, then
// q(y) with the fused clamp. x (H, W, Cin) bytes on op.inD, y (Ho, Wo, Cout) bytes on op.outD.
// Each output sums its taps in (ky, kx, ci) order; the product differs from QuantSim's float
// convolution only in the order of FP32 accumulation.
void floatConv(const Op& op, const std::uint8_t* x, std::uint8_t* y)
{
    float table[256];
    for (int v = 0; v < 256; ++v) table[v] = static_cast<float>(v - op.inD.zp()) * op.inD.aq.scale;
    thread_local std::vector<float> xf, acc;
    const std::size_t n = op.hin * op.win * op.cin;
    if (xf.size() < n) xf.resize(n);
    for (std::size_t i = 0; i < n; ++i) xf[i] = table[x[i]];
    if (acc.size() < op.cog) acc.resize(op.cog);
    const ConvGeometry& geo = op.geo;
    const std::size_t kk = geo.taps();
    for (std::size_t oy = 0; oy < op.hout; ++oy)
        for (std::size_t ox = 0; ox < op.wout; ++ox) {
            std::uint8_t* out = y + (oy * op.wout + ox) * op.cout;
            for (std::size_t g = 0; g < op.groups; ++g) {
                float* __restrict a = acc.data();
                std::fill_n(a, op.cog, 0.0f);
                for (std::size_t ky = 0; ky < geo.kh; ++ky) {
                    const long iy = static_cast<long>(oy * geo.sh + ky * geo.dh) - static_cast<long>(geo.padTop);
                    if (iy < 0 || iy >= static_cast<long>(op.hin)) continue;
                    for (std::size_t kx = 0; kx < geo.kw; ++kx) {
                        const long ix = static_cast<long>(ox * geo.sw + kx * geo.dw) - static_cast<long>(geo.padLeft);
                        if (ix < 0 || ix >= static_cast<long>(op.win)) continue;
                        const float* __restrict px = xf.data() + (static_cast<std::size_t>(iy) * op.win + static_cast<std::size_t>(ix)) * op.cin + g * op.cig;
                        const float* __restrict w = op.fw.data() + ((g * kk + ky * geo.kw + kx) * op.cig) * op.cog;
                        for (std::size_t ci = 0; ci < op.cig; ++ci) {
                            const float v = px[ci];
                            const float* __restrict wr = w + ci * op.cog;
                            for (std::size_t o = 0; o < op.cog; ++o) a[o] += v * wr[o];
                        }
                    }
                }
                for (std::size_t o = 0; o < op.cog; ++o) {
                    const std::size_t co = g * op.cog + o;
                    out[co] = static_cast<std::uint8_t>(std::clamp<std::int32_t>(quantizeInput(a[o] + op.fb[co], op.outD), op.lo, op.hi));
                }
            }
        }
}

} // namespace

void IntEngine::Impl::runImageOp(const Op& op, Scratch& s) const
{
    const std::uint8_t* cur = imagePtr(s, op.in0);
    std::uint8_t* nxt = imagePtr(s, op.out);
    switch (op.kind) {
    case OpKind::Conv: {
        const std::uint8_t* src = cur;
        if (op.pad) {
            padImage(cur, op.hin, op.win, op.cin, op.pad, op.padValue, s.pad.data());
            src = s.pad.data();
        }
        GemmA a;
        a.M = op.hout * op.wout;
        a.rowOffset = op.rowOff.data();
        if (op.im2col) {
            // im2col rows of K bytes: kernel rows of k * Cin bytes, zero padding to K.
            // The segments are a few dozen bytes: copied in 16-byte chunks, which may read and
            // write up to 15 bytes past a segment (the buffers have kSlack spare bytes);
            // each later segment, the final zeroing and the next row overwrite what spilled.
            // (4-byte words, which the compiler left a scalar loop, were 11 % of resnet8's
            // integer evaluation.)
            static_assert(kSlack >= 16);
            const std::size_t k = op.k, cin = op.cin, stride = op.stride, wp = op.wp, hout = op.hout, wout = op.wout, K = op.K;
            const std::size_t seg = k * cin, chunks = (seg + 15) / 16, used = k * seg;
            std::uint8_t* cols = s.cols.data();
            for (std::size_t oy = 0; oy < hout; ++oy)
                for (std::size_t ox = 0; ox < wout; ++ox) {
                    std::uint8_t* row = cols + (oy * wout + ox) * K;
                    const std::uint8_t* from = src + (oy * stride * wp + ox * stride) * cin;
                    for (std::size_t ky = 0; ky < k; ++ky, from += wp * cin)
                        for (std::size_t t = 0; t < chunks; ++t) {
                            std::uint8_t v[16];
                            std::memcpy(v, from + 16 * t, 16);
                            std::memcpy(row + ky * seg + 16 * t, v, 16);
                        }
                    if (used < K) std::memset(row + used, 0, K - used);
                }
            a.base = s.cols.data();
            a.extent = a.M * op.K;
            a.nseg = 1;
            a.segLen = op.K;
            a.segStride = 0;
        } else {
            a.base = src;
            a.extent = op.hp * op.wp * op.cin;
            a.nseg = op.k;
            a.segLen = op.k * op.cin;
            a.segStride = op.wp * op.cin;
        }
        gemmRequant(op.gemm, a, nxt, op.cout, s.g);
        return;
    }
    case OpKind::GroupConv: {
        const ConvGeometry& geo = op.geo;
        const std::uint8_t* src = cur;
        if (op.hp != op.hin || op.wp != op.win) {
            padImageSides(cur, op.hin, op.win, op.cin, geo.padTop, geo.padLeft, geo.padBottom, geo.padRight, op.padValue, s.pad.data());
            src = s.pad.data();
        }
        const std::size_t P = op.hout * op.wout, kk = geo.taps();
        for (std::size_t g = 0; g < op.groups; ++g) {
            // cols[p][(ky, kx, ci)] = x[oy*sh + ky*dh][ox*sw + kx*dw][g*cig + ci] (padded coordinates), zero padding to K
            for (std::size_t oy = 0; oy < op.hout; ++oy)
                for (std::size_t ox = 0; ox < op.wout; ++ox) {
                    std::uint8_t* row = s.cols.data() + (oy * op.wout + ox) * op.K;
                    for (std::size_t t = 0; t < kk; ++t) {
                        const std::size_t ky = t / geo.kw, kx = t % geo.kw;
                        std::memcpy(row + t * op.cig,
                                    src + ((oy * geo.sh + ky * geo.dh) * op.wp + ox * geo.sw + kx * geo.dw) * op.cin + g * op.cig, op.cig);
                    }
                    std::memset(row + kk * op.cig, 0, op.K - kk * op.cig);
                }
            GemmA a;
            a.base = s.cols.data();
            a.extent = P * op.K;
            a.rowOffset = op.rowOff.data();
            a.M = P;
            a.nseg = 1;
            a.segLen = op.K;
            gemmRequant(op.groupGemms[g], a, nxt + g * op.cog, op.cout, s.g);
        }
        return;
    }
    case OpKind::Depthwise: depthwiseRequant(op.dw, cur, nxt, s.dwPad); return;
    case OpKind::MaxPool: {
        const std::size_t C = op.cin;
        if (op.poolGeo) {
            // Any window: the maximum over the window's part inside the image (the padding is -inf);
            // every window holds an image pixel (pads <= k / 2, ceil_mode drops a window starting in
            // the padding), and bytes order as the values they stand for, so 0 is a safe start.
            op.poolGeo->forEachWindow(op.hin, op.win, [&](std::size_t o, const PoolGeometry::Span& r, const PoolGeometry::Span& c) {
                std::uint8_t* d = nxt + o * C;
                std::memset(d, 0, C);
                for (std::size_t iy = r.begin; iy < r.end; ++iy)
                    for (std::size_t ix = c.begin; ix < c.end; ++ix) {
                        const std::uint8_t* p = cur + (iy * op.win + ix) * C;
                        for (std::size_t ch = 0; ch < C; ++ch) d[ch] = std::max(d[ch], p[ch]);
                    }
            });
            return;
        }
        if (op.pad) {
            // Padded: the border is -inf, i.e. skipped; every window holds an input pixel (pad <= k / 2),
            // and bytes order as the values they stand for, so 0 is a safe start.
            for (std::size_t oy = 0; oy < op.hout; ++oy)
                for (std::size_t ox = 0; ox < op.wout; ++ox) {
                    std::uint8_t* d = nxt + (oy * op.wout + ox) * C;
                    std::memset(d, 0, C);
                    for (std::size_t dy = 0; dy < op.k; ++dy) {
                        const std::size_t iy = oy * op.stride + dy; // padded coordinates
                        if (iy < op.pad || iy >= op.pad + op.hin) continue;
                        for (std::size_t dx = 0; dx < op.k; ++dx) {
                            const std::size_t ix = ox * op.stride + dx;
                            if (ix < op.pad || ix >= op.pad + op.win) continue;
                            const std::uint8_t* p = cur + ((iy - op.pad) * op.win + (ix - op.pad)) * C;
                            for (std::size_t ch = 0; ch < C; ++ch) d[ch] = std::max(d[ch], p[ch]);
                        }
                    }
                }
            return;
        }
        // y[oy][ox][c] = max x[oy*s+dy][ox*s+dx][c]
        for (std::size_t oy = 0; oy < op.hout; ++oy)
            for (std::size_t ox = 0; ox < op.wout; ++ox) {
                std::uint8_t* d = nxt + (oy * op.wout + ox) * C;
                std::memcpy(d, cur + ((oy * op.stride) * op.win + ox * op.stride) * C, C);
                for (std::size_t dy = 0; dy < op.k; ++dy)
                    for (std::size_t dx = 0; dx < op.k; ++dx) {
                        const std::uint8_t* p = cur + ((oy * op.stride + dy) * op.win + ox * op.stride + dx) * C;
                        for (std::size_t ch = 0; ch < C; ++ch) d[ch] = std::max(d[ch], p[ch]);
                    }
            }
        return;
    }
    case OpKind::AvgPool: {
        if (op.poolGeo) {
            // Any window: y = q(s_in / (d s_out) * sum (x - z_in)) over the window's part inside
            // the image (zero padding adds 0), d its divisor (PoolGeometry, as AvgPool2d divides).
            const PoolGeometry& g = *op.poolGeo;
            const PoolParams& p = op.pool;
            const std::size_t C = op.cin;
            g.forEachWindow(op.hin, op.win, [&](std::size_t o, const PoolGeometry::Span& r, const PoolGeometry::Span& c) {
                const std::size_t inside = (r.end - r.begin) * (c.end - c.begin);
                const FixedPointMultiplier& f = op.poolMults[g.divisor(r, c)];
                std::uint8_t* d = nxt + o * C;
                for (std::size_t ch = 0; ch < C; ++ch) {
                    std::int64_t sum = 0;
                    for (std::size_t iy = r.begin; iy < r.end; ++iy)
                        for (std::size_t ix = c.begin; ix < c.end; ++ix) sum += cur[(iy * op.win + ix) * C + ch];
                    sum -= static_cast<std::int64_t>(inside) * p.zin;
                    d[ch] = static_cast<std::uint8_t>(clampZp(roundShift(sum * f.mult, f.shift, p.round), p.zp, p.lo, p.hi));
                }
            });
            return;
        }
        if (op.pad == 0) return avgPoolRequant(op.pool, cur, nxt);
        // A copy of the image bordered with the byte of 0.0 (count_include_pad), (H + 2p) x (W + 2p) x C.
        s.poolPad.resize(op.pool.H * op.pool.W * op.cin);
        padImage(cur, op.hin, op.win, op.cin, op.pad, op.padValue, s.poolPad.data());
        avgPoolRequant(op.pool, s.poolPad.data(), nxt);
        return;
    }
    case OpKind::Add:
        if (op.gated) { // NHWC: each pixel's cout channels plus the gate's cout values
            const std::uint8_t* gate = imagePtr(s, op.in1);
            for (std::size_t p = 0; p < op.elems; p += op.cout) addRequant(op.add, cur + p, gate, nxt + p, op.cout);
        } else {
            addRequant(op.add, cur, imagePtr(s, op.in1), nxt, op.elems);
        }
        return;
    case OpKind::Mul:
        if (op.gated) mulRequantBroadcast(op.mul, cur, imagePtr(s, op.in1), nxt, op.elems / op.cout, op.cout);
        else mulRequant(op.mul, cur, imagePtr(s, op.in1), nxt, op.elems);
        return;
    case OpKind::Concat: {
        std::vector<const std::uint8_t*> in;
        for (int a : op.ins) in.push_back(imagePtr(s, a));
        concatRequant(op.cat, in.data(), nxt);
        return;
    }
    case OpKind::FloatConv: return floatConv(op, cur, nxt);
    case OpKind::FloatNorm: return floatNorm(op, cur, nxt, s.normIn, s.normOut);
    case OpKind::Lut:
        for (std::size_t j = 0; j < op.elems; ++j) nxt[j] = op.table[cur[j]];
        return;
    case OpKind::Gather:
        for (std::size_t j = 0; j < op.elems; ++j) nxt[j] = op.col[j] == kGatherFill ? op.fill : cur[op.col[j]];
        return;
    case OpKind::ChannelMax: // NHWC: pixel p's cin bytes
        for (std::size_t p = 0; p < op.elems; ++p) {
            const std::uint8_t* px = cur + p * op.cin;
            nxt[p] = *std::max_element(px, px + op.cin);
        }
        return;
    case OpKind::ChannelLut: // NHWC: channel j % C; flat features: feature j (or col[j])
        for (std::size_t j = 0; j < op.elems; ++j) {
            const std::size_t c = !op.col.empty() ? op.col[j] : j % op.cout;
            nxt[j] = op.tables[c * 256 + cur[j]];
        }
        return;
    case OpKind::Linear:
    case OpKind::FloatLinear: break;
    }
    throw Error("internal error: a dense layer in the image stage");
}

void IntEngine::Impl::runBatchOp(const Op& op, Scratch& s, std::size_t n) const
{
    auto rowBytes = [&](int act) {
        const ActInfo& r = acts[static_cast<std::size_t>(acts[static_cast<std::size_t>(act)].root)];
        return buffers[static_cast<std::size_t>(r.batchBuffer)].bytes;
    };
    const std::uint8_t* in = batchPtr(s, op.in0);
    std::uint8_t* out = batchPtr(s, op.out);
    const std::size_t inRow = rowBytes(op.in0), outRow = rowBytes(op.out);
    switch (op.kind) {
    case OpKind::Linear: {
        GemmA a;
        a.base = in;
        a.extent = n * op.K;
        a.rowOffset = op.rowOff.data();
        a.M = n;
        a.nseg = 1;
        a.segLen = op.K;
        gemmRequant(op.gemm, a, out, outRow, s.g);
        return;
    }
    case OpKind::FloatLinear: {
        // y = W dq(x) + b in float, then q(y) (or float logits); the arithmetic of QuantSim's
        // float layer between fake-quantized ones.
        std::vector<float> x(op.inF), y(op.outF);
        for (std::size_t r = 0; r < n; ++r) {
            const std::uint8_t* q = in + r * inRow;
            for (std::size_t j = 0; j < op.inF; ++j)
                x[j] = static_cast<float>(static_cast<std::int32_t>(q[op.col[j]]) - op.inD.zp()) * op.inD.aq.scale;
            for (std::size_t o = 0; o < op.outF; ++o) {
                const float* w = op.fw.data() + o * op.inF;
                float acc = 0.0f;
                for (std::size_t j = 0; j < op.inF; ++j) acc += w[j] * x[j];
                y[o] = acc + op.fb[o];
            }
            std::uint8_t* dst = out + r * outRow;
            if (op.floatOut) {
                std::memcpy(dst, y.data(), op.outF * sizeof(float));
                continue;
            }
            for (std::size_t o = 0; o < op.outF; ++o)
                dst[o] = static_cast<std::uint8_t>(std::clamp<std::int32_t>(quantizeInput(y[o], op.outD), op.lo, op.hi));
        }
        return;
    }
    case OpKind::Add: {
        const std::uint8_t* in1 = batchPtr(s, op.in1);
        const std::size_t in1Row = rowBytes(op.in1);
        for (std::size_t r = 0; r < n; ++r) addRequant(op.add, in + r * inRow, in1 + r * in1Row, out + r * outRow, op.elems);
        return;
    }
    case OpKind::Mul: { // flat features of equal shapes (a gate is a feature map, never in the batch stage)
        const std::uint8_t* in1 = batchPtr(s, op.in1);
        const std::size_t in1Row = rowBytes(op.in1);
        for (std::size_t r = 0; r < n; ++r) mulRequant(op.mul, in + r * inRow, in1 + r * in1Row, out + r * outRow, op.elems);
        return;
    }
    case OpKind::Concat: {
        std::vector<const std::uint8_t*> row(op.ins.size());
        for (std::size_t r = 0; r < n; ++r) {
            for (std::size_t j = 0; j < op.ins.size(); ++j) row[j] = batchPtr(s, op.ins[j]) + r * rowBytes(op.ins[j]);
            concatRequant(op.cat, row.data(), out + r * outRow);
        }
        return;
    }
    case OpKind::Lut:
        for (std::size_t r = 0; r < n; ++r) {
            const std::uint8_t* src = in + r * inRow;
            std::uint8_t* dst = out + r * outRow;
            for (std::size_t j = 0; j < op.elems; ++j) dst[j] = op.table[src[j]];
        }
        return;
    case OpKind::Gather:
        for (std::size_t r = 0; r < n; ++r) {
            const std::uint8_t* src = in + r * inRow;
            std::uint8_t* dst = out + r * outRow;
            for (std::size_t j = 0; j < op.elems; ++j) dst[j] = op.col[j] == kGatherFill ? op.fill : src[op.col[j]];
        }
        return;
    case OpKind::ChannelLut:
        for (std::size_t r = 0; r < n; ++r) {
            const std::uint8_t* src = in + r * inRow;
            std::uint8_t* dst = out + r * outRow;
            for (std::size_t j = 0; j < op.elems; ++j) dst[j] = op.tables[(!op.col.empty() ? op.col[j] : j % op.cout) * 256 + src[j]];
        }
        return;
    case OpKind::FloatNorm:
        for (std::size_t r = 0; r < n; ++r) floatNorm(op, in + r * inRow, out + r * outRow, s.normIn, s.normOut);
        return;
    case OpKind::AvgPool:
        if (op.pad) throw Error("internal error: a padded pooling in the batch stage");
        for (std::size_t r = 0; r < n; ++r) avgPoolRequant(op.pool, in + r * inRow, out + r * outRow);
        return;
    default: break;
    }
    throw Error("internal error: a feature-map layer in the batch stage");
}

void IntEngine::Impl::runChunk(std::size_t b, std::size_t e, const Fill& fill, float* outputs, std::int32_t* preds,
                               const Tap* tap) const
{
    Scratch& s = scratch.local();
    const std::size_t n = e - b;
    if (s.slots.size() != slotBytes.size()) s.slots.resize(slotBytes.size());
    for (std::size_t i = 0; i < slotBytes.size(); ++i)
        if (s.slots[i].size() < slotBytes[i]) s.slots[i].resize(slotBytes[i]);
    if (s.batchSlots.size() != batchSlotBytes.size()) s.batchSlots.resize(batchSlotBytes.size());
    for (std::size_t i = 0; i < batchSlotBytes.size(); ++i)
        if (s.batchSlots[i].size() < batchSlotBytes[i]) s.batchSlots[i].resize(batchSlotBytes[i]);
    if (s.pad.size() < maxPad + kSlack) s.pad.resize(maxPad + kSlack);
    if (s.cols.size() < maxCols + kSlack) s.cols.resize(maxCols + kSlack);

    for (std::size_t i = 0; i < n; ++i) {
        std::uint8_t* x = imagePtr(s, 0);
        fill(b + i, x);
        if (tap) (*tap)(nullptr, 0, x);
        for (std::size_t j = 0; j < firstBatchOp; ++j) {
            const Op& op = ops[j];
            runImageOp(op, s);
            if (tap && op.traced) (*tap)(&op, op.out, imagePtr(s, op.out));
        }
        for (int a : crossing) {
            const std::size_t bytes = acts[static_cast<std::size_t>(a)].numel();
            const std::size_t row = buffers[static_cast<std::size_t>(acts[static_cast<std::size_t>(a)].batchBuffer)].bytes;
            std::uint8_t* dst = batchPtr(s, a) + i * row;
            std::memcpy(dst, imagePtr(s, a), bytes);
            std::memset(dst + bytes, 0, row - bytes); // K padding of a dense layer
        }
    }
    for (std::size_t j = firstBatchOp; j < ops.size(); ++j) {
        const Op& op = ops[j];
        runBatchOp(op, s, n);
        if (tap && op.traced) (*tap)(&op, op.out, batchPtr(s, op.out));
    }

    // Edges: dequantize the class scores; log-softmax or softmax; argmax.
    const ActInfo& oa = acts[static_cast<std::size_t>(outputAct)];
    const std::size_t width = buffers[static_cast<std::size_t>(acts[static_cast<std::size_t>(oa.root)].batchBuffer)].bytes;
    const std::uint8_t* q0 = batchPtr(s, outputAct);
    std::vector<float> row(classes);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* q = q0 + i * width;
        if (oa.floats) // float logits of a last layer kept FP32
            std::memcpy(row.data(), q, classes * sizeof(float));
        else
            for (std::size_t j = 0; j < classes; ++j)
                row[j] = static_cast<float>(static_cast<std::int32_t>(q[outputIndex[j]]) - oa.d.zp()) * oa.d.aq.scale;
        if (logSoftmax) logSoftmaxRow(row.data(), row.data(), classes);
        if (softmax) softmaxRow(row.data(), row.data(), classes);
        if (outputs) std::memcpy(outputs + (b + i) * classes, row.data(), classes * sizeof(float));
        if (preds) preds[b + i] = static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    }
}

IntEngine::IntEngine(const ExportedModel& model, const EngineOptions& opt) : m(std::make_unique<Impl>())
{
    m->opt = opt;
    if (m->opt.chunk == 0) m->opt.chunk = 1;
    if (m->opt.threads == 0) m->opt.threads = 1;
    if (!isaSupported(opt.isa)) throw ConfigError(std::string("this CPU cannot run the ") + isaName(opt.isa) + " kernels");
    m->build(model);
    m->arena = std::make_unique<tbb::task_arena>(static_cast<int>(m->opt.threads));
}

IntEngine::~IntEngine() = default;

std::string IntEngine::unsupportedReason(const ExportedModel& model)
{
    try {
        EngineOptions o;
        o.isa = Isa::Scalar;
        o.threads = 1;
        IntEngine e(model, o);
    } catch (const Error& e) {
        return e.what();
    }
    return {};
}

Isa IntEngine::isa() const { return m->opt.isa; }
std::size_t IntEngine::classes() const { return m->classes; }
std::size_t IntEngine::imageBytes() const { return m->C * m->H * m->W; }

void IntEngine::run(const std::uint8_t* pixels, std::size_t n, float* outputs, std::int32_t* predictions) const
{
    const std::size_t C = m->C, HW = m->H * m->W;
    const Impl::Fill fill = [&](std::size_t img, std::uint8_t* dst) {
        const std::uint8_t* src = pixels + img * C * HW;
        const std::uint8_t* lut = m->lut.data();
        if (C == 1) {
            for (std::size_t j = 0; j < HW; ++j) dst[j] = lut[src[j]];
        } else {
            for (std::size_t c = 0; c < C; ++c)
                for (std::size_t j = 0; j < HW; ++j) dst[j * C + c] = lut[c * 256 + src[c * HW + j]];
        }
    };
    m->arena->execute([&] {
        parallelChunks(n, m->opt.chunk, [&](std::size_t b, std::size_t e) { m->runChunk(b, e, fill, outputs, predictions, nullptr); });
    });
}

void IntEngine::runFloat(const Tensor& x, Tensor& out, std::int32_t* predictions) const
{
    const std::size_t C = m->C, HW = m->H * m->W;
    if (x.rank() != 4 || x.dim(1) != C || x.dim(2) != m->H || x.dim(3) != m->W)
        throw ConfigError("engine input " + shapeString(x.shape()) + " does not match the model's (N, " + std::to_string(C) + ", " +
                          std::to_string(m->H) + ", " + std::to_string(m->W) + ")");
    const std::size_t n = x.dim(0);
    out.resize({n, m->classes});
    const Impl::Fill fill = [&](std::size_t img, std::uint8_t* dst) {
        const float* src = x.data() + img * C * HW;
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t j = 0; j < HW; ++j) dst[j * C + c] = quantizeInput(src[c * HW + j], m->acts[0].d);
    };
    m->arena->execute([&] {
        parallelChunks(n, m->opt.chunk, [&](std::size_t b, std::size_t e) { m->runChunk(b, e, fill, out.data(), predictions, nullptr); });
    });
}

std::vector<PointTrace> IntEngine::trace(const std::uint8_t* pixels) const
{
    std::vector<PointTrace> t;
    const Impl::Fill fill = [&](std::size_t, std::uint8_t* dst) {
        const std::size_t C = m->C, HW = m->H * m->W;
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t j = 0; j < HW; ++j) dst[j * C + c] = m->lut[c * 256 + pixels[c * HW + j]];
    };
    const Impl::Tap tap = [&](const Op* op, int act, const std::uint8_t* data) {
        const ActInfo& a = m->acts[static_cast<std::size_t>(act)];
        PointTrace p;
        p.layer = op ? op->name : "input";
        p.quant = a.d.aq;
        p.shape = a.flat ? Shape{a.c} : Shape{a.c, a.h, a.w};
        p.q.resize(a.numel());
        if (a.flat) {
            // NCHW flatten order; a flattened feature map is held NHWC
            for (std::size_t j = 0; j < a.c; ++j) {
                const std::size_t at = a.permuted ? (j % (a.fh * a.fw)) * a.fc + j / (a.fh * a.fw) : j;
                p.q[j] = static_cast<std::int32_t>(data[at]) - a.d.offset;
            }
        } else {
            const std::size_t HW = a.h * a.w;
            for (std::size_t c = 0; c < a.c; ++c)
                for (std::size_t j = 0; j < HW; ++j) p.q[c * HW + j] = static_cast<std::int32_t>(data[j * a.c + c]) - a.d.offset;
        }
        t.push_back(std::move(p));
    };
    m->runChunk(0, 1, fill, nullptr, nullptr, &tap);
    return t;
}

} // namespace quantscope
