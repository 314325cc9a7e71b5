// Greedy choice of the LM head without computing every logit exactly: argmax_n (x_r . w_n) per row.
//
// Why: a greedy step needs the argmax of each kept row's logits, not the logits. The exact head (block
// codes through AMX bf16 tiles: three parts of x, per-block decode and scaling) took 1.9 ms for one
// row and 2.9 ms for 16 in SmolLM2's steps (the codes stream from memory, 35 MB). Here the head runs
// once in int8, where the tile unit does all the work and nothing is decoded or scaled per block (28
// MB), with a bound on its error; only the few tokens the bound cannot rule out get their logits
// computed exactly. Measured in the steps (300 cached tokens, alternating with the exact head): 1.3 ms
// for one row, 1.8 ms for 16; whole steps k=1 9.78 -> 9.21 ms, k=16 15.74 -> 14.79 ms.
//
// Terms (per row r of x and vocabulary entry n):
//   w_n        the head's fp32 row; w^_n = s_n q_n its int8 copy (q_n in -127..127, one scale s_n per
//              row, `pack_argmax_head` in skinny.py), dw_n = w_n - w^_n
//   x^_r       s1 q1 + s2 q2, x in two int8 parts (q1 = round(x / s1), q2 the rounded residual), dx_r
//              = x_r - x^_r
//   approx     x^_r . w^_n = s_n (s1 C1 + s2 C2), C1, C2 the int32 tile sums (exact integers)
//   bound      |x_r . w_n - approx| = |dx . w_n + x^ . dw_n| <= |dx| |w_n| + |x^| |dw_n| (Cauchy-Schwarz,
//              2-norms), plus a margin for the fp32 rounding of approx and of the bound itself
//   L_r        max_n (approx - bound): a lower bound of the row's largest logit
//   candidate  a token with approx + bound >= L_r. Every other token's logit is below L_r, so below
//              the largest: the argmax is a candidate.
// The candidates' logits are then computed in float64 from x and the fp32 weights (exact up to ~1e-16:
// the argmax of the true logits of x, ties to the lowest id, as torch.argmax).
// On SmolLM2's head and real hidden states: 3 candidates per row in the median, 43 at most (285 rows
// of RAG answers; with one int8 part of x instead of two it was 63 and 24940). After a context of
// random tokens (`llmaccel cost`), whose logits are flat, ~110 per row. Scaling W's columns before
// rounding (by their max or rms) gave more candidates, not fewer.
//
// Rows with a non-finite x, or with more than MAX_CANDIDATES candidates, come back as -1: the caller
// computes their logits in full.
#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <ATen/Parallel.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "amx.h"

namespace {

constexpr int64_t TILE_N = 16;   // vocabulary entries per int8 tile (columns of C)
constexpr int64_t TILE_K = 64;   // k per int8 tile product (16 rows of 4 bytes in B)
constexpr int64_t TILE_M = 16;   // rows of x per tile product
constexpr int64_t MAX_CANDIDATES = 4096;  // per row; more: the row's logits are computed in full
constexpr int64_t REDUCE_EVERY = 4;  // tile pairs between reductions of a row's running lower bound
// fp32 rounding in approx and in the bound (a few roundings of terms <= |x^| |w^_n|), with room to spare
constexpr double ROUNDING_MARGIN = 64.0 / (1 << 24);

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__)
#define LLMACCEL_AMX_INT8 1

using llmaccel_amx::TileConfig;
using llmaccel_amx::tiles_permitted;

// Per row: its two int8 parts (xq[part][r][Kp], zero past K) and its factors for the epilogue.
struct RowParts {
  float s1 = 1, s2 = 1;  // part scales
  float alpha = 0;       // |dx| + margin: multiplies |w_n|
  float beta = 0;        // |x^| + margin: multiplies |dw_n|
  bool finite = true;
};

