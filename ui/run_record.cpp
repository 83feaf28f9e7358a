#include "run_record.h"

#include "quant/precision_plan.h"

#include "format_text.h"
#include "quant_catalog.h"

#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QSaveFile>
#include <QTextStream>

#include <algorithm>
#include <cmath>

namespace quantscope {

namespace {

QJsonValue num(double v) { return std::isfinite(v) ? QJsonValue(v) : QJsonValue(QJsonValue::Null); }
double numOr(const QJsonValue& v, double fallback = kNoValue) { return v.isDouble() ? v.toDouble() : fallback; }
// A count read from a runs file: anything but a number in [0, 2^53] (text, negative, 1e300) is 0,
// never an out-of-range float-to-integer conversion.
std::size_t count(const QJsonValue& v)
{
    const double d = v.toDouble();
    return d >= 0.0 && d <= 9007199254740992.0 ? static_cast<std::size_t>(d) : 0;
}
QString str(const std::string& s) { return QString::fromStdString(s); }
std::string sstr(const QJsonValue& v, const std::string& fallback)
{
    return v.isString() ? v.toString().toStdString() : fallback;
}

template <class T, class F> QJsonArray column(const std::vector<T>& rows, F get)
{
    QJsonArray a;
    for (const T& r : rows) a.append(get(r));
    return a;
}

template <class V> QJsonArray array(const std::vector<V>& v)
{
    QJsonArray a;
    for (const V& x : v) a.append(num(static_cast<double>(x)));
    return a;
}

template <class V> std::vector<V> vec(const QJsonValue& v)
{
    std::vector<V> out;
    for (const QJsonValue& x : v.toArray()) out.push_back(static_cast<V>(numOr(x, 0.0)));
    return out;
}

QJsonObject statsToJson(const LayerStats& s)
{
    QJsonObject o;
    o["epoch"] = static_cast<double>(s.epoch);
    o["layer"] = str(s.layer);
    o["tensor"] = str(s.tensor);
    o["format"] = str(s.format);
    o["granularity"] = str(s.granularity);
    o["scales"] = array(s.scales);
    o["zero_points"] = array(s.zeroPoints);
    o["channel_min"] = array(s.channelMin);
    o["channel_max"] = array(s.channelMax);
    o["tensor_min"] = num(s.tensorMin);
    o["tensor_max"] = num(s.tensorMax);
    o["clip_low"] = num(s.clipLow);
    o["clip_high"] = num(s.clipHigh);
    o["bin_edges"] = array(s.binEdges);
    o["fp32_hist"] = array(s.fp32Hist);
    o["quant_hist"] = array(s.quantHist);
    o["clipped_fraction"] = num(s.clippedFraction);
    o["non_finite"] = double(s.nonFinite);
    o["mse"] = num(s.mse);
    o["max_abs_error"] = num(s.maxAbsError);
    o["sqnr_db"] = num(s.sqnrDb);
    return o;
}

LayerStats statsFromJson(const QJsonObject& o)
{
    LayerStats s;
    s.epoch = count(o["epoch"]);
    s.layer = sstr(o["layer"], "");
    s.tensor = sstr(o["tensor"], "weight");
    s.format = sstr(o["format"], "");
    s.granularity = sstr(o["granularity"], "");
    s.scales = vec<float>(o["scales"]);
    s.zeroPoints = vec<std::int32_t>(o["zero_points"]);
    s.channelMin = vec<float>(o["channel_min"]);
    s.channelMax = vec<float>(o["channel_max"]);
    s.tensorMin = static_cast<float>(numOr(o["tensor_min"], 0));
    s.tensorMax = static_cast<float>(numOr(o["tensor_max"], 0));
    s.clipLow = static_cast<float>(numOr(o["clip_low"], 0));
    s.clipHigh = static_cast<float>(numOr(o["clip_high"], 0));
    s.binEdges = vec<double>(o["bin_edges"]);
    s.fp32Hist = vec<std::uint64_t>(o["fp32_hist"]);
    s.quantHist = vec<std::uint64_t>(o["quant_hist"]);
    s.clippedFraction = numOr(o["clipped_fraction"], 0);
    s.nonFinite = static_cast<std::uint64_t>(std::max(0.0, numOr(o["non_finite"], 0)));
    s.mse = numOr(o["mse"], 0);
    s.maxAbsError = numOr(o["max_abs_error"], 0);
    s.sqnrDb = numOr(o["sqnr_db"], 0);
    return s;
}

QString csvField(QString s)
{
    if (s.contains(QLatin1Char(',')) || s.contains(QLatin1Char('"'))) {
        s.replace(QLatin1Char('"'), QStringLiteral("\"\""));
        return QLatin1Char('"') + s + QLatin1Char('"');
    }
    return s;
}

QString csvNum(double v) { return std::isfinite(v) ? QString::number(v, 'g', 8) : QString(); }

// The CSV's phase: the precision the strategy was in, and where a per-layer plan was in force (QAT
// and PTQ's quantized epochs, progressive's last phase) that plan, not its default alone.
std::string csvPhase(const TrainConfig& c, const EpochEvent& e)
{
    if (!planInForce(c) || e.phase == "fp32") return e.phase;
    if (c.precision.strategy == Strategy::Progressive) {
        const QString last = QString::fromStdString(c.precision.schedule).section(QLatin1Char(','), -1);
        const std::size_t lastEpochs = static_cast<std::size_t>(std::max(1, last.section(QLatin1Char(':'), 1, 1).toInt()));
        if (e.epoch + lastEpochs <= c.epochs) return e.phase;
    }
    return "per-layer plan (default " + e.phase + ")";
}

} // namespace

QStringList runLabels(const std::vector<RunPtr>& runs)
{
    // Every option as text (empty where the strategy does not use it), most telling first.
    std::vector<QStringList> fields;
    for (const RunPtr& r : runs) {
        const TrainConfig& c = r->config;
        const PrecisionConfig& p = c.precision;
        const StrategyInfo& s = strategyInfo(p.strategy);
        fields.push_back({QString::fromLatin1(s.name),
                          p.strategy == Strategy::Progressive ? str(p.schedule) : (s.uses("format") ? str(p.format) : QString()),
                          s.uses("granularity") ? granularityLabel(p.granularity) : QString(), str(c.model),
                          QStringLiteral("lr %1").arg(double(c.lr), 0, 'g', 3) +
                              (c.lrSchedule == "constant" ? QString() : QStringLiteral(" ") + str(c.lrSchedule)),
                          QStringLiteral("%1 ep").arg(c.epochs),
                          QStringLiteral("batch %1").arg(c.batchSize), str(c.optimizer),
                          QStringLiteral("seed %1").arg(c.seed),
                          s.uses("rounding") ? str(p.rounding) + QStringLiteral(" rounding") : QString(),
                          s.uses("calibration") ? str(p.calibration) : QString(), r->datasetName});
    }
    // Columns where the runs differ; a label shows at most three of them.
    std::vector<qsizetype> differing;
    for (qsizetype k = 0; !fields.empty() && k < fields[0].size(); ++k)
        for (const QStringList& f : fields)
            if (f[k] != fields[0][k]) {
                differing.push_back(k);
                break;
            }
    QStringList labels;
    int total = 0;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        QStringList parts;
        for (qsizetype k : differing)
            if (parts.size() < 3 && !fields[i][k].isEmpty()) parts << fields[i][k];
        QString label = QStringLiteral("#%1").arg(runs[i]->id);
        if (!parts.isEmpty()) label += QLatin1Char(' ') + parts.join(QStringLiteral(" \u00b7 "));
        total += int(label.size());
        labels << label;
    }
    // A legend row holds about 50 characters of labels besides its style keys.
    if (total > 48) {
        labels.clear();
        for (const RunPtr& r : runs) labels << QStringLiteral("#%1").arg(r->id);
    }
    return labels;
}

