#include "io/qsm.h"

#include "util/atomic_file.h"
#include "util/errors.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace quantscope {

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

// The length of the longest prefix of `s` that is UTF-8 as RFC 3629 allows it (no overlong
// forms, no surrogates, nothing above U+10FFFF): s.size() when all of it is.
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

// `s` with every byte that is not part of valid UTF-8 replaced by U+FFFD: what the writer stores
// (a class folder named in Latin-1 would make a file the reader refuses).
std::string validUtf8(std::string s)
{
    for (std::size_t i = utf8Length(s); i < s.size(); i = utf8Length(s)) s.replace(i, 1, "\xEF\xBF\xBD");
    return s;
}


constexpr std::size_t kMaxString = 1024;
constexpr std::size_t kMaxClassNames = 65536;
constexpr std::size_t kMaxLayers = 1024;
constexpr std::size_t kMaxRank = 4;
constexpr std::uint8_t kTensorZeroPointsZero = 1; // tensor flag (version 5): no zero points stored, all 0
constexpr std::uint64_t kMaxElements = std::uint64_t{1} << 31;

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
    void str(const std::string& text)
    {
        const std::string s = validUtf8(text);
        if (s.size() > kMaxString) throw ConfigError("string '" + s.substr(0, 40) + "...' is too long for a .qsm file");
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
    w.str(t.name);
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

// ---------------------------------------------------------------- reading
class Reader {
public:
    Reader(const std::uint8_t* p, std::size_t n, std::size_t base, const std::string& source)
        : m_p(p), m_n(n), m_base(base), m_source(source)
    {
    }
    [[noreturn]] void fail(const std::string& what) const
    {
        throw FormatError(m_source + ": offset " + std::to_string(m_base + m_pos) + ": " + what);
    }
    std::size_t remaining() const { return m_n - m_pos; }
    std::size_t offset() const { return m_base + m_pos; }
    void need(std::uint64_t n, const char* what) const
    {
        if (n > remaining())
            fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes, " + std::to_string(remaining()) + " remain");
    }
    template <typename T>
    T get(const char* what)
    {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, m_p + m_pos, sizeof(T));
        m_pos += sizeof(T);
        return v;
    }
    std::uint8_t u8(const char* what) { return get<std::uint8_t>(what); }
    std::uint16_t u16(const char* what) { return get<std::uint16_t>(what); }
    std::uint32_t u32(const char* what) { return get<std::uint32_t>(what); }
    std::uint64_t u64(const char* what) { return get<std::uint64_t>(what); }
    std::int32_t i32(const char* what) { return get<std::int32_t>(what); }
    float f32(const char* what) { return get<float>(what); }
    std::uint32_t count(const char* what, std::uint64_t max, std::uint64_t minBytesEach)
    {
        const std::uint32_t n = u32(what);
        if (n > max) fail(std::string(what) + " is " + std::to_string(n) + ", more than the limit of " + std::to_string(max));
        need(static_cast<std::uint64_t>(n) * minBytesEach, what);
        return n;
    }
    std::string str(const char* what)
    {
        const std::uint16_t n = u16(what);
        if (n > kMaxString) fail(std::string(what) + ": string of " + std::to_string(n) + " bytes is longer than " + std::to_string(kMaxString));
        need(n, what);
        std::string s(reinterpret_cast<const char*>(m_p + m_pos), n);
        if (utf8Length(s) != s.size()) fail(std::string(what) + " is not UTF-8 text");
        m_pos += n;
        return s;
    }

    const std::uint8_t* take(std::uint64_t n, const char* what)
    {
        need(n, what);
        const std::uint8_t* p = m_p + m_pos;
        m_pos += n;
        return p;
    }

private:
    const std::uint8_t* m_p;
    std::size_t m_n, m_pos = 0, m_base;
    const std::string& m_source;
};

std::size_t toSize(std::uint32_t v) { return static_cast<std::size_t>(v); }

ActivationQuant getActivation(Reader& r)
{
    ActivationQuant a;
    a.bits = r.u8("activation bits");
    const std::uint8_t sgn = r.u8("activation signedness");
    if (sgn > 1) r.fail("activation signedness flag is " + std::to_string(sgn) + ", not 0 or 1");
    a.isSigned = sgn == 1;
    if (r.u16("reserved") != 0) r.fail("reserved field is not zero");
    a.qmin = r.i32("activation qmin");
    a.qmax = r.i32("activation qmax");
    a.scale = r.f32("activation scale");
    a.zeroPoint = r.i32("activation zero point");
    if (a.bits < 2 || a.bits > 16) r.fail("activation width of " + std::to_string(a.bits) + " bits (2..16)");
    return a;
}

