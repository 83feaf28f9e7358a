// Resident memory of this process, for the runs' reports (JSON `peak_rss_mb`, the GUI's status
// bar, scripts/bench-train).
#pragma once

namespace quantscope {

// The largest resident set size of this process since it started, in MiB (getrusage(2)'s
// ru_maxrss, which Linux gives in KiB). 0 when the system does not say.
double peakResidentMegabytes();

// The machine's physical memory in bytes (sysconf(3)'s pages times page size), or the cgroup v2
// limit of this process (/sys/fs/cgroup/memory.max) when that is smaller. 0 when unknown.
unsigned long long physicalMemoryBytes();

} // namespace quantscope
