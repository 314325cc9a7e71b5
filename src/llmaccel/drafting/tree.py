"""Draft trees: several candidate continuations verified in one forward pass, one token per node.

Candidates that share a prefix share nodes (a trie), so a tree of G candidates of length n costs at
most G*n tokens and usually far fewer. Node 0 is the root: the last committed token, whose logits
score the first drafted token. Which path the model accepts is verify.py's `accept`.

Pure Python over token ids; the engine turns `visibility()` into the attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence


class DraftTree:
    """A trie of drafts below a root token. Nodes are numbered in insertion order (parents first)."""

    def __init__(self, root: int) -> None:
        self.tokens: list[int] = [root]
        self.parents: list[int] = [-1]
        self.depth: list[int] = [0]
        self.children: list[dict[int, int]] = [{}]

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, draft: Sequence[int], max_nodes: int | None = None) -> int:
        """Merge a draft (the tokens after the root) into the trie; returns how many nodes it added.

        Stops early, keeping the draft's prefix, when the tree would exceed `max_nodes` nodes.
        """
        node, added = 0, 0
        for tok in draft:
            nxt = self.children[node].get(tok)
            if nxt is None:
                if max_nodes is not None and len(self.tokens) >= max_nodes:
                    break
                nxt = len(self.tokens)
                self.tokens.append(tok)
                self.parents.append(node)
                self.depth.append(self.depth[node] + 1)
                self.children.append({})
                self.children[node][tok] = nxt
                added += 1
            node = nxt
        return added

    def is_chain(self) -> bool:
        """True when every node has at most one child and nodes are in path order (a plain draft)."""
        return all(p == i - 1 for i, p in enumerate(self.parents) if i)

    def visibility(self) -> list[list[bool]]:
        """(n, n): node i sees node j when j is i or one of its ancestors."""
        n = len(self.tokens)
        rows: list[list[bool]] = []
        for i in range(n):
            row = list(rows[self.parents[i]]) if i else [False] * n
            row[i] = True
            rows.append(row)
        return rows


def flatten(
    tree: DraftTree,
    window_tokens: Sequence[int] = (),
    window_depths: Sequence[int] = (),
    window_sees: Sequence[Sequence[int]] = (),
) -> tuple[list[int], list[int], list[list[bool]] | None]:
    """One step's input: the tree's nodes, then a lookahead window's (if any).

    Returns tokens (T), depths below the root (T), and the (T, T) visibility matrix, or None when the
    step is a plain chain (causal). Window node i sees the root, the window nodes in `window_sees[i]`
    and nothing of the tree; tree nodes see their ancestors and nothing of the window.
    """
    tokens, depth = list(tree.tokens), list(tree.depth)
    if not window_tokens:
        return tokens, depth, None if tree.is_chain() else tree.visibility()
    n, T = len(tree), len(tree) + len(window_tokens)
    visible = [row + [False] * (T - n) for row in tree.visibility()]
    for seen in window_sees:
        row = [False] * T
        row[0] = True  # the root
        for j in seen:
            row[n + j] = True
        visible.append(row)
    return tokens + list(window_tokens), depth + list(window_depths), visible
