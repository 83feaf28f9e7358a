#include "analysis/model_summary.h"

#include "io/exported_model.h"
#include "io/model_source.h"
#include "io/qsm.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/model_zoo.h"
#include "nn/pointwise.h"
#include "quant/plan_size.h"
#include "train/quant_sim.h"
#include "util/ascii_text.h"
#include "util/errors.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

namespace quantscope {

namespace {

std::uint64_t numelOf(const Shape& perImage) { return shapeNumel(perImage); }

// Per-image shape: drop the batch dimension of a batch-1 shape.
Shape perImage(const Shape& s) { return s.empty() ? s : Shape(s.begin() + 1, s.end()); }

} // namespace

ModelSummary summarizeModel(Model& model)
{
    ModelSummary s;
    s.modelName = model.name();
    s.precision = "fp32";
    s.inputShape = model.inputShape();
    const std::vector<Shape> acts = model.activationShapes(1);
    s.classes = acts.empty() ? 0 : numelOf(perImage(acts.back()));

    // BatchNorms that fold into their convolution at integer export.
    std::vector<bool> bnFolded(model.size(), false);
    for (std::size_t i = 0; i < model.size(); ++i) {
        if (model.layer(i).kind() != LayerKind::BatchNorm2d) continue;
        bnFolded[i] = foldableConv(model, i) != nullptr;
    }

    // Int8 sizes: quant/plan_size's rule for a uniform int8 channel-wise plan.
    const PlanSize int8Size = planSize(model, PrecisionPlan{});

    s.layers.reserve(model.size());
    for (std::size_t i = 0; i < model.size(); ++i) {
        Layer& layer = model.layer(i);
        LayerSummary r;
        r.name = layer.name();
        r.type = layerKindName(layer.kind());
        r.detail = layer.describe();
        for (std::size_t a : model.inputsOf(i)) r.inputs.push_back(a == 0 ? std::string("input") : model.layer(a - 1).name());
        const Shape in = perImage(acts.at(model.inputsOf(i).at(0)));
        r.outputShape = perImage(acts.at(i + 1));
        const std::uint64_t outN = numelOf(r.outputShape);
        for (const Param* p : layer.params()) r.params += p->value.numel();

        switch (layer.kind()) {
        case LayerKind::Conv2d: {
            const auto& c = dynamic_cast<const Conv2d&>(layer);
            // outH * outW * outC * (inC / groups) * kh * kw
            r.macs = outN * (c.inChannels() / c.groups()) * std::uint64_t{c.taps()};
            r.int8Bytes = int8Size.layerBytes[i];
            break;
        }
        case LayerKind::Linear: {
            const auto& f = dynamic_cast<const Linear&>(layer);
            r.macs = std::uint64_t{f.inFeatures()} * f.outFeatures();
            r.int8Bytes = int8Size.layerBytes[i];
            break;
        }
        case LayerKind::BatchNorm2d: {
            const auto& bn = dynamic_cast<const BatchNorm2d&>(layer);
            r.buffers = 2 * std::uint64_t{bn.channels()};
            r.elementwiseOps = 2 * outN;
            if (bnFolded[i]) r.foldedInto = model.layer(model.inputsOf(i)[0] - 1).name();
            else r.int8Bytes = int8Size.layerBytes[i];
            break;
        }
        case LayerKind::ReLU:
        case LayerKind::ReLU6:
        case LayerKind::Add:
        case LayerKind::Mul:
        QS_POINTWISE_KIND_CASES:
        case LayerKind::PReLU: r.elementwiseOps = outN; break;
        case LayerKind::MaxPool2d: {
            const PoolGeometry& g = dynamic_cast<const MaxPool2d&>(layer).geometry();
            r.elementwiseOps = outN * g.kh * g.kw;
            break;
        }
        case LayerKind::AvgPool2d: {
            const PoolGeometry& g = dynamic_cast<const AvgPool2d&>(layer).geometry();
            r.elementwiseOps = outN * g.kh * g.kw;
            break;
        }
        case LayerKind::GlobalAvgPool2d:
        case LayerKind::ChannelMax: r.elementwiseOps = numelOf(in); break;
        case LayerKind::GroupNorm:
        case LayerKind::LayerNorm2d: r.elementwiseOps = 4 * outN; break; // two statistics passes, then a x + b
        case LayerKind::LogSoftmax:
        case LayerKind::Softmax: r.elementwiseOps = 3 * outN; break;
        case LayerKind::Dropout:
        case LayerKind::Flatten:
        case LayerKind::Concat:
        case LayerKind::ChannelShuffle:
        case LayerKind::Slice:
        case LayerKind::Pad: break; // a copy
        }
        r.fp32Bytes = 4 * (r.params + r.buffers);

        s.params += r.params;
        s.buffers += r.buffers;
        s.macs += r.macs;
        s.elementwiseOps += r.elementwiseOps;
        s.fp32Bytes += r.fp32Bytes;
        s.int8Bytes += r.int8Bytes;
        s.layers.push_back(std::move(r));
    }
    return s;
}

ModelSummary summarizePreset(const std::string& name, std::size_t channels, std::size_t height, std::size_t width,
                             std::size_t classes)
{
    const std::unique_ptr<Model> model = makeModel(name, channels, height, width, classes);
    ModelSummary s = summarizeModel(*model);
    s.modelName = name;
    s.source = "preset";
    return s;
}

ModelSummary summarizeExported(const ExportedModel& m, const std::string& source)
{
    const std::unique_ptr<Model> model = buildModel(m);
    ModelSummary s = summarizeModel(*model);
    if (!m.modelName.empty()) s.modelName = m.modelName;
    s.source = source;
    s.quantized = m.quantized;
    s.importAddedParams = m.importAddedParams;
    s.importFoldedParams = m.importFoldedParams;
    if (m.quantized) s.precision = m.precisionText();
    if (!m.quantized)
        for (const StoredLayer& l : m.layers)
            if (l.kind == LayerKind::Conv2d && l.bnFolded) {
                ++s.exporterFoldedConvs;
                s.exporterFoldedChannels += l.outChannels;
            }
    // ONNX has no packed sub-byte tensors at the opsets written (io/onnx_io.h): every integer
    // weight is an int8, with an int8 zero point beside each float32 scale.
    const bool onnx = lowerExtension(source) == ".onnx";
    for (const StoredLayer& l : m.layers) {
        if (!m.quantized || (l.kind != LayerKind::Conv2d && l.kind != LayerKind::Linear) || l.tensors.empty()) continue;
        const StoredTensor& t = l.tensors.front(); // the weight
        StoredWeights w;
        w.layer = l.name;
        w.weights = 1;
        for (std::size_t d : t.shape) w.weights *= d;
        if (t.encoding == TensorEncoding::Float32) {
            w.format = "fp32";
            w.bytes = 4 * w.weights;
        } else {
            w.format = std::string(t.isSigned ? "int" : "uint") + std::to_string(t.bits);
            w.granularity = t.layout == ScaleLayout::Tensor    ? "tensor-wise"
                            : t.layout == ScaleLayout::Channel ? "channel-wise"
                                                               : "group-wise (" + std::to_string(t.groupSize) + ")";
            const bool zeroPoints = std::any_of(t.zeroPoints.begin(), t.zeroPoints.end(), [](std::int32_t z) { return z != 0; });
            w.bytes = onnx ? w.weights + 5 * t.scales.size() : packedBytes(w.weights, t.bits) + t.scales.size() * (zeroPoints ? 8 : 4);
        }
        w.bitsPerWeight = w.weights ? 8.0 * static_cast<double>(w.bytes) / static_cast<double>(w.weights) : 0.0;
        s.storedWeights.push_back(std::move(w));
    }
    s.notes = m.notes;
    s.normalizationKnown = m.normalizationKnown;
    if (m.normalizationKnown) s.normalization = m.normalization.describe();
    s.classNames = m.classNames;
    return s;
}

ModelSummary summarizeFile(const std::string& path, std::size_t height, std::size_t width)
{
    const ExportedModel m = readModelFile(path, height, width);
    ModelSummary s = summarizeExported(m, path);
    s.dynamicImageSize = m.dynamicImageSize;
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    if (!ec) s.fileBytes = bytes;
    return s;
}

ModelSummary summarize(const std::string& spec, std::size_t channels, std::size_t height, std::size_t width,
                       std::size_t classes)
{
    if (isModelFile(spec)) return summarizeFile(spec);
    std::string names;
    for (const ModelPresetInfo& p : modelPresets()) {
        if (spec == p.name) return summarizePreset(spec, channels, height, width, classes);
        names += (names.empty() ? "" : ", ") + std::string(p.name);
    }
    const std::string what = misnamedModelFile(spec); // a model file under another name (tester 14)
    if (!what.empty()) throw ConfigError(spec + ": " + what);
    throw ConfigError("'" + spec + "' is neither a model preset (" + names + ") nor a .qsm or .onnx file");
}

} // namespace quantscope
