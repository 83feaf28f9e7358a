#include "io/exported_model.h"


#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/channel_ops.h"
#include "nn/concat.h"
#include "nn/conv2d.h"
#include "nn/dropout.h"
#include "nn/groupnorm.h"
#include "nn/layernorm2d.h"
#include "nn/channel_max.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "nn/mul.h"
#include "nn/pad.h"
#include "nn/pointwise.h"
#include "nn/prelu.h"
#include "quant/exact_pool.h"
#include "util/errors.h"

#include <algorithm>
#include <cmath>

namespace quantscope {

const char* storedKindName(LayerKind k) { return layerKindName(k); }

bool storeChannelMove(const Layer& layer, StoredLayer& l)
{
    if (const auto* cs = dynamic_cast<const ChannelShuffle*>(&layer)) {
        l.groups = cs->groups();
        return true;
    }
    if (const auto* sl = dynamic_cast<const Slice*>(&layer)) {
        l.sliceBegin = sl->begin();
        l.sliceEnd = sl->end();
        return true;
    }
    if (const auto* pd = dynamic_cast<const Pad2d*>(&layer)) {
        l.padMode = pd->mode();
        l.pads = pd->pads();
        return true;
    }
    return false;
}

bool storeNormLayer(const Layer& layer, StoredLayer& l)
{
    const Param *weight = nullptr, *bias = nullptr;
    if (const auto* gn = dynamic_cast<const GroupNorm*>(&layer)) {
        l.outChannels = gn->channels();
        l.groups = gn->groups();
        l.eps = gn->eps();
        if (gn->affine()) weight = &gn->weight(), bias = &gn->bias();
    } else if (const auto* ln = dynamic_cast<const LayerNorm2d*>(&layer)) {
        l.outChannels = ln->channels();
        l.eps = ln->eps();
        if (ln->affine()) weight = &ln->weight(), bias = &ln->bias();
    } else {
        return false;
    }
    l.tensors.clear();
    if (!weight) return true;
    for (const Param* p : {weight, bias}) {
        StoredTensor t;
        t.name = p->name;
        t.shape = p->value.shape();
        t.values = p->value.values();
        for (std::size_t i = 0; i < t.values.size(); ++i)
            if (!std::isfinite(t.values[i]))
                throw NumericError(std::string("cannot export: ") + layerKindName(layer.kind()) + " '" + l.name + "' " + t.name +
                                   " holds a non-finite value at element " + std::to_string(i) + "; the model diverged, retrain it");
        l.tensors.push_back(std::move(t));
    }
    return true;
}

std::size_t StoredTensor::expectedScales() const
{
    switch (layout) {
    case ScaleLayout::Tensor: return 1;
    case ScaleLayout::Channel: return rows();
    case ScaleLayout::Group: return groupSize ? slotCount(numel(), rowLength(), groupSize) : 0;
    }
    return 0;
}

QuantParams StoredTensor::params() const
{
    if (layout == ScaleLayout::Tensor) return perTensorParams(scales.at(0), zeroPoints.at(0), qmin, qmax);
    return groupParams(scales, zeroPoints, qmin, qmax, rowLength(), layout == ScaleLayout::Group ? groupSize : rowLength());
}

std::vector<float> StoredTensor::dequantized() const
{
    if (encoding == TensorEncoding::Float32) return values;
    std::vector<float> out(q.size());
    if (q.empty()) return out;
    dequantize(q, params(), out);
    return out;
}

const StoredTensor* StoredLayer::tensor(const std::string& n) const
{
    for (const StoredTensor& t : tensors)
        if (t.name == n) return &t;
    return nullptr;
}

long ExportedModel::soleConsumer(std::size_t i) const
{
    long found = -1;
    for (std::size_t j = i + 1; j < layers.size(); ++j)
        for (std::size_t a : layers[j].inputs)
            if (a == i + 1) {
                if (found >= 0) return -1;
                found = static_cast<long>(j);
            }
    return found;
}

std::vector<Shape> ExportedModel::activationShapes() const
{
    std::vector<Shape> shapes{{channels, height, width}};
    for (const StoredLayer& l : layers) {
        Shape s = shapes.at(l.inputs.at(0));
        switch (l.kind) {
        case LayerKind::Conv2d: {
            const ConvGeometry g = l.convGeometry();
            s = {l.outChannels, g.outH(s[1]), g.outW(s[2])};
            break;
        }
        case LayerKind::MaxPool2d:
        case LayerKind::AvgPool2d: {
            const PoolGeometry g = l.poolGeometry();
            s = {s[0], g.outH(s[1]), g.outW(s[2])};
            break;
        }
        case LayerKind::GlobalAvgPool2d: s = {s[0], 1, 1}; break;
        case LayerKind::ChannelMax: s = {1, s[1], s[2]}; break;
        case LayerKind::Flatten: s = {shapeNumel(s)}; break;
        case LayerKind::Linear: s = {l.outFeatures}; break;
        case LayerKind::Slice: s[0] = l.sliceEnd - l.sliceBegin; break;
        case LayerKind::Pad: s = {s[0], l.pads[0] + s[1] + l.pads[2], l.pads[1] + s[2] + l.pads[3]}; break;
        case LayerKind::Concat: // along the channels
            for (std::size_t j = 1; j < l.inputs.size(); ++j) s.at(0) += shapes.at(l.inputs[j]).at(0);
            break;
        case LayerKind::Mul: // a map and its [C, 1, 1] gate, in either order: the map's shape
            if (l.inputs.size() == 2 && shapeNumel(shapes.at(l.inputs[1])) > shapeNumel(s)) s = shapes.at(l.inputs[1]);
            break;
        default: break;
        }
        shapes.push_back(std::move(s));
    }
    return shapes;
}

std::string ExportedModel::precisionText() const
{
    if (!quantized) return "fp32";
    bool narrow = false;
    for (const StoredLayer& l : layers)
        if ((l.kind == LayerKind::Conv2d || l.kind == LayerKind::Linear) && !l.tensors.empty()) {
            const StoredTensor& w = l.tensors.front();
            if (w.encoding == TensorEncoding::Int && w.isSigned && w.bits >= 3 && w.qmin == -w.qmax) narrow = true; // 2 bits: ternary's grid
        }
    // A plan may give layers activation formats of their own: then the stored grids say which.
    std::vector<std::string> grids;
    const auto grid = [&](const ActivationQuant& a) {
        const std::string g = (a.isSigned ? "int" : "uint") + std::to_string(a.bits);
        if (std::find(grids.begin(), grids.end(), g) == grids.end()) grids.push_back(g);
    };
    if (inputQuant) grid(*inputQuant);
    for (const StoredLayer& l : layers)
        if (l.outputQuant) grid(*l.outputQuant);
    std::string acts = activationFormat + " activations";
    if (grids.size() > 1) {
        acts = "per-layer activations (";
        for (std::size_t i = 0; i < grids.size(); ++i) acts += (i ? ", " : "") + grids[i];
        acts += ")";
    }
    return weightFormat + " weights (" + granularity + (narrow ? ", narrow range" : "") + "), " + acts;
}

std::size_t ExportedModel::numParams() const
{
    std::size_t n = 0;
    for (const StoredLayer& l : layers)
        for (const StoredTensor& t : l.tensors)
            if (t.name != "running_mean" && t.name != "running_var") n += t.numel();
    return n;
}

namespace {

StoredTensor floatTensor(const std::string& name, const Tensor& t)
{
    StoredTensor s;
    s.name = name;
    s.shape = t.shape();
    s.encoding = TensorEncoding::Float32;
    s.values = t.values();
    return s;
}

} // namespace

ExportedModel exportFloatModel(Model& model, const std::string& modelName, const Normalization& norm,
                               const std::vector<std::string>& classNames)
{
    ExportedModel m;
    m.modelName = modelName;
    const Shape& in = model.inputShape();
    if (in.size() != 3) throw ConfigError("only image models (C, H, W) can be exported");
    m.channels = in[0];
    m.height = in[1];
    m.width = in[2];
    m.classes = model.outputShape(1).back();
    m.normalization = norm.broadcast(m.channels);
    m.classNames = classNames;
    m.strategy = "fp32";
    m.weightFormat = m.activationFormat = "fp32";
    m.granularity = "";
    m.quantized = false;
    for (std::size_t i = 0; i < model.size(); ++i) {
        Layer& layer = model.layer(i);
        StoredLayer l;
        l.kind = layer.kind();
        l.name = layer.name();
        l.inputs = model.inputsOf(i);
        if (auto* c = dynamic_cast<Conv2d*>(&layer)) {
            l.inChannels = c->inChannels();
            l.outChannels = c->outChannels();
            l.setConvGeometry(c->geometry());
            l.groups = c->groups();
            l.tensors = {floatTensor("weight", c->weight().value)};
            if (c->hasBias()) l.tensors.push_back(floatTensor("bias", c->bias().value));
        } else if (auto* ap = dynamic_cast<AvgPool2d*>(&layer)) {
            l.setPoolGeometry(ap->geometry());
        } else if (auto* bn = dynamic_cast<BatchNorm2d*>(&layer)) {
            l.outChannels = bn->channels();
            l.eps = bn->eps();
            l.momentum = 0.1f;
            l.tensors = {floatTensor("gamma", bn->gamma().value), floatTensor("beta", bn->beta().value),
                         floatTensor("running_mean", bn->runningMean()), floatTensor("running_var", bn->runningVar())};
        } else if (auto* p = dynamic_cast<MaxPool2d*>(&layer)) {
            l.setPoolGeometry(p->geometry());
        } else if (auto* d = dynamic_cast<Dropout*>(&layer)) {
            l.dropout = d->p();
        } else if (storeChannelMove(layer, l) || storeNormLayer(layer, l)) {
        } else if (auto* pw = dynamic_cast<Pointwise*>(&layer)) {
            l.alpha = pw->alpha();
            l.beta = pw->beta();
        } else if (auto* pr = dynamic_cast<PReLU*>(&layer)) {
            l.tensors = {floatTensor("weight", pr->weight().value)};
        } else if (auto* f = dynamic_cast<Linear*>(&layer)) {
            l.inFeatures = f->inFeatures();
            l.outFeatures = f->outFeatures();
            l.tensors = {floatTensor("weight", f->weight().value)};
            if (f->hasBias()) l.tensors.push_back(floatTensor("bias", f->bias().value));
        }
        m.layers.push_back(std::move(l));
    }
    // A diverged model is refused by name, before any file is written (NumericError, not a format problem).
    for (const StoredLayer& l : m.layers)
        for (const StoredTensor& t : l.tensors)
            for (std::size_t i = 0; i < t.values.size(); ++i)
                if (!std::isfinite(t.values[i]))
                    throw NumericError("cannot export: layer '" + l.name + "' " + t.name + " holds a non-finite value (" +
                                       std::to_string(t.values[i]) + " at element " + std::to_string(i) +
                                       "); the model diverged, retrain it");
    m.validate("model '" + modelName + "'");
    return m;
}

std::unique_ptr<Model> buildModel(const ExportedModel& m)
{
    auto model = std::make_unique<Model>(m.modelName, Shape{m.channels, m.height, m.width});
    auto setParam = [](Param& p, const StoredTensor& t) {
        std::vector<float> v = t.dequantized();
        if (v.size() != p.value.numel()) throw FormatError("tensor '" + t.name + "' does not fit its layer");
        p.value.values() = std::move(v);
    };
    for (const StoredLayer& l : m.layers) {
        std::vector<std::size_t> in = l.inputs;
        switch (l.kind) {
        case LayerKind::Conv2d: {
            const bool bias = l.tensors.size() > 1;
            auto c = std::make_unique<Conv2d>(l.name, l.inChannels, l.outChannels, l.convGeometry(), l.groups, bias);
            setParam(c->weight(), l.tensors.at(0));
            if (bias) setParam(c->bias(), l.tensors.at(1));
            model->add(std::move(c), in);
            break;
        }
        case LayerKind::BatchNorm2d: {
            auto bn = std::make_unique<BatchNorm2d>(l.name, l.outChannels, l.eps, l.momentum);
            setParam(bn->gamma(), l.tensors.at(0));
            setParam(bn->beta(), l.tensors.at(1));
            bn->runningMean().values() = l.tensors.at(2).dequantized();
            bn->runningVar().values() = l.tensors.at(3).dequantized();
            model->add(std::move(bn), in);
            break;
        }
        case LayerKind::ReLU: model->add(std::make_unique<ReLU>(l.name), in); break;
        case LayerKind::ReLU6: model->add(std::make_unique<ReLU6>(l.name), in); break;
        case LayerKind::Add: model->add(std::make_unique<Add>(l.name), in); break;
        case LayerKind::Mul: model->add(std::make_unique<Mul>(l.name), in); break;
        case LayerKind::Concat: model->add(std::make_unique<Concat>(l.name, in.size()), in); break;
        case LayerKind::ChannelShuffle: model->add(std::make_unique<ChannelShuffle>(l.name, l.groups), in); break;
        case LayerKind::GroupNorm: {
            auto gn = std::make_unique<GroupNorm>(l.name, l.groups, l.outChannels, l.eps, !l.tensors.empty());
            if (gn->affine()) {
                setParam(gn->weight(), l.tensors.at(0));
                setParam(gn->bias(), l.tensors.at(1));
            }
            model->add(std::move(gn), in);
            break;
        }
        case LayerKind::LayerNorm2d: {
            auto ln = std::make_unique<LayerNorm2d>(l.name, l.outChannels, l.eps, !l.tensors.empty());
            if (ln->affine()) {
                setParam(ln->weight(), l.tensors.at(0));
                setParam(ln->bias(), l.tensors.at(1));
            }
            model->add(std::move(ln), in);
            break;
        }
        case LayerKind::Slice: model->add(std::make_unique<Slice>(l.name, l.sliceBegin, l.sliceEnd), in); break;
        case LayerKind::Pad: model->add(std::make_unique<Pad2d>(l.name, l.padMode, l.pads), in); break;
        case LayerKind::GlobalAvgPool2d: model->add(std::make_unique<GlobalAvgPool2d>(l.name), in); break;
        case LayerKind::ChannelMax: model->add(std::make_unique<ChannelMax>(l.name), in); break;
        case LayerKind::AvgPool2d: model->add(std::make_unique<AvgPool2d>(l.name, l.poolGeometry()), in); break;
        case LayerKind::MaxPool2d: model->add(std::make_unique<MaxPool2d>(l.name, l.poolGeometry()), in); break;
        case LayerKind::Dropout: model->add(std::make_unique<Dropout>(l.name, l.dropout), in); break;
        case LayerKind::Flatten: model->add(std::make_unique<Flatten>(l.name), in); break;
        case LayerKind::Linear: {
            const bool bias = l.tensors.size() > 1;
            auto f = std::make_unique<Linear>(l.name, l.inFeatures, l.outFeatures, bias);
            setParam(f->weight(), l.tensors.at(0));
            if (bias) setParam(f->bias(), l.tensors.at(1));
            model->add(std::move(f), in);
            break;
        }
        case LayerKind::LogSoftmax: model->add(std::make_unique<LogSoftmax>(l.name), in); break;
        case LayerKind::Softmax: model->add(std::make_unique<Softmax>(l.name), in); break;
        QS_POINTWISE_KIND_CASES: model->add(std::make_unique<Pointwise>(l.name, l.kind, l.alpha, l.beta), in); break;
        case LayerKind::PReLU: {
            auto p = std::make_unique<PReLU>(l.name, l.tensors.at(0).numel());
            setParam(p->weight(), l.tensors.at(0));
            model->add(std::move(p), in);
            break;
        }
        }
    }
    try {
        model->outputShape(1);
    } catch (const ConfigError& e) {
        throw FormatError(std::string("the stored layers do not chain: ") + e.what());
    }
    return model;
}

void fakeQuantizeActivation(Tensor& y, const ActivationQuant& a)
{
    const QuantParams p = perTensorParams(a.scale, a.zeroPoint, a.qmin, a.qmax);
    fakeQuantize(y.values(), p, y.values(), {});
}

StoredActivationHooks::StoredActivationHooks(const ExportedModel& m, const Model* model) : m_input(m.inputQuant), m_model(model)
{
    if (model && model->size() != m.layers.size()) throw std::logic_error("StoredActivationHooks: the model is not the one built from these layers");
    for (const StoredLayer& l : m.layers) {
        m_points.push_back(l.outputQuant);
        // An average pool whose output grid is its input point's: fake-quantized as the engine
        // rounds it (the same arithmetic as QuantSim's, quant/exact_pool.h).
        bool sameGrid = false;
        if ((l.kind == LayerKind::GlobalAvgPool2d || (l.kind == LayerKind::AvgPool2d && l.poolGeometry().isSquare())) &&
            l.inputs.size() == 1 && l.outputQuant) {
            const std::size_t a = l.inputs[0];
            const std::optional<ActivationQuant>& in = a == 0 ? m.inputQuant : m.layers.at(a - 1).outputQuant;
            sameGrid = in && in->scale == l.outputQuant->scale && in->zeroPoint == l.outputQuant->zeroPoint;
        }
        m_sameGridPool.push_back(sameGrid);
    }
}

void StoredActivationHooks::onInput(Tensor& x, const RunContext&)
{
    if (m_input) fakeQuantizeActivation(x, *m_input);
}

void StoredActivationHooks::afterForward(std::size_t layer, Layer& l, Tensor& y, const RunContext&)
{
    if (layer >= m_points.size() || !m_points[layer]) return;
    const ActivationQuant& q = *m_points[layer];
    if (m_sameGridPool[layer]) {
        // The model's input activation only while the model runs its own pass (y is its output
        // there): a caller running the layer on tensors of its own (tst_infer_models' comparison
        // given the engine's inputs) would have the pool read another image's.
        static const Tensor none;
        const bool modelPass = m_model && layer < m_model->size() && &y == &m_model->activation(layer + 1) &&
                               m_model->inputsOf(layer).size() == 1;
        const Tensor& x = modelPass ? m_model->activation(m_model->inputsOf(layer)[0]) : none;
        if (fakeQuantizeSameGridPoolLayer(l, x, y, q.scale, q.zeroPoint, q.qmin, q.qmax, nullptr)) return;
    }
    fakeQuantizeActivation(y, q);
}

} // namespace quantscope
