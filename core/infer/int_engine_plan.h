// IntEngine's plan (internal to core/infer): what build() makes of an ExportedModel and runChunk()
// executes. Activations keep the model's numbering (0 = input, i+1 = output of stored layer i);
// each op reads activations and writes one. The plan has two stages: the image stage runs one
// image at a time (convolutions, pools, Adds on NHWC uint8), the batch stage (from the first
// dense layer on) runs the chunk's images together as rows, so a dense layer is one GEMM.
// Activations live in buffers; a buffer gets a slot (a per-thread byte array) for the stretch of
// ops between its writer and its last reader, and slots are reused after that.
#pragma once

#include "nn/conv_geometry.h"
#include "nn/pool_geometry.h"
#include "infer/int_engine.h"
#include "infer/int_gemm.h"
#include "infer/int_kernels.h"

#include <tbb/enumerable_thread_specific.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <optional>
#include <vector>

namespace quantscope {

// Spare bytes after every buffer, for word-wise copies and vector loads that run past the end.
constexpr std::size_t kSlack = 64;
// n rounded up to a multiple of 4 (the VNNI kernels read K and rows in groups of 4 bytes).
inline std::size_t roundUp4(std::size_t n) { return (n + 3) / 4 * 4; }

// An activation in the engine's uint8 domain: internal = q + offset (128 for signed formats).
struct Domain {
    ActivationQuant aq;
    std::int32_t offset = 0;
    std::int32_t zp() const { return aq.zeroPoint + offset; }
    std::int32_t lo() const { return aq.qmin + offset; }
    std::int32_t hi() const { return aq.qmax + offset; }
};

// The input's quantization, QuantSim's arithmetic (quantize.h): nearbyint(x * (1 / scale)) + zp, clamped.
inline std::uint8_t quantizeInput(float x, const Domain& d)
{
    const float inv = 1.0f / d.aq.scale;
    float q = std::nearbyint(x * inv) + static_cast<float>(d.aq.zeroPoint);
    if (std::isnan(q)) q = static_cast<float>(d.aq.zeroPoint);
    q = std::clamp(q, static_cast<float>(d.aq.qmin), static_cast<float>(d.aq.qmax));
    return static_cast<std::uint8_t>(static_cast<std::int32_t>(q) + d.offset);
}

struct ActInfo {
    bool defined = false;
    int root = -1;  // the activation whose bytes these are (itself unless Flatten/Dropout)
    bool batch = false; // written in the batch stage
    Domain d;
    std::size_t c = 0, h = 0, w = 0; // spatial (NHWC); flat: c = width, h = w = 0
    bool flat = false;
    bool floats = false; // float32 values (the logits of a dense layer a plan keeps FP32), 4 bytes each
    // A flat activation flattened from (fc, fh, fw) NHWC: its order is not the model's NCHW one.
    bool permuted = false;
    std::size_t fc = 0, fh = 0, fw = 0;
    int imgBuffer = -1, batchBuffer = -1; // roots only; -1: not held in that stage
    std::size_t numel() const { return flat ? c : c * h * w; }
};

// Bytes per image (image stage) or per row (batch stage, rows of `bytes`); slot from allocation.
struct Buffer {
    bool batch = false;
    std::size_t bytes = 0;
    int slot = -1;
};

// FloatLinear: a dense layer a precision plan keeps FP32, between integer ones: it dequantizes its
// input (the DQ of the boundary), computes in float, and quantizes its output (the Q) or, as the
// model's last layer, writes float logits.
// FloatConv: the same for a convolution (any groups) a plan keeps FP32; its output is always
// quantized again (a feature map is never the model's output).
// Lut: a pointwise activation (Sigmoid, GELU, ...) from one 8-bit grid to another, as 256 output
// bytes indexed by the input byte (built once from the float formula; TFLite's int8 logistic).
// ChannelLut: PReLU with one slope per channel, one such table per channel (tables, cout x 256;
// NHWC: byte j is channel j % cout; flat features: feature j, or col[j] when flattened from a map).
// Mul: the product of two activations (equal shapes, or a map times a per-channel gate: in1 is
// then the gate of op.cout channels). Concat: its inputs (ins) joined along the channels.
// Gather: output byte j of an image (a row) is input byte col[j] (ChannelShuffle, Slice: channels
// moved; Pad: pixels moved), the grid kept; col[j] = kGatherFill writes op.fill, the input grid's
// zero point (Pad's zeros).
// FloatNorm: a GroupNorm (nn/groupnorm.h) or a LayerNorm2d (nn/layernorm2d.h) between two grids:
// the image's (row's) bytes dequantized into float in the model's (C, plane) order (col[j]: the
// NCHW index of byte j), groupNormImage or layerNorm2dImage, the layer's own per-image formula, and the output quantized with QuantSim's arithmetic, so the
// bytes are the fake-quant simulation's. The one layer the engine computes in float: its
// statistics are the image's own, known only at run time.
// ChannelMax: each pixel's largest byte over its cin channels (elems pixels), the grid kept.
enum class OpKind { Conv, GroupConv, Depthwise, MaxPool, AvgPool, Add, Linear, FloatLinear, FloatConv, Lut, ChannelLut, Mul, Concat, Gather, FloatNorm, ChannelMax };

inline constexpr std::uint32_t kGatherFill = 0xFFFFFFFFu;

struct Op {
    OpKind kind = OpKind::Conv;
    std::string name;     // the stored layer whose output (quantization point) this op writes
    int in0 = -1, in1 = -1, out = -1;
    bool batch = false;   // batch stage
    bool traced = true;   // writes a quantization point (max-pooling does not)
    // Conv / GroupConv geometry (NHWC); padded input hp x wp. MaxPool and AvgPool use pad too (MaxPool
    // skips the border; AvgPool reads a copy bordered with padValue, the byte of 0.0)
    std::size_t cin = 0, hin = 0, win = 0, cout = 0, hout = 0, wout = 0, k = 0, stride = 1, pad = 0, hp = 0, wp = 0;
    // GroupConv and FloatConv: the window (any geometry); hp = hin + top + bottom, wp = win + left +
    // right. A convolution whose window is not square runs as a GroupConv (groups 1 and depthwise
    // included); Conv and Depthwise take square windows (k, stride, pad) only.
    ConvGeometry geo;
    // MaxPool (and AvgPool) whose window is not square: the whole window; k, stride and pad unused.
    std::optional<PoolGeometry> poolGeo;
    // AvgPool of such a window: the requantizing multiplier s_in / (d s_out) of each divisor d (index d).
    std::vector<FixedPointMultiplier> poolMults;
    std::uint8_t padValue = 0;
    bool im2col = false;
    std::size_t K = 0;                 // GEMM depth (per group for GroupConv)
    std::vector<std::uint32_t> rowOff; // A row offsets (conv: per output pixel; linear: per chunk row)
    PackedGemm gemm;                   // Conv, Linear
    std::vector<PackedGemm> groupGemms; // GroupConv: one per group
    std::size_t groups = 1, cig = 0, cog = 0;
    PackedDepthwise dw;
    PoolParams pool; // AvgPool (also GlobalAvgPool2d and the rescale of a standalone ReLU)
    AddParams add;
    std::size_t inF = 0, outF = 0; // Linear
    // FloatLinear: weights (outF x inF, columns in the engine's order of its input), bias, the
    // input and output domains and the output clamp (internal bytes; a fused ReLU).
    // FloatConv: fw is (groups, kh, kw, cig, cog), the output channel fastest; fb has cout entries.
    // FloatNorm: fw, fb the norm's weight and bias (C each, or empty), cout = C, groups (0 for a
    // LayerNorm2d: per pixel), eps.
    std::vector<float> fw, fb;
    float eps = 0.0f;
    std::vector<std::uint32_t> col; // input byte of feature j (ChannelLut); of output byte j (Gather)
    std::uint8_t fill = 0;          // Gather: the byte col[j] = kGatherFill writes
    Domain inD, outD;
    std::int32_t lo = 0, hi = 255;
    bool floatOut = false;
    std::size_t elems = 0;         // Add, Lut, Mul: values per image (per row in the batch stage)
    std::array<std::uint8_t, 256> table{}; // Lut: output byte of each input byte
    std::vector<std::uint8_t> tables;      // ChannelLut: cout tables of 256 bytes
    MulParams mul;
    bool gated = false;            // Mul, Add: in1 is a [C, 1, 1] gate of cout channels
    ConcatParams cat;
    std::vector<int> ins;          // Concat: every input (in0 and in1 are the first two)

