#include "nn/conv2d.h"
#include "nn/conv_geometry.h"

#include "nn/conv2d_runs.h"
#include "nn/conv2d_shared.h"
#include "nn/maxpool2d.h"

#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/scope_exit.h"

#include <tbb/enumerable_thread_specific.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace quantscope {

Conv2d::Conv2d(std::string name, std::size_t inChannels, std::size_t outChannels, std::size_t kernel,
               std::size_t stride, std::size_t padding, std::size_t groups, bool hasBias)
    : Conv2d(std::move(name), inChannels, outChannels, ConvGeometry::square(kernel, stride, padding), groups, hasBias)
{
}

Conv2d::Conv2d(std::string name, std::size_t inChannels, std::size_t outChannels, const ConvGeometry& geometry,
               std::size_t groups, bool hasBias)
    : Layer(std::move(name)), m_cin(inChannels), m_cout(outChannels), m_k(geometry.kh), m_stride(geometry.sh),
      m_pad(geometry.padTop), m_groups(groups), m_geom(geometry), m_square(geometry.isSquare()), m_hasBias(hasBias)
{
    if (!m_cin || !m_cout || !m_geom.valid() || !m_groups)
        throw ConfigError(this->name() + ": channels, kernel, stride, dilation and groups must be positive");
    if (m_cin % m_groups || m_cout % m_groups)
        throw ConfigError(this->name() + ": " + std::to_string(m_cin) + " input and " + std::to_string(m_cout) +
                          " output channels are not multiples of groups = " + std::to_string(m_groups));
    checkWeightCount(this->name(), "Conv2d " + describe(), {m_cout, m_cin / m_groups, m_geom.kh, m_geom.kw});
    m_weight.name = "weight";
    m_weight.isWeight = true;
    m_weight.value = Tensor({m_cout, m_cin / m_groups, m_geom.kh, m_geom.kw});
    m_weight.grad = Tensor(m_weight.value.shape());
    m_bias.name = "bias";
    m_bias.value = Tensor({m_hasBias ? m_cout : 0});
    m_bias.grad = Tensor(m_bias.value.shape());
}

std::string Conv2d::describe() const
{
    // Square windows as before ("3x3 s2 p1"); any other in full ("k 1x7 s 1 p 0,3,0,3 d 1").
    std::string d = std::to_string(m_cin) + "->" + std::to_string(m_cout) + " ";
    if (m_square) d += std::to_string(m_k) + "x" + std::to_string(m_k) + " s" + std::to_string(m_stride) + " p" + std::to_string(m_pad);
    else d += m_geom.text();
    if (isDepthwise()) d += " depthwise";
    else if (m_groups > 1) d += " g" + std::to_string(m_groups);
    if (!m_hasBias) d += " no bias";
    return d;
}

Shape Conv2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[1] != m_cin)
        throw ConfigError(name() + ": expected input (N," + std::to_string(m_cin) + ",H,W), got " + shapeString(in));
    if (!m_geom.fits(in[2], in[3]))
        throw ConfigError(name() + ": input " + shapeString(in) + " is smaller than the window (" + m_geom.text() +
                          ": " + std::to_string(m_geom.spanH()) + "x" + std::to_string(m_geom.spanW()) + " against " +
                          std::to_string(m_geom.paddedH(in[2])) + "x" + std::to_string(m_geom.paddedW(in[3])) +
                          " padded); the output would be empty");
    return {in[0], m_cout, m_geom.outH(in[2]), m_geom.outW(in[3])};
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

float fixedOrderSumMasked(const float* v, const float* r, std::size_t n, float cap)
{
    const bool bounded = boundedClamp(cap);
    float acc[16] = {};
    std::size_t i = 0;
#if defined(__AVX512F__)
    // lane j of the accumulator is acc[j]: the same additions in the same order
    const auto pass = [&](__m512 rv, __mmask16 k) { return gradientPassMask(rv, k, cap, bounded); };
    __m512 a = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16)
        a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(pass(_mm512_loadu_ps(r + i), 0xFFFF), v + i));
    if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1u);
        a = _mm512_mask_add_ps(a, k, a, _mm512_maskz_loadu_ps(pass(_mm512_maskz_loadu_ps(k, r + i), k), v + i));
    }
    _mm512_storeu_ps(acc, a);
