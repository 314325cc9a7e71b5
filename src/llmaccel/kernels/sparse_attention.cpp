// Sparse causal attention for prefill on the CPU (llmaccel.sparse.kernels has the Python side).
//
// Why by hand: MInference's kernels are Triton/CUDA only (no CPU path), and a dense masked SDPA
// still does n^2 work. Here each (query head, 64-query block) gathers only the keys its pattern
// selects, computes the block's scores in a cache-resident buffer, and never forms an n x n tensor.
//
// A head's pattern is given as three sparse lists (any may be empty for a head):
//   cols   - vertical columns: absolute key positions every query block sees (if causal);
//   bands  - diagonal bands (d_lo, d_hi): query q sees keys q - d_hi .. q - d_lo. A block of queries
//            [q0, q1) computes the bounding key range [q0 - d_hi, q1 - d_lo), as MInference computes
//            slash lines as 64 x 64 tiles;
//   blocks - key blocks per query block (block-sparse).
// The diagonal block [q0, q1) is always computed (every query sees itself). Within the selected
// keys, a query sees keys at positions <= its own (causal) and, if window > 0, > q - window (an exact
// sliding window). Duplicates across the lists are computed once.
//
// Work item = (head, query block), taken by the threads of at::parallel_for from a shared counter.
// The two products per item are hand-written register tiles (where head_dim is a multiple of the vector
// width) that read the selected K and V rows where they lie: through at::mm_out (MKL) the keys had to
// be gathered into a contiguous buffer first, and that copy plus MKL's own packing of such small
// operands was a third of the kernel's time (BENCHMARKS.md, "Sparse prefill"). Scores are kept
// transposed, St (keys, rows), so the softmax over keys runs down columns with whole vectors of rows.
// Other head dims take the gather + at::mm_out path.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "tiles.h"
#include "vec.h"

