// The integer engine: every fast kernel (AVX-512 VNNI, AVX2: GEMM, depthwise, Add, pooling)
// against its scalar reference twin, the fixed-point requantization, Add and pooling against the
// float fake-quant arithmetic, and whole models (chains and graphs: residual, depthwise, grouped)
// against the fake-quant simulation they were exported from (argmax agreement >= 99.5% on the
// test set, integers at every quantization point within 1 step; where they disagree the first
// diverging layer is reported), across kernels and thread counts.
#include "infer/int_engine.h"
#include "infer/int_gemm.h"
#include "infer/int_kernels.h"
#include "infer/model_runner.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include <QtTest>

#include "slow_tests.h"

#include <cmath>
#include <optional>

using namespace quantscope;

namespace {

constexpr double kMinArgmaxAgreement = 0.995; // issue 5: engine vs fake-quant on the test set
constexpr double kMaxAccuracyGapPoints = 0.3; // top-1 of engine vs fake-quant, percentage points
constexpr int kRequantTolerance = 1;         // fixed point vs exact rounding, in output steps
constexpr double kTieMargin = 1e-6;          // away from .5 the fixed-point result is exact
constexpr double kMinElementAgreement = 0.999; // Add / pooling integers vs the float fake-quant
constexpr double kNearTie = 1e-4;             // |fraction - 0.5| below which float noise decides a rounding
constexpr int kMaxPointDiff = 1;               // engine vs fake-quant integers at any point, in steps

// Within float noise of half-way between two integers (where the float reference may round either way).
bool nearTie(double x)
{
    const double f = x - std::floor(x);
    return std::abs(f - 0.5) < kNearTie;
}

std::vector<Isa> fastIsas()
{
    std::vector<Isa> v;
    for (Isa i : {Isa::Avx2, Isa::Avx512Vnni})
        if (isaSupported(i)) v.push_back(i);
    return v;
}

// The model activation holding the values of the engine's point named `layer`: that layer's
// output, or for a convolution folded with its BatchNorm the BatchNorm's.
std::size_t modelActivationOf(const Model& model, const std::string& layer)
{
    if (layer == "input") return 0;
    for (std::size_t i = 0; i < model.size(); ++i) {
        if (model.layer(i).name() != layer) continue;
        const long next = model.soleConsumer(i);
        if (model.layer(i).kind() == LayerKind::Conv2d && next >= 0 &&
            model.layer(static_cast<std::size_t>(next)).kind() == LayerKind::BatchNorm2d)
            return static_cast<std::size_t>(next) + 1;
        return i + 1;
    }
    return model.size() + 1; // none
}

struct Divergence {
    std::string layer;
    std::size_t differing = 0, total = 0;
    int maxDiff = 0;
};

// Runs one image through the engine (integers at every point) and through the float model with
// the simulation's hooks, and returns the first quantization point where their integers differ.
std::optional<Divergence> firstDivergence(const IntEngine& engine, Model& model, LayerHooks* sim, const Dataset& data,
                                          const LabeledImages& set, std::size_t index)
{
    const std::vector<PointTrace> trace = engine.trace(set.pixels.data() + index * set.imageBytes());
    Tensor x;
    std::vector<std::int32_t> y;
    data.makeBatch(set, index, index + 1, x, y);
    RunContext ctx;
    model.forward(x, ctx, sim);
    for (const PointTrace& p : trace) {
        const std::size_t act = modelActivationOf(model, p.layer);
        if (act > model.size()) continue;
        const Tensor& a = model.activation(act);
        if (a.numel() != p.q.size()) return Divergence{p.layer + " (shape differs)", p.q.size(), p.q.size(), 0};
        Divergence d{p.layer, 0, p.q.size(), 0};
        for (std::size_t i = 0; i < p.q.size(); ++i) {
            const int qs = static_cast<int>(std::nearbyint(a[i] / p.quant.scale)) + p.quant.zeroPoint;
            const int diff = std::abs(qs - p.q[i]);
            if (diff) {
                ++d.differing;
                d.maxDiff = std::max(d.maxDiff, diff);
            }
        }
        if (d.differing) return d;
    }
    return std::nullopt;
}

struct Comparison {
    double agreement = 0, engineAcc = 0, simAcc = 0;
    std::vector<std::int32_t> enginePred;
    QString report;
};

Comparison compareWithSim(Model& model, QuantSim& sim, const ExportedModel& em, const Dataset& data, Isa isa)
{
    Comparison c;
    std::vector<std::int32_t> simPred;
    c.simAcc = evaluate(model, data, data.test, 500, &sim, &simPred).accuracy;
    EngineOptions eo;
    eo.isa = isa;
    IntEngine engine(em, eo);
    c.enginePred.assign(data.test.size(), -1);
    engine.run(data.test.pixels.data(), data.test.size(), nullptr, c.enginePred.data());
    std::size_t same = 0, correct = 0, reported = 0;
    for (std::size_t i = 0; i < simPred.size(); ++i) {
        correct += c.enginePred[i] == data.test.labels[i];
        if (c.enginePred[i] == simPred[i]) {
            ++same;
            continue;
        }
        if (reported++ < 3) {
            const auto d = firstDivergence(engine, model, &sim, data, data.test, i);
            c.report += QString("image %1: engine %2, fake-quant %3; first diverging layer: %4\n")
                            .arg(i)
                            .arg(c.enginePred[i])
                            .arg(simPred[i])
                            .arg(d ? QString("%1 (%2 of %3 values, max %4 steps)").arg(QString::fromStdString(d->layer)).arg(d->differing).arg(d->total).arg(d->maxDiff)
                                   : QString("none (ties in the class scores)"));
        }
    }
    c.agreement = static_cast<double>(same) / static_cast<double>(simPred.size());
    c.engineAcc = static_cast<double>(correct) / static_cast<double>(simPred.size());
    return c;
}

struct PointStats {
    std::size_t points = 0, values = 0, differing = 0, unmatched = 0;
    std::size_t interior = 0; // values strictly inside the grid (not at a clamp): what the comparison exercises
    std::size_t offTie = 0;   // differences where the reference value was not (nearly) half-way
    int maxDiff = 0;
    double worstFraction = 0; // of one point in one image
    QString worst;
};

// Integers at every quantization point of the engine against the simulation's, images [0, count).
PointStats comparePoints(const IntEngine& engine, Model& model, LayerHooks* sim, const Dataset& data, std::size_t count)
{
    PointStats st;
    for (std::size_t img = 0; img < count; ++img) {
        const std::vector<PointTrace> trace = engine.trace(data.test.pixels.data() + img * data.test.imageBytes());
        Tensor x;
        std::vector<std::int32_t> y;
        data.makeBatch(data.test, img, img + 1, x, y);
        RunContext ctx;
        model.forward(x, ctx, sim);
        for (const PointTrace& p : trace) {
            const std::size_t act = modelActivationOf(model, p.layer);
            if (act > model.size() || model.activation(act).numel() != p.q.size()) {
                ++st.unmatched;
                st.worst = QString::fromStdString(p.layer) + " has no model activation of its size";
                continue;
            }
            const Tensor& a = model.activation(act);
            std::size_t differing = 0;
            for (std::size_t i = 0; i < p.q.size(); ++i) {
                const int qs = static_cast<int>(std::nearbyint(a[i] / p.quant.scale)) + p.quant.zeroPoint;
                const int diff = std::abs(qs - p.q[i]);
                differing += diff != 0;
                st.maxDiff = std::max(st.maxDiff, diff);
            }
            ++st.points;
            st.values += p.q.size();
            st.differing += differing;
            const double f = static_cast<double>(differing) / static_cast<double>(p.q.size());
            if (f > st.worstFraction) {
                st.worstFraction = f;
                st.worst = QString("%1 in image %2: %3 of %4 values").arg(QString::fromStdString(p.layer)).arg(img).arg(differing).arg(p.q.size());
            }
        }
    }
    return st;
}

// Every quantization point of the engine against the float op run on the engine's own integers:
// the model's layers with the simulation's hooks, but at each point the engine's values replace
// the simulation's before later layers read them. A point is then compared given identical inputs,
// so a one-step difference upstream cannot grow downstream; what remains differs only where the
// float result is (nearly) half-way between two steps.
PointStats comparePointsLocally(const IntEngine& engine, Model& model, LayerHooks& sim, const Dataset& data, std::size_t count)
{
    PointStats st;
    for (std::size_t img = 0; img < count; ++img) {
        const std::vector<PointTrace> trace = engine.trace(data.test.pixels.data() + img * data.test.imageBytes());
        std::vector<const PointTrace*> pointAt(model.size() + 1, nullptr);
        for (const PointTrace& p : trace) {
            const std::size_t act = modelActivationOf(model, p.layer);
            if (act > model.size()) {
                ++st.unmatched;
                st.worst = QString::fromStdString(p.layer) + " has no model activation";
                continue;
            }
            pointAt[act] = &p;
        }
        std::vector<Tensor> acts(model.size() + 1);
        std::vector<std::int32_t> labels;
        data.makeBatch(data.test, img, img + 1, acts[0], labels);
        RunContext ctx;
        Tensor raw; // a point's values before the fake-quant
        sim.onInput(acts[0], ctx);
        for (std::size_t a = 0; a <= model.size(); ++a) {
            if (a > 0) {
                Layer& l = model.layer(a - 1);
                std::vector<const Tensor*> xs;
                for (std::size_t from : model.inputsOf(a - 1)) xs.push_back(&acts[from]);
                l.forwardMulti(xs, acts[a], ctx);
                if (pointAt[a]) raw = acts[a];
                sim.afterForward(a - 1, l, acts[a], ctx);
            } else {
                raw = acts[0];
            }
            const PointTrace* p = pointAt[a];
            if (!p) continue;
            Tensor& t = acts[a];
            if (t.numel() != p->q.size()) {
                ++st.unmatched;
                st.worst = QString::fromStdString(p->layer) + ": sizes differ";
                continue;
            }
            std::size_t differing = 0;
            for (std::size_t i = 0; i < p->q.size(); ++i) {
                const int qs = static_cast<int>(std::nearbyint(t[i] / p->quant.scale)) + p->quant.zeroPoint;
                const int diff = std::abs(qs - p->q[i]);
                differing += diff != 0;
                if (diff && !nearTie(static_cast<double>(raw[i] * (1.0f / p->quant.scale)))) {
                    ++st.offTie;
                    st.worst = QString("%1 in image %2: value %3 is %4 steps, the engine has %5")
                                   .arg(QString::fromStdString(p->layer)).arg(img).arg(i).arg(static_cast<double>(raw[i] / p->quant.scale)).arg(p->q[i] - p->quant.zeroPoint);
                }
                st.interior += p->q[i] > p->quant.qmin && p->q[i] < p->quant.qmax && p->q[i] != p->quant.zeroPoint;
                st.maxDiff = std::max(st.maxDiff, diff);
                // the engine's value, as the fake-quant would hold it
                t[i] = (static_cast<float>(p->q[i]) - static_cast<float>(p->quant.zeroPoint)) * p->quant.scale;
            }
            ++st.points;
            st.values += p->q.size();
            st.differing += differing;
            const double f = static_cast<double>(differing) / static_cast<double>(p->q.size());
            if (f > st.worstFraction) {
                st.worstFraction = f;
                st.worst = QString("%1 in image %2: %3 of %4 values").arg(QString::fromStdString(p->layer)).arg(img).arg(differing).arg(p->q.size());
            }
        }
    }
    return st;
}

// Folding a fresh BatchNorm (gamma 1, beta 0, mean 0, var 1) changes nothing: give it statistics.
void randomizeBatchNorms(Model& m, std::uint64_t seed)
{
    Rng rng(seed);
    for (std::size_t i = 0; i < m.size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm2d*>(&m.layer(i)))
            for (std::size_t c = 0; c < bn->channels(); ++c) {
                bn->gamma().value[c] = rng.uniform(0.5f, 1.5f);
                bn->beta().value[c] = rng.uniform(-0.2f, 0.2f);
                bn->runningMean()[c] = rng.uniform(-0.2f, 0.2f);
                bn->runningVar()[c] = rng.uniform(0.5f, 2.0f);
            }
}

// A small ResNet-like graph: an identity block (Add of two quantized activations, then ReLU), a
// projection block (stride 2, ReLU6 inside, 1x1 shortcut, conv with bias and no BN, an Add with a
// point of its own read by a max-pool), a standalone ReLU on the max-pool's grid, AvgPool2d, GAP.
std::unique_ptr<Model> tinyResidual()
{
    auto m = std::make_unique<Model>("tiny-residual", Shape{1, 28, 28});
    std::size_t x = m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1, 1, false));
    x = m->add(std::make_unique<BatchNorm2d>("bn1", 8), {x});
    x = m->add(std::make_unique<ReLU>("relu1"), {x});
    std::size_t y = m->add(std::make_unique<Conv2d>("a.conv1", 8, 8, 3, 1, 1, 1, false), {x});
    y = m->add(std::make_unique<BatchNorm2d>("a.bn1", 8), {y});
    y = m->add(std::make_unique<ReLU>("a.relu1"), {y});
    y = m->add(std::make_unique<Conv2d>("a.conv2", 8, 8, 3, 1, 1, 1, false), {y});
    y = m->add(std::make_unique<BatchNorm2d>("a.bn2", 8), {y});
    y = m->add(std::make_unique<Add>("a.add"), {y, x});
    x = m->add(std::make_unique<ReLU>("a.relu2"), {y});
    y = m->add(std::make_unique<Conv2d>("b.conv1", 8, 16, 3, 2, 1, 1, false), {x});
    y = m->add(std::make_unique<BatchNorm2d>("b.bn1", 16), {y});
    y = m->add(std::make_unique<ReLU6>("b.relu1"), {y});
    y = m->add(std::make_unique<Conv2d>("b.conv2", 16, 16, 3, 1, 1), {y});
    std::size_t sc = m->add(std::make_unique<Conv2d>("b.shortcut", 8, 16, 1, 2, 0, 1, false), {x});
    sc = m->add(std::make_unique<BatchNorm2d>("b.shortcut_bn", 16), {sc});
    m->add(std::make_unique<Add>("b.add"), {y, sc});
    m->add(std::make_unique<MaxPool2d>("pool1", 2));
    m->add(std::make_unique<ReLU>("relu2"));
    m->add(std::make_unique<AvgPool2d>("avg", 2));
    m->add(std::make_unique<GlobalAvgPool2d>("gap"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 16, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(11);
    randomizeBatchNorms(*m, 12);
    return m;
}

// Depthwise-separable blocks (stride 1 and 2, 3x3 and 5x5, 24 channels: not a divisor of the
// vector width), a grouped conv (3 groups of 8) and a depthwise conv with channel multiplier 2.
std::unique_ptr<Model> tinyDepthwise()
{
    auto m = std::make_unique<Model>("tiny-depthwise", Shape{1, 28, 28});
    auto add = [&](Layer* l) { m->add(LayerPtr(l)); };
    add(new Conv2d("conv1", 1, 8, 3, 1, 1, 1, false));
    add(new BatchNorm2d("bn1", 8));
    add(new ReLU6("relu1"));
    add(new Conv2d("dw1", 8, 8, 3, 1, 1, 8, false));
    add(new BatchNorm2d("dw1.bn", 8));
    add(new ReLU6("dw1.relu"));
    add(new Conv2d("pw1", 8, 16, 1, 1, 0, 1, false));
    add(new BatchNorm2d("pw1.bn", 16));
    add(new ReLU6("pw1.relu"));
    add(new Conv2d("dw2", 16, 16, 3, 2, 1, 16, false));
    add(new BatchNorm2d("dw2.bn", 16));
    add(new ReLU6("dw2.relu"));
    add(new Conv2d("pw2", 16, 24, 1, 1, 0, 1, false));
    add(new BatchNorm2d("pw2.bn", 24));
    add(new ReLU6("pw2.relu"));
    add(new Conv2d("dw3", 24, 24, 5, 2, 2, 24, true));
    add(new ReLU6("dw3.relu"));
    add(new Conv2d("group", 24, 24, 3, 1, 1, 3, true));
    add(new ReLU("group.relu"));
    add(new Conv2d("dw-mult", 24, 48, 3, 1, 1, 24, false));
    add(new BatchNorm2d("dw-mult.bn", 48));
    add(new ReLU6("dw-mult.relu"));
    add(new GlobalAvgPool2d("gap"));
    add(new Flatten("flatten"));
    add(new Linear("fc", 48, 10));
    add(new LogSoftmax("log_softmax"));
    m->initParams(21);
    randomizeBatchNorms(*m, 22);
    // Large enough before the last ReLU6 that many values reach its cap.
    auto* bn = dynamic_cast<BatchNorm2d*>(m->findLayer("dw-mult.bn"));
    for (std::size_t c = 0; c < bn->channels(); ++c) bn->gamma().value[c] *= 100.0f;
    return m;
}

// Padded pooling: a ResNet stem's MaxPool2d(3, 2, 1) (-inf border) and AvgPool2d(3, 1, 1) /
// AvgPool2d(3, 2, 1) (zero border counted in the mean, PyTorch's default).
std::unique_ptr<Model> tinyPaddedPools()
{
    auto m = std::make_unique<Model>("tiny-padded-pools", Shape{1, 28, 28});
    auto add = [&](Layer* l) { m->add(LayerPtr(l)); };
    add(new Conv2d("conv1", 1, 8, 3, 1, 1, 1, false));
    add(new BatchNorm2d("bn1", 8));
    add(new ReLU("relu1"));
    add(new MaxPool2d("maxpool", 3, 2, 1));
    add(new Conv2d("conv2", 8, 12, 3, 1, 1));
    add(new ReLU("relu2"));
    add(new AvgPool2d("avg-same", 3, 1, 1));
    add(new AvgPool2d("avg-down", 3, 2, 1));
    add(new GlobalAvgPool2d("gap"));
    add(new Flatten("flatten"));
    add(new Linear("fc", 12, 10));
    add(new LogSoftmax("log_softmax"));
    m->initParams(31);
    randomizeBatchNorms(*m, 32);
    return m;
}

std::unique_ptr<Model> graphModel(const QString& name)
{
    if (name == "tiny-padded-pools") return tinyPaddedPools();
    if (name == "tiny-residual") return tinyResidual();
    if (name == "tiny-depthwise") return tinyDepthwise();
    return makeModel(name.toStdString(), 1, 28, 28, 10, 3);
}

// The fake-quant of one value, as fakeQuantizeRun computes it.
int fakeQuantInt(float v, float scale, int zp, int qmin, int qmax)
{
    float q = std::nearbyint(v * (1.0f / scale)) + static_cast<float>(zp);
    q = std::clamp(q, static_cast<float>(qmin), static_cast<float>(qmax));
    return static_cast<int>(q);
}

} // namespace

