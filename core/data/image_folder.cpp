// Image folders in torchvision's ImageFolder convention: one sub-folder per class, named after
// it, holding .png/.jpg/.jpeg files (searched recursively, in name order; other files, hidden
// folders and macOS archive litter are skipped: skippedFolderName, skippedFileName). Either root/train/<class>/ with a test split root/{test,val,valid,validation}/<class>/
// (the first that exists), root/train/ alone, or a single root/<class>/ tree; without a test split
// each class is split by opts.testFraction (by path hash: splitTrainTestIndices). A root whose only sub-folder holds folders
// and no images (an unpacked archive's wrapper) is looked into. Classes are the train folders in
// name order.
// The dataset is colour (C=3) if any image is, else grayscale; all images must share one size
// unless opts.resize gives one. Headers are read first, so sizes are checked before allocating.
#include "data/readers.h"

#include "data/image_codec.h"
#include "data/resize.h"
#include "util/errors.h"
#include "util/memory.h"
#include "util/rng.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

namespace quantscope {

namespace fs = std::filesystem;

namespace {

struct ImageEntry {
    std::string path;
    std::int32_t label = 0;
    ImageInfo info;
};

std::vector<std::string> sortedSubfolders(const fs::path& dir)
{
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.is_directory(ec) && !skippedFolderName(e.path().filename().string())) out.push_back(e.path().filename().string());
    if (ec) throw IoError(dir.string() + ": cannot list the folder (" + ec.message() + ")");
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<std::string> imagesUnder(const fs::path& dir)
{
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (it->is_directory(ec) && skippedFolderName(name)) it.disable_recursion_pending();
        else if (it->is_regular_file(ec) && !skippedFileName(name) && isImageFileName(name)) out.push_back(it->path().string());
        else if (std::error_code linkEc; !skippedFileName(name) && isImageFileName(name) && it->is_symlink(linkEc) &&
                                          !fs::exists(it->path(), linkEc)) {
            // a link whose target is gone: an error, as an unreadable image is (tester 22: skipped without a word)
            const fs::path target = fs::read_symlink(it->path(), linkEc);
            throw IoError(it->path().string() + ": a link to a missing file" + (linkEc ? std::string() : " (" + target.string() + ")") +
                          "; remove the link or restore its file");
        }
    }
    if (ec) throw IoError(dir.string() + ": cannot list the folder (" + ec.message() + ")");
    std::sort(out.begin(), out.end());
    return out;
}

// Throws IoError naming `dir` if this process may not list it (an unreadable class folder would
// otherwise look empty).
void checkListable(const fs::path& dir)
{
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) throw IoError(dir.string() + ": cannot list the folder: " + (ec == std::errc::permission_denied ? std::string("permission denied") : ec.message()));
}

// How many image files `dir` holds itself (not in sub-folders).
std::size_t imageFilesIn(const fs::path& dir)
{
    std::error_code ec;
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir, ec))
        n += e.is_regular_file(ec) && !skippedFileName(e.path().filename().string()) && isImageFileName(e.path().string());
    return n;
}

bool holdsImageFiles(const fs::path& dir) { return imageFilesIn(dir) > 0; }

// Notes on what a tree's layout leaves unread (tester 11: 20 images at the root of a class tree,
// and a class folder beside train/ and test/, went without a word): images directly in `top`, and
// with a split, its folders other than the two read.
std::vector<std::string> unreadNotes(const fs::path& top, const fs::path& train, const fs::path& test)
{
    std::vector<std::string> notes;
    if (const std::size_t loose = imageFilesIn(top))
        notes.push_back(top.string() + ": " + std::to_string(loose) + (loose == 1 ? " image lies" : " images lie") +
                        " outside the class folders and " + (loose == 1 ? "is" : "are") + " not read");
    if (test.empty()) return notes;
    std::string others;
    for (const std::string& s : sortedSubfolders(top))
        if (s != train.filename().string() && s != test.filename().string()) others += (others.empty() ? "" : ", ") + s + "/";
    if (!others.empty())
        notes.push_back(top.string() + ": " + others + " beside " + train.filename().string() + "/ and " + test.filename().string() +
                        "/ " + (others.find(',') == std::string::npos ? "is" : "are") + " not read");
    return notes;
}

