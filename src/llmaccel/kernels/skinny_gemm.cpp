// Skinny GEMM for decoding steps: y (M x N) = x (M x K) @ W^T + b, with M small (1..~40) and
// W (N x K) large and cold (it does not stay in cache between calls: the model is ~0.5 GB).
//
// Layout
// ------
// W is re-laid once (`pack`, in skinny.py) into panels of NB output features:
//   packed[p][k][j] = W[p*NB + j][k]   (N zero-padded up to a multiple of NB).
// One k step of a panel is NB contiguous floats (NV vector loads), and a panel is one sequential
// stream. Each thread takes a contiguous range of panels, so each thread reads one long stream.
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
// Block-coded weights (exact, fewer bytes to stream)
// ----------------------------------------------------
// A model loaded from a GGUF file holds fp32 weights that are dequantised blocks: along K, each run
// of 32 weights of one output row is w = d * q + m with q a 4-bit code (Q4_1) or w = d * q with q a
// signed 8-bit code (Q8_0), d and m per block. Streaming those fp32 values costs 32 bits a weight;
// the codes cost 4 or 8 bits plus the block's d and m. skinny.py finds such blocks in the fp32 matrix
// (and checks that decoding reproduces every weight bit for bit); the kernel then streams
//   codes[p][b] = d[NB] (fp32) | m[NB] (fp32) | code bytes for the 32 k steps of block b of panel p
// and decodes one chunk of a panel into an L1 scratch (d * q + m: d * q is exact in fp32, so one
// rounding, the same as the fp32 value the model holds) before the register tiles run over it as
// over an fp32 panel; up to CODES_FUSED_ROWS rows it decodes each k step in registers instead
// (tile_codes). The products and sums are therefore the same as with the fp32 panel, bit for
// bit. 4-bit codes: byte [kp][j] holds q for k = 2 kp (low nibble) and 2 kp + 1 (high nibble) of
// output j; 8-bit codes: byte [k][j].
//
// Numerics: no -ffast-math. Each output is an IEEE fp32 sum in k order (seeded with the bias),
// contracted to FMAs (-ffp-contract=fast); results match F.linear to ~1e-6 relative.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "amx.h"
#include "skinny_gemm.h"