#else
    for (; i + 16 <= n; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += gradientPasses(v[i + j], r[i + j], cap, bounded);
    for (std::size_t j = 0; i + j < n; ++j) acc[j] += gradientPasses(v[i + j], r[i + j], cap, bounded);
#endif
    float s = 0.0f;
    for (float a : acc) s += a;
    return s;
}

void addBiasClamp(float* y, std::size_t n, const float* bias, float cap, bool roundBf16)
{
    if (roundBf16) {
        addBiasClamp(y, n, bias, cap, false);
        roundRowBf16(y, n);
        return;
    }
    if (bias && !hasClamp(cap)) {
        const float b = *bias;
        for (std::size_t j = 0; j < n; ++j) y[j] += b;
    } else if (bias) {
        const float b = *bias;
        for (std::size_t j = 0; j < n; ++j) y[j] = clampTo(y[j] + b, cap);
    } else if (hasClamp(cap)) {
        for (std::size_t j = 0; j < n; ++j) y[j] = clampTo(y[j], cap);
    }
}

#if defined(__SANITIZE_ADDRESS__)
namespace {
// Under ASan a buffer's floats past the caller's `size` are poisoned until the next call (ASan's
// container-overflow annotation over the vector's capacity): a kernel that reads or writes past
// what it asked for is reported even when an earlier, larger request left the buffer longer, not
// only on the first call in a thread. The whole capacity is addressable again before the vector
// itself touches it (resize, destruction).
struct AnnotatedBuffer {
    std::vector<float> v;
    std::size_t visible = 0; // floats addressable now; the capacity when not annotated

    void annotate(std::size_t from, std::size_t to)
    {
        if (v.capacity() == 0 || from == to) return;
        float* beg = v.data();
        __sanitizer_annotate_contiguous_container(beg, beg + v.capacity(), beg + from, beg + to);
        visible = to;
    }
    std::vector<float>& take(std::size_t size)
    {
        annotate(visible, v.capacity());
        if (v.size() < size) v.resize(size);
        visible = v.capacity();
        annotate(visible, size);
        return v;
    }
    ~AnnotatedBuffer() { annotate(visible, v.capacity()); }
};
} // namespace

std::vector<float>& threadBuffer(int which, std::size_t size)
{
    static thread_local AnnotatedBuffer buffers[kThreadBuffers];
    return buffers[which].take(size);
}
#else
std::vector<float>& threadBuffer(int which, std::size_t size)
{
    static thread_local std::vector<float> buffers[kThreadBuffers];
    std::vector<float>& b = buffers[which];
    if (b.size() < size) b.resize(size);
    return b;
}
#endif

namespace {

// dst[i] = sum over n < N of partials[n partSize + i] for i < n, added in n order (each element's
// order, hence its bits, do not depend on how the elements are split over the threads).
void sumPartialsInOrder(const float* partials, std::size_t N, std::size_t partSize, std::size_t n, float* dst)
{
    // Chunks of 4096 elements: seed-cnn's conv2 sums 32 groups of 18,432 weights, which a single
    // thread took ~2 % of a step for while the other core waited.
    parallelChunks(n, 4096, [&](std::size_t i0, std::size_t i1) {
        std::copy(partials + i0, partials + i1, dst + i0);
        for (std::size_t g = 1; g < N; ++g) {
            const float* p = partials + g * partSize;
            for (std::size_t i = i0; i < i1; ++i) dst[i] += p[i];
        }
    });
}

} // namespace

