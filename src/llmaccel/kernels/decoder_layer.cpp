// One decoder layer of a Llama-family model (Llama, Mistral, Qwen2) for a decoding step of T tokens,
// batch 1, fp32, in place on the hidden states h (T, H). lean.py calls it once per layer.
//
// Why in C++: in a step of SmolLM2 the linears take ~19 ms (the weight-streaming bound) and the ~20
// small ops per layer around them (RMSNorm as seven aten ops, RoPE, the cache write, SiLU, residuals)
// cost ~5 ms more through Python, almost all of it per-call overhead on vectors of a few KB. Here
// RMSNorm, RoPE, the cache write and the residual adds are plain loops, the linears call the skinny
// kernel directly, SiLU uses ATen's vector exp, and attention is our own for short steps
// (small_attention below) and for longer ones (tile_attention; PyTorch's flash kernel where the head
// dim is not a multiple of the vector width), all without Python in between.
//
// Numerics: the same formulas as transformers' modules (RMSNorm: w * (x * rsqrt(mean(x^2) + eps));
// RoPE: q * cos + rotate_half(q) * sin), fp32 throughout, no -ffast-math; sums and FMA contraction
// differ from ATen's in the last bits, so the logits match the module path to ~1e-5 and greedy tokens
// are tested equal.
// ATen's vector type for the capability this file is compiled for (-march=native), the one ATen's own
// CPU kernels dispatch to on this CPU: SiLU below then uses the same exp (SLEEF) as at::silu.
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "skinny_gemm.h"
#include "tiles.h"
#include "vec.h"

namespace {

// out[t] = w * (x[t] * rsqrt(mean(x[t]^2) + eps)) for each of T rows of H.
void rms_norm(const float* x, const float* w, float* out, int64_t T, int64_t H, float eps) {
  constexpr int P = 16;  // independent partial sums: vectorises without reassociation flags
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * H;
    float* o = out + t * H;
    float part[P] = {0};
    int64_t i = 0;
    for (; i + P <= H; i += P)
      for (int j = 0; j < P; ++j) part[j] += xr[i + j] * xr[i + j];
    float ss = 0;
    for (int j = 0; j < P; ++j) ss += part[j];
    for (; i < H; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(H) + eps);
    for (int64_t j = 0; j < H; ++j) o[j] = w[j] * (xr[j] * inv);
  }
}

// RoPE in place on one head's vector of D: v * cos + rotate_half(v) * sin.
void rope(float* v, int64_t D, const float* c, const float* s) {
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) {
    const float a = v[d], b = v[d + half];
    v[d] = a * c[d] - b * s[d];
    v[d + half] = b * c[d + half] + a * s[d + half];
  }
}

// RoPE on the q and k heads of the step's qkv rows (row stride qkv_n: hq q heads, hkv k heads, hkv v
// heads of D), and the k and v heads into the cache at start + token, for the (token, head) items
// [i0, i1) of T * (hq + 2 hkv): the op-by-op layer runs them all, the fused layer a share per thread.
void rope_and_cache(float* qkv, int64_t qkv_n, float* kp, float* vp, int64_t cap, int64_t start, const float* cp,
                    const float* sp, int64_t hq, int64_t hkv, int64_t D, int64_t i0, int64_t i1) {
  const int64_t heads = hq + 2 * hkv;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t tok = i / heads, h = i % heads;
    float* v = qkv + tok * qkv_n + h * D;
    if (h < hq + hkv) rope(v, D, cp + tok * D, sp + tok * D);
    if (h >= hq + hkv)
      std::memcpy(vp + ((h - hq - hkv) * cap + start + tok) * D, v, D * sizeof(float));
    else if (h >= hq)
      std::memcpy(kp + ((h - hq) * cap + start + tok) * D, v, D * sizeof(float));
  }
}

// ---- Attention for steps of a few query tokens ------------------------------------------------
//
// Why: at T = 1..4 queries PyTorch's CPU flash kernel spends ~150 us per layer of SmolLM2 at a 1k
// context, twice what streaming the layer's keys and values (1.5 MB) costs; it splits the work by
// query head, so each KV head is read once per query head and the two cores get 9 heads to share.
// Here each work item is one KV head and one chunk of keys, for all the query heads that share that
// KV head and all T queries: every key and value is read once, and the chunks keep both cores busy.
// Softmax per chunk with its own max, chunks merged exactly (flash-decoding). exp is a Cephes-style
// polynomial (~1 ulp) on vectors.

