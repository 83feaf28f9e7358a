// Conv2d's low-precision products over the direct kernels' runs (nn/conv2d_runs.h): QAT's int8
// forward (tensor/gemm_s8.h) and bf16 on AMX or AVX512_BF16 (tensor/gemm_bf16.h gemmBf16Runs, weightGradBf16Runs).
#include "nn/conv2d.h"
#include "nn/conv2d_runs.h"
#include "nn/conv2d_shared.h"

#include "tensor/bf16.h"
#include "tensor/gemm_bf16.h"
#include "tensor/gemm_s8.h"
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace quantscope {

using namespace conv_detail;

namespace {

// The runs of toRuns with `Ch` channels interleaved in each dword (channel c at element c % Ch of
// dword position j of group run c / Ch; channels past C and every padding position hold `pad`),
// each row of Ch planes packed by pack(rows[Ch], n, dst), which may refuse (false). Group runs are
// `stride` positions apart (at least g.S; positions past g.S hold `pad` too).
// With source, x is not read: each image's Ch planes come from the source into a buffer in cache.
template <std::size_t Ch, typename T, typename Pack>
bool toInterleavedRuns(const float* x, std::size_t C, std::size_t n0, std::size_t count, const RunGeometry& g, T pad,
                       T* runs, Pack&& pack, std::size_t stride = 0, const OutputPlaneSource* source = nullptr)
{
    if (stride < g.S) stride = g.S;
    const std::size_t HW = g.H * g.W, groups = (C + Ch - 1) / Ch;
    thread_local std::vector<float> sourced;
    if (source && sourced.size() < Ch * HW) sourced.resize(Ch * HW);
    const auto fill = [&](T* dst, std::size_t dwords) { std::fill(dst, dst + Ch * dwords, pad); };
    for (std::size_t cg = 0; cg < groups; ++cg) {
        T* run = runs + Ch * cg * stride;
        fill(run, g.head);
        for (std::size_t i = 0; i < count; ++i) {
            const float* plane[Ch];
            for (std::size_t j = 0; j < Ch; ++j) {
                const std::size_t c = Ch * cg + j;
                plane[j] = c < C && !source ? x + ((n0 + i) * C + c) * HW : nullptr;
                if (source && c < C) {
                    source->outputPlanes((n0 + i) * C + c, 1, sourced.data() + j * HW);
                    plane[j] = sourced.data() + j * HW;
                }
            }
            // The planes read next (the next image's, or the next group's first image's) are
            // asked for ahead: prefetchSpan row by row, or the source's prefetchPlane.
            const float* next[Ch] = {};
            for (std::size_t j = 0; j < Ch && Ch * cg + j < C; ++j) {
                const std::size_t p = nextPlaneOf(n0, count, C, Ch * cg + j, i, Ch);
                if (p == kNoPlane) continue;
                if (source) source->prefetchPlane(p);
                else next[j] = x + p * HW;
            }
            T* dst = run + Ch * (g.head + i * g.Rn);
            if (g.p == 0) { // the planes back to back
                for (std::size_t j = 0; j < Ch; ++j)
                    if (next[j]) prefetchSpan(next[j], HW);
                if (!pack(plane, HW, dst)) return false;
                continue;
            }
            for (std::size_t y = 0; y < g.H; ++y) {
                const float* row[Ch];
                for (std::size_t j = 0; j < Ch; ++j) {
                    row[j] = plane[j] ? plane[j] + y * g.W : nullptr;
                    if (next[j]) prefetchSpan(next[j] + y * g.W, g.W);
                }
                if (!pack(row, g.W, dst + Ch * y * g.Wq)) return false;
                fill(dst + Ch * (y * g.Wq + g.W), g.p);
            }
            fill(dst + Ch * g.H * g.Wq, g.Rn - g.H * g.Wq);
        }
        fill(run + Ch * (g.head + count * g.Rn), (g.Ng - count) * g.Rn + (stride - g.S));
    }
    return true;
}

// The integer products' layout (Conv2d::forwardDirectS8): uint8 codes, four channels a dword;
// channels past C and the padding hold the code of 0. False when a value of x is off the grid
// (quantizeInterleave4).
bool toRunsU8(const float* x, std::size_t C, std::size_t n0, std::size_t count, const RunGeometry& g,
              const U8Grid& grid, std::uint8_t* runs)
{
    return toInterleavedRuns<4>(x, C, n0, count, g, static_cast<std::uint8_t>(grid.zero), runs,
                                [&](const float* const* rows, std::size_t n, std::uint8_t* dst) {
                                    return quantizeInterleave4(rows, n, grid, dst);
                                });
}

// The bf16 products' layout (usesBf16Runs): bf16, two channels a dword, zero padding. With r, x
// is an output gradient masked by the fused clamp's rule on r (gradientPasses), as toRuns masks it.
// With source (no r), x's planes come from it (Conv2d::setInputSource).
void toRunsBf16(const float* x, std::size_t C, std::size_t n0, std::size_t count, const RunGeometry& g, std::uint16_t* runs,
                const float* r = nullptr, float cap = 0.0f, const OutputPlaneSource* source = nullptr)
{
    if (!r) {
        toInterleavedRuns<2>(
            x, C, n0, count, g, std::uint16_t{0}, runs,
            [](const float* const* rows, std::size_t n, std::uint16_t* dst) {
                roundInterleave2(rows, n, dst);
                return true;
            },
            0, source);
        return;
    }
    if (source) throw std::logic_error("toRunsBf16: an input source with a masked gradient");
    toInterleavedRuns<2>(x, C, n0, count, g, std::uint16_t{0}, runs, [&](const float* const* rows, std::size_t n, std::uint16_t* dst) {
        constexpr std::size_t kChunk = 256;
        alignas(64) float masked[2][kChunk];
        for (std::size_t at = 0; at < n; at += kChunk) {
            const std::size_t len = std::min(kChunk, n - at);
            const float* pair[2] = {nullptr, nullptr};
            for (std::size_t j = 0; j < 2; ++j)
                if (rows[j]) {
                    copyRowMasked(masked[j], rows[j] + at, r + (rows[j] - x) + at, len, cap);
                    pair[j] = masked[j];
                }
            roundInterleave2(pair, len, dst + 2 * at);
        }
        return true;
    });
}

// One channel a run in bf16 (the weight gradient's x operand), runs `stride` positions apart,
// zero padding and zeros from g.S to the stride.
void toRunsBf16Single(const float* x, std::size_t C, std::size_t n0, std::size_t count, const RunGeometry& g,
                      std::size_t stride, std::uint16_t* runs, const OutputPlaneSource* source = nullptr)
{
    toInterleavedRuns<1>(
        x, C, n0, count, g, std::uint16_t{0}, runs,
        [](const float* const* rows, std::size_t n, std::uint16_t* dst) {
            bf16BitsSpan(rows[0], n, dst);
            return true;
        },
        stride, source);
}

// What a training forward on the bf16 runs keeps for its backward (Conv2d::m_xRunsBf16): the
// group's pair runs (toRunsBf16's, in the thread's buffer: ceil(C / 2) runs of S dwords) split into
// the weight gradient's C runs of one channel, keptRunStride(S) apart and zero from S on
// (toRunsBf16Single's layout, the same bf16 bits), written with streaming stores from dst, which
// is 64-byte aligned. They are read again only in the backward, so they skip the cache, and the
// backward reads them in place: it neither rounds x again nor splits the runs itself. Splitting
// there instead cost resnet8's bf16 step 0.4-0.55 ms of 14.5 on Zen 5 (bench_model_layers
// --hooks bf16, alternated).
void keepSingleRuns(const std::uint16_t* pairs, std::size_t C, std::size_t S, std::uint16_t* dst)
{
    const std::size_t stride = keptRunStride(S);
    for (std::size_t cp = 0; cp < (C + 1) / 2; ++cp) {
        const std::uint16_t* __restrict src = pairs + 2 * cp * S;
        std::uint16_t* __restrict d0 = dst + 2 * cp * stride;
        std::uint16_t* __restrict d1 = 2 * cp + 1 < C ? d0 + stride : nullptr;
#if defined(__AVX512BW__)
        alignas(64) static constexpr std::uint16_t kEven[32] = {0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20,
                                                                22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42,
                                                                44, 46, 48, 50, 52, 54, 56, 58, 60, 62};
        const __m512i even = _mm512_load_si512(kEven), odd = _mm512_add_epi16(even, _mm512_set1_epi16(1));
        for (std::size_t j = 0; j < stride; j += 32) { // the stride is whole 32-value lines
            __m512i a = _mm512_setzero_si512(), b = a;
            if (j + 32 <= S) {
                a = _mm512_loadu_si512(src + 2 * j);
                b = _mm512_loadu_si512(src + 2 * j + 32);
            } else if (j < S) { // the last 2 (S - j) < 64 values, zeros after them
                const std::size_t rest = 2 * (S - j);
                const auto head = [](std::size_t n) { return n >= 32 ? ~__mmask32{0} : (__mmask32{1} << n) - 1; };
                a = _mm512_maskz_loadu_epi16(head(rest), src + 2 * j);
                if (rest > 32) b = _mm512_maskz_loadu_epi16(head(rest - 32), src + 2 * j + 32);
            }
            _mm512_stream_si512(reinterpret_cast<__m512i*>(d0 + j), _mm512_permutex2var_epi16(a, even, b));
            if (d1) _mm512_stream_si512(reinterpret_cast<__m512i*>(d1 + j), _mm512_permutex2var_epi16(a, odd, b));
        }
#else
        for (std::size_t j = 0; j < S; ++j) {
            d0[j] = src[2 * j];
            if (d1) d1[j] = src[2 * j + 1];
        }
        std::fill(d0 + S, d0 + stride, std::uint16_t{0});
        if (d1) std::fill(d1 + S, d1 + stride, std::uint16_t{0});
#endif
    }
#if defined(__AVX512BW__)
    _mm_sfence();
#endif
}

// dy as weightGradBf16Runs' pairs (P x Op dwords, dword (p, o) = (dy_o[2p], dy_o[2p + 1]), zero
// past L and past O) from its interleaved bf16 runs (toRunsBf16, geometry gd, output position l at
// gd.head + l): the two dwords of channels (2cp, 2cp + 1) at positions 2p, 2p + 1 hold the 2 x 2
// block transposed, so each qword of the pairs is a qword of the runs with its middle halves swapped.
void dyPairsFromRuns(const std::uint16_t* dyRuns, const RunGeometry& gd, std::size_t O, std::size_t L, std::size_t P,
                     std::size_t Op, std::uint32_t* pairs)
{
    const std::size_t C2 = (O + 1) / 2;
    const auto* runs = reinterpret_cast<const std::uint32_t*>(dyRuns);
    const auto swapMiddle = [](std::uint64_t q) {
        return (q & 0xFFFF00000000FFFFull) | (q >> 16 & 0x00000000FFFF0000ull) | (q << 16 & 0x0000FFFF00000000ull);
    };
    for (std::size_t p0 = 0; p0 < P; p0 += 16) {
        const bool whole = 2 * (p0 + 16) <= L;
        for (std::size_t cp = 0; cp < C2; ++cp) {
            const std::uint32_t* src = runs + cp * gd.S + gd.head + 2 * p0;
            std::uint32_t* dst = pairs + p0 * Op + 2 * cp;
            for (std::size_t p = 0; p < 16; ++p) {
                std::uint64_t q;
                if (whole) {
                    std::memcpy(&q, src + 2 * p, 8);
                } else {
                    const std::size_t l = 2 * (p0 + p);
                    const std::uint64_t lo = l < L ? src[2 * p] : 0u, hi = l + 1 < L ? src[2 * p + 1] : 0u;
                    q = lo | hi << 32;
                }
                q = swapMiddle(q);
                std::memcpy(dst + p * Op, &q, 8);
            }
        }
        for (std::size_t p = 0; p < 16; ++p)
            std::fill(pairs + (p0 + p) * Op + 2 * C2, pairs + (p0 + p + 1) * Op, 0u);
    }
}

} // namespace

namespace conv_detail {

// A (M x C k k, taps of each channel consecutive) in the bf16 runs' K order: (tap, channel pair,
// channel in pair), channels past C zero: M x 2 K2 floats, K2 = k k ceil(C / 2).
std::vector<float> bf16RunsOrder(const float* A, std::size_t M, std::size_t C, std::size_t kk)
{
    const std::size_t C2 = (C + 1) / 2, K2 = kk * C2;
    std::vector<float> out(M * 2 * K2, 0.0f);
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t t = 0; t < kk; ++t) out[m * 2 * K2 + (t * C2 + c / 2) * 2 + c % 2] = A[(m * C + c) * kk + t];
    return out;
}

// The bf16 backward of images [n0, n0 + count) (one group; Conv2d::backwardDirect, stride 1): x
// and dy (from the group's first image on; masked by the fused clamp's rule on r, which starts
// there too, when r is given) go straight from the tensors to
// bf16 runs, without the float runs of the FP32 backward; the weight gradient (weightGradBf16Runs)
// is added into part, and with rot (the rotated weights, packBf16RunsA) dx's images are written.
// The same bf16 operands, so the same bits, as rounding the float runs.
void backwardGroupBf16(Bf16Path path, const float* x, const float* dy, const float* r, float cap, std::size_t n0,
                       std::size_t count, const RunGeometry& g, const RunGeometry& gd, std::size_t C, std::size_t O,
                       std::size_t k, const std::size_t* xTaps, const std::size_t* dyTaps, float* part, bool partTransposed,
                       const PackedBf16Runs* rot, float* dx, const OutputPlaneSource* xSource,
                       const OutputPlaneSource* dySource, bool addDx, const std::uint16_t* xKept)
{
    const std::size_t L = g.length(count), P = (L + 31) / 32 * 16, Op = (O + 15) / 16 * 16, kk = k * k;
    const std::size_t C2 = (O + 1) / 2;
    // x as bf16 runs, one channel a run, each followed by zeros that the last tiles read past S
    // (the largest tap offset + 2 P is at most S + 31): as the forward kept them, or made here.
    const std::size_t xs = xKept ? keptRunStride(g.S) : g.S + 64;
    const std::uint16_t* xb = xKept;
    if (!xKept) {
        auto* runs = reinterpret_cast<std::uint16_t*>(threadBuffer(3, (C * xs + 1) / 2 + kRunsRowSlack / 4).data());
        toRunsBf16Single(x, C, n0, count, g, xs, runs, xSource);
        xb = runs;
    }
    // dy as interleaved bf16 runs (the input gradient's operand), then as the weight gradient's pairs
    auto* dyRuns = reinterpret_cast<std::uint16_t*>(threadBuffer(2, C2 * gd.S + kRunsRowSlack / 4).data());
    if (dySource) toRunsBf16(nullptr, O, n0, count, gd, dyRuns, nullptr, 0.0f, dySource);
    else toRunsBf16(dy, O, 0, count, gd, dyRuns, r, cap);
    auto* pairs = reinterpret_cast<std::uint32_t*>(threadBuffer(4, P * Op).data());
    dyPairsFromRuns(dyRuns, gd, O, L, P, Op, pairs);
    const WeightGradRuns a{path, xb, 2 * xs, xTaps, kk, C, pairs, O, Op, P};
    if (partTransposed) weightGradBf16RunsTransposed(a, part);
    else weightGradBf16Runs(a, part);
    if (!rot) return;
    const std::size_t Lx = gd.length(count);
    float* out = threadBuffer(1, C * Lx).data();
    const ConvRuns b{reinterpret_cast<const std::uint8_t*>(dyRuns), 4 * gd.S, dyTaps, kk, C2};
    gemmBf16Runs(*rot, b, Lx, out, Lx);
    if (addDx) addFromRuns(out, Lx, C, n0, count, gd, dx);
    else fromRuns(out, Lx, C, n0, count, gd, nullptr, dx);
}

// The strided products' layout, shared by the int8 and bf16 forwards: the phase runs of x
// (toPhaseRuns, as the FP32 direct kernels read them) and the k x k taps' byte offsets in runs of
// dwords laid out like them. forEachGroup(fn) calls fn(n0, count, L, phases) for each group of
// images, in parallel, with the group's FP32 phase runs in per-thread buffer 2.
struct PhaseProducts {
    PhaseGeometry g;
    DepthwiseGeometry dg;
    std::vector<std::size_t> tapBytes;

    PhaseProducts(const Tensor& x, std::size_t k, std::size_t s, std::size_t p)
        : g(phaseGeometry(x.dim(2), x.dim(3), k, s, p)), dg(depthwiseGeometry(x.dim(2), x.dim(3), k, s, p)), tapBytes(k * k)
    {
        for (std::size_t t = 0; t < k * k; ++t) tapBytes[t] = 4 * phaseTapOffset(g, t / k, t % k);
    }
    template <typename F>
    void forEachGroup(const Tensor& x, std::size_t cin, F&& fn) const
    {
        const std::size_t N = x.dim(0);
        parallelFor((N + g.Ng - 1) / g.Ng, [&](std::size_t grp) {
            const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0);
            float* phases = threadBuffer(2, cin * g.S).data();
            toPhaseRuns(x.data(), cin, n0, count, g, dg, phases);
            fn(n0, count, g.length(count), phases);
        });
    }
};

} // namespace conv_detail

