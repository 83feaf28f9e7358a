// What each dataset format reader hands to Dataset::load (data/ internal): the train and test
// sets as read, before the validation split, limits, --resize and normalisation. Readers live in
// idx.cpp (via dataset.cpp), cifar.cpp, csv_images.cpp and image_folder.cpp.
#pragma once

#include "data/dataset.h"

#include <string>
#include <utility>
#include <vector>

namespace quantscope {

struct RawDataset {
    std::string name;                    // shown in the GUI, e.g. "cifar-10-batches-bin"
    LabeledImages train, test;           // planar (C, H, W) bytes per image
    std::vector<std::string> classNames; // one per class; labels index it
    std::string split;                   // how train/test came about, e.g. "test.csv" or "20% of train.csv"
    bool splitByFraction = false;        // the test set was held out by DatasetOptions::testFraction
    std::vector<std::string> notes;      // Dataset::notes
};

// Largest dataset accepted in memory (bytes of pixels), checked before allocating it.
inline constexpr std::uint64_t kMaxDatasetBytes = std::uint64_t{1} << 33;
// Largest class count a CSV label or a class folder tree may make.
inline constexpr std::size_t kMaxClasses = 1000;

// Which images of a training set of n that Dataset::load keeps, as indices into it, ascending:
// the validation split (opts.validation) and the seeded --train-limit subset, in the order
// opts.validationAfterLimit gives. A reader that decodes (image folders) decodes only these.
// ConfigError when the validation split leaves no training image.
struct TrainingSelection {
    std::vector<std::size_t> train, validation;
};
TrainingSelection selectTraining(std::size_t n, const DatasetOptions& opts);

// The training images whose pixels give the normalisation statistics, as ascending indices into a
// training set of n images of pixelsPerImage (C H W at the size they are used, after --resize):
// every image when they hold at most opts.statisticsPixels pixels, else as many as do (at least
// 16), evenly spaced over the set. The same images whatever --train-limit and --validation keep;
// an image-folder reader decodes them too.
std::vector<std::size_t> statisticsSample(std::size_t n, std::size_t pixelsPerImage, const DatasetOptions& opts);

// CIFAR-10 (data_batch_1..5.bin + test_batch.bin) or CIFAR-100 (train.bin + test.bin) in `dir`.
RawDataset readCifar(const std::string& dir, bool cifar100);
// One CIFAR binary file: records of [label] or [coarse, fine] then 3072 bytes (3x32x32 planar).
// Throws FormatError naming the file and the record (truncated, label out of range).
LabeledImages parseCifarBatch(const std::vector<std::uint8_t>& bytes, const std::string& path, bool cifar100);

// A CSV file (split into train/test by opts.testFraction) or a folder with train.csv [+ test.csv].
RawDataset readCsvDataset(const std::string& path, const DatasetOptions& opts);

// torchvision ImageFolder: root/train/<class>/*, root/test/<class>/*, or root/<class>/* split by
// opts.testFraction.
RawDataset readImageFolder(const std::string& root, const DatasetOptions& opts);
// ConfigError naming root, the images' count and shape (CxHxW as decoded, after --resize when
// `resized`), the GiB and the way out (--resize, fewer images) when `images` of `shape` held twice
// (as read, and the kept ones' copy) would take more than 80 % of physicalBytes; nothing when
// physicalBytes is 0 (unknown). readImageFolder calls it after reading the headers, before
// decoding (20 PNGs of 8192x8192, 4 MB on disk, were decoded until an allocation failed with a bare
// "out of memory", tester 11).
void checkImageFolderFootprint(const std::string& root, std::size_t images, const ImageShape& shape, bool resized,
                               unsigned long long physicalBytes);

// What an image-folder listing passes over, as torchvision's ImageFolder users expect of a tree
// unpacked from an archive: hidden folders (".ipynb_checkpoints") and macOS's "__MACOSX" folder
// (skippedFolderName), and AppleDouble files ("._photo.png" beside "photo.png": resource forks,
// not images; skippedFileName). Each takes the last component of a path.
bool skippedFolderName(const std::string& name);
bool skippedFileName(const std::string& name);

// The images `idx` of `s`, in that order.
LabeledImages subset(const LabeledImages& s, const std::vector<std::size_t>& idx);
// Splits `all` into (train, test) per class: round(`fraction` x its size) of each class's images
// (at least one when the class has two or more) go to test, those whose `keys` are smallest (ties
// by position). A CSV's key is a hash of its row (contentKeys), an image file's of its path in the
// tree: an image's side does not depend on the others, so adding images to a class moves none of
// the others from train to test, and at most one the other way where the count held out grows (a
// positional draw moved several, so a model was later scored partly on its own training images,
// tester 11). Independent of --seed: every run and `eval` see the same test set. ConfigError for a
// fraction outside (0, 1); FormatError if the test set would be empty.
std::pair<LabeledImages, LabeledImages> splitTrainTest(const LabeledImages& all, double fraction, const std::string& what);
// The same split as indices into `labels` (each list ascending), for a reader that decodes only
// what it keeps; keys[i] is image i's (labels.size() of them).
struct TrainTestIndices {
    std::vector<std::size_t> train, test;
};
TrainTestIndices splitTrainTestIndices(const std::vector<std::int32_t>& labels, const std::vector<std::uint64_t>& keys,
                                       double fraction, const std::string& what);
// A key per image of `set` from its label and pixels (FNV-1a): equal images, equal keys.
std::vector<std::uint64_t> contentKeys(const LabeledImages& set);
// An image file's split key: a hash of its path below `tree` (e.g. "cat/img7.png"), so that its side
// of the split stays whatever else the folder gains or where the folder is.
std::uint64_t imagePathKey(const std::string& path, const std::string& tree);
// A test fraction as the split's description gives it: "20%", "0.1%", "99.9%" (three significant
// digits; 0.001 read "0%" though every class held one image out, tester 11).
std::string percentText(double fraction);
// Names from a classes.txt in `dir` (one per line, blank lines skipped); empty when there is none.
std::vector<std::string> readClassesTxt(const std::string& dir);
// "0".."count-1".
std::vector<std::string> numberedClassNames(std::size_t count);
// The last component of a path, ignoring trailing slashes ("a/b/" -> "b").
std::string baseName(const std::string& path);

} // namespace quantscope
