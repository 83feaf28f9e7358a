// The integer GEMM of the engine (Jacob et al. 2018): uint8 activations A (M x K) times int8
// weights B (K x N), int32 accumulation started from a per-channel int32 bias, then fixed-point
// requantization to uint8 with a per-channel multiplier and shift, a zero point and a clamp
// (which is also the fused ReLU). No float arithmetic.
//
// A is read in place: row r of A starts at base + rowOffset[r] and is `nseg` segments of
// `segLen` bytes, segment s at + s * segStride. A convolution over an NHWC image is then a
// GEMM over its own input (segment = one kernel row: kernel * Cin contiguous bytes) without an
// im2col copy; a dense layer is one segment per row.
//
// Three kernel sets compute bit-identical results: the scalar reference twin, AVX2 (int16
// multiply-add, exact) and AVX-512 VNNI (vpdpbusd). gemmRequant dispatches on packed.isa.
#pragma once

#include "infer/isa.h"
#include "quant/fixed_point.h" // FixedPointMultiplier, fixedPointMultiplier

#include <cstddef>
#include <cstdint>
#include <vector>

namespace quantscope {

// out = clamp(round_half_up(acc * f) + zp, lo, hi): fixed_point.h's rule.
inline std::int32_t requantize(std::int32_t acc, FixedPointMultiplier f, std::int32_t zp, std::int32_t lo, std::int32_t hi)
{
    const std::int64_t p = static_cast<std::int64_t>(acc) * f.mult + (std::int64_t{1} << (f.shift - 1));
    std::int64_t r = p >> f.shift;
    const std::int64_t l = static_cast<std::int64_t>(lo) - zp, h = static_cast<std::int64_t>(hi) - zp;
    r = r < l ? l : (r > h ? h : r);
    return static_cast<std::int32_t>(r + zp);
}

// Weights and epilogue of one layer, laid out for one kernel set.
struct PackedGemm {
    Isa isa = Isa::Scalar;
    std::size_t K = 0;      // multiple of 4 (zero-padded)
    std::size_t N = 0;      // output channels
    std::size_t panel = 1;  // columns per panel: 16 (AVX-512), 8 (AVX2), N (scalar)
    std::size_t panels = 0;
    std::size_t Np = 0;     // panels * panel
    // scalar: N x K int8 row-major; AVX-512: per panel [K/4][16][4] int8; AVX2: per panel [K/2][8][2] int16
    std::vector<std::int8_t> w8;
    std::vector<std::int16_t> w16;
    // Epilogue, Np entries (padding channels: bias 0, mult 0).
    std::vector<std::int32_t> bias;
    std::vector<FixedPointMultiplier> fpm;
    std::vector<std::int32_t> mult;                // fpm[].mult
    std::vector<std::int64_t> shiftEven, shiftOdd; // Np/2 each: shifts of channels 2i and 2i+1
    std::vector<std::int64_t> roundEven, roundOdd; // 2^(shift-1)
    std::int32_t zp = 0, lo = 0, hi = 255;
};

// w: N x K int8 row-major (K a multiple of 4, already in A's element order), bias/fpm: N entries.
PackedGemm packGemm(Isa isa, const std::int8_t* w, std::size_t N, std::size_t K, const std::vector<std::int32_t>& bias,
                    const std::vector<FixedPointMultiplier>& fpm, std::int32_t zp, std::int32_t lo, std::int32_t hi);

struct GemmA {
    const std::uint8_t* base = nullptr;
    std::size_t extent = 0;               // bytes of A from base (the AVX2 kernel widens them)
    const std::uint32_t* rowOffset = nullptr;
    std::size_t M = 0;
    std::size_t nseg = 1, segLen = 0, segStride = 0; // nseg * segLen == packed.K; segLen % 4 == 0
};

// Per-thread buffers of the kernels (the AVX2 kernel's int16 copy of A).
struct GemmScratch {
    std::vector<std::int16_t> wideA;
};

// out[r * ldc + n] for r < M, n < N.
void gemmRequant(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc, GemmScratch& scratch);

// The kernel sets (gemmRequant checks A and sizes the scratch before calling them).
void gemmRequantScalar(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc);
void gemmRequantAvx2(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc, GemmScratch& scratch);
void gemmRequantAvx512(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc);

} // namespace quantscope
