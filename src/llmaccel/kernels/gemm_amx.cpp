// The AMX path of the skinny GEMM, for code-block weights (skinny_gemm.cpp has the layouts and chooses
// the path; gemm_vector.cpp is the other one).
//
// Why: with code blocks a 1-token step reads ~5x fewer bytes, but a 16-row step still needs 16 fp32
// FMAs per weight, 3.4 GFLOP for SmolLM2's layers: ~13 ms at the FMA peak of these 2 cores, 2.4x a
// 1-token step. The CPU's AMX unit multiplies bf16 tiles 16 x 32 x 16 per instruction, and the codes
// are small integers, exact in bf16. With the block's sums regrouped,
//   y[r][n] = sum_b ( d[n][b] * S[r][n][b] + m[n][b] * X[r][b] ),
//   S[r][n][b] = sum_{k in b} x[r][k] q[n][k],   X[r][b] = sum_{k in b} x[r][k],
// S comes from AMX exactly as fp32 arithmetic would give it: x is split into three bf16 parts
// (hi + mid + lo == x exactly: 8 + 8 + 8 significand bits, by truncation), each product of a part and
// a code is exact in fp32, and the tile sums them in fp32. One block of 32 k is one tile product, so d
// and m are applied per block in fp32 vector FMAs. The result differs from the fp32 kernel only in the
// order of fp32 additions (~1e-7 relative), as any other GEMM would; greedy tokens are tested equal.
// Built only where the compiler targets a CPU with AMX (gemm_paths.h defines LLMACCEL_AMX); elsewhere
// this file holds the switches alone, which then say "no AMX".
#include <algorithm>
#include <cstdint>
#include <vector>

#include "gemm_paths.h"

#ifdef LLMACCEL_AMX
#include <immintrin.h>

#include "amx.h"
#endif

