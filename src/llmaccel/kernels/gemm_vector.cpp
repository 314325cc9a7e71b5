// The vector path of the skinny GEMM (skinny_gemm.cpp has the layouts and chooses the path): register
// tiles of fp32 FMAs over fp32 panels, or over code blocks decoded to the same fp32 values.
//
// Register tile (micro-kernel): R x NB outputs, R <= MR rows of x. Per k: NV weight loads, R
// broadcasts of x[r][k], R*NV FMAs into R*NV accumulators that stay in registers for the whole
// k range, so the weights are loaded once per R rows.
//   AVX-512 (32 zmm): NB = 48 (NV = 3), MR = 8: 24 accumulators + 3 weights + 1 broadcast = 28
//     registers. Per k: 24 FMAs = 12 cycles on the 2 FMA ports vs 3 loads + 8 broadcasts on the
//     load ports, so it runs at ~95% of FMA peak when the data is in cache (~300 GFLOP/s on 2 cores).
//   AVX2 (16 ymm): NB = 16 (NV = 2), MR = 6: 12 accumulators + 2 weights + 1 broadcast = 15.
//   Generic (SSE, 16 xmm): NB = 8 (NV = 2), MR = 6.
// Rows that are not a multiple of MR are split into balanced blocks (9 -> 5 + 4, 17 -> 6 + 6 + 5),
// each block size has its own instantiation (R = 1..MR), so no FMAs are spent on padding rows.
// M = 1 is the same code with R = 1 (a GEMV over the packed layout; memory bound, 3 chains of
// FMAs are plenty to keep up with DRAM).
//
// Blocking over M and K
// ---------------------
// * M <= MR (one row block): one pass over the panel, whole K in registers, result stored once.
// * M > MR: the panel is cut into chunks of KC = 128 k steps (128 * 48 * 4 = 24 KB, fits L1 with
//   the x rows); every row block runs over the chunk before the next chunk, so only the first block
//   reads the chunk from L2/DRAM and the others hit L1. Partial sums go through a small scratch
//   (M x NB floats) between chunks; that costs R*NV loads+stores per 128*R*NV FMAs (<1%).
//   W is therefore read from memory exactly once per call whatever M is.
//
// Prefetch
// --------
// The hardware prefetcher alone falls well short when the core is busy with FMAs (measured: M = 8
// was 1.55x slower without software prefetch). Each tile therefore issues prefetcht1 (into L2)
// for the bytes PF_DIST = 32 KB ahead of what it consumes, spread evenly over its k loop; when
// there are several row blocks each prefetches its share of the chunk, so the stream advances at
// the same pace whatever M is. 32 KB was best among 16-256 KB; one panel (110-295 KB) ahead was
// worse at M >= 16, prefetchnta/prefetcht0 worse, and prefetching every 2nd line only much worse.
//
// Code blocks
// -----------
// The kernel decodes one chunk of a panel's code blocks into an L1 scratch (d * q + m: d * q is exact
// in fp32, so one rounding, the same as the fp32 value the model holds) before the register tiles run
// over it as over an fp32 panel; up to CODES_FUSED_ROWS rows it decodes each k step in registers
// instead (tile_codes). The products and sums are therefore the same as with the fp32 panel, bit for
// bit.
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "gemm_paths.h"

namespace llmaccel_gemm {
namespace {

constexpr int64_t KC = 128;             // k steps per chunk when there are several row blocks
constexpr int64_t PF_DIST = 32 * 1024;  // software prefetch distance, bytes ahead in the stream

// Vector type (GCC vector extension). Loads and stores go through memcpy, which compiles to one
// unaligned vector move: x rows and y rows start anywhere (panels are 64-byte aligned in practice,
// but nothing depends on it).
typedef float vec __attribute__((vector_size(VL * 4)));

static inline vec loadu(const float* p) {
  vec v;
  __builtin_memcpy(&v, p, sizeof(vec));
  return v;
}
static inline void storeu(float* p, vec v) { __builtin_memcpy(p, &v, sizeof(vec)); }

// One register tile: rows [0, R) of x (row stride ldx, already offset to the first k) times kn
// k steps of a panel (w: kn x NB contiguous). Accumulators start from cin (R x NB partial sums,
// row stride NB) if given, else from bias (NB floats) if given, else zero; the result goes to
// y (row stride ldy, NB columns). [pf, pf_end): bytes to prefetch into L2 during the k loop.
template <int R>
static void tile(const float* __restrict x, int64_t ldx, const float* __restrict w, int64_t kn,
                 const float* cin, const float* __restrict bias, float* y, int64_t ldy, const char* pf,
                 const char* pf_end) {
  vec acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j)
      acc[r][j] = cin ? loadu(cin + r * NB + j * VL) : bias ? loadu(bias + j * VL) : vec{};

