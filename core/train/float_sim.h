// FloatSim: emulated low-precision float compute (fp16, bf16, fp8...). As LayerHooks it rounds
// the model input, every layer's output and every incoming gradient to the format; weights are
// rounded into Param::override (mixed precision, FP32 masters) or in place (pure low precision).
// LossScaler: dynamic loss scaling as in apex / torch.cuda.amp.GradScaler (Micikevicius et al.,
// "Mixed Precision Training", 2018): initial 2^16; growth interval 2000: after 2000 consecutive
// steps without overflow the scale doubles (at most 2^24); on an overflow (an inf/NaN gradient)
// the step is skipped and the scale halves, but never below min_loss_scale = 1.0 (apex's
// option): a scale under 1 would only shrink gradients that overflow unscaled anyway. The
// Trainer stops a run whose steps are all skipped (TrainConfig::maxSkippedSteps).
#pragma once

#include "nn/model.h"
#include "quant/format.h"
#include "quant/rounding.h"

#include <atomic>
#include <cstdint>
#include <vector>

namespace quantscope {

class FloatSim final : public LayerHooks {
public:
    FloatSim(const NumberFormat& f, Rounding r);

    void setKey(std::uint64_t key) { m_key = key; }
    // True when a gradient held inf/NaN since the last resetOverflow().
    bool overflow() const { return m_overflow; }
    void resetOverflow() { m_overflow = false; }

    void round(Tensor& t, std::uint64_t salt) const;
    // Rounds every param into its override (masters stay FP32).
    void roundWeightsToOverride(const std::vector<Param*>& params) const;

    // Lets the hooks skip what is exact already (element-wise formats only): the output of a
    // ReLU, ReLU6, MaxPool2d or Flatten of values on the grid is on the grid, and so is the
    // gradient entering a layer whose output only one such layer reads (its backward masks or
    // routes values that were rounded and checked for overflow on the way in; a MaxPool2d only
    // when its windows do not overlap, stride >= kernel, since overlapping windows add), or only
    // an Add of two different activations (each input gets the Add's gradient as it is).
    // Optional: without it every output and gradient is rounded; the same bits either way.
    void setModel(const Model& model);

    void onInput(Tensor& x, const RunContext& ctx) override;
    void afterForward(std::size_t layer, Layer& l, Tensor& y, const RunContext& ctx) override;
    void beforeBackward(std::size_t layer, Layer& l, Tensor& dy) override;
    // After setModel, a convolution, BatchNorm or Add whose output only a ReLU or ReLU6 reads is
    // left alone: rounding commutes with the clamp (round is monotone, keeps signs, rounds 0 to 0
    // and, in a format that holds it, 6 to 6), so the clamp's output is rounded instead and the
    // trainer's pass may run the pair fused, with the same bits. The fused backward takes the
    // clamp's mask from that rounded output (as the unfused ReLU does; ReLU6 reads its rounded
    // input, which gives the same mask): round(v) > 0 differs from v > 0 where v underflows to 0.
    // A Flatten's output (grid values moved, element-wise formats) is left alone too.
    bool touchesOutput(std::size_t layer) const override
    {
        return !(layer < m_clamped.size() && m_clamped[layer]) && !(layer < m_flatten.size() && m_flatten[layer]);
    }
    bool fusesReLU(std::size_t layer) const override { return layer < m_clamped.size() && m_clamped[layer] == 2; }
    bool fusesReLU6(std::size_t layer) const override { return layer < m_clamped.size() && m_clamped[layer]; }
    // No output sink: rounding needs no range.
    bool observesOutput(std::size_t /*layer*/) const override { return false; }
    // After setModel, with bf16: every Conv2d, BatchNorm2d, Add and Dropout rounds its own output
    // in its epilogue or pass (the same roundBf16 as roundToFormat's, so the same bits), and a
    // ReLU after it has nothing to round.
    bool roundsOutputBf16(std::size_t layer) const override { return layer < m_selfRounds.size() && m_selfRounds[layer]; }
    // A self-rounding convolution, its ReLU and a max pool after it run as one where the gradients
    // entering the convolution and the ReLU are exact already (beforeBackward skips them; the pool's
    // own is the same tensor fused or not), and the ReLU's and the pool's outputs of grid values
    // are on the grid (afterForward skips them).
    bool fusesPool(std::size_t conv, std::size_t clamp, std::size_t /*pool*/) const override
    {
        const auto exact = [&](std::size_t l) { return l < m_exactGrad.size() && m_exactGrad[l]; };
        return m_layerRounding && roundsOutputBf16(conv) && exact(conv) && exact(clamp);
    }
    // After setModel, with bf16 to nearest: the gradients beforeBackward rounds (not exact already).
    bool roundsGradientBf16(std::size_t layer) const override
    {
        return m_layerRounding && m_bf16 && m_rounding == Rounding::Nearest && layer < m_exactGrad.size() && !m_exactGrad[layer];
    }
    void gradientRounded(std::size_t /*layer*/, bool finite) override
    {
        if (!finite) m_overflow = true;
    }
    // Whether setModel lets the convolutions round their own outputs (default on). Off, the hooks
    // round every output in a pass of their own, as before: the tests compare the two.
    void setLayerRounding(bool on) { m_layerRounding = on; }

