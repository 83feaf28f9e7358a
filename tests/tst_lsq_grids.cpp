// Small grids (issue 11, part 4): the narrow symmetric range end to end (fake-quant, .qsm, ONNX,
// engine), and the ternary / binary weight grids (the papers' scales, straight-through masks, QAT
// runs that the integer engine and ONNX reproduce). LSQ itself is in tst_lsq_steps.cpp and
// tst_lsq_training.cpp.
#include "analysis/model_export.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "quant/quantize.h"
#include "quant/weight_quantizer.h"
#include "train/quant_sim.h"
#include "train/trainer.h"

#include "onnx/export_fixtures.h"

#include "lsq_fixtures.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <set>

using namespace quantscope;
using fixtures::engineAgreement;
using fixtures::kMinArgmaxAgreement;
using fixtures::qatConfig;
using fixtures::randomVector;
using fixtures::StepRecorder;

class TestLsqGrids : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void narrowRangeEndToEnd();
    void ternaryAndBinaryGrids();
    void ternaryAndBinaryQatRunOnEngine_data();
    void ternaryAndBinaryQatRunOnEngine();

private:
    Dataset m_data;
};

void TestLsqGrids::initTestCase() { m_data = fixtures::syntheticDataset(640, 200); }

void TestLsqGrids::narrowRangeEndToEnd()
{
    // The weight grid: [-127, 127], and the max-abs weight lands on +-127.
    const NumberFormat nf = narrowRangeFormat(findFormat("int8"));
    QCOMPARE(nf.qmin, -127);
    QCOMPARE(nf.qmax, 127);
    QCOMPARE(narrowRangeFormat(findFormat("uint8")).qmin, 0); // unsigned: unchanged
    QCOMPARE(narrowRangeFormat(findFormat("int4")).qmin, -7);

    // PTQ with --narrow-range: fake-quant, export, .qsm, ONNX and the engine all use [-127, 127].
    auto model = makeModel("seed-cnn", 1, 28, 28, 10, 3);
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = "int8";
    pc.granularity = "channel";
    pc.narrowRange = true;
    pc.activationCalibration = "minmax";
    QuantSim sim(*model, pc, findFormat("int8"));
    sim.quantizeWeights(Rounding::Nearest, 0);
    sim.calibrate(m_data, m_data.train, m_data.train.size(), 64);
    sim.setObserving(false);
    const ExportedModel em = exportQuantizedModel(*model, sim, "seed-cnn", m_data, "ptq", "channel");
    std::size_t intWeights = 0;
    for (const StoredLayer& l : em.layers) {
        if (l.tensors.empty() || l.tensors[0].encoding != TensorEncoding::Int) continue;
        const StoredTensor& w = l.tensors[0];
        QCOMPARE(w.qmin, -127);
        QCOMPARE(w.qmax, 127);
        const auto [lo, hi] = std::minmax_element(w.q.begin(), w.q.end());
        QVERIFY(*lo >= -127);
        QVERIFY(*lo == -127 || *hi == 127); // max-abs on the grid's end
        ++intWeights;
    }
    QVERIFY(intWeights >= 2);
    QVERIFY(engineAgreement(*model, sim, em, m_data) >= kMinArgmaxAgreement);
    const ExportedModel viaOnnx = onnxForm(em);
    const std::pair<ExportedModel, const ExportedModel*> files[] = {{decodeQsm(encodeQsm(em), "narrow.qsm"), &em},
                                                                     {decodeOnnx(encodeOnnx(em), "narrow.onnx"), &viaOnnx}};
    for (const auto& [back, ref] : files) {
        QCOMPARE(back.layers.size(), ref->layers.size());
        for (std::size_t i = 0; i < ref->layers.size(); ++i) {
            if (ref->layers[i].tensors.empty() || ref->layers[i].tensors[0].encoding != TensorEncoding::Int) continue;
            QCOMPARE(back.layers[i].tensors[0].qmin, -127);
            QCOMPARE(back.layers[i].tensors[0].q, ref->layers[i].tensors[0].q);
        }
        QVERIFY(engineAgreement(*model, sim, back, m_data) >= kMinArgmaxAgreement);
    }
}

