// Internal to the bf16 GEMM (tensor/gemm_bf16*.cpp): the packed layouts and the kernel entry
// points. Callers use tensor/gemm_bf16.h.
//
// Packed A: Mp rows of Kp2 uint32 "pairs" (low half bf16(op(A)[m][2p]), high half
// bf16(op(A)[m][2p+1])), zero beyond M and K. This is also AMX's A tile layout (rows of bf16).
// No alignment is assumed anywhere (unaligned loads and stores).
// Packed B: ceil(N/16) panels of Kp2 x 16 pairs: panel j, pair p, lane c holds
// (bf16(op(B)[2p][16j+c]), bf16(op(B)[2p+1][16j+c])), zero beyond N and K: the operand layout
// of VDPBF16PS and of AMX's B tiles (16 pair rows x 64 bytes).
#pragma once

#include "tensor/gemm_bf16.h"

#include <cstddef>
#include <cstdint>

namespace quantscope::bf16detail {

// Rounds while packing (AVX-512 code: call only where the avx512-bf16 path is supported).
void packA(bool transA, std::size_t M, std::size_t K, const float* A, std::size_t lda, std::uint32_t* dst,
           std::size_t Mp, std::size_t Kp2);
void packB(bool transB, std::size_t K, std::size_t N, const float* B, std::size_t ldb, std::uint32_t* dst,
           std::size_t Kp2);
// The geometry of packBIm2col as plain pointers (the tables live in gemm_bf16.cpp, so that no
// std::vector code is compiled for AVX-512). Column n = (oy, ox) of im2col row (c, ky, kx)
// reads x[c HW + tapOffset[ky k + kx] + pix[n]], pix[n] = oy s W + ox s, where bit n % 16 of
// valid[(ky k + kx) panels + n / 16] is set (0 elsewhere: padding and columns past N).
struct Im2colPlan {
    std::size_t N = 0, kk = 0, HW = 0;
    bool contiguous = false;                // stride 1 and Wo == W: pix[n] == n, masked loads, no gathers
    const std::int32_t* pix = nullptr;      // ceil(N / 32) * 32 (zero past N)
    const std::int32_t* tapOffset = nullptr; // k * k: (ky - pad) W + kx - pad
    const std::uint16_t* valid = nullptr;   // k * k * ceil(N / 16)
};
// Packed B = im2col(x) (rows (c, ky, kx), columns (oy, ox)) straight from the image x.
void packBIm2col(const float* x, const Im2colPlan& t, std::size_t C, std::uint32_t* dst, std::size_t Kp2);
// Packed B = im2col(x)^T (rows: pixels (oy, ox), columns: (c, ky, kx)) straight from the image.
// Needs t.pix padded to a multiple of 32 pixels.
void packBIm2colT(const float* x, const Im2colPlan& t, std::size_t C, std::uint32_t* dst, std::size_t Kp2);
// Pair row p of packed B from two rows of op(B) (N values each; r1 == nullptr: zeros).
void packBPairRow(const float* r0, const float* r1, std::size_t N, std::uint32_t* dst, std::size_t Kp2, std::size_t p);

// The packed shape of op(A) for a path: Kp2 pairs a row (AVX-512: K rounded up to even; AMX: to
// a multiple of 32, one tile's depth) and Mp rows (AMX: a multiple of 16, one tile's height).
inline std::size_t pairsPerRow(Bf16Path path, std::size_t K) { return path == Bf16Path::AmxBf16 ? (K + 31) / 32 * 16 : (K + 1) / 2; }
inline std::size_t paddedRows(Bf16Path path, std::size_t M) { return path == Bf16Path::AmxBf16 ? (M + 15) / 16 * 16 : M; }

// C (+)= A * op(B) with A already packed (pa: paddedRows(M) x Kp2, see above); packs B and
// multiplies. g.A is not read. Arguments already checked, M, N, K > 0.
void multiplyAvx512(const std::uint32_t* pa, std::size_t Kp2, const GemmBf16Args& g);
void multiplyAmx(const std::uint32_t* pa, std::size_t Kp2, const GemmBf16Args& g);
// The kernels alone, on packed A and packed B (pb: ceil(N/16) panels of Kp2 x 16 pairs).
void kernelAvx512(const std::uint32_t* pa, const std::uint32_t* pb, std::size_t Kp2, std::size_t M, std::size_t N, float* C,
                  std::size_t ldc, bool accumulate);
void kernelAmx(const std::uint32_t* pa, const std::uint32_t* pb, std::size_t Kp2, std::size_t M, std::size_t N, float* C,
               std::size_t ldc, bool accumulate);

// Per-thread packing buffers of at least n uint32 (64-byte aligned).
std::uint32_t* scratchA(std::size_t n);
std::uint32_t* scratchB(std::size_t n);

} // namespace quantscope::bf16detail