// x (K) -> q1, q2 (Kp bytes each, zero past K) and the row's factors. Any rounding to integers will do
// (the bound uses the residual of the codes chosen); the residuals and norms are taken in float64,
// where they are exact (dx to ~2^-53 of |r|, far inside the margin): dx is bounded, not estimated.
RowParts split_row(const float* x, int64_t K, int64_t Kp, int8_t* q1, int8_t* q2) {
  RowParts p;
  std::memset(q1, 0, Kp);
  std::memset(q2, 0, Kp);
  __m512 amax = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 in = K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(in, x + k);
    bad |= _mm512_mask_cmp_ps_mask(in, _mm512_abs_ps(v), _mm512_set1_ps(INFINITY), _CMP_NLT_UQ);  // inf or NaN
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
  }
  if (bad) {
    p.finite = false;
    return p;
  }
  const float a = _mm512_reduce_max_ps(amax);
  p.s1 = a > 0 ? a / 127 : 1.0f;
  // residuals r = x - s1 q1 in float64, kept for the second part (a thread-local buffer of Kp doubles)
  thread_local std::vector<double> rbuf;
  if (rbuf.size() < static_cast<size_t>(Kp)) rbuf.resize(Kp);
  double* r = rbuf.data();
  const __m512 inv1 = _mm512_set1_ps(1 / p.s1);
  const __m512d s1d = _mm512_set1_pd(p.s1);
  const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
  __m512d rmax = _mm512_setzero_pd();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 in = K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(in, x + k);
    const __m512i q = _mm512_max_epi32(nlim, _mm512_min_epi32(lim, _mm512_cvtps_epi32(_mm512_mul_ps(v, inv1))));
    _mm_mask_storeu_epi8(q1 + k, in, _mm512_cvtepi32_epi8(q));
    for (int h = 0; h < 2; ++h) {  // exact: x has 24 significant bits, s1 q1 32, and they differ by <= s1/2
      const __m512d xd = _mm512_cvtps_pd(h ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v));
      const __m512d qd = _mm512_cvtepi32_pd(h ? _mm512_extracti32x8_epi32(q, 1) : _mm512_castsi512_si256(q));
      const __m512d rd = _mm512_fnmadd_pd(qd, s1d, xd);
      _mm512_storeu_pd(r + k + 8 * h, rd);  // lanes past K: x = 0, q = 0, r = 0 (rbuf holds Kp)
      rmax = _mm512_max_pd(rmax, _mm512_abs_pd(rd));
    }
  }
  const double rm = _mm512_reduce_max_pd(rmax);
  p.s2 = rm > 0 ? static_cast<float>(rm / 127) : 1.0f;
  const __m512d inv2 = _mm512_set1_pd(1 / static_cast<double>(p.s2)), s2d = _mm512_set1_pd(p.s2);
  const __m256i lim8 = _mm256_set1_epi32(127), nlim8 = _mm256_set1_epi32(-127);
  __m512d dx2 = _mm512_setzero_pd(), xh2 = _mm512_setzero_pd(), n1 = _mm512_setzero_pd(), n2 = _mm512_setzero_pd();
  for (int64_t k = 0; k < K; k += 8) {
    const __mmask8 in = K - k >= 8 ? 0xFF : static_cast<__mmask8>((1u << (K - k)) - 1);
    const __m512d rd = _mm512_maskz_loadu_pd(in, r + k);
    const __m256i q = _mm256_max_epi32(nlim8, _mm256_min_epi32(lim8, _mm512_cvtpd_epi32(_mm512_mul_pd(rd, inv2))));
    _mm_mask_storeu_epi8(q2 + k, in, _mm256_cvtepi32_epi8(q));
    const __m512d qd = _mm512_cvtepi32_pd(q);
    const __m512d dx = _mm512_fnmadd_pd(qd, s2d, rd);                       // x - x^
    const __m512d q1d = _mm512_cvtepi32_pd(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q1 + k))));
    const __m512d xh = _mm512_fmadd_pd(qd, s2d, _mm512_mul_pd(q1d, s1d));    // x^ (to 2^-53)
    dx2 = _mm512_fmadd_pd(dx, dx, dx2);
    xh2 = _mm512_fmadd_pd(xh, xh, xh2);
    n1 = _mm512_fmadd_pd(q1d, q1d, n1);
    n2 = _mm512_fmadd_pd(qd, qd, n2);
  }
  // s1 |q1| + s2 |q2| >= |x^|: the size of the terms whose fp32 rounding the margin covers
  const double size = p.s1 * std::sqrt(_mm512_reduce_add_pd(n1)) + p.s2 * std::sqrt(_mm512_reduce_add_pd(n2));
  p.alpha = static_cast<float>((std::sqrt(_mm512_reduce_add_pd(dx2)) + ROUNDING_MARGIN * size) * (1 + 1e-6));
  p.beta = static_cast<float>((std::sqrt(_mm512_reduce_add_pd(xh2)) + ROUNDING_MARGIN * size) * (1 + 1e-6));
  return p;
}

