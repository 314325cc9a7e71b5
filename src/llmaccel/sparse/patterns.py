"""Sparse attention patterns per head (MInference's three) and the index the kernel computes from.

A pattern names a kind and two sizes; `build_index` turns one pattern per query head, plus the
prompt's own queries and keys where the kind is dynamic, into a `SparseIndex`:
  - a_shape (sinks, window): the first `sinks` keys and a local window of `window` keys; static.
  - vertical_slash (v, s): from the last 64 queries' attention over all keys, the v key columns
    (verticals) and the s diagonals (slashes) with the most mass; the first `FORCED_SINKS` columns
    and the `FORCED_LOCAL` nearest diagonals are always among them (MInference's choice too).
  - block_sparse (k, _): mean-pool queries and keys over 64-token blocks; each query block keeps the
    k key blocks with the highest pooled score, always the first block and its own.
The kernel (sparse_attention.cpp) always computes the diagonal block, so every query sees itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("a_shape", "vertical_slash", "block_sparse")
BLOCK = 64  # query block and key block size, as MInference's kernels
LAST_Q = 64  # queries whose attention estimates the vertical-slash index (MInference: last 64)
FORCED_SINKS = 30  # vertical_slash always keeps the first 30 columns (MInference)
FORCED_LOCAL = 100  # and the 100 diagonals nearest the main one (MInference)


@dataclass(frozen=True)
class HeadPattern:
    kind: str  # one of KINDS
    a: int  # a_shape: sink tokens | vertical_slash: vertical columns | block_sparse: key blocks per query block
    b: int = 0  # a_shape: local window | vertical_slash: slash diagonals | block_sparse: unused

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sparse pattern {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.a < 0 or self.b < 0 or (self.kind == "block_sparse" and self.a < 1):
            raise ValueError(f"bad sizes for pattern {self.kind}: {self.a}, {self.b}")

    def to_json(self) -> list:
        return [self.kind, self.a, self.b]

    @staticmethod
    def from_json(x) -> HeadPattern:
        if not isinstance(x, (list, tuple)) or len(x) != 3:
            raise ValueError(f"a head pattern is [kind, a, b], got {x!r}")
        return HeadPattern(str(x[0]), int(x[1]), int(x[2]))


@dataclass
class SparseIndex:
    """What each query head computes, as the kernel's CSR lists (see sparse_attention.cpp).

    cols[col_ptr[h]:col_ptr[h+1]] are head h's vertical columns (sorted); bands[band_ptr[h]:band_ptr[h+1]]
    its diagonal bands (d_lo, d_hi); blocks[block_ptr[h*nb + b]:block_ptr[h*nb + b + 1]] the key blocks of
    its query block b (block_ptr empty when no head is block-sparse).
    """

    cols: torch.Tensor  # (C,) int64
    col_ptr: torch.Tensor  # (H + 1,) int64
    bands: torch.Tensor  # (Bn, 2) int64
    band_ptr: torch.Tensor  # (H + 1,) int64
    blocks: torch.Tensor  # (K,) int64
    block_ptr: torch.Tensor  # (H * nb + 1,) int64, or (0,)
    block: int = BLOCK

    def args(self) -> tuple:
        return (self.cols, self.col_ptr, self.bands, self.band_ptr, self.blocks, self.block_ptr, self.block)


def _ptr(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0, *counts], dtype=torch.int64).cumsum(0)


def slash_bands(offsets: torch.Tensor) -> torch.Tensor:
    """Sorted diagonal offsets -> (R, 2) bands (d_lo, d_hi) of consecutive runs: [0,1,2,7] -> [[0,2],[7,7]]."""
    if offsets.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.int64)
    d = offsets.sort().values
    starts = torch.ones_like(d, dtype=torch.bool)
    starts[1:] = d[1:] - d[:-1] > 1
    lo = d[starts]
    ends = torch.ones_like(starts)
    ends[:-1] = starts[1:]
    hi = d[ends]
    return torch.stack([lo, hi], dim=1)


def vertical_slash_scores(q_last: torch.Tensor, k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mass per key column and per diagonal, from the last L queries of the prompt.

    q_last (H, L, D) are the queries at positions n-L..n-1, k (H, n, D) every key (kv heads already
    repeated to query heads). Returns vertical (H, n) and slash (H, n) scores; slash[d] sums the
    probability each of the L queries puts on the key d positions before it.
    """
    H, L, _ = q_last.shape
    n = k.shape[1]
    s = torch.matmul(q_last, k.transpose(1, 2)) * scale  # (H, L, n)
    qpos = torch.arange(n - L, n)[:, None]  # (L, 1)
    kpos = torch.arange(n)[None, :]  # (1, n)
    s.masked_fill_(kpos > qpos, float("-inf"))
    p = torch.softmax(s, dim=-1)  # (H, L, n)
    vertical = p.sum(1)  # (H, n)
    offset = (qpos - kpos).clamp_(min=0).expand(L, n).reshape(1, -1).expand(H, -1)  # (H, L n)
    slash = torch.zeros(H, n, dtype=p.dtype).scatter_add_(1, offset, p.reshape(H, -1))  # (H, n)
    return vertical, slash


