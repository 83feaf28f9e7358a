#include "nn/conv2d.h"

#include "nn/conv2d_shared.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <tbb/enumerable_thread_specific.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>

namespace quantscope {

namespace {
std::size_t outDim(std::size_t in, std::size_t k, std::size_t s, std::size_t p) { return (in + 2 * p - k) / s + 1; }
} // namespace

Conv2d::Conv2d(std::string name, std::size_t inChannels, std::size_t outChannels, std::size_t kernel,
               std::size_t stride, std::size_t padding, std::size_t groups, bool hasBias)
    : Layer(std::move(name)), m_cin(inChannels), m_cout(outChannels), m_k(kernel), m_stride(stride),
      m_pad(padding), m_groups(groups), m_hasBias(hasBias)
{
    if (!m_cin || !m_cout || !m_k || !m_stride || !m_groups)
        throw ConfigError(this->name() + ": channels, kernel, stride and groups must be positive");
    if (m_cin % m_groups || m_cout % m_groups)
        throw ConfigError(this->name() + ": " + std::to_string(m_cin) + " input and " + std::to_string(m_cout) +
                          " output channels are not multiples of groups = " + std::to_string(m_groups));
    m_weight.name = "weight";
    m_weight.isWeight = true;
    m_weight.value = Tensor({m_cout, m_cin / m_groups, m_k, m_k});
    m_weight.grad = Tensor(m_weight.value.shape());
    m_bias.name = "bias";
    m_bias.value = Tensor({m_hasBias ? m_cout : 0});
    m_bias.grad = Tensor(m_bias.value.shape());
}

std::string Conv2d::describe() const
{
    std::string d = std::to_string(m_cin) + "->" + std::to_string(m_cout) + " " + std::to_string(m_k) + "x" +
                    std::to_string(m_k) + " s" + std::to_string(m_stride) + " p" + std::to_string(m_pad);
    if (isDepthwise()) d += " depthwise";
    else if (m_groups > 1) d += " g" + std::to_string(m_groups);
    if (!m_hasBias) d += " no bias";
    return d;
}

Shape Conv2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[1] != m_cin)
        throw ConfigError(name() + ": expected input (N," + std::to_string(m_cin) + ",H,W), got " + shapeString(in));
    if (in[2] + 2 * m_pad < m_k || in[3] + 2 * m_pad < m_k)
        throw ConfigError(name() + ": input " + shapeString(in) + " is smaller than the kernel");
    return {in[0], m_cout, outDim(in[2], m_k, m_stride, m_pad), outDim(in[3], m_k, m_stride, m_pad)};
}