// x_r . w_n in float64 (x already in float64): four chains of 8 lanes, summed at the end.
double dot64(const double* x, const float* w, int64_t K) {
  __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32)
    for (int c = 0; c < 4; ++c)
      acc[c] = _mm512_fmadd_pd(_mm512_loadu_pd(x + k + 8 * c), _mm512_cvtps_pd(_mm256_loadu_ps(w + k + 8 * c)), acc[c]);
  for (; k + 8 <= K; k += 8)
    acc[0] = _mm512_fmadd_pd(_mm512_loadu_pd(x + k), _mm512_cvtps_pd(_mm256_loadu_ps(w + k)), acc[0]);
  double s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3])));
  for (; k < K; ++k) s += x[k] * w[k];
  return s;
}

// A tile of one row whose lanes may hold the row's argmax: every lane's approx + bound (-inf past V).
struct Flagged {
  int64_t row, n0;
  alignas(64) float up[TILE_N];
};

// One thread's share of the vocabulary, in pairs of 16-entry tiles, and what it found there.
struct Share {
  int64_t g0 = 0, g1 = 0;
  std::vector<Flagged> flagged;
  std::vector<int64_t> best, count;       // per row: the share's argmax and its candidates checked
  std::vector<double> best_logit;
};

// Pass 1 over the share's tiles for rows [r0, r0 + rows) of Mp (x's M rows padded to whole tiles past
// 16: the padding rows are multiplied, not scanned): int8 products; approx - bound folded into a
// per-row maximum lane by lane (lowv), and a tile flagged where approx + bound reaches max(lowv, thr) in
// some lane. thr[r] is shared by the threads: every few tiles each one reduces its lowv across lanes
// and raises thr to it (the frequent tokens, with low ids, sit in the first thread's share: the
// second's own maximum stayed well below L_r and flagged 10x more tiles). Both stay below L_r, so no
// candidate is missed; thr soon comes close to L_r, so few tiles are flagged past the first ones.
// tiles: [G][KC][16 k quads][16 n][4] int8; cols: s, |w|, |dw| per entry (3 x G*16).
void scan_tiles(const int8_t* xq, int64_t Mp, int64_t M, int64_t Kp, const RowParts* rp, int64_t r0, int64_t rows,
                const int8_t* tiles, const float* cols, int64_t Gp, int64_t V, Share& sh, __m512* lowv, std::atomic<float>* thr) {
  const int64_t KC = Kp / TILE_K, tile_bytes = TILE_K * TILE_N, group_bytes = KC * tile_bytes;
  const float* s_w = cols;
  const float* wn = cols + Gp * TILE_N;
  const float* dwn = cols + 2 * Gp * TILE_N;
  TileConfig cfg;
  for (int t : {0, 1, 2, 3, 4, 5}) cfg.rows[t] = static_cast<uint8_t>(rows), cfg.colsb[t] = 64;  // C, A
  for (int t : {6, 7}) cfg.rows[t] = 16, cfg.colsb[t] = 64;                                     // B
  llmaccel_amx::load_tile_config(cfg);
  const int8_t* a1 = xq + r0 * Kp;
  const int8_t* a2 = xq + (Mp + r0) * Kp;
  const int64_t live = std::min(rows, M - r0);
  alignas(64) int32_t C[4][TILE_M * TILE_N];
  float thr_row[TILE_M];
  std::fill(thr_row, thr_row + TILE_M, -INFINITY);
  const char* stream_end = reinterpret_cast<const char*>(tiles + sh.g1 * group_bytes);
  for (int64_t g = sh.g0; g < sh.g1; g += 2) {
    if ((g - sh.g0) % (2 * REDUCE_EVERY) == 2) {  // from the first pair on: its maximum makes the first thr
      for (int64_t r = 0; r < live; ++r) {
        const float mine = _mm512_reduce_max_ps(lowv[r0 + r]);
        float seen = thr[r0 + r].load(std::memory_order_relaxed);
        while (mine > seen && !thr[r0 + r].compare_exchange_weak(seen, mine, std::memory_order_relaxed)) {
        }
        thr_row[r] = std::max(mine, seen);
      }
    }
    const int8_t* b0 = tiles + g * group_bytes;
    const int8_t* b1 = b0 + group_bytes;
    // the pair after next, into L2: this thread's stream runs ahead of the tile loads
    const char* pf = reinterpret_cast<const char*>(b0 + 4 * group_bytes);
    for (int64_t off = 0; off < 2 * group_bytes && pf + off < stream_end; off += 64) __builtin_prefetch(pf + off, 0, 2);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t c = 0; c < KC; ++c) {
      _tile_loadd(4, a1 + c * TILE_K, Kp);
      _tile_loadd(5, a2 + c * TILE_K, Kp);
      _tile_loadd(6, b0 + c * tile_bytes, 64);
      _tile_loadd(7, b1 + c * tile_bytes, 64);
      _tile_dpbssd(0, 4, 6);
      _tile_dpbssd(1, 5, 6);
      _tile_dpbssd(2, 4, 7);
      _tile_dpbssd(3, 5, 7);
    }
    _tile_stored(0, C[0], 64);
    _tile_stored(1, C[1], 64);
    _tile_stored(2, C[2], 64);
    _tile_stored(3, C[3], 64);
    for (int h = 0; h < 2; ++h) {
      const int64_t n0 = (g + h) * TILE_N;
      const __mmask16 valid = n0 >= V ? 0 : static_cast<__mmask16>((1u << std::min<int64_t>(16, V - n0)) - 1);
      const __m512 sw = _mm512_loadu_ps(s_w + n0), w2 = _mm512_loadu_ps(wn + n0), dw = _mm512_loadu_ps(dwn + n0);
      for (int64_t r = 0; r < live; ++r) {
        const RowParts& p = rp[r0 + r];
        const __m512 c1 = _mm512_cvtepi32_ps(_mm512_load_si512(C[2 * h] + r * TILE_N));  // exact: |C| < 2^24
        const __m512 c2 = _mm512_cvtepi32_ps(_mm512_load_si512(C[2 * h + 1] + r * TILE_N));
        const __m512 a = _mm512_mul_ps(sw, _mm512_fmadd_ps(_mm512_set1_ps(p.s1), c1, _mm512_mul_ps(_mm512_set1_ps(p.s2), c2)));
        const __m512 b = _mm512_fmadd_ps(_mm512_set1_ps(p.alpha), w2, _mm512_mul_ps(_mm512_set1_ps(p.beta), dw));
        // padding entries: -inf, never a candidate and never the row's lower bound
        const __m512 lv = _mm512_max_ps(lowv[r0 + r], _mm512_mask_sub_ps(_mm512_set1_ps(-INFINITY), valid, a, b));
        lowv[r0 + r] = lv;
        const __m512 up = _mm512_mask_add_ps(_mm512_set1_ps(-INFINITY), valid, a, b);
        if (_mm512_cmp_ps_mask(up, _mm512_max_ps(lv, _mm512_set1_ps(thr_row[r])), _CMP_GE_OQ)) {
          Flagged& f = sh.flagged.emplace_back();
          f.row = r0 + r, f.n0 = n0;
          _mm512_store_ps(f.up, up);
        }
      }
    }
  }
  _tile_release();
}

