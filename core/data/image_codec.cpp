#include "data/image_codec.h"

#include "util/ascii_text.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <png.h>
// jpeglib.h needs size_t and FILE declared first.
#include <cstdio>
#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace quantscope {

namespace {

enum class Kind { Png, Jpeg };

Kind sniff(const std::vector<std::uint8_t>& b, const std::string& path)
{
    static const std::uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (b.size() >= 8 && std::memcmp(b.data(), png, 8) == 0) return Kind::Png;
    if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return Kind::Jpeg;
    throw FormatError(path + ": not a PNG or JPEG image (the first bytes are neither signature)");
}

void checkSize(const std::string& path, std::size_t w, std::size_t h)
{
    if (w == 0 || h == 0 || w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels)
        throw FormatError(path + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                          " pixels; accepted are 1 to " + std::to_string(kMaxImageSide) + " per side and at most " +
                          std::to_string(kMaxImagePixels) + " pixels");
}

// ---- PNG: libpng's reading API with no gamma handling, as PIL and torchvision read PNGs: the
// stored 8-bit values as they are (a gAMA chunk is ignored), 16-bit samples scaled to 8 bits
// (round(v / 257)), palettes and low bit depths expanded. (The simplified png_image API treated
// 16-bit data as linear light and gamma-encoded it, honoured gAMA, and composed alpha in linear
// light: 163 stored as 16 bits read as 208.) libpng reports errors through the error callback,
// which must not return: it longjmps back into pngDecodeRaw, whose frame holds plain data only.

struct PngSource {
    const std::uint8_t* data;
    std::size_t size, pos;
};

struct PngError {
    std::jmp_buf jump;
    char message[256];
};

void pngReadFromMemory(png_structp png, png_bytep out, png_size_t n)
{
    auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
    if (n > src->size - src->pos) png_error(png, "the file ends early (truncated)");
    std::memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

void pngErrorExit(png_structp png, png_const_charp msg)
{
    auto* e = static_cast<PngError*>(png_get_error_ptr(png));
    std::snprintf(e->message, sizeof e->message, "%s", msg);
    std::longjmp(e->jump, 1);
}

void pngWarning(png_structp, png_const_charp) {} // benign (an ancillary chunk); data errors are errors

// What pngDecodeRaw hands back: the header, and with decode the 8-bit samples (malloc'd; the
// caller frees them) of `channels` per pixel: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
struct PngPixels {
    ImageInfo info;
    std::uint8_t* samples = nullptr;
    int channels = 0;
};

bool pngDecodeRaw(const std::uint8_t* data, std::size_t size, bool decode, PngPixels* out, char* message)
{
    PngError err;
    err.message[0] = '\0';
    PngSource src{data, size, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, pngErrorExit, pngWarning);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    png_bytep* volatile rows = nullptr; // set after setjmp: volatile, so the error path sees it
    if (!info) {
        png_destroy_read_struct(&png, nullptr, nullptr);
        std::snprintf(message, 256, "out of memory");
        return false;
    }
    if (setjmp(err.jump)) {
        std::free(out->samples);
        out->samples = nullptr;
        std::free(rows);
        png_destroy_read_struct(&png, &info, nullptr);
        std::memcpy(message, err.message, sizeof err.message);
        return false;
    }
    png_set_read_fn(png, &src, pngReadFromMemory);
    png_read_info(png, info);
    const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    const int colorType = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    out->info = ImageInfo{w, h, (colorType & PNG_COLOR_MASK_COLOR) ? std::size_t{3} : std::size_t{1}};
    if (decode) {
        if (colorType == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (colorType == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
        if (depth == 16) png_set_scale_16(png);
        png_set_interlace_handling(png);
        png_read_update_info(png, info);
        out->channels = png_get_channels(png, info);
        const std::size_t stride = png_get_rowbytes(png, info);
        if (stride != static_cast<std::size_t>(w) * static_cast<std::size_t>(out->channels)) png_error(png, "unexpected row layout");
        out->samples = static_cast<std::uint8_t*>(std::malloc(stride * h));
        rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * h));
        if (!out->samples || !rows) png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < h; ++y) rows[y] = out->samples + y * stride;
        png_read_image(png, rows);
        png_read_end(png, nullptr);
    }
    std::free(rows);
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
}

ImageInfo pngDecode(const std::vector<std::uint8_t>& bytes, const std::string& path, std::size_t channels,
                    std::vector<std::uint8_t>* out)
{
    char message[256] = {};
    PngPixels px;
    if (!pngDecodeRaw(bytes.data(), bytes.size(), false, &px, message))
        throw FormatError(path + ": cannot read the PNG header (" + message + ")");
    checkSize(path, px.info.width, px.info.height);
    if (!out) return px.info;
    if (!pngDecodeRaw(bytes.data(), bytes.size(), true, &px, message))
        throw FormatError(path + ": the PNG fails to decode (" + message + ")");
    const std::unique_ptr<std::uint8_t, decltype(&std::free)> samples(px.samples, &std::free);
    // Alpha composed over black (v a / 255, rounded, on the stored values); colour to gray with
    // ITU-R BT.601 luma as PIL's convert("L") computes it; gray replicated to RGB.
    const int src = px.channels;
    const bool colour = src >= 3, alpha = src == 2 || src == 4;
    const std::size_t n = px.info.width * px.info.height;
    out->assign(n * channels, 0);
    const std::uint8_t* in = px.samples;
    std::uint8_t* o = out->data();
    for (std::size_t i = 0; i < n; ++i, in += src) {
        std::uint32_t r = in[0], g = colour ? in[1] : in[0], b = colour ? in[2] : in[0];
        if (alpha) {
            const std::uint32_t a = in[src - 1];
            r = (r * a + 127) / 255;
            g = (g * a + 127) / 255;
            b = (b * a + 127) / 255;
        }
        if (channels == 3) {
            o[3 * i] = static_cast<std::uint8_t>(r);
            o[3 * i + 1] = static_cast<std::uint8_t>(g);
            o[3 * i + 2] = static_cast<std::uint8_t>(b);
        } else {
            o[i] = colour ? static_cast<std::uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) : static_cast<std::uint8_t>(r);
        }
    }
    return px.info;
}

