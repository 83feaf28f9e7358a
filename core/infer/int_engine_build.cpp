// IntEngine::Impl::build: turns an integer ExportedModel (a DAG of stored layers) into the plan of
// int_engine_plan.h, or throws ConfigError naming the first layer it cannot run. This file holds
// the walk over the layers (IntEngine::Impl::Builder, int_engine_build.h), the quantization points, the
// rescales, the views and the model's head; the layers' ops are built in
// int_engine_build_weights.cpp and int_engine_build_ops.cpp.
//
// Every activation the engine computes is on an 8-bit grid. A convolution, dense layer, Add or
// average pool writes its own quantization point, or, when its only reader is a ReLU/ReLU6 that
// carries the point, that ReLU's point with the ReLU folded into the clamp (QuantSim's fusion).
// A ReLU with its own point after a quantized input is a rescale. Max-pooling, Flatten and
// Dropout keep their input's grid; Flatten and Dropout are aliases of their input's bytes. A
// pointwise activation (Sigmoid, GELU, ...) with its own point is a 256-entry table from its
// input's grid to its own, a PReLU one such table per channel (int_engine_tables.cpp). Mul and Concat write their own point (or a ReLU's) as Add does: the
// product (qa - za)(qb - zb) or each input's bytes rescaled with fixed-point multipliers.
#include "infer/int_engine_build.h"

#include "nn/pointwise.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace quantscope {

namespace {

bool isRelu(LayerKind k) { return k == LayerKind::ReLU || k == LayerKind::ReLU6; }

std::string layerId(const StoredLayer& l) { return std::string(storedKindName(l.kind)) + " '" + l.name + "'"; }

} // namespace

Domain IntEngine::Impl::Builder::domainOf(const ActivationQuant& a, const std::string& where)
{
    if (a.bits > 8) throw ConfigError(where + ": the integer engine runs activations of at most 8 bits, not " + std::to_string(a.bits));
    Domain d;
    d.aq = a;
    d.offset = a.isSigned ? 128 : 0;
    if (d.lo() < 0 || d.hi() > 255) throw ConfigError(where + ": activation range does not fit 8 bits");
    if (!(std::isfinite(a.scale) && a.scale > 0.0f)) throw ConfigError(where + ": activation scale is not a positive number");
    return d;
}

// ReLU6 caps at the grid value of 6 as the fake-quant computes it: nearbyint(6 * (1 / scale)) + zp.
std::pair<std::int32_t, std::int32_t> IntEngine::Impl::Builder::clampOf(const Domain& d, LayerKind act)
{
    std::int32_t lo = d.lo(), hi = d.hi();
    if (isRelu(act)) lo = std::max(lo, d.zp());
    if (act == LayerKind::ReLU6) {
        const float inv = 1.0f / d.aq.scale;
        float q6 = std::nearbyint(6.0f * inv) + static_cast<float>(d.aq.zeroPoint);
        q6 = std::clamp(q6, static_cast<float>(d.aq.qmin), static_cast<float>(d.aq.qmax));
        hi = std::min(hi, static_cast<std::int32_t>(q6) + d.offset);
    }
    return {lo, hi};
}

Op IntEngine::Impl::Builder::opOf(OpKind kind, const std::string& name, int in0, int out)
{
    Op op;
    op.kind = kind;
    op.name = name;
    op.in0 = in0;
    op.out = out;
    return op;
}

IntEngine::Impl::Builder::Builder(Impl& e, const ExportedModel& m, std::size_t batchStart)
    : m_e(e), m_model(m), m_layers(m.layers), m_acts(e.acts), m_isa(e.opt.isa), m_batchStart(batchStart), m_fused(m.layers.size(), false)
{
}

const ActInfo& IntEngine::Impl::Builder::input(std::size_t j) const
{
    const ActInfo& a = m_acts[m_layer->inputs.at(j)];
    if (!a.defined) throw ConfigError(m_id + " reads an activation the integer engine does not compute");
    if (m_batch && !a.flat)
        throw ConfigError(m_id + ": a layer on feature maps after the first dense layer is not supported by the integer engine");
    return a;
}