// Pass 2: the share's candidates (approx + bound >= L_r) get their float64 logits; per row the largest,
// ties to the lowest id. A row with more than `cap` candidates in the share is left undecided (count > cap).
void check_share(const double* x, int64_t K, const float* w, const float* L, int64_t cap, Share& sh) {
  thread_local std::vector<std::pair<int64_t, int64_t>> todo;  // (row, entry), entries ascending per row
  todo.clear();
  for (const Flagged& f : sh.flagged) {
    __mmask16 keep = _mm512_cmp_ps_mask(_mm512_load_ps(f.up), _mm512_set1_ps(L[f.row]), _CMP_GE_OQ);
    while (keep) {
      const int i = __builtin_ctz(keep);
      keep &= keep - 1;
      if (++sh.count[f.row] <= cap) todo.emplace_back(f.row, f.n0 + i);
    }
  }
  constexpr size_t AHEAD = 2;  // rows of w fetched ahead of the dot products
  for (size_t i = 0; i < todo.size(); ++i) {
    if (i + AHEAD < todo.size()) {
      const char* next = reinterpret_cast<const char*>(w + todo[i + AHEAD].second * K);
      for (int64_t off = 0; off < K * static_cast<int64_t>(sizeof(float)); off += 64) __builtin_prefetch(next + off, 0, 3);
    }
    const auto [r, n] = todo[i];
    if (sh.count[r] > cap) continue;
    const double logit = dot64(x + r * K, w + n * K, K);
    if (sh.best[r] < 0 || logit > sh.best_logit[r]) sh.best[r] = n, sh.best_logit[r] = logit;  // strict: lowest id on ties
  }
}
#endif

}  // namespace

