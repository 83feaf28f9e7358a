// Conv2d's direct kernels (conv_direct.h) for convolutions of 8 or more input channels, and its
// bf16 products (setBf16Products); conv2d.cpp has the im2col path, conv2d_depthwise.cpp the depthwise
// kernel, conv2d_subsampled.cpp the strided 1x1 convolutions, conv2d_strided_dx.cpp the strided
// convolutions' input gradient by phases.
#include "nn/conv2d.h"
#include "nn/conv2d_runs.h"
#include "nn/conv2d_shared.h"
#include "nn/conv_direct.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>

namespace quantscope {

using namespace conv_detail;

// --- Stride-1 "same" convolutions: direct kernels (conv_direct.h) ------------------------------

bool Conv2d::directKernelsBuilt()
{
#if defined(__AVX512F__) || defined(QS_DIRECT_KERNELS_ALWAYS)
    return true;
#else
    return false;
#endif
}

bool Conv2d::takesInputSource() const
{
    return usesDirectKernel() && m_stride == 1 && m_k > 1 && (!usesBf16Gemm() || usesBf16Runs());
}

bool Conv2d::usesDirectKernel() const
{
    if (!directKernelsBuilt()) return false;
    // Stride-1 1x1 convolutions stay on the Eigen path, which reads the input planes as its
    // columns and measured faster there (no run copies; pointwise 32->64 at 14x14: 1.9 against
    // 2.5 ms), and so do convolutions of fewer than 8 input channels (the 1->16 stem: 1.0 against
    // 1.6 ms). Strided 1x1 ones (ResNet's projection shortcuts) gather the pixels they read into
    // runs (forwardSubsampled): resnet8's two took 2.1 ms of a 23 ms training step on im2col +
    // Eigen image by image, with a serial clear of dx and col2im.
    // Square windows only: the runs and phases assume k x k, one stride, equal padding, no dilation.
    return !m_reference && m_square && m_groups == 1 && m_cin >= 8 && m_k <= 7 && m_pad < m_k &&
           (m_k >= 2 || m_stride > 1) && m_stride <= 4;
}

namespace {

// A fused pool's unpooled output gradient as a plane source (backwardGroupBf16's dySource): plane
// p of the convolution's output gradient (MaxPool2d::backwardFusedPlanes with the clamp's rule of
// cap), written where the reader wants it, and its fixedOrderSum added to the bias gradient
// bias[p % C] when bias is given. A reader that takes each plane once, images in order for each
// channel, adds the same sums in the same order as the loop over the unpooled group.
class UnpooledGradient final : public OutputPlaneSource {
public:
    UnpooledGradient(const PooledGrad& pooled, std::size_t C, std::size_t H, std::size_t W, float* bias)
        : m_pooled(pooled), m_C(C), m_H(H), m_W(W), m_bias(bias)
    {
    }
    void outputPlanes(std::size_t p0, std::size_t count, float* out) const override
    {
        m_pooled.pool->backwardFusedPlanes(*m_pooled.y, *m_pooled.dy, p0, p0 + count, out, m_pooled.cap);
        if (m_bias)
            for (std::size_t p = p0; p < p0 + count; ++p) m_bias[p % m_C] += fixedOrderSum(out + (p - p0) * m_H * m_W, m_H * m_W);
    }
    void outputPlaneRows(std::size_t p, float* out, std::size_t pitch) const override
    {
        thread_local std::vector<float> plane;
        plane.resize(m_H * m_W);
        outputPlanes(p, 1, plane.data());
        for (std::size_t y = 0; y < m_H; ++y) std::copy_n(plane.data() + y * m_W, m_W, out + y * pitch);
    }

private:
    const PooledGrad& m_pooled;
    std::size_t m_C, m_H, m_W;
    float* m_bias;
};


// x images [n0, n0 + count) of (N, C, H, W) -> runs (C, S). With r (the fused activation's
// output, x's shape), x is masked by the activation's backward rule on r as it is copied. With
// source, x is not read: the source writes each plane's rows into the runs.
void toRuns(const float* x, std::size_t C, std::size_t n0, std::size_t count, const RunGeometry& g, float* runs,
            const float* r = nullptr, float cap = 0.0f, const OutputPlaneSource* source = nullptr)
{
    const std::size_t HW = g.H * g.W;
    const auto copy = [&](float* dst, std::size_t at, std::size_t n) {
        if (r) copyRowMasked(dst, x + at, r + at, n, cap);
        else copyRow(dst, x + at, n);
    };
    // The plane read after plane (c, i) is asked for ahead: the source's prefetchPlane, or x's
    // (and r's) rows by prefetchRows (kNoPlane: nothing to ask for).
    const auto nextPlane = [&](std::size_t c, std::size_t i) {
        const std::size_t p = nextPlaneOf(n0, count, C, c, i);
        if (source && p != kNoPlane) source->prefetchPlane(p);
        return source ? kNoPlane : p;
    };
    const auto prefetchRows = [&](std::size_t plane, std::size_t at, std::size_t n) {
        if (plane == kNoPlane) return;
        prefetchSpan(x + plane * HW + at, n);
        if (r) prefetchSpan(r + plane * HW + at, n);
    };
    if (g.p == 0) { // no padding: the runs are the planes back to back
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t i = 0; i < count; ++i) {
                float* dst = runs + c * g.S + i * HW;
                prefetchRows(nextPlane(c, i), 0, HW);
                if (source) source->outputPlanes((n0 + i) * C + c, 1, dst);
                else copy(dst, ((n0 + i) * C + c) * HW, HW);
            }
        return;
    }
    // Every float of the runs is written once: the data, and zeros only where the padding falls
    // (the head, each row's last p columns, each image's last p rows, the images past count).
    for (std::size_t c = 0; c < C; ++c) {
        float* run = runs + c * g.S;
        std::memset(run, 0, g.head * sizeof(float));
        for (std::size_t i = 0; i < count; ++i) {
            const std::size_t src = ((n0 + i) * C + c) * HW, next = nextPlane(c, i);
            float* dst = run + g.head + i * g.Rn;
            if (source) source->outputPlaneRows(src / HW, dst, g.Wq); // the rows in place
            for (std::size_t y = 0; y < g.H; ++y) {
                prefetchRows(next, y * g.W, g.W);
                if (!source) copy(dst + y * g.Wq, src + y * g.W, g.W);
                for (std::size_t z = 0; z < g.p; ++z) dst[y * g.Wq + g.W + z] = 0.0f;
            }
            std::memset(dst + g.H * g.Wq, 0, (g.Rn - g.H * g.Wq) * sizeof(float));
        }
        std::memset(run + g.head + count * g.Rn, 0, (g.Ng - count) * g.Rn * sizeof(float));
    }
}


// rows[c k k + ky k + kx] = runs + c S + ky Wq + kx: the im2col rows, read in place.
void tapRows(const float* runs, std::size_t C, const RunGeometry& g, const float** rows)
{
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < g.k; ++ky)
            for (std::size_t kx = 0; kx < g.k; ++kx) *rows++ = runs + c * g.S + ky * g.Wq + kx;
}

} // namespace

