// Shared by the reader targets (fuzz_qsm, fuzz_onnx_qdq): a model a reader accepted is built by
// ModelRunner (the integer engine, or the float model) and run on one image, when small enough to
// keep each input fast; a prediction outside the model's classes is a finding (a trap).
#pragma once

#include "infer/model_runner.h"
#include "io/exported_model.h"

#include <cstdint>
#include <vector>

namespace fuzz {

inline void runOnOneImage(const quantscope::ExportedModel& m)
{
    using namespace quantscope;
    if (m.numParams() > 200000 || m.channels * m.height * m.width > 4096) return;
    RunnerOptions o;
    o.threads = 1;
    ModelRunner r(m, o);
    std::vector<std::uint8_t> px(m.channels * m.height * m.width, 127);
    std::int32_t pred = -1;
    r.predict(px.data(), 1, &pred);
    if (pred < 0 || static_cast<std::size_t>(pred) >= m.classes) __builtin_trap();
}

} // namespace fuzz
