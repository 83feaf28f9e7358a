// QuantSim: simulated integer quantization of a Model, shared by PTQ, QAT and the integer
// phases of progressive training. It fake-quantizes the weights (into Param::override, with
// BatchNorm folded into the preceding convolution as in Jacob et al. 2018) and, as LayerHooks,
// the activations at the model input and after every compute block (conv/linear[+bn][+relu]).
// Straight-through estimator: gradients pass inside each clip range and are zero outside it.
// A PrecisionPlan (PrecisionConfig::plan) sets each Conv2d/Linear's weight format, granularity,
// calibration and output activation format; targets that share all three weight settings share
// one WeightQuantizer (so "global" means one scale over those layers). A layer kept FP32 keeps
// its float weights; its output stays float unless a quantized layer reads it (then it is
// quantized at the layer's act_format: the Q at a float -> integer boundary); the activation it
// reads stays on the grid of the layer that produced it (the DQ at an integer -> float boundary). Activation points belong to the Conv2d/Linear upstream of them through BatchNorm,
// ReLU, pooling, flatten and dropout; an Add's output takes the plan's default; the model input
// takes the activation format of the first quantized layer.
#pragma once

#include "nn/model.h"
#include "quant/activation_quantizer.h"
#include "quant/granularity.h"
#include "quant/lsq.h"
#include "quant/observer.h"
#include "quant/weight_quantizer.h"
#include "tensor/gemm_s8.h"
#include "train/events.h"
#include "quant/precision_plan.h"
#include "train/precision_config.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace quantscope {

class Dataset;
struct LabeledImages;
class BatchNorm2d;
class Conv2d;

// True at i when the output of layer i is an activation quantization point.
std::vector<bool> activationQuantPoints(const Model& model);
// The BatchNorm folded into conv layer i (its only reader), or nullptr.
BatchNorm2d* foldedBatchNorm(Model& model, std::size_t convLayer);
// The conv that BatchNorm layer i folds into (its input, read by nothing else), or nullptr.
Conv2d* foldableConv(Model& model, std::size_t bnLayer);

class QuantSim final : public LayerHooks {
public:
    // weightFormat: the plan's default weight format (cfg.format, or progressive's phase format).
    // usePlan = false ignores cfg.layers (progressive's phases before the last). Throws
    // ConfigError when the plan does not fit the model (checkPlan) or quantizes nothing.
    QuantSim(Model& model, const PrecisionConfig& cfg, const NumberFormat& weightFormat, bool usePlan = true);
    ~QuantSim() override;

    // Writes fake-quantized weights into the overrides (and remembers STE masks).
    void quantizeWeights(Rounding rounding, std::uint64_t rngKey);
    // Restores FP32 weights (clears every override, and the biases roundBiases() set).
    void clearWeights();
    // The biases as the export stores them (analysis/model_export.cpp intBias): each integer
    // target whose weights have one scale per tensor or per channel and whose input is an integer
    // activation point adds its bias (a folded conv: beta + (b - mean) f) rounded to the int32
    // accumulator grid s_in * s_w, not the float bias; group-wise targets and targets reading a
    // float activation keep float biases, as the file does. The error of a float bias is up to
    // s_in * s_w / 2 per channel, and s_w grows as 2^-bits: int2..int5 fake-quant disagreed with
    // the file's reference runner and the integer engine on 6-25 of 10,000 images (tester: train's
    // accuracy vs eval's). Call with the activation observers frozen (after calibration, PTQ's
    // refinements and BatchNorm re-estimation), before a quantized evaluation or the export;
    // quantizeWeights and clearWeights undo it.
    void roundBiases();
    // Zeroes weight gradients outside the clip ranges (call after backward).
    void maskWeightGradients();

    // Activation observers: observing = ranges follow the data (training/calibration).
    void setObserving(bool on) { m_observing = on; }
    void setActivationsEnabled(bool on) { m_actsEnabled = on; }
    void resetActivationObservers();
    // PTQ calibration: fresh observers fed with the first `images` of `set` (eval mode), in
    // batches of `batchSize` (one moving-average update a batch), on the float model's activations
    // (FP32 weights and biases, as PyTorch's prepare/calibrate/convert); the quantized weights are
    // back afterwards.
    void calibrate(const Dataset& data, const LabeledImages& set, std::size_t images, std::size_t batchSize);

    std::vector<LayerStats> stats(std::size_t epoch);
    bool foldsBatchNorm() const { return !m_folds.empty(); }