// x (M, K) fp32 -> int64 (M,): the argmax of x @ w^T per row (ties: the lowest id), or -1 for a row this
// path does not decide. tiles, cols: from skinny.pack_argmax_head(w); w (V, K) fp32.
at::Tensor argmax_head(const at::Tensor& x_in, const at::Tensor& tiles, const at::Tensor& cols,
                       const at::Tensor& w) {
  TORCH_CHECK_VALUE(x_in.dim() == 2 && x_in.device().is_cpu(), "argmax_head: x must be a CPU tensor (M, K)");
  TORCH_CHECK_VALUE(w.dim() == 2 && w.scalar_type() == at::kFloat && w.is_contiguous() && w.size(1) == x_in.size(1),
                    "argmax_head: w must be contiguous fp32 (V, K) with K = x's, got ", w.sizes());
  TORCH_CHECK_VALUE(tiles.dim() == 3 && tiles.scalar_type() == at::kChar && tiles.is_contiguous() &&
                        tiles.size(2) == TILE_K * TILE_N && tiles.size(0) % 2 == 0 &&
                        tiles.size(1) * TILE_K >= w.size(1) && tiles.size(1) * TILE_K < w.size(1) + TILE_K &&
                        tiles.size(0) * TILE_N >= w.size(0),
                    "argmax_head: tiles must come from pack_argmax_head(w), got ", tiles.sizes());
  TORCH_CHECK_VALUE(cols.dim() == 2 && cols.size(0) == 3 && cols.size(1) == tiles.size(0) * TILE_N &&
                        cols.scalar_type() == at::kFloat && cols.is_contiguous(),
                    "argmax_head: cols must come from pack_argmax_head(w)");
  const int64_t M = x_in.size(0), K = x_in.size(1), V = w.size(0);
  auto out = at::full({M}, -1, at::kLong);
#ifdef LLMACCEL_AMX_INT8
  if (M == 0 || !tiles_permitted()) return out;
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const float* xp = x.data_ptr<float>();
  const int64_t Kp = tiles.size(1) * TILE_K, Gp = tiles.size(0);
  const int64_t Mp = M <= TILE_M ? M : (M + TILE_M - 1) / TILE_M * TILE_M;  // whole tiles past 16 rows
  std::vector<int8_t> xq(2 * Mp * Kp, 0);
  std::vector<RowParts> rp(Mp);
  for (int64_t r = 0; r < M; ++r) rp[r] = split_row(xp + r * K, K, Kp, xq.data() + r * Kp, xq.data() + (Mp + r) * Kp);
  const int nt = at::in_parallel_region() ? 1 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), Gp / 2)));
  std::vector<double> xd(xp, xp + M * K);  // the rows in float64, for the candidates' logits
  std::vector<Share> shares(nt);
  std::vector<float> lows(nt * M), L(M);
  std::vector<std::atomic<float>> thr(Mp);  // shared running lower bounds of the rows (see scan_tiles)
  for (auto& v : thr) v.store(-INFINITY, std::memory_order_relaxed);
  const int8_t* tp = tiles.data_ptr<int8_t>();
  const float* cp = cols.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const int64_t cap = (MAX_CANDIDATES + nt - 1) / nt;
