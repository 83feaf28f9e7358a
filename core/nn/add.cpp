#include "nn/add.h"

#include "nn/channel_gate.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

namespace quantscope {

Shape Add::outputShape(const Shape& in) const
{
    throw ConfigError(name() + ": Add takes two inputs, given one of shape " + shapeString(in));
}

int Add::gateOf(const std::string& layer, const Shape& a, const Shape& b)
{
    const int g = channelGateOf(a, b);
    if (g >= -1) return g;
    throw ConfigError(layer + ": cannot add shapes " + shapeString(a) + " and " + shapeString(b) +
                      " (Add takes equal shapes, or a [N, C, H, W] map and a [N, C, 1, 1] gate of its channels)");
}

Shape Add::outputShapeMulti(const std::vector<Shape>& in) const
{
    if (in.size() != 2) throw ConfigError(name() + ": Add takes two inputs, given " + std::to_string(in.size()));
    return in[gateOf(name(), in[0], in[1]) == 0 ? 1 : 0];
}

void Add::forward(const Tensor& x, Tensor&, const RunContext&) { (void)outputShape(x.shape()); }

void Add::backward(const Tensor& x, const Tensor&, const Tensor&, Tensor&, bool) { (void)outputShape(x.shape()); }

namespace {
// y = f(a + b), elementwise in parallel chunks (f inlined, so the loop vectorises).
template <class F>
void sumThrough(const std::vector<const Tensor*>& xs, Tensor& y, F f)
{
    const std::size_t n = y.numel();
    const float* __restrict a = xs[0]->data();
    const float* __restrict b = xs[1]->data();
    float* __restrict out = y.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
        const float* __restrict aa = a;
        const float* __restrict bb = b;
        float* __restrict dst = out;
        for (std::size_t i = lo; i < hi; ++i) dst[i] = f(aa[i] + bb[i]);
    });
}
// y = f(x + g) for a map x and a gate g of its planes (g[p] added to every value of plane p of x)
template <class F>
void sumBroadcast(const Tensor& x, const Tensor& gate, Tensor& y, F f)
{
    forEachGatedPlane(x, gate, y.data(), [f](float v, float s) { return f(v + s); });
}
// y = f(a + b), equal shapes or a broadcast gate (Add::gateOf)
template <class F>
void sumAny(const std::string& layer, const std::vector<const Tensor*>& xs, Tensor& y, F f)
{
    const int g = Add::gateOf(layer, xs[0]->shape(), xs[1]->shape());
    if (g < 0) return sumThrough(xs, y, f);
    sumBroadcast(*xs[g == 0 ? 1 : 0], *xs[g], y, f);
}
// y = f(a + b) with input j taken from sources[j] where given, a few planes at a time. With
// sink, image by image, each handed to the sink once written.
template <class F>
void sumThroughSources(const std::vector<const Tensor*>& xs, const std::array<const OutputPlaneSource*, 2>& sources,
                       Tensor& y, F f, OutputImageSink* sink)
{
    const std::size_t HW = y.dim(2) * y.dim(3), planes = y.dim(0) * y.dim(1), C = y.dim(1);
    // planes per buffer fill: about 16 KB, so that both inputs' buffers stay in L1
    const std::size_t fill = std::max<std::size_t>(1, 4096 / std::max<std::size_t>(HW, 1));
    const std::size_t grain = std::max(fill, elementwiseGrain(y.numel()) / std::max<std::size_t>(HW, 1));
    const float* in[2] = {xs[0]->data(), xs[1]->data()};
    float* out = y.data();
    const auto run = [&](std::size_t p0, std::size_t p1) {
        thread_local std::vector<float> buffers[2];
        for (std::size_t p = p0; p < p1; p += fill) {
            const std::size_t count = std::min(fill, p1 - p), n = count * HW;
            const float* v[2];
            for (std::size_t j = 0; j < 2; ++j) {
                if (!sources[j]) {
                    v[j] = in[j] + p * HW;
                    continue;
                }
                if (buffers[j].size() < n) buffers[j].resize(n);
                sources[j]->outputPlanes(p, count, buffers[j].data());
                v[j] = buffers[j].data();
            }
            const float* __restrict a = v[0];
            const float* __restrict b = v[1];
            float* __restrict dst = out + p * HW;
            for (std::size_t i = 0; i < n; ++i) dst[i] = f(a[i] + b[i]);
        }
    };
    if (!sink) {
        parallelChunks(planes, grain, run);
        return;
    }
    parallelFor(y.dim(0), [&](std::size_t n) {
        run(n * C, (n + 1) * C);
        sink->imagesWritten(y, n, 1);
    });
}
} // namespace

