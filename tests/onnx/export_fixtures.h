// Shared by tst_qsm, tst_infer, tst_onnx_export and tst_onnx_graphs: small synthetic datasets,
// models quantized by the real QuantSim (weights, calibrated activations), and a QAT run on
// Fashion-MNIST when present.
#pragma once

#include "data/dataset.h"
#include "io/exported_model.h"
#include "analysis/model_export.h"
#include "nn/activations.h"
#include "nn/linear.h"
#include "nn/model_zoo.h"
#include "quant/format.h"
#include "train/quant_sim.h"
#include "train/trainer.h"
#include "util/rng.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

namespace fixtures {

using namespace quantscope;

// Images of smooth random blobs (so convolutions see structure), labels from the brightest quadrant.
inline LabeledImages blobImages(std::size_t n, std::size_t h, std::size_t w, std::uint64_t seed)
{
    LabeledImages s;
    s.height = h;
    s.width = w;
    s.pixels.resize(n * h * w);
    s.labels.resize(n);
    Rng rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
        const float cy = rng.uniform(0.0f, static_cast<float>(h)), cx = rng.uniform(0.0f, static_cast<float>(w));
        const float r = rng.uniform(2.0f, static_cast<float>(h) / 2.0f);
        for (std::size_t y = 0; y < h; ++y)
            for (std::size_t x = 0; x < w; ++x) {
                const float d = ((static_cast<float>(y) - cy) * (static_cast<float>(y) - cy) + (static_cast<float>(x) - cx) * (static_cast<float>(x) - cx)) / (r * r);
                const float v = 255.0f * std::exp(-d) + rng.uniform(0.0f, 30.0f);
                s.pixels[i * h * w + y * w + x] = static_cast<std::uint8_t>(std::min(255.0f, v));
            }
        s.labels[i] = static_cast<std::int32_t>((cy < static_cast<float>(h) / 2 ? 0 : 2) + (cx < static_cast<float>(w) / 2 ? 0 : 1)) % 10;
    }
    return s;
}

// The blob images in colour: channel c holds the blob dimmed to (c + 2) / (C + 1) over a
// channel-specific floor, so each channel has its own mean and spread.
inline LabeledImages colourImages(const LabeledImages& grey, std::size_t channels)
{
    LabeledImages s = grey;
    s.channels = channels;
    const std::size_t plane = grey.height * grey.width;
    s.pixels.resize(grey.size() * channels * plane);
    for (std::size_t i = 0; i < grey.size(); ++i)
        for (std::size_t c = 0; c < channels; ++c)
            for (std::size_t j = 0; j < plane; ++j) {
                const float v = static_cast<float>(grey.pixels[i * plane + j]) * static_cast<float>(c + 2) / static_cast<float>(channels + 1);
                s.pixels[(i * channels + c) * plane + j] = static_cast<std::uint8_t>(std::min(255.0f, 20.0f * static_cast<float>(c) + v));
            }
    return s;
}

inline Dataset syntheticDataset(std::size_t nTrain, std::size_t nTest, std::size_t h = 28, std::size_t w = 28, std::uint64_t seed = 7,
                                std::size_t channels = 1)
{
    Dataset d;
    d.name = "synthetic";
    d.train = blobImages(nTrain, h, w, seed);
    d.test = blobImages(nTest, h, w, seed + 1);
    if (channels != 1) {
        d.train = colourImages(d.train, channels);
        d.test = colourImages(d.test, channels);
    }
    d.normalization = pixelStatistics(d.train);
    for (int c = 0; c < 10; ++c) d.classNames.push_back("class " + std::to_string(c));
    return d;
}

struct Quantized {
    std::unique_ptr<Model> model;
    std::unique_ptr<QuantSim> sim;
    ExportedModel exported;
};

// `model` quantized by QuantSim with `format` weights, `granularity`, `act` activations,
// activations calibrated on the train set (PTQ, no training).
inline Quantized quantize(std::unique_ptr<Model> model, const Dataset& data, const std::string& format,
                          const std::string& granularity = "channel", const std::string& act = "uint8")
{
    Quantized q;
    q.model = std::move(model);
    PrecisionConfig pc;
    pc.strategy = Strategy::Ptq;
    pc.format = format;
    pc.granularity = granularity;
    pc.activationFormat = act;
    pc.activationCalibration = "minmax";
    q.sim = std::make_unique<QuantSim>(*q.model, pc, findFormat(format));
    q.sim->quantizeWeights(Rounding::Nearest, 0);
    q.sim->calibrate(data, data.train, data.train.size(), 64);
    q.sim->setObserving(false);
    q.exported = exportQuantizedModel(*q.model, *q.sim, q.model->name(), data, "ptq", granularity);
    return q;
}

