// The engine's integer kernels besides the GEMM (int_gemm.h): depthwise convolution, the Add of
// two quantized tensors, and average pooling (which with a 1x1 window is also the elementwise
// rescale of a standalone ReLU). They read and write uint8 NHWC, compute in int32/int64 without
// floats, and each comes as a scalar reference twin plus AVX2 and AVX-512 versions that give
// bit-identical results; the plain entry points dispatch on the isa they were packed for.
#pragma once

#include "infer/int_gemm.h"
#include "infer/isa.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace quantscope {

// How a requantization rounds the last shift: halves up (requantize(), the GEMM's epilogue) or
// to even (what nearbyint does in the float fake-quant reference).
enum class RoundMode { HalfUp, HalfEven };

// p / 2^shift rounded (shift in [1, 62]), with an arithmetic shift.
inline std::int64_t roundShift(std::int64_t p, int shift, RoundMode mode)
{
    const std::int64_t half = std::int64_t{1} << (shift - 1);
    if (mode == RoundMode::HalfUp) return (p + half) >> shift;
    return roundShiftHalfEven(p, shift);
}

inline std::int32_t clampZp(std::int64_t r, std::int32_t zp, std::int32_t lo, std::int32_t hi)
{
    const std::int64_t l = static_cast<std::int64_t>(lo) - zp, h = static_cast<std::int64_t>(hi) - zp;
    r = r < l ? l : (r > h ? h : r);
    return static_cast<std::int32_t>(r + zp);
}

// ---- Depthwise convolution: groups == in channels == out channels, weight (C, 1, k, k).
//
// y[oy][ox][c] = requant(bias[c] + sum_{ky,kx} x[oy*s+ky-pad][ox*s+kx-pad][c] * w[c][ky][kx])
// with x = padValue outside the image (bias already holds -padValue * sum w, padValue = the input
// zero point). The vector kernels treat an output row as one run of Wo*C bytes: for stride 1,
// output byte (ox, c) reads input byte (ox + kx, c), a shift of kx*C; for stride s the padded
// input is split into s column phases so the same holds within a phase. One vpdpbusd per tap
// and byte lane j of each 32-bit lane (weights zero except byte j) keeps one channel per int32.
struct DepthwiseGeometry {
    std::size_t C = 0, H = 0, W = 0, k = 0, stride = 1, pad = 0;
    std::size_t Ho = 0, Wo = 0;
};

struct PackedDepthwise {
    Isa isa = Isa::Scalar;
    DepthwiseGeometry g;
    std::vector<std::int8_t> w;         // (C, k*k) as stored
    std::vector<std::int32_t> bias;     // per channel, accumulator units, -padValue * sum w included
    std::vector<FixedPointMultiplier> fpm;
    std::uint8_t padValue = 0;
    std::int32_t zp = 0, lo = 0, hi = 255;
    // Vector layout (AVX2 V = 32, AVX-512 V = 64 bytes): a row position b has channel b % C, so
    // every table repeats with period P = lcm(C, V) bytes = blocks * V.
    std::size_t V = 0, P = 0, blocks = 0;
    std::vector<std::int8_t> wv;                 // [tap][block][j][V]: byte t = w[c(t)] if t % 4 == j, else 0
    std::vector<std::int32_t> biasV, multV;      // [block][j][V/4]: lane i is channel c(4i + j)
    std::vector<std::int64_t> shiftE, shiftO;    // [block][j][V/8]: lanes 2i and 2i+1
    std::vector<std::int64_t> roundE, roundO;
    // The padded, phase-split input: (Hp rows) x (stride phases) x rowBytes.
    std::size_t Hp = 0, Wq = 0, rowBytes = 0;
    std::vector<std::size_t> tapOffset; // tap (ky, kx) -> bytes from the first input row of an output row
    std::size_t paddedBytes() const { return Hp * g.stride * rowBytes; }
};

// w: (C, k, k) int8; bias: effective per-channel bias; fpm: per channel.
PackedDepthwise packDepthwise(Isa isa, const DepthwiseGeometry& g, const std::int8_t* w, const std::vector<std::int32_t>& bias,
                              const std::vector<FixedPointMultiplier>& fpm, std::uint8_t padValue, std::int32_t zp,
                              std::int32_t lo, std::int32_t hi);

// in: (H, W, C) uint8; out: (Ho, Wo, C). scratch is resized to p.paddedBytes().
void depthwiseRequant(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* out, std::vector<std::uint8_t>& scratch);
void depthwiseRequantScalar(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* out);
void depthwiseRequantAvx2(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* out, std::uint8_t* padded);
void depthwiseRequantAvx512(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* out, std::uint8_t* padded);
// Fills the padded, phase-split input the vector kernels read.
void depthwisePad(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* padded);