namespace {

// The output columns ox whose input column ox*stride + kx - pad lies inside [0, W): [lo, hi).
struct ColRange {
    std::size_t lo, hi;
};
ColRange validCols(std::size_t W, std::size_t Wo, std::size_t kx, std::size_t stride, std::size_t pad)
{
    std::size_t lo = 0;
    if (pad > kx) lo = (pad - kx + stride - 1) / stride;
    // largest ox with ox*stride + kx - pad <= W - 1
    const long top = static_cast<long>(W) - 1 + static_cast<long>(pad) - static_cast<long>(kx);
    std::size_t hi = top < 0 ? 0 : static_cast<std::size_t>(top) / stride + 1;
    if (hi > Wo) hi = Wo;
    if (lo > hi) lo = hi;
    return {lo, hi};
}

#if defined(__AVX512F__)
// Stride-1 rows with AVX-512 masks: out[ox] = in[ox + off] for ox in [lo, hi), 0 elsewhere in
// [0, n). Masked-off lanes are never loaded (no fault), so the padding costs nothing extra.
inline __mmask16 laneMask(long from, long to) // lanes j with from <= j < to, within [0, 16)
{
    if (from < 0) from = 0;
    if (to > 16) to = 16;
    if (to <= from) return 0;
    return static_cast<__mmask16>(((1u << (to - from)) - 1u) << from);
}

inline void copyRowMasked(const float* in, long off, float* out, std::size_t n, std::size_t lo, std::size_t hi)
{
    for (std::size_t b = 0; b < n; b += 16) {
        const long base = static_cast<long>(b);
        const __mmask16 store = laneMask(0, static_cast<long>(n) - base);
        const __mmask16 valid = laneMask(static_cast<long>(lo) - base, static_cast<long>(hi) - base) & store;
        const float* src = reinterpret_cast<const float*>(reinterpret_cast<std::uintptr_t>(in) +
                                                          static_cast<std::uintptr_t>((base + off) * 4));
        _mm512_mask_storeu_ps(out + b, store, _mm512_maskz_loadu_ps(valid, src));
    }
}

// Stride-2 rows: out[ox] = in[2 ox + off] for ox in [lo, hi), 0 elsewhere in [0, n). Two masked
// loads cover the 32 source floats of 16 outputs; one permute keeps the even lanes.
inline void copyRowMaskedStride2(const float* in, long off, float* out, std::size_t n, std::size_t lo, std::size_t hi)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (std::size_t b = 0; b < n; b += 16) {
        const long base = static_cast<long>(b);
        const __mmask16 store = laneMask(0, static_cast<long>(n) - base);
        const __mmask16 valid = laneMask(static_cast<long>(lo) - base, static_cast<long>(hi) - base) & store;
        // Output lane j reads source float 2j of the 32 starting at 2b + off: lane 2j of the
        // low half (j < 8) or lane 2j - 16 of the high half. Spread the validity mask accordingly.
#if defined(__BMI2__)
        const __mmask16 lowMask = static_cast<__mmask16>(_pdep_u32(valid & 0xFFu, 0x5555u));
        const __mmask16 highMask = static_cast<__mmask16>(_pdep_u32((valid >> 8) & 0xFFu, 0x5555u));
#else
        __mmask16 lowMask = 0, highMask = 0;
        for (int j = 0; j < 16; ++j)
            if (valid & (1u << j)) {
                if (j < 8) lowMask |= static_cast<__mmask16>(1u << (2 * j));
                else highMask |= static_cast<__mmask16>(1u << (2 * j - 16));
            }
#endif
        const float* src = reinterpret_cast<const float*>(reinterpret_cast<std::uintptr_t>(in) +
                                                          static_cast<std::uintptr_t>((2 * base + off) * 4));
        const __m512 a = _mm512_maskz_loadu_ps(lowMask, src);
        const __m512 c = _mm512_maskz_loadu_ps(highMask, src + 16);
        _mm512_mask_storeu_ps(out + b, store, _mm512_permutex2var_ps(a, even, c));
    }
}

// out[ox + off] += in[ox] for ox in [lo, hi)
inline void addRowMasked(const float* in, long off, float* out, std::size_t lo, std::size_t hi)
{
    for (std::size_t b = lo & ~std::size_t{15}; b < hi; b += 16) {
        const long base = static_cast<long>(b);
        const __mmask16 valid = laneMask(static_cast<long>(lo) - base, static_cast<long>(hi) - base);
        float* dst = reinterpret_cast<float*>(reinterpret_cast<std::uintptr_t>(out) +
                                              static_cast<std::uintptr_t>((base + off) * 4));
        const __m512 d = _mm512_maskz_loadu_ps(valid, dst);
        const __m512 v = _mm512_maskz_loadu_ps(valid, in + b);
        _mm512_mask_storeu_ps(dst, valid, _mm512_add_ps(d, v));
    }
}
#endif

} // namespace

// x: (C, H, W) -> cols: (C*k*k, Ho*Wo); row (c, ky, kx), column (oy, ox).
// cols[(c,ky,kx), (oy,ox)] = x[c, oy*s + ky - p, ox*s + kx - p], 0 outside the image.
void im2col(const float* x, std::size_t C, std::size_t H, std::size_t W, std::size_t k, std::size_t stride,
            std::size_t pad, float* cols, std::size_t ldc)
{
    const std::size_t Ho = outDim(H, k, stride, pad), Wo = outDim(W, k, stride, pad);
    if (ldc == 0) ldc = Ho * Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                float* row = cols + ((c * k + ky) * k + kx) * ldc;
                const ColRange r = validCols(W, Wo, kx, stride, pad);
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * stride + ky) - static_cast<long>(pad);
                    float* __restrict out = row + oy * Wo;
                    if (iy < 0 || iy >= static_cast<long>(H)) {
                        for (std::size_t ox = 0; ox < Wo; ++ox) out[ox] = 0.0f;
                        continue;
                    }
                    // Output column ox reads input column ox*stride + off (inside [r.lo, r.hi)).
                    const float* __restrict in = x + (c * H + static_cast<std::size_t>(iy)) * W;
                    const long off = static_cast<long>(kx) - static_cast<long>(pad);
