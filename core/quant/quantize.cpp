#include "quant/quantize.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

namespace quantscope {

// ---- layout ----------------------------------------------------------------------------------

std::size_t QuantParams::groupsPerRow() const
{
    if (rowLength == 0) return 1;
    const std::size_t s = slotLength ? slotLength : rowLength;
    return (rowLength + s - 1) / s;
}

std::size_t QuantParams::slotOf(std::size_t i) const
{
    if (scale.size() <= 1) return 0;
    const std::size_t s = slotLength ? slotLength : rowLength;
    return (i / rowLength) * groupsPerRow() + (i % rowLength) / s;
}

float QuantParams::clipLow(std::size_t slot) const
{
    return static_cast<float>(qmin - zeroPoint.at(slot)) * scale.at(slot);
}

float QuantParams::clipHigh(std::size_t slot) const
{
    return static_cast<float>(qmax - zeroPoint.at(slot)) * scale.at(slot);
}

void QuantParams::validate(std::size_t n) const
{
    if (scale.empty()) throw ConfigError("quantization parameters have no scale");
    if (zeroPoint.size() != scale.size())
        throw ConfigError("quantization parameters: " + std::to_string(scale.size()) + " scales but " +
                          std::to_string(zeroPoint.size()) + " zero points");
    if (qmin >= qmax) throw ConfigError("quantization parameters: empty integer range");
    if (scale.size() == 1) return;
    if (rowLength == 0 || n % rowLength != 0 || slotCount(n, rowLength, slotLength) != scale.size())
        throw ConfigError("quantization parameters: " + std::to_string(scale.size()) + " scales do not fit a tensor of " +
                          std::to_string(n) + " elements with rows of " + std::to_string(rowLength) +
                          " and slots of " + std::to_string(slotLength));
}

std::size_t slotCount(std::size_t n, std::size_t rowLength, std::size_t slotLength)
{
    if (rowLength == 0 || n == 0) return 1;
    const std::size_t s = slotLength ? slotLength : rowLength;
    return (n / rowLength) * ((rowLength + s - 1) / s);
}

QuantParams perTensorParams(float scale, std::int32_t zeroPoint, int qmin, int qmax)
{
    QuantParams p;
    p.scale = {scale};
    p.zeroPoint = {zeroPoint};
    p.qmin = qmin;
    p.qmax = qmax;
    return p;
}

QuantParams perRowParams(std::vector<float> scales, std::vector<std::int32_t> zeroPoints, int qmin, int qmax,
                         std::size_t rowLength)
{
    return groupParams(std::move(scales), std::move(zeroPoints), qmin, qmax, rowLength, rowLength);
}

QuantParams groupParams(std::vector<float> scales, std::vector<std::int32_t> zeroPoints, int qmin, int qmax,
                        std::size_t rowLength, std::size_t groupSize)
{
    QuantParams p;
    p.scale = std::move(scales);
    p.zeroPoint = std::move(zeroPoints);
    if (p.zeroPoint.empty()) p.zeroPoint.assign(p.scale.size(), 0);
    p.qmin = qmin;
    p.qmax = qmax;
    p.rowLength = rowLength;
    p.slotLength = std::min(groupSize ? groupSize : rowLength, rowLength);
    return p;
}

// ---- scale choice ----------------------------------------------------------------------------

ScaleZeroPoint chooseQParams(float minVal, float maxVal, int qmin, int qmax, bool symmetric)
{
    if (minVal == INFINITY && maxVal == -INFINITY) return {1.0f, 0};
    auto text = [](float v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
        return std::string(buf);
    };
    const std::string range = "[" + text(minVal) + ", " + text(maxVal) + "]";
    if (!std::isfinite(minVal) || !std::isfinite(maxVal))
        throw NumericError("the range " + range + " is not finite, so it has no scale");
    if (qmin >= qmax) throw ConfigError("empty integer range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "]");
    const float minNeg = std::min(minVal, 0.0f);
    const float maxPos = std::max(maxVal, 0.0f);
    // Only an affine grid spans the width; a symmetric one takes max(|min|, |max|), as PyTorch's
    // observers do ([-3e38, 3e38] was refused for int8 symmetric: tester 13).
    if (!symmetric && !std::isfinite(maxPos - minNeg))
        throw NumericError("the range " + range + " is wider than float32 can hold (its width overflows " +
                           text(std::numeric_limits<float>::max()) + "), so its affine scale would be infinite");
    ScaleZeroPoint r;
    if (symmetric) {
        const float m = std::max(-minNeg, maxPos);
        r.scale = std::max(m / (static_cast<float>(qmax - qmin) / 2.0f), kScaleEps);
        r.zeroPoint = qmin < 0 ? 0 : (qmin == 0 && qmax == 255 ? 128 : (qmin + qmax) / 2);
    } else {
        r.scale = std::max((maxPos - minNeg) / static_cast<float>(qmax - qmin), kScaleEps);
        const float zp = static_cast<float>(qmin) - std::nearbyint(minNeg / r.scale);
        r.zeroPoint = static_cast<std::int32_t>(std::clamp(zp, static_cast<float>(qmin), static_cast<float>(qmax)));
    }
    if (!(r.scale >= kScaleEps) || !std::isfinite(r.scale)) // cannot happen after the checks above
        throw NumericError("the range " + range + " gave the scale " + text(r.scale));
    return r;
}

ScaleZeroPoint chooseQParams(float minVal, float maxVal, const NumberFormat& f)
{
    if (f.kind != FormatKind::Int)
        throw ConfigError("number format '" + f.name + "' has no integer grid: it takes no scale or zero point");
    return chooseQParams(minVal, maxVal, f.qmin, f.qmax, f.symmetric);
}

// ---- fake quantization -----------------------------------------------------------------------

float fakeQuantizeValue(float x, float scale, std::int32_t zeroPoint, int qmin, int qmax, bool& passes, Rounding r,
                        std::uint64_t randomBits)
{
    // PyTorch: inv_scale = 1.0f / sc; qval = int64(z_point + nearbyint(x * inv_scale));
    // y = (min(max(qval, qmin), qmax) - z_point) * sc; mask = qmin <= qval <= qmax.
    const float inv = 1.0f / scale;
    const float v = x * inv;
    const float q = static_cast<float>(zeroPoint) + (r == Rounding::Stochastic ? roundStochastic(v, randomBits)
                                                                               : std::nearbyint(v));
    if (std::isnan(q)) {
        passes = false;
        return q;
    }
    passes = q >= static_cast<float>(qmin) && q <= static_cast<float>(qmax);
    const double qc = std::clamp(static_cast<double>(q), static_cast<double>(qmin), static_cast<double>(qmax));
    return static_cast<float>((qc - zeroPoint) * static_cast<double>(scale));
}

float signQuantizeValue(float x, float scale, bool& passes)
{
    if (std::isnan(x)) {
        passes = false;
        return x;
    }
    passes = std::fabs(x) <= scale;
    return x >= 0.0f ? scale : -scale;
}

void fakeQuantizeRef(std::span<const float> x, const QuantParams& p, std::span<float> y,
                     std::span<std::uint8_t> steMask, Rounding r, std::uint64_t rngKey)
{
    p.validate(x.size());
    if (y.size() != x.size() || (!steMask.empty() && steMask.size() != x.size()))
        throw ConfigError("fakeQuantize: output sizes differ from the input");
    for (std::size_t i = 0; i < x.size(); ++i) {
        const std::size_t s = p.slotOf(i);
        bool passes = false;
        if (p.signOnly) {
            y[i] = signQuantizeValue(x[i], p.scale[s], passes);
            if (!steMask.empty()) steMask[i] = passes ? 1 : 0;
            continue;
        }
        y[i] = fakeQuantizeValue(x[i], p.scale[s], p.zeroPoint[s], p.qmin, p.qmax, passes, r, elementBits(rngKey, i));
        if (!steMask.empty()) steMask[i] = passes ? 1 : 0;
    }
}

namespace {

// Calls fn(begin, end, slot) for the runs of [b, e) that share one slot.
template <typename Fn>
void forEachSlotRun(const QuantParams& p, std::size_t b, std::size_t e, Fn&& fn)
{
    if (p.perTensor()) {
        fn(b, e, std::size_t{0});
        return;
    }
    const std::size_t row = p.rowLength, len = p.slotLength ? p.slotLength : row, gpr = p.groupsPerRow();
    std::size_t i = b;
    while (i < e) {
        const std::size_t r = i / row, off = i % row, g = off / len;
        const std::size_t runEnd = std::min(e, r * row + std::min((g + 1) * len, row));
        fn(i, runEnd, r * gpr + g);
        i = runEnd;
    }
}

// One run with one scale. Written so GCC vectorises it (no fmin/fmax: they keep NaN semantics
// that block vectorisation; the selects below let NaN through with mask 0).
template <bool WithMask, bool Stochastic>
void fakeQuantizeRun(const float* x, float* y, std::uint8_t* mask, std::size_t n, float scale, std::int32_t zeroPoint,
                     int qmin, int qmax, std::uint64_t key, std::size_t base)
{
    const float inv = 1.0f / scale;
    const float zp = static_cast<float>(zeroPoint);
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    std::uint32_t rnd[kRandomBlock];
    for (std::size_t b = 0; b < n; b += kRandomBlock) {
        const std::size_t m = std::min(kRandomBlock, n - b);
        if constexpr (Stochastic) randomBits24(key, base + b, rnd, m);
        const float* xb = x + b;
        float* yb = y + b;
        for (std::size_t i = 0; i < m; ++i) {
            const float v = xb[i] * inv;
            float q;
            if constexpr (Stochastic)
                q = roundStochastic24(v, rnd[i]) + zp;
            else
                q = std::nearbyint(v) + zp;
            if constexpr (WithMask) mask[b + i] = static_cast<std::uint8_t>((q >= lo) & (q <= hi));
            q = q < lo ? lo : q;
            q = q > hi ? hi : q;
            yb[i] = (q - zp) * scale;
        }
    }
}

} // namespace

void fakeQuantize(std::span<const float> x, const QuantParams& p, std::span<float> y, std::span<std::uint8_t> steMask,
                  Rounding r, std::uint64_t rngKey)
{
    p.validate(x.size());
    if (y.size() != x.size() || (!steMask.empty() && steMask.size() != x.size()))
        throw ConfigError("fakeQuantize: output sizes differ from the input");
    const std::size_t n = x.size();
    const bool withMask = !steMask.empty(), sto = r == Rounding::Stochastic;
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        forEachSlotRun(p, b, e, [&](std::size_t rb, std::size_t re, std::size_t s) {
            const float* xs = x.data() + rb;
            float* ys = y.data() + rb;
            std::uint8_t* ms = withMask ? steMask.data() + rb : nullptr;
            const std::size_t len = re - rb;
            const float sc = p.scale[s];
            const std::int32_t zp = p.zeroPoint[s];
            if (p.signOnly) {
                for (std::size_t i = 0; i < len; ++i) {
                    bool passes = false;
                    ys[i] = signQuantizeValue(xs[i], sc, passes);
                    if (ms) ms[i] = passes ? 1 : 0;
                }
                return;
            }
            if (withMask)
                sto ? fakeQuantizeRun<true, true>(xs, ys, ms, len, sc, zp, p.qmin, p.qmax, rngKey, rb)
                    : fakeQuantizeRun<true, false>(xs, ys, ms, len, sc, zp, p.qmin, p.qmax, rngKey, rb);
            else
                sto ? fakeQuantizeRun<false, true>(xs, ys, ms, len, sc, zp, p.qmin, p.qmax, rngKey, rb)
                    : fakeQuantizeRun<false, false>(xs, ys, ms, len, sc, zp, p.qmin, p.qmax, rngKey, rb);
        });
    });
}

