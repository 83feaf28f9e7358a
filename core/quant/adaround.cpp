#include "quant/adaround.h"

#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <string>

namespace quantscope {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using StridedConst = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;

float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

float activate(float x, AdaRoundActivation a)
{
    switch (a) {
    case AdaRoundActivation::Relu: return x > 0.0f ? x : 0.0f;
    case AdaRoundActivation::Relu6: return std::clamp(x, 0.0f, 6.0f);
    default: return x;
    }
}
float activateGrad(float x, AdaRoundActivation a)
{
    switch (a) {
    case AdaRoundActivation::Relu: return x > 0.0f ? 1.0f : 0.0f;
    case AdaRoundActivation::Relu6: return x > 0.0f && x < 6.0f ? 1.0f : 0.0f;
    default: return 1.0f;
    }
}

void checkProblem(const AdaRoundProblem& p)
{
    auto fail = [](const std::string& what) { throw ConfigError("AdaRound: " + what); };
    if (!p.params || p.params->numSlots() == 0) fail("the layer has no quantization scales");
    if (p.rows == 0 || p.cols == 0 || p.groups == 0 || p.rows % p.groups != 0) fail("bad weight shape");
    if (p.weight.size() != p.rows * p.cols) fail("the weight has " + std::to_string(p.weight.size()) + " values, not rows*cols");
    if (p.samples == 0) fail("no calibration samples");
    if (p.input.size() != p.samples * p.groups * p.cols) fail("the input is not samples x (groups*cols)");
    if (p.target.size() != p.samples * p.rows) fail("the target is not samples x rows");
    if (!p.bias.empty() && p.bias.size() != p.rows) fail("the bias is not one value per row");
    p.params->validate(p.weight.size());
}

// Vectorised twins of rectifiedSigmoid / rectifiedSigmoidGrad and of the regulariser gradient
// (Eigen's packet exp/log), for the optimisation loop; tests compare them with the scalar ones.
void rectifiedSigmoidArrays(const Eigen::Ref<const Eigen::ArrayXf>& v, Eigen::ArrayXf& h, Eigen::ArrayXf& hg)
{
    const Eigen::ArrayXf sig = ((-v).exp() + 1.0f).inverse();
    const Eigen::ArrayXf raw = sig * (kAdaRoundZeta - kAdaRoundGamma) + kAdaRoundGamma;
    h = raw.max(0.0f).min(1.0f);
    hg = ((raw > 0.0f) && (raw < 1.0f)).select(sig * (1.0f - sig) * (kAdaRoundZeta - kAdaRoundGamma), 0.0f);
}

// d/dV [1 - |2h - 1|^beta] = -beta |u|^(beta - 1) sign(u) * 2 h'(V), u = 2h - 1
void regularizerGradArrays(const Eigen::ArrayXf& h, const Eigen::ArrayXf& hg, float beta, Eigen::ArrayXf& out)
{
    const Eigen::ArrayXf u = 2.0f * h - 1.0f;
    const Eigen::ArrayXf au = u.abs();
    const Eigen::ArrayXf powv = (au > 0.0f).select(((beta - 1.0f) * au.max(1e-30f).log()).exp(), 0.0f);
    const Eigen::ArrayXf sign = (u > 0.0f).select(Eigen::ArrayXf::Ones(u.size()), (u < 0.0f).select(-1.0f, Eigen::ArrayXf::Zero(u.size())));
    out = -beta * powv * sign * 2.0f * hg;
}

// Per-element grid data: scale, zero point, floor(w / s).
struct Grid {
    std::vector<float> scale, zp, base;
    float qmin = 0.0f, qmax = 0.0f;
};

Grid makeGrid(const AdaRoundProblem& p)
{
    const QuantParams& qp = *p.params;
    const std::size_t n = p.weight.size();
    Grid g;
    g.scale.resize(n);
    g.zp.resize(n);
    g.base.resize(n);
    g.qmin = static_cast<float>(qp.qmin);
    g.qmax = static_cast<float>(qp.qmax);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t slot = qp.perTensor() ? 0 : qp.slotOf(i);
        const float s = qp.scale[slot];
        g.scale[i] = s;
        g.zp[i] = static_cast<float>(qp.zeroPoint[slot]);
        g.base[i] = std::floor(p.weight[i] * (1.0f / s)); // the grid arithmetic of quantize.h (x * inv)
    }
    return g;
}