inline float dot(const float* a, const float* b, int64_t D) {
  if (D % AVL == 0) {
    avec acc = splat(0.0f);
    for (int64_t d = 0; d < D; d += AVL) acc += aload(a + d) * aload(b + d);
    return hsum(acc);
  }
  float s = 0;
  for (int64_t d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

// out (T, hq * D) = softmax(q k^T * scale, masked) v for T query tokens. q: row t of the qkv buffer
// (row stride ldq) holds the query heads at h * D. kb, vb: (hkv, cap, D), the first S entries valid.
// mask: (T, S) bool, true = attend, or null (all visible).
// Work items: one KV head and one chunk of keys each; `part` holds per item and query row the chunk's
// max, sum and D accumulated values. small_items runs items [i0, i1), small_merge the (KV head, query
// row) pairs [gr0, gr1) once every item is done; small_attention runs both with ATen's threads, the
// fused layer (fused_layer below) inside its own parallel region.
struct SmallPlan {
  int64_t rep, R, nchunks, items;
  static constexpr int64_t chunk = 256;
  SmallPlan(int64_t S, int64_t T, int64_t hq, int64_t hkv)
      : rep(hq / hkv), R(hq / hkv * T), nchunks((S + chunk - 1) / chunk), items(hkv * ((S + chunk - 1) / chunk)) {}
  int64_t part_floats(int64_t D) const { return items * R * (D + 2); }
};

void small_items(const SmallPlan& pl, const float* q, int64_t ldq, const float* kb, const float* vb, int64_t cap,
                 int64_t S, const bool* mask, int64_t T, int64_t D, float scale, float* part, int64_t i0, int64_t i1) {
  const int64_t rep = pl.rep, R = pl.R, nchunks = pl.nchunks, chunk = SmallPlan::chunk;
  const float NEG = -std::numeric_limits<float>::infinity();
  std::vector<float> sc(R * chunk + AVL);
  for (int64_t it = i0; it < i1; ++it) {
    const int64_t g = it / nchunks, s0 = (it % nchunks) * chunk, n = std::min(chunk, S - s0);
    const float* kg = kb + (g * cap + s0) * D;
    const float* vg = vb + (g * cap + s0) * D;
    float* res = part + it * R * (D + 2);
    // While the keys are scored, each key's value row and the next item's key row are fetched into L2
    // (one prefetch a 64-byte line): the cache comes from memory every step (the weights streamed in
    // between evict it), and the hardware prefetcher does not cross from the keys to the values or to
    // the next item. Whole 1-token steps of SmolLM2, alternating with and without: 0.967x at 300
    // cached tokens, 0.918x at 1000.
    const float* kn = nullptr;  // the next item's keys, if this thread has one
    int64_t nn = 0;
    if (it + 1 < i1) {
      const int64_t g2 = (it + 1) / nchunks, s2 = ((it + 1) % nchunks) * chunk;
      kn = kb + (g2 * cap + s2) * D, nn = std::min(chunk, S - s2);
    }
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t o = 0; o < D; o += 16) __builtin_prefetch(vg + s * D + o, 0, 2);
      if (s < nn)
        for (int64_t o = 0; o < D; o += 16) __builtin_prefetch(kn + s * D + o, 0, 2);
      for (int64_t r = 0; r < R; ++r) {
        const int64_t j = g * rep + r / T, t = r % T;
        const bool seen = !mask || mask[t * S + s0 + s];
        sc[r * chunk + s] = seen ? dot(q + t * ldq + j * D, kg + s * D, D) * scale : NEG;
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      float* row = sc.data() + r * chunk;
      float m = NEG;
      for (int64_t s = 0; s < n; ++s) m = std::max(m, row[s]);
      float l = 0;
      if (m != NEG) {
        int64_t s = 0;
        avec lv = splat(0.0f);
        for (; s + AVL <= n; s += AVL) {
          const avec p = vexp(aload(row + s) - splat(m));
          astore(row + s, p);
          lv += p;
        }
        l = hsum(lv);
        for (; s < n; ++s) {
          row[s] = row[s] == NEG ? 0.0f : std::exp(row[s] - m);
          l += row[s];
        }
      } else {
        std::fill(row, row + n, 0.0f);
      }
      res[r * (D + 2)] = m;
      res[r * (D + 2) + 1] = l;
      std::fill(res + r * (D + 2) + 2, res + (r + 1) * (D + 2), 0.0f);
    }
    for (int64_t s = 0; s < n; ++s) {
      const float* v = vg + s * D;
      for (int64_t r = 0; r < R; ++r) {
        const float p = sc[r * chunk + s];
        if (p == 0.0f) continue;
        float* acc = res + r * (D + 2) + 2;
        for (int64_t d = 0; d < D; ++d) acc[d] += p * v[d];
      }
    }
  }
}

// merge the chunks of each KV head: weights exp(m_c - M), as in one softmax over all keys
void small_merge(const SmallPlan& pl, const float* part, int64_t T, int64_t hq, int64_t D, float* out, int64_t gr0,
                 int64_t gr1) {
  const int64_t rep = pl.rep, R = pl.R, nchunks = pl.nchunks;
  const float NEG = -std::numeric_limits<float>::infinity();
  for (int64_t gr = gr0; gr < gr1; ++gr) {
    const int64_t g = gr / R, r = gr % R;
    float M = NEG;
    for (int64_t c = 0; c < nchunks; ++c) M = std::max(M, part[((g * nchunks + c) * R + r) * (D + 2)]);
    const int64_t j = g * rep + r / T, t = r % T;
    float* o = out + t * hq * D + j * D;
    std::fill(o, o + D, 0.0f);
    float L = 0;
    for (int64_t c = 0; c < nchunks; ++c) {
      const float* pr = part + ((g * nchunks + c) * R + r) * (D + 2);
      if (pr[0] == NEG) continue;
      const float w = std::exp(pr[0] - M);
      L += pr[1] * w;
      for (int64_t d = 0; d < D; ++d) o[d] += pr[2 + d] * w;
    }
    const float inv = 1.0f / L;
    for (int64_t d = 0; d < D; ++d) o[d] *= inv;
  }
}

void small_attention(const float* q, int64_t ldq, const float* kb, const float* vb, int64_t cap, int64_t S,
                     const bool* mask, int64_t T, int64_t hq, int64_t hkv, int64_t D, float scale, float* out) {
  const SmallPlan pl(S, T, hq, hkv);
  std::vector<float> part(pl.part_floats(D));
  at::parallel_for(0, pl.items, 1, [&](int64_t i0, int64_t i1) {
    small_items(pl, q, ldq, kb, vb, cap, S, mask, T, D, scale, part.data(), i0, i1);
  });
  small_merge(pl, part.data(), T, hq, D, out, 0, hkv * pl.R);
}

// ---- MLP activation ----------------------------------------------------------------------------
//
// out[t][i] = silu(gu[t][i]) * gu[t][I + i], gu (T, 2 I), out (T, I). SiLU as ATen computes it
// (x / (1 + exp(-x)) on ATen's vectors, std::exp on a tail), so the result is at::silu(gate) * up to the
// bit (tested); one pass over the rows in parallel instead of two serial ATen ops (those took 0.70 ms of
// a 16-token step of SmolLM2).
// Rows [t0, t1), columns [c0, c1) (c0 a multiple of the vector width; c1 one too, or I): every element
// as the whole-row pass computes it, so the fused layer's column shares give silu_mul's numbers.
void silu_block(const float* gu, int64_t I, float* out, int64_t t0, int64_t t1, int64_t c0, int64_t c1) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t W = Vec::size();
  const Vec one(1.0f);
  // ATen's vectorised loop takes two vectors at a time and leaves the rest of a row (< 2 W elements) to
  // the scalar op with std::exp: the same split here, so a row's tail gets ATen's scalar numbers too.
  const int64_t vec_end = std::min(c1, I / (2 * W) * (2 * W));
  for (int64_t t = t0; t < t1; ++t) {
    const float* g = gu + t * 2 * I;
    const float* u = g + I;
    float* o = out + t * I;
    int64_t i = c0;
    for (; i + W <= vec_end; i += W) {
      const Vec x = Vec::loadu(g + i);
      (x / (one + x.neg().exp()) * Vec::loadu(u + i)).store(o + i);
    }
    for (; i < c1; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

void silu_mul(const float* gu, int64_t T, int64_t I, float* out) {
  auto rows = [&](int64_t t0, int64_t t1) { silu_block(gu, I, out, t0, t1, 0, I); };
  if (T >= 4 && !at::in_parallel_region())  // fewer rows: less work than waking the other threads
    at::parallel_for(0, T, 1, rows);
  else
    rows(0, T);
}

// ---- Attention for steps of several query tokens (draft checks, lookahead trees) ---------------
//
// Why: PyTorch's flash kernel took ~75 us per layer of SmolLM2 for a 16-token step at 300 cached
// tokens (perf of `llmaccel cost`: 13% of the step), for ~0.4 MFLOP of work per head, going through
// MKL calls per query head. Here, as in small_attention, a work item is one KV head and one chunk of
// keys for every query row that shares the head (rep heads x T tokens: 48 rows for SmolLM2 at T = 16),
// and both products run through the register tiles of tiles.h over the keys and values where they lie
// in the cache. Chunks are merged exactly (flash-decoding).
bool step_tiles = true;  // skinny.step_attention_tiles() turns them off, to compare with SDPA and to test

// Items and row vectors of a multi-token step's attention.
struct TilePlan {
  static constexpr int64_t CHUNK = 64;  // keys per item: the chunk's St (64 x RP) and V rows stay in L1
  int64_t rep, R, RP, nchunks, items;
  TilePlan(int64_t S, int64_t T, int64_t hq, int64_t hkv)
      : rep(hq / hkv), R(hq / hkv * T), RP((hq / hkv * T + AVL - 1) / AVL * AVL), nchunks((S + CHUNK - 1) / CHUNK),
        items(hkv * ((S + CHUNK - 1) / CHUNK)) {}
};

// The buffers the threads share: per KV head Qt (D, RP), the scaled queries transposed; per item P V
// (R, D; every element written by values_tile: left uninitialised), and per item and query row (RP:
// whole vectors) the row max and the row sum.
struct TileBuffers {
  std::unique_ptr<float[]> qt, pv, pm, pl;
  TileBuffers(const TilePlan& p, int64_t hkv, int64_t D)
      : qt(new float[hkv * D * p.RP]), pv(new float[p.items * p.R * D]), pm(new float[p.items * p.RP]),
        pl(new float[p.items * p.RP]) {}
};

void tile_attention_part(const TilePlan& plan, const TileBuffers& buf, int64_t t_id, int64_t n_th, const float* q,
                         int64_t ldq, const float* kb, const float* vb, int64_t cap, int64_t S, const bool* mask,
                         int64_t T, int64_t hq, int64_t hkv, int64_t D, float scale, float* out);

// out (T, hq * D), as small_attention; D a multiple of AVL.
// One parallel region in three phases (threads wait for each other between them): the scaled queries
// transposed per KV head, the (head, key chunk) items, the merge of each head's chunks by vectors of
// rows. The first and last ran on the calling thread while the other waited (4.6 and 10.6 us of ~80 us
// a layer at 16 tokens over 300 cached keys; ~70 us in one region, ~61 us with the merge on vectors).
// Chunks whose mask rows are all true skip the per-key mask loop. Where a 16-token step's ~120 us of
// one thread's work goes (benchmarks/attention_phases.cpp): the two products ~75 us, the softmax
// numerators ~22 (mostly the exp of 45 k scores), the merge ~11 before / ~4 after, transposition ~4.
void tile_attention(const float* q, int64_t ldq, const float* kb, const float* vb, int64_t cap, int64_t S,
                    const bool* mask, int64_t T, int64_t hq, int64_t hkv, int64_t D, float scale, float* out) {
  const TilePlan plan(S, T, hq, hkv);
  const TileBuffers buf(plan, hkv, D);
  const int nt = at::in_parallel_region() ? 1 : static_cast<int>(std::min<int64_t>(at::get_num_threads(), plan.items));
#pragma omp parallel num_threads(nt)
  tile_attention_part(plan, buf, omp_get_thread_num(), omp_get_num_threads(), q, ldq, kb, vb, cap, S, mask, T, hq,
                      hkv, D, scale, out);
}

// Thread t_id of n_th's share of tile_attention, called by every thread of a parallel region (it waits
// for the others at its phase boundaries).
void tile_attention_part(const TilePlan& plan, const TileBuffers& buf, int64_t t_id, int64_t n_th, const float* q,
                         int64_t ldq, const float* kb, const float* vb, int64_t cap, int64_t S, const bool* mask,
                         int64_t T, int64_t hq, int64_t hkv, int64_t D, float scale, float* out) {
  const int64_t rep = plan.rep, R = plan.R, RP = plan.RP, nchunks = plan.nchunks, items = plan.items;
  constexpr int64_t CHUNK = TilePlan::CHUNK;
  const float NEG = -std::numeric_limits<float>::infinity();
  float* qt = buf.qt.get();
  float* pv = buf.pv.get();
  float* pm = buf.pm.get();
  float* pl = buf.pl.get();
  {
    // phase 1: Qt, columns R..RP zero, one row of Qt (one d of one KV head) at a time: contiguous
    // stores, strided loads from the step's q rows (in L1). Column by column (one query row's D values
    // down column r) the stores were strided and took ~26% of this function's own time; row by row a
    // 16-token step of SmolLM2 is ~0.2 ms cheaper (15.56 -> 15.35 ms, alternating in one process), with
    // the same Qt values.
    for (int64_t gd = hkv * D * t_id / n_th; gd < hkv * D * (t_id + 1) / n_th; ++gd) {
      const int64_t g = gd / D, d = gd % D;
      float* row = qt + gd * RP;
      for (int64_t j = 0; j < rep; ++j) {
        const float* qc = q + (g * rep + j) * D + d;
        for (int64_t t = 0; t < T; ++t) row[j * T + t] = qc[t * ldq] * scale;
      }
      for (int64_t r = R; r < RP; ++r) row[r] = 0.0f;
    }
#pragma omp barrier
    // phase 2: items
    std::vector<float> st(CHUNK * RP);
    std::vector<const float*> rowp(CHUNK);
    const int64_t it_end = items * (t_id + 1) / n_th;
    for (int64_t it = items * t_id / n_th; it < it_end; ++it) {
      const int64_t g = it / nchunks, s0 = (it % nchunks) * CHUNK, n = std::min(CHUNK, S - s0);
      for (int64_t j = 0; j < n; ++j) rowp[j] = kb + (g * cap + s0 + j) * D;
      {  // this chunk's values and the next item's keys into L2 (see small_items): 16-token steps
         // 0.982x at 300 cached tokens, 0.978x at 1000 (alternating with and without)
        const char* vc = reinterpret_cast<const char*>(vb + (g * cap + s0) * D);
        for (int64_t o = 0; o < n * D * static_cast<int64_t>(sizeof(float)); o += 64) __builtin_prefetch(vc + o, 0, 2);
        if (it + 1 < it_end) {
          const int64_t g2 = (it + 1) / nchunks, s2 = ((it + 1) % nchunks) * CHUNK, n2 = std::min(CHUNK, S - s2);
          const char* kc = reinterpret_cast<const char*>(kb + (g2 * cap + s2) * D);
          for (int64_t o = 0; o < n2 * D * static_cast<int64_t>(sizeof(float)); o += 64) __builtin_prefetch(kc + o, 0, 2);
        }
      }
      const float* qg = qt + g * D * RP;
      int64_t r0 = 0;
      for (; r0 + RT * AVL <= RP; r0 += RT * AVL) scores_rows<RT>(qg + r0, RP, D, rowp.data(), n, st.data() + r0);
      switch ((RP - r0) / AVL) {  // the last rows: fewer than RT vectors
        case 1: scores_rows<1>(qg + r0, RP, D, rowp.data(), n, st.data() + r0); break;
        case 2: scores_rows<2>(qg + r0, RP, D, rowp.data(), n, st.data() + r0); break;
        case 3: scores_rows<3>(qg + r0, RP, D, rowp.data(), n, st.data() + r0); break;
        default: break;
      }
      if (mask)  // hidden keys (from token t's mask row) for the rep rows of token t
        for (int64_t t = 0; t < T; ++t) {
          const bool* mrow = mask + t * S + s0;
          if (!std::memchr(mrow, 0, n)) continue;  // the usual case: every key of the chunk visible
          for (int64_t j = 0; j < n; ++j)
            if (!mrow[j])
              for (int64_t h = 0; h < rep; ++h) st[j * RP + h * T + t] = NEG;
        }
      // softmax numerators down the columns; a row that sees no key of the chunk keeps max -inf, sum 0
      for (int64_t c0 = 0; c0 < RP; c0 += AVL) {
        avec vmax = splat(NEG), vsum = splat(0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const avec x = aload(st.data() + j * RP + c0);
          vmax = x > vmax ? x : vmax;
        }
        const avec sub = vmax == splat(NEG) ? splat(0.0f) : vmax;  // exp(-inf - 0) = 0, not NaN
        for (int64_t j = 0; j < n; ++j) {
          float* sp = st.data() + j * RP + c0;
          const avec e = vexp(aload(sp) - sub);
          astore(sp, e);
          vsum += e;
        }
        astore(pm + it * RP + c0, vmax);
        astore(pl + it * RP + c0, vsum);
      }
      for (int64_t j = 0; j < n; ++j) rowp[j] = vb + (g * cap + s0 + j) * D;
      float* o = pv + it * R * D;
      for (int64_t d0 = 0; d0 < D; d0 += DT * AVL) {
        const int64_t nd = std::min<int64_t>(DT, (D - d0) / AVL);
        for (int64_t i = 0; i < R; i += IT) {
          const int64_t ni = std::min<int64_t>(IT, R - i);
          switch (nd) {  // DT is at most 4
            case 1: values_rows<1>(ni, st.data() + i, RP, n, rowp.data(), d0, true, nullptr, o + i * D, D); break;
            case 2: values_rows<2>(ni, st.data() + i, RP, n, rowp.data(), d0, true, nullptr, o + i * D, D); break;
            case 3: values_rows<3>(ni, st.data() + i, RP, n, rowp.data(), d0, true, nullptr, o + i * D, D); break;
            default: values_rows<DT>(ni, st.data() + i, RP, n, rowp.data(), d0, true, nullptr, o + i * D, D); break;
          }
        }
      }
    }
#pragma omp barrier
    // phase 3: merge the chunks of each KV head's rows, one vector of rows at a time: weights
    // exp(m_c - M), as in one softmax over all keys. Row by row with std::exp this took ~9 us a layer
    // per thread in a 16-token step of SmolLM2 (720 scalar exps); on vectors of rows it is ~1 us.
    const int64_t nv = RP / AVL;
    std::vector<float> wc(nchunks * AVL);
    for (int64_t gv = hkv * nv * t_id / n_th; gv < hkv * nv * (t_id + 1) / n_th; ++gv) {
      const int64_t g = gv / nv, r0 = (gv % nv) * AVL;
      const float* pmg = pm + g * nchunks * RP + r0;
      const float* plg = pl + g * nchunks * RP + r0;
      avec vmax = splat(NEG);
      for (int64_t c = 0; c < nchunks; ++c) {
        const avec x = aload(pmg + c * RP);
        vmax = x > vmax ? x : vmax;
      }
      const avec sub = vmax == splat(NEG) ? splat(0.0f) : vmax;  // a chunk that saw no key weighs 0
      avec L = splat(0.0f);
      for (int64_t c = 0; c < nchunks; ++c) {
        const avec w = vexp(aload(pmg + c * RP) - sub);
        astore(wc.data() + c * AVL, w);
        L += aload(plg + c * RP) * w;
      }
      const avec inv = splat(1.0f) / L;
      for (int64_t l = 0; l < AVL && r0 + l < R; ++l) {
        const int64_t r = r0 + l;
        float* o = out + (r % T) * hq * D + (g * rep + r / T) * D;
        for (int64_t d = 0; d < D; d += AVL) {
          avec acc = splat(0.0f);
          for (int64_t c = 0; c < nchunks; ++c)
            acc += aload(pv + ((g * nchunks + c) * R + r) * D + d) * splat(wc[c * AVL + l]);
          astore(o + d, acc * splat(inv[l]));
        }
      }
    }
  }
}

void add_into(float* h, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] += y[i];
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "llama_layer: ",
                    name, " must be a contiguous fp32 CPU tensor");
}

// ---- The layer in one parallel region ---------------------------------------------------------
//
// Why: called op by op (llama_layer's unfused path below), a layer opens a parallel region per linear,
// one for the attention and one for SiLU, and runs the norms, RoPE, the cache write and the residual
// adds on the calling thread while the other waits. perf of a 16-token step of SmolLM2 (300 cached
// tokens): the second thread waited in libgomp 31% of the step and the first 16%; those serial parts
// took 7 us a layer at 1 token and 30 at 16 (0.7 ms of the step). Here every thread runs the whole
// layer and they meet at barriers: each normalises all rows itself (as each already split all rows of
// x into its own bf16 parts: cheaper than passing them between cores) and splits them, takes its share
// of each linear's panels, of RoPE and the cache write by (token, head), of the attention's items and
// merge, and of SiLU; the residual adds happen in the o and down linears' epilogue (y += on the
// thread's own columns). Every number is computed as the unfused path computes it (same functions,
// same order per element): the two are tested equal bit for bit.
// Expected: most of the serial 30 us a layer of a 16-token step, ~0.5 ms. Measured, whole SmolLM2 steps
// at 300 cached tokens, the two paths alternating step by step (medians of 115): k=1 8.40 -> 8.09 ms
// (0.962x), k=4 0.961x, k=16 13.95 -> 13.79 ms (0.989x). Timers in the fused layer at 16 tokens (us a
// layer and thread): norm, split and q/k/v 48, RoPE and cache 4, attention 81, o 33, gate/up and SiLU
// 130, down 72, barriers ~15 in all: the linears and the attention themselves, not waiting, are what
// a 16-token step costs more.
// Since commit b262dc5 it runs on every path of the kernel, not only AMX: on an AVX2 CPU (Zen 3, code blocks
// through the vector kernel) the op-by-op layer opened five parallel regions a layer and allocated five
// tensors. Whole steps against the op-by-op build, alternating in one process (two runs, medians of 150
// / 120): k=1 0.943x / 0.971x, k=2 0.922x, k=3 0.943x, k=4 0.973x, k=6 0.924x, k=8 0.973x, k=16 1.043x
// / 0.981x (noise).
bool fused_on = true;  // skinny.fused_layer() turns it off, to compare and to test
std::atomic<int64_t> fused_runs{0};  // layer calls that took the fused path (for the tests)

struct FusedMats {
  llmaccel_gemm::PanelMatrix qkv, o, gu, down;
};

// Whether the fused layer can run this step (every linear a matrix pack() made, on whichever path the
// kernel takes for T rows; the attention one of ours; not already inside a parallel region); if so fills m.
bool fused_ready(const at::Tensor& qkv_packed, int64_t qkv_n, const float* qkv_bias, const at::Tensor& o_packed,
                 int64_t H, const at::Tensor& gu_packed, int64_t gu_n, const at::Tensor& down_packed, int64_t T,
                 int64_t hq, int64_t D, int64_t small_attention_max_t, FusedMats* m) {
  using llmaccel_gemm::panel_matrix;
  if (!fused_on || at::in_parallel_region() || gu_n % 2) return false;
  if (T > small_attention_max_t && !(step_tiles && D % AVL == 0)) return false;  // SDPA: the unfused path
  return panel_matrix(qkv_packed, qkv_n, T, qkv_bias, &m->qkv) && panel_matrix(o_packed, H, T, nullptr, &m->o) &&
         panel_matrix(gu_packed, gu_n, T, nullptr, &m->gu) && panel_matrix(down_packed, H, T, nullptr, &m->down) &&
         m->qkv.K == H && m->o.K == hq * D && m->gu.K == H && m->down.K == gu_n / 2;
}

void fused_layer(const FusedMats& m, float* hp, const float* ln1, const float* ln2, const float* cp, const float* sp,
                 float* kp, float* vp, int64_t cap, int64_t start, const bool* mask, int64_t T, int64_t H, int64_t hq,
                 int64_t hkv, int64_t D, float eps, float scale, int64_t small_attention_max_t) {
  using llmaccel_gemm::prepare_rows;
  using llmaccel_gemm::run_panel_range;
  const int64_t qkv_n = m.qkv.n, I = m.gu.n / 2, S = start + T, heads = hq + 2 * hkv;
  const bool small = T <= small_attention_max_t;
  // shared buffers, kept per calling thread: every element is written before it is read
  thread_local std::vector<float> qkv_buf, a_buf, gu_buf, act_buf, part_buf;
  qkv_buf.resize(T * qkv_n), a_buf.resize(T * hq * D), gu_buf.resize(T * 2 * I), act_buf.resize(T * I);
  float* qkv = qkv_buf.data();
  float* a = a_buf.data();
  float* gu = gu_buf.data();
  float* act = act_buf.data();
  const SmallPlan splan(S, T, hq, hkv);
  const TilePlan tplan(small ? 1 : S, T, hq, hkv);  // unused when small
  std::unique_ptr<TileBuffers> tbuf;
  if (small)
    part_buf.resize(splan.part_floats(D));
  else
    tbuf.reset(new TileBuffers(tplan, hkv, D));
  float* part = part_buf.data();  // (thread_local: the pointer, not the name, goes into the region)
  // gate and up panels in pairs (panel j of gate with panel j of up on one thread), so each thread's
  // SiLU reads only what it has just written; otherwise SiLU waits for both and splits the columns
  const int64_t NB = m.gu.panel_width;
  const bool paired = I % NB == 0;
  const int nt = static_cast<int>(std::max<int64_t>(1, at::get_num_threads()));
#pragma omp parallel num_threads(nt)
  {
    const int64_t t = omp_get_thread_num(), nth = omp_get_num_threads();
    auto lo = [&](int64_t n) { return n * t / nth; };
    auto hi = [&](int64_t n) { return n * (t + 1) / nth; };
    thread_local std::vector<float> xn_buf;  // this thread's normalised rows
    xn_buf.resize(T * H);
    float* xn = xn_buf.data();

    // attention block: q, k, v
    rms_norm(hp, ln1, xn, T, H, eps);
    llmaccel_gemm::PanelRows rows = prepare_rows(m.qkv, xn, T, H);
    run_panel_range(m.qkv, rows, qkv, lo(m.qkv.panels), hi(m.qkv.panels), false);
#pragma omp barrier
    rope_and_cache(qkv, qkv_n, kp, vp, cap, start, cp, sp, hq, hkv, D, lo(T * heads), hi(T * heads));
#pragma omp barrier
    if (small) {
      small_items(splan, qkv, qkv_n, kp, vp, cap, S, mask, T, D, scale, part, lo(splan.items),
                  hi(splan.items));
#pragma omp barrier
      small_merge(splan, part, T, hq, D, a, lo(hkv * splan.R), hi(hkv * splan.R));
    } else {
      tile_attention_part(tplan, *tbuf, t, nth, qkv, qkv_n, kp, vp, cap, S, mask, T, hq, hkv, D, scale, a);
    }
#pragma omp barrier
    // o, added to h
    rows = prepare_rows(m.o, a, T, hq * D);
    run_panel_range(m.o, rows, hp, lo(m.o.panels), hi(m.o.panels), true);
#pragma omp barrier
    // MLP block: gate and up, SiLU
    rms_norm(hp, ln2, xn, T, H, eps);
    rows = prepare_rows(m.gu, xn, T, H);
    if (paired) {
      const int64_t half = m.gu.panels / 2, j0 = lo(half), j1 = hi(half);
      run_panel_range(m.gu, rows, gu, j0, j1, false);
      run_panel_range(m.gu, rows, gu, half + j0, half + j1, false);
      silu_block(gu, I, act, 0, T, j0 * NB, j1 * NB);
    } else {
      run_panel_range(m.gu, rows, gu, lo(m.gu.panels), hi(m.gu.panels), false);
#pragma omp barrier
      constexpr int64_t W = at::vec::Vectorized<float>::size();
      const int64_t c0 = lo(I) / W * W, c1 = t + 1 == nth ? I : hi(I) / W * W;
      silu_block(gu, I, act, 0, T, c0, c1);
    }
#pragma omp barrier
    // down, added to h
    rows = prepare_rows(m.down, act, T, I);
    run_panel_range(m.down, rows, hp, lo(m.down.panels), hi(m.down.panels), true);
  }
}

}  // namespace

