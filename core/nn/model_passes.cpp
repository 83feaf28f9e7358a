// Model's passes (model.h): forward and backward over the graph. Their plans (fusion, backward
// order) are in model_plan.cpp; the graph itself, its construction and initialisation in model.cpp.
#include "nn/model.h"

#include "nn/activations.h"
#include "nn/add.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/maxpool2d.h"
#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/scope_exit.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

namespace quantscope {

namespace {
// Adds the milliseconds of its scope to *ms (when ms is given): Model::setLayerTimes.
class ScopeTimer {
public:
    explicit ScopeTimer(double* ms) : m_ms(ms)
    {
        if (m_ms) m_t0 = std::chrono::steady_clock::now();
    }
    ~ScopeTimer()
    {
        if (m_ms) *m_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - m_t0).count();
    }
    ScopeTimer(const ScopeTimer&) = delete;
    ScopeTimer& operator=(const ScopeTimer&) = delete;

private:
    double* m_ms;
    std::chrono::steady_clock::time_point m_t0;
};

// The slot of layer i in times (sized to the model on first use), or nullptr.
double* timeSlot(std::vector<double>* times, std::size_t i, std::size_t layers)
{
    if (!times) return nullptr;
    if (times->size() != layers) times->assign(layers, 0.0);
    return &(*times)[i];
}
} // namespace

namespace {
// The clamp of a fusable activation: +inf for ReLU, 6 for ReLU6.
float clampCap(const Layer& l) { return l.kind() == LayerKind::ReLU6 ? 6.0f : std::numeric_limits<float>::infinity(); }
} // namespace

