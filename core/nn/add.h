// Add: the elementwise sum of two activations of the same shape (the residual join), or of a
// [N, C, H, W] map and a [N, C, 1, 1] gate of its channels broadcast over H and W, in either order
// (GCNet's context block: x + transform(pool(x)); PyTorch's broadcasting for this case).
#pragma once

#include "nn/layer.h"

#include <array>
#include <cstdint>

namespace quantscope {

// y = a + b; dL/da = dL/db = dy. Broadcast: y[n, c, :, :] = x[n, c, :, :] + g[n, c], dx = dy and
// dg[n, c] = sum_{h, w} dy[n, c, h, w] (summed in double, in order). Any other pair of shapes is a
// ConfigError naming the layer and both shapes.
class Add final : public Layer {
public:
    using Layer::Layer;
    LayerKind kind() const override { return LayerKind::Add; }
    std::size_t numInputs() const override { return 2; }
    Shape outputShape(const Shape& in) const override;
    Shape outputShapeMulti(const std::vector<Shape>& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    void forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx) override;
    void backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& y, const Tensor& dy,
                       const std::vector<Tensor*>& dxs) override;

    // Which input is the [N, C, 1, 1] gate of a broadcast sum: 0 or 1, or -1 for equal shapes.
    // Throws ConfigError (naming `layer`) when a and b are neither equal nor such a pair. Shapes
    // are per batch ([N, C, H, W]) or per image ([C, H, W]) alike. Model::forward runs a
    // broadcast sum apart from the fused passes (no clamp fused into it, no deferred inputs).
    static int gateOf(const std::string& layer, const Shape& a, const Shape& b);

    // forwardMulti rounds the sum to bfloat16, nearest even, in the same pass when
    // ctx.roundOutputBf16 (RunContext; the same roundBf16 as roundToFormat's, so the same bits).
    // The Add fused with the ReLU (cap = +inf) or ReLU6 (cap = 6) that alone reads it
    // (Model::setFusion): r = min(max(a + b, 0), cap) in one pass, the sum never stored; with
    // toBf16 the sum is rounded to bfloat16 first (the clamp of a bf16 value is one: 0 and 6 are
    // on the grid), so r = ReLU(round(a + b)), as the separate layers with the rounding between.
    // sources[j] (or nullptr): input j's values come from that layer's OutputPlaneSource, a few
    // planes at a time into a buffer in cache, and *xs[j] gives only their shape (a BatchNorm2d's
    // input, whose output forwardDeferringOutput left unwritten). Needs 4-d inputs (N, C, H, W), and
    // (with sources or sink) equal shapes: a broadcast sum with either is a ConfigError.
    // sink (or nullptr): takes r image by image as it is written, while the image is in cache
    // (QAT's observer range: LayerHooks::outputSink); the pass then runs image by image.
    void forwardClamped(const std::vector<const Tensor*>& xs, Tensor& r, float cap, bool toBf16 = false,
                        const std::array<const OutputPlaneSource*, 2>& sources = {}, OutputImageSink* sink = nullptr);
    // The fused backward's mask: dr (the clamp's output gradient, r's shape) keeps its entries
    // where the clamp passes them (r > 0, and r < cap when cap is finite: ReLU's and ReLU6's rules
    // on their output) and is zeroed elsewhere, in place. With first, the masked gradient is also
    // written to *first (resized), or added into it when addFirst: the gradient of the Add's first
    // input, in the same pass. steMask (0/1 bytes over r's elements, or nullptr): QAT's
    // straight-through mask of a quantization point on r (LayerHooks::gradientMask), applied in
    // the same pass. roundBf16: dr is first rounded to bf16 (roundBf16, to nearest even), as the
    // mixed-precision hooks would round the clamp's output gradient before this backward, in the
    // same pass; masking after rounding gives the same bits as before (a zeroed entry is zero
    // either way). Returns false when a rounded entry (masked or not) is inf or NaN, as
    // roundToFormatAllFinite reports it; true otherwise, and always without roundBf16.
    // Throws ConfigError when r and dr (or *first, when added into) differ in shape.
    bool maskGradient(const Tensor& r, Tensor& dr, float cap, Tensor* first, bool addFirst,
                      const std::uint8_t* steMask = nullptr, bool roundBf16 = false) const;
};

} // namespace quantscope
