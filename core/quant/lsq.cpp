#include "quant/lsq.h"

#include "quant/observer.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>

namespace quantscope {

QuantizerKind parseQuantizer(const std::string& name)
{
    if (name == "observer") return QuantizerKind::Observer;
    if (name == "lsq") return QuantizerKind::Lsq;
    throw ConfigError("unknown quantizer '" + name + "' (known: observer, lsq)");
}

const char* quantizerName(QuantizerKind k) { return k == QuantizerKind::Lsq ? "lsq" : "observer"; }

int lsqPositiveLevels(const QuantParams& p, std::size_t slot)
{
    if (p.signOnly) return 1;
    return std::max(1, p.qmax - p.zeroPoint.at(slot));
}

float lsqGradScale(std::size_t n, int positiveLevels)
{
    const double d = static_cast<double>(std::max<std::size_t>(n, 1)) * static_cast<double>(std::max(positiveLevels, 1));
    return static_cast<float>(1.0 / std::sqrt(d));
}

float lsqStepDerivative(float x, float scale, std::int32_t zeroPoint, int qmin, int qmax, bool signOnly)
{
    if (std::isnan(x)) return 0.0f;
    if (signOnly) return x >= 0.0f ? 1.0f : -1.0f; // x_hat = s sign(x)
    // PyTorch's fake_quantize_learnable_tensor_grad_kernel_cpu, operation for operation
    const float inv = 1.0f / scale;
    const float q = std::nearbyint(static_cast<float>(zeroPoint) + x * inv);
    if (q < static_cast<float>(qmin)) return static_cast<float>(qmin - zeroPoint); // -Qn
    if (q > static_cast<float>(qmax)) return static_cast<float>(qmax - zeroPoint); // Qp
    const float xq = (q - static_cast<float>(zeroPoint)) * scale;
    return (xq - x) * inv;
}

std::vector<float> lsqInitialSteps(std::span<const float> x, const QuantParams& p)
{
    p.validate(x.size());
    const std::size_t slots = p.numSlots();
    std::vector<double> sum(slots, 0.0);
    std::vector<std::size_t> count(slots, 0);
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (!std::isfinite(x[i])) continue;
        const std::size_t k = p.slotOf(i);
        const double beta = -static_cast<double>(p.zeroPoint[k]) * static_cast<double>(p.scale[k]);
        sum[k] += std::fabs(static_cast<double>(x[i]) - beta);
        ++count[k];
    }
    std::vector<float> s(slots);
    for (std::size_t k = 0; k < slots; ++k) {
        const double mean = count[k] ? sum[k] / static_cast<double>(count[k]) : 0.0;
        const double qp = static_cast<double>(lsqPositiveLevels(p, k));
        // Sign-only grids: the L2-optimal binary scale is <|x|> itself (XNOR-Net).
        const double v = p.signOnly ? mean : 2.0 * mean / std::sqrt(qp);
        s[k] = std::max(static_cast<float>(v), kScaleEps);
    }
    return s;
}

std::vector<float> lsqMseSteps(std::span<const float> x, const QuantParams& p, const NumberFormat& f,
                               std::vector<std::int32_t>* zeroPoints)
{
    p.validate(x.size());
    if (p.signOnly) { // no range to search on a sign grid: <|x|> is already the L2-optimal scale
        if (zeroPoints) zeroPoints->assign(p.numSlots(), 0);
        return lsqInitialSteps(x, p);
    }
    if (f.kind != FormatKind::Int || f.qmin != p.qmin || f.qmax != p.qmax)
        throw ConfigError("lsqMseSteps: format '" + f.name + "' does not match the grid [" + std::to_string(p.qmin) + ", " +
                          std::to_string(p.qmax) + "]");
    RangeObserver o(Calibration::Mse, p.numSlots(), p.perTensor() ? 0 : p.rowLength, p.perTensor() ? 0 : p.slotLength);
    o.observe(x);
    QuantParams q = o.params(f);
    if (zeroPoints) *zeroPoints = q.zeroPoint;
    for (float& s : q.scale) s = std::max(s, kScaleEps);
    return q.scale;
}

// Per slot: the ceil(n / 4)-th smallest of t_i, the least step that has x_i inside [-Qn s, Qp s]
std::vector<float> lsqStepFloor(std::span<const float> x, const QuantParams& p)
{
    p.validate(x.size());
    const std::size_t slots = p.numSlots();
    std::vector<std::vector<float>> mag(slots);
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (!std::isfinite(x[i])) continue;
        const std::size_t k = p.slotOf(i);
        const int z = p.zeroPoint[k];
        // t = x / Qp above zero, -x / Qn below (sign-only grids: |x|, inside |x| <= s).
        const int levels = p.signOnly ? 1 : (x[i] >= 0.0f ? p.qmax - z : z - p.qmin);
        mag[k].push_back(std::fabs(x[i]) / static_cast<float>(std::max(levels, 1)));
    }
    std::vector<float> s(slots, kScaleEps);
    for (std::size_t k = 0; k < slots; ++k) {
        std::vector<float>& m = mag[k];
        if (m.empty()) continue;
        const std::size_t rank = (m.size() * kLsqFloorShareNum + kLsqFloorShareDen - 1) / kLsqFloorShareDen - 1;
        std::nth_element(m.begin(), m.begin() + static_cast<std::ptrdiff_t>(rank), m.end());
        s[k] = std::max(m[rank], kScaleEps);
    }
    return s;
}

