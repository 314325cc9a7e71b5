"""Sparse attention for one prefill: what the model adapter calls in place of dense attention.

Approximate: full-attention layers compute only the keys their heads' patterns select (see
patterns.py), so the prompt's KV cache and the first token can differ from dense prefill. Sliding-
window layers (Gemma-3's local layers) compute their window exactly: the kernel never visits keys
outside it, where SDPA with a mask still does the n^2 work. Decode and verification steps never come
here; they stay dense and exact.
"""

from __future__ import annotations

import logging

import torch

from llmaccel.sparse.config import SparseConfig
from llmaccel.sparse.kernels import dense_attention, sparse_attention
from llmaccel.sparse.patterns import BLOCK, HeadPattern, SparseIndex, build_index

log = logging.getLogger(__name__)

# The kernel's speed per scored pair over SDPA's on dense causal work, index estimation included: 0.93-0.94
# (BENCHMARKS.md, "Sparse prefill"). A layer whose patterns would score more than this share of
# the causal pairs is cheaper dense, and dense is exact.
KERNEL_EFFICIENCY = 0.9


def nominal_keys(p: HeadPattern) -> int:
    """Keys per query a pattern scores in the kernel, before the causal cap (slashes and bands are
    computed as 64-wide tiles: about half a block more for A-shape's band, a block for vertical-slash)."""
    if p.kind == "a_shape":
        return p.a + p.b + BLOCK // 2
    if p.kind == "vertical_slash":
        return p.a + p.b + BLOCK
    return p.a * BLOCK


def dense_is_cheaper(patterns, T: int) -> bool:
    """Whether SDPA beats the kernel on a layer with these head patterns at prompt length T.

    A head scoring c keys per query scores about c - c^2 / 2T per query on average once early queries,
    which have fewer keys than c, are capped (T / 2 for dense)."""
    capped = [min(c, T) - min(c, T) ** 2 / (2 * T) for c in map(nominal_keys, patterns)]
    return sum(capped) / len(capped) >= KERNEL_EFFICIENCY * T / 2


def window_index(n_heads: int, window: int) -> SparseIndex:
    """Every head: a band of the `window` nearest keys (the kernel's window mask makes it exact)."""
    zeros = torch.zeros(n_heads + 1, dtype=torch.int64)
    return SparseIndex(
        cols=torch.zeros(0, dtype=torch.int64),
        col_ptr=zeros,
        bands=torch.tensor([[0, window - 1]] * n_heads, dtype=torch.int64),
        band_ptr=torch.arange(n_heads + 1, dtype=torch.int64),
        blocks=torch.zeros(0, dtype=torch.int64),
        block_ptr=torch.zeros(0, dtype=torch.int64),
    )


class SparsePrefill:
    """Per-layer attention for one prefill; counts the query-key pairs it scored against dense."""

    def __init__(self, config: SparseConfig, dense_full: bool = False) -> None:
        """`dense_full`: full-attention layers dense (SDPA), only sliding windows run in the kernel; exact
        up to fp32 rounding, to tell the windows' share of a speedup from the patterns'. Without it,
        a full layer still runs dense where that is cheaper (`dense_is_cheaper`)."""
        self.config = config
        self.dense_full = dense_full
        self.computed = 0  # query-key pairs scored (masked ones in computed blocks included)
        self.dense = 0  # pairs causal dense attention scores

    def attend(
        self,
        layer: int,
        q: torch.Tensor,  # (1, H, T, D) after RoPE
        k: torch.Tensor,  # (1, Hkv, T, D)
        v: torch.Tensor,  # (1, Hkv, T, D)
        scaling: float,
        window: int | None,  # sliding-window layer: its window; None = full attention
    ) -> torch.Tensor:  # (1, T, H, D)
        H, T = q.shape[1], q.shape[2]
        causal = H * T * (T + 1) // 2
        if window is None and (self.dense_full or dense_is_cheaper(self.config.layers[layer], T)):
            out, computed = dense_attention(q[0], k[0], v[0], scaling), causal  # (H, T, D)
        else:  # a sliding layer's window exactly, or a full layer's patterns
            index = window_index(H, window) if window is not None else build_index(
                list(self.config.layers[layer]), q[0], k[0], scaling)
            out, _, pairs = sparse_attention(q[0], k[0], v[0], index, scaling, window or 0)  # (H, T, D)
            computed = int(pairs.sum())
        self.computed += computed
        self.dense += causal
        return out.transpose(0, 1).contiguous()[None]

    @property
    def density(self) -> float:
        return self.computed / self.dense if self.dense else 1.0
