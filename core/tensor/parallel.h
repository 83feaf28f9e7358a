// Parallel helpers over TBB. All parallel loops in core go through these, so that chunking is
// fixed by the problem size (never by the thread count) and results are deterministic.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include <cstddef>

namespace quantscope {

// Calls body(begin, end) over [0, n) in chunks of `grain`; chunk boundaries do not depend on
// the number of threads.
template <typename Body>
void parallelChunks(std::size_t n, std::size_t grain, Body&& body)
{
    if (n == 0) return;
    if (grain == 0) grain = 1;
    const std::size_t chunks = (n + grain - 1) / grain;
    if (chunks == 1) {
        body(std::size_t{0}, n);
        return;
    }
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, chunks, 1),
        [&](const tbb::blocked_range<std::size_t>& r) {
            for (std::size_t c = r.begin(); c != r.end(); ++c) {
                const std::size_t b = c * grain;
                const std::size_t e = b + grain < n ? b + grain : n;
                body(b, e);
            }
        },
        tbb::simple_partitioner());
}

// Calls body(i) for every i in [0, n), in parallel.
template <typename Body>
void parallelFor(std::size_t n, Body&& body)
{
    parallelChunks(n, 1, [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) body(i);
    });
}

// A grain that splits n elementwise items into pieces of at least ~16k elements.
inline std::size_t elementwiseGrain(std::size_t n) { return n < 32768 ? n : 16384; }

} // namespace quantscope
