#include "infer/int_engine.h"

#include "infer/int_gemm.h"
#include "nn/activations.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <tbb/enumerable_thread_specific.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace quantscope {

namespace {

// An activation in the engine's uint8 domain: internal = q + offset (128 for signed formats).
struct Domain {
    ActivationQuant aq;
    std::int32_t offset = 0;
    std::int32_t zp() const { return aq.zeroPoint + offset; }
    std::int32_t lo() const { return aq.qmin + offset; }
    std::int32_t hi() const { return aq.qmax + offset; }
};

Domain domainOf(const ActivationQuant& a, const std::string& where)
{
    if (a.bits > 8) throw ConfigError(where + ": the integer engine runs activations of at most 8 bits, not " + std::to_string(a.bits));
    Domain d;
    d.aq = a;
    d.offset = a.isSigned ? 128 : 0;
    if (d.lo() < 0 || d.hi() > 255) throw ConfigError(where + ": activation range does not fit 8 bits");
    return d;
}

std::uint8_t quantizeInput(float x, const Domain& d)
{
    // QuantSim's arithmetic (quantize.h): nearbyint(x * (1 / scale)) + zp, clamped.
    const float inv = 1.0f / d.aq.scale;
    float q = std::nearbyint(x * inv) + static_cast<float>(d.aq.zeroPoint);
    if (std::isnan(q)) q = static_cast<float>(d.aq.zeroPoint);
    q = std::clamp(q, static_cast<float>(d.aq.qmin), static_cast<float>(d.aq.qmax));
    return static_cast<std::uint8_t>(static_cast<std::int32_t>(q) + d.offset);
}

// Spare bytes after every per-image buffer, for word-wise copies that run past a short segment.
constexpr std::size_t kSlack = 64;

} // namespace

struct IntEngine::Impl {
    enum class Kind { Conv, Pool, Linear };
    struct Op {
        Kind kind;
        std::string name;
        std::size_t cin = 0, hin = 0, win = 0, cout = 0, hout = 0, wout = 0, k = 0, stride = 1, pad = 0;
        std::size_t hp = 0, wp = 0; // padded input
        bool im2col = false;
        std::size_t K = 0;
        std::vector<std::uint32_t> rowOff;
        PackedGemm gemm;
        std::uint8_t padValue = 0;
        std::size_t inF = 0, outF = 0;
        Domain out;
        bool traced = true; // a quantization point (pools are not)
    };
    struct Scratch {
        std::vector<std::uint8_t> a, b, pad, cols, linIn, linOut;
        std::vector<std::uint32_t> linRows;
        GemmScratch g;
    };

    EngineOptions opt;
    std::size_t C = 1, H = 0, W = 0, classes = 0;
    float mean = 0, stddev = 1;
    Domain input;
    std::uint8_t lut[256];
    std::vector<Op> spatial, dense;
    std::size_t spatialOutBytes = 0; // bytes per image entering the dense stage (or the output)
    std::size_t maxSpatial = 0, maxPad = 0, maxCols = 0, maxDense = 0;
    std::vector<std::uint32_t> outputPerm; // NHWC -> NCHW order of a spatial output (no dense stage)
    Domain output;
    bool logSoftmax = false;
    std::unique_ptr<tbb::task_arena> arena;
    mutable tbb::enumerable_thread_specific<Scratch> scratch;

    void build(const ExportedModel& m);
    PackedGemm packLayer(const StoredLayer& l, const StoredTensor& w, const StoredTensor& bias, const std::vector<std::int8_t>& wk,
                         std::size_t N, std::size_t K, std::size_t Kreal, const Domain& in, const Domain& out, bool relu) const;
    using Fill = std::function<void(std::size_t image, std::uint8_t* nhwc)>;
    using Tap = std::function<void(const Op* op, const std::uint8_t* data)>;
    void runChunk(std::size_t b, std::size_t e, const Fill& fill, float* outputs, std::int32_t* preds, const Tap* tap) const;
};

