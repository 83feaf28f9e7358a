// quantscope-cli train's reports: the progress bar, the epoch and done lines (or JSON Lines with
// --json), and PTQ's refinement report.
#include "cli_train_report.h"

#include "cli_args.h"

#include "train/ptq_refine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

namespace quantscope::cli {

namespace {

// A loss as text: four decimals, or four significant digits once it is too large for those to mean
// anything (a run that blew up printed "10713662395163606.0000").
std::string lossText(double v)
{
    char buf[48];
    std::snprintf(buf, sizeof buf, std::isfinite(v) && std::fabs(v) >= 1e5 ? "%.4g" : "%.4f", v);
    return buf;
}

std::string humanCount(double v)
{
    std::string s = std::to_string(static_cast<long long>(v + 0.5));
    for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
    return s;
}

std::string clock(double seconds)
{
    if (!(seconds >= 0) || seconds > 359999) return "--:--";
    const long s = static_cast<long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}


nlohmann::json orNull(double v)
{
    if (std::isnan(v)) return nullptr;
    return v;
}

nlohmann::json finiteOrNull(double v)
{
    if (!std::isfinite(v)) return nullptr;
    return v;
}

// A float setting (the learning rate) as the shortest decimal that reads back to it: 0.001, not
// 0.0010000000474974513.
double asWritten(double floatValue)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", floatValue);
    for (int digits = 1; digits <= 9; ++digits) {
        std::snprintf(buf, sizeof buf, "%.*g", digits, floatValue);
        if (static_cast<float>(std::strtod(buf, nullptr)) == static_cast<float>(floatValue)) break;
    }
    return std::strtod(buf, nullptr);
}

class CliObserver final : public TrainObserver {
public:
    CliObserver(bool json, bool progress, nlohmann::json plan, std::vector<std::string> ignored, nlohmann::json startExtra)
        : m_json(json), m_progress(progress), m_plan(std::move(plan)), m_ignored(std::move(ignored)), m_startExtra(std::move(startExtra))
    {
    }

    void onStart(const StartEvent& e) override
    {
        m_start = e;
        if (m_json) {
            nlohmann::json j = {{"event", "start"},        {"model", e.model},         {"parameters", e.parameters},
                                {"epochs", e.epochs},      {"steps_per_epoch", e.stepsPerEpoch},
                                {"train_images", e.trainImages}, {"test_images", e.testImages},
                                {"threads", e.threads},    {"compute", e.compute},
                                {"optimizer", e.optimizer}, {"lr", asWritten(e.lr)},
                                {"lr_schedule", e.lrSchedule}};
            if (!m_plan.is_null()) j["plan"] = m_plan;
            j["ignored_options"] = m_ignored;
            for (const auto& [k, v] : m_startExtra.items()) j[k] = v;
            emit(j);
        }
    }

    void onBatch(const BatchEvent& e) override
    {
        if (!m_progress) return;
        const auto now = std::chrono::steady_clock::now();
        if (e.step != e.stepsPerEpoch && now - m_lastDraw < std::chrono::milliseconds(100)) return;
        m_lastDraw = now;
        const double frac = static_cast<double>(e.step) / static_cast<double>(e.stepsPerEpoch);
        const int width = 24, filled = static_cast<int>(frac * width);
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar.append(static_cast<std::size_t>(width - filled), '-');
        const double remainingImages =
            static_cast<double>((e.stepsPerEpoch - e.step) + (m_start.epochs - e.epoch) * e.stepsPerEpoch) *
            static_cast<double>(m_start.trainImages) / static_cast<double>(e.stepsPerEpoch);
        const double eta = e.imagesPerSecond > 0 ? remainingImages / e.imagesPerSecond : -1;
        std::fprintf(stderr, "\r[%s] epoch %zu/%zu  step %zu/%zu  loss %.4f  %s img/s  ETA %s   ", bar.c_str(),
                     e.epoch, m_start.epochs, e.step, e.stepsPerEpoch, e.loss, humanCount(e.imagesPerSecond).c_str(),
                     clock(eta).c_str());
        std::fflush(stderr);
    }

