// analysis/layer_compare: the layer-by-layer comparison of a float model with its quantized
// simulation, and the integer engine against fake-quant at every quantization point.
#include "analysis/layer_compare.h"
#include "analysis/model_export.h"
#include "infer/model_runner.h"
#include "nn/activations.h"
#include "nn/avgpool2d.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "quant/metrics.h"
#include "quant/precision_plan.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/errors.h"

#include "alloc_tracker.h"
#include "onnx/export_fixtures.h"

#include <QtTest>

#include <cmath>

using namespace quantscope;

namespace {

struct Setup {
    std::unique_ptr<Model> model;
    std::unique_ptr<QuantSim> sim;
};

Setup ptq(const std::string& preset, const Dataset& data, const std::string& format, const std::string& granularity)
{
    Setup s;
    s.model = makeModel(preset, data.channels(), data.height(), data.width(), 10, 3);
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = format;
    pc.granularity = granularity;
    pc.activationFormat = "uint8";
    pc.activationCalibration = "minmax";
    s.sim = std::make_unique<QuantSim>(*s.model, pc, findFormat(format));
    s.sim->quantizeWeights(Rounding::Nearest, 0);
    s.sim->calibrate(data, data.train, data.train.size(), 64);
    s.sim->setObserving(false);
    return s;
}

} // namespace

