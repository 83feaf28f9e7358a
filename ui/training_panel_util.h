// Helpers shared by the Training dock's source files (training_panel.cpp, its rules in
// training_panel_rules.cpp, its plan files in training_panel_plans.cpp). Internal to ui/.
#pragma once

#include "quant_catalog.h"

#include <QComboBox>
#include <QSpinBox>
#include <QString>
#include <QVector>

#include <string>

namespace quantscope::panel {

inline constexpr int kFileRole = Qt::UserRole + 1; // model picker: the entry is a model file (its data is the path)
inline constexpr int kNormRole = Qt::UserRole + 2; // model picker: the input normalisation the file stores, or empty

inline QString qs(const std::string& s) { return QString::fromStdString(s); }

inline void selectData(QComboBox* c, const QString& value)
{
    const int i = c->findData(value);
    if (i >= 0) c->setCurrentIndex(i);
}

inline QComboBox* choiceCombo(const QVector<Choice>& rows, const QString& tip)
{
    auto* c = new QComboBox;
    for (const Choice& ch : rows) {
        c->addItem(ch.label, ch.value);
        c->setItemData(c->count() - 1, ch.tooltip, Qt::ToolTipRole);
    }
    c->setToolTip(tip);
    return c;
}

inline QSpinBox* spin(int lo, int hi, const QString& tip)
{
    auto* s = new QSpinBox;
    s->setRange(lo, hi);
    s->setToolTip(tip);
    s->setGroupSeparatorShown(true);
    return s;
}

inline QString lowerFirst(QString s)
{
    if (!s.isEmpty()) s[0] = s[0].toLower();
    return s;
}

} // namespace quantscope::panel
