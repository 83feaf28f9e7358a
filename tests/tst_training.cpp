// Trainer end to end: short Fashion-MNIST runs reach a stated accuracy, runs are reproducible
// (same seed, and 1 vs 2 threads), the stop token ends a run within one batch, and bad
// configurations are refused with ConfigError.
#include "data/dataset.h"
#include "nn/activations.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "train/loss.h"
#include "train/lr_schedule.h"
#include "train/trainer.h"
#include "util/errors.h"
#include "util/rng.h"

#include <QtTest>

#include "slow_tests.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <thread>

using namespace quantscope;

namespace {

// Measured on this machine (2 cores, 4000 train / 1000 test Fashion-MNIST images, Adam 1e-3,
// batch 64, 1 epoch, 2 threads; untrained: ~0.10): seed-cnn 0.77 (seed 1); mlp 0.725, 0.788,
// 0.731 for seeds 1-3 - the accuracy after only 63 steps swings by several points with the
// shuffle. The bounds sit below that spread, so a different shuffle passes while a broken
// layer, loss or optimizer (which stays near 0.10-0.50) does not.
constexpr double kSeedCnnMinAccuracy = 0.74;
constexpr double kMlpMinAccuracy = 0.70;
constexpr std::size_t kFashionTrain = 4000, kFashionTest = 1000;

// Synthetic 28x28 digits-like set: class k is a bright 6x6 block at its own place, on noise.
Dataset syntheticDataset(std::size_t nTrain, std::size_t nTest, std::uint64_t seed = 11)
{
    constexpr std::size_t H = 28, W = 28;
    Dataset d;
    d.name = "synthetic";
    d.classNames = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    Rng rng(seed);
    const auto fill = [&](LabeledImages& s, std::size_t n) {
        s.height = H;
        s.width = W;
        s.pixels.resize(n * H * W);
        s.labels.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            const auto k = static_cast<std::int32_t>(rng.below(10));
            s.labels[i] = k;
            std::uint8_t* img = s.pixels.data() + i * H * W;
            for (std::size_t j = 0; j < H * W; ++j) img[j] = static_cast<std::uint8_t>(rng.below(90));
            const std::size_t r0 = 3 + 13 * static_cast<std::size_t>(k / 5) + rng.below(3);
            const std::size_t c0 = 1 + 5 * static_cast<std::size_t>(k % 5) + rng.below(2);
            for (std::size_t r = r0; r < r0 + 6; ++r)
                for (std::size_t c = c0; c < c0 + 4; ++c) img[r * W + c] = static_cast<std::uint8_t>(160 + rng.below(96));
        }
    };
    fill(d.train, nTrain);
    fill(d.test, nTest);
    d.normalization = Normalization::uniform(0.2f, 0.25f, 1);
    return d;
}

// Records what the trainer reports; optionally stops or pauses at a given batch.
class Recorder : public TrainObserver {
public:
    std::optional<StartEvent> start;
    std::vector<BatchEvent> batches;
    std::vector<EpochEvent> epochs;
    std::optional<FinishEvent> finish;
    StopToken* token = nullptr;
    std::size_t stopAtBatch = 0;  // requestStop() from onBatch of this global step
    std::size_t pauseAtBatch = 0; // setPaused(true) from onBatch of this global step

    void onStart(const StartEvent& e) override { start = e; }
    void onBatch(const BatchEvent& e) override
    {
        batches.push_back(e);
        if (token && e.globalStep == stopAtBatch) token->requestStop();
        if (token && e.globalStep == pauseAtBatch) token->setPaused(true);
    }
    void onEpoch(const EpochEvent& e) override { epochs.push_back(e); }
    void onFinish(const FinishEvent& e) override { finish = e; }
};

bool sameBits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Everything a run produces that must be reproducible: per-batch losses, epoch metrics, the
// final parameters.
struct RunResult {
    std::vector<double> batchLosses;
    std::vector<double> epochMetrics;
    std::vector<std::vector<float>> params;
};