bool Conv2d::takesIntegerProducts() const
{
    const bool pointwise = m_k == 1 && m_pad == 0;
    // Strided: the direct kernels' phase runs (k > 1); strided 1x1 convolutions stay FP32.
    return directKernelsBuilt() && !m_reference && m_square && m_groups == 1 && !usesBf16Gemm() &&
           (m_stride == 1 ? usesDirectKernel() || pointwise : usesDirectKernel() && m_k > 1);
}

bool Conv2d::forwardDirectS8(const Tensor& x, Tensor& y, float cap)
{
    if (!m_intInput || m_intWScale.empty() || !takesIntegerProducts() || !s8ProductsAvailable()) return false;
    if (m_intWScale.size() != 1 && m_intWScale.size() != m_cout) return false;
    const std::size_t kk = m_k * m_k, C4 = (m_cin + 3) / 4, K4 = C4 * kk;
    const U8Grid in = *m_intInput;
    // The weights' codes, k ordered (ky, kx, channel group, channel in group) as gemmConvRuns reads
    // the runs: k-group g = tap * C4 + c / 4.
    const float* w = m_weight.forwardValue().data();
    m_s8Codes.assign(m_cout * 4 * K4, 0);
    m_s8Scale.resize(m_cout);
    m_s8Corr.resize(m_cout);
    for (std::size_t o = 0; o < m_cout; ++o) {
        const float s = m_intWScale.size() == 1 ? m_intWScale[0] : m_intWScale[o];
        if (!(std::fabs(s) > 0.0f) || !std::isfinite(s)) return false;
        const float inv = 1.0f / s, tol = 1e-4f * std::fabs(s);
        std::int32_t sum = 0;
        std::int8_t* codes = m_s8Codes.data() + o * 4 * K4;
        for (std::size_t c = 0; c < m_cin; ++c)
            for (std::size_t t = 0; t < kk; ++t) {
                const float v = w[(o * m_cin + c) * kk + t];
                const float q = std::nearbyint(v * inv);
                if (!(q >= -128.0f && q <= 127.0f) || !(std::fabs(std::fma(-q, s, v)) <= tol)) return false;
                codes[(t * C4 + c / 4) * 4 + c % 4] = static_cast<std::int8_t>(q);
                sum += static_cast<std::int32_t>(q);
            }
        m_s8Scale[o] = in.scale * s;
        m_s8Corr[o] = -in.zero * sum;
    }
    packS8A(bestS8Path(), m_s8Codes.data(), m_cout, K4, m_packedS8);
    m_s8Taps.resize(kk);

    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;
    const std::size_t N = x.dim(0);
    std::atomic<bool> offGrid{false};
    if (m_stride > 1) { // the FP32 phase runs (as forwardDirect lays them out), then to codes
        const PhaseProducts pp(x, m_k, m_stride, m_pad);
        const PhaseGeometry& g = pp.g;
        pp.forEachGroup(x, m_cin, [&](std::size_t n0, std::size_t count, std::size_t L, const float* phases) {
            if (offGrid.load(std::memory_order_relaxed)) return;
            auto* runs = reinterpret_cast<std::uint8_t*>(threadBuffer(0, C4 * g.S + kRunsRowSlack / 4).data());
            float* out = threadBuffer(1, m_cout * L).data();
            for (std::size_t c4 = 0; c4 < C4; ++c4) {
                const float* rows[4];
                for (std::size_t j = 0; j < 4; ++j) rows[j] = 4 * c4 + j < m_cin ? phases + (4 * c4 + j) * g.S : nullptr;
                if (!quantizeInterleave4(rows, g.S, in, runs + 4 * c4 * g.S)) {
                    offGrid.store(true, std::memory_order_relaxed);
                    return;
                }
            }
            std::fill(runs + 4 * C4 * g.S, runs + 4 * C4 * g.S + kRunsRowSlack, static_cast<std::uint8_t>(in.zero));
            const ConvRuns b{runs, 4 * g.S, pp.tapBytes.data(), kk, C4};
            gemmConvRuns(m_packedS8, b, L, m_s8Scale.data(), m_s8Corr.data(), out, L);
            fromRuns(out, L, m_cout, n0, count, g, bias, y.data(), cap, m_roundOut);
            if (m_sink) m_sink->imagesWritten(y, n0, count);
        });
        return !offGrid.load();
    }
    const RunGeometry g = runGeometry(x.dim(2), x.dim(3), m_k, m_pad);
    for (std::size_t ky = 0; ky < m_k; ++ky)
        for (std::size_t kx = 0; kx < m_k; ++kx) m_s8Taps[ky * m_k + kx] = 4 * (ky * g.Wq + kx);
    const std::size_t* taps = m_s8Taps.data();
    parallelFor((N + g.Ng - 1) / g.Ng, [&](std::size_t grp) {
        if (offGrid.load(std::memory_order_relaxed)) return;
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = g.length(count);
        // C4 runs of S dwords (and the kernels' slack): the float buffer's storage, as bytes.
        auto* runs = reinterpret_cast<std::uint8_t*>(threadBuffer(0, C4 * g.S + kRunsRowSlack / 4).data());
        float* out = threadBuffer(1, m_cout * L).data();
        if (!toRunsU8(x.data(), m_cin, n0, count, g, in, runs)) {
            offGrid.store(true, std::memory_order_relaxed);
            return;
        }
        const ConvRuns b{runs, 4 * g.S, taps, kk, C4};
        gemmConvRuns(m_packedS8, b, L, m_s8Scale.data(), m_s8Corr.data(), out, L);
        fromRuns(out, L, m_cout, n0, count, g, bias, y.data(), cap, m_roundOut);
        if (m_sink) m_sink->imagesWritten(y, n0, count);
    });
    return !offGrid.load();
}

