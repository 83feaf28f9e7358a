#include "util/byte_size.h"

#include <cstdio>

namespace quantscope {

std::string formatByteSize(std::uint64_t bytes)
{
    char buf[48];
    const double b = static_cast<double>(bytes);
    if (bytes < 1024) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
    else if (bytes < 1024ull * 1024) std::snprintf(buf, sizeof buf, "%.1f KB", b / 1024.0);
    else if (bytes < 1024ull * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f MB", b / (1024.0 * 1024.0));
    else std::snprintf(buf, sizeof buf, "%.2f GB", b / (1024.0 * 1024.0 * 1024.0));
    return buf;
}

} // namespace quantscope