class TestLayerCompare : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() { m_data = fixtures::syntheticDataset(256, 64); }

    void cosine()
    {
        const float a[] = {1, 2, 3}, b[] = {2, 4, 6}, c[] = {-1, -2, -3}, z[] = {0, 0, 0};
        QCOMPARE(cosineSimilarity(a, b, 3), 1.0);
        QCOMPARE(cosineSimilarity(a, c, 3), -1.0);
        QCOMPARE(cosineSimilarity(z, z, 3), 1.0);
        QCOMPARE(cosineSimilarity(a, z, 3), 0.0);
    }

    // The first layer reads the same (quantized) input both ways, so its two SQNRs are equal;
    // fewer bits give a lower SQNR at every quantized conv; a pass-through layer with unquantized
    // input and output adds nothing alone.
    void fewerBitsLowerSqnr()
    {
        Tensor x;
        std::vector<std::int32_t> y;
        m_data.makeBatch(m_data.test, 0, 48, x, y);
        auto a = ptq("resnet8", m_data, "int8", "channel");
        auto b = ptq("resnet8", m_data, "int3", "channel");
        const LayerComparisonReport ra = compareLayers(*a.model, *a.sim, x, 20.0);
        const LayerComparisonReport rb = compareLayers(*b.model, *b.sim, x, 20.0);
        QCOMPARE(ra.layers.size(), a.model->size());
        QCOMPARE(ra.images, std::size_t{48});
        QCOMPARE(ra.layers[0].layer, std::string("conv1"));
        QVERIFY(ra.layers[0].quantizedWeights);
        QCOMPARE(ra.layers[0].sqnrDb, ra.layers[0].aloneSqnrDb);
        std::size_t convs = 0;
        for (std::size_t i = 0; i < ra.layers.size(); ++i) {
            if (ra.layers[i].kind != "Conv2d") continue;
            ++convs;
            QVERIFY2(rb.layers[i].aloneSqnrDb < ra.layers[i].aloneSqnrDb - 6.0,
                     qPrintable(QString("%1: int3 %2 dB, int8 %3 dB").arg(QString::fromStdString(ra.layers[i].layer))
                                    .arg(rb.layers[i].aloneSqnrDb).arg(ra.layers[i].aloneSqnrDb)));
            QVERIFY(ra.layers[i].cosine > 0.99);
        }
        QCOMPARE(convs, std::size_t{9}); // stem, 3 blocks x 2, 2 projection shortcuts
        // The residual join quantizes its output (it carries a point after its ReLU): finite alone.
        const LayerComparison& pool = ra.layers[a.model->outputOf("pool") - 1];
        QVERIFY(std::isfinite(pool.sqnrDb));
        // Thresholds: everything is below +1000 dB, nothing below -1000 dB.
        QCOMPARE(compareLayers(*a.model, *a.sim, x, 1000.0).firstBelow, 0L);
        QCOMPARE(compareLayers(*a.model, *a.sim, x, -1000.0).firstBelow, -1L);
        // int3 falls under 30 dB somewhere, and the first such layer is reported in order.
        const LayerComparisonReport r30 = compareLayers(*b.model, *b.sim, x, 30.0);
        QVERIFY(r30.firstBelow >= 0);
        for (long i = 0; i < r30.firstBelow; ++i) QVERIFY(r30.layers[static_cast<std::size_t>(i)].sqnrDb >= 30.0);
        QVERIFY(r30.layers[static_cast<std::size_t>(r30.firstBelow)].sqnrDb < 30.0);
    }

    // A large batch is compared a chunk at a time (analyze compare --images 100000 was killed for
    // memory: 2.5 MB an image for mobilenet-tiny), with the SQNR of the whole batch: the logits'
    // propagated SQNR equals one computed over the whole batch at once.
    void largeBatchesAreStreamed()
    {
        Dataset big = fixtures::syntheticDataset(64, 320);
        Tensor x;
        std::vector<std::int32_t> y;
        big.makeBatch(big.test, 0, 320, x, y);
        auto a = ptq("resnet8", big, "int4", "channel");
        g_largestAllocation = 0;
        const LayerComparisonReport r = compareLayers(*a.model, *a.sim, x, 20.0);
        const std::size_t largest = g_largestAllocation;
        const std::size_t fullActivation = 320 * 16 * 28 * 28 * sizeof(float); // layer1's output, whole batch
        QVERIFY2(largest < fullActivation / 3, qPrintable(QString("largest allocation %1 bytes").arg(largest)));
        RunContext ctx;
        ctx.training = false;
        a.sim->clearWeights();
        const Tensor fp = a.model->forward(x, ctx, nullptr);
        a.sim->quantizeWeights(Rounding::Nearest, 0);
        a.sim->roundBiases(); // compareLayers' quantized model: the biases the exported file stores
        const Tensor q = a.model->forward(x, ctx, a.sim.get());
        const double whole = sqnrDb(std::span<const float>(fp.data(), fp.numel()), std::span<const float>(q.data(), q.numel()));
        QCOMPARE(r.images, std::size_t{320});
        QVERIFY2(std::abs(r.layers.back().sqnrDb - whole) < 1e-6, qPrintable(QString("%1 dB against %2 dB").arg(r.layers.back().sqnrDb).arg(whole)));
    }

    // A plan that keeps fc1 in FP32: fc1 is not reported as quantized and adds no error alone;
    // the int8 layers still do.
    void planKeepsALayerFloat()
    {
        Tensor x;
        std::vector<std::int32_t> y;
        m_data.makeBatch(m_data.test, 0, 32, x, y);
        auto model = makeModel("seed-cnn", 1, 28, 28, 10, 3);
        PrecisionConfig pc;
        pc.strategy = Strategy::Ptq;
        pc.format = "int4";
        pc.granularity = "channel";
        pc.activationFormat = "uint8";
        pc.activationCalibration = "minmax";
        PrecisionPlan plan = pc.plan();
        applyKeepFp32(plan, "fc1");
        pc.layers = plan.layers;
        QuantSim sim(*model, pc, findFormat("int4"));
        sim.quantizeWeights(Rounding::Nearest, 0);
        sim.calibrate(m_data, m_data.train, m_data.train.size(), 64);
        sim.setObserving(false);
        const LayerComparisonReport r = compareLayers(*model, sim, x, 20.0);
        const LayerComparison& fc1 = r.layers[model->outputOf("fc1") - 1];
        QVERIFY(!fc1.quantizedWeights);
        QVERIFY(std::isinf(fc1.aloneSqnrDb));
        const LayerComparison& conv2 = r.layers[model->outputOf("conv2") - 1];
        QVERIFY(conv2.quantizedWeights);
        QVERIFY(std::isfinite(conv2.aloneSqnrDb));
    }

    // A plan giving conv2 a float activation format: its point (relu2's output) is rounded to
    // fp8-e4m3 in both comparisons, and reported as a point of that format (it was unmarked, and
    // left unrounded alone: +inf dB, as the sim's point is a rounding, not an ActivationQuantizer).
    void floatActivationPoint()
    {
        Tensor x;
        std::vector<std::int32_t> y;
        m_data.makeBatch(m_data.test, 0, 32, x, y);
        auto model = makeModel("seed-cnn", 1, 28, 28, 10, 3);
        PrecisionConfig pc;
        pc.strategy = Strategy::Ptq;
        pc.format = "int8";
        pc.granularity = "channel";
        pc.activationFormat = "uint8";
        pc.activationCalibration = "minmax";
        PrecisionPlan plan = pc.plan();
        plan.entry("conv2").activationFormat = "fp8-e4m3";
        pc.layers = plan.layers;
        QuantSim sim(*model, pc, findFormat("int8"));
        sim.quantizeWeights(Rounding::Nearest, 0);
        sim.calibrate(m_data, m_data.train, m_data.train.size(), 64);
        sim.setObserving(false);
        const LayerComparisonReport r = compareLayers(*model, sim, x, 20.0);
        const std::size_t point = model->outputOf("relu2");
        QCOMPARE(sim.pointFormat(point)->name, std::string("fp8-e4m3")); // the sim rounds there
        const LayerComparison& relu2 = r.layers[point - 1];
        QVERIFY(relu2.outputPoint);
        QCOMPARE(relu2.activationFormat, std::string("fp8-e4m3"));
        QVERIFY2(std::isfinite(relu2.aloneSqnrDb), "relu2 alone is not rounded to fp8");
        QCOMPARE(r.layers[model->outputOf("relu1") - 1].activationFormat, std::string("uint8"));
        QVERIFY(r.layers[model->outputOf("conv2") - 1].activationFormat.empty()); // not a point
    }

    // The engine against the fake-quant reference of the same exported model: equal codes almost
    // everywhere, never more than one step apart; a model the engine cannot run says why.
    void engineAgainstFakeQuant()
    {
        auto q = fixtures::quantizePreset("seed-cnn", m_data, "int8");
        const auto d = compareEngineWithFakeQuant(q.exported, m_data, m_data.test, 16);
        QVERIFY(d.size() >= 3);
        QCOMPARE(d.front().layer, std::string("input"));
        std::size_t values = 0, differing = 0;
        for (const EnginePointDivergence& p : d) {
            values += p.values;
            differing += p.differing;
            QVERIFY2(p.maxSteps <= 1, p.layer.c_str());
        }
        QVERIFY(values > 16 * 784);
        QVERIFY(differing * 1000 < values);
        auto g = fixtures::quantizePreset("seed-cnn", m_data, "int4", "group:32");
        QVERIFY_THROWS_EXCEPTION(ConfigError, compareEngineWithFakeQuant(g.exported, m_data, m_data.test, 4));
    }

    // A 2x2 average pool after a saturating ReLU6 keeps its input's grid (the same scale and zero
    // point), and its window sums land exactly halfway between codes a quarter of the time. The
    // engine rounds those to even; the float simulation (QuantSim, and the reference runner's hooks)
    // rounded some of them the other way (tester 8: 1-3 % of the pool's codes, and predictions).
    // Now both compute the codes as the engine does: no code differs, and the predictions agree.
    void sameGridAveragePoolMatchesTheEngine()
    {
        checkSameGridPool(std::make_unique<Conv2d>("conv", 1, 8, 5), 8 * 12 * 12, 3,
                          [](const char* name) { return std::make_unique<AvgPool2d>(name, 2); });
    }

    // The same for a global average pool over a 6 x 6 plane, whose window of 36 is no power of two:
    // the engine's multiplier of 1/36 is not exact, and the simulation takes that multiplier and
    // the plane's exact sum of codes (not recoverable from the float mean of a large window).
    void sameGridGlobalPoolMatchesTheEngine()
    {
        checkSameGridPool(std::make_unique<Conv2d>("conv", 1, 16, 5, 4), 16, 5, // 28 -> 6
                          [](const char* name) { return std::make_unique<GlobalAvgPool2d>(name); });
    }

    // A padded window (AvgPool2d(2, 1, 1), PyTorch's count_include_pad: the border's zeros count
    // in the divisor 4 and add nothing to the sum) on the grid of its ReLU6: the windows that
    // overhang the image sum fewer codes, as the engine's padded copy does.
    void sameGridPaddedPoolMatchesTheEngine()
    {
        checkSameGridPool(std::make_unique<Conv2d>("conv", 1, 8, 5), 8 * 25 * 25, 7, // 24 -> 25
                          [](const char* name) { return std::make_unique<AvgPool2d>(name, 2, 1, 1); });
    }

