// The mixed-bit search's chart (core/analysis/mixed_search.h): model size (% of FP32) against
// validation accuracy. Every evaluated plan is a point, the Pareto front a line through its
// plans, the uniform plans squares with their format written by them, the chosen plan a star,
// and the plan the user clicked a ring; dashed lines mark FP32's accuracy and the budget.
// Hovering a point shows its plan in a tooltip; clicking it emits planClicked.
#pragma once

#include "chart_view.h"

#include "analysis/mixed_search.h"

#include <optional>
#include <vector>

class QLineSeries;
class QScatterSeries;

namespace quantscope {

class ParetoChart : public ChartView {
    Q_OBJECT
public:
    explicit ParetoChart(QWidget* parent = nullptr);

    // fp32Bytes: the FP32 model's size (the 100 % of the x axis). Budget lines: FP32 accuracy minus
    // maxDrop, or maxBytes; none when not given.
    void setReport(const MixedSearchReport& r, std::uint64_t fp32Bytes, std::optional<double> maxDrop,
                   std::optional<std::uint64_t> maxBytes);
    void setSelected(long plan); // the ring; -1 hides it
    // Empties the chart: its plans, its title and the budget's legend entry.
    void clear();
    // The title for the report of `name` ("run #4: size against validation accuracy (20 plans)")
    // and under it the plans below the chart, as many as fit the chart's width ("... and 3 more"),
    // refitted at each resize: a longer line was cut ("greedy step 17: conv1 int2 (mi...").
    void setTitleFor(const QString& name);
    // Whether the title names every plan below the chart (true when none is).
    bool titleNamesAll() const { return m_titleNamesAll; }

    QScatterSeries* plansSeries() const { return m_plans; }     // every evaluated plan that is not uniform
    QLineSeries* frontSeries() const { return m_front; }        // the front, by size
    QScatterSeries* uniformSeries() const { return m_uniform; } // every uniform plan
    QScatterSeries* chosenSeries() const { return m_chosen; }
    QScatterSeries* selectedSeries() const { return m_selected; }
    // The plan index of point i of a series above (-1 when out of range).
    long planAt(const QScatterSeries* s, int i) const;
    long frontPlanAt(int i) const;
    // The labels written by the uniform plans' points.
    QStringList uniformLabels() const;
    // Plans below the accuracy range shown ("uniform int2 (minmax) at 79.7 %"); the chart focuses
    // on the front and the budget.
    const QStringList& offChart() const { return m_offChart; }
    const QValueAxis* yAxis() const { return m_y; } // accuracy (%)
    // A plan's size on the x axis (% of FP32).
    double percentOf(std::uint64_t bytes) const;

    // The tooltip of the plan under the pointer (empty when none): what a resting pointer shows.
    const QString& hoverText() const { return m_hoverText; }

signals:
    void planClicked(long plan);
    void titleFitted(); // the title was set or refitted to a new width

protected:
    // A resting pointer over a plan keeps its plan tooltip (the view's "Right-click to save"
    // tooltip replaced it; testers 4, 10, 13).
    bool event(QEvent* e) override;
    void resizeEvent(QResizeEvent* e) override;

private:
    void fitTitle();
    void connectPoints(QScatterSeries* s);
    long nearestPlan(const QPointF& p) const;

    QValueAxis* m_x;
    QValueAxis* m_y;
    QScatterSeries* m_plans;
    QLineSeries* m_front;
    QScatterSeries* m_uniform;
    QScatterSeries* m_chosen;
    QScatterSeries* m_selected;
    QLineSeries* m_fp32;
    QLineSeries* m_budget;
    std::vector<QScatterSeries*> m_uniformLabels; // one per size of the uniform plans: the format, out of the legend
    QStringList m_offChart;
    std::vector<long> m_plansIdx, m_frontIdx, m_uniformIdx;
    MixedSearchReport m_report;
    std::uint64_t m_fp32Bytes = 1;
    QString m_hoverText;
    QString m_titleName; // setTitleFor's; empty: the title stays as it is
    bool m_titleNamesAll = true;
};

} // namespace quantscope
