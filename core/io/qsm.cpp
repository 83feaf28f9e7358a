#include "io/qsm.h"

#include "io/qsm_detail.h"

#include "util/atomic_file.h"
#include "util/errors.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace quantscope {

using namespace qsm_detail;

static_assert(std::endian::native == std::endian::little, "the .qsm reader/writer assume a little-endian host");
// The layer kind codes of docs/FORMAT.md are LayerKind's values; a reordering would break files.
static_assert(static_cast<int>(LayerKind::Conv2d) == 0 && static_cast<int>(LayerKind::BatchNorm2d) == 1 &&
              static_cast<int>(LayerKind::ReLU) == 2 && static_cast<int>(LayerKind::MaxPool2d) == 3 &&
              static_cast<int>(LayerKind::Dropout) == 4 && static_cast<int>(LayerKind::Flatten) == 5 &&
              static_cast<int>(LayerKind::Linear) == 6 && static_cast<int>(LayerKind::LogSoftmax) == 7 &&
              static_cast<int>(LayerKind::Add) == 8 && static_cast<int>(LayerKind::GlobalAvgPool2d) == 9 &&
              static_cast<int>(LayerKind::AvgPool2d) == 10 && static_cast<int>(LayerKind::ReLU6) == 11 &&
              static_cast<int>(LayerKind::Softmax) == 12 && static_cast<int>(LayerKind::Sigmoid) == 13 &&
              static_cast<int>(LayerKind::Tanh) == 14 && static_cast<int>(LayerKind::SiLU) == 15 &&
              static_cast<int>(LayerKind::Hardsigmoid) == 16 && static_cast<int>(LayerKind::Hardswish) == 17 &&
              static_cast<int>(LayerKind::LeakyReLU) == 18 && static_cast<int>(LayerKind::ELU) == 19 &&
              static_cast<int>(LayerKind::GELU) == 20 && static_cast<int>(LayerKind::Mul) == 21 &&
              static_cast<int>(LayerKind::Concat) == 22 && static_cast<int>(LayerKind::PReLU) == 23 &&
              static_cast<int>(LayerKind::GELUTanh) == 24 && static_cast<int>(LayerKind::Hardtanh) == 25 &&
              static_cast<int>(LayerKind::ChannelShuffle) == 26 && static_cast<int>(LayerKind::Slice) == 27 &&
              static_cast<int>(LayerKind::GroupNorm) == 28 && static_cast<int>(LayerKind::Softplus) == 29 &&
              static_cast<int>(LayerKind::Mish) == 30 && static_cast<int>(LayerKind::Pad) == 31 &&
              static_cast<int>(LayerKind::SELU) == 32 && static_cast<int>(LayerKind::CELU) == 33 &&
              static_cast<int>(LayerKind::Softsign) == 34 &&
              static_cast<int>(LayerKind::LayerNorm2d) == 35 && static_cast<int>(LayerKind::ChannelMax) == 36);

