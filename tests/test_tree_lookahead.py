"""Draft trees, the n-gram pool, the Jacobi window, tree KV compaction and the auto gate, each
against a naive model of what it should do."""

from __future__ import annotations

import random

import pytest
import torch

from llmaccel.drafting.lookahead import JacobiWindow, LookaheadOptions, NgramPool, WindowGate
from llmaccel.drafting.reference import DEFAULT_STEP_COST
from llmaccel.drafting.tree import DraftTree
from llmaccel.kv import KVCache
from llmaccel.verify import accept


def _random_tree(rng: random.Random, vocab: int = 4):
    drafts = [[rng.randrange(vocab) for _ in range(rng.randint(0, 6))] for _ in range(rng.randint(0, 6))]
    tree = DraftTree(rng.randrange(vocab))
    for d in drafts:
        tree.add(d)
    return tree, drafts


@pytest.mark.parametrize("seed", range(40))
def test_tree_holds_each_draft_once_and_accepts_the_longest_path(seed):
    rng = random.Random(seed)
    tree, drafts = _random_tree(rng)
    # every draft is a path from the root; nodes = distinct non-empty prefixes
    prefixes = {tuple(d[:i]) for d in drafts for i in range(1, len(d) + 1)}
    assert len(tree) == 1 + len(prefixes)
    # visibility = ancestor-or-self
    vis = tree.visibility()
    for i in range(len(tree)):
        anc, j = set(), i
        while j >= 0:
            anc.add(j)
            j = tree.parents[j]
        assert {j for j in range(len(tree)) if vis[i][j]} == anc
        assert tree.depth[i] == len(anc) - 1
    # acceptance: the naive rule is "the longest draft prefix whose tokens the model chose in turn"
    targets = [rng.randrange(4) for _ in range(len(tree))]
    verdict = accept(tree, targets)
    path, bonus = list(verdict.path), verdict.bonus
    node_of = {(): 0}
    for i in range(1, len(tree)):  # reconstruct each node's token path
        node_of[tuple(tree.tokens[j] for j in _ancestors(tree, i))] = i
    best = ()
    for p in node_of:
        if all(targets[node_of[p[:k]]] == p[k] for k in range(len(p))) and len(p) > len(best):
            best = p
    assert [tree.tokens[i] for i in path] == list(best)
    assert bonus == targets[node_of[best]]


def _ancestors(tree, i):
    out = []
    while i > 0:
        out.append(i)
        i = tree.parents[i]
    return out[::-1]


def test_tree_node_budget_and_chain():
    tree = DraftTree(0)
    tree.add([1, 2, 3])
    assert tree.is_chain() and len(tree) == 4
    assert tree.add([1, 2, 9, 9], max_nodes=5) == 1  # one new node fits
    assert len(tree) == 5 and not tree.is_chain()
    assert tree.add([7], max_nodes=5) == 0


def test_pool_keeps_the_most_recent_g_per_key():
    pool = NgramPool(n=3, per_key=2)
    pool.add([1, 2, 3])
    pool.add([1, 4, 5])
    pool.add([1, 2, 3])  # repeat: most recent again
    pool.add([1, 6, 7])  # evicts (4, 5), the least recent
    assert pool.candidates(1) == [(6, 7), (2, 3)]
    assert pool.candidates(9) == []
    pool.add_text([5, 5, 6, 7, 8], start=3)  # only n-grams ending at index >= 3
    assert pool.candidates(5) == [(6, 7)] and pool.candidates(6) == [(7, 8)]
    with pytest.raises(ValueError):
        NgramPool(n=1, per_key=2)


def test_window_shape_visibility_and_update():
    w = JacobiWindow(width=3, ngram=3, seed_tokens=[10, 11], seed=1)
    assert len(w.rows) == 1 and all(t in (10, 11) for t in w.tokens())
    assert w.update([20, 21, 22]) == []  # filling: a second row, no n-grams yet
    assert w.rows[1] == [20, 21, 22]
    assert w.depths() == [1, 2, 3, 2, 3, 4]
    # (1, 2) sees row 0 columns 0..2 and itself; (0, 1) sees row 0 columns 0..1
    assert w.sees()[5] == [0, 1, 2, 5] and w.sees()[1] == [0, 1]
    row0 = list(w.rows[0])
    assert list(w.last_row()) == [3, 4, 5]  # only these nodes' logits are computed
    grams = w.update([30, 31, 32])
    assert grams == [[row0[0], 20, 30], [row0[1], 21, 31], [row0[2], 22, 32]]
    assert w.rows == [[20, 21, 22], [30, 31, 32]]