// Turns the fused layer on or off; returns the setting.
bool fused_layer_switch(bool on) {
  fused_on = on;
  return on;
}

// How many layer calls have taken the fused path in this process.
int64_t fused_layer_runs() { return fused_runs.load(std::memory_order_relaxed); }

// x (T, H) normalised row by row and scaled by w (H,), as the C++ layer normalises its inputs: the model's
// final norm after the native layers. Why not F.rms_norm: that is eleven ATen ops (pow, mean, add,
// rsqrt, dtype checks...) whose code and data the weights streamed in between have evicted, so after a
// step's layers it took 200-270 us (17 us warm) of a ~11 ms 1-token step of SmolLM2 (torch.profiler).
at::Tensor rms_norm_rows(const at::Tensor& x, const at::Tensor& w, double eps) {
  TORCH_CHECK_VALUE(x.dim() == 2 && w.dim() == 1 && x.size(1) == w.size(0), "rms_norm_rows: x (T, H) and w (H,), got ",
                    x.sizes(), " and ", w.sizes());
  check(w, "w");
  const auto xc = x.contiguous();
  check(xc, "x");
  auto out = at::empty_like(xc);
  rms_norm(xc.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), xc.size(0), xc.size(1),
           static_cast<float>(eps));
  return out;
}

// silu(gate) * up for gu (T, 2 I) = [gate | up]: the layer's MLP activation, exposed for the tests.
at::Tensor silu_mul(const at::Tensor& gu) {
  TORCH_CHECK_VALUE(gu.dim() == 2 && gu.size(1) % 2 == 0 && gu.scalar_type() == at::kFloat && gu.device().is_cpu(),
                    "silu_mul: gu must be a CPU fp32 (T, 2 I) tensor, got ", gu.sizes(), " ", gu.scalar_type());
  const auto c = gu.contiguous();
  auto out = at::empty({gu.size(0), gu.size(1) / 2}, gu.options());
  silu_mul(c.data_ptr<float>(), gu.size(0), gu.size(1) / 2, out.data_ptr<float>());
  return out;
}

