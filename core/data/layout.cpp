// Which layout a dataset path holds (detectLayout), the shape options' parsing, and the helpers
// the readers share: subsets, the seeded per-class train/test split, class-name files.
#include "data/readers.h"

#include "data/image_codec.h"
#include "util/ascii_text.h"
#include "util/errors.h"
#include "util/rng.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace quantscope {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxShapeSide = 4096;

bool isFile(const fs::path& p)
{
    std::error_code ec;
    return fs::is_regular_file(p, ec);
}

bool hasIdx(const fs::path& d)
{
    for (const char* f : {"train-images-idx3-ubyte", "train-images.idx3-ubyte"})
        for (const char* ext : {"", ".gz"})
            if (isFile(d / (std::string(f) + ext))) return true;
    return false;
}

// A layout recognisable from the files directly in `d`, if any.
bool detectFiles(const fs::path& d, DetectedLayout& out)
{
    if (hasIdx(d)) out = {DatasetLayout::Idx, d.string()};
    else if (isFile(d / "data_batch_1.bin") || isFile(d / "test_batch.bin")) out = {DatasetLayout::Cifar10, d.string()};
    else if (isFile(d / "train.bin") && isFile(d / "test.bin")) out = {DatasetLayout::Cifar100, d.string()};
    else if (isFile(d / "train.csv")) out = {DatasetLayout::Csv, d.string()};
    else return false;
    return true;
}

// A folder with sub-folders that hold images (directly or deeper): an image folder.
bool hasClassFolders(const fs::path& d)
{
    std::error_code ec;
    for (const auto& c : fs::directory_iterator(d, ec)) {
        if (!c.is_directory(ec) || skippedFolderName(c.path().filename().string())) continue;
        for (auto it = fs::recursive_directory_iterator(c.path(), ec); !ec && it != fs::recursive_directory_iterator();
             it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (it->is_directory(ec) && skippedFolderName(name)) it.disable_recursion_pending();
            else if (it->is_regular_file(ec) && !skippedFileName(name) && isImageFileName(name)) return true;
        }
    }
    return false;
}

std::size_t parseSide(const std::string& text, const std::string& part, const char* flag)
{
    std::size_t v = 0;
    const auto r = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || r.ec != std::errc() || r.ptr != part.data() + part.size() || v == 0 || v > kMaxShapeSide)
        throw ConfigError(std::string(flag) + ": '" + text + "': each size must be a whole number from 1 to " +
                          std::to_string(kMaxShapeSide));
    return v;
}

std::vector<std::string> splitX(const std::string& text)
{
    std::vector<std::string> parts(1);
    for (char c : text) {
        if (c == 'x' || c == 'X') parts.emplace_back();
        else parts.back() += c;
    }
    return parts;
}

} // namespace

const char* layoutName(DatasetLayout layout)
{
    switch (layout) {
    case DatasetLayout::Idx: return "IDX";
    case DatasetLayout::Cifar10: return "CIFAR-10";
    case DatasetLayout::Cifar100: return "CIFAR-100";
    case DatasetLayout::Csv: return "CSV";
    case DatasetLayout::ImageFolder: return "image folder";
    }
    return "?";
}

ImageShape parseImageShape(const std::string& text)
{
    const std::vector<std::string> p = splitX(text);
    if (p.size() != 3) throw ConfigError("--image-shape: '" + text + "' is not CxHxW (e.g. 3x32x32)");
    ImageShape s{parseSide(text, p[0], "--image-shape"), parseSide(text, p[1], "--image-shape"),
                 parseSide(text, p[2], "--image-shape")};
    if (s.channels != 1 && s.channels != 3)
        throw ConfigError("--image-shape: '" + text + "': C must be 1 (grayscale) or 3 (RGB)");
    return s;
}

ImageShape parseResize(const std::string& text)
{
    const std::vector<std::string> p = splitX(text);
    if (p.size() != 2) throw ConfigError("--resize: '" + text + "' is not HxW (e.g. 32x32)");
    return {0, parseSide(text, p[0], "--resize"), parseSide(text, p[1], "--resize")};
}

DetectedLayout detectLayout(const std::string& path)
{
    const fs::path p(path);
    std::error_code ec;
    if (!fs::exists(p, ec)) throw IoError(path + ": no such folder or file");
    if (fs::is_regular_file(p, ec)) {
        const std::string ext = lowerExtension(p);
        if (ext == ".csv") return {DatasetLayout::Csv, path};
        throw IoError(path + ": a dataset file must be a .csv; other layouts are folders");
    }
    if (!fs::is_directory(p, ec)) throw IoError(path + ": is neither a file nor a folder");
    DetectedLayout out{};
    if (detectFiles(p, out)) return out;
    const bool split = fs::is_directory(p / "train", ec) && fs::is_directory(p / "test", ec);
    if ((split && hasClassFolders(p / "train")) || hasClassFolders(p)) return {DatasetLayout::ImageFolder, path};
    // An archive unpacked into its own folder (cifar-10-batches-bin, cifar-100-binary): one level down.
    std::vector<fs::path> subs;
    for (const auto& e : fs::directory_iterator(p, ec))
        if (e.is_directory(ec)) subs.push_back(e.path());
    if (subs.size() == 1 && detectFiles(subs[0], out)) return out;
    throw IoError(path + ": no dataset found here. Expected an MNIST-layout folder (train-images-idx3-ubyte[.gz] ...), "
                  "CIFAR binary files (data_batch_1.bin ... test_batch.bin, or train.bin + test.bin), a .csv file or a "
                  "folder with train.csv, or class folders of .png/.jpg images (train/<class>/, test/<class>/ or <class>/)");
}

