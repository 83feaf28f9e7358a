// The training loss functions and optimizers against PyTorch's reference vectors (tests/data):
// log_softmax + nll_loss (and the fused cross-entropy), mse_loss, and several steps of
// torch.optim.Adam (AMSGrad, weight decay) and SGD with momentum, dampening, Nesterov.
#include "nn/activations.h"
#include "train/loss.h"
#include "train/optimizer.h"

#include "test_tensors.h" // before Qt: TBB's profiling.h has a member named emit

#include "golden.h"

#include <QtTest>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

using namespace quantscope;
using namespace quantscope::testing;

namespace {

// Floats in the files round-trip float32 exactly; what remains is the summation order.
constexpr double kRefAtol = 1e-5; // gradients of magnitude ~1
constexpr double kRefRtol = 1e-5;
constexpr double kRefLossRtol = 1e-6;    // scalar mean losses
constexpr double kOptimAtol = 1e-7;      // three optimizer steps on parameters of magnitude ~0.5
constexpr double kOptimRtol = 1e-6;
constexpr double kCrossEntropyVsNllAtol = 1e-6; // two float routes to the same loss gradient

} // namespace

class TestTrainingGolden : public QObject {
    Q_OBJECT

private slots:
    void goldenLogSoftmaxNll_data() { golden::rowsFor({"log_softmax_nll_mean"}); }
    void goldenLogSoftmaxNll();
    void goldenMse_data() { golden::rowsFor({"mse_mean"}); }
    void goldenMse();
    void goldenOptimizer_data() { golden::rowsFor({"adam", "sgd_momentum"}); }
    void goldenOptimizer();
};

void TestTrainingGolden::goldenLogSoftmaxNll()
{
    QS_FETCH_GOLDEN(g);
    const Tensor& logits = g.in("logits");
    const std::vector<std::int32_t> target = g.intInput("target");
    LogSoftmax ls("log_softmax");
    RunContext ctx;
    ctx.training = true;
    Tensor logp, dlogp, dlogits;
    ls.forward(logits, logp, ctx);
    const float loss = nllLoss(logp, target, dlogp);
    QVERIFY2(std::abs(loss - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("loss %1, expected %2").arg(loss, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    ls.backward(logits, logp, dlogp, dlogits, true);
    QS_COMPARE_TENSORS(dlogits, g.out("grad_logits"), kRefAtol, kRefRtol);

    // The fused cross-entropy is the same function.
    Tensor dce;
    const float ce = crossEntropyLoss(logits, target, dce);
    QVERIFY2(std::abs(ce - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("cross-entropy %1, expected %2").arg(ce, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    QS_COMPARE_TENSORS(dce, g.out("grad_logits"), kRefAtol, kRefRtol);
    QS_COMPARE_TENSORS(dce, dlogits, kCrossEntropyVsNllAtol, 0.0);
}

void TestTrainingGolden::goldenMse()
{
    QS_FETCH_GOLDEN(g);
    Tensor grad;
    const float loss = mseLoss(g.in("pred"), g.in("target"), grad);
    QVERIFY2(std::abs(loss - g.scalar("loss")) <= kRefLossRtol * std::abs(g.scalar("loss")),
             qPrintable(QString("loss %1, expected %2").arg(loss, 0, 'g', 9).arg(g.scalar("loss"), 0, 'g', 9)));
    QS_COMPARE_TENSORS(grad, g.out("grad_pred"), kRefAtol, kRefRtol);
}

// Steps with grad0, grad1, ... from p0; the result after K steps is pK.
void TestTrainingGolden::goldenOptimizer()
{
    QS_FETCH_GOLDEN(g);
    std::unique_ptr<Optimizer> opt;
    if (g.op == "adam") {
        AdamOptions o; // PyTorch's defaults where the case names none
        o.lr = g.params.value("lr", o.lr);
        if (g.params.contains("betas")) {
            o.beta1 = g.params.at("betas").at(0).get<float>();
            o.beta2 = g.params.at("betas").at(1).get<float>();
        }
        o.eps = g.params.value("eps", o.eps);
        o.weightDecay = g.params.value("weight_decay", o.weightDecay);
        o.amsgrad = g.params.value("amsgrad", o.amsgrad);
        opt = std::make_unique<Adam>(o);
    } else {
        QCOMPARE(QString::fromStdString(g.op), QString("sgd_momentum"));
        SgdOptions o;
        o.lr = g.params.at("lr").get<float>();
        o.momentum = g.params.value("momentum", o.momentum);
        o.dampening = g.params.value("dampening", o.dampening);
        o.weightDecay = g.params.value("weight_decay", o.weightDecay);
        o.nesterov = g.params.value("nesterov", o.nesterov);
        opt = std::make_unique<Sgd>(o);
    }
    Param p;
    p.name = "weight";
    p.value = g.in("p0");
    const std::vector<Param*> params = {&p};
    int steps = 0;
    for (; g.inputs.count("grad" + std::to_string(steps)); ++steps) {
        p.grad = g.in("grad" + std::to_string(steps));
        opt->step(params);
    }
    QVERIFY(steps >= 1);
    QS_COMPARE_TENSORS(p.value, g.out("p" + std::to_string(steps)), kOptimAtol, kOptimRtol);
}

QTEST_GUILESS_MAIN(TestTrainingGolden)
#include "tst_training_golden.moc"