namespace conv_detail {
std::vector<const float*>& threadRows(int which, std::size_t size)
{
    static thread_local std::vector<const float*> tables[2];
    std::vector<const float*>& t = tables[which];
    if (t.size() < size) t.resize(size);
    return t;
}
} // namespace conv_detail

// --- Strided convolutions: phase runs (conv2d_runs.h) ------------------------------------------

namespace conv_detail {

PhaseGeometry phaseGeometry(std::size_t H, std::size_t W, std::size_t k, std::size_t s, std::size_t p)
{
    const std::size_t Hq = (H + 2 * p + s - 1) / s, Wq = (W + 2 * p + s - 1) / s, Rn = Hq * Wq;
    std::size_t Ng = 1;
    while (Ng < 16 && 2 * Ng * Rn <= 2048) Ng *= 2;
    return {H, W, k, s, p, (H + 2 * p - k) / s + 1, (W + 2 * p - k) / s + 1, Wq, Rn, Ng, Ng * Rn, s * s * Ng * Rn};
}

void toPhaseRuns(const float* x, std::size_t C, std::size_t n0, std::size_t count, const PhaseGeometry& g,
                 const DepthwiseGeometry& dg, float* runs)
{
    const std::size_t HW = g.H * g.W;
    std::memset(runs, 0, C * g.S * sizeof(float));
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t i = 0; i < count; ++i) {
            if (const std::size_t p = nextPlaneOf(n0, count, C, c, i); p != kNoPlane) prefetchSpan(x + p * HW, HW);
            scatterPhases(x + ((n0 + i) * C + c) * HW, dg, runs + c * g.S + i * g.Rn, g.PS);
        }
}

