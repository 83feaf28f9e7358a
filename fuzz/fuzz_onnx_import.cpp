// libFuzzer target for the FP32 ONNX importer (io/onnx_import.h): importOnnx on arbitrary bytes
// (libprotobuf parses them; the importer checks the graph). A model it accepts is built with
// buildModel and, when small, run on one image. Any input must either import or throw a
// quantscope::Error; anything else (a crash, a sanitizer report, another exception, an allocation
// over -malloc_limit_mb) is a finding. Seed corpus: the tests/onnx_import fixtures, and
// make_fuzz_corpus's models whose weights are external data. External data is read from a folder
// holding one file, data.bin (64 KiB of bytes written once): a mutated location, offset or length
// must be refused (outside the folder, past the file's end) or read within it.
#include "io/onnx_import.h"
#include "util/errors.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {
// The folder of external data: a temporary folder holding data.bin, made once per process.
const std::string& dataFolder()
{
    static const std::string folder = [] {
        const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("qs_fuzz_onnx_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir);
        std::ofstream f(dir / "data.bin", std::ios::binary);
        for (std::uint32_t i = 0; i < 16384; ++i) {
            const float v = std::sin(static_cast<float>(i)) * 0.5f; // finite weights, any offset
            f.write(reinterpret_cast<const char*>(&v), sizeof v);
        }
        return dir.string();
    }();
    return folder;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    const std::vector<std::uint8_t> bytes(data, data + size);
    try {
        OnnxImportOptions options;
        options.externalDataFolder = dataFolder();
        const ExportedModel m = importOnnx(bytes, "fuzz.onnx", nullptr, options);
        std::unique_ptr<Model> model = buildModel(m);
        if (m.numParams() > 200000 || m.channels * m.height * m.width > 4096) return 0;
        for (const Shape& s : m.activationShapes())
            if (shapeNumel(s) > (std::size_t{1} << 18)) return 0; // keep runs short and small
        Tensor x({1, m.channels, m.height, m.width}, 0.5f);
        RunContext ctx;
        const Tensor& y = model->forward(x, ctx);
        if (y.numel() != m.classes) __builtin_trap();
    } catch (const Error&) {
    }
    return 0;
}
