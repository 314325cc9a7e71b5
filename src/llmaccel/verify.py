"""The acceptance rule: which drafted tokens the model agrees with. Pure functions over token ids.

Terms (as in vLLM's rejection sampler): the *draft* is what is proposed after the last committed
token (the *root*): a chain, or a tree of several candidates (drafting/tree.py). The model scores the
root and every drafted node in one forward; its choice after node i is the *target* of node i. Walking
down from the root, a node's target either names one of its children, which is *accepted*, or it is
the *bonus* token that ends the step: free, since its logits are already computed. The accepted
tokens plus the bonus are exactly what plain greedy decoding would have produced next, one token per
forward, which is why every method gives greedy's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmaccel.drafting.tree import DraftTree

if TYPE_CHECKING:
    import torch


def greedy_targets(logits: torch.Tensor) -> list[int]:
    """logits: (k+1, V) -> the argmax at each position (ties -> lowest id, like transformers)."""
    from llmaccel.kernels import skinny

    return skinny.argmax(logits).tolist()


def accepted_prefix(draft: Sequence[int], targets: Sequence[int]) -> int:
    """How many leading tokens of a chain `draft` equal `targets` (targets[i] follows draft[:i])."""
    n = 0
    while n < len(draft) and n < len(targets) and draft[n] == targets[n]:
        n += 1
    return n


@dataclass(frozen=True)
class Verdict:
    """What one step keeps."""

    path: tuple[int, ...]  # accepted nodes of the tree, in order from the root (the root excluded)
    tokens: tuple[int, ...]  # their tokens
    bonus: int  # the target after the last accepted node
    on_draft: int  # accepted tokens that the reference draft (one chain of the tree) alone would have given

    @property
    def committed(self) -> list[int]:
        """The tokens the step commits: the accepted ones, then the bonus."""
        return [*self.tokens, self.bonus]


def accept(tree: DraftTree, targets: Sequence[int], draft: Sequence[int] = ()) -> Verdict:
    """The longest path down `tree` whose every node is the target of its parent, and the bonus.

    tree: the step's draft tree (node 0 the root); targets: the model's choice after each tree node,
    targets[i] for node i (len >= len(tree)); draft: the chain the reference drafter proposed, which
    the tree holds from its root, for the guard's acceptance estimate.
    """
    node, path = 0, []
    while (child := tree.children[node].get(targets[node])) is not None:
        path.append(child)
        node = child
    tokens = tuple(tree.tokens[i] for i in path)
    return Verdict(tuple(path), tokens, targets[node], accepted_prefix(draft, tokens))