void toPhaseRunsBf16(const float* x, std::size_t C, std::size_t n0, std::size_t count, const PhaseGeometry& g,
                     const DepthwiseGeometry& dg, std::uint16_t* runs)
{
    const std::size_t HW = g.H * g.W, C2 = (C + 1) / 2;
    auto* q = reinterpret_cast<std::uint32_t*>(runs);
    std::memset(q, 0, C2 * g.S * sizeof(std::uint32_t));
    for (std::size_t cp = 0; cp < C2; ++cp)
        for (std::size_t i = 0; i < count; ++i) {
            const float* a = x + ((n0 + i) * C + 2 * cp) * HW;
            if (const std::size_t p = nextPlaneOf(n0, count, C, 2 * cp, i, 2); p != kNoPlane) // the pair read next
                prefetchSpan(x + p * HW, (p % C + 1 < C ? 2 : 1) * HW);
            scatterPhasesBf16Pair(a, 2 * cp + 1 < C ? a + HW : nullptr, dg, q + cp * g.S + i * g.Rn, g.PS);
        }
}

std::size_t phaseTapOffset(const PhaseGeometry& g, std::size_t ky, std::size_t kx)
{
    return ((ky % g.s) * g.s + kx % g.s) * g.PS + (ky / g.s) * g.Wq + kx / g.s;
}

} // namespace conv_detail

namespace {

// dy images [n0, n0 + count) of (N, M, Ho, Wo) -> (M, Ng Rn) at the output's run positions, zero
// at the scratch positions.
void toOutputRuns(const float* dy, std::size_t M, std::size_t n0, std::size_t count, const PhaseGeometry& g, float* runs)
{
    const std::size_t HWo = g.Ho * g.Wo;
    std::memset(runs, 0, M * g.PS * sizeof(float));
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t i = 0; i < count; ++i)
            for (std::size_t oy = 0; oy < g.Ho; ++oy)
                copyRow(runs + m * g.PS + i * g.Rn + oy * g.Wq, dy + ((n0 + i) * M + m) * HWo + oy * g.Wo, g.Wo);
}

void phaseTapRows(const float* runs, std::size_t C, const PhaseGeometry& g, const float** rows)
{
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t ky = 0; ky < g.k; ++ky)
            for (std::size_t kx = 0; kx < g.k; ++kx)
                *rows++ = runs + c * g.S + phaseTapOffset(g, ky, kx);
}

} // namespace

namespace {

// dx of images [n0, n0 + count) from dy's runs (plan.gd), phase by phase (phaseInputGradient).
// add: dx += it (Conv2d::backwardAddingInputGradient).
void stridedInputGradient(const StridedDxPlan& plan, const float* dyRuns, std::size_t cout, std::size_t cin,
                          std::size_t H, std::size_t W, std::size_t s, std::size_t p, std::size_t n0, std::size_t count,
                          const float** rows, float* dx, bool add)
{
    const RunGeometry& gd = plan.gd;
    phaseInputGradient(plan, cin, H, W, s, p, n0, count, dx, add, [&](const StridedDxPhase& ph, float* out, std::size_t L) {
        const std::size_t Kp = cout * ph.Ty * ph.Tx;
        for (std::size_t co = 0; co < cout; ++co)
            for (std::size_t t = 0; t < ph.Ty; ++t)
                for (std::size_t u = 0; u < ph.Tx; ++u)
                    rows[(co * ph.Ty + t) * ph.Tx + u] = dyRuns + co * gd.S + gd.head - t * gd.Wq - u;
        conv_direct::gemmRows(ph.packed.data(), cin, Kp, rows, L, out, L);
    });
}

} // namespace

