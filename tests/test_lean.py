"""The lean forward (lean.py) computes what transformers' modules compute: its Python layer bit for bit,
its C++ layer (kernels/decoder_layer.cpp) to fp32 rounding with the same greedy choices."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

import llmaccel
from llmaccel import lean
from conftest import IdTokenizer, _config


def _pair(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch), dtype=torch.float32).eval()
    fast = llmaccel.wrap(copy.deepcopy(model), IdTokenizer(), lean_forward=True)
    slow = llmaccel.wrap(copy.deepcopy(model), IdTokenizer(), lean_forward=False)
    return fast, slow


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_lean_forward_equals_modules_bitwise(arch):
    fast, slow = _pair(arch)
    assert fast.stack is not None and slow.stack is None
    fast.stack.cpp_layers = False  # the Python layer; the C++ layer is compared below, to fp32 rounding
    rng = random.Random(arch)
    cf, cs = fast.new_cache(), slow.new_cache()
    T = rng.randint(1, 50)
    ids = torch.randint(0, fast.vocab_size, (1, T))
    assert torch.equal(fast.forward(ids, 0, cf, keep=T), slow.forward(ids, 0, cs, keep=T))
    pos = T
    for _ in range(12):  # steps of skinny sizes and of F.linear sizes (> 40 rows), partial rollbacks
        k = rng.choice([1, 1, 2, 5, 17, 40, 45])
        ids = torch.randint(0, fast.vocab_size, (1, k))
        keep = rng.randint(1, k)
        a, b = fast.forward(ids, pos, cf, keep=keep), slow.forward(ids, pos, cs, keep=keep)
        assert a.shape == (1, keep, fast.vocab_size)
        assert torch.equal(a, b), (arch, k, pos)  # Mistral's window of 8 is passed many times over
        pos += rng.randint(0, k)
        cf.rollback_to(pos)
        cs.rollback_to(pos)


@pytest.mark.parametrize("arch", ["gemma3", "gpt2"])
def test_other_architectures_use_the_modules(arch):
    fast, _ = _pair(arch)
    assert fast.stack is None


def _naive_mask(start, positions, visible, window):
    T = len(positions)
    S = start + T
    key_pos = list(range(start)) + list(positions)
    m = torch.zeros(T, S, dtype=torch.bool)
    for i in range(T):
        for j in range(S):
            seen = True if j < start else (visible[i][j - start] if visible is not None else j - start <= i)
            if window is not None and positions[i] - key_pos[j] >= window:
                seen = False
            m[i, j] = seen
    return m


@pytest.mark.parametrize("seed", range(20))
def test_step_mask_matches_naive(seed):
    rng = random.Random(seed)
    start, T = rng.randint(0, 20), rng.randint(1, 8)
    # a random tree: node i's parent is an earlier node (or the root 0); visible = ancestor-or-self
    parent = [-1] + [rng.randrange(i) for i in range(1, T)]
    depth = [0] * T
    visible = [[False] * T for _ in range(T)]
    for i in range(T):
        if i:
            depth[i] = depth[parent[i]] + 1
        j = i
        while j >= 0:
            visible[i][j] = True
            j = parent[j]
    use_tree = rng.random() < 0.5
    positions = [start + (depth[i] if use_tree else i) for i in range(T)]
    window = rng.choice([None, 1, 3, 8, 30])
    got = lean.step_mask(start, torch.tensor(positions), torch.tensor(visible) if use_tree else None, window)
    want = _naive_mask(start, positions, visible if use_tree else None, window)
    if got is None:  # one query that sees everything, or a causal chain from 0 (SDPA's is_causal)
        causal = torch.ones(T, start + T, dtype=torch.bool).tril(diagonal=start)
        assert bool(want.all()) or (start == 0 and torch.equal(want, causal))
    else:
        assert got.shape == (1, 1, T, start + T)
        assert torch.equal(got[0, 0], want)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_tree_step_equals_modules_and_linear_oracle(arch):
    """A tree step (branches at explicit depths, ancestor mask) gives, on both paths, each node the
    logits of its own branch run as a plain chain."""
    fast, slow = _pair(arch, seed=1)
    V = fast.vocab_size
    prompt = torch.randint(0, V, (1, 12))
    # root r, branch a: r-x-y, branch b: r-z  -> nodes [r, x, y, z], parents [-1, 0, 1, 0]
    r, x, y, z = torch.randint(0, V, (4,)).tolist()
    ids = torch.tensor([[r, x, y, z]])
    depth = torch.tensor([0, 1, 2, 1])
    visible = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    outs = []
    fast.stack.cpp_layers = False
    for lm in (fast, slow):
        cache = lm.new_cache()
        lm.forward(prompt, 0, cache, keep=1)
        outs.append(lm.forward(ids, 12, cache, keep=4, depth=depth, visible=visible)[0])
    assert torch.equal(outs[0], outs[1])
    for chain, rows in (([r, x, y], [0, 1, 2]), ([r, z], [0, 3])):
        cache = fast.new_cache()
        fast.forward(prompt, 0, cache, keep=1)
        want = fast.forward(torch.tensor([chain]), 12, cache, keep=len(chain))[0]
        torch.testing.assert_close(outs[0][rows], want, rtol=1e-5, atol=1e-5)


def _wide_llama(seed: int = 3):
    """Head dim 64 and 3 query heads per KV head, as SmolLM2: the vector paths of the C++ attention."""
    from transformers import LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=384, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                      initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return llmaccel.wrap(model, IdTokenizer(), lean_forward=True), None


@pytest.mark.parametrize("tiles", [True, False])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "wide-llama"])
def test_native_layer_matches_python_layer(arch, tiles):
    """The C++ decoder layer (few-row steps) gives the Python lean path's logits to fp32 rounding,
    chains and trees, past Mistral's window, with the cache rolled back in between; contexts past
    one attention chunk (256 keys) for the wide model. Multi-token steps' attention both through the
    layer's register tiles (head dims that are a multiple of the vector width: the wide model, and the
    others with AVX2) and through SDPA; up to 25 tokens (75 query rows per KV head: more than one row
    tile, the last one partial)."""
    from llmaccel.kernels import skinny

    if not skinny.available():
        pytest.skip("the kernel cannot be built here")
    skinny.step_attention_tiles(tiles)
    try:
        _native_vs_python(arch)
    finally:
        skinny.step_attention_tiles(True)


def _native_vs_python(arch: str) -> None:
    fast, _ = _wide_llama() if arch == "wide-llama" else _pair(arch, seed=2)
    assert fast.stack.cpp_layers
    rng = random.Random(7)
    V = fast.vocab_size
    caches = [fast.new_cache(), fast.new_cache()]
    n_prompt = 600 if arch == "wide-llama" else 20
    prompt = torch.randint(0, V, (1, n_prompt))
    for c in caches:
        fast.forward(prompt, 0, c, keep=1)
    pos = n_prompt
    for step in range(18):
        k = rng.choice([1, 1, 2, 3, 4, 5, 9, 16, 25])
        ids = torch.randint(0, V, (1, k))
        tree = step % 2 == 1
        depth = visible = None
        if tree:  # node i hangs below a random earlier node
            parent = [-1] + [rng.randrange(i) for i in range(1, k)]
            d = [0] * k
            vis = torch.zeros(k, k, dtype=torch.bool)
            for i in range(k):
                d[i] = d[parent[i]] + 1 if i else 0
                j = i
                while j >= 0:
                    vis[i, j] = True
                    j = parent[j]
            depth, visible = torch.tensor(d), vis
        outs = []
        for cpp, c in zip((True, False), caches):
            fast.stack.cpp_layers = cpp
            outs.append(fast.forward(ids, pos, c, keep=k, depth=depth, visible=visible))
        fast.stack.cpp_layers = True
        # fp32 rounding of a different summation order, through two layers: ~1e-5 of the logits' scale
        # (measured against a float64 run of the model: both paths have the same error)
        scale = float(outs[1].abs().max())
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-4 * scale)
        assert torch.equal(outs[0].argmax(-1), outs[1].argmax(-1))
        pos += 1 + rng.randint(0, k - 1) if not tree else 1
        for c in caches:
            c.rollback_to(pos)


def _coded_llama(arch: str, intermediate: int, seed: int = 5, codes: bool = True):
    """SmolLM2's shapes in small (head dim 64, 3 query heads per KV head), weights quantised as GGUF holds
    them (so the linears stream code blocks), or with codes=False plain fp32 weights (fp32 panels)."""
    import transformers as tf

    from conftest import quantize_like_gguf

    torch.manual_seed(seed)
    common = dict(vocab_size=96, hidden_size=384, intermediate_size=intermediate, num_hidden_layers=2,
                  num_attention_heads=6, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                  initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    cfg = tf.Qwen2Config(**common) if arch == "qwen2" else tf.LlamaConfig(**common)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    if codes:
        quantize_like_gguf(model)
    if arch == "qwen2":  # q/k/v biases of a real scale (the config's init makes them zero)
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    return llmaccel.wrap(model, IdTokenizer(), lean_forward=True)


# intermediate 192: gate and up panels in pairs (192 = 4 panels of 48 with AVX-512, 12 of 16 with AVX2);
# 128: not a whole number of panels of 48
@pytest.mark.parametrize("arch,intermediate,codes", [("llama", 192, True), ("llama", 128, True), ("qwen2", 192, True),
                                                     ("llama", 192, False)])
def test_fused_layer_equals_op_by_op_bitwise(arch, intermediate, codes):
    """The C++ layer in one parallel region (kernels/decoder_layer.cpp, fused_layer) computes what the
    op-by-op layer computes, bit for bit: logits and every cached key and value, for 1-token steps (small
    attention, past one key chunk of 256) and multi-token chains and trees (tile attention), with
    rollbacks in between."""
    from llmaccel.kernels import skinny

    if not skinny.available():
        pytest.skip("the C++ layer needs the kernel")
    lm = _coded_llama(arch, intermediate, codes=codes)
    assert lm.stack.cpp_layers and all((l.qkv.packed.dtype == torch.uint8) == codes for l in lm.stack.layers)
    rng = random.Random(11)
    caches = [lm.new_cache(), lm.new_cache()]
    prompt = torch.randint(0, lm.vocab_size, (1, 300))
    for c in caches:
        lm.forward(prompt, 0, c, keep=1)
    pos = 300
    runs = skinny.fused_layer_runs()
    try:
        for step in range(14):
            k = rng.choice([1, 1, 2, 3, 5, 16, 25, 40])
            ids = torch.randint(0, lm.vocab_size, (1, k))
            depth = visible = None
            if step % 3 == 2 and k > 1:  # a tree: node i below a random earlier node
                parent = [-1] + [rng.randrange(i) for i in range(1, k)]
                d, vis = [0] * k, torch.zeros(k, k, dtype=torch.bool)
                for i in range(k):
                    d[i] = d[parent[i]] + 1 if i else 0
                    j = i
                    while j >= 0:
                        vis[i, j], j = True, parent[j]
                depth, visible = torch.tensor(d), vis
            outs = []
            for fused, c in zip((True, False), caches):
                skinny.fused_layer(fused)
                outs.append(lm.forward(ids, pos, c, keep=k, depth=depth, visible=visible))
            assert torch.equal(outs[0], outs[1]), (arch, step, k)
            for a, b in zip(*(c.layers for c in caches)):
                assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values), (arch, step, k)
            pos += 1 + rng.randint(0, k - 1) if visible is None else 1
            for c in caches:
                c.rollback_to(pos)
    finally:
        skinny.fused_layer(True)
    assert skinny.fused_layer_runs() - runs == 14 * 2  # every fused-on step, both layers, took the fused path


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_rope_table_rows_equal_the_module(arch):
    """lean's RoPE table gives, for any step's positions, the rows the model's rotary module gives for
    them, bit for bit (a step looks the rows up instead of running the module)."""
    fast, _ = _pair(arch)
    table, rotary = fast.stack.rope, fast.stack.rotary
    assert table is not None and table.cos.shape[0] == fast.max_context
    g = torch.Generator().manual_seed(3)
    for T in (1, 3, 16):
        pos = torch.randint(0, fast.max_context, (T,), generator=g)
        cos, sin = rotary(pos[None])
        assert torch.equal(table.cos[pos], cos[0]) and torch.equal(table.sin[pos], sin[0])


def test_rope_table_only_for_position_only_rope():
    from llmaccel.models.config import static_rope

    cfg = _config("llama")
    assert static_rope(cfg)
    cfg.rope_parameters = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    assert not static_rope(cfg)

    def depends_on_length(positions):  # a module whose rows change with the call's length
        c = positions[..., None].float().expand(-1, -1, 4) / positions.shape[-1]
        return c, c

    assert lean.rope_table(depends_on_length, 64) is None


def test_rms_norm_rows():
    from llmaccel.kernels import skinny

    if not skinny.available():
        pytest.skip("the kernel cannot be built here")
    x, w = torch.randn(5, 576), torch.randn(576)
    out = skinny.rms_norm_rows(x, w, 1e-5)
    torch.testing.assert_close(out, torch.nn.functional.rms_norm(x, (576,), w, 1e-5), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="rms_norm_rows"):
        skinny.rms_norm_rows(x, torch.randn(7), 1e-5)