#if defined(__AVX512F__)
                    if (stride == 1) {
                        copyRowMasked(in, off, out, Wo, r.lo, r.hi);
                        continue;
                    }
                    if (stride == 2) {
                        copyRowMaskedStride2(in, off, out, Wo, r.lo, r.hi);
                        continue;
                    }
#endif
                    for (std::size_t ox = 0; ox < r.lo; ++ox) out[ox] = 0.0f;
                    if (stride == 1) {
                        const float* __restrict src = in + (static_cast<long>(r.lo) + off);
                        for (std::size_t j = 0; j < r.hi - r.lo; ++j) out[r.lo + j] = src[j];
                    } else {
                        const float* __restrict src = in + (static_cast<long>(r.lo * stride) + off);
                        for (std::size_t j = 0; j < r.hi - r.lo; ++j) out[r.lo + j] = src[j * stride];
                    }
                    for (std::size_t ox = r.hi; ox < Wo; ++ox) out[ox] = 0.0f;
                }
            }
}

// dx[c, iy, ix] += sum of the dcols entries that im2col copied from (c, iy, ix).
void col2imAdd(const float* dcols, std::size_t C, std::size_t H, std::size_t W, std::size_t k,
               std::size_t stride, std::size_t pad, float* dx, std::size_t ldc)
{
    const std::size_t Ho = outDim(H, k, stride, pad), Wo = outDim(W, k, stride, pad);
    if (ldc == 0) ldc = Ho * Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                const float* row = dcols + ((c * k + ky) * k + kx) * ldc;
                const ColRange r = validCols(W, Wo, kx, stride, pad);
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * stride + ky) - static_cast<long>(pad);
                    if (iy < 0 || iy >= static_cast<long>(H)) continue;
                    if (r.hi == r.lo) continue;
                    const long off = static_cast<long>(kx) - static_cast<long>(pad);
#if defined(__AVX512F__)
                    if (stride == 1) {
                        addRowMasked(row + oy * Wo, off, dx + (c * H + static_cast<std::size_t>(iy)) * W, r.lo, r.hi);
                        continue;
                    }
#endif
                    float* __restrict out = dx + (c * H + static_cast<std::size_t>(iy)) * W + (static_cast<long>(r.lo * stride) + off);
                    const float* __restrict in = row + oy * Wo + r.lo;
                    if (stride == 1) {
                        for (std::size_t j = 0; j < r.hi - r.lo; ++j) out[j] += in[j];
                    } else {
                        for (std::size_t j = 0; j < r.hi - r.lo; ++j) out[j * stride] += in[j];
                    }
                }
            }
}

