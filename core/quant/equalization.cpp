#include "quant/equalization.h"

#include "nn/activations.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/pointwise.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace quantscope {

namespace {

Param* weightOf(Layer& l)
{
    if (auto* c = dynamic_cast<Conv2d*>(&l)) return &c->weight();
    if (auto* f = dynamic_cast<Linear*>(&l)) return &f->weight();
    return nullptr;
}
Param* biasOf(Layer& l)
{
    if (auto* c = dynamic_cast<Conv2d*>(&l)) return c->hasBias() ? &c->bias() : nullptr;
    if (auto* f = dynamic_cast<Linear*>(&l)) return f->hasBias() ? &f->bias() : nullptr;
    return nullptr;
}

double rangeRatio(const std::vector<float>& r)
{
    float lo = std::numeric_limits<float>::infinity(), hi = 0.0f;
    for (float x : r)
        if (x > 0.0f) {
            lo = std::min(lo, x);
            hi = std::max(hi, x);
        }
    return hi > 0.0f ? static_cast<double>(hi) / lo : 1.0;
}

// One eligible pair: the first layer, the BatchNorms between, the second layer.
struct Pair {
    std::size_t first = 0, second = 0;
    std::vector<BatchNorm2d*> norms;
};

// The input-channel slices of the second layer: for channel i, visit(i, index) over every weight
// element that multiplies input channel i.
template <typename Visit>
void forInputChannel(Layer& second, std::size_t channels, std::size_t i, Visit&& visit)
{
    Tensor& w = weightOf(second)->value;
    if (auto* c = dynamic_cast<Conv2d*>(&second)) {
        const std::size_t G = c->groups(), cinG = c->inChannels() / G, coutG = c->outChannels() / G;
        const std::size_t kk = c->taps(), g = i / cinG, ii = i % cinG;
        for (std::size_t o = g * coutG; o < (g + 1) * coutG; ++o)
            for (std::size_t k = 0; k < kk; ++k) visit((o * cinG + ii) * kk + k);
    } else {
        auto* f = dynamic_cast<Linear*>(&second);
        const std::size_t in = f->inFeatures(), block = in / channels;
        for (std::size_t o = 0; o < f->outFeatures(); ++o)
            for (std::size_t k = 0; k < block; ++k) visit(o * in + i * block + k);
    }
    (void)w;
}

std::size_t inputChannelsOf(Layer& l)
{
    if (auto* c = dynamic_cast<Conv2d*>(&l)) return c->inChannels();
    return dynamic_cast<Linear*>(&l)->inFeatures();
}

} // namespace

std::vector<float> outputChannelRanges(const Param& weight)
{
    const Tensor& w = weight.value;
    const std::size_t C = w.shape().at(0), row = w.numel() / std::max<std::size_t>(C, 1);
    std::vector<float> r(C, 0.0f);
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t j = 0; j < row; ++j) r[c] = std::max(r[c], std::fabs(w[c * row + j]));
    return r;
}

std::vector<std::pair<std::size_t, LayerPtr>> replaceRelu6WithRelu(Model& model)
{
    std::vector<std::pair<std::size_t, LayerPtr>> old;
    for (std::size_t i = 0; i < model.size(); ++i)
        if (model.layer(i).kind() == LayerKind::ReLU6)
            old.emplace_back(i, model.replaceLayer(i, std::make_unique<ReLU>(model.layer(i).name())));
    return old;
}

std::size_t foldBatchNormsInPlace(Model& model)
{
    std::size_t folded = 0;
    for (std::size_t i = 0; i + 1 < model.size(); ++i) {
        auto* conv = dynamic_cast<Conv2d*>(&model.layer(i));
        if (!conv) continue;
        const long next = model.soleConsumer(i);
        if (next < 0) continue;
        auto* bn = dynamic_cast<BatchNorm2d*>(&model.layer(static_cast<std::size_t>(next)));
        if (!bn || model.inputsOf(static_cast<std::size_t>(next)).size() != 1) continue;
        const std::size_t C = conv->outChannels(), row = conv->weight().value.numel() / C;
        for (std::size_t c = 0; c < C; ++c) {
            const float sd = std::sqrt(bn->runningVar()[c] + bn->eps());
            const float f = bn->gamma().value[c] / sd;
            for (std::size_t j = 0; j < row; ++j) conv->weight().value[c * row + j] *= f;
            if (conv->hasBias()) conv->bias().value[c] *= f;
            bn->beta().value[c] -= bn->runningMean()[c] * f;
            bn->runningMean()[c] = 0.0f;
            bn->gamma().value[c] = sd; // gamma / sqrt(var + eps) == 1
        }
        ++folded;
    }
    return folded;
}

