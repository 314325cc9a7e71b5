// NB, QB, Q4_BYTES, Q8_BYTES and Packed below are deliberate copies of gemm_paths.h's (AVX-512 values),
// for the helpers run.sh copies out of gemm_amx.cpp.
// 8-bit codes (Q8_0, SmolLM2's LM head) to one block's three bf16 B tiles, one core, hot: the kernel's
// decode_block (codes in the vector path's layout: two rows interleaved per k pair, through fp32), the
// same layout through int8 -> fp16 -> bf16, and the codes pre-arranged in the tiles' order (the layout
// pack() now adds, decode_block_q8_pairs). Checks that the first two give the same tiles.
//   ./q8_decode    (ns per block)
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <vector>
#include <algorithm>
#include <sys/syscall.h>
#include <unistd.h>
constexpr int NB=48; constexpr int64_t QB=32; constexpr int64_t Q4_BYTES = 8*NB+16*NB; constexpr int64_t Q8_BYTES=8*NB+32*NB;
struct Packed { const float* f32=nullptr; const uint8_t* q=nullptr; const uint8_t* qa=nullptr; int bits=32; int64_t block_bytes=0; };
#include "helpers.inc"  // the kernel's AMX helpers, copied out of gemm_amx.cpp by run.sh
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
// candidate: same layout, int8 -> int16 -> fp16 (exact) -> bf16 by rebiasing the exponent
static inline void decode_q8_fp16(const uint8_t* blk, uint16_t* t) {
  const uint8_t* c = blk + 8 * NB;
  const __m512i pairs = _mm512_set_epi16(31,15,30,14,29,13,28,12,27,11,26,10,25,9,24,8,23,7,22,6,21,5,20,4,19,3,18,2,17,1,16,0);
  const __m512i mag = _mm512_set1_epi16(0x7FFF), bias = _mm512_set1_epi16(0x3800), sign = _mm512_set1_epi16(static_cast<short>(0x8000));
  for (int g = 0; g < 3; ++g)
#pragma GCC unroll 16
    for (int64_t kp = 0; kp < 16; ++kp) {
      const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 2 * kp * NB + g * 16));
      const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + (2 * kp + 1) * NB + g * 16));
      const __m512i w = _mm512_permutexvar_epi16(pairs, _mm512_cvtepi8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(r0), r1, 1)));
      const __m512i h = _mm512_castph_si512(_mm512_cvtepi16_ph(w));  // exact: |q| <= 127
      const __mmask32 nz = _mm512_test_epi16_mask(w, w);
      const __m512i b = _mm512_maskz_add_epi16(nz, _mm512_srli_epi16(_mm512_and_si512(h, mag), 3), bias);
      _mm512_store_si512(t + g * 512 + kp * 32, _mm512_ternarylogic_epi32(b, h, sign, 0xF8));  // b | (h & sign)
    }
}

int main(int argc, char** argv) {
  const int nb = 18, P = 64;
  std::vector<uint8_t> codes(P * nb * Q8_BYTES);
  for (auto& v : codes) v = rand();
  for (int i = 0; i < P * nb; ++i) for (int k = 0; k < 32 * NB; ++k) if ((int8_t)codes[i * Q8_BYTES + 8 * NB + k] == -128) codes[i * Q8_BYTES + 8 * NB + k] = 0;  // Q8_0 codes are -127..127
  Packed W; W.q = codes.data(); W.bits = 8; W.block_bytes = Q8_BYTES;
  alignas(64) static uint16_t t0[1536], t1[1536];
  for (int i = 0; i < P * nb; ++i) { decode_block(W, codes.data() + i * Q8_BYTES, t0); decode_q8_fp16(codes.data() + i * Q8_BYTES, t1);
    if (memcmp(t0, t1, sizeof(t0))) { printf("MISMATCH at block %d\n", i); for (int j=0;j<8;++j) printf("%04x/%04x ", t0[j], t1[j]); printf("\n"); return 1; } }
  printf("tiles equal\n");
  for (int mode = 0; mode < 3; ++mode) {
    double best = 1e9;
    for (int rep = 0; rep < 9; ++rep) {
      double t = now();
      for (int r = 0; r < 100; ++r) for (int i = 0; i < P * nb; ++i) { if (mode == 0) decode_block(W, codes.data() + i * Q8_BYTES, t0); else if (mode == 1) decode_q8_fp16(codes.data() + i * Q8_BYTES, t0); else decode_block_q8_pairs(codes.data() + i * Q8_BYTES, t0); asm volatile("" ::: "memory"); }
      best = std::min(best, (now() - t) / 100 / (P * nb));
    }
    printf("%s: %.1f ns per block\n", mode == 2 ? "tiles' order (decode_block_q8_pairs)" : mode ? "same layout through fp16" : "decode_block", best * 1e9);
  }
}
