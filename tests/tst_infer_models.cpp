// The integer engine on whole models (chains and graphs: residual, depthwise, grouped, colour)
// against the fake-quant simulation they were exported from: argmax agreement >= 99.5% on the test
// set, integers at every quantization point within 1 step (where they disagree the first diverging
// layer is reported), across kernels and thread counts. The kernels alone: tst_infer.
#include "infer_fixtures.h" // first: TBB's profiling.h before Qt (a member named emit)
#include "io/onnx_io.h"

using namespace quantscope;
using namespace infer_fixtures;

class TestInferModels : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void syntheticModelsMatchFakeQuant_data();
    void syntheticModelsMatchFakeQuant();
    void biasFreeLinearThroughQdq();
    void floatInputMatchesPixels();
    void unsupportedModelsFallBack_data();
    void unsupportedModelsFallBack();
    void qatFashionMatchesFakeQuant_data();
    void qatFashionMatchesFakeQuant();
    void graphModelsMatchFakeQuant_data();
    void graphModelsMatchFakeQuant();
    void graphModelsRefuseClearly_data();
    void graphModelsRefuseClearly();
    void colourModelsMatchFakeQuant_data();
    void colourModelsMatchFakeQuant();

private:
    Dataset m_synthetic;
};

void TestInferModels::initTestCase()
{
    // Under the sanitizer presets (QS_SANITIZER_RUN) the test set is a fifth (60 images): under
    // TSan one row of syntheticModelsMatchFakeQuant on 300 images outlasted QtTest's 25-minute
    // function timeout in the scalar kernels (every byte load instrumented).
    m_synthetic = fixtures::syntheticDataset(256, static_cast<std::size_t>(300 / quantscope::testing::sanitizerSlowdown()));
    qInfo("kernels on this CPU: best %s", isaName(bestIsa()));
}

void TestInferModels::syntheticModelsMatchFakeQuant_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn int8 channel") << "seed-cnn" << "int8" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn int8 tensor, int8 activations") << "seed-cnn-bn" << "int8" << "tensor" << "int8";
    QTest::newRow("lenet5 int4 channel (padding, im2col)") << "lenet5" << "int4" << "channel" << "uint8";
    QTest::newRow("mlp int4 layer") << "mlp" << "int4" << "layer" << "uint8";
}

void TestInferModels::syntheticModelsMatchFakeQuant()
{
    QFETCH(QString, preset);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    auto q = fixtures::quantizePreset(preset.toStdString(), m_synthetic, format.toStdString(), granularity.toStdString(), act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    std::vector<std::int32_t> first;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
        if (!isaSupported(isa)) continue;
        const Comparison c = compareWithSim(*q.model, *q.sim, q.exported, m_synthetic, isa);
        if (!c.report.isEmpty()) qInfo("%s: %s", isaName(isa), qPrintable(c.report));
        QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(QString("%1: agreement %2\n%3").arg(isaName(isa)).arg(c.agreement).arg(c.report)));
        if (first.empty()) first = c.enginePred;
        QCOMPARE(c.enginePred, first); // every kernel set predicts the same
    }
}

// A Linear without a bias (nn.Linear(32, 10, bias=False)) quantized, written as a QDQ ONNX graph
// (its Gemm without C) and read back: it has no int32 bias, and the integer engine (adding
// nothing for it) agrees with the simulation it was exported from on every kernel set.
void TestInferModels::biasFreeLinearThroughQdq()
{
    auto q = fixtures::quantize(fixtures::biasFreeMlp(), m_synthetic, "int8");
    const ExportedModel back = decodeOnnx(encodeOnnx(q.exported), "bias-free.onnx");
    QCOMPARE(fixtures::storedLayer(back, "fc2")->tensors.size(), std::size_t{1});
    QCOMPARE(fixtures::storedLayer(back, "fc1")->tensors.size(), std::size_t{2});
    QVERIFY2(IntEngine::unsupportedReason(back).empty(), IntEngine::unsupportedReason(back).c_str());
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
        if (!isaSupported(isa)) continue;
        const Comparison c = compareWithSim(*q.model, *q.sim, back, m_synthetic, isa);
        if (!c.report.isEmpty()) qInfo("%s: %s", isaName(isa), qPrintable(c.report));
        QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(QString("%1: agreement %2\n%3").arg(isaName(isa)).arg(c.agreement).arg(c.report)));
    }
}

