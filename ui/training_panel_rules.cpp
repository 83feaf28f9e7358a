// The Training dock's rules: which options the chosen strategy, format and quantizer use
// (greyed out with the reason otherwise) and the formats each strategy can take. Split from
// training_panel.cpp.
#include "training_panel.h"
#include "training_panel_util.h"

#include "plan_table.h"
#include "schedule_editor.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QGroupBox>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QStandardItemModel>

namespace quantscope {

using namespace panel;

void TrainingPanel::setApplies(QWidget* w, bool applies, const QString& why)
{
    const bool enabled = applies && !m_running;
    w->setEnabled(enabled);
    QString tip = m_baseTips.value(w, w->toolTip());
    if (!applies && !why.isEmpty()) tip += QStringLiteral("\n\nDisabled: ") + why;
    w->setToolTip(tip);
    if (QLabel* l = m_labels.value(w)) {
        l->setEnabled(enabled);
        l->setToolTip(tip);
    }
}

void TrainingPanel::updateApplicability()
{
    // A model file: "Fresh weights" applies; with its own weights it may be quantized without
    // training (0 epochs).
    const bool file = !m_cfg.modelFile.empty();
    m_reinit->setEnabled(file && !m_running);
    // What an empty Normalize field means: the file's stored normalisation when training starts
    // from its weights (MainWindow::startTraining), else the dataset's statistics.
    const QString stored = file && m_cfg.pretrained ? m_model->currentData(kNormRole).toString() : QString();
    m_normalize->setPlaceholderText(stored.isEmpty() ? tr("dataset statistics") : tr("file: %1").arg(stored));
    // Epochs 0 stays as typed for a preset too: Train says why it cannot start (it used to be
    // clamped to 1 without a word).
    if (m_cfg.precision.strategy != Strategy::Progressive) m_cfg.epochs = static_cast<std::size_t>(m_epochs->value());
    const PrecisionConfig& p = m_cfg.precision;
    const StrategyInfo& s = strategyInfo(p.strategy);
    const QString label = QString::fromLatin1(s.label);
    const QString notUsed =
        tr("not used by %1, which %2").arg(label, lowerFirst(QString::fromLatin1(s.description)));
    m_strategyHelp->setText(QString::fromLatin1(s.description));

    // Formats a strategy cannot take are disabled in the list (with the reason as tooltip). When
    // the current one does not fit, switch to one that does, and restore the user's integer
    // format when they come back to a strategy that takes it.
    if (auto* items = qobject_cast<QStandardItemModel*>(m_format->model())) {
        for (int i = 0; i < m_format->count(); ++i) {
            const FormatChoice* f = formatChoice(m_format->itemData(i).toString());
            QString why;
            const bool ok = !f || !s.uses("format") || formatFits(p.strategy, *f, &why);
            if (QStandardItem* item = items->item(i)) {
                item->setEnabled(ok);
                item->setToolTip((f ? f->description : QString()) + (ok ? QString() : tr("\n\nDisabled: ") + why));
            }
        }
    }
    const FormatChoice* cur = formatChoice(qs(p.format));
    if (s.uses("format") && cur && !formatFits(p.strategy, *cur)) {
        const QString target = cur->integer || cur->kind == QLatin1String("fp32")
                                   ? (p.strategy == Strategy::Mixed || p.strategy == Strategy::LowPrecision
                                          ? QStringLiteral("bf16") // as the CLI: the fast bf16 kernels
                                          : m_lastIntegerFormat)
                                   : m_lastIntegerFormat;
        m_initializing = true;
        selectData(m_format, target);
        m_initializing = false;
        m_formatAutoSwitched = cur->integer;
        readWidgets();
    } else if (m_formatAutoSwitched && (p.strategy == Strategy::Ptq || p.strategy == Strategy::Qat)) {
        m_formatAutoSwitched = false;
        m_initializing = true;
        selectData(m_format, m_lastIntegerFormat);
        m_initializing = false;
        readWidgets();
    }

    const bool group = m_granularity->currentData().toString() == QLatin1String("group");
    const bool percentile = m_calibration->currentData().toString() == QLatin1String("percentile");
    setApplies(m_format, s.uses("format"),
               p.strategy == Strategy::Progressive ? tr("progressive takes its formats from the schedule below.")
                                                   : notUsed + QLatin1Char('.'));
    setApplies(m_granularity, s.uses("granularity"), notUsed + QLatin1Char('.'));
    setApplies(m_groupSize, s.uses("granularity") && group,
               s.uses("granularity") ? tr("only group-wise granularity has a group size.") : notUsed + QLatin1Char('.'));
    setApplies(m_rounding, s.uses("rounding"), notUsed + QLatin1Char('.'));
    // LSQ starts its steps from the grid with the least error (the CLI's --lsq-init mse), not from
    // the observers' calibration.
    const bool lsq = s.uses("quantizer") && p.quantizer == "lsq";
    const QString lsqWhy = tr("LSQ learns its step sizes, starting from the grid with the least quantization error, "
                              "not from a calibration.");
    setApplies(m_calibration, s.uses("calibration") && !lsq, lsq ? lsqWhy : notUsed + QLatin1Char('.'));
    setApplies(m_actCalibration, s.uses("calibration") && !lsq, lsq ? lsqWhy : notUsed + QLatin1Char('.'));
    setApplies(m_percentile, s.uses("calibration") && !lsq && (percentile || p.activationCalibration == "percentile"),
               lsq ? lsqWhy : s.uses("calibration") ? tr("only percentile calibration has a percentile.") : notUsed + QLatin1Char('.'));
    setApplies(m_calibImages, s.uses("calib-images"),
               tr("only post-training quantization calibrates on images after training."));
    setApplies(m_bnFreeze, s.uses("bn-freeze-epoch"),
               tr("only quantization-aware training freezes BatchNorm statistics."));
    setApplies(m_bnReestimate, s.uses("bn-reestimate"),
               tr("only quantization-aware training re-estimates BatchNorm statistics."));
    {
        const bool ptq = p.strategy == Strategy::Ptq;
        const QString why = tr("AdaRound, cross-layer equalization and bias correction are post-training methods: "
                               "they need the PTQ strategy.");
        if (auto* items = qobject_cast<QStandardItemModel*>(m_rounding->model()))
            for (int i = 0; i < m_rounding->count(); ++i)
                if (m_rounding->itemData(i).toString() == QLatin1String("adaround"))
                    if (QStandardItem* item = items->item(i)) {
                        item->setEnabled(ptq);
                        item->setToolTip(ptq ? QString() : tr("Disabled: ") + why);
                    }
        if (!ptq && m_rounding->currentData().toString() == QLatin1String("adaround")) {
            m_initializing = true;
            selectData(m_rounding, QStringLiteral("nearest"));
            m_initializing = false;
        }
        setApplies(m_adaroundIters, ptq && p.rounding == "adaround",
                   ptq ? tr("only AdaRound rounding iterates (choose it under Rounding).") : why);
        setApplies(m_cle, ptq, why);
        setApplies(m_biasCorrection, ptq, why);
    }
    setApplies(m_schedule, s.uses("schedule"), tr("only the progressive strategy follows a schedule."));
    setApplies(m_quantizer, s.uses("quantizer"), tr("only quantization-aware training can learn its step sizes (LSQ)."));
    setApplies(m_lsqPlus, s.uses("lsq-plus") && p.quantizer == "lsq",
               s.uses("lsq-plus") ? tr("only the LSQ quantizer learns an offset.")
                                  : tr("only quantization-aware training can learn its step sizes (LSQ)."));
    setApplies(m_narrowRange, s.uses("narrow-range"), tr("only integer weights (PTQ, QAT, progressive) have a narrow range."));
    setApplies(m_momentum, m_cfg.optimizer == "sgd", tr("only SGD uses momentum; Adam keeps its own moment estimates."));
    setApplies(m_nesterov, m_cfg.optimizer == "sgd" && m_cfg.momentum > 0.0f,
               m_cfg.optimizer == "sgd" ? tr("Nesterov momentum needs a momentum above 0.")
                                        : tr("only SGD uses momentum; Adam keeps its own moment estimates."));
    setApplies(m_amsgrad, m_cfg.optimizer == "adam", tr("AMSGrad is a form of Adam."));
    const bool progressive = p.strategy == Strategy::Progressive;
    if (progressive) {
        m_initializing = true;
        m_epochs->setValue(static_cast<int>(m_schedule->totalEpochs()));
        m_initializing = false;
    }
    setApplies(m_epochs, !progressive,
               tr("a progressive run lasts the sum of its schedule's epochs (%1).").arg(m_schedule->totalEpochs()));
    const bool plans = s.uses("plan");
    setApplies(m_planBox, plans, tr("per-layer plans apply to PTQ, QAT and progressive's last phase; sizes show the "
                                    "stored model."));
    m_planTable->setPlan(p.storedPlan());
}

} // namespace quantscope