StoredTensor getTensor(Reader& r, std::uint16_t version)
{
    StoredTensor t;
    t.name = r.str("tensor name");
    const std::uint8_t rank = r.u8("tensor rank");
    if (rank < 1 || rank > kMaxRank) r.fail("tensor '" + t.name + "' has rank " + std::to_string(rank) + " (1.." + std::to_string(kMaxRank) + ")");
    r.need(4u * rank, "tensor dimensions");
    std::uint64_t n = 1;
    for (std::uint8_t i = 0; i < rank; ++i) {
        const std::uint32_t d = r.u32("tensor dimension");
        if (d == 0) r.fail("tensor '" + t.name + "' has a zero dimension");
        n *= d;
        if (n > kMaxElements) r.fail("tensor '" + t.name + "' claims more than " + std::to_string(kMaxElements) + " elements");
        t.shape.push_back(toSize(d));
    }
    const std::uint8_t enc = r.u8("tensor encoding");
    if (enc > 1) r.fail("tensor '" + t.name + "' has unknown encoding " + std::to_string(enc));
    t.encoding = static_cast<TensorEncoding>(enc);
    if (t.encoding == TensorEncoding::Float32) {
        const std::uint64_t bytes = r.u64("tensor data size");
        if (bytes != n * 4) r.fail("tensor '" + t.name + "': " + std::to_string(bytes) + " data bytes for " + std::to_string(n) + " float32 values");
        const std::uint8_t* p = r.take(bytes, "tensor data");
        t.values.resize(static_cast<std::size_t>(n));
        std::memcpy(t.values.data(), p, static_cast<std::size_t>(bytes));
        return t;
    }
    t.bits = r.u8("tensor bits");
    const std::uint8_t sgn = r.u8("tensor signedness");
    const std::uint8_t layout = r.u8("tensor scale layout");
    const std::uint8_t flags = r.u8(version >= 5 ? "tensor flags" : "reserved");
    if (version < 5 && flags != 0) r.fail("reserved field is not zero");
    if (flags & ~kTensorZeroPointsZero) r.fail("tensor '" + t.name + "' has unknown flags " + std::to_string(flags));
    if (sgn > 1) r.fail("tensor '" + t.name + "' signedness flag is " + std::to_string(sgn));
    if (layout > 2) r.fail("tensor '" + t.name + "' has unknown scale layout " + std::to_string(layout));
    if (!((t.bits >= 2 && t.bits <= 16) || t.bits == 32)) r.fail("tensor '" + t.name + "' has " + std::to_string(t.bits) + "-bit integers (2..16 or 32)");
    t.isSigned = sgn == 1;
    t.layout = static_cast<ScaleLayout>(layout);
    t.qmin = r.i32("tensor qmin");
    t.qmax = r.i32("tensor qmax");
    t.groupSize = toSize(r.u32("tensor group size"));
    if (t.layout == ScaleLayout::Group && t.groupSize == 0) r.fail("tensor '" + t.name + "' has group size 0");
    if (t.layout != ScaleLayout::Group && t.groupSize != 0)
        r.fail("tensor '" + t.name + "' has group size " + std::to_string(t.groupSize) + " on a scale layout that is not group-wise");
    const std::uint32_t ns = r.count("scale count", kMaxElements, (flags & kTensorZeroPointsZero) ? 4 : 8); // bytes per slot
    if (ns != t.expectedScales())
        r.fail("tensor '" + t.name + "' has " + std::to_string(ns) + " scales, its layout needs " + std::to_string(t.expectedScales()));
    const std::uint8_t* sp = r.take(4ull * ns, "scales");
    t.scales.resize(ns);
    std::memcpy(t.scales.data(), sp, 4ull * ns);
    t.zeroPoints.assign(ns, 0);
    if (!(flags & kTensorZeroPointsZero)) {
        const std::uint8_t* zp = r.take(4ull * ns, "zero points");
        std::memcpy(t.zeroPoints.data(), zp, 4ull * ns);
    }
    const std::uint64_t bytes = r.u64("tensor data size");
    if (bytes != packedBytes(n, t.bits, version))
        r.fail("tensor '" + t.name + "': " + std::to_string(bytes) + " data bytes for " + std::to_string(n) + " values of " + std::to_string(t.bits) + " bits");
    const std::uint8_t* p = r.take(bytes, "tensor data");
    unpackInts(p, static_cast<std::size_t>(n), t.bits, t.isSigned, t.q, version);
    return t;
}

