// libFuzzer target for the .qsm reader. Any input must either decode to a model that validates
// (which the runners then build and run on one image) or throw a quantscope::Error; anything
// else (a crash, a sanitizer report, another exception, a huge allocation) is a finding.
#include "infer/model_runner.h"
#include "io/qsm.h"
#include "util/errors.h"

#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    const std::vector<std::uint8_t> bytes(data, data + size);
    try {
        const ExportedModel m = decodeQsm(bytes, "fuzz.qsm");
        // Keep runs short: only small models are executed.
        if (m.numParams() > 200000 || m.channels * m.height * m.width > 4096) return 0;
        RunnerOptions o;
        o.threads = 1;
        ModelRunner r(m, o);
        std::vector<std::uint8_t> px(m.channels * m.height * m.width, 127);
        std::int32_t pred = -1;
        r.predict(px.data(), 1, &pred);
        if (pred < 0 || static_cast<std::size_t>(pred) >= m.classes) __builtin_trap();
    } catch (const Error&) {
    }
    return 0;
}
