#include "util/memory.h"

#include <malloc.h>

#include <fstream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

namespace quantscope {

double peakResidentMegabytes()
{
    rusage u{};
    if (getrusage(RUSAGE_SELF, &u) != 0) return 0.0;
    return static_cast<double>(u.ru_maxrss) / 1024.0;
}

unsigned long long physicalMemoryBytes()
{
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    unsigned long long bytes = pages > 0 && page > 0 ? static_cast<unsigned long long>(pages) * static_cast<unsigned long long>(page) : 0;
    std::ifstream f("/sys/fs/cgroup/memory.max");
    std::string limit;
    if (f >> limit && limit != "max") {
        try {
            const unsigned long long l = std::stoull(limit);
            if (l > 0 && (bytes == 0 || l < bytes)) bytes = l;
        } catch (const std::exception&) {
        }
    }
    return bytes;
}

void keepTrainingBuffersInHeap()
{
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 64 << 20);
#endif
}

} // namespace quantscope
