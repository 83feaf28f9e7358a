// Error metrics between a reference (FP32) tensor and its quantized version. Sums in double.
#pragma once

#include <span>

namespace quantscope {

struct ErrorMetrics {
    double mse = 0.0;         // mean (x - x')^2
    double maxAbsError = 0.0; // max |x - x'|
    double sqnrDb = 0.0;      // 10 log10(sum x^2 / sum (x - x')^2); +inf when x' == x
};

// Throws ConfigError when the sizes differ. Empty spans give zeros (and sqnr +inf).
ErrorMetrics errorMetrics(std::span<const float> reference, std::span<const float> quantized);
double mse(std::span<const float> reference, std::span<const float> quantized);
double maxAbsError(std::span<const float> reference, std::span<const float> quantized);
double sqnrDb(std::span<const float> reference, std::span<const float> quantized);

} // namespace quantscope