namespace {

bool hand_tiles = true;  // skinny.sparse_hand_tiles() turns them off, to compare and to test both paths

// One work item through the register tiles: keys at kpos[0 .. m) (the diagonal block's `rows` keys
// last), q rows already scaled; writes out rows (rows, D) and lse. RP = rows rounded up to RT * AVL.
void item_tiles(const float* qrows, int64_t rows, int64_t q0, int64_t D, const float* kh, const float* vh,
                const std::vector<int64_t>& kpos, int64_t window, float fscale, std::vector<float>& qt,
                std::vector<float>& st, std::vector<const float*>& rowp, float* rsum, float* out, float* lrow) {
  const int64_t m = static_cast<int64_t>(kpos.size());
  const int64_t RP = (rows + RT * AVL - 1) / (RT * AVL) * (RT * AVL);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  qt.assign(D * RP, 0.0f);  // Qt (D, RP): scaled Q transposed, padded rows zero
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t d = 0; d < D; ++d) qt[d * RP + i] = qrows[i * D + d] * fscale;
  st.resize(m * RP);
  rowp.resize(m);
  for (int64_t j = 0; j < m; ++j) rowp[j] = kh + kpos[j] * D;
  for (int64_t r0 = 0; r0 < RP; r0 += RT * AVL) scores_rows<RT>(qt.data() + r0, RP, D, rowp.data(), m, st.data() + r0);
  // causal: key q0 + p of the diagonal block (column m - rows + p) is hidden from rows i < p
  for (int64_t p = 1; p < rows; ++p) std::fill(st.data() + (m - rows + p) * RP, st.data() + (m - rows + p) * RP + p, neg_inf);
  if (window > 0) {  // sliding window: row i hides key kpos[j] when q0 + i - kpos[j] >= window
    for (int64_t j = 0; j < m; ++j) {
      const int64_t from = std::max<int64_t>(0, kpos[j] + window - q0);
      if (from < rows) std::fill(st.data() + j * RP + from, st.data() + j * RP + rows, neg_inf);
    }
  }
  for (int64_t r0 = 0; r0 < RP; r0 += RT * AVL) {  // softmax down the columns, RT vectors of rows at a time
    avec vmax[RT], vsum[RT];
    for (int r = 0; r < RT; ++r) vmax[r] = splat(neg_inf), vsum[r] = splat(0.0f);
    for (int64_t j = 0; j < m; ++j) {
      for (int r = 0; r < RT; ++r) {
        const avec x = aload(st.data() + j * RP + r0 + r * AVL);
        vmax[r] = x > vmax[r] ? x : vmax[r];
      }
    }
    for (int64_t j = 0; j < m; ++j) {
      for (int r = 0; r < RT; ++r) {
        float* sp = st.data() + j * RP + r0 + r * AVL;
        const avec e = vexp(aload(sp) - vmax[r]);
        astore(sp, e);
        vsum[r] += e;
      }
    }
    for (int64_t l = 0; l < RT * AVL && r0 + l < rows; ++l) {  // finite: each row sees its own key
      lrow[r0 + l] = vmax[l / AVL][l % AVL] + std::log(vsum[l / AVL][l % AVL]);
      rsum[r0 + l] = 1.0f / vsum[l / AVL][l % AVL];
    }
  }
  for (int64_t j = 0; j < m; ++j) rowp[j] = vh + kpos[j] * D;
  // P V in chunks of KC keys: a chunk's slice of V rows (KC x DT vectors) and of St (KC x RP) stay in
  // L1 while every row tile passes over them (one pass over all keys per row tile ran at L2's bandwidth)
  constexpr int64_t KC = 64;
  for (int64_t j0 = 0; j0 < m; j0 += KC) {
    const int64_t nk = std::min(KC, m - j0);
    const bool first = j0 == 0, last = j0 + KC >= m;
    for (int64_t d0 = 0; d0 < D; d0 += DT * AVL) {
      const int64_t nd = std::min<int64_t>(DT, (D - d0) / AVL);  // D is a multiple of AVL
      for (int64_t i0 = 0; i0 < rows; i0 += IT) {
        const int64_t ni = std::min<int64_t>(IT, rows - i0);
        const float* sj = st.data() + j0 * RP + i0;
        const float* rs = last ? rsum + i0 : nullptr;
        float* o = out + i0 * D;
        switch (nd) {  // DT is at most 4
          case 1: values_rows<1>(ni, sj, RP, nk, rowp.data() + j0, d0, first, rs, o, D); break;
          case 2: values_rows<2>(ni, sj, RP, nk, rowp.data() + j0, d0, first, rs, o, D); break;
          case 3: values_rows<3>(ni, sj, RP, nk, rowp.data() + j0, d0, first, rs, o, D); break;
          default: values_rows<DT>(ni, sj, RP, nk, rowp.data() + j0, d0, first, rs, o, D); break;
        }
      }
    }
  }
}

struct Range {
  int64_t lo, hi;  // keys [lo, hi)
};

// The merged, sorted key ranges and extra columns one query block [q0, q1) of head h computes.
void select_keys(int64_t q0, int64_t q1, int64_t window, int64_t bs,
                 const int64_t* cols, int64_t ncols,
                 const int64_t* bands, int64_t nbands,
                 const int64_t* blocks, int64_t nblocks,
                 std::vector<Range>& ranges, std::vector<int64_t>& extra) {
  ranges.clear();
  extra.clear();
  const int64_t floor_key = window > 0 ? std::max<int64_t>(0, q0 - window + 1) : 0;  // no query of the block sees below
  ranges.push_back({q0, q1});
  for (int64_t i = 0; i < nbands; ++i) {
    const int64_t lo = std::max(floor_key, q0 - bands[2 * i + 1]);
    const int64_t hi = std::min(q1, q1 - bands[2 * i]);
    if (lo < hi) ranges.push_back({lo, hi});
  }
  for (int64_t i = 0; i < nblocks; ++i) {
    const int64_t lo = std::max(floor_key, blocks[i] * bs);
    const int64_t hi = std::min(q1, (blocks[i] + 1) * bs);
    if (lo < hi) ranges.push_back({lo, hi});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  size_t w = 0;
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].lo <= ranges[w].hi) {
      ranges[w].hi = std::max(ranges[w].hi, ranges[i].hi);
    } else {
      ranges[++w] = ranges[i];
    }
  }
  ranges.resize(w + 1);
  size_t r = 0;  // cols are sorted: walk them and the ranges together
  for (int64_t i = 0; i < ncols; ++i) {
    const int64_t c = cols[i];
    if (c >= q1) break;
    if (c < floor_key) continue;
    while (r < ranges.size() && ranges[r].hi <= c) ++r;
    if (r < ranges.size() && ranges[r].lo <= c) continue;  // inside a range already
    extra.push_back(c);
  }
}