namespace llmaccel_gemm {

static bool amx_enabled = true;  // skinny.use_amx() turns it off, to compare or to test the other path

#ifdef LLMACCEL_AMX
constexpr int64_t AMX_ROWS = 16;  // rows of x per tile product
// Up to STACK_ROWS rows, the three parts of x share one A tile (3 M rows: part-major), so a block takes
// 3 tile products instead of 9. A tile product costs the same whatever its row count (one core, the
// kept block pattern, ns a block: 1 row 60.1, 3 rows 61.4, 6 rows 61.2, 16 rows 62.5; with one part
// instead of three 28.5-29.2; benchmarks/tile_rows.cpp), so at 1-5 rows six of the nine products
// were paid for nothing. The block's three part sums come out as separate C rows and are added in the
// scaling, lo + mid first. Whole SmolLM2 steps at 300 cached tokens, alternating in one process
// (medians of 60): k=1 7.17 -> 6.89 ms (0.960x), k=2 0.955x, k=4 0.957x, k=5 0.974x, k=16 1.001x.
constexpr int64_t STACK_ROWS = AMX_ROWS / 3;
// Every row count takes it (AMX_MIN_ROWS 1). Until commit 2413b4d fewer than 8 rows took the vector path,
// from measurements with the weights cold in memory (bench_skinny, 30 layers, ms, vector / AMX: M=1
// 6.06 / 6.57, M=4 7.33 / 7.35, M=8 9.22 / 8.50, M=16 13.31 / 11.69). In the engine's steps the codes
// stream from the large L3 here and the vector path's heavier decode (to fp32, then 1-row FMAs) costs
// more than the tile path's: whole SmolLM2 steps at 300 cached tokens, one process, the two settings
// alternating step by step, medians of 295 (ms, from 8 rows / from 1 row): k=1 9.61 / 9.01, k=2 10.41 /
// 9.20, k=4 12.11 / 9.89, k=8 11.75 / 11.62, k=16 15.21 / 15.03.
// Per block the tile unit's work is cheap, but its results pass through memory to be scaled by d and
// m, once per row, and the decode's stores feed the tile loads, so the vector and tile work of a block
// add up instead of overlapping (benchmarks/, BENCHMARKS.md "Engine cost", commit 2413b4d).
// Tried and not kept (SmolLM2-shaped layers at 16 rows, BENCHMARKS.md): folding d into the B tiles
// (d q as two exact bf16 parts, 5 products a block, no per-block scaling): 0.93x the vector path's
// time in the same run, where this design takes 0.85-0.88x: its decode needs ~3x the vector work.
// Decoding one block ahead and scaling one block behind, double-buffered C tiles: within noise.
// Scaling 2 or 4 blocks in one pass (acc kept in a register across them; the same FMAs in the same
// order, bit-identical): whole 16-token steps 0.996x / 1.001x (commit f175b42).
constexpr int64_t AMX_MIN_ROWS = 1;
// 8-bit codes (SmolLM2's LM head, Q8_0) decode to tiles with ~3x the vector work of 4-bit codes, so 1
// and 2 rows stay on the vector path: bench_skinny (cold, ms, vector / AMX) M=1 1.35 / 1.55, M=2 1.47 /
// 1.52, M=4 2.17 / 1.85; whole steps (as above, head on AMX from 1 row / from 4 rows) k=1 8.72 / 8.46,
// k=2 8.87 / 8.79, k=3 9.21 / 9.28, k=4 equal.
constexpr int64_t AMX_MIN_ROWS_Q8 = 3;

using llmaccel_amx::TileConfig;

// Where split_bf16 puts part `part` of block b of row r (in units of 32 bf16): parts[part][b][r], or
// for M <= STACK_ROWS parts[b][part][r], so that one block's 3 M rows are one A tile (stride 64 bytes).
static inline int64_t part_row(int64_t part, int64_t b, int64_t r, int64_t nb, int64_t M) {
  return M <= STACK_ROWS ? (b * 3 + part) * M + r : (part * nb + b) * M + r;
}

// Splits x (M, K) into the bf16 parts of each block (bf16 bit patterns, at part_row), and sums each
// block of each row, xsum[r][b].
static void split_bf16(const float* x, int64_t M, int64_t K, uint16_t* parts, float* xsum) {
  const int64_t nb = K / QB;
  const __m512i top_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  // the high words of two vectors of 16 floats, in order: one 64-byte store per part
  alignas(64) static const uint16_t odd_words[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                                                     33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
  const __m512i high_words = _mm512_load_si512(odd_words);
  // blocks outer, rows inner: the stores of one part run contiguously ([b][r] order). Rows outer (each
  // row's blocks 64 * M bytes apart) took 3.5 us for 16 x 576 against 1.4 us (hot, one core).
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t r = 0; r < M; ++r) {
      __m512 v0 = _mm512_loadu_ps(x + r * K + b * QB), v1 = _mm512_loadu_ps(x + r * K + b * QB + 16);
      xsum[r * nb + b] = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
      for (int part = 0; part < 3; ++part) {
        // truncation: v - top is exact
        const __m512i t0 = _mm512_and_si512(_mm512_castps_si512(v0), top_mask);
        const __m512i t1 = _mm512_and_si512(_mm512_castps_si512(v1), top_mask);
        _mm512_storeu_si512(parts + part_row(part, b, r, nb, M) * QB, _mm512_permutex2var_epi16(t0, high_words, t1));
        v0 = _mm512_sub_ps(v0, _mm512_castsi512_ps(t0));
        v1 = _mm512_sub_ps(v1, _mm512_castsi512_ps(t1));
      }
    }
}

// bf16(i & 15) for word indices i < 32: vpermw's table from a 4-bit code to its bf16 value (the upper
// half repeats the lower, so bit 4 of the index does not matter).
static inline __m512i nibble_table() {
  return _mm512_set_epi16(0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120, 0x4110, 0x4100, 0x40E0, 0x40C0, 0x40A0,
                          0x4080, 0x4040, 0x4000, 0x3F80, 0x0000, 0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120,
                          0x4110, 0x4100, 0x40E0, 0x40C0, 0x40A0, 0x4080, 0x4040, 0x4000, 0x3F80, 0x0000);
}

// The codes of one panel block -> its three B tiles (output columns [16 g, 16 g + 16)) in AMX's pair
// layout: t[g][kp][2 j + e] = bf16(q[16 g + j][2 kp + e]).
static inline void decode_block(const Packed& W, const uint8_t* blk, uint16_t* t /* [3][16 * 32] */) {
  const uint8_t* c = blk + 8 * NB;
  if (W.bits == 4) {
    // vpermw reads 5 index bits per word: with idx = v | v << 12 the low word is the byte (its low
    // nibble, plus bit 4, which the table's repeated half ignores) and the high word its high nibble.
    const __m512i table = nibble_table();
#pragma GCC unroll 48
    for (int64_t i = 0; i < 48; ++i) {
      const int64_t kp = i / 3, g = i % 3;
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + kp * NB + g * 16)));
      _mm512_store_si512(t + g * 512 + kp * 32,
                         _mm512_permutexvar_epi16(_mm512_or_si512(v, _mm512_slli_epi32(v, 12)), table));
    }
  } else {
    for (int g = 0; g < 3; ++g)
#pragma GCC unroll 16
      for (int64_t kp = 0; kp < 16; ++kp) {
        const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 2 * kp * NB + g * 16));
        const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + (2 * kp + 1) * NB + g * 16));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpacklo_epi8(r0, r1)));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpackhi_epi8(r0, r1)));
        const __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);  // exact: |q| <= 127
        _mm512_store_si512(t + g * 512 + kp * 32, reinterpret_cast<const __m512i&>(both));
      }
  }
}

