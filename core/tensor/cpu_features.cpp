#include "tensor/cpu_features.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace quantscope {

namespace {

constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

unsigned cpuidLeaf7Edx()
{
    static const unsigned edx = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) ? d : 0u;
    }();
    return edx;
}

} // namespace

bool cpuHasAmxBf16() { return (cpuidLeaf7Edx() >> 24 & 1u) && (cpuidLeaf7Edx() >> 22 & 1u); }
bool cpuHasAmxInt8() { return (cpuidLeaf7Edx() >> 24 & 1u) && (cpuidLeaf7Edx() >> 25 & 1u); }

bool cpuIsAmd()
{
    static const bool amd = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
        return b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; // "Auth" "enti" "cAMD"
    }();
    return amd;
}

bool cpuSplitsAvx512()
{
    static const bool split = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!cpuIsAmd() || !__get_cpuid(1, &a, &b, &c, &d)) return false;
        const unsigned base = a >> 8 & 0xFu, ext = a >> 20 & 0xFFu;
        return (base == 0xFu ? base + ext : base) == 0x19u;
    }();
    return split;
}

bool amxTileDataPermitted()
{
    static const bool ok = [] {
#if defined(__linux__) && defined(SYS_arch_prctl)
        return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
        return false;
#endif
    }();
    return ok;
}

} // namespace quantscope
