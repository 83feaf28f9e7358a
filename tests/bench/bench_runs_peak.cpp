// How close the AVX512_BF16 run kernels come to this CPU's peak, and so how much of a mixed
// step is left to the passes around them. Single thread, operands hot in cache, best of 30 calls:
//   1. the peak: 24 independent VDPBF16PS (and FP32 VFMADD231PS) chains in registers, in GFLOP/s
//      (a VDPBF16PS on a zmm is 32 multiply-adds, an FMA 16);
//   2. gemmBf16Runs (the forward and input-gradient products, tensor/gemm_bf16.h) and
//      weightGradBf16Runs (the weight gradient) on seed-cnn's conv2 and resnet8's convolutions,
//      a group of images as the layers hand them over, in GFLOP/s and % of (1).
// The layer's time in bench_model_layers over the kernel's share of it here is what the layout
// passes (runs, pairs, epilogues, masks) cost. Not a ctest:
//   build/release/tests/bench/bench_runs_peak
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized" // GCC 12 on _mm512_setzero_ps / _mm512_reduce_add_ps
#endif

#include "tensor/conv_runs.h"
#include "tensor/gemm_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

using namespace quantscope;

namespace {

double seconds()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// 24 independent accumulators, 24 instructions an iteration: bound by throughput, not latency.
template <bool Bf16>
[[gnu::noinline, gnu::target("avx512f,avx512bf16")]] float peakLoop(long iters)
{
    __m512 acc[24];
    for (auto& a : acc) a = _mm512_setzero_ps();
    __m512 x = _mm512_set1_ps(1.0f);
    __m512i xb = _mm512_set1_epi32(0x3f803f80);
    for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; ++i) {
            if constexpr (Bf16) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)xb, (__m512bh)xb);
            else acc[i] = _mm512_fmadd_ps(x, x, acc[i]);
        }
        asm volatile("" : "+v"(x), "+v"(xb)); // keeps the operands opaque
    }
    __m512 s = acc[0];
    for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

template <bool Bf16>
double peakGflops()
{
    const long iters = 4'000'000;
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r < 5; ++r) {
        const double t0 = seconds();
        sink = sink + peakLoop<Bf16>(iters);
        best = std::min(best, seconds() - t0);
    }
    return 24.0 * static_cast<double>(iters) * (Bf16 ? 64.0 : 32.0) / best / 1e9;
}

template <typename F>
double bestOf(F&& f)
{
    double best = 1e30;
    for (int rep = 0; rep < 30; ++rep) {
        const double t0 = seconds();
        f();
        best = std::min(best, seconds() - t0);
    }
    return best;
}

// A k x k stride-1 convolution of C -> M channels on `count` H x H images ("same" padding), as
// gemmBf16Runs sees it: C / 2 runs of interleaved channel pairs with row pitch H + k - 1.
void forwardRow(const char* name, std::size_t M, std::size_t C, std::size_t H, std::size_t k, std::size_t count, double peak)
{
    const std::size_t Wq = H + k - 1, S = count * Wq * Wq + 64, groups = (C + 1) / 2, K2 = k * k * groups;
    std::vector<std::uint32_t> runs(groups * S + kRunsRowSlack, 0x3f803f80u);
    std::vector<std::size_t> taps(k * k);
    for (std::size_t t = 0; t < k * k; ++t) taps[t] = 4 * ((t / k) * Wq + t % k);
    std::vector<float> A(M * 2 * K2, 0.01f);
    PackedBf16Runs a;
    packBf16RunsA(A.data(), M, K2, a, Bf16Path::Avx512Bf16);
    const ConvRuns b{reinterpret_cast<const std::uint8_t*>(runs.data()), 4 * S, taps.data(), k * k, groups};
    const std::size_t L = count * Wq * Wq - (k - 1) * (Wq + 1);
    std::vector<float> out(M * L);
    const double s = bestOf([&] { gemmBf16Runs(a, b, L, out.data(), L); });
    const double gf = 2.0 * static_cast<double>(M * 2 * K2 * L) / s / 1e9;
    std::printf("%-36s %8.3f ms %7.0f GFLOP/s %5.0f %%\n", name, s * 1e3, gf, 100.0 * gf / peak);
}

void weightGradRow(const char* name, std::size_t O, std::size_t C, std::size_t H, std::size_t k, std::size_t count, double peak)
{
    const std::size_t Wq = H + k - 1, L = count * Wq * Wq, P = (L + 31) / 32 * 16, Op = (O + 15) / 16 * 16;
    const std::size_t xs = L + 64 + 2 * P;
    std::vector<std::uint16_t> x(C * xs + kRunsRowSlack, 0x3f80);
    std::vector<std::size_t> taps(k * k);
    for (std::size_t t = 0; t < k * k; ++t) taps[t] = (t / k) * Wq + t % k;
    std::vector<std::uint32_t> dy(P * Op, 0x3f803f80u);
    std::vector<float> dW(O * C * k * k, 0.0f);
    const WeightGradRuns a{Bf16Path::Avx512Bf16, x.data(), 2 * xs, taps.data(), k * k, C, dy.data(), O, Op, P};
    const double s = bestOf([&] { weightGradBf16Runs(a, dW.data()); });
    const double gf = 2.0 * static_cast<double>(O * C * k * k * 2 * P) / s / 1e9;
    std::printf("%-36s %8.3f ms %7.0f GFLOP/s %5.0f %%\n", name, s * 1e3, gf, 100.0 * gf / peak);
}

} // namespace

int main()
{
    if (!bf16PathSupported(Bf16Path::Avx512Bf16)) {
        std::printf("bench_runs_peak: this CPU has no AVX512_BF16\n");
        return 0;
    }
    const double fma = peakGflops<false>(), bf16 = peakGflops<true>();
    std::printf("peak, one core: FP32 FMA %.0f GFLOP/s, VDPBF16PS %.0f GFLOP/s (%.2fx)\n\n", fma, bf16, bf16 / fma);
    std::printf("%-36s %11s %15s %7s\n", "kernel (hot operands, one thread)", "time", "rate", "of peak");
    forwardRow("seed-cnn conv2 forward, 4 images", 64, 32, 24, 3, 4, bf16);
    forwardRow("resnet8 layer1 conv forward, 4 images", 16, 16, 28, 3, 4, bf16);
    forwardRow("resnet8 layer3 conv2 forward, 16 img", 64, 64, 7, 3, 16, bf16);
    weightGradRow("seed-cnn conv2 weight grad, 4 images", 64, 32, 24, 3, 4, bf16);
    weightGradRow("resnet8 layer1 weight grad, 4 images", 16, 16, 28, 3, 4, bf16);
    weightGradRow("resnet8 layer2 conv2 weight grad, 8", 32, 32, 14, 3, 8, bf16);
    weightGradRow("resnet8 layer3 conv2 weight grad, 16", 64, 64, 7, 3, 16, bf16);
    return 0;
}
