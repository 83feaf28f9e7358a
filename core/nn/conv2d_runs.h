// Internal to core/nn's convolution (conv2d_direct.cpp, conv2d_products.cpp): the direct kernels'
// run layout, shared by the FP32 kernels and the low-precision products. Not a public interface.
#pragma once

#include "nn/conv2d_shared.h"
#include "nn/maxpool2d.h"
#include "nn/pool2x2_avx512.h"
#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace quantscope::conv_detail {

// A group of images laid out for the direct kernels, channel by channel: each channel is one run
// holding the group's images one after another at row pitch Wq = W + p, each image followed by p
// zero rows, behind a head of p rows and p columns of zeros. The zero columns at the end of a row
// are also the left padding of the next row, and an image's zero rows the top padding of the
// next image, so tap (ky, kx) of the output at run position j = i Rn + oy Wq + ox (image i of the
// group) reads position j + ky Wq + kx of the channel's run. Small planes are grouped so the
// runs are long (a few thousand floats) and still fit in L2 with the output.
// The output gradient laid out with padding p' = k - 1 - p has the same pitch and image stride
// (Wo + p' = W + p), so one run position j names the same output pixel in both layouts.
struct RunGeometry {
    std::size_t H, W, k, p, Ho, Wo, Wq, Rn, head, Ng, S; // S: floats per channel run
    // Length of the output run for a group of `images` images (scratch positions included).
    std::size_t length(std::size_t images) const { return (images - 1) * Rn + (Ho - 1) * Wq + Wo; }
};

// The group size depends on the geometry only (never on threads): it fixes the order in which
// the weight gradient's partial sums are added. Requires p <= k - 1.
inline RunGeometry runGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t p)
{
    const std::size_t Wq = W + p, Rn = (H + p) * Wq, head = p * Wq + p;
    std::size_t Ng = 1;
    while (Ng < 16 && 2 * Ng * Rn <= 2048) Ng *= 2;
    return {H, W, k, p, H + 2 * p + 1 - k, W + 2 * p + 1 - k, Wq, Rn, head, Ng, head + Ng * Rn};
}

// Strided convolutions (conv2d_direct.cpp): each channel's run is split into s x s phase runs.
// Phase (py, px) holds the zero-padded pixels (r s + py, c s + px) of the group's images at pitch
// Wq, Rn floats per image; tap (ky, kx) of the output at run position j = i Rn + oy Wq + ox then
// reads phase (ky % s, kx % s) at j + (ky / s) Wq + kx / s (phaseTapOffset; as the depthwise
// kernel does for one plane). Ng depends on the geometry only, as RunGeometry's.
struct PhaseGeometry {
    std::size_t H, W, k, s, p, Ho, Wo, Wq, Rn, Ng, PS, S; // PS: floats per phase run, S per channel
    std::size_t length(std::size_t images) const { return (images - 1) * Rn + (Ho - 1) * Wq + Wo; }
};
PhaseGeometry phaseGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t s, std::size_t p);
// x images [n0, n0 + count) of (N, C, H, W) -> phase runs (C, s, s, PS), zero padded (dg: the
// same phase split of one plane, as the depthwise kernel makes it).
void toPhaseRuns(const float* x, std::size_t C, std::size_t n0, std::size_t count, const PhaseGeometry& g,
                 const DepthwiseGeometry& dg, float* runs);
// The same images as bf16 pair runs (C2 = ceil(C / 2) runs of S dwords, dword j of run cp =
// bf16Bits(channel 2 cp) | bf16Bits(channel 2 cp + 1) << 16, zero past C and at the padding): toPhaseRuns
// then roundInterleave2 of each channel pair, bit for bit, in one pass.
void toPhaseRunsBf16(const float* x, std::size_t C, std::size_t n0, std::size_t count, const PhaseGeometry& g,
                     const DepthwiseGeometry& dg, std::uint16_t* runs);
// Where tap (ky, kx) starts in a channel's phase runs, in elements.
std::size_t phaseTapOffset(const PhaseGeometry& g, std::size_t ky, std::size_t kx);