RunResult trainOnce(const Dataset& data, TrainConfig cfg)
{
    Recorder rec;
    Trainer t(std::move(cfg), data, &rec);
    t.run();
    RunResult r;
    for (const BatchEvent& b : rec.batches) r.batchLosses.push_back(b.loss);
    for (const EpochEvent& e : rec.epochs) {
        r.epochMetrics.insert(r.epochMetrics.end(), {e.trainLoss, e.trainAccuracy, e.testLoss, e.testAccuracy});
    }
    for (Param* p : t.model().params()) r.params.push_back(p->value.values());
    return r;
}

// "" when identical to the bit, else what differs first.
QString compareRuns(const RunResult& a, const RunResult& b)
{
    if (a.batchLosses.size() != b.batchLosses.size()) return "number of batches";
    for (std::size_t i = 0; i < a.batchLosses.size(); ++i)
        if (!sameBits(a.batchLosses[i], b.batchLosses[i]))
            return QString("loss of batch %1: %2 vs %3").arg(i + 1).arg(a.batchLosses[i], 0, 'g', 17).arg(b.batchLosses[i], 0, 'g', 17);
    for (std::size_t i = 0; i < a.epochMetrics.size(); ++i)
        if (!sameBits(a.epochMetrics[i], b.epochMetrics[i])) return QString("epoch metric %1").arg(i);
    if (a.params != b.params) return "final parameters";
    return {};
}

} // namespace

class TestTraining : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();

    void fashionReachesAccuracy_data();
    void fashionReachesAccuracy();

    void reproducible_data();
    void reproducible();

    void cosineScheduleFollowsClosedForm();
    void constantScheduleLeavesTheRateAlone();
    void stopFromObserverWithinOneBatch();
    void stopWhilePaused();

    void badConfigThrows_data();
    void badConfigThrows();
    void logitsModelTrainsWithCrossEntropy();
    void softmaxHeadLossIsExactWhereProbabilitiesUnderflow();

private:
    std::optional<Dataset> m_fashion;
    QString m_fashionError;
};

void TestTraining::initTestCase()
{
    if (!std::filesystem::exists(kDefaultDataDir)) {
        m_fashionError = QString("Fashion-MNIST not installed in %1 (Debian package dataset-fashion-mnist)").arg(kDefaultDataDir);
        return;
    }
    DatasetOptions opt;
    opt.dir = kDefaultDataDir;
    opt.trainLimit = kFashionTrain;
    opt.testLimit = kFashionTest;
    opt.seed = 1;
    m_fashion = Dataset::load(opt);
    QCOMPARE(m_fashion->train.size(), kFashionTrain);
    QCOMPARE(m_fashion->test.size(), kFashionTest);
}

void TestTraining::fashionReachesAccuracy_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<double>("minAccuracy");
    QTest::newRow("seed-cnn") << "seed-cnn" << kSeedCnnMinAccuracy;
    QTest::newRow("mlp") << "mlp" << kMlpMinAccuracy;
}

// One epoch of Adam 1e-3, batch 64 on 4000 Fashion-MNIST images.
void TestTraining::fashionReachesAccuracy()
{
    QS_SKIP_UNDER_SANITIZERS();
    QFETCH(QString, model);
    QFETCH(double, minAccuracy);
    if (!m_fashion) QSKIP(qPrintable(m_fashionError));
    TrainConfig cfg;
    cfg.model = model.toStdString();
    cfg.optimizer = "adam";
    cfg.lr = 1e-3f;
    cfg.batchSize = 64;
    cfg.epochs = 1;
    cfg.threads = 2;
    cfg.seed = 1;
    Recorder rec;
    Trainer t(cfg, *m_fashion, &rec);
    const FinishEvent fin = t.run();
    qInfo("%s: test accuracy %.4f, test loss %.4f, train loss %.4f, %.1f s", qPrintable(model), fin.testAccuracy,
          fin.testLoss, rec.epochs.empty() ? 0.0 : rec.epochs[0].trainLoss, fin.seconds);

    QVERIFY(!fin.stopped);
    QCOMPARE(fin.epochsDone, std::size_t(1));
    QVERIFY2(fin.testAccuracy >= minAccuracy,
             qPrintable(QString("test accuracy %1 < %2").arg(fin.testAccuracy).arg(minAccuracy)));
    // The events agree with the result, and the loss went down from chance (ln 10 = 2.30).
    QVERIFY(rec.start && rec.finish);
    QCOMPARE(rec.start->stepsPerEpoch, (kFashionTrain + 63) / 64);
    QCOMPARE(rec.batches.size(), rec.start->stepsPerEpoch);
    QCOMPARE(rec.epochs.size(), std::size_t(1));
    QCOMPARE(rec.epochs[0].testAccuracy, fin.testAccuracy);
    QVERIFY(rec.epochs[0].trainLoss < 1.0);
    QVERIFY(fin.testLoss < 1.0);
    const EvalResult again = evaluate(t.model(), *m_fashion, m_fashion->test, 250);
    QCOMPARE(again.accuracy, fin.testAccuracy); // evaluation does not depend on its batch size
}

