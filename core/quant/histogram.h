// Histogram bins aligned to a quantization grid, for LayerStats: an integer grid (bin edges
// halfway between levels, levels merged when there are more than maxBins), the representable
// values of a small float format (edges halfway between neighbours), or uniform bins.
#pragma once

#include "quant/format.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace quantscope {

inline constexpr std::size_t kMaxHistogramBins = 256;

// The grid x = (q - zp) * scale, i.e. the multiples k * scale, over [lo, hi]: edges at
// (k +- 0.5) * scale, ceil(levels / maxBins) neighbouring levels merged into one bin.
std::vector<double> integerGridEdges(double scale, double lo, double hi, std::size_t maxBins = kMaxHistogramBins);
// Representable values of a Float format (<= 8 bits) covering [lo, hi]; edges halfway between
// neighbours. Falls back to uniform bins for wider formats (too many values to show one each).
std::vector<double> floatGridEdges(const NumberFormat& f, double lo, double hi,
                                   std::size_t maxBins = kMaxHistogramBins);
// `bins` equal bins over [lo, hi] (widened to +-0.5 around lo when lo == hi).
std::vector<double> uniformEdges(double lo, double hi, std::size_t bins = kMaxHistogramBins);

// Counts of x per bin (edges.size() - 1 bins). Values below the first edge count in the first
// bin, values above the last in the last; +-inf and NaN are skipped.
std::vector<std::uint64_t> histogram(std::span<const float> x, const std::vector<double>& edges);

} // namespace quantscope
