// Where a training step of a preset goes, layer by layer: one arena of --threads threads, a batch
// of 64 random images, and for every layer the fastest of --reps calls of its forward (training
// mode), its backward, and its backward without the input gradient (for a convolution: the weight
// gradient alone). Fastest, not median: on a shared 2-core VM the minimum is what the code costs;
// contention only adds. The layers run unfused here (the model fuses conv/BN + ReLU), so the sum
// differs a little from the step time printed first (Model::forward + backward, fused, median). A
// ReLU that the model runs inside the conv or BatchNorm before it has no activation of its own and
// shows an empty output and zero times; its cost is in that layer's fused step, not in its row.
//
// --bf16 PATH (amx-bf16, avx512-bf16) runs the conv and fc products on that bf16 path, as mixed
// and low-precision bf16 training do (without their rounding passes; the convolutions where
// Conv2d::bf16ProductsPay, as the trainer chooses them). --hooks FORMAT adds those:
// the step runs with FloatSim's hooks (setModel, rounding to nearest), as mixed training runs it.
// --compare-layer-rounding 1 then alternates its steps with steps whose hooks round everything in
// passes of their own (FloatSim::setLayerRounding off; the same bits) and prints both medians.
//
// The "model" columns are each layer's mean time inside the timed steps (Model::setLayerTimes):
// with the model's fusion and its activations' real cache state. --layers 0 prints only those (and
// the steps), without the layer-by-layer calls.
//
// --qat FORMAT runs the steps as QAT trains them (QuantSim, channel-wise weights, uint8
// activations, the integer products where they apply): quantizeWeights before each step and
// maskWeightGradients after it, whose times print on a line of their own.
//
// --trans-add picks the FP32 weight gradient's kernel (conv_direct::TransAddKernel; default: this
// CPU's, conv_direct::defaultTransAddKernel).
//   build/release/tests/bench/bench_model_layers [--model NAME] [--threads N] [--reps N] [--bf16 PATH] [--layers 0|1]
//                                                [--only LAYER] [--trans-add pixels|channels] [--hooks bf16 [--compare-layer-rounding 1]] [--qat int8]
// --only LAYER times that layer alone (with --layers 1): a profiler then sees its passes only.
#include "nn/conv2d.h"
#include "nn/conv_direct.h"
#include "nn/layer.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "train/float_sim.h"
#include "train/precision_config.h"
#include "train/quant_sim.h"
#include "util/rng.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace quantscope;

namespace {

double nowMs()
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double fastest(std::vector<double> v) { return *std::min_element(v.begin(), v.end()); }

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

Tensor filled(const Shape& shape, float value)
{
    Tensor t(shape);
    std::fill(t.values().begin(), t.values().end(), value);
    return t;
}

} // namespace

