// File and model sizes as every report writes them (the CLI's export lines, info and eval, the
// GUI's plan table, runs table and export report), so one model has one size everywhere.
#pragma once

#include <cstdint>
#include <string>

namespace quantscope {

// `bytes` in 1024-based units: "512 B", "34.8 KB", "1.21 MB", "2.05 GB" (1 KB = 1024 bytes).
std::string formatByteSize(std::uint64_t bytes);

} // namespace quantscope
