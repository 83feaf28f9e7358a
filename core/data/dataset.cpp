#include "data/dataset.h"

#include "data/idx.h"
#include "data/readers.h"
#include "data/resize.h"
#include "util/ascii_text.h"
#include "util/errors.h"
#include "util/memory.h"
#include "util/rng.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <new>
#include <optional>

namespace quantscope {

namespace fs = std::filesystem;

namespace {

std::string findOne(const std::string& dir, const std::string& stem)
{
    // stem e.g. "train-images-idx3-ubyte"; also accept "train-images.idx3-ubyte".
    std::string dotted = stem;
    const auto pos = dotted.find("-idx");
    if (pos != std::string::npos) dotted[pos] = '.';
    for (const std::string& base : {stem, dotted})
        for (const char* ext : {"", ".gz"}) {
            const fs::path p = fs::path(dir) / (base + ext);
            std::error_code ec;
            if (fs::is_regular_file(p, ec)) return p.string();
        }
    throw IoError(dir + ": no " + stem + " or " + stem + ".gz in this folder (an MNIST-layout folder holds "
                  "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)");
}

LabeledImages readSet(const std::string& imagesPath, const std::string& labelsPath, std::size_t numClasses)
{
    IdxArray im = readIdxImages(imagesPath);
    IdxArray lb = readIdxLabels(labelsPath, numClasses);
    if (im.dims[0] != lb.dims[0])
        throw FormatError(imagesPath + ": holds " + std::to_string(im.dims[0]) + " images but " + labelsPath +
                          " holds " + std::to_string(lb.dims[0]) + " labels");
    LabeledImages s;
    s.height = im.dims[1];
    s.width = im.dims[2];
    s.pixels = std::move(im.data);
    s.labels.assign(lb.data.begin(), lb.data.end());
    return s;
}

std::string shapeText(const LabeledImages& s)
{
    return std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" + std::to_string(s.width);
}

// Every label indexes a class name, and the training labels hold at least two classes.
void checkLabels(const LabeledImages& s, const std::vector<std::string>& classes, const std::string& path,
                 const char* which)
{
    if (classes.size() < 2)
        throw FormatError(path + ": the labels name a single class; a classifier needs at least two");
    std::vector<bool> seen(classes.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        const std::int32_t l = s.labels[i];
        if (l < 0 || static_cast<std::size_t>(l) >= classes.size())
            throw FormatError(path + ": " + which + " image " + std::to_string(i + 1) + " has label " +
                              std::to_string(l) + ", out of range for " + std::to_string(classes.size()) + " classes");
        seen[static_cast<std::size_t>(l)] = true;
    }
    if (s.size() == 0) throw FormatError(path + ": holds no " + std::string(which) + " images");
    if (std::string(which) == "training" && std::count(seen.begin(), seen.end(), true) < 2)
        throw FormatError(path + ": every training image has label " + std::to_string(s.labels[0]) + " (" +
                          classes[static_cast<std::size_t>(s.labels[0])] + "): a classifier needs at least two classes");
}

// Every image of `s` resized to target's HxW, plane by plane.
LabeledImages resized(const LabeledImages& s, const ImageShape& target)
{
    if (s.height == target.height && s.width == target.width) return s;
    LabeledImages out;
    out.channels = s.channels;
    out.height = target.height;
    out.width = target.width;
    out.labels = s.labels;
    out.sources = s.sources;
    out.pixels.resize(s.size() * out.imageBytes());
    const std::size_t inPlane = s.height * s.width, outPlane = out.height * out.width;
    for (std::size_t p = 0; p < s.size() * s.channels; ++p)
        resizeImage(s.pixels.data() + p * inPlane, s.height, s.width, 1, out.pixels.data() + p * outPlane, out.height,
                    out.width);
    return out;
}

Dataset finishLoad(RawDataset&& raw, const DetectedLayout& found, const DatasetOptions& opts);

// --resize HxW would make the images that stay in memory (the kept training images unless only
// their statistics are wanted, the validation and test images) need more than 80 % of this
// machine's memory: a ConfigError naming the sizes, before anything is resized (resizing first
// ran out of memory, or was killed, with nothing said).
void checkResizedFootprint(const Dataset& d, const ImageShape& target, bool statisticsOnly, const std::string& path)
{
    const unsigned long long physical = physicalMemoryBytes();
    if (physical == 0) return;
    const std::size_t images = (statisticsOnly ? 0 : d.train.size()) + d.validation.size() + d.test.size();
    const double bytes = double(images) * double(d.test.channels) * double(target.height) * double(target.width);
    if (bytes <= 0.8 * double(physical)) return;
    char text[160];
    std::snprintf(text, sizeof text, " of %zux%zu pixels take %.1f GiB in memory, and this machine has %.1f GiB", target.height,
                  target.width, bytes / double(1u << 30), double(physical) / double(1u << 30));
    const std::string kept = std::to_string(statisticsOnly ? 0 : d.train.size()) + " training, " +
                             std::to_string(d.validation.size()) + " validation, " + std::to_string(d.test.size()) + " test";
    throw ConfigError(path + ": --resize " + std::to_string(target.height) + "x" + std::to_string(target.width) + " makes " +
                      std::to_string(images) + " images (" + kept + ")" + text +
                      "; give a smaller --resize, or fewer images (--train-limit, --test-limit)");
}

// Per-channel 256-bin histograms of `set`'s pixels, or (target) of its images resized to target,
// one plane at a time.
using ChannelHistograms = std::vector<std::array<std::uint64_t, 256>>;
ChannelHistograms pixelHistograms(const LabeledImages& set, const ImageShape* target)
{
    const std::size_t C = set.channels, inPlane = set.height * set.width;
    const std::size_t plane = target ? target->height * target->width : inPlane;
    ChannelHistograms hist(C);
    for (auto& h : hist) h.fill(0);
    std::vector<std::uint8_t> buf(target ? plane : 0);
    for (std::size_t i = 0; i < set.size(); ++i)
        for (std::size_t c = 0; c < C; ++c) {
            const std::uint8_t* p = set.pixels.data() + (i * C + c) * inPlane;
            if (target) {
                resizeImage(p, set.height, set.width, 1, buf.data(), target->height, target->width);
                p = buf.data();
            }
            for (std::size_t j = 0; j < plane; ++j) ++hist[c][p[j]];
        }
    return hist;
}

Normalization statisticsOf(const ChannelHistograms& hist)
{
    const std::size_t C = hist.size();
    Normalization norm = Normalization::identity(C);
    for (std::size_t c = 0; c < C; ++c) {
        double s = 0.0, s2 = 0.0, n = 0.0;
        for (std::size_t v = 0; v < 256; ++v) {
            const double x = v / 255.0, k = static_cast<double>(hist[c][v]);
            s += k * x;
            s2 += k * x * x;
            n += k;
        }
        if (n == 0.0) continue;
        norm.mean[c] = static_cast<float>(s / n);
        const double var = s2 / n - (s / n) * (s / n);
        norm.stddev[c] = static_cast<float>(var > 1e-12 ? std::sqrt(var) : 1.0);
    }
    return norm;
}

} // namespace

std::vector<std::size_t> seededPermutation(std::size_t n, Rng& rng)
{
    std::vector<std::size_t> p(n);
    for (std::size_t i = 0; i < n; ++i) p[i] = i;
    for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
    return p;
}

ValidationSplit validationSplit(std::size_t trainSize, std::size_t n, std::uint64_t seed)
{
    if (n >= trainSize)
        throw ConfigError("validation split of " + std::to_string(n) + " leaves no training images (" + std::to_string(trainSize) +
                          " in all); give a smaller --validation N");
    ValidationSplit split;
    split.train = seededPermutation(trainSize, seed ^ 0x7A11DA7Eull);
    split.validation.assign(split.train.end() - static_cast<std::ptrdiff_t>(n), split.train.end());
    split.train.resize(trainSize - n);
    std::sort(split.validation.begin(), split.validation.end());
    std::sort(split.train.begin(), split.train.end());
    return split;
}

TrainingSelection selectTraining(std::size_t n, const DatasetOptions& opts)
{
    TrainingSelection s;
    s.train.resize(n);
    for (std::size_t i = 0; i < n; ++i) s.train[i] = i;
    const auto pick = [](const std::vector<std::size_t>& from, const std::vector<std::size_t>& at) {
        std::vector<std::size_t> out(at.size());
        for (std::size_t k = 0; k < at.size(); ++k) out[k] = from[at[k]];
        return out;
    };
    const auto holdOut = [&] {
        if (opts.validation == 0) return;
        const std::size_t n = opts.validationHalvesFewImages && s.train.size() <= opts.validation
                                  ? std::max<std::size_t>(1, s.train.size() / 2)
                                  : opts.validation;
        const ValidationSplit split = validationSplit(s.train.size(), n, opts.seed);
        s.validation = pick(s.train, split.validation);
        s.train = pick(s.train, split.train);
    };
    if (!opts.validationAfterLimit) holdOut();
    if (opts.trainLimit > 0 && opts.trainLimit < s.train.size()) {
        std::vector<std::size_t> perm = seededPermutation(s.train.size(), opts.seed + 1);
        perm.resize(opts.trainLimit);
        std::sort(perm.begin(), perm.end());
        s.train = pick(s.train, perm);
    }
    if (opts.validationAfterLimit) holdOut();
    return s;
}

// DatasetOptions::statisticsPixels: all of Fashion-MNIST's 60,000 at 512x512 took 5 minutes, one
// image at a time, for an evaluation of 8 images; the 1,024 of 2^28 pixels take about 5 s.
std::vector<std::size_t> statisticsSample(std::size_t n, std::size_t pixelsPerImage, const DatasetOptions& opts)
{
    const std::size_t budget = opts.statisticsPixels / std::max<std::size_t>(1, pixelsPerImage);
    const std::size_t k = std::min(n, std::max<std::size_t>(16, budget));
    std::vector<std::size_t> every(k);
    for (std::size_t i = 0; i < k; ++i) every[i] = i * n / k;
    return every;
}

std::vector<std::size_t> seededPermutation(std::size_t n, std::uint64_t seed)
{
    Rng rng(seed);
    return seededPermutation(n, rng);
}

std::vector<std::string> guessClassNames(const std::string& dir, std::size_t labelCount)
{
    const fs::path txt = fs::path(dir) / "classes.txt";
    std::error_code ec;
    if (fs::is_regular_file(txt, ec)) {
        const std::vector<std::string> names = readClassesTxt(dir);
        if (names.size() < labelCount)
            throw FormatError(txt.string() + ": names " + std::to_string(names.size()) + " classes, but the labels go up to " +
                              std::to_string(labelCount - 1));
        return names;
    }
    // As many classes as the labels use: a set of 5 classes gave a model of 10 outputs, 5 of them
    // never trained (tester 11).
    const std::string lower = asciiLower(fs::path(dir).lexically_normal().string());
    if (labelCount <= 10 && lower.find("fashion") != std::string::npos) {
        std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
        names.resize(labelCount);
        return names;
    }
    return numberedClassNames(labelCount);
}

DatasetFiles Dataset::locate(const std::string& dir)
{
    std::error_code ec;
    if (!fs::exists(dir, ec)) throw IoError(dir + ": no such folder");
    if (!fs::is_directory(dir, ec)) throw IoError(dir + ": is not a folder");
    return {findOne(dir, "train-images-idx3-ubyte"), findOne(dir, "train-labels-idx1-ubyte"),
            findOne(dir, "t10k-images-idx3-ubyte"), findOne(dir, "t10k-labels-idx1-ubyte")};
}

Dataset Dataset::load(const DatasetOptions& opts)
{
    const DetectedLayout found = detectLayout(opts.dir);
    try {
        switch (found.layout) {
        case DatasetLayout::Idx: return load(locate(found.path), opts);
        case DatasetLayout::Cifar10:
        case DatasetLayout::Cifar100:
            return finishLoad(readCifar(found.path, found.layout == DatasetLayout::Cifar100), found, opts);
        case DatasetLayout::Csv: return finishLoad(readCsvDataset(found.path, opts), found, opts);
        case DatasetLayout::ImageFolder: return finishLoad(readImageFolder(found.path, opts), found, opts);
        }
    } catch (const std::bad_alloc&) { // what the reading ran out of memory on, and the way out (it said only "out of memory")
        throw ConfigError(found.path + ": out of memory while reading the dataset; give --resize HxW, or fewer images "
                                       "(--train-limit, --test-limit)");
    }
    throw ConfigError(opts.dir + ": unknown dataset layout");
}

Dataset Dataset::load(const DatasetFiles& files, const DatasetOptions& opts)
{
    RawDataset raw;
    const std::string dir = fs::path(files.trainImages).parent_path().string();
    raw.name = baseName(dir);
    // IDX labels are bytes: the classes are classes.txt's, or as many as the largest label needs.
    raw.test = readSet(files.testImages, files.testLabels, 256);
    raw.split = fs::path(files.testImages).filename().string(); // the test set is the layout's own file
    if (opts.testOnly) { // the train files are not read; an empty set of the test images' shape
        raw.train.channels = raw.test.channels;
        raw.train.height = raw.test.height;
        raw.train.width = raw.test.width;
    } else {
        raw.train = readSet(files.trainImages, files.trainLabels, 256);
    }
    std::int32_t largest = 0, largestTrain = 0;
    for (std::int32_t l : raw.train.labels) largestTrain = std::max(largestTrain, l);
    for (const LabeledImages* set : {&raw.train, &raw.test})
        for (std::int32_t l : set->labels) largest = std::max(largest, l);
    raw.classNames = guessClassNames(dir, static_cast<std::size_t>(largest) + 1);
    // A test label above every training label made the model that many classes larger, never
    // trained (tester 12: one stray 15 gave 16 classes). classes.txt may name such classes.
    std::error_code ec;
    if (!opts.testOnly && largest > largestTrain && !fs::is_regular_file(fs::path(dir) / "classes.txt", ec)) {
        const auto at = std::find(raw.test.labels.begin(), raw.test.labels.end(), largest) - raw.test.labels.begin();
        throw FormatError(files.testLabels + ": label " + std::to_string(largest) + " (test image " + std::to_string(at + 1) +
                          ") is above every training label (0.." + std::to_string(largestTrain) +
                          "), so the model could never learn it; fix the labels, or name every class in classes.txt");
    }
    // With --resize both sets are brought to one size in finishLoad.
    if (!opts.resize.given() && (raw.train.height != raw.test.height || raw.train.width != raw.test.width))
        throw FormatError(files.testImages + ": images are " + std::to_string(raw.test.height) + "x" +
                          std::to_string(raw.test.width) + " but the train images are " +
                          std::to_string(raw.train.height) + "x" + std::to_string(raw.train.width) +
                          "; --resize HxW brings both to one size");
    Dataset d = finishLoad(std::move(raw), {DatasetLayout::Idx, dir}, opts);
    d.files = files;
    return d;
}

namespace {

// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD: class
// names come from folder names and text files in any encoding, and the model files store UTF-8.
std::string validUtf8(const std::string& s)
{
    std::string out;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = p[i];
        std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (std::size_t k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) { // no overlong forms, surrogates or code points past U+10FFFF
            std::uint32_t cp = c & (0xFF >> (len + 1));
            for (std::size_t k = 1; k < len; ++k) cp = cp << 6 | (p[i + k] & 0x3F);
            ok = cp >= (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u) && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
        }
        if (ok) {
            out.append(s, i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

// What every layout shares after reading: checks, --resize, the validation split, the limits and
// the normalisation statistics.
Dataset finishLoad(RawDataset&& raw, const DetectedLayout& found, const DatasetOptions& opts)
{
    Dataset d;
    d.dir = found.path;
    d.layout = found.layout;
    d.name = raw.name;
    d.split = raw.split;
    d.splitByFraction = raw.splitByFraction;
    d.notes = std::move(raw.notes);
    // Names are one line each (model files store them one per line): control characters (a
    // folder name holding a newline) become spaces. Two classes of one name could not be told
    // apart in a model's class list, so they are an error.
    for (std::string& name : raw.classNames) {
        name = validUtf8(name);
        std::replace_if(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }, ' ');
    }
    for (std::size_t a = 0; a < raw.classNames.size(); ++a)
        for (std::size_t b = a + 1; b < raw.classNames.size(); ++b)
            if (raw.classNames[a] == raw.classNames[b])
                throw FormatError(found.path + ": classes " + std::to_string(a) + " and " + std::to_string(b) + " have the same name '" +
                                  raw.classNames[a] + "' (classes.txt or the class folders name each class once)");
    d.classNames = std::move(raw.classNames);
    d.train = std::move(raw.train);
    d.test = std::move(raw.test);
    if (!opts.testOnly) checkLabels(d.train, d.classNames, found.path, "training");
    checkLabels(d.test, d.classNames, found.path, "test");
    if (d.test.channels != d.train.channels ||
        (!opts.resize.given() && (d.test.height != d.train.height || d.test.width != d.train.width)))
        throw FormatError(found.path + ": test images are " + shapeText(d.test) + " but training images are " +
                          shapeText(d.train) + (d.test.channels == d.train.channels ? "; --resize HxW brings both to one size" : ""));
    // The normalisation: the statistics of the whole training set (statisticsSample's images of
    // it), whatever --train-limit and --validation keep, so that train, eval and analyze normalise
    // one model's input alike (a tester's train --train-limit 2000 stored 0.2873/0.3531, eval read
    // 0.2860/0.3530; an image folder's limited load, which decodes only what it keeps, counted the
    // others as black: mean 0.0206 for 0.2965, tester 11). With --resize they are taken image by
    // image, without a resized copy of the set.
    const bool statisticsOnly = opts.trainForStatistics && !opts.testOnly;
    Normalization statistics;
    if (!opts.testOnly) {
        const std::size_t h = opts.resize.given() ? opts.resize.height : d.train.height;
        const std::size_t w = opts.resize.given() ? opts.resize.width : d.train.width;
        const std::vector<std::size_t> sample = statisticsSample(d.train.size(), d.train.channels * h * w, opts);
        std::optional<LabeledImages> sampled;
        if (sample.size() < d.train.size()) sampled = subset(d.train, sample);
        const LabeledImages& from = sampled ? *sampled : d.train;
        statistics = opts.resize.given() ? pixelStatistics(from, opts.resize) : pixelStatistics(from);
    }
    const TrainingSelection kept = selectTraining(d.train.size(), opts);
    if (opts.validation > 0) d.validation = subset(d.train, kept.validation);
    if (kept.train.size() != d.train.size()) d.train = subset(d.train, kept.train);
    if (opts.testLimit > 0 && opts.testLimit < d.test.size()) {
        std::vector<std::size_t> first(opts.testLimit);
        for (std::size_t i = 0; i < first.size(); ++i) first[i] = i;
        d.test = subset(d.test, first);
    }
    // After the selection, so --resize works on the images kept only (every image of an IDX set
    // was resized before --train-limit 128 picked its 128: 26-32 s for 3,600 at 512x512).
    if (opts.resize.given()) checkResizedFootprint(d, opts.resize, statisticsOnly, found.path);
    if (opts.resize.given()) {
        if (!statisticsOnly) d.train = resized(d.train, opts.resize);
        if (d.validation.size()) d.validation = resized(d.validation, opts.resize);
        d.test = resized(d.test, opts.resize);
    }
    if (statisticsOnly) { // its statistics taken, the train set goes (of the test set's shape)
        d.normalization = statistics;
        d.train = LabeledImages{};
        d.train.channels = d.test.channels;
        d.train.height = d.test.height;
        d.train.width = d.test.width;
        return d;
    }
    d.normalization = opts.testOnly ? pixelStatistics(d.train) : statistics;
    return d;
}

} // namespace

Normalization pixelStatistics(const LabeledImages& set) { return statisticsOf(pixelHistograms(set, nullptr)); }

Normalization pixelStatistics(const LabeledImages& set, const ImageShape& target)
{
    if (set.height == target.height && set.width == target.width) return pixelStatistics(set);
    return statisticsOf(pixelHistograms(set, &target));
}

void Dataset::makeBatch(const LabeledImages& set, std::span<const std::size_t> indices, Tensor& x,
                        std::vector<std::int32_t>& y) const
{
    const std::size_t C = set.channels, plane = set.height * set.width, B = set.imageBytes();
    const Normalization norm = normalization.broadcast(C);
    x.resize({indices.size(), C, set.height, set.width});
    y.resize(indices.size());
    const std::vector<float> lut = norm.table(); // lut[c * 256 + v]
    for (std::size_t i = 0; i < indices.size(); ++i) {
        const std::uint8_t* src = set.pixels.data() + indices[i] * B;
        float* dst = x.data() + i * B;
        for (std::size_t c = 0; c < C; ++c) {
            const float* t = lut.data() + c * 256;
            for (std::size_t j = 0; j < plane; ++j) dst[c * plane + j] = t[src[c * plane + j]];
        }
        y[i] = set.labels[indices[i]];
    }
}

void Dataset::makeBatch(const LabeledImages& set, std::size_t begin, std::size_t end, Tensor& x,
                        std::vector<std::int32_t>& y) const
{
    std::vector<std::size_t> idx(end - begin);
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = begin + i;
    makeBatch(set, idx, x, y);
}

ClassMatch matchClasses(const std::vector<std::string>& modelNames, const std::vector<std::string>& dataNames)
{
    ClassMatch m;
    const auto numbered = [](const std::vector<std::string>& v) { return v == numberedClassNames(v.size()); };
    if (modelNames.empty() || dataNames.empty() || modelNames.size() != dataNames.size() || numbered(modelNames) ||
        numbered(dataNames))
        return m;
    if (modelNames == dataNames) {
        m.kind = ClassMatch::Kind::Same;
        return m;
    }
    std::vector<std::string> a = modelNames, b = dataNames;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a != b || std::adjacent_find(a.begin(), a.end()) != a.end()) {
        m.kind = ClassMatch::Kind::Different;
        return m;
    }
    m.kind = ClassMatch::Kind::Reordered;
    for (const std::string& name : dataNames)
        m.dataToModel.push_back(static_cast<std::int32_t>(std::find(modelNames.begin(), modelNames.end(), name) - modelNames.begin()));
    return m;
}

std::string channelMismatchHint(std::size_t modelChannels, std::size_t dataChannels)
{
    if (modelChannels == dataChannels) return {};
    std::string hint = "; the model reads " + std::to_string(modelChannels) + "-channel images";
    if (modelChannels == 3)
        hint += ": give colour data (a folder of RGB PNG/JPEG images, CIFAR-10/100 binaries, or a CSV file with --image-shape "
                "3xHxW)";
    else if (modelChannels == 1)
        hint += ": give grayscale data (IDX files, a folder of grayscale PNG/JPEG images, or a CSV file with --image-shape 1xHxW)";
    else
        hint += ", which no dataset layout QuantScope reads holds (1 or 3 channels)";
    return hint + "; --resize changes only the size";
}

} // namespace quantscope
