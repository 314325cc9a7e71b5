// TileConfig below is a deliberate copy of amx.h's (src/llmaccel/kernels), so this file builds alone.
// Vector stores of a 1 KB tile, then a tile load of what was stored DIST rounds ago, with or without
// three tile products a round. MODE bits: 1 stores, 2 tile load, 4 products.
//   ./store_then_tile_load MODE DIST    (ns per round)
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <sys/syscall.h>
#include <unistd.h>
struct alignas(64) TileConfig { uint8_t palette = 1, start_row = 0, reserved[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
alignas(64) uint16_t R[16][512]; alignas(64) float C[256];
int main(int argc, char** argv){
  syscall(SYS_arch_prctl, 0x1023, 18);
  TileConfig cfg; for (int t=0;t<8;++t) cfg.rows[t]=16, cfg.colsb[t]=64;
  asm volatile("ldtilecfg %0"::"m"(cfg));
  const int mode = atoi(argv[1]), dist = atoi(argv[2]);
  const long N = 1000000;
  __m512i v = _mm512_set1_epi16(1);
  _tile_zero(0); _tile_loadd(3, R[0], 64);
  double t=now();
  for (long i=0;i<N;++i){
    uint16_t* w = R[i & 15];
    if (mode & 1) for (int j=0;j<16;++j) _mm512_store_si512(w + j*32, v);   // 16 stores = 1 tile
    if (mode & 2) _tile_loadd(4, R[(i - dist) & 15], 64);
    if (mode & 4) { _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,4); _tile_dpbf16ps(2,3,4); }
    v = _mm512_add_epi16(v, v);
  }
  double dt=(now()-t)/N;
  printf("mode %d dist %d: %.2f ns/iter\n", mode, dist, dt*1e9);
  _tile_release();
}
