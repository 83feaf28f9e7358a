// Reading .qsm files (docs/FORMAT.md, versions 1 to kQsmVersion): the header, its CRC-32, then
// the payload field by field, each bounded before it is allocated. Every problem is a FormatError
// naming the file and the byte offset; the model is validate()d before it is returned.
#include "io/qsm.h"

#include "io/qsm_detail.h"
#include "util/atomic_file.h"
#include "util/errors.h"

#include <cstdio>
#include <cstring>
#include <limits>

namespace quantscope {

using namespace qsm_detail;

namespace {

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
