// Dataset: train / validation / test sets read from an MNIST-layout folder of IDX files,
// normalised by the train set's pixel mean and standard deviation.
#pragma once

#include "data/normalization.h"
#include "tensor/tensor.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace quantscope {

inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

// One set of labelled images, kept as bytes in (count, C, H, W) order (normalised per batch).
struct LabeledImages {
    std::size_t channels = 1, height = 0, width = 0;
    std::vector<std::uint8_t> pixels;  // count * channels * height * width
    std::vector<std::int32_t> labels;  // count
    std::size_t size() const { return labels.size(); }
    std::size_t imageBytes() const { return channels * height * width; }
};

// The four files of an MNIST-layout folder. Each may be plain or .gz.
struct DatasetFiles {
    std::string trainImages, trainLabels, testImages, testLabels;
};

struct DatasetOptions {
    std::string dir = kDefaultDataDir;
    std::size_t trainLimit = 0;  // 0 = all; otherwise a seeded subset of the train set
    std::size_t testLimit = 0;   // 0 = all; otherwise the first N test images
    std::size_t validation = 0;  // images moved from train to a validation set (seeded)
    std::uint64_t seed = 1;
};

class Dataset {
public:
    // Finds the files in opts.dir (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
    // t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]; '.' instead of the last '-'
    // is accepted too). Throws IoError / FormatError naming the file.
    static Dataset load(const DatasetOptions& opts);
    // Loads from four explicit files.
    static Dataset load(const DatasetFiles& files, const DatasetOptions& opts);
    static DatasetFiles locate(const std::string& dir);

    std::string name;                     // e.g. "fashion-mnist"
    std::string dir;
    DatasetFiles files;
    LabeledImages train, validation, test;
    std::vector<std::string> classNames;  // 10 names
    Normalization normalization;          // per channel, of train pixels scaled to [0,1]

    std::size_t channels() const { return train.channels; }
    std::size_t height() const { return train.height; }
    std::size_t width() const { return train.width; }
    std::size_t numClasses() const { return classNames.size(); }

    // Writes the images `indices` of `set` as a (B, C, H, W) batch normalised per channel, and their labels.
    void makeBatch(const LabeledImages& set, std::span<const std::size_t> indices, Tensor& x,
                   std::vector<std::int32_t>& y) const;
    // Contiguous range [begin, end) of `set`.
    void makeBatch(const LabeledImages& set, std::size_t begin, std::size_t end, Tensor& x,
                   std::vector<std::int32_t>& y) const;
};

// The Fashion-MNIST class names, and "0".."9" for digits. Chosen by folder name unless the
// folder holds a classes.txt (one name per line).
std::vector<std::string> guessClassNames(const std::string& dir);

// Per-channel mean and standard deviation of `set`'s pixels scaled to [0, 1] (a constant channel
// gets stddev 1). Exact: sums over a 256-bin histogram per channel.
Normalization pixelStatistics(const LabeledImages& set);

class Rng;
// A seeded permutation of [0, n): Fisher-Yates over Rng, identical on every platform.
std::vector<std::size_t> seededPermutation(std::size_t n, std::uint64_t seed);
// The same, drawing from (and advancing) an existing generator.
std::vector<std::size_t> seededPermutation(std::size_t n, Rng& rng);

} // namespace quantscope
