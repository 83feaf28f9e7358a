// The layer contract, stated once (after dlib's layers_abstract.h):
//
//  - forward(x, y, ctx): reads x of shape inputShape, resizes and writes y of shape
//    outputShape(x.shape()). In training mode it may cache what backward needs (im2col columns,
//    pooling argmax, dropout mask, normalised values). It never keeps pointers to x or y.
//  - backward(x, y, dy, dx, needInputGrad): x and y are exactly the tensors of the last
//    forward call, dy = dL/dy. It OVERWRITES every parameter's grad with dL/dparam and, when
//    needInputGrad, resizes and writes dx = dL/dx. It must be preceded by a training forward.
//  - Multi-input layers (Add, Mul, Concat) report numInputs() > 1 and implement the *Multi forms instead:
//    forwardMulti(xs, y) reads xs[0..numInputs), backwardMulti writes dxs[j] (each resized) for
//    every non-null dxs[j]. Single-input layers implement only the plain forms; the Model calls
//    the *Multi forms, whose defaults forward to them.
//  - Parameters are Param objects: `value` is the master copy the optimizer updates; a
//    precision strategy may set `forwardValue` (e.g. fake-quantized weights) which forward and
//    backward then use in place of `value` (straight-through: grads still land in `grad`).
#pragma once

#include "tensor/tensor.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace quantscope {

// The values are the layer kind codes of .qsm files (docs/FORMAT.md): append, never reorder.
enum class LayerKind {
    Conv2d, BatchNorm2d, ReLU, MaxPool2d, Dropout, Flatten, Linear, LogSoftmax,
    Add, GlobalAvgPool2d, AvgPool2d, ReLU6, Softmax,
    // pointwise activations (nn/pointwise.h)
    Sigmoid, Tanh, SiLU, Hardsigmoid, Hardswish, LeakyReLU, ELU, GELU,
    // joins of activations besides Add (nn/mul.h, nn/concat.h)
    Mul, Concat,
    // PReLU (nn/prelu.h: a learned slope, one or one per channel) and GELU's tanh approximation (nn/pointwise.h)
    PReLU, GELUTanh,
    // clamp(x, min_val, max_val) (nn.Hardtanh, torch.clamp, ONNX Clip other than ReLU/ReLU6; nn/pointwise.h)
    Hardtanh,
    // channels moved, not computed on (nn/channel_ops.h): ShuffleNet's channel shuffle and split
    ChannelShuffle, Slice,
    // GroupNorm (nn/groupnorm.h: nn.GroupNorm, and nn.InstanceNorm2d as one group per channel)
    GroupNorm,
    // Softplus (beta 1, threshold 20) and Mish (x tanh(softplus(x))) (nn/pointwise.h)
    Softplus, Mish,
    // padding as a layer of its own: zeros, reflect, replicate (nn/pad.h)
    Pad,
    // SELU, CELU (alpha) and Softsign (nn/pointwise.h)
    SELU, CELU, Softsign,
    // LayerNorm over the channels of each pixel (nn/layernorm2d.h: ConvNeXt's channels-first LayerNorm)
    LayerNorm2d,
    // the largest of each pixel's channels (nn/channel_max.h: CBAM's spatial pooling)
    ChannelMax
};
constexpr int kLastLayerKind = static_cast<int>(LayerKind::ChannelMax);

const char* layerKindName(LayerKind k);

// The most weights one layer may hold: 2^28 (1 GiB in FP32; its training state is four times
// that). A preset on images far larger than it was made for (seed-cnn's fc1 on 1024x1024 holds
// 2.1 billion) is refused before anything is allocated.
inline constexpr std::uint64_t kMaxLayerWeights = std::uint64_t{1} << 28;
// Throws ConfigError naming `layer` and `shape` (e.g. "Linear 4194304 -> 128") if `count`
// weights (the product of `dims`) exceed kMaxLayerWeights.
void checkWeightCount(const std::string& layer, const std::string& shape, std::initializer_list<std::size_t> dims);

