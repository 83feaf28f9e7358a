#include "training_worker.h"

#include "train/ptq_refine.h"

#include "core_message.h"
#include "quant_catalog.h"
#include "tsan_handoff.h"

#include "analysis/engine_eval.h"

#include <QCoreApplication>

#include <algorithm>
#include <chrono>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace quantscope {

namespace {

// Runs on the training thread: turns observer calls into the worker's signals. Batch events are
// buffered and sent at most every `throttleMs` (the first one at once), so a fast trainer cannot
// flood the GUI thread's event queue; nothing is dropped.
class SignalObserver final : public TrainObserver {
public:
    SignalObserver(TrainingWorker& worker, int runId, int throttleMs)
        : m_worker(worker), m_runId(runId), m_throttle(std::chrono::milliseconds(throttleMs))
    {
    }

    void onStart(const StartEvent& e) override { QS_TSAN_HANDOFF(), emit m_worker.started(m_runId, e), QS_TSAN_HANDOFF(); }

    void onBatch(const BatchEvent& e) override
    {
        m_pending.push_back(e);
        const auto now = Clock::now();
        if (m_first || now - m_lastFlush >= m_throttle) flush(now);
    }

    void onEpoch(const EpochEvent& e) override
    {
        flush(Clock::now());
        QS_TSAN_HANDOFF(), emit m_worker.epochDone(m_runId, e), QS_TSAN_HANDOFF();
    }

    void onLayerStats(const std::vector<LayerStats>& stats) override { QS_TSAN_HANDOFF(), emit m_worker.layerStats(m_runId, stats), QS_TSAN_HANDOFF(); }
    void onStepSizes(const StepSizeEvent& e) override { QS_TSAN_HANDOFF(), emit m_worker.stepSizes(m_runId, e), QS_TSAN_HANDOFF(); }

    // PTQ refinement (AdaRound, bias correction): a status line and the share done, throttled.
    void onPtqProgress(const PtqProgressEvent& e) override
    {
        const auto now = Clock::now();
        const bool last = e.iteration == e.iterations && e.layerIndex == e.layers;
        if (!last && now - m_lastPtq < m_throttle) return;
        m_lastPtq = now;
        double done = -1.0;
        QString text;
        if (e.stage == "adaround" && e.layers > 0 && e.iterations > 0) {
            done = (double(e.layerIndex - 1) + double(e.iteration) / double(e.iterations)) / double(e.layers);
            text = QStringLiteral("AdaRound \u00b7 layer %1/%2 %3 \u00b7 iteration %4/%5 \u00b7 loss %6 \u00b7 %7 s")
                       .arg(e.layerIndex)
                       .arg(e.layers)
                       .arg(QString::fromStdString(e.layer))
                       .arg(e.iteration)
                       .arg(e.iterations)
                       .arg(e.loss, 0, 'g', 4)
                       .arg(e.elapsedSeconds, 0, 'f', 0);
        } else {
            text = QStringLiteral("Bias correction on the calibration images...");
        }
        QS_TSAN_HANDOFF(), emit m_worker.ptqProgress(m_runId, text, done), QS_TSAN_HANDOFF();
    }

    void onFinish(const FinishEvent& e) override
    {
        flush(Clock::now());
        m_finished = true;
        QS_TSAN_HANDOFF(), emit m_worker.finished(m_runId, e), QS_TSAN_HANDOFF();
    }

    bool finishedReported() const { return m_finished; }

private:
    using Clock = std::chrono::steady_clock;
    void flush(Clock::time_point now)
    {
        m_first = false;
        m_lastFlush = now;
        if (m_pending.empty()) return;
        BatchList out;
        out.swap(m_pending);
        QS_TSAN_HANDOFF(), emit m_worker.batches(m_runId, std::move(out)), QS_TSAN_HANDOFF();
    }