namespace {

// `s` with every byte that is not part of valid UTF-8 replaced by U+FFFD: what the writer stores
// (a class folder named in Latin-1 would make a file the reader refuses).
std::string validUtf8(std::string s)
{
    for (std::size_t i = utf8Length(s); i < s.size(); i = utf8Length(s)) s.replace(i, 1, "\xEF\xBF\xBD");
    return s;
}

// What the writer stores for `text`, or ConfigError naming `what` when it is past kMaxString.
std::string storedString(const std::string& text, const std::string& what)
{
    std::string s = validUtf8(text);
    if (s.size() > kMaxString)
        throw ConfigError(what + " ('" + s.substr(0, 40) + "...', " + std::to_string(s.size()) + " bytes) is longer than the " +
                          std::to_string(kMaxString) + " bytes a .qsm file stores for a name");
    return s;
}

// ---------------------------------------------------------------- writing
class Writer {
public:
    std::vector<std::uint8_t> bytes;
    template <typename T>
    void put(T v)
    {
        const std::size_t at = bytes.size();
        bytes.resize(at + sizeof(T));
        std::memcpy(bytes.data() + at, &v, sizeof(T));
    }
    void u8(std::uint64_t v) { put(static_cast<std::uint8_t>(v)); }
    void u16(std::uint64_t v) { put(static_cast<std::uint16_t>(v)); }
    void u32(std::uint64_t v) { put(static_cast<std::uint32_t>(v)); }
    void u64(std::uint64_t v) { put(static_cast<std::uint64_t>(v)); }
    void i32(std::int32_t v) { put(v); }
    void f32(float v) { put(v); }
    void str(const std::string& text, const std::string& what)
    {
        const std::string s = storedString(text, what);
        u16(s.size());
        raw(s.data(), s.size());
    }
    void raw(const void* p, std::size_t n)
    {
        const std::size_t at = bytes.size();
        bytes.resize(at + n);
        if (n) std::memcpy(bytes.data() + at, p, n);
    }
};

void putActivation(Writer& w, const ActivationQuant& a)
{
    w.u8(a.bits);
    w.u8(a.isSigned ? 1 : 0);
    w.u16(0);
    w.i32(a.qmin);
    w.i32(a.qmax);
    w.f32(a.scale);
    w.i32(a.zeroPoint);
}

void putTensor(Writer& w, const StoredTensor& t)
{
    w.str(t.name, "tensor name");
    w.u8(t.shape.size());
    for (std::size_t d : t.shape) w.u32(d);
    w.u8(static_cast<std::uint8_t>(t.encoding));
    if (t.encoding == TensorEncoding::Float32) {
        w.u64(t.values.size() * 4);
        w.raw(t.values.data(), t.values.size() * 4);
        return;
    }
    w.u8(t.bits);
    w.u8(t.isSigned ? 1 : 0);
    w.u8(static_cast<std::uint8_t>(t.layout));
    // Version 5: flag bit 0 says every zero point is 0 (symmetric formats) and none is stored.
    const bool zeroPointsZero = std::all_of(t.zeroPoints.begin(), t.zeroPoints.end(), [](std::int32_t z) { return z == 0; });
    w.u8(zeroPointsZero ? kTensorZeroPointsZero : 0);
    w.i32(t.qmin);
    w.i32(t.qmax);
    w.u32(t.layout == ScaleLayout::Group ? t.groupSize : 0);
    w.u32(t.scales.size());
    w.raw(t.scales.data(), t.scales.size() * 4);
    if (!zeroPointsZero) w.raw(t.zeroPoints.data(), t.zeroPoints.size() * 4);
    std::vector<std::uint8_t> packed;
    packInts(t.q, t.bits, packed);
    w.u64(packed.size());
    w.raw(packed.data(), packed.size());
}

} // namespace

std::uint64_t packedBytes(std::uint64_t n, int bits, std::uint16_t version)
{
    if (version >= 5) return (n * static_cast<std::uint64_t>(bits) + 7) / 8;
    if (bits == 2) return (n + 3) / 4;
    if (bits == 4) return (n + 1) / 2;
    if (bits <= 8) return n;
    if (bits <= 16) return 2 * n;
    return 4 * n;
}

// Version 5: value i in bits [i * bits, (i + 1) * bits) of a little-endian bit stream (the low
// bits first). For 2, 4, 8, 16 and 32 bits this is the layout versions 1-4 wrote.
void packInts(const std::vector<std::int32_t>& q, int bits, std::vector<std::uint8_t>& out)
{
    const std::size_t n = q.size();
    out.assign(static_cast<std::size_t>(packedBytes(n, bits)), 0);
    if (bits == 32) {
        std::memcpy(out.data(), q.data(), 4 * n);
        return;
    }
    if (bits == 8) {
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(q[i]);
        return;
    }
    const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t bit = static_cast<std::uint64_t>(i) * static_cast<std::uint64_t>(bits);
        std::uint64_t v = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(q[i])) & mask) << (bit % 8);
        for (std::size_t b = static_cast<std::size_t>(bit / 8); v; ++b, v >>= 8) out[b] |= static_cast<std::uint8_t>(v & 0xFF);
    }
}

