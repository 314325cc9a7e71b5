"""Linear layers re-laid out for the CPU GEMM path.

A decoding step multiplies a few rows (1 token, or 1 + a draft) by every weight matrix, so it is bound
by streaming the weights. transformers' `nn.Linear` computes x @ W^T from W stored (out, in); the
measurements in BENCHMARKS.md ("linear layouts") pick the layout used here. The module swap replaces
`nn.Linear` instances inside one model object (the documented `torch.nn` way to change a module); no
transformers class is touched.
"""

from __future__ import annotations

import torch
from torch import nn


class TransposedLinear(nn.Module):
    """y = x @ W^T + b with W^T stored contiguous (in, out), the layout MKL's sgemm streams fastest."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)  # (in, out)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in) -> (..., out)
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


def pack_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` of `model` (LM head included) by the fast layout; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, TransposedLinear(child))
                count += 1
    return count
