// The skinny GEMM's AMX path for code-block weights, one thread at a time: for callers that run their
// own parallel region and split the panels themselves (decoder_layer.cpp's fused layer). skinny_linear
// (skinny_gemm.cpp) is the same arithmetic with its own region.
#pragma once

#include <torch/extension.h>

#include <cstdint>

namespace llmaccel_gemm {

// A packed matrix of code blocks, as pack() lays it out (skinny_gemm.cpp has the format).
struct AmxMatrix {
  const uint8_t* q = nullptr;   // the blocks in the vector path's layout
  const uint8_t* qa = nullptr;  // the same blocks in the tiles' order, or null
  int bits = 0;                 // 4 (Q4_1) or 8 (Q8_0)
  int64_t block_bytes = 0, K = 0, n = 0, panels = 0;
  int64_t panel_width = 0;      // output columns per panel
  const float* bias = nullptr;  // n floats or null
};

// Whether y = x W^T + b with M rows of x takes the AMX path for `packed` (the choice skinny_linear makes,
// so both give the same numbers); if so, fills *out. False for fp32 panels, other CPUs, use_amx(false).
bool amx_matrix(const torch::Tensor& packed, int64_t n, int64_t M, const float* bias, AmxMatrix* out);

// x (M, K) split into three bf16 parts and block sums, in buffers kept per thread: valid until this
// thread's next amx_split (or skinny_linear) call.
struct AmxRows {
  const uint16_t* parts;
  const float* xsum;
  int64_t M, K;
};
AmxRows amx_split(const float* x, int64_t M, int64_t K);

// y (M, n, row stride n) = x W^T + b, or y += it with add, for output panels [p0, p1) (panel_width()
// columns each), from this thread's split of x.
void amx_panels(const AmxMatrix& m, const AmxRows& x, float* y, int64_t p0, int64_t p1, bool add);

}  // namespace llmaccel_gemm