class TestInfer : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void kernelsMatchScalarTwin_data();
    void kernelsMatchScalarTwin();
    void requantizeIsExactRounding();
    void syntheticModelsMatchFakeQuant_data();
    void syntheticModelsMatchFakeQuant();
    void floatInputMatchesPixels();
    void unsupportedModelsFallBack_data();
    void unsupportedModelsFallBack();
    void qatFashionMatchesFakeQuant_data();
    void qatFashionMatchesFakeQuant();
    void depthwiseMatchesScalarTwin_data();
    void depthwiseMatchesScalarTwin();
    void addMatchesFakeQuant_data();
    void addMatchesFakeQuant();
    void avgPoolMatchesFakeQuant_data();
    void avgPoolMatchesFakeQuant();
    void graphModelsMatchFakeQuant_data();
    void graphModelsMatchFakeQuant();
    void graphModelsRefuseClearly_data();
    void graphModelsRefuseClearly();
    void colourModelsMatchFakeQuant_data();
    void colourModelsMatchFakeQuant();

private:
    Dataset m_synthetic;
};

void TestInfer::initTestCase()
{
    // Under the sanitizer presets (QS_SANITIZER_RUN) the test set is a fifth (60 images): under
    // TSan one row of syntheticModelsMatchFakeQuant on 300 images outlasted QtTest's 25-minute
    // function timeout in the scalar kernels (every byte load instrumented).
    m_synthetic = fixtures::syntheticDataset(256, static_cast<std::size_t>(300 / quantscope::testing::sanitizerSlowdown()));
    qInfo("kernels on this CPU: best %s", isaName(bestIsa()));
}