void check_index(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dtype() == at::kLong && t.is_contiguous() && t.device().is_cpu(), name,
              " must be a contiguous CPU int64 tensor");
}

}  // namespace

bool sparse_hand_tiles(bool on) {
  hand_tiles = on;
  return hand_tiles;
}

// q (H, n, D), k and v (Hkv, n, D), fp32 contiguous. Returns out (H, n, D), lse (H, n) (the log-sum-exp
// of each row's scaled scores over the keys it saw) and computed (H,) (query-key pairs scored).
std::vector<at::Tensor> sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const at::Tensor& cols, const at::Tensor& col_ptr,
                                         const at::Tensor& bands, const at::Tensor& band_ptr,
                                         const at::Tensor& blocks, const at::Tensor& block_ptr,
                                         int64_t bs, double scale, int64_t window) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "q, k, v must be (heads, n, head_dim)");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
                  v.scalar_type() == at::kFloat, "q, k, v must be float32");
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(), "q, k, v must be contiguous");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "q, k, v must be on the CPU");
  const int64_t H = q.size(0), n = q.size(1), D = q.size(2), Hkv = k.size(0);
  TORCH_CHECK(k.size(1) == n && v.size(1) == n && k.size(2) == D && v.size(2) == D && v.size(0) == Hkv,
              "k and v must be (kv_heads, n, head_dim) like q");
  TORCH_CHECK(Hkv > 0 && H % Hkv == 0, "query heads must be a multiple of kv heads");
  TORCH_CHECK(bs > 0, "block size must be positive");
  for (auto* t : {&cols, &col_ptr, &bands, &band_ptr, &blocks, &block_ptr}) check_index(*t, "index");
  const int64_t nb = (n + bs - 1) / bs;
  TORCH_CHECK(col_ptr.numel() == H + 1 && band_ptr.numel() == H + 1, "col_ptr and band_ptr must have heads + 1 entries");
  const bool has_blocks = block_ptr.numel() > 0;
  TORCH_CHECK(!has_blocks || block_ptr.numel() == H * nb + 1, "block_ptr must have heads * blocks + 1 entries");

  auto out = at::empty({H, n, D}, q.options());
  auto lse = at::empty({H, n}, q.options());
  auto computed = at::zeros({H, nb}, col_ptr.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  int64_t* cp = computed.data_ptr<int64_t>();
  const int64_t* colv = cols.data_ptr<int64_t>();
  const int64_t* colp = col_ptr.data_ptr<int64_t>();
  const int64_t* bandv = bands.data_ptr<int64_t>();
  const int64_t* bandp = band_ptr.data_ptr<int64_t>();
  const int64_t* blkv = blocks.data_ptr<int64_t>();
  const int64_t* blkp = has_blocks ? block_ptr.data_ptr<int64_t>() : nullptr;
  const int64_t group = H / Hkv;
  const float fscale = static_cast<float>(scale);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const auto fopt = at::TensorOptions().dtype(at::kFloat);
  const bool tiles = hand_tiles && D % AVL == 0;

  // Items differ in cost (a late query block sees more keys; heads differ in pattern), so threads take
  // the next item from a shared counter, late blocks first (longest first balances best).
  std::atomic<int64_t> next{0};
  const int64_t total = H * nb;
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<Range> ranges;
    std::vector<int64_t> extra, kpos;
    std::vector<float> kbuf, vbuf, sbuf, qt, qbuf(bs * D), rsum(bs);
    std::vector<const float*> rowp;
    for (int64_t item; (item = next.fetch_add(1)) < total;) {
      const int64_t h = item % H, b = nb - 1 - item / H;
      const int64_t q0 = b * bs, q1 = std::min(n, q0 + bs), rows = q1 - q0;
      const int64_t kvh = h / group;
      const int64_t* blk = has_blocks ? blkv + blkp[h * nb + b] : nullptr;
      const int64_t nblk = has_blocks ? blkp[h * nb + b + 1] - blkp[h * nb + b] : 0;
      select_keys(q0, q1, window, bs, colv + colp[h], colp[h + 1] - colp[h], bandv + 2 * bandp[h],
                  bandp[h + 1] - bandp[h], blk, nblk, ranges, extra);
      int64_t m = static_cast<int64_t>(extra.size());
      for (const auto& r : ranges) m += r.hi - r.lo;
      // key order: the extra columns first (all < q0), then the ranges, so the keys a causal mask can
      // hide (positions q0..q1-1, the diagonal block) are the last `rows`
      kpos.resize(m);
      {
        int64_t j = 0;
        for (int64_t c : extra) kpos[j++] = c;
        for (const auto& r : ranges)
          for (int64_t t = r.lo; t < r.hi; ++t) kpos[j++] = t;
      }
      const float* kh = kp + kvh * n * D;
      const float* vh = vp + kvh * n * D;
      float* lrow = lp + h * n + q0;
      float* orow = op + (h * n + q0) * D;
      cp[h * nb + b] = rows * m;
      if (tiles) {
        item_tiles(qp + (h * n + q0) * D, rows, q0, D, kh, vh, kpos, window, fscale, qt, sbuf, rowp, rsum.data(), orow, lrow);
        continue;
      }
      kbuf.resize(m * D);
      vbuf.resize(m * D);
      sbuf.resize(rows * m);
      {  // gather in kpos's order: the extra columns a row each, the ranges a block each
        int64_t j = 0;
        for (int64_t c : extra) {
          std::copy(kh + c * D, kh + (c + 1) * D, kbuf.data() + j * D);
          std::copy(vh + c * D, vh + (c + 1) * D, vbuf.data() + j * D);
          ++j;
        }
        for (const auto& r : ranges) {
          std::copy(kh + r.lo * D, kh + r.hi * D, kbuf.data() + j * D);
          std::copy(vh + r.lo * D, vh + r.hi * D, vbuf.data() + j * D);
          j += r.hi - r.lo;
        }
      }
      for (int64_t t = 0; t < rows * D; ++t) qbuf[t] = qp[(h * n + q0) * D + t] * fscale;  // scale folded into Q
      auto Q = at::from_blob(qbuf.data(), {rows, D}, fopt);
      auto K = at::from_blob(kbuf.data(), {m, D}, fopt);
      auto V = at::from_blob(vbuf.data(), {m, D}, fopt);
      auto S = at::from_blob(sbuf.data(), {rows, m}, fopt);
      at::mm_out(S, Q, K.t());  // (rows, m) scaled scores
      // causal: row i hides the diagonal block's keys after its own position (the last `rows` columns)
      for (int64_t i = 0; i + 1 < rows; ++i) std::fill(sbuf.data() + i * m + (m - rows) + i + 1, sbuf.data() + (i + 1) * m, neg_inf);
      if (window > 0) {  // sliding window: hide keys at or beyond `window` positions back
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t qpos = q0 + i;
          float* srow = sbuf.data() + i * m;
          for (int64_t t = 0; t < m; ++t) {
            if (qpos - kpos[t] >= window) srow[t] = neg_inf;
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {  // softmax numerators in place; lse = max + log(sum)
        float* srow = sbuf.data() + i * m;
        avec vmax = splat(neg_inf);
        int64_t t = 0;
        for (; t + AVL <= m; t += AVL) {
          const avec x = aload(srow + t);
          vmax = x > vmax ? x : vmax;
        }
        float mx = neg_inf;
        for (int l = 0; l < AVL; ++l) mx = std::max(mx, vmax[l]);
        for (; t < m; ++t) mx = std::max(mx, srow[t]);  // finite: each row sees its own key
        avec vsum = splat(0.0f);
        t = 0;
        for (; t + AVL <= m; t += AVL) {
          const avec e = vexp(aload(srow + t) - splat(mx));
          astore(srow + t, e);
          vsum += e;
        }
        float sum = hsum(vsum);
        for (; t < m; ++t) {
          srow[t] = std::exp(srow[t] - mx);
          sum += srow[t];
        }
        lrow[i] = mx + std::log(sum);
        rsum[i] = 1.0f / sum;
      }
      auto O = at::from_blob(orow, {rows, D}, fopt);
      at::mm_out(O, S, V);
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t d = 0; d < D; ++d) orow[i * D + d] *= rsum[i];
      }
    }
  });
  return {out, lse, computed.sum(1)};
}
