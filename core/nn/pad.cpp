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
// The source index of every output row (or column).
std::vector<long> sources(PadMode mode, std::size_t before, std::size_t size, std::size_t out)
{
    std::vector<long> s(out);
    for (std::size_t o = 0; o < out; ++o) s[o] = Pad2d::sourceIndex(mode, static_cast<long>(o), before, size);
    return s;
}
} // namespace

void Pad2d::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    const Shape out = outputShape(x.shape());
    y.resize(out);
    const std::size_t H = x.dim(2), W = x.dim(3), OH = out[2], OW = out[3];
    const std::vector<long> rows = sources(m_mode, m_pads[0], H, OH), cols = sources(m_mode, m_pads[1], W, OW);
    const float* in = x.data();
    float* o = y.data();
    parallelFor(x.dim(0) * x.dim(1), [&](std::size_t plane) {
        const float* src = in + plane * H * W;
        float* dst = o + plane * OH * OW;
        for (std::size_t r = 0; r < OH; ++r)
            for (std::size_t c = 0; c < OW; ++c)
                dst[r * OW + c] = rows[r] < 0 || cols[c] < 0 ? 0.0f : src[static_cast<std::size_t>(rows[r]) * W + static_cast<std::size_t>(cols[c])];
    });
}

void Pad2d::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t H = x.dim(2), W = x.dim(3), OH = dy.dim(2), OW = dy.dim(3);
    const std::vector<long> rows = sources(m_mode, m_pads[0], H, OH), cols = sources(m_mode, m_pads[1], W, OW);
    const float* g = dy.data();
    float* d = dx.data();
    parallelFor(x.dim(0) * x.dim(1), [&](std::size_t plane) {
        const float* src = g + plane * OH * OW;
        float* dst = d + plane * H * W;
        std::fill(dst, dst + H * W, 0.0f);
        // In output order, as PyTorch's reflection/replication_pad2d_backward adds them.
        for (std::size_t r = 0; r < OH; ++r)
            for (std::size_t c = 0; c < OW; ++c)
                if (rows[r] >= 0 && cols[c] >= 0) dst[static_cast<std::size_t>(rows[r]) * W + static_cast<std::size_t>(cols[c])] += src[r * OW + c];
    });
}

} // namespace quantscope
