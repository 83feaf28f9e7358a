// Model: a directed acyclic graph of layers kept in topological order, with the activations of
// the last forward pass so backward can hand every layer its own inputs and output. Activation 0
// is the model input and activation i+1 the output of layer i; each layer reads one or more
// earlier activations (a plain stack is the case where layer i reads activation i). The model's
// output is the last layer's. Precision strategies plug in through LayerHooks without the layers
// knowing about them.
#pragma once

#include "nn/layer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

// Called around every layer. Default: do nothing (FP32).
class LayerHooks {
public:
    virtual ~LayerHooks() = default;
    // The model's input (a copy); a hook may change it in place (input quantization).
    virtual void onInput(Tensor& /*x*/, const RunContext& /*ctx*/) {}
    // y is the layer's output; a hook may change it in place (fake-quant, rounding).
    virtual void afterForward(std::size_t /*layer*/, Layer& /*l*/, Tensor& /*y*/, const RunContext& /*ctx*/) {}
    // dy is dL/d(output) about to enter layer's backward; a hook may change it (STE mask, rounding).
    virtual void beforeBackward(std::size_t /*layer*/, Layer& /*l*/, Tensor& /*dy*/) {}
    // False when afterForward and beforeBackward of this layer do nothing: the model may then
    // run the layer fused with the ReLU after it (Model::setFusion) and skip both calls.
    virtual bool touchesOutput(std::size_t /*layer*/) const { return true; }
    // True when this BatchNorm2d or Add may run fused with the ReLU that alone reads it although
    // hooks are set (touchesOutput must be false for it too). The fused backward then takes the
    // ReLU's mask from the ReLU's output as the hooks left it, as the unfused ReLU's backward does.
    virtual bool fusesReLU(std::size_t /*layer*/) const { return false; }
    // True when this Conv2d, BatchNorm2d or Add may run fused with the ReLU6 that alone reads it
    // although hooks are set (touchesOutput, and for a BatchNorm2d or Add fusesReLU, must allow it
    // too). ReLU6's own backward passes the gradient where 0 < x < 6 on its input x, the fused
    // backward where 0 < r < 6 on its output r as the hooks left it: the hooks must keep the two
    // the same, as rounding to a float format that holds 6 does (it is monotone and keeps 0 and 6:
    // r = min(max(round(v), 0), 6)). Fake-quantizing r does not (a small v > 0 becomes r = 0).
    virtual bool fusesReLU6(std::size_t /*layer*/) const { return false; }
    // The straight-through mask beforeBackward(layer) would apply to a gradient of n elements
    // (0/1 bytes: dy becomes dy where 1, 0 where 0) when that is all it would do, else nullptr.
    // For a ReLU fused away into its BatchNorm2d, Add or Conv2d, Model hands the mask to that layer's
    // backward instead of calling beforeBackward (one pass over the gradient fewer, the same bits).
    // Valid until the next forward.
    virtual const std::uint8_t* gradientMask(std::size_t /*layer*/, std::size_t /*n*/) const { return nullptr; }
    // True when the hooks round layer's output (or, fused, its ReLU's) to bf16 nearest even and
    // the layer may do it itself (RunContext::roundOutputBf16): Model::forward then sets the flag
    // for that layer's call, and afterForward of the layer and of a ReLU it is fused with gets the
    // flag too and must leave that output as the layer wrote it (a fused BatchNorm2d's backward
    // recomputes its mask from it). Conv2d, BatchNorm2d, Add and Dropout honour it; Model sets it
    // for no other layer.
    virtual bool roundsOutputBf16(std::size_t /*layer*/) const { return false; }
    // True when a Conv2d (conv) fused with its clamp activation (clamp) may also run the 2x2 max
    // pool (pool) that alone reads the clamp in its epilogue (Conv2d::forwardPooled), although
    // hooks are set: the convolution rounds its own output (roundsOutputBf16), afterForward leaves
    // the clamp's and the pool's outputs alone and beforeBackward the gradients entering the clamp
    // and the convolution (exact already). The clamp's activation is then empty and the pool's
    // output gradient is what beforeBackward of the clamp and of the convolution sees.
    virtual bool fusesPool(std::size_t /*conv*/, std::size_t /*clamp*/, std::size_t /*pool*/) const { return false; }
    // True when all beforeBackward(layer) would do is round the gradient to bf16 nearest even and
    // note whether it is finite. Where that gradient is the input gradient of one BatchNorm2d or
    // Conv2d alone, Model has that layer round it as it writes it (InputGradientRounding, the same
    // roundBf16, so the same bits), then calls gradientRounded instead of beforeBackward.
    virtual bool roundsGradientBf16(std::size_t /*layer*/) const { return false; }
    // The gradient entering `layer` was rounded so by its reader; finite: no value is inf or NaN.
    virtual void gradientRounded(std::size_t /*layer*/, bool /*finite*/) {}
    // A sink for layer's output y (its shape) in this forward, or nullptr: where the layer that
    // writes y in its epilogue (a Conv2d fused with its clamp `layer`, as Model runs the pair) can
    // feed it (Conv2d::setOutputSink), the sink sees y's images as written, before afterForward of
    // `layer` sees y whole. afterForward must give the same result whether or not every image came.
    virtual OutputImageSink* outputSink(std::size_t /*layer*/, const Shape& /*y*/) { return nullptr; }
    // False when outputSink(layer, ...) returns nullptr in this forward whatever y is: a producer
    // then skips what only a sink would use (BatchNorm2d's per-plane ranges, beginProducerStats).
    virtual bool observesOutput(std::size_t /*layer*/) const { return true; }
};

