// TileConfig below is a deliberate copy of amx.h's (src/llmaccel/kernels), so this file builds alone.
// Do nine tile products (one 16-row block's worth) overlap with vector work, and does it matter where
// the vector work sits? Vector work: 8 x NF x 9 independent ops of one kind, chosen at build time:
// FMAs (default), -DPERM vpermw (port 5), -DSHIFT vpsrlw (port 0), -DLOGIC vpxor (ports 0 and 5).
//   ./tile_port_overlap MODE NF   MODE 0: the 9 products, then all the vector work ("batched")
//                                 MODE 1: 8 x NF ops after each product ("interleaved")
//                                 MODE 2: the products alone;  MODE 3: the vector work alone
// ns per round (commit caff442).
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <sys/syscall.h>
#include <unistd.h>
struct alignas(64) TileConfig { uint8_t palette = 1, start_row = 0, reserved[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
alignas(64) uint16_t A[4][512], B[4][512];
int main(int argc, char** argv){
  syscall(SYS_arch_prctl, 0x1023, 18);
  TileConfig cfg; for (int t=0;t<8;++t) cfg.rows[t]=16, cfg.colsb[t]=64;
  asm volatile("ldtilecfg %0"::"m"(cfg));
  _tile_loadd(3, A, 64); _tile_loadd(4,B,64); _tile_loadd(5,B,64); _tile_loadd(6,B,64);_tile_loadd(7,B,64);
  _tile_zero(0); _tile_zero(1); _tile_zero(2);
  const int mode = atoi(argv[1]); const int nf = atoi(argv[2]);  // FMAs x8 per product slot
  const long N = 500000;
  volatile float seed = 0.5f;
  __m512 f0=_mm512_set1_ps(seed),f1=_mm512_set1_ps(seed+1),f2=_mm512_set1_ps(seed+2),f3=_mm512_set1_ps(seed+3),f4=_mm512_set1_ps(seed+4),f5=_mm512_set1_ps(seed+5),f6=_mm512_set1_ps(seed+6),f7=_mm512_set1_ps(seed+7);
  const __m512 k = _mm512_set1_ps(1.0001f); __m512i s0=_mm512_set1_epi16(seed*3),s1=_mm512_set1_epi16(2),s2=_mm512_set1_epi16(3),s3=_mm512_set1_epi16(4),s4=_mm512_set1_epi16(5),s5=_mm512_set1_epi16(6),s6=_mm512_set1_epi16(7),s7=_mm512_set1_epi16(8);
#define R8 f0=_mm512_fmadd_ps(f0,k,k);f1=_mm512_fmadd_ps(f1,k,k);f2=_mm512_fmadd_ps(f2,k,k);f3=_mm512_fmadd_ps(f3,k,k);f4=_mm512_fmadd_ps(f4,k,k);f5=_mm512_fmadd_ps(f5,k,k);f6=_mm512_fmadd_ps(f6,k,k);f7=_mm512_fmadd_ps(f7,k,k); asm volatile("" :: "v"(f0),"v"(f1),"v"(f2),"v"(f3),"v"(f4),"v"(f5),"v"(f6),"v"(f7));
#ifdef PERM
#undef R8
#define R8 s0=_mm512_permutexvar_epi16(s0,s1);s2=_mm512_permutexvar_epi16(s2,s3);s4=_mm512_permutexvar_epi16(s4,s5);s6=_mm512_permutexvar_epi16(s6,s7);s1=_mm512_permutexvar_epi16(s1,s0);s3=_mm512_permutexvar_epi16(s3,s2);s5=_mm512_permutexvar_epi16(s5,s4);s7=_mm512_permutexvar_epi16(s7,s6); asm volatile("" :: "v"(s0),"v"(s1),"v"(s2),"v"(s3),"v"(s4),"v"(s5),"v"(s6),"v"(s7));
#endif
#ifdef SHIFT
#undef R8
#define R8 s0=_mm512_srli_epi16(s0,1);s1=_mm512_srli_epi16(s1,1);s2=_mm512_srli_epi16(s2,1);s3=_mm512_srli_epi16(s3,1);s4=_mm512_srli_epi16(s4,1);s5=_mm512_srli_epi16(s5,1);s6=_mm512_srli_epi16(s6,1);s7=_mm512_srli_epi16(s7,1); asm volatile("" :: "v"(s0),"v"(s1),"v"(s2),"v"(s3),"v"(s4),"v"(s5),"v"(s6),"v"(s7));
#endif
#ifdef LOGIC
#undef R8
#define R8 s0=_mm512_xor_si512(s0,s1);s1=_mm512_xor_si512(s1,s2);s2=_mm512_xor_si512(s2,s3);s3=_mm512_xor_si512(s3,s4);s4=_mm512_xor_si512(s4,s5);s5=_mm512_xor_si512(s5,s6);s6=_mm512_xor_si512(s6,s7);s7=_mm512_xor_si512(s7,s0); asm volatile("" :: "v"(s0),"v"(s1),"v"(s2),"v"(s3),"v"(s4),"v"(s5),"v"(s6),"v"(s7));
#endif
#define P(c,a,b) _tile_dpbf16ps(c,a,b);
  double t=now();
  for (long i=0;i<N;++i){
    if (mode == 0) { // 9 products, then 9*nf*8 FMAs
      P(0,3,4) P(1,3,5) P(2,3,6) P(0,7,4) P(1,7,5) P(2,7,6) P(0,3,4) P(1,3,5) P(2,3,6)
      for (int j=0;j<9*nf;++j) { R8 }
    } else if (mode == 1) { // interleaved
      P(0,3,4) for (int j=0;j<nf;++j) { R8 } P(1,3,5) for (int j=0;j<nf;++j) { R8 } P(2,3,6) for (int j=0;j<nf;++j) { R8 }
      P(0,7,4) for (int j=0;j<nf;++j) { R8 } P(1,7,5) for (int j=0;j<nf;++j) { R8 } P(2,7,6) for (int j=0;j<nf;++j) { R8 }
      P(0,3,4) for (int j=0;j<nf;++j) { R8 } P(1,3,5) for (int j=0;j<nf;++j) { R8 } P(2,3,6) for (int j=0;j<nf;++j) { R8 }
    } else if (mode == 2) { P(0,3,4) P(1,3,5) P(2,3,6) P(0,7,4) P(1,7,5) P(2,7,6) P(0,3,4) P(1,3,5) P(2,3,6) }
    else { for (int j=0;j<9*nf;++j) { R8 } }
  }
  double dt=(now()-t)/N;
  printf("mode %d nf %d: %6.2f ns/iter %g\n", mode, nf, dt*1e9, _mm512_reduce_add_ps(_mm512_add_ps(f0,f7))+_mm512_reduce_add_epi32(_mm512_add_epi32(s0,s7)));
  _tile_release();
}