// dW = sum_n partials[n][0, wSize), db = sum_n partials[n][wSize, wSize + bSize), in image order.
void reducePartials(const std::vector<float>& partials, std::size_t N, std::size_t wSize, std::size_t bSize,
                    float* dW, float* dB)
{
    const std::size_t partSize = wSize + bSize;
    if (N == 0) { // an empty batch: no gradient
        std::fill_n(dW, wSize, 0.0f);
        std::fill_n(dB, bSize, 0.0f);
        return;
    }
    sumPartialsInOrder(partials.data(), N, partSize, wSize, dW);
    std::copy_n(partials.data() + wSize, bSize, dB);
    for (std::size_t n = 1; n < N; ++n)
        for (std::size_t o = 0; o < bSize; ++o) dB[o] += partials[n * partSize + wSize + o];
}

void reducePartialsTransposed(const std::vector<float>& partials, std::size_t N, std::size_t O, std::size_t C, std::size_t kk,
                              std::size_t Op, std::size_t bSize, float* dW, float* dB)
{
    const std::size_t tSize = kk * C * Op, partSize = tSize + bSize, wSize = O * C * kk;
    if (N == 0) {
        std::fill_n(dW, wSize, 0.0f);
        std::fill_n(dB, bSize, 0.0f);
        return;
    }
    std::vector<float> total(tSize);
    sumPartialsInOrder(partials.data(), N, partSize, tSize, total.data());
    // Row t C + c, column o of the total -> dW[(o C + c) k k + t]
    for (std::size_t o = 0; o < O; ++o)
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t t = 0; t < kk; ++t) dW[(o * C + c) * kk + t] = total[(t * C + c) * Op + o];
    std::copy_n(partials.data() + tSize, bSize, dB);
    for (std::size_t n = 1; n < N; ++n)
        for (std::size_t o = 0; o < bSize; ++o) dB[o] += partials[n * partSize + tSize + o];
}

} // namespace conv_detail

using namespace conv_detail;

// x: (N, Cin, H, W), W: (Cout, K = Cin/G*k*k), y: (N, Cout, Ho, Wo); group g maps input channels
// [g Cin/G, (g+1) Cin/G) to output channels [g Cout/G, (g+1) Cout/G).
// y_n[g] = W[g] * cols_n[g] + b 1^T
void Conv2d::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    forwardImpl(x, y, ctx, std::numeric_limits<float>::quiet_NaN());
}

const float* Conv2d::sourcedGradient(std::size_t n0, std::size_t count, std::size_t imageSize) const
{
    float* buf = threadBuffer(5, count * imageSize).data();
    m_dySource->gradientImages(n0, count, buf);
    return buf;
}

bool Conv2d::takesGradientSource() const
{
    // stride 1: backwardDirect (FP32 or bf16 runs); strided: the FP32 kernels (backwardStrided,
    // backwardSubsampled) or, k > 1, the bf16 phase runs (backwardStridedBf16, which takes the
    // source's images group by group; where its layout does not apply, the source's whole
    // gradient goes to the im2col path); otherwise the FP32 im2col path
    if (usesDirectKernel()) return m_stride == 1 || !usesBf16Gemm() || m_k > 1;
    return !usesBf16Gemm() && !directDepthwise(*this);
}

bool Conv2d::fusesActivation() const { return (!usesBf16Gemm() || usesBf16Runs()) && !directDepthwise(*this); }

void Conv2d::forwardClamped(const Tensor& x, Tensor& r, const RunContext& ctx, float cap)
{
    if (!fusesActivation()) throw std::logic_error(name() + ": no fused activation on this convolution's path");
    forwardImpl(x, r, ctx, cap);
}

bool Conv2d::poolsInEpilogue() const
{
    return fusesActivation() && usesDirectKernel() && m_stride == 1 && (!usesBf16Gemm() || usesBf16Runs());
}

