// libFuzzer target for the CIFAR-10/100 binary reader (readCifar): the first input byte picks the
// layout (even: CIFAR-10, odd: CIFAR-100), the next two give the length of a names file
// (batches.meta.txt / fine_label_names.txt) taken from the input, and the rest is written as both
// the training and the test batch, in a private folder. Only typed quantscope errors may come out;
// an accepted folder must hold labels below its class count and 3072 pixels per record.
#include "data/readers.h"
#include "util/errors.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace {

bool writeFile(const std::string& path, const std::uint8_t* data, std::size_t size)
{
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
    return std::fclose(f) == 0 && written;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    if (size < 3) return 0;
    static const std::string dir = [] {
        char tmpl[] = "/dev/shm/fuzz-cifar-XXXXXX";
        const char* d = mkdtemp(tmpl);
        return std::string(d ? d : "");
    }();
    if (dir.empty()) return 0;
    const bool hundred = data[0] % 2 == 1;
    const std::size_t namesLen = std::min<std::size_t>(size - 3, std::size_t{data[1]} | std::size_t{data[2]} << 8);
    const std::uint8_t* names = data + 3;
    const std::uint8_t* batch = names + namesLen;
    const std::size_t batchLen = size - 3 - namesLen;
    std::error_code ec;
    for (const char* f : {"data_batch_1.bin", "test_batch.bin", "train.bin", "test.bin", "batches.meta.txt", "fine_label_names.txt"})
        std::filesystem::remove(dir + "/" + f, ec);
    const bool ok = hundred ? writeFile(dir + "/train.bin", batch, batchLen) && writeFile(dir + "/test.bin", batch, batchLen) &&
                                  (namesLen == 0 || writeFile(dir + "/fine_label_names.txt", names, namesLen))
                            : writeFile(dir + "/data_batch_1.bin", batch, batchLen) && writeFile(dir + "/test_batch.bin", batch, batchLen) &&
                                  (namesLen == 0 || writeFile(dir + "/batches.meta.txt", names, namesLen));
    if (!ok) return 0;
    try {
        const RawDataset raw = readCifar(dir, hundred);
        for (const LabeledImages* set : {&raw.train, &raw.test}) {
            if (set->size() * 3072 != set->pixels.size()) __builtin_trap();
            for (std::int32_t l : set->labels)
                if (l < 0 || static_cast<std::size_t>(l) >= raw.classNames.size()) __builtin_trap();
        }
    } catch (const Error&) {
    }
    return 0;
}
