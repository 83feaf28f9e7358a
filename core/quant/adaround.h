// AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020):
// learns, for one layer, whether each weight rounds down or up on its quantization grid by
// minimising the layer's output reconstruction error plus a regulariser that pushes the soft
// rounding variables to 0 or 1. This file is the math on plain matrices; train/ptq_refine.h feeds
// it a layer's calibration inputs.
//
//   h(V)   = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)          zeta = 1.1, gamma = -0.1 (eq. 23)
//   W~     = s * (clamp(floor(W / s) + h(V) + zp, qmin, qmax) - zp)   (eq. 22)
//   f_reg  = sum_i 1 - |2 h(V_i) - 1|^beta                             (eq. 24)
//   loss   = mean over samples of || f_a(W x_fp + b) - f_a(W~ x_q + b) ||^2 + lambda * f_reg   (eq. 25,
//            with x_q the input of the already-quantized network: the paper's asymmetric reconstruction)
// beta decays from 20 to 2 after a warm-up of 20 % of the iterations without the regulariser.
#pragma once

#include "quant/quantize.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace quantscope {

inline constexpr float kAdaRoundZeta = 1.1f;
inline constexpr float kAdaRoundGamma = -0.1f;

// h(V) above; and dh/dV (0 where the clip is active).
float rectifiedSigmoid(float v);
float rectifiedSigmoidGrad(float v);
// The V with h(V) = frac for frac in [0, 1) (the paper's initialisation: h starts at the
// fractional part of W / s, so the soft weights start equal to the float weights).
float adaroundInitialV(float frac);
// f_reg(V) = sum 1 - |2 h(V) - 1|^beta and its gradient d f_reg / dV (grad resized to v).
double adaroundRegularizer(std::span<const float> v, float beta);
void adaroundRegularizerGrad(std::span<const float> v, float beta, std::span<float> grad);

struct AdaRoundOptions {
    std::size_t iterations = 500;   // per layer (the paper uses 10k-20k; a few hundred already help here)
    std::size_t batchSize = 256;    // samples (images for Linear, output positions for Conv2d) per iteration
    float lambda = 0.01f;           // regulariser weight (paper)
    float betaStart = 20.0f, betaEnd = 2.0f;
    float warmup = 0.2f;            // share of iterations without the regulariser
    float learningRate = 1e-2f;     // Adam on V
    std::uint64_t seed = 1;         // sample draws
};

// beta at iteration it (0-based) of n, or 0 during the warm-up (regulariser off).
float adaroundBeta(std::size_t it, std::size_t n, const AdaRoundOptions& o);

enum class AdaRoundActivation { None, Relu, Relu6 }; // f_a: what follows the layer

// One layer. weight: (rows, cols) row-major (dim 0 = output channel), quantized with `params`
// (integer grid, rowLength = cols). groups: the rows split into `groups` equal blocks and block g
// reads input features [g*cols, (g+1)*cols) (grouped/depthwise convolution; 1 otherwise).
// input: (samples, groups*cols) row-major, what the quantized network feeds the layer; target:
// (samples, rows), the FP32 network's pre-activation output (W x_fp + b); bias: rows values added to
// W~ x (may be empty = 0).
struct AdaRoundProblem {
    std::span<const float> weight;
    std::size_t rows = 0, cols = 0, groups = 1;
    const QuantParams* params = nullptr;
    std::span<const float> input;
    std::span<const float> target;
    std::size_t samples = 0;
    std::span<const float> bias;
    AdaRoundActivation activation = AdaRoundActivation::None;
};

struct AdaRoundResult {
    std::vector<float> weight;   // hard-rounded, on the grid: s * (q - zp)
    double lossNearest = 0.0;    // reconstruction loss (mean over samples of the squared-error sum) with round-to-nearest
    double lossAdaRound = 0.0;   // the same with the learned rounding
    double flippedFraction = 0.0; // share of weights rounded the other way than nearest (0 when keptNearest)
    std::size_t iterations = 0;
    // The learned rounding reconstructed worse than round-to-nearest (too few iterations, a
    // stop): `weight` is the nearest rounding, the better of the two on the layer's samples.
    bool keptNearest = false;
};

// Throws ConfigError when the shapes do not agree. progress(iteration, loss) is called every
// `progressEvery` iterations and at the end; returning false stops early (the rounding learnt so far
// is kept). Parallel over output rows (TBB, chunked by size): deterministic for a seed.
AdaRoundResult adaroundLayer(const AdaRoundProblem& p, const AdaRoundOptions& o,
                             const std::function<bool(std::size_t, double)>& progress = {},
                             std::size_t progressEvery = 50);

// The reconstruction loss of weights `w` on the problem's samples (mean over samples of the
// squared-error sum over rows), for tests and reports.
double reconstructionLoss(const AdaRoundProblem& p, std::span<const float> w);

} // namespace quantscope