std::string percentText(double fraction)
{
    char text[32];
    std::snprintf(text, sizeof text, "%.3g%%", fraction * 100.0);
    return text;
}

bool skippedFolderName(const std::string& name) { return name.empty() || name.front() == '.' || name == "__MACOSX"; }
bool skippedFileName(const std::string& name) { return name.starts_with("._"); }

LabeledImages subset(const LabeledImages& s, const std::vector<std::size_t>& idx)
{
    LabeledImages out;
    out.channels = s.channels;
    out.height = s.height;
    out.width = s.width;
    const std::size_t B = s.imageBytes();
    out.pixels.resize(idx.size() * B);
    out.labels.resize(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
        std::copy_n(s.pixels.begin() + static_cast<std::ptrdiff_t>(idx[i] * B), B,
                    out.pixels.begin() + static_cast<std::ptrdiff_t>(i * B));
        out.labels[i] = s.labels[idx[i]];
    }
    if (!s.sources.empty()) {
        out.sources.resize(idx.size());
        for (std::size_t i = 0; i < idx.size(); ++i) out.sources[i] = s.sources[idx[i]];
    }
    return out;
}

TrainTestIndices splitTrainTestIndices(const std::vector<std::int32_t>& labels, const std::vector<std::uint64_t>& keys,
                                       double fraction, const std::string& what)
{
    if (!(fraction > 0.0 && fraction < 1.0))
        throw ConfigError("test fraction " + std::to_string(fraction) + " must be between 0 and 1 (exclusive)");
    if (keys.size() != labels.size())
        throw std::logic_error("splitTrainTestIndices: " + std::to_string(keys.size()) + " keys for " + std::to_string(labels.size()) + " images");
    std::int32_t maxLabel = 0;
    for (std::int32_t l : labels) maxLabel = std::max(maxLabel, l);
    std::vector<std::vector<std::size_t>> byClass(static_cast<std::size_t>(maxLabel) + 1);
    for (std::size_t i = 0; i < labels.size(); ++i) byClass[static_cast<std::size_t>(labels[i])].push_back(i);
    TrainTestIndices s;
    for (std::vector<std::size_t>& members : byClass) {
        if (members.empty()) continue;
        std::size_t n = static_cast<std::size_t>(std::lround(fraction * static_cast<double>(members.size())));
        if (members.size() >= 2) n = std::clamp<std::size_t>(n, 1, members.size() - 1);
        else n = 0;
        // the n smallest keys (ties by position) go to test
        std::stable_sort(members.begin(), members.end(), [&](std::size_t a, std::size_t b) { return keys[a] < keys[b]; });
        for (std::size_t k = 0; k < members.size(); ++k) (k < n ? s.test : s.train).push_back(members[k]);
    }
    if (s.test.empty()) { // what was found, and what a split needs (tester 19: one image in one class folder read "too few images (1)")
        std::size_t classes = 0;
        for (const std::vector<std::size_t>& members : byClass) classes += members.empty() ? 0 : 1;
        throw FormatError(what + ": too few images to hold out a test set: " + std::to_string(labels.size()) + " image" +
                          (labels.size() == 1 ? "" : "s") + " in " + std::to_string(classes) + " class" + (classes == 1 ? "" : "es") +
                          ", and a class needs at least 2 images for one to be held out");
    }
    std::sort(s.train.begin(), s.train.end());
    std::sort(s.test.begin(), s.test.end());
    return s;
}

std::vector<std::uint64_t> contentKeys(const LabeledImages& set)
{
    std::vector<std::uint64_t> keys(set.size());
    const std::size_t B = set.imageBytes();
    for (std::size_t i = 0; i < keys.size(); ++i) {
        std::uint64_t h = 0xcbf29ce484222325ull ^ static_cast<std::uint32_t>(set.labels[i]);
        for (const std::uint8_t* p = set.pixels.data() + i * B, *e = p + B; p < e; ++p) h = (h ^ *p) * 0x100000001b3ull;
        keys[i] = splitmix64(h); // FNV's low bits mix poorly; the order should not follow the pixels
    }
    return keys;
}

std::pair<LabeledImages, LabeledImages> splitTrainTest(const LabeledImages& all, double fraction, const std::string& what)
{
    const TrainTestIndices s = splitTrainTestIndices(all.labels, contentKeys(all), fraction, what);
    return {subset(all, s.train), subset(all, s.test)};
}

std::vector<std::string> readClassesTxt(const std::string& dir)
{
    std::ifstream f(fs::path(dir) / "classes.txt");
    std::vector<std::string> names;
    for (std::string line; f && std::getline(f, line);) {
        if (names.empty() && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3); // a UTF-8 byte order mark
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) names.push_back(line);
        if (names.size() > kMaxClasses)
            throw FormatError((fs::path(dir) / "classes.txt").string() + ": more than " + std::to_string(kMaxClasses) +
                              " class names");
    }
    return names;
}

std::vector<std::string> numberedClassNames(std::size_t count)
{
    std::vector<std::string> n;
    for (std::size_t i = 0; i < count; ++i) n.push_back(std::to_string(i));
    return n;
}

std::string baseName(const std::string& path)
{
    std::string s = path;
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    return fs::path(s).filename().string();
}

} // namespace quantscope