// One output row of the convolution's epilogue: dst[j] = src[j] (+ b when hasBias), clamped to
// [0, cap] when hasClamp(cap), then rounded to bf16 when roundBf16 (fromRuns, fromRunsPooled).
inline void epilogueRow(float* __restrict dst, const float* __restrict src, std::size_t n, bool hasBias, float b, float cap,
                        bool roundBf16)
{
    const bool clamp = hasClamp(cap);
    if (!clamp && hasBias)
        for (std::size_t j = 0; j < n; ++j) dst[j] = src[j] + b;
    else if (!clamp) // not the plain loop, which GCC makes a memmove call per row of 7 to 28 values (copyRow)
        copyRow(dst, src, n);
    else if (hasBias)
        for (std::size_t j = 0; j < n; ++j) dst[j] = clampTo(src[j] + b, cap);
    else
        for (std::size_t j = 0; j < n; ++j) dst[j] = clampTo(src[j], cap);
    if (roundBf16) roundRowBf16(dst, n);
}

// out (C, ld) at run positions of g's output -> images [n0, n0 + count) of y (N, C, Ho, Wo),
// plus bias[c], clamped to [0, cap] when hasClamp(cap) (the fused activation). Geometry:
// RunGeometry or PhaseGeometry (output pitch Wq, Rn floats per image). With roundBf16 each plane
// is then rounded to bf16 (RunContext::roundOutputBf16).
template <typename Geometry>
void fromRuns(const float* out, std::size_t ld, std::size_t C, std::size_t n0, std::size_t count, const Geometry& g,
              const float* bias, float* y, float cap = std::numeric_limits<float>::quiet_NaN(), bool roundBf16 = false)
{
    const std::size_t HWo = g.Ho * g.Wo;
    for (std::size_t c = 0; c < C; ++c) {
        const float b = bias ? bias[c] : 0.0f;
        for (std::size_t i = 0; i < count; ++i) {
            float* __restrict dst = y + ((n0 + i) * C + c) * HWo;
            const float* __restrict src = out + c * ld + i * g.Rn;
            if (const std::size_t p = nextPlaneOf(n0, count, C, c, i); p != kNoPlane) // the plane written next
                prefetchSpanForWrite(y + p * HWo, HWo);
            for (std::size_t r = 0; r < g.Ho; ++r) epilogueRow(dst + r * g.Wo, src + r * g.Wq, g.Wo, bias != nullptr, b, cap, false);
            // The plane at once, still in cache: rounding row by row cost more than the hooks'
            // own pass on resnet8's short rows (7 to 28 values; bench_model_layers --hooks bf16).
            if (roundBf16) roundRowBf16(dst, HWo);
        }
    }
}

// y += fromRuns' rows (no bias, no clamp): Conv2d::backwardAddingInputGradient.
template <typename Geometry>
void addFromRuns(const float* out, std::size_t ld, std::size_t C, std::size_t n0, std::size_t count, const Geometry& g,
                 float* y)
{
    const std::size_t HWo = g.Ho * g.Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t i = 0; i < count; ++i) {
            float* __restrict dst = y + ((n0 + i) * C + c) * HWo;
            const float* __restrict src = out + c * ld + i * g.Rn;
            if (const std::size_t p = nextPlaneOf(n0, count, C, c, i); p != kNoPlane) // the plane added into next
                prefetchSpanForWrite(y + p * HWo, HWo);
            for (std::size_t r = 0; r < g.Ho; ++r)
                for (std::size_t j = 0; j < g.Wo; ++j) dst[r * g.Wo + j] += src[r * g.Wq + j];
        }
}

// The 2x2 stride-2 max pool fused after the convolution and its clamp (Conv2d::forwardPooled):
// the pool's output (N, C, Ho / 2, Wo / 2) and its argmax (nullptr when not training).
struct PooledOut {
    float* y = nullptr;
    std::uint32_t* argmax = nullptr;
};

