// libFuzzer target for the .qsm reader, on each input as given and with its header's size and
// CRC repaired (so mutations reach the parser). Any input must either decode to a model that validates
// (which the runners then build and run on one image) or throw a quantscope::Error; anything
// else (a crash, a sanitizer report, another exception, a huge allocation) is a finding.
#include "io/qsm.h"
#include "util/errors.h"

#include "run_accepted.h"

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

void decodeAndRun(const std::vector<std::uint8_t>& bytes)
{
    using namespace quantscope;
    try {
        fuzz::runOnOneImage(decodeQsm(bytes, "fuzz.qsm"));
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
