// GFLOP/s of the bf16 GEMM paths (tensor/gemm_bf16.h) against FP32 Eigen on the per-image
// products of seed-cnn and resnet8 at 28 x 28 (the fc layers at batch 64): forward W * cols,
// weight gradient dY * cols^T, input gradient W^T * dY. Single thread, best of 7 timings of
// at least 20 ms of thread CPU time each. Not a ctest: run build/release/tests/bench/bench_gemm_bf16 [--quick].
// Every path column starts from FP32 A and B (rounding and packing included). The last column is
// the best hardware path's kernel alone on A and B packed beforehand (what a fused im2col-to-bf16
// packer would leave), comparable to a bf16 library GEMM fed bf16 inputs.
// A second table times a whole per-image convolution forward from the FP32 image, W packed once
// per batch: im2col + Eigen FP32, im2col + gemmBf16Packed, and packBf16Im2col + gemmBf16PackedAB;
// a third the weight gradient dY * cols^T: im2col + gemmBf16 against packBf16Im2colT.
#include "nn/conv2d.h"
#include "tensor/gemm_bf16.h"
#include "tensor/gemm_bf16_kernels.h"
#include "tensor/tensor.h"

#include <algorithm>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace quantscope;

namespace {

struct Shape3 {
    const char* layer;
    const char* product;
    bool transA, transB;
    std::size_t M, N, K;
};

// CPU time of this thread, not wall time: on a machine shared with other builds the thread's
// descheduled time would otherwise count against the kernel.
double threadSeconds()
{
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double bestSeconds(const std::function<void()>& f, double minSeconds)
{
    double best = 1e30;
    for (int rep = 0; rep < 7; ++rep) {
        std::size_t iters = 0;
        const double t0 = threadSeconds();
        double el = 0;
        do {
            f();
            ++iters;
            el = threadSeconds() - t0;
        } while (el < minSeconds);
        best = std::min(best, el / static_cast<double>(iters));
    }
    return best;
}

} // namespace

int main(int argc, char** argv)
{
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const double minSeconds = quick ? 0.005 : 0.02;
    // Conv layer with Cout, K = Cin k k, HWo: forward (Cout x HWo) = W (Cout x K) cols (K x HWo);
    // dW (Cout x K) = dY (Cout x HWo) cols^T; dcols (K x HWo) = W^T dY.
    std::vector<Shape3> shapes;
    const auto conv = [&](const char* name, std::size_t cout, std::size_t k, std::size_t hwo) {
        shapes.push_back({name, "fwd  W*cols", false, false, cout, hwo, k});
        shapes.push_back({name, "dW   dY*cols^T", false, true, cout, k, hwo});
        shapes.push_back({name, "dX   W^T*dY", true, false, k, hwo, cout});
    };
    // fc with batch B: Y (B x out) = X (B x in) W^T; dW (out x in) = dY^T X; dX (B x in) = dY W.
    const auto fc = [&](const char* name, std::size_t batch, std::size_t in, std::size_t out) {
        shapes.push_back({name, "fwd  X*W^T", false, true, batch, out, in});
        shapes.push_back({name, "dW   dY^T*X", true, false, out, in, batch});
        shapes.push_back({name, "dX   dY*W", false, false, batch, in, out});
    };
    conv("seed-cnn conv1", 32, 9, 676);
    conv("seed-cnn conv2", 64, 288, 576);
    fc("seed-cnn fc1", 64, 9216, 128);
    fc("seed-cnn fc2", 64, 128, 10);
    conv("resnet8 16ch 3x3", 16, 144, 784);
    conv("resnet8 32ch 3x3", 32, 288, 196);
    conv("resnet8 64ch 3x3", 64, 576, 49);
    fc("resnet8 fc", 64, 64, 10);

    std::vector<Bf16Path> paths;
    for (Bf16Path p : {Bf16Path::Emulated, Bf16Path::Avx512Bf16, Bf16Path::AmxBf16})
        if (bf16PathSupported(p)) paths.push_back(p);

    std::printf("%-18s %-15s %5s %5s %5s %9s", "layer", "product", "M", "N", "K", "fp32-eigen");
    for (Bf16Path p : paths) std::printf(" %11s", bf16PathName(p));
    const Bf16Path hw = paths.back();
    if (hw != Bf16Path::Emulated) std::printf(" %s-kernel", hw == Bf16Path::AmxBf16 ? "amx" : "avx512");
    std::printf("   (GFLOP/s, 1 thread)\n");
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    for (const Shape3& s : shapes) {
        const std::size_t aRows = s.transA ? s.K : s.M, aCols = s.transA ? s.M : s.K;
        const std::size_t bRows = s.transB ? s.N : s.K, bCols = s.transB ? s.K : s.N;
        std::vector<float> A(aRows * aCols), B(bRows * bCols), C(s.M * s.N);
        for (float& x : A) x = nd(rng);
        for (float& x : B) x = nd(rng);
        const double flop = 2.0 * static_cast<double>(s.M) * static_cast<double>(s.N) * static_cast<double>(s.K);
        using Idx = Eigen::Index;
        ConstMatrixMap Am(A.data(), static_cast<Idx>(aRows), static_cast<Idx>(aCols));
        ConstMatrixMap Bm(B.data(), static_cast<Idx>(bRows), static_cast<Idx>(bCols));
        MatrixMap Cm(C.data(), static_cast<Idx>(s.M), static_cast<Idx>(s.N));
        const double tEigen = bestSeconds(
            [&] {
                if (s.transA)
                    Cm.noalias() = Am.transpose() * Bm;
                else if (s.transB)
                    Cm.noalias() = Am * Bm.transpose();
                else
                    Cm.noalias() = Am * Bm;
            },
            minSeconds);
        std::printf("%-18s %-15s %5zu %5zu %5zu %9.1f", s.layer, s.product, s.M, s.N, s.K, flop / tEigen * 1e-9);
        for (Bf16Path p : paths) {
            const GemmBf16Args g{s.transA, s.transB, s.M, s.N, s.K, A.data(), aCols, B.data(), bCols, C.data(), s.N, false};
            const double t = bestSeconds([&] { gemmBf16(p, g); }, minSeconds);
            std::printf(" %11.1f", flop / t * 1e-9);
        }
        if (hw != Bf16Path::Emulated) {
            const std::size_t Kp2 = bf16detail::pairsPerRow(hw, s.K), Mp = bf16detail::paddedRows(hw, s.M);
            std::vector<std::uint32_t> pbBuf(((s.N + 15) / 16) * Kp2 * 16 + 16);
            auto* pb = reinterpret_cast<std::uint32_t*>((reinterpret_cast<std::uintptr_t>(pbBuf.data()) + 63) & ~std::uintptr_t{63});
            bf16detail::packB(s.transB, s.K, s.N, B.data(), bCols, pb, Kp2);
            std::vector<std::uint32_t> paBuf(Mp * Kp2);
            bf16detail::packA(s.transA, s.M, s.K, A.data(), aCols, paBuf.data(), Mp, Kp2);
            const double t = bestSeconds(
                [&] {
                    if (hw == Bf16Path::AmxBf16)
                        bf16detail::kernelAmx(paBuf.data(), pb, Kp2, s.M, s.N, C.data(), s.N, false);
                    else
                        bf16detail::kernelAvx512(paBuf.data(), pb, Kp2, s.M, s.N, C.data(), s.N, false);
                },
                minSeconds);
            std::printf(" %13.1f", flop / t * 1e-9);
        }
        std::printf("\n");
    }

    struct Conv {
        const char* layer;
        std::size_t C, H, W, k, stride, pad, M;
    };
    const Conv convs[] = {{"seed-cnn conv1", 1, 28, 28, 3, 1, 0, 32},   {"seed-cnn conv2", 32, 26, 26, 3, 1, 0, 64},
                          {"resnet8 16ch", 16, 28, 28, 3, 1, 1, 16},    {"resnet8 16->32 s2", 16, 28, 28, 3, 2, 1, 32},
                          {"resnet8 32ch", 32, 14, 14, 3, 1, 1, 32},    {"resnet8 64ch", 64, 7, 7, 3, 1, 1, 64}};
    std::printf("\nconv forward of one image from FP32 x, W packed once (GFLOP/s, 1 thread)\n");
    std::printf("%-18s %5s %5s %5s %14s", "layer", "M", "N", "K", "im2col+eigen");
    for (Bf16Path p : paths) std::printf(" %22s %22s", (std::string("im2col+") + bf16PathName(p)).c_str(), (std::string("fused+") + bf16PathName(p)).c_str());
    std::printf("\n");
    for (const Conv& c : convs) {
        const std::size_t Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
        const std::size_t K = c.C * c.k * c.k, N = Ho * Wo;
        std::vector<float> x(c.C * c.H * c.W), w(c.M * K), cols(K * N), y(c.M * N);
        for (float& v : x) v = nd(rng);
        for (float& v : w) v = nd(rng);
        const double flop = 2.0 * static_cast<double>(c.M * N * K);
        using Idx = Eigen::Index;
        const double tEigen = bestSeconds(
            [&] {
                im2col(x.data(), c.C, c.H, c.W, c.k, c.stride, c.pad, cols.data());
                MatrixMap(y.data(), static_cast<Idx>(c.M), static_cast<Idx>(N)).noalias() =
                    ConstMatrixMap(w.data(), static_cast<Idx>(c.M), static_cast<Idx>(K)) *
                    ConstMatrixMap(cols.data(), static_cast<Idx>(K), static_cast<Idx>(N));
            },
            minSeconds);
        std::printf("%-18s %5zu %5zu %5zu %14.1f", c.layer, c.M, N, K, flop / tEigen * 1e-9);
        for (Bf16Path p : paths) {
            PackedBf16A wp;
            PackedBf16B bp;
            packBf16A(wp, p, false, c.M, K, w.data(), K);
            const double tSplit = bestSeconds(
                [&] {
                    im2col(x.data(), c.C, c.H, c.W, c.k, c.stride, c.pad, cols.data());
                    gemmBf16Packed(wp, false, N, cols.data(), N, y.data(), N, false);
                },
                minSeconds);
            const double tFused = bestSeconds(
                [&] {
                    packBf16Im2col(bp, p, x.data(), c.C, c.H, c.W, c.k, c.stride, c.pad);
                    gemmBf16PackedAB(wp, bp, y.data(), N, false);
                },
                minSeconds);
            std::printf(" %22.1f %22.1f", flop / tSplit * 1e-9, flop / tFused * 1e-9);
        }
        std::printf("\n");
    }

    std::printf("\nconv weight gradient of one image dW = dY * cols^T from FP32 x and dY (GFLOP/s, 1 thread)\n");
    std::printf("%-18s %5s %5s %5s %14s", "layer", "M", "N", "K", "im2col+eigen");
    for (Bf16Path p : paths) std::printf(" %22s %22s", (std::string("im2col+") + bf16PathName(p)).c_str(), (std::string("fused+") + bf16PathName(p)).c_str());
    std::printf("\n");
    for (const Conv& c : convs) {
        const std::size_t Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
        const std::size_t K = c.C * c.k * c.k, N = Ho * Wo;
        std::vector<float> x(c.C * c.H * c.W), dy(c.M * N), cols(K * N), dw(c.M * K);
        for (float& v : x) v = nd(rng);
        for (float& v : dy) v = nd(rng);
        const double flop = 2.0 * static_cast<double>(c.M * N * K);
        using Idx = Eigen::Index;
        const double tEigen = bestSeconds(
            [&] {
                im2col(x.data(), c.C, c.H, c.W, c.k, c.stride, c.pad, cols.data());
                MatrixMap(dw.data(), static_cast<Idx>(c.M), static_cast<Idx>(K)).noalias() =
                    ConstMatrixMap(dy.data(), static_cast<Idx>(c.M), static_cast<Idx>(N)) *
                    ConstMatrixMap(cols.data(), static_cast<Idx>(K), static_cast<Idx>(N)).transpose();
            },
            minSeconds);
        std::printf("%-18s %5zu %5zu %5zu %14.1f", c.layer, c.M, K, N, flop / tEigen * 1e-9);
        for (Bf16Path p : paths) {
            PackedBf16A dyp;
            PackedBf16B bp;
            const double tSplit = bestSeconds(
                [&] {
                    im2col(x.data(), c.C, c.H, c.W, c.k, c.stride, c.pad, cols.data());
                    gemmBf16(p, {false, true, c.M, K, N, dy.data(), N, cols.data(), N, dw.data(), K, false});
                },
                minSeconds);
            const double tFused = bestSeconds(
                [&] {
                    packBf16A(dyp, p, false, c.M, N, dy.data(), N);
                    packBf16Im2colT(bp, p, x.data(), c.C, c.H, c.W, c.k, c.stride, c.pad);
                    gemmBf16PackedAB(dyp, bp, dw.data(), K, false);
                },
                minSeconds);
            std::printf(" %22.1f %22.1f", flop / tSplit * 1e-9, flop / tFused * 1e-9);
        }
        std::printf("\n");
    }
    return 0;
}
