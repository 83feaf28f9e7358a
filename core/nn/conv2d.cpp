#include "nn/conv2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <tbb/enumerable_thread_specific.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace quantscope {

namespace {
std::size_t outDim(std::size_t in, std::size_t k, std::size_t s, std::size_t p) { return (in + 2 * p - k) / s + 1; }
} // namespace

Conv2d::Conv2d(std::string name, std::size_t inChannels, std::size_t outChannels, std::size_t kernel,
               std::size_t stride, std::size_t padding)
    : Layer(std::move(name)), m_cin(inChannels), m_cout(outChannels), m_k(kernel), m_stride(stride),
      m_pad(padding)
{
    if (!m_cin || !m_cout || !m_k || !m_stride)
        throw ConfigError("conv2d: channels, kernel and stride must be positive");
    m_weight.name = "weight";
    m_weight.isWeight = true;
    m_weight.value = Tensor({m_cout, m_cin, m_k, m_k});
    m_weight.grad = Tensor(m_weight.value.shape());
    m_bias.name = "bias";
    m_bias.value = Tensor({m_cout});
    m_bias.grad = Tensor({m_cout});
}

std::string Conv2d::describe() const
{
    return std::to_string(m_cin) + "->" + std::to_string(m_cout) + " " + std::to_string(m_k) + "x" +
           std::to_string(m_k) + " s" + std::to_string(m_stride) + " p" + std::to_string(m_pad);
}

Shape Conv2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[1] != m_cin)
        throw ConfigError(name() + ": expected input (N," + std::to_string(m_cin) + ",H,W), got " + shapeString(in));
    if (in[2] + 2 * m_pad < m_k || in[3] + 2 * m_pad < m_k)
        throw ConfigError(name() + ": input " + shapeString(in) + " is smaller than the kernel");
    return {in[0], m_cout, outDim(in[2], m_k, m_stride, m_pad), outDim(in[3], m_k, m_stride, m_pad)};
}

// x: (C, H, W) -> cols: (C*k*k, Ho*Wo); row (c, ky, kx), column (oy, ox).
void im2col(const float* x, std::size_t C, std::size_t H, std::size_t W, std::size_t k, std::size_t stride,
            std::size_t pad, float* cols, std::size_t ldc)
{
    const std::size_t Ho = outDim(H, k, stride, pad), Wo = outDim(W, k, stride, pad);
    if (ldc == 0) ldc = Ho * Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                float* row = cols + ((c * k + ky) * k + kx) * ldc;
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * stride + ky) - static_cast<long>(pad);
                    float* out = row + oy * Wo;
                    if (iy < 0 || iy >= static_cast<long>(H)) {
                        std::memset(out, 0, Wo * sizeof(float));
                        continue;
                    }
                    const float* in = x + (c * H + static_cast<std::size_t>(iy)) * W;
                    if (stride == 1 && pad == 0) {
                        // Short rows (24 floats for seed-cnn): an inline loop, not a memcpy call.
                        const float* src = in + kx;
                        for (std::size_t ox = 0; ox < Wo; ++ox) out[ox] = src[ox];
                        continue;
                    }
                    for (std::size_t ox = 0; ox < Wo; ++ox) {
                        const long ix = static_cast<long>(ox * stride + kx) - static_cast<long>(pad);
                        out[ox] = (ix < 0 || ix >= static_cast<long>(W)) ? 0.0f : in[ix];
                    }
                }
            }
}

void col2imAdd(const float* dcols, std::size_t C, std::size_t H, std::size_t W, std::size_t k,
               std::size_t stride, std::size_t pad, float* dx, std::size_t ldc)
{
    const std::size_t Ho = outDim(H, k, stride, pad), Wo = outDim(W, k, stride, pad);
    if (ldc == 0) ldc = Ho * Wo;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                const float* row = dcols + ((c * k + ky) * k + kx) * ldc;
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * stride + ky) - static_cast<long>(pad);
                    if (iy < 0 || iy >= static_cast<long>(H)) continue;
                    float* out = dx + (c * H + static_cast<std::size_t>(iy)) * W;
                    const float* in = row + oy * Wo;
                    if (stride == 1 && pad == 0) {
                        float* o = out + kx;
                        for (std::size_t ox = 0; ox < Wo; ++ox) o[ox] += in[ox];
                        continue;
                    }
                    for (std::size_t ox = 0; ox < Wo; ++ox) {
                        const long ix = static_cast<long>(ox * stride + kx) - static_cast<long>(pad);
                        if (ix >= 0 && ix < static_cast<long>(W)) out[ix] += in[ox];
                    }
                }
            }
}