PackedGemm IntEngine::Impl::packLayer(const StoredLayer& l, const StoredTensor& w, const StoredTensor& bias,
                                      const std::vector<std::int8_t>& wk, std::size_t N, std::size_t K, std::size_t Kreal,
                                      const Domain& in, const Domain& out, bool relu) const
{
    const std::string id = "layer '" + l.name + "'";
    std::vector<std::int32_t> b(N);
    std::vector<FixedPointMultiplier> f(N);
    for (std::size_t n = 0; n < N; ++n) {
        const double sw = w.scales[w.layout == ScaleLayout::Tensor ? 0 : n];
        const double accScale = static_cast<double>(in.aq.scale) * sw;
        // Bias in accumulator units: stored int32 at scale s_in * s_w (Jacob et al.); rescaled if
        // it was stored at another scale, rounded once if stored as float.
        double breal;
        std::int64_t stored = 0; // an int32 bias relative to its zero point
        if (bias.encoding == TensorEncoding::Int) {
            const std::size_t slot = bias.layout == ScaleLayout::Tensor ? 0 : n;
            stored = static_cast<std::int64_t>(bias.q[n]) - bias.zeroPoints[slot];
            breal = static_cast<double>(stored) * bias.scales[slot];
        } else {
            breal = bias.values[n];
        }
        double bq = std::nearbyint(breal / accScale);
        if (bias.encoding == TensorEncoding::Int && bias.bits == 32) {
            const std::size_t slot = bias.layout == ScaleLayout::Tensor ? 0 : n;
            if (static_cast<float>(accScale) == bias.scales[slot]) bq = static_cast<double>(stored);
        }
        // |acc| <= |bias| + K * 255 * 128 must stay inside int32.
        if (!(std::abs(bq) < 2147483648.0)) throw ConfigError(id + ": the bias does not fit the int32 accumulator");
        std::int64_t sumW = 0;
        for (std::size_t k = 0; k < K; ++k) sumW += wk[n * K + k];
        const std::int64_t eff = static_cast<std::int64_t>(bq) - static_cast<std::int64_t>(in.zp()) * sumW;
        if (std::llabs(eff) + static_cast<std::int64_t>(Kreal) * 255 * 128 >= (std::int64_t{1} << 31))
            throw ConfigError(id + ": the int32 accumulator could overflow (bias or K too large)");
        b[n] = static_cast<std::int32_t>(eff);
        f[n] = fixedPointMultiplier(accScale / out.aq.scale);
    }
    const std::int32_t lo = relu ? std::max(out.lo(), out.zp()) : out.lo();
    return packGemm(opt.isa, wk.data(), N, K, b, f, out.zp(), lo, out.hi());
}

