// QuantSim's observer ranges taken where the producer writes an output (LayerHooks::outputSink,
// train/quant_sim.h): image group by image group as the layer writes them (imagesWritten), or the
// whole output's range before it is written, with the producer fake-quantizing the output in its
// own pass (outputRange, BatchNorm2d).
#include "train/quant_sim.h"

#include "quant/observer.h"
#include "quant/quantize.h"

#include <cmath>
#include <limits>
#include <vector>

namespace quantscope {

bool QuantSim::observesOutput(std::size_t layer) const
{
    const std::size_t point = layer + 1;
    if (layer >= m_points.size() || !m_points[layer] || !m_actsEnabled || !m_observing) return false;
    return point < m_pfmt.size() && m_pfmt[point] && needsScale(*m_pfmt[point]) && !(m_lsq && m_lsqAct[point]) && m_act[point] &&
           m_act[point]->takesBatchRange();
}

OutputImageSink* QuantSim::outputSink(std::size_t layer, const Shape& y)
{
    m_rangeSinkArmed = false;
    if (!observesOutput(layer) || y.size() != 4) return nullptr;
    const std::size_t point = layer + 1;
    RangeSink& rs = m_rangeSink;
    rs.sim = this;
    rs.point = point;
    rs.shape = y;
    rs.rangeTaken = false;
    rs.fakeQuantized = false;
    const std::size_t N = y[0];
    rs.mins.assign(N, 0.0f);
    rs.maxs.assign(N, 0.0f);
    rs.nonFinite.assign(N, 0);
    rs.counts.assign(N, 0);
    rs.images.store(0);
    m_rangeSinkArmed = true;
    return &rs;
}

void QuantSim::RangeSink::imagesWritten(const Tensor& y, std::size_t n0, std::size_t count)
{
    if (y.shape() != shape || n0 + count > shape[0] || count == 0) return;
    const std::size_t image = y.numel() / shape[0];
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    nonFinite[n0] = finiteMinMax(y.data() + n0 * image, count * image, mn, mx);
    mins[n0] = mn;
    maxs[n0] = mx;
    counts[n0] = count;
    images.fetch_add(count);
}

bool QuantSim::RangeSink::outputRange(const Shape& y, float lo, float hi, FakeQuantGrid& grid)
{
    if (!sim || y != shape || rangeTaken || images.load() != 0 || !(lo <= hi)) return false;
    ActivationQuantizer& q = *sim->m_act[point];
    if (!q.takesBatchRange()) return false;
    q.observeBatchRange(lo, hi, 0); // as quantizeActivation observes the sink's ranges
    rangeTaken = true;
    if (sim->m_observeOnly || !q.ready()) return true;
    const QuantParams& p = q.params();
    if (!p.perTensor() || p.signOnly || p.scale.size() != 1 || !(p.scale[0] > 0.0f) || !std::isfinite(p.scale[0]))
        return true;
    std::vector<std::uint8_t>& mask = sim->m_actMask[point];
    mask.resize(shapeNumel(y));
    grid.scale = p.scale[0];
    grid.zeroPoint = p.zeroPoint.at(0);
    grid.qmin = p.qmin;
    grid.qmax = p.qmax;
    grid.mask = mask.data();
    fakeQuantized = true;
    return true;
}

} // namespace quantscope