  // Prefetch pacing: (pf_end - pf) bytes spread evenly over the kn steps, one line at a time;
  // the rate is fixed point in 1/256 bytes per step to avoid a division in the loop.
  const int64_t pf_bytes = pf_end > pf ? pf_end - pf : 0;
  const int64_t pf_rate = kn > 0 ? (pf_bytes * 256 + kn - 1) / kn : 0;
  int64_t pf_due = 0;

  for (int64_t k = 0; k < kn; ++k) {
    const float* wk = w + k * NB;
    vec wv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      wv[j] = loadu(wk + j * VL);
      // Kept in a register: left to itself GCC folds the load into every FMA of a tile with registers
      // to spare (R <= 4 with AVX2), R times the loads, and the load ports became the limit. AVX2 (Zen
      // 3), SmolLM2-shaped layers of codes, hot, ms a layer (benchmarks/codes_avx2.cpp fold): M=7
      // (4 + 3 rows) 0.547 -> 0.443, M=8 (4 + 4) 0.608 -> 0.453; 5, 10, 12 and 16 rows unchanged.
#if defined(__AVX512F__)
      asm("" : "+v"(wv[j]));  // any of the 32 vector registers
#else
      asm("" : "+x"(wv[j]));
#endif
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float xs = x[r * ldx + k];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] += wv[j] * xs;  // one FMA (broadcast of xs)
    }
    if (pf_rate) {
      pf_due += pf_rate;
      while (pf_due >= 64 * 256 && pf < pf_end) {
        __builtin_prefetch(pf, 0, 2);  // prefetcht1: into L2 (t0 and nta measured worse)
        pf += 64;
        pf_due -= 64 * 256;
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) storeu(y + r * ldy + j * VL, acc[r][j]);
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, const float*, float*,
                        int64_t, const char*, const char*);

template <int... Is>
static TileFn tile_for_impl(int rows, std::integer_sequence<int, Is...>) {
  static constexpr TileFn fns[] = {&tile<Is + 1>...};  // tile<1> .. tile<MR>
  return fns[rows - 1];
}
static TileFn tile_for(int rows) {  // 1 <= rows <= MR
  return tile_for_impl(rows, std::make_integer_sequence<int, MR>{});
}

constexpr int64_t Q_PF_DIST = 8 * 1024;     // prefetch distance in the code stream (~32 KB of fp32)
static_assert(KC % QB == 0, "chunks hold whole code blocks");

// VL code bytes -> VL int32 lanes (zero- or sign-extended). GCC's __builtin_convertvector does this
// one byte at a time (measured: slower than streaming fp32), so the x86 builds use the extending
// moves.
typedef int32_t ivec __attribute__((vector_size(VL * 4)));
template <bool Signed>
static inline ivec widen(const uint8_t* p) {
  ivec r;
#if defined(__AVX512F__)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m512i v = Signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  __builtin_memcpy(&r, &v, sizeof(r));
#elif defined(__AVX2__)
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m256i v = Signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
  __builtin_memcpy(&r, &v, sizeof(r));
#else
  for (int i = 0; i < VL; ++i) r[i] = Signed ? static_cast<int8_t>(p[i]) : p[i];
#endif
  return r;
}

// Decodes code blocks [b0, b0 + nb) of one panel into w (nb * QB x NB floats, row k at k * NB).
static void decode_blocks(const Packed& W, const uint8_t* blk, int64_t nb, float* w, const uint8_t* pf_end) {
  for (int64_t b = 0; b < nb; ++b, blk += W.block_bytes, w += QB * NB) {
    for (int64_t off = 0; off < W.block_bytes; off += 64)
      if (blk + Q_PF_DIST + off < pf_end) __builtin_prefetch(blk + Q_PF_DIST + off, 0, 2);
    vec d[NV], m[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      d[j] = loadu(reinterpret_cast<const float*>(blk) + j * VL);
      m[j] = loadu(reinterpret_cast<const float*>(blk) + NB + j * VL);
    }
    const uint8_t* c = blk + 8 * NB;
    if (W.bits == 4) {
      for (int64_t kp = 0; kp < QB / 2; ++kp)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) {
          const ivec q = widen<false>(c + kp * NB + j * VL);
          storeu(w + 2 * kp * NB + j * VL, d[j] * __builtin_convertvector(q & 15, vec) + m[j]);
          storeu(w + (2 * kp + 1) * NB + j * VL, d[j] * __builtin_convertvector(q >> 4, vec) + m[j]);
        }
    } else {
      for (int64_t k = 0; k < QB; ++k)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) {
          storeu(w + k * NB + j * VL, d[j] * __builtin_convertvector(widen<true>(c + k * NB + j * VL), vec) + m[j]);
        }
    }
  }
}

