// The curves of a run over time: loss (per step, smoothed, and test loss per epoch),
// accuracy per epoch (train, test FP32, test quantized) and the dynamic loss scale with skipped
// steps (mixed, low precision and progressive runs). Each draws the primary run and overlays the
// other selected runs.
#pragma once

#include "chart_view.h"

#include <vector>

class QLineSeries;
class QLogValueAxis;
class QScatterSeries;
class QValueAxis;

namespace quantscope {

class LossChart : public RunChart {
    Q_OBJECT
public:
    explicit LossChart(QWidget* parent = nullptr);
    void refresh() override;
    int pointCount() const; // points of the primary run's smoothed loss
    QValueAxis* lossAxis() const { return m_y; }

protected:
    void rebuild() override;

private:
    struct Slot {
        QLineSeries* raw = nullptr;
        QLineSeries* smoothed = nullptr;
        QLineSeries* test = nullptr;
    };
    QValueAxis* m_x;
    QValueAxis* m_y;
    std::vector<Slot> m_slots;
};

class AccuracyChart : public RunChart {
    Q_OBJECT
public:
    explicit AccuracyChart(QWidget* parent = nullptr);
    void refresh() override;
    int pointCount() const; // points of the primary run's test accuracy
    QValueAxis* epochAxis() const { return m_x; }

protected:
    void rebuild() override;

private:
    struct Slot {
        QLineSeries* train = nullptr;
        QLineSeries* test = nullptr;
        QLineSeries* quant = nullptr;
        QLineSeries* validation = nullptr; // the Dataset dock's validation images, when held out
    };
    QValueAxis* m_x;
    QValueAxis* m_y;
    std::vector<Slot> m_slots;
};

class LossScaleChart : public RunChart {
    Q_OBJECT
public:
    explicit LossScaleChart(QWidget* parent = nullptr);
    void refresh() override;
    // The empty message: which strategies scale the loss.
    static QString noLossScaleMessage();

protected:
    void rebuild() override;

private:
    struct Slot {
        QLineSeries* scale = nullptr;
        QScatterSeries* skipped = nullptr;
    };
    QValueAxis* m_x;
    QLogValueAxis* m_y;
    std::vector<Slot> m_slots;
};

} // namespace quantscope