void TestTraining::reproducible_data()
{
    QTest::addColumn<QString>("model");
    QTest::addColumn<int>("threadsA");
    QTest::addColumn<int>("threadsB");
    QTest::addColumn<int>("seedB");
    QTest::addColumn<bool>("expectSame");
    QTest::newRow("mlp, same seed, 2 threads twice") << "mlp" << 2 << 2 << 1 << true;
    QTest::newRow("mlp, 1 vs 2 threads") << "mlp" << 1 << 2 << 1 << true;
    QTest::newRow("seed-cnn-bn (conv, BN, dropout), 1 vs 2 threads") << "seed-cnn-bn" << 1 << 2 << 1 << true;
    QTest::newRow("lenet5 (padding, 2 pools), 1 vs 2 threads") << "lenet5" << 1 << 2 << 1 << true;
    // The comparison can tell runs apart: another seed gives another run.
    QTest::newRow("mlp, seed 1 vs seed 2 differ") << "mlp" << 2 << 2 << 2 << false;
}

// Same seed and data: bit-identical batch losses, metrics and final weights, whatever the
// thread count.
void TestTraining::reproducible()
{
    QFETCH(QString, model);
    QFETCH(int, threadsA);
    QFETCH(int, threadsB);
    QFETCH(int, seedB);
    QFETCH(bool, expectSame);
    // Under the sanitizer presets (QS_SANITIZER_RUN) 128 training images (8 steps) instead of 320
    // (20): the seed-cnn-bn row (two runs) outlasted QtTest's 25-min function timeout under TSan on
    // the shared machine (load ~10), with no report. Both thread counts and every layer still run.
    const std::size_t nTrain = quantscope::testing::sanitizerSlowdown() > 1.0 ? 128 : 320;
    const Dataset data = syntheticDataset(nTrain, 100);
    TrainConfig cfg;
    cfg.model = model.toStdString();
    cfg.epochs = 2;
    cfg.batchSize = 32;
    cfg.evalBatchSize = 64;
    cfg.seed = 1;
    cfg.threads = static_cast<std::size_t>(threadsA);
    const RunResult a = trainOnce(data, cfg);
    cfg.threads = static_cast<std::size_t>(threadsB);
    cfg.seed = static_cast<std::uint64_t>(seedB);
    const RunResult b = trainOnce(data, cfg);
    QCOMPARE(a.batchLosses.size(), 2 * nTrain / 32);
    const QString diff = compareRuns(a, b);
    if (expectSame)
        QVERIFY2(diff.isEmpty(), qPrintable(diff));
    else
        QVERIFY2(!diff.isEmpty(), "two seeds gave the same run");
}

