// Rounding FP32 values to the float-like formats of the table: fp16, bf16, fp8 (E4M3, E5M2) and
// the OCP Microscaling formats (mxint8, mxfp8-e4m3, mxfp4), where each block of 32 consecutive
// values shares a power-of-two scale X = 2^(floor(log2(amax)) - emax_elem) (OCP MX spec v1.0).
//
// roundFloat is the scalar reference; roundToFormat is the fast in-place kernel (F16C / bit
// tricks / vectorised loops, TBB over large spans) and is tested against roundToFormatRef.
#pragma once

#include "quant/format.h"
#include "quant/rounding.h"

#include <cstdint>
#include <span>
#include <vector>

namespace quantscope {

// Scalar reference: x rounded to the element grid of f. Float: IEEE-like rounding with
// subnormals; overflow goes to inf (hasInf), to +-maxFinite (saturating) or NaN; NaN stays NaN;
// the sign of zero is kept. MX formats: rounds to the element format with scale 1. Fp32 returns
// x. Int formats throw ConfigError (they need a scale: see quantize.h). `randomBits` is used by
// Rounding::Stochastic only.
float roundFloat(float x, const NumberFormat& f, Rounding r, std::uint64_t randomBits = 0);

// In place, fast. Element i (index within the span) draws its random bits from
// elementBits(rngKey, i). MX formats work on consecutive blocks of f.blockSize values, which
// restart at every row of rowLength values (the last block of a row may be shorter; 0: the span
// is one row). A weight's rows are its output channels, so that blocks run along the dot
// product's reduction axis as OCP MX v1.0 and microxcaling take them (mxRowLength). Fp32: no-op.
// Int formats: throws ConfigError.
void roundToFormat(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey = 0, std::size_t rowLength = 0);
// roundToFormat, and true when every rounded value is finite: each chunk is checked right after
// it is rounded, while it is still in cache (mixed precision's overflow check of a gradient).
// scale != 1: each chunk is then multiplied by scale too, after its check (x = round(x) * scale,
// the same bits as roundToFormat followed by a pass of x *= scale; the loss scaler's unscale).
bool roundToFormatAllFinite(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey = 0,
                            float scale = 1.0f, std::size_t rowLength = 0);
// True when no element is inf or NaN (an exponent-field test, vectorised; no TBB).
bool allFiniteSpan(const float* x, std::size_t n);

// Scalar twin of roundToFormat (one roundFloat per element; MX blocks via mxBlockScale).
void roundToFormatRef(std::span<float> x, const NumberFormat& f, Rounding r, std::uint64_t rngKey = 0, std::size_t rowLength = 0);

// The MX row of a tensor of this shape: a weight's (out, in) or (out, in/groups, kh, kw) rows are
// its output channels (in or in/groups kh kw values, the reduction axis), an activation's
// (N, ...) its images; 0 (one row) for a vector or scalar.
inline std::size_t mxRowLength(const std::vector<std::size_t>& shape)
{
    if (shape.size() < 2 || shape[0] == 0) return 0;
    std::size_t n = 1;
    for (std::size_t i = 1; i < shape.size(); ++i) n *= shape[i];
    return n;
}

// The shared scale of one MX block: 2^(floor(log2(max|x|)) - maxExponent(f)), the exponent clamped
// to E8M0's [-127, 127]; 1 for an all-zero block, NaN when the block holds inf or NaN.
float mxBlockScale(std::span<const float> block, const NumberFormat& f);
// One scale per block of f.blockSize consecutive values of x, blocks restarting at every row of
// rowLength values (0: one row), row by row.
std::vector<float> mxBlockScales(std::span<const float> x, const NumberFormat& f, std::size_t rowLength = 0);

} // namespace quantscope
