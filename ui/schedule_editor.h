// The progressive strategy's schedule editor: one row per phase (a number format and its epochs),
// read and written as the CLI's --schedule text "fp32:1,fp16:1,int8:1".
#pragma once

#include <cstddef>

#include <QWidget>

class QPushButton;
class QVBoxLayout;

namespace quantscope {

// The progressive schedule as rows of (format, epochs); reads and writes "fp32:1,fp16:1,int8:1".
class ScheduleEditor : public QWidget {
    Q_OBJECT
public:
    explicit ScheduleEditor(QWidget* parent = nullptr);
    void setSchedule(const QString& spec);
    QString schedule() const;
    std::size_t totalEpochs() const;
    QPushButton* addButton() const { return m_add; }

signals:
    void changed();

protected:
    void changeEvent(QEvent* e) override;
    // A wheel over an unfocused phase combo or spin box scrolls the dock instead of changing the
    // phase, as the rest of the Training dock does (tester 13: int8 became uint7 while scrolling).
    bool eventFilter(QObject* watched, QEvent* event) override;

private:
    void addRow(const QString& format, int epochs);
    void removeRow(QWidget* row);
    void updateButtons();
    QVBoxLayout* m_rows;
    QPushButton* m_add;
    bool m_initializing = false;
};

} // namespace quantscope
