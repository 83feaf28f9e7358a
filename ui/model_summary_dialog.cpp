#include "model_summary_dialog.h"

#include "format_text.h"

#include <QDialogButtonBox>
#include <QHeaderView>
#include <QLabel>
#include <QItemSelectionModel>
#include <QPushButton>
#include <QScreen>
#include <QScrollBar>
#include <QTableView>
#include <QVBoxLayout>

#include <algorithm>

namespace quantscope {

namespace {

QString shapeText(const Shape& s)
{
    QStringList parts;
    for (std::size_t d : s) parts << QString::number(d);
    return parts.join(QStringLiteral(" \u00d7 "));
}

QString bytesWithExact(std::uint64_t b)
{
    return QStringLiteral("%1 (%2 bytes)").arg(formatBytes(static_cast<double>(b)), formatCount(static_cast<double>(b)));
}

// 9345920 -> "9.35 M"
QString macsText(std::uint64_t v)
{
    if (v >= 1000000000ULL) return QString::number(v / 1e9, 'f', 2) + QStringLiteral(" G");
    if (v >= 1000000ULL) return QString::number(v / 1e6, 'f', 2) + QStringLiteral(" M");
    if (v >= 1000ULL) return QString::number(v / 1e3, 'f', 2) + QStringLiteral(" k");
    return QString::number(v);
}

} // namespace

void ModelSummaryModel::setSummary(const ModelSummary& s)
{
    beginResetModel();
    m_summary = s;
    endResetModel();
}

int ModelSummaryModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_summary.layers.size());
}

int ModelSummaryModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant ModelSummaryModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount()) return {};
    const LayerSummary& l = m_summary.layers[static_cast<std::size_t>(index.row())];
    const int c = index.column();
    if (role == Qt::TextAlignmentRole)
        return c >= Params ? QVariant(Qt::AlignRight | Qt::AlignVCenter) : QVariant(Qt::AlignLeft | Qt::AlignVCenter);
    if (role == Qt::ToolTipRole) {
        QString tip = QStringLiteral("%1 (%2)").arg(QString::fromStdString(l.name), QString::fromStdString(l.type));
        if (l.macs) tip += tr("\n%1 multiply-accumulates per image").arg(formatCount(static_cast<double>(l.macs)));
        if (l.elementwiseOps) tip += tr("\n%1 elementwise operations per image").arg(formatCount(static_cast<double>(l.elementwiseOps)));
        if (l.buffers) tip += tr("\n%1 running statistics").arg(formatCount(static_cast<double>(l.buffers)));
        if (!l.foldedInto.empty())
            tip += tr("\nFolded into %1 at integer export: it stores nothing of its own").arg(QString::fromStdString(l.foldedInto));
        return tip;
    }
    if (role != Qt::DisplayRole) return {};
    switch (c) {
    case Name: return QString::fromStdString(l.name);
    case Type: return QString::fromStdString(l.type);
    case Details: {
        QString d = QString::fromStdString(l.detail);
        // Folded into the convolution it reads (its Input(s) cell; the tooltip names it).
        if (!l.foldedInto.empty()) d += (d.isEmpty() ? QString() : QStringLiteral(", ")) + tr("folded");
        return d;
    }
    case Inputs: {
        QStringList in;
        for (const std::string& s : l.inputs) in << QString::fromStdString(s);
        return in.join(QStringLiteral(", "));
    }
    case Output: return shapeText(l.outputShape);
    case Params: return formatCount(static_cast<double>(l.params));
    case Macs: return formatCount(static_cast<double>(l.macs));
    case Int8Bytes: return formatCount(static_cast<double>(l.int8Bytes));
    default: return {};
    }
}

QVariant ModelSummaryModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (orientation != Qt::Horizontal) return QAbstractTableModel::headerData(section, orientation, role);
    if (role == Qt::ToolTipRole) {
        switch (section) {
        case Output: return tr("Output of one image: channels \u00d7 height \u00d7 width, or features");
        case Params: return tr("Trainable parameters: weights, biases, BatchNorm gamma and beta");
        case Macs: return tr("Multiply-accumulates per image: Conv2d outH\u00b7outW\u00b7outC\u00b7(inC/groups)\u00b7k\u00b7k, "
                             "Linear in\u00b7out; other layers 0");
        case Int8Bytes: return tr("Bytes at int8 export: weights 1 byte, biases int32, one float32 scale per output "
                                  "channel; BatchNorm folded into its convolution");
        default: return {};
        }
    }
    if (role != Qt::DisplayRole) return {};
    switch (section) {
    case Name: return tr("Layer");
    case Type: return tr("Type");
    case Details: return tr("Details");
    case Inputs: return tr("Input(s)");
    case Output: return tr("Output shape");
    case Params: return tr("Params");
    case Macs: return tr("MACs");
    case Int8Bytes: return tr("Int8 bytes");
    default: return {};
    }
}

