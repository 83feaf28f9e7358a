// PNG and JPEG files through libpng and libjpeg-turbo: the header
// (size, grayscale or colour) without decoding, a decode to 8-bit grayscale or RGB, and the
// writers that tests and the demo-data tool use. No decoder is written here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace quantscope {

// Largest image accepted, per side and in pixels, checked from the header before decoding.
inline constexpr std::size_t kMaxImageSide = 16384;
inline constexpr std::size_t kMaxImagePixels = std::size_t{1} << 26; // 64 Mpixel
// Largest image file read into memory (JPEG is decoded from memory).
inline constexpr std::uint64_t kMaxImageFileBytes = std::uint64_t{1} << 28;

struct ImageInfo {
    std::size_t width = 0, height = 0;
    std::size_t channels = 0; // 1 (grayscale) or 3 (colour); alpha and palettes are folded into these
};

// True for names ending in .png, .jpg or .jpeg (any case).
bool isImageFileName(const std::string& path);

// Reads only the header. Throws IoError (unreadable) or FormatError naming the file (not a PNG/JPEG,
// corrupt header, an image larger than kMaxImageSide / kMaxImagePixels).
ImageInfo readImageInfo(const std::string& path);

// Decodes to interleaved (H, W, channels) bytes, channels 1 or 3 as asked, with the stored values
// as PIL and torchvision read them (no gamma correction; 16-bit PNG samples scaled to 8 bits as
// round(v / 257)): colour images are converted to grayscale (ITU-R BT.601 luma, as PIL's
// convert("L") and JPEG's Y) and grayscale replicated to RGB. Transparent PNGs are composed over
// black (v * alpha / 255); CMYK JPEGs are converted to RGB as PIL's convert("RGB") does. Throws
// FormatError naming the file when the data is corrupt or truncated.
std::vector<std::uint8_t> decodeImage(const std::string& path, std::size_t channels, ImageInfo* info = nullptr);

// Writers of interleaved (H, W, channels) bytes, channels 1 or 3, written atomically.
// Throws IoError / ConfigError.
void writePng(const std::string& path, const std::uint8_t* pixels, std::size_t width, std::size_t height,
              std::size_t channels);
void writeJpeg(const std::string& path, const std::uint8_t* pixels, std::size_t width, std::size_t height,
               std::size_t channels, int quality = 92);

} // namespace quantscope
