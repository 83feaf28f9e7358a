// Parallel helpers over TBB. All parallel loops in core go through these, so that chunking is
// fixed by the problem size (never by the thread count) and results are deterministic.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include <cstddef>
#include <utility>

// ThreadSanitizer cannot see the ordering that oneTBB gives a parallel_for: libtbb (Debian's
// libtbb12) is not instrumented, so the hand-over of a chunk to a worker and the join at the end
// happen through atomics and futex waits TSan never sees. Under -fsanitize=thread every chunk
// then "races" with the code before and after the loop (tens of thousands of reports a training
// step, which also slowed TSan's report bookkeeping to a crawl). The annotations below state that
// ordering where TBB provides it (the spawner's writes happen before each chunk; each chunk
// happens before parallel_for returns), so TSan checks the chunks against each other and reports
// a real race between two chunks or with another thread. They compile to nothing otherwise.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define QS_TSAN_RELEASE(addr) __tsan_release(addr)
#define QS_TSAN_ACQUIRE(addr) __tsan_acquire(addr)
#else
#define QS_TSAN_RELEASE(addr) ((void)(addr))
#define QS_TSAN_ACQUIRE(addr) ((void)(addr))
#endif

namespace quantscope {

namespace detail {
#if defined(__SANITIZE_THREAD__)
// The loop body as TBB holds it: TBB copies it into each task it makes (the root task on the
// spawner, each half of a split range on the thread that splits it) and publishes the task through
// libtbb's task pool, which TSan does not see; another thread then runs it. Each copy releases its
// own address once written, and each call acquires it before reading the body's captures, so TSan
// orders the copy before the run (as TBB's publication does) and keeps checking the chunks against
// each other. Without it a chunk's read of its captures "raced" with the thread that made the task,
// or with an earlier task that libtbb's allocator had put at the same address (tst_infer, 2026-11-30).
template <class F>
struct TsanTaskBody {
    F f;
    explicit TsanTaskBody(F fn) : f(std::move(fn)) { __tsan_release(this); }
    TsanTaskBody(const TsanTaskBody& o) : f(o.f) { __tsan_release(this); }
    TsanTaskBody& operator=(const TsanTaskBody&) = delete;
    void operator()(const tbb::blocked_range<std::size_t>& r) const
    {
        __tsan_acquire(const_cast<TsanTaskBody*>(this));
        f(r);
    }
};
template <class F> TsanTaskBody<F> taskBody(F f) { return TsanTaskBody<F>(std::move(f)); }
#else
template <class F> F taskBody(F f) { return f; }
#endif
} // namespace detail

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
    [[maybe_unused]] char spawned = 0, joined = 0; // TSan synchronisation addresses only
    QS_TSAN_RELEASE(&spawned);
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, chunks, 1),
        detail::taskBody([&](const tbb::blocked_range<std::size_t>& r) {
            QS_TSAN_ACQUIRE(&spawned);
            for (std::size_t c = r.begin(); c != r.end(); ++c) {
                const std::size_t b = c * grain;
                const std::size_t e = b + grain < n ? b + grain : n;
                body(b, e);
            }
            QS_TSAN_RELEASE(&joined);
        }),
        tbb::simple_partitioner());
    QS_TSAN_ACQUIRE(&joined);
}

// Calls body(i) for every i in [0, n), in parallel.
template <typename Body>
void parallelFor(std::size_t n, Body&& body)
{
    parallelChunks(n, 1, [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) body(i);
    });
}

// body(i) for i in [0, n), split evenly over the arena's threads with TBB's static partitioner:
// a second loop over the same n hands the same items to the same threads (as far as TBB keeps
// its affinity), so passes that walk a batch twice (BatchNorm's statistics, then its output)
// find the images in the core's own cache. Results must not depend on the split (each item
// writes its own outputs), as with parallelFor.
template <typename Body>
void parallelForStatic(std::size_t n, Body&& body)
{
    if (n == 0) return;
    [[maybe_unused]] char spawned = 0, joined = 0;
    QS_TSAN_RELEASE(&spawned);
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, n, 1),
        detail::taskBody([&](const tbb::blocked_range<std::size_t>& r) {
            QS_TSAN_ACQUIRE(&spawned);
            for (std::size_t i = r.begin(); i != r.end(); ++i) body(i);
            QS_TSAN_RELEASE(&joined);
        }),
        tbb::static_partitioner());
    QS_TSAN_ACQUIRE(&joined);
}

// A grain that splits n elementwise items into pieces of at least ~16k elements.
inline std::size_t elementwiseGrain(std::size_t n) { return n < 32768 ? n : 16384; }

} // namespace quantscope
