// A deliberate copy, frozen as measured at commit 2f844a4, of gemm_vector.cpp's tile, decode_blocks,
// tile_codes (4 bits, no bias) and run_panels, with the variants it compares; the kernel may have
// moved on since.
// (commit 2f844a4) the vector (non-AMX) path for 4-bit code blocks on an AVX2 CPU (the machine measured on: AMD
// EPYC, Zen 3, no AVX-512). The copy is the kernel for NB = 16,
// MR = 6, over SmolLM2's seven linears a layer (random codes), 2 threads with a contiguous panel range
// each, as skinny_linear splits them. Three comparisons, each one's variants alternating rep by rep in
// one process, medians, ms a layer:
//   align   the scratch path with its decoded chunk at a 64-byte boundary or 16 bytes past one (what
//           std::vector gave), and the decode alone with each
//   fused   the scratch path against tile_codes (each k step decoded in registers and used at once)
//   fold    the scratch path's tiles with GCC free to fold the weight loads into the FMAs, or with the
//           weights kept in registers (an empty asm)
//
//   g++ -O3 -march=native -ffp-contract=fast -fopenmp codes_avx2.cpp -o codes_avx2
//   ./codes_avx2 1 101 fused    # one layer: its codes (2.7 MB) stay in L3
//   ./codes_avx2 30 15 fused    # 30 layers: every pass reads the codes from memory
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

constexpr int VL = 8, NV = 2, MR = 6, NB = 16;
constexpr int64_t KC = 128, QB = 32, Q4_BYTES = 8 * NB + 16 * NB, Q_PF_DIST = 8 * 1024;
typedef float vec __attribute__((vector_size(VL * 4)));
typedef int32_t ivec __attribute__((vector_size(VL * 4)));
static inline vec loadu(const float* p) { vec v; __builtin_memcpy(&v, p, sizeof(vec)); return v; }
static inline void storeu(float* p, vec v) { __builtin_memcpy(p, &v, sizeof(vec)); }
static inline ivec widenu(const uint8_t* p) {
  ivec r;
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  __builtin_memcpy(&r, &v, sizeof r);
  return r;
}

template <int R, bool Keep>
static void tile(const float* __restrict x, int64_t ldx, const float* __restrict w, int64_t kn, const float* cin, float* y, int64_t ldy) {
  vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = cin ? loadu(cin + r * NB + j * VL) : vec{};
  for (int64_t k = 0; k < kn; ++k) {
    vec wv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      wv[j] = loadu(w + k * NB + j * VL);
      if (Keep) asm("" : "+x"(wv[j]));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float xs = x[r * ldx + k];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] += wv[j] * xs;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) storeu(y + r * ldy + j * VL, acc[r][j]);
}
typedef void (*TileFn)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t);
template <bool K> static TileFn tile_for(int r) {
  static const TileFn f[] = {tile<1, K>, tile<2, K>, tile<3, K>, tile<4, K>, tile<5, K>, tile<6, K>};
  return f[r - 1];
}

static void decode_blocks(const uint8_t* blk, int64_t nb, float* w, const uint8_t* pf_end) {
  for (int64_t b = 0; b < nb; ++b, blk += Q4_BYTES, w += QB * NB) {
    for (int64_t off = 0; off < Q4_BYTES; off += 64)
      if (blk + Q_PF_DIST + off < pf_end) __builtin_prefetch(blk + Q_PF_DIST + off, 0, 2);
    vec d[NV], m[NV];
    for (int j = 0; j < NV; ++j) d[j] = loadu((const float*)blk + j * VL), m[j] = loadu((const float*)blk + NB + j * VL);
    const uint8_t* c = blk + 8 * NB;
    for (int64_t kp = 0; kp < QB / 2; ++kp)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const ivec q = widenu(c + kp * NB + j * VL);
        storeu(w + 2 * kp * NB + j * VL, d[j] * __builtin_convertvector(q & 15, vec) + m[j]);
        storeu(w + (2 * kp + 1) * NB + j * VL, d[j] * __builtin_convertvector(q >> 4, vec) + m[j]);
      }
  }
}