void TestInfer::kernelsMatchScalarTwin_data()
{
    QTest::addColumn<int>("M");
    QTest::addColumn<int>("N");
    QTest::addColumn<int>("nseg");
    QTest::addColumn<int>("segLen");
    QTest::addColumn<int>("segStride"); // 0: rows packed one after another
    QTest::addColumn<double>("multiplier");
    QTest::addColumn<bool>("relu");
    QTest::addColumn<int>("zp");
    QTest::newRow("conv 32->64 3x3 on 26x26") << 576 << 64 << 3 << 96 << 26 * 32 << 2e-3 << true << 0;
    QTest::newRow("conv 1->32 3x3, im2col K 12") << 676 << 32 << 1 << 12 << 0 << 5e-3 << true << 0;
    QTest::newRow("dense 9216->128") << 16 << 128 << 1 << 9216 << 0 << 1e-4 << true << 0;
    QTest::newRow("dense 128->10, zp 131") << 13 << 10 << 1 << 128 << 0 << 3e-3 << false << 131;
    QTest::newRow("tails 7x33") << 7 << 33 << 2 << 20 << 44 << 1e-2 << false << 128;
    QTest::newRow("one row, one column") << 1 << 1 << 1 << 4 << 0 << 0.5 << false << 7;
    QTest::newRow("multiplier above 1") << 9 << 17 << 1 << 8 << 0 << 3.7 << false << 100;
    QTest::newRow("tiny multiplier") << 9 << 84 << 1 << 120 << 0 << 1e-12 << false << 3;
    QTest::newRow("lenet 84 outputs, relu zp 5") << 31 << 84 << 1 << 120 << 0 << 4e-3 << true << 5;
}

