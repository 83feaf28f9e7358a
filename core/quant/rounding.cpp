#include "quant/rounding.h"

#include "util/errors.h"

namespace quantscope {

Rounding parseRounding(const std::string& name)
{
    if (name == "nearest") return Rounding::Nearest;
    if (name == "stochastic") return Rounding::Stochastic;
    throw ConfigError("unknown rounding '" + name + "' (known: nearest, stochastic)");
}

const char* roundingName(Rounding r) { return r == Rounding::Stochastic ? "stochastic" : "nearest"; }

} // namespace quantscope
