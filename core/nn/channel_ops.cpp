#include "nn/channel_ops.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <cstring>

namespace quantscope {

namespace {
// Values per channel of one sample: the product of the axes after the channels.
std::size_t planeSize(const Shape& s)
{
    std::size_t p = 1;
    for (std::size_t d = 2; d < s.size(); ++d) p *= s[d];
    return p;
}
} // namespace

ChannelShuffle::ChannelShuffle(std::string name, std::size_t groups) : Layer(std::move(name)), m_groups(groups)
{
    if (groups < 1) throw ConfigError(this->name() + ": ChannelShuffle needs at least one group, given 0");
}

Shape ChannelShuffle::outputShape(const Shape& in) const
{
    if (in.size() < 2 || in[1] % m_groups != 0)
        throw ConfigError(name() + ": ChannelShuffle of " + std::to_string(m_groups) + " groups cannot take " + shapeString(in) +
                          " (it needs [N, C, ...] with C a multiple of the groups)");
    return in;
}

std::size_t ChannelShuffle::sourceChannel(std::size_t c, std::size_t channels) const
{
    const std::size_t per = channels / m_groups; // c = k g + j holds x's channel j per + k
    return (c % m_groups) * per + c / m_groups;
}

void ChannelShuffle::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShape(x.shape()));
    const std::size_t N = x.dim(0), C = x.dim(1), P = planeSize(x.shape());
    const float* in = x.data();
    float* out = y.data();
    parallelFor(N, [&](std::size_t n) {
        for (std::size_t c = 0; c < C; ++c)
            std::memcpy(out + (n * C + c) * P, in + (n * C + sourceChannel(c, C)) * P, P * sizeof(float));
    });
}

void ChannelShuffle::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t N = x.dim(0), C = x.dim(1), P = planeSize(x.shape());
    const float* g = dy.data();
    float* out = dx.data();
    parallelFor(N, [&](std::size_t n) {
        for (std::size_t c = 0; c < C; ++c)
            std::memcpy(out + (n * C + sourceChannel(c, C)) * P, g + (n * C + c) * P, P * sizeof(float));
    });
}

Slice::Slice(std::string name, std::size_t begin, std::size_t end) : Layer(std::move(name)), m_begin(begin), m_end(end)
{
    if (begin >= end)
        throw ConfigError(this->name() + ": a Slice of channels [" + std::to_string(begin) + ", " + std::to_string(end) +
                          ") is empty");
}

std::string Slice::describe() const { return "channels " + std::to_string(m_begin) + ":" + std::to_string(m_end); }

Shape Slice::outputShape(const Shape& in) const
{
    if (in.size() < 2 || in[1] < m_end)
        throw ConfigError(name() + ": a Slice of channels [" + std::to_string(m_begin) + ", " + std::to_string(m_end) +
                          ") cannot take " + shapeString(in) + " (it needs [N, C, ...] with at least " + std::to_string(m_end) +
                          " channels)");
    Shape out = in;
    out[1] = m_end - m_begin;
    return out;
}

void Slice::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShape(x.shape()));
    const std::size_t N = x.dim(0), C = x.dim(1), P = planeSize(x.shape()), K = m_end - m_begin;
    const float* in = x.data();
    float* out = y.data();
    parallelFor(N, [&](std::size_t n) { std::memcpy(out + n * K * P, in + (n * C + m_begin) * P, K * P * sizeof(float)); });
}

void Slice::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t N = x.dim(0), C = x.dim(1), P = planeSize(x.shape()), K = m_end - m_begin;
    const float* g = dy.data();
    float* out = dx.data();
    parallelFor(N, [&](std::size_t n) {
        float* d = out + n * C * P;
        std::fill(d, d + m_begin * P, 0.0f);
        std::memcpy(d + m_begin * P, g + n * K * P, K * P * sizeof(float));
        std::fill(d + m_end * P, d + C * P, 0.0f);
    });
}

} // namespace quantscope