class BatchNorm2d;

class Model {
public:
    // inputShape: (C, H, W) of one sample.
    Model(std::string name, Shape inputShape);

    // Appends `layer` reading the activations `inputs` (0 = model input, i+1 = output of layer i);
    // empty = the previous layer's output. Returns the new layer's activation index (size()).
    // Throws ConfigError when an input is not an earlier activation, the count does not match
    // layer->numInputs(), or the name is empty or already taken.
    std::size_t add(LayerPtr layer, std::vector<std::size_t> inputs = {});
    // Puts `layer` in place of layer i (same name and number of inputs; it reads the same
    // activations) and returns the old one. Throws ConfigError otherwise. For graph rewrites such
    // as CLE's ReLU6 -> ReLU (quant/equalization.h).
    LayerPtr replaceLayer(std::size_t i, LayerPtr layer);
    // Activation index of the output of the layer called `name`; throws ConfigError if none.
    std::size_t outputOf(const std::string& name) const;
    // The activations layer i reads, and the layers that read activation a.
    const std::vector<std::size_t>& inputsOf(std::size_t layer) const { return m_inputs.at(layer); }
    const std::vector<std::size_t>& consumersOf(std::size_t act) const { return m_consumers.at(act); }
    // The one layer that reads layer i's output, or -1 when none or several do.
    long soleConsumer(std::size_t layer) const;
    // True when every layer reads exactly the previous layer's output.
    bool isChain() const;
    const std::string& name() const { return m_name; }
    const Shape& inputShape() const { return m_inputShape; }
    std::size_t size() const { return m_layers.size(); }
    Layer& layer(std::size_t i) { return *m_layers.at(i); }
    const Layer& layer(std::size_t i) const { return *m_layers.at(i); }
    Layer* findLayer(const std::string& name);
    std::vector<Param*> params();
    std::size_t numParams();
    // Output shape for a batch of n samples; throws ConfigError if the layers do not chain.
    Shape outputShape(std::size_t n) const;
    // Shapes of every activation (input first) for a batch of n samples; throws ConfigError naming
    // the layer and the shapes when they do not fit (e.g. an Add of two different shapes).
    std::vector<Shape> activationShapes(std::size_t n) const;
    // Per layer: 1 for an Add whose two inputs differ in shape (a [N, C, 1, 1] gate broadcast over
    // a map, Add::gateOf), 0 otherwise. Model::forward runs such a sum apart from the fused passes
    // (no clamp fused into it, no BatchNorm output deferred into it) and backward through
    // Add::backwardMulti, whose gate gradient sums over the planes. Throws as activationShapes.
    // n: the batch size the shapes (and a ConfigError's message) are given for.
    std::vector<std::uint8_t> broadcastAdds(std::size_t n = 1) const;

    // PyTorch's default initialisation (kaiming-uniform a=sqrt(5) weights, fan-in uniform biases).
    void initParams(std::uint64_t seed);

