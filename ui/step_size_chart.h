// StepSizeChart: the learned step sizes of a QAT run with --quantizer lsq (LSQ, Esser et al. 2020)
// over the training steps, one line per quantizer (weights solid, activations dashed; per-channel
// weights show the mean over channels), on a log axis. It draws the primary run only: step sizes
// of different runs are not comparable layer by layer.
#pragma once

#include "chart_view.h"

#include <QStringList>

class QLogValueAxis;
class QLineSeries;

namespace quantscope {

class StepSizeChart : public RunChart {
    Q_OBJECT
public:
    explicit StepSizeChart(QWidget* parent = nullptr);
    void refresh() override;

protected:
    void rebuild() override;

private:
    QValueAxis* m_x;
    QLogValueAxis* m_y;
    QStringList m_keys; // "layer/tensor" of each series, in the order of the run's tracks
    std::vector<QLineSeries*> m_series;
};

} // namespace quantscope
