#include "train/ptq_refine.h"

#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "quant/format.h"
#include "quant/histogram.h"
#include "quant/metrics.h"
#include "train/quant_sim.h"
#include "util/errors.h"
#include "util/rng.h"
#include "util/scope_exit.h"

#include <Eigen/Core>

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <cmath>

namespace quantscope {

namespace {

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A quantized Conv2d/Linear and what surrounds it.
struct Site {
    std::size_t target = 0, layer = 0;
    Conv2d* conv = nullptr;
    Linear* fc = nullptr;
    BatchNorm2d* bn = nullptr; // folded into the conv
    AdaRoundActivation act = AdaRoundActivation::None;
    std::size_t rows = 0, cols = 0, groups = 1;
};

std::vector<Site> quantizedSites(Model& model, QuantSim& sim)
{
    std::vector<Site> sites;
    std::size_t t = 0;
    for (std::size_t i = 0; i < model.size(); ++i) {
        Layer& l = model.layer(i);
        auto* conv = dynamic_cast<Conv2d*>(&l);
        auto* fc = dynamic_cast<Linear*>(&l);
        if (!conv && !fc) continue;
        const std::size_t target = t++;
        if (sim.weightTargets().at(target).layer != l.name())
            throw Error("internal error: weight targets out of order at '" + l.name() + "'");
        if (sim.targetFormat(target).kind != FormatKind::Int || sim.weightParams(target).numSlots() == 0) continue;
        Site s;
        s.target = target;
        s.layer = i;
        s.conv = conv;
        s.fc = fc;
        std::size_t out = i;
        if (conv) {
            s.bn = foldedBatchNorm(model, i);
            if (s.bn) out = static_cast<std::size_t>(model.soleConsumer(i));
            s.groups = conv->groups();
            s.rows = conv->outChannels();
            s.cols = conv->inChannels() / s.groups * conv->taps();
        } else {
            s.rows = fc->outFeatures();
            s.cols = fc->inFeatures();
        }
        const long next = model.soleConsumer(out);
        if (next >= 0) {
            const LayerKind k = model.layer(static_cast<std::size_t>(next)).kind();
            s.act = k == LayerKind::ReLU ? AdaRoundActivation::Relu
                                         : (k == LayerKind::ReLU6 ? AdaRoundActivation::Relu6 : AdaRoundActivation::None);
        }
        sites.push_back(s);
    }
    return sites;
}

// The conv/linear bias of a site, or null when the layer has none (bias=False).
Param* layerBias(const Site& s)
{
    if (s.conv) return s.conv->hasBias() ? &s.conv->bias() : nullptr;
    return s.fc->hasBias() ? &s.fc->bias() : nullptr;
}

// The folded bias of a site: conv/linear bias (FP32 or its quantized forward value), then the
// BatchNorm's affine part, exactly as QuantSim folds it.
std::vector<float> effectiveBias(const Site& s, bool quantized)
{
    std::vector<float> b(s.rows, 0.0f);
    Param* bias = layerBias(s);
    if (bias) {
        const Tensor& v = quantized ? bias->forwardValue() : bias->value;
        for (std::size_t c = 0; c < s.rows; ++c) b[c] = v[c];
    }
    if (s.bn)
        for (std::size_t c = 0; c < s.rows; ++c) {
            const float f = s.bn->gamma().value[c] / std::sqrt(s.bn->runningVar()[c] + s.bn->eps());
            b[c] = s.bn->beta().value[c] + (b[c] - s.bn->runningMean()[c]) * f;
        }
    return b;
}

// Runs the model on [b, e) of `set` as FP32 (every override off) or quantized (overrides and hooks).
const Tensor& runBatch(Model& model, QuantSim& sim, const Dataset& data, const LabeledImages& set, std::size_t b,
                       std::size_t e, bool quantized, Tensor& x, std::vector<std::int32_t>& y, std::size_t inputAct)
{
    data.makeBatch(set, b, e, x, y);
    RunContext ctx;
    ctx.training = false;
    if (quantized) {
        model.forward(x, ctx, &sim);
        return model.activation(inputAct);
    }
    std::vector<Param*> flagged;
    for (Param* p : model.params())
        if (p->hasOverride) {
            p->hasOverride = false;
            flagged.push_back(p);
        }
    model.forward(x, ctx, nullptr);
    for (Param* p : flagged) p->hasOverride = true;
    return model.activation(inputAct);
}

// The patch (Cin, kh, kw) under output position (oy, ox) of image n of a conv input (N, Cin, H, W).
void gatherPatch(const Conv2d& c, const Tensor& in, std::size_t n, std::size_t oy, std::size_t ox, float* out)
{
    const std::size_t C = in.shape()[1], H = in.shape()[2], W = in.shape()[3];
    const ConvGeometry& g = c.geometry();
    for (std::size_t ch = 0; ch < C; ++ch)
        for (std::size_t ky = 0; ky < g.kh; ++ky)
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
                const long iy = static_cast<long>(oy * g.sh + ky * g.dh) - static_cast<long>(g.padTop);
                const long ix = static_cast<long>(ox * g.sw + kx * g.dw) - static_cast<long>(g.padLeft);
                const bool inside = iy >= 0 && ix >= 0 && iy < static_cast<long>(H) && ix < static_cast<long>(W);
                *out++ = inside ? in[((n * C + ch) * H + static_cast<std::size_t>(iy)) * W + static_cast<std::size_t>(ix)] : 0.0f;
            }
}

std::pair<std::size_t, std::size_t> convOutSize(const Conv2d& c, const Tensor& in)
{
    return {c.geometry().outH(in.shape()[2]), c.geometry().outW(in.shape()[3])};
}

constexpr std::size_t kMaxSampleFloats = std::size_t{16} << 20; // 64 MB per input copy
constexpr std::size_t kMaxSamples = 50000;

} // namespace