void TestInferModels::floatInputMatchesPixels()
{
    auto q = fixtures::quantizePreset("seed-cnn", m_synthetic, "int8");
    IntEngine engine(q.exported);
    Tensor x;
    std::vector<std::int32_t> y;
    m_synthetic.makeBatch(m_synthetic.test, 0, 40, x, y);
    Tensor out;
    std::vector<std::int32_t> fromFloat(40), fromBytes(40);
    engine.runFloat(x, out, fromFloat.data());
    std::vector<float> outBytes(40 * 10);
    engine.run(m_synthetic.test.pixels.data(), 40, outBytes.data(), fromBytes.data());
    QCOMPARE(fromFloat, fromBytes);
    QCOMPARE(out.values(), outBytes);
    // Log-probabilities: every row sums to 1 after exp.
    for (std::size_t i = 0; i < 40; ++i) {
        double s = 0;
        for (std::size_t j = 0; j < 10; ++j) s += std::exp(outBytes[i * 10 + j]);
        QVERIFY(std::abs(s - 1.0) < 1e-4);
    }
}

void TestInferModels::unsupportedModelsFallBack_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("reason");
    QTest::newRow("group-wise") << "int4" << "group:32" << "group-wise";
    QTest::newRow("unsigned weights") << "uint8" << "channel" << "signed weights";
    QTest::newRow("12-bit weights") << "int12" << "channel" << "at most 8 bits";
    QTest::newRow("bias beyond int32 (fuzz finding)") << "int8" << "channel" << "does not fit the int32 accumulator";
}

void TestInferModels::unsupportedModelsFallBack()
{
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, reason);
    auto q = fixtures::quantizePreset("mlp", m_synthetic, format.toStdString(), granularity.toStdString());
    if (reason.contains("int32")) {
        // A file may store a bias far outside what the accumulator holds (here 1e30 times its scale).
        StoredTensor& bias = q.exported.layers.at(1).tensors.at(1);
        for (float& s : bias.scales) s *= 1e30f;
    }
    const std::string why = IntEngine::unsupportedReason(q.exported);
    QVERIFY2(QString::fromStdString(why).contains(reason), why.c_str());
    RunnerOptions integerOnly;
    integerOnly.kind = RunnerKind::Integer;
    QVERIFY_THROWS_EXCEPTION(ConfigError, ModelRunner(q.exported, integerOnly));
    ModelRunner r(q.exported);
    QVERIFY(!r.isInteger());
    QVERIFY(QString::fromStdString(r.description()).contains("fake-quant reference"));
    if (reason.contains("int32")) return; // no simulation of the altered model to compare with
    // The reference runs the stored model as the simulation does.
    std::vector<std::int32_t> simPred;
    const double simAcc = evaluate(*q.model, m_synthetic, m_synthetic.test, 100, q.sim.get(), &simPred).accuracy;
    const RunnerEval ev = evaluateRunner(r, m_synthetic.test);
    QVERIFY(std::abs(ev.accuracy - simAcc) <= 0.01);
}

void TestInferModels::qatFashionMatchesFakeQuant_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn QAT int8 channel") << "seed-cnn" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn QAT int8 tensor, int8 activations") << "seed-cnn-bn" << "tensor" << "int8";
}

