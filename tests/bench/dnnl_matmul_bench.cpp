// oneDNN's bf16 matmul on the shapes of bench_gemm_bf16.cpp, for the own-kernels-or-oneDNN
// decision (see gemm_bf16.h). Not built by CMake: oneDNN is not a dependency. To rerun it without
// installing anything system-wide:
//   mkdir -p /tmp/dnnl && cd /tmp/dnnl && apt-get download libdnnl-dev libdnnl2 &&
//   for f in *.deb; do dpkg -x $f root; done &&
//   g++ -std=c++17 -O2 -I root/usr/include <this file> -L root/usr/lib/x86_64-linux-gnu -ldnnl \
//       -Wl,-rpath,/tmp/dnnl/root/usr/lib/x86_64-linux-gnu -o dnnl_bench && OMP_NUM_THREADS=1 ./dnnl_bench
// Columns: bf16 matmul on bf16 inputs; the same after f32->bf16 reorders of both inputs; f32 matmul.
// Timed in thread CPU time, best of 5 runs of at least 20 ms.
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <ctime>
static double cpuNow(){ timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+1e-9*t.tv_nsec; }
#include <cstdio>
#include <functional>
#include <random>
#include <vector>
using namespace dnnl;
struct S { const char* layer; const char* product; bool ta, tb; long M, N, K; };
double best(const std::function<void()>& f) {
  double b = 1e30;
  for (int r = 0; r < 5; ++r) { long it = 0; double t0 = cpuNow(); double el; do { f(); ++it; el = cpuNow() - t0; } while (el < 0.02); b = std::min(b, el / it); }
  return b;
}
int main() {
  std::vector<S> sh;
  auto conv = [&](const char* n, long co, long k, long hw) { sh.push_back({n, "fwd", 0, 0, co, hw, k}); sh.push_back({n, "dW", 0, 1, co, k, hw}); sh.push_back({n, "dX", 1, 0, k, hw, co}); };
  auto fc = [&](const char* n, long b, long in, long out) { sh.push_back({n, "fwd", 0, 1, b, out, in}); sh.push_back({n, "dW", 1, 0, out, in, b}); sh.push_back({n, "dX", 0, 0, b, in, out}); };
  conv("seed-cnn conv1", 32, 9, 676); conv("seed-cnn conv2", 64, 288, 576); fc("seed-cnn fc1", 64, 9216, 128); fc("seed-cnn fc2", 64, 128, 10);
  conv("resnet8 16ch", 16, 144, 784); conv("resnet8 32ch", 32, 288, 196); conv("resnet8 64ch", 64, 576, 49); fc("resnet8 fc", 64, 64, 10);
  engine eng(engine::kind::cpu, 0); stream st(eng);
  std::mt19937 rng(7); std::normal_distribution<float> nd;
  printf("%-16s %-4s %5s %5s %5s %12s %14s %14s\n", "layer", "prod", "M", "N", "K", "dnnl-bf16", "dnnl+reorder", "dnnl-f32");
  for (auto& s : sh) {
    using dt = memory::data_type; using tag = memory::format_tag;
    memory::desc a32({s.M, s.K}, dt::f32, s.ta ? tag::ba : tag::ab), b32({s.K, s.N}, dt::f32, s.tb ? tag::ba : tag::ab);
    memory::desc a16({s.M, s.K}, dt::bf16, s.ta ? tag::ba : tag::ab), b16({s.K, s.N}, dt::bf16, s.tb ? tag::ba : tag::ab);
    memory::desc c32({s.M, s.N}, dt::f32, tag::ab);
    memory A32(a32, eng), B32(b32, eng), A16(a16, eng), B16(b16, eng), C(c32, eng);
    for (long i = 0; i < s.M * s.K; ++i) ((float*)A32.get_data_handle())[i] = nd(rng);
    for (long i = 0; i < s.K * s.N; ++i) ((float*)B32.get_data_handle())[i] = nd(rng);
    reorder ra(A32, A16), rb(B32, B16);
    ra.execute(st, A32, A16); rb.execute(st, B32, B16);
    matmul mm16(matmul::primitive_desc(matmul::desc(a16, b16, c32), eng));
    matmul mm32(matmul::primitive_desc(matmul::desc(a32, b32, c32), eng));
    const double flop = 2.0 * s.M * s.N * s.K;
    auto run16 = [&] { mm16.execute(st, {{DNNL_ARG_SRC, A16}, {DNNL_ARG_WEIGHTS, B16}, {DNNL_ARG_DST, C}}); st.wait(); };
    auto runR = [&] { ra.execute(st, A32, A16); rb.execute(st, B32, B16); run16(); };
    auto run32 = [&] { mm32.execute(st, {{DNNL_ARG_SRC, A32}, {DNNL_ARG_WEIGHTS, B32}, {DNNL_ARG_DST, C}}); st.wait(); };
    printf("%-16s %-4s %5ld %5ld %5ld %12.1f %14.1f %14.1f\n", s.layer, s.product, s.M, s.N, s.K, flop / best(run16) * 1e-9, flop / best(runR) * 1e-9, flop / best(run32) * 1e-9);
    fflush(stdout);
  }
}
