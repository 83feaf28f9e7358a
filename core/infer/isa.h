// Which integer kernels the engine runs: the AVX-512 VNNI kernel, the AVX2 kernel, or the scalar
// reference twin both are tested against. Chosen at run time from what the CPU reports.
#pragma once

#include <string>

namespace quantscope {

enum class Isa { Scalar, Avx2, Avx512Vnni };

const char* isaName(Isa isa); // "scalar", "avx2", "avx512-vnni"
// "auto" -> bestIsa(); throws ConfigError for an unknown name or one this CPU cannot run.
Isa parseIsa(const std::string& name);
bool isaSupported(Isa isa);
// The fastest kernel this CPU runs (QUANTSCOPE_ISA=scalar|avx2|avx512-vnni overrides it).
Isa bestIsa();
// The kernels this CPU runs, for --version and Help > About: "integer avx512-vnni, bf16
// avx512-bf16" (bestIsa, bestBf16Path). An override it cannot run (QUANTSCOPE_ISA, QS_BF16_PATH)
// gives that error's text instead: never throws a ConfigError.
std::string kernelSummary();

} // namespace quantscope