void TestInferModels::qatFashionMatchesFakeQuant()
{
    QS_SKIP_UNDER_SANITIZERS();
    QFETCH(QString, model);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    if (!fixtures::haveFashion()) QSKIP("Fashion-MNIST is not installed (scripts/setup installs dataset-fashion-mnist)");
    DatasetOptions o;
    o.trainLimit = fixtures::fullData() ? 0 : 2000;
    const Dataset data = Dataset::load(o); // the full 10k test set
    auto t = fixtures::shortQat(data, model.toStdString(), granularity.toStdString(), act.toStdString(), fixtures::fullData() ? 2 : 1);
    const ExportedModel em = exportedModelOf(*t);
    QuantSim& sim = *t->strategy().quantSim();
    const Comparison c = compareWithSim(t->model(), sim, em, data, bestIsa());
    qInfo("%s: engine %.2f %%, fake-quant %.2f %%, argmax agreement %.2f %% on %zu images", qPrintable(model), 100 * c.engineAcc,
          100 * c.simAcc, 100 * c.agreement, data.test.size());
    if (!c.report.isEmpty()) qInfo("%s", qPrintable(c.report));
    QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(c.report));
    QVERIFY(std::abs(c.engineAcc - c.simAcc) * 100.0 <= kMaxAccuracyGapPoints);
    // Thread count does not change a prediction.
    EngineOptions one;
    one.threads = 1;
    IntEngine single(em, one);
    std::vector<std::int32_t> p1(data.test.size());
    single.run(data.test.pixels.data(), data.test.size(), nullptr, p1.data());
    QCOMPARE(p1, c.enginePred);
}

void TestInferModels::graphModelsMatchFakeQuant_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::addColumn<int>("tracedImages");
    QTest::addColumn<bool>("wideRelu6"); // a ReLU6 point on a grid up to 11.3, so the cap at 6 binds
    QTest::newRow("tiny residual int8 channel") << "tiny-residual" << "int8" << "channel" << "uint8" << 20 << false;
    QTest::newRow("tiny residual int4 tensor, int8 activations") << "tiny-residual" << "int4" << "tensor" << "int8" << 20 << false;
    QTest::newRow("tiny depthwise + grouped int8 channel") << "tiny-depthwise" << "int8" << "channel" << "uint8" << 20 << false;
    QTest::newRow("tiny depthwise + grouped, int8 activations") << "tiny-depthwise" << "int8" << "channel" << "int8" << 20 << false;
    QTest::newRow("tiny depthwise, ReLU6 cap inside the grid") << "tiny-depthwise" << "int8" << "channel" << "uint8" << 20 << true;
    QTest::newRow("padded max/avg pools int8 channel") << "tiny-padded-pools" << "int8" << "channel" << "uint8" << 20 << false;
    QTest::newRow("padded pools, int8 activations") << "tiny-padded-pools" << "int8" << "tensor" << "int8" << 20 << false;
    QTest::newRow("pre-activation and standalone BatchNorms int8 channel") << "tiny-preact" << "int8" << "channel" << "uint8" << 20 << false;
    QTest::newRow("resnet8 preset int8 channel") << "resnet8" << "int8" << "channel" << "uint8" << 4 << false;
    QTest::newRow("mobilenet-tiny preset int8 channel") << "mobilenet-tiny" << "int8" << "channel" << "uint8" << 4 << false;
}

