// Losses. Each returns the mean loss over the batch and writes dL/d(input) into grad.
#pragma once

#include "tensor/tensor.h"

#include <cstdint>
#include <span>

namespace quantscope {

// logProbs: (N, K) log-probabilities; targets: N class indices in [0, K).
// L = -1/N sum_n logProbs[n, t_n];  dL/dlogProbs[n, j] = -1/N [j == t_n]
float nllLoss(const Tensor& logProbs, std::span<const std::int32_t> targets, Tensor& grad);

// logits: (N, K). Cross-entropy = NLL(log_softmax(logits)).
// dL/dlogits = (softmax(logits) - onehot(t)) / N
float crossEntropyLoss(const Tensor& logits, std::span<const std::int32_t> targets, Tensor& grad);

// probs: (N, K) probabilities (a Softmax's output). L = -1/N sum_n log(max(p[n, t_n], FLT_MIN));
// dL/dp[n, j] = -1/(N max(p[n, t_n], FLT_MIN)) [j == t_n]. Through Softmax's backward this is
// cross-entropy's (softmax - onehot) / N; the floor keeps the loss finite where p underflows.
float nllOfProbabilitiesLoss(const Tensor& probs, std::span<const std::int32_t> targets, Tensor& grad);

// What a classifier's output holds, from its last layer: LogSoftmax (the presets) gives
// log-probabilities, Softmax probabilities, anything else (a Linear) logits.
enum class ModelOutput { Logits, LogProbabilities, Probabilities };
ModelOutput modelOutput(const class Model& model);
// The classification loss a model is trained and evaluated with, as PyTorch would train it:
// log-probabilities take NLL (nn.NLLLoss), logits cross-entropy (nn.CrossEntropyLoss, NLL of
// log_softmax), probabilities the NLL of their log (nllOfProbabilitiesLoss: the same loss as
// cross-entropy on the Softmax's input). NLL on logits would be unbounded below: training would
// drive the true class's logit up without limit. Shapes and errors as the losses'.
float classificationLoss(ModelOutput kind, const Tensor& out, std::span<const std::int32_t> targets, Tensor& grad);

// The classification loss of the model's last forward pass, out being its output. A Softmax head
// that alone reads the layer before it (Model::lastLayerReadsOnlyThePrevious) takes cross-entropy
// on its input, the scores before it: the same loss as the NLL of its probabilities, but exact
// where they underflow (scores 700 apart made -log(max(p, FLT_MIN)) 87 where cross-entropy is
// 740). grad is then dL/d(that input), for Model::backward(grad, hooks, true): beforeHead.
// Any other model: classificationLoss(modelOutput(model), out, ...).
struct ModelLoss {
    float loss = 0.0f;
    bool beforeHead = false;
};
ModelLoss modelClassificationLoss(const class Model& model, const Tensor& out, std::span<const std::int32_t> targets, Tensor& grad);

// pred, target: same shape. L = mean((pred - target)^2); dL/dpred = 2 (pred - target) / numel
float mseLoss(const Tensor& pred, const Tensor& target, Tensor& grad);

} // namespace quantscope