QString runStatusText(RunStatus s)
{
    switch (s) {
    case RunStatus::Running: return QStringLiteral("training");
    case RunStatus::Paused: return QStringLiteral("paused");
    case RunStatus::Done: return QStringLiteral("done");
    case RunStatus::Stopped: return QStringLiteral("stopped");
    case RunStatus::Failed: return QStringLiteral("failed");
    }
    return {};
}

void RunRecord::addSteps(const std::vector<BatchEvent>& batch)
{
    // Debiased exponential moving average; heavier smoothing for longer epochs.
    for (const BatchEvent& b : batch) {
        const double spe = static_cast<double>(std::max<std::size_t>(1, b.stepsPerEpoch));
        const double beta = std::clamp(1.0 - 10.0 / spe, 0.6, 0.98);
        const double n = static_cast<double>(steps.size() + 1);
        emaRaw = beta * emaRaw + (1.0 - beta) * b.loss;
        smoothedLoss.push_back(emaRaw / (1.0 - std::pow(beta, n)));
        steps.push_back(b);
    }
}

double RunRecord::finalTestAccuracy() const
{
    if (finished && std::isfinite(finish.testAccuracy)) return finish.testAccuracy;
    return epochs.empty() ? kNoValue : epochs.back().testAccuracy;
}

