#include "infer/isa.h"

#include "tensor/gemm_bf16.h"
#include "util/errors.h"

#include <cstdlib>

namespace quantscope {

const char* isaName(Isa isa)
{
    switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512Vnni: return "avx512-vnni";
    }
    return "?";
}

bool isaSupported(Isa isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return __builtin_cpu_supports("avx2");
    case Isa::Avx512Vnni:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return false;
}

Isa parseIsa(const std::string& name)
{
    if (name == "auto") return bestIsa();
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
        if (name != isaName(isa)) continue;
        if (!isaSupported(isa)) throw ConfigError("this CPU cannot run the " + name + " kernels");
        return isa;
    }
    throw ConfigError("unknown kernel set '" + name + "' (known: auto, avx512-vnni, avx2, scalar)");
}

Isa bestIsa()
{
    if (const char* env = std::getenv("QUANTSCOPE_ISA"); env && *env && std::string(env) != "auto") return parseIsa(env);
    if (isaSupported(Isa::Avx512Vnni)) return Isa::Avx512Vnni;
    if (isaSupported(Isa::Avx2)) return Isa::Avx2;
    return Isa::Scalar;
}

std::string kernelSummary()
{
    try {
        return std::string("integer ") + isaName(bestIsa()) + ", bf16 " + bf16PathName(bestBf16Path());
    } catch (const ConfigError& e) {
        return e.what();
    }
}

} // namespace quantscope
