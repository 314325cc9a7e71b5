// One 16-row panel of the AMX code-block path (skinny_gemm.cpp), hot in cache, one core: ns per
// 48 x 32 block. Compares the kept loop ("current": decode, 9 tile products, scale, block by block)
// with a double-buffered variant ("dbuf": C tiles 0-2 / 3-5 alternate between blocks, A = tile 6,
// B = tile 7 reloaded per column group; stores of block b-1 and its scaling lag behind block b's
// products, decode runs two blocks ahead). Results of the two are checked equal.
//   ./amx_block x NB_BLOCKS PANELS PARTS LAG    PARTS: bits 1 decode, 2 tile products, 4 scaling
// (the kernel's own decode / tile / scale functions are pulled in from skinny_gemm.cpp by run.sh).
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <chrono>
#include <vector>
#include <algorithm>
#include <sys/syscall.h>
#include <unistd.h>
constexpr int NB=48; constexpr int64_t QB=32; constexpr int64_t Q4_BYTES = 8*NB+16*NB; constexpr int64_t Q8_BYTES=8*NB+32*NB;
struct Packed { const float* f32=nullptr; const uint8_t* q=nullptr; const uint8_t* qa=nullptr; int bits=32; int64_t block_bytes=0; };
#include "helpers.inc"
static int PM = 7;  // parts run: 1 decode, 2 tile products, 4 scaling
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}

// decode only tile g of a block (pairs layout)
static inline void decode_g(const uint8_t* blk, int g, uint16_t* t /*[512]*/) {
  const uint8_t* c = blk + 8 * NB + g * 8 * 32;
  const __m512i table = nibble_table();
#pragma GCC unroll 8
  for (int64_t kp = 0; kp < 8; ++kp) {
    const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + kp * 32)));
    _mm512_store_si512(t + kp * 32, _mm512_permutexvar_epi16(v, table));
    _mm512_store_si512(t + (kp + 8) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), table));
  }
}

// g-outer: one panel, 16 rows, acc in registers
static void panel_gouter(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t bt[3][512];
  alignas(64) float cb[3][256];
  for (int g = 0; g < 3; ++g) {
    __m512 acc[16];
    for (int r = 0; r < 16; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 3) {
      const int nbk = std::min<int64_t>(3, nb - b);
      for (int i = 0; i < nbk; ++i) decode_g(panel + (b + i) * bb, g, bt[i]);
      _tile_loadd(4, bt[0], 64); _tile_zero(0);
      if (nbk > 1) { _tile_loadd(5, bt[1], 64); _tile_zero(1); }
      if (nbk > 2) { _tile_loadd(6, bt[2], 64); _tile_zero(2); }
      for (int p = 0; p < 3; ++p) {
        _tile_loadd(3, parts + ((p * nb + b) * M) * QB, 64);
        _tile_dpbf16ps(0, 3, 4);
        if (nbk > 1) { _tile_loadd(7, parts + ((p * nb + b + 1) * M) * QB, 64); _tile_dpbf16ps(1, 7, 5); }
        if (nbk > 2) { _tile_loadd(3, parts + ((p * nb + b + 2) * M) * QB, 64); _tile_dpbf16ps(2, 3, 6); }
      }
      _tile_stored(0, cb[0], 64);
      if (nbk > 1) _tile_stored(1, cb[1], 64);
      if (nbk > 2) _tile_stored(2, cb[2], 64);
      for (int i = 0; i < nbk; ++i) {
        const float* dm = reinterpret_cast<const float*>(panel + (b + i) * bb);
        const __m512 d = _mm512_loadu_ps(dm + g * 16), m = _mm512_loadu_ps(dm + NB + g * 16);
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) {
          acc[r] = _mm512_fmadd_ps(d, _mm512_load_ps(cb[i] + r * 16), acc[r]);
          acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(xsum[r * nb + b + i]), acc[r]);
        }
      }
    }
    for (int r = 0; r < 16; ++r) _mm512_storeu_ps(y + r * ldy + g * 16, acc[r]);
  }
}

