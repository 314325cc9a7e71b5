// One decoder layer of a Llama-family model (Llama, Mistral, Qwen2) for a decoding step of T tokens,
// batch 1, fp32, in place on the hidden states h (T, H). lean.py calls it once per layer.
//
// Why in C++: in a step of SmolLM2 the linears take ~19 ms (the weight-streaming bound) and the ~20
// small ops per layer around them (RMSNorm as seven aten ops, RoPE, the cache write, SiLU, residuals)
// cost ~5 ms more through Python, almost all of it per-call overhead on vectors of a few KB. Here
// RMSNorm, RoPE, the cache write and the residual adds are plain loops, the linears call the skinny
// kernel directly, and attention and SiLU stay ATen's (PyTorch's flash kernel with grouped KV heads
// read in place, and its vectorised SiLU), called without Python in between.
//
// Numerics: the same formulas as transformers' modules (RMSNorm: w * (x * rsqrt(mean(x^2) + eps));
// RoPE: q * cos + rotate_half(q) * sin), fp32 throughout, no -ffast-math; sums and FMA contraction
// differ from ATen's in the last bits, so the logits match the module path to ~1e-5 and greedy tokens
// are tested equal.
#include <torch/extension.h>

#include <cmath>
#include <cstring>

torch::Tensor skinny_linear(const torch::Tensor& x_in, const torch::Tensor& packed, int64_t n,
                            const c10::optional<torch::Tensor>& bias_in);

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

// RoPE in place on `heads` vectors of D starting at v: v * cos + rotate_half(v) * sin.
void rope(float* v, int64_t heads, int64_t D, const float* c, const float* s) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < heads; ++h, v += D)
    for (int64_t d = 0; d < half; ++d) {
      const float a = v[d], b = v[d + half];
      v[d] = a * c[d] - b * s[d];
      v[d + half] = b * c[d + half] + a * s[d + half];
    }
}

void add_into(float* h, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] += y[i];
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous(), "llama_layer: ",
                    name, " must be a contiguous fp32 CPU tensor");
}

}  // namespace

// h (T, H) in place. qkv_packed: q, k, v weights stacked (qkv_n = (hq + 2 hkv) D outputs), optional
// bias; o_packed: H outputs; gu_packed: gate and up stacked (gu_n = 2 I); down_packed: H outputs.
// cos, sin: (T, D) for the step's positions. kbuf, vbuf: (1, hkv, capacity, D) with `start` valid
// entries; the step's keys and values are written at start..start+T-1 (capacity must allow it).
// mask: (1, 1, T, start + T) bool (true = attend) or none (every key visible).
void llama_layer(torch::Tensor h, const torch::Tensor& ln1, const torch::Tensor& qkv_packed, int64_t qkv_n,
                 const c10::optional<torch::Tensor>& qkv_bias, const torch::Tensor& o_packed, const torch::Tensor& ln2,
                 const torch::Tensor& gu_packed, int64_t gu_n, const torch::Tensor& down_packed,
                 const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor kbuf, torch::Tensor vbuf,
                 int64_t start, const c10::optional<torch::Tensor>& mask, int64_t hq, int64_t hkv, double eps,
                 double scaling) {
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

  // attention block
  auto x = torch::empty_like(h);
  rms_norm(hp, ln1.data_ptr<float>(), x.data_ptr<float>(), T, H, feps);
  auto qkv = skinny_linear(x, qkv_packed, qkv_n, qkv_bias);  // (T, (hq + 2 hkv) D)
  float* qp = qkv.data_ptr<float>();
  float* kp = kbuf.data_ptr<float>();
  float* vp = vbuf.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    float* row = qp + t * qkv_n;
    rope(row, hq + hkv, D, cp + t * D, sp + t * D);  // q heads, then k heads
    for (int64_t g = 0; g < hkv; ++g) {
      std::memcpy(kp + (g * cap + start + t) * D, row + (hq + g) * D, D * sizeof(float));
      std::memcpy(vp + (g * cap + start + t) * D, row + (hq + hkv + g) * D, D * sizeof(float));
    }
  }
  auto q = qkv.view({T, hq + 2 * hkv, D}).narrow(1, 0, hq).transpose(0, 1).unsqueeze(0);  // (1, hq, T, D)
  auto keys = kbuf.narrow(2, 0, start + T);  // (1, hkv, S, D)
  auto values = vbuf.narrow(2, 0, start + T);
  auto a = at::scaled_dot_product_attention(q, keys, values, mask, 0.0, false, scaling, hq != hkv);  // (1, hq, T, D)
  a = a.transpose(1, 2).contiguous().view({T, hq * D});
  auto o = skinny_linear(a, o_packed, H, c10::nullopt);
  add_into(hp, o.data_ptr<float>(), T * H);

  // MLP block
  rms_norm(hp, ln2.data_ptr<float>(), x.data_ptr<float>(), T, H, feps);
  auto gu = skinny_linear(x, gu_packed, gu_n, c10::nullopt);  // (T, 2 I)
  const int64_t I = gu_n / 2;
  auto act = at::silu(gu.narrow(1, 0, I));
  act.mul_(gu.narrow(1, I, I));
  auto d = skinny_linear(act, down_packed, H, c10::nullopt);
  add_into(hp, d.data_ptr<float>(), T * H);
}