void IntEngine::Impl::Builder::push(Op op, const ActInfo& info)
{
    op.batch = m_batch;
    m_acts[static_cast<std::size_t>(op.out)] = info;
    m_acts[static_cast<std::size_t>(op.out)].defined = true;
    m_acts[static_cast<std::size_t>(op.out)].root = op.out;
    m_acts[static_cast<std::size_t>(op.out)].batch = m_batch;
    (m_batch ? m_batchOps : m_imageOps).push_back(std::move(op));
}

void IntEngine::Impl::Builder::pushOnGrid(Op op, const ActInfo& like, const Domain& d)
{
    ActInfo info = like;
    info.d = d;
    push(std::move(op), info);
}

auto IntEngine::Impl::Builder::pointOf() -> Point
{
    const StoredLayer& l = *m_layer;
    if (l.outputQuant) return {domainOf(*l.outputQuant, l.name), static_cast<int>(m_i + 1), l.name, LayerKind::Flatten};
    const long next = m_model.soleConsumer(m_i);
    if (next >= 0 && isRelu(m_layers[static_cast<std::size_t>(next)].kind) && m_layers[static_cast<std::size_t>(next)].outputQuant) {
        const StoredLayer& r = m_layers[static_cast<std::size_t>(next)];
        m_fused[static_cast<std::size_t>(next)] = true;
        return {domainOf(*r.outputQuant, r.name), static_cast<int>(next + 1), r.name, r.kind};
    }
    throw ConfigError(m_id + ": its output is not quantized, the integer engine needs every layer output as integers");
}

// A layer that keeps its input's grid (max-pooling, Flatten, Dropout, channel movements) but
// carries a point of its own (QuantSim never exports one) is followed by a rescale from `from`
// into act i+1.
bool IntEngine::Impl::Builder::needsRescale(const Domain& in) const { return m_layer->outputQuant && !(*m_layer->outputQuant == in.aq); }

void IntEngine::Impl::Builder::rescale(int from)
{
    const ActInfo a = m_acts[static_cast<std::size_t>(from)];
    const Domain d = domainOf(*m_layer->outputQuant, m_layer->name);
    pushRescale(a, d, LayerKind::Flatten, true);
}

// An average pool with a 1 x 1 window over a 1 x 1 x elems image.
void IntEngine::Impl::Builder::pushRescale(const ActInfo& a, const Domain& d, LayerKind act, bool traced)
{
    Op op = opOf(OpKind::AvgPool, m_layer->name, a.root, static_cast<int>(m_i + 1));
    op.traced = traced;
    PoolParams& p = op.pool;
    p.isa = m_isa;
    p.C = a.numel();
    p.H = p.W = p.Ho = p.Wo = 1;
    p.f = fixedPointMultiplier(static_cast<double>(a.d.aq.scale) / d.aq.scale);
    p.zin = a.d.zp();
    p.zp = d.zp();
    std::tie(p.lo, p.hi) = clampOf(d, act);
    pushOnGrid(std::move(op), a, d);
}

// An activation of the engine's own (the value before such a rescale).
int IntEngine::Impl::Builder::extraAct()
{
    if (m_acts.size() == m_acts.capacity()) throw Error("internal error: activation table full");
    m_acts.emplace_back();
    return static_cast<int>(m_acts.size() - 1);
}