// The folders of an image dataset: the train tree, and the test tree if there is one.
struct SplitFolders {
    fs::path train, test; // test empty: split the train tree by the test fraction
};

SplitFolders splitFolders(fs::path r)
{
    std::error_code ec;
    for (int depth = 0; depth < 4; ++depth) {
        // train/ as a split holds class folders; a class folder named "train" (CIFAR-100 has one)
        // holds images.
        if (fs::is_directory(r / "train", ec) && !holdsImageFiles(r / "train") && !sortedSubfolders(r / "train").empty()) {
            for (const char* name : {"test", "val", "valid", "validation"})
                if (fs::is_directory(r / name, ec)) return {r / "train", r / name};
            return {r / "train", {}};
        }
        // A wrapper: one sub-folder that holds folders, and no images of its own.
        const std::vector<std::string> subs = sortedSubfolders(r);
        if (subs.size() != 1 || holdsImageFiles(r / subs[0]) || sortedSubfolders(r / subs[0]).empty()) break;
        r /= subs[0];
    }
    return {r, {}};
}

// The images of one split folder; class folders must be among `classes` (the train ones).
std::vector<ImageEntry> listSplit(const fs::path& dir, const std::vector<std::string>& classes)
{
    std::map<std::string, std::int32_t> index;
    for (std::size_t i = 0; i < classes.size(); ++i) index[classes[i]] = static_cast<std::int32_t>(i);
    std::vector<ImageEntry> out;
    for (const std::string& c : sortedSubfolders(dir)) {
        const auto it = index.find(c);
        if (it == index.end())
            throw FormatError((dir / c).string() + ": class folder '" + c + "' is not among the training classes");
        const std::vector<std::string> files = imagesUnder(dir / c);
        if (files.empty()) checkListable(dir / c);
        if (files.empty())
            // with what it was read as: `--data /tmp` said only "/tmp/bash_jobs.0: empty class folder"
            throw FormatError((dir / c).string() + ": empty class folder (no .png, .jpg or .jpeg images): " + dir.string() +
                              " was read as an image-folder dataset, one class a subfolder, because some of its subfolders "
                              "hold images");
        for (const std::string& f : files) out.push_back({f, it->second, {}});
    }
    if (out.empty()) throw FormatError(dir.string() + ": holds no class folders with images");
    return out;
}

struct Target {
    std::size_t channels = 1, height = 0, width = 0;
};

// Reads every header: the channel count (3 if any image is colour) and the common size.
Target scanHeaders(std::vector<ImageEntry>& all, const ImageShape& resize)
{
    Target t;
    const ImageEntry* first = nullptr;
    for (ImageEntry& e : all) {
        e.info = readImageInfo(e.path);
        if (e.info.channels == 3) t.channels = 3;
        if (!first) first = &e;
        else if (!resize.given() && (e.info.width != first->info.width || e.info.height != first->info.height))
            throw FormatError(e.path + ": image is " + std::to_string(e.info.height) + "x" + std::to_string(e.info.width) +
                              " (HxW) but " + first->path + " is " + std::to_string(first->info.height) + "x" +
                              std::to_string(first->info.width) + "; images that differ in size need --resize HxW");
    }
    t.height = resize.given() ? resize.height : first->info.height;
    t.width = resize.given() ? resize.width : first->info.width;
    return t;
}

