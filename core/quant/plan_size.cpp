#include "quant/plan_size.h"

#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "quant/format.h"
#include "quant/granularity.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace quantscope {

namespace {

std::uint64_t packedBytes(std::uint64_t n, int bits) { return (n * static_cast<std::uint64_t>(bits) + 7) / 8; }

// A BatchNorm that integer export folds into its convolution: it reads one Conv2d that nothing
// else reads (QuantSim's foldableConv, which sits in train/).
long foldsInto(const Model& model, std::size_t bn)
{
    const auto& in = model.inputsOf(bn);
    if (in.size() != 1 || in[0] == 0) return -1;
    const std::size_t prev = in[0] - 1;
    if (model.layer(prev).kind() != LayerKind::Conv2d || model.soleConsumer(prev) != static_cast<long>(bn)) return -1;
    return static_cast<long>(prev);
}

} // namespace

PlanSize planSize(const Model& model, const PrecisionPlan& plan)
{
    PlanSize s;
    s.layerBytes.assign(model.size(), 0);
    std::vector<long> foldedBn(model.size(), -1); // conv -> its folded BatchNorm
    for (std::size_t i = 0; i < model.size(); ++i)
        if (model.layer(i).kind() == LayerKind::BatchNorm2d)
            if (const long c = foldsInto(model, i); c >= 0) foldedBn[static_cast<std::size_t>(c)] = static_cast<long>(i);
    // Global granularity: one scale per (format, calibration) over the layers that share it.
    std::map<std::tuple<std::string, std::string>, bool> globalCounted;

    for (std::size_t i = 0; i < model.size(); ++i) {
        Layer& layer = const_cast<Model&>(model).layer(i);
        std::uint64_t params = 0, buffers = 0;
        for (const Param* p : layer.params()) params += p->value.numel();
        if (layer.kind() == LayerKind::BatchNorm2d) buffers = 2 * dynamic_cast<const BatchNorm2d&>(layer).channels();
        s.fp32Bytes += 4 * (params + buffers);
        if (layer.kind() == LayerKind::BatchNorm2d) {
            if (foldsInto(model, i) < 0) s.layerBytes[i] = 4 * (params + buffers);
            continue;
        }
        if (layer.kind() != LayerKind::Conv2d && layer.kind() != LayerKind::Linear) {
            s.layerBytes[i] = 4 * params; // PReLU's slopes, float32 in every model
            continue;
        }
        const Param* w = nullptr;
        for (const Param* p : layer.params())
            if (p->isWeight) w = p;
        LayerSize r;
        r.layer = layer.name();
        r.modelLayer = i;
        r.weights = w ? w->value.numel() : 0;
        const std::uint64_t rows = w && w->value.rank() ? w->value.dim(0) : 1, row = rows ? r.weights / rows : 0;
        r.biases = params - r.weights;
        r.fp32Bytes = 4 * params;
        if (foldedBn[i] >= 0) {
            const auto& bn = dynamic_cast<const BatchNorm2d&>(model.layer(static_cast<std::size_t>(foldedBn[i])));
            r.biases = rows; // the folded bias
            r.fp32Bytes += 4 * 4 * std::uint64_t{bn.channels()};
        }
        const LayerPrecision p = plan.forLayer(r.layer);
        const NumberFormat& f = findFormat(p.format);
        r.format = f.name;
        switch (f.kind) {
        case FormatKind::Float32:
            r.weightBytes = 4 * r.weights;
            r.biasBytes = 4 * r.biases;
            break;
        case FormatKind::Float:
            r.weightBytes = packedBytes(r.weights, f.bits);
            r.biasBytes = packedBytes(r.biases, f.bits);
            break;
        case FormatKind::MxInt:
        case FormatKind::MxFloat: {
            const std::uint64_t bs = static_cast<std::uint64_t>(std::max(1, f.blockSize));
            r.scaleSlots = rows * ((row + bs - 1) / bs); // blocks restart at each output channel (float_cast.h)
            r.weightBytes = packedBytes(r.weights, f.bits);
            r.scaleBytes = r.scaleSlots;
            r.biasBytes = packedBytes(r.biases, f.bits) + (r.biases + bs - 1) / bs;
            break;
        }
        case FormatKind::Int: {
            const Granularity g = parseGranularity(p.granularity);
            r.granularity = g.label();
            switch (g.kind) {
            case GranularityKind::Global: {
                bool& counted = globalCounted[{f.name, p.calibration}];
                r.scaleSlots = counted ? 0 : 1;
                counted = true;
                break;
            }
            case GranularityKind::Layer:
            case GranularityKind::Tensor: r.scaleSlots = 1; break;
            case GranularityKind::Channel: r.scaleSlots = rows; break;
            case GranularityKind::Group: {
                const std::uint64_t len = std::min<std::uint64_t>(g.groupSize, row);
                r.scaleSlots = rows * (len ? (row + len - 1) / len : 0);
                break;
            }
            }
            r.weightBytes = packedBytes(r.weights, std::max(f.bits, 2)); // binary is stored on the 2-bit grid (.qsm, engine)
            r.scaleBytes = r.scaleSlots * (f.symmetric ? 4 : 8);
            r.biasBytes = 4 * r.biases;
            break;
        }
        }
        r.bytes = r.weightBytes + r.scaleBytes + r.biasBytes;
        r.bitsPerWeight = r.weights ? 8.0 * static_cast<double>(r.weightBytes + r.scaleBytes) / static_cast<double>(r.weights) : 0.0;
        s.layerBytes[i] = r.bytes;
        s.weights += r.weights;
        s.bitsPerWeight += 8.0 * static_cast<double>(r.weightBytes + r.scaleBytes);
        s.layers.push_back(std::move(r));
    }
    for (std::uint64_t b : s.layerBytes) s.bytes += b;
    s.bitsPerWeight = s.weights ? s.bitsPerWeight / static_cast<double>(s.weights) : 0.0;
    s.percentOfFp32 = s.fp32Bytes ? 100.0 * static_cast<double>(s.bytes) / static_cast<double>(s.fp32Bytes) : 0.0;
    return s;
}

} // namespace quantscope