double RunRecord::finalQuantAccuracy() const
{
    if (finished && std::isfinite(finish.quantTestAccuracy)) return finish.quantTestAccuracy;
    return epochs.empty() ? kNoValue : epochs.back().quantTestAccuracy;
}

double RunRecord::seconds() const
{
    if (finished) return finish.seconds;
    return steps.empty() ? 0.0 : steps.back().elapsedSeconds;
}

bool RunRecord::hasLossScale() const
{
    return std::any_of(steps.begin(), steps.end(), [](const BatchEvent& b) { return std::isfinite(b.lossScale); });
}

QString RunRecord::shortConfig() const
{
    const PrecisionConfig& p = config.precision;
    const StrategyInfo& s = strategyInfo(p.strategy);
    QStringList parts{QString::fromLatin1(s.name)};
    if (p.strategy == Strategy::Progressive) parts << str(p.schedule);
    else if (s.uses("format")) parts << str(p.format);
    if (s.uses("granularity")) parts << granularityLabel(p.granularity);
    if (planInForce(config)) parts << QObject::tr("per-layer plan");
    return parts.join(QStringLiteral(" \u00b7 "));
}

QString RunRecord::title() const { return QStringLiteral("#%1 %2").arg(id).arg(shortConfig()); }

QString RunRecord::configTooltip() const
{
    const PrecisionConfig& p = config.precision;
    const StrategyInfo& s = strategyInfo(p.strategy);
    QStringList lines;
    lines << QStringLiteral("Run #%1 on %2 (%3 training images)")
                 .arg(id)
                 .arg(datasetName)
                 .arg(formatCount(hasStart ? double(start.trainImages) : kNoValue));
    lines << QStringLiteral("Model %1, strategy %2").arg(str(config.model), QString::fromLatin1(s.label));
    if (s.uses("format")) lines << QStringLiteral("Format %1").arg(str(p.format));
    if (s.uses("granularity")) lines << QStringLiteral("Granularity %1").arg(granularityLabel(p.granularity));
    if (s.uses("rounding"))
        lines << QStringLiteral("Rounding %1").arg(str(p.rounding)) +
                     (p.rounding == "adaround" ? QStringLiteral(" (%1 iterations per layer)").arg(p.adaroundIters) : QString());
    if (p.crossLayerEqualization || p.biasCorrection) {
        QStringList ptq;
        if (p.crossLayerEqualization) ptq << QStringLiteral("cross-layer equalization");
        if (p.biasCorrection) ptq << QStringLiteral("bias correction");
        lines << QStringLiteral("PTQ %1").arg(ptq.join(QStringLiteral(", ")));
    }
    if (s.uses("quantizer") && p.quantizer != "observer")
        lines << QStringLiteral("Quantizer %1%2, initial steps %3")
                     .arg(str(p.quantizer), p.lsqPlus ? QStringLiteral("+ (learned offset)") : QString(), str(p.lsqInit));
    QStringList extras;
    if (p.narrowRange) extras << QStringLiteral("narrow weight range");
    if (p.firstLast8Bit) extras << QStringLiteral("first and last layers at 8 bits");
    if (p.cleRelu6ToRelu) extras << QStringLiteral("ReLU6 made ReLU for CLE");
    if (s.uses("blend-steps")) extras << QStringLiteral("blend over %1 steps").arg(p.blendSteps);
    if (s.uses("quant-eval") && config.quantEval != "engine") extras << QStringLiteral("quantized evaluation on fake-quant");
    if (!extras.isEmpty()) lines << extras.join(QStringLiteral(", "));
    if (s.uses("calibration")) lines << QStringLiteral("Calibration %1").arg(str(p.calibration));
    if (s.uses("schedule")) lines << QStringLiteral("Schedule %1").arg(str(p.schedule));
    if (hasStart && !start.compute.empty() && start.compute != "fp32")
        lines << QStringLiteral("Products on %1").arg(str(start.compute));
    lines << QStringLiteral("%1, lr %2%3, %4 epochs, batch %5, %6 threads, seed %7")
                 .arg(str(config.optimizer))
                 .arg(double(config.lr), 0, 'g', 3)
                 .arg(config.lrSchedule == "constant" ? QString() : QStringLiteral(" (%1)").arg(str(config.lrSchedule)))
                 .arg(config.epochs)
                 .arg(config.batchSize)
                 .arg(config.threads)
                 .arg(config.seed);
    if (!epochs.empty() && !epochs.back().quantRunner.empty())
        lines << QStringLiteral("Quantized accuracy measured on the %1")
                     .arg(epochs.back().quantRunner == "fake-quant" ? QStringLiteral("fake-quant float model")
                                                                    : str(epochs.back().quantRunner));
    if (!refineReport.isEmpty()) {
        // CLE's skipped layers summed up in one line, so that AdaRound's and bias correction's
        // lines stay in view (tester 16: ten "CLE skipped" lines crowded them out).
        QStringList pairs, skipped, others;
        for (const QString& l : refineReport)
            (l.startsWith(QLatin1String("CLE skipped ")) ? skipped : l.startsWith(QLatin1String("CLE ")) ? pairs : others) << l.simplified();
        lines << QStringLiteral("PTQ refinement:");
        if (config.precision.crossLayerEqualization) {
            QString cle = QStringLiteral("  CLE: %1 pair%2 equalized").arg(pairs.size()).arg(pairs.size() == 1 ? "" : "s");
            if (!skipped.isEmpty())
                cle += QStringLiteral(", %1 layer%2 skipped (%3%4)")
                           .arg(skipped.size())
                           .arg(skipped.size() == 1 ? "" : "s")
                           .arg(skipped.front().mid(12))
                           .arg(skipped.size() > 1 ? QStringLiteral("; ...") : QString());
            lines << cle;
        }
        const auto some = [&](const QStringList& l, int most) {
            for (int i = 0; i < l.size() && i < most; ++i) lines << QStringLiteral("  ") + l[i];
            if (l.size() > most) lines << QStringLiteral("  ... %1 more (Save runs writes them all)").arg(l.size() - most);
        };
        some(pairs, 3);
        some(others, 12);
    }
    if (!error.isEmpty()) lines << QStringLiteral("Error: %1").arg(error);
    return lines.join(QLatin1Char('\n'));
}

