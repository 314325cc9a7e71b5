"""A lean forward pass for Llama-family decoder stacks (Llama, Mistral, Qwen2), for decoding steps.

Why our own: a decoding step of SmolLM2 spends ~19 ms in its linears (the weight-streaming bound) but
~28 ms in all through transformers' modules: the rest is ~1,600 small ops and module calls per step
(RMSNorm as seven ops, RoPE, masks built per call, hooks). This module runs the same arithmetic as
transformers' Llama modules with a fraction of the calls: q/k/v and gate/up fused into one skinny-GEMM
call each, RMSNorm as one `F.rms_norm`, RoPE once for q and k together, the attention mask built once
per step instead of per layer, the final norm and LM head only on the rows whose logits are used.

Two layers, one arithmetic:
- the Python layer (prefill, steps of more than SKINNY_MAX_ROWS tokens, and wherever the kernels
  cannot be built): every op computes what transformers' module computes, in the same order and
  precision (RoPE cos/sin come from the model's own rotary module, through a table of its rows
  checked equal bit for bit; attention is
  `attention.grouped_attention`, the function the module path uses), so the logits equal the module
  path's bit for bit (tested on tiny Llama/Qwen2/Mistral and on SmolLM2);
- the C++ layer (`kernels/decoder_layer.cpp`, `Stack.cpp_layers`) for decoding steps: the same formulas
  with one call per layer instead of ~20 (a 1-token step of SmolLM2 ~31 -> ~25 ms), and the final
  norm as the C++ layer computes its norms; equal to the Python layer to fp32 rounding, same greedy
  tokens (tested).
The module path stays the reference and the fallback for other architectures (Gemma-3, GPT-2, ...).

Pure torch over plain tensors: models/lean_weights.py reads the weights out of the transformers model into
`Stack`; nothing here imports transformers. Batch 1 for now; hidden states are (T, H).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmaccel.attention import grouped_attention
from llmaccel.kernels import skinny
from llmaccel.kernels.skinny import SKINNY_MAX_ROWS

# Steps of up to this many tokens use the C++ layer's small attention (decoder_layer.cpp); longer ones
# its register-tiled attention where the head dim fits the vector width, else PyTorch's SDPA
# (BENCHMARKS.md, "Tried and dropped").
SMALL_ATTENTION_MAX_T = 1


class FusedLinear:
    """Several linears that read the same input, as one skinny-GEMM call for few rows.

    Called, returns the outputs side by side, (T, sum N_i); `parts` returns them one by one. Few rows
    (decoding steps): one call over the concatenated weights (each output column is computed exactly
    as it would be alone: the kernel's per-column arithmetic does not depend on its neighbours,
    tested). Many rows (prefill): F.linear per part, as transformers does.
    """

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None], use_skinny: bool) -> None:
        self.weights = [w.detach() for w in weights]  # each (N_i, K)
        self.biases = [None if b is None else b.detach() for b in biases]
        self.sizes = [w.shape[0] for w in self.weights]
        self.n = sum(self.sizes)
        self.packed: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        if use_skinny:
            self.packed = skinny.pack(torch.cat(self.weights))  # (panels, K, NB)
            if any(b is not None for b in self.biases):
                self.bias = torch.cat([torch.zeros(n) if b is None else b for n, b in zip(self.sizes, self.biases)])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x (T, K) -> (T, sum N_i)
        if self.packed is not None and x.shape[0] <= SKINNY_MAX_ROWS:
            return skinny.linear(x, self.packed, self.n, self.bias)
        if len(self.weights) == 1:
            return F.linear(x, self.weights[0], self.biases[0])
        return torch.cat(self.parts(x), dim=-1)

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:  # x (T, K) -> [(T, N_i)]
        """Each part's output. Many rows (prefill): one GEMM per part into its own tensor, as
        transformers computes it, with no concatenation (a cat of an 8k prefill's outputs and GEMMs
        writing into column slices of one output both cost seconds)."""
        if self.packed is not None and x.shape[0] <= SKINNY_MAX_ROWS:
            return list(skinny.linear(x, self.packed, self.n, self.bias).split(self.sizes, dim=-1))
        return [F.linear(x, w, b) for w, b in zip(self.weights, self.biases)]


@dataclass
class Layer:
    ln1: torch.Tensor  # (H,) input RMSNorm weight
    qkv: FusedLinear  # H -> (Hq + 2 Hkv) * D
    o: FusedLinear  # Hq * D -> H
    ln2: torch.Tensor  # (H,) post-attention RMSNorm weight
    gate_up: FusedLinear  # H -> 2 I
    down: FusedLinear  # I -> H
    window: int | None  # sliding-window length of this layer, None = full attention


@dataclass
class RopeTable:
    """RoPE's cos and sin (N, D) for positions 0..N-1, from the model's own rotary module (`rope_table`).

    Why: the module is nine ATen ops a step (arange, matmul, cat, cos, sin, ...); after a step's weights
    have streamed through the caches their code and data are cold, and they took ~180 us of a ~11 ms
    1-token step of SmolLM2 (torch.profiler). A lookup is one op per table.
    """

    cos: torch.Tensor  # (N, D)
    sin: torch.Tensor  # (N, D)


def rope_table(rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], n: int) -> RopeTable | None:
    """The table of `rotary` ((1, T) positions -> cos, sin (1, T, D)) for positions 0..n-1, or None if some
    probed position's own call does not give its row bit for bit (a module whose output depends on the
    other positions of the call)."""
    cos, sin = rotary(torch.arange(n)[None])  # (1, n, D)
    table = RopeTable(cos[0].contiguous(), sin[0].contiguous())
    for probe in (torch.tensor([[0]]), torch.tensor([[n - 1]]), torch.arange(n // 2, n // 2 + 5)[None]):
        c, s = rotary(probe)
        if not (torch.equal(c[0], table.cos[probe[0]]) and torch.equal(s[0], table.sin[probe[0]])):
            return None
    return table


@dataclass
class Stack:
    embed: torch.Tensor  # (V, H)
    layers: list[Layer]
    norm: torch.Tensor  # (H,) final RMSNorm weight
    head: FusedLinear  # H -> V
    eps: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # positions (1, T) -> cos, sin (1, T, D)
    # decoding steps of up to SKINNY_MAX_ROWS tokens run each decoder layer as one C++ call
    # (kernels/decoder_layer.cpp) instead of torch ops; prefill and longer steps always take torch ops
    cpp_layers: bool = False
    argmax_head: tuple[torch.Tensor, torch.Tensor] | None = None  # skinny.pack_argmax_head(head weight), or None
    rope: RopeTable | None = None  # cos, sin of the first positions; `rotary` beyond them, or if None


def step_mask(
    start: int, positions: torch.Tensor, visible: torch.Tensor | None, window: int | None
) -> torch.Tensor | None:
    """Which keys each query of a step sees: (1, 1, T, start + T) bool, True = attend; None = all of them (one query),
    or a plain causal chain from position 0 (SDPA is_causal).

    Keys are the `start` cached entries (entry j holds position j) followed by the step's own T tokens
    at `positions` (T,). Among the step's tokens, query i sees token m where `visible[i, m]` (a tree's
    ancestor-or-self matrix); None means a causal chain. A sliding window of w keeps keys with
    query_pos - key_pos < w, as transformers' sliding masks do.
    """
    T = positions.shape[0]
    if T == 1 and visible is None and (window is None or int(positions[0]) < window):
        return None
    if start == 0 and visible is None and (window is None or T <= window):
        return None  # a fresh causal chain: SDPA's is_causal (2.3x faster than this mask at 8k tokens)
    if visible is None:
        visible = torch.ones(T, T, dtype=torch.bool, device=positions.device).tril_()
    mask = torch.cat([torch.ones(T, start, dtype=torch.bool, device=positions.device), visible], dim=1)  # (T, S)
    if window is not None:
        key_pos = torch.cat([torch.arange(start, device=positions.device), positions])  # (S,)
        mask &= (positions[:, None] - key_pos[None, :]) < window
    return mask[None, None]


def _cache_ready_for_cpp(cache, n_layers: int) -> bool:
    """The C++ layer writes into llmaccel's preallocated buffers, once prefill has created them."""
    layers = getattr(cache, "layers", [])
    return len(layers) == n_layers and all(getattr(l, "_kbuf", None) is not None for l in layers)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    out = torch.empty_like(x)  # transformers' cat((-x2, x1)), written in place
    torch.neg(x[..., half:], out=out[..., :half])
    out[..., half:] = x[..., :half]
    return out