    void onLayerStats(const std::vector<LayerStats>& stats) override
    {
        // Weights the format overflows are said once per layer and tensor, in either mode (an
        // fp8-e5m2 PTQ with a weight of 70000 made inf and said nothing: tester 13).
        for (const LayerStats& s : stats) {
            if (s.overflowed == 0 || !m_overflowSaid.insert(s.layer + "/" + s.tensor).second) continue;
            std::fprintf(stderr,
                         "quantscope-cli train: warning: layer '%s' %s: %llu weight%s beyond %s's largest finite value became "
                         "inf or NaN; its outputs will not be finite (give that layer a format with more range, e.g. bf16, "
                         "or fp8-e4m3, which saturates)\n",
                         s.layer.c_str(), s.tensor.c_str(), static_cast<unsigned long long>(s.overflowed), s.overflowed == 1 ? "" : "s",
                         s.format.c_str());
        }
        if (!m_json) return;
        for (const LayerStats& s : stats) {
            nlohmann::json j = {{"event", "layer_stats"},
                                {"epoch", s.epoch},
                                {"layer", s.layer},
                                {"tensor", s.tensor},
                                {"format", s.format},
                                {"granularity", s.granularity},
                                {"scales", s.scales},
                                {"zero_points", s.zeroPoints},
                                {"channel_min", s.channelMin},
                                {"channel_max", s.channelMax},
                                {"tensor_min", s.tensorMin},
                                {"tensor_max", s.tensorMax},
                                {"clip_low", s.clipLow},
                                {"clip_high", s.clipHigh},
                                {"bin_edges", s.binEdges},
                                {"fp32_hist", s.fp32Hist},
                                {"quant_hist", s.quantHist},
                                {"clipped_fraction", s.clippedFraction},
                                {"mse", finiteOrNull(s.mse)},
                                {"max_abs_error", finiteOrNull(s.maxAbsError)},
                                {"sqnr_db", finiteOrNull(s.sqnrDb)},
                                {"non_finite", s.nonFinite},
                                {"overflowed", s.overflowed}};
            if (!s.channelMinBefore.empty()) {
                j["channel_min_before_cle"] = s.channelMinBefore;
                j["channel_max_before_cle"] = s.channelMaxBefore;
            }
            emit(j);
        }
    }

    void onStepSizes(const StepSizeEvent& e) override
    {
        if (!m_json) return;
        nlohmann::json steps = nlohmann::json::array();
        for (const StepSizeTrack& t : e.steps) {
            nlohmann::json k = {{"layer", t.layer}, {"tensor", t.tensor}, {"step", t.step}, {"step_min", t.stepMin},
                                {"step_max", t.stepMax}};
            if (std::isfinite(t.offset)) k["offset"] = t.offset;
            steps.push_back(std::move(k));
        }
        emit({{"event", "step_sizes"}, {"epoch", e.epoch}, {"global_step", e.globalStep}, {"steps", std::move(steps)}});
    }

    void onPtqProgress(const PtqProgressEvent& e) override
    {
        if (m_json) {
            nlohmann::json j = {{"event", "ptq_progress"}, {"stage", e.stage},          {"layer", e.layer},
                                {"layer_index", e.layerIndex}, {"layers", e.layers},      {"iteration", e.iteration},
                                {"iterations", e.iterations}, {"loss", finiteOrNull(e.loss)},
                                {"seconds", e.elapsedSeconds}};
            emit(j);
        }
        if (!m_progress) return;
        if (e.stage == "adaround")
            std::fprintf(stderr, "\rAdaRound layer %zu/%zu %-12s iteration %zu/%zu  loss %.4g  %.0f s   ", e.layerIndex,
                         e.layers, e.layer.c_str(), e.iteration, e.iterations, e.loss, e.elapsedSeconds);
        else
            std::fprintf(stderr, "\r%s...%40s", e.stage.c_str(), "");
        std::fflush(stderr);
    }