inline Quantized quantizePreset(const std::string& preset, const Dataset& data, const std::string& format,
                                const std::string& granularity = "channel", const std::string& act = "uint8")
{
    return quantize(makeModel(preset, data.channels(), data.height(), data.width(), 10, 3), data, format, granularity, act);
}

// A very small model (4x4 input, flatten, fc 16->6, relu, fc 6->10, log-softmax): its .qsm file
// is a few hundred bytes, so corruption tests can try every byte.
inline std::unique_ptr<Model> tinyModel()
{
    auto m = std::make_unique<Model>("tiny", Shape{1, 4, 4});
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 16, 6));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<Linear>("fc2", 6, 10));
    m->add(std::make_unique<LogSoftmax>("log_softmax"));
    m->initParams(5);
    return m;
}

// PyTorch's nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10,
// bias=False)) on 28x28 images: a head without a bias, as imported MLPs often end. fc2 is its
// only bias-free layer; 784 * 32 + 32 + 32 * 10 = 25,440 parameters.
inline std::unique_ptr<Model> biasFreeMlp(std::uint64_t seed = 4)
{
    auto m = std::make_unique<Model>("bias-free-mlp", Shape{1, 28, 28});
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Linear>("fc1", 784, 32));
    m->add(std::make_unique<ReLU>("relu1"));
    m->add(std::make_unique<Linear>("fc2", 32, 10, false));
    m->initParams(seed);
    return m;
}
inline constexpr std::size_t kBiasFreeMlpParams = 784 * 32 + 32 + 32 * 10;

// The stored layer named `name` (nullptr when there is none).
inline const StoredLayer* storedLayer(const ExportedModel& m, const std::string& name)
{
    for (const StoredLayer& l : m.layers)
        if (l.name == name) return &l;
    return nullptr;
}

inline std::string tempDir(const std::string& name)
{
    const std::filesystem::path p = std::filesystem::temp_directory_path() / ("quantscope-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p.string();
}

// The blob images with a 300-image validation set, and lenet5 trained 3 epochs on them (FP32), so
// that accuracy means something to the analyses (sensitivity, mixed-bit search). The Trainer
// reads `data`, so keep it alive as long as the returned Trainer.
inline Dataset blobsWithValidation()
{
    Dataset d = syntheticDataset(400, 10);
    d.validation = blobImages(300, 28, 28, 99);
    return d;
}
inline std::unique_ptr<Trainer> trainedLenet5(const Dataset& data)
{
    TrainConfig cfg;
    cfg.model = "lenet5";
    cfg.epochs = 3;
    auto t = std::make_unique<Trainer>(cfg, data);
    t->run();
    return t;
}

// Predicted class of each row of k outputs (images x classes, row-major): the first maximum.
inline std::vector<std::int32_t> argmaxOf(const std::vector<float>& v, std::size_t k)
{
    std::vector<std::int32_t> p;
    for (std::size_t i = 0; i + k <= v.size(); i += k)
        p.push_back(static_cast<std::int32_t>(std::max_element(v.begin() + static_cast<std::ptrdiff_t>(i),
                                                                v.begin() + static_cast<std::ptrdiff_t>(i + k)) -
                                               (v.begin() + static_cast<std::ptrdiff_t>(i))));
    return p;
}

// Share of positions where two prediction lists agree, in [0, 1] (0 for empty lists).
inline double agreement(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b)
{
    std::size_t same = 0;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) same += a[i] == b[i];
    return a.empty() ? 0.0 : static_cast<double>(same) / static_cast<double>(a.size());
}

// Fashion-MNIST when installed (else empty): tests that need real data skip without it.
inline bool haveFashion() { return std::filesystem::exists(std::string(kDefaultDataDir) + "/t10k-images-idx3-ubyte.gz"); }

// QS_FULL_DATA=1 turns the short runs into the measurement: all 60k training images, 2 epochs.
inline bool fullData() { return std::getenv("QS_FULL_DATA") && std::string(std::getenv("QS_FULL_DATA")) == "1"; }

// A short QAT run (int8, channel-wise) on a subset of Fashion-MNIST, evaluated on the full test set.
inline std::unique_ptr<Trainer> shortQat(const Dataset& data, const std::string& model = "seed-cnn",
                                         const std::string& granularity = "channel", const std::string& act = "uint8",
                                         std::size_t epochs = 1)
{
    TrainConfig cfg;
    cfg.model = model;
    cfg.epochs = epochs;
    cfg.threads = 2;
    cfg.precision.strategy = Strategy::Qat;
    cfg.precision.format = "int8";
    cfg.precision.granularity = granularity;
    cfg.precision.activationFormat = act;
    auto t = std::make_unique<Trainer>(cfg, data);
    t->run();
    return t;
}

} // namespace fixtures
