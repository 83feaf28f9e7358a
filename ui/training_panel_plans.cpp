// The Training dock's plan files: Load plan... / Save plan... by the per-layer plan table.
#include "training_panel.h"

#include "core_message.h"
#include "plan_table.h"

#include "data/normalization.h"
#include "quant/precision_plan.h"

#include <QFileDialog>
#include <QMessageBox>
#include <QFileInfo>

namespace quantscope {

void TrainingPanel::loadPlanInteractive()
{
    const QString path = QFileDialog::getOpenFileName(this, tr("Load plan"), QString(), tr("Plans (*.json);;All files (*)"));
    QString error;
    // Said where it is seen: the note under the plan table sits at the dock's bottom, often below
    // the fold (tester 19: cut off while the window's banner still showed an older error).
    if (!path.isEmpty() && !loadPlanFile(path, &error)) QMessageBox::warning(this, tr("Load plan"), error);
}

void TrainingPanel::savePlanInteractive()
{
    const QString path = QFileDialog::getSaveFileName(this, tr("Save plan"), QStringLiteral("plan.json"), tr("Plans (*.json)"));
    QString error;
    if (!path.isEmpty() && !savePlanFile(path, &error)) QMessageBox::warning(this, tr("Save plan"), error);
}

bool TrainingPanel::loadPlanFile(const QString& path, QString* error)
{
    TrainConfig cfg = m_cfg;
    PrecisionConfig& p = cfg.precision;
    QString note;
    try {
        const PrecisionPlan plan = readPlanFile(path.toStdString(), p.plan().defaults);
        if (const Model* model = m_planTable->tableModel()->model()) checkPlan(plan, *model);
        p.format = plan.defaults.format;
        p.granularity = plan.defaults.granularity;
        p.calibration = plan.defaults.calibration;
        p.activationFormat = plan.defaults.activationFormat;
        if (!plan.activationCalibration.empty()) p.activationCalibration = plan.activationCalibration;
        p.layers = plan.layers;
        p.planSource = path.toStdString();
        p.planNormalization = plan.inputNormalization;
        // The window normalises as the Dataset dock's Normalize field says (or as a model file
        // stores): name what the plan was measured with, so the user can match it.
        if (!plan.inputNormalization.empty())
            note += tr(" It was measured on inputs normalised %1 (the Dataset dock's Normalize field, “%2”, "
                       "reproduces that for a model file that stores no normalisation).")
                        .arg(QString::fromStdString(Normalization::parse(plan.inputNormalization).describe()),
                             QString::fromStdString(plan.inputNormalization));
        if (p.strategy != Strategy::Ptq && p.strategy != Strategy::Qat && p.strategy != Strategy::Progressive) {
            p.strategy = Strategy::Qat;
            note = tr(" The strategy is now QAT (plans apply to PTQ, QAT and progressive).");
        }
    } catch (const std::exception& e) {
        const QString why = tr("Could not load the plan: %1").arg(coreMessage(e));
        m_planTable->setNote(why, true);
        if (error) *error = why;
        return false;
    }
    setConfig(cfg);
    m_planTable->setNote(tr("Loaded %1: %2 layer entries over the default %3.%4")
                             .arg(QFileInfo(path).fileName())
                             .arg(p.layers.size())
                             .arg(QString::fromStdString(p.format), note),
                         false);
    emit configChanged();
    return true;
}

bool TrainingPanel::savePlanFile(const QString& path, QString* error)
{
    try {
        writePlanFile(path.toStdString(), m_cfg.precision.plan());
    } catch (const std::exception& e) {
        const QString why = tr("Could not save the plan: %1").arg(coreMessage(e));
        m_planTable->setNote(why, true);
        if (error) *error = why;
        return false;
    }
    m_planTable->setNote(tr("Saved the plan to %1.").arg(path), false);
    return true;
}

} // namespace quantscope
