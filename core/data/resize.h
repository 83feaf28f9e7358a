// Resizing 8-bit images for datasets whose images differ in size (--resize HxW). Separable:
// each axis shrinks by area averaging (box filter with fractional coverage, OpenCV's INTER_AREA)
// and grows by bilinear interpolation with half-pixel centres (PyTorch's align_corners=False).
#pragma once

#include <cstddef>
#include <cstdint>

namespace quantscope {

// src: (srcH, srcW, C) interleaved bytes; dst: (dstH, dstW, C). Same size copies. Results are
// rounded to the nearest byte. A constant image stays constant; halving averages 2x2 blocks.
void resizeImage(const std::uint8_t* src, std::size_t srcH, std::size_t srcW, std::size_t channels, std::uint8_t* dst,
                 std::size_t dstH, std::size_t dstW);

} // namespace quantscope
