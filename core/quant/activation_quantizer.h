// ActivationQuantizer: per-tensor fake quantization of one activation point (uint8 affine or
// int8 symmetric by default), with a range observer (moving-average unless told otherwise).
// While observing, every observe() moves the range; setObserving(false) freezes the scale.
// Float formats (fp16, bf16, fp8, MX) are rounded instead and need no observer.
#pragma once

#include "quant/format.h"
#include "quant/observer.h"
#include "quant/quantize.h"
#include "tensor/tensor.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace quantscope {

class ActivationQuantizer {
public:
    explicit ActivationQuantizer(const NumberFormat& f, Calibration c = Calibration::MovingAverage,
                                 float percentile = 99.99f);

    // Feeds one batch to the observer (ignored while not observing) and updates params().
    void observe(std::span<const float> x);
    // Whether the next observe() may be given as the batch's range instead (observeBatchRange):
    // observing, an integer format, no fixed parameters, and an observer that takes ranges
    // (RangeObserver::takesBatchRange).
    bool takesBatchRange() const { return m_observing && needsScale(m_format) && !m_fixed && m_observer.takesBatchRange(); }
    // observe() of a batch whose finite range and count of non-finite values are these
    // (finiteMinMax): the same observer state and params(). Only where takesBatchRange().
    void observeBatchRange(float batchMin, float batchMax, std::size_t nonFinite);
    void setObserving(bool on) { m_observing = on; }
    // Names the activation in errors (e.g. "output of 'relu1'").
    void setName(std::string name) { m_observer.setName(std::move(name)); }
    bool observing() const { return m_observing; }

    // In place. steMask is resized to y.numel(): 1 where the gradient passes (inside the clip
    // range; float formats: |x| <= maxFinite). Int formats need ready().
    void fakeQuantize(Tensor& y, std::vector<std::uint8_t>& steMask) const;
    // rowLength: MX formats' rows (the Tensor form gives mxRowLength of its shape: blocks do not
    // cross images).
    void fakeQuantize(std::span<float> y, std::vector<std::uint8_t>& steMask, std::size_t rowLength = 0) const;

    // Int formats: scale and zero point from the observer (per tensor). Float formats: empty.
    const QuantParams& params() const { return m_params; }
    // True once the observer has seen data (always true for float formats).
    bool ready() const;
    const NumberFormat& format() const { return m_format; }
    const RangeObserver& observer() const { return m_observer; }
    // The moving-average observer's constant (PyTorch's averaging_constant; default 0.01).
    void setAveragingConstant(float c) { m_observer.setAveragingConstant(c); }
    // Forgets the observed range.
    void reset();
    // Int formats: params() = p from now on (learned quantizers, quant/lsq.h); ready() is true and
    // observe() leaves them alone until reset().
    void setFixedParams(const QuantParams& p);

private:
    NumberFormat m_format;
    RangeObserver m_observer;
    QuantParams m_params;
    bool m_observing = true;
    bool m_fixed = false;
};

} // namespace quantscope