// Rows [0, R) of x (row stride ldx) times a whole panel of code blocks (nb blocks from blk), each k step
// decoded in registers and used at once: the same w = d q + m and the same FMAs in the same k order as
// decode_blocks + tile, so the same outputs bit for bit, without the round trip of every decoded weight
// through the L1 scratch. Accumulators start from bias (NB floats) if given, else zero; the result
// goes to y (row stride ldy, NB columns).
// Why: with few rows the scratch path is two dependent halves, a decode loop that stores (~5 vector ops
// per 8 weights) and a tile loop whose R x NV FMA chains are too few to hide the FMA latency; fused, the
// decode's independent work fills that latency. AVX2 (Zen 3), SmolLM2-shaped layers, ms a layer
// (benchmarks/codes_avx2.cpp fused, medians of 101 hot / 15 cold, scratch -> tile_codes): M=1
// 0.255 -> 0.153 hot, 0.279 -> 0.162 cold; M=2 0.278 -> 0.169; M=3 0.325 -> 0.202; M=4 0.366 -> 0.235
// (cold). At 5 and 6 rows the two are equal (0.330 / 0.341, 0.371 / 0.365: registers run out), so those
// keep the scratch. Whole 1-token steps (`llmaccel cost`, the two builds alternating): 13.6 and 17.9 ms
// -> 9.4 and 9.3 ms.
template <int R, int Bits>
static void tile_codes(const float* __restrict x, int64_t ldx, const uint8_t* __restrict blk, int64_t nb,
                       const float* __restrict bias, float* y, int64_t ldy, const uint8_t* pf_end) {
  constexpr int64_t bytes = Bits == 4 ? Q4_BYTES : Q8_BYTES;
  vec acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[r][j] = bias ? loadu(bias + j * VL) : vec{};
  for (int64_t b = 0; b < nb; ++b, blk += bytes, x += QB) {
    for (int64_t off = 0; off < bytes; off += 64)
      if (blk + Q_PF_DIST + off < pf_end) __builtin_prefetch(blk + Q_PF_DIST + off, 0, 2);
    const float* dm = reinterpret_cast<const float*>(blk);
    const uint8_t* c = blk + 8 * NB;
    vec d[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) d[j] = loadu(dm + j * VL);
    for (int64_t kp = 0; kp < QB / 2; ++kp) {
      vec w0[NV], w1[NV];  // weights of k = 2 kp and 2 kp + 1
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const vec m = loadu(dm + NB + j * VL);  // from L1 each k pair: at 4 rows no register is left for it
        if (Bits == 4) {
          const ivec q = widen<false>(c + kp * NB + j * VL);
          w0[j] = d[j] * __builtin_convertvector(q & 15, vec) + m;
          w1[j] = d[j] * __builtin_convertvector(q >> 4, vec) + m;
        } else {
          w0[j] = d[j] * __builtin_convertvector(widen<true>(c + 2 * kp * NB + j * VL), vec) + m;
          w1[j] = d[j] * __builtin_convertvector(widen<true>(c + (2 * kp + 1) * NB + j * VL), vec) + m;
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float xs = x[r * ldx + 2 * kp];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[r][j] += w0[j] * xs;
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float xs = x[r * ldx + 2 * kp + 1];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[r][j] += w1[j] * xs;
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) storeu(y + r * ldy + j * VL, acc[r][j]);
}

constexpr int CODES_FUSED_ROWS = 4;  // up to this many rows, tile_codes (measured above)
using CodesFn = void (*)(const float*, int64_t, const uint8_t*, int64_t, const float*, float*, int64_t, const uint8_t*);
static CodesFn tile_codes_for(int rows, int bits) {  // 1 <= rows <= CODES_FUSED_ROWS
  static constexpr CodesFn q4[] = {&tile_codes<1, 4>, &tile_codes<2, 4>, &tile_codes<3, 4>, &tile_codes<4, 4>};
  static constexpr CodesFn q8[] = {&tile_codes<1, 8>, &tile_codes<2, 8>, &tile_codes<3, 8>, &tile_codes<4, 8>};
  static_assert(sizeof(q4) / sizeof(q4[0]) == CODES_FUSED_ROWS, "one instantiation per row count");
  return (bits == 4 ? q4 : q8)[rows - 1];
}

// n floats at a 64-byte boundary, inside `store`. The scratch's vector loads and stores must not
// straddle cache lines: 16 bytes past a boundary (std::vector's alignment here), half the decode's
// 32-byte stores and the tiles' loads did. AVX2 (Zen 3; benchmarks/codes_avx2.cpp align, 30
// layers, ms a layer, 64 / 16): decode alone 0.135 / 0.182 at 1 row, 0.143 / 0.182 at 16; the scratch
// path 0.268 / 0.314 at 1 row, 0.802 / 0.856 at 16.
static float* aligned_floats(std::vector<float>& store, int64_t n) {
  store.resize(n + 16);
  const auto a = reinterpret_cast<uintptr_t>(store.data());
  return store.data() + ((64 - a % 64) % 64) / sizeof(float);
}

}  // namespace

// y = x @ W^T + b for panels [p0, p1) (one thread's share).
void run_panels(const float* x, int64_t M, int64_t K, const Packed& W, int64_t n,
                const float* bias, float* y, int64_t p0, int64_t p1) {
  const int64_t nblk = (M + MR - 1) / MR;   // row blocks, sizes balanced below
  // one fp32 row block: nothing to reuse from L1, no chunking; codes: decoded a chunk at a time
  const int64_t kc = W.q ? KC : nblk == 1 ? K : KC;
  const int64_t panel_floats = K * NB;
  // up to CODES_FUSED_ROWS rows of codes: one pass over each panel's blocks, decoded in registers
  const CodesFn fused = W.q && M <= CODES_FUSED_ROWS ? tile_codes_for(static_cast<int>(M), W.bits) : nullptr;
  std::vector<float> cstore, wstore;
  float* c = aligned_floats(cstore, M * NB);  // partial sums between chunks, and the last partial panel
  float* wbuf = aligned_floats(wstore, W.q && !fused ? KC * NB + VL : 0);  // a decoded chunk (24 KB with AVX-512)
  const float* packed = W.f32;
  const int64_t panel_bytes = K / QB * W.block_bytes;
  const uint8_t* q_end = W.q ? W.q + p1 * panel_bytes : nullptr;  // end of this thread's code stream
  alignas(64) float bbuf[NB];       // bias of the last panel, zero-padded
  // Prefetch addresses are computed as byte offsets from `base` and clamped to this thread's range
  // (not past it: the next call's weights are unknown here).
  const char* base = reinterpret_cast<const char*>(packed);
  const int64_t range_end = p1 * panel_floats * static_cast<int64_t>(sizeof(float));

  for (int64_t p = p0; p < p1; ++p) {
    const float* w = W.q ? nullptr : packed + p * panel_floats;
    const int64_t c0 = p * NB;
    const int64_t ncols = std::min<int64_t>(NB, n - c0);
    const float* b = bias ? bias + c0 : nullptr;
    if (bias && ncols < NB) {
      std::memset(bbuf, 0, sizeof(bbuf));
      std::memcpy(bbuf, bias + c0, ncols * sizeof(float));
      b = bbuf;
    }
    if (fused) fused(x, K, W.q + p * panel_bytes, K / QB, b, ncols == NB ? y + c0 : c, ncols == NB ? n : NB, q_end);
    for (int64_t k0 = 0; !fused && k0 < K; k0 += kc) {
      const int64_t kn = std::min(kc, K - k0);
      const bool first = k0 == 0, last = k0 + kn == K;
      const int64_t chunk_bytes = kn * NB * static_cast<int64_t>(sizeof(float));
      // The stream position this chunk consumes, plus the prefetch distance.
      const int64_t ahead = (p * panel_floats + k0 * NB) * static_cast<int64_t>(sizeof(float)) + PF_DIST;
      const float* wk = w ? w + k0 * NB : wbuf;
      if (!w) decode_blocks(W, W.q + p * panel_bytes + k0 / QB * W.block_bytes, kn / QB, wbuf, q_end);
      int64_t m0 = 0;
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t rows = (M - m0) / (nblk - blk);  // balanced split of what is left
        // this block's share of the chunk-sized window PF_DIST ahead (fp32 panels; codes prefetch
        // in decode_blocks)
        const char* pf = w ? base + std::min(range_end, ahead + chunk_bytes * blk / nblk) : nullptr;
        const char* pf_end = w ? base + std::min(range_end, ahead + chunk_bytes * (blk + 1) / nblk) : nullptr;
        const float* cin = first ? nullptr : c + m0 * NB;
        const float* xb = x + m0 * K + k0;
        if (last && ncols == NB)
          tile_for(static_cast<int>(rows))(xb, K, wk, kn, cin, b, y + m0 * n + c0, n, pf, pf_end);
        else
          tile_for(static_cast<int>(rows))(xb, K, wk, kn, cin, b, c + m0 * NB, NB, pf, pf_end);
        m0 += rows;
      }
    }
    if (ncols < NB)
      for (int64_t r = 0; r < M; ++r) std::memcpy(y + r * n + c0, c + r * NB, ncols * sizeof(float));
  }
}

}  // namespace llmaccel_gemm
