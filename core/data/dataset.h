// Dataset: train / validation / test sets read from an MNIST-layout folder of IDX files, a CIFAR
// binary folder, a CSV file or folder, or an image-folder tree (the layout is detected), normalised
// by the train set's pixel mean and standard deviation.
#pragma once

#include "data/normalization.h"
#include "tensor/tensor.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace quantscope {

inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

// One set of labelled images, kept as bytes (normalised per batch). Each image is planar
// (channels, height, width), as CIFAR stores it and as a (C, H, W) tensor reads it.
struct LabeledImages {
    std::size_t channels = 1, height = 0, width = 0;
    std::vector<std::uint8_t> pixels;  // count * channels * height * width
    std::vector<std::int32_t> labels;  // count
    // Where each image came from, for people mapping results back to files (eval --predictions):
    // empty, or one per image. An image folder's are paths under the folder given ("test/cat/1.png"),
    // a CSV file's the file and line ("train.csv:17"); IDX and CIFAR leave it empty (their images
    // are in file order, and a test set's index is the image's position in the file).
    std::vector<std::string> sources;
    std::size_t size() const { return labels.size(); }
    std::size_t imageBytes() const { return channels * height * width; }
};

// The dataset layouts Dataset::load recognises (detectLayout).
enum class DatasetLayout { Idx, Cifar10, Cifar100, Csv, ImageFolder };
const char* layoutName(DatasetLayout layout); // "IDX", "CIFAR-10", "CIFAR-100", "CSV", "image folder"

// What to give when a model reads images of `modelChannels` channels and the data's have
// `dataChannels`: the layouts that hold such images (--resize changes only the size). Empty when
// they agree. Starts with "; ", to follow the mismatch it explains.
std::string channelMismatchHint(std::size_t modelChannels, std::size_t dataChannels);

// An image shape (C, H, W); all zero = not given.
struct ImageShape {
    std::size_t channels = 0, height = 0, width = 0;
    bool given() const { return height != 0; }
};
// "CxHxW", C 1 or 3, H and W 1..4096 (e.g. "3x32x32"). Throws ConfigError.
ImageShape parseImageShape(const std::string& text);
// "HxW", 1..4096 each (e.g. "32x32"); the channels stay 0. Throws ConfigError.
ImageShape parseResize(const std::string& text);

struct DetectedLayout {
    DatasetLayout layout;
    std::string path; // the folder or file to read (may be a subfolder such as cifar-10-batches-bin)
};
// Looks at `path` (a folder, or a .csv file) and says which layout it holds, in this order:
// IDX files; CIFAR-10 (data_batch_N.bin / test_batch.bin); CIFAR-100 (train.bin + test.bin);
// train.csv; class folders with images (train/ + test/, or one tree). Also looks one folder down
// when that folder is the only one (a tarball's cifar-10-batches-bin). Throws IoError naming the
// path and the layouts it expected.
DetectedLayout detectLayout(const std::string& path);

// The four files of an MNIST-layout folder. Each may be plain or .gz.
struct DatasetFiles {
    std::string trainImages, trainLabels, testImages, testLabels;
};

struct DatasetOptions {
    std::string dir = kDefaultDataDir; // a folder of any layout, or a .csv file
    std::size_t trainLimit = 0;  // 0 = all; otherwise a seeded subset of the train set
    std::size_t testLimit = 0;   // 0 = all; otherwise the first N test images
    std::size_t validation = 0;  // images moved from train to a validation set (seeded)
    // false: the validation images are split off the whole training set, then trainLimit draws
    // from the rest. true: trainLimit draws first and the validation images are held out of those
    // M, as quantscope-cli train and analyze (--validation N --train-limit M) and the GUI's dataset
    // dock and Analysis tab draw them.
    bool validationAfterLimit = false;
    // `validation` is a default, not the user's count: where the training images it is taken from
    // are no more than it, half of them are held out instead (analyze's 5000 of a 400-image CSV
    // left none to calibrate on: tester 23).
    bool validationHalvesFewImages = false;
    std::uint64_t seed = 1;
    ImageShape imageShape;       // CSV: the shape of a row's pixels; not given = from the column count
    ImageShape resize;           // HxW every image is resized to (needed when image files differ in size)
    double testFraction = 0.2;   // a single CSV file or image tree: share of each class held out as test (splitTrainTest: by hash, not --seed)
    // Image folders: decode every image with this many channels, 1 or 3 (eval gives its model's):
    // grey images replicated to RGB, colour ones converted to grey luma (decodeImage, as PIL's
    // convert("RGB") / convert("L")), with a note when the images are not all of that kind.
    // 0: 3 if any image is colour, else 1. Other layouts store their channels and ignore it.
    std::size_t imageChannels = 0;
    // The caller uses the test set alone (eval of a model that knows its normalisation): training
    // images are not decoded (image folders, IDX; the train set is left empty, of the test set's
    // shape), and a layout with no test split of its own (one image tree, one CSV file) is all test.
    bool testOnly = false;
    // The caller reads the training set for its normalisation statistics only (eval of a model
    // that does not store one): with --resize they are taken image by image, without a resized
    // copy of the set (60,000 images at 512x512 are 15.7 GB); an image folder decodes only the
    // images they come from. The train set is left empty, of the test set's shape, as with testOnly.
    bool trainForStatistics = false;
    // The normalisation statistics come from training images evenly spaced over the whole set
    // that make at most this many pixels (at their size after --resize; 1,024 images at 512x512,
    // all of Fashion-MNIST or CIFAR-10), and at least 16 images, whatever trainLimit and validation
    // keep, so that a limited run stores the statistics an unlimited one does.
    std::size_t statisticsPixels = std::size_t{1} << 28;
};

