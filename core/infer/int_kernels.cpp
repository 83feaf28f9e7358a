// Packing, the scalar reference twins and the dispatch of the depthwise, Add and pooling kernels.
#include "infer/int_kernels.h"

#include "util/errors.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

namespace quantscope {

// ---- depthwise

PackedDepthwise packDepthwise(Isa isa, const DepthwiseGeometry& g, const std::int8_t* w, const std::vector<std::int32_t>& bias,
                              const std::vector<FixedPointMultiplier>& fpm, std::uint8_t padValue, std::int32_t zp,
                              std::int32_t lo, std::int32_t hi)
{
    if (g.C == 0 || g.k == 0 || g.stride == 0 || g.Ho == 0 || g.Wo == 0 || bias.size() != g.C || fpm.size() != g.C)
        throw ConfigError("packDepthwise: inconsistent geometry");
    PackedDepthwise p;
    p.isa = isa;
    p.g = g;
    const std::size_t taps = g.k * g.k;
    p.w.assign(w, w + g.C * taps);
    p.bias = bias;
    p.fpm = fpm;
    p.padValue = padValue;
    p.zp = zp;
    p.lo = lo;
    p.hi = hi;
    if (isa == Isa::Scalar) return p;

    p.V = isa == Isa::Avx512Vnni ? 64 : 32;
    p.P = std::lcm(g.C, p.V);
    p.blocks = p.P / p.V;
    const std::size_t lanes = p.V / 4;
    p.wv.assign(taps * p.blocks * 4 * p.V, 0);
    p.biasV.resize(p.blocks * 4 * lanes);
    p.multV.resize(p.blocks * 4 * lanes);
    p.shiftE.resize(p.blocks * 4 * lanes / 2);
    p.shiftO.resize(p.blocks * 4 * lanes / 2);
    p.roundE.resize(p.blocks * 4 * lanes / 2);
    p.roundO.resize(p.blocks * 4 * lanes / 2);
    for (std::size_t v = 0; v < p.blocks; ++v)
        for (std::size_t j = 0; j < 4; ++j)
            for (std::size_t i = 0; i < lanes; ++i) {
                const std::size_t c = (v * p.V + 4 * i + j) % g.C;
                const std::size_t slot = (v * 4 + j) * lanes + i;
                p.biasV[slot] = bias[c];
                p.multV[slot] = fpm[c].mult;
                const std::int64_t s = fpm[c].shift;
                (i % 2 ? p.shiftO : p.shiftE)[slot / 2] = s;
                (i % 2 ? p.roundO : p.roundE)[slot / 2] = std::int64_t{1} << (s - 1);
                for (std::size_t t = 0; t < taps; ++t) p.wv[((t * p.blocks + v) * 4 + j) * p.V + 4 * i + j] = w[c * taps + t];
            }
    const std::size_t Wp = g.W + 2 * g.pad;
    p.Hp = g.H + 2 * g.pad;
    p.Wq = (Wp + g.stride - 1) / g.stride;
    p.rowBytes = p.Wq * g.C + p.V; // V spare bytes: the last vector of a row may read past it
    for (std::size_t ky = 0; ky < g.k; ++ky)
        for (std::size_t kx = 0; kx < g.k; ++kx)
            p.tapOffset.push_back((ky * g.stride + kx % g.stride) * p.rowBytes + (kx / g.stride) * g.C);
    return p;
}

void depthwisePad(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* padded)
{
    // Only what a valid output reads is written: the border with padValue, the image inside it.
    // Positions past the padded width and the spare bytes are read only into lanes that are
    // never stored, so they keep what the buffer held (it is zeroed when allocated).
    const DepthwiseGeometry& g = p.g;
    const std::size_t s = g.stride, C = g.C, Wp = g.W + 2 * g.pad, rowSet = s * p.rowBytes;
    for (std::size_t y = 0; y < g.pad; ++y) {
        std::memset(padded + y * rowSet, p.padValue, rowSet);
        std::memset(padded + (g.pad + g.H + y) * rowSet, p.padValue, rowSet);
    }
    for (std::size_t y = 0; y < g.H; ++y) {
        std::uint8_t* row = padded + (y + g.pad) * rowSet;
        const std::uint8_t* src = in + y * g.W * C;
        if (s == 1) {
            std::memset(row, p.padValue, g.pad * C);
            std::memcpy(row + g.pad * C, src, g.W * C);
            std::memset(row + (g.pad + g.W) * C, p.padValue, g.pad * C);
            continue;
        }
        // padded column xp -> phase xp % s, position xp / s
        for (std::size_t xp = 0; xp < Wp; ++xp) {
            std::uint8_t* d = row + (xp % s) * p.rowBytes + (xp / s) * C;
            if (xp < g.pad || xp >= g.pad + g.W) {
                std::memset(d, p.padValue, C);
                continue;
            }
            const std::uint8_t* from = src + (xp - g.pad) * C;
            std::size_t c = 0;
            for (; c + 16 <= C; c += 16) std::memcpy(d + c, from + c, 16);
            for (; c < C; ++c) d[c] = from[c];
        }
    }
}

void depthwiseRequantScalar(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* out)
{
    const DepthwiseGeometry& g = p.g;
    const std::size_t taps = g.k * g.k;
    for (std::size_t oy = 0; oy < g.Ho; ++oy)
        for (std::size_t ox = 0; ox < g.Wo; ++ox)
            for (std::size_t c = 0; c < g.C; ++c) {
                std::int32_t acc = p.bias[c];
                for (std::size_t ky = 0; ky < g.k; ++ky)
                    for (std::size_t kx = 0; kx < g.k; ++kx) {
                        const std::size_t iy = oy * g.stride + ky, ix = ox * g.stride + kx; // padded coordinates
                        const bool inside = iy >= g.pad && iy < g.H + g.pad && ix >= g.pad && ix < g.W + g.pad;
                        const std::int32_t v = inside ? in[((iy - g.pad) * g.W + (ix - g.pad)) * g.C + c] : p.padValue;
                        acc += v * p.w[c * taps + ky * g.k + kx];
                    }
                out[(oy * g.Wo + ox) * g.C + c] = static_cast<std::uint8_t>(requantize(acc, p.fpm[c], p.zp, p.lo, p.hi));
            }
}

void depthwiseRequant(const PackedDepthwise& p, const std::uint8_t* in, std::uint8_t* out, std::vector<std::uint8_t>& scratch)
{
    switch (p.isa) {
    case Isa::Scalar: depthwiseRequantScalar(p, in, out); return;
    case Isa::Avx2:
    case Isa::Avx512Vnni:
        if (scratch.size() < p.paddedBytes()) scratch.resize(p.paddedBytes());
        depthwisePad(p, in, scratch.data());
        if (p.isa == Isa::Avx2) depthwiseRequantAvx2(p, in, out, scratch.data());
        else depthwiseRequantAvx512(p, in, out, scratch.data());
        return;
    }
}

// ---- Add

AddParams addParams(Isa isa, double ra, double rb, std::int32_t za, std::int32_t zb, std::int32_t zo, std::int32_t lo, std::int32_t hi)
{
    if (!(std::isfinite(ra) && ra > 0.0 && std::isfinite(rb) && rb > 0.0))
        throw ConfigError("Add rescale factors " + std::to_string(ra) + ", " + std::to_string(rb) + " are not positive numbers");
    AddParams p;
    p.isa = isa;
    p.za = za, p.zb = zb, p.zo = zo, p.lo = lo, p.hi = hi;
    int e = 0;
    std::frexp(std::max(ra, rb), &e); // max = f * 2^e, f in [0.5, 1)
    int shift = 31 - e;               // the larger multiplier in [2^30, 2^31)
    // Below 2^22 the rounded sum fits int32 (the vector kernels narrow it before the clamp).
    if (std::max(ra, rb) >= 4194304.0)
        throw ConfigError("Add rescale factor " + std::to_string(std::max(ra, rb)) + " is too large (scales are inconsistent)");
    shift = std::min(shift, 62); // tiny factors: fewer bits, the result is the zero point anyway
    std::int64_t ma = std::llround(std::ldexp(ra, shift)), mb = std::llround(std::ldexp(rb, shift));
    if (std::max(ma, mb) >= (std::int64_t{1} << 31)) { // rounded up to 2^31
        --shift;
        ma = std::llround(std::ldexp(ra, shift));
        mb = std::llround(std::ldexp(rb, shift));
    }
    p.ma = static_cast<std::int32_t>(ma);
    p.mb = static_cast<std::int32_t>(mb);
    p.shift = shift;
    return p;
}

MulParams mulParams(double r, std::int32_t za, std::int32_t zb, std::int32_t zo, std::int32_t lo, std::int32_t hi)
{
    MulParams p;
    p.za = za, p.zb = zb, p.zo = zo, p.lo = lo, p.hi = hi;
    p.f = fixedPointMultiplier(r);
    return p;
}

void mulRequant(const MulParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(mulRequantOne(p, a[i], b[i]));
}

void mulRequantBroadcast(const MulParams& p, const std::uint8_t* x, const std::uint8_t* gate, std::uint8_t* out, std::size_t pixels,
                         std::size_t C)
{
    for (std::size_t q = 0; q < pixels; ++q)
        for (std::size_t c = 0; c < C; ++c) out[q * C + c] = static_cast<std::uint8_t>(mulRequantOne(p, x[q * C + c], gate[c]));
}

void concatRequant(const ConcatParams& p, const std::uint8_t* const* ins, std::uint8_t* out)
{
    for (std::size_t j = 0; j < p.parts.size(); ++j) {
        const ConcatPart& part = p.parts[j];
        const std::uint8_t* in = ins[j];
        for (std::size_t q = 0; q < p.pixels; ++q) {
            const std::uint8_t* src = in + q * part.channels;
            std::uint8_t* dst = out + q * p.C + part.offset;
            if (part.copy) {
                std::memcpy(dst, src, part.channels);
                continue;
            }
            for (std::size_t c = 0; c < part.channels; ++c) {
                const std::int64_t v = static_cast<std::int64_t>(static_cast<std::int32_t>(src[c]) - part.zin) * part.f.mult;
                dst[c] = static_cast<std::uint8_t>(clampZp(roundShift(v, part.f.shift, RoundMode::HalfEven), p.zo, p.lo, p.hi));
            }
        }
    }
}

void addRequantScalar(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(addRequantOne(p, a[i], b[i]));
}

void addRequant(const AddParams& p, const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n)
{
    switch (p.isa) {
    case Isa::Scalar: addRequantScalar(p, a, b, out, n); return;
    case Isa::Avx2: addRequantAvx2(p, a, b, out, n); return;
    case Isa::Avx512Vnni: addRequantAvx512(p, a, b, out, n); return;
    }
}

// ---- average pooling

void avgPoolRequantScalar(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out)
{
    const std::int64_t window = static_cast<std::int64_t>(p.kh * p.kw);
    for (std::size_t oy = 0; oy < p.Ho; ++oy)
        for (std::size_t ox = 0; ox < p.Wo; ++ox)
            for (std::size_t c = 0; c < p.C; ++c) {
                std::int64_t sum = 0;
                for (std::size_t ky = 0; ky < p.kh; ++ky)
                    for (std::size_t kx = 0; kx < p.kw; ++kx) sum += in[((oy * p.stride + ky) * p.W + ox * p.stride + kx) * p.C + c];
                sum -= window * p.zin;
                out[(oy * p.Wo + ox) * p.C + c] =
                    static_cast<std::uint8_t>(clampZp(roundShift(sum * p.f.mult, p.f.shift, p.round), p.zp, p.lo, p.hi));
            }
}

void avgPoolRequant(const PoolParams& p, const std::uint8_t* in, std::uint8_t* out)
{
    switch (p.isa) {
    case Isa::Scalar: avgPoolRequantScalar(p, in, out); return;
    case Isa::Avx2: avgPoolRequantAvx2(p, in, out); return;
    case Isa::Avx512Vnni: avgPoolRequantAvx512(p, in, out); return;
    }
}

} // namespace quantscope
