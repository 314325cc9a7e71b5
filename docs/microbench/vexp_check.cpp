// vec.h's vexp (on AVX-512: vrndscaleps floor, vscalefps 2^n) against its portable form (kept below
// verbatim as vec.h has it for other ISAs): every one of the 2^32 float inputs, bit for bit, NaNs
// included; then the time of each per vector. Session 21, BENCHMARKS.md "Engine cost".
#include "vec.h"

#include <chrono>
#include <cstdio>
#include <cstring>

static inline avec vexp_portable(avec x) {
  const avec tiny = x < splat(-87.0f) ? splat(0.0f) : splat(1.0f);
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  x = x > splat(88.0f) ? splat(88.0f) : x;
  avec fx = x * splat(1.44269504088896341f) + splat(0.5f);
  avec n = __builtin_convertvector(__builtin_convertvector(fx, aivec), avec);  // trunc
  n = n > fx ? n - splat(1.0f) : n;                                            // floor(x / ln2 + 1/2)
  const avec r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  avec p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  const aivec bits = (__builtin_convertvector(n, aivec) + 127) << 23;  // 2^n
  avec scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale * tiny;
}

int main() {
  uint64_t differ = 0;
  alignas(64) uint32_t in[AVL], a[AVL], b[AVL];
  for (uint64_t base = 0; base < (1ull << 32); base += AVL) {
    for (int i = 0; i < AVL; ++i) in[i] = static_cast<uint32_t>(base + i);
    avec x;
    std::memcpy(&x, in, sizeof(x));
    const avec e1 = vexp(x), e2 = vexp_portable(x);
    std::memcpy(a, &e1, sizeof(a));
    std::memcpy(b, &e2, sizeof(b));
    for (int i = 0; i < AVL; ++i) differ += a[i] != b[i];
  }
  std::printf("inputs whose result differs in any bit: %llu of 2^32\n", static_cast<unsigned long long>(differ));
  alignas(64) float buf[4096];
  for (int i = 0; i < 4096; ++i) buf[i] = -20.0f + i * 0.005f;
  for (int v = 0; v < 2; ++v) {
    const auto t0 = std::chrono::steady_clock::now();
    avec acc = splat(0.0f);
    for (int rep = 0; rep < 20000; ++rep)
      for (int i = 0; i < 4096; i += AVL) acc += v ? vexp_portable(aload(buf + i)) : vexp(aload(buf + i));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %.2f ns a vector (checksum %g)\n", v ? "portable" : "vec.h vexp", dt / (20000.0 * 4096 / AVL) * 1e9, acc[0]);
  }
}