class Dataset {
public:
    // Detects the layout of opts.dir (detectLayout) and reads it. IDX: train-images-idx3-ubyte[.gz],
    // train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] ('.'
    // instead of the last '-' is accepted too). Throws IoError / FormatError naming the file and the
    // record, line or image; ConfigError for options that do not fit the data.
    static Dataset load(const DatasetOptions& opts);
    // Loads from four explicit files.
    static Dataset load(const DatasetFiles& files, const DatasetOptions& opts);
    static DatasetFiles locate(const std::string& dir);

    std::string name;                     // e.g. "fashion-mnist"
    std::string dir;                      // the folder or file read
    DatasetLayout layout = DatasetLayout::Idx;
    std::string split;                    // how the test set came about when not given, e.g. "20% of train.csv"
    bool splitByFraction = false;         // held out by DatasetOptions::testFraction (else the files give it)
    DatasetFiles files;                   // IDX only
    LabeledImages train, validation, test;
    std::vector<std::string> classNames;  // one per class (at least 2)
    Normalization normalization;          // per channel, of train pixels scaled to [0,1]
    // What the reader passed over that a user may have meant to be read, one sentence each naming
    // it (an image folder's images outside any class folder, folders beside train/ and test/):
    // train and eval print them as notes, and give them in the JSON start event as data_notes.
    std::vector<std::string> notes;

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

// An IDX folder's class names, for labels 0..labelCount-1: the lines of its classes.txt if it
// has one (FormatError naming the file if it names fewer than labelCount classes, or more than
// kMaxClasses); else, for labels up to 9, the first labelCount Fashion-MNIST names when the
// folder's name says "fashion"; else "0".."labelCount-1".
std::vector<std::string> guessClassNames(const std::string& dir, std::size_t labelCount = 10);

// Per-channel mean and standard deviation of `set`'s pixels scaled to [0, 1] (a constant channel
// gets stddev 1). Exact: sums over a 256-bin histogram per channel.
Normalization pixelStatistics(const LabeledImages& set);
// The same of `set`'s images resized to target's HxW (resizeImage), one image plane at a time:
// the statistics of the resized set, without making it.
Normalization pixelStatistics(const LabeledImages& set, const ImageShape& target);

// The split DatasetOptions::validation makes: `n` of `trainSize` training images held out as a
// validation set, seeded (seed: DatasetOptions::seed). Both index lists ascend. ConfigError when
// n leaves no training image.
struct ValidationSplit {
    std::vector<std::size_t> train, validation;
};
ValidationSplit validationSplit(std::size_t trainSize, std::size_t n, std::uint64_t seed);

class Rng;
// A seeded permutation of [0, n): Fisher-Yates over Rng, identical on every platform.
std::vector<std::size_t> seededPermutation(std::size_t n, std::uint64_t seed);
// The same, drawing from (and advancing) an existing generator.
std::vector<std::size_t> seededPermutation(std::size_t n, Rng& rng);

// How the class names a model file stores line up with a dataset's (both in label order).
struct ClassMatch {
    enum class Kind {
        Same,      // the same names in the same order
        Unknown,   // one side has no names, or only the numbered "0", "1", ... of unnamed data, or the counts differ
        Reordered, // the same names in another order: dataToModel maps a data label to the model's class
        Different, // other names
    } kind = Kind::Unknown;
    std::vector<std::int32_t> dataToModel; // Reordered only
};
ClassMatch matchClasses(const std::vector<std::string>& modelNames, const std::vector<std::string>& dataNames);

} // namespace quantscope
