// MaxPool2d, as PyTorch's nn.MaxPool2d(kernel_size, stride, padding, ceil_mode=...) and ONNX's
// MaxPool: kernel (kh, kw), stride (sh, sw), padding (top, left, bottom, right) with -inf (each at
// most half its kernel, so every window holds an input value), floor or ceil output size
// (nn/pool_geometry.h). Ties go to the first maximum in scan order, as in PyTorch.
#pragma once

#include "nn/layer.h"
#include "nn/pool_geometry.h"

#include <cstdint>

namespace quantscope {

class MaxPool2d final : public Layer {
public:
    // stride 0 = kernel. ConfigError for a zero kernel or padding > kernel / 2.
    MaxPool2d(std::string name, std::size_t kernel, std::size_t stride = 0, std::size_t padding = 0);
    // Any window: x (N, C, H, W) -> y (N, C, g.outH(H), g.outW(W)). ConfigError (naming the layer
    // and the window) for a zero kernel or stride, or a pad more than half its kernel.
    MaxPool2d(std::string name, const PoolGeometry& g);
    LayerKind kind() const override { return LayerKind::MaxPool2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }
    std::size_t padding() const { return m_pad; }
    // The whole window (square ones: PoolGeometry::square(kernel, stride, padding)).
    const PoolGeometry& geometry() const { return m_g; }

    // Run fused after a convolution and its clamp activation (Model::setFusion, Conv2d::forwardPooled):
    // true for the 2x2 stride-2 pool without padding. The convolution's epilogue pools the clamped
    // rows with maxPool2x2Row into the y and argmax that beginFused(in, y, train) sets up (in: the
    // convolution's output shape; y resized to the pool's output; the argmax buffer, or nullptr
    // when not training). backwardFusedPlanes(y, dy, p0, p1, dst, cap) then writes planes [p0, p1)
    // of the convolution output's gradient (plane p = image p / C, channel p % C; dst holds
    // p1 - p0 planes of in's H x W, plane p0 first): dy at each window's argmax where the clamp's
    // rule passes the pooled value (gradientPasses: for the clamp's output r, r at the argmax is
    // that value), 0 elsewhere. The pool's and the clamp's backward in one pass, bit for bit, a
    // few images at a time, so that the convolution's backward (Conv2d::backwardPooled) reads
    // them from cache. ConfigError without a matching fused training forward or with planes past
    // the batch's.
    bool fusesAfterConvolution() const { return m_g.isSquare() && m_k == 2 && m_stride == 2 && m_pad == 0; }
    std::uint32_t* beginFused(const Shape& in, Tensor& y, bool train);
    // The convolution's output shape of the last beginFused, or the input shape of the last
    // training forward of a pool that fusesAfterConvolution (empty before either): the argmax
    // is laid out alike, so backwardFusedPlanes also follows a forward the pool ran by itself
    // (Model's backward-only fusion, when hooks read the clamp's output between the layers).
    const Shape& fusedInputShape() const { return m_fusedIn; }
    void backwardFusedPlanes(const Tensor& y, const Tensor& dy, std::size_t p0, std::size_t p1, float* dst, float cap) const;

private:
    // The pooling itself on an input that already carries its padding.
    void poolPadded(const Tensor& x, Tensor& y, bool train);
    void unpool(const Tensor& y, const Tensor& dy, Tensor& dxp);
    // unpool's planes [p0, p1) into d (plane p0 first; planes of dH x dW, the padded input's); with
    // mask, dy only where the clamp's rule on cap passes the pooled output (gradientPasses)
    void unpoolPlanes(const Tensor& y, const Tensor& dy, std::size_t p0, std::size_t p1, std::size_t dH, std::size_t dW,
                      float* d, const Tensor* mask, float cap) const;
    // A window that is not square (scalar): the maximum over the window's part inside the input
    // (the padding is -inf); argmax offsets within the unpadded plane.
    void poolGeneral(const Tensor& x, Tensor& y, bool train);

    std::size_t m_k, m_stride, m_pad; // square windows: kh, sh, padTop
    PoolGeometry m_g;
    std::vector<std::uint32_t> m_argmax; // training cache: offset within the (n,c) plane of the padded
                                         // input (square windows) or of the input (others)
    Tensor m_padded, m_paddedGrad;       // padding > 0: the padded input, and dL/d(padded input)
    Shape m_fusedIn;                     // fusedInputShape
};

// The 2x2 stride-2 max pool of n outputs from two input rows r0, r1 (2n values each read), r0[0] at
// offset base of its plane and r1 at base + W: out[j] = the window's maximum (ties to the first in
// scan order, a NaN wins, as PyTorch), am[j] (when given) its plane offset. MaxPool2d's own kernel.
void maxPool2x2Row(const float* r0, const float* r1, std::size_t n, std::uint32_t base, std::uint32_t W, float* out,
                   std::uint32_t* am);

} // namespace quantscope
