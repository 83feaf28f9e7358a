// IDX reader (the MNIST file format): idx1 label files and idx3 image files, plain or gzip.
// Every header field is checked against the real payload size before anything is allocated
// from it, so a corrupt or hostile header cannot cause a huge allocation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

struct IdxArray {
    std::vector<std::uint32_t> dims; // e.g. {60000, 28, 28}
    std::vector<std::uint8_t> data;  // row-major, unsigned bytes
};

// Largest decompressed file we accept (the full MNIST train images are 47 MB).
inline constexpr std::uint64_t kIdxMaxBytes = 1ull << 31;

// Reads the whole file (inflating it if it starts with the gzip magic or ends in ".gz"). Inflation
// stops at the size an IDX header gives (a longer stream is "trailing data") or, when the first
// bytes are no IDX header of bytes, after them (parseIdx then says what is wrong).
// Throws IoError (missing/unreadable) or FormatError (not gzip, truncated, bad header...).
std::vector<std::uint8_t> readFileMaybeGzip(const std::string& path, std::uint64_t maxBytes = kIdxMaxBytes);

// Parses an IDX byte buffer of unsigned bytes (type 0x08). `expectedRank` 0 = any.
// `path` is only used in error messages.
IdxArray parseIdx(const std::vector<std::uint8_t>& bytes, const std::string& path, std::size_t expectedRank = 0);

// idx3 images: (count, rows, cols).
IdxArray readIdxImages(const std::string& path);
// idx1 labels: (count); every label must be < numClasses.
IdxArray readIdxLabels(const std::string& path, std::size_t numClasses = 10);

// Writes an IDX file of unsigned bytes atomically (temporary file, then rename); gzip when
// the path ends in ".gz". Used by tests, scripts and fixtures.
void writeIdx(const std::string& path, const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data);

} // namespace quantscope