// Loss over samples [b, e) of weights w: sum over samples and rows of the squared error.
double lossOver(const AdaRoundProblem& p, std::span<const float> w, std::size_t b, std::size_t e)
{
    const std::size_t rpg = p.rows / p.groups, kin = p.groups * p.cols, n = e - b;
    double sum = 0.0;
    RowMat y(n, rpg);
    for (std::size_t g = 0; g < p.groups; ++g) {
        StridedConst x(p.input.data() + b * kin + g * p.cols, n, p.cols, Eigen::OuterStride<>(kin));
        Eigen::Map<const RowMat> wg(w.data() + g * rpg * p.cols, rpg, p.cols);
        y.noalias() = x * wg.transpose();
        for (std::size_t s = 0; s < n; ++s)
            for (std::size_t r = 0; r < rpg; ++r) {
                const std::size_t row = g * rpg + r;
                const float pre = y(s, r) + (p.bias.empty() ? 0.0f : p.bias[row]);
                const float d = activate(pre, p.activation) - activate(p.target[(b + s) * p.rows + row], p.activation);
                sum += static_cast<double>(d) * d;
            }
    }
    return sum;
}

} // namespace

float rectifiedSigmoid(float v)
{
    return std::clamp(sigmoid(v) * (kAdaRoundZeta - kAdaRoundGamma) + kAdaRoundGamma, 0.0f, 1.0f);
}

float rectifiedSigmoidGrad(float v)
{
    const float s = sigmoid(v);
    const float h = s * (kAdaRoundZeta - kAdaRoundGamma) + kAdaRoundGamma;
    if (h <= 0.0f || h >= 1.0f) return 0.0f;
    return s * (1.0f - s) * (kAdaRoundZeta - kAdaRoundGamma);
}

float adaroundInitialV(float frac)
{
    const float p = (std::clamp(frac, 0.0f, 1.0f) - kAdaRoundGamma) / (kAdaRoundZeta - kAdaRoundGamma);
    return std::log(p / (1.0f - p));
}

double adaroundRegularizer(std::span<const float> v, float beta)
{
    double sum = 0.0;
    for (float x : v) sum += 1.0 - std::pow(std::fabs(2.0 * rectifiedSigmoid(x) - 1.0), static_cast<double>(beta));
    return sum;
}

void adaroundRegularizerGrad(std::span<const float> v, float beta, std::span<float> grad)
{
    // The vectorised code the optimisation runs (the tests check it numerically).
    Eigen::ArrayXf h, hg, out;
    rectifiedSigmoidArrays(Eigen::Map<const Eigen::ArrayXf>(v.data(), static_cast<Eigen::Index>(v.size())), h, hg);
    regularizerGradArrays(h, hg, beta, out);
    std::copy(out.data(), out.data() + out.size(), grad.begin());
}

float adaroundBeta(std::size_t it, std::size_t n, const AdaRoundOptions& o)
{
    // whole iterations of warm-up (0.2f * 1000 is 200.000003 in float)
    const double warm = std::floor(static_cast<double>(o.warmup) * static_cast<double>(n) + 0.5);
    if (static_cast<double>(it) < warm || n == 0) return 0.0f;
    const double rel = (static_cast<double>(it) - warm) / std::max(1.0, static_cast<double>(n) - warm);
    return static_cast<float>(o.betaEnd + (o.betaStart - o.betaEnd) * std::max(0.0, 1.0 - rel));
}

