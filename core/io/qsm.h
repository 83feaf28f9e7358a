// The native QuantScope model file (.qsm), documented byte for byte in docs/FORMAT.md: a
// 32-byte header (magic, version, payload size, CRC-32 of the payload) and a little-endian
// payload describing an ExportedModel (FP32 or integer, int2/int4 packed 4/2 to a byte).
#pragma once

#include "io/exported_model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

inline constexpr std::uint8_t kQsmMagic[8] = {0x89, 'Q', 'S', 'M', '\r', '\n', 0x1A, '\n'};
inline constexpr std::uint16_t kQsmVersion = 6; // versions 1 to 5 still load
inline constexpr std::size_t kQsmHeaderSize = 32;
// Largest file the reader accepts (a seed-cnn FP32 model is about 4.8 MB).
inline constexpr std::uint64_t kQsmMaxBytes = std::uint64_t{1} << 30;

// Serialises `m` (validated first; throws ConfigError if it is not a consistent model).
std::vector<std::uint8_t> encodeQsm(const ExportedModel& m);
// Writes atomically (temporary file in the same folder, then rename). Throws IoError, or
// ConfigError("<path>: ...") for a model encodeQsm refuses (a name past 1024 bytes: which one).
void writeQsm(const std::string& path, const ExportedModel& m);
// The names a .qsm stores, checked before a run whose export they would fail (a class name of
// classes.txt past the 1,024 bytes of docs/FORMAT.md, after training, was tester 22's case).
// Throws ConfigError("<path>: class 3's name ('...', 2000 bytes) is longer than ...").
void checkQsmNames(const std::string& path, const std::string& modelName, const std::vector<std::string>& classNames,
                   const std::vector<std::string>& layerNames);

// Parses and validates a whole file image. Every count and size is checked against the bytes
// that remain before anything is allocated from it. Throws FormatError("<source>: ...").
ExportedModel decodeQsm(const std::vector<std::uint8_t>& bytes, const std::string& source);
// Reads a file: IoError when it cannot be read, FormatError when it is not a valid model.
ExportedModel readQsm(const std::string& path);

// Bytes needed for n integers of `bits` bits. Version 5 packs every width as one little-endian
// bit stream, ceil(n * bits / 8) bytes (int3: 8 values in 3 bytes). Versions 1-4 packed 2 and 4
// bits, and stored other widths up to 8 in a byte, 9..16 in two bytes, 32 in four.
std::uint64_t packedBytes(std::uint64_t n, int bits, std::uint16_t version = kQsmVersion);
void packInts(const std::vector<std::int32_t>& q, int bits, std::vector<std::uint8_t>& out); // as version 5
// Unpacks n values written by `version`; signed values are sign-extended from their width.
void unpackInts(const std::uint8_t* data, std::size_t n, int bits, bool isSigned, std::vector<std::int32_t>& q,
                std::uint16_t version = kQsmVersion);

} // namespace quantscope