void Conv2d::forwardPooled(const Tensor& x, Tensor& y, const RunContext& ctx, float cap, MaxPool2d& pool)
{
    if (!poolsInEpilogue() || !pool.fusesAfterConvolution())
        throw std::logic_error(name() + ": no fused pool on this convolution's path");
    const Shape os = outputShape(x.shape());
    PooledOut pooled;
    pooled.argmax = pool.beginFused(os, y, ctx.training);
    pooled.y = y.data();
    if (ctx.training) m_colsFor = x.shape();
    m_lastInteger = false;
    m_roundOut = ctx.roundOutputBf16;
    m_keepXRuns = ctx.training;
    m_xRunsOf = nullptr;
    // An evaluation frees the runs a training forward kept (1-2 MB a layer, held after training
    // ends otherwise); the next training forward makes them again.
    if (!ctx.training && m_xRunsBf16.capacity()) std::vector<std::uint16_t>().swap(m_xRunsBf16);
    // y is the pool's output here: the kernels write it through pooled, never as the conv's output
    if (usesBf16Runs()) forwardDirectBf16(x, y, cap, &pooled);
    else forwardDirect(x, y, cap, &pooled);
}

namespace {
// m_ste for one backward call, cleared however it ends.
struct SteScope {
    const std::uint8_t*& slot;
    SteScope(const std::uint8_t*& s, const std::uint8_t* ste) : slot(s) { slot = ste; }
    ~SteScope() { slot = nullptr; }
};
} // namespace

void Conv2d::backwardPooled(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap,
                            MaxPool2d& pool, const std::uint8_t* ste)
{
    if (!poolsInEpilogue()) throw std::logic_error(name() + ": no fused pool on this convolution's path");
    if (m_colsFor != x.shape() || pool.fusedInputShape() != outputShape(x.shape()))
        throw ConfigError(name() + ": backward without a matching training forward");
    // The pool's and the clamp's backward run group by group inside the convolution's (the
    // direct kernels' path, stride 1: what poolsInEpilogue allows), never as a whole dense tensor.
    const PooledGrad pooled{&pool, &y, &dy, cap};
    const SteScope scope(m_ste, ste);
    m_dxRoundedInPass = false;
    m_dxFinite = true;
    backwardDirect(x, nullptr, dy, dx, needInputGrad, std::numeric_limits<float>::quiet_NaN(), &pooled);
    finishDxRounding(dx, needInputGrad);
}

void Conv2d::finishDxRounding(Tensor& dx, bool needInputGrad)
{
    if (!roundsDx(needInputGrad) || m_dxRoundedInPass) return;
    std::atomic<bool> finite{true};
    float* d = dx.data();
    const std::size_t n = dx.numel();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        if (!roundBf16AllFinite(d + b, e - b)) finite.store(false, std::memory_order_relaxed);
    });
    m_dxFinite = finite.load();
}