const std::vector<LayerStats>* RunRecord::latestStats() const
{
    return layerStats.empty() ? nullptr : &layerStats.back();
}

QJsonObject configToJson(const TrainConfig& c)
{
    const PrecisionConfig& p = c.precision;
    QJsonObject pj{{"strategy", strategyName(p.strategy)},
                   {"format", str(p.format)},
                   {"granularity", str(p.granularity)},
                   {"rounding", str(p.rounding)},
                   {"calibration", str(p.calibration)},
                   {"activation_calibration", str(p.activationCalibration)},
                   {"activation_format", str(p.activationFormat)},
                   {"calib_images", double(p.calibImages)},
                   {"schedule", str(p.schedule)},
                   {"bn_freeze_epoch", double(p.bnFreezeEpoch)},
                   {"bn_reestimate_batches", double(p.bnReestimateBatches)},
                   {"blend_steps", double(p.blendSteps)},
                   {"percentile", double(p.percentile)},
                   {"adaround_iters", double(p.adaroundIters)},
                   {"cle", p.crossLayerEqualization},
                   {"cle_relu6_to_relu", p.cleRelu6ToRelu},
                   {"bias_correction", p.biasCorrection},
                   {"quantizer", str(p.quantizer)},
                   {"lsq_plus", p.lsqPlus},
                   {"lsq_init", str(p.lsqInit)},
                   {"narrow_range", p.narrowRange},
                   {"first_last_8bit", p.firstLast8Bit}};
    // The per-layer plan, as docs/PLANS.md's "layers" object (absent for a uniform run).
    if (!p.layers.empty()) {
        const QJsonObject plan = QJsonDocument::fromJson(QByteArray::fromStdString(planToJson(p.plan()))).object();
        pj["layers"] = plan["layers"];
        if (!p.planSource.empty()) pj["plan_file"] = str(p.planSource);
    }
    return QJsonObject{{"model", str(c.model)},
                       {"model_file", str(c.modelFile)},
                       {"reinit_model", c.reinitModel},
                       {"epochs", double(c.epochs)},
                       {"batch_size", double(c.batchSize)},
                       {"optimizer", str(c.optimizer)},
                       {"lr", double(c.lr)},
                       {"lr_schedule", str(c.lrSchedule)},
                       {"momentum", double(c.momentum)},
                       {"nesterov", c.nesterov},
                       {"amsgrad", c.amsgrad},
                       {"weight_decay", double(c.weightDecay)},
                       {"threads", double(c.threads)},
                       {"seed", QString::number(c.seed)},
                       {"eval_batch_size", double(c.evalBatchSize)},
                       {"max_skipped_steps", double(c.maxSkippedSteps)},
                       {"quant_eval", str(c.quantEval)},
                       {"precision", pj}};
}

