#include "nn/pad.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <vector>

namespace quantscope {

const char* padModeName(PadMode m)
{
    switch (m) {
    case PadMode::Zeros: return "zeros";
    case PadMode::Reflect: return "reflect";
    case PadMode::Replicate: return "replicate";
    }
    return "?";
}

Pad2d::Pad2d(std::string name, PadMode mode, std::array<std::size_t, 4> pads) : Layer(std::move(name)), m_mode(mode), m_pads(pads)
{
    if (mode != PadMode::Zeros && mode != PadMode::Reflect && mode != PadMode::Replicate)
        throw ConfigError(this->name() + ": padding mode " + std::to_string(static_cast<int>(mode)) + " is not zeros, reflect or replicate");
    for (std::size_t p : pads)
        if (p > kMaxPad) throw ConfigError(this->name() + ": a pad of " + std::to_string(p) + " is beyond " + std::to_string(kMaxPad));
}

std::string Pad2d::describe() const
{
    return std::string(padModeName(m_mode)) + " pads " + std::to_string(m_pads[0]) + "," + std::to_string(m_pads[1]) + "," +
           std::to_string(m_pads[2]) + "," + std::to_string(m_pads[3]);
}

Shape Pad2d::outputShape(const Shape& in) const
{
    if (in.size() != 4 || in[2] == 0 || in[3] == 0)
        throw ConfigError(name() + ": Pad2d takes [N, C, H, W] maps, not " + shapeString(in));
    const std::size_t H = in[2], W = in[3];
    if (m_mode == PadMode::Reflect && std::max(m_pads[0], m_pads[2]) >= H)
        throw ConfigError(name() + ": reflect padding of " + std::to_string(std::max(m_pads[0], m_pads[2])) + " rows needs more than that many rows; the input is " + shapeString(in));
    if (m_mode == PadMode::Reflect && std::max(m_pads[1], m_pads[3]) >= W)
        throw ConfigError(name() + ": reflect padding of " + std::to_string(std::max(m_pads[1], m_pads[3])) + " columns needs more than that many columns; the input is " + shapeString(in));
    return {in[0], in[1], m_pads[0] + H + m_pads[2], m_pads[1] + W + m_pads[3]};
}

long Pad2d::sourceIndex(PadMode mode, long o, std::size_t before, std::size_t size)
{
    const long n = static_cast<long>(size);
    long i = o - static_cast<long>(before);
    if (i >= 0 && i < n) return i;
    switch (mode) {
    case PadMode::Zeros: return -1;
    case PadMode::Replicate: return i < 0 ? 0 : n - 1;
    case PadMode::Reflect: return i < 0 ? -i : 2 * (n - 1) - i; // pads < size: one reflection suffices
    }
    return -1;
}

namespace {
// The input index (in its H x W plane) each output pixel of an OH x OW plane copies, -1 for a zero.
std::vector<long> planeSources(PadMode mode, const std::array<std::size_t, 4>& pads, std::size_t H, std::size_t W)
{
    const std::size_t OH = pads[0] + H + pads[2], OW = pads[1] + W + pads[3];
    std::vector<long> cols(OW), map(OH * OW);
    for (std::size_t c = 0; c < OW; ++c) cols[c] = Pad2d::sourceIndex(mode, static_cast<long>(c), pads[1], W);
    for (std::size_t r = 0; r < OH; ++r) {
        const long sr = Pad2d::sourceIndex(mode, static_cast<long>(r), pads[0], H);
        for (std::size_t c = 0; c < OW; ++c) map[r * OW + c] = sr < 0 || cols[c] < 0 ? -1 : sr * static_cast<long>(W) + cols[c];
    }
    return map;
}
} // namespace

void Pad2d::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShape(x.shape()));
    const std::size_t plane = x.dim(2) * x.dim(3);
    const std::vector<long> map = planeSources(m_mode, m_pads, x.dim(2), x.dim(3));
    const float* in = x.data();
    float* o = y.data();
    parallelFor(x.dim(0) * x.dim(1), [&](std::size_t p) {
        const float* src = in + p * plane;
        float* dst = o + p * map.size();
        for (std::size_t j = 0; j < map.size(); ++j) dst[j] = map[j] < 0 ? 0.0f : src[map[j]];
    });
}

void Pad2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t plane = x.dim(2) * x.dim(3);
    const std::vector<long> map = planeSources(m_mode, m_pads, x.dim(2), x.dim(3));
    const float* g = dy.data();
    float* d = dx.data();
    parallelFor(x.dim(0) * x.dim(1), [&](std::size_t p) {
        const float* src = g + p * map.size();
        float* dst = d + p * plane;
        std::fill(dst, dst + plane, 0.0f);
        // In output order, as PyTorch's reflection/replication_pad2d_backward adds them.
        for (std::size_t j = 0; j < map.size(); ++j)
            if (map[j] >= 0) dst[map[j]] += src[j];
    });
}

} // namespace quantscope
