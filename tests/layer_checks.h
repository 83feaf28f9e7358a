// The end-to-end checks the layer tests (tst_activations, tst_channel_ops, tst_conv_geometry,
// tst_mul_concat, tst_pool_geometry, tst_prelu) make alike, written once: an imported PyTorch
// export against PyTorch's outputs, FP32 .qsm and ONNX round trips, onnxruntime on the FP32 export,
// the engine's codes and predictions against the fake-quant simulation, quantized files read back,
// onnxruntime on the QDQ export. Each check returns an empty string when it holds, else what failed,
// naming the fixture or model; QS_CHECK fails the calling test with it (Qt Test's QVERIFY returns
// only from the function it is written in). The tolerances stay in the tests.
#pragma once

#include "io/onnx_io.h"
#include "io/qsm.h"

#include "onnx/onnx_fixtures.h"
#include "engine_agreement.h"
#include "onnx_import_fixtures.h"

#include <QString>
#include <QtTest>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

// Fails the calling test function with the check's message when it has one.
#define QS_CHECK(check)                                                                                      \
    do {                                                                                                     \
        const QString qsCheckFailure = (check);                                                              \
        QVERIFY2(qsCheckFailure.isEmpty(), qPrintable(qsCheckFailure));                                      \
    } while (false)

namespace layer_checks {

using namespace quantscope;
using Bytes = std::vector<std::uint8_t>;

// What a test asks of a model read back from a file (`back`) against the model written (`m`).
using Keeps = std::function<bool(const ExportedModel& back, const ExportedModel& m)>;

inline QString qstr(const std::string& s) { return QString::fromStdString(s); }

// Every layer's output point as written (after the layers' kinds are known to match).
inline bool samePoints(const ExportedModel& back, const ExportedModel& m)
{
    if (back.layers.size() != m.layers.size()) return false;
    for (std::size_t i = 0; i < back.layers.size(); ++i)
        if (back.layers[i].outputQuant != m.layers[i].outputQuant) return false;
    return true;
}

// The rows of a test run once per activation format: column "act", uint8 and int8.
inline void activationFormatRows()
{
    QTest::addColumn<QString>("act");
    for (const char* act : {"uint8", "int8"}) QTest::newRow(act) << QString(act);
}

// The trace of the point named `name`, or nullptr.
inline const PointTrace* traceNamed(const std::vector<PointTrace>& trace, const std::string& name)
{
    for (const PointTrace& p : trace)
        if (p.layer == name) return &p;
    return nullptr;
}

// The fixture `name` imported as m: as many outputs as PyTorch's, within relTol of its largest |output|.
inline QString matchesPyTorch(const std::string& name, const ExportedModel& m, double relTol)
{
    using namespace onnx_import_fixtures;
    const Reference ref = loadReference(kFixtures / (name + ".json"));
    const std::vector<float> y = forwardOn(m, ref);
    if (y.size() != ref.output.size())
        return QString("%1: %2 outputs, PyTorch has %3").arg(qstr(name)).arg(y.size()).arg(ref.output.size());
    const double dev = engine_agreement::maxDiff(y, ref.output), rel = dev / engine_agreement::maxAbs(ref.output);
    qInfo("%s: max |QuantScope - PyTorch| = %.3g (%.3g of the largest output)", name.c_str(), dev, rel);
    if (!(rel <= relTol)) return QString("%1: relative deviation %2 from PyTorch (at most %3)").arg(qstr(name)).arg(rel).arg(relTol);
    return {};
}

// What the FP32 files of an imported fixture keep: `keeps` says it in words; qsm and onnx check it.
// The .qsm read back gives the outputs bit for bit; the ONNX read back within onnxRelTol of the
// largest |output| (bit for bit without one: where onnxForm folds nothing).
struct RoundTrip {
    const char* keeps;
    Keeps qsm, onnx;
    std::optional<double> onnxRelTol;
};

// The fixture `name` imported as m, through .qsm and ONNX (the ONNX bytes left in onnxBytes).
inline QString roundTrips(const std::string& name, const ExportedModel& m, const RoundTrip& rt, Bytes& onnxBytes)
{
    using namespace onnx_import_fixtures;
    const Reference ref = loadReference(kFixtures / (name + ".json"));
    const std::vector<float> want = forwardOn(m, ref);
    const ExportedModel fromQsm = decodeQsm(encodeQsm(m), "round trip");
    if (!rt.qsm(fromQsm, m)) return QString("%1: the .qsm read back does not keep %2").arg(qstr(name), QString::fromUtf8(rt.keeps));
    if (forwardOn(fromQsm, ref) != want) return QString("%1: the .qsm read back computes other outputs").arg(qstr(name));

    onnxBytes = encodeOnnx(m);
    const ExportedModel fromOnnx = decodeOnnx(onnxBytes, "round trip");
    if (!rt.onnx(fromOnnx, m)) return QString("%1: the ONNX read back does not keep %2").arg(qstr(name), QString::fromUtf8(rt.keeps));
    const std::vector<float> got = forwardOn(fromOnnx, ref);
    if (!rt.onnxRelTol) {
        if (got != want) return QString("%1: the ONNX read back computes other outputs").arg(qstr(name));
    } else if (const double d = engine_agreement::maxDiff(got, want); !(d <= *rt.onnxRelTol * engine_agreement::maxAbs(want))) {
        return QString("%1: ONNX round trip deviates by %2").arg(qstr(name)).arg(d);
    }
    return {};
}

// onnxruntime on the FP32 export of the fixture `name` (written to dir/name.onnx, run on crops of
// the 28 x 28 test images) against QuantScope's float runner: as many values, within relTol of the
// largest |output|. Call after QS_SKIP_WITHOUT_ORT().
inline QString ortMatchesFp32(const std::string& name, const ExportedModel& m, const Bytes& onnxBytes, const std::string& dir,
                              const std::vector<std::uint8_t>& pixels28, double relTol, engine_agreement::Crop crop = {})
{
    const engine_agreement::Fp32Deviation d = engine_agreement::ortFp32Deviation(m, onnxBytes, dir + "/" + name, pixels28, crop);
    const double rel = d.maxDiff / d.maxAbs;
    qInfo("%s: onnxruntime vs QuantScope FP32: max diff %.3g (%.3g relative)", name.c_str(), d.maxDiff, rel);
    if (d.ortValues != d.ourValues)
        return QString("%1: onnxruntime gave %2 values, QuantScope %3").arg(qstr(name)).arg(d.ortValues).arg(d.ourValues);
    if (!(rel <= relTol)) return QString("%1: onnxruntime deviates by %2 relative (at most %3)").arg(qstr(name)).arg(rel).arg(relTol);
    return {};
}

// How far the engine's codes at its points may be from the fake-quant simulation's: at most
// maxSteps steps, in at most one value of oneIn (0: none may differ), with at least minDistinct
// codes in some point (a comparison over few codes proves little; 0: not asked).
struct CodeBounds {
    std::int32_t maxSteps = 0;
    std::size_t oneIn = 0;
    std::size_t minDistinct = 16;
};

// `what` (the model and the activation format) names the comparison in the log and the failure.
inline QString codesWithin(const QString& what, const engine_agreement::CodeDiff& d, const CodeBounds& b)
{
    qInfo("%s: %zu values at the points, %zu differ from the fake-quant (at most %d step); up to %zu distinct codes in a point",
          qPrintable(what), d.values, d.differing, d.worstSteps, d.distinct);
    if (d.values == 0) return what + ": no values compared";
    if (d.worstSteps > b.maxSteps) return QString("%1: a value %2 steps away").arg(what).arg(d.worstSteps);
    if (b.oneIn == 0 ? d.differing != 0 : d.differing * b.oneIn > d.values)
        return QString("%1: %2 of %3 values differ from the fake-quant (at most one in %4)").arg(what).arg(d.differing).arg(d.values).arg(b.oneIn);
    if (d.distinct < b.minDistinct)
        return QString("%1: the activations barely use their grid (%2 distinct codes): the comparison would prove little").arg(what).arg(d.distinct);
    return {};
}

// The engine's codes at the points of the layers isTarget picks, over the first `images` test
// images, against the fake-quant of what `reference` computes from the dequantized codes of the
// layer's input point (that of the layer it reads, through Flatten layers); per layer in diffs.
using PointReference = std::function<Tensor(const StoredLayer& layer, const PointTrace& in, const PointTrace& point)>;
inline QString codesAtPoints(const ExportedModel& em, const LabeledImages& test, std::size_t images,
                             const std::function<bool(const StoredLayer&)>& isTarget, const PointReference& reference,
                             std::map<std::string, engine_agreement::CodeDiff>& diffs)
{
    const IntEngine engine(em);
    for (std::size_t img = 0; img < images; ++img) {
        const std::vector<PointTrace> trace = engine.trace(test.pixels.data() + img * test.imageBytes());
        for (const PointTrace& p : trace) {
            const auto l = std::find_if(em.layers.begin(), em.layers.end(), [&](const StoredLayer& s) { return s.name == p.layer; });
            if (l == em.layers.end() || !isTarget(*l)) continue;
            const StoredLayer* src = &em.layers.at(l->inputs.at(0) - 1);
            while (src->kind == LayerKind::Flatten) src = &em.layers.at(src->inputs.at(0) - 1);
            const PointTrace* in = traceNamed(trace, src->name);
            if (!in) return QString("image %1: no trace of %2, which %3 reads").arg(img).arg(qstr(src->name), qstr(l->name));
            if (in->q.size() != p.q.size())
                return QString("image %1: %2 holds %3 values, its input %4 %5").arg(img).arg(qstr(l->name)).arg(p.q.size()).arg(qstr(src->name)).arg(in->q.size());
            Tensor y = reference(*l, *in, p);
            fakeQuantizeActivation(y, p.quant);
            diffs[p.layer].add(engine_agreement::compareCodes(y, p));
        }
    }
    return {};
}

// The integer engine against the fake-quant reference runner on the test images (the run left in
// `run`): argmax agreement of at least minAgreement.
inline QString engineAgrees(const QString& what, const ExportedModel& em, const LabeledImages& test, double minAgreement,
                            engine_agreement::EngineRun& run)
{
    const std::size_t n = test.size();
    run = engine_agreement::engineAgainstReference(em, test.pixels.data(), n, 10);
    qInfo("%s: engine vs fake-quant reference: argmax agreement %.1f %% of %zu images", qPrintable(what), 100.0 * run.agreement(), n);
    if (!(run.agreement() >= minAgreement))
        return QString("%1: the engine's argmax is the fake-quant reference's on %2 % of %3 images (at least %4 %)")
            .arg(what).arg(100.0 * run.agreement()).arg(n).arg(100.0 * minAgreement);
    return {};
}

// What the quantized files keep (`keeps` in words; qsm empty: the .qsm is not read back), and
// whether the engine running the QDQ ONNX read back predicts as `run` did.
struct ReadBack {
    const char* keeps;
    Keeps qsm, onnx;
    bool predictsFromFile = false;
};

// The read-back of a model with normalisation layers (tst_groupnorm, tst_layernorm2d): the .qsm
// keeps what normsOf reads of them (a value with ==), the QDQ ONNX that, the layers' kinds and the
// quantization points.
template <typename NormsOf>
ReadBack normsKindsAndPoints(NormsOf normsOf)
{
    return ReadBack{"the layers' kinds, norms and points",
                    [normsOf](const ExportedModel& fromQsm, const ExportedModel& m) { return normsOf(fromQsm) == normsOf(m); },
                    [normsOf](const ExportedModel& back, const ExportedModel& m) {
                        return onnx_import_fixtures::kindsOf(back) == onnx_import_fixtures::kindsOf(m) && normsOf(back) == normsOf(m) &&
                               samePoints(back, m);
                    }};
}

// em's .qsm and QDQ ONNX (the bytes left in qdqBytes) read back as rb asks.
inline QString quantizedFilesReadBack(const QString& what, const ExportedModel& em, const ReadBack& rb, const LabeledImages& test,
                                      const engine_agreement::EngineRun& run, Bytes& qdqBytes)
{
    if (rb.qsm && !rb.qsm(decodeQsm(encodeQsm(em), "qsm"), em)) return QString("%1: the .qsm read back does not keep %2").arg(what, QString::fromUtf8(rb.keeps));
    qdqBytes = encodeOnnx(em);
    const ExportedModel back = decodeOnnx(qdqBytes, "qdq");
    if (!rb.onnx(back, em)) return QString("%1: the QDQ ONNX read back does not keep %2").arg(what, QString::fromUtf8(rb.keeps));
    if (!rb.predictsFromFile) return {};
    RunnerOptions ro;
    ro.kind = RunnerKind::Integer;
    ModelRunner fromFile(back, ro);
    std::vector<std::int32_t> predicted(test.size());
    fromFile.predict(test.pixels.data(), test.size(), predicted.data());
    if (predicted != run.predicted) return QString("%1: the engine on the QDQ ONNX read back predicts otherwise").arg(what);
    return {};
}

// A layer computed in float between two grids (GroupNorm, LayerNorm2d): at each of its `points`
// layers (isTarget) the engine's codes over 20 test images are `reference`'s, then the point's
// fake-quant, exactly (at least 16 distinct codes a point); the engine's argmax is the fake-quant
// reference's on at least 99 % of the test images (the run left in `run`); the .qsm and QDQ ONNX
// read back as rb asks (the QDQ bytes left in qdqBytes).
inline QString floatStepPointsExact(const QString& what, const ExportedModel& em, const LabeledImages& test, std::size_t points,
                                    const std::function<bool(const StoredLayer&)>& isTarget, const PointReference& reference,
                                    const ReadBack& rb, engine_agreement::EngineRun& run, Bytes& qdqBytes)
{
    std::map<std::string, engine_agreement::CodeDiff> diffs;
    if (QString f = codesAtPoints(em, test, 20, isTarget, reference, diffs); !f.isEmpty()) return f;
    if (diffs.size() != points) return QString("%1: %2 points compared, %3 expected").arg(what).arg(diffs.size()).arg(points);
    for (const auto& [layer, d] : diffs)
        if (QString f = codesWithin(qstr(layer) + " " + what, d, {0, 0, 16}); !f.isEmpty()) return f;
    if (QString f = engineAgrees(what, em, test, 0.99, run); !f.isEmpty()) return f;
    return quantizedFilesReadBack(what, em, rb, test, run, qdqBytes);
}

// onnxruntime on the QDQ bytes (written to path) over the test images file against the engine's
// run: every output, argmax agreement of at least minAgreement and, where asked, a mean |diff| of
// at most maxMeanRelDiff of the largest output. Call after QS_SKIP_WITHOUT_ORT().
inline QString ortQdqAgrees(const QString& what, const Bytes& qdqBytes, const std::string& path, const std::string& images,
                            const engine_agreement::EngineRun& run, double minAgreement, std::optional<double> maxMeanRelDiff)
{
    const engine_agreement::OrtRun ort = engine_agreement::ortAgainstEngine(qdqBytes, path, images, run, 10);
    if (ort.outputs != run.outputs.size())
        return QString("%1: onnxruntime gave %2 outputs of %3").arg(what).arg(ort.outputs).arg(run.outputs.size());
    qInfo("%s: onnxruntime QDQ vs engine: argmax agreement %.1f %%, mean |diff| %.3g of the largest output", qPrintable(what),
          100.0 * ort.agreement, ort.meanRelDiff);
    if (!(ort.agreement >= minAgreement))
        return QString("%1: onnxruntime's QDQ argmax is the engine's on %2 % of the images (at least %3 %)")
            .arg(what).arg(100.0 * ort.agreement).arg(100.0 * minAgreement);
    if (maxMeanRelDiff && !(ort.meanRelDiff <= *maxMeanRelDiff))
        return QString("%1: onnxruntime's QDQ outputs differ by %2 of the largest on average (at most %3)").arg(what).arg(ort.meanRelDiff).arg(*maxMeanRelDiff);
    return {};
}

} // namespace layer_checks