void IntEngine::Impl::build(const ExportedModel& m)
{
    if (!m.quantized || !m.inputQuant) throw ConfigError("the integer engine runs integer models; this one is FP32");
    m.validate("model '" + m.modelName + "'");
    C = m.channels;
    H = m.height;
    W = m.width;
    classes = m.classes;
    mean = m.mean;
    stddev = m.stddev;
    input = domainOf(*m.inputQuant, "input");
    for (int v = 0; v < 256; ++v) lut[v] = quantizeInput((static_cast<float>(v) / 255.0f - mean) / stddev, input);

    Domain cur = input;
    std::size_t c = C, h = H, w = W, flat = 0; // flat > 0 once flattened
    bool flattenedSpatial = false;             // flattened from (c > 1, h, w): NHWC order differs from NCHW
    std::size_t fc = 0, fh = 0, fw = 0;
    maxSpatial = C * H * W;
    const auto& L = m.layers;
    for (std::size_t i = 0; i < L.size(); ++i) {
        const StoredLayer& l = L[i];
        const std::string id = std::string(storedKindName(l.kind)) + " '" + l.name + "'";
        auto quantAfter = [&](std::size_t& last) -> std::pair<Domain, bool> {
            const bool relu = i + 1 < L.size() && L[i + 1].kind == LayerKind::ReLU;
            last = relu ? i + 1 : i;
            if (relu && l.outputQuant) throw ConfigError(id + ": a quantization point between a layer and its ReLU is not supported");
            if (!L[last].outputQuant) throw ConfigError(id + ": its output is not quantized, the integer engine needs every layer output as integers");
            return {domainOf(*L[last].outputQuant, L[last].name), relu};
        };
        auto checkWeights = [&](const StoredTensor& t) {
            if (t.encoding != TensorEncoding::Int || !t.isSigned || t.bits > 8)
                throw ConfigError(id + ": the integer engine runs signed weights of at most 8 bits (this model has " +
                                  (t.encoding == TensorEncoding::Int ? std::to_string(t.bits) + "-bit " + (t.isSigned ? "signed" : "unsigned") : std::string("float")) + " weights)");
            if (t.layout == ScaleLayout::Group)
                throw ConfigError(id + ": group-wise weight scales need a rescale per group; the integer engine runs per-tensor or per-channel scales");
            for (std::int32_t z : t.zeroPoints)
                if (z != 0) throw ConfigError(id + ": the integer engine runs symmetric weights (zero point 0)");
        };
        switch (l.kind) {
        case LayerKind::Conv2d: {
            if (flat) throw ConfigError(id + " after Flatten");
            const StoredTensor& wt = *l.tensor("weight");
            checkWeights(wt);
            std::size_t last;
            const auto [out, relu] = quantAfter(last);
            Op op;
            op.kind = Kind::Conv;
            op.name = L[last].name;
            op.cin = c, op.hin = h, op.win = w, op.cout = l.outChannels, op.k = l.kernel, op.stride = l.stride, op.pad = l.padding;
            op.hp = h + 2 * op.pad, op.wp = w + 2 * op.pad;
            op.hout = (op.hp - op.k) / op.stride + 1, op.wout = (op.wp - op.k) / op.stride + 1;
            op.padValue = static_cast<std::uint8_t>(cur.zp());
            const std::size_t segLen = op.k * c;
            op.im2col = segLen % 4 != 0;
            const std::size_t Kreal = op.k * op.k * c;
            op.K = op.im2col ? (Kreal + 3) / 4 * 4 : Kreal;
            // weights in A's order: (ky, kx, ci), from (co, ci, ky, kx)
            std::vector<std::int8_t> wk(op.cout * op.K, 0);
            for (std::size_t co = 0; co < op.cout; ++co)
                for (std::size_t ci = 0; ci < c; ++ci)
                    for (std::size_t ky = 0; ky < op.k; ++ky)
                        for (std::size_t kx = 0; kx < op.k; ++kx)
                            wk[co * op.K + (ky * op.k + kx) * c + ci] =
                                static_cast<std::int8_t>(wt.q[((co * c + ci) * op.k + ky) * op.k + kx]);
            op.gemm = packLayer(l, wt, *l.tensor("bias"), wk, op.cout, op.K, Kreal, cur, out, relu);
            const std::size_t P = op.hout * op.wout;
            op.rowOff.resize(P);
            for (std::size_t oy = 0; oy < op.hout; ++oy)
                for (std::size_t ox = 0; ox < op.wout; ++ox)
                    op.rowOff[oy * op.wout + ox] = static_cast<std::uint32_t>(
                        op.im2col ? (oy * op.wout + ox) * op.K : ((oy * op.stride) * op.wp + ox * op.stride) * c);
            if (op.pad) maxPad = std::max(maxPad, op.hp * op.wp * c);
            if (op.im2col) maxCols = std::max(maxCols, P * op.K);
            op.out = out;
            cur = out;
            c = op.cout, h = op.hout, w = op.wout;
            maxSpatial = std::max(maxSpatial, c * h * w);
            spatial.push_back(std::move(op));
            i = last;
            break;
        }
        case LayerKind::Linear: {
            const StoredTensor& wt = *l.tensor("weight");
            checkWeights(wt);
            if (!flat) throw ConfigError(id + " needs a Flatten before it");
            std::size_t last;
            const auto [out, relu] = quantAfter(last);
            Op op;
            op.kind = Kind::Linear;
            op.name = L[last].name;
            op.inF = l.inFeatures, op.outF = l.outFeatures;
            op.K = (op.inF + 3) / 4 * 4;
            std::vector<std::int8_t> wk(op.outF * op.K, 0);
            for (std::size_t n = 0; n < op.outF; ++n)
                for (std::size_t j = 0; j < op.inF; ++j) {
                    // The stored columns are in NCHW flatten order; the engine's activations are NHWC.
                    std::size_t col = j;
                    if (flattenedSpatial && dense.empty()) {
                        const std::size_t ci = j / (fh * fw), yx = j % (fh * fw);
                        col = yx * fc + ci;
                    }
                    wk[n * op.K + col] = static_cast<std::int8_t>(wt.q[n * op.inF + j]);
                }
            op.gemm = packLayer(l, wt, *l.tensor("bias"), wk, op.outF, op.K, op.inF, cur, out, relu);
            op.rowOff.resize(opt.chunk);
            for (std::size_t r = 0; r < opt.chunk; ++r) op.rowOff[r] = static_cast<std::uint32_t>(r * op.K);
            op.out = out;
            cur = out;
            flat = op.outF;
            maxDense = std::max(maxDense, std::max(op.K, op.outF));
            dense.push_back(std::move(op));
            i = last;
            break;
        }
        case LayerKind::MaxPool2d: {
            if (flat) throw ConfigError(id + " after Flatten");
            Op op;
            op.kind = Kind::Pool;
            op.name = l.name;
            op.traced = false;
            op.cin = op.cout = c, op.hin = h, op.win = w, op.k = l.kernel, op.stride = l.stride;
            op.hout = (h - op.k) / op.stride + 1, op.wout = (w - op.k) / op.stride + 1;
            op.out = cur;
            h = op.hout, w = op.wout;
            spatial.push_back(std::move(op));
            break;
        }
        case LayerKind::Flatten:
            if (!flat) {
                flat = c * h * w;
                flattenedSpatial = c > 1 && h * w > 1;
                fc = c, fh = h, fw = w;
            }
            break;
        case LayerKind::Dropout: break; // identity at inference
        case LayerKind::LogSoftmax:
            if (i + 1 != L.size()) throw ConfigError(id + ": LogSoftmax must be the last layer");
            logSoftmax = true;
            break;
        case LayerKind::ReLU: throw ConfigError(id + ": a ReLU that does not follow a convolution or dense layer is not supported");
        case LayerKind::BatchNorm2d: throw ConfigError(id + ": BatchNorm must be folded into its convolution");
        }
    }
    if (!flat) throw ConfigError("the model does not flatten to class scores");
    spatialOutBytes = c * h * w; // spatial ops alone change c, h, w
    if (dense.empty() && flattenedSpatial) {
        outputPerm.resize(flat);
        for (std::size_t j = 0; j < flat; ++j) outputPerm[j] = static_cast<std::uint32_t>((j % (fh * fw)) * fc + j / (fh * fw));
    }
    output = cur;
    if (flat != classes) throw ConfigError("the model produces " + std::to_string(flat) + " values, not " + std::to_string(classes));
}

