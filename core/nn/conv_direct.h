// Direct ("implicit GEMM") convolution kernels for stride-1 convolutions.
//
// The input plane is zero-padded once and the output is computed at the padded row pitch Wp
// (conv2d.cpp lays several images out in one run, sharing the padding between rows and images). Then tap (ky, kx) of every output pixel j = oy Wp + ox reads the
// padded input at j + ky Wp + kx: each row of the im2col matrix is a contiguous run of the padded
// plane, and the GEMM reads it in place through a table of row pointers instead of a copied
// column matrix (columns ox >= W of each output row are scratch and are dropped). The input
// gradient is the same product with the weights rotated by 180 degrees and transposed (a "full"
// convolution of the output gradient padded by k - 1 - p); the weight gradient is the product of the output
// gradient's rows with the same row table.
//
// Every output element is summed in a fixed order (k = 0..K-1, or j in fixed chunks), so the
// results never depend on threads or on the address of the data.
#pragma once

#include <cstddef>
#include <vector>

namespace quantscope::conv_direct {

// Rows of A (M x K, row-major, lda apart) packed in blocks of 8 rows, k-major inside a block:
// packed[(b K + k) 8 + i] = A[(8 b + i) lda + k], zero for rows >= M.
void packA(const float* A, std::size_t M, std::size_t K, std::size_t lda, std::vector<float>& packed);

// C[m ldc + j] = sum_k A[m, k] rows[k][j] for m < M, j < L, with A packed by packA.
// rows[k] must be readable for L floats.
void gemmRows(const float* packedA, std::size_t M, std::size_t K, const float* const* rows, std::size_t L,
              float* C, std::size_t ldc);

// C[m ldc + k] += sum_{j < L} D[m][j] R[k][j] for m < M, k < K (the weight gradient).
void gemmRowsTransAdd(const float* const* D, std::size_t M, const float* const* R, std::size_t K, std::size_t L,
                      float* C, std::size_t ldc);

// gemmRowsTransAdd's two AVX-512 kernels, which sum in different orders (each fixed):
//  - Pixels: 4 x 6 tiles of (m, k) vectorised over j, D read in place, each output's 16 lanes
//    added at the end. 10 vector loads per 24 multiply-adds, all streamed from L2 for every tile,
//    and a reduction per output.
//  - Channels: D transposed to (L, M) a chunk of j at a time (32 KB, held in L1), vectorised over
//    m, R[k][j] broadcast; every output one sum over j in order, kept between chunks. A broadcast
//    per multiply-add row, no reductions.
// Which is faster depends on the CPU. Sapphire Rapids class Intel (2 threads, seed-cnn's conv2
// weight gradient alone, bench_model_layers): Channels 5.2-5.4 ms against Pixels 7.7 ms; one
// thread, operands in cache: 200 against 139 GFLOP/s at M = 64, K = 288, 168 against 132 at
// M = 16, K = 144 (the FMA peak measured 216 a core). Zen 4, which runs each 512-bit
// operation as two 256-bit halves: Channels (before its chunking: seed-cnn's conv2 backward
// 16.1 against 17.4-19.3 ms). Zen 5, measured before Channels' chunking: Pixels (resnet8's
// 16-channel layers 0.83 against 1.0 ms, the others even). defaultTransAddKernel() is that
// choice for this CPU (Pixels on AMD with full-width AVX-512, Channels elsewhere); the results
// then depend on the CPU model, as the bf16 and AMX paths' do, never on threads. Builds without
// AVX-512 run their one portable kernel whatever is set.
enum class TransAddKernel { Pixels, Channels };
TransAddKernel defaultTransAddKernel();
TransAddKernel transAddKernel();
// For tests and benchmarks, which run both kernels on any CPU. Not thread-safe against
// convolutions running at the same time.
void setTransAddKernel(TransAddKernel kernel);

} // namespace quantscope::conv_direct
