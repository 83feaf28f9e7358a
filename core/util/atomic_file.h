// Atomic file writes: the bytes go to a file without a name in the target's folder (O_TMPFILE;
// a named temporary where the file system has none), are flushed to disk, and only then named and
// renamed over the target. A failure (disk full, no permission) leaves the old file untouched and
// no temporary behind, and throws IoError naming the file; so does a process killed mid-write.
// A symbolic link is followed (the file it names is replaced; the link stays). A target that
// exists and is not a regular file (a device such as /dev/stdout or /dev/full, a FIFO) is written
// in place, since renaming over it would replace it; its write errors are IoErrors too. A folder
// is an IoError. "-", /dev/stdout, /dev/stderr, /dev/fd/N and /proc/self/fd/N write to that
// descriptor itself (after flushing stdio), wherever it is redirected.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quantscope {

void writeFileAtomic(const std::string& path, const void* data, std::size_t size);
inline void writeFileAtomic(const std::string& path, const std::vector<std::uint8_t>& bytes)
{
    writeFileAtomic(path, bytes.data(), bytes.size());
}
inline void writeFileAtomic(const std::string& path, std::string_view text)
{
    writeFileAtomic(path, text.data(), text.size());
}

// True when writeFileAtomic(path, ...) writes to the process's standard output ("-",
// /dev/stdout, /dev/fd/1, /proc/self/fd/1): a command's own report then belongs on stderr.
bool writesToStandardOutput(const std::string& path);

// Throws IoError naming `path` unless the folder that would hold it exists and this process may
// create files in it (not read-only, not missing, permitted), and `path` is no folder: what
// writeFileAtomic needs, checked before a long job whose result goes there. A symbolic link is
// followed to the file it names, as writeFileAtomic writes. A full disk cannot be known in advance.
void checkWritableFolder(const std::string& path);

// Reads a whole file, refusing files larger than maxBytes. Throws IoError.
std::vector<std::uint8_t> readFileBytes(const std::string& path, std::uint64_t maxBytes);

} // namespace quantscope
