// Dropout (inverted): in training, zeroes each element with probability p and scales the rest
// by 1/(1-p). The mask is a pure function of (step key, layer, element), so it does not depend
// on the thread count. Under mixed bf16 it rounds its own output (RunContext::roundOutputBf16)
// and input gradient (InputGradientRounding) as it writes them, where the hooks would otherwise
// make a pass of their own over each.
#pragma once

#include "nn/layer.h"

namespace quantscope {

class Dropout final : public Layer, public InputGradientRounding {
public:
    Dropout(std::string name, float p);
    LayerKind kind() const override { return LayerKind::Dropout; }
    Shape outputShape(const Shape& in) const override { return in; }
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    float p() const { return m_p; }

private:
    float m_p;
    std::vector<float> m_mask; // training cache: 0 or 1/(1-p)
};

} // namespace quantscope
