"""Acceptance rules: which drafted tokens the model agrees with.

Terms (as in vLLM's rejection sampler): the *draft* is the k tokens proposed after the last committed
token; the model scores [last] + draft in one forward and its choice at each of the k+1 positions is
the *target*. The *accepted* tokens are the longest prefix of the draft equal to the targets; the
*bonus* token is the target right after them, free because its logits are already computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmaccel.kernels import skinny


def greedy_targets(logits: torch.Tensor) -> list[int]:
    """logits: (k+1, V) -> the argmax at each position (ties -> lowest id, like transformers)."""
    return skinny.argmax(logits).tolist()


def accept_greedy(draft: Sequence[int], targets: Sequence[int]) -> tuple[int, int]:
    """Number of accepted draft tokens and the bonus token.

    draft: k tokens; targets: k+1 model choices (targets[i] follows draft[:i]).
    """
    n = 0
    while n < len(draft) and draft[n] == targets[n]:
        n += 1
    return n, targets[n]