    // Every activation the op reads.
    std::vector<int> inputs() const
    {
        if (!ins.empty()) return ins;
        std::vector<int> v{in0};
        if (in1 >= 0) v.push_back(in1);
        return v;
    }
};

// table[b] = q_out(f(dq_in(b))) for every byte b of the input's grid, with QuantSim's fake-quant
// arithmetic and the layer's own formula (int_engine_tables.cpp): a pointwise activation's
// (pointwiseApply) and PReLU's for one slope a (preluApply).
std::array<std::uint8_t, 256> activationTable(const StoredLayer& l, const Domain& in, const Domain& out);
std::array<std::uint8_t, 256> preluTable(float a, const Domain& in, const Domain& out);

struct IntEngine::Impl {
    struct Scratch {
        std::vector<std::vector<std::uint8_t>> slots, batchSlots;
        std::vector<std::uint8_t> pad, cols, dwPad;
        std::vector<std::uint8_t> poolPad; // a padded AvgPool2d's input, (H + 2p) x (W + 2p) x C
        std::vector<float> normIn, normOut; // FloatNorm: one image's values, (C, plane)
        GemmScratch g;
    };

    EngineOptions opt;
    std::size_t C = 1, H = 0, W = 0, classes = 0;
    std::vector<std::uint8_t> lut; // input byte v of channel c -> quantized normalised input, at c * 256 + v
    std::vector<ActInfo> acts;
    std::vector<Buffer> buffers;
    std::vector<std::size_t> slotBytes, batchSlotBytes; // per image / per chunk
    std::vector<Op> ops;            // image-stage ops, then batch-stage ops
    std::size_t firstBatchOp = 0;
    std::vector<int> crossing;      // activations copied from the image stage into the batch stage
    int outputAct = -1;
    std::vector<std::uint32_t> outputIndex; // class j -> byte of the output row
    bool logSoftmax = false, softmax = false; // the model's head, in float on the dequantized scores
    std::size_t maxPad = 0, maxCols = 0;
    std::unique_ptr<tbb::task_arena> arena;
    mutable tbb::enumerable_thread_specific<Scratch> scratch;

    void build(const ExportedModel& m);
    using Fill = std::function<void(std::size_t image, std::uint8_t* nhwc)>;
    using Tap = std::function<void(const Op* op, int act, const std::uint8_t* data)>;
    void runChunk(std::size_t b, std::size_t e, const Fill& fill, float* outputs, std::int32_t* preds, const Tap* tap) const;

private:
    class Builder; // build()'s walk over the stored layers (int_engine_build.h)
    void planBuffers();
    void runImageOp(const Op& op, Scratch& s) const;
    void runBatchOp(const Op& op, Scratch& s, std::size_t n) const;
    std::uint8_t* imagePtr(Scratch& s, int act) const;
    std::uint8_t* batchPtr(Scratch& s, int act) const;
};

} // namespace quantscope