// Version 1 files hold plain stacks of the first eight kinds; version 2 adds each layer's input
// list, Conv2d groups and the kinds Add, GlobalAvgPool2d, AvgPool2d, ReLU6; version 3 adds per-channel
// normalisation and the padding of MaxPool2d and AvgPool2d; version 4 the kind Softmax; version 5
// a tensor flag that leaves out zero points that are all 0 (getTensor), and the pointwise
// activations 13-20 (LeakyReLU and ELU with an f32 alpha), then Mul (21, two inputs) and Concat
// (22, 2 to 255 inputs along the channels), neither with fields of its own. Adding those kinds kept
// the version: older version 5 files hold none of them and read as before; an older reader names
// kind 13+ (21+) as unknown. So do PReLU (23: no fields, its float32 slope tensor `weight`) and
// GELUTanh (24: none). Version 6 adds a flags byte to MaxPool2d and AvgPool2d: bit 0, the rest of a
// window that is not square follows (kernel width, stride across, pads left/bottom/right); bit 1,
// ceil_mode; bit 2, count_include_pad = 0 (AvgPool2d). Hardtanh (25: f32 min_val, f32 max_val,
// either may be infinite) was added within version 6; an older reader names it as unknown. So were
// ChannelShuffle (26: u32 groups) and Slice (27: u32 first channel, u32 end channel, exclusive),
// and GroupNorm (28: u32 channels, u32 groups, f32 eps; float32 tensors `weight` and `bias`, one
// per channel, or none without affine parameters), Softplus (29: none), Mish (30: none) and Pad
// (31: u8 mode (0 zeros, 1 reflect, 2 replicate), u32 pads top, left, bottom, right), SELU (32:
// none), CELU (33: f32 alpha, finite and not 0) and Softsign (34: none), and LayerNorm2d (35: u32
// channels, f32 eps; tensors as GroupNorm's) and ChannelMax (36: none).
StoredLayer getLayer(Reader& r, std::uint16_t version, std::size_t index)
{
    StoredLayer l;
    const std::uint8_t kind = r.u8("layer kind");
    const int lastKind = version == 1   ? static_cast<int>(LayerKind::LogSoftmax)
                         : version <= 3 ? static_cast<int>(LayerKind::ReLU6)
                         : version == 4 ? static_cast<int>(LayerKind::Softmax)
                         : version == 5 ? static_cast<int>(LayerKind::GELUTanh)
                                        : kLastLayerKind;
    if (kind > lastKind) r.fail("unknown layer kind " + std::to_string(kind));
    l.kind = static_cast<LayerKind>(kind);
    l.name = r.str("layer name");
    if (version == 1) {
        l.inputs = {index};
    } else {
        const std::uint8_t ni = r.u8("input count");
        if (l.kind == LayerKind::Concat ? ni < 2 : (ni < 1 || ni > 2))
            r.fail("layer '" + l.name + "' reads " + std::to_string(ni) + " inputs (" + (l.kind == LayerKind::Concat ? "2 to 255" : "1 or 2") + ")");
        for (std::uint8_t j = 0; j < ni; ++j) {
            const std::uint32_t a = r.u32("input activation");
            if (a > index) r.fail("layer '" + l.name + "' reads activation " + std::to_string(a) + ", not an earlier layer's output");
            l.inputs.push_back(a);
        }
    }
    switch (l.kind) {
    case LayerKind::Conv2d: {
        l.inChannels = toSize(r.u32("in channels"));
        l.outChannels = toSize(r.u32("out channels"));
        l.kernel = toSize(r.u32("kernel"));
        l.stride = toSize(r.u32("stride"));
        l.padding = toSize(r.u32("padding"));
        if (version >= 2) l.groups = toSize(r.u32("groups"));
        // bit 0: BatchNorm folded; bit 1 (version 5): a window that is not square follows
        const std::uint8_t flags = r.u8("folded flag");
        if (flags > (version >= 5 ? 3 : 1)) r.fail("folded flag is " + std::to_string(flags));
        l.bnFolded = (flags & 1) != 0;
        if (flags & 2) {
            ConvGeometry g;
            g.kh = l.kernel, g.sh = l.stride, g.padTop = l.padding;
            g.kw = toSize(r.u32("kernel width"));
            g.sw = toSize(r.u32("stride across"));
            g.padLeft = toSize(r.u32("padding left"));
            g.padBottom = toSize(r.u32("padding bottom"));
            g.padRight = toSize(r.u32("padding right"));
            g.dh = toSize(r.u32("dilation down"));
            g.dw = toSize(r.u32("dilation across"));
            if (g.isSquare()) r.fail("layer '" + l.name + "' stores a square window as an extended one");
            l.window = g;
        }
        break;
    }
    case LayerKind::BatchNorm2d:
        l.outChannels = toSize(r.u32("channels"));
        l.eps = r.f32("eps");
        l.momentum = r.f32("momentum");
        break;
    case LayerKind::MaxPool2d:
    case LayerKind::AvgPool2d:
        l.kernel = toSize(r.u32("kernel"));
        l.stride = toSize(r.u32("stride"));
        if (version >= 3) l.padding = toSize(r.u32("padding"));
        if (version >= 6) {
            const std::uint8_t flags = r.u8("pooling flags");
            if (flags > (l.kind == LayerKind::AvgPool2d ? 7 : 3)) r.fail("layer '" + l.name + "': pooling flags are " + std::to_string(flags));
            PoolGeometry g = PoolGeometry::square(l.kernel, l.stride, l.padding);
            if (flags & 1) {
                g.kw = toSize(r.u32("kernel width"));
                g.sw = toSize(r.u32("stride across"));
                g.padLeft = toSize(r.u32("padding left"));
                g.padBottom = toSize(r.u32("padding bottom"));
                g.padRight = toSize(r.u32("padding right"));
            }
            g.ceilMode = (flags & 2) != 0;
            g.countIncludePad = (flags & 4) == 0;
            if (flags && (g.isSquare() || g.normalized() != g))
                r.fail("layer '" + l.name + "' stores a square window, or count_include_pad without padding, as an extended one");
            if (flags) l.poolWindow = g;
        }
        break;
    case LayerKind::Dropout: l.dropout = r.f32("dropout probability"); break;
    case LayerKind::LeakyReLU: l.alpha = r.f32("negative slope"); break;
    case LayerKind::ELU:
    case LayerKind::CELU: l.alpha = r.f32("alpha"); break;
    case LayerKind::Hardtanh:
        l.alpha = r.f32("min_val");
        l.beta = r.f32("max_val");
        break;
    case LayerKind::ChannelShuffle: l.groups = toSize(r.u32("shuffle groups")); break;
    case LayerKind::GroupNorm:
        l.outChannels = toSize(r.u32("channels"));
        l.groups = toSize(r.u32("groups"));
        l.eps = r.f32("eps");
        break;
    case LayerKind::LayerNorm2d:
        l.outChannels = toSize(r.u32("channels"));
        l.eps = r.f32("eps");
        break;
    case LayerKind::Slice:
        l.sliceBegin = toSize(r.u32("slice begin"));
        l.sliceEnd = toSize(r.u32("slice end"));
        break;
    case LayerKind::Pad:
        l.padMode = static_cast<PadMode>(r.u8("padding mode"));
        for (std::size_t& p : l.pads) p = toSize(r.u32("pad"));
        break;
    case LayerKind::Linear:
        l.inFeatures = toSize(r.u32("in features"));
        l.outFeatures = toSize(r.u32("out features"));
        break;
    default: break;
    }
    const std::uint8_t nt = r.u8("tensor count");
    if (nt > 4) r.fail("layer '" + l.name + "' has " + std::to_string(nt) + " tensors (at most 4)");
    for (std::uint8_t i = 0; i < nt; ++i) l.tensors.push_back(getTensor(r, version));
    const std::uint8_t hq = r.u8("output quantization flag");
    if (hq > 1) r.fail("output quantization flag is " + std::to_string(hq));
    if (hq) l.outputQuant = getActivation(r);
    return l;
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
    w.str(m.modelName);
    w.u32(m.channels);
    w.u32(m.height);
    w.u32(m.width);
    w.u32(m.classes);
    for (float v : m.normalization.mean) w.f32(v); // version 3: one per channel
    for (float v : m.normalization.stddev) w.f32(v);
    w.u32(m.classNames.size());
    for (const std::string& c : m.classNames) w.str(c);
    w.str(m.strategy);
    w.str(m.weightFormat);
    w.str(m.activationFormat);
    w.str(m.granularity);
    w.u8(m.quantized ? 1 : 0);
    w.u8(m.inputQuant ? 1 : 0);
    if (m.inputQuant) putActivation(w, *m.inputQuant);
    w.u32(m.layers.size());
    for (const StoredLayer& l : m.layers) {
        w.u8(static_cast<std::uint8_t>(l.kind));
        w.str(l.name);
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

void writeQsm(const std::string& path, const ExportedModel& m) { writeFileAtomic(path, encodeQsm(m)); }

ExportedModel decodeQsm(const std::vector<std::uint8_t>& bytes, const std::string& source)
{
    if (bytes.size() < kQsmHeaderSize)
        throw FormatError(source + ": truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the " +
                          std::to_string(kQsmHeaderSize) + "-byte .qsm header");
    if (std::memcmp(bytes.data(), kQsmMagic, 8) != 0) throw FormatError(source + ": not a QuantScope model (.qsm): bad magic number");
    std::uint16_t version, headerSize;
    std::uint32_t flags, crc, reserved;
    std::uint64_t payload;
    std::memcpy(&version, bytes.data() + 8, 2);
    std::memcpy(&headerSize, bytes.data() + 10, 2);
    std::memcpy(&flags, bytes.data() + 12, 4);
    std::memcpy(&payload, bytes.data() + 16, 8);
    std::memcpy(&crc, bytes.data() + 24, 4);
    std::memcpy(&reserved, bytes.data() + 28, 4);
    if (version < 1 || version > kQsmVersion)
        throw FormatError(source + ": .qsm version " + std::to_string(version) + " is not one this QuantScope reads (versions 1 to " +
                          std::to_string(kQsmVersion) + ")");
    if (headerSize != kQsmHeaderSize || flags != 0 || reserved != 0)
        throw FormatError(source + ": offset 10: header fields of version " + std::to_string(version) + " do not hold their fixed values");
    const std::uint64_t have = bytes.size() - kQsmHeaderSize;
    if (payload != have)
        throw FormatError(source + ": " + (payload > have ? "truncated" : "trailing data") + ": the header announces " +
                          std::to_string(payload) + " payload bytes, the file holds " + std::to_string(have));
    const std::uint32_t actual = crc32Of(bytes.data() + kQsmHeaderSize, static_cast<std::size_t>(have));
    if (actual != crc) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "CRC-32 mismatch (header 0x%08x, payload 0x%08x): the file is damaged", crc, actual);
        throw FormatError(source + ": " + buf);
    }

    Reader r(bytes.data() + kQsmHeaderSize, static_cast<std::size_t>(have), kQsmHeaderSize, source);
    ExportedModel m;
    m.modelName = r.str("model name");
    m.channels = toSize(r.u32("channels"));
    m.height = toSize(r.u32("height"));
    m.width = toSize(r.u32("width"));
    m.classes = toSize(r.u32("classes"));
    if (!(m.channels >= 1 && m.channels <= 64)) r.fail(std::to_string(m.channels) + " input channels is out of range");
    // Versions 1 and 2 hold one mean and one standard deviation for the (single-channel) input.
    const std::size_t normCount = version >= 3 ? m.channels : 1;
    m.normalization.mean.resize(normCount);
    m.normalization.stddev.resize(normCount);
    for (float& v : m.normalization.mean) v = r.f32("normalisation mean");
    for (float& v : m.normalization.stddev) v = r.f32("normalisation stddev");
    if (version < 3 && m.channels != 1) m.normalization = m.normalization.broadcast(m.channels);
    const std::uint32_t nc = r.count("class name count", kMaxClassNames, 2);
    for (std::uint32_t i = 0; i < nc; ++i) m.classNames.push_back(r.str("class name"));
    m.strategy = r.str("strategy");
    m.weightFormat = r.str("weight format");
    m.activationFormat = r.str("activation format");
    m.granularity = r.str("granularity");
    const std::uint8_t quantized = r.u8("quantized flag");
    if (quantized > 1) r.fail("quantized flag is " + std::to_string(quantized));
    m.quantized = quantized == 1;
    const std::uint8_t hin = r.u8("input quantization flag");
    if (hin > 1) r.fail("input quantization flag is " + std::to_string(hin));
    if (hin) m.inputQuant = getActivation(r);
    const std::uint32_t nl = r.count("layer count", kMaxLayers, 5);
    for (std::uint32_t i = 0; i < nl; ++i) m.layers.push_back(getLayer(r, version, i));
    if (r.remaining() != 0) r.fail(std::to_string(r.remaining()) + " unexpected bytes after the last layer");
    m.validate(source);
    return m;
}

ExportedModel readQsm(const std::string& path) { return decodeQsm(readFileBytes(path, kQsmMaxBytes), path); }

} // namespace quantscope
