// The Python module of llmaccel's CPU kernels (skinny.py loads it): one binding per function, each
// declared here next to the file that defines it. The only file that needs pybind11 and torch's Python
// glue (torch/extension.h), so the kernels' own files compile without them.
#include <torch/extension.h>

#include <cstdint>
#include <string>
#include <vector>

#include "skinny_gemm.h"  // skinny_linear

// skinny_gemm.cpp
int64_t panel_width();
int64_t code_block();
int64_t row_block();
std::string isa();

// gemm_amx.cpp
bool use_amx(bool on);
bool has_amx();

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

// sampling.cpp
torch::Tensor gumbel_noise(int64_t k0, int64_t k1, int64_t vocab);
torch::Tensor sample_rows(const torch::Tensor& l, const torch::Tensor& keys, double temperature, int64_t top_k,
                          double top_p, double min_p);

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
  m.def("gumbel_noise", &gumbel_noise, "(vocab,) Gumbel noise of the hash of each token id under the key (k0, k1); see sampling.py");
  m.def("sample_rows", &sample_rows, "seeded sampling of each row of logits: cuts, then the Gumbel-max with each row's noise key; see sampling.py");
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
