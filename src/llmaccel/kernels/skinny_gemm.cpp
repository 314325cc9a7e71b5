// Skinny GEMM for decoding steps: y (M x N) = x (M x K) @ W^T + b, with M small (1..~40) and
// W (N x K) large and cold (it does not stay in cache between calls: the model is ~0.5 GB).
// This file reads pack()'s layouts and sends each call down one of two paths:
//   gemm_vector.cpp  register tiles of fp32 FMAs (fp32 panels, and code blocks where AMX is absent or off)
//   gemm_amx.cpp     code blocks through the AMX tile unit (AMX CPUs; every row count for 4-bit codes)
// bindings.cpp makes skinny_linear the Python `linear`; skinny_gemm.h gives decoder_layer.cpp the same
// kernel one thread at a time.
//
// Layout
// ------
// W is re-laid once (`pack`, in skinny.py) into panels of NB output features:
//   packed[p][k][j] = W[p*NB + j][k]   (N zero-padded up to a multiple of NB).
// One k step of a panel is NB contiguous floats (NV vector loads), and a panel is one sequential
// stream. Each thread takes a contiguous range of panels, so each thread reads one long stream.
//
// Block-coded weights (exact, fewer bytes to stream)
// ----------------------------------------------------
// A model loaded from a GGUF file holds fp32 weights that are dequantised blocks: along K, each run
// of 32 weights of one output row is w = d * q + m with q a 4-bit code (Q4_1) or w = d * q with q a
// signed 8-bit code (Q8_0), d and m per block. Streaming those fp32 values costs 32 bits a weight;
// the codes cost 4 or 8 bits plus the block's d and m. skinny.py finds such blocks in the fp32 matrix
// (and checks that decoding reproduces every weight bit for bit); the kernel then streams
//   codes[p][b] = d[NB] (fp32) | m[NB] (fp32) | code bytes for the 32 k steps of block b of panel p
// 4-bit codes: byte [kp][j] holds q for k = 2 kp (low nibble) and 2 kp + 1 (high nibble) of output j;
// 8-bit codes: byte [k][j]. On an AMX CPU pack() adds the same blocks with the codes in the order the
// tiles take them (gemm_amx.cpp, decode_block_pairs and decode_block_q8_pairs).
//
// Numerics: no -ffast-math. Each output is an IEEE fp32 sum in k order (seeded with the bias),
// contracted to FMAs (-ffp-contract=fast); results match F.linear to ~1e-6 relative.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gemm_paths.h"
#include "skinny_gemm.h"

using namespace llmaccel_gemm;

namespace {

// The code blocks in `packed`, pack()'s uint8 layouts: [P, K/32, bytes], or [2, P, K/32, bytes] with the
// same blocks in the AMX order second. Fills W, K and the panel count; false for anything else.
static bool code_blocks(const at::Tensor& packed, Packed* W, int64_t* K, int64_t* panels) {
  if (packed.scalar_type() != at::kByte || !packed.is_contiguous() || !packed.device().is_cpu()) return false;
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
static bool packed_weights(const at::Tensor& packed, Packed* W, int64_t* K, int64_t* panels) {
  if (packed.scalar_type() == at::kByte) return code_blocks(packed, W, K, panels);
  if (packed.dim() != 3 || !packed.is_contiguous() || !packed.device().is_cpu() || packed.size(2) != NB ||
      packed.scalar_type() != at::kFloat)
    return false;
  W->f32 = packed.data_ptr<float>();
  *K = packed.size(1);
  *panels = packed.size(0);
  return true;
}

}  // namespace

// ---- the kernel one thread at a time (skinny_gemm.h) ---------------------------------------------

bool llmaccel_gemm::panel_matrix(const at::Tensor& packed, int64_t n, int64_t M, const float* bias, PanelMatrix* out) {
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
  if (m.amx) {
    const uint16_t* parts;
    const float* xsum;
    thread_split(x, M, K, &parts, &xsum);
    return {x, parts, xsum, M, K};
  }
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

// x (..., K) -> (..., n) (skinny_gemm.h). Also called by decoder_layer.cpp's op-by-op layer.
at::Tensor skinny_linear(const at::Tensor& x_in, const at::Tensor& packed, int64_t n,
                         const c10::optional<at::Tensor>& bias_in) {
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
  const at::Tensor x = x_in.to(at::kFloat).contiguous().view({M, K});
  at::Tensor bias;
  const float* bptr = nullptr;
  if (bias_in.has_value() && bias_in->defined()) {
    TORCH_CHECK_VALUE(bias_in->dim() == 1 && bias_in->size(0) == n && bias_in->device().is_cpu(),
                      "skinny linear: bias must be a CPU vector of length n=", n, ", got ", bias_in->sizes());
    bias = bias_in->to(at::kFloat).contiguous();
    bptr = bias.data_ptr<float>();
  }
  auto y = at::empty(out_shape, x.options());
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
      const uint16_t* parts;
      const float* xsum;
      thread_split(xp, M, K, &parts, &xsum);
      run_panels_amx(parts, xsum, M, K, W, n, bptr, yp, npanels * t / T, npanels * (t + 1) / T);
    }
    return y;
  }
#endif
  at::parallel_for(0, npanels, 1, [&](int64_t p0, int64_t p1) { run_panels(xp, M, K, W, n, bptr, yp, p0, p1); });
  return y;
}

// The layout's constants, for skinny.py and the tests.
int64_t panel_width() { return NB; }
int64_t code_block() { return QB; }
int64_t row_block() { return MR; }
std::string isa() { return ISA; }
