"""Skinny fp32 GEMM for decoding steps: y = x @ W^T + b with few rows (1..~40) and W streamed once.

`pack(W)` re-lays an (N, K) `nn.Linear` weight into panels of `panel_width()` output features
([P, K, NB], zero-padded); `linear(x, packed, n, bias)` then computes the product with a register-
tiled kernel that runs every row of x against a panel while it is in cache, so a call costs about
one pass over the weights for 1 row as for 16 (see skinny_gemm.cpp for the layouts and paths).

This module is also the Python API of the rest of llmaccel's CPU kernels, which live in the same
extension: the decoder layer (decoder_layer.cpp), sparse prefill attention, the argmax kernels and sampling's noise.
`loader` builds and loads that extension (once per machine, ~1 min; see there); `available()` and
`build()` are its, re-exported here. Importing this module never compiles anything.
"""

from __future__ import annotations

import torch

from llmaccel.kernels import loader
from llmaccel.kernels.loader import available, build

__all__ = ["SKINNY_MAX_ROWS", "argmax", "argmax_head", "available", "block_codes", "build", "fused_layer", "fused_layer_runs", "gumbel_noise", "has_amx", "sample_rows", "has_argmax_head", "linear", "llama_layer", "pack", "pack_argmax_head", "panel_width", "quantize_like_gguf", "sparse_attention", "sparse_hand_tiles", "step_attention_tiles"]

CODE_BLOCK = 32  # weights per block along K in GGUF's Q4_1 / Q8_0 (and in the kernel's code blocks)
# Steps of up to this many rows use the skinny kernel, more rows (prefill) F.linear: on 2 AVX-512 cores
# over SmolLM2's linears it was still 1.6x ahead of MKL at 33 rows (linear.py has the table).
SKINNY_MAX_ROWS = 40

# The extension, kept here once loaded so that a call costs one global lookup (`_ext or _load()`);
# benchmarks/build_ab.py swaps it for another tree's build.
_ext = None


def _load():
    """The extension (built on the first call ever); raises RuntimeError if it cannot be had."""
    global _ext
    if _ext is None:
        _ext = loader.load()
    return _ext


def panel_width() -> int:
    """Output features per packed panel (48 with AVX-512, 16 with AVX2)."""
    return (_ext or _load()).panel_width()


def pack(weight: torch.Tensor, codes: bool = True) -> torch.Tensor:
    """(N, K) fp32 weight -> the kernel's layout for `linear`.

    If every block of 32 weights along K is a dequantised GGUF block (`block_codes` finds it and checks
    it bit for bit) and `codes` is true: uint8 code blocks [ceil(N/NB), K/32, bytes] (4 or 8 bits a
    weight plus a scale and offset per block; the kernel decodes them to the same fp32 values). On a
    CPU with the AMX path they come as [2, ceil(N/NB), K/32, bytes]: the same blocks a second time with
    the codes in the order the AMX tiles take them (4 bits: half the decoding work per block; 8 bits:
    ~40% less; the codes are 15-25% of the fp32 weights' bytes, which is what the copy costs in memory).
    Otherwise fp32 panels [ceil(N/NB), K, NB], packed[p, k, j] = weight[p*NB + j, k] (0 past N).
    """
    if weight.dim() != 2:
        raise ValueError(f"pack expects a 2-D (out, in) weight, got shape {tuple(weight.shape)}")
    nb = panel_width()
    n, k = weight.shape
    p = (n + nb - 1) // nb
    with torch.no_grad():
        w = weight.detach().to(device="cpu", dtype=torch.float32)
        found = block_codes(w) if codes else None
        if found is not None:
            return _pack_codes(*found, nb)
        padded = torch.zeros(p * nb, k, dtype=torch.float32)
        padded[:n] = w
        return padded.view(p, nb, k).transpose(1, 2).contiguous()


