// NB, QB, Q4_BYTES, Q8_BYTES and Packed below are deliberate copies of gemm_paths.h's (AVX-512 values),
// for the helpers run.sh copies out of gemm_amx.cpp; its `current` loop is a deliberate copy of
// run_panels_amx's block loop (gemm_amx.cpp) as it was at commit c80b2fd.
// Two ways to take vector work out of the 16-row AMX block loop (gemm_amx.cpp), one core, hot,
// ns per 48 x 32 block (commit c80b2fd):
//   current  the kernel's loop (decode, 9 tile products, scale_block with the d and m terms)
//   m tiles  the m term out of the loop: the scaling keeps d only (acc += d C, one FMA a row and
//            column group instead of two and a broadcast), and per panel the m term runs as tile
//            products, X (block sums, three bf16 parts) times m (two bf16 parts, exact for GGUF's
//            fp16 m), 6 products per column group and 32 blocks
//   g-chunk  column groups outermost inside chunks of 3 blocks: the accumulators of one column group
//            stay in registers (16 zmm), A tiles reloaded per group from L1
// NOM=1 drops the m products of `m tiles` (wrong results): the loop's own cost.
//   ./amx_scaling NB_BLOCKS PANELS ROWS
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <cmath>
#include <chrono>
#include <vector>
#include <algorithm>
#include <sys/syscall.h>
#include <unistd.h>
constexpr int NB=48; constexpr int64_t QB=32; constexpr int64_t Q4_BYTES = 8*NB+16*NB; constexpr int64_t Q8_BYTES=8*NB+32*NB;
struct Packed { const float* f32=nullptr; const uint8_t* q=nullptr; const uint8_t* qa=nullptr; int bits=32; int64_t block_bytes=0; };
#include "helpers.inc"
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
static int R = 16; static bool NOM = getenv("NOM");
static void panel_cur(const uint16_t* parts, const float* xsum, const uint16_t*, const uint16_t*, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3 * 512]; alignas(64) float cbuf[768]; alignas(64) float acc[768];
  for (int i=0;i<768;++i) acc[i]=0;
  for (int64_t b = 0; b < nb; ++b) {
    decode_block_pairs(panel + b * bb, btile);
    block_tiles(parts, nb, M, 0, b, btile, cbuf);
    scale_block(reinterpret_cast<const float*>(panel + b * bb), cbuf, xsum + b, nb, R, acc);
  }
  for (int g=0; g<3; ++g) for (int r=0;r<R;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}
static inline void scale_d(const float* dm, const float* cb, int64_t rows, float* acc) {
  for (int g = 0; g < 3; ++g) {
    const __m512 d = _mm512_loadu_ps(dm + g * 16);
    for (int64_t r = 0; r < rows; ++r)
      _mm512_store_ps(acc + g * 256 + r * 16, _mm512_fmadd_ps(d, _mm512_load_ps(cb + g * 256 + r * 16), _mm512_load_ps(acc + g * 256 + r * 16)));
  }
}
// xparts: [3][16 rows][32 blocks] bf16 (zero past nb); mt: [3 g][2 parts][16 kp][32] bf16 (one chunk: nb <= 32)
static void panel_mt(const uint16_t* parts, const float* xsum, const uint16_t* xparts, const uint16_t* mt, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3 * 512]; alignas(64) float cbuf[768]; alignas(64) float acc[768];
  for (int i=0;i<768;++i) acc[i]=0;
  for (int64_t b = 0; b < nb; ++b) {
    decode_block_pairs(panel + b * bb, btile);
    block_tiles(parts, nb, M, 0, b, btile, cbuf);
    scale_d(reinterpret_cast<const float*>(panel + b * bb), cbuf, R, acc);
  }
  // m term: C_g = sum over X parts p and m parts q of Xp mq_g
  for (int c = 0; c * 32 < nb && !NOM; ++c) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2);
    for (int q = 0; q < 2; ++q) {
      _tile_loadd(4, mt + ((0 * 2 + q) * 8 + c) * 512, 64);  // layout [g][q][chunk]... (c < 8)
      _tile_loadd(5, mt + ((1 * 2 + q) * 8 + c) * 512, 64);
      _tile_loadd(6, mt + ((2 * 2 + q) * 8 + c) * 512, 64);
      for (int p = 0; p < 3; ++p) {
        _tile_loadd(3, xparts + (p * 8 + c) * 16 * 32, 64);
        _tile_dpbf16ps(0, 3, 4); _tile_dpbf16ps(1, 3, 5); _tile_dpbf16ps(2, 3, 6);
      }
    }
    _tile_stored(0, cbuf, 64); _tile_stored(1, cbuf + 256, 64); _tile_stored(2, cbuf + 512, 64);
    for (int i = 0; i < 3 * R; ++i) { const int g = i / R, r = i % R;
      _mm512_store_ps(acc + g*256 + r*16, _mm512_add_ps(_mm512_load_ps(acc + g*256 + r*16), _mm512_load_ps(cbuf + g*256 + r*16))); }
  }
  for (int g=0; g<3; ++g) for (int r=0;r<R;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}

