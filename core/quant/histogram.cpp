#include "quant/histogram.h"

#include <algorithm>
#include <cmath>

namespace quantscope {

std::vector<double> uniformEdges(double lo, double hi, std::size_t bins)
{
    if (!(hi > lo)) {
        lo -= 0.5;
        hi = lo + 1.0;
    }
    bins = std::max<std::size_t>(bins, 1);
    std::vector<double> e(bins + 1);
    for (std::size_t i = 0; i <= bins; ++i) e[i] = lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(bins);
    return e;
}

std::vector<double> integerGridEdges(double scale, double lo, double hi, std::size_t maxBins)
{
    if (!(scale > 0.0) || !std::isfinite(lo) || !std::isfinite(hi)) return uniformEdges(lo, hi, maxBins);
    // Level offsets relative to the zero point: x ~ k * scale.
    const double klo = std::nearbyint(lo / scale), khi = std::max(klo, std::nearbyint(hi / scale));
    const double levels = khi - klo + 1.0;
    const double merge = std::ceil(levels / static_cast<double>(std::max<std::size_t>(maxBins, 1)));
    const std::size_t bins = static_cast<std::size_t>(std::ceil(levels / merge));
    std::vector<double> e(bins + 1);
    for (std::size_t i = 0; i <= bins; ++i) e[i] = (klo - 0.5 + static_cast<double>(i) * merge) * scale;
    return e;
}

namespace {

// Non-negative finite values of a Float format, ascending.
std::vector<double> positiveGrid(const NumberFormat& f)
{
    std::vector<double> v;
    const int bias = (1 << (f.expBits - 1)) - 1;
    for (int E = 0; E < (1 << f.expBits); ++E)
        for (int M = 0; M < (1 << f.manBits); ++M) {
            const double frac = static_cast<double>(M) / static_cast<double>(1 << f.manBits);
            const double x = E == 0 ? std::ldexp(frac, 1 - bias) : std::ldexp(1.0 + frac, E - bias);
            if (x <= f.maxFinite) v.push_back(x);
        }
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

} // namespace

std::vector<double> floatGridEdges(const NumberFormat& f, double lo, double hi, std::size_t maxBins)
{
    if (f.kind != FormatKind::Float || f.bits > 8 || !std::isfinite(lo) || !std::isfinite(hi))
        return uniformEdges(lo, hi, maxBins);
    const std::vector<double> pos = positiveGrid(f);
    std::vector<double> grid;
    for (auto it = pos.rbegin(); it != pos.rend(); ++it)
        if (*it > 0.0) grid.push_back(-*it);
    grid.insert(grid.end(), pos.begin(), pos.end());
    // Grid points nearest to lo and hi, and everything between.
    auto first = std::lower_bound(grid.begin(), grid.end(), lo);
    if (first != grid.begin() && (first == grid.end() || *first - lo > lo - *(first - 1))) --first;
    auto last = std::upper_bound(grid.begin(), grid.end(), hi);
    if (last != grid.begin() && (last == grid.end() || hi - *(last - 1) < *last - hi)) --last;
    if (last == grid.end()) --last;
    if (first > last) first = last;
    std::vector<double> pts(first, last + 1);
    if (pts.size() > maxBins) return uniformEdges(lo, hi, maxBins);
    std::vector<double> e;
    e.reserve(pts.size() + 1);
    if (pts.size() == 1) {
        const double w = pts[0] == 0.0 ? 0.5 : std::abs(pts[0]) * 0.125;
        return {pts[0] - w, pts[0] + w};
    }
    e.push_back(pts[0] - (pts[1] - pts[0]) / 2.0);
    for (std::size_t i = 0; i + 1 < pts.size(); ++i) e.push_back((pts[i] + pts[i + 1]) / 2.0);
    e.push_back(pts.back() + (pts.back() - pts[pts.size() - 2]) / 2.0);
    return e;
}

std::vector<std::uint64_t> histogram(std::span<const float> x, const std::vector<double>& edges)
{
    const std::size_t bins = edges.size() > 1 ? edges.size() - 1 : 0;
    std::vector<std::uint64_t> h(bins, 0);
    if (bins == 0) return h;
    const double e0 = edges.front(), width = (edges.back() - e0) / static_cast<double>(bins);
    bool uniform = width > 0.0;
    for (std::size_t i = 1; uniform && i < bins; ++i)
        uniform = std::abs(edges[i] - (e0 + width * static_cast<double>(i))) <= 1e-6 * width;
    const auto last = static_cast<std::ptrdiff_t>(bins) - 1;
    for (float f : x) {
        if (!std::isfinite(f)) continue; // +-inf and NaN are counted apart (LayerStats::nonFinite)
        const double v = f;
        std::ptrdiff_t b;
        if (uniform) {
            // Arithmetic guess, then settle against the actual edges (exact at bin boundaries).
            b = static_cast<std::ptrdiff_t>(std::clamp(std::floor((v - e0) / width), 0.0, static_cast<double>(last)));
            while (b > 0 && v < edges[static_cast<std::size_t>(b)]) --b;
            while (b < last && v >= edges[static_cast<std::size_t>(b) + 1]) ++b;
        } else {
            b = std::upper_bound(edges.begin() + 1, edges.end() - 1, v) - (edges.begin() + 1);
        }
        ++h[static_cast<std::size_t>(b)];
    }
    return h;
}

} // namespace quantscope