// y = a + b (rounded to bf16 when ctx.roundOutputBf16)
void Add::forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx)
{
    y.resize(outputShapeMulti({xs.at(0)->shape(), xs.at(1)->shape()}));
    if (ctx.roundOutputBf16) sumAny(name(), xs, y, [](float v) { return roundBf16(v); });
    else sumAny(name(), xs, y, [](float v) { return v; });
}

// da = db = dy; broadcast: the map's gradient is dy, the gate's its sum over each plane
void Add::backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& /*y*/, const Tensor& dy,
                        const std::vector<Tensor*>& dxs)
{
    const Shape os = outputShapeMulti({xs.at(0)->shape(), xs.at(1)->shape()});
    if (dy.shape() != os)
        throw ConfigError(name() + ": output gradient " + shapeString(dy.shape()) + " does not match the output " +
                          shapeString(os));
    float* out[2] = {};
    for (std::size_t j = 0; j < 2; ++j) {
        if (!dxs.at(j)) continue;
        dxs[j]->resize(xs.at(j)->shape());
        out[j] = dxs[j]->data();
    }
    const int gate = gateOf(name(), xs[0]->shape(), xs[1]->shape());
    if (gate >= 0) {
        float* dmap = out[1 - gate];
        float* dgate = out[gate];
        const std::size_t planes = xs[gate]->numel(), hw = planes ? dy.numel() / planes : 0;
        const float* g = dy.data();
        parallelChunks(planes, gatePlaneGrain(dy.numel(), hw), [=](std::size_t lo, std::size_t hi) {
            if (dmap) std::memcpy(dmap + lo * hw, g + lo * hw, (hi - lo) * hw * sizeof(float));
            if (!dgate) return;
            for (std::size_t p = lo; p < hi; ++p) {
                const float* __restrict d = g + p * hw;
                double sum = 0.0;
                for (std::size_t i = 0; i < hw; ++i) sum += d[i];
                dgate[p] = static_cast<float>(sum);
            }
        });
        return;
    }
    // Copies in parallel chunks (a residual join's activations are large; one thread does not fill
    // the memory bandwidth).
    const std::size_t n = dy.numel();
    const float* g = dy.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
        for (float* o : out)
            if (o) std::memcpy(o + lo, g + lo, (hi - lo) * sizeof(float));
    });
}

// r = min(max(a + b, 0), cap): ReLU's and ReLU6's own expression on the sum (clampForward), on
// the sum rounded to bf16 when toBf16.
void Add::forwardClamped(const std::vector<const Tensor*>& xs, Tensor& r, float cap, bool toBf16,
                         const std::array<const OutputPlaneSource*, 2>& sources, OutputImageSink* sink)
{
    r.resize(outputShapeMulti({xs.at(0)->shape(), xs.at(1)->shape()}));
    if (sources[0] || sources[1] || sink) {
        if (xs[0]->shape() != xs[1]->shape())
            throw ConfigError(name() + ": a pass plane by plane needs equal shapes, given " + shapeString(xs[0]->shape()) +
                              " and " + shapeString(xs[1]->shape()));
        if (r.rank() != 4)
            throw ConfigError(name() + ": a pass plane by plane needs (N, C, H, W), given " + shapeString(r.shape()));
        if (toBf16)
            sumThroughSources(xs, sources, r, [cap](float v) { return std::min(std::max(roundBf16(v), 0.0f), cap); }, sink);
        else sumThroughSources(xs, sources, r, [cap](float v) { return std::min(std::max(v, 0.0f), cap); }, sink);
        return;
    }
    if (toBf16) sumAny(name(), xs, r, [cap](float v) { return std::min(std::max(roundBf16(v), 0.0f), cap); });
    else sumAny(name(), xs, r, [cap](float v) { return std::min(std::max(v, 0.0f), cap); });
}