def test_keep_path_compacts_the_cache():
    torch.manual_seed(0)
    cache = KVCache()
    k = torch.randn(1, 2, 10, 4)
    v = torch.randn(1, 2, 10, 4)
    with torch.inference_mode():
        cache.update(k, v, 0)
    cache.keep_path(4, [0, 2, 5])
    assert cache.layers[0].get_seq_length() == 7
    want = torch.cat([k[:, :, :4], k[:, :, [4, 6, 9]]], dim=2)
    assert torch.equal(cache.layers[0].keys, want)
    assert torch.equal(cache.layers[0].values, torch.cat([v[:, :, :4], v[:, :, [4, 6, 9]]], dim=2))
    cache.keep_path(4, [0, 1])  # a chain prefix is a plain rollback
    assert cache.layers[0].get_seq_length() == 6


def test_cache_views_follow_the_length():
    """keys/values are views of the valid entries whatever moved the length (update, a direct write through
    reserve/advance as the C++ layers do, rollback, growth); reset empties the layer; assigning a tensor to
    them is refused rather than silently bypassing the length."""
    torch.manual_seed(0)
    cache = KVCache()
    k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    with torch.inference_mode():
        keys, values = cache.update(k, v, 0)
        assert torch.equal(keys, k) and torch.equal(values, v)
        layer = cache.layers[0]
        kbuf, vbuf = layer.reserve(300)  # grows the buffers past GROW_CHUNK
        extra = torch.randn(1, 2, 300, 4)
        kbuf[:, :, 5:305] = extra
        vbuf[:, :, 5:305] = -extra
        layer.advance(300)
        assert torch.equal(layer.keys, torch.cat([k, extra], dim=2))
        assert torch.equal(layer.values, torch.cat([v, -extra], dim=2))
        cache.rollback_to(3)
        assert layer.keys.shape == (1, 2, 3, 4) and torch.equal(layer.values, v[:, :, :3])
        with pytest.raises(TypeError, match="update"):
            layer.keys = torch.zeros(1, 2, 3, 4)
        assert torch.equal(layer.keys, k[:, :, :3])  # the refused assignment changed nothing
        layer.reset()
        assert layer.keys is None and layer.values is None and layer.get_seq_length() == 0
        keys, _ = cache.update(v, k, 0)  # usable again after a reset
        assert torch.equal(keys, v) and layer.get_seq_length() == 5


def test_gate_follows_the_gain_and_explores():
    gate = WindowGate(DEFAULT_STEP_COST, explore_every=4, max_explore_every=16, prior=0.0)
    uses = []
    for _ in range(4 + 8 + 16 + 16):
        uses.append(gate.use(1.0, 1, 20))
        if uses[-1]:
            gate.observe(0)  # the exploring step gained nothing: wait twice as long next time
    assert [i for i, u in enumerate(uses) if u] == [3, 11, 27, 43]  # waits 4, 8, 16, then capped at 16
    for _ in range(20):
        gate.observe(3)
    assert gate.use(1.0, 1, 20)  # three extra tokens per step pay for 20 more tokens
    gate._exploring = True
    gate.observe(3)  # a paying exploration resets the wait
    assert gate.wait == 4


def test_flatten_places_the_window_after_the_tree():
    from llmaccel.drafting.tree import flatten

    tree = DraftTree(7)
    tree.add([1, 2])
    assert flatten(tree) == ([7, 1, 2], [0, 1, 2], None)  # a chain: causal, no matrix
    tree.add([3])
    w = JacobiWindow(width=2, ngram=2, seed_tokens=[9], seed=0)
    tokens, depth, visible = flatten(tree, w.tokens(), w.depths(), w.sees())
    assert tokens == [7, 1, 2, 3, 9, 9] and depth == [0, 1, 2, 1, 1, 2]
    assert visible[2] == [True, True, True, False, False, False]  # node 2: root, 1, itself
    assert visible[3] == [True, False, False, True, False, False]  # the other branch
    assert visible[5] == [True, False, False, False, True, True]  # window (0, 1): root, (0, 0), itself


@pytest.mark.parametrize("bad", [dict(explore_every=0), dict(explore_every=65), dict(gate_prior=-0.1)])
def test_gate_options_are_checked(bad):
    with pytest.raises(ValueError, match="explore_every"):
        LookaheadOptions(**bad)
