// Seeded sampling's hot loops (sampling.py has the rule): the Gumbel noise of a position, and the whole
// choice of a row (the cuts, top-p among them, then the Gumbel-max).
//
// Noise. Why by hand: every sampled position needs one noise value per vocabulary entry. Through torch ops the
// hash and two logarithms are ~30 passes over the vocabulary (~2 ms for SmolLM2's 49,152 entries, a
// fifth of a one-token step); here one pass in vector registers.
//
// The arithmetic is the one sampling.py's torch fallback runs, operation for operation, so the two give
// the same bits (tested): a 32-bit integer hash, u = (23 hash bits + 0.5) / 2^23, and Cephes' logf
// polynomial (frexp, a select, Horner) with every product and sum rounded on its own: no fused
// multiply-add, whatever -ffp-contract the build uses.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

#include "vec.h"

#pragma GCC optimize("fp-contract=off")

namespace {

typedef uint32_t auvec __attribute__((vector_size(AVL * 4)));

// A constant as torch rounds a Python float for a float32 op: decimal -> double -> float.
constexpr float c(double x) { return static_cast<float>(x); }

inline auvec mix32(auvec x) {  // "lowbias32" (Wellons): a bijection with near-ideal avalanche
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Cephes logf on each lane (positive normal values); sampling.py's `_log` is the same sequence of operations.
inline avec cephes_log(avec x) {
  aivec bits;
  __builtin_memcpy(&bits, &x, sizeof(bits));
  avec e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, avec);
  bits = (bits & 0x007fffff) | 0x3f000000;  // frexp: x = m 2^e, m in [0.5, 1) (x > 0)
  avec m;
  __builtin_memcpy(&m, &bits, sizeof(m));
  const aivec small = m < c(0.707106781186547524);
  e = e - (small ? splat(1.0f) : splat(0.0f));
  const avec f = (small ? m + m : m) - 1.0f;
  const avec z = f * f;
  avec y = splat(c(7.0376836292e-2));
  y = y * f + c(-1.1514610310e-1);
  y = y * f + c(1.1676998740e-1);
  y = y * f + c(-1.2420140846e-1);
  y = y * f + c(1.4249322787e-1);
  y = y * f + c(-1.6668057665e-1);
  y = y * f + c(2.0000714765e-1);
  y = y * f + c(-2.4999993993e-1);
  y = y * f + c(3.3333331174e-1);
  y = (y * f) * z;
  y = y + e * c(-2.12194440e-4);
  y = y + z * c(-0.5);
  const avec r = f + y;
  return r + e * c(0.693359375);
}

// AVL lanes of noise for tokens i0 .. i0 + AVL - 1.
inline avec noise_lanes(uint32_t i0, uint32_t a, uint32_t b) {
  auvec i;
  for (int l = 0; l < AVL; ++l) i[l] = i0 + static_cast<uint32_t>(l);
  const auvec x = mix32(mix32(i * 0x9e3779b1U + a) ^ b);
  const avec u = (__builtin_convertvector((aivec)(x >> 9), avec) + 0.5f) * c(1.1920928955078125e-7);
  return -cephes_log(-cephes_log(u));  // u = (23 bits + 0.5) / 2^23 in (0, 1): never 0 or 1
}

}  // namespace

// (V,) float32: g[i] = -log(-log(u_i)), u_i from the hash of token i under the key (k0, k1).
at::Tensor gumbel_noise(int64_t k0, int64_t k1, int64_t vocab) {
  at::Tensor out = at::empty({vocab}, at::kFloat);
  float* g = out.data_ptr<float>();
  const uint32_t a = static_cast<uint32_t>(k0), b = static_cast<uint32_t>(k1);
  int64_t i = 0;
  for (; i + AVL <= vocab; i += AVL) astore(g + i, noise_lanes(static_cast<uint32_t>(i), a, b));
  if (i < vocab) {  // the tail: a whole vector computed, its first lanes kept
    const avec v = noise_lanes(static_cast<uint32_t>(i), a, b);
    for (int l = 0; i + l < vocab; ++l) g[i + l] = v[l];
  }
  return out;
}