// ---------------------------------------------------------------- snapshot
ParamSnapshot::ParamSnapshot(Model& model, std::vector<Param*> extra)
{
    std::vector<Param*> all = model.params();
    for (Param* p : extra)
        if (p && std::find(all.begin(), all.end(), p) == all.end()) all.push_back(p);
    for (Param* p : all) m_params.push_back({p, p->value, p->override, p->hasOverride});
    for (std::size_t i = 0; i < model.size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&model.layer(i))) {
            m_buffers.emplace_back(&bn->runningMean(), bn->runningMean());
            m_buffers.emplace_back(&bn->runningVar(), bn->runningVar());
        }
}

void ParamSnapshot::restore() const
{
    for (const Saved& s : m_params) {
        s.p->value = s.value;
        s.p->override = s.override;
        s.p->hasOverride = s.hasOverride;
    }
    for (const auto& [t, v] : m_buffers) *t = v;
}

// ---------------------------------------------------------------- AdaRound
std::vector<AdaRoundLayerReport> applyAdaRound(Model& model, QuantSim& sim, const Dataset& data, const LabeledImages& set,
                                               std::size_t images, std::size_t batchSize, const AdaRoundOptions& opt,
                                               const PtqProgressFn& progress)
{
    const auto t0 = Clock::now();
    const std::vector<Site> sites = quantizedSites(model, sim);
    const std::size_t nImages = std::min(images, set.size());
    if (nImages == 0) throw ConfigError("AdaRound needs calibration images");
    std::vector<AdaRoundLayerReport> reports;
    Tensor x;
    std::vector<std::int32_t> y;
    for (std::size_t si = 0; si < sites.size(); ++si) {
        const Site& s = sites[si];
        // AdaRound chooses between floor(w / s) and the level above it, which is 0 for some weights
        // of a binary grid {-1, +1} (no zero level): binary layers keep their sign rounding.
        if (sim.targetFormat(s.target).signOnly) continue;
        const auto tl = Clock::now();
        const std::size_t kin = s.groups * s.cols;
        const std::size_t cap = std::min(kMaxSamples, std::max<std::size_t>(256, kMaxSampleFloats / kin));
        const std::size_t inputAct = model.inputsOf(s.layer).at(0);
        // Sampled inputs: per image, a seeded choice of output positions (convolution) or the image.
        std::vector<float> xfp, xq;
        for (std::size_t b = 0; b < nImages; b += batchSize) {
            const std::size_t e = std::min(nImages, b + batchSize);
            for (int pass = 0; pass < 2; ++pass) {
                const Tensor& in = runBatch(model, sim, data, set, b, e, pass == 1, x, y, inputAct);
                std::vector<float>& dst = pass == 0 ? xfp : xq;
                for (std::size_t n = 0; n < e - b; ++n) {
                    if (s.fc) {
                        const std::size_t per = in.numel() / (e - b);
                        if (per != kin) throw ConfigError("AdaRound: '" + model.layer(s.layer).name() + "' reads " +
                                                          std::to_string(per) + " features, not " + std::to_string(kin));
                        dst.insert(dst.end(), in.data() + n * per, in.data() + (n + 1) * per);
                        continue;
                    }
                    const auto [Ho, Wo] = convOutSize(*s.conv, in);
                    const std::size_t positions = Ho * Wo;
                    const std::size_t m = std::min(positions, std::max<std::size_t>(1, cap / nImages));
                    Rng pick(streamKey(opt.seed, s.layer, b + n, 0x5A));
                    for (std::size_t j = 0; j < m; ++j) {
                        const std::size_t pos = m == positions ? j : static_cast<std::size_t>(pick.below(positions));
                        const std::size_t at = dst.size();
                        dst.resize(at + kin);
                        gatherPatch(*s.conv, in, n, pos / Wo, pos % Wo, dst.data() + at);
                    }
                }
            }
        }
        const std::size_t samples = xq.size() / kin;
        // Target: the FP32 layer's pre-activation output on the FP32 input, W x_fp + b.
        const Param& w = *sim.weightTargets()[s.target].weight; // folded when a BatchNorm follows
        const std::vector<float> bFloat = effectiveBias(s, false), bQuant = effectiveBias(s, true);
        std::vector<float> target(samples * s.rows);
        {
            using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
            const std::size_t rpg = s.rows / s.groups;
            for (std::size_t g = 0; g < s.groups; ++g) {
                Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> X(xfp.data() + g * s.cols, samples, s.cols,
                                                                    Eigen::OuterStride<>(kin));
                Eigen::Map<const RowMat> Wg(w.value.data() + g * rpg * s.cols, rpg, s.cols);
                Eigen::Map<RowMat, 0, Eigen::OuterStride<>> T(target.data() + g * rpg, samples, rpg,
                                                              Eigen::OuterStride<>(s.rows));
                T.noalias() = X * Wg.transpose();
            }
            for (std::size_t n = 0; n < samples; ++n)
                for (std::size_t c = 0; c < s.rows; ++c) target[n * s.rows + c] += bFloat[c];
        }
        xfp.clear();
        xfp.shrink_to_fit();
        AdaRoundProblem p;
        p.weight = w.value.values();
        p.rows = s.rows;
        p.cols = s.cols;
        p.groups = s.groups;
        p.params = &sim.weightParams(s.target);
        p.input = xq;
        p.target = target;
        p.samples = samples;
        p.bias = bQuant;
        p.activation = s.act;
        AdaRoundOptions o = opt;
        o.seed = streamKey(opt.seed, s.layer, 0xADA);
        PtqProgressEvent ev;
        ev.stage = "adaround";
        ev.layer = model.layer(s.layer).name();
        ev.layerIndex = si + 1;
        ev.layers = sites.size();
        ev.iterations = opt.iterations;
        bool stopped = false;
        const AdaRoundResult r = adaroundLayer(p, o, [&](std::size_t it, double loss) {
            ev.iteration = it;
            ev.loss = loss;
            ev.elapsedSeconds = secondsSince(t0);
            if (progress && !progress(ev)) stopped = true;
            return !stopped;
        });
        // Into the override the simulation runs with (and the conv's, unfolded, as QuantSim does).
        Param& wt = *sim.weightTargets()[s.target].weight;
        wt.override = Tensor(wt.value.shape(), r.weight);
        wt.hasOverride = true;
        if (s.bn) {
            Param& cw = s.conv->weight();
            const std::size_t row = cw.value.numel() / s.rows;
            cw.override.resize(cw.value.shape());
            for (std::size_t c = 0; c < s.rows; ++c) {
                const float f = s.bn->gamma().value[c] / std::sqrt(s.bn->runningVar()[c] + s.bn->eps());
                for (std::size_t j = 0; j < row; ++j) cw.override[c * row + j] = f != 0.0f ? r.weight[c * row + j] / f : 0.0f;
            }
            cw.hasOverride = true;
        }
        AdaRoundLayerReport rep;
        rep.layer = ev.layer;
        rep.samples = samples;
        rep.iterations = r.iterations;
        rep.lossNearest = r.lossNearest;
        rep.lossAdaRound = r.lossAdaRound;
        rep.flippedFraction = r.flippedFraction;
        rep.keptNearest = r.keptNearest;
        rep.seconds = secondsSince(tl);
        reports.push_back(rep);
        if (stopped) break;
    }
    return reports;
}