private:
    // The model conv, "act" (ReLU6), "pool" (makePool("pool")), flatten, fc (features -> 10), with
    // the conv's weights scaled so that most of act saturates at 6 or 0, quantized (int8); the
    // pool must keep act's grid. makePool("plain") runs the plain float path on the reference's
    // activations.
    template <class MakePool>
    void checkSameGridPool(std::unique_ptr<Conv2d> conv, std::size_t features, std::uint64_t seed, MakePool makePool)
    {
        auto m = std::make_unique<Model>("relu6pool", Shape{1, 28, 28});
        Conv2d* c = conv.get();
        m->add(std::move(conv));
        m->add(std::make_unique<ReLU6>("act"));
        m->add(makePool("pool"));
        m->add(std::make_unique<Flatten>("flatten"));
        m->add(std::make_unique<Linear>("fc", features, 10));
        m->initParams(seed);
        for (float& w : c->weight().value.values()) w *= 8.0f;
        auto q = fixtures::quantize(std::move(m), m_data, "int8");
        const StoredLayer& act = q.exported.layers.at(1);
        const StoredLayer& pool = q.exported.layers.at(2);
        QVERIFY2(act.outputQuant && pool.outputQuant && act.outputQuant->scale == pool.outputQuant->scale &&
                     act.outputQuant->zeroPoint == pool.outputQuant->zeroPoint,
                 "the pool's grid is not its input's: the case is not tested");
        // The halves are there: the plain float fake-quant of the pooled values moves some of them.
        {
            const std::unique_ptr<Model> ref = buildModel(q.exported);
            StoredActivationHooks hooks(q.exported, ref.get());
            Tensor x;
            std::vector<std::int32_t> labels;
            m_data.makeBatch(m_data.test, 0, m_data.test.size(), x, labels);
            RunContext ctx;
            ref->forward(x, ctx, &hooks);
            const Tensor& a = ref->activation(ref->outputOf("act"));
            Tensor pooled;
            makePool("plain")->forward(a, pooled, ctx);
            Tensor floatPath = pooled;
            fakeQuantizeActivation(floatPath, *pool.outputQuant);
            const Tensor& exact = ref->activation(ref->outputOf("pool"));
            std::size_t moved = 0;
            for (std::size_t i = 0; i < exact.numel(); ++i) moved += floatPath[i] != exact[i];
            qInfo("of %zu pooled values, the float path's rounding moves %zu", exact.numel(), moved);
            QVERIFY2(moved > 0, "no value lands on a half: the case is not tested");
        }
        const auto d = compareEngineWithFakeQuant(q.exported, m_data, m_data.test, 256);
        bool seen = false;
        for (const EnginePointDivergence& p : d)
            if (p.layer == "pool") {
                QCOMPARE(p.differing, std::size_t{0});
                seen = true;
            }
        QVERIFY(seen);
        // QuantSim (what PTQ, QAT and the analyses evaluate) predicts as the engine does
        RunnerOptions ro;
        ro.kind = RunnerKind::Integer;
        ModelRunner engine(q.exported, ro);
        const RunnerEval e = evaluateRunner(engine, m_data.test);
        std::vector<std::int32_t> simPred;
        q.sim->roundBiases(); // the file's int32 biases (QuantSim::roundBiases)
        evaluate(*q.model, m_data, m_data.test, 64, q.sim.get(), &simPred);
        QCOMPARE(simPred.size(), e.predictions.size());
        std::size_t same = 0;
        for (std::size_t i = 0; i < simPred.size(); ++i) same += simPred[i] == e.predictions[i];
        QCOMPARE(same, simPred.size());
    }

    Dataset m_data;
};

QTEST_GUILESS_MAIN(TestLayerCompare)
#include "tst_layer_compare.moc"
