// Packing, the scalar reference twin and the dispatch.
#include "infer/int_gemm.h"

#include "util/errors.h"
#include "util/number_text.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace quantscope {

PackedGemm packGemm(Isa isa, const std::int8_t* w, std::size_t N, std::size_t K, const std::vector<std::int32_t>& bias,
                    const std::vector<FixedPointMultiplier>& fpm, std::int32_t zp, std::int32_t lo, std::int32_t hi)
{
    if (K % 4 != 0 || K == 0 || N == 0) throw ConfigError("packGemm: K must be a positive multiple of 4");
    PackedGemm p;
    p.isa = isa;
    p.K = K;
    p.N = N;
    p.panel = isa == Isa::Avx512Vnni ? 16 : isa == Isa::Avx2 ? 8 : N;
    p.panels = (N + p.panel - 1) / p.panel;
    p.Np = p.panels * p.panel;
    p.zp = zp;
    p.lo = lo;
    p.hi = hi;
    p.bias.assign(p.Np, 0);
    p.fpm.assign(p.Np, FixedPointMultiplier{0, 1});
    for (std::size_t n = 0; n < N; ++n) {
        p.bias[n] = bias[n];
        p.fpm[n] = fpm[n];
    }
    p.mult.resize(p.Np);
    for (std::size_t n = 0; n < p.Np; ++n) p.mult[n] = p.fpm[n].mult;
    const std::size_t half = (p.Np + 1) / 2;
    p.shiftEven.assign(half, 1);
    p.shiftOdd.assign(half, 1);
    p.roundEven.assign(half, 1);
    p.roundOdd.assign(half, 1);
    for (std::size_t n = 0; n < p.Np; ++n) {
        const std::int64_t s = p.fpm[n].shift;
        (n % 2 ? p.shiftOdd : p.shiftEven)[n / 2] = s;
        (n % 2 ? p.roundOdd : p.roundEven)[n / 2] = std::int64_t{1} << (s - 1);
    }
    if (isa == Isa::Scalar) {
        p.w8.assign(w, w + N * K);
    } else if (isa == Isa::Avx512Vnni) {
        // panel j: for k4: 16 columns x 4 consecutive k (one vpdpbusd lane each)
        p.w8.assign(p.Np * K, 0);
        for (std::size_t j = 0; j < p.panels; ++j)
            for (std::size_t k4 = 0; k4 < K / 4; ++k4)
                for (std::size_t c = 0; c < 16; ++c) {
                    const std::size_t n = j * 16 + c;
                    if (n >= N) continue;
                    for (std::size_t t = 0; t < 4; ++t) p.w8[(j * (K / 4) + k4) * 64 + c * 4 + t] = w[n * K + k4 * 4 + t];
                }
    } else {
        // panel j: for k2: 8 columns x 2 consecutive k as int16 (one vpmaddwd lane each)
        p.w16.assign(p.Np * K, 0);
        for (std::size_t j = 0; j < p.panels; ++j)
            for (std::size_t k2 = 0; k2 < K / 2; ++k2)
                for (std::size_t c = 0; c < 8; ++c) {
                    const std::size_t n = j * 8 + c;
                    if (n >= N) continue;
                    for (std::size_t t = 0; t < 2; ++t) p.w16[(j * (K / 2) + k2) * 16 + c * 2 + t] = w[n * K + k2 * 2 + t];
                }
    }
    return p;
}

void gemmRequantScalar(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc)
{
    // out[r][n] = requant(bias[n] + sum_s sum_k A[r][s][k] * W[n][s * segLen + k])
    for (std::size_t r = 0; r < a.M; ++r) {
        const std::uint8_t* row = a.base + a.rowOffset[r];
        for (std::size_t n = 0; n < b.N; ++n) {
            const std::int8_t* wn = b.w8.data() + n * b.K;
            std::int32_t acc = b.bias[n];
            for (std::size_t s = 0; s < a.nseg; ++s) {
                const std::uint8_t* seg = row + s * a.segStride;
                const std::int8_t* ws = wn + s * a.segLen;
                for (std::size_t k = 0; k < a.segLen; ++k) acc += static_cast<std::int32_t>(seg[k]) * ws[k];
            }
            out[r * ldc + n] = static_cast<std::uint8_t>(requantize(acc, b.fpm[n], b.zp, b.lo, b.hi));
        }
    }
}

void gemmRequant(const PackedGemm& b, const GemmA& a, std::uint8_t* out, std::size_t ldc, GemmScratch& scratch)
{
    if (a.nseg * a.segLen != b.K || a.segLen % 4 != 0) throw ConfigError("gemmRequant: A does not match the packed weights");
    switch (b.isa) {
    case Isa::Scalar: gemmRequantScalar(b, a, out, ldc); return;
    case Isa::Avx2:
        if (scratch.wideA.size() < a.extent) scratch.wideA.resize(a.extent); // the kernel widens A into it
        gemmRequantAvx2(b, a, out, ldc, scratch);
        return;
    case Isa::Avx512Vnni: gemmRequantAvx512(b, a, out, ldc); return;
    }
}

} // namespace quantscope
