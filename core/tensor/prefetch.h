// A software prefetch of a span of floats, for the layout passes whose reads the hardware
// prefetcher does not foresee.
#pragma once

#include <cstddef>
#include <cstdint>

namespace quantscope {

// Asks for the cache lines of [p, p + n) into L1 ahead of their use: a hint, with no fault on any
// address and no effect on any value. The layout passes read an image's planes of a few KB
// (28 x 28 floats: 49 lines), images C H W floats apart: too short a stream for the hardware
// prefetcher to find before the plane ends. They ask for the next plane's rows while they
// convert the current one's (resnet8's training step on Zen 5: FP32 -3.0 %, bf16 -1.3 %, QAT -1.1 %,
// bench_model_layers, alternated runs).
inline void prefetchSpan(const float* p, std::size_t n)
{
    const auto* end = reinterpret_cast<const char*>(p + n);
    const auto first = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{63};
    for (const char* a = reinterpret_cast<const char*>(first); a < end; a += 64) __builtin_prefetch(a, 0, 3);
}

// For a pass that walks a tensor of `size` floats plane by plane, `n` floats at `at`: the span
// at least 4 KB ahead (the next plane, or further for planes under 4 KB), clipped to the tensor.
// The hardware prefetcher starts again at each 4 KB page; this keeps the stream ahead of it.
inline void prefetchAhead(const float* base, std::size_t at, std::size_t n, std::size_t size)
{
    const std::size_t from = at + (n > 1024 ? n : 1024);
    if (from < size) prefetchSpan(base + from, (size - from < n ? size - from : n));
}

// The same for lines about to be written (a write's read-for-ownership started ahead): the
// planes a pass writes C H W floats apart, as fromRuns writes a convolution's output.
inline void prefetchSpanForWrite(float* p, std::size_t n)
{
    const auto* end = reinterpret_cast<const char*>(p + n);
    const auto first = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{63};
    for (const char* a = reinterpret_cast<const char*>(first); a < end; a += 64) __builtin_prefetch(a, 1, 3);
}

} // namespace quantscope
