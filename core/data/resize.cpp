#include "data/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace quantscope {

namespace {

// Output index o of one axis reads src[first + k] * weight[k] for k < taps.
struct AxisTaps {
    std::vector<std::size_t> first, count;
    std::vector<std::vector<float>> weights;
};

AxisTaps axisTaps(std::size_t in, std::size_t out)
{
    AxisTaps t;
    t.first.resize(out);
    t.count.resize(out);
    t.weights.resize(out);
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (std::size_t o = 0; o < out; ++o) {
        std::vector<float>& w = t.weights[o];
        if (scale > 1.0) {
            // area: output pixel o covers [o*scale, (o+1)*scale) of the input
            const double a = static_cast<double>(o) * scale, b = a + scale;
            const auto i0 = static_cast<std::size_t>(std::floor(a));
            const auto i1 = std::min(in, static_cast<std::size_t>(std::ceil(b)));
            t.first[o] = i0;
            for (std::size_t i = i0; i < i1; ++i) {
                const double cover = std::min(b, static_cast<double>(i + 1)) - std::max(a, static_cast<double>(i));
                w.push_back(static_cast<float>(cover / scale));
            }
        } else {
            // bilinear: centre of output pixel o maps to input coordinate (o + 0.5) * scale - 0.5
            const double x = std::clamp((static_cast<double>(o) + 0.5) * scale - 0.5, 0.0, static_cast<double>(in - 1));
            const auto i0 = static_cast<std::size_t>(std::floor(x));
            const std::size_t i1 = std::min(i0 + 1, in - 1);
            const auto f = static_cast<float>(x - static_cast<double>(i0));
            t.first[o] = i0;
            w.push_back(1.0f - f);
            if (i1 != i0) w.push_back(f);
        }
        t.count[o] = w.size();
    }
    return t;
}

} // namespace

void resizeImage(const std::uint8_t* src, std::size_t srcH, std::size_t srcW, std::size_t C, std::uint8_t* dst,
                 std::size_t dstH, std::size_t dstW)
{
    if (srcH == dstH && srcW == dstW) {
        std::memcpy(dst, src, srcH * srcW * C);
        return;
    }
    const AxisTaps tx = axisTaps(srcW, dstW), ty = axisTaps(srcH, dstH);
    // rows: (srcH, dstW, C) in float, then columns into dst
    std::vector<float> rows(srcH * dstW * C, 0.0f);
    for (std::size_t y = 0; y < srcH; ++y)
        for (std::size_t ox = 0; ox < dstW; ++ox) {
            float* r = &rows[(y * dstW + ox) * C];
            for (std::size_t k = 0; k < tx.count[ox]; ++k) {
                const std::uint8_t* s = src + (y * srcW + tx.first[ox] + k) * C;
                for (std::size_t c = 0; c < C; ++c) r[c] += tx.weights[ox][k] * static_cast<float>(s[c]);
            }
        }
    std::vector<float> acc(C);
    for (std::size_t oy = 0; oy < dstH; ++oy)
        for (std::size_t ox = 0; ox < dstW; ++ox) {
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (std::size_t k = 0; k < ty.count[oy]; ++k) {
                const float* r = &rows[((ty.first[oy] + k) * dstW + ox) * C];
                for (std::size_t c = 0; c < C; ++c) acc[c] += ty.weights[oy][k] * r[c];
            }
            std::uint8_t* d = dst + (oy * dstW + ox) * C;
            for (std::size_t c = 0; c < C; ++c) d[c] = static_cast<std::uint8_t>(std::clamp(std::lround(acc[c]), 0L, 255L));
        }
}

} // namespace quantscope
