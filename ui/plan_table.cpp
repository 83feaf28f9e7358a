#include "plan_table.h"

#include "format_text.h"
#include "quant_catalog.h"

#include "quant/format.h"
#include "quant/granularity.h"

#include <QColor>
#include <QComboBox>
#include <QFont>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QTableView>
#include <QTimer>
#include <QVBoxLayout>

namespace quantscope {

namespace {

QString qs(const std::string& s) { return QString::fromStdString(s); }

bool isInteger(const std::string& format)
{
    for (const NumberFormat& f : numberFormats())
        if (f.name == format) return needsScale(f);
    return false;
}

QStringList weightFormatChoices()
{
    QStringList l;
    for (const NumberFormat& f : numberFormats()) l << qs(f.name);
    return l;
}

QStringList activationChoices()
{
    QStringList l;
    for (const NumberFormat& f : numberFormats())
        if (needsScale(f) && f.bits <= 16) l << qs(f.name);
    return l;
}

// Granularities a layer with rows of `row` weights can take: no group larger than a row.
QStringList granularityChoicesFor(std::size_t row)
{
    QStringList l{"channel", "tensor", "layer", "global"};
    for (std::size_t g : {8u, 16u, 32u, 64u, 128u})
        if (g <= row) l << QStringLiteral("group:%1").arg(g);
    return l;
}

} // namespace

void PlanTableModel::setModel(std::shared_ptr<const Model> model)
{
    beginResetModel();
    m_model = std::move(model);
    m_rowLength.clear();
    if (m_model)
        for (std::size_t i = 0; i < m_model->size(); ++i) {
            const LayerKind k = m_model->layer(i).kind();
            if (k != LayerKind::Conv2d && k != LayerKind::Linear) continue;
            std::size_t row = 0;
            for (const Param* p : const_cast<Model&>(*m_model).layer(i).params())
                if (p->isWeight && p->value.rank()) row = p->value.numel() / p->value.dim(0);
            m_rowLength.push_back(row);
        }
    recompute();
    endResetModel();
}

void PlanTableModel::setPlan(const PrecisionPlan& plan)
{
    beginResetModel();
    m_plan = plan;
    recompute();
    endResetModel();
}

void PlanTableModel::recompute()
{
    m_size = PlanSize{};
    if (!m_model) return;
    try {
        m_size = planSize(*m_model, m_plan);
    } catch (const std::exception&) { // a name being typed elsewhere: no sizes until it is valid
        m_size = PlanSize{};
    }
}

const LayerOverride* PlanTableModel::entryOf(const std::string& layer) const
{
    for (const LayerOverride& o : m_plan.layers)
        if (o.layer == layer) return &o;
    return nullptr;
}

int PlanTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_size.layers.size());
}

int PlanTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant PlanTableModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal) return {};
    static const char* const names[] = {"Layer", "Params", "Weights", "Granularity", "Acts", "Bytes"};
    static const char* const tips[] = {"The model's layer name.", "Weights and biases of the layer.",
                                       "Weight format; fp32 keeps the layer in float (weights and output).",
                                       "How many scales the integer weights get (integer formats only).",
                                       "Activations: the format of the layer's output (integer weights only).",
                                       "Stored bytes: packed weights, scales, zero points, biases."};
    if (role == Qt::DisplayRole) return tr(names[section]);
    if (role == Qt::ToolTipRole) return tr(tips[section]);
    return {};
}

