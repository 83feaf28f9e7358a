#include "util/atomic_file.h"

#include "util/errors.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <random>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace quantscope {

namespace {
std::string errnoText(int e)
{
    if (e == ENOSPC) return "the disk is full";
    if (e == EDQUOT) return "the disk quota is exceeded";
    if (e == EACCES || e == EPERM) return "permission denied";
    if (e == ENOENT) return "the folder does not exist";
    if (e == EROFS) return "the file system is read-only";
    if (e == EFBIG) return "the file is larger than the file size limit (ulimit -f) allows";
    return std::strerror(e);
}

std::string folderOf(const std::string& path)
{
    const std::string dir = std::filesystem::path(path).parent_path().string();
    return dir.empty() ? std::string(".") : dir;
}

// The mkstemp template of the temporary file written next to `path`: its name + ".tmp-XXXXXX",
// or ".qs-tmp-XXXXXX" in its folder when that would pass the file-name limit (255 bytes; tester
// 22: a legal name of 245 bytes could not be written).
std::string temporaryTemplate(const std::string& path)
{
    constexpr std::size_t kNameMax = 255;
    const std::string suffix = ".tmp-XXXXXX";
    if (std::filesystem::path(path).filename().string().size() + suffix.size() <= kNameMax) return path + suffix;
    return (std::filesystem::path(folderOf(path)) / ".qs-tmp-XXXXXX").string();
}

// Writes all of [data, data + size) to fd; false with errno set on failure.
bool writeAll(int fd, const void* data, std::size_t size)
{
    const char* p = static_cast<const char*>(data);
    std::size_t left = size;
    while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return true;
}

// Where a write to `path` lands: `path` itself, or, when it is a symbolic link, the file the
// chain of links names (a dangling link's target included), so that the link stays a link.
std::string linkTarget(const std::string& path)
{
    namespace fs = std::filesystem;
    fs::path p(path);
    for (int hops = 0; hops < 40; ++hops) {
        std::error_code ec;
        if (!fs::is_symlink(fs::symlink_status(p, ec))) return p.string();
        const fs::path next = fs::read_symlink(p, ec);
        if (ec) return p.string();
        p = next.is_absolute() ? next : p.parent_path() / next;
    }
    throw IoError(path + ": too many levels of symbolic links");
}

// The descriptor a path names directly: "-" and /dev/stdout are 1, /dev/stderr 2, /dev/fd/N and
// /proc/self/fd/N are N; -1 for any other path. Through its link, /dev/stdout redirected to a file
// is that file, and a temporary renamed over it would leave the shell writing to a deleted one.
int namedDescriptor(const std::string& path)
{
    if (path == "-" || path == "/dev/stdout") return 1;
    if (path == "/dev/stderr") return 2;
    for (const char* prefix : {"/dev/fd/", "/proc/self/fd/"}) {
        const std::size_t n = std::strlen(prefix);
        if (path.size() <= n || path.compare(0, n, prefix) != 0) continue;
        const std::string digits = path.substr(n);
        if (digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
        return std::stoi(digits);
    }
    return -1;
}
// Makes the rename of a file into `dir` durable (best effort: some file systems refuse fsync on a folder).
void syncFolder(const std::string& dir)
{
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

// Writes the bytes to a file without a name in the target's folder (open(2) O_TMPFILE, Linux 3.11),
// flushes it, and only then gives it a temporary name (linkat through /proc/self/fd) and renames
// it over `path`. A process killed while writing (SIGKILL, the OOM killer) leaves nothing behind:
// the kernel frees a file that never got a name (tester 22: full-size NAME.tmp-XXXXXX files stayed
// beside the target). False, with nothing written, where the file system or /proc cannot do it:
// the caller then writes a named temporary from the start. Throws IoError for a failed write.
bool writeUnnamed(const std::string& requested, const std::string& path, const void* data, std::size_t size)
{
    const std::string dir = folderOf(path);
    const int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    const auto fail = [&](const char* what) {
        const int e = errno;
        ::close(fd);
        throw IoError(requested + ": " + what + ": " + errnoText(e));
    };
    if (!writeAll(fd, data, size)) fail("write failed");
    if (::fsync(fd) != 0) fail("flush to disk failed");
    ::fchmod(fd, 0644);
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    std::random_device random;
    std::string tmp;
    bool named = false;
    for (int attempt = 0; attempt < 64 && !named; ++attempt) {
        tmp = temporaryTemplate(path); // its last six letters, XXXXXX, are drawn here as mkstemp draws them
        static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        for (std::size_t i = tmp.size() - 6; i < tmp.size(); ++i) tmp[i] = kLetters[random() % 62];
        named = ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0;
        if (!named && errno != EEXIST) break;
    }
    ::close(fd);
    if (!named) return false;
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw IoError(requested + ": cannot replace the file: " + errnoText(e));
    }
    syncFolder(dir);
    return true;
}
} // namespace

void writeFileAtomic(const std::string& requested, const void* data, std::size_t size)
{
    if (const int fd = namedDescriptor(requested); fd >= 0) {
        std::fflush(nullptr); // what stdio holds goes first, in order
        if (::fcntl(fd, F_GETFD) < 0) throw IoError(requested + ": descriptor " + std::to_string(fd) + " is not open");
        if (!writeAll(fd, data, size)) throw IoError(requested + ": write failed: " + errnoText(errno));
        return;
    }
    const std::string path = linkTarget(requested);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) throw IoError(requested + ": is a folder, not a file");
        if (!S_ISREG(st.st_mode)) {
            // A device, FIFO or socket (/dev/stdout, /dev/null, a named pipe): written in place.
            // Renaming a temporary over it would replace the device node with a plain file.
            const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0) throw IoError(requested + ": cannot open: " + errnoText(errno));
            if (!writeAll(fd, data, size)) {
                const int e = errno;
                ::close(fd);
                throw IoError(requested + ": write failed: " + errnoText(e));
            }
            if (::close(fd) != 0) throw IoError(requested + ": close failed: " + errnoText(errno));
            return;
        }
    }
    if (writeUnnamed(requested, path, data, size)) return;
    std::string tmp = temporaryTemplate(path);
    int fd = ::mkstemp(tmp.data());
    if (fd < 0) {
        const int e = errno;
        struct stat dst {};
        // ENOENT from a folder that exists: one that takes no new files (/proc, /sys).
        if (e == ENOENT && ::stat(folderOf(path).c_str(), &dst) == 0 && S_ISDIR(dst.st_mode))
            throw IoError(requested + ": cannot create a temporary file next to it: its folder takes no new files");
        throw IoError(requested + ": cannot create a temporary file next to it: " + errnoText(e));
    }
    auto fail = [&](const char* what) {
        const int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw IoError(requested + ": " + what + ": " + errnoText(e));
    };
    if (!writeAll(fd, data, size)) fail("write failed");
    if (::fsync(fd) != 0) fail("flush to disk failed");
    ::fchmod(fd, 0644);
    if (::close(fd) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw IoError(requested + ": close failed: " + errnoText(e));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw IoError(requested + ": cannot replace the file: " + errnoText(e));
    }
    syncFolder(folderOf(path)); // the rename itself made durable
}