// The broadcast that Add and Mul take besides equal shapes: a [N, C, 1, 1] gate of a [N, C, H, W]
// map's channels, in either order (PyTorch's broadcasting for this case; shapes per batch, rank 4,
// or per image, rank 3). Returns -1 for equal shapes, 0 or 1 for the input that is the gate, and
// -2 when the two shapes are neither.
inline int channelGateOf(const Shape& a, const Shape& b)
{
    if (a == b) return -1;
    const auto ones = [](const Shape& s) { return s[s.size() - 1] == 1 && s[s.size() - 2] == 1; };
    if (a.size() == b.size() && (a.size() == 3 || a.size() == 4) && std::equal(a.begin(), a.end() - 2, b.begin())) {
        if (ones(b)) return 1;
        if (ones(a)) return 0;
    }
    return -2;
}

struct Param {
    std::string name;      // "weight", "bias", "gamma", "beta"
    Tensor value;          // master copy
    Tensor grad;           // same shape as value
    Tensor override;       // used by forward/backward instead of value when hasOverride
    bool hasOverride = false;
    bool isWeight = false; // weights (not biases/BN affine) are what quantization targets

    const Tensor& forwardValue() const { return hasOverride ? override : value; }
    void clearOverride() { hasOverride = false; }
};

// The layer kinds that honour RunContext::roundOutputBf16: Conv2d, BatchNorm2d, Add and Dropout.
// Model::forward sets the flag only for these, and FloatSim offers it only to these.
inline bool honoursRoundOutputBf16(LayerKind k)
{
    return k == LayerKind::Conv2d || k == LayerKind::BatchNorm2d || k == LayerKind::Add || k == LayerKind::Dropout;
}

struct RunContext {
    bool training = false;
    std::uint64_t rngKey = 0; // per-step key; layers derive their own streams from it
    // Set by Model::forward for a layer whose hooks ask for it (LayerHooks::roundsOutputBf16): the
    // layer rounds its output to bfloat16, nearest even (tensor/bf16.h), before it returns, in its
    // own epilogue (the kinds honoursRoundOutputBf16 names), while the values are still in cache.
    // Model::forward sets it for no other layer.
    bool roundOutputBf16 = false;
    // Inference passes that read only the output (evaluation, calibration, the float runner):
    // Model::forward frees each activation once the last layer reading it has run, all but the
    // output and the last layer's input (the loss reads it), so a pass holds only the live ones.
    // A CIFAR MobileNetV2 evaluated 256 images at a time held every activation of the batch, 1.8 GB.
    // Model::activation(a) of a freed activation is empty. Ignored when training.
    bool releaseActivations = false;
};

class Layer {
public:
    explicit Layer(std::string name) : m_name(std::move(name)) {}
    virtual ~Layer() = default;
    Layer(const Layer&) = delete;
    Layer& operator=(const Layer&) = delete;

    virtual LayerKind kind() const = 0;
    virtual Shape outputShape(const Shape& in) const = 0;
    virtual void forward(const Tensor& x, Tensor& y, const RunContext& ctx) = 0;
    virtual void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) = 0;
    virtual std::vector<Param*> params() { return {}; }

    // Multi-input form of the contract (see the top of this file). A layer with numInputs() > 1
    // overrides all three *Multi functions; its plain forms are never called.
    virtual std::size_t numInputs() const { return 1; }
    virtual Shape outputShapeMulti(const std::vector<Shape>& in) const;
    virtual void forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx);
    virtual void backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& y, const Tensor& dy,
                               const std::vector<Tensor*>& dxs);
    // A short description of the hyper-parameters, e.g. "1->32 3x3 s1 p0".
    virtual std::string describe() const { return {}; }

    const std::string& name() const { return m_name; }

protected:
    // Throws ConfigError naming this layer and both shapes unless dy has the shape forward gives x
    // (outputShape(x.shape()), which throws itself for an x this layer does not take): for the
    // backward of layers that would otherwise index x and dy blindly.
    void checkOutputGradient(const Tensor& x, const Tensor& dy) const;

private:
    std::string m_name;
};

