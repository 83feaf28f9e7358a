#include "nn/mul.h"

#include "nn/channel_gate.h"

#include "tensor/parallel.h"
#include "util/errors.h"

namespace quantscope {

int Mul::gateOf(const std::string& layer, const Shape& a, const Shape& b)
{
    const int g = channelGateOf(a, b);
    if (g >= -1) return g;
    throw ConfigError(layer + ": cannot multiply shapes " + shapeString(a) + " and " + shapeString(b) +
                      " (Mul takes equal shapes, or a [N, C, H, W] map and a [N, C, 1, 1] gate)");
}

Shape Mul::outputShape(const Shape& in) const
{
    throw ConfigError(name() + ": Mul takes two inputs, given one of shape " + shapeString(in));
}

Shape Mul::outputShapeMulti(const std::vector<Shape>& in) const
{
    if (in.size() != 2) throw ConfigError(name() + ": Mul takes two inputs, given " + std::to_string(in.size()));
    const int g = gateOf(name(), in[0], in[1]);
    return in[g == 0 ? 1 : 0];
}

void Mul::forward(const Tensor& x, Tensor&, const RunContext&) { (void)outputShape(x.shape()); }

void Mul::backward(const Tensor& x, const Tensor&, const Tensor&, Tensor&, bool) { (void)outputShape(x.shape()); }

// y = a * b; broadcast: y[n, c, :, :] = x[n, c, :, :] * g[n, c]
void Mul::forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& /*ctx*/)
{
    const Tensor& a = *xs.at(0);
    const Tensor& b = *xs.at(1);
    const int g = gateOf(name(), a.shape(), b.shape());
    y.resize(g == 0 ? b.shape() : a.shape());
    float* __restrict out = y.data();
    if (g < 0) {
        const std::size_t n = y.numel();
        const float* __restrict pa = a.data();
        const float* __restrict pb = b.data();
        parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
            for (std::size_t i = lo; i < hi; ++i) out[i] = pa[i] * pb[i];
        });
        return;
    }
    forEachGatedPlane(g == 0 ? b : a, g == 0 ? a : b, out, [](float v, float s) { return v * s; });
}

// da = dy * b, db = dy * a; broadcast: dx = dy * g, dg[n, c] = sum_{h, w} dy * x
void Mul::backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& /*y*/, const Tensor& dy,
                        const std::vector<Tensor*>& dxs)
{
    const Tensor& a = *xs.at(0);
    const Tensor& b = *xs.at(1);
    const Shape os = outputShapeMulti({a.shape(), b.shape()});
    if (dy.shape() != os)
        throw ConfigError(name() + ": output gradient " + shapeString(dy.shape()) + " does not match the output " + shapeString(os));
    const int g = gateOf(name(), a.shape(), b.shape());
    Tensor* da = dxs.at(0);
    Tensor* db = dxs.at(1);
    const float* __restrict pdy = dy.data();
    if (g < 0) {
        const std::size_t n = dy.numel();
        float* oa = nullptr;
        float* ob = nullptr;
        if (da) {
            da->resize(a.shape());
            oa = da->data();
        }
        if (db) {
            db->resize(b.shape());
            ob = db->data();
        }
        const float* pa = a.data();
        const float* pb = b.data();
        parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
            for (std::size_t i = lo; i < hi; ++i) {
                if (oa) oa[i] = pdy[i] * pb[i];
                if (ob) ob[i] = pdy[i] * pa[i];
            }
        });
        return;
    }
    const Tensor& x = g == 0 ? b : a;
    const Tensor& gate = g == 0 ? a : b;
    Tensor* dx = g == 0 ? db : da;
    Tensor* dg = g == 0 ? da : db;
    const std::size_t planes = gate.numel(), hw = planes ? x.numel() / planes : 0;
    float* ox = nullptr;
    float* og = nullptr;
    if (dx) {
        dx->resize(x.shape());
        ox = dx->data();
    }
    if (dg) {
        dg->resize(gate.shape());
        og = dg->data();
    }
    const float* px = x.data();
    const float* pg = gate.data();
    parallelChunks(planes, gatePlaneGrain(x.numel(), hw), [=](std::size_t lo, std::size_t hi) {
        for (std::size_t p = lo; p < hi; ++p) {
            const float* __restrict d = pdy + p * hw;
            const float* __restrict src = px + p * hw;
            if (ox) {
                const float s = pg[p];
                float* __restrict dst = ox + p * hw;
                for (std::size_t i = 0; i < hw; ++i) dst[i] = d[i] * s;
            }
            if (og) {
                double sum = 0.0;
                for (std::size_t i = 0; i < hw; ++i) sum += static_cast<double>(d[i]) * src[i];
                og[p] = static_cast<float>(sum);
            }
        }
    });
}

} // namespace quantscope
