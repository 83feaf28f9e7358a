// quantscope-cli train: flags -> TrainConfig, progress on a terminal, JSON Lines with --json.
#include "cli_args.h"
#include "cli_commands.h"
#include "cli_signals.h"
#include "cli_train_report.h"

#include "data/dataset.h"
#include "quant/format.h"
#include "quant/granularity.h"
#include "quant/observer.h"
#include "quant/precision_plan.h"
#include "quant/rounding.h"
#include "util/errors.h"
#include "analysis/engine_eval.h"
#include "train/ptq_refine.h"
#include "analysis/model_export.h"
#include "io/model_source.h"
#include "io/qsm.h"
#include "nn/model_zoo.h"
#include "train/trainer.h"
#include "util/atomic_file.h"
#include "util/memory.h"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

namespace quantscope::cli {

const char* const kTrainHelp =
    "usage: quantscope-cli train [options]\n"
    "\n"
    "Trains a model on a dataset and reports test accuracy.\n"
    "\n"
    "data:\n"
    "  --data PATH          the layout is detected: an MNIST-layout folder (train-images-idx3-ubyte[.gz]\n"
    "                       etc.), a CIFAR-10/100 binary folder (data_batch_1..5.bin + test_batch.bin,\n"
    "                       or train.bin + test.bin), a .csv file or a folder with train.csv [test.csv]\n"
    "                       (label, then pixels), or image class folders (train/<class>/*.png|jpg +\n"
    "                       test/<class>/, or <class>/ split by --test-fraction)\n"
    "                       (default /usr/share/datasets/fashion-mnist)\n"
    "  --image-shape CxHxW  CSV pixel layout, C 1 or 3 (default: from the column count, NxN or 3xNxN)\n"
    "  --resize HxW         resize every image (needed when image files differ in size)\n"
    "  --test-fraction F    share of each class held out as the test set when a CSV file or an image\n"
    "                       tree has no test part (default 0.2, a fixed split for every --seed)\n"
    "  --train-limit N      use a seeded subset of N training images (default: all)\n"
    "  --test-limit N       evaluate on the first N test images (default: all)\n"
    "  --validation N       hold out N training images as a validation set (default 0); with\n"
    "                       --train-limit M they are held out of the M images (M - N train), as\n"
    "                       analyze and the GUI's Validation field hold them out\n"
    "  --normalize MEAN,STD input normalisation (pixels first scaled to [0, 1]); each a number\n"
    "                       or one per channel joined by ':' (0.49:0.48:0.45,0.25:0.24:0.26),\n"
    "                       or 'none' (default: the one a --model/--init file stores, else\n"
    "                       the train set's per-channel statistics)\n"
    "model and training:\n"
    "  --model NAME|FILE    seed-cnn (default), seed-cnn-bn, lenet5, mlp, resnet8,\n"
    "                       mobilenet-tiny; or a model file: an FP32 .onnx (from PyTorch's\n"
    "                       torch.onnx.export or QuantScope) or .qsm, whose architecture and\n"
    "                       weights are the start (--epochs 0 with --strategy ptq quantizes it\n"
    "                       without training)\n"
    "  --reinit             with a model file: keep its architecture, train from a fresh init\n"
    "  --init FILE          start the preset --model NAME from the weights of a trained FP32\n"
    "                       model of that preset (.qsm or .onnx)\n"
    "  --epochs N           passes over the training set (default 1; 0 only with a --model FILE\n"
    "                       or --init FILE and --strategy ptq: calibrate and evaluate)\n"
    "  --batch-size N       images per step (default 64)\n"
    "  --optimizer NAME     adam (default) or sgd\n"
    "  --lr F               learning rate (default 1e-3)\n"
    "  --lr-schedule NAME   constant (default) or cosine: per step from --lr down to 0 over\n"
    "                       the run (SGDR without restarts, Loshchilov & Hutter 2017)\n"
    "  --momentum F         SGD momentum (default 0)\n"
    "  --nesterov           SGD with Nesterov momentum\n"
    "  --amsgrad            Adam with AMSGrad's denominator (the largest second moment so far;\n"
    "                       Reddi et al. 2018, PyTorch's amsgrad=True)\n"
    "  --weight-decay F     L2 weight decay (default 0)\n"
    "  --threads N          worker threads (default 2; at most the machine's hardware threads)\n"
    "  --seed N             seed for initialisation, shuffling and dropout (default 1)\n"
    "precision:\n"
    "  --strategy NAME      fp32 (default), ptq, qat, mixed, lowp, progressive\n"
    "  --format NAME        number format: int2..int16, uint2..uint16, ternary, binary (weights),\n"
    "                       fp16, bf16, fp8-e4m3, fp8-e5m2, mxint8, mxfp8-e4m3, mxfp4\n"
    "                       (default int8; mixed/lowp: bf16). fp16 values are rounded with the\n"
    "                       CPU's F16C conversions and the products run in FP32 (AVX512-FP16,\n"
    "                       where present, accumulates in fp16, which training must not), so\n"
    "                       fp16 shows accuracy, not speed\n"
    "  --granularity G      global, layer, tensor, channel (default), group:N\n"
    "  --rounding R         nearest (default, half to even), stochastic, or adaround (ptq:\n"
    "                       learned rounding, Nagel et al. ICML 2020, layer by layer)\n"
    "  --adaround-iters N   ptq --rounding adaround: iterations per layer (default 500)\n"
    "  --cle                ptq: cross-layer equalization after BatchNorm folding (pairs\n"
    "                       through ReLU; ReLU6 pairs are skipped and listed)\n"
    "  --cle-relu6-to-relu  with --cle: replace ReLU6 by ReLU first, as the CLE paper does for\n"
    "                       MobileNets (changes the FP32 model; its accuracy is reported)\n"
    "  --bias-correction    ptq: empirical bias correction on the calibration images\n"
    "  --calibration C      weight ranges: minmax (default), moving-average, percentile, mse\n"
    "  --act-calibration C  activation ranges (default: minmax for qat from a fresh model, since a\n"
    "                       moving average lags ranges that grow while the weights learn (seed-cnn,\n"
    "                       6,400 images: 81.9 % against 78.9 %); else moving-average, PyTorch's\n"
    "                       MovingAverageMinMaxObserver, as for fine-tuning a trained model)\n"
    "  --act-format NAME    activation format for integer strategies (default uint8)\n"
    "  --percentile P       percentile for --calibration percentile (default 99.99)\n"
    "  --calib-images N     ptq: images used to calibrate activations (default 1000)\n"
    "  --schedule S         progressive: format:epochs,... (default fp32:1,fp16:1,int8:1);\n"
    "                       sets --epochs to the schedule's total\n"
    "  --blend-steps N      progressive: steps over which formats are blended (default 100)\n"
    "  --bn-freeze-epoch N  qat: freeze BatchNorm statistics from epoch N (default never)\n"
    "  --bn-reestimate N    qat: before each quantized evaluation, re-estimate the BatchNorm\n"
    "                       statistics on N training batches run through the quantized model\n"
    "                       (default 0 = off; 100 is AIMET's default)\n"
    "  --quant-eval R       how the quantized model is evaluated (ptq, qat, progressive): engine\n"
    "                       (default: the integer engine's VNNI/AVX2 kernels when every weight and\n"
    "                       activation is an integer of at most 8 bits, else fake-quant) or fake-quant\n"
    "  --max-skipped-steps N\n"
    "                       mixed, lowp, progressive: stop (exit 4, \"training diverged\") after N\n"
    "                       consecutive steps skipped for non-finite gradients (default 50, 0 never)\n"
    "  --quantizer Q        qat: observer (default: scales from ranges) or lsq (learned step\n"
    "                       sizes, Esser et al. 2020; --json adds step_sizes events); on a model\n"
    "                       with BatchNorm, add --bn-reestimate 100 (the statistics drift)\n"
    "  --lsq-plus           with --quantizer lsq: also learn the offset of affine activations (LSQ+)\n"
    "  --lsq-init I         with --quantizer lsq: initial steps mse (default: the grid with the least\n"
    "                       quantization error, per weight slot and on the first batch's activations),\n"
    "                       lsq (the paper's 2<|x|>/sqrt(Qp)) or range (the observers' scales:\n"
    "                       --calibration, first batch's min-max)\n"
    "  --narrow-range       signed weights use [-(2^(n-1)-1), 2^(n-1)-1] (int8: [-127, 127])\n"
    "  --first-last-8bit    the first and last Conv2d/Linear keep int8 weights, and the model input,\n"
    "                       the last layer's input and its output (logits) 8-bit activations (as the\n"
    "                       LSQ paper); every other layer follows --format / --act-format\n"
    "per-layer plan (ptq, qat, progressive's last phase; the options above are its default):\n"
    "  --plan FILE          a JSON plan (docs/PLANS.md); explicit --format, --granularity,\n"
    "                       --calibration, --act-format override its default, and its input\n"
    "                       normalisation (analyze search records it) applies to a model file that\n"
    "                       stores none, unless --normalize is given\n"
    "  --layer NAME=FORMAT[:GRANULARITY]\n"
    "                       one layer's weight format (repeatable), e.g. fc1=int4:channel,\n"
    "                       conv1=int2:group:16, fc2=fp32\n"
    "  --keep-fp32 NAME[,NAME]\n"
    "                       keep these layers in float (weights and output activation);\n"
    "                       a name that holds a comma goes in --layer NAME=fp32\n"
    "An option the chosen --strategy does not use is named on stderr (and in the JSON start\n"
    "event's \"ignored_options\") with the strategies that use it.\n"
    "Hardware paths, chosen at run time and named in the start event's \"compute\": qat's\n"
    "convolutions on integer grids of up to 8 bits multiply int8 codes (AMX-INT8 or AVX-512\n"
    "VNNI; environment QS_INT8_PRODUCTS=0|vnni|amx), mixed/lowp bf16 multiply in bf16 on AMX,\n"
    "or on AVX512_BF16 on AMD CPUs (QS_BF16_PATH=emulated|avx512|amx; convolutions of fewer\n"
    "than 32 products per output keep the emulation); results equal the emulation up to FP32\n"
    "rounding.\n"
    "output:\n"
    "  --json               JSON Lines on stdout: {\"event\":\"start\",...}, per epoch one\n"
    "                       {\"event\":\"layer_stats\",...} per quantized layer and one\n"
    "                       {\"event\":\"epoch\",...}, then {\"event\":\"done\",...}\n"
    "  --export PATH[,PATH] after training, write the model to PATH (.qsm or .onnx; integer\n"
    "                       for ptq/qat, else FP32), read it back and report its test accuracy\n"
    "  --quiet              no progress bar\n"
    "  -h, --help           this text\n";

namespace {

// Ctrl+C (SIGINT) or SIGTERM asks the run to stop after the current batch (exit 130 or 143, no
// export, nothing half-written; cli_signals.h). They are caught from the start of the command,
// dataset loading included, so an early one never kills the process mid-way.
StopToken g_stop; // static storage: valid for the handler at any moment; its flag is lock-free

// Checks every name before the (slow) data load, so a typo fails at once.
void validateNames(const PrecisionConfig& pc)
{
    findFormat(pc.format);
    findFormat(pc.activationFormat);
    parseGranularity(pc.granularity);
    if (pc.rounding != "adaround" && pc.rounding != "nearest" && pc.rounding != "stochastic")
        throw ConfigError("unknown rounding '" + pc.rounding + "' (known: nearest, stochastic, adaround)");
    parseCalibration(pc.calibration);
    parseCalibration(pc.activationCalibration);
    if (pc.strategy == Strategy::Progressive) parseSchedule(pc.schedule);
}

// A --resize the model cannot take (a layer past its weight limit, a run past the machine's
// memory) is refused from the options alone, before any image is read and resized (tester 22:
// lenet5 at 4000x4000 took 43 s and 1.7 GB for 100 images to say so, resnet8 five minutes). The
// model is built at the new size with the data's channels where its layout fixes them (IDX 1,
// CIFAR 3, an image folder or CSV as their options say, else 1) and, for a preset, two classes:
// lower bounds of the real run, so nothing the run would accept is refused here. A model file
// has its own channels and classes. Throws what makeModel, the factory and
// checkTrainingFootprint throw.
void checkModelTakesResize(const TrainConfig& cfg, std::optional<std::size_t> fileClasses, const DatasetOptions& dopt)
{
    std::size_t channels = dopt.imageChannels != 0 ? dopt.imageChannels : 1;
    if (dopt.imageChannels == 0) {
        const DatasetLayout layout = detectLayout(dopt.dir).layout;
        if (layout == DatasetLayout::Cifar10 || layout == DatasetLayout::Cifar100) channels = 3;
        else if (layout == DatasetLayout::Csv && dopt.imageShape.channels != 0) channels = dopt.imageShape.channels;
    }
    const std::size_t h = dopt.resize.height, w = dopt.resize.width;
    const std::unique_ptr<Model> model = cfg.modelFactory ? cfg.modelFactory(Shape{channels, h, w}, fileClasses.value_or(2), cfg.seed)
                                                          : makeModel(cfg.model, channels, h, w, 2, cfg.seed);
    checkTrainingFootprint(*model, cfg.batchSize, physicalMemoryBytes());
}

} // namespace

void checkLayerFlagsAgree(const Args& args)
{
    std::set<std::string> layerNames;
    for (const std::string& spec : args.all("--layer")) layerNames.insert(spec.substr(0, spec.rfind('=')));
    std::set<std::string> kept; // a layer named twice, as a repeated --layer is (tester 17: accepted in silence)
    for (const std::string& names : args.all("--keep-fp32")) {
        std::stringstream list(names);
        for (std::string n; std::getline(list, n, ',');) {
            if (layerNames.count(n))
                throw UsageError("layer '" + n + "' is both in --keep-fp32 and in --layer " + n + "=...; keep one");
            if (!n.empty() && !kept.insert(n).second) throw UsageError("layer '" + n + "' is named twice in --keep-fp32; keep one");
        }
    }
}

void applyPlanFlags(const Args& args, PrecisionConfig& pc)
{
    PrecisionPlan plan = pc.plan();
    plan.source.clear();
    if (args.has("--plan")) {
        plan = readPlanFile(args.str("--plan", ""), plan.defaults);
        if (args.has("--format")) plan.defaults.format = pc.format;
        if (args.has("--granularity")) plan.defaults.granularity = pc.granularity;
        if (args.has("--calibration")) plan.defaults.calibration = pc.calibration;
        if (args.has("--act-format")) plan.defaults.activationFormat = pc.activationFormat;
        // The activation calibration the plan was measured with (analyze search writes it), unless
        // --act-calibration says otherwise: the plan then reproduces the accuracy it was chosen at.
        if (!plan.activationCalibration.empty() && !args.has("--act-calibration")) pc.activationCalibration = plan.activationCalibration;
        // The input normalisation it was measured with: runTrain applies it to a model that stores none.
        pc.planNormalization = plan.inputNormalization;
        if (!plan.inputNormalization.empty()) {
            try {
                (void)Normalization::parse(plan.inputNormalization);
            } catch (const ConfigError& e) {
                throw ConfigError("plan " + plan.source + ": \"default\".\"normalize\": " + e.what());
            }
        }
    }
    checkLayerFlagsAgree(args);
    applyLayerSpecs(plan, args.all("--layer"));
    for (const std::string& names : args.all("--keep-fp32")) applyKeepFp32(plan, names);
    pc.format = plan.defaults.format;
    pc.granularity = plan.defaults.granularity;
    pc.calibration = plan.defaults.calibration;
    pc.activationFormat = plan.defaults.activationFormat;
    pc.layers = plan.layers;
    pc.planSource = plan.source;
}

int runTrain(const std::vector<std::string>& argv)
{
    const Args args(argv,
                    {"--data", "--model", "--epochs", "--batch-size", "--lr", "--lr-schedule", "--optimizer", "--momentum",
                     "--weight-decay", "--threads", "--seed", "--train-limit", "--test-limit", "--validation",
                     "--strategy", "--format", "--granularity", "--rounding", "--calibration", "--act-calibration",
                     "--act-format", "--percentile", "--calib-images", "--schedule", "--blend-steps",
                     "--bn-freeze-epoch", "--bn-reestimate", "--export", "--init", "--normalize", "--image-shape", "--resize", "--test-fraction",
                     "--plan", "--layer", "--keep-fp32", "--quant-eval", "--max-skipped-steps", "--quantizer", "--lsq-init",
                     "--adaround-iters"},
                    {"--json", "--help", "--nesterov", "--amsgrad", "--quiet", "--reinit", "--lsq-plus", "--narrow-range", "--first-last-8bit", "--cle",
                     "--bias-correction", "--cle-relu6-to-relu"});
    if (args.has("--help")) {
        std::fputs(kTrainHelp, stdout);
        return kExitOk;
    }
    const StopSignalScope stopSignals(&g_stop);
    if (!args.positional().empty()) throw UsageError("unexpected argument '" + args.positional()[0] + "'");

    TrainConfig cfg;
    const std::string modelSpec = args.str("--model", cfg.model), initPath = args.str("--init", "");
    const bool reinit = args.has("--reinit");
    std::optional<ExportedModel> file; // a --model file, read once: its name, notes, normalisation and classes
    std::size_t importNotes = 0;       // how many of file->notes the reader wrote (the rest are this command's)
    std::string reinitFolded;          // --reinit of a file whose exporter folded its BatchNorms away
    // A graph of dynamic height and width is read at the --resize or --image-shape size when one
    // is given, and again at the data's size once the data is loaded.
    const DatasetOptions sized = datasetOptions(args);
    const ImageShape at = sized.resize.given() ? sized.resize : sized.imageShape;
    if (isModelFile(modelSpec)) {
        if (!initPath.empty()) throw UsageError("--init loads weights into a preset; --model " + modelSpec + " has its own");
        // The name the file stores (the preset a QuantScope model was built from; an imported
        // graph's file name), which exports keep: a PTQ of mb.qsm is still a mobilenet-tiny.
        file = readModelFile(modelSpec, at.height, at.width);
        importNotes = file->notes.size();
        // torch.onnx.export in eval mode folds each BatchNorm into its convolution: fine-tuning
        // then trains a network without BatchNorm, which a deep one may not survive at the usual
        // learning rate (tester 11: ResNet-18 went to 0 %, with no word).
        const std::size_t foldedConvs = static_cast<std::size_t>(
            std::count_if(file->layers.begin(), file->layers.end(), [](const StoredLayer& l) { return l.bnFolded; }));
        if (foldedConvs > 0 && !reinit && args.str("--epochs", "1") != "0")
            file->notes.push_back("the file has BatchNorm folded into " + std::to_string(foldedConvs) +
                                  " convolutions (as torch.onnx.export in eval mode and QuantScope's FP32 .onnx write them), so "
                                  "fine-tuning trains the network without BatchNorm; a deep one may diverge at the usual learning "
                                  "rate: try a 10x smaller --lr, or start from a file that keeps the BatchNorm layers "
                                  "(torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE), or QuantScope's .qsm)");
        // --reinit trains that architecture from scratch: without the BatchNorms, a network that
        // was designed with them trains poorly or not at all (tester 15: mobilenet-style at chance).
        if (foldedConvs > 0 && reinit)
            reinitFolded = "the file has BatchNorm folded into " + std::to_string(foldedConvs) +
                           " convolutions (torch.onnx.export in eval mode folds them), so --reinit trains the architecture "
                           "without BatchNorm, which a network designed with it may not learn (it can stay at chance); export "
                           "with torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE) to keep the BatchNorm layers";
        cfg.model = file->modelName;
        if (cfg.model.empty()) cfg.model = std::filesystem::path(modelSpec).stem().string();
        cfg.modelFactory = modelFromFile(modelSpec, reinit);
        cfg.pretrained = !reinit;
        cfg.modelFile = modelSpec;
        cfg.reinitModel = reinit;
    } else {
        const std::string misnamed = misnamedModelFile(modelSpec); // a model file under another name (tester 14)
        if (!misnamed.empty()) throw UsageError(modelSpec + ": " + misnamed);
        if (reinit) throw UsageError("--reinit applies to a model file (--model FILE.onnx or FILE.qsm)");
        cfg.model = modelSpec;
        if (!initPath.empty()) {
            cfg.modelFactory = presetWithWeights(modelSpec, initPath);
            cfg.pretrained = true;
            cfg.modelFile = initPath;
            file = readModelFile(initPath, at.height, at.width); // its normalisation, notes and classes, as for --model FILE
            file->notes.clear();            // the weights go into the preset; how the file was read is not news
        }
    }
    if (!cfg.pretrained && args.has("--epochs") && args.str("--epochs", "") == "0")
        throw UsageError("--epochs 0 evaluates trained weights without training: give them with --model FILE (.qsm/.onnx) or "
                         "--init FILE; " + modelSpec + " alone starts from a fresh initialisation");
    cfg.epochs = args.u64("--epochs", 1, cfg.pretrained ? 0 : 1, 10000);
    cfg.batchSize = args.u64("--batch-size", 64, 1, 65536);
    cfg.lr = static_cast<float>(args.f64("--lr", 1e-3, 1e-12, 100.0));
    cfg.lrSchedule = args.str("--lr-schedule", cfg.lrSchedule);
    cfg.optimizer = args.str("--optimizer", "adam");
    cfg.momentum = static_cast<float>(args.f64("--momentum", 0.0, 0.0, 0.999999));
    cfg.nesterov = args.has("--nesterov");
    cfg.amsgrad = args.has("--amsgrad");
    cfg.weightDecay = static_cast<float>(args.f64("--weight-decay", 0.0, 0.0, 10.0));
    cfg.threads = threadsOption(args, "train");
    const std::string quantEval = args.str("--quant-eval", "engine");
    if (quantEval == "engine") cfg.quantizedEvaluator = engineEvaluator(cfg.threads);
    else if (quantEval != "fake-quant") throw UsageError("--quant-eval takes engine or fake-quant, not '" + quantEval + "'");
    cfg.quantEval = quantEval;
    cfg.seed = args.u64("--seed", 1);
    PrecisionConfig& pc = cfg.precision;
    pc.strategy = parseStrategy(args.str("--strategy", "fp32"));
    const bool floatStrategy = pc.strategy == Strategy::Mixed || pc.strategy == Strategy::LowPrecision;
    pc.format = args.str("--format", floatStrategy ? "bf16" : "int8");
    pc.granularity = args.str("--granularity", pc.granularity);
    pc.rounding = args.str("--rounding", pc.rounding);
    pc.calibration = args.str("--calibration", pc.calibration);
    pc.activationCalibration = args.str("--act-calibration", defaultActivationCalibration(pc.strategy, cfg.pretrained));
    pc.activationFormat = args.str("--act-format", pc.activationFormat);
    pc.percentile = static_cast<float>(args.f64("--percentile", pc.percentile, 50.0001, 100.0));
    pc.calibImages = args.u64("--calib-images", pc.calibImages, 1, 10000000);
    pc.schedule = args.str("--schedule", pc.schedule);
    pc.blendSteps = args.u64("--blend-steps", pc.blendSteps, 0, 100000000);
    pc.bnFreezeEpoch = args.u64("--bn-freeze-epoch", 0, 1, 10000); // epochs count from 1; not given = never (tester 24: 0 meant never)
    pc.bnReestimateBatches = args.u64("--bn-reestimate", 0, 0, 1000000);
    cfg.maxSkippedSteps = args.u64("--max-skipped-steps", cfg.maxSkippedSteps, 0, 100000000);
    pc.quantizer = args.str("--quantizer", pc.quantizer);
    pc.lsqPlus = args.has("--lsq-plus");
    pc.lsqInit = args.str("--lsq-init", pc.lsqInit);
    pc.narrowRange = args.has("--narrow-range");
    pc.firstLast8Bit = args.has("--first-last-8bit");
    pc.adaroundIters = args.u64("--adaround-iters", pc.adaroundIters, 1, 1000000);
    pc.crossLayerEqualization = args.has("--cle");
    pc.biasCorrection = args.has("--bias-correction");
    pc.cleRelu6ToRelu = args.has("--cle-relu6-to-relu");
    applyPlanFlags(args, pc);
    if (pc.strategy == Strategy::Progressive) {
        const std::size_t given = cfg.epochs;
        cfg.epochsFromSchedule();
        if (args.has("--epochs") && given != cfg.epochs)
            throw UsageError("--epochs " + std::to_string(given) + " disagrees with --schedule " + pc.schedule +
                             " (" + std::to_string(cfg.epochs) + " epochs); leave --epochs out");
    }
    validateNames(pc);
    cfg.validate();
    // Options the strategy does not use: one line each, from the table the GUI reads.
    std::vector<std::string> ignored;
    for (const OptionUse& o : optionUses()) {
        const std::string flag = std::string("--") + o.option;
        if (!args.has(flag) || strategyUses(pc.strategy, o.option)) continue;
        ignored.push_back(flag);
        std::fprintf(stderr, "quantscope-cli train: %s is ignored by --strategy %s; it is used by %s\n", flag.c_str(),
                     strategyInfo(pc.strategy).name, strategiesUsing(o.option).c_str());
    }
    std::vector<std::string> exportPaths; // checked before training, not after it
    if (args.has("--export") && args.str("--export", "").find_first_not_of(", ") == std::string::npos)
        throw UsageError("--export: no file name given (an empty shell variable?)");
    std::stringstream exportList(args.str("--export", ""));
    for (std::string p; std::getline(exportList, p, ',');)
        if (!p.empty()) {
            checkOutputIsNotAnInput("--export", p, {{"model (--model)", args.str("--model", "")}, {"model (--init)", args.str("--init", "")},
                                                    {"plan (--plan)", args.str("--plan", "")}, {"data (--data)", args.str("--data", kDefaultDataDir)}});
            // the same file twice (by name or through another path) would be written twice, the second over the first
            const auto same = [&](const std::string& q) {
                std::error_code e;
                const auto resolved = [&](const std::string& x) { return std::filesystem::weakly_canonical(std::filesystem::absolute(x, e), e); };
                const auto a = resolved(p);
                if (e) return q == p;
                const auto b = resolved(q);
                return q == p || (!e && a == b);
            };
            if (std::any_of(exportPaths.begin(), exportPaths.end(), same))
                throw UsageError("--export: " + p + " is given twice; give each file once");
            checkExportable(cfg, exportPaths.emplace_back(p));
            checkWritableFolder(p); // a read-only or missing folder is named now, not after training
        }

    // Options that only matter with another option: named like the strategy's (the GUI greys them out).
    const auto unusedWith = [&](const char* flag, bool used, const char* why) {
        if (!args.has(flag) || used || std::find(ignored.begin(), ignored.end(), flag) != ignored.end()) return;
        ignored.push_back(flag);
        std::fprintf(stderr, "quantscope-cli train: %s is ignored: %s\n", flag, why);
    };
    unusedWith("--momentum", cfg.optimizer == "sgd", "it is for --optimizer sgd");
    unusedWith("--nesterov", cfg.optimizer == "sgd", "it is for --optimizer sgd");
    unusedWith("--amsgrad", cfg.optimizer == "adam", "it is for --optimizer adam");
    // LSQ learns the steps from its own start (--lsq-init); only its range start reads the weight
    // calibration, and no start reads the activation one (tester 12: ignored without a word).
    const bool lsq = pc.quantizer == "lsq";
    const bool weightCalibrationUsed = !lsq || pc.lsqInit == "range";
    unusedWith("--calibration", weightCalibrationUsed, "--quantizer lsq starts its weight steps from --lsq-init (only --lsq-init range reads --calibration)");
    unusedWith("--act-calibration", !lsq, "--quantizer lsq starts its activation steps from the first batch (--lsq-init)");
    unusedWith("--percentile", (weightCalibrationUsed && pc.calibration == "percentile") || (!lsq && pc.activationCalibration == "percentile"),
               "it is for --calibration percentile or --act-calibration percentile");
    unusedWith("--lsq-init", pc.quantizer == "lsq", "it is for --quantizer lsq");
    unusedWith("--adaround-iters", pc.rounding == "adaround", "it is for --rounding adaround");
    // Granularity is where an integer grid's scale lives; float and MX formats have none (an MX
    // block is its own granularity). Used when the default or any layer's format is an integer one.
    bool intGrid = needsScale(findFormat(pc.format));
    for (const LayerOverride& o : pc.layers) intGrid = intGrid || (o.format && o.format != "fp32" && needsScale(findFormat(*o.format)));
    unusedWith("--granularity", intGrid, "float formats take no scale, and an MX format's scale is its own (one per block of 32)");
    unusedWith("--narrow-range", intGrid, "it is for integer formats");
    // TWN's and XNOR-Net's scale is each tensor's own (paperScales): one scale for the whole model is
    // not theirs, and --granularity global ran as tensor without a word (tester 24)
    unusedWith("--granularity", !(isTernaryOrBinary(findFormat(pc.format)) && parseGranularity(pc.granularity).kind == GranularityKind::Global),
               "ternary and binary weights take TWN's and XNOR-Net's scale per tensor, so global runs as tensor");
    unusedWith("--first-last-8bit", intGrid, "it keeps the first and last layers at int8 under an integer --format");
    unusedWith("--quantizer", pc.quantizer != "lsq" || intGrid, "LSQ learns the step of an integer grid; float and MX formats have none");
    unusedWith("--lsq-plus", intGrid, "LSQ learns the step of an integer grid; float and MX formats have none");
    // LSQ+'s offset is the zero point of an affine activation grid (uint8 ...); a symmetric one has none (tester 24)
    bool affineActivations = !findFormat(pc.activationFormat).symmetric;
    for (const LayerOverride& o : pc.layers) affineActivations = affineActivations || (o.activationFormat && !findFormat(*o.activationFormat).symmetric);
    unusedWith("--lsq-plus", affineActivations, "LSQ+ learns the offset of affine activations (such as uint8); this --act-format is symmetric");
    if (pc.strategy == Strategy::Ptq) {
        const FormatKind kind = findFormat(pc.format).kind;
        unusedWith("--rounding", pc.rounding != "stochastic", "ptq rounds its weights to nearest, or learns the rounding with adaround");
        unusedWith("--rounding", pc.rounding != "adaround" || kind == FormatKind::Int,
                   "AdaRound learns the rounding of an integer grid, and this --format is not one");
        // Binary layers keep their sign rounding (applyAdaRound): the whole model binary ignores it.
        bool anyBinary = findFormat(pc.format).signOnly, allBinary = anyBinary && !pc.firstLast8Bit;
        for (const LayerOverride& o : pc.layers)
            if (o.format && *o.format != "fp32") {
                const bool b = findFormat(*o.format).signOnly;
                anyBinary = anyBinary || b;
                allBinary = allBinary && b;
            }
        if (pc.rounding == "adaround" && kind == FormatKind::Int && anyBinary) {
            if (allBinary)
                unusedWith("--rounding", false, "AdaRound chooses between adjacent levels of a grid that holds 0, and binary has none");
            else
                std::fprintf(stderr, "quantscope-cli train: note: --rounding adaround leaves the binary layers with their sign "
                                     "rounding (AdaRound chooses between adjacent levels of a grid that holds 0)\n");
        }
    }
    if (const std::string w = pc.stallWarning(); !w.empty()) // the lesson of stochastic rounding, said up front
        std::fprintf(stderr, "quantscope-cli train: note: %s (--rounding stochastic)\n", w.c_str());

    DatasetOptions dopt = datasetOptions(args);
    dopt.trainLimit = args.u64("--train-limit", 0, 1);
    dopt.testLimit = args.u64("--test-limit", 0, 1);
    dopt.validation = args.u64("--validation", 0);
    // The --train-limit N images first, the --validation images held out of those N, as analyze
    // and the GUI's dataset dock draw them: the same images train in both (tester 19: the dock's
    // Validation field claimed to be train's and trained on 1,500 of 2,000 images where train took
    // 2,000 beside 500 others). With --epochs 0 the calibration images are then the ones analyze
    // search measured a plan with, so its --plan-out reproduces (tester 7).
    dopt.validationAfterLimit = true;
    dopt.seed = cfg.seed;
    if (file) dopt.imageChannels = file->channels; // a model file's channels, as eval reads an image folder
    if (dopt.resize.given()) checkModelTakesResize(cfg, file ? std::optional<std::size_t>(file->classes) : std::nullopt, dopt);
    Dataset data = Dataset::load(dopt);
    for (const std::string& f : unusedDatasetFlags(args, data, "train", false)) ignored.push_back(f);
    // Values past what the data or the run have: said, not clamped in silence.
    const bool say = !args.has("--json");
    if (say && pc.strategy == Strategy::Ptq && args.has("--calib-images") && pc.calibImages > data.train.size())
        std::fprintf(stderr, "quantscope-cli train: note: calibrating on all %zu training images, fewer than --calib-images %zu\n",
                     data.train.size(), pc.calibImages);
    if (file && readsDifferentlyFor(*file, data.height(), data.width(), data.numClasses())) {
        // Read again at the size the run uses, or for its classes (its notes say so), with this command's notes.
        ExportedModel again = readModelFile(cfg.modelFile, data.height(), data.width(), data.numClasses());
        if (!initPath.empty()) again.notes.clear(); // --init: how the file was read is not news
        again.notes.insert(again.notes.end(), file->notes.begin() + static_cast<std::ptrdiff_t>(importNotes), file->notes.end());
        file = std::move(again);
    }
    if (args.has("--normalize")) {
        data.normalization = Normalization::parse(args.str("--normalize", "")).broadcast(data.channels());
        noteExtremeNormalization(data.normalization, "train", args.has("--json"));
    }
    // --bn-reestimate and --bn-freeze-epoch on a model with no BatchNorm do nothing (testers 10 and
    // 16: accepted without a word, or --bn-reestimate named only after a note on its batches).
    // LSQ on a BatchNorm model without re-estimation: the running statistics drift from the quantized
    // network, which lost resnet8 W4A8 31 points with the defaults (tester 17: 44 % against
    // observer QAT's 75 %, 83 % with --bn-reestimate 50): said up front, not left to be found.
    const bool lsqUnestimated = pc.quantizer == "lsq" && !args.has("--bn-reestimate");
    if ((args.has("--bn-reestimate") || args.has("--bn-freeze-epoch") || lsqUnestimated) && pc.strategy == Strategy::Qat) {
        bool hasBatchNorm = false;
        if (file) {
            for (const StoredLayer& l : file->layers) hasBatchNorm = hasBatchNorm || l.kind == LayerKind::BatchNorm2d;
        } else {
            const std::unique_ptr<Model> preset = makeModel(cfg.model, data.channels(), data.height(), data.width(), data.numClasses(), cfg.seed);
            for (std::size_t i = 0; i < preset->size(); ++i) hasBatchNorm = hasBatchNorm || preset->layer(i).kind() == LayerKind::BatchNorm2d;
        }
        unusedWith("--bn-reestimate", hasBatchNorm, ("the model (" + cfg.model + ") has no BatchNorm layer to re-estimate").c_str());
        unusedWith("--bn-freeze-epoch", hasBatchNorm, ("the model (" + cfg.model + ") has no BatchNorm layer to freeze").c_str());
        if (const std::string w = pc.batchNormDriftWarning(hasBatchNorm); say && lsqUnestimated && !w.empty())
            std::fprintf(stderr, "quantscope-cli train: note: %s: give --bn-reestimate 100\n", w.c_str());
    }
    const auto ignoredFlag = [&](const char* flag) { return std::find(ignored.begin(), ignored.end(), flag) != ignored.end(); };
    if (say && pc.strategy == Strategy::Qat && pc.bnFreezeEpoch > cfg.epochs && !ignoredFlag("--bn-freeze-epoch"))
        std::fprintf(stderr, "quantscope-cli train: note: --bn-freeze-epoch %zu is after the last epoch (%zu): BatchNorm is never frozen\n",
                     pc.bnFreezeEpoch, cfg.epochs);
    if (say && pc.strategy == Strategy::Qat && pc.bnReestimateBatches > 0 && !ignoredFlag("--bn-reestimate")) {
        const std::size_t batches = (data.train.size() + cfg.batchSize - 1) / cfg.batchSize;
        if (pc.bnReestimateBatches > batches)
            std::fprintf(stderr, "quantscope-cli train: note: --bn-reestimate %zu: the training set has %zu batches, all of them are used\n",
                         pc.bnReestimateBatches, batches);
    }
    nlohmann::json startExtra = nlohmann::json::object(); // what was read, for the JSON start event
    if (!reinitFolded.empty()) {
        startExtra["model_notes"] = nlohmann::json::array({reinitFolded});
        if (say) std::fprintf(stderr, "quantscope-cli train: warning: %s: %s\n", cfg.modelFile.c_str(), reinitFolded.c_str());
    }
    if (cfg.pretrained && file) {
        startExtra["model_notes"] = file->notes;
        if (say)
            for (const std::string& n : file->notes) std::fprintf(stderr, "quantscope-cli train: note: %s: %s\n", cfg.modelFile.c_str(), n.c_str());
        // The file's weights were trained on inputs normalised its way: keep it (as eval does).
        const std::size_t nc = file->normalization.mean.size();
        const bool fits = nc == 1 || nc == data.channels();
        const std::optional<Normalization> given = args.has("--normalize") ? std::optional(data.normalization) : std::nullopt;
        const InputNormalization stored =
            fits ? resolveInputNormalization(*file, cfg.modelFile, given, data.channels()) : InputNormalization{};
        if (stored.kind == InputNormalization::Kind::Conflict) // another one would feed the kept weights inputs they were not trained on
            throw UsageError(stored.note + "; its weights were trained on the stored one (" +
                             (initPath.empty() ? "--reinit trains the architecture afresh with yours)" : "without --init, " + modelSpec + " trains afresh with yours)"));
        // Its classes against the data's: a reordered or renamed class folder shifts every label.
        const ClassMatch classes = matchClasses(file->classNames, data.classNames);
        if (say && classes.kind == ClassMatch::Kind::Reordered)
            std::fprintf(stderr, "quantscope-cli train: warning: %s was trained on the same classes in another order; its outputs "
                                 "follow the file's order and the data's labels do not, so its accuracy before fine-tuning is wrong "
                                 "(order the class folders as the file does)\n", cfg.modelFile.c_str());
        else if (say && classes.kind == ClassMatch::Kind::Different)
            std::fprintf(stderr, "quantscope-cli train: warning: %s was trained on other classes than the data's; labels are taken "
                                 "by index\n", cfg.modelFile.c_str());
        if (stored.kind == InputNormalization::Kind::Composed) {
            data.normalization = stored.value;
            if (say) std::fprintf(stderr, "quantscope-cli train: note: %s\n", stored.note.c_str());
        } else if (!args.has("--normalize") && stored.kind == InputNormalization::Kind::Stored) {
            data.normalization = stored.value;
            if (say)
                std::fprintf(stderr, "quantscope-cli train: input normalisation %s, stored in %s (its weights were trained on it)\n",
                             data.normalization.describe().c_str(), cfg.modelFile.c_str());
        } else if (!args.has("--normalize") && !file->normalizationKnown && !pc.planNormalization.empty()) {
            // A plan from analyze search on this model: its accuracies were measured on inputs
            // normalised so (tester 18 #9).
            try {
                data.normalization = Normalization::parse(pc.planNormalization).broadcast(data.channels());
            } catch (const ConfigError& e) {
                throw ConfigError("plan " + pc.planSource + ": \"normalize\" does not fit the data: " + e.what());
            }
            if (say)
                std::fprintf(stderr, "quantscope-cli train: input normalisation %s, from the plan %s (the one it was measured with; "
                                     "--normalize overrides it)\n",
                             data.normalization.describe().c_str(), pc.planSource.c_str());
        } else if (!args.has("--normalize") && !file->normalizationKnown && say) {
            std::fprintf(stderr,
                         "quantscope-cli train: %s does not say how its input was normalised: using the train set's "
                         "statistics, %s (give --normalize none if the model takes [0, 1] pixels as they are)\n",
                         cfg.modelFile.c_str(), data.normalization.describe().c_str());
        }
        if (say && !pc.planNormalization.empty()) { // the stored one or --normalize won over the plan's
            Normalization planned;
            try {
                planned = Normalization::parse(pc.planNormalization).broadcast(data.channels());
            } catch (const ConfigError&) {
                planned = Normalization{};
            }
            if (!(planned.channels() == data.channels() && planned.sameAs(data.normalization)))
                std::fprintf(stderr, "quantscope-cli train: note: the plan %s was measured on inputs normalised '%s'; this run "
                                     "normalises %s, so its accuracies may differ from the search's\n",
                             pc.planSource.c_str(), pc.planNormalization.c_str(), data.normalization.describe().c_str());
        }
    }

    const bool json = args.has("--json");
    const bool progress = !args.has("--quiet") && ::isatty(STDERR_FILENO);
    const Strategy st = cfg.precision.strategy;
    nlohmann::json planJson;
    if (st == Strategy::Ptq || st == Strategy::Qat || (st == Strategy::Progressive && !cfg.precision.layers.empty()))
        planJson = nlohmann::json::parse(planToJson(cfg.precision.plan()));
    // How the run is set up, so a JSON log tells PTQ from QAT from LSQ (the start event had none of it).
    startExtra["strategy"] = strategyInfo(cfg.precision.strategy).name;
    startExtra["format"] = cfg.precision.format;
    startExtra["granularity"] = cfg.precision.granularity;
    startExtra["act_format"] = cfg.precision.activationFormat;
    // which calibration ran, the default depending on whether the model starts trained (defaultActivationCalibration)
    if (strategyInfo(cfg.precision.strategy).uses("calibration")) startExtra["act_calibration"] = cfg.precision.activationCalibration;
    startExtra["quantizer"] = cfg.precision.quantizer;
    // The rounding the run uses: an ignored --rounding (ptq's stochastic) is not reported as used (tester 13).
    startExtra["rounding"] = std::find(ignored.begin(), ignored.end(), "--rounding") != ignored.end() ? std::string("nearest")
                                                                                                    : cfg.precision.rounding;
    startExtra["seed"] = cfg.seed;
    startExtra["batch_size"] = cfg.batchSize;
    if (cfg.precision.strategy == Strategy::Progressive) startExtra["schedule"] = cfg.precision.schedule;
    startExtra["normalization"] = data.normalization.describe();
    startExtra["data"] = data.dir;
    startExtra["test_split"] = data.split;
    startExtra["data_notes"] = data.notes;
    const std::unique_ptr<TrainObserver> obs = makeCliObserver(json, progress, std::move(planJson), ignored, std::move(startExtra));
    Trainer trainer(cfg, data, obs.get(), &g_stop); // a stop signal during loading stops it at its first batch
    // What only the built model shows (a BatchNorm reading a layer kept FP32), before any training.
    if (!exportPaths.empty())
        if (const QuantSim* sim = trainer.strategy().quantSim()) checkExportableModel(trainer.model(), *sim);
    // The names a .qsm stores (a class name of classes.txt past its limit), before the training they would waste.
    for (const std::string& p : exportPaths)
        if (exportFormatFor(p) == ExportFormat::Qsm) {
            std::vector<std::string> layerNames;
            for (std::size_t i = 0; i < trainer.model().size(); ++i) layerNames.push_back(trainer.model().layer(i).name());
            checkQsmNames(p, cfg.model, data.classNames, layerNames);
        }
    if (!json && args.has("--format") && !cfg.precision.layers.empty()) {
        // A plan that gives every layer its own format leaves --format nothing to set.
        bool everyLayer = true;
        for (const std::string& name : planLayerNames(trainer.model()))
            everyLayer = everyLayer && std::any_of(cfg.precision.layers.begin(), cfg.precision.layers.end(),
                                                   [&](const LayerOverride& o) { return o.layer == name && o.format; });
        if (everyLayer)
            std::fprintf(stderr, "quantscope-cli train: note: --format %s changes no layer: the plan gives every layer a format of its own\n",
                         cfg.precision.format.c_str());
    }
    if (!json && !args.has("--quiet")) // what was read, once the model is built (JSON: the start event)
        std::printf("data: %s (%s), %zu training and %zu test images of %zux%zux%zu, %zu classes%s\n", data.name.c_str(),
                    layoutName(data.layout), data.train.size(), data.test.size(), data.channels(), data.height(), data.width(),
                    data.numClasses(), data.split.empty() ? "" : ("; test set: " + data.split).c_str());
    if (!json)
        for (const std::string& n : data.notes) std::fprintf(stderr, "quantscope-cli train: note: %s\n", n.c_str());
    const FinishEvent fin = trainer.run();
    if (const PtqRefiner* r = trainer.strategy().refiner()) printRefineReport(*r, json);
    if (fin.stopped) { // said, not left to be noticed: by what, and the --export not written
        if (json && !exportPaths.empty()) {
            printJsonLine(nlohmann::json{{"event", "export_skipped"}, {"paths", exportPaths}, {"reason", "stopped before the end of training"}});
            std::fflush(stdout);
        } else if (!json) {
            std::fprintf(stderr, "quantscope-cli train: stopped (%s)%s\n", StopSignalScope::cause(),
                         exportPaths.empty() ? "" : (": --export not written (" + std::to_string(exportPaths.size()) + " file(s))").c_str());
        }
    }
    // A file that fails (its read-back, a full disk) does not cost the others: each is tried, each
    // failure is reported as it happens, and the first failure's exit code is the command's.
    int exportCode = kExitOk;
    for (const std::string& p : exportPaths) {
        if (fin.stopped) break;
        ExportSummary s;
        try {
            s = exportModel(trainer, p);
        } catch (...) {
            const int code = reportCurrentError("train", json);
            if (exportCode == kExitOk) exportCode = code;
            continue;
        }
        // ONNX exports name their input and output "input" and "logits", whatever the imported graph called them
        if (s.format == ExportFormat::Onnx && file && !file->onnxInputName.empty() &&
            (file->onnxInputName != "input" || file->onnxOutputName != "logits"))
            s.note += "; its input is 'input' (pixels in [0, 1], normalised inside the graph) and its output 'logits', where " +
                      cfg.modelFile + " had '" + file->onnxInputName + "' and '" + file->onnxOutputName + "'";
        printExportSummary(s, json);
    }
    return fin.stopped ? StopSignalScope::exitCode() : exportCode;
}

} // namespace quantscope::cli
