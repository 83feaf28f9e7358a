#include "quant/observer.h"

#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr std::size_t kSampleBudget = std::size_t{1} << 18; // values kept over all slots
constexpr std::size_t kMinSlotSample = 256;
constexpr std::size_t kMaxSlotSample = 16384;
constexpr std::uint32_t kKeepAll = 1u << 24;

// min/max of a run over the finite values; returns how many were not finite (+-inf, NaN), which
// are skipped and counted (PyTorch's observers do not skip them: an infinity gives an infinite
// scale there, a NaN an assertion). 16 independent lanes so GCC vectorises it.
std::size_t runMinMax(const float* x, std::size_t n, float& mn, float& mx)
{
    constexpr std::size_t L = 16;
    constexpr float kMax = std::numeric_limits<float>::max();
    float lmin[L], lmax[L];
    std::uint32_t bad[L];
    for (std::size_t l = 0; l < L; ++l) {
        lmin[l] = kInf;
        lmax[l] = -kInf;
        bad[l] = 0;
    }
    std::size_t i = 0;
#if defined(__AVX512F__)
    // Explicit vectors: GCC 12's loop kept lmax on the stack behind a branch (2.3 % of resnet8's
    // QAT step). vminps/vmaxps return their second operand when the values are equal (+0 and -0)
    // and the lanes that are not finite are left alone: the scalar rule's results, bit for bit.
    {
        const __m512 absMask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF)), big = _mm512_set1_ps(kMax);
        __m512 vmin = _mm512_set1_ps(kInf), vmax = _mm512_set1_ps(-kInf);
        std::size_t nonFinite = 0;
        for (; i + L <= n; i += L) {
            const __m512 v = _mm512_loadu_ps(x + i);
            const __mmask16 fin = _mm512_cmp_ps_mask(_mm512_and_ps(v, absMask), big, _CMP_LE_OQ);
            vmin = _mm512_mask_min_ps(vmin, fin, v, vmin);
            vmax = _mm512_mask_max_ps(vmax, fin, v, vmax);
            nonFinite += static_cast<std::size_t>(16 - __builtin_popcount(static_cast<unsigned>(fin)));
        }
        _mm512_storeu_ps(lmin, vmin);
        _mm512_storeu_ps(lmax, vmax);
        bad[0] = static_cast<std::uint32_t>(nonFinite);
    }
#endif
    for (; i + L <= n; i += L)
        for (std::size_t l = 0; l < L; ++l) {
            const float v = x[i + l];
            const bool finite = std::fabs(v) <= kMax; // false for NaN and +-inf
            lmin[l] = finite && v < lmin[l] ? v : lmin[l];
            lmax[l] = finite && v > lmax[l] ? v : lmax[l];
            bad[l] += finite ? 0u : 1u;
        }
    std::size_t skipped = 0;
    for (; i < n; ++i) {
        if (!(std::fabs(x[i]) <= kMax)) {
            ++skipped;
            continue;
        }
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    for (std::size_t l = 0; l < L; ++l) {
        mn = lmin[l] < mn ? lmin[l] : mn;
        mx = lmax[l] > mx ? lmax[l] : mx;
        skipped += bad[l];
    }
    return skipped;
}

// Sum of squared fake-quantization errors of x[0..n) with one scale. 16 float lanes (vectorised),
// summed in double at the end: enough to rank clipping candidates.
double quantizationSse(const float* x, std::size_t n, float inv, float scale, float zp, float qmin, float qmax)
{
    constexpr std::size_t L = 16;
    float acc[L] = {};
    std::size_t i = 0;
    for (; i + L <= n; i += L)
        for (std::size_t l = 0; l < L; ++l) {
            const float v = x[i + l];
            float q = std::nearbyint(v * inv) + zp;
            q = q < qmin ? qmin : q;
            q = q > qmax ? qmax : q;
            const float d = v - (q - zp) * scale;
            acc[l] += d * d;
        }
    double sum = 0.0;
    for (; i < n; ++i) {
        float q = std::nearbyint(x[i] * inv) + zp;
        q = q < qmin ? qmin : (q > qmax ? qmax : q);
        const double d = static_cast<double>(x[i]) - static_cast<double>((q - zp) * scale);
        sum += d * d;
    }
    for (float a : acc) sum += a;
    return sum;
}

