// Conv2d as im2col + Eigen GEMM, TBB-parallel over the images of a batch. Grouped convolution
// (groups > 1) runs one GEMM per group; depthwise convolution (groups == in == out channels) has
// its own direct kernel (kernels up to 7x7, strides up to 4; larger ones take the grouped im2col
// path, which is also the kernel's reference in the tests), not im2col with one channel per GEMM.
// 1x1 stride-1 convolutions read their input as the columns. Convolutions of 8 or more input
// channels (kernels 2x2 to 7x7, any padding below the kernel size, strides up to 4, groups 1) run
// direct kernels instead (conv_direct.h: no column matrix), with the im2col path as their reference.
// Every fast path runs square windows only (conv_geometry.h: k x k, one stride, equal padding, no
// dilation); rectangular kernels, two strides, asymmetric padding and dilation take im2col + GEMM.
#pragma once

#include "nn/conv_geometry.h"
#include "nn/layer.h"
#include "tensor/gemm_bf16.h"
#include "tensor/gemm_s8.h"

#include <optional>

namespace quantscope {

class MaxPool2d;
namespace conv_detail {
struct PooledOut;
struct PooledGrad;
}

class Conv2d final : public Layer, public InputGradientRounding {
public:
    // weight: (Cout, Cin / groups, k, k), bias: (Cout) unless hasBias is false. Cin and Cout must
    // be multiples of groups (ConfigError otherwise). PyTorch's default init is applied by initParams.
    Conv2d(std::string name, std::size_t inChannels, std::size_t outChannels, std::size_t kernel,
           std::size_t stride = 1, std::size_t padding = 0, std::size_t groups = 1, bool hasBias = true);
    // Any window: weight (Cout, Cin / groups, kh, kw). ConfigError for a zero kernel, stride or dilation.
    Conv2d(std::string name, std::size_t inChannels, std::size_t outChannels, const ConvGeometry& geometry,
           std::size_t groups = 1, bool hasBias = true);