// The same, from a block whose codes are stored in the AMX order (`pack`'s second layout, 4 bits):
// per tile g and k pair c < 8, 32 bytes whose byte 2 j + e holds q[16 g + j][2 c + e] in its low nibble
// and q[16 g + j][16 + 2 c + e] in its high nibble, i.e. B rows c and c + 8 side by side. One byte ->
// word widening then gives both rows with one table lookup each: half the vector work of decode_block.
// In a 16-token step of SmolLM2 (13.2 ms) skipping the decode altogether saved 1.6 ms (layers and the
// Q8_0 head); this layout saves ~0.25 ms (13.19 -> 12.96 ms, three alternating runs).
static inline void decode_block_pairs(const uint8_t* blk, uint16_t* t /* [3][16 * 32] */) {
  const uint8_t* c = blk + 8 * NB;
  const __m512i table = nibble_table();
#pragma GCC unroll 24
  for (int64_t i = 0; i < 24; ++i) {
    const int64_t g = i / 8, kp = i % 8;
    // words = bytes: vpermw reads the low 5 bits (the low nibble and one bit the repeated table ignores)
    const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32)));
    _mm512_store_si512(t + g * 512 + kp * 32, _mm512_permutexvar_epi16(v, table));
    _mm512_store_si512(t + g * 512 + (kp + 8) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), table));
  }
}

