// CIFAR-10 / CIFAR-100 binary version (https://www.cs.toronto.edu/~kriz/cifar.html):
// CIFAR-10 records are 1 label byte + 3072 pixel bytes, CIFAR-100 records a coarse and a fine
// label byte + 3072; the pixels are 1024 red, 1024 green, 1024 blue, each plane row-major 32x32.
#include "data/readers.h"

#include "util/atomic_file.h"
#include "util/errors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace quantscope {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kCifarSide = 32, kCifarPixels = 3 * kCifarSide * kCifarSide;
constexpr std::uint64_t kMaxCifarFileBytes = std::uint64_t{1} << 31;

const std::vector<std::string>& cifar10Names()
{
    static const std::vector<std::string> n = {"airplane", "automobile", "bird", "cat", "deer",
                                               "dog",      "frog",       "horse", "ship", "truck"};
    return n;
}

// The classes of a CIFAR folder whose labels go up to labelCount - 1: the non-empty lines of its
// names file (at least labelCount of them, at most `limit`, FormatError naming the file otherwise),
// else the first labelCount of `fallback` (numbered past its end). A subset of 5 classes with a
// names file of 5 lines was refused ("the dataset has 10 classes", tester 11); without one it made
// a model of 10 outputs, 5 never trained.
std::vector<std::string> classNames(const fs::path& p, std::size_t labelCount, std::size_t limit, const char* format,
                                    const std::vector<std::string>& fallback)
{
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) {
        std::vector<std::string> names(fallback.begin(), fallback.begin() + static_cast<std::ptrdiff_t>(std::min(labelCount, fallback.size())));
        for (std::size_t i = names.size(); i < labelCount; ++i) names.push_back(std::to_string(i));
        return names;
    }
    std::ifstream f(p);
    std::vector<std::string> names;
    for (std::string line; std::getline(f, line);) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) names.push_back(line);
        if (names.size() > limit) break; // a huge file: counted no further
    }
    if (names.size() > limit)
        throw FormatError(p.string() + ": holds more than " + std::to_string(limit) + " class names; " + format + " has at most " +
                          std::to_string(limit) + " classes");
    if (names.size() < labelCount)
        throw FormatError(p.string() + ": names " + std::to_string(names.size()) + " classes, but the labels go up to " +
                          std::to_string(labelCount - 1));
    return names;
}

// As many classes as the labels of both sets use.
std::size_t labelCount(const RawDataset& raw)
{
    std::int32_t largest = 0;
    for (const LabeledImages* set : {&raw.train, &raw.test})
        for (std::int32_t l : set->labels) largest = std::max(largest, l);
    return static_cast<std::size_t>(largest) + 1;
}

void append(LabeledImages& to, LabeledImages&& from)
{
    if (to.pixels.empty()) {
        to = std::move(from);
        return;
    }
    to.pixels.insert(to.pixels.end(), from.pixels.begin(), from.pixels.end());
    to.labels.insert(to.labels.end(), from.labels.begin(), from.labels.end());
}

LabeledImages readBatch(const fs::path& p, bool cifar100)
{
    return parseCifarBatch(readFileBytes(p.string(), kMaxCifarFileBytes), p.string(), cifar100);
}

} // namespace

LabeledImages parseCifarBatch(const std::vector<std::uint8_t>& bytes, const std::string& path, bool cifar100)
{
    const std::size_t head = cifar100 ? 2 : 1, record = head + kCifarPixels;
    if (bytes.empty()) throw FormatError(path + ": the file is empty (a CIFAR batch holds records of " +
                                         std::to_string(record) + " bytes)");
    const std::size_t count = bytes.size() / record;
    if (bytes.size() % record != 0)
        throw FormatError(path + ": record " + std::to_string(count + 1) + " is truncated (" +
                          std::to_string(bytes.size() % record) + " of " + std::to_string(record) +
                          " bytes); a " + (cifar100 ? "CIFAR-100" : "CIFAR-10") + " record is " +
                          (cifar100 ? "2 label bytes" : "1 label byte") + " + 3072 pixel bytes");
    LabeledImages s;
    s.channels = 3;
    s.height = s.width = kCifarSide;
    s.pixels.resize(count * kCifarPixels);
    s.labels.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint8_t* r = bytes.data() + i * record;
        const std::size_t label = r[head - 1], limit = cifar100 ? 100 : 10;
        if (cifar100 && r[0] >= 20)
            throw FormatError(path + ": record " + std::to_string(i + 1) + ": coarse label " + std::to_string(r[0]) +
                              " is out of range (CIFAR-100 has 20 superclasses)");
        if (label >= limit)
            throw FormatError(path + ": record " + std::to_string(i + 1) + ": label " + std::to_string(label) +
                              " is out of range (" + (cifar100 ? "CIFAR-100" : "CIFAR-10") + " has " +
                              std::to_string(limit) + " classes)");
        s.labels[i] = static_cast<std::int32_t>(label);
        std::copy_n(r + head, kCifarPixels, s.pixels.begin() + static_cast<std::ptrdiff_t>(i * kCifarPixels));
    }
    return s;
}

RawDataset readCifar(const std::string& dir, bool cifar100)
{
    const fs::path d(dir);
    RawDataset raw;
    raw.name = d.filename().string();
    if (raw.name.empty()) raw.name = d.parent_path().filename().string();
    std::error_code ec;
    auto need = [&](const char* f) {
        if (!fs::is_regular_file(d / f, ec))
            throw IoError((d / f).string() + ": missing (a " + (cifar100 ? "CIFAR-100" : "CIFAR-10") +
                          " folder holds " + (cifar100 ? "train.bin and test.bin" : "data_batch_1..5.bin and test_batch.bin") + ")");
        return d / f;
    };
    if (cifar100) {
        raw.train = readBatch(need("train.bin"), true);
        raw.test = readBatch(need("test.bin"), true);
        raw.split = "test.bin";
        raw.classNames = classNames(d / "fine_label_names.txt", labelCount(raw), 100, "CIFAR-100", {});
    } else {
        // The five training batches; a smaller set may hold fewer, from 1 on without a gap (a
        // missing data_batch_2.bin silently dropped batches 3-5: a partial download trained on a
        // fifth of the data, tester 12).
        need("data_batch_1.bin");
        int missing = 0;
        for (int b = 1; b <= 5; ++b) {
            const fs::path p = d / ("data_batch_" + std::to_string(b) + ".bin");
            if (!fs::is_regular_file(p, ec)) {
                if (!missing) missing = b;
                continue;
            }
            if (missing)
                throw IoError((d / ("data_batch_" + std::to_string(missing) + ".bin")).string() + ": missing, but " +
                              p.filename().string() + " is there (an interrupted download?); the training batches are read from 1 on without a gap");
            append(raw.train, readBatch(p, false));
        }
        raw.test = readBatch(need("test_batch.bin"), false);
        raw.split = "test_batch.bin";
        raw.classNames = classNames(d / "batches.meta.txt", labelCount(raw), 10, "CIFAR-10", cifar10Names());
    }
    return raw;
}

} // namespace quantscope