void TestInfer::kernelsMatchScalarTwin()
{
    QFETCH(int, M);
    QFETCH(int, N);
    QFETCH(int, nseg);
    QFETCH(int, segLen);
    QFETCH(int, segStride);
    QFETCH(double, multiplier);
    QFETCH(bool, relu);
    QFETCH(int, zp);
    const std::size_t K = static_cast<std::size_t>(nseg * segLen);
    Rng rng(static_cast<std::uint64_t>(M * 131 + N * 7 + K));
    // A: rows at arbitrary offsets of a buffer of random bytes (full 0..255 range).
    const std::size_t rowSpan = segStride ? static_cast<std::size_t>((nseg - 1) * segStride + segLen) : K;
    std::vector<std::uint32_t> rowOff(static_cast<std::size_t>(M));
    for (int r = 0; r < M; ++r) rowOff[static_cast<std::size_t>(r)] = static_cast<std::uint32_t>(r * (segStride ? 32 : K));
    const std::size_t extent = rowOff.back() + rowSpan;
    std::vector<std::uint8_t> a(extent);
    for (auto& v : a) v = static_cast<std::uint8_t>(rng.below(256));
    std::vector<std::int8_t> w(static_cast<std::size_t>(N) * K);
    for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(rng.below(256)) - 128);
    std::vector<std::int32_t> bias(static_cast<std::size_t>(N));
    std::vector<FixedPointMultiplier> fpm(static_cast<std::size_t>(N));
    for (int n = 0; n < N; ++n) {
        bias[static_cast<std::size_t>(n)] = static_cast<std::int32_t>(rng.below(200001)) - 100000;
        fpm[static_cast<std::size_t>(n)] = fixedPointMultiplier(multiplier * (0.5 + rng.uniform()));
    }
    const std::int32_t lo = relu ? zp : 0, hi = 255;
    GemmA ga;
    ga.base = a.data();
    ga.extent = extent;
    ga.rowOffset = rowOff.data();
    ga.M = static_cast<std::size_t>(M);
    ga.nseg = static_cast<std::size_t>(nseg);
    ga.segLen = static_cast<std::size_t>(segLen);
    ga.segStride = static_cast<std::size_t>(segStride);
    const std::size_t ldc = static_cast<std::size_t>(N) + 3; // outputs into a wider row
    std::vector<std::uint8_t> ref(static_cast<std::size_t>(M) * ldc, 0xEE);
    GemmScratch scratch;
    gemmRequant(packGemm(Isa::Scalar, w.data(), static_cast<std::size_t>(N), K, bias, fpm, zp, lo, hi), ga, ref.data(), ldc, scratch);
    const std::vector<Isa> isas = fastIsas();
    if (isas.empty()) QSKIP("this CPU has neither AVX2 nor AVX-512 VNNI: only the scalar kernel runs");
    for (Isa isa : isas) {
        std::vector<std::uint8_t> out(static_cast<std::size_t>(M) * ldc, 0xEE);
        gemmRequant(packGemm(isa, w.data(), static_cast<std::size_t>(N), K, bias, fpm, zp, lo, hi), ga, out.data(), ldc, scratch);
        for (std::size_t i = 0; i < out.size(); ++i)
            QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: row %2 col %3: %4, scalar twin %5")
                                                      .arg(isaName(isa)).arg(i / ldc).arg(i % ldc).arg(out[i]).arg(ref[i])));
    }
}

