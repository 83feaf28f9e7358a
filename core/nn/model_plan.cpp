// Model's plans for its passes (model.h): which layers run fused (planFusion, planBackwardPools),
// the order of the backward (backwardOrder) and where a BatchNorm2d's input gradient is written
// inside the convolution before it (defersBatchNormInputGradient). The passes themselves are in
// model_passes.cpp.
#include "nn/model.h"

#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/maxpool2d.h"

#include <vector>

namespace quantscope {

void Model::planFusion(const LayerHooks* hooks)
{
    const std::size_t L = m_layers.size();
    m_clampOf.assign(L, -1);
    m_poolOf.assign(L, -1);
    m_fusedAway.assign(L, 0);
    m_flattenView.assign(L, 0);
    for (std::size_t i = 0; i < L; ++i) {
        const Layer& l = *m_layers[i];
        if (l.kind() == LayerKind::Flatten && m_inputs[i].size() == 1 && m_inputs[i][0] > 0 &&
            m_consumers[m_inputs[i][0]].size() == 1 && (!hooks || !hooks->touchesOutput(i)))
            m_flattenView[i] = 1;
    }
    for (std::size_t i = 0; i < L; ++i) {
        const Layer& l = *m_layers[i];
        // With hooks, convolutions (their fused backward reads the ReLU's output as the hooks left
        // it) and the BatchNorms the hooks name (whose backward then reads it too, not BN(x)).
        // An Add (the residual join) fuses as a BatchNorm2d does: its backward masks the
        // gradient by the ReLU's output as the hooks left it. A ReLU6 fuses under hooks only where
        // they allow it (LayerHooks::fusesReLU6): its own rule reads its input, the fused one the
        // output.
        const bool join = l.kind() == LayerKind::Add && !m_broadcastAdd[i]; // a broadcast sum runs apart
        const bool fuses = ((l.kind() == LayerKind::BatchNorm2d || join) && (!hooks || hooks->fusesReLU(i))) ||
                           (l.kind() == LayerKind::Conv2d && static_cast<const Conv2d&>(l).fusesActivation());
        if (!fuses || (m_inputs[i].size() != 1 && !join) || (hooks && hooks->touchesOutput(i))) continue;
        const long j = soleConsumer(i);
        if (j < 0) continue;
        const LayerKind k = m_layers[static_cast<std::size_t>(j)]->kind();
        if ((k != LayerKind::ReLU && (k != LayerKind::ReLU6 || (hooks && !hooks->fusesReLU6(i)))) ||
            m_inputs[static_cast<std::size_t>(j)].size() != 1)
            continue;
        m_clampOf[i] = j;
        m_fusedAway[static_cast<std::size_t>(j)] = 1;
        // A 2x2/2 max pool after the clamp joins where nothing reads the clamp's output (no hooks, or
        // hooks that leave the three layers alone).
        if (l.kind() != LayerKind::Conv2d || !static_cast<const Conv2d&>(l).poolsInEpilogue()) continue;
        const long pk = soleConsumer(static_cast<std::size_t>(j));
        if (pk < 0 || m_inputs[static_cast<std::size_t>(pk)].size() != 1) continue;
        const Layer& pool = *m_layers[static_cast<std::size_t>(pk)];
        if (pool.kind() != LayerKind::MaxPool2d || !static_cast<const MaxPool2d&>(pool).fusesAfterConvolution()) continue;
        if (hooks && !hooks->fusesPool(i, static_cast<std::size_t>(j), static_cast<std::size_t>(pk))) continue;
        m_poolOf[i] = pk;
        m_fusedAway[static_cast<std::size_t>(pk)] = 1;
    }
}

// A Conv2d + clamp whose 2x2 max pool ran apart in the forward pass, because the hooks read the
// clamp's output in between (QAT's observer and fake-quant on a ReLU point), still takes the
// pool's backward inside its own, a few images at a time (Conv2d::backwardPooled): the clamp's
// output gradient is never written whole. Only where the hooks' backward of that output is their
// straight-through mask alone (gradientMask), which the convolution then applies. The pool's
// argmax is that of its own forward, over the output as the hooks left it, and the clamp's rule
// reads the pooled value, which is that output at the argmax: the same bits as apart.
void Model::planBackwardPools(const LayerHooks& hooks)
{
    for (std::size_t c = 0; c < m_layers.size(); ++c) {
        if (m_clampOf[c] < 0 || m_poolOf[c] >= 0 || m_layers[c]->kind() != LayerKind::Conv2d) continue;
        if (!static_cast<const Conv2d&>(*m_layers[c]).poolsInEpilogue()) continue;
        const auto j = static_cast<std::size_t>(m_clampOf[c]);
        const long k = soleConsumer(j);
        if (k < 0 || m_inputs[static_cast<std::size_t>(k)].size() != 1) continue;
        const Layer& l = *m_layers[static_cast<std::size_t>(k)];
        if (l.kind() != LayerKind::MaxPool2d) continue;
        const auto& pool = static_cast<const MaxPool2d&>(l);
        if (!pool.fusesAfterConvolution() || pool.fusedInputShape() != m_acts[j + 1].shape()) continue;
        if (!hooks.gradientMask(j, m_acts[j + 1].numel())) continue;
        m_bwdPoolOf[c] = k;
        m_bwdPooled[static_cast<std::size_t>(k)] = 1;
    }
}

bool Model::lastLayerReadsOnlyThePrevious() const
{
    const std::size_t L = m_layers.size();
    return L >= 2 && m_inputs[L - 1].size() == 1 && m_inputs[L - 1][0] == L - 1 && m_consumers[L - 1].size() == 1 &&
           m_layers[L - 1]->params().empty();
}

const std::vector<std::size_t>& Model::backwardOrder(std::size_t start)
{
    // Recomputed each pass (a few microseconds): a layer's path, and so whether it waits, may change
    // between passes (Conv2d::setBf16Products, Model::replaceLayer).
    // readers still to run, per layer's output (readers at or above start have their gradient given)
    std::vector<std::size_t> pending(start, 0);
    for (std::size_t l = 0; l < start; ++l)
        for (std::size_t k : m_consumers[l + 1]) pending[l] += k < start ? 1 : 0;
    std::vector<std::uint8_t> done(start, 0);
    const auto waits = [&](std::size_t l) { // a sparse input gradient while another reader of the input is pending
        if (m_layers[l]->kind() != LayerKind::Conv2d || m_inputs[l].size() != 1 || m_inputs[l][0] == 0) return false;
        if (!static_cast<const Conv2d&>(*m_layers[l]).addsSparseInputGradient()) return false;
        for (std::size_t k : m_consumers[m_inputs[l][0]])
            if (k != l && k < start && !done[k]) return true;
        return false;
    };
    m_backwardOrder.clear();
    while (m_backwardOrder.size() < start) {
        long pick = -1, waiting = -1;
        for (std::size_t l = start; l-- > 0;) {
            if (done[l] || pending[l] != 0) continue;
            if (!waits(l)) {
                pick = static_cast<long>(l);
                break;
            }
            if (waiting < 0) waiting = static_cast<long>(l);
        }
        if (pick < 0) pick = waiting; // only waiting layers are ready: the highest goes
        const auto l = static_cast<std::size_t>(pick);
        done[l] = 1;
        m_backwardOrder.push_back(l);
        for (std::size_t a : m_inputs[l])
            if (a > 0 && a - 1 < start) --pending[a - 1];
    }
    return m_backwardOrder;
}

// A BatchNorm2d alone reading the output of the convolution right before it: its dx is written
// inside that convolution's backward, group by group while in cache, never whole
// (BatchNorm2d::backwardDeferringInputGradient, Conv2d::setGradientSource). The hooks must leave
// that gradient alone, or have the BN round it (LayerHooks::roundsGradientBf16).
bool Model::defersBatchNormInputGradient(std::size_t i, const LayerHooks* hooks) const
{
    if (!m_fusedPass || m_layers[i]->kind() != LayerKind::BatchNorm2d || m_inputs[i].size() != 1 || m_inputs[i][0] != i ||
        i == 0)
        return false;
    const std::size_t a = i;
    if (m_consumers[a].size() != 1 || m_layers[a - 1]->kind() != LayerKind::Conv2d || m_clampOf[a - 1] >= 0 ||
        !static_cast<const Conv2d&>(*m_layers[a - 1]).takesGradientSource())
        return false;
    return !hooks || hooks->roundsGradientBf16(a - 1) || !hooks->touchesOutput(a - 1);
}

} // namespace quantscope