float lsqActivationStepFloor(std::span<const float> x, const QuantParams& p)
{
    if (p.numSlots() != 1) throw ConfigError("lsqActivationStepFloor: activation steps are per tensor");
    // As lsqStepFloor, over the nonzero values only.
    const int z = p.zeroPoint[0];
    std::vector<float> mag;
    for (float v : x) {
        if (!std::isfinite(v) || v == 0.0f) continue;
        const int levels = v > 0.0f ? p.qmax - z : z - p.qmin;
        mag.push_back(std::fabs(v) / static_cast<float>(std::max(levels, 1)));
    }
    if (mag.empty()) return kScaleEps;
    const std::size_t rank = (mag.size() * kLsqFloorShareNum + kLsqFloorShareDen - 1) / kLsqFloorShareDen - 1;
    std::nth_element(mag.begin(), mag.begin() + static_cast<std::ptrdiff_t>(rank), mag.end());
    return std::max(mag[rank], kScaleEps);
}

LsqInit parseLsqInit(const std::string& name)
{
    if (name == "mse") return LsqInit::Mse;
    if (name == "lsq") return LsqInit::Paper;
    if (name == "range") return LsqInit::Range;
    throw ConfigError("unknown LSQ initialisation '" + name + "' (known: mse, lsq, range)");
}

void lsqStepGradient(std::span<const float> x, std::span<const float> dxhat, const QuantParams& p, std::span<float> ds,
                     std::size_t samples)
{
    p.validate(x.size());
    if (dxhat.size() != x.size() || ds.size() != p.numSlots())
        throw ConfigError("lsqStepGradient: sizes do not match the quantization parameters");
    std::vector<double> acc(p.numSlots(), 0.0);
    std::vector<std::size_t> count(p.numSlots(), 0);
    for (std::size_t i = 0; i < x.size(); ++i) {
        const std::size_t k = p.slotOf(i);
        ++count[k];
        const float d = lsqStepDerivative(x[i], p.scale[k], p.zeroPoint[k], p.qmin, p.qmax, p.signOnly);
        acc[k] += static_cast<double>(dxhat[i]) * static_cast<double>(d);
    }
    for (std::size_t k = 0; k < p.numSlots(); ++k) {
        const std::size_t n = count[k] / std::max<std::size_t>(samples, 1);
        ds[k] = static_cast<float>(acc[k]) * lsqGradScale(n, lsqPositiveLevels(p, k));
    }
}

// ---- activations -----------------------------------------------------------------------------

LsqActivationQuantizer::LsqActivationQuantizer(const NumberFormat& f, bool learnOffset, std::string name, LsqInit init)
    : m_format(f), m_learnOffset(learnOffset && !f.symmetric), m_name(std::move(name)), m_initRule(init)
{
    if (!needsScale(f)) throw ConfigError("LSQ needs an integer activation format, not '" + f.name + "'");
    m_step.name = "lsq_step";
    m_step.value = Tensor(Shape{1}, 1.0f);
    m_step.grad = Tensor(Shape{1}, 0.0f);
    m_offset.name = "lsq_offset";
    m_offset.value = Tensor(Shape{1}, 0.0f);
    m_offset.grad = Tensor(Shape{1}, 0.0f);
}

void LsqActivationQuantizer::initialise(std::span<const float> x)
{
    // Mse: the batch's MSE-optimal grid. Otherwise the zero point from the batch's range
    // (PyTorch's min-max choice), then the min-max step (Range) or LSQ's (Paper).
    RangeObserver o(m_initRule == LsqInit::Mse ? Calibration::Mse : Calibration::MinMax, 1, 0, 0);
    o.observe(x);
    QuantParams p = o.params(m_format);
    m_zeroPoint = p.zeroPoint.at(0);
    const float s = m_initRule == LsqInit::Paper ? lsqInitialSteps(x, p).at(0) : std::max(p.scale.at(0), kScaleEps);
    m_step.value[0] = s;
    m_offset.value[0] = -static_cast<float>(m_zeroPoint) * s;
    m_init = true;
}

QuantParams LsqActivationQuantizer::params() const
{
    const float s = m_step.value[0];
    std::int32_t z = m_zeroPoint;
    if (m_learnOffset) {
        const float zf = std::nearbyint(-m_offset.value[0] / s);
        z = static_cast<std::int32_t>(std::clamp(std::isfinite(zf) ? zf : 0.0f, static_cast<float>(m_format.qmin),
                                                 static_cast<float>(m_format.qmax)));
    }
    return perTensorParams(s, z, m_format.qmin, m_format.qmax);
}

