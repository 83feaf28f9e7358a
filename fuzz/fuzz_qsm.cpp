// libFuzzer target for the .qsm reader, on each input as given and with its header's size and
// CRC repaired (so mutations reach the parser). Any input must either decode to a model that validates
// (which the runners then build and run on one image) or throw a quantscope::Error; anything
// else (a crash, a sanitizer report, another exception, a huge allocation) is a finding.
#include "infer/model_runner.h"
#include "io/qsm.h"
#include "util/errors.h"

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

void decodeAndRun(const std::vector<std::uint8_t>& bytes)
{
    using namespace quantscope;
    try {
        const ExportedModel m = decodeQsm(bytes, "fuzz.qsm");
        // Keep runs short: only small models are executed.
        if (m.numParams() > 200000 || m.channels * m.height * m.width > 4096) return;
        RunnerOptions o;
        o.threads = 1;
        ModelRunner r(m, o);
        std::vector<std::uint8_t> px(m.channels * m.height * m.width, 127);
        std::int32_t pred = -1;
        r.predict(px.data(), 1, &pred);
        if (pred < 0 || static_cast<std::size_t>(pred) >= m.classes) __builtin_trap();
    } catch (const Error&) {
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::vector<std::uint8_t> bytes(data, data + size);
    decodeAndRun(bytes); // as given: mostly stopped by the header checks and the CRC
    if (size >= quantscope::kQsmHeaderSize) {
        // With the payload size and CRC made right, so mutations reach the parser.
        const std::uint64_t payload = size - quantscope::kQsmHeaderSize;
        std::memcpy(bytes.data() + 16, &payload, 8);
        const auto crc = static_cast<std::uint32_t>(crc32(0, bytes.data() + quantscope::kQsmHeaderSize, static_cast<uInt>(payload)));
        std::memcpy(bytes.data() + 24, &crc, 4);
        decodeAndRun(bytes);
    }
    return 0;
}
