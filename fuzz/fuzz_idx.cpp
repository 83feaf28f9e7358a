// libFuzzer target for the IDX reader: plain and gzip-compressed inputs go through the same path
// as files on disk (an in-memory file), then through parseIdx for any rank. Only typed
// quantscope errors may come out.
#include "data/idx.h"
#include "util/errors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    static const int fd = memfd_create("fuzz-idx", 0);
    static const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
    try {
        const std::vector<std::uint8_t> bytes = readFileMaybeGzip(path, std::uint64_t{1} << 24);
        for (std::size_t rank : {0, 1, 3}) {
            try {
                const IdxArray a = parseIdx(bytes, path, rank);
                std::uint64_t n = 1;
                for (std::uint32_t d : a.dims) n *= d;
                if (n != a.data.size()) __builtin_trap();
            } catch (const FormatError&) {
            }
        }
    } catch (const Error&) {
    }
    return 0;
}
