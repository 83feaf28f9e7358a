// libFuzzer target for the CSV dataset reader (readCsvDataset): the input is written as a CSV file,
// alone in a private folder (no classes.txt), and read as a dataset, with its shape inferred and
// with a 4x4 shape given. Only typed quantscope errors may come out; an accepted dataset must hold
// labels below its class count and pixel counts that match its shape.
#include "data/readers.h"
#include "util/errors.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    static const std::string dir = [] {
        char tmpl[] = "/dev/shm/fuzz-csv-XXXXXX";
        const char* d = mkdtemp(tmpl);
        return std::string(d ? d : "");
    }();
    if (dir.empty()) return 0;
    const std::string path = dir + "/data.csv";
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return 0;
    const bool written = std::fwrite(data, 1, size, f) == size;
    if (std::fclose(f) != 0 || !written) return 0;
    for (int given = 0; given < 2; ++given) {
        DatasetOptions opts;
        opts.dir = path;
        if (given) opts.imageShape = ImageShape{1, 4, 4};
        try {
            const RawDataset raw = readCsvDataset(path, opts);
            for (const LabeledImages* set : {&raw.train, &raw.test}) {
                if (set->size() * set->imageBytes() != set->pixels.size()) __builtin_trap();
                if (!set->sources.empty() && set->sources.size() != set->size()) __builtin_trap();
                for (std::int32_t l : set->labels)
                    if (l < 0 || static_cast<std::size_t>(l) >= raw.classNames.size()) __builtin_trap();
            }
        } catch (const Error&) {
        }
    }
    return 0;
}
