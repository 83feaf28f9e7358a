// Test helper: replaces the global operator new/delete of the test binary that includes it
// (include it from exactly one .cpp), so a test can assert that reading a hostile header never
// asks for more than a little memory: reset g_largestAllocation, run, read it back.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

inline std::atomic<std::size_t> g_largestAllocation{0};

void* operator new(std::size_t n)
{
    std::size_t prev = g_largestAllocation.load(std::memory_order_relaxed);
    while (n > prev && !g_largestAllocation.compare_exchange_weak(prev, n, std::memory_order_relaxed)) {
    }
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