// current: one panel
static void panel_cur(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3 * 512] = {}; alignas(64) float cbuf[768] = {}; alignas(64) float acc[768];
  for (int i=0;i<768;++i) acc[i]=0;
  for (int64_t b = 0; b < nb; ++b) {
    if (PM & 1) decode_block_pairs(panel + b * bb, btile);
    if (PM & 2) block_tiles(parts, nb, M, 0, b, btile, cbuf);
    if (PM & 4) scale_block(reinterpret_cast<const float*>(panel + b * bb), cbuf, xsum + b, nb, 16, acc);
  }
  for (int g=0; g<3; ++g) for (int r=0;r<16;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}


// software pipelined: products of block b, decode of b+1, scale of b-1, then the stores of C(b)

static void panel_pipe(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3][3 * 512]; alignas(64) float cbuf[2][768]; alignas(64) float acc[768];
  for (int i=0;i<768;++i) acc[i]=0;
  decode_block_pairs(panel, btile[0]);
  for (int64_t b = 0; b <= nb; ++b) {
    if (b < nb && (PM&2)) {
      const uint16_t* bt = btile[b % 3];
      _tile_loadd(4, bt, 64); _tile_loadd(5, bt + 512, 64); _tile_loadd(6, bt + 1024, 64);
      _tile_zero(0); _tile_zero(1); _tile_zero(2);
      _tile_loadd(3, parts + ((0 * nb + b) * M) * QB, 64);
      _tile_loadd(7, parts + ((1 * nb + b) * M) * QB, 64);
      _tile_dpbf16ps(0, 3, 4); _tile_dpbf16ps(1, 3, 5); _tile_dpbf16ps(2, 3, 6);
      _tile_dpbf16ps(0, 7, 4); _tile_dpbf16ps(1, 7, 5); _tile_dpbf16ps(2, 7, 6);
      _tile_loadd(3, parts + ((2 * nb + b) * M) * QB, 64);
      _tile_dpbf16ps(0, 3, 4); _tile_dpbf16ps(1, 3, 5); _tile_dpbf16ps(2, 3, 6);
    }
    if (b + 2 < nb && (PM&1)) decode_block_pairs(panel + (b + 2) * bb, btile[(b + 2) % 3]);
    if (b > 0 && (PM&4)) scale_block(reinterpret_cast<const float*>(panel + (b - 1) * bb), cbuf[(b - 1) & 1], xsum + b - 1, nb, 16, acc);
    if (b < nb && (PM&2)) { float* cb = cbuf[b & 1]; _tile_stored(0, cb, 64); _tile_stored(1, cb + 256, 64); _tile_stored(2, cb + 512, 64); }
  }
  for (int g=0; g<3; ++g) for (int r=0;r<16;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}

// double-buffered C tiles (0-2 / 3-5), A = 6, B = 7: products of block b, stores of b-1, decode b+1, scale b-LAG
static int LAG=2;
#define PRODS(c0,c1,c2, bt, b) \
      _tile_zero(c0); _tile_zero(c1); _tile_zero(c2); \
      for (int p = 0; p < 3; ++p) { \
        _tile_loadd(6, parts + ((p * nb + (b)) * M) * QB, 64); \
        _tile_loadd(7, bt, 64); _tile_dpbf16ps(c0, 6, 7); \
        _tile_loadd(7, bt + 512, 64); _tile_dpbf16ps(c1, 6, 7); \
        _tile_loadd(7, bt + 1024, 64); _tile_dpbf16ps(c2, 6, 7); }
