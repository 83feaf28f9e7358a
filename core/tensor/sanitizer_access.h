// Internal to core's run-time dispatched SIMD kernels (the TUs compiled under a target pragma:
// tensor/gemm_*_avx512.cpp, tensor/gemm_*_amx.cpp, infer/int_*_avx512.cpp): states their masked
// vector loads and stores and their gathers to AddressSanitizer and ThreadSanitizer. GCC (12)
// instruments neither: a full-mask _mm512_maskz_loadu_epi8 past a heap block ran silently under
// -fsanitize=address (san6, /tmp/san6/exp/t.cpp), as the AMX tile loads did (amx_runs_kernel.h).
// Under a sanitizer each call states the lanes the mask enables, one contiguous span at a time,
// through the sanitizer's own entry point (a bad lane is reported at the caller as a READ or WRITE
// of the span's size); in other builds they are empty, and the kernels call them through
// QS_SANITIZER_ONLY so that not even their arguments are computed.
#pragma once

#include <cstddef>
#include <cstdint>

// libasan's __asan_loadN/__asan_storeN, libtsan's __tsan_read_range/__tsan_write_range (as GCC
// declares them under -fsanitize in GNU mode, not in -std=c++20).
#if defined(__SANITIZE_ADDRESS__)
extern "C" void __asan_loadN(void* addr, long n);
extern "C" void __asan_storeN(void* addr, long n);
#elif defined(__SANITIZE_THREAD__)
extern "C" void __tsan_read_range(void* addr, long n);
extern "C" void __tsan_write_range(void* addr, long n);
#endif

// QS_SANITIZER_ONLY(statement): the statement under a sanitizer, nothing otherwise (its
// arguments are not even evaluated, so the kernels compile to the same code as without it).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define QS_SANITIZER_ONLY(...) __VA_ARGS__
#else
#define QS_SANITIZER_ONLY(...) ((void)0)
#endif

namespace quantscope::sanitizer {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline void stateSpan(void* p, long bytes, bool write)
{
#if defined(__SANITIZE_ADDRESS__)
    if (write) __asan_storeN(p, bytes);
    else __asan_loadN(p, bytes);
#else
    if (write) __tsan_write_range(p, bytes);
    else __tsan_read_range(p, bytes);
#endif
}

// Lanes i with bit i of mask set, each `elem` bytes, from p: each run of set bits as one span.
inline void stateMasked(const void* p, std::uint64_t mask, std::size_t elem, bool write)
{
    auto* base = const_cast<std::uint8_t*>(static_cast<const std::uint8_t*>(p));
    while (mask) {
        const int lo = __builtin_ctzll(mask);
        const std::uint64_t rest = mask >> lo;
        const int len = rest == ~std::uint64_t{0} ? 64 - lo : __builtin_ctzll(~rest);
        stateSpan(base + static_cast<std::size_t>(lo) * elem, static_cast<long>(static_cast<std::size_t>(len) * elem), write);
        mask = lo + len >= 64 ? 0 : mask & ~(((std::uint64_t{1} << len) - 1) << lo);
    }
}
#endif

// A masked load (_mm*_maskz_loadu_*, _mm*_mask_loadu_*) of elements of `elem` bytes at p.
inline void maskedRead([[maybe_unused]] const void* p, [[maybe_unused]] std::uint64_t mask,
                       [[maybe_unused]] std::size_t elem)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    stateMasked(p, mask, elem, false);
#endif
}

// A masked store (_mm*_mask_storeu_*, _mm512_mask_cvtepi32_storeu_epi8: elem = the stored width).
inline void maskedWrite([[maybe_unused]] void* p, [[maybe_unused]] std::uint64_t mask, [[maybe_unused]] std::size_t elem)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    stateMasked(p, mask, elem, true);
#endif
}

// A masked gather (_mm512_mask_i32gather_*) of 16 elements of `scale` bytes at
// base + (idx[i] + offset) * scale, lanes i with bit i of mask (idx: the 16 indices in memory).
inline void gatherRead([[maybe_unused]] const void* base, [[maybe_unused]] const std::int32_t* idx,
                       [[maybe_unused]] std::int32_t offset, [[maybe_unused]] std::uint64_t mask, [[maybe_unused]] int scale)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    auto* b = const_cast<std::uint8_t*>(static_cast<const std::uint8_t*>(base));
    for (int i = 0; i < 16; ++i)
        if (mask >> i & 1)
            stateSpan(b + (static_cast<std::ptrdiff_t>(idx[i]) + offset) * scale, static_cast<long>(scale), false);
#endif
}

} // namespace quantscope::sanitizer