void LsqActivationQuantizer::liftToFloor(std::span<const float> x)
{
    // A cheap pass first (parallel, no copy): does the clip range hold a quarter of the nonzero
    // values? Only then is the floor (a selection over the batch) needed: computing it every step
    // cost a quarter of seed-cnn's training time.
    const QuantParams p = params();
    const float s = p.scale[0], z = static_cast<float>(p.zeroPoint[0]);
    const float lo = static_cast<float>(p.qmin), hi = static_cast<float>(p.qmax);
    const std::size_t n = x.size(), grain = elementwiseGrain(n), chunks = n ? (n + grain - 1) / grain : 0;
    std::vector<std::size_t> nonzero(chunks, 0), inside(chunks, 0); // per chunk: deterministic sums
    parallelChunks(n, grain, [&](std::size_t b, std::size_t e) {
        std::size_t nz = 0, in = 0;
        for (std::size_t i = b; i < e; ++i) {
            if (!std::isfinite(x[i]) || x[i] == 0.0f) continue;
            ++nz;
            const float q = std::nearbyint(x[i] * (1.0f / s)) + z;
            in += q >= lo && q <= hi;
        }
        nonzero[b / grain] = nz;
        inside[b / grain] = in;
    });
    std::size_t nz = 0, in = 0;
    for (std::size_t c = 0; c < chunks; ++c) {
        nz += nonzero[c];
        in += inside[c];
    }
    if (nz == 0 || in * kLsqFloorShareDen >= nz * kLsqFloorShareNum) return;
    const float floor = lsqActivationStepFloor(x, p);
    if (m_step.value[0] < floor) m_step.value[0] = floor; // LSQ+'s offset beta stays: its zero point follows s
}

void LsqActivationQuantizer::forward(std::span<float> y, bool training, std::size_t samples)
{
    if (!m_init) initialise(y);
    if (training) liftToFloor(y);
    const QuantParams p = params();
    if (!training) {
        m_dstep.clear();
        m_region.clear();
        fakeQuantize(y, p, y, {});
        return;
    }
    m_samples = std::max<std::size_t>(samples, 1);
    const std::size_t n = y.size();
    m_dstep.resize(n);
    m_region.resize(n);
    const float s = p.scale[0];
    const std::int32_t z = p.zeroPoint[0];
    float* d = m_dstep.data();
    std::uint8_t* r = m_region.data();
    const float* x = y.data();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            d[i] = lsqStepDerivative(x[i], s, z, p.qmin, p.qmax);
            const float q = std::nearbyint(x[i] * (1.0f / s)) + static_cast<float>(z);
            r[i] = static_cast<std::uint8_t>(!(q >= static_cast<float>(p.qmin) && q <= static_cast<float>(p.qmax)));
            // LSQ+ holds beta while s moves: x_hat = qmin * s + beta outside, so d/ds = qmin (qmax).
            if (m_learnOffset && r[i] && !std::isnan(x[i])) d[i] += static_cast<float>(z);
        }
    });
    fakeQuantize(y, p, y, {});
}

void LsqActivationQuantizer::backward(std::span<float> dy)
{
    if (m_dstep.size() != dy.size() || dy.empty()) return;
    const std::size_t n = dy.size();
    const float* d = m_dstep.data();
    const std::uint8_t* r = m_region.data();
    float* g = dy.data();
    // dL/ds = g * sum dy * dxhat/ds;  dL/dbeta = g * sum_{clipped} dy;  dL/dx = dy inside.
    const std::size_t grain = elementwiseGrain(n), chunks = (n + grain - 1) / grain;
    std::vector<double> partS(chunks, 0.0), partB(chunks, 0.0); // per chunk: deterministic sums
    parallelChunks(n, grain, [&](std::size_t b, std::size_t e) {
        double a = 0.0, o = 0.0;
        for (std::size_t i = b; i < e; ++i) {
            a += static_cast<double>(g[i]) * static_cast<double>(d[i]);
            if (r[i]) o += static_cast<double>(g[i]);
            g[i] = r[i] ? 0.0f : g[i];
        }
        partS[b / grain] = a;
        partB[b / grain] = o;
    });
    double sumS = 0.0, sumB = 0.0;
    for (std::size_t c = 0; c < chunks; ++c) {
        sumS += partS[c];
        sumB += partB[c];
    }
    const QuantParams p = params();
    // LSQ+: Qp = qmax (levels above the offset), as in the paper.
    const float gs = lsqGradScale(n / m_samples, m_learnOffset ? p.qmax : lsqPositiveLevels(p, 0));
    m_step.grad[0] += static_cast<float>(sumS) * gs;
    if (m_learnOffset) m_offset.grad[0] += static_cast<float>(sumB) * gs;
    m_dstep.clear();
    m_region.clear();
}

void LsqActivationQuantizer::clampStep()
{
    if (!(m_step.value[0] >= kScaleEps)) m_step.value[0] = kScaleEps; // also NaN
}

} // namespace quantscope
