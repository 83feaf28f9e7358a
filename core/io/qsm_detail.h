// What the .qsm writer (qsm.cpp) and reader (qsm_read.cpp) share: the format's bounds and flags
// (docs/FORMAT.md) and its UTF-8 and CRC-32 checks. Internal to core/io.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace quantscope::qsm_detail {

inline constexpr std::size_t kMaxString = 1024;
inline constexpr std::size_t kMaxClassNames = 65536;
inline constexpr std::size_t kMaxLayers = 1024;
inline constexpr std::size_t kMaxRank = 4;
inline constexpr std::uint8_t kTensorZeroPointsZero = 1; // tensor flag (version 5): no zero points stored, all 0
inline constexpr std::uint64_t kMaxElements = std::uint64_t{1} << 31;

// The length of the longest prefix of `s` that is UTF-8 as RFC 3629 allows it (no overlong
// forms, no surrogates, nothing above U+10FFFF): s.size() when all of it is.
std::size_t utf8Length(const std::string& s);
// zlib's CRC-32 of n bytes (any n, fed to zlib in chunks of at most 1 GiB).
std::uint32_t crc32Of(const std::uint8_t* p, std::size_t n);

} // namespace quantscope::qsm_detail
