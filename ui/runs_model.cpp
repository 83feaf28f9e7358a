#include "runs_model.h"

#include "format_text.h"
#include "quant_catalog.h"

#include <QBrush>
#include <QColor>
#include <QFont>
#include <QPixmap>

namespace quantscope {

RunsModel::RunsModel(QObject* parent) : QAbstractTableModel(parent) {}

QIcon RunsModel::swatch(const QColor& c) const
{
    auto it = m_swatches.constFind(c.rgb());
    if (it != m_swatches.constEnd()) return *it;
    constexpr int kSwatch = 16; // the item views' decoration size (QStyle::PM_SmallIconSize); scaled if another
    QPixmap pm(kSwatch, kSwatch);
    pm.fill(c);
    // The same pixmap when the row is selected: the view's default tints it with the selection
    // colour, and orange read as tan beside the chart's orange (tester 19 L7).
    QIcon icon;
    icon.addPixmap(pm, QIcon::Normal);
    icon.addPixmap(pm, QIcon::Selected);
    return *m_swatches.insert(c.rgb(), icon);
}

int RunsModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_runs.size());
}

int RunsModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant RunsModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal) return {};
    static const char* names[] = {"#",        "Model",     "Strategy", "Format", "Granularity", "Epochs",
                                  "FP32 acc", "Quant acc", "Size",     "Time",   "Status"};
    static const char* tips[] = {
        "Run number in this session.",
        "Model preset.",
        "Precision strategy.",
        "Number format the model is stored in.",
        "How many weights share a quantization scale.",
        "Epochs completed / planned.",
        "Final test accuracy of the model with FP32 weights (or its own arithmetic for mixed / pure low precision).",
        "Final test accuracy of the quantized model.",
        "Model size for its format: parameters \u00d7 bits / 8, plus 4 bytes per scale.",
        "Wall-clock time of the run, its evaluations included and the time spent paused left out (while it "
        "trains: up to its latest step).",
        "State of the run."};
    if (section < 0 || section >= ColumnCount) return {};
    if (role == Qt::DisplayRole) return tr(names[section]);
    if (role == Qt::ToolTipRole) return tr(tips[section]);
    return {};
}

QVariant RunsModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount()) return {};
    const RunRecord& r = *m_runs[static_cast<std::size_t>(index.row())];
    const PrecisionConfig& p = r.config.precision;
    const StrategyInfo& s = strategyInfo(p.strategy);
    if (role == Qt::ToolTipRole) {
        // A failed run's Status and a plan's Format are elided in the middle when long ("failed:
        // /w... its size)"; tester 12 #11): the tooltip gives them whole, above the run's options.
        if (index.column() == Status || index.column() == Format)
            return data(index, Qt::DisplayRole).toString() + QStringLiteral("\n\n") + r.configTooltip();
        return r.configTooltip();
    }
    if (role == Qt::TextAlignmentRole) {
        switch (index.column()) {
        case Id: case Epochs: case Fp32Acc: case QuantAcc: case Size: case Time:
            return int(Qt::AlignRight | Qt::AlignVCenter);
        default: return int(Qt::AlignLeft | Qt::AlignVCenter);
        }
    }
    if (role == Qt::ForegroundRole && index.column() == Status) {
        if (r.status == RunStatus::Failed) return QBrush(QColor(0xa4, 0, 0));
        if (r.status == RunStatus::Running || r.status == RunStatus::Paused) return QBrush(QColor(0x1f, 0x5f, 0xa0));
    }
    if (role == Qt::UserRole) return r.id;
    if (role == Qt::DecorationRole && index.column() == Id) {
        if (m_shown.contains(r.id)) return swatch(runColor(r));
    }
    if (role != Qt::DisplayRole) return {};
    switch (index.column()) {
    case Id: return r.id;
    case Model: return QString::fromStdString(r.config.model);
    case Strategy: return QString::fromLatin1(s.name);
    case Format: {
        // A per-layer plan: the default and how many layers have their own precision ("int3 + 10
        // layer(s)" read as int3 and ten more layers).
        const QString plan = p.layers.empty() ? QString() : tr(" default, %1 per-layer").arg(p.layers.size());
        if (p.strategy == Strategy::Progressive) return QString::fromStdString(p.schedule) + plan;
        return s.uses("format") ? QString::fromStdString(p.format) + plan : noValueText();
    }
    case Granularity: return s.uses("granularity") ? granularityLabel(p.granularity) : noValueText();
    case Epochs: {
        const std::size_t done = r.finished ? r.finish.epochsDone : r.epochs.size();
        return QStringLiteral("%1/%2").arg(done).arg(r.config.epochs);
    }
    case Fp32Acc: return formatPercent(r.finalTestAccuracy());
    case QuantAcc: return formatPercent(r.finalQuantAccuracy());
    case Size: return formatBytes(r.modelBytes);
    case Time: return formatSeconds(r.seconds());
    case Status: return r.status == RunStatus::Failed && !r.error.isEmpty() ? tr("failed: %1").arg(r.error)
                                                                            : runStatusText(r.status);
    }
    return {};
}

int RunsModel::addRun(RunPtr run)
{
    const int row = rowCount();
    beginInsertRows({}, row, row);
    m_runs.push_back(std::move(run));
    endInsertRows();
    return row;
}

void RunsModel::addRuns(const std::vector<RunPtr>& runs)
{
    if (runs.empty()) return;
    const int row = rowCount();
    beginInsertRows({}, row, row + static_cast<int>(runs.size()) - 1);
    int id = nextId();
    for (const RunPtr& r : runs) {
        r->id = id++; // loaded runs are renumbered after the session's runs
        m_runs.push_back(r);
    }
    endInsertRows();
}

void RunsModel::runChanged(int id)
{
    const int row = rowOf(id);
    if (row >= 0) emit dataChanged(index(row, 0), index(row, ColumnCount - 1));
}

void RunsModel::timeChanged(int id)
{
    const int row = rowOf(id);
    if (row >= 0) emit dataChanged(index(row, Time), index(row, Time), {Qt::DisplayRole});
}

RunPtr RunsModel::runAt(int row) const
{
    return row >= 0 && row < rowCount() ? m_runs[static_cast<std::size_t>(row)] : nullptr;
}

RunPtr RunsModel::runById(int id) const { return runAt(rowOf(id)); }

int RunsModel::rowOf(int id) const
{
    for (std::size_t i = 0; i < m_runs.size(); ++i)
        if (m_runs[i]->id == id) return static_cast<int>(i);
    return -1;
}

void RunsModel::setShownRuns(const QList<int>& ids)
{
    if (ids == m_shown) return;
    m_shown = ids;
    if (rowCount() > 0) emit dataChanged(index(0, Id), index(rowCount() - 1, Id), {Qt::DecorationRole});
}

int RunsModel::nextId() const
{
    int id = 1;
    for (const RunPtr& r : m_runs) id = std::max(id, r->id + 1);
    return id;
}

} // namespace quantscope
