#include "nn/model.h"

#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/prelu.h"
#include "util/errors.h"
#include "util/rng.h"

#include <cmath>
#include <cstdio>

namespace quantscope {

void checkWeightCount(const std::string& layer, const std::string& shape, std::initializer_list<std::size_t> dims)
{
    std::uint64_t n = 1;
    bool over = false;
    for (std::size_t d : dims) over = over || __builtin_mul_overflow(n, std::uint64_t{d}, &n);
    if (!over && n <= kMaxLayerWeights) return;
    char gib[32];
    std::snprintf(gib, sizeof gib, "%.1f", over ? 1e30 : double(n) * 4.0 / double(1u << 30));
    throw ConfigError(layer + " (" + shape + ") would hold " + (over ? std::string("more than 2^64") : std::to_string(n)) +
                      " weights (" + gib + " GiB), more than the " + std::to_string(kMaxLayerWeights) +
                      " a layer may hold: the input is too large for this model (resize the images)");
}

const char* layerKindName(LayerKind k)
{
    switch (k) {
    case LayerKind::Conv2d: return "Conv2d";
    case LayerKind::BatchNorm2d: return "BatchNorm2d";
    case LayerKind::ReLU: return "ReLU";
    case LayerKind::MaxPool2d: return "MaxPool2d";
    case LayerKind::Dropout: return "Dropout";
    case LayerKind::Flatten: return "Flatten";
    case LayerKind::Linear: return "Linear";
    case LayerKind::LogSoftmax: return "LogSoftmax";
    case LayerKind::Add: return "Add";
    case LayerKind::GlobalAvgPool2d: return "GlobalAvgPool2d";
    case LayerKind::AvgPool2d: return "AvgPool2d";
    case LayerKind::ReLU6: return "ReLU6";
    case LayerKind::Softmax: return "Softmax";
    case LayerKind::Sigmoid: return "Sigmoid";
    case LayerKind::Tanh: return "Tanh";
    case LayerKind::SiLU: return "SiLU";
    case LayerKind::Hardsigmoid: return "Hardsigmoid";
    case LayerKind::Hardswish: return "Hardswish";
    case LayerKind::LeakyReLU: return "LeakyReLU";
    case LayerKind::ELU: return "ELU";
    case LayerKind::GELU: return "GELU";
    case LayerKind::Mul: return "Mul";
    case LayerKind::Concat: return "Concat";
    case LayerKind::PReLU: return "PReLU";
    case LayerKind::GELUTanh: return "GELUTanh";
    case LayerKind::Softplus: return "Softplus";
    case LayerKind::Mish: return "Mish";
    case LayerKind::SELU: return "SELU";
    case LayerKind::CELU: return "CELU";
    case LayerKind::Softsign: return "Softsign";
    case LayerKind::Pad: return "Pad";
    case LayerKind::Hardtanh: return "Hardtanh";
    case LayerKind::ChannelShuffle: return "ChannelShuffle";
    case LayerKind::Slice: return "Slice";
    case LayerKind::GroupNorm: return "GroupNorm";
    case LayerKind::LayerNorm2d: return "LayerNorm2d";
    case LayerKind::ChannelMax: return "ChannelMax";
    }
    return "?";
}

void Layer::checkOutputGradient(const Tensor& x, const Tensor& dy) const
{
    const Shape os = outputShape(x.shape());
    if (dy.shape() != os)
        throw ConfigError(m_name + ": output gradient " + shapeString(dy.shape()) + " does not match the output " +
                          shapeString(os) + " of input " + shapeString(x.shape()));
}

Shape Layer::outputShapeMulti(const std::vector<Shape>& in) const
{
    if (in.size() != 1)
        throw ConfigError(name() + ": takes 1 input, given " + std::to_string(in.size()));
    return outputShape(in[0]);
}

void Layer::forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& ctx)
{
    forward(*xs.at(0), y, ctx);
}

void Layer::backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& y, const Tensor& dy,
                          const std::vector<Tensor*>& dxs)
{
    Tensor unused;
    Tensor* dx = dxs.at(0);
    backward(*xs.at(0), y, dy, dx ? *dx : unused, dx != nullptr);
}

Model::Model(std::string name, Shape inputShape) : m_name(std::move(name)), m_inputShape(std::move(inputShape))
{
    m_consumers.emplace_back(); // activation 0, the input
}

std::size_t Model::add(LayerPtr layer, std::vector<std::size_t> inputs)
{
    if (!layer) throw ConfigError("model " + m_name + ": null layer");
    const std::string& name = layer->name();
    if (name.empty()) throw ConfigError("model " + m_name + ": a layer needs a name");
    if (findLayer(name)) throw ConfigError("model " + m_name + ": two layers are called '" + name + "'");
    if (inputs.empty()) inputs.push_back(m_layers.size());
    if (inputs.size() != layer->numInputs())
        throw ConfigError(name + ": takes " + std::to_string(layer->numInputs()) + " input(s), given " +
                          std::to_string(inputs.size()));
    for (std::size_t a : inputs)
        if (a > m_layers.size())
            throw ConfigError(name + ": input activation " + std::to_string(a) + " is not an earlier layer's output");
    const std::size_t index = m_layers.size();
    for (std::size_t a : inputs) m_consumers[a].push_back(index);
    m_consumers.emplace_back();
    m_inputs.push_back(std::move(inputs));
    m_layers.push_back(std::move(layer));
    return index + 1;
}