    // x: (N, C, H, W). Returns the output of the last layer (valid until the next forward).
    const Tensor& forward(const Tensor& x, const RunContext& ctx, LayerHooks* hooks = nullptr);
    // dOut = dL/d(output of the last forward); fills every Param::grad. Requires a training forward.
    // fromLastInput: dOut is dL/d(input of the last layer) instead, and the last layer (which has
    // no parameters: a Softmax head whose loss is taken on its input) is skipped; it must read the
    // layer before it, and be that layer's only reader (ConfigError otherwise).
    void backward(const Tensor& dOut, LayerHooks* hooks = nullptr, bool fromLastInput = false);
    // Whether backward(..., fromLastInput = true) can run on this model.
    bool lastLayerReadsOnlyThePrevious() const;
    // Whether backward has BatchNorm2d layer i write its input gradient inside the backward of the
    // convolution before it (see model_plan.cpp).
    bool defersBatchNormInputGradient(std::size_t i, const LayerHooks* hooks) const;

    // Activation i: 0 = input, i+1 = output of layer i (of the last forward). After a fused pass
    // (setFusion) the output of a BatchNorm2d, Conv2d or Add that ran fused with its activation is empty.
    const Tensor& activation(std::size_t i) const { return m_acts.at(i); }
    // Bytes of released buffers held for the next pass that releases its activations
    // (RunContext::releaseActivations): after such a pass, about as many buffers as it had
    // activations alive at once.
    std::size_t pooledActivationBytes() const
    {
        std::size_t n = 0;
        for (const PooledBuffer& b : m_bufferPool) n += b.buffer.values().capacity() * sizeof(float);
        return n;
    }

    // Layer fusion: each BatchNorm2d and Add, and each Conv2d on a path that fuses
    // (Conv2d::fusesActivation), whose only reader is a ReLU or ReLU6 runs with it as one layer
    // (forwardClamped / backwardClamped; the Add's mask in Add::maskGradient), one pass over
    // memory fewer each way, with results bit-identical to the separate layers. The layer's own output is then not
    // materialised (activation() of it is empty). In a pass with hooks only Conv2d + ReLU pairs
    // whose convolution the hooks leave alone (LayerHooks::touchesOutput) fuse: the hooks still
    // see the ReLU's output and gradient, and ReLU's backward rule reads that output as the hooks
    // left it (fake-quantized, say), as the fused convolution's does (ReLU6's reads its input, so
    // it fuses only where LayerHooks::fusesReLU6 allows; BatchNorm2d's fused backward without hooks
    // recomputes its output). Without hooks (or where the hooks allow
    // it: LayerHooks::fusesPool), a convolution fused with its clamp whose clamp's only reader is a
    // 2x2 stride-2 max pool runs that pool in its epilogue too (Conv2d::forwardPooled): then the
    // clamp's output is empty as well. A BatchNorm2d whose only reader is such an Add (fused with
    // its clamp) leaves its output to that Add, which computes it a few planes at a time as it
    // reads it (BatchNorm2d::forwardDeferringOutput, OutputPlaneSource): that output is empty too
    // (without hooks, or with hooks that have the BatchNorm round it to bf16 and read it no
    // further; not in passes that release activations). A Flatten that alone reads its input (and whose output the
    // hooks leave alone) takes that input's buffer as its output instead of copying it, and its
    // backward hands the gradient's buffer down the same way: its input is then empty (its values
    // are the Flatten's output) until the backward gives the buffer back. Off by
    // default: the trainer turns it on for its run, analyses that read every activation keep it off.
    void setFusion(bool on) { m_fusion = on; }
    bool fusion() const { return m_fusion; }

    // Wall-clock milliseconds of each layer's forward and backward call inside the model's passes
    // (fused passes included: a layer that ran inside the one before it counts ~0 and its time is
    // in that layer's; the input-gradient accumulation of a layer with several readers counts in
    // the layer whose gradient it adds), added up over the passes while set. For profilers such
    // as tests/bench/bench_model_layers; nullptr (the default) turns it off.
    struct LayerTimes {
        std::vector<double> forwardMs, backwardMs; // per layer
        std::size_t forwardPasses = 0, backwardPasses = 0;
    };
    void setLayerTimes(LayerTimes* times) { m_times = times; }

private:
    void planFusion(const LayerHooks* hooks);
    void planBackwardPools(const LayerHooks& hooks);
    // The order of backward's layers below start: reverse topological, the highest index first,
    // except that a convolution that adds a sparse input gradient (Conv2d::addsSparseInputGradient)
    // waits while another reader of its input has yet to run, so that the dense reader writes that
    // gradient and the sparse one adds its few pixels (instead of writing zeros for the other to
    // add to: resnet8's shortcuts).
    const std::vector<std::size_t>& backwardOrder(std::size_t start);
    std::vector<std::size_t> m_backwardOrder;

