#include "schedule_editor.h"

#include "quant_catalog.h"

#include <QComboBox>
#include <QCoreApplication>
#include <QEvent>
#include <QHBoxLayout>
#include <QPushButton>
#include <QSpinBox>
#include <QToolButton>
#include <QVBoxLayout>

namespace quantscope {

ScheduleEditor::ScheduleEditor(QWidget* parent) : QWidget(parent)
{
    m_rows = new QVBoxLayout;
    m_rows->setContentsMargins(0, 0, 0, 0);
    m_rows->setSpacing(2);
    m_add = new QPushButton(tr("+ phase"));
    m_add->setToolTip(tr("Appends a phase: a format trained for a number of epochs."));
    connect(m_add, &QPushButton::clicked, this, [this] {
        addRow(QStringLiteral("int8"), 1);
        emit changed();
    });
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(0, 0, 0, 0);
    v->setSpacing(2);
    v->addLayout(m_rows);
    setToolTip(tr("Progressive training moves through these phases in order, e.g. FP32, then FP16, then INT8."));
}

void ScheduleEditor::addRow(const QString& format, int epochs)
{
    auto* row = new QWidget;
    auto* h = new QHBoxLayout(row);
    h->setContentsMargins(0, 0, 0, 0);
    auto* fmt = new QComboBox;
    for (const FormatChoice& f : formatChoices()) {
        fmt->addItem(f.name, f.name);
        fmt->setItemData(fmt->count() - 1, f.description, Qt::ToolTipRole);
    }
    if (fmt->findData(format) < 0) fmt->addItem(format, format);
    fmt->setCurrentIndex(fmt->findData(format));
    fmt->setToolTip(tr("The number format of this phase."));
    auto* ep = new QSpinBox;
    ep->setRange(1, 1000);
    ep->setValue(epochs);
    auto suffix = [ep](int v) { ep->setSuffix(v == 1 ? tr(" epoch") : tr(" epochs")); };
    suffix(epochs);
    connect(ep, &QSpinBox::valueChanged, ep, suffix);
    ep->setToolTip(tr("How many epochs this phase lasts."));
    auto* del = new QToolButton;
    del->setText(QStringLiteral("\u2212"));
    del->setToolTip(tr("Removes this phase."));
    for (QWidget* w : {static_cast<QWidget*>(fmt), static_cast<QWidget*>(ep)}) {
        w->setFocusPolicy(Qt::StrongFocus);
        w->installEventFilter(this);
    }
    h->addWidget(fmt, 1);
    h->addWidget(ep);
    h->addWidget(del);
    row->setProperty("format", QVariant::fromValue<QObject*>(fmt));
    row->setProperty("epochs", QVariant::fromValue<QObject*>(ep));
    connect(fmt, &QComboBox::currentIndexChanged, this, [this] {
        if (!m_initializing) emit changed();
    });
    connect(ep, &QSpinBox::valueChanged, this, [this] {
        if (!m_initializing) emit changed();
    });
    connect(del, &QToolButton::clicked, this, [this, row] {
        removeRow(row);
        emit changed();
    });
    m_rows->addWidget(row);
    updateButtons();
}

bool ScheduleEditor::eventFilter(QObject* watched, QEvent* event)
{
    auto* w = qobject_cast<QWidget*>(watched);
    if (event->type() == QEvent::Wheel && w && !w->hasFocus()) {
        QCoreApplication::sendEvent(this, event); // on up to the dock's scroll area
        return true;
    }
    return QWidget::eventFilter(watched, event);
}

void ScheduleEditor::removeRow(QWidget* row)
{
    m_rows->removeWidget(row);
    row->deleteLater();
    row->hide();
    row->setParent(nullptr);
    updateButtons();
}

void ScheduleEditor::updateButtons()
{
    const int n = m_rows->count();
    for (int i = 0; i < n; ++i) {
        QWidget* row = m_rows->itemAt(i)->widget();
        for (QToolButton* b : row->findChildren<QToolButton*>()) b->setEnabled(n > 1);
    }
    m_add->setEnabled(isEnabled() && n < 8); // the button sits in the label column, outside this widget
    m_add->setToolTip(toolTip());
}

void ScheduleEditor::changeEvent(QEvent* e)
{
    QWidget::changeEvent(e);
    if (e->type() == QEvent::EnabledChange || e->type() == QEvent::ToolTipChange) updateButtons();
}

void ScheduleEditor::setSchedule(const QString& spec)
{
    m_initializing = true;
    while (m_rows->count() > 0) {
        QWidget* w = m_rows->itemAt(0)->widget();
        m_rows->removeWidget(w);
        delete w;
    }
    for (const QString& part : spec.split(QLatin1Char(','), Qt::SkipEmptyParts)) {
        const QString fmt = part.section(QLatin1Char(':'), 0, 0).trimmed();
        bool ok = false;
        const int ep = part.section(QLatin1Char(':'), 1, 1).toInt(&ok);
        addRow(fmt, ok && ep > 0 ? ep : 1);
    }
    if (m_rows->count() == 0) addRow(QStringLiteral("fp32"), 1);
    m_initializing = false;
    updateButtons();
}

QString ScheduleEditor::schedule() const
{
    QStringList parts;
    for (int i = 0; i < m_rows->count(); ++i) {
        QWidget* row = m_rows->itemAt(i)->widget();
        auto* fmt = qobject_cast<QComboBox*>(row->property("format").value<QObject*>());
        auto* ep = qobject_cast<QSpinBox*>(row->property("epochs").value<QObject*>());
        if (fmt && ep) parts << QStringLiteral("%1:%2").arg(fmt->currentData().toString()).arg(ep->value());
    }
    return parts.join(QLatin1Char(','));
}

std::size_t ScheduleEditor::totalEpochs() const
{
    std::size_t n = 0;
    for (int i = 0; i < m_rows->count(); ++i) {
        auto* ep = qobject_cast<QSpinBox*>(m_rows->itemAt(i)->widget()->property("epochs").value<QObject*>());
        if (ep) n += static_cast<std::size_t>(ep->value());
    }
    return n;
}

} // namespace quantscope