void checkWritableFolder(const std::string& path)
{
    if (namedDescriptor(path) >= 0) return; // a descriptor, not a file in a folder
    // Where writeFileAtomic would write: through a chain of symbolic links (a dangling link
    // writes its target), and never over a folder (tester 12: both failed after training).
    const std::string target = linkTarget(path);
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) throw IoError(path + ": is a folder, not a file");
        if (!S_ISREG(st.st_mode)) { // a device or FIFO, written in place
            if (::access(target.c_str(), W_OK) != 0) throw IoError(path + ": cannot write: " + errnoText(errno));
            return;
        }
    }
    const std::string dir = folderOf(target);
    const std::string via = target == path ? std::string() : " (the link's target " + target + ")";
    if (::stat(dir.c_str(), &st) != 0)
        throw IoError(path + ": cannot write here" + via + ": " + dir + ": " + errnoText(errno));
    if (!S_ISDIR(st.st_mode)) throw IoError(path + ": cannot write here" + via + ": " + dir + " is not a folder");
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
        throw IoError(path + ": cannot write in " + dir + via + ": " + errnoText(errno));
    // access() grants root everything, and a folder such as /sys or /proc takes no new files
    // whatever its mode (tester 10: --export /sys/x.qsm failed after training): the temporary
    // file writeFileAtomic makes, made and removed now.
    std::string probe = temporaryTemplate(target);
    const int fd = ::mkstemp(probe.data());
    if (fd < 0) {
        const int e = errno;
        throw IoError(path + ": cannot write in " + dir + via + ": " +
                      (e == ENOENT || e == EACCES || e == EPERM ? std::string("the folder takes no new files") : errnoText(e)));
    }
    ::close(fd);
    ::unlink(probe.c_str());
}

std::vector<std::uint8_t> readFileBytes(const std::string& path, std::uint64_t maxBytes)
{
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        const int e = errno;
        throw IoError(path + ": " + (e == ENOENT ? std::string("no such file") : errnoText(e)));
    }
    if (S_ISDIR(st.st_mode)) throw IoError(path + ": is a folder, not a file");
    // opening a named pipe waits for a writer, for ever if none comes (tester 22)
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) throw IoError(path + ": is a named pipe or socket, not a file");
    if (static_cast<std::uint64_t>(st.st_size) > maxBytes)
        throw IoError(path + ": file is " + std::to_string(st.st_size) + " bytes, more than the limit of " +
                      std::to_string(maxBytes));
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw IoError(path + ": cannot open: " + errnoText(errno));
    std::vector<std::uint8_t> out(static_cast<std::size_t>(st.st_size));
    const std::size_t got = out.empty() ? 0 : std::fread(out.data(), 1, out.size(), f);
    const bool err = std::ferror(f);
    std::fclose(f);
    if (err || got != out.size()) throw IoError(path + ": read failed");
    return out;
}

bool writesToStandardOutput(const std::string& path) { return namedDescriptor(path) == 1; }

} // namespace quantscope