// 8-bit codes stored in the AMX order (`pack`'s second layout for 8 bits): per tile g and k pair kp,
// 32 bytes whose byte 2 j + e holds q[16 g + j][2 kp + e], i.e. one B row. Widened to 16-bit words, the
// codes (|q| <= 127) convert exactly to fp16, and an fp16 with at most 8 significant bits is a bf16
// with its exponent rebiased (15 -> 127) and its mantissa shortened: (h & 0x7fff) >> 3 plus 112 << 7,
// zero kept zero, then the sign. About 8 vector instructions per 32 codes where decode_block takes
// ~11 with two shuffles more: 50 vs 82-87 ns a block (benchmarks/), ~0.3 ms of a 16-token step's
// LM head. Tested to give the same tiles as decode_block.
static inline void decode_block_q8_pairs(const uint8_t* blk, uint16_t* t /* [3][16 * 32] */) {
  const uint8_t* c = blk + 8 * NB;
#if defined(__AVX512FP16__)
  const __m512i mag = _mm512_set1_epi16(0x7FFF), bias = _mm512_set1_epi16(112 << 7);
  const __m512i sign = _mm512_set1_epi16(static_cast<int16_t>(0x8000));
#pragma GCC unroll 48
  for (int64_t i = 0; i < 48; ++i) {  // i = 16 g + kp: the B tiles one row after the other
    const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32)));
    const __m512i h = _mm512_castph_si512(_mm512_cvtepi16_ph(w));
    const __m512i b = _mm512_maskz_add_epi16(_mm512_test_epi16_mask(w, w), _mm512_srli_epi16(_mm512_and_si512(h, mag), 3), bias);
    _mm512_store_si512(t + i * 32, _mm512_ternarylogic_epi32(b, h, sign, 0xF8));  // b | (h & sign)
  }
#else  // through fp32: exact as well
#pragma GCC unroll 48
  for (int64_t i = 0; i < 48; ++i) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(v)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(v, 1)));
    const __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_store_si512(t + i * 32, reinterpret_cast<const __m512i&>(both));
  }
#endif
}

static_assert(NB == 48, "the AMX path runs a panel as three 16-column tiles");

// A block's three B tiles (4..6) loaded and its C tiles (0..2) zeroed; and the C tiles stored to cb[g].
static inline void block_tiles_begin(const uint16_t* bt) {
  _tile_loadd(4, bt, 64);
  _tile_loadd(5, bt + 512, 64);
  _tile_loadd(6, bt + 1024, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
}
static inline void block_tiles_end(float* cb) {
  _tile_stored(0, cb, 64);
  _tile_stored(1, cb + 256, 64);
  _tile_stored(2, cb + 512, 64);
}

// One block of rows [r0, r0 + rows): C_g = sum over the three parts of A_part B_g, stored to cb[g].
// Tiles: C0..C2 = 0..2, A = 3 and 7 (two parts in flight), B0..B2 = 4..6; the three C chains share
// each A tile so the tile unit has independent products to overlap.
static inline void block_tiles(const uint16_t* parts, int64_t nb, int64_t M, int64_t r0, int64_t b,
                               const uint16_t* bt, float* cb) {
  block_tiles_begin(bt);
  _tile_loadd(3, parts + part_row(0, b, r0, nb, M) * QB, 64);
  _tile_loadd(7, parts + part_row(1, b, r0, nb, M) * QB, 64);
  _tile_dpbf16ps(0, 3, 4);
  _tile_dpbf16ps(1, 3, 5);
  _tile_dpbf16ps(2, 3, 6);
  _tile_dpbf16ps(0, 7, 4);
  _tile_dpbf16ps(1, 7, 5);
  _tile_dpbf16ps(2, 7, 6);
  _tile_loadd(3, parts + part_row(2, b, r0, nb, M) * QB, 64);
  _tile_dpbf16ps(0, 3, 4);
  _tile_dpbf16ps(1, 3, 5);
  _tile_dpbf16ps(2, 3, 6);
  block_tiles_end(cb);
}

// acc[g][r] += d_g * C_g[r] + m_g * X[r][b] for one block (dm: its d and m, xs: &X[r0][b]). Stacked
// (block_tiles_stacked's C, part p of row r in C row p * rows + r): C_g[r] = (lo + mid) + hi.
template <bool Stacked = false>
static inline void scale_block(const float* dm, const float* cb, const float* xs, int64_t nb, int64_t rows, float* acc) {
  for (int g = 0; g < 3; ++g) {
    const __m512 d = _mm512_loadu_ps(dm + g * 16), m = _mm512_loadu_ps(dm + NB + g * 16);
    const float* c = cb + g * 256;
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 cr = Stacked ? _mm512_add_ps(_mm512_add_ps(_mm512_load_ps(c + (2 * rows + r) * 16),
                                                              _mm512_load_ps(c + (rows + r) * 16)),
                                                _mm512_load_ps(c + r * 16))
                                : _mm512_load_ps(c + r * 16);
      const __m512 s = _mm512_fmadd_ps(d, cr, _mm512_load_ps(acc + g * 256 + r * 16));
      _mm512_store_ps(acc + g * 256 + r * 16, _mm512_fmadd_ps(m, _mm512_set1_ps(xs[r * nb]), s));
    }
  }
}