// ---------------------------------------------------------------- bias correction
std::vector<BiasCorrectionReport> applyBiasCorrection(Model& model, QuantSim& sim, const Dataset& data,
                                                      const LabeledImages& set, std::size_t images, std::size_t batchSize)
{
    const std::vector<Site> sites = quantizedSites(model, sim);
    const std::size_t nImages = std::min(images, set.size());
    if (nImages == 0) throw ConfigError("bias correction needs calibration images");
    std::vector<BiasCorrectionReport> reports;
    Tensor x;
    std::vector<std::int32_t> y;
    for (const Site& s : sites) {
        const std::size_t kin = s.groups * s.cols, inputAct = model.inputsOf(s.layer).at(0);
        // E[x] (FP32 network) and E[x~] (quantized network) over every input column the layer
        // multiplies, padding zeros included.
        std::vector<double> mean[2] = {std::vector<double>(kin, 0.0), std::vector<double>(kin, 0.0)};
        std::size_t count = 0;
        std::vector<float> patch(kin);
        for (std::size_t b = 0; b < nImages; b += batchSize) {
            const std::size_t e = std::min(nImages, b + batchSize);
            for (int pass = 0; pass < 2; ++pass) {
                const Tensor& in = runBatch(model, sim, data, set, b, e, pass == 1, x, y, inputAct);
                std::vector<double>& m = mean[pass];
                for (std::size_t n = 0; n < e - b; ++n) {
                    if (s.fc) {
                        const std::size_t per = in.numel() / (e - b);
                        for (std::size_t j = 0; j < kin && j < per; ++j) m[j] += in[n * per + j];
                        count += pass;
                        continue;
                    }
                    const auto [Ho, Wo] = convOutSize(*s.conv, in);
                    for (std::size_t oy = 0; oy < Ho; ++oy)
                        for (std::size_t ox = 0; ox < Wo; ++ox) {
                            gatherPatch(*s.conv, in, n, oy, ox, patch.data());
                            for (std::size_t j = 0; j < kin; ++j) m[j] += patch[j];
                            count += pass;
                        }
                }
            }
        }
        for (auto& m : mean)
            for (double& v : m) v /= static_cast<double>(std::max<std::size_t>(count, 1));
        // shift_c = (W E[x])_c - (W~ E[x~])_c  (folded weights when a BatchNorm follows)
        const Param& w = *sim.weightTargets()[s.target].weight;
        const Tensor& wq = w.forwardValue();
        const std::size_t rpg = s.rows / s.groups;
        std::vector<float> shift(s.rows, 0.0f);
        double sumAbs = 0.0;
        for (std::size_t c = 0; c < s.rows; ++c) {
            const std::size_t g = c / rpg;
            double d = 0.0;
            for (std::size_t j = 0; j < s.cols; ++j)
                d += static_cast<double>(w.value[c * s.cols + j]) * mean[0][g * s.cols + j] -
                     static_cast<double>(wq[c * s.cols + j]) * mean[1][g * s.cols + j];
            shift[c] = static_cast<float>(d);
            sumAbs += std::fabs(d);
        }
        BiasCorrectionReport rep;
        rep.layer = model.layer(s.layer).name();
        rep.meanAbsShift = sumAbs / static_cast<double>(s.rows);
        // Into the override only: the FP32 network (overrides off) stays the reference for the
        // layers after this one. A folded convolution's BatchNorm adds the shift after its factor.
        // A layer without a bias (nn.Linear/Conv2d(..., bias=False)) and without a BatchNorm is
        // skipped and reported as not applied: AIMET's bias correction would add a bias to it, but
        // then the corrected model would no longer have the architecture it was given (its .qsm,
        // ONNX export and parameter count would gain a tensor PyTorch's model does not have).
        Param* bias = s.bn ? &s.bn->beta() : layerBias(s);
        if (bias) {
            if (!bias->hasOverride) bias->override = bias->value;
            bias->hasOverride = true;
            for (std::size_t c = 0; c < s.rows; ++c) bias->override[c] += shift[c];
        } else {
            rep.applied = false;
        }
        reports.push_back(rep);
    }
    return reports;
}

