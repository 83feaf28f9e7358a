// File > Evaluate model file: runs an exported model (.qsm or .onnx, FP32 or integer) on the loaded
// dataset's test set, as `quantscope-cli eval` does (core/analysis/file_eval.h: the same shape and
// class checks, the same runner, the same accuracy). Integer models run on the integer-only
// engine; optionally also on the fake-quant reference, with the share of images on which the two
// agree, and a speed measurement. Every evaluation adds a row to the results table, so exports
// (int8 against int4, tensor- against channel-wise) compare side by side; the last one's
// predictions can be saved as the CLI's --predictions CSV.
#pragma once

#include "analysis_input.h"

#include "analysis/file_eval.h"

#include <QDialog>

#include <memory>

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QTableWidget;

namespace quantscope {

class EvaluateDialog : public QDialog {
    Q_OBJECT
public:
    explicit EvaluateDialog(QWidget* parent = nullptr);
    ~EvaluateDialog() override;

    // The dataset whose test set is scored (the loaded one; null: none loaded) and the options it
    // was read with: an image folder is read again with the model's channels when they differ, as
    // `quantscope-cli eval` reads it (grey images for an RGB model), and a resize on load is named
    // in a size mismatch's error.
    void setDataset(DatasetPtr data, const DatasetOptions& readWith);
    void setModelFile(const QString& path);
    QString modelFile() const;
    void setThreads(int threads);

    // Starts an evaluation with the dialog's settings; false (status says why) when it cannot.
    bool evaluate();
    void stop();
    bool running() const { return m_thread.running(); }
    // Writes the last evaluation's predictions ("index,predicted_class" per test image, as
    // `quantscope-cli eval --predictions`) to path, atomically; false (status says why) if it cannot.
    bool savePredictionsTo(const QString& path);

    QTableWidget* results() const { return m_results; }
    QString statusText() const;
    QComboBox* runnerCombo() const { return m_runner; }
    QCheckBox* compareBox() const { return m_compare; }
    QCheckBox* benchBox() const { return m_bench; }
    QLineEdit* normalizeEdit() const { return m_normalize; }

signals:
    // An evaluation ended: ok false with the error (or "stopped") otherwise.
    void evaluationFinished(bool ok, const QString& message);

private:
    void browse();
    void savePredictions();
    void updateDataLabel();
    void showProgress(std::size_t done, std::size_t total);
    void showResult(const QString& path, const std::optional<FileEvalResult>& r, const QString& precision, const QString& input,
                    const QStringList& notes, const QString& error);
    void setBusy(bool busy);

    DatasetPtr m_data;
    DatasetOptions m_readWith; // what m_data was read with
    QLineEdit* m_path;
    QPushButton* m_browse;
    QLabel* m_dataLabel;
    QComboBox* m_runner;
    QComboBox* m_isa;
    QSpinBox* m_threads;
    QCheckBox* m_compare;
    QCheckBox* m_bench;
    QLineEdit* m_normalize;
    RunControls m_controls;
    QLabel* m_notes;
    QTableWidget* m_results;
    QPushButton* m_savePredictions;
    PredictionRows m_lastPredictions; // the last evaluation's, for Save predictions
    AnalysisThread m_thread;
};

} // namespace quantscope