// Top-p. Why by hand: through torch ops (softmax, a partial sort, a cumulative sum, masks) the cut cost
// ~0.3 ms per row of SmolLM2's logits, 3% of a one-token step and ~10% of a 16-token one. Here: the
// row's max and normaliser in one vector pass each, then only the tokens within a few nats of the max
// (where the nucleus nearly always lies) sorted, widening the set when it holds too little mass.
namespace {

struct Scored {
  float s;
  int32_t id;
};

// The score of the last token top-p keeps in the row x (V scores, -inf = dropped, max mx): tokens are
// ranked by score, and one is kept while the probability mass ranked above it is below p_cut. `cand`
// receives the kept tokens (scores and ids, best first).
float nucleus(const float* x, int64_t V, float mx, float p_cut, std::vector<Scored>& cand) {
  avec acc = splat(0.0f);
  int64_t j = 0;
  for (; j + AVL <= V; j += AVL) acc += vexp_portable(aload(x + j) - mx);
  double z = 0.0;
  for (int l = 0; l < AVL; ++l) z += acc[l];
  for (; j < V; ++j) z += std::exp(static_cast<double>(x[j] - mx));
  const float inv_z = static_cast<float>(1.0 / z);
  float last = mx;
  for (const float delta : {8.0f, 16.0f, 32.0f, std::numeric_limits<float>::infinity()}) {
    cand.clear();
    const float low = mx - delta;
    for (int64_t k = 0; k < V; ++k)
      if (x[k] >= low) cand.push_back({x[k], static_cast<int32_t>(k)});
    std::sort(cand.begin(), cand.end(), [](const Scored& a, const Scored& b) { return a.s > b.s || (a.s == b.s && a.id < b.id); });
    float above = 0.0f;
    size_t kept = 0;
    for (; kept < cand.size() && above < p_cut; ++kept) {
      last = cand[kept].s;
      above += std::exp(cand[kept].s - mx) * inv_z;
    }
    if (kept < cand.size() || above >= p_cut) {  // the nucleus ends inside the candidates
      while (kept < cand.size() && cand[kept].s == last) ++kept;  // ties with the last kept are kept
      cand.resize(kept);
      return last;
    }
  }
  return last;
}

}  // namespace

// The whole choice of a row, fused (sampling.py's `Sampler.choose` through torch is the same
// arithmetic): scores s = logits / temperature; the top-k, top-p and min-p cuts as a floor on s; then
// argmax of s + noise over the tokens at or above the floor, the noise of each token computed where it
// is needed (bit for bit `gumbel_noise`'s), so a cut that keeps few tokens needs little noise. In torch
// the same choice cost ~0.7 ms a row (cuts, a 49k-entry noise vector, adds, argmax): 6% of a one-token
// step of SmolLM2.
//
// l (R, V) float32 logits (penalties already applied), keys (R, 2) int64: each row's noise key halves.
at::Tensor sample_rows(const at::Tensor& l, const at::Tensor& keys, double temperature, int64_t top_k,
                       double top_p, double min_p) {
  if (l.dim() != 2 || l.scalar_type() != at::kFloat || !l.is_contiguous() || !l.device().is_cpu())
    throw std::invalid_argument("sample_rows: logits must be a contiguous 2-D float32 CPU tensor");
  const int64_t R = l.size(0), V = l.size(1);
  if (keys.dim() != 2 || keys.size(0) != R || keys.size(1) != 2 || keys.scalar_type() != at::kLong)
    throw std::invalid_argument("sample_rows: keys must be (R, 2) int64");
  if (temperature <= 0.0) throw std::invalid_argument("sample_rows: temperature must be positive");
  at::Tensor out = at::empty({R}, at::kLong);
  const float* base = l.data_ptr<float>();
  const int64_t* key = keys.data_ptr<int64_t>();
  int64_t* ids = out.data_ptr<int64_t>();
  const float T = static_cast<float>(temperature);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> s(V);
    std::vector<Scored> cand;
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = base + r * V;
      const uint32_t a = static_cast<uint32_t>(key[2 * r]), b = static_cast<uint32_t>(key[2 * r + 1]);
      float mx = neg_inf;
      for (int64_t j = 0; j < V; ++j) {
        s[j] = x[j] / T;
        mx = std::max(mx, s[j]);
      }
      float low = neg_inf;
      if (top_k > 0 && top_k < V) {
        std::vector<float> tmp(s);
        std::nth_element(tmp.begin(), tmp.begin() + (top_k - 1), tmp.end(), std::greater<float>());
        low = tmp[top_k - 1];
        for (int64_t j = 0; j < V; ++j)
          if (s[j] < low) s[j] = neg_inf;
      }
      bool few = false;
      if (top_p < 1.0) {
        low = std::max(low, nucleus(s.data(), V, mx, static_cast<float>(top_p), cand));
        few = static_cast<int64_t>(cand.size()) * AVL * 4 < V;  // noise for the kept tokens alone is cheaper
      }
      if (min_p > 0.0) low = std::max(low, mx + static_cast<float>(std::log(min_p)));
      float best = neg_inf;
      int64_t at = -1;
      if (few) {
        for (const Scored& c : cand) {
          if (c.s < low) continue;
          const int64_t i0 = c.id - c.id % AVL;
          const float v = c.s + noise_lanes(static_cast<uint32_t>(i0), a, b)[c.id - i0];
          if (v > best || (v == best && c.id < at)) best = v, at = c.id;
        }
      } else {
        for (int64_t i0 = 0; i0 < V; i0 += AVL) {
          const avec g = noise_lanes(static_cast<uint32_t>(i0), a, b);
          for (int l2 = 0; l2 < AVL && i0 + l2 < V; ++l2) {
            const float sj = s[i0 + l2];
            if (sj < low || sj == neg_inf) continue;
            const float v = sj + g[l2];
            if (v > best) best = v, at = i0 + l2;  // ascending ids: the first maximum wins
          }
        }
      }
      ids[r] = at < 0 ? 0 : at;
    }
  });
  return out;
}