// PyTorch: min_val + averaging_constant * (min_val_cur - min_val), as three rounded float ops
// (no fused multiply-add, which -march=native would otherwise allow).
#if defined(__GNUC__) && !defined(__clang__)
#define QS_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define QS_NO_FP_CONTRACT // clang contracts only within one statement by default
#endif
QS_NO_FP_CONTRACT float movingAverage(float running, float current, float constant)
{
    const float delta = current - running;
    const float step = constant * delta;
    return running + step;
}

std::uint32_t positionKey(std::size_t slot, std::uint64_t position)
{
    return static_cast<std::uint32_t>(elementBits(splitmix64(slot + 0x5EEDull), position) >> 40);
}

// numpy-style linear interpolation between order statistics; v is reordered.
float percentileOf(std::vector<float>& v, double p)
{
    if (v.empty()) return 0.0f;
    const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(v.size() - 1);
    const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
    const std::size_t hi = std::min(lo + 1, v.size() - 1);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
    const float a = v[lo];
    float b = a;
    if (hi != lo) b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, v.end());
    return static_cast<float>(a + (pos - static_cast<double>(lo)) * (static_cast<double>(b) - a));
}

} // namespace

Calibration parseCalibration(const std::string& name)
{
    if (name == "minmax") return Calibration::MinMax;
    if (name == "moving-average") return Calibration::MovingAverage;
    if (name == "percentile") return Calibration::Percentile;
    if (name == "mse") return Calibration::Mse;
    throw ConfigError("unknown calibration '" + name + "' (known: minmax, moving-average, percentile, mse)");
}

const char* calibrationName(Calibration c)
{
    switch (c) {
    case Calibration::MinMax: return "minmax";
    case Calibration::MovingAverage: return "moving-average";
    case Calibration::Percentile: return "percentile";
    case Calibration::Mse: return "mse";
    }
    return "?";
}

RangeObserver::RangeObserver(Calibration c, std::size_t numSlots, std::size_t rowLength, std::size_t slotLength,
                             float percentile)
    : m_calibration(c), m_rowLength(rowLength), m_slotLength(slotLength ? slotLength : rowLength),
      m_percentile(percentile)
{
    if (numSlots == 0) throw ConfigError("an observer needs at least one slot");
    if (numSlots > 1 && rowLength == 0) throw ConfigError("an observer with several slots needs a row length");
    if (!(percentile > 0.0f && percentile <= 100.0f)) throw ConfigError("percentile must be in (0, 100]");
    m_sampleCap = std::clamp(kSampleBudget / numSlots, kMinSlotSample, kMaxSlotSample);
    m_min.assign(numSlots, kInf);
    m_max.assign(numSlots, -kInf);
    if (c == Calibration::Percentile || c == Calibration::Mse) m_samples.resize(numSlots);
}

void RangeObserver::setAveragingConstant(float c)
{
    if (!(c > 0.0f && c <= 1.0f)) throw ConfigError("averaging constant " + std::to_string(c) + " is not in (0, 1]");
    m_averagingConstant = c;
}

void RangeObserver::reset()
{
    std::fill(m_min.begin(), m_min.end(), kInf);
    std::fill(m_max.begin(), m_max.end(), -kInf);
    for (auto& s : m_samples) s = Sample{};
    m_batches = 0;
    m_nonFinite = 0;
}

void RangeObserver::updateSlot(std::size_t slot, float batchMin, float batchMax)
{
    if (batchMin == kInf && batchMax == -kInf) return; // nothing (or only NaN) in this batch
    float& mn = m_min[slot];
    float& mx = m_max[slot];
    if (m_calibration == Calibration::MovingAverage && !(mn == kInf && mx == -kInf)) {
        mn = movingAverage(mn, batchMin, m_averagingConstant);
        mx = movingAverage(mx, batchMax, m_averagingConstant);
    } else {
        mn = std::min(mn, batchMin);
        mx = std::max(mx, batchMax);
    }
}

void RangeObserver::addToSample(std::size_t slot, const float* x, std::size_t n)
{
    Sample& s = m_samples[slot];
    auto shrink = [&](std::uint32_t threshold) {
        s.threshold = threshold;
        std::size_t k = 0;
        for (std::size_t j = 0; j < s.values.size(); ++j)
            if (s.keys[j] < threshold) {
                s.values[k] = s.values[j];
                s.keys[k] = s.keys[j];
                ++k;
            }
        s.values.resize(k);
        s.keys.resize(k);
    };
    // Lower the threshold up front so a large batch is not copied whole first.
    std::uint32_t t = s.threshold;
    while (t > 1 && (static_cast<double>(s.values.size()) * t / s.threshold + static_cast<double>(n) * t / kKeepAll) >
                        static_cast<double>(m_sampleCap))
        t /= 2;
    if (t != s.threshold) shrink(t);
    for (std::size_t j = 0; j < n; ++j) {
        if (!std::isfinite(x[j])) continue;
        const std::uint32_t key = positionKey(slot, s.seen + j);
        if (key < s.threshold) {
            s.values.push_back(x[j]);
            s.keys.push_back(key);
        }
    }
    s.seen += n;
    while (s.values.size() > m_sampleCap && s.threshold > 1) shrink(s.threshold / 2);
}