void IntEngine::Impl::Builder::addLayer(std::size_t i)
{
    if (m_fused[i]) return;
    const StoredLayer& l = m_layers[i];
    m_layer = &l;
    m_i = i;
    m_id = layerId(l);
    m_batch = i >= m_batchStart;

    switch (l.kind) {
    case LayerKind::Conv2d: conv2d(l); break;
    case LayerKind::Linear: linear(l); break;
    case LayerKind::MaxPool2d: maxPool(l); break;
    case LayerKind::ChannelMax: channelMax(l); break;
    case LayerKind::AvgPool2d:
    case LayerKind::GlobalAvgPool2d: avgPool(l); break;
    case LayerKind::Add: add(); break;
    case LayerKind::Mul: mul(); break;
    case LayerKind::Concat: concat(l); break;
    case LayerKind::ReLU:
    case LayerKind::ReLU6: relu(l); break;
    QS_POINTWISE_KIND_CASES: pointwise(l); break;
    case LayerKind::PReLU: prelu(l); break;
    case LayerKind::GroupNorm:
    case LayerKind::LayerNorm2d: groupNorm(l); break;
    case LayerKind::ChannelShuffle:
    case LayerKind::Slice: gather(l); break;
    case LayerKind::Pad: padGather(l); break;
    case LayerKind::Flatten:
    case LayerKind::Dropout: {
        const ActInfo& in = m_acts[l.inputs.at(0)];
        if (!in.defined) throw ConfigError(m_id + " reads an activation the integer engine does not compute");
        ActInfo info = in; // same bytes, maybe a new view
        if (l.kind == LayerKind::Flatten && !in.flat) {
            info.flat = true;
            info.permuted = in.c > 1 && in.h * in.w > 1;
            info.fc = in.c, info.fh = in.h, info.fw = in.w;
            info.c = in.numel();
            info.h = info.w = 0;
        }
        m_acts[i + 1] = info; // root stays the input's
        if (needsRescale(in.d)) rescale(static_cast<int>(i + 1));
        break;
    }
    case LayerKind::LogSoftmax:
    case LayerKind::Softmax: {
        const char* what = l.kind == LayerKind::Softmax ? "Softmax" : "LogSoftmax";
        if (i + 1 != m_layers.size()) throw ConfigError(m_id + ": " + what + " must be the last layer");
        if (l.outputQuant) throw ConfigError(m_id + ": a quantized " + what + " output is not supported");
        (l.kind == LayerKind::Softmax ? m_e.softmax : m_e.logSoftmax) = true;
        break;
    }
    case LayerKind::BatchNorm2d: throw ConfigError(m_id + ": BatchNorm must be folded into its convolution");

    }
}

std::vector<Op> IntEngine::Impl::Builder::takeOps(std::size_t& firstBatchOp)
{
    firstBatchOp = m_imageOps.size();
    std::vector<Op> ops = std::move(m_imageOps);
    for (Op& op : m_batchOps) ops.push_back(std::move(op));
    return ops;
}

void IntEngine::Impl::build(const ExportedModel& m)
{
    if (!m.quantized || !m.inputQuant) throw ConfigError("the integer engine runs integer models; this one is FP32");
    m.validate("model '" + m.modelName + "'");
    C = m.channels;
    H = m.height;
    W = m.width;
    classes = m.classes;
    const auto& L = m.layers;
    const Domain input = Builder::domainOf(*m.inputQuant, "input");
    const std::vector<float> norm = m.normalization.table();
    lut.resize(norm.size());
    for (std::size_t i = 0; i < norm.size(); ++i) lut[i] = quantizeInput(norm[i], input);

    acts.assign(L.size() + 1, ActInfo{});
    acts.reserve(2 * L.size() + 2); // + at most one extra activation per layer; references stay valid
    acts[0].defined = true;
    acts[0].root = 0;
    acts[0].d = input;
    acts[0].c = C, acts[0].h = H, acts[0].w = W;
    std::size_t B = L.size(); // the batch stage starts at the first dense layer
    for (std::size_t i = 0; i < L.size(); ++i)
        if (L[i].kind == LayerKind::Linear) {
            B = i;
            break;
        }
    Builder builder(*this, m, B);
    for (std::size_t i = 0; i < L.size(); ++i) builder.addLayer(i);

    outputAct = logSoftmax || softmax ? static_cast<int>(L.back().inputs.at(0)) : static_cast<int>(L.size());
    const ActInfo& out = acts[static_cast<std::size_t>(outputAct)];
    if (!out.defined) throw ConfigError("the integer engine does not compute the model's output");
    if (out.numel() != classes)
        throw ConfigError("the model produces " + std::to_string(out.numel()) + " values, not " + std::to_string(classes));
    outputIndex.resize(classes);
    for (std::size_t j = 0; j < classes; ++j)
        outputIndex[j] = static_cast<std::uint32_t>(out.permuted ? (j % (out.fh * out.fw)) * out.fc + j / (out.fh * out.fw) : j);

    ops = builder.takeOps(firstBatchOp);
    planBuffers();
}

} // namespace quantscope