void TestInfer::requantizeIsExactRounding()
{
    Rng rng(99);
    for (int i = 0; i < 200000; ++i) {
        const double m = std::exp(rng.uniform(-25.0f, 1.5f));
        // |acc * m| stays inside int32, where no clamp applies
        const double range = std::min(2.0e9, 2.0e9 / m);
        const std::int32_t acc = static_cast<std::int32_t>(std::trunc((2.0 * rng.uniform() - 1.0) * range));
        const FixedPointMultiplier f = fixedPointMultiplier(m);
        const std::int32_t got = requantize(acc, f, 0, std::numeric_limits<std::int32_t>::min() + 1, std::numeric_limits<std::int32_t>::max());
        const double exact = static_cast<double>(acc) * m;
        QVERIFY(std::abs(got - std::nearbyint(exact)) <= kRequantTolerance);
        const double frac = exact - std::floor(exact);
        if (std::abs(frac - 0.5) > kTieMargin && std::abs(exact) < 1e9)
            QVERIFY2(got == static_cast<std::int32_t>(std::floor(exact + 0.5)), qPrintable(QString("acc %1 m %2").arg(acc).arg(m)));
    }
    // Clamp and zero point.
    const FixedPointMultiplier half = fixedPointMultiplier(0.5);
    QCOMPARE(requantize(1000, half, 10, 0, 255), 255);
    QCOMPARE(requantize(-1000, half, 10, 10, 255), 10);
    QCOMPARE(requantize(5, half, 10, 0, 255), 13); // 2.5 rounds half up, + 10
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(0.0));
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(std::nan("")));
    QVERIFY_THROWS_EXCEPTION(ConfigError, fixedPointMultiplier(1e12));
}

void TestInfer::syntheticModelsMatchFakeQuant_data()
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

void TestInfer::syntheticModelsMatchFakeQuant()
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

void TestInfer::floatInputMatchesPixels()
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

void TestInfer::unsupportedModelsFallBack_data()
{
    QTest::addColumn<QString>("format");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("reason");
    QTest::newRow("group-wise") << "int4" << "group:32" << "group-wise";
    QTest::newRow("unsigned weights") << "uint8" << "channel" << "signed weights";
    QTest::newRow("12-bit weights") << "int12" << "channel" << "at most 8 bits";
    QTest::newRow("bias beyond int32 (fuzz finding)") << "int8" << "channel" << "does not fit the int32 accumulator";
}

void TestInfer::unsupportedModelsFallBack()
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

void TestInfer::qatFashionMatchesFakeQuant_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("granularity");
    QTest::addColumn<QString>("act");
    QTest::newRow("seed-cnn QAT int8 channel") << "seed-cnn" << "channel" << "uint8";
    QTest::newRow("seed-cnn-bn QAT int8 tensor, int8 activations") << "seed-cnn-bn" << "tensor" << "int8";
}

void TestInfer::qatFashionMatchesFakeQuant()
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

void TestInfer::depthwiseMatchesScalarTwin_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("stride");
    QTest::addColumn<int>("pad");
    QTest::addColumn<int>("zpIn");
    QTest::addColumn<int>("lo"); // clamp (a folded ReLU / ReLU6)
    QTest::addColumn<int>("hi");
    QTest::newRow("mobilenet 16ch 28x28 3x3 s1 p1, ReLU6") << 16 << 28 << 28 << 3 << 1 << 1 << 0 << 0 << 97;
    QTest::newRow("32ch 28x28 s2 p1") << 32 << 28 << 28 << 3 << 2 << 1 << 3 << 0 << 255;
    QTest::newRow("64ch 14x14 s2 p1") << 64 << 14 << 14 << 3 << 2 << 1 << 0 << 10 << 255;
    QTest::newRow("128ch 7x7 s1 p1") << 128 << 7 << 7 << 3 << 1 << 1 << 128 << 128 << 255;
    QTest::newRow("24ch 9x11 5x5 s2 p2 (period 3 vectors)") << 24 << 9 << 11 << 5 << 2 << 2 << 17 << 0 << 200;
    QTest::newRow("3ch 10x7 3x3 s3 p0") << 3 << 10 << 7 << 3 << 3 << 0 << 40 << 0 << 255;
    QTest::newRow("1ch 5x5 1x1 s1") << 1 << 5 << 5 << 1 << 1 << 0 << 9 << 0 << 255;
    QTest::newRow("100ch 6x6 3x3 s1 p2, wide tables") << 100 << 6 << 6 << 3 << 1 << 2 << 255 << 0 << 255;
    QTest::newRow("kernel as large as the padded input") << 8 << 3 << 3 << 5 << 1 << 1 << 7 << 0 << 255;
}

