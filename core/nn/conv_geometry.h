// ConvGeometry: a 2-D convolution's window, as PyTorch's nn.Conv2d and ONNX's Conv describe it:
// kernel (kh, kw), stride (sh, sw), zero padding (top, left, bottom, right) and dilation (dh, dw).
// Shared by the layer (nn/conv2d.h), the stored model (io/exported_model.h), the file formats and
// the integer engine, so an output size is computed in one place.
#pragma once

#include <cstddef>
#include <string>

namespace quantscope {

struct ConvGeometry {
    std::size_t kh = 1, kw = 1;
    std::size_t sh = 1, sw = 1;
    std::size_t padTop = 0, padLeft = 0, padBottom = 0, padRight = 0;
    std::size_t dh = 1, dw = 1;

    // A k x k window, one stride, the same padding on every side, no dilation: what every fast
    // kernel runs and what .qsm and the presets have always held.
    static ConvGeometry square(std::size_t k, std::size_t stride, std::size_t pad)
    {
        return {k, k, stride, stride, pad, pad, pad, pad, 1, 1};
    }
    bool isSquare() const
    {
        return kh == kw && sh == sw && padTop == padLeft && padTop == padBottom && padTop == padRight && dh == 1 && dw == 1;
    }
    bool isDilated() const { return dh != 1 || dw != 1; }
    // The rows (columns) one output reads: dilation (k - 1) + 1.
    std::size_t spanH() const { return dh * (kh - 1) + 1; }
    std::size_t spanW() const { return dw * (kw - 1) + 1; }
    std::size_t paddedH(std::size_t H) const { return H + padTop + padBottom; }
    std::size_t paddedW(std::size_t W) const { return W + padLeft + padRight; }
    // Whether an H x W input gives an output of at least one pixel.
    bool fits(std::size_t H, std::size_t W) const { return paddedH(H) >= spanH() && paddedW(W) >= spanW(); }
    // Output size, floor((H + top + bottom - span) / stride) + 1; only where fits().
    std::size_t outH(std::size_t H) const { return (paddedH(H) - spanH()) / sh + 1; }
    std::size_t outW(std::size_t W) const { return (paddedW(W) - spanW()) / sw + 1; }
    std::size_t taps() const { return kh * kw; }
    // Every field positive where it must be (kernel, stride, dilation).
    bool valid() const { return kh && kw && sh && sw && dh && dw; }
    // "k 1x7 s 1 p 0,3,0,3 d 1" (stride and dilation as one number when both directions agree;
    // padding top,left,bottom,right).
    std::string text() const
    {
        const auto pair = [](std::size_t a, std::size_t b) {
            return a == b ? std::to_string(a) : std::to_string(a) + "x" + std::to_string(b);
        };
        return "k " + std::to_string(kh) + "x" + std::to_string(kw) + " s " + pair(sh, sw) + " p " + std::to_string(padTop) +
               "," + std::to_string(padLeft) + "," + std::to_string(padBottom) + "," + std::to_string(padRight) + " d " +
               pair(dh, dw);
    }
    bool operator==(const ConvGeometry&) const = default;
};

// The output positions o in [0, outSize) whose input position o * stride + offset - pad lies
// inside [0, inSize): [lo, hi) (offset = k * dilation for kernel tap k). The im2col/col2im
// loops of the square and the general convolution copy only that span and zero the rest.
struct OutputSpan {
    std::size_t lo, hi;
};
inline OutputSpan validOutputSpan(std::size_t inSize, std::size_t outSize, std::size_t offset, std::size_t stride, std::size_t pad)
{
    std::size_t lo = 0;
    if (pad > offset) lo = (pad - offset + stride - 1) / stride;
    const long top = static_cast<long>(inSize) - 1 + static_cast<long>(pad) - static_cast<long>(offset);
    std::size_t hi = top < 0 ? 0 : static_cast<std::size_t>(top) / stride + 1;
    if (hi > outSize) hi = outSize;
    if (lo > hi) lo = hi;
    return {lo, hi};
}

} // namespace quantscope