    // For export: the weight targets in model order (folded convs carry the folded weight,
    // w * gamma / sqrt(running_var + eps), and a null bias), their params after the last
    // quantizeWeights, the BN folding factors, and the activation quantizers: point 0 = model
    // input, point i+1 = output of layer i (null where activations are not quantized).
    const std::vector<WeightTarget>& weightTargets() const { return m_targets; }
    // Empty for a target kept FP32 (and for float/MX formats before the first quantizeWeights).
    const QuantParams& weightParams(std::size_t target) const;
    const ActivationQuantizer* activationQuantizer(std::size_t point) const { return m_act.at(point).get(); }
    const std::vector<bool>& activationPoints() const { return m_points; }
    // The plan's default weight and activation formats.
    const NumberFormat& weightFormat() const { return m_wfmt; }
    const NumberFormat& activationFormat() const { return m_afmt; }
    const PrecisionPlan& plan() const { return m_plan; }
    // Target i's precision and weight format (fp32 = kept in float).
    const LayerPrecision& targetPrecision(std::size_t target) const { return m_prec.at(target); }
    const NumberFormat& targetFormat(std::size_t target) const { return *m_tfmt.at(target); }
    // The format activation point p is quantized to (0 = input, i+1 = output of layer i), or
    // null where it stays float (not a point, or the output of a layer kept FP32).
    const NumberFormat* pointFormat(std::size_t point) const { return m_pfmt.at(point); }

    // LSQ (cfg.quantizer == "lsq", quant/lsq.h): learned weight steps per target (slots as the
    // granularity lays them out) and learned activation steps per point (LSQ+: and offsets). The
    // model input keeps its observer (no gradient reaches it). Steps initialise on the first
    // quantizeWeights / forward.
    // A BatchNorm-folded conv quantizes the folded weight w f (f = gamma / sqrt(running_var + eps)
    // per output channel) with step s, but learns u = s / |f| (per tensor: / the mean |f|), the
    // step in the conv's own weight units, as the LSQ paper (which keeps BN unfolded) does:
    // fq(w f; |f| u) / f = fq(w; u) per channel (gamma > 0; a negative gamma mirrors the grid,
    // -fq(-w; u)). The optimizer moves u at the pace of the weights
    // it quantizes and the grid stays put in weight units while the BN statistics move.
    // learnedParams() hold u for those targets; learnedSteps(), weightParams() and export give s.
    bool learnsSteps() const { return m_lsq; }
    std::vector<Param*> learnedParams();
    std::vector<StepSizeTrack> learnedSteps() const;
    // Zeroes the learned parameters' gradients (before a training step).
    void zeroLearnedGradients();
    // Keeps every learned step >= kScaleEps and every learned weight step at or above its floor
    // (lsqStepFloor of the weights it quantizes; after an optimizer step, and again in
    // quantizeWeights with that step's weights).
    void clampLearnedSteps();

    // QAT's integer products (Conv2d::setIntegerWeightScales / setIntegerInputGrid, tensor/
    // gemm_s8.h): each convolution that takesIntegerProducts() (stride-1 direct kernels, 1x1) whose weight format and input
    // are integer grids of at most 8 bits (the input read straight from an activation point, or
    // through ReLU, max pooling and Flatten, which keep values on the grid) computes its forward
    // product as int8 x uint8 -> int32 and dequantizes once. Weight grids follow quantizeWeights
    // (folded convs: the folded scale / the folding factor, per channel), input grids each
    // forward. Off until called; clearWeights and the destructor turn the layers off. Returns what
    // the run's start event reports ("amx-int8 in conv2, fp32 fake-quant elsewhere", or why none).
    std::string enableIntegerProducts();

