// The choices the training panel offers (formats, granularities, rounding, calibration,
// optimizers) with one-sentence tooltips, and the model-size estimate of the runs table.
// Formats and granularity names come from core's tables; nothing here decides numerics.
#pragma once

#include "train/events.h"
#include "train/trainer.h"

#include <QString>
#include <QStringList>
#include <QVector>

namespace quantscope {

// A row of core's numberFormats(), in Qt terms.
struct FormatChoice {
    QString name;        // spec name, e.g. "int8"
    QString description; // one sentence
    QString kind;        // "int", "float", "mx-int", "mx-float", "fp32"
    int bits = 32;
    bool integer = false; // integer formats store a 4-byte scale per slot
    bool isFloat = false; // fp32, fp16, bf16, fp8
    bool mx = false;      // microscaling: a 1-byte shared exponent per block
    int blockSize = 0;
};

struct Choice {
    QString value;   // what goes into the config ("channel", "nearest", ...)
    QString label;   // what the combo shows ("channel-wise")
    QString tooltip; // one sentence
};

const QVector<FormatChoice>& formatChoices();
const FormatChoice* formatChoice(const QString& name);
// Whether a strategy can use a format (mixed / pure low precision need a low-precision float or
// MX format; PTQ / QAT need anything but fp32). Fills *why when it cannot.
bool formatFits(Strategy s, const FormatChoice& f, QString* why = nullptr);
// The weight formats the analyses (sensitivity, mixed-bit search) offer, as analyze --formats
// takes them: the integer ones (int8 down to int2), then the others (fp8, MX, ternary; fp16 and
// bf16 are near FP32 and need no search).
const QStringList& analysisIntegerFormats();
const QStringList& analysisOtherFormats();
const QVector<Choice>& granularityChoices(); // tensor, channel, layer, global, group
const QVector<Choice>& roundingChoices();
const QVector<Choice>& calibrationChoices();
const QVector<Choice>& optimizerChoices();
const QVector<Choice>& lrScheduleChoices(); // constant, cosine (train/lr_schedule.h)
const QVector<Choice>& quantizerChoices(); // observer, lsq

// "channel" -> "channel-wise", "group:32" -> "group-wise (32)".
QString granularityLabel(const std::string& spec);
// The strategy's CLI name ("qat") and GUI label ("Quantization-aware training").
QString strategyName(Strategy s);
QString strategyLabel(Strategy s);

// The format the finished model is stored in: fp32 for the baseline, the last schedule
// entry for progressive, otherwise the chosen format.
QString storedFormat(const TrainConfig& cfg);
// Whether a run of this config quantizes weights (and so reports quantized accuracy).
bool quantizesWeights(const TrainConfig& cfg);
// Whether a per-layer plan is in force (PTQ, QAT, progressive's last phase): labels then say
// "per-layer plan", not the default format as if every layer took it.
bool planInForce(const TrainConfig& cfg);

// The model's stored size under the run's plan (quant/plan_size.h's rule; the runs table's Size).
double estimateModelBytes(const TrainConfig& cfg, Model& model);

} // namespace quantscope