int main(int argc, char** argv)
{
    std::string preset = "resnet8";
    int threads = 2, reps = 20;
    const char* only = nullptr; // --only NAME: time that layer alone (with --layers 1), for a profiler
    Bf16Path bf16 = Bf16Path::Emulated;
    bool layers = true;
    std::string hooks; // --hooks FORMAT: FloatSim's rounding, as mixed training runs the step
    bool compareLayerRounding = false;
    std::string qat; // --qat FORMAT: QuantSim's hooks, as QAT training runs the step
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--model")) preset = argv[i + 1];
        else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
        else if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
        else if (!std::strcmp(argv[i], "--bf16")) bf16 = parseBf16Path(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--layers")) layers = std::atoi(argv[i + 1]) != 0;
        else if (!std::strcmp(argv[i], "--hooks")) hooks = argv[i + 1];
        else if (!std::strcmp(argv[i], "--qat")) qat = argv[i + 1];
        else if (!std::strcmp(argv[i], "--compare-layer-rounding")) compareLayerRounding = std::atoi(argv[i + 1]) != 0;
        else if (!std::strcmp(argv[i], "--trans-add"))
            conv_direct::setTransAddKernel(!std::strcmp(argv[i + 1], "channels") ? conv_direct::TransAddKernel::Channels
                                                                                 : conv_direct::TransAddKernel::Pixels);
        else {
            std::fprintf(stderr, "usage: %s [--model NAME] [--threads N] [--reps N] [--bf16 PATH] [--layers 0|1] [--only LAYER] [--trans-add pixels|channels] [--hooks FORMAT [--compare-layer-rounding 1]] [--qat FORMAT]\n", argv[0]);
            return 2;
        }
    }
    tbb::task_arena arena(threads);
    arena.execute([&] {
        auto model = makeModel(preset);
        model->initParams(1);
        model->setFusion(true);
        for (std::size_t i = 0; i < model->size(); ++i) {
            if (auto* c = dynamic_cast<Conv2d*>(&model->layer(i))) c->setBf16Products(c->bf16ProductsPay() ? bf16 : Bf16Path::Emulated);
            else if (auto* f = dynamic_cast<Linear*>(&model->layer(i))) f->setBf16Products(bf16);
        }
        const std::size_t N = 64;
        Shape in{N};
        for (std::size_t d : model->inputShape()) in.push_back(d);
        Tensor x(in);
        Rng rng(1);
        for (float& v : x.values()) v = rng.uniform(0.0f, 1.0f);
        RunContext ctx;
        ctx.training = true;
        // With --hooks, the rounding of mixed training (FloatSim after setModel, rounded to nearest);
        // with --compare-layer-rounding, steps alternate with a FloatSim whose layers leave every
        // rounding to the hooks' own passes (setLayerRounding off): the same bits, in one process.
        std::unique_ptr<FloatSim> sim, simPasses;
        if (!hooks.empty()) {
            sim = std::make_unique<FloatSim>(findFormat(hooks), Rounding::Nearest);
            sim->setModel(*model);
            if (compareLayerRounding) {
                simPasses = std::make_unique<FloatSim>(findFormat(hooks), Rounding::Nearest);
                simPasses->setLayerRounding(false);
                simPasses->setModel(*model);
            }
        }
        std::unique_ptr<QuantSim> qsim;
        std::string qatCompute;
        if (!qat.empty()) {
            PrecisionConfig pc;
            pc.strategy = Strategy::Qat;
            pc.format = qat;
            qsim = std::make_unique<QuantSim>(*model, pc, findFormat(qat));
            qatCompute = qsim->enableIntegerProducts();
            qsim->setObserving(true);
        }
        LayerHooks* stepHooks = qsim ? static_cast<LayerHooks*>(qsim.get()) : sim.get();
        std::vector<double> quantizeMs, maskMs;
        std::vector<double> passesStep;
        std::vector<double> step, fwd;
        Model::LayerTimes inModel;
        const int modelReps = only ? 1 : reps; // --only: the model's steps are not what is profiled
        for (int r = 0; r < modelReps + 3; ++r) {
            if (r == 3) model->setLayerTimes(&inModel); // after the warm-up steps
            const auto passesStepRun = [&] { // the hooks' passes, alternating with the timed configuration
                if (!simPasses) return;
                const double p0 = nowMs();
                const Tensor& yp = model->forward(x, ctx, simPasses.get());
                model->backward(filled(yp.shape(), 1e-3f), simPasses.get());
                if (r >= 3) passesStep.push_back(nowMs() - p0);
            };
            if (r % 2 == 0) passesStepRun(); // either goes first every other step
            const double q0 = nowMs();
            if (qsim) qsim->quantizeWeights(Rounding::Nearest, 0);
            const double t0 = nowMs();
            const Tensor& y = model->forward(x, ctx, stepHooks);
            const double t1 = nowMs();
            model->backward(filled(y.shape(), 1e-3f), stepHooks);
            const double t2 = nowMs();
            if (qsim) qsim->maskWeightGradients();
            const double t3 = nowMs();
            if (r >= 3) step.push_back(t2 - t0), fwd.push_back(t1 - t0); // 3 warm-up steps
            if (r >= 3 && qsim) quantizeMs.push_back(t0 - q0), maskMs.push_back(t3 - t2);
            if (r % 2 == 1) passesStepRun();
        }
        if (simPasses)
            std::printf("hooks %s: step %.2f ms with the layers rounding, %.2f ms with the hooks' passes (medians, alternating)\n",
                        hooks.c_str(), median(step), median(passesStep));
        if (qsim)
            std::printf("qat %s (%s): quantizeWeights %.3f ms, maskWeightGradients %.3f ms a step (medians; not in the step below)\n",
                        qat.c_str(), qatCompute.c_str(), median(quantizeMs), median(maskMs));
        std::printf("%s, batch %zu, %d threads: step %.2f ms (forward %.2f), median of %d -> %.0f img/s; fastest %.2f ms (forward %.2f)\n",
                    (preset + (bf16 == Bf16Path::Emulated ? "" : std::string(" ") + bf16PathName(bf16))).c_str(), N, threads, median(step), median(fwd), modelReps, N * 1000.0 / median(step), fastest(step), fastest(fwd));
        model->setLayerTimes(nullptr);
        // The layers alone read every activation: a fused pass leaves those of the layers it ran
        // inside others empty (seed-cnn's pooled ReLU), so one unfused forward lays them all out.
        model->setFusion(false);
        model->forward(x, ctx);
        const auto meanIn = [&](const std::vector<double>& v, std::size_t i, std::size_t passes) {
            return i < v.size() && passes ? v[i] / static_cast<double>(passes) : 0.0;
        };
        std::printf("%-4s %-22s %9s %9s %13s %9s %9s  %s\n", "#", "layer", "fwd ms", "bwd ms", "bwd no dx ms", "model fwd",
                    "model bwd", "output");
        double sumF = 0.0, sumB = 0.0, sumMF = 0.0, sumMB = 0.0;
        for (std::size_t i = 0; i < model->size(); ++i) {
            Layer& l = model->layer(i);
            if (only && l.name() != only) continue;
            const std::vector<std::size_t>& ins = model->inputsOf(i);
            std::vector<const Tensor*> xs;
            for (std::size_t a : ins) xs.push_back(&model->activation(a));
            Tensor y, dx;
            std::vector<Tensor> dxs(ins.size());
            std::vector<double> f, b, w;
            for (int r = 0; r < (layers ? reps : 0); ++r) {
                double t0 = nowMs();
                if (ins.size() == 1) l.forward(*xs[0], y, ctx);
                else l.forwardMulti(xs, y, ctx);
                f.push_back(nowMs() - t0);
                const Tensor dy = filled(y.shape(), 1e-3f);
                t0 = nowMs();
                if (ins.size() == 1) {
                    l.backward(*xs[0], y, dy, dx, ins[0] != 0);
                } else {
                    std::vector<Tensor*> slots;
                    for (Tensor& t : dxs) slots.push_back(&t);
                    l.backwardMulti(xs, y, dy, slots);
                }
                b.push_back(nowMs() - t0);
                t0 = nowMs();
                if (ins.size() == 1) l.backward(*xs[0], y, dy, dx, false);
                w.push_back(nowMs() - t0);
            }
            const double mf = meanIn(inModel.forwardMs, i, inModel.forwardPasses), mb = meanIn(inModel.backwardMs, i, inModel.backwardPasses);
            sumF += layers ? fastest(f) : 0.0;
            sumB += layers ? fastest(b) : 0.0;
            sumMF += mf;
            sumMB += mb;
            if (layers)
                std::printf("%-4zu %-22s %9.3f %9.3f %13.3f %9.3f %9.3f  %s\n", i, l.name().c_str(), fastest(f), fastest(b),
                            ins.size() == 1 ? fastest(w) : 0.0, mf, mb, shapeString(y.shape()).c_str());
            else
                std::printf("%-4zu %-22s %9s %9s %13s %9.3f %9.3f\n", i, l.name().c_str(), "-", "-", "-", mf, mb);
        }
        if (layers) std::printf("sum of the fastest calls: forward %.2f ms, backward %.2f ms\n", sumF, sumB);
        std::printf("sum in the model (mean of the timed steps): forward %.2f ms, backward %.2f ms\n", sumMF, sumMB);
    });
    return 0;
}
