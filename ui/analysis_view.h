// The Analysis tab: which model to ask questions of (the selected finished run's, or a model file
// opened with File > Open model file), how many training images to hold out for validation and
// to calibrate on, and two pages: Sensitivity (SensitivityView) and Search (SearchView). Its rows
// wrap in a narrow tab, so that it fits a 1024-pixel window's width.
#pragma once

#include "analysis_input.h"

#include <QWidget>

class QComboBox;
class QGridLayout;
class QLabel;
class QSpinBox;
class QTabWidget;

namespace quantscope {

class SearchView;
class SensitivityView;

class AnalysisView : public QWidget {
    Q_OBJECT
public:
    explicit AnalysisView(QWidget* parent = nullptr);

    // The run offered first (the selected, else newest, run that kept its model); null: none.
    void setRun(int runId, ExportBundlePtr bundle, const QString& description);
    // The dataset a model file is measured on (the loaded one).
    void setDataset(DatasetPtr data);
    // Offers an FP32 model file (.qsm / .onnx) and selects it.
    void addModelFile(const QString& path);
    // Selects the run entry (true) or a file entry by path.
    bool selectSource(const QString& pathOrEmptyForRun);

    void setValidationImages(int n);
    void setCalibrationImages(int n);
    // What an analysis would measure now; null with *error set when nothing can be analysed.
    AnalysisInputPtr input(QString* error) const;

    // A sensitivity analysis or a search is in flight (training would share the cores with it).
    bool isAnalysing() const;
    // A training run is in progress: Run sensitivity and Run search are disabled, saying so.
    void setTraining(bool training);

    SensitivityView* sensitivity() const { return m_sensitivity; }
    SearchView* search() const { return m_search; }
    QTabWidget* pages() const { return m_pages; }
    bool noteHasOwnRow() const { return m_noteOwnRow; } // the note under the fields (a narrow tab)
    QComboBox* sourceCombo() const { return m_source; }

signals:
    // An analysis started or ended (emitted as it changes: isAnalysing() may still say the old).
    void analysingChanged();

protected:
    void resizeEvent(QResizeEvent* e) override;

private:
    void placeNote(bool ownRow); // beside the fields, or on a row of its own under them
    void updateSourceNote() const;
    QString currentKey() const; // "run #3 (...) on fashion-mnist": the model and the data analyses measure

    QComboBox* m_source;
    QSpinBox* m_validation;
    QSpinBox* m_calibration;
    QComboBox* m_actCalibration; // the activation ranges' calibration (analyze --act-calibration)
    QLabel* m_note;
    QGridLayout* m_bar;
    bool m_noteOwnRow = false;
    QTabWidget* m_pages;
    SensitivityView* m_sensitivity;
    SearchView* m_search;
    int m_runId = 0;
    ExportBundlePtr m_bundle;
    DatasetPtr m_data;
    mutable QString m_measured; // currentKey() when the last analysis started (input() is what starts one)
};

} // namespace quantscope
