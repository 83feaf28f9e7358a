// The model summary (core/analysis/model_summary.h) in a window: a table with one row per layer
// (name, type, details, inputs, output shape, parameters, MACs, int8 bytes) over the totals and
// the FP32 / int8 / file sizes. The main window fills it; it never calls core itself.
#pragma once

#include "analysis/model_summary.h"

#include <QAbstractTableModel>
#include <QDialog>

class QLabel;
class QTableView;

namespace quantscope {

class ModelSummaryModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Name, Type, Details, Inputs, Output, Params, Macs, Int8Bytes, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void setSummary(const ModelSummary& s);
    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

private:
    ModelSummary m_summary;
};

class ModelSummaryDialog : public QDialog {
    Q_OBJECT
public:
    explicit ModelSummaryDialog(QWidget* parent = nullptr);

    void setSummary(const ModelSummary& s);
    QTableView* table() const { return m_table; }
    QString titleText() const;
    QString totalsText() const;

signals:
    // "Open model file..." was clicked: the owner picks a file and calls setSummary.
    void openFileRequested();

private:
    ModelSummaryModel* m_model;
    QTableView* m_table;
    QLabel* m_title;
    QLabel* m_totals;
};

} // namespace quantscope
