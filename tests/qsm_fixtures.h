// Shared by the .qsm tests (tst_qsm: round trips, sizes, version 1 files; tst_qsm_errors:
// corrupted files): catching the typed error, re-sealing an edited file's header, comparing two
// stored models field by field, and running one.
#pragma once

#include "caught_error.h"

#include "infer/model_runner.h"
#include "io/qsm.h"
#include "util/errors.h"

#include "onnx/export_fixtures.h"
#include "onnx/exported_compare.h"

#include <QtTest>

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace qsm_fixtures {

using namespace quantscope;
using Bytes = std::vector<std::uint8_t>;

using quantscope::testing::Caught; // caught_error.h
using quantscope::testing::catchError;

// Rewrites the header's payload size and CRC so the parser, not the CRC check, meets the damage.
inline void fixHeader(Bytes& b)
{
    const std::uint64_t payload = b.size() - kQsmHeaderSize;
    std::memcpy(b.data() + 16, &payload, 8);
    const std::uint32_t crc = static_cast<std::uint32_t>(crc32(0, b.data() + kQsmHeaderSize, static_cast<uInt>(payload)));
    std::memcpy(b.data() + 24, &crc, 4);
}

// a (written) and b (read back) field by field (fixtures::compareExported, exact).
inline void compareModels(const ExportedModel& a, const ExportedModel& b) { fixtures::compareExported(b, a); }

inline std::vector<std::int32_t> predict(const ExportedModel& m, const LabeledImages& set)
{
    ModelRunner r(m);
    return evaluateRunner(r, set).predictions;
}

// The two models compute bit-identical outputs on the first 32 test images.
inline bool sameOutputs(Model& original, Model& rebuilt, const Dataset& data)
{
    Tensor x;
    std::vector<std::int32_t> y;
    data.makeBatch(data.test, 0, 32, x, y);
    RunContext ctx;
    const Tensor a = original.forward(x, ctx);
    const Tensor& b = rebuilt.forward(x, ctx);
    return b.values() == a.values();
}


} // namespace qsm_fixtures