def block_codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """Integer codes that reproduce an fp32 (N, K) weight exactly, or None.

    GGUF models reach transformers as fp32 weights dequantised block by block (gguf's numpy code):
    Q4_1: w = d * q + m, q in 0..15; Q8_0: w = d * q, q in -127..127; d and m are fp16 numbers, one
    per 32 weights of a row along K. Reading them back from the fp32 values needs no GGUF file and no
    knowledge of how transformers renamed or permuted the rows: the block minimum is m (llama.cpp maps
    it to q = 0), the maximum is d * 15 + m (Q4_1) or the largest magnitude is 127 |d| (Q8_0), so d is
    the fp16 number next to (max - m) / 15 or amax / 127 (its neighbours are tried too). A layout is
    returned only if decoding (d * q + m in fp32: d * q is exact, so one rounding, as gguf computes
    it) gives back every weight bit for bit. Returns (d (N, K/32), m (N, K/32), q (N, K/32, 32) int,
    bits).
    """
    n, k = w.shape
    if k % CODE_BLOCK or n == 0 or not torch.isfinite(w).all():
        return None
    blocks = w.view(n, k // CODE_BLOCK, CODE_BLOCK)  # (N, B, 32)
    for bits in (4, 8):
        if bits == 4:
            m = blocks.amin(-1)  # (N, B)
            d0 = (blocks.amax(-1) - m) / 15
            qmin, qmax = 0, 15
        else:
            m = torch.zeros_like(blocks[..., 0])
            d0 = blocks.abs().amax(-1) / 127
            qmin, qmax = -127, 127
        d_out = torch.zeros_like(d0)
        q_out = torch.zeros_like(blocks, dtype=torch.int16)
        todo = torch.ones_like(d0, dtype=torch.bool)
        half = d0.to(torch.float16)
        for step in (0, 1, -1):  # the nearest fp16 number, then its neighbours
            d = half if step == 0 else torch.nextafter(half, torch.full_like(half, step * float("inf")))
            d = d.float()
            q = torch.where(d[..., None] != 0, (blocks - m[..., None]) / d[..., None], 0).round_().clamp_(qmin, qmax)
            ok = todo & ((d[..., None] * q + m[..., None]) == blocks).all(-1)  # d * q exact; + m rounds once
            d_out[ok], q_out[ok] = d[ok], q[ok].to(torch.int16)
            todo &= ~ok
            if not todo.any():
                return d_out, m, q_out, bits
    return None


def quantize_like_gguf(w: torch.Tensor, bits: int) -> torch.Tensor:
    """An (n, k) fp32 weight as llama.cpp quantises it per 32 along k and gguf dequantises it:
    Q4_1 (bits 4: d = (max - min) / 15, m = min, both fp16) or Q8_0 (bits 8: d = amax / 127 in fp16).
    What `block_codes` reads back; the tests and benchmarks make GGUF-like weights with it."""
    n, k = w.shape
    w = w.float().reshape(n, k // 32, 32)
    if bits == 4:
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        d, m = ((hi - lo) / 15).half().float(), lo.half().float()
        q = ((w - lo) / ((hi - lo) / 15)).nan_to_num(0).round().clamp(0, 15)
        return (d * q + m).view(n, k)
    d = (w.abs().amax(-1, keepdim=True) / 127).half().float()
    return (d * (w / d).nan_to_num(0).round().clamp(-127, 127)).view(n, k)


def _pack_codes(d: torch.Tensor, m: torch.Tensor, q: torch.Tensor, bits: int, nb: int) -> torch.Tensor:
    """d, m (N, B), q (N, B, 32) -> uint8 [P, B, bytes]: per panel and block, d[NB] and m[NB] as fp32,
    then the codes k by k (4 bits: k pairs in one byte, low nibble first), NB outputs side by side.
    On an AMX CPU: [2, P, B, bytes], the second the same blocks with the codes in the AMX order."""
    n, nblocks = d.shape
    p = (n + nb - 1) // nb

    def panels(t: torch.Tensor) -> torch.Tensor:  # (N, B, ...) -> (P, NB, B, ...), zero rows past N
        out = torch.zeros((p * nb, *t.shape[1:]), dtype=t.dtype)
        out[:n] = t
        return out.view(p, nb, *t.shape[1:])

    scales = torch.stack([panels(d), panels(m)], dim=1)  # (P, 2, NB, B)
    scales = scales.permute(0, 3, 1, 2).contiguous().view(torch.uint8).view(p, nblocks, 8 * nb)
    qpad = panels(q)  # (P, NB, B, 32)
    if bits == 4:
        qp = qpad.view(p, nb, nblocks, CODE_BLOCK // 2, 2)
        qp = (qp[..., 0] | (qp[..., 1] << 4)).to(torch.uint8)  # (P, NB, B, 16)
    else:
        qp = qpad.to(torch.int8).view(torch.uint8)  # (P, NB, B, 32)
    codes = qp.permute(0, 2, 3, 1).reshape(p, nblocks, -1)  # (P, B, k * NB)
    packed = torch.cat([scales, codes], dim=-1).contiguous()
    if nb != 48 or not has_amx():
        return packed
    if bits == 4:
        # the AMX order (gemm_amx.cpp, decode_block_pairs): per 16-column tile g and k pair c < 8, byte
        # 2 j + e = q[16 g + j][2 c + e] | q[16 g + j][16 + 2 c + e] << 4
        qa = qpad.view(p, 3, 16, nblocks, 2, 8, 2)  # (P, g, j, B, half of k, c, e)
        qa = (qa[:, :, :, :, 0] | (qa[:, :, :, :, 1] << 4)).to(torch.uint8)  # (P, g, j, B, c, e)
        qa = qa.permute(0, 3, 1, 4, 2, 5).reshape(p, nblocks, -1)  # (P, B, g c j e)
    else:
        # decode_block_q8_pairs: per tile g and k pair kp < 16, byte 2 j + e = q[16 g + j][2 kp + e]
        qa = qpad.to(torch.int8).view(torch.uint8).view(p, 3, 16, nblocks, 16, 2)  # (P, g, j, B, kp, e)
        qa = qa.permute(0, 3, 1, 4, 2, 5).reshape(p, nblocks, -1)  # (P, B, g kp j e)
    return torch.stack([packed, torch.cat([scales, qa], dim=-1)])


def linear(x: torch.Tensor, packed: torch.Tensor, n: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ W^T + bias -> (..., n), with `packed = pack(W)` and n = W.shape[0].

    CPU only, computed in fp32 (other dtypes are converted), no autograd (raises if grad is needed).
    Shape errors raise ValueError. Checks and reshapes happen in C++: the call costs ~1 us of Python.
    """
    return (_ext or _load()).linear(x, packed, n, bias)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits (..., V) -> int64 (...): torch.argmax(logits, -1), first index on ties and the first NaN if
    any; fp32 CPU logits through the kernel (argmax.cpp: ~15x faster on a vocabulary of 49k), others
    through torch."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.numel() > 0 and available():
        return (_ext or _load()).argmax_rows(logits)
    return logits.argmax(-1)


def gumbel_noise(k0: int, k1: int, vocab: int) -> torch.Tensor:
    """(vocab,) fp32 Gumbel noise of each token id under the 32-bit key halves (k0, k1) (sampling.cpp);
    bit for bit what sampling.py computes in torch where the kernels are not built."""
    return (_ext or _load()).gumbel_noise(k0, k1, vocab)


def sample_rows(logits: torch.Tensor, keys: torch.Tensor, temperature: float, top_k: int, top_p: float,
                min_p: float) -> torch.Tensor:
    """logits (R, V) fp32 CPU, keys (R, 2) int64 noise key halves -> (R,) int64 sampled ids (sampling.cpp):
    what sampling.py's torch path chooses, fused."""
    return (_ext or _load()).sample_rows(logits, keys, temperature, top_k, top_p, min_p)


ARGMAX_TILE_N, ARGMAX_TILE_K = 16, 64  # argmax_head.cpp's int8 tiles: vocabulary entries x k


def pack_argmax_head(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(V, K) LM head weight -> (tiles, cols) for `argmax_head`, or None where it cannot be used (no AMX
    int8 here, or a non-finite weight).

    tiles: int8 [G, K'/64, 1024], the weight rounded to int8 with one scale per row, in the B-tile order
    of the int8 tile products (per 16 entries and 64 k: [k/4][entry][4]); V padded to whole pairs of 16
    entries, K to a multiple of 64, with zeros. cols: fp32 (3, G*16): per entry its scale s, |w| and
    |w - s q| (2-norms, rounded up), the factors of argmax_head's error bound. ~V*K bytes: 28 MB for
    SmolLM2's head, against 35 MB of its Q8_0 codes that the exact head streams.
    """
    if weight.dim() != 2 or not has_argmax_head():
        return None
    with torch.no_grad():
        w = weight.detach().to(device="cpu", dtype=torch.float32)
        if not torch.isfinite(w).all():
            return None
        v, k = w.shape
        vp = -(-v // (2 * ARGMAX_TILE_N)) * 2 * ARGMAX_TILE_N
        kp = -(-k // ARGMAX_TILE_K) * ARGMAX_TILE_K
        amax = w.abs().amax(1)  # (V,)
        s = torch.where(amax > 0, amax / 127, torch.ones_like(amax))  # (V,)
        q = torch.round(w / s[:, None]).clamp_(-127, 127)  # (V, K)
        up = 1 + 1e-6  # norms rounded up (float64 -> fp32 may round down by 2^-24 relative)
        wd = w.double()
        wn = (wd.norm(dim=1) * up).float()
        dwn = ((wd - q.double() * s.double()[:, None]).norm(dim=1) * up).float()
        qp = torch.zeros(vp, kp, dtype=torch.int8)
        qp[:v, :k] = q.to(torch.int8)
        g, c = vp // ARGMAX_TILE_N, kp // ARGMAX_TILE_K
        tiles = qp.view(g, ARGMAX_TILE_N, c, ARGMAX_TILE_K // 4, 4).permute(0, 2, 3, 1, 4).contiguous()
        cols = torch.zeros(3, vp)
        cols[0, :v], cols[1, :v], cols[2, :v] = s, wn, dwn
        return tiles.view(g, c, ARGMAX_TILE_N * ARGMAX_TILE_K), cols


def argmax_head(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """x (M, K) -> int64 (M,): argmax of x @ weight^T per row, ties to the lowest id, with `packed =
    pack_argmax_head(weight)`; -1 for rows it leaves undecided (non-finite x, or more candidates than it
    checks), whose logits the caller computes in full. See argmax_head.cpp for the bound."""
    return (_ext or _load()).argmax_head(x, packed[0], packed[1], weight)


def has_argmax_head() -> bool:
    """Whether `argmax_head` decides rows on this CPU (AMX int8 tiles in this build)."""
    return available() and (_ext or _load()).has_argmax_head()


def has_amx() -> bool:
    """Whether this build and CPU have the AMX path for code-block weights (`use_amx` can still turn it off)."""
    return (_ext or _load()).has_amx()


def use_amx(on: bool = True) -> bool:
    """Code-block weights through AMX tiles (where the CPU has them) or AVX vectors; returns whether AMX
    is used from now on. On by default; off to compare the two or to test the vector path."""
    return (_ext or _load()).use_amx(on)


def sparse_hand_tiles(on: bool = True) -> bool:
    """Sparse attention's two products through the kernel's register tiles (default; head dims that are a
    multiple of the vector width) or through a gather and at::mm_out; returns the setting. Off to compare."""
    return (_ext or _load()).sparse_hand_tiles(on)


def step_attention_tiles(on: bool = True) -> bool:
    """The C++ layer's attention for steps of several tokens through register tiles (default; head dims
    that are a multiple of the vector width) or PyTorch's SDPA; returns the setting. Off to compare."""
    return (_ext or _load()).step_attention_tiles(on)


def fused_layer(on: bool = True) -> bool:
    """The C++ layer of decoding steps in one parallel region, every thread running every phase (default,
    where its linears take the AMX path), or op by op with a region per linear; returns the setting.
    Both compute the same numbers (tested bit for bit); off to compare them."""
    return (_ext or _load()).fused_layer(on)


def fused_layer_runs() -> int:
    """How many layer calls in this process have taken the fused path (for the tests)."""
    return (_ext or _load()).fused_layer_runs()


def sparse_attention(*args) -> list[torch.Tensor]:
    """Causal attention over the keys a sparse index selects (sparse_attention.cpp has the contract)."""
    return (_ext or _load()).sparse_attention(*args)


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gu (T, 2 I) = [gate | up]: the C++ layer's MLP activation (for the tests)."""
    return (_ext or _load()).silu_mul(gu)


def rms_norm_rows(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x (T, H) fp32 normalised per row and scaled by w (H,), as the C++ layer normalises its inputs."""
    return (_ext or _load()).rms_norm_rows(x, w, eps)


def llama_layer(*args) -> None:
    """One Llama-family decoder layer for a decoding step, in place (decoder_layer.cpp has the contract)."""
    (_ext or _load()).llama_layer(*args)
