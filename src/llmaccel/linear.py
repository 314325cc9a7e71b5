"""Linear layers re-laid out for decoding steps of a few rows.

A decoding step multiplies a few rows (1 token, or 1 + a draft) by every weight matrix, so it should
cost about one pass over the weights whatever the row count. transformers' `nn.Linear` (MKL sgemm on
W stored (out, in)) gets there for 1-2 rows but not beyond. Measured on the 2-core AVX-512 CPU over
SmolLM2's 30 layers of linears (BENCHMARKS.md, "Tried and dropped"; the full table is in its git history), ms at 1 / 4 / 16 / 32 rows:
F.linear 17.1 / 28.3 / 40.3 / 48.3, MKL pre-packed 17.8 / 22.1 / 31.5 / 44.7, and our skinny kernel
(kernels/skinny_gemm.cpp: weights in 48-wide panels, every row done while a panel is in cache)
16.4 / 17.5 / 21.7 / 28.2. So `PackedLinear` uses the skinny kernel for steps of up to
`SKINNY_MAX_ROWS` rows and F.linear (a large GEMM) for prefill. Where the kernel cannot be built (no
compiler), MKL's packed layout serves steps of 3+ rows, and failing that the layer stays as it is.

The module swap replaces `nn.Linear` instances inside one model object (the documented torch.nn
way to change a module); no transformers class is touched.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from llmaccel.kernels import skinny
from llmaccel.kernels.skinny import SKINNY_MAX_ROWS

log = logging.getLogger(__name__)

MKL_MIN_ROWS = 3  # fallback path: at 1-2 rows MKL's unpacked GEMV is as fast as its packed GEMM
MKL_PACK_ROWS = 16  # the row count MKL is told to pack for; results are correct for any count


def mkl_packing_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class PackedLinear(nn.Module):
    """y = x W^T + b, with W also kept in a layout for steps of a few rows (skinny panels or MKL's)."""

    def __init__(self, linear: nn.Linear, use_skinny: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # (out, in), shared with the original module (tied embeddings stay tied)
        self.bias = linear.bias
        self.use_skinny = use_skinny
        w = self.weight.detach()
        with torch.no_grad():
            if use_skinny:
                packed = skinny.pack(w)  # (ceil(out/NB), in, NB)
            else:
                packed = torch.ops.mkl._mkl_reorder_linear_weight(w, MKL_PACK_ROWS)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in) -> (..., out)
        rows = x.numel() // self.in_features
        if x.requires_grad or torch.is_grad_enabled() and self.weight.requires_grad:
            return F.linear(x, self.weight, self.bias)
        if self.use_skinny:
            if rows <= SKINNY_MAX_ROWS:
                return skinny.linear(x, self.packed, self.out_features, self.bias)
        elif rows >= MKL_MIN_ROWS:
            y = torch.ops.mkl._mkl_linear(x.reshape(rows, self.in_features), self.packed, self.weight, self.bias, rows)
            return y.reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)


def pack_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` of a CPU fp32 `model` (LM head included) by `PackedLinear`; returns how many."""
    use_skinny = skinny.available()
    if not use_skinny:
        log.info("skinny GEMM kernel unavailable; using MKL's packed layout for multi-token steps")
        if not mkl_packing_available():
            return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu":
                setattr(parent, name, PackedLinear(child, use_skinny))
                count += 1
    return count
