#include "data/idx.h"

#include "util/atomic_file.h"
#include "util/errors.h"
#include "util/rng.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace quantscope {

namespace {

bool endsWith(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::uint32_t be32(const std::uint8_t* p)
{
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& in, const std::string& path, std::uint64_t maxBytes)
{
    z_stream zs{};
    if (inflateInit2(&zs, 15 + 16) != Z_OK) throw IoError(path + ": cannot initialise zlib");
    std::vector<std::uint8_t> out; // reserved once an IDX header gives the size (the gzip trailer's ISIZE is untrusted)
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    int rc = Z_OK;
    bool idxLimitKnown = false;
    std::uint64_t idxLimit = maxBytes;
    std::uint8_t buf[1 << 16];
    while (rc != Z_STREAM_END) {
        zs.next_out = buf;
        zs.avail_out = sizeof buf;
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_MEM_ERROR) {
            inflateEnd(&zs);
            throw FormatError(path + ": corrupt gzip data (" + std::string(zs.msg ? zs.msg : "inflate failed") + ")");
        }
        const std::size_t produced = sizeof buf - zs.avail_out;
        if (out.size() + produced > maxBytes) {
            inflateEnd(&zs);
            throw FormatError(path + ": decompresses to more than " + std::to_string(maxBytes) + " bytes");
        }
        out.insert(out.end(), buf, buf + produced);
        // IDX data: stop once the header's size is passed (by at most a buffer) or once the first
        // bytes are no IDX header of bytes, for parseIdx to report; a 1 MB file of zeros after a
        // small header inflated to 1 GiB before "trailing data" (tester 12).
        if (out.size() >= 4 && !idxLimitKnown) {
            if (out[0] != 0 || out[1] != 0 || out[2] != 0x08 || out[3] < 1 || out[3] > 4) break;
            const std::size_t header = 4 + 4 * std::size_t{out[3]};
            if (out.size() >= header) {
                Uint128 total = header;
                Uint128 payload = 1;
                for (std::size_t i = 0; i < out[3]; ++i) payload *= be32(out.data() + 4 + 4 * i);
                total += payload;
                idxLimitKnown = true;
                // A header past the limit is refused now, not after inflating up to the limit (a
                // 2.2 MB file claiming 3,000,000 zero images took 2 GiB and 14 s, tester 11).
                if (total > static_cast<Uint128>(maxBytes)) {
                    inflateEnd(&zs);
                    std::string dims;
                    for (std::size_t i = 0; i < out[3]; ++i) dims += (i ? "x" : "") + std::to_string(be32(out.data() + 4 + 4 * i));
                    throw FormatError(path + ": header says " + dims + ", more than the limit of " + std::to_string(maxBytes) +
                                      " bytes");
                }
                idxLimit = static_cast<std::uint64_t>(total);
                // The header's size, bounded by what this much gzip can hold (deflate: at most
                // 1032:1), so a lying header costs no more than the data behind it.
                out.reserve(std::min<std::uint64_t>(idxLimit + 1, in.size() * 1032ull));
            }
        }
        if (idxLimitKnown && out.size() > idxLimit) {
            inflateEnd(&zs);
            std::string dims;
            for (std::size_t i = 0; i < out[3]; ++i) dims += (i ? "x" : "") + std::to_string(be32(out.data() + 4 + 4 * i));
            throw FormatError(path + ": header says " + dims + " (" + std::to_string(idxLimit - 4 - 4 * std::size_t{out[3]}) +
                              " bytes) but the file decompresses to more (trailing data)");
        }
        if (rc == Z_BUF_ERROR || (rc == Z_OK && zs.avail_in == 0 && produced == 0)) {
            inflateEnd(&zs);
            throw FormatError(path + ": gzip stream is cut short (file truncated?) after " +
                              std::to_string(out.size()) + " decompressed bytes");
        }
    }
    inflateEnd(&zs);
    return out;
}

} // namespace

std::vector<std::uint8_t> readFileMaybeGzip(const std::string& path, std::uint64_t maxBytes)
{
    std::vector<std::uint8_t> raw = readFileBytes(path, maxBytes);
    const bool gzMagic = raw.size() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b;
    if (endsWith(path, ".gz") && !gzMagic)
        throw FormatError(path + ": named .gz but is not a gzip file (bad gzip magic)");
    if (!gzMagic) return raw;
    return gunzip(raw, path, maxBytes);
}