// ---- JPEG: libjpeg reports errors through error_exit, which must not return; it longjmps back
// here. Between setjmp and any longjmp only plain data lives in jpegDecodeRaw's frame. ----

struct JpegError {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void jpegErrorExit(j_common_ptr c)
{
    auto* e = reinterpret_cast<JpegError*>(c->err);
    (*c->err->format_message)(c, e->message);
    std::longjmp(e->jump, 1);
}

// Warnings (corrupt or truncated data, which libjpeg fills with grey) are kept, not printed;
// the caller treats any as a decode failure.
void jpegOutputMessage(j_common_ptr c)
{
    auto* e = reinterpret_cast<JpegError*>(c->err);
    (*c->err->format_message)(c, e->message);
}

enum class JpegStatus { Ok, Error, TooLarge, Warning };

// cmykRow: a buffer of 4 * width bytes for a CMYK file's rows (null: header only, or not CMYK).
JpegStatus jpegDecodeRaw(const std::uint8_t* data, std::size_t size, std::size_t channels, std::uint8_t* dst,
                         std::size_t dstSize, ImageInfo* info, char* message, std::uint8_t* cmykRow = nullptr)
{
    jpeg_decompress_struct cinfo;
    JpegError err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpegErrorExit;
    err.pub.output_message = jpegOutputMessage;
    err.message[0] = '\0';
    if (setjmp(err.jump)) {
        std::memcpy(message, err.message, JMSG_LENGTH_MAX);
        jpeg_destroy_decompress(&cinfo);
        return JpegStatus::Error;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&cinfo, TRUE);
    info->width = cinfo.image_width;
    info->height = cinfo.image_height;
    info->channels = cinfo.num_components == 1 ? 1 : 3;
    const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    if (!dst) {
        jpeg_destroy_decompress(&cinfo);
        return JpegStatus::Ok;
    }
    if (info->width * info->height * channels != dstSize || (cmyk && !cmykRow)) {
        jpeg_destroy_decompress(&cinfo);
        return JpegStatus::TooLarge;
    }
    cinfo.out_color_space = cmyk ? JCS_CMYK : channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo);
    const std::size_t stride = info->width * channels;
    // CMYK (print) JPEGs to RGB as PIL's convert("RGB") does: Adobe's files store the inks
    // inverted; r = (255 - c)(255 - k) / 255 with PIL's rounding; gray from that RGB by BT.601.
    const bool inverted = cmyk && cinfo.saw_Adobe_marker;
    const auto mulDiv255 = [](unsigned a, unsigned b) {
        const unsigned t = a * b + 128;
        return ((t >> 8) + t) >> 8;
    };
    while (cinfo.output_scanline < cinfo.output_height) {
        std::uint8_t* out = dst + static_cast<std::size_t>(cinfo.output_scanline) * stride;
        JSAMPROW row = cmyk ? cmykRow : out;
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (!cmyk) continue;
        for (std::size_t x = 0; x < info->width; ++x) {
            unsigned ink[4];
            for (int k = 0; k < 4; ++k) ink[k] = inverted ? 255u - cmykRow[4 * x + k] : cmykRow[4 * x + k];
            const unsigned nk = 255u - ink[3];
            const unsigned r = nk - mulDiv255(ink[0], nk), g = nk - mulDiv255(ink[1], nk), b = nk - mulDiv255(ink[2], nk);
            if (channels == 3) {
                out[3 * x] = static_cast<std::uint8_t>(r);
                out[3 * x + 1] = static_cast<std::uint8_t>(g);
                out[3 * x + 2] = static_cast<std::uint8_t>(b);
            } else {
                out[x] = static_cast<std::uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    const bool warned = err.pub.num_warnings > 0;
    if (warned) std::memcpy(message, err.message, JMSG_LENGTH_MAX);
    jpeg_destroy_decompress(&cinfo);
    return warned ? JpegStatus::Warning : JpegStatus::Ok;
}

ImageInfo jpegDecode(const std::vector<std::uint8_t>& bytes, const std::string& path, std::size_t channels,
                     std::vector<std::uint8_t>* out)
{
    char message[JMSG_LENGTH_MAX] = {};
    ImageInfo info;
    auto fail = [&](JpegStatus s) {
        if (s != JpegStatus::Ok) throw FormatError(path + ": the JPEG fails to decode (" + std::string(message) + ")");
    };
    fail(jpegDecodeRaw(bytes.data(), bytes.size(), channels, nullptr, 0, &info, message));
    checkSize(path, info.width, info.height);
    if (!out) return info;
    out->assign(info.width * info.height * channels, 0);
    std::vector<std::uint8_t> cmykRow(4 * info.width);
    fail(jpegDecodeRaw(bytes.data(), bytes.size(), channels, out->data(), out->size(), &info, message, cmykRow.data()));
    return info;
}

void checkWritable(const std::string& path, std::size_t w, std::size_t h, std::size_t c)
{
    if (c != 1 && c != 3) throw ConfigError(path + ": images are written with 1 or 3 channels, not " + std::to_string(c));
    if (w == 0 || h == 0 || w > kMaxImageSide || h > kMaxImageSide)
        throw ConfigError(path + ": cannot write a " + std::to_string(w) + "x" + std::to_string(h) + " image");
}

} // namespace

bool isImageFileName(const std::string& path)
{
    const auto dot = path.rfind('.');
    if (dot == std::string::npos) return false;
    const std::string ext = asciiLower(path.substr(dot + 1));
    return ext == "png" || ext == "jpg" || ext == "jpeg";
}

ImageInfo readImageInfo(const std::string& path)
{
    const std::vector<std::uint8_t> bytes = readFileBytes(path, kMaxImageFileBytes);
    return sniff(bytes, path) == Kind::Png ? pngDecode(bytes, path, 0, nullptr) : jpegDecode(bytes, path, 0, nullptr);
}

std::vector<std::uint8_t> decodeImage(const std::string& path, std::size_t channels, ImageInfo* info)
{
    if (channels != 1 && channels != 3) throw ConfigError(path + ": images decode to 1 or 3 channels");
    const std::vector<std::uint8_t> bytes = readFileBytes(path, kMaxImageFileBytes);
    std::vector<std::uint8_t> out;
    const ImageInfo i = sniff(bytes, path) == Kind::Png ? pngDecode(bytes, path, channels, &out)
                                                        : jpegDecode(bytes, path, channels, &out);
    if (info) *info = i;
    return out;
}

void writePng(const std::string& path, const std::uint8_t* pixels, std::size_t width, std::size_t height,
              std::size_t channels)
{
    checkWritable(path, width, height, channels);
    png_image im;
    std::memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = static_cast<png_uint_32>(width);
    im.height = static_cast<png_uint_32>(height);
    im.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&im, nullptr, &size, 0, pixels, 0, nullptr))
        throw IoError(path + ": libpng cannot encode the image (" + std::string(im.message) + ")");
    std::vector<std::uint8_t> bytes(size);
    if (!png_image_write_to_memory(&im, bytes.data(), &size, 0, pixels, 0, nullptr))
        throw IoError(path + ": libpng cannot encode the image (" + std::string(im.message) + ")");
    bytes.resize(size);
    writeFileAtomic(path, bytes);
}

void writeJpeg(const std::string& path, const std::uint8_t* pixels, std::size_t width, std::size_t height,
               std::size_t channels, int quality)
{
    checkWritable(path, width, height, channels);
    jpeg_compress_struct cinfo;
    JpegError err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpegErrorExit;
    err.pub.output_message = jpegOutputMessage;
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&cinfo);
        std::free(buffer);
        throw IoError(path + ": libjpeg cannot encode the image (" + std::string(err.message) + ")");
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buffer, &size);
    cinfo.image_width = static_cast<JDIMENSION>(width);
    cinfo.image_height = static_cast<JDIMENSION>(height);
    cinfo.input_components = static_cast<int>(channels);
    cinfo.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, std::clamp(quality, 1, 100), TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    const std::size_t stride = width * channels;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = const_cast<JSAMPROW>(pixels + static_cast<std::size_t>(cinfo.next_scanline) * stride);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    std::vector<std::uint8_t> bytes(buffer, buffer + size);
    std::free(buffer);
    writeFileAtomic(path, bytes);
}

} // namespace quantscope