// Cosine decay (SGDR without restarts, Loshchilov & Hutter 2017): lr_t = lr (1 + cos(pi t / T)) / 2
// over the run's T optimizer steps, t = 0 at the first. The formula at its landmarks, then the
// Trainer: each epoch's last step runs at the closed form, the first step at lr (so the first
// batch is the constant run's), and the runs part after it.
void TestTraining::cosineScheduleFollowsClosedForm()
{
    constexpr float lr = 0.004f;
    constexpr std::size_t T = 400;
    QCOMPARE(scheduledLearningRate(LrSchedule::Cosine, lr, 0, T), lr);
    QCOMPARE(scheduledLearningRate(LrSchedule::Cosine, lr, T / 2, T), lr / 2);
    QCOMPARE(scheduledLearningRate(LrSchedule::Cosine, lr, T / 4, T), static_cast<float>(lr * (2.0 + std::sqrt(2.0)) / 4.0));
    QCOMPARE(scheduledLearningRate(LrSchedule::Cosine, lr, 3 * T / 4, T), static_cast<float>(lr * (2.0 - std::sqrt(2.0)) / 4.0));
    QCOMPARE(scheduledLearningRate(LrSchedule::Cosine, lr, T, T), 0.0f);
    const float last = scheduledLearningRate(LrSchedule::Cosine, lr, T - 1, T);
    QVERIFY(last > 0.0f && last < 1e-4f * lr); // (1 + cos(pi (T-1)/T)) / 2 = 1.5e-5 at T = 400
    QCOMPARE(scheduledLearningRate(LrSchedule::Constant, lr, T - 1, T), lr);
    QCOMPARE(QString(lrScheduleName(parseLrSchedule("cosine"))), QString("cosine"));

    const Dataset data = syntheticDataset(320, 100);
    TrainConfig cfg;
    cfg.model = "mlp";
    cfg.epochs = 2;
    cfg.batchSize = 32; // 10 steps an epoch, T = 20
    cfg.lr = lr;
    cfg.lrSchedule = "cosine";
    Recorder rec;
    {
        Trainer t(cfg, data, &rec);
        t.run();
    }
    QVERIFY(rec.start);
    QCOMPARE(QString::fromStdString(rec.start->lrSchedule), QString("cosine"));
    QCOMPARE(rec.start->lr, double(lr));
    QCOMPARE(rec.epochs.size(), std::size_t(2));
    const double pi = 3.14159265358979323846;
    for (std::size_t e = 0; e < 2; ++e) {
        const double t = 10.0 * static_cast<double>(e + 1) - 1.0; // the epoch's last step
        const double expect = lr * 0.5 * (1.0 + std::cos(pi * t / 20.0));
        QVERIFY2(std::abs(rec.epochs[e].lr - expect) <= 1e-6 * expect,
                 qPrintable(QString("epoch %1: lr %2, closed form %3").arg(e + 1).arg(rec.epochs[e].lr).arg(expect)));
    }
    cfg.lrSchedule = "constant";
    const RunResult cosine = trainOnce(data, [&] { TrainConfig c = cfg; c.lrSchedule = "cosine"; return c; }());
    const RunResult constant = trainOnce(data, cfg);
    QVERIFY(sameBits(cosine.batchLosses.at(0), constant.batchLosses.at(0)));
    QVERIFY(sameBits(cosine.batchLosses.at(1), constant.batchLosses.at(1))); // step 1's update: both at lr
    QVERIFY(!compareRuns(cosine, constant).isEmpty());
}

// "constant" never touches the optimizer's rate: every epoch's last step ran at lr itself, to the
// bit (runs without a schedule are the runs from before schedules existed; the CLI A/B against the
// build before them is in docs/LEARNED_QUANTIZATION.md).
void TestTraining::constantScheduleLeavesTheRateAlone()
{
    const Dataset data = syntheticDataset(320, 100);
    TrainConfig cfg;
    cfg.model = "mlp";
    cfg.epochs = 2;
    cfg.batchSize = 32;
    cfg.optimizer = "sgd";
    cfg.momentum = 0.9f;
    cfg.lr = 0.0123f;
    QCOMPARE(cfg.lrSchedule, std::string("constant")); // the default
    Recorder rec;
    Trainer t(cfg, data, &rec);
    t.run();
    QCOMPARE(QString::fromStdString(rec.start->lrSchedule), QString("constant"));
    QCOMPARE(rec.epochs.size(), std::size_t(2));
    for (const EpochEvent& e : rec.epochs) QVERIFY(sameBits(e.lr, double(cfg.lr)));
}

