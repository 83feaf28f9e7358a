#include "more_options_dialog.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFormLayout>
#include <QLabel>
#include <QSpinBox>
#include <QVBoxLayout>

namespace quantscope {

namespace {

// Disabled with the reason as tooltip when the option does not apply (the dock's setApplies).
void applies(QWidget* w, QLabel* label, bool on, const QString& base, const QString& why)
{
    w->setEnabled(on);
    if (label) label->setEnabled(on);
    w->setToolTip(on ? base : base + QStringLiteral("\n\n") + QObject::tr("Disabled: ") + why);
}

} // namespace

MoreOptionsDialog::MoreOptionsDialog(const TrainConfig& config, QWidget* parent) : QDialog(parent)
{
    setWindowTitle(tr("More training options"));
    setObjectName(QStringLiteral("moreOptionsDialog"));
    const PrecisionConfig& p = config.precision;
    const StrategyInfo& s = strategyInfo(p.strategy);
    const QString strategy = QString::fromLatin1(s.label);

    m_lsqInit = new QComboBox;
    m_lsqInit->setObjectName(QStringLiteral("lsqInit"));
    m_lsqInit->addItem(tr("MSE-optimal grid"), QStringLiteral("mse"));
    m_lsqInit->addItem(tr("LSQ's rule, 2<|x|>/sqrt(Qp)"), QStringLiteral("lsq"));
    m_lsqInit->addItem(tr("the observers' ranges"), QStringLiteral("range"));
    m_lsqInit->setCurrentIndex(std::max(0, m_lsqInit->findData(QString::fromStdString(p.lsqInit))));

    m_firstLast = new QCheckBox(tr("First and last layers at 8 bits"));
    m_firstLast->setObjectName(QStringLiteral("firstLast8Bit"));
    m_firstLast->setChecked(p.firstLast8Bit);

    m_cleRelu6 = new QCheckBox(tr("Make ReLU6 a ReLU so that CLE can pair through it"));
    m_cleRelu6->setObjectName(QStringLiteral("cleRelu6ToRelu"));
    m_cleRelu6->setChecked(p.cleRelu6ToRelu);

    m_blendSteps = new QSpinBox;
    m_blendSteps->setObjectName(QStringLiteral("blendSteps"));
    m_blendSteps->setRange(0, 1000000);
    m_blendSteps->setValue(static_cast<int>(std::min<std::size_t>(p.blendSteps, 1000000)));
    m_blendSteps->setSuffix(tr(" steps"));

    m_maxSkipped = new QSpinBox;
    m_maxSkipped->setObjectName(QStringLiteral("maxSkippedSteps"));
    m_maxSkipped->setRange(0, 1000000);
    m_maxSkipped->setSpecialValueText(tr("never stop"));
    m_maxSkipped->setValue(static_cast<int>(std::min<std::size_t>(config.maxSkippedSteps, 1000000)));

    m_quantEval = new QComboBox;
    m_quantEval->setObjectName(QStringLiteral("quantEval"));
    m_quantEval->addItem(tr("integer engine where it can run the model"), QStringLiteral("engine"));
    m_quantEval->addItem(tr("fake-quant float model"), QStringLiteral("fake-quant"));
    m_quantEval->setCurrentIndex(config.quantEval == "fake-quant" ? 1 : 0);

    auto* form = new QFormLayout;
    auto* lsqLabel = new QLabel(tr("LSQ &initial steps"));
    lsqLabel->setBuddy(m_lsqInit);
    auto* blendLabel = new QLabel(tr("&Blend"));
    blendLabel->setBuddy(m_blendSteps);
    auto* skipLabel = new QLabel(tr("&Stop after skipped steps"));
    skipLabel->setBuddy(m_maxSkipped);
    auto* evalLabel = new QLabel(tr("&Quantized evaluation"));
    evalLabel->setBuddy(m_quantEval);
    form->addRow(lsqLabel, m_lsqInit);
    form->addRow(QString(), m_firstLast);
    form->addRow(QString(), m_cleRelu6);
    form->addRow(blendLabel, m_blendSteps);
    form->addRow(skipLabel, m_maxSkipped);
    form->addRow(evalLabel, m_quantEval);

    applies(m_lsqInit, lsqLabel, s.uses("lsq-init") && p.quantizer == "lsq",
            tr("Where LSQ's step sizes start (--lsq-init): the grid with the least squared error, LSQ's rule from "
               "Esser et al. 2020, or the observers' ranges."),
            s.uses("lsq-init") ? tr("only the LSQ quantizer learns step sizes (choose it under Quantizer).")
                               : tr("%1 does not learn step sizes; only quantization-aware training does.").arg(strategy));
    applies(m_firstLast, nullptr, s.uses("first-last-8bit"),
            tr("The first and last quantized Conv2d/Linear keep int8 weights and 8-bit activations around them, "
               "as most low-bit papers do (--first-last-8bit)."),
            tr("%1 has no integer weights.").arg(strategy));
    applies(m_cleRelu6, nullptr, s.uses("cle-relu6-to-relu") && p.crossLayerEqualization,
            tr("Cross-layer equalization rescales only through ReLU; this replaces each ReLU6 by ReLU first, which "
               "changes the FP32 model (--cle-relu6-to-relu; Nagel et al. 2019 do the same)."),
            s.uses("cle-relu6-to-relu") ? tr("tick Cross-layer equalization first.") : tr("only PTQ equalizes layers."));
    applies(m_blendSteps, blendLabel, s.uses("blend-steps"),
            tr("Progressive: the training steps over which one phase's format blends into the next (--blend-steps)."),
            tr("only the progressive strategy blends formats."));
    applies(m_maxSkipped, skipLabel, s.uses("max-skipped-steps"),
            tr("Dynamic loss scaling skips a step whose gradients overflow; after this many in a row the run stops "
               "as diverged (--max-skipped-steps; 0: never)."),
            tr("%1 has no dynamic loss scaling.").arg(strategy));
    applies(m_quantEval, evalLabel, s.uses("quant-eval"),
            tr("What measures the quantized accuracy each epoch (--quant-eval): the integer engine's VNNI/AVX2 "
               "kernels, or the fake-quant float model. They agree on >= 99.9 % of images."),
            tr("%1 has no quantized evaluation.").arg(strategy));

    auto* note = new QLabel(tr("Options for %1. Greyed ones do not apply to it; their tooltip says why.").arg(strategy));
    note->setWordWrap(true);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
    connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(note);
    layout->addLayout(form);
    layout->addWidget(buttons);
}

void MoreOptionsDialog::apply(TrainConfig& config) const
{
    PrecisionConfig& p = config.precision;
    p.lsqInit = m_lsqInit->currentData().toString().toStdString();
    p.firstLast8Bit = m_firstLast->isChecked();
    p.cleRelu6ToRelu = m_cleRelu6->isChecked();
    p.blendSteps = static_cast<std::size_t>(m_blendSteps->value());
    config.maxSkippedSteps = static_cast<std::size_t>(m_maxSkipped->value());
    config.quantEval = m_quantEval->currentData().toString().toStdString();
}

QString moreOptionsSummary(const TrainConfig& config)
{
    const PrecisionConfig& p = config.precision;
    return QObject::tr("LSQ initial steps: %1; first and last layers at 8 bits: %2; ReLU6 made ReLU for CLE: %3; "
                       "blend: %4 steps; stop after %5 skipped steps; quantized evaluation: %6")
        .arg(QString::fromStdString(p.lsqInit), p.firstLast8Bit ? QObject::tr("yes") : QObject::tr("no"),
             p.cleRelu6ToRelu ? QObject::tr("yes") : QObject::tr("no"))
        .arg(p.blendSteps)
        .arg(config.maxSkippedSteps == 0 ? QObject::tr("never") : QString::number(config.maxSkippedSteps))
        .arg(QString::fromStdString(config.quantEval));
}

} // namespace quantscope
