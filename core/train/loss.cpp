#include "train/loss.h"

#include "nn/activations.h"
#include "nn/model.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace quantscope {

namespace {
void checkTargets(const Tensor& t, std::span<const std::int32_t> targets, const char* what)
{
    if (t.rank() != 2 || t.dim(0) != targets.size())
        throw ConfigError(std::string(what) + ": expected (N,K) scores for " + std::to_string(targets.size()) +
                          " targets, got " + shapeString(t.shape()));
    for (std::int32_t v : targets)
        if (v < 0 || static_cast<std::size_t>(v) >= t.dim(1))
            throw ConfigError(std::string(what) + ": target " + std::to_string(v) + " out of range [0, " +
                              std::to_string(t.dim(1)) + ")");
}
} // namespace

float nllLoss(const Tensor& logProbs, std::span<const std::int32_t> targets, Tensor& grad)
{
    checkTargets(logProbs, targets, "nll loss");
    const std::size_t N = logProbs.dim(0), K = logProbs.dim(1);
    grad.resize(logProbs.shape());
    grad.setZero();
    double s = 0.0;
    const float inv = 1.0f / static_cast<float>(N);
    for (std::size_t n = 0; n < N; ++n) {
        s -= logProbs[n * K + static_cast<std::size_t>(targets[n])];
        grad[n * K + static_cast<std::size_t>(targets[n])] = -inv;
    }
    return static_cast<float>(s / static_cast<double>(N));
}

float crossEntropyLoss(const Tensor& logits, std::span<const std::int32_t> targets, Tensor& grad)
{
    checkTargets(logits, targets, "cross-entropy loss");
    const std::size_t N = logits.dim(0), K = logits.dim(1);
    grad.resize(logits.shape());
    std::vector<float> lp(K);
    double s = 0.0;
    const float inv = 1.0f / static_cast<float>(N);
    for (std::size_t n = 0; n < N; ++n) {
        logSoftmaxRow(logits.data() + n * K, lp.data(), K);
        const auto t = static_cast<std::size_t>(targets[n]);
        s -= lp[t];
        for (std::size_t j = 0; j < K; ++j) grad[n * K + j] = (std::exp(lp[j]) - (j == t ? 1.0f : 0.0f)) * inv;
    }
    return static_cast<float>(s / static_cast<double>(N));
}

float nllOfProbabilitiesLoss(const Tensor& probs, std::span<const std::int32_t> targets, Tensor& grad)
{
    checkTargets(probs, targets, "NLL loss on probabilities");
    const std::size_t N = probs.dim(0), K = probs.dim(1);
    grad.resize(probs.shape());
    grad.setZero();
    double s = 0.0;
    const float invN = 1.0f / static_cast<float>(N);
    for (std::size_t n = 0; n < N; ++n) {
        const auto t = static_cast<std::size_t>(targets[n]);
        const float p = std::max(probs[n * K + t], std::numeric_limits<float>::min());
        s -= std::log(static_cast<double>(p));
        grad[n * K + t] = -invN / p;
    }
    return static_cast<float>(s / static_cast<double>(N));
}

ModelOutput modelOutput(const Model& model)
{
    if (model.size() == 0) return ModelOutput::Logits;
    const LayerKind k = model.layer(model.size() - 1).kind();
    return k == LayerKind::LogSoftmax ? ModelOutput::LogProbabilities
           : k == LayerKind::Softmax  ? ModelOutput::Probabilities
                                      : ModelOutput::Logits;
}

float classificationLoss(ModelOutput kind, const Tensor& out, std::span<const std::int32_t> targets, Tensor& grad)
{
    switch (kind) {
    case ModelOutput::LogProbabilities: return nllLoss(out, targets, grad);
    case ModelOutput::Probabilities: return nllOfProbabilitiesLoss(out, targets, grad);
    case ModelOutput::Logits: break;
    }
    return crossEntropyLoss(out, targets, grad);
}

ModelLoss modelClassificationLoss(const Model& model, const Tensor& out, std::span<const std::int32_t> targets, Tensor& grad)
{
    const ModelOutput kind = modelOutput(model);
    if (kind == ModelOutput::Probabilities && model.lastLayerReadsOnlyThePrevious())
        return {crossEntropyLoss(model.activation(model.size() - 1), targets, grad), true};
    return {classificationLoss(kind, out, targets, grad), false};
}

float mseLoss(const Tensor& pred, const Tensor& target, Tensor& grad)
{
    if (pred.shape() != target.shape())
        throw ConfigError("mse loss: prediction " + shapeString(pred.shape()) + " and target " +
                          shapeString(target.shape()) + " differ in shape");
    grad.resize(pred.shape());
    const float k = 2.0f / static_cast<float>(pred.numel());
    double s = 0.0;
    for (std::size_t i = 0; i < pred.numel(); ++i) {
        const float d = pred[i] - target[i];
        s += static_cast<double>(d) * d;
        grad[i] = k * d;
    }
    return static_cast<float>(s / static_cast<double>(pred.numel()));
}

} // namespace quantscope