// Mixed precision's gradient rounding inside a layer's own backward pass
// (LayerHooks::roundsGradientBf16; BatchNorm2d, Conv2d, Linear and Dropout have it): while on, the layer's
// backward leaves dx rounded to bf16 nearest even (roundBf16, the same bits as rounding dx in a
// pass of its own afterwards), and inputGradientFinite() tells whether every value of it is
// finite. Model turns it on for one backward call at a time.
class InputGradientRounding {
public:
    void setRoundInputGradientBf16(bool on) { m_roundDxBf16 = on; }
    bool inputGradientFinite() const { return m_dxFinite; }

protected:
    ~InputGradientRounding() = default;
    bool m_roundDxBf16 = false; // setRoundInputGradientBf16
    bool m_dxFinite = true;     // inputGradientFinite, set by each backward
};

// Takes a layer's output a group of images at a time, as the layer writes it, while the group is
// still in cache (Conv2d::setOutputSink; BatchNorm2d's batch statistics, Model::forward).
class OutputImageSink {
public:
    // Images [n0, n0 + count) of y (N, C, H, W) are written and final. Called from the layer's
    // worker threads, at most once per image, for disjoint ranges.
    virtual void imagesWritten(const Tensor& y, std::size_t n0, std::size_t count) = 0;

    // A per-tensor affine fake-quant grid (PyTorch's fake_quantize_per_tensor_affine with
    // round half to even): q = clamp(nearbyint(v / scale) + zeroPoint, qmin, qmax), the output
    // (q - zeroPoint) scale, and the straight-through mask (1 where nearbyint(v / scale) +
    // zeroPoint lies in [qmin, qmax]) written at mask, one byte per value of y.
    struct FakeQuantGrid {
        float scale = 1.0f;
        std::int32_t zeroPoint = 0;
        std::int32_t qmin = 0, qmax = 0;
        std::uint8_t* mask = nullptr; // null: write y as it is
    };
    // The producer knows the finite range [lo, hi] of its whole output y before it writes any of
    // it (BatchNorm2d, from its input's range: the affine map is monotone per channel). Returns
    // true when the sink took the range instead of imagesWritten's (which then is not called);
    // with grid.mask set, the producer writes y fake-quantized on grid (QuantSim's observer and
    // fake-quant in the producer's one pass). The default takes nothing.
    virtual bool outputRange(const Shape& /*y*/, float /*lo*/, float /*hi*/, FakeQuantGrid& /*grid*/) { return false; }

protected:
    ~OutputImageSink() = default;
};

// Writes a layer's input gradient a group of images at a time, for the layer that reads it, where
// it is needed (Conv2d::setGradientSource; BatchNorm2d::backwardDeferringInputGradient).
class GradientImageSource {
public:
    // Writes images [n0, n0 + count) of the gradient, count x C x H x W floats, at out. Called from
    // the reader's worker threads, for disjoint ranges.
    virtual void gradientImages(std::size_t n0, std::size_t count, float* out) = 0;

protected:
    ~GradientImageSource() = default;
};

// A layer's output computed plane by plane for the layer that reads it, as it reads it, so that it
// never goes through memory whole (BatchNorm2d::forwardDeferringOutput, read by an Add: Model's
// training pass).
class OutputPlaneSource {
public:
    // Writes planes [p0, p0 + count) of the output, (N, C, H, W) taken as N C planes of H W floats
    // in order, count H W floats at out. The same values as the layer's own forward would have
    // written. Called from the reader's worker threads, for disjoint ranges.
    virtual void outputPlanes(std::size_t p0, std::size_t count, float* out) const = 0;
    // Plane p's H rows of W floats, row y at out + y pitch (pitch >= W; the floats between rows
    // are left as they are): a reader's padded layout, written in place.
    virtual void outputPlaneRows(std::size_t p, float* out, std::size_t pitch) const = 0;
    // A hint that plane p is asked for next: a source may bring what it reads for it into cache
    // (a reader that walks the planes C H W apart, channel by channel). No effect on any value.
    virtual void prefetchPlane(std::size_t /*p*/) const {}

protected:
    ~OutputPlaneSource() = default;
};

using LayerPtr = std::unique_ptr<Layer>;

} // namespace quantscope
