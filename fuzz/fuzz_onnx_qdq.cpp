// libFuzzer target for the reader of QuantScope's own ONNX exports (io/onnx_io.h decodeOnnx: the
// QDQ and FP32 graphs encodeOnnx writes, known by their quantscope.* metadata), on arbitrary bytes
// (libprotobuf parses them; the reader checks the graph and the metadata). A model it accepts
// validates and, when small, is built and run on one image by the integer engine or the float
// model. Any input must either decode or throw a quantscope::Error; anything else (a crash, a
// sanitizer report, another exception, an allocation over -malloc_limit_mb) is a finding. Seed
// corpus: make_fuzz_corpus's onnx_qdq folder (uniform int8/int2 models, FP32 models, and a plan
// with a float layer behind a per-axis DequantizeLinear).
#include "io/onnx_io.h"
#include "util/errors.h"

#include "run_accepted.h"

#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace quantscope;
    try {
        fuzz::runOnOneImage(decodeOnnx(std::vector<std::uint8_t>(data, data + size), "fuzz.onnx"));
    } catch (const Error&) {
    }
    return 0;
}
