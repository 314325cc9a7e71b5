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

// The 23 hash bits of tokens i0 .. i0 + AVL - 1 under the key (a, b).
inline auvec hash_bits(uint32_t i0, uint32_t a, uint32_t b) {
  auvec i;
  for (int l = 0; l < AVL; ++l) i[l] = i0 + static_cast<uint32_t>(l);
  return mix32(mix32(i * 0x9e3779b1U + a) ^ b) >> 9;
}

// The Gumbel noise of 23-bit hash values: u = (bits + 0.5) / 2^23 in (0, 1), never 0 or 1.
inline avec gumbel_of_bits(auvec bits) {
  const avec u = (__builtin_convertvector((aivec)bits, avec) + 0.5f) * c(1.1920928955078125e-7);
  return -cephes_log(-cephes_log(u));
}

// AVL lanes of noise for tokens i0 .. i0 + AVL - 1.
inline avec noise_lanes(uint32_t i0, uint32_t a, uint32_t b) { return gumbel_of_bits(hash_bits(i0, a, b)); }

inline bool any_lane(aivec m) {  // m: a comparison's lanes (0 or -1)
#if defined(__AVX512F__)
  return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0;
#elif defined(__AVX__)
  return _mm256_movemask_ps((__m256)m) != 0;
#else
  int32_t r = 0;
  for (int l = 0; l < AVL; ++l) r |= m[l];
  return r != 0;
#endif
}

// Bounds on the noise, so a choice can skip the tokens that cannot win. The noise of a token whose hash
// bits are below kTail (all but 2^-8 of tokens) is at most `body`; every token's is at most `max`. Taken
// over all 2^23 hash values through the same arithmetic (~20 ms once), not from the formula: a polynomial
// log need not be monotone, and a bound off by one rounding would change a choice.
constexpr uint32_t kTail = (1u << 23) - (1u << 15);

struct NoiseBounds {
  float body, max;
};

const NoiseBounds& noise_bounds() {
  static const NoiseBounds b = [] {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    avec body = splat(neg_inf), top = splat(neg_inf);
    auvec bits;
    for (int l = 0; l < AVL; ++l) bits[l] = static_cast<uint32_t>(l);
    for (uint32_t v = 0; v < (1u << 23); v += AVL, bits += AVL) {
      const avec g = gumbel_of_bits(bits);
      top = top > g ? top : g;
      if (v < kTail) body = body > g ? body : g;  // kTail is a multiple of AVL
    }
    NoiseBounds r{neg_inf, neg_inf};
    for (int l = 0; l < AVL; ++l) r.body = std::max(r.body, body[l]), r.max = std::max(r.max, top[l]);
    return r;
  }();
  return b;
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
// Appends the tokens of x (V scores) scoring at least `low` to `out`, by ascending id; a vector of
// scores with none at `low` costs one comparison.
void collect(const float* x, int64_t V, float low, std::vector<Scored>& out) {
  int64_t k = 0;
  for (; k + AVL <= V; k += AVL) {
    if (!any_lane(aload(x + k) >= low)) continue;
    for (int l = 0; l < AVL; ++l)
      if (x[k + l] >= low) out.push_back({x[k + l], static_cast<int32_t>(k + l)});
  }
  for (; k < V; ++k)
    if (x[k] >= low) out.push_back({x[k], static_cast<int32_t>(k)});
}

// The k-th highest score of x (V scores, max mx, 1 <= k < V): only the tokens within a few nats of the
// max go through nth_element, widening the set until it holds k (nth_element over all of SmolLM2's
// scores cost ~0.45 ms).
float kth_score(const float* x, int64_t V, float mx, int64_t k, std::vector<Scored>& tmp) {
  for (const float delta : {8.0f, 16.0f, 32.0f, std::numeric_limits<float>::infinity()}) {
    tmp.clear();
    collect(x, V, mx - delta, tmp);
    if (static_cast<int64_t>(tmp.size()) >= k) {
      std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), [](const Scored& a, const Scored& b) { return a.s > b.s; });
      return tmp[k - 1].s;
    }
  }
  return -std::numeric_limits<float>::infinity();  // fewer than k comparable scores (NaN): keep them all
}

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
    collect(x, V, mx - delta, cand);
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
    std::vector<float> s((V + AVL - 1) / AVL * AVL, neg_inf);  // whole vectors; the padding stays -inf
    std::vector<Scored> cand;
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = base + r * V;
      const uint32_t a = static_cast<uint32_t>(key[2 * r]), b = static_cast<uint32_t>(key[2 * r + 1]);
      float mx = neg_inf;
      int64_t top_id = 0;
      avec vmx = splat(neg_inf);
      int64_t j = 0;
      for (; j + AVL <= V; j += AVL) {
        const avec v = aload(x + j) / T;  // the same rounding as the scalar division
        astore(s.data() + j, v);
        vmx = v > vmx ? v : vmx;
      }
      for (int l = 0; l < AVL; ++l) mx = std::max(mx, vmx[l]);
      for (; j < V; ++j) s[j] = x[j] / T, mx = std::max(mx, s[j]);
      while (top_id < V && !(s[top_id] == mx)) ++top_id;  // the first token at the max
      if (mx == neg_inf) {  // every token dropped (logit_bias): token 0, as the torch rule's argmax
        ids[r] = 0;
        continue;
      }
      float low = neg_inf;
      if (top_k > 0 && top_k < V) {
        low = kth_score(s.data(), V, mx, top_k, cand);
        if (top_p < 1.0)  // the nucleus is taken among the top-k tokens
          for (int64_t t = 0; t < V; ++t) s[t] = s[t] < low ? neg_inf : s[t];
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
        // Start from the most likely token (every cut keeps it), then visit the rest, skipping a token
        // whose score plus its noise's bound is below the best so far: it can neither win nor tie, since
        // rounding is monotone (s + g <= s + bound for g <= bound). The hash is cheap and the logarithms
        // are not, so the hash decides which bound applies: the top tail's large noise is rare. At T=1
        // on SmolLM2 the logarithms run for a few hundred tokens of 49,152.
        const int64_t i_top = top_id;
        best = mx + noise_lanes(static_cast<uint32_t>(i_top - i_top % AVL), a, b)[i_top % AVL], at = i_top;
        const NoiseBounds& nb = noise_bounds();
        for (int64_t i0 = 0; i0 < V; i0 += AVL) {
          avec sv = aload(s.data() + i0);  // s is padded to whole vectors with -inf
          sv = sv >= low ? sv : neg_inf;
          const aivec maybe = sv + nb.max >= best;
          if (!any_lane(maybe)) continue;
          const auvec bits = hash_bits(static_cast<uint32_t>(i0), a, b);
          const aivec need = maybe & ((aivec)(bits >= kTail) | (sv + nb.body >= best));
          if (!any_lane(need)) continue;
          const avec g = gumbel_of_bits(bits);
          for (int l2 = 0; l2 < AVL; ++l2) {
            if (!need[l2]) continue;
            const float v = sv[l2] + g[l2];
            const int64_t id = i0 + l2;
            if (v > best || (v == best && id < at)) best = v, at = id;
          }
        }
      }
      ids[r] = at < 0 ? 0 : at;
    }
  });
  return out;
}