void commitQuantizedWeights(Model& model, QuantSim& sim)
{
    for (const Site& s : quantizedSites(model, sim)) {
        // A corrected BatchNorm shift: export reads the BatchNorm's value.
        if (s.bn && s.bn->beta().hasOverride) s.bn->beta().value = s.bn->beta().override;
        Param& w = *sim.weightTargets()[s.target].weight;
        if (!w.hasOverride) continue;
        w.value = w.override;
        if (s.bn) {
            Param& cw = s.conv->weight();
            if (cw.hasOverride) cw.value = cw.override;
        }
    }
}

// ---------------------------------------------------------------- the refiner
void PtqRefiner::restoreLayers()
{
    for (auto& [i, layer] : m_swapped) m_model.replaceLayer(i, std::move(layer));
    m_swapped.clear();
}

void PtqRefiner::begin(QuantSim& sim)
{
    if (!m_float.empty()) m_float.restore();
    restoreLayers();
    std::vector<Param*> extra;
    for (const WeightTarget& t : sim.weightTargets()) extra.push_back(t.weight);
    m_float = ParamSnapshot(m_model, extra);
    m_refined = ParamSnapshot();
    if (!m_opt.cle) return;
    m_rangesBefore.clear();
    // Ranges before: of the weights QuantSim quantizes (BatchNorm folded in).
    for (std::size_t i = 0; i < m_model.size(); ++i) {
        Param* w = nullptr;
        if (auto* c = dynamic_cast<Conv2d*>(&m_model.layer(i))) w = &c->weight();
        else if (auto* f = dynamic_cast<Linear*>(&m_model.layer(i))) w = &f->weight();
        if (!w) continue;
        const BatchNorm2d* bn = foldedBatchNorm(m_model, i);
        const std::size_t C = w->value.shape().at(0), row = w->value.numel() / C;
        std::vector<float> lo(C), hi(C);
        for (std::size_t c = 0; c < C; ++c) {
            const float f = bn ? const_cast<BatchNorm2d*>(bn)->gamma().value[c] /
                                     std::sqrt(const_cast<BatchNorm2d*>(bn)->runningVar()[c] + bn->eps())
                               : 1.0f;
            lo[c] = hi[c] = w->value[c * row] * f;
            for (std::size_t j = 0; j < row; ++j) {
                lo[c] = std::min(lo[c], w->value[c * row + j] * f);
                hi[c] = std::max(hi[c], w->value[c * row + j] * f);
            }
        }
        m_rangesBefore[m_model.layer(i).name()] = {std::move(lo), std::move(hi)};
    }
    if (m_opt.relu6ToRelu) m_swapped = replaceRelu6WithRelu(m_model);
    m_cle = equalizeCrossLayer(m_model);
}