    std::string m_name;
    Shape m_inputShape;
    std::vector<LayerPtr> m_layers;
    std::vector<std::vector<std::size_t>> m_inputs;    // per layer
    std::vector<std::vector<std::size_t>> m_consumers; // per activation
    std::vector<std::uint8_t> m_gradSet;               // backward: activation gradient written yet
    std::vector<std::uint8_t> m_gradRounded;           // backward: per layer, its reader rounded its gradient (LayerHooks::gradientRounded)
    Tensor m_gradScratch;                              // backward: input gradient to accumulate
    std::vector<Tensor> m_multiScratch;                // the same for multi-input layers
    std::vector<Tensor> m_acts;
    std::vector<Tensor> m_grads; // m_grads[i] = dL/d(activation i); sizes stay put across steps
    bool m_fusion = false;
    bool m_fusedPass = false;        // the last forward ran fused
    std::vector<std::uint8_t> m_broadcastAdd; // per layer: broadcastAdds(), as of the last forward
    std::vector<long> m_clampOf;     // per layer: the activation layer a BatchNorm2d or Conv2d runs fused with, or -1
    std::vector<std::uint8_t> m_fusedAway; // per layer: an activation (or pool) run inside the layer before it
    std::vector<std::uint8_t> m_outputDeferred; // per layer: a BatchNorm2d whose readers compute its output (OutputPlaneSource)
    std::vector<const BatchNorm2d*> m_actSource; // per activation: that BatchNorm2d, or nullptr
    std::vector<std::size_t> m_actSourceInput;   // per activation: the BatchNorm2d's input activation
    std::vector<long> m_poolOf;      // per layer: the max pool a Conv2d + clamp runs fused with, or -1
    // backward: per Conv2d + clamp, the max pool whose forward ran apart (hooks read the clamp's
    // output) but whose backward runs inside the convolution's, or -1; per layer, such a pool
    std::vector<long> m_bwdPoolOf;
    std::vector<std::uint8_t> m_bwdPooled;
    std::vector<const std::uint8_t*> m_steOf; // backward: per fused-away clamp, the hooks' gradientMask for its producer
    // backward: per Conv2d, the BatchNorm2d right after it whose input gradient (this layer's
    // output gradient) it has written group by group (BatchNorm2d::backwardDeferringInputGradient),
    // or nullptr; and whether that gradient is rounded to bf16 (gradientRounded after the Conv2d).
    std::vector<BatchNorm2d*> m_dySourceOf;
    std::vector<std::uint8_t> m_dySourceRounds;
    // backward: per Add fused with its clamp, whether its mask pass rounds the clamp's output
    // gradient to bf16 in the hooks' place (Add::maskGradient; gradientRounded for the clamp after)
    std::vector<std::uint8_t> m_addRoundsDy;
    std::vector<long> m_lastReader; // backward: per activation, its reader whose backward runs last, or -1
    std::vector<std::uint8_t> m_flattenView; // per layer: a Flatten that takes its input's buffer (planFusion)
    std::vector<std::uint8_t> m_viewed;      // per layer: that Flatten's output holds its input's buffer now
    std::vector<Tensor> m_viewSpare;         // per layer: a buffer kept for its input's next forward
    std::vector<Shape> m_viewShape;          // per layer: that Flatten's input shape
    // RunContext::releaseActivations: the buffers such passes released, which their later layers
    // and the next such pass write into (the smallest that holds the activation), each with the
    // last pass that released it. Those two passes left unused go; a forward that keeps its
    // activations (training) drops them all.
    struct PooledBuffer {
        Tensor buffer;
        std::uint64_t pass = 0;
    };
    std::vector<PooledBuffer> m_bufferPool;
    std::uint64_t m_releasePass = 0;
    LayerTimes* m_times = nullptr;
};

} // namespace quantscope
