// Run-time CPU facts shared by the tensor kernels' dispatchers (gemm_bf16, gemm_s8). Each is read
// once per process: CPUID serialises and, in a virtual machine, traps to the hypervisor.
#pragma once

namespace quantscope {

// CPUID.(EAX=7, ECX=0):EDX bit 24 AMX-TILE with bit 22 AMX-BF16, or with bit 25 AMX-INT8 (Intel
// SDM vol. 2A, CPUID). Read directly: clang 14's __builtin_cpu_supports does not know them.
bool cpuHasAmxBf16();
bool cpuHasAmxInt8();
// Linux >= 5.16 keeps AMX tile data off until the process asks for it (arch_prctl
// ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; arch/x86/include/uapi/asm/prctl.h). Asked once.
bool amxTileDataPermitted();
// CPUID leaf 0 vendor "AuthenticAMD". AMD's Zen 4 and Zen 5 issue VDPBF16PS at the rate of an FP32
// FMA (twice its multiply-adds), where Intel's Cooper Lake and Sapphire Rapids issue it at half
// that (one port), so whether AVX512_BF16 alone beats FP32 depends on the vendor.
bool cpuIsAmd();
// AMD family 19h (Zen 3, Zen 4: CPUID leaf 1 base family 0Fh + extended family 0Ah; AMD's Software
// Optimization Guide for family 19h): Zen 4 executes each 512-bit AVX-512 operation as two
// 256-bit halves, so kernels that a 512-bit datapath favours may not win there (Zen 3 has no AVX-512).
bool cpuSplitsAvx512();

} // namespace quantscope