QVariant PlanTableModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount()) return {};
    const LayerSize& s = m_size.layers[static_cast<std::size_t>(index.row())];
    const LayerPrecision p = m_plan.forLayer(s.layer);
    const LayerOverride* e = entryOf(s.layer);
    const bool integer = isInteger(p.format);
    switch (role) {
    case Qt::DisplayRole:
    case Qt::EditRole:
        switch (index.column()) {
        case Layer: return qs(s.layer);
        case Params: return formatCount(double(s.weights + s.biases));
        case Weights: return qs(p.format);
        case Granularity:
            if (!integer) return role == Qt::EditRole ? qs(p.granularity) : QStringLiteral("\u2013");
            return qs(p.granularity);
        case Activations: return integer ? qs(p.activationFormat) : (p.keepFp32() ? QStringLiteral("fp32") : qs(p.format));
        case Bytes: return formatCount(double(s.bytes));
        }
        break;
    case Qt::TextAlignmentRole:
        if (index.column() == Params || index.column() == Bytes) return int(Qt::AlignRight | Qt::AlignVCenter);
        break;
    case Qt::ForegroundRole:
    case Qt::FontRole: { // inherited from the default: grey; set for this layer: bold
        if (index.column() < Weights || index.column() > Activations) break;
        const bool own = e && ((index.column() == Weights && e->format.has_value()) ||
                               (index.column() == Granularity && e->granularity.has_value()) ||
                               (index.column() == Activations && e->activationFormat.has_value()));
        if (role == Qt::ForegroundRole) return own ? QVariant() : QVariant(QColor(Qt::gray));
        if (own) {
            QFont f;
            f.setBold(true);
            return f;
        }
        break;
    }
    case Qt::ToolTipRole:
        if (index.column() == Bytes)
            return tr("%1 weights in %2 bytes, %3 scale bytes, %4 bias bytes; %5 bits a weight (FP32: %6 bytes)")
                .arg(formatCount(double(s.weights)), formatCount(double(s.weightBytes)), formatCount(double(s.scaleBytes)),
                     formatCount(double(s.biasBytes)), QString::number(s.bitsPerWeight, 'f', 2), formatCount(double(s.fp32Bytes)));
        if (index.column() >= Weights && index.column() <= Activations)
            return e ? tr("Set for this layer; the default is %1.").arg(qs(index.column() == Weights ? m_plan.defaults.format
                                                                          : index.column() == Granularity ? m_plan.defaults.granularity
                                                                                                          : m_plan.defaults.activationFormat))
                     : tr("From the plan's default; pick a value to set it for this layer.");
        break;
    case ChoicesRole:
        switch (index.column()) {
        case Weights: return weightFormatChoices();
        case Granularity: return granularityChoicesFor(m_rowLength.at(static_cast<std::size_t>(index.row())));
        case Activations: return activationChoices();
        }
        break;
    }
    return {};
}

Qt::ItemFlags PlanTableModel::flags(const QModelIndex& index) const
{
    Qt::ItemFlags f = QAbstractTableModel::flags(index);
    if (!index.isValid()) return f;
    const LayerPrecision p = m_plan.forLayer(m_size.layers[static_cast<std::size_t>(index.row())].layer);
    const bool integer = isInteger(p.format);
    if (index.column() == Weights || (integer && (index.column() == Granularity || index.column() == Activations)))
        f |= Qt::ItemIsEditable;
    return f;
}

bool PlanTableModel::setData(const QModelIndex& index, const QVariant& value, int role)
{
    if (role != Qt::EditRole || !(flags(index) & Qt::ItemIsEditable)) return false;
    const std::string layer = m_size.layers[static_cast<std::size_t>(index.row())].layer;
    const std::string v = value.toString().toStdString();
    if (!data(index, ChoicesRole).toStringList().contains(qs(v))) return false;
    LayerOverride& e = m_plan.entry(layer);
    if (index.column() == Weights) e.format = v;
    else if (index.column() == Granularity) e.granularity = v;
    else e.activationFormat = v;
    recompute();
    emit dataChanged(this->index(0, 0), this->index(rowCount() - 1, ColumnCount - 1));
    emit planEdited();
    return true;
}

QWidget* PlanComboDelegate::createEditor(QWidget* parent, const QStyleOptionViewItem&, const QModelIndex& index) const
{
    auto* c = new QComboBox(parent);
    c->addItems(index.data(PlanTableModel::ChoicesRole).toStringList());
    // Commit as soon as a value is picked.
    connect(c, &QComboBox::activated, this, [this, c] {
        emit const_cast<PlanComboDelegate*>(this)->commitData(c);
        emit const_cast<PlanComboDelegate*>(this)->closeEditor(c);
    });
    return c;
}

void PlanComboDelegate::setEditorData(QWidget* editor, const QModelIndex& index) const
{
    auto* c = static_cast<QComboBox*>(editor);
    c->setCurrentIndex(std::max(0, c->findText(index.data(Qt::EditRole).toString())));
}

void PlanComboDelegate::setModelData(QWidget* editor, QAbstractItemModel* model, const QModelIndex& index) const
{
    model->setData(index, static_cast<QComboBox*>(editor)->currentText(), Qt::EditRole);
}

