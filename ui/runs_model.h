// The runs of the session as a table model: configuration, final FP32 and quantized accuracy,
// model size for its format, time and status. It owns the RunRecords; rows never reorder.
#pragma once

#include "run_record.h"

#include <QAbstractTableModel>
#include <QHash>
#include <QIcon>

#include <vector>

namespace quantscope {

class RunsModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Id, Model, Strategy, Format, Granularity, Epochs, Fp32Acc, QuantAcc, Size, Time, Status, ColumnCount };

    explicit RunsModel(QObject* parent = nullptr);

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role) const override;
    QVariant headerData(int section, Qt::Orientation o, int role) const override;

    int addRun(RunPtr run); // returns its row
    void addRuns(const std::vector<RunPtr>& runs);
    void runChanged(int id);
    // Only run `id`'s Time cell changed (a running run's clock; its other cells did not).
    void timeChanged(int id);
    RunPtr runAt(int row) const;
    RunPtr runById(int id) const;
    int rowOf(int id) const;
    const std::vector<RunPtr>& runs() const { return m_runs; }
    int nextId() const;
    // The runs the charts show: their # cell gets the run's chart colour (runColor).
    void setShownRuns(const QList<int>& ids);

private:
    QIcon swatch(const QColor& c) const;

    std::vector<RunPtr> m_runs;
    QList<int> m_shown;
    // One swatch icon per chart colour, made once. A QColor decoration would make the view's
    // delegate draw a new QPixmap and QIcon at every repaint of the cell, and Qt caches each
    // drawn icon in QPixmapCache under that pixmap's serial number: the cache gained entries no
    // later repaint could hit, at every repaint (up to its 10 MiB limit).
    mutable QHash<QRgb, QIcon> m_swatches;
};

} // namespace quantscope
