// vec.h's vexp (on AVX-512: vrndscaleps floor, vscalefps 2^n) against vexp_portable, the form other
// ISAs take (and the only one before commit a20b1c2): every one of the 2^32 float inputs, bit for bit,
// NaNs included; then the time of each per vector. BENCHMARKS.md "Engine cost", commit a20b1c2.
#include "vec.h"

#include <chrono>
#include <cstdio>
#include <cstring>

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
