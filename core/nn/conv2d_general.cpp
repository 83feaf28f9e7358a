// im2col and col2im for any convolution window (conv_geometry.h): rectangular kernels, two
// strides, asymmetric padding, dilation. Square windows go to the vectorised pair in
// conv2d_im2col.cpp; the rest run this plain loop, which is also what the tests check the fast
// pair against.
#include "nn/conv2d.h"

namespace quantscope {

// x: (C, H, W) -> cols: (C*kh*kw, Ho*Wo);
// cols[(c,ky,kx), (oy,ox)] = x[c, oy*sh + ky*dh - top, ox*sw + kx*dw - left], 0 outside the image.
void im2col(const float* x, std::size_t C, std::size_t H, std::size_t W, const ConvGeometry& g, float* cols,
            std::size_t ldc)
{
    if (g.isSquare()) return im2col(x, C, H, W, g.kh, g.sh, g.padTop, cols, ldc);
    const std::size_t Ho = g.outH(H), Wo = g.outW(W);
    if (ldc == 0) ldc = Ho * Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < g.kh; ++ky)
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
                float* row = cols + ((c * g.kh + ky) * g.kw + kx) * ldc;
                const OutputSpan r = validOutputSpan(W, Wo, kx * g.dw, g.sw, g.padLeft);
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * g.sh + ky * g.dh) - static_cast<long>(g.padTop);
                    float* __restrict out = row + oy * Wo;
                    if (iy < 0 || iy >= static_cast<long>(H)) {
                        for (std::size_t ox = 0; ox < Wo; ++ox) out[ox] = 0.0f;
                        continue;
                    }
                    const float* __restrict in = x + (c * H + static_cast<std::size_t>(iy)) * W;
                    const long off = static_cast<long>(kx * g.dw) - static_cast<long>(g.padLeft);
                    for (std::size_t ox = 0; ox < r.lo; ++ox) out[ox] = 0.0f;
                    for (std::size_t ox = r.lo; ox < r.hi; ++ox) out[ox] = in[static_cast<long>(ox * g.sw) + off];
                    for (std::size_t ox = r.hi; ox < Wo; ++ox) out[ox] = 0.0f;
                }
            }
}

// dx[c, iy, ix] += sum of the dcols entries that im2col copied from (c, iy, ix).
void col2imAdd(const float* dcols, std::size_t C, std::size_t H, std::size_t W, const ConvGeometry& g, float* dx,
               std::size_t ldc)
{
    if (g.isSquare()) return col2imAdd(dcols, C, H, W, g.kh, g.sh, g.padTop, dx, ldc);
    const std::size_t Ho = g.outH(H), Wo = g.outW(W);
    if (ldc == 0) ldc = Ho * Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < g.kh; ++ky)
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
                const float* row = dcols + ((c * g.kh + ky) * g.kw + kx) * ldc;
                const OutputSpan r = validOutputSpan(W, Wo, kx * g.dw, g.sw, g.padLeft);
                if (r.hi == r.lo) continue;
                const long off = static_cast<long>(kx * g.dw) - static_cast<long>(g.padLeft);
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * g.sh + ky * g.dh) - static_cast<long>(g.padTop);
                    if (iy < 0 || iy >= static_cast<long>(H)) continue;
                    float* __restrict out = dx + (c * H + static_cast<std::size_t>(iy)) * W;
                    const float* __restrict in = row + oy * Wo;
                    for (std::size_t ox = r.lo; ox < r.hi; ++ox) out[static_cast<long>(ox * g.sw) + off] += in[ox];
                }
            }
}

} // namespace quantscope
