// A layout that places its items left to right and starts a new line when the next one does not
// fit (Qt's "Flow Layout" example): the Analysis tab's rows of check boxes and labelled fields,
// which wrap in a narrow window (a 1024x700 screen) instead of widening the tab past it. Its
// minimum width is its widest item; its height follows the width (heightForWidth).
#pragma once

#include <QLayout>
#include <QList>

class QWidget;

namespace quantscope {

class FlowLayout : public QLayout {
public:
    explicit FlowLayout(int hSpacing = 6, int vSpacing = 4);
    ~FlowLayout() override;

    void addItem(QLayoutItem* item) override;
    int count() const override { return static_cast<int>(m_items.size()); }
    QLayoutItem* itemAt(int index) const override { return m_items.value(index); }
    QLayoutItem* takeAt(int index) override;

    Qt::Orientations expandingDirections() const override { return {}; }
    bool hasHeightForWidth() const override { return true; }
    int heightForWidth(int width) const override { return arrange(QRect(0, 0, width, 0), false); }
    QSize minimumSize() const override;
    QSize sizeHint() const override;
    void setGeometry(const QRect& rect) override;

private:
    int arrange(const QRect& rect, bool apply) const; // the height the items take at rect's width

    QList<QLayoutItem*> m_items;
    int m_hSpacing, m_vSpacing;
};

// `label` and `field` side by side as one item of a FlowLayout (so that a line never ends between
// them); `indent` pixels before the label.
QWidget* labelledField(QWidget* label, QWidget* field, int indent = 0);
QWidget* labelledField(QWidget* label, QLayout* fields, int indent = 0);

} // namespace quantscope
