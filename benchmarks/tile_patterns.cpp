// TileConfig below is a deliberate copy of amx.h's (src/llmaccel/kernels), so this file builds alone.
// Tile-unit instruction patterns for one block (9 bf16 products, 16 rows), one core, no vector work:
//   0 the kept pattern (3 B + 3 A tile loads, 3 C tiles zeroed, 9 products, 3 C stores)
//   1 products only, 2 products + C stores, 3 products + loads (no stores)
//   4 three A tiles, B reloaded once
//   5 two blocks a round, C tiles alternating 0-2 / 3-5 (stores of one set behind the other's products)
//   6 as 5 without stores, 7 as 5 with A loaded once per part and B reloaded per product
//   ./tile_patterns MODE    (ns per block)
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <chrono>
#include <sys/syscall.h>
#include <unistd.h>
struct alignas(64) TileConfig { uint8_t palette = 1, start_row = 0, reserved[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
alignas(64) uint16_t A[3][512], B[3][512]; alignas(64) float C[6][256];
int main(int argc, char** argv){
  syscall(SYS_arch_prctl, 0x1023, 18);
  TileConfig cfg; for (int t=0;t<8;++t) cfg.rows[t]=16, cfg.colsb[t]=64;
  asm volatile("ldtilecfg %0"::"m"(cfg));
  const int mode = atoi(argv[1]);
  const long N = 500000;
  double t=now();
  for (long i=0;i<N;++i){
    if (mode == 0 || mode == 3) { // the kept pattern: 3 B loads, zero 3 C, A load x3, 9 products, 3 stores (3: no stores)
      _tile_loadd(4,B[0],64); _tile_loadd(5,B[1],64); _tile_loadd(6,B[2],64);
      _tile_zero(0); _tile_zero(1); _tile_zero(2);
      _tile_loadd(3,A[0],64); _tile_loadd(7,A[1],64);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6);
      _tile_dpbf16ps(0,7,4); _tile_dpbf16ps(1,7,5); _tile_dpbf16ps(2,7,6);
      _tile_loadd(3,A[2],64);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6);
      if (mode == 0) { _tile_stored(0,C[0],64); _tile_stored(1,C[1],64); _tile_stored(2,C[2],64); }
    } else if (mode == 1 || mode == 2) { // no loads: products only (2: and the C stores)
      _tile_zero(0); _tile_zero(1); _tile_zero(2);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6);
      _tile_dpbf16ps(0,7,4); _tile_dpbf16ps(1,7,5); _tile_dpbf16ps(2,7,6);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6);
      if (mode == 2) { _tile_stored(0,C[0],64); _tile_stored(1,C[1],64); _tile_stored(2,C[2],64); }
    } else if (mode == 4) { // three A tiles (3, 6, 7) loaded once, B in 4 and 5, tile 4 reloaded for the third column group
      _tile_loadd(4,B[0],64); _tile_loadd(5,B[1],64);
      _tile_zero(0); _tile_zero(1); _tile_zero(2);
      _tile_loadd(3,A[0],64); _tile_loadd(7,A[1],64); _tile_loadd(6,A[2],64);
      _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(0,7,4); _tile_dpbf16ps(1,7,5); _tile_dpbf16ps(0,6,4); _tile_dpbf16ps(1,6,5);
      _tile_loadd(4,B[2],64);
      _tile_dpbf16ps(2,3,4); _tile_dpbf16ps(2,7,4); _tile_dpbf16ps(2,6,4);
      _tile_stored(0,C[0],64); _tile_stored(1,C[1],64); _tile_stored(2,C[2],64);
    } else if (mode == 5 || mode == 6) { // two blocks per iteration, C sets {0,1,2} and {3,4,5}; A = 6, B = 7
#define BLK(c0,c1,c2) \
      _tile_zero(c0); _tile_zero(c1); _tile_zero(c2); \
      _tile_loadd(7,B[0],64); \
      _tile_loadd(6,A[0],64); _tile_dpbf16ps(c0,6,7); _tile_loadd(6,A[1],64); _tile_dpbf16ps(c0,6,7); _tile_loadd(6,A[2],64); _tile_dpbf16ps(c0,6,7); \
      _tile_loadd(7,B[1],64); \
      _tile_loadd(6,A[0],64); _tile_dpbf16ps(c1,6,7); _tile_loadd(6,A[1],64); _tile_dpbf16ps(c1,6,7); _tile_loadd(6,A[2],64); _tile_dpbf16ps(c1,6,7); \
      _tile_loadd(7,B[2],64); \
      _tile_loadd(6,A[0],64); _tile_dpbf16ps(c2,6,7); _tile_loadd(6,A[1],64); _tile_dpbf16ps(c2,6,7); _tile_loadd(6,A[2],64); _tile_dpbf16ps(c2,6,7);
      BLK(0,1,2)
      if (mode == 5) { _tile_stored(3,C[3],64); _tile_stored(4,C[4],64); _tile_stored(5,C[5],64); }
      BLK(3,4,5)
      if (mode == 5) { _tile_stored(0,C[0],64); _tile_stored(1,C[1],64); _tile_stored(2,C[2],64); }
    } else if (mode == 7) { // two blocks, C double-buffered, A in 6 and 7 alternating, B reloaded per g... use p-outer: A_p loaded once, B_g reloaded per p
#define BLK2(c0,c1,c2) \
      _tile_zero(c0); _tile_zero(c1); _tile_zero(c2); \
      _tile_loadd(6,A[0],64); _tile_loadd(7,B[0],64); _tile_dpbf16ps(c0,6,7); _tile_loadd(7,B[1],64); _tile_dpbf16ps(c1,6,7); _tile_loadd(7,B[2],64); _tile_dpbf16ps(c2,6,7); \
      _tile_loadd(6,A[1],64); _tile_loadd(7,B[0],64); _tile_dpbf16ps(c0,6,7); _tile_loadd(7,B[1],64); _tile_dpbf16ps(c1,6,7); _tile_loadd(7,B[2],64); _tile_dpbf16ps(c2,6,7); \
      _tile_loadd(6,A[2],64); _tile_loadd(7,B[0],64); _tile_dpbf16ps(c0,6,7); _tile_loadd(7,B[1],64); _tile_dpbf16ps(c1,6,7); _tile_loadd(7,B[2],64); _tile_dpbf16ps(c2,6,7);
      BLK2(0,1,2)
      _tile_stored(3,C[3],64); _tile_stored(4,C[4],64); _tile_stored(5,C[5],64);
      BLK2(3,4,5)
      _tile_stored(0,C[0],64); _tile_stored(1,C[1],64); _tile_stored(2,C[2],64);
    }
  }
  double dt=(now()-t)/N;
  printf("mode %d: %.2f ns/block\n", mode, dt*1e9/(mode>=5?2:1));
  _tile_release();
}
