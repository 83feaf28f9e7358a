#include "quant/fixed_point.h"

#include "util/errors.h"
#include "util/number_text.h"

#include <cmath>
#include <string>

namespace quantscope {

FixedPointMultiplier fixedPointMultiplier(double m)
{
    // numberText (%g): a huge multiplier from a denormal scale printed 40 digits with std::to_string
    if (!(std::isfinite(m) && m > 0.0))
        throw ConfigError("requantization multiplier " + numberText(m) + " is not a positive number");
    int e = 0;
    const double f = std::frexp(m, &e); // m = f * 2^e, f in [0.5, 1)
    std::int64_t q = std::llround(f * 2147483648.0);
    if (q == (std::int64_t{1} << 31)) {
        q >>= 1;
        ++e;
    }
    int shift = 31 - e;
    if (shift < 1) throw ConfigError("requantization multiplier " + numberText(m) + " is too large (scales are inconsistent)");
    if (shift > 62) {
        // Tiny multiplier: keep shift 62 and a smaller mult (still exact to 2^-62).
        q = std::llround(std::ldexp(m, 62));
        shift = 62;
    }
    return {static_cast<std::int32_t>(q), shift};
}

} // namespace quantscope
