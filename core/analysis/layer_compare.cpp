#include "analysis/layer_compare.h"

#include "infer/int_engine.h"
#include "quant/float_cast.h"
#include "quant/format.h"
#include "quant/metrics.h"
#include "train/quant_sim.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace quantscope {

double cosineSimilarity(const float* a, const float* b, std::size_t n)
{
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        ab += static_cast<double>(a[i]) * b[i];
        aa += static_cast<double>(a[i]) * a[i];
        bb += static_cast<double>(b[i]) * b[i];
    }
    if (aa == 0.0 && bb == 0.0) return 1.0;
    if (aa == 0.0 || bb == 0.0) return 0.0;
    return ab / std::sqrt(aa * bb);
}

namespace {

// Sums over every chunk of the batch for one layer output: the SQNR and the cosine of the whole
// batch, without holding the whole batch's activations (2.5 MB an image for mobilenet-tiny).
struct CompareSums {
    double signal = 0.0, noise = 0.0, ab = 0.0, aa = 0.0, bb = 0.0;

    void add(const Tensor& ref, const Tensor& q)
    {
        const float* a = ref.data();
        const float* b = q.data();
        for (std::size_t i = 0; i < ref.numel(); ++i) {
            const double x = a[i], y = b[i], d = x - y;
            signal += x * x;
            noise += d * d;
            ab += x * y;
            bb += y * y;
        }
        aa = signal;
    }
    double sqnrDb() const { return noise == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise); }
    double cosine() const
    {
        if (aa == 0.0 && bb == 0.0) return 1.0;
        if (aa == 0.0 || bb == 0.0) return 0.0;
        return ab / std::sqrt(aa * bb);
    }
};

// Images per pass: bounds the memory of the activations kept for the alone comparison.
constexpr std::size_t kCompareChunk = 64;

} // namespace

LayerComparisonReport compareLayers(Model& model, QuantSim& sim, const Tensor& x, double thresholdDb)
{
    const Shape& in = model.inputShape();
    if (x.rank() != 4 || !std::equal(in.begin(), in.end(), x.shape().begin() + 1))
        throw ConfigError("compare: the batch " + shapeString(x.shape()) + " does not match the model's input " + shapeString(in));
    LayerComparisonReport r;
    r.images = x.dim(0);
    r.thresholdDb = thresholdDb;
    RunContext ctx;
    ctx.training = false;

    std::vector<bool> quantizedLayer(model.size(), false);
    for (std::size_t t = 0; t < sim.weightTargets().size(); ++t) {
        if (sim.targetPrecision(t).format == "fp32") continue; // a plan keeps this layer in float
        for (std::size_t i = 0; i < model.size(); ++i)
            if (model.layer(i).name() == sim.weightTargets()[t].layer) quantizedLayer[i] = true;
    }
    // The format of activation point a (0 = input, i + 1 = output of layer i), null where it stays
    // float: an integer grid (the sim's ActivationQuantizer) or a float format without a scale
    // (fp8, fp16, bf16, MX), which the sim rounds to. Both are points (a float one was neither
    // marked nor applied in the alone comparison).
    auto formatOf = [&](std::size_t a) -> const NumberFormat* {
        const NumberFormat* f = sim.pointFormat(a);
        return f && f->kind != FormatKind::Float32 ? f : nullptr;
    };
    // Applies point a to t as the sim's forward does (QuantSim::quantizeActivation, calibrated).
    std::vector<std::uint8_t> mask;
    auto applyPoint = [&](std::size_t a, Tensor& t) {
        if (const ActivationQuantizer* aq = sim.activationQuantizer(a)) aq->fakeQuantize(t, mask);
        else if (const NumberFormat* f = formatOf(a); f && !needsScale(*f)) roundToFormat(t.values(), *f, Rounding::Nearest, 0, mxRowLength(t.shape()));
    };
    for (std::size_t i = 0; i < model.size(); ++i) {
        LayerComparison c;
        c.index = i;
        c.layer = model.layer(i).name();
        c.kind = layerKindName(model.layer(i).kind());
        c.quantizedWeights = quantizedLayer[i];
        const NumberFormat* f = formatOf(i + 1);
        c.outputPoint = f != nullptr;
        if (f) c.activationFormat = f->name;
        r.layers.push_back(std::move(c));
    }

    sim.setObserving(false);
    std::vector<CompareSums> propagated(model.size()), alone(model.size());
    const std::size_t n = x.dim(0), perImage = x.numel() / std::max<std::size_t>(n, 1);
    std::vector<Tensor> fp(model.size() + 1), scratch;
    for (std::size_t b = 0; b < n; b += kCompareChunk) {
        const std::size_t m = std::min(kCompareChunk, n - b);
        Shape shape = x.shape();
        shape[0] = m;
        Tensor chunk(shape);
        std::copy(x.data() + b * perImage, x.data() + (b + m) * perImage, chunk.data());

        // FP32: every activation.
        sim.clearWeights();
        model.forward(chunk, ctx, nullptr);
        for (std::size_t a = 0; a <= model.size(); ++a) fp[a] = model.activation(a);

        // Quantized, end to end: the biases as the exported file stores them (int32 at s_in * s_w)
        sim.quantizeWeights(Rounding::Nearest, 0);
        sim.roundBiases();
        model.forward(chunk, ctx, &sim);
        for (std::size_t i = 0; i < model.size(); ++i) propagated[i].add(fp[i + 1], model.activation(i + 1));

        // Alone: FP32 inputs, quantized at their points, through this layer's quantized weights.
        for (std::size_t i = 0; i < model.size(); ++i) {
            Layer& l = model.layer(i);
            const std::vector<std::size_t>& ins = model.inputsOf(i);
            scratch.resize(ins.size());
            for (std::size_t k = 0; k < ins.size(); ++k) {
                scratch[k] = fp[ins[k]];
                applyPoint(ins[k], scratch[k]);
            }
            Tensor y;
            if (ins.size() == 1) {
                l.forward(scratch[0], y, ctx);
            } else {
                std::vector<const Tensor*> xs;
                for (const Tensor& t : scratch) xs.push_back(&t);
                l.forwardMulti(xs, y, ctx);
            }
            applyPoint(i + 1, y);
            alone[i].add(fp[i + 1], y);
        }
    }
    for (std::size_t i = 0; i < r.layers.size(); ++i) {
        LayerComparison& c = r.layers[i];
        c.sqnrDb = propagated[i].sqnrDb();
        c.cosine = propagated[i].cosine();
        c.aloneSqnrDb = alone[i].sqnrDb();
        c.aloneCosine = alone[i].cosine();
        if (r.firstBelow < 0 && c.sqnrDb < thresholdDb) r.firstBelow = static_cast<long>(i);
        if (r.firstAloneBelow < 0 && c.aloneSqnrDb < thresholdDb) r.firstAloneBelow = static_cast<long>(i);
    }
    return r;
}

