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

// pred, target: same shape. L = mean((pred - target)^2); dL/dpred = 2 (pred - target) / numel
float mseLoss(const Tensor& pred, const Tensor& target, Tensor& grad);

} // namespace quantscope