    TrainingWorker& m_worker;
    Clock::time_point m_lastPtq{};
    int m_runId;
    Clock::duration m_throttle;
    Clock::time_point m_lastFlush{};
    bool m_first = true;
    bool m_finished = false;
    BatchList m_pending;
};

// The window's memory between runs (glibc only). A run allocates its batches, activations and
// gradients (tens of MiB) and frees them when it ends; glibc keeps freed memory for reuse. With
// one malloc arena per thread (glibc's default: up to 8 per core) the training thread's and TBB
// workers' arenas each kept the top of their heap, which malloc_trim(0) does not return for
// threads' arenas: the GUI soak (tests/soak, 50 windows each stopped and closed mid-run) measured
// resident memory +12 % from cycle 10 to 50 (49.8 -> 55.8 MiB) with a flat live heap (3.9 -> 4.1
// MiB), the rise being two thread arenas' resident pages (4 -> 10.5 MiB). So the process keeps one
// arena (set before any worker thread allocates), and the training thread gives freed memory
// back after each run (malloc_trim, all of it now in the one arena): after a run the window holds
// what it uses, not the run's peak.
void limitMallocArenas()
{
#if defined(__GLIBC__)
    static const bool once = (::mallopt(M_ARENA_MAX, 1), true);
    (void)once;
#endif
}

void releaseFreedMemory()
{
#if defined(__GLIBC__)
    ::malloc_trim(0);
#endif
}

void registerTypes()
{
    static const bool once = [] {
        qRegisterMetaType<DatasetPtr>();
        qRegisterMetaType<DatasetRequest>();
        qRegisterMetaType<TrainRequest>();
        qRegisterMetaType<StartEvent>();
        qRegisterMetaType<BatchList>();
        qRegisterMetaType<EpochEvent>();
        qRegisterMetaType<LayerStatsList>();
        qRegisterMetaType<StepSizeEvent>();
        qRegisterMetaType<FinishEvent>();
        qRegisterMetaType<ExportBundlePtr>();
        qRegisterMetaType<ExportRequest>();
        qRegisterMetaType<ExportSummary>();
        return true;
    }();
    (void)once;
}

} // namespace

TrainingWorker::TrainingWorker(StopToken* token, int throttleMs) : m_token(token), m_throttleMs(throttleMs) {}

void TrainingWorker::loadDataset(const DatasetRequest& request)
{
    try {
        auto data = std::make_shared<Dataset>(request.explicitFiles ? Dataset::load(request.files, request.options)
                                                                    : Dataset::load(request.options));
        QS_TSAN_HANDOFF(), emit datasetLoaded(request.id, std::move(data)), QS_TSAN_HANDOFF();
    } catch (const std::exception& e) {
        QS_TSAN_HANDOFF(), emit datasetFailed(request.id, coreMessage(e)), QS_TSAN_HANDOFF();
    } catch (...) {
        QS_TSAN_HANDOFF(), emit datasetFailed(request.id, QStringLiteral("the dataset could not be read (unknown error)")), QS_TSAN_HANDOFF();
    }
}

void TrainingWorker::keepForExport(const TrainRequest& request, Trainer& trainer)
{
    try {
        auto b = std::make_shared<ExportBundle>();
        b->model = exportedModelOf(trainer);
        const Dataset& d = *request.data;
        b->fp32 = b->model.quantized ? exportFloatModel(trainer.model(), request.config.model, d.normalization, d.classNames)
                                     : b->model;
        b->data = request.data;
        b->config = request.config;
        if (const PtqRefiner* r = trainer.strategy().refiner()) b->refineReport = r->reportLines();
        const Strategy st = request.config.precision.strategy;
        if (!b->model.quantized && st != Strategy::Fp32)
            b->note = "trained with " + request.config.precision.format +
                      " arithmetic; the file holds its FP32 master weights";
        QS_TSAN_HANDOFF(), emit exportReady(request.runId, std::move(b)), QS_TSAN_HANDOFF();
    } catch (const std::exception& e) {
        QS_TSAN_HANDOFF(), emit exportFailed(request.runId, QStringLiteral("this run's model cannot be exported: %1").arg(coreMessage(e))), QS_TSAN_HANDOFF();
    }
}