// Multi-token steps' attention through tile_attention (on) or PyTorch's SDPA; returns the setting.
bool step_attention_tiles(bool on) {
  step_tiles = on;
  return on;
}

// h (T, H) in place. qkv_packed: q, k, v weights stacked (qkv_n = (hq + 2 hkv) D outputs), optional
// bias; o_packed: H outputs; gu_packed: gate and up stacked (gu_n = 2 I); down_packed: H outputs.
// cos, sin: (T, D) for the step's positions. kbuf, vbuf: (1, hkv, capacity, D) with `start` valid
// entries; the step's keys and values are written at start..start+T-1 (capacity must allow it).
// mask: (1, 1, T, start + T) bool (true = attend) or none (every key visible). Steps of up to
// small_attention_max_t tokens use small_attention, longer ones tile_attention (head dims that are a
// multiple of the vector width; others PyTorch's SDPA).
void llama_layer(at::Tensor h, const at::Tensor& ln1, const at::Tensor& qkv_packed, int64_t qkv_n,
                 const c10::optional<at::Tensor>& qkv_bias, const at::Tensor& o_packed, const at::Tensor& ln2,
                 const at::Tensor& gu_packed, int64_t gu_n, const at::Tensor& down_packed,
                 const at::Tensor& cos, const at::Tensor& sin, at::Tensor kbuf, at::Tensor vbuf,
                 int64_t start, const c10::optional<at::Tensor>& mask, int64_t hq, int64_t hkv, double eps,
                 double scaling, int64_t small_attention_max_t) {
  check(h, "h");
  check(cos, "cos");
  check(sin, "sin");
  check(kbuf, "kbuf");
  check(vbuf, "vbuf");
  check(ln1, "ln1");
  check(ln2, "ln2");
  TORCH_CHECK_VALUE(h.dim() == 2, "llama_layer: h must be (T, H)");
  const int64_t T = h.size(0), H = h.size(1);
  TORCH_CHECK_VALUE(kbuf.dim() == 4 && kbuf.size(1) == hkv && kbuf.sizes() == vbuf.sizes(),
                    "llama_layer: kbuf/vbuf must be (1, hkv, capacity, D)");
  const int64_t cap = kbuf.size(2), D = kbuf.size(3);
  TORCH_CHECK_VALUE(qkv_n == (hq + 2 * hkv) * D && cos.size(0) == T && cos.size(1) == D && sin.sizes() == cos.sizes(),
                    "llama_layer: shapes of qkv / cos / sin do not match the heads");
  TORCH_CHECK_VALUE(start >= 0 && start + T <= cap, "llama_layer: the cache has no room for the step");
  TORCH_CHECK_VALUE(ln1.numel() == H && ln2.numel() == H, "llama_layer: norm weights must have H entries");
  const float feps = static_cast<float>(eps);
  float* hp = h.data_ptr<float>();
  float* kp = kbuf.data_ptr<float>();
  float* vp = vbuf.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t S = start + T;
  // the step's mask as lean.step_mask builds it (bool, contiguous, T x S) is read in place: reshape, to and
  // contiguous were three dispatcher calls a layer, each slow with the code and data the weights evicted
  // (16-token steps of SmolLM2, alternating: 13.09 -> 12.98 ms; 4-token 8.78 -> 8.73)
  at::Tensor m;
  const bool* mp = nullptr;
  if (mask.has_value() && mask->defined()) {
    if (mask->scalar_type() == at::kBool && mask->is_contiguous() && mask->numel() == T * S && mask->is_cpu())
      mp = mask->data_ptr<bool>();
    else
      m = mask->reshape({T, S}).to(at::kBool).contiguous(), mp = m.data_ptr<bool>();
  }

  const bool plain_bias = !qkv_bias.has_value() || !qkv_bias->defined() ||
                          (qkv_bias->dim() == 1 && qkv_bias->size(0) == qkv_n && qkv_bias->is_contiguous() &&
                           qkv_bias->scalar_type() == at::kFloat && qkv_bias->device().is_cpu());
  FusedMats fm;
  if (plain_bias && fused_ready(qkv_packed, qkv_n, qkv_bias && qkv_bias->defined() ? qkv_bias->data_ptr<float>() : nullptr,
                                o_packed, H, gu_packed, gu_n, down_packed, T, hq, D, small_attention_max_t, &fm)) {
    fused_runs.fetch_add(1, std::memory_order_relaxed);
    fused_layer(fm, hp, ln1.data_ptr<float>(), ln2.data_ptr<float>(), cp, sp, kp, vp, cap, start, mp, T, H, hq, hkv, D,
                feps, static_cast<float>(scaling), small_attention_max_t);
    return;
  }

  // op by op: attention block
  auto x = at::empty_like(h);
  rms_norm(hp, ln1.data_ptr<float>(), x.data_ptr<float>(), T, H, feps);
  auto qkv = skinny_linear(x, qkv_packed, qkv_n, qkv_bias);  // (T, (hq + 2 hkv) D)
  float* qp = qkv.data_ptr<float>();
  rope_and_cache(qp, qkv_n, kp, vp, cap, start, cp, sp, hq, hkv, D, 0, T * (hq + 2 * hkv));
  at::Tensor a;
  if (T <= small_attention_max_t || (step_tiles && D % AVL == 0)) {
    a = at::empty({T, hq * D}, h.options());
    (T <= small_attention_max_t ? small_attention : tile_attention)(qp, qkv_n, kp, vp, cap, S, mp, T, hq, hkv, D,
                                                                   static_cast<float>(scaling), a.data_ptr<float>());
  } else {
    auto q = qkv.view({T, hq + 2 * hkv, D}).narrow(1, 0, hq).transpose(0, 1).unsqueeze(0);  // (1, hq, T, D)
    auto keys = kbuf.narrow(2, 0, S);  // (1, hkv, S, D)
    auto values = vbuf.narrow(2, 0, S);
    a = at::scaled_dot_product_attention(q, keys, values, mask, 0.0, false, scaling, hq != hkv);  // (1, hq, T, D)
    a = a.transpose(1, 2).contiguous().view({T, hq * D});
  }
  auto o = skinny_linear(a, o_packed, H, c10::nullopt);
  add_into(hp, o.data_ptr<float>(), T * H);

  // MLP block
  rms_norm(hp, ln2.data_ptr<float>(), x.data_ptr<float>(), T, H, feps);
  auto gu = skinny_linear(x, gu_packed, gu_n, c10::nullopt);  // (T, 2 I)
  const int64_t I = gu_n / 2;
  auto act = at::empty({T, I}, h.options());
  silu_mul(gu.data_ptr<float>(), T, I, act.data_ptr<float>());
  auto d = skinny_linear(act, down_packed, H, c10::nullopt);
  add_into(hp, d.data_ptr<float>(), T * H);
}
