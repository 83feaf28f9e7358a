// Range observers: accumulate per-slot value ranges over successive observe() calls and turn
// them into scales and zero points (quantize.h's chooseQParams, PyTorch's arithmetic).
//   minmax          running min / max (PyTorch MinMaxObserver)
//   moving-average  PyTorch MovingAverageMinMaxObserver, constant 0.01; the first batch sets the range
//   percentile      the given percentile of |x| (symmetric formats) or the (100-p, p) percentiles
//                   (affine), over a bounded sample of what was observed
//   mse             the clipping range that minimises the quantization MSE on that sample: 50
//                   fractions k/50 of the observed range (k = 1..50; 1 = min-max), then 50 finer
//                   ones within one coarse step of the best; affine formats then refine the low
//                   and the high end separately (3 x 100 candidates)
// Every observer tracks finite values only: +-inf and NaN are skipped (and counted, nonFinite()),
// so one overflowed activation cannot turn a scale into inf.
// The sample keeps every value while a slot has seen at most its capacity, then a deterministic
// hash-chosen subset (uniform, independent of batch boundaries); the exact extremes always count.
#pragma once

#include "quant/format.h"
#include "quant/quantize.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace quantscope {

enum class Calibration { MinMax, MovingAverage, Percentile, Mse };

// "minmax" | "moving-average" | "percentile" | "mse"; throws ConfigError listing them.
Calibration parseCalibration(const std::string& name);
const char* calibrationName(Calibration c);

inline constexpr float kMovingAverageConstant = 0.01f; // PyTorch's default averaging_constant
inline constexpr int kMseCandidates = 100;           // clipping ranges tried by the mse search

// min and max of x[0, n) over its finite values (unchanged where none is), folded into mn and mx
// (start them at +inf and -inf); returns how many values were not finite. The observers' own rule.
std::size_t finiteMinMax(const float* x, std::size_t n, float& mn, float& mx);

class RangeObserver {
public:
    // Slot layout as in QuantParams: numSlots == 1 observes everything into one slot; otherwise
    // element i of an observed tensor belongs to slot (i / rowLength) * groupsPerRow +
    // (i % rowLength) / slotLength (slotLength 0 = rowLength). percentile in (0, 100].
    explicit RangeObserver(Calibration c = Calibration::MinMax, std::size_t numSlots = 1, std::size_t rowLength = 0,
                           std::size_t slotLength = 0, float percentile = 99.99f);

    // One batch. With several slots, x must hold whole rows matching the layout.
    void observe(std::span<const float> x);
    // One batch given by its range over the finite values (batchMin > batchMax: none) and its count
    // of values that were not finite, as finiteMinMax gives them: the same as observe() of that
    // batch where takesBatchRange() (one slot, no sample kept: not percentile or MSE). Lets a
    // producer take the range while the values are in cache (QuantSim's activation points).
    bool takesBatchRange() const { return m_min.size() == 1 && m_samples.empty(); }
    void observeBatchRange(float batchMin, float batchMax, std::size_t nonFinite);
    // Several spans as ONE batch (a layer's weight and bias, all tensors of a model); one slot only.
    void observe(std::span<const std::span<const float>> parts);
    void reset();

    Calibration calibration() const { return m_calibration; }
    // Moving-average only: the weight c of each batch, running = running + c (batch - running)
    // (PyTorch's MovingAverageMinMaxObserver averaging_constant), in (0, 1]; default 0.01.
    // Throws ConfigError outside (0, 1].
    void setAveragingConstant(float c);
    float averagingConstant() const { return m_averagingConstant; }
    std::size_t numSlots() const { return m_min.size(); }
    // Names the observed tensor in errors ("conv1.weight", "output of 'relu1'").
    void setName(std::string name) { m_name = std::move(name); }
    const std::string& name() const { return m_name; }
    // Values skipped since the last reset() because they were +-inf or NaN.
    std::uint64_t nonFinite() const { return m_nonFinite; }
    // True once a batch with at least one finite value came in (empty batches do not count).
    bool hasData() const { return m_batches > 0; }
    std::size_t batches() const { return m_batches; }
    // Running range per slot (+inf / -inf before any data). For moving-average the averaged values.
    const std::vector<float>& minValues() const { return m_min; }
    const std::vector<float>& maxValues() const { return m_max; }

    // The range each slot is quantized to: the running range, or the percentile / MSE choice.
    // For mse the search quantizes with f (an Int format).
    void clipRange(const NumberFormat& f, std::vector<float>& lo, std::vector<float>& hi) const;
    // Scales and zero points for an Int format, with this observer's slot layout. Throws
    // NumericError naming the tensor when a slot's range is wider than float32 holds.
    QuantParams params(const NumberFormat& f) const;

private:
    struct Sample {
        std::vector<float> values;
        std::vector<std::uint32_t> keys; // 24-bit hash of the value's position in the slot's stream
        std::uint32_t threshold = 1u << 24; // keep positions whose key < threshold
        std::uint64_t seen = 0;
    };

    void updateSlot(std::size_t slot, float batchMin, float batchMax);
    void addToSample(std::size_t slot, const float* x, std::size_t n);
    std::vector<float> sampleWithExtremes(std::size_t slot) const;
    void percentileRange(std::size_t slot, bool symmetric, float& lo, float& hi) const;
    void mseRange(std::size_t slot, const NumberFormat& f, float& lo, float& hi) const;

    Calibration m_calibration;
    std::size_t m_rowLength, m_slotLength;
    float m_percentile;
    float m_averagingConstant = kMovingAverageConstant;
    std::size_t m_batches = 0;
    std::uint64_t m_nonFinite = 0;
    std::string m_name;
    std::size_t m_sampleCap;
    std::vector<float> m_min, m_max;
    std::vector<Sample> m_samples; // percentile / mse only
};

} // namespace quantscope