@torch.inference_mode()
def forward(
    stack: Stack,
    ids: torch.Tensor,  # (T,) token ids
    positions: torch.Tensor,  # (T,) their positions
    start: int,  # entries already in `cache`
    cache,  # llmaccel.kv.KVCache; grows by T entries
    keep: torch.Tensor | slice,  # which of the T rows need logits
    visible: torch.Tensor | None = None,  # (T, T) bool visibility among the step's tokens; None = causal
    prefill=None,  # a sparse.prefill.SparsePrefill: attention of a fresh prompt (start 0, causal) through it
    argmax: bool = False,  # return each kept row's greedy choice instead of its logits
) -> torch.Tensor:  # (rows kept, V) logits, or (rows kept,) int64 token ids with argmax=True
    T = ids.shape[0]
    if stack.rope is not None and start + T <= stack.rope.cos.shape[0]:  # positions < start + T
        cos, sin = stack.rope.cos.index_select(0, positions), stack.rope.sin.index_select(0, positions)  # (T, D)
    else:
        cos, sin = (c[0].contiguous() for c in stack.rotary(positions[None]))  # (T, D) each
    # one mask per window length (full layers: None), shared by the layers that use it
    masks = {} if prefill is not None else {w: step_mask(start, positions, visible, w) for w in {l.window for l in stack.layers}}
    h = F.embedding(ids, stack.embed)  # (T, H)
    if prefill is None and start > 0 and stack.cpp_layers and T <= SKINNY_MAX_ROWS and _cache_ready_for_cpp(cache, len(stack.layers)):
        _cpp_layers(stack, h, cos, sin, start, cache, masks)
        # the final norm as the C++ layer normalises (skinny.rms_norm_rows says why not F.rms_norm)
        h = skinny.rms_norm_rows(h[keep], stack.norm, stack.eps)  # (rows kept, H)
    else:
        h = _python_layers(stack, h, cos[:, None], sin[:, None], cache, masks, prefill)
        h = F.rms_norm(h[keep], h.shape[-1:], stack.norm, stack.eps)  # (rows kept, H)
    if argmax:
        return greedy_head(stack, h)
    return stack.head(h)  # (rows kept, V)