IdxArray parseIdx(const std::vector<std::uint8_t>& bytes, const std::string& path, std::size_t expectedRank)
{
    if (bytes.empty()) throw FormatError(path + ": file is empty");
    if (bytes.size() < 4)
        throw FormatError(path + ": truncated header (" + std::to_string(bytes.size()) + " bytes, need at least 4)");
    if (bytes[0] != 0 || bytes[1] != 0)
        throw FormatError(path + ": not an IDX file (bad magic " + std::to_string(bytes[0]) + "," +
                          std::to_string(bytes[1]) + "; expected 0,0)");
    if (bytes[2] != 0x08)
    {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", unsigned{bytes[2]});
        throw FormatError(path + ": IDX element type " + hex + " is not supported (only unsigned bytes, 0x08)");
    }
    const std::size_t rank = bytes[3];
    if (rank == 0 || rank > 4) throw FormatError(path + ": IDX header has " + std::to_string(rank) + " dimensions");
    if (expectedRank && rank != expectedRank)
        throw FormatError(path + ": expected an IDX file with " + std::to_string(expectedRank) + " dimension(s), found " +
                          std::to_string(rank));
    const std::size_t headerBytes = 4 + 4 * rank;
    if (bytes.size() < headerBytes)
        throw FormatError(path + ": truncated header (" + std::to_string(bytes.size()) + " bytes, need " +
                          std::to_string(headerBytes) + ")");
    IdxArray a;
    // Multiply in 128 bits so absurd dims cannot overflow before the size check.
    Uint128 total = 1;
    for (std::size_t i = 0; i < rank; ++i) {
        a.dims.push_back(be32(bytes.data() + 4 + 4 * i));
        total *= a.dims.back();
    }
    const std::uint64_t payload = bytes.size() - headerBytes;
    if (total != payload) {
        std::string dims;
        for (std::size_t i = 0; i < rank; ++i) dims += (i ? "x" : "") + std::to_string(a.dims[i]);
        const bool tooFew = total > payload;
        throw FormatError(path + ": header says " + dims + " (" +
                          (total > static_cast<Uint128>(UINT64_MAX) ? std::string("too many")
                                                                  : std::to_string(static_cast<std::uint64_t>(total))) +
                          " bytes) but the file holds " + std::to_string(payload) + " payload bytes" +
                          (tooFew ? " (truncated?)" : " (trailing data)"));
    }
    a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(headerBytes), bytes.end());
    return a;
}

IdxArray readIdxImages(const std::string& path)
{
    IdxArray a = parseIdx(readFileMaybeGzip(path), path, 3);
    if (a.dims[0] == 0) throw FormatError(path + ": holds no images");
    if (a.dims[1] == 0 || a.dims[2] == 0 || a.dims[1] > 4096 || a.dims[2] > 4096)
        throw FormatError(path + ": image size " + std::to_string(a.dims[1]) + "x" + std::to_string(a.dims[2]) +
                          " is not plausible");
    return a;
}

IdxArray readIdxLabels(const std::string& path, std::size_t numClasses)
{
    IdxArray a = parseIdx(readFileMaybeGzip(path), path, 1);
    if (a.dims[0] == 0) throw FormatError(path + ": holds no labels");
    for (std::size_t i = 0; i < a.data.size(); ++i)
        if (a.data[i] >= numClasses)
            throw FormatError(path + ": label " + std::to_string(a.data[i]) + " at index " + std::to_string(i) +
                              " is out of range (expected 0.." + std::to_string(numClasses - 1) + ")");
    return a;
}

void writeIdx(const std::string& path, const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data)
{
    std::vector<std::uint8_t> out = {0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
    for (std::uint32_t d : dims) {
        out.push_back(static_cast<std::uint8_t>(d >> 24));
        out.push_back(static_cast<std::uint8_t>(d >> 16));
        out.push_back(static_cast<std::uint8_t>(d >> 8));
        out.push_back(static_cast<std::uint8_t>(d));
    }
    out.insert(out.end(), data.begin(), data.end());
    if (!endsWith(path, ".gz")) {
        writeFileAtomic(path, out);
        return;
    }
    z_stream zs{};
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw IoError(path + ": cannot initialise zlib");
    std::vector<std::uint8_t> gz(deflateBound(&zs, static_cast<uLong>(out.size())) + 64);
    zs.next_in = out.data();
    zs.avail_in = static_cast<uInt>(out.size());
    zs.next_out = gz.data();
    zs.avail_out = static_cast<uInt>(gz.size());
    const int rc = deflate(&zs, Z_FINISH);
    gz.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) throw IoError(path + ": gzip compression failed");
    writeFileAtomic(path, gz);
}

} // namespace quantscope
