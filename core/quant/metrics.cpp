#include "quant/metrics.h"

#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace quantscope {

ErrorMetrics errorMetrics(std::span<const float> reference, std::span<const float> quantized)
{
    if (reference.size() != quantized.size())
        throw ConfigError("error metrics: " + std::to_string(reference.size()) + " reference values but " +
                          std::to_string(quantized.size()) + " quantized values");
    double signal = 0.0, noise = 0.0, maxErr = 0.0;
    for (std::size_t i = 0; i < reference.size(); ++i) {
        const double x = reference[i];
        const double d = x - static_cast<double>(quantized[i]);
        signal += x * x;
        noise += d * d;
        maxErr = std::max(maxErr, std::abs(d));
    }
    ErrorMetrics m;
    const std::size_t n = reference.size();
    m.mse = n ? noise / static_cast<double>(n) : 0.0;
    m.maxAbsError = maxErr;
    if (noise == 0.0)
        m.sqnrDb = std::numeric_limits<double>::infinity();
    else
        m.sqnrDb = 10.0 * std::log10(signal / noise);
    return m;
}

double mse(std::span<const float> reference, std::span<const float> quantized)
{
    return errorMetrics(reference, quantized).mse;
}

double maxAbsError(std::span<const float> reference, std::span<const float> quantized)
{
    return errorMetrics(reference, quantized).maxAbsError;
}

double sqnrDb(std::span<const float> reference, std::span<const float> quantized)
{
    return errorMetrics(reference, quantized).sqnrDb;
}

} // namespace quantscope
