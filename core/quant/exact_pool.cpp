#include "quant/exact_pool.h"

#include "nn/avgpool2d.h"
#include "quant/fixed_point.h"
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace quantscope {

namespace {

// The engine's multiplier for a window of n on one grid: s / (n s), as int_engine_build_ops.cpp
// computes it (in double, 1 / n correctly rounded).
FixedPointMultiplier sameGridMultiplier(float scale, std::size_t n)
{
    return fixedPointMultiplier(static_cast<double>(scale) / (static_cast<double>(n) * static_cast<double>(scale)));
}

// The code of T (a window's sum of code - zeroPoint) and y's new value; m (when given) the STE mask.
inline float requantizedValue(std::int64_t T, FixedPointMultiplier f, float scale, std::int32_t zeroPoint, int qmin, int qmax,
                              std::uint8_t* m)
{
    const std::int64_t q = roundShiftHalfEven(T * f.mult, f.shift) + zeroPoint;
    if (m) *m = static_cast<std::uint8_t>(q >= qmin && q <= qmax);
    const std::int64_t c = q < qmin ? qmin : (q > qmax ? qmax : q);
    return (static_cast<float>(c) - static_cast<float>(zeroPoint)) * scale; // fakeQuantize's dequantisation
}

bool usableScale(float scale) { return std::isfinite(scale) && scale > 0.0f; }

} // namespace

bool fakeQuantizeSameGridAverage(std::span<float> y, float scale, std::int32_t zeroPoint, int qmin, int qmax, std::size_t n,
                                 std::vector<std::uint8_t>* mask)
{
    if (n == 0 || n * 255 >= (std::size_t{1} << 30) || !usableScale(scale)) return false;
    const FixedPointMultiplier f = sameGridMultiplier(scale, n);
    const double perCode = static_cast<double>(n) / static_cast<double>(scale);
    const std::size_t count = y.size();
    float* v = y.data();
    std::atomic<bool> onGrid{true};
    parallelChunks(count, elementwiseGrain(count), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            const double t = static_cast<double>(v[i]) * perCode;
            if (!(std::fabs(t - std::nearbyint(t)) <= 1e-3)) {
                onGrid.store(false, std::memory_order_relaxed);
                return;
            }
        }
    });
    if (!onGrid.load()) return false;
    if (mask) mask->resize(count);
    std::uint8_t* m = mask ? mask->data() : nullptr;
    parallelChunks(count, elementwiseGrain(count), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            const auto T = static_cast<std::int64_t>(std::llround(static_cast<double>(v[i]) * perCode));
            v[i] = requantizedValue(T, f, scale, zeroPoint, qmin, qmax, m ? m + i : nullptr);
        }
    });
    return true;
}

bool fakeQuantizeSameGridPool(std::span<float> y, std::span<const float> x, const SquareAveragePool& p, float scale,
                              std::int32_t zeroPoint, int qmin, int qmax, std::vector<std::uint8_t>* mask)
{
    const std::size_t n = p.kh * p.kw, planes = p.N * p.C, HW = p.H * p.W, HWo = p.Ho * p.Wo;
    if (n == 0 || n * 255 >= (std::size_t{1} << 30) || p.stride == 0 || !usableScale(scale) || x.size() != planes * HW ||
        y.size() != planes * HWo)
        return false;
    // every output window starts inside the padded input and ends inside it
    if (HWo && ((p.Ho - 1) * p.stride + p.kh > p.H + 2 * p.pad || (p.Wo - 1) * p.stride + p.kw > p.W + 2 * p.pad)) return false;
    const FixedPointMultiplier f = sameGridMultiplier(scale, n);
    const float inv = 1.0f / scale;
    std::atomic<bool> onGrid{true};
    if (mask) mask->resize(y.size());
    std::vector<float> out(y.size());
    parallelChunks(planes, 1, [&](std::size_t b, std::size_t e) {
        std::vector<std::int32_t> codes(HW);
        for (std::size_t pl = b; pl < e && onGrid.load(std::memory_order_relaxed); ++pl) {
            const float* xp = x.data() + pl * HW;
            for (std::size_t i = 0; i < HW; ++i) { // code - zeroPoint, exactly (x = (code - zp) scale)
                const float t = xp[i] * inv;
                const float r = std::nearbyint(t);
                if (!(std::fabs(t - r) <= 1e-3f) || std::fabs(r) > 65535.0f) {
                    onGrid.store(false, std::memory_order_relaxed);
                    return;
                }
                codes[i] = static_cast<std::int32_t>(r);
            }
            for (std::size_t oy = 0; oy < p.Ho; ++oy)
                for (std::size_t ox = 0; ox < p.Wo; ++ox) {
                    std::int64_t T = 0;
                    for (std::size_t ky = 0; ky < p.kh; ++ky) {
                        const std::size_t py = oy * p.stride + ky; // in the padded input
                        if (py < p.pad || py >= p.pad + p.H) continue; // padding adds 0
                        const std::int32_t* row = codes.data() + (py - p.pad) * p.W;
                        for (std::size_t kx = 0; kx < p.kw; ++kx) {
                            const std::size_t px = ox * p.stride + kx;
                            if (px >= p.pad && px < p.pad + p.W) T += row[px - p.pad];
                        }
                    }
                    const std::size_t at = pl * HWo + oy * p.Wo + ox;
                    // y is the float mean of these very values: within float rounding (n 2^-24 of
                    // it, far below a quarter step) of T scale / n, unless x is not y's input
                    // (a caller that ran the pool on another tensor): then nothing is done.
                    if (!(std::fabs(static_cast<double>(y[at]) - static_cast<double>(T) * scale / static_cast<double>(n)) <=
                          0.25 * static_cast<double>(scale))) {
                        onGrid.store(false, std::memory_order_relaxed);
                        return;
                    }
                    out[at] = requantizedValue(T, f, scale, zeroPoint, qmin, qmax, mask ? mask->data() + at : nullptr);
                }
        }
    });
    if (!onGrid.load()) return false;
    std::copy(out.begin(), out.end(), y.begin());
    return true;
}

bool fakeQuantizeSameGridPoolLayer(const Layer& l, const Tensor& x, Tensor& y, float scale, std::int32_t zeroPoint, int qmin,
                                   int qmax, std::vector<std::uint8_t>* mask)
{
    const bool global = l.kind() == LayerKind::GlobalAvgPool2d;
    if (!global && l.kind() != LayerKind::AvgPool2d) return false;
    const bool haveX = x.shape().size() == 4 && y.shape().size() >= 2 && y.dim(0) == x.dim(0) && y.dim(1) == x.dim(1);
    SquareAveragePool sp{};
    if (global) {
        if (!haveX || y.numel() != x.dim(0) * x.dim(1)) return false;
        sp = {x.dim(0), x.dim(1), x.dim(2), x.dim(3), x.dim(2), x.dim(3), 1, 0, 1, 1};
    } else {
        const PoolGeometry& g = static_cast<const AvgPool2d&>(l).geometry();
        if (!g.isSquare()) return false; // every window divides by kh kw (padding counted)
        if (!haveX || y.shape().size() != 4)
            return fakeQuantizeSameGridAverage(y.values(), scale, zeroPoint, qmin, qmax, g.kh * g.kw, mask);
        sp = {x.dim(0), x.dim(1), x.dim(2), x.dim(3), g.kh, g.kw, g.sh, g.padTop, y.dim(2), y.dim(3)};
    }
    return fakeQuantizeSameGridPool(y.values(), x.values(), sp, scale, zeroPoint, qmin, qmax, mask);
}

} // namespace quantscope