EqualizationReport equalizeCrossLayer(Model& model, std::size_t maxSweeps, double tolerance)
{
    EqualizationReport rep;
    rep.foldedBatchNorms = foldBatchNormsInPlace(model);
    std::vector<Pair> pairs;
    for (std::size_t i = 0; i < model.size(); ++i) {
        if (!weightOf(model.layer(i))) continue;
        Pair p;
        p.first = i;
        std::size_t j = i;
        std::string why;
        for (;;) {
            const long next = model.soleConsumer(j);
            if (next < 0) {
                why = model.consumersOf(j + 1).empty() ? "" : "its output has several readers";
                break;
            }
            const std::size_t k = static_cast<std::size_t>(next);
            Layer& l = model.layer(k);
            if (model.inputsOf(k).size() != 1) {
                why = std::string(layerKindName(l.kind())) + " " + l.name() + " joins several inputs";
                break;
            }
            if (weightOf(l)) {
                p.second = k;
                break;
            }
            const LayerKind kind = l.kind();
            if (kind == LayerKind::BatchNorm2d) {
                p.norms.push_back(dynamic_cast<BatchNorm2d*>(&l));
            } else if (kind == LayerKind::LogSoftmax || kind == LayerKind::Softmax) { // the model's output: nothing to pair with
                break;
            } else if (kind == LayerKind::ReLU6 || (isPointwise(kind) && kind != LayerKind::LeakyReLU)) {
                why = std::string(layerKindName(kind)) + " " + l.name() + " is not positively homogeneous";
                break;
            } else if (kind != LayerKind::ReLU && kind != LayerKind::LeakyReLU && kind != LayerKind::PReLU && kind != LayerKind::MaxPool2d && kind != LayerKind::AvgPool2d &&
                       kind != LayerKind::GlobalAvgPool2d && kind != LayerKind::Flatten && kind != LayerKind::Dropout) {
                why = std::string(layerKindName(kind)) + " " + l.name() + " lies between";
                break;
            }
            j = k;
        }
        if (p.second == 0) {
            if (!why.empty()) rep.skipped.push_back(model.layer(i).name() + ": " + why);
            continue;
        }
        const std::size_t C = weightOf(model.layer(i))->value.shape().at(0);
        const std::size_t in = inputChannelsOf(model.layer(p.second));
        if (in % C != 0 || (dynamic_cast<Conv2d*>(&model.layer(p.second)) && in != C)) {
            rep.skipped.push_back(model.layer(i).name() + " -> " + model.layer(p.second).name() +
                                  ": the channels do not match");
            continue;
        }
        pairs.push_back(std::move(p));
        EqualizedPair e;
        e.first = model.layer(i).name();
        e.second = model.layer(pairs.back().second).name();
        e.rangeRatioBefore = rangeRatio(outputChannelRanges(*weightOf(model.layer(i))));
        rep.pairs.push_back(e);
    }
    for (rep.sweeps = 0; rep.sweeps < maxSweeps && !pairs.empty();) {
        ++rep.sweeps;
        double worst = 0.0;
        for (const Pair& p : pairs) {
            Layer& first = model.layer(p.first);
            Layer& second = model.layer(p.second);
            Tensor& w1 = weightOf(first)->value;
            Tensor& w2 = weightOf(second)->value;
            Param* b1 = biasOf(first);
            const std::vector<float> r1 = outputChannelRanges(*weightOf(first));
            const std::size_t C = r1.size(), row = w1.numel() / C;
            for (std::size_t c = 0; c < C; ++c) {
                float r2 = 0.0f;
                forInputChannel(second, C, c, [&](std::size_t k) { r2 = std::max(r2, std::fabs(w2[k])); });
                if (!(r1[c] > 0.0f) || !(r2 > 0.0f)) continue;
                // s = sqrt(r1 r2) / r2: both ranges become sqrt(r1 r2)
                const float s = static_cast<float>(std::sqrt(static_cast<double>(r1[c]) * r2) / r2);
                worst = std::max(worst, std::fabs(static_cast<double>(s) - 1.0));
                const float inv = 1.0f / s;
                for (std::size_t j = 0; j < row; ++j) w1[c * row + j] *= inv;
                if (b1) b1->value[c] *= inv;
                for (BatchNorm2d* bn : p.norms) { // BN(z / s) with mean / s, beta / s == BN(z) / s
                    bn->runningMean()[c] *= inv;
                    bn->beta().value[c] *= inv;
                }
                forInputChannel(second, C, c, [&](std::size_t k) { w2[k] *= s; });
            }
        }
        if (worst < tolerance) break;
    }
    for (std::size_t k = 0; k < pairs.size(); ++k)
        rep.pairs[k].rangeRatioAfter = rangeRatio(outputChannelRanges(*weightOf(model.layer(pairs[k].first))));
    return rep;
}

} // namespace quantscope
