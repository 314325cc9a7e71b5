// Where the multi-token attention of the decoder layer (tile_attention, decoder_layer.cpp) spends its
// time, phase by phase and per thread: one layer of SmolLM2 (9 query heads, 3 KV heads, D = 64), T
// query tokens over S0 cached keys, random data. run.sh copies tile_attention out of decoder_layer.cpp
// with a timestamp at each phase boundary (TMARK); "scores+values" holds every item's scores and all
// but the last item's values (they alternate in one loop).
//   OMP_NUM_THREADS=2 ./attention_phases S0 T    (us per call, averaged over 3000 calls)
#include <omp.h>
#include <x86intrin.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>
#include "vec.h"
#include "tiles.h"
static double acc_t[2][8];
#define TMARK(i) do { uint64_t now = __rdtsc(); acc_t[t_id][i] += now - tlast; tlast = now; } while (0)
namespace at {
inline bool in_parallel_region() { return omp_in_parallel(); }
inline int get_num_threads() { return omp_get_max_threads(); }
}  // namespace at
namespace {
#include "tile_attention_phases.inc"
}
int main(int argc, char** argv) {
  const int S0 = argc > 1 ? atoi(argv[1]) : 300, T = argc > 2 ? atoi(argv[2]) : 16;
  const int hq = 9, hkv = 3, D = 64, cap = 2048, S = S0 + T;
  const int64_t ldq = (hq + 2 * hkv) * D;
  std::vector<float> q(T * ldq), kb(hkv * cap * D), vb(hkv * cap * D), out(T * hq * D);
  srand(1);
  for (auto* v : {&q, &kb, &vb})
    for (auto& x : *v) x = rand() / (float)RAND_MAX - 0.5f;
  std::vector<char> mask(T * S, 1);  // causal among the step's tokens
  for (int t = 0; t < T; ++t)
    for (int s = S0 + t + 1; s < S; ++s) mask[t * S + s] = 0;
  const int N = 3000;
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t c0 = __rdtsc();
  for (int rep = 0; rep < N; ++rep)
    tile_attention(q.data(), ldq, kb.data(), vb.data(), cap, S, (bool*)mask.data(), T, hq, hkv, D, 0.125f, out.data());
  const auto t1 = std::chrono::steady_clock::now();
  const uint64_t c1 = __rdtsc();
  const double us_per_tick = std::chrono::duration<double, std::micro>(t1 - t0).count() / (c1 - c0);
  printf("S0=%d T=%d: %.1f us a call\n", S0, T, std::chrono::duration<double, std::micro>(t1 - t0).count() / N);
  const char* nm[8] = {"transpose", "wait", "scores+values", "mask", "softmax", "last values", "wait", "merge"};
  for (int th = 0; th < 2; ++th) {
    printf("  thread %d:", th);
    for (int i = 0; i < 8; ++i) printf(" %s %.1f", nm[i], acc_t[th][i] * us_per_tick / N);
    printf("\n");
  }
}
