// PrecisionPlan: what precision each Conv2d / Linear layer of a model runs at (weight format,
// granularity, calibration, activation format, or "keep FP32"), with a default for the layers
// it does not name. Plans come from JSON files (docs/PLANS.md), from the CLI's --layer /
// --keep-fp32, or from the GUI's plan table; checkPlan() holds one against a model before any
// training starts. Per-layer settings as in PyTorch's QConfigMapping (set_module_name).
#pragma once

#include "nn/model.h"

#include <optional>
#include <string>
#include <vector>

namespace quantscope {

// The precision one layer runs at. format "fp32" keeps the layer in float: its weights are not
// fake-quantized and its output activation stays float.
struct LayerPrecision {
    std::string format = "int8";            // weights: a row of numberFormats(), or "fp32"
    std::string granularity = "channel";    // global | layer | tensor | channel | group:N (integer formats)
    std::string calibration = "minmax";     // weight ranges: minmax | moving-average | percentile | mse
    std::string activationFormat = "uint8"; // the layer's output activation (integer weight formats)

    bool keepFp32() const { return format == "fp32"; }
    bool operator==(const LayerPrecision&) const = default;
};

// One named layer's settings: the fields it sets; unset fields take the plan's default.
struct LayerOverride {
    std::string layer; // the model's layer name, e.g. "layer2.conv1", "fc1"
    std::optional<std::string> format, granularity, calibration, activationFormat;
    bool operator==(const LayerOverride&) const = default;
};

struct PrecisionPlan {
    LayerPrecision defaults;              // the whole-model options (--format, --granularity...)
    std::vector<LayerOverride> layers;    // at most one entry per layer name, in the order given
    std::string source;                   // the plan file (or "--layer"), named in errors
    // How the activations' ranges were calibrated when the plan was measured (a whole-model
    // setting, "default"."act_calibration" in the file): minmax | moving-average | percentile | mse.
    // Empty: not said; the command's --act-calibration applies.
    std::string activationCalibration;
    // The input normalisation the plan was measured with ("default"."normalize" in the file, in
    // --normalize's syntax: "0.2860,0.3530", per-channel "0.49:0.48:0.45,0.25:0.24:0.26", or
    // "none"). analyze search writes the one its data took, so that train --plan on a model that
    // stores no normalisation feeds its inputs alike. Empty: not said. Read as written (the
    // commands that apply it parse it: data/normalization.h).
    std::string inputNormalization;

    // The precision of `layer`: its entry over the default.
    LayerPrecision forLayer(const std::string& layer) const;
    // The entry for `layer`, created (empty) when missing.
    LayerOverride& entry(const std::string& layer);
    bool uniform() const { return layers.empty(); }
};

// The layers a plan can name: every Conv2d and Linear, in model order.
std::vector<std::string> planLayerNames(const Model& model);

// JSON (docs/PLANS.md):
//   {"version":1, "default":{"format":"int8","granularity":"channel","calibration":"minmax",
//    "act_format":"uint8", "act_calibration":"minmax", "normalize":"0.2860,0.3530"}, "layers":{"conv1":{"format":"int4","granularity":"group:16"},
//    "fc1":"int2:channel", "fc2":"fp32"}}
// Fields of "default" that are missing keep `defaults`. Throws ConfigError naming `source` and
// the bad key, layer or value with the valid choices. Layer names are checked by checkPlan().
PrecisionPlan parsePlanJson(const std::string& text, const std::string& source, const LayerPrecision& defaults = {});
// Reads a plan file (IoError if it cannot be read; at most 1 MB).
PrecisionPlan readPlanFile(const std::string& path, const LayerPrecision& defaults = {});
// The plan as JSON text (the same schema; every layer entry lists only the fields it sets).
std::string planToJson(const PrecisionPlan& plan);
void writePlanFile(const std::string& path, const PrecisionPlan& plan); // atomic

// "NAME=FORMAT[:GRANULARITY]" (--layer) into the plan's entry for NAME. Throws ConfigError.
void applyLayerSpec(PrecisionPlan& plan, const std::string& spec);
// Every --layer spec in order; a layer named twice is a ConfigError (the last used to win).
void applyLayerSpecs(PrecisionPlan& plan, const std::vector<std::string>& specs);
// "NAME[,NAME]" (--keep-fp32): those layers' format becomes fp32.
void applyKeepFp32(PrecisionPlan& plan, const std::string& names);

// Checks the plan against `model` before anything runs: every named layer exists (else the
// error lists the model's Conv2d/Linear layers), every format, granularity and calibration is
// known, a group size fits the rows of each layer that names it (a default group larger than
// a row is clamped to the row, as before plans), and activation formats are integer or float
// formats. Throws ConfigError "plan FILE: layer 'X': ...".
void checkPlan(const PrecisionPlan& plan, const Model& model);

} // namespace quantscope
