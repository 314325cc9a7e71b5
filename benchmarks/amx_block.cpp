// NB, QB, Q4_BYTES, Q8_BYTES and Packed below are deliberate copies of gemm_paths.h's (AVX-512 values),
// for the helpers run.sh copies out of gemm_amx.cpp; its `current` loop is a deliberate copy of
// run_panels_amx's block loop (gemm_amx.cpp) as it was at commit caff442.
// One 16-row panel of the AMX code-block path (gemm_amx.cpp), hot in cache, one core: ns per
// 48 x 32 block, for the kept loop and four reorderings of it (all checked equal to it bit for bit):
//   current  decode, 9 tile products, scale, block by block (the kernel's loop)
//   dbuf     C tiles 0-2 / 3-5 alternate between blocks, A = tile 6, B = tile 7 reloaded per product;
//            stores of block b-1 and its scaling lag behind block b's products, decode two blocks ahead
//   db2      as dbuf, with the stores of C(b-1) issued before block b's products
//   il2      the kept tiles, with the decode of block b+2 and the scaling of block b-1 cut into nine
//            slices, one after each tile product (d and m in registers, slice bounds fixed at compile
//            time, one branch a block); commit caff442 tried it in the kernel itself
// (Earlier variants measured in BENCHMARKS.md: register accumulators with the column groups outermost,
// commit 2413b4d, and il / dil, slices with looser code, commit caff442, are in git history at commit cc5df2b.)
//   ./amx_block x NB_BLOCKS PANELS PARTS LAG    PARTS: bits 1 decode, 2 tile products, 4 scaling
// (the kernel's own decode / tile / scale functions are pulled in from gemm_amx.cpp by run.sh).
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


// stores of C(b-1) first (products of b-1 long done), then products(b), then the vector work
static void panel_db2(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3][3 * 512] = {}; alignas(64) float cbuf[3][768] = {}; alignas(64) float acc[768];
  for (int i=0;i<768;++i) acc[i]=0;
  if (PM&1) { decode_block_pairs(panel, btile[0]); if (nb > 1) decode_block_pairs(panel + bb, btile[1]); }
  for (int64_t b = 0; b < nb + LAG; ++b) {
    if (b >= 1 && b - 1 < nb && (PM&2)) {
      float* cb = cbuf[(b - 1) % 3];
      if ((b - 1) & 1) { _tile_stored(3, cb, 64); _tile_stored(4, cb + 256, 64); _tile_stored(5, cb + 512, 64); }
      else { _tile_stored(0, cb, 64); _tile_stored(1, cb + 256, 64); _tile_stored(2, cb + 512, 64); }
    }
    if (b < nb && (PM&2)) {
      const uint16_t* bt = btile[b % 3];
      if (b & 1) { PRODS(3,4,5, bt, b) } else { PRODS(0,1,2, bt, b) }
    }
    if (b + 2 < nb && (PM&1)) decode_block_pairs(panel + (b + 2) * bb, btile[(b + 2) % 3]);
    if (b >= LAG && b - LAG < nb && (PM&4)) scale_block(reinterpret_cast<const float*>(panel + (b - LAG) * bb), cbuf[(b - LAG) % 3], xsum + b - LAG, nb, 16, acc);
  }
  for (int g=0; g<3; ++g) for (int r=0;r<16;++r) _mm512_storeu_ps(y + r*ldy + g*16, _mm512_load_ps(acc + g*256 + r*16));
}

// interleaved: the AMX work of block b with the decode of b+2 and the scaling of b-1, a slice after each product
static inline void dec_iter(const uint8_t* blk, uint16_t* t, int64_t i, __m512i table) {
  const uint8_t* c = blk + 8 * NB;
  const int64_t g = i / 8, kp = i % 8;
  const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32)));
  _mm512_store_si512(t + g * 512 + kp * 32, _mm512_permutexvar_epi16(v, table));
  _mm512_store_si512(t + g * 512 + (kp + 8) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), table));
}