std::size_t finiteMinMax(const float* x, std::size_t n, float& mn, float& mx)
{
    float a = kInf, b = -kInf;
    const std::size_t bad = runMinMax(x, n, a, b);
    mn = std::min(mn, a);
    mx = std::max(mx, b);
    return bad;
}

void RangeObserver::observeBatchRange(float batchMin, float batchMax, std::size_t nonFinite)
{
    if (!takesBatchRange()) throw std::logic_error("observer " + m_name + ": a batch range needs one slot and no sample");
    m_nonFinite += nonFinite;
    if (batchMin <= batchMax) ++m_batches; // a finite value came in
    updateSlot(0, batchMin, batchMax);
}

void RangeObserver::observe(std::span<const float> x)
{
    const std::span<const float> parts[1] = {x};
    observe(std::span<const std::span<const float>>(parts, 1));
}

void RangeObserver::observe(std::span<const std::span<const float>> parts)
{
    const std::size_t slots = m_min.size();
    if (slots == 1) {
        float bmin = kInf, bmax = -kInf;
        for (const auto& x : parts) {
            const std::size_t n = x.size();
            const std::size_t grain = elementwiseGrain(n);
            const std::size_t chunks = n ? (n + grain - 1) / grain : 0;
            std::vector<float> cmin(chunks, kInf), cmax(chunks, -kInf);
            std::vector<std::size_t> cbad(chunks, 0);
            parallelChunks(n, grain, [&](std::size_t b, std::size_t e) {
                cbad[b / grain] = runMinMax(x.data() + b, e - b, cmin[b / grain], cmax[b / grain]);
            });
            for (std::size_t c = 0; c < chunks; ++c) {
                bmin = std::min(bmin, cmin[c]);
                bmax = std::max(bmax, cmax[c]);
                m_nonFinite += cbad[c];
            }
            if (!m_samples.empty()) addToSample(0, x.data(), n);
        }
        if (bmin <= bmax) ++m_batches; // a finite value came in
        updateSlot(0, bmin, bmax);
        return;
    }
    if (parts.size() != 1)
        throw ConfigError("an observer with several slots observes one tensor at a time");
    const std::span<const float> x = parts[0];
    const std::size_t row = m_rowLength, len = m_slotLength, gpr = (row + len - 1) / len;
    if (x.size() % row != 0 || (x.size() / row) * gpr != slots)
        throw ConfigError("observer: a tensor of " + std::to_string(x.size()) + " values does not fit " +
                          std::to_string(slots) + " slots of rows of " + std::to_string(row));
    const std::size_t rows = x.size() / row;
    std::vector<float> bmin(slots, kInf), bmax(slots, -kInf);
    std::vector<std::size_t> bad(slots, 0);
    parallelChunks(rows, std::max<std::size_t>(1, 16384 / row), [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t g = 0; g < gpr; ++g) {
                const std::size_t b = r * row + g * len, n = std::min(len, row - g * len), s = r * gpr + g;
                bad[s] = runMinMax(x.data() + b, n, bmin[s], bmax[s]);
                if (!m_samples.empty()) addToSample(s, x.data() + b, n);
            }
    });
    bool any = false;
    for (std::size_t s = 0; s < slots; ++s) {
        any = any || bmin[s] <= bmax[s];
        m_nonFinite += bad[s];
        updateSlot(s, bmin[s], bmax[s]);
    }
    if (any) ++m_batches;
}

std::vector<float> RangeObserver::sampleWithExtremes(std::size_t slot) const
{
    const Sample& s = m_samples[slot];
    std::vector<float> v = s.values;
    if (s.threshold < kKeepAll && m_min[slot] <= m_max[slot]) {
        v.push_back(m_min[slot]);
        v.push_back(m_max[slot]);
    }
    return v;
}