void PtqRefiner::refine(QuantSim& sim, const Dataset& data, std::size_t images, std::size_t batchSize,
                        const PtqProgressFn& progress)
{
    m_ada.clear();
    m_bias.clear();
    // AdaRound and bias correction read each layer's input (Model::activation), which a fused pass
    // leaves empty (a BatchNorm's output deferred into the convolution reading it, a producer fused
    // with its ReLU): they run unfused, and the run's fusion comes back after them. Inside a
    // training run (PTQ's refinement after its epochs) resnet8 and seed-cnn-bn crashed here.
    const bool fused = m_model.fusion();
    m_model.setFusion(false);
    const ScopeExit restoreFusion([&] { m_model.setFusion(fused); });
    if (m_opt.adaround) m_ada = applyAdaRound(m_model, sim, data, data.train, images, batchSize, m_opt.ada, progress);
    if (m_opt.biasCorrection) {
        if (progress) {
            PtqProgressEvent ev;
            ev.stage = "bias-correction";
            progress(ev);
        }
        m_bias = applyBiasCorrection(m_model, sim, data, data.train, images, batchSize);
    }
    // The weights' statistics while the FP32 weights (after CLE) are still there beside the
    // refined grid: after the commit both are the refined weights, and the error would read 0.
    // QuantSim::stats re-rounds the FP32 weights to nearest; the error is the refined grid's.
    m_stats = sim.stats(0);
    for (LayerStats& st : m_stats)
        for (const WeightTarget& t : sim.weightTargets()) {
            const Param& w = *t.weight;
            if (t.layer != st.layer || (w.name.empty() ? "weight" : w.name) != st.tensor || !w.hasOverride ||
                w.override.numel() != w.value.numel())
                continue;
            const ErrorMetrics em = errorMetrics(w.value.values(), w.override.values());
            st.mse = em.mse;
            st.maxAbsError = em.maxAbsError;
            st.sqnrDb = em.sqnrDb;
            st.quantHist = histogram(w.override.values(), st.binEdges);
        }
    commitQuantizedWeights(m_model, sim);
    std::vector<Param*> extra;
    for (const WeightTarget& t : sim.weightTargets()) extra.push_back(t.weight);
    m_refined = ParamSnapshot(m_model, extra);
}

