// The Training dock's "More options..." dialog: the run options the dock has no room for, each
// the CLI flag of the same name (quantscope-cli train --help): LSQ's initial steps (--lsq-init),
// the first and last layers at 8 bits (--first-last-8bit), ReLU6 made ReLU for cross-layer
// equalization (--cle-relu6-to-relu), progressive's blend steps (--blend-steps), the skipped-step
// limit of dynamic loss scaling (--max-skipped-steps) and the quantized evaluation's runner
// (--quant-eval). As in the dock, an option the strategy does not use is disabled and its tooltip
// says why. The dialog edits a copy; the panel takes it back on OK.
#pragma once

#include "train/trainer.h"

#include <QDialog>

class QCheckBox;
class QComboBox;
class QSpinBox;

namespace quantscope {

class MoreOptionsDialog : public QDialog {
    Q_OBJECT
public:
    explicit MoreOptionsDialog(const TrainConfig& config, QWidget* parent = nullptr);

    // The dialog's values written into `config` (only the fields it shows).
    void apply(TrainConfig& config) const;

    QComboBox* lsqInit() const { return m_lsqInit; }
    QCheckBox* firstLast8Bit() const { return m_firstLast; }
    QCheckBox* cleRelu6ToRelu() const { return m_cleRelu6; }
    QSpinBox* blendSteps() const { return m_blendSteps; }
    QSpinBox* maxSkippedSteps() const { return m_maxSkipped; }
    QComboBox* quantEval() const { return m_quantEval; }

private:
    QComboBox* m_lsqInit;
    QCheckBox* m_firstLast;
    QCheckBox* m_cleRelu6;
    QSpinBox* m_blendSteps;
    QSpinBox* m_maxSkipped;
    QComboBox* m_quantEval;
};

// One line for the button's tooltip: the options the dialog holds, as they are ("LSQ init mse,
// blend 100 steps, ...").
QString moreOptionsSummary(const TrainConfig& config);

} // namespace quantscope
