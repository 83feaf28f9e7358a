// Shared by the .qsm tests (tst_qsm: round trips, sizes, version 1 files; tst_qsm_errors:
// corrupted files): catching the typed error, re-sealing an edited file's header, comparing two
// stored models field by field, and running one.
#pragma once

#include "infer/model_runner.h"
#include "io/qsm.h"
#include "util/errors.h"

#include "onnx/export_fixtures.h"

#include <QtTest>

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace qsm_fixtures {

using namespace quantscope;
using Bytes = std::vector<std::uint8_t>;

struct Caught {
    QString type, message;
};

template <typename F>
inline Caught catchError(F&& f)
{
    try {
        f();
    } catch (const FormatError& e) {
        return {"FormatError", e.what()};
    } catch (const IoError& e) {
        return {"IoError", e.what()};
    } catch (const ConfigError& e) {
        return {"ConfigError", e.what()};
    } catch (const std::exception& e) {
        return {"other", e.what()};
    }
    return {"no error", {}};
}

// Rewrites the header's payload size and CRC so the parser, not the CRC check, meets the damage.
inline void fixHeader(Bytes& b)
{
    const std::uint64_t payload = b.size() - kQsmHeaderSize;
    std::memcpy(b.data() + 16, &payload, 8);
    const std::uint32_t crc = static_cast<std::uint32_t>(crc32(0, b.data() + kQsmHeaderSize, static_cast<uInt>(payload)));
    std::memcpy(b.data() + 24, &crc, 4);
}

inline void compareModels(const ExportedModel& a, const ExportedModel& b)
{
    QCOMPARE(b.modelName, a.modelName);
    QCOMPARE(b.quantized, a.quantized);
    QCOMPARE(b.classNames, a.classNames);
    QVERIFY(b.normalization == a.normalization);
    QCOMPARE(b.inputQuant, a.inputQuant);
    QCOMPARE(b.layers.size(), a.layers.size());
    for (std::size_t i = 0; i < a.layers.size(); ++i) {
        const StoredLayer &x = a.layers[i], &y = b.layers[i];
        QCOMPARE(y.name, x.name);
        QCOMPARE(y.kind, x.kind);
        QCOMPARE(y.inputs, x.inputs);
        QCOMPARE(y.inChannels, x.inChannels);
        QCOMPARE(y.outChannels, x.outChannels);
        QCOMPARE(y.kernel, x.kernel);
        QCOMPARE(y.stride, x.stride);
        QCOMPARE(y.padding, x.padding);
        QCOMPARE(y.groups, x.groups);
        QCOMPARE(y.inFeatures, x.inFeatures);
        QCOMPARE(y.outFeatures, x.outFeatures);
        QCOMPARE(y.eps, x.eps);
        QCOMPARE(y.momentum, x.momentum);
        QCOMPARE(y.dropout, x.dropout);
        QCOMPARE(y.outputQuant, x.outputQuant);
        QCOMPARE(y.bnFolded, x.bnFolded);
        QCOMPARE(y.tensors.size(), x.tensors.size());
        for (std::size_t t = 0; t < x.tensors.size(); ++t) {
            QCOMPARE(y.tensors[t].name, x.tensors[t].name);
            QCOMPARE(y.tensors[t].shape, x.tensors[t].shape);
            QCOMPARE(y.tensors[t].encoding, x.tensors[t].encoding);
            QCOMPARE(y.tensors[t].layout, x.tensors[t].layout);
            QCOMPARE(y.tensors[t].groupSize, x.tensors[t].groupSize);
            QCOMPARE(y.tensors[t].qmin, x.tensors[t].qmin);
            QCOMPARE(y.tensors[t].qmax, x.tensors[t].qmax);
            QCOMPARE(y.tensors[t].values, x.tensors[t].values);
            QCOMPARE(y.tensors[t].q, x.tensors[t].q);
            QCOMPARE(y.tensors[t].scales, x.tensors[t].scales);
            QCOMPARE(y.tensors[t].zeroPoints, x.tensors[t].zeroPoints);
            QCOMPARE(y.tensors[t].bits, x.tensors[t].bits);
        }
    }
}

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