void PtqRefiner::restoreFloat()
{
    if (!m_float.empty()) m_float.restore();
    restoreLayers();
    m_float = ParamSnapshot(); // training goes on from here: nothing older to go back to
    m_refined = ParamSnapshot();
    m_stats.clear();
}

bool PtqRefiner::reapplyRefined()
{
    if (m_refined.empty()) return false;
    m_refined.restore();
    return true;
}

void PtqRefiner::annotate(std::vector<LayerStats>& stats) const
{
    for (LayerStats& s : stats) {
        const auto refined = std::find_if(m_stats.begin(), m_stats.end(),
                                          [&](const LayerStats& r) { return r.layer == s.layer && r.tensor == s.tensor; });
        if (refined != m_stats.end()) {
            const std::size_t epoch = s.epoch;
            s = *refined;
            s.epoch = epoch;
        }
        const auto it = m_rangesBefore.find(s.layer);
        if (it == m_rangesBefore.end() || s.tensor != "weight") continue;
        s.channelMinBefore = it->second.first;
        s.channelMaxBefore = it->second.second;
    }
}

namespace {

std::string printed(const char* fmt, auto... args)
{
    char buf[512];
    std::snprintf(buf, sizeof buf, fmt, args...);
    return buf;
}

} // namespace

std::vector<std::string> PtqRefiner::reportLines() const
{
    std::vector<std::string> out;
    for (const EqualizedPair& p : m_cle.pairs)
        out.push_back(printed("CLE %s -> %s: channel range ratio %.1f -> %.1f", p.first.c_str(), p.second.c_str(), p.rangeRatioBefore,
                              p.rangeRatioAfter));
    for (const std::string& s : m_cle.skipped) out.push_back("CLE skipped " + s);
    if (replacedRelu6() > 0)
        out.push_back(printed("CLE replaced %zu ReLU6 by ReLU: FP32 test accuracy of that model %.2f %%", replacedRelu6(),
                              100 * m_floatAfterCle));
    for (const AdaRoundLayerReport& a : m_ada)
        if (a.keptNearest)
            out.push_back(printed("AdaRound %-12s reconstruction loss %.4g (nearest) -> %.4g learned: kept round-to-nearest (more "
                                  "--adaround-iters may help), %zu samples, %.1f s",
                                  a.layer.c_str(), a.lossNearest, a.lossAdaRound, a.samples, a.seconds));
        else
            out.push_back(printed("AdaRound %-12s reconstruction loss %.4g (nearest) -> %.4g, %.1f %% flipped, %zu samples, %.1f s",
                                  a.layer.c_str(), a.lossNearest, a.lossAdaRound, 100 * a.flippedFraction, a.samples, a.seconds));
    for (const BiasCorrectionReport& b : m_bias)
        out.push_back(printed("bias correction %-12s mean |shift| %.3g%s", b.layer.c_str(), b.meanAbsShift,
                              b.applied ? "" : " (not applied: no bias)"));
    return out;
}

} // namespace quantscope