// M <= STACK_ROWS rows: C_g row part * M + r = part `part`'s sum for row r, one product per column tile.
// Tiles: C0..C2 = 0..2 and A = 3 with 3 M rows, B0..B2 = 4..6.
static inline void block_tiles_stacked(const uint16_t* parts, int64_t nb, int64_t M, int64_t b, const uint16_t* bt,
                                       float* cb) {
  block_tiles_begin(bt);
  _tile_loadd(3, parts + part_row(0, b, 0, nb, M) * QB, 64);
  _tile_dpbf16ps(0, 3, 4);
  _tile_dpbf16ps(1, 3, 5);
  _tile_dpbf16ps(2, 3, 6);
  block_tiles_end(cb);
}


// Software prefetch distance of the code stream (into L2). Whole SmolLM2 steps at 300 cached tokens,
// settings alternating step by step (medians of 75-95): against one panel ahead (20 KB at K = 576,
// 55 KB at K = 1536) and no prefetch of a call's first bytes, 2-8 KB ahead plus the first 4 KB at the
// call's start were 2-4% faster at every step size (k=1 0.962-0.969x, k=16 0.972-0.977x); 32 KB
// 0.98-1.0x, 64 KB 0.99-1.02x, prefetcht0 1.01x at k=16.
constexpr int64_t AMX_PF_AHEAD = 4096;

