// A convolution's training products on each path, alternating in one process (median
// milliseconds, one arena of --threads threads), on the same operands:
//   QAT forward: int8 products (tensor/gemm_s8.h; QS_INT8_PRODUCTS=vnni|amx picks the path)
//                against the FP32 direct kernel on the same fake-quantized values;
//   bf16 forward + backward (mixed/lowp): AMX over the runs against AMX over im2col (the path
//                before the runs) and the FP32 direct kernels.
// Shapes: seed-cnn's conv2 and resnet8's stride-1 convs.
//
//   build/release/tests/bench/bench_conv_products [--threads N] [--reps N]
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "tensor/gemm_bf16.h"
#include "tensor/gemm_s8.h"
#include "util/rng.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace quantscope;

namespace {

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void bench(const char* name, std::size_t cin, std::size_t cout, std::size_t pad, std::size_t H, std::size_t N, int reps)
{
    Rng rng(1);
    Conv2d conv(name, cin, cout, 3, 1, pad, 1, true);
    const float sw = 0.01f, sx = 0.02f;
    for (float& w : conv.weight().value.values()) w = std::nearbyint(rng.uniform(-127.0f, 127.0f)) * sw;
    Tensor x({N, cin, H, H});
    for (float& v : x.values()) v = rng.uniform(0.0f, 1.0f) < 0.4f ? 0.0f : std::nearbyint(rng.uniform(0.0f, 255.0f)) * sx;
    RunContext ctx;
    ctx.training = true;
    Tensor y;
    std::vector<double> fp32, int8;
    for (int r = 0; r < reps; ++r)
        for (int mode = 0; mode < 2; ++mode) {
            conv.setIntegerWeightScales(mode ? std::vector<float>{sw} : std::vector<float>{});
            conv.setIntegerInputGrid(U8Grid{sx, 0});
            const auto t0 = std::chrono::steady_clock::now();
            conv.forwardClamped(x, y, ctx, INFINITY);
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (mode && !conv.lastForwardWasInteger() && conv.usesDirectKernel()) {
                std::fprintf(stderr, "%s: the integer path did not run\n", name);
                std::exit(1);
            }
            (mode ? int8 : fp32).push_back(ms);
        }
    const double f = median(fp32), i = median(int8);
    std::printf("%-28s N=%zu  forward: fp32 %7.2f ms  int8 %7.2f ms  speed-up %.2fx\n", name, N, f, i, f / i);
    if (!bf16PathSupported(Bf16Path::AmxBf16)) return;
    // bf16 training step of the layer: forward + backward (dW, db, dx).
    conv.setIntegerWeightScales({});
    Tensor dy, dx;
    std::vector<double> t[3];
    for (int r = 0; r < reps; ++r)
        for (int mode = 0; mode < 3; ++mode) { // 0 fp32 direct, 1 bf16 im2col, 2 bf16 runs
            conv.setBf16Products(mode ? Bf16Path::AmxBf16 : Bf16Path::Emulated);
            conv.setReferencePath(mode == 1); // no direct kernel: the im2col bf16 path
            const auto t0 = std::chrono::steady_clock::now();
            conv.forward(x, y, ctx);
            if (dy.shape() != y.shape()) {
                dy = y;
                for (float& v : dy.values()) v = rng.uniform(-0.01f, 0.01f);
            }
            conv.backward(x, y, dy, dx, true);
            t[mode].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
    conv.setReferencePath(false);
    conv.setBf16Products(Bf16Path::Emulated);
    const double a = median(t[0]), b = median(t[1]), c = median(t[2]);
    std::printf("%-28s N=%zu  fwd+bwd: fp32 %7.2f ms  bf16 im2col %7.2f ms  bf16 runs %7.2f ms  runs vs fp32 %.2fx\n", name,
                N, a, b, c, a / c);
}

// A dense layer's training step (forward + backward) with FP32 products against AMX bf16.
void benchLinear(const char* name, std::size_t in, std::size_t out, std::size_t N, int reps)
{
    Rng rng(2);
    Linear fc(name, in, out);
    for (float& w : fc.weight().value.values()) w = rng.uniform(-0.05f, 0.05f);
    Tensor x({N, in}), dy({N, out}), y, dx;
    for (float& v : x.values()) v = rng.uniform(0.0f, 1.0f);
    for (float& v : dy.values()) v = rng.uniform(-0.01f, 0.01f);
    RunContext ctx;
    ctx.training = true;
    std::vector<double> t[2];
    for (int r = 0; r < reps; ++r)
        for (int mode = 0; mode < 2; ++mode) {
            fc.setBf16Products(mode ? Bf16Path::AmxBf16 : Bf16Path::Emulated);
            const auto t0 = std::chrono::steady_clock::now();
            fc.forward(x, y, ctx);
            fc.backward(x, y, dy, dx, true);
            t[mode].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
    fc.setBf16Products(Bf16Path::Emulated);
    const double a = median(t[0]), b = median(t[1]);
    std::printf("%-28s N=%zu  fwd+bwd: fp32 %7.2f ms  bf16 amx %7.2f ms  bf16 vs fp32 %.2fx\n", name, N, a, b, a / b);
}

} // namespace

int main(int argc, char** argv)
{
    int threads = 2, reps = 15;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    }
    if (!Conv2d::directKernelsBuilt() || !s8ProductsAvailable()) {
        std::printf("no integer products in this build or on this CPU\n");
        return 0;
    }
    std::printf("integer path: %s, %d threads, median of %d\n", s8PathName(bestS8Path()), threads, reps);
    tbb::task_arena arena(threads);
    arena.execute([&] {
        bench("seed-cnn conv1 1->32 28x28", 1, 32, 0, 28, 64, reps);
        bench("seed-cnn conv2 32->64 26x26", 32, 64, 0, 26, 64, reps);
        bench("resnet8 layer1 16->16 28x28", 16, 16, 1, 28, 64, reps);
        bench("resnet8 layer2 32->32 14x14", 32, 32, 1, 14, 64, reps);
        bench("resnet8 layer3 64->64 7x7", 64, 64, 1, 7, 64, reps);
        if (bf16PathSupported(Bf16Path::AmxBf16)) {
            benchLinear("seed-cnn fc1 9216->128", 9216, 128, 64, reps);
            benchLinear("resnet8 fc 64->10", 64, 10, 64, reps);
        }
    });
}
