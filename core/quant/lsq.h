// LSQ: learned step size quantization (Esser et al., "Learned Step Size Quantization", ICLR 2020)
// and LSQ+'s learned offset for affine activations (Bhalgat et al., "LSQ+: Improving low-bit
// quantization through learnable offsets and better initialization", CVPR Workshops 2020).
//
// The grid is the usual integer grid of quant/quantize.h: x_hat = (clamp(round(x/s) + z, qmin,
// qmax) - z) * s, so learned steps are just scales (exported, stored and run like any other).
// With Qn = z - qmin and Qp = qmax - z (levels below and above zero), the straight-through
// gradients of the paper are
//   d x_hat / d x = 1 inside the clip range, 0 outside;
//   d x_hat / d s = round(x/s) - x/s inside, -Qn below, Qp above;
//   d x_hat / d beta = 0 inside, 1 outside (LSQ+: offset beta = -z * s);
// and the step gradient is multiplied by g = 1 / sqrt(N * Qp) (N = elements of one weight slot,
// or features of one activation sample). Initialisation: s = 2 <|x|> / sqrt(Qp) per slot.
// Sign-only grids (binary formats, QuantParams::signOnly): x_hat = s * sign(x), d x_hat / d s =
// sign(x), and the gradient of x passes where |x| <= s.
#pragma once

#include "nn/layer.h"
#include "quant/format.h"
#include "quant/quantize.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace quantscope {

// Which quantizer QAT trains with: observer (scales from min-max / moving-average ranges) or
// lsq (learned step sizes). Throws ConfigError listing the known names.
enum class QuantizerKind { Observer, Lsq };
QuantizerKind parseQuantizer(const std::string& name);
const char* quantizerName(QuantizerKind k);

// Positive levels of slot `slot`: Qp = qmax - zp (>= 1).
int lsqPositiveLevels(const QuantParams& p, std::size_t slot);
// LSQ's gradient scale g = 1 / sqrt(n * Qp).
float lsqGradScale(std::size_t n, int positiveLevels);
// d x_hat / d s of one element (the paper's straight-through derivative, above), in the arithmetic
// of PyTorch 1.13's learnable fake quantization (torch._fake_quantize_learnable_per_tensor_affine's
// backward): q = nearbyint(z + x/s) in float32, -Qn if q < qmin, Qp if q > qmax, else
// ((q - z) s - x) / s. Rounding after adding z differs from the forward's round(x/s) + z only at
// exact ties with an odd z, where either neighbour's derivative (+-0.5) is the paper's.
float lsqStepDerivative(float x, float scale, std::int32_t zeroPoint, int qmin, int qmax, bool signOnly = false);
// LSQ's initial steps, one per slot of p's layout: 2 * mean|x - beta| / sqrt(Qp), beta = -zp * s0
// with the observer's scale s0 of that slot (0 when symmetric). The result is >= kScaleEps.
std::vector<float> lsqInitialSteps(std::span<const float> x, const QuantParams& p);
// Steps that minimise the quantization MSE of x, one per slot of p's layout (the mse observer's
// search, quant/observer.h, on the grid of format f; f's qmin/qmax must be p's). The zero points
// come back in zeroPoints (0 for symmetric formats). Used by --lsq-init mse (the LSQ+ paper's
// argument: start from the grid that loses least, then learn).
std::vector<float> lsqMseSteps(std::span<const float> x, const QuantParams& p, const NumberFormat& f,
                               std::vector<std::int32_t>* zeroPoints = nullptr);

// The lowest step a learned weight step may take, one per slot of p's layout: the least step whose
// clip range [-Qn s, Qp s] holds at least a quarter of the slot's n elements (the ceil(n/4)-th
// smallest of x_i / Qp for x_i >= 0 and -x_i / Qn below; sign-only grids, whose gradient passes
// |x| <= s: of |x_i|). QAT keeps every learned weight step at or above it (and >= kScaleEps).
// Why: behind a BatchNorm in training mode the loss does not change when a channel's quantized
// weights are scaled (van Laarhoven, "L2 regularization versus batch and weight normalization",
// 2017), so with LSQ's gradient (Esser et al. 2020, eq. 3) a channel's step gradient reduces to
// -(1/s) sum over its unclipped weights of dL/dw_hat w. Once every weight is clipped it is zero,
// and so is every weight's straight-through gradient: nothing moves the channel again. Adam
// moves a parameter by about its learning rate whatever the size of its gradient, and pushed
// steps there (resnet8's layer1-3 conv1: channels at the 1.2e-7 float floor, binary for good).
// The floor keeps the gradients of a quarter of the weights, whatever their distribution, and
// sits below the grids LSQ learns otherwise: on a Gaussian a quarter is inside |x| <= 0.32 sigma,
// where the MSE-optimal clip is 1.71, 2.15 and 2.55 sigma at 2, 3 and 4 bits (Banner et al.,
// "Post training 4-bit quantization of convolutional networks for rapid-deployment", NeurIPS 2019).
inline constexpr std::size_t kLsqFloorShareNum = 1, kLsqFloorShareDen = 4;
std::vector<float> lsqStepFloor(std::span<const float> x, const QuantParams& p);
// The same floor for a per-tensor activation step, on one batch x: the least step whose clip range
// holds a quarter of the batch's nonzero values (0 is on every grid, so the zeros a ReLU makes say
// nothing about the step). kScaleEps when x has no nonzero finite value.
// Why: Adam's first update moves every parameter by its learning rate (m/sqrt(v) = +-1 after bias
// correction), whatever its size. An activation step below the learning rate (seed-cnn's relu3 and
// logits at 6.6e-4 and 7.4e-4 behind group-wise int3 weights, Adam 1e-3) went below zero on the
// first step and was clamped to kScaleEps: every value clipped, no gradient reached the layers
// below, and the run never trained (loss ln 10).
float lsqActivationStepFloor(std::span<const float> x, const QuantParams& p);

