// ModelRunner: runs any ExportedModel on raw images. Integer models the IntEngine supports run
// on it; FP32 models run as the float Model; integer models the engine cannot run (group-wise or
// unsigned weights, wider formats, a missing quantization point) run as the fake-quant reference
// (dequantized weights, activations fake-quantized at the stored points) and say why in
// description().
#pragma once

#include "data/dataset.h"
#include "infer/int_engine.h"
#include "io/exported_model.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quantscope {

enum class RunnerKind { Auto, Integer, Reference };

struct RunnerOptions {
    RunnerKind kind = RunnerKind::Auto;
    Isa isa = bestIsa();
    std::size_t threads = 2;
};

class ModelRunner {
public:
    // Throws ConfigError when kind is Integer and the engine cannot run the model (with the reason).
    explicit ModelRunner(const ExportedModel& m, const RunnerOptions& opt = {});
    ~ModelRunner();

    // "integer engine (avx512-vnni)", "fp32 float model", "fake-quant reference: <why not integer>".
    const std::string& description() const { return m_description; }
    bool isInteger() const { return m_engine != nullptr; }
    std::size_t classes() const { return m_classes; }

    // n images of raw bytes (C planes of H x W): predictions (n) and, when non-null, outputs (n x classes).
    void predict(const std::uint8_t* pixels, std::size_t n, std::int32_t* predictions, float* outputs = nullptr);
    // Images whose outputs held inf or NaN, over every predict() call so far (the float paths: a
    // model whose values overflow float32; the integer engine's outputs are always finite).
    std::size_t nonFiniteImages() const { return m_nonFinite; }
    // Throws NumericError when some of the `images` images predicted so far gave non-finite
    // outputs (their argmax, and so any accuracy, means nothing), naming `what` and the count.
    void requireFiniteOutputs(const std::string& what, std::size_t images) const;

private:
    std::unique_ptr<IntEngine> m_engine;
    std::unique_ptr<Model> m_model;
    std::unique_ptr<StoredActivationHooks> m_hooks;
    std::string m_description;
    std::size_t m_classes = 0, m_threads = 2, m_imageBytes = 0, m_nonFinite = 0;
    std::vector<float> m_lut; // normalised value of byte v in channel c, at c * 256 + v
    Tensor m_x;
};

struct RunnerEval {
    double accuracy = 0.0;
    std::size_t count = 0;
    std::vector<std::int32_t> predictions;
};

// Predicts every image of `set` in batches of `batch` and scores them against its labels. Throws
// NumericError (prefixed by `what`, e.g. the model file) when some outputs are inf or NaN.
RunnerEval evaluateRunner(ModelRunner& runner, const LabeledImages& set, std::size_t batch = 256,
                          const std::string& what = "evaluation");

// Images per second over `set` in batches of `batch`: one warm-up batch, then the best of `passes`
// full passes (the protocol of the PyTorch reference's bench_inference).
double benchmarkRunner(ModelRunner& runner, const LabeledImages& set, std::size_t batch = 256, std::size_t passes = 3);

} // namespace quantscope