namespace conv_detail {

// One image per GEMM: its columns stay in L2. Two or four images side by side in one matrix
// measured 1-5 % slower on seed-cnn (2 threads, AVX-512).
// Sum of n floats in a fixed association order (16 interleaved partial sums), so the result does
// not depend on the address of the data, and the loop vectorises.
float fixedOrderSum(const float* v, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += v[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += v[i + j];
    float s = 0.0f;
    for (float a : acc) s += a;
    return s;
}

std::vector<float>& threadBuffer(int which, std::size_t size)
{
    static thread_local std::vector<float> buffers[3];
    std::vector<float>& b = buffers[which];
    if (b.size() < size) b.resize(size);
    return b;
}

// dW = sum_n partials[n][0, wSize), db = sum_n partials[n][wSize, wSize + bSize), in image order.
void reducePartials(const std::vector<float>& partials, std::size_t N, std::size_t wSize, std::size_t bSize,
                    float* dW, float* dB)
{
    const std::size_t partSize = wSize + bSize;
    std::copy_n(partials.data(), wSize, dW);
    std::copy_n(partials.data() + wSize, bSize, dB);
    for (std::size_t n = 1; n < N; ++n) {
        const float* p = partials.data() + n * partSize;
        for (std::size_t i = 0; i < wSize; ++i) dW[i] += p[i];
        for (std::size_t o = 0; o < bSize; ++o) dB[o] += p[wSize + o];
    }
}

// --- Depthwise: a direct convolution per channel plane ------------------------------------------
//
// The zero-padded plane (Hp x Wp) is split into s x s phase planes of Hq x Wq: phase (py, px)
// holds the padded pixels (r s + py, c s + px). Tap (ky, kx) of output pixel (oy, ox) then reads
// phase (ky % s, kx % s) at (oy + ky / s, ox + kx / s). With the output laid out at the same
// row pitch Wq, each tap is one unit-stride run over j = oy Wq + ox < L = (Ho - 1) Wq + Wo
// (columns Wo..Wq-1 of each row are scratch), for any stride, and long even for 7x7 planes.
// For 3x3 the taps unroll inside the loop over j, so each output is summed in a register.
// Every output is summed in tap order whichever way, so the result never depends on threads.
// The runs are rounded up to whole blocks of kBlock floats (buffers carry that much zeroed slack),
// so no vectorised loop ends in a scalar tail (planes are short: about 10% faster here).
// Up to 7x7 and stride 4, so the geometry and the tap pointers live on the stack (no allocation
// per step); anything larger takes the im2col path.

std::size_t roundUpToBlock(std::size_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

bool directDepthwise(const Conv2d& c)
{
    return c.isDepthwise() && c.kernel() * c.kernel() <= kMaxDepthwiseTaps && c.stride() <= kMaxDepthwiseStride;
}


// Every division is here, once per call: the per-row loops below only add.
DepthwiseGeometry depthwiseGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t s, std::size_t p)
{
    DepthwiseGeometry g{H, W, s, p, outDim(H, k, s, p), outDim(W, k, s, p), (H + 2 * p + s - 1) / s,
                        (W + 2 * p + s - 1) / s, 0, 0, p % s, p / s, {}, 0, {}, {}, {}, 0};
    g.L = (g.Ho - 1) * g.Wq + g.Wo;
    g.Lr = roundUpToBlock(g.L);
    for (std::size_t px = 0; px < s; ++px) {
        const std::size_t ix0 = (px + s - p % s) % s; // first ix with (ix + p) % s == px
        if (ix0 < W) g.runs[g.numRuns++] = {px * g.phaseSize() + (ix0 + p) / s, ix0, (W - ix0 + s - 1) / s};
    }
    for (std::size_t ky = 0; ky < k; ++ky)
        for (std::size_t kx = 0; kx < k; ++kx) {
            const std::size_t within = (ky / s) * g.Wq + kx / s;
            g.taps[ky * k + kx] = ((ky % s) * s + kx % s) * g.phaseSize() + within;
            g.margin = std::max(g.margin, within);
        }
    std::size_t n = 0;
    for (std::size_t f = 0; f < s * s; ++f) {
        g.phaseBegin[f] = n;
        for (std::size_t t = 0; t < k * k; ++t)
            if (g.taps[t] / g.phaseSize() == f) g.phaseTaps[n++] = t;
    }
    g.phaseBegin[s * s] = n;
    return g;
}

#if defined(__AVX512F__)
// Stride 2: the even and odd elements of in[0, n) to ev[0, ceil(n / 2)) and od[0, floor(n / 2)).
void deinterleave2(const float* __restrict in, std::size_t n, float* __restrict ev, float* __restrict od)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i;
        const __mmask16 k0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
        const __mmask16 k1 = left >= 32 ? __mmask16(0xFFFF) : left > 16 ? __mmask16((1u << (left - 16)) - 1u) : __mmask16(0);
        const __m512 a = _mm512_maskz_loadu_ps(k0, in + i), b = _mm512_maskz_loadu_ps(k1, in + i + 16);
        const std::size_t ne = std::min<std::size_t>(16, (left + 1) / 2), no = std::min<std::size_t>(16, left / 2);
        _mm512_mask_storeu_ps(ev + i / 2, __mmask16((1u << ne) - 1u), _mm512_permutex2var_ps(a, ie, b));
        if (no) _mm512_mask_storeu_ps(od + i / 2, __mmask16((1u << no) - 1u), _mm512_permutex2var_ps(a, io, b));
    }
}

// The inverse: out[2 m] = ev[m], out[2 m + 1] = od[m] for 2 m (+ 1) < n.
void interleave2(const float* __restrict ev, const float* __restrict od, std::size_t n, float* __restrict out)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (std::size_t i = 0; i < n; i += 32) {
        const std::size_t left = n - i;
        const std::size_t ne = std::min<std::size_t>(16, (left + 1) / 2), no = std::min<std::size_t>(16, left / 2);
        const __m512 e = _mm512_maskz_loadu_ps(__mmask16((1u << ne) - 1u), ev + i / 2);
        const __m512 o = _mm512_maskz_loadu_ps(__mmask16((1u << no) - 1u), od + i / 2);
        const __mmask16 k0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
        const __mmask16 k1 = left >= 32 ? __mmask16(0xFFFF) : left > 16 ? __mmask16((1u << (left - 16)) - 1u) : __mmask16(0);
        _mm512_mask_storeu_ps(out + i, k0, _mm512_permutex2var_ps(e, lo, o));
        if (k1) _mm512_mask_storeu_ps(out + i + 16, k1, _mm512_permutex2var_ps(e, hi, o));
    }
}
#endif