// Images [begin, end) of entries, decoded and resized to t. used (indexed from begin): the images
// Dataset::load will keep (the --train-limit subset, the validation split, the first
// --test-limit test images); the others keep their label and zero pixels, never decoded. Each
// image's source is its path under root (LabeledImages::sources).
LabeledImages decodeAll(const std::vector<ImageEntry>& entries, std::size_t begin, std::size_t end, const Target& t,
                        const fs::path& root, const std::vector<bool>* used = nullptr)
{
    LabeledImages s;
    s.channels = t.channels;
    s.height = t.height;
    s.width = t.width;
    const std::size_t B = s.imageBytes();
    s.pixels.resize((end - begin) * B);
    s.labels.resize(end - begin);
    s.sources.resize(end - begin);
    std::vector<std::uint8_t> hwc(B);
    for (std::size_t i = begin; i < end; ++i) {
        const ImageEntry& e = entries[i];
        s.labels[i - begin] = e.label;
        const std::string rel = fs::path(e.path).lexically_relative(root).generic_string();
        s.sources[i - begin] = rel.empty() || rel.starts_with("..") ? e.path : rel;
        if (used && !(*used)[i - begin]) continue;
        ImageInfo info;
        const std::vector<std::uint8_t> img = decodeImage(e.path, t.channels, &info);
        if (info.width != e.info.width || info.height != e.info.height)
            throw FormatError(e.path + ": the image changed while it was read");
        resizeImage(img.data(), info.height, info.width, t.channels, hwc.data(), t.height, t.width);
        // (H, W, C) interleaved -> (C, H, W) planar
        std::uint8_t* dst = s.pixels.data() + (i - begin) * B;
        const std::size_t plane = t.height * t.width;
        for (std::size_t p = 0; p < plane; ++p)
            for (std::size_t c = 0; c < t.channels; ++c) dst[c * plane + p] = hwc[p * t.channels + c];
    }
    return s;
}

// Which of n training images (of t's shape) are decoded: the ones Dataset::load keeps (the
// --train-limit subset, unless only their statistics are wanted, and the validation split) and
// the ones the normalisation statistics come from (statisticsSample), indices into the n.
std::vector<std::size_t> decodedTraining(std::size_t n, const Target& t, const DatasetOptions& opts)
{
    if (opts.testOnly) return {};
    const TrainingSelection kept = selectTraining(n, opts);
    std::vector<std::size_t> out = statisticsSample(n, t.channels * t.height * t.width, opts);
    if (!opts.trainForStatistics) out.insert(out.end(), kept.train.begin(), kept.train.end());
    out.insert(out.end(), kept.validation.begin(), kept.validation.end());
    return out;
}

} // namespace

std::uint64_t imagePathKey(const std::string& path, const std::string& tree)
{
    const std::string rel = fs::path(path).lexically_relative(tree).generic_string();
    return splitmix64(stableHash((rel.empty() ? path : rel).c_str()));
}

void checkImageFolderFootprint(const std::string& root, std::size_t images, const ImageShape& shape, bool resized,
                               unsigned long long physicalBytes)
{
    const double bytes = double(images) * double(shape.channels) * double(shape.height) * double(shape.width);
    if (physicalBytes == 0 || 2.0 * bytes <= 0.8 * double(physicalBytes)) return;
    char text[200];
    std::snprintf(text, sizeof text, " of %zux%zux%zu take %.1f GiB in memory, twice that while the kept ones are copied, and this machine has %.1f GiB",
                  shape.channels, shape.height, shape.width, bytes / double(1u << 30), double(physicalBytes) / double(1u << 30));
    throw ConfigError(root + ": " + std::to_string(images) + " images" + text + "; give --resize HxW" +
                      (resized ? " with a smaller size" : std::string()) + ", or fewer images");
}