ModelSummaryDialog::ModelSummaryDialog(QWidget* parent) : QDialog(parent)
{
    setObjectName(QStringLiteral("modelSummaryDialog"));
    setWindowTitle(tr("Model summary"));
    m_model = new ModelSummaryModel(this);
    m_title = new QLabel;
    m_title->setObjectName(QStringLiteral("summaryTitle"));
    m_title->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_table = new QTableView;
    m_table->setObjectName(QStringLiteral("summaryTable"));
    m_table->setModel(m_model);
    m_table->verticalHeader()->hide();
    m_table->setAlternatingRowColors(true);
    m_table->setWordWrap(false);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 6);
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->horizontalHeader()->setDefaultAlignment(Qt::AlignLeft | Qt::AlignVCenter);
    m_totals = new QLabel;
    m_totals->setObjectName(QStringLiteral("summaryTotals"));
    m_totals->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_totals->setWordWrap(true);

    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close);
    QPushButton* open = buttons->addButton(tr("Open model file\u2026"), QDialogButtonBox::ActionRole);
    open->setToolTip(tr("Summarise a .qsm or .onnx file"));
    connect(open, &QPushButton::clicked, this, &ModelSummaryDialog::openFileRequested);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    buttons->button(QDialogButtonBox::Close)->setDefault(true);
    buttons->button(QDialogButtonBox::Close)->setFocus();

    auto* v = new QVBoxLayout(this);
    v->addWidget(m_title);
    v->addWidget(m_table, 1);
    v->addWidget(m_totals);
    v->addWidget(buttons);
    resize(980, 620);
}

void ModelSummaryDialog::setSummary(const ModelSummary& s)
{
    m_model->setSummary(s);
    const QString source = s.source == "preset" ? tr("preset") : QString::fromStdString(s.source);
    m_title->setText(tr("<b>%1</b> (%2): input %3, %4 classes, %5")
                         .arg(QString::fromStdString(s.modelName).toHtmlEscaped(), source.toHtmlEscaped(), shapeText(s.inputShape))
                         .arg(s.classes)
                         .arg(QString::fromStdString(s.precision).toHtmlEscaped()));
    QString t = tr("<b>%1</b> layers &nbsp; <b>%2</b> parameters &nbsp; <b>%3</b> MACs per image (%4) &nbsp; "
                   "%5 elementwise ops per image<br>FP32 size <b>%6</b>")
                    .arg(s.layers.size())
                    .arg(formatCount(static_cast<double>(s.params)), macsText(s.macs), formatCount(static_cast<double>(s.macs)),
                         formatCount(static_cast<double>(s.elementwiseOps)), bytesWithExact(s.fp32Bytes));
    if (s.storedWeights.empty()) {
        t += tr(" &nbsp; int8 size <b>%1</b> (BatchNorm folded, int8 weights, int32 biases, per-channel scales)").arg(bytesWithExact(s.int8Bytes));
    } else { // a quantized file: what it stores (a tensor-wise file read "per-channel scales" here, as in info)
        std::uint64_t stored = 0;
        QStringList grans;
        for (const StoredWeights& l : s.storedWeights) {
            stored += l.bytes;
            const QString g = QString::fromStdString(l.format + (l.granularity.empty() ? "" : " " + l.granularity));
            if (!grans.contains(g)) grans << g;
        }
        t += tr(" &nbsp; stored weights <b>%1</b> (%2; with their scales and zero points, biases not counted)")
                 .arg(bytesWithExact(stored), grans.join(QStringLiteral(", ")).toHtmlEscaped());
    }
    if (s.fileBytes) t += tr(" &nbsp; file <b>%1</b>").arg(bytesWithExact(*s.fileBytes));
    const std::size_t own = s.sourceParams();
    if (s.importAddedParams)
        t += tr("<br>Of the parameters, <b>%1</b> are in layers the ONNX reading added for operations computed without "
                "parameters in the file (see the notes).")
                 .arg(formatCount(static_cast<double>(s.importAddedParams)));
    if (s.importFoldedParams)
        t += tr("<br>The ONNX reading folded <b>%1</b> BatchNorm1d parameters (gamma, beta) into Linears (see the notes).")
                 .arg(formatCount(static_cast<double>(s.importFoldedParams)));
    if (s.importAddedParams || s.importFoldedParams) t += tr(" The file's model has <b>%1</b>.").arg(formatCount(static_cast<double>(own)));
    if (s.exporterFoldedConvs)
        t += tr("<br>The exporter folded BatchNorm into %1 convolution(s): as trained, with BatchNorm, the model had "
                "<b>%2</b> parameters if the convolutions had no bias (bias=False), <b>%3</b> if they had biases "
                "(nn.Conv2d's default); the file cannot tell which.")
                 .arg(s.exporterFoldedConvs)
                 .arg(formatCount(static_cast<double>(own + s.exporterFoldedChannels)),
                      formatCount(static_cast<double>(own + 2 * s.exporterFoldedChannels)));
    for (const std::string& n : s.notes) t += tr("<br>Note: %1.").arg(QString::fromStdString(n).toHtmlEscaped());
    m_totals->setText(t);
    m_table->resizeColumnsToContents();
    m_table->selectionModel()->clearCurrentIndex();
    // Wide enough for every column (within the screen), so no column hides behind a scroll bar.
    const QMargins lm = layout()->contentsMargins();
    int w = m_table->verticalScrollBar()->sizeHint().width() + 2 * m_table->frameWidth() + lm.left() + lm.right() + 32;
    for (int c = 0; c < ModelSummaryModel::ColumnCount; ++c) w += m_table->columnWidth(c);
    const QRect avail = screen() ? screen()->availableGeometry() : QRect(0, 0, 1600, 1000);
    resize(std::min(std::max(w, 760), avail.width() - 40), std::min(660, avail.height() - 40));
    setWindowTitle(tr("Model summary: %1").arg(QString::fromStdString(s.modelName)));
}

QString ModelSummaryDialog::titleText() const { return m_title->text(); }
QString ModelSummaryDialog::totalsText() const { return m_totals->text(); }

} // namespace quantscope