LayerPtr Model::replaceLayer(std::size_t i, LayerPtr layer)
{
    if (!layer || i >= m_layers.size()) throw ConfigError("model " + m_name + ": no layer " + std::to_string(i) + " to replace");
    if (layer->name() != m_layers[i]->name() || layer->numInputs() != m_layers[i]->numInputs())
        throw ConfigError("model " + m_name + ": '" + layer->name() + "' cannot replace '" + m_layers[i]->name() +
                          "' (the name and the number of inputs must match)");
    std::swap(layer, m_layers[i]);
    return layer;
}

std::size_t Model::outputOf(const std::string& name) const
{
    for (std::size_t i = 0; i < m_layers.size(); ++i)
        if (m_layers[i]->name() == name) return i + 1;
    throw ConfigError("model " + m_name + " has no layer '" + name + "'");
}

long Model::soleConsumer(std::size_t layer) const
{
    const auto& c = m_consumers.at(layer + 1);
    return c.size() == 1 ? static_cast<long>(c[0]) : -1;
}

bool Model::isChain() const
{
    for (std::size_t i = 0; i < m_inputs.size(); ++i)
        if (m_inputs[i].size() != 1 || m_inputs[i][0] != i) return false;
    return true;
}

Layer* Model::findLayer(const std::string& name)
{
    for (auto& l : m_layers)
        if (l->name() == name) return l.get();
    return nullptr;
}

std::vector<Param*> Model::params()
{
    std::vector<Param*> out;
    for (auto& l : m_layers)
        for (Param* p : l->params()) out.push_back(p);
    return out;
}

std::size_t Model::numParams()
{
    std::size_t n = 0;
    for (Param* p : params()) n += p->value.numel();
    return n;
}

std::vector<Shape> Model::activationShapes(std::size_t n) const
{
    std::vector<Shape> shapes;
    shapes.reserve(m_layers.size() + 1);
    Shape s{n};
    s.insert(s.end(), m_inputShape.begin(), m_inputShape.end());
    shapes.push_back(std::move(s));
    std::vector<Shape> in;
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
        in.clear();
        for (std::size_t a : m_inputs[i]) in.push_back(shapes[a]);
        shapes.push_back(m_layers[i]->outputShapeMulti(in));
    }
    return shapes;
}

std::vector<std::uint8_t> Model::broadcastAdds(std::size_t n) const
{
    std::vector<std::uint8_t> out(m_layers.size(), 0);
    bool any = false;
    for (const auto& l : m_layers) any |= l->kind() == LayerKind::Add;
    if (!any) return out;
    const std::vector<Shape> shapes = activationShapes(n);
    for (std::size_t i = 0; i < m_layers.size(); ++i)
        if (m_layers[i]->kind() == LayerKind::Add && m_inputs[i].size() == 2)
            out[i] = shapes[m_inputs[i][0]] != shapes[m_inputs[i][1]] ? 1 : 0;
    return out;
}

Shape Model::outputShape(std::size_t n) const
{
    if (m_layers.empty()) throw ConfigError("model " + m_name + " has no layers");
    return activationShapes(n).back();
}

void Model::initParams(std::uint64_t seed)
{
    Rng rng(seed);
    for (auto& l : m_layers) {
        std::size_t fanIn = 0;
        Param *w = nullptr, *b = nullptr;
        if (auto* c = dynamic_cast<Conv2d*>(l.get())) {
            fanIn = c->inChannels() / c->groups() * c->taps();
            w = &c->weight();
            b = c->hasBias() ? &c->bias() : nullptr;
        } else if (auto* f = dynamic_cast<Linear*>(l.get())) {
            fanIn = f->inFeatures();
            w = &f->weight();
            b = f->hasBias() ? &f->bias() : nullptr;
        }
        if (auto* bn = dynamic_cast<BatchNorm2d*>(l.get())) { // PyTorch's reset_parameters()
            bn->gamma().value.fill(1.0f);
            bn->beta().value.fill(0.0f);
            bn->runningMean().fill(0.0f);
            bn->runningVar().fill(1.0f);
        }
        if (auto* p = dynamic_cast<PReLU*>(l.get())) p->weight().value.fill(0.25f); // PyTorch's init
        if (!w) continue;
        // kaiming_uniform(a = sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in)
        const float bound = 1.0f / std::sqrt(static_cast<float>(fanIn));
        for (float& v : w->value.values()) v = rng.uniform(-bound, bound);
        if (b)
            for (float& v : b->value.values()) v = rng.uniform(-bound, bound);
    }
}

} // namespace quantscope