TrainConfig configFromJson(const QJsonObject& o)
{
    TrainConfig c;
    c.model = sstr(o["model"], c.model);
    c.modelFile = sstr(o["model_file"], "");
    c.reinitModel = o["reinit_model"].toBool(false);
    c.pretrained = !c.modelFile.empty() && !c.reinitModel;
    c.epochs = count(o["epochs"].toDouble(double(c.epochs)));
    c.batchSize = count(o["batch_size"].toDouble(double(c.batchSize)));
    c.optimizer = sstr(o["optimizer"], c.optimizer);
    c.lr = static_cast<float>(o["lr"].toDouble(c.lr));
    c.lrSchedule = sstr(o["lr_schedule"], c.lrSchedule);
    c.momentum = static_cast<float>(o["momentum"].toDouble(c.momentum));
    c.nesterov = o["nesterov"].toBool(c.nesterov);
    c.amsgrad = o["amsgrad"].toBool(c.amsgrad);
    c.weightDecay = static_cast<float>(o["weight_decay"].toDouble(c.weightDecay));
    c.threads = count(o["threads"].toDouble(double(c.threads)));
    bool ok = false;
    const auto seed = o["seed"].toString().toULongLong(&ok);
    if (ok) c.seed = seed;
    c.evalBatchSize = count(o["eval_batch_size"].toDouble(double(c.evalBatchSize)));
    c.maxSkippedSteps = count(o["max_skipped_steps"].toDouble(double(c.maxSkippedSteps)));
    c.quantEval = sstr(o["quant_eval"], c.quantEval) == "fake-quant" ? "fake-quant" : "engine";
    const QJsonObject p = o["precision"].toObject();
    PrecisionConfig& pc = c.precision;
    try {
        pc.strategy = parseStrategy(sstr(p["strategy"], "fp32"));
    } catch (const std::exception&) {
        pc.strategy = Strategy::Fp32;
    }
    pc.format = sstr(p["format"], pc.format);
    pc.granularity = sstr(p["granularity"], pc.granularity);
    pc.rounding = sstr(p["rounding"], pc.rounding);
    pc.calibration = sstr(p["calibration"], pc.calibration);
    pc.activationCalibration = sstr(p["activation_calibration"], pc.activationCalibration);
    pc.activationFormat = sstr(p["activation_format"], pc.activationFormat);
    pc.calibImages = count(p["calib_images"].toDouble(double(pc.calibImages)));
    pc.adaroundIters = std::max<std::size_t>(1, count(p["adaround_iters"].toDouble(double(pc.adaroundIters))));
    pc.crossLayerEqualization = p["cle"].toBool(false);
    pc.biasCorrection = p["bias_correction"].toBool(false);
    pc.cleRelu6ToRelu = pc.crossLayerEqualization && p["cle_relu6_to_relu"].toBool(false);
    pc.quantizer = sstr(p["quantizer"], pc.quantizer);
    pc.lsqPlus = p["lsq_plus"].toBool(false);
    pc.lsqInit = sstr(p["lsq_init"], pc.lsqInit);
    pc.narrowRange = p["narrow_range"].toBool(false);
    pc.firstLast8Bit = p["first_last_8bit"].toBool(false);
    pc.schedule = sstr(p["schedule"], pc.schedule);
    pc.bnFreezeEpoch = count(p["bn_freeze_epoch"].toDouble(double(pc.bnFreezeEpoch)));
    pc.bnReestimateBatches = count(p["bn_reestimate_batches"].toDouble(double(pc.bnReestimateBatches)));
    pc.blendSteps = count(p["blend_steps"].toDouble(double(pc.blendSteps)));
    pc.percentile = static_cast<float>(p["percentile"].toDouble(pc.percentile));
    if (p["layers"].isObject()) {
        const QJsonObject plan{{"layers", p["layers"]}};
        try {
            pc.layers = parsePlanJson(QJsonDocument(plan).toJson(QJsonDocument::Compact).toStdString(), "run record").layers;
            pc.planSource = sstr(p["plan_file"], "");
        } catch (const std::exception&) {
            pc.layers.clear(); // a hand-edited record: the run loads as uniform
        }
    }
    return c;
}

