// Small tensor helpers shared by the layer and graph tests: random inputs, bitwise equality, and
// running a body inside a TBB arena of a given size.
#pragma once

#include "tensor/tensor.h"
#include "util/rng.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <cstring>
#include <utility>

namespace quantscope::testing {

// Uniform values in [lo, hi).
inline Tensor randomTensor(const Shape& shape, Rng& rng, float lo = -1.0f, float hi = 1.0f)
{
    Tensor t(shape);
    for (float& v : t.values()) v = rng.uniform(lo, hi);
    return t;
}

// Same shape and the same bits in every element.
inline bool bitIdentical(const Tensor& a, const Tensor& b)
{
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0;
}

// Runs f inside a TBB arena of `threads` threads.
template <typename F>
void inArena(int threads, F&& f)
{
    tbb::task_arena arena(threads);
    arena.execute(std::forward<F>(f));
}

} // namespace quantscope::testing