const Tensor& Model::forward(const Tensor& x, const RunContext& ctx, LayerHooks* hooks)
{
    if (m_layers.empty()) throw ConfigError("model " + m_name + " has no layers");
    if (x.rank() != m_inputShape.size() + 1 ||
        !std::equal(m_inputShape.begin(), m_inputShape.end(), x.shape().begin() + 1))
        throw ConfigError("model " + m_name + ": input " + shapeString(x.shape()) + " does not match sample shape " +
                          shapeString(m_inputShape));
    m_acts.resize(m_layers.size() + 1);
    // RunContext::releaseActivations: an activation goes once its last reader (layer i) has run,
    // into the pool of released buffers (m_bufferPool), which a later layer of this pass or of the
    // next one writes into: an evaluation's batches do not free, reallocate and zero-fill every
    // activation (with page faults).
    const bool release = ctx.releaseActivations && !ctx.training;
    std::vector<std::size_t> needed; // per activation, its element count (releasing passes)
    if (!release) {
        m_bufferPool.clear();
    } else {
        ++m_releasePass;
        try {
            for (const Shape& s : activationShapes(x.dim(0))) needed.push_back(shapeNumel(s));
        } catch (const std::exception&) { // the layer that does not fit throws when it runs
            needed.clear();
        }
    }
    const auto give = [&](Tensor& t) { // t's buffer to the pool (freed in passes that keep activations)
        if (release && t.values().capacity() > 0) m_bufferPool.push_back({std::move(t), m_releasePass});
        t = Tensor();
    };
    // Activation a, about to be written, gets the smallest pooled buffer that holds it. Failing
    // that, the largest pooled buffer too small for it is freed (the layer allocates one of the
    // right size), so the pool does not grow along a chain of growing activations: it keeps about
    // as many buffers as the pass had activations alive at once. Not the last two activations (the
    // logits and the last layer's input), which stay after the pass and would hold large buffers.
    const auto take = [&](std::size_t a) {
        if (!release || a + 2 >= needed.size() || m_acts[a].values().capacity() >= needed[a]) return;
        give(m_acts[a]);
        const std::size_t none = m_bufferPool.size();
        std::size_t best = none, smaller = none;
        for (std::size_t k = 0; k < m_bufferPool.size(); ++k) {
            const std::size_t cap = m_bufferPool[k].buffer.values().capacity();
            if (cap >= needed[a] && (best == none || cap < m_bufferPool[best].buffer.values().capacity()))
                best = k;
            if (cap < needed[a] && (smaller == none || cap > m_bufferPool[smaller].buffer.values().capacity())) smaller = k;
        }
        const std::size_t k = best != none ? best : smaller;
        if (k == none) return;
        if (best != none) m_acts[a] = std::move(m_bufferPool[k].buffer);
        if (k + 1 != m_bufferPool.size()) m_bufferPool[k] = std::move(m_bufferPool.back());
        m_bufferPool.pop_back();
    };
    take(0);
    m_acts[0].resize(x.shape());
    std::memcpy(m_acts[0].data(), x.data(), x.numel() * sizeof(float));
    if (hooks) hooks->onInput(m_acts[0], ctx);
    m_fusedPass = m_fusion;
    // Which Adds broadcast depends on the layers only (not on the batch), and layers are only ever
    // appended (add()): worked out on the first pass, and again after an add().
    if (m_broadcastAdd.size() != m_layers.size()) m_broadcastAdd = broadcastAdds(x.dim(0));
    if (m_fusedPass) planFusion(hooks);
    // A Flatten's input that the last pass left empty (its buffer went on as the Flatten's output)
    // gets the spare buffer back, so that its producer writes without allocating.
    m_viewed.assign(m_layers.size(), 0);
    m_viewSpare.resize(m_layers.size());
    m_viewShape.resize(m_layers.size());
    for (std::size_t i = 0; i < m_layers.size(); ++i)
        if (!m_viewSpare[i].empty() && !m_inputs[i].empty() && m_acts[m_inputs[i][0]].empty())
            std::swap(m_acts[m_inputs[i][0]], m_viewSpare[i]);
    std::vector<const Tensor*> xs;
    // The context of a layer whose hooks let it round its own output to bf16 (RunContext).
    RunContext roundedCtx = ctx;
    roundedCtx.roundOutputBf16 = true;
    auto ctxOf = [&](std::size_t i) -> const RunContext& {
        return hooks && honoursRoundOutputBf16(m_layers[i]->kind()) && hooks->roundsOutputBf16(i) ? roundedCtx : ctx;
    };
    std::size_t roundedBy = static_cast<std::size_t>(-1); // the fused layer that rounded the clamp's output
    if (m_times) ++m_times->forwardPasses;
    const auto released = [&](std::size_t i) {
        if (!release) return;
        for (std::size_t a : m_inputs[i]) {
            const std::vector<std::size_t>& readers = m_consumers[a];
            if (a + 1 < m_layers.size() && *std::max_element(readers.begin(), readers.end()) == i) give(m_acts[a]);
        }
    };
    // A BatchNorm2d (or BatchNorm2d + clamp) whose every reader can compute its output as it reads
    // it, plane by plane in cache (OutputPlaneSource): an Add fused with its clamp (whose backward
    // reads neither input), or a convolution on the FP32 stride-1 direct kernels
    // (Conv2d::takesInputSource), whose forward and backward lay out their input runs from the
    // source. The output is then never written (resnet8: all nine BNs). The hooks must leave the
    // output alone or have the BN round it itself (mixed bf16: FloatSim's afterForward then has
    // nothing to do, for the BN or its clamp); a clamped one defers only in builds whose fused
    // backward recomputes the clamp's mask (BatchNorm2d::recomputesClampMask). Not where
    // activations are released as their last reader runs: the readers read the BN's input.
    m_outputDeferred.assign(m_layers.size(), 0);
    m_actSource.assign(m_layers.size() + 1, nullptr);
    m_actSourceInput.assign(m_layers.size() + 1, 0);
    const auto readsSource = [&](std::size_t k, std::size_t act) {
        const Layer& l = *m_layers[k];
        if (l.kind() == LayerKind::Add)
            return m_clampOf[k] >= 0 && m_inputs[k].size() == 2 && m_inputs[k][0] != m_inputs[k][1];
        return l.kind() == LayerKind::Conv2d && m_inputs[k].size() == 1 && m_inputs[k][0] == act &&
               m_clampOf[k] < 0 && static_cast<const Conv2d&>(l).takesInputSource();
    };
    if (m_fusedPass && !release)
        for (std::size_t i = 0; i < m_layers.size(); ++i) {
            if (m_layers[i]->kind() != LayerKind::BatchNorm2d || m_inputs[i].size() != 1) continue;
            const bool clamped = m_clampOf[i] >= 0;
            if ((hooks && !ctxOf(i).roundOutputBf16) || (clamped && !BatchNorm2d::recomputesClampMask())) continue;
            const std::size_t act = clamped ? static_cast<std::size_t>(m_clampOf[i]) + 1 : i + 1;
            const std::vector<std::size_t>& readers = m_consumers[act];
            if (readers.empty() || !std::all_of(readers.begin(), readers.end(), [&](std::size_t k) { return readsSource(k, act); }))
                continue;
            m_outputDeferred[i] = 1;
            m_actSource[act] = static_cast<const BatchNorm2d*>(m_layers[i].get());
            m_actSourceInput[act] = m_inputs[i][0];
        }
    for (std::size_t i = 0; i < m_layers.size(); released(i), ++i) {
        const ScopeTimer timer(timeSlot(m_times ? &m_times->forwardMs : nullptr, i, m_layers.size()));
        const auto& in = m_inputs[i];
        if (m_fusedPass && m_fusedAway[i]) { // ran inside the layer before it
            if (hooks) hooks->afterForward(i, *m_layers[i], m_acts[i + 1], roundedBy == i ? roundedCtx : ctx);
            continue;
        }
        if (m_fusedPass && m_clampOf[i] >= 0) {
            const auto j = static_cast<std::size_t>(m_clampOf[i]);
            const RunContext& c = ctxOf(i);
            if (m_poolOf[i] >= 0) { // conv + clamp + pool: only the pool's output is materialised
                const auto k = static_cast<std::size_t>(m_poolOf[i]);
                take(k + 1);
                static_cast<Conv2d&>(*m_layers[i]).forwardPooled(m_acts[in[0]], m_acts[k + 1], c, clampCap(*m_layers[j]),
                                                                 static_cast<MaxPool2d&>(*m_layers[k]));
                roundedBy = static_cast<std::size_t>(-1);
                give(m_acts[i + 1]);
                give(m_acts[j + 1]);
                continue;
            }
            if (!m_outputDeferred[i]) take(j + 1); // every branch below but the deferred BN writes the clamp's output
            if (m_layers[i]->kind() == LayerKind::Add) {
                xs.clear();
                std::array<const OutputPlaneSource*, 2> sources{};
                for (std::size_t k = 0; k < in.size(); ++k) {
                    const std::size_t a = in[k];
                    if (m_actSource[a] && k < sources.size()) { // a BN's output: its input's shape
                        xs.push_back(&m_acts[m_actSourceInput[a]]);
                        sources[k] = m_actSource[a];
                    } else {
                        xs.push_back(&m_acts[a]);
                    }
                }
                // the hooks may take the clamp's output image by image (QAT's observer)
                OutputImageSink* sink = hooks ? hooks->outputSink(j, xs[0]->shape()) : nullptr;
                static_cast<Add&>(*m_layers[i]).forwardClamped(xs, m_acts[j + 1], clampCap(*m_layers[j]), c.roundOutputBf16,
                                                              sources, sink);
            } else if (m_layers[i]->kind() == LayerKind::Conv2d) {
                auto& conv = static_cast<Conv2d&>(*m_layers[i]);
                // the hooks may take the clamp's output as the epilogue writes it (QAT's observer)
                OutputImageSink* sink = hooks ? hooks->outputSink(j, conv.outputShape(m_acts[in[0]].shape())) : nullptr;
                const ScopeExit unset([&] { conv.setOutputSink(nullptr); }); // for this call only, even when it throws
                conv.setOutputSink(sink);
                conv.forwardClamped(m_acts[in[0]], m_acts[j + 1], c, clampCap(*m_layers[j]));
            } else if (m_outputDeferred[i]) { // its readers compute the clamp's output (OutputPlaneSource)
                static_cast<BatchNorm2d&>(*m_layers[i]).forwardDeferringOutput(m_acts[in[0]], c, clampCap(*m_layers[j]), true);
                give(m_acts[j + 1]);
            } else {
                auto& bn = static_cast<BatchNorm2d&>(*m_layers[i]);
                OutputImageSink* sink = hooks ? hooks->outputSink(j, m_acts[in[0]].shape()) : nullptr; // QAT's observer
                const ScopeExit unset([&] { bn.setOutputSink(nullptr); });
                bn.setOutputSink(sink);
                bn.forwardClamped(m_acts[in[0]], m_acts[j + 1], c, clampCap(*m_layers[j]));
            }
            roundedBy = c.roundOutputBf16 ? j : static_cast<std::size_t>(-1);
            give(m_acts[i + 1]);
            continue;
        }
        if (m_fusedPass && m_flattenView[i]) { // the same values in another shape: no copy
            Tensor& x = m_acts[in[0]];
            const Shape shape = m_layers[i]->outputShape(x.shape());
            m_viewShape[i] = x.shape();
            std::swap(m_acts[i + 1], x);
            m_acts[i + 1].reshape(shape);
            if (!x.empty() && m_viewSpare[i].empty()) std::swap(x, m_viewSpare[i]);
            give(x);
            m_viewed[i] = 1;
            if (hooks) hooks->afterForward(i, *m_layers[i], m_acts[i + 1], ctx);
            continue;
        }
        const RunContext& c = ctxOf(i);
        if (m_fusedPass && m_outputDeferred[i]) { // its Add computes the output (OutputPlaneSource)
            static_cast<BatchNorm2d&>(*m_layers[i]).forwardDeferringOutput(m_acts[in[0]], c);
            give(m_acts[i + 1]);
            if (hooks) hooks->afterForward(i, *m_layers[i], m_acts[i + 1], c);
            continue;
        }
        take(i + 1);
        if (in.size() == 1) {
            // a convolution reading a BN's deferred output: x is the BN's input, for its shape
            const OutputPlaneSource* xSource = m_fusedPass ? m_actSource[in[0]] : nullptr;
            const Tensor& xin = xSource ? m_acts[m_actSourceInput[in[0]]] : m_acts[in[0]];
            // A BatchNorm2d reading a convolution's output takes its batch sums from the
            // convolution's epilogue, image group by group in cache, instead of a pass over memory
            // of its own; the hooks must leave that output as the convolution wrote it.
            Conv2d* producer = m_fusedPass && m_layers[i]->kind() == LayerKind::Conv2d &&
                                       (!hooks || !hooks->touchesOutput(i) || c.roundOutputBf16)
                                   ? static_cast<Conv2d*>(m_layers[i].get())
                                   : nullptr;
            BatchNorm2d* sink = nullptr;
            if (producer)
                for (std::size_t b : m_consumers[i + 1])
                    if (m_layers[b]->kind() == LayerKind::BatchNorm2d && m_inputs[b].size() == 1) {
                        auto* bn = static_cast<BatchNorm2d*>(m_layers[b].get());
                        // with the planes' ranges where the hooks may take the BN's output range
                        if (bn->beginProducerStats(ctx, producer->outputShape(xin.shape()), hooks && hooks->observesOutput(b))) sink = bn;
                        break;
                    }
            const ScopeExit unset([&] { // the sink is the convolution's for this call only, even when it throws
                if (sink) producer->setOutputSink(nullptr);
            });
            if (sink) producer->setOutputSink(sink);
            auto* reader = xSource ? static_cast<Conv2d*>(m_layers[i].get()) : nullptr;
            const ScopeExit unsetInput([&] {
                if (reader) reader->setInputSource(nullptr);
            });
            if (reader) reader->setInputSource(xSource);
            // a BatchNorm2d's output to the hooks image by image (QAT's observer on it)
            auto* bnOut = hooks && m_fusedPass && m_layers[i]->kind() == LayerKind::BatchNorm2d
                              ? static_cast<BatchNorm2d*>(m_layers[i].get())
                              : nullptr;
            const ScopeExit unsetBnSink([&] {
                if (bnOut) bnOut->setOutputSink(nullptr);
            });
            if (bnOut) bnOut->setOutputSink(hooks->outputSink(i, xin.shape()));
            m_layers[i]->forward(xin, m_acts[i + 1], c);
        } else {
            xs.clear();
            for (std::size_t a : in) xs.push_back(&m_acts[a]);
            m_layers[i]->forwardMulti(xs, m_acts[i + 1], c);
        }
        if (hooks) hooks->afterForward(i, *m_layers[i], m_acts[i + 1], c);
    }
    if (release) // what two passes left unused goes (the buffers of a batch size seen before the last)
        std::erase_if(m_bufferPool, [&](const PooledBuffer& b) { return m_releasePass - b.pass >= 2; });
    return m_acts.back();
}