// gemm_vector.cpp's tile_codes for 4 bits, no bias
template <int R>
static void tile_codes(const float* __restrict x, int64_t ldx, const uint8_t* __restrict blk, int64_t nb, float* y, int64_t ldy, const uint8_t* pf_end) {
  vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = vec{};
  for (int64_t b = 0; b < nb; ++b, blk += Q4_BYTES, x += QB) {
    for (int64_t off = 0; off < Q4_BYTES; off += 64)
      if (blk + Q_PF_DIST + off < pf_end) __builtin_prefetch(blk + Q_PF_DIST + off, 0, 2);
    const float* dm = (const float*)blk;
    const uint8_t* c = blk + 8 * NB;
    vec d[NV];
    for (int j = 0; j < NV; ++j) d[j] = loadu(dm + j * VL);
    for (int64_t kp = 0; kp < QB / 2; ++kp) {
      vec w0[NV], w1[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const vec m = loadu(dm + NB + j * VL);
        const ivec q = widenu(c + kp * NB + j * VL);
        w0[j] = d[j] * __builtin_convertvector(q & 15, vec) + m;
        w1[j] = d[j] * __builtin_convertvector(q >> 4, vec) + m;
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float xs = x[r * ldx + 2 * kp];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[r][j] += w0[j] * xs;
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float xs = x[r * ldx + 2 * kp + 1];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[r][j] += w1[j] * xs;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) storeu(y + r * ldy + j * VL, acc[r][j]);
}
typedef void (*CodesFn)(const float*, int64_t, const uint8_t*, int64_t, float*, int64_t, const uint8_t*);
static CodesFn codes_for(int r) {
  static const CodesFn f[] = {tile_codes<1>, tile_codes<2>, tile_codes<3>, tile_codes<4>, tile_codes<5>, tile_codes<6>};
  return f[r - 1];
}

struct Variant {
  const char* name;
  bool fused = false, keep = false, decode_only = false;
  int misalign = 0;  // floats past a 64-byte boundary
};

static void run_panels(const Variant& v, const float* x, int64_t M, int64_t K, const uint8_t* q, int64_t n, float* y, int64_t p0, int64_t p1) {
  const int64_t panel_bytes = K / QB * Q4_BYTES;
  const uint8_t* q_end = q + p1 * panel_bytes;
  if (v.fused) {
    for (int64_t p = p0; p < p1; ++p) codes_for(M)(x, K, q + p * panel_bytes, K / QB, y + p * NB, n, q_end);
    return;
  }
  const int64_t nblk = (M + MR - 1) / MR;
  std::vector<float> cbuf(M * NB + 16), wraw(KC * NB + 64);
  float* c = cbuf.data();
  float* wbuf = (float*)(((uintptr_t)wraw.data() + 63) & ~(uintptr_t)63) + v.misalign;
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kn = std::min(KC, K - k0);
      const bool first = k0 == 0, last = k0 + kn == K;
      decode_blocks(q + p * panel_bytes + k0 / QB * Q4_BYTES, kn / QB, wbuf, q_end);
      if (v.decode_only) continue;
      int64_t m0 = 0;
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t rows = (M - m0) / (nblk - blk);
        const TileFn fn = v.keep ? tile_for<true>(rows) : tile_for<false>(rows);
        const float* cin = first ? nullptr : c + m0 * NB;
        if (last) fn(x + m0 * K + k0, K, wbuf, kn, cin, y + m0 * n + p * NB, n);
        else fn(x + m0 * K + k0, K, wbuf, kn, cin, c + m0 * NB, NB);
        m0 += rows;
      }
    }
}

int main(int argc, char** argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s LAYERS REPS align|fused|fold\n", argv[0]); return 2; }
  const int layers = atoi(argv[1]), reps = atoi(argv[2]);
  const std::string what = argv[3];
  std::vector<Variant> vs;
  std::vector<int> Ms;
  if (what == "align") {
    vs = {{"scratch a64"}, {"scratch a16", false, false, false, 4}, {"decode a64", false, false, true}, {"decode a16", false, false, true, 4}};
    Ms = {1, 6, 16};
  } else if (what == "fused") {
    vs = {{"scratch"}, {"tile_codes", true}};
    Ms = {1, 2, 3, 4, 5, 6};
  } else {
    vs = {{"folded"}, {"in registers", false, true}};
    Ms = {5, 7, 8, 10, 12, 16};
  }
  const int64_t shapes[7][2] = {{576, 576}, {192, 576}, {192, 576}, {576, 576}, {1536, 576}, {1536, 576}, {576, 1536}};
  std::vector<std::vector<uint8_t>> W;
  srand(1);
  for (int l = 0; l < layers; l++)
    for (auto& s : shapes) {
      std::vector<uint8_t> v((s[0] / NB) * (s[1] / QB) * Q4_BYTES);
      for (auto& b : v) b = rand();
      for (size_t b = 0; b < v.size() / Q4_BYTES; b++) {
        float* f = (float*)(v.data() + b * Q4_BYTES);
        for (int i = 0; i < 2 * NB; i++) f[i] = 0.01f * (i % 7);
      }
      W.push_back(std::move(v));
    }
  std::vector<float> x(32 * 1536), y(32 * 1536);
  for (auto& e : x) e = (rand() % 1000) / 1000.0f;
  printf("| M |");
  for (auto& v : vs) printf(" %s |", v.name);
  printf("\n|---:|");
  for (size_t i = 0; i < vs.size(); i++) printf("---:|");
  printf("\n");
  for (int M : Ms) {
    std::vector<std::vector<double>> ts(vs.size());
    for (int r = 0; r < reps; r++)
      for (size_t c = 0; c < vs.size(); c++) {
        if (vs[c].fused && M > 6) continue;
        const double t0 = omp_get_wtime();
        for (size_t i = 0; i < W.size(); i++) {
          const int64_t n = shapes[i % 7][0], K = shapes[i % 7][1], P = n / NB;
#pragma omp parallel num_threads(2)
          {
            const int t = omp_get_thread_num();
            run_panels(vs[c], x.data(), M, K, W[i].data(), n, y.data(), P * t / 2, P * (t + 1) / 2);
          }
        }
        ts[c].push_back((omp_get_wtime() - t0) * 1e3 / layers);
      }
    printf("| %d |", M);
    for (auto& t : ts) {
      std::sort(t.begin(), t.end());
      printf(" %.3f |", t[t.size() / 2]);
    }
    printf("\n");
  }
}