    const NumberFormat& format() const { return m_fmt; }
    Rounding rounding() const { return m_rounding; }

private:
    const NumberFormat& m_fmt;
    Rounding m_rounding;
    std::uint64_t m_key = 0;
    bool m_overflow = false;
    bool m_keepsGrid; // element-wise format (not MX) that holds 6, the ReLU6 bound
    std::vector<std::uint8_t> m_exactGrad; // per layer: dL/d(output) is on the grid and checked already
    std::vector<std::uint8_t> m_clamped;     // per layer: a Conv2d (1), BatchNorm2d or Add (2) read only by a ReLU or ReLU6 (touchesOutput false)
    std::vector<std::uint8_t> m_roundsClamp; // per layer: that ReLU, which rounds its output itself
    std::vector<std::uint8_t> m_selfRounds;  // per layer: a Conv2d, BatchNorm2d, Add or Dropout that rounds its output (roundsOutputBf16)
    std::vector<std::uint8_t> m_flatten;     // per layer: a Flatten, whose output afterForward leaves alone (element-wise formats)
    bool m_layerRounding = true;
    bool m_bf16 = false; // setModel's format is bf16 (and holds 6)
};

inline constexpr float kInitialLossScale = 65536.0f;
inline constexpr float kMinLossScale = 1.0f;         // apex's min_loss_scale
inline constexpr float kMaxLossScale = 16777216.0f;  // 2^24
inline constexpr std::size_t kLossScaleGrowthInterval = 2000;

class LossScaler {
public:
    explicit LossScaler(float initial = kInitialLossScale, std::size_t growthInterval = kLossScaleGrowthInterval)
        : m_scale(initial), m_interval(growthInterval) {}
    float scale() const { return m_scale; }
    // Checks the (scaled) gradients; on overflow halves the scale and returns false (skip the
    // step). Otherwise unscales them in place and returns true.
    bool unscaleOrSkip(const std::vector<Param*>& params, bool overflowSeen);
    // Mixed precision's gradient pass: rounds each gradient to f (nearest), checks the rounded
    // values and unscales them, one pass over each (a chunk at a time while in cache: the same bits
    // as roundToFormat and then unscaleOrSkip). The verdict and the scale's update are
    // unscaleOrSkip's; on overflow the gradients are left partly unscaled (the step is skipped and
    // nothing reads them). overflowSeen: nothing is rounded.
    bool roundUnscaleOrSkip(const std::vector<Param*>& params, const NumberFormat& f, bool overflowSeen);
    std::size_t skippedSteps() const { return m_skipped; }

private:
    // Records a step: false on overflow (halves the scale, counts a skipped step), else true (and
    // doubles the scale after growthInterval clean steps in a row).
    bool settle(bool overflow);

    float m_scale;
    std::size_t m_interval;
    std::size_t m_clean = 0, m_skipped = 0;
};

bool allFinite(const Tensor& t);

} // namespace quantscope