// x: (H, W) -> the phases of one plane, phaseStride floats apart (phase (py, px) row r at
// q + (py s + px) phaseStride + r Wq), without clearing the padding.
void scatterPhases(const float* __restrict x, const DepthwiseGeometry& g, float* __restrict q, std::size_t phaseStride)
{
    std::array<std::size_t, kMaxDepthwiseStride> at{};
    for (std::size_t r = 0; r < g.numRuns; ++r)
        at[r] = g.runs[r].at / g.phaseSize() * phaseStride + g.runs[r].at % g.phaseSize();
    std::size_t py = g.py0, qr = g.qr0;
    for (std::size_t iy = 0; iy < g.H; ++iy) {
        const float* __restrict in = x + iy * g.W;
        float* row = q + py * g.s * phaseStride + qr * g.Wq;
#if defined(__AVX512F__)
        if (g.s == 2 && g.numRuns == 2) { // the run whose first input column is 0 takes the even ones
            const std::size_t e = g.runs[0].ix0 == 0 ? 0 : 1;
            deinterleave2(in, g.W, row + at[e], row + at[1 - e]);
            if (++py == g.s) {
                py = 0;
                ++qr;
            }
            continue;
        }
#endif
        for (std::size_t r = 0; r < g.numRuns; ++r) {
            const DepthwiseGeometry::Run& run = g.runs[r];
            float* __restrict out = row + at[r];
            if (g.s == 1)
                copyRow(out, in, run.n);
            else if (g.s == 2)
                for (std::size_t m = 0; m < run.n; ++m) out[m] = in[run.ix0 + 2 * m];
            else
                for (std::size_t m = 0; m < run.n; ++m) out[m] = in[run.ix0 + m * g.s];
        }
        if (++py == g.s) {
            py = 0;
            ++qr;
        }
    }
}


// dq: (s, s, Hq, Wq) -> dx: (H, W), dropping the padding (the inverse of scatterPhases).
void fromPhases(const float* __restrict dq, const DepthwiseGeometry& g, float* __restrict dx)
{
    std::size_t py = g.py0, qr = g.qr0;
    for (std::size_t iy = 0; iy < g.H; ++iy) {
        float* __restrict out = dx + iy * g.W;
        const float* row = dq + py * g.s * g.phaseSize() + qr * g.Wq;
#if defined(__AVX512F__)
        if (g.s == 2 && g.numRuns == 2) {
            const std::size_t e = g.runs[0].ix0 == 0 ? 0 : 1;
            interleave2(row + g.runs[e].at, row + g.runs[1 - e].at, g.W, out);
            if (++py == g.s) {
                py = 0;
                ++qr;
            }
            continue;
        }
#endif
        for (std::size_t r = 0; r < g.numRuns; ++r) {
            const DepthwiseGeometry::Run& run = g.runs[r];
            const float* __restrict in = row + run.at;
            if (g.s == 1)
                copyRow(out, in, run.n);
            else if (g.s == 2)
                for (std::size_t m = 0; m < run.n; ++m) out[run.ix0 + 2 * m] = in[m];
            else
                for (std::size_t m = 0; m < run.n; ++m) out[run.ix0 + m * g.s] = in[m];
        }
        if (++py == g.s) {
            py = 0;
            ++qr;
        }
    }
}

// y[j] = a x[j] and y[j] += a x[j]
void scaleTo(float* __restrict y, const float* __restrict x, float a, std::size_t n)
{
    for (std::size_t j = 0; j < n; ++j) y[j] = a * x[j];
}