void IntEngine::Impl::runChunk(std::size_t b, std::size_t e, const Fill& fill, float* outputs, std::int32_t* preds,
                               const Tap* tap) const
{
    Scratch& s = scratch.local();
    const std::size_t n = e - b;
    s.a.resize(maxSpatial + kSlack);
    s.b.resize(maxSpatial + kSlack);
    s.pad.resize(maxPad + kSlack);
    s.cols.resize(maxCols + kSlack);
    const std::size_t denseIn = dense.empty() ? 0 : dense.front().K;
    s.linIn.resize(n * std::max(maxDense, spatialOutBytes));
    s.linOut.resize(n * std::max(maxDense, spatialOutBytes));

    for (std::size_t i = 0; i < n; ++i) {
        std::uint8_t* cur = s.a.data();
        std::uint8_t* nxt = s.b.data();
        fill(b + i, cur);
        if (tap) (*tap)(nullptr, cur);
        for (const Op& op : spatial) {
            if (op.kind == Kind::Conv) {
                const std::uint8_t* src = cur;
                if (op.pad) {
                    std::memset(s.pad.data(), op.padValue, op.hp * op.wp * op.cin);
                    for (std::size_t y = 0; y < op.hin; ++y)
                        std::memcpy(s.pad.data() + ((y + op.pad) * op.wp + op.pad) * op.cin, cur + y * op.win * op.cin, op.win * op.cin);
                    src = s.pad.data();
                }
                GemmA a;
                a.M = op.hout * op.wout;
                a.rowOffset = op.rowOff.data();
                if (op.im2col) {
                    const std::size_t seg = op.k * op.cin;
                    // im2col rows of K bytes: kernel rows of k * Cin bytes, zero padding to K.
                    // The segments are a few bytes: copied in 4-byte words, which may read and
                    // write up to 3 bytes past a segment (the buffers have kSlack spare bytes);
                    // each later segment and the final zeroing overwrite what spilled.
                    const std::size_t words = (seg + 3) / 4;
                    for (std::size_t oy = 0; oy < op.hout; ++oy)
                        for (std::size_t ox = 0; ox < op.wout; ++ox) {
                            std::uint8_t* row = s.cols.data() + (oy * op.wout + ox) * op.K;
                            for (std::size_t ky = 0; ky < op.k; ++ky) {
                                const std::uint8_t* from = src + ((oy * op.stride + ky) * op.wp + ox * op.stride) * op.cin;
                                for (std::size_t t = 0; t < words; ++t) {
                                    std::uint32_t v;
                                    std::memcpy(&v, from + 4 * t, 4);
                                    std::memcpy(row + ky * seg + 4 * t, &v, 4);
                                }
                            }
                            for (std::size_t t = op.k * seg; t < op.K; ++t) row[t] = 0;
                        }
                    a.base = s.cols.data();
                    a.extent = a.M * op.K;
                    a.nseg = 1;
                    a.segLen = op.K;
                    a.segStride = 0;
                } else {
                    a.base = src;
                    a.extent = op.hp * op.wp * op.cin;
                    a.nseg = op.k;
                    a.segLen = op.k * op.cin;
                    a.segStride = op.wp * op.cin;
                }
                gemmRequant(op.gemm, a, nxt, op.cout, s.g);
            } else {
                // max over the window, NHWC: // y[oy][ox][c] = max x[oy*s+dy][ox*s+dx][c]
                const std::size_t C = op.cin;
                for (std::size_t oy = 0; oy < op.hout; ++oy)
                    for (std::size_t ox = 0; ox < op.wout; ++ox) {
                        std::uint8_t* d = nxt + (oy * op.wout + ox) * C;
                        std::memcpy(d, cur + ((oy * op.stride) * op.win + ox * op.stride) * C, C);
                        for (std::size_t dy = 0; dy < op.k; ++dy)
                            for (std::size_t dx = 0; dx < op.k; ++dx) {
                                const std::uint8_t* p = cur + ((oy * op.stride + dy) * op.win + ox * op.stride + dx) * C;
                                for (std::size_t ch = 0; ch < C; ++ch) d[ch] = std::max(d[ch], p[ch]);
                            }
                    }
            }
            std::swap(cur, nxt);
            if (tap && op.traced) (*tap)(&op, cur);
        }
        const std::size_t rowBytes = dense.empty() ? spatialOutBytes : denseIn;
        std::memcpy(s.linIn.data() + i * rowBytes, cur, spatialOutBytes);
        std::memset(s.linIn.data() + i * rowBytes + spatialOutBytes, 0, rowBytes - spatialOutBytes); // K padding
    }

    std::uint8_t* in = s.linIn.data();
    std::uint8_t* out = s.linOut.data();
    std::size_t width = dense.empty() ? spatialOutBytes : denseIn;
    for (std::size_t d = 0; d < dense.size(); ++d) {
        const Op& op = dense[d];
        const std::size_t outStride = d + 1 < dense.size() ? dense[d + 1].K : op.outF;
        if (outStride > op.outF) std::memset(out, 0, n * outStride); // K padding of the next layer
        GemmA a;
        a.base = in;
        a.extent = n * op.K;
        a.rowOffset = op.rowOff.data();
        a.M = n;
        a.nseg = 1;
        a.segLen = op.K;
        gemmRequant(op.gemm, a, out, outStride, s.g);
        if (tap) (*tap)(&op, out);
        std::swap(in, out);
        width = outStride;
    }

    // Edges: dequantize the class scores; log-softmax; argmax.
    std::vector<float> row(classes);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* q = in + i * width;
        for (std::size_t j = 0; j < classes; ++j) {
            const std::uint8_t v = outputPerm.empty() ? q[j] : q[outputPerm[j]];
            row[j] = static_cast<float>(static_cast<std::int32_t>(v) - output.zp()) * output.aq.scale;
        }
        if (logSoftmax) logSoftmaxRow(row.data(), row.data(), classes);
        if (outputs) std::memcpy(outputs + (b + i) * classes, row.data(), classes * sizeof(float));
        if (preds) preds[b + i] = static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    }
}

