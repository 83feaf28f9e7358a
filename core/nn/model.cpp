#include "nn/model.h"

#include "nn/conv2d.h"
#include "nn/linear.h"
#include "util/errors.h"
#include "util/rng.h"

#include <cmath>
#include <cstring>

namespace quantscope {

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
    }
    return "?";
}

Model::Model(std::string name, Shape inputShape) : m_name(std::move(name)), m_inputShape(std::move(inputShape)) {}

void Model::add(LayerPtr layer) { m_layers.push_back(std::move(layer)); }

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

Shape Model::outputShape(std::size_t n) const
{
    Shape s{n};
    s.insert(s.end(), m_inputShape.begin(), m_inputShape.end());
    for (const auto& l : m_layers) s = l->outputShape(s);
    return s;
}

void Model::initParams(std::uint64_t seed)
{
    Rng rng(seed);
    for (auto& l : m_layers) {
        std::size_t fanIn = 0;
        Param *w = nullptr, *b = nullptr;
        if (auto* c = dynamic_cast<Conv2d*>(l.get())) {
            fanIn = c->inChannels() * c->kernel() * c->kernel();
            w = &c->weight();
            b = &c->bias();
        } else if (auto* f = dynamic_cast<Linear*>(l.get())) {
            fanIn = f->inFeatures();
            w = &f->weight();
            b = &f->bias();
        }
        if (!w) continue;
        // kaiming_uniform(a = sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in)
        const float bound = 1.0f / std::sqrt(static_cast<float>(fanIn));
        for (float& v : w->value.values()) v = rng.uniform(-bound, bound);
        for (float& v : b->value.values()) v = rng.uniform(-bound, bound);
    }
}

const Tensor& Model::forward(const Tensor& x, const RunContext& ctx, LayerHooks* hooks)
{
    if (x.rank() != m_inputShape.size() + 1 ||
        !std::equal(m_inputShape.begin(), m_inputShape.end(), x.shape().begin() + 1))
        throw ConfigError("model " + m_name + ": input " + shapeString(x.shape()) + " does not match sample shape " +
                          shapeString(m_inputShape));
    m_acts.resize(m_layers.size() + 1);
    m_acts[0].resize(x.shape());
    std::memcpy(m_acts[0].data(), x.data(), x.numel() * sizeof(float));
    if (hooks) hooks->onInput(m_acts[0], ctx);
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
        m_layers[i]->forward(m_acts[i], m_acts[i + 1], ctx);
        if (hooks) hooks->afterForward(i, *m_layers[i], m_acts[i + 1], ctx);
    }
    return m_acts.back();
}

void Model::backward(const Tensor& dOut, LayerHooks* hooks)
{
    if (m_acts.size() != m_layers.size() + 1 || dOut.shape() != m_acts.back().shape())
        throw ConfigError("model " + m_name + ": backward does not match the last forward");
    m_grads.resize(m_layers.size() + 1);
    Tensor& top = m_grads.back();
    top.resize(dOut.shape());
    std::memcpy(top.data(), dOut.data(), dOut.numel() * sizeof(float));
    for (std::size_t i = m_layers.size(); i-- > 0;) {
        if (hooks) hooks->beforeBackward(i, *m_layers[i], m_grads[i + 1]);
        m_layers[i]->backward(m_acts[i], m_acts[i + 1], m_grads[i + 1], m_grads[i], i > 0);
    }
}

} // namespace quantscope