PlanTable::PlanTable(QWidget* parent) : QWidget(parent), m_model(new PlanTableModel(this)), m_view(new QTableView), m_total(new QLabel)
{
    m_view->setObjectName(QStringLiteral("planTableView"));
    m_view->setModel(m_model);
    m_view->setItemDelegate(new PlanComboDelegate(m_view));
    m_view->setEditTriggers(QAbstractItemView::AllEditTriggers);
    m_view->setSelectionMode(QAbstractItemView::NoSelection);
    m_view->verticalHeader()->hide();
    m_view->verticalHeader()->setDefaultSectionSize(m_view->fontMetrics().height() + 8);
    m_view->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_view->horizontalHeader()->setSectionResizeMode(PlanTableModel::Layer, QHeaderView::Stretch); // long names elide
    m_view->horizontalHeader()->setMinimumSectionSize(40);
    m_view->setTextElideMode(Qt::ElideMiddle);
    m_total->setObjectName(QStringLiteral("planTotal"));
    m_total->setWordWrap(true);
    m_reset = new QPushButton(tr("Uniform"));
    m_reset->setToolTip(tr("Forget every layer's own settings: all layers take the options above."));

    m_load = new QPushButton(tr("Load plan\u2026"));
    m_load->setObjectName(QStringLiteral("planLoad"));
    m_load->setToolTip(tr("Read a plan file (JSON, docs/PLANS.md): its default becomes the options above, its layers this table."));
    m_save = new QPushButton(tr("Save plan\u2026"));
    m_save->setObjectName(QStringLiteral("planSave"));
    m_save->setToolTip(tr("Write the options above and this table as a plan file (quantscope-cli train --plan reads it)."));
    connect(m_load, &QPushButton::clicked, this, &PlanTable::loadRequested);
    connect(m_save, &QPushButton::clicked, this, &PlanTable::saveRequested);
    m_note = new QLabel;
    m_note->setObjectName(QStringLiteral("planNote"));
    m_note->setWordWrap(true);
    m_note->hide();

    auto* bottom = new QHBoxLayout;
    bottom->addWidget(m_total, 1);
    bottom->addWidget(m_reset);
    auto* files = new QHBoxLayout;
    files->addStretch(1);
    files->addWidget(m_load);
    files->addWidget(m_save);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(0, 0, 0, 0);
    v->addWidget(m_view);
    v->addLayout(bottom);
    v->addLayout(files);
    v->addWidget(m_note);

    connect(m_model, &PlanTableModel::planEdited, this, [this] {
        updateTotal();
        emit planEdited();
    });
    connect(m_reset, &QPushButton::clicked, this, [this] {
        PrecisionPlan p = m_model->plan();
        if (p.layers.empty()) return;
        p.layers.clear();
        setPlan(p);
        emit planEdited();
    });
    updateTotal();
}

void PlanTable::setNote(const QString& text, bool error)
{
    m_note->setText(text);
    m_note->setStyleSheet(error ? QStringLiteral("color: #a40000;") : QString());
    m_note->setVisible(!text.isEmpty());
    if (text.isEmpty()) return;
    // The note sits under the table at the foot of the Training dock: scroll it into view once
    // laid out, or a Load plan error shows cut at the dock's edge (tester 15 #14).
    QTimer::singleShot(0, m_note, [note = m_note] {
        for (QWidget* w = note->parentWidget(); w; w = w->parentWidget())
            if (auto* area = qobject_cast<QScrollArea*>(w)) {
                area->ensureWidgetVisible(note, 0, 8);
                return;
            }
    });
}

QString PlanTable::noteText() const { return m_note->text(); }

void PlanTable::setModel(std::shared_ptr<const Model> model, const QString& unavailable)
{
    m_unavailable = model ? QString() : unavailable;
    m_model->setModel(std::move(model));
    updateTotal();
}

void PlanTable::setPlan(const PrecisionPlan& plan)
{
    m_model->setPlan(plan);
    updateTotal();
}

void PlanTable::updateTotal()
{
    // As tall as its rows (up to 12; more scroll).
    const int rows = std::clamp(m_model->rowCount(), 2, 12);
    m_view->setFixedHeight(m_view->horizontalHeader()->sizeHint().height() + rows * m_view->verticalHeader()->defaultSectionSize() +
                           2 * m_view->frameWidth() + m_view->horizontalScrollBar()->sizeHint().height());
    const PlanSize& s = m_model->size();
    m_reset->setEnabled(!m_model->plan().layers.empty());
    if (!m_model->hasModel() || s.fp32Bytes == 0) {
        m_total->setText(m_unavailable.isEmpty() ? tr("Load a dataset to see the model's layers.") : m_unavailable);
        return;
    }
    m_total->setText(tr("<b>Model %1</b> (%2 bytes), %3 % of FP32 %4, %5 bits per weight on average")
                         .arg(formatBytes(double(s.bytes)), formatCount(double(s.bytes)), QString::number(s.percentOfFp32, 'f', 1),
                              formatBytes(double(s.fp32Bytes)), QString::number(s.bitsPerWeight, 'f', 2)));
}

} // namespace quantscope