IntEngine::IntEngine(const ExportedModel& model, const EngineOptions& opt) : m(std::make_unique<Impl>())
{
    m->opt = opt;
    if (m->opt.chunk == 0) m->opt.chunk = 1;
    if (m->opt.threads == 0) m->opt.threads = 1;
    if (!isaSupported(opt.isa)) throw ConfigError(std::string("this CPU cannot run the ") + isaName(opt.isa) + " kernels");
    m->build(model);
    m->arena = std::make_unique<tbb::task_arena>(static_cast<int>(m->opt.threads));
}

IntEngine::~IntEngine() = default;

std::string IntEngine::unsupportedReason(const ExportedModel& model)
{
    try {
        EngineOptions o;
        o.isa = Isa::Scalar;
        o.threads = 1;
        IntEngine e(model, o);
    } catch (const Error& e) {
        return e.what();
    }
    return {};
}

Isa IntEngine::isa() const { return m->opt.isa; }
std::size_t IntEngine::classes() const { return m->classes; }
std::size_t IntEngine::imageBytes() const { return m->C * m->H * m->W; }

void IntEngine::run(const std::uint8_t* pixels, std::size_t n, float* outputs, std::int32_t* predictions) const
{
    const std::size_t C = m->C, HW = m->H * m->W;
    const Impl::Fill fill = [&](std::size_t img, std::uint8_t* dst) {
        const std::uint8_t* src = pixels + img * C * HW;
        if (C == 1) {
            for (std::size_t j = 0; j < HW; ++j) dst[j] = m->lut[src[j]];
        } else {
            for (std::size_t c = 0; c < C; ++c)
                for (std::size_t j = 0; j < HW; ++j) dst[j * C + c] = m->lut[src[c * HW + j]];
        }
    };
    m->arena->execute([&] {
        parallelChunks(n, m->opt.chunk, [&](std::size_t b, std::size_t e) { m->runChunk(b, e, fill, outputs, predictions, nullptr); });
    });
}