void unpackInts(const std::uint8_t* data, std::size_t n, int bits, bool isSigned, std::vector<std::int32_t>& q, std::uint16_t version)
{
    q.resize(n);
    auto extend = [&](std::uint32_t v, int b) -> std::int32_t {
        if (isSigned && b < 32 && (v >> (b - 1)) & 1u) return static_cast<std::int32_t>(v | ~((1u << b) - 1));
        return static_cast<std::int32_t>(v);
    };
    if (bits == 32) {
        std::memcpy(q.data(), data, 4 * n);
    } else if (version < 5 && bits != 2 && bits != 4) { // a byte (up to 8 bits) or two, sign-extended from the byte
        for (std::size_t i = 0; i < n; ++i) {
            if (bits <= 8) {
                q[i] = extend(data[i], 8);
            } else {
                std::uint16_t v;
                std::memcpy(&v, data + 2 * i, 2);
                q[i] = extend(v, 16);
            }
        }
    } else if (bits == 8) {
        for (std::size_t i = 0; i < n; ++i) q[i] = extend(data[i], 8);
    } else {
        const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t bit = static_cast<std::uint64_t>(i) * static_cast<std::uint64_t>(bits);
            const std::size_t first = static_cast<std::size_t>(bit / 8);
            std::uint64_t v = 0;
            for (std::size_t b = 0; b * 8 < (bit % 8) + static_cast<std::uint64_t>(bits); ++b) v |= std::uint64_t{data[first + b]} << (8 * b);
            q[i] = extend(static_cast<std::uint32_t>((v >> (bit % 8)) & mask), bits);
        }
    }
}

