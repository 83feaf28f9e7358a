// libFuzzer target for the image decoder (libpng's reading API with its setjmp error path, and
// libjpeg-turbo, CMYK included): arbitrary bytes through readImageInfo and decodeImage at 1 and 3
// channels, from an in-memory file. Only typed quantscope errors may come out, and a decoded image
// has exactly width x height x channels bytes. Seed corpus: tests/data/png_modes.
#include "data/image_codec.h"
#include "util/errors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    static const int fd = memfd_create("fuzz-image", 0);
    static const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
    try {
        const ImageInfo header = readImageInfo(path);
        if (header.width * header.height > (std::size_t{1} << 22)) return 0; // large but valid: not this target's business
        for (std::size_t channels : {1, 3}) {
            ImageInfo info;
            const std::vector<std::uint8_t> px = decodeImage(path, channels, &info);
            if (px.size() != info.width * info.height * channels || info.width != header.width) __builtin_trap();
        }
    } catch (const Error&) {
    }
    return 0;
}
