// The skinny GEMM one thread at a time, for callers that run their own parallel region and split the
// output panels themselves (decoder_layer.cpp's fused layer). skinny_linear (skinny_gemm.cpp) is the same
// arithmetic with its own region: for a given matrix and row count both take the same path (AMX tiles
// for code blocks where the CPU has them, else the vector kernel over codes or fp32 panels), so they give
// the same numbers bit for bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace llmaccel_gemm {

// A packed matrix as pack() lays it out (skinny_gemm.cpp has the formats), and the path M rows take.
struct PanelMatrix {
  const float* f32 = nullptr;   // fp32 panels [P][K][NB], or null for code blocks
  const uint8_t* q = nullptr;   // code blocks in the vector path's layout
  const uint8_t* qa = nullptr;  // the same blocks in the AMX tiles' order, or null
  int bits = 32;                // 4 (Q4_1), 8 (Q8_0) or 32 (fp32 panels)
  bool amx = false;             // M rows take the AMX path (code blocks only)
  int64_t block_bytes = 0, K = 0, n = 0, panels = 0;
  int64_t panel_width = 0;      // output columns per panel
  const float* bias = nullptr;  // n floats or null
};

// Whether `packed` is a matrix pack() made with n outputs; if so fills *out with it and with the path
// that y = x W^T + b for M rows of x takes (the choice skinny_linear makes).
bool panel_matrix(const at::Tensor& packed, int64_t n, int64_t M, const float* bias, PanelMatrix* out);

// x (M, K) as a matrix's path reads it: the rows themselves, and for the AMX path their three bf16 parts
// and block sums, in buffers kept per thread (valid until this thread's next prepare_rows or
// skinny_linear call).
struct PanelRows {
  const float* x;
  const uint16_t* parts;
  const float* xsum;
  int64_t M, K;
};
PanelRows prepare_rows(const PanelMatrix& m, const float* x, int64_t M, int64_t K);

// y (M, n, row stride n) = x W^T + b, or y += it with add, for output panels [p0, p1) (panel_width()
// columns each).
void run_panel_range(const PanelMatrix& m, const PanelRows& x, float* y, int64_t p0, int64_t p1, bool add);

}  // namespace llmaccel_gemm

// y = x @ W^T + b: x (..., K) -> (..., n), with `packed` from pack() (the Python `linear`); runs its own
// parallel region. Argument errors raise ValueError in Python (TORCH_CHECK_VALUE).
at::Tensor skinny_linear(const at::Tensor& x_in, const at::Tensor& packed, int64_t n,
                         const c10::optional<at::Tensor>& bias_in);
