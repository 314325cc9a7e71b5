// Seeded sampling's two hot loops (sampling.py has the rule): the Gumbel noise of a position, and the
// top-p cut.
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
//
// (R,) float32: per row of scores s (R, V), the score of the last token top-p keeps: tokens are ranked
// by score, and one is kept while the probability mass ranked above it is below top_p.
at::Tensor nucleus_floor(const at::Tensor& s, double top_p) {
  if (s.dim() != 2 || s.scalar_type() != at::kFloat || !s.is_contiguous() || !s.device().is_cpu())
    throw std::invalid_argument("nucleus_floor: s must be a contiguous 2-D float32 CPU tensor");
  const int64_t R = s.size(0), V = s.size(1);
  at::Tensor out = at::empty({R}, at::kFloat);
  const float* base = s.data_ptr<float>();
  float* floor = out.data_ptr<float>();
  const float p_cut = static_cast<float>(top_p);
  at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> cand;
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = base + r * V;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, x[j]);
      avec acc = splat(0.0f);
      int64_t j = 0;
      for (; j + AVL <= V; j += AVL) acc += vexp_portable(aload(x + j) - mx);
      double z = 0.0;
      for (int l = 0; l < AVL; ++l) z += acc[l];
      for (; j < V; ++j) z += std::exp(static_cast<double>(x[j] - mx));
      const float inv_z = static_cast<float>(1.0 / z);
      for (const float delta : {8.0f, 16.0f, 32.0f, std::numeric_limits<float>::infinity()}) {
        cand.clear();
        const float low = mx - delta;
        for (int64_t k = 0; k < V; ++k)
          if (x[k] >= low) cand.push_back(x[k]);
        std::sort(cand.begin(), cand.end(), std::greater<float>());
        float above = 0.0f, last = cand[0];
        bool cut = false;
        for (const float v : cand) {
          if (above >= p_cut) {
            cut = true;
            break;
          }
          last = v;
          above += std::exp(v - mx) * inv_z;
        }
        floor[r] = last;
        if (cut || above >= p_cut) break;  // the nucleus ends inside the candidates
      }
    }
  });
  return out;
}
