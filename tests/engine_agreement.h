// The checks every test of an integer-engine operator makes (tst_activations, tst_prelu,
// tst_mul_concat, tst_conv_geometry), in one place:
// - a traced point's integers against the float layer run on the engine's own input integers and
//   fake-quantized (dequantized, compareCodes);
// - the integer engine's predictions against the fake-quant reference runner's (engineAgainstReference);
// - onnxruntime on the QDQ export against the engine (ortAgainstEngine);
// - onnxruntime on the FP32 export against QuantScope's float runner (ortFp32Deviation).
// The functions return figures; each test asserts its own bounds on them.
#pragma once

#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/exported_model.h"
#include "tensor/tensor.h"

#include "onnx/onnx_fixtures.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace engine_agreement {

using namespace quantscope;

// The largest |v|, and the largest |a - b| (infinite when the lengths differ).
inline double maxAbs(const std::vector<float>& v)
{
    double m = 0;
    for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
    return m;
}

inline double maxDiff(const std::vector<float>& a, const std::vector<float>& b)
{
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

// A traced point's integers as floats, (q - zero point) * scale: one image, shape [1, ...p.shape].
inline Tensor dequantized(const PointTrace& p)
{
    Shape shape{1};
    shape.insert(shape.end(), p.shape.begin(), p.shape.end());
    Tensor x(shape);
    for (std::size_t i = 0; i < x.numel(); ++i) x[i] = (static_cast<float>(p.q[i]) - static_cast<float>(p.quant.zeroPoint)) * p.quant.scale;
    return x;
}

// y (already fake-quantized at p's quantization) as codes against p's: how many differ, by how
// many steps at most, and how many distinct codes p holds (a check on few codes proves little).
struct CodeDiff {
    std::size_t values = 0, differing = 0, distinct = 0;
    std::int32_t worstSteps = 0;
    void add(const CodeDiff& o)
    {
        values += o.values;
        differing += o.differing;
        distinct = std::max(distinct, o.distinct);
        worstSteps = std::max(worstSteps, o.worstSteps);
    }
};

inline CodeDiff compareCodes(const Tensor& y, const PointTrace& p)
{
    CodeDiff d;
    std::set<std::int32_t> seen;
    const std::size_t n = std::min(y.numel(), p.q.size());
    for (std::size_t i = 0; i < n; ++i) {
        const auto want = static_cast<std::int32_t>(std::nearbyint(y[i] / p.quant.scale)) + p.quant.zeroPoint;
        d.differing += want != p.q[i];
        d.worstSteps = std::max(d.worstSteps, std::abs(want - p.q[i]));
        seen.insert(p.q[i]);
    }
    d.values = p.q.size();
    d.distinct = seen.size();
    return d;
}

// The integer engine and the fake-quant reference runner on the same n images.
struct EngineRun {
    std::size_t images = 0, agreeing = 0;  // argmax equal to the reference's
    std::vector<std::int32_t> predicted;   // the engine's argmax, [n]
    std::vector<float> outputs;            // the engine's outputs, [n, classes]
    double agreement() const { return images ? static_cast<double>(agreeing) / static_cast<double>(images) : 0.0; }
};

inline EngineRun engineAgainstReference(const ExportedModel& m, const std::uint8_t* pixels, std::size_t n, std::size_t classes)
{
    RunnerOptions ro;
    ro.kind = RunnerKind::Reference;
    ModelRunner reference(m, ro);
    ro.kind = RunnerKind::Integer;
    ModelRunner integer(m, ro);
    EngineRun r;
    r.images = n;
    std::vector<std::int32_t> pr(n);
    r.predicted.resize(n);
    r.outputs.resize(n * classes);
    reference.predict(pixels, n, pr.data());
    integer.predict(pixels, n, r.predicted.data(), r.outputs.data());
    for (std::size_t i = 0; i < n; ++i) r.agreeing += pr[i] == r.predicted[i];
    return r;
}

// onnxruntime on QDQ bytes (written to `path`) over the images file the fixtures wrote, against
// the engine's run on the same images: argmax agreement, and the mean |difference| of the outputs
// over the engine's largest |output|. Call after QS_SKIP_WITHOUT_ORT().
struct OrtRun {
    std::size_t outputs = 0; // values onnxruntime gave (images x classes when it ran them all)
    double agreement = 0.0;
    double meanRelDiff = 0.0;
};

inline OrtRun ortAgainstEngine(const std::vector<std::uint8_t>& bytes, const std::string& path, const std::string& images,
                               const EngineRun& e, std::size_t classes)
{
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    const std::vector<float> ort = fixtures::ortOutputs(path, images);
    OrtRun r;
    r.outputs = ort.size();
    if (ort.size() != e.outputs.size() || e.images == 0) return r;
    const std::vector<std::int32_t> pred = fixtures::argmaxOf(ort, classes);
    std::size_t agree = 0;
    double sum = 0.0;
    const double largest = maxAbs(e.outputs);
    for (std::size_t i = 0; i < e.images; ++i) {
        agree += pred[i] == e.predicted[i];
        for (std::size_t j = 0; j < classes; ++j) sum += std::fabs(static_cast<double>(ort[i * classes + j]) - e.outputs[i * classes + j]);
    }
    r.agreement = static_cast<double>(agree) / static_cast<double>(e.images);
    r.meanRelDiff = sum / static_cast<double>(e.images * classes) / std::max(largest, 1e-30);
    return r;
}

// The FP32 export onnxBytes (of m) written to stem + ".onnx" and run by onnxruntime on n crops of
// C x H x W from 28 x 28 images (pixels28; channel c's crop at row row0 + c rowPerChannel, column
// col0 + c colPerChannel) against QuantScope's float runner: the largest |difference| of the
// outputs, and the largest |output|.
struct Fp32Deviation {
    double maxDiff = 0, maxAbs = 0;
    std::size_t ortValues = 0, ourValues = 0;
};
struct Crop {
    std::size_t row0 = 4, col0 = 6, rowPerChannel = 5, colPerChannel = 4;
};
inline Fp32Deviation ortFp32Deviation(const ExportedModel& m, const std::vector<std::uint8_t>& onnxBytes, const std::string& stem,
                                      const std::vector<std::uint8_t>& pixels28, Crop crop = {}, std::size_t n = 50)
{
    const std::string path = stem + ".onnx";
    {
        std::ofstream file(path, std::ios::binary);
        file.write(reinterpret_cast<const char*>(onnxBytes.data()), static_cast<std::streamsize>(onnxBytes.size()));
    }
    const std::size_t C = m.channels, H = m.height, W = m.width;
    std::vector<std::uint8_t> px(n * C * H * W);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t y = 0; y < H; ++y)
                for (std::size_t x = 0; x < W; ++x)
                    px[((i * C + c) * H + y) * W + x] =
                        pixels28[i * 28 * 28 + (y + crop.row0 + crop.rowPerChannel * c) * 28 + x + crop.col0 + crop.colPerChannel * c];
    const std::string images = stem + "-images";
    const auto u32 = [](std::size_t v) { return static_cast<std::uint32_t>(v); };
    if (C == 1) fixtures::writeIdx(images, {u32(n), u32(H), u32(W)}, px);
    else fixtures::writeIdx(images, {u32(n), u32(C), u32(H), u32(W)}, px);
    const std::vector<float> ort = fixtures::ortOutputs(path, images);
    ModelRunner runner(m);
    std::vector<float> ours(n * m.classes);
    std::vector<std::int32_t> pred(n);
    runner.predict(px.data(), n, pred.data(), ours.data());
    return {maxDiff(ort, ours), maxAbs(ours), ort.size(), ours.size()};
}

} // namespace engine_agreement
