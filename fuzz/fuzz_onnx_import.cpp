// libFuzzer target for the FP32 ONNX importer (io/onnx_import.h): importOnnx on arbitrary bytes
// (libprotobuf parses them; the importer checks the graph). A model it accepts is built with
// buildModel and, when small, run on one image. Any input must either import or throw a
// quantscope::Error; anything else (a crash, a sanitizer report, another exception, an allocation
// over -malloc_limit_mb) is a finding. Seed corpus: the tests/onnx_import fixtures.
#include "io/onnx_import.h"
#include "util/errors.h"

#include <cmath>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    const std::vector<std::uint8_t> bytes(data, data + size);
    try {
        const ExportedModel m = importOnnx(bytes, "fuzz.onnx");
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