bool Add::maskGradient(const Tensor& r, Tensor& dr, float cap, Tensor* first, bool addFirst, const std::uint8_t* steMask,
                       bool roundBf16) const
{
    if (r.shape() != dr.shape())
        throw ConfigError(name() + ": fused activation output " + shapeString(r.shape()) + " and gradient " +
                          shapeString(dr.shape()) + " differ in shape");
    if (first && addFirst && first->shape() != dr.shape())
        throw ConfigError(name() + ": the gradient to add into is " + shapeString(first->shape()) + ", the output " +
                          shapeString(dr.shape()));
    if (first && !addFirst) first->resize(dr.shape());
    const std::size_t n = dr.numel();
    const float* __restrict rv = r.data();
    float* __restrict g = dr.data();
    float* __restrict f = first ? first->data() : nullptr;
    const bool bounded = std::isfinite(cap);
    const std::uint8_t* __restrict ste = steMask;
    std::atomic<bool> finite{true};
    parallelChunks(n, elementwiseGrain(n), [=, &finite](std::size_t lo, std::size_t hi) {
        const float* __restrict rr = rv;
        float* __restrict gg = g;
        float* __restrict ff = f;
#if defined(__AVX512F__)
        if (roundBf16 && !ste) { // round, mask and pass on 16 at a time: one pass, as the loops below
            const __m512i exponent = _mm512_set1_epi32(0x7F800000);
            const __m512 zero = _mm512_setzero_ps(), capv = _mm512_set1_ps(cap);
            __mmask16 bad = 0;
            for (std::size_t i = lo; i < hi; i += 16) {
                const __mmask16 k = bf16TailMask(hi - i);
                const __m512 v = roundBf16X16(_mm512_maskz_loadu_ps(k, gg + i));
                bad |= _mm512_mask_cmpeq_epi32_mask(k, _mm512_and_si512(_mm512_castps_si512(v), exponent), exponent);
                const __m512 rx = _mm512_maskz_loadu_ps(k, rr + i);
                __mmask16 keep = _mm512_mask_cmp_ps_mask(k, rx, zero, _CMP_GT_OQ);
                if (bounded) keep = _mm512_mask_cmp_ps_mask(keep, rx, capv, _CMP_LT_OQ);
                const __m512 out = _mm512_maskz_mov_ps(keep, v);
                _mm512_mask_storeu_ps(gg + i, k, out);
                if (ff) _mm512_mask_storeu_ps(ff + i, k, addFirst ? _mm512_add_ps(_mm512_maskz_loadu_ps(k, ff + i), out) : out);
            }
            if (bad) finite.store(false, std::memory_order_relaxed);
            return;
        }
#endif
        // the chunk is rounded while it is in cache, then masked
        if (roundBf16 && !roundBf16AllFinite(gg + lo, hi - lo)) finite.store(false, std::memory_order_relaxed);
        if (ste) // masks select dy or 0: the order of the two does not change the bits
            for (std::size_t i = lo; i < hi; ++i) gg[i] = ste[i] ? gg[i] : 0.0f;
        if (bounded)
            for (std::size_t i = lo; i < hi; ++i) gg[i] = rr[i] > 0.0f && rr[i] < cap ? gg[i] : 0.0f;
        else
            for (std::size_t i = lo; i < hi; ++i) gg[i] = rr[i] > 0.0f ? gg[i] : 0.0f;
        if (!ff) return;
        if (addFirst)
            for (std::size_t i = lo; i < hi; ++i) ff[i] += gg[i];
        else
            std::memcpy(ff + lo, gg + lo, (hi - lo) * sizeof(float));
    });
    return finite.load();
}

} // namespace quantscope
