// The strided convolutions' input gradient by phases (conv2d_runs.h StridedDxPlan): each phase of
// dx is a stride-1 product of dy's runs with that phase's taps, scattered into dx's planes.
// conv2d_direct.cpp (FP32) and conv2d_products.cpp (bf16) run the products.
#include "nn/conv2d_runs.h"
#include "nn/conv2d_shared.h"
#include "nn/conv_direct.h"

#include "tensor/bf16.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quantscope {

namespace conv_detail {

std::optional<StridedDxPlan> stridedDxPlan(const float* w, std::size_t cout, std::size_t cin, std::size_t H, std::size_t W,
                                           std::size_t k, std::size_t s, std::size_t p, std::size_t Ho, std::size_t Wo,
                                           std::size_t Ng, Bf16Path bf16)
{
    const std::size_t q = (k + s - 1) / s - 1, Wq = Wo + q, Rn = (Ho + q) * Wq, head = q * Wq + q;
    StridedDxPlan plan{{Ho, Wo, k, q, 0, 0, Wq, Rn, head, Ng, head + Ng * Rn}, {}};
    const auto taps = [&](std::size_t r) { return r < k ? (k - r + s - 1) / s : 0; };
    const auto positions = [&](std::size_t r, std::size_t n) { return n - 1 + p >= r ? (n - 1 + p - r) / s + 1 : 0; };
    std::vector<float> A;
    for (std::size_t py = 0; py < s; ++py)
        for (std::size_t px = 0; px < s; ++px) {
            StridedDxPhase ph{py, px, taps(py), taps(px), positions(py, H), positions(px, W), {}, {}};
            if (ph.Aa > Ho + q || ph.Bb > Wo + q) return std::nullopt;
            const std::size_t Kp = cout * ph.Ty * ph.Tx;
            if (Kp > 0) {
                A.assign(cin * Kp, 0.0f);
                for (std::size_t ci = 0; ci < cin; ++ci)
                    for (std::size_t co = 0; co < cout; ++co)
                        for (std::size_t t = 0; t < ph.Ty; ++t)
                            for (std::size_t u = 0; u < ph.Tx; ++u)
                                A[ci * Kp + (co * ph.Ty + t) * ph.Tx + u] =
                                    w[((co * cin + ci) * k + py + s * t) * k + px + s * u];
                if (bf16 == Bf16Path::Emulated) {
                    conv_direct::packA(A.data(), cin, Kp, Kp, ph.packed);
                } else {
                    const std::size_t tt = ph.Ty * ph.Tx;
                    packBf16RunsA(bf16RunsOrder(A.data(), cin, cout, tt).data(), cin, tt * ((cout + 1) / 2), ph.bf16, bf16);
                }
            }
            plan.phases.push_back(std::move(ph));
        }
    return plan;
}

void scatterPhaseGradient(const StridedDxPhase& ph, const RunGeometry& gd, const float* out, std::size_t L,
                          std::size_t cin, std::size_t H, std::size_t W, std::size_t s, std::size_t p, std::size_t n0,
                          std::size_t count, float* dx, bool add)
{
    const std::size_t HW = H * W;
    const bool any = ph.Ty * ph.Tx > 0;
    // first phase positions inside the image: a s + py >= p, b s + px >= p
    const std::size_t a0 = ph.py < p ? (p - ph.py + s - 1) / s : 0, b0 = ph.px < p ? (p - ph.px + s - 1) / s : 0;
    for (std::size_t ci = 0; ci < cin; ++ci)
        for (std::size_t i = 0; i < count; ++i) {
            float* __restrict d = dx + ((n0 + i) * cin + ci) * HW;
            const float* __restrict o = out + ci * L + i * gd.Rn;
            for (std::size_t a = a0; a < ph.Aa; ++a) {
                float* __restrict row = d + (a * s + ph.py - p) * W;
                const float* __restrict src = o + a * gd.Wq;
                if (add && any)
                    for (std::size_t b = b0; b < ph.Bb; ++b) row[b * s + ph.px - p] += src[b];
                else if (!add)
                    for (std::size_t b = b0; b < ph.Bb; ++b) row[b * s + ph.px - p] = any ? src[b] : 0.0f;
            }
        }
}

namespace {
// out[2 m] = ev[m] and out[2 m + 1] = od[m] for the indices below n; with add, out += them.
void interleaveRow(const float* __restrict ev, const float* __restrict od, std::size_t n, float* __restrict out, bool add)
{
#if defined(__AVX512F__)
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i;
        const std::size_t ne = std::min<std::size_t>(16, (left + 1) / 2), no = std::min<std::size_t>(16, left / 2);
        const __m512 e = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << ne) - 1u), ev + i / 2);
        const __m512 o = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << no) - 1u), od + i / 2);
        const auto k0 = static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
        const auto k1 = static_cast<__mmask16>(left >= 32 ? 0xFFFFu : left > 16 ? (1u << (left - 16)) - 1u : 0u);
        __m512 a = _mm512_permutex2var_ps(e, lo, o), b = _mm512_permutex2var_ps(e, hi, o);
        if (add) {
            a = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, out + i), a);
            b = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, out + i + 16), b);
        }
        _mm512_mask_storeu_ps(out + i, k0, a);
        if (k1) _mm512_mask_storeu_ps(out + i + 16, k1, b);
    }
#else
    for (std::size_t i = 0; i < n; ++i) {
        const float v = (i % 2 ? od : ev)[i / 2];
        out[i] = add ? out[i] + v : v;
    }
#endif
}
} // namespace

void scatterPhasePairGradient(const StridedDxPhase& ph0, const float* out0, std::size_t L0, const StridedDxPhase& ph1,
                              const float* out1, std::size_t L1, const RunGeometry& gd, std::size_t cin, std::size_t H,
                              std::size_t W, std::size_t p, std::size_t n0, std::size_t count, float* dx, bool add)
{
    constexpr std::size_t s = 2;
    if (ph0.py != ph1.py || ph0.px != 0 || ph1.px != 1 || ph0.Aa != ph1.Aa)
        throw std::logic_error("scatterPhasePairGradient: not the two phases of one phase row");
    const std::size_t HW = H * W, py = ph0.py, a0 = py < p ? (p - py + s - 1) / s : 0;
    // pixel x = 2 m is phase (x + p) % 2 = p % 2's position b = (x + p) / 2 = m + p / 2, and
    // x = 2 m + 1 the other phase's m + (p + 1) / 2
    const bool evenFrom0 = p % 2 == 0;
    for (std::size_t ci = 0; ci < cin; ++ci)
        for (std::size_t i = 0; i < count; ++i) {
            float* d = dx + ((n0 + i) * cin + ci) * HW;
            const float* o0 = out0 + ci * L0 + i * gd.Rn;
            const float* o1 = out1 + ci * L1 + i * gd.Rn;
            const float* ev = (evenFrom0 ? o0 : o1) + p / 2;
            const float* od = (evenFrom0 ? o1 : o0) + (p + 1) / 2;
            for (std::size_t a = a0; a < ph0.Aa; ++a)
                interleaveRow(ev + a * gd.Wq, od + a * gd.Wq, W, d + (a * s + py - p) * W, add);
        }
}

} // namespace conv_detail

} // namespace quantscope
