"""Linear layers re-laid out for the CPU GEMM path of multi-token steps.

A decoding step multiplies a few rows (1 token, or 1 + a draft) by every weight matrix, so it should
cost about one pass over the weights whatever the row count. transformers' `nn.Linear` (MKL sgemm on
W stored (out, in)) gets there for 1-2 rows but not beyond: measured on the 2-core AVX-512 CPU over
SmolLM2's 30 layers of linears (BENCHMARKS.md, "linear layouts"), 16.9 ms at 1 row, 27.5 at 4,
41.0 at 16; with the weights pre-packed by MKL (`cblas_sgemm_pack`, reached through
`torch.ops.mkl._mkl_linear`) 21.6 ms at 4 and 30.8 at 16, but no better at 1-2 rows. So `PackedLinear`
keeps both: the plain path for up to `PLAIN_MAX_ROWS` rows and the packed one above.

The module swap replaces `nn.Linear` instances inside one model object (the documented torch.nn
way to change a module); no transformers class is touched. Without MKL (other builds, CUDA) the
model is left as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PLAIN_MAX_ROWS = 2  # at 1-2 rows MKL's unpacked GEMV path is as fast as the packed one (measured)
PACK_ROWS = 16  # the row count MKL is told to pack for; results are correct for any count


def mkl_packing_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class PackedLinear(nn.Module):
    """y = x W^T + b, with W also kept in MKL's packed layout for steps of more than 2 rows."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # (out, in), shared with the original module (tied embeddings stay tied)
        self.bias = linear.bias
        with torch.no_grad():
            self.register_buffer(
                "packed", torch.ops.mkl._mkl_reorder_linear_weight(self.weight.detach(), PACK_ROWS), persistent=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in) -> (..., out)
        rows = x.numel() // self.in_features
        if rows <= PLAIN_MAX_ROWS or x.requires_grad:
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(rows, self.in_features)
        y = torch.ops.mkl._mkl_linear(x2, self.packed, self.weight, self.bias, rows)  # (rows, out)
        return y.reshape(*x.shape[:-1], self.out_features)


def pack_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` of a CPU fp32 `model` (LM head included) by `PackedLinear`; returns how many."""
    if not mkl_packing_available():
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu":
                setattr(parent, name, PackedLinear(child))
                count += 1
    return count
