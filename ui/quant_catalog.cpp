#include "quant_catalog.h"

#include "quant/plan_size.h"

#include "nn/model.h"
#include "quant/format.h"
#include "quant/granularity.h"

#include <QObject>
#include <QStringList>

#include <cmath>

namespace quantscope {

namespace {

QVector<FormatChoice> buildFormats()
{
    QVector<FormatChoice> rows;
    for (const NumberFormat& f : numberFormats()) {
        FormatChoice c;
        c.name = QString::fromStdString(f.name);
        c.description = QString::fromStdString(f.description);
        if (!c.description.isEmpty()) c.description[0] = c.description[0].toUpper();
        if (!c.description.endsWith(QLatin1Char('.'))) c.description += QLatin1Char('.');
        c.kind = QString::fromLatin1(formatKindName(f.kind));
        c.bits = f.bits;
        c.integer = needsScale(f);
        c.isFloat = isFloatFormat(f);
        c.mx = isMxFormat(f);
        c.blockSize = f.blockSize;
        rows.push_back(c);
    }
    return rows;
}

} // namespace

const QVector<FormatChoice>& formatChoices()
{
    static const QVector<FormatChoice> rows = buildFormats();
    return rows;
}

const FormatChoice* formatChoice(const QString& name)
{
    for (const auto& f : formatChoices())
        if (f.name == name) return &f;
    return nullptr;
}

bool formatFits(Strategy s, const FormatChoice& f, QString* why)
{
    const bool fp32 = f.kind == QLatin1String("fp32");
    switch (s) {
    case Strategy::Ptq:
    case Strategy::Qat:
        if (fp32 && why) *why = QObject::tr("quantization needs a format other than fp32.");
        return !fp32;
    case Strategy::Mixed:
    case Strategy::LowPrecision:
        if ((f.integer || fp32) && why)
            *why = QObject::tr("%1 needs a low-precision float or MX format (fp16, bf16, fp8, mx…).")
                       .arg(strategyLabel(s));
        return !f.integer && !fp32;
    default:
        return true;
    }
}

const QVector<Choice>& granularityChoices()
{
    static const QVector<Choice> rows = {
        {"tensor", "tensor-wise", "One scale for each weight tensor."},
        {"channel", "channel-wise", "One scale for each output channel of a weight tensor."},
        {"layer", "layer-wise", "One scale for each layer, shared by its weight tensors."},
        {"global", "global", "One scale for the whole model."},
        {"group", "group-wise", "One scale for each group of consecutive weights (group size below)."},
    };
    return rows;
}

const QVector<Choice>& roundingChoices()
{
    static const QVector<Choice> rows = {
        {"nearest", "nearest", "Rounds every value to the nearest representable level."},
        {"stochastic", "stochastic",
         "Rounds up or down at random in proportion to the distance, so rounding is unbiased on average."},
        {"adaround", "AdaRound (PTQ)",
         "Post-training quantization only: learns, layer by layer on the calibration images, whether each weight "
         "rounds up or down so the layer's output changes least (Nagel et al., ICML 2020)."},
    };
    return rows;
}

const QVector<Choice>& quantizerChoices()
{
    static const QVector<Choice> rows = {
        {"observer", "observer (ranges)", "Scales follow the observed weight and activation ranges (min-max or moving average)."},
        {"lsq", "LSQ (learned steps)",
         "Learned step size quantization (Esser et al., ICLR 2020): every step size is trained with the weights; "
         "see the Step sizes tab."},
    };
    return rows;
}

const QStringList& analysisIntegerFormats()
{
    static const QStringList rows = {"int8", "int6", "int5", "int4", "int3", "int2"};
    return rows;
}

const QStringList& analysisOtherFormats()
{
    static const QStringList rows = {"fp8-e4m3", "fp8-e5m2", "mxint8", "mxfp8-e4m3", "mxfp4", "ternary"};
    return rows;
}

const QVector<Choice>& calibrationChoices()
{
    static const QVector<Choice> rows = {
        {"minmax", "min-max", "Sets the range from the smallest and largest value seen, so nothing is clipped."},
        {"moving-average", "moving average",
         "Sets the range from a moving average of each batch's min and max (PyTorch's QAT observer, for fine-tuning a trained "
         "model; QAT from scratch learns better with min-max, as the average lags ranges that grow)."},
        {"percentile", "percentile", "Sets the range to a percentile of the absolute values, clipping rare outliers."},
        {"mse", "MSE-optimal", "Picks the range that minimises the mean squared quantization error."},
    };
    return rows;
}

const QVector<Choice>& optimizerChoices()
{
    static const QVector<Choice> rows = {
        {"adam", "Adam", "Adaptive moment estimation; robust with its default learning rate of 1e-3."},
        {"sgd", "SGD", "Stochastic gradient descent, optionally with momentum; try a learning rate of 0.01."},
    };
    return rows;
}

const QVector<Choice>& lrScheduleChoices()
{
    static const QVector<Choice> rows = {
        {"constant", "Constant", "The learning rate stays as set for the whole run."},
        {"cosine", "Cosine", "Cosine decay per step from the learning rate down to 0 at the end of the run "
                             "(Loshchilov & Hutter 2017, without restarts; the LSQ paper's schedule)."},
    };
    return rows;
}

QString granularityLabel(const std::string& spec)
{
    try {
        return QString::fromStdString(parseGranularity(spec).label());
    } catch (const std::exception&) {
    }
    const QString s = QString::fromStdString(spec);
    if (s.startsWith(QLatin1String("group"))) {
        const QString n = s.section(QLatin1Char(':'), 1, 1);
        return n.isEmpty() ? QStringLiteral("group-wise") : QStringLiteral("group-wise (%1)").arg(n);
    }
    for (const auto& c : granularityChoices())
        if (c.value == s) return c.label;
    return s;
}

QString strategyName(Strategy s) { return QString::fromLatin1(strategyInfo(s).name); }
QString strategyLabel(Strategy s) { return QString::fromLatin1(strategyInfo(s).label); }

QString storedFormat(const TrainConfig& cfg)
{
    const PrecisionConfig& p = cfg.precision;
    if (p.strategy == Strategy::Fp32) return QStringLiteral("fp32");
    if (p.strategy == Strategy::Progressive) {
        const QStringList parts = QString::fromStdString(p.schedule).split(QLatin1Char(','), Qt::SkipEmptyParts);
        if (parts.isEmpty()) return QStringLiteral("fp32");
        return parts.last().section(QLatin1Char(':'), 0, 0).trimmed();
    }
    return QString::fromStdString(p.format);
}

bool planInForce(const TrainConfig& cfg)
{
    const Strategy s = cfg.precision.strategy;
    return !cfg.precision.layers.empty() && (s == Strategy::Ptq || s == Strategy::Qat || s == Strategy::Progressive);
}

bool quantizesWeights(const TrainConfig& cfg)
{
    const FormatChoice* f = formatChoice(storedFormat(cfg));
    switch (cfg.precision.strategy) {
    case Strategy::Ptq:
    case Strategy::Qat:
    case Strategy::LowPrecision:
    case Strategy::Progressive:
        return f == nullptr || f->kind != QLatin1String("fp32");
    default:
        return false;
    }
}

double estimateModelBytes(const TrainConfig& cfg, Model& model)
{
    return static_cast<double>(planSize(model, cfg.precision.storedPlan()).bytes);
}

} // namespace quantscope