static void panel_db(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3][3 * 512] = {}; alignas(64) float cbuf[3][768] = {}; alignas(64) float acc[768];
  for (int i=0;i<768;++i) acc[i]=0;
  if (PM&1) { decode_block_pairs(panel, btile[0]); if (nb > 1) decode_block_pairs(panel + bb, btile[1]); }
  for (int64_t b = 0; b < nb + LAG; ++b) {
    if (b < nb && (PM&2)) {
      const uint16_t* bt = btile[b % 3];
      if (b & 1) { PRODS(3,4,5, bt, b) } else { PRODS(0,1,2, bt, b) }
    }
    if (b >= 1 && b - 1 < nb && (PM&2)) {
      float* cb = cbuf[(b - 1) % 3];
      if ((b - 1) & 1) { _tile_stored(3, cb, 64); _tile_stored(4, cb + 256, 64); _tile_stored(5, cb + 512, 64); }
      else { _tile_stored(0, cb, 64); _tile_stored(1, cb + 256, 64); _tile_stored(2, cb + 512, 64); }
    }
    if (b + 2 < nb && (PM&1)) decode_block_pairs(panel + (b + 2) * bb, btile[(b + 2) % 3]);
    if (b >= LAG && b - LAG < nb && (PM&4)) scale_block(reinterpret_cast<const float*>(panel + (b - LAG) * bb), cbuf[(b - LAG) % 3], xsum + b - LAG, nb, 16, acc);
  }
  for (int g=0; g<3; ++g) for (int r=0;r<16;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}

int main(int argc, char**argv){ if (argc>4) PM=atoi(argv[4]); if (argc>5) LAG=atoi(argv[5]);
  syscall(SYS_arch_prctl, 0x1023, 18);
  const int nb = argc>2 ? atoi(argv[2]) : 18, M=16, K=nb*32, P = argc>3? atoi(argv[3]) : 64;
  std::vector<uint8_t> codes(P*nb*Q4_BYTES);
  for (size_t i=0;i<codes.size();++i) codes[i]=rand();
  for (int p=0;p<P;++p) for(int b=0;b<nb;++b){ float* dm=(float*)&codes[(p*nb+b)*Q4_BYTES]; for(int j=0;j<96;++j) dm[j]=0.01f*((j*7+b)%13+1);}
  std::vector<float> x(M*K); for(auto&v:x) v=rand()/(float)RAND_MAX-0.5f;
  std::vector<uint16_t> parts(3*M*K); std::vector<float> xsum(M*nb);
  split_bf16(x.data(), M, K, parts.data(), xsum.data());
  TileConfig cfg; for (int t=0;t<8;++t) cfg.rows[t]=16, cfg.colsb[t]=64;
  asm volatile("ldtilecfg %0"::"m"(cfg));
  std::vector<float> y0(M*P*NB), y1(M*P*NB);
  for (int p=0;p<P;++p) { panel_cur(parts.data(), xsum.data(), nb, M, codes.data()+p*nb*Q4_BYTES, Q4_BYTES, y0.data()+p*NB, P*NB);
                          panel_db(parts.data(), xsum.data(), nb, M, codes.data()+p*nb*Q4_BYTES, Q4_BYTES, y1.data()+p*NB, P*NB); }
  double md=0; for (size_t i=0;i<y0.size();++i) md=std::max(md,(double)std::abs(y0[i]-y1[i])/(std::abs(y0[i])+1e-3));
  printf("max rel diff %.3g\n", md);
  for (int mode=0; mode<2; ++mode) {
    double best=1e9;
    for (int rep=0; rep<9; ++rep){
      double t=now();
      for (int r=0;r<100;++r) for (int p=0;p<P;++p)
        (mode==0?panel_cur:panel_db)(parts.data(), xsum.data(), nb, M, codes.data()+p*nb*Q4_BYTES, Q4_BYTES, y0.data()+p*NB, P*NB);
      best=std::min(best,(now()-t)/100/(P*nb));
    }
    printf("%s: %.1f ns per panel-block\n", mode?"dbuf":"current", best*1e9);
  }
}