void TestInfer::depthwiseMatchesScalarTwin()
{
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(int, pad);
    QFETCH(int, zpIn);
    QFETCH(int, lo);
    QFETCH(int, hi);
    DepthwiseGeometry g;
    g.C = static_cast<std::size_t>(C), g.H = static_cast<std::size_t>(H), g.W = static_cast<std::size_t>(W);
    g.k = static_cast<std::size_t>(k), g.stride = static_cast<std::size_t>(stride), g.pad = static_cast<std::size_t>(pad);
    g.Ho = (g.H + 2 * g.pad - g.k) / g.stride + 1, g.Wo = (g.W + 2 * g.pad - g.k) / g.stride + 1;
    Rng rng(static_cast<std::uint64_t>(C * 1000 + H * 10 + k));
    std::vector<std::uint8_t> in(g.H * g.W * g.C);
    for (auto& v : in) v = static_cast<std::uint8_t>(rng.below(256));
    std::vector<std::int8_t> w(g.C * g.k * g.k);
    for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(rng.below(256)) - 128);
    std::vector<std::int32_t> bias(g.C);
    std::vector<FixedPointMultiplier> fpm(g.C);
    for (std::size_t c = 0; c < g.C; ++c) {
        bias[c] = static_cast<std::int32_t>(rng.below(40001)) - 20000;
        fpm[c] = fixedPointMultiplier(2e-3 * (0.25 + rng.uniform()));
    }
    const std::int32_t zpOut = std::min(std::max(lo, 5), hi);
    const std::size_t outBytes = g.Ho * g.Wo * g.C;
    std::vector<std::uint8_t> ref(outBytes + 64, 0xEE);
    const PackedDepthwise scalar = packDepthwise(Isa::Scalar, g, w.data(), bias, fpm, static_cast<std::uint8_t>(zpIn), zpOut, lo, hi);
    depthwiseRequantScalar(scalar, in.data(), ref.data());
    // The twin itself against the plain formula with the input zero point subtracted explicitly.
    for (std::size_t c = 0; c < g.C; c += 7) {
        std::int64_t acc = bias[c];
        for (std::size_t ky = 0; ky < g.k; ++ky)
            for (std::size_t kx = 0; kx < g.k; ++kx) {
                const long iy = static_cast<long>(ky) - pad, ix = static_cast<long>(kx) - pad; // output (0, 0)
                const int v = iy >= 0 && ix >= 0 && iy < H && ix < W ? in[(static_cast<std::size_t>(iy) * g.W + static_cast<std::size_t>(ix)) * g.C + c] : zpIn;
                acc += static_cast<std::int64_t>(v) * w[c * g.k * g.k + ky * g.k + kx];
            }
        QCOMPARE(static_cast<int>(ref[c]), requantize(static_cast<std::int32_t>(acc), fpm[c], zpOut, lo, hi));
    }
    for (std::size_t i = outBytes; i < ref.size(); ++i) QCOMPARE(ref[i], std::uint8_t{0xEE}); // nothing written past the end
    for (Isa isa : fastIsas()) {
        const PackedDepthwise p = packDepthwise(isa, g, w.data(), bias, fpm, static_cast<std::uint8_t>(zpIn), zpOut, lo, hi);
        // The padded scratch as another layer left it: only what valid outputs read is rewritten.
        std::vector<std::uint8_t> out(outBytes + 64, 0xEE), scratch(p.paddedBytes() + 100);
        for (auto& v : scratch) v = static_cast<std::uint8_t>(rng.below(256));
        depthwiseRequant(p, in.data(), out.data(), scratch);
        for (std::size_t i = 0; i < out.size(); ++i)
            QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: pixel %2 channel %3: %4, scalar twin %5")
                                                      .arg(isaName(isa)).arg(i / g.C).arg(i % g.C).arg(out[i]).arg(ref[i])));
    }
}

void TestInfer::addMatchesFakeQuant_data()
{
    QTest::addColumn<double>("sa");
    QTest::addColumn<int>("za");
    QTest::addColumn<double>("sb");
    QTest::addColumn<int>("zb");
    QTest::addColumn<double>("so");
    QTest::addColumn<int>("zo");
    QTest::addColumn<bool>("relu");
    QTest::addColumn<bool>("ties"); // scales in exact ratios: many values are exact halves
    // Scales as observers produce them (range / 255): no simple ratios between them.
    QTest::newRow("residual, ReLU fused") << 0.0312877 << 0 << 0.0471193 << 61 << 0.0519241 << 0 << true << false;
    QTest::newRow("residual, no ReLU") << 0.0213411 << 127 << 0.0119372 << 90 << 0.0307126 << 113 << false << false;
    QTest::newRow("output scale below the inputs'") << 0.0803317 << 3 << 0.1100923 << 0 << 0.0207751 << 128 << false << false;
    QTest::newRow("very different input scales") << 1.03e-4 << 128 << 0.9003 << 128 << 0.7071 << 128 << false << false;
    QTest::newRow("s_a = s_out / 2 exactly (ties)") << 0.025 << 0 << 0.0173 << 20 << 0.05 << 0 << false << true;
    QTest::newRow("ties, odd output zero point") << 0.025 << 0 << 0.0173 << 20 << 0.05 << 77 << false << true;
    QTest::newRow("ties, ReLU, odd zero points") << 0.0125 << 3 << 0.0125 << 9 << 0.05 << 11 << true << true;
}

