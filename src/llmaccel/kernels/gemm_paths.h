// What the skinny GEMM's own files share: the panel and code-block layout that pack() (skinny.py) and
// the kernels agree on, a packed matrix as the kernels read it, and the two paths that skinny_gemm.cpp
// chooses between:
//   gemm_vector.cpp  register tiles of fp32 FMAs over fp32 panels or code blocks (AVX-512, AVX2, SSE)
//   gemm_amx.cpp     code blocks through the AMX tile unit, where the CPU has one
// No torch here: a file that includes torch/extension.h takes ~40 s to compile, these take seconds.
#pragma once

#include <cstdint>

namespace llmaccel_gemm {

#if defined(__AVX512F__)
constexpr int VL = 16;  // floats per vector register (zmm)
constexpr int NV = 3;   // vectors per panel row -> NB = 48
constexpr int MR = 8;   // rows per register tile: 8 x 3 = 24 accumulators of 32 zmm
constexpr const char* ISA = "avx512";
#elif defined(__AVX__)
constexpr int VL = 8;   // ymm
constexpr int NV = 2;   // NB = 16
constexpr int MR = 6;   // 6 x 2 = 12 accumulators of 16 ymm
constexpr const char* ISA = "avx2";
#else
constexpr int VL = 4;   // xmm (or whatever the compiler makes of 16-byte vectors)
constexpr int NV = 2;   // NB = 8
constexpr int MR = 6;
constexpr const char* ISA = "generic";
#endif
constexpr int NB = NV * VL;  // output features per panel

constexpr int64_t QB = 32;                      // k steps per code block
constexpr int64_t Q4_BYTES = 8 * NB + 16 * NB;  // d, m, 16 k pairs of nibbles
constexpr int64_t Q8_BYTES = 8 * NB + 32 * NB;  // d, m, 32 k steps of int8

// The weights of one packed matrix: fp32 panels, or code blocks of `bits` 4 or 8.
struct Packed {
  const float* f32 = nullptr;    // [P][K][NB]
  const uint8_t* q = nullptr;    // [P][K / QB][block_bytes]
  const uint8_t* qa = nullptr;   // the same blocks with the codes in the AMX order (optional)
  int bits = 32;
  int64_t block_bytes = 0;
};

// ---- gemm_vector.cpp ----------------------------------------------------------------------------

// y = x @ W^T + b for panels [p0, p1) (one thread's share); x (M, K), y (M, n).
void run_panels(const float* x, int64_t M, int64_t K, const Packed& W, int64_t n, const float* bias, float* y,
                int64_t p0, int64_t p1);

// ---- gemm_amx.cpp -------------------------------------------------------------------------------

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
#define LLMACCEL_AMX 1

// Whether code blocks of `bits` with M rows of x take the AMX path: skinny_linear and panel_matrix make
// this one choice, so the fused layer computes what skinny_linear does.
bool amx_for(int bits, int64_t M);

// x (M, K) split into this thread's bf16 parts (*parts) and block sums (*xsum), in buffers kept per
// thread (every element written each call); valid until the thread's next call.
void thread_split(const float* x, int64_t M, int64_t K, const uint16_t** parts, const float** xsum);

// Panels [p0, p1) of y (M, n) from x's parts and block sums (thread_split); add: y += the result (the
// decoder layer's residual, fused) instead of y = it.
void run_panels_amx(const uint16_t* parts, const float* xsum, int64_t M, int64_t K, const Packed& W, int64_t n,
                    const float* bias, float* y, int64_t p0, int64_t p1, bool add = false);
#endif

}  // namespace llmaccel_gemm