void RangeObserver::percentileRange(std::size_t slot, bool symmetric, float& lo, float& hi) const
{
    std::vector<float> v = sampleWithExtremes(slot);
    if (v.empty()) return;
    if (symmetric) {
        for (float& a : v) a = std::fabs(a);
        const float t = percentileOf(v, m_percentile);
        lo = -t;
        hi = t;
    } else {
        lo = percentileOf(v, 100.0 - m_percentile);
        hi = percentileOf(v, m_percentile);
    }
}

void RangeObserver::mseRange(std::size_t slot, const NumberFormat& f, float& lo, float& hi) const
{
    const std::vector<float> v = sampleWithExtremes(slot);
    if (v.empty()) return;
    const float lo0 = m_min[slot], hi0 = m_max[slot];
    const float qmin = static_cast<float>(f.qmin), qmax = static_cast<float>(f.qmax);
    auto sse = [&](float loFrac, float hiFrac) {
        const ScaleZeroPoint sz = chooseQParams(lo0 * loFrac, hi0 * hiFrac, f);
        return quantizationSse(v.data(), v.size(), 1.0f / sz.scale, sz.scale, static_cast<float>(sz.zeroPoint), qmin,
                               qmax);
    };
    // One-dimensional search over a fraction in (0, 1]: k / C for k = 1..C (C = half the
    // candidates; 1 is the observed range itself), then C more within one coarse step of the
    // best. Ties go to the larger fraction (less clipping).
    auto search = [](auto&& error) {
        constexpr int coarse = kMseCandidates / 2, fine = kMseCandidates - coarse;
        double best = std::numeric_limits<double>::infinity();
        float bestFrac = 1.0f;
        auto tryFraction = [&](float frac) {
            const double e = error(frac);
            if (e < best || (e == best && frac > bestFrac)) {
                best = e;
                bestFrac = frac;
            }
        };
        for (int k = 1; k <= coarse; ++k) tryFraction(static_cast<float>(k) / coarse);
        const float centre = bestFrac, step = 2.0f / (static_cast<float>(coarse) * (fine + 1));
        for (int j = 1; j <= fine; ++j) {
            const float frac = centre - 1.0f / coarse + step * static_cast<float>(j);
            if (frac > 0.0f && frac < 1.0f) tryFraction(frac);
        }
        return bestFrac;
    };
    // Both ends shrink together; affine grids then refine each end on its own (the other fixed).
    float loFrac = search([&](float a) { return sse(a, a); });
    float hiFrac = loFrac;
    if (!f.symmetric) {
        loFrac = search([&](float a) { return sse(a, hiFrac); });
        hiFrac = search([&](float a) { return sse(loFrac, a); });
    }
    lo = lo0 * loFrac;
    hi = hi0 * hiFrac;
}

void RangeObserver::clipRange(const NumberFormat& f, std::vector<float>& lo, std::vector<float>& hi) const
{
    lo = m_min;
    hi = m_max;
    if (m_calibration == Calibration::Percentile) {
        parallelFor(lo.size(), [&](std::size_t s) { percentileRange(s, f.symmetric, lo[s], hi[s]); });
    } else if (m_calibration == Calibration::Mse) {
        if (f.kind != FormatKind::Int)
            throw ConfigError("mse calibration searches an integer grid; format '" + f.name + "' has none");
        parallelFor(lo.size(), [&](std::size_t s) { mseRange(s, f, lo[s], hi[s]); });
    }
}

QuantParams RangeObserver::params(const NumberFormat& f) const
{
    if (f.kind != FormatKind::Int)
        throw ConfigError("number format '" + f.name + "' takes no scale from an observer (only int/uint formats do)");
    std::vector<float> lo, hi;
    std::vector<float> scales;
    std::vector<std::int32_t> zps;
    std::size_t s = 0;
    try {
        clipRange(f, lo, hi); // the mse search meets an overflowing range too
        scales.resize(lo.size());
        zps.resize(lo.size());
        for (; s < lo.size(); ++s) {
            const ScaleZeroPoint sz = chooseQParams(lo[s], hi[s], f);
            scales[s] = sz.scale;
            zps[s] = sz.zeroPoint;
        }
    } catch (const NumericError& e) {
        const std::string slot = lo.size() > 1 ? " (scale slot " + std::to_string(s) + ")" : "";
        throw NumericError((m_name.empty() ? std::string("observed tensor") : m_name) + slot + ": " + e.what());
    }
    if (lo.size() == 1) return perTensorParams(scales[0], zps[0], f.qmin, f.qmax);
    return groupParams(std::move(scales), std::move(zps), f.qmin, f.qmax, m_rowLength, m_slotLength);
}

} // namespace quantscope
