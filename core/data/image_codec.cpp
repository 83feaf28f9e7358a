#include "data/image_codec.h"

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

// ---- PNG (simplified API: it reports errors in image.message, never longjmps into our code) ----

ImageInfo pngDecode(const std::vector<std::uint8_t>& bytes, const std::string& path, std::size_t channels,
                    std::vector<std::uint8_t>* out)
{
    png_image im;
    std::memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, bytes.data(), bytes.size()))
        throw FormatError(path + ": cannot read the PNG header (" + im.message + ")");
    ImageInfo info{im.width, im.height, (im.format & PNG_FORMAT_FLAG_COLOR) ? std::size_t{3} : std::size_t{1}};
    try {
        checkSize(path, info.width, info.height);
    } catch (...) {
        png_image_free(&im);
        throw;
    }
    if (!out) {
        png_image_free(&im);
        return info;
    }
    im.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    out->assign(PNG_IMAGE_SIZE(im), 0);
    png_color black{0, 0, 0};
    if (!png_image_finish_read(&im, &black, out->data(), 0, nullptr)) {
        const std::string msg = im.message;
        png_image_free(&im);
        throw FormatError(path + ": the PNG fails to decode (" + msg + ")");
    }
    if (im.warning_or_error & PNG_IMAGE_ERROR)
        throw FormatError(path + ": the PNG fails to decode (" + std::string(im.message) + ")");
    return info;
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

enum class JpegStatus { Ok, Error, Cmyk, TooLarge, Warning };

JpegStatus jpegDecodeRaw(const std::uint8_t* data, std::size_t size, std::size_t channels, std::uint8_t* dst,
                         std::size_t dstSize, ImageInfo* info, char* message)
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
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return JpegStatus::Cmyk;
    }
    if (!dst) {
        jpeg_destroy_decompress(&cinfo);
        return JpegStatus::Ok;
    }
    if (info->width * info->height * channels != dstSize) {
        jpeg_destroy_decompress(&cinfo);
        return JpegStatus::TooLarge;
    }
    cinfo.out_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo);
    const std::size_t stride = info->width * channels;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = dst + static_cast<std::size_t>(cinfo.output_scanline) * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
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
        if (s == JpegStatus::Cmyk) throw FormatError(path + ": CMYK JPEGs are not supported (save it as RGB)");
        if (s != JpegStatus::Ok) throw FormatError(path + ": the JPEG fails to decode (" + std::string(message) + ")");
    };
    fail(jpegDecodeRaw(bytes.data(), bytes.size(), channels, nullptr, 0, &info, message));
    checkSize(path, info.width, info.height);
    if (!out) return info;
    out->assign(info.width * info.height * channels, 0);
    fail(jpegDecodeRaw(bytes.data(), bytes.size(), channels, out->data(), out->size(), &info, message));
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
    std::string ext = path.substr(dot + 1);
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
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
