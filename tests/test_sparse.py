"""Sparse prefill: the kernel against a naive masked softmax, the pattern estimators against loops,
the exact window path against SDPA, configs, and the wiring through both model paths."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from llmaccel.kernels import skinny
from llmaccel.sparse import kernels as K
from llmaccel.sparse.config import SparseConfig, SparseConfigError, shipped, uniform
from llmaccel.sparse.patterns import (
    FORCED_LOCAL,
    FORCED_SINKS,
    HeadPattern,
    block_scores,
    build_index,
    slash_bands,
    vertical_slash_scores,
)
from llmaccel.sparse.prefill import SparsePrefill, window_index

needs_kernel = pytest.mark.skipif(not skinny.available(), reason="C++ extension not available")


def naive_visible(index, h: int, n: int, window: int) -> torch.Tensor:
    """(n, n) bool: query i sees key j, straight from the index lists, one query at a time."""
    bs = index.block
    nb = (n + bs - 1) // bs
    cols = index.cols[index.col_ptr[h]:index.col_ptr[h + 1]].tolist()
    bands = index.bands[index.band_ptr[h]:index.band_ptr[h + 1]].tolist()
    vis = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        b = i // bs
        q0, q1 = b * bs, min(n, (b + 1) * bs)
        blocks = []
        if index.block_ptr.numel():
            blocks = index.blocks[index.block_ptr[h * nb + b]:index.block_ptr[h * nb + b + 1]].tolist()
        for j in range(i + 1):
            if window and i - j >= window:
                continue
            selected = (
                q0 <= j < q1
                or j in cols
                or any(q0 - hi <= j < q1 - lo for lo, hi in bands)
                or any(kb * bs <= j < (kb + 1) * bs for kb in blocks)
            )
            vis[i, j] = selected
    return vis


def naive_attention(q, k, v, index, scale, window):
    H, n, _ = q.shape
    group = H // k.shape[0]
    out, lse = torch.empty_like(q), torch.empty(H, n)
    for h in range(H):
        s = (q[h] @ k[h // group].T) * scale  # (n, n)
        s = s.masked_fill(~naive_visible(index, h, n, window), float("-inf"))
        lse[h] = torch.logsumexp(s, -1)
        out[h] = torch.softmax(s, -1) @ v[h // group]
    return out, lse


def random_patterns(rng: random.Random, H: int, n: int) -> list[HeadPattern]:
    out = []
    for _ in range(H):
        kind = rng.choice(["a_shape", "vertical_slash", "block_sparse"])
        if kind == "a_shape":
            out.append(HeadPattern(kind, rng.randint(0, 8), rng.randint(1, n // 2)))
        elif kind == "vertical_slash":
            out.append(HeadPattern(kind, rng.randint(0, n // 3), rng.randint(0, n // 2)))
        else:
            out.append(HeadPattern(kind, rng.randint(1, 6)))
    return out


@needs_kernel
@pytest.mark.parametrize("tiles", [True, False], ids=["tiles", "gather-mm"])
@pytest.mark.parametrize("seed", range(12))
def test_kernel_matches_naive_masked_softmax(seed, tiles):
    from llmaccel.kernels import skinny

    assert skinny.sparse_hand_tiles(tiles) == tiles  # both of the kernel's paths (tiles: head dims % vector width == 0)
    try:
        _kernel_matches_naive(seed)
    finally:
        skinny.sparse_hand_tiles(True)


def _kernel_matches_naive(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    hkv = rng.choice([1, 2])
    H, n, D = hkv * rng.choice([1, 2, 3]), rng.randint(20, 160), rng.choice([8, 16, 64, 256])
    block = rng.choice([8, 16, 32])
    q, k, v = torch.randn(H, n, D), torch.randn(hkv, n, D), torch.randn(hkv, n, D)
    index = build_index(random_patterns(rng, H, n), q, k, 1 / math.sqrt(D), block=block)
    window = rng.choice([0, 0, rng.randint(1, n)])
    out, lse, computed = K.sparse_attention(q, k, v, index, 1 / math.sqrt(D), window)
    want_out, want_lse = naive_attention(q, k, v, index, 1 / math.sqrt(D), window)
    torch.testing.assert_close(out, want_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse, want_lse, atol=2e-5, rtol=1e-5)
    assert computed.shape == (H,) and bool((computed > 0).all())
    # the PyTorch fallback (CUDA path) computes the same
    out2, lse2, computed2 = K.sparse_attention_torch(q, k, v, index, 1 / math.sqrt(D), window)
    torch.testing.assert_close(out2, want_out, atol=2e-5, rtol=1e-4)
    assert torch.equal(computed, computed2)


@needs_kernel
@pytest.mark.parametrize("D", [64, 256])
def test_complete_pattern_equals_sdpa_and_window_path_is_exact(D):
    torch.manual_seed(D)
    H, hkv, n = 4, 1, 300
    q, k, v = torch.randn(H, n, D), torch.randn(hkv, n, D), torch.randn(hkv, n, D)
    full = build_index([HeadPattern("a_shape", 0, n)] * H, q, k, 0.1)
    out, lse, _ = K.sparse_attention(q, k, v, full, 0.1)
    torch.testing.assert_close(out, K.dense_attention(q, k, v, 0.1), atol=1e-5, rtol=1e-4)
    rows = torch.arange(n)
    torch.testing.assert_close(lse, K.dense_lse(q, k, 0.1, rows), atol=1e-5, rtol=1e-5)
    assert torch.allclose(K.recall(lse, K.dense_lse(q, k, 0.1, rows)), torch.ones(H))
    w = 37  # Gemma-3's local layers: the band path must be exactly sliding-window attention
    out, _, computed = K.sparse_attention(q, k, v, window_index(H, w), 0.1, w)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    mask = (j <= i) & (i - j < w)
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask, scale=0.1, enable_gqa=True)[0]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)
    assert int(computed.sum()) < H * n * (n + 1) // 2


def test_slash_bands_and_forced_members():
    assert slash_bands(torch.tensor([7, 0, 2, 1, 9, 8])).tolist() == [[0, 2], [7, 9]]
    assert slash_bands(torch.tensor([], dtype=torch.int64)).shape == (0, 2)
    torch.manual_seed(0)
    H, n, D = 2, 400, 16
    q, k = torch.randn(H, n, D), torch.randn(1, n, D)
    index = build_index([HeadPattern("vertical_slash", 40, 120)] * H, q, k, 0.25)
    cols = index.cols[: index.col_ptr[1]].tolist()
    assert len(cols) == 40 and set(range(FORCED_SINKS)) <= set(cols)
    covered = {d for lo, hi in index.bands[: index.band_ptr[1]].tolist() for d in range(lo, hi + 1)}
    assert len(covered) == 120 and set(range(FORCED_LOCAL)) <= covered


def test_vertical_slash_scores_match_loops():
    torch.manual_seed(1)
    H, L, n, D = 2, 5, 12, 4
    q, k = torch.randn(H, L, D), torch.randn(H, n, D)
    vert, slash = vertical_slash_scores(q, k, 0.5)
    for h in range(H):
        want_v, want_s = torch.zeros(n), torch.zeros(n)
        for i in range(L):
            pos = n - L + i
            p = torch.softmax((q[h, i] @ k[h, : pos + 1].T) * 0.5, -1)
            for j in range(pos + 1):
                want_v[j] += p[j]
                want_s[pos - j] += p[j]
        torch.testing.assert_close(vert[h], want_v)
        torch.testing.assert_close(slash[h], want_s)


def test_estimators_find_planted_structure():
    """A key that every query attends to is a vertical; a block that matches is a kept block."""
    torch.manual_seed(2)
    n, D = 512, 32
    q = torch.randn(1, n, D) * 0.1
    k = torch.randn(1, n, D) * 0.1
    direction = torch.randn(D)
    q[0] += direction
    k[0, 300] = direction * 4  # column 300: every later query's top key
    k[0, 128:192] += direction  # block 2 of 64: high pooled score for every later query block
    index = build_index([HeadPattern("vertical_slash", 31, FORCED_LOCAL)], q, k, 1.0)
    assert 300 in index.cols.tolist()
    s = block_scores(q, k, 64, 1.0)  # (1, nb, nb)
    nb = n // 64
    assert torch.equal(torch.isinf(s[0]), torch.ones(nb, nb, dtype=torch.bool).triu(1))
    index = build_index([HeadPattern("block_sparse", 3)], q, k, 1.0)
    last = index.blocks[index.block_ptr[nb - 1]:index.block_ptr[nb]].tolist()
    assert last == [0, 2, nb - 1]


def test_pattern_and_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown sparse pattern"):
        HeadPattern("diagonal", 1, 1)
    with pytest.raises(ValueError):
        HeadPattern("block_sparse", 0)
    cfg = uniform(3, 2, HeadPattern("a_shape", 4, 64), min_tokens=10)
    cfg.save(tmp_path / "c.json")
    assert SparseConfig.load(tmp_path / "c.json") == cfg
    cfg.check(3, 2)
    with pytest.raises(SparseConfigError, match="3 layers x 2 heads"):
        cfg.check(4, 2)
    (tmp_path / "bad.json").write_text('{"layers": [{"0": ["a_shape", 1]}]}')
    with pytest.raises(SparseConfigError):
        SparseConfig.load(tmp_path / "bad.json")
    with pytest.raises(SparseConfigError, match="cannot read"):
        SparseConfig.load(tmp_path / "missing.json")


@pytest.mark.parametrize("alias,layers,heads", [("smollm2-135m", 30, 9), ("gemma3-270m", 18, 4)])
def test_shipped_configs_fit_their_models(alias, layers, heads):
    cfg = shipped(alias)
    assert cfg is not None, f"no shipped config for {alias}"
    cfg.check(layers, heads)
    assert cfg.search["mean_recall"] >= 0.9 and cfg.min_tokens > 0


# ---- wiring through the model adapter ----------------------------------------------------------

def _tiny(kind: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    from llmaccel import models

    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = Gemma3TextConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                               layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                               max_position_embeddings=1024)
        model = Gemma3ForCausalLM(cfg)

    class Tok:
        eos_token_id = None

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    return models.wrap(model, Tok(), name=f"tiny-{kind}")


def _run(lm, prompt, method, sparse):
    from llmaccel.engine import Decoder

    d = Decoder(lm, prompt, method=method, max_new_tokens=12, sparse_prefill=sparse)
    r = d.run()
    return r.token_ids, r.prefill_density


@needs_kernel
@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_sparse_prefill_wiring(kind):
    lm = _tiny(kind)
    cfg = lm.model.config
    rng = random.Random(3)
    prompt = [rng.randrange(1, 97) for _ in range(600)]
    dense, density = _run(lm, prompt, "greedy", False)
    assert density == 1.0
    # a pattern that covers every key: the sparse path must give dense's tokens exactly (fp32 rounding aside)
    lm.sparse_config = uniform(cfg.num_hidden_layers, cfg.num_attention_heads, HeadPattern("a_shape", 0, 4096), 0)
    same, density = _run(lm, prompt, "greedy", True)
    assert same == dense
    # llama: blocks are scored whole (the diagonal block's masked half counts); gemma3: its sliding
    # layers score only their window, exactly
    assert density >= 1.0 if kind == "llama" else density < 1.0
    # a real sparse pattern: approximate prefill, but decoding after it stays exact, so every method
    # gives the tokens greedy gives after the same sparse prefill
    lm.sparse_config = uniform(cfg.num_hidden_layers, cfg.num_attention_heads, HeadPattern("a_shape", 4, 32), 0)
    base, density = _run(lm, prompt, "greedy", True)
    assert density < 0.6
    for method in ("reference", "lookahead", "auto"):
        assert _run(lm, prompt, method, True)[0] == base
    # below the config's min_tokens, prefill stays dense
    lm.sparse_config = uniform(cfg.num_hidden_layers, cfg.num_attention_heads, HeadPattern("vertical_slash", 30, 100), 1000)
    assert _run(lm, prompt, "greedy", True) == (dense, 1.0)


def test_sparse_prefill_refuses_a_non_fresh_step():
    lm = _tiny("llama")
    cache = lm.new_cache()
    lm.forward(torch.tensor([[1, 2, 3]]), 0, cache, keep=1)
    with pytest.raises(ValueError, match="fresh prompt"):
        lm.forward(torch.tensor([[4]]), 3, cache, keep=1, prefill=SparsePrefill(uniform(2, 4)))


def test_dense_is_cheaper_caps_early_queries():
    from llmaccel.sparse.prefill import dense_is_cheaper, nominal_keys

    assert nominal_keys(HeadPattern("block_sparse", 8)) == 512
    wide, narrow = [HeadPattern("a_shape", 64, 6000)] * 3, [HeadPattern("block_sparse", 8)] * 3
    assert dense_is_cheaper(wide, 8192)  # ~6.1k keys per query capped: ~3.8k of dense's 4.1k average
    assert not dense_is_cheaper(wide[:1] + narrow[:2], 8192)  # one wide head: the layer stays sparse
    assert not dense_is_cheaper(wide, 32768)
    assert not dense_is_cheaper(narrow, 4096)
    assert dense_is_cheaper(narrow, 600)  # a short prompt: 512 keys is most of what each query has