// ---- Add of two quantized tensors into a third grid.
//
// out = clamp(zo + round(((a - za) * ma + (b - zb) * mb) / 2^shift)), rounded half to even, with
// ma / 2^shift = s_a / s_out and mb / 2^shift = s_b / s_out on one shared shift: the sum is exact
// in int64 and rounded once (TFLite's scheme rounds each input and then the sum).
struct AddParams {
    Isa isa = Isa::Scalar;
    std::int32_t za = 0, zb = 0, zo = 0, lo = 0, hi = 255;
    std::int32_t ma = 0, mb = 0;
    int shift = 1;
};
// ra = s_a / s_out, rb = s_b / s_out. Throws ConfigError when either is not a positive number
// below 2^22.
AddParams addParams(Isa isa, double ra, double rb, std::int32_t za, std::int32_t zb, std::int32_t zo, std::int32_t lo, std::int32_t hi);

inline std::int32_t addRequantOne(const AddParams& p, std::int32_t a, std::int32_t b)
{
    const std::int64_t s = static_cast<std::int64_t>(a - p.za) * p.ma + static_cast<std::int64_t>(b - p.zb) * p.mb;
    return clampZp(roundShift(s, p.shift, RoundMode::HalfEven), p.zo, p.lo, p.hi);
}

void addRequant(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n);
void addRequantScalar(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n);
void addRequantAvx2(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n);
void addRequantAvx512(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n);

// ---- Mul of two quantized tensors into a third grid (scalar kernels only).
//
// acc = (a - za)(b - zb) in int32 (|acc| <= 255^2), then out = clamp(zo + round(acc * m / 2^shift))
// with m / 2^shift = s_a s_b / s_out (fixedPointMultiplier), the last shift rounded half to even
// as nearbyint rounds the fake-quant's product: no float inside. The broadcast form multiplies an
// NHWC map x (P pixels of C channels) by a gate of C values (squeeze-and-excitation).
struct MulParams {
    std::int32_t za = 0, zb = 0, zo = 0, lo = 0, hi = 255;
    FixedPointMultiplier f;
};
// r = s_a s_b / s_out; throws ConfigError when it is not a positive number below 2^30.
MulParams mulParams(double r, std::int32_t za, std::int32_t zb, std::int32_t zo, std::int32_t lo, std::int32_t hi);

inline std::int32_t mulRequantOne(const MulParams& p, std::int32_t a, std::int32_t b)
{
    const std::int32_t acc = (a - p.za) * (b - p.zb);
    return clampZp(roundShift(static_cast<std::int64_t>(acc) * p.f.mult, p.f.shift, RoundMode::HalfEven), p.zo, p.lo, p.hi);
}

// out[i] = a[i] * b[i], i < n.
void mulRequant(const MulParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n);
// out[q][c] = x[q][c] * gate[c] for q < pixels, c < C (x takes za, the gate zb).
void mulRequantBroadcast(const MulParams& p, const std::uint8_t* x, const std::uint8_t* gate, std::uint8_t* out, std::size_t pixels,
                         std::size_t C);

// ---- Concat along the channels of NHWC tensors (scalar kernels only).
//
// Each pixel of the output holds every input's channels in turn, each rescaled to the output's
// grid: out = clamp(zo + round((x - zin) * m / 2^shift)), half to even, m / 2^shift = s_in / s_out;
// an input on the output's grid whose range the clamp keeps is copied as it is.
struct ConcatPart {
    std::size_t channels = 0, offset = 0; // its channels and where they start in an output pixel
    bool copy = false;
    FixedPointMultiplier f;
    std::int32_t zin = 0;
};
struct ConcatParams {
    std::vector<ConcatPart> parts;
    std::size_t pixels = 0, C = 0; // output pixels, channels per output pixel
    std::int32_t zo = 0, lo = 0, hi = 255;
};
// ins[j]: input j, pixels x parts[j].channels bytes.
void concatRequant(const ConcatParams& p, const std::uint8_t* const* ins, std::uint8_t* out);

// ---- Average pooling (no padding), NHWC.
//
// y[oy][ox][c] = clamp(zp + round(m * sum_{window} (x - zin))), m = s_in / (kh * kw * s_out).
// GlobalAvgPool2d is the window H x W; a rescale (a standalone ReLU/ReLU6 with its own grid) is
// the window 1 x 1 over an image of 1 x 1 x n.
struct PoolParams {
    Isa isa = Isa::Scalar;
    std::size_t C = 0, H = 0, W = 0, kh = 1, kw = 1, stride = 1, Ho = 0, Wo = 0;
    FixedPointMultiplier f;
    RoundMode round = RoundMode::HalfEven;
    std::int32_t zin = 0, zp = 0, lo = 0, hi = 255;
};

void avgPoolRequant(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out);
void avgPoolRequantScalar(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out);
void avgPoolRequantAvx2(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out);
void avgPoolRequantAvx512(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out);

} // namespace quantscope
