// A number as a message shows it: printf's %g (6 significant digits, no trailing zeros, an
// exponent for very large or small magnitudes), e.g. "0.00392157", "1e-12", "inf", "nan".
#pragma once

#include <cstdio>
#include <string>

namespace quantscope {

inline std::string numberText(double v)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

} // namespace quantscope
