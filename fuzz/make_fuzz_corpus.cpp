// Writes seed corpora for the fuzz targets: OUT/qsm/*.qsm (tiny FP32, int8, int4 group-wise and
// int2 models, and a residual/depthwise graph in FP32 and int8), OUT/onnx_qdq/*.onnx (the same
// models as QuantScope's ONNX exports, where ONNX holds them, and an int8 graph whose first layer a
// plan keeps FP32) and OUT/idx/* (small IDX files).
#include "data/idx.h"
#include "analysis/model_export.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/activations.h"
#include "nn/add.h"
#include "nn/avgpool2d.h"
#include "nn/batchnorm2d.h"
#include "nn/channel_max.h"
#include "nn/layernorm2d.h"
#include "nn/mul.h"
#include "nn/pointwise.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "quant/format.h"
#include "train/quant_sim.h"
#include "util/errors.h"
#include "util/rng.h"

#include <cstdio>
#include <filesystem>
#include <memory>

using namespace quantscope;

namespace {

std::unique_ptr<Model> tiny(bool conv)
{
    auto m = std::make_unique<Model>("tiny", Shape{1, 6, 6});
    if (conv) {
        m->add(std::make_unique<Conv2d>("conv1", 1, 4, 3, 1, 1));
        m->add(std::make_unique<ReLU>("relu1"));
        m->add(std::make_unique<MaxPool2d>("pool", 2));
    }
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", conv ? 36 : 36, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(3);
    return m;
}

// A residual join and a depthwise-separable block: the version-2 paths of the format (input
// lists, groups, Add, ReLU6, global average pooling).
std::unique_ptr<Model> tinyGraph()
{
    auto m = std::make_unique<Model>("tiny-graph", Shape{1, 6, 6});
    const std::size_t stem = m->add(std::make_unique<Conv2d>("conv1", 1, 4, 3, 1, 1, 1, false));
    m->add(std::make_unique<BatchNorm2d>("bn1", 4));
    const std::size_t r = m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<Conv2d>("dw", 4, 4, 3, 1, 1, 4, false), {r});
    m->add(std::make_unique<BatchNorm2d>("bn2", 4));
    const std::size_t b = m->add(std::make_unique<ReLU6>("relu2"));
    m->add(std::make_unique<Add>("add"), {b, r});
    m->add(std::make_unique<ReLU>("relu3"));
    m->add(std::make_unique<GlobalAvgPool2d>("pool"));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc", 4, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    (void)stem;
    m->initParams(5);
    return m;
}

// Pooling windows that are not square (version 6 of the format: a pool's flags byte and window
// fields): a ceil_mode max pool of a 3x2 window over uneven padding, an average pool of a 1x2
// window that does not count its padding.
std::unique_ptr<Model> tinyPools()
{
    auto m = std::make_unique<Model>("tiny-pools", Shape{1, 6, 6});
    m->add(std::make_unique<Conv2d>("conv1", 1, 4, 3, 1, 1));
    m->add(std::make_unique<ReLU>("relu1"));
    PoolGeometry mg;
    mg.kh = 3, mg.kw = 2, mg.sh = 2, mg.sw = 1, mg.padTop = 1, mg.padBottom = 1, mg.ceilMode = true;
    auto maxPool = std::make_unique<MaxPool2d>("maxpool", mg);
    const Shape afterMax = maxPool->outputShape({1, 4, 6, 6});
    m->add(std::move(maxPool));
    PoolGeometry ag;
    ag.kh = 1, ag.kw = 2, ag.sw = 2, ag.padLeft = 1, ag.countIncludePad = false;
    auto avgPool = std::make_unique<AvgPool2d>("avgpool", ag);
    const Shape afterAvg = avgPool->outputShape(afterMax);
    m->add(std::move(avgPool));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", afterAvg[1] * afterAvg[2] * afterAvg[3], 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(7);
    return m;
}

// A ConvNeXt-style LayerNorm2d (with and without affine parameters) and a CBAM-style spatial gate
// (ChannelMax, a 1x1 Conv spreading it to the channels, Sigmoid, Mul): kinds 35 and 36.
std::unique_ptr<Model> tinyNorms()
{
    auto m = std::make_unique<Model>("tiny-norms", Shape{1, 6, 6});
    m->add(std::make_unique<Conv2d>("conv1", 1, 4, 3, 1, 1));
    m->add(std::make_unique<LayerNorm2d>("ln1", 4));
    const std::size_t maps = m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<ChannelMax>("cmax"));
    m->add(std::make_unique<Conv2d>("spread", 1, 4, 1, 1, 0));
    const std::size_t gate = m->add(std::make_unique<Pointwise>("gate", LayerKind::Sigmoid));
    m->add(std::make_unique<Mul>("gated"), {maps, gate});
    m->add(std::make_unique<LayerNorm2d>("ln2", 4, 1e-5f, false));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 4 * 36, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(9);
    return m;
}

