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

// Keeps training's large per-step buffers (activations, im2col, gradients: hundreds of KB to
// tens of MB, allocated and freed every step) in the heap instead of glibc handing each back to
// the kernel with munmap and faulting it in again (mallopt(3): M_MMAP_THRESHOLD 256 MiB,
// M_TRIM_THRESHOLD 1 GiB, M_TOP_PAD 64 MiB), as PyTorch's caching allocator keeps its blocks.
// Measured on resnet8 FP32 training (6,400 images, 2 threads, Zen 4, glibc tunables of the same
// values, alternating): 90k page faults -> 56k, images/s +5.2, +2.7, +5.3 and +0.5 % in four
// pairs, peak memory 158.6 -> 163.1 MiB. Call once at program start, before the first allocation
// that matters. A no-op where the C library is not glibc.
void keepTrainingBuffersInHeap();

} // namespace quantscope