void axpy(float* __restrict y, const float* __restrict x, float a, std::size_t n)
{
    for (std::size_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// out[j] = sum_t w[t] src[t][j] for j < n, the taps in order. kTaps > 0 fixes the tap count at
// compile time: the taps unroll inside the loop over j and each output is summed in a register.
// kTaps == 0: nTaps (at least 1) passes over out.
template <std::size_t kTaps>
void tapSum(const float* const* src, const float* w, std::size_t nTaps, std::size_t n, float* __restrict out)
{
    if constexpr (kTaps > 0) {
        for (std::size_t j = 0; j < n; ++j) {
            float a = w[0] * src[0][j];
#pragma GCC unroll 64
            for (std::size_t t = 1; t < kTaps; ++t) a += w[t] * src[t][j];
            out[j] = a;
        }
    } else {
        scaleTo(out, src[0], w[0], n);
        for (std::size_t t = 1; t < nTaps; ++t) axpy(out, src[t], w[t], n);
    }
}

// tapSum with the tap counts of 3x3 kernels unrolled: 9 taps at stride 1, phases of 4, 2, 2 and 1
// taps at stride 2.
void tapSumAny(const float* const* src, const float* w, std::size_t nTaps, std::size_t n, float* __restrict out)
{
    switch (nTaps) {
    case 9: tapSum<9>(src, w, nTaps, n, out); break;
    case 4: tapSum<4>(src, w, nTaps, n, out); break;
    case 2: tapSum<2>(src, w, nTaps, n, out); break;
    case 1: tapSum<1>(src, w, nTaps, n, out); break;
    default: tapSum<0>(src, w, nTaps, n, out);
    }
}

// Dot product of n floats in a fixed association order: 16 interleaved partial sums (as in
// fixedOrderSum), then added pairwise, halves first (a short dependency chain: the depthwise
// weight gradient takes k^2 of these per plane, and planes can be 7x7).
float fixedOrderDot(const float* a, const float* b, std::size_t n)
{
    float acc[16] = {};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += a[i + j] * b[i + j];
    for (std::size_t j = 0; j < 8; ++j) acc[j] += acc[j + 8];
    for (std::size_t j = 0; j < 4; ++j) acc[j] += acc[j + 4];
    for (std::size_t j = 0; j < 2; ++j) acc[j] += acc[j + 2];
    return acc[0] + acc[1];
}

} // namespace conv_detail

using namespace conv_detail;

// x: (N, Cin, H, W), W: (Cout, K = Cin/G*k*k), y: (N, Cout, Ho, Wo); group g maps input channels
// [g Cin/G, (g+1) Cin/G) to output channels [g Cout/G, (g+1) Cout/G).
// y_n[g] = W[g] * cols_n[g] + b 1^T
void Conv2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    using Idx = Eigen::Index;
    const Shape os = outputShape(x.shape());
    y.resize(os);
    const std::size_t N = os[0], H = x.dim(2), W = x.dim(3), HWo = os[2] * os[3];
    const std::size_t G = m_groups, cinG = m_cin / G, coutG = m_cout / G;
    const std::size_t K = cinG * m_k * m_k, inStride = m_cin * H * W;
    const float* wdata = m_weight.forwardValue().data();
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;

    // The columns are rebuilt in backward rather than cached: one image's columns stay in
    // cache, a whole batch's would not (42 MB for seed-cnn's conv2), and the rebuild is cheaper.
    if (ctx.training) m_colsFor = x.shape();
    if (directDepthwise(*this)) {
        forwardDepthwise(x, y);
        return;
    }
    if (usesBf16Gemm()) {
        forwardBf16(x, y);
        return;
    }
    if (usesDirectKernel()) {
        forwardDirect(x, y);
        return;
    }
    const bool pointwise = m_k == 1 && m_stride == 1 && m_pad == 0;
    parallelFor(N, [&](std::size_t n) {
        float* cols = pointwise ? nullptr : threadBuffer(0, K * HWo).data();
        for (std::size_t g = 0; g < G; ++g) {
            const float* xg = x.data() + n * inStride + g * cinG * H * W;
            // A 1x1 stride-1 convolution reads its input as the columns: no copy.
            const float* src = pointwise ? xg : cols;
            if (!pointwise) im2col(xg, cinG, H, W, m_k, m_stride, m_pad, cols);
            ConstMatrixMap C(src, static_cast<Idx>(K), static_cast<Idx>(HWo));
            ConstMatrixMap Wg(wdata + g * coutG * K, static_cast<Idx>(coutG), static_cast<Idx>(K));
            float* out = y.data() + (n * m_cout + g * coutG) * HWo;
            MatrixMap Y(out, static_cast<Idx>(coutG), static_cast<Idx>(HWo));
            Y.noalias() = Wg * C;
            if (!bias) continue;
            for (std::size_t o = 0; o < coutG; ++o) {
                float* row = out + o * HWo;
                const float bo = bias[g * coutG + o];
                for (std::size_t j = 0; j < HWo; ++j) row[j] += bo;
            }
        }
    });
}

