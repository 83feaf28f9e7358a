// BatchNorm2d over (N, C, H, W): per-channel batch statistics in training, running statistics
// in evaluation (PyTorch semantics: momentum 0.1, unbiased variance for the running estimate).
#pragma once

#include "nn/layer.h"

#include <atomic>
#include <cstdint>

namespace quantscope {

class BatchNorm2d final : public Layer,
                          public InputGradientRounding,
                          public OutputImageSink,
                          public GradientImageSource,
                          public OutputPlaneSource {
public:
    BatchNorm2d(std::string name, std::size_t channels, float eps = 1e-5f, float momentum = 0.1f);

    LayerKind kind() const override { return LayerKind::BatchNorm2d; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override { return {&m_gamma, &m_beta}; }
    // BatchNorm fused with the clamp activation that alone reads its output (ReLU: cap = +inf,
    // ReLU6: cap = 6), as Model's training pass runs the pair (one pass over memory fewer each
    // way). forwardClamped writes r = min(max(BN(x), 0), cap) without materialising BN(x);
    // backwardClamped takes dr = dL/dr and the activation's output r, and gives exactly BN's
    // backward of dy = dr [r > 0] (ReLU) or dr [0 < r < 6] (ReLU6: PyTorch's hardtanh_backward,
    // the bounds pass no gradient), which are the activations' own rules since r > 0 iff x > 0
    // and 0 < r < 6 iff 0 < x < 6. Shapes as forward/backward. With maskFromOutput the mask is
    // read from r itself (r > 0, 0 < r < cap) rather than recomputed from BN(x): for a caller that
    // changed r after forwardClamped (FloatSim rounds it), so that the mask is the one the unfused
    // activation would have used. Where the forward rounded r to bf16 itself
    // (RunContext::roundOutputBf16) and r is as it left it, that mask is recomputed from x and
    // rounded instead of read, with the same result (AVX-512 builds).
    void forwardClamped(const Tensor& x, Tensor& r, const RunContext& ctx, float cap);
    // steMask (0/1 bytes over r's elements, or nullptr): QAT's straight-through mask of a
    // quantization point on r (LayerHooks::gradientMask); where it is 0 the gradient is dropped
    // too, in the same passes, as if dr had been masked by it first.
    void backwardClamped(const Tensor& x, const Tensor& r, const Tensor& dr, Tensor& dx, bool needInputGrad, float cap,
                         bool maskFromOutput = false, const std::uint8_t* steMask = nullptr);
    // The backward (r == nullptr: backward's; otherwise backwardClamped's with these arguments)
    // without writing dx: the parameter gradients are set, and dx is left to gradientImages, which
    // writes images [n0, n0 + count) of it (count x C x H x W floats at out, rounded to bf16 where
    // setRoundInputGradientBf16 was on for this call), as the convolution that reads it needs them
    // (GradientImageSource, Conv2d::setGradientSource): dx never goes through memory whole. The
    // same values, so the same bits, as backward's dx. x, r, dy and steMask must stay as they are
    // until endDeferredGradient; deferredGradientFinite tells whether every value written so far
    // was finite (with rounding on). With r == nullptr, steMask (if set) is the straight-through
    // mask of a quantization point on this layer's own output, applied to dy as it is read.
    void backwardDeferringInputGradient(const Tensor& x, const Tensor* r, const Tensor& dy, float cap,
                                        bool maskFromOutput = false, const std::uint8_t* steMask = nullptr);
    void gradientImages(std::size_t n0, std::size_t count, float* out) override;
    // forward without writing y: the statistics are taken (and the running ones updated) as
    // forward takes them, and y is left to outputPlanes, which writes planes of it (rounded to
    // bf16 where ctx.roundOutputBf16) as the layer that reads it needs them (OutputPlaneSource;
    // Add::forwardClamped): y never goes through memory whole. The same values, so the same bits,
    // as forward's y. x must stay as it is until the reader is done; backward then takes x as
    // after forward (it never reads y).
    // clamp: the output of forwardClamped(x, r, ctx, cap) instead, r = min(max(BN(x), 0), cap); its
    // backward (backwardClamped, backwardDeferringInputGradient) then takes an empty r and
    // recomputes the clamp's mask from x (only where recomputesClampMask(); ConfigError otherwise).
    void forwardDeferringOutput(const Tensor& x, const RunContext& ctx, float cap = 0.0f, bool clamp = false);
    // Whether the fused backward can recompute its clamp's mask from x without reading r (AVX-512
    // builds: BN(x) is recomputed with the forward's own instructions).
    static constexpr bool recomputesClampMask()
    {
#if defined(__AVX512F__)
        return true;
#else
        return false;
#endif
    }
    void outputPlanes(std::size_t p0, std::size_t count, float* out) const override;
    void outputPlaneRows(std::size_t p, float* out, std::size_t pitch) const override;
    void prefetchPlane(std::size_t p) const override; // the deferred input's plane p
    bool deferredGradientFinite() const;
    void endDeferredGradient();
    std::string describe() const override { return std::to_string(m_c) + " channels"; }

    std::size_t channels() const { return m_c; }
    float eps() const { return m_eps; }
    Param& gamma() { return m_gamma; }
    Param& beta() { return m_beta; }
    Tensor& runningMean() { return m_runMean; }
    Tensor& runningVar() { return m_runVar; }
    // When frozen, training forward uses (and does not update) the running statistics.
    void setFrozen(bool frozen) { m_frozen = frozen; }
    bool frozen() const { return m_frozen; }
    // Re-estimation of the running statistics (Nagel et al., "Overcoming Oscillations in
    // Quantization-Aware Training", ICML 2022; AIMET's reestimate_bn_stats): between
    // begin and end, every forward pass (training or evaluation, frozen or not) normalises with
    // its batch statistics, and the running mean and variance become the plain average over
    // those passes of the batch mean and the unbiased batch variance (PyTorch's momentum=None),
    // replacing what they held. gamma and beta are untouched. A span without a forward pass
    // leaves the running statistics as they were.
    void beginReestimation();
    void endReestimation();
    bool reestimating() const { return m_reestimating; }
    // InputGradientRounding: each backward rounds dx plane by plane as it writes it.

    // Batch statistics from the producer of x (Model::forward, when a Conv2d writes this layer's
    // input): after beginProducerStats(ctx, xShape) returns true, hand this layer to the producer as
    // its OutputImageSink; imagesWritten takes each image's per-channel sums while the image is in
    // cache. The next forward on an x of that shape then skips its own statistics pass when every
    // image arrived, else makes it as usual. The same sums, in the same order, so the same bits.
    // False (nothing to take) when the next forward normalises with running statistics. With
    // planeRanges, each plane's min and max are taken too, for an output sink that takes the
    // output's range before the pass (OutputImageSink::outputRange; LayerHooks may set one).
    bool beginProducerStats(const RunContext& ctx, const Shape& xShape, bool planeRanges = false);
    // The sink that takes this layer's output image by image as forward and forwardClamped write
    // it, while the image is in cache (QAT's observer range: LayerHooks::outputSink), or nullptr.
    // Model sets it for one call.
    void setOutputSink(OutputImageSink* sink) { m_outputSink = sink; }
    void imagesWritten(const Tensor& y, std::size_t n0, std::size_t count) override;

private:
    // y == nullptr: the statistics only (forwardDeferringOutput)
    void forwardImpl(const Tensor& x, Tensor* y, const RunContext& ctx, float cap, bool clamp);
    // Plane p of the deferred output as `rows` rows of n floats, row y at out + y pitch.
    void deferredOutput(std::size_t p, std::size_t rows, std::size_t n, float* out, std::size_t pitch) const;
    const Tensor* m_deferredOutputOf = nullptr; // forwardDeferringOutput's x
    float m_deferredCap = 0.0f;                 // and its clamp
    bool m_deferredClamp = false;
    // r == nullptr: plain BN backward; otherwise dy is masked by the clamp's rule on r.
    // defer: dx is not written; its pass is kept for gradientImages (backwardDeferringInputGradient).
    void backwardImpl(const Tensor& x, const Tensor* r, const Tensor& dy, Tensor& dx, bool needInputGrad, float cap,
                      bool maskFromOutput, const std::uint8_t* ste, bool defer);
    // The second pass of a backward: dx = alpha g + beta (x - mean) + gamma per channel.
    struct Deferred {
        const Tensor* x = nullptr;
        const float* r = nullptr;
        const float* dy = nullptr;
        const std::uint8_t* ste = nullptr;
        float cap = 0.0f;
        std::uint8_t kind = 0, from = 0; // the .cpp's Clamp and MaskFrom
        bool round = false;              // dx rounded to bf16 (setRoundInputGradientBf16)
        std::vector<float> alpha, beta, gamma;
    };
    // Writes images [n0, n0 + count) of d's dx at out; false when rounding met a non-finite value.
    bool inputGradImages(const Deferred& d, std::size_t n0, std::size_t count, float* out) const;
    Deferred m_deferred; // backwardDeferringInputGradient's pass, until endDeferredGradient
    std::atomic<bool> m_deferredFinite{true};

    std::size_t m_c;
    float m_eps, m_momentum;
    bool m_frozen = false;
    bool m_reestimating = false;
    std::size_t m_reestimated = 0; // forward passes averaged since beginReestimation
    Tensor m_savedMean, m_savedVar; // the statistics before it (restored when no pass ran)
    Param m_gamma, m_beta;
    Tensor m_runMean, m_runVar;
    // The last forward's per-channel mean and 1/sqrt(var + eps) (batch or running statistics):
    // backward recomputes xhat from its input with them.
    std::vector<float> m_mean, m_invStd;
    // Whether the last forward normalised with batch statistics. Backward then differentiates
    // through them; after a forward on running statistics (evaluation, frozen) the statistics are
    // constants and dx = dy gamma / sqrt(running_var + eps), as PyTorch's eval-mode backward.
    bool m_forwardBatchStats = false;
    // Whether this layer's next forward computes batch statistics (training and not frozen, or
    // re-estimating).
    bool batchStatistics(const RunContext& ctx) const { return (ctx.training && !m_frozen) || m_reestimating; }
    // The forward's per-image sums of images [n0, n0 + count) of x into m_planeStats (and, in the
    // AVX-512 build with m_tracksRange, each plane's least and greatest value into m_planeRange).
    void imageStats(const float* x, std::size_t n0, std::size_t count, std::size_t HW);
    bool m_tracksRange = false;       // imageStats fills m_planeRange (beginProducerStats, an output sink)
    std::vector<double> m_planeStats; // per (image, channel) partial sums of the current pass
    std::vector<float> m_planeRange;  // per (image, channel) min and max of the current pass
    // The finite range [lo, hi] of this forward's output, from the planes' ranges through each
    // channel's affine map (monotone: the extremes of the output are the images of x's) and the
    // clamp; false when some plane or output is not finite (the sink then takes imagesWritten).
    bool outputRangeFromInput(std::size_t N, float cap, bool clamp, float& lo, float& hi) const;
    Shape m_producerShape;                        // beginProducerStats' x shape (empty: none pending)
    std::atomic<std::size_t> m_producerImages{0}; // images whose sums imagesWritten took
    OutputImageSink* m_outputSink = nullptr; // setOutputSink
    bool m_outputRoundedBf16 = false; // the last forward rounded its output (RunContext::roundOutputBf16)
};

} // namespace quantscope
