#include "nn/dropout.h"

#include "tensor/parallel.h"
#include "util/errors.h"
#include "util/rng.h"

#include <cstring>

namespace quantscope {

Dropout::Dropout(std::string name, float p) : Layer(std::move(name)), m_p(p)
{
    if (!(p >= 0.0f && p < 1.0f)) throw ConfigError("dropout: p must be in [0, 1)");
}

std::string Dropout::describe() const { return "p=" + std::to_string(m_p).substr(0, 4); }

void Dropout::forward(const Tensor& x, Tensor& y, const RunContext& ctx)
{
    y.resize(x.shape());
    const std::size_t n = x.numel();
    if (!ctx.training || m_p == 0.0f) {
        std::memcpy(y.data(), x.data(), n * sizeof(float));
        m_mask.assign(n, 1.0f);
        return;
    }
    m_mask.resize(n);
    const std::uint64_t key = streamKey(ctx.rngKey, stableHash(name().c_str()));
    const float keep = 1.0f / (1.0f - m_p);
    // 24-bit threshold: element dropped when its uniform < p
    const std::uint64_t thr = static_cast<std::uint64_t>(static_cast<double>(m_p) * 16777216.0);
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            const std::uint64_t bits = splitmix64(key + i) >> 40;
            const float m = bits < thr ? 0.0f : keep;
            m_mask[i] = m;
            y[i] = x[i] * m;
        }
    });
}

// dx = dy * mask
void Dropout::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const std::size_t n = x.numel();
    parallelChunks(n, elementwiseGrain(n), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) dx[i] = dy[i] * m_mask[i];
    });
}

} // namespace quantscope
