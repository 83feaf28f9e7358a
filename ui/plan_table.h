// The per-layer precision plan table of the Training dock: one row per Conv2d/Linear layer with
// its name, parameters, an editable weight format, granularity and activation format (combo
// delegates), and its stored size; under it a live total (model bytes, % of FP32, average bits
// per weight). Sizes come from core's planSize (quant/plan_size.h), the only place they are
// computed. Cells a layer takes from the plan's default are shown in grey; an edit makes it the
// layer's own entry. The table edits plans; the Training panel owns the config.
#pragma once

#include "nn/model.h"
#include "quant/plan_size.h"
#include "quant/precision_plan.h"

#include <QAbstractTableModel>
#include <QStyledItemDelegate>
#include <QWidget>

#include <memory>

class QLabel;
class QPushButton;
class QTableView;

namespace quantscope {

class PlanTableModel final : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Layer, Params, Weights, Granularity, Activations, Bytes, ColumnCount };
    static constexpr int ChoicesRole = Qt::UserRole + 1; // QStringList of an editable cell's values

    using QAbstractTableModel::QAbstractTableModel;

    // The model whose layers are rows (null: no rows). Entries for layers it lacks stay in the plan.
    void setModel(std::shared_ptr<const Model> model);
    void setPlan(const PrecisionPlan& plan);
    const PrecisionPlan& plan() const { return m_plan; }
    const PlanSize& size() const { return m_size; }
    bool hasModel() const { return m_model != nullptr; }
    const Model* model() const { return m_model.get(); }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role) const override;
    QVariant headerData(int section, Qt::Orientation o, int role) const override;
    Qt::ItemFlags flags(const QModelIndex& index) const override;
    bool setData(const QModelIndex& index, const QVariant& value, int role) override;

signals:
    void planEdited(); // the user changed a cell

private:
    void recompute();
    const LayerOverride* entryOf(const std::string& layer) const;

    std::shared_ptr<const Model> m_model;
    PrecisionPlan m_plan;
    PlanSize m_size;
    std::vector<std::size_t> m_rowLength; // weights per output channel, per row (group sizes that fit)
};

// A combo box over the cell's ChoicesRole values.
class PlanComboDelegate final : public QStyledItemDelegate {
    Q_OBJECT
public:
    using QStyledItemDelegate::QStyledItemDelegate;
    QWidget* createEditor(QWidget* parent, const QStyleOptionViewItem& option, const QModelIndex& index) const override;
    void setEditorData(QWidget* editor, const QModelIndex& index) const override;
    void setModelData(QWidget* editor, QAbstractItemModel* model, const QModelIndex& index) const override;
};

class PlanTable final : public QWidget {
    Q_OBJECT
public:
    explicit PlanTable(QWidget* parent = nullptr);

    PlanTableModel* tableModel() const { return m_model; }
    QTableView* view() const { return m_view; }
    QLabel* totalLabel() const { return m_total; }
    QPushButton* loadButton() const { return m_load; }
    QPushButton* saveButton() const { return m_save; }
    // A line under the table: what Load / Save did, or why they could not (in red).
    void setNote(const QString& text, bool error);
    QString noteText() const;
    // The model whose layers are rows. Null with `unavailable`: why its layers cannot be listed
    // (shown in place of the total); null without: no dataset is loaded yet.
    void setModel(std::shared_ptr<const Model> model, const QString& unavailable = {});
    void setPlan(const PrecisionPlan& plan);
    const PrecisionPlan& plan() const { return m_model->plan(); }

signals:
    void planEdited();
    // Load plan... / Save plan... were clicked (the Training panel owns the files: it holds the defaults).
    void loadRequested();
    void saveRequested();

private:
    void updateTotal();

    PlanTableModel* m_model;
    QTableView* m_view;
    QLabel* m_total;
    QPushButton* m_reset;
    QPushButton* m_load;
    QPushButton* m_save;
    QLabel* m_note;
    QString m_unavailable;
};

} // namespace quantscope