// requestStop() from the observer: the batch in progress is the last one; no epoch is reported
// and the finish event says stopped.
void TestTraining::stopFromObserverWithinOneBatch()
{
    const Dataset data = syntheticDataset(640, 50);
    TrainConfig cfg;
    cfg.model = "mlp";
    cfg.epochs = 3;
    cfg.batchSize = 32;
    StopToken stop;
    Recorder rec;
    rec.token = &stop;
    rec.stopAtBatch = 3;
    Trainer t(cfg, data, &rec, &stop);
    const FinishEvent fin = t.run();
    QVERIFY(fin.stopped);
    QCOMPARE(rec.batches.size(), std::size_t(3));
    QVERIFY(rec.epochs.empty());
    QVERIFY(rec.finish);
    QVERIFY(rec.finish->stopped);
    QCOMPARE(fin.epochsDone, std::size_t(0));
    QVERIFY(std::isnan(fin.testAccuracy));

    // A stop during the second epoch keeps the first epoch's results.
    stop.reset();
    Recorder rec2;
    rec2.token = &stop;
    rec2.stopAtBatch = 20 + 5; // 640 / 32 = 20 steps per epoch
    Trainer t2(cfg, data, &rec2, &stop);
    const FinishEvent fin2 = t2.run();
    QVERIFY(fin2.stopped);
    QCOMPARE(rec2.batches.size(), std::size_t(25));
    QCOMPARE(rec2.epochs.size(), std::size_t(1));
    QCOMPARE(fin2.epochsDone, std::size_t(1));
    QCOMPARE(fin2.testAccuracy, rec2.epochs[0].testAccuracy);
}

