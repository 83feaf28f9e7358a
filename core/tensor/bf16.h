// bfloat16 rounding of FP32 values: round to nearest even at bit 16 of the FP32 bit pattern.
// One definition shared by the bf16 emulation (quant/float_cast.cpp) and the bf16 GEMM packers
// (tensor/gemm_bf16*.cpp), so that both produce the same bf16 values bit for bit.
#pragma once

#include <bit>
#include <cstdint>

namespace quantscope {

// The bf16 bits (the upper half of the FP32 pattern) of x rounded to nearest, ties to even.
// The carry runs into the exponent, so subnormals, the normal range and overflow to inf all come
// out right; NaN stays NaN (quietened). Unlike VCVTNEPS2BF16 there is no flush of subnormals.
inline std::uint16_t bf16Bits(float x)
{
    const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t rounded = (u + 0x7FFFu + (u >> 16 & 1u)) >> 16;
    const std::uint32_t quietNan = (u | 0x00400000u) >> 16;
    return static_cast<std::uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? quietNan : rounded); // branchless: vectorises
}

// The FP32 value of bf16 bits.
inline float bf16ToFloat(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

// x rounded to bf16 (round to nearest even), as FP32.
inline float roundBf16(float x) { return bf16ToFloat(bf16Bits(x)); }

} // namespace quantscope