#pragma omp parallel num_threads(nt)
  {
    const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
    Share& sh = shares[t];
    const int64_t pairs = Gp / 2;
    sh.g0 = 2 * (pairs * t / T), sh.g1 = 2 * (pairs * (t + 1) / T);
    sh.flagged.clear();
    sh.best.assign(M, -1), sh.count.assign(M, 0), sh.best_logit.assign(M, 0);
    std::vector<__m512> lowv(Mp, _mm512_set1_ps(-INFINITY));
    for (int64_t r0 = 0; r0 < Mp; r0 += TILE_M)
      scan_tiles(xq.data(), Mp, M, Kp, rp.data(), r0, std::min(TILE_M, Mp - r0), tp, cp, Gp, V, sh, lowv.data(), thr.data());
    for (int64_t r = 0; r < M; ++r) lows[t * M + r] = _mm512_reduce_max_ps(lowv[r]);
#pragma omp barrier
    for (int64_t r = 0; r < M; ++r) {  // L_r: every thread takes the same maximum
      float l = -INFINITY;
      for (int64_t u = 0; u < T; ++u) l = std::max(l, lows[u * M + r]);
      if (t == 0) L[r] = l;
      if (!(l > -INFINITY) || !rp[r].finite) sh.count[r] = cap + 1;  // nothing to decide from
    }
#pragma omp barrier
    check_share(xd.data(), K, wp, L.data(), cap, sh);
  }
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < M; ++r) {
    int64_t best = -1;
    double best_logit = 0;
    bool decided = true;
    for (const Share& sh : shares) {  // shares in ascending ranges: strict > keeps the lowest id
      if (sh.count[r] > cap) decided = false;
      if (sh.best[r] >= 0 && (best < 0 || sh.best_logit[r] > best_logit)) best = sh.best[r], best_logit = sh.best_logit[r];
    }
    if (decided && best >= 0 && std::isfinite(best_logit)) op[r] = best;
  }
#endif
  return out;
}

// Whether argmax_head can decide rows here (AMX int8 in this build and CPU); otherwise it returns -1s.
bool has_argmax_head() {
#ifdef LLMACCEL_AMX_INT8
  return tiles_permitted();
#else
  return false;
#endif
}