void TestInferModels::graphModelsMatchFakeQuant()
{
    QFETCH(QString, model);
    QFETCH(QString, format);
    QFETCH(QString, granularity);
    QFETCH(QString, act);
    QFETCH(int, tracedImages);
    QFETCH(bool, wideRelu6);
    auto q = fixtures::quantize(graphModel(model), m_synthetic, format.toStdString(), granularity.toStdString(), act.toStdString());
    if (wideRelu6) {
        // Observed ReLU6 outputs never exceed 6, so their grids end below it: widen the one read by
        // the global pool (a reader with a bias would have its int32 bias on the old grid).
        for (StoredLayer& l : q.exported.layers)
            if (l.name == "dw-mult.relu") l.outputQuant->scale = 11.3f / static_cast<float>(l.outputQuant->qmax);
    }
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    std::vector<std::int32_t> first;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
        if (!isaSupported(isa) || wideRelu6) continue; // (the simulation has the observed grids)
        const Comparison c = compareWithSim(*q.model, *q.sim, q.exported, m_synthetic, isa);
        if (!c.report.isEmpty()) qInfo("%s: %s", isaName(isa), qPrintable(c.report));
        // The simulation keeps biases float (PyTorch's fake-quant), the engine adds them at int32
        // with scale s_in * s_w: int4 tensor-wise weights make that step 16 times an int8
        // channel's, and a tiny model's argmax follows a few flipped codes. The engine against the
        // exported file's own reference (int32 biases too) stays exact, below.
        const double least = format == "int4" && granularity == "tensor" ? 0.98 : kMinArgmaxAgreement;
        QVERIFY2(c.agreement >= least, qPrintable(QString("%1: agreement %2\n%3").arg(isaName(isa)).arg(c.agreement).arg(c.report)));
        if (first.empty()) first = c.enginePred;
        QCOMPARE(c.enginePred, first); // every kernel set predicts the same
    }
    // Predictions against the fake-quant reference of the exported model (what eval falls back to).
    {
        RunnerOptions ro;
        ro.kind = RunnerKind::Reference;
        ModelRunner reference(q.exported, ro);
        ro.kind = RunnerKind::Integer;
        ModelRunner integer(q.exported, ro);
        const RunnerEval want = evaluateRunner(reference, m_synthetic.test), got = evaluateRunner(integer, m_synthetic.test);
        std::size_t same = 0;
        for (std::size_t i = 0; i < want.predictions.size(); ++i) same += want.predictions[i] == got.predictions[i];
        const double agreement = static_cast<double>(same) / static_cast<double>(want.predictions.size());
        qInfo("engine vs exported fake-quant reference: argmax agreement %.2f %%", 100.0 * agreement);
        QVERIFY(agreement >= kMinArgmaxAgreement);
    }
    // Integers at every quantization point against the reference of the exported model (its
    // layers rebuilt, BatchNorm folded, the int32 bias as stored, activations fake-quantized at
    // the stored points): free-running (differences upstream propagate) for information; given
    // the engine's own inputs, within one step.
    const IntEngine engine(q.exported);
    const std::unique_ptr<Model> stored = buildModel(q.exported);
    StoredActivationHooks hooks(q.exported, stored.get());
    const PointStats run = comparePoints(engine, *stored, &hooks, m_synthetic, static_cast<std::size_t>(tracedImages));
    qInfo("free-running: %zu points, %zu values, %zu differ (max %d steps); most: %s", run.points, run.values, run.differing,
          run.maxDiff, qPrintable(run.worst));
    const PointStats st = comparePointsLocally(engine, *stored, hooks, m_synthetic, static_cast<std::size_t>(tracedImages));
    qInfo("given the engine's inputs: %zu points, %zu values (%.0f %% off zero and the clamps), %zu differ (max %d step); most: %s",
          st.points, st.values, 100.0 * static_cast<double>(st.interior) / static_cast<double>(std::max<std::size_t>(st.values, 1)),
          st.differing, st.maxDiff, qPrintable(st.worst));
    QVERIFY2(st.interior * 4 >= st.values, "most activations sit on a clamp: the comparison would prove little");
    QVERIFY2(st.unmatched == 0, qPrintable(st.worst));
    QVERIFY2(st.offTie == 0, qPrintable(st.worst));
    QVERIFY(st.points > 0);
    QVERIFY2(st.maxDiff <= kMaxPointDiff, qPrintable(st.worst));
    QVERIFY2(static_cast<double>(st.differing) <= (1.0 - kMinElementAgreement) * static_cast<double>(st.values), qPrintable(st.worst));
    // Bit-identical outputs whatever the thread count.
    const std::size_t n = m_synthetic.test.size();
    std::vector<float> base;
    for (std::size_t threads : {1, 2, 3}) {
        EngineOptions eo;
        eo.threads = threads;
        IntEngine e(q.exported, eo);
        std::vector<float> out(n * 10);
        e.run(m_synthetic.test.pixels.data(), n, out.data(), nullptr);
        if (base.empty()) base = out;
        QVERIFY2(out == base, qPrintable(QString("%1 threads").arg(threads)));
    }
}

void TestInferModels::graphModelsRefuseClearly_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("layer");
    QTest::addColumn<QString>("change");
    QTest::addColumn<QString>("reason");
    QTest::newRow("Add without its point") << "tiny-residual" << "b.add" << "drop point" << "'b.add': its output is not quantized";
    QTest::newRow("16-bit activations after an Add") << "tiny-residual" << "a.relu2" << "16 bits" << "at most 8 bits";
    QTest::newRow("ReLU6 without a point after a quantized conv") << "tiny-depthwise" << "dw1.relu" << "point before" << "ReLU6 'dw1.relu'";
    QTest::newRow("pooling point dropped") << "tiny-residual" << "gap" << "drop point" << "'gap': its output is not quantized";
    QTest::newRow("unsigned depthwise weights") << "tiny-depthwise" << "dw2" << "unsigned weights" << "signed weights";
}