    LayerKind kind() const override { return LayerKind::Conv2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override
    {
        if (m_hasBias) return {&m_weight, &m_bias};
        return {&m_weight};
    }
    std::string describe() const override;

    std::size_t inChannels() const { return m_cin; }
    std::size_t outChannels() const { return m_cout; }
    // kernel(), stride() and padding() are the square window's (kh, sh, top padding otherwise):
    // read geometry() wherever a window need not be square.
    std::size_t kernel() const { return m_k; }
    std::size_t stride() const { return m_stride; }
    std::size_t padding() const { return m_pad; }
    const ConvGeometry& geometry() const { return m_geom; }
    bool isSquare() const { return m_square; }
    // kh * kw: the taps of one input channel.
    std::size_t taps() const { return m_geom.taps(); }
    std::size_t groups() const { return m_groups; }
    bool isDepthwise() const { return m_groups > 1 && m_groups == m_cin && m_cin == m_cout; }
    bool hasBias() const { return m_hasBias; }
    Param& weight() { return m_weight; }
    // Without a bias this Param is empty (shape (0)) and not among params().
    Param& bias() { return m_bias; }
    // Forces the im2col + GEMM path even where a direct kernel exists (the kernels' reference in
    // the tests and benchmarks). Off by default.
    void setReferencePath(bool on) { m_reference = on; }
    // bf16 products (mixed and low-precision bf16 training, whose inputs, weights and output
    // gradients are already bf16 values): forward, input- and weight-gradient GEMMs round their
    // operands to bf16 while packing and accumulate in FP32 on `path` (tensor/gemm_bf16.h):
    // the emulation's results up to the order of FP32 accumulation. Emulated (the default) keeps
    // the FP32 kernels. Depthwise and grouped convolutions keep their FP32 kernels (exact on
    // bf16 inputs too: bf16 x bf16 products are exact in FP32).
    void setBf16Products(Bf16Path path) { m_bf16 = path; }
    // Whether bf16 products pay on this layer: each output sums at least kMinBf16Depth products
    // (input channels per group x taps). Below (a stem on one input channel: 9) mixed and low
    // precision keep the emulation, FP32 products of the bf16-rounded operands, the same numbers
    // up to the order of FP32 accumulation: a dot product of 2 x 9 bf16 pairs gains nothing, and
    // the emulated path keeps its ReLU fused (seed-cnn's conv1 on the bf16 im2col path with its
    // ReLU apart cost 6 % of a mixed step on Zen 5). Nor do strided 1x1 convolutions (ResNet's
    // projection shortcuts): their FP32 path gathers only the sampled pixels (forwardSubsampled)
    // and gives its BatchNorm the batch sums, where the bf16 im2col path does neither (resnet8's
    // 32->64 shortcut and its BN: 0.59 against 0.41 ms a step on Zen 5). The trainer and
    // bench_model_layers both ask.
    static constexpr std::size_t kMinBf16Depth = 32;
    bool bf16ProductsPay() const { return m_cin / m_groups * taps() >= kMinBf16Depth && !(taps() == 1 && m_stride > 1); }
    Bf16Path bf16Products() const { return m_bf16; }
    // True when every product that reads the weight packs it to bf16 (rounding to nearest even,
    // tensor/bf16.h): bf16 products on, groups 1. A rounded copy of the weight then changes nothing.
    bool readsWeightAsBf16() const { return usesBf16Gemm(); }
    // After a training forward on the bf16 runs or phase runs: true, x's bf16 runs are kept for
    // the backward (which splits them instead of rounding x again; as long as it is given that x).
    bool keptInputRuns() const { return m_xRunsOf != nullptr; }
    // Bytes those kept runs hold; an evaluation forward frees them (0 after it).
    std::size_t keptRunsBytes() const { return m_xRunsBf16.capacity() * sizeof(std::uint16_t); }
    // True when this layer runs the direct kernels (conv_direct.h): groups 1, at least 8 input
    // channels, kernel 2x2 to 7x7 (or 1x1 with stride 2 to 4 and no padding), padding below the
    // kernel size, stride up to 4 (strided ones read phase-split runs and take the input
    // gradient phase by phase; strided 1x1 ones read the sampled pixels only).
    bool usesDirectKernel() const;
    // False in builds without AVX-512 (the .deb's x86-64-v3): there the direct kernels' portable
    // twins measured 2-3x slower than im2col + Eigen, which every convolution then takes. The
    // sanitizer builds define QS_DIRECT_KERNELS_ALWAYS to keep checking the twins' run layouts.
    static bool directKernelsBuilt();

    // Conv2d fused with the clamp activation that alone reads its output (ReLU: cap = +inf, ReLU6:
    // cap = 6), as Model's training pass runs the pair, like BatchNorm2d::forwardClamped.
    // forwardClamped writes r = min(max(conv(x), 0), cap) in the convolution's epilogue without
    // materialising conv(x); backwardClamped takes dr = dL/dr and r and gives exactly the
    // convolution's backward of dy = dr [r > 0] (ReLU) or dr [0 < r < cap] (ReLU6, PyTorch's
    // hardtanh_backward), the activations' own rules. The stride-1 direct kernels apply the mask
    // while laying dy out (no pass of its own); the other paths mask a copy first. Shapes as
    // forward/backward. Only where fusesActivation() (the direct and im2col paths).
    // ste: the straight-through mask of a quantization point on r (0/1 bytes, r's size; LayerHooks::
    // gradientMask), or nullptr: dr is then masked by it too, as beforeBackward would have masked
    // it, while each group's gradient is read (no pass over dr of its own).
    bool fusesActivation() const;
    void forwardClamped(const Tensor& x, Tensor& r, const RunContext& ctx, float cap);
    void backwardClamped(const Tensor& x, const Tensor& r, const Tensor& dr, Tensor& dx, bool needInputGrad, float cap,
                         const std::uint8_t* ste = nullptr);
    // The same pair followed by the 2x2 stride-2 max pool that alone reads the clamp's output
    // (MaxPool2d::fusesAfterConvolution), as Model's training pass runs the three: forwardPooled
    // writes the pool's output y (N, Cout, Ho / 2, Wo / 2) from the epilogue's clamped rows, so
    // neither conv(x) nor the clamp's output is materialised; backwardPooled takes y and dy =
    // dL/dy and gives exactly the three layers' backward (MaxPool2d::backwardFusedPlanes, then this
    // layer's). Only where poolsInEpilogue(): the stride-1 direct kernels, FP32 or bf16 runs.
    bool poolsInEpilogue() const;
    // The backward (backward, or backwardClamped when r is given) adding its input gradient into
    // dx, which already holds x's shape: dx += dL/dx, each element with one addition, so exactly
    // the backward into a fresh tensor followed by dx += it (Model's gradient of an activation
    // with several readers, such as a residual block's input), without that tensor and the pass
    // over it. Only where addsInputGradient(): the FP32 direct kernels, the bf16 runs of stride 1,
    // and the bf16 phase runs of strided convolutions of 2x2 or more (backwardStridedBf16; where
    // its layout does not apply, the im2col backward goes through a tensor of its own). With
    // setRoundInputGradientBf16 on, a convolution on stride-1 runs rounds the sum, dx after the
    // addition, to bf16 (roundsAddedInputGradient): the last reader of an activation whose
    // gradient the mixed-precision hooks round does their rounding pass in its own. Throws
    // ConfigError when dx does not have x's shape.
    bool addsInputGradient() const
    {
        return usesDirectKernel() && (!usesBf16Gemm() || usesBf16Runs() || (m_stride > 1 && m_k > 1));
    }
    bool roundsAddedInputGradient() const { return usesBf16Runs(); }
    // Whether the input gradient is zero at all but 1 in stride^2 pixels (a strided 1x1
    // convolution: ResNet's projection shortcut) and backwardAddingInputGradient touches only the
    // others: Model's backward lets a dense reader of the same input write first.
    bool addsSparseInputGradient() const { return addsInputGradient() && m_k == 1 && m_stride > 1 && m_pad == 0; }
    void backwardAddingInputGradient(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, float cap,
                                     const std::uint8_t* ste = nullptr);
    // InputGradientRounding, for backward, backwardClamped and backwardPooled (not
    // backwardAddingInputGradient: the sum is what would be rounded). The stride-1 direct
    // kernels, the depthwise kernel and the bf16 im2col backward round each group's, plane's or
    // image's dx while it is in cache; the other paths (strided direct, FP32 im2col) in a pass
    // over dx at the end.
    void forwardPooled(const Tensor& x, Tensor& y, const RunContext& ctx, float cap, MaxPool2d& pool);
    // ste: as backwardClamped's, on the clamp's output (the convolution's output shape).
    void backwardPooled(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap,
                        MaxPool2d& pool, const std::uint8_t* ste = nullptr);

    // QAT's integer products (tensor/gemm_s8.h), set by QuantSim while the weights are
    // fake-quantized: weightScales gives the weights' grid, w[c] = weightScales[c] q with integer
    // q in [-128, 127] (one entry: per tensor; empty: off), inputGrid the input's, x = scale (u -
    // zero) with u in [0, 255] (nullopt: off). With both set, a forward that takesIntegerProducts()
    // on a CPU with AMX-INT8 or AVX512_VNNI computes its product on the codes (int8 x uint8 -> int32, exact) and
    // dequantizes once per output: the fake-quantized product up to the order of FP32 rounding.
    // It checks that weights and input are on their grids (within 1e-4 of a step) and otherwise
    // runs its FP32 kernel, as do every other path and CPU. Backward is unchanged (FP32, STE).
    void setIntegerWeightScales(std::vector<float> scales) { m_intWScale = std::move(scales); }
    void setIntegerInputGrid(std::optional<U8Grid> grid) { m_intInput = grid; }
    // The sink that takes this layer's output image group by group as forward writes it (the
    // direct and bf16-run paths, while the group is in cache; not the pooled forward), or nullptr.
    // Paths that do not feed it (im2col, depthwise, strided 1x1) leave it without images: a sink
    // must tell, as BatchNorm2d::beginProducerStats does by counting them. Model sets it for one call.
    void setOutputSink(OutputImageSink* sink) { m_sink = sink; }
    // The source of the output gradient for the next backward, backwardClamped excepted (which
    // needs dr itself): dy is then not read (pass an empty tensor), and each group of images'
    // gradient is written by the source into a buffer that stays in cache, where the stride-1
    // direct kernels (a group of images) and the FP32 im2col path (an image) read it
    // (BatchNorm2d::backwardDeferringInputGradient: the BN's dx never goes through memory whole).
    // Only where takesGradientSource(); logic_error otherwise. nullptr: off. Model sets it for one call.
    void setGradientSource(GradientImageSource* source) { m_dySource = source; }
    bool takesGradientSource() const;
    // The source of the input's values for the next forward or backward: x then gives only the
    // input's shape (pass the producer's input, of the same shape), and each group's input planes
    // are written by the source into a buffer in cache as the runs are laid out
    // (BatchNorm2d::forwardDeferringOutput: the BN + ReLU output never goes through memory whole).
    // Only where takesInputSource(): the stride-1 direct kernels (FP32 or bf16 runs), k > 1;
    // logic_error otherwise. nullptr: off. Model sets it for one call.
    void setInputSource(const OutputPlaneSource* source) { m_xSource = source; }
    bool takesInputSource() const;
    // Whether the last forward ran on the integer products.
    bool lastForwardWasInteger() const { return m_lastInteger; }
    // Whether this layer's forward can take them: groups 1, FP32 products, and the direct kernels
    // (stride 1, or a strided kernel of 2x2 or more on the phase runs), or a stride-1 1x1
    // convolution without padding, laid out the same way; in an AVX-512 build.
    bool takesIntegerProducts() const;

private:
    // cap: the fused activation's clamp (forwardClamped), or NaN for none.
    void forwardImpl(const Tensor& x, Tensor& y, const RunContext& ctx, float cap);
    // r != nullptr: dy is masked by the clamp's rule on r (backwardClamped).
    void backwardImpl(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap);
    void backwardPaths(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap);
    // setRoundInputGradientBf16: whether this backward rounds dx (on, with an input gradient, not
    // adding into dx unless it rounds the sum: roundsAddedInputGradient, whose path, backwardDirect,
    // rounds each group's images after adding), and the pass over dx for the paths that did not
    // round it as they wrote it.
    bool roundsDx(bool needInputGrad) const
    {
        return m_roundDxBf16 && needInputGrad && (!m_addDx || roundsAddedInputGradient());
    }
    void finishDxRounding(Tensor& dx, bool needInputGrad);
    // The direct depthwise kernel (isDepthwise()); the grouped im2col path is its reference.
    // roundOut: each output plane rounded to bf16 as it is written (RunContext::roundOutputBf16).
    void forwardDepthwise(const Tensor& x, Tensor& y, bool roundOut) const;
    void backwardDepthwise(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad);
    // pooled: the fused pool (forwardPooled) that takes the output instead of y.
    void forwardDirect(const Tensor& x, Tensor& y, float cap, const conv_detail::PooledOut* pooled = nullptr);
    // The integer products of forwardDirect; false (y unspecified) when they do not apply.
    bool forwardDirectS8(const Tensor& x, Tensor& y, float cap);
    // pooled: dy is the fused pool's output gradient (backwardPooled; dy itself is not read).
    void backwardDirect(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap,
                        const conv_detail::PooledGrad* pooled = nullptr);
    bool usesBf16Gemm() const { return m_bf16 != Bf16Path::Emulated && m_groups == 1 && m_square; }
    // bf16 products over the direct kernels' runs, on AMX or AVX512_BF16 (forward, input gradient,
    // and the weight gradient except on AMX with input channels not a multiple of 16, which takes
    // the FP32 direct kernel, exact on bf16 operands up to the order of additions).
    bool usesBf16Runs() const { return m_bf16 != Bf16Path::Emulated && usesDirectKernel() && m_stride == 1; }
    void forwardDirectBf16(const Tensor& x, Tensor& y, float cap, const conv_detail::PooledOut* pooled = nullptr);
    void forwardBf16(const Tensor& x, Tensor& y);
    void backwardBf16(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad);
    void backwardStrided(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad);
    // The strided backward on bf16 phase runs (conv2d_products.cpp); false (nothing written) when
    // its layout does not apply, and backwardBf16 takes it.
    bool backwardStridedBf16(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad);
    // Strided 1x1 convolutions (pad 0): the sampled pixels gathered into runs (conv2d_direct.cpp).
    void forwardSubsampled(const Tensor& x, Tensor& y, const float* bias, float cap);
    void backwardSubsampled(const Tensor& x, const Tensor& dy, Tensor& dx, bool needInputGrad);

    std::size_t m_cin, m_cout, m_k, m_stride, m_pad, m_groups;
    ConvGeometry m_geom; // the window; m_k, m_stride, m_pad are its kh, sh, top padding
    bool m_square;       // m_geom.isSquare(): the fast paths' precondition
    bool m_hasBias;
    bool m_reference = false;
    Bf16Path m_bf16 = Bf16Path::Emulated;
    PackedBf16A m_packedBf16;
    Param m_weight, m_bias;
    std::vector<float> m_packed; // direct kernels: the weights packed by conv_direct::packA
    Shape m_colsFor;     // input shape of the last training forward (backward checks it)
    std::vector<float> m_partials; // backward: per-image weight and bias gradients
    Tensor m_maskedDy;             // backwardClamped off the stride-1 direct path: dr masked
    std::vector<float> m_intWScale;     // setIntegerWeightScales
    std::optional<U8Grid> m_intInput;   // setIntegerInputGrid
    std::vector<std::int8_t> m_s8Codes; // the weights' codes in the kernel's k order
    PackedS8A m_packedS8;
    std::vector<float> m_s8Scale;        // per output channel: input scale x weight scale
    std::vector<std::int32_t> m_s8Corr;  // per output channel: -zero x sum of the codes
    std::vector<std::size_t> m_s8Taps;   // byte offsets of the k x k taps in the runs
    PackedBf16Runs m_packedBf16Runs;     // usesBf16Runs: W (forward) or rot180(W)^T (input gradient)
    // bf16 products on the runs or the phase runs (stride 2 and more), after a training forward:
    // x's bf16 runs as the weight gradient reads them (one channel a run, keptGroupStride apart
    // from the first 64-byte boundary: keepSingleRuns), and the x they were made from. The
    // backward reads them instead of rounding x (or its phases) again.
    std::vector<std::uint16_t> m_xRunsBf16;
    const float* m_xRunsOf = nullptr;
    bool m_keepXRuns = false; // the forward under way is a training one
    // Images [n0, n0 + count) of the output gradient, written by m_dySource into this thread's
    // buffer 5 (imageSize floats an image), which stays in cache while the group is worked on.
    const float* sourcedGradient(std::size_t n0, std::size_t count, std::size_t imageSize) const;
    bool m_lastInteger = false;
    OutputImageSink* m_sink = nullptr; // setOutputSink
    GradientImageSource* m_dySource = nullptr; // setGradientSource
    const OutputPlaneSource* m_xSource = nullptr; // setInputSource
    bool m_roundOut = false; // this forward's RunContext::roundOutputBf16
    bool m_addDx = false;    // inside backwardAddingInputGradient: the direct kernels add into dx
    const std::uint8_t* m_ste = nullptr; // this backward's straight-through mask on r (backwardClamped)
    bool m_dxRoundedInPass = false; // this backward's path rounded dx as it wrote it
};

// im2col for one image: x (C, H, W) -> cols (C*k*k, Ho*Wo), rows ldc apart (0: Ho*Wo), so
// several images can sit side by side in one matrix.
void im2col(const float* x, std::size_t C, std::size_t H, std::size_t W, std::size_t k, std::size_t stride,
            std::size_t pad, float* cols, std::size_t ldc = 0);
// col2im for one image, accumulating: dx (C, H, W) += fold(dcols), dcols rows ldc apart.
void col2imAdd(const float* dcols, std::size_t C, std::size_t H, std::size_t W, std::size_t k,
               std::size_t stride, std::size_t pad, float* dx, std::size_t ldc = 0);
// The same for any window: cols (C*kh*kw, Ho*Wo), row (c, ky, kx), column (oy, ox) holds
// x[c, oy*sh + ky*dh - top, ox*sw + kx*dw - left] (0 outside). A square window takes the
// functions above; the rest a plain loop (conv2d_general.cpp).
void im2col(const float* x, std::size_t C, std::size_t H, std::size_t W, const ConvGeometry& g, float* cols,
            std::size_t ldc = 0);
void col2imAdd(const float* dcols, std::size_t C, std::size_t H, std::size_t W, const ConvGeometry& g, float* dx,
               std::size_t ldc = 0);

} // namespace quantscope