void Conv2d::forwardDirectBf16(const Tensor& x, Tensor& y, float cap, const PooledOut* pooled)
{
    const std::size_t kk = m_k * m_k, C2 = (m_cin + 1) / 2, K2 = kk * C2;
    packBf16RunsA(bf16RunsOrder(m_weight.forwardValue().data(), m_cout, m_cin, kk).data(), m_cout, K2, m_packedBf16Runs, m_bf16);
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;
    const std::size_t N = x.dim(0);
    std::vector<std::size_t> taps(kk);
    if (m_xSource && !takesInputSource()) throw std::logic_error(name() + ": this forward cannot take an input source");
    if (m_stride > 1) { // x's phase runs (as forwardDirect lays them out) made as bf16 pairs at once
        const PhaseProducts pp(x, m_k, m_stride, m_pad);
        const PhaseGeometry& g = pp.g;
        const std::size_t groupRuns = keptGroupStride(m_cin, g.S), groups = (N + g.Ng - 1) / g.Ng;
        if (m_keepXRuns) { // kept for the backward (backwardStridedBf16)
            m_xRunsBf16.resize(groups * groupRuns + 32);
            m_xRunsOf = x.data();
        }
        std::uint16_t* kept = m_keepXRuns ? cacheLineAligned(m_xRunsBf16.data()) : nullptr;
        parallelFor(groups, [&](std::size_t grp) {
            const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = g.length(count);
            auto* runs = reinterpret_cast<std::uint16_t*>(threadBuffer(0, C2 * g.S + kRunsRowSlack / 4).data());
            float* out = threadBuffer(1, m_cout * L).data();
            toPhaseRunsBf16(x.data(), m_cin, n0, count, g, pp.dg, runs);
            if (kept) keepSingleRuns(runs, m_cin, g.S, kept + grp * groupRuns);
            std::fill(runs + 2 * C2 * g.S, runs + 2 * C2 * g.S + kRunsRowSlack / 2, std::uint16_t{0});
            const ConvRuns b{reinterpret_cast<const std::uint8_t*>(runs), 4 * g.S, pp.tapBytes.data(), kk, C2};
            gemmBf16Runs(m_packedBf16Runs, b, L, out, L);
            fromRuns(out, L, m_cout, n0, count, g, bias, y.data(), cap, m_roundOut);
            if (m_sink) m_sink->imagesWritten(y, n0, count);
        });
        return;
    }
    const RunGeometry g = runGeometry(x.dim(2), x.dim(3), m_k, m_pad);
    for (std::size_t t = 0; t < kk; ++t) taps[t] = 4 * ((t / m_k) * g.Wq + t % m_k);
    const std::size_t groups = (N + g.Ng - 1) / g.Ng, groupRuns = keptGroupStride(m_cin, g.S);
    if (m_keepXRuns) { // kept for the backward (m_xRunsBf16)
        m_xRunsBf16.resize(groups * groupRuns + 32);
        m_xRunsOf = x.data();
    }
    std::uint16_t* kept = m_keepXRuns ? cacheLineAligned(m_xRunsBf16.data()) : nullptr;
    parallelFor(groups, [&](std::size_t grp) {
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = g.length(count);
        // C2 runs of S dwords (and the kernel's slack): the float buffer's storage.
        auto* runs = reinterpret_cast<std::uint16_t*>(threadBuffer(0, C2 * g.S + kRunsRowSlack / 4).data());
        float* out = threadBuffer(1, m_cout * L).data();
        toRunsBf16(x.data(), m_cin, n0, count, g, runs, nullptr, 0.0f, m_xSource);
        if (kept) keepSingleRuns(runs, m_cin, g.S, kept + grp * groupRuns);
        const ConvRuns b{reinterpret_cast<const std::uint8_t*>(runs), 4 * g.S, taps.data(), kk, C2};
        gemmBf16Runs(m_packedBf16Runs, b, L, out, L);
        if (pooled) fromRunsPooled(out, L, m_cout, n0, count, g, bias, *pooled, cap, m_roundOut);
        else {
            fromRuns(out, L, m_cout, n0, count, g, bias, y.data(), cap, m_roundOut);
            if (m_sink) m_sink->imagesWritten(y, n0, count);
        }
    });
}