namespace {

#if defined(__AVX512F__)
constexpr int VL = 16;  // floats per vector register (zmm)
constexpr int NV = 3;   // vectors per panel row -> NB = 48
constexpr int MR = 8;   // rows per register tile: 8 x 3 = 24 accumulators of 32 zmm
constexpr const char* ISA = "avx512";
#elif defined(__AVX__)
constexpr int VL = 8;   // ymm
constexpr int NV = 2;   // NB = 16
constexpr int MR = 6;   // 6 x 2 = 12 accumulators of 16 ymm
constexpr const char* ISA = "avx2";
#else
constexpr int VL = 4;   // xmm (or whatever the compiler makes of 16-byte vectors)
constexpr int NV = 2;   // NB = 8
constexpr int MR = 6;
constexpr const char* ISA = "generic";
#endif
constexpr int NB = NV * VL;             // output features per panel
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
      // 3), SmolLM2-shaped layers of codes, hot, ms a layer (docs/microbench/codes_avx2.cpp fold): M=7
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

constexpr int64_t QB = 32;                  // k steps per code block
constexpr int64_t Q4_BYTES = 8 * NB + 16 * NB;  // d, m, 16 k pairs of nibbles
constexpr int64_t Q8_BYTES = 8 * NB + 32 * NB;  // d, m, 32 k steps of int8
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

// The weights of one packed matrix: fp32 panels, or code blocks of `bits` 4 or 8.
struct Packed {
  const float* f32 = nullptr;    // [P][K][NB]
  const uint8_t* q = nullptr;    // [P][K / QB][block_bytes]
  const uint8_t* qa = nullptr;   // the same blocks with the codes in the AMX order (optional)
  int bits = 32;
  int64_t block_bytes = 0;
};

// The code blocks in `packed`, pack()'s uint8 layouts: [P, K/32, bytes], or [2, P, K/32, bytes] with the
// same blocks in the AMX order second. Fills W, K and the panel count; false for anything else.
static bool code_blocks(const torch::Tensor& packed, Packed* W, int64_t* K, int64_t* panels) {
  if (packed.scalar_type() != torch::kByte || !packed.is_contiguous() || !packed.device().is_cpu()) return false;
  const bool two = packed.dim() == 4 && packed.size(0) == 2;
  if (packed.dim() != (two ? 4 : 3)) return false;
  const int64_t d0 = two ? 1 : 0, bytes = packed.size(d0 + 2);
  if (bytes != Q4_BYTES && bytes != Q8_BYTES) return false;
  W->q = packed.data_ptr<uint8_t>();
  W->qa = two ? W->q + packed.stride(0) : nullptr;
  W->block_bytes = bytes;
  W->bits = bytes == Q4_BYTES ? 4 : 8;
  *K = packed.size(d0 + 1) * QB;
  *panels = packed.size(d0);
  return true;
}

// The weights in `packed`, any layout pack() makes: fp32 panels [P, K, NB] or code blocks (code_blocks).
// Fills W, K and the panel count; false for anything else.
static bool packed_weights(const torch::Tensor& packed, Packed* W, int64_t* K, int64_t* panels) {
  if (packed.scalar_type() == torch::kByte) return code_blocks(packed, W, K, panels);
  if (packed.dim() != 3 || !packed.is_contiguous() || !packed.device().is_cpu() || packed.size(2) != NB ||
      packed.scalar_type() != torch::kFloat)
    return false;
  W->f32 = packed.data_ptr<float>();
  *K = packed.size(1);
  *panels = packed.size(0);
  return true;
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
// (docs/microbench/codes_avx2.cpp fused, medians of 101 hot / 15 cold, scratch -> tile_codes): M=1
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
// 32-byte stores and the tiles' loads did. AVX2 (Zen 3; docs/microbench/codes_avx2.cpp align, 30
// layers, ms a layer, 64 / 16): decode alone 0.135 / 0.182 at 1 row, 0.143 / 0.182 at 16; the scratch
// path 0.268 / 0.314 at 1 row, 0.802 / 0.856 at 16.
static float* aligned_floats(std::vector<float>& store, int64_t n) {
  store.resize(n + 16);
  const auto a = reinterpret_cast<uintptr_t>(store.data());
  return store.data() + ((64 - a % 64) % 64) / sizeof(float);
}

// y = x @ W^T + b for panels [p0, p1) (one thread's share).
static void run_panels(const float* x, int64_t M, int64_t K, const Packed& W, int64_t n,
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


// ---- AMX path for code-block weights ------------------------------------------------------------
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
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
#define LLMACCEL_AMX 1
constexpr int64_t AMX_ROWS = 16;  // rows of x per tile product
// Up to STACK_ROWS rows, the three parts of x share one A tile (3 M rows: part-major), so a block takes
// 3 tile products instead of 9. A tile product costs the same whatever its row count (one core, the
// kept block pattern, ns a block: 1 row 60.1, 3 rows 61.4, 6 rows 61.2, 16 rows 62.5; with one part
// instead of three 28.5-29.2; docs/microbench/tile_rows.cpp), so at 1-5 rows six of the nine products
// were paid for nothing. The block's three part sums come out as separate C rows and are added in the
// scaling, lo + mid first. Whole SmolLM2 steps at 300 cached tokens, alternating in one process
// (medians of 60): k=1 7.17 -> 6.89 ms (0.960x), k=2 0.955x, k=4 0.957x, k=5 0.974x, k=16 1.001x.
constexpr int64_t STACK_ROWS = AMX_ROWS / 3;
// Every row count takes it (AMX_MIN_ROWS 1). Until session 16 fewer than 8 rows took the vector path,
// from measurements with the weights cold in memory (bench_skinny, 30 layers, ms, vector / AMX: M=1
// 6.06 / 6.57, M=4 7.33 / 7.35, M=8 9.22 / 8.50, M=16 13.31 / 11.69). In the engine's steps the codes
// stream from the large L3 here and the vector path's heavier decode (to fp32, then 1-row FMAs) costs
// more than the tile path's: whole SmolLM2 steps at 300 cached tokens, one process, the two settings
// alternating step by step, medians of 295 (ms, from 8 rows / from 1 row): k=1 9.61 / 9.01, k=2 10.41 /
// 9.20, k=4 12.11 / 9.89, k=8 11.75 / 11.62, k=16 15.21 / 15.03.
// Per block the tile unit's work is cheap, but its results pass through memory to be scaled by d and
// m, once per row, and the decode's stores feed the tile loads, so the vector and tile work of a block
// add up instead of overlapping (docs/microbench, BENCHMARKS.md "Engine cost", session 16).
// Tried and not kept (SmolLM2-shaped layers at 16 rows, BENCHMARKS.md): folding d into the B tiles
// (d q as two exact bf16 parts, 5 products a block, no per-block scaling): 0.93x the vector path's
// time in the same run, where this design takes 0.85-0.88x: its decode needs ~3x the vector work.
// Decoding one block ahead and scaling one block behind, double-buffered C tiles: within noise.
// Scaling 2 or 4 blocks in one pass (acc kept in a register across them; the same FMAs in the same
// order, bit-identical): whole 16-token steps 0.996x / 1.001x (session 22).
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
// ~11 with two shuffles more: 50 vs 82-87 ns a block (docs/microbench), ~0.3 ms of a 16-token step's
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
static void run_panels_amx(const uint16_t* parts, const float* xsum, int64_t M, int64_t K, const Packed& W,
                           int64_t n, const float* bias, float* y, int64_t p0, int64_t p1, bool add = false) {
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
#endif

static bool amx_enabled = true;  // skinny.use_amx() turns it off, to compare or to test the other path

#ifdef LLMACCEL_AMX
// Whether code blocks of `bits` with M rows of x take the AMX path: skinny_linear and amx_matrix make
// this one choice, so the fused layer computes what skinny_linear does.
static bool amx_for(int bits, int64_t M) {
  return M >= (bits == 8 ? AMX_MIN_ROWS_Q8 : AMX_MIN_ROWS) && amx_enabled && tiles_permitted();
}

// x (M, K) split into this thread's bf16 parts and block sums, in buffers kept per thread (every
// element written each call); valid until the thread's next call.
static llmaccel_gemm::PanelRows thread_split(const float* x, int64_t M, int64_t K) {
  thread_local std::vector<uint16_t> parts_buf;
  thread_local std::vector<float> xsum_buf;
  if (parts_buf.size() < static_cast<size_t>(3 * M * K)) parts_buf.resize(3 * M * K);
  if (xsum_buf.size() < static_cast<size_t>(M * (K / QB))) xsum_buf.resize(M * (K / QB));
  split_bf16(x, M, K, parts_buf.data(), xsum_buf.data());  // xsum: X[r][b], the block sums of x
  return {x, parts_buf.data(), xsum_buf.data(), M, K};
}
#endif

}  // namespace

// ---- the kernel one thread at a time (skinny_gemm.h) ---------------------------------------------

bool llmaccel_gemm::panel_matrix(const torch::Tensor& packed, int64_t n, int64_t M, const float* bias, PanelMatrix* out) {
  Packed W;
  int64_t K = 0, panels = 0;
  if (!packed_weights(packed, &W, &K, &panels)) return false;
  if (n <= 0 || n > panels * NB || n <= (panels - 1) * NB || K == 0) return false;
  out->f32 = W.f32;
  out->q = W.q;
  out->qa = W.qa;
  out->bits = W.bits;
#ifdef LLMACCEL_AMX
  out->amx = W.q && amx_for(W.bits, M);
#else
  (void)M;
  out->amx = false;
#endif
  out->block_bytes = W.block_bytes;
  out->K = K;
  out->n = n;
  out->panels = panels;
  out->panel_width = NB;
  out->bias = bias;
  return true;
}

llmaccel_gemm::PanelRows llmaccel_gemm::prepare_rows(const PanelMatrix& m, const float* x, int64_t M, int64_t K) {
#ifdef LLMACCEL_AMX
  if (m.amx) return thread_split(x, M, K);
#endif
  (void)m;
  return {x, nullptr, nullptr, M, K};
}

void llmaccel_gemm::run_panel_range(const PanelMatrix& m, const PanelRows& x, float* y, int64_t p0, int64_t p1,
                                    bool add) {
  if (p0 >= p1) return;
  Packed W;
  W.f32 = m.f32;
  W.q = m.q;
  W.qa = m.qa;
  W.bits = m.bits;
  W.block_bytes = m.block_bytes;
#ifdef LLMACCEL_AMX
  if (m.amx) {
    run_panels_amx(x.parts, x.xsum, x.M, m.K, W, m.n, m.bias, y, p0, p1, add);
    return;
  }
#endif
  if (!add) {
    run_panels(x.x, x.M, m.K, W, m.n, m.bias, y, p0, p1);
    return;
  }
  // y += x W^T: the product into this thread's buffer, then added, as the op-by-op layer adds the
  // linear's output tensor to h (the same two roundings)
  thread_local std::vector<float> buf;
  buf.resize(x.M * m.n);
  run_panels(x.x, x.M, m.K, W, m.n, m.bias, buf.data(), p0, p1);
  const int64_t c0 = p0 * NB, c1 = std::min(p1 * NB, m.n);
  for (int64_t r = 0; r < x.M; ++r)
    for (int64_t c = c0; c < c1; ++c) y[r * m.n + c] += buf[r * m.n + c];
}

// x (..., K) -> (..., n). Argument errors raise ValueError in Python (TORCH_CHECK_VALUE).
// Also called by decoder_layer.cpp.
torch::Tensor skinny_linear(const torch::Tensor& x_in, const torch::Tensor& packed, int64_t n,
                     const c10::optional<torch::Tensor>& bias_in) {
  Packed W;
  int64_t K = 0, npanels = 0;
  TORCH_CHECK_VALUE(packed_weights(packed, &W, &K, &npanels),
                    "skinny linear: packed must come from pack() (fp32 CPU [P, K, ", NB,
                    "] or uint8 code blocks [P, K/32, ", Q4_BYTES, " or ", Q8_BYTES, "] or [2, P, K/32, bytes]), got ", packed.sizes(), " ", packed.scalar_type());
  TORCH_CHECK_VALUE(x_in.dim() >= 1 && x_in.size(-1) == K && x_in.device().is_cpu(),
                    "skinny linear: x must be a CPU tensor (..., ", K, "), got ", x_in.sizes());
  TORCH_CHECK_VALUE(n >= 0 && n <= npanels * NB && (npanels == 0 || n > (npanels - 1) * NB),
                    "skinny linear: n=", n, " does not match ", npanels, " panels of ", NB);
  TORCH_CHECK(!(at::GradMode::is_enabled() && (x_in.requires_grad() || (bias_in && bias_in->requires_grad()))),
              "skinny linear has no autograd: call it under torch.no_grad() / inference_mode()");
  std::vector<int64_t> out_shape(x_in.sizes().begin(), x_in.sizes().end());
  out_shape.back() = n;
  int64_t M = 1;
  for (size_t i = 0; i + 1 < out_shape.size(); ++i) M *= out_shape[i];
  // no copies for the usual contiguous fp32 input
  const torch::Tensor x = x_in.to(torch::kFloat).contiguous().view({M, K});
  torch::Tensor bias;
  const float* bptr = nullptr;
  if (bias_in.has_value() && bias_in->defined()) {
    TORCH_CHECK_VALUE(bias_in->dim() == 1 && bias_in->size(0) == n && bias_in->device().is_cpu(),
                      "skinny linear: bias must be a CPU vector of length n=", n, ", got ", bias_in->sizes());
    bias = bias_in->to(torch::kFloat).contiguous();
    bptr = bias.data_ptr<float>();
  }
  auto y = torch::empty(out_shape, x.options());
  if (M == 0 || n == 0) return y;
  if (K == 0) return bias.defined() ? y.copy_(bias.expand_as(y)) : y.zero_();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Contiguous panel ranges per thread (one sequential stream each, for the prefetchers). Grain 1:
  // even a few panels are worth splitting, the work is bandwidth bound.
#ifdef LLMACCEL_AMX
  if (W.q && amx_for(W.bits, M)) {
    // One parallel region; each thread splits every row of x into its own buffers (kept allocated,
    // every element written), then runs its panels. Measured against the alternatives: splitting on the
    // calling thread before the region left the other thread idle (~8% of a 16-token step, perf);
    // splitting half the rows each and reading the other half after a barrier moved the parts from core
    // to core, ~30 KB a call at 16 rows (~0.4 ms of a 13 ms 16-token step of SmolLM2, alternating
    // runs). The split itself costs each thread ~0.35 ms of a 16-token step (2.1 us per 16 x 576 call
    // alone; perf in situ put it nearer 0.7 ms): doing it twice is the cheaper of the two.
    const int nt = at::in_parallel_region() ? 1 : static_cast<int>(std::min<int64_t>(at::get_num_threads(), npanels));
#pragma omp parallel num_threads(nt)
    {
      const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
      const llmaccel_gemm::PanelRows rows = thread_split(xp, M, K);
      run_panels_amx(rows.parts, rows.xsum, M, K, W, n, bptr, yp, npanels * t / T, npanels * (t + 1) / T);
    }
    return y;
  }
#endif
  at::parallel_for(0, npanels, 1, [&](int64_t p0, int64_t p1) { run_panels(xp, M, K, W, n, bptr, yp, p0, p1); });
  return y;
}

// Turns the AMX path on or off (where it exists); returns whether it is used from now on.
bool use_amx(bool on) {
#ifdef LLMACCEL_AMX
  amx_enabled = on;
  return on && tiles_permitted();
#else
  (void)on;
  (void)amx_enabled;
  return false;
#endif
}

// Whether code-block weights can take the AMX path on this CPU (pack() then adds its layout).
bool has_amx() {
#ifdef LLMACCEL_AMX
  return tiles_permitted();
#else
  return false;
#endif
}

int64_t panel_width() { return NB; }
int64_t code_block() { return QB; }
int64_t row_block() { return MR; }
std::string isa() { return ISA; }

// decoder_layer.cpp
void llama_layer(torch::Tensor h, const torch::Tensor& ln1, const torch::Tensor& qkv_packed, int64_t qkv_n,
                 const c10::optional<torch::Tensor>& qkv_bias, const torch::Tensor& o_packed, const torch::Tensor& ln2,
                 const torch::Tensor& gu_packed, int64_t gu_n, const torch::Tensor& down_packed,
                 const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor kbuf, torch::Tensor vbuf,
                 int64_t start, const c10::optional<torch::Tensor>& mask, int64_t hq, int64_t hkv, double eps,
                 double scaling, int64_t small_attention_max_t);
bool step_attention_tiles(bool on);
bool fused_layer_switch(bool on);
int64_t fused_layer_runs();
torch::Tensor silu_mul(const torch::Tensor& gu);
torch::Tensor rms_norm_rows(const torch::Tensor& x, const torch::Tensor& w, double eps);

// sparse_attention.cpp
std::vector<torch::Tensor> sparse_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                            const torch::Tensor& cols, const torch::Tensor& col_ptr,
                                            const torch::Tensor& bands, const torch::Tensor& band_ptr,
                                            const torch::Tensor& blocks, const torch::Tensor& block_ptr,
                                            int64_t bs, double scale, int64_t window);

bool sparse_hand_tiles(bool on);

// argmax.cpp
torch::Tensor argmax_rows(const torch::Tensor& logits);

// argmax_head.cpp
torch::Tensor argmax_head(const torch::Tensor& x, const torch::Tensor& tiles, const torch::Tensor& cols,
                          const torch::Tensor& w);
bool has_argmax_head();

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &skinny_linear, "y = x @ W^T + b with W packed in panels (see skinny.py)");
  m.def("llama_layer", &llama_layer, "one Llama-family decoder layer for a decoding step, in place (see lean.py)");
  m.def("fused_layer_runs", &fused_layer_runs, "how many layer calls took the fused path");
  m.def("fused_layer", &fused_layer_switch, "decoding steps' layers in one parallel region (on) or op by op; returns which");
  m.def("step_attention_tiles", &step_attention_tiles, "multi-token steps' attention: register tiles (on) or SDPA; returns which");
  m.def("sparse_attention", &sparse_attention, "causal attention over selected keys per query block (see sparse/kernels.py)");
  m.def("sparse_hand_tiles", &sparse_hand_tiles, "sparse attention's products: register tiles (on) or gather + at::mm_out; returns which");
  m.def("argmax_rows", &argmax_rows, "argmax over the last dim of fp32 CPU logits, first index on ties, NaN first (as torch.argmax)");
  m.def("argmax_head", &argmax_head, "argmax of x @ w^T per row through an int8 copy of w and a bound; -1 where undecided");
  m.def("has_argmax_head", &has_argmax_head, "whether argmax_head decides rows on this CPU (AMX int8)");
  m.def("panel_width", &panel_width, "NB: output features per packed panel");
  m.def("rms_norm_rows", &rms_norm_rows, "x (T, H) normalised per row and scaled by w, as the C++ layer normalises");
  m.def("silu_mul", &silu_mul, "silu(gate) * up for gu (T, 2 I) = [gate | up], as the C++ layer computes it");
  m.def("has_amx", &has_amx, "whether this build and CPU have the AMX path for code-block weights");
  m.def("use_amx", &use_amx, "AMX tiles for code-block weights on/off; returns whether they are used");
  m.def("code_block", &code_block, "k steps per code block of block-coded weights");
  m.def("row_block", &row_block, "MR: rows of x per register tile");
  m.def("isa", &isa, "vector ISA the kernel was compiled for");
}
