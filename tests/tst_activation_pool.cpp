// Model::forward's pool of released activation buffers (RunContext::releaseActivations:
// evaluation, calibration, the analyses). A releasing pass frees each activation once its last
// reader has run, into a pool that its later layers and the next releasing pass write into. What a
// user would notice if it broke: different predictions, an evaluation that reallocates (and
// zero-fills) every activation of every batch, or one that holds all of a model's activations.
//
// This executable replaces the global operator new to record the largest allocation made while a
// pass runs (the only unit that does).
#include "nn/model.h"
#include "nn/model_zoo.h"
#include "util/rng.h"

#include "test_tensors.h"

#include <tbb/task_arena.h> // before QtTest: Qt's emit macro breaks TBB's headers

#include <QtTest>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

namespace {
std::atomic<bool> g_tracking{false};
std::atomic<std::size_t> g_largest{0};

void noteAllocation(std::size_t n)
{
    if (!g_tracking.load(std::memory_order_relaxed)) return;
    std::size_t seen = g_largest.load(std::memory_order_relaxed);
    while (n > seen && !g_largest.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
}
} // namespace

void* operator new(std::size_t n)
{
    noteAllocation(n);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace quantscope;
using namespace quantscope::testing;

class TestActivationPool : public QObject {
    Q_OBJECT
private slots:
    void releasingPassesReuseBuffers_data();
    void releasingPassesReuseBuffers();
    void trainingDropsThePool();

private:
    void releasingPassesOnOneThread();
};

void TestActivationPool::releasingPassesReuseBuffers_data()
{
    QTest::addColumn<QString>("preset");
    QTest::addColumn<bool>("fused");
    for (const char* p : {"resnet8", "mobilenet-tiny", "seed-cnn", "lenet5"})
        for (bool fused : {false, true}) QTest::newRow((std::string(p) + (fused ? ", fused" : "")).c_str()) << p << fused;
}

// Batches of 32, 32, 32, 7, 32 and 32 images: each output is bit-identical to a fresh model's
// that keeps every activation; from the third batch on, nothing is allocated of half the largest
// activation's size or more (the smaller batch included); and between batches the pool holds far less than all the
// activations of a batch of 32.
// On one thread: each thread's scratch (threadBuffer) grows the first time that thread runs a
// layer's image group, and on two threads under load a worker may first run one in the third batch
// (resnet8's phase runs, 921,600 bytes: 4 of 40 runs with both cores busy). The pool does not
// depend on the thread count.
void TestActivationPool::releasingPassesReuseBuffers()
{
    tbb::task_arena(1).execute([this] { releasingPassesOnOneThread(); });
}

void TestActivationPool::releasingPassesOnOneThread()
{
    QFETCH(QString, preset);
    QFETCH(bool, fused);
    auto keeping = makeModel(preset.toStdString());
    auto releasing = makeModel(preset.toStdString());
    keeping->setFusion(fused); // the trainer's evaluations run fused (Model::setFusion)
    releasing->setFusion(fused);
    RunContext release;
    release.releaseActivations = true;
    Rng rng(5);
    const std::vector<std::size_t> batches{32, 32, 32, 7, 32, 32};
    std::size_t allActivations = 0; // of a batch of 32
    for (const Shape& s : releasing->activationShapes(32)) allActivations += shapeNumel(s) * sizeof(float);
    for (std::size_t b = 0; b < batches.size(); ++b) {
        const Tensor x = randomTensor({batches[b], 1, 28, 28}, rng);
        const Tensor expected = keeping->forward(x, RunContext{});
        std::size_t largestActivation = 0;
        for (const Shape& s : releasing->activationShapes(batches[b]))
            largestActivation = std::max(largestActivation, shapeNumel(s) * sizeof(float));
        g_largest = 0;
        g_tracking = true;
        const Tensor& out = releasing->forward(x, release);
        g_tracking = false;
        QVERIFY2(bitIdentical(expected, out), qPrintable(QString("batch %1").arg(b)));
        if (b >= 2) // from the third pass on (Model::forward)
            QVERIFY2(g_largest < largestActivation / 2,
                     qPrintable(QString("batch %1 allocated %2 bytes (largest activation %3)").arg(b).arg(g_largest.load()).arg(largestActivation)));
        const std::size_t pooled = releasing->pooledActivationBytes();
        QVERIFY2(pooled > 0, "nothing pooled for the next batch");
        QVERIFY2(pooled < allActivations * 3 / 4,
                 qPrintable(QString("batch %1: %2 bytes pooled of %3 in all").arg(b).arg(pooled).arg(allActivations)));
        for (std::size_t a = 0; a + 1 < releasing->size(); ++a)
            QVERIFY2(releasing->activation(a).empty(), qPrintable(QString("activation %1 kept").arg(a)));
    }
}

// A training forward keeps every activation for backward: the pooled buffers go first, and the
// next releasing pass is still right.
void TestActivationPool::trainingDropsThePool()
{
    auto m = makeModel("resnet8");
    auto keeping = makeModel("resnet8");
    Rng rng(9);
    const Tensor x = randomTensor({16, 1, 28, 28}, rng);
    RunContext release;
    release.releaseActivations = true;
    m->forward(x, release);
    QVERIFY(m->pooledActivationBytes() > 0);
    RunContext training;
    training.training = true;
    m->forward(x, training);
    keeping->forward(x, training);
    QCOMPARE(m->pooledActivationBytes(), std::size_t{0});
    for (std::size_t a = 0; a <= m->size(); ++a) // fused-away outputs aside, every activation is there
        QCOMPARE(m->activation(a).empty(), keeping->activation(a).empty());
    const Tensor expected = keeping->forward(x, RunContext{});
    QVERIFY(bitIdentical(expected, m->forward(x, release)));
}

QTEST_GUILESS_MAIN(TestActivationPool)
#include "tst_activation_pool.moc"