    void onEpoch(const EpochEvent& e) override
    {
        if (m_progress) std::fputc('\n', stderr);
        if (m_json) {
            nlohmann::json j = {{"event", "epoch"},
                                {"epoch", e.epoch},
                                {"train_loss", e.trainLoss},
                                {"train_acc", e.trainAccuracy},
                                {"test_loss", e.testLoss},
                                {"test_acc", e.testAccuracy},
                                {"images_per_s", e.imagesPerSecond},
                                {"seconds", e.seconds},
                                {"peak_rss_mb", e.peakRssMb},
                                {"phase", e.phase}};
            if (!std::isnan(e.lr)) j["lr"] = asWritten(e.lr);
            if (!std::isnan(e.validationAccuracy)) j["val_acc"] = e.validationAccuracy;
            if (!std::isnan(e.quantTestAccuracy)) j["quant_test_acc"] = e.quantTestAccuracy;
            if (!std::isnan(e.quantTestAccuracyBeforeBnReestimation))
                j["quant_test_acc_before_bn_reestimate"] = e.quantTestAccuracyBeforeBnReestimation;
            if (!e.quantRunner.empty()) j["quant_runner"] = e.quantRunner;
            if (!std::isnan(e.lossScale)) {
                j["loss_scale"] = e.lossScale;
                j["skipped_steps"] = e.skippedSteps;
            }
            emit(j);
        } else {
            // The epoch's own line first, then what its quantized model measured (that line came
            // first, before the epoch it belonged to had been named).
            const bool trained = !std::isnan(e.trainLoss);
            if (!trained)
                std::printf("loaded model (no training)  test loss %s  test acc %.2f %%\n", lossText(e.testLoss).c_str(),
                            100 * e.testAccuracy);
            else {
                char val[48] = ""; // --validation N: the held-out images' accuracy (it was only in the JSON)
                if (!std::isnan(e.validationAccuracy)) std::snprintf(val, sizeof val, "  val acc %.2f %%", 100 * e.validationAccuracy);
                std::printf("epoch %zu/%zu  train loss %s  train acc %.2f %%%s  test loss %s  test acc %.2f %%  "
                            "%s img/s  %.1f s\n",
                            e.epoch, e.epochs, lossText(e.trainLoss).c_str(), 100 * e.trainAccuracy, val, lossText(e.testLoss).c_str(),
                            100 * e.testAccuracy, humanCount(e.imagesPerSecond).c_str(), e.seconds);
                // A finite loss this large is a run that blew up (tester 19: --lr 100 ended "done" at
                // chance with a loss of 1e21); the rule does not stop it, the note says why it failed.
                if (e.trainLoss >= 1e3 && !m_blowUpSaid) {
                    m_blowUpSaid = true;
                    std::fflush(stdout); // after the epoch line it is about
                    std::fprintf(stderr, "quantscope-cli train: note: the training loss reached %s nats: the run has blown up; "
                                         "a smaller --lr (the default is 1e-3) usually cures it\n",
                                 lossText(e.trainLoss).c_str());
                }
            }
            const std::string tag = quantTag(e.phase);
            m_lastTag = tag;
            // PTQ of a loaded model (--epochs 0) has no epoch to name: "epoch 0/0" read as a bug.
            char epoch[48] = "";
            if (trained) std::snprintf(epoch, sizeof epoch, "epoch %zu/%zu  ", e.epoch, e.epochs);
            const char* what = roundedFloatModel(tag) ? "model" : "quantized model";
            if (!std::isnan(e.quantTestAccuracyBeforeBnReestimation))
                std::printf("%s[%s]  %s test acc %.2f %% before BatchNorm re-estimation\n", epoch, tag.c_str(), what,
                            100 * e.quantTestAccuracyBeforeBnReestimation);
            if (!std::isnan(e.quantTestAccuracy))
                std::printf("%s[%s]  %s test acc %.2f %% (%s)\n", epoch, tag.c_str(), what, 100 * e.quantTestAccuracy,
                            e.quantRunner.c_str());
            std::fflush(stdout);
        }
    }

    // A tag of a low-precision float format alone (mixed or low-precision bf16, fp16, fp8): its
    // model is the FP32 one rounded to that format, which "quantized" misnamed. MX block formats
    // and integer formats, and per-layer plans, are quantized models.
    static bool roundedFloatModel(const std::string& tag)
    {
        return tag == "bf16" || tag == "fp16" || tag.rfind("fp8", 0) == 0;
    }

    // What a quantized evaluation measured: the phase's format (PTQ's phase is the FP32 training
    // before it, so the plan's format), and "per-layer plan" when layers have formats of their own.
    std::string quantTag(const std::string& phase) const
    {
        std::string tag = phase;
        // Progressive evaluates its quantized model at the schedule's last format whatever the
        // phase (its fp32 epochs read "[fp32] quantized model test acc" of an int4 model).
        if (m_startExtra.contains("schedule")) {
            const std::string schedule = m_startExtra.at("schedule").get<std::string>();
            const std::string last = schedule.substr(schedule.rfind(',') == std::string::npos ? 0 : schedule.rfind(',') + 1);
            tag = last.substr(0, last.find(':'));
        }
        if (m_plan.is_object()) {
            if (tag == "fp32" && m_plan.contains("default")) tag = m_plan.at("default").value("format", tag);
            if (m_plan.contains("layers") && !m_plan.at("layers").empty()) tag += ", per-layer plan";
        }
        return tag;
    }

