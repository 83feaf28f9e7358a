#include "flow_layout.h"

#include <QHBoxLayout>
#include <QWidget>

#include <algorithm>

namespace quantscope {

FlowLayout::FlowLayout(int hSpacing, int vSpacing) : m_hSpacing(hSpacing), m_vSpacing(vSpacing)
{
    setContentsMargins(0, 0, 0, 0);
}

FlowLayout::~FlowLayout()
{
    while (QLayoutItem* item = takeAt(0)) delete item;
}

void FlowLayout::addItem(QLayoutItem* item) { m_items.append(item); }

QLayoutItem* FlowLayout::takeAt(int index)
{
    if (index < 0 || index >= m_items.size()) return nullptr;
    QLayoutItem* item = m_items.takeAt(index);
    invalidate();
    return item;
}

QSize FlowLayout::minimumSize() const
{
    QSize size;
    for (const QLayoutItem* item : m_items)
        if (!item->isEmpty()) size = size.expandedTo(item->minimumSize());
    const QMargins m = contentsMargins();
    return size + QSize(m.left() + m.right(), m.top() + m.bottom());
}

QSize FlowLayout::sizeHint() const
{
    // All on one line: the width a wide window gives them.
    int w = 0, h = 0, n = 0;
    for (const QLayoutItem* item : m_items) {
        if (item->isEmpty()) continue;
        w += item->sizeHint().width() + (n++ > 0 ? m_hSpacing : 0);
        h = std::max(h, item->sizeHint().height());
    }
    const QMargins m = contentsMargins();
    return QSize(w + m.left() + m.right(), h + m.top() + m.bottom());
}

void FlowLayout::setGeometry(const QRect& rect)
{
    QLayout::setGeometry(rect);
    arrange(rect, true);
}

int FlowLayout::arrange(const QRect& rect, bool apply) const
{
    const QRect area = rect.marginsRemoved(contentsMargins());
    int x = area.x(), y = area.y(), lineHeight = 0;
    QList<QPair<QLayoutItem*, QPoint>> line; // the current line's items, placed once its height is known
    const auto flush = [&] {
        if (apply)
            for (const auto& [item, at] : line) {
                // Each item at its size hint, centred on the line (a check box beside a combo box).
                const QSize s = item->sizeHint().boundedTo(QSize(area.width(), lineHeight)).expandedTo(item->minimumSize());
                item->setGeometry(QRect(QPoint(at.x(), at.y() + (lineHeight - s.height()) / 2), s));
            }
        line.clear();
    };
    for (QLayoutItem* item : m_items) {
        if (item->isEmpty()) continue;
        const QSize s = item->sizeHint();
        if (x > area.x() && x + s.width() > area.right() + 1) { // does not fit: a new line
            flush();
            x = area.x();
            y += lineHeight + m_vSpacing;
            lineHeight = 0;
        }
        line.append({item, QPoint(x, y)});
        x += s.width() + m_hSpacing;
        lineHeight = std::max(lineHeight, s.height());
    }
    flush();
    const QMargins m = contentsMargins();
    return y + lineHeight - rect.y() + m.bottom();
}

QWidget* labelledField(QWidget* label, QLayout* fields, int indent)
{
    auto* w = new QWidget;
    auto* row = new QHBoxLayout(w);
    row->setContentsMargins(indent, 0, 0, 0);
    row->addWidget(label);
    row->addLayout(fields);
    return w;
}

QWidget* labelledField(QWidget* label, QWidget* field, int indent)
{
    auto* fields = new QHBoxLayout;
    fields->setContentsMargins(0, 0, 0, 0);
    fields->addWidget(field);
    return labelledField(label, fields, indent);
}

} // namespace quantscope