void IntEngine::runFloat(const Tensor& x, Tensor& out, std::int32_t* predictions) const
{
    const std::size_t C = m->C, HW = m->H * m->W;
    if (x.rank() != 4 || x.dim(1) != C || x.dim(2) != m->H || x.dim(3) != m->W)
        throw ConfigError("engine input " + shapeString(x.shape()) + " does not match the model's (N, " + std::to_string(C) + ", " +
                          std::to_string(m->H) + ", " + std::to_string(m->W) + ")");
    const std::size_t n = x.dim(0);
    out.resize({n, m->classes});
    const Impl::Fill fill = [&](std::size_t img, std::uint8_t* dst) {
        const float* src = x.data() + img * C * HW;
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t j = 0; j < HW; ++j) dst[j * C + c] = quantizeInput(src[c * HW + j], m->input);
    };
    m->arena->execute([&] {
        parallelChunks(n, m->opt.chunk, [&](std::size_t b, std::size_t e) { m->runChunk(b, e, fill, out.data(), predictions, nullptr); });
    });
}

std::vector<PointTrace> IntEngine::trace(const std::uint8_t* pixels) const
{
    std::vector<PointTrace> t;
    const Impl::Fill fill = [&](std::size_t, std::uint8_t* dst) {
        const std::size_t C = m->C, HW = m->H * m->W;
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t j = 0; j < HW; ++j) dst[j * C + c] = m->lut[pixels[c * HW + j]];
    };
    const Impl::Tap tap = [&](const Impl::Op* op, const std::uint8_t* data) {
        PointTrace p;
        const Domain& d = op ? op->out : m->input;
        p.layer = op ? op->name : "input";
        p.quant = d.aq;
        std::size_t C, H, W;
        if (!op) {
            C = m->C, H = m->H, W = m->W;
        } else if (op->kind == Impl::Kind::Linear) {
            C = op->outF, H = W = 1;
        } else {
            C = op->cout, H = op->hout, W = op->wout;
        }
        p.shape = op && op->kind == Impl::Kind::Linear ? Shape{C} : Shape{C, H, W};
        p.q.resize(C * H * W);
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t j = 0; j < H * W; ++j) p.q[c * H * W + j] = static_cast<std::int32_t>(data[j * C + c]) - d.offset;
        t.push_back(std::move(p));
    };
    m->runChunk(0, 1, fill, nullptr, nullptr, &tap);
    return t;
}

} // namespace quantscope
