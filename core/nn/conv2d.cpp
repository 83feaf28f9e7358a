#include "nn/conv2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <tbb/enumerable_thread_specific.h>

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
            std::size_t pad, float* cols)
{
    const std::size_t Ho = outDim(H, k, stride, pad), Wo = outDim(W, k, stride, pad);
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                float* row = cols + ((c * k + ky) * k + kx) * Ho * Wo;
                for (std::size_t oy = 0; oy < Ho; ++oy) {
                    const long iy = static_cast<long>(oy * stride + ky) - static_cast<long>(pad);
                    float* out = row + oy * Wo;
                    if (iy < 0 || iy >= static_cast<long>(H)) {
                        std::memset(out, 0, Wo * sizeof(float));
                        continue;
                    }
                    const float* in = x + (c * H + static_cast<std::size_t>(iy)) * W;
                    if (stride == 1 && pad == 0) {
                        std::memcpy(out, in + kx, Wo * sizeof(float));
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
               std::size_t stride, std::size_t pad, float* dx)
{
    const std::size_t Ho = outDim(H, k, stride, pad), Wo = outDim(W, k, stride, pad);
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                const float* row = dcols + ((c * k + ky) * k + kx) * Ho * Wo;
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

// x: (N, Cin, H, W), W: (Cout, K = Cin*k*k), y: (N, Cout, Ho, Wo)
// y_n = W * cols_n + b 1^T
void Conv2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    const Shape os = outputShape(x.shape());
    y.resize(os);
    const std::size_t N = os[0], H = x.dim(2), W = x.dim(3), HWo = os[2] * os[3];
    const std::size_t K = m_cin * m_k * m_k, inStride = m_cin * H * W;
    const Tensor& w = m_weight.forwardValue();
    const ConstMatrixMap Wm = w.matrix(m_cout, K);
    const ConstVectorMap b = m_bias.forwardValue().vector();

    // The columns are rebuilt in backward rather than cached: one image's columns stay in L2,
    // a whole batch's would not (42 MB for seed-cnn's conv2), and the rebuild is cheaper.
    if (ctx.training) m_colsFor = x.shape();
    static thread_local std::vector<float> scratch;
    parallelFor(N, [&](std::size_t n) {
        if (scratch.size() < K * HWo) scratch.resize(K * HWo);
        float* cols = scratch.data();
        im2col(x.data() + n * inStride, m_cin, H, W, m_k, m_stride, m_pad, cols);
        ConstMatrixMap C(cols, static_cast<Eigen::Index>(K), static_cast<Eigen::Index>(HWo));
        MatrixMap Y(y.data() + n * m_cout * HWo, static_cast<Eigen::Index>(m_cout), static_cast<Eigen::Index>(HWo));
        Y.noalias() = Wm * C;
        Y.colwise() += b;
    });
}

// dW = sum_n dy_n * cols_n^T ; db = sum_n dy_n 1 ; dcols_n = W^T dy_n ; dx_n = col2im(dcols_n)
void Conv2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (m_colsFor != x.shape()) throw ConfigError(name() + ": backward without a matching training forward");
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dy.dim(2) * dy.dim(3);
    const std::size_t K = m_cin * m_k * m_k, inStride = m_cin * H * W;
    const ConstMatrixMap Wm = m_weight.forwardValue().matrix(m_cout, K);

    // Weight gradient: fixed chunks of images, one partial sum each, reduced in order, so the
    // result does not depend on the thread count.
    constexpr std::size_t kImagesPerChunk = 4;
    const std::size_t chunks = (N + kImagesPerChunk - 1) / kImagesPerChunk;
    std::vector<RowMatrix> partW(chunks);
    std::vector<Eigen::VectorXf> partB(chunks);
    if (needInputGrad) {
        dx.resize(x.shape());
        dx.setZero();
    }
    static thread_local std::vector<float> dcolsBuf, colsBuf;
    parallelFor(chunks, [&](std::size_t c) {
        RowMatrix& gW = partW[c];
        Eigen::VectorXf& gB = partB[c];
        gW.setZero(static_cast<Eigen::Index>(m_cout), static_cast<Eigen::Index>(K));
        gB.setZero(static_cast<Eigen::Index>(m_cout));
        const std::size_t end = std::min(N, (c + 1) * kImagesPerChunk);
        if (colsBuf.size() < K * HWo) colsBuf.resize(K * HWo);
        for (std::size_t n = c * kImagesPerChunk; n < end; ++n) {
            im2col(x.data() + n * inStride, m_cin, H, W, m_k, m_stride, m_pad, colsBuf.data());
            ConstMatrixMap C(colsBuf.data(), static_cast<Eigen::Index>(K), static_cast<Eigen::Index>(HWo));
            ConstMatrixMap G(dy.data() + n * m_cout * HWo, static_cast<Eigen::Index>(m_cout),
                             static_cast<Eigen::Index>(HWo));
            gW.noalias() += G * C.transpose();
            // db: plain in-order row sums. Eigen's vectorised rowwise().sum() peels an unaligned
            // head, so its rounding depended on dy's address and runs were not reproducible.
            for (std::size_t o = 0; o < m_cout; ++o) {
                const float* row = dy.data() + (n * m_cout + o) * HWo;
                float s = 0.0f;
                for (std::size_t i = 0; i < HWo; ++i) s += row[i];
                gB[static_cast<Eigen::Index>(o)] += s;
            }
            if (needInputGrad) {
                if (dcolsBuf.size() < K * HWo) dcolsBuf.resize(K * HWo);
                MatrixMap D(dcolsBuf.data(), static_cast<Eigen::Index>(K), static_cast<Eigen::Index>(HWo));
                D.noalias() = Wm.transpose() * G;
                col2imAdd(dcolsBuf.data(), m_cin, H, W, m_k, m_stride, m_pad, dx.data() + n * inStride);
            }
        }
    });
    MatrixMap dW = m_weight.grad.matrix(m_cout, K);
    VectorMap dB = m_bias.grad.vector();
    dW.setZero();
    dB.setZero();
    for (std::size_t c = 0; c < chunks; ++c) {
        dW += partW[c];
        dB += partB[c];
    }
}

} // namespace quantscope