QJsonObject runToJson(const RunRecord& r)
{
    QJsonObject o;
    o["id"] = r.id;
    o["status"] = runStatusText(r.status);
    o["config"] = configToJson(r.config);
    o["dataset"] = r.datasetName;
    o["image_height"] = double(r.imageHeight);
    o["image_width"] = double(r.imageWidth);
    o["classes"] = double(r.classes);
    o["started_at"] = r.startedAt.toString(Qt::ISODate);
    o["model_bytes"] = num(r.modelBytes);
    o["error"] = r.error;
    if (!r.refineReport.isEmpty()) o["ptq_refine"] = QJsonArray::fromStringList(r.refineReport);
    if (r.hasStart)
        o["start"] = QJsonObject{{"model", str(r.start.model)},
                                 {"parameters", double(r.start.parameters)},
                                 {"epochs", double(r.start.epochs)},
                                 {"steps_per_epoch", double(r.start.stepsPerEpoch)},
                                 {"train_images", double(r.start.trainImages)},
                                 {"test_images", double(r.start.testImages)},
                                 {"threads", double(r.start.threads)},
                                 {"compute", str(r.start.compute)}};
    using B = BatchEvent;
    o["steps"] = QJsonObject{
        {"epoch", column(r.steps, [](const B& b) { return double(b.epoch); })},
        {"step", column(r.steps, [](const B& b) { return double(b.step); })},
        {"steps_per_epoch", column(r.steps, [](const B& b) { return double(b.stepsPerEpoch); })},
        {"global_step", column(r.steps, [](const B& b) { return double(b.globalStep); })},
        {"loss", column(r.steps, [](const B& b) { return num(b.loss); })},
        {"accuracy", column(r.steps, [](const B& b) { return num(b.accuracy); })},
        {"images_per_s", column(r.steps, [](const B& b) { return num(b.imagesPerSecond); })},
        {"loss_scale", column(r.steps, [](const B& b) { return num(b.lossScale); })},
        {"skipped", column(r.steps, [](const B& b) { return b.skipped; })},
        {"elapsed_s", column(r.steps, [](const B& b) { return num(b.elapsedSeconds); })},
    };
    QJsonArray epochs;
    for (const EpochEvent& e : r.epochs)
        epochs.append(QJsonObject{{"epoch", double(e.epoch)},
                                  {"epochs", double(e.epochs)},
                                  {"train_loss", num(e.trainLoss)},
                                  {"train_acc", num(e.trainAccuracy)},
                                  {"test_loss", num(e.testLoss)},
                                  {"test_acc", num(e.testAccuracy)},
                                  {"val_acc", num(e.validationAccuracy)},
                                  {"quant_test_acc", num(e.quantTestAccuracy)},
                                  {"quant_runner", str(e.quantRunner)},
                                  {"images_per_s", num(e.imagesPerSecond)},
                                  {"seconds", num(e.seconds)},
                                  {"peak_rss_mb", num(e.peakRssMb)},
                                  {"phase", str(e.phase)}});
    o["epochs"] = epochs;
    QJsonArray stats;
    for (const auto& perEpoch : r.layerStats) {
        QJsonArray layers;
        for (const LayerStats& s : perEpoch) layers.append(statsToJson(s));
        stats.append(layers);
    }
    o["layer_stats"] = stats;
    if (r.finished)
        o["finish"] = QJsonObject{{"stopped", r.finish.stopped},
                                  {"epochs_done", double(r.finish.epochsDone)},
                                  {"test_acc", num(r.finish.testAccuracy)},
                                  {"quant_test_acc", num(r.finish.quantTestAccuracy)},
                                  {"test_loss", num(r.finish.testLoss)},
                                  {"seconds", num(r.finish.seconds)},
                                  {"images_per_s", num(r.finish.imagesPerSecond)},
                                  {"peak_rss_mb", num(r.finish.peakRssMb)}};
    return o;
}

