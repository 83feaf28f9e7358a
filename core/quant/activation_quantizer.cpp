#include "quant/activation_quantizer.h"

#include "quant/float_cast.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <cmath>

namespace quantscope {

ActivationQuantizer::ActivationQuantizer(const NumberFormat& f, Calibration c, float percentile)
    : m_format(f), m_observer(c, 1, 0, 0, percentile)
{
}

void ActivationQuantizer::observe(std::span<const float> x)
{
    if (!m_observing || !needsScale(m_format) || m_fixed) return;
    m_observer.observe(x);
    m_params = m_observer.params(m_format);
}

void ActivationQuantizer::observeBatchRange(float batchMin, float batchMax, std::size_t nonFinite)
{
    if (!takesBatchRange()) return;
    m_observer.observeBatchRange(batchMin, batchMax, nonFinite);
    m_params = m_observer.params(m_format);
}

bool ActivationQuantizer::ready() const { return !needsScale(m_format) || m_fixed || m_observer.hasData(); }

void ActivationQuantizer::setFixedParams(const QuantParams& p)
{
    m_params = p;
    m_fixed = true;
}

void ActivationQuantizer::reset()
{
    m_observer.reset();
    m_params = QuantParams{};
    m_fixed = false;
}

void ActivationQuantizer::fakeQuantize(Tensor& y, std::vector<std::uint8_t>& steMask) const
{
    fakeQuantize(std::span<float>(y.values()), steMask, mxRowLength(y.shape()));
}

void ActivationQuantizer::fakeQuantize(std::span<float> y, std::vector<std::uint8_t>& steMask, std::size_t rowLength) const
{
    steMask.resize(y.size());
    if (needsScale(m_format)) {
        if (!ready() && m_observer.nonFinite() > 0)
            throw NumericError("activation quantizer (" + m_format.name + "): every value observed was inf or NaN (" +
                               std::to_string(m_observer.nonFinite()) + " of them): the activations overflow float32");
        if (!ready())
            throw ConfigError("activation quantizer (" + m_format.name + "): no range observed yet; observe a batch first");
        quantscope::fakeQuantize(y, m_params, y, steMask);
        return;
    }
    // Float formats: the mask is taken before rounding (values beyond maxFinite saturate or overflow).
    const float limit = m_format.kind == FormatKind::Float ? m_format.maxFinite : INFINITY;
    const std::size_t n = y.size();
    float* d = y.data();
    std::uint8_t* m = steMask.data();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) m[i] = static_cast<std::uint8_t>(std::fabs(d[i]) <= limit);
    });
    roundToFormat(y, m_format, Rounding::Nearest, 0, rowLength);
}

} // namespace quantscope