void TrainingWorker::exportRun(const ExportRequest& request)
{
    try {
        if (!request.bundle) throw std::runtime_error("this run has no trained model to export");
        const ExportBundle& b = *request.bundle;
        const std::string path = request.path.toStdString();
        checkExportable(b.config, path);
        ExportSummary s = writeAndVerify(b.model, b.fp32, *b.data, path, b.config.threads);
        s.note = b.note; // core's note repeats the sizes, which the window reports itself
        QS_TSAN_HANDOFF(), emit exported(request.runId, std::move(s)), QS_TSAN_HANDOFF();
    } catch (const std::exception& e) {
        QS_TSAN_HANDOFF(), emit exportFailed(request.runId, coreMessage(e)), QS_TSAN_HANDOFF();
    } catch (...) {
        QS_TSAN_HANDOFF(), emit exportFailed(request.runId, QStringLiteral("the export failed (unknown error)")), QS_TSAN_HANDOFF();
    }
}

void TrainingWorker::train(const TrainRequest& request)
{
    SignalObserver observer(*this, request.runId, m_throttleMs);
    try {
        if (!request.data) throw std::runtime_error("no dataset is loaded");
        TrainConfig cfg = request.config;
        // Integer kernels where the engine can run the model, unless the run asks for fake-quant.
        cfg.quantizedEvaluator = cfg.quantEval == "engine" ? engineEvaluator(cfg.threads) : QuantizedEvaluator{};
        Trainer trainer(cfg, *request.data, &observer, m_token);
        QS_TSAN_HANDOFF(), emit modelSize(request.runId, estimateModelBytes(request.config, trainer.model())), QS_TSAN_HANDOFF();
        const FinishEvent fin = trainer.run();
        if (!observer.finishedReported()) QS_TSAN_HANDOFF(), emit failed(request.runId, QStringLiteral("training ended without a result")), QS_TSAN_HANDOFF();
        else if (!fin.stopped) keepForExport(request, trainer);
    } catch (const std::exception& e) {
        QS_TSAN_HANDOFF(), emit failed(request.runId, coreMessage(e)), QS_TSAN_HANDOFF();
    } catch (...) {
        QS_TSAN_HANDOFF(), emit failed(request.runId, QStringLiteral("training failed (unknown error)")), QS_TSAN_HANDOFF();
    }
    releaseFreedMemory(); // the run's trainer, model and batches are gone
}

