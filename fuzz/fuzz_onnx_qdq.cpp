// libFuzzer target for the reader of QuantScope's own ONNX exports (io/onnx_io.h decodeOnnx: the
// QDQ and FP32 graphs encodeOnnx writes, known by their quantscope.* metadata), on arbitrary bytes
// (libprotobuf parses them; the reader checks the graph and the metadata). A model it accepts
// validates and, when small, is built and run on one image by the integer engine or the float
// model. Any input must either decode or throw a quantscope::Error; anything else (a crash, a
// sanitizer report, another exception, an allocation over -malloc_limit_mb) is a finding. Seed
// corpus: make_fuzz_corpus's onnx_qdq folder (uniform int8/int2 models, FP32 models, and a plan
// with a float layer behind a per-axis DequantizeLinear).
#include "infer/model_runner.h"
#include "io/onnx_io.h"
#include "util/errors.h"

#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    try {
        const ExportedModel m = decodeOnnx(std::vector<std::uint8_t>(data, data + size), "fuzz.onnx");
        // Keep runs short: only small models are executed.
        if (m.numParams() > 200000 || m.channels * m.height * m.width > 4096) return 0;
        RunnerOptions o;
        o.threads = 1;
        ModelRunner r(m, o);
        std::vector<std::uint8_t> px(m.channels * m.height * m.width, 127);
        std::int32_t pred = -1;
        r.predict(px.data(), 1, &pred);
        if (pred < 0 || static_cast<std::size_t>(pred) >= m.classes) __builtin_trap();
    } catch (const Error&) {
    }
    return 0;
}