void TestInferModels::graphModelsRefuseClearly()
{
    QFETCH(QString, model);
    QFETCH(QString, layer);
    QFETCH(QString, change);
    QFETCH(QString, reason);
    auto q = fixtures::quantize(graphModel(model), m_synthetic, "int8");
    ExportedModel& em = q.exported;
    std::size_t at = em.layers.size();
    for (std::size_t i = 0; i < em.layers.size(); ++i)
        if (em.layers[i].name == layer.toStdString()) at = i;
    QVERIFY(at < em.layers.size());
    StoredLayer& l = em.layers[at];
    if (change == "drop point") {
        l.outputQuant.reset();
    } else if (change == "16 bits") {
        l.outputQuant->bits = 16;
        l.outputQuant->qmax = 65535;
    } else if (change == "point before") {
        // the conv before the ReLU6 gets the point, the ReLU6 none
        em.layers[at - 1].outputQuant = l.outputQuant;
        l.outputQuant.reset();
    } else if (change == "unsigned weights") {
        StoredTensor& w = l.tensors.at(0);
        w.isSigned = false;
        w.qmin = 0;
        w.qmax = 255;
        for (auto& v : w.q) v = std::abs(v);
    }
    const std::string why = IntEngine::unsupportedReason(em);
    QVERIFY2(QString::fromStdString(why).contains(reason), why.c_str());
    RunnerOptions integerOnly;
    integerOnly.kind = RunnerKind::Integer;
    QVERIFY_THROWS_EXCEPTION(ConfigError, ModelRunner(em, integerOnly));
    ModelRunner r(em);
    QVERIFY(!r.isInteger());
    std::vector<std::int32_t> pred(8);
    r.predict(m_synthetic.test.pixels.data(), pred.size(), pred.data());
    for (std::int32_t p : pred) QVERIFY(p >= 0 && p < 10);
}

void TestInferModels::colourModelsMatchFakeQuant_data()
{
    QTest::addColumn<QString>("preset");
    QTest::newRow("resnet8, 3x20x20") << "resnet8";
    QTest::newRow("mobilenet-tiny, 3x20x20") << "mobilenet-tiny";
    QTest::newRow("lenet5, 3x20x20") << "lenet5";
}

// Colour input: three channels, each with its own normalisation (Dataset::normalization), through
// the engine's per-channel input table, against the fake-quant simulation and the float-input path.
void TestInferModels::colourModelsMatchFakeQuant()
{
    QFETCH(QString, preset);
    const Dataset colour = fixtures::syntheticDataset(192, 200, 20, 20, 11, 3);
    QCOMPARE(colour.normalization.channels(), std::size_t{3});
    QVERIFY2(colour.normalization.mean[0] != colour.normalization.mean[2], "the channels must differ for the test to mean anything");
    auto q = fixtures::quantizePreset(preset.toStdString(), colour, "int8");
    QCOMPARE(q.exported.channels, std::size_t{3});
    QVERIFY(q.exported.normalization == colour.normalization);
    for (Isa isa : {Isa::Scalar, Isa::Avx512Vnni}) {
        if (!isaSupported(isa)) continue;
        const Comparison c = compareWithSim(*q.model, *q.sim, q.exported, colour, isa);
        QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(QString("%1: agreement %2\n%3").arg(isaName(isa)).arg(c.agreement).arg(c.report)));
    }
    // Bytes through the per-channel table give what the normalised floats give.
    IntEngine engine(q.exported);
    Tensor x, out;
    std::vector<std::int32_t> y, fromFloat(40), fromBytes(40);
    colour.makeBatch(colour.test, 0, 40, x, y);
    QCOMPARE(x.dim(1), std::size_t{3});
    engine.runFloat(x, out, fromFloat.data());
    std::vector<float> outBytes(40 * 10);
    engine.run(colour.test.pixels.data(), 40, outBytes.data(), fromBytes.data());
    QCOMPARE(fromFloat, fromBytes);
    QCOMPARE(out.values(), outBytes);
}

QTEST_GUILESS_MAIN(TestInferModels)
#include "tst_infer_models.moc"
