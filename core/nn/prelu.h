// PReLU (torch.nn.PReLU): y = x for x > 0, else a x, with a learned slope `weight` of shape (1)
// (one for every channel, nn.PReLU()) or (C) (one per channel, nn.PReLU(num_parameters=C)), on
// (N, C, H, W) feature maps and (N, C) features. The slope is a parameter like a bias: trained,
// saved and loaded, never on an integer grid (isWeight is false; the integer engine turns it into
// a table per channel, io/ and infer/).
#pragma once

#include "nn/layer.h"

namespace quantscope {

// forward:  y[n, c, ...] = x > 0 ? x : a[c] x            (a[c] = a[0] when the slope is shared)
// backward: dx = x > 0 ? dy : a[c] dy;  da[c] = sum over n and the plane of (x > 0 ? 0 : x dy)
//           (PyTorch 1.13's prelu_backward; a shared slope sums over the channels too)
class PReLU final : public Layer {
public:
    // slopes: 1 or the channel count; init: PyTorch's 0.25. Throws ConfigError for 0 slopes or a
    // non-finite init.
    PReLU(std::string name, std::size_t slopes = 1, float init = 0.25f);
    LayerKind kind() const override { return LayerKind::PReLU; }
    // (N, C, H, W) or (N, C); C must equal the slope count unless it is 1 (ConfigError).
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::vector<Param*> params() override { return {&m_weight}; }
    std::string describe() const override;

    std::size_t slopes() const { return m_weight.value.numel(); }
    Param& weight() { return m_weight; }
    const Param& weight() const { return m_weight; }

private:
    Param m_weight;
};

// y = prelu(x) for a run of n values of one channel with slope a: the one formula the layer, the
// engine's tables and the checks share (not inlined, so its bits are the same for every caller).
void preluApply(float a, const float* x, float* y, std::size_t n);

} // namespace quantscope