// dW from the phase runs (as in backwardDirect); dx phase by phase (stridedInputGradient), or
// where dy's padding does not cover the phases, dx_n = col2im(W^T dy_n) image by image.
void Conv2d::backwardStrided(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    using Idx = Eigen::Index;
    const Shape dyShape = m_dySource ? outputShape(x.shape()) : dy.shape();
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dyShape[2] * dyShape[3];
    const std::size_t K = m_cin * m_k * m_k;
    const PhaseGeometry g = phaseGeometry(H, W, m_k, m_stride, m_pad);
    const DepthwiseGeometry dg = depthwiseGeometry(H, W, m_k, m_stride, m_pad);
    const std::size_t wSize = m_cout * K, bSize = m_hasBias ? m_cout : 0, partSize = wSize + bSize;
    const std::size_t groups = (N + g.Ng - 1) / g.Ng;
    m_partials.assign(groups * partSize, 0.0f);
    const float* wdata = m_weight.forwardValue().data();
    std::optional<StridedDxPlan> plan;
    if (needInputGrad) {
        if (!m_addDx) dx.resize(x.shape());
        plan = stridedDxPlan(wdata, m_cout, m_cin, H, W, m_k, m_stride, m_pad, dyShape[2], dyShape[3], g.Ng);
        if (!plan && !m_addDx) dx.setZero(); // col2im accumulates
    }
    const std::size_t maxRows = std::max(K, m_cout * ((m_k + m_stride - 1) / m_stride) * ((m_k + m_stride - 1) / m_stride));
    parallelFor(groups, [&](std::size_t grp) {
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = g.length(count);
        float* part = m_partials.data() + grp * partSize;
        float* xr = threadBuffer(0, m_cin * g.S).data();
        float* gr = threadBuffer(2, m_cout * g.PS).data();
        const float** rows = threadRows(0, maxRows).data();
        const float** drows = threadRows(1, m_cout).data();
        toPhaseRuns(x.data(), m_cin, n0, count, g, dg, xr);
        // The group's output gradient: images [dn0, dn0 + count) of dyg (the source's, written
        // here as images [0, count) of a buffer, or dy's own)
        const float* dyg = dy.data();
        std::size_t dn0 = n0;
        if (m_dySource) {
            dyg = sourcedGradient(n0, count, m_cout * HWo);
            dn0 = 0;
        }
        toOutputRuns(dyg, m_cout, dn0, count, g, gr);
        if (bSize)
            for (std::size_t o = 0; o < m_cout; ++o)
                for (std::size_t i = 0; i < count; ++i) part[wSize + o] += fixedOrderSum(dyg + ((dn0 + i) * m_cout + o) * HWo, HWo);
        for (std::size_t o = 0; o < m_cout; ++o) drows[o] = gr + o * g.PS;
        phaseTapRows(xr, m_cin, g, rows);
        conv_direct::gemmRowsTransAdd(drows, m_cout, rows, K, L, part, K);
        if (!needInputGrad) return;
        if (plan) { // the x runs are done with: their buffer takes dy's padded runs
            float* dyRuns = threadBuffer(0, m_cout * plan->gd.S).data();
            toRuns(dyg, m_cout, dn0, count, plan->gd, dyRuns);
            stridedInputGradient(*plan, dyRuns, m_cout, m_cin, H, W, m_stride, m_pad, n0, count, rows, dx.data(), m_addDx);
            return;
        }
        float* dcols = threadBuffer(1, K * HWo).data();
        ConstMatrixMap Wm(wdata, static_cast<Idx>(m_cout), static_cast<Idx>(K));
        for (std::size_t n = n0; n < n0 + count; ++n) {
            ConstMatrixMap Gm(dyg + (n - n0 + dn0) * m_cout * HWo, static_cast<Idx>(m_cout), static_cast<Idx>(HWo));
            MatrixMap(dcols, static_cast<Idx>(K), static_cast<Idx>(HWo)).noalias() = Wm.transpose() * Gm;
            col2imAdd(dcols, m_cin, H, W, m_k, m_stride, m_pad, dx.data() + n * m_cin * H * W);
        }
    });
    reducePartials(m_partials, groups, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
}

namespace {
// y = W * rows(runs(x)) + b, a group of g.Ng images at a time; layout(n0, count, runs, rows) lays
// the group out (stride 1: padded runs; strided: phase runs) and fills the K tap rows.
template <typename Geometry, typename Layout>
void forwardGroups(const Tensor& x, Tensor& y, const Geometry& g, std::size_t cin, std::size_t cout, std::size_t K,
                   const std::vector<float>& packed, const float* bias, float cap, bool roundBf16, const PooledOut* pooled,
                   OutputImageSink* sink, Layout&& layout)
{
    const std::size_t N = x.dim(0);
    parallelFor((N + g.Ng - 1) / g.Ng, [&](std::size_t grp) {
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = g.length(count);
        float* runs = threadBuffer(0, cin * g.S).data();
        float* out = threadBuffer(1, cout * L).data();
        const float** rows = threadRows(0, K).data();
        layout(n0, count, runs, rows);
        conv_direct::gemmRows(packed.data(), cout, K, rows, L, out, L);
        if (pooled) fromRunsPooled(out, L, cout, n0, count, g, bias, *pooled, cap, roundBf16);
        else {
            fromRuns(out, L, cout, n0, count, g, bias, y.data(), cap, roundBf16);
            if (sink) sink->imagesWritten(y, n0, count);
        }
    });
}
} // namespace


void Conv2d::forwardDirect(const Tensor& x, Tensor& y, float cap, const PooledOut* pooled)
{
    if (m_xSource && !takesInputSource()) throw std::logic_error(name() + ": this forward cannot take an input source");
    if (!pooled && !m_xSource && forwardDirectS8(x, y, cap)) {
        m_lastInteger = true;
        return;
    }
    const std::size_t K = m_cin * m_k * m_k;
    conv_direct::packA(m_weight.forwardValue().data(), m_cout, K, K, m_packed);
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;
    if (m_k == 1) {
        forwardSubsampled(x, y, bias, cap);
        return;
    }
    if (m_stride > 1) {
        const PhaseGeometry g = phaseGeometry(x.dim(2), x.dim(3), m_k, m_stride, m_pad);
        const DepthwiseGeometry dg = depthwiseGeometry(x.dim(2), x.dim(3), m_k, m_stride, m_pad);
        forwardGroups(x, y, g, m_cin, m_cout, K, m_packed, bias, cap, m_roundOut, nullptr, m_sink,
                      [&](std::size_t n0, std::size_t count, float* runs, const float** rows) {
                          toPhaseRuns(x.data(), m_cin, n0, count, g, dg, runs);
                          phaseTapRows(runs, m_cin, g, rows);
                      });
        return;
    }
    const RunGeometry g = runGeometry(x.dim(2), x.dim(3), m_k, m_pad);
    forwardGroups(x, y, g, m_cin, m_cout, K, m_packed, bias, cap, m_roundOut, pooled, pooled ? nullptr : m_sink,
                  [&](std::size_t n0, std::size_t count, float* runs, const float** rows) {
                      toRuns(x.data(), m_cin, n0, count, g, runs, nullptr, 0.0f, m_xSource);
                      tapRows(runs, m_cin, g, rows);
                  });
}

// dW = sum over groups of runs(dy) rows(runs(x))^T ; db = sum dy ;
// dx = rot180(W)^T * rows(runs(dy)): the "full" convolution of the output gradient.
// r: the fused activation's output (backwardClamped), whose rule masks dy as it is laid out.
void Conv2d::backwardDirect(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap,
                            const PooledGrad* pooled)
{
    if (pooled && (r || m_stride > 1)) throw std::logic_error(name() + ": a pooled gradient takes stride 1 and no other activation");
    if (r && m_stride > 1) throw std::logic_error(name() + ": the strided direct backward takes no fused activation");
    if (m_xSource && !takesInputSource()) throw std::logic_error(name() + ": this backward cannot take an input source");
    if (m_stride > 1) {
        if (m_k == 1) backwardSubsampled(x, dy, dx, needInputGrad);
        else backwardStrided(x, dy, dx, needInputGrad);
        return;
    }
    // dy's planes: the tensor's, or (pooled) the conv output's shape, unpooled group by group
    const Shape dyShape = pooled || m_dySource ? outputShape(x.shape()) : dy.shape();
    const std::size_t N = x.dim(0), HWo = dyShape[2] * dyShape[3];
    const std::size_t kk = m_k * m_k, K = m_cin * kk, K2 = m_cout * kk;
    // x with padding p; dy with padding k - 1 - p (same pitch and image stride, see RunGeometry)
    const RunGeometry g = runGeometry(x.dim(2), x.dim(3), m_k, m_pad);
    const RunGeometry gd = runGeometry(dyShape[2], dyShape[3], m_k, m_k - 1 - m_pad);
    // The weight gradient in bf16 too (on AMX where the channels fill whole tiles). On AVX512_BF16
    // each group's partial dW is kept transposed, as the kernel sums it, and the total transposed
    // once (reducePartialsTransposed): the same sums in the same order.
    const bool bf16Grad = usesBf16Runs() && (m_bf16 != Bf16Path::AmxBf16 || m_cin % 16 == 0);
    const bool transposedParts = bf16Grad && m_bf16 == Bf16Path::Avx512Bf16;
    const std::size_t Op = (m_cout + 15) / 16 * 16;
    const std::size_t wSize = m_cout * K, bSize = m_hasBias ? m_cout : 0;
    const std::size_t wPartSize = transposedParts ? kk * m_cin * Op : wSize, partSize = wPartSize + bSize;
    const std::size_t groups = (N + g.Ng - 1) / g.Ng;
    // One partial gradient per group, summed in group order: the result depends on the batch
    // and layer shapes only, never on the thread count.
    m_partials.assign(groups * partSize, 0.0f);
    if (needInputGrad) {
        if (!m_addDx) dx.resize(x.shape());
        // rot[ci, co kk + t] = W[co, ci, kk - 1 - t]
        const float* w = m_weight.forwardValue().data();
        std::vector<float> rot(m_cin * K2);
        for (std::size_t co = 0; co < m_cout; ++co)
            for (std::size_t ci = 0; ci < m_cin; ++ci)
                for (std::size_t t = 0; t < kk; ++t) rot[ci * K2 + co * kk + t] = w[(co * m_cin + ci) * kk + (kk - 1 - t)];
        if (usesBf16Runs())
            packBf16RunsA(bf16RunsOrder(rot.data(), m_cin, m_cout, kk).data(), m_cin, kk * ((m_cout + 1) / 2), m_packedBf16Runs, m_bf16);
        else
            conv_direct::packA(rot.data(), m_cin, K2, K2, m_packed);
    }
    std::vector<std::size_t> dyTaps(kk), xTaps(kk);
    for (std::size_t t = 0; t < kk; ++t) {
        dyTaps[t] = 4 * ((t / m_k) * gd.Wq + t % m_k);
        xTaps[t] = (t / m_k) * g.Wq + t % m_k;
    }
    // x's bf16 runs as the training forward left them (forwardDirectBf16), when this is its x
    const std::uint16_t* xKept =
        bf16Grad && m_xRunsOf == x.data() && !m_xRunsBf16.empty() ? cacheLineAligned(m_xRunsBf16.data()) : nullptr;
    const bool roundDx = roundsDx(needInputGrad); // each group's dx images while in cache
    std::atomic<bool> finite{true};
    const std::size_t imageSize = m_cin * x.dim(2) * x.dim(3);
    const auto roundGroup = [&](std::size_t n0, std::size_t count) {
        if (roundDx && !roundBf16AllFinite(dx.data() + n0 * imageSize, count * imageSize))
            finite.store(false, std::memory_order_relaxed);
    };
    parallelFor(groups, [&](std::size_t grp) {
        const std::size_t n0 = grp * g.Ng, count = std::min(g.Ng, N - n0), L = g.length(count);
        float* part = m_partials.data() + grp * partSize;
        // The group's dy and r from their first image on. A pooled gradient is unpooled here, a
        // group (a few hundred KB) at a time, so that it is read back from cache, not memory.
        const std::size_t at0 = n0 * m_cout * HWo;
        const float* rv = r ? r->data() + at0 : nullptr;
        const float* dyg = pooled || m_dySource ? nullptr : dy.data() + at0;
        // bf16 products unpool each plane into L1 as they round it into dy's runs (and sum the
        // bias gradient there), not the group into a buffer read back from L2.
        std::optional<UnpooledGradient> unpooled;
        if (m_dySource) { // the source's images, written here (setGradientSource)
            dyg = sourcedGradient(n0, count, m_cout * HWo);
        } else if (pooled && bf16Grad && !m_ste) {
            unpooled.emplace(*pooled, m_cout, dyShape[2], dyShape[3], bSize ? part + wPartSize : nullptr);
        } else if (pooled) {
            float* buf = threadBuffer(5, count * m_cout * HWo).data();
            pooled->pool->backwardFusedPlanes(*pooled->y, *pooled->dy, n0 * m_cout, (n0 + count) * m_cout, buf, pooled->cap);
            if (m_ste) copyRowSteMasked(buf, buf, m_ste + at0, count * m_cout * HWo);
            dyg = buf;
        } else if (m_ste) { // the hooks' straight-through mask, on the group while it is read
            float* buf = threadBuffer(5, count * m_cout * HWo).data();
            copyRowSteMasked(buf, dyg, m_ste + at0, count * m_cout * HWo);
            dyg = buf;
        }
        if (bSize && !unpooled)
            for (std::size_t o = 0; o < m_cout; ++o)
                for (std::size_t i = 0; i < count; ++i) {
                    const std::size_t at = (i * m_cout + o) * HWo;
                    part[wPartSize + o] += rv ? fixedOrderSumMasked(dyg + at, rv + at, HWo, cap) : fixedOrderSum(dyg + at, HWo);
                }
        if (bf16Grad) { // x and dy straight to bf16 runs
            backwardGroupBf16(m_bf16, x.data(), dyg, rv, cap, n0, count, g, gd, m_cin, m_cout, m_k, xTaps.data(),
                              dyTaps.data(), part, transposedParts, needInputGrad ? &m_packedBf16Runs : nullptr, dx.data(),
                              m_xSource, unpooled ? &*unpooled : nullptr, m_addDx,
                              xKept ? xKept + grp * keptGroupStride(m_cin, g.S) : nullptr);
            roundGroup(n0, count);
            return;
        }
        float* xr = threadBuffer(0, m_cin * g.S).data();
        float* gr = threadBuffer(2, m_cout * gd.S).data();
        const float** rows = threadRows(0, std::max(K, K2)).data();
        const float** drows = threadRows(1, m_cout).data();
        toRuns(x.data(), m_cin, n0, count, g, xr, nullptr, 0.0f, m_xSource);
        toRuns(dyg, m_cout, 0, count, gd, gr, rv, cap);
        // dy at run position j (the output's positions): zero at every scratch position
        for (std::size_t o = 0; o < m_cout; ++o) drows[o] = gr + o * gd.S + gd.head;
        tapRows(xr, m_cin, g, rows);
        conv_direct::gemmRowsTransAdd(drows, m_cout, rows, K, L, part, K);
        if (!needInputGrad) return;
        const std::size_t Lx = gd.length(count);
        float* out = threadBuffer(1, m_cin * Lx).data();
        if (usesBf16Runs()) { // dy's runs (masked by a fused clamp) as bf16 pairs, in the x runs' buffer
            const std::size_t C2 = (m_cout + 1) / 2;
            auto* dyRuns = reinterpret_cast<std::uint16_t*>(threadBuffer(0, C2 * gd.S + kRunsRowSlack / 4).data());
            for (std::size_t cp = 0; cp < C2; ++cp) {
                const float* pair[2] = {gr + 2 * cp * gd.S, 2 * cp + 1 < m_cout ? gr + (2 * cp + 1) * gd.S : nullptr};
                roundInterleave2(pair, gd.S, dyRuns + 2 * cp * gd.S);
            }
            const ConvRuns b{reinterpret_cast<const std::uint8_t*>(dyRuns), 4 * gd.S, dyTaps.data(), kk, C2};
            gemmBf16Runs(m_packedBf16Runs, b, Lx, out, Lx);
        } else {
            tapRows(gr, m_cout, gd, rows);
            conv_direct::gemmRows(m_packed.data(), m_cin, K2, rows, Lx, out, Lx);
        }
        if (m_addDx) addFromRuns(out, Lx, m_cin, n0, count, gd, dx.data());
        else fromRuns(out, Lx, m_cin, n0, count, gd, nullptr, dx.data());
        roundGroup(n0, count);
    });
    if (transposedParts)
        reducePartialsTransposed(m_partials, groups, m_cout, m_cin, kk, Op, bSize, m_weight.grad.data(), m_bias.grad.data());
    else
        reducePartials(m_partials, groups, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
    if (roundDx) {
        m_dxRoundedInPass = true;
        m_dxFinite = finite.load();
    }
}

// --- bf16 products (setBf16Products) ------------------------------------------------------------

// y_n = bf16(W) * bf16(im2col(x_n)) + b, with W packed once per batch and each image's columns
// packed straight from the image.
void Conv2d::forwardBf16(const Tensor& x, Tensor& y)
{
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = y.dim(2) * y.dim(3);
    const std::size_t K = m_cin * m_k * m_k;
    packBf16A(m_packedBf16, m_bf16, false, m_cout, K, m_weight.forwardValue().data(), K);
    const float* bias = m_hasBias ? m_bias.forwardValue().data() : nullptr;
    parallelFor(N, [&](std::size_t n) {
        static thread_local PackedBf16B cols;
        packBf16Im2col(cols, m_bf16, x.data() + n * m_cin * H * W, m_cin, H, W, m_k, m_stride, m_pad);
        float* out = y.data() + n * m_cout * HWo;
        gemmBf16PackedAB(m_packedBf16, cols, out, HWo, false);
        if (bias)
            for (std::size_t o = 0; o < m_cout; ++o)
                for (std::size_t j = 0; j < HWo; ++j) out[o * HWo + j] += bias[o];
        if (m_roundOut) roundRowBf16(out, m_cout * HWo);
    });
}

// dW_n = bf16(dy_n) * bf16(im2col(x_n))^T per image, summed in image order; dx_n =
// col2im(bf16(W)^T * bf16(dy_n)) (the product itself for a 1x1 stride-1 convolution without padding).
void Conv2d::backwardBf16(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HWo = dy.dim(2) * dy.dim(3);
    const std::size_t K = m_cin * m_k * m_k;
    const std::size_t wSize = m_cout * K, bSize = m_hasBias ? m_cout : 0, partSize = wSize + bSize;
    m_partials.resize(N * partSize);
    // A 1x1 stride-1 convolution without padding: the columns are the image, so W^T dy is written
    // straight into dx (every element), without col2im.
    const bool pointwise = m_k == 1 && m_stride == 1 && m_pad == 0;
    if (needInputGrad) {
        dx.resize(x.shape());
        if (!pointwise) dx.setZero(); // col2im accumulates
        packBf16A(m_packedBf16, m_bf16, true, K, m_cout, m_weight.forwardValue().data(), K);
    }
    const bool roundDx = roundsDx(needInputGrad); // each image's dx while in cache
    std::atomic<bool> finite{true};
    const auto roundImage = [&](float* dxn) {
        if (roundDx && !roundBf16AllFinite(dxn, m_cin * H * W)) finite.store(false, std::memory_order_relaxed);
    };
    parallelFor(N, [&](std::size_t n) {
        static thread_local PackedBf16A grad;
        static thread_local PackedBf16B colsT;
        const float* gy = dy.data() + n * m_cout * HWo;
        const float* xn = x.data() + n * m_cin * H * W;
        float* part = m_partials.data() + n * partSize;
        packBf16A(grad, m_bf16, false, m_cout, HWo, gy, HWo);
        packBf16Im2colT(colsT, m_bf16, xn, m_cin, H, W, m_k, m_stride, m_pad);
        gemmBf16PackedAB(grad, colsT, part, K, false);
        for (std::size_t o = 0; o < bSize; ++o) part[wSize + o] = fixedOrderSum(gy + o * HWo, HWo);
        if (!needInputGrad) return;
        float* dxn = dx.data() + n * m_cin * H * W;
        if (pointwise) {
            gemmBf16Packed(m_packedBf16, false, HWo, gy, HWo, dxn, HWo, false);
            roundImage(dxn);
            return;
        }
        float* dcols = threadBuffer(1, K * HWo).data();
        gemmBf16Packed(m_packedBf16, false, HWo, gy, HWo, dcols, HWo, false);
        col2imAdd(dcols, m_cin, H, W, m_k, m_stride, m_pad, dxn);
        roundImage(dxn);
    });
    reducePartials(m_partials, N, wSize, bSize, m_weight.grad.data(), m_bias.grad.data());
    if (roundDx) {
        m_dxRoundedInPass = true;
        m_dxFinite = finite.load();
    }
}

} // namespace quantscope
