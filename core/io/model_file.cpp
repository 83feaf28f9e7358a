#include "io/model_file.h"

#include "io/model_export.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "util/errors.h"

namespace quantscope {

bool isModelFileName(const std::string& path)
{
    try {
        exportFormatFor(path);
        return true;
    } catch (const ConfigError&) {
        return false;
    }
}

ExportedModel readModelFile(const std::string& path)
{
    switch (exportFormatFor(path)) {
    case ExportFormat::Qsm: return readQsm(path);
    case ExportFormat::Onnx: return readOnnx(path);
    }
    throw ConfigError("cannot tell the format of '" + path + "'");
}

} // namespace quantscope