TrainingController::TrainingController(QObject* parent, int throttleMs) : QObject(parent)
{
    limitMallocArenas();
    registerTypes();
    m_worker = new TrainingWorker(&m_token, throttleMs);
    static const bool guiThreadFilter = (installTsanHandoff(QCoreApplication::instance()), true);
    (void)guiThreadFilter;
    installTsanHandoff(m_worker); // the filter is the worker's child: it moves with it
    m_worker->moveToThread(&m_thread);
    m_thread.setObjectName(QStringLiteral("quantscope-training"));
    installTsanJoin(&m_thread);

    const auto q = Qt::QueuedConnection;
    connect(this, &TrainingController::requestLoad, m_worker, &TrainingWorker::loadDataset, q);
    connect(this, &TrainingController::requestTrain, m_worker, &TrainingWorker::train, q);
    connect(this, &TrainingController::requestExport, m_worker, &TrainingWorker::exportRun, q);
    connect(m_worker, &TrainingWorker::exportReady, this, &TrainingController::exportReady, q);
    connect(m_worker, &TrainingWorker::exported, this, [this](int id, const ExportSummary& s) {
        m_exporting = false;
        QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
        QS_TSAN_HANDOFF(), emit exported(id, s), QS_TSAN_HANDOFF();
    }, q);
    connect(m_worker, &TrainingWorker::exportFailed, this, [this](int id, const QString& msg) {
        if (!m_exporting) {
            QS_TSAN_HANDOFF(), emit exportUnavailable(id, msg), QS_TSAN_HANDOFF();
            return;
        }
        m_exporting = false;
        QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
        QS_TSAN_HANDOFF(), emit exportFailed(id, msg), QS_TSAN_HANDOFF();
    }, q);

    connect(m_worker, &TrainingWorker::datasetLoaded, this, [this](quint64 id, DatasetPtr d) {
        m_loads = std::max(0, m_loads - 1);
        QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
        QS_TSAN_HANDOFF(), emit datasetLoaded(id, std::move(d)), QS_TSAN_HANDOFF();
    }, q);
    connect(m_worker, &TrainingWorker::datasetFailed, this, [this](quint64 id, const QString& msg) {
        m_loads = std::max(0, m_loads - 1);
        QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
        QS_TSAN_HANDOFF(), emit datasetFailed(id, msg), QS_TSAN_HANDOFF();
    }, q);
    connect(m_worker, &TrainingWorker::started, this, &TrainingController::started, q);
    connect(m_worker, &TrainingWorker::modelSize, this, &TrainingController::modelSize, q);
    connect(m_worker, &TrainingWorker::batches, this, &TrainingController::batches, q);
    connect(m_worker, &TrainingWorker::epochDone, this, &TrainingController::epochDone, q);
    connect(m_worker, &TrainingWorker::layerStats, this, &TrainingController::layerStats, q);
    connect(m_worker, &TrainingWorker::stepSizes, this, &TrainingController::stepSizes, q);
    connect(m_worker, &TrainingWorker::ptqProgress, this, &TrainingController::ptqProgress, q);
    connect(m_worker, &TrainingWorker::finished, this, [this](int id, const FinishEvent& e) {
        m_training = false;
        m_token.setPaused(false);
        QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
        QS_TSAN_HANDOFF(), emit finished(id, e), QS_TSAN_HANDOFF();
    }, q);
    connect(m_worker, &TrainingWorker::failed, this, [this](int id, const QString& msg) {
        m_training = false;
        m_token.setPaused(false);
        QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
        QS_TSAN_HANDOFF(), emit failed(id, msg), QS_TSAN_HANDOFF();
    }, q);
    m_thread.start();
}

TrainingController::~TrainingController() { shutdown(); }

void TrainingController::shutdown()
{
    if (!m_worker) return;
    m_token.requestStop();
    m_token.setPaused(false);
    m_thread.quit();
    m_thread.wait();
    QS_TSAN_HANDOFF(); // the worker thread's last writes happen before this (installTsanJoin)
    delete m_worker;
    m_worker = nullptr;
    m_training = m_exporting = false;
    m_loads = 0;
}

quint64 TrainingController::loadDataset(DatasetRequest request)
{
    if (!m_worker) return 0;
    request.id = m_nextRequest++;
    ++m_loads;
    QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
    QS_TSAN_HANDOFF(), emit requestLoad(request), QS_TSAN_HANDOFF();
    return request.id;
}

bool TrainingController::exportRun(int runId, ExportBundlePtr bundle, const QString& path)
{
    if (!m_worker || m_training || isLoading() || m_exporting || !bundle) return false;
    m_exporting = true;
    QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
    QS_TSAN_HANDOFF(), emit requestExport(ExportRequest{runId, std::move(bundle), path}), QS_TSAN_HANDOFF();
    return true;
}

bool TrainingController::startTraining(int runId, const TrainConfig& config, DatasetPtr data)
{
    if (!m_worker || m_training || isLoading() || m_exporting || !data) return false;
    m_token.reset();
    m_training = true;
    m_runId = runId;
    QS_TSAN_HANDOFF(), emit busyChanged(), QS_TSAN_HANDOFF();
    QS_TSAN_HANDOFF(), emit requestTrain(TrainRequest{runId, config, std::move(data)}), QS_TSAN_HANDOFF();
    return true;
}

void TrainingController::pause()
{
    if (m_training) m_token.setPaused(true);
}

void TrainingController::resume() { m_token.setPaused(false); }

void TrainingController::stop()
{
    if (!m_training) return;
    m_token.setPaused(false);
    m_token.requestStop();
}

} // namespace quantscope
