// Shared by the dataset tests (tst_datasets, tst_image_folders): synthetic images whose pixels
// are a function of (image, channel, y, x), written as PNG/JPEG/CIFAR records, error capture by
// type, and the tolerances of the JPEG round trip.
#pragma once

#include "caught_error.h"

#include "data/image_codec.h"
#include "util/errors.h"

#include <QString>

#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace dataset_fixtures {

using namespace quantscope;
namespace fs = std::filesystem;

using Bytes = std::vector<std::uint8_t>;

constexpr std::size_t kSmallAllocation = 1u << 20; // reading a hostile header of a few bytes
constexpr double kBatchMomentTol = 1e-4;
constexpr int kJpegTol = 12; // JPEG at quality 95 of smooth 8x8 images: per-pixel error bound

using quantscope::testing::Caught; // caught_error.h
using quantscope::testing::catchError;

inline void writeBytes(const std::string& path, const Bytes& b)
{
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline void writeText(const std::string& path, const std::string& text)
{
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::trunc) << text;
}

// Pixel (c, y, x) of image i: a smooth pattern that differs per image, channel and class.
inline std::uint8_t pixelOf(std::size_t i, std::size_t c, std::size_t y, std::size_t x)
{
    return static_cast<std::uint8_t>((i * 37 + c * 80 + y * 5 + x * 3) % 256);
}

// Planar (C, H, W) bytes of image i.
inline Bytes planar(std::size_t i, std::size_t C, std::size_t H, std::size_t W)
{
    Bytes b(C * H * W);
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t y = 0; y < H; ++y)
            for (std::size_t x = 0; x < W; ++x) b[(c * H + y) * W + x] = pixelOf(i, c, y, x);
    return b;
}

// CIFAR records: [label] (or [coarse, fine]) then 3x32x32 planar.
inline Bytes cifarRecords(std::size_t first, std::size_t n, std::size_t classes, bool hundred)
{
    Bytes out;
    for (std::size_t i = first; i < first + n; ++i) {
        if (hundred) out.push_back(static_cast<std::uint8_t>(i % 20));
        out.push_back(static_cast<std::uint8_t>(i % classes));
        const Bytes px = planar(i, 3, 32, 32);
        out.insert(out.end(), px.begin(), px.end());
    }
    return out;
}

// A CSV of n rows, label i % classes, then C*H*W pixels (planar).
std::string csvText(std::size_t first, std::size_t n, std::size_t classes, std::size_t C, std::size_t H,
                    std::size_t W, bool header = true, bool labelled = true)
{
    std::string s;
    if (header) {
        if (labelled) s += "label";
        for (std::size_t p = 0; p < C * H * W; ++p) s += (p || labelled ? "," : "") + ("pixel" + std::to_string(p));
        s += "\n";
    }
    for (std::size_t i = first; i < first + n; ++i) {
        if (labelled) s += std::to_string(i % classes);
        const Bytes px = planar(i, C, H, W);
        for (std::size_t p = 0; p < px.size(); ++p) s += (p || labelled ? "," : "") + std::to_string(px[p]);
        s += "\r\n"; // Windows line ends are read too
    }
    return s;
}

// Interleaved (H, W, C) bytes of image i, for the image writers.
inline Bytes interleaved(std::size_t i, std::size_t C, std::size_t H, std::size_t W)
{
    const Bytes p = planar(i, C, H, W);
    Bytes out(p.size());
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t k = 0; k < H * W; ++k) out[k * C + c] = p[c * H * W + k];
    return out;
}

inline void writeImage(const std::string& path, std::size_t i, std::size_t C, std::size_t H, std::size_t W)
{
    fs::create_directories(fs::path(path).parent_path());
    const Bytes px = interleaved(i, C, H, W);
    if (path.ends_with(".png")) writePng(path, px.data(), W, H, C);
    else writeJpeg(path, px.data(), W, H, C, 95);
}

// root/<split>/<class>/img<i>.<ext>: n images per class, ids from `first`.
inline void writeImageTree(const std::string& root, const std::vector<std::string>& classes, std::size_t n, std::size_t first,
                    const char* ext, std::size_t C, std::size_t H, std::size_t W)
{
    for (std::size_t c = 0; c < classes.size(); ++c)
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = first + c * n + k;
            writeImage(root + "/" + classes[c] + "/img" + std::to_string(i) + ext, i, C, H, W);
        }
}

inline std::uint32_t be(std::uint32_t v) { return ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24); }

// A PNG whose IHDR claims w x h (valid CRCs), with a little IDAT: the header is read, not the data.
inline Bytes pngWithHeader(std::uint32_t w, std::uint32_t h)
{
    Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    auto chunk = [&](const char* type, const Bytes& data) {
        const std::uint32_t len = be(static_cast<std::uint32_t>(data.size()));
        b.insert(b.end(), reinterpret_cast<const std::uint8_t*>(&len), reinterpret_cast<const std::uint8_t*>(&len) + 4);
        Bytes body(type, type + 4);
        body.insert(body.end(), data.begin(), data.end());
        b.insert(b.end(), body.begin(), body.end());
        const std::uint32_t crc = be(static_cast<std::uint32_t>(crc32(0, body.data(), static_cast<uInt>(body.size()))));
        b.insert(b.end(), reinterpret_cast<const std::uint8_t*>(&crc), reinterpret_cast<const std::uint8_t*>(&crc) + 4);
    };
    Bytes ihdr(13, 0);
    const std::uint32_t bw = be(w), bh = be(h);
    std::memcpy(ihdr.data(), &bw, 4);
    std::memcpy(ihdr.data() + 4, &bh, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // RGB
    chunk("IHDR", ihdr);
    chunk("IDAT", Bytes{0x78, 0x9c, 0x03, 0x00});
    chunk("IEND", {});
    return b;
}

inline const std::vector<std::string> kClasses3 = {"cat", "dog", "eel"};

} // namespace dataset_fixtures
