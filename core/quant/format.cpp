#include "quant/format.h"

#include "util/errors.h"

#include <cmath>
#include <limits>

namespace quantscope {

namespace {

NumberFormat floatRow(std::string name, int bits, int e, int m, float maxFinite, bool hasInf, bool saturating,
                      std::string description)
{
    return {std::move(name), FormatKind::Float, bits, true, true, 0, 0, e, m, maxFinite, hasInf, saturating, 0,
            std::move(description)};
}

NumberFormat intRow(int bits, bool isSigned)
{
    const int qmin = isSigned ? -(1 << (bits - 1)) : 0;
    const int qmax = isSigned ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    const std::string b = std::to_string(bits);
    std::string description =
        isSigned ? b + "-bit signed integer, symmetric (zero point 0), scale = max|x| / " +
                       std::to_string((qmax - qmin) / 2) + (((qmax - qmin) % 2) ? ".5" : "")
                 : b + "-bit unsigned integer, affine (scale and zero point from min/max), levels 0.." +
                       std::to_string(qmax);
    return {(isSigned ? "int" : "uint") + b, FormatKind::Int, bits, isSigned, isSigned, qmin, qmax, 0, 0,
            static_cast<float>(qmax), false, true, 0, std::move(description)};
}

std::vector<NumberFormat> buildTable()
{
    std::vector<NumberFormat> rows;
    rows.push_back({"fp32", FormatKind::Float32, 32, true, true, 0, 0, 8, 23, std::numeric_limits<float>::max(), true,
                    false, 0, "IEEE binary32; the FP32 reference (no rounding)"});
    rows.push_back(floatRow("fp16", 16, 5, 10, 65504.0f, true, false,
                            "IEEE binary16: round to nearest even, overflow to inf, subnormals kept"));
    rows.push_back(floatRow("bf16", 16, 8, 7, 3.38953139e38f, true, false,
                            "bfloat16 (FP32 range, 8-bit mantissa): round to nearest even, overflow to inf"));
    rows.push_back(floatRow("fp8-e4m3", 8, 4, 3, 448.0f, false, true,
                            "OCP FP8 E4M3: max 448, no infinities, saturating, NaN kept"));
    rows.push_back(floatRow("fp8-e5m2", 8, 5, 2, 57344.0f, true, false,
                            "OCP FP8 E5M2: max 57344, overflow to inf, NaN kept"));
    for (int b = 2; b <= 16; ++b) rows.push_back(intRow(b, true));
    for (int b = 2; b <= 16; ++b) rows.push_back(intRow(b, false));
    // Weight-only grids (as weights; activations stay on an integer format). Stored and exported
    // as signed integers in {-1, 0, 1}.
    rows.push_back({"ternary", FormatKind::Int, 2, true, true, -1, 1, 0, 0, 1.0f, false, true, 0,
                    "ternary weights {-1, 0, 1} x scale; scale = mean of |w| above 0.7 mean|w| (TWN, Li et al. 2016)",
                    false});
    rows.push_back({"binary", FormatKind::Int, 1, true, true, -1, 1, 0, 0, 1.0f, false, true, 0,
                    "binary weights {-1, +1} x scale: sign(w) with a straight-through gradient inside |w| <= scale; "
                    "scale = mean|w| (XNOR-Net, Rastegari et al. 2016)",
                    true});
    rows.push_back({"mxint8", FormatKind::MxInt, 8, true, true, -127, 127, 0, 6, 127.0f / 64.0f, false, true, 32,
                    "OCP MX INT8: blocks of 32 share a power-of-two scale; elements k/64, |k| <= 127"});
    rows.push_back({"mxfp8-e4m3", FormatKind::MxFloat, 8, true, true, 0, 0, 4, 3, 448.0f, false, true, 32,
                    "OCP MXFP8 (E4M3 elements): blocks of 32 share a power-of-two scale"});
    rows.push_back({"mxfp4", FormatKind::MxFloat, 4, true, true, 0, 0, 2, 1, 6.0f, false, true, 32,
                    "OCP MXFP4 (E2M1 elements: 0, 0.5, 1, 1.5, 2, 3, 4, 6): blocks of 32 share a power-of-two scale"});
    return rows;
}

} // namespace

const char* formatKindName(FormatKind k)
{
    switch (k) {
    case FormatKind::Float32: return "fp32";
    case FormatKind::Float: return "float";
    case FormatKind::Int: return "int";
    case FormatKind::MxInt: return "mx-int";
    case FormatKind::MxFloat: return "mx-float";
    }
    return "?";
}

const std::vector<NumberFormat>& numberFormats()
{
    static const std::vector<NumberFormat> rows = buildTable();
    return rows;
}

const NumberFormat& findFormat(const std::string& name)
{
    std::string known;
    for (const auto& f : numberFormats()) {
        if (f.name == name) return f;
        known += (known.empty() ? "" : ", ") + f.name;
    }
    throw ConfigError("unknown number format '" + name + "' (known: " + known + ")");
}

NumberFormat narrowRangeFormat(const NumberFormat& f)
{
    NumberFormat n = f;
    if (f.kind == FormatKind::Int && f.isSigned && f.symmetric && f.qmin == -f.qmax - 1) {
        n.qmin = -f.qmax;
        n.description += " (narrow range [" + std::to_string(n.qmin) + ", " + std::to_string(n.qmax) + "])";
    }
    return n;
}

int minNormalExponent(const NumberFormat& f)
{
    if (f.kind == FormatKind::MxInt || f.kind == FormatKind::Int) return 0;
    return 1 - ((1 << (f.expBits - 1)) - 1);
}

int maxExponent(const NumberFormat& f)
{
    return std::ilogb(f.maxFinite);
}

} // namespace quantscope
