// PoolGeometry: a 2-D pooling window as PyTorch's nn.MaxPool2d / nn.AvgPool2d and ONNX's MaxPool /
// AveragePool describe it: kernel (kh, kw), stride (sh, sw), padding (top, left, bottom, right),
// ceil_mode, and for average pooling count_include_pad. Shared by the layers (nn/maxpool2d.h,
// nn/avgpool2d.h), the stored model, the file formats and the integer engine, so an output size and
// a window's extent are computed in one place.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

namespace quantscope {

struct PoolGeometry {
    std::size_t kh = 1, kw = 1;
    std::size_t sh = 1, sw = 1;
    std::size_t padTop = 0, padLeft = 0, padBottom = 0, padRight = 0;
    // PyTorch's ceil_mode: the output size rounds up, but no window starts in the bottom/right
    // padding (aten/src/ATen/native/Pool.h pooling_output_shape).
    bool ceilMode = false;
    // AvgPool2d: the padding counts in the divisor (PyTorch's default; ONNX's default is 0).
    // Meaningless without padding (normalized() sets it); MaxPool2d keeps it true.
    bool countIncludePad = true;

    // A k x k window, one stride, the same padding on every side, floor output: what every fast
    // kernel runs and what .qsm files before version 6 hold.
    static PoolGeometry square(std::size_t k, std::size_t stride, std::size_t pad)
    {
        PoolGeometry g;
        g.kh = g.kw = k;
        g.sh = g.sw = stride;
        g.padTop = g.padLeft = g.padBottom = g.padRight = pad;
        return g;
    }
    bool padded() const { return padTop || padLeft || padBottom || padRight; }
    bool isSquare() const
    {
        return kh == kw && sh == sw && padTop == padLeft && padTop == padBottom && padTop == padRight && !ceilMode && countIncludePad;
    }
    // count_include_pad only where there is padding to count.
    PoolGeometry normalized() const
    {
        PoolGeometry g = *this;
        if (!g.padded()) g.countIncludePad = true;
        return g;
    }
    std::size_t paddedH(std::size_t H) const { return H + padTop + padBottom; }
    std::size_t paddedW(std::size_t W) const { return W + padLeft + padRight; }
    // Whether an H x W input gives an output of at least one pixel.
    bool fits(std::size_t H, std::size_t W) const { return paddedH(H) >= kh && paddedW(W) >= kw; }
    // Output size along one axis (only where fits()): floor((in + pads - k) / s) + 1, or with
    // ceil_mode ceil(...) + 1, less one when that last window would start in the end padding.
    static std::size_t outSize(std::size_t in, std::size_t k, std::size_t s, std::size_t padBegin, std::size_t padEnd, bool ceil)
    {
        const std::size_t span = in + padBegin + padEnd - k;
        std::size_t o = (ceil ? (span + s - 1) / s : span / s) + 1;
        if (ceil && (o - 1) * s >= in + padBegin) --o;
        return o;
    }
    std::size_t outH(std::size_t H) const { return outSize(H, kh, sh, padTop, padBottom, ceilMode); }
    std::size_t outW(std::size_t W) const { return outSize(W, kw, sw, padLeft, padRight, ceilMode); }
    bool valid() const { return kh && kw && sh && sw; }
    // Every pad at most half its kernel (PyTorch's own limit): every window then holds an input pixel.
    bool padsWithinHalfKernel() const
    {
        return 2 * padTop <= kh && 2 * padBottom <= kh && 2 * padLeft <= kw && 2 * padRight <= kw;
    }
    // The rows [begin, end) of the input that output row o reads (clipped to [0, in)), and the
    // rows of the padded input it covers ([o s - padBegin, min(o s - padBegin + k, in + padEnd))),
    // which PyTorch's average pooling divides by when it counts the padding.
    struct Span {
        std::size_t begin, end; // inside the input
        std::size_t padded;     // covered within input + padding
    };
    static Span span(std::size_t o, std::size_t k, std::size_t s, std::size_t padBegin, std::size_t padEnd, std::size_t in)
    {
        const long start = static_cast<long>(o * s) - static_cast<long>(padBegin);
        const long stop = std::min<long>(start + static_cast<long>(k), static_cast<long>(in + padEnd));
        const long b = std::max<long>(start, 0), e = std::min<long>(stop, static_cast<long>(in));
        return {static_cast<std::size_t>(b), static_cast<std::size_t>(std::max(b, e)), static_cast<std::size_t>(stop - start)};
    }
    Span rows(std::size_t oy, std::size_t H) const { return span(oy, kh, sh, padTop, padBottom, H); }
    Span cols(std::size_t ox, std::size_t W) const { return span(ox, kw, sw, padLeft, padRight, W); }
    // The divisor of average pooling's window (r, c): its size within input + padding
    // (countIncludePad, PyTorch's count_include_pad) or within the input alone.
    std::size_t divisor(const Span& r, const Span& c) const
    {
        return countIncludePad ? r.padded * c.padded : (r.end - r.begin) * (c.end - c.begin);
    }
    // Calls f(o, r, c) for every window over an H x W plane in output order: o = oy outW(W) + ox,
    // r = rows(oy, H), c = cols(ox, W). The pooling layers' general (any window) plane loops.
    template <typename F>
    void forEachWindow(std::size_t H, std::size_t W, F&& f) const
    {
        const std::size_t Ho = outH(H), Wo = outW(W);
        for (std::size_t oy = 0; oy < Ho; ++oy) {
            const Span r = rows(oy, H);
            for (std::size_t ox = 0; ox < Wo; ++ox) f(oy * Wo + ox, r, cols(ox, W));
        }
    }
    // "3x2 stride 2x1 pad 1,0,1,0 ceil" (stride as one number when both agree; padding
    // top,left,bottom,right; "ceil" for ceil_mode, "pad not counted" for count_include_pad = 0).
    std::string text() const
    {
        std::string s = std::to_string(kh) + "x" + std::to_string(kw) + " stride " +
                        (sh == sw ? std::to_string(sh) : std::to_string(sh) + "x" + std::to_string(sw)) + " pad " +
                        std::to_string(padTop) + "," + std::to_string(padLeft) + "," + std::to_string(padBottom) + "," +
                        std::to_string(padRight);
        if (ceilMode) s += " ceil";
        if (!countIncludePad) s += " pad not counted";
        return s;
    }
    bool operator==(const PoolGeometry&) const = default;
};

} // namespace quantscope