// dW[g] = sum_n dy_n[g] * cols_n[g]^T ; db = sum_n dy_n 1 ; dcols_n[g] = W[g]^T dy_n[g] ;
// dx_n = col2im(dcols_n)
void Conv2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    using Idx = Eigen::Index;
    if (m_colsFor != x.shape()) throw ConfigError(name() + ": backward without a matching training forward");
    if (directDepthwise(*this)) {
        backwardDepthwise(x, dy, dx, needInputGrad);
        return;
    }
    if (usesBf16Gemm()) {
        backwardBf16(x, dy, dx, needInputGrad);
        return;
    }
    if (usesDirectKernel()) {
        backwardDirect(x, dy, dx, needInputGrad);
        return;
    }
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dy.dim(2) * dy.dim(3);
    const std::size_t G = m_groups, cinG = m_cin / G, coutG = m_cout / G;
    const std::size_t K = cinG * m_k * m_k, inStride = m_cin * H * W;
    const float* wdata = m_weight.forwardValue().data();

    // One partial gradient per image (dW then db), reduced in image order: thread-count free.
    const std::size_t wSize = m_cout * K, bSize = m_hasBias ? m_cout : 0;
    const std::size_t partSize = wSize + bSize;
    m_partials.resize(N * partSize);
    const bool pointwise = m_k == 1 && m_stride == 1 && m_pad == 0;
    if (needInputGrad) {
        dx.resize(x.shape());
        if (!pointwise) dx.setZero(); // col2im accumulates; the pointwise path writes every element
    }
    parallelFor(N, [&](std::size_t n) {
        float* cols = pointwise ? nullptr : threadBuffer(0, K * HWo).data();
        float* part = m_partials.data() + n * partSize;
        for (std::size_t g = 0; g < G; ++g) {
            const std::size_t inOff = n * inStride + g * cinG * H * W;
            const float* src = pointwise ? x.data() + inOff : cols;
            if (!pointwise) im2col(x.data() + inOff, cinG, H, W, m_k, m_stride, m_pad, cols);
            const float* gy = dy.data() + (n * m_cout + g * coutG) * HWo;
            ConstMatrixMap C(src, static_cast<Idx>(K), static_cast<Idx>(HWo));
            ConstMatrixMap Gm(gy, static_cast<Idx>(coutG), static_cast<Idx>(HWo));
            MatrixMap(part + g * coutG * K, static_cast<Idx>(coutG), static_cast<Idx>(K)).noalias() = Gm * C.transpose();
            if (bSize)
                for (std::size_t o = 0; o < coutG; ++o) part[wSize + g * coutG + o] = fixedOrderSum(gy + o * HWo, HWo);
            if (needInputGrad) {
                ConstMatrixMap Wg(wdata + g * coutG * K, static_cast<Idx>(coutG), static_cast<Idx>(K));
                if (pointwise) { // dx_n[g] = W[g]^T dy_n[g] directly
                    MatrixMap(dx.data() + inOff, static_cast<Idx>(K), static_cast<Idx>(HWo)).noalias() = Wg.transpose() * Gm;
                    continue;
                }
                float* dcols = threadBuffer(1, K * HWo).data();
                MatrixMap D(dcols, static_cast<Idx>(K), static_cast<Idx>(HWo));
                D.noalias() = Wg.transpose() * Gm;
                col2imAdd(dcols, cinG, H, W, m_k, m_stride, m_pad, dx.data() + inOff);
            }
        }
    });
    reducePartials(m_partials, N, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
}

// x: (N, C, H, W), W: (C, 1, k, k), y: (N, C, Ho, Wo), one plane at a time (see DepthwiseGeometry).
// y[n,c,oy,ox] = sum_{ky,kx} w[c,ky,kx] xpad[n,c, oy s + ky, ox s + kx] + b[c]
void Conv2d::forwardDepthwise(const Tensor& x, Tensor& y) const
{
    const DepthwiseGeometry g = depthwiseGeometry(x.dim(2), x.dim(3), m_k, m_stride, m_pad);
    const std::size_t N = x.dim(0), C = m_cin, kk = m_k * m_k, HW = g.H * g.W, HWo = g.Ho * g.Wo;
    const float* wdata = m_weight.forwardValue().data();
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;
    parallelFor(N, [&](std::size_t n) {
        float* q = threadBuffer(0, g.planeBuffer()).data();
        float* acc = threadBuffer(1, g.Lr).data();
        const float* src[kMaxDepthwiseTaps];
        for (std::size_t t = 0; t < kk; ++t) src[t] = q + g.taps[t];
        // every plane fills the same cells: the padding and slack are zeroed once per image
        std::memset(q, 0, g.planeBuffer() * sizeof(float));
        for (std::size_t c = 0; c < C; ++c) {
            scatterPhases(x.data() + (n * C + c) * HW, g, q, g.phaseSize());
            tapSumAny(src, wdata + c * kk, kk, g.Lr, acc);
            float* out = y.data() + (n * C + c) * HWo;
            for (std::size_t oy = 0; oy < g.Ho; ++oy) {
                const float* row = acc + oy * g.Wq;
                float* o = out + oy * g.Wo;
                if (bias)
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) o[ox] = row[ox] + bias[c];
                else
                    for (std::size_t ox = 0; ox < g.Wo; ++ox) o[ox] = row[ox];
            }
        }
    });
}