namespace {

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
    static thread_local std::vector<float> buffers[2];
    std::vector<float>& b = buffers[which];
    if (b.size() < size) b.resize(size);
    return b;
}

} // namespace

// x: (N, Cin, H, W), W: (Cout, K = Cin*k*k), y: (N, Cout, Ho, Wo)
// y_n = W * cols_n + b 1^T
void Conv2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    using Idx = Eigen::Index;
    const Shape os = outputShape(x.shape());
    y.resize(os);
    const std::size_t N = os[0], H = x.dim(2), W = x.dim(3), HWo = os[2] * os[3];
    const std::size_t K = m_cin * m_k * m_k, inStride = m_cin * H * W;
    const ConstMatrixMap Wm = m_weight.forwardValue().matrix(m_cout, K);
    const float* bias = m_bias.forwardValue().data();

    // The columns are rebuilt in backward rather than cached: one image's columns stay in
    // cache, a whole batch's would not (42 MB for seed-cnn's conv2), and the rebuild is cheaper.
    if (ctx.training) m_colsFor = x.shape();
    parallelFor(N, [&](std::size_t n) {
        float* cols = threadBuffer(0, K * HWo).data();
        im2col(x.data() + n * inStride, m_cin, H, W, m_k, m_stride, m_pad, cols);
        ConstMatrixMap C(cols, static_cast<Idx>(K), static_cast<Idx>(HWo));
        float* out = y.data() + n * m_cout * HWo;
        MatrixMap Y(out, static_cast<Idx>(m_cout), static_cast<Idx>(HWo));
        Y.noalias() = Wm * C;
        for (std::size_t o = 0; o < m_cout; ++o) {
            float* row = out + o * HWo;
            const float bo = bias[o];
            for (std::size_t j = 0; j < HWo; ++j) row[j] += bo;
        }
    });
}

// dW = sum_n dy_n * cols_n^T ; db = sum_n dy_n 1 ; dcols_n = W^T dy_n ; dx_n = col2im(dcols_n)
void Conv2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    using Idx = Eigen::Index;
    if (m_colsFor != x.shape()) throw ConfigError(name() + ": backward without a matching training forward");
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dy.dim(2) * dy.dim(3);
    const std::size_t K = m_cin * m_k * m_k, inStride = m_cin * H * W;
    const ConstMatrixMap Wm = m_weight.forwardValue().matrix(m_cout, K);

    // One partial gradient per image (dW then db), reduced in image order: thread-count free.
    const std::size_t partSize = m_cout * K + m_cout;
    m_partials.resize(N * partSize);
    if (needInputGrad) {
        dx.resize(x.shape());
        dx.setZero();
    }
    parallelFor(N, [&](std::size_t n) {
        float* cols = threadBuffer(0, K * HWo).data();
        im2col(x.data() + n * inStride, m_cin, H, W, m_k, m_stride, m_pad, cols);
        const float* g = dy.data() + n * m_cout * HWo;
        ConstMatrixMap C(cols, static_cast<Idx>(K), static_cast<Idx>(HWo));
        ConstMatrixMap G(g, static_cast<Idx>(m_cout), static_cast<Idx>(HWo));
        float* part = m_partials.data() + n * partSize;
        MatrixMap(part, static_cast<Idx>(m_cout), static_cast<Idx>(K)).noalias() = G * C.transpose();
        for (std::size_t o = 0; o < m_cout; ++o) part[m_cout * K + o] = fixedOrderSum(g + o * HWo, HWo);
        if (needInputGrad) {
            float* dcols = threadBuffer(1, K * HWo).data();
            MatrixMap D(dcols, static_cast<Idx>(K), static_cast<Idx>(HWo));
            D.noalias() = Wm.transpose() * G;
            col2imAdd(dcols, m_cin, H, W, m_k, m_stride, m_pad, dx.data() + n * inStride);
        }
    });
    float* dW = m_weight.grad.data();
    float* dB = m_bias.grad.data();
    std::copy_n(m_partials.data(), m_cout * K, dW);
    std::copy_n(m_partials.data() + m_cout * K, m_cout, dB);
    for (std::size_t n = 1; n < N; ++n) {
        const float* p = m_partials.data() + n * partSize;
        for (std::size_t i = 0; i < m_cout * K; ++i) dW[i] += p[i];
        for (std::size_t o = 0; o < m_cout; ++o) dB[o] += p[m_cout * K + o];
    }
}

} // namespace quantscope