    void onFinish(const FinishEvent& e) override
    {
        if (m_progress && e.stopped) std::fputc('\n', stderr);
        if (m_json) {
            nlohmann::json j = {{"event", "done"},
                                {"stopped", e.stopped},
                                {"epochs_done", e.epochsDone},
                                {"test_acc", orNull(e.testAccuracy)},
                                {"test_loss", orNull(e.testLoss)},
                                {"images_per_s", e.imagesPerSecond},
                                {"seconds", e.seconds},
                                {"peak_rss_mb", e.peakRssMb}};
            if (!std::isnan(e.quantTestAccuracy)) j["quant_test_acc"] = e.quantTestAccuracy;
            if (!std::isnan(e.finalLossScale)) {
                j["loss_scale"] = e.finalLossScale;
                j["skipped_steps"] = e.skippedSteps;
            }
            emit(j);
        } else {
            if (!std::isnan(e.finalLossScale))
                std::printf("loss scale %g, %zu step(s) skipped on overflow\n", e.finalLossScale, e.skippedSteps);
            if (std::isnan(e.testAccuracy)) // stopped before anything was evaluated (it printed "test accuracy 0.00 %")
                std::printf("%s after %zu epoch(s), before any evaluation, %.1f s, peak memory %.0f MB\n",
                            e.stopped ? "stopped" : "done", e.epochsDone, e.seconds, e.peakRssMb);
            else if (!std::isnan(e.quantTestAccuracy)) // the quantized model is what the run made; FP32 beside it
                std::printf("%s after %zu epoch(s): %s test accuracy %.2f %% (FP32 weights %.2f %%), %.1f s, peak memory %.0f MB\n",
                            e.stopped ? "stopped" : "done", e.epochsDone,
                            roundedFloatModel(m_lastTag) ? m_lastTag.c_str() : "quantized", 100 * e.quantTestAccuracy,
                            100 * e.testAccuracy, e.seconds, e.peakRssMb);
            else
                std::printf("%s after %zu epoch(s): test accuracy %.2f %%, %.1f s, peak memory %.0f MB\n",
                            e.stopped ? "stopped" : "done", e.epochsDone, 100 * e.testAccuracy, e.seconds, e.peakRssMb);
        }
    }

private:
    void emit(const nlohmann::json& j)
    {
        printJsonLine(j);
        std::fflush(stdout);
    }

    bool m_json, m_progress;
    nlohmann::json m_plan; // null for strategies without a plan
    std::vector<std::string> m_ignored; // "--format", ...: given, but not used by the strategy
    nlohmann::json m_startExtra;        // normalisation, data, test split, the model file's import notes
    StartEvent m_start;
    std::string m_lastTag; // the last epoch's quantTag, for the final line
    bool m_blowUpSaid = false; // the note on a training loss past 1e3, once a run
    std::set<std::string> m_overflowSaid; // "layer/tensor" whose overflowed weights were said
    std::chrono::steady_clock::time_point m_lastDraw{};
};

} // namespace

std::unique_ptr<TrainObserver> makeCliObserver(bool json, bool progress, nlohmann::json plan, std::vector<std::string> ignored,
                                               nlohmann::json startExtra)
{
    return std::make_unique<CliObserver>(json, progress, std::move(plan), std::move(ignored), std::move(startExtra));
}

// What --cle, --rounding adaround and --bias-correction did (after the last evaluation).
void printRefineReport(const PtqRefiner& r, bool json)
{
    const EqualizationReport& cle = r.equalization();
    if (json) {
        nlohmann::json j = {{"event", "ptq_refine"}};
        nlohmann::json pairs = nlohmann::json::array(), ada = nlohmann::json::array(), bias = nlohmann::json::array();
        for (const EqualizedPair& p : cle.pairs)
            pairs.push_back({{"first", p.first}, {"second", p.second}, {"range_ratio_before", p.rangeRatioBefore},
                             {"range_ratio_after", p.rangeRatioAfter}});
        for (const AdaRoundLayerReport& a : r.adaround())
            ada.push_back({{"layer", a.layer}, {"samples", a.samples}, {"iterations", a.iterations},
                           {"loss_nearest", a.lossNearest}, {"loss_adaround", a.lossAdaRound},
                           {"flipped_fraction", a.flippedFraction}, {"kept_nearest", a.keptNearest}, {"seconds", a.seconds}});
        for (const BiasCorrectionReport& b : r.biasCorrection())
            bias.push_back({{"layer", b.layer}, {"mean_abs_shift", b.meanAbsShift}, {"applied", b.applied}});
        j["cle_pairs"] = pairs;
        j["cle_skipped"] = cle.skipped;
        j["cle_sweeps"] = cle.sweeps;
        if (r.replacedRelu6() > 0) {
            j["relu6_replaced"] = r.replacedRelu6();
            j["fp32_acc_after_relu6_to_relu"] = orNull(r.floatAccuracyAfterCle());
        }
        j["adaround"] = ada;
        j["bias_correction"] = bias;
        printJsonLine(j);
        return;
    }
    for (const std::string& line : r.reportLines()) std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

} // namespace quantscope::cli