void Conv2d::forwardImpl(const Tensor& x, Tensor& y, const RunContext& ctx, float cap)
{
    using Idx = Eigen::Index;
    if (m_xSource && !takesInputSource()) throw std::logic_error(name() + ": this forward cannot take an input source");
    const Shape os = outputShape(x.shape());
    y.resize(os);
    const std::size_t N = os[0], H = x.dim(2), W = x.dim(3), HWo = os[2] * os[3];
    const std::size_t G = m_groups, cinG = m_cin / G, coutG = m_cout / G;
    const std::size_t K = cinG * m_geom.taps(), inStride = m_cin * H * W;
    const float* wdata = m_weight.forwardValue().data();
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;

    // The columns are rebuilt in backward rather than cached: one image's columns stay in
    // cache, a whole batch's would not (42 MB for seed-cnn's conv2), and the rebuild is cheaper.
    if (ctx.training) m_colsFor = x.shape();
    m_lastInteger = false;
    m_roundOut = ctx.roundOutputBf16;
    m_keepXRuns = ctx.training;
    m_xRunsOf = nullptr;
    // An evaluation frees the runs a training forward kept (1-2 MB a layer, held after training
    // ends otherwise); the next training forward makes them again.
    if (!ctx.training && m_xRunsBf16.capacity()) std::vector<std::uint16_t>().swap(m_xRunsBf16);
    if (directDepthwise(*this)) {
        forwardDepthwise(x, y, m_roundOut);
        return;
    }
    if (usesBf16Gemm()) {
        // stride 1 on the runs, strided kernels of 2x2 or more on the phase runs, the rest im2col
        if (usesBf16Runs() || (usesDirectKernel() && m_k > 1)) forwardDirectBf16(x, y, cap);
        else forwardBf16(x, y);
        return;
    }
    if (usesDirectKernel()) {
        forwardDirect(x, y, cap);
        return;
    }
    const bool pointwise = m_square && m_k == 1 && m_stride == 1 && m_pad == 0;
    if (pointwise && forwardDirectS8(x, y, cap)) { // QAT's integer products, laid out as runs
        m_lastInteger = true;
        return;
    }
    parallelFor(N, [&](std::size_t n) {
        float* cols = pointwise ? nullptr : threadBuffer(0, K * HWo).data();
        for (std::size_t g = 0; g < G; ++g) {
            const float* xg = x.data() + n * inStride + g * cinG * H * W;
            // A 1x1 stride-1 convolution reads its input as the columns: no copy.
            const float* src = pointwise ? xg : cols;
            if (!pointwise) im2col(xg, cinG, H, W, m_geom, cols);
            ConstMatrixMap C(src, static_cast<Idx>(K), static_cast<Idx>(HWo));
            ConstMatrixMap Wg(wdata + g * coutG * K, static_cast<Idx>(coutG), static_cast<Idx>(K));
            float* out = y.data() + (n * m_cout + g * coutG) * HWo;
            MatrixMap Y(out, static_cast<Idx>(coutG), static_cast<Idx>(HWo));
            Y.noalias() = Wg * C;
            for (std::size_t o = 0; o < coutG; ++o)
                addBiasClamp(out + o * HWo, HWo, bias ? bias + g * coutG + o : nullptr, cap, m_roundOut);
        }
        if (m_sink) m_sink->imagesWritten(y, n, 1);
    });
}

// dW[g] = sum_n dy_n[g] * cols_n[g]^T ; db = sum_n dy_n 1 ; dcols_n[g] = W[g]^T dy_n[g] ;
// dx_n = col2im(dcols_n)
void Conv2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    backwardImpl(x, nullptr, dy, dx, needInputGrad, std::numeric_limits<float>::quiet_NaN());
}

void Conv2d::backwardClamped(const Tensor& x, const Tensor& r, const Tensor& dr, Tensor& dx, bool needInputGrad, float cap,
                             const std::uint8_t* ste)
{
    if (!fusesActivation()) throw std::logic_error(name() + ": no fused activation on this convolution's path");
    if (r.shape() != dr.shape()) throw ConfigError(name() + ": fused activation output and gradient differ in shape");
    const SteScope scope(m_ste, ste);
    backwardImpl(x, &r, dr, dx, needInputGrad, cap);
}

void Conv2d::backwardAddingInputGradient(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, float cap,
                                         const std::uint8_t* ste)
{
    if (!addsInputGradient()) throw std::logic_error(name() + ": this convolution's path cannot add its input gradient");
    if (r && !fusesActivation()) throw std::logic_error(name() + ": no fused activation on this convolution's path");
    if (r && r->shape() != dy.shape()) throw ConfigError(name() + ": fused activation output and gradient differ in shape");
    if (dx.shape() != x.shape())
        throw ConfigError(name() + ": the gradient to add into is " + shapeString(dx.shape()) + ", the input " +
                          shapeString(x.shape()));
    struct Reset {
        bool& flag;
        ~Reset() { flag = false; }
    } reset{m_addDx};
    m_addDx = true;
    const SteScope scope(m_ste, r ? ste : nullptr);
    backwardImpl(x, r, dy, dx, true, r ? cap : std::numeric_limits<float>::quiet_NaN());
}

