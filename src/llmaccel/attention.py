"""Attention for decoding steps, registered through transformers' attention-function registry.

Why our own: for a step of k > 1 tokens on a grouped-query model (SmolLM2: 9 query heads on 3 KV
heads), transformers' SDPA path has a mask and then expands the whole KV cache to every query head
(`repeat_kv`, a copy) in every layer of every step, because CUDA kernels lack masked GQA. PyTorch's
CPU flash kernel reads grouped KV heads in place with a mask too (`enable_gqa=True`). Measured on the
2-core CPU, one layer of SmolLM2 at a 1k-token context (BENCHMARKS.md, "Tried and dropped"): 16 query tokens
229 us vs 631 us with the KV heads stacked by hand, and transformers' repeat_kv path copies ~140 MB
per step on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import sdpa_mask

NAME = "llmaccel"


def grouped_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, H, T, D)
    key: torch.Tensor,  # (B, Hkv, S, D), S = cached + T
    value: torch.Tensor,  # (B, Hkv, S, D)
    attention_mask: torch.Tensor | None,  # (B, 1, T, S) bool (True = attend) or additive float; None = causal
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    prefill = kwargs.get("llmaccel_prefill")  # a sparse.prefill.SparsePrefill, for a fresh prompt only
    if prefill is not None:
        return prefill.attend(module.layer_idx, query, key, value, scaling, kwargs.get("sliding_window")), None
    if kwargs.get("softcap") is not None:
        raise ValueError("attention logit softcapping is not supported by llmaccel's attention")
    T, S = query.shape[2], key.shape[2]
    gqa = query.shape[1] != key.shape[1]
    if gqa and query.device.type == "cuda" and (attention_mask is not None or T == 1):
        return folded_gqa(query, key, value, attention_mask, scaling).transpose(1, 2).contiguous(), None
    if attention_mask is None:
        # No mask: plain causal over a fresh sequence (prefill), or queries that may see every key.
        out = F.scaled_dot_product_attention(query, key, value, is_causal=T > 1 and T == S, scale=scaling, enable_gqa=gqa)
    else:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, D)


def folded_gqa(
    query: torch.Tensor,  # (B, H, T, D)
    key: torch.Tensor,  # (B, Hkv, S, D)
    value: torch.Tensor,  # (B, Hkv, S, D)
    mask: torch.Tensor | None,  # (B, 1, T, S) bool (True = attend), or None: every query sees every key
    scaling: float | None,
) -> torch.Tensor:
    """Grouped-query attention as three plain products over the KV heads, (B, H, T, D): the n = H / Hkv
    query heads of a KV head become n * T query rows. Why, measured on the H100 over a CUDA graph's
    8k-slot static cache (BENCHMARKS.md, "On a GPU"): SDPA's `enable_gqa` with a mask falls back to the
    math kernel, which copies K and V to every query head (a 2-token step cost 2.7x a 1-token step);
    the memory-efficient kernel on folded rows does not split the keys, so a few query rows over 8k
    keys run on a handful of thread blocks (a 1-token step took 31 ms instead of 5). cuBLAS products
    read K and V once and spread the keys over the whole GPU."""
    B, H, T, D = query.shape
    Hkv = key.shape[1]
    n = H // Hkv
    q = query.reshape(B, Hkv, n * T, D)  # query head j*n + r, token t -> KV head j, row r*T + t
    scores = torch.matmul(q, key.transpose(-1, -2))  # (B, Hkv, n*T, S)
    scores.mul_(scaling if scaling is not None else D**-0.5)
    if mask is not None:
        m = mask.expand(B, 1, T, key.shape[2]).repeat(1, 1, n, 1)  # (B, 1, n*T, S)
        scores.masked_fill_(~m, float("-inf"))
    out = torch.matmul(scores.softmax(-1), value)  # (B, Hkv, n*T, D)
    return out.reshape(B, H, T, D)


def register() -> str:
    """Register the function (and SDPA's mask format for it); returns the implementation name."""
    AttentionInterface.register(NAME, grouped_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
