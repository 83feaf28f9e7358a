// The Analysis tab's Search page (core/analysis/mixed_search.h): candidate formats and
// calibrations, granularity, a budget (max accuracy drop in points, or max size in % of FP32 or
// bytes), Run/Stop with a progress bar; the ParetoChart of every evaluated plan, and beside it the
// per-layer table of the plan clicked (the chosen one at first; under the chart in a narrow tab)
// with "Save plan..." (the JSON of docs/PLANS.md, written atomically) and "Fine-tune with this
// plan" (fineTuneRequested).
#pragma once

#include "analysis_input.h"

#include "analysis/mixed_search.h"

#include <QWidget>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QGridLayout;
class QLabel;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QSplitter;
class QTableWidget;

namespace quantscope {

class ParetoChart;

class SearchView : public QWidget {
    Q_OBJECT
public:
    using InputProvider = std::function<AnalysisInputPtr(QString* error)>;
    enum class Budget { MaxDrop, MaxPercent, MaxBytes };
    explicit SearchView(InputProvider input, QWidget* parent = nullptr);
    ~SearchView() override; // stops and joins a search in flight

    QStringList formats() const;
    void setFormats(const QStringList& formats);
    QStringList calibrations() const;
    void setCalibrations(const QStringList& calibrations);
    void setBudget(Budget kind, double value);
    void setMaxEvaluations(int n);

    bool isRunning() const { return m_thread.running(); }
    // While `why` is not empty (a training run would share the cores), Run is disabled and its
    // tooltip says why; an analysis in flight goes on.
    void setBlocked(const QString& why);
    const MixedSearchReport& report() const { return m_report; }
    long selectedPlan() const { return m_selected; }
    // The plan shown in the side table (the chosen one after a search, else the one clicked).
    void selectPlan(long plan);
    ParetoChart* chart() const { return m_chart; }
    QTableWidget* planTable() const { return m_planTable; }
    QPushButton* runButton() const { return m_run; }
    QPushButton* stopButton() const { return m_stop; }
    QPushButton* saveButton() const { return m_save; }
    QPushButton* fineTuneButton() const { return m_fineTune; }
    QProgressBar* progressBar() const { return m_progress; }
    QString statusText() const;
    // The chosen plan's test accuracy (NaN when none was measured).
    double chosenTestAccuracy() const { return m_testAcc; }

    // Lays the status line and the plan table out for a page `width` pixels wide (beside the bar
    // and the chart, or under them in a narrow tab). On a resize; AnalysisView calls it for the
    // hidden page too, whose minimum width counts in the tab's.
    void fitWidth(int width);

public slots:
    void run();
    void stop();
    void savePlanInteractive();
    // Writes the selected plan to `path` (docs/PLANS.md); false with a status message on failure.
    bool savePlanTo(const QString& path);
    void fineTune();

signals:
    void searchFinished(bool ok, const QString& message);
    void busyChanged(bool busy); // a search started or ended
    // "Fine-tune with this plan": a QAT run of the model analysed (`input`) with `plan`.
    void fineTuneRequested(quantscope::AnalysisInputPtr input, const quantscope::PrecisionPlan& plan);

protected:
    void resizeEvent(QResizeEvent* e) override;

private:
    struct Outcome;
    // The plan table beside the chart while the chart keeps a readable width there, else under it.
    void placePlan(int width);
    void showProgress(SearchPhase phase, std::size_t done, std::size_t total);
    static QString progressText(SearchPhase phase, std::size_t done, std::size_t total); // the bar's text
    void showOutcome(const std::shared_ptr<const Outcome>& out);
    void setBusy(bool busy);
    void updateBudgetSpin();
    void fitLayerColumn(const std::vector<std::string>& layers); // the plan table wide enough for its names
    // The status line: the last search's summary, and the plans below the chart when its title
    // leaves some out.
    void showSummary();

    InputProvider m_input;
    QList<QCheckBox*> m_formatBoxes, m_calibBoxes;
    QComboBox* m_granularity;
    QComboBox* m_budgetKind;
    QDoubleSpinBox* m_budget;
    QSpinBox* m_maxEvals;
    QPushButton* m_run;
    QString m_runTip, m_blocked; // Run's own tooltip; why it may not start now (empty: it may)
    QPushButton* m_stop;
    QProgressBar* m_progress;
    QLabel* m_status;
    QGridLayout* m_runRow; // Run, Stop, the bar and the status (placeRunStatus)
    ParetoChart* m_chart;
    QSplitter* m_split;
    QLabel* m_planTitle;
    QTableWidget* m_planTable;
    QPushButton* m_save;
    QPushButton* m_fineTune;

    AnalysisThread m_thread;
    AnalysisInputPtr m_running, m_reported;
    MixedSearchReport m_report;
    std::shared_ptr<const Model> m_model; // the analysed model, for per-layer sizes
    long m_selected = -1;
    double m_testAcc = 0.0;
    std::size_t m_testImages = 0;
    QString m_summary; // the last search's, for the status line (empty before the first)
};

} // namespace quantscope
