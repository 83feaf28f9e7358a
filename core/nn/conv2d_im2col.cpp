// im2col and col2imAdd for square windows (one kernel size, stride and padding on both axes):
// stride-1 and stride-2 rows copied, and added back, with AVX-512 masks where the build has
// AVX-512 (masked-off lanes are never loaded, so the padding costs nothing extra), other strides
// and builds in plain loops. Conv2d's im2col path (conv2d.cpp, through conv2d_general.cpp's
// any-window pair) and the direct kernels' col2im fallback (conv2d_direct.cpp) call them.
#include "nn/conv2d.h"
#include "nn/conv_geometry.h"

#include "nn/conv2d_shared.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <cstdint>

namespace quantscope {

using conv_detail::outDim;

namespace {

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
                const OutputSpan r = validOutputSpan(W, Wo, kx, stride, pad);
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
                const OutputSpan r = validOutputSpan(W, Wo, kx, stride, pad);
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

} // namespace quantscope