// The same pool's output gradient, for the convolution's backward (Conv2d::backwardPooled): dy =
// dL/dy of the pool's output y, unpooled (MaxPool2d::backwardFusedPlanes, with the clamp's rule
// of cap) group by group as the backward reads it.
struct PooledGrad {
    const MaxPool2d* pool = nullptr;
    const Tensor* y = nullptr;
    const Tensor* dy = nullptr;
    float cap = 0.0f;
};

// fromRuns' rows (bias, clamp, bf16 rounding alike), pooled two rows at a time by maxPool2x2Row
// into pool's planes instead of written out.
template <typename Geometry>
void fromRunsPooled(const float* out, std::size_t ld, std::size_t C, std::size_t n0, std::size_t count, const Geometry& g,
                    const float* bias, const PooledOut& pool, float cap, bool roundBf16)
{
    const std::size_t Hp = g.Ho / 2, Wp = g.Wo / 2, HWp = Hp * Wp;
    [[maybe_unused]] const bool clamp = hasClamp(cap);
#if !defined(__AVX512F__)
    static thread_local std::vector<float> rows;
    if (rows.size() < 2 * g.Wo) rows.resize(2 * g.Wo);
#endif
    for (std::size_t c = 0; c < C; ++c) {
        const float b = bias ? bias[c] : 0.0f;
        for (std::size_t i = 0; i < count; ++i) {
            const std::size_t plane = (n0 + i) * C + c;
            const float* __restrict src = out + c * ld + i * g.Rn;
            for (std::size_t py = 0; py < Hp; ++py) {
#if defined(__AVX512F__)
                // In registers: no store of the clamped rows to reload (the masked reloads of
                // just-stored rows stalled on store forwarding: 5 % of a mixed seed-cnn step).
                const std::size_t at = plane * HWp + py * Wp;
                const float* s0 = src + 2 * py * g.Wq;
                const float* s1 = s0 + g.Wq;
                const __m512 vb = _mm512_set1_ps(b), zero = _mm512_setzero_ps(), vcap = _mm512_set1_ps(cap);
                const auto rowPart = [&](const float* s, __mmask16 km) {
                    __m512 v = _mm512_maskz_loadu_ps(km, s);
                    if (bias) v = _mm512_add_ps(v, vb);
                    if (clamp) v = _mm512_min_ps(vcap, _mm512_max_ps(zero, v)); // clampTo: a NaN stays
                    if (roundBf16) v = roundBf16X16(v);
                    return v;
                };
                for (std::size_t ox = 0; ox < Wp; ox += 16) {
                    const std::size_t n = std::min<std::size_t>(16, Wp - ox), c0 = 2 * ox;
                    const std::uint32_t k32 = n == 16 ? 0xFFFFFFFFu : static_cast<std::uint32_t>((std::uint64_t{1} << (2 * n)) - 1);
                    const __mmask16 kl = static_cast<__mmask16>(k32), kh = static_cast<__mmask16>(k32 >> 16);
                    pool_detail::pool2x2(rowPart(s0 + c0, kl), rowPart(s0 + c0 + 16, kh), rowPart(s1 + c0, kl),
                                         rowPart(s1 + c0 + 16, kh), n, static_cast<std::uint32_t>(2 * py * g.Wo + c0),
                                         static_cast<std::uint32_t>(g.Wo), pool.y + at + ox,
                                         pool.argmax ? pool.argmax + at + ox : nullptr);
                }
#else
                for (std::size_t h = 0; h < 2; ++h)
                    epilogueRow(rows.data() + h * g.Wo, src + (2 * py + h) * g.Wq, g.Wo, bias != nullptr, b, cap, roundBf16);
                const std::size_t at = plane * HWp + py * Wp;
                maxPool2x2Row(rows.data(), rows.data() + g.Wo, Wp, static_cast<std::uint32_t>(2 * py * g.Wo),
                              static_cast<std::uint32_t>(g.Wo), pool.y + at, pool.argmax ? pool.argmax + at : nullptr);
#endif
            }
        }
    }
}

