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

// The classification loss a model is trained and evaluated with, as PyTorch would train it: a
// model whose last layer is LogSoftmax (the presets) outputs log-probabilities and takes NLL
// (nn.NLLLoss); any other model's output is logits and takes cross-entropy (nn.CrossEntropyLoss,
// NLL of log_softmax), which is what a classifier imported from PyTorch ending in a Linear (or in
// a Softmax, which the ONNX importer drops) was trained with. NLL on logits would be unbounded
// below: training would drive the true class's logit up without limit.
bool outputsLogProbabilities(const class Model& model);
// nllLoss when logProbs, else crossEntropyLoss. Shapes and errors as theirs.
float classificationLoss(bool logProbs, const Tensor& out, std::span<const std::int32_t> targets, Tensor& grad);

// pred, target: same shape. L = mean((pred - target)^2); dL/dpred = 2 (pred - target) / numel
float mseLoss(const Tensor& pred, const Tensor& target, Tensor& grad);

} // namespace quantscope
