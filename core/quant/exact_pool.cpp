#include "quant/exact_pool.h"

#include "tensor/parallel.h"

#include <atomic>
#include <cmath>

namespace quantscope {

bool fakeQuantizeSameGridAverage(std::span<float> y, float scale, std::int32_t zeroPoint, int qmin, int qmax, std::size_t n,
                                 std::vector<std::uint8_t>* mask)
{
    if (n == 0 || (n & (n - 1)) != 0 || !(std::isfinite(scale) && scale > 0.0f)) return false;
    int shift = 0;
    while ((std::size_t{1} << shift) < n) ++shift;
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
    const float zpf = static_cast<float>(zeroPoint);
    const std::int64_t half = shift > 0 ? std::int64_t{1} << (shift - 1) : 0;
    parallelChunks(count, elementwiseGrain(count), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            const auto T = static_cast<std::int64_t>(std::llround(static_cast<double>(v[i]) * perCode));
            // T / n rounded half to even (the engine's roundShift), then the zero point
            const std::int64_t q = (shift > 0 ? (T + half - 1 + ((T >> shift) & 1)) >> shift : T) + zeroPoint;
            if (m) m[i] = static_cast<std::uint8_t>(q >= qmin && q <= qmax);
            const std::int64_t c = q < qmin ? qmin : (q > qmax ? qmax : q);
            v[i] = (static_cast<float>(c) - zpf) * scale; // fakeQuantize's dequantisation
        }
    });
    return true;
}

} // namespace quantscope
