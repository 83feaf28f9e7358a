#include "train/optimizer.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>

namespace quantscope {

namespace {
void ensureState(std::vector<Tensor>& state, const std::vector<Param*>& params)
{
    if (state.size() == params.size()) return;
    if (!state.empty()) throw ConfigError("optimizer: the parameter list changed between steps");
    for (Param* p : params) state.emplace_back(p->value.shape(), 0.0f);
}

// The update loops are functions of __restrict pointers, not lambdas over captured ones: through
// the captures GCC assumed the state could alias the weights and kept every element scalar
// (Adam measured 3.8 ns a parameter on seed-cnn's 1.2 M, 7-8 % of a mixed bf16 step). Vectorised,
// each element still takes the same operations in the same order (no reassociation), so the
// results are unchanged. std::sqrt vectorises because the build passes -fno-math-errno.
struct AdamConstants {
    float b1, b2, eps, wd, stepSize, sqrtBc2;
};

// Round: w, m and v are stored rounded to bf16 (Optimizer::setRoundToBf16) in the same loop. The
// update still uses the unrounded m and v, as it did when the rounding was a pass of its own
// afterwards; that pass re-read the three arrays from L2 (Adam: 5 % of a seed-cnn lowp step, 3.3 %
// in mixed).
// AmsGrad: vMax holds the running element-wise maximum of v, which the denominator then reads
// (stored rounded like v). A template argument, so that the plain loop stays branch-free.
template <bool Round, bool AmsGrad>
void adamUpdate(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                float* __restrict vMax, std::size_t n, const AdamConstants c)
{
    for (std::size_t i = 0; i < n; ++i) {
        const float gi = g[i] + c.wd * w[i];
        const float mi = c.b1 * m[i] + (1.0f - c.b1) * gi;
        const float vi = c.b2 * v[i] + (1.0f - c.b2) * gi * gi;
        float vd = vi;
        if constexpr (AmsGrad) {
            vd = std::max(vMax[i], vi);
            vMax[i] = Round ? roundBf16(vd) : vd;
        }
        const float denom = std::sqrt(vd) / c.sqrtBc2 + c.eps;
        const float wi = w[i] - c.stepSize * mi / denom;
        m[i] = Round ? roundBf16(mi) : mi;
        v[i] = Round ? roundBf16(vi) : vi;
        w[i] = Round ? roundBf16(wi) : wi;
    }
}

// v[0, n) rounded to bf16, nearest even (Optimizer::setRoundToBf16)
void roundSpanBf16(float* __restrict v, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) v[i] = roundBf16(v[i]);
}

struct SgdConstants {
    float lr, wd, momentum, dampening;
    bool first, nesterov;
};

// b == nullptr: no momentum.
void sgdUpdate(float* __restrict w, const float* __restrict g, float* __restrict b, std::size_t n, const SgdConstants c)
{
    if (!b) {
        for (std::size_t i = 0; i < n; ++i) w[i] -= c.lr * (g[i] + c.wd * w[i]);
        return;
    }
    for (std::size_t i = 0; i < n; ++i) {
        float d = g[i] + c.wd * w[i];
        b[i] = c.first ? d : c.momentum * b[i] + (1.0f - c.dampening) * d;
        d = c.nesterov ? d + c.momentum * b[i] : b[i];
        w[i] -= c.lr * d;
    }
}
} // namespace

Sgd::Sgd(const SgdOptions& o) : Optimizer(o.lr), m_opt(o)
{
    if (o.nesterov && (o.momentum <= 0.0f || o.dampening != 0.0f))
        throw ConfigError("sgd: Nesterov momentum needs momentum > 0 and no dampening");
}

// g = grad + wd p;  b = mu b + (1 - damp) g (b = g on the first step);
// g = g + mu b (Nesterov) or b;  p -= lr g
void Sgd::step(const std::vector<Param*>& params)
{
    if (m_opt.momentum != 0.0f) ensureState(m_buf, params);
    const bool first = !m_started;
    m_started = true;
    for (std::size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        const std::size_t n = p.value.numel();
        float* w = p.value.data();
        const float* g = p.grad.data();
        float* b = m_opt.momentum != 0.0f ? m_buf[k].data() : nullptr;
        const SgdConstants c{m_lr, m_opt.weightDecay, m_opt.momentum, m_opt.dampening, first, m_opt.nesterov};
        const bool round = m_roundBf16;
        parallelChunks(n, elementwiseGrain(n), [=](std::size_t i0, std::size_t i1) {
            sgdUpdate(w + i0, g + i0, b ? b + i0 : nullptr, i1 - i0, c);
            if (!round) return;
            roundSpanBf16(w + i0, i1 - i0);
            if (b) roundSpanBf16(b + i0, i1 - i0);
        });
    }
}

std::vector<Tensor*> Sgd::stateTensors()
{
    std::vector<Tensor*> out;
    for (Tensor& t : m_buf) out.push_back(&t);
    return out;
}

Adam::Adam(const AdamOptions& o) : Optimizer(o.lr), m_opt(o) {}

// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void Adam::step(const std::vector<Param*>& params)
{
    ensureState(m_m, params);
    ensureState(m_v, params);
    if (m_opt.amsgrad) ensureState(m_vMax, params);
    ++m_t;
    const double bc1 = 1.0 - std::pow(static_cast<double>(m_opt.beta1), static_cast<double>(m_t));
    const double bc2 = 1.0 - std::pow(static_cast<double>(m_opt.beta2), static_cast<double>(m_t));
    const float stepSize = static_cast<float>(m_lr / bc1);
    const float sqrtBc2 = static_cast<float>(std::sqrt(bc2));
    const float b1 = m_opt.beta1, b2 = m_opt.beta2, eps = m_opt.eps, wd = m_opt.weightDecay;
    for (std::size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        const std::size_t n = p.value.numel();
        float* w = p.value.data();
        const float* g = p.grad.data();
        float* m = m_m[k].data();
        float* v = m_v[k].data();
        float* vMax = m_opt.amsgrad ? m_vMax[k].data() : nullptr;
        const AdamConstants c{b1, b2, eps, wd, stepSize, sqrtBc2};
        const bool round = m_roundBf16;
        parallelChunks(n, elementwiseGrain(n), [=](std::size_t i0, std::size_t i1) {
            float* vm = vMax ? vMax + i0 : nullptr;
            if (vm && round) adamUpdate<true, true>(w + i0, g + i0, m + i0, v + i0, vm, i1 - i0, c);
            else if (vm) adamUpdate<false, true>(w + i0, g + i0, m + i0, v + i0, vm, i1 - i0, c);
            else if (round) adamUpdate<true, false>(w + i0, g + i0, m + i0, v + i0, nullptr, i1 - i0, c);
            else adamUpdate<false, false>(w + i0, g + i0, m + i0, v + i0, nullptr, i1 - i0, c);
        });
    }
}

std::vector<Tensor*> Adam::stateTensors()
{
    std::vector<Tensor*> out;
    for (Tensor& t : m_m) out.push_back(&t);
    for (Tensor& t : m_v) out.push_back(&t);
    for (Tensor& t : m_vMax) out.push_back(&t);
    return out;
}

} // namespace quantscope
