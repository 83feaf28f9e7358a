// PTQ refinements over a QuantSim on calibration images, in this order:
//   1. cross-layer equalization (--cle, quant/equalization.h): BatchNorms folded into the model,
//      consecutive pairs rescaled; the FP32 function is unchanged;
//   2. the usual scales and activation calibration (QuantSim), then AdaRound (--rounding adaround,
//      quant/adaround.h) layer by layer in graph order, each layer fed by the already-quantized
//      earlier layers;
//   3. empirical bias correction (--bias-correction, Nagel et al. ICCV 2019 sec. 4.2, the empirical
//      variant): per output channel, E[W x] - E[W~ x~] over the calibration images, x the FP32
//      network's input to the layer and x~ the quantized network's, is added to the layer's bias
//      (to the BatchNorm shift of a folded convolution), layer by layer in graph order. With x~ = x
//      it is the paper's -eps E[x]; using x~ also removes the mean error carried in from earlier layers.
// The refined weights end on the usual grid with the usual scales, so export and the integer
// engine need nothing new.
#pragma once

#include "data/dataset.h"
#include "nn/model.h"
#include "quant/adaround.h"
#include "quant/equalization.h"
#include "train/events.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace quantscope {

class QuantSim;

// Every Param's value / override / hasOverride and every BatchNorm's running statistics, and
// back (the extra params: ones the model does not own, e.g. QuantSim's folded weights).
class ParamSnapshot {
public:
    ParamSnapshot() = default;
    ParamSnapshot(Model& model, std::vector<Param*> extra = {});
    void restore() const;
    bool empty() const { return m_params.empty(); }

private:
    struct Saved {
        Param* p;
        Tensor value, override;
        bool hasOverride;
    };
    std::vector<Saved> m_params;
    std::vector<std::pair<Tensor*, Tensor>> m_buffers;
};

struct AdaRoundLayerReport {
    std::string layer;
    std::size_t samples = 0, iterations = 0;
    double lossNearest = 0.0, lossAdaRound = 0.0; // reconstruction loss on the layer's samples
    double flippedFraction = 0.0;                 // weights rounded the other way than nearest
    double seconds = 0.0;
    bool keptNearest = false; // the learned rounding reconstructed worse: the layer keeps round-to-nearest
};

struct BiasCorrectionReport {
    std::string layer;
    double meanAbsShift = 0.0; // mean over channels of |E[W x] - E[W~ x~]|
    bool applied = true;       // false: no bias and no BatchNorm to take it
};

using PtqProgressFn = std::function<bool(const PtqProgressEvent&)>; // false = stop

// AdaRound for every integer-quantized target of `sim` (after quantizeWeights and calibrate), on
// the first `images` of `set`. Writes the learnt rounding into the weight overrides only; the FP32
// values stay (commitQuantizedWeights moves them onto the grid). Targets kept FP32 or in float/MX
// formats are left alone.
std::vector<AdaRoundLayerReport> applyAdaRound(Model& model, QuantSim& sim, const Dataset& data, const LabeledImages& set,
                                               std::size_t images, std::size_t batchSize, const AdaRoundOptions& opt,
                                               const PtqProgressFn& progress = {});
// Empirical bias correction for every quantized target, in graph order (each layer sees the
// corrections before it). Uses value (FP32) and forwardValue (quantized) of each weight.
std::vector<BiasCorrectionReport> applyBiasCorrection(Model& model, QuantSim& sim, const Dataset& data,
                                                      const LabeledImages& set, std::size_t images, std::size_t batchSize);
// value := override for every quantized weight target (and the conv under a folded one), so that
// re-quantizing with the same scales gives back exactly the refined grid (what export checks), and
// for the BatchNorm shifts bias correction changed (export reads BatchNorm values). Biases of
// Conv2d/Linear keep the correction in their override (export reads forwardValue()).
void commitQuantizedWeights(Model& model, QuantSim& sim);

// What PtqStrategy runs around its calibration; keeps the FP32 model to go back to.
struct PtqRefineOptions {
    bool cle = false, biasCorrection = false, adaround = false;
    bool relu6ToRelu = false; // with cle: ReLU6 layers become ReLU first (replaceRelu6WithRelu)
    AdaRoundOptions ada;
    bool any() const { return cle || biasCorrection || adaround; }
};

class PtqRefiner {
public:
    PtqRefiner(Model& model, PtqRefineOptions opt) : m_model(model), m_opt(opt) {}
    bool active() const { return m_opt.any(); }
    // Before quantizeWeights: back to the FP32 weights, snapshot them, apply CLE.
    void begin(QuantSim& sim);
    // How many ReLU6 layers begin() turned into ReLU (the FP32 model then differs), and the FP32
    // test accuracy and loss of that model where the caller measured them (NaN otherwise).
    std::size_t replacedRelu6() const { return m_swapped.size(); }
    void setFloatAccuracyAfterCle(double accuracy, double loss)
    {
        m_floatAfterCle = accuracy;
        m_floatLossAfterCle = loss;
    }
    double floatAccuracyAfterCle() const { return m_floatAfterCle; }
    double floatLossAfterCle() const { return m_floatLossAfterCle; }
    // After quantizeWeights + calibrate: AdaRound, bias correction, commit; remembers the result.
    void refine(QuantSim& sim, const Dataset& data, std::size_t images, std::size_t batchSize,
                const PtqProgressFn& progress);
    // Back to the FP32 model before training goes on (forgets both states); reapplyRefined()
    // restores the refined state of the last refine() when no training happened since.
    void restoreFloat();
    bool reapplyRefined();
    // The weights' statistics of the last refine() (FP32 weights after CLE against the refined
    // grid; the committed weights alone would show no error), with the before-CLE channel ranges
    // of the equalized layers.
    void annotate(std::vector<LayerStats>& stats) const;

    // What the last refine() did, one line each, as train prints it: CLE's pairs (channel range
    // ratio before -> after) and skipped layers, the ReLU6 layers replaced, AdaRound's layers
    // (reconstruction loss nearest -> learned, weights flipped), bias correction's mean |shift|.
    std::vector<std::string> reportLines() const;

    const EqualizationReport& equalization() const { return m_cle; }
    const std::vector<AdaRoundLayerReport>& adaround() const { return m_ada; }
    const std::vector<BiasCorrectionReport>& biasCorrection() const { return m_bias; }

private:
    Model& m_model;
    PtqRefineOptions m_opt;
    void restoreLayers();
    ParamSnapshot m_float, m_refined;
    std::vector<std::pair<std::size_t, LayerPtr>> m_swapped; // ReLU6 layers replaced by ReLU
    double m_floatAfterCle = kNoValue, m_floatLossAfterCle = kNoValue;
    EqualizationReport m_cle;
    std::vector<AdaRoundLayerReport> m_ada;
    std::vector<BiasCorrectionReport> m_bias;
    std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> m_rangesBefore; // layer -> min, max
    std::vector<LayerStats> m_stats; // QuantSim::stats before the commit of the last refine()
};

} // namespace quantscope
