// Training panel: every option of a run (model, strategy, format, granularity, rounding,
// calibration, optimizer, learning rate, epochs, batch size, threads, seed, the progressive
// schedule) bound both ways to a TrainConfig under an m_initializing guard. Options the chosen
// strategy does not use are disabled and their tooltip says why. Panels never call core.
#pragma once

#include "schedule_editor.h"

#include "train/trainer.h"

#include <memory>

#include <QHash>
#include <QWidget>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QGroupBox;

namespace quantscope {

class PlanTable;

class TrainingPanel : public QWidget {
    Q_OBJECT
public:
    explicit TrainingPanel(QWidget* parent = nullptr);

    void setConfig(const TrainConfig& cfg);
    const TrainConfig& config() const { return m_cfg; }
    // Locks the options while a run is in progress (the buttons stay live).
    void setRunning(bool running);

    QPushButton* trainButton() const { return m_train; }
    QPushButton* pauseButton() const { return m_pause; }
    QPushButton* stopButton() const { return m_stop; }
    // Next to the model picker: opens the model summary (the main window connects it).
    QPushButton* summaryButton() const { return m_summary; }
    QPushButton* moreOptionsButton() const { return m_more; }
    // Adds a model file (checked by the caller) to the model picker and selects it. `label` is
    // shown, `tip` is its tooltip (layers, parameters, input); `normalization` the input
    // normalisation the file stores (Normalization::describe), or empty: an empty Normalize field
    // then shows it as its placeholder, as training from the file takes it.
    void addModelFile(const QString& path, const QString& label, const QString& tip, const QString& normalization = {});
    // The Normalize field's placeholder: what an empty field means for the model picked.
    QString normalizePlaceholder() const;
    // The input normalisation typed by the user ("MEAN,STD", see Normalization::parse), or empty
    // for the dataset's statistics.
    QString normalizeText() const;
    // The per-layer plan table (its rows are the layers of the model set here by the main window).
    PlanTable* planTable() const { return m_planTable; }
    // The model whose layers the plan table lists. The plan's entries for layers the table cannot
    // show are dropped, and the table says which: those the model lacks, or, when it is null with
    // `unavailable` (why its layers cannot be listed, e.g. its input does not fit the loaded
    // dataset), all of them. Null without a reason (no dataset yet) keeps them.
    void setPlanModel(std::shared_ptr<const Model> model, const QString& unavailable = {});
    // Whether that model has a BatchNorm2d (false while none is set): for the notes a run's
    // options deserve (PrecisionConfig::batchNormDriftWarning).
    bool planModelHasBatchNorm() const { return m_planModelHasBatchNorm; }
    // Plan files (training_panel_plans.cpp, docs/PLANS.md). Load: the file's default becomes the
    // format/granularity/calibration options, its layers the plan table's (checked against the
    // table's model; a strategy without plans becomes QAT); emits configChanged. Save: the plan in
    // force (the options as default, the table's layers), written atomically. False with the
    // reason in *error (and under the table) when they cannot.
    bool loadPlanFile(const QString& path, QString* error = nullptr);
    bool savePlanFile(const QString& path, QString* error = nullptr);

public slots:
    // Asks the main window for a model file (emits openModelFileRequested).
    void requestModelFile() { emit openModelFileRequested(); }
    void loadPlanInteractive();
    // Opens the "More options..." dialog (modal); OK takes its values.
    void showMoreOptions();
    void savePlanInteractive();

    // Sensible first run: QAT, int8, channel-wise, seed-cnn, Adam 1e-3, 2 epochs, batch 64, 2 threads.
    static TrainConfig defaultConfig();

signals:
    void configChanged();
    // The picker's "Open model file..." entry was chosen.
    void openModelFileRequested();

protected:
    // A wheel over a combo box or spin box the user has not clicked scrolls the dock instead of
    // changing the option under the pointer.
    bool eventFilter(QObject* watched, QEvent* event) override;

private:
    void readWidgets();       // widgets -> m_cfg
    void followDefaultActivationCalibration(); // defaultActivationCalibration, until the user picks one
    void updateApplicability();
    void setApplies(QWidget* w, bool applies, const QString& why);

    TrainConfig m_cfg;
    bool m_initializing = false;
    bool m_running = false;
    bool m_formatAutoSwitched = false;
    QString m_lastIntegerFormat = QStringLiteral("int8");
    QHash<QWidget*, QString> m_baseTips;
    QHash<QWidget*, QLabel*> m_labels;

    QComboBox* m_model;
    int m_lastModelIndex = 0;
    QCheckBox* m_reinit;
    QLineEdit* m_normalize;
    QComboBox* m_strategy;
    QLabel* m_strategyHelp;
    QComboBox* m_format;
    QComboBox* m_granularity;
    QSpinBox* m_groupSize;
    QComboBox* m_rounding;
    QComboBox* m_calibration;
    QComboBox* m_actCalibration;
    QDoubleSpinBox* m_percentile;
    QSpinBox* m_calibImages;
    QSpinBox* m_bnFreeze;
    QSpinBox* m_bnReestimate;
    QComboBox* m_quantizer;
    QCheckBox* m_lsqPlus;
    QCheckBox* m_narrowRange;
    QSpinBox* m_adaroundIters;
    QCheckBox* m_cle;
    QCheckBox* m_biasCorrection;
    // "More options..." (more_options_dialog.h): the user's choices, passed on by readWidgets
    // where the strategy uses them.
    QPushButton* m_more;
    std::string m_lsqInit = "mse";
    bool m_firstLast8Bit = false, m_cleRelu6ToRelu = false;
    std::size_t m_blendSteps = 100, m_maxSkippedSteps = 50;
    std::string m_quantEval = "engine";
    ScheduleEditor* m_schedule;
    QComboBox* m_optimizer;
    QDoubleSpinBox* m_momentum;
    QCheckBox* m_nesterov;
    QCheckBox* m_amsgrad;
    QLineEdit* m_weightDecay;
    QLineEdit* m_lr;
    QComboBox* m_lrSchedule;
    QSpinBox* m_epochs;
    QSpinBox* m_batch;
    QSpinBox* m_threads;
    QSpinBox* m_seed;
    QPushButton* m_train;
    QPushButton* m_pause;
    QPushButton* m_stop;
    QPushButton* m_summary;
    QGroupBox* m_planBox;
    PlanTable* m_planTable;
    // Whether the user picked Act. calibration (or a config was set): until then it follows
    // defaultActivationCalibration, min-max for QAT from a fresh model, moving average else.
    bool m_actCalibrationChosen = false;
    bool m_planModelHasBatchNorm = false; // setPlanModel
};

} // namespace quantscope
