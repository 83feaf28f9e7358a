// Scoring a model file (.qsm or .onnx, FP32 or integer) on a dataset's test set: the checks and
// choices `quantscope-cli eval` makes, shared with the GUI's File > Evaluate model file, so that
// both give the same accuracy for the same file and data.
#pragma once

#include "data/dataset.h"
#include "infer/model_runner.h"
#include "io/exported_model.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace quantscope {

// What prepareModelForData decided, for the caller to tell the user.
struct DataMatch {
    // The test labels in the model's class order (data label d -> dataToModel[d] when the data's
    // class names are the model's in another order), one per test image.
    std::vector<std::int32_t> labels;
    // Set when the class names differ or were matched by name ("the data's class folders are in
    // another order ..."); empty when they agree or either side has no names.
    std::string classNote;
    // Set when the model stores no input normalisation and the data's train-set statistics were
    // taken ("<path> does not say how its input was normalised: using the train set's statistics,
    // mean 0.2860, std 0.3530"); the caller adds how to give one.
    std::string normalizationNote;
    // Set when the given normalisation was applied before the graph's own (InputNormalization's
    // Composed, io/model_source.h): which two, and the pixels' normalisation in all.
    std::string composedNote;
};

// Checks that `model` (read from `path`) takes `data`'s test images and classes, and fills in what
// the file leaves open:
//  - a model of dynamic height and width (ExportedModel::dynamicImageSize) is read again from
//    `path` at the data's (io/model_source.h readModelFile);
//  - the image shape must be the model's C x H x W, else ConfigError naming the file and both
//    shapes (with a --resize hint when only H x W differ and `resized` is false);
//  - the class count must be the model's, else ConfigError naming both counts;
//  - class names the file stores are matched to the data's by name (DataMatch::labels);
//  - a model that stores no normalisation (an ONNX file from PyTorch) gets `normalization` when
//    given (the user's MEAN,STD, broadcast to the model's channels; ConfigError when it does not
//    fit), else the data's statistics, with a note. A given normalisation on a graph that
//    normalises its input itself is applied before it (DataMatch::composedNote). On a model that
//    stores another one (a .qsm, QuantScope's ONNX) it is a ConfigError: the model was trained
//    on inputs normalised its own way. (resolveInputNormalization, io/model_source.h)
DataMatch prepareModelForData(ExportedModel& model, const std::string& path, const Dataset& data, bool resized,
                              const std::optional<Normalization>& normalization = std::nullopt);

// Options of evaluateModelFile.
struct FileEvalOptions {
    RunnerOptions runner;          // auto / integer / reference, the integer kernels, threads
    std::size_t batch = 256;       // images per ModelRunner::predict call
    bool compareReference = false; // an integer model: also run the fake-quant reference and count equal argmaxes
    bool bench = false;            // also measure images/s (benchmarkRunner: a warm-up batch, best of `passes`)
    std::size_t passes = 3;
};

struct FileEvalResult {
    std::string runner;           // ModelRunner::description(), e.g. "integer engine (avx512-vnni)"
    bool integer = false;         // the runner is the integer engine
    std::size_t images = 0;       // test images scored
    double accuracy = 0.0;        // top-1, [0, 1]
    std::vector<std::int32_t> predictions;
    // compareReference on a model the integer engine ran: the fake-quant reference's top-1 and the
    // share of images on which the two predict the same class, [0, 1].
    std::optional<double> referenceAccuracy, agreement;
    std::optional<double> imagesPerSecond; // bench
};

// Progress of evaluateModelFile: (images done, images in all passes). Called from the evaluating
// thread after every batch.
using FileEvalProgress = std::function<void(std::size_t done, std::size_t total)>;

// Runs `model` (prepared by prepareModelForData) on `test` with `labels` and scores it. The
// reference comparison and the speed measurement run after the accuracy pass, in that order.
// Returns nullopt when `stop` became true (checked between batches). Throws ConfigError when the
// runner kind is Integer and the engine cannot run the model.
std::optional<FileEvalResult> evaluateModelFile(const ExportedModel& model, const LabeledImages& test,
                                                const std::vector<std::int32_t>& labels, const FileEvalOptions& options,
                                                const std::atomic<bool>* stop = nullptr, const FileEvalProgress& progress = {});

// Every test image's prediction, as a CSV file lists it (predictionsCsv): what eval --predictions
// and the GUI's Save predictions write.
struct PredictionRows {
    std::vector<std::int32_t> predicted;  // the model's class, one per image
    std::vector<std::int32_t> labels;     // the true class in the model's class order (DataMatch::labels)
    std::vector<std::string> classNames;  // in the model's class order: the file's, else the data's when the counts agree; may be empty
    std::vector<std::string> sources;     // LabeledImages::sources: empty, or one per image
};

// The rows for `predicted` on `data`'s test set as prepareModelForData matched it to `model`.
// Throws ConfigError when the counts of predictions, labels and sources differ.
PredictionRows predictionRows(const ExportedModel& model, const Dataset& data, const DataMatch& match,
                              std::vector<std::int32_t> predicted);

// RFC 4180 CSV text, a header and one row per image:
//   index,predicted_class,predicted_name,label,label_name,correct,source
// index is the image's position in the test set (for IDX and CIFAR its position in the test file;
// the first two columns are what older versions wrote, without the header); names are empty when
// no names are known, correct is 1 or 0, source is LabeledImages::sources' entry (empty for IDX
// and CIFAR). Fields with a comma, quote or line break are quoted, quotes doubled.
std::string predictionsCsv(const PredictionRows& rows);

} // namespace quantscope
