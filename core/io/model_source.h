// Where a model comes from: a preset built fresh, a preset with the weights of a saved FP32 model
// (`--init FILE`), or a model file's own architecture and weights (`--model FILE`: an ONNX file
// exported by PyTorch or QuantScope, or a .qsm). The Trainer takes the result as a ModelFactory,
// so it never reads files itself.
#pragma once

#include "io/exported_model.h"
#include "nn/model_zoo.h"

#include <optional>
#include <string>

namespace quantscope {

// True when `spec` names a model file rather than a preset: it ends in .onnx or .qsm (any case).
bool isModelFile(const std::string& spec);

// For an existing regular file whose name does not end in .qsm or .onnx: what its content says it
// is and how to use it ("holds a QuantScope .qsm model: rename it to end in .qsm", or the same for
// ONNX), or "" when it is neither, not a file, or a preset's name (the preset wins). Reads at most
// the file's header, or parses it as ONNX within the importer's limits.
std::string misnamedModelFile(const std::string& path);

// Reads a .qsm or .onnx file. ONNX files QuantScope wrote (its quantscope.* metadata) are read
// with their normalisation, quantization and names; other FP32 ONNX graphs are imported with
// an identity normalisation (their input is taken as already normalised). An ONNX graph whose
// input height and width are dynamic (ExportedModel::dynamicImageSize) is read at `height` x
// `width`, the data's size, or with 0 at the importer's default side (io/onnx_import.h); every
// other file has its own size. Of an ONNX graph with several outputs, the one declared [N, classes]
// (the data's class count; 0: none given) is read as the class scores, else the first
// (OnnxImportOptions::classes). Throws IoError / FormatError / ConfigError naming the file.
ExportedModel readModelFile(const std::string& path, std::size_t height = 0, std::size_t width = 0, std::size_t classes = 0);
// Whether readModelFile reads the file behind m differently for data of that size and class
// count: a graph of dynamic height and width read at another size, or a graph of several outputs
// whose class scores have another width than the data's classes (then another output may fit).
bool readsDifferentlyFor(const ExportedModel& m, std::size_t height, std::size_t width, std::size_t classes);
// For the error a class count mismatch gives: of a graph with several outputs, which one was read
// and how to make the scores the one read; "" for one output.
std::string severalOutputsHint(const ExportedModel& m, std::size_t classes);

// The input normalisation to run a model file's weights with, given the one the user asked for
// (`given`: --normalize, the Normalize field), for every command and dialog that does:
// - Stored: nothing given, or the file's own given again (to describe()'s four decimals: scripts
//   pass the same flags to every model); `value` is the file's.
// - NotStored: nothing given to a file that says nothing; the caller picks (the train set's
//   statistics, a plan's); `value` is the identity.
// - Given: given to a file that says nothing; `value` is the given one.
// - Composed: given to a graph that normalises its input with its own operators
//   (ExportedModel::normalizationFromGraph): the given normalisation is applied before the graph
//   and the graph's after it, as one normalisation of the pixels (Normalization::after); `note`
//   says so, with both.
// - Conflict: another normalisation than the one a .qsm, QuantScope's ONNX or a graph of uint8
//   pixels stores: its weights were not trained on it. `note` says so ("<path> stores its input
//   normalisation (...), and <askedBy> asks for ..."); the caller adds what to do instead.
// `value` has `channels` entries (a one-entry normalisation broadcast); throws ConfigError when
// `given` or the file's has another number of channels.
struct InputNormalization {
    enum class Kind { Stored, NotStored, Given, Composed, Conflict };
    Kind kind = Kind::NotStored;
    Normalization value;
    std::string note; // Composed and Conflict: the sentence to tell the user
};
InputNormalization resolveInputNormalization(const ExportedModel& m, const std::string& path, const std::optional<Normalization>& given,
                                             std::size_t channels, const std::string& askedBy = "--normalize");

// The architecture and weights of the FP32 model in `path`. With `reinit` the weights are
// initialised afresh from the seed (PyTorch's default init; BatchNorm to identity), so only
// the architecture is kept. A graph of dynamic height and width is read at the dataset's. The factory throws ConfigError naming the file when the model's input
// (C, H, W) or class count differs from the dataset's, and when the file holds an integer model.
ModelFactory modelFromFile(const std::string& path, bool reinit);

// The preset `preset` built for the dataset, then loaded with the weights of the FP32 model in
// `path` (loadFloatWeights).
ModelFactory presetWithWeights(const std::string& preset, const std::string& path);

// Copies the FP32 parameters (and BatchNorm running statistics) of `m` into `model`, layer by
// layer (matched by name) and tensor by tensor. `source` names the file in errors: ConfigError
// when `m` is an integer model or does not match the model's layers and shapes.
void loadFloatWeights(Model& model, const ExportedModel& m, const std::string& source);

} // namespace quantscope