    void onInput(Tensor& x, const RunContext& ctx) override;
    void afterForward(std::size_t layer, Layer& l, Tensor& y, const RunContext& ctx) override;
    void beforeBackward(std::size_t layer, Layer& l, Tensor& dy) override;
    // Only the activation quantization points (activationPoints()) are touched: a conv or BN
    // whose ReLU follows is not one, so the trainer's pass may run the pair fused.
    bool touchesOutput(std::size_t layer) const override { return layer < m_points.size() && m_points[layer]; }
    // A BatchNorm2d or Add that is not a point runs fused with the ReLU that alone reads it
    // (BatchNorm2d::forwardClamped, Add::forwardClamped): the ReLU's point fake-quantizes the fused output in place as
    // it would the ReLU's, and the fused backward masks dy by that fake-quantized output (r > 0),
    // which is what ReLU::backward reads. Not ReLU6, whose rule reads its input (0 < x < 6), not
    // its fake-quantized output. The same bits as the pair apart (tst_fused_passes).
    bool fusesReLU(std::size_t layer) const override;
    // The observer's straight-through mask of the point after layer, when beforeBackward would
    // apply just that (not with LSQ, whose backward also gathers the step's gradient).
    const std::uint8_t* gradientMask(std::size_t layer, std::size_t n) const override;
    // The point after layer, where its observer takes a batch's range (ActivationQuantizer::
    // takesBatchRange): a sink that takes each image group's range as the producer writes it, in
    // cache; quantizeActivation then observes their combination instead of a pass over y when
    // every image came (the same min and max: each is one value of y, whatever the order).
    OutputImageSink* outputSink(std::size_t layer, const Shape& y) override;
    bool observesOutput(std::size_t layer) const override;

private:
    struct Fold {
        Conv2d* conv;
        BatchNorm2d* bn;
        Param folded; // w * gamma / sqrt(running_var + eps), quantized in this form
        std::vector<float> factor;
        std::size_t target; // index in m_targets
    };
    // Targets sharing one (format, granularity, calibration): one WeightQuantizer.
    struct Group {
        std::unique_ptr<WeightQuantizer> wq;
        std::vector<std::size_t> members; // indices into m_targets
        std::vector<WeightTarget> targets;
    };
    void quantizeActivation(std::size_t point, Tensor& y, bool training);
    // An average pool's output (AvgPool2d of a square geometry, or GlobalAvgPool2d) on its input's
    // grid (equal per-tensor scale and zero point): the codes as the integer engine computes them,
    // each window's sum of input codes times its fixed-point 1 / n, rounded half to even
    // (quant/exact_pool.h). The float average lands a rounding off the halves that a 2x2 window
    // makes often, and rounded them either way (tester 8: 1-3 % of the codes one step from the
    // engine's). False (nothing done) where that does not apply or y is not on the input's grid.
    bool fakeQuantizeExactPool(std::size_t point, Tensor& y, std::vector<std::uint8_t>& mask) const;
    // The scale of the integer activation point layer `layer` reads (through layers that keep
    // their input's grid, as the export's actScale), or 0 when that activation is float.
    float inputScaleOf(std::size_t layer) const;
    // roundBiases' changes to BatchNorm betas (folded convs), to be put back.
    struct SavedBeta {
        Param* beta;
        Tensor override;
        bool hadOverride;
    };
    std::vector<SavedBeta> m_savedBetas;
    void restoreBetas();
    // The integer products' grids: inputs of point `point` (nullopt: off), weights of every
    // enabled conv after quantizeWeights (off = empty).
    void setIntegerInputs(std::size_t point, std::optional<U8Grid> grid);
    void setIntegerWeights(bool on);
    void collectIntegerReaders(std::size_t activation, std::vector<Conv2d*>& out) const;
    std::vector<std::vector<Conv2d*>> m_intReaders;           // per activation point
    std::vector<std::pair<std::size_t, Conv2d*>> m_intConvs;   // (target, conv) with integer products
    void assignActivationFormats();
    // Whether a quantized Conv2d/Linear (or a quantized Add) reads `activation`, looking through
    // BatchNorm, ReLU, pooling, Flatten and Dropout.
    bool readByQuantizedLayer(std::size_t activation) const;

    Model& m_model;
    PrecisionConfig m_cfg;
    PrecisionPlan m_plan;
    const NumberFormat& m_wfmt;
    const NumberFormat& m_afmt;
    Calibration m_actCal;
    std::vector<Group> m_groups;
    std::vector<WeightTarget> m_targets;
    std::vector<LayerPrecision> m_prec;        // per target
    std::vector<const NumberFormat*> m_tfmt;   // per target
    std::vector<long> m_group;                 // per target: its group, -1 = kept FP32
    std::vector<std::size_t> m_slot;           // per target: index within its group
    std::vector<const NumberFormat*> m_pfmt;   // per activation point
    std::vector<Fold> m_folds;
    std::vector<bool> m_points;
    std::vector<std::unique_ptr<ActivationQuantizer>> m_act; // [0] = input, [i+1] = after layer i
    std::vector<std::vector<std::uint8_t>> m_actMask;
    // outputSink's ranges: per image group, by its first image, for the point `point`.
    // Or the producer's whole range at once (outputRange: observed there), and then, when the
    // quantizer is ready with a per-tensor affine grid, the producer's fake-quantized output
    // and mask (m_actMask[point]) in its own pass.
    struct RangeSink final : OutputImageSink {
        QuantSim* sim = nullptr;
        std::size_t point = 0;
        Shape shape;
        std::vector<float> mins, maxs;
        std::vector<std::size_t> nonFinite, counts;
        std::atomic<std::size_t> images{0};
        bool rangeTaken = false;    // outputRange observed the range
        bool fakeQuantized = false; // and the producer wrote y fake-quantized, with its mask
        void imagesWritten(const Tensor& y, std::size_t n0, std::size_t count) override;
        bool outputRange(const Shape& y, float lo, float hi, FakeQuantGrid& grid) override;
    };
    RangeSink m_rangeSink;
    bool m_rangeSinkArmed = false;
    bool m_observing = true;
    bool m_actsEnabled = true;
    bool m_observeOnly = false;
    bool m_lsq = false;
    std::vector<std::unique_ptr<Param>> m_lsqW;                    // per target (null: not learned)
    std::vector<bool> m_lsqWInit;                                  // per target
    std::vector<std::unique_ptr<LsqActivationQuantizer>> m_lsqAct; // per activation point
    // --first-last-8bit: targets kept at 8 bits (first, last; -1 = off) and the activations
    // around them widened to 8 bits.
    std::pair<long, long> m_ends{-1, -1};
    void widenEndActivations(const std::vector<std::size_t>& layerOfTarget, const std::vector<long>& ownerOfPoint);
    void initLearnedWeightSteps();
    void floorLearnedWeightSteps();
    void learnedWeightGradients();
    // Per slot of target t's learned step: s / u (|f| of the slot's channel, per tensor the mean
    // |f|; 1 for unfolded targets). Valid after quantizeWeights computed the folding factors.
    std::vector<float> stepUnits(std::size_t t) const;
};

} // namespace quantscope