Dataset data()
{
    Dataset d;
    Rng rng(1);
    for (LabeledImages* s : {&d.train, &d.test}) {
        s->height = s->width = 6;
        for (int i = 0; i < 32; ++i) {
            for (int j = 0; j < 36; ++j) s->pixels.push_back(static_cast<std::uint8_t>(rng.below(256)));
            s->labels.push_back(i % 10);
        }
    }
    d.normalization = Normalization::uniform(0.5f, 0.3f, 1);
    for (int c = 0; c < 10; ++c) d.classNames.push_back(std::to_string(c));
    return d;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_fuzz_corpus OUT_DIR\n");
        return 2;
    }
    const std::filesystem::path out = argv[1];
    std::filesystem::create_directories(out / "qsm");
    std::filesystem::create_directories(out / "onnx_qdq");
    int onnxSeeds = 0;
    // The .qsm seed, and its ONNX export beside it where opset-13 QDQ can hold it.
    const auto writeBoth = [&](const std::string& file, const ExportedModel& m) {
        writeQsm((out / "qsm" / file).string(), m);
        try {
            writeOnnx((out / "onnx_qdq" / (std::filesystem::path(file).stem().string() + ".onnx")).string(), m);
            ++onnxSeeds;
        } catch (const ConfigError&) { // group-wise scales
        }
    };
    std::filesystem::create_directories(out / "idx");
    const Dataset d = data();
    writeBoth("fp32.qsm", exportFloatModel(*tiny(true), "tiny", d.normalization, d.classNames));
    writeBoth("graph-fp32.qsm", exportFloatModel(*tinyGraph(), "tiny-graph", d.normalization, d.classNames));
    // A model PTQ-calibrated to int8 channel-wise on the corpus data, written as FILE.
    // With keepFp32, a plan keeps that layer FP32 (its ONNX form: a float Conv behind a per-axis DequantizeLinear).
    const auto writeInt8 = [&](std::unique_ptr<Model> model, const std::string& name, const std::string& file,
                               const std::string& keepFp32 = "") {
        PrecisionConfig pc;
        if (!keepFp32.empty()) {
            LayerOverride o;
            o.layer = keepFp32;
            o.format = "fp32";
            pc.layers.push_back(o);
        }
        QuantSim sim(*model, pc, findFormat("int8"));
        sim.quantizeWeights(Rounding::Nearest, 0);
        sim.calibrate(d, d.train, 32, 16);
        sim.setObserving(false);
        writeBoth(file, exportQuantizedModel(*model, sim, name, d, "ptq", "channel"));
    };
    writeInt8(tinyGraph(), "tiny-graph", "graph-int8.qsm");
    writeInt8(tinyGraph(), "tiny-graph", "graph-int8-conv1-fp32.qsm", "conv1");
    writeBoth("pools-fp32.qsm", exportFloatModel(*tinyPools(), "tiny-pools", d.normalization, d.classNames));
    writeInt8(tinyPools(), "tiny-pools", "pools-int8.qsm");
    writeBoth("norms-fp32.qsm", exportFloatModel(*tinyNorms(), "tiny-norms", d.normalization, d.classNames));
    writeInt8(tinyNorms(), "tiny-norms", "norms-int8.qsm");
    int n = 0;
    for (const auto& [fmt, gran] : {std::pair{"int8", "channel"}, {"int4", "group:8"}, {"int2", "tensor"}, {"int8", "layer"}}) {
        for (bool conv : {true, false}) {
            auto model = tiny(conv);
            PrecisionConfig pc;
            pc.format = fmt;
            pc.granularity = gran;
            QuantSim sim(*model, pc, findFormat(fmt));
            sim.quantizeWeights(Rounding::Nearest, 0);
            sim.calibrate(d, d.train, 32, 16);
            sim.setObserving(false);
            writeBoth("int" + std::to_string(n++) + ".qsm", exportQuantizedModel(*model, sim, "tiny", d, "ptq", gran));
        }
    }
    writeIdx((out / "idx" / "images-idx3-ubyte").string(), {3, 4, 5}, std::vector<std::uint8_t>(60, 9));
    writeIdx((out / "idx" / "images-idx3-ubyte.gz").string(), {2, 3, 3}, std::vector<std::uint8_t>(18, 200));
    writeIdx((out / "idx" / "labels-idx1-ubyte").string(), {7}, {0, 1, 2, 3, 4, 5, 6});
    writeIdx((out / "idx" / "labels-idx1-ubyte.gz").string(), {4}, {9, 8, 7, 6});
    std::printf("seed corpora written to %s/qsm, %s/onnx_qdq (%d files) and %s/idx\n", argv[1], argv[1], onnxSeeds, argv[1]);
    return 0;
}
