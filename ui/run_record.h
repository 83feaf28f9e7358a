// One training run as the window keeps it: its configuration and every event it reported
// (values copied out of the worker's signals), plus JSON save/load and CSV export.
#pragma once

#include "train/events.h"
#include "train/trainer.h"

#include "run_colors.h" // runColor(run): every view of a run takes its colour from there

#include <QDateTime>
#include <QJsonObject>
#include <QString>

#include <memory>
#include <vector>

namespace quantscope {

struct ExportBundle; // training_worker.h: the trained model, kept for File > Export

enum class RunStatus { Running, Paused, Done, Stopped, Failed };
QString runStatusText(RunStatus s);

struct RunRecord {
    int id = 0;
    RunStatus status = RunStatus::Running;
    TrainConfig config;
    QString datasetName;
    std::size_t imageHeight = 28, imageWidth = 28, classes = 10;
    QDateTime startedAt;

    bool hasStart = false;
    StartEvent start;
    std::vector<BatchEvent> steps;
    std::vector<double> smoothedLoss;               // debiased EMA of steps[i].loss
    double emaRaw = 0.0;                            // the EMA before debiasing
    std::vector<EpochEvent> epochs;
    std::vector<std::vector<LayerStats>> layerStats; // one entry per epoch that reported them
    std::vector<StepSizeEvent> stepSizes;            // LSQ runs: learned step sizes over the steps
    bool finished = false;
    FinishEvent finish;
    QString error;
    double modelBytes = kNoValue;
    std::shared_ptr<const ExportBundle> exportBundle; // this session's finished runs only (not saved)
    QString exportNote;                               // why there is none, when known
    QStringList refineReport;                         // PTQ refinements: PtqRefiner::reportLines()

    void addSteps(const std::vector<BatchEvent>& batch);
    double finalTestAccuracy() const;  // FP32 (or the run's own arithmetic for lowp/mixed)
    double finalQuantAccuracy() const; // NaN when the run has no quantized model
    double seconds() const;
    bool hasLossScale() const;
    QString shortConfig() const;       // "qat · int8 · channel-wise"
    QString title() const;             // "#2 qat · int8 · channel-wise"
    QString configTooltip() const;     // several lines, every option
    const std::vector<LayerStats>* latestStats() const;
};

using RunPtr = std::shared_ptr<RunRecord>;

// Labels that tell runs apart by what differs between them ("#2 channel-wise", "#3 tensor-wise");
// just "#2" when that would be long.
QStringList runLabels(const std::vector<RunPtr>& runs);

QJsonObject configToJson(const TrainConfig& cfg);
TrainConfig configFromJson(const QJsonObject& o);

QJsonObject runToJson(const RunRecord& run);
RunPtr runFromJson(const QJsonObject& o);

// Writes {"quantscope_runs": 1, "runs": [...]}. Returns an error message, or empty on success.
QString saveRunsJson(const QString& path, const std::vector<RunPtr>& runs);
// Reads what saveRunsJson wrote. On error returns no runs and sets *error.
std::vector<RunPtr> loadRunsJson(const QString& path, QString* error);
// One row per run and epoch: run, config, epoch, losses, accuracies, img/s, seconds.
QString saveMetricsCsv(const QString& path, const std::vector<RunPtr>& runs);

} // namespace quantscope
