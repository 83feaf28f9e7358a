// Two stored models (ExportedModel) compared field by field, for the tests of the files that hold
// them (.qsm and ONNX round trips). QCOMPARE returns from this helper: check
// QTest::currentTestFailed() after it.
#pragma once

#include "io/exported_model.h"

#include <QtTest>

#include <cmath>
#include <cstddef>

namespace fixtures {

// b (read back) against a (written). momentumTolerance: 0 for an exact match, or the rounding a
// format allows (ONNX stores 1 - momentum).
inline void compareExported(const quantscope::ExportedModel& b, const quantscope::ExportedModel& a, float momentumTolerance = 0.0f)
{
    using namespace quantscope;
    QCOMPARE(b.modelName, a.modelName);
    QCOMPARE(b.channels, a.channels);
    QCOMPARE(b.height, a.height);
    QCOMPARE(b.width, a.width);
    QCOMPARE(b.classes, a.classes);
    QVERIFY(b.normalization == a.normalization);
    QCOMPARE(b.classNames, a.classNames);
    QCOMPARE(b.strategy, a.strategy);
    QCOMPARE(b.weightFormat, a.weightFormat);
    QCOMPARE(b.activationFormat, a.activationFormat);
    QCOMPARE(b.granularity, a.granularity);
    QCOMPARE(b.quantized, a.quantized);
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
        QVERIFY(y.window == x.window); // a Conv2d's window that is not square
        QCOMPARE(y.groups, x.groups);
        QCOMPARE(y.inFeatures, x.inFeatures);
        QCOMPARE(y.outFeatures, x.outFeatures);
        QCOMPARE(y.eps, x.eps);
        if (momentumTolerance > 0.0f) QVERIFY(std::abs(y.momentum - x.momentum) < momentumTolerance);
        else QCOMPARE(y.momentum, x.momentum);
        QCOMPARE(y.dropout, x.dropout);
        QCOMPARE(y.bnFolded, x.bnFolded);
        QCOMPARE(y.outputQuant, x.outputQuant);
        QCOMPARE(y.tensors.size(), x.tensors.size());
        for (std::size_t t = 0; t < x.tensors.size(); ++t) {
            const StoredTensor &p = x.tensors[t], &q = y.tensors[t];
            QCOMPARE(q.name, p.name);
            QCOMPARE(q.shape, p.shape);
            QCOMPARE(q.encoding, p.encoding);
            QCOMPARE(q.values, p.values);
            QCOMPARE(q.bits, p.bits);
            QCOMPARE(q.isSigned, p.isSigned);
            QCOMPARE(q.qmin, p.qmin);
            QCOMPARE(q.qmax, p.qmax);
            QCOMPARE(q.layout, p.layout);
            QCOMPARE(q.groupSize, p.groupSize);
            QCOMPARE(q.scales, p.scales);
            QCOMPARE(q.zeroPoints, p.zeroPoints);
            QCOMPARE(q.q, p.q);
        }
    }
}

} // namespace fixtures
