// Number formats as data: one table row per format (name, kind, bits, range, block size). The
// CLI, the GUI combo boxes and the kernels all read this table; adding a format is adding a row
// (format.cpp) and, for a new kind, its reference rounding function.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace quantscope {

// Which kernel a format uses.
enum class FormatKind {
    Float32, // no-op
    Float,   // IEEE-like binary float with expBits/manBits (fp16, bf16, fp8)
    Int,     // linear integer grid with a scale (and a zero point when affine)
    MxInt,   // OCP Microscaling: blocks share an E8M0 scale, elements are 1.6 fixed point
    MxFloat, // OCP Microscaling: blocks share an E8M0 scale, elements are small floats
};

struct NumberFormat {
    std::string name;      // CLI value: "int8", "fp8-e4m3", "mxfp4"...
    FormatKind kind;
    int bits;              // storage bits per element (MX: element bits, without the shared scale)
    bool isSigned;
    bool symmetric;        // Int: zero point 0 and max-abs scale; otherwise affine (min/max)
    int qmin, qmax;        // Int/MxInt: integer range of the elements
    int expBits, manBits;  // Float/MxFloat: exponent and stored mantissa bits (MxInt: 0 and fraction bits)
    float maxFinite;       // largest finite magnitude of an element (MxInt: qmax * 2^-manBits)
    bool hasInf;           // overflow goes to +-inf (else saturates or is NaN)
    bool saturating;       // overflow clamps to +-maxFinite
    int blockSize;         // MX: elements sharing one scale (32); 0 otherwise
    std::string description; // one line for tooltips and --help
    bool signOnly = false; // Int: binary grid {-1, +1} (q = sign(x), no zero level); see QuantParams::signOnly
};

const char* formatKindName(FormatKind k);

// The table, in display order.
const std::vector<NumberFormat>& numberFormats();
// Throws ConfigError listing the valid names.
const NumberFormat& findFormat(const std::string& name);

inline bool isFloatFormat(const NumberFormat& f) { return f.kind == FormatKind::Float || f.kind == FormatKind::Float32; }
inline bool isMxFormat(const NumberFormat& f) { return f.kind == FormatKind::MxInt || f.kind == FormatKind::MxFloat; }
// Weight-only formats with one level each side of zero: ternary {-1, 0, 1} and binary {-1, +1}.
// Their weight scale follows their paper unless LSQ learns it (weight_quantizer.h). Known by name:
// int2 with --narrow-range has the same range [-1, 1] and keeps its observer's min-max scale, as
// PyTorch's (it took TWN's scale, tester 13).
inline bool isTernaryOrBinary(const NumberFormat& f)
{
    return f.kind == FormatKind::Int && f.qmin == -1 && f.qmax == 1 && (f.name == "ternary" || f.name == "binary");
}
// The narrow symmetric range of a signed symmetric Int format: qmin = -qmax (int8: [-127, 127],
// the convention of onnxruntime's and TensorRT's weight quantizers). Other formats unchanged.
NumberFormat narrowRangeFormat(const NumberFormat& f);
// Formats that need a scale (and an observer) to quantize: the Int rows.
inline bool needsScale(const NumberFormat& f) { return f.kind == FormatKind::Int; }

// Float/MxFloat element exponents: the exponent of the smallest normal (1 - bias) and of the
// largest finite value (floor(log2(maxFinite))). For MxInt the "element emax" is 0 (values < 2).
int minNormalExponent(const NumberFormat& f);
int maxExponent(const NumberFormat& f);

} // namespace quantscope
