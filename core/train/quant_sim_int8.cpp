// QuantSim's integer products for QAT's forward (QuantSim::enableIntegerProducts, train/quant_sim.h):
// which convolutions take them, and the weight and input grids QuantSim hands them.
#include "train/quant_sim.h"

#include "nn/conv2d.h"
#include "tensor/gemm_s8.h"

#include <algorithm>
#include <string>
#include <vector>

namespace quantscope {

std::string QuantSim::enableIntegerProducts()
{
    if (!s8ProductsAvailable())
        return "fp32 fake-quant (no AMX-INT8 or AVX512_VNNI here, or QS_INT8_PRODUCTS=0: no int8 products)";
    // Conv2d layers by target: a folded target's conv is its Fold's, others own their weight.
    std::vector<Conv2d*> convOf(m_targets.size(), nullptr);
    for (const Fold& f : m_folds) convOf[f.target] = f.conv;
    for (std::size_t i = 0; i < m_model.size(); ++i)
        if (auto* c = dynamic_cast<Conv2d*>(&m_model.layer(i)))
            for (std::size_t t = 0; t < m_targets.size(); ++t)
                if (m_targets[t].weight == &c->weight()) convOf[t] = c;
    m_intConvs.clear();
    for (std::size_t t = 0; t < m_targets.size(); ++t) {
        Conv2d* c = convOf[t];
        if (!c || m_group[t] < 0 || !c->takesIntegerProducts()) continue;
        const NumberFormat& f = *m_tfmt[t];
        if (!needsScale(f) || f.qmin < -128 || f.qmax > 127 + 128 || f.qmax - f.qmin > 255) continue;
        m_intConvs.emplace_back(t, c);
    }
    // Readers per activation point, of a point with an integer format of at most 8 bits.
    m_intReaders.assign(m_pfmt.size(), {});
    std::string names;
    for (std::size_t p = 0; p < m_pfmt.size(); ++p) {
        const NumberFormat* f = m_pfmt[p];
        if (!f || !needsScale(*f) || f->qmax - f->qmin > 255) continue;
        std::vector<Conv2d*> readers;
        collectIntegerReaders(p, readers);
        for (Conv2d* r : readers)
            for (const auto& ic : m_intConvs)
                if (ic.second == r) {
                    m_intReaders[p].push_back(r);
                    names += (names.empty() ? "" : ", ") + r->name();
                }
    }
    if (names.empty()) return "fp32 fake-quant (no convolution with integer weights and input on the direct kernels)";
    return std::string(s8PathName(bestS8Path())) + " in " + names + ", fp32 fake-quant elsewhere";
}

void QuantSim::collectIntegerReaders(std::size_t activation, std::vector<Conv2d*>& out) const
{
    for (std::size_t j = 0; j < m_model.size(); ++j) {
        const auto& in = m_model.inputsOf(j);
        if (std::find(in.begin(), in.end(), activation) == in.end()) continue;
        Layer& l = m_model.layer(j);
        switch (l.kind()) {
        case LayerKind::Conv2d: out.push_back(static_cast<Conv2d*>(&l)); break;
        // Values on the grid stay on it: max(x, 0) and the max of a window (or of a pixel's channels) are grid values (0 is
        // one: the zero point is an integer), Flatten, ChannelShuffle, Slice and Pad move values only (Pad's zeros are grid values too).
        case LayerKind::ReLU:
        case LayerKind::MaxPool2d:
        case LayerKind::ChannelMax:
        case LayerKind::Flatten:
        case LayerKind::ChannelShuffle:
        case LayerKind::Slice:
        case LayerKind::Pad:
            if (!m_points[j]) collectIntegerReaders(j + 1, out);
            break;
        default: break;
        }
    }
}

void QuantSim::setIntegerInputs(std::size_t point, std::optional<U8Grid> grid)
{
    if (point >= m_intReaders.size()) return;
    for (Conv2d* c : m_intReaders[point]) c->setIntegerInputGrid(grid);
}

void QuantSim::setIntegerWeights(bool on)
{
    for (const auto& [t, conv] : m_intConvs) {
        std::vector<float> scales;
        if (!on) { // also from the destructor, when a run stopped before its weights were first quantized
            conv->setIntegerWeightScales({});
            continue;
        }
        const QuantParams& p = weightParams(t);
        const std::size_t C = conv->outChannels();
        const bool perTensor = p.numSlots() == 1, perChannel = p.numSlots() == C && p.slotLength == p.rowLength;
        if (on && (perTensor || perChannel)) {
            scales.resize(perTensor ? 1 : C);
            for (std::size_t c = 0; c < scales.size(); ++c) scales[c] = p.scale[c];
            for (const Fold& f : m_folds) // the conv's weight is fq(w f) / f: per channel s / f
                if (f.target == t && f.factor.size() == C) {
                    std::vector<float> folded(C);
                    for (std::size_t c = 0; c < C; ++c) {
                        const float s = scales[perTensor ? 0 : c];
                        folded[c] = f.factor[c] != 0.0f ? s / f.factor[c] : s;
                    }
                    scales = std::move(folded);
                }
        }
        conv->setIntegerWeightScales(std::move(scales));
    }
}

} // namespace quantscope