def greedy_head(stack: Stack, h: torch.Tensor) -> torch.Tensor:
    """h (R, H), after the final norm -> (R,) int64: the argmax of each row's logits, ties to the lowest id.

    Through the int8 head and its error bound where the CPU has it (kernels/argmax_head.cpp: at 16 rows
    ~1.2 ms against ~2.2 ms for the logits and their argmax on SmolLM2); rows it leaves undecided, and
    every row elsewhere, through the logits.
    """
    if stack.argmax_head is not None:
        ids = skinny.argmax_head(h, stack.argmax_head, stack.head.weights[0])  # (R,), -1 = undecided
        undecided = ids < 0
        if undecided.any():
            ids[undecided] = skinny.argmax(stack.head(h[undecided]))
        return ids
    return skinny.argmax(stack.head(h))


def _cpp_layers(stack: Stack, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int, cache,
                masks: dict) -> None:
    """Every layer in C++, in place on h (T, H); cos, sin (T, D)."""
    T = h.shape[0]
    for i, layer in enumerate(stack.layers):
        kv = cache.layers[i]
        kbuf, vbuf = kv.reserve(T)
        skinny.llama_layer(h, layer.ln1, layer.qkv.packed, layer.qkv.n, layer.qkv.bias, layer.o.packed, layer.ln2,
                           layer.gate_up.packed, layer.gate_up.n, layer.down.packed, cos, sin, kbuf, vbuf,
                           start, masks[layer.window], stack.n_heads, stack.n_kv_heads, stack.eps, stack.scaling,
                           SMALL_ATTENTION_MAX_T)
        kv.advance(T)


def _python_layers(stack: Stack, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache,
                   masks: dict, prefill=None) -> torch.Tensor:
    """Every layer through torch ops, as transformers' modules compute it; cos, sin (T, 1, D)."""
    T, D = h.shape[0], stack.head_dim
    hq, hkv = stack.n_heads, stack.n_kv_heads
    for i, layer in enumerate(stack.layers):
        x = F.rms_norm(h, h.shape[-1:], layer.ln1, stack.eps)
        q, k, v = layer.qkv.parts(x)  # (T, Hq D), (T, Hkv D), (T, Hkv D)
        q, k = q.view(T, hq, D), k.view(T, hkv, D)
        q = (q * cos + _rotate_half(q) * sin).transpose(0, 1)[None]  # (1, Hq, T, D), RoPE as transformers
        k = (k * cos + _rotate_half(k) * sin).transpose(0, 1)[None]  # (1, Hkv, T, D)
        v = v.view(T, hkv, D).transpose(0, 1)[None]  # (1, Hkv, T, D)
        k_all, v_all = cache.update(k, v, i)  # (1, Hkv, start + T, D)
        if prefill is not None:
            a = prefill.attend(i, q, k_all, v_all, stack.scaling, layer.window)  # (1, T, Hq, D)
        else:
            a, _ = grouped_attention(None, q, k_all, v_all, masks[layer.window], scaling=stack.scaling)
        h = h + layer.o(a.view(T, hq * D))
        x = F.rms_norm(h, h.shape[-1:], layer.ln2, stack.eps)
        gate, up = layer.gate_up.parts(x)  # (T, I) each
        h = h + layer.down(F.silu(gate, inplace=True).mul_(up))  # gate, up are this layer's temporaries
    return h