// dW[c,ky,kx] = sum_n sum_{oy,ox} dy[n,c,oy,ox] xpad[n,c, oy s + ky, ox s + kx] ; db[c] = sum_n sum dy[n,c] ;
// dxpad[n,c,iy,ix] = sum_{ky,kx} w[c,ky,kx] dy[n,c, (iy - ky) / s, (ix - kx) / s] over the taps that divide
void Conv2d::backwardDepthwise(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    const DepthwiseGeometry g = depthwiseGeometry(x.dim(2), x.dim(3), m_k, m_stride, m_pad);
    const std::size_t N = x.dim(0), C = m_cin, kk = m_k * m_k, HW = g.H * g.W, HWo = g.Ho * g.Wo;
    const std::size_t P = g.phaseSize();
    const float* wdata = m_weight.forwardValue().data();
    // One partial gradient per image, reduced in image order, as in the im2col path.
    const std::size_t wSize = C * kk, bSize = m_hasBias ? C : 0, partSize = wSize + bSize;
    m_partials.resize(N * partSize);
    if (needInputGrad) dx.resize(x.shape()); // every element is written below
    parallelFor(N, [&](std::size_t n) {
        float* q = threadBuffer(0, g.planeBuffer()).data();
        float* G = threadBuffer(1, g.gradBuffer()).data();
        float* dq = threadBuffer(2, g.planeBuffer()).data();
        const float* gq = G + g.margin; // dy at row pitch Wq, zero before, after and in the scratch columns
        float* part = m_partials.data() + n * partSize;
        const float* src[kMaxDepthwiseTaps];
        for (std::size_t t = 0; t < kk; ++t) src[t] = q + g.taps[t];
        // dx of phase f gathers dy shifted back by each of its taps' offsets within the phase
        const float* back[kMaxDepthwiseTaps];
        float wf[kMaxDepthwiseTaps];
        for (std::size_t i = 0; i < kk; ++i) back[i] = gq - g.taps[g.phaseTaps[i]] % P;
        std::memset(G, 0, g.gradBuffer() * sizeof(float));
        std::memset(q, 0, g.planeBuffer() * sizeof(float)); // as in forwardDepthwise
        for (std::size_t c = 0; c < C; ++c) {
            const float* gy = dy.data() + (n * C + c) * HWo;
            for (std::size_t oy = 0; oy < g.Ho; ++oy) copyRow(G + g.margin + oy * g.Wq, gy + oy * g.Wo, g.Wo);
            scatterPhases(x.data() + (n * C + c) * HW, g, q, g.phaseSize());
            // gq is zero past L: the whole blocks add nothing
            for (std::size_t t = 0; t < kk; ++t) part[c * kk + t] = fixedOrderDot(gq, src[t], g.Lr);
            if (bSize) part[wSize + c] = fixedOrderSum(gy, HWo);
            if (!needInputGrad) continue;
            const float* w = wdata + c * kk;
            for (std::size_t f = 0; f < g.s * g.s; ++f) {
                const std::size_t b = g.phaseBegin[f], T = g.phaseBegin[f + 1] - b;
                float* out = dq + f * P; // the last block runs into phase f + 1 (written next) or the slack
                if (T == 0) {
                    std::fill(out, out + P, 0.0f);
                    continue;
                }
                for (std::size_t i = 0; i < T; ++i) wf[i] = w[g.phaseTaps[b + i]];
                tapSumAny(back + b, wf, T, roundUpToBlock(P), out);
            }
            fromPhases(dq, g, dx.data() + (n * C + c) * HW);
        }
    });
    reducePartials(m_partials, N, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
}


} // namespace quantscope
