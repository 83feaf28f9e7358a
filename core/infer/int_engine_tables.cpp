// The integer engine's lookup tables: a pointwise activation (Sigmoid, GELU, ...) or one PReLU
// slope as 256 output bytes indexed by the input byte, built once from the layer's own float
// formula between the fake-quant's dequantize and quantize, so the engine equals the simulation.
#include "infer/int_engine_plan.h"

#include "nn/pointwise.h"
#include "nn/prelu.h"

namespace quantscope {

namespace {

// x[b] = dq_in(b): QuantSim's (q - zp) * scale. Bytes outside the input's range never occur; they
// map as their clamped neighbours.
std::array<float, 256> dequantizedBytes(const Domain& in)
{
    std::array<float, 256> x{};
    for (int b = 0; b < 256; ++b) {
        const std::int32_t q = std::clamp(b, in.lo(), in.hi()) - in.offset;
        x[static_cast<std::size_t>(b)] = static_cast<float>(q - in.aq.zeroPoint) * in.aq.scale;
    }
    return x;
}

// q_out(y[b]): nearbyint(y * (1 / scale)) + zp, clamped.
std::array<std::uint8_t, 256> quantizedBytes(const std::array<float, 256>& y, const Domain& out)
{
    std::array<std::uint8_t, 256> t{};
    for (std::size_t b = 0; b < 256; ++b) t[b] = quantizeInput(y[b], out);
    return t;
}

} // namespace

std::array<std::uint8_t, 256> activationTable(const StoredLayer& l, const Domain& in, const Domain& out)
{
    const std::array<float, 256> x = dequantizedBytes(in);
    std::array<float, 256> y{};
    pointwiseApply(l.kind, l.alpha, l.beta, x.data(), y.data(), 256);
    return quantizedBytes(y, out);
}

std::array<std::uint8_t, 256> preluTable(float a, const Domain& in, const Domain& out)
{
    const std::array<float, 256> x = dequantizedBytes(in);
    std::array<float, 256> y{};
    preluApply(a, x.data(), y.data(), 256);
    return quantizedBytes(y, out);
}

} // namespace quantscope