namespace {
void addInto(Tensor& acc, const Tensor& g)
{
    float* a = acc.data();
    const float* b = g.data();
    const std::size_t n = acc.numel();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
        for (std::size_t k = lo; k < hi; ++k) a[k] += b[k];
    });
}

void copyInto(Tensor& dst, const Tensor& g)
{
    dst.resize(g.shape());
    float* a = dst.data();
    const float* b = g.data();
    const std::size_t n = g.numel();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
        std::memcpy(a + lo, b + lo, (hi - lo) * sizeof(float));
    });
}
} // namespace

// Reverse topological order. dL/d(activation a) is the sum over the layers that read a; a layer
// with a single reader writes its input gradient in place, otherwise it goes through a scratch
// tensor and is added. The model input (activation 0) gets no gradient.
void Model::backward(const Tensor& dOut, LayerHooks* hooks, bool fromLastInput)
{
    if (fromLastInput && !lastLayerReadsOnlyThePrevious())
        throw ConfigError("model " + m_name + ": backward from the last layer's input needs a last layer without "
                          "parameters that alone reads the layer before it");
    const std::size_t L = m_layers.size();
    const std::size_t start = fromLastInput ? L - 1 : L; // the activation dOut belongs to
    if (m_fusedPass) // a second backward of one forward: the Flatten views gave their buffers back
        for (std::size_t i = 0; i < m_flattenView.size() && i < m_viewed.size(); ++i)
            if (m_flattenView[i] && !m_viewed[i] && m_acts[i + 1].empty()) {
                std::swap(m_acts[i + 1], m_acts[m_inputs[i][0]]);
                m_acts[i + 1].reshape(m_layers[i]->outputShape(m_viewShape[i]));
                m_viewed[i] = 1;
            }
    if (m_acts.size() != L + 1 || dOut.shape() != m_acts[start].shape())
        throw ConfigError("model " + m_name + ": backward does not match the last forward");
    m_grads.resize(L + 1);
    m_gradSet.assign(L + 1, 0);
    m_gradRounded.assign(L, 0);
    m_steOf.assign(L, nullptr);
    m_bwdPoolOf.assign(L, -1);
    m_bwdPooled.assign(L, 0);
    m_dySourceOf.assign(L, nullptr);
    m_dySourceRounds.assign(L, 0);
    m_addRoundsDy.assign(L, 0);
    if (hooks && m_fusedPass) planBackwardPools(*hooks);
    Tensor& top = m_grads[start];
    top.resize(dOut.shape());
    std::memcpy(top.data(), dOut.data(), dOut.numel() * sizeof(float));
    m_gradSet[start] = 1;
    std::vector<const Tensor*> xs;
    std::vector<Tensor*> dxs;
    if (m_times) ++m_times->backwardPasses;
    const std::vector<std::size_t>& order = backwardOrder(start);
    m_lastReader.assign(L + 1, -1);
    for (const std::size_t l : order)
        for (const std::size_t a : m_inputs[l]) m_lastReader[a] = static_cast<long>(l);
    for (const std::size_t i : order) {
        const ScopeTimer timer(timeSlot(m_times ? &m_times->backwardMs : nullptr, i, L));
        Tensor& dy = m_grads[i + 1];
        if (!m_gradSet[i + 1]) { // an output nobody reads: no gradient flows from it
            dy.resize(m_acts[i + 1].shape());
            dy.setZero();
            m_gradSet[i + 1] = 1;
        }
        const auto& in = m_inputs[i];
        // A clamp fused away into a BatchNorm2d, Add or Conv2d (not one with a pool fused after it):
        // that layer's backward applies the hooks' straight-through mask too
        // (LayerHooks::gradientMask), in its own passes.
        const std::uint8_t* ste = nullptr;
        if (hooks && m_fusedPass && m_fusedAway[i] && in.size() == 1 && in[0] > 0 &&
            m_clampOf[in[0] - 1] == static_cast<long>(i)) {
            const LayerKind pk = m_layers[in[0] - 1]->kind();
            // the clamp's output size: dy is the pool's output gradient when its pool is deferred
            if (pk == LayerKind::BatchNorm2d || pk == LayerKind::Add || (pk == LayerKind::Conv2d && m_poolOf[in[0] - 1] < 0))
                ste = hooks->gradientMask(i, m_acts[i + 1].numel());
        }
        // A Conv2d whose output gradient its BatchNorm2d left deferred: the hooks leave it alone (or
        // the BN rounded it) and the convolution has the BN write it (setGradientSource).
        BatchNorm2d* source = m_fusedPass ? m_dySourceOf[i] : nullptr;
        // A clamp fused away into an Add whose gradient the hooks round to bf16: the Add rounds it
        // in its mask pass (a residual join's output, which two readers' gradients summed into).
        if (hooks && !ste && !m_gradRounded[i] && !source && m_fusedPass && m_fusedAway[i] && in.size() == 1 && in[0] > 0 &&
            m_clampOf[in[0] - 1] == static_cast<long>(i) && m_layers[in[0] - 1]->kind() == LayerKind::Add &&
            hooks->roundsGradientBf16(i)) {
            m_addRoundsDy[in[0] - 1] = 1;
            m_gradRounded[i] = 1;
        }
        // A BatchNorm2d without a clamp whose own output the hooks only mask (a quantization point),
        // deferring its input gradient into the convolution before it (below): it applies the mask
        // as it reads dy.
        const std::uint8_t* ownSte = hooks && !ste && !m_gradRounded[i] && !source && defersBatchNormInputGradient(i, hooks) &&
                                             m_clampOf[i] < 0
                                         ? hooks->gradientMask(i, m_acts[i + 1].numel())
                                         : nullptr;
        if (hooks && !ste && !ownSte && !m_gradRounded[i] && !source) hooks->beforeBackward(i, *m_layers[i], dy);
        if (m_fusedPass && m_flattenView[i] && m_viewed[i]) { // its input's buffer and gradient go back down
            const std::size_t a = in[0];
            const Shape& shape = m_viewShape[i];
            std::swap(m_acts[a], m_acts[i + 1]);
            m_acts[a].reshape(shape);
            m_viewed[i] = 0;
            std::swap(m_grads[a], dy);
            m_grads[a].reshape(shape);
            m_gradSet[a] = 1;
            continue;
        }
        if (m_fusedPass && (m_fusedAway[i] || m_bwdPooled[i])) { // its BatchNorm2d or Conv2d takes dL/d(output) as it is
            m_steOf[i] = ste;
            std::swap(m_grads[in[0]], dy);
            m_gradSet[in[0]] = 1;
            continue;
        }
        if (m_layers[i]->kind() == LayerKind::Add && !m_broadcastAdd[i]) { // a broadcast sum: backwardMulti below
            // dL/d(input) = dy for each input: added where a gradient is there already, else
            // copied, and the last input takes dy's buffer itself (dy is not read again). Fused
            // with its clamp, dy (the clamp's output gradient) is first masked in place by the
            // clamp's rule on its output, in the same pass as the first input's gradient.
            std::size_t j = 0;
            if (m_fusedPass && m_clampOf[i] >= 0) {
                const auto c = static_cast<std::size_t>(m_clampOf[i]);
                const std::size_t a = in[0];
                const bool first = a != 0 && in.size() > 1;
                const bool finite = static_cast<const Add&>(*m_layers[i]).maskGradient(
                    m_acts[c + 1], dy, clampCap(*m_layers[c]), first ? &m_grads[a] : nullptr, first && m_gradSet[a], m_steOf[c],
                    m_addRoundsDy[i] != 0);
                if (m_addRoundsDy[i]) hooks->gradientRounded(c, finite);
                if (first) m_gradSet[a] = 1;
                j = first || a == 0 ? 1 : 0;
            }
            for (; j < in.size(); ++j) {
                const std::size_t a = in[j];
                if (a == 0) continue;
                if (m_gradSet[a]) addInto(m_grads[a], dy);
                else if (j + 1 == in.size()) std::swap(m_grads[a], dy);
                else copyInto(m_grads[a], dy);
                m_gradSet[a] = 1;
            }
            continue;
        }
        // Where each input gradient goes: straight into the activation's gradient when this layer
        // is its only reader, into the scratch tensor (then added) otherwise.
        auto target = [&](std::size_t a) -> Tensor* {
            if (a == 0) return nullptr;
            return m_consumers[a].size() == 1 ? &m_grads[a] : nullptr;
        };
        // With one input, the first of several readers to run also writes straight into the
        // activation's gradient (every backward overwrites its dx), which keeps its buffer: a
        // scratch tensor swapped in there would leave the slot's old buffer, often of another
        // size, as the next scratch, and growing it cost a reallocation, a zero fill and page
        // faults each step (resnet8's layer2.shortcut: 2.8 ms in a step against 0.36 ms alone).
        auto firstTarget = [&](std::size_t a) -> Tensor* {
            if (a == 0) return nullptr;
            return m_consumers[a].size() == 1 || !m_gradSet[a] ? &m_grads[a] : nullptr;
        };
        if (in.size() == 1) {
            const std::size_t a = in[0];
            Tensor* direct = firstTarget(a);
            const bool need = a != 0;
            // A convolution whose input has a gradient already (a residual block's input, read by
            // the block's shortcut too) adds its own into it: the same bits as the scratch tensor
            // and addInto, without either.
            auto* conv = m_layers[i]->kind() == LayerKind::Conv2d ? static_cast<Conv2d*>(m_layers[i].get()) : nullptr;
            BatchNorm2d* const sourced = conv ? source : nullptr;
            // x of a convolution reading a BN's deferred output: the BN's input, for its shape, and
            // the BN as the source of the values (Conv2d::setInputSource)
            const OutputPlaneSource* xSource = m_fusedPass && conv ? m_actSource[a] : nullptr;
            const Tensor& xa = xSource ? m_acts[m_actSourceInput[a]] : m_acts[a];
            const ScopeExit unsetInput([&] {
                if (xSource) conv->setInputSource(nullptr);
            });
            if (xSource) conv->setInputSource(xSource);
            const ScopeExit unsetSource([&] { // the source is the convolution's for this call only, even when it throws
                if (!sourced) return;
                conv->setGradientSource(nullptr);
                sourced->endDeferredGradient();
            });
            if (sourced) conv->setGradientSource(sourced);
            static const Tensor kNoGradient; // dy of a convolution with a source: not read
            const Tensor& dyIn = sourced ? kNoGradient : dy;
            if (need && !direct && m_gradSet[a] && conv && conv->addsInputGradient() &&
                !(m_fusedPass && (m_poolOf[i] >= 0 || m_bwdPoolOf[i] >= 0))) {
                const bool clamped = m_fusedPass && m_clampOf[i] >= 0;
                const auto j = clamped ? static_cast<std::size_t>(m_clampOf[i]) : 0;
                // The last of the readers, where the hooks round the summed gradient to bf16 (a
                // residual block's input): rounded as the convolution adds its part, in cache.
                const bool roundSum = hooks && m_lastReader[a] == static_cast<long>(i) && conv->roundsAddedInputGradient() &&
                                      hooks->roundsGradientBf16(a - 1);
                const ScopeExit roundSumOff([&] {
                    if (roundSum) conv->setRoundInputGradientBf16(false);
                });
                if (roundSum) conv->setRoundInputGradientBf16(true);
                conv->backwardAddingInputGradient(xa, clamped ? &m_acts[j + 1] : nullptr, dyIn, m_grads[a],
                                                  clamped ? clampCap(*m_layers[j]) : 0.0f, clamped ? m_steOf[j] : nullptr);
                if (sourced && m_dySourceRounds[i]) hooks->gradientRounded(i, sourced->deferredGradientFinite());
                if (roundSum) {
                    hooks->gradientRounded(a - 1, conv->inputGradientFinite());
                    m_gradRounded[a - 1] = 1;
                }
                continue;
            }
            Tensor& dx = direct ? *direct : m_gradScratch;
            // A BatchNorm2d or Conv2d alone reading a layer whose gradient the hooks round to bf16
            // rounds it as it writes it (LayerHooks::roundsGradientBf16): one pass over it fewer.
            auto* rounding = hooks && need && direct && m_consumers[a].size() == 1 && hooks->roundsGradientBf16(a - 1)
                                 ? dynamic_cast<InputGradientRounding*>(m_layers[i].get())
                                 : nullptr;
            const ScopeExit roundingOff([&] { // off again however the backward ends
                if (rounding) rounding->setRoundInputGradientBf16(false);
            });
            if (rounding) rounding->setRoundInputGradientBf16(true);
            // A BatchNorm2d reading the output of the convolution right before it, alone: its dx
            // is written inside that convolution's backward (defersBatchNormInputGradient).
            if (defersBatchNormInputGradient(i, hooks)) {
                auto& bn = static_cast<BatchNorm2d&>(*m_layers[i]);
                if (m_clampOf[i] >= 0) {
                    const auto j = static_cast<std::size_t>(m_clampOf[i]);
                    bn.backwardDeferringInputGradient(m_acts[a], &m_acts[j + 1], dy, clampCap(*m_layers[j]), hooks != nullptr,
                                                      m_steOf[j]);
                } else {
                    bn.backwardDeferringInputGradient(m_acts[a], nullptr, dy, 0.0f, false, ownSte);
                }
                m_dySourceOf[a - 1] = &bn;
                if (rounding) { // gradientRounded once the convolution has written it all
                    m_gradRounded[a - 1] = 1;
                    m_dySourceRounds[a - 1] = 1;
                }
                m_gradSet[a] = 1;
                continue;
            }
            if (m_fusedPass && m_clampOf[i] >= 0) {
                const auto j = static_cast<std::size_t>(m_clampOf[i]);
                if (m_poolOf[i] >= 0 || m_bwdPoolOf[i] >= 0) { // dy is the pool's output gradient (passed down by the fused-away layers)
                    const auto k = static_cast<std::size_t>(m_poolOf[i] >= 0 ? m_poolOf[i] : m_bwdPoolOf[i]);
                    static_cast<Conv2d&>(*m_layers[i]).backwardPooled(m_acts[a], m_acts[k + 1], dy, dx, need, clampCap(*m_layers[j]),
                                                                      static_cast<MaxPool2d&>(*m_layers[k]), m_steOf[j]);
                } else if (m_layers[i]->kind() == LayerKind::Conv2d)
                    static_cast<Conv2d&>(*m_layers[i]).backwardClamped(m_acts[a], m_acts[j + 1], dy, dx, need, clampCap(*m_layers[j]),
                                                                       m_steOf[j]);
                else
                    static_cast<BatchNorm2d&>(*m_layers[i]).backwardClamped(m_acts[a], m_acts[j + 1], dy, dx, need, clampCap(*m_layers[j]),
                                                                            hooks != nullptr, m_steOf[j]);
            } else {
                m_layers[i]->backward(xa, m_acts[i + 1], dyIn, dx, need);
            }
            if (sourced && m_dySourceRounds[i]) hooks->gradientRounded(i, sourced->deferredGradientFinite());
            if (rounding) {
                hooks->gradientRounded(a - 1, rounding->inputGradientFinite());
                m_gradRounded[a - 1] = 1;
            }
            if (need && !direct) {
                if (m_gradSet[a]) addInto(m_grads[a], dx);
                else std::swap(m_grads[a], m_gradScratch);
            }
            if (need) m_gradSet[a] = 1;
        } else {
            xs.clear();
            dxs.clear();
            std::vector<Tensor>& scratch = m_multiScratch;
            if (scratch.size() < in.size()) scratch.resize(in.size());
            for (std::size_t j = 0; j < in.size(); ++j) {
                xs.push_back(&m_acts[in[j]]);
                Tensor* direct = target(in[j]);
                dxs.push_back(in[j] == 0 ? nullptr : (direct ? direct : &scratch[j]));
            }
            m_layers[i]->backwardMulti(xs, m_acts[i + 1], dy, dxs);
            for (std::size_t j = 0; j < in.size(); ++j) {
                const std::size_t a = in[j];
                if (a == 0) continue;
                if (dxs[j] == &scratch[j]) {
                    if (m_gradSet[a]) addInto(m_grads[a], scratch[j]);
                    else std::swap(m_grads[a], scratch[j]);
                }
                m_gradSet[a] = 1;
            }
        }
    }
}

} // namespace quantscope