RunPtr runFromJson(const QJsonObject& o)
{
    auto r = std::make_shared<RunRecord>();
    r->id = o["id"].toInt();
    const QString status = o["status"].toString();
    r->status = RunStatus::Done;
    for (RunStatus s : {RunStatus::Done, RunStatus::Stopped, RunStatus::Failed})
        if (status == runStatusText(s)) r->status = s;
    r->config = configFromJson(o["config"].toObject());
    r->datasetName = o["dataset"].toString();
    r->imageHeight = count(o["image_height"].toDouble(28));
    r->imageWidth = count(o["image_width"].toDouble(28));
    r->classes = count(o["classes"].toDouble(10));
    r->startedAt = QDateTime::fromString(o["started_at"].toString(), Qt::ISODate);
    r->modelBytes = numOr(o["model_bytes"]);
    r->error = o["error"].toString();
    for (const QJsonValue& v : o["ptq_refine"].toArray()) r->refineReport << v.toString();
    if (o["start"].isObject()) {
        const QJsonObject s = o["start"].toObject();
        r->hasStart = true;
        r->start.model = sstr(s["model"], "");
        r->start.parameters = count(s["parameters"]);
        r->start.epochs = count(s["epochs"]);
        r->start.stepsPerEpoch = count(s["steps_per_epoch"]);
        r->start.trainImages = count(s["train_images"]);
        r->start.testImages = count(s["test_images"]);
        r->start.threads = count(s["threads"]);
        r->start.compute = sstr(s["compute"], "fp32");
    }
    const QJsonObject st = o["steps"].toObject();
    const QJsonArray loss = st["loss"].toArray();
    std::vector<BatchEvent> steps(static_cast<std::size_t>(loss.size()));
    auto at = [&](const char* key, qsizetype i) { return st[QLatin1String(key)].toArray().at(i); };
    for (qsizetype i = 0; i < loss.size(); ++i) {
        BatchEvent& b = steps[static_cast<std::size_t>(i)];
        b.epoch = count(at("epoch", i));
        b.step = count(at("step", i));
        b.stepsPerEpoch = count(at("steps_per_epoch", i));
        b.globalStep = count(at("global_step", i));
        b.loss = numOr(loss.at(i));
        b.accuracy = numOr(at("accuracy", i));
        b.imagesPerSecond = numOr(at("images_per_s", i));
        b.lossScale = numOr(at("loss_scale", i));
        b.skipped = at("skipped", i).toBool();
        b.elapsedSeconds = numOr(at("elapsed_s", i));
    }
    r->addSteps(steps);
    for (const QJsonValue& v : o["epochs"].toArray()) {
        const QJsonObject e = v.toObject();
        EpochEvent ev;
        ev.epoch = count(e["epoch"]);
        ev.epochs = count(e["epochs"]);
        ev.trainLoss = numOr(e["train_loss"]);
        ev.trainAccuracy = numOr(e["train_acc"]);
        ev.testLoss = numOr(e["test_loss"]);
        ev.testAccuracy = numOr(e["test_acc"]);
        ev.validationAccuracy = numOr(e["val_acc"]);
        ev.quantTestAccuracy = numOr(e["quant_test_acc"]);
        ev.quantRunner = sstr(e["quant_runner"], "");
        ev.imagesPerSecond = numOr(e["images_per_s"]);
        ev.seconds = numOr(e["seconds"]);
        ev.peakRssMb = numOr(e["peak_rss_mb"], 0.0);
        ev.phase = sstr(e["phase"], "");
        r->epochs.push_back(ev);
    }
    for (const QJsonValue& v : o["layer_stats"].toArray()) {
        std::vector<LayerStats> layers;
        for (const QJsonValue& l : v.toArray()) layers.push_back(statsFromJson(l.toObject()));
        r->layerStats.push_back(std::move(layers));
    }
    if (o["finish"].isObject()) {
        const QJsonObject f = o["finish"].toObject();
        r->finished = true;
        r->finish.stopped = f["stopped"].toBool();
        r->finish.epochsDone = count(f["epochs_done"]);
        r->finish.testAccuracy = numOr(f["test_acc"]);
        r->finish.quantTestAccuracy = numOr(f["quant_test_acc"]);
        r->finish.testLoss = numOr(f["test_loss"]);
        r->finish.seconds = numOr(f["seconds"], 0.0);
        r->finish.imagesPerSecond = numOr(f["images_per_s"], 0.0);
        r->finish.peakRssMb = numOr(f["peak_rss_mb"], 0.0);
    }
    return r;
}