def _top(scores: torch.Tensor, count: int, forced: int) -> torch.Tensor:
    """Indices of the `count` largest scores, the first `forced` always among them; sorted."""
    n = scores.shape[0]
    count = min(count, n)
    if count <= 0:
        return torch.zeros(0, dtype=torch.int64)
    s = scores.clone()
    s[: min(forced, n)] = float("inf")
    return s.topk(count).indices.sort().values


def block_scores(q: torch.Tensor, k: torch.Tensor, block: int, scale: float) -> torch.Tensor:
    """Mean-pooled block scores: q (H, n, D), k (H, n, D) -> (H, nb, nb), -inf above the block diagonal."""
    H, n, D = q.shape
    nb = (n + block - 1) // block
    pad = nb * block - n

    def pool(x: torch.Tensor) -> torch.Tensor:  # (H, n, D) -> (H, nb, D), the last block averaged over its rows
        sums = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(H, nb, block, D).sum(2)
        counts = torch.full((nb, 1), float(block))
        counts[-1] = block - pad
        return sums / counts

    s = torch.matmul(pool(q), pool(k).transpose(1, 2)) * scale  # (H, nb, nb)
    return s.masked_fill_(torch.ones(nb, nb, dtype=torch.bool).triu_(1), float("-inf"))


def build_index(
    patterns: list[HeadPattern],  # one per query head
    q: torch.Tensor,  # (H, n, D)
    k: torch.Tensor,  # (Hkv, n, D)
    scale: float,
    block: int = BLOCK,
) -> SparseIndex:
    """The kernel's index for one attention call; dynamic patterns are estimated from q and k."""
    H, n, _ = q.shape
    if len(patterns) != H:
        raise ValueError(f"{len(patterns)} head patterns for {H} query heads")
    group = H // k.shape[0]
    nb = (n + block - 1) // block
    cols: list[torch.Tensor] = [torch.zeros(0, dtype=torch.int64)] * H
    bands: list[torch.Tensor] = [torch.zeros(0, 2, dtype=torch.int64)] * H

    vs = [h for h, p in enumerate(patterns) if p.kind == "vertical_slash"]
    if vs:
        L = min(LAST_Q, n)
        heads = torch.tensor(vs)
        vert, slash = vertical_slash_scores(q[heads, n - L:], k[heads // group], scale)
        for i, h in enumerate(vs):
            cols[h] = _top(vert[i], patterns[h].a, FORCED_SINKS)
            bands[h] = slash_bands(_top(slash[i], patterns[h].b, FORCED_LOCAL))
    for h, p in enumerate(patterns):
        if p.kind == "a_shape":
            cols[h] = torch.arange(min(p.a, n), dtype=torch.int64)
            bands[h] = torch.tensor([[0, max(p.b - 1, 0)]], dtype=torch.int64)
    blocks = torch.zeros(0, dtype=torch.int64)
    block_ptr = torch.zeros(0, dtype=torch.int64)
    bs = [h for h, p in enumerate(patterns) if p.kind == "block_sparse"]
    if bs:
        heads = torch.tensor(bs)
        scores = block_scores(q[heads], k[heads // group], block, scale)  # (|bs|, nb, nb)
        eye = torch.arange(nb)
        scores[:, eye, eye] = float("inf")  # own block and the first block always kept
        scores[:, :, 0] = float("inf")
        counts = torch.zeros(H, nb, dtype=torch.int64)
        per_head = [torch.zeros(0, dtype=torch.int64)] * H
        for i, h in enumerate(bs):
            vals, idx = scores[i].topk(min(patterns[h].a, nb), dim=-1)  # (nb, kk)
            valid = vals > float("-inf")  # early query blocks have fewer blocks than kk to choose from
            idx = torch.where(valid, idx, nb).sort(dim=-1).values  # invalid ones sort last
            per_head[h] = idx[idx < nb]  # row-major: block 0's keys, then block 1's, ...
            counts[h] = valid.sum(1)
        blocks = torch.cat(per_head)
        block_ptr = _ptr(counts.view(-1).tolist())
    return SparseIndex(
        cols=torch.cat(cols).contiguous(),
        col_ptr=_ptr([len(c) for c in cols]),
        bands=torch.cat(bands).contiguous(),
        band_ptr=_ptr([len(b) for b in bands]),
        blocks=blocks.contiguous(),
        block_ptr=block_ptr,
        block=block,
    )
