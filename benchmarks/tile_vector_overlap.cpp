// TileConfig below is a deliberate copy of amx.h's (src/llmaccel/kernels), so this file builds alone.
// Do tile products overlap with independent vector work? MODE bits: 1 three tile products,
// 2 24 FMAs, 4 24 vpermw, 8 24 loads, 16 three B tile loads, 32 a C tile store, 64 an A tile load,
// 128 24 vector stores, 256 24 vector stores then a tile load of them.
//   ./tile_vector_overlap MODE    (ns per round)
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <chrono>
#include <sys/syscall.h>
#include <unistd.h>
struct alignas(64) TileConfig { uint8_t palette = 1, start_row = 0, reserved[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
alignas(64) uint16_t A[512], B[512]; alignas(64) float C[256]; alignas(64) float D[16*64];
int main(int argc, char** argv){
  syscall(SYS_arch_prctl, 0x1023, 18);
  TileConfig cfg; for (int t=0;t<8;++t) cfg.rows[t]=16, cfg.colsb[t]=64;
  asm volatile("ldtilecfg %0"::"m"(cfg));
  _tile_loadd(3, A, 64); _tile_loadd(4,B,64); _tile_loadd(5,B,64); _tile_loadd(6,B,64);
  _tile_zero(0); _tile_zero(1); _tile_zero(2);
  const int mode = atoi(argv[1]);
  const long N = 2000000;
  __m512 f[8]; for (int i=0;i<8;++i) f[i]=_mm512_set1_ps(i*0.1f);
  __m512i s[8]; for (int i=0;i<8;++i) s[i]=_mm512_set1_epi16(i);
  const __m512 k = _mm512_set1_ps(1.0001f);
  double t=now();
  for (long i=0;i<N;++i){
    if (mode & 1) { _tile_dpbf16ps(0,3,4); _tile_dpbf16ps(1,3,5); _tile_dpbf16ps(2,3,6); }
    if (mode & 16) { _tile_loadd(4, B, 64); _tile_loadd(5, B, 64); _tile_loadd(6, B, 64); }
    if (mode & 32) { _tile_stored(0, C, 64); }
    if (mode & 64) { _tile_loadd(3, A, 64); }
    if (mode & 128) { for (int j=0;j<24;++j) _mm512_store_ps(D + (j&15)*16, f[j&7]); }
    if (mode & 256) { for (int j=0;j<24;++j) _mm512_store_ps(D + 256 + (j&15)*16, f[j&7]); _tile_loadd(4, D+256, 64); }
    if (mode & 2) { // 24 FMAs (8 chains x 3)
      for (int r=0;r<3;++r) for (int j=0;j<8;++j) f[j]=_mm512_fmadd_ps(f[j],k,k);
    }
    if (mode & 4) { // 24 vpermw (p5)
      for (int r=0;r<3;++r) for (int j=0;j<8;++j) s[j]=_mm512_permutexvar_epi16(s[j], s[(j+1)&7]);
    }
    if (mode & 8) { // 24 loads + 8 stores
      for (int r=0;r<3;++r) for (int j=0;j<8;++j) f[j]=_mm512_add_ps(f[j], _mm512_load_ps(C + ((r*8+j)&15)*16));
    }
    asm volatile("" ::: "memory");
  }
  double dt=(now()-t)/N;
  float sum=0; for (int i=0;i<8;++i) sum+=f[i][0]+s[i][0];
  printf("mode %d: %.2f ns/iter (%g)\n", mode, dt*1e9, sum);
  _tile_release();
}
