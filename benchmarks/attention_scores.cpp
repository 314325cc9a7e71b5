// TileConfig below is a deliberate copy of amx.h's (src/llmaccel/kernels), so this file builds alone.
// Would AMX pay for multi-token attention? Scores St (keys x rows) of one KV head for a 16-token step of
// SmolLM2 (3 query heads x 16 tokens = 48 rows, D = 64) over S keys: the engine's FMA register tiles
// (tiles.h, as tile_attention runs them) against AMX with K kept as three bf16 parts (as a cache mirror
// would hold them; not built in the timing) and Q^T split per step, St^T = K Q^T in tiles. LIM = 4: all
// 9 part products (exact products); LIM = 2: the 6 largest (hi/mid/lo pairs with index sum <= 2).
//   ./attention_scores S    (us per head; max error against float64)
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <chrono>
#include <vector>
#include <algorithm>
#include <sys/syscall.h>
#include <unistd.h>
#include "tiles.h"  // the engine's own register tiles (src/llmaccel/kernels)
#ifndef LIM
#define LIM 4
#endif
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
struct alignas(64) TileConfig { uint8_t palette = 1, start_row = 0, reserved[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
constexpr int D = 64, R = 48, RP = 48;
static inline uint16_t hi16(float f) { uint32_t u; memcpy(&u, &f, 4); return u >> 16; }
static inline float trunc_bf(float f) { uint32_t u; memcpy(&u, &f, 4); u &= 0xFFFF0000u; float g; memcpy(&g, &u, 4); return g; }
// split x into 3 bf16 parts (truncation)
static inline void split3(float x, uint16_t p[3]) { for (int i = 0; i < 3; ++i) { float t = trunc_bf(x); p[i] = hi16(t); x -= t; } }

int main(int argc, char** argv) {
  syscall(SYS_arch_prctl, 0x1023, 18);
  const int S = argc > 1 ? atoi(argv[1]) : 320;  // multiple of 16
  std::vector<float> K(S * D), Q(R * D);
  for (auto& v : K) v = rand() / (float)RAND_MAX - 0.5f;
  for (auto& v : Q) v = (rand() / (float)RAND_MAX - 0.5f) * 0.125f;
  // FMA: Qt (D, RP)
  std::vector<float> qt(D * RP), st0(S * RP), st1(S * RP);
  for (int r = 0; r < R; ++r) for (int d = 0; d < D; ++d) qt[d * RP + r] = Q[r * D + d];
  std::vector<const float*> krow(S); for (int j = 0; j < S; ++j) krow[j] = K.data() + j * D;
  // AMX: K parts row-major kp[part][S][D]; built once (the cache mirror)
  std::vector<uint16_t> kp(3 * S * D);
  for (int j = 0; j < S; ++j) for (int d = 0; d < D; ++d) { uint16_t p[3]; split3(K[j * D + d], p); for (int i = 0; i < 3; ++i) kp[(i * S + j) * D + d] = p[i]; }
  alignas(64) static uint16_t qb[3][2][3][512];  // [rowtile][dstep][part][16 pairs x 32]
  alignas(64) static float cst[2][3][256];
  TileConfig cfg; for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  asm volatile("ldtilecfg %0" ::"m"(cfg));
  auto build_q = [&]() {  // per step: Q^T in VNNI pairs, 3 parts: qb[rt][ds][p][dp*32 + 2r + e] = part p of Q[16rt + r][32ds + 2dp + e]
    for (int rt = 0; rt < 3; ++rt) for (int r = 0; r < 16; ++r) for (int ds = 0; ds < 2; ++ds) for (int dp = 0; dp < 16; ++dp) for (int e = 0; e < 2; ++e) {
      uint16_t p[3]; split3(Q[(16 * rt + r) * D + 32 * ds + 2 * dp + e], p);
      for (int i = 0; i < 3; ++i) qb[rt][ds][i][dp * 32 + 2 * r + e] = p[i];
    }
  };
  auto amx = [&](float* st) {
    for (int kt = 0; kt < S / 16; ++kt) {
      // C tiles 0..2 (row tiles) for even kt, 3..5 for odd; A = 6 (K part), B = 7 (Q part)
#define KT(c0, c1, c2)                                                                   \
      _tile_zero(c0); _tile_zero(c1); _tile_zero(c2);                                      \
      for (int ds = 0; ds < 2; ++ds) for (int pa = 0; pa < 3; ++pa) {                      \
        _tile_loadd(6, kp.data() + (pa * S + kt * 16) * D + 32 * ds, D * 2);               \
        for (int pb = 0; pb < 3; ++pb) {                                                   \
          if (pa + pb > LIM) continue;                                                   \
          _tile_loadd(7, qb[0][ds][pb], 64); _tile_dpbf16ps(c0, 6, 7);                      \
          _tile_loadd(7, qb[1][ds][pb], 64); _tile_dpbf16ps(c1, 6, 7);                      \
          _tile_loadd(7, qb[2][ds][pb], 64); _tile_dpbf16ps(c2, 6, 7);                      \
        }                                                                                  \
      }
      if (kt & 1) { KT(3, 4, 5) _tile_stored(3, st + kt * 16 * RP, RP * 4); _tile_stored(4, st + kt * 16 * RP + 16, RP * 4); _tile_stored(5, st + kt * 16 * RP + 32, RP * 4); }
      else { KT(0, 1, 2) _tile_stored(0, st + kt * 16 * RP, RP * 4); _tile_stored(1, st + kt * 16 * RP + 16, RP * 4); _tile_stored(2, st + kt * 16 * RP + 32, RP * 4); }
    }
  };
  scores_rows<3>(qt.data(), RP, D, krow.data(), S, st0.data());
  build_q(); amx(st1.data());
  double md = 0, mref = 0;
  for (int j = 0; j < S; ++j) for (int r = 0; r < R; ++r) {
    double ex = 0; for (int d = 0; d < D; ++d) ex += (double)Q[r * D + d] * K[j * D + d];
    md = std::max(md, std::abs(st1[j * RP + r] - ex)); mref = std::max(mref, std::abs(st0[j * RP + r] - ex));
  }
  printf("max abs err vs float64: fma %.3g, amx %.3g\n", mref, md);
  for (int mode = 0; mode < 3; ++mode) {
    double best = 1e9;
    for (int rep = 0; rep < 15; ++rep) {
      double t = now();
      for (int i = 0; i < 200; ++i) {
        if (mode == 0) scores_rows<3>(qt.data(), RP, D, krow.data(), S, st0.data());
        else if (mode == 1) { build_q(); amx(st1.data()); }
        else amx(st1.data());
        asm volatile("" ::: "memory");
      }
      best = std::min(best, (now() - t) / 200);
    }
    printf("%s: %.2f us per head (S=%d)\n", mode == 0 ? "fma scores" : mode == 1 ? "amx scores + Q build" : "amx scores only", best * 1e6, S);
  }
}