std::vector<std::uint8_t> encodeQsm(const ExportedModel& m)
{
    try {
        m.validate("model '" + m.modelName + "'");
    } catch (const FormatError& e) {
        throw ConfigError(std::string("cannot save an inconsistent model: ") + e.what());
    }
    Writer w;
    w.str(m.modelName, "the model name");
    w.u32(m.channels);
    w.u32(m.height);
    w.u32(m.width);
    w.u32(m.classes);
    for (float v : m.normalization.mean) w.f32(v); // version 3: one per channel
    for (float v : m.normalization.stddev) w.f32(v);
    w.u32(m.classNames.size());
    for (std::size_t c = 0; c < m.classNames.size(); ++c) w.str(m.classNames[c], "class " + std::to_string(c) + "'s name");
    w.str(m.strategy, "the strategy name");
    w.str(m.weightFormat, "the weight format name");
    w.str(m.activationFormat, "the activation format name");
    w.str(m.granularity, "the granularity name");
    w.u8(m.quantized ? 1 : 0);
    w.u8(m.inputQuant ? 1 : 0);
    if (m.inputQuant) putActivation(w, *m.inputQuant);
    w.u32(m.layers.size());
    for (const StoredLayer& l : m.layers) {
        w.u8(static_cast<std::uint8_t>(l.kind));
        w.str(l.name, "layer name");
        w.u8(l.inputs.size());
        for (std::size_t a : l.inputs) w.u32(a);
        switch (l.kind) {
        case LayerKind::Conv2d:
            w.u32(l.inChannels);
            w.u32(l.outChannels);
            w.u32(l.kernel);
            w.u32(l.stride);
            w.u32(l.padding);
            w.u32(l.groups);
            w.u8((l.bnFolded ? 1 : 0) | (l.window ? 2 : 0));
            if (l.window) { // kernel, stride and padding above are its kh, sh and top padding
                const ConvGeometry& g = *l.window;
                w.u32(g.kw);
                w.u32(g.sw);
                w.u32(g.padLeft);
                w.u32(g.padBottom);
                w.u32(g.padRight);
                w.u32(g.dh);
                w.u32(g.dw);
            }
            break;
        case LayerKind::BatchNorm2d:
            w.u32(l.outChannels);
            w.f32(l.eps);
            w.f32(l.momentum);
            break;
        case LayerKind::MaxPool2d:
        case LayerKind::AvgPool2d:
            w.u32(l.kernel);
            w.u32(l.stride);
            w.u32(l.padding); // version 3
            if (!l.poolWindow) { // version 6: the flags byte
                w.u8(0);
                break;
            }
            {
                const PoolGeometry& g = *l.poolWindow;
                const bool wide = g.kw != g.kh || g.sw != g.sh || g.padLeft != g.padTop || g.padBottom != g.padTop || g.padRight != g.padTop;
                w.u8((wide ? 1 : 0) | (g.ceilMode ? 2 : 0) | (g.countIncludePad ? 0 : 4));
                if (wide) { // kernel, stride and padding above are its kh, sh and top padding
                    w.u32(g.kw);
                    w.u32(g.sw);
                    w.u32(g.padLeft);
                    w.u32(g.padBottom);
                    w.u32(g.padRight);
                }
            }
            break;
        case LayerKind::Dropout: w.f32(l.dropout); break;
        case LayerKind::LeakyReLU:
        case LayerKind::ELU:
        case LayerKind::CELU: w.f32(l.alpha); break;
        case LayerKind::Hardtanh:
            w.f32(l.alpha);
            w.f32(l.beta);
            break;
        case LayerKind::ChannelShuffle: w.u32(l.groups); break;
        case LayerKind::GroupNorm:
            w.u32(l.outChannels);
            w.u32(l.groups);
            w.f32(l.eps);
            break;
        case LayerKind::LayerNorm2d:
            w.u32(l.outChannels);
            w.f32(l.eps);
            break;
        case LayerKind::Slice:
            w.u32(l.sliceBegin);
            w.u32(l.sliceEnd);
            break;
        case LayerKind::Pad:
            w.u8(static_cast<std::uint8_t>(l.padMode));
            for (std::size_t p : l.pads) w.u32(static_cast<std::uint32_t>(p));
            break;
        case LayerKind::Linear:
            w.u32(l.inFeatures);
            w.u32(l.outFeatures);
            break;
        default: break;
        }
        w.u8(l.tensors.size());
        for (const StoredTensor& t : l.tensors) putTensor(w, t);
        w.u8(l.outputQuant ? 1 : 0);
        if (l.outputQuant) putActivation(w, *l.outputQuant);
    }

    std::vector<std::uint8_t> out(kQsmHeaderSize);
    std::memcpy(out.data(), kQsmMagic, 8);
    const std::uint16_t version = kQsmVersion, headerSize = kQsmHeaderSize;
    const std::uint32_t flags = 0, crc = crc32Of(w.bytes.data(), w.bytes.size()), reserved = 0;
    const std::uint64_t payload = w.bytes.size();
    std::memcpy(out.data() + 8, &version, 2);
    std::memcpy(out.data() + 10, &headerSize, 2);
    std::memcpy(out.data() + 12, &flags, 4);
    std::memcpy(out.data() + 16, &payload, 8);
    std::memcpy(out.data() + 24, &crc, 4);
    std::memcpy(out.data() + 28, &reserved, 4);
    out.insert(out.end(), w.bytes.begin(), w.bytes.end());
    return out;
}

void writeQsm(const std::string& path, const ExportedModel& m)
{
    std::vector<std::uint8_t> bytes;
    try {
        bytes = encodeQsm(m);
    } catch (const ConfigError& e) {
        throw ConfigError(path + ": " + e.what());
    }
    writeFileAtomic(path, bytes);
}

void checkQsmNames(const std::string& path, const std::string& modelName, const std::vector<std::string>& classNames,
                   const std::vector<std::string>& layerNames)
{
    try {
        storedString(modelName, "the model name");
        for (std::size_t c = 0; c < classNames.size(); ++c) storedString(classNames[c], "class " + std::to_string(c) + "'s name");
        for (const std::string& l : layerNames) storedString(l, "layer name");
    } catch (const ConfigError& e) {
        throw ConfigError(path + ": " + e.what() + "; shorten it, or export .onnx, which has no such limit");
    }
}

namespace qsm_detail {

std::size_t utf8Length(const std::string& s)
{
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
        else return i;
        if (i + len > s.size()) return i;
        for (std::size_t k = 1; k < len; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            if ((b & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (b & 0x3F);
        }
        const std::uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return s.size();
}

std::uint32_t crc32Of(const std::uint8_t* p, std::size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        const uInt chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return static_cast<std::uint32_t>(c);
}

} // namespace qsm_detail

} // namespace quantscope
