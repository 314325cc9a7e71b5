// TileConfig below is a deliberate copy of amx.h's (src/llmaccel/kernels), so this file builds alone.
// (commit f175b42) does a tile product cost less with fewer rows? The kept block pattern (3 B tile loads, 3 C
// tiles zeroed, A loads, 9 products (PARTS 3) or 3 (PARTS 1), 3 C stores) with A and C tiles of R rows,
// one core, best of 5 runs. Measured: the same time for 1, 3, 6 and 16 rows, so rows <= 5 put the three
// parts of x in one A tile (gemm_amx.cpp, STACK_ROWS).
//   ./tile_rows R PARTS    (ns per block)
#include <immintrin.h>
#include <cstdint>
#include <initializer_list>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <sys/syscall.h>
#include <unistd.h>
struct alignas(64) TileConfig { uint8_t palette = 1, start_row = 0, reserved[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
alignas(64) uint16_t A[3][512], B[3][512]; alignas(64) float C[6][256];
int main(int argc, char** argv){
  syscall(SYS_arch_prctl, 0x1023, 18);
  const int R = atoi(argv[1]); const int parts = atoi(argv[2]);
  TileConfig cfg; for (int t : {0,1,2,3,7}) cfg.rows[t]=R, cfg.colsb[t]=64; for (int t: {4,5,6}) cfg.rows[t]=16, cfg.colsb[t]=64;
  asm volatile("ldtilecfg %0"::"m"(cfg));
  const long N = 400000;
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
  double t=now();
  for (long i=0;i<N;++i){
      _tile_loadd(4,B[0],64); _tile_loadd(5,B[1],64); _tile_loadd(6,B[2],64);
      _tile_zero(0); _tile_zero(1); _tile_zero(2);
      _tile_loadd(3,A[0],64);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6);
      if (parts == 3) {
      _tile_loadd(7,A[1],64);
      _tile_dpbf16ps(0,7,4); _tile_dpbf16ps(1,7,5); _tile_dpbf16ps(2,7,6);
      _tile_loadd(3,A[2],64);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6);
      }
      _tile_stored(0,C[0],64); _tile_stored(1,C[1],64); _tile_stored(2,C[2],64);
  }
  double dt = (now()-t)/N*1e9; if (dt < best) best = dt;
  }
  printf("rows %2d parts %d: %.1f ns a block\n", R, parts, best);
}
