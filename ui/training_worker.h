// The background side of the window. TrainingWorker lives on its own QThread: requests come in
// by queued signal, the core's TrainObserver is bridged to signals carrying values (batch events
// throttled to about 20 per second), stop/pause are the StopToken's atomics. TrainingController
// is the GUI-thread owner: it starts the thread and stops, quits and waits for it when destroyed.
#pragma once

#include "data/dataset.h"
#include "io/exported_model.h"
#include "analysis/model_export.h"
#include "train/events.h"
#include "train/trainer.h"

#include <QMetaType>
#include <QObject>
#include <QString>
#include <QThread>

#include <memory>
#include <vector>

namespace quantscope {

using DatasetPtr = std::shared_ptr<const Dataset>; // immutable once loaded: safe to share
using BatchList = std::vector<BatchEvent>;
using LayerStatsList = std::vector<LayerStats>;

struct DatasetRequest {
    quint64 id = 0;
    bool explicitFiles = false; // files (else options.dir)
    DatasetFiles files;
    DatasetOptions options;
};

// The trained model of one run, as the exporter needs it: kept after the run so the user can
// write it to .qsm / .onnx later. Immutable once made, so it is shared as a value.
struct ExportBundle {
    ExportedModel model; // integer when the strategy quantizes to an integer format
    ExportedModel fp32;  // the same model in FP32, for the size comparison
    DatasetPtr data;     // for re-measuring the written file
    TrainConfig config;
    std::string note;    // e.g. why a mixed-precision run exports its FP32 master weights
    std::vector<std::string> refineReport; // what CLE, AdaRound and bias correction did (PtqRefiner::reportLines)
};
using ExportBundlePtr = std::shared_ptr<const ExportBundle>;

struct ExportRequest {
    int runId = 0;
    ExportBundlePtr bundle;
    QString path;
};

struct TrainRequest {
    int runId = 0;
    TrainConfig config;
    DatasetPtr data;
};

class TrainingWorker : public QObject {
    Q_OBJECT
public:
    TrainingWorker(StopToken* token, int throttleMs);

public slots:
    void loadDataset(const quantscope::DatasetRequest& request);
    void train(const quantscope::TrainRequest& request);
    void exportRun(const quantscope::ExportRequest& request);

signals:
    void datasetLoaded(quint64 requestId, quantscope::DatasetPtr data);
    void datasetFailed(quint64 requestId, QString message);
    void started(int runId, quantscope::StartEvent event);
    void modelSize(int runId, double bytes); // estimated for the run's format, before training
    void batches(int runId, quantscope::BatchList events);
    void epochDone(int runId, quantscope::EpochEvent event);
    void layerStats(int runId, quantscope::LayerStatsList stats);
    void stepSizes(int runId, quantscope::StepSizeEvent event);
    // PTQ refinement progress: a status line and the share done (0..1, or -1 when unknown).
    void ptqProgress(int runId, QString text, double done);
    void finished(int runId, quantscope::FinishEvent event);
    void failed(int runId, QString message);
    void exportReady(int runId, quantscope::ExportBundlePtr bundle);
    void exported(int runId, quantscope::ExportSummary summary);
    void exportFailed(int runId, QString message);

private:
    void keepForExport(const TrainRequest& request, Trainer& trainer);
    StopToken* m_token;
    int m_throttleMs;
};

class TrainingController : public QObject {
    Q_OBJECT
public:
    explicit TrainingController(QObject* parent = nullptr, int throttleMs = 50);
    ~TrainingController() override;

    // Returns the request id echoed by datasetLoaded/datasetFailed.
    quint64 loadDataset(DatasetRequest request);
    // False (and nothing happens) while a run or a load is in progress.
    bool startTraining(int runId, const TrainConfig& config, DatasetPtr data);
    // Writes a run's model to `path` (.qsm / .onnx) and re-measures it, in the background.
    bool exportRun(int runId, ExportBundlePtr bundle, const QString& path);
    void pause();
    void resume();
    void stop();
    // Stops any run and joins the thread; safe to call twice.
    void shutdown();

    bool isTraining() const { return m_training; }
    bool isLoading() const { return m_loads > 0; }
    bool isExporting() const { return m_exporting; }
    bool isPaused() const { return m_token.paused(); }
    int currentRun() const { return m_runId; }

signals:
    void datasetLoaded(quint64 requestId, quantscope::DatasetPtr data);
    void datasetFailed(quint64 requestId, QString message);
    void started(int runId, quantscope::StartEvent event);
    void modelSize(int runId, double bytes); // estimated for the run's format, before training
    void batches(int runId, quantscope::BatchList events);
    void epochDone(int runId, quantscope::EpochEvent event);
    void layerStats(int runId, quantscope::LayerStatsList stats);
    void stepSizes(int runId, quantscope::StepSizeEvent event);
    void ptqProgress(int runId, QString text, double done);
    void finished(int runId, quantscope::FinishEvent event);
    void failed(int runId, QString message);
    void exportReady(int runId, quantscope::ExportBundlePtr bundle);
    void exported(int runId, quantscope::ExportSummary summary);
    void exportFailed(int runId, QString message);
    void exportUnavailable(int runId, QString reason); // after training: the model cannot be kept for export
    void busyChanged();

    // To the worker (queued).
    void requestLoad(const quantscope::DatasetRequest& request);
    void requestTrain(const quantscope::TrainRequest& request);
    void requestExport(const quantscope::ExportRequest& request);

private:
    StopToken m_token;
    QThread m_thread;
    TrainingWorker* m_worker = nullptr;
    quint64 m_nextRequest = 1;
    bool m_training = false;
    int m_loads = 0; // dataset requests not answered yet
    bool m_exporting = false;
    int m_runId = 0;
};

} // namespace quantscope

Q_DECLARE_METATYPE(quantscope::DatasetPtr)
Q_DECLARE_METATYPE(quantscope::DatasetRequest)
Q_DECLARE_METATYPE(quantscope::TrainRequest)
Q_DECLARE_METATYPE(quantscope::StartEvent)
Q_DECLARE_METATYPE(quantscope::BatchList)
Q_DECLARE_METATYPE(quantscope::EpochEvent)
Q_DECLARE_METATYPE(quantscope::LayerStatsList)
Q_DECLARE_METATYPE(quantscope::StepSizeEvent)
Q_DECLARE_METATYPE(quantscope::FinishEvent)
Q_DECLARE_METATYPE(quantscope::ExportBundlePtr)
Q_DECLARE_METATYPE(quantscope::ExportRequest)
Q_DECLARE_METATYPE(quantscope::ExportSummary)
