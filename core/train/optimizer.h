// Optimizers with PyTorch 1.13 semantics: SGD (momentum, dampening, Nesterov, weight decay) and
// Adam (bias-corrected, L2 weight decay, AMSGrad). State is created on the first step, one slot per
// parameter, in the order of the parameter list (which must not change between steps).
#pragma once

#include "nn/layer.h"

#include <memory>
#include <string>
#include <vector>

namespace quantscope {

class Optimizer {
public:
    virtual ~Optimizer() = default;
    virtual void step(const std::vector<Param*>& params) = 0;
    // Every state tensor (momentum, Adam moments), for strategies that keep them in low precision.
    virtual std::vector<Tensor*> stateTensors() = 0;
    virtual std::string name() const = 0;
    float learningRate() const { return m_lr; }
    void setLearningRate(float lr) { m_lr = lr; }
    // Pure low-precision training in bf16 rounded to nearest even: each step then rounds the
    // weights and the state tensors it writes to bf16 in the same pass as the update, while they
    // are in cache (tensor/bf16.h roundBf16: the same bits as roundToFormat over each tensor
    // after the step). Off by default.
    void setRoundToBf16(bool on) { m_roundBf16 = on; }
    bool roundsToBf16() const { return m_roundBf16; }

protected:
    explicit Optimizer(float lr) : m_lr(lr) {}
    float m_lr;
    bool m_roundBf16 = false;
};

struct SgdOptions {
    float lr = 0.01f;
    float momentum = 0.0f;
    float dampening = 0.0f;
    float weightDecay = 0.0f;
    bool nesterov = false;
};

class Sgd final : public Optimizer {
public:
    explicit Sgd(const SgdOptions& o);
    void step(const std::vector<Param*>& params) override;
    std::vector<Tensor*> stateTensors() override;
    std::string name() const override { return "sgd"; }

private:
    SgdOptions m_opt;
    std::vector<Tensor> m_buf;
    bool m_started = false;
};

struct AdamOptions {
    float lr = 1e-3f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
    float weightDecay = 0.0f;
    // AMSGrad (Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018; torch.optim.Adam
    // amsgrad=True): the denominator takes the largest second moment seen so far, element by
    // element, instead of the current one. One more state tensor per parameter.
    bool amsgrad = false;
};

class Adam final : public Optimizer {
public:
    explicit Adam(const AdamOptions& o);
    void step(const std::vector<Param*>& params) override;
    std::vector<Tensor*> stateTensors() override;
    std::string name() const override { return "adam"; }
    long stepCount() const { return m_t; }

private:
    AdamOptions m_opt;
    std::vector<Tensor> m_m, m_v, m_vMax; // m_vMax: AMSGrad only
    long m_t = 0;
};

} // namespace quantscope