void TestLsqGrids::ternaryAndBinaryGrids()
{
    const NumberFormat& tern = findFormat("ternary");
    const NumberFormat& bin = findFormat("binary");
    QVERIFY(isTernaryOrBinary(tern) && isTernaryOrBinary(bin));
    QVERIFY(needsScale(tern) && needsScale(bin));
    const std::vector<float> w = randomVector(4 * 64, 1.0f, 21);
    Param weight;
    weight.name = "weight";
    weight.isWeight = true;
    weight.value = Tensor(Shape{4, 64}, w);
    weight.grad = Tensor(Shape{4, 64}, 1.0f);
    for (const NumberFormat* f : {&tern, &bin}) {
        WeightQuantizer wq(*f, parseGranularity("channel"), Calibration::MinMax, Rounding::Nearest);
        std::vector<WeightTarget> targets = {{"fc", &weight, nullptr}};
        wq.apply(targets, 0);
        const QuantParams& p = wq.weightParams(0);
        QCOMPARE(p.numSlots(), std::size_t{4});
        std::set<float> levels;
        for (std::size_t r = 0; r < 4; ++r) {
            double sum = 0, above = 0;
            std::size_t nAbove = 0;
            for (std::size_t j = 0; j < 64; ++j) sum += std::abs(w[r * 64 + j]);
            for (std::size_t j = 0; j < 64; ++j)
                if (std::abs(w[r * 64 + j]) > 0.7 * sum / 64) {
                    above += std::abs(w[r * 64 + j]);
                    ++nAbove;
                }
            // The papers' scales: XNOR-Net mean|w|, TWN mean of |w| above 0.7 mean|w|.
            const double want = f == &bin ? sum / 64 : above / static_cast<double>(nAbove);
            QVERIFY(std::abs(p.scale[r] - want) < 1e-5);
            for (std::size_t j = 0; j < 64; ++j) {
                const float v = weight.override[r * 64 + j] / p.scale[r];
                levels.insert(v);
                if (f == &bin) QCOMPARE(v, w[r * 64 + j] >= 0 ? 1.0f : -1.0f); // sign
            }
        }
        if (f == &bin) QCOMPARE(levels, (std::set<float>{-1.0f, 1.0f}));
        else QCOMPARE(levels, (std::set<float>{-1.0f, 0.0f, 1.0f}));
        // Straight-through: the gradient passes inside |w| <= scale (binary), inside the clip range (ternary).
        weight.grad.fill(1.0f);
        wq.maskGradients(targets);
        for (std::size_t i = 0; i < w.size(); ++i) {
            const float s = p.scale[i / 64];
            const bool inside = f == &bin ? std::abs(w[i]) <= s : std::abs(std::nearbyint(w[i] / s)) <= 1.0f;
            QCOMPARE(weight.grad[i], inside ? 1.0f : 0.0f);
        }
        // Integers for export: the same grid.
        std::vector<std::int32_t> q(w.size());
        quantizeToInt(w, p, q);
        for (std::size_t i = 0; i < w.size(); ++i) QCOMPARE(static_cast<float>(q[i]) * p.scale[i / 64], weight.override[i]);
    }
    // int2 with --narrow-range has ternary's range [-1, 1] but is no ternary format: its scale is
    // the observer's, max |w| / 1 as PyTorch's per-channel symmetric observer gives on
    // [-1, 1] (it took TWN's scale, and clipped 5 % of the weights: tester 13).
    const NumberFormat int2n = narrowRangeFormat(findFormat("int2"));
    QCOMPARE(int2n.qmin, -1);
    QCOMPARE(int2n.qmax, 1);
    QVERIFY(!isTernaryOrBinary(int2n));
    WeightQuantizer wq(int2n, parseGranularity("channel"), Calibration::MinMax, Rounding::Nearest);
    std::vector<WeightTarget> targets = {{"fc", &weight, nullptr}};
    wq.apply(targets, 0);
    for (std::size_t r = 0; r < 4; ++r) {
        float amax = 0.0f;
        for (std::size_t j = 0; j < 64; ++j) amax = std::max(amax, std::abs(w[r * 64 + j]));
        QCOMPARE(wq.weightParams(0).scale[r], amax);
    }
}

void TestLsqGrids::ternaryAndBinaryQatRunOnEngine_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("quantizer");
    QTest::newRow("ternary, observer") << "ternary" << "observer";
    QTest::newRow("binary, observer") << "binary" << "observer";
    QTest::newRow("binary, lsq") << "binary" << "lsq";
}

void TestLsqGrids::ternaryAndBinaryQatRunOnEngine()
{
    QFETCH(QString, format);
    QFETCH(QString, quantizer);
    StepRecorder rec;
    Trainer t(qatConfig(format.toStdString(), quantizer.toStdString(), 1), m_data, &rec);
    t.run();
    const double acc = rec.epochs.back().quantTestAccuracy;
    QVERIFY2(acc > 0.3, qPrintable(QString("quantized accuracy %1").arg(acc)));
    const ExportedModel em = exportedModelOf(t);
    for (const StoredLayer& l : em.layers)
        if (!l.tensors.empty() && l.tensors[0].encoding == TensorEncoding::Int)
            for (std::int32_t v : l.tensors[0].q) QVERIFY(v >= -1 && v <= 1 && (format != "binary" || v != 0));
    double engineAcc = 0;
    const double agree = engineAgreement(t.model(), *t.strategy().quantSim(), em, m_data, &engineAcc);
    qInfo("%s %s QAT: quantized %.3f, engine %.3f, agreement %.3f", qPrintable(format), qPrintable(quantizer), acc, engineAcc, agree);
    QVERIFY(agree >= kMinArgmaxAgreement);
    // ONNX keeps the grid (int8 QDQ on {-1, 0, 1}).
    const ExportedModel back = decodeOnnx(encodeOnnx(em), "small.onnx");
    QVERIFY(engineAgreement(t.model(), *t.strategy().quantSim(), back, m_data) >= kMinArgmaxAgreement);
}

QTEST_GUILESS_MAIN(TestLsqGrids)
#include "tst_lsq_grids.moc"
