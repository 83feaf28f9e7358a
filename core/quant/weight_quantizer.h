// WeightQuantizer: what the precision strategies (QAT, PTQ, progressive) call to fake-quantize
// the weights and biases of a model. Integer formats get scales from observers laid out by the
// granularity; float formats (fp16, bf16, fp8) are rounded element-wise and MX formats per block
// of 32 (granularity does not apply to either). Ternary and binary weights take their papers'
// scale per slot (TWN: mean of |w| above 0.7 mean|w|; XNOR-Net: mean|w|) whatever the calibration,
// and leave biases in float (the export stores them at int32 like every bias). Quantized values go to Param::override, the
// master copy Param::value is left alone; the straight-through gradient is masked to the clip range.
#pragma once

#include "nn/layer.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/observer.h"
#include "quant/quantize.h"
#include "quant/rounding.h"
#include "quant/layer_stats.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

struct WeightTarget {
    std::string layer;
    Param* weight = nullptr; // (out, ...): dim 0 is the output channel
    Param* bias = nullptr;   // may be null
};

class WeightQuantizer {
public:
    WeightQuantizer(const NumberFormat& f, Granularity g, Calibration c, Rounding r, float percentile = 99.99f);

    void setRounding(Rounding r) { m_rounding = r; }
    Rounding rounding() const { return m_rounding; }
    const NumberFormat& format() const { return m_format; }
    Granularity granularity() const { return m_granularity; }
    Calibration calibration() const { return m_calibration; }

    // Recomputes scales from the current master values (param.value) and writes the fake-quantized
    // values into param.override (hasOverride = true) for every weight and bias, plus an STE mask per
    // param. Moving-average calibration keeps its running ranges across calls (reset() forgets them);
    // the others start afresh each call. Tensor j of target i uses the stream streamKey(rngKey, i, j).
    void apply(const std::vector<WeightTarget>& targets, std::uint64_t rngKey);
    // Multiplies each param.grad by its STE mask from the last apply (zero outside the clip range).
    void maskGradients(const std::vector<WeightTarget>& targets) const;
    // One LayerStats per weight tensor: the current param.value quantized with the scales of the
    // last apply() (call apply() first for the figures of exactly what the model runs with).
    // Histogram bins follow the quantization grid: integer formats one bin per level (merged for
    // more than 256 levels) of the slot with the LARGEST scale (per-channel/group: the coarsest
    // grid, so bin width = that scale); fp8 one bin per representable value; fp16/bf16/MX 256
    // uniform bins over the data range. clippedFraction counts values beyond their slot's clip range
    // by more than half a step (min-max calibration gives 0).
    std::vector<LayerStats> stats(std::size_t epoch, const std::vector<WeightTarget>& targets) const;

    // Parameters of the last apply for target i. Int formats: scales and zero points. MX: one scale
    // per block of 32 (slotLength 32, zero points 0). fp16/bf16/fp8: empty.
    const QuantParams& weightParams(std::size_t i) const;
    const QuantParams& biasParams(std::size_t i) const;
    const std::vector<std::uint8_t>& weightMask(std::size_t i) const;
    std::size_t numTargets() const { return m_state.size(); }
    // Forgets moving-average ranges.
    void reset();
    // LSQ: target i's weight scales (one per slot of the granularity's layout, zero points 0)
    // come from `scales` instead of the observer from the next apply() on; empty = observer again.
    // Biases keep the observer. Throws ConfigError at apply() when the count does not fit.
    void setLearnedScales(std::size_t i, std::vector<float> scales);

private:
    struct TensorState {
        QuantParams params;
        std::vector<std::uint8_t> mask;
    };
    struct TargetState {
        Shape weightShape;
        std::size_t biasSize = 0;
        TensorState weight, bias;
        std::optional<RangeObserver> weightObserver, biasObserver;
        std::vector<float> learned; // LSQ scales (empty: the observer's)
    };

    void prepare(const std::vector<WeightTarget>& targets);
    void computeIntParams(const std::vector<WeightTarget>& targets);
    void quantizeTensor(const Tensor& value, const QuantParams& params, std::uint64_t key, Tensor& out,
                        std::vector<std::uint8_t>& mask, QuantParams* blockScalesOut) const;
    LayerStats tensorStats(std::size_t epoch, const WeightTarget& t, const TargetState& s) const;

    NumberFormat m_format;
    Granularity m_granularity;
    Calibration m_calibration;
    Rounding m_rounding;
    float m_percentile;
    std::uint64_t m_lastKey = 0;
    std::vector<TargetState> m_state;
    std::optional<RangeObserver> m_globalObserver;
};

} // namespace quantscope