void quantizeToInt(std::span<const float> x, const QuantParams& p, std::span<std::int32_t> q, Rounding r,
                   std::uint64_t rngKey)
{
    p.validate(x.size());
    if (q.size() != x.size()) throw ConfigError("quantizeToInt: output size differs from the input");
    const std::size_t n = x.size();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        forEachSlotRun(p, b, e, [&](std::size_t rb, std::size_t re, std::size_t s) {
            const float inv = 1.0f / p.scale[s];
            const float zp = static_cast<float>(p.zeroPoint[s]);
            const float lo = static_cast<float>(p.qmin), hi = static_cast<float>(p.qmax);
            if (p.signOnly) {
                for (std::size_t i = rb; i < re; ++i) q[i] = std::isnan(x[i]) ? 0 : (x[i] >= 0.0f ? 1 : -1);
                return;
            }
            for (std::size_t i = rb; i < re; ++i) {
                const float v = x[i] * inv;
                float qf = (r == Rounding::Stochastic ? roundStochastic(v, elementBits(rngKey, i)) : std::nearbyint(v)) + zp;
                qf = std::isnan(qf) ? zp : std::clamp(qf, lo, hi);
                q[i] = static_cast<std::int32_t>(qf);
            }
        });
    });
}

void dequantize(std::span<const std::int32_t> q, const QuantParams& p, std::span<float> x)
{
    p.validate(q.size());
    if (q.size() != x.size()) throw ConfigError("dequantize: output size differs from the input");
    const std::size_t n = q.size();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        forEachSlotRun(p, b, e, [&](std::size_t rb, std::size_t re, std::size_t s) {
            const float sc = p.scale[s];
            const std::int32_t zp = p.zeroPoint[s];
            for (std::size_t i = rb; i < re; ++i) x[i] = static_cast<float>(q[i] - zp) * sc;
        });
    });
}

} // namespace quantscope
