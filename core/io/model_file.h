// The one place that turns a model file name into an ExportedModel, chosen by extension, so that
// every reader of user model files (`eval`, `info`, the GUI's summary) takes the same formats.
#pragma once

#include "io/exported_model.h"

#include <string>

namespace quantscope {

// True when `path` ends in .qsm or .onnx (any case).
bool isModelFileName(const std::string& path);

// Reads a model file: .qsm with readQsm, .onnx with readOnnx (graphs QuantScope writes; the
// general importer replaces it here). Throws ConfigError for any other extension, IoError when
// the file cannot be read and FormatError (naming the file) when it is not a valid model.
ExportedModel readModelFile(const std::string& path);

} // namespace quantscope