void TestInfer::addMatchesFakeQuant()
{
    QFETCH(double, sa);
    QFETCH(int, za);
    QFETCH(double, sb);
    QFETCH(int, zb);
    QFETCH(double, so);
    QFETCH(int, zo);
    QFETCH(bool, relu);
    QFETCH(bool, ties);
    const std::size_t n = 100003; // not a multiple of any vector width
    Rng rng(static_cast<std::uint64_t>(za * 7 + zb * 13 + zo));
    std::vector<std::uint8_t> a(n), b(n);
    for (std::size_t i = 0; i < n; ++i) {
        a[i] = static_cast<std::uint8_t>(rng.below(256));
        b[i] = static_cast<std::uint8_t>(rng.below(256));
    }
    const float fa = static_cast<float>(sa), fb = static_cast<float>(sb), fo = static_cast<float>(so);
    const int lo = relu ? zo : 0;
    const AddParams scalar = addParams(Isa::Scalar, static_cast<double>(fa) / fo, static_cast<double>(fb) / fo, za, zb, zo, lo, 255);
    std::vector<std::uint8_t> ref(n);
    addRequantScalar(scalar, a.data(), b.data(), ref.data(), n);
    // Against the float reference: dequantized inputs added in float, (ReLU,) fake-quantized. They
    // may differ where the exact value is (nearly) half-way between two steps: there the float
    // rounding errors of the reference decide.
    std::size_t same = 0;
    int maxDiff = 0;
    for (std::size_t i = 0; i < n; ++i) {
        float v = static_cast<float>(a[i] - za) * fa + static_cast<float>(b[i] - zb) * fb;
        if (relu) v = std::max(v, 0.0f);
        const int diff = std::abs(fakeQuantInt(v, fo, zo, 0, 255) - ref[i]);
        same += diff == 0;
        maxDiff = std::max(maxDiff, diff);
        const double exact = ((a[i] - za) * static_cast<double>(fa) + (b[i] - zb) * static_cast<double>(fb)) / fo;
        QVERIFY2(diff == 0 || nearTie(exact), qPrintable(QString("element %1: exact %2, engine %3").arg(i).arg(exact, 0, 'f', 9).arg(ref[i])));
    }
    const double agreement = static_cast<double>(same) / static_cast<double>(n);
    qInfo("integer Add vs float fake-quant: %.4f %% equal, max %d step", 100.0 * agreement, maxDiff);
    if (!ties) QVERIFY2(agreement >= kMinElementAgreement, qPrintable(QString("agreement %1").arg(agreement)));
    QVERIFY(maxDiff <= kRequantTolerance);
    for (Isa isa : fastIsas()) {
        const AddParams p = addParams(isa, static_cast<double>(fa) / fo, static_cast<double>(fb) / fo, za, zb, zo, lo, 255);
        for (std::size_t len : {n, std::size_t{1}, std::size_t{15}, std::size_t{17}, std::size_t{64}}) {
            std::vector<std::uint8_t> out(len + 1, 0xEE);
            addRequant(p, a.data(), b.data(), out.data(), len);
            for (std::size_t i = 0; i < len; ++i)
                QVERIFY2(out[i] == ref[i], qPrintable(QString("%1: element %2: %3, scalar twin %4").arg(isaName(isa)).arg(i).arg(out[i]).arg(ref[i])));
            QCOMPARE(out[len], std::uint8_t{0xEE});
        }
    }
}

void TestInfer::avgPoolMatchesFakeQuant_data()
{
    QTest::addColumn<int>("C");
    QTest::addColumn<int>("H");
    QTest::addColumn<int>("W");
    QTest::addColumn<int>("k"); // 0: global
    QTest::addColumn<int>("stride");
    QTest::addColumn<double>("si");
    QTest::addColumn<int>("zin");
    QTest::addColumn<double>("so");
    QTest::addColumn<int>("zo");
    QTest::addColumn<bool>("ties"); // s_in / (window s_out) a simple fraction: many exact halves
    QTest::newRow("GAP 64ch 7x7 (resnet8)") << 64 << 7 << 7 << 0 << 1 << 0.0431377 << 0 << 0.0171249 << 0 << false;
    QTest::newRow("GAP 128ch 7x7, zero points") << 128 << 7 << 7 << 0 << 1 << 0.0233813 << 12 << 0.0090127 << 7 << false;
    QTest::newRow("GAP 5ch 4x6 (channel tails)") << 5 << 4 << 6 << 0 << 1 << 0.1012231 << 128 << 0.0497433 << 128 << false;
    QTest::newRow("AvgPool 2x2 s2 16ch 14x14") << 16 << 14 << 14 << 2 << 2 << 0.0200371 << 0 << 0.0191823 << 0 << false;
    QTest::newRow("AvgPool 3x3 s1 20ch 9x9") << 20 << 9 << 9 << 3 << 1 << 0.0500122 << 30 << 0.0410021 << 25 << false;
    QTest::newRow("same scale in and out (ties)") << 8 << 8 << 8 << 2 << 2 << 0.02 << 0 << 0.02 << 0 << true;
    QTest::newRow("GAP 4x6, s_out = s_in / 2 (ties)") << 5 << 4 << 6 << 0 << 1 << 0.1 << 128 << 0.05 << 128 << true;
}