RawDataset readImageFolder(const std::string& root, const DatasetOptions& opts)
{
    const fs::path r(root);
    std::error_code ec;
    RawDataset raw;
    raw.name = baseName(root);
    const SplitFolders folders = splitFolders(r);
    const bool split = !folders.test.empty();
    const fs::path& trainDir = folders.train;
    raw.classNames = sortedSubfolders(trainDir);
    if (raw.classNames.size() > kMaxClasses)
        throw FormatError(trainDir.string() + ": holds " + std::to_string(raw.classNames.size()) +
                          " class folders; at most " + std::to_string(kMaxClasses) + " are accepted");
    std::vector<ImageEntry> entries = listSplit(trainDir, raw.classNames);
    if (split && opts.testOnly) entries.clear(); // listed for the class check, not read
    const std::size_t trainCount = entries.size();
    if (split) {
        std::vector<ImageEntry> test = listSplit(folders.test, raw.classNames);
        entries.insert(entries.end(), test.begin(), test.end());
    }
    Target t = scanHeaders(entries, opts.resize);
    std::string channelNote;
    if (opts.imageChannels != 0 && opts.imageChannels != t.channels) {
        if (opts.imageChannels != 1 && opts.imageChannels != 3)
            throw ConfigError(root + ": images are read with 1 or 3 channels, not " + std::to_string(opts.imageChannels));
        const std::size_t colour = static_cast<std::size_t>(
            std::count_if(entries.begin(), entries.end(), [](const ImageEntry& e) { return e.info.channels == 3; }));
        channelNote = opts.imageChannels == 3
                          ? "its grey images are read as RGB, the grey value in all three channels (PIL's convert(\"RGB\")), as the "
                            "model takes colour images"
                          : "its " + std::to_string(colour) + " colour image" + (colour == 1 ? " is" : "s are") +
                                " read as grey (BT.601 luma, PIL's convert(\"L\")), as the model takes 1-channel images";
        t.channels = opts.imageChannels;
    }
    const std::uint64_t bytes = static_cast<std::uint64_t>(entries.size()) * t.channels * t.height * t.width;
    if (bytes > kMaxDatasetBytes)
        throw FormatError(root + ": " + std::to_string(entries.size()) + " images of " + std::to_string(t.channels) + "x" +
                          std::to_string(t.height) + "x" + std::to_string(t.width) + " would take " +
                          std::to_string(bytes >> 20) + " MiB, more than the limit of " +
                          std::to_string(kMaxDatasetBytes >> 20) + " MiB; use --resize HxW");
    checkImageFolderFootprint(root, entries.size(), {t.channels, t.height, t.width}, opts.resize.given(), physicalMemoryBytes());
    if (split) {
        // Only what Dataset::load keeps is decoded: 200 of 3,600 large images with --train-limit 200
        // decoded all 3,600 before (tester 12).
        std::vector<bool> trainUsed(trainCount, false), testUsed(entries.size() - trainCount, true);
        for (std::size_t i : decodedTraining(trainCount, t, opts)) trainUsed[i] = true;
        for (std::size_t i = opts.testLimit; opts.testLimit > 0 && i < testUsed.size(); ++i) testUsed[i] = false;
        raw.train = decodeAll(entries, 0, trainCount, t, r, &trainUsed);
        raw.test = decodeAll(entries, trainCount, entries.size(), t, r, &testUsed);
        raw.split = opts.testOnly ? folders.test.filename().string() + "/ (train/ not read)"
                                  : folders.test.filename().string() + "/ beside train/";
        raw.notes = unreadNotes(folders.train.parent_path(), folders.train, folders.test);
    } else if (opts.testOnly) { // no split of its own: every image is a test image
        raw.test = decodeAll(entries, 0, entries.size(), t, r);
        raw.train = decodeAll(entries, 0, 0, t, r);
        raw.split = "every image of " + (trainDir == r ? r.filename().string() : fs::relative(trainDir, r, ec).string()) + "/";
    } else {
        // The split by --test-fraction needs the labels alone: only the images kept are decoded.
        std::vector<std::int32_t> labels(entries.size());
        std::vector<std::uint64_t> keys(entries.size());
        for (std::size_t i = 0; i < entries.size(); ++i) {
            labels[i] = entries[i].label;
            keys[i] = imagePathKey(entries[i].path, trainDir.string());
        }
        const TrainTestIndices split = splitTrainTestIndices(labels, keys, opts.testFraction, root);
        std::vector<bool> used(entries.size(), false);
        for (std::size_t i : decodedTraining(split.train.size(), t, opts)) used[split.train[i]] = true;
        for (std::size_t k = 0; k < split.test.size() && (opts.testLimit == 0 || k < opts.testLimit); ++k) used[split.test[k]] = true;
        const LabeledImages all = decodeAll(entries, 0, entries.size(), t, r, &used);
        raw.train = subset(all, split.train);
        raw.test = subset(all, split.test);
        raw.splitByFraction = true;
        raw.split = percentText(opts.testFraction) + " of each class folder" +
                    (trainDir == r ? std::string() : " of " + fs::relative(trainDir, r, ec).string() + "/");
    }
    if (!split) raw.notes = unreadNotes(trainDir, trainDir, {});
    if (!channelNote.empty()) raw.notes.insert(raw.notes.begin(), root + ": " + channelNote);
    return raw;
}

} // namespace quantscope
