// (commit 2f844a4) the FMA peak of this machine's cores, the ceiling for a step's fp32 products. Twelve
// independent chains of 256-bit FMAs per thread (enough to cover the latency on two FMA pipes), no
// memory traffic; prints billions of vector FMAs a second.
//
//   g++ -O2 -march=native -fopenmp fma_peak.cpp -o fma_peak && OMP_NUM_THREADS=2 ./fma_peak
#include <immintrin.h>
#include <omp.h>

#include <cstdio>

int main() {
  const long per_thread = 4000000000L / 12 / 8;  // rounds of 12 FMAs
  float sink = 0;
  const double t0 = omp_get_wtime();
  int threads = 1;
#pragma omp parallel reduction(+ : sink)
  {
    threads = omp_get_num_threads();
    __m256 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(i * 0.001f);
    const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
    for (long n = 0; n < per_thread / threads; n++)
#pragma GCC unroll 12
      for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    for (int i = 0; i < 12; i++) sink += a[i][0];
  }
  const double t = omp_get_wtime() - t0;
  const double fmas = static_cast<double>(per_thread / threads) * threads * 12;
  printf("%d threads: %.2f G vector FMAs/s (%.1f GFLOP/s) [%g]\n", threads, fmas / t / 1e9, fmas * 16 / t / 1e9, sink);
}
