// Register tiles for attention's two products on the CPU, shared by the sparse prefill kernel
// (sparse_attention.cpp) and the decoder layer's attention for multi-token steps (decoder_layer.cpp).
// Scores are kept transposed, St (keys, rows): the softmax over keys then runs down columns with whole
// vectors of query rows, and the P V tile broadcasts P from St.
#pragma once

#include <cstdint>

#include "vec.h"

namespace {

// Register tiles: RT vectors of rows x JT keys for the scores, IT rows x DT vectors of head dim for P V
// (24 accumulators with AVX-512's 32 registers, 10-12 with AVX2's 16).
// Every loop over a tile's registers carries `#pragma GCC unroll`: without it GCC (12, -O3) kept the
// accumulator arrays on the stack and stored every accumulator after each FMA, so the store port, not
// the FMAs, set the pace. AVX2 (Zen 3), one layer of SmolLM2, 16 queries over 316 keys
// (benchmarks/attention_phases.cpp, hot): 243-260 -> 117-133 us a call; whole 16-token steps
// 0.925x, 4-token 0.957x (alternating in one process). Same FMAs in the same order: same numbers.
constexpr int RT = AVL == 16 ? 4 : 2;
constexpr int JT = AVL == 16 ? 6 : 5;
constexpr int IT = 6;
constexpr int DT = AVL == 16 ? 4 : 2;

// St[j, r0 + 0 .. RT*AVL) = sum_d Qt[d, r0 + ..] * krow[j][d] for NJ keys; qt points at column r0 of
// Qt (D, RP), st at row 0 column r0 of this tile's keys in St (., RP).
template <int NJ, int NR>
void scores_tile(const float* qt, int64_t RP, int64_t D, const float* const* krow, float* st) {
  avec acc[NJ][NR];
#pragma GCC unroll 8
  for (int j = 0; j < NJ; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[j][r] = splat(0.0f);
  for (int64_t d = 0; d < D; ++d) {
    avec qv[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) qv[r] = aload(qt + d * RP + r * AVL);
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) {
      const avec kb = bcast(krow[j] + d);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[j][r] += kb * qv[r];
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NJ; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) astore(st + j * RP + r * AVL, acc[j][r]);
}

// St[j, 0 .. NR*AVL) for the m keys at krow[0 .. m), JT keys a tile (NR vectors of rows, NR <= RT).
template <int NR>
void scores_rows(const float* qt, int64_t RP, int64_t D, const float* const* krow, int64_t m, float* st) {
  int64_t j = 0;
  for (; j + JT <= m; j += JT) scores_tile<JT, NR>(qt, RP, D, krow + j, st + j * RP);
  switch (m - j) {  // JT is at most 6
    case 1: scores_tile<1, NR>(qt, RP, D, krow + j, st + j * RP); break;
    case 2: scores_tile<2, NR>(qt, RP, D, krow + j, st + j * RP); break;
    case 3: scores_tile<3, NR>(qt, RP, D, krow + j, st + j * RP); break;
    case 4: scores_tile<4, NR>(qt, RP, D, krow + j, st + j * RP); break;
    case 5: scores_tile<5, NR>(qt, RP, D, krow + j, st + j * RP); break;
    default: break;
  }
}

// out[i, d0 ..) (+)= sum_j St[j, i] * vrow[j][d0 ..] over nk keys for NI rows and ND vectors of head dim:
// the first key chunk stores, later ones accumulate; rsum (the last chunk) scales the rows.
template <int NI, int ND>
void values_tile(const float* st, int64_t RP, int64_t nk, const float* const* vrow, int64_t d0, bool first,
                 const float* rsum, float* out, int64_t D) {
  avec acc[NI][ND];
#pragma GCC unroll 8
  for (int i = 0; i < NI; ++i)
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) acc[i][c] = first ? splat(0.0f) : aload(out + i * D + d0 + c * AVL);
  for (int64_t j = 0; j < nk; ++j) {
    avec vv[ND];
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) vv[c] = aload(vrow[j] + d0 + c * AVL);
#pragma GCC unroll 8
    for (int i = 0; i < NI; ++i) {
      const avec pb = bcast(st + j * RP + i);
#pragma GCC unroll 8
      for (int c = 0; c < ND; ++c) acc[i][c] += pb * vv[c];
    }
  }
  if (rsum) {
#pragma GCC unroll 8
    for (int i = 0; i < NI; ++i)
#pragma GCC unroll 8
      for (int c = 0; c < ND; ++c) acc[i][c] *= splat(rsum[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < NI; ++i)
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) astore(out + i * D + d0 + c * AVL, acc[i][c]);
}

template <int ND>
void values_rows(int64_t ni, const float* st, int64_t RP, int64_t nk, const float* const* vrow, int64_t d0,
                 bool first, const float* rsum, float* out, int64_t D) {
  switch (ni) {
    case 1: return values_tile<1, ND>(st, RP, nk, vrow, d0, first, rsum, out, D);
    case 2: return values_tile<2, ND>(st, RP, nk, vrow, d0, first, rsum, out, D);
    case 3: return values_tile<3, ND>(st, RP, nk, vrow, d0, first, rsum, out, D);
    case 4: return values_tile<4, ND>(st, RP, nk, vrow, d0, first, rsum, out, D);
    case 5: return values_tile<5, ND>(st, RP, nk, vrow, d0, first, rsum, out, D);
    default: return values_tile<IT, ND>(st, RP, nk, vrow, d0, first, rsum, out, D);
  }
}

}  // namespace