// The input gradient of a strided convolution, phase by phase (no col2im; conv2d_direct.cpp): the
// input pixels (iy, ix) with (iy + p) % s = py and (ix + p) % s = px, at (iy + p) = a s + py, only
// see the taps ky = py + s t, kx = px + s u, and those read dy at (a - t, b - u). Each phase is then
// a stride-1 "full" correlation of dy (laid out in runs padded by q = ceil(k / s) - 1, see
// RunGeometry) with a sub-kernel of Ty x Tx taps: one product over rows dy_run - t Wq - u, output
// at run position a Wq + b, scattered into dx. Every dx element is one sum in a fixed order.
struct StridedDxPhase {
    std::size_t py, px, Ty, Tx, Aa, Bb; // taps per axis; phase positions a < Aa, b < Bb
    std::vector<float> packed;          // FP32: A (Cin x Cout Ty Tx) packed by conv_direct::packA
    PackedBf16Runs bf16;                // bf16: the same A in the runs' K order (packBf16RunsA)
    // Output run positions of `count` images (the product's L).
    std::size_t length(const RunGeometry& gd, std::size_t count) const { return (count - 1) * gd.Rn + (Aa - 1) * gd.Wq + Bb; }
};

struct StridedDxPlan {
    RunGeometry gd; // dy runs
    std::vector<StridedDxPhase> phases;
};

// w (Cout, Cin, k, k) -> the phases' sub-kernels, packed for FP32 (bf16 == Emulated) or for that
// bf16 path. Empty when the phase outputs would run past dy's padding (then col2im takes it).
std::optional<StridedDxPlan> stridedDxPlan(const float* w, std::size_t cout, std::size_t cin, std::size_t H, std::size_t W,
                                           std::size_t k, std::size_t s, std::size_t p, std::size_t Ho, std::size_t Wo,
                                           std::size_t Ng, Bf16Path bf16 = Bf16Path::Emulated);
// One phase's product (out: Cin x L at dy's run positions) into dx's pixels of that phase, images
// [n0, n0 + count) of (N, Cin, H, W); add: dx += it. A phase without taps writes zeros.
void scatterPhaseGradient(const StridedDxPhase& ph, const RunGeometry& gd, const float* out, std::size_t L,
                          std::size_t cin, std::size_t H, std::size_t W, std::size_t s, std::size_t p, std::size_t n0,
                          std::size_t count, float* dx, bool add);

// scatterPhaseGradient for the two phases (py, 0) and (py, 1) of a stride-2 convolution at once
// (ph0 and ph1, products out0 and out1 of lengths L0 and L1), both with taps: each dx row of phase
// row py is written (or, with add, added to) whole, its even and odd pixels interleaved from the two
// products, where a phase at a time wrote every other pixel. The same values, each added once.
void scatterPhasePairGradient(const StridedDxPhase& ph0, const float* out0, std::size_t L0, const StridedDxPhase& ph1,
                              const float* out1, std::size_t L1, const RunGeometry& gd, std::size_t cin, std::size_t H,
                              std::size_t W, std::size_t p, std::size_t n0, std::size_t count, float* dx, bool add);