void Conv2d::backwardImpl(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap)
{
    m_dxRoundedInPass = false;
    m_dxFinite = true;
    backwardPaths(x, r, dy, dx, needInputGrad, cap);
    finishDxRounding(dx, needInputGrad);
}

void Conv2d::backwardPaths(const Tensor& x, const Tensor* r, const Tensor& dyIn, Tensor& dx, bool needInputGrad, float cap)
{
    using Idx = Eigen::Index;
    if (m_xSource && !takesInputSource()) throw std::logic_error(name() + ": this backward cannot take an input source");
    if (m_dySource) { // the source writes dy group by group (setGradientSource)
        if (!takesGradientSource() || r) throw std::logic_error(name() + ": this backward cannot take a gradient source");
        if (m_colsFor != x.shape()) throw ConfigError(name() + ": backward without a matching training forward");
        if (usesDirectKernel() && usesBf16Gemm() && m_stride > 1) {
            if (backwardStridedBf16(x, dyIn, dx, needInputGrad)) return;
            // its layout does not apply: the source's whole gradient, then the path for a tensor
            Tensor whole(outputShape(x.shape()));
            m_dySource->gradientImages(0, x.dim(0), whole.data());
            GradientImageSource* const source = m_dySource;
            m_dySource = nullptr;
            const ScopeExit restore([&] { m_dySource = source; });
            backwardPaths(x, nullptr, whole, dx, needInputGrad, cap);
            return;
        }
        if (usesDirectKernel()) {
            backwardDirect(x, nullptr, dyIn, dx, needInputGrad, cap);
            return;
        }
    } else {
        checkOutputGradient(x, dyIn);
    }
    if (m_colsFor != x.shape()) throw ConfigError(name() + ": backward without a matching training forward");
    if (r && usesDirectKernel() && m_stride == 1) { // masked while dy is laid out in runs
        backwardDirect(x, r, dyIn, dx, needInputGrad, cap);
        return;
    }
    // The im2col path below masks each image's dy as it takes it (in cache); the others take
    // dy = dr masked by the activation's rule whole, then run their plain backward.
    const bool maskPerImage = r && !directDepthwise(*this) && !(usesBf16Gemm() && !usesBf16Runs()) && !usesDirectKernel();
    if (r && !maskPerImage) {
        m_maskedDy.resize(dyIn.shape());
        const float* g = dyIn.data();
        const float* rv = r->data();
        float* out = m_maskedDy.data();
        const std::size_t n = dyIn.numel();
        const std::uint8_t* ste = m_ste;
        parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
            copyRowMasked(out + b, g + b, rv + b, e - b, cap);
            if (ste) copyRowSteMasked(out + b, out + b, ste + b, e - b);
        });
    }
    const Tensor& dy = r && !maskPerImage ? m_maskedDy : dyIn;
    if (directDepthwise(*this)) {
        backwardDepthwise(x, dy, dx, needInputGrad);
        return;
    }
    if (usesBf16Gemm() && !usesBf16Runs()) {
        if (usesDirectKernel() && m_k > 1 && backwardStridedBf16(x, dy, dx, needInputGrad)) return;
        if (m_addDx) { // the im2col backward writes a fresh tensor: added here
            Tensor own;
            backwardBf16(x, dy, own, needInputGrad);
            float* d = dx.data();
            const float* s = own.data();
            const std::size_t n = dx.numel();
            parallelChunks(n, elementwiseGrain(n), [=](std::size_t b, std::size_t e) {
                for (std::size_t i = b; i < e; ++i) d[i] += s[i];
            });
            return;
        }
        backwardBf16(x, dy, dx, needInputGrad);
        return;
    }
    if (usesDirectKernel()) {
        backwardDirect(x, nullptr, dy, dx, needInputGrad, cap);
        return;
    }
    const Shape dyShape = m_dySource ? outputShape(x.shape()) : dy.shape();
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dyShape[2] * dyShape[3];
    const std::size_t G = m_groups, cinG = m_cin / G, coutG = m_cout / G;
    const std::size_t K = cinG * m_geom.taps(), inStride = m_cin * H * W;
    const float* wdata = m_weight.forwardValue().data();

    // One partial gradient per image (dW then db), reduced in image order: thread-count free.
    const std::size_t wSize = m_cout * K, bSize = m_hasBias ? m_cout : 0;
    const std::size_t partSize = wSize + bSize;
    m_partials.resize(N * partSize);
    const bool pointwise = m_square && m_k == 1 && m_stride == 1 && m_pad == 0;
    if (needInputGrad) {
        dx.resize(x.shape());
        if (!pointwise) dx.setZero(); // col2im accumulates; the pointwise path writes every element
    }
    const bool roundDx = roundsDx(needInputGrad); // each image's dx while in cache
    std::atomic<bool> finite{true};
    parallelFor(N, [&](std::size_t n) {
        float* cols = pointwise ? nullptr : threadBuffer(0, K * HWo).data();
        float* part = m_partials.data() + n * partSize;
        const float* dyn = nullptr; // the image's output gradient
        if (m_dySource) {
            dyn = sourcedGradient(n, 1, m_cout * HWo);
        } else if (maskPerImage) {
            float* masked = threadBuffer(2, m_cout * HWo).data();
            const std::size_t at = n * m_cout * HWo;
            copyRowMasked(masked, dy.data() + at, r->data() + at, m_cout * HWo, cap);
            if (m_ste) copyRowSteMasked(masked, masked, m_ste + at, m_cout * HWo);
            dyn = masked;
        } else {
            dyn = dy.data() + n * m_cout * HWo;
        }
        for (std::size_t g = 0; g < G; ++g) {
            const std::size_t inOff = n * inStride + g * cinG * H * W;
            const float* src = pointwise ? x.data() + inOff : cols;
            if (!pointwise) im2col(x.data() + inOff, cinG, H, W, m_geom, cols);
            const float* gy = dyn + g * coutG * HWo;
            ConstMatrixMap C(src, static_cast<Idx>(K), static_cast<Idx>(HWo));
            ConstMatrixMap Gm(gy, static_cast<Idx>(coutG), static_cast<Idx>(HWo));
            MatrixMap(part + g * coutG * K, static_cast<Idx>(coutG), static_cast<Idx>(K)).noalias() = Gm * C.transpose();
            if (bSize)
                for (std::size_t o = 0; o < coutG; ++o) part[wSize + g * coutG + o] = fixedOrderSum(gy + o * HWo, HWo);
            if (needInputGrad) {
                ConstMatrixMap Wg(wdata + g * coutG * K, static_cast<Idx>(coutG), static_cast<Idx>(K));
                if (pointwise) { // dx_n[g] = W[g]^T dy_n[g] directly
                    MatrixMap(dx.data() + inOff, static_cast<Idx>(K), static_cast<Idx>(HWo)).noalias() = Wg.transpose() * Gm;
                } else {
                    float* dcols = threadBuffer(1, K * HWo).data();
                    MatrixMap D(dcols, static_cast<Idx>(K), static_cast<Idx>(HWo));
                    D.noalias() = Wg.transpose() * Gm;
                    col2imAdd(dcols, cinG, H, W, m_geom, dx.data() + inOff);
                }
            }
        }
        if (roundDx && !roundBf16AllFinite(dx.data() + n * inStride, inStride)) finite.store(false, std::memory_order_relaxed);
    });
    reducePartials(m_partials, N, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
    if (roundDx) {
        m_dxRoundedInPass = true;
        m_dxFinite = finite.load();
    }
}

} // namespace quantscope