// Panels [p0, p1), each block: decode, tile products, scale, in that order. (Decoding a block ahead
// and scaling one behind measured no faster: tile and vector work do not overlap here, see above.)
// add: y += the result (the decoder layer's residual, fused) instead of y = it.
void run_panels_amx(const uint16_t* parts, const float* xsum, int64_t M, int64_t K, const Packed& W,
                    int64_t n, const float* bias, float* y, int64_t p0, int64_t p1, bool add) {
  const int64_t nb = K / QB, bb = W.block_bytes, panel_bytes = nb * bb;
  alignas(64) uint16_t btile[3 * 16 * 32];
  alignas(64) float cbuf[3 * AMX_ROWS * 16];
  alignas(64) float acc[3 * AMX_ROWS * 16];
  const uint8_t* codes = W.qa ? W.qa : W.q;
  const uint8_t* stream_end = codes + p1 * panel_bytes;
  int64_t configured = -1;
  for (int64_t off = 0; off < AMX_PF_AHEAD && codes + p0 * panel_bytes + off < stream_end; off += 64)
    __builtin_prefetch(codes + p0 * panel_bytes + off, 0, 2);  // the start of the stream, before it is needed
  const bool stacked = M <= STACK_ROWS;  // then one row block (rows == M) and one A tile for the three parts
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = codes + p * panel_bytes;
    for (int64_t r0 = 0; r0 < M; r0 += AMX_ROWS) {
      const int64_t rows = std::min(AMX_ROWS, M - r0);
      if (rows != configured) {
        TileConfig cfg;
        const uint8_t tile_rows = static_cast<uint8_t>(stacked ? 3 * rows : rows);
        for (int t : {0, 1, 2, 3, 7}) cfg.rows[t] = tile_rows, cfg.colsb[t] = 64;  // C: rows x 16 fp32; A: rows x 32 bf16 (3 rows a row stacked)
        for (int t : {4, 5, 6}) cfg.rows[t] = 16, cfg.colsb[t] = 64;              // B: 16 k pairs x 16 columns x 2
        llmaccel_amx::load_tile_config(cfg);
        configured = rows;
      }
      for (int g = 0; g < 3; ++g) {
        const int64_t c0 = p * NB + g * 16;
        const __mmask16 keep = c0 >= n ? 0 : static_cast<__mmask16>((1u << std::min<int64_t>(16, n - c0)) - 1);
        const __m512 start = bias ? _mm512_maskz_loadu_ps(keep, bias + c0) : _mm512_setzero_ps();
        for (int64_t r = 0; r < rows; ++r) _mm512_store_ps(acc + g * 256 + r * 16, start);
      }
      const float* xs = xsum + r0 * nb;
      for (int64_t b = 0; b < nb; ++b) {
        if (r0 == 0) {  // this thread's stream, AMX_PF_AHEAD bytes ahead of the block
          const uint8_t* pf = panel + AMX_PF_AHEAD + b * bb;
          for (int64_t off = 0; off < bb; off += 64)
            if (pf + off < stream_end) __builtin_prefetch(pf + off, 0, 2);
        }
        if (W.qa && W.bits == 4)
          decode_block_pairs(panel + b * bb, btile);
        else if (W.qa)
          decode_block_q8_pairs(panel + b * bb, btile);
        else
          decode_block(W, panel + b * bb, btile);
        if (stacked) {
          block_tiles_stacked(parts, nb, M, b, btile, cbuf);
          scale_block<true>(reinterpret_cast<const float*>(panel + b * bb), cbuf, xs + b, nb, rows, acc);
        } else {
          block_tiles(parts, nb, M, r0, b, btile, cbuf);
          scale_block(reinterpret_cast<const float*>(panel + b * bb), cbuf, xs + b, nb, rows, acc);
        }
      }
      for (int g = 0; g < 3; ++g) {
        const int64_t c0 = p * NB + g * 16;
        if (c0 >= n) break;
        const __mmask16 keep = static_cast<__mmask16>((1u << std::min<int64_t>(16, n - c0)) - 1);
        for (int64_t r = 0; r < rows; ++r) {
          float* yr = y + (r0 + r) * n + c0;
          const __m512 v = _mm512_load_ps(acc + g * 256 + r * 16);
          _mm512_mask_storeu_ps(yr, keep, add ? _mm512_add_ps(_mm512_maskz_loadu_ps(keep, yr), v) : v);
        }
      }
    }
  }
  _tile_release();
}

using llmaccel_amx::tiles_permitted;

bool amx_for(int bits, int64_t M) {
  return M >= (bits == 8 ? AMX_MIN_ROWS_Q8 : AMX_MIN_ROWS) && amx_enabled && tiles_permitted();
}

void thread_split(const float* x, int64_t M, int64_t K, const uint16_t** parts, const float** xsum) {
  thread_local std::vector<uint16_t> parts_buf;
  thread_local std::vector<float> xsum_buf;
  if (parts_buf.size() < static_cast<size_t>(3 * M * K)) parts_buf.resize(3 * M * K);
  if (xsum_buf.size() < static_cast<size_t>(M * (K / QB))) xsum_buf.resize(M * (K / QB));
  split_bf16(x, M, K, parts_buf.data(), xsum_buf.data());  // xsum: X[r][b], the block sums of x
  *parts = parts_buf.data();
  *xsum = xsum_buf.data();
}
#endif

}  // namespace llmaccel_gemm

// Turns the AMX path on or off (where it exists); returns whether it is used from now on.
bool use_amx(bool on) {
#ifdef LLMACCEL_AMX
  llmaccel_gemm::amx_enabled = on;
  return on && llmaccel_gemm::tiles_permitted();
#else
  (void)on;
  (void)llmaccel_gemm::amx_enabled;
  return false;
#endif
}

// Whether code-block weights can take the AMX path on this CPU (pack() then adds its layout).
bool has_amx() {
#ifdef LLMACCEL_AMX
  return llmaccel_amx::tiles_permitted();
#else
  return false;
#endif
}
