// Shared by the integer engine's tests (tst_infer: kernels against their scalar twins and the
// fake-quant arithmetic; tst_infer_models: whole models against the simulation they were
// exported from): tolerances, comparisons of the engine with the simulation, and small graphs.
#pragma once

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

namespace infer_fixtures {

using namespace quantscope;


constexpr double kMinArgmaxAgreement = 0.995; // issue 5: engine vs fake-quant on the test set
constexpr double kMaxAccuracyGapPoints = 0.3; // top-1 of engine vs fake-quant, percentage points
constexpr int kRequantTolerance = 1;         // fixed point vs exact rounding, in output steps
constexpr double kTieMargin = 1e-6;          // away from .5 the fixed-point result is exact
constexpr double kMinElementAgreement = 0.999; // Add / pooling integers vs the float fake-quant
constexpr double kNearTie = 1e-4;             // |fraction - 0.5| below which float noise decides a rounding
constexpr int kMaxPointDiff = 1;               // engine vs fake-quant integers at any point, in steps

// Within float noise of half-way between two integers (where the float reference may round either way).
inline bool nearTie(double x)
{
    const double f = x - std::floor(x);
    return std::abs(f - 0.5) < kNearTie;
}

inline std::vector<Isa> fastIsas()
{
    std::vector<Isa> v;
    for (Isa i : {Isa::Avx2, Isa::Avx512Vnni})
        if (isaSupported(i)) v.push_back(i);
    return v;
}

// The model activation holding the values of the engine's point named `layer`: that layer's
// output, or for a convolution folded with its BatchNorm the BatchNorm's.
inline std::size_t modelActivationOf(const Model& model, const std::string& layer)
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
inline std::optional<Divergence> firstDivergence(const IntEngine& engine, Model& model, LayerHooks* sim, const Dataset& data,
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

inline Comparison compareWithSim(Model& model, QuantSim& sim, const ExportedModel& em, const Dataset& data, Isa isa)
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
inline PointStats comparePoints(const IntEngine& engine, Model& model, LayerHooks* sim, const Dataset& data, std::size_t count)
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
inline PointStats comparePointsLocally(const IntEngine& engine, Model& model, LayerHooks& sim, const Dataset& data, std::size_t count)
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
inline void randomizeBatchNorms(Model& m, std::uint64_t seed)
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
inline std::unique_ptr<Model> tinyResidual()
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
inline std::unique_ptr<Model> tinyDepthwise()
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
inline std::unique_ptr<Model> tinyPaddedPools()
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

// BatchNorms no convolution absorbs: one on the input, the pre-activation block's (He et al.
// 2016: BN -> ReLU -> conv, its conv read by the residual Add too) and one after a ReLU. Integer
// export stores each as a depthwise 1x1 convolution (tester 11: none could be exported).
inline std::unique_ptr<Model> tinyPreact()
{
    auto m = std::make_unique<Model>("tiny-preact", Shape{1, 28, 28});
    std::size_t x = m->add(std::make_unique<BatchNorm2d>("bn_in", 1));
    x = m->add(std::make_unique<Conv2d>("conv1", 1, 8, 3, 1, 1), {x});
    std::size_t y = m->add(std::make_unique<BatchNorm2d>("a.bn1", 8), {x});
    y = m->add(std::make_unique<ReLU>("a.relu1"), {y});
    y = m->add(std::make_unique<Conv2d>("a.conv1", 8, 8, 3, 1, 1, 1, false), {y});
    y = m->add(std::make_unique<BatchNorm2d>("a.bn2", 8), {y});
    y = m->add(std::make_unique<ReLU>("a.relu2"), {y});
    y = m->add(std::make_unique<Conv2d>("a.conv2", 8, 8, 3, 1, 1), {y});
    x = m->add(std::make_unique<Add>("a.add"), {y, x});
    x = m->add(std::make_unique<ReLU>("relu3"), {x});
    x = m->add(std::make_unique<BatchNorm2d>("bn_after_relu", 8), {x});
    m->add(std::make_unique<GlobalAvgPool2d>("gap"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 8, 10));
    m->initParams(13);
    randomizeBatchNorms(*m, 14);
    return m;
}

inline std::unique_ptr<Model> graphModel(const QString& name)
{
    if (name == "tiny-preact") return tinyPreact();
    if (name == "tiny-padded-pools") return tinyPaddedPools();
    if (name == "tiny-residual") return tinyResidual();
    if (name == "tiny-depthwise") return tinyDepthwise();
    return makeModel(name.toStdString(), 1, 28, 28, 10, 3);
}

// The fake-quant of one value, as fakeQuantizeRun computes it.
inline int fakeQuantInt(float v, float scale, int zp, int qmin, int qmax)
{
    float q = std::nearbyint(v * (1.0f / scale)) + static_cast<float>(zp);
    q = std::clamp(q, static_cast<float>(qmin), static_cast<float>(qmax));
    return static_cast<int>(q);
}


} // namespace infer_fixtures