QString saveRunsJson(const QString& path, const std::vector<RunPtr>& runs)
{
    QJsonArray arr;
    for (const RunPtr& r : runs) arr.append(runToJson(*r));
    const QJsonObject root{{"quantscope_runs", 1}, {"runs", arr}};
    QSaveFile f(path);
    if (!f.open(QIODevice::WriteOnly))
        return QStringLiteral("%1: cannot write (%2)").arg(path, f.errorString());
    f.write(QJsonDocument(root).toJson(QJsonDocument::Compact));
    if (!f.commit()) return QStringLiteral("%1: cannot write (%2)").arg(path, f.errorString());
    return {};
}

std::vector<RunPtr> loadRunsJson(const QString& path, QString* error)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) {
        *error = QStringLiteral("%1: cannot open (%2)").arg(path, f.errorString());
        return {};
    }
    QJsonParseError pe;
    const QJsonDocument doc = QJsonDocument::fromJson(f.readAll(), &pe);
    if (pe.error != QJsonParseError::NoError) {
        *error = QStringLiteral("%1: not valid JSON at byte %2 (%3)").arg(path).arg(pe.offset).arg(pe.errorString());
        return {};
    }
    const QJsonObject root = doc.object();
    if (!root.contains(QLatin1String("quantscope_runs")) || !root["runs"].isArray()) {
        *error = QStringLiteral("%1: not a QuantScope runs file (expected {\"quantscope_runs\": 1, \"runs\": [...]})")
                     .arg(path);
        return {};
    }
    std::vector<RunPtr> runs;
    for (const QJsonValue& v : root["runs"].toArray()) runs.push_back(runFromJson(v.toObject()));
    return runs;
}

QString saveMetricsCsv(const QString& path, const std::vector<RunPtr>& runs)
{
    QSaveFile f(path);
    if (!f.open(QIODevice::WriteOnly | QIODevice::Text))
        return QStringLiteral("%1: cannot write (%2)").arg(path, f.errorString());
    QTextStream out(&f);
    out << "run,model,strategy,format,granularity,epoch,phase,train_loss,train_acc,test_loss,test_acc,"
           "quant_test_acc,val_acc,images_per_s,seconds\n";
    for (const RunPtr& r : runs)
        for (const EpochEvent& e : r->epochs) {
            const PrecisionConfig& p = r->config.precision;
            // The format the strategy uses: progressive's schedule (its phase column says each epoch's),
            // none for FP32 (the format box's leftover was written).
            const StrategyInfo& s = strategyInfo(p.strategy);
            std::string format = p.strategy == Strategy::Progressive ? p.schedule : s.uses("format") ? p.format : std::string();
            // a per-layer plan, as the runs table says it ("int3 default, 10 per-layer"; it read "int3")
            if (!p.layers.empty() && !format.empty()) format += " default, " + std::to_string(p.layers.size()) + " per-layer";
            const std::string granularity = s.uses("granularity") ? p.granularity : std::string();
            out << r->id << ',' << csvField(str(r->config.model)) << ',' << strategyName(p.strategy) << ','
                << csvField(str(format)) << ',' << csvField(str(granularity)) << ',' << e.epoch << ','
                << csvField(str(csvPhase(r->config, e))) << ',' << csvNum(e.trainLoss) << ',' << csvNum(e.trainAccuracy) << ','
                << csvNum(e.testLoss) << ',' << csvNum(e.testAccuracy) << ',' << csvNum(e.quantTestAccuracy) << ','
                << csvNum(e.validationAccuracy) << ',' << csvNum(e.imagesPerSecond) << ',' << csvNum(e.seconds)
                << '\n';
        }
    out.flush();
    if (!f.commit()) return QStringLiteral("%1: cannot write (%2)").arg(path, f.errorString());
    return {};
}

} // namespace quantscope