// Paused training does no batches; a stop while paused ends the run; the run's time leaves the
// pause out (a run paused for minutes reported them as training time).
void TestTraining::stopWhilePaused()
{
    const Dataset data = syntheticDataset(640, 50);
    TrainConfig cfg;
    cfg.model = "mlp";
    cfg.batchSize = 32;
    StopToken stop;
    Recorder rec;
    rec.token = &stop;
    rec.pauseAtBatch = 2;
    std::thread stopper([&] {
        while (!stop.paused()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::this_thread::sleep_for(std::chrono::milliseconds(600));
        stop.requestStop();
    });
    Trainer t(cfg, data, &rec, &stop);
    const FinishEvent fin = t.run();
    stopper.join();
    QVERIFY(fin.stopped);
    QCOMPARE(rec.batches.size(), std::size_t(2)); // nothing ran during the 600 ms pause
    QVERIFY2(fin.seconds < 0.4, qPrintable(QString("%1 s for two batches of a 600 ms pause").arg(fin.seconds)));
}

void TestTraining::badConfigThrows_data()
{
    QTest::addColumn<QString>("field");
    QTest::addColumn<QString>("value");
    QTest::addColumn<QString>("says");
    QTest::newRow("epochs 0") << "epochs" << "0" << "epochs";
    QTest::newRow("unknown optimizer") << "optimizer" << "rmsprop" << "rmsprop";
    QTest::newRow("unknown model") << "model" << "resnet50" << "resnet50";
    QTest::newRow("batch size 0") << "batchSize" << "0" << "batch size";
    QTest::newRow("learning rate 0") << "lr" << "0" << "learning rate";
    QTest::newRow("learning rate nan") << "lr" << "nan" << "learning rate";
    QTest::newRow("threads 0") << "threads" << "0" << "threads";
    QTest::newRow("momentum 1") << "momentum" << "1" << "momentum";
    QTest::newRow("negative weight decay") << "weightDecay" << "-0.1" << "weight decay";
    QTest::newRow("unknown lr schedule") << "lrSchedule" << "step" << "learning-rate schedule 'step'";
    QTest::newRow("empty training set") << "data" << "empty" << "training set is empty";
    // A loaded model, --epochs 0: PTQ calibrates it; QAT has nothing to evaluate (it crashed)
    QTest::newRow("qat, 0 epochs, pretrained") << "qat0" << "" << "--strategy qat trains, so it needs at least 1 epoch";
    QTest::newRow("progressive, 0 epochs, pretrained") << "progressive0" << "" << "--strategy progressive trains";
}

void TestTraining::badConfigThrows()
{
    QFETCH(QString, field);
    QFETCH(QString, value);
    QFETCH(QString, says);
    Dataset data = syntheticDataset(64, 16);
    TrainConfig cfg;
    cfg.model = "mlp";
    const float f = value == "nan" ? std::numeric_limits<float>::quiet_NaN() : value.toFloat();
    if (field == "epochs") cfg.epochs = value.toULong();
    if (field == "optimizer") cfg.optimizer = value.toStdString();
    if (field == "model") cfg.model = value.toStdString();
    if (field == "batchSize") cfg.batchSize = value.toULong();
    if (field == "lr") cfg.lr = f;
    if (field == "threads") cfg.threads = value.toULong();
    if (field == "momentum") cfg.momentum = f;
    if (field == "weightDecay") cfg.weightDecay = f;
    if (field == "lrSchedule") cfg.lrSchedule = value.toStdString();
    if (field == "data") data.train = LabeledImages{1, 28, 28, {}, {}, {}};
    if (field == "qat0" || field == "progressive0") {
        cfg.epochs = 0;
        cfg.pretrained = true;
        cfg.modelFactory = [](const Shape& in, std::size_t classes, std::uint64_t seed) {
            return makeModel("mlp", in[0], in[1], in[2], classes, seed);
        };
        cfg.precision.strategy = field == "qat0" ? Strategy::Qat : Strategy::Progressive;
    }
    QString message;
    try {
        Trainer t(cfg, data);
        QFAIL("the trainer accepted the configuration");
    } catch (const ConfigError& e) {
        message = e.what();
    }
    QVERIFY2(message.contains(says), qPrintable(message));
}

// A classifier that outputs logits (the usual PyTorch model ending in a Linear, imported from
// ONNX) trains and evaluates with cross-entropy, one ending in LogSoftmax with NLL and one ending
// in Softmax (an exported PyTorch classifier whose forward returns probabilities) with the NLL of
// its probabilities: the same network each way gives the same losses (up to where the softmax's
// rounding falls) and learns.
// NLL on the logits themselves would be unbounded below: the loss ran to -167 and the accuracy
// fell to 16 % on an imported model before.
void TestTraining::logitsModelTrainsWithCrossEntropy()
{
    const Dataset data = syntheticDataset(640, 200);
    enum class Head { Logits, LogSoftmax, Softmax };
    const auto factory = [](Head head) -> ModelFactory {
        return [head](const Shape& input, std::size_t classes, std::uint64_t seed) {
            auto m = std::make_unique<Model>("tiny", input);
            m->add(std::make_unique<Flatten>("flatten"));
            m->add(std::make_unique<Linear>("fc1", input[0] * input[1] * input[2], 32));
            m->add(std::make_unique<ReLU>("relu"));
            m->add(std::make_unique<Linear>("fc2", 32, classes));
            if (head == Head::LogSoftmax) m->add(std::make_unique<LogSoftmax>("log_softmax"));
            if (head == Head::Softmax) m->add(std::make_unique<Softmax>("softmax"));
            m->initParams(seed);
            return m;
        };
    };
    TrainConfig cfg;
    cfg.model = "tiny";
    cfg.epochs = 3;
    cfg.batchSize = 32;
    cfg.evalBatchSize = 64;
    cfg.lr = 1e-3f;
    cfg.threads = 2;
    cfg.modelFactory = factory(Head::Logits);
    const RunResult logits = trainOnce(data, cfg);
    cfg.modelFactory = factory(Head::LogSoftmax);
    const RunResult logProbs = trainOnce(data, cfg);
    cfg.modelFactory = factory(Head::Softmax);
    const RunResult probs = trainOnce(data, cfg);
    QCOMPARE(logits.batchLosses.size(), logProbs.batchLosses.size());
    QCOMPARE(probs.batchLosses.size(), logProbs.batchLosses.size());
    for (std::size_t i = 0; i < logits.batchLosses.size(); ++i) {
        QVERIFY2(logits.batchLosses[i] > 0.0, qPrintable(QString("batch %1 loss %2").arg(i).arg(logits.batchLosses[i])));
        QVERIFY2(std::abs(logits.batchLosses[i] - logProbs.batchLosses[i]) <= 1e-3 * logProbs.batchLosses[i],
                 qPrintable(QString("batch %1: %2 vs %3").arg(i).arg(logits.batchLosses[i]).arg(logProbs.batchLosses[i])));
        QVERIFY2(std::abs(probs.batchLosses[i] - logProbs.batchLosses[i]) <= 1e-3 * logProbs.batchLosses[i],
                 qPrintable(QString("Softmax head, batch %1: %2 vs %3").arg(i).arg(probs.batchLosses[i]).arg(logProbs.batchLosses[i])));
    }
    QVERIFY2(std::abs(probs.epochMetrics.back() - logProbs.epochMetrics.back()) <= 0.02,
             qPrintable(QString("Softmax head test accuracy %1 vs %2").arg(probs.epochMetrics.back()).arg(logProbs.epochMetrics.back())));
    // epoch metrics: train loss, train accuracy, test loss, test accuracy
    const std::size_t last = logits.epochMetrics.size() - 4;
    QVERIFY(logits.epochMetrics[last + 2] > 0.0);
    QVERIFY2(std::abs(logits.epochMetrics[last + 2] - logProbs.epochMetrics[last + 2]) < 1e-3,
             qPrintable(QString("test loss %1 vs %2").arg(logits.epochMetrics[last + 2]).arg(logProbs.epochMetrics[last + 2])));
    QVERIFY2(logits.epochMetrics[last + 3] > 0.7, qPrintable(QString("test accuracy %1").arg(logits.epochMetrics[last + 3])));
    QVERIFY(logits.batchLosses.back() < logits.batchLosses.front());
}

// A Softmax head's loss is cross-entropy on its input, also where scores hundreds apart make the
// true class's probability underflow (the NLL of max(p, FLT_MIN) stopped at 87.3): the same loss
// and the same gradients as the model without the head, trained on its logits.
void TestTraining::softmaxHeadLossIsExactWhereProbabilitiesUnderflow()
{
    const auto make = [](bool head) {
        auto m = std::make_unique<Model>("wide", Shape{1, 4, 4});
        m->add(std::make_unique<Flatten>("flatten"));
        m->add(std::make_unique<Linear>("fc", 16, 5));
        if (head) m->add(std::make_unique<Softmax>("softmax"));
        m->initParams(7);
        for (float& w : m->params()[0]->value.values()) w *= 400.0f; // scores hundreds apart
        return m;
    };
    auto logits = make(false), probs = make(true);
    Rng rng(3);
    Tensor x({6, 1, 4, 4});
    for (float& v : x.values()) v = rng.uniform(-1.0f, 1.0f);
    const std::vector<std::int32_t> y = {0, 1, 2, 3, 4, 0};
    RunContext ctx;
    ctx.training = true;
    Tensor gLogits, gProbs;
    const ModelLoss a = modelClassificationLoss(*logits, logits->forward(x, ctx), y, gLogits);
    const ModelLoss b = modelClassificationLoss(*probs, probs->forward(x, ctx), y, gProbs);
    QVERIFY(!a.beforeHead);
    QVERIFY(b.beforeHead);
    QVERIFY2(a.loss > 100.0f, qPrintable(QString::number(a.loss))); // past what -log(FLT_MIN) can say
    QCOMPARE(b.loss, a.loss);
    logits->backward(gLogits);
    probs->backward(gProbs, nullptr, true);
    for (std::size_t k = 0; k < logits->params().size(); ++k)
        QCOMPARE(probs->params()[k]->grad.values(), logits->params()[k]->grad.values());
    // A head that does not read the layer before it alone cannot be skipped.
    QVERIFY_THROWS_EXCEPTION(ConfigError, logits->backward(gLogits, nullptr, true));
}

QTEST_GUILESS_MAIN(TestTraining)
#include "tst_training.moc"