// il2: slices as tight as the kept loop's vector code: the scaled block's d and m in registers,
// slice bounds fixed at compile time, the per-block choice (decode? scale?) made once per block.
template <int S, bool DEC, bool SCL>
static inline void slice2(const uint8_t* dsrc, uint16_t* ddst, __m512i table, const __m512* d, const __m512* m,
                          const float* cb, const float* xs, int64_t nb, float* acc) {
  if (DEC) {
#pragma GCC unroll 8
    for (int i = 24 * S / 9; i < 24 * (S + 1) / 9; ++i) dec_iter(dsrc, ddst, i, table);
  }
  if (SCL) {
#pragma GCC unroll 8
    for (int j = 48 * S / 9; j < 48 * (S + 1) / 9; ++j) {
      const int g = j / 16, r = j % 16;
      const __m512 s = _mm512_fmadd_ps(d[g], _mm512_load_ps(cb + g * 256 + r * 16), _mm512_load_ps(acc + g * 256 + r * 16));
      _mm512_store_ps(acc + g * 256 + r * 16, _mm512_fmadd_ps(m[g], _mm512_set1_ps(xs[r * nb]), s));
    }
  }
}
template <bool DEC, bool SCL>
static inline void il2_block(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb,
                             int64_t b, uint16_t (*btile)[3 * 512], float (*cbuf)[768], float* acc, __m512i table) {
  const uint16_t* bt = btile[b % 3];
  const uint8_t* dsrc = panel + (b + 2) * bb; uint16_t* ddst = btile[(b + 2) % 3];
  const float* dmp = reinterpret_cast<const float*>(panel + (b - 1) * bb);
  __m512 d[3], m[3];
  if (SCL) for (int g = 0; g < 3; ++g) d[g] = _mm512_loadu_ps(dmp + g * 16), m[g] = _mm512_loadu_ps(dmp + NB + g * 16);
  const float* cb = cbuf[(b - 1) & 1]; const float* xs = xsum + b - 1;
  const bool tl = PM & 2;  // microbenchmark switch: tile work on or off
  if (tl) {
    _tile_loadd(4, bt, 64); _tile_loadd(5, bt + 512, 64); _tile_loadd(6, bt + 1024, 64);
    _tile_zero(0); _tile_zero(1); _tile_zero(2);
    _tile_loadd(3, parts + ((0 * nb + b) * M) * QB, 64);
    _tile_loadd(7, parts + ((1 * nb + b) * M) * QB, 64);
  }
#define SL(s) slice2<s, DEC, SCL>(dsrc, ddst, table, d, m, cb, xs, nb, acc);
  if (tl) _tile_dpbf16ps(0, 3, 4); SL(0)
  if (tl) _tile_dpbf16ps(1, 3, 5); SL(1)
  if (tl) _tile_dpbf16ps(2, 3, 6); SL(2)
  if (tl) _tile_dpbf16ps(0, 7, 4); SL(3)
  if (tl) _tile_dpbf16ps(1, 7, 5); SL(4)
  if (tl) _tile_dpbf16ps(2, 7, 6); SL(5)
  if (tl) _tile_loadd(3, parts + ((2 * nb + b) * M) * QB, 64);
  if (tl) _tile_dpbf16ps(0, 3, 4); SL(6)
  if (tl) _tile_dpbf16ps(1, 3, 5); SL(7)
  if (tl) _tile_dpbf16ps(2, 3, 6); SL(8)
#undef SL
  asm volatile("" ::: "memory");
  float* cs = cbuf[b & 1];
  if (tl) { _tile_stored(0, cs, 64); _tile_stored(1, cs + 256, 64); _tile_stored(2, cs + 512, 64); }
  asm volatile("" ::: "memory");
}
static void panel_il2(const uint16_t* parts, const float* xsum, int64_t nb, int64_t M, const uint8_t* panel, int64_t bb, float* y, int64_t ldy) {
  alignas(64) uint16_t btile[3][3 * 512] = {}; alignas(64) float cbuf[2][768] = {}; alignas(64) float acc[768];
  for (int i = 0; i < 768; ++i) acc[i] = 0;
  const bool dec = PM & 1, scl = PM & 4;
  if (dec) { decode_block_pairs(panel, btile[0]); if (nb > 1) decode_block_pairs(panel + bb, btile[1]); }
  const __m512i table = nibble_table();
  for (int64_t b = 0; b < nb; ++b) {
    const bool db = dec && b + 2 < nb, sb = scl && b >= 1;
    if (db && sb) il2_block<true, true>(parts, xsum, nb, M, panel, bb, b, btile, cbuf, acc, table);
    else if (db) il2_block<true, false>(parts, xsum, nb, M, panel, bb, b, btile, cbuf, acc, table);
    else if (sb) il2_block<false, true>(parts, xsum, nb, M, panel, bb, b, btile, cbuf, acc, table);
    else il2_block<false, false>(parts, xsum, nb, M, panel, bb, b, btile, cbuf, acc, table);
  }
  if (scl) scale_block(reinterpret_cast<const float*>(panel + (nb - 1) * bb), cbuf[(nb - 1) & 1], xsum + nb - 1, nb, 16, acc);
  for (int g = 0; g < 3; ++g) for (int r = 0; r < 16; ++r) _mm512_storeu_ps(y + r * ldy + g * 16, _mm512_load_ps(acc + g * 256 + r * 16));
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
  using PanelFn = void (*)(const uint16_t*, const float*, int64_t, int64_t, const uint8_t*, int64_t, float*, int64_t);
  const PanelFn fns[4] = {panel_cur, panel_db, panel_db2, panel_il2};
  const char* names[4] = {"current", "dbuf", "db2", "il2"};
  std::vector<float> y0(M*P*NB), y1(M*P*NB);
  if (PM == 7)  // every variant gives the kept loop's outputs bit for bit
    for (int v=1; v<4; ++v) {
      for (int p=0;p<P;++p) { panel_cur(parts.data(), xsum.data(), nb, M, codes.data()+p*nb*Q4_BYTES, Q4_BYTES, y0.data()+p*NB, P*NB);
                              fns[v](parts.data(), xsum.data(), nb, M, codes.data()+p*nb*Q4_BYTES, Q4_BYTES, y1.data()+p*NB, P*NB); }
      double md=0; for (size_t i=0;i<y0.size();++i) md=std::max(md,(double)std::abs(y0[i]-y1[i]));
      printf("%s: max abs diff vs current %.3g\n", names[v], md);
    }
  for (int mode=0; mode<4; ++mode) {
    double best=1e9;
    for (int rep=0; rep<9; ++rep){
      double t=now();
      for (int r=0;r<100;++r) for (int p=0;p<P;++p)
        fns[mode](parts.data(), xsum.data(), nb, M, codes.data()+p*nb*Q4_BYTES, Q4_BYTES, y0.data()+p*NB, P*NB);
      best=std::min(best,(now()-t)/100/(P*nb));
    }
    printf("%s: %.1f ns per panel-block\n", names[mode], best*1e9);
  }
}