// How learned steps start (--lsq-init): mse (default: the MSE-optimal grid of the checkpoint's
// weights and of the first batch's activations), lsq (the paper's 2<|x|>/sqrt(Qp)), range (the
// observers' scales: --calibration for weights, the first batch's min-max for activations).
enum class LsqInit { Mse, Paper, Range };
// "mse" | "lsq" | "range"; throws ConfigError listing them.
LsqInit parseLsqInit(const std::string& name);
// dL/ds per slot of p: g_slot * sum_i dL/dx_hat_i * d x_hat_i / d s (g_slot = lsqGradScale(slot
// elements / `samples`, Qp)), written to ds (size p.numSlots()). Reference loop.
void lsqStepGradient(std::span<const float> x, std::span<const float> dxhat, const QuantParams& p,
                     std::span<float> ds, std::size_t samples = 1);

// LSQ / LSQ+ fake quantization of one activation point, per tensor. The step (and LSQ+'s offset)
// are Params the optimizer updates. The first batch initialises them: zero point from the
// batch's min-max range (uint8) or 0 (symmetric formats), step 2<|x|>/sqrt(Qp); LSQ+ then
// learns the offset beta, whose zero point z = clamp(round(-beta / s), qmin, qmax) is used in
// the forward pass, so the model always runs on an integer grid. LSQ+ differentiates in its own
// parameters (s, beta): outside the range x_hat = qmin * s + beta (qmax * s + beta), so d x_hat / d s
// = qmin (qmax) there, and g uses Qp = qmax.
class LsqActivationQuantizer {
public:
    // f must be an integer format (needsScale); throws ConfigError otherwise. init: how the first
    // batch sets the step (and zero point): Mse = the MSE-optimal grid of that batch; Range = its
    // min-max grid; Paper = min-max zero point, step 2<|x - beta|>/sqrt(Qp).
    LsqActivationQuantizer(const NumberFormat& f, bool learnOffset, std::string name, LsqInit init = LsqInit::Mse);

    bool initialised() const { return m_init; }
    // Sets step (and offset) from x (one batch of activations).
    void initialise(std::span<const float> x);
    // In place; initialises on the first call. Training: remembers what backward() needs.
    void forward(std::span<float> y, bool training, std::size_t samples);
    // dy: dL/dx_hat in, dL/dx out (masked to the clip range); adds dL/ds (and dL/dbeta) to the
    // Params' gradients. No-op unless the last forward was a training one of the same size.
    void backward(std::span<float> dy);
    // Keeps s >= kScaleEps after an optimizer step. Each training forward then lifts s to
    // lsqActivationStepFloor of its batch when fewer than a quarter of the batch's nonzero values
    // fall inside the clip range (so a step reported right after an optimizer step may be below
    // the floor the next forward puts it at).
    void clampStep();
    // The grid in force: scale = s, zero point z (see above).
    QuantParams params() const;

    Param& step() { return m_step; }
    Param& offset() { return m_offset; }
    bool learnsOffset() const { return m_learnOffset; }
    const std::string& name() const { return m_name; }

private:
    NumberFormat m_format;
    bool m_learnOffset;
    std::string m_name;
    LsqInit m_initRule;
    Param m_step, m_offset;
    std::int32_t m_zeroPoint = 0; // fixed (plain LSQ) zero point
    bool m_init = false;
    std::size_t m_samples = 1;
    std::vector<float> m_dstep;           // per element: d x_hat / d s (training forward)
    std::vector<std::uint8_t> m_region;   // per element: 0 inside, 1 clipped (below or above)

    // Lifts s (keeping LSQ+'s offset) to lsqActivationStepFloor(x) if it is below it.
    void liftToFloor(std::span<const float> x);
};

} // namespace quantscope