double reconstructionLoss(const AdaRoundProblem& p, std::span<const float> w)
{
    checkProblem(p);
    constexpr std::size_t grain = 512;
    const std::size_t chunks = (p.samples + grain - 1) / grain;
    std::vector<double> part(chunks, 0.0);
    parallelChunks(p.samples, grain, [&](std::size_t b, std::size_t e) { part[b / grain] = lossOver(p, w, b, e); });
    double sum = 0.0;
    for (double x : part) sum += x;
    return sum / static_cast<double>(p.samples);
}

AdaRoundResult adaroundLayer(const AdaRoundProblem& p, const AdaRoundOptions& o,
                             const std::function<bool(std::size_t, double)>& progress, std::size_t progressEvery)
{
    checkProblem(p);
    const std::size_t n = p.weight.size(), rows = p.rows, cols = p.cols, kin = p.groups * cols;
    const std::size_t rpg = rows / p.groups;
    const Grid grid = makeGrid(p);
    // V starts where h(V) = frac(w / s): the soft weights equal the float ones (inside the clip range).
    std::vector<float> v(n), m1(n, 0.0f), m2(n, 0.0f);
    for (std::size_t i = 0; i < n; ++i) v[i] = adaroundInitialV(p.weight[i] / grid.scale[i] - grid.base[i]);

    const std::size_t B = std::min(o.batchSize, p.samples);
    std::vector<float> xb(B * kin), tb(B * rows);
    // Rows per parallel chunk: about 16, a whole number of groups when a group has fewer rows.
    const std::size_t chunk = rpg >= 16 ? 16 : rpg * ((16 + rpg - 1) / rpg);
    const std::size_t chunks = (rows + chunk - 1) / chunk;
    std::vector<double> part(chunks);
    Rng rng(streamKey(o.seed, 0xADA0u));
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    double running = 0.0;
    std::size_t runningCount = 0, it = 0;
    for (; it < o.iterations; ++it) {
        const float beta = adaroundBeta(it, o.iterations, o);
        for (std::size_t s = 0; s < B; ++s) {
            const std::size_t k = B == p.samples ? s : static_cast<std::size_t>(rng.below(p.samples));
            std::copy_n(p.input.data() + k * kin, kin, xb.data() + s * kin);
            std::copy_n(p.target.data() + k * rows, rows, tb.data() + s * rows);
        }
        const float c1 = 1.0f - std::pow(b1, static_cast<float>(it + 1));
        const float c2 = 1.0f - std::pow(b2, static_cast<float>(it + 1));
        parallelChunks(rows, chunk, [&](std::size_t r0, std::size_t r1) {
            double lossSum = 0.0;
            RowMat ws, y, d, gw;
            Eigen::ArrayXf h, hg, inside, reg;
            for (std::size_t a = r0; a < r1;) {
                const std::size_t g = a / rpg, e = std::min(r1, (g + 1) * rpg), nr = e - a, m = nr * cols;
                const std::size_t j0 = a * cols;
                // soft weights W~(V) of rows [a, e), vectorised (Eigen's exp): h, dh/dV, clamp mask
                Eigen::Map<Eigen::ArrayXf> V(v.data() + j0, static_cast<Eigen::Index>(m));
                Eigen::Map<const Eigen::ArrayXf> base(grid.base.data() + j0, static_cast<Eigen::Index>(m));
                Eigen::Map<const Eigen::ArrayXf> zp(grid.zp.data() + j0, static_cast<Eigen::Index>(m));
                Eigen::Map<const Eigen::ArrayXf> sc(grid.scale.data() + j0, static_cast<Eigen::Index>(m));
                rectifiedSigmoidArrays(V, h, hg);
                const Eigen::ArrayXf qs = base + zp + h;
                inside = ((qs >= grid.qmin) && (qs <= grid.qmax)).cast<float>();
                ws.resize(static_cast<Eigen::Index>(nr), static_cast<Eigen::Index>(cols));
                Eigen::Map<Eigen::ArrayXf>(ws.data(), static_cast<Eigen::Index>(m)) = sc * (qs.max(grid.qmin).min(grid.qmax) - zp);
                // y: (B, nr) = x_g (B, cols) W~^T
                StridedConst x(xb.data() + g * cols, static_cast<Eigen::Index>(B), static_cast<Eigen::Index>(cols),
                               Eigen::OuterStride<>(static_cast<Eigen::Index>(kin)));
                y.noalias() = x * ws.transpose();
                d.resize(static_cast<Eigen::Index>(B), static_cast<Eigen::Index>(nr));
                for (std::size_t s = 0; s < B; ++s)
                    for (std::size_t r = 0; r < nr; ++r) {
                        const float pre = y(s, r) + (p.bias.empty() ? 0.0f : p.bias[a + r]);
                        const float err = activate(pre, p.activation) - activate(tb[s * rows + a + r], p.activation);
                        lossSum += static_cast<double>(err) * err;
                        // dL/dpre of mean_s sum_r err^2
                        d(s, r) = 2.0f * err * activateGrad(pre, p.activation) / static_cast<float>(B);
                    }
                // dL/dW~: (nr, cols) = d^T x;  dL/dV = dL/dW~ * s * h'(V) inside the clamp (+ lambda * reg')
                gw.noalias() = d.transpose() * x;
                Eigen::ArrayXf gv = Eigen::Map<const Eigen::ArrayXf>(gw.data(), static_cast<Eigen::Index>(m)) * sc * hg * inside;
                if (beta > 0.0f) {
                    regularizerGradArrays(h, hg, beta, reg);
                    gv += o.lambda * reg;
                }
                Eigen::Map<Eigen::ArrayXf> M1(m1.data() + j0, static_cast<Eigen::Index>(m));
                Eigen::Map<Eigen::ArrayXf> M2(m2.data() + j0, static_cast<Eigen::Index>(m));
                M1 = b1 * M1 + (1.0f - b1) * gv;
                M2 = b2 * M2 + (1.0f - b2) * gv.square();
                V -= o.learningRate * (M1 / c1) / ((M2 / c2).sqrt() + eps);
                a = e;
            }
            part[r0 / chunk] = lossSum;
        });
        double loss = 0.0;
        for (double x : part) loss += x;
        running += loss / static_cast<double>(B);
        ++runningCount;
        const bool report = progress && ((it + 1) % progressEvery == 0 || it + 1 == o.iterations);
        if (report) {
            const bool go = progress(it + 1, running / static_cast<double>(runningCount));
            running = 0.0;
            runningCount = 0;
            if (!go) {
                ++it;
                break;
            }
        }
    }

    AdaRoundResult r;
    r.iterations = it;
    r.weight.resize(n);
    std::vector<float> nearest(n);
    std::size_t flipped = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const float up = rectifiedSigmoid(v[i]) >= 0.5f ? 1.0f : 0.0f;
        const float q = std::clamp(grid.base[i] + grid.zp[i] + up, grid.qmin, grid.qmax);
        const float qn = std::clamp(std::nearbyint(p.weight[i] * (1.0f / grid.scale[i])) + grid.zp[i], grid.qmin, grid.qmax);
        r.weight[i] = grid.scale[i] * (q - grid.zp[i]);
        nearest[i] = grid.scale[i] * (qn - grid.zp[i]);
        flipped += q != qn;
    }
    r.flippedFraction = static_cast<double>(flipped) / static_cast<double>(n);
    r.lossNearest = reconstructionLoss(p, nearest);
    r.lossAdaRound = reconstructionLoss(p, r.weight);
    if (r.lossAdaRound > r.lossNearest) { // never worse than the rounding it refines
        r.weight = std::move(nearest);
        r.flippedFraction = 0.0;
        r.keptNearest = true;
    }
    return r;
}

} // namespace quantscope