// dx of images [n0, n0 + count) from the plan's phases: product(ph, out, L) writes phase ph's
// Cin x L product into out (called for phases with taps only), and each product is scattered
// into dx (add: dx += it). With stride 2, the two phases of a phase row take two per-thread
// buffers (1 and 6) and are scattered together (scatterPhasePairGradient).
template <typename Product>
void phaseInputGradient(const StridedDxPlan& plan, std::size_t cin, std::size_t H, std::size_t W, std::size_t s,
                        std::size_t p, std::size_t n0, std::size_t count, float* dx, bool add, Product&& product)
{
    const RunGeometry& gd = plan.gd;
    const auto used = [](const StridedDxPhase& ph) { return ph.Aa > 0 && ph.Bb > 0; };
    const auto taps = [](const StridedDxPhase& ph) { return ph.Ty * ph.Tx > 0; };
    const std::vector<StridedDxPhase>& phases = plan.phases;
    for (std::size_t f = 0; f < phases.size(); ++f) {
        const StridedDxPhase& ph = phases[f];
        if (!used(ph)) continue;
        const std::size_t L = ph.length(gd, count);
        float* out = threadBuffer(1, cin * L).data();
        if (s == 2 && ph.px == 0 && f + 1 < phases.size() && phases[f + 1].py == ph.py && used(phases[f + 1]) &&
            taps(ph) && taps(phases[f + 1])) {
            const StridedDxPhase& ph1 = phases[f + 1];
            const std::size_t L1 = ph1.length(gd, count);
            float* out1 = threadBuffer(6, cin * L1).data();
            product(ph, out, L);
            product(ph1, out1, L1);
            scatterPhasePairGradient(ph, out, L, ph1, out1, L1, gd, cin, H, W, p, n0, count, dx, add);
            ++f;
            continue;
        }
        if (taps(ph)) product(ph, out, L);
        scatterPhaseGradient(ph, gd, out, L, cin, H, W, s, p, n0, count, dx, add);
    }
}

// The runs a training forward on bf16 products keeps for its backward (Conv2d::m_xRunsBf16,
// keepSingleRuns): each group's x as C runs of one channel (toRunsBf16Single's layout, the weight
// gradient's operand), keptRunStride(S) bf16 values apart, zeros from S on. The stride is a whole
// number of 64-byte lines with at least 64 zeros (the weight-gradient tiles read up to S + 31), and
// a group takes keptGroupStride(C, S) values, so every run starts on a line when the first does
// (cacheLineAligned).
inline std::size_t keptRunStride(std::size_t S) { return (S + 64 + 31) / 32 * 32; }
inline std::size_t keptGroupStride(std::size_t C, std::size_t S) { return C * keptRunStride(S); }
// p moved up to its next 64-byte boundary (by at most 62 bytes for a 2-byte aligned p).
template <typename T>
T* cacheLineAligned(T* p)
{
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return reinterpret_cast<T*>(a + (64 - a % 64) % 64);
}

// A (M x C k k, taps of each channel consecutive) in the bf16 runs' K order (conv2d_products.cpp).
std::vector<float> bf16RunsOrder(const float* A, std::size_t M, std::size_t C, std::size_t kk);
// The bf16 backward of one group of images [n0, n0 + count) from x and dy straight to bf16 runs:
// dW added into part, dx when rot is given (conv2d_products.cpp). With partTransposed (the
// AVX512_BF16 path only) part holds dW^T, (k k C) x Op with Op = O rounded up to 16
// (weightGradBf16RunsTransposed; reducePartialsTransposed sums and transposes the groups' parts).
// x and dx are the whole batch's; dy and r start at the group's first image. AMX needs C a
// multiple of 16. With xSource, x's planes come from it (Conv2d::setInputSource) and x is not read.
// With dySource, dy is not read (nor r, which must be null): dy's planes (n0 + i) O + o come from
// it, one at a time into a buffer in L1, and are rounded into the runs from there. With addDx,
// dx's images are added into (addFromRuns) instead of written. With xKept (the group's x as the
// forward kept it, keptRunStride(g.S) apart: Conv2d::m_xRunsBf16), x is not read.
void backwardGroupBf16(Bf16Path path, const float* x, const float* dy, const float* r, float cap, std::size_t n0,
                       std::size_t count, const RunGeometry& g, const RunGeometry& gd, std::size_t C, std::size_t O,
                       std::size_t k, const std::size_t* xTaps, const std::size_t* dyTaps, float* part, bool partTransposed,
                       const PackedBf16Runs* rot, float* dx, const OutputPlaneSource* xSource = nullptr,
                       const OutputPlaneSource* dySource = nullptr, bool addDx = false,
                       const std::uint16_t* xKept = nullptr);

} // namespace quantscope::conv_detail