// The strided backward in bf16, on the phase runs of the forward (PhaseProducts): dW[o, c, ky, kx]
// sums x's phase (ky % s, kx % s) at run position j + phaseTapOffset times dy_o at the output's
// run position j (weightGradBf16Runs), and dx is made phase by phase (stridedDxPlan) by
// gemmBf16Runs over dy's bf16 runs. dy's runs serve both products: they put output (i, oy, ox) at
// i Rn + oy Wq + ox with the phase runs' Rn and Wq, or this path declines. The bf16 operands are
// the im2col path's (backwardBf16), so the results differ from it only in the order of the FP32
// additions (groups of images instead of single images).
bool Conv2d::backwardStridedBf16(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (m_stride < 2 || m_k < 2 || (m_bf16 == Bf16Path::AmxBf16 && m_cin % 16 != 0)) return false;
    const PhaseProducts pp(x, m_k, m_stride, m_pad);
    const PhaseGeometry& g = pp.g;
    // dy's shape: the tensor's, or (a gradient source, setGradientSource) the output's
    const Shape dyShape = m_dySource ? outputShape(x.shape()) : dy.shape();
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dyShape[2] * dyShape[3];
    std::optional<StridedDxPlan> plan = stridedDxPlan(m_weight.forwardValue().data(), m_cout, m_cin, H, W, m_k, m_stride,
                                                      m_pad, dyShape[2], dyShape[3], g.Ng, needInputGrad ? m_bf16 : Bf16Path::Emulated);
    if (!plan || plan->gd.Wq != g.Wq || plan->gd.Rn != g.Rn) return false;
    const RunGeometry& gd = plan->gd;
    const std::size_t kk = m_k * m_k, K = m_cin * kk, C2 = (m_cout + 1) / 2, Op = (m_cout + 15) / 16 * 16;
    const std::size_t wSize = m_cout * K, bSize = m_hasBias ? m_cout : 0, partSize = wSize + bSize;
    const std::size_t groups = (N + g.Ng - 1) / g.Ng;
    m_partials.assign(groups * partSize, 0.0f);
    if (needInputGrad && !m_addDx) dx.resize(x.shape());
    std::vector<std::size_t> xTaps(kk);
    for (std::size_t t = 0; t < kk; ++t) xTaps[t] = phaseTapOffset(g, t / m_k, t % m_k);
    // x's bf16 phase runs as the training forward left them, when this is its x: no phase runs
    // of x are made here then
    const std::uint16_t* xKept = m_xRunsOf == x.data() && !m_xRunsBf16.empty() ? cacheLineAligned(m_xRunsBf16.data()) : nullptr;
    const auto group = [&](std::size_t n0, std::size_t count, std::size_t L, const float* phases) {
        float* part = m_partials.data() + n0 / g.Ng * partSize;
        // the group's dy from its first image on: the source's, written here in cache, or the tensor's
        const float* dyg = m_dySource ? sourcedGradient(n0, count, m_cout * HWo) : dy.data() + n0 * m_cout * HWo;
        for (std::size_t o = 0; o < bSize; ++o)
            for (std::size_t i = 0; i < count; ++i) part[wSize + o] += fixedOrderSum(dyg + (i * m_cout + o) * HWo, HWo);
        // x's phase runs in bf16, one channel a run, each followed by zeros the last tiles read
        // (the largest tap offset + 2 P is at most S + 31): as the forward kept them, or made here.
        const std::size_t xs = xKept ? keptRunStride(g.S) : g.S + 64, P = (L + 31) / 32 * 16;
        const std::uint16_t* xb = xKept ? xKept + n0 / g.Ng * keptGroupStride(m_cin, g.S) : nullptr;
        if (!xKept) {
            auto* runs = reinterpret_cast<std::uint16_t*>(threadBuffer(3, (m_cin * xs + 1) / 2 + kRunsRowSlack / 4).data());
            for (std::size_t c = 0; c < m_cin; ++c) {
                std::uint16_t* d = runs + c * xs;
                bf16BitsSpan(phases + c * g.S, g.S, d);
                std::fill(d + g.S, d + xs, std::uint16_t{0});
            }
            xb = runs;
        }
        auto* dyRuns = reinterpret_cast<std::uint16_t*>(threadBuffer(0, C2 * gd.S + kRunsRowSlack / 4).data());
        toRunsBf16(dyg, m_cout, 0, count, gd, dyRuns);
        std::fill(dyRuns + 2 * C2 * gd.S, dyRuns + 2 * C2 * gd.S + kRunsRowSlack / 2, std::uint16_t{0});
        auto* pairs = reinterpret_cast<std::uint32_t*>(threadBuffer(4, P * Op).data());
        dyPairsFromRuns(dyRuns, gd, m_cout, L, P, Op, pairs);
        weightGradBf16Runs(WeightGradRuns{m_bf16, xb, 2 * xs, xTaps.data(), kk, m_cin, pairs, m_cout, Op, P}, part);
        if (!needInputGrad) return;
        static thread_local std::vector<std::size_t> taps;
        phaseInputGradient(*plan, m_cin, H, W, m_stride, m_pad, n0, count, dx.data(), m_addDx,
                           [&](const StridedDxPhase& ph, float* out, std::size_t Lp) {
                               const std::size_t tt = ph.Ty * ph.Tx;
                               taps.resize(tt);
                               for (std::size_t t = 0; t < ph.Ty; ++t)
                                   for (std::size_t u = 0; u < ph.Tx; ++u) taps[t * ph.Tx + u] = 4 * (gd.head - t * gd.Wq - u);
                               gemmBf16Runs(ph.bf16, ConvRuns{reinterpret_cast<const std::uint8_t*>(dyRuns), 4 * gd.S, taps.data(), tt, C2},
                                            Lp, out, Lp);
                           });
    };
    if (xKept)
        parallelFor(groups, [&](std::size_t grp) {
            const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0);
            group(n0, count, g.length(count), nullptr);
        });
    else
        pp.forEachGroup(x, m_cin, group);
    reducePartials(m_partials, groups, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
    return true;
}

} // namespace quantscope
