// The broadcast of a [N, C, 1, 1] gate over a [N, C, H, W] map that Add and Mul share
// (channelGateOf in nn/layer.h says which input is the gate).
#pragma once

#include "tensor/parallel.h"
#include "tensor/tensor.h"

#include <algorithm>
#include <cstddef>

namespace quantscope {

// Planes per parallel chunk for a per-plane pass over `total` values in planes of `hw`: about
// elementwiseGrain's share of values, whole planes, at least one.
inline std::size_t gatePlaneGrain(std::size_t total, std::size_t hw)
{
    return std::max<std::size_t>(1, elementwiseGrain(total) / std::max<std::size_t>(hw, 1));
}

// out[p * hw + i] = f(x[p * hw + i], gate[p]) for every plane p of the map x (gate.numel() planes
// of hw = x.numel() / gate.numel() values), in parallel chunks of whole planes. out has x's size.
template <class F>
void forEachGatedPlane(const Tensor& x, const Tensor& gate, float* out, F f)
{
    const std::size_t planes = gate.numel(), hw = planes ? x.numel() / planes : 0;
    const float* px = x.data();
    const float* pg = gate.data();
    parallelChunks(planes, gatePlaneGrain(x.numel(), hw), [=](std::size_t lo, std::size_t hi) {
        for (std::size_t p = lo; p < hi; ++p) {
            const float s = pg[p];
            const float* __restrict src = px + p * hw;
            float* __restrict dst = out + p * hw;
            for (std::size_t i = 0; i < hw; ++i) dst[i] = f(src[i], s);
        }
    });
}

} // namespace quantscope