// g outermost within chunks of CB blocks: accumulators of one column group in registers
constexpr int CB = 3;
static void panel_gc(const uint16_t* parts, const float* xsum, const uint16_t*, const uint16_t*, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[CB][3 * 512]; alignas(64) float cb[CB][256]; alignas(64) float acc[3 * 256];
  for (int i = 0; i < 768; ++i) acc[i] = 0;
  for (int64_t b0 = 0; b0 < nb; b0 += CB) {  // nb % CB == 0 here
    for (int i = 0; i < CB; ++i) decode_block_pairs(panel + (b0 + i) * bb, btile[i]);
    for (int g = 0; g < 3; ++g) {
      _tile_zero(0); _tile_zero(1); _tile_zero(2);
      _tile_loadd(4, btile[0] + g * 512, 64); _tile_loadd(5, btile[1] + g * 512, 64); _tile_loadd(6, btile[2] + g * 512, 64);
      for (int p = 0; p < 3; ++p) {
        _tile_loadd(3, parts + ((p * nb + b0 + 0) * M) * QB, 64); _tile_dpbf16ps(0, 3, 4);
        _tile_loadd(7, parts + ((p * nb + b0 + 1) * M) * QB, 64); _tile_dpbf16ps(1, 7, 5);
        _tile_loadd(3, parts + ((p * nb + b0 + 2) * M) * QB, 64); _tile_dpbf16ps(2, 3, 6);
      }
      _tile_stored(0, cb[0], 64); _tile_stored(1, cb[1], 64); _tile_stored(2, cb[2], 64);
      __m512 a[16];
      for (int r = 0; r < R; ++r) a[r] = _mm512_load_ps(acc + g * 256 + r * 16);
      for (int i = 0; i < CB; ++i) {
        const float* dm = reinterpret_cast<const float*>(panel + (b0 + i) * bb);
        const __m512 d = _mm512_loadu_ps(dm + g * 16), m = _mm512_loadu_ps(dm + NB + g * 16);
        for (int r = 0; r < R; ++r)
          a[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(xsum[r * nb + b0 + i]), _mm512_fmadd_ps(d, _mm512_load_ps(cb[i] + r * 16), a[r]));
      }
      for (int r = 0; r < R; ++r) _mm512_store_ps(acc + g * 256 + r * 16, a[r]);
    }
  }
  for (int g=0; g<3; ++g) for (int r=0;r<R;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}
static uint16_t bf(float f){uint32_t u; memcpy(&u,&f,4); return u>>16;}
static float fb(uint16_t h){uint32_t u=(uint32_t)h<<16; float f; memcpy(&f,&u,4); return f;}
int main(int argc, char** argv) {
  syscall(SYS_arch_prctl, 0x1023, 18);
  const int nb = argc > 1 ? atoi(argv[1]) : 18, P = argc > 2 ? atoi(argv[2]) : 64; R = argc > 3 ? atoi(argv[3]) : 16;
  const int M = 16, K = nb * 32;
  std::vector<uint8_t> codes(P * nb * Q4_BYTES);
  for (auto& c : codes) c = rand();
  std::vector<float> mval(P * NB * nb);
  for (int p = 0; p < P; ++p) for (int b = 0; b < nb; ++b) { float* dm = (float*)&codes[(p * nb + b) * Q4_BYTES];
    for (int j = 0; j < 48; ++j) { dm[j] = 0.01f * ((j * 7 + b) % 13 + 1); float m = (float)(_Float16)(-0.1f * ((j * 5 + b) % 11 + 1) / 3); dm[48 + j] = m; mval[(p * NB + j) * nb + b] = m; } }
  std::vector<float> x(M * K); for (auto& v : x) v = rand() / (float)RAND_MAX - 0.5f;
  std::vector<uint16_t> parts(3 * M * K); std::vector<float> xsum(M * nb);
  split_bf16(x.data(), M, K, parts.data(), xsum.data());
  // X parts [3][chunk 8][16][32] (bf16, truncation split as split_bf16 does), m tiles per panel [3 g][2 q][8 chunks][16 kp][16 j][2 e]
  std::vector<uint16_t> xp(3 * 8 * 16 * 32, 0);
  for (int r = 0; r < M; ++r) for (int b = 0; b < nb; ++b) { float v = xsum[r * nb + b];
    for (int p = 0; p < 3; ++p) { uint16_t h = bf(v); xp[((p * 8 + b / 32) * 16 + r) * 32 + b % 32] = h; v -= fb(h); } }
  std::vector<uint16_t> mt((size_t)P * 3 * 2 * 8 * 512, 0);
  for (int p = 0; p < P; ++p) for (int j = 0; j < 48; ++j) for (int b = 0; b < nb; ++b) {
    float v = mval[(p * NB + j) * nb + b]; int g = j / 16, jj = j % 16, c = b / 32, kp = (b % 32) / 2, e = b % 2;
    for (int q = 0; q < 2; ++q) { uint16_t h = bf(v); mt[(size_t)p * 3 * 2 * 8 * 512 + ((g * 2 + q) * 8 + c) * 512 + kp * 32 + jj * 2 + e] = h; v -= fb(h); }
    if (v != 0) { printf("m not two bf16 parts\n"); return 1; } }
  TileConfig cfg; for (int t = 0; t < 8; ++t) cfg.rows[t] = t >= 4 && t <= 6 ? 16 : R, cfg.colsb[t] = 64;
  asm volatile("ldtilecfg %0" :: "m"(cfg));
  using Fn = void (*)(const uint16_t*, const float*, const uint16_t*, const uint16_t*, int64_t, int64_t, const uint8_t*, int64_t, float*, int64_t);
  Fn fns[3] = {panel_cur, panel_mt, panel_gc}; const char* names[3] = {"current", "m tiles", "g-chunk"};
  std::vector<float> y0(M * P * NB), y1(M * P * NB);
  for (int v = 1; v < 3; ++v) {  // against the kept loop: m tiles reorder fp32 sums, g-chunk does not
    for (int p = 0; p < P; ++p) {
      const uint16_t* m = mt.data() + (size_t)p * 3 * 2 * 8 * 512;
      panel_cur(parts.data(), xsum.data(), xp.data(), m, nb, M, codes.data() + p * nb * Q4_BYTES, Q4_BYTES, y0.data() + p * NB, P * NB);
      fns[v](parts.data(), xsum.data(), xp.data(), m, nb, M, codes.data() + p * nb * Q4_BYTES, Q4_BYTES, y1.data() + p * NB, P * NB);
    }
    double md = 0, mx = 0;
    for (int r = 0; r < R; ++r) for (int i = 0; i < P * NB; ++i) { md = std::max(md, (double)std::fabs(y0[r*P*NB+i] - y1[r*P*NB+i])); mx = std::max(mx, (double)std::fabs(y0[r*P*NB+i])); }
    printf("nb %d rows %d, %s: max diff %.3g of max %.3g\n", nb, R, names[v], md, mx);
  }
  for (int round = 0; round < 3; ++round) for (int v = 0; v < 3; ++v) {
    double best = 1e9;
    for (int rep = 0; rep < 7; ++rep) { double t = now();
      for (int it = 0; it < 50; ++it) for (int p = 0; p < P; ++p) fns[v](parts.data(), xsum.data(), xp.data(), mt.data() + (size_t)p * 3 * 2 * 8 * 512, nb, M, codes.data() + p * nb * Q4_BYTES, Q4_BYTES, y0.data() + p * NB, P * NB);
      best = std::min(best, (now() - t) / 50 / (P * nb)); }
    printf("  %s: %.1f ns per panel-block\n", names[v], best * 1e9);
  }
}