void TestInfer::avgPoolMatchesFakeQuant()
{
    QFETCH(int, C);
    QFETCH(int, H);
    QFETCH(int, W);
    QFETCH(int, k);
    QFETCH(int, stride);
    QFETCH(double, si);
    QFETCH(int, zin);
    QFETCH(double, so);
    QFETCH(int, zo);
    QFETCH(bool, ties);
    const float fsi = static_cast<float>(si), fso = static_cast<float>(so);
    PoolParams p;
    p.C = static_cast<std::size_t>(C), p.H = static_cast<std::size_t>(H), p.W = static_cast<std::size_t>(W);
    p.kh = k ? static_cast<std::size_t>(k) : p.H;
    p.kw = k ? static_cast<std::size_t>(k) : p.W;
    p.stride = static_cast<std::size_t>(stride);
    p.Ho = (p.H - p.kh) / p.stride + 1, p.Wo = (p.W - p.kw) / p.stride + 1;
    const std::size_t window = p.kh * p.kw;
    p.f = fixedPointMultiplier(static_cast<double>(fsi) / (static_cast<double>(window) * fso));
    p.zin = zin, p.zp = zo, p.lo = 0, p.hi = 255;
    const std::size_t images = 400, inBytes = p.H * p.W * p.C, outBytes = p.Ho * p.Wo * p.C;
    Rng rng(static_cast<std::uint64_t>(C + H * 100 + k));
    std::vector<std::uint8_t> in(images * inBytes);
    for (auto& v : in) v = static_cast<std::uint8_t>(rng.below(256));
    // The float reference: dequantized inputs summed in window order, times 1 / window, fake-quantized;
    // and the exact value, to tell where it may round either way.
    std::vector<int> want(images * outBytes);
    std::vector<double> exact(images * outBytes);
    const float inv = 1.0f / static_cast<float>(window);
    for (std::size_t img = 0; img < images; ++img)
        for (std::size_t oy = 0; oy < p.Ho; ++oy)
            for (std::size_t ox = 0; ox < p.Wo; ++ox)
                for (std::size_t c = 0; c < p.C; ++c) {
                    float sum = 0.0f;
                    long isum = 0;
                    for (std::size_t ky = 0; ky < p.kh; ++ky)
                        for (std::size_t kx = 0; kx < p.kw; ++kx) {
                            const int q = in[img * inBytes + ((oy * p.stride + ky) * p.W + ox * p.stride + kx) * p.C + c] - zin;
                            sum += static_cast<float>(q) * fsi;
                            isum += q;
                        }
                    const std::size_t at = img * outBytes + (oy * p.Wo + ox) * p.C + c;
                    want[at] = fakeQuantInt(sum * inv, fso, zo, 0, 255);
                    exact[at] = static_cast<double>(isum) * fsi / (static_cast<double>(window) * fso);
                }
    std::vector<std::uint8_t> ref[2];
    const RoundMode modes[2] = {RoundMode::HalfEven, RoundMode::HalfUp};
    for (int m = 0; m < 2; ++m) {
        PoolParams q = p;
        q.round = modes[m];
        ref[m].assign(images * outBytes, 0);
        for (std::size_t img = 0; img < images; ++img) avgPoolRequantScalar(q, in.data() + img * inBytes, ref[m].data() + img * outBytes);
        std::size_t same = 0, offTie = 0;
        int maxDiff = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
            const int diff = std::abs(want[i] - ref[m][i]);
            same += diff == 0;
            offTie += diff != 0 && !nearTie(exact[i]);
            maxDiff = std::max(maxDiff, diff);
        }
        const double agreement = static_cast<double>(same) / static_cast<double>(want.size());
        qInfo("rounding %s: %.4f %% equal to the float fake-quant, max %d step, %zu differences away from a tie",
              m == 0 ? "half to even" : "half up", 100.0 * agreement, maxDiff, offTie);
        QCOMPARE(offTie, std::size_t{0});
        QVERIFY(maxDiff <= kRequantTolerance);
        if (modes[m] == RoundMode::HalfEven && !ties) // what the engine uses
            QVERIFY2(agreement >= kMinElementAgreement, qPrintable(QString("agreement %1").arg(agreement)));
        for (Isa isa : fastIsas()) {
            q.isa = isa;
            std::vector<std::uint8_t> out(outBytes + 1, 0xEE);
            for (std::size_t img = 0; img < images; img += 37) {
                out[outBytes] = 0xEE;
                avgPoolRequant(q, in.data() + img * inBytes, out.data());
                for (std::size_t i = 0; i < outBytes; ++i)
                    QVERIFY2(out[i] == ref[m][img * outBytes + i], qPrintable(QString("%1: image %2 value %3: %4, scalar twin %5")
                                                                                   .arg(isaName(isa)).arg(img).arg(i).arg(out[i]).arg(ref[m][img * outBytes + i])));
                QCOMPARE(out[outBytes], std::uint8_t{0xEE});
            }
        }
    }
}

void TestInfer::graphModelsMatchFakeQuant_data()
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
    QTest::newRow("resnet8 preset int8 channel") << "resnet8" << "int8" << "channel" << "uint8" << 4 << false;
    QTest::newRow("mobilenet-tiny preset int8 channel") << "mobilenet-tiny" << "int8" << "channel" << "uint8" << 4 << false;
}

void TestInfer::graphModelsMatchFakeQuant()
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
        QVERIFY2(c.agreement >= kMinArgmaxAgreement, qPrintable(QString("%1: agreement %2\n%3").arg(isaName(isa)).arg(c.agreement).arg(c.report)));
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
    StoredActivationHooks hooks(q.exported);
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

void TestInfer::graphModelsRefuseClearly_data()
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

void TestInfer::graphModelsRefuseClearly()
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

void TestInfer::colourModelsMatchFakeQuant_data()
{
    QTest::addColumn<QString>("preset");
    QTest::newRow("resnet8, 3x20x20") << "resnet8";
    QTest::newRow("mobilenet-tiny, 3x20x20") << "mobilenet-tiny";
    QTest::newRow("lenet5, 3x20x20") << "lenet5";
}

// Colour input: three channels, each with its own normalisation (Dataset::normalization), through
// the engine's per-channel input table, against the fake-quant simulation and the float-input path.
void TestInfer::colourModelsMatchFakeQuant()
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

QTEST_GUILESS_MAIN(TestInfer)
#include "tst_infer.moc"