std::vector<EnginePointDivergence> compareEngineWithFakeQuant(const ExportedModel& m, const Dataset& data,
                                                              const LabeledImages& set, std::size_t images)
{
    const std::string why = IntEngine::unsupportedReason(m);
    if (!why.empty()) throw ConfigError("the integer engine cannot run this model: " + why);
    const IntEngine engine(m);
    const std::unique_ptr<Model> ref = buildModel(m);
    StoredActivationHooks hooks(m, ref.get());
    std::vector<EnginePointDivergence> out;
    const std::size_t n = std::min(images, set.size());
    RunContext ctx;
    Tensor x;
    std::vector<std::int32_t> y;
    for (std::size_t img = 0; img < n; ++img) {
        const std::vector<PointTrace> trace = engine.trace(set.pixels.data() + img * set.imageBytes());
        data.makeBatch(set, img, img + 1, x, y);
        ref->forward(x, ctx, &hooks);
        if (out.empty())
            for (const PointTrace& p : trace) out.push_back(EnginePointDivergence{p.layer, 0, 0, 0});
        for (std::size_t k = 0; k < trace.size() && k < out.size(); ++k) {
            const PointTrace& p = trace[k];
            const std::size_t act = p.layer == "input" ? 0 : ref->outputOf(p.layer);
            const Tensor& a = ref->activation(act);
            if (a.numel() != p.q.size())
                throw Error("compare: the engine's point '" + p.layer + "' holds " + std::to_string(p.q.size()) +
                            " values, the reference " + std::to_string(a.numel()));
            EnginePointDivergence& d = out[k];
            for (std::size_t i = 0; i < p.q.size(); ++i) {
                const long qs = std::lround(std::nearbyint(a[i] / p.quant.scale)) + p.quant.zeroPoint;
                const int diff = static_cast<int>(std::min<long>(std::abs(qs - p.q[i]), std::numeric_limits<int>::max()));
                d.differing += diff != 0;
                d.maxSteps = std::max(d.maxSteps, diff);
            }
            d.values += p.q.size();
        }
    }
    return out;
}

} // namespace quantscope
