// B operand of a convolution's product read in place from the direct kernels' runs
// (nn/conv2d_direct.cpp): `groups` runs of a few interleaved channels (four int8 codes or two bf16
// values per dword), groupStride bytes apart, each read at `taps` shifted offsets. K-group
// g = tap * groups + cg is the row of dwords at base + cg * groupStride + tapOffset[tap]; its
// dword l is column l. Rows of one tap are groupStride apart, as an AMX tile load wants them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace quantscope {

struct ConvRuns {
    const std::uint8_t* base = nullptr;
    std::size_t groupStride = 0;            // bytes between channel groups' runs (a multiple of 4)
    const std::size_t* tapOffset = nullptr; // taps entries, bytes (multiples of 4)
    std::size_t taps = 0, groups = 0;       // K-groups = taps * groups

    const std::uint8_t* row(std::size_t g) const { return base + (g % groups) * groupStride + tapOffset[g / groups]; }
};

// Bytes every row must stay readable past its 4 L bytes (the AMX paths load whole 16-column tiles).
constexpr std::size_t kRunsRowSlack = 128;

} // namespace quantscope
