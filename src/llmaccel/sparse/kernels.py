"""Sparse prefill attention: the CPU kernel's Python side, dense references, and attention recall.

`sparse_attention` computes causal attention over the keys a `SparseIndex` selects, with no n x n
tensor (kernels/sparse_attention.cpp; compiled with the skinny GEMM extension). On other devices,
or where the extension cannot be built, `sparse_attention_torch` computes the same thing block by
block with PyTorch ops and a Python key list per block: a reference for tests, far too slow for a
long prompt, so the model adapter prefills densely instead (models.LoadedModel.sparse_prefill).

Recall (MInference's measure): the share of each query's dense attention mass that falls on the
keys the pattern computes, averaged over queries. With lse = log-sum-exp of a row's scaled scores,
a row's recall is exp(lse_sparse - lse_dense).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmaccel.kernels import skinny
from llmaccel.sparse.patterns import SparseIndex


def sparse_attention(
    q: torch.Tensor,  # (H, n, D)
    k: torch.Tensor,  # (Hkv, n, D)
    v: torch.Tensor,  # (Hkv, n, D)
    index: SparseIndex,
    scale: float,
    window: int = 0,  # > 0: query q sees only keys > q - window (exact sliding window)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # out (H, n, D), lse (H, n), computed pairs (H,)
    if q.device.type == "cpu" and skinny.available():
        q32, k32, v32 = (x.float().contiguous() for x in (q, k, v))
        out, lse, computed = skinny.sparse_attention(q32, k32, v32, *index.args(), float(scale), int(window))
        return out.to(q.dtype), lse, computed
    return sparse_attention_torch(q, k, v, index, scale, window)


def selected_keys(index: SparseIndex, h: int, b: int, n: int, window: int = 0) -> torch.Tensor:
    """Sorted key positions query block b of head h computes (before the causal mask); plain Python,
    the same rule as select_keys in sparse_attention.cpp."""
    bs = index.block
    q0, q1 = b * bs, min(n, (b + 1) * bs)
    floor = max(0, q0 - window + 1) if window > 0 else 0
    keys = set(range(q0, q1))
    for lo, hi in index.bands[int(index.band_ptr[h]):int(index.band_ptr[h + 1])].tolist():
        keys.update(range(max(floor, q0 - hi), min(q1, q1 - lo)))
    if index.block_ptr.numel():
        nb = (n + bs - 1) // bs
        for kb in index.blocks[int(index.block_ptr[h * nb + b]):int(index.block_ptr[h * nb + b + 1])].tolist():
            keys.update(range(max(floor, kb * bs), min(q1, (kb + 1) * bs)))
    keys.update(c for c in index.cols[int(index.col_ptr[h]):int(index.col_ptr[h + 1])].tolist() if floor <= c < q1)
    return torch.tensor(sorted(keys), dtype=torch.int64)


def sparse_attention_torch(q, k, v, index: SparseIndex, scale: float, window: int = 0):
    """The same computation with PyTorch ops per (head, query block): any device; a reference, slow."""
    H, n, D = q.shape
    group = H // k.shape[0]
    bs = index.block
    nb = (n + bs - 1) // bs
    out = torch.empty_like(q)
    lse = torch.empty(H, n, dtype=torch.float32, device=q.device)
    computed = torch.zeros(H, dtype=torch.int64)
    for h in range(H):
        for b in range(nb):
            q0, q1 = b * bs, min(n, (b + 1) * bs)
            keys = selected_keys(index, h, b, n, window).to(q.device)  # (m,)
            s = q[h, q0:q1].float() @ k[h // group, keys].float().T * scale  # (rows, m)
            qpos = torch.arange(q0, q1, device=q.device)[:, None]
            hidden = keys[None, :] > qpos
            if window > 0:
                hidden |= qpos - keys[None, :] >= window
            s.masked_fill_(hidden, float("-inf"))
            lse[h, q0:q1] = torch.logsumexp(s, dim=-1)
            out[h, q0:q1] = (torch.softmax(s, dim=-1) @ v[h // group, keys].float()).to(q.dtype)
            computed[h] += (q1 - q0) * keys.numel()
    return out, lse, computed


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal SDPA, the dense baseline: q (H, n, D), k, v (Hkv, n, D) -> (H, n, D)."""
    return F.scaled_dot_product_attention(
        q[None], k[None], v[None], is_causal=True, scale=scale, enable_gqa=q.shape[0] != k.shape[0]
    )[0]


def dense_lse(q: torch.Tensor, k: torch.Tensor, scale: float, rows: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp of the causal scaled scores of the query rows `rows` (R,): (H, R)."""
    group = q.shape[0] // k.shape[0]
    kk = k.repeat_interleave(group, dim=0) if group > 1 else k  # (H, n, D)
    s = torch.matmul(q[:, rows].float(), kk.float().transpose(1, 2)) * scale  # (H, R, n)
    s.masked_fill_(torch.arange(k.shape[1], device=q.device)[None, :] > rows[:, None].to(q.device), float("-inf"))
    return torch.logsumexp(s, dim=-1)


def sample_rows(n: int, count: int = 256, seed: int = 0) -> torch.Tensor:
    """Query rows for recall: spread over the prompt, the late half weighted as it holds most of the work."""
    g = torch.Generator().manual_seed(seed)
    if n <= count:
        return torch.arange(n)
    return torch.randint(n // 8, n, (count,), generator=g).sort().values


def recall(lse_sparse: torch.Tensor, lse_dense: torch.Tensor) -> torch.Tensor:
    """Mean share of dense attention mass kept, per head: (H, R), (H, R) -> (H,)."""
    return torch.exp(lse_sparse.float() - lse_dense.float()).clamp(max=1.0).mean(-1)
